//! Turning a webhook delivery's body into an event: content type, JSON depth, clear reasons.
//!
//! The byte-size cap is enforced earlier, while the body streams in; this module sees a body that
//! already fits. Each refusal maps to the HTTP status a SIEM should get (415 or 400) with a reason
//! it can log.

/// Deepest nesting of arrays and objects accepted in an alert. Real alerts nest a handful of
/// levels; a deep document only costs the parser.
pub const MAX_JSON_DEPTH: usize = 64;

/// Why a delivery's body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// HTTP 415.
    #[error("expected a JSON body (content type application/json), got {0}")]
    UnsupportedMediaType(String),
    /// HTTP 400.
    #[error("the body nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// HTTP 400, with serde_json's reason and position.
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
}

impl IngressError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            IngressError::UnsupportedMediaType(_) => http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngressError::TooDeep | IngressError::MalformedJson(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks the content type and the nesting, then parses the body.
pub fn parse_event(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<serde_json::Value, IngressError> {
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    let is_json = media_type.as_deref().is_some_and(|t| {
        t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
    });
    if !is_json {
        return Err(IngressError::UnsupportedMediaType(
            media_type.unwrap_or_else(|| "no content type".into()),
        ));
    }
    if depth(body) > MAX_JSON_DEPTH {
        return Err(IngressError::TooDeep);
    }
    serde_json::from_slice(body).map_err(|error| IngressError::MalformedJson(error.to_string()))
}

/// The deepest nesting of `[` and `{` outside strings, found in one pass without parsing.
fn depth(body: &[u8]) -> usize {
    let (mut current, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                current += 1;
                deepest = deepest.max(current);
            }
            b']' | b'}' => current = current.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests;
