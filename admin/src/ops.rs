//! `/healthz`, `/readyz`, `/metrics`, and the middleware that counts requests.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// The process's Prometheus recorder, installed once (metrics are process-wide). Other
/// parts of the process (the edge, the engine) record through the same `metrics` facade,
/// so `/metrics` shows them too, once this has run.
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("rally_admin_request_duration_seconds".into()),
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
            )
            .expect("valid buckets")
            .set_buckets_for_metric(
                Matcher::Full("rally_edge_enqueue_seconds".into()),
                &[0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0],
            )
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only this one's");
        }
        handle
    })
}

/// Counts each routed request by route, method and status, and times it.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    prometheus();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("rally_admin_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("rally_admin_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// The store answers: the service can serve.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "The store is unreachable", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.inner.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready: store unreachable");
        ApiError::Unavailable
    })?;
    Ok("ready")
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus metrics", body = String)))]
pub(crate) async fn metrics() -> Response {
    let body = prometheus().render();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
