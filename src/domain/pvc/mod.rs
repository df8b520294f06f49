//! PVC progress records: the per-volume progress an executor reports for a job ([`PvcReport`],
//! merged into the stored [`PvcProgress`]), the job aggregates derived from them ([`progress`]),
//! and the record's table of fields ([`fields`]).

pub mod estimate;
pub mod fields;
pub mod progress;

use crate::domain::string_enum::string_enum;
use crate::domain::{ObjectId, check_text, etag};
use crate::error::{Error, Result};

pub use progress::{CopyProgress, Progress, SnapshotProgress};

string_enum! {
    /// State of one PVC. The SKIPPED values are spelled with hyphens, as documented.
    PvcState {
        Pending = "PENDING",
        Active = "ACTIVE",
        Completed = "COMPLETED",
        Failed = "FAILED",
        SkippedMissingVolumeFromInventory = "SKIPPED-MISSING-VOLUME-FROM-INVENTORY",
        SkippedMissingAccount = "SKIPPED-MISSING-ACCOUNT",
        SkippedAccountInactive = "SKIPPED-ACCOUNT-INACTIVE",
        SkippedVolumeFromOtherRegion = "SKIPPED-VOLUME-FROM-OTHER-REGION",
    }
}

impl PvcState {
    pub fn is_skipped(self) -> bool {
        self.as_str().starts_with("SKIPPED-")
    }

    pub(super) fn is_final(self) -> bool {
        !matches!(self, PvcState::Pending | PvcState::Active)
    }
}

string_enum! {
    /// The operation on a PVC. A record without one counts as COPY.
    OpType {
        K8sCopy = "K8S_COPY",
        K8sSnap = "K8S_SNAP",
    }
}

/// Transfer statistics; a field never reported is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransferStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_number_of_files: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_number_of_files: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_number_of_files: Option<i64>,
}

impl TransferStats {
    fn fields(&self) -> [(&'static str, Option<i64>); 6] {
        [
            ("estimated_size", self.estimated_size),
            ("estimated_number_of_files", self.estimated_number_of_files),
            ("io_size", self.io_size),
            ("io_number_of_files", self.io_number_of_files),
            ("transferred_size", self.transferred_size),
            (
                "transferred_number_of_files",
                self.transferred_number_of_files,
            ),
        ]
    }

    fn fields_mut(&mut self) -> [&mut Option<i64>; 6] {
        [
            &mut self.estimated_size,
            &mut self.estimated_number_of_files,
            &mut self.io_size,
            &mut self.io_number_of_files,
            &mut self.transferred_size,
            &mut self.transferred_number_of_files,
        ]
    }

    /// Writes the fields set in `report` over this one.
    pub(super) fn merge(&mut self, report: &TransferStats) {
        for (mine, (_, theirs)) in self.fields_mut().into_iter().zip(report.fields()) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }

    /// Adds `other` (times `sign`) field-wise; unset counts as 0 and every sum is set.
    pub(super) fn add(&mut self, other: &TransferStats, sign: i64) {
        for (mine, (_, theirs)) in self.fields_mut().into_iter().zip(other.fields()) {
            *mine = Some(mine.unwrap_or(0).saturating_add(sign * theirs.unwrap_or(0)));
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        for (name, value) in self.fields() {
            if let Some(v) = value
                && v < 0
            {
                return Err(Error::invalid(format!(
                    "stats.{name} is {v}: it cannot be negative"
                )));
            }
        }
        Ok(())
    }
}

/// One PVC progress record as stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PvcProgress {
    pub id: ObjectId,
    pub job_id: ObjectId,
    pub namespace: String,
    pub name: String,
    pub state: PvcState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_type: Option<OpType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_progress_percentage: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<TransferStats>,
    pub created: i64,
    pub updated: i64,
    /// Internal: bumps on every change, so that the etag changes.
    pub revision: u64,
    pub etag: String,
    /// The moving-average rate of a COPY in progress, in thousandths per second ([`estimate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bytes_milli: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_files_milli: Option<i64>,
    /// When the server first saw the record ACTIVE, and first saw it final (µs): its duration,
    /// finer than the documented integer seconds of `start_time` and `end_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<i64>,
}

impl PvcProgress {
    pub(super) fn is_snapshot(&self) -> bool {
        self.op_type == Some(OpType::K8sSnap)
    }
}

/// A progress report for one PVC: (job_id, namespace, name) names the record; every other field
/// that is set is written, the rest keep their stored value.
#[derive(Clone, Debug)]
pub struct PvcReport {
    pub job_id: ObjectId,
    pub namespace: String,
    pub name: String,
    /// The record's id, if the client echoes it: it must match the stored record.
    pub id: Option<ObjectId>,
    pub state: Option<PvcState>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub message: Option<String>,
    pub op_type: Option<OpType>,
    pub snapshot_progress_percentage: Option<i32>,
    pub stats: Option<TransferStats>,
}

impl PvcReport {
    /// Checks what can be checked without the stored record.
    pub fn validate(&self) -> Result<()> {
        if self.namespace.is_empty() {
            return Err(Error::invalid("pvc.namespace is required"));
        }
        if self.name.is_empty() {
            return Err(Error::invalid("pvc.name is required"));
        }
        check_text("pvc.namespace", Some(&self.namespace))?;
        check_text("pvc.name", Some(&self.name))?;
        check_text("pvc.message", self.message.as_deref())?;
        for (name, value) in [("start_time", self.start_time), ("end_time", self.end_time)] {
            if let Some(v) = value
                && v < 0
            {
                return Err(Error::invalid(format!(
                    "pvc.{name} is {v}: it cannot be negative"
                )));
            }
        }
        if let Some(p) = self.snapshot_progress_percentage
            && !(0..=100).contains(&p)
        {
            return Err(Error::invalid(format!(
                "pvc.snapshot_progress_percentage is {p}: it must be between 0 and 100"
            )));
        }
        if let Some(stats) = &self.stats {
            stats.validate()?;
        }
        Ok(())
    }

