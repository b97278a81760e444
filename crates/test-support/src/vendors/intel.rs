//! Threat intelligence and chat, as their APIs document them:
//!
//! | Server | API | Credential |
//! |---|---|---|
//! | [`virustotal`] | VirusTotal API v3 (docs.virustotal.com/reference) | `x-apikey` header |
//! | [`abuseipdb`] | AbuseIPDB APIv2 (docs.abuseipdb.com) | `Key` header |
//! | [`greynoise`] | GreyNoise API v3, Community and IP lookup (docs.greynoise.io) | `key` header |
//! | [`shodan`] | Shodan REST API (developer.shodan.io/api) | `key` query parameter |
//! | [`misp`] | MISP REST API, OpenAPI of 2.4/2.5 (misp-project.org/openapi) | `Authorization` header |
//! | [`slack`] | Slack Web API (api.slack.com/methods) | bot token as a bearer |
//! | [`teams`] | Teams Workflows webhook (a Logic Apps request trigger) | `sig` query parameter |
//!
//! Each checks the credential where the vendor reads it and answers the vendor's own error when it
//! is missing or wrong, checks the request's shape (method, path, query, the body fields the
//! vendor requires) and answers the vendor's 400/422 shape when it is wrong, and answers success
//! with realistic data: one known-bad address ([`TOR_EXIT`]), domain, file and URL each, and
//! "never seen" for the rest.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

pub const VIRUSTOTAL_KEY: &str = "vt-intel-3f9a62c1d7e04b85";
pub const ABUSEIPDB_KEY: &str = "abuseipdb-intel-51c0e7a9f2";
pub const GREYNOISE_KEY: &str = "gn-intel-8d4b1e6f0a2c";
pub const SHODAN_KEY: &str = "shodanIntelKey7Q2mX9vR4tLp";
/// MISP auth keys are 40 characters.
pub const MISP_KEY: &str = "Zq8mT3vR7xK1pL5nW9cB2fH6jD4sG0aY8eU3iO7k";
pub const SLACK_TOKEN: &str = "xoxb-1111111111-2222222222222-intelTokenAbCdEf";
/// The `sig` of the Teams workflow URL ([`teams_workflow_url`]).
pub const TEAMS_SIG: &str = "pQ3vX8kL1mN7rT2wY5zA9cE4gJ6hB0dF1sU3iO8qW2e";
/// The workflow's path on its host.
pub const TEAMS_WORKFLOW_PATH: &str =
    "/workflows/4f1c9a7e2b8d4c6fa0e35d91b7c2e684/triggers/manual/paths/invoke";

/// A Tor exit node every intelligence server knows as abusive.
pub const TOR_EXIT: &str = "185.220.101.45";
/// A domain VirusTotal, Shodan and MISP know as phishing.
pub const EVIL_DOMAIN: &str = "evil.example";
/// The EICAR test file's hashes, which VirusTotal knows.
pub const EICAR_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
pub const EICAR_SHA1: &str = "3395856ce81f2b7382dee72602f798b642f14140";
pub const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
/// A phishing URL VirusTotal has analysed.
pub const EVIL_URL: &str = "http://evil.example/login";
/// A mass scanner GreyNoise has seen (noise, malicious).
pub const SCANNER: &str = "45.83.66.65";
/// A business service GreyNoise knows (RIOT).
pub const GOOGLE_DNS: &str = "8.8.8.8";
/// The Slack channel id `#soc` resolves to, and the `ts` of the message posted there.
pub const SLACK_CHANNEL_ID: &str = "C024BE91L";
pub const SLACK_TS: &str = "1795400000.000100";
/// The event MISP holds [`TOR_EXIT`] in.
pub const MISP_EVENT_ID: &str = "1402";

/// The URL of the Teams workflow served by [`teams`] at `address`, signed with `sig`, as
/// Workflows shows it (`api-version`, `sp`, `sv` and `sig` query parameters).
pub fn teams_workflow_url(address: SocketAddr, sig: &str) -> String {
    format!(
        "http://{address}{TEAMS_WORKFLOW_PATH}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}"
    )
}

// ----------------------------------------------------------------------------------------------
// VirusTotal API v3
// ----------------------------------------------------------------------------------------------

/// VirusTotal API v3 under `/api/v3`: `GET /ip_addresses/{ip}`, `/domains/{domain}`,
/// `/files/{md5|sha1|sha256}`, `/urls/{id}` (a URL's unpadded URL-safe base64). The key is the
/// `x-apikey` header (`AuthenticationRequiredError` without it, `WrongCredentialsError` when
/// wrong, both 401); unknown items are 404 `NotFoundError`; a malformed id is 400
/// `InvalidArgumentError`.
pub fn virustotal() -> Router {
    Router::new().route("/api/v3/{collection}/{id}", get(virustotal_object))
}

