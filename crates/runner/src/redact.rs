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
            needles.push(data_encoding::HEXLOWER.encode(secret.as_bytes()));
            needles.push(data_encoding::HEXUPPER.encode(secret.as_bytes()));
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

fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(char::from(byte));
            }
            _ => {
                encoded.push('%');
                data_encoding::HEXUPPER.encode_append(&[byte], &mut encoded);
            }
        }
    }
    encoded
}
