//! A webhook delivery through what the server does before storing it: the trigger's auth profile
//! (`server::auth::verify_delivery`), the JSON checks (`server::http::parse_event`), then every
//! playbook on the trigger: `split`, `screen` (filter, dedupe key, resolved), the `case:` block
//! and the `incident:` fields. The playbooks are the sender recipes (docs/senders) and the
//! examples (playbooks/).
//!
//! Input, like an HTTP request without its request line:
//!
//! ```text
//! <trigger>[/<url token>]
//! <header>: <value>
//! ...
//!
//! <body>
//! ```
//!
//! With a header `x-fuzz-sign`, the target signs the body itself with the profile's secret (HMAC
//! and Standard Webhooks), so the fuzzer gets past signatures it cannot forge, and checks that a
//! correct signature is always accepted.
//!
//! Invariants: nothing panics; a correctly signed delivery verifies; an accepted event is JSON
//! nested at most `MAX_JSON_DEPTH` deep, and a body refused as too deep really is; `split`
//! yields at most `MAX_SPLIT_ITEMS` events; a dedupe key or a resolution only for a match.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use playbook::{MAX_SPLIT_ITEMS, Playbook};
use riposte_fuzz::auth::{AuthProfile, verify_delivery};
use riposte_fuzz::ingress::{IngressError, MAX_JSON_DEPTH, parse_event};
use riposte_fuzz::json_depth;
use sha2::Sha256;

/// The clock of every delivery: 2026-01-01T00:00:00Z.
const NOW: u64 = 1_767_225_600;
const SECRET: &[u8] = b"fuzz-secret";
const TOKEN: &str = "fuzz-token";
const TOLERANCE: Duration = Duration::from_secs(300);

fuzz_target!(|data: &[u8]| {
    let Some(request) = Request::parse(data) else {
        return;
    };
    let profile = profile(&request.trigger);
    let mut headers = request.headers;
    // A signing profile takes no URL token: with one, the delivery is refused however signed.
    let signed = headers.contains_key("x-fuzz-sign")
        && request.token.is_none()
        && sign(&profile, &mut headers, request.body);
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let verdict = verify_delivery(&profile, request.token, &headers, request.body, now);
    if signed {
        assert_eq!(verdict, Ok(()), "a correctly signed delivery was refused");
    }
    if let Err(error) = verdict {
        assert!(!error.to_string().is_empty());
        return;
    }
    let _ = profile.signed_delivery_id(&headers, request.body);

    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let event = match parse_event(content_type, request.body) {
        Ok(event) => event,
        Err(error) => {
            let _ = error.status();
            if error == IngressError::TooDeep
                && let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(request.body)
            {
                assert!(
                    json_depth(&parsed) > MAX_JSON_DEPTH,
                    "a body {} deep was refused as too deep",
                    json_depth(&parsed)
                );
            }
            return;
        }
    };
    assert!(
        json_depth(&event) <= MAX_JSON_DEPTH,
        "an event nests too deep"
    );

    for playbook in playbooks()
        .iter()
        .filter(|p| p.trigger.webhook == request.trigger)
    {
        let Ok(items) = playbook.split(&event) else {
            continue;
        };
        assert!(
            items.len() <= MAX_SPLIT_ITEMS,
            "split yielded {}",
            items.len()
        );
        for item in &items {
            let Ok(screening) = playbook.screen(item) else {
                continue;
            };
            assert!(screening.matched || (screening.dedupe_key.is_none() && !screening.resolved));
            if !screening.matched {
                continue;
            }
            let _ = playbook.case_opening(item);
            let context = minijinja::context! {
                trigger => minijinja::Value::from_serialize(item),
                vars => minijinja::Value::from_serialize(&playbook.vars),
            };
            for field in playbook.incident.values() {
                let _ = field.render(&context);
            }
        }
    }
});

struct Request<'a> {
    trigger: String,
    token: Option<&'a str>,
    headers: HeaderMap,
    body: &'a [u8],
}

impl<'a> Request<'a> {
    fn parse(data: &'a [u8]) -> Option<Request<'a>> {
        let (first, mut rest) = line(data)?;
        let first = std::str::from_utf8(first).ok()?;
        let (trigger, token) = match first.split_once('/') {
            Some((trigger, token)) => (trigger, Some(token)),
            None => (first, None),
        };
        let mut headers = HeaderMap::new();
        loop {
            let Some((header, after)) = line(rest) else {
                // No blank line: all headers, no body.
                return Some(Request {
                    trigger: trigger.to_owned(),
                    token,
                    headers,
                    body: &[],
                });
            };
            rest = after;
            if header.is_empty() {
                break;
            }
            let Some(colon) = header.iter().position(|&b| b == b':') else {
                continue;
            };
            let value = header[colon + 1..].trim_ascii_start();
            // What hyper would refuse never reaches the handler.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&header[..colon]),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        Some(Request {
            trigger: trigger.to_owned(),
            token,
            headers,
            body: rest,
        })
    }
}

