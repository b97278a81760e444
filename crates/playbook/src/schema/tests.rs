use std::collections::BTreeSet;
use std::path::Path;

use regex::Regex;
use serde_json::Value;

use super::*;
use crate::compile::{
    APPROVAL_FIELDS, BACKOFF_FIELDS, CASE_FIELDS, DEDUPE_FIELDS, FOREACH_FIELDS, ON_FAILURE_FIELDS,
    PLAYBOOK_FIELDS, PLUGIN_GRANT_FIELDS, RETRY_FIELDS, SCHEDULE_FIELDS, STEP_FIELDS,
    TRIGGER_FIELDS, UNDO_FIELDS,
};
use crate::model::{ApprovalTimeout, StepId};

/// Every object with fixed fields in the schema, beside the compiler's list of its fields.
fn objects() -> Vec<(&'static str, Vec<&'static str>)> {
    let handler_fields = STEP_FIELDS
        .iter()
        .copied()
        .filter(|f| !matches!(*f, "needs" | "approval" | "undo" | "expires"))
        .collect();
    vec![
        ("", PLAYBOOK_FIELDS.to_vec()),
        ("/$defs/trigger", TRIGGER_FIELDS.to_vec()),
        ("/$defs/dedupe", DEDUPE_FIELDS.to_vec()),
        ("/$defs/schedule", SCHEDULE_FIELDS.to_vec()),
        ("/$defs/step", STEP_FIELDS.to_vec()),
        ("/$defs/handler", handler_fields),
        ("/$defs/foreach", FOREACH_FIELDS.to_vec()),
        ("/$defs/retry", RETRY_FIELDS.to_vec()),
        ("/$defs/backoff", BACKOFF_FIELDS.to_vec()),
        ("/$defs/on_failure", ON_FAILURE_FIELDS.to_vec()),
        ("/$defs/approval", APPROVAL_FIELDS.to_vec()),
        ("/$defs/undo", UNDO_FIELDS.to_vec()),
        ("/$defs/plugin_grant", PLUGIN_GRANT_FIELDS.to_vec()),
        ("/$defs/case", CASE_FIELDS.to_vec()),
        (
            "/$defs/case/properties/observables",
            ObservableType::ALL.map(ObservableType::as_str).to_vec(),
        ),
    ]
}

