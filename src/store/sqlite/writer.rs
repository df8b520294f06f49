//! The SQLite writer: one task on its own thread owns the only writing connection and commits
//! in groups.
//!
//! Each statement is a round trip to SQLite's worker thread, and that round trip, not SQLite,
//! is the dominant cost of a small write. So a batch costs a handful of statements whatever its
//! size: the records it touches come from the writer's [`Cache`] (read from the database only on
//! a miss, in one statement per table), the operations are applied in order in memory through
//! the domain, and the records they changed are written with one statement per table and per set
//! of changed columns ([`rows`](super::rows)). Callers are answered after the commit.

use std::sync::Arc;

use sqlx::{Connection, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use super::cache::{Cache, SharedJobs};
use super::checkpoint::{Checkpoints, checkpoint};
use super::rows::{flush, load};
use crate::domain::Upkeep;
use crate::domain::{Change, ObjectId, now_micros};
use crate::error::Result;
use crate::metrics::WriteMetrics;
use crate::store::DeliveryRecord;
use crate::store::batch::{BatchState, Done, Op};
use crate::store::db::Db;
use crate::store::feed::Feed;
use crate::store::sql::Dialect;

/// Most writes committed in one transaction. Large enough to amortise an fsync over a burst,
/// small enough that the first caller of a batch is not kept waiting long.
const MAX_BATCH: usize = 512;
/// How long a batch smaller than the one before waits for more writes before it commits. Each
/// caller sends its next write when its last is answered, so under load the callers of one batch
/// arrive spread over a fraction of a millisecond; without the wait, a batch took the first few
/// and the rest formed a second one, and batches were half the callers (33 of 64). A batch costs
/// mostly the same whatever its size (56 writes: 3.3 ms; 32: 3.1 ms), so waiting gathers them:
/// loadgen `put`, 64 callers: 7,580/7,890 -> 9,040/8,750 writes/s; `put-num` 9,060 -> 11,200;
/// 4 callers 2,470 -> 3,570; 1 caller unchanged (its batch is never smaller than the one
/// before, so it never waits).
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);
/// The longest a batch waits in all.
const LINGER_AT_MOST: std::time::Duration = std::time::Duration::from_millis(2);
#[allow(clippy::large_enum_variant)] // moved once per request
pub(super) enum Request {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Done>>,
    },
    /// Remove change-log entries older than `older_than` (µs since the epoch) or beyond the newest
    /// `keep_at_most`; the newest entry always stays. Answers how many were removed.
    Prune {
        older_than: i64,
        keep_at_most: u64,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Record webhook progress and attempts ([`crate::store::Db::record_deliveries`]) in a
    /// transaction of their own: through the one writer, so that they never hold SQLite's write
    /// lock against it (from a reader connection they did, and writes waited in SQLite's busy
    /// handler: 1,000 writes/s fell to 146/s beside 100 busy subscriptions).
    SaveDeliveries {
        owner: String,
        record: Arc<DeliveryRecord>,
        reply: oneshot::Sender<Result<Vec<ObjectId>>>,
    },
    /// Commit what is queued, then stop.
    Close,
}

/// What the writer shares with the rest of the store.
pub(super) struct WriterLinks {
    pub jobs: SharedJobs,
    /// Every committed change, in commit order, published after its commit.
    pub feed: Arc<Feed>,
    pub metrics: WriteMetrics,
    /// Asks for a finishing checkpoint now and then, so that the WAL starts over.
    pub checkpoints: Checkpoints,
    /// The policy the domain decides stalls and expiry by.
    pub upkeep: Upkeep,
}

