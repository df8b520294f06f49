//! The only place with SQL. [`Store`] is the one interface the application uses; SQLite (embedded,
//! the default) sits behind it today, and Postgres joins as another variant.
//!
//! Every write goes through a `Store` method that reads the current record, lets the domain
//! decide ([`JobChange::apply`], [`PvcReport::apply`]) and writes the result in one transaction,
//! acknowledged only after the commit is on stable storage.

mod batch;
mod counts;
mod postgres;
mod postgres_writer;
mod schema;
pub mod sql;
mod sqlite;
mod sqlite_writer;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::query::{Filter, ListQuery};
use crate::domain::{Change, Job, JobChange, JobState, NewJob, ObjectId, PvcProgress, PvcReport};
use crate::error::{Error, Result};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// One page of a list.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Token of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
    /// Number of all matches.
    pub total: i64,
    /// The page size used (the request's, defaulted and clamped).
    pub page_size: usize,
}

impl<T: crate::domain::query::Resource> Page<T> {
    /// The page from the rows a [`sql::page`] query returned (one more than the page size when
    /// another page follows).
    pub(crate) fn from_rows(mut items: Vec<T>, query: &ListQuery<T>, total: i64) -> Page<T> {
        let next_page_token = if items.len() > query.page_size {
            items.truncate(query.page_size);
            items.last().map(|last| query.token_after(last))
        } else {
            None
        };
        Page {
            items,
            next_page_token,
            total,
            page_size: query.page_size,
        }
    }
}

/// A PVC record after a report, with its job (whose aggregates the report changed).
#[derive(Clone, Debug)]
pub struct PvcWritten {
    pub pvc: PvcProgress,
    pub job: Job,
}

/// The span of the change log: every change after `floor` up to `head` is retained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    pub floor: u64,
    pub head: u64,
}

/// A job and its PVC records as they were at change-log position `position`.
#[derive(Debug)]
pub struct JobSnapshot {
    pub position: u64,
    pub job: Option<Job>,
    pub pvcs: Vec<PvcProgress>,
}

/// The jobs matching a filter as they were at change-log position `position`.
#[derive(Debug)]
pub struct JobsSnapshot {
    pub position: u64,
    pub jobs: Vec<Job>,
}

