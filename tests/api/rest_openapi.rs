//! The OpenAPI 3.1 document at `GET /api-docs`: valid OpenAPI 3.1, and true — every documented
//! operation and status is provoked on the real server, and every real answer (headers and JSON
//! body) is checked against the documented schema. The checking is done by
//! `scripts/check_openapi.py` with openapi-spec-validator and jsonschema (Draft 2020-12), in the
//! Python environment `scripts/test.sh` provisions.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{JobState, JobType, OpType, PvcState, job, pvc, spawn_app};
use crate::http::{Reply, request};

/// The Python that has the validators: `JOBTRACK_TEST_PYTHON`, else the test script's venv.
pub(crate) fn python() -> PathBuf {
    if let Ok(path) = std::env::var("JOBTRACK_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh once, which provisions it \
         (python3 -m venv + pip install openapi-spec-validator)",
        venv.display()
    );
    venv
}

/// A read to make with GET and HEAD: (documented path, request target, request headers).
type Read<'a> = (&'a str, String, Vec<(&'a str, String)>);

struct Exchanges(Vec<Value>);

impl Exchanges {
    /// Records one real exchange under its documented path template.
    fn add(&mut self, method: &str, template: &str, reply: &Reply) {
        let headers: serde_json::Map<String, Value> = reply
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect();
        let body = if reply.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&reply.body).expect("a JSON body")
        };
        self.0.push(json!({
            "method": method, "path": template, "status": reply.status,
            "headers": headers, "body": body,
        }));
    }

    /// Records a watch: its headers and the events read (up to SYNCED).
    async fn add_watch(&mut self, addr: std::net::SocketAddr, template: &str, target: &str) {
        let (headers, mut sse) = crate::sse::open(addr, target, &[])
            .await
            .unwrap_or_else(|refused| panic!("{target}: {refused:?}"));
        let mut events = Vec::new();
        loop {
            let event = sse.next_change().await;
            let synced = event.event == "synced";
            events.push(json!({"event": event.event, "id": event.id, "data": event.data}));
            if synced {
                break;
            }
        }
        let headers: serde_json::Map<String, Value> = headers
            .into_iter()
            .map(|(n, v)| (n, Value::String(v)))
            .collect();
        self.0.push(json!({
            "method": "GET", "path": template, "status": 200,
            "headers": headers, "events": events,
        }));
    }
}

