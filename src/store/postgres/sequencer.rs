//! Numbering left-overs: a batch numbers its own change-log entries in its transaction, under an
//! exclusive lock on the empty table `change_sequencer` ([`super::writer`]). Entries committed
//! without a position — by a replica of an earlier version, which numbered after its commits —
//! are numbered by the next batch, by a sequenced snapshot, or by this once-a-second run, which
//! gives every visible entry without a position the next positions in insertion order, then
//! sends one `NOTIFY jobtrack_changes` with the new head.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use crate::error::Result;

/// The doorbell's channel.
pub(super) const CHANNEL: &str = "jobtrack_changes";
/// How often the sequencer and the follower run without being woken.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Takes the fleet's numbering lock, until the end of the caller's transaction. Unlike a SELECT
/// it does not fix a snapshot: the next statement sees every commit of the previous holder.
pub(super) const LOCK_SEQUENCER: &str = "LOCK TABLE change_sequencer IN EXCLUSIVE MODE";

/// The start of a statement that numbers every visible change-log entry without a position,
/// after the highest position, in insertion order: `base.b` is the head before, `todo` the
/// entries numbered, `numbered` their new positions. [`SEQUENCE`] and the writer's insert
/// (`NUMBER_AND_INSERT`) go on from it.
macro_rules! number_left_overs {
    () => {
        "WITH base AS (SELECT coalesce(max(pos), 0) AS b FROM changes), \
         todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM changes WHERE pos IS NULL), \
         numbered AS (UPDATE changes c SET pos = base.b + todo.n FROM todo, base \
                      WHERE c.id = todo.id RETURNING c.pos)"
    };
}
pub(super) use number_left_overs;

/// Numbers the left-overs; answers (entries numbered, the head after numbering).
const SEQUENCE: &str = concat!(
    number_left_overs!(),
    " SELECT (SELECT count(*) FROM numbered), \
            (SELECT coalesce(max(pos), (SELECT b FROM base)) FROM numbered)"
);

/// Runs one sequencer step on `conn`, inside the caller's transaction (which holds the lock).
pub(super) async fn sequence_step(conn: &mut PgConnection) -> Result<(i64, u64)> {
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
pub(super) async fn sequence(pool: &PgPool) -> Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_SEQUENCER).execute(&mut *tx).await?;
    let (_, head) = sequence_step(&mut tx).await?;
    tx.commit().await?;
    Ok(head)
}

/// Numbers left-over entries once a second (anyone's), and wakes the follower after each run.
pub(super) async fn run_sequencer(pool: PgPool, follower: Arc<Notify>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        match sequence(&pool).await {
            Ok(_) => follower.notify_one(),
            Err(e) => tracing::warn!(error = %e, "numbering the change log failed; retrying"),
        }
    }
}
