//! Prometheus metrics, served at `GET /metrics`: calls by method and status code, a latency
//! histogram per method, and jobs by state (read from the store at scrape time). Recording is a
//! few relaxed atomic adds, so it costs nothing noticeable on the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::JobState;

/// The RPCs of `jobtrack.v1.JobService`, in the order of their metric slots.
pub const METHODS: [&str; 12] = [
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
    "GetCaller",
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

/// Routes of the REST gateway, as metric labels; "other" is every request outside them.
pub const HTTP_ROUTES: [&str; 7] = [
    "jobs",
    "job",
    "cancel",
    "kubepvcprogress",
    "kubepvcprogress_item",
    "api_docs",
    "other",
];

/// HTTP status codes with a slot of their own; the last slot counts every other code.
const HTTP_STATUSES: [u16; 16] = [
    200, 204, 304, 400, 401, 403, 404, 405, 409, 412, 413, 428, 429, 500, 503, 0,
];

/// The metric label of a matched REST route pattern.
pub fn http_route(pattern: &str) -> &'static str {
    let pattern = pattern.trim_end_matches('/');
    match pattern {
        "/api/v1/jobs" => "jobs",
        "/api/v1/jobs/{id}" => "job",
        "/api/v1/jobs/{id}/action/cancel" => "cancel",
        "/api/v1/kubepvcprogress" => "kubepvcprogress",
        "/api/v1/kubepvcprogress/{id}" => "kubepvcprogress_item",
        "/api-docs" => "api_docs",
        _ => "other",
    }
}

#[derive(Default)]
pub struct Metrics {
    methods: [MethodStats; METHODS.len()],
    routes: [MethodStats; HTTP_ROUTES.len()],
}

impl Metrics {
    /// Records one finished call of `METHODS[method]` with gRPC status `code`.
    pub fn record(&self, method: usize, code: i32, elapsed: Duration) {
        if let Some(m) = self.methods.get(method) {
            m.record(code as usize, elapsed);
        }
    }

    /// Records one finished REST request on `route` (one of [`HTTP_ROUTES`]).
    pub fn record_http(&self, route: &str, status: u16, elapsed: Duration) {
        let route = HTTP_ROUTES
            .iter()
            .position(|r| *r == route)
            .unwrap_or(HTTP_ROUTES.len() - 1);
        let slot = HTTP_STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(HTTP_STATUSES.len() - 1);
        self.routes[route].record(slot, elapsed);
    }
}

impl MethodStats {
    fn record(&self, slot: usize, elapsed: Duration) {
        let m = self;
        if let Some(c) = m.calls.get(slot) {
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
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self, jobs_by_state: &[(JobState, i64)]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let http_statuses: Vec<String> = HTTP_STATUSES
            .iter()
            .map(|s| {
                if *s == 0 {
                    "other".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect();
        let http_statuses: Vec<&str> = http_statuses.iter().map(String::as_str).collect();
        render_family(
            &mut out,
            Family {
                calls: "jobtrack_grpc_calls_total",
                calls_help: "Finished JobService calls by method and status code.",
                duration: "jobtrack_grpc_call_duration_seconds",
                duration_help: "Time to answer a JobService call.",
                label: "method",
                code_label: "code",
            },
            &METHODS,
            &self.methods,
            &CODES,
        );
        render_family(
            &mut out,
            Family {
                calls: "jobtrack_http_requests_total",
                calls_help: "Finished REST gateway requests by route and HTTP status.",
                duration: "jobtrack_http_request_duration_seconds",
                duration_help: "Time to answer a REST gateway request.",
                label: "route",
                code_label: "status",
            },
            &HTTP_ROUTES,
            &self.routes,
            &http_statuses,
        );
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

/// Names of one family of call metrics (a counter by outcome and a latency histogram).
struct Family {
    calls: &'static str,
    calls_help: &'static str,
    duration: &'static str,
    duration_help: &'static str,
    label: &'static str,
    code_label: &'static str,
}

fn render_family(
    out: &mut String,
    family: Family,
    names: &[&str],
    stats: &[MethodStats],
    codes: &[&str],
) {
    let Family {
        calls,
        calls_help,
        duration,
        duration_help,
        label,
        code_label,
    } = family;
    let _ = writeln!(out, "# HELP {calls} {calls_help}");
    let _ = writeln!(out, "# TYPE {calls} counter");
    for (name, m) in names.iter().zip(stats) {
        for (code, count) in codes.iter().zip(&m.calls) {
            let n = count.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "{calls}{{{label}=\"{name}\",{code_label}=\"{code}\"}} {n}"
                );
            }
        }
    }
    let _ = writeln!(out, "# HELP {duration} {duration_help}");
    let _ = writeln!(out, "# TYPE {duration} histogram");
    for (name, m) in names.iter().zip(stats) {
        let count = m.count.load(Ordering::Relaxed);
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&m.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{duration}_bucket{{{label}=\"{name}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{duration}_bucket{{{label}=\"{name}\",le=\"+Inf\"}} {count}"
        );
        let sum = m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{duration}_sum{{{label}=\"{name}\"}} {sum}");
        let _ = writeln!(out, "{duration}_count{{{label}=\"{name}\"}} {count}");
    }
}
