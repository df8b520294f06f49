//! GetJob without reading the job's row, and still every acknowledged write: this replica keeps
//! jobs exactly as of the follower's cursor ([`Jobs`]), and a read first learns the fleet's
//! head — one `max(pos)` query shared by every read that arrived before it started
//! ([`ReadIndex`], as etcd's linearizable reads share one raft ReadIndex round). When the local
//! feed has reached that head, the kept copy is the job as of then: every write acknowledged
//! anywhere before the read began is in it. Otherwise (the follower is a moment behind, or the
//! job is not kept) the read queries the row — together with the head in the same statement,
//! so that the row, when no change of it can have been missed, is kept for the next read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use sqlx::{AssertSqlSafe, PgPool, Row};
use tokio::sync::{Notify, watch};

use crate::domain::{Change, ChangeKind, Job, ObjectId};
use crate::error::{Error, Result};
use crate::store::db::Db;
use crate::store::schema::{Stored, decode, stored};

/// Jobs kept; past that they are dropped and kept again as they change or are read.
const KEPT_JOBS: usize = 50_000;

/// Jobs as of the follower's cursor: each one that changed since it was last dropped (a
/// deleted one as a tombstone), and each one read since, when that read is exact.
pub(super) struct Jobs {
    kept: RwLock<Kept>,
}

struct Kept {
    /// `None`: deleted.
    jobs: HashMap<ObjectId, Option<Arc<Job>>>,
    /// The position of the last change taken.
    cursor: u64,
    /// Changes up to here may have been taken and dropped: a row read at an older position may
    /// miss one of them.
    dropped_through: u64,
}

impl Jobs {
    /// Jobs for a follower that starts after position `head`.
    pub(super) fn new(head: u64) -> Jobs {
        Jobs {
            kept: RwLock::new(Kept {
                jobs: HashMap::new(),
                cursor: head,
                dropped_through: head,
            }),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Kept> {
        self.kept
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a change the follower is about to publish (before the feed's head moves past it).
    pub(super) fn apply(&self, change: &Change) {
        let mut kept = self.write();
        if kept.jobs.len() >= KEPT_JOBS && !kept.jobs.contains_key(&change.job.id) {
            kept.jobs.clear();
            kept.dropped_through = kept.cursor;
        }
        let job = (change.kind != ChangeKind::Deleted).then(|| change.job.clone());
        kept.jobs.insert(change.job.id.clone(), job);
        kept.cursor = change.seq;
    }

    /// The follower skipped the entry at `position`, which it could not read: it no longer
    /// knows which job that entry changed.
    pub(super) fn skipped(&self, position: u64) {
        let mut kept = self.write();
        kept.jobs.clear();
        kept.cursor = position;
        kept.dropped_through = position;
    }

    /// Keeps `job` as read at position `read_at`, if no change after that position can be
    /// missing from it: every change up to the cursor has been taken (`read_at` at or before
    /// it), none of them since `read_at` was dropped, and none was of this job (it is not kept).
    fn remember(&self, job: &Job, read_at: u64) {
        let mut kept = self.write();
        if read_at < kept.dropped_through
            || read_at > kept.cursor
            || kept.jobs.contains_key(&job.id)
            || kept.jobs.len() >= KEPT_JOBS
        {
            return;
        }
        kept.jobs
            .insert(job.id.clone(), Some(Arc::new(job.clone())));
    }

    /// Whether `id` is kept (a tombstone included).
    fn keeps(&self, id: &ObjectId) -> bool {
        self.kept
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .jobs
            .contains_key(id)
    }

    fn get(&self, id: &ObjectId) -> Option<Job> {
        let kept = self
            .kept
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.jobs.get(id)?.as_deref().cloned()
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

/// The job's row and, in the same statement (one snapshot), the head that row reflects.
static JOB_AND_HEAD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {}, (SELECT coalesce(max(pos), 0) FROM changes) FROM jobs WHERE id = $1",
        Job::columns().list
    )
});

/// The job as of every write acknowledged before this call: the kept copy once the local feed
/// has reached the fleet's head, else the row (kept for next time when that is exact).
pub(super) async fn job(
    index: &ReadIndex,
    jobs: &Jobs,
    published: impl Fn() -> u64,
    pool: &PgPool,
    id: &ObjectId,
) -> Result<Option<Job>> {
    // A job that is not kept is read with its head at once: a head round first would only add
    // a round trip.
    if jobs.keeps(id) {
        let head = index.head().await?;
        if published() >= head
            && let Some(job) = jobs.get(id)
        {
            return Ok(Some(job));
        }
    }
    let Some(row) = sqlx::query(AssertSqlSafe(JOB_AND_HEAD.as_str()))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let job: Job = decode(&row)?;
    let read_at: i64 = row.try_get(stored::<Job>().count())?;
    jobs.remember(&job, read_at.max(0) as u64);
    Ok(Some(job))
}
