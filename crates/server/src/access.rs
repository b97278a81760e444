//! Who may call the management API: bearer tokens with a role, stored only as SHA-256 hashes,
//! and the record every authenticated call leaves in the audit trail.
//!
//! Tokens are 256 random bits ([`new_token`]), so an unsalted SHA-256 is enough to keep a leaked
//! configuration from revealing them (nothing to brute-force), and lets a token be found by its
//! hash in one lookup. Each operation's required role is declared in the OpenAPI document
//! (`x-riposte-role`), which is also what the router enforces: one table for both.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::{ApiError, AppState};

/// Prometheus scrapes it every few seconds: recording each would bury the management calls.
const METRICS: &str = "/metrics";

/// What a token may do; each role may do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads runs, timelines, playbooks, plugins and metrics.
    Viewer,
    /// Also approves, denies, cancels and resumes runs.
    Responder,
    /// Also reloads playbooks.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Responder, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// A configured token: its name (the actor in the audit trail), role and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Groups its holder belongs to: a step whose `approvers` name one may be decided with it.
    pub groups: Vec<String>,
}

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

/// A new random token: `rpt_` and 43 base64url characters (256 bits).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "rpt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The hash a token is configured by (hex SHA-256).
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
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

    fn caller(&self, token: &str) -> Option<&Caller> {
        self.0.get(&token_hash(token))
    }
}

/// The role each operation needs, read from the OpenAPI document's `x-riposte-role`.
#[derive(Debug)]
pub struct Permissions(HashMap<(Method, String), Role>);

impl Permissions {
    /// Reads the roles from the OpenAPI document. Operations without `x-riposte-role` are public.
    pub fn from_openapi(document: &serde_json::Value) -> Self {
        let mut required = HashMap::new();
        let paths = document["paths"].as_object().into_iter().flatten();
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().into_iter().flatten() {
                let (Ok(method), Some(role)) = (
                    Method::from_bytes(method.to_ascii_uppercase().as_bytes()),
                    operation["x-riposte-role"].as_str().and_then(Role::parse),
                ) else {
                    continue;
                };
                required.insert((method, path.clone()), role);
            }
        }
        Permissions(required)
    }

    pub fn required(&self, method: &Method, path: &str) -> Option<Role> {
        self.0.get(&(method.clone(), path.to_owned())).copied()
    }
}

/// Checks the bearer token against the role the operation needs, runs the operation, and
/// records the call (allowed or refused with 403) in the audit trail with its actor. A missing or
/// unknown token is refused with 401 and only logged: anyone can send those, and they must not
/// be able to fill the trail. Metric scrapes are not management calls and are not recorded.
pub async fn authorize(
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
    let call = store::TrailEntry::ApiCall {
        actor: caller.name,
        role: caller.role.as_str().to_owned(),
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
        at: store::now_millis(),
    };
    if let Err(error) = state.store.trail_append(&call).await {
        tracing::error!(%error, "Could not record an API call in the audit trail.");
    }
    response
}

fn unauthorized(reason: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, reason).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_the_openapi_document() {
        let document: serde_json::Value = serde_json::from_str(crate::app::OPENAPI).expect("JSON");
        let permissions = Permissions::from_openapi(&document);
        assert_eq!(
            permissions.required(&Method::GET, "/api/v1/playbooks"),
            Some(Role::Viewer)
        );
        assert_eq!(
            permissions.required(&Method::POST, "/api/v1/playbooks/reload"),
            Some(Role::Admin)
        );
        assert_eq!(permissions.required(&Method::GET, "/healthz"), None);
    }
}
