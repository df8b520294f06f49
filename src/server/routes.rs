//! What the one port serves: gRPC (JobService, AccessService, grpc.health.v1, reflection v1 and
//! v1alpha) with gRPC-web in front of every service, the REST gateway, `/metrics`, the dashboard,
//! and CORS for the configured origins.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::app::App;
use crate::error::{Error, Result};
use crate::grpc::{GrpcJobService, MAX_MESSAGE_BYTES};
use crate::metrics::{self, Metrics, Scrape};
use crate::pb::access_service_server::AccessServiceServer;
use crate::pb::subscription_service_server::SubscriptionServiceServer;
use crate::pb_server::job_service_server::JobServiceServer;
use crate::store::Store;
use crate::watch::JobHub;

/// What `/metrics` reads at scrape time besides the counters.
#[derive(Clone)]
pub(super) struct Observed {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub hub: JobHub,
}

/// Every route of the server, and the health reporter its database monitor updates.
pub(super) async fn router(
    app: App,
    observed: Observed,
    cors_origins: &[String],
) -> Result<(axum::Router, HealthReporter)> {
    let metrics = observed.metrics.clone();
    let (health, grpc) = grpc(app.clone(), metrics.clone()).await?;
    let router = grpc
        .route("/metrics", get(move || scrape(observed.clone())))
        .merge(crate::rest::router(app, metrics))
        .merge(crate::dashboard::router())
        .fallback(crate::rest::not_found);
    let router = match cors(cors_origins)? {
        Some(cors) => router.layer(cors),
        None => router,
    };
    let router = router.layer(axum::middleware::from_fn(crate::telemetry::traced));
    Ok((router, health))
}

/// The gRPC services, gRPC-web (HTTP/1.1 and HTTP/2) for browsers translated in front of each.
async fn grpc(app: App, metrics: Arc<Metrics>) -> Result<(HealthReporter, axum::Router)> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<JobServiceServer<GrpcJobService>>()
        .await;
    health
        .set_serving::<AccessServiceServer<GrpcJobService>>()
        .await;
    health
        .set_serving::<SubscriptionServiceServer<GrpcJobService>>()
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection v1: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection v1alpha: {e}")))?;

    let access_service =
        AccessServiceServer::new(GrpcJobService::new(app.clone(), metrics.clone()));
    let subscription_service =
        SubscriptionServiceServer::new(GrpcJobService::new(app.clone(), metrics.clone()));
    let job_service = JobServiceServer::new(GrpcJobService::new(app, metrics))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let router = tonic::service::Routes::new(job_service)
        .add_service(access_service)
        .add_service(subscription_service)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        .layer(axum::middleware::map_response(
            crate::grpc::oversized_is_resource_exhausted,
        ))
        .layer(tonic_web::GrpcWebLayer::new())
        // Outermost: sees the request before gRPC-web is translated, to mark it as such.
        .layer(axum::middleware::map_request(crate::grpc::mark_grpc_web));
    Ok((health, router))
}

/// `GET /metrics`: the exposition, with the jobs by state, the lagging watchers and the head
/// read now. A database that cannot be read is a 503, never a page of zeros.
async fn scrape(observed: Observed) -> Response {
    let jobs_by_state = match observed.store.count_jobs_by_state().await {
        Ok(states) => states,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the database cannot be read: {}\n", e.public_message()),
            )
                .into_response();
        }
    };
    let page = observed.metrics.exposition(Scrape {
        jobs_by_state: &jobs_by_state,
        lagging: observed.hub.lagging(),
        head: observed.store.head(),
    });
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], page).into_response()
}

/// CORS for browsers on other origins: gRPC-web and REST calls, with the headers gRPC-web needs.
/// `None` (no origins configured): no CORS headers, so only same-origin pages can call.
fn cors(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>> {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o)
                    .map_err(|_| Error::invalid(format!("--cors-origin {o:?} is not an origin")))
            })
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    let headers = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "connect-protocol-version",
        "authorization",
        "if-none-match",
        "if-match",
    ];
    let exposed = [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "etag",
        "x-total-count",
        "link",
    ];
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::HEAD, Method::OPTIONS])
            .allow_headers(headers.map(HeaderName::from_static))
            .expose_headers(exposed.map(HeaderName::from_static))
            .max_age(Duration::from_secs(3600)),
    ))
}
