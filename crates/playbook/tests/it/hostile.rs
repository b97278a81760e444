//! Hostile input is refused with a clear diagnostic, never a panic or an abort: alias bombs, deep
//! nesting, huge files and scalars, bytes that are not text, and templates that loop, recurse,
//! nest or grow without end. Nothing here measures time; each test checks what the user is told.
//! (What is still unbounded, the memory used inside one minijinja operation, is described in
//! `playbook::template`.)

use std::path::{Path, PathBuf};

use playbook::{Diagnostic, Error, MAX_PLAYBOOK_BYTES, Position};

#[test]
fn hostile_yaml_is_refused_with_a_diagnostic() {
    let deep_block_mapping: String = (0..1000)
        .map(|depth| format!("{}a:\n", " ".repeat(depth + 1)))
        .collect();
    let many_keys: String = (0..100_000).map(|i| format!("k{i}: 0\n")).collect();
    let big = "y".repeat(100_000);
    let aliased_scalar: String = (0..99).map(|i| format!("  b{i}: *big\n")).collect();
    let huge_scalar = format!("{VALID}description: {}\n", "x".repeat(MAX_PLAYBOOK_BYTES));
    let cases = [
        Refusal {
            what: "a billion-laughs alias bomb",
            yaml: format!("{VALID}vars:\n{}", billion_laughs()),
            code: "yaml",
            line: 13,
            message: "alias replay limit exceeded".into(),
            hint: ALIAS_HINT,
        },
        Refusal {
            what: "an alias that repeats a large scalar",
            yaml: format!("{VALID}vars:\n  a: &big \"{big}\"\n{aliased_scalar}"),
            code: "yaml",
            line: 9,
            message: "budget breached".into(),
            hint: BUDGET_HINT,
        },
        Refusal {
            what: "flow sequences 10,000 deep",
            yaml: format!(
                "{VALID}vars:\n  x: {}{}\n",
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
            code: "yaml",
            line: 9,
            message: "the document nests too deeply".into(),
            hint: DEPTH_HINT,
        },
        Refusal {
            what: "flow mappings 10,000 deep",
            yaml: format!(
                "{VALID}vars:\n  x: {}1{}\n",
                "{a: ".repeat(10_000),
                "}".repeat(10_000)
            ),
            code: "yaml",
            line: 9,
            message: "the document nests too deeply".into(),
            hint: DEPTH_HINT,
        },
        Refusal {
            what: "block sequences 10,000 deep",
            yaml: format!("{VALID}vars:\n  x:\n    {}x\n", "- ".repeat(10_000)),
            code: "yaml",
            line: 10,
            message: "the document nests too deeply".into(),
            hint: DEPTH_HINT,
        },
        Refusal {
            what: "block mappings 1,000 deep",
            yaml: format!("{VALID}vars:\n{deep_block_mapping}"),
            code: "yaml",
            line: 56,
            message: "the document nests too deeply".into(),
            hint: DEPTH_HINT,
        },
        Refusal {
            what: "a mapping with 100,000 keys",
            yaml: format!("{VALID}{many_keys}"),
            code: "yaml",
            line: 50_000,
            message: "budget breached".into(),
            hint: BUDGET_HINT,
        },
        Refusal {
            what: "a file one byte over the limit",
            yaml: format!("{VALID}#{}", "x".repeat(MAX_PLAYBOOK_BYTES - VALID.len())),
            code: "too-large",
            line: 1,
            message: "the file is 1048577 bytes; playbooks are limited to 1048576 bytes".into(),
            hint: "split it into several playbooks",
        },
        Refusal {
            what: "one scalar larger than the file limit",
            yaml: huge_scalar.clone(),
            code: "too-large",
            line: 1,
            message: format!(
                "the file is {} bytes; playbooks are limited to 1048576 bytes",
                huge_scalar.len()
            ),
            hint: "split it into several playbooks",
        },
    ];
    let failures: Vec<String> = cases.iter().filter_map(Refusal::mismatch).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn large_but_legitimate_input_is_accepted() {
    // The limits leave room for real playbooks: a file of exactly the maximum size, one scalar
    // of most of it, and nesting far deeper than anyone writes by hand.
    let padded = format!(
        "{VALID}#{}",
        "x".repeat(MAX_PLAYBOOK_BYTES - VALID.len() - 1)
    );
    assert_eq!(padded.len(), MAX_PLAYBOOK_BYTES);
    compile(&padded);

    let description = "y".repeat(MAX_PLAYBOOK_BYTES - 1000);
    let playbook = compile(&format!("{VALID}description: {description}\n"));
    assert_eq!(playbook.description.as_deref(), Some(description.as_str()));

    let playbook = compile(&format!(
        "{VALID}vars:\n  x: {}1{}\n",
        "[".repeat(40),
        "]".repeat(40)
    ));
    let mut value = &playbook.vars["x"];
    for _ in 0..40 {
        value = &value[0];
    }
    assert_eq!(*value, serde_json::json!(1));
}

#[test]
fn a_file_with_several_documents_is_refused() {
    for extra in [
        format!("---\n{VALID}"),
        "---\n[unclosed\n".to_owned(),
        "---\n".repeat(1000),
    ] {
        let diagnostics = playbook::compile(&format!("{VALID}{extra}"))
            .expect_err("only the first document would be checked");
        assert_eq!(diagnostics[0].code, "yaml", "{diagnostics:#?}");
        // At the `---` on line 8 or where the second document starts, on line 9.
        let line = diagnostics[0].position.line;
        assert!((8..=9).contains(&line), "{diagnostics:#?}");
    }
}

#[test]
fn a_nul_byte_is_refused_where_it_is() {
    for source in [
        format!("{VALID}\0steps: [hidden]\n"),
        VALID.replace("name: hostile", "name: host\0ile"),
    ] {
        let diagnostics =
            playbook::compile(&source).expect_err("content after a NUL byte would be ignored");
        let nul = source.find('\0').expect("the source has a NUL byte");
        let line = source[..nul].matches('\n').count() as u32 + 1;
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].position.line, line, "{diagnostics:#?}");
    }
}

