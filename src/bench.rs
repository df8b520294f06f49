//! `jobtrack bench`: a load generator against a running server, over real gRPC connections.
//!
//! It opens `--connections` HTTP/2 connections, runs `--concurrency` callers spread over them for
//! `--duration` seconds (after a warm-up), and prints calls/s, latency percentiles, errors, and the
//! CPU it used itself (and the server's, given `--server-pid`), so a figure can be read against
//! what the load generator cost on the same machine.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use tonic::transport::Endpoint;

use crate::pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    /// GetJob of random jobs from the pool.
    Get,
    /// UpdateJob (durable) of random RUNNING jobs from the pool.
    Update,
    /// ReportPvcProgress (durable) for random PVCs of random jobs from the pool.
    Report,
    /// CreateJob (durable).
    Create,
    /// ListJobs with --where and --sort (first page).
    List,
    /// Create --count jobs with a realistic mix of states, types and clusters, then stop.
    Seed,
    /// Watch fan-out: --watchers WatchJob streams on one job over --connections connections,
    /// --rate updates/s of that job; delivery latency, delivered/expected, server memory per
    /// watcher.
    Fanout,
}

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Server URL.
    #[arg(long, env = "JOBTRACK_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// What to call.
    #[arg(long, value_enum, default_value_t = BenchOp::Get)]
    pub op: BenchOp,
    /// HTTP/2 connections to spread the callers over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Jobs created first for get/update/report to work on.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    /// Jobs to create with --op seed.
    #[arg(long, default_value_t = 100_000)]
    pub count: usize,
    /// `where` for --op list.
    #[arg(long, default_value = r#"{"state":"RUNNING"}"#)]
    pub r#where: String,
    /// `sort` for --op list.
    #[arg(long, default_value = "-_created")]
    pub sort: String,
    /// PID of the server, to report the CPU and memory it used during the measurement.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// --op fanout: send the updates to this server (another replica on the same Postgres)
    /// while the watchers stay on --server: cross-replica delivery latency.
    #[arg(long)]
    pub write_server: Option<String>,
    /// --op fanout: spread the updates over this many jobs (one job takes one durable write at
    /// a time); with more than one, the watchers use WatchJobs on exactly those jobs.
    #[arg(long, default_value_t = 1)]
    pub spread: usize,
    /// --op fanout: watch streams to open.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// --op fanout: updates per second of the watched job.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Before measuring any op, attach this many idle WatchJob streams (on a job nobody changes),
    /// to compare writer throughput with and without watchers.
    #[arg(long, default_value_t = 0)]
    pub idle_watchers: usize,
}

/// A small xorshift generator: the load needs variety, not cryptography.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TYPES: [pb::JobType; 4] = [
    pb::JobType::K8sSnap,
    pb::JobType::K8sCopy,
    pb::JobType::Restore,
    pb::JobType::DeleteBackup,
];
const STATES: [pb::JobState; 5] = [
    pb::JobState::Running,
    pb::JobState::Completed,
    pb::JobState::Failed,
    pb::JobState::Pending,
    pb::JobState::Partial,
];

fn sample_job(rng: &mut Rng, i: usize, state: Option<pb::JobState>) -> pb::Job {
    let cluster = format!("5f77218d44b03575ec17{:04x}", rng.below(50));
    pb::Job {
        name: Some(format!("kubecluster-{i}")),
        r#type: TYPES[rng.below(TYPES.len())] as i32,
        state: state.unwrap_or(STATES[rng.below(STATES.len())]) as i32,
        cluster: Some(cluster),
        cluster_name: Some("bench".into()),
        backupdef: Some(format!("5f7721cb44b03575ec17{:04x}", rng.below(200))),
        backupdef_name: Some("nightly".into()),
        num_total_resources: Some(377),
        num_backup_resources: Some(0),
        activity: vec!["Initiating backup process".into()],
        ..Default::default()
    }
}

