//! PVC progress records and the job aggregates derived from them.
//!
//! The aggregates are a pure function of a job's records ([`Progress::of_records`]); stores keep
//! them up to date with [`Progress::replace`], which moves one record's contribution in O(1) and is
//! tested to agree with the full recomputation.

use crate::domain::job::{check_text, string_enum};
use crate::domain::{ObjectId, etag};
use crate::error::{Error, Result};

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

    fn is_final(self) -> bool {
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
    fn merge(&mut self, report: &TransferStats) {
        for (mine, (_, theirs)) in self.fields_mut().into_iter().zip(report.fields()) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }

    /// Adds `other` (times `sign`) field-wise; unset counts as 0 and every sum is set.
    fn add(&mut self, other: &TransferStats, sign: i64) {
        for (mine, (_, theirs)) in self.fields_mut().into_iter().zip(other.fields()) {
            *mine = Some(mine.unwrap_or(0).saturating_add(sign * theirs.unwrap_or(0)));
        }
    }

    fn validate(&self) -> Result<()> {
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

/// `kube_copy_progress`: the job's COPY records (op_type K8S_COPY or unset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyProgress {
    pub stats: TransferStats,
    pub total_pvs: i64,
    pub pending_pvs: i64,
    pub active_pvs: i64,
    pub completed_pvs: i64,
    pub failed_pvs: i64,
}

/// `kube_snapshot_progress`: the job's K8S_SNAP records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotProgress {
    pub total_pvs: i64,
    pub pending_pvs: i64,
    pub active_pvs: i64,
    pub completed_pvs: i64,
    pub failed_pvs: i64,
    pub skipped_pvs: i64,
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
}

impl PvcProgress {
    fn is_snapshot(&self) -> bool {
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
                state: PvcState::Pending,
                start_time: None,
                end_time: None,
                message: None,
                op_type: None,
                snapshot_progress_percentage: None,
                stats: None,
                created: now,
                updated: now,
                revision: 0,
                etag: String::new(),
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
        record.revision += 1;
        record.updated = now.max(record.updated);
        record.etag = etag(&record.id, record.revision, record.updated);
        Ok(record)
    }
}

/// The two aggregates of a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
}

impl Progress {
    /// The definition: the aggregates of a set of records.
    pub fn of_records<'a>(records: impl IntoIterator<Item = &'a PvcProgress>) -> Progress {
        let mut progress = Progress::default();
        for r in records {
            progress.count(r, 1);
        }
        progress
    }

    /// Moves one record's contribution: `old` (the stored record, if any) out, `new` in.
    pub fn replace(&mut self, old: Option<&PvcProgress>, new: &PvcProgress) {
        if let Some(old) = old {
            self.count(old, -1);
        }
        self.count(new, 1);
    }

    fn count(&mut self, r: &PvcProgress, sign: i64) {
        let state = |s: PvcState| if r.state == s { sign } else { 0 };
        if r.is_snapshot() {
            let s = self.snapshot.get_or_insert_with(SnapshotProgress::default);
            s.total_pvs += sign;
            s.pending_pvs += state(PvcState::Pending);
            s.active_pvs += state(PvcState::Active);
            s.completed_pvs += state(PvcState::Completed);
            s.failed_pvs += state(PvcState::Failed);
            s.skipped_pvs += if r.state.is_skipped() { sign } else { 0 };
            if s.total_pvs == 0 {
                self.snapshot = None;
            }
        } else {
            let c = self.copy.get_or_insert_with(CopyProgress::default);
            c.total_pvs += sign;
            c.pending_pvs += state(PvcState::Pending);
            c.active_pvs += state(PvcState::Active);
            c.completed_pvs += state(PvcState::Completed);
            c.failed_pvs += state(PvcState::Failed);
            c.stats.add(&r.stats.unwrap_or_default(), sign);
            if c.total_pvs == 0 {
                self.copy = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(i: u64) -> PvcReport {
        // A deterministic mix of kinds, states and stats.
        let states = PvcState::ALL;
        PvcReport {
            job_id: ObjectId::parse("job", "5f431ef6a7690b60975f6664").expect("hex"),
            namespace: "ns".into(),
            name: format!("pvc-{}", i % 7),
            id: None,
            state: Some(states[(i * 5 % states.len() as u64) as usize]),
            start_time: None,
            end_time: None,
            message: None,
            op_type: match i % 3 {
                0 => None,
                1 => Some(OpType::K8sCopy),
                _ => Some(OpType::K8sSnap),
            },
            snapshot_progress_percentage: None,
            stats: (!i.is_multiple_of(4)).then_some(TransferStats {
                transferred_size: Some(i as i64 * 1000),
                io_size: i.is_multiple_of(2).then_some(i as i64),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn incremental_aggregates_agree_with_full_recomputation() {
        let mut records: Vec<PvcProgress> = Vec::new();
        let mut progress = Progress::default();
        for i in 0..500 {
            let r = report(i * 31 + 7);
            let pos = records.iter().position(|s| s.name == r.name);
            let old = pos.map(|p| records[p].clone());
            let new = r.apply(old.as_ref(), 1_000_000 * i as i64).expect("valid");
            progress.replace(old.as_ref(), &new);
            match pos {
                Some(p) => records[p] = new,
                None => records.push(new),
            }
            assert_eq!(progress, Progress::of_records(&records), "after report {i}");
        }
    }

    #[test]
    fn a_job_without_records_of_a_kind_has_no_aggregate_of_that_kind() {
        let mut r = report(0);
        r.op_type = Some(OpType::K8sSnap);
        let rec = r.apply(None, 0).expect("valid");
        let p = Progress::of_records([&rec]);
        assert!(p.copy.is_none());
        assert_eq!(p.snapshot.map(|s| s.total_pvs), Some(1));
    }
}