async fn virustotal_object(
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    let vt_error = |status: StatusCode, code: &str, message: String| {
        reply(status, json!({"error": {"code": code, "message": message}}))
    };
    match header(&headers, "x-apikey") {
        None => {
            return vt_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationRequiredError",
                "X-Apikey header is missing".into(),
            );
        }
        Some(key) if key != VIRUSTOTAL_KEY => {
            return vt_error(
                StatusCode::UNAUTHORIZED,
                "WrongCredentialsError",
                "Wrong API key".into(),
            );
        }
        Some(_) => {}
    }
    let links = json!({"self": format!("https://www.virustotal.com/api/v3/{collection}/{id}")});
    let object = |kind: &str, id: &str, attributes: Value| {
        reply(
            StatusCode::OK,
            json!({"data": {"id": id, "type": kind, "links": links, "attributes": attributes}}),
        )
    };
    match collection.as_str() {
        "ip_addresses" => {
            if id.parse::<IpAddr>().is_err() {
                return vt_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgumentError",
                    format!("\"{id}\" is not a valid IP address"),
                );
            }
            if id != TOR_EXIT {
                return vt_error(
                    StatusCode::NOT_FOUND,
                    "NotFoundError",
                    format!("IP address \"{id}\" not found"),
                );
            }
            object(
                "ip_address",
                &id,
                json!({
                    "as_owner": "Stiftung Erneuerbare Freiheit",
                    "asn": 60729,
                    "continent": "EU",
                    "country": "DE",
                    "network": "185.220.101.0/24",
                    "regional_internet_registry": "RIPE NCC",
                    "reputation": -35,
                    "tags": [],
                    "last_analysis_date": 1_795_398_000,
                    "last_analysis_stats": {"harmless": 55, "malicious": 14, "suspicious": 3, "undetected": 22, "timeout": 0},
                    "total_votes": {"harmless": 0, "malicious": 9}
                }),
            )
        }
        "domains" => {
            if id.is_empty() || id.contains(['/', ' ']) {
                return vt_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgumentError",
                    format!("\"{id}\" is not a valid domain"),
                );
            }
            if id != EVIL_DOMAIN {
                return vt_error(
                    StatusCode::NOT_FOUND,
                    "NotFoundError",
                    format!("Domain \"{id}\" not found"),
                );
            }
            object(
                "domain",
                &id,
                json!({
                    "categories": {"Forcepoint ThreatSeeker": "phishing and other frauds", "Sophos": "phishing"},
                    "creation_date": 1_790_035_200,
                    "registrar": "NameCheap, Inc.",
                    "reputation": -12,
                    "tags": ["dga"],
                    "last_analysis_date": 1_795_390_000,
                    "last_analysis_stats": {"harmless": 57, "malicious": 9, "suspicious": 1, "undetected": 27, "timeout": 0},
                    "last_dns_records": [{"type": "A", "value": "203.0.113.7", "ttl": 300}]
                }),
            )
        }
        "files" => {
            let valid =
                matches!(id.len(), 32 | 40 | 64) && id.chars().all(|c| c.is_ascii_hexdigit());
            if !valid {
                return vt_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgumentError",
                    format!("\"{id}\" is not a valid file hash"),
                );
            }
            let hash = id.to_ascii_lowercase();
            if ![EICAR_MD5, EICAR_SHA1, EICAR_SHA256].contains(&hash.as_str()) {
                return vt_error(
                    StatusCode::NOT_FOUND,
                    "NotFoundError",
                    format!("File \"{id}\" not found"),
                );
            }
            object(
                "file",
                EICAR_SHA256,
                json!({
                    "md5": EICAR_MD5,
                    "sha1": EICAR_SHA1,
                    "sha256": EICAR_SHA256,
                    "meaningful_name": "eicar.com",
                    "names": ["eicar.com", "eicar.com.txt"],
                    "size": 68,
                    "type_description": "Text",
                    "type_tag": "text",
                    "first_submission_date": 1_148_301_722,
                    "reputation": 3421,
                    "tags": ["text", "attachment"],
                    "popular_threat_classification": {
                        "suggested_threat_label": "virus.eicar/test",
                        "popular_threat_category": [{"count": 18, "value": "virus"}],
                        "popular_threat_name": [{"count": 40, "value": "eicar"}]
                    },
                    "last_analysis_date": 1_795_380_000,
                    "last_analysis_stats": {"harmless": 0, "malicious": 63, "suspicious": 0, "undetected": 9, "timeout": 0, "type-unsupported": 4, "failure": 0}
                }),
            )
        }
        "urls" => {
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&id)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if url.as_deref() != Some(EVIL_URL) {
                return vt_error(
                    StatusCode::NOT_FOUND,
                    "NotFoundError",
                    format!("URL \"{id}\" not found"),
                );
            }
            // A URL object's id is the SHA-256 of the URL.
            let sha256: String = sha2::Sha256::digest(EVIL_URL.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            object(
                "url",
                &sha256,
                json!({
                    "url": EVIL_URL,
                    "last_final_url": "https://evil.example/login/",
                    "title": "Sign in to your account",
                    "last_http_response_code": 200,
                    "categories": {"Sophos": "phishing", "BitDefender": "phishing"},
                    "reputation": -8,
                    "tags": ["redirect"],
                    "first_submission_date": 1_795_300_000,
                    "last_analysis_date": 1_795_399_000,
                    "last_analysis_stats": {"harmless": 61, "malicious": 11, "suspicious": 2, "undetected": 20, "timeout": 0}
                }),
            )
        }
        other => vt_error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            format!("Resource \"{other}\" not found"),
        ),
    }
}

// ----------------------------------------------------------------------------------------------
// AbuseIPDB APIv2
// ----------------------------------------------------------------------------------------------

/// AbuseIPDB APIv2 under `/api/v2`: `GET /check` (`ipAddress`, `maxAgeInDays` 1–365),
/// `GET /check-block` (`network` in CIDR notation, at most a /24 here as on the free plan),
/// `POST /report` (form fields `ip`, `categories` as comma-separated ids 1–23, `comment`,
/// `timestamp`). The key is the `Key` header; every error is
/// `{"errors": [{"detail", "status", "source": {"parameter"}}]}` (401 for the key, 422 for the
/// parameters, 429 when an address is reported twice within 15 minutes, with `Retry-After`).
pub fn abuseipdb() -> Router {
    Router::new()
        .route("/api/v2/check", get(abuseipdb_check))
        .route("/api/v2/check-block", get(abuseipdb_check_block))
        .route("/api/v2/report", post(abuseipdb_report))
        .with_state(Arc::new(Mutex::new(BTreeSet::<String>::new())))
}

fn abuseipdb_error(status: StatusCode, detail: &str, parameter: Option<&str>) -> Response {
    let mut error = json!({"detail": detail, "status": status.as_u16()});
    if let Some(parameter) = parameter {
        error["source"] = json!({"parameter": parameter});
    }
    reply(status, json!({"errors": [error]}))
}

fn abuseipdb_unauthorized(headers: &HeaderMap) -> Option<Response> {
    (header(headers, "key") != Some(ABUSEIPDB_KEY)).then(|| {
        abuseipdb_error(
            StatusCode::UNAUTHORIZED,
            "Authentication failed. Your API key is either missing, incorrect, or revoked. Note: The APIv2 key differs from the APIv1 key.",
            None,
        )
    })
}

/// AbuseIPDB's refusal of `maxAgeInDays` (optional, 1 to 365), if it is out of range.
fn abuseipdb_max_age_refused(query: &HashMap<String, String>) -> Option<Response> {
    let days = query.get("maxAgeInDays")?;
    let valid = days
        .parse::<u32>()
        .is_ok_and(|days| (1..=365).contains(&days));
    (!valid).then(|| {
        abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The max age in days must be between 1 and 365.",
            Some("maxAgeInDays"),
        )
    })
}

async fn abuseipdb_check(
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = abuseipdb_unauthorized(&headers) {
        return refused;
    }
    let Some(ip) = query.get("ipAddress") else {
        return abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The ip address field is required.",
            Some("ipAddress"),
        );
    };
    let Ok(address) = ip.parse::<IpAddr>() else {
        return abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The ip address must be a valid IPv4 or IPv6 address (e.g. 8.8.8.8 or 2001:4860:4860::8888).",
            Some("ipAddress"),
        );
    };
    if let Some(refused) = abuseipdb_max_age_refused(&query) {
        return refused;
    }
    let known = ip == TOR_EXIT;
    reply(
        StatusCode::OK,
        json!({"data": {
            "ipAddress": ip,
            "isPublic": true,
            "ipVersion": if address.is_ipv4() { 4 } else { 6 },
            "isWhitelisted": false,
            "abuseConfidenceScore": if known { 100 } else { 0 },
            "countryCode": if known { json!("DE") } else { Value::Null },
            "usageType": if known { json!("Data Center/Web Hosting/Transit") } else { Value::Null },
            "isp": if known { json!("Stiftung Erneuerbare Freiheit") } else { Value::Null },
            "domain": if known { json!("stiftung-erneuerbare-freiheit.de") } else { Value::Null },
            "hostnames": if known { json!(["tor-exit-45.for-privacy.net"]) } else { json!([]) },
            "isTor": known,
            "totalReports": if known { 1873 } else { 0 },
            "numDistinctUsers": if known { 412 } else { 0 },
            "lastReportedAt": if known { json!("2026-11-22T21:14:02+00:00") } else { Value::Null }
        }}),
    )
}

