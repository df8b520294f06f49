//! Watching over plain HTTP: `GET /api/v1/jobs/<id>?watch=1` (WatchJob) and
//! `GET /api/v1/jobs?watch=1[&where=…]` (WatchJobs) as Server-Sent Events, through the same
//! application methods as gRPC, so every guarantee of the watch holds here too.
//!
//! Each event is `id:` its resume token, `event:` its type in lower case, and `data:` one line
//! of JSON, `{"type":"UPDATED","job":<the REST job item>,"pvc":<the REST kubepvcprogress item>}`.
//! A client resumes with the standard `Last-Event-ID` header (what `EventSource` sends when it
//! reconnects) or the `resume_token` parameter; the header wins, being the newer. Errors before
//! the stream are the REST envelope with its status; a stream the server must end ends with
//! `event: error` carrying the envelope. `projection` narrows the items (and shows extensions
//! such as `stalled_since`) as on the REST lists; without it the frames are rendered once for
//! every stream sending them.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;

use super::params::ListParams;
use super::render::{self, Context, Projection};
use super::{ApiError, ApiResult, Rest};
use crate::app::{Caller, Events};
use crate::error::Error;
use crate::watch::{EventKind, Frames, WatchEvent};

/// How long an `EventSource` waits before it reconnects (the `retry:` hint), in milliseconds.
const RETRY_MS: u32 = 2000;

/// The parameters a watch takes.
const WATCH_JOBS: [&str; 4] = ["watch", "where", "resume_token", "projection"];
const WATCH_JOB: [&str; 3] = ["watch", "resume_token", "projection"];

/// `GET /api/v1/jobs?watch=1`: every job matching `where`.
pub(super) async fn watch_jobs(
    rest: &Rest,
    caller: &Caller,
    params: &ListParams,
    headers: &HeaderMap,
) -> ApiResult {
    params.only(&WATCH_JOBS, "a watch of the jobs")?;
    let token = resume_token(params, headers)?;
    let projection = projection(params)?;
    let events = rest.app.watch_jobs(caller, &params.where_, &token).await?;
    Ok(stream(events, rest.frames.clone(), projection))
}

/// `GET /api/v1/jobs/<id>?watch=1`: one job, until it ends.
pub(super) async fn watch_job(
    rest: &Rest,
    caller: &Caller,
    id: &str,
    params: &ListParams,
    headers: &HeaderMap,
) -> ApiResult {
    params.only(&WATCH_JOB, "a watch of one job")?;
    let token = resume_token(params, headers)?;
    let projection = projection(params)?;
    let events = rest.app.watch_job(caller, id, &token).await?;
    Ok(stream(events, rest.frames.clone(), projection))
}

/// Where the watch resumes: `Last-Event-ID` if sent, else the `resume_token` parameter.
fn resume_token(params: &ListParams, headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("last-event-id") {
        Some(value) => value.to_str().map(|v| v.trim().to_string()).map_err(|_| {
            ApiError::from(Error::invalid(
                "Last-Event-ID is not text: send back the id: of an event as it was",
            ))
        }),
        None => Ok(params.resume_token.clone()),
    }
}

/// The job items' projection; `None` for every documented field (the shared frames).
fn projection(params: &ListParams) -> Result<Option<Projection>, ApiError> {
    if params.projection.trim().is_empty() {
        return Ok(None);
    }
    let projectable = render::projectable::<crate::domain::Job>();
    Ok(Some(Projection::parse(&params.projection, &projectable)?))
}

/// The response: the `retry:` hint, then one frame per event; an error ends the stream with an
/// `event: error` frame.
fn stream(events: Events, rendered: Arc<Frames>, projection: Option<Projection>) -> Response {
    let hint =
        futures_util::stream::once(async { Ok(Bytes::from(format!("retry: {RETRY_MS}\n\n"))) });
    let frames = events.scan(false, move |ended, next| {
        if *ended {
            return std::future::ready(None);
        }
        let frame = match (next, &projection) {
            (Ok(event), None) => {
                rendered.frame(&event, |e| Bytes::from(frame(e, &Projection::All)))
            }
            (Ok(event), Some(projection)) => Bytes::from(frame(&event, projection)),
            (Err(error), _) => {
                *ended = true;
                Bytes::from(error_frame(error))
            }
        };
        std::future::ready(Some(Ok::<_, Infallible>(frame)))
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) pass this one through as it comes.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (
        StatusCode::OK,
        headers,
        Body::from_stream(hint.chain(frames)),
    )
        .into_response()
}

/// The name of an event's type: `snapshot`, `synced`, `created`, `updated`, `pvc_updated`,
/// `deleted`, `heartbeat`.
fn name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Snapshot => "snapshot",
        EventKind::Synced => "synced",
        EventKind::Created => "created",
        EventKind::Updated => "updated",
        EventKind::PvcUpdated => "pvc_updated",
        EventKind::Deleted => "deleted",
        EventKind::Heartbeat => "heartbeat",
    }
}

/// One event: its token, its type, and its data as one line of JSON (serde_json escapes every
/// line break inside strings, so `data:` never spans lines).
fn frame(event: &WatchEvent, projection: &Projection) -> String {
    let mut data = serde_json::Map::new();
    data.insert("type".into(), name(event.kind).to_ascii_uppercase().into());
    if let Some(job) = &event.job {
        data.insert(
            "job".into(),
            render::job_item(job, projection, Context::Alone),
        );
    }
    if let Some(pvc) = &event.pvc {
        data.insert(
            "pvc".into(),
            render::pvc_item(pvc, &Projection::All, Context::Alone),
        );
    }
    format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        event.resume_token,
        name(event.kind),
        serde_json::Value::Object(data)
    )
}

/// The last frame of a stream the server ends: the REST envelope of why.
fn error_frame(error: Error) -> String {
    let error = ApiError::from(error);
    let envelope = json!({
        "_status": "ERR",
        "_error": {"code": error.status.as_u16(), "message": error.message},
    });
    format!("event: error\ndata: {envelope}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobState;

    #[test]
    fn a_frame_is_id_event_and_one_line_of_data() {
        let job = crate::domain::NewJob {
            id: Some(crate::domain::ObjectId::generate()),
            fields: crate::domain::JobFields {
                name: Some("line one\nline two".into()),
                ..Default::default()
            },
            state: Some(JobState::Running),
            activity: vec![],
        }
        .into_job(1_598_234_357_000_000)
        .expect("a job");
        let event = WatchEvent {
            kind: EventKind::PvcUpdated,
            job: Some(Arc::new(job)),
            pvc: None,
            resume_token: "dzEAAAAAAAAAAQ".into(),
        };
        let text = frame(&event, &Projection::All);
        let lines: Vec<&str> = text.trim_end().lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "id: dzEAAAAAAAAAAQ");
        assert_eq!(lines[1], "event: pvc_updated");
        let data: serde_json::Value =
            serde_json::from_str(lines[2].strip_prefix("data: ").expect("data")).expect("JSON");
        assert_eq!(data["type"], "PVC_UPDATED");
        assert_eq!(data["job"]["name"], "line one\nline two");
        assert!(text.ends_with("\n\n"));
    }
}
