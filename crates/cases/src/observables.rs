//! Pulling observables out of alerts and step outputs.
//!
//! A value is taken by its shape where the shape is unambiguous (an IP address, a URL, an email
//! address, a MAC address, a SHA-1/SHA-256/SHA-512 digest) and by the field that holds it where
//! it is not (a host name, a user name, a file name, an MD5 digest: `user`, `hostname`,
//! `file.name`, `md5`…). Playbooks name anything else in `case.observables`. Extraction is
//! bounded (depth, values looked at, observables returned), since alerts come from outside.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::{Observable, ObservableType};

/// Most observables one alert or one output yields.
pub const MAX_PER_SOURCE: usize = 100;
/// Deepest nesting looked into.
const MAX_DEPTH: usize = 32;
/// Most values looked at in one source.
const MAX_VALUES: usize = 10_000;
/// Longer strings are not observables (they are logs, documents, payloads).
const MAX_VALUE_LEN: usize = 2_048;

/// Fields that hold a host name.
const HOST_FIELDS: &[&str] = &[
    "host",
    "hostname",
    "host_name",
    "computer",
    "computer_name",
    "device_name",
    "domain",
    "fqdn",
    "dns_name",
    "server_name",
    "src_host",
    "dst_host",
    "agent_name",
];
/// Fields that hold a user name.
const USER_FIELDS: &[&str] = &[
    "user",
    "username",
    "user_name",
    "account",
    "account_name",
    "src_user",
    "dst_user",
    "login",
    "principal",
];
/// Fields that hold a file name.
const FILE_FIELDS: &[&str] = &["file_name", "filename"];
/// Fields that hold a digest (where an MD5 is not told from another 32-digit hex id by shape).
const HASH_FIELDS: &[&str] = &[
    "hash", "md5", "sha1", "sha256", "sha512", "checksum", "digest",
];
/// Objects whose `name` is a host, a user or a file name (`host.name`, `user.name`).
const NAMED_PARENTS: &[(&str, ObservableType)] = &[
    ("host", ObservableType::Hostname),
    ("device", ObservableType::Hostname),
    ("agent", ObservableType::Hostname),
    ("computer", ObservableType::Hostname),
    ("user", ObservableType::UserName),
    ("account", ObservableType::UserName),
    ("file", ObservableType::FileName),
];

/// The observables in a JSON value, de-duplicated, in the order they appear, at most
/// [`MAX_PER_SOURCE`].
pub fn extract(value: &serde_json::Value) -> Vec<Observable> {
    let mut walk = Walk {
        found: Vec::new(),
        seen: HashSet::new(),
        looked_at: 0,
    };
    walk.value(value, None, None, 0);
    walk.found
}

struct Walk {
    found: Vec<Observable>,
    seen: HashSet<Observable>,
    looked_at: usize,
}

impl Walk {
    fn full(&self) -> bool {
        self.found.len() >= MAX_PER_SOURCE || self.looked_at >= MAX_VALUES
    }

    fn value(
        &mut self,
        value: &serde_json::Value,
        field: Option<&str>,
        parent: Option<&str>,
        depth: usize,
    ) {
        if self.full() || depth > MAX_DEPTH {
            return;
        }
        self.looked_at += 1;
        match value {
            serde_json::Value::String(text) => self.text(text, field, parent),
            serde_json::Value::Array(items) => {
                for item in items {
                    self.value(item, field, parent, depth + 1);
                }
            }
            serde_json::Value::Object(entries) => {
                for (name, item) in entries {
                    let name = normalize(name);
                    self.value(item, Some(&name), field, depth + 1);
                }
            }
            _ => {}
        }
    }

    fn add(&mut self, kind: ObservableType, value: &str) {
        let observable = Observable {
            kind,
            value: value.to_owned(),
        };
        if !self.full() && self.seen.insert(observable.clone()) {
            self.found.push(observable);
        }
    }

    fn text(&mut self, text: &str, field: Option<&str>, parent: Option<&str>) {
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_VALUE_LEN {
            return;
        }
        if let Some(ip) = ip_address(text) {
            self.add(ObservableType::IpAddress, &ip.to_string());
            return;
        }
        if let Some(host) = url_host(text) {
            self.add(ObservableType::UrlString, text);
            match ip_address(host) {
                Some(ip) => self.add(ObservableType::IpAddress, &ip.to_string()),
                None if is_hostname(host) => {
                    self.add(ObservableType::Hostname, &host.to_ascii_lowercase());
                }
                None => {}
            }
            return;
        }
        if is_email(text) {
            self.add(ObservableType::EmailAddress, &text.to_ascii_lowercase());
            return;
        }
        if is_mac(text) {
            self.add(
                ObservableType::MacAddress,
                &text.replace('-', ":").to_ascii_lowercase(),
            );
            return;
        }
        let field = field.unwrap_or_default();
        let hex = text.bytes().all(|byte| byte.is_ascii_hexdigit());
        let digest_length = matches!(text.len(), 40 | 64 | 128)
            || (text.len() == 32 && HASH_FIELDS.iter().any(|name| field.contains(name)));
        if hex && digest_length {
            self.add(ObservableType::Hash, &text.to_ascii_lowercase());
            return;
        }
        let named = (field == "name")
            .then(|| {
                NAMED_PARENTS
                    .iter()
                    .find(|(name, _)| Some(*name) == parent)
                    .map(|(_, kind)| *kind)
            })
            .flatten();
        let kind = named.or_else(|| {
            if HOST_FIELDS.contains(&field) {
                Some(ObservableType::Hostname)
            } else if USER_FIELDS.contains(&field) {
                Some(ObservableType::UserName)
            } else if FILE_FIELDS.contains(&field) {
                Some(ObservableType::FileName)
            } else {
                None
            }
        });
        match kind {
            Some(ObservableType::Hostname) if is_hostname(text) => {
                self.add(ObservableType::Hostname, &text.to_ascii_lowercase());
            }
            Some(kind @ (ObservableType::UserName | ObservableType::FileName))
                if text.len() <= 256 && !text.chars().any(char::is_control) =>
            {
                self.add(kind, text);
            }
            _ => {}
        }
    }
}

