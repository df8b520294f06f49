//! Traces: the real binary with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP receiver in
//! the test. A gRPC call and a REST request that send a W3C `traceparent` arrive as spans of
//! the caller's trace, with the application, store and group-commit spans as their children;
//! the call's log line names the trace; a webhook request carries the trace context of its
//! delivery's span.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use jobtrack::pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::Notify;
use tonic::metadata::MetadataValue;

use crate::helpers::*;
use crate::http::request;
use crate::webhooks::{Receiver, subscribe_at};

/// An OTLP/gRPC trace receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Waits for a span named `name` in trace `trace`; answers it with every span of the trace.
    async fn wait_for(&self, name: &str, trace: &[u8]) -> (Span, Vec<Span>) {
        within(&format!("span {name} of the caller's trace"), async {
            loop {
                let arrived = self.arrived.notified();
                {
                    let spans = self.spans.lock().unwrap();
                    let of_trace: Vec<Span> = spans
                        .iter()
                        .filter(|s| s.trace_id == trace)
                        .cloned()
                        .collect();
                    if let Some(span) = of_trace.iter().find(|s| s.name == name) {
                        return (span.clone(), of_trace);
                    }
                }
                arrived.await;
            }
        })
        .await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The span of `spans` named `name` whose parent is `parent`.
fn child<'a>(spans: &'a [Span], name: &str, parent: &Span) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name && s.parent_span_id == parent.span_id)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
            panic!("no {name} under {}: {names:?}", parent.name)
        })
}

fn start_traced(
    db: &str,
    endpoint: &str,
    log: Arc<Mutex<Vec<String>>>,
) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--webhook-allow-private",
            "--database",
            db,
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("local_addr=").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            log.lock().unwrap().push(line);
        }
    });
    let addr = rx.recv_timeout(WAIT).expect("the server logs its address");
    (child, addr.parse().expect("a socket address"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callers_trace_reaches_the_collector_with_the_store_and_the_group_commit_inside() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let serving = collector.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let db = test_db().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let (mut server, addr) = start_traced(&db.url, &endpoint, log.clone());

    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut call = tonic::Request::new(pb::CreateJobRequest {
        job: Some(job(JobType::K8sCopy, JobState::Running)),
    });
    let traceparent: MetadataValue<_> = format!("00-{trace}-{parent}-01").parse().expect("ascii");
    call.metadata_mut().insert("traceparent", traceparent);
    let created = connect(addr)
        .await
        .create_job(call)
        .await
        .expect("create")
        .into_inner();

    let (rpc, spans) = collector
        .wait_for("/jobtrack.v1.JobService/CreateJob", &unhex(trace))
        .await;
    assert_eq!(
        hex(&rpc.parent_span_id),
        parent,
        "the caller's span is the parent"
    );
    let app = child(&spans, "create_job", &rpc);
    let write = child(&spans, "store.write", app);
    let commit = child(&spans, "group_commit", write);
    assert!(commit.end_time_unix_nano >= commit.start_time_unix_nano);
    let logged = log.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("CreateJob") && l.contains(&format!("trace_id={trace}"))),
        "the call's log line names the trace: {logged:?}"
    );

    let rest_trace = "0af7651916cd43dd8448eb211c80319c";
    let rest_parent = "b7ad6b7169203331";
    let header = format!("00-{rest_trace}-{rest_parent}-01");
    let reply = request(
        addr,
        "GET",
        &format!("/api/v1/jobs/{}", created.id),
        &[("traceparent", &header)],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    let path = format!("/api/v1/jobs/{}", created.id);
    let (rest, spans) = collector.wait_for(&path, &unhex(rest_trace)).await;
    assert_eq!(hex(&rest.parent_span_id), rest_parent);
    child(&spans, "store.get_job", child(&spans, "get_job", &rest));

    // A webhook request carries its delivery span's trace context.
    let receiver = Receiver::start().await;
    subscribe_at(addr, &receiver.url(), "", pb::SubscriptionEvents::All).await;
    connect(addr)
        .await
        .create_job(pb::CreateJobRequest {
            job: Some(job(JobType::K8sCopy, JobState::Running)),
        })
        .await
        .expect("create");
    let got = receiver.wait_for(1, "a webhook request").await;
    let parts: Vec<&str> = got[0].traceparent.split('-').collect();
    assert_eq!(
        parts.len(),
        4,
        "a W3C traceparent: {:?}",
        got[0].traceparent
    );
    let (delivery, _) = collector
        .wait_for("webhook.deliver", &unhex(parts[1]))
        .await;
    assert_eq!(hex(&delivery.span_id), parts[2]);
    server.kill().expect("stop");
    let _ = server.wait();
}
