//! The HTTP side: `POST /hooks/{trigger}`, the management API (`/api/v1`, [`crate::api`]),
//! `/metrics`, `/openapi.json` and the health endpoints.
//!
//! A delivery is answered 202 only after [`store::Store::accept`] has stored its runs and jobs;
//! everything before that (size, authentication, content type, JSON, the playbooks' filters) is
//! refused with a status and a reason a SIEM can log.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::json;

use crate::access::{Permissions, Tokens};
use crate::api;
use crate::catalog::{Playbooks, TriggerAuth};
use crate::config::{HttpConfig, WebhookConfig};
use crate::error::Error;
use crate::executor::PluginExecutor;
use crate::metrics::Metrics;
use crate::{Parts, Reloader, ingress, webhook_auth};

/// The API's description, which also declares the role each operation needs.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn store::Store>,
    pub playbooks: Arc<Playbooks>,
    pub webhooks: Arc<WebhookConfig>,
    pub http: HttpConfig,
    pub tokens: Arc<Tokens>,
    pub permissions: Arc<Permissions>,
    pub metrics: Arc<Metrics>,
    pub executor: Arc<PluginExecutor>,
    pub reloader: Reloader,
    pub cors_origins: Vec<http::HeaderValue>,
}

impl AppState {
    pub fn new(parts: &Parts) -> Result<AppState, Error> {
        let openapi: serde_json::Value = serde_json::from_str(OPENAPI)
            .map_err(|error| Error::Config(vec![format!("openapi.json is broken: {error}")]))?;
        Ok(AppState {
            store: Arc::clone(&parts.store),
            playbooks: Arc::clone(&parts.playbooks),
            webhooks: Arc::new(parts.config.webhooks.clone()),
            http: parts.config.http.clone(),
            tokens: Arc::new(Tokens::new(&parts.config.api.tokens)),
            permissions: Arc::new(Permissions::from_openapi(&openapi)),
            metrics: Arc::clone(&parts.metrics),
            executor: Arc::clone(&parts.executor),
            reloader: parts.reloader(),
            cors_origins: parts.config.api.cors_origins.clone(),
        })
    }
}

pub fn app(state: AppState) -> Router {
    let managed = Router::new()
        .route("/api/v1/runs", get(api::list_runs))
        .route("/api/v1/runs/{run_id}", get(api::run))
        .route("/api/v1/runs/{run_id}/timeline", get(api::run_timeline))
        .route("/api/v1/runs/{run_id}/cancel", post(api::cancel))
        .route("/api/v1/runs/{run_id}/resume", post(api::resume))
        .route(
            "/api/v1/runs/{run_id}/steps/{step}/approve",
            post(api::approve),
        )
        .route("/api/v1/runs/{run_id}/steps/{step}/deny", post(api::deny))
        .route("/api/v1/playbooks", get(api::playbooks))
        .route("/api/v1/playbooks/validate", post(api::validate))
        .route("/api/v1/playbooks/reload", post(api::reload))
        .route("/api/v1/plugins", get(api::plugins))
        .route("/api/v1/audit/trail", get(api::trail))
        .route("/api/v1/audit/activity", get(api::activity))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::authorize,
        ));
    let cors = (!state.cors_origins.is_empty()).then(|| {
        tower_http::cors::CorsLayer::new()
            .allow_origin(state.cors_origins.clone())
            .allow_methods([http::Method::GET, http::Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
    });
    let router = Router::new()
        .route("/hooks/{trigger}", post(hook))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .merge(managed)
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
            crate::access::authorize,
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

/// An error answer: a status and a JSON body `{"error": reason}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.reason }))).into_response()
    }
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

#[tracing::instrument(skip_all, fields(trigger = %trigger))]
async fn hook(
    State(state): State<AppState>,
    Path(trigger): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let catalog = state.playbooks.current();
    let known = catalog.trigger(&trigger).is_some();
    let response = match deliver(&state, &catalog, &trigger, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    // Only configured triggers become label values: callers cannot grow the metric's series.
    let label = if known { trigger.as_str() } else { "unknown" };
    state.metrics.webhook(label, response.status().as_u16());
    response
}

async fn deliver(
    state: &AppState,
    catalog: &crate::catalog::Catalog,
    trigger: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(target) = catalog.trigger(trigger) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no playbook listens on trigger `{trigger}`"),
        ));
    };
    let limit = state.http.body_read_timeout;
    let body = tokio::time::timeout(
        limit,
        read_limited(headers, body, state.webhooks.max_body_bytes),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {}",
                humantime::format_duration(limit)
            ),
        )
    })??;
    let (actor, signed_delivery_id) = match &target.auth {
        TriggerAuth::Public => ("public".to_owned(), None),
        TriggerAuth::Profile { name, profile } => {
            webhook_auth::verify(profile, headers, &body, SystemTime::now()).map_err(|error| {
                tracing::info!(%error, "Webhook refused.");
                ApiError::new(StatusCode::UNAUTHORIZED, error.to_string())
            })?;
            (
                format!("webhook:{name}"),
                profile.signed_delivery_id(headers, &body),
            )
        }
        TriggerAuth::Unconfigured => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "trigger `{trigger}` has no authentication configured and is not marked public, so it accepts nothing"
                ),
            ));
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let event = ingress::parse_event(content_type, &body)
        .map_err(|error| ApiError::new(error.status(), error.to_string()))?;

    let received_at = store::now_millis();
    let mut runs = Vec::new();
    let mut ignored = Vec::new();
    for playbook in &target.playbooks {
        let screening = runner::screen(playbook, &event).map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "playbook `{}` cannot read this event: {error}",
                    playbook.name
                ),
            )
        })?;
        if !screening.matched {
            ignored.push(playbook.name.clone());
            continue;
        }
        runs.push(store::NewRun {
            run_id: runner::new_run_id(),
            playbook: playbook.name.clone(),
            event: event.clone(),
            dedupe: screening
                .dedupe_key
                .zip(playbook.trigger.dedupe.as_ref())
                .map(|(key, dedupe)| store::DedupeKey {
                    key,
                    window_ms: u64::try_from(dedupe.window.as_millis()).unwrap_or(u64::MAX),
                }),
        });
    }
    // Unsigned headers never name a signed delivery: anyone who captured it could set them.
    let delivery_id = signed_delivery_id.or_else(|| {
        state
            .webhooks
            .delivery_id_headers
            .iter()
            .find_map(|name| headers.get(name))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    });
    let delivery = store::Delivery {
        trigger: trigger.to_owned(),
        delivery_id,
        delivery_ttl: state.webhooks.delivery_ttl,
        runs,
        ignored: ignored.clone(),
        received_at,
        actor,
    };
    let admissions = state.store.accept(&delivery).await.map_err(|error| {
        tracing::error!(%error, "Could not store a delivery.");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery could not be stored; retry later",
        )
    })?;
    let started = admissions.iter().filter(|a| !a.duplicate).count();
    let (status, verdict) = if admissions.is_empty() {
        tracing::info!(?ignored, "Delivery ignored by every playbook's filter.");
        (StatusCode::OK, "ignored")
    } else if started == 0 {
        (StatusCode::OK, "duplicate")
    } else {
        tracing::info!(runs = started, "Delivery accepted.");
        (StatusCode::ACCEPTED, "accepted")
    };
    Ok((
        status,
        Json(json!({ "status": verdict, "runs": admissions, "ignored": ignored })),
    )
        .into_response())
}

/// Reads the body, refusing it with 413 as soon as it grows past `max` (chunked bodies too).
async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body could not be read: {error}"),
        )),
    }
}
