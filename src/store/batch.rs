//! One batch of writes in memory, shared by every backend: the records the operations touch as
//! stored, the operations applied to them in order through the domain, and the change-log entries
//! they make. A backend loads the records, applies, then writes what changed in its own SQL.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use crate::domain::job::Applied;
use crate::domain::pvc::Progress;
use crate::domain::{
    Change, ChangeKind, Job, JobChange, NewJob, ObjectId, PvcProgress, PvcReport, Sweep, Upkeep,
};
use crate::error::{Error, Result};
use crate::store::PvcWritten;

pub(super) enum Op {
    Create(NewJob),
    Change {
        id: ObjectId,
        etag: Option<String>,
        change: JobChange,
    },
    Delete {
        id: ObjectId,
        etag: Option<String>,
    },
    Report(PvcReport),
    /// What the sweeper found due, decided again against the job as stored.
    Sweep {
        id: ObjectId,
        sweep: Sweep,
    },
}

impl Op {
    /// What kind of write it is, for spans.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Op::Create(_) => "create",
            Op::Change { .. } => "change",
            Op::Delete { .. } => "delete",
            Op::Report(_) => "report",
            Op::Sweep { .. } => "sweep",
        }
    }

    /// The job the operation names (a create without an id names none yet).
    pub(super) fn job_id(&self) -> Option<&ObjectId> {
        match self {
            Op::Create(new) => new.id.as_ref(),
            Op::Change { id, .. } | Op::Delete { id, .. } | Op::Sweep { id, .. } => Some(id),
            Op::Report(report) => Some(&report.job_id),
        }
    }
}

#[allow(clippy::large_enum_variant)] // moved once per request
pub(super) enum Done {
    Job(Job),
    Pvc(PvcWritten),
    /// What a sweep did: `None` when nothing was due after all (another replica, or a write
    /// from the executor, came first).
    Swept(Option<Sweep>),
}

impl Done {
    /// The job a create, change or delete answers with.
    pub(super) fn job(self) -> Result<Job> {
        match self {
            Done::Job(job) => Ok(job),
            _ => Err(Error::Internal(
                "a job write answered with something else".into(),
            )),
        }
    }

    /// The record (and its job) a report answers with.
    pub(super) fn pvc(self) -> Result<PvcWritten> {
        match self {
            Done::Pvc(written) => Ok(written),
            _ => Err(Error::Internal(
                "a report answered with something else".into(),
            )),
        }
    }

    /// What a sweep did.
    pub(super) fn swept(self) -> Result<Option<Sweep>> {
        match self {
            Done::Swept(done) => Ok(done),
            _ => Err(Error::Internal("a sweep answered with a record".into())),
        }
    }
}

/// A record the batch changed that still exists after it.
pub(super) struct Changed<'a, T> {
    /// As stored before the batch; `None` for a new record.
    pub stored: Option<&'a T>,
    /// As the batch leaves it.
    pub now: &'a T,
}

/// The records of `dirty` that still exist, with their stored state.
fn changed<'a, K: Eq + Hash, T>(
    dirty: &'a HashSet<K>,
    current: &'a HashMap<K, Option<T>>,
    stored: &'a HashMap<K, T>,
) -> impl Iterator<Item = Changed<'a, T>> {
    dirty.iter().filter_map(|key| {
        Some(Changed {
            stored: stored.get(key),
            now: current.get(key)?.as_ref()?,
        })
    })
}

/// A PVC record is identified by (job_id, namespace, name).
pub(super) type PvcKey = (ObjectId, String, String);

pub(super) fn pvc_key(p: &PvcProgress) -> PvcKey {
    (p.job_id.clone(), p.namespace.clone(), p.name.clone())
}

/// The records one batch reads and writes, in memory until the flush.
#[derive(Default)]
pub(super) struct BatchState {
    /// As stored when the batch began (absent: not stored).
    pub(super) stored_jobs: HashMap<ObjectId, Job>,
    pub(super) stored_pvcs: HashMap<PvcKey, PvcProgress>,
    /// As the batch leaves them; `None`: does not exist (never did, or deleted in the batch).
    pub(super) jobs: HashMap<ObjectId, Option<Job>>,
    pub(super) pvcs: HashMap<PvcKey, Option<PvcProgress>>,
    pub(super) dirty_jobs: HashSet<ObjectId>,
    pub(super) dirty_pvcs: HashSet<PvcKey>,
    /// Jobs whose stored rows, and PVC records, the flush removes.
    pub(super) deleted_jobs: Vec<ObjectId>,
    /// The change-log entries of the batch, in order.
    pub(super) changes: Vec<Change>,
    pub(super) next_seq: u64,
}