/// The answers that come of keys, on a server with keys: 401 on every route without one, 403 for
/// a role that may not cancel, 429 on every route once a key has spent its burst.
async fn key_answers(ex: &mut Exchanges) {
    use jobtrack::auth::{Limits, Role};
    let (app, keys) = crate::auth::app_with_keys_and(|c| {
        c.key_limits = Limits {
            rate: 0.001,
            burst: 2.0,
            max_streams: 10,
        }
    })
    .await;
    let missing = "5f431ef6a7690b60975f6664";
    let reads = [
        ("/api/v1/jobs", "/api/v1/jobs".to_string()),
        ("/api/v1/jobs/{id}", format!("/api/v1/jobs/{missing}")),
        (
            "/api/v1/kubepvcprogress",
            "/api/v1/kubepvcprogress".to_string(),
        ),
        (
            "/api/v1/kubepvcprogress/{id}",
            format!("/api/v1/kubepvcprogress/{missing}"),
        ),
    ];
    let cancel = format!("/api/v1/jobs/{missing}/action/cancel");
    let cancel_template = "/api/v1/jobs/{id}/action/cancel";
    for (template, target) in &reads {
        for method in ["GET", "HEAD"] {
            let reply = request(app.addr, method, target, &[], b"").await;
            assert_eq!(reply.status, 401, "{method} {target}");
            ex.add(method, template, &reply);
        }
    }
    let reply = request(app.addr, "POST", &cancel, &[], b"").await;
    assert_eq!(reply.status, 401);
    ex.add("POST", cancel_template, &reply);
    let viewer = format!("Bearer {}", keys.of(Role::Viewer));
    let reply = request(
        app.addr,
        "POST",
        &cancel,
        &[("Authorization", &viewer)],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403);
    ex.add("POST", cancel_template, &reply);
    // The operator's burst of two, spent; then every route answers 429.
    let operator = format!("Bearer {}", keys.of(Role::Operator));
    let with_key = [("Authorization", operator.as_str())];
    for _ in 0..2 {
        assert_eq!(
            request(app.addr, "GET", "/api/v1/jobs", &with_key, b"")
                .await
                .status,
            200
        );
    }
    for (template, target) in &reads {
        for method in ["GET", "HEAD"] {
            let reply = request(app.addr, method, target, &with_key, b"").await;
            assert_eq!(reply.status, 429, "{method} {target}");
            ex.add(method, template, &reply);
        }
    }
    let reply = request(app.addr, "POST", &cancel, &with_key, b"").await;
    assert_eq!(reply.status, 429);
    ex.add("POST", cancel_template, &reply);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_valid_31_and_every_real_answer_matches_it() {
    let app = spawn_app().await;
    let addr = app.addr;
    let running = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut copy = pvc(&running.id, "data", OpType::K8sCopy, PvcState::Active);
    copy.stats = Some(crate::helpers::stats(4096, 3));
    let record = app.report(copy).await.expect("report");
    let mut full = job(JobType::K8sSnap, JobState::Running);
    full.cluster = Some("5f77218d44b03575ec17a5ae".into());
    full.backupdef = Some("5f7721cb44b03575ec17a5af".into());
    let full = app.create(full).await;
    app.report(pvc(&full.id, "snap", OpType::K8sSnap, PvcState::Completed))
        .await
        .expect("report");
    // The report changed the job's aggregates, and so its etag.
    let full = app.get(&full.id).await;
    let pending = app.create(job(JobType::K8sCopy, JobState::Pending)).await;
    let missing = "5f431ef6a7690b60975f6664";

    let mut ex = Exchanges(Vec::new());
    let job_item = format!("/api/v1/jobs/{}", full.id);
    let pvc_item = format!("/api/v1/kubepvcprogress/{}", record.id);
    let if_none = [("If-None-Match", format!("\"{}\"", full.etag))];
    let if_none_pvc = [("If-None-Match", format!("\"{}\"", record.etag))];
    let reads: Vec<Read> = vec![
        ("/api/v1/jobs", "/api/v1/jobs?max_results=1".into(), vec![]),
        (
            "/api/v1/jobs",
            r#"/api/v1/jobs?where={"nope":1}"#.into(),
            vec![],
        ),
        ("/api/v1/jobs/{id}", job_item.clone(), vec![]),
        ("/api/v1/jobs/{id}", job_item.clone(), if_none.to_vec()),
        (
            "/api/v1/jobs/{id}",
            format!("/api/v1/jobs/{missing}"),
            vec![],
        ),
        (
            "/api/v1/kubepvcprogress",
            "/api/v1/kubepvcprogress".into(),
            vec![],
        ),
        (
            "/api/v1/kubepvcprogress",
            "/api/v1/kubepvcprogress?sort=nope".into(),
            vec![],
        ),
        ("/api/v1/kubepvcprogress/{id}", pvc_item.clone(), vec![]),
        (
            "/api/v1/kubepvcprogress/{id}",
            pvc_item.clone(),
            if_none_pvc.to_vec(),
        ),
        (
            "/api/v1/kubepvcprogress/{id}",
            format!("/api/v1/kubepvcprogress/{missing}"),
            vec![],
        ),
        ("/api-docs", "/api-docs".into(), vec![]),
    ];
    let mut document = Value::Null;
    for (template, target, headers) in &reads {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        for method in ["GET", "HEAD"] {
            let reply = request(addr, method, target, &headers, b"").await;
            if *template == "/api-docs" && method == "GET" {
                document = reply.json();
            }
            ex.add(method, template, &reply);
        }
    }

    let cancel = "/api/v1/jobs/{id}/action/cancel";
    let post = |id: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let target = format!("/api/v1/jobs/{id}/action/cancel");
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(addr, "POST", &target, &headers, &body).await
        }
    };
    let stale = vec![("If-Match", "\"0000\"".to_string())];
    ex.add("POST", cancel, &post(&running.id, stale, vec![]).await);
    ex.add(
        "POST",
        cancel,
        &post(&running.id, vec![], b"{\"why\":1}".to_vec()).await,
    );
    ex.add(
        "POST",
        cancel,
        &post(&running.id, vec![], vec![b' '; 70_000]).await,
    );
    ex.add("POST", cancel, &post(missing, vec![], vec![]).await);
    ex.add("POST", cancel, &post(&pending.id, vec![], vec![]).await);
    ex.add("POST", cancel, &post(&running.id, vec![], vec![]).await);
    let statuses: Vec<u64> = ex.0.iter().filter_map(|e| e["status"].as_u64()).collect();
    assert!(
        statuses.ends_with(&[412, 400, 413, 404, 409, 200]),
        "{statuses:?}"
    );

    for (method, template, target) in [
        ("POST", "/api/v1/jobs", "/api/v1/jobs".to_string()),
        ("DELETE", "/api/v1/jobs/{id}", job_item.clone()),
        (
            "GET",
            cancel,
            format!("/api/v1/jobs/{}/action/cancel", full.id),
        ),
        ("PUT", "/api/v1/kubepvcprogress/{id}", pvc_item.clone()),
    ] {
        let reply = request(addr, method, &target, &[], b"").await;
        assert_eq!(reply.status, 405);
        ex.add(method, template, &reply);
    }

    // Watches, as Server-Sent Events.
    ex.add_watch(addr, "/api/v1/jobs/{id}", &format!("{job_item}?watch=1"))
        .await;
    ex.add_watch(addr, "/api/v1/jobs", "/api/v1/jobs?watch=1")
        .await;
    // A watch with a bad parameter is a 400 on the item route too.
    let reply = request(addr, "GET", &format!("{job_item}?watch=2"), &[], b"").await;
    assert_eq!(reply.status, 400);
    ex.add("GET", "/api/v1/jobs/{id}", &reply);
    key_answers(&mut ex).await;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let samples = dir.path().join("samples.json");
    let content = json!({"document": document, "exchanges": ex.0});
    std::fs::write(&samples, serde_json::to_vec_pretty(&content).expect("JSON")).expect("write");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check_openapi.py");
    let output = Command::new(python())
        .arg(&script)
        .arg(&samples)
        .output()
        .expect("the checker runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "OpenAPI check failed:\n{report}");
    assert!(report.contains("real answers match it"), "{report}");
    app.stop().await;
}
