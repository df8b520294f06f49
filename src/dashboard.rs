//! The live dashboard at `/`: a page and one script, built from `web/` (`scripts/build_web.sh`)
//! and embedded in the binary, so serving it needs no Node.js. The page talks to this server
//! only through gRPC-web.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../web/dist/index.html");
const APP: &str = include_str!("../web/dist/app.js");

/// `GET /` and `GET /app.js`.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP, "text/javascript; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Always revalidated: a new build of the server serves its own page at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
