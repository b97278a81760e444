//! YAML → a tree of nodes that remember where they came from.
//!
//! The checker walks this tree itself instead of deserializing straight into typed structs, because
//! serde stops at the first problem and we want to report every problem at once, each at its own
//! line and column. Parsing goes through `serde-saphyr` with a budget, so hostile documents (alias
//! bombs, deep nesting, huge files) are refused quickly and with bounded memory.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, Position};

/// Largest playbook file accepted, in bytes. Real playbooks are a few kilobytes.
pub const MAX_PLAYBOOK_BYTES: usize = 1024 * 1024;

/// A YAML value with its position in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) pos: Position,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What a user would call this kind of value, for messages like "expected a list, found a string".
    pub(crate) fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Converts to JSON, for literal (non-template) values.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => s.clone().into(),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.scalar_text(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// The text of a scalar, used for mapping keys.
    pub(crate) fn scalar_text(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::String(s) => s.clone(),
            Value::Seq(_) | Value::Map(_) => String::new(),
        }
    }
}

/// Parses one YAML document into a [`Node`] tree, or returns the diagnostic that explains why not.
pub(crate) fn parse(source: &str) -> Result<Node, Diagnostic> {
    if source.len() > MAX_PLAYBOOK_BYTES {
        return Err(Diagnostic::error(
            "too-large",
            Position::START,
            format!(
                "the file is {} bytes; playbooks are limited to {MAX_PLAYBOOK_BYTES} bytes",
                source.len()
            ),
        )
        .with_hint("split it into several playbooks"));
    }
    if let Some(offset) = source.find('\0') {
        // The parser would treat a NUL as the end of the input and ignore what follows.
        let line = source[..offset].matches('\n').count() as u32 + 1;
        let column = source[..offset]
            .rsplit('\n')
            .next()
            .map_or(1, |l| l.chars().count() as u32 + 1);
        return Err(Diagnostic::error(
            "yaml",
            Position::new(line, column),
            "the file contains a NUL byte",
        )
        .with_hint("playbooks are text; remove the byte (is this a binary file?)"));
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 48,
            // Two, not one: at one the parser stops quietly after the first document and never
            // sees that there is a second, which must be refused rather than ignored.
            max_documents: 2,
            max_nodes: 100_000,
            max_total_scalar_bytes: MAX_PLAYBOOK_BYTES,
        },
        alias_limits: serde_saphyr::options::AliasLimits {
            max_total_replayed_events: 20_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 100,
        },
        strict_booleans: true,
    };
    match serde_saphyr::from_str_with_options::<Option<Node>>(source, options) {
        Ok(Some(node)) => Ok(node),
        Ok(None) => Err(Diagnostic::error(
            "empty",
            Position::START,
            "the file is empty; a playbook is a YAML mapping",
        )
        .with_hint("start with `name:`, `trigger:` and `steps:`")),
        Err(error) => {
            let pos = error
                .location()
                .map(|loc| Position::new(loc.line() as u32, loc.column() as u32))
                .unwrap_or(Position::START);
            let message = yaml_message(&error.without_snippet().to_string());
            let diagnostic = Diagnostic::error("yaml", pos, &message);
            Err(match yaml_hint(&message) {
                Some(hint) => diagnostic.with_hint(hint),
                None => diagnostic,
            })
        }
    }
}

/// serde-saphyr appends its own location to messages; ours goes in the diagnostic instead.
fn yaml_message(raw: &str) -> String {
    let first_line = raw.lines().next().unwrap_or(raw).trim();
    let without_location = match first_line.find(" at line ") {
        Some(index) => &first_line[..index],
        None => first_line,
    };
    let without_advice = match without_location.find(", set DuplicateKeyPolicy") {
        Some(index) => &without_location[..index],
        None => without_location,
    };
    let message = without_advice.trim_end_matches(['.', ',']);
    if message.contains("Depth") || message.contains("recursion limit") {
        return "the document nests too deeply".to_owned();
    }
    message.to_string()
}

/// Advice for the parser errors people actually hit.
fn yaml_hint(message: &str) -> Option<&'static str> {
    if message.contains("alias") {
        Some("anchors and aliases expand to too many nodes; this looks like an alias bomb")
    } else if message.contains("nests too deeply") {
        Some("playbooks nest at most 48 levels deep")
    } else if message.contains("duplicate") {
        Some("each key may appear once in a mapping; remove or rename one of them")
    } else if message.contains("budget") {
        Some("the document is too large or complex for a playbook")
    } else if message.contains("tab") {
        Some("indent with spaces; YAML does not allow tabs for indentation")
    } else if message.contains("indicator") || message.contains("mapping values") {
        Some("check the indentation and quote values that contain `: ` or start with `{`")
    } else {
        None
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        let pos = Position::new(
            spanned.referenced.line() as u32,
            spanned.referenced.column() as u32,
        );
        Ok(Node {
            value: spanned.value,
            pos,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}
