//! Filters and tests that security engineers reach for in templates.
//!
//! | name | kind | example |
//! |---|---|---|
//! | `in_cidr` | filter and test | `trigger.ip is in_cidr(["10.0.0.0/8"])` |
//! | `private_ip` | test (`is_private_ip` filter) | `trigger.ip is private_ip` |
//! | `ip_address` | test | `value is ip_address` |
//! | `defang` / `refang` | filters | `"http://evil.com" \| defang` → `hxxp://evil[.]com` |
//! | `sha256`, `sha1`, `md5` | filters | `trigger.body \| sha256` |
//! | `regex_match` | filter and test | `trigger.user is regex_match("^svc-")` |
//! | `regex_search`, `regex_findall`, `regex_replace` | filters | `text \| regex_findall("\\d+")` |
//! | `tojson` (built in), `fromjson` | filters | `trigger.raw \| fromjson` |
//! | `b64encode`, `b64decode` | filters | `"user:pass" \| b64encode` |
//! | `combine` | filter | `item \| combine({'receiver': trigger.receiver})` |

use std::net::IpAddr;

use base64::Engine as _;
use ipnet::IpNet;
use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};
use regex::{Regex, RegexBuilder};
use sha2::Digest;

/// The filters, by name (the sandbox wraps each in its byte budget).
pub(crate) fn filters() -> Vec<(&'static str, Value)> {
    vec![
        ("in_cidr", Value::from_function(in_cidr)),
        ("is_private_ip", Value::from_function(is_private_ip)),
        ("defang", Value::from_function(defang)),
        ("refang", Value::from_function(refang)),
        (
            "sha256",
            Value::from_function(|value: &str| hex_digest(sha2::Sha256::digest(value))),
        ),
        (
            "sha1",
            Value::from_function(|value: &str| hex_digest(sha1::Sha1::digest(value))),
        ),
        (
            "md5",
            Value::from_function(|value: &str| hex_digest(md5::Md5::digest(value))),
        ),
        ("regex_match", Value::from_function(regex_match)),
        ("regex_search", Value::from_function(regex_search)),
        ("regex_findall", Value::from_function(regex_findall)),
        ("regex_replace", Value::from_function(regex_replace)),
        ("fromjson", Value::from_function(fromjson)),
        (
            "b64encode",
            Value::from_function(|value: &str| {
                base64::engine::general_purpose::STANDARD.encode(value)
            }),
        ),
        ("b64decode", Value::from_function(b64decode)),
        ("combine", Value::from_function(combine)),
    ]
}

/// The tests (`x is private_ip`), which build nothing.
pub(crate) fn register_tests(env: &mut Environment<'static>) {
    env.add_test("in_cidr", in_cidr);
    env.add_test("private_ip", is_private_ip);
    env.add_test("ip_address", |value: &str| parse_ip(value).is_ok());
    env.add_test("regex_match", regex_match);
}

/// Is an IP address the organisation's own: private, loopback, link-local, shared (CGNAT),
/// unique-local, "this network" or broadcast ([`crate::addresses::Scope::Internal`])? Such
/// addresses belong to the organisation, so automation must never treat them as external.
pub fn is_private(ip: IpAddr) -> bool {
    crate::addresses::is_internal(ip)
}

fn is_private_ip(value: &str) -> Result<bool, Error> {
    parse_ip(value).map(is_private)
}

fn in_cidr(value: &str, networks: Value) -> Result<bool, Error> {
    let ip = parse_ip(value)?;
    let list: Vec<String> = if let Some(text) = networks.as_str() {
        vec![text.to_owned()]
    } else {
        networks
            .try_iter()?
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("CIDR ranges must be strings"))
            })
            .collect::<Result<_, _>>()?
    };
    // Every range is parsed before any is matched, so a bad one is reported whatever the address.
    let nets = list
        .iter()
        .map(|network| {
            network
                .trim()
                .parse()
                .or_else(|_| network.trim().parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| invalid(format!("`{network}` is not a CIDR range")))
        })
        .collect::<Result<Vec<IpNet>, _>>()?;
    // Dual-stack sockets report IPv4 clients as `::ffff:a.b.c.d`; such an address is also
    // matched against IPv4 ranges, as `is_private` treats it as the IPv4 address it carries.
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    Ok(nets
        .iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4))))
}

