//! The contract of a storage backend: what SQLite and Postgres each do their own way. The
//! [`Store`](super::Store) builds every operation on it once, together with the SQL both share
//! ([`Db`]), so a method added here and forgotten by one backend does not compile, and the same
//! outcome means the same answer on both.

use crate::store::txconn::TxConn;

use std::sync::Arc;

use crate::domain::{Job, ObjectId};
use crate::error::Result;
use crate::store::DeliveryRecord;
use crate::store::batch::{Done, Op};
use crate::store::db::Db;

pub(crate) trait SqlBackend {
    type Driver: sqlx::Database;

    /// The shared statements and the pool they run on.
    fn db(&self) -> &Db<Self::Driver>;

    /// Applies one write, committed with whatever else is being written at the moment (group
    /// commit), and answers once it is on stable storage.
    async fn write(&self, op: Op) -> Result<Done>;

    /// The job as of every write acknowledged before this call (from memory when the backend
    /// can be sure of it, else from its row).
    async fn get_job(&self, id: &ObjectId) -> Result<Option<Job>>;

    /// A connection in a read transaction whose snapshot reflects exactly the changes up to the
    /// position it answers with. End it with [`Db::end_snapshot`].
    async fn begin_snapshot(&self) -> Result<(TxConn<Self::Driver>, u64)>;

    /// The newest position in the whole database: every acknowledged write of any replica is at
    /// or below it.
    async fn fleet_head(&self) -> Result<u64>;

    /// Removes change-log entries older than `older_than` (µs) or beyond the newest
    /// `keep_at_most`, in bounded chunks; the newest entry always stays, and every entry after
    /// a subscription's cursor. Answers how many went.
    async fn prune_history(&self, older_than: i64, keep_at_most: u64) -> Result<u64>;

    /// Records webhook progress and attempts in one transaction; answers the subscriptions
    /// `owner` no longer holds ([`Db::record_deliveries`]).
    async fn save_deliveries(
        &self,
        owner: &str,
        record: Arc<DeliveryRecord>,
    ) -> Result<Vec<ObjectId>>;

    /// Finishes pending writes and closes the database.
    async fn close(&self);
}

/// Sends a request that carries its own reply channel to a writer's queue, and waits for the
/// answer: UNAVAILABLE if the writer has stopped (the store is shutting down).
pub(crate) async fn ask<R, T>(
    queue: &tokio::sync::mpsc::Sender<R>,
    request: impl FnOnce(tokio::sync::oneshot::Sender<Result<T>>) -> R,
) -> Result<T> {
    let gone = || crate::error::Error::Unavailable("the store is shutting down".into());
    let (reply, answer) = tokio::sync::oneshot::channel();
    queue.send(request(reply)).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}
