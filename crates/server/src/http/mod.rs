//! The HTTP side: webhooks (`POST /hooks/{trigger}`, [`webhooks`]), the management API
//! (`/api/v1`: [`runs`], [`cases`], [`audit`], [`playbooks`], guarded by [`access`]), `/metrics`,
//! `/openapi.json` and the health endpoints, on a listener with slow-client timeouts
//! ([`listener`]).

mod access;
mod audit;
mod cases;
mod error;
mod ingress;
mod listener;
mod openapi;
mod playbooks;
mod runs;
mod slack;
mod state;
mod webhooks;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

pub use access::Caller;
pub(crate) use access::record_call;
pub(crate) use cases::case_id;
pub use error::ApiError;
pub use ingress::{IngressError, MAX_JSON_DEPTH, parse_event};
pub(crate) use listener::serve;
pub use openapi::{OPENAPI, Permissions};
pub(crate) use runs::decide_as;
pub use state::AppState;

/// The router of `riposte serve`.
pub fn app(state: AppState) -> Router {
    let managed = Router::new()
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{run_id}", get(runs::detail))
        .route("/api/v1/runs/{run_id}/timeline", get(runs::timeline))
        .route("/api/v1/runs/{run_id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{run_id}/resume", post(runs::resume))
        .route("/api/v1/runs/{run_id}/undo", post(runs::undo))
        .route(
            "/api/v1/runs/{run_id}/steps/{step}/approve",
            post(runs::approve),
        )
        .route("/api/v1/runs/{run_id}/steps/{step}/deny", post(runs::deny))
        .route("/api/v1/cases", get(cases::list))
        .route("/api/v1/cases/{case}", get(cases::detail))
        .route("/api/v1/cases/{case}/report", get(cases::report))
        .route("/api/v1/cases/{case}/acknowledge", post(cases::acknowledge))
        .route("/api/v1/cases/{case}/phase", post(cases::move_phase))
        .route("/api/v1/cases/{case}/severity", post(cases::set_severity))
        .route("/api/v1/cases/{case}/notes", post(cases::add_note))
        .route("/api/v1/approvals", get(cases::approvals))
        .route("/api/v1/playbooks", get(playbooks::list))
        .route("/api/v1/playbooks/validate", post(playbooks::validate))
        .route("/api/v1/playbooks/reload", post(playbooks::reload))
        .route("/api/v1/plugins", get(playbooks::plugins))
        .route("/api/v1/audit/trail", get(audit::trail))
        .route("/api/v1/audit/activity", get(audit::activity))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ));
    let cors = (!state.cors_origins.is_empty()).then(|| {
        tower_http::cors::CorsLayer::new()
            .allow_origin(state.cors_origins.clone())
            .allow_methods([http::Method::GET, http::Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
    });
    let router = Router::new()
        .route("/hooks/{trigger}", post(webhooks::hook))
        .route("/hooks/{trigger}/{token}", post(webhooks::hook_with_token))
        .route("/slack/interactions", post(slack::interactions))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .merge(managed)
        .merge(crate::console::routes())
        .fallback(not_found)
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// What a worker process answers on `ops_listen`: liveness, readiness and its own metrics
/// (same token rule as the API's `/metrics`), so an orchestrator can probe and scrape workers.
pub fn ops(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /openapi.json")
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let depth = state.store.queue_depth().await.ok();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(depth),
    )
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.store.ping().await.map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store does not answer: {error}"),
        )
    })?;
    Ok(Json(json!({ "status": "ready" })))
}
