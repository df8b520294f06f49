//! `jobtrack serve`: the server's flags (each with a `JOBTRACK_*` environment fallback, shown by
//! `--help`), turned into a [`Config`], and the server run until SIGINT or SIGTERM.

use std::time::Duration;

use clap::Args;

use crate::auth::Limits;
use crate::config::{Config, ConnectionLimits, database_url, parse_duration, redacted};
use crate::domain::Upkeep;
use crate::server::{Server, shutdown_signal};
use crate::webhook::WebhookConfig;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "JOBTRACK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Database: `postgres://user:password@host:5432/db` (replicas sharing it form one fleet),
    /// a SQLite file path, `sqlite:PATH`, or `sqlite::memory:`. Falls back to DATABASE_URL, then
    /// to the SQLite file `jobtrack.db` in the working directory.
    #[arg(long, env = "JOBTRACK_DATABASE")]
    pub database: Option<String>,

    /// Largest page a list returns; larger page sizes are clamped to it.
    #[arg(long, env = "JOBTRACK_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: usize,

    /// Seconds to let in-flight calls finish after SIGINT/SIGTERM before closing connections.
    #[arg(long, env = "JOBTRACK_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Seconds of silence after which a watch stream gets a HEARTBEAT with its resume token.
    #[arg(long, env = "JOBTRACK_HEARTBEAT_SECS", default_value_t = 15.0)]
    pub heartbeat_secs: f64,

    /// Hours of change history kept for resuming watchers; an older resume token gets a fresh
    /// snapshot.
    #[arg(long, env = "JOBTRACK_HISTORY_HOURS", default_value_t = 24.0)]
    pub history_hours: f64,

    /// Most changes kept in the history, whatever their age.
    #[arg(
        long,
        env = "JOBTRACK_HISTORY_MAX_CHANGES",
        default_value_t = 1_000_000
    )]
    pub history_max_changes: u64,

    /// Jobs read per page of a WatchJobs snapshot: a watcher holds at most about this many in
    /// memory while it starts, whatever the number of matching jobs.
    #[arg(long, env = "JOBTRACK_WATCH_SNAPSHOT_PAGE", default_value_t = 1000)]
    pub watch_snapshot_page: usize,

    /// Origins whose pages may call this server from a browser (gRPC-web, REST), comma-separated;
    /// `*` allows any. Default: none, so only pages served by this server itself (same origin).
    #[arg(long, env = "JOBTRACK_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,

    /// Serve without API keys on a non-loopback address (and ignore keys that exist). Without
    /// it, such a server refuses to start until a key exists (`jobtrack keys create`).
    #[arg(long, env = "JOBTRACK_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// TLS certificate chain (PEM) for the one port: gRPC, gRPC-web, REST and the dashboard.
    #[arg(long, env = "JOBTRACK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<String>,

    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, env = "JOBTRACK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<String>,

    /// Calls per second one API key may make on average (then RESOURCE_EXHAUSTED / 429).
    #[arg(long, env = "JOBTRACK_KEY_RATE", default_value_t = 1000.0)]
    pub key_rate: f64,

    /// Calls one API key may make in a burst.
    #[arg(long, env = "JOBTRACK_KEY_BURST", default_value_t = 2000.0)]
    pub key_burst: f64,

    /// Watch streams one API key may hold open at once.
    #[arg(long, env = "JOBTRACK_KEY_MAX_STREAMS", default_value_t = 1000)]
    pub key_max_streams: usize,
    /// Connections open at once; one more is closed as soon as it is accepted.
    #[arg(long, env = "JOBTRACK_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// A connection that sends nothing for this many seconds after it opens is closed.
    #[arg(long, env = "JOBTRACK_FIRST_BYTE_TIMEOUT_SECS", default_value_t = 10.0)]
    pub first_byte_timeout_secs: f64,

    /// Finished jobs (and their PVC records) are deleted this long after their end_time, unless
    /// a job sets its own ttl_seconds_after_finished: `30d`, `12h`, `90m`, `45s`; `0` keeps
    /// everything.
    #[arg(long, env = "JOBTRACK_RETAIN_FINISHED", default_value = "30d", value_parser = parse_duration)]
    pub retain_finished: Duration,
    /// A PENDING or RUNNING job whose executor writes nothing for this long is marked stalled
    /// (`stalled_since`); `0`: never. A job's stall_after_seconds overrides it.
    #[arg(long, env = "JOBTRACK_STALL_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub stall_after: Duration,
    /// A stalled job whose executor stays silent this long (since its last write) is FAILED
    /// with "executor stopped reporting"; `0`: never. A job's abandon_after_seconds overrides it.
    #[arg(long, env = "JOBTRACK_ABANDON_AFTER", default_value = "1h", value_parser = parse_duration)]
    pub abandon_after: Duration,
    /// How often the server looks for jobs due for retention, stall or abandon.
    #[arg(long, env = "JOBTRACK_SWEEP_EVERY", default_value = "1s", value_parser = parse_duration)]
    pub sweep_every: Duration,

    /// Allow webhook targets on loopback, private and link-local addresses (refused by default:
    /// a webhook is a classic way into an internal network).
    #[arg(long, env = "JOBTRACK_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// How long a webhook delivery is retried before its subscription is marked FAILING (it
    /// keeps its cursor and is tried again every hour).
    #[arg(long, env = "JOBTRACK_WEBHOOK_RETRY_FOR", default_value = "24h", value_parser = parse_duration)]
    pub webhook_retry_for: Duration,
    /// The longest one webhook request may take, connecting included.
    #[arg(long, env = "JOBTRACK_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
    /// How long a replica's hold on a subscription lasts unrenewed: when a replica dies, another
    /// takes its subscriptions over after at most this long.
    #[arg(long, env = "JOBTRACK_WEBHOOK_LEASE", default_value = "10s", value_parser = parse_duration)]
    pub webhook_lease: Duration,
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        let database = database_url(self.database.clone());
        Config {
            listen: self.listen.clone(),
            database,
            max_page_size: self.max_page_size.max(1),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            heartbeat: seconds(self.heartbeat_secs, 15.0),
            history_retention: seconds(self.history_hours * 3600.0, 24.0 * 3600.0),
            history_max_changes: self.history_max_changes.max(1),
            watch_snapshot_page: self.watch_snapshot_page.max(1),
            history_prune_interval: Duration::from_secs(60),
            health_check_interval: Duration::from_secs(2),
            cors_origins: self
                .cors_origin
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            insecure_no_auth: self.insecure_no_auth,
            key_limits: Limits {
                rate: if self.key_rate > 0.0 {
                    self.key_rate
                } else {
                    1000.0
                },
                burst: self.key_burst.max(1.0),
                max_streams: self.key_max_streams.max(1),
            },
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            connections: ConnectionLimits {
                max_open: self.max_connections.max(1),
                first_byte_timeout: seconds(self.first_byte_timeout_secs, 10.0),
            },
            upkeep: Upkeep {
                retain_finished: non_zero(self.retain_finished),
                stall_after: non_zero(self.stall_after),
                abandon_after: non_zero(self.abandon_after),
            },
            sweep_interval: self.sweep_every.max(Duration::from_millis(10)),
            webhooks: WebhookConfig {
                allow_private: self.webhook_allow_private,
                retry_for: self.webhook_retry_for,
                timeout: self.webhook_timeout.max(Duration::from_millis(10)),
                lease: self.webhook_lease.max(Duration::from_millis(300)),
            },
        }
    }
}

/// Starts the server and serves until a shutdown signal.
pub(super) async fn run(args: ServeArgs) -> Result<(), String> {
    let config = args.config();
    tracing::info!(database = %redacted(&config.database), "opening the store");
    let server = Server::build(config).await.map_err(|e| e.to_string())?;
    server
        .run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// `0` is "never".
fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// A positive duration from seconds given on the command line (`default` when not positive).
fn seconds(value: f64, default: f64) -> std::time::Duration {
    let value = if value.is_finite() && value > 0.0 {
        value
    } else {
        default
    };
    Duration::from_secs_f64(value.min(1e9))
}
