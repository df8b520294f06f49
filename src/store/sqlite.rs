//! The embedded SQLite store (WAL, `synchronous=FULL`).
//!
//! All writes go through one writer task ([`super::sqlite_writer`]) that owns the only writing
//! connection and commits in groups: it takes every request waiting in its queue, applies them one
//! after another in one transaction, commits once (one fsync), and only then answers each caller.
//! A caller is therefore told "done" only for changes on stable storage, and many callers share the
//! cost of one fsync. Reads use a separate pool of connections, which WAL lets run beside the
//! writer.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::Change;
use crate::domain::query::Filter;
use crate::domain::query::ListQuery;
use crate::domain::{Job, JobChange, JobState, NewJob, ObjectId, PvcProgress, PvcReport};
use crate::error::{Error, Result};
use crate::store::batch::{Done, Op, decode_change};
use crate::store::counts::JobCounts;
use crate::store::schema::{Stored, check_schema, decode, missing_columns};
use crate::store::sql::{Dialect, Param, Sql, snapshot_page};
use crate::store::sqlite_writer::{Request, SharedJobs, WriterLinks, run_writer};
use crate::store::{History, JobSnapshot, JobsSnapshot};
use crate::store::{Page, PvcWritten};

/// Requests that may wait for the writer; callers beyond it wait to enqueue (back-pressure).
const QUEUE_DEPTH: usize = 4096;
/// Read connections: WAL readers run in parallel with the writer and with each other.
const READERS: u32 = 4;

static SELECT_JOB: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM jobs WHERE id = ?", Job::columns().list));
static SELECT_PVCS_OF_JOB: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM pvc_progress WHERE job_id = ? ORDER BY created, id",
        PvcProgress::columns().list
    )
});
static SELECT_PVC: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM pvc_progress WHERE id = ?",
        PvcProgress::columns().list
    )
});

