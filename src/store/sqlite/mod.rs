//! The embedded SQLite store (WAL, `synchronous=FULL`).
//!
//! Jobs, PVC records and the change log are written by one writer task ([`writer`]) that owns
//! the only writing connection and commits in groups: it takes every request waiting in its
//! queue, applies them one after another in one transaction, commits once (one fsync), and only
//! then answers each caller. A caller is therefore told "done" only for changes on stable
//! storage, and many callers share the cost of one fsync. Reads use a separate pool of
//! connections, which WAL lets run beside the writer. API keys, written rarely (by `jobtrack
//! keys`), are written through the read pool; SQLite's write lock serialises them with the writer.

mod cache;
mod checkpoint;
mod rows;
mod writer;

use crate::store::txconn::TxConn;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqliteConnection};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use std::sync::Arc;

use crate::domain::Upkeep;
use crate::domain::{Job, ObjectId, PvcProgress};
use crate::error::{Error, Result};
use crate::metrics::WriteMetrics;
use crate::store::DeliveryRecord;
use crate::store::backend::{SqlBackend, ask};
use crate::store::batch::{Done, Op};
use crate::store::db::Db;
use crate::store::feed::Feed;
use crate::store::schema::{Stored, check_schema, missing_columns};
use crate::store::sql::Dialect;
use cache::SharedJobs;
use writer::{Request, WriterLinks, run_writer};

/// Requests that may wait for the writer; callers beyond it wait to enqueue (back-pressure).
const QUEUE_DEPTH: usize = 4096;
/// Read connections: WAL readers run in parallel with the writer and with each other.
const READERS: u32 = 4;

pub(crate) struct SqliteStore {
    writer: mpsc::Sender<Request>,
    writer_task: Mutex<Option<JoinHandle<()>>>,
    /// The background checkpointer ([`checkpoint`]) and what stops it.
    checkpointer: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
    /// What the writer publishes to; its head is the database's.
    feed: Arc<Feed>,
    /// Jobs as the writer last committed them (a subset): read before the database.
    jobs: SharedJobs,
    db: Db<Sqlite>,
}

impl SqliteStore {
    /// Opens the database (running migrations) and starts the writer; answers the store and the
    /// feed its writer publishes to.
    pub async fn open(
        url: &str,
        metrics: WriteMetrics,
        upkeep: Upkeep,
    ) -> Result<(Self, Arc<Feed>)> {
        let options = connect_options(url)?;
        let unavailable =
            |e| Error::Unavailable(format!("cannot open the SQLite database {url:?}: {e}"));
        let mut writer = SqliteConnection::connect_with(&options.clone().create_if_missing(true))
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await
            .map_err(|e| Error::Internal(format!("migrating the SQLite database failed: {e}")))?;
        check_sqlite_schema(&mut writer).await?;
        // Checkpoints run beside the writer, not inside its commits; after a complete one the WAL
        // file is cut back to 64 MiB.
        sqlx::query("PRAGMA wal_autocheckpoint = 0")
            .execute(&mut writer)
            .await?;
        sqlx::query("PRAGMA journal_size_limit = 67108864")
            .execute(&mut writer)
            .await?;
        // The writer keeps the records it writes in its own cache; a large page cache only
        // makes SQLite's end of every transaction longer (pcache1TruncateUnsafe was 4% of the
        // server's time at 32 MiB). SQLite's default, 2 MB, measured 3% more writes/s.
        sqlx::query("PRAGMA cache_size = -2000")
            .execute(&mut writer)
            .await?;
        let checkpoints = checkpoint::Checkpoints::default();
        let checkpoint_conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(unavailable)?;
        let (stop_checkpoints, stopped) = watch::channel(false);
        let checkpointer = tokio::spawn(checkpoint::run(
            checkpoint_conn,
            checkpoints.clone(),
            stopped,
        ));
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        let db = Db::new(readers, Dialect::Sqlite, "seq");
        let feed = Arc::new(Feed::new(db.head(&mut writer).await?));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let jobs = SharedJobs::default();
        let links = WriterLinks {
            jobs: jobs.clone(),
            feed: feed.clone(),
            metrics,
            checkpoints,
            upkeep,
        };
        let store = SqliteStore {
            writer: tx,
            writer_task: Mutex::new(Some(spawn_writer(writer, rx, links)?)),
            checkpointer: Mutex::new(Some((stop_checkpoints, checkpointer))),
            feed: feed.clone(),
            jobs,
            db,
        };
        Ok((store, feed))
    }
}

