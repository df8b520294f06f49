//! API keys and roles, one policy on every interface: the role x RPC matrix over gRPC, the
//! role x endpoint matrix over REST, every key state, revocation of an open stream, and the
//! refusal to serve other machines without keys.

use jobtrack::auth::{Role, generate};
use jobtrack::pb;
use jobtrack::pb::job_service_client::JobServiceClient;
use jobtrack::store::Store;
use tonic::Code;
use tonic::codegen::{Body, Bytes, StdError};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::helpers::*;
use crate::http::request;

/// The keys a test server knows: one per role, and a revoked admin key.
pub(crate) struct TestKeys {
    by_role: Vec<(Role, String)>,
    revoked: String,
}

impl TestKeys {
    pub(crate) fn of(&self, role: Role) -> String {
        self.by_role
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, k)| k.clone())
            .expect("a key per role")
    }

    fn header(&self, role: Role) -> String {
        format!("Bearer {}", self.of(role))
    }

    /// Every `Authorization` a server must refuse as UNAUTHENTICATED, by what is wrong with it.
    fn refused(&self) -> Vec<(&'static str, Option<String>)> {
        let admin = self.of(Role::Admin);
        let admin_id = admin.split('_').nth(1).expect("jt_<id>_<secret>");
        vec![
            ("missing", None),
            ("not bearer", Some("Basic dXNlcjpwYXNz".into())),
            ("empty bearer", Some("Bearer ".into())),
            ("malformed", Some("Bearer garbage".into())),
            ("unknown", Some("Bearer jt_0000000000000000_nope".into())),
            (
                "wrong secret",
                Some(format!("Bearer jt_{admin_id}_{}", "A".repeat(43))),
            ),
            ("revoked", Some(format!("Bearer {}", self.revoked))),
        ]
    }

    /// Every principal of a matrix: each role with its key, then each refused header.
    fn principals(&self) -> Vec<(String, Option<Role>, Option<String>)> {
        let mut out: Vec<_> = self
            .by_role
            .iter()
            .map(|(role, key)| {
                (
                    role.as_str().to_string(),
                    Some(*role),
                    Some(format!("Bearer {key}")),
                )
            })
            .collect();
        for (what, header) in self.refused() {
            out.push((format!("{what} key"), None, header));
        }
        out
    }
}

/// A server whose database holds one key per role and a revoked one.
async fn app_with_keys() -> (TestApp, TestKeys) {
    app_with_keys_and(|_| {}).await
}

pub(crate) async fn app_with_keys_and(
    configure: impl FnOnce(&mut jobtrack::config::Config),
) -> (TestApp, TestKeys) {
    let db = test_db().await;
    let mut by_role = Vec::new();
    let revoked;
    {
        let store = Store::open(&db.url).await.expect("store");
        for role in Role::ALL {
            let (key, secret) = generate(role.as_str(), role, 1);
            store.create_key(&key).await.expect("key");
            by_role.push((role, secret));
        }
        let (key, secret) = generate("gone", Role::Admin, 1);
        store.create_key(&key).await.expect("key");
        assert!(store.revoke_key(&key.id, 2).await.expect("revoke"));
        revoked = secret;
        store.close().await;
    }
    let mut app = spawn_app_on(&db.url, configure).await;
    app.keep(db);
    (app, TestKeys { by_role, revoked })
}

