//! The management API (`/api/v1`): runs and their audit timelines, decisions on them, the
//! playbooks and plugins in use. Every operation is described in `openapi.json`, which also
//! declares the role it needs ([`crate::access`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runner::{RunEvent, RunState, StepRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::access::Caller;
use crate::app::{ApiError, AppState};
use crate::error::Error;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// Runs looked at for one page when filtering by status (which needs each run's journal).
const MAX_SCANNED: usize = 5_000;

/// A run as lists show it.
#[derive(Debug, Serialize)]
pub(crate) struct RunSummary {
    pub run_id: String,
    pub playbook: String,
    pub trigger: String,
    pub status: &'static str,
    pub accepted_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub error: Option<String>,
    pub dead_letter: Option<String>,
    pub recoveries: u32,
}

impl RunSummary {
    fn new(record: &store::RunRecord, events: &[RunEvent]) -> (RunSummary, Option<RunState>) {
        let state = RunState::from_events(events);
        let cancelled = RunEvent::cancelled_by(events).map(|by| format!("cancelled by {by}"));
        let status = match (&state, &cancelled) {
            (Some(state), _) => state.status.as_str(),
            (None, Some(_)) => "cancelled",
            (None, None) if record.dead.is_some() => "failed",
            (None, None) => "queued",
        };
        let summary = RunSummary {
            run_id: record.run_id.clone(),
            playbook: record.playbook.clone(),
            trigger: record.trigger.clone(),
            status,
            accepted_at: record.accepted_at,
            started_at: state.as_ref().map(|state| state.started_at),
            finished_at: state.as_ref().and_then(|state| state.finished_at).or(
                // A run cancelled while queued ended at its cancellation.
                cancelled
                    .as_ref()
                    .and_then(|_| events.last().map(RunEvent::at)),
            ),
            error: state
                .as_ref()
                .and_then(|state| state.error.clone())
                .or(cancelled),
            dead_letter: record.dead.clone(),
            recoveries: state.as_ref().map_or(0, |state| state.recoveries),
        };
        (summary, state)
    }
}

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

const STATUSES: [&str; 6] = [
    "queued",
    "running",
    "waiting_for_approval",
    "succeeded",
    "failed",
    "cancelled",
];

pub(crate) async fn list_runs(
    State(state): State<AppState>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|error| bad_request(error.body_text()))?;
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(bad_request(format!(
            "status `{status}` is not one of {}",
            STATUSES.join(", ")
        )));
    }
    let limit = page_limit(query.limit)?;
    let mut store_query = store::RunQuery {
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
        limit: if query.status.is_some() { 100 } else { limit },
    };
    let mut runs = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    'pages: loop {
        let page = state
            .store
            .list_runs(&store_query)
            .await
            .map_err(unavailable)?;
        let full = page.len() == store_query.limit;
        for record in &page {
            scanned += 1;
            let events = state
                .store
                .events(&record.run_id)
                .await
                .map_err(unavailable)?;
            let (summary, _) = RunSummary::new(record, &events);
            let position = format!("{}:{}", record.accepted_at, record.run_id);
            if query
                .status
                .as_deref()
                .is_none_or(|wanted| wanted == summary.status)
            {
                runs.push(summary);
            }
            if runs.len() == limit || scanned >= MAX_SCANNED {
                // More may follow: the next page starts after this run.
                next = Some(position);
                break 'pages;
            }
        }
        match page.last() {
            Some(last) if full => {
                store_query.after = Some((last.accepted_at, last.run_id.clone()));
            }
            _ => break,
        }
    }
    Ok(Json(json!({ "runs": runs, "next": next })))
}

/// A step as the run detail shows it.
#[derive(Debug, Serialize)]
struct StepDetail {
    id: String,
    #[serde(flatten)]
    record: StepRecord,
    duration_ms: Option<u64>,
}

