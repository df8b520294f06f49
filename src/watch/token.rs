//! Resume tokens: an opaque encoding of where a stream stands in the change log.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

/// Where a resume token points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumePoint {
    /// After the change at this position: resume with the changes after it.
    After(u64),
    /// Inside a snapshot taken at this position: the client may not have the whole snapshot,
    /// so resuming sends a fresh one (nothing is lost, nothing needs re-listing).
    InSnapshot(u64),
}

/// Resume tokens: an opaque encoding of a [`ResumePoint`].
pub fn encode_token(point: ResumePoint) -> String {
    let (tag, position) = match point {
        ResumePoint::After(p) => (b"w1", p),
        ResumePoint::InSnapshot(p) => (b"s1", p),
    };
    let mut bytes = Vec::with_capacity(10);
    bytes.extend_from_slice(tag);
    bytes.extend_from_slice(&position.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_token(token: &str) -> Result<ResumePoint> {
    let malformed =
        || Error::invalid("resume_token is malformed: pass a resume_token from an event as it was");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let (tag, rest) = bytes.split_first_chunk::<2>().ok_or_else(malformed)?;
    let position: [u8; 8] = rest.try_into().map_err(|_| malformed())?;
    let position = u64::from_be_bytes(position);
    match tag {
        b"w1" => Ok(ResumePoint::After(position)),
        b"s1" => Ok(ResumePoint::InSnapshot(position)),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        for position in [0, 1, 42, u64::MAX] {
            for point in [
                ResumePoint::After(position),
                ResumePoint::InSnapshot(position),
            ] {
                assert_eq!(decode_token(&encode_token(point)).expect("valid"), point);
            }
        }
        for bad in [
            "",
            "x",
            "AAAA",
            "d3gAAAAAAAAAAAA",
            &URL_SAFE_NO_PAD.encode(b"w2\0\0\0\0\0\0\0\x01"),
        ] {
            assert!(decode_token(bad).is_err(), "{bad:?}");
        }
    }
}
