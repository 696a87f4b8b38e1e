//! The HTTP face (axum): DICOMweb STOW-RS, the JSON study API, the worklist (JSON and HTML),
//! health and metrics. Handlers validate and admit; parsing and file writes run on the
//! blocking pool. Every error is a JSON `{"error": ...}` with the status of whose fault it is
//! (4xx the request's, 5xx ours); nothing is logged with a patient identifier.

mod page;
mod stow;
mod studies;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::App;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, for 503 (queue full) and 507 (disk full).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            retry_after: matches!(status, 503 | 507).then_some(RETRY_AFTER_S),
        }
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::new(404, format!("{what} not found"))
    }
}

/// What a refused client is told to wait.
pub const RETRY_AFTER_S: u32 = 30;

impl From<crate::ingest::IngestError> for ApiError {
    fn from(e: crate::ingest::IngestError) -> Self {
        ApiError::new(e.http_status(), e.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!("{e}");
        ApiError::new(500, "the job store failed; see the service log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Run blocking work (parsing, fsync) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(500, "internal error while handling the request"))?
}

/// The router with every route, the body limit, authentication and error counting.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.cfg.limits.max_body_bytes;
    let protected = Router::new()
        .route("/", get(page::worklist_page))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/dicomweb/studies", post(stow::store_instances))
        .route("/v1/studies", post(studies::create))
        .route("/v1/studies/{id}", get(studies::status))
        .route("/v1/studies/{id}/clinical", put(studies::put_clinical))
        .route("/v1/studies/{id}/sr", get(studies::sr))
        .route("/v1/studies/{id}/overlay", get(studies::overlays))
        .route("/v1/studies/{id}/overlay/{n}", get(studies::overlay))
        .route(
            "/v1/studies/{id}/overlay/{n}/png",
            get(studies::overlay_png),
        )
        .route("/v1/worklist", get(studies::worklist))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            count_errors,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn count_errors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    if r.status().is_client_error() || r.status().is_server_error() {
        app.metrics.http_rejected.inc();
    }
    r
}

/// Compare in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if app.tokens.is_empty() {
        return next.run(req).await;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if app.tokens.iter().any(|k| same(k.as_bytes(), t.as_bytes())) => {
            next.run(req).await
        }
        _ => {
            let mut r = ApiError::new(401, "a bearer token is required (Authorization: Bearer …)")
                .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.readiness()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(why)) => {
            tracing::warn!("not ready: {why}");
            ApiError::new(503, "not ready: the job store is not writable").into_response()
        }
        Err(_) => ApiError::new(503, "not ready").into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    if let Ok(Ok(d)) = tokio::task::spawn_blocking(move || a.store.queue_depth()).await {
        app.metrics.queue_depth.set(d as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
