//! The REST gateway: the documented JSON of the python-eve based public API, on the same port
//! as gRPC and through the same application methods, so that no rule exists twice.
//!
//! - `GET /api/v1/jobs` — the framework's envelope (`_items`, `_links`, `_meta`);
//! - `GET /api/v1/jobs/<id>` — one job, with `ETag` / `Last-Modified` and 304s;
//! - `POST /api/v1/jobs/<id>/action/cancel` — cancel (empty body; `If-Match` honoured);
//! - `GET /api/v1/kubepvcprogress` — a bare JSON array with `X-Total-Count` and `Link` headers;
//! - `GET /api/v1/kubepvcprogress/<id>`;
//! - `GET /api-docs` — the OpenAPI 3.1 document of all of the above.
//!
//! Every error is the framework's envelope `{"_status":"ERR","_error":{"code":N,"message":..}}`,
//! mapped once from [`ErrorKind`] in [`ApiError`].

mod params;
mod render;
mod sse;

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State, rejection::PathRejection};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::Serialize;
use tonic::transport::server::TcpConnectInfo;

use crate::app::{App, Caller};
use crate::auth::{KeyIdentity, Principal};
use crate::domain::query::PageAt;
use crate::domain::{Job, ObjectId, PvcProgress};
use crate::error::{Error, ErrorKind};
use crate::interface::{Route, Transport};
use crate::metrics::Metrics;
use params::ListParams;
use render::{Context, Link, Projection};

/// Largest request body read (the one write, cancel, takes none): larger ones get 413.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3.1 document of this gateway, served at `GET /api-docs`.
const OPENAPI: &str = include_str!("openapi.json");

#[derive(Clone)]
struct Rest {
    app: App,
    /// Watch events rendered once for all the streams that send them.
    frames: Arc<crate::watch::Frames>,
}

/// The gateway's routes ([`Route::PATTERNS`]). Paths answer with or without a trailing slash,
/// as the framework's do.
pub fn router(app: App, metrics: Arc<Metrics>) -> axum::Router {
    let mut router = axum::Router::new();
    for (route, pattern) in Route::PATTERNS {
        router = router
            .route(pattern, handler(route))
            .route(&format!("{pattern}/"), handler(route));
    }
    router
        .with_state(Rest {
            app,
            frames: Arc::default(),
        })
        .layer(axum::middleware::from_fn_with_state(metrics, log_request))
}

/// What serves `route`, with its OPTIONS answer and its 405 for other methods.
fn handler(route: Route) -> MethodRouter<Rest> {
    let read = |handler: MethodRouter<Rest>| {
        handler
            .options(|| async { allow("GET, HEAD, OPTIONS") })
            .fallback(|| async { method_not_allowed("GET, HEAD, OPTIONS") })
    };
    match route {
        Route::Jobs => read(get(list_jobs)),
        Route::Job => read(get(get_job)),
        Route::Cancel => post(cancel_job)
            .options(|| async { allow("POST, OPTIONS") })
            .fallback(|| async { method_not_allowed("POST, OPTIONS") }),
        Route::PvcProgressList => read(get(list_pvcs)),
        Route::PvcProgressItem => read(get(get_pvc)),
        Route::ApiDocs => read(get(openapi)),
        Route::Other => axum::routing::any(not_found),
    }
}

/// What a request outside every route gets: the envelope's 404 (gRPC requests to an unknown
/// method keep gRPC's UNIMPLEMENTED).
pub async fn not_found(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("no such gRPC method")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no resource at {}: the API serves /api/v1/jobs, /api/v1/jobs/<id>, \
             /api/v1/jobs/<id>/action/cancel, /api/v1/kubepvcprogress, \
             /api/v1/kubepvcprogress/<id>, /api-docs, and the dashboard at /",
            crate::domain::id::truncate(request.uri().path(), 200)
        ),
    )
    .into_response()
}

/// An error in the framework's envelope.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for `Retry-After` (429).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// The one mapping from [`Error`] to an HTTP status. Internal causes are logged, not returned.
impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let retry_after = match &error {
            Error::ResourceExhausted { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let status = match error.kind() {
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
            ErrorKind::Aborted => StatusCode::PRECONDITION_FAILED,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => {
                tracing::error!(error = %error, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError {
            retry_after,
            ..ApiError::new(status, error.public_message())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: u16,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Envelope<'a> {
            _error: Inner<'a>,
            _status: &'static str,
        }
        let body = Envelope {
            _error: Inner {
                code: self.status.as_u16(),
                message: &self.message,
            },
            _status: "ERR",
        };
        let mut headers = HeaderMap::new();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §15.5.2: a 401 names the scheme the client should use.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jobtrack\""),
            );
        }
        json(self.status, &body, headers)
    }
}

type ApiResult = Result<Response, ApiError>;

fn json(status: StatusCode, body: &impl Serialize, mut headers: HeaderMap) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a response");
            return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
        }
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (status, headers, Bytes::from(bytes)).into_response()
}

