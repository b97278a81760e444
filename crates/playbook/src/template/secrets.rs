//! Secrets in templates: opaque values the runner replaces after rendering.
//!
//! A template reads `secrets.<name>` as a [`SecretRef`]: it renders to a marker that names the
//! secret and carries a random nonce of the run, never to the value. After `with:` is rendered,
//! [`SecretMarkers::reveal`] puts each value in place of its marker for the plugin call, and
//! [`SecretMarkers::conceal`] puts `[REDACTED]` there for the record. So a secret reaches a
//! plugin only whole, where the template inserted it (`"Token {{ secrets.token }}"` works), and
//! no template can transform it into a form redaction would miss. The nonce keeps an event from
//! forging a marker: text from an alert that looks like one is left alone.

use std::collections::BTreeMap;

use minijinja::Value;

use super::sandbox::SecretRef;

/// What `[REDACTED]` looks like.
const REDACTED: &str = "[REDACTED]";

/// The markers of one run's secrets.
#[derive(Debug, Clone)]
pub struct SecretMarkers {
    nonce: String,
}

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

impl SecretMarkers {
    /// Markers unique to this run (`nonce` should be random and unguessable).
    pub fn new(nonce: impl Into<String>) -> SecretMarkers {
        SecretMarkers {
            nonce: nonce.into(),
        }
    }

    /// The `secrets` a template sees: each name bound to its opaque reference.
    pub fn context<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Value {
        let references: BTreeMap<&str, Value> = names
            .into_iter()
            .map(|name| {
                (
                    name,
                    Value::from_object(SecretRef {
                        marker: self.marker(name),
                    }),
                )
            })
            .collect();
        Value::from(references)
    }

    /// `rendered` with every marker replaced by its secret's value.
    pub fn reveal(
        &self,
        rendered: &serde_json::Value,
        values: &BTreeMap<String, String>,
    ) -> serde_json::Value {
        self.replace(rendered, &|name| values.get(name).map(String::as_str))
    }

    /// `rendered` with every marker replaced by `[REDACTED]`.
    pub fn conceal(&self, rendered: &serde_json::Value) -> serde_json::Value {
        self.replace(rendered, &|_| Some(REDACTED))
    }

    fn marker(&self, name: &str) -> String {
        format!("{OPEN}secret:{name}:{}{CLOSE}", self.nonce)
    }

    fn replace<'v>(
        &self,
        value: &serde_json::Value,
        lookup: &dyn Fn(&str) -> Option<&'v str>,
    ) -> serde_json::Value {
        match value {
            serde_json::Value::String(text) if text.contains(OPEN) => {
                serde_json::Value::String(self.replace_in(text, lookup))
            }
            serde_json::Value::Array(items) => items
                .iter()
                .map(|item| self.replace(item, lookup))
                .collect(),
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(key, item)| (key.clone(), self.replace(item, lookup)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            other => other.clone(),
        }
    }

    fn replace_in<'v>(&self, text: &str, lookup: &dyn Fn(&str) -> Option<&'v str>) -> String {
        let prefix = format!("{OPEN}secret:");
        let suffix = format!(":{}{CLOSE}", self.nonce);
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(&prefix) {
            let after = &rest[start + prefix.len()..];
            // A name (the id rule: `[a-z0-9_]`), then this run's nonce; anything else is text.
            let name_len = after
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..name_len];
            match lookup(name) {
                Some(value) if after[name_len..].starts_with(&suffix) => {
                    out.push_str(&rest[..start]);
                    out.push_str(value);
                    rest = &after[name_len + suffix.len()..];
                }
                _ => {
                    out.push_str(&rest[..start + prefix.len()]);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_become_values_or_redactions_and_forged_ones_stay_text() {
        let markers = SecretMarkers::new("n0nce");
        let forged = SecretMarkers::new("guess");
        let values = BTreeMap::from([("token".to_owned(), "s3cr3t".to_owned())]);
        let rendered = serde_json::json!({
            "header": format!("Token {}", markers.marker("token")),
            "list": [markers.marker("token"), markers.marker("unknown")],
            "from_the_alert": forged.marker("token"),
            "mixed": format!("{} {}", forged.marker("token"), markers.marker("token")),
        });
        assert_eq!(
            markers.reveal(&rendered, &values),
            serde_json::json!({
                "header": "Token s3cr3t",
                "list": ["s3cr3t", markers.marker("unknown")],
                "from_the_alert": forged.marker("token"),
                "mixed": format!("{} s3cr3t", forged.marker("token")),
            })
        );
        assert_eq!(
            markers.conceal(&rendered)["header"],
            serde_json::json!("Token [REDACTED]")
        );
    }
}
