//! Webhook authentication, per trigger, configured in the server (never in a playbook).
//!
//! Every scheme accepts several secrets at once, so a secret can be rotated without a window in
//! which deliveries fail. Comparisons are constant-time, and every configured secret is tried
//! without stopping at the first match, so timing reveals neither a secret nor which one matched.
//! A trigger with no profile is refused unless it is explicitly [`AuthProfile::Public`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How a trigger's deliveries authenticate.
#[derive(Clone)]
pub enum AuthProfile {
    /// HMAC-SHA256 of the raw body, hex, in a header such as GitHub's
    /// `X-Hub-Signature-256: sha256=<hex>`.
    HmacSha256 {
        header: http::HeaderName,
        /// Text before the hex digest (`sha256=` for GitHub; empty for senders that send bare hex).
        prefix: String,
        secrets: Vec<Vec<u8>>,
    },
    /// The Standard Webhooks scheme (standardwebhooks.com): `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature: v1,<base64>` over `<id>.<timestamp>.<body>`, with a timestamp window
    /// against replays.
    StandardWebhooks {
        /// Keys as issued, `whsec_<base64>`.
        secrets: Vec<String>,
        tolerance: Duration,
    },
    /// `Authorization: Bearer <token>`.
    Bearer { tokens: Vec<String> },
    /// `Authorization: Basic <base64(user:password)>`.
    Basic { credentials: Vec<(String, String)> },
    /// A secret token as the last segment of the URL (`/hooks/<trigger>/<token>`), for senders
    /// that cannot set a header.
    UrlToken { tokens: Vec<String> },
    /// No authentication, because the trigger is explicitly marked public.
    Public,
}

impl std::fmt::Debug for AuthProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        let name = match self {
            AuthProfile::HmacSha256 { .. } => "HmacSha256",
            AuthProfile::StandardWebhooks { .. } => "StandardWebhooks",
            AuthProfile::Bearer { .. } => "Bearer",
            AuthProfile::Basic { .. } => "Basic",
            AuthProfile::UrlToken { .. } => "UrlToken",
            AuthProfile::Public => "Public",
        };
        f.write_str(name)
    }
}

impl AuthProfile {
    /// The delivery's identity as its signature vouches for it, for the profiles that sign: the
    /// signed `webhook-id` (Standard Webhooks), or the digest of the signed body (HMAC, which
    /// signs nothing else). A captured delivery resent with other unsigned headers (a new
    /// `Idempotency-Key`) is then still the same delivery. `None` for bearer, basic and public,
    /// whose credentials vouch for no particular delivery.
    pub fn signed_delivery_id(&self, headers: &HeaderMap, body: &[u8]) -> Option<String> {
        match self {
            AuthProfile::StandardWebhooks { .. } => headers
                .get("webhook-id")
                .and_then(|id| id.to_str().ok())
                .map(|id| id.trim().to_owned()),
            AuthProfile::HmacSha256 { .. } => {
                let digest = <Sha256 as sha2::Digest>::digest(body);
                Some(format!(
                    "sha256:{}",
                    data_encoding::HEXLOWER.encode(&digest)
                ))
            }
            AuthProfile::Bearer { .. }
            | AuthProfile::Basic { .. }
            | AuthProfile::UrlToken { .. }
            | AuthProfile::Public => None,
        }
    }
}

/// Why a delivery was refused. Messages name what is wrong, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the `{0}` header is missing")]
    Missing(String),
    #[error("the `{header}` header is malformed: {reason}")]
    Malformed { header: String, reason: String },
    #[error("the signature or credentials do not match")]
    Mismatch,
    #[error(
        "the webhook timestamp is outside the accepted window of {0:?}; the delivery may be a replay"
    )]
    Stale(Duration),
    #[error("the server configuration for this trigger has no usable secret")]
    Misconfigured,
    #[error("this trigger takes its token in the URL: POST /hooks/<trigger>/<token>")]
    TokenNotInUrl,
    #[error("this trigger takes no token in its URL")]
    UnexpectedUrlToken,
}

/// Checks a delivery against a profile; `now` is passed in so tests control the clock.
pub fn verify(
    profile: &AuthProfile,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), AuthError> {
    verify_delivery(profile, None, headers, body, now)
}

