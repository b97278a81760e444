//! The real plugins against loopback servers that speak the APIs they call (AbuseIPDB v2,
//! VirusTotal v3, Slack Web API and incoming webhooks), and a whole playbook run through the runner.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use playbook::ErrorKind;
use runner::{MemoryJournal, RunStatus, Runner, Secrets};
use serde_json::{Value, json};

use crate::{call, granted, host_with, invoke, serve};

const ABUSEIPDB_KEY: &str = "abuse-key-7f3a9c";
const VIRUSTOTAL_KEY: &str = "vt-key-51d0e2";
const SLACK_TOKEN: &str = "xoxb-test-token-0042";

/// AbuseIPDB v2 `/api/v2/check`, as documented: `Key` header, `ipAddress` and `maxAgeInDays`.
fn abuseipdb(hits: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/api/v2/check",
        get(move |headers: HeaderMap, Query(query): Query<std::collections::HashMap<String, String>>| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                if headers.get("key").and_then(|v| v.to_str().ok()) != Some(ABUSEIPDB_KEY) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"errors": [{"detail": "Authentication failed. Your API key is either missing, incorrect, or revoked.", "status": 401}]})),
                    );
                }
                let ip = query.get("ipAddress").cloned().unwrap_or_default();
                let score = if ip == "185.220.101.45" { 100 } else { 0 };
                (
                    StatusCode::OK,
                    Json(json!({"data": {
                        "ipAddress": ip, "isPublic": true, "ipVersion": 4, "isWhitelisted": false,
                        "abuseConfidenceScore": score, "countryCode": "DE", "usageType": "Data Center/Web Hosting/Transit",
                        "isp": "Relayon", "domain": "relayon.org", "hostnames": [], "isTor": score == 100,
                        "totalReports": if score == 100 { 1873 } else { 0 }, "numDistinctUsers": 12,
                        "lastReportedAt": "2026-11-22T21:14:02+00:00"
                    }})),
                )
            }
        }),
    )
}

/// VirusTotal v3 files, URLs and domains: `x-apikey` header, 404 `NotFoundError` for unknown items.
fn virustotal() -> Router {
    async fn lookup(
        headers: HeaderMap,
        Path((collection, id)): Path<(String, String)>,
    ) -> impl IntoResponse {
        if headers.get("x-apikey").and_then(|v| v.to_str().ok()) != Some(VIRUSTOTAL_KEY) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(
                    json!({"error": {"code": "WrongCredentialsError", "message": "Wrong API key"}}),
                ),
            );
        }
        // The id of `http://evil.example/login` is its unpadded URL-safe base64.
        let known = matches!(
            (collection.as_str(), id.as_str()),
            ("files", "44d88612fea8a8f36de82e1278abb02f")
                | ("urls", "aHR0cDovL2V2aWwuZXhhbXBsZS9sb2dpbg")
                | ("domains", "evil.example")
        );
        if !known {
            return (
                StatusCode::NOT_FOUND,
                Json(
                    json!({"error": {"code": "NotFoundError", "message": format!("Resource \"{id}\" not found")}}),
                ),
            );
        }
        (
            StatusCode::OK,
            Json(
                json!({"data": {"id": id, "type": collection.trim_end_matches('s'), "attributes": {
                    "last_analysis_stats": {"malicious": 61, "suspicious": 2, "harmless": 0, "undetected": 9, "timeout": 0},
                    "reputation": -87
                }}}),
            ),
        )
    }
    Router::new().route("/api/v3/{collection}/{id}", get(lookup))
}

/// Slack `chat.postMessage` (errors as HTTP 200 with `ok: false`) and an incoming webhook.
fn slack() -> Router {
    Router::new()
        .route(
            "/api/chat.postMessage",
            post(|headers: HeaderMap, Json(body): Json<Value>| async move {
                let bearer = format!("Bearer {SLACK_TOKEN}");
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
                    return (StatusCode::OK, [("retry-after", "0")], Json(json!({"ok": false, "error": "invalid_auth"})));
                }
                match body["channel"].as_str() {
                    Some("#busy") => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], Json(json!({"ok": false, "error": "ratelimited"}))),
                    Some("#nowhere") => (StatusCode::OK, [("retry-after", "0")], Json(json!({"ok": false, "error": "channel_not_found"}))),
                    _ => (
                        StatusCode::OK,
                        [("retry-after", "0")],
                        Json(json!({"ok": true, "channel": "C024BE91L", "ts": "1795400000.000100", "message": {"text": body["text"]}})),
                    ),
                }
            }),
        )
        .route("/services/T000/B000/XXXX", post(|| async { "ok" }))
}

