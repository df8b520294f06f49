//! The upkeep sweeper: every `--sweep-every` each replica asks the store which jobs are due
//! ([`Store::due_jobs`]: finished jobs past their retention, silent jobs past their stall-after,
//! stalled jobs past their abandon time — each an index lookup) and has each swept through the
//! writer ([`Store::sweep`]), where the domain decides again against the job as stored. So a
//! purge is a DeleteJob (a DELETED change every watcher sees, exact totals), a mark is an UPDATED
//! change, and on a fleet the replicas that find the same job act on it once between them.
//!
//! A backlog (a first start with `--retain-finished` on a full database, a fleet that was down)
//! is worked off in chunks, each followed by a pause nine times as long as the chunk took: the
//! sweeps take at most about a tenth of the writer's time, however busy it is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::domain::{Sweep, Upkeep, now_micros};
use crate::metrics::Metrics;
use crate::store::Store;

/// Jobs of each kind of sweep taken in one chunk.
const CHUNK: usize = 64;
/// The pause after a chunk, as a multiple of the time the chunk took.
const PAUSE_FACTOR: u32 = 9;

/// Sweeps until the task is aborted.
pub async fn run(store: Store, upkeep: Upkeep, every: Duration, metrics: Arc<Metrics>) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = sweep_due(&store, &upkeep, &metrics).await {
            tracing::warn!(error = %e, "the upkeep sweep failed; trying again next time");
        }
    }
}

/// Sweeps every job due now, a chunk at a time; answers how many this replica swept.
pub async fn sweep_due(
    store: &Store,
    upkeep: &Upkeep,
    metrics: &Metrics,
) -> crate::error::Result<usize> {
    let mut swept = 0;
    loop {
        let started = Instant::now();
        let due = store.due_jobs(upkeep, now_micros(), CHUNK).await?;
        if due.is_empty() {
            return Ok(swept);
        }
        let full = [Sweep::Expire, Sweep::Stall, Sweep::Abandon]
            .iter()
            .any(|kind| due.iter().filter(|(_, s)| s == kind).count() >= CHUNK);
        let outcomes = join_all(due.into_iter().map(|(id, sweep)| store.sweep(id, sweep))).await;
        let before = swept;
        for outcome in outcomes {
            match outcome {
                Ok(Some(done)) => {
                    swept += 1;
                    metrics.record_sweep(done);
                }
                // Not due after all: the executor wrote, or another replica came first.
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        // A chunk that found nothing to do (all raced away) is not worth repeating now.
        if !full || swept == before {
            return Ok(swept);
        }
        tokio::time::sleep(started.elapsed() * PAUSE_FACTOR).await;
    }
}
