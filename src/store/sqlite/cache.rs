//! The writer's cache: the records as committed, for those it touched recently. It is exact
//! because the writer is the only one that writes jobs and PVC records, and it is updated only
//! after a commit (before any caller is answered); it is cleared when it outgrows its bound.
//! Its jobs are shared with readers ([`SharedJobs`]): GetJob of a job written recently costs no
//! statement at all, and still reads every acknowledged write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::domain::{Change, Job, ObjectId, PvcProgress};
use crate::store::batch::{BatchState, PvcKey};

/// Jobs and PVC records the writer keeps; past that the cache is cleared and refills on demand.
const CACHED_JOBS: usize = 50_000;
const CACHED_PVCS: usize = 200_000;

/// Jobs as committed, shared between the writer (the only one that changes it) and readers.
pub(super) type SharedJobs = Arc<RwLock<HashMap<ObjectId, Job>>>;

/// The job as committed, if the writer touched it recently.
pub(super) fn committed_job(jobs: &SharedJobs, id: &ObjectId) -> Option<Job> {
    jobs.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(id)
        .cloned()
}

/// The records as committed, for the ones the writer touched recently.
pub(super) struct Cache {
    pub(super) jobs: SharedJobs,
    pub(super) pvcs: HashMap<PvcKey, PvcProgress>,
}

impl Cache {
    pub(super) fn new(jobs: SharedJobs) -> Cache {
        Cache {
            jobs,
            pvcs: HashMap::new(),
        }
    }

    pub(super) fn job(&self, id: &ObjectId) -> Option<Job> {
        committed_job(&self.jobs, id)
    }

    /// After a batch's commit: takes what the batch read and wrote; returns its changes.
    pub(super) fn take(&mut self, state: BatchState) -> Vec<Arc<Change>> {
        let mut jobs = self
            .jobs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in &state.deleted_jobs {
            jobs.remove(id);
        }
        if !state.deleted_jobs.is_empty() {
            let deleted: HashSet<&ObjectId> = state.deleted_jobs.iter().collect();
            self.pvcs.retain(|key, _| !deleted.contains(&key.0));
        }
        jobs.extend(state.stored_jobs);
        self.pvcs.extend(state.stored_pvcs);
        for (id, job) in state.jobs {
            match job {
                Some(job) => jobs.insert(id, job),
                None => jobs.remove(&id),
            };
        }
        for (key, pvc) in state.pvcs {
            match pvc {
                Some(pvc) => self.pvcs.insert(key, pvc),
                None => self.pvcs.remove(&key),
            };
        }
        if jobs.len() > CACHED_JOBS {
            jobs.clear();
        }
        if self.pvcs.len() > CACHED_PVCS {
            self.pvcs.clear();
        }
        state.changes.into_iter().map(Arc::new).collect()
    }
}