fn host_of(addr: std::net::SocketAddr) -> String {
    format!("127.0.0.1:{}", addr.port())
}

#[tokio::test]
async fn enrich_ioc_checks_an_ip_on_abuseipdb_and_caches_the_answer() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (addr, seen) = serve(abuseipdb(hits.clone())).await;
    let host = host_with(&["enrich-ioc"], true).await;
    let check = |ip: &str| {
        granted(
            call(
                "enrich-ioc",
                "check-ip",
                json!({"ip": ip, "base_url": format!("http://{addr}")}),
            ),
            &[&host_of(addr)],
            &[("abuseipdb_key", ABUSEIPDB_KEY)],
        )
    };
    let output = invoke(&host, check("185.220.101[.]45"))
        .await
        .expect("lookup");
    assert_eq!(output["verdict"], "malicious");
    assert_eq!(output["score"], 100);
    assert_eq!(output["reports"], 1873);
    assert_eq!(output["is_tor"], true);
    assert!(
        seen.all()[0]
            .uri
            .contains("ipAddress=185.220.101.45&maxAgeInDays=90"),
        "{:?}",
        seen.all()[0].uri
    );

    let again = invoke(&host, check("185.220.101.45"))
        .await
        .expect("cached lookup");
    assert_eq!(again, output);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the second lookup comes from the plugin's cache"
    );

    let clean = invoke(&host, check("198.51.100.20")).await.expect("lookup");
    assert_eq!(clean["verdict"], "clean");

    let unauthorized = granted(
        call(
            "enrich-ioc",
            "check-ip",
            json!({"ip": "203.0.113.9", "base_url": format!("http://{addr}")}),
        ),
        &[&host_of(addr)],
        &[],
    );
    let error = invoke(&host, unauthorized)
        .await
        .expect_err("no key granted");
    assert_eq!(error.kind, ErrorKind::Unauthorized);

    let bad = invoke(
        &host,
        call("enrich-ioc", "check-ip", json!({"ip": "not-an-ip"})),
    )
    .await
    .expect_err("invalid");
    assert_eq!(bad.kind, ErrorKind::InvalidInput);
}

#[tokio::test]
async fn enrich_ioc_checks_hashes_urls_and_domains_on_virustotal() {
    let (addr, _seen) = serve(virustotal()).await;
    let host = host_with(&["enrich-ioc"], true).await;
    let base = format!("http://{addr}");
    let lookup = |action: &str, input: Value| {
        let mut input = input;
        input["base_url"] = json!(base);
        granted(
            call("enrich-ioc", action, input),
            &[&host_of(addr)],
            &[("virustotal_key", VIRUSTOTAL_KEY)],
        )
    };
    let hash = invoke(
        &host,
        lookup(
            "check-hash",
            json!({"hash": "44D88612FEA8A8F36DE82E1278ABB02F"}),
        ),
    )
    .await
    .expect("hash");
    assert_eq!(hash["verdict"], "malicious");
    assert_eq!(hash["malicious"], 61);
    assert_eq!(hash["score"], 84);

    let url = invoke(
        &host,
        lookup("check-url", json!({"url": "hxxp://evil[.]example/login"})),
    )
    .await
    .expect("url");
    assert_eq!(url["indicator"], "http://evil.example/login");
    assert_eq!(url["verdict"], "malicious");

    let domain = invoke(
        &host,
        lookup("check-domain", json!({"domain": "evil[.]example"})),
    )
    .await
    .expect("domain");
    assert_eq!(domain["verdict"], "malicious");

    let unknown = invoke(&host, lookup("check-hash", json!({"hash": "0".repeat(64)})))
        .await
        .expect("unknown hash");
    assert_eq!(unknown["verdict"], "unknown");
    assert_eq!(unknown["found"], false);

    let invalid = invoke(&host, lookup("check-hash", json!({"hash": "xyz"})))
        .await
        .expect_err("not a hash");
    assert_eq!(invalid.kind, ErrorKind::InvalidInput);
}

