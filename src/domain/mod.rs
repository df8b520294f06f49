//! The domain: jobs and their life cycle ([`job`]), PVC progress records and the aggregates
//! derived from them ([`pvc`]), the changes the log records ([`change`]), ids ([`id`]), and the
//! where/sort query language over each record's table of fields ([`query`]). It knows nothing
//! of tonic, axum or sqlx.

pub mod change;
pub mod id;
pub mod job;
pub mod pvc;
pub mod query;
mod string_enum;
pub mod subscription;
pub mod upkeep;

pub use change::{Change, ChangeKind};
pub use id::ObjectId;
pub use job::{Job, JobChange, JobFields, JobState, JobType, JobUpdate, NewJob};
pub use pvc::{
    CopyProgress, OpType, PvcProgress, PvcReport, PvcState, SnapshotProgress, TransferStats,
};

pub use upkeep::{Sweep, Upkeep};

use crate::error::{Error, Result};

/// Longest text accepted in any string field or activity line, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Most activity lines one job may hold.
pub const MAX_ACTIVITY_LINES: usize = 10_000;

/// Microseconds since the unix epoch: the resolution of `created` and `updated`.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A time (µs since the epoch) as RFC 1123, the way REST shows `_created` and `_updated`:
/// `Tue, 01 Dec 2026 18:09:09 GMT`.
pub fn http_date(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000).max(0) as u64;
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// The etag of a record at one revision: 40 lowercase hex characters (a SHA-1, as python-eve
/// uses). It covers the id, the revision and the update time, so it changes on every change.
pub fn etag(id: &ObjectId, revision: u64, updated_micros: i64) -> String {
    let mut hasher = sha1_smol::Sha1::new();
    hasher.update(id.as_str().as_bytes());
    hasher.update(&revision.to_be_bytes());
    hasher.update(&updated_micros.to_be_bytes());
    hasher.digest().to_string()
}

/// Refuses text over [`MAX_TEXT_BYTES`] or with a NUL character, naming the field.
pub(crate) fn check_text(name: &str, value: Option<&str>) -> Result<()> {
    match value {
        Some(v) if v.len() > MAX_TEXT_BYTES => Err(Error::invalid(format!(
            "{name} is {} bytes long; the limit is {MAX_TEXT_BYTES}",
            v.len()
        ))),
        // Postgres cannot store it, and no job name or message needs it.
        Some(v) if v.contains('\0') => Err(Error::invalid(format!(
            "{name} contains a NUL character (\\u0000), which is not allowed in text"
        ))),
        _ => Ok(()),
    }
}
