//! The gRPC transport: `jobtrack.v1.JobService`, `AccessService` and `SubscriptionService`
//! ([`subscriptions`]) over the application layer. Each call is
//! converted, run, mapped to a status once ([`status`]), logged in one line and counted.

pub mod convert;
mod shared;
mod subscriptions;

pub use shared::{ServedCodec, SharedEvent};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

use crate::app::{App, Caller, Events};
use crate::auth::{KeyIdentity, Permission, Principal};
use crate::domain::query::PageAt;
use crate::error::{Error, ErrorKind};
use crate::interface::{Rpc, Transport};
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::access_service_server::AccessService;
use crate::pb_server::job_service_server::JobService;
use crate::watch::Frames;
use crate::watch::{EventKind, WatchEvent};
use convert::{job_to_pb, new_job_from_pb, pvc_to_pb, report_from_pb, update_from_pb};

/// The one mapping from [`Error`] to a gRPC status. Internal causes are logged, not returned.
pub fn status(error: Error) -> Status {
    let code = match error.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => {
            tracing::error!(error = %error, "internal error");
            Code::Internal
        }
    };
    Status::new(code, error.public_message())
}

pub struct GrpcJobService {
    app: App,
    metrics: Arc<Metrics>,
    /// Events lately encoded, shared by every watch stream.
    frames: Arc<Frames>,
}

impl GrpcJobService {
    pub fn new(app: App, metrics: Arc<Metrics>) -> Self {
        GrpcJobService {
            app,
            metrics,
            frames: Arc::default(),
        }
    }

    /// Runs one call: times it, logs one line with method, key, code and duration, counts it.
    async fn call<T>(
        &self,
        rpc: Rpc,
        key: Option<Arc<KeyIdentity>>,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = work.await.map_err(status);
        let elapsed = started.elapsed();
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        self.metrics.record_call(rpc, code_name(code), elapsed);
        let name = rpc.name();
        let micros = elapsed.as_micros() as u64;
        let key = key.as_deref().map(|k| k.name.as_str());
        match &result {
            Ok(_) => {
                tracing::info!(target: "jobtrack::rpc", method = name, key, code = ?code, micros, "call")
            }
            Err(s) => {
                tracing::info!(target: "jobtrack::rpc", method = name, key, code = ?code, micros, error = s.message(), "call")
            }
        }
        result.map(Response::new)
    }
}

/// A status code's name, as gRPC spells it (`NOT_FOUND`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Authenticates a request from its `authorization` metadata (a header for gRPC-web). A call
/// that arrived as gRPC-web carries [`Transport::GrpcWeb`] (see [`mark_grpc_web`]).
fn caller<T>(app: &App, request: &Request<T>) -> Result<Caller, Error> {
    let authorization = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let transport = request
        .extensions()
        .get::<Transport>()
        .copied()
        .unwrap_or(Transport::Grpc);
    app.authenticate(authorization, request.remote_addr(), transport)
}