#[test]
fn objects_have_exactly_the_fields_the_compiler_knows() {
    let schema = playbook_schema();
    for (pointer, fields) in objects() {
        let properties = schema
            .pointer(&format!("{pointer}/properties"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("`{pointer}` has no properties"));
        let found: BTreeSet<&str> = properties.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = fields.into_iter().collect();
        assert_eq!(found, expected, "the properties of `{pointer}`");
    }
}

#[test]
fn every_object_with_fields_is_listed_closed_and_described() {
    let schema = playbook_schema();
    let mut found = BTreeSet::new();
    visit(&schema, String::new(), &mut |pointer, node| {
        let is_object = node.get("type") == Some(&Value::from("object"));
        let Some(properties) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        if !is_object {
            // A constraint such as the trigger's `if`/`then`, not a description of fields.
            return;
        }
        assert_eq!(
            node.get("additionalProperties"),
            Some(&Value::Bool(false)),
            "`{pointer}` must refuse unknown fields, as the compiler does"
        );
        for (name, property) in properties {
            let description = property.get("description").and_then(Value::as_str);
            assert!(
                description.is_some_and(|d| d.ends_with('.')),
                "`{pointer}/properties/{name}` needs a description (a sentence)"
            );
        }
        found.insert(pointer.to_owned());
    });
    let listed: BTreeSet<String> = objects().into_iter().map(|(p, _)| p.to_owned()).collect();
    assert_eq!(
        found, listed,
        "objects() must list every object of the schema"
    );
}

#[test]
fn references_resolve() {
    let schema = playbook_schema();
    visit(&schema, String::new(), &mut |pointer, node| {
        if let Some(target) = node.get("$ref").and_then(Value::as_str) {
            let local = target.strip_prefix('#').expect("local reference");
            assert!(
                schema.pointer(local).is_some(),
                "`{pointer}` refers to missing `{target}`"
            );
        }
    });
}

#[test]
fn enumerations_match_the_model() {
    let schema = playbook_schema();
    let kinds: Vec<Value> = ErrorKind::ALL
        .iter()
        .map(|k| Value::from(k.as_str()))
        .collect();
    let on = &schema["$defs"]["retry"]["properties"]["on"]["oneOf"];
    assert_eq!(on[0]["enum"], Value::from(kinds.clone()));
    assert_eq!(on[1]["items"]["enum"], Value::from(kinds));

    let timeouts = [
        ApprovalTimeout::Deny,
        ApprovalTimeout::Approve,
        ApprovalTimeout::Fail,
    ];
    let names: Vec<Value> = timeouts
        .iter()
        .map(|t| serde_json::to_value(t).expect("serializable"))
        .collect();
    let on_timeout = &schema["$defs"]["approval"]["properties"]["on_timeout"];
    assert_eq!(on_timeout["enum"], Value::from(names));
    for name in ["deny", "approve", "fail"] {
        let approval = format!("    approval: {{ approvers: [soc], on_timeout: {name} }}\n");
        assert!(
            crate::compile(&with_step_lines(&approval)).is_ok(),
            "on_timeout: {name}"
        );
    }
    for then in ["fail", "continue"] {
        let source = format!(
            "{}    on_failure: {{ run: [tell], then: {then} }}\nhandlers:\n  - id: tell\n    uses: core/echo\n",
            with_step_lines("")
        );
        assert!(crate::compile(&source).is_ok(), "then: {then}");
    }
}

#[test]
fn case_enumerations_match_the_model() {
    let schema = playbook_schema();
    let phases: Vec<&str> = Phase::OF_STEPS.map(Phase::as_str).to_vec();
    assert_eq!(
        schema["$defs"]["step"]["properties"]["phase"]["enum"],
        serde_json::json!(phases)
    );
    for phase in Phase::OF_STEPS {
        let source = with_step_lines(&format!("    phase: {phase}\n"));
        assert!(crate::compile(&source).is_ok(), "phase: {phase}");
    }
    assert!(!compiles(&with_step_lines("    phase: closed\n")));
    let kinds: Vec<&str> = ObservableType::ALL.map(ObservableType::as_str).to_vec();
    let join_on = &schema["$defs"]["case"]["properties"]["join_on"]["oneOf"];
    assert_eq!(join_on[0]["enum"], serde_json::json!(kinds));
    for kind in kinds {
        let case = format!(
            "case: {{ key: k, severity: critical, join_on: [{kind}], observables: {{ {kind}: x }} }}\n"
        );
        assert!(
            compiles(&format!("{case}{}", with_step_lines(""))),
            "{kind}"
        );
    }
}

#[test]
fn defaults_match_the_compiler() {
    let dedupe = "name: p\ntrigger:\n  webhook: w\n  public: true\n  dedupe: { key: '{{ trigger.id }}' }\nsteps:\n  - id: a\n    uses: core/echo\n    foreach: [1, 2]\n";
    let playbook = crate::compile(dedupe).expect("valid playbook");
    let window = playbook.trigger.dedupe.expect("dedupe").window;
    assert_eq!(window, DEFAULT_DEDUPE_WINDOW);
    let foreach = playbook.steps[0].foreach.as_ref().expect("foreach");
    assert_eq!(foreach.concurrency as u64, DEFAULT_CONCURRENCY);
    assert_eq!(foreach.var, "item");
    assert_eq!(playbook.steps[0].timeout, DEFAULT_STEP_TIMEOUT);

    let case = format!("case: {{ key: k }}\n{}", with_step_lines(""));
    let playbook = crate::compile(&case).expect("valid playbook");
    assert_eq!(playbook.case.expect("case").window, DEFAULT_CASE_WINDOW);
    assert_eq!(
        schema_default("/$defs/case/properties/window"),
        humantime::format_duration(DEFAULT_CASE_WINDOW).to_string()
    );
}

fn schema_default(pointer: &str) -> String {
    playbook_schema()
        .pointer(&format!("{pointer}/default"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn patterns_agree_with_the_compiler() {
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    let ids = [
        "enrich", "_x", "a1_b", &long, "Block-IP", "1abc", "", "a-b", "é", &too_long,
    ];
    for id in ids {
        let schema = matches(ID_PATTERN, id) && id.chars().count() <= 64;
        assert_eq!(schema, StepId::is_valid(id), "step id `{id}`");
    }

    let uses = [
        "enrich-ioc/check-ip",
        "core/echo",
        "block-ip/ban@1.2.0",
        "a_1/b-2@v1+build.5",
        "Enrich/x",
        "enrich",
        "a/b/c",
        "a/b@",
        "a/b@1@2",
        "-a/b",
        "a/1b",
        "a/b@ 1",
    ];
    for value in uses {
        let source = with_step_lines("").replace("core/echo", &quote(value));
        assert_eq!(
            matches(USES_PATTERN, value),
            compiles(&source),
            "uses: {value}"
        );
    }

    for name in [
        "block-ip",
        "Block.IP_2",
        "a b",
        "",
        "naïve",
        &"n".repeat(128),
        &"n".repeat(129),
    ] {
        let source = with_step_lines("").replace("name: p", &format!("name: {}", quote(name)));
        let schema = matches(NAME_PATTERN, name) && name.chars().count() <= 128;
        assert_eq!(schema, compiles(&source), "name: {name}");
    }

    for webhook in [
        "alerts",
        "suricata-alerts_2",
        "Alerts",
        "a b",
        "",
        &long,
        &too_long,
    ] {
        let source =
            with_step_lines("").replace("webhook: w", &format!("webhook: {}", quote(webhook)));
        let schema = matches(WEBHOOK_PATTERN, webhook) && webhook.chars().count() <= 64;
        assert_eq!(schema, compiles(&source), "webhook: {webhook}");
    }

    let durations = [
        "30s",
        "5m",
        "1h 30m",
        "1h30m",
        "2 days",
        "1.5h",
        " 10s ",
        "1 hour 2 minutes",
        "5M",
        "1y",
        "250ms",
        "90",
        "",
        "s",
        "10x",
        "-5s",
        "1h-",
        "h1",
        "1.s",
        "5 S",
    ];
    for text in durations {
        let parsed = humantime::parse_duration(text.trim()).is_ok();
        assert_eq!(matches(DURATION_PATTERN, text), parsed, "duration `{text}`");
    }
}

#[test]
fn checked_in_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/playbook.schema.json");
    let current = serde_json::to_string_pretty(&playbook_schema()).expect("serializable") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &current).expect("write docs/playbook.schema.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "docs/playbook.schema.json differs from playbook_schema(); rerun with UPDATE_GOLDEN=1"
    );
}

/// A valid playbook with one step, plus `extra` lines inside that step.
fn with_step_lines(extra: &str) -> String {
    format!(
        "name: p\ntrigger:\n  webhook: w\n  public: true\nsteps:\n  - id: a\n    uses: core/echo\n{extra}"
    )
}

fn compiles(source: &str) -> bool {
    crate::compile(source).is_ok()
}

/// A YAML single-quoted scalar.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn matches(pattern: &str, text: &str) -> bool {
    Regex::new(pattern).expect("valid pattern").is_match(text)
}

/// Calls `f` with every schema node and its JSON pointer.
fn visit(node: &Value, pointer: String, f: &mut impl FnMut(&str, &Value)) {
    f(&pointer, node);
    match node {
        Value::Object(map) => {
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                visit(child, format!("{pointer}/{escaped}"), f);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                visit(child, format!("{pointer}/{index}"), f);
            }
        }
        _ => {}
    }
}