async fn abuseipdb_check_block(
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = abuseipdb_unauthorized(&headers) {
        return refused;
    }
    let invalid = || {
        abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The network must be a valid CIDR notation (e.g. 127.0.0.1/24).",
            Some("network"),
        )
    };
    let Some(network) = query.get("network") else {
        return abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The network field is required.",
            Some("network"),
        );
    };
    let Some((address, prefix)) = network.split_once('/') else {
        return invalid();
    };
    let (Ok(address), Ok(prefix)) = (address.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
        return invalid();
    };
    if !(24..=32).contains(&prefix) {
        return abuseipdb_error(
            StatusCode::PAYMENT_REQUIRED,
            "Your subscription plan allows checking networks up to /24.",
            Some("network"),
        );
    }
    if let Some(refused) = abuseipdb_max_age_refused(&query) {
        return refused;
    }
    let mask = u32::MAX << (32 - prefix);
    let first = u32::from(address) & mask;
    let last = first | !mask;
    let size = last - first + 1;
    let reported: Vec<Value> = [(TOR_EXIT, 1873, 100), ("185.220.101.46", 412, 96)]
        .into_iter()
        .filter(|(ip, _, _)| {
            ip.parse::<Ipv4Addr>()
                .is_ok_and(|ip| (first..=last).contains(&u32::from(ip)))
        })
        .map(|(ip, reports, score)| {
            json!({"ipAddress": ip, "numReports": reports, "mostRecentReport": "2026-11-22T21:14:02+00:00",
                   "abuseConfidenceScore": score, "countryCode": "DE"})
        })
        .collect();
    let host = |n: u32| Ipv4Addr::from(n).to_string();
    reply(
        StatusCode::OK,
        json!({"data": {
            "networkAddress": host(first),
            "netmask": host(mask),
            "minAddress": host(if size > 2 { first + 1 } else { first }),
            "maxAddress": host(if size > 2 { last - 1 } else { last }),
            "numPossibleHosts": if size > 2 { size - 2 } else { size },
            "addressSpaceDesc": "Internet",
            "reportedAddress": reported
        }}),
    )
}

async fn abuseipdb_report(
    State(reported): State<Arc<Mutex<BTreeSet<String>>>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    if let Some(refused) = abuseipdb_unauthorized(&headers) {
        return refused;
    }
    let Ok(Form(form)) = form else {
        return abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The ip field is required.",
            Some("ip"),
        );
    };
    let Some(ip) = form.get("ip").filter(|ip| ip.parse::<IpAddr>().is_ok()) else {
        return abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The ip must be a valid IPv4 or IPv6 address.",
            Some("ip"),
        );
    };
    let categories_valid = form.get("categories").is_some_and(|list| {
        !list.is_empty()
            && list.split(',').all(|id| {
                id.trim()
                    .parse::<u8>()
                    .is_ok_and(|id| (1..=23).contains(&id))
            })
    });
    if !categories_valid {
        return abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The categories must be a comma separated list of valid category ids.",
            Some("categories"),
        );
    }
    if form
        .get("comment")
        .is_some_and(|c| c.chars().count() > 1024)
    {
        return abuseipdb_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The comment may not be greater than 1024 characters.",
            Some("comment"),
        );
    }
    let fresh = reported
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(ip.clone());
    if !fresh {
        let mut refused = abuseipdb_error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("You can only report the same IP address (`{ip}`) once in 15 minutes."),
            Some("ip"),
        );
        refused
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("900"));
        return refused;
    }
    reply(
        StatusCode::OK,
        json!({"data": {"ipAddress": ip, "abuseConfidenceScore": if ip == TOR_EXIT { 100 } else { 25 }}}),
    )
}

// ----------------------------------------------------------------------------------------------
// GreyNoise API v3
// ----------------------------------------------------------------------------------------------

/// GreyNoise API v3: `GET /v3/community/{ip}` (the Community API: works without a key, 404 with
/// `message` for addresses it never saw) and `GET /v3/ip/{ip}` (`quick=true` for the short
/// answer; needs a key; an address never seen is 200 with `found: false` in both datasets). The
/// key is the `key` header; a wrong one is 401, a bad address 400, both `{"message": …}`.
pub fn greynoise() -> Router {
    Router::new()
        .route("/v3/community/{ip}", get(greynoise_community))
        .route("/v3/ip/{ip}", get(greynoise_ip))
}

fn greynoise_message(status: StatusCode, message: &str) -> Response {
    reply(status, json!({"message": message}))
}

/// The key check: `required` for the paid endpoints; the Community API also answers without one.
fn greynoise_refused(headers: &HeaderMap, required: bool) -> Option<Response> {
    match header(headers, "key") {
        Some(GREYNOISE_KEY) => None,
        Some(_) => Some(greynoise_message(
            StatusCode::UNAUTHORIZED,
            "Unauthorized. Please check your API key.",
        )),
        None if required => Some(greynoise_message(
            StatusCode::UNAUTHORIZED,
            "Unauthorized. An API key is required for this endpoint.",
        )),
        None => None,
    }
}

fn greynoise_routable(ip: &str) -> Option<Response> {
    let routable = ip
        .parse::<Ipv4Addr>()
        .is_ok_and(|ip| !ip.is_private() && !ip.is_loopback() && !ip.is_unspecified());
    (!routable).then(|| {
        greynoise_message(
            StatusCode::BAD_REQUEST,
            "Request is not a valid routable IPv4 address",
        )
    })
}

async fn greynoise_community(headers: HeaderMap, Path(ip): Path<String>) -> Response {
    if let Some(refused) = greynoise_refused(&headers, false) {
        return refused;
    }
    if let Some(refused) = greynoise_routable(&ip) {
        return refused;
    }
    match ip.as_str() {
        SCANNER => reply(
            StatusCode::OK,
            json!({"ip": ip, "noise": true, "riot": false, "classification": "malicious", "name": "unknown",
                   "link": format!("https://viz.greynoise.io/ip/{ip}"), "last_seen": "2026-11-21", "message": "Success"}),
        ),
        GOOGLE_DNS => reply(
            StatusCode::OK,
            json!({"ip": ip, "noise": false, "riot": true, "classification": "benign", "name": "Google Public DNS",
                   "link": format!("https://viz.greynoise.io/riot/{ip}"), "last_seen": "2026-11-22", "message": "Success"}),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"ip": ip, "noise": false, "riot": false,
                   "message": "IP not observed scanning the internet or contained in RIOT data set."}),
        ),
    }
}

