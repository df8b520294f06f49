//! The only place with SQL. [`Store`] is the one interface the application and the watchers
//! use; it runs every operation once, over a backend: SQLite (embedded, the default) or
//! Postgres (a fleet of replicas on one database).
//!
//! - [`backend`]: the contract each backend fulfils its own way (group commit, snapshots, the
//!   head of the change log); [`db`]: the SQL both share, written once over either driver;
//! - [`sqlite`] and [`postgres`]: the two backends;
//! - [`batch`]: a batch of writes applied in memory through the domain, shared by both;
//! - [`schema`]: columns, parameters and row decoding, derived from the tables of fields;
//! - [`sql`]: filters and orders as parameterised SQL; [`feed`]: the live feed of changes;
//! - [`counts`]: list totals kept exact from the feed.
//!
//! Every write reads the current record, lets the domain decide ([`JobChange::apply`],
//! [`PvcReport::apply`]) and writes the result with its change-log entry in one transaction,
//! acknowledged only after the commit is on stable storage.
//!
//! [`JobChange::apply`]: crate::domain::JobChange::apply

mod backend;
mod batch;
mod counts;
mod db;
mod feed;
#[cfg(test)]
mod fuzz;
mod postgres;
mod schema;
pub mod sql;
mod sqlite;
mod subscriptions;
mod sweeps;
mod txconn;

pub use subscriptions::{ATTEMPTS_KEPT, DeliveryRecord};
pub use sweeps::Synthetic;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::auth::ApiKey;
use crate::domain::query::{Filter, ListQuery};
use crate::domain::subscription::{Attempt, Subscription};
use crate::domain::{
    Change, Job, JobChange, JobState, NewJob, ObjectId, PvcProgress, PvcReport, Sweep, Upkeep,
};
use crate::error::{Error, Result};
use crate::metrics::WriteMetrics;
use backend::SqlBackend;
use batch::Op;
use counts::JobCounts;
use feed::Feed;
use postgres::PgStore;
use sqlite::SqliteStore;

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

/// The storage of jobs, PVC records, the change log and API keys.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// The live feed the backend publishes this replica's view of the log to.
    feed: Arc<Feed>,
    /// Totals of job lists, kept exact from the feed.
    counts: JobCounts,
    metrics: WriteMetrics,
}

enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Runs `$body` with `$b` bound to the store's backend, whichever it is: each operation of the
/// store is written once, here, for both.
macro_rules! on_backend {
    ($store:expr, $b:ident => $body:expr) => {
        match &*$store.backend {
            Backend::Sqlite($b) => $body,
            Backend::Postgres($b) => $body,
        }
    };
}

/// Runs the read `$read` on `$conn`, a connection in a snapshot of backend `$b`; answers the
/// read's result with the snapshot's position.
macro_rules! in_snapshot {
    ($b:ident, $conn:ident => $read:expr) => {{
        let (mut $conn, position) = $b.begin_snapshot().await?;
        let read = $read;
        $b.db().end_snapshot($conn).await;
        read.map(|value| (value, position))
    }};
}

