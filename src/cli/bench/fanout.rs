//! Watch fan-out under load (`--op fanout`), and idle watchers attached to any other op
//! (`--idle-watchers`) to compare write throughput with and without them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{BenchArgs, Rng, connect, cores, cpu_seconds, percentile, rss_kib, sample_job};
use crate::cli::client::Client;
use crate::domain::now_micros;
use crate::pb;

/// What a bench watcher watches: one job (WatchJob) or a filter (WatchJobs).
#[derive(Clone)]
enum Watched {
    Job(String),
    Jobs(String),
}

/// Whether a bench watcher goes on reading after SYNCED or holds its stream without reading.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    Always,
    StopAtSynced,
}

/// Opens `count` watch streams on `watched` over `connections` connections; each stream's
/// events go to `on_event` in a task of its own. Returns when every stream has sent SYNCED.
async fn open_watchers(
    server: &str,
    watched: &Watched,
    (count, connections): (usize, usize),
    reading: Reading,
    on_event: impl Fn(usize, pb::JobEvent) + Send + Sync + Clone + 'static,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let clients = connect(server, connections.clamp(1, count.max(1))).await?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(count.max(1));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let mut client = clients[i % clients.len()].clone();
        let (watched, ready, on_event) = (watched.clone(), ready_tx.clone(), on_event.clone());
        tasks.push(tokio::spawn(async move {
            let stream = watch(&mut client, watched).await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    let _ = ready.send(Err(e.to_string())).await;
                    return;
                }
            };
            while let Ok(Some(event)) = stream.message().await {
                let synced = event.r#type == pb::JobEventType::Synced as i32;
                if synced {
                    let _ = ready.send(Ok(())).await;
                }
                on_event(i, event);
                if synced && reading == Reading::StopAtSynced {
                    // Holds the stream open and reads nothing more, until the bench aborts it.
                    std::future::pending::<()>().await;
                }
            }
        }));
    }
    super::all_ready(&mut ready_rx, count, "watch stream").await?;
    Ok(tasks)
}

pub(super) async fn attach_idle_watchers(
    args: &BenchArgs,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut client = connect(&args.server, 1).await?.remove(0);
    let job = sample_job(&mut Rng(7), 0, Some(pb::JobState::Running));
    let idle = client
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let before = args.server_pid.and_then(rss_kib);
    let idle = Watched::Job(idle.id);
    let tasks = open_watchers(
        &args.server,
        &idle,
        (args.idle_watchers, 100),
        Reading::Always,
        |_, _| {},
    )
    .await?;
    let after = args.server_pid.and_then(rss_kib);
    out!(
        "attached {} idle watchers{}",
        args.idle_watchers,
        match (before, after) {
            (Some(b), Some(a)) => format!(" (server memory +{} MiB)", a.saturating_sub(b) / 1024),
            _ => String::new(),
        }
    );
    Ok(tasks)
}

/// Watchers beside a calls op (`--reading-watchers`, `--stalled-watchers`): the stalled ones
/// watch every job and stop reading at SYNCED; each reading one watches one job of the pool and
/// reads everything. The bench aborts them when it ends.
pub(super) struct Beside {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    delivered: Arc<AtomicU64>,
    readers: usize,
}

