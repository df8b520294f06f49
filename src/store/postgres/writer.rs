//! Group commit on Postgres: the writes a replica receives while its earlier batches are in
//! their transactions go together into the next one.
//!
//! A writer task takes the queued operations (up to [`MAX_BATCH`]) as soon as one of
//! [`BATCHES_IN_FLIGHT`] slots is free, so under load batches grow and an idle replica still
//! writes a lone operation at once. A batch is one transaction of a fixed number of statements,
//! whatever its size: lock and read the jobs it names (`FOR UPDATE`, in id order, so batches on
//! any replica never deadlock), read the PVC records it reports, apply every operation in memory
//! through the same [`BatchState`] as SQLite (a refused operation changes nothing and the others
//! go on), write the rows as arrays (`unnest`), one statement per table and kind, and last,
//! under the fleet's sequencer lock, insert the change-log entries with their positions
//! ([`NUMBER_AND_INSERT`]), and commit. The lock is held only for that insert and the commit, so
//! the rest of the batches of the fleet run side by side; a write is acknowledged with its
//! position taken, in one commit.
//!
//! A statement can fail for the whole batch because of one operation (another replica inserted
//! the same client-chosen id a moment earlier). The transaction has then rolled back, so each
//! operation is retried on its own, where the failure belongs to that one alone. A lost
//! connection or a database that is down fails the whole batch at once (UNAVAILABLE, as for a
//! single write), and a failed COMMIT is never retried: it may have committed.

use std::sync::Arc;
use std::sync::LazyLock;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, PgConnection, Postgres};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use super::sequencer::{CHANNEL, LOCK_SEQUENCER, number_left_overs};
use crate::domain::now_micros;
use crate::domain::{Job, ObjectId, PvcProgress, Upkeep};
use crate::error::{Error, Result};
use crate::metrics::WriteMetrics;
use crate::store::batch::{BatchState, Changed, Done, Op, encode_change, pvc_key};
use crate::store::database_unavailable;
use crate::store::schema::Param;
use crate::store::schema::{Stored, decode, params, select};

/// Operations in one transaction at most.
const MAX_BATCH: usize = 256;
/// Batches of one replica in their transactions at once. Two keep the database busy while the
/// other batch waits for its commit; more make smaller batches that contend for
/// the same CPU (UpdateJob here: 4,600/s with two, 3,300/s with four). Measured again with the
/// positions taken in the batch (loadgen `put`, 3 interleaved runs): two 6,907/7,095/6,799/s,
/// three 6,657/6,690/6,317/s.
pub(super) const BATCHES_IN_FLIGHT: usize = 2;

static LOCK_JOBS: LazyLock<String> =
    LazyLock::new(|| select::<Job>("id = ANY($1) ORDER BY id FOR UPDATE"));
static SELECT_PVCS: LazyLock<String> = LazyLock::new(|| {
    select::<PvcProgress>(
        "(job_id, namespace, name) IN \
         (SELECT j COLLATE \"C\", ns COLLATE \"C\", n COLLATE \"C\" \
          FROM unnest($1::text[], $2::text[], $3::text[]) AS k(j, ns, n))",
    )
});
/// Numbers and inserts a batch's change-log entries; run under the sequencer lock. Entries
/// committed without a position (by a replica of an earlier version, or one that died between
/// its commit and its numbering) are numbered first, in insertion order, so that a job's changes
/// keep their order; the batch's own follow. All in one statement (one round trip while the
/// fleet's lock is held); the doorbell rings with the new head at COMMIT.
const NUMBER_AND_INSERT: &str = concat!(
    number_left_overs!(),
    ", ins AS (INSERT INTO changes (pos, job_id, kind, at, change) \
             SELECT base.b + (SELECT count(*) FROM todo) + u.n, u.j, u.k, u.a, u.c \
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[]) \
             WITH ORDINALITY AS u(j, k, a, c, n), base ORDER BY u.n RETURNING pos) \
     SELECT pg_notify($5, max(pos)::text) FROM ins"
);

/// The writer's own connections: one per batch in flight, with sequential scans off. Every
/// statement of a batch looks rows up by key, and Postgres keeps a prepared statement's generic
/// plan until the table is analysed: planned while `jobs` was nearly empty (a new database, the
/// first writes), the `FOR UPDATE` read of a batch stayed a scan of the whole table — 3.9 ms and
/// 716 pages a batch for 15 rows where the index takes 0.3 ms (pg_stat_statements), half the write
/// rate until autovacuum's next ANALYZE. With sequential scans off the plan is an index lookup
/// from the first write.
pub(super) fn writer_options(options: &PgConnectOptions) -> PgConnectOptions {
    options.clone().options([("enable_seqscan", "off")])
}

/// One queued write and where its answer goes.
pub(super) struct Pending {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<Done>>,
}

/// Takes queued writes into batches until the queue closes.
pub(super) async fn run_writer(
    pool: PgPool,
    mut queue: mpsc::Receiver<Pending>,
    follower: Arc<Notify>,
    metrics: WriteMetrics,
    upkeep: Upkeep,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (pool, follower, metrics) = (pool.clone(), follower.clone(), metrics.clone());
        tokio::spawn(async move {
            run_batch(&pool, &follower, &metrics, &upkeep, batch).await;
            drop(slot);
        });
    }
}