impl Store {
    /// Opens the store named by `url` and runs its migrations: `postgres://...` (or
    /// `postgresql://...`), else SQLite: `sqlite::memory:`, `sqlite:PATH`, `sqlite://PATH` or a
    /// plain file path.
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with(url, Upkeep::default()).await
    }

    /// [`Store::open`], with the retention and stall policy its writer decides by.
    pub async fn open_with(url: &str, upkeep: Upkeep) -> Result<Store> {
        let metrics = WriteMetrics::default();
        let (backend, feed) = if url.starts_with("postgres://") || url.starts_with("postgresql://")
        {
            let (store, feed) = PgStore::open(url, metrics.clone(), upkeep).await?;
            (Backend::Postgres(store), feed)
        } else {
            let (store, feed) = SqliteStore::open(url, metrics.clone(), upkeep).await?;
            (Backend::Sqlite(store), feed)
        };
        Ok(Store {
            backend: Arc::new(backend),
            counts: JobCounts::start(feed.subscribe(), feed.head()),
            feed,
            metrics,
        })
    }

    /// What the writers measure, for `/metrics`.
    pub fn write_metrics(&self) -> &WriteMetrics {
        &self.metrics
    }

    /// Runs one write through the backend's group commit, in a `store.write` span whose child
    /// `group_commit` is the wait for the batch's commit.
    async fn write(&self, op: Op) -> Result<batch::Done> {
        use tracing::Instrument;
        let span = tracing::info_span!("store.write", op = op.name());
        async {
            let commit = tracing::info_span!("group_commit");
            on_backend!(self, b => b.write(op).instrument(commit).await)
        }
        .instrument(span)
        .await
    }

    pub async fn create_job(&self, job: NewJob) -> Result<Job> {
        self.write(Op::Create(job)).await?.job()
    }

    /// Applies `change` to the job if its etag still equals `etag` (when given).
    pub async fn change_job(
        &self,
        id: ObjectId,
        etag: Option<String>,
        change: JobChange,
    ) -> Result<Job> {
        self.write(Op::Change { id, etag, change }).await?.job()
    }

    /// Deletes the job and its PVC records; returns the job as it was last.
    pub async fn delete_job(&self, id: ObjectId, etag: Option<String>) -> Result<Job> {
        self.write(Op::Delete { id, etag }).await?.job()
    }

    pub async fn report_pvc(&self, report: PvcReport) -> Result<PvcWritten> {
        self.write(Op::Report(report)).await?.pvc()
    }

    /// Up to `limit` jobs of each kind of sweep that `upkeep` finds due at `now` (candidates:
    /// [`Store::sweep`] decides again).
    pub async fn due_jobs(
        &self,
        upkeep: &Upkeep,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(ObjectId, Sweep)>> {
        on_backend!(self, b => b.db().due_jobs(upkeep, now, limit).await)
    }

    /// Does `sweep` to the job if it is still due, through the same writer (and the same kind
    /// of change) as a client's write; answers what was done.
    pub async fn sweep(&self, id: ObjectId, sweep: Sweep) -> Result<Option<Sweep>> {
        self.write(Op::Sweep { id, sweep }).await?.swept()
    }

    /// For benchmarks of a large database only: loads synthetic jobs in bulk, bypassing the
    /// writer (open the store again afterwards).
    pub async fn load_synthetic(&self, what: Synthetic) -> Result<()> {
        let now = crate::domain::now_micros();
        sweeps::load_synthetic(self.synthetic_target(), what, now).await
    }

    /// The sweeps' queries at `now` with the database's plan of each (Postgres: run, with
    /// buffers), to show which index answers them.
    pub async fn explain_due(
        &self,
        upkeep: &Upkeep,
        now: i64,
    ) -> Result<Vec<(Sweep, String, Vec<String>)>> {
        let queries: Vec<(Sweep, String, Vec<schema::Param>)> = on_backend!(self, b => b
            .db()
            .due_queries(upkeep, now)
            .into_iter()
            .map(|(sweep, sql, params)| (sweep, sql.to_string(), params))
            .collect());
        let mut plans = Vec::new();
        for (sweep, sql, params) in queries {
            let plan = sweeps::explain(self.synthetic_target(), &sql, &params).await?;
            plans.push((sweep, sql, plan));
        }
        Ok(plans)
    }

    fn synthetic_target(&self) -> sweeps::SyntheticTarget<'_> {
        match &*self.backend {
            Backend::Sqlite(b) => sweeps::SyntheticTarget::Sqlite(&b.db().pool),
            Backend::Postgres(b) => sweeps::SyntheticTarget::Postgres(&b.db().pool),
        }
    }

    /// A job as of every write acknowledged before this call.
    #[tracing::instrument(name = "store.get_job", skip_all)]
    pub async fn get_job(&self, id: &ObjectId) -> Result<Option<Job>> {
        on_backend!(self, b => b.get_job(id).await)
    }

    pub async fn get_pvc(&self, id: &ObjectId) -> Result<Option<PvcProgress>> {
        on_backend!(self, b => b.db().pvc(id).await)
    }

    /// One page of jobs, with the exact total of all matches (kept by the count cache).
    #[tracing::instrument(name = "store.list_jobs", skip_all)]
    pub async fn list_jobs(&self, query: &ListQuery<Job>) -> Result<Page<Job>> {
        on_backend!(self, b => {
            // Every acknowledged write is at or below the fleet's head: the total waits for it.
            let head = b.fleet_head().await?;
            let count = async {
                in_snapshot!(b, conn => b.db().count(&mut conn, &query.filter).await)
            };
            let total = self.counts.total(&query.filter, head, count);
            b.db().page(query, total).await
        })
    }

    /// One page of PVC records; a job's records are few (the usual query): counting is cheap.
    pub async fn list_pvcs(&self, query: &ListQuery<PvcProgress>) -> Result<Page<PvcProgress>> {
        on_backend!(self, b => b.db().page(query, b.db().count_now(&query.filter)).await)
    }

    /// Number of jobs in each state, for the metrics page.
    pub async fn count_jobs_by_state(&self) -> Result<Vec<(JobState, i64)>> {
        on_backend!(self, b => b.db().jobs_by_state().await)
    }

    /// Live committed changes, in commit order, from now on. A receiver that falls more than the
    /// feed's capacity behind is told it lagged and reads the rest with [`Store::changes_after`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.feed.subscribe()
    }

    /// Position of the newest committed change this replica has published.
    pub fn head(&self) -> u64 {
        self.feed.head()
    }

    /// Up to `limit` changes after position `after` (of one job, if given), in order.
    pub async fn changes_after(
        &self,
        after: u64,
        job: Option<&ObjectId>,
        limit: u32,
    ) -> Result<Vec<Change>> {
        on_backend!(self, b => b.db().changes_after(after, job, limit).await)
    }

    pub async fn history(&self) -> Result<History> {
        on_backend!(self, b => b.db().history().await)
    }

    /// A job and its PVC records as of one position, read in one snapshot.
    pub async fn snapshot_job(&self, id: &ObjectId) -> Result<JobSnapshot> {
        on_backend!(self, b => {
            let ((job, pvcs), position) =
                in_snapshot!(b, conn => b.db().job_with_pvcs(&mut conn, id).await)?;
            Ok(JobSnapshot { position, job, pvcs })
        })
    }

    /// One page of a WatchJobs snapshot: the jobs matching `filter` after the id `after`, in id
    /// order, at most `limit`, as of the position it answers with.
    pub async fn snapshot_jobs(
        &self,
        filter: &Filter<Job>,
        after: Option<&ObjectId>,
        limit: usize,
    ) -> Result<JobsSnapshot> {
        on_backend!(self, b => {
            let (jobs, position) =
                in_snapshot!(b, conn => b.db().snapshot_page(&mut conn, filter, after, limit).await)?;
            Ok(JobsSnapshot { position, jobs })
        })
    }

    /// Removes change-log entries older than `older_than` (µs) or beyond the newest
    /// `keep_at_most`, in bounded chunks, but none after a subscription's cursor; returns how
    /// many went.
    pub async fn prune_history(&self, older_than: i64, keep_at_most: u64) -> Result<u64> {
        on_backend!(self, b => b.prune_history(older_than, keep_at_most).await)
    }

    pub async fn create_key(&self, key: &ApiKey) -> Result<()> {
        on_backend!(self, b => b.db().create_key(key).await)
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        on_backend!(self, b => b.db().list_keys().await)
    }

    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<bool> {
        on_backend!(self, b => b.db().revoke_key(id, now).await)
    }

    /// Stores a new subscription whose cursor is the fleet's head: every change acknowledged
    /// before this call is behind it, every later one after it.
    pub async fn create_subscription(
        &self,
        mut subscription: Subscription,
    ) -> Result<Subscription> {
        on_backend!(self, b => {
            subscription.cursor = b.fleet_head().await?;
            b.db().create_subscription(&subscription).await?;
            Ok(subscription)
        })
    }

    pub async fn get_subscription(&self, id: &ObjectId) -> Result<Option<Subscription>> {
        on_backend!(self, b => b.db().get_subscription(id).await)
    }

    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        on_backend!(self, b => b.db().list_subscriptions().await)
    }

    pub async fn delete_subscription(&self, id: &ObjectId) -> Result<bool> {
        on_backend!(self, b => b.db().delete_subscription(id).await)
    }

    /// Takes or renews the leases `owner` may hold until `until` (µs); answers what it holds.
    pub async fn claim_subscriptions(
        &self,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Vec<Subscription>> {
        on_backend!(self, b => b.db().claim_subscriptions(owner, now, until).await)
    }

    pub async fn release_subscriptions(&self, owner: &str) -> Result<()> {
        on_backend!(self, b => b.db().release_subscriptions(owner).await)
    }

    /// Records, in one transaction, the progress and attempts of the subscriptions `owner`
    /// holds; answers those it no longer holds (their delivery must stop).
    pub async fn save_deliveries(
        &self,
        owner: &str,
        record: Arc<DeliveryRecord>,
    ) -> Result<Vec<ObjectId>> {
        on_backend!(self, b => b.save_deliveries(owner, record).await)
    }

    pub async fn list_attempts(&self, id: &ObjectId, limit: usize) -> Result<Vec<Attempt>> {
        on_backend!(self, b => b.db().list_attempts(id, limit).await)
    }

    /// Whether the store answers a trivial query (for health checks).
    pub async fn ping(&self) -> Result<()> {
        on_backend!(self, b => b.db().ping().await)
    }

    /// Finishes pending writes and closes the database.
    pub async fn close(&self) {
        on_backend!(self, b => b.close().await)
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