async fn connect(server: &str, n: usize) -> Result<Vec<crate::client::Client>, String> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        // Each Endpoint::connect opens its own TCP connection.
        let channel = Endpoint::from_shared(server.to_string())
            .map_err(|e| format!("bad --server {server:?}: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {server}: {e}"))?;
        clients.push(crate::client::client(channel).max_decoding_message_size(64 * 1024 * 1024));
    }
    Ok(clients)
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    let clients = connect(&args.server, args.connections).await?;
    let _idle = if args.idle_watchers > 0 {
        Some(attach_idle_watchers(&args).await?)
    } else {
        None
    };
    if args.op == BenchOp::Seed {
        return seed(&args, &clients).await;
    }
    if args.op == BenchOp::Fanout {
        return fanout(&args, &clients).await;
    }

    // The pool of jobs to work on: RUNNING, so that updates and reports are legal.
    let mut pool = Vec::new();
    if matches!(args.op, BenchOp::Get | BenchOp::Update | BenchOp::Report) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut client = clients[0].clone();
        for i in 0..args.jobs.max(1) {
            let job = sample_job(&mut rng, i, Some(pb::JobState::Running));
            let created = client
                .create_job(pb::CreateJobRequest { job: Some(job) })
                .await
                .map_err(|e| format!("creating the job pool failed: {e}"))?;
            pool.push(created.into_inner().id);
        }
    }
    let pool = std::sync::Arc::new(pool);

    let warmup = Duration::from_secs(args.warmup);
    let measure = Duration::from_secs(args.duration.max(1));
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency.max(1) {
        let mut client = clients[worker % clients.len()].clone();
        let pool = pool.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng =
                Rng(0x2545_F491_4F6C_DD1D ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9));
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut first_error = None;
            let mut n = 0u64;
            loop {
                let begun = Instant::now();
                if begun >= end {
                    break;
                }
                n += 1;
                let result = match args.op {
                    BenchOp::Get => {
                        let id = pool[rng.below(pool.len())].clone();
                        client.get_job(pb::GetJobRequest { id }).await.map(drop)
                    }
                    BenchOp::Update => {
                        let id = pool[rng.below(pool.len())].clone();
                        let job = pb::Job {
                            id,
                            num_backup_resources: Some((n % 377) as i64),
                            ..Default::default()
                        };
                        client
                            .update_job(pb::UpdateJobRequest {
                                job: Some(job),
                                update_mask: Some(prost_types::FieldMask {
                                    paths: vec!["num_backup_resources".into()],
                                }),
                                ..Default::default()
                            })
                            .await
                            .map(drop)
                    }
                    BenchOp::Report => {
                        let job_id = pool[rng.below(pool.len())].clone();
                        let pvc = pb::PvcProgress {
                            job_id,
                            namespace: "default".into(),
                            name: format!("data-{}", rng.below(8)),
                            state: pb::PvcState::Active as i32,
                            op_type: pb::OpType::K8sCopy as i32,
                            stats: Some(pb::TransferStats {
                                estimated_size: Some(10 << 30),
                                transferred_size: Some((n as i64) << 20),
                                transferred_number_of_files: Some(n as i64),
                                ..Default::default()
                            }),
                            ..Default::default()
                        };
                        client
                            .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(pvc) })
                            .await
                            .map(drop)
                    }
                    BenchOp::Create => {
                        let job = sample_job(&mut rng, n as usize, None);
                        client
                            .create_job(pb::CreateJobRequest { job: Some(job) })
                            .await
                            .map(drop)
                    }
                    BenchOp::List => client
                        .list_jobs(pb::ListJobsRequest {
                            r#where: args.r#where.clone(),
                            sort: args.sort.clone(),
                            page_size: 25,
                            page_token: String::new(),
                        })
                        .await
                        .map(drop),
                    BenchOp::Seed | BenchOp::Fanout => Ok(()),
                };
                let done = Instant::now();
                if begun >= start && done <= end {
                    match result {
                        Ok(()) => {
                            latencies.push((done - begun).as_micros().min(u32::MAX as u128) as u32)
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e.to_string());
                        }
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }

    tokio::time::sleep_until((start).into()).await;
    let cpu_self = cpu_seconds(None);
    let cpu_server = cpu_seconds(args.server_pid);
    let wall = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (l, e, f) = task
            .await
            .map_err(|e| format!("a bench task failed: {e}"))?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = wall
        .elapsed()
        .as_secs_f64()
        .min(measure.as_secs_f64())
        .max(0.001);
    let cpu_self = cpu_seconds(None)
        .zip(cpu_self)
        .map(|(b, a)| (b - a) / elapsed);
    let cpu_server = cpu_seconds(args.server_pid)
        .zip(cpu_server)
        .map(|(b, a)| (b - a) / elapsed);
    latencies.sort_unstable();
    let ok = latencies.len();
    println!(
        "op={:?} connections={} concurrency={} duration={}s calls={} errors={} rate={:.0}/s p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms bench_cpu={} server_cpu={}",
        args.op,
        args.connections,
        args.concurrency,
        args.duration,
        ok,
        errors,
        ok as f64 / measure.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        cpu_self.map_or("n/a".to_string(), |c| format!("{c:.2}cores")),
        cpu_server.map_or("n/a".to_string(), |c| format!("{c:.2}cores")),
    );
    if let Some(e) = first_error {
        println!("first error: {e}");
    }
    Ok(())
}