fn bind(
    mut query: Query<'_, Sqlite, SqliteArguments>,
    params: Vec<Param>,
) -> Query<'_, Sqlite, SqliteArguments> {
    for p in params {
        query = match p {
            Param::Int(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
        };
    }
    query
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// Changes kept in memory for live watchers; one that falls further behind reads the log.
const FEED_CAPACITY: usize = 4096;

struct Inner {
    writer: mpsc::Sender<Request>,
    feed: broadcast::Sender<Arc<Change>>,
    head: Arc<AtomicU64>,
    /// Jobs as the writer last committed them (a subset): read before the database.
    jobs: SharedJobs,
    /// Totals of job lists, kept exact by the feed.
    counts: JobCounts,
    writer_task: Mutex<Option<JoinHandle<()>>>,
    readers: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)
                .map_err(|e| Error::invalid(format!("database URL {url:?}: {e}")))?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: each commit is fsynced before it is acknowledged (WAL's NORMAL is not
            // durable across a power loss).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Statement journals (multi-row statements need them) stay in memory, not temp files.
            .pragma("temp_store", "memory")
            // 32 MiB of page cache per connection: the indexes of a few million jobs stay hot.
            .pragma("cache_size", "-32768")
            .with_regexp();
        let mut writer = SqliteConnection::connect_with(&options.clone().create_if_missing(true))
            .await
            .map_err(|e| {
                Error::Unavailable(format!("cannot open the SQLite database {url:?}: {e}"))
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await
            .map_err(|e| Error::Internal(format!("migrating the SQLite database failed: {e}")))?;
        check_sqlite_schema(&mut writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| {
                Error::Unavailable(format!("cannot open the SQLite database {url:?}: {e}"))
            })?;
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM changes")
            .fetch_one(&mut writer)
            .await?;
        let head = Arc::new(AtomicU64::new(head.max(0) as u64));
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let counts = JobCounts::start(feed.subscribe(), head.load(Ordering::Acquire));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let jobs = SharedJobs::default();
        let links = WriterLinks {
            jobs: jobs.clone(),
            feed: feed.clone(),
            head: head.clone(),
        };
        // The writer runs on a thread of its own, so that under load its many short waits on the
        // database are not queued behind request handling in the shared runtime.
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("jobtrack-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run_writer(writer, rx, links)),
                    Err(e) => tracing::error!(error = %e, "cannot start the writer runtime"),
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        let task = tokio::spawn(async move {
            let _ = done_rx.await;
        });
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: tx,
                feed,
                head,
                jobs,
                counts,
                writer_task: Mutex::new(Some(task)),
                readers,
            }),
        })
    }

    async fn write(&self, op: Op) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .send(Request::Write { op, reply })
            .await
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?
    }

    pub async fn create_job(&self, job: NewJob) -> Result<Job> {
        match self.write(Op::Create(job)).await? {
            Done::Job(job) => Ok(job),
            Done::Pvc(w) => Ok(w.job),
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
            Done::Pvc(w) => Ok(w.job),
        }
    }

    pub async fn delete_job(&self, id: ObjectId, etag: Option<String>) -> Result<Job> {
        match self.write(Op::Delete { id, etag }).await? {
            Done::Job(job) => Ok(job),
            Done::Pvc(w) => Ok(w.job),
        }
    }

    pub async fn report_pvc(&self, report: PvcReport) -> Result<PvcWritten> {
        match self.write(Op::Report(report)).await? {
            Done::Pvc(written) => Ok(written),
            Done::Job(_) => Err(Error::Internal(
                "the writer answered a report with a job".into(),
            )),
        }
    }

    pub async fn get_job(&self, id: &ObjectId) -> Result<Option<Job>> {
        let cached = self
            .inner
            .jobs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let row = sqlx::query(AssertSqlSafe(SELECT_JOB.as_str()))
            .bind(id.as_str())
            .fetch_optional(&self.inner.readers)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn get_pvc(&self, id: &ObjectId) -> Result<Option<PvcProgress>> {
        let row = sqlx::query(AssertSqlSafe(SELECT_PVC.as_str()))
            .bind(id.as_str())
            .fetch_optional(&self.inner.readers)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    pub async fn list_jobs(&self, query: &ListQuery<Job>) -> Result<Page<Job>> {
        let head = self.head();
        let total =
            self.inner
                .counts
                .total(&query.filter, head, self.count_at_position(&query.filter));
        self.list(query, total).await
    }

    pub async fn list_pvcs(&self, query: &ListQuery<PvcProgress>) -> Result<Page<PvcProgress>> {
        // A job's PVC records are few (the usual query): counting them is cheap.
        let total = async { Ok(self.count_at_position(&query.filter).await?.0) };
        self.list(query, total).await
    }

    /// The number of rows matching `filter` and the change-log position of the snapshot it was
    /// counted in: one statement, so one snapshot.
    async fn count_at_position<T: Stored>(&self, filter: &Filter<T>) -> Result<(i64, u64)> {
        let mut count = Sql::new(
            Dialect::Sqlite,
            &format!("SELECT (SELECT count(*) FROM {} WHERE ", T::TABLE),
        );
        count.filter(filter);
        count.push("), (SELECT coalesce(max(seq), 0) FROM changes)");
        let row = bind(sqlx::query(AssertSqlSafe(count.text)), count.params)
            .fetch_one(&self.inner.readers)
            .await?;
        let position: i64 = row.try_get(1)?;
        Ok((row.try_get(0)?, position.max(0) as u64))
    }

    /// One page (a single indexed query) with the total of all matches.
    async fn list<T: Stored>(
        &self,
        query: &ListQuery<T>,
        total: impl Future<Output = Result<i64>>,
    ) -> Result<Page<T>> {
        let page = crate::store::sql::page(Dialect::Sqlite, query);
        let rows_query = bind(sqlx::query(AssertSqlSafe(page.text)), page.params);
        let rows = async { Ok(rows_query.fetch_all(&self.inner.readers).await?) };
        let (rows, total) = tokio::try_join!(rows, total)?;
        let items = rows.iter().map(decode).collect::<Result<Vec<T>>>()?;
        Ok(Page::from_rows(items, query, total))
    }

    pub async fn count_jobs_by_state(&self) -> Result<Vec<(JobState, i64)>> {
        let rows = sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
            .fetch_all(&self.inner.readers)
            .await?;
        Ok(crate::store::schema::states(rows))
    }

    /// Live committed changes, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.inner.feed.subscribe()
    }

    /// Position of the newest committed change.
    pub fn head(&self) -> u64 {
        self.inner.head.load(Ordering::Acquire)
    }

    /// Up to `limit` changes after position `after` (of one job, if given), in order.
    pub async fn changes_after(
        &self,
        after: u64,
        job: Option<&ObjectId>,
        limit: u32,
    ) -> Result<Vec<Change>> {
        let after = after.min(i64::MAX as u64) as i64;
        let rows: Vec<Vec<u8>> = match job {
            Some(job) => {
                sqlx::query_scalar(
                    "SELECT change FROM changes WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                )
                .bind(job.as_str())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.inner.readers)
                .await?
            }
            None => {
                sqlx::query_scalar("SELECT change FROM changes WHERE seq > ? ORDER BY seq LIMIT ?")
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.inner.readers)
                    .await?
            }
        };
        rows.iter().map(|bytes| decode_change(bytes)).collect()
    }

    /// The retained history: changes after `floor` are all still in the log.
    pub async fn history(&self) -> Result<History> {
        let (min, max): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(seq), max(seq) FROM changes")
                .fetch_one(&self.inner.readers)
                .await?;
        let head = max.unwrap_or(0).max(0) as u64;
        let floor = min.map_or(head, |m| (m.max(1) - 1) as u64);
        Ok(History { floor, head })
    }

    /// A job and its PVC records as of one position, read in one transaction.
    pub async fn snapshot_job(&self, id: &ObjectId) -> Result<JobSnapshot> {
        let mut conn = self.inner.readers.acquire().await?;
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        let result: Result<JobSnapshot> = async {
            let position: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM changes")
                .fetch_one(&mut *conn)
                .await?;
            let job = sqlx::query(AssertSqlSafe(SELECT_JOB.as_str()))
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await?
                .as_ref()
                .map(decode)
                .transpose()?;
            let pvcs = sqlx::query(AssertSqlSafe(SELECT_PVCS_OF_JOB.as_str()))
                .bind(id.as_str())
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(decode)
                .collect::<Result<Vec<_>>>()?;
            Ok(JobSnapshot {
                position: position.max(0) as u64,
                job,
                pvcs,
            })
        }
        .await;
        let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
        result
    }

    /// The jobs matching `filter` after the id `after` (at most `limit`), as of one position,
    /// read in one transaction.
    pub async fn snapshot_jobs(
        &self,
        filter: &Filter<Job>,
        after: Option<&ObjectId>,
        limit: usize,
    ) -> Result<JobsSnapshot> {
        let mut conn = self.inner.readers.acquire().await?;
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        let result: Result<JobsSnapshot> = async {
            let position: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM changes")
                .fetch_one(&mut *conn)
                .await?;
            let sql = snapshot_page(Dialect::Sqlite, filter, after.map(ObjectId::as_str), limit);
            let jobs = bind(sqlx::query(AssertSqlSafe(sql.text)), sql.params)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(decode)
                .collect::<Result<Vec<_>>>()?;
            Ok(JobsSnapshot {
                position: position.max(0) as u64,
                jobs,
            })
        }
        .await;
        let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
        result
    }

    /// Prunes change-log entries older than `older_than` or beyond the newest `keep_at_most`.
    pub async fn prune_history(&self, older_than: i64, keep_at_most: u64) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .send(Request::Prune {
                older_than,
                keep_at_most,
                reply,
            })
            .await
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?
    }

    /// Stores a new API key (its hash only).
    pub async fn create_key(&self, key: &crate::auth::ApiKey) -> Result<()> {
        sqlx::query("INSERT INTO api_keys (id, name, role, hash, created) VALUES (?, ?, ?, ?, ?)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(key.role.as_str())
            .bind(&key.hash)
            .bind(key.created)
            .execute(&self.inner.readers)
            .await?;
        Ok(())
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<crate::auth::ApiKey>> {
        let rows: Vec<crate::store::schema::KeyRow> = sqlx::query_as(
            "SELECT id, name, role, hash, created, revoked FROM api_keys ORDER BY created, id",
        )
        .fetch_all(&self.inner.readers)
        .await?;
        rows.into_iter()
            .map(crate::store::schema::api_key)
            .collect()
    }

    /// Revokes a key; false if there is no such key.
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE api_keys SET revoked = coalesce(revoked, ?) WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.inner.readers)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.inner.readers).await?;
        Ok(())
    }

    pub async fn close(&self) {
        let _ = self.inner.writer.send(Request::Close).await;
        if let Some(task) = self.inner.writer_task.lock().await.take() {
            let _ = task.await;
        }
        // A read still in flight (a watcher catching up) gets a moment to finish; shutdown never
        // waits longer than that for it.
        if tokio::time::timeout(Duration::from_secs(5), self.inner.readers.close())
            .await
            .is_err()
        {
            tracing::warn!("read connections still busy after 5 s; closing anyway");
        }
    }
}

/// Holds the migrated schema to the tables of fields ([`missing_columns`]).
async fn check_sqlite_schema(conn: &mut SqliteConnection) -> Result<()> {
    let mut missing = Vec::new();
    for (table, check) in [
        (
            Job::TABLE,
            missing_columns::<Job> as fn(&[String]) -> Vec<String>,
        ),
        (PvcProgress::TABLE, missing_columns::<PvcProgress>),
    ] {
        let present: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
            .bind(table)
            .fetch_all(&mut *conn)
            .await?;
        missing.extend(check(&present));
    }
    check_schema(missing)
}
