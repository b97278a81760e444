//! Decoding one field: the shape of a mapping and its unknown keys, strings, names, numbers,
//! durations, and values that may be templates. Each decoder reports a problem and returns a
//! default, so decoding goes on.

use super::*;

impl<'s> Compiler<'s> {
    /// Reads a mapping, reporting keys that are not in `known` with a suggestion.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        known: &[&'static str],
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                "wrong-type",
                node.pos,
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return None;
        };
        let mut fields = Fields {
            entries: Vec::new(),
            position: node.pos,
        };
        for (key, value) in entries {
            let Value::String(name) = &key.value else {
                self.error(
                    "wrong-type",
                    key.pos,
                    format!("keys in {what} must be strings, found {}", key.kind()),
                );
                continue;
            };
            if known.contains(&name.as_str()) {
                fields.entries.push((name.as_str(), value));
            } else {
                let message = format!("unknown field `{name}` in {what}");
                match suggest(name, known) {
                    Some(better) => self.error_with_hint(
                        "unknown-field",
                        key.pos,
                        message,
                        format!("did you mean `{better}`?"),
                    ),
                    None => self.error_with_hint(
                        "unknown-field",
                        key.pos,
                        message,
                        format!("expected one of {}", backticked(known)),
                    ),
                }
            }
        }
        Some(fields)
    }

    pub(super) fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        name: &str,
        what: &str,
    ) -> Option<&'n Node> {
        let found = fields.get(name);
        if found.is_none() {
            self.error(
                "missing-field",
                fields.position,
                format!("{what} is missing the required field `{name}`"),
            );
        }
        found
    }

    pub(super) fn string(&mut self, node: &Node, what: &str) -> String {
        match &node.value {
            Value::String(s) => s.clone(),
            Value::Int(_) | Value::Float(_) => node.scalar_text(),
            _ => {
                self.error(
                    "wrong-type",
                    node.pos,
                    format!("`{what}` must be a string, found {}", node.kind()),
                );
                String::new()
            }
        }
    }

    pub(super) fn name(&mut self, node: &Node) -> String {
        let name = self.string(node, "name");
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid && matches!(node.value, Value::String(_)) {
            self.error_with_hint(
                "invalid-name",
                node.pos,
                format!("`{name}` is not a valid playbook name"),
                "use letters, digits, `-`, `_` and `.` (it names the playbook in URLs and logs); put prose in `description`",
            );
        }
        name
    }

    pub(super) fn string_list(&mut self, node: &Node, what: &str) -> Vec<String> {
        match &node.value {
            Value::String(s) => vec![s.clone()],
            Value::Seq(items) => items.iter().map(|item| self.string(item, what)).collect(),
            _ => {
                self.error(
                    "wrong-type",
                    node.pos,
                    format!("`{what}` must be a list of strings, found {}", node.kind()),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, what: &str) -> bool {
        match node.value {
            Value::Bool(b) => b,
            _ => {
                self.error_with_hint(
                    "wrong-type",
                    node.pos,
                    format!("`{what}` must be `true` or `false`, found {}", node.kind()),
                    "YAML 1.2 booleans are exactly `true` and `false`",
                );
                false
            }
        }
    }

    pub(super) fn integer(&mut self, node: &Node, what: &str, min: u64, max: u64) -> u64 {
        match node.value {
            Value::Int(i) if i >= 0 && (min..=max).contains(&(i as u64)) => i as u64,
            _ => {
                self.error(
                    "out-of-range",
                    node.pos,
                    format!("`{what}` must be a whole number from {min} to {max}"),
                );
                min
            }
        }
    }

    pub(super) fn duration(&mut self, node: &Node, what: &str, max: Duration) -> Duration {
        let parsed = match &node.value {
            Value::Int(seconds) if *seconds >= 0 => Some(Duration::from_secs(*seconds as u64)),
            Value::String(text) => humantime::parse_duration(text.trim()).ok(),
            _ => None,
        };
        match parsed {
            Some(duration) if duration.is_zero() => {
                self.error(
                    "out-of-range",
                    node.pos,
                    format!("`{what}` must be longer than zero"),
                );
                Duration::ZERO
            }
            Some(duration) if duration > max => {
                self.error_with_hint(
                    "out-of-range",
                    node.pos,
                    format!(
                        "`{what}` is longer than the maximum of {}",
                        humantime::format_duration(max)
                    ),
                    "shorten it",
                );
                max
            }
            Some(duration) => duration,
            None => {
                self.error_with_hint(
                    "invalid-duration",
                    node.pos,
                    format!("`{what}` is not a duration"),
                    "write a duration like `30s`, `5m`, `1h 30m` or a number of seconds",
                );
                Duration::ZERO
            }
        }
    }

    /// Where the text of a string scalar starts: after an opening quote, or on the line after a
    /// block indicator (`|`, `>`).
    pub(super) fn text_position(&self, node: &Node) -> Position {
        let Some(line) = self.line(node.pos.line) else {
            return node.pos;
        };
        match line.chars().nth(node.pos.column as usize - 1) {
            Some('"' | '\'') => Position::new(node.pos.line, node.pos.column + 1),
            Some('|' | '>') => {
                let next = self.line(node.pos.line + 1).unwrap_or("");
                let indent = next.chars().take_while(|c| *c == ' ').count() as u32;
                Position::new(node.pos.line + 1, indent + 1)
            }
            _ => node.pos,
        }
    }

    /// The text of a 1-based line, without its line break.
    pub(super) fn line(&self, number: u32) -> Option<&'s str> {
        let start = *self.line_starts.get(number.checked_sub(1)? as usize)?;
        let end = self
            .line_starts
            .get(number as usize)
            .map_or(self.source.len(), |next| next - 1);
        self.source
            .get(start..end)
            .map(|l| l.trim_end_matches('\r'))
    }

    /// Any YAML value as an [`Input`]: strings become templates where they contain template tags.
    pub(super) fn input(&mut self, node: &Node) -> Input {
        if self.unquoted_template(node) {
            return Input::Literal(serde_json::Value::Null);
        }
        match &node.value {
            Value::String(text) => Input::from_text(text, self.text_position(node)),
            Value::Seq(items) => Input::List(items.iter().map(|i| self.input(i)).collect()),
            Value::Map(entries) => Input::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text(), self.input(v)))
                    .collect(),
            ),
            _ => Input::Literal(node.to_json()),
        }
    }

    /// `ip: {{ trigger.ip }}` is valid YAML — a mapping whose key is a mapping — and never what
    /// anyone means. Reports it and returns true.
    pub(super) fn unquoted_template(&mut self, node: &Node) -> bool {
        let Value::Map(entries) = &node.value else {
            return false;
        };
        let nested_key = entries
            .iter()
            .any(|(key, _)| matches!(key.value, Value::Map(_) | Value::Seq(_)));
        if nested_key {
            self.error_with_hint(
                "unquoted-template",
                node.pos,
                "this looks like a template without quotes; YAML reads `{{ … }}` as a mapping",
                "put quotes around it: `\"{{ trigger.ip }}\"`",
            );
        }
        nested_key
    }

    pub(super) fn input_map(&mut self, node: &Node, what: &str) -> BTreeMap<String, Input> {
        let Value::Map(entries) = &node.value else {
            self.error(
                "wrong-type",
                node.pos,
                format!("`{what}` must be a mapping, found {}", node.kind()),
            );
            return BTreeMap::new();
        };
        entries
            .iter()
            .map(|(k, v)| (k.scalar_text(), self.input(v)))
            .collect()
    }

    pub(super) fn template_string(&mut self, node: &Node, what: &str) -> Input {
        if !matches!(node.value, Value::String(_)) {
            self.error(
                "wrong-type",
                node.pos,
                format!("`{what}` must be a template string, found {}", node.kind()),
            );
        }
        self.input(node)
    }

    pub(super) fn condition(&mut self, node: &Node, what: &str) -> Condition {
        if self.unquoted_template(node) {
            return Condition::from_text("false", node.pos);
        }
        match &node.value {
            Value::String(text) => Condition::from_text(text, self.text_position(node)),
            Value::Bool(b) => Condition::from_text(&b.to_string(), node.pos),
            _ => {
                self.error(
                    "wrong-type",
                    node.pos,
                    format!("`{what}` must be a condition such as `trigger.severity == 'high'`, found {}", node.kind()),
                );
                Condition::from_text("false", node.pos)
            }
        }
    }
}
