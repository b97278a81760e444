//! What `riposte test` says: for people, each difference with a diff of the JSON; for CI systems,
//! JUnit XML.

use serde_json::Value;

/// One thing that differed from what the test expects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    /// What differed, naming the step when there is one.
    pub(crate) headline: String,
    /// A unified diff of the expected and the actual JSON, when there is one.
    pub(crate) diff: Option<String>,
}

impl Problem {
    pub(crate) fn new(headline: impl Into<String>) -> Problem {
        Problem {
            headline: headline.into(),
            diff: None,
        }
    }

    pub(crate) fn with_diff(
        headline: impl Into<String>,
        expected: &Value,
        actual: &Value,
    ) -> Problem {
        let pretty = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
        let (expected, actual) = (pretty(expected), pretty(actual));
        let diff = similar::TextDiff::from_lines(&expected, &actual)
            .unified_diff()
            .context_radius(3)
            .header("expected", "actual")
            .to_string();
        Problem {
            headline: headline.into(),
            diff: Some(diff),
        }
    }

    fn render(&self) -> String {
        let mut text = format!("  ✗ {}", self.headline);
        if let Some(diff) = &self.diff {
            for line in diff.lines() {
                text.push_str("\n      ");
                text.push_str(line);
            }
        }
        text
    }
}

/// How one test file went.
pub(crate) struct TestResult {
    pub(crate) file: String,
    pub(crate) name: String,
    pub(crate) problems: Vec<Problem>,
    pub(crate) seconds: f64,
}

impl TestResult {
    pub(crate) fn render(&self) -> String {
        if self.problems.is_empty() {
            return format!("PASS {} — {}", self.file, self.name);
        }
        let mut text = format!("FAIL {} — {}", self.file, self.name);
        for problem in &self.problems {
            text.push('\n');
            text.push_str(&problem.render());
        }
        text
    }
}

/// The results as a JUnit XML report: one suite, a test case per file.
pub(crate) fn junit(results: &[TestResult]) -> String {
    let failures = results.iter().filter(|r| !r.problems.is_empty()).count();
    let total: f64 = results.iter().map(|r| r.seconds).sum();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n  <testsuite name=\"riposte playbook tests\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{total:.3}\">\n",
        results.len(),
        results.len()
    );
    for result in results {
        xml.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            escape(&result.file),
            escape(&result.name),
            result.seconds
        ));
        if result.problems.is_empty() {
            xml.push_str("/>\n");
            continue;
        }
        let details: Vec<String> = result
            .problems
            .iter()
            .map(|p| match &p.diff {
                Some(diff) => format!("{}\n{diff}", p.headline),
                None => p.headline.clone(),
            })
            .collect();
        xml.push_str(&format!(
            ">\n      <failure message=\"{}\" type=\"mismatch\">{}</failure>\n    </testcase>\n",
            escape(&result.problems[0].headline),
            escape(&details.join("\n"))
        ));
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// Text for XML attributes and content: markup escaped, and the characters XML 1.0 cannot hold
/// dropped.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\t' | '\n' | '\r' => escaped.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_what_the_alerts_hold() {
        let results = vec![
            TestResult {
                file: "playbooks/tests/a.test.yaml".into(),
                name: "passes".into(),
                problems: Vec::new(),
                seconds: 0.01,
            },
            TestResult {
                file: "playbooks/tests/b.test.yaml".into(),
                name: "<script>\"x\" & 'y'\u{1}".into(),
                problems: vec![Problem::with_diff(
                    "step `enrich`: its input differs",
                    &serde_json::json!({"ip": "1.2.3.4"}),
                    &serde_json::json!({"ip": "5.6.7.8"}),
                )],
                seconds: 0.02,
            },
        ];
        let xml = junit(&results);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(
            xml.contains("name=\"&lt;script&gt;&quot;x&quot; &amp; &apos;y&apos;\""),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"step `enrich`: its input differs\""),
            "{xml}"
        );
        assert!(
            xml.contains("-  &quot;ip&quot;: &quot;1.2.3.4&quot;"),
            "{xml}"
        );
        assert!(
            xml.contains("+  &quot;ip&quot;: &quot;5.6.7.8&quot;"),
            "{xml}"
        );
        assert!(!xml.contains('\u{1}'));
    }
}
