//! The Postgres store: many `jobtrack serve` replicas on one database.
//!
//! Writes: group commit ([`postgres_writer`](crate::store::postgres_writer)). The operations a
//! replica receives at once share one transaction, which locks their jobs' rows (`FOR UPDATE`,
//! in id order), so changes of one job are serialised across the whole fleet; applies them
//! through the same in-memory batch as SQLite (`BatchState`); writes the rows and the change-log
//! entries *without a position*; commits (Postgres flushes the WAL before COMMIT returns).
//!
//! Positions: transactions commit in any order, so a position cannot be taken inside one without
//! serialising every commit. Instead a *sequencer* numbers committed entries afterwards: under an
//! exclusive lock on the empty table `change_sequencer` (one sequencer at a time in the fleet), it
//! gives every visible entry without a position the next positions in insertion order, in one
//! statement, then sends one `NOTIFY jobtrack_changes` with the new head. Positions thus follow
//! the order in which changes became visible, with no gaps, and a higher position is never taken
//! before a lower one is committed. Changes of one job keep their order (the row lock makes the
//! second wait for the first's commit). Each replica runs the sequencer after its own commits (a
//! write is acknowledged once its entry has a position, so the next list or watch anywhere sees
//! it) and once a second anyway (entries of a replica that died between commit and sequencing).
//!
//! The feed: a follower task per replica reads the log after its cursor, in position order, and
//! publishes each change to the local hub and count cache. It is woken by the local sequencer,
//! by `LISTEN jobtrack_changes` (the doorbell: one small notification per sequencer run, never
//! one per write), and once a second; after the listening connection reconnects it reads
//! whatever it missed. The log stays the truth: a lost notification costs latency, not changes.
//!
//! Snapshots (watch starts, counts) must reflect exactly the changes up to one position. A read
//! transaction that sees no entry without a position is such a snapshot as it is. Otherwise it
//! sequences first: `LOCK TABLE change_sequencer` (which, unlike a SELECT, does not fix the
//! snapshot), number the visible entries, export that snapshot, release the lock, and read in the
//! exported snapshot on a second connection.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::query::{Filter, ListQuery};
use crate::domain::{Change, Job, JobChange, JobState, NewJob, ObjectId, PvcProgress, PvcReport};
use crate::error::{Error, Result};
use crate::store::batch::{Done, Op, decode_change};
use crate::store::counts::JobCounts;
use crate::store::postgres_writer::{Pending, run_writer};
use crate::store::schema::{Stored, check_schema, decode, missing_columns};
use crate::store::sql::{Dialect, Param, Sql, snapshot_page};
use crate::store::{History, JobSnapshot, JobsSnapshot, Page, PvcWritten};

/// Connections for calls (reads and writes) per replica.
const POOL_SIZE: u32 = 16;
/// Connections for sequencing (and the first half of a sequenced snapshot).
const SEQUENCER_POOL_SIZE: u32 = 4;
/// Changes kept in memory for live watchers, as on SQLite.
const FEED_CAPACITY: usize = 4096;
/// Changes the follower reads per query.
const FOLLOW_PAGE: i64 = 1000;
/// How often the sequencer and the follower run without being woken.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long a write waits for its entry to be numbered before it is acknowledged anyway (it is
/// committed; only the freshness of totals elsewhere depends on the numbering).
const SEQUENCE_WAIT: Duration = Duration::from_secs(2);
/// Writes waiting for the group-commit writer.
const WRITE_QUEUE: usize = 4096;
/// The doorbell's channel.
const CHANNEL: &str = "jobtrack_changes";

static SELECT_JOB: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM jobs WHERE id = $1", Job::columns().list));
static SELECT_PVC: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM pvc_progress WHERE id = $1",
        PvcProgress::columns().list
    )
});
static SELECT_PVCS_OF_JOB: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM pvc_progress WHERE job_id = $1 ORDER BY created, id",
        PvcProgress::columns().list
    )
});

/// Numbers every visible change-log entry without a position, after the highest position, in
/// insertion order; answers (entries numbered, the head after numbering).
const SEQUENCE: &str = "WITH base AS (SELECT coalesce(max(pos), 0) AS b FROM changes), \
     todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM changes WHERE pos IS NULL), \
     done AS (UPDATE changes c SET pos = base.b + todo.n FROM todo, base \
              WHERE c.id = todo.id RETURNING c.pos) \
     SELECT (SELECT count(*) FROM done), \
            (SELECT coalesce(max(pos), (SELECT b FROM base)) FROM done)";

