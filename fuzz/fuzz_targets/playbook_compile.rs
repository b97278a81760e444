//! Arbitrary bytes as a playbook file and as a connector file.
//!
//! Invariants: the compilers never panic, abort or hang (the YAML budget, the template nesting
//! guard); a refusal names at least one problem and every problem points into the input; what
//! compiles keeps the model's promises: `order` is a topological order of all the steps,
//! templates point into the file, schedules tick, the cross-file call checks hold too, and the
//! published JSON Schema (`playbook::schema`, what editors check against) accepts it.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use playbook::connector::Connector;
use playbook::template::Source;
use playbook::{Condition, Input, Playbook};
use riposte_fuzz::{check_diagnostics, check_position};

fuzz_target!(|data: &[u8]| {
    // Files are read as UTF-8 text (`playbook::load`); other bytes never reach the compiler.
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let _ = playbook::connector::is_connector(source);
    match playbook::compile(source) {
        Ok(playbook) => {
            check_playbook(source, &playbook);
            check_schema(source, &schemas().0, "playbook");
        }
        Err(diagnostics) => check_diagnostics(source, &diagnostics),
    }
    match playbook::connector::compile(source) {
        Ok(connector) => {
            check_connector(source, &connector);
            check_schema(source, &schemas().1, "connector");
        }
        Err(diagnostics) => check_diagnostics(source, &diagnostics),
    }
});

fn check_playbook(source: &str, playbook: &Playbook) {
    // `order` lists every step once, each after the steps it needs.
    let order = playbook.order();
    let mut seen = vec![false; playbook.steps.len()];
    for &index in order {
        let step = &playbook.steps[index];
        for need in &step.needs {
            let needed = playbook
                .steps
                .iter()
                .position(|s| &s.id == need)
                .expect("`needs` names a step");
            assert!(
                seen[needed],
                "{} runs before {need}, which it needs",
                step.id
            );
        }
        assert!(!seen[index], "{} is twice in the order", step.id);
        seen[index] = true;
    }
    assert!(seen.iter().all(|&s| s), "a step is missing from the order");

    for step in playbook.steps.iter().chain(&playbook.handlers) {
        check_position(source, step.position, "a step's position");
        inputs(source, &step.with);
        step.condition.iter().for_each(|c| condition(source, c));
        step.foreach.iter().for_each(|f| inputs(source, &f.items));
        step.expires.iter().for_each(|e| inputs(source, e));
        step.approval
            .iter()
            .flat_map(|a| &a.message)
            .for_each(|m| inputs(source, m));
        step.undo.iter().for_each(|u| inputs(source, &u.with));
        let _ = step.retry.delay_before(step.retry.max_attempts);
    }
    let trigger = &playbook.trigger;
    trigger.split.iter().for_each(|s| inputs(source, s));
    trigger.filter.iter().for_each(|c| condition(source, c));
    trigger.resolved.iter().for_each(|c| condition(source, c));
    trigger.dedupe.iter().for_each(|d| inputs(source, &d.key));
    playbook.incident.values().for_each(|i| inputs(source, i));
    playbook.outputs.values().for_each(|i| inputs(source, i));
    if let Some(case) = &playbook.case {
        inputs(source, &case.key);
        case.title.iter().for_each(|i| inputs(source, i));
        case.severity.iter().for_each(|i| inputs(source, i));
        case.observables.iter().for_each(|(_, i)| inputs(source, i));
    }
    if let Some(schedule) = &trigger.schedule {
        // Ten minutes of ticks at most 600 (six fields tick every second), in order.
        let start = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let ticks = schedule.ticks(start, start + Duration::from_secs(600));
        assert!(ticks.len() <= 601);
        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "ticks out of order");
        let _ = schedule.next_after(SystemTime::now());
    }
    let _ = playbook.longest_quiet();

    for (_, diagnostic) in playbook::check_calls(&[playbook]) {
        check_position(source, diagnostic.position, &diagnostic.to_string());
    }
    for (_, diagnostic) in playbook::connector::check_calls(&[playbook], &[known_connector()]) {
        check_position(source, diagnostic.position, &diagnostic.to_string());
    }
}

fn check_connector(source: &str, connector: &Connector) {
    let _ = connector.auth_secrets();
    connector.base_url.iter().for_each(|i| inputs(source, i));
    for action in connector.actions.values() {
        for status in [200, 204, 301, 404, 429, 500] {
            let _ = action.succeeds(status);
        }
    }
}

/// What the compiler accepted, the schema must accept: an editor must not mark a valid file.
fn check_schema(source: &str, schema: &jsonschema::Validator, what: &str) {
    let options = serde_saphyr::options! { strict_booleans: true };
    // Documents JSON cannot hold (keys that are not strings) are left out.
    let Ok(document) = serde_saphyr::from_str_with_options::<serde_json::Value>(source, options)
    else {
        return;
    };
    let errors: Vec<String> = schema
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the {what} compiles but its schema refuses it: {errors:#?}"
    );
}

fn schemas() -> &'static (jsonschema::Validator, jsonschema::Validator) {
    static SCHEMAS: OnceLock<(jsonschema::Validator, jsonschema::Validator)> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let validator = |schema| jsonschema::validator_for(&schema).expect("a valid schema");
        (
            validator(playbook::schema::playbook_schema()),
            validator(playbook::schema::connector_schema()),
        )
    })
}

/// Every template in `input` starts inside the file.
fn inputs(source: &str, input: &Input) {
    match input {
        Input::Literal(_) => {}
        Input::Expression(template) | Input::Template(template) => position(source, template),
        Input::List(items) => items.iter().for_each(|i| inputs(source, i)),
        Input::Map(entries) => entries.iter().for_each(|(_, i)| inputs(source, i)),
    }
}

fn condition(source: &str, condition: &Condition) {
    position(source, &condition.source);
}

fn position(source: &str, template: &Source) {
    check_position(source, template.position, &template.text);
}

/// A connector that fuzzed playbooks' `uses:` may name, for the checks of calls.
fn known_connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| {
        playbook::connector::compile(
            r#"connector: tickets
base_url: https://tickets.example.com/api
secrets:
  tickets_token: The API token.
auth:
  type: bearer
  secret: tickets_token
actions:
  create:
    description: Opens a ticket.
    input:
      type: object
      required: [title]
      additionalProperties: false
      properties:
        title: { type: string, maxLength: 200 }
        priority: { type: integer, minimum: 1, maximum: 5 }
    request:
      method: POST
      path: /tickets
      body: { title: "{{ input.title }}", priority: "{{ input.priority | default(3) }}" }
    output: "{{ response.body }}"
"#,
        )
        .unwrap_or_else(|d| panic!("the fuzz target's connector does not compile: {d:?}"))
    })
}
