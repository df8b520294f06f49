//! Logging and traces. Logs: structured `tracing` lines on stderr, filtered by `RUST_LOG`
//! (default `info`). Traces: OpenTelemetry, exported over OTLP/gRPC when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, nothing
//! otherwise. Every request gets one span ([`traced`]), child of the caller's W3C `traceparent`
//! (gRPC metadata and HTTP headers alike), with the trace id in its log lines; the application
//! methods, the store and the wait for the group commit are its children; webhook requests
//! carry the `traceparent` of their delivery's span ([`inject`]).

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The exporter's provider, kept to flush it at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

pub fn init() {
    // One filter for logs and traces alike (a per-layer EnvFilter beside the OpenTelemetry
    // layer lost log lines on Postgres, where sqlx's notices register callsites early).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn"));
    // Colour only on a terminal (and never with NO_COLOR): logs read by programs stay plain.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second call (tests start many servers in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otlp_layer())
        .with(logs)
        .try_init();
}

/// Whether the environment asks for traces to be exported.
fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// The OpenTelemetry layer, when the environment names an OTLP endpoint: the spans `RUST_LOG`
/// lets through (jobtrack's are `info`), batched to the exporter.
fn otlp_layer<S>() -> Option<impl Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if !otlp_configured() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("jobtrack: traces are not exported: {e}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("jobtrack")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("jobtrack");
    let _ = PROVIDER.set(provider);
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Exports the spans not yet sent (at exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// The middleware of every request (gRPC, gRPC-web, REST): one span, named by the path, whose
/// parent is the caller's `traceparent` when it sends one; the trace id is recorded in it, so
/// the request's log lines carry it.
pub async fn traced(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let span = tracing::info_span!(
        "request",
        otel.name = %request.uri().path(),
        otel.kind = "server",
        trace_id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return next.run(request).await;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    let remote = parent.span().span_context().clone();
    let _ = span.set_parent(parent);
    let trace_id = if remote.is_valid() {
        Some(remote.trace_id())
    } else {
        let own = span.context().span().span_context().clone();
        own.is_valid().then(|| own.trace_id())
    };
    if let Some(trace_id) = trace_id {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    next.run(request).instrument(span).await
}

struct Pairs<'a>(&'a mut Vec<(&'static str, String)>);

impl Injector for Pairs<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}

/// Adds `span`'s W3C trace context to `headers` (nothing when traces are off).
pub fn inject(span: &tracing::Span, headers: &mut Vec<(&'static str, String)>) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut Pairs(headers));
    }
}
