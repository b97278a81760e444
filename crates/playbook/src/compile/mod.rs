//! YAML node tree → checked [`Playbook`], collecting every problem on the way.
//!
//! Decoding never stops at the first error: a field that is wrong gets a diagnostic and a default
//! value, so the rest of the file is still checked. The playbook is returned only if no diagnostic
//! was recorded.

mod case;
pub(crate) mod connector;
mod fields;
mod graph;
mod references;
mod sections;

use references::CheckContext;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::diagnostic::{Diagnostic, Position};
use crate::model::{
    Approval, ApprovalTimeout, Dedupe, ErrorKind, Foreach, OnFailure, Playbook, PluginGrant,
    PluginRef, RetryPolicy, Step, StepId, Trigger, Undo,
};
use crate::schedule::Schedule;
use crate::template::{self, Condition, Input, Kind, Source};
use crate::yaml::{self, Node, Value};

/// Top-level fields of a playbook.
pub const PLAYBOOK_FIELDS: &[&str] = &[
    "name",
    "description",
    "version",
    "tags",
    "incident",
    "vars",
    "secrets",
    "trigger",
    "steps",
    "handlers",
    "plugins",
    "outputs",
    "case",
];
/// How a playbook's runs open or join incident cases.
pub const CASE_FIELDS: &[&str] = &[
    "key",
    "window",
    "title",
    "severity",
    "observables",
    "join_on",
    "undo_on_close",
];
/// What a playbook grants one plugin.
pub const PLUGIN_GRANT_FIELDS: &[&str] = &["hosts", "secrets"];
pub const TRIGGER_FIELDS: &[&str] = &[
    "webhook", "auth", "public", "split", "filter", "dedupe", "resolved", "schedule",
];
pub const SCHEDULE_FIELDS: &[&str] = &["cron", "timezone", "catch_up"];
pub const DEDUPE_FIELDS: &[&str] = &["key", "window"];
pub const STEP_FIELDS: &[&str] = &[
    "id",
    "name",
    "uses",
    "with",
    "if",
    "foreach",
    "needs",
    "timeout",
    "retry",
    "on_failure",
    "approval",
    "phase",
    "undo",
    "expires",
];
pub const UNDO_FIELDS: &[&str] = &["uses", "with", "timeout", "retry"];
/// What an `undo:` can read about the step it undoes, besides what the step could read.
pub const UNDO_ROOTS: &[&str] = &["input", "output"];
pub const FOREACH_FIELDS: &[&str] = &["items", "as", "concurrency"];
pub const RETRY_FIELDS: &[&str] = &["max_attempts", "backoff", "on"];
pub const BACKOFF_FIELDS: &[&str] = &["initial", "max", "multiplier", "jitter"];
pub const ON_FAILURE_FIELDS: &[&str] = &["run", "then"];
pub const APPROVAL_FIELDS: &[&str] = &["approvers", "timeout", "on_timeout", "message", "slack"];
/// What a template can read about an earlier step: `steps.<id>.<field>`.
pub const STEP_RESULT_FIELDS: &[&str] = &["output", "status", "attempts", "error"];
/// What a failure handler can read: `error.<field>`.
pub const ERROR_FIELDS: &[&str] = &["step", "kind", "message"];
/// What templates can read about the run: `run.<field>`.
pub const RUN_FIELDS: &[&str] = &["id", "playbook", "started_at"];

pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(60 * 60);
pub(crate) const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 60 * 60);
pub(crate) const MAX_DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How far back a schedule looks on start: no further than a delivery id is remembered by
/// default (`webhooks.delivery_ttl`), which is what keeps a caught-up tick from firing twice.
pub(crate) const MAX_CATCH_UP: Duration = Duration::from_secs(24 * 60 * 60);
pub(crate) const DEFAULT_CASE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest a step's effect may be declared to last before its undo.
pub const MAX_EXPIRY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
pub(crate) const MAX_CASE_WINDOW: Duration = Duration::from_secs(30 * 24 * 60 * 60);
pub(crate) const MAX_ATTEMPTS: u64 = 100;
/// Attempts of a step whose `retry` mapping does not say `max_attempts`.
pub(crate) const DEFAULT_ATTEMPTS_WITH_POLICY: u32 = 3;
pub(crate) const MAX_CONCURRENCY: u64 = 256;
pub(crate) const MAX_STEPS: usize = 1000;

/// Names people bring from Ansible, GitHub Actions and StackStorm, and what we call them.
const FAMILIAR_NAMES: &[(&str, &str)] = &[
    ("depends_on", "needs"),
    ("after", "needs"),
    ("when", "if"),
    ("condition", "if"),
    ("inputs", "with"),
    ("input", "with"),
    ("params", "with"),
    ("parameters", "with"),
    ("args", "with"),
    ("action", "uses"),
    ("plugin", "uses"),
    ("loop", "foreach"),
    ("with_items", "foreach"),
    ("for_each", "foreach"),
    ("retries", "retry"),
    ("timeout_seconds", "timeout"),
    ("on_error", "on_failure"),
    ("continue_on_error", "on_failure"),
    ("approvals", "approval"),
    ("output", "outputs"),
    ("variables", "vars"),
    ("env", "vars"),
    ("jobs", "steps"),
    ("tasks", "steps"),
    ("on", "trigger"),
];