impl BatchState {
    /// The jobs the batch changed (and did not delete), for the flush to write.
    pub(super) fn changed_jobs(&self) -> impl Iterator<Item = Changed<'_, Job>> {
        changed(&self.dirty_jobs, &self.jobs, &self.stored_jobs)
    }

    /// The PVC records the batch changed, for the flush to write.
    pub(super) fn changed_pvcs(&self) -> impl Iterator<Item = Changed<'_, PvcProgress>> {
        changed(&self.dirty_pvcs, &self.pvcs, &self.stored_pvcs)
    }

    /// The job as the batch has left it so far.
    pub(super) fn job(&self, id: &ObjectId) -> Option<&Job> {
        match self.jobs.get(id) {
            Some(current) => current.as_ref(),
            None => self.stored_jobs.get(id),
        }
    }

    pub(super) fn pvc(&self, key: &PvcKey) -> Option<&PvcProgress> {
        match self.pvcs.get(key) {
            Some(current) => current.as_ref(),
            None => self.stored_pvcs.get(key),
        }
    }

    /// Applies one operation to the in-memory records; a refusal leaves them as they were.
    pub(super) fn apply(&mut self, op: &Op, now: i64, upkeep: &Upkeep) -> Result<Done> {
        match op {
            Op::Create(new) => {
                let job = new.clone().into_job(now)?;
                if self.job(&job.id).is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "job {} already exists",
                        job.id
                    )));
                }
                self.put_job(job.clone());
                self.record(ChangeKind::Created, &job, None, None, now);
                Ok(Done::Job(job))
            }
            Op::Change { id, etag, change } => {
                let mut job = self.job(id).cloned().ok_or_else(|| not_found(id))?;
                check_etag(&job, etag.as_deref())?;
                let before = job.clone();
                if change.apply(&mut job, now, upkeep)? == Applied::Changed {
                    self.put_job(job.clone());
                    self.record(ChangeKind::Updated, &job, Some(&before), None, now);
                }
                Ok(Done::Job(job))
            }
            Op::Delete { id, etag } => {
                let job = self.job(id).cloned().ok_or_else(|| not_found(id))?;
                check_etag(&job, etag.as_deref())?;
                self.remove_job(&job, now);
                Ok(Done::Job(job))
            }
            Op::Sweep { id, sweep } => Ok(Done::Swept(self.sweep(id, *sweep, now, upkeep))),
            Op::Report(report) => {
                let mut job = self
                    .job(&report.job_id)
                    .cloned()
                    .ok_or_else(|| not_found(&report.job_id))?;
                job.ensure_accepts_progress()?;
                // A write from the executor: one that ends a stall is an UPDATED change of its
                // own, so that every watcher of the job sees the mark go.
                let stalled = job.clone();
                if job.heard_from_executor(now, upkeep.resolution(&job))
                    && stalled.stalled_since.is_some()
                {
                    job.touch(now);
                    self.put_job(job.clone());
                    self.record(ChangeKind::Updated, &job, Some(&stalled), None, now);
                }
                let key = (
                    report.job_id.clone(),
                    report.namespace.clone(),
                    report.name.clone(),
                );
                let stored = self.pvc(&key);
                let pvc = report.apply(stored, now)?;
                let before = job.clone();
                let mut progress = Progress {
                    copy: job.copy_progress,
                    snapshot: job.snapshot_progress,
                };
                progress.replace(stored, &pvc);
                job.copy_progress = progress.copy;
                job.snapshot_progress = progress.snapshot;
                job.move_rate(stored.and_then(PvcProgress::rate), pvc.rate());
                job.touch(now);
                self.put_job(job.clone());
                self.pvcs.insert(key.clone(), Some(pvc.clone()));
                self.dirty_pvcs.insert(key);
                self.record(ChangeKind::PvcUpdated, &job, Some(&before), Some(&pvc), now);
                Ok(Done::Pvc(PvcWritten { pvc, job }))
            }
        }
    }

    /// Deletes the job and its PVC records (a DELETED change).
    fn remove_job(&mut self, job: &Job, now: i64) {
        let id = &job.id;
        self.jobs.insert(id.clone(), None);
        self.dirty_jobs.remove(id);
        self.deleted_jobs.push(id.clone());
        // Its records are gone: forget the stored ones, so a re-created job starts afresh.
        self.stored_jobs.remove(id);
        self.stored_pvcs.retain(|key, _| key.0 != *id);
        self.pvcs.retain(|key, _| key.0 != *id);
        self.dirty_pvcs.retain(|key| key.0 != *id);
        self.record(ChangeKind::Deleted, job, Some(job), None, now);
    }

    /// Does what the sweeper found due, if it still is: the decision is the domain's, taken
    /// against the job as stored, so of two replicas sweeping the same job one acts.
    fn sweep(&mut self, id: &ObjectId, sweep: Sweep, now: i64, upkeep: &Upkeep) -> Option<Sweep> {
        let mut job = self.job(id).cloned()?;
        let before = job.clone();
        let applied = match sweep {
            Sweep::Expire => {
                if upkeep.due(&job, now) != Some(Sweep::Expire) {
                    return None;
                }
                self.remove_job(&job, now);
                return Some(Sweep::Expire);
            }
            Sweep::Stall => upkeep.stall(&mut job, now),
            Sweep::Abandon => upkeep.abandon(&mut job, now),
        };
        if applied == Applied::Unchanged {
            return None;
        }
        self.put_job(job.clone());
        self.record(ChangeKind::Updated, &job, Some(&before), None, now);
        match sweep {
            Sweep::Abandon if !job.state.is_terminal() => None, // its time moved, see abandon()
            sweep => Some(sweep),
        }
    }

    /// Adds a change-log entry with the next position.
    pub(super) fn record(
        &mut self,
        kind: ChangeKind,
        job: &Job,
        before: Option<&Job>,
        pvc: Option<&PvcProgress>,
        now: i64,
    ) {
        // What no filter reads is not kept in `before`: its activity, and the internal fields
        // (taken from `job`, so that the stored difference leaves them out).
        let before = before.map(|b| {
            Arc::new(Job {
                activity: Vec::new(),
                activity_times: Vec::new(),
                rate_bytes_milli: job.rate_bytes_milli,
                rate_files_milli: job.rate_files_milli,
                ttl_expiry: job.ttl_expiry,
                ..b.clone()
            })
        });
        self.changes.push(Change {
            seq: self.next_seq,
            kind,
            job: Arc::new(job.clone()),
            before,
            pvc: pvc.cloned().map(Arc::new),
            at: now,
        });
        self.next_seq += 1;
    }

    pub(super) fn put_job(&mut self, job: Job) {
        self.dirty_jobs.insert(job.id.clone());
        self.jobs.insert(job.id.clone(), Some(job));
    }
}