/// Commits one batch and answers each of its callers.
async fn run_batch(
    pool: &PgPool,
    follower: &Notify,
    metrics: &WriteMetrics,
    upkeep: &Upkeep,
    batch: Vec<Pending>,
) {
    let ops: Vec<&Op> = batch.iter().map(|p| &p.op).collect();
    let started = std::time::Instant::now();
    let results = match commit(pool, &ops, upkeep).await {
        Ok((results, changed)) => {
            metrics.committed(ops.len(), started.elapsed());
            if changed {
                // The local feed publishes the new entries now, not at the doorbell's echo.
                follower.notify_one();
            }
            results
        }
        Err(Failed::BeforeCommit(e)) if ops.len() > 1 && may_be_one_operations_fault(&e) => {
            tracing::debug!(error = %e, ops = ops.len(), "a batch failed; writing its operations one by one");
            let mut results = Vec::with_capacity(ops.len());
            for op in &ops {
                results.push(commit_alone(pool, follower, upkeep, op).await);
            }
            results
        }
        Err(failed) => {
            let error = failed.into_error(ops.first().copied());
            ops.iter().map(|_| Err(error.clone())).collect()
        }
    };
    for (pending, result) in batch.into_iter().zip(results) {
        // A caller that went away no longer needs its answer.
        let _ = pending.reply.send(result);
    }
}

/// One operation in a transaction of its own.
async fn commit_alone(pool: &PgPool, follower: &Notify, upkeep: &Upkeep, op: &Op) -> Result<Done> {
    match commit(pool, &[op], upkeep).await {
        Ok((mut results, changed)) => {
            if changed {
                follower.notify_one();
            }
            results
                .pop()
                .unwrap_or_else(|| Err(Error::Internal("a batch of one gave no answer".into())))
        }
        Err(failed) => Err(failed.into_error(Some(op))),
    }
}

/// Why a batch's transaction did not commit.
enum Failed {
    /// Before COMMIT: the transaction rolled back, nothing was written.
    BeforeCommit(sqlx::Error),
    /// At COMMIT: the outcome is unknown.
    Commit(sqlx::Error),
}

impl Failed {
    /// The error a caller of `op` gets: another replica's insert of the same client-chosen id is
    /// ALREADY_EXISTS, as on one replica.
    fn into_error(self, op: Option<&Op>) -> Error {
        match (self, op) {
            (Failed::BeforeCommit(e), Some(Op::Create(new))) if is_unique_violation(&e) => {
                let id = new.id.as_ref().map_or("", |id| id.as_str());
                Error::AlreadyExists(format!("job {id} already exists"))
            }
            (Failed::BeforeCommit(e) | Failed::Commit(e), _) => e.into(),
        }
    }
}

/// Whether the database refused a statement for something in the data (a unique violation, a
/// deadlock), which one operation may have caused; a lost connection or a database that is
/// down fails every operation alike, and they all hear so at once.
fn may_be_one_operations_fault(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| !database_unavailable(&code))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "23505")
}

/// Applies `ops` in one transaction: each its own answer, and whether anything was written.
async fn commit(
    pool: &PgPool,
    ops: &[&Op],
    upkeep: &Upkeep,
) -> Result<(Vec<Result<Done>>, bool), Failed> {
    let mut tx = pool.begin().await.map_err(Failed::BeforeCommit)?;
    let mut state = BatchState::default();
    load(&mut tx, ops, &mut state)
        .await
        .map_err(Failed::BeforeCommit)?;
    let now = now_micros();
    let results: Vec<Result<Done>> = ops.iter().map(|op| state.apply(op, now, upkeep)).collect();
    let changed = !state.changes.is_empty();
    if !changed {
        // Every operation was refused: release the row locks without writing anything.
        tx.rollback().await.map_err(Failed::BeforeCommit)?;
        return Ok((results, false));
    }
    flush(&mut tx, &state).await.map_err(Failed::BeforeCommit)?;
    tx.commit().await.map_err(Failed::Commit)?;
    Ok((results, true))
}

