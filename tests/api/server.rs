//! What a client that is not ours relies on: health and reflection (v1 and v1alpha).

use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
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