#[test]
fn check_file_reports_an_alias_bomb_like_a_compiler() {
    let file = TempFile::new(
        "alias-bomb",
        format!("{VALID}vars:\n{}", billion_laughs()).as_bytes(),
    );
    let checked = playbook::check_file(&file.0).expect("a readable file");
    assert_eq!(checked.diagnostics.len(), 1, "{}", checked.render());
    let rendered = checked.render();
    let expected = [
        "error[yaml]: alias replay limit exceeded".to_owned(),
        format!("--> {}:13:", file.0.display()),
        format!("= help: {ALIAS_HINT}"),
    ];
    for line in expected {
        assert!(
            rendered.contains(&line),
            "`{line}` is missing from:\n{rendered}"
        );
    }
}

#[test]
fn check_file_refuses_a_huge_file_by_its_size_before_reading_it() {
    // A sparse 64 GiB file: reading it would exhaust memory, so only its size can have been used.
    let file = TempFile::new("huge", b"");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file.0)
        .and_then(|f| f.set_len(64 << 30))
        .expect("create a sparse file");
    let error = playbook::check_file(&file.0).expect_err("a 64 GiB playbook must be refused");
    check_too_large(error, 64 << 30);

    let file = TempFile::new("one-over", "#".repeat(MAX_PLAYBOOK_BYTES + 1).as_bytes());
    let error = playbook::check_file(&file.0).expect_err("the file is over the limit");
    check_too_large(error, MAX_PLAYBOOK_BYTES as u64 + 1);
}