async fn greynoise_ip(
    headers: HeaderMap,
    Path(ip): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = greynoise_refused(&headers, true) {
        return refused;
    }
    if let Some(refused) = greynoise_routable(&ip) {
        return refused;
    }
    let quick = match query.get("quick").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return greynoise_message(StatusCode::BAD_REQUEST, "quick must be true or false");
        }
    };
    let noise = ip == SCANNER;
    let riot = ip == GOOGLE_DNS;
    if quick {
        return reply(
            StatusCode::OK,
            json!({
                "ip": ip,
                "business_service_intelligence": {"found": riot, "trust_level": if riot { "1" } else { "" }},
                "internet_scanner_intelligence": {"found": noise, "classification": if noise { "malicious" } else { "" }}
            }),
        );
    }
    let scanner = if noise {
        json!({
            "found": true,
            "first_seen": "2024-03-02",
            "last_seen": "2026-11-21",
            "last_seen_timestamp": "2026-11-21 08:31:12",
            "actor": "unknown",
            "classification": "malicious",
            "spoofable": false,
            "bot": false,
            "vpn": false,
            "vpn_service": "",
            "tor": false,
            "cves": ["CVE-2023-46604"],
            "tags": [
                {"id": "0b5f2c1e-7f4c-4d8e-9a61-3c2f1e9b7a10", "slug": "ssh-bruteforcer", "name": "SSH Bruteforcer",
                 "category": "activity", "intention": "malicious"},
                {"id": "6a1d9e3b-2c7f-4b5a-8e0d-1f9c4b7e2a35", "slug": "apache-activemq-rce-attempt",
                 "name": "Apache ActiveMQ RCE Attempt", "category": "activity", "intention": "malicious"}
            ],
            "metadata": {
                "asn": "AS208843", "organization": "Alpha Strike Labs GmbH", "category": "hosting",
                "source_country": "Germany", "source_country_code": "DE", "source_city": "Frankfurt am Main",
                "rdns": "", "os": "Linux 2.2-3.x", "destination_ports": [22, 61616]
            },
            "raw_data": {"scan": [{"port": 22, "protocol": "TCP"}, {"port": 61616, "protocol": "TCP"}]}
        })
    } else {
        json!({"found": false, "first_seen": "", "last_seen": "", "actor": "", "classification": "", "spoofable": false,
               "bot": false, "vpn": false, "vpn_service": "", "tor": false, "cves": [], "tags": [], "metadata": {}, "raw_data": {}})
    };
    let business = if riot {
        json!({"found": true, "category": "public_dns", "name": "Google Public DNS",
               "description": "Google's global domain name system (DNS) resolution service.",
               "explanation": "Public DNS services are used as alternatives to ISP's name servers.",
               "last_updated": "2026-11-22T13:06:07Z", "reference": "https://developers.google.com/speed/public-dns/docs/isp#alternative",
               "trust_level": "1"})
    } else {
        json!({"found": false, "category": "", "name": "", "description": "", "explanation": "",
               "last_updated": "", "reference": "", "trust_level": ""})
    };
    reply(
        StatusCode::OK,
        json!({"ip": ip, "business_service_intelligence": business, "internet_scanner_intelligence": scanner,
               "request_metadata": {"restricted_fields": []}}),
    )
}

// ----------------------------------------------------------------------------------------------
// Shodan REST API
// ----------------------------------------------------------------------------------------------

/// The Shodan REST API: `GET /shodan/host/{ip}` (`history`, `minify`), `GET /dns/resolve`
/// (`hostnames`, comma-separated), `GET /dns/reverse` (`ips`, comma-separated). The key is the
/// `key` query parameter (401 `{"error": …}` without a valid one); a host Shodan has no data on
/// is 404 `{"error": "No information available for that IP."}`, a bad parameter 400.
pub fn shodan() -> Router {
    Router::new()
        .route("/shodan/host/{ip}", get(shodan_host))
        .route("/dns/resolve", get(shodan_resolve))
        .route("/dns/reverse", get(shodan_reverse))
}

fn shodan_error(status: StatusCode, message: &str) -> Response {
    reply(status, json!({"error": message}))
}

fn shodan_refused(query: &HashMap<String, String>) -> Option<Response> {
    (query.get("key").map(String::as_str) != Some(SHODAN_KEY))
        .then(|| shodan_error(StatusCode::UNAUTHORIZED, "Please provide a valid API key."))
}

async fn shodan_host(
    Path(ip): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = shodan_refused(&query) {
        return refused;
    }
    for flag in ["history", "minify"] {
        if let Some(value) = query.get(flag)
            && !matches!(value.as_str(), "true" | "false" | "True" | "False")
        {
            return shodan_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid value for {flag}"),
            );
        }
    }
    if ip.parse::<IpAddr>().is_err() {
        return shodan_error(StatusCode::BAD_REQUEST, "Invalid IP");
    }
    if ip != TOR_EXIT {
        return shodan_error(
            StatusCode::NOT_FOUND,
            "No information available for that IP.",
        );
    }
    let history = query
        .get("history")
        .is_some_and(|h| h.eq_ignore_ascii_case("true"));
    let mut data = vec![
        json!({"port": 22, "transport": "tcp", "product": "OpenSSH", "version": "8.9p1 Ubuntu-3ubuntu0.10",
               "timestamp": "2026-11-20T04:12:33.402117", "data": "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10\n"}),
        json!({"port": 80, "transport": "tcp", "product": "nginx", "version": "1.18.0",
               "timestamp": "2026-11-21T10:40:02.118331", "data": "HTTP/1.1 200 OK\r\nServer: nginx/1.18.0\r\n",
               "http": {"title": "This is a Tor Exit Router", "status": 200}}),
        json!({"port": 9001, "transport": "tcp", "timestamp": "2026-11-19T22:05:51.771093",
               "data": "\u{16}\u{3}\u{1}", "tags": ["tor"]}),
    ];
    if history {
        data.push(json!({"port": 8080, "transport": "tcp", "product": "Apache httpd", "version": "2.4.41",
                         "timestamp": "2025-02-11T08:00:00.000000", "data": "HTTP/1.1 403 Forbidden\r\n"}));
    }
    reply(
        StatusCode::OK,
        json!({
            "ip": 3_118_228_781_u32,
            "ip_str": ip,
            "ports": [9001, 22, 80],
            "hostnames": ["tor-exit-45.for-privacy.net"],
            "domains": ["for-privacy.net"],
            "org": "Stiftung Erneuerbare Freiheit",
            "isp": "Stiftung Erneuerbare Freiheit",
            "asn": "AS60729",
            "os": null,
            "country_code": "DE",
            "country_name": "Germany",
            "city": "Frankfurt am Main",
            "latitude": 50.1155,
            "longitude": 8.6842,
            "tags": ["tor"],
            "vulns": ["CVE-2023-48795", "CVE-2021-41617"],
            "last_update": "2026-11-21T10:40:02.118331",
            "data": data
        }),
    )
}