fn allow(methods: &'static str) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::ALLOW, HeaderValue::from_static(methods))],
    )
        .into_response()
}

fn method_not_allowed(methods: &'static str) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this resource allows only {methods}"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(methods));
    response
}

/// Authenticates a request from its `Authorization` header: the same step as gRPC's.
fn caller(rest: &Rest, request: &Request) -> Result<Caller, ApiError> {
    caller_as(rest, request, Transport::Rest)
}

/// [`caller`], for a request served over `transport` (a watch's Server-Sent Events).
fn caller_as(rest: &Rest, request: &Request, transport: Transport) -> Result<Caller, ApiError> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let peer = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr);
    let caller = rest.app.authenticate(authorization, peer, transport)?;
    if let (Some(slot), Principal::Key(key)) =
        (request.extensions().get::<KeySlot>(), &caller.principal)
    {
        let _ = slot.0.set(key.clone());
    }
    Ok(caller)
}

/// Where [`caller`] leaves the request's key for its log line ([`log_request`]).
#[derive(Clone, Default)]
struct KeySlot(Arc<std::sync::OnceLock<Arc<KeyIdentity>>>);

/// The id of an item route. A malformed id names no item: 404, as the framework answers.
fn item_id(what: &str, path: Result<Path<String>, PathRejection>) -> Result<ObjectId, ApiError> {
    let Ok(Path(raw)) = path else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such {what}"),
        ));
    };
    ObjectId::parse(what, &raw).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
}

async fn list_jobs(State(rest): State<Rest>, request: Request) -> ApiResult {
    let params = ListParams::parse(request.uri().query())?;
    if params.watch {
        let caller = caller_as(&rest, &request, Transport::Sse)?;
        return sse::watch_jobs(&rest, &caller, &params, request.headers()).await;
    }
    let caller = caller(&rest, &request)?;
    let projection = Projection::parse(&params.projection, &render::projectable::<Job>())?;
    let page = rest
        .app
        .list_jobs(
            &caller,
            &params.where_,
            &params.sort,
            params.max_results,
            PageAt::Number(params.page),
        )
        .await?;
    let total = page.total.max(0) as u64;

    #[derive(Serialize)]
    struct Meta {
        max_results: usize,
        page: u64,
        total: u64,
    }
    #[derive(Serialize)]
    struct Envelope {
        _items: Vec<serde_json::Value>,
        _links: std::collections::BTreeMap<&'static str, Link>,
        _meta: Meta,
    }
    let links = params
        .envelope_links("jobs", page.page_size, total)
        .into_iter()
        .map(|(rel, href, title)| (rel, Link::new(href, title)))
        .collect();
    let body = Envelope {
        _items: page
            .items
            .iter()
            .map(|job| render::job_item(job, &projection, Context::InList))
            .collect(),
        _links: links,
        _meta: Meta {
            max_results: page.page_size,
            page: params.page,
            total,
        },
    };
    let headers = list_headers(
        &params,
        "jobs",
        page.page_size,
        total,
        newest(&page.items, |j| j.updated),
    );
    Ok(json(StatusCode::OK, &body, headers))
}

async fn list_pvcs(State(rest): State<Rest>, request: Request) -> ApiResult {
    let caller = caller(&rest, &request)?;
    let params = ListParams::parse(request.uri().query())?;
    let projection = Projection::parse(&params.projection, &render::projectable::<PvcProgress>())?;
    let page = rest
        .app
        .list_pvc_progress(
            &caller,
            "",
            &params.where_,
            &params.sort,
            params.max_results,
            PageAt::Number(params.page),
        )
        .await?;
    let total = page.total.max(0) as u64;
    let items: Vec<_> = page
        .items
        .iter()
        .map(|pvc| render::pvc_item(pvc, &projection, Context::InList))
        .collect();
    let headers = list_headers(
        &params,
        "kubepvcprogress",
        page.page_size,
        total,
        newest(&page.items, |p| p.updated),
    );
    Ok(json(StatusCode::OK, &items, headers))
}

fn newest<T>(items: &[T], updated: impl Fn(&T) -> i64) -> Option<i64> {
    items.iter().map(updated).max()
}

/// `X-Total-Count`, the paging `Link`s, and `Last-Modified` (the newest item's `_updated`).
fn list_headers(
    params: &ListParams,
    collection: &str,
    page_size: usize,
    total: u64,
    last_modified: Option<i64>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(total));
    let links = params.link_header(collection, page_size, total);
    if let Ok(value) = HeaderValue::from_str(&links) {
        headers.insert(header::LINK, value);
    }
    if let Some(Ok(value)) = last_modified.map(|u| HeaderValue::from_str(&render::http_date(u))) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    headers
}

