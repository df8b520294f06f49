//! Positions after commit: the sequencer numbers committed change-log entries, one run at a
//! time in the whole fleet (under an exclusive lock on the empty table `change_sequencer`),
//! giving every visible entry without a position the next positions in insertion order, then
//! sends one `NOTIFY jobtrack_changes` with the new head — one small notification per run, never
//! one per write. Each replica runs it right after its own commits and once a second anyway.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use crate::error::Result;

/// The doorbell's channel.
pub(super) const CHANNEL: &str = "jobtrack_changes";
/// How often the sequencer and the follower run without being woken.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long a write waits for its entry to be numbered before it is acknowledged anyway (it is
/// committed; only the freshness of totals elsewhere depends on the numbering).
const SEQUENCE_WAIT: Duration = Duration::from_secs(2);

/// Numbers every visible change-log entry without a position, after the highest position, in
/// insertion order; answers (entries numbered, the head after numbering).
const SEQUENCE: &str = "WITH base AS (SELECT coalesce(max(pos), 0) AS b FROM changes), \
     todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM changes WHERE pos IS NULL), \
     done AS (UPDATE changes c SET pos = base.b + todo.n FROM todo, base \
              WHERE c.id = todo.id RETURNING c.pos) \
     SELECT (SELECT count(*) FROM done), \
            (SELECT coalesce(max(pos), (SELECT b FROM base)) FROM done)";

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
    pub(super) fn new() -> Sequencer {
        Sequencer {
            started: std::sync::Mutex::new(0),
            finished: tokio::sync::watch::channel(0).0,
            wake: Notify::new(),
        }
    }

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

/// Numbers entries after this replica's commits (woken) and once a second (anyone's).
pub(super) async fn run_sequencer(pool: PgPool, sequencer: Arc<Sequencer>, follower: Arc<Notify>) {
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