/// `name` split on commas, as Shodan reads its list parameters; `None` when missing or empty.
fn shodan_list<'a>(query: &'a HashMap<String, String>, name: &str) -> Option<Vec<&'a str>> {
    let list: Vec<&str> = query
        .get(name)?
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    (!list.is_empty()).then_some(list)
}

async fn shodan_resolve(Query(query): Query<HashMap<String, String>>) -> Response {
    if let Some(refused) = shodan_refused(&query) {
        return refused;
    }
    let Some(names) = shodan_list(&query, "hostnames") else {
        return shodan_error(StatusCode::BAD_REQUEST, "No hostnames specified");
    };
    let answers: serde_json::Map<String, Value> = names
        .into_iter()
        .map(|name| {
            let address = match name {
                EVIL_DOMAIN => json!("203.0.113.7"),
                "mail.evil.example" => json!("203.0.113.8"),
                _ => Value::Null,
            };
            (name.to_owned(), address)
        })
        .collect();
    reply(StatusCode::OK, Value::Object(answers))
}

async fn shodan_reverse(Query(query): Query<HashMap<String, String>>) -> Response {
    if let Some(refused) = shodan_refused(&query) {
        return refused;
    }
    let Some(ips) = shodan_list(&query, "ips") else {
        return shodan_error(StatusCode::BAD_REQUEST, "No IPs specified");
    };
    if ips.iter().any(|ip| ip.parse::<IpAddr>().is_err()) {
        return shodan_error(StatusCode::BAD_REQUEST, "Invalid IP address");
    }
    let answers: serde_json::Map<String, Value> = ips
        .into_iter()
        .map(|ip| {
            let names = match ip {
                TOR_EXIT => json!(["tor-exit-45.for-privacy.net"]),
                GOOGLE_DNS => json!(["dns.google"]),
                _ => Value::Null,
            };
            (ip.to_owned(), names)
        })
        .collect();
    reply(StatusCode::OK, Value::Object(answers))
}

// ----------------------------------------------------------------------------------------------
// MISP REST API
// ----------------------------------------------------------------------------------------------

/// A MISP instance's REST API: `POST /attributes/restSearch`, `POST /events/add`,
/// `POST /attributes/add/{event_id}`, `POST /sightings/add`, JSON in (`Content-Type` and
/// `Accept: application/json`) and out. The key is the `Authorization` header, bare; without a
/// valid one MISP answers 403 with its "Authentication failed" message. Saving something invalid
/// is also a 403 (`saved: false` with `errors`), an unknown event a 404. It holds
/// [`TOR_EXIT`] in event [`MISP_EVENT_ID`] and [`EVIL_DOMAIN`] in event 1398, and keeps what is
/// added.
pub fn misp() -> Router {
    let state = MispState {
        events: vec![
            json!({"id": MISP_EVENT_ID, "uuid": "5d3b8e1a-9c0f-4e2b-a7d4-1f6c8b2e9a01", "info": "Tor exit nodes brute-forcing SSH",
                   "orgc_id": "1", "org_id": "1", "distribution": "1", "threat_level_id": "2", "analysis": "2",
                   "published": true, "date": "2026-11-20"}),
            json!({"id": "1398", "uuid": "5d3b8e1a-9c0f-4e2b-a7d4-1f6c8b2e9a02", "info": "Phishing kit targeting SSO",
                   "orgc_id": "3", "org_id": "1", "distribution": "3", "threat_level_id": "1", "analysis": "1",
                   "published": true, "date": "2026-11-18"}),
        ],
        attributes: vec![
            misp_attribute(
                "88213",
                MISP_EVENT_ID,
                "ip-src",
                "Network activity",
                TOR_EXIT,
                true,
                "SSH brute force source",
            ),
            misp_attribute(
                "88214",
                MISP_EVENT_ID,
                "ip-src",
                "Network activity",
                "185.220.101.46",
                true,
                "",
            ),
            misp_attribute(
                "88101",
                "1398",
                "domain",
                "Network activity",
                EVIL_DOMAIN,
                true,
                "Phishing landing page",
            ),
        ],
        sightings: 0,
    };
    Router::new()
        .route("/attributes/restSearch", post(misp_search))
        .route("/events/add", post(misp_add_event))
        .route("/attributes/add/{event_id}", post(misp_add_attribute))
        .route("/sightings/add", post(misp_add_sighting))
        .with_state(Arc::new(Mutex::new(state)))
}

struct MispState {
    events: Vec<Value>,
    attributes: Vec<Value>,
    sightings: u32,
}

type Misp = State<Arc<Mutex<MispState>>>;

fn misp_attribute(
    id: &str,
    event_id: &str,
    kind: &str,
    category: &str,
    value: &str,
    to_ids: bool,
    comment: &str,
) -> Value {
    json!({
        "id": id, "event_id": event_id, "object_id": "0", "object_relation": null,
        "category": category, "type": kind, "value": value, "to_ids": to_ids,
        "uuid": format!("7c1e4a2b-3d5f-4a6b-9c8d-{:0>12}", id), "timestamp": "1795300000",
        "distribution": "5", "sharing_group_id": "0", "comment": comment, "deleted": false,
        "disable_correlation": false, "first_seen": null, "last_seen": null
    })
}

/// MISP's answer to a request it refuses, with the path it was made to.
fn misp_error(status: StatusCode, message: &str, url: &str) -> Response {
    reply(
        status,
        json!({"name": message, "message": message, "url": url}),
    )
}

/// MISP's "could not save" answer: a 403 with the reasons.
fn misp_save_failed(message: &str, url: &str, errors: Value) -> Response {
    reply(
        StatusCode::FORBIDDEN,
        json!({"saved": false, "name": message, "message": message, "url": url, "errors": errors}),
    )
}

/// The checks every MISP API call goes through: the key, then a JSON body asked for as JSON.
fn misp_request(
    headers: &HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
    url: &str,
) -> Result<Value, Box<Response>> {
    if header(headers, "authorization") != Some(MISP_KEY) {
        return Err(Box::new(misp_error(
            StatusCode::FORBIDDEN,
            "Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.",
            url,
        )));
    }
    if !header(headers, "accept").is_some_and(|accept| accept.contains("application/json")) {
        return Err(Box::new(misp_error(
            StatusCode::BAD_REQUEST,
            "The API expects `Accept: application/json`.",
            url,
        )));
    }
    match body {
        Ok(Json(body)) if body.is_object() => Ok(body),
        _ => Err(Box::new(misp_error(
            StatusCode::BAD_REQUEST,
            "Bad request: the body must be a JSON object sent as application/json.",
            url,
        ))),
    }
}

