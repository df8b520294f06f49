//! The embedded SQLite store (WAL, `synchronous=FULL`).
//!
//! All writes go through one writer task that owns the only writing connection and commits in
//! groups: it takes every request waiting in its queue (up to [`MAX_BATCH`]), applies them one
//! after another in one transaction, commits once (one fsync), and only then answers each caller.
//! A caller is therefore told "done" only for changes on stable storage, and many callers share the
//! cost of one fsync. Reads use a separate pool of read-only connections, which WAL lets run
//! beside the writer.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::job::Applied;
use crate::domain::pvc::Progress;
use crate::domain::query::ListQuery;
use crate::domain::{
    Job, JobChange, JobState, NewJob, ObjectId, PvcProgress, PvcReport, now_micros,
};
use crate::error::{Error, Result};
use crate::store::row::{
    JOB_COLUMNS, PVC_COLUMNS, job_from_row, job_params, pvc_from_row, pvc_params,
};
use crate::store::sql::{Dialect, Param, Sql};
use crate::store::{Page, PvcWritten};

/// Most writes committed in one transaction. Large enough to amortise an fsync over a burst,
/// small enough that the first caller of a batch is not kept waiting long.
const MAX_BATCH: usize = 512;
/// Requests that may wait for the writer; callers beyond it wait to enqueue (back-pressure).
const QUEUE_DEPTH: usize = 4096;
/// Read connections: WAL readers run in parallel with the writer and with each other.
const READERS: u32 = 4;

static SELECT_JOB: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"));
static INSERT_JOB: LazyLock<String> = LazyLock::new(|| insert_sql("jobs", JOB_COLUMNS));
static UPDATE_JOB: LazyLock<String> = LazyLock::new(|| update_sql("jobs", JOB_COLUMNS));
static SELECT_PVC: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {PVC_COLUMNS} FROM pvc_progress WHERE id = ?"));
static SELECT_PVC_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {PVC_COLUMNS} FROM pvc_progress WHERE job_id = ? AND namespace = ? AND name = ?"
    )
});
static INSERT_PVC: LazyLock<String> = LazyLock::new(|| insert_sql("pvc_progress", PVC_COLUMNS));
static UPDATE_PVC: LazyLock<String> = LazyLock::new(|| update_sql("pvc_progress", PVC_COLUMNS));

fn insert_sql(table: &str, columns: &str) -> String {
    let marks = vec!["?"; columns.split(',').count()].join(", ");
    format!("INSERT INTO {table} ({columns}) VALUES ({marks})")
}

/// `UPDATE table SET c2 = ?, ... WHERE id = ?`, binding the columns' values in order with the id
/// (the first column) moved to the end.
fn update_sql(table: &str, columns: &str) -> String {
    let sets: Vec<String> = columns
        .split(',')
        .skip(1)
        .map(|c| format!("{} = ?", c.trim()))
        .collect();
    format!("UPDATE {table} SET {} WHERE id = ?", sets.join(", "))
}

fn update_params(mut params: Vec<Param>) -> Vec<Param> {
    let id = params.remove(0);
    params.push(id);
    params
}

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

enum Op {
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
}

#[allow(clippy::large_enum_variant)] // moved once per request
enum Done {
    Job(Job),
    Pvc(PvcWritten),
}

#[allow(clippy::large_enum_variant)] // moved once per request
enum Request {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Done>>,
    },
    /// Commit what is queued, then stop.
    Close,
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::Sender<Request>,
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
            .pragma("cache_size", "-65536")
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
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| {
                Error::Unavailable(format!("cannot open the SQLite database {url:?}: {e}"))
            })?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(run_writer(writer, rx));
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: tx,
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
        let row = sqlx::query(AssertSqlSafe(SELECT_JOB.as_str()))
            .bind(id.as_str())
            .fetch_optional(&self.inner.readers)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn get_pvc(&self, id: &ObjectId) -> Result<Option<PvcProgress>> {
        let row = sqlx::query(AssertSqlSafe(SELECT_PVC.as_str()))
            .bind(id.as_str())
            .fetch_optional(&self.inner.readers)
            .await?;
        row.as_ref().map(pvc_from_row).transpose()
    }

    pub async fn list_jobs(&self, query: &ListQuery<Job>) -> Result<Page<Job>> {
        self.list(query, "jobs", JOB_COLUMNS, job_from_row).await
    }

    pub async fn list_pvcs(&self, query: &ListQuery<PvcProgress>) -> Result<Page<PvcProgress>> {
        self.list(query, "pvc_progress", PVC_COLUMNS, pvc_from_row)
            .await
    }

    /// One keyset page and the total count, each a single indexed query.
    async fn list<T: crate::domain::query::Resource>(
        &self,
        query: &ListQuery<T>,
        table: &str,
        columns: &str,
        decode: impl Fn(&sqlx::sqlite::SqliteRow) -> Result<T>,
    ) -> Result<Page<T>> {
        let mut page = Sql::new(
            Dialect::Sqlite,
            &format!("SELECT {columns} FROM {table} WHERE "),
        );
        page.filter(&query.filter);
        if let Some(after) = &query.after {
            page.push(" AND ");
            page.after(&query.order, after);
        }
        page.order_by(&query.order);
        page.push(&format!(" LIMIT {}", query.page_size + 1));

        let mut count = Sql::new(
            Dialect::Sqlite,
            &format!("SELECT count(*) FROM {table} WHERE "),
        );
        count.filter(&query.filter);

        let rows_query = bind(sqlx::query(AssertSqlSafe(page.text)), page.params);
        let count_query = bind(sqlx::query(AssertSqlSafe(count.text)), count.params);
        let (rows, total) = tokio::try_join!(
            rows_query.fetch_all(&self.inner.readers),
            count_query.fetch_one(&self.inner.readers)
        )?;
        let total: i64 = total.try_get(0)?;
        let mut items = rows.iter().map(decode).collect::<Result<Vec<T>>>()?;
        let next_page_token = if items.len() > query.page_size {
            items.truncate(query.page_size);
            items.last().map(|last| query.token_after(last))
        } else {
            None
        };
        Ok(Page {
            items,
            next_page_token,
            total,
        })
    }

    pub async fn count_jobs_by_state(&self) -> Result<Vec<(JobState, i64)>> {
        let rows = sqlx::query("SELECT state, count(*) FROM jobs GROUP BY state")
            .fetch_all(&self.inner.readers)
            .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in rows {
            let state: String = row.try_get(0)?;
            if let Some(state) = JobState::parse(&state) {
                counts.push((state, row.try_get(1)?));
            }
        }
        Ok(counts)
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
        self.inner.readers.close().await;
    }
}

