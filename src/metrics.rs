//! Prometheus metrics, served at `GET /metrics`: calls by method and status code, a latency
//! histogram per method, and jobs by state (read from the store at scrape time). Recording is a
//! few relaxed atomic adds, so it costs nothing noticeable on the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::JobState;

/// The RPCs of `jobtrack.v1.JobService`, in the order of their metric slots.
pub const METHODS: [&str; 11] = [
    "CreateJob",
    "GetJob",
    "ListJobs",
    "UpdateJob",
    "DeleteJob",
    "CancelJob",
    "WatchJob",
    "WatchJobs",
    "ReportPvcProgress",
    "GetPvcProgress",
    "ListPvcProgress",
];

/// gRPC status code names, indexed by code number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct MethodStats {
    calls: [AtomicU64; 17],
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    methods: [MethodStats; METHODS.len()],
}

impl Metrics {
    /// Records one finished call of `METHODS[method]` with gRPC status `code`.
    pub fn record(&self, method: usize, code: i32, elapsed: Duration) {
        let Some(m) = self.methods.get(method) else {
            return;
        };
        if let Some(c) = m.calls.get(code as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            m.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        m.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        m.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, jobs_by_state: &[(JobState, i64)]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP jobtrack_grpc_calls_total Finished JobService calls by method and status code.\n");
        out.push_str("# TYPE jobtrack_grpc_calls_total counter\n");
        for (name, m) in METHODS.iter().zip(&self.methods) {
            for (code, count) in CODES.iter().zip(&m.calls) {
                let n = count.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "jobtrack_grpc_calls_total{{method=\"{name}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        out.push_str(
            "# HELP jobtrack_grpc_call_duration_seconds Time to answer a JobService call.\n",
        );
        out.push_str("# TYPE jobtrack_grpc_call_duration_seconds histogram\n");
        for (name, m) in METHODS.iter().zip(&self.methods) {
            let count = m.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&m.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "jobtrack_grpc_call_duration_seconds_bucket{{method=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "jobtrack_grpc_call_duration_seconds_bucket{{method=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let sum = m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "jobtrack_grpc_call_duration_seconds_sum{{method=\"{name}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "jobtrack_grpc_call_duration_seconds_count{{method=\"{name}\"}} {count}"
            );
        }
        out.push_str("# HELP jobtrack_jobs Jobs in the store by state.\n");
        out.push_str("# TYPE jobtrack_jobs gauge\n");
        for &state in JobState::ALL {
            let n = jobs_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "jobtrack_jobs{{state=\"{}\"}} {n}", state.as_str());
        }
        out
    }
}
