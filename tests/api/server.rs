//! What a client that is not ours relies on: health, reflection (v1 and v1alpha), metrics.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_job_service() {
    let app = spawn_app().await;
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    for service in ["", "jobtrack.v1.JobService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services_and_serve_their_descriptors() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app().await;
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let requests = [
        v1::ServerReflectionRequest {
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
            ..Default::default()
        },
        v1::ServerReflectionRequest {
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "jobtrack.v1.JobService".into(),
                ),
            ),
            ..Default::default()
        },
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("v1")
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = answers
        .message()
        .await
        .expect("answer")
        .and_then(|a| a.message_response)
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "jobtrack.v1.JobService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answers
            .message()
            .await
            .expect("answer")
            .and_then(|a| a.message_response)
    else {
        panic!("expected descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
        ..Default::default()
    };
    let mut answers = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha")
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers
            .message()
            .await
            .expect("answer")
            .and_then(|a| a.message_response)
    else {
        panic!("expected a service list");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "jobtrack.v1.JobService")
    );
    app.stop().await;
}

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

#[tokio::test]
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
