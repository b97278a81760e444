//! `block-ip`: ban and unban IP addresses on a CrowdSec Local API, as `cscli decisions add/delete`
//! does: log in as a watcher (machine), post an alert carrying a `ban` decision, delete decisions
//! by IP. Every bouncer connected to that LAPI (firewall, nginx, …) then enforces the ban.
//!
//! The ban is idempotent per idempotency key: the key is written into the alert's message, and a
//! retried call that finds its alert already there reports it instead of banning twice. The host's
//! protected-address guard refuses private ranges and overly broad networks before this plugin runs.

use std::time::{SystemTime, UNIX_EPOCH};

use riposte_plugin_sdk::http::Request;
use riposte_plugin_sdk::{
    Action, Context, Error, Manifest, Plugin, Secret, Value, json, kv, output, parse, plugin,
};
use serde::{Deserialize, Serialize};

const DEFAULT_LAPI: &str = "http://127.0.0.1:8080";
/// CrowdSec's watcher tokens last an hour; reuse one for a little less.
const TOKEN_SECONDS: u32 = 50 * 60;

struct BlockIp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanInput {
    ip: String,
    #[serde(default = "default_duration")]
    duration: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
}

fn default_duration() -> String {
    "4h".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnbanInput {
    ip: String,
    #[serde(default)]
    base_url: Option<String>,
}

#[derive(Serialize)]
struct Banned {
    ip: String,
    duration: String,
    alert_ids: Vec<String>,
    /// True when an earlier attempt with the same idempotency key had already banned it.
    already_banned: bool,
}

impl Plugin for BlockIp {
    fn manifest() -> Manifest {
        Manifest::new(
            "block-ip",
            env!("CARGO_PKG_VERSION"),
            "Ban and unban IPs on a CrowdSec Local API.",
        )
        .action(
            Action::new(
                "ban",
                "Adds a `ban` decision for an IP (or a range) for a duration.",
            )
            .destructive()
            .input(json!({
                "type": "object",
                "required": ["ip"],
                "properties": {
                    "ip": { "type": "string", "description": "An IP address or a CIDR range." },
                    "duration": { "type": "string", "default": "4h", "pattern": "^[0-9]+(h|m|s)$" },
                    "reason": { "type": "string" },
                    "base_url": { "type": "string", "default": DEFAULT_LAPI }
                }
            }))
            .output(json!({
                "type": "object",
                "properties": {
                    "ip": { "type": "string" },
                    "duration": { "type": "string" },
                    "alert_ids": { "type": "array", "items": { "type": "string" } },
                    "already_banned": { "type": "boolean" }
                }
            })),
        )
        .action(
            Action::new("unban", "Deletes every decision for an IP.")
                .input(json!({
                    "type": "object",
                    "required": ["ip"],
                    "properties": { "ip": { "type": "string" }, "base_url": { "type": "string" } }
                }))
                .output(json!({
                    "type": "object",
                    "properties": { "ip": { "type": "string" }, "deleted": { "type": "integer" } }
                })),
        )
        .secret(Secret::readable(
            "crowdsec_machine_id",
            "The watcher (machine) id registered on the LAPI.",
        ))
        .secret(Secret::readable(
            "crowdsec_password",
            "The watcher's password.",
        ))
    }

    fn invoke(action: &str, input: Value, context: &Context) -> Result<Value, Error> {
        match action {
            "ban" => ban(parse(input)?, context),
            "unban" => unban(parse(input)?),
            other => Err(Error::unknown_action(other)),
        }
    }
}

fn ban(input: BanInput, context: &Context) -> Result<Value, Error> {
    let (ip, scope) = target(&input.ip)?;
    let duration = input.duration.trim().to_owned();
    let valid_duration = duration.len() > 1
        && duration[..duration.len() - 1]
            .chars()
            .all(|c| c.is_ascii_digit())
        && duration.ends_with(['h', 'm', 's']);
    if !valid_duration {
        return Err(Error::InvalidInput(format!(
            "`{duration}` is not a CrowdSec duration; write e.g. `4h`, `30m` or `90s`"
        )));
    }
    let base = lapi(input.base_url.as_deref());
    let token = login(&base)?;

    let marker = format!("riposte:{}", context.idempotency_key);
    if let Some(existing) = alert_with_marker(&base, &token, &ip, &marker)? {
        return output(&Banned {
            ip,
            duration,
            alert_ids: vec![existing],
            already_banned: true,
        });
    }

    let reason = input
        .reason
        .unwrap_or_else(|| format!("riposte: block {ip}"));
    let message = format!("{reason} [{marker}]");
    // Decisions expire relative to the alert's times, so they must be now.
    let now = rfc3339_now();
    let alert = json!([{
        "scenario": reason, "scenario_hash": "", "scenario_version": "", "message": message,
        "events_count": 1, "events": [], "capacity": 0, "leakspeed": "0", "simulated": false,
        "start_at": now, "stop_at": now, "created_at": now, "labels": null,
        "source": { "scope": scope, "value": ip, "ip": if scope == "Ip" { ip.as_str() } else { "" }, "range": if scope == "Range" { ip.as_str() } else { "" } },
        "decisions": [{
            "origin": "cscli", "type": "ban", "scope": scope, "value": ip,
            "duration": duration, "scenario": reason
        }]
    }]);
    let response = Request::post(&format!("{base}/v1/alerts"))
        .header("authorization", &format!("Bearer {token}"))
        .json(&alert)
        .send()?;
    // The LAPI answers validation errors with 500, which a retry will not fix.
    if response.status == 500 {
        return Err(Error::InvalidInput(format!(
            "CrowdSec refused the alert: {}",
            response.text()
        )));
    }
    let alert_ids: Vec<String> = response.error_for_status()?.json()?;
    output(&Banned {
        ip,
        duration,
        alert_ids,
        already_banned: false,
    })
}

fn unban(input: UnbanInput) -> Result<Value, Error> {
    let (ip, scope) = target(&input.ip)?;
    let base = lapi(input.base_url.as_deref());
    let token = login(&base)?;
    let filter = if scope == "Range" { "range" } else { "ip" };
    let response = Request::new("DELETE", &format!("{base}/v1/decisions?{filter}={ip}"))
        .header("authorization", &format!("Bearer {token}"))
        .send()?
        .error_for_status()?;
    let answer: Value = response.json()?;
    // 1.4 answers `{"nbDeleted": "1"}`, a number in a string.
    let deleted = match &answer["nbDeleted"] {
        Value::String(n) => n.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    Ok(json!({ "ip": ip, "deleted": deleted }))
}

/// A JWT for the watcher, from the plugin's cache or a fresh login. The credentials are required
/// either way, and the cache entry is keyed by them, so a run that was not granted them cannot
/// reuse a token another run obtained.
fn login(base: &str) -> Result<String, Error> {
    let machine_id = riposte_plugin_sdk::secret("crowdsec_machine_id");
    let password = riposte_plugin_sdk::secret("crowdsec_password");
    let (Some(machine_id), Some(password)) = (machine_id, password) else {
        return Err(Error::Unauthorized(
            "the playbook must grant `crowdsec_machine_id` and `crowdsec_password` to block-ip"
                .into(),
        ));
    };
    let cache_key = format!(
        "crowdsec:token:{base}:{machine_id}:{:016x}",
        fnv1a(&password)
    );
    if let Some(token) = kv::get(&cache_key) {
        return Ok(token);
    }
    let response = Request::post(&format!("{base}/v1/watchers/login"))
        .json(&json!({ "machine_id": machine_id, "password": password, "scenarios": [] }))
        .send()?
        .error_for_status()?;
    let answer: Value = response.json()?;
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| Error::Upstream("the CrowdSec login answer has no token".into()))?
        .to_owned();
    kv::set(&cache_key, &token, Some(TOKEN_SECONDS));
    Ok(token)
}

/// A non-cryptographic fingerprint, so the cache key changes when the password does.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The id of an alert for `ip` whose message carries `marker`, if an earlier attempt posted one.
fn alert_with_marker(
    base: &str,
    token: &str,
    ip: &str,
    marker: &str,
) -> Result<Option<String>, Error> {
    let response = Request::get(&format!("{base}/v1/alerts?value={ip}"))
        .header("authorization", &format!("Bearer {token}"))
        .send()?
        .error_for_status()?;
    // An empty list is the literal body `null`.
    let alerts: Option<Vec<Value>> = response.json()?;
    Ok(alerts.unwrap_or_default().into_iter().find_map(|alert| {
        let message = alert["message"].as_str().unwrap_or_default();
        message.contains(marker).then(|| {
            alert["id"]
                .as_u64()
                .map(|id| id.to_string())
                .unwrap_or_default()
        })
    }))
}

/// The CrowdSec scope and value of an IP or CIDR range.
fn target(text: &str) -> Result<(String, &'static str), Error> {
    let text = text.trim().replace("[.]", ".");
    match text.split_once('/') {
        Some((address, prefix))
            if address.parse::<std::net::IpAddr>().is_ok() && prefix.parse::<u8>().is_ok() =>
        {
            Ok((text, "Range"))
        }
        None if text.parse::<std::net::IpAddr>().is_ok() => Ok((text, "Ip")),
        _ => Err(Error::InvalidInput(format!(
            "`{text}` is not an IP address or CIDR range"
        ))),
    }
}

fn lapi(base: Option<&str>) -> String {
    base.unwrap_or(DEFAULT_LAPI)
        .trim_end_matches('/')
        .to_owned()
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (hour, minute, second) = (rest / 3600, rest % 3600 / 60, rest % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

plugin!(BlockIp);
