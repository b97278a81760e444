//! The runs pages: the list (filtered by state, playbook and time), a run's timeline (each step
//! with its state, attempts, duration, input and output as the journal holds them, secrets
//! redacted, and errors), the approvals inbox, and the decisions responders take there.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use runner::{Decision, RunEvent, UndoStatus};
use serde::Deserialize;

use super::cases::{short, unavailable};
use super::layout::{self, Done, Nav, badge, csrf, json, time};
use super::session::check_form;
use super::{Person, done, record, refusal, require};
use crate::http::AppState;
use crate::tokens::Role;
use crate::views::{RUN_STATUSES, RunFilter, StepDetail};

const PAGE: usize = 50;
/// The time windows the list offers, as `since` names them.
const WINDOWS: [(&str, &str, u64); 3] = [
    ("1h", "last hour", 3_600_000),
    ("24h", "last day", 86_400_000),
    ("7d", "last week", 7 * 86_400_000),
];

#[derive(Debug, Default, Deserialize)]
pub(super) struct RunsFilter {
    status: Option<String>,
    playbook: Option<String>,
    since: Option<String>,
    after: Option<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    person: Person,
    Query(filter): Query<RunsFilter>,
) -> Response {
    let status = filter
        .status
        .filter(|status| RUN_STATUSES.contains(&status.as_str()));
    let playbook = filter.playbook.filter(|name| !name.is_empty());
    let window = WINDOWS
        .iter()
        .find(|(name, _, _)| Some(*name) == filter.since.as_deref());
    let after = filter.after.as_deref().and_then(|cursor| {
        let (at, run_id) = cursor.split_once(':')?;
        Some((at.parse().ok()?, run_id.to_owned()))
    });
    let query = store::RunQuery {
        playbook: playbook.clone(),
        since: window.map(|(_, _, span)| store::now_millis().saturating_sub(*span)),
        until: None,
        after,
        limit: PAGE,
    };
    let page = match crate::views::list_runs(
        state.store.as_ref(),
        RunFilter {
            query,
            status: status.clone(),
        },
    )
    .await
    {
        Ok(page) => page,
        Err(error) => return unavailable(&person, error),
    };
    let catalog = state.playbooks.current();
    let next = page.next.as_ref().map(|next| {
        let mut query = vec![format!("after={}", super::urlencode(next))];
        for (name, value) in [
            ("status", status.as_deref()),
            ("playbook", playbook.as_deref()),
            ("since", window.map(|(name, _, _)| *name)),
        ] {
            if let Some(value) = value {
                query.push(format!("{name}={}", super::urlencode(value)));
            }
        }
        format!("/runs?{}", query.join("&"))
    });
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" {
            label { "State "
                select name="status" {
                    option value="" { "any" }
                    @for each in RUN_STATUSES {
                        option value=(each) selected[status.as_deref() == Some(each)] { (each.replace('_', " ")) }
                    }
                }
            }
            label { "Playbook "
                select name="playbook" {
                    option value="" { "any" }
                    @for each in catalog.playbooks() {
                        option value=(each.name) selected[playbook.as_deref() == Some(each.name.as_str())] { (each.name) }
                    }
                }
            }
            label { "Accepted "
                select name="since" {
                    option value="" { "any time" }
                    @for (name, label, _) in WINDOWS {
                        option value=(name) selected[window.is_some_and(|w| w.0 == name)] { (label) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        div #runs data-live {
            @if page.runs.is_empty() {
                p.muted { "No run matches." }
            } @else {
                table.list {
                    thead { tr { th { "Run" } th { "Playbook" } th { "State" } th { "Accepted" } th { "Finished" } th { "Error" } } }
                    tbody {
                        @for run in &page.runs {
                            tr {
                                td { a href={ "/runs/" (run.run_id) } { code { (short(&run.run_id)) } } }
                                td { (run.playbook) }
                                td { (badge(run.status)) }
                                td { (time(run.accepted_at)) }
                                td { @if let Some(at) = run.finished_at { (time(at)) } }
                                td.error { (run.error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            nav.pager { a href=(next) { "Older →" } }
        }
    };
    layout::page("Runs", Some(&person), Nav::Runs, body).into_response()
}

pub(super) async fn detail(
    State(state): State<AppState>,
    person: Person,
    Path(run_id): Path<String>,
    Query(query): Query<Done>,
) -> Response {
    let catalog = state.playbooks.current();
    let (run, events) =
        match crate::views::run_detail(state.store.as_ref(), &catalog, &run_id).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return refusal(Some(&person), StatusCode::NOT_FOUND, "there is no such run");
            }
            Err(error) => return unavailable(&person, error),
        };
    // Each step's input as it last started (the journal holds it with secrets redacted).
    let mut inputs: HashMap<&str, &serde_json::Value> = HashMap::new();
    for event in &events {
        if let RunEvent::StepStarted { step, input, .. } = event {
            inputs.insert(step, input);
        }
    }
    let responder = person.caller.role >= Role::Responder;
    // Steps whose effect a responder can take back now: declared `undo:`, succeeded, not undone.
    let undoable: std::collections::HashSet<&str> = catalog
        .playbook(&run.summary.playbook)
        .map(|playbook| {
            run.steps
                .iter()
                .filter(|step| {
                    playbook.step(&step.id).is_some_and(|s| s.undo.is_some())
                        && step.record.status == runner::StepStatus::Succeeded
                        && step.record.undo.as_ref().is_none_or(|undo| {
                            matches!(undo.status, UndoStatus::Scheduled | UndoStatus::Failed)
                        })
                })
                .map(|step| step.id.as_str())
                .collect()
        })
        .unwrap_or_default();
    // Steps that run another playbook (not per item), and which.
    let calls: HashMap<&str, &str> = catalog
        .playbook(&run.summary.playbook)
        .map(|playbook| {
            playbook
                .steps
                .iter()
                .filter(|step| step.foreach.is_none())
                .filter_map(|step| Some((step.id.as_str(), step.called_playbook()?)))
                .collect()
        })
        .unwrap_or_default();
    let ended = matches!(run.summary.status, "succeeded" | "failed" | "cancelled");
    let summary = &run.summary;
    let body = html! {
        (query.note())
        div #run-summary data-live {
            h1 { "Run " code { (summary.run_id) } }
            p.meta {
                span #run-status { (badge(summary.status)) }
                " · playbook " (summary.playbook) " · trigger " (summary.trigger)
                " · accepted " (time(summary.accepted_at))
                @if let Some(at) = summary.finished_at { " · ended " (time(at)) }
                @if let Some(case) = run.case { " · " a href={ "/cases/" (case) } { "case " (case) } }
            }
            @if let Some(error) = &summary.error { p.refusal { (error) } }
            @if let Some(dead) = &summary.dead_letter { p.refusal { "Given up: " (dead) } }
            // Inside the live part, so that it goes away when the run ends under the reader.
            @if responder && !ended {
                form.inline method="post" action={ "/runs/" (summary.run_id) "/cancel" } data-confirm="Cancel this run? Nothing more of it runs." {
                    (csrf(&person))
                    input type="text" name="reason" placeholder="why (optional)" maxlength="1000";
                    button.danger type="submit" { "Cancel run" }
                }
            }
        }
        section #steps data-live {
            h2 { "Steps" }
            @if run.steps.is_empty() { p.muted { "No step has started yet." } }
            @for step in &run.steps {
                article.step id={ "step-" (step.id) } {
                    header {
                        code { (step.id) } " " (badge(step.record.status.as_str()))
                        " · " (step.record.attempts) " attempt(s)"
                        @if let Some(ms) = step.duration_ms { " · " (ms) " ms" }
                    }
                    @if let Some(approval) = &step.record.approval {
                        @match &approval.decision {
                            None => (approval_forms(&person, &summary.run_id, &step.id, &approval.approvers, approval.deadline)),
                            Some(decision) => p.decision { (decided(decision)) },
                        }
                    }
                    @if let Some(error) = &step.record.error { p.refusal { (error.kind.as_str()) ": " (error.message) } }
                    (undo_part(&person, &summary.run_id, step, undoable.contains(step.id.as_str())))
                    @if let Some(callee) = calls.get(step.id.as_str()) {
                        p { "Runs playbook " code { (callee) } " as " a href={ "/runs/" (crate::calls::child_of(&summary.run_id, &step.id)) } { "its child run" } }
                    }
                    @if let Some(reason) = &step.record.skip_reason { p.muted { "Skipped: " (reason) } }
                    @if let Some(input) = inputs.get(step.id.as_str()) { details { summary { "Input" } (json(input)) } }
                    @if let Some(output) = &step.record.output { details { summary { "Output" } (json(output)) } }
                }
            }
        }
        section {
            h2 { "Alert" }
            details { summary { "The event as received" } (json(&run.event)) }
        }
        section #run-timeline data-live {
            h2 { "Timeline" }
            table.list.timeline {
                thead { tr { th { "When" } th { "Who" } th { "What" } } }
                tbody {
                    @for event in &events {
                        tr { td { (time(event.at())) } td { (event.actor().unwrap_or("")) } td { (event.describe()) } }
                    }
                }
            }
        }
    };
    layout::page("Run", Some(&person), Nav::Runs, body).into_response()
}

/// Where a step's undo stands, and the form that asks for it when the step can be undone.
fn undo_part(person: &Person, run_id: &str, step: &StepDetail, undoable: bool) -> Markup {
    html! {
        @if let Some(undo) = &step.record.undo {
            p.undo {
                @match undo.status {
                    UndoStatus::Scheduled => { "Undo scheduled for " (time(undo.due)) }
                    UndoStatus::Running => { "Being undone (attempt " (undo.attempts) ")" }
                    UndoStatus::Succeeded => { "Undone " @if let Some(at) = undo.finished_at { (time(at)) } }
                    UndoStatus::Failed => { "Undo failed" @if let Some(error) = &undo.error { ": " (error.kind.as_str()) ": " (error.message) } }
                }
                @if let Some(by) = &undo.requested_by { " · asked by " (by) } @else { " · on expiry" }
            }
        }
        @if undoable && person.caller.role >= Role::Responder {
            form.inline method="post" action={ "/runs/" (run_id) "/undo" } data-confirm={ "Undo step " (step.id) " now?" } {
                (csrf(person))
                input type="hidden" name="step" value=(step.id);
                button.danger type="submit" { "Undo " (step.id) }
            }
        }
    }
}

/// Who decided a step's approval, and what they said.
fn decided(decision: &Decision) -> Markup {
    match decision {
        Decision::Approved { by, comment } => html! {
            "Approved by " (by) @if let Some(comment) = comment { ": " q { (comment) } }
        },
        Decision::Denied { by, reason } => html! {
            "Denied by " (by) @if let Some(reason) = reason { ": " q { (reason) } }
        },
        Decision::TimedOut => html! { "Nobody decided before the deadline." },
    }
}

/// Approve and deny, for a step waiting for a decision, to those who may decide it (a
/// responder the step's `approvers` name, directly or by group, or an admin).
fn approval_forms(
    person: &Person,
    run_id: &str,
    step: &str,
    approvers: &[String],
    deadline: u64,
) -> Markup {
    let may_decide = person.caller.role >= Role::Responder
        && (approvers.is_empty() || person.caller.may_decide(approvers));
    html! {
        div.approval {
            p { "Waiting for " (approvers.join(", ")) " until " (time(deadline)) "." }
            @if may_decide {
                form.inline method="post" action={ "/runs/" (run_id) "/steps/" (step) "/approve" } {
                    (csrf(person))
                    input type="text" name="note" placeholder="comment (optional)" maxlength="1000";
                    button.approve type="submit" data-step=(step) { "Approve" }
                }
                form.inline method="post" action={ "/runs/" (run_id) "/steps/" (step) "/deny" } data-confirm="Deny this step? It is skipped." {
                    (csrf(person))
                    input type="text" name="note" placeholder="reason (optional)" maxlength="1000";
                    button.danger type="submit" { "Deny" }
                }
            } @else if person.caller.role >= Role::Responder {
                p.muted { "You (" (person.caller.name) ") are not among them." }
            }
        }
    }
}

pub(super) async fn approvals(State(state): State<AppState>, person: Person) -> Response {
    let waiting = match crate::views::approvals(state.store.as_ref(), 200).await {
        Ok(waiting) => waiting,
        Err(error) => return unavailable(&person, error),
    };
    let body = html! {
        h1 { "Approvals" }
        p.lede { "Steps waiting for a person's decision, soonest deadline first." }
        div #inbox data-live {
            @if waiting.is_empty() {
                p.muted { "Nothing is waiting for a decision." }
            }
            @for item in &waiting {
                article.waiting {
                    header {
                        a href={ "/runs/" (item.run_id) } { code { (short(&item.run_id)) } }
                        " · " (item.playbook) " · step " code { (item.step) }
                        @if let Some(case) = item.case { " · " a href={ "/cases/" (case) } { "case " (case) } }
                    }
                    @if let Some(message) = &item.message { p.message { (message) } }
                    (approval_forms(&person, &item.run_id, &item.step, &item.approvers, item.deadline))
                }
            }
        }
    };
    layout::page("Approvals", Some(&person), Nav::Approvals, body).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct NoteForm {
    csrf: String,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CancelForm {
    csrf: String,
    reason: Option<String>,
}

fn note(text: Option<String>) -> Option<String> {
    text.map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// Approve or deny (`verdict`) a step waiting for a decision.
pub(super) async fn decide(
    State(state): State<AppState>,
    person: Person,
    Path((run_id, step, verdict)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<NoteForm>,
) -> Response {
    let by = person.caller.name.clone();
    let (decision, word) = match verdict.as_str() {
        "approve" => (
            Decision::Approved {
                by,
                comment: note(form.note),
            },
            "approved",
        ),
        "deny" => (
            Decision::Denied {
                by,
                reason: note(form.note),
            },
            "denied",
        ),
        _ => {
            return refusal(
                Some(&person),
                StatusCode::NOT_FOUND,
                "there is no such page",
            );
        }
    };
    if let Err(refused) = check_form(&person, &headers, &form.csrf) {
        return *refused;
    }
    let path = format!("/runs/{run_id}/steps/{step}/{verdict}");
    if let Err(refused) = require(&state, &person, Role::Responder, &path).await {
        return refused;
    }
    let outcome = crate::http::decide_as(&state, &person.caller, &run_id, &step, decision).await;
    match outcome {
        Ok(()) => {
            record(&state, &person, &path, StatusCode::SEE_OTHER).await;
            done(&format!("/runs/{run_id}"), word)
        }
        Err(error) => {
            record(&state, &person, &path, error.status()).await;
            refusal(Some(&person), error.status(), error.reason())
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct UndoForm {
    csrf: String,
    step: String,
}

/// Undoes one step's effect (a worker calls the undo).
pub(super) async fn undo(
    State(state): State<AppState>,
    person: Person,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<UndoForm>,
) -> Response {
    if let Err(refused) = check_form(&person, &headers, &form.csrf) {
        return *refused;
    }
    let path = format!("/runs/{run_id}/undo");
    if let Err(refused) = require(&state, &person, Role::Responder, &path).await {
        return refused;
    }
    let outcome = state
        .control
        .undo(
            &state.playbooks.current(),
            &run_id,
            Some(&form.step),
            &person.caller.name,
        )
        .await;
    let status = match &outcome {
        Ok(_) => StatusCode::SEE_OTHER,
        Err(crate::Error::NotFound(_)) => StatusCode::NOT_FOUND,
        Err(crate::Error::Conflict(_)) => StatusCode::CONFLICT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    record(&state, &person, &path, status).await;
    match outcome {
        Ok(_) => done(&format!("/runs/{run_id}"), "undoing"),
        Err(error) => refusal(Some(&person), status, &error.to_string()),
    }
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    person: Person,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CancelForm>,
) -> Response {
    if let Err(refused) = check_form(&person, &headers, &form.csrf) {
        return *refused;
    }
    let path = format!("/runs/{run_id}/cancel");
    if let Err(refused) = require(&state, &person, Role::Responder, &path).await {
        return refused;
    }
    match state.store.run(&run_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return refusal(Some(&person), StatusCode::NOT_FOUND, "there is no such run"),
        Err(error) => return unavailable(&person, error),
    }
    match state
        .control
        .cancel(&run_id, &person.caller.name, note(form.reason))
        .await
    {
        Ok(()) => {
            record(&state, &person, &path, StatusCode::SEE_OTHER).await;
            done(&format!("/runs/{run_id}"), "cancelled")
        }
        Err(error) => {
            record(&state, &person, &path, StatusCode::CONFLICT).await;
            refusal(Some(&person), StatusCode::CONFLICT, &error.to_string())
        }
    }
}
