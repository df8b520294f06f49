//! `--op resync`: a WatchJobs client on a flaky network. It drops its stream every
//! `--drop-every-ms` and resumes from the last token it received, until SYNCED; it reports the
//! time to SYNCED, the streams it took, and any job the snapshot sent twice.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::BenchArgs;
use crate::cli::client::Client;
use crate::pb;

pub(super) async fn run(args: &BenchArgs, clients: &[Client]) -> Result<(), String> {
    let mut client = clients[0].clone();
    let drop_every = Duration::from_millis(args.drop_every_ms.max(1));
    let started = Instant::now();
    let (mut token, mut streams, mut events) = (String::new(), 0u64, 0u64);
    let mut seen = HashSet::new();
    let mut repeated = 0u64;
    let synced = loop {
        if started.elapsed() > Duration::from_secs(args.duration.max(1)) {
            break None;
        }
        streams += 1;
        let request = pb::WatchJobsRequest {
            r#where: args.r#where.clone(),
            resume_token: token.clone(),
        };
        let mut stream = client
            .watch_jobs(request)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let until = tokio::time::Instant::now() + drop_every;
        let mut done = false;
        // (A deadline in the past still lets a ready message through: check it each time.)
        while tokio::time::Instant::now() < until
            && let Ok(message) = tokio::time::timeout_at(until, stream.message()).await
        {
            let Some(event) = message.map_err(|e| e.to_string())? else {
                break;
            };
            events += 1;
            token = event.resume_token.clone();
            if args.client_us_per_event > 0 && events.is_multiple_of(1000) {
                // A client that spends time on each event (parsing, storing, drawing).
                tokio::time::sleep(Duration::from_micros(1000 * args.client_us_per_event)).await;
            }
            if event.r#type == pb::JobEventType::Snapshot as i32
                && let Some(job) = event.job
                && !seen.insert(job.id)
            {
                repeated += 1;
            }
            if event.r#type == pb::JobEventType::Synced as i32 {
                done = true;
                break;
            }
        }
        if done {
            break Some(started.elapsed());
        }
    };
    match synced {
        Some(elapsed) => out!(
            "op=Resync where={} jobs_in_snapshot={} synced_after={:.2}s streams={streams} events={events} repeated_jobs={repeated} drop_every={}ms client_us_per_event={}",
            args.r#where,
            seen.len(),
            elapsed.as_secs_f64(),
            args.drop_every_ms,
            args.client_us_per_event
        ),
        None => out!(
            "op=Resync where={} NOT SYNCED after {}s: jobs_in_snapshot={} streams={streams} events={events} repeated_jobs={repeated} drop_every={}ms client_us_per_event={}",
            args.r#where,
            args.duration,
            seen.len(),
            args.drop_every_ms,
            args.client_us_per_event
        ),
    }
    Ok(())
}