/// Checks a delivery against a profile, with the token its URL carried (`/hooks/<trigger>/<token>`)
/// if any: only a `url-token` profile takes one, and it takes nothing else.
pub fn verify_delivery(
    profile: &AuthProfile,
    url_token: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), AuthError> {
    match (profile, url_token) {
        (AuthProfile::UrlToken { tokens }, Some(given)) => {
            return any_matches(tokens.iter().map(|t| t.as_bytes()), given.as_bytes());
        }
        (AuthProfile::UrlToken { .. }, None) => return Err(AuthError::TokenNotInUrl),
        (_, Some(_)) => return Err(AuthError::UnexpectedUrlToken),
        (_, None) => {}
    }
    match profile {
        AuthProfile::Public => Ok(()),
        AuthProfile::UrlToken { .. } => Err(AuthError::TokenNotInUrl),
        AuthProfile::HmacSha256 {
            header,
            prefix,
            secrets,
        } => verify_hmac(header, prefix, secrets, headers, body),
        AuthProfile::StandardWebhooks { secrets, tolerance } => {
            verify_standard(secrets, *tolerance, headers, body, now)
        }
        AuthProfile::Bearer { tokens } => {
            let given = authorization(headers, "Bearer ")?;
            any_matches(tokens.iter().map(|t| t.as_bytes()), given.as_bytes())
        }
        AuthProfile::Basic { credentials } => {
            let encoded = authorization(headers, "Basic ")?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| malformed("authorization", "the credentials are not base64"))?;
            let expected: Vec<Vec<u8>> = credentials
                .iter()
                .map(|(user, password)| format!("{user}:{password}").into_bytes())
                .collect();
            any_matches(expected.iter().map(Vec::as_slice), &decoded)
        }
    }
}

fn verify_hmac(
    header: &http::HeaderName,
    prefix: &str,
    secrets: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthError> {
    let name = header.as_str();
    let value = headers
        .get(header)
        .ok_or_else(|| AuthError::Missing(name.to_owned()))?
        .to_str()
        .map_err(|_| malformed(name, "not text"))?;
    let hex = value
        .trim()
        .strip_prefix(prefix)
        .ok_or_else(|| malformed(name, &format!("it does not start with `{prefix}`")))?;
    let given = decode_hex(hex).ok_or_else(|| malformed(name, "the digest is not hex"))?;
    if secrets.is_empty() {
        return Err(AuthError::Misconfigured);
    }
    let mut matched = false;
    for secret in secrets {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::Misconfigured)?;
        mac.update(body);
        matched |= mac.verify_slice(&given).is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

fn verify_standard(
    secrets: &[String],
    tolerance: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), AuthError> {
    let get = |name: &'static str| -> Result<&str, AuthError> {
        headers
            .get(name)
            .ok_or_else(|| AuthError::Missing(name.to_owned()))?
            .to_str()
            .map_err(|_| malformed(name, "not text"))
    };
    let id = get("webhook-id")?;
    let timestamp = get("webhook-timestamp")?;
    let signatures = get("webhook-signature")?;
    let sent: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| malformed("webhook-timestamp", "not a number of seconds"))?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(sent) > tolerance.as_secs() {
        return Err(AuthError::Stale(tolerance));
    }
    let keys: Vec<Vec<u8>> = secrets
        .iter()
        .filter_map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.strip_prefix("whsec_").unwrap_or(s))
                .ok()
        })
        .collect();
    if keys.is_empty() {
        return Err(AuthError::Misconfigured);
    }
    let given: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .collect();
    if given.is_empty() {
        return Err(malformed("webhook-signature", "no `v1,<base64>` signature"));
    }
    let mut matched = false;
    for key in &keys {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| AuthError::Misconfigured)?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.trim().as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        for signature in &given {
            matched |= bool::from(expected.as_slice().ct_eq(signature.as_slice()));
        }
    }
    if matched {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The credentials after `scheme` in the `Authorization` header.
fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Result<&'h str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| AuthError::Missing("authorization".into()))?
        .to_str()
        .map_err(|_| malformed("authorization", "not text"))?;
    let (given_scheme, credentials) = value.split_at(scheme.len().min(value.len()));
    if !given_scheme.eq_ignore_ascii_case(scheme) {
        return Err(malformed(
            "authorization",
            &format!("expected the `{}` scheme", scheme.trim()),
        ));
    }
    Ok(credentials)
}

/// Compares `given` with every expected value in constant time, without stopping early.
fn any_matches<'a>(
    expected: impl Iterator<Item = &'a [u8]>,
    given: &[u8],
) -> Result<(), AuthError> {
    let mut configured = false;
    let mut matched = subtle::Choice::from(0);
    for candidate in expected {
        configured = true;
        matched |= candidate.ct_eq(given);
    }
    if !configured {
        return Err(AuthError::Misconfigured);
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

fn malformed(header: &str, reason: &str) -> AuthError {
    AuthError::Malformed {
        header: header.to_owned(),
        reason: reason.to_owned(),
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
