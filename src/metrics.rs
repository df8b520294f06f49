//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format
//! (`prometheus-client`, the Prometheus project's Rust client):
//!
//! - calls by RPC and status code, and their latency (`jobtrack_grpc_calls_total`,
//!   `jobtrack_grpc_call_duration_seconds`), REST requests by route and HTTP status
//!   (`jobtrack_http_requests_total`, `jobtrack_http_request_duration_seconds`);
//! - jobs by state (`jobtrack_jobs`), read from the store at scrape time;
//! - what an operator looks at first: open watch streams by transport
//!   (`jobtrack_watch_streams`), watchers catching up from the log and how far behind the newest
//!   is (`jobtrack_watchers_lagging`, `jobtrack_watch_lag_changes`), the change log's head
//!   (`jobtrack_change_log_head`), and the writes per committed batch and the time from a
//!   batch's start to its commit (`jobtrack_write_batch_size`, `jobtrack_write_commit_seconds`);
//! - what the upkeep sweeps did on this replica: finished jobs deleted by retention
//!   (`jobtrack_jobs_purged_total`), jobs marked stalled (`jobtrack_jobs_stalled_total`) and
//!   stalled jobs FAILED (`jobtrack_jobs_abandoned_total`).
//!
//! Recording is a lock-free atomic add behind a read lock of the label set's map: nothing
//! measurable on the hot path.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::JobState;
use crate::interface::{Route, Rpc, Transport};

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

macro_rules! label_value {
    ($type:ty) => {
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.name(), encoder)
            }
        }
    };
}
label_value!(Rpc);
label_value!(Route);
label_value!(Transport);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: Rpc,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: Rpc,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// What the store's writers measure: writes per committed batch, and the time from a batch's
/// start (its first statement) to its commit on stable storage.
#[derive(Clone, Debug)]
pub struct WriteMetrics {
    batch_size: Histogram,
    commit_seconds: Histogram,
}

impl Default for WriteMetrics {
    fn default() -> Self {
        WriteMetrics {
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            commit_seconds: latency_histogram(),
        }
    }
}

impl WriteMetrics {
    /// One committed batch of `writes` operations that took `elapsed`.
    pub fn committed(&self, writes: usize, elapsed: Duration) {
        self.batch_size.observe(writes as f64);
        self.commit_seconds.observe(elapsed.as_secs_f64());
    }
}

/// The server's metrics, registered once.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Histograms<MethodLabel>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabel>,
    jobs: Family<StateLabel, Gauge>,
    watch_streams: Family<TransportLabel, Gauge>,
    lagging: Gauge,
    lag: Gauge,
    head: Gauge,
    purged: Counter,
    stalled: Counter,
    abandoned: Counter,
}

/// What the server reads at scrape time.
pub struct Scrape<'a> {
    pub jobs_by_state: &'a [(JobState, i64)],
    /// Watchers catching up from the log, and how many changes the furthest is behind.
    pub lagging: (usize, u64),
    pub head: u64,
}

impl Metrics {
    /// The metrics of one server, including its store's writers'.
    pub fn new(writes: &WriteMetrics) -> Arc<Metrics> {
        let mut metrics = Metrics {
            registry: Registry::default(),
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(latency_histogram),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            jobs: Family::default(),
            watch_streams: Family::default(),
            lagging: Gauge::default(),
            lag: Gauge::default(),
            head: Gauge::default(),
            purged: Counter::default(),
            stalled: Counter::default(),
            abandoned: Counter::default(),
        };
        metrics.register(writes);
        Arc::new(metrics)
    }

    fn register(&mut self, writes: &WriteMetrics) {
        let r = &mut self.registry;
        r.register(
            "jobtrack_grpc_calls",
            "Finished gRPC calls by method and status code",
            self.calls.clone(),
        );
        r.register(
            "jobtrack_grpc_call_duration_seconds",
            "Time to answer a gRPC call",
            self.call_seconds.clone(),
        );
        r.register(
            "jobtrack_http_requests",
            "Finished REST gateway requests by route and HTTP status",
            self.requests.clone(),
        );
        r.register(
            "jobtrack_http_request_duration_seconds",
            "Time to answer a REST gateway request",
            self.request_seconds.clone(),
        );
        r.register(
            "jobtrack_jobs",
            "Jobs in the store by state",
            self.jobs.clone(),
        );
        r.register(
            "jobtrack_watch_streams",
            "Open watch streams by transport",
            self.watch_streams.clone(),
        );
        r.register(
            "jobtrack_watchers_lagging",
            "Watchers reading the change log to catch up",
            self.lagging.clone(),
        );
        r.register(
            "jobtrack_watch_lag_changes",
            "Changes between the head and the furthest-behind catching-up watcher",
            self.lag.clone(),
        );
        r.register(
            "jobtrack_change_log_head",
            "Position of the newest change this replica has published",
            self.head.clone(),
        );
        r.register(
            "jobtrack_write_batch_size",
            "Writes committed together in one transaction",
            writes.batch_size.clone(),
        );
        r.register(
            "jobtrack_write_commit_seconds",
            "Time from a write batch's first statement to its durable commit",
            writes.commit_seconds.clone(),
        );
        r.register(
            "jobtrack_jobs_purged",
            "Finished jobs deleted by retention (--retain-finished or their own TTL) by this replica",
            self.purged.clone(),
        );
        r.register(
            "jobtrack_jobs_stalled",
            "Jobs this replica marked stalled (no write from the executor for their stall-after)",
            self.stalled.clone(),
        );
        r.register(
            "jobtrack_jobs_abandoned",
            "Stalled jobs this replica FAILED (executor stopped reporting)",
            self.abandoned.clone(),
        );
    }

    /// One job swept by this replica.
    pub fn record_sweep(&self, sweep: crate::domain::Sweep) {
        use crate::domain::Sweep;
        match sweep {
            Sweep::Expire => self.purged.inc(),
            Sweep::Stall => self.stalled.inc(),
            Sweep::Abandon => self.abandoned.inc(),
        };
    }

    /// One finished gRPC call of `rpc` with status `code` (its name, e.g. `NOT_FOUND`).
    pub fn record_call(&self, rpc: Rpc, code: &'static str, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels { method: rpc, code })
            .inc();
        self.call_seconds
            .get_or_create(&MethodLabel { method: rpc })
            .observe(elapsed.as_secs_f64());
    }

    /// One finished REST request on `route`.
    pub fn record_request(&self, route: Route, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a watch stream opened over `transport` while the guard lives.
    pub fn open_stream(&self, transport: Transport) -> OpenStream {
        let gauge = self
            .watch_streams
            .get_or_create_owned(&TransportLabel { transport });
        gauge.inc();
        OpenStream(gauge)
    }

    /// The exposition, with the values read at scrape time.
    pub fn exposition(&self, scrape: Scrape<'_>) -> String {
        for &state in JobState::ALL {
            let n = scrape
                .jobs_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(n);
        }
        for transport in Transport::ALL {
            // Every transport shows, at zero until a stream opens.
            drop(
                self.watch_streams
                    .get_or_create(&TransportLabel { transport }),
            );
        }
        self.lagging.set(scrape.lagging.0 as i64);
        self.lag.set(scrape.lagging.1.min(i64::MAX as u64) as i64);
        self.head.set(scrape.head.min(i64::MAX as u64) as i64);
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One open watch stream, counted until dropped.
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