/// A MISP filter's value: `null` and missing are the same, not set.
fn misp_filter<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|value| !value.is_null())
}

async fn misp_search(
    State(state): Misp,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let url = "/attributes/restSearch";
    let body = match misp_request(&headers, body, url) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    if misp_filter(&body, "returnFormat")
        .and_then(Value::as_str)
        .is_some_and(|f| f != "json")
    {
        return misp_error(StatusCode::BAD_REQUEST, "Invalid return format.", url);
    }
    let value = misp_filter(&body, "value").and_then(Value::as_str);
    // `%` at either end is MISP's wildcard.
    let matches_value = |attribute: &str| {
        let Some(pattern) = value else {
            return true;
        };
        let attribute = attribute.to_ascii_lowercase();
        let pattern = pattern.to_ascii_lowercase();
        let core = pattern.trim_matches('%');
        match (
            pattern.starts_with('%'),
            pattern.ends_with('%') && pattern.len() > 1,
        ) {
            (true, true) => attribute.contains(core),
            (true, false) => attribute.ends_with(core),
            (false, true) => attribute.starts_with(core),
            (false, false) => attribute == core,
        }
    };
    let limit = misp_filter(&body, "limit")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let include_tags =
        misp_filter(&body, "includeEventTags").and_then(Value::as_bool) == Some(true);
    let state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let found: Vec<Value> = state
        .attributes
        .iter()
        .filter(|a| matches_value(a["value"].as_str().unwrap_or_default()))
        .filter(|a| misp_filter(&body, "type").is_none_or(|t| *t == a["type"]))
        .filter(|a| misp_filter(&body, "category").is_none_or(|c| *c == a["category"]))
        .filter(|a| misp_filter(&body, "to_ids").is_none_or(|t| *t == a["to_ids"]))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|attribute| {
            let mut attribute = attribute.clone();
            if let Some(event) = state.events.iter().find(|e| e["id"] == attribute["event_id"]) {
                attribute["Event"] = json!({"id": event["id"], "info": event["info"], "uuid": event["uuid"],
                                            "org_id": event["org_id"], "orgc_id": event["orgc_id"],
                                            "distribution": event["distribution"]});
            }
            if include_tags {
                attribute["Tag"] = json!([{"id": "12", "name": "tlp:amber", "colour": "#FFC000", "exportable": true}]);
            }
            attribute
        })
        .collect();
    reply(StatusCode::OK, json!({"response": {"Attribute": found}}))
}

async fn misp_add_event(
    State(state): Misp,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let url = "/events/add";
    let body = match misp_request(&headers, body, url) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    // MISP takes the event bare or wrapped in `Event`.
    let event = body.get("Event").cloned().unwrap_or(body);
    let info = event["info"].as_str().unwrap_or_default();
    if info.trim().is_empty() {
        return misp_save_failed(
            "The event could not be saved.",
            url,
            json!({"Event": {"info": ["Info cannot be empty."]}}),
        );
    }
    let level = |name: &str, range: std::ops::RangeInclusive<i64>, default: i64| match &event[name]
    {
        Value::Null => Some(default),
        Value::Number(n) => n.as_i64().filter(|n| range.contains(n)),
        Value::String(s) => s.parse().ok().filter(|n| range.contains(n)),
        _ => None,
    };
    let (Some(distribution), Some(threat_level), Some(analysis)) = (
        level("distribution", 0..=4, 0),
        level("threat_level_id", 1..=4, 4),
        level("analysis", 0..=2, 0),
    ) else {
        return misp_save_failed(
            "The event could not be saved.",
            url,
            json!({"Event": {"distribution": ["Options: 0 to 4."], "threat_level_id": ["Options: 1 to 4."], "analysis": ["Options: 0 to 2."]}}),
        );
    };
    let tags: Vec<Value> = match &event["Tag"] {
        Value::Null => Vec::new(),
        Value::Array(tags) if tags.iter().all(|t| t["name"].is_string()) => tags
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"id": (100 + i).to_string(), "name": t["name"], "colour": "#0088cc", "exportable": true}))
            .collect(),
        _ => {
            return misp_save_failed(
                "The event could not be saved.",
                url,
                json!({"Tag": ["Tags must be objects with a name."]}),
            );
        }
    };
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let id = (1401 + state.events.len()).to_string();
    let mut attributes = Vec::new();
    for (i, attribute) in event["Attribute"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match misp_new_attribute(&format!("9{id}{i}"), &id, attribute) {
            Ok(attribute) => attributes.push(attribute),
            Err(errors) => {
                return misp_save_failed(
                    "The event could not be saved.",
                    url,
                    json!({"Attribute": {i.to_string(): errors}}),
                );
            }
        }
    }
    let saved = json!({
        "id": id, "orgc_id": "1", "org_id": "1", "date": "2026-11-23",
        "threat_level_id": threat_level.to_string(), "info": info, "published": false,
        "uuid": format!("5d3b8e1a-9c0f-4e2b-a7d4-{:0>12}", id), "attribute_count": attributes.len().to_string(),
        "analysis": analysis.to_string(), "timestamp": "1795401000", "distribution": distribution.to_string(),
        "sharing_group_id": "0", "proposal_email_lock": false, "locked": false, "disable_correlation": false,
    });
    state.events.push(saved.clone());
    state.attributes.extend(attributes.iter().cloned());
    let mut answer = saved;
    answer["Attribute"] = Value::Array(attributes);
    answer["Tag"] = Value::Array(tags);
    answer["Orgc"] =
        json!({"id": "1", "name": "ACME-SOC", "uuid": "5c4a1b2e-0000-4000-8000-000000000001"});
    reply(StatusCode::OK, json!({"Event": answer}))
}