fn not_found(id: &ObjectId) -> Error {
    Error::NotFound(format!("job {id} not found"))
}

fn check_etag(job: &Job, expected: Option<&str>) -> Result<()> {
    match expected {
        Some(etag) if etag != job.etag => Err(Error::Aborted(format!(
            "job {} has changed: its etag is no longer {etag:?}; read it again and retry",
            job.id
        ))),
        _ => Ok(()),
    }
}

/// A change-log entry: the change as JSON, LZ4-compressed (entries are repetitive JSON, and the
/// bytes each write adds to the WAL are a large part of its cost).
pub(super) fn encode_change(change: &Change) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(change)
        .map_err(|e| Error::Internal(format!("encoding a change: {e}")))?;
    Ok(lz4_flex::compress_prepend_size(&json))
}

pub(super) fn decode_change(bytes: &[u8]) -> Result<Change> {
    let json = lz4_flex::decompress_size_prepended(bytes).map_err(|e| {
        tracing::error!(error = %e, "unreadable change-log entry");
        Error::Internal(format!("unreadable change-log entry: {e}"))
    })?;
    serde_json::from_slice(&json).map_err(|e| {
        tracing::error!(error = %e, "unreadable change-log entry");
        Error::Internal(format!("unreadable change-log entry: {e}"))
    })
}
