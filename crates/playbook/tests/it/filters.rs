//! Template filters, tests and evaluation rules, through the public API only: each template is
//! put in a small playbook (`outputs.x`, a step's `with:` or `if:`), compiled with
//! [`playbook::compile`] and evaluated against one fixed context.

use playbook::{Error, Playbook, Position};
use serde_json::{Value, json};

#[test]
fn in_cidr_matches_single_ranges_lists_and_addresses() {
    check_all(&[
        (r#"{{ "10.1.2.3" is in_cidr("10.0.0.0/8") }}"#, json!(true)),
        (r#"{{ "11.1.2.3" is in_cidr("10.0.0.0/8") }}"#, json!(false)),
        (r#"{{ "10.1.2.3" | in_cidr("10.0.0.0/8") }}"#, json!(true)),
        (r#"{{ trigger.ip is in_cidr(vars.internal) }}"#, json!(true)),
        (
            r#"{{ "192.168.7.7" is in_cidr(["10.0.0.0/8", "192.168.0.0/16"]) }}"#,
            json!(true),
        ),
        (
            r#"{{ "172.32.0.1" is in_cidr(["10.0.0.0/8", "172.16.0.0/12"]) }}"#,
            json!(false),
        ),
        (r#"{{ "10.1.2.3" is in_cidr([]) }}"#, json!(false)),
        // A bare address is a range of one.
        (r#"{{ "10.1.2.3" is in_cidr("10.1.2.3") }}"#, json!(true)),
        (r#"{{ "10.1.2.4" is in_cidr(["10.1.2.3"]) }}"#, json!(false)),
        (
            r#"{{ "10.1.2.3" is in_cidr(" 10.0.0.0/8 ") }}"#,
            json!(true),
        ),
        (
            r#"{{ "2001:db8::1" is in_cidr("2001:db8::/32") }}"#,
            json!(true),
        ),
        (
            r#"{{ "2001:db9::1" is in_cidr("2001:db8::/32") }}"#,
            json!(false),
        ),
        // Families never match each other, and mixing them in one list is fine.
        (r#"{{ "10.1.2.3" is in_cidr("::/0") }}"#, json!(false)),
        (
            r#"{{ "2001:db8::1" is in_cidr(["10.0.0.0/8", "2001:db8::/32"]) }}"#,
            json!(true),
        ),
        // Indicators often arrive defanged.
        (r#"{{ "1.2.3[.]4" is in_cidr("1.2.3.0/24") }}"#, json!(true)),
        (
            r#"{{ "10(.)1(.)2(.)3" is in_cidr("10.0.0.0/8") }}"#,
            json!(true),
        ),
        // Dual-stack sockets report IPv4 clients as IPv4-mapped IPv6 addresses.
        (
            r#"{{ "::ffff:10.1.2.3" is in_cidr("10.0.0.0/8") }}"#,
            json!(true),
        ),
        (
            r#"{{ "::ffff:11.1.2.3" is in_cidr("10.0.0.0/8") }}"#,
            json!(false),
        ),
        (
            r#"{{ "::ffff:10.1.2.3" is in_cidr("::ffff:0:0/96") }}"#,
            json!(true),
        ),
    ]);
}

#[test]
fn in_cidr_refuses_what_is_not_an_address_or_a_range() {
    check_errors(&[
        (
            r#"{{ "10.1.2.3" is in_cidr("10.0.0.0/33") }}"#,
            "invalid operation: `10.0.0.0/33` is not a CIDR range",
        ),
        (
            r#"{{ "10.1.2.3" is in_cidr(["10.0.0.0/8", "corp"]) }}"#,
            "invalid operation: `corp` is not a CIDR range",
        ),
        (
            r#"{{ "10.1.2.3" is in_cidr([10]) }}"#,
            "invalid operation: CIDR ranges must be strings",
        ),
        (
            r#"{{ "evil.com" is in_cidr("10.0.0.0/8") }}"#,
            "invalid operation: `evil.com` is not an IP address",
        ),
        (
            r#"{{ "10.0.0.0/8" is in_cidr("10.0.0.0/8") }}"#,
            "invalid operation: `10.0.0.0/8` is not an IP address",
        ),
    ]);
}

#[test]
fn private_ip_covers_internal_ranges_and_nothing_public() {
    let table = [
        ("10.0.0.1", true),
        ("10.255.255.255", true),
        ("172.16.0.1", true),
        ("172.31.255.255", true),
        ("172.15.255.255", false),
        ("172.32.0.1", false),
        ("192.168.1.1", true),
        ("192.169.0.1", false),
        ("127.0.0.1", true),
        ("127.255.0.1", true),
        ("169.254.169.254", true),
        ("100.64.0.1", true),
        ("100.127.255.255", true),
        ("100.63.255.255", false),
        ("100.128.0.1", false),
        ("0.0.0.0", true),
        ("0.0.0.1", true),
        ("0.255.255.255", true),
        ("255.255.255.255", true),
        ("64:ff9b::a00:1", true),
        ("::1", true),
        ("::", true),
        ("fc00::1", true),
        ("fd12:3456:789a::1", true),
        ("fe80::1", true),
        ("febf::1", true),
        ("::ffff:10.0.0.1", true),
        ("::ffff:127.0.0.1", true),
        ("::ffff:8.8.8.8", false),
        ("8.8.8.8", false),
        ("1.1.1.1", false),
        ("2001:4860:4860::8888", false),
        ("2606:4700::1111", false),
        ("fec0::1", false),
        ("10[.]0[.]0[.]1", true),
        (" 192.168.0.1 ", true),
    ];
    let mut cases = Vec::new();
    for (ip, private) in table {
        cases.push((format!(r#"{{{{ "{ip}" is private_ip }}}}"#), json!(private)));
        cases.push((
            format!(r#"{{{{ "{ip}" | is_private_ip }}}}"#),
            json!(private),
        ));
    }
    check_all(&cases);
    check_errors(&[
        (
            r#"{{ "printer.corp" is private_ip }}"#,
            "invalid operation: `printer.corp` is not an IP address",
        ),
        (
            r#"{{ "fe80::1%eth0" | is_private_ip }}"#,
            "invalid operation: `fe80::1%eth0` is not an IP address",
        ),
    ]);
}

#[test]
fn ip_address_test_accepts_addresses_only() {
    check_all(&[
        (r#"{{ "1.2.3.4" is ip_address }}"#, json!(true)),
        (r#"{{ "::1" is ip_address }}"#, json!(true)),
        (
            r#"{{ "2001:db8::8a2e:370:7334" is ip_address }}"#,
            json!(true),
        ),
        (r#"{{ "1.2.3[.]4" is ip_address }}"#, json!(true)),
        (r#"{{ "1.2.3.4.5" is ip_address }}"#, json!(false)),
        (r#"{{ "256.1.1.1" is ip_address }}"#, json!(false)),
        (r#"{{ "010.1.1.1" is ip_address }}"#, json!(false)),
        (r#"{{ "1.2.3.0/24" is ip_address }}"#, json!(false)),
        (r#"{{ "evil.com" is ip_address }}"#, json!(false)),
        (r#"{{ "" is ip_address }}"#, json!(false)),
        (r#"{{ trigger.ip is ip_address }}"#, json!(true)),
        (r#"{{ trigger.user is not ip_address }}"#, json!(true)),
    ]);
}

#[test]
fn defang_makes_indicators_inert_and_refang_restores_them() {
    let table = [
        ("http://evil.com/login", "hxxp://evil[.]com/login"),
        ("https://evil.example.com", "hxxps://evil[.]example[.]com"),
        ("ftp://files.evil.com", "fxp://files[.]evil[.]com"),
        ("evil.com", "evil[.]com"),
        ("bob@evil.com", "bob[@]evil[.]com"),
        ("1.2.3.4", "1[.]2[.]3[.]4"),
        ("2001:db8::1", "2001:db8::1"),
        ("no indicator here", "no indicator here"),
    ];
    let mut cases = Vec::new();
    for (plain, defanged) in table {
        cases.push((format!(r#"{{{{ "{plain}" | defang }}}}"#), json!(defanged)));
        cases.push((format!(r#"{{{{ "{defanged}" | refang }}}}"#), json!(plain)));
        cases.push((
            format!(r#"{{{{ "{plain}" | defang | refang }}}}"#),
            json!(plain),
        ));
        // Defanging twice changes nothing: feeds and analysts often hand over defanged text.
        cases.push((
            format!(r#"{{{{ "{plain}" | defang | defang }}}}"#),
            json!(defanged),
        ));
    }
    check_all(&cases);
}

#[test]
fn refang_understands_the_common_variants() {
    check_all(&[
        (r#"{{ "evil(.)com" | refang }}"#, json!("evil.com")),
        (r#"{{ "evil{.}com" | refang }}"#, json!("evil.com")),
        (r#"{{ "evil[dot]com" | refang }}"#, json!("evil.com")),
        (r#"{{ "evil(dot)com" | refang }}"#, json!("evil.com")),
        (
            r#"{{ "bob[at]evil[.]com" | refang }}"#,
            json!("bob@evil.com"),
        ),
        (
            r#"{{ "hxxps[:]//evil[.]com" | refang }}"#,
            json!("https://evil.com"),
        ),
        (
            r#"{{ "http://evil.com" | refang }}"#,
            json!("http://evil.com"),
        ),
        (r#"{{ "evil(.)com" | defang }}"#, json!("evil[.]com")),
    ]);
}

#[test]
fn digests_match_known_values() {
    let fox = "The quick brown fox jumps over the lazy dog";
    check_all(&[
        (
            r#"{{ "abc" | sha256 }}"#.to_owned(),
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ),
        (
            r#"{{ "abc" | sha1 }}"#.to_owned(),
            json!("a9993e364706816aba3e25717850c26c9cd0d89d"),
        ),
        (
            r#"{{ "abc" | md5 }}"#.to_owned(),
            json!("900150983cd24fb0d6963f7d28e17f72"),
        ),
        (
            r#"{{ "" | sha256 }}"#.to_owned(),
            json!("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ),
        (
            r#"{{ "" | md5 }}"#.to_owned(),
            json!("d41d8cd98f00b204e9800998ecf8427e"),
        ),
        (
            format!(r#"{{{{ "{fox}" | sha1 }}}}"#),
            json!("2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
        ),
        (
            format!(r#"{{{{ "{fox}" | md5 }}}}"#),
            json!("9e107d9d372bb6826bd81d3542a419d6"),
        ),
        // Digests are of the UTF-8 bytes, and work on values from the event.
        (
            "{{ trigger.body | sha256 }}".to_owned(),
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ),
        (
            r#"{{ "é" | md5 }}"#.to_owned(),
            json!("66ddcd97cfdeabb2f6fb8a999b4bc76f"),
        ),
    ]);
}

#[test]
fn regex_filters_and_tests() {
    check_all(&[
        (r#"{{ "svc-backup" is regex_match("^svc-") }}"#, json!(true)),
        (r#"{{ "alice" is regex_match("^svc-") }}"#, json!(false)),
        (r#"{{ trigger.user | regex_match("^svc-") }}"#, json!(true)),
        // A match anywhere counts, like Python's `re.search`; anchor the pattern to be strict.
        (r#"{{ "my-svc-1" is regex_match("svc") }}"#, json!(true)),
        (
            r#"{{ "ADMIN" is regex_match("(?i)^admin$") }}"#,
            json!(true),
        ),
        // Without groups: the whole match; with groups: the groups; no match: none.
        (
            r#"{{ "user=alice id=7" | regex_search("id=\\d+") }}"#,
            json!("id=7"),
        ),
        (
            r#"{{ "user=alice id=7" | regex_search("user=(\\w+) id=(\\d+)") }}"#,
            json!(["alice", "7"]),
        ),
        (
            r#"{{ "id=7" | regex_search("(user=\\w+)? ?id=(\\d+)") }}"#,
            json!([null, "7"]),
        ),
        (r#"{{ "nothing" | regex_search("\\d+") }}"#, json!(null)),
        (
            r#"{{ "a1 b22 c333" | regex_findall("\\d+") }}"#,
            json!(["1", "22", "333"]),
        ),
        (r#"{{ "abc" | regex_findall("\\d+") }}"#, json!([])),
        (
            r##"{{ "a1 b22" | regex_replace("\\d+", "#") }}"##,
            json!("a# b#"),
        ),
        (
            r#"{{ "alice@corp.com" | regex_replace("^(\\w+)@(.+)$", "$2/$1") }}"#,
            json!("corp.com/alice"),
        ),
    ]);
    check_errors(&[
        (
            r#"{{ "x" is regex_match("(unclosed") }}"#,
            "invalid operation: invalid regular expression: regex parse error",
        ),
        (
            r#"{{ "x" | regex_search("[z-a]") }}"#,
            "invalid regular expression",
        ),
        (
            r#"{{ "x" | regex_findall("*") }}"#,
            "invalid regular expression",
        ),
        (
            r#"{{ "x" | regex_replace("(", "y") }}"#,
            "invalid regular expression",
        ),
        // Patterns are compiled under a size limit, so one cannot exhaust memory.
        (
            r#"{{ "x" is regex_match("(\\w{1000}){1000}") }}"#,
            "invalid regular expression",
        ),
    ]);
}

#[test]
fn json_and_base64_filters() {
    check_all(&[
        ("{{ trigger.raw | fromjson }}", json!({"a": [1, 2]})),
        ("{{ (trigger.raw | fromjson).a[1] }}", json!(2)),
        (
            r#"{{ "[1, \"two\", null]" | fromjson }}"#,
            json!([1, "two", null]),
        ),
        ("{{ trigger.list | tojson }}", json!("[1,2,3]")),
        ("{{ trigger.obj | tojson }}", json!(r#"{"k":"v"}"#)),
        // `tojson` output is safe to embed in HTML.
        (
            r#"{{ "<a href='x'>" | tojson }}"#,
            json!(r#""\u003ca href=\u0027x\u0027\u003e""#),
        ),
        ("{{ trigger.obj | tojson | fromjson }}", json!({"k": "v"})),
        (r#"{{ "user:pass" | b64encode }}"#, json!("dXNlcjpwYXNz")),
        (r#"{{ "dXNlcjpwYXNz" | b64decode }}"#, json!("user:pass")),
        (r#"{{ " dXNlcjpwYXNz\n" | b64decode }}"#, json!("user:pass")),
        (
            r#"{{ "héllo ✓" | b64encode | b64decode }}"#,
            json!("héllo ✓"),
        ),
        (r#"{{ "" | b64encode }}"#, json!("")),
    ]);
    check_errors(&[
        (
            r#"{{ "{not json" | fromjson }}"#,
            "invalid operation: not valid JSON: key must be a string at line 1 column 2",
        ),
        (
            r#"{{ "!!!" | b64decode }}"#,
            "invalid operation: not valid base64",
        ),
        (
            r#"{{ "/w==" | b64decode }}"#,
            "invalid operation: the decoded bytes are not UTF-8 text",
        ),
    ]);
}

#[test]
fn a_lone_expression_keeps_its_type_and_text_renders_to_a_string() {
    check_all(&[
        ("{{ trigger.count }}", json!(3)),
        ("{{trigger.count}}", json!(3)),
        ("{{- trigger.count -}}", json!(3)),
        ("{{ trigger.ratio }}", json!(0.5)),
        ("{{ trigger.big }}", json!(9_007_199_254_740_993_u64)),
        ("{{ trigger.list }}", json!([1, 2, 3])),
        ("{{ trigger.obj }}", json!({"k": "v"})),
        ("{{ trigger.flag }}", json!(false)),
        ("{{ trigger.nothing }}", json!(null)),
        ("{{ trigger.ip }}", json!("10.1.2.3")),
        (
            "{{ steps.enrich.output.score >= vars.threshold }}",
            json!(true),
        ),
        ("{{ trigger.count * 2 + 1 }}", json!(7)),
        ("{{ trigger.list | length }}", json!(3)),
        // Anything around or between tags makes it text.
        ("count={{ trigger.count }}", json!("count=3")),
        ("{{ trigger.count }}{{ trigger.count }}", json!("33")),
        // Whitespace around a lone expression, like the newline a YAML `|` block ends with,
        // does not make it text.
        (" {{ trigger.list }}\n", json!([1, 2, 3])),
        ("[{{ trigger.list }}]", json!("[[1, 2, 3]]")),
        (
            "{% if trigger.flag %}yes{% else %}no{% endif %}",
            json!("no"),
        ),
        (
            "{% for n in trigger.list %}{{ n }},{% endfor %}",
            json!("1,2,3,"),
        ),
        ("{# a comment #}{{ trigger.count }}", json!("3")),
        // Plain text without tags is a literal, braces and all.
        ("no tags { here }", json!("no tags { here }")),
    ]);
}

#[test]
fn undefined_values_are_errors_not_empty_strings() {
    // `outputs.x` starts at line 12, column 7 (after the opening quote) of the playbook.
    let cases = [
        ("{{ trigger.missing }}", "undefined value", (12, 10)),
        ("{{ trigger.obj.missing }}", "undefined value", (12, 10)),
        ("{{ trigger.missing.deeper }}", "undefined value", (12, 17)),
        ("ip={{ trigger.missing }}", "undefined value", (12, 13)),
        ("{{ trigger.missing ~ 'x' }}", "undefined value", (12, 10)),
        (
            "{% for x in trigger.missing %}{% endfor %}",
            "undefined value",
            (12, 19),
        ),
        (
            "{% if trigger.missing %}x{% endif %}",
            "undefined value",
            (12, 13),
        ),
    ];
    let mut failures = Vec::new();
    for (template, expected, (line, column)) in cases {
        match render(template) {
            Err(Error::Template {
                message, position, ..
            }) if message.contains(expected) && position == Position::new(line, column) => {}
            other => failures.push(format!(
                "`{template}`: expected `{expected}` at {line}:{column}, got {other:?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Asking whether a value exists, or giving a default, is how to handle optional fields.
    check_all(&[
        ("{{ trigger.missing is defined }}", json!(false)),
        ("{{ trigger.count is defined }}", json!(true)),
        (
            r#"{{ trigger.missing | default("none given") }}"#,
            json!("none given"),
        ),
        ("{{ trigger.obj.missing | default(0) }}", json!(0)),
    ]);
}

#[test]
fn step_conditions_use_jinja_truthiness() {
    let table = [
        ("trigger.count > 2", Ok(true)),
        ("trigger.count > 3", Ok(false)),
        ("{{ trigger.count == 3 }}", Ok(true)),
        (
            "trigger.severity == 'high' and trigger.count >= 3",
            Ok(true),
        ),
        ("trigger.severity in ['low', 'medium']", Ok(false)),
        ("not trigger.flag", Ok(true)),
        ("trigger.list", Ok(true)),
        ("trigger.empty", Ok(false)),
        ("trigger.obj", Ok(true)),
        ("{}", Ok(false)),
        ("0", Ok(false)),
        ("0.0", Ok(false)),
        ("1", Ok(true)),
        ("''", Ok(false)),
        // A non-empty string is true, even when it spells "false".
        ("'false'", Ok(true)),
        ("none", Ok(false)),
        ("trigger.nothing", Ok(false)),
        ("trigger.ip is private_ip", Ok(true)),
        ("trigger.ip is in_cidr(vars.internal)", Ok(true)),
        ("steps.enrich.output.score >= vars.threshold", Ok(true)),
        ("trigger.missing is defined", Ok(false)),
        ("trigger.missing", Err("undefined value")),
        ("trigger.missing == 1", Err("undefined value")),
        (
            "trigger.user is private_ip",
            Err("`svc-backup` is not an IP address"),
        ),
    ];
    let mut failures = Vec::new();
    for (condition, expected) in table {
        let actual = evaluate(&quoted(condition));
        let matches = match (&actual, expected) {
            (Ok(value), Ok(want)) => *value == want,
            (Err(Error::Template { message, .. }), Err(want)) => message.contains(want),
            _ => false,
        };
        if !matches {
            failures.push(format!(
                "`{condition}`: expected {expected:?}, got {actual:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // YAML booleans are conditions too.
    assert!(!evaluate("false").expect("`if: false` evaluates"));
    assert!(evaluate("true").expect("`if: true` evaluates"));
}

#[test]
fn with_inputs_render_leaf_by_leaf() {
    let playbook = compile(&format!(
        r#"{HEADER}{RESPOND}    with:
      ip: "{{{{ trigger.ip }}}}"
      score: "{{{{ steps.enrich.output.score }}}}"
      note: "{{{{ trigger.count }}}} hits from {{{{ trigger.ip | defang }}}}"
      tags: ["static", "{{{{ trigger.severity }}}}", "{{{{ trigger.list }}}}"]
      nested: {{ count: "{{{{ trigger.count }}}}", literal: 5, off: false }}
      plain: just text
"#
    ));
    let rendered = playbook.steps[1]
        .with
        .render(&context())
        .expect("inputs render");
    assert_eq!(
        rendered,
        json!({
            "ip": "10.1.2.3",
            "score": 90,
            "note": "3 hits from 10[.]1[.]2[.]3",
            "tags": ["static", "high", [1, 2, 3]],
            "nested": {"count": 3, "literal": 5, "off": false},
            "plain": "just text",
        })
    );
}

/// The playbook every template is put in; `outputs.x` (or the step's `with:`/`if:`) follows.
const HEADER: &str = "name: filters
trigger:
  webhook: filters
  public: true
vars:
  threshold: 80
  internal: [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
";

/// A second step, which may read `steps.enrich`; its `if:` or `with:` follows.
const RESPOND: &str = "  - id: respond
    uses: firewall/block-ip
    needs: enrich
";

/// What templates see: an event, the playbook's vars, an earlier step's result and the run.
fn context() -> minijinja::Value {
    minijinja::Value::from_serialize(json!({
        "trigger": {
            "ip": "10.1.2.3",
            "user": "svc-backup",
            "severity": "high",
            "count": 3,
            "ratio": 0.5,
            "big": 9_007_199_254_740_993_u64,
            "list": [1, 2, 3],
            "empty": [],
            "flag": false,
            "nothing": null,
            "obj": {"k": "v"},
            "body": "abc",
            "raw": "{\"a\": [1, 2]}",
        },
        "vars": {
            "threshold": 80,
            "internal": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
        },
        "steps": {"enrich": {"output": {"score": 90}, "status": "succeeded", "attempts": 1}},
        "run": {"id": "run-1", "playbook": "filters", "started_at": "2025-01-01T00:00:00Z"},
        "incident": {},
    }))
}

/// Compiles a playbook that must be valid.
#[track_caller]
fn compile(yaml: &str) -> Playbook {
    playbook::compile(yaml).unwrap_or_else(|diagnostics| {
        let rendered: Vec<String> = diagnostics
            .iter()
            .map(|d| d.render("test.yaml", yaml))
            .collect();
        panic!(
            "the test playbook does not compile:\n{}",
            rendered.join("\n")
        )
    })
}

/// Renders `template` as `outputs.x`.
#[track_caller]
fn render(template: &str) -> Result<Value, Error> {
    let playbook = compile(&format!("{HEADER}outputs:\n  x: {}\n", quoted(template)));
    playbook.outputs["x"].render(&context())
}

/// Evaluates `condition` (YAML text) as the `if:` of a step that runs after `enrich`.
#[track_caller]
fn evaluate(condition: &str) -> Result<bool, Error> {
    let playbook = compile(&format!("{HEADER}{RESPOND}    if: {condition}\n"));
    let condition = playbook.steps[1]
        .condition
        .as_ref()
        .expect("the step has `if:`");
    condition.evaluate(&context())
}

/// `text` as a YAML double-quoted scalar: JSON string escapes are valid YAML.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// Renders every template and reports all that do not give the expected value.
#[track_caller]
fn check_all<T: AsRef<str>>(cases: &[(T, Value)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(template, expected)| {
            let template = template.as_ref();
            match render(template) {
                Ok(actual) if actual == *expected => None,
                Ok(actual) => Some(format!("`{template}`: expected {expected}, got {actual}")),
                Err(error) => Some(format!(
                    "`{template}`: expected {expected}, got error {error}"
                )),
            }
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Renders every template and reports all that do not fail with a message containing `expected`.
#[track_caller]
fn check_errors(cases: &[(&str, &str)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(template, expected)| match render(template) {
            Err(Error::Template { message, .. }) if message.contains(expected) => None,
            other => Some(format!(
                "`{template}`: expected an error with `{expected}`, got {other:?}"
            )),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
