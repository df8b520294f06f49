//! Ids in MongoDB ObjectId layout: 4-byte big-endian unix seconds, 5 bytes chosen at random once
//! per process, a 3-byte counter. Ids made by one process strictly increase, and all ids sort by
//! creation time, so `_id` order is creation order.

use std::fmt;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// A validated id: 24 lowercase hex characters.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ObjectId(String);

impl ObjectId {
    /// Parses a client-supplied id: 24 lowercase hex characters, as the contract and the REST
    /// item routes (`[a-f0-9]{24}`) have them. Upper case is refused, never folded into what
    /// could be another job's id.
    pub fn parse(what: &str, s: &str) -> Result<Self> {
        let lowercase_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if s.len() == 24 && s.bytes().all(lowercase_hex) {
            Ok(ObjectId(s.to_string()))
        } else if s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Err(Error::invalid(format!(
                "{what} {s:?} is not an id: ids are 24 lowercase hex characters (this one has upper case)"
            )))
        } else if s.is_empty() {
            Err(Error::invalid(format!(
                "{what} is required (24 hex characters)"
            )))
        } else {
            Err(Error::invalid(format!(
                "{what} {:?} is not an id: expected 24 hex characters",
                truncate(s, 64)
            )))
        }
    }

    /// Makes a new id, greater than every id this process made before.
    pub fn generate() -> Self {
        static PROCESS_RANDOM: OnceLock<[u8; 5]> = OnceLock::new();
        // (seconds, counter) of the last id made: the counter restarts each second, and when it
        // would overflow the seconds part moves on, so ids keep increasing strictly.
        static LAST: Mutex<(u32, u32)> = Mutex::new((0, 0));

        let random = PROCESS_RANDOM.get_or_init(|| {
            let mut bytes = [0u8; 5];
            // Without an entropy source the ids stay unique within the process, which is what
            // matters most; a second process is then told apart only by time.
            let _ = getrandom::fill(&mut bytes);
            bytes
        });
        let now = (crate::domain::now_micros() / 1_000_000).clamp(0, u32::MAX as i64) as u32;
        let (secs, counter) = {
            let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let next = if now > last.0 {
                (now, 0)
            } else if last.1 < 0x00FF_FFFF {
                (last.0, last.1 + 1)
            } else {
                (last.0 + 1, 0)
            };
            *last = next;
            next
        };
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&secs.to_be_bytes());
        bytes[4..9].copy_from_slice(random);
        bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
        ObjectId(hex(&bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an id read back from the store, where only valid ids are ever written.
    pub fn from_stored(s: String) -> Self {
        ObjectId(s)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Shortens user input quoted back in an error message.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_strictly_increase_and_parse_back() {
        let ids: Vec<ObjectId> = (0..10_000).map(|_| ObjectId::generate()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        let parsed = ObjectId::parse("id", ids[0].as_str()).expect("a generated id parses");
        assert_eq!(parsed, ids[0]);
    }

    #[test]
    fn malformed_ids_are_refused_and_upper_case_is_malformed() {
        assert!(ObjectId::parse("id", "").is_err());
        assert!(ObjectId::parse("id", "5f431ef6a7690b60975f666").is_err());
        assert!(ObjectId::parse("id", "5f431ef6a7690b60975f666z").is_err());
        let upper = ObjectId::parse("id", "5F431EF6A7690B60975F6664").expect_err("upper case");
        assert!(upper.to_string().contains("lowercase"), "{upper}");
        assert!(ObjectId::parse("id", "5f431ef6a7690b60975F6664").is_err());
        let id = ObjectId::parse("id", "5f431ef6a7690b60975f6664").expect("lowercase hex");
        assert_eq!(id.as_str(), "5f431ef6a7690b60975f6664");
    }
}