#[test]
fn check_file_refuses_bytes_that_are_not_utf8() {
    // A playbook saved as Latin-1: `é` is the single byte 0xE9.
    let file = TempFile::new(
        "latin1",
        &[VALID.as_bytes(), b"description: caf\xe9\n"].concat(),
    );
    let error = playbook::check_file(&file.0).expect_err("the file is not UTF-8");
    assert_eq!(
        error.to_string(),
        format!(
            "cannot read {}: stream did not contain valid UTF-8",
            file.0.display()
        )
    );
    let Error::Read { source, .. } = &error else {
        panic!("expected a read error, got {error:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn runaway_templates_stop_with_an_error() {
    let nested_macros = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    let caller_macros = "{% macro f(n) %}{{ caller(n) }}{% endmacro %}\
                         {% macro g(n) %}{% call(m) f(n) %}{{ g(m + 1) }}{% endcall %}{% endmacro %}\
                         {{ g(0) }}";
    let cases = [
        // Fuel: every evaluation may execute a bounded number of instructions.
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "engine ran out of fuel",
        ),
        (
            "{% for i in range(100000) %}{% set x = i * 2 %}{% endfor %}done",
            "engine ran out of fuel",
        ),
        // Size: nothing renders to more than `MAX_RENDERED_BYTES`, and nothing builds more than
        // `MAX_BUILT_BYTES` on the way (a repeated string is refused before it is built).
        (
            r#"{{ "x" * 1000000 }}"#,
            "evaluated to more than the 262144 bytes allowed",
        ),
        (
            r#"a{{ "x" * 1000000 }}"#,
            "rendered to more than the 262144 bytes allowed",
        ),
        (
            r#"{{ "x" * 100000000 }}"#,
            "the template builds more than the 16777216 bytes of values an evaluation may",
        ),
        (
            r#"a{{ "x" * 1000000000 }}"#,
            "the template builds more than the 16777216 bytes of values an evaluation may",
        ),
        (
            "{{ range(2000) | join('x' * 100000) | length }}",
            "the template builds more than the 16777216 bytes of values an evaluation may",
        ),
        (
            "{% set ns = namespace(s='x' * 1000) %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "the template builds more than the 16777216 bytes of values an evaluation may",
        ),
        (
            "{{ range(1000000) | join }}",
            "invalid operation: range has too many elements",
        ),
        (
            "{{ range(100000) | join }}",
            "evaluated to more than the 262144 bytes allowed",
        ),
        (
            "{{ range(100000) | list }}",
            "evaluated to more than the 262144 bytes allowed",
        ),
        // A sequence repeated a trillion times would be lazy in minijinja, and anything that walks
        // it would never end: no sequence may be longer than `MAX_ITEMS`.
        (
            "{{ [0] * 1000000000000 }}",
            "a sequence of 1000000000000 items is longer than the 100000 allowed",
        ),
        (
            "{{ {'k': [[0] * 1000000000000]} }}",
            "a sequence of 1000000000000 items is longer than the 100000 allowed",
        ),
    ];
    // Macros would recurse, and capture output where the size cap cannot see it: there are none.
    for template in [nested_macros, caller_macros] {
        let yaml = format!("{VALID}outputs:\n  x: {}\n", quoted(template));
        let diagnostics = playbook::compile(&yaml).expect_err("macros are refused");
        assert_eq!(diagnostics[0].code, "template-syntax", "{template}");
        assert!(
            diagnostics[0].message.contains("unknown statement macro"),
            "{template}: {}",
            diagnostics[0].message
        );
    }
    let mut failures = Vec::new();
    for (template, expected) in cases {
        match render(template) {
            Err(Error::Template {
                message, position, ..
            }) if message.contains(expected) && position.line == 9 => {}
            other => failures.push(format!(
                "`{template}`: expected `{expected}` on line 9, got {}",
                abbreviated(&other)
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_size_limit_is_exact() {
    let allowed = playbook::template::MAX_RENDERED_BYTES;
    let text = render(&format!(r#"{{{{ "x" * {} }}}}y"#, allowed - 1)).expect("fits exactly");
    assert_eq!(text.as_str().map(str::len), Some(allowed));
    let text = render(&format!(r#"{{{{ "x" * {allowed} }}}}"#)).expect("fits exactly");
    assert_eq!(text.as_str().map(str::len), Some(allowed));

    for template in [
        format!(r#"{{{{ "x" * {allowed} }}}}y"#),
        format!(r#"{{{{ "x" * {} }}}}"#, allowed + 1),
    ] {
        match render(&template) {
            Err(Error::Template { message, .. }) if message.contains("more than the") => {}
            other => panic!(
                "`{template}`: expected the size error, got {}",
                abbreviated(&other)
            ),
        }
    }
}

#[test]
fn deeply_nested_templates_are_syntax_errors() {
    // Without a limit, minijinja recurses once per link of a chain like these, and ten thousand
    // links overflow the stack: the process aborts.
    let chain = |link: &str, end: &str| format!("{{{{ {}{end} }}}}", link.repeat(10_000));
    let cases = [
        (chain("not ", "1"), TOO_DEEP),
        (chain("-", "1"), TOO_DEEP),
        (chain("- ", "1"), TOO_DEEP),
        (chain("1 + ", "1"), TOO_DEEP),
        (chain("1 if true else ", "1"), TOO_DEEP),
        (format!("{{{{ 1{} }}}}", "|abs".repeat(10_000)), TOO_DEEP),
        (
            format!("{{{{ trigger{} }}}}", ".a".repeat(10_000)),
            TOO_DEEP,
        ),
        (
            format!("{{{{ trigger{} }}}}", "[0]".repeat(10_000)),
            TOO_DEEP,
        ),
        (format!("{{{{ range{} }}}}", "(1)".repeat(10_000)), TOO_DEEP),
        (format!("{{{{ 0{} }}}}", ".0".repeat(10_000)), TOO_DEEP),
        (
            format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000)),
            TOO_DEEP,
        ),
        (
            format!("{{{{ {}{} }}}}", "[".repeat(10_000), "]".repeat(10_000)),
            TOO_DEEP,
        ),
        (
            format!("ok {{% set x = {}1 %}}", "not ".repeat(10_000)),
            TOO_DEEP,
        ),
        // Blocks are limited by minijinja itself.
        (
            format!(
                "{}x{}",
                "{% if true %}".repeat(10_000),
                "{% endif %}".repeat(10_000)
            ),
            "syntax error: template exceeds maximum recursion limits",
        ),
    ];
    let mut failures = Vec::new();
    for (template, expected) in &cases {
        let yaml = format!("{VALID}outputs:\n  x: {}\n", quoted(template));
        match playbook::compile(&yaml) {
            Err(diagnostics)
                if diagnostics.len() == 1
                    && diagnostics[0].code == "template-syntax"
                    && diagnostics[0].position.line == 9
                    && diagnostics[0].message.contains(expected) => {}
            other => failures.push(format!(
                "`{}…`: expected error[template-syntax] on line 9 with `{expected}`, got {}",
                &template[..20],
                abbreviated(&other.map(|_| "a valid playbook"))
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nesting_is_checked_where_it_starts_to_be_too_deep() {
    // The 200th `not` is where the limit is passed; 199 are fine.
    let fine = format!("{{{{ {}true }}}}", "not ".repeat(199));
    assert_eq!(
        render(&fine).expect("199 links are fine"),
        serde_json::json!(false)
    );
    let template = format!("{{{{ {}true }}}}", "not ".repeat(200));
    let yaml = format!("{VALID}outputs:\n  x: {}\n", quoted(&template));
    let diagnostics = playbook::compile(&yaml).expect_err("200 links are too many");
    assert_eq!(diagnostics[0].position, Position::new(9, 7 + 3 + 199 * 4));
    assert_eq!(
        diagnostics[0].hint.as_deref(),
        Some("see the template reference in docs/playbooks.md")
    );
    // Width is not depth: ten thousand items of one list are siblings.
    let wide = format!("{{{{ [{}] | length }}}}", "(not -1), ".repeat(10_000));
    assert_eq!(
        render(&wide).expect("a wide list"),
        serde_json::json!(10_000)
    );
    // Strings and comments do not count, and neither does text that is not a tag.
    let harmless = format!(
        "{} {{# {} #}} {{{{ \"{}\" | length }}}}",
        "not ".repeat(10_000),
        "|abs".repeat(10_000),
        "-(".repeat(10_000)
    );
    assert_eq!(
        render(&harmless).expect("nothing nests here"),
        serde_json::json!(format!("{}  20000", "not ".repeat(10_000)))
    );
}

#[test]
fn inputs_built_by_hand_are_checked_too() {
    // `Input` is public, so a caller can build one without `compile`: rendering checks again.
    let source =
        playbook::template::Source::new(format!("{}1", "-".repeat(10_000)), Position::new(3, 4));
    let context = minijinja::Value::from_serialize(serde_json::json!({}));
    for input in [
        playbook::Input::Expression(source.clone()),
        playbook::Input::Template(playbook::template::Source::new(
            format!("{{{{ {} }}}}", source.text),
            source.position,
        )),
    ] {
        match input.render(&context) {
            Err(Error::Template {
                message, position, ..
            }) => {
                assert_eq!(message, TOO_DEEP);
                assert_eq!(position.line, 3);
            }
            other => panic!("expected the nesting error, got {}", abbreviated(&other)),
        }
    }
}

const VALID: &str = "name: hostile
trigger:
  webhook: hostile
  public: true
steps:
  - id: s
    uses: p/a
";

const ALIAS_HINT: &str =
    "anchors and aliases expand to too many nodes; this looks like an alias bomb";
const DEPTH_HINT: &str = "playbooks nest at most 48 levels deep";
const TOO_DEEP: &str =
    "the expression nests too deeply: chain fewer operators, filters and brackets";
const BUDGET_HINT: &str = "the document is too large or complex for a playbook";

/// Nine levels of nine aliases each: 9^9 (387 million) strings once expanded.
fn billion_laughs() -> String {
    let mut yaml = "  a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n".to_owned();
    let names: Vec<char> = "abcdefghi".chars().collect();
    for pair in names.windows(2) {
        let (previous, name) = (pair[0], pair[1]);
        let aliases = vec![format!("*{previous}"); 9].join(", ");
        yaml.push_str(&format!("  {name}: &{name} [{aliases}]\n"));
    }
    yaml
}

/// What `compile` must answer to one hostile document: one diagnostic, on the right line.
struct Refusal {
    what: &'static str,
    yaml: String,
    code: &'static str,
    line: u32,
    message: String,
    hint: &'static str,
}

impl Refusal {
    fn mismatch(&self) -> Option<String> {
        let diagnostics = match playbook::compile(&self.yaml) {
            Ok(_) => return Some(format!("{}: compiled", self.what)),
            Err(diagnostics) => diagnostics,
        };
        match diagnostics.as_slice() {
            [
                Diagnostic {
                    code,
                    message,
                    position,
                    hint: Some(hint),
                },
            ] if *code == self.code
                && position.line == self.line
                && message.contains(&self.message)
                && hint == self.hint =>
            {
                None
            }
            _ => Some(format!(
                "{}: expected error[{}] on line {} with `{}` (help: {}), got\n{}",
                self.what,
                self.code,
                self.line,
                self.message,
                self.hint,
                abbreviated(&diagnostics)
            )),
        }
    }
}

#[track_caller]
fn check_too_large(error: Error, size: u64) {
    let Error::Invalid(checked) = error else {
        panic!("expected the playbook to be refused, got {error:?}");
    };
    let [diagnostic] = checked.diagnostics.as_slice() else {
        panic!("expected one diagnostic, got {:#?}", checked.diagnostics);
    };
    assert_eq!(
        (
            diagnostic.code,
            diagnostic.position,
            diagnostic.message.as_str()
        ),
        (
            "too-large",
            Position::START,
            format!(
                "the file is {size} bytes; playbooks are limited to {MAX_PLAYBOOK_BYTES} bytes"
            )
            .as_str()
        )
    );
}

/// Compiles a playbook that must be valid.
#[track_caller]
fn compile(yaml: &str) -> playbook::Playbook {
    playbook::compile(yaml).unwrap_or_else(|diagnostics| {
        panic!(
            "expected a valid playbook, got {}",
            abbreviated(&diagnostics)
        )
    })
}

/// Renders `template` as `outputs.x`, which starts on line 9.
fn render(template: &str) -> Result<serde_json::Value, Error> {
    let playbook = compile(&format!("{VALID}outputs:\n  x: {}\n", quoted(template)));
    let context = serde_json::json!({
        "trigger": {}, "vars": {}, "steps": {}, "run": {}, "incident": {},
    });
    playbook.outputs["x"].render(&minijinja::Value::from_serialize(&context))
}

/// `text` as a YAML double-quoted scalar: JSON string escapes are valid YAML.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// A debug rendering cut short, so a failure does not print megabytes of hostile input.
fn abbreviated(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:#?}");
    match text.char_indices().nth(2000) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// A file under Cargo's scratch directory for integration tests, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile-{name}.yaml"));
        std::fs::write(&path, bytes).expect("write a temporary file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
