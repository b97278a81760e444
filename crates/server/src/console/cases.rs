//! The cases pages: the list (open first, filtered by phase, severity and playbook), a case
//! (phase bar, alerts and runs, actions, observables, notes, timeline), what responders do to a
//! case, and the report downloads.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cases::{Case, Change, JoinReason, Phase, Severity};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Done, Nav, badge, csrf, span, time};
use super::session::check_form;
use super::{Person, done, record, refusal, require};
use crate::http::AppState;
use crate::tokens::Role;

const PAGE: usize = 50;

#[derive(Debug, Default, Deserialize)]
pub(super) struct CaseFilter {
    phase: Option<String>,
    severity: Option<String>,
    playbook: Option<String>,
    page: Option<usize>,
}

fn empty_as_none(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

pub(super) async fn list(
    State(state): State<AppState>,
    person: Person,
    Query(filter): Query<CaseFilter>,
) -> Response {
    let phase = empty_as_none(filter.phase).and_then(|text| Phase::parse(&text));
    let severity = empty_as_none(filter.severity).and_then(|text| Severity::parse(&text));
    let playbook = empty_as_none(filter.playbook);
    let page = filter.page.unwrap_or(0);
    let query = store::CaseQuery {
        phase,
        severity,
        playbook: playbook.clone(),
        offset: page * PAGE,
        limit: PAGE + 1,
    };
    let (found, counts) =
        match tokio::try_join!(state.store.list_cases(&query), state.store.case_counts()) {
            Ok(found) => found,
            Err(error) => return unavailable(&person, error),
        };
    let more = found.len() > PAGE;
    let catalog = state.playbooks.current();
    let open: u64 = counts
        .iter()
        .filter(|(phase, _)| **phase != Phase::Closed)
        .map(|(_, count)| count)
        .sum();
    let link = |page: usize| {
        let mut query = vec![format!("page={page}")];
        if let Some(phase) = phase {
            query.push(format!("phase={phase}"));
        }
        if let Some(severity) = severity {
            query.push(format!("severity={severity}"));
        }
        if let Some(playbook) = &playbook {
            query.push(format!("playbook={}", super::urlencode(playbook)));
        }
        format!("/?{}", query.join("&"))
    };
    let body = html! {
        h1 { "Cases" }
        p.lede { (open) " open · " (counts.get(&Phase::Closed).copied().unwrap_or(0)) " closed" }
        form.filters method="get" action="/" {
            label { "Phase "
                select name="phase" {
                    option value="" { "any" }
                    @for each in Phase::ALL {
                        option value=(each.as_str()) selected[phase == Some(each)] {
                            (each.title()) " (" (counts.get(&each).copied().unwrap_or(0)) ")"
                        }
                    }
                }
            }
            label { "Severity "
                select name="severity" {
                    option value="" { "any" }
                    @for each in Severity::ALL {
                        option value=(each.as_str()) selected[severity == Some(each)] { (each.as_str()) }
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
            button type="submit" { "Filter" }
        }
        div #cases data-live {
            @if found.is_empty() {
                p.muted { "No case matches. Cases open when an alert arrives for a playbook with a " code { "case:" } " block." }
            } @else {
                table.list {
                    thead { tr { th { "#" } th { "Title" } th { "Severity" } th { "Phase" } th { "Playbooks" } th.num { "Alerts" } th.num { "Observables" } th { "Updated" } th { "Acknowledged" } } }
                    tbody {
                        @for case in found.iter().take(PAGE) {
                            tr {
                                td { a href={ "/cases/" (case.id) } { (case.id) } }
                                td { a href={ "/cases/" (case.id) } { (case.title) } }
                                td { (badge(case.severity.as_str())) }
                                td { (badge(case.phase.as_str())) }
                                td { (case.playbooks.join(", ")) }
                                td.num { (case.alerts) }
                                td.num { (case.observables) }
                                td { (time(case.updated_at)) }
                                td { @if case.acknowledged_at.is_some() { "yes" } @else { span.muted { "not yet" } } }
                            }
                        }
                    }
                }
            }
        }
        nav.pager {
            @if page > 0 { a href=(link(page - 1)) { "← Newer" } }
            @if more { a href=(link(page + 1)) { "Older →" } }
        }
    };
    layout::page("Cases", Some(&person), Nav::Cases, body).into_response()
}

pub(super) async fn detail(
    State(state): State<AppState>,
    person: Person,
    Path(case): Path<String>,
    Query(query): Query<Done>,
) -> Response {
    let Ok(id) = crate::http::case_id(&case) else {
        return refusal(
            Some(&person),
            StatusCode::NOT_FOUND,
            "there is no such case",
        );
    };
    let report = match state.desk.report(id).await {
        Ok(Some(report)) => report,
        Ok(None) => {
            return refusal(
                Some(&person),
                StatusCode::NOT_FOUND,
                &format!("there is no case {id}"),
            );
        }
        Err(error) => return unavailable(&person, error),
    };
    let case = &report.case;
    let responder = person.caller.role >= Role::Responder;
    let body = html! {
        (query.note())
        div #summary data-live {
            h1 { "Case " (case.id) ": " (case.title) }
            p.meta {
                (badge(case.severity.as_str())) " " (badge(case.phase.as_str()))
                " · opened " (time(case.opened_at)) " by " (case.opened_by)
                " · key " code { (case.key) }
            }
            (phase_bar(case))
            dl.durations {
                dt { "Time to acknowledge" } dd { (span(report.durations.to_acknowledge_ms)) @if let Some(ack) = &case.acknowledged { " by " (ack.by) } }
                dt { "Time to contain" } dd { (span(report.durations.to_contain_ms)) }
                dt { "Time to recover" } dd { (span(report.durations.to_recover_ms)) }
                dt { "Time to close" } dd { (span(report.durations.to_close_ms)) }
            }
        }
        @if responder {
            section.actions {
                @if case.acknowledged.is_none() {
                    form method="post" action={ "/cases/" (case.id) "/acknowledge" } {
                        (csrf(&person))
                        button #acknowledge type="submit" { "Acknowledge" }
                    }
                }
                form method="post" action={ "/cases/" (case.id) "/phase" } {
                    (csrf(&person))
                    label { "Move to "
                        select name="phase" {
                            @for phase in Phase::ALL {
                                option value=(phase.as_str()) selected[phase == case.phase] { (phase.title()) }
                            }
                        }
                    }
                    input type="text" name="reason" placeholder="why (optional)" maxlength="10000";
                    button #move type="submit" data-confirm="Move the case?" { "Move" }
                }
                form method="post" action={ "/cases/" (case.id) "/severity" } {
                    (csrf(&person))
                    label { "Severity "
                        select name="severity" {
                            @for severity in Severity::ALL {
                                option value=(severity.as_str()) selected[severity == case.severity] { (severity.as_str()) }
                            }
                        }
                    }
                    button type="submit" { "Set" }
                }
            }
        }
        p.downloads {
            "Post-incident report: "
            a #report-md href={ "/cases/" (case.id) "/report.md" } download { "Markdown" }
            " · "
            a href={ "/cases/" (case.id) "/report.json" } download { "JSON" }
            " · case chain " (chain(&report.chain))
        }
        section #alerts data-live {
            h2 { "Alerts and runs (" (case.alerts.len()) ")" }
            table.list {
                thead { tr { th { "Run" } th { "Playbook" } th { "Joined" } th { "Why" } th { "Status" } } }
                tbody {
                    @for alert in &case.alerts {
                        @let status = report.runs.iter().find(|run| run.run_id == alert.run_id).map_or("queued", |run| run.status.as_str());
                        tr {
                            td { a.run href={ "/runs/" (alert.run_id) } { code { (short(&alert.run_id)) } } }
                            td { (alert.playbook) }
                            td { (time(alert.joined_at)) }
                            td { (why(&alert.reason)) }
                            td.status { (badge(status)) }
                        }
                    }
                }
            }
        }
        section #actions data-live {
            h2 { "Actions" }
            @if case.actions.is_empty() {
                p.muted { "No step with a phase has succeeded yet." }
            } @else {
                table.list {
                    thead { tr { th { "When" } th { "Phase" } th { "Step" } th { "Action" } th { "Run" } } }
                    tbody {
                        @for action in &case.actions {
                            tr {
                                td { (time(action.at)) }
                                td { (badge(action.phase.as_str())) }
                                td { code { (action.step) } }
                                td { code { (action.uses) } }
                                td { a href={ "/runs/" (action.run_id) } { code { (short(&action.run_id)) } } }
                            }
                        }
                    }
                }
            }
        }
        section #observables data-live {
            h2 { "Observables (" (case.observables.len()) ")" }
            @if case.observables.is_empty() {
                p.muted { "None found yet." }
            } @else {
                table.list {
                    thead { tr { th { "Type (OCSF)" } th { "Value" } th { "First seen" } th { "Where" } } }
                    tbody {
                        @for sighting in &case.observables {
                            tr {
                                td { (sighting.observable.kind) " (" (sighting.observable.kind.ocsf_id()) ")" }
                                td { code { (sighting.observable.value) } }
                                td { (time(sighting.first_seen)) }
                                td {
                                    @match &sighting.step {
                                        Some(step) => { "output of " code { (step) } }
                                        None => { "the alert" }
                                    }
                                    " in run " a href={ "/runs/" (sighting.run_id) } { code { (short(&sighting.run_id)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.notes {
            h2 { "Notes" }
            div #notes data-live {
                @if case.notes.is_empty() { p.muted { "No notes yet." } }
                @for note in &case.notes {
                    article.note { header { (note.by) " · " (time(note.at)) } p { (note.text) } }
                }
            }
            @if responder {
                form method="post" action={ "/cases/" (case.id) "/notes" } {
                    (csrf(&person))
                    textarea #note name="text" rows="3" maxlength="10000" required placeholder="What you found, what you did, what is next" {}
                    button type="submit" { "Add note" }
                }
            }
        }
        section #timeline data-live {
            h2 { "Timeline" }
            table.list.timeline {
                thead { tr { th { "When" } th { "Where" } th { "Who" } th { "What" } } }
                tbody {
                    @for moment in &report.timeline {
                        tr {
                            td { (time(moment.at)) }
                            td {
                                @if moment.source == "case" { "case" }
                                @else { a href={ "/runs/" (moment.source) } { code { (short(&moment.source)) } } }
                            }
                            td { (moment.by.as_deref().unwrap_or("")) }
                            td { (moment.what) }
                        }
                    }
                }
            }
        }
    };
    layout::page(&format!("Case {id}"), Some(&person), Nav::Cases, body).into_response()
}

/// The phases in order, the case's own marked, the ones it went through before it struck.
fn phase_bar(case: &Case) -> Markup {
    html! {
        ol.phasebar aria-label="Phase" {
            @for phase in Phase::ALL {
                @let class = if phase == case.phase { "current" } else if phase < case.phase { "past" } else { "" };
                li class=(class) aria-current=[(phase == case.phase).then_some("step")] { (phase.title()) }
            }
        }
    }
}

fn why(reason: &JoinReason) -> Markup {
    match reason {
        JoinReason::Opened => html! { "opened the case" },
        JoinReason::Key { key } => html! { "same key " code { (key) } },
        JoinReason::Observable { observable } => {
            html! { "shared " (observable.kind) " " code { (observable.value) } }
        }
        JoinReason::Called { by_run } => {
            html! { "called by run " a href={ "/runs/" (by_run) } { code { (short(by_run)) } } }
        }
    }
}

fn chain(chain: &cases::report::Chain) -> Markup {
    match &chain.broken {
        None => html! { span.good { "intact (" (chain.records) " records)" } },
        Some(reason) => html! { strong.bad { "BROKEN: " (reason) } },
    }
}

/// The first part of a run id: enough to tell runs apart in a table.
pub(super) fn short(run_id: &str) -> &str {
    run_id.get(..13).unwrap_or(run_id)
}

pub(super) fn unavailable(person: &Person, error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "The store failed while rendering a console page.");
    refusal(
        Some(person),
        StatusCode::SERVICE_UNAVAILABLE,
        "the store does not answer; retry later",
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct PhaseForm {
    csrf: String,
    phase: String,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SeverityForm {
    csrf: String,
    severity: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct NoteForm {
    csrf: String,
    text: String,
}

pub(super) async fn acknowledge(
    State(state): State<AppState>,
    person: Person,
    Path(case): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let action = CaseAction {
        case: &case,
        path: "acknowledge",
        done: "acknowledged",
        change: Some(Change::Acknowledge),
    };
    change(&state, &person, &headers, &form.csrf, action).await
}

pub(super) async fn move_phase(
    State(state): State<AppState>,
    person: Person,
    Path(case): Path<String>,
    headers: HeaderMap,
    Form(form): Form<PhaseForm>,
) -> Response {
    let action = CaseAction {
        case: &case,
        path: "phase",
        done: "moved",
        change: Phase::parse(&form.phase).map(|to| Change::Move {
            to,
            reason: form.reason,
        }),
    };
    change(&state, &person, &headers, &form.csrf, action).await
}

pub(super) async fn set_severity(
    State(state): State<AppState>,
    person: Person,
    Path(case): Path<String>,
    headers: HeaderMap,
    Form(form): Form<SeverityForm>,
) -> Response {
    let action = CaseAction {
        case: &case,
        path: "severity",
        done: "severity",
        change: Severity::parse(&form.severity).map(Change::Severity),
    };
    change(&state, &person, &headers, &form.csrf, action).await
}

pub(super) async fn add_note(
    State(state): State<AppState>,
    person: Person,
    Path(case): Path<String>,
    headers: HeaderMap,
    Form(form): Form<NoteForm>,
) -> Response {
    let action = CaseAction {
        case: &case,
        path: "notes",
        done: "noted",
        change: Some(Change::Note(form.text)),
    };
    change(&state, &person, &headers, &form.csrf, action).await
}

/// What a form asks of a case.
struct CaseAction<'a> {
    case: &'a str,
    /// The form's path under the case.
    path: &'static str,
    /// The word for the page shown after it.
    done: &'static str,
    /// `None` when the form named no valid phase or severity.
    change: Option<Change>,
}

/// A responder's change to a case, from a form of their session; recorded in the trail.
async fn change(
    state: &AppState,
    person: &Person,
    headers: &HeaderMap,
    csrf: &str,
    action: CaseAction<'_>,
) -> Response {
    if let Err(refused) = check_form(person, headers, csrf) {
        return *refused;
    }
    let path = format!("/cases/{}/{}", action.case, action.path);
    if let Err(refused) = require(state, person, Role::Responder, &path).await {
        return refused;
    }
    let Ok(id) = crate::http::case_id(action.case) else {
        return refusal(Some(person), StatusCode::NOT_FOUND, "there is no such case");
    };
    let Some(change) = action.change else {
        return refusal(
            Some(person),
            StatusCode::BAD_REQUEST,
            "that is not a phase or severity",
        );
    };
    let outcome = state
        .control
        .change_case(&state.playbooks.current(), id, change, &person.caller.name)
        .await;
    let status = match &outcome {
        Ok(_) => StatusCode::SEE_OTHER,
        Err(crate::Error::NotFound(_)) => StatusCode::NOT_FOUND,
        Err(crate::Error::Invalid(_)) => StatusCode::BAD_REQUEST,
        Err(crate::Error::Conflict(_)) => StatusCode::CONFLICT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    record(state, person, &path, status).await;
    match outcome {
        Ok(_) => done(&format!("/cases/{id}"), action.done),
        Err(error) if status == StatusCode::SERVICE_UNAVAILABLE => unavailable(person, error),
        Err(error) => refusal(Some(person), status, &error.to_string()),
    }
}

pub(super) async fn report_markdown(
    State(state): State<AppState>,
    person: Person,
    Path(case): Path<String>,
) -> Response {
    report(&state, &person, &case, true).await
}

pub(super) async fn report_json(
    State(state): State<AppState>,
    person: Person,
    Path(case): Path<String>,
) -> Response {
    report(&state, &person, &case, false).await
}

async fn report(state: &AppState, person: &Person, case: &str, markdown: bool) -> Response {
    let Ok(id) = crate::http::case_id(case) else {
        return refusal(Some(person), StatusCode::NOT_FOUND, "there is no such case");
    };
    let report = match state.desk.report(id).await {
        Ok(Some(report)) => report,
        Ok(None) => {
            return refusal(
                Some(person),
                StatusCode::NOT_FOUND,
                &format!("there is no case {id}"),
            );
        }
        Err(error) => return unavailable(person, error),
    };
    let (body, kind, extension) = match markdown {
        true => (report.markdown(), "text/markdown; charset=utf-8", "md"),
        false => (
            serde_json::to_string_pretty(&report).unwrap_or_default(),
            "application/json",
            "json",
        ),
    };
    (
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"case-{id}-report.{extension}\""),
            ),
        ],
        body,
    )
        .into_response()
}
