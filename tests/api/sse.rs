//! Watching over plain HTTP (Server-Sent Events): `GET /api/v1/jobs/<id>?watch=1` and
//! `GET /api/v1/jobs?watch=1&where=…`, read by a small streaming HTTP/1.1 client of our own,
//! by `curl -N`, and by Python's standard library.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use jobtrack::pb;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::http::{encode, get};

/// One event as a client reads it.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// An open event stream (HTTP/1.1, chunked), or the answer that refused it.
pub(crate) struct Sse {
    reader: BufReader<TcpStream>,
    buffer: String,
    /// The `retry:` hint, once read.
    pub retry: Option<u64>,
    ended: bool,
}

/// A refused watch: the status and the body (the REST envelope).
#[derive(Debug)]
pub(crate) struct Refused {
    pub status: u16,
    pub body: Value,
}

/// Opens `target` as an event stream with `headers`.
pub(crate) async fn open(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<(Vec<(String, String)>, Sse), Refused> {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut head =
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    within("the status line", reader.read_line(&mut line))
        .await
        .expect("read");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
    let mut response_headers = Vec::new();
    loop {
        line.clear();
        within("a header", reader.read_line(&mut line))
            .await
            .expect("read");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("a header line");
        response_headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        response_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if status != 200 {
        let length: usize = header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("a refusal has a content-length");
        let mut body = vec![0; length];
        within("the body", reader.read_exact(&mut body))
            .await
            .expect("read");
        let body = serde_json::from_slice(&body).expect("a JSON envelope");
        return Err(Refused { status, body });
    }
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
    let sse = Sse {
        reader,
        buffer: String::new(),
        retry: None,
        ended: false,
    };
    Ok((response_headers, sse))
}

/// Opens a stream that must open.
pub(crate) async fn watch(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Sse {
    match open(addr, target, headers).await {
        Ok((_, sse)) => sse,
        Err(refused) => panic!("{target}: refused {refused:?}"),
    }
}

impl Sse {
    /// The next event; `None` once the server has ended the stream.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        within("the next server-sent event", self.read_event()).await
    }

    /// The next event that is not a heartbeat.
    pub(crate) async fn next_change(&mut self) -> SseEvent {
        within(
            "the next server-sent change (heartbeats do not count)",
            async {
                loop {
                    let event = self.read_event().await.expect("the stream goes on");
                    if event.event != "heartbeat" {
                        return event;
                    }
                }
            },
        )
        .await
    }

    async fn read_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
                continue;
            }
            if self.ended || !self.read_chunk().await {
                self.ended = true;
                assert!(self.buffer.is_empty(), "a partial event: {:?}", self.buffer);
                return None;
            }
        }
    }

    /// Reads one chunk of the body into the buffer; `false` at its end.
    async fn read_chunk(&mut self) -> bool {
        let mut size = String::new();
        if self.reader.read_line(&mut size).await.expect("read") == 0 {
            return false;
        }
        let size = usize::from_str_radix(size.trim_end(), 16).expect("a chunk size");
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.expect("a chunk");
        assert!(chunk.ends_with(b"\r\n"), "a chunk ends with CRLF");
        chunk.truncate(size);
        self.buffer
            .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        size > 0
    }

    /// One block of `field: value` lines; `None` for a block without an event (the hint).
    fn parse(&mut self, block: &str) -> Option<SseEvent> {
        let (mut id, mut event, mut data) = (None, None, None);
        for line in block.lines().filter(|l| !l.is_empty()) {
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => id = Some(value.to_string()),
                "event" => event = Some(value.to_string()),
                "data" => {
                    assert!(data.is_none(), "one data line per event: {block:?}");
                    data = Some(serde_json::from_str(value).expect("data is one line of JSON"));
                }
                "retry" => self.retry = Some(value.parse().expect("a number of milliseconds")),
                other => panic!("unknown field {other:?} in {block:?}"),
            }
        }
        let event = event?;
        Some(SseEvent {
            id,
            event,
            data: data.expect("every event has data"),
        })
    }
}

