//! A plugin's reference, read from what it declares: every action with every input (the optional
//! ones too, with their defaults and limits) and every output, with their types. `riposte plugin
//! inspect` prints it as text, and docs/plugins.md carries it as Markdown for the shipped plugins
//! (a test keeps the two equal), so the reference cannot drift from the plugins.

use crate::manifest::{Action, Manifest};

/// One input or output of an action, as its JSON Schema describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// `string`, `integer`, `one of: a, b`, `list of string`, …
    pub kind: String,
    pub required: bool,
    /// The default, as JSON.
    pub default: Option<String>,
    /// Limits: `1 to 365`, `at most 64 characters`, …
    pub limits: Vec<String>,
}

/// The inputs and outputs of an action.
pub fn fields(action: &Action) -> (Vec<Field>, Vec<Field>) {
    (
        schema_fields(&action.input_schema),
        schema_fields(&action.output_schema),
    )
}

/// The reference as Markdown: a section per action with a table of inputs and one of outputs.
pub fn markdown(manifest: &Manifest) -> String {
    let mut text = format!(
        "### `{}` {}\n\n{}\n",
        manifest.name, manifest.version, manifest.description
    );
    for action in &manifest.actions {
        text.push_str(&format!(
            "\n#### `{}/{}`{}\n\n{}\n",
            manifest.name,
            action.name,
            traits(action),
            action.description
        ));
        let (inputs, outputs) = fields(action);
        text.push_str("\n| input | type | required | default | limits |\n|---|---|---|---|---|\n");
        if inputs.is_empty() {
            text.push_str("| (none) | | | | |\n");
        }
        for field in &inputs {
            text.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                field.name,
                escape(&field.kind),
                if field.required { "yes" } else { "no" },
                field
                    .default
                    .as_ref()
                    .map(|default| format!("`{}`", escape(default)))
                    .unwrap_or_default(),
                escape(&field.limits.join(", "))
            ));
        }
        text.push_str("\n| output | type | always |\n|---|---|---|\n");
        if outputs.is_empty() {
            text.push_str("| (any) | | |\n");
        }
        for field in &outputs {
            text.push_str(&format!(
                "| `{}` | {} | {} |\n",
                field.name,
                escape(&field.kind),
                if field.required { "yes" } else { "no" }
            ));
        }
    }
    if !manifest.secrets.is_empty() {
        text.push_str("\n| secret | how it is used |\n|---|---|\n");
        for secret in &manifest.secrets {
            let how = match &secret.header {
                Some(header) => format!("attached by the host as the `{header}` header"),
                None => "read by the plugin".to_owned(),
            };
            text.push_str(&format!(
                "| `{}` | {} — {how} |\n",
                secret.name,
                escape(&secret.description)
            ));
        }
    }
    text
}

/// The reference as plain text, for a terminal.
pub fn text(manifest: &Manifest) -> String {
    let mut text = format!(
        "{} {} (plugin contract {})\n{}\n\nactions:\n",
        manifest.name, manifest.version, manifest.abi_version, manifest.description
    );
    for action in &manifest.actions {
        text.push_str(&format!(
            "  {}/{}{}\n      {}\n",
            manifest.name,
            action.name,
            traits(action),
            action.description
        ));
        let (inputs, outputs) = fields(action);
        for (title, fields) in [("inputs", inputs), ("outputs", outputs)] {
            if fields.is_empty() {
                continue;
            }
            text.push_str(&format!("      {title}:\n"));
            for field in fields {
                let presence = match (title, field.required) {
                    ("inputs", true) => "required",
                    ("inputs", false) => "optional",
                    (_, true) => "always",
                    (_, false) => "sometimes",
                };
                let mut notes = vec![presence.to_owned()];
                if let Some(default) = &field.default {
                    notes.push(format!("default {default}"));
                }
                notes.extend(field.limits.iter().cloned());
                text.push_str(&format!(
                    "        {}: {} ({})\n",
                    field.name,
                    field.kind,
                    notes.join(", ")
                ));
            }
        }
    }
    if !manifest.hosts.is_empty() {
        text.push_str(&format!(
            "\nhosts it calls: {}\n",
            manifest.hosts.join(", ")
        ));
    }
    if !manifest.secrets.is_empty() {
        text.push_str("\nsecrets:\n");
        for secret in &manifest.secrets {
            let how = match &secret.header {
                Some(header) => format!("attached by the host as the `{header}` header"),
                None => "read by the plugin".to_owned(),
            };
            text.push_str(&format!(
                "  {} — {} ({how})\n",
                secret.name, secret.description
            ));
        }
    }
    text.trim_end().to_owned()
}

fn traits(action: &Action) -> String {
    let mut traits = Vec::new();
    if action.destructive {
        traits.push("destructive");
    }
    if !action.idempotent {
        traits.push("not idempotent");
    }
    if traits.is_empty() {
        String::new()
    } else {
        format!(" [{}]", traits.join(", "))
    }
}

fn schema_fields(schema: &serde_json::Value) -> Vec<Field> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    let mut fields: Vec<Field> = properties
        .iter()
        .map(|(name, property)| Field {
            name: name.clone(),
            kind: kind(property),
            required: required.contains(&name.as_str()),
            default: property.get("default").map(serde_json::Value::to_string),
            limits: limits(property),
        })
        .collect();
    // Required first, then by name.
    fields.sort_by(|a, b| b.required.cmp(&a.required).then(a.name.cmp(&b.name)));
    fields
}

fn kind(property: &serde_json::Value) -> String {
    if let Some(values) = property["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|value| {
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            })
            .collect();
        return format!("one of: {}", values.join(", "));
    }
    let base = match &property["type"] {
        serde_json::Value::String(name) => name.clone(),
        serde_json::Value::Array(names) => names
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_owned(),
    };
    match base.as_str() {
        "array" => format!("list of {}", kind(&property["items"])),
        "object" => "mapping".to_owned(),
        _ => base,
    }
}

fn limits(property: &serde_json::Value) -> Vec<String> {
    let number = |key: &str| property.get(key).map(serde_json::Value::to_string);
    let mut limits = Vec::new();
    match (number("minimum"), number("maximum")) {
        (Some(low), Some(high)) => limits.push(format!("{low} to {high}")),
        (Some(low), None) => limits.push(format!("at least {low}")),
        (None, Some(high)) => limits.push(format!("at most {high}")),
        (None, None) => {}
    }
    if let Some(length) = number("maxLength") {
        limits.push(format!("at most {length} characters"));
    }
    if let Some(items) = number("maxItems") {
        limits.push(format!("at most {items} items"));
    }
    if let Some(pattern) = property["pattern"].as_str() {
        limits.push(format!("matches `{pattern}`"));
    }
    if let Some(format) = property["format"].as_str() {
        limits.push(format!("format {format}"));
    }
    limits
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
