//! Special-purpose IP address ranges: one table, from IANA's IPv4 and IPv6 Special-Purpose
//! Address Registries (RFC 6890 and the RFCs that updated them) and the multicast ranges, read
//! by the template test `private_ip`, by the plugin host's egress policy (which refuses every
//! range here unless the server allows it) and by the guardrails of destructive actions (which
//! protect the [`Scope::Internal`] ranges).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// What a special-purpose range is to an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The organisation's own network or the host itself (private, loopback, link-local, shared
    /// address space, "this network", broadcast): never an outside party, never to be blocked.
    Internal,
    /// Not globally reachable, but nobody's internal network either (documentation,
    /// benchmarking, reserved, protocol assignments, multicast): not a destination, though a
    /// block of it harms nobody.
    Reserved,
}

/// One range of the registries.
#[derive(Debug, Clone, Copy)]
pub struct SpecialRange {
    pub network: &'static str,
    /// The registry's name for it, with the RFC that assigned it.
    pub name: &'static str,
    pub scope: Scope,
}

/// The registries' ranges. Where ranges nest, the narrower one is listed first and wins.
pub const SPECIAL_RANGES: &[SpecialRange] = &[
    range(
        "255.255.255.255/32",
        "limited broadcast (RFC 8190)",
        Scope::Internal,
    ),
    range("0.0.0.0/8", "\"this network\" (RFC 791)", Scope::Internal),
    range("10.0.0.0/8", "private-use (RFC 1918)", Scope::Internal),
    range(
        "100.64.0.0/10",
        "shared address space, CGNAT (RFC 6598)",
        Scope::Internal,
    ),
    range("127.0.0.0/8", "loopback (RFC 1122)", Scope::Internal),
    range("169.254.0.0/16", "link-local (RFC 3927)", Scope::Internal),
    range("172.16.0.0/12", "private-use (RFC 1918)", Scope::Internal),
    range(
        "192.0.0.0/24",
        "IETF protocol assignments (RFC 6890)",
        Scope::Reserved,
    ),
    range(
        "192.0.2.0/24",
        "documentation, TEST-NET-1 (RFC 5737)",
        Scope::Reserved,
    ),
    range(
        "192.88.99.0/24",
        "6to4 relay anycast (RFC 7526)",
        Scope::Reserved,
    ),
    range("192.168.0.0/16", "private-use (RFC 1918)", Scope::Internal),
    range("198.18.0.0/15", "benchmarking (RFC 2544)", Scope::Reserved),
    range(
        "198.51.100.0/24",
        "documentation, TEST-NET-2 (RFC 5737)",
        Scope::Reserved,
    ),
    range(
        "203.0.113.0/24",
        "documentation, TEST-NET-3 (RFC 5737)",
        Scope::Reserved,
    ),
    range("224.0.0.0/4", "multicast (RFC 5771)", Scope::Reserved),
    range("240.0.0.0/4", "reserved (RFC 1112)", Scope::Reserved),
    range("::1/128", "loopback (RFC 4291)", Scope::Internal),
    range("::/128", "unspecified (RFC 4291)", Scope::Internal),
    range(
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation (RFC 8215)",
        Scope::Reserved,
    ),
    range("100::/64", "discard-only (RFC 6666)", Scope::Reserved),
    range("2001:db8::/32", "documentation (RFC 3849)", Scope::Reserved),
    range(
        "2001::/23",
        "IETF protocol assignments (RFC 2928)",
        Scope::Reserved,
    ),
    range("2002::/16", "6to4 (RFC 3056)", Scope::Reserved),
    range("3fff::/20", "documentation (RFC 9637)", Scope::Reserved),
    range(
        "5f00::/16",
        "segment routing SIDs (RFC 9602)",
        Scope::Reserved,
    ),
    range("fc00::/7", "unique-local (RFC 4193)", Scope::Internal),
    range(
        "fe80::/10",
        "link-local unicast (RFC 4291)",
        Scope::Internal,
    ),
    range("ff00::/8", "multicast (RFC 4291)", Scope::Reserved),
];

const fn range(network: &'static str, name: &'static str, scope: Scope) -> SpecialRange {
    SpecialRange {
        network,
        name,
        scope,
    }
}

impl SpecialRange {
    pub fn net(&self) -> IpNet {
        // The table is checked by a test: every entry parses.
        self.network
            .parse()
            .unwrap_or_else(|_| IpNet::from(IpAddr::from(Ipv4Addr::UNSPECIFIED)))
    }
}

/// The special-purpose range `ip` is in, if any. An IPv6 address that carries an IPv4 address
/// (IPv4-mapped `::ffff:a.b.c.d`, or NAT64's `64:ff9b::a.b.c.d`) is looked up as that address, so
/// a translation gateway cannot be a way into the ranges above.
pub fn special_range(ip: IpAddr) -> Option<&'static SpecialRange> {
    let ip = embedded_ipv4(ip).map_or(ip, IpAddr::V4);
    SPECIAL_RANGES
        .iter()
        .find(|range| range.net().contains(&ip))
}

/// Does `ip` belong to the organisation or the host ([`Scope::Internal`])?
pub fn is_internal(ip: IpAddr) -> bool {
    special_range(ip).is_some_and(|range| range.scope == Scope::Internal)
}

/// The ranges of one scope, as networks (the guardrails' defaults).
pub fn ranges(scope: Scope) -> Vec<IpNet> {
    SPECIAL_RANGES
        .iter()
        .filter(|range| range.scope == scope)
        .map(SpecialRange::net)
        .collect()
}

fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    const NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
    let nat64 = ipnet::Ipv6Net::new(NAT64, 96).ok()?;
    nat64.contains(&v6).then(|| {
        let [.., a, b, c, d] = v6.octets();
        Ipv4Addr::new(a, b, c, d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses_and_narrower_ranges_come_first() {
        let nets: Vec<IpNet> = SPECIAL_RANGES
            .iter()
            .map(|range| {
                range
                    .network
                    .parse()
                    .unwrap_or_else(|_| panic!("{} does not parse", range.network))
            })
            .collect();
        for (index, net) in nets.iter().enumerate() {
            for earlier in &nets[..index] {
                assert!(
                    !earlier.contains(net),
                    "{net} is listed after {earlier}, which contains it: it would never match"
                );
            }
        }
    }

    #[test]
    fn addresses_are_found_in_their_range() {
        let table = [
            ("0.0.0.1", Some("\"this network\" (RFC 791)")),
            ("0.255.255.255", Some("\"this network\" (RFC 791)")),
            ("255.255.255.255", Some("limited broadcast (RFC 8190)")),
            ("255.255.255.254", Some("reserved (RFC 1112)")),
            ("192.0.2.10", Some("documentation, TEST-NET-1 (RFC 5737)")),
            ("198.19.0.1", Some("benchmarking (RFC 2544)")),
            ("239.1.2.3", Some("multicast (RFC 5771)")),
            ("64:ff9b::a00:1", Some("private-use (RFC 1918)")),
            ("::ffff:0.0.0.1", Some("\"this network\" (RFC 791)")),
            ("2001:db8::1", Some("documentation (RFC 3849)")),
            ("64:ff9b::808:808", None),
            ("8.8.8.8", None),
            ("2606:4700::1111", None),
        ];
        for (address, expected) in table {
            let ip: IpAddr = address.parse().expect("address");
            assert_eq!(
                special_range(ip).map(|range| range.name),
                expected,
                "{address}"
            );
        }
    }
}