/// Checks an attribute as MISP validates one before saving; its stored form, or the errors.
fn misp_new_attribute(id: &str, event_id: &str, attribute: &Value) -> Result<Value, Value> {
    let kind = attribute["type"].as_str().unwrap_or_default();
    let value = attribute["value"].as_str().unwrap_or_default();
    let (default_category, default_ids) = match kind {
        "ip-src" | "ip-dst" | "domain" | "hostname" | "url" => ("Network activity", true),
        "md5" | "sha1" | "sha256" | "filename" => ("Payload delivery", kind != "filename"),
        "email-src" | "email-subject" => ("Payload delivery", false),
        "text" | "comment" | "other" => ("Other", false),
        "" => return Err(json!({"type": ["The type field is required."]})),
        _ => return Err(json!({"type": ["Options depend on the selected category."]})),
    };
    let well_formed = match kind {
        "ip-src" | "ip-dst" => value.parse::<IpAddr>().is_ok(),
        "md5" => value.len() == 32 && value.chars().all(|c| c.is_ascii_hexdigit()),
        "sha1" => value.len() == 40 && value.chars().all(|c| c.is_ascii_hexdigit()),
        "sha256" => value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()),
        _ => !value.trim().is_empty(),
    };
    if !well_formed {
        return Err(json!({"value": [
            "Value not in the right type/format. Please double check the value or select type \"other\"."
        ]}));
    }
    let category = attribute["category"].as_str().unwrap_or(default_category);
    let to_ids = attribute["to_ids"].as_bool().unwrap_or(default_ids);
    let comment = attribute["comment"].as_str().unwrap_or_default();
    let mut saved = misp_attribute(id, event_id, kind, category, value, to_ids, comment);
    if let Some(distribution) = attribute.get("distribution").filter(|d| !d.is_null()) {
        saved["distribution"] = json!(distribution.to_string().trim_matches('"'));
    }
    Ok(saved)
}

async fn misp_add_attribute(
    State(state): Misp,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let url = "/attributes/add";
    let body = match misp_request(&headers, body, url) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(event) = state
        .events
        .iter()
        .find(|e| e["id"] == event_id.as_str() || e["uuid"] == event_id.as_str())
    else {
        return misp_error(
            StatusCode::NOT_FOUND,
            "Invalid event",
            &format!("{url}/{event_id}"),
        );
    };
    let event_id = event["id"].as_str().unwrap_or_default().to_owned();
    let attribute = body.get("Attribute").cloned().unwrap_or(body);
    let id = (89000 + state.attributes.len()).to_string();
    match misp_new_attribute(&id, &event_id, &attribute) {
        Ok(saved) => {
            state.attributes.push(saved.clone());
            reply(StatusCode::OK, json!({"Attribute": saved}))
        }
        Err(errors) => misp_save_failed("Could not add Attribute", url, errors),
    }
}

async fn misp_add_sighting(
    State(state): Misp,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let url = "/sightings/add";
    let body = match misp_request(&headers, body, url) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let kind = match &body["type"] {
        Value::Null => "0".to_owned(),
        Value::String(t) if matches!(t.as_str(), "0" | "1" | "2") => t.clone(),
        Value::Number(n) if matches!(n.as_u64(), Some(0..=2)) => n.to_string(),
        _ => {
            return misp_save_failed(
                "Could not add the Sighting.",
                url,
                json!({"type": ["Invalid type: 0 (sighting), 1 (false positive) or 2 (expiration)."]}),
            );
        }
    };
    let Some(value) = body["value"].as_str().filter(|v| !v.is_empty()) else {
        return misp_error(
            StatusCode::BAD_REQUEST,
            "No valid attributes found that match the criteria.",
            url,
        );
    };
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(attribute) = state
        .attributes
        .iter()
        .rev()
        .find(|a| {
            a["value"]
                .as_str()
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
        })
        .cloned()
    else {
        return misp_save_failed(
            "Could not add the Sighting.",
            url,
            json!({"value": ["No valid attributes found that match the criteria."]}),
        );
    };
    state.sightings += 1;
    let id = (5100 + state.sightings).to_string();
    reply(
        StatusCode::OK,
        json!({"Sighting": {
            "id": id, "attribute_id": attribute["id"], "event_id": attribute["event_id"], "org_id": "1",
            "date_sighting": "1795401200", "uuid": format!("9e2f4b6a-1c3d-4e5f-8a7b-{:0>12}", id),
            "source": body["source"].as_str().unwrap_or_default(), "type": kind
        }}),
    )
}

// ----------------------------------------------------------------------------------------------
// Slack Web API
// ----------------------------------------------------------------------------------------------

/// The Slack Web API under `/api`: `POST /chat.postMessage` and `POST /chat.update` (JSON bodies),
/// `GET /users.lookupByEmail`. The bot token is a bearer. As Slack does, every failure but rate
/// limits is HTTP 200 with `{"ok": false, "error": "<code>"}`: `not_authed`, `invalid_auth`,
/// `channel_not_found`, `no_text`, `invalid_blocks`, `message_not_found`, `users_not_found`,
/// `invalid_arguments`. `#busy` is rate limited (429, `Retry-After: 7`); `#soc` is
/// [`SLACK_CHANNEL_ID`]; the first message posted is [`SLACK_TS`], and chat.update knows only
/// messages posted; `alice@example.com` is a member.
pub fn slack() -> Router {
    Router::new()
        .route("/api/chat.postMessage", post(slack_post))
        .route("/api/chat.update", post(slack_update))
        .route("/api/users.lookupByEmail", get(slack_lookup))
        .with_state(Arc::new(Mutex::new(Vec::<String>::new())))
}

type Posted = State<Arc<Mutex<Vec<String>>>>;

fn slack_failed(error: &str) -> Response {
    reply(StatusCode::OK, json!({"ok": false, "error": error}))
}

fn slack_refused(headers: &HeaderMap) -> Option<Response> {
    match header(headers, "authorization") {
        None => Some(slack_failed("not_authed")),
        Some(value) if value != format!("Bearer {SLACK_TOKEN}") => {
            Some(slack_failed("invalid_auth"))
        }
        Some(_) => None,
    }
}

/// The channel id a name or id stands for, as the workspace knows it.
fn slack_channel(channel: &str) -> Option<&'static str> {
    match channel {
        "#soc" | "soc" | SLACK_CHANNEL_ID => Some(SLACK_CHANNEL_ID),
        "#incidents" | "C05INC1DNT" => Some("C05INC1DNT"),
        "U0G9QF9C6" => Some("D0G9QF9C6"),
        _ => None,
    }
}

/// `blocks` as Slack accepts them: absent, or a list of objects with a `type`.
fn slack_blocks_valid(body: &Value) -> bool {
    match body.get("blocks") {
        None => true,
        Some(Value::Array(blocks)) => blocks.iter().all(|b| b["type"].is_string()),
        Some(_) => false,
    }
}

