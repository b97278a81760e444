//! Cases over HTTP: listed, shown, reported, and what people do to them (acknowledge, move to a
//! phase, change the severity, add a note) through [`crate::desk::CaseDesk`]; and the approvals
//! inbox. Every operation is described in `openapi.json` with the role it needs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cases::{Case, CaseId, Change, Durations, Phase, Severity};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::error::{ApiError, bad_request, refused, unavailable};
use super::runs::page_limit;
use super::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CasesQuery {
    phase: Option<String>,
    severity: Option<String>,
    playbook: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct CasePage {
    cases: Vec<cases::CaseSummary>,
    /// How many cases are in each phase, whatever the filter.
    counts: std::collections::BTreeMap<Phase, u64>,
    /// The `offset` of the next page, if there may be one.
    next: Option<usize>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<CasesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|error| bad_request(error.body_text()))?;
    let store_query = store::CaseQuery {
        phase: query.phase.as_deref().map(phase).transpose()?,
        severity: query.severity.as_deref().map(severity).transpose()?,
        playbook: query.playbook,
        offset: query.offset.unwrap_or(0),
        // One more than asked: whether there is a next page, without an empty last one.
        limit: page_limit(query.limit)? + 1,
    };
    let mut found = state
        .store
        .list_cases(&store_query)
        .await
        .map_err(unavailable)?;
    let asked = store_query.limit - 1;
    let next = (found.len() > asked).then(|| store_query.offset + asked);
    found.truncate(asked);
    let counts = state.store.case_counts().await.map_err(unavailable)?;
    Ok(Json(CasePage {
        cases: found,
        counts,
        next,
    })
    .into_response())
}

/// A case in detail: the case and how long its incident took so far.
#[derive(Debug, Serialize)]
pub(super) struct CaseDetail {
    #[serde(flatten)]
    case: Case,
    durations: Durations,
}

pub(super) async fn detail(
    State(state): State<AppState>,
    Path(case): Path<String>,
) -> Result<Json<CaseDetail>, ApiError> {
    let id = case_id(&case)?;
    let read = state
        .desk
        .read(id)
        .await
        .map_err(refused)?
        .ok_or_else(|| no_case(id))?;
    Ok(Json(CaseDetail {
        durations: read.case.durations(),
        case: read.case,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    format: Option<String>,
}

pub(super) async fn report(
    State(state): State<AppState>,
    Path(case): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|error| bad_request(error.body_text()))?;
    let id = case_id(&case)?;
    let markdown = match query.format.as_deref() {
        None | Some("json") => false,
        Some("markdown") => true,
        Some(other) => {
            return Err(bad_request(format!(
                "format `{other}` is not `json` or `markdown`"
            )));
        }
    };
    let report = state
        .desk
        .report(id)
        .await
        .map_err(refused)?
        .ok_or_else(|| no_case(id))?;
    Ok(match markdown {
        true => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.markdown(),
        )
            .into_response(),
        false => Json(report).into_response(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseRequest {
    phase: String,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeverityRequest {
    severity: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteRequest {
    text: String,
}

pub(super) async fn acknowledge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(case): Path<String>,
) -> Result<Json<Case>, ApiError> {
    change(&state, &caller, &case, Change::Acknowledge).await
}

pub(super) async fn move_phase(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(case): Path<String>,
    body: Bytes,
) -> Result<Json<Case>, ApiError> {
    let request: PhaseRequest = body_of(&body)?;
    let change_to = Change::Move {
        to: phase(&request.phase)?,
        reason: request.reason,
    };
    change(&state, &caller, &case, change_to).await
}

pub(super) async fn set_severity(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(case): Path<String>,
    body: Bytes,
) -> Result<Json<Case>, ApiError> {
    let request: SeverityRequest = body_of(&body)?;
    let change_to = Change::Severity(severity(&request.severity)?);
    change(&state, &caller, &case, change_to).await
}

pub(super) async fn add_note(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(case): Path<String>,
    body: Bytes,
) -> Result<Json<Case>, ApiError> {
    let request: NoteRequest = body_of(&body)?;
    change(&state, &caller, &case, Change::Note(request.text)).await
}

async fn change(
    state: &AppState,
    caller: &Caller,
    case: &str,
    change: Change,
) -> Result<Json<Case>, ApiError> {
    let id = case_id(case)?;
    state
        .control
        .change_case(&state.playbooks.current(), id, change, &caller.name)
        .await
        .map(Json)
        .map_err(refused)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalsQuery {
    limit: Option<usize>,
}

pub(super) async fn approvals(
    State(state): State<AppState>,
    query: Result<Query<ApprovalsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|error| bad_request(error.body_text()))?;
    let items = crate::views::approvals(state.store.as_ref(), page_limit(query.limit)?)
        .await
        .map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "approvals": items })))
}

fn body_of<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| bad_request(format!("the body: {error}")))
}

pub(crate) fn case_id(text: &str) -> Result<CaseId, ApiError> {
    // Digits only: `u64::from_str` would also take `+7`, which the OpenAPI pattern refuses.
    text.bytes()
        .all(|byte| byte.is_ascii_digit())
        .then(|| text.parse().ok())
        .flatten()
        .ok_or_else(|| bad_request(format!("`{text}` is not a case number")))
}

fn no_case(case: CaseId) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("there is no case {case}"),
    )
}

fn phase(text: &str) -> Result<Phase, ApiError> {
    Phase::parse(text).ok_or_else(|| {
        bad_request(format!(
            "phase `{text}` is not one of {}",
            Phase::ALL.map(Phase::as_str).join(", ")
        ))
    })
}

fn severity(text: &str) -> Result<Severity, ApiError> {
    Severity::parse(text).ok_or_else(|| {
        bad_request(format!(
            "severity `{text}` is not one of {}",
            Severity::ALL.map(Severity::as_str).join(", ")
        ))
    })
}
