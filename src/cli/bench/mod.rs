//! `jobtrack bench`: a load generator against a running server, over real gRPC connections.
//!
//! It opens `--connections` HTTP/2 connections, runs `--concurrency` callers spread over them for
//! `--duration` seconds (after a warm-up), and prints calls/s, latency percentiles, errors, and the
//! CPU it used itself (and the server's, given `--server-pid`), so a figure can be read against
//! what the load generator cost on the same machine.

mod calls;
mod fanout;
mod resync;
mod sse;
mod sweep;
mod webhooks;

use clap::{Args, ValueEnum};

use super::client::{Client, channel, client};
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
    /// A job's whole life per call: CreateJob (RUNNING), ReportPvcProgress, UpdateJob to
    /// COMPLETED (three durable writes): with a short --retain-finished, a soak of retention.
    Cycle,
    /// ListJobs with --where and --sort (first page).
    List,
    /// Create --count jobs with a realistic mix of states, types and clusters, then stop.
    Seed,
    /// Watch fan-out: --watchers WatchJob streams on one job over --connections connections,
    /// --rate updates/s of that job; delivery latency, delivered/expected, server memory per
    /// watcher.
    Fanout,
    /// A WatchJobs client (--where) that drops its stream every --drop-every-ms and resumes
    /// from its last token: time to SYNCED, streams, jobs the snapshot repeated. Gives up after
    /// --duration seconds.
    Resync,
    /// The upkeep sweeps' cost on a large database (--database; no server): loads --count
    /// finished and --jobs RUNNING jobs if it has fewer, times --rounds sweeps with nothing due,
    /// and prints each query's plan.
    Sweep,
    /// Webhook delivery under open-loop writes (`--subscriptions`, `--rate`).
    Webhooks,
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
    /// --op fanout: updates per second of the watched job; --op webhooks: UpdateJob per second
    /// (0: closed loop, --concurrency callers as fast as the server answers).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Before measuring any op, attach this many idle WatchJob streams (on a job nobody changes),
    /// to compare writer throughput with and without watchers.
    #[arg(long, default_value_t = 0)]
    pub idle_watchers: usize,
    /// --op fanout: also open this many streams on the watched jobs that read up to SYNCED and
    /// then nothing more; the line reports the server's memory growth during the writes (what a
    /// watcher that never reads costs). With get, update or report: this many WatchJobs streams
    /// over every job that read up to SYNCED and nothing more, beside the calls.
    #[arg(long, default_value_t = 0)]
    pub stalled_watchers: usize,
    /// With get, update or report: this many WatchJob streams, one per job of the pool in turn,
    /// each on a connection of its own and reading every event, beside the calls (slow
    /// consumers beside fast ones: compare with a run without watchers).
    #[arg(long, default_value_t = 0)]
    pub reading_watchers: usize,
    /// --op resync: milliseconds each stream lives before the client drops it.
    #[arg(long, default_value_t = 2000)]
    pub drop_every_ms: u64,
    /// --op resync: microseconds the client spends on each event (a client in Python, or one
    /// that stores what it reads, takes ~150).
    #[arg(long, default_value_t = 0)]
    pub client_us_per_event: u64,
    /// --op fanout: the watchers are Server-Sent Events streams (HTTP/1.1, one connection each)
    /// instead of gRPC.
    #[arg(long)]
    pub sse: bool,
    /// --op sweep: the database to measure (a SQLite file or a postgres:// URL), opened
    /// directly: no server.
    #[arg(long)]
    pub database: Option<String>,
    /// --op sweep: sweeps to time (0: only load).
    #[arg(long, default_value_t = 200)]
    pub rounds: usize,
    /// --op sweep: the loaded finished jobs ended up to this many days ago (0: over the last
    /// 29 days, none due).
    #[arg(long, default_value_t = 0)]
    pub finished_age_days: u32,
    /// --op webhooks: subscriptions to create; 0 for the baseline.
    #[arg(long, default_value_t = 100)]
    pub subscriptions: usize,
    /// --op webhooks: what each subscription wants: `all` (every change of every job) or `job`
    /// (every change of its own job: the pool is one job per subscription, so the receiver
    /// gets each change once).
    #[arg(long, default_value = "all", value_parser = ["all", "job"])]
    pub scope: String,
}

/// A small xorshift generator: the load needs variety, not cryptography.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
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

pub(super) fn sample_job(rng: &mut Rng, i: usize, state: Option<pb::JobState>) -> pb::Job {
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

/// Creates `n` RUNNING jobs (`kubecluster-0` …), so that updates and reports are legal;
/// answers their ids.
pub(super) async fn running_jobs(client: &Client, n: usize) -> Result<Vec<String>, String> {
    let mut client = client.clone();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut pool = Vec::with_capacity(n);
    for i in 0..n {
        let job = sample_job(&mut rng, i, Some(pb::JobState::Running));
        let created = client
            .create_job(pb::CreateJobRequest { job: Some(job) })
            .await
            .map_err(|e| format!("creating the job pool failed: {e}"))?;
        pool.push(created.into_inner().id);
    }
    Ok(pool)
}

/// `n` clients of `server`, each on its own HTTP/2 connection.
pub(super) async fn connect(server: &str, n: usize) -> Result<Vec<Client>, String> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let channel = channel(server).await?;
        clients.push(client(channel).max_decoding_message_size(64 * 1024 * 1024));
    }
    Ok(clients)
}

/// CPU seconds (user + system) a process has used so far, from /proc.
pub(super) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
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

pub(super) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Resident memory of a process, in KiB.
pub(super) fn rss_kib(pid: u32) -> Option<u64> {
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

pub(super) async fn run(args: BenchArgs) -> Result<(), String> {
    if args.op == BenchOp::Sweep {
        return sweep::run(&args).await;
    }
    let clients = connect(&args.server, args.connections).await?;
    let _idle = if args.idle_watchers > 0 {
        Some(fanout::attach_idle_watchers(&args).await?)
    } else {
        None
    };
    match args.op {
        BenchOp::Seed => calls::seed(&args, &clients).await,
        BenchOp::Fanout => fanout::run(&args, &clients).await,
        BenchOp::Resync => resync::run(&args, &clients).await,
        BenchOp::Webhooks => webhooks::run(&args, &clients).await,
        _ => calls::run(&args, &clients).await,
    }
}

/// CPU cores a process used on average between two readings of [`cpu_seconds`].
pub(super) fn cores(before: Option<f64>, after: Option<f64>, elapsed: f64) -> String {
    after
        .zip(before)
        .map_or("n/a".to_string(), |(after, before)| {
            format!("{:.2}cores", (after - before) / elapsed)
        })
}

/// Waits until `count` streams have said they are ready (each sends once on `ready`), for at most
/// 120 s; `what` names them in the error.
pub(super) async fn all_ready(
    ready: &mut tokio::sync::mpsc::Receiver<Result<(), String>>,
    count: usize,
    what: &str,
) -> Result<(), String> {
    for _ in 0..count {
        match tokio::time::timeout(std::time::Duration::from_secs(120), ready.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(format!("opening a {what} failed: {e}")),
            _ => return Err(format!("{what}s did not all start within 120 s")),
        }
    }
    Ok(())
}
