//! The Postgres store: many `jobtrack serve` replicas on one database.
//!
//! Writes: group commit ([`writer`]). The operations a replica receives at once share one
//! transaction, which locks their jobs' rows (`FOR UPDATE`, in id order), so changes of one job
//! are serialised across the whole fleet; applies them through the same in-memory batch as
//! SQLite (`BatchState`); writes the rows; then takes the fleet's sequencer lock (`LOCK TABLE
//! change_sequencer IN EXCLUSIVE MODE`), inserts the change-log entries with the next positions
//! and a `NOTIFY jobtrack_changes` with the new head, and commits (Postgres flushes the WAL
//! before COMMIT returns). Only that last insert and the commit are serialised across the fleet;
//! the lock is released once the commit is visible, so positions follow the order in which
//! changes became visible, with no gaps, and a higher position is never visible before a lower
//! one. A write is acknowledged with its position taken: the next list or watch anywhere sees it.
//!
//! Entries committed without a position (a replica of an earlier version numbered after its
//! commits) are numbered by the next batch, by a snapshot, or by the once-a-second
//! [`sequencer`]. The feed: a [`follower`] per replica publishes the numbered log in position
//! order; the [`snapshot`]s of watch starts and counts reflect exactly the changes up to one
//! position.

mod follower;
mod reads;
mod sequencer;
mod snapshot;
mod writer;

use crate::store::txconn::TxConn;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

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
use sequencer::{run_sequencer, sequence};
use writer::{BATCHES_IN_FLIGHT, Pending, run_writer, writer_options};

/// Connections for calls (reads and writes) per replica.
const POOL_SIZE: u32 = 16;
/// Connections for sequencing (and the first half of a sequenced snapshot).
const SEQUENCER_POOL_SIZE: u32 = 4;
/// Writes waiting for the group-commit writer.
const WRITE_QUEUE: usize = 4096;

pub(crate) struct PgStore {
    db: Db<Postgres>,
    sequencer_pool: PgPool,
    /// The group-commit writer's connections ([`writer_options`]).
    writer_pool: PgPool,
    follower_wake: Arc<Notify>,
    /// Jobs as of the follower's cursor, and the shared head reads of GetJob ([`reads`]).
    jobs: Arc<reads::Jobs>,
    /// What the follower publishes to.
    feed: Arc<Feed>,
    read_index: Arc<reads::ReadIndex>,
    /// The queue of the group-commit writer.
    writes: mpsc::Sender<Pending>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl PgStore {
    /// Connects (running migrations) and starts the writer, sequencer, follower and doorbell;
    /// answers the store and the feed its follower publishes to.
    pub async fn open(
        url: &str,
        metrics: WriteMetrics,
        upkeep: Upkeep,
    ) -> Result<(Self, Arc<Feed>)> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("database URL: {e}")))?
            .application_name("jobtrack");
        let pool = connect(&options, POOL_SIZE).await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| Error::Internal(format!("migrating the Postgres database failed: {e}")))?;
        check_postgres_schema(&pool).await?;
        let sequencer_pool = connect(&options, SEQUENCER_POOL_SIZE).await?;
        let writer_pool = connect(&writer_options(&options), BATCHES_IN_FLIGHT as u32).await?;
        let feed = Arc::new(Feed::new(sequence(&sequencer_pool).await?));
        let follower_wake = Arc::new(Notify::new());
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let jobs = Arc::new(reads::Jobs::new(feed.head()));
        let read_index = reads::ReadIndex::new();
        let tasks = vec![
            tokio::spawn(run_writer(
                writer_pool.clone(),
                queue,
                follower_wake.clone(),
                metrics,
                upkeep,
            )),
            tokio::spawn(run_sequencer(sequencer_pool.clone(), follower_wake.clone())),
            tokio::spawn(follower::run_follower(
                pool.clone(),
                feed.clone(),
                jobs.clone(),
                follower_wake.clone(),
            )),
            tokio::spawn(
                read_index
                    .clone()
                    .run(Db::new(pool.clone(), Dialect::Postgres, "pos")),
            ),
            tokio::spawn(follower::run_doorbell(pool.clone(), follower_wake.clone())),
        ];
        let store = PgStore {
            db: Db::new(pool, Dialect::Postgres, "pos"),
            sequencer_pool,
            writer_pool,
            follower_wake,
            jobs,
            feed: feed.clone(),
            read_index,
            writes,
            tasks: std::sync::Mutex::new(tasks),
        };
        Ok((store, feed))
    }
}

async fn connect(options: &PgConnectOptions, size: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await
        .map_err(|e| Error::Unavailable(format!("cannot connect to Postgres: {e}")))
}

impl SqlBackend for PgStore {
    type Driver = Postgres;

    /// Committed, with its position, together with whatever else this replica is writing at the
    /// moment ([`writer`]); acknowledged after the commit.
    async fn write(&self, op: Op) -> Result<Done> {
        ask(&self.writes, |reply| Pending { op, reply }).await
    }

    /// From the kept copy once the local feed has reached the fleet's head ([`reads`]).
    async fn get_job(&self, id: &ObjectId) -> Result<Option<Job>> {
        let published = || self.feed.head();
        reads::job(&self.read_index, &self.jobs, published, &self.db.pool, id).await
    }

    async fn begin_snapshot(&self) -> Result<(TxConn<Postgres>, u64)> {
        snapshot::begin(&self.db.pool, &self.sequencer_pool, &self.follower_wake).await
    }

    async fn fleet_head(&self) -> Result<u64> {
        self.db.head(&mut *self.db.pool.acquire().await?).await
    }

    async fn save_deliveries(
        &self,
        owner: &str,
        record: Arc<DeliveryRecord>,
    ) -> Result<Vec<ObjectId>> {
        self.db.save_deliveries(owner, &record).await
    }

    /// Prunes numbered entries older than `older_than` or beyond the newest `keep_at_most`, in
    /// chunks; the newest entry always stays.
    async fn prune_history(&self, older_than: i64, keep_at_most: u64) -> Result<u64> {
        let result = sqlx::query(
            "DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE pos IS NOT NULL \
             AND pos < (SELECT max(pos) FROM changes) \
             AND (at < $1 OR pos <= (SELECT max(pos) FROM changes) - $2) \
             AND pos <= (SELECT coalesce(min(cursor), 9223372036854775807) FROM subscriptions) \
             ORDER BY pos LIMIT 50000)",
        )
        .bind(older_than)
        .bind(keep_at_most.min(i64::MAX as u64) as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn close(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain(..)
            .collect();
        for task in tasks {
            task.abort();
        }
        self.sequencer_pool.close().await;
        self.writer_pool.close().await;
        self.db.pool.close().await;
    }

    fn db(&self) -> &Db<Postgres> {
        &self.db
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
