//! `/metrics`: an exposition the Prometheus project's own OpenMetrics parser accepts, with the
//! names dashboards use and what an operator looks at first, and a 503 (never a page of zeros)
//! while the database cannot be read.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::helpers::*;

/// The raw answer to `GET path` over HTTP/1.1: status line, headers and body.
async fn http_get(app: &TestApp, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_calls_by_method_and_code_and_jobs_by_state() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    app.get(&created.id).await;
    assert_eq!(
        app.get_status("5f431ef6a7690b60975f6664").await,
        Code::NotFound
    );
    let page = http_get(&app, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for line in [
        "jobtrack_grpc_calls_total{method=\"CreateJob\",code=\"OK\"} 1",
        "jobtrack_grpc_calls_total{method=\"GetJob\",code=\"OK\"} 1",
        "jobtrack_grpc_calls_total{method=\"GetJob\",code=\"NOT_FOUND\"} 1",
        "jobtrack_grpc_call_duration_seconds_count{method=\"GetJob\"} 2",
        "jobtrack_jobs{state=\"RUNNING\"} 1",
        "jobtrack_jobs{state=\"PENDING\"} 0",
    ] {
        assert!(page.contains(line), "missing {line:?} in\n{page}");
    }
    app.stop().await;
}

/// The families of an exposition as `scripts/check_metrics.py` parses them; panics with the
/// parser's message if it refuses the page.
fn parse(exposition: &str) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_metrics.py");
    let mut child = Command::new(crate::rest_openapi::python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write the page");
    let out = child.wait_with_output().expect("the parser ends");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the page: {}\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the parser")
}

/// The value of the sample `name` with exactly `labels` in `families`.
fn sample(families: &Value, family: &str, name: &str, labels: Value) -> f64 {
    let samples = families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family} in {families}"));
    samples
        .iter()
        .find(|s| s[0] == name && s[1] == labels)
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {name}{labels} in {family}: {samples:?}"))
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_openmetrics_and_show_streams_head_and_write_batches() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut watch = app
        .client()
        .watch_job(jobtrack::pb::WatchJobRequest {
            id: created.id.clone(),
            resume_token: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let synced = jobtrack::pb::JobEventType::Synced as i32;
    loop {
        let event = within("an event", watch.message())
            .await
            .expect("the stream")
            .expect("an event");
        if event.r#type == synced {
            break;
        }
    }
    app.update(
        &created.id,
        jobtrack::pb::Job {
            message: Some("m".into()),
            ..Default::default()
        },
        &["message"],
        &[],
    )
    .await
    .expect("update");

    let response = http_get(&app, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{response}"
    );
    let families = parse(body(&response));
    for (family, kind) in [
        ("jobtrack_grpc_calls", "counter"),
        ("jobtrack_grpc_call_duration_seconds", "histogram"),
        ("jobtrack_jobs", "gauge"),
        ("jobtrack_watch_streams", "gauge"),
        ("jobtrack_watchers_lagging", "gauge"),
        ("jobtrack_watch_lag_changes", "gauge"),
        ("jobtrack_change_log_head", "gauge"),
        ("jobtrack_write_batch_size", "histogram"),
        ("jobtrack_write_commit_seconds", "histogram"),
    ] {
        assert_eq!(families[family]["type"], kind, "{family}");
    }
    let stream = |transport: &str| {
        sample(
            &families,
            "jobtrack_watch_streams",
            "jobtrack_watch_streams",
            serde_json::json!({"transport": transport}),
        )
    };
    assert_eq!(
        (stream("gRPC"), stream("gRPC-web"), stream("REST")),
        (1.0, 0.0, 0.0)
    );
    // One create and one update: two changes in the log. The gauge is the newest change this
    // replica has *published*; on Postgres its follower publishes a moment after the write is
    // acknowledged, so the gauge is waited for (with a deadline), not read once.
    eventually("jobtrack_change_log_head to reach 2", || async {
        let families = parse(body(&http_get(&app, "/metrics").await));
        let head = sample(
            &families,
            "jobtrack_change_log_head",
            "jobtrack_change_log_head",
            serde_json::json!({}),
        );
        assert!(head <= 2.0, "head {head} beyond the two changes made");
        (head == 2.0).then_some(())
    })
    .await;
    let batches = sample(
        &families,
        "jobtrack_write_batch_size",
        "jobtrack_write_batch_size_sum",
        serde_json::json!({}),
    );
    assert_eq!(
        batches, 2.0,
        "two writes, each committed in a batch of its own"
    );
    let lagging = sample(
        &families,
        "jobtrack_watchers_lagging",
        "jobtrack_watchers_lagging",
        serde_json::json!({}),
    );
    assert_eq!(lagging, 0.0);
    drop(watch);
    app.stop().await;
}

/// Runs `sql` on the database a test server uses (SQLite file or Postgres URL).
async fn execute(database: &str, sql: &str) {
    use sqlx::Connection;
    if database.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(database)
            .await
            .expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .expect(sql);
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{database}"))
            .await
            .expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .expect(sql);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_answer_503_while_the_jobs_cannot_be_read_and_recover_after() {
    let app = spawn_app().await;
    app.create(job(JobType::K8sCopy, JobState::Running)).await;
    execute(&app.database, "ALTER TABLE jobs RENAME TO jobs_away").await;
    let response = http_get(&app, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        body(&response).starts_with("the database cannot be read"),
        "{response}"
    );
    assert!(
        !response.contains("jobtrack_jobs{"),
        "no page of zeros: {response}"
    );
    execute(&app.database, "ALTER TABLE jobs_away RENAME TO jobs").await;
    let response = http_get(&app, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let families = parse(body(&response));
    let running = sample(
        &families,
        "jobtrack_jobs",
        "jobtrack_jobs",
        serde_json::json!({"state": "RUNNING"}),
    );
    assert_eq!(running, 1.0);
    app.stop().await;
}