pub(crate) async fn run(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (record, events) = load_run(&state, &run_id).await?;
    let (summary, run_state) = RunSummary::new(&record, &events);
    let mut detail = serde_json::to_value(&summary).map_err(internal)?;
    let catalog = state.playbooks.current();
    let steps: Vec<StepDetail> = match &run_state {
        Some(run_state) => {
            // In the playbook's order when it is loaded, else by id.
            let mut ids: Vec<&String> = run_state.steps.keys().collect();
            if let Some(playbook) = catalog.playbook(&record.playbook) {
                let position = |id: &str| {
                    playbook
                        .steps
                        .iter()
                        .chain(&playbook.handlers)
                        .position(|step| step.id.as_str() == id)
                        .unwrap_or(usize::MAX)
                };
                ids.sort_by_key(|id| position(id));
            }
            ids.into_iter()
                .filter_map(|id| {
                    let step = run_state.steps.get(id)?;
                    Some(StepDetail {
                        id: id.clone(),
                        duration_ms: step
                            .started_at
                            .zip(step.finished_at)
                            .map(|(start, end)| end.saturating_sub(start)),
                        record: step.clone(),
                    })
                })
                .collect()
        }
        None => Vec::new(),
    };
    let extra = json!({
        "event": record.event,
        "incident": run_state.as_ref().map(|s| serde_json::Value::Object(s.incident.clone())).unwrap_or(json!({})),
        "outputs": run_state.as_ref().and_then(|s| s.outputs.clone()),
        "steps": steps,
    });
    if let (Some(detail), Some(extra)) = (detail.as_object_mut(), extra.as_object()) {
        detail.extend(extra.clone());
    }
    Ok(Json(detail))
}

/// A run's audit records with the state of their hash chain.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub run_id: String,
    pub chain: ChainState,
    pub records: Vec<TimelineRecord>,
}

#[derive(Debug, Serialize)]
pub struct ChainState {
    pub intact: bool,
    pub records: usize,
    pub broken: Option<Broken>,
}

#[derive(Debug, Serialize)]
pub struct Broken {
    pub position: usize,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct TimelineRecord {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    /// The event as stored (`null` if it is not JSON: it was tampered with).
    pub event: serde_json::Value,
}

/// A run's timeline, or `None` when the run has no journal.
pub async fn timeline(store: &dyn store::Store, run_id: &str) -> Result<Option<Timeline>, Error> {
    let records = store.audit_records(run_id).await?;
    if records.is_empty() {
        return Ok(None);
    }
    let broken = store::audit::verify(run_id, &records).err();
    Ok(Some(Timeline {
        run_id: run_id.to_owned(),
        chain: ChainState {
            intact: broken.is_none(),
            records: records.len(),
            broken: broken.map(|broken| Broken {
                position: broken.position,
                reason: broken.reason,
            }),
        },
        records: records
            .into_iter()
            .map(|record| TimelineRecord {
                seq: record.seq,
                event: serde_json::from_str(&record.event).unwrap_or(serde_json::Value::Null),
                prev: record.prev,
                hash: record.hash,
            })
            .collect(),
    }))
}

pub(crate) async fn run_timeline(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<Timeline>, ApiError> {
    timeline(state.store.as_ref(), &run_id)
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

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Reason { reason } = optional_body(&body)?;
    load_run(&state, &run_id).await?;
    crate::cancel(state.store.as_ref(), &run_id, &caller.name, reason)
        .await
        .map_err(refused)?;
    summary_response(&state, &run_id, StatusCode::OK).await
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    load_run(&state, &run_id).await?;
    crate::resume_failed(state.store.as_ref(), &run_id, &caller.name)
        .await
        .map_err(refused)?;
    summary_response(&state, &run_id, StatusCode::ACCEPTED).await
}

pub(crate) async fn approve(
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

pub(crate) async fn deny(
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
    crate::decide(state.store.as_ref(), run_id, step, decision)
        .await
        .map_err(refused)?;
    summary_response(state, run_id, StatusCode::ACCEPTED).await
}

#[derive(Debug, Serialize)]
struct StepRef {
    id: String,
    uses: String,
}

pub(crate) async fn playbooks(State(state): State<AppState>) -> Json<serde_json::Value> {
    let catalog = state.playbooks.current();
    let steps = |steps: &[playbook::Step]| -> Vec<StepRef> {
        steps
            .iter()
            .map(|step| StepRef {
                id: step.id.to_string(),
                uses: step.uses.to_string(),
            })
            .collect()
    };
    let playbooks: Vec<serde_json::Value> = catalog
        .playbooks()
        .map(|playbook| {
            json!({
                "name": playbook.name,
                "description": playbook.description,
                "version": playbook.version,
                "tags": playbook.tags,
                "trigger": {
                    "webhook": playbook.trigger.webhook,
                    "auth": playbook.trigger.auth,
                    "public": playbook.trigger.public,
                },
                "secrets": playbook.secrets,
                "steps": steps(&playbook.steps),
                "handlers": steps(&playbook.handlers),
            })
        })
        .collect();
    Json(json!({ "playbooks": playbooks }))
}

pub(crate) async fn validate(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > playbook::MAX_PLAYBOOK_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "playbooks are limited to {} bytes",
                playbook::MAX_PLAYBOOK_BYTES
            ),
        ));
    }
    let text = String::from_utf8_lossy(&body);
    let (name, problems) = match playbook::compile(&text) {
        Ok(compiled) => {
            let problems: Vec<serde_json::Value> =
                crate::plugin_problems(&compiled, state.executor.plugins.as_ref())
                    .into_iter()
                    .map(|message| {
                        json!({
                            "code": "plugin-not-loaded", "message": message,
                            "line": 1, "column": 1, "hint": null,
                        })
                    })
                    .collect();
            (Some(compiled.name), problems)
        }
        Err(diagnostics) => (
            None,
            diagnostics
                .iter()
                .map(|diagnostic| {
                    json!({
                        "code": diagnostic.code,
                        "message": diagnostic.message,
                        "line": diagnostic.position.line,
                        "column": diagnostic.position.column,
                        "hint": diagnostic.hint,
                    })
                })
                .collect(),
        ),
    };
    Ok(
        Json(json!({ "valid": problems.is_empty(), "name": name, "problems": problems }))
            .into_response(),
    )
}