fn job_target(id: &str) -> String {
    format!("/api/v1/jobs/{id}?watch=1")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_followed_as_server_sent_events_with_the_rest_json_until_it_ends() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut record = pvc(&created.id, "data", OpType::K8sCopy, PvcState::Active);
    record.stats = Some(stats(10, 1));
    let record = app.report(record).await.expect("report");
    let mut sse = watch(app.addr, &job_target(&created.id), &[]).await;

    let snapshot = sse.next_change().await;
    assert_eq!(sse.retry, Some(2000), "the retry: hint comes first");
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["type"], "SNAPSHOT");
    let rest_job = get(app.addr, &format!("/api/v1/jobs/{}", created.id))
        .await
        .json();
    assert_eq!(
        snapshot.data["job"], rest_job,
        "the REST item, field for field"
    );
    assert!(snapshot.data.get("pvc").is_none());
    let pvc_event = sse.next_change().await;
    assert_eq!(pvc_event.event, "pvc_updated");
    let rest_pvc = get(app.addr, &format!("/api/v1/kubepvcprogress/{}", record.id))
        .await
        .json();
    assert_eq!(pvc_event.data["pvc"], rest_pvc);
    let synced = sse.next_change().await;
    assert_eq!(
        (synced.event.as_str(), &synced.data),
        ("synced", &serde_json::json!({"type": "SYNCED"}))
    );
    assert!(synced.id.as_ref().is_some_and(|id| !id.is_empty()));

    app.update(
        &created.id,
        pb::Job {
            message: Some("half way".into()),
            ..Default::default()
        },
        &["message"],
        &["copying"],
    )
    .await
    .expect("update");
    let updated = sse.next_change().await;
    assert_eq!(updated.event, "updated");
    assert_eq!(updated.data["job"]["message"], "half way");
    app.set_state(&created.id, JobState::Completed)
        .await
        .expect("complete");
    let ended = sse.next_change().await;
    assert_eq!(ended.data["job"]["state"], "COMPLETED");
    assert!(
        sse.next().await.is_none(),
        "the stream ends after the terminal event"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watching_jobs_over_sse_filters_and_resumes_from_last_event_id_or_resume_token() {
    let app = spawn_app_with(|c| c.heartbeat = Duration::from_millis(300)).await;
    let running = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    app.create(job(JobType::K8sCopy, JobState::Pending)).await;
    let target = format!(
        "/api/v1/jobs?watch=1&where={}",
        encode(r#"{"state":"RUNNING"}"#)
    );
    let mut sse = watch(app.addr, &target, &[]).await;
    let snapshot = sse.next_change().await;
    assert_eq!(snapshot.data["job"]["_id"], running.id.as_str());
    assert_eq!(sse.next_change().await.event, "synced");
    // A heartbeat carries the current id.
    let beat = sse.next().await.expect("a heartbeat");
    assert_eq!(beat.event, "heartbeat");
    assert_eq!(beat.data, serde_json::json!({"type": "HEARTBEAT"}));
    let first = app.create(job(JobType::Restore, JobState::Running)).await;
    let created = sse.next_change().await;
    assert_eq!(created.event, "created");
    assert_eq!(created.data["job"]["_id"], first.id.as_str());
    let last_id = created.id.clone().expect("an id");
    drop(sse);

    let second = app.create(job(JobType::Restore, JobState::Running)).await;
    let resumed = |headers: Vec<(&'static str, String)>, target: String| {
        let (addr, second) = (app.addr, second.id.clone());
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let mut sse = watch(addr, &target, &headers).await;
            let mut seen = Vec::new();
            loop {
                let event = sse.next_change().await;
                seen.push(event.event.clone());
                if event.event == "synced" {
                    return seen;
                }
                assert_eq!(event.data["job"]["_id"], second.as_str());
            }
        }
    };
    // As an EventSource reconnects: the same URL and Last-Event-ID.
    assert_eq!(
        resumed(vec![("Last-Event-ID", last_id.clone())], target.clone()).await,
        ["created", "synced"]
    );
    // As a script resumes: the resume_token parameter.
    let with_token = format!("{target}&resume_token={}", encode(&last_id));
    assert_eq!(
        resumed(vec![], with_token.clone()).await,
        ["created", "synced"]
    );
    // Both: the header is the newer, so it wins.
    assert_eq!(
        resumed(
            vec![("Last-Event-ID", created.id.clone().expect("id"))],
            with_token
        )
        .await,
        ["created", "synced"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_watch_gets_the_rest_envelope_before_any_event_and_changes_nothing() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let missing = "5f431ef6a7690b60975f6664";
    // (target, request headers, status, what the message says)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            format!("/api/v1/jobs?watch=1&where={}", encode(r#"{"nope":1}"#)),
            vec![],
            400,
            "unknown field \"nope\" of jobs",
        ),
        (
            format!(
                "/api/v1/jobs?watch=1&where={}",
                encode(r#"{"state":"RUNNIN"}"#)
            ),
            vec![],
            400,
            "state has no value \"RUNNIN\"",
        ),
        (job_target(missing), vec![], 404, "not found"),
        (
            job_target("5F431EF6A7690B60975F6664"),
            vec![],
            404,
            "lowercase",
        ),
        (
            job_target(&created.id),
            vec![("Last-Event-ID", "garbage")],
            400,
            "resume_token is malformed",
        ),
        (
            "/api/v1/jobs?watch=yes".into(),
            vec![],
            400,
            "watch \"yes\" is not 1 or 0",
        ),
        (
            "/api/v1/jobs?watch=1&sort=name".into(),
            vec![],
            400,
            "sort does not apply to a watch of the jobs",
        ),
        (
            format!("/api/v1/jobs/{}?watch=1&where={{}}", created.id),
            vec![],
            400,
            "where does not apply to a watch of one job",
        ),
        (
            "/api/v1/jobs?resume_token=abc".into(),
            vec![],
            400,
            "resume_token applies to a watch",
        ),
    ];
    for (target, headers, status, says) in cases {
        let refused = open(app.addr, &target, &headers)
            .await
            .err()
            .unwrap_or_else(|| panic!("{target}: opened"));
        assert_eq!(refused.status, status, "{target}: {:?}", refused.body);
        assert_eq!(refused.body["_status"], "ERR", "{target}");
        assert_eq!(refused.body["_error"]["code"], status, "{target}");
        let message = refused.body["_error"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains(says),
            "{target}: {message:?} does not say {says:?}"
        );
    }
    assert_eq!(app.get(&created.id).await, created, "nothing changed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_the_server_ends_ends_with_an_error_event_saying_why() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut sse = watch(app.addr, &job_target(&created.id), &[]).await;
    while sse.next_change().await.event != "synced" {}
    app.stop().await;
    let error = sse.next().await.expect("an error event");
    assert_eq!(error.event, "error");
    assert_eq!(error.id, None, "an error is no resume point");
    assert_eq!(error.data["_status"], "ERR");
    assert_eq!(error.data["_error"]["code"], 503);
    assert!(
        error.data["_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down")),
        "{:?}",
        error.data
    );
    assert!(sse.next().await.is_none(), "then the stream ends");
}

/// `curl -N` reading a live stream, then resuming where it stopped with `Last-Event-ID`.
#[tokio::test(flavor = "multi_thread")]
async fn curl_follows_a_watch_and_resumes_it_with_last_event_id() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let url = format!("http://{}{}", app.addr, job_target(&created.id));
    let curl = |extra: Vec<String>| {
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["-sSN", "--http1.1"])
            .args(extra)
            .arg(&url)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        command
            .spawn()
            .expect("curl runs (scripts/test.sh installs it)")
    };
    let mut first = curl(vec![]);
    let mut lines = BufReader::new(first.stdout.take().expect("stdout")).lines();
    let mut next_line = async || {
        within("a line from curl", lines.next_line())
            .await
            .expect("read")
            .expect("curl is still reading")
    };
    while next_line().await != "event: synced" {}
    app.set_message(&created.id, "one").await;
    // SYNCED's data line and the blank line after it, then the change.
    let id = loop {
        if let Some(id) = next_line().await.strip_prefix("id: ") {
            break id.to_string();
        }
    };
    assert_eq!(next_line().await, "event: updated");
    let data: Value = serde_json::from_str(next_line().await.strip_prefix("data: ").expect("data"))
        .expect("JSON");
    assert_eq!(data["job"]["message"], "one");
    drop(first);

    app.set_message(&created.id, "two").await;
    app.set_state(&created.id, JobState::Completed)
        .await
        .expect("complete");
    let resumed = curl(vec!["-H".into(), format!("Last-Event-ID: {id}")]);
    let output = within("curl to finish with the job", resumed.wait_with_output())
        .await
        .expect("curl");
    assert!(output.status.success(), "curl exits 0 when the stream ends");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events, ["updated", "updated"], "{text}");
    assert!(text.contains("\"message\":\"two\""), "{text}");
    assert!(
        !text.contains("\"message\":\"one\""),
        "nothing before the token: {text}"
    );
    app.stop().await;
}

