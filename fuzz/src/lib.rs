//! What the fuzz targets share: the invariants they assert, and the server's and the plugin
//! host's parsing code, compiled here from their own source files.
//!
//! The webhook checks (`crates/server/src/auth.rs`, `crates/server/src/http/ingress.rs`) and the
//! conversions of what a plugin hands the host (`crates/plugin-host/src/{manifest,reference,
//! guard}.rs`) are pure functions, but their crates depend on wasmtime, whose instrumented build
//! would dwarf everything else here. So those files are included by path: the code fuzzed is the
//! code shipped, built against the few small crates it uses. `bindings` stands in for the types
//! wasmtime generates from `plugins/wit/plugin.wit` (`manifest.rs` converts from them); if the WIT
//! record changes, this fails to compile until it follows.

#![allow(dead_code, unreachable_pub)]

use playbook::{Diagnostic, Position};

// `rustfmt::skip`: those files are formatted with their own crates, not followed from here.
#[path = "../../crates/server/src/auth.rs"]
#[rustfmt::skip]
pub mod auth;
#[path = "../../crates/server/src/http/ingress.rs"]
#[rustfmt::skip]
pub mod ingress;

#[path = "../../crates/plugin-host/src/guard.rs"]
#[rustfmt::skip]
pub mod guard;
#[path = "../../crates/plugin-host/src/manifest.rs"]
#[rustfmt::skip]
pub mod manifest;
#[path = "../../crates/plugin-host/src/reference.rs"]
#[rustfmt::skip]
pub mod reference;

/// The records of `plugins/wit/plugin.wit` as `wasmtime::component::bindgen!` generates them.
pub mod bindings {
    pub mod riposte {
        pub mod plugin {
            pub mod types {
                #[derive(Debug, Clone)]
                pub struct Action {
                    pub name: String,
                    pub description: String,
                    pub input_schema: String,
                    pub output_schema: String,
                    pub idempotent: bool,
                    pub destructive: bool,
                }

                #[derive(Debug, Clone)]
                pub struct SecretRequest {
                    pub name: String,
                    pub description: String,
                    pub header: Option<String>,
                    pub header_format: Option<String>,
                }

                #[derive(Debug, Clone)]
                pub struct Manifest {
                    pub abi_version: String,
                    pub name: String,
                    pub version: String,
                    pub description: String,
                    pub actions: Vec<Action>,
                    pub hosts: Vec<String>,
                    pub secrets: Vec<SecretRequest>,
                }
            }
        }
    }
}

/// Diagnostics about a template, placed at an offset into the scalar's *parsed* text. Where YAML
/// changed the text (folded `>` and multi-line plain scalars join lines, quoted scalars have
/// escapes), the offset is not the file's, and the position can land past the end of a line or
/// of the file: a known imprecision (docs/fuzzing.md), so only their plausibility is checked.
const TEMPLATE_CODES: &[&str] = &[
    "template",
    "template-syntax",
    "template-sandbox",
    "unknown-reference",
];

/// Asserts that every diagnostic points into `source` (a line that exists, a column within it or
/// just past its end) and that each renders.
pub fn check_diagnostics(source: &str, diagnostics: &[Diagnostic]) {
    assert!(
        !diagnostics.is_empty(),
        "a refusal must say why: no diagnostics"
    );
    for diagnostic in diagnostics {
        if TEMPLATE_CODES.contains(&diagnostic.code) {
            let Position { line, column } = diagnostic.position;
            assert!(line >= 1 && column >= 1, "{diagnostic}");
        } else {
            check_position(source, diagnostic.position, &diagnostic.to_string());
        }
        assert!(
            !diagnostic.code.is_empty()
                && diagnostic
                    .code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "diagnostic codes are kebab-case: {:?}",
            diagnostic.code
        );
        let rendered = diagnostic.render("fuzz.yaml", source);
        assert!(rendered.contains(diagnostic.code));
    }
}

/// Asserts that `position` is within `source`: line 1 to the last line, column 1 to one past
/// the last character of that line, or the end of the input. Lines end at `\n`, or where YAML
/// ends them (`\r\n`, `\r`, `\n`): the parser counts YAML's lines.
pub fn check_position(source: &str, position: Position, what: &str) {
    let yaml_lines = source.replace("\r\n", "\n");
    // The end of the input is a place too: the YAML parser reports an unclosed flow collection at
    // the start of the line after the last, whether or not the file ends with a line break.
    let fits = |lines: Vec<&str>| {
        let end = Position::new(lines.len() as u32 + 1, 1);
        position == end
            || position.line >= 1
                && lines.get(position.line as usize - 1).is_some_and(|line| {
                    position.column >= 1 && position.column as usize <= line.chars().count() + 1
                })
    };
    assert!(
        fits(source.split('\n').collect()) || fits(yaml_lines.split(['\r', '\n']).collect()),
        "{position} is outside the input ({} lines): {what}",
        source.split('\n').count()
    );
}

/// The largest JSON nesting of `value` (a scalar is 0, `[]` is 1).
pub fn json_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Splits fuzz input at its first NUL byte: (before, after), or (all, empty).
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// `Manifest::check_abi`, which the plugin host keeps to itself.
pub fn check_abi(manifest: &manifest::Manifest) -> Result<(), String> {
    manifest.check_abi()
}

/// `guard::check`, which the plugin host keeps to itself.
pub fn guard_check(input: &serde_json::Value, protected: &[ipnet::IpNet]) -> Result<(), String> {
    guard::check(input, protected)
}
