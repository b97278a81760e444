//! The `case:` block and the steps' `phase:`.

use super::references::Scope;
use super::*;
use crate::case::{CaseRule, ObservableType, Phase, Severity};

impl<'s> Compiler<'s> {
    pub(super) fn case_rule(&mut self, node: &Node) -> CaseRule {
        let mut rule = CaseRule {
            key: Input::Literal(serde_json::Value::Null),
            window: DEFAULT_CASE_WINDOW,
            title: None,
            severity: None,
            observables: Vec::new(),
            join_on: Vec::new(),
            undo_on_close: false,
        };
        let Some(fields) = self.mapping(node, "`case`", CASE_FIELDS) else {
            return rule;
        };
        if let Some(key) = self.required(&fields, "key", "`case`") {
            rule.key = self.template_string(key, "key");
        }
        if let Some(window) = fields.get("window") {
            rule.window = self.duration(window, "window", MAX_CASE_WINDOW);
        }
        rule.title = fields
            .get("title")
            .map(|n| self.template_string(n, "title"));
        if let Some(severity) = fields.get("severity") {
            let input = self.template_string(severity, "severity");
            if let Input::Literal(serde_json::Value::String(text)) = &input
                && Severity::parse(text).is_none()
            {
                self.error_with_hint(
                    "invalid-value",
                    severity.pos,
                    format!("`{text}` is not a severity"),
                    format!(
                        "use one of {}, or a template that renders a sender's severity (`warning`, `error`, … are understood)",
                        backticked(&Severity::ALL.map(Severity::as_str))
                    ),
                );
            }
            rule.severity = Some(input);
        }
        let observable_names = ObservableType::ALL.map(ObservableType::as_str);
        if let Some(observables) = fields.get("observables")
            && let Some(entries) = self.mapping(observables, "`observables`", &observable_names)
        {
            rule.observables = entries
                .entries
                .iter()
                .filter_map(|(name, value)| {
                    Some((
                        ObservableType::parse(name)?,
                        self.template_string(value, name),
                    ))
                })
                .collect();
        }
        if let Some(join_on) = fields.get("join_on") {
            for item in one_or_many(join_on) {
                let name = self.string(item, "join_on");
                match ObservableType::parse(&name) {
                    Some(kind) if !rule.join_on.contains(&kind) => rule.join_on.push(kind),
                    Some(_) => {}
                    None => self.error_with_hint(
                        "invalid-value",
                        item.pos,
                        format!("`{name}` is not an observable type"),
                        format!("use one of {}", backticked(&observable_names)),
                    ),
                }
            }
        }
        rule.undo_on_close = fields
            .get("undo_on_close")
            .is_some_and(|n| self.boolean(n, "undo_on_close"));
        rule
    }

    pub(super) fn step_phase(&mut self, node: &Node) -> Phase {
        let text = self.string(node, "phase");
        match Phase::parse(&text) {
            Some(phase) if Phase::OF_STEPS.contains(&phase) => phase,
            Some(_) => {
                self.error_with_hint(
                    "invalid-value",
                    node.pos,
                    "a step cannot close a case",
                    "closing a case is a person's decision; give the step the phase of the work it does",
                );
                Phase::DetectionAndAnalysis
            }
            None => {
                let names = Phase::OF_STEPS.map(Phase::as_str);
                let hint = match suggest(&text, &names) {
                    Some(better) => format!("did you mean `{better}`?"),
                    None => format!("use one of {}", backticked(&names)),
                };
                self.error_with_hint(
                    "invalid-value",
                    node.pos,
                    format!("`{text}` is not an incident-response phase"),
                    hint,
                );
                Phase::DetectionAndAnalysis
            }
        }
    }

    pub(super) fn check_case_templates(&mut self, context: &CheckContext<'_>, case: &CaseRule) {
        let scope = Scope::new(&["trigger", "vars"], "`case`");
        let inputs = std::iter::once(&case.key)
            .chain(&case.title)
            .chain(&case.severity)
            .chain(case.observables.iter().map(|(_, input)| input));
        for input in inputs {
            self.check_input(context, &scope, input);
        }
    }
}
