//! The aggregates of a job, derived from its PVC records: `kube_copy_progress` over its COPY
//! records and `kube_snapshot_progress` over its K8S_SNAP records. They are a pure function of
//! the records ([`Progress::of_records`]); stores keep them up to date with
//! [`Progress::replace`], which moves one record's contribution in O(1) and is tested to agree
//! with the full recomputation.

use super::{PvcProgress, PvcState, TransferStats};

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
    use crate::domain::ObjectId;
    use crate::domain::pvc::{OpType, PvcReport};

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