async fn get_job(
    State(rest): State<Rest>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult {
    let id = item_id("job", path)?;
    let params = ListParams::parse(request.uri().query())?;
    if params.watch {
        let caller = caller_as(&rest, &request, Transport::Sse)?;
        return sse::watch_job(&rest, &caller, id.as_str(), &params, request.headers()).await;
    }
    let caller = caller(&rest, &request)?;
    let job = rest.app.get_job(&caller, id.as_str()).await?;
    let projection = item_projection(&request, &render::projectable::<Job>())?;
    Ok(item_response(
        request.headers(),
        &job.etag,
        job.updated,
        &render::job_item(&job, &projection, Context::Alone),
    ))
}

async fn get_pvc(
    State(rest): State<Rest>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult {
    let caller = caller(&rest, &request)?;
    let id = item_id("PVC progress record", path)?;
    let pvc = rest.app.get_pvc_progress(&caller, id.as_str()).await?;
    let projection = item_projection(&request, &render::projectable::<PvcProgress>())?;
    Ok(item_response(
        request.headers(),
        &pvc.etag,
        pvc.updated,
        &render::pvc_item(&pvc, &projection, Context::Alone),
    ))
}

/// The `projection` of an item request (the item routes take no other parameter).
fn item_projection(request: &Request, fields: &[&str]) -> Result<Projection, ApiError> {
    let params = ListParams::parse(request.uri().query())?;
    Ok(Projection::parse(&params.projection, fields)?)
}

/// One item with its validators; 304 with an empty body when the client's copy is current.
/// `If-None-Match` decides when present (RFC 9110); otherwise `If-Modified-Since` does.
fn item_response(request: &HeaderMap, etag: &str, updated: i64, item: &impl Serialize) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&render::http_date(updated)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    let not_modified = match request.get(header::IF_NONE_MATCH) {
        Some(value) => etag_listed(value, etag),
        None => request
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
            .is_some_and(|since| {
                let since = since
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                updated.div_euclid(1_000_000) <= since
            }),
    };
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    json(StatusCode::OK, item, headers)
}

/// Whether an `If-None-Match` value names `etag`: quoted, unquoted or weak (`W/`), in a list,
/// or `*`.
fn etag_listed(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value.split(',').map(str::trim).any(|candidate| {
        let candidate = candidate.strip_prefix("W/").unwrap_or(candidate);
        candidate == "*" || candidate.trim_matches('"') == etag
    })
}

async fn cancel_job(
    State(rest): State<Rest>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> ApiResult {
    let caller = caller(&rest, &request)?;
    let id = item_id("job", path)?;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is over {MAX_BODY_BYTES} bytes; cancel takes an empty body"
                ),
            )
        })?;
    if !matches!(body.trim_ascii(), b"" | b"{}" | b"null") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "cancel takes an empty body (or {}); send the request without one",
        ));
    }
    let etag = match parts.headers.get(header::IF_MATCH) {
        None => None,
        Some(value) => if_match(value)?,
    };
    let job: Job = rest
        .app
        .cancel_job(id.as_str(), &caller, etag.as_deref())
        .await?;
    Ok(item_response(
        &HeaderMap::new(),
        &job.etag,
        job.updated,
        &render::job_item(&job, &Projection::All, Context::Alone),
    ))
}

/// The etag an `If-Match` requires, `None` for `*`.
fn if_match(value: &HeaderValue) -> Result<Option<String>, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "If-Match must be one etag (\"<_etag>\") or *",
        )
    };
    let value = value.to_str().map_err(|_| bad())?.trim();
    if value == "*" {
        return Ok(None);
    }
    let etag = value.trim_matches('"');
    if etag.is_empty() || etag.contains([',', '"']) || value.starts_with("W/") {
        return Err(bad());
    }
    Ok(Some(etag.to_string()))
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// One log line and one metrics sample per request.
async fn log_request(
    State(metrics): State<Arc<Metrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let key = KeySlot::default();
    request.extensions_mut().insert(key.clone());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(Route::Other, |p| Route::of_pattern(p.as_str()));
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.record_request(route, status, elapsed);
    if method != Method::OPTIONS {
        tracing::info!(
            target: "jobtrack::http",
            method = %method,
            route = route.name(),
            key = key.0.get().map(|k| k.name.as_str()),
            status,
            micros = elapsed.as_micros() as u64,
            "request"
        );
    }
    response
}

/// The `data` of a webhook for `change`: `{"job": <the REST item>}`, with `"pvc"` for a PVC
/// change, exactly as `GET /api/v1/jobs/<id>` and `GET /api/v1/kubepvcprogress/<id>` show them.
pub fn webhook_data(change: &crate::domain::Change) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    data.insert(
        "job".into(),
        render::job_item(&change.job, &Projection::All, Context::Alone),
    );
    if let Some(pvc) = &change.pvc {
        data.insert(
            "pvc".into(),
            render::pvc_item(pvc, &Projection::All, Context::Alone),
        );
    }
    serde_json::Value::Object(data)
}

#[cfg(test)]
mod fuzz;
