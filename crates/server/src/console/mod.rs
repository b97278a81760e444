//! The web console: where people on call see incidents as a whole and decide, served by
//! `riposte serve` at `/`, in the same binary as the API.
//!
//! Pages are rendered on the server with maud (HTML written as Rust; every value it interpolates
//! is escaped, and no page marks anything as pre-escaped), styled by one stylesheet and enhanced
//! by one small script ([`assets`]): it refreshes the parts of a page marked `data-live` every
//! few seconds, and asks before destructive actions. Nothing runs inline, so the
//! Content-Security-Policy allows scripts, styles and connections from this origin only.
//!
//! People sign in with an API token and get the token's role ([`session`]): viewers see,
//! responders decide approvals, cancel runs and change cases, admins also reload playbooks and
//! verify the audit trail. Every form carries the session's CSRF token and must come from this
//! origin; every change is recorded in the audit trail with its actor, as the API's calls are.
//!
//! Values from alerts are attacker-controlled: they are only ever text (escaped) in the page,
//! never a link target, attribute that runs code, or style.

mod admin;
mod assets;
mod cases;
mod layout;
mod runs;
mod session;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::http::AppState;
use crate::tokens::Role;
pub(crate) use session::Person;

/// The console's routes, to merge into the server's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(cases::list))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/cases/{case}", get(cases::detail))
        .route("/cases/{case}/acknowledge", post(cases::acknowledge))
        .route("/cases/{case}/phase", post(cases::move_phase))
        .route("/cases/{case}/severity", post(cases::set_severity))
        .route("/cases/{case}/notes", post(cases::add_note))
        .route("/cases/{case}/report.md", get(cases::report_markdown))
        .route("/cases/{case}/report.json", get(cases::report_json))
        .route("/runs", get(runs::list))
        .route("/runs/{run_id}", get(runs::detail))
        .route("/runs/{run_id}/cancel", post(runs::cancel))
        .route("/runs/{run_id}/undo", post(runs::undo))
        // `approve` or `deny`.
        .route("/runs/{run_id}/steps/{step}/{verdict}", post(runs::decide))
        .route("/approvals", get(runs::approvals))
        .route("/playbooks", get(admin::playbooks))
        .route("/playbooks/reload", post(admin::reload))
        .route("/audit", get(admin::audit))
        .route("/audit/verify", post(admin::verify))
        .route("/console/static/{file}", get(assets::file))
        .layer(axum::middleware::from_fn(secure_headers))
}

/// What every console answer carries: a strict Content-Security-Policy, no framing, no
/// sniffing, no referrer leaving the origin, and no caching of pages that hold incident data.
async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Back to `to` after a change (303: the browser follows with a GET), naming what was done
/// (a fixed word the next page turns into its own sentence: see [`layout::Done::note`]).
fn done(to: &str, what: &'static str) -> Response {
    Redirect::to(&format!("{to}?done={what}")).into_response()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A page refusing what a person asked: the status and why, in the console's frame.
fn refusal(person: Option<&Person>, status: StatusCode, reason: &str) -> Response {
    let body = maud::html! {
        h1 { "Not done" }
        p.refusal { (reason) }
        p { a href="/" { "Back to the cases" } }
    };
    (
        status,
        layout::page("Not done", person, layout::Nav::None, body),
    )
        .into_response()
}

/// Records a change made in the console in the audit trail, as the API's calls are.
async fn record(state: &AppState, person: &Person, path: &str, status: StatusCode) {
    crate::http::record_call(state, &person.caller, "POST", path.to_owned(), status).await;
}

/// Refuses a person whose role is below `needed` what they posted to `path` (recorded in the
/// trail, as the API's refusals are).
async fn require(
    state: &AppState,
    person: &Person,
    needed: Role,
    path: &str,
) -> Result<(), Response> {
    if person.caller.role >= needed {
        return Ok(());
    }
    record(state, person, path, StatusCode::FORBIDDEN).await;
    Err(refusal(
        Some(person),
        StatusCode::FORBIDDEN,
        &format!(
            "{} has the role {}; this needs {}",
            person.caller.name,
            person.caller.role.as_str(),
            needed.as_str()
        ),
    ))
}
