//! `--op webhooks`: webhook delivery under write load. Starts a receiver in the bench process
//! (HTTP/1.1, answers 200 at once), creates `--subscriptions` subscriptions to it (the server
//! must run with `--webhook-allow-private`), then updates jobs open-loop at `--rate` per second
//! and measures, per delivery, the time from the change's commit (the body's `timestamp`) to the
//! receiver's answer, and the writes' own latency. `--subscriptions 0` is the baseline.
//! `--scope all`: each subscription wants every change (each write is delivered
//! `--subscriptions` times); `--scope job`: subscription i wants the changes of pool job i only
//! (`{"name": "kubecluster-i"}`), so each write is delivered once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::TcpListener;

use super::{BenchArgs, cores, cpu_seconds, percentile, running_jobs};
use crate::cli::client::{Client, KeyHeader, channel, key_header};
use crate::pb;
use crate::pb::subscription_service_client::SubscriptionServiceClient;

type Subscriptions = SubscriptionServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, KeyHeader>,
>;

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    delivered: AtomicU64,
    /// Commit → answer, µs, of deliveries whose change committed in the measured window.
    latencies: Mutex<Vec<u32>>,
    /// The measured window, µs since the epoch.
    window: Mutex<(i64, i64)>,
}

pub(super) async fn run(args: &BenchArgs, clients: &[Client]) -> Result<(), String> {
    let seen = Arc::new(Seen::default());
    let url = receive(seen.clone()).await?;
    let per_job = args.scope == "job";
    let pool = create_pool(args, clients, per_job).await?;
    let mut subscriptions =
        SubscriptionServiceClient::with_interceptor(channel(&args.server).await?, key_header());
    let ids = subscribe(args, &mut subscriptions, &url, per_job).await?;
    // The subscriptions are claimed within a renewal; let them start before measuring.
    tokio::time::sleep(Duration::from_secs(args.warmup.max(4))).await;

    let measure = Duration::from_secs(args.duration.max(1));
    let start = crate::domain::now_micros();
    *seen
        .window
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
        (start, start + measure.as_micros() as i64);
    let cpu_self = cpu_seconds(None);
    let cpu_server = cpu_seconds(args.server_pid);
    let (writes, write_latencies) = if args.rate > 0.0 {
        write_at_rate(args, clients, &pool, measure).await
    } else {
        write_closed_loop(args, clients, &pool, measure).await
    };
    let elapsed = measure.as_secs_f64();
    let cpu_self = cores(cpu_self, cpu_seconds(None), elapsed);
    let cpu_server = cores(cpu_server, cpu_seconds(args.server_pid), elapsed);
    let delivered_in_window = seen.delivered.load(Ordering::Relaxed);
    let expected = match (per_job, ids.len()) {
        (_, 0) => 0,
        (true, _) => writes,
        (false, n) => writes * n as u64,
    };
    let drain = Instant::now();
    while seen.delivered.load(Ordering::Relaxed) < expected && drain.elapsed().as_secs() < 30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = std::mem::take(
        &mut *seen
            .latencies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    latencies.sort_unstable();
    let mut writes_sorted = write_latencies;
    writes_sorted.sort_unstable();
    out!(
        "webhooks subscriptions={} scope={} rate={} writes={writes} ({:.0}/s) write_p50={:.2}ms write_p99={:.2}ms \
         delivered={}/{expected} ({:.0}/s in the window) delivery_p50={:.1}ms delivery_p99={:.1}ms \
         delivery_max={:.1}ms bench_cpu={cpu_self} server_cpu={cpu_server}",
        ids.len(),
        args.scope,
        args.rate,
        writes as f64 / elapsed,
        percentile(&writes_sorted, 0.5),
        percentile(&writes_sorted, 0.99),
        seen.delivered.load(Ordering::Relaxed),
        delivered_in_window as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().map_or(0.0, |l| f64::from(*l) / 1000.0),
    );
    for id in ids {
        let _ = subscriptions
            .delete_subscription(pb::DeleteSubscriptionRequest { id })
            .await;
    }
    Ok(())
}

/// Creates `--subscriptions` subscriptions to `url` (with `--scope job`, subscription i wants
/// pool job i); answers their ids.
async fn subscribe(
    args: &BenchArgs,
    subscriptions: &mut Subscriptions,
    url: &str,
    per_job: bool,
) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for i in 0..args.subscriptions {
        let created = subscriptions
            .create_subscription(pb::CreateSubscriptionRequest {
                url: url.to_string(),
                r#where: if per_job {
                    format!(r#"{{"name": "kubecluster-{i}"}}"#)
                } else {
                    String::new()
                },
                events: pb::SubscriptionEvents::All as i32,
            })
            .await
            .map_err(|e| format!("creating a subscription failed: {e}"))?;
        ids.push(created.into_inner().id);
    }
    Ok(ids)
}