    /// The record after this report, given the stored one (if any).
    pub fn apply(&self, stored: Option<&PvcProgress>, now: i64) -> Result<PvcProgress> {
        if let (Some(id), Some(stored)) = (&self.id, stored)
            && *id != stored.id
        {
            return Err(Error::invalid(format!(
                "pvc.id {id} does not match the record of {}/{} in job {}, which is {}",
                self.namespace, self.name, self.job_id, stored.id
            )));
        }
        let mut record = match stored {
            Some(s) => s.clone(),
            None => PvcProgress {
                id: ObjectId::generate(),
                job_id: self.job_id.clone(),
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                created: now,
                updated: now,
                // PENDING, nothing reported yet.
                ..<PvcProgress as crate::domain::query::Resource>::blank()
            },
        };
        if let Some(state) = self.state {
            record.state = state;
        }
        if self.start_time.is_some() {
            record.start_time = self.start_time;
        }
        if self.end_time.is_some() {
            record.end_time = self.end_time;
        }
        if self.message.is_some() {
            record.message.clone_from(&self.message);
        }
        if self.op_type.is_some() {
            record.op_type = self.op_type;
        }
        if self.snapshot_progress_percentage.is_some() {
            record.snapshot_progress_percentage = self.snapshot_progress_percentage;
        }
        if let Some(stats) = &self.stats {
            record
                .stats
                .get_or_insert_with(TransferStats::default)
                .merge(stats);
        }
        let secs = now / 1_000_000;
        if record.state == PvcState::Active && record.start_time.is_none() {
            record.start_time = Some(secs);
        }
        if record.state.is_final() && record.end_time.is_none() {
            record.end_time = Some(secs);
        }
        // A record that leaves a final state starts a new phase (a snapshot done, its copy
        // next): its duration is measured again.
        if stored.is_some_and(|s| s.state.is_final()) && !record.state.is_final() {
            record.active_time = None;
            record.finish_time = None;
        }
        if record.state == PvcState::Active && record.active_time.is_none() {
            record.active_time = Some(now);
        }
        if record.state.is_final() && record.finish_time.is_none() {
            record.finish_time = Some(now);
        }
        record.estimate(stored, now);
        record.revision += 1;
        record.updated = now.max(record.updated);
        record.etag = etag(&record.id, record.revision, record.updated);
        Ok(record)
    }
}
