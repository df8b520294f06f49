//! `jobtrack bench --op sweep --database URL`: what the upkeep sweeps cost a large database
//! when nothing is due. Loads `--count` finished jobs (ended over the last 29 days: none past the
//! default 30-day retention) and `--jobs` RUNNING ones (reported within 5 minutes: none past the
//! 10-minute stall-after) into the database in bulk, if it holds fewer, then times the sweep's
//! candidate queries `--rounds` times and prints the database's plan for each.
//!
//! With `--finished-age-days N` the finished jobs ended over one day up to N days ago instead:
//! with N > 30, a backlog the default retention purges as soon as a server starts on it
//! (`--rounds 0` only loads; scripts/bench-purge.sh uses it).

use std::time::Instant;

use crate::domain::{Upkeep, now_micros};
use crate::store::{Store, Synthetic};

use super::{BenchArgs, percentile};

pub(super) async fn run(args: &BenchArgs) -> Result<(), String> {
    let url = args
        .database
        .clone()
        .ok_or("--op sweep needs --database (a SQLite file or a postgres:// URL)")?;
    let store = Store::open(&url).await.map_err(|e| e.to_string())?;
    let total = args.count + args.jobs;
    let have = store
        .count_jobs_by_state()
        .await
        .map_err(|e| e.to_string())?;
    let have: i64 = have.iter().map(|(_, n)| n).sum();
    if (have as usize) < total {
        let started = Instant::now();
        let (finished, active) = ((args.count as u64), (args.jobs as u64));
        let what = Synthetic {
            finished,
            active,
            spread_secs: if args.finished_age_days > 0 {
                86_400
            } else {
                29 * 86_400
            },
            age_secs: args.finished_age_days as i64 * 86_400,
        };
        store
            .load_synthetic(what)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "sweep: loaded {finished} finished and {active} RUNNING jobs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    if args.rounds == 0 {
        store.close().await;
        return Ok(());
    }
    let upkeep = Upkeep::default();
    let mut micros = Vec::with_capacity(args.rounds);
    let mut found = 0;
    for _ in 0..args.rounds {
        let started = Instant::now();
        let due = store
            .due_jobs(&upkeep, now_micros(), 64)
            .await
            .map_err(|e| e.to_string())?;
        micros.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        found += due.len();
    }
    micros.sort_unstable();
    let jobs: i64 = store
        .count_jobs_by_state()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|(_, n)| n)
        .sum();
    out!(
        "sweep: {jobs} jobs, {} sweeps, nothing due: {} found; per sweep (5 queries, one \
         round trip each) p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        micros.len(),
        found,
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        percentile(&micros, 1.0),
    );
    for (sweep, sql, plan) in store
        .explain_due(&upkeep, now_micros())
        .await
        .map_err(|e| e.to_string())?
    {
        out!("\n{} candidates: {sql}", sweep.as_str());
        for line in plan {
            out!("  {line}");
        }
    }
    store.close().await;
    Ok(())
}