#[test]
fn connector_schema_objects_have_exactly_the_compiler_fields() {
    use crate::connector::{
        ACTION_FIELDS, AUTH_FIELDS, AUTH_TYPES, CONNECTOR_FIELDS, PAGINATE_FIELDS, REQUEST_FIELDS,
        SETTING_FIELDS,
    };
    let schema = connector_schema();
    let keys = |pointer: &str| -> BTreeSet<String> {
        schema
            .pointer(&format!("{pointer}/properties"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{pointer} has properties"))
            .keys()
            .cloned()
            .collect()
    };
    let set = |fields: &[&str]| {
        fields
            .iter()
            .map(|f| (*f).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(keys(""), set(CONNECTOR_FIELDS));
    assert_eq!(keys("/$defs/setting"), set(SETTING_FIELDS));
    assert_eq!(keys("/$defs/action"), set(ACTION_FIELDS));
    assert_eq!(keys("/$defs/request"), set(REQUEST_FIELDS));
    assert_eq!(keys("/$defs/paginate"), set(PAGINATE_FIELDS));
    let mut auth_fields = BTreeSet::new();
    for (index, (kind, required, optional)) in AUTH_TYPES.iter().enumerate() {
        let variant = keys(&format!("/$defs/auth/oneOf/{index}"));
        let mut expected = set(required);
        expected.extend(set(optional));
        expected.insert("type".into());
        assert_eq!(variant, expected, "auth `{kind}`");
        auth_fields.extend(variant);
    }
    assert_eq!(auth_fields, set(AUTH_FIELDS));
}

#[test]
fn checked_in_connector_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connector.schema.json");
    let current = serde_json::to_string_pretty(&connector_schema()).expect("serializable") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &current).expect("write docs/connector.schema.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "docs/connector.schema.json differs from connector_schema(); rerun with UPDATE_GOLDEN=1"
    );
}