/// A Python client with nothing but the standard library reads the stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_reader_of_the_standard_library_follows_a_watch() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/sse_reader.py");
    let url = format!("http://{}/api/v1/jobs?watch=1", app.addr);
    let mut reader = tokio::process::Command::new(crate::rest_openapi::python())
        .arg(&script)
        .arg(&url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(reader.stdout.take().expect("stdout")).lines();
    let mut next = async || -> Value {
        let line = within("an event from the Python reader", lines.next_line())
            .await
            .expect("read")
            .expect("the reader is still reading");
        serde_json::from_str(&line).expect("one JSON event per line")
    };
    let snapshot = next().await;
    assert_eq!(snapshot["event"], "snapshot");
    assert_eq!(snapshot["data"]["job"]["_id"], created.id.as_str());
    assert!(snapshot["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(next().await["event"], "synced");
    let added = app.create(job(JobType::Restore, JobState::Pending)).await;
    let event = next().await;
    assert_eq!(event["event"], "created");
    assert_eq!(event["data"]["job"]["_id"], added.id.as_str());
    drop(reader);
    app.stop().await;
}

/// nginx (Debian's package) as a reverse proxy with its defaults: HTTP/1.0 to the server,
/// responses buffered unless the server says otherwise. The watch still arrives live.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_arrives_live_through_an_http_1_proxy() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("a directory for nginx");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("addr").port()
    };
    let prefix = dir.path().display().to_string();
    let conf = format!(
        "master_process off;\nerror_log {prefix}/error.log;\npid {prefix}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {prefix};\n  proxy_temp_path {prefix};\n\
           fastcgi_temp_path {prefix};\n  uwsgi_temp_path {prefix};\n  scgi_temp_path {prefix};\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://{}; }}\n  }}\n}}\n",
        app.addr
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("write the config");
    let _nginx = tokio::process::Command::new("/usr/sbin/nginx")
        .args(["-p", &prefix, "-c", "nginx.conf", "-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx runs (scripts/test.sh installs nginx-light)");
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    eventually("nginx to listen", || async {
        TcpStream::connect(proxy).await.ok().map(|_| ())
    })
    .await;
    let mut sse = watch(proxy, "/api/v1/jobs?watch=1", &[]).await;
    assert_eq!(sse.next_change().await.event, "synced");
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let event = sse.next_change().await;
    assert_eq!(event.event, "created", "through the proxy, as it happens");
    assert_eq!(event.data["job"]["_id"], created.id.as_str());
    drop(sse);
    app.stop().await;
}
