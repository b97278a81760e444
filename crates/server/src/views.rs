//! What the API and the console both show: runs as lists show them, a run in detail, the
//! approvals inbox. One place reads the store for them, so the JSON and the pages agree.

use futures::{StreamExt, TryStreamExt};
use runner::{RunEvent, RunState, StepRecord};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::error::Error;

/// Runs looked at for one page when filtering by status (which needs each run's journal).
pub const MAX_SCANNED: usize = 5_000;
/// Journals read at once for a list: a shared store answers them in one round trip's time.
const READ_AHEAD: usize = 16;

/// The states a run can be in, as lists filter them.
pub const RUN_STATUSES: [&str; 6] = [
    "queued",
    "running",
    "waiting_for_approval",
    "succeeded",
    "failed",
    "cancelled",
];

/// A run as lists show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
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
    pub fn new(record: &store::RunRecord, events: &[RunEvent]) -> (RunSummary, Option<RunState>) {
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

/// Which runs to list: the store's query, and a status only the journals can tell.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub query: store::RunQuery,
    pub status: Option<String>,
}

/// A page of runs, newest first, and where the next one starts (`accepted_at:run_id`).
#[derive(Debug, Serialize)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    pub next: Option<String>,
}

/// Runs matching `filter`, at most `filter.query.limit`. Filtering by status reads journals:
/// at most [`MAX_SCANNED`] runs are looked at for one page.
pub async fn list_runs(store: &dyn store::Store, filter: RunFilter) -> Result<RunPage, Error> {
    let limit = filter.query.limit;
    let mut query = store::RunQuery {
        limit: if filter.status.is_some() { 100 } else { limit },
        ..filter.query
    };
    let mut runs = Vec::new();
    let mut scanned = 0;
    loop {
        let page = store.list_runs(&query).await?;
        let full = page.len() == query.limit;
        let run_ids: Vec<String> = page.iter().map(|record| record.run_id.clone()).collect();
        let journals: Vec<Vec<RunEvent>> = futures::stream::iter(run_ids)
            .map(|run_id| async move { store.events(&run_id).await })
            .buffered(READ_AHEAD)
            .try_collect()
            .await?;
        for (record, events) in page.iter().zip(&journals) {
            scanned += 1;
            let (summary, _) = RunSummary::new(record, events);
            if filter
                .status
                .as_deref()
                .is_none_or(|wanted| wanted == summary.status)
            {
                runs.push(summary);
            }
            if runs.len() == limit || scanned >= MAX_SCANNED {
                // More may follow: the next page starts after this run.
                let next = Some(format!("{}:{}", record.accepted_at, record.run_id));
                return Ok(RunPage { runs, next });
            }
        }
        match page.last() {
            Some(last) if full => query.after = Some((last.accepted_at, last.run_id.clone())),
            _ => return Ok(RunPage { runs, next: None }),
        }
    }
}

/// A step as the run detail shows it.
#[derive(Debug, Serialize)]
pub struct StepDetail {
    pub id: String,
    #[serde(flatten)]
    pub record: StepRecord,
    pub duration_ms: Option<u64>,
}

/// A run in detail: its summary, its event, its steps in the playbook's order.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub event: serde_json::Value,
    pub incident: serde_json::Value,
    pub outputs: Option<serde_json::Value>,
    pub steps: Vec<StepDetail>,
    /// The case its alert joined.
    pub case: Option<cases::CaseId>,
}

/// The run, if it exists.
pub async fn run_detail(
    store: &dyn store::Store,
    catalog: &Catalog,
    run_id: &str,
) -> Result<Option<(RunDetail, Vec<RunEvent>)>, Error> {
    let Some(record) = store.run(run_id).await? else {
        return Ok(None);
    };
    let events = store.events(run_id).await?;
    let (summary, state) = RunSummary::new(&record, &events);
    let steps = match &state {
        Some(state) => {
            // In the playbook's order when it is loaded, else by id.
            let mut ids: Vec<&String> = state.steps.keys().collect();
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
                    let step = state.steps.get(id)?;
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
    let detail = RunDetail {
        summary,
        event: record.event,
        incident: state.as_ref().map_or(serde_json::json!({}), |state| {
            serde_json::Value::Object(state.incident.clone())
        }),
        outputs: state.as_ref().and_then(|state| state.outputs.clone()),
        steps,
        case: store.case_of_run(run_id).await?,
    };
    Ok(Some((detail, events)))
}

/// A step waiting for a person, as the inbox shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalItem {
    pub run_id: String,
    pub step: String,
    pub playbook: String,
    pub approvers: Vec<String>,
    pub message: Option<String>,
    pub requested_at: u64,
    pub deadline: u64,
    pub case: Option<cases::CaseId>,
}

/// The steps waiting for approval, soonest deadline first.
pub async fn approvals(store: &dyn store::Store, limit: usize) -> Result<Vec<ApprovalItem>, Error> {
    let pending = store.pending_approvals(limit).await?;
    let run_ids: Vec<String> = pending.iter().map(|item| item.run_id.clone()).collect();
    let reads: Vec<(Vec<RunEvent>, Option<cases::CaseId>)> = futures::stream::iter(run_ids)
        .map(|run_id| async move {
            let events = store.events(&run_id).await?;
            let case = store.case_of_run(&run_id).await?;
            Ok::<_, Error>((events, case))
        })
        .buffered(READ_AHEAD)
        .try_collect()
        .await?;
    let mut items = Vec::new();
    for (pending, (events, case)) in pending.into_iter().zip(reads) {
        let Some(state) = RunState::from_events(&events) else {
            continue;
        };
        let Some(approval) = state
            .step(&pending.step)
            .and_then(|step| step.approval.as_ref())
            .filter(|approval| approval.decision.is_none())
        else {
            continue;
        };
        let message = events.iter().rev().find_map(|event| match event {
            RunEvent::ApprovalRequested { step, message, .. } if *step == pending.step => {
                message.clone()
            }
            _ => None,
        });
        items.push(ApprovalItem {
            case,
            playbook: state.playbook.clone(),
            approvers: approval.approvers.clone(),
            message,
            requested_at: approval.requested_at,
            deadline: approval.deadline,
            run_id: pending.run_id,
            step: pending.step,
        });
    }
    Ok(items)
}
