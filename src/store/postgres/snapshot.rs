//! Snapshots on Postgres (watch starts, list totals) must reflect exactly the changes up to one
//! position. A read transaction that sees no entry without a position is such a snapshot as it
//! is. Otherwise it sequences first: `LOCK TABLE change_sequencer` (which, unlike a SELECT, does
//! not fix the snapshot), number the visible entries, export that snapshot, release the lock,
//! and read in the exported snapshot on a second connection.

use crate::store::txconn::TxConn;
use sqlx::{AssertSqlSafe, PgPool, Postgres};
use tokio::sync::Notify;

use super::sequencer::{LOCK_SEQUENCER, sequence_step};
use crate::error::{Error, Result};

/// A connection of `pool` in a read transaction that reflects exactly the changes up to the
/// position it answers with; numbering runs on `sequencer_pool` when needed, and wakes
/// `follower` so the local feed catches up with what it numbered.
pub(super) async fn begin(
    pool: &PgPool,
    sequencer_pool: &PgPool,
    follower: &Notify,
) -> Result<(TxConn<Postgres>, u64)> {
    // Fast path: a snapshot with no unnumbered entry is exact as it is.
    let mut conn = TxConn::new(pool.acquire().await?);
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut **conn)
        .await?;
    let (unnumbered, head): (bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM changes WHERE pos IS NULL), \
         coalesce((SELECT max(pos) FROM changes), 0)",
    )
    .fetch_one(&mut **conn)
    .await?;
    if !unnumbered {
        return Ok((conn, head.max(0) as u64));
    }
    if sqlx::query("ROLLBACK").execute(&mut **conn).await.is_ok() {
        drop(conn.ended());
    }
    sequenced(pool, sequencer_pool, follower).await
}

/// Numbers the visible entries under the sequencer lock and hands over that very snapshot on a
/// second connection, so the lock is held only for the numbering, not for the caller's reads.
async fn sequenced(
    pool: &PgPool,
    sequencer_pool: &PgPool,
    follower: &Notify,
) -> Result<(TxConn<Postgres>, u64)> {
    // Cancelled or failed before its COMMIT or ROLLBACK, this connection is closed, and its
    // lock on the sequencer with it: never returned to the pool holding it.
    let mut first = TxConn::new(sequencer_pool.acquire().await?);
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut **first)
        .await?;
    let handed = async {
        sqlx::query(LOCK_SEQUENCER).execute(&mut **first).await?;
        let (_, head) = sequence_step(&mut first).await?;
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut **first)
            .await?;
        Ok((import(pool, &snapshot).await?, head))
    }
    .await;
    match handed {
        Ok(handed) => {
            sqlx::query("COMMIT").execute(&mut **first).await?;
            drop(first.ended());
            follower.notify_one();
            Ok(handed)
        }
        Err(e) => {
            if sqlx::query("ROLLBACK").execute(&mut **first).await.is_ok() {
                drop(first.ended());
            }
            Err(e)
        }
    }
}

/// A connection of `pool` in a read transaction on the exported snapshot `snapshot`.
async fn import(pool: &PgPool, snapshot: &str) -> Result<TxConn<Postgres>> {
    if !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Error::Internal(format!(
            "unexpected snapshot id {snapshot:?}"
        )));
    }
    let mut conn = TxConn::new(pool.acquire().await?);
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut **conn)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "SET TRANSACTION SNAPSHOT '{snapshot}'"
    )))
    .execute(&mut **conn)
    .await?;
    Ok(conn)
}