/// Locks and reads the jobs the operations name, and the PVC records they report.
async fn load(
    conn: &mut PgConnection,
    ops: &[&Op],
    state: &mut BatchState,
) -> Result<(), sqlx::Error> {
    let mut ids: Vec<&str> = ops
        .iter()
        .filter_map(|op| op.job_id().map(ObjectId::as_str))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if !ids.is_empty() {
        let rows = sqlx::query(AssertSqlSafe(LOCK_JOBS.as_str()))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let job: Job = decode(&row).map_err(decode_error)?;
            state.stored_jobs.insert(job.id.clone(), job);
        }
    }
    let reports: Vec<_> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Report(report) => Some(report),
            _ => None,
        })
        .collect();
    if !reports.is_empty() {
        let rows = sqlx::query(AssertSqlSafe(SELECT_PVCS.as_str()))
            .bind(
                reports
                    .iter()
                    .map(|r| r.job_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                reports
                    .iter()
                    .map(|r| r.namespace.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(reports.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let pvc: PvcProgress = decode(&row).map_err(decode_error)?;
            state.stored_pvcs.insert(pvc_key(&pvc), pvc);
        }
    }
    Ok(())
}

fn decode_error(e: Error) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

/// Writes what the batch changed: deletions, new and changed rows, each kind in one statement,
/// then its change-log entries, numbered ([`NUMBER_AND_INSERT`]).
async fn flush(conn: &mut PgConnection, state: &BatchState) -> Result<(), sqlx::Error> {
    if !state.deleted_jobs.is_empty() {
        let ids: Vec<&str> = state.deleted_jobs.iter().map(|id| id.as_str()).collect();
        sqlx::query("DELETE FROM pvc_progress WHERE job_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
    }
    let (new_jobs, changed_jobs) = split_rows(state.changed_jobs());
    write_rows::<Job>(conn, new_jobs, changed_jobs).await?;
    let (new_pvcs, changed_pvcs) = split_rows(state.changed_pvcs());
    write_rows::<PvcProgress>(conn, new_pvcs, changed_pvcs).await?;
    if state.changes.is_empty() {
        return Ok(());
    }
    let mut bodies = Vec::with_capacity(state.changes.len());
    for change in &state.changes {
        bodies.push(encode_change(change).map_err(|e| sqlx::Error::Encode(e.to_string().into()))?);
    }
    // Positions are taken in the order the fleet's batches reach this lock, and the lock is
    // released only when this transaction's commit is visible: a higher position never becomes
    // visible before a lower one, and every snapshot shows a prefix of the log.
    sqlx::query(LOCK_SEQUENCER).execute(&mut *conn).await?;
    sqlx::query(NUMBER_AND_INSERT)
        .bind(
            state
                .changes
                .iter()
                .map(|c| c.job.id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            state
                .changes
                .iter()
                .map(|c| c.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(state.changes.iter().map(|c| c.at).collect::<Vec<_>>())
        .bind(bodies)
        .bind(CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The parameters of the changed records: (rows to insert, rows to rewrite).
fn split_rows<'a, T: Stored>(
    changed: impl Iterator<Item = Changed<'a, T>>,
) -> (Vec<Vec<Param>>, Vec<Vec<Param>>) {
    let (new, rewritten): (Vec<_>, Vec<_>) = changed.partition(|c| c.stored.is_none());
    let params = |rows: Vec<Changed<'a, T>>| rows.into_iter().map(|c| params(c.now)).collect();
    (params(new), params(rewritten))
}

/// Inserts `new` rows and rewrites `changed` ones (matched by id, the first column), each set in
/// one statement that binds one array per column.
async fn write_rows<T: Stored>(
    conn: &mut PgConnection,
    new: Vec<Vec<Param>>,
    changed: Vec<Vec<Param>>,
) -> Result<(), sqlx::Error> {
    let (table, columns) = (T::TABLE, &T::columns().list);
    let names: Vec<&str> = T::columns().names().collect();
    if let Some(first) = new.first() {
        let sql = format!(
            "INSERT INTO {table} ({columns}) SELECT * FROM unnest({})",
            array_params(first)
        );
        bind_columns(sqlx::query(AssertSqlSafe(sql)), new)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(first) = changed.first() {
        let targets = names[1..].join(", ");
        let values: Vec<String> = names[1..].iter().map(|n| format!("v.{n}")).collect();
        let sql = format!(
            "UPDATE {table} AS t SET ({targets}) = ({}) FROM unnest({}) AS v({}) \
             WHERE t.id = v.id COLLATE \"C\"",
            values.join(", "),
            array_params(first),
            names.join(", ")
        );
        bind_columns(sqlx::query(AssertSqlSafe(sql)), changed)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `$1::text[], $2::bigint[], ...`: one array parameter per column, typed like `row`.
fn array_params(row: &[Param]) -> String {
    let params: Vec<String> = row
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Param::Int(_) => format!("${}::bigint[]", i + 1),
            Param::Text(_) => format!("${}::text[]", i + 1),
        })
        .collect();
    params.join(", ")
}

/// Binds the rows column by column, one array each.
fn bind_columns(
    mut query: Query<'_, Postgres, PgArguments>,
    rows: Vec<Vec<Param>>,
) -> Query<'_, Postgres, PgArguments> {
    let width = rows.first().map_or(0, Vec::len);
    let mut columns: Vec<Vec<Param>> = (0..width).map(|_| Vec::with_capacity(rows.len())).collect();
    for row in rows {
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    for column in columns {
        query = match column.first() {
            Some(Param::Int(_)) => query.bind(
                column
                    .into_iter()
                    .map(|p| match p {
                        Param::Int(v) => v,
                        Param::Text(_) => None,
                    })
                    .collect::<Vec<Option<i64>>>(),
            ),
            _ => query.bind(
                column
                    .into_iter()
                    .map(|p| match p {
                        Param::Text(v) => v,
                        Param::Int(_) => None,
                    })
                    .collect::<Vec<Option<String>>>(),
            ),
        };
    }
    query
}