fn bind(
    mut query: Query<'_, Postgres, PgArguments>,
    params: Vec<Param>,
) -> Query<'_, Postgres, PgArguments> {
    for p in params {
        query = match p {
            Param::Int(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
        };
    }
    query
}

/// Runs one sequencer step on `conn`, inside the caller's transaction (which holds the lock).
async fn sequence_step(conn: &mut PgConnection) -> Result<(i64, u64)> {
    let (numbered, head): (i64, i64) = sqlx::query_as(SEQUENCE).fetch_one(&mut *conn).await?;
    if numbered > 0 {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(head.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok((numbered, head.max(0) as u64))
}

/// One sequencer run in a transaction of its own; answers the head after it.
async fn sequence(pool: &PgPool) -> Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE change_sequencer IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let (_, head) = sequence_step(&mut tx).await?;
    tx.commit().await?;
    Ok(head)
}

/// The per-replica sequencer: runs are counted, so a writer can wait for one that started after
/// its commit.
pub(super) struct Sequencer {
    started: std::sync::Mutex<u64>,
    finished: tokio::sync::watch::Sender<u64>,
    wake: Notify,
}

impl Sequencer {
    /// Waits until a sequencer run that started after this call has finished.
    pub(super) async fn after_commit(&self) {
        let ticket = *self
            .started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            + 1;
        let mut finished = self.finished.subscribe();
        self.wake.notify_one();
        let _ = tokio::time::timeout(SEQUENCE_WAIT, finished.wait_for(|f| *f >= ticket)).await;
    }
}

#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    sequencer_pool: PgPool,
    feed: broadcast::Sender<Arc<Change>>,
    /// The newest position this replica has read from the log and published.
    head: Arc<AtomicU64>,
    counts: JobCounts,
    follower_wake: Arc<Notify>,
    /// The queue of the group-commit writer.
    writes: mpsc::Sender<Pending>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("database URL: {e}")))?
            .application_name("jobtrack");
        let unavailable =
            |e: sqlx::Error| Error::Unavailable(format!("cannot connect to Postgres: {e}"));
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| Error::Internal(format!("migrating the Postgres database failed: {e}")))?;
        check_postgres_schema(&pool).await?;
        let sequencer_pool = PgPoolOptions::new()
            .max_connections(SEQUENCER_POOL_SIZE)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        let head = sequence(&sequencer_pool).await?;
        let head_cell = Arc::new(AtomicU64::new(head));
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let counts = JobCounts::start(feed.subscribe(), head);
        let sequencer = Arc::new(Sequencer {
            started: std::sync::Mutex::new(0),
            finished: tokio::sync::watch::channel(0).0,
            wake: Notify::new(),
        });
        let follower_wake = Arc::new(Notify::new());
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let tasks = vec![
            tokio::spawn(run_writer(pool.clone(), queue, sequencer.clone())),
            tokio::spawn(run_sequencer(
                sequencer_pool.clone(),
                sequencer.clone(),
                follower_wake.clone(),
            )),
            tokio::spawn(run_follower(
                pool.clone(),
                feed.clone(),
                head_cell.clone(),
                follower_wake.clone(),
            )),
            tokio::spawn(run_doorbell(pool.clone(), follower_wake.clone())),
        ];
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                sequencer_pool,
                feed,
                head: head_cell,
                counts,
                follower_wake,
                writes,
                tasks: std::sync::Mutex::new(tasks),
            }),
        })
    }

    /// One operation, committed with whatever else this replica is writing at the moment
    /// ([`postgres_writer`](crate::store::postgres_writer)); acknowledged after the commit and
    /// its numbering.
    async fn write(&self, op: Op) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        let gone = || Error::Unavailable("the store is shutting down".into());
        self.inner
            .writes
            .send(Pending { op, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub async fn create_job(&self, job: NewJob) -> Result<Job> {
        match self.write(Op::Create(job)).await? {
            Done::Job(job) => Ok(job),
            Done::Pvc(_) => Err(Error::Internal("a create answered with a PVC".into())),
        }
    }

    pub async fn change_job(
        &self,
        id: ObjectId,
        etag: Option<String>,
        change: JobChange,
    ) -> Result<Job> {
        match self.write(Op::Change { id, etag, change }).await? {
            Done::Job(job) => Ok(job),
            Done::Pvc(_) => Err(Error::Internal("a change answered with a PVC".into())),
        }
    }

    pub async fn delete_job(&self, id: ObjectId, etag: Option<String>) -> Result<Job> {
        match self.write(Op::Delete { id, etag }).await? {
            Done::Job(job) => Ok(job),
            Done::Pvc(_) => Err(Error::Internal("a delete answered with a PVC".into())),
        }
    }

    pub async fn report_pvc(&self, report: PvcReport) -> Result<PvcWritten> {
        match self.write(Op::Report(report)).await? {
            Done::Pvc(written) => Ok(written),
            Done::Job(_) => Err(Error::Internal("a report answered with a job".into())),
        }
    }

    pub async fn get_job(&self, id: &ObjectId) -> Result<Option<Job>> {
        let row = sqlx::query(AssertSqlSafe(SELECT_JOB.as_str()))
            .bind(id.as_str())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn get_pvc(&self, id: &ObjectId) -> Result<Option<PvcProgress>> {
        let row = sqlx::query(AssertSqlSafe(SELECT_PVC.as_str()))
            .bind(id.as_str())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn list_jobs(&self, query: &ListQuery<Job>) -> Result<Page<Job>> {
        // The head of the whole fleet: every acknowledged write, from any replica, is at or
        // below it, so the total waits for them.
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(pos), 0) FROM changes")
            .fetch_one(&self.inner.pool)
            .await?;
        let total = self.inner.counts.total(
            &query.filter,
            head.max(0) as u64,
            self.count_at_position(&query.filter),
        );
        self.list(query, total).await
    }

    pub async fn list_pvcs(&self, query: &ListQuery<PvcProgress>) -> Result<Page<PvcProgress>> {
        let mut count = Sql::new(
            Dialect::Postgres,
            "SELECT count(*) FROM pvc_progress WHERE ",
        );
        count.filter(&query.filter);
        let total = async {
            let n: i64 = bind(sqlx::query(AssertSqlSafe(count.text)), count.params)
                .fetch_one(&self.inner.pool)
                .await?
                .try_get(0)?;
            Ok(n)
        };
        self.list(query, total).await
    }

    /// The number of jobs matching `filter` and the position it is exact at.
    async fn count_at_position(&self, filter: &Filter<Job>) -> Result<(i64, u64)> {
        let mut count = Sql::new(Dialect::Postgres, "SELECT count(*) FROM jobs WHERE ");
        count.filter(filter);
        self.in_snapshot(|conn| {
            Box::pin(async move {
                let n: i64 = bind(sqlx::query(AssertSqlSafe(count.text)), count.params)
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?;
                Ok(n)
            })
        })
        .await
    }

    async fn list<T: Stored>(
        &self,
        query: &ListQuery<T>,
        total: impl Future<Output = Result<i64>>,
    ) -> Result<Page<T>> {
        let page = crate::store::sql::page(Dialect::Postgres, query);
        let rows_query = bind(sqlx::query(AssertSqlSafe(page.text)), page.params);
        let rows = async { Ok(rows_query.fetch_all(&self.inner.pool).await?) };
        let (rows, total) = tokio::try_join!(rows, total)?;
        let items = rows.iter().map(decode).collect::<Result<Vec<T>>>()?;
        Ok(Page::from_rows(items, query, total))
    }

    pub async fn count_jobs_by_state(&self) -> Result<Vec<(JobState, i64)>> {
        let rows = sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
            .fetch_all(&self.inner.pool)
            .await?;
        Ok(crate::store::schema::states(rows))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.inner.feed.subscribe()
    }

    pub fn head(&self) -> u64 {
        self.inner.head.load(Ordering::Acquire)
    }

    pub async fn changes_after(
        &self,
        after: u64,
        job: Option<&ObjectId>,
        limit: u32,
    ) -> Result<Vec<Change>> {
        let after = after.min(i64::MAX as u64) as i64;
        let rows: Vec<(i64, Vec<u8>)> = match job {
            Some(job) => {
                sqlx::query_as(
                    "SELECT pos, change FROM changes WHERE job_id = $1 AND pos > $2 \
                     ORDER BY pos LIMIT $3",
                )
                .bind(job.as_str())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.inner.pool)
                .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT pos, change FROM changes WHERE pos > $1 ORDER BY pos LIMIT $2",
                )
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.inner.pool)
                .await?
            }
        };
        rows.iter()
            .map(|(pos, bytes)| positioned(*pos, bytes))
            .collect()
    }

    pub async fn history(&self) -> Result<History> {
        let (min, max): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(pos), max(pos) FROM changes")
                .fetch_one(&self.inner.pool)
                .await?;
        let head = max.unwrap_or(0).max(0) as u64;
        let floor = min.map_or(head, |m| (m.max(1) - 1) as u64);
        Ok(History { floor, head })
    }

    /// Runs `read` in a snapshot that reflects exactly the changes up to the returned position.
    async fn in_snapshot<T>(
        &self,
        read: impl for<'c> FnOnce(
            &'c mut PgConnection,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>,
    ) -> Result<(T, u64)> {
        // Fast path: a snapshot with no unnumbered entry is exact as it is.
        let mut conn = self.inner.pool.acquire().await?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *conn)
            .await?;
        let (unnumbered, head): (bool, i64) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM changes WHERE pos IS NULL), \
             coalesce((SELECT max(pos) FROM changes), 0)",
        )
        .fetch_one(&mut *conn)
        .await?;
        let head = if unnumbered {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            let (sequenced, head) = self.sequenced_snapshot().await?;
            conn = sequenced;
            head
        } else {
            head.max(0) as u64
        };
        let value = read(&mut conn).await;
        let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
        Ok((value?, head))
    }

    /// Numbers the visible entries under the sequencer lock and hands over that very snapshot on
    /// a second connection, so the lock is held only for the numbering, not for the caller's
    /// reads. Answers the connection (in its read transaction) and the head of the snapshot.
    async fn sequenced_snapshot(&self) -> Result<(PoolConnection<Postgres>, u64)> {
        let mut first = self.inner.sequencer_pool.acquire().await?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *first)
            .await?;
        let handed: Result<(PoolConnection<Postgres>, u64)> = async {
            sqlx::query("LOCK TABLE change_sequencer IN EXCLUSIVE MODE")
                .execute(&mut *first)
                .await?;
            let (_, head) = sequence_step(&mut first).await?;
            let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
                .fetch_one(&mut *first)
                .await?;
            if !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(Error::Internal(format!(
                    "unexpected snapshot id {snapshot:?}"
                )));
            }
            let mut second = self.inner.pool.acquire().await?;
            sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *second)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "SET TRANSACTION SNAPSHOT '{snapshot}'"
            )))
            .execute(&mut *second)
            .await?;
            Ok((second, head))
        }
        .await;
        match handed {
            Ok(handed) => {
                sqlx::query("COMMIT").execute(&mut *first).await?;
                self.inner.follower_wake.notify_one();
                Ok(handed)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *first).await;
                Err(e)
            }
        }
    }

    pub async fn snapshot_job(&self, id: &ObjectId) -> Result<JobSnapshot> {
        let id = id.to_string();
        let ((job, pvcs), position) = self
            .in_snapshot(|conn| {
                Box::pin(async move {
                    let job = sqlx::query(AssertSqlSafe(SELECT_JOB.as_str()))
                        .bind(&id)
                        .fetch_optional(&mut *conn)
                        .await?
                        .as_ref()
                        .map(decode)
                        .transpose()?;
                    let pvcs = sqlx::query(AssertSqlSafe(SELECT_PVCS_OF_JOB.as_str()))
                        .bind(&id)
                        .fetch_all(&mut *conn)
                        .await?
                        .iter()
                        .map(decode)
                        .collect::<Result<Vec<_>>>()?;
                    Ok((job, pvcs))
                })
            })
            .await?;
        Ok(JobSnapshot {
            position,
            job,
            pvcs,
        })
    }

    /// The jobs matching `filter` after the id `after` (at most `limit`), as of one position.
    pub async fn snapshot_jobs(
        &self,
        filter: &Filter<Job>,
        after: Option<&ObjectId>,
        limit: usize,
    ) -> Result<JobsSnapshot> {
        let sql = snapshot_page(
            Dialect::Postgres,
            filter,
            after.map(ObjectId::as_str),
            limit,
        );
        let (jobs, position) = self
            .in_snapshot(|conn| {
                Box::pin(async move {
                    bind(sqlx::query(AssertSqlSafe(sql.text)), sql.params)
                        .fetch_all(&mut *conn)
                        .await?
                        .iter()
                        .map(decode)
                        .collect::<Result<Vec<_>>>()
                })
            })
            .await?;
        Ok(JobsSnapshot { position, jobs })
    }

    /// Prunes numbered entries older than `older_than` or beyond the newest `keep_at_most`, in
    /// chunks; the newest entry always stays.
    pub async fn prune_history(&self, older_than: i64, keep_at_most: u64) -> Result<u64> {
        let result = sqlx::query(
            "DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE pos IS NOT NULL \
             AND pos < (SELECT max(pos) FROM changes) \
             AND (at < $1 OR pos <= (SELECT max(pos) FROM changes) - $2) \
             ORDER BY pos LIMIT 50000)",
        )
        .bind(older_than)
        .bind(keep_at_most.min(i64::MAX as u64) as i64)
        .execute(&self.inner.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Stores a new API key (its hash only).
    pub async fn create_key(&self, key: &crate::auth::ApiKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, hash, created) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(&key.hash)
        .bind(key.created)
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<crate::auth::ApiKey>> {
        let rows: Vec<crate::store::schema::KeyRow> = sqlx::query_as(
            "SELECT id, name, role, hash, created, revoked FROM api_keys ORDER BY created, id",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        rows.into_iter()
            .map(crate::store::schema::api_key)
            .collect()
    }

    /// Revokes a key; false if there is no such key.
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE api_keys SET revoked = coalesce(revoked, $1) WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.inner.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain(..)
            .collect();
        for task in tasks {
            task.abort();
        }
        self.inner.sequencer_pool.close().await;
        self.inner.pool.close().await;
    }
}

/// Decodes a log entry and gives it its position.
fn positioned(pos: i64, bytes: &[u8]) -> Result<Change> {
    let mut change = decode_change(bytes)?;
    change.seq = pos.max(0) as u64;
    Ok(change)
}

/// Numbers entries after this replica's commits (woken) and once a second (anyone's).
async fn run_sequencer(pool: PgPool, sequencer: Arc<Sequencer>, follower: Arc<Notify>) {
    loop {
        tokio::select! {
            () = sequencer.wake.notified() => {}
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let ticket = {
            let mut started = sequencer
                .started
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *started += 1;
            *started
        };
        match sequence(&pool).await {
            Ok(_) => {
                sequencer.finished.send_replace(ticket);
                follower.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, "numbering the change log failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                sequencer.wake.notify_one();
            }
        }
    }
}

/// Reads the log after its cursor and publishes each change, in position order.
async fn run_follower(
    pool: PgPool,
    feed: broadcast::Sender<Arc<Change>>,
    head: Arc<AtomicU64>,
    wake: Arc<Notify>,
) {
    let mut cursor = head.load(Ordering::Acquire);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        loop {
            let rows: Result<Vec<(i64, Vec<u8>)>, sqlx::Error> = sqlx::query_as(
                "SELECT pos, change FROM changes WHERE pos > $1 ORDER BY pos LIMIT $2",
            )
            .bind(cursor.min(i64::MAX as u64) as i64)
            .bind(FOLLOW_PAGE)
            .fetch_all(&pool)
            .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            for (pos, bytes) in &rows {
                match positioned(*pos, bytes) {
                    Ok(change) => {
                        cursor = change.seq;
                        head.store(cursor, Ordering::Release);
                        let _ = feed.send(Arc::new(change));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, pos, "unreadable change-log entry; skipped");
                        cursor = *pos as u64;
                    }
                }
            }
            if (rows.len() as i64) < FOLLOW_PAGE {
                break;
            }
        }
    }
}

/// `LISTEN jobtrack_changes`: wakes the follower on every sequencer run in the fleet, and after
/// every reconnect of the listening connection (notifications may have been missed).
async fn run_doorbell(pool: PgPool, follower: Arc<Notify>) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for changes; retrying");
                tokio::time::sleep(SWEEP_EVERY).await;
                continue;
            }
        };
        follower.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => follower.notify_one(),
                // The connection was lost and is re-established: catch up.
                Ok(None) => follower.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "listening for changes failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    follower.notify_one();
                    break;
                }
            }
        }
    }
}

/// Holds the migrated schema to the tables of fields ([`missing_columns`]).
async fn check_postgres_schema(pool: &PgPool) -> Result<()> {
    let mut missing = Vec::new();
    for (table, check) in [
        (
            Job::TABLE,
            missing_columns::<Job> as fn(&[String]) -> Vec<String>,
        ),
        (PvcProgress::TABLE, missing_columns::<PvcProgress>),
    ] {
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        missing.extend(check(&present));
    }
    check_schema(missing)
}
