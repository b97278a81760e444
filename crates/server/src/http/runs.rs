//! Runs over HTTP: listed, shown, their timelines, and what people do to them (cancel, resume,
//! approve, deny, undo) through [`crate::control::RunControl`]. Every operation is described in
//! `openapi.json`, which also declares the role it needs ([`super::access`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runner::{RunEvent, RunState};
use serde::Deserialize;

use super::access::Caller;
use super::error::{ApiError, bad_request, no_run, refused, unavailable};
use super::state::AppState;
use crate::timeline::Timeline;
use crate::views::{RUN_STATUSES, RunDetail, RunFilter, RunPage, RunSummary};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    playbook: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunPage>, ApiError> {
    let Query(query) = query.map_err(|error| bad_request(error.body_text()))?;
    if let Some(status) = &query.status
        && !RUN_STATUSES.contains(&status.as_str())
    {
        return Err(bad_request(format!(
            "status `{status}` is not one of {}",
            RUN_STATUSES.join(", ")
        )));
    }
    let filter = RunFilter {
        query: store::RunQuery {
            playbook: query.playbook.clone(),
            since: query
                .since
                .as_deref()
                .map(|t| time("since", t))
                .transpose()?,
            until: query
                .until
                .as_deref()
                .map(|t| time("until", t))
                .transpose()?,
            after: query.after.as_deref().map(cursor).transpose()?,
            limit: page_limit(query.limit)?,
        },
        status: query.status,
    };
    let page = crate::views::list_runs(state.store.as_ref(), filter)
        .await
        .map_err(unavailable)?;
    Ok(Json(page))
}

pub(super) async fn detail(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let catalog = state.playbooks.current();
    crate::views::run_detail(state.store.as_ref(), &catalog, &run_id)
        .await
        .map_err(unavailable)?
        .map(|(detail, _)| Json(detail))
        .ok_or_else(|| no_run(&run_id))
}

pub(super) async fn timeline(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<Timeline>, ApiError> {
    crate::timeline::timeline(state.store.as_ref(), &run_id)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| no_run(&run_id))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Comment {
    comment: Option<String>,
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Reason { reason } = optional_body(&body)?;
    load_run(&state, &run_id).await?;
    state
        .control
        .cancel(&run_id, &caller.name, reason)
        .await
        .map_err(refused)?;
    summary_response(&state, &run_id, StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UndoRequest {
    step: Option<String>,
}

pub(super) async fn undo(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let UndoRequest { step } = optional_body(&body)?;
    load_run(&state, &run_id).await?;
    state
        .control
        .undo(
            &state.playbooks.current(),
            &run_id,
            step.as_deref(),
            &caller.name,
        )
        .await
        .map_err(refused)?;
    summary_response(&state, &run_id, StatusCode::ACCEPTED).await
}

pub(super) async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    load_run(&state, &run_id).await?;
    state
        .control
        .resume_failed(&run_id, &caller.name)
        .await
        .map_err(refused)?;
    summary_response(&state, &run_id, StatusCode::ACCEPTED).await
}

pub(super) async fn approve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((run_id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Comment { comment } = optional_body(&body)?;
    decide(
        &state,
        &caller,
        &run_id,
        &step,
        runner::Decision::Approved {
            by: caller.name.clone(),
            comment,
        },
    )
    .await
}

pub(super) async fn deny(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((run_id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Reason { reason } = optional_body(&body)?;
    decide(
        &state,
        &caller,
        &run_id,
        &step,
        runner::Decision::Denied {
            by: caller.name.clone(),
            reason,
        },
    )
    .await
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    run_id: &str,
    step: &str,
    decision: runner::Decision,
) -> Result<Response, ApiError> {
    decide_as(state, caller, run_id, step, decision).await?;
    summary_response(state, run_id, StatusCode::ACCEPTED).await
}

/// Records `caller`'s decision on a step waiting for approval, if the step's `approvers` name
/// them (by name or group) or they are an admin. The API and the console decide through here.
pub(crate) async fn decide_as(
    state: &AppState,
    caller: &Caller,
    run_id: &str,
    step: &str,
    decision: runner::Decision,
) -> Result<(), ApiError> {
    let (_, events) = load_run(state, run_id).await?;
    let approvers = RunState::from_events(&events)
        .and_then(|run| run.step(step)?.approval.clone())
        .map(|approval| approval.approvers)
        .unwrap_or_default();
    if !approvers.is_empty() && !caller.may_decide(&approvers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "step `{step}` may be decided by {}; token `{}` is none of them (nor in their groups)",
                approvers.join(", "),
                caller.name
            ),
        ));
    }
    state
        .control
        .decide(run_id, step, decision)
        .await
        .map_err(refused)
}

async fn load_run(
    state: &AppState,
    run_id: &str,
) -> Result<(store::RunRecord, Vec<RunEvent>), ApiError> {
    let record = state
        .store
        .run(run_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| no_run(run_id))?;
    let events = state.store.events(run_id).await.map_err(unavailable)?;
    Ok((record, events))
}

async fn summary_response(
    state: &AppState,
    run_id: &str,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let (record, events) = load_run(state, run_id).await?;
    let (summary, _) = RunSummary::new(&record, &events);
    Ok((status, Json(summary)).into_response())
}

/// An optional JSON body: empty means every field is absent.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|error| bad_request(format!("the body: {error}")))
}

/// A page's size: `limit`, or the default.
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    match (1..=MAX_PAGE).contains(&limit) {
        true => Ok(limit),
        false => Err(bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        ))),
    }
}

/// A time parameter: RFC 3339 or milliseconds since the epoch.
fn time(name: &str, text: &str) -> Result<u64, ApiError> {
    if let Ok(millis) = text.parse::<u64>() {
        return Ok(millis);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_millis() as u64)
        .ok_or_else(|| {
            bad_request(format!(
                "{name}: `{text}` is neither an RFC 3339 time (2026-11-23T10:00:00Z) nor milliseconds since the epoch"
            ))
        })
}

fn cursor(text: &str) -> Result<(u64, String), ApiError> {
    text.split_once(':')
        .and_then(|(at, run_id)| Some((at.parse().ok()?, run_id.to_owned())))
        .ok_or_else(|| bad_request("after: not a cursor this API returned in `next`"))
}
