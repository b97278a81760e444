//! `POST /hooks/{trigger}`: a SIEM's delivery, answered 202 only after
//! [`store::Store::accept`] has stored its runs and jobs. Everything before that (size, time,
//! authentication, content type, JSON, the playbooks' filters) is refused with a status and a
//! reason a SIEM can log.

use std::time::{Instant, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;

use super::error::ApiError;
use super::ingress;
use super::state::AppState;
use crate::auth;
use crate::catalog::{Catalog, TriggerAuth};

/// `POST /hooks/{trigger}`.
pub(super) async fn hook(
    State(state): State<AppState>,
    Path(trigger): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(&state, &trigger, None, &headers, body).await
}

/// `POST /hooks/{trigger}/{token}`: the token is the sender's credential (a `url-token` profile).
/// It is never logged: the span names the trigger only.
pub(super) async fn hook_with_token(
    State(state): State<AppState>,
    Path((trigger, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(&state, &trigger, Some(&token), &headers, body).await
}

#[tracing::instrument(skip_all, fields(trigger = %trigger))]
async fn receive(
    state: &AppState,
    trigger: &str,
    url_token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let catalog = state.playbooks.current();
    let known = catalog.trigger(trigger).is_some();
    let response = match deliver(state, &catalog, trigger, url_token, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    // Only configured triggers become label values: callers cannot grow the metric's series.
    let label = if known { trigger } else { "unknown" };
    state
        .metrics
        .webhook(label, response.status().as_u16(), started.elapsed());
    response
}

async fn deliver(
    state: &AppState,
    catalog: &Catalog,
    trigger: &str,
    url_token: Option<&str>,
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
        TriggerAuth::Public if url_token.is_some() => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                auth::AuthError::UnexpectedUrlToken.to_string(),
            ));
        }
        TriggerAuth::Public => ("public".to_owned(), None),
        TriggerAuth::Profile { name, profile } => {
            auth::verify_delivery(profile, url_token, headers, &body, SystemTime::now()).map_err(
                |error| {
                    tracing::info!(%error, "Webhook refused.");
                    ApiError::new(StatusCode::UNAUTHORIZED, error.to_string())
                },
            )?;
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
    // Counted once read and authenticated: slow or forged deliveries do not hold the worker back.
    let _accepting = state.api_first.accepting();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let event = ingress::parse_event(content_type, &body)
        .map_err(|error| ApiError::new(error.status(), error.to_string()))?;

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
    let received_at = state.runner.now();
    let mut runs = Vec::new();
    let mut resolutions = Vec::new();
    let mut ignored = Vec::new();
    for playbook in &target.playbooks {
        let unreadable = |error: playbook::Error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "playbook `{}` cannot read this event: {error}",
                    playbook.name
                ),
            )
        };
        let mut any = false;
        for item in playbook.split(&event).map_err(unreadable)? {
            let screening = playbook.screen(&item).map_err(unreadable)?;
            if !screening.matched {
                continue;
            }
            any = true;
            match screening.dedupe_key {
                Some(key) if screening.resolved => resolutions.push((playbook, key, item)),
                dedupe_key => runs.push(store::NewRun {
                    run_id: runner::new_run_id(),
                    playbook: playbook.name.clone(),
                    accepted: state.runner.accepted(runner::Acceptance {
                        trigger,
                        actor: &actor,
                        delivery_id: delivery_id.as_deref(),
                        playbook: &playbook.name,
                        event: &item,
                    }),
                    dedupe: dedupe_key
                        .zip(playbook.trigger.dedupe.as_ref())
                        .map(|(key, dedupe)| store::DedupeKey::new(key, dedupe.window)),
                    event: item,
                }),
            }
        }
        if !any {
            ignored.push(playbook.name.clone());
        }
    }
    let resolved = resolve(state, resolutions).await?;
    let delivery = store::Delivery {
        trigger: trigger.to_owned(),
        delivery_id,
        delivery_ttl: state.webhooks.delivery_ttl,
        runs,
        ignored: ignored.clone(),
        received_at,
    };
    let admissions = state.store.accept(&delivery).await.map_err(|error| {
        tracing::error!(%error, "Could not store a delivery.");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery could not be stored; retry later",
        )
    })?;
    let started = admissions.iter().filter(|a| !a.duplicate).count();
    let (status, verdict) = if started > 0 {
        tracing::info!(runs = started, "Delivery accepted.");
        (StatusCode::ACCEPTED, "accepted")
    } else if !resolved.is_empty() {
        (StatusCode::OK, "resolved")
    } else if admissions.is_empty() {
        tracing::info!(?ignored, "Delivery ignored by every playbook's filter.");
        (StatusCode::OK, "ignored")
    } else {
        (StatusCode::OK, "duplicate")
    };
    Ok((
        status,
        Json(json!({
            "status": verdict,
            "runs": admissions,
            "resolved": resolved,
            "ignored": ignored,
        })),
    )
        .into_response())
}

/// Records each resolved alert on the run its dedupe key started (through the runner, which
/// writes it to the run's journal whatever the run's state); one whose run is unknown (its window
/// passed, or it never fired here) is answered with no run id.
async fn resolve(
    state: &AppState,
    resolutions: Vec<(
        &std::sync::Arc<playbook::Playbook>,
        String,
        serde_json::Value,
    )>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let unavailable = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "Could not record a resolved alert.");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery could not be stored; retry later",
        )
    };
    let mut answers = Vec::with_capacity(resolutions.len());
    for (playbook, key, item) in resolutions {
        let run = state
            .store
            .dedupe_run(&playbook.name, &key)
            .await
            .map_err(|error| unavailable(&error))?;
        if let Some(run_id) = &run {
            let events = state
                .store
                .events(run_id)
                .await
                .map_err(|error| unavailable(&error))?;
            state
                .runner
                .resolve(run_id, &events, &key, &item)
                .await
                .map_err(|error| unavailable(&error))?;
        }
        answers.push(json!({ "playbook": playbook.name, "run_id": run }));
    }
    Ok(answers)
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
