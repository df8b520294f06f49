//! Resume tokens: an opaque encoding of where a stream stands in the change log.
//!
//! Every event's token is a resume point. After SYNCED (and on SYNCED itself) a token is a log
//! position: resuming replays the changes after it. Inside a snapshot it also says how far the
//! snapshot got — the key of the last record sent (a job id for WatchJobs; for WatchJob the job
//! itself, then PVC record ids) — and which selection the snapshot is of: resuming continues the
//! snapshot after that record instead of starting it over.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

/// Longest record key a token carries (ids are 24 characters).
const MAX_KEY: usize = 64;

/// Where a resume token points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumePoint {
    /// After the change at this position: resume with the changes after it.
    After(u64),
    /// Inside a snapshot: the client has, as of `position`, every record of `selection` up to
    /// and including the key `sent` (`None`: none yet), and none after it.
    InSnapshot {
        position: u64,
        selection: u32,
        sent: Option<String>,
    },
    /// Inside a snapshot, from a token of an earlier version that did not say how far the
    /// snapshot got: resuming starts a fresh one.
    OldSnapshot,
}

/// The selection a snapshot token belongs to: one job, or the text of a `where`. FNV-1a, so it is
/// the same on every replica and every version.
pub fn selection_of(kind: &str, text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in kind.bytes().chain([0]).chain(text.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Resume tokens: an opaque encoding of a [`ResumePoint`].
pub fn encode_token(point: &ResumePoint) -> String {
    let mut bytes = Vec::with_capacity(16);
    match point {
        ResumePoint::After(position) => {
            bytes.extend_from_slice(b"w1");
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        ResumePoint::InSnapshot {
            position,
            selection,
            sent,
        } => {
            bytes.extend_from_slice(b"s2");
            bytes.extend_from_slice(&position.to_be_bytes());
            bytes.extend_from_slice(&selection.to_be_bytes());
            if let Some(key) = sent {
                bytes.push(1);
                bytes.extend_from_slice(key.as_bytes());
            } else {
                bytes.push(0);
            }
        }
        ResumePoint::OldSnapshot => {
            bytes.extend_from_slice(b"s1");
            bytes.extend_from_slice(&0u64.to_be_bytes());
        }
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_token(token: &str) -> Result<ResumePoint> {
    let malformed =
        || Error::invalid("resume_token is malformed: pass a resume_token from an event as it was");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let (tag, rest) = bytes.split_first_chunk::<2>().ok_or_else(malformed)?;
    let (position, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
    let position = u64::from_be_bytes(*position);
    match (tag, rest) {
        (b"w1", []) => Ok(ResumePoint::After(position)),
        (b"s1", []) => Ok(ResumePoint::OldSnapshot),
        (b"s2", rest) => {
            let (selection, rest) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
            let sent = match rest.split_first() {
                Some((0, [])) => None,
                Some((1, key)) if key.len() <= MAX_KEY => {
                    Some(String::from_utf8(key.to_vec()).map_err(|_| malformed())?)
                }
                _ => return Err(malformed()),
            };
            Ok(ResumePoint::InSnapshot {
                position,
                selection: u32::from_be_bytes(*selection),
                sent,
            })
        }
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
                ResumePoint::InSnapshot {
                    position,
                    selection: 7,
                    sent: None,
                },
                ResumePoint::InSnapshot {
                    position,
                    selection: u32::MAX,
                    sent: Some(String::new()),
                },
                ResumePoint::InSnapshot {
                    position,
                    selection: 0,
                    sent: Some("5f431ef6a7690b60975f6664".into()),
                },
            ] {
                assert_eq!(decode_token(&encode_token(&point)).expect("valid"), point);
            }
        }
        let long_key = [b"s2".as_slice(), &[0; 12], &[1], &[b'a'; 65]].concat();
        for bad in [
            "",
            "x",
            "AAAA",
            "d3gAAAAAAAAAAAA",
            &URL_SAFE_NO_PAD.encode(b"w2\0\0\0\0\0\0\0\x01"),
            &URL_SAFE_NO_PAD.encode(b"w1\0\0\0\0\0\0\0\x01\x00"),
            &URL_SAFE_NO_PAD.encode(b"s2\0\0\0\0\0\0\0\x01\0\0\0\0"),
            &URL_SAFE_NO_PAD.encode(b"s2\0\0\0\0\0\0\0\x01\0\0\0\0\x02"),
            &URL_SAFE_NO_PAD.encode(b"s2\0\0\0\0\0\0\0\x01\0\0\0\0\x01\xff"),
            &URL_SAFE_NO_PAD.encode(long_key),
        ] {
            assert!(decode_token(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            decode_token(&URL_SAFE_NO_PAD.encode(b"s1\0\0\0\0\0\0\0\x09")).expect("old"),
            ResumePoint::OldSnapshot
        );
    }

    #[test]
    fn a_selection_is_the_same_everywhere_and_tells_selections_apart() {
        assert_eq!(selection_of("where", "{}"), selection_of("where", "{}"));
        assert_ne!(selection_of("where", "{}"), selection_of("where", "{ }"));
        assert_ne!(selection_of("job", "a"), selection_of("where", "a"));
        // FNV-1a of "job\0x": fixed, so tokens mean the same on every replica and version.
        assert_eq!(selection_of("job", "x"), 0xfa8e_3a44);
    }
}