/// The jobs the writes go to: `--jobs` of them, or one per subscription with `--scope job`.
async fn create_pool(
    args: &BenchArgs,
    clients: &[Client],
    per_job: bool,
) -> Result<Vec<String>, String> {
    // Without subscriptions, the same pool as `--scope all`: a baseline is the same writes.
    let jobs = if per_job && args.subscriptions > 0 {
        args.subscriptions
    } else {
        args.jobs
    };
    running_jobs(&clients[0], jobs.clamp(1, 1000)).await
}

/// UpdateJob of the pool's jobs, one after another.
fn update(id: String, n: u64) -> pb::UpdateJobRequest {
    pb::UpdateJobRequest {
        job: Some(pb::Job {
            id,
            message: Some(format!("step {n}")),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["message".into()],
        }),
        append_activity: vec![],
        etag: String::new(),
    }
}

/// UpdateJob for `measure` by `--concurrency` callers, each sending its next when its last is
/// answered; answers the writes acknowledged and their latencies (µs).
async fn write_closed_loop(
    args: &BenchArgs,
    clients: &[Client],
    pool: &[String],
    measure: Duration,
) -> (u64, Vec<u32>) {
    let end = Instant::now() + measure;
    let next = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for c in 0..args.concurrency.max(1) {
        let mut client = clients[c % clients.len()].clone();
        let (pool, next) = (pool.to_vec(), next.clone());
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let id = pool[n as usize % pool.len()].clone();
                let begun = Instant::now();
                if client.update_job(update(id, n)).await.is_ok() {
                    latencies.push(begun.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await.unwrap_or_default());
    }
    (all.len() as u64, all)
}

/// UpdateJob at `--rate` per second for `measure` (at most 256 in flight); answers the writes
/// acknowledged and their latencies (µs).
async fn write_at_rate(
    args: &BenchArgs,
    clients: &[Client],
    pool: &[String],
    measure: Duration,
) -> (u64, Vec<u32>) {
    let every = Duration::from_secs_f64(1.0 / args.rate.max(1.0));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + measure;
    let mut n = 0u64;
    let mut tasks = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        n += 1;
        let mut client = clients[n as usize % clients.len()].clone();
        let id = pool[n as usize % pool.len()].clone();
        let (latencies, done) = (latencies.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let begun = Instant::now();
            if client.update_job(update(id, n)).await.is_ok() {
                done.fetch_add(1, Ordering::Relaxed);
                let micros = begun.elapsed().as_micros().min(u32::MAX as u128) as u32;
                latencies
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(micros);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let latencies = std::mem::take(
        &mut *latencies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    (done.load(Ordering::Relaxed), latencies)
}

/// Starts the receiver; answers its URL.
async fn receive(seen: Arc<Seen>) -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("the receiver cannot listen: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("the receiver's address: {e}"))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let seen = seen.clone();
                    async move { answer(&seen, request).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(format!("http://{addr}/bench"))
}

async fn answer(
    seen: &Seen,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(committed) = committed_at(&body) {
        let now = crate::domain::now_micros();
        let (start, end) = *seen
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if committed >= start && committed < end {
            let micros = (now - committed).clamp(0, i64::from(u32::MAX)) as u32;
            seen.latencies
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(micros);
        }
    }
    seen.delivered.fetch_add(1, Ordering::Relaxed);
    Ok(hyper::Response::new(Full::new(Bytes::new())))
}

/// The commit time (µs) in a webhook body's `"timestamp":"2026-12-02T04:05:20.739440Z"`.
fn committed_at(body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"timestamp\":\"")? + 13;
    let t = text.get(at..at + 27)?;
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_commit_time_of_a_body() {
        let body = br#"{"data":{},"timestamp":"2026-12-01T21:08:20.123456Z","type":"job.updated"}"#;
        assert_eq!(super::committed_at(body), Some(1_796_159_300_123_456));
    }
}
