//! `enrich-ioc`: reputation of IP addresses (AbuseIPDB v2) and of domains, URLs and file hashes
//! (VirusTotal v3). API keys are attached by the host (`Key` and `x-apikey` headers) to the granted
//! hosts; this plugin never sees them. Lookups are cached for an hour in the plugin's store.

use riposte_plugin_sdk::http::Request;
use riposte_plugin_sdk::{
    Action, Context, Error, Manifest, Plugin, Secret, Value, json, kv, output, parse, plugin,
};
use serde::{Deserialize, Serialize};

const ABUSEIPDB: &str = "https://api.abuseipdb.com";
const VIRUSTOTAL: &str = "https://www.virustotal.com";
const CACHE_SECONDS: u32 = 3600;

struct EnrichIoc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpInput {
    ip: String,
    #[serde(default = "default_max_age")]
    max_age_days: u32,
    /// Where the AbuseIPDB API is (for a proxy, a mirror, or a test server).
    #[serde(default)]
    base_url: Option<String>,
}

fn default_max_age() -> u32 {
    90
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndicatorInput {
    #[serde(alias = "domain", alias = "url", alias = "hash")]
    value: String,
    #[serde(default)]
    base_url: Option<String>,
}

/// What every lookup returns, whatever the source.
#[derive(Serialize, Deserialize)]
struct Reputation {
    indicator: String,
    source: String,
    /// `malicious`, `suspicious`, `clean` or `unknown`.
    verdict: String,
    /// 0–100: AbuseIPDB's confidence, or the share of VirusTotal engines that flag it.
    score: u32,
    #[serde(flatten)]
    details: Value,
}

impl Plugin for EnrichIoc {
    fn manifest() -> Manifest {
        let reputation = json!({
            "type": "object",
            "required": ["indicator", "source", "verdict", "score"],
            "properties": {
                "indicator": { "type": "string" },
                "source": { "enum": ["abuseipdb", "virustotal"] },
                "verdict": { "enum": ["malicious", "suspicious", "clean", "unknown"] },
                "score": { "type": "integer", "minimum": 0, "maximum": 100 }
            }
        });
        let indicator = |what: &str| {
            json!({
                "type": "object",
                "required": [what],
                "properties": {
                    what: { "type": "string" },
                    "base_url": { "type": "string", "default": VIRUSTOTAL }
                }
            })
        };
        Manifest::new("enrich-ioc", env!("CARGO_PKG_VERSION"), "Reputation of IPs (AbuseIPDB) and domains, URLs and hashes (VirusTotal).")
            .action(
                Action::new("check-ip", "AbuseIPDB v2 `/api/v2/check` for one IP address.")
                    .input(json!({
                        "type": "object",
                        "required": ["ip"],
                        "properties": {
                            "ip": { "type": "string" },
                            "max_age_days": { "type": "integer", "default": 90, "minimum": 1, "maximum": 365 },
                            "base_url": { "type": "string", "default": ABUSEIPDB }
                        }
                    }))
                    .output(reputation.clone()),
            )
            .action(Action::new("check-domain", "VirusTotal v3 `/api/v3/domains/{domain}`.").input(indicator("domain")).output(reputation.clone()))
            .action(Action::new("check-url", "VirusTotal v3 `/api/v3/urls/{id}`.").input(indicator("url")).output(reputation.clone()))
            .action(Action::new("check-hash", "VirusTotal v3 `/api/v3/files/{hash}` (MD5, SHA-1 or SHA-256).").input(indicator("hash")).output(reputation))
            .host("api.abuseipdb.com")
            .host("www.virustotal.com")
            .secret(Secret::header("abuseipdb_key", "AbuseIPDB API key, sent as the `Key` header.", "key", "{secret}"))
            .secret(Secret::header("virustotal_key", "VirusTotal API key, sent as the `x-apikey` header.", "x-apikey", "{secret}"))
    }

    fn invoke(action: &str, input: Value, _context: &Context) -> Result<Value, Error> {
        let reputation = match action {
            "check-ip" => check_ip(parse(input)?)?,
            "check-domain" => virustotal("domains", parse(input)?, |v| Ok(refang(v)))?,
            "check-url" => virustotal("urls", parse(input)?, |v| Ok(base64url(&refang(v))))?,
            "check-hash" => virustotal("files", parse(input)?, check_hash)?,
            other => return Err(Error::unknown_action(other)),
        };
        output(&reputation)
    }
}

fn check_ip(input: IpInput) -> Result<Reputation, Error> {
    let ip = refang(&input.ip);
    ip.parse::<std::net::IpAddr>()
        .map_err(|_| Error::InvalidInput(format!("`{}` is not an IP address", input.ip)))?;
    let base = input
        .base_url
        .as_deref()
        .unwrap_or(ABUSEIPDB)
        .trim_end_matches('/');
    let cache_key = format!("abuseipdb:{base}:{ip}:{}", input.max_age_days);
    if let Some(cached) = kv::get(&cache_key).and_then(|c| serde_json::from_str(&c).ok()) {
        return Ok(cached);
    }
    let url = format!(
        "{base}/api/v2/check?ipAddress={ip}&maxAgeInDays={}",
        input.max_age_days
    );
    let response = Request::get(&url)
        .header("accept", "application/json")
        .with_secret("abuseipdb_key")
        .send()?
        .error_for_status()?;
    let body: Value = response.json()?;
    let data = &body["data"];
    let score = data["abuseConfidenceScore"]
        .as_u64()
        .ok_or_else(|| Error::Upstream("AbuseIPDB's answer has no abuseConfidenceScore".into()))?
        as u32;
    let reputation = Reputation {
        indicator: ip,
        source: "abuseipdb".into(),
        verdict: match score {
            75.. => "malicious",
            25.. => "suspicious",
            _ => "clean",
        }
        .into(),
        score,
        details: json!({
            "reports": data["totalReports"],
            "country": data["countryCode"],
            "isp": data["isp"],
            "domain": data["domain"],
            "usage_type": data["usageType"],
            "is_tor": data["isTor"],
            "is_whitelisted": data["isWhitelisted"],
            "last_reported_at": data["lastReportedAt"],
        }),
    };
    if let Ok(text) = serde_json::to_string(&reputation) {
        kv::set(&cache_key, &text, Some(CACHE_SECONDS));
    }
    Ok(reputation)
}

fn virustotal(
    collection: &str,
    input: IndicatorInput,
    id: impl Fn(&str) -> Result<String, Error>,
) -> Result<Reputation, Error> {
    let indicator = refang(input.value.trim());
    let id = id(&indicator)?;
    let base = input
        .base_url
        .as_deref()
        .unwrap_or(VIRUSTOTAL)
        .trim_end_matches('/');
    let cache_key = format!("virustotal:{base}:{collection}:{id}");
    if let Some(cached) = kv::get(&cache_key).and_then(|c| serde_json::from_str(&c).ok()) {
        return Ok(cached);
    }
    let response = Request::get(&format!("{base}/api/v3/{collection}/{id}"))
        .header("accept", "application/json")
        .with_secret("virustotal_key")
        .send()?;
    let reputation = if response.status == 404 {
        // VirusTotal has never seen it: worth knowing, not a failure.
        Reputation {
            indicator,
            source: "virustotal".into(),
            verdict: "unknown".into(),
            score: 0,
            details: json!({ "found": false }),
        }
    } else {
        let body: Value = response.error_for_status()?.json()?;
        let attributes = &body["data"]["attributes"];
        let stats = &attributes["last_analysis_stats"];
        let count = |field: &str| stats[field].as_u64().unwrap_or(0);
        let (malicious, suspicious) = (count("malicious"), count("suspicious"));
        let total =
            malicious + suspicious + count("harmless") + count("undetected") + count("timeout");
        let score = (malicious * 100).checked_div(total).unwrap_or(0) as u32;
        Reputation {
            indicator,
            source: "virustotal".into(),
            verdict: if malicious >= 3 {
                "malicious"
            } else if malicious + suspicious > 0 {
                "suspicious"
            } else if total == 0 {
                "unknown"
            } else {
                "clean"
            }
            .into(),
            score,
            details: json!({
                "found": true,
                "malicious": malicious,
                "suspicious": suspicious,
                "harmless": count("harmless"),
                "undetected": count("undetected"),
                "reputation": attributes["reputation"],
            }),
        }
    };
    if let Ok(text) = serde_json::to_string(&reputation) {
        kv::set(&cache_key, &text, Some(CACHE_SECONDS));
    }
    Ok(reputation)
}

fn check_hash(value: &str) -> Result<String, Error> {
    let hash = value.to_ascii_lowercase();
    let valid = matches!(hash.len(), 32 | 40 | 64) && hash.chars().all(|c| c.is_ascii_hexdigit());
    if valid {
        Ok(hash)
    } else {
        Err(Error::InvalidInput(format!(
            "`{value}` is not an MD5, SHA-1 or SHA-256 hash"
        )))
    }
}

/// Undoes the defanging analysts and feeds apply: `hxxp://evil[.]com` → `http://evil.com`.
fn refang(value: &str) -> String {
    value
        .trim()
        .replace("[.]", ".")
        .replace("(.)", ".")
        .replace("[:]", ":")
        .replace("hxxps://", "https://")
        .replace("hxxp://", "http://")
}

/// VirusTotal's URL identifier: unpadded URL-safe base64 of the URL.
fn base64url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

plugin!(EnrichIoc);