fn parse_ip(value: &str) -> Result<IpAddr, Error> {
    refang(value)
        .trim()
        .parse()
        .map_err(|_| invalid(format!("`{value}` is not an IP address")))
}

/// Makes an indicator safe to paste into chat or a ticket: nothing will link or resolve it.
fn defang(value: &str) -> String {
    // Refanged first, so that defanging twice changes nothing (`evil[.]com` must not become
    // `evil[[.]]com`) and every variant comes out the same way.
    refang(value)
        .replace("https://", "hxxps://")
        .replace("http://", "hxxp://")
        .replace("ftp://", "fxp://")
        .replace('.', "[.]")
        .replace('@', "[@]")
}

/// Reverses [`defang`] and the common variants analysts and feeds use.
fn refang(value: &str) -> String {
    value
        .replace("[.]", ".")
        .replace("(.)", ".")
        .replace("{.}", ".")
        .replace("[dot]", ".")
        .replace("(dot)", ".")
        .replace("[@]", "@")
        .replace("[at]", "@")
        .replace("[:]", ":")
        .replace("hxxps://", "https://")
        .replace("hxxp://", "http://")
        .replace("fxp://", "ftp://")
}

fn hex_digest(bytes: impl AsRef<[u8]>) -> String {
    data_encoding::HEXLOWER.encode(bytes.as_ref())
}

fn compile(pattern: &str) -> Result<Regex, Error> {
    // Bounded so a pathological pattern cannot exhaust memory; the regex crate runs in linear time.
    RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|error| invalid(format!("invalid regular expression: {error}")))
}

fn regex_match(value: &str, pattern: &str) -> Result<bool, Error> {
    compile(pattern).map(|re| re.is_match(value))
}

fn regex_search(value: &str, pattern: &str) -> Result<Value, Error> {
    let re = compile(pattern)?;
    Ok(match re.captures(value) {
        Some(captures) if captures.len() > 1 => Value::from(
            captures
                .iter()
                .skip(1)
                .map(|m| m.map_or(Value::from(()), |m| Value::from(m.as_str())))
                .collect::<Vec<_>>(),
        ),
        Some(captures) => Value::from(captures.get(0).map_or("", |m| m.as_str())),
        None => Value::from(()),
    })
}

fn regex_findall(value: &str, pattern: &str) -> Result<Vec<String>, Error> {
    let re = compile(pattern)?;
    Ok(re.find_iter(value).map(|m| m.as_str().to_owned()).collect())
}

fn regex_replace(value: &str, pattern: &str, replacement: &str) -> Result<String, Error> {
    compile(pattern).map(|re| re.replace_all(value, replacement).into_owned())
}

fn fromjson(value: &str) -> Result<Value, Error> {
    serde_json::from_str::<serde_json::Value>(value)
        .map(|json| Value::from_serialize(&json))
        .map_err(|error| invalid(format!("not valid JSON: {error}")))
}

/// Ansible's `combine`: the mapping with the keys of each further mapping added or replaced (the
/// last one wins; nested mappings are replaced, not merged).
fn combine(base: Value, others: minijinja::value::Rest<Value>) -> Result<Value, Error> {
    let mut merged = std::collections::BTreeMap::new();
    for mapping in std::iter::once(&base).chain(others.iter()) {
        if mapping.kind() != minijinja::value::ValueKind::Map {
            return Err(invalid("`combine` merges mappings"));
        }
        for key in mapping.try_iter()? {
            let value = mapping.get_item(&key)?;
            merged.insert(key, value);
        }
    }
    Ok(Value::from(merged))
}

fn b64decode(value: &str) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|error| invalid(format!("not valid base64: {error}")))?;
    String::from_utf8(bytes).map_err(|_| invalid("the decoded bytes are not UTF-8 text"))
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}
