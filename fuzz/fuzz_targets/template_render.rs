//! A template and a JSON event, rendered in the sandbox the runner uses.
//!
//! Input: one mode byte, the template text, a NUL, the event as JSON (anything else stands for
//! `null`). Modes: `T` renders a text template, `E` evaluates a lone expression, `C` a condition,
//! and `P` puts the template in a playbook's `with:` and, if the playbook compiles, renders the
//! checked step as the runner would; other bytes pick one of the four.
//!
//! Invariants: never a panic, abort or hang (fuel, the nesting guard, the byte budget); rendered
//! text and values within `MAX_RENDERED_BYTES`; an error points into the template; a secret
//! never leaves its marker (after `conceal`, no trace of the run's nonce is left); and what is
//! rendered reads back from its JSON text unchanged (the journal stores it so).

#![no_main]

use libfuzzer_sys::fuzz_target;
use playbook::template::{MAX_RENDERED_BYTES, SecretMarkers, Source};
use playbook::{Condition, Error, Input, Position};
use riposte_fuzz::{check_diagnostics, check_position, split_nul};

/// The run's nonce: unguessable in a real run; here, what must never show outside a marker.
const NONCE: &str = "n0ncef0rfuzz1ng";
/// Where the template starts in the (pretend) playbook file.
const AT: Position = Position { line: 3, column: 7 };

fuzz_target!(|data: &[u8]| {
    // A run's nonce is random: text that holds it guessed it, which no template or event can.
    // (libFuzzer learns it from the comparisons in `SecretMarkers::conceal`.)
    if data.windows(NONCE.len()).any(|w| w == NONCE.as_bytes()) {
        return;
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (template, event) = split_nul(rest);
    let Ok(template) = std::str::from_utf8(template) else {
        return;
    };
    let event: serde_json::Value = serde_json::from_slice(event).unwrap_or_default();
    let source = Source::new(template, AT);
    let markers = SecretMarkers::new(NONCE);
    let context = context(&event, &markers);
    let mode = match mode {
        b'P' => 0,
        b'E' => 1,
        b'T' => 2,
        b'C' => 3,
        other => other % 4,
    };
    match mode {
        0 => in_a_playbook(template, &context, &markers),
        1 => {
            let input = Input::Expression(source.clone());
            check_rendered(&source, input.render(&context), &markers);
        }
        2 => {
            let input = Input::Template(source.clone());
            let rendered = input.render(&context);
            if let Ok(serde_json::Value::String(text)) = &rendered {
                assert!(text.len() <= MAX_RENDERED_BYTES, "rendered past the cap");
            }
            check_rendered(&source, rendered, &markers);
        }
        _ => {
            let condition = Condition {
                source: source.clone(),
            };
            if let Err(error) = condition.evaluate(&context) {
                check_error(&source, &error);
            }
        }
    }
});

/// The context the runner gives a step: the event, vars, the run, a finished step, secrets.
fn context(event: &serde_json::Value, markers: &SecretMarkers) -> minijinja::Value {
    minijinja::context! {
        trigger => minijinja::Value::from_serialize(event),
        vars => minijinja::Value::from_serialize(serde_json::json!({
            "threshold": 80, "team": "soc", "protected": ["10.0.0.0/8", "192.168.0.0/16"],
        })),
        run => minijinja::Value::from_serialize(serde_json::json!({
            "id": "0190f0c2-7a3b-7c1d-8e9f-0a1b2c3d4e5f", "playbook": "fuzz", "started_at": 1_767_225_600_000_u64,
        })),
        steps => minijinja::Value::from_serialize(serde_json::json!({
            "enrich": { "output": event, "status": "succeeded", "attempts": 1 },
        })),
        secrets => markers.context(["token", "api_key"]),
    }
}

fn check_rendered(
    source: &Source,
    rendered: Result<serde_json::Value, Error>,
    markers: &SecretMarkers,
) {
    match rendered {
        Ok(value) => check_value(&value, markers),
        Err(error) => check_error(source, &error),
    }
}

/// The checks of what one template leaf rendered to.
fn check_value(value: &serde_json::Value, markers: &SecretMarkers) {
    let text = serde_json::to_string(value).expect("a rendered value is JSON");
    // The cap counts a string's bytes (its JSON may be longer: `\u001b` for an escape), and
    // any other value's JSON.
    let size = value.as_str().map_or(text.len(), str::len);
    assert!(
        size <= MAX_RENDERED_BYTES,
        "a value of {size} bytes passed the cap"
    );
    let concealed = serde_json::to_string(&markers.conceal(value)).expect("JSON");
    assert!(
        !concealed.contains(NONCE),
        "a secret's marker was transformed and escapes redaction: {concealed}"
    );
    let read_back: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("rendered JSON does not read back: {e}"));
    assert_eq!(&read_back, value, "rendered JSON reads back changed");
}

fn check_error(source: &Source, error: &Error) {
    let Error::Template { position, .. } = error else {
        panic!("rendering failed with a non-template error: {error}");
    };
    // The pretend file: two lines, then the template indented to column 7 (a block scalar's
    // later lines share its first line's indentation).
    let indent = " ".repeat(AT.column as usize - 1);
    let file = format!(
        "\n\n{indent}{}",
        source.text.replace('\n', &format!("\n{indent}"))
    );
    check_position(&file, *position, &error.to_string());
}

/// The template as a step's input in a playbook: compiled (every check a playbook's templates
/// get), then rendered as the runner renders a checked step.
fn in_a_playbook(template: &str, context: &minijinja::Value, markers: &SecretMarkers) {
    let yaml = format!(
        r#"name: fuzz
trigger:
  webhook: fuzz
  auth: siem
secrets: [token, api_key]
vars:
  threshold: 80
  team: soc
  protected: [10.0.0.0/8, 192.168.0.0/16]
plugins:
  http:
    hosts: [api.example.com]
    secrets: [token, api_key]
steps:
  - id: enrich
    uses: core/echo
    with: {{ value: 1 }}
  - id: act
    uses: http/request
    needs: [enrich]
    with:
      value: {}
"#,
        yaml_quoted(template)
    );
    let playbook = match playbook::compile(&yaml) {
        Ok(playbook) => playbook,
        Err(diagnostics) => return check_diagnostics(&yaml, &diagnostics),
    };
    let step = playbook.step("act").expect("the step `act`");
    match step.with.render(context) {
        Ok(value) => check_value(&value["value"], markers),
        Err(error) => {
            // Where the template sits in a quoted scalar with escapes, positions are approximate
            // (see `check_diagnostics`).
            let Error::Template { position, .. } = &error else {
                panic!("rendering failed with a non-template error: {error}");
            };
            assert!(position.line >= 1 && position.column >= 1, "{error}");
        }
    }
}

/// `text` as a YAML double-quoted scalar, every character outside printable ASCII escaped.
fn yaml_quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            ' '..='~' => quoted.push(c),
            c if (c as u32) <= 0xFFFF => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    quoted.push('"');
    quoted
}
