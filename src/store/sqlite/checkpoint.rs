//! Checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: it copies the
//! WAL's pages into the database file and fsyncs it while every caller of that batch, and of the
//! batches queued behind it, waits. Profiled under sustained writes that was a fifth of the
//! writer connection's time. So the writer turns it off, and this task checkpoints from a
//! connection of its own, beside the writer (a PASSIVE checkpoint never blocks a writer or a
//! reader).
//!
//! A checkpoint running beside a writer never catches up with it completely, and SQLite starts
//! the WAL over only after a checkpoint that did. So when the WAL has grown past
//! [`RESTART_FRAMES`], this task asks the writer to run one last checkpoint itself between two
//! batches: the pages are already copied, so it is short, and the next commit starts the WAL
//! over. Durability is untouched: every commit still fsyncs the WAL before it is acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::{Row, SqliteConnection};
use tokio::sync::watch;

/// How often the WAL is copied into the database file while writes come in.
const INTERVAL: Duration = Duration::from_millis(100);
/// WAL frames (pages, 4 KiB each) after which the writer is asked to let the WAL start over.
const RESTART_FRAMES: i64 = 8192;

/// What the checkpointer and the writer share.
#[derive(Clone, Default)]
pub(super) struct Checkpoints {
    /// Set when the writer should run a finishing checkpoint after its current batch.
    restart_wanted: Arc<AtomicBool>,
}

impl Checkpoints {
    /// Called by the writer between batches: whether it should checkpoint now (once per request).
    pub(super) fn take_restart(&self) -> bool {
        self.restart_wanted.swap(false, Ordering::AcqRel)
    }
}

/// Runs a PASSIVE checkpoint on `conn`; answers (frames in the WAL, frames copied).
pub(super) async fn checkpoint(conn: &mut SqliteConnection) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await?;
    Ok((row.try_get(1)?, row.try_get(2)?))
}

/// Checkpoints every [`INTERVAL`] until `stop` changes; asks the writer for a finishing
/// checkpoint when the WAL is long.
pub(super) async fn run(
    mut conn: SqliteConnection,
    shared: Checkpoints,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        match checkpoint(&mut conn).await {
            Ok((frames, _)) if frames >= RESTART_FRAMES => {
                shared.restart_wanted.store(true, Ordering::Release);
            }
            Ok(_) => {}
            // SQLITE_BUSY: another checkpoint is running (the writer's); the next tick retries.
            Err(e) => tracing::debug!(error = %e, "background checkpoint did not run"),
        }
    }
    if let Err(e) = sqlx::Connection::close(conn).await {
        tracing::warn!(error = %e, "closing the checkpoint connection failed");
    }
}