impl Beside {
    pub(super) async fn attach(args: &BenchArgs, pool: &[String]) -> Result<Beside, String> {
        let delivered = Arc::new(AtomicU64::new(0));
        let mut tasks = open_watchers(
            &args.server,
            &Watched::Jobs(String::new()),
            (args.stalled_watchers, 1),
            Reading::StopAtSynced,
            |_, _| {},
        )
        .await?;
        let readers = if pool.is_empty() {
            0
        } else {
            args.reading_watchers
        };
        for i in 0..readers {
            let counted = delivered.clone();
            let live = Arc::new(AtomicBool::new(false));
            tasks.extend(
                open_watchers(
                    &args.server,
                    &Watched::Job(pool[i % pool.len()].clone()),
                    (1, 1),
                    Reading::Always,
                    move |_, event| {
                        if event.r#type == pb::JobEventType::Synced as i32 {
                            live.store(true, Ordering::Relaxed);
                        } else if live.load(Ordering::Relaxed)
                            && event.r#type != pb::JobEventType::Heartbeat as i32
                        {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                )
                .await?,
            );
        }
        if !tasks.is_empty() {
            out!(
                "attached {} stalled watchers (every job) and {readers} reading watchers (one job each)",
                args.stalled_watchers
            );
        }
        Ok(Beside {
            tasks,
            delivered,
            readers,
        })
    }

    /// After the calls: what the reading watchers received.
    pub(super) fn report(self) {
        if self.readers > 0 {
            out!(
                "reading_watchers={} delivered_to_them={}",
                self.readers,
                self.delivered.load(Ordering::Relaxed)
            );
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Opens one watch stream from the start.
async fn watch(
    client: &mut Client,
    watched: Watched,
) -> Result<tonic::Response<tonic::Streaming<pb::JobEvent>>, tonic::Status> {
    match watched {
        Watched::Job(id) => {
            client
                .watch_job(pb::WatchJobRequest {
                    id,
                    resume_token: String::new(),
                })
                .await
        }
        Watched::Jobs(filter) => {
            client
                .watch_jobs(pb::WatchJobsRequest {
                    r#where: filter,
                    resume_token: String::new(),
                })
                .await
        }
    }
}

/// The deliveries the watchers saw while measuring: latency from the update's send time (carried
/// in the job's message, `t=<micros>`) to its arrival on a stream.
#[derive(Clone, Default)]
struct Deliveries {
    latencies: Arc<Mutex<Vec<u32>>>,
    delivered: Arc<AtomicU64>,
    measuring: Arc<AtomicBool>,
}

impl Deliveries {
    fn see(&self, event: pb::JobEvent) {
        let message = event.job.and_then(|j| j.message);
        self.seen(
            event.r#type == pb::JobEventType::Updated as i32,
            message.as_deref(),
        );
    }

    /// An event over SSE: its type and its data's job.
    fn see_sse(&self, kind: &str, data: &serde_json::Value) {
        self.seen(kind == "updated", data["job"]["message"].as_str());
    }

    fn seen(&self, updated: bool, message: Option<&str>) {
        if !updated || !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        let sent = message.and_then(|m| m.strip_prefix("t=").and_then(|t| t.parse::<i64>().ok()));
        if let Some(sent) = sent {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            let micros = (now_micros() - sent).clamp(0, u32::MAX as i64) as u32;
            self.latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(micros);
        }
    }

    fn count(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

/// Watch fan-out: `--watchers` streams on `--spread` jobs, `--rate` updates/s of them; delivery
/// latency, delivered/expected and server memory per watcher.
pub(super) async fn run(args: &BenchArgs, clients: &[Client]) -> Result<(), String> {
    let write_clients = match &args.write_server {
        Some(url) => connect(url, args.connections.clamp(1, 8)).await?,
        None => clients.to_vec(),
    };
    let (ids, watched) = watched_jobs(args, &write_clients[0]).await?;
    let deliveries = Deliveries::default();
    let before = args.server_pid.and_then(rss_kib);
    let opened = Instant::now();
    let tasks = open_measured(args, &watched, &deliveries).await?;
    let after = args.server_pid.and_then(rss_kib);
    let stalled = open_watchers(
        &args.server,
        &watched,
        (args.stalled_watchers, 1),
        Reading::StopAtSynced,
        |_, _| {},
    )
    .await?;
    let (before_writes, stalled_count) = (args.server_pid.and_then(rss_kib), stalled.len());
    out!(
        "{} watchers synced in {:.1}s",
        args.watchers,
        opened.elapsed().as_secs_f64()
    );

    deliveries.measuring.store(true, Ordering::Relaxed);
    let cpu_server = cpu_seconds(args.server_pid);
    let cpu_self = cpu_seconds(None);
    let (writes, elapsed) = write_at_rate(args, &write_clients, &ids).await?;
    let expected = writes * args.watchers as u64;
    // Let deliveries drain, up to 10 s.
    let drain = Instant::now();
    while deliveries.count() < expected && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_server = cores(cpu_server, cpu_seconds(args.server_pid), elapsed);
    let growth = match (before_writes, args.server_pid.and_then(rss_kib)) {
        (Some(b), Some(a)) => format!("{:.1}MiB", a.saturating_sub(b) as f64 / 1024.0),
        _ => "n/a".into(),
    };
    let cpu_self = cores(cpu_self, cpu_seconds(None), elapsed);
    let mut latencies = std::mem::take(
        &mut *deliveries
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    latencies.sort_unstable();
    let memory = match (before, after) {
        (Some(b), Some(a)) => format!(
            "{:.1}KiB",
            a.saturating_sub(b) as f64 / args.watchers.max(1) as f64
        ),
        _ => "n/a".into(),
    };
    out!(
        "op=Fanout{} watchers={} connections={} writes={writes} ({:.0}/s, asked {}/s) delivered={}/{expected} p50={:.1}ms p99={:.1}ms max={:.1}ms memory_per_watcher={memory} stalled_watchers={stalled_count} server_rss_growth_during_writes={growth} server_cpu={cpu_server} bench_cpu={cpu_self}",
        if args.sse { " sse" } else { "" },
        args.watchers,
        // Each SSE stream has its own HTTP/1.1 connection.
        if args.sse {
            args.watchers
        } else {
            args.connections
        },
        writes as f64 / elapsed,
        args.rate,
        deliveries.count(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    for t in tasks.into_iter().chain(stalled) {
        t.abort();
    }
    Ok(())
}

/// Opens the `--watchers` streams whose deliveries are measured: gRPC, or with `--sse` Server-Sent
/// Events, one HTTP/1.1 connection each.
async fn open_measured(
    args: &BenchArgs,
    watched: &Watched,
    deliveries: &Deliveries,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let seen = deliveries.clone();
    if !args.sse {
        return open_watchers(
            &args.server,
            watched,
            (args.watchers, args.connections),
            Reading::Always,
            move |_, event| seen.see(event),
        )
        .await;
    }
    let path = match watched {
        Watched::Job(id) => format!("/api/v1/jobs/{id}?watch=1"),
        Watched::Jobs(filter) => format!(
            "/api/v1/jobs?watch=1&where={}",
            percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC)
        ),
    };
    super::sse::open_watchers(&args.server, &path, args.watchers, move |kind, data| {
        seen.see_sse(kind, &data);
    })
    .await
}

/// Creates the jobs written to (with a spread, they share a cluster id of this run's own) and
/// says how the watchers watch them.
async fn watched_jobs(args: &BenchArgs, client: &Client) -> Result<(Vec<String>, Watched), String> {
    let mut client = client.clone();
    let cluster = format!("{:024x}", now_micros());
    let mut ids = Vec::new();
    for i in 0..args.spread.max(1) {
        let mut job = sample_job(&mut Rng(11 + i as u64), i, Some(pb::JobState::Running));
        job.cluster = Some(cluster.clone());
        let job = client
            .create_job(pb::CreateJobRequest { job: Some(job) })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        ids.push(job.id);
    }
    let watched = if ids.len() == 1 {
        Watched::Job(ids[0].clone())
    } else {
        Watched::Jobs(format!(r#"{{"cluster":"{cluster}"}}"#))
    };
    Ok((ids, watched))
}

/// Sends `--rate` updates/s spread over `ids` for `--duration` (at most 256 in flight); answers
/// the writes acknowledged and the seconds it took.
async fn write_at_rate(
    args: &BenchArgs,
    clients: &[Client],
    ids: &[String],
) -> Result<(u64, f64), String> {
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut n = 0usize;
    while started.elapsed() < Duration::from_secs(args.duration.max(1)) {
        ticker.tick().await;
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let mut client = clients[n % clients.len()].clone();
        let (id, acked) = (ids[n % ids.len()].clone(), acked.clone());
        n += 1;
        tokio::spawn(async move {
            let update = pb::UpdateJobRequest {
                job: Some(pb::Job {
                    id,
                    message: Some(format!("t={}", now_micros())),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["message".into()],
                }),
                ..Default::default()
            };
            if client.update_job(update).await.is_ok() {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = limit.acquire_many(256).await;
    Ok((acked.load(Ordering::Relaxed), elapsed))
}