/// The first line of `data` (without `\r\n` or `\n`) and what follows it.
fn line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = data.iter().position(|&b| b == b'\n')?;
    let text = &data[..end];
    Some((text.strip_suffix(b"\r").unwrap_or(text), &data[end + 1..]))
}

/// The server's auth configuration, as a trigger → profile table.
fn profile(trigger: &str) -> AuthProfile {
    match trigger {
        "grafana" => AuthProfile::HmacSha256 {
            header: HeaderName::from_static("x-grafana-alerting-signature"),
            prefix: String::new(),
            secrets: vec![b"old-secret".to_vec(), SECRET.to_vec()],
        },
        "hello" => AuthProfile::HmacSha256 {
            header: HeaderName::from_static("x-hub-signature-256"),
            prefix: "sha256=".into(),
            secrets: vec![SECRET.to_vec()],
        },
        "splunk" | "splunk-brute-force" => AuthProfile::UrlToken {
            tokens: vec![TOKEN.into(), "next-token".into()],
        },
        "elastic" | "elastic-ssh-compromise" => AuthProfile::Basic {
            credentials: vec![("elastic".into(), "fuzz-password".into())],
        },
        "elastic-threat-intel" => AuthProfile::StandardWebhooks {
            secrets: vec![format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(SECRET)
            )],
            tolerance: TOLERANCE,
        },
        "phishing-reports" => AuthProfile::Public,
        _ => AuthProfile::Bearer {
            tokens: vec![TOKEN.into(), "next-token".into()],
        },
    }
}

/// Signs the delivery as its sender would; false when the profile signs nothing or the
/// delivery lacks what the signature covers (then nothing is promised).
fn sign(profile: &AuthProfile, headers: &mut HeaderMap, body: &[u8]) -> bool {
    let mac = |parts: &[&[u8]]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
        parts.iter().for_each(|part| mac.update(part));
        mac.finalize().into_bytes()
    };
    match profile {
        AuthProfile::HmacSha256 { header, prefix, .. } => {
            let hex: String = mac(&[body]).iter().map(|b| format!("{b:02x}")).collect();
            let value = HeaderValue::from_str(&format!("{prefix}{hex}")).expect("ASCII");
            headers.insert(header.clone(), value);
            true
        }
        AuthProfile::StandardWebhooks { .. } => {
            let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let (Some(id), Some(timestamp)) = (text("webhook-id"), text("webhook-timestamp"))
            else {
                return false;
            };
            let fresh = timestamp
                .trim()
                .parse::<u64>()
                .is_ok_and(|sent| sent.abs_diff(NOW) <= TOLERANCE.as_secs());
            let signature = base64::engine::general_purpose::STANDARD.encode(mac(&[
                id.as_bytes(),
                b".",
                timestamp.trim().as_bytes(),
                b".",
                body,
            ]));
            let value = HeaderValue::from_str(&format!("v1,{signature}")).expect("ASCII");
            headers.insert("webhook-signature", value);
            fresh
        }
        _ => false,
    }
}

fn playbooks() -> &'static [Playbook] {
    static PLAYBOOKS: OnceLock<Vec<Playbook>> = OnceLock::new();
    PLAYBOOKS.get_or_init(|| {
        [
            include_str!("../../docs/senders/alertmanager.yaml"),
            include_str!("../../docs/senders/chronicle.yaml"),
            include_str!("../../docs/senders/elastic.yaml"),
            include_str!("../../docs/senders/grafana.yaml"),
            include_str!("../../docs/senders/qradar.yaml"),
            include_str!("../../docs/senders/sentinel.yaml"),
            include_str!("../../docs/senders/splunk.yaml"),
            include_str!("../../docs/senders/suricata.yaml"),
            include_str!("../../docs/senders/wazuh.yaml"),
            include_str!("../../playbooks/contain-brute-force.yaml"),
            include_str!("../../playbooks/escalate-with-connectors.yaml"),
            include_str!("../../playbooks/hello-webhook.yaml"),
            include_str!("../../playbooks/investigate-suspicious-process.yaml"),
            include_str!("../../playbooks/malicious-ip.yaml"),
            include_str!("../../playbooks/phishing-url-triage.yaml"),
        ]
        .into_iter()
        .map(|source| {
            playbook::compile(source)
                .unwrap_or_else(|d| panic!("an example does not compile: {d:?}"))
        })
        .collect()
    })
}
