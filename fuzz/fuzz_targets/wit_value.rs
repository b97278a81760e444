//! What crosses the WIT boundary from a plugin, and what the host checks before a call.
//!
//! A plugin is untrusted: its `describe` result (the WIT `manifest` record, JSON Schemas as
//! text) becomes a `plugin_host::Manifest`, is checked for a compatible contract and rendered as
//! a reference (`riposte plugin inspect`, docs); its `invoke` result is JSON text, capped, then
//! parsed into the step's output; a destructive action's input first passes the guard against
//! protected addresses (`plugin_host::guard`). This target runs those conversions, compiled from
//! their source files (see src/lib.rs), on fuzzed records.
//!
//! Input: NUL-separated fields: abi-version, name, version, description, the action's name,
//! description, input schema and output schema, a flags byte (1 idempotent, 2 destructive), a
//! secret's name, header and header format, the plugin's output text, the step's input (JSON),
//! then any number of hosts.
//!
//! Invariants: no panics; a schema is kept as JSON when it parses and as its text otherwise; a
//! `0.1.x` contract is accepted; an output the host accepts reads back unchanged from the JSON
//! the journal stores; the guard refuses every input that holds a protected address as a plain
//! string.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use riposte_fuzz::bindings::riposte::plugin::types;
use riposte_fuzz::{guard, manifest, reference};

/// The host's default cap on an output (`HostConfig::max_output_bytes`).
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0).map(String::from_utf8_lossy);
    let mut next = || fields.next().map(|f| f.into_owned()).unwrap_or_default();
    let abi_version = next();
    let name = next();
    let version = next();
    let description = next();
    let action = types::Action {
        name: next(),
        description: next(),
        input_schema: next(),
        output_schema: next(),
        idempotent: false,
        destructive: false,
    };
    let flags = next().bytes().next().unwrap_or(0);
    let action = types::Action {
        idempotent: flags & 1 != 0,
        destructive: flags & 2 != 0,
        ..action
    };
    let secret_name = next();
    let header = Some(next()).filter(|h| !h.is_empty());
    let header_format = Some(next()).filter(|h| !h.is_empty());
    let output = next();
    let input = next();
    let hosts: Vec<String> = std::iter::from_fn(|| fields.next().map(|f| f.into_owned())).collect();

    let described = types::Manifest {
        abi_version,
        name,
        version,
        description,
        actions: vec![action.clone()],
        hosts,
        secrets: vec![types::SecretRequest {
            name: secret_name,
            description: "fuzzed".into(),
            header,
            header_format,
        }],
    };
    let converted = manifest::Manifest::from(described.clone());
    let schema = |text: &str| {
        serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
    };
    assert_eq!(
        converted.actions[0].input_schema,
        schema(&action.input_schema)
    );
    assert_eq!(
        converted.actions[0].output_schema,
        schema(&action.output_schema)
    );
    let abi = riposte_fuzz::check_abi(&converted);
    let parts: Vec<&str> = described.abi_version.split('.').collect();
    if parts.len() == 3 && parts[0] == "0" && parts[1] == "1" && parts[2].parse::<u64>().is_ok() {
        assert!(
            abi.is_ok(),
            "contract {} refused: {abi:?}",
            described.abi_version
        );
    }
    let _ = reference::text(&converted);
    let _ = reference::markdown(&converted);

    // The plugin's answer, as `PluginHost::invoke` takes it.
    if output.len() <= MAX_OUTPUT_BYTES
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&output)
    {
        let stored = serde_json::to_string(&value).expect("a parsed value serializes");
        let read_back: serde_json::Value = serde_json::from_str(&stored)
            .unwrap_or_else(|e| panic!("an output the host accepted does not read back: {e}"));
        assert_eq!(read_back, value, "an output reads back changed");
    }

    // A destructive action's input, before the call.
    if let Ok(input) = serde_json::from_str::<serde_json::Value>(&input) {
        let protected = guard::default_protected_ranges();
        let verdict = riposte_fuzz::guard_check(&input, &protected);
        if verdict.is_ok() {
            let mut strings = Vec::new();
            leaves(&input, &mut strings);
            for text in strings {
                if let Ok(address) = text.trim().parse::<IpAddr>() {
                    assert!(
                        !protected.iter().any(|range| range.contains(&address)),
                        "the guard let the protected address {text:?} through"
                    );
                }
            }
        }
    }
});

fn leaves<'v>(value: &'v serde_json::Value, found: &mut Vec<&'v str>) {
    match value {
        serde_json::Value::String(text) => found.push(text),
        serde_json::Value::Array(items) => items.iter().for_each(|i| leaves(i, found)),
        serde_json::Value::Object(map) => map.values().for_each(|v| leaves(v, found)),
        _ => {}
    }
}
