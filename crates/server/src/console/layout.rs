//! The frame every page shares (navigation, who is signed in), and the small pieces pages are
//! made of: times, badges, JSON, the note after a change.

use std::time::{Duration, UNIX_EPOCH};

use axum::response::Html;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::Person;

/// The page the navigation marks as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Cases,
    Runs,
    Approvals,
    Playbooks,
    Audit,
    None,
}

/// A whole page: `body` in the console's frame.
pub(super) fn page(title: &str, person: Option<&Person>, nav: Nav, body: Markup) -> Html<String> {
    let link = |to: Nav, href: &str, label: &str| {
        html! {
            a href=(href) aria-current=[(nav == to).then_some("page")] { (label) }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Riposte" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "Riposte" }
                    @if let Some(person) = person {
                        nav {
                            (link(Nav::Cases, "/", "Cases"))
                            (link(Nav::Runs, "/runs", "Runs"))
                            (link(Nav::Approvals, "/approvals", "Approvals"))
                            (link(Nav::Playbooks, "/playbooks", "Playbooks"))
                            (link(Nav::Audit, "/audit", "Audit"))
                        }
                        div.who {
                            span { (person.caller.name) " · " (person.caller.role.as_str()) }
                            form method="post" action="/sign-out" {
                                input type="hidden" name="csrf" value=(person.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// The query of a page shown after a change (`?done=<what>`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Done {
    done: Option<String>,
}

impl Done {
    /// The note to show: fixed words, never text from the URL.
    pub(super) fn note(&self) -> Markup {
        done_note(self.done.as_deref())
    }
}

fn done_note(done: Option<&str>) -> Markup {
    let said = match done {
        Some("acknowledged") => "Acknowledged.",
        Some("moved") => "The case moved.",
        Some("severity") => "The severity changed.",
        Some("noted") => "Note added.",
        Some("approved") => "Approved: a worker resumes the run.",
        Some("denied") => "Denied: the step is skipped.",
        Some("cancelled") => "The run is cancelled.",
        Some("undoing") => "Undo asked for: a worker calls it.",
        Some("reloaded") => "Playbooks reloaded.",
        _ => return html! {},
    };
    html! { p.done role="status" { (said) } }
}

/// A time, in UTC to the second.
pub(super) fn time(at: u64) -> Markup {
    let moment = UNIX_EPOCH + Duration::from_millis(at);
    let text = humantime::format_rfc3339_seconds(moment).to_string();
    html! { time datetime=(text) { (text.replace('T', " ").replace('Z', " UTC")) } }
}

/// How long, to the second.
pub(super) fn span(millis: Option<u64>) -> Markup {
    match millis {
        Some(millis) => html! { (cases::report::span(millis)) },
        None => html! { span.muted { "—" } },
    }
}

/// A badge whose colour says what the word says (the class is one of a fixed set).
pub(super) fn badge(word: &str) -> Markup {
    let class = match word {
        "critical" | "failed" | "high" | "cancelled" | "denied" => "bad",
        "medium"
        | "waiting_for_approval"
        | "running"
        | "queued"
        | "containment"
        | "eradication" => "warn",
        "succeeded" | "low" | "closed" | "recovery" | "approved" => "good",
        _ => "neutral",
    };
    html! { span class={ "badge " (class) } { (word.replace('_', " ")) } }
}

/// Largest JSON shown in a page; the rest is cut (the API has all of it).
const MAX_JSON_CHARS: usize = 64 * 1024;

/// A JSON value, pretty, as text.
pub(super) fn json(value: &serde_json::Value) -> Markup {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    if text.len() > MAX_JSON_CHARS {
        let mut cut = MAX_JSON_CHARS;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (cut; the API has all of it)");
    }
    html! { pre.json { (text) } }
}

/// A hidden field with the session's CSRF token, for every form.
pub(super) fn csrf(person: &Person) -> Markup {
    html! { input type="hidden" name="csrf" value=(person.csrf); }
}