/// The storage of jobs and PVC records.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Opens the store named by `url` and runs its migrations: `postgres://...` (or
    /// `postgresql://...`), else SQLite: `sqlite::memory:`, `sqlite:PATH`, `sqlite://PATH` or a
    /// plain file path.
    pub async fn open(url: &str) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Store::Postgres(PgStore::open(url).await?));
        }
        Ok(Store::Sqlite(SqliteStore::open(url).await?))
    }

    /// Which backend this is, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn create_job(&self, job: NewJob) -> Result<Job> {
        match self {
            Store::Sqlite(s) => s.create_job(job).await,
            Store::Postgres(s) => s.create_job(job).await,
        }
    }

    pub async fn get_job(&self, id: &ObjectId) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(s) => s.get_job(id).await,
            Store::Postgres(s) => s.get_job(id).await,
        }
    }

    pub async fn list_jobs(&self, query: &ListQuery<Job>) -> Result<Page<Job>> {
        match self {
            Store::Sqlite(s) => s.list_jobs(query).await,
            Store::Postgres(s) => s.list_jobs(query).await,
        }
    }

    /// Applies `change` to the job if its etag still equals `etag` (when given).
    pub async fn change_job(
        &self,
        id: ObjectId,
        etag: Option<String>,
        change: JobChange,
    ) -> Result<Job> {
        match self {
            Store::Sqlite(s) => s.change_job(id, etag, change).await,
            Store::Postgres(s) => s.change_job(id, etag, change).await,
        }
    }

    /// Deletes the job and its PVC records; returns the job as it was last.
    pub async fn delete_job(&self, id: ObjectId, etag: Option<String>) -> Result<Job> {
        match self {
            Store::Sqlite(s) => s.delete_job(id, etag).await,
            Store::Postgres(s) => s.delete_job(id, etag).await,
        }
    }

    pub async fn report_pvc(&self, report: PvcReport) -> Result<PvcWritten> {
        match self {
            Store::Sqlite(s) => s.report_pvc(report).await,
            Store::Postgres(s) => s.report_pvc(report).await,
        }
    }

    pub async fn get_pvc(&self, id: &ObjectId) -> Result<Option<PvcProgress>> {
        match self {
            Store::Sqlite(s) => s.get_pvc(id).await,
            Store::Postgres(s) => s.get_pvc(id).await,
        }
    }

    pub async fn list_pvcs(&self, query: &ListQuery<PvcProgress>) -> Result<Page<PvcProgress>> {
        match self {
            Store::Sqlite(s) => s.list_pvcs(query).await,
            Store::Postgres(s) => s.list_pvcs(query).await,
        }
    }

    /// Number of jobs in each state, for the metrics page.
    pub async fn count_jobs_by_state(&self) -> Result<Vec<(JobState, i64)>> {
        match self {
            Store::Sqlite(s) => s.count_jobs_by_state().await,
            Store::Postgres(s) => s.count_jobs_by_state().await,
        }
    }

    /// Live committed changes, in commit order, from now on. A receiver that falls more than the
    /// feed's capacity behind is told it lagged and reads the rest with [`Store::changes_after`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        match self {
            Store::Sqlite(s) => s.subscribe(),
            Store::Postgres(s) => s.subscribe(),
        }
    }

    /// Position of the newest committed change.
    pub fn head(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.head(),
            Store::Postgres(s) => s.head(),
        }
    }

    /// Up to `limit` changes after position `after` (of one job, if given), in order.
    pub async fn changes_after(
        &self,
        after: u64,
        job: Option<&ObjectId>,
        limit: u32,
    ) -> Result<Vec<Change>> {
        match self {
            Store::Sqlite(s) => s.changes_after(after, job, limit).await,
            Store::Postgres(s) => s.changes_after(after, job, limit).await,
        }
    }

    pub async fn history(&self) -> Result<History> {
        match self {
            Store::Sqlite(s) => s.history().await,
            Store::Postgres(s) => s.history().await,
        }
    }

    pub async fn snapshot_job(&self, id: &ObjectId) -> Result<JobSnapshot> {
        match self {
            Store::Sqlite(s) => s.snapshot_job(id).await,
            Store::Postgres(s) => s.snapshot_job(id).await,
        }
    }

    /// One page of a WatchJobs snapshot: the jobs matching `filter` after the id `after`, in id
    /// order, at most `limit`, as of the position it answers with.
    pub async fn snapshot_jobs(
        &self,
        filter: &Filter<Job>,
        after: Option<&ObjectId>,
        limit: usize,
    ) -> Result<JobsSnapshot> {
        match self {
            Store::Sqlite(s) => s.snapshot_jobs(filter, after, limit).await,
            Store::Postgres(s) => s.snapshot_jobs(filter, after, limit).await,
        }
    }

    /// Removes change-log entries older than `older_than` (µs) or beyond the newest
    /// `keep_at_most`, in bounded chunks; returns how many went.
    pub async fn prune_history(&self, older_than: i64, keep_at_most: u64) -> Result<u64> {
        match self {
            Store::Sqlite(s) => s.prune_history(older_than, keep_at_most).await,
            Store::Postgres(s) => s.prune_history(older_than, keep_at_most).await,
        }
    }

    pub async fn create_key(&self, key: &crate::auth::ApiKey) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.create_key(key).await,
            Store::Postgres(s) => s.create_key(key).await,
        }
    }

    pub async fn list_keys(&self) -> Result<Vec<crate::auth::ApiKey>> {
        match self {
            Store::Sqlite(s) => s.list_keys().await,
            Store::Postgres(s) => s.list_keys().await,
        }
    }

    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.revoke_key(id, now).await,
            Store::Postgres(s) => s.revoke_key(id, now).await,
        }
    }

    /// Whether the store answers a trivial query (for health checks).
    pub async fn ping(&self) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(s) => s.ping().await,
        }
    }

    /// Finishes pending writes and closes the database.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// Whether a Postgres error code says the database, not the statement, failed: class 08
/// connection exception, 57P0x shutting down or starting up, 53 insufficient resources.
pub(super) fn database_unavailable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // Postgres error 2201B: an invalid regular expression (the client's).
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.to_string())
            .unwrap_or_default();
        if code == "2201B" {
            return Error::invalid(format!(
                "where: the regular expression is not valid on this database: {}",
                e.as_database_error()
                    .map(|d| d.message())
                    .unwrap_or_default()
            ));
        }
        let connection_lost = database_unavailable(&code);
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %e, "store unavailable");
                Error::Unavailable("the database is unavailable; retry shortly".into())
            }
            e if connection_lost => {
                tracing::warn!(error = %e, "store unavailable");
                Error::Unavailable("the database is unavailable; retry shortly".into())
            }
            e => {
                tracing::error!(error = %e, "store failure");
                Error::Internal(e.to_string())
            }
        }
    }
}