/// `srcUser`, `src-user` and `src.user` all read as `src_user`.
fn normalize(name: &str) -> String {
    let mut normalized = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            normalized.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        normalized.push(match c {
            '-' | '.' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        });
    }
    normalized
}

/// An address, or an address with a port (`10.0.0.5:9100`, `[2001:db8::1]:443`). The
/// unspecified address is a placeholder, not an observable.
fn ip_address(text: &str) -> Option<IpAddr> {
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))?;
    (!ip.is_unspecified()).then_some(ip)
}

/// The host of an `http(s)` URL.
fn url_host(text: &str) -> Option<&str> {
    let lower = text.get(..8)?.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &text[8..]
    } else if lower.starts_with("http://") {
        &text[7..]
    } else {
        return None;
    };
    if text.chars().any(char::is_whitespace) {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

fn is_hostname(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
        && text.bytes().any(|byte| byte.is_ascii_alphabetic())
}

fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '<' | '>' | '"'))
        && domain.contains('.')
        && is_hostname(domain)
}

fn is_mac(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 17
        && (0..6).all(|group| {
            bytes[group * 3].is_ascii_hexdigit() && bytes[group * 3 + 1].is_ascii_hexdigit()
        })
        && (0..5).all(|gap| matches!(bytes[gap * 3 + 2], b':' | b'-'))
        && (bytes[2] == bytes[5])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `value` yields, sorted (the order of an object's fields is the map's).
    fn found(value: serde_json::Value) -> Vec<(ObservableType, String)> {
        let mut found: Vec<_> = extract(&value)
            .into_iter()
            .map(|observable| (observable.kind, observable.value))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn values_are_typed_by_shape() {
        let alert = json!({
            "src_ip": "203.0.113.7",
            "instance": "10.0.0.5:9100",
            "v6": "[2001:db8::1]:443",
            "link": "https://Evil.example.com/login?next=/",
            "reporter": "Alice@Example.com",
            "mac": "AA-BB-CC-DD-EE-FF",
            "sha256": "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "placeholder": "0.0.0.0",
            "prose": "a message that mentions nothing",
        });
        let mut expected = vec![
            (ObservableType::IpAddress, "203.0.113.7".into()),
            (ObservableType::IpAddress, "10.0.0.5".into()),
            (ObservableType::IpAddress, "2001:db8::1".into()),
            (
                ObservableType::UrlString,
                "https://Evil.example.com/login?next=/".into(),
            ),
            (ObservableType::Hostname, "evil.example.com".into()),
            (ObservableType::EmailAddress, "alice@example.com".into()),
            (ObservableType::MacAddress, "aa:bb:cc:dd:ee:ff".into()),
            (
                ObservableType::Hash,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            ),
        ];
        expected.sort();
        assert_eq!(found(alert), expected);
    }

    #[test]
    fn names_are_typed_by_their_field() {
        let alert = json!({
            "agent": { "name": "web-01", "id": "007" },
            "user": { "name": "root" },
            "srcUser": "admin",
            "file": { "name": "invoice.pdf.exe" },
            "md5": "44d88612fea8a8f36de82e1278abb02f",
            "event_id": "44d88612fea8a8f36de82e1278abb02f",
            "hostname": "not a host name",
            "rule": { "name": "SSH brute force" },
        });
        let mut expected = vec![
            (ObservableType::Hostname, "web-01".into()),
            (ObservableType::FileName, "invoice.pdf.exe".into()),
            (
                ObservableType::Hash,
                "44d88612fea8a8f36de82e1278abb02f".into(),
            ),
            (ObservableType::UserName, "admin".into()),
            (ObservableType::UserName, "root".into()),
        ];
        expected.sort();
        assert_eq!(found(alert), expected);
    }

    #[test]
    fn repeats_are_dropped_and_sources_are_bounded() {
        let many: Vec<String> = (0..1_000)
            .map(|i| format!("198.51.{}.{}", i / 250, i % 250))
            .collect();
        let alert = json!({ "a": "203.0.113.7", "b": ["203.0.113.7"], "many": many });
        let observables = extract(&alert);
        assert_eq!(observables.len(), MAX_PER_SOURCE);
        assert_eq!(observables[0].value, "203.0.113.7");
        assert_eq!(observables[1].value, "198.51.0.0");

        let mut deep = json!("203.0.113.9");
        for _ in 0..100 {
            deep = json!({ "x": deep });
        }
        assert!(
            extract(&deep).is_empty(),
            "nesting past the limit is not read"
        );
    }
}
