//! Loopback servers that speak the real APIs plugins call, as documented: AbuseIPDB v2, VirusTotal
//! v3, the Slack Web API and incoming webhooks. Each checks its credential header the way the real
//! service does and answers with the real shapes, including the error ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

pub const ABUSEIPDB_KEY: &str = "abuse-key-7f3a9c";
pub const VIRUSTOTAL_KEY: &str = "vt-key-51d0e2";
pub const SLACK_TOKEN: &str = "xoxb-test-token-0042";

/// AbuseIPDB v2 `/api/v2/check`, as documented: `Key` header, `ipAddress` and `maxAgeInDays`.
pub fn abuseipdb(hits: Arc<AtomicUsize>) -> Router {
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
pub fn virustotal() -> Router {
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
pub fn slack() -> Router {
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
        .route("/api/chat.update", post(slack_method))
        .route("/api/chat.postEphemeral", post(slack_method))
        .route("/services/T000/B000/XXXX", post(|| async { "ok" }))
}

/// `chat.update` and `chat.postEphemeral` as Slack answers them: `ok` with the bot token,
/// `invalid_auth` (still HTTP 200) without.
async fn slack_method(headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    let bearer = format!("Bearer {SLACK_TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    Json(
        json!({"ok": true, "channel": body["channel"], "ts": body["ts"].as_str().unwrap_or("1795400000.000200")}),
    )
}