pub(crate) async fn reload(State(state): State<AppState>) -> Response {
    match state.reloader.reload() {
        Ok(count) => Json(json!({ "playbooks": count })).into_response(),
        Err(Error::Playbooks(problems)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "the playbooks have problems; the ones in use are kept",
                "problems": problems,
            })),
        )
            .into_response(),
        Err(error) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the playbooks could not be reloaded; the ones in use are kept: {error}"),
        )
        .into_response(),
    }
}

pub(crate) async fn plugins(State(state): State<AppState>) -> Json<serde_json::Value> {
    let manifests = state
        .executor
        .plugins
        .as_ref()
        .map(|host| host.manifests())
        .unwrap_or_default();
    Json(json!({ "plugins": manifests }))
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

/// The query of the audit endpoints: a page size and where the page starts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// A page's size: `limit`, or the default.
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    match (1..=MAX_PAGE).contains(&limit) {
        true => Ok(limit),
        false => Err(bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        ))),
    }
}

/// `GET /api/v1/audit/trail`: the global chained trail (management calls, run seals) in order.
pub(crate) async fn trail(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|error| bad_request(error.body_text()))?;
    let limit = page_limit(query.limit)?;
    let page = state
        .store
        .trail_page(query.after.as_deref(), limit)
        .await
        .map_err(page_error)?;
    let records: Vec<_> = page
        .records
        .iter()
        .map(|record| {
            json!({
                "seq": record.seq,
                "prev": record.prev,
                "hash": record.hash,
                "entry": stored_json(&record.event),
            })
        })
        .collect();
    Ok(Json(paged(records, limit, page.next)))
}

/// `GET /api/v1/audit/activity`: every run's records across runs, in the order they were stored.
pub(crate) async fn activity(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|error| bad_request(error.body_text()))?;
    let limit = page_limit(query.limit)?;
    let page = state
        .store
        .activity_page(query.after.as_deref(), limit)
        .await
        .map_err(page_error)?;
    let records: Vec<_> = page
        .records
        .iter()
        .map(|activity| {
            json!({
                "run_id": activity.run_id,
                "seq": activity.record.seq,
                "prev": activity.record.prev,
                "hash": activity.record.hash,
                "event": stored_json(&activity.record.event),
            })
        })
        .collect();
    Ok(Json(paged(records, limit, page.next)))
}

/// A page of an audit endpoint. `next` continues a read to the end (null after a short page, so
/// a reader whose own reads are recorded in the trail still reaches the end); `cursor`, the
/// position after the last record, is where a forwarder resumes later.
fn paged(
    records: Vec<serde_json::Value>,
    limit: usize,
    cursor: Option<String>,
) -> serde_json::Value {
    let next = cursor.clone().filter(|_| records.len() == limit);
    json!({"records": records, "next": next, "cursor": cursor})
}

/// A stored record as JSON; null for one that does not parse (tampered with: verification
/// names it).
fn stored_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn page_error(error: store::Error) -> ApiError {
    match error {
        store::Error::Cursor(_) => bad_request(format!("after: {error}")),
        error => unavailable(error),
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

fn bad_request(reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, reason)
}

fn no_run(run_id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("there is no run {run_id}"))
}

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "The store failed during an API call.");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store does not answer; retry later",
    )
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// A request the run's state refuses: 409 with the reason; store failures: 503.
fn refused(error: Error) -> ApiError {
    match error {
        Error::Store(error) => unavailable(error),
        Error::Run(runner::Error::Journal(error)) => unavailable(error),
        other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
    }
}