/// Every variable a template can ever read.
pub(crate) const ROOTS: &[&str] = &[
    "trigger", "vars", "secrets", "steps", "run", "incident", "error", "input", "output",
];

/// Checks a playbook's YAML text; returns the playbook or every problem found.
pub fn compile(source: &str) -> Result<Playbook, Vec<Diagnostic>> {
    let root = yaml::parse(source).map_err(|d| vec![d])?;
    let mut compiler = Compiler::new(source);
    let playbook = compiler.playbook(&root);
    compiler.finish(playbook)
}

/// A reference from one step to another by id, resolved once all steps are known.
struct Reference {
    from: usize,
    target: String,
    position: Position,
    kind: ReferenceKind,
}

#[derive(Clone, Copy, PartialEq)]
enum ReferenceKind {
    Needs,
    Handler,
}

struct Compiler<'s> {
    source: &'s str,
    /// Byte offset where each line starts, so a line is found without rescanning the file.
    line_starts: Vec<usize>,
    diagnostics: Vec<Diagnostic>,
    references: Vec<Reference>,
}

/// The fields of a YAML mapping, after unknown keys were reported.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node)>,
    position: Position,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, v)| *v)
    }
}

impl<'s> Compiler<'s> {
    fn new(source: &'s str) -> Compiler<'s> {
        Compiler {
            source,
            line_starts: std::iter::once(0)
                .chain(source.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            diagnostics: Vec::new(),
            references: Vec::new(),
        }
    }

    /// What was compiled, if nothing was wrong; otherwise every problem, in file order.
    fn finish<T>(self, compiled: Option<T>) -> Result<T, Vec<Diagnostic>> {
        let mut diagnostics = self.diagnostics;
        diagnostics.sort_by_key(|d| d.position);
        match compiled {
            Some(compiled) if diagnostics.is_empty() => Ok(compiled),
            _ => Err(diagnostics),
        }
    }

    fn error(&mut self, code: &'static str, position: Position, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(code, position, message));
    }

    fn error_with_hint(
        &mut self,
        code: &'static str,
        position: Position,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.diagnostics
            .push(Diagnostic::error(code, position, message).with_hint(hint));
    }

    fn playbook(&mut self, root: &Node) -> Option<Playbook> {
        let fields = self.mapping(root, "the playbook", PLAYBOOK_FIELDS)?;
        let name = self
            .required(&fields, "name", "the playbook")
            .map(|n| self.name(n));
        let description = fields
            .get("description")
            .map(|n| self.string(n, "description"));
        let version = fields.get("version").map(|n| {
            if let Value::Float(_) = n.value {
                self.error_with_hint(
                    "wrong-type",
                    n.pos,
                    "`version` must be a string: YAML reads an unquoted `1.10` as the number 1.1",
                    "quote it: `version: \"1.10\"`",
                );
            }
            self.string(n, "version")
        });
        let tags = fields
            .get("tags")
            .map(|n| self.string_list(n, "tags"))
            .unwrap_or_default();
        let vars = fields.get("vars").map(|n| self.vars(n)).unwrap_or_default();
        let secrets = fields
            .get("secrets")
            .map(|n| self.secret_names(n))
            .unwrap_or_default();
        let incident = fields
            .get("incident")
            .map(|n| self.input_map(n, "incident"))
            .unwrap_or_default();
        let trigger = self
            .required(&fields, "trigger", "the playbook")
            .map(|n| self.trigger(n));
        let steps = match self.required(&fields, "steps", "the playbook") {
            Some(node) => self.steps(node, "steps", 0),
            None => Vec::new(),
        };
        let handlers = match fields.get("handlers") {
            Some(node) => self.steps(node, "handlers", steps.len()),
            None => Vec::new(),
        };
        let plugins = fields
            .get("plugins")
            .map(|n| self.plugin_grants(n, &secrets))
            .unwrap_or_default();
        let outputs = fields
            .get("outputs")
            .map(|n| self.input_map(n, "outputs"))
            .unwrap_or_default();
        let case = fields.get("case").map(|n| self.case_rule(n));

        let order = self.check_graph(&steps, &handlers);
        let context = CheckContext {
            steps: &steps,
            step_index: steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str(), i))
                .collect(),
            handlers: &handlers,
            vars: &vars,
            secrets: &secrets,
            incident: &incident,
            order: order.as_deref(),
        };
        let trigger = trigger?;
        self.check_templates(&context, &trigger, &outputs);
        if let Some(case) = &case {
            self.check_case_templates(&context, case);
        }

        Some(Playbook {
            name: name?,
            description,
            version,
            tags,
            incident,
            vars,
            secrets,
            trigger,
            steps,
            handlers,
            plugins,
            outputs,
            case,
            order: order.unwrap_or_default(),
        })
    }
}

/// The entries of a list, or the value itself where a single value stands for a list of one
/// (`needs: a` as well as `needs: [a]`).
pub(super) fn one_or_many(node: &Node) -> Vec<&Node> {
    match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    }
}

/// The closest known name, for "did you mean" hints.
pub(crate) fn suggest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    if let Some((_, ours)) = FAMILIAR_NAMES.iter().find(|(theirs, _)| *theirs == unknown)
        && let Some(found) = known.iter().find(|k| *k == ours)
    {
        return Some(found);
    }
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

pub(super) fn suggest_id(text: &str) -> String {
    let mut id: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        id.insert(0, '_');
    }
    id
}

pub(super) fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
