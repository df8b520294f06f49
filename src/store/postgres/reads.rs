//! GetJob without reading the job's row, and still every acknowledged write: the follower keeps
//! each job it has seen change ([`Jobs`]), exactly as of its cursor, and a read first learns
//! the fleet's head — one `max(pos)` query shared by every read that arrived before it started
//! ([`ReadIndex`], as etcd's linearizable reads share one raft ReadIndex round). When the local
//! feed has reached that head, the follower's copy is the job as of then: every write
//! acknowledged anywhere before the read began is in it. Otherwise (the follower is a moment
//! behind, or the job has not changed since this replica started) the read queries the row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{Notify, watch};

use crate::domain::{Change, ChangeKind, Job, ObjectId};
use crate::error::{Error, Result};
use crate::store::db::Db;

/// Jobs the follower keeps; past that it starts over (and reads fall back to the database).
const KEPT_JOBS: usize = 50_000;

/// The jobs as of the follower's cursor: those that changed since this replica started.
#[derive(Default)]
pub(super) struct Jobs {
    jobs: RwLock<HashMap<ObjectId, Arc<Job>>>,
}

impl Jobs {
    /// Takes a change the follower is about to publish (before the feed's head moves past it).
    pub(super) fn apply(&self, change: &Change) {
        let mut jobs = self
            .jobs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if change.kind == ChangeKind::Deleted {
            jobs.remove(&change.job.id);
            return;
        }
        if jobs.len() >= KEPT_JOBS && !jobs.contains_key(&change.job.id) {
            jobs.clear();
        }
        jobs.insert(change.job.id.clone(), change.job.clone());
    }

    /// The follower skipped an entry it could not read: it no longer knows which job is exact.
    pub(super) fn forget_all(&self) {
        self.jobs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    fn get(&self, id: &ObjectId) -> Option<Job> {
        self.jobs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .map(|job| Job::clone(job))
    }
}

/// Rounds of one `max(pos)` query: a caller waits for a round that started after it arrived,
/// and every caller waiting for that round shares its answer.
pub(super) struct ReadIndex {
    started: Mutex<u64>,
    /// (the last round finished, the head it read).
    finished: watch::Sender<(u64, Result<u64>)>,
    wake: Notify,
}

impl ReadIndex {
    pub(super) fn new() -> Arc<ReadIndex> {
        Arc::new(ReadIndex {
            started: Mutex::new(0),
            finished: watch::channel((0, Ok(0))).0,
            wake: Notify::new(),
        })
    }

    /// The fleet's head, read after this call began.
    pub(super) async fn head(&self) -> Result<u64> {
        let ticket = *self
            .started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            + 1;
        let mut finished = self.finished.subscribe();
        self.wake.notify_one();
        let answer = finished
            .wait_for(|(round, _)| *round >= ticket)
            .await
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?;
        answer.1.clone()
    }

    /// Runs rounds while reads ask for them.
    pub(super) async fn run(self: Arc<Self>, db: Db<sqlx::Postgres>) {
        loop {
            self.wake.notified().await;
            let round = {
                let mut started = self
                    .started
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *started += 1;
                *started
            };
            let head = async { db.head(&mut *db.pool.acquire().await?).await }.await;
            // The previous value (an earlier round's answer) is nobody's any more.
            drop(self.finished.send_replace((round, head)));
        }
    }
}

/// The job as of the fleet's head when this call began, from the follower's copy when it has
/// one and has reached that head; `None` when the database must be asked.
pub(super) async fn job(
    index: &ReadIndex,
    jobs: &Jobs,
    published: impl Fn() -> u64,
    id: &ObjectId,
) -> Result<Option<Job>> {
    let head = index.head().await?;
    if published() < head {
        return Ok(None);
    }
    Ok(jobs.get(id))
}
