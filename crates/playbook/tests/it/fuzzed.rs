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
    Source {
        text: text.to_owned(),
        position: Position::START,
    }
}
