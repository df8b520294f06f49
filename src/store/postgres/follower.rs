//! The feed on Postgres: a follower task per replica reads the log after its cursor, in position
//! order, and publishes each change to the local hub and count cache. It is woken by the local
//! sequencer, by `LISTEN jobtrack_changes` (the doorbell), and once a second; after the listening
//! connection reconnects it reads whatever it missed. The log stays the truth: a lost
//! notification costs latency, not changes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use super::reads::Jobs;
use super::sequencer::{CHANNEL, SWEEP_EVERY};
use crate::store::db::positioned;
use crate::store::feed::Feed;

/// Changes the follower reads per query.
const FOLLOW_PAGE: i64 = 1000;

/// Reads the log after its cursor and publishes each change, in position order.
/// Each change goes to `jobs` before the feed's head moves past it.
pub(super) async fn run_follower(
    pool: PgPool,
    feed: Arc<Feed>,
    jobs: Arc<Jobs>,
    wake: Arc<Notify>,
) {
    let mut cursor = feed.head();
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        loop {
            let rows: Result<Vec<(i64, Vec<u8>)>, sqlx::Error> = sqlx::query_as(
                "SELECT pos, change FROM changes WHERE pos > $1 ORDER BY pos LIMIT $2",
            )
            .bind(cursor.min(i64::MAX as u64) as i64)
            .bind(FOLLOW_PAGE)
            .fetch_all(&pool)
            .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            for (pos, bytes) in &rows {
                match positioned(*pos, bytes) {
                    Ok(change) => {
                        cursor = change.seq;
                        jobs.apply(&change);
                        feed.publish(Arc::new(change));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, pos, "unreadable change-log entry; skipped");
                        jobs.skipped(*pos as u64);
                        cursor = *pos as u64;
                    }
                }
            }
            if (rows.len() as i64) < FOLLOW_PAGE {
                break;
            }
        }
    }
}

/// `LISTEN jobtrack_changes`: wakes the follower on every sequencer run in the fleet, and after
/// every reconnect of the listening connection (notifications may have been missed).
pub(super) async fn run_doorbell(pool: PgPool, follower: Arc<Notify>) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for changes; retrying");
                tokio::time::sleep(SWEEP_EVERY).await;
                continue;
            }
        };
        follower.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => follower.notify_one(),
                // The connection was lost and is re-established: catch up.
                Ok(None) => follower.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "listening for changes failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    follower.notify_one();
                    break;
                }
            }
        }
    }
}