#[tokio::test]
async fn notify_slack_posts_messages_and_maps_slack_errors() {
    let (addr, seen) = serve(slack()).await;
    let host = host_with(&["notify-slack"], true).await;
    let post = |channel: &str, token: Option<&str>| {
        let secrets: Vec<(&str, &str)> = token
            .map(|t| vec![("slack_bot_token", t)])
            .unwrap_or_default();
        granted(
            call(
                "notify-slack",
                "post-message",
                json!({
                    "channel": channel,
                    "text": "Blocked 185[.]220[.]101[.]45",
                    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Blocked* 185[.]220[.]101[.]45"}}],
                    "base_url": format!("http://{addr}")
                }),
            ),
            &[&host_of(addr)],
            &secrets,
        )
    };
    let posted = invoke(&host, post("#soc", Some(SLACK_TOKEN)))
        .await
        .expect("posted");
    assert_eq!(
        posted,
        json!({"channel": "C024BE91L", "ts": "1795400000.000100"})
    );
    let body: Value = serde_json::from_str(&seen.all()[0].body).expect("JSON body");
    assert_eq!(body["blocks"][0]["type"], "section");

    let cases = [
        ("#soc", None, ErrorKind::Unauthorized),
        ("#nowhere", Some(SLACK_TOKEN), ErrorKind::NotFound),
        ("#busy", Some(SLACK_TOKEN), ErrorKind::RateLimited),
    ];
    for (channel, token, kind) in cases {
        let error = invoke(&host, post(channel, token))
            .await
            .expect_err("refused");
        assert_eq!(error.kind, kind, "{channel}: {error}");
    }
    let limited = invoke(&host, post("#busy", Some(SLACK_TOKEN)))
        .await
        .expect_err("rate limited");
    assert_eq!(limited.retry_after_ms, Some(7000));

    let webhook_url = format!("http://{addr}/services/T000/B000/XXXX");
    let hook = granted(
        call("notify-slack", "webhook", json!({"text": "Run finished"})),
        &[&host_of(addr)],
        &[("slack_webhook_url", webhook_url.as_str())],
    );
    assert_eq!(
        invoke(&host, hook).await.expect("delivered"),
        json!({"delivered": true})
    );
}

#[tokio::test]
async fn a_playbook_runs_real_plugins_end_to_end_and_keeps_secrets_out_of_the_record() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (abuse, _) = serve(abuseipdb(hits)).await;
    let (slack_addr, slack_seen) = serve(slack()).await;
    let yaml = format!(
        r##"
name: e2e
trigger: {{ webhook: siem, public: true }}
secrets: [abuseipdb_key, slack_bot_token]
plugins:
  enrich-ioc: {{ hosts: ["127.0.0.1:{abuse_port}"], secrets: [abuseipdb_key] }}
  notify-slack: {{ hosts: ["127.0.0.1:{slack_port}"], secrets: [slack_bot_token] }}
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    with: {{ ip: "{{{{ trigger.src_ip }}}}", base_url: "http://127.0.0.1:{abuse_port}" }}
  - id: notify
    uses: notify-slack/post-message
    needs: [enrich]
    if: steps.enrich.output.verdict == 'malicious'
    with:
      channel: "#soc"
      text: "{{{{ trigger.src_ip | defang }}}} scored {{{{ steps.enrich.output.score }}}}"
      base_url: "http://127.0.0.1:{slack_port}"
outputs:
  verdict: "{{{{ steps.enrich.output.verdict }}}}"
  ts: "{{{{ steps.notify.output.ts }}}}"
"##,
        abuse_port = abuse.port(),
        slack_port = slack_addr.port()
    );
    let pb = playbook::compile(&yaml).unwrap_or_else(|d| panic!("{d:?}"));
    let host = host_with(&["enrich-ioc", "notify-slack"], true).await;
    let journal = Arc::new(MemoryJournal::new());
    let runner = Runner::new(Arc::new(host), journal.clone());
    let secrets = Secrets::new(
        [
            ("abuseipdb_key".to_owned(), ABUSEIPDB_KEY.to_owned()),
            ("slack_bot_token".to_owned(), SLACK_TOKEN.to_owned()),
        ]
        .into(),
    );
    let state = runner
        .start(
            &pb,
            "run-e2e",
            json!({"src_ip": "185.220.101.45"}),
            &secrets,
        )
        .await
        .expect("runs");
    assert_eq!(state.status, RunStatus::Succeeded, "{:?}", state.error);
    assert_eq!(
        state.outputs,
        Some(json!({"verdict": "malicious", "ts": "1795400000.000100"}))
    );
    let slack_body: Value = serde_json::from_str(&slack_seen.all()[0].body).expect("JSON");
    assert_eq!(slack_body["text"], "185[.]220[.]101[.]45 scored 100");

    let record = serde_json::to_string(&journal.events("run-e2e")).expect("serializable");
    for secret in [ABUSEIPDB_KEY, SLACK_TOKEN] {
        assert!(!record.contains(secret), "{secret} leaked into the journal");
    }
}
