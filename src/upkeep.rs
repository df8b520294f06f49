//! The upkeep sweeper: every `--sweep-every` each replica asks the store which jobs are due
//! ([`Store::due_jobs`]: finished jobs past their retention, silent jobs past their stall-after,
//! stalled jobs past their abandon time — each an index lookup) and has each swept through the
//! writer ([`Store::sweep`]), where the domain decides again against the job as stored. So a
//! purge is a DeleteJob (a DELETED change every watcher sees, exact totals), a mark is an UPDATED
//! change, and on a fleet the replicas that find the same job act on it once between them.
//!
//! A backlog (a first start with `--retain-finished` on a full database, a fleet that was down)
//! is worked off in chunks. When anything else was written meanwhile (the change log moved by
//! more than the chunk's own changes, on any replica), the next chunk waits nineteen times as long
//! as this one took: the sweeps then take about a twentieth of the writer's time, however busy it
//! is. With nothing else written, the next chunk goes at once. Should the backlog last longer than
//! a tenth of the retention (at most 10 minutes) — jobs finish faster than a twentieth of a busy
//! writer can delete them — the pause shrinks to the chunk's own time (half the writer), so that
//! the database cannot grow without bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::domain::{Sweep, Upkeep, now_micros};
use crate::metrics::Metrics;
use crate::store::Store;

/// Jobs of each kind of sweep taken in one chunk.
const CHUNK: usize = 64;
/// The pause after a chunk, as a multiple of the time the chunk took: gently, and when behind.
const PAUSE_FACTOR: u32 = 19;
const BEHIND_PAUSE_FACTOR: u32 = 1;
/// The longest a backlog is worked off gently.
const MOST_PATIENCE: Duration = Duration::from_secs(600);

/// How fast the sweeper works off a backlog: it remembers since when it has had one.
#[derive(Debug)]
pub struct Pace {
    behind_since: Option<Instant>,
    patience: Duration,
}

impl Pace {
    pub fn new(upkeep: &Upkeep) -> Pace {
        let tenth = upkeep.retain_finished.map_or(MOST_PATIENCE, |r| r / 10);
        Pace {
            behind_since: None,
            patience: tenth.min(MOST_PATIENCE),
        }
    }

    fn pause_factor(&self) -> u32 {
        match self.behind_since {
            Some(since) if since.elapsed() > self.patience => BEHIND_PAUSE_FACTOR,
            _ => PAUSE_FACTOR,
        }
    }
}

/// Sweeps until the task is aborted.
pub async fn run(store: Store, upkeep: Upkeep, every: Duration, metrics: Arc<Metrics>) {
    let mut pace = Pace::new(&upkeep);
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = sweep_due(&store, &upkeep, &metrics, &mut pace).await {
            tracing::warn!(error = %e, "the upkeep sweep failed; trying again next time");
        }
    }
}

/// Sweeps every job due now, a chunk at a time; answers how many this replica swept.
pub async fn sweep_due(
    store: &Store,
    upkeep: &Upkeep,
    metrics: &Metrics,
    pace: &mut Pace,
) -> crate::error::Result<usize> {
    let mut swept = 0;
    loop {
        let started = Instant::now();
        let head = store.head();
        let due = store.due_jobs(upkeep, now_micros(), CHUNK).await?;
        let full = [Sweep::Expire, Sweep::Stall, Sweep::Abandon]
            .iter()
            .any(|kind| due.iter().filter(|(_, s)| s == kind).count() >= CHUNK);
        if !full {
            pace.behind_since = None;
        }
        if due.is_empty() {
            return Ok(swept);
        }
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
        pace.behind_since.get_or_insert(started);
        // Each sweep that acted wrote one change; any more are other writers'.
        let others = store.head().saturating_sub(head) > (swept - before) as u64;
        if others {
            tokio::time::sleep(started.elapsed() * pace.pause_factor()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_worked_gently_until_it_outlasts_a_tenth_of_the_retention() {
        let upkeep = Upkeep {
            retain_finished: Some(Duration::from_secs(100)),
            ..Upkeep::default()
        };
        let mut pace = Pace::new(&upkeep);
        assert_eq!(pace.patience, Duration::from_secs(10));
        assert_eq!(pace.pause_factor(), PAUSE_FACTOR);
        pace.behind_since = Some(Instant::now());
        assert_eq!(
            pace.pause_factor(),
            PAUSE_FACTOR,
            "behind, but not for long"
        );
        pace.behind_since = Instant::now().checked_sub(Duration::from_secs(11));
        assert_eq!(pace.pause_factor(), BEHIND_PAUSE_FACTOR);
        // The default 30 days: patient for ten minutes at most.
        assert_eq!(Pace::new(&Upkeep::default()).patience, MOST_PATIENCE);
    }
}