pub(super) async fn run_writer(
    mut conn: SqliteConnection,
    mut queue: mpsc::Receiver<Request>,
    links: WriterLinks,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut cache = Cache::new(links.jobs.clone());
    let mut next_seq = links.feed.head() + 1;
    let mut closing = false;
    // The size of the batch before, and when the current one stops waiting for more.
    let mut last_batch = 0;
    let mut linger_until = None;
    while !closing {
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write { op, reply } => batch.push((op, reply)),
                Request::Close => closing = true,
                Request::Prune {
                    older_than,
                    keep_at_most,
                    reply,
                } => {
                    let _ = reply.send(prune(&mut conn, older_than, keep_at_most).await);
                }
                Request::SaveDeliveries {
                    owner,
                    record,
                    reply,
                } => {
                    let saved = save_deliveries(&mut conn, &owner, &record).await;
                    // Let go of it before answering: the caller takes it back if it failed.
                    drop(record);
                    let _ = reply.send(saved);
                }
            }
            if batch.len() < MAX_BATCH && !closing {
                next = queue.try_recv().ok();
                if next.is_none() && batch.len() < last_batch {
                    // Under concurrent load, wait a moment for the callers of the last batch:
                    // until none comes for LINGER, and never longer than LINGER_AT_MOST in all.
                    let cap = *linger_until.get_or_insert_with(|| Instant::now() + LINGER_AT_MOST);
                    let until = cap.min(Instant::now() + LINGER);
                    next = timeout_at(until, queue.recv()).await.ok().flatten();
                }
            }
        }
        last_batch = batch.len();
        linger_until = None;
        if !batch.is_empty() {
            let committed = commit_batch(&mut conn, &mut batch, &mut cache, next_seq, &links).await;
            if let Some(last) = committed.last() {
                next_seq = last.seq + 1;
            }
            for change in committed {
                links.feed.publish(change);
            }
        }
        if links.checkpoints.take_restart()
            && let Err(e) = checkpoint(&mut conn).await
        {
            tracing::warn!(error = %e, "checkpoint between batches failed");
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the SQLite writer connection failed");
    }
}

/// Applies a batch in one transaction and answers every caller after the commit. Returns the
/// committed changes, numbered from `first_seq`, for the live feed.
///
/// The feed's head moves to the last committed position before any caller hears of its write,
/// so a read that a client starts after its acknowledgement knows the position it must reflect.
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<(Op, oneshot::Sender<Result<Done>>)>,
    cache: &mut Cache,
    first_seq: u64,
    links: &WriterLinks,
) -> Vec<Arc<Change>> {
    let started = std::time::Instant::now();
    let mut results: Vec<Result<Done>> = Vec::with_capacity(batch.len());
    let outcome: Result<BatchState> = async {
        // Only this writer writes jobs and PVC records, so what it reads before its transaction
        // begins is what the transaction would read.
        let mut state = load(conn, cache, batch.iter().map(|(op, _)| op)).await?;
        state.next_seq = first_seq;
        let now = now_micros();
        for (op, _) in batch.iter() {
            results.push(state.apply(op, now, &links.upkeep));
        }
        flush(&state)?.run(conn).await?;
        Ok(state)
    }
    .await;
    tracing::debug!(
        batch = batch.len(),
        micros = started.elapsed().as_micros() as u64,
        "write batch"
    );
    let committed = match outcome {
        Ok(state) => {
            links.metrics.committed(batch.len(), started.elapsed());
            let committed = cache.take(state);
            if let Some(last) = committed.last() {
                links.feed.advance(last.seq);
            }
            committed
        }
        Err(e) => {
            tracing::error!(error = %e, batch = batch.len(), "write batch failed; rolled back");
            // The script stops at its first failing statement, inside its transaction or before
            // it began (then there is nothing to roll back, and SQLite says so).
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(e.clone()));
            }
            return Vec::new();
        }
    };
    for ((_, reply), result) in batch.drain(..).zip(results) {
        // The caller may have gone away; its write is committed all the same.
        let _ = reply.send(result);
    }
    committed
}

async fn save_deliveries(
    conn: &mut SqliteConnection,
    owner: &str,
    record: &DeliveryRecord,
) -> Result<Vec<ObjectId>> {
    let mut tx = conn.begin().await?;
    let lost = Db::<Sqlite>::record_deliveries(Dialect::Sqlite, &mut tx, owner, record).await?;
    tx.commit().await?;
    Ok(lost)
}

/// Prunes the change log in one transaction (pruning runs rarely and in bounded chunks).
async fn prune(conn: &mut SqliteConnection, older_than: i64, keep_at_most: u64) -> Result<u64> {
    // The newest entry stays, so that max(seq) is always the head; at most 50,000 rows go per
    // call, so that writers never wait long behind a prune.
    let result = sqlx::query(
        "DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes) \
         AND seq < (SELECT min(seq) FROM changes) + 50000 \
         AND (at < ? OR seq <= (SELECT max(seq) FROM changes) - ?) \
         AND seq <= (SELECT coalesce(min(cursor), 9223372036854775807) FROM subscriptions)",
    )
    .bind(older_than)
    .bind(keep_at_most.min(i64::MAX as u64) as i64)
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected())
}
