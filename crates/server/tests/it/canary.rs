//! A secret canary: one unique API key, used by a plugin on a run that succeeds, one that
//! succeeds after a retry and one that fails, against an API that echoes the key back in its
//! error answers (plain, base64, hex, URL-encoded). Afterwards, no form of the key may be
//! anywhere the server writes or answers: store keys and streams (Redis) or files (SQLite),
//! log lines, API answers, metrics, audit records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use runner::{RunEvent, RunStatus};
use serde_json::json;

use crate::{BACKENDS, Backend, Server, VIEWER_TOKEN, run_id};

/// `/`, `+` and `=` make its URL encoding differ from it.
const CANARY: &str = "cnry-Q7/zX9+riposte=3e1f8d0b";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn url_encoded(text: &str, upper: bool) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ if upper => format!("%{byte:02X}"),
            _ => format!("%{byte:02x}"),
        })
        .collect()
}

/// Every form of the canary to look for, with its name. Base64 of the key inside a longer value
/// depends on where it starts: each of the three alignments, with the characters that also
/// depend on its neighbours cut off.
fn forms() -> Vec<(String, String)> {
    let mut forms = vec![
        ("plain".to_owned(), CANARY.to_owned()),
        ("hex".to_owned(), hex(CANARY.as_bytes())),
        (
            "HEX".to_owned(),
            hex(CANARY.as_bytes()).to_ascii_uppercase(),
        ),
        ("url-encoded".to_owned(), url_encoded(CANARY, true)),
        ("url-encoded (lower)".to_owned(), url_encoded(CANARY, false)),
        (
            "form-encoded".to_owned(),
            url_encoded(CANARY, true).replace("%2B", "+"),
        ),
    ];
    let engines = [
        ("base64", base64::engine::general_purpose::STANDARD),
        ("base64url", base64::engine::general_purpose::URL_SAFE),
    ];
    for (name, engine) in engines {
        for offset in 0..3 {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(CANARY.as_bytes());
            let encoded = engine.encode(&bytes);
            let start = if offset == 0 { 0 } else { 4 };
            let end = encoded.len() - 4;
            forms.push((
                format!("{name} at offset {offset}"),
                encoded[start..end].to_owned(),
            ));
        }
    }
    forms
}

/// AbuseIPDB, except that it echoes the caller's key back in every error, in four encodings.
fn echoing_abuseipdb(calls: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/api/v2/check",
        get(
            move |headers: HeaderMap,
                  Query(query): Query<std::collections::HashMap<String, String>>| {
                let calls = Arc::clone(&calls);
                async move {
                    let key = headers
                        .get("key")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if key != CANARY {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"errors": []})));
                    }
                    let echo = format!(
                        "key={key} b64={} hex={} url={}",
                        base64::engine::general_purpose::STANDARD.encode(&key),
                        hex(key.as_bytes()),
                        url_encoded(&key, true)
                    );
                    let ip = query.get("ipAddress").cloned().unwrap_or_default();
                    let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                    match ip.as_str() {
                        "198.51.100.20" if first => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"errors": [{"detail": echo}]})),
                        ),
                        "198.51.100.30" => (
                            StatusCode::BAD_REQUEST,
                            Json(json!({"errors": [{"detail": echo}]})),
                        ),
                        _ => (
                            StatusCode::OK,
                            Json(json!({"data": {
                                "ipAddress": ip, "abuseConfidenceScore": 40, "countryCode": "NL",
                                "isp": "Example", "totalReports": 3, "isTor": false,
                            }})),
                        ),
                    }
                }
            },
        ),
    )
}

fn playbook(port: u16) -> String {
    format!(
        r#"
name: canary
trigger: {{ webhook: siem, auth: siem }}
secrets: [abuseipdb_key]
plugins:
  enrich-ioc: {{ hosts: ["127.0.0.1:{port}"], secrets: [abuseipdb_key] }}
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    timeout: 3s
    retry: {{ max_attempts: 2, backoff: 50ms }}
    with: {{ ip: "{{{{ trigger.src_ip }}}}", base_url: "http://127.0.0.1:{port}" }}
outputs:
  verdict: "{{{{ steps.enrich.output.verdict }}}}"
"#
    )
}

