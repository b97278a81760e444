//! Signing in to the console with an API token, the session that follows, and the checks every
//! form passes.
//!
//! A session is a random id in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS) and a
//! record in the store under the id's hash, so it holds across restarts and processes, ends at
//! sign-out, and ends too when its token is rotated or removed from the configuration. Every
//! form carries the session's CSRF token and must come from this origin (`Origin`, else
//! `Referer`).

use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::layout;
use super::{record, refusal, urlencode};
use crate::http::{AppState, Caller};
use crate::tokens::token_hash;

const COOKIE: &str = "riposte_session";

/// A person signed in: who they are (their token's name, role and groups) and their session's
/// CSRF token.
pub(crate) struct Person {
    pub caller: Caller,
    pub csrf: String,
    session_hash: String,
}

impl FromRequestParts<AppState> for Person {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let next = match parts.method == axum::http::Method::GET {
            true => parts
                .uri
                .path_and_query()
                .map_or("/".to_owned(), |path| path.as_str().to_owned()),
            false => "/".to_owned(),
        };
        let to_sign_in =
            || Redirect::to(&format!("/sign-in?next={}", urlencode(&next))).into_response();
        let Some(id) = cookie(&parts.headers) else {
            return Err(to_sign_in());
        };
        let session_hash = token_hash(id);
        let session = state
            .store
            .session(&session_hash, store::now_millis())
            .await
            .map_err(|error| {
                tracing::error!(%error, "The store failed while reading a console session.");
                refusal(
                    None,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store does not answer; retry later",
                )
            })?;
        let Some(session) = session else {
            return Err(to_sign_in());
        };
        // The token must still be configured, under the same name.
        let caller = state
            .tokens
            .by_hash(&session.token_sha256)
            .filter(|caller| caller.name == session.actor);
        let Some(caller) = caller else {
            let _ = state.store.end_session(&session_hash).await;
            return Err(to_sign_in());
        };
        Ok(Person {
            caller: caller.clone(),
            csrf: session.csrf,
            session_hash,
        })
    }
}

/// The session id from the `Cookie` header.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

/// Refuses a form that does not come from a page of this origin, or lacks the session's CSRF
/// token.
/// The refusal is boxed: a `Response` is large, and the happy path should not carry its size.
pub(super) fn check_form(
    person: &Person,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), Box<Response>> {
    same_origin(headers)?;
    let matches: bool = person.csrf.as_bytes().ct_eq(csrf.as_bytes()).into();
    match matches {
        true => Ok(()),
        false => Err(Box::new(refusal(
            Some(person),
            StatusCode::FORBIDDEN,
            "this form is not from your session (its CSRF token does not match); reload the page and try again",
        ))),
    }
}

/// Refuses a POST whose `Origin` (or, without one, `Referer`) is not this server.
fn same_origin(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let ours = |origin: &str| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| !host.is_empty() && rest == host)
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    let referer = headers
        .get(header::REFERER)
        .and_then(|value| value.to_str().ok());
    let allowed = match (origin, referer) {
        (Some(origin), _) => ours(origin),
        (None, Some(referer)) => {
            let without_scheme = referer.split_once("://").map_or("", |(_, rest)| rest);
            let authority = without_scheme.split('/').next().unwrap_or_default();
            ours(&format!("http://{authority}"))
        }
        (None, None) => false,
    };
    match allowed {
        true => Ok(()),
        false => Err(Box::new(refusal(
            None,
            StatusCode::FORBIDDEN,
            "this form was not sent from a page of this server",
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct SignInQuery {
    next: Option<String>,
}

pub(super) async fn sign_in_page(Query(query): Query<SignInQuery>) -> Response {
    sign_in_form(query.next.as_deref(), None, StatusCode::OK)
}

fn sign_in_form(next: Option<&str>, problem: Option<&str>, status: StatusCode) -> Response {
    let next = safe_next(next);
    let body = maud::html! {
        section.sign-in {
            h1 { "Sign in" }
            p { "Paste your Riposte API token. Its role decides what you can do here: viewers see, responders decide approvals and move cases, admins also reload playbooks." }
            @if let Some(problem) = problem {
                p.refusal role="alert" { (problem) }
            }
            form method="post" action="/sign-in" {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                input type="hidden" name="next" value=(next);
                button type="submit" { "Sign in" }
            }
            p.hint { "No token? An admin makes one with " code { "riposte token new --name <you> --role responder" } "." }
        }
    };
    (
        status,
        layout::page("Sign in", None, layout::Nav::None, body),
    )
        .into_response()
}

/// Where to go after signing in: a path of this console, nothing else.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control) =>
        {
            path
        }
        _ => "/",
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SignIn {
    token: String,
    next: Option<String>,
}

pub(super) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return *refused;
    }
    let token = form.token.trim();
    let Some(caller) = state.tokens.caller(token).cloned() else {
        tracing::info!("Console sign-in with an unknown token refused.");
        return sign_in_form(
            form.next.as_deref(),
            Some("That token is not valid here."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let id = random_token();
    let session = store::Session {
        actor: caller.name.clone(),
        token_sha256: token_hash(token),
        csrf: random_token(),
        expires_at: store::now_millis().saturating_add(
            u64::try_from(state.console.session_ttl.as_millis()).unwrap_or(u64::MAX),
        ),
    };
    if let Err(error) = state.store.put_session(&token_hash(&id), &session).await {
        tracing::error!(%error, "Could not store a console session.");
        return refusal(
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            "the store does not answer; retry later",
        );
    }
    let person = Person {
        caller,
        csrf: session.csrf,
        session_hash: token_hash(&id),
    };
    record(&state, &person, "/sign-in", StatusCode::SEE_OTHER).await;
    let secure = state.console.secure_cookie.unwrap_or_else(|| {
        headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
    });
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        state.console.session_ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(safe_next(form.next.as_deref())).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfOnly {
    csrf: String,
}

pub(super) async fn sign_out(
    State(state): State<AppState>,
    person: Person,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(refused) = check_form(&person, &headers, &form.csrf) {
        return *refused;
    }
    if let Err(error) = state.store.end_session(&person.session_hash).await {
        tracing::error!(%error, "Could not end a console session.");
    }
    record(&state, &person, "/sign-out", StatusCode::SEE_OTHER).await;
    let mut response = Redirect::to("/sign-in").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("riposte_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// 256 random bits, base64url.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_console_are_followed_after_sign_in() {
        for (next, followed) in [
            (Some("/cases/3?phase=closed"), "/cases/3?phase=closed"),
            (Some("//evil.example.com/"), "/"),
            (Some("/\\evil.example.com"), "/"),
            (Some("https://evil.example.com/"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (None, "/"),
        ] {
            assert_eq!(safe_next(next), followed, "{next:?}");
        }
    }

    #[test]
    fn a_form_must_come_from_this_origin() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(
                    header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_str(value).expect("value"),
                );
            }
            map
        };
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:8080")])).is_ok());
        assert!(
            same_origin(&headers(&[
                host,
                ("referer", "http://127.0.0.1:8080/cases/1")
            ]))
            .is_ok()
        );
        assert!(same_origin(&headers(&[host, ("origin", "http://evil.example.com")])).is_err());
        assert!(same_origin(&headers(&[host, ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[host, ("referer", "http://evil.example.com/x")])).is_err());
        assert!(same_origin(&headers(&[host])).is_err(), "neither header");
    }
}