/// WAL, every commit fsynced, foreign keys, and the regexp function for `$regex`.
fn connect_options(url: &str) -> Result<SqliteConnectOptions> {
    let options = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("database URL {url:?}: {e}")))?
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    Ok(options
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: each commit is fsynced before it is acknowledged (WAL's NORMAL is not durable
        // across a power loss).
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Statement journals (multi-row statements need them) stay in memory, not temp files.
        .pragma("temp_store", "memory")
        // 32 MiB of page cache per connection: the indexes of a few million jobs stay hot.
        .pragma("cache_size", "-32768")
        .with_regexp())
}

/// Starts the writer on a thread of its own, so that under load its many short waits on the
/// database are not queued behind request handling in the shared runtime. The handle resolves
/// when the writer has stopped.
fn spawn_writer(
    conn: SqliteConnection,
    queue: mpsc::Receiver<Request>,
    links: WriterLinks,
) -> Result<JoinHandle<()>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("jobtrack-writer".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(run_writer(conn, queue, links)),
                Err(e) => tracing::error!(error = %e, "cannot start the writer runtime"),
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
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

impl SqlBackend for SqliteStore {
    type Driver = Sqlite;

    async fn write(&self, op: Op) -> Result<Done> {
        ask(&self.writer, |reply| Request::Write { op, reply }).await
    }

    /// One writer: what its cache holds is the database's.
    async fn get_job(&self, id: &ObjectId) -> Result<Option<Job>> {
        match cache::committed_job(&self.jobs, id) {
            Some(job) => Ok(Some(job)),
            None => self.db.job(id).await,
        }
    }

    /// A deferred transaction's snapshot starts at its first read: the head, here.
    async fn begin_snapshot(&self) -> Result<(TxConn<Sqlite>, u64)> {
        let mut conn = TxConn::new(self.db.pool.acquire().await?);
        sqlx::query("BEGIN").execute(&mut **conn).await?;
        let head = self.db.head(&mut conn).await?;
        Ok((conn, head))
    }

    /// One database, one writer: this replica's head is the database's.
    async fn fleet_head(&self) -> Result<u64> {
        Ok(self.feed.head())
    }

    /// Pruning deletes from the change log, so it goes through the writer.
    async fn prune_history(&self, older_than: i64, keep_at_most: u64) -> Result<u64> {
        ask(&self.writer, |reply| Request::Prune {
            older_than,
            keep_at_most,
            reply,
        })
        .await
    }

    /// Through the writer, the one connection that writes ([`Request::SaveDeliveries`]).
    async fn save_deliveries(
        &self,
        owner: &str,
        record: Arc<DeliveryRecord>,
    ) -> Result<Vec<ObjectId>> {
        let owner = owner.to_string();
        ask(&self.writer, |reply| Request::SaveDeliveries {
            owner,
            record,
            reply,
        })
        .await
    }

    async fn close(&self) {
        let _ = self.writer.send(Request::Close).await;
        if let Some(task) = self.writer_task.lock().await.take() {
            let _ = task.await;
        }
        if let Some((stop, task)) = self.checkpointer.lock().await.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        // A read still in flight (a watcher catching up) gets a moment to finish; shutdown never
        // waits longer than that for it.
        if tokio::time::timeout(Duration::from_secs(5), self.db.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("read connections still busy after 5 s; closing anyway");
        }
    }

    fn db(&self) -> &Db<Sqlite> {
        &self.db
    }
}
