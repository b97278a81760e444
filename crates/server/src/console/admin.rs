//! Preparation and assurance: the playbooks in use and what a reload would make of the files
//! (their validation state, with the same diagnostics as `riposte validate`), and the state of
//! the audit trail (its latest records; a full verification on request).

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use playbook::Phase;
use serde::Deserialize;

use super::cases::unavailable;
use super::layout::{self, Done, Nav, csrf, time};
use super::session::check_form;
use super::{Person, done, record, refusal, require};
use crate::http::AppState;
use crate::tokens::Role;

/// Trail records the audit page shows.
const RECENT: usize = 50;

pub(super) async fn playbooks(
    State(state): State<AppState>,
    person: Person,
    Query(query): Query<Done>,
) -> Response {
    let catalog = state.playbooks.current();
    let files = state.reloader.check_files();
    let admin = person.caller.role >= Role::Admin;
    let body = html! {
        (query.note())
        h1 { "Playbooks" }
        p.lede { "In use on this server, and what a reload would load from the playbooks folder." }
        @if admin {
            form.inline method="post" action="/playbooks/reload" {
                (csrf(&person))
                button type="submit" { "Reload from disk" }
            }
        }
        table.list {
            thead { tr { th { "Playbook" } th { "Trigger" } th { "Steps" } th { "Phases" } th { "Case" } } }
            tbody {
                @for playbook in catalog.playbooks() {
                    tr {
                        td { strong { (playbook.name) } @if let Some(description) = &playbook.description { br; span.muted { (description) } } }
                        td {
                            code { "/hooks/" (playbook.trigger.webhook) }
                            br;
                            span.muted { @match &playbook.trigger.auth { Some(auth) => { "auth " (auth) } None => { "public" } } }
                        }
                        td.num { (playbook.steps.len()) }
                        td {
                            @for phase in Phase::OF_STEPS {
                                @let steps: Vec<&str> = playbook.steps.iter().chain(&playbook.handlers).filter(|step| step.phase == Some(phase)).map(|step| step.id.as_str()).collect();
                                @if !steps.is_empty() { div { (phase.title()) ": " code { (steps.join(", ")) } } }
                            }
                        }
                        td { @if playbook.case.is_some() { "opens cases" } @else { span.muted { "no" } } }
                    }
                }
            }
        }
        h2 { "Files" }
        @match &files {
            Err(error) => { p.refusal { (error.to_string()) } }
            Ok(files) => {
                table.list {
                    thead { tr { th { "File" } th { "State" } } }
                    tbody {
                        @for file in files {
                            tr {
                                td { code { (file.file) } }
                                td {
                                    @if file.has_errors() {
                                        span.badge.bad { (file.diagnostics.len()) " problem(s)" }
                                        pre.diagnostics { (file.render()) }
                                    } @else {
                                        span.badge.good { "valid" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout::page("Playbooks", Some(&person), Nav::Playbooks, body).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}

pub(super) async fn reload(
    State(state): State<AppState>,
    person: Person,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = check_form(&person, &headers, &form.csrf) {
        return *refused;
    }
    if let Err(refused) = require(&state, &person, Role::Admin, "/playbooks/reload").await {
        return refused;
    }
    match state.reloader.reload() {
        Ok(_) => {
            record(&state, &person, "/playbooks/reload", StatusCode::SEE_OTHER).await;
            done("/playbooks", "reloaded")
        }
        Err(error) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            record(&state, &person, "/playbooks/reload", status).await;
            refusal(
                Some(&person),
                status,
                &format!("the playbooks in use are kept: {error}"),
            )
        }
    }
}

pub(super) async fn audit(State(state): State<AppState>, person: Person) -> Response {
    audit_page(&state, &person, None).await
}

pub(super) async fn verify(
    State(state): State<AppState>,
    person: Person,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = check_form(&person, &headers, &form.csrf) {
        return *refused;
    }
    let verification = match store::audit::verify_store(state.store.as_ref()).await {
        Ok(verification) => verification,
        Err(error) => return unavailable(&person, error),
    };
    record(&state, &person, "/audit/verify", StatusCode::OK).await;
    audit_page(&state, &person, Some(verification)).await
}

async fn audit_page(
    state: &AppState,
    person: &Person,
    verification: Option<store::audit::Verification>,
) -> Response {
    let recent = match state.store.trail_tail(RECENT).await {
        Ok(recent) => recent,
        Err(error) => return unavailable(person, error),
    };
    let total = recent.first().map_or(0, |record| record.seq);
    let body = html! {
        h1 { "Audit trail" }
        p.lede {
            "Every run's journal, every case's record and the global trail are SHA-256 hash chains; the trail seals each run when it ends. "
            "The trail holds " (total) " record(s)."
        }
        form.inline method="post" action="/audit/verify" {
            (csrf(person))
            button #verify type="submit" { "Verify everything now" }
        }
        @if let Some(report) = &verification {
            @if report.problems.is_empty() {
                p.done #verified role="status" {
                    "Intact: the trail's " (report.trail_records) " record(s), " (report.runs) " run(s) with "
                    (report.records) " record(s) (" (report.sealed) " sealed), " (report.cases) " case(s) with "
                    (report.case_records) " record(s)."
                }
            } @else {
                div.refusal #verified role="alert" {
                    p { strong { "BROKEN" } ": " (report.problems.len()) " problem(s)." }
                    ul { @for problem in &report.problems { li { (problem.to_string()) } } }
                }
            }
        }
        h2 { "Latest records" }
        table.list {
            thead { tr { th { "#" } th { "When" } th { "What" } th { "Hash" } } }
            tbody {
                @for record in &recent {
                    @let entry = serde_json::from_str::<store::TrailEntry>(&record.event).ok();
                    tr {
                        td.num { (record.seq) }
                        td { @if let Some(entry) = &entry { (time(entry_at(entry))) } }
                        td {
                            @match &entry {
                                Some(store::TrailEntry::ApiCall { actor, role, method, path, status, .. }) => {
                                    (actor) " (" (role) ") " code { (method) " " (path) } " → " (status)
                                }
                                Some(store::TrailEntry::RunSealed { run_id, status, records, .. }) => {
                                    "run " a href={ "/runs/" (run_id) } { code { (super::cases::short(run_id)) } } " sealed: " (status) ", " (records) " record(s)"
                                }
                                None => { span.bad { "unreadable record" } }
                            }
                        }
                        td { code.hash { (record.hash.get(..16).unwrap_or(&record.hash)) "…" } }
                    }
                }
            }
        }
    };
    layout::page("Audit", Some(person), Nav::Audit, body).into_response()
}

fn entry_at(entry: &store::TrailEntry) -> u64 {
    match entry {
        store::TrailEntry::ApiCall { at, .. } | store::TrailEntry::RunSealed { at, .. } => *at,
    }
}