/// Largest gRPC message accepted (4 MiB, gRPC's usual limit); larger ones get RESOURCE_EXHAUSTED.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// A request over the size limit is RESOURCE_EXHAUSTED, as gRPC specifies and the README says;
/// tonic's decoder refuses it (before any handler runs) as OUT_OF_RANGE, in a trailers-only
/// answer whose status is in the headers.
pub async fn oversized_is_resource_exhausted(
    mut response: axum::response::Response,
) -> axum::response::Response {
    let headers = response.headers();
    let decoder_refused = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .map(|m| percent_encoding::percent_decode_str(m).decode_utf8_lossy())
            .is_some_and(|m| m.starts_with("Error, decoded message length too large"));
    if decoder_refused {
        let status = Status::resource_exhausted(format!(
            "the request message is over the limit of {} bytes",
            MAX_MESSAGE_BYTES
        ));
        let (parts, ()) = status.into_http::<()>().into_parts();
        for name in ["grpc-status", "grpc-message"] {
            if let Some(value) = parts.headers.get(name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
    }
    response
}

/// Marks a request that arrives as gRPC-web, before it is translated into gRPC.
pub async fn mark_grpc_web(mut request: axum::extract::Request) -> axum::extract::Request {
    let grpc_web = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web"));
    if grpc_web {
        request.extensions_mut().insert(Transport::GrpcWeb);
    }
    request
}

/// The key of an authenticated caller, for the call's log line.
fn key_of(caller: &Result<Caller, Error>) -> Option<Arc<KeyIdentity>> {
    match caller {
        Ok(Caller {
            principal: Principal::Key(key),
            ..
        }) => Some(key.clone()),
        _ => None,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SharedEvent, Status>> + Send>>;

/// The stream's events, each encoded once for all the streams that send it.
fn event_stream(events: Events, frames: Arc<Frames>) -> EventStream {
    Box::pin(events.map(move |event| {
        event
            .map(|e| {
                SharedEvent(frames.frame(&e, |e| {
                    bytes::Bytes::from(prost::Message::encode_to_vec(&event_to_pb(e)))
                }))
            })
            .map_err(status)
    }))
}

fn event_to_pb(event: &WatchEvent) -> pb::JobEvent {
    let kind = match event.kind {
        EventKind::Snapshot => pb::JobEventType::Snapshot,
        EventKind::Synced => pb::JobEventType::Synced,
        EventKind::Created => pb::JobEventType::Created,
        EventKind::Updated => pb::JobEventType::Updated,
        EventKind::PvcUpdated => pb::JobEventType::PvcUpdated,
        EventKind::Deleted => pb::JobEventType::Deleted,
        EventKind::Heartbeat => pb::JobEventType::Heartbeat,
    };
    pb::JobEvent {
        r#type: kind as i32,
        job: event.job.as_deref().map(job_to_pb),
        pvc: event.pvc.as_deref().map(pvc_to_pb),
        resume_token: event.resume_token.clone(),
    }
}

#[tonic::async_trait]
impl JobService for GrpcJobService {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&self.app, &request);
        let job = request.into_inner().job;
        self.call(Rpc::CreateJob, key_of(&caller), async {
            let caller = caller?;
            Ok(job_to_pb(
                &self.app.create_job(&caller, new_job_from_pb(job)?).await?,
            ))
        })
        .await
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::GetJob, key_of(&caller), async {
            let caller = caller?;
            Ok(job_to_pb(&self.app.get_job(&caller, &r.id).await?))
        })
        .await
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::ListJobs, key_of(&caller), async {
            let caller = caller?;
            let page = self
                .app
                .list_jobs(
                    &caller,
                    &r.r#where,
                    &r.sort,
                    r.page_size,
                    PageAt::Token(&r.page_token),
                )
                .await?;
            Ok(pb::ListJobsResponse {
                jobs: page.items.iter().map(job_to_pb).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
                total: page.total,
            })
        })
        .await
    }

    async fn update_job(
        &self,
        request: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::UpdateJob, key_of(&caller), async {
            let caller = caller?;
            let (id, update) = update_from_pb(r.job, r.update_mask, r.append_activity)?;
            Ok(job_to_pb(
                &self.app.update_job(&caller, &id, update, &r.etag).await?,
            ))
        })
        .await
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::DeleteJob, key_of(&caller), async {
            let caller = caller?;
            self.app.delete_job(&caller, &r.id, &r.etag).await?;
            Ok(())
        })
        .await
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::CancelJob, key_of(&caller), async {
            let caller = caller?;
            Ok(job_to_pb(&self.app.cancel_job(&r.id, &caller, None).await?))
        })
        .await
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::WatchJob, key_of(&caller), async {
            let caller = caller?;
            Ok(event_stream(
                self.app.watch_job(&caller, &r.id, &r.resume_token).await?,
                self.frames.clone(),
            ))
        })
        .await
    }

    type WatchJobsStream = EventStream;

    async fn watch_jobs(
        &self,
        request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::WatchJobs, key_of(&caller), async {
            let caller = caller?;
            Ok(event_stream(
                self.app
                    .watch_jobs(&caller, &r.r#where, &r.resume_token)
                    .await?,
                self.frames.clone(),
            ))
        })
        .await
    }

    async fn report_pvc_progress(
        &self,
        request: Request<pb::ReportPvcProgressRequest>,
    ) -> Result<Response<pb::PvcProgress>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::ReportPvcProgress, key_of(&caller), async {
            let caller = caller?;
            Ok(pvc_to_pb(
                &self
                    .app
                    .report_pvc_progress(&caller, report_from_pb(r.pvc)?)
                    .await?,
            ))
        })
        .await
    }

    async fn get_pvc_progress(
        &self,
        request: Request<pb::GetPvcProgressRequest>,
    ) -> Result<Response<pb::PvcProgress>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::GetPvcProgress, key_of(&caller), async {
            let caller = caller?;
            Ok(pvc_to_pb(&self.app.get_pvc_progress(&caller, &r.id).await?))
        })
        .await
    }

    async fn list_pvc_progress(
        &self,
        request: Request<pb::ListPvcProgressRequest>,
    ) -> Result<Response<pb::ListPvcProgressResponse>, Status> {
        let caller = caller(&self.app, &request);
        let r = request.into_inner();
        self.call(Rpc::ListPvcProgress, key_of(&caller), async {
            let caller = caller?;
            let page = self
                .app
                .list_pvc_progress(
                    &caller,
                    &r.job_id,
                    &r.r#where,
                    &r.sort,
                    r.page_size,
                    PageAt::Token(&r.page_token),
                )
                .await?;
            Ok(pb::ListPvcProgressResponse {
                pvcs: page.items.iter().map(pvc_to_pb).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
                total: page.total,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl AccessService for GrpcJobService {
    async fn get_caller(
        &self,
        request: Request<pb::GetCallerRequest>,
    ) -> Result<Response<pb::Caller>, Status> {
        let caller = caller(&self.app, &request);
        self.call(Rpc::GetCaller, key_of(&caller), async {
            let access = self.app.get_caller(&caller?);
            let permissions = |list: &[Permission]| {
                list.iter()
                    .map(|p| pb::Permission {
                        name: p.as_str().to_string(),
                        description: p.describe().to_string(),
                    })
                    .collect()
            };
            let (key_id, key_name, role) = match &access.principal {
                Principal::Anyone => Default::default(),
                Principal::Key(key) => (
                    key.id.clone(),
                    key.name.clone(),
                    key.role.as_str().to_string(),
                ),
            };
            Ok(pb::Caller {
                keys_required: access.keys_required,
                key_id,
                key_name,
                role,
                allowed: permissions(&access.allowed),
                denied: permissions(&access.denied),
            })
        })
        .await
    }
}