async fn run_writer(mut conn: SqliteConnection, mut queue: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    while !closing {
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write { op, reply } => batch.push((op, reply)),
                Request::Close => closing = true,
            }
            if batch.len() < MAX_BATCH && !closing {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, &mut batch).await;
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the SQLite writer connection failed");
    }
}

/// Applies a batch in one transaction and answers every caller after the commit.
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<(Op, oneshot::Sender<Result<Done>>)>,
) {
    let mut results: Vec<Result<Done>> = Vec::with_capacity(batch.len());
    let outcome: Result<()> = async {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        for (op, _) in batch.iter() {
            match apply(conn, op).await {
                Ok(done) => results.push(Ok(done)),
                // A refusal (bad state, etag, unknown id) is decided before anything is written.
                Err(e) if !matches!(e, Error::Internal(_) | Error::Unavailable(_)) => {
                    results.push(Err(e))
                }
                Err(e) => return Err(e),
            }
        }
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        tracing::error!(error = %e, batch = batch.len(), "write batch failed; rolled back");
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(Err(e.clone()));
        }
        return;
    }
    for ((_, reply), result) in batch.drain(..).zip(results) {
        // The caller may have gone away; its write is committed all the same.
        let _ = reply.send(result);
    }
}

async fn apply(conn: &mut SqliteConnection, op: &Op) -> Result<Done> {
    let now = now_micros();
    match op {
        Op::Create(new) => {
            let job = new.clone().into_job(now)?;
            if load_job(conn, &job.id).await?.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "job {} already exists",
                    job.id
                )));
            }
            bind(
                sqlx::query(AssertSqlSafe(INSERT_JOB.as_str())),
                job_params(&job),
            )
            .execute(&mut *conn)
            .await?;
            Ok(Done::Job(job))
        }
        Op::Change { id, etag, change } => {
            let mut job = load_job(conn, id).await?.ok_or_else(|| not_found(id))?;
            check_etag(&job, etag.as_deref())?;
            if change.apply(&mut job, now)? == Applied::Changed {
                save_job(conn, &job).await?;
            }
            Ok(Done::Job(job))
        }
        Op::Delete { id, etag } => {
            let job = load_job(conn, id).await?.ok_or_else(|| not_found(id))?;
            check_etag(&job, etag.as_deref())?;
            sqlx::query("DELETE FROM pvc_progress WHERE job_id = ?")
                .bind(id.as_str())
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM jobs WHERE id = ?")
                .bind(id.as_str())
                .execute(&mut *conn)
                .await?;
            Ok(Done::Job(job))
        }
        Op::Report(report) => {
            let mut job = load_job(conn, &report.job_id)
                .await?
                .ok_or_else(|| not_found(&report.job_id))?;
            job.ensure_accepts_progress()?;
            let stored = sqlx::query(AssertSqlSafe(SELECT_PVC_BY_KEY.as_str()))
                .bind(report.job_id.as_str())
                .bind(report.namespace.as_str())
                .bind(report.name.as_str())
                .fetch_optional(&mut *conn)
                .await?
                .as_ref()
                .map(pvc_from_row)
                .transpose()?;
            let pvc = report.apply(stored.as_ref(), now)?;
            let mut progress = Progress {
                copy: job.copy_progress,
                snapshot: job.snapshot_progress,
            };
            progress.replace(stored.as_ref(), &pvc);
            job.copy_progress = progress.copy;
            job.snapshot_progress = progress.snapshot;
            job.touch(now);
            let (sql, params) = match stored {
                Some(_) => (UPDATE_PVC.as_str(), update_params(pvc_params(&pvc))),
                None => (INSERT_PVC.as_str(), pvc_params(&pvc)),
            };
            bind(sqlx::query(AssertSqlSafe(sql)), params)
                .execute(&mut *conn)
                .await?;
            save_job(conn, &job).await?;
            Ok(Done::Pvc(PvcWritten { pvc, job }))
        }
    }
}

async fn load_job(conn: &mut SqliteConnection, id: &ObjectId) -> Result<Option<Job>> {
    let row = sqlx::query(AssertSqlSafe(SELECT_JOB.as_str()))
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

async fn save_job(conn: &mut SqliteConnection, job: &Job) -> Result<()> {
    bind(
        sqlx::query(AssertSqlSafe(UPDATE_JOB.as_str())),
        update_params(job_params(job)),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
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