/// Log lines, captured for the whole test process (each test runs in its own process).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every key of the server's Redis, with its whole content, as text.
async fn redis_dump(url: &str) -> String {
    let client = redis::Client::open(url).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .expect("keys");
    assert!(keys.len() > 5, "{keys:?}");
    let mut dump = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("type");
        let command = match kind.as_str() {
            "string" => vec!["GET"],
            "hash" => vec!["HGETALL"],
            "stream" => vec!["XRANGE", "-", "+"],
            "zset" => vec!["ZRANGE", "0", "-1", "WITHSCORES"],
            "list" => vec!["LRANGE", "0", "-1"],
            "set" => vec!["SMEMBERS"],
            other => panic!("a Redis key of type {other}: {key}"),
        };
        let mut cmd = redis::cmd(command[0]);
        cmd.arg(&key);
        for arg in &command[1..] {
            cmd.arg(*arg);
        }
        let value: redis::Value = cmd.query_async(&mut connection).await.expect("read");
        dump.push_str(&format!("{key} => {value:?}\n"));
    }
    dump
}

/// Every file under `dir`, as (lossy) text.
fn files_dump(dir: &std::path::Path) -> String {
    let mut dump = String::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            dump.push_str(&files_dump(&path));
        } else {
            dump.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("read"),
            ));
        }
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_canary_appears_nowhere_in_any_encoding() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .init();
    let forms = forms();
    for backend in BACKENDS {
        let calls = Arc::new(AtomicUsize::new(0));
        let (address, _) = test_support::serve(echoing_abuseipdb(Arc::clone(&calls))).await;
        let server = Server::start_with_env(
            backend,
            &[("canary.yaml", playbook(address.port()))],
            4,
            &[("RIPOSTE_SECRET_ABUSEIPDB_KEY", CANARY)],
        )
        .await;
        let mut answers = String::new();
        let mut runs = Vec::new();
        for ip in ["198.51.100.10", "198.51.100.20", "198.51.100.30"] {
            calls.store(0, Ordering::SeqCst);
            let (status, answer) = server
                .post_signed("siem", &format!(r#"{{"src_ip": "{ip}"}}"#), &[])
                .await;
            assert_eq!(status, 202, "{answer}");
            answers.push_str(&answer.to_string());
            let run = run_id(&answer);
            let state = server.finished(&run, Duration::from_secs(20)).await;
            runs.push((run, state));
        }
        // The three paths were taken, with the real key, and the echoes reached the server.
        assert_eq!(runs[0].1.status, RunStatus::Succeeded, "{backend:?}");
        assert_eq!(runs[1].1.status, RunStatus::Succeeded, "{backend:?}");
        assert!(
            server.events(&runs[1].0).await.iter().any(|event| matches!(
                event,
                RunEvent::StepRetrying { error, .. } if error.message.contains("[REDACTED]")
            )),
            "{backend:?}: the retry path did not see the echoed key"
        );
        assert_eq!(runs[2].1.status, RunStatus::Failed, "{backend:?}");
        let failure = runs[2].1.step("enrich").and_then(|step| step.error.clone());
        assert!(
            failure
                .as_ref()
                .is_some_and(|error| error.message.contains("key=[REDACTED]")),
            "{backend:?}: {failure:?}"
        );

        // Everything the server answers to an operator.
        let mut paths: Vec<String> = [
            "/api/v1/runs",
            "/api/v1/playbooks",
            "/api/v1/plugins",
            "/metrics",
        ]
        .map(str::to_owned)
        .into();
        for (run, _) in &runs {
            paths.push(format!("/api/v1/runs/{run}"));
            paths.push(format!("/api/v1/runs/{run}/timeline"));
        }
        for path in paths {
            let response = server
                .client
                .get(format!("{}{path}", server.base))
                .bearer_auth(VIEWER_TOKEN)
                .send()
                .await
                .expect("answer");
            assert_eq!(response.status(), 200, "{path}");
            answers.push_str(&response.text().await.expect("text"));
        }
        assert!(
            answers.contains("[REDACTED]"),
            "the failure's message is in the answers"
        );

        let stored = match backend {
            Backend::Redis => {
                let url = server.redis.as_ref().expect("redis").url();
                redis_dump(&url).await
            }
            Backend::Sqlite => files_dump(&server.data),
        };
        assert!(
            stored.contains("198.51.100.30"),
            "{backend:?}: the dump holds the runs"
        );
        let report = store::audit::verify_store(server.store.as_ref())
            .await
            .expect("verify");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        server.stop().await;

        let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
        assert!(logged.contains("Run started."), "the logs were captured");
        for (place, text) in [
            ("store", &stored),
            ("API answers", &answers),
            ("logs", &logged),
        ] {
            for (form, needle) in &forms {
                assert!(
                    !text.contains(needle.as_str()),
                    "{backend:?}: the canary ({form}: {needle}) is in the {place}"
                );
            }
        }
    }
}
