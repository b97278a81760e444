//! Inputs the fuzzer found (fuzz/, docs/fuzzing.md), kept as regression tests: each once made
//! the compiler or a template panic, abort or misbehave.

use playbook::template::Source;
use playbook::{Condition, Error, Input, Position};

/// minijinja 2.24's lexer reads a `}}` in a bare expression as the expression's end and panics
/// on whatever follows ("empty lexer stack"): a typo in a condition aborted `riposte validate`.
#[test]
fn a_stray_closing_pair_of_braces_in_a_bare_expression_is_a_syntax_error() {
    let source = "name: stray\ntrigger: { webhook: stray, public: true }\nsteps:\n  - id: a\n    uses: core/echo\n    if: trigger.severity == 'high' }} and {{ trigger.score > 50\n";
    let diagnostics = playbook::compile(source).expect_err("the condition is not an expression");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0].code, "template-syntax");
    assert_eq!(diagnostics[0].position, Position::new(6, 36), "at the `}}`");
    assert!(
        diagnostics[0].message.contains("unexpected `}}`"),
        "{}",
        diagnostics[0].message
    );

    let context = minijinja::context! { a => 1, b => 2 };
    for text in ["a }} b", "a }} ", "a -}} b", "(a) }}{{ b"] {
        let condition = Condition {
            source: source_of(text),
        };
        let error = condition.evaluate(&context).expect_err(text);
        assert!(
            matches!(&error, Error::Template { message, .. } if message.contains("unexpected `}}`")),
            "{text}: {error}"
        );
        let input = Input::Expression(source_of(text));
        assert!(input.render(&context).is_err(), "{text}");
    }
    // Closing braces inside brackets and strings are no stray pair.
    for (text, expected) in [
        ("{'a': {'b': 2}}['a']['b'] == 2", true),
        ("'}} and {{' ~ a == '}} and {{1'", true),
        ("[{'x': a}][0]['x'] == 1", true),
    ] {
        let condition = Condition {
            source: source_of(text),
        };
        assert_eq!(
            condition.evaluate(&context).expect(text),
            expected,
            "{text}"
        );
    }
}

fn source_of(text: &str) -> Source {
    Source::new(text, Position::START)
}

/// minijinja repeats a sequence lazily, walking it `n` times however short it is: `[] * 10**13`
/// has no items, passed the budget, and then took hours to turn into JSON. An event's number
/// could pick `n`, and hang a webhook's screening or a step.
#[test]
fn repeating_an_empty_sequence_any_number_of_times_is_quick() {
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let context =
            minijinja::context! { count => 10_000_000_000_000_u64, empty => Vec::<u8>::new() };
        let render = |text: &str| Input::Expression(source_of(text)).render(&context);
        let results = [
            "[] * 10**13",
            "trigger_like * count",
            "([1] * 0) * 10**13",
            "count * []",
            "[1, 2] * 3",
            "3 * ['a']",
            "'ab' * 2",
            "[1] * 10**6",
        ]
        .map(|text| (text, render(&text.replace("trigger_like", "empty"))));
        let _ = sent.send(results.map(|(text, result)| (text, result.map_err(|e| e.to_string()))));
    });
    let results = received
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("every repetition finishes within seconds");
    let expected = [
        Ok(serde_json::json!([])),
        Ok(serde_json::json!([])),
        Ok(serde_json::json!([])),
        Ok(serde_json::json!([])),
        Ok(serde_json::json!([1, 2, 1, 2, 1, 2])),
        Ok(serde_json::json!(["a", "a", "a"])),
        Ok(serde_json::json!("abab")),
    ];
    for ((text, result), expected) in results.iter().zip(&expected) {
        assert_eq!(result, expected, "{text}");
    }
    let (text, too_long) = &results[7];
    assert!(
        too_long
            .as_ref()
            .is_err_and(|e| e.contains("100000 allowed")),
        "{text}: {too_long:?}"
    );
}

/// A connector's `base_url` (and `token_url`) was checked only when it was a string, so an empty
/// `base_url:` (null), a number or a list compiled, which the published schema refuses.
#[test]
fn a_base_url_that_is_not_text_is_refused() {
    for value in [
        "",
        " # the URL goes here",
        " 42",
        " [https://a.example.com]",
        " { a: b }",
    ] {
        let source = format!(
            "connector: tickets\nbase_url:{value}\nactions:\n  get:\n    request: {{ method: GET, path: /tickets }}\n"
        );
        let diagnostics = playbook::connector::compile(&source).expect_err(&source);
        assert!(
            diagnostics
                .iter()
                .any(|d| d.code == "invalid-url" && d.position.line == 2),
            "{source}\n{diagnostics:#?}"
        );
    }
    for value in [
        "https://tickets.example.com/api",
        "\"{{ settings.base_url }}\"",
    ] {
        let source = format!(
            "connector: tickets\nbase_url: {value}\nactions:\n  get:\n    request: {{ method: GET, path: /tickets }}\n"
        );
        assert!(
            playbook::connector::compile(&source).is_ok(),
            "{source}: {:#?}",
            playbook::connector::compile(&source).err()
        );
    }
}

/// `trigger.split` was refused only when it was plain text: an empty `split:` (null), a number or
/// a literal list compiled, though the published schema refuses them and nothing gets split.
#[test]
fn a_split_that_is_not_a_template_is_refused() {
    for value in ["", " 3", " [a, b]", " { alerts: 1 }", " alerts"] {
        let source = format!(
            "name: split\ntrigger:\n  webhook: split\n  public: true\n  split:{value}\nsteps:\n  - id: a\n    uses: core/echo\n"
        );
        let diagnostics = playbook::compile(&source).expect_err(&source);
        assert!(
            diagnostics
                .iter()
                .any(|d| d.code == "wrong-type" && d.position.line == 5),
            "{source}\n{diagnostics:#?}"
        );
    }
    let source = "name: split\ntrigger:\n  webhook: split\n  public: true\n  split: \"{{ trigger.alerts }}\"\nsteps:\n  - id: a\n    uses: core/echo\n";
    assert!(
        playbook::compile(source).is_ok(),
        "{:#?}",
        playbook::compile(source).err()
    );
}
