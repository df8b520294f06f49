//! Changes: what the change log records and watchers receive. Each committed change of a job
//! or of one of its PVC records has a position (`seq`) that strictly increases in commit order
//! and leaves no gaps, so a watcher that has seen position N needs exactly the changes after N.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{Job, PvcProgress};

/// What happened to the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Created,
    Updated,
    /// A PVC record of the job changed (and with it the job's aggregates).
    PvcUpdated,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "CREATED",
            ChangeKind::Updated => "UPDATED",
            ChangeKind::PvcUpdated => "PVC_UPDATED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the change log.
    pub seq: u64,
    pub kind: ChangeKind,
    /// The job after the change (for `Deleted`: as it was last).
    pub job: Arc<Job>,
    /// The job before the change, without its activity (no filter can read it), so that a
    /// filtered watcher can tell a job that stops matching from one that never matched.
    /// `None` for `Created`.
    pub before: Option<Arc<Job>>,
    /// The changed record, for `PvcUpdated`.
    pub pvc: Option<Arc<PvcProgress>>,
    /// Commit time, microseconds since the epoch (for retention).
    pub at: i64,
}