/// `message` with `authorization` metadata when `header` is given.
fn with_auth<T>(message: T, header: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(header) = header {
        let value: MetadataValue<_> = header.parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub(crate) fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    with_auth(message, key.map(|k| format!("Bearer {k}")).as_deref())
}

fn c<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Calls every RPC once with `header` and returns the codes in a fixed order.
async fn every_rpc<T>(
    client: &mut JobServiceClient<T>,
    header: Option<&str>,
    running: &pb::Job,
) -> Vec<(&'static str, Code)>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let id = running.id.clone();
    let mut out = Vec::new();
    out.push((
        "CreateJob",
        c(client
            .create_job(with_auth(
                pb::CreateJobRequest {
                    job: Some(job(JobType::K8sCopy, JobState::Running)),
                },
                header,
            ))
            .await),
    ));
    out.push((
        "GetJob",
        c(client
            .get_job(with_auth(pb::GetJobRequest { id: id.clone() }, header))
            .await),
    ));
    out.push((
        "ListJobs",
        c(client
            .list_jobs(with_auth(pb::ListJobsRequest::default(), header))
            .await),
    ));
    out.push((
        "UpdateJob",
        c(client
            .update_job(with_auth(
                pb::UpdateJobRequest {
                    job: Some(pb::Job {
                        id: id.clone(),
                        message: Some("x".into()),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["message".into()],
                    }),
                    ..Default::default()
                },
                header,
            ))
            .await),
    ));
    out.push((
        "ReportPvcProgress",
        c(client
            .report_pvc_progress(with_auth(
                pb::ReportPvcProgressRequest {
                    pvc: Some(pvc(&id, "data", OpType::K8sCopy, PvcState::Active)),
                },
                header,
            ))
            .await),
    ));
    out.push((
        "ListPvcProgress",
        c(client
            .list_pvc_progress(with_auth(
                pb::ListPvcProgressRequest {
                    job_id: id.clone(),
                    ..Default::default()
                },
                header,
            ))
            .await),
    ));
    out.push((
        "GetPvcProgress",
        c(client
            .get_pvc_progress(with_auth(
                pb::GetPvcProgressRequest {
                    id: "5f431ef6a7690b60975f6664".into(),
                },
                header,
            ))
            .await),
    ));
    out.push((
        "WatchJob",
        c(client
            .watch_job(with_auth(
                pb::WatchJobRequest {
                    id: id.clone(),
                    resume_token: String::new(),
                },
                header,
            ))
            .await),
    ));
    out.push((
        "WatchJobs",
        c(client
            .watch_jobs(with_auth(pb::WatchJobsRequest::default(), header))
            .await),
    ));
    out.push((
        "CancelJob",
        c(client
            .cancel_job(with_auth(pb::CancelJobRequest { id: id.clone() }, header))
            .await),
    ));
    out.push((
        "DeleteJob",
        c(client
            .delete_job(with_auth(
                pb::DeleteJobRequest {
                    id,
                    etag: String::new(),
                },
                header,
            ))
            .await),
    ));
    out
}

/// Whether `role` may call `rpc`: the issue's table.
fn role_may_call(role: Role, rpc: &str) -> bool {
    match rpc {
        "GetJob" | "ListJobs" | "ListPvcProgress" | "GetPvcProgress" | "WatchJob" | "WatchJobs" => {
            true
        }
        "CancelJob" => matches!(role, Role::Operator | Role::Admin),
        "CreateJob" | "UpdateJob" | "ReportPvcProgress" => {
            matches!(role, Role::Executor | Role::Admin)
        }
        "DeleteJob" => role == Role::Admin,
        other => panic!("no such RPC {other}"),
    }
}

/// Every principal calls every RPC over one transport: a role gets exactly its calls, a refused
/// key none, and whoever may write nothing has written nothing when the round ends.
async fn rpc_matrix<T>(mut client: JobServiceClient<T>, transport: &str, keys: &TestKeys)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let admin = keys.header(Role::Admin);
    let admin = Some(admin.as_str());
    for (who, role, header) in keys.principals() {
        // A fresh RUNNING job each round, made by the admin, so cancel and delete have work.
        let running = client
            .create_job(with_auth(
                pb::CreateJobRequest {
                    job: Some(job(JobType::K8sCopy, JobState::Running)),
                },
                admin,
            ))
            .await
            .expect("admin creates")
            .into_inner();
        let jobs_before = client
            .list_jobs(with_auth(pb::ListJobsRequest::default(), admin))
            .await
            .expect("admin lists")
            .into_inner()
            .total;
        for (rpc, code) in every_rpc(&mut client, header.as_deref(), &running).await {
            let expected = match role {
                None => vec![Code::Unauthenticated],
                Some(r) if !role_may_call(r, rpc) => vec![Code::PermissionDenied],
                // Allowed: whatever the call itself answers (a missing PVC record is NOT_FOUND,
                // a job cancelled or deleted earlier in the round refuses an update).
                Some(_) => vec![Code::Ok, Code::NotFound, Code::FailedPrecondition],
            };
            assert!(
                expected.contains(&code),
                "{transport}, {who}: {rpc} answered {code:?}"
            );
        }
        if role.is_none_or(|r| r == Role::Viewer) {
            let after = client
                .get_job(with_auth(
                    pb::GetJobRequest {
                        id: running.id.clone(),
                    },
                    admin,
                ))
                .await
                .expect("still there")
                .into_inner();
            assert_eq!(after, running, "{transport}, {who}: the job was changed");
            let jobs_after = client
                .list_jobs(with_auth(pb::ListJobsRequest::default(), admin))
                .await
                .expect("admin lists")
                .into_inner()
                .total;
            assert_eq!(
                jobs_after, jobs_before,
                "{transport}, {who}: a job was created"
            );
            let pvcs = client
                .list_pvc_progress(with_auth(
                    pb::ListPvcProgressRequest {
                        job_id: running.id.clone(),
                        ..Default::default()
                    },
                    admin,
                ))
                .await
                .expect("admin lists")
                .into_inner()
                .total;
            assert_eq!(pvcs, 0, "{transport}, {who}: a PVC record was written");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_may_call_exactly_its_rpcs_over_grpc_and_grpc_web_and_bad_keys_none() {
    let (app, keys) = app_with_keys().await;
    rpc_matrix(app.client(), "gRPC", &keys).await;
    let origin: tonic::codegen::http::Uri = format!("http://{}", app.addr).parse().expect("uri");
    for http2 in [true, false] {
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(http2)
                .build_http();
        let web = tower::ServiceBuilder::new()
            .layer(tonic_web::GrpcWebClientLayer::new())
            .service(http);
        let transport = if http2 {
            "gRPC-web over HTTP/2"
        } else {
            "gRPC-web over HTTP/1.1"
        };
        rpc_matrix(
            JobServiceClient::with_origin(web, origin.clone()),
            transport,
            &keys,
        )
        .await;
    }
    app.stop().await;
}

/// The gateway's routes and the permission each needs (`None`: public).
fn rest_endpoints(job: &str, pvc: &str) -> Vec<(&'static str, String, Option<&'static str>)> {
    let mut out = Vec::new();
    for method in ["GET", "HEAD"] {
        for target in [
            "/api/v1/jobs".to_string(),
            "/api/v1/jobs/".to_string(),
            format!(
                "/api/v1/jobs?where={}",
                crate::http::encode(r#"{"state":"RUNNING"}"#)
            ),
            format!("/api/v1/jobs/{job}"),
            "/api/v1/kubepvcprogress".to_string(),
            format!(
                "/api/v1/kubepvcprogress?where={}",
                crate::http::encode(&format!(r#"{{"job_id":"{job}"}}"#))
            ),
            format!("/api/v1/kubepvcprogress/{pvc}"),
        ] {
            out.push((method, target, Some("read")));
        }
    }
    out.push((
        "POST",
        format!("/api/v1/jobs/{job}/action/cancel"),
        Some("cancel"),
    ));
    // Public: the API description, the metrics, the dashboard's files and CORS preflights.
    out.push(("GET", "/api-docs".into(), None));
    out.push(("GET", "/metrics".into(), None));
    out.push(("GET", "/".into(), None));
    out.push(("OPTIONS", "/api/v1/jobs".into(), None));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_gets_exactly_its_rest_endpoints_and_bad_keys_401_in_the_envelope() {
    let (app, keys) = app_with_keys().await;
    let admin = keys.header(Role::Admin);
    let mut client = app.client();
    for (who, role, header) in keys.principals() {
        let running = client
            .create_job(with_auth(
                pb::CreateJobRequest {
                    job: Some(job(JobType::K8sCopy, JobState::Running)),
                },
                Some(&admin),
            ))
            .await
            .expect("create")
            .into_inner();
        let record = client
            .report_pvc_progress(with_auth(
                pb::ReportPvcProgressRequest {
                    pvc: Some(pvc(&running.id, "data", OpType::K8sCopy, PvcState::Active)),
                },
                Some(&admin),
            ))
            .await
            .expect("report")
            .into_inner();
        // The report changed the job's aggregates: this is the job the round must leave alone.
        let before = client
            .get_job(with_auth(
                pb::GetJobRequest {
                    id: running.id.clone(),
                },
                Some(&admin),
            ))
            .await
            .expect("get")
            .into_inner();
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("Authorization", h)])
            .unwrap_or_default();
        for (method, target, needs) in rest_endpoints(&running.id, &record.id) {
            let reply = request(app.addr, method, &target, &headers, b"").await;
            let at = format!("{who}: {method} {target}");
            let allowed = match (needs, role) {
                (None, _) => {
                    assert!(
                        reply.status == 200 || reply.status == 204,
                        "{at}: {reply:?}"
                    );
                    continue;
                }
                (Some(_), None) => {
                    assert_eq!(reply.status, 401, "{at}");
                    assert_eq!(
                        reply.header("www-authenticate"),
                        Some("Bearer realm=\"jobtrack\""),
                        "{at}"
                    );
                    if method != "HEAD" {
                        reply.error(401);
                    }
                    continue;
                }
                (Some("cancel"), Some(r)) => matches!(r, Role::Operator | Role::Admin),
                (Some(_), Some(_)) => true,
            };
            if allowed {
                assert_eq!(reply.status, 200, "{at}: {}", reply.text());
                if method == "GET" {
                    reply.json();
                }
            } else {
                let message = reply.error(403);
                let role = role.expect("a role").as_str();
                assert!(message.contains(role), "{at}: {message}");
            }
        }
        let stored = request(
            app.addr,
            "GET",
            &format!("/api/v1/jobs/{}", running.id),
            &[("Authorization", &admin)],
            b"",
        )
        .await
        .json();
        let cancelled = role.is_some_and(|r| matches!(r, Role::Operator | Role::Admin));
        let expected = if cancelled { "CANCELLED" } else { "RUNNING" };
        assert_eq!(stored["state"], expected, "{who}: state after the round");
        if cancelled {
            let activity = stored["activity"].as_array().expect("activity");
            let line = activity.last().and_then(|l| l.as_str()).expect("a line");
            assert!(
                line.contains(&format!("key \"{}\"", role.expect("a role").as_str())),
                "{who}: the activity names the key: {line}"
            );
        } else {
            assert_eq!(stored["_etag"], before.etag, "{who}: the job was changed");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_stops_working_and_its_open_stream_ends() {
    let (app, keys) = app_with_keys().await;
    let viewer = &keys.of(Role::Viewer);
    let mut client = app.client();
    let mut stream = client
        .watch_jobs(with_key(pb::WatchJobsRequest::default(), Some(viewer)))
        .await
        .expect("watch")
        .into_inner();
    let synced = within("SYNCED", stream.message())
        .await
        .expect("event")
        .expect("synced");
    assert_eq!(synced.r#type, pb::JobEventType::Synced as i32);
    let id = viewer.split('_').nth(1).expect("id").to_string();
    let store = Store::open(&app.database).await.expect("store");
    assert!(store.revoke_key(&id, 2).await.expect("revoke"));
    // (How soon a revoked key's stream ends — about a second — is the keys' reload period; a
    // test only waits for it to happen.)
    let ended = within("the stream of a revoked key to end", async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Code::Ok,
                Err(s) => return s.code(),
            }
        }
    })
    .await;
    assert_eq!(ended, Code::Unauthenticated);
    let refused = client
        .list_jobs(with_key(pb::ListJobsRequest::default(), Some(viewer)))
        .await;
    assert_eq!(refused.expect_err("revoked").code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_for_other_machines_refuses_to_start_without_keys() {
    let db = test_db().await;
    let mut config = jobtrack::config::Config::for_database(&db.url);
    config.listen = "0.0.0.0:0".into();
    let refused = jobtrack::server::Server::build(config.clone()).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains("--insecure-no-auth"), "{message}");
    config.insecure_no_auth = true;
    let app = jobtrack::server::Server::build(config)
        .await
        .expect("starts when told");
    drop(app);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_over_its_rate_is_refused_while_other_keys_carry_on() {
    // A burst of 5 and a refill of one call every 1,000 s: within this test the bucket never
    // refills, so the answers are exact.
    let (app, keys) = app_with_keys_and(|c| {
        c.key_limits = jobtrack::auth::Limits {
            rate: 0.001,
            burst: 5.0,
            max_streams: 100,
        }
    })
    .await;
    let key = |role: Role| keys.of(role);
    let (noisy, quiet) = (key(Role::Viewer), key(Role::Operator));
    let mut client = app.client();
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(c(client
            .list_jobs(with_key(pb::ListJobsRequest::default(), Some(&noisy)))
            .await));
    }
    let mut expected = vec![Code::Ok; 5];
    expected.extend([Code::ResourceExhausted; 3]);
    assert_eq!(codes, expected, "five calls in the burst, then none");
    let rest = request(
        app.addr,
        "GET",
        "/api/v1/jobs",
        &[("Authorization", &format!("Bearer {noisy}"))],
        b"",
    )
    .await;
    rest.error(429);
    assert!(
        rest.header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1))
    );
    // Another key is not affected.
    assert_eq!(
        c(client
            .list_jobs(with_key(pb::ListJobsRequest::default(), Some(&quiet)))
            .await),
        Code::Ok
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_over_its_open_streams_is_refused_until_one_closes() {
    // Calls are not limited here (the default rate), so the test may retry while it waits.
    let (app, keys) = app_with_keys_and(|c| c.key_limits.max_streams = 2).await;
    let (quiet, admin) = (keys.of(Role::Operator), keys.of(Role::Admin));
    let mut client = app.client();
    // Streams: two at once for a key, a third refused until one closes.
    let open = |client: &mut JobServiceClient<Channel>| {
        let request = with_key(pb::WatchJobsRequest::default(), Some(&quiet));
        let mut client = client.clone();
        async move { client.watch_jobs(request).await }
    };
    let first = open(&mut client).await.expect("first stream");
    let _second = open(&mut client).await.expect("second stream");
    assert_eq!(
        open(&mut client).await.expect_err("third").code(),
        Code::ResourceExhausted
    );
    drop(first);
    // The server learns of the closed stream a moment later: then its slot is free again.
    let _third = eventually("a closed stream to give its slot back", || {
        let opening = open(&mut client);
        async move { opening.await.ok() }
    })
    .await;
    // The server is healthy for everyone else.
    let health = request(
        app.addr,
        "GET",
        "/api/v1/jobs",
        &[("Authorization", &format!("Bearer {admin}"))],
        b"",
    )
    .await;
    assert_eq!(health.status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_caller_names_the_key_and_what_its_role_may_and_may_not_do() {
    use jobtrack::pb::access_service_client::AccessServiceClient;
    let (app, keys) = app_with_keys().await;
    let mut access = AccessServiceClient::connect(format!("http://{}", app.addr))
        .await
        .expect("connect");
    let names = |list: &[pb::Permission]| list.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    for (role, allowed, denied) in [
        (
            Role::Viewer,
            vec!["read"],
            vec!["cancel", "write", "delete", "subscriptions"],
        ),
        (
            Role::Operator,
            vec!["read", "cancel"],
            vec!["write", "delete", "subscriptions"],
        ),
        (
            Role::Executor,
            vec!["read", "write"],
            vec!["cancel", "delete", "subscriptions"],
        ),
        (
            Role::Admin,
            vec!["read", "cancel", "write", "delete", "subscriptions"],
            vec![],
        ),
    ] {
        let key = keys.of(role);
        let caller = access
            .get_caller(with_key(pb::GetCallerRequest {}, Some(&key)))
            .await
            .expect("a valid key")
            .into_inner();
        assert!(caller.keys_required);
        assert_eq!(caller.role, role.as_str());
        assert_eq!(caller.key_name, role.as_str());
        assert!(
            key.starts_with(&format!("jt_{}_", caller.key_id)),
            "{caller:?}"
        );
        assert_eq!(names(&caller.allowed), allowed, "{role:?}");
        assert_eq!(names(&caller.denied), denied, "{role:?}");
        assert!(
            caller.denied.iter().all(|p| !p.description.is_empty()),
            "{caller:?}"
        );
    }
    for (what, header) in keys.refused() {
        let refused = access
            .get_caller(with_auth(pb::GetCallerRequest {}, header.as_deref()))
            .await
            .expect_err(what);
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}");
    }
    app.stop().await;

    // A server without keys: anyone may do everything.
    let open = spawn_app().await;
    let mut access = AccessServiceClient::connect(format!("http://{}", open.addr))
        .await
        .expect("connect");
    let caller = access
        .get_caller(pb::GetCallerRequest {})
        .await
        .expect("open")
        .into_inner();
    assert!(!caller.keys_required);
    assert_eq!(caller.role, "");
    assert_eq!(
        names(&caller.allowed),
        ["read", "cancel", "write", "delete", "subscriptions"]
    );
    assert!(caller.denied.is_empty());
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jobtrack_whoami_shows_the_key_of_jobtrack_key_and_what_it_may_not_do() {
    let (app, keys) = app_with_keys().await;
    let server = format!("http://{}", app.addr);
    let run = |key: Option<String>| {
        let server = server.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_jobtrack"));
                command.args(["whoami", "--server", &server]);
                command.env_remove("JOBTRACK_KEY");
                if let Some(key) = key {
                    command.env("JOBTRACK_KEY", key);
                }
                command.output().expect("jobtrack whoami runs")
            })
            .await
            .expect("joined")
        }
    };
    let shown = run(Some(keys.of(Role::Executor))).await;
    assert!(shown.status.success(), "{shown:?}");
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(out.contains("role:     executor"), "{out}");
    assert!(out.contains("may not:  cancel jobs"), "{out}");
    assert!(out.contains("create and update jobs"), "{out}");
    let refused = run(None).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
    assert_eq!(err.lines().count(), 1, "said once: {err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_line_of_each_call_names_its_key() {
    use std::io::BufRead;
    let db = test_db().await;
    let key = {
        let store = Store::open(&db.url).await.expect("store");
        let (key, secret) = generate("nightly-ops", Role::Operator, 1);
        store.create_key(&key).await.expect("key");
        store.close().await;
        secret
    };
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = server.stderr.take().expect("stderr");
    let (lines, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let next_line = |want: &dyn Fn(&str) -> bool| loop {
        let line = rx.recv_timeout(crate::helpers::WAIT).expect("a log line");
        if want(&line) {
            return line;
        }
    };
    let started = next_line(&|l: &str| l.contains("local_addr="));
    let addr: std::net::SocketAddr = started
        .split("local_addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("an address")
        .parse()
        .expect("a socket address");

    let mut client = JobServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    client
        .list_jobs(with_key(pb::ListJobsRequest::default(), Some(&key)))
        .await
        .expect("list");
    let rpc = next_line(&|l: &str| l.contains("jobtrack::rpc") && l.contains("ListJobs"));
    assert!(rpc.contains("key=\"nightly-ops\""), "{rpc}");
    let reply = request(
        addr,
        "GET",
        "/api/v1/jobs",
        &[("Authorization", &format!("Bearer {key}"))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    let http = next_line(&|l: &str| l.contains("jobtrack::http"));
    assert!(http.contains("key=\"nightly-ops\""), "{http}");
    // A refused call has no key to name.
    request(addr, "GET", "/api/v1/jobs", &[], b"")
        .await
        .error(401);
    let refused = next_line(&|l: &str| l.contains("jobtrack::http"));
    assert!(
        refused.contains("status=401") && !refused.contains("key="),
        "{refused}"
    );
    let _ = server.kill();
    let _ = server.wait();
}