async fn slack_post(
    State(posted): Posted,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = slack_refused(&headers) {
        return refused;
    }
    let Ok(Json(body)) = body else {
        return slack_failed("invalid_json");
    };
    let channel = body["channel"].as_str().unwrap_or_default();
    if channel == "#busy" {
        let mut limited = reply(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"ok": false, "error": "ratelimited"}),
        );
        limited
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("7"));
        return limited;
    }
    let Some(channel_id) = slack_channel(channel) else {
        return slack_failed("channel_not_found");
    };
    if !slack_blocks_valid(&body) {
        return slack_failed("invalid_blocks");
    }
    let has_blocks = body["blocks"].as_array().is_some_and(|b| !b.is_empty());
    if body["text"].as_str().is_none_or(str::is_empty) && !has_blocks {
        return slack_failed("no_text");
    }
    if body.get("unfurl_links").is_some_and(|u| !u.is_boolean()) {
        return slack_failed("invalid_arguments");
    }
    // The first message posted is `SLACK_TS`, the next ones follow it.
    let mut posted = posted.lock().unwrap_or_else(PoisonError::into_inner);
    let ts = format!("1795400000.{:06}", 100 * (posted.len() + 1));
    posted.push(ts.clone());
    let mut message = json!({"type": "message", "subtype": "bot_message", "bot_id": "B0AB12CDE",
                             "app_id": "A0RIPOSTE1", "text": body["text"], "ts": ts});
    if let Some(blocks) = body.get("blocks") {
        message["blocks"] = blocks.clone();
    }
    if let Some(thread) = body.get("thread_ts") {
        message["thread_ts"] = thread.clone();
    }
    reply(
        StatusCode::OK,
        json!({"ok": true, "channel": channel_id, "ts": ts, "message": message}),
    )
}

async fn slack_update(
    State(posted): Posted,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = slack_refused(&headers) {
        return refused;
    }
    let Ok(Json(body)) = body else {
        return slack_failed("invalid_json");
    };
    // chat.update takes channel ids only.
    let channel = body["channel"].as_str().unwrap_or_default();
    if slack_channel(channel) != Some(channel) {
        return slack_failed("channel_not_found");
    }
    let ts = body["ts"].as_str().unwrap_or_default();
    if !posted
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .any(|t| t == ts)
    {
        return slack_failed("message_not_found");
    }
    if !slack_blocks_valid(&body) {
        return slack_failed("invalid_blocks");
    }
    if body["text"].as_str().is_none_or(str::is_empty)
        && body["blocks"].as_array().is_none_or(Vec::is_empty)
    {
        return slack_failed("no_text");
    }
    reply(
        StatusCode::OK,
        json!({"ok": true, "channel": channel, "ts": ts, "text": body["text"],
               "message": {"type": "message", "bot_id": "B0AB12CDE", "text": body["text"],
                           "blocks": body.get("blocks").cloned().unwrap_or(json!([])), "edited": {"user": "U0RIPOSTE", "ts": "1795400100.000000"}}}),
    )
}

async fn slack_lookup(
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = slack_refused(&headers) {
        return refused;
    }
    let Some(email) = query.get("email").filter(|e| !e.is_empty()) else {
        return slack_failed("invalid_arguments");
    };
    if email != "alice@example.com" {
        return slack_failed("users_not_found");
    }
    reply(
        StatusCode::OK,
        json!({"ok": true, "user": {
            "id": "U0G9QF9C6", "team_id": "T0G9PQBBK", "name": "alice", "deleted": false,
            "real_name": "Alice Martin", "tz": "Europe/Paris", "tz_offset": 3600, "is_admin": false,
            "is_bot": false, "updated": 1_795_000_000,
            "profile": {"real_name": "Alice Martin", "display_name": "alice", "email": email, "title": "Finance"}
        }}),
    )
}

// ----------------------------------------------------------------------------------------------
// Microsoft Teams Workflows
// ----------------------------------------------------------------------------------------------

/// A Teams Workflows webhook ("When a Teams webhook request is received"), which is a Logic Apps
/// request trigger: `POST` [`TEAMS_WORKFLOW_PATH`] with `api-version`, `sp=/triggers/manual/run`,
/// `sv=1.0` and `sig` ([`TEAMS_SIG`]) in the query. A missing or wrong `sig` is 401 with the
/// Logic Apps error (`{"error": {"code", "message"}}`); a body that is not a message with
/// Adaptive Card attachments is 400 `TriggerInputSchemaMismatch`; an accepted card is 202 with
/// an empty body. Every accepted card is kept in [`TeamsCards`].
pub fn teams(cards: TeamsCards) -> Router {
    Router::new()
        .route(TEAMS_WORKFLOW_PATH, post(teams_invoke))
        .with_state(cards)
}

/// The Adaptive Cards a [`teams`] workflow accepted, in order (each attachment's `content`).
#[derive(Clone, Default)]
pub struct TeamsCards(Arc<Mutex<Vec<Value>>>);

impl TeamsCards {
    pub fn all(&self) -> Vec<Value> {
        self.0.lock().map(|cards| cards.clone()).unwrap_or_default()
    }
}

fn teams_error(status: StatusCode, code: &str, message: &str) -> Response {
    reply(status, json!({"error": {"code": code, "message": message}}))
}

async fn teams_invoke(
    State(cards): State<TeamsCards>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    match query.get("sig") {
        None => {
            return teams_error(
                StatusCode::UNAUTHORIZED,
                "DirectApiAuthorizationRequired",
                "The request must be authenticated only by Shared Access scheme.",
            );
        }
        Some(sig) if sig != TEAMS_SIG => {
            return teams_error(
                StatusCode::UNAUTHORIZED,
                "DirectApiInvalidAuthorizationSignature",
                "The provided authorization signature is not valid for the workflow trigger.",
            );
        }
        Some(_) => {}
    }
    let signed_for = |name: &str, expected: &[&str]| {
        query
            .get(name)
            .is_some_and(|value| expected.contains(&value.as_str()))
    };
    if !signed_for("api-version", &["2016-06-01", "2016-10-01", "1"])
        || !signed_for("sp", &["/triggers/manual/run"])
        || !signed_for("sv", &["1.0"])
    {
        return teams_error(
            StatusCode::BAD_REQUEST,
            "DirectApiRequestHasMoreThanOneAuthorization",
            "The request is not signed for this trigger: `api-version`, `sp` and `sv` must be as in the workflow's URL.",
        );
    }
    let mismatch = |details: &str| {
        teams_error(
            StatusCode::BAD_REQUEST,
            "TriggerInputSchemaMismatch",
            &format!(
                "The input body for trigger 'manual' of type 'Request' did not match its schema definition. Error details: '{details}'."
            ),
        )
    };
    let Ok(Json(body)) = body else {
        return mismatch("Invalid type. Expected Object but got String.");
    };
    if body["type"] != "message" {
        return mismatch("Required property 'type' with value 'message' not found.");
    }
    let Some(attachments) = body["attachments"].as_array().filter(|a| !a.is_empty()) else {
        return mismatch("Required property 'attachments' not found or empty.");
    };
    let mut accepted = Vec::new();
    for attachment in attachments {
        if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
            return mismatch(
                "Property 'contentType' must be 'application/vnd.microsoft.card.adaptive'.",
            );
        }
        let content = &attachment["content"];
        if content["type"] != "AdaptiveCard" || !content["body"].is_array() {
            return mismatch("Property 'content' must be an AdaptiveCard with a 'body'.");
        }
        accepted.push(content.clone());
    }
    cards
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(accepted);
    StatusCode::ACCEPTED.into_response()
}

// ----------------------------------------------------------------------------------------------

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}
