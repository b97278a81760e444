//! The audit trail over HTTP: the global chained trail (management calls, run seals) and the
//! activity stream (every run's records across runs), a page at a time.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, bad_request, unavailable};
use super::runs::page_limit;
use super::state::AppState;

/// The query of the audit endpoints: a page size and where the page starts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /api/v1/audit/trail`: the global chained trail (management calls, run seals) in order.
pub(super) async fn trail(
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
pub(super) async fn activity(
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
