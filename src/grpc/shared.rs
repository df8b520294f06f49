//! A JobEvent as the server sends it: its protobuf encoding, made once for every stream that
//! sends the same event ([`Frames`](crate::watch::Frames)).
//!
//! The service is generated a second time for serving (build.rs, `crate::pb_server`) with this
//! type in place of `JobEvent` in its watch streams; its wire format is exactly JobEvent's, since
//! it *is* a JobEvent's bytes. Clients, ours included, decode the generated `pb::JobEvent`.

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, skip_field};
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Bytes each response stream starts its encoding buffer with. tonic's default, 8 KiB, is held by
/// every open stream: a third of what a watcher cost. An event is usually far smaller, and the
/// buffer grows for one that is not.
const ENCODE_BUFFER: usize = 1024;
/// Encoded bytes after which a stream yields to its connection (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The served service's codec: protobuf through prost, with a small encoding buffer per stream.
#[derive(Debug, Clone)]
pub struct ServedCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ServedCodec<T, U> {
    fn default() -> Self {
        ServedCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for ServedCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.0.decoder()
    }
}

/// The encoded bytes of one `jobtrack.v1.JobEvent`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedEvent(pub Bytes);

impl prost::Message for SharedEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// The server never decodes one (it only sends them); a decoder skips every field.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb;

    #[test]
    fn a_shared_event_is_a_job_event_on_the_wire() {
        let event = pb::JobEvent {
            r#type: pb::JobEventType::Updated as i32,
            job: Some(pb::Job {
                id: "5f7721cb44b03575ec17a5af".into(),
                message: Some("copying".into()),
                ..Default::default()
            }),
            pvc: None,
            resume_token: "czIAAQ".into(),
        };
        let shared = SharedEvent(Bytes::from(event.encode_to_vec()));
        // What a gRPC stream frames: the message's length and its bytes.
        let framed = shared.encode_length_delimited_to_vec();
        let decoded = pb::JobEvent::decode_length_delimited(&framed[..]).expect("a JobEvent");
        assert_eq!(decoded, event);
    }
}
