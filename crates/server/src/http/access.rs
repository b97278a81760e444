//! Who may call the management API: bearer tokens with a role ([`crate::tokens`]), and the
//! record every authenticated call leaves in the audit trail. Each operation's required role is
//! declared in the OpenAPI document ([`super::openapi`]).

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::tokens::{ApiToken, Role, token_hash};

/// Prometheus scrapes it every few seconds: recording each would bury the management calls.
const METRICS: &str = "/metrics";

/// Who is calling: put in the request by [`authorize`] for the handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub groups: Vec<String>,
}

impl Caller {
    /// Whether the caller may decide a step with these `approvers`: named in them by name or
    /// group, or an admin (who may always decide; the trail shows who did).
    pub fn may_decide(&self, approvers: &[String]) -> bool {
        self.role == Role::Admin
            || approvers
                .iter()
                .any(|approver| *approver == self.name || self.groups.contains(approver))
    }
}

/// The configured tokens, by hash.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<String, Caller>);

impl Tokens {
    pub fn new(tokens: &[ApiToken]) -> Self {
        Tokens(
            tokens
                .iter()
                .map(|token| {
                    (
                        token.sha256.to_ascii_lowercase(),
                        Caller {
                            name: token.name.clone(),
                            role: token.role,
                            groups: token.groups.clone(),
                        },
                    )
                })
                .collect(),
        )
    }

    /// The caller a token authenticates, with the token's hash.
    pub(crate) fn caller(&self, token: &str) -> Option<&Caller> {
        self.0.get(&token_hash(token))
    }

    /// The caller a token with this hash authenticates, if it is still configured.
    pub(crate) fn by_hash(&self, sha256: &str) -> Option<&Caller> {
        self.0.get(sha256)
    }

    /// The caller of the token with this name (as Slack users are mapped to one).
    pub(crate) fn by_name(&self, name: &str) -> Option<&Caller> {
        self.0.values().find(|caller| caller.name == name)
    }
}

/// Checks the bearer token against the role the operation needs, runs the operation, and
/// records the call (allowed or refused with 403) in the audit trail with its actor. A missing or
/// unknown token is refused with 401 and only logged: anyone can send those, and they must not
/// be able to fill the trail. Metric scrapes are not management calls and are not recorded.
pub(super) async fn authorize(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = matched.as_ref().map_or("", MatchedPath::as_str).to_owned();
    let path = request.uri().path().to_owned();
    // An operation missing from the document needs the highest role: fail closed.
    let required = state
        .permissions
        .required(&method, &route)
        .unwrap_or(Role::Admin);
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            // The scheme is case-insensitive (RFC 9110).
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = token else {
        return unauthorized("send an API token: `Authorization: Bearer <token>`");
    };
    let Some(caller) = state.tokens.caller(token).cloned() else {
        tracing::info!(%method, %route, "API call with an unknown token refused.");
        return unauthorized("the API token is not valid");
    };
    let response = if caller.role >= required {
        request.extensions_mut().insert(caller.clone());
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` has role {}; this call needs {}",
                caller.name,
                caller.role.as_str(),
                required.as_str()
            ),
        )
        .into_response()
    };
    if route == METRICS && response.status().is_success() {
        return response;
    }
    record_call(&state, &caller, method.as_str(), path, response.status()).await;
    response
}

/// Appends what `caller` asked (`method` on `path`) and how it was answered to the audit trail:
/// API calls, console actions and Slack decisions alike. A failure to record is logged; the
/// answer stands.
pub(crate) async fn record_call(
    state: &AppState,
    caller: &Caller,
    method: &str,
    path: String,
    status: StatusCode,
) {
    let call = store::TrailEntry::ApiCall {
        actor: caller.name.clone(),
        role: caller.role.as_str().to_owned(),
        method: method.to_owned(),
        path,
        status: status.as_u16(),
        at: store::now_millis(),
    };
    if let Err(error) = state.store.trail_append(&call).await {
        tracing::error!(%error, "Could not record a call in the audit trail.");
    }
}

fn unauthorized(reason: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, reason).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
