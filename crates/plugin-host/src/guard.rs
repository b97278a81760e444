//! Guardrails for destructive actions: addresses no automation may block, whatever a playbook's
//! template produced.

use std::net::IpAddr;

use ipnet::IpNet;

/// The narrowest networks a destructive action may target: anything broader is refused outright.
const MIN_PREFIX_V4: u8 = 16;
const MIN_PREFIX_V6: u8 = 48;

/// Looks through every string in `input` for IP addresses and networks; returns why the first
/// dangerous one is refused.
pub(crate) fn check(input: &serde_json::Value, protected: &[IpNet]) -> Result<(), String> {
    match input {
        serde_json::Value::String(text) => check_text(text, protected),
        serde_json::Value::Array(items) => items.iter().try_for_each(|i| check(i, protected)),
        serde_json::Value::Object(map) => map.values().try_for_each(|v| check(v, protected)),
        _ => Ok(()),
    }
}

fn check_text(text: &str, protected: &[IpNet]) -> Result<(), String> {
    let text = text.trim();
    let Some(target) = target_of(text) else {
        return Ok(());
    };
    let too_broad = match target {
        IpNet::V4(net) => net.prefix_len() < MIN_PREFIX_V4,
        IpNet::V6(net) => net.prefix_len() < MIN_PREFIX_V6,
    };
    if too_broad {
        return Err(format!(
            "refused: `{text}` is too broad a target for a destructive action (at most /{MIN_PREFIX_V4} for IPv4, /{MIN_PREFIX_V6} for IPv6)"
        ));
    }
    if let Some(range) = protected
        .iter()
        .find(|range| range.contains(&target.network()) || target.contains(&range.network()))
    {
        return Err(format!(
            "refused: `{text}` is in the protected range {range}"
        ));
    }
    Ok(())
}

/// The address or network a string designates, however it is written: plain, defanged
/// (`10[.]1[.]2[.]3`), with a port (`10.1.2.3:22`, `[::1]:22`), or IPv4-mapped (`::ffff:10.1.2.3`)
/// — plugins clean their input up the same way before acting on it. URLs are endpoints to
/// connect to (the egress policy governs those), not targets, and are left alone.
fn target_of(text: &str) -> Option<IpNet> {
    if text.contains("://") {
        return None;
    }
    let cleaned = text
        .replace("[.]", ".")
        .replace("(.)", ".")
        .replace("[:]", ":");
    let mut candidates = vec![cleaned.clone()];
    if let Some((inner, _)) = cleaned.strip_prefix('[').and_then(|h| h.split_once(']')) {
        candidates.push(inner.to_owned());
    }
    if let Some((address, port)) = cleaned.rsplit_once(':')
        && port.chars().all(|c| c.is_ascii_digit())
        && address.contains('.')
    {
        candidates.push(address.to_owned());
    }
    candidates.into_iter().find_map(|candidate| {
        let net = candidate
            .parse::<IpNet>()
            .ok()
            .or_else(|| candidate.parse::<IpAddr>().ok().map(IpNet::from))?;
        Some(unmap(net))
    })
}

/// `::ffff:a.b.c.d/n` is the IPv4 network `a.b.c.d/(n-96)`.
fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
            .map(IpNet::V4)
            .unwrap_or(net);
    }
    net
}

/// Ranges that belong to every organisation: the internal special-purpose ranges (private,
/// loopback, link-local, CGNAT, unique-local, "this network", broadcast).
pub fn default_protected_ranges() -> Vec<IpNet> {
    playbook::addresses::ranges(playbook::addresses::Scope::Internal)
}