async fn seed(args: &BenchArgs, clients: &[crate::client::Client]) -> Result<(), String> {
    let started = Instant::now();
    let workers = args.concurrency.max(1);
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let mut client = clients[worker % clients.len()].clone();
        let count = args.count / workers + usize::from(worker < args.count % workers);
        tasks.push(tokio::spawn(async move {
            let mut rng =
                Rng(0xDEAD_BEEF ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for i in 0..count {
                let job = sample_job(&mut rng, i, None);
                client
                    .create_job(pb::CreateJobRequest { job: Some(job) })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {} jobs in {secs:.1}s ({:.0}/s)",
        args.count,
        args.count as f64 / secs
    );
    Ok(())
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// What a bench watcher watches: one job (WatchJob) or a filter (WatchJobs).
#[derive(Clone)]
enum Watched {
    Job(String),
    Jobs(String),
}

/// Opens `count` watch streams on `watched` over `connections` connections; each stream's
/// events go to `on_event` in a task of its own. Returns when every stream has sent SYNCED.
async fn open_watchers(
    server: &str,
    watched: &Watched,
    count: usize,
    connections: usize,
    on_event: impl Fn(usize, pb::JobEvent) + Send + Sync + Clone + 'static,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let clients = connect(server, connections.clamp(1, count.max(1))).await?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(count.max(1));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let mut client = clients[i % clients.len()].clone();
        let (watched, ready, on_event) = (watched.clone(), ready_tx.clone(), on_event.clone());
        tasks.push(tokio::spawn(async move {
            let stream = match watched {
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
            };
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    let _ = ready.send(Err(e.to_string())).await;
                    return;
                }
            };
            while let Ok(Some(event)) = stream.message().await {
                if event.r#type == pb::JobEventType::Synced as i32 {
                    let _ = ready.send(Ok(())).await;
                }
                on_event(i, event);
            }
        }));
    }
    for _ in 0..count {
        match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(format!("opening a watch stream failed: {e}")),
            _ => return Err("watch streams did not all start within 120 s".into()),
        }
    }
    Ok(tasks)
}

async fn attach_idle_watchers(
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
    let tasks = open_watchers(&args.server, &idle, args.idle_watchers, 100, |_, _| {}).await?;
    let after = args.server_pid.and_then(rss_kib);
    println!(
        "attached {} idle watchers{}",
        args.idle_watchers,
        match (before, after) {
            (Some(b), Some(a)) => format!(" (server memory +{} MiB)", a.saturating_sub(b) / 1024),
            _ => String::new(),
        }
    );
    Ok(tasks)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Watch fan-out: delivery latency from the update's send time (carried in the job's message)
/// to its arrival on each stream.
async fn fanout(args: &BenchArgs, clients: &[crate::client::Client]) -> Result<(), String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let write_clients = match &args.write_server {
        Some(url) => connect(url, args.connections.clamp(1, 8)).await?,
        None => clients.to_vec(),
    };
    let clients = &write_clients[..];
    let mut client = clients[0].clone();
    // The jobs written to; with a spread, they share a cluster id of this run's own.
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
    let latencies: Arc<Mutex<Vec<u32>>> = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let before = args.server_pid.and_then(rss_kib);
    let on_event = {
        let (latencies, delivered, measuring) =
            (latencies.clone(), delivered.clone(), measuring.clone());
        move |_: usize, event: pb::JobEvent| {
            if event.r#type != pb::JobEventType::Updated as i32
                || !measuring.load(Ordering::Relaxed)
            {
                return;
            }
            let sent = event
                .job
                .and_then(|j| j.message)
                .and_then(|m| m.strip_prefix("t=").and_then(|t| t.parse::<i64>().ok()));
            if let Some(sent) = sent {
                delivered.fetch_add(1, Ordering::Relaxed);
                let micros = (now_micros() - sent).clamp(0, u32::MAX as i64) as u32;
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(micros);
            }
        }
    };
    let opened = Instant::now();
    let tasks = open_watchers(
        &args.server,
        &watched,
        args.watchers,
        args.connections,
        on_event,
    )
    .await?;
    let after = args.server_pid.and_then(rss_kib);
    println!(
        "{} watchers synced in {:.1}s",
        args.watchers,
        opened.elapsed().as_secs_f64()
    );

    measuring.store(true, Ordering::Relaxed);
    let acked = Arc::new(AtomicU64::new(0));
    let cpu_server = cpu_seconds(args.server_pid);
    let cpu_self = cpu_seconds(None);
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
    let writes = acked.load(Ordering::Relaxed);
    let expected = writes * args.watchers as u64;
    // Let deliveries drain, up to 10 s.
    let drain = Instant::now();
    while delivered.load(Ordering::Relaxed) < expected && drain.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_server = cpu_seconds(args.server_pid)
        .zip(cpu_server)
        .map(|(b, a)| (b - a) / elapsed);
    let cpu_self = cpu_seconds(None)
        .zip(cpu_self)
        .map(|(b, a)| (b - a) / elapsed);
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    latencies.sort_unstable();
    println!(
        "op=Fanout watchers={} connections={} writes={writes} ({:.0}/s, asked {}/s) delivered={}/{expected} p50={:.1}ms p99={:.1}ms max={:.1}ms memory_per_watcher={} server_cpu={} bench_cpu={}",
        args.watchers,
        args.connections,
        writes as f64 / elapsed,
        args.rate,
        delivered.load(Ordering::Relaxed),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        match (before, after) {
            (Some(b), Some(a)) => format!(
                "{:.1}KiB",
                a.saturating_sub(b) as f64 / args.watchers.max(1) as f64
            ),
            _ => "n/a".into(),
        },
        cpu_server.map_or("n/a".to_string(), |c| format!("{c:.2}cores")),
        cpu_self.map_or("n/a".to_string(), |c| format!("{c:.2}cores")),
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
