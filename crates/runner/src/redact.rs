//! Keeps secret values out of everything the runner records.

use base64::Engine as _;

/// Replaces secret values, and their common encodings, with `[REDACTED]` in JSON values.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

pub const REDACTED: &str = "[REDACTED]";

/// Short values would redact ordinary words; no real credential is this short.
const MIN_SECRET_LEN: usize = 4;

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles = Vec::new();
        for secret in secrets.into_iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            needles.push(secret.to_owned());
            needles.extend(engines.iter().map(|e| e.encode(secret)));
            needles.push(hex(secret.as_bytes(), false));
            needles.push(hex(secret.as_bytes(), true));
            needles.push(url_encode(secret));
        }
        // Longest first, so a value is replaced whole before any part of it could be.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    pub fn redact_str(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), REDACTED);
            }
        }
        out
    }

    pub fn redact(&self, value: &serde_json::Value) -> serde_json::Value {
        if self.is_empty() {
            return value.clone();
        }
        match value {
            serde_json::Value::String(s) => serde_json::Value::String(self.redact_str(s)),
            serde_json::Value::Array(items) => items.iter().map(|i| self.redact(i)).collect(),
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| (self.redact_str(k), self.redact(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            other => other.clone(),
        }
    }
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
