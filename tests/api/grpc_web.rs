//! gRPC-web on the same port: a real gRPC-web client (tonic-web's client layer) over HTTP/2,
//! unary and streaming; the browser tests in web/ cover HTTP/1.1. And CORS: none by default,
//! exactly the configured origins with --cors-origin.

use jobtrack::pb;
use jobtrack::pb::job_service_client::JobServiceClient;

use crate::helpers::*;
use crate::http::request;

/// A gRPC-web client of `app`: an HTTP/2-only (h2c) HTTP client under tonic-web's gRPC-web
/// client layer.
pub(crate) fn grpc_web_client(
    app: &TestApp,
) -> JobServiceClient<
    tonic_web::GrpcWebClientService<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            tonic_web::GrpcWebCall<tonic::body::Body>,
        >,
    >,
> {
    let http2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http2);
    let origin: tonic::codegen::http::Uri = format!("http://{}", app.addr).parse().expect("uri");
    JobServiceClient::with_origin(web, origin)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_over_http2_serves_unary_calls_and_streams() {
    let app = spawn_app().await;
    let mut client = grpc_web_client(&app);
    let created = client
        .create_job(pb::CreateJobRequest {
            job: Some(job(JobType::K8sCopy, JobState::Running)),
        })
        .await
        .expect("CreateJob over gRPC-web")
        .into_inner();
    let got = client
        .get_job(pb::GetJobRequest {
            id: created.id.clone(),
        })
        .await
        .expect("GetJob over gRPC-web")
        .into_inner();
    assert_eq!(got, created);
    let status = client
        .get_job(pb::GetJobRequest { id: "nope".into() })
        .await
        .expect_err("a bad id");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            id: created.id.clone(),
            resume_token: String::new(),
        })
        .await
        .expect("WatchJob over gRPC-web")
        .into_inner();
    let first = within("SNAPSHOT", stream.message())
        .await
        .expect("event")
        .expect("snapshot");
    assert_eq!(first.r#type, pb::JobEventType::Snapshot as i32);
    let synced = within("SYNCED", stream.message())
        .await
        .expect("event")
        .expect("synced");
    assert_eq!(synced.r#type, pb::JobEventType::Synced as i32);
    app.set_state(&created.id, JobState::Completed)
        .await
        .expect("complete");
    let done = within("UPDATED", stream.message())
        .await
        .expect("event")
        .expect("update");
    assert_eq!(done.job.expect("job").state, JobState::Completed as i32);
    assert!(
        within("the end of the stream", stream.message())
            .await
            .expect("the stream ends OK")
            .is_none()
    );
    app.stop().await;
}

fn preflight(origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Origin", origin.to_string()),
        ("Access-Control-Request-Method", "POST".to_string()),
        (
            "Access-Control-Request-Headers",
            "content-type,x-grpc-web,x-user-agent".to_string(),
        ),
    ]
}

async fn ask(app: &TestApp, headers: &[(&'static str, String)]) -> crate::http::Reply {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    request(
        app.addr,
        "OPTIONS",
        "/jobtrack.v1.JobService/GetJob",
        &headers,
        b"",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_by_default_and_allows_exactly_the_configured_origins() {
    let app = spawn_app().await;
    let reply = ask(&app, &preflight("http://dash.example")).await;
    assert!(reply.header("access-control-allow-origin").is_none());
    app.stop().await;

    let app = spawn_app_with(|c| c.cors_origins = vec!["http://dash.example".into()]).await;
    let reply = ask(&app, &preflight("http://dash.example")).await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://dash.example")
    );
    let allowed = reply
        .header("access-control-allow-headers")
        .expect("allowed headers")
        .to_ascii_lowercase();
    assert!(allowed.contains("x-grpc-web") && allowed.contains("content-type"));
    let other = ask(&app, &preflight("http://evil.example")).await;
    assert!(other.header("access-control-allow-origin").is_none());
    // A real call from the allowed origin exposes the gRPC status to the page.
    let rest = request(
        app.addr,
        "GET",
        "/api/v1/jobs",
        &[("Origin", "http://dash.example")],
        b"",
    )
    .await;
    assert_eq!(rest.status, 200);
    assert_eq!(
        rest.header("access-control-allow-origin"),
        Some("http://dash.example")
    );
    assert!(
        rest.header("access-control-expose-headers")
            .is_some_and(|h| h.contains("grpc-status"))
    );
    app.stop().await;
}
