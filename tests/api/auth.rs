//! API keys and roles, one policy on every interface: the role x RPC matrix over gRPC, the
//! role x endpoint matrix over REST, every key state, revocation of an open stream, and the
//! refusal to serve other machines without keys.

use jobtrack::auth::{Role, generate};
use jobtrack::pb;
use jobtrack::pb::job_service_client::JobServiceClient;
use jobtrack::store::Store;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::helpers::*;
use crate::http::request;

/// A server whose database holds one key per role; returns the app and the keys by role.
async fn app_with_keys() -> (TestApp, Vec<(Role, String)>) {
    app_with_keys_and(|_| {}).await
}

async fn app_with_keys_and(
    configure: impl FnOnce(&mut jobtrack::config::Config),
) -> (TestApp, Vec<(Role, String)>) {
    let db = test_db().await;
    let mut shown = Vec::new();
    {
        let store = Store::open(&db.url).await.expect("store");
        for role in Role::ALL {
            let (key, secret) = generate(role.as_str(), role, 1);
            store.create_key(&key).await.expect("key");
            shown.push((role, secret));
        }
        store.close().await;
    }
    let mut app = spawn_app_on(&db.url, configure).await;
    app.keep(db);
    (app, shown)
}

fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        let value: MetadataValue<_> = format!("Bearer {key}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn c<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Calls every RPC once with `key` and returns the codes in a fixed order.
async fn every_rpc(
    client: &mut JobServiceClient<Channel>,
    key: Option<&str>,
    running: &pb::Job,
) -> Vec<(&'static str, Code)> {
    let id = running.id.clone();
    let mut out = Vec::new();
    out.push((
        "CreateJob",
        c(client
            .create_job(with_key(
                pb::CreateJobRequest {
                    job: Some(job(JobType::K8sCopy, JobState::Running)),
                },
                key,
            ))
            .await),
    ));
    out.push((
        "GetJob",
        c(client
            .get_job(with_key(pb::GetJobRequest { id: id.clone() }, key))
            .await),
    ));
    out.push((
        "ListJobs",
        c(client
            .list_jobs(with_key(pb::ListJobsRequest::default(), key))
            .await),
    ));
    out.push((
        "UpdateJob",
        c(client
            .update_job(with_key(
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
                key,
            ))
            .await),
    ));
    out.push((
        "ReportPvcProgress",
        c(client
            .report_pvc_progress(with_key(
                pb::ReportPvcProgressRequest {
                    pvc: Some(pvc(&id, "data", OpType::K8sCopy, PvcState::Active)),
                },
                key,
            ))
            .await),
    ));
    out.push((
        "ListPvcProgress",
        c(client
            .list_pvc_progress(with_key(
                pb::ListPvcProgressRequest {
                    job_id: id.clone(),
                    ..Default::default()
                },
                key,
            ))
            .await),
    ));
    out.push((
        "GetPvcProgress",
        c(client
            .get_pvc_progress(with_key(
                pb::GetPvcProgressRequest {
                    id: "5f431ef6a7690b60975f6664".into(),
                },
                key,
            ))
            .await),
    ));
    out.push((
        "WatchJob",
        c(client
            .watch_job(with_key(
                pb::WatchJobRequest {
                    id: id.clone(),
                    resume_token: String::new(),
                },
                key,
            ))
            .await),
    ));
    out.push((
        "WatchJobs",
        c(client
            .watch_jobs(with_key(pb::WatchJobsRequest::default(), key))
            .await),
    ));
    out.push((
        "CancelJob",
        c(client
            .cancel_job(with_key(pb::CancelJobRequest { id: id.clone() }, key))
            .await),
    ));
    out.push((
        "DeleteJob",
        c(client
            .delete_job(with_key(
                pb::DeleteJobRequest {
                    id,
                    etag: String::new(),
                },
                key,
            ))
            .await),
    ));
    out
}

#[tokio::test]
async fn every_role_may_call_exactly_its_rpcs_and_bad_keys_none() {
    let (app, keys) = app_with_keys().await;
    let admin = keys
        .iter()
        .find(|(r, _)| *r == Role::Admin)
        .map(|(_, k)| k.clone())
        .expect("admin");
    let mut client = app.client();
    for (role, key) in keys
        .iter()
        .map(|(r, k)| (Some(*r), Some(k.as_str())))
        .chain([
            (None, None),
            (None, Some("jt_0000_nope")),
            (None, Some("garbage")),
        ])
    {
        // A fresh RUNNING job each round, made by the admin, so cancel and delete have work.
        let running = client
            .create_job(with_key(
                pb::CreateJobRequest {
                    job: Some(job(JobType::K8sCopy, JobState::Running)),
                },
                Some(&admin),
            ))
            .await
            .expect("admin creates")
            .into_inner();
        for (rpc, code) in every_rpc(&mut client, key, &running).await {
            let allowed = match (role, rpc) {
                (None, _) => false,
                (
                    Some(_),
                    "GetJob" | "ListJobs" | "ListPvcProgress" | "GetPvcProgress" | "WatchJob"
                    | "WatchJobs",
                ) => true,
                (Some(r), "CancelJob") => matches!(r, Role::Operator | Role::Admin),
                (Some(r), "CreateJob" | "UpdateJob" | "ReportPvcProgress") => {
                    matches!(r, Role::Executor | Role::Admin)
                }
                (Some(r), "DeleteJob") => r == Role::Admin,
                _ => unreachable!(),
            };
            let expected = match (role, allowed) {
                (None, _) => vec![Code::Unauthenticated],
                (Some(_), false) => vec![Code::PermissionDenied],
                // Allowed: whatever the call itself answers (a missing PVC record is NOT_FOUND,
                // a job cancelled or deleted earlier in the round refuses an update).
                (Some(_), true) => vec![Code::Ok, Code::NotFound, Code::FailedPrecondition],
            };
            assert!(expected.contains(&code), "{role:?} {rpc}: {code:?}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn rest_answers_401_and_403_in_the_envelope_and_writes_nothing() {
    let (app, keys) = app_with_keys().await;
    let key = |role: Role| {
        keys.iter()
            .find(|(r, _)| *r == role)
            .map(|(_, k)| format!("Bearer {k}"))
            .expect("key")
    };
    let admin = key(Role::Admin);
    let mut client = app.client();
    let running = client
        .create_job(with_key(
            pb::CreateJobRequest {
                job: Some(job(JobType::K8sCopy, JobState::Running)),
            },
            Some(admin.trim_start_matches("Bearer ")),
        ))
        .await
        .expect("create")
        .into_inner();
    let list = "/api/v1/jobs";
    let item = format!("/api/v1/jobs/{}", running.id);
    let cancel = format!("/api/v1/jobs/{}/action/cancel", running.id);
    for target in [
        list.to_string(),
        item.clone(),
        "/api/v1/kubepvcprogress".into(),
    ] {
        request(app.addr, "GET", &target, &[], b"").await.error(401);
        request(
            app.addr,
            "GET",
            &target,
            &[("Authorization", "Bearer jt_00_00")],
            b"",
        )
        .await
        .error(401);
        let ok = request(
            app.addr,
            "GET",
            &target,
            &[("Authorization", &key(Role::Viewer))],
            b"",
        )
        .await;
        assert_eq!(ok.status, 200, "{target}");
    }
    let message = request(
        app.addr,
        "POST",
        &cancel,
        &[("Authorization", &key(Role::Viewer))],
        b"",
    )
    .await
    .error(403);
    assert!(message.contains("viewer"), "{message}");
    request(
        app.addr,
        "POST",
        &cancel,
        &[("Authorization", &key(Role::Executor))],
        b"",
    )
    .await
    .error(403);
    request(app.addr, "POST", &cancel, &[], b"")
        .await
        .error(401);
    let stored = request(app.addr, "GET", &item, &[("Authorization", &admin)], b"")
        .await
        .json();
    assert_eq!(stored["state"], "RUNNING", "nothing was written");
    let done = request(
        app.addr,
        "POST",
        &cancel,
        &[("Authorization", &key(Role::Operator))],
        b"",
    )
    .await;
    assert_eq!(done.status, 200);
    let line = done.json()["activity"]
        .as_array()
        .expect("activity")
        .last()
        .expect("line")
        .as_str()
        .expect("text")
        .to_string();
    assert!(
        line.contains("key \"operator\""),
        "the activity names the key: {line}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_and_its_open_stream_ends() {
    let (app, keys) = app_with_keys().await;
    let (_, viewer) = keys
        .iter()
        .find(|(r, _)| *r == Role::Viewer)
        .expect("viewer");
    let mut client = app.client();
    let mut stream = client
        .watch_jobs(with_key(pb::WatchJobsRequest::default(), Some(viewer)))
        .await
        .expect("watch")
        .into_inner();
    let synced = stream.message().await.expect("event").expect("synced");
    assert_eq!(synced.r#type, pb::JobEventType::Synced as i32);
    let id = viewer.split('_').nth(1).expect("id").to_string();
    let store = Store::open(&app.database).await.expect("store");
    assert!(store.revoke_key(&id, 2).await.expect("revoke"));
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Code::Ok,
                Err(s) => return s.code(),
            }
        }
    })
    .await
    .expect("the stream ends within 5 s");
    assert_eq!(ended, Code::Unauthenticated);
    let refused = client
        .list_jobs(with_key(pb::ListJobsRequest::default(), Some(viewer)))
        .await;
    assert_eq!(refused.expect_err("revoked").code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn a_server_for_other_machines_refuses_to_start_without_keys() {
    let db = test_db().await;
    let mut config = jobtrack::config::Config::for_database(&db.url);
    config.listen = "0.0.0.0:0".into();
    let refused = jobtrack::startup::Application::build(config.clone()).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains("--insecure-no-auth"), "{message}");
    config.insecure_no_auth = true;
    let app = jobtrack::startup::Application::build(config)
        .await
        .expect("starts when told");
    drop(app);
}

#[tokio::test]
async fn a_key_over_its_limits_is_refused_while_other_keys_carry_on() {
    let (app, keys) = app_with_keys_and(|c| {
        c.key_limits = jobtrack::auth::Limits {
            rate: 2.0,
            burst: 5.0,
            max_streams: 2,
        }
    })
    .await;
    let key = |role: Role| {
        keys.iter()
            .find(|(r, _)| *r == role)
            .map(|(_, k)| k.clone())
            .expect("key")
    };
    let (noisy, quiet) = (key(Role::Viewer), key(Role::Operator));
    let mut client = app.client();
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(c(client
            .list_jobs(with_key(pb::ListJobsRequest::default(), Some(&noisy)))
            .await));
    }
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    assert!(
        codes.iter().filter(|c| **c == Code::Ok).count() <= 6,
        "{codes:?}"
    );
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
    let mut reopened = false;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if open(&mut client).await.is_ok() {
            reopened = true;
            break;
        }
    }
    assert!(reopened, "a closed stream gives its slot back");
    // The server is healthy for everyone else.
    let health = request(
        app.addr,
        "GET",
        "/api/v1/jobs",
        &[("Authorization", &format!("Bearer {}", key(Role::Admin)))],
        b"",
    )
    .await;
    assert_eq!(health.status, 200);
    app.stop().await;
}
