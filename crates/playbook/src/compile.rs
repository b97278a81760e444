//! YAML node tree → checked [`Playbook`], collecting every problem on the way.
//!
//! Decoding never stops at the first error: a field that is wrong gets a diagnostic and a default
//! value, so the rest of the file is still checked. The playbook is returned only if no diagnostic
//! was recorded.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::diagnostic::{Diagnostic, Position};
use crate::model::{
    Approval, ApprovalTimeout, Dedupe, ErrorKind, Foreach, OnFailure, Playbook, PluginGrant,
    PluginRef, RetryPolicy, Step, StepId, Trigger,
};
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
];
/// What a playbook grants one plugin.
pub const PLUGIN_GRANT_FIELDS: &[&str] = &["hosts", "secrets"];
pub const TRIGGER_FIELDS: &[&str] = &["webhook", "auth", "public", "filter", "dedupe"];
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
];
pub const FOREACH_FIELDS: &[&str] = &["items", "as", "concurrency"];
pub const RETRY_FIELDS: &[&str] = &["max_attempts", "backoff", "on"];
pub const BACKOFF_FIELDS: &[&str] = &["initial", "max", "multiplier", "jitter"];
pub const ON_FAILURE_FIELDS: &[&str] = &["run", "then"];
pub const APPROVAL_FIELDS: &[&str] = &["approvers", "timeout", "on_timeout", "message"];
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

/// Checks a playbook's YAML text; returns the playbook or every problem found.
pub fn compile(source: &str) -> Result<Playbook, Vec<Diagnostic>> {
    let root = yaml::parse(source).map_err(|d| vec![d])?;
    let mut compiler = Compiler {
        source,
        line_starts: std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
        diagnostics: Vec::new(),
        references: Vec::new(),
    };
    let playbook = compiler.playbook(&root);
    let mut diagnostics = compiler.diagnostics;
    diagnostics.sort_by_key(|d| d.position);
    match playbook {
        Some(playbook) if diagnostics.is_empty() => Ok(playbook),
        _ => Err(diagnostics),
    }
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
            order: order.unwrap_or_default(),
        })
    }

    // ----- structure -------------------------------------------------------------------------

    /// Reads a mapping, reporting keys that are not in `known` with a suggestion.
    fn mapping<'n>(
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

    fn required<'n>(&mut self, fields: &Fields<'n>, name: &str, what: &str) -> Option<&'n Node> {
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

    fn string(&mut self, node: &Node, what: &str) -> String {
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

    fn name(&mut self, node: &Node) -> String {
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

    fn string_list(&mut self, node: &Node, what: &str) -> Vec<String> {
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

    fn boolean(&mut self, node: &Node, what: &str) -> bool {
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

    fn integer(&mut self, node: &Node, what: &str, min: u64, max: u64) -> u64 {
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

    fn duration(&mut self, node: &Node, what: &str, max: Duration) -> Duration {
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
    fn text_position(&self, node: &Node) -> Position {
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
    fn line(&self, number: u32) -> Option<&'s str> {
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
    fn input(&mut self, node: &Node) -> Input {
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
    fn unquoted_template(&mut self, node: &Node) -> bool {
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

    fn input_map(&mut self, node: &Node, what: &str) -> BTreeMap<String, Input> {
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

    fn template_string(&mut self, node: &Node, what: &str) -> Input {
        if !matches!(node.value, Value::String(_)) {
            self.error(
                "wrong-type",
                node.pos,
                format!("`{what}` must be a template string, found {}", node.kind()),
            );
        }
        self.input(node)
    }

    fn condition(&mut self, node: &Node, what: &str) -> Condition {
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

    fn vars(&mut self, node: &Node) -> serde_json::Map<String, serde_json::Value> {
        match node.to_json() {
            serde_json::Value::Object(map) => map,
            _ => {
                self.error(
                    "wrong-type",
                    node.pos,
                    format!("`vars` must be a mapping, found {}", node.kind()),
                );
                serde_json::Map::new()
            }
        }
    }

    fn secret_names(&mut self, node: &Node) -> Vec<String> {
        let names = self.string_list(node, "secrets");
        for (item, name) in one_or_many(node).into_iter().zip(&names) {
            if !StepId::is_valid(name) {
                self.error_with_hint(
                    "invalid-name",
                    item.pos,
                    format!("`{name}` is not a valid secret name"),
                    "secrets are read as `secrets.<name>`, so use lowercase letters, digits and `_`",
                );
            }
        }
        names
    }

    fn plugin_grants(
        &mut self,
        node: &Node,
        declared_secrets: &[String],
    ) -> BTreeMap<String, PluginGrant> {
        let Value::Map(entries) = &node.value else {
            self.error_with_hint(
                "wrong-type",
                node.pos,
                format!("`plugins` must be a mapping, found {}", node.kind()),
                "write `plugins: { <plugin>: { hosts: [...], secrets: [...] } }`",
            );
            return BTreeMap::new();
        };
        let mut grants = BTreeMap::new();
        for (key, value) in entries {
            let name = key.scalar_text();
            let Some(fields) = self.mapping(
                value,
                &format!("the grant of `{name}`"),
                PLUGIN_GRANT_FIELDS,
            ) else {
                continue;
            };
            let mut grant = PluginGrant::default();
            if let Some(hosts) = fields.get("hosts") {
                grant.hosts = self.string_list(hosts, "hosts");
                let items = one_or_many(hosts);
                for (item, host) in items.into_iter().zip(&grant.hosts) {
                    if !is_host_pattern(host) {
                        self.error_with_hint(
                            "invalid-host",
                            item.pos,
                            format!("`{host}` is not a host"),
                            "write a host name, `host:port` or `*.domain`, without a scheme or path",
                        );
                    }
                }
            }
            if let Some(secrets) = fields.get("secrets") {
                grant.secrets = self.string_list(secrets, "secrets");
                let items = one_or_many(secrets);
                for (item, secret) in items.into_iter().zip(&grant.secrets) {
                    if !declared_secrets.contains(secret) {
                        self.error_with_hint(
                            "unknown-reference",
                            item.pos,
                            format!("`{secret}` is granted to `{name}` but not declared"),
                            format!("add it to the top-level `secrets:` list, e.g. `secrets: [{secret}]`"),
                        );
                    }
                }
            }
            grants.insert(name, grant);
        }
        grants
    }

    fn trigger(&mut self, node: &Node) -> Trigger {
        let mut trigger = Trigger {
            webhook: String::new(),
            auth: None,
            public: false,
            filter: None,
            dedupe: None,
        };
        let Some(fields) = self.mapping(node, "`trigger`", TRIGGER_FIELDS) else {
            return trigger;
        };
        if let Some(webhook) = self.required(&fields, "webhook", "`trigger`") {
            trigger.webhook = self.string(webhook, "webhook");
            let valid = !trigger.webhook.is_empty()
                && trigger.webhook.len() <= 64
                && trigger
                    .webhook
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid {
                self.error_with_hint(
                    "invalid-name",
                    webhook.pos,
                    format!("`{}` is not a valid webhook name", trigger.webhook),
                    "the webhook is served at `/hooks/<webhook>`: use lowercase letters, digits, `-` and `_`",
                );
            }
        }
        trigger.auth = fields.get("auth").map(|n| self.string(n, "auth"));
        trigger.public = fields
            .get("public")
            .map(|n| self.boolean(n, "public"))
            .unwrap_or(false);
        if let (Some(_), true, Some(public)) = (&trigger.auth, trigger.public, fields.get("public"))
        {
            self.error_with_hint(
                "conflict",
                public.pos,
                "a trigger cannot both require `auth` and be `public`",
                "remove `public: true` to require authentication",
            );
        }
        if trigger.auth.is_none() && !trigger.public {
            self.error_with_hint(
                "missing-auth",
                fields.position,
                "`trigger` names no `auth` profile, so every delivery would be refused",
                "add `auth: <profile>` naming a profile in the server configuration, or `public: true` to accept unauthenticated deliveries",
            );
        }
        trigger.filter = fields.get("filter").map(|n| self.condition(n, "filter"));
        trigger.dedupe = fields.get("dedupe").map(|n| self.dedupe(n));
        trigger
    }

    fn dedupe(&mut self, node: &Node) -> Dedupe {
        let mut dedupe = Dedupe {
            key: Input::Literal(serde_json::Value::Null),
            window: Duration::from_secs(600),
        };
        if let Some(fields) = self.mapping(node, "`dedupe`", DEDUPE_FIELDS) {
            if let Some(key) = self.required(&fields, "key", "`dedupe`") {
                dedupe.key = self.template_string(key, "key");
            }
            if let Some(window) = fields.get("window") {
                dedupe.window = self.duration(window, "window", MAX_DEDUPE_WINDOW);
            }
        }
        dedupe
    }

    fn steps(&mut self, node: &Node, what: &str, first_index: usize) -> Vec<Step> {
        let Value::Seq(items) = &node.value else {
            self.error_with_hint(
                "wrong-type",
                node.pos,
                format!("`{what}` must be a list of steps, found {}", node.kind()),
                "start each step with `- id: <id>`",
            );
            return Vec::new();
        };
        if what == "steps" && items.is_empty() {
            self.error(
                "missing-field",
                node.pos,
                "`steps` is empty; a playbook needs at least one step",
            );
        }
        if items.len() > MAX_STEPS {
            self.error(
                "too-large",
                node.pos,
                format!(
                    "`{what}` has {} entries; at most {MAX_STEPS} are allowed",
                    items.len()
                ),
            );
            return Vec::new();
        }
        let is_handler = what == "handlers";
        items
            .iter()
            .enumerate()
            .map(|(offset, item)| self.step(item, first_index + offset, is_handler))
            .collect()
    }

    fn step(&mut self, node: &Node, index: usize, is_handler: bool) -> Step {
        let what = if is_handler { "a handler" } else { "a step" };
        let mut step = Step {
            id: StepId::placeholder(index),
            name: None,
            uses: PluginRef {
                plugin: String::new(),
                action: String::new(),
                version: None,
            },
            with: Input::Map(Vec::new()),
            condition: None,
            foreach: None,
            needs: Vec::new(),
            timeout: DEFAULT_STEP_TIMEOUT,
            retry: RetryPolicy::default(),
            on_failure: OnFailure::Fail,
            approval: None,
            position: node.pos,
        };
        let Some(fields) = self.mapping(node, what, STEP_FIELDS) else {
            return step;
        };
        if let Some(id) = self.required(&fields, "id", what) {
            let text = self.string(id, "id");
            match StepId::try_from(text) {
                Ok(valid) => step.id = valid,
                Err(text) => self.error_with_hint(
                    "invalid-id",
                    id.pos,
                    format!("`{text}` is not a valid step id"),
                    format!(
                        "templates read steps as `steps.<id>`, so ids use lowercase letters, digits and `_`: try `{}`",
                        suggest_id(&text)
                    ),
                ),
            }
        }
        step.name = fields.get("name").map(|n| self.string(n, "name"));
        if let Some(uses) = self.required(&fields, "uses", what) {
            step.uses = self.plugin_ref(uses);
        }
        if let Some(with) = fields.get("with") {
            if !matches!(with.value, Value::Map(_)) {
                self.error_with_hint(
                    "wrong-type",
                    with.pos,
                    format!("`with` must be a mapping of inputs, found {}", with.kind()),
                    "write inputs as `name: value` pairs",
                );
            }
            step.with = self.input(with);
        }
        step.condition = fields.get("if").map(|n| self.condition(n, "if"));
        step.foreach = fields.get("foreach").map(|n| self.foreach(n));
        if let Some(needs) = fields.get("needs") {
            if is_handler {
                self.error_with_hint(
                    "handler-needs",
                    needs.pos,
                    "handlers cannot have `needs`",
                    "handlers run in the order `on_failure` lists them",
                );
            }
            step.needs = self.step_refs(needs, index, "needs", ReferenceKind::Needs);
        }
        if let Some(timeout) = fields.get("timeout") {
            step.timeout = self.duration(timeout, "timeout", MAX_STEP_TIMEOUT);
        }
        if let Some(retry) = fields.get("retry") {
            step.retry = self.retry(retry);
        }
        if let Some(on_failure) = fields.get("on_failure") {
            step.on_failure = self.on_failure(on_failure, index);
        }
        step.approval = fields.get("approval").map(|n| self.approval(n));
        if let (true, Some(approval)) = (is_handler, fields.get("approval")) {
            self.error_with_hint(
                "handler-approval",
                approval.pos,
                "handlers cannot wait for approval",
                "handlers respond to a failure as it happens; gate the step that fails instead",
            );
        }
        step
    }

    fn plugin_ref(&mut self, node: &Node) -> PluginRef {
        let text = self.string(node, "uses");
        let (path, version) = match text.split_once('@') {
            Some((path, version)) => (path, Some(version.to_owned())),
            None => (text.as_str(), None),
        };
        let valid_name = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        let parsed = path.split_once('/').filter(|(plugin, action)| {
            valid_name(plugin)
                && valid_name(action)
                && version.as_deref().is_none_or(|v| {
                    !v.is_empty()
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
                })
        });
        match parsed {
            Some((plugin, action)) => PluginRef {
                plugin: plugin.to_owned(),
                action: action.to_owned(),
                version,
            },
            None => {
                if matches!(node.value, Value::String(_)) {
                    self.error_with_hint(
                        "invalid-uses",
                        node.pos,
                        format!("`{text}` is not a plugin action"),
                        "write `uses: <plugin>/<action>`, optionally pinned as `<plugin>/<action>@<version>`, e.g. `enrich-ioc/check-ip@1.0.0`",
                    );
                }
                PluginRef {
                    plugin: String::new(),
                    action: String::new(),
                    version: None,
                }
            }
        }
    }

    fn step_refs(
        &mut self,
        node: &Node,
        from: usize,
        what: &str,
        kind: ReferenceKind,
    ) -> Vec<StepId> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::String(_) => vec![node],
            _ => {
                self.error(
                    "wrong-type",
                    node.pos,
                    format!(
                        "`{what}` must be a step id or a list of step ids, found {}",
                        node.kind()
                    ),
                );
                return Vec::new();
            }
        };
        let mut ids = Vec::new();
        for item in items {
            let text = self.string(item, what);
            self.references.push(Reference {
                from,
                target: text.clone(),
                position: item.pos,
                kind,
            });
            if let Ok(id) = StepId::try_from(text) {
                ids.push(id);
            }
        }
        ids
    }

    fn foreach(&mut self, node: &Node) -> Foreach {
        let mut foreach = Foreach {
            items: Input::List(Vec::new()),
            var: "item".to_owned(),
            concurrency: 4,
        };
        match &node.value {
            Value::String(_) | Value::Seq(_) => foreach.items = self.foreach_items(node),
            Value::Map(_) if self.unquoted_template(node) => {}
            Value::Map(_) => {
                if let Some(fields) = self.mapping(node, "`foreach`", FOREACH_FIELDS) {
                    if let Some(items) = self.required(&fields, "items", "`foreach`") {
                        foreach.items = self.foreach_items(items);
                    }
                    if let Some(var) = fields.get("as") {
                        foreach.var = self.string(var, "as");
                        if !StepId::is_valid(&foreach.var) || ROOTS.contains(&foreach.var.as_str())
                        {
                            self.error_with_hint(
                                "invalid-name",
                                var.pos,
                                format!("`{}` cannot name the loop variable", foreach.var),
                                format!(
                                    "use a lowercase identifier other than {}",
                                    backticked(ROOTS)
                                ),
                            );
                        }
                    }
                    if let Some(concurrency) = fields.get("concurrency") {
                        foreach.concurrency =
                            self.integer(concurrency, "concurrency", 1, MAX_CONCURRENCY) as usize;
                    }
                }
            }
            _ => self.error_with_hint(
                "wrong-type",
                node.pos,
                format!(
                    "`foreach` must be a list or a template that yields one, found {}",
                    node.kind()
                ),
                "e.g. `foreach: \"{{ trigger.iocs }}\"`",
            ),
        }
        foreach
    }

    /// The list a `foreach` walks: a literal list, or a template that yields one. A plain string
    /// is neither, and is almost always a template missing its `{{ }}`.
    fn foreach_items(&mut self, node: &Node) -> Input {
        let items = self.input(node);
        if let Input::Literal(serde_json::Value::String(text)) = &items {
            self.error_with_hint(
                "wrong-type",
                node.pos,
                format!("`foreach` needs a list, but `{text}` is plain text"),
                format!("to loop over a value of the event, write `\"{{{{ {text} }}}}\"`"),
            );
        }
        items
    }

    fn retry(&mut self, node: &Node) -> RetryPolicy {
        let mut retry = RetryPolicy::default();
        if let Value::Int(_) | Value::Float(_) = node.value {
            retry.max_attempts = self.integer(node, "retry", 1, MAX_ATTEMPTS) as u32;
            return retry;
        }
        let Some(fields) = self.mapping(node, "`retry`", RETRY_FIELDS) else {
            return retry;
        };
        // Writing a retry policy means wanting retries: without `max_attempts`, three attempts.
        retry.max_attempts = DEFAULT_ATTEMPTS_WITH_POLICY;
        if let Some(max) = fields.get("max_attempts") {
            retry.max_attempts = self.integer(max, "max_attempts", 1, MAX_ATTEMPTS) as u32;
        }
        if let Some(backoff) = fields.get("backoff") {
            match &backoff.value {
                Value::Map(_) => {
                    if let Some(b) = self.mapping(backoff, "`backoff`", BACKOFF_FIELDS) {
                        if let Some(initial) = b.get("initial") {
                            retry.initial_delay =
                                self.duration(initial, "initial", MAX_STEP_TIMEOUT);
                        }
                        if let Some(max) = b.get("max") {
                            retry.max_delay = self.duration(max, "max", MAX_STEP_TIMEOUT);
                        }
                        if let Some(multiplier) = b.get("multiplier") {
                            retry.multiplier = match multiplier.value {
                                Value::Int(i) if (1..=10).contains(&i) => i as f64,
                                Value::Float(f) if (1.0..=10.0).contains(&f) => f,
                                _ => {
                                    self.error(
                                        "out-of-range",
                                        multiplier.pos,
                                        "`multiplier` must be a number from 1 to 10",
                                    );
                                    2.0
                                }
                            };
                        }
                        if let Some(jitter) = b.get("jitter") {
                            retry.jitter = self.boolean(jitter, "jitter");
                        }
                        if retry.initial_delay > retry.max_delay {
                            self.error(
                                "out-of-range",
                                backoff.pos,
                                "the backoff's `initial` delay is longer than its `max`",
                            );
                        }
                    }
                }
                _ => {
                    retry.initial_delay = self.duration(backoff, "backoff", MAX_STEP_TIMEOUT);
                    retry.max_delay = retry.max_delay.max(retry.initial_delay);
                }
            }
        }
        if let Some(on) = fields.get("on") {
            retry.retry_on = Vec::new();
            let items = one_or_many(on);
            for item in items {
                let text = self.string(item, "on");
                match ErrorKind::parse(&text) {
                    Some(kind) => retry.retry_on.push(kind),
                    None => {
                        let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                        let hint = match suggest(&text, &kinds) {
                            Some(better) => format!("did you mean `{better}`?"),
                            None => format!("expected one of {}", backticked(&kinds)),
                        };
                        self.error_with_hint(
                            "unknown-error-kind",
                            item.pos,
                            format!("`{text}` is not an error kind"),
                            hint,
                        );
                    }
                }
            }
        }
        retry
    }

    fn on_failure(&mut self, node: &Node, from: usize) -> OnFailure {
        match &node.value {
            Value::String(text) if text == "fail" => OnFailure::Fail,
            Value::String(text) if text == "continue" => OnFailure::Continue,
            Value::Seq(_) => OnFailure::Handle {
                handlers: self.step_refs(node, from, "on_failure", ReferenceKind::Handler),
                then_continue: false,
            },
            Value::Map(_) => {
                let Some(fields) = self.mapping(node, "`on_failure`", ON_FAILURE_FIELDS) else {
                    return OnFailure::Fail;
                };
                let handlers = match self.required(&fields, "run", "`on_failure`") {
                    Some(run) => self.step_refs(run, from, "run", ReferenceKind::Handler),
                    None => Vec::new(),
                };
                let then_continue = match fields.get("then") {
                    Some(then) => match &then.value {
                        Value::String(t) if t == "fail" => false,
                        Value::String(t) if t == "continue" => true,
                        _ => {
                            self.error_with_hint("invalid-value", then.pos, "`then` must be `fail` or `continue`", "`fail` ends the run after the handlers, `continue` goes on with the steps that do not need this one");
                            false
                        }
                    },
                    None => false,
                };
                OnFailure::Handle {
                    handlers,
                    then_continue,
                }
            }
            _ => {
                self.error_with_hint(
                    "invalid-value",
                    node.pos,
                    "`on_failure` must be `fail`, `continue`, a list of handlers, or `{ run: [...], then: fail|continue }`",
                    "handlers are declared under the top-level `handlers:`",
                );
                OnFailure::Fail
            }
        }
    }

    fn approval(&mut self, node: &Node) -> Approval {
        let mut approval = Approval {
            approvers: Vec::new(),
            timeout: DEFAULT_APPROVAL_TIMEOUT,
            on_timeout: ApprovalTimeout::Deny,
            message: None,
        };
        let Some(fields) = self.mapping(node, "`approval`", APPROVAL_FIELDS) else {
            return approval;
        };
        if let Some(approvers) = self.required(&fields, "approvers", "`approval`") {
            approval.approvers = self.string_list(approvers, "approvers");
            if approval.approvers.is_empty() {
                self.error(
                    "missing-field",
                    approvers.pos,
                    "`approvers` is empty; name at least one user or group",
                );
            }
        }
        if let Some(timeout) = fields.get("timeout") {
            approval.timeout = self.duration(timeout, "timeout", MAX_APPROVAL_TIMEOUT);
        }
        if let Some(on_timeout) = fields.get("on_timeout") {
            approval.on_timeout = match &on_timeout.value {
                Value::String(t) if t == "deny" => ApprovalTimeout::Deny,
                Value::String(t) if t == "approve" => ApprovalTimeout::Approve,
                Value::String(t) if t == "fail" => ApprovalTimeout::Fail,
                _ => {
                    self.error_with_hint(
                        "invalid-value",
                        on_timeout.pos,
                        "`on_timeout` must be `deny`, `approve` or `fail`",
                        "`deny` skips the step, `approve` runs it, `fail` fails it",
                    );
                    ApprovalTimeout::Deny
                }
            };
        }
        approval.message = fields
            .get("message")
            .map(|n| self.template_string(n, "message"));
        approval
    }

    // ----- graph -----------------------------------------------------------------------------

    /// Resolves `needs` and handler references, and orders steps; `None` if there is a cycle.
    fn check_graph(&mut self, steps: &[Step], handlers: &[Step]) -> Option<Vec<usize>> {
        let mut first_use: HashMap<&str, Position> = HashMap::new();
        for step in steps
            .iter()
            .chain(handlers)
            .filter(|s| !s.id.is_placeholder())
        {
            if let Some(previous) = first_use.get(step.id.as_str()) {
                let message = format!(
                    "the id `{}` is already used by the step at {previous}",
                    step.id
                );
                self.error_with_hint(
                    "duplicate-id",
                    step.position,
                    message,
                    "give every step and handler its own id",
                );
            } else {
                first_use.insert(step.id.as_str(), step.position);
            }
        }
        let step_ids = distinct_ids(steps);
        let handler_ids = distinct_ids(handlers);
        let references = std::mem::take(&mut self.references);
        let all_ids: Vec<&str> = steps
            .iter()
            .chain(handlers)
            .map(|s| s.id.as_str())
            .collect();
        let mut graph_ok = true;
        for reference in &references {
            let from = all_ids.get(reference.from).copied().unwrap_or("?");
            let target = reference.target.as_str();
            match reference.kind {
                ReferenceKind::Needs if step_ids.contains(&target) => {
                    if target == from {
                        self.error_with_hint(
                            "cycle",
                            reference.position,
                            format!("step `{from}` needs itself"),
                            "remove it from its own `needs`",
                        );
                        graph_ok = false;
                    }
                }
                ReferenceKind::Needs => {
                    graph_ok = false;
                    let hint = if handler_ids.contains(&target) {
                        format!(
                            "`{target}` is a handler; handlers run from `on_failure`, not `needs`"
                        )
                    } else {
                        suggest(target, &step_ids)
                            .map(|s| format!("did you mean `{s}`?"))
                            .unwrap_or_else(|| format!("steps are {}", backticked(&step_ids)))
                    };
                    self.error_with_hint(
                        "unknown-step",
                        reference.position,
                        format!("step `{from}` needs `{target}`, which does not exist"),
                        hint,
                    );
                }
                ReferenceKind::Handler if handler_ids.contains(&target) => {}
                ReferenceKind::Handler => {
                    let hint = if step_ids.contains(&target) {
                        format!(
                            "`{target}` is a step; move it under `handlers:` to run it on failure"
                        )
                    } else {
                        suggest(target, &handler_ids)
                            .map(|s| format!("did you mean `{s}`?"))
                            .unwrap_or_else(|| {
                                "declare it under the top-level `handlers:`".to_owned()
                            })
                    };
                    self.error_with_hint(
                        "unknown-handler",
                        reference.position,
                        format!("`on_failure` of `{from}` runs `{target}`, which is not a handler"),
                        hint,
                    );
                }
            }
        }
        let order = topological_order(steps);
        if order.len() < steps.len() {
            let cycle = find_cycle(steps);
            let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
            let first = cycle
                .first()
                .map(|&i| steps[i].position)
                .unwrap_or(Position::START);
            self.error_with_hint(
                "cycle",
                first,
                format!("cycle: {}", names.join(" → ")),
                "`a → b` reads \"a needs b\"; remove one of these `needs` so the steps can be ordered",
            );
            return None;
        }
        graph_ok.then_some(order)
    }

    // ----- templates -------------------------------------------------------------------------

    fn check_templates(
        &mut self,
        context: &CheckContext<'_>,
        trigger: &Trigger,
        outputs: &BTreeMap<String, Input>,
    ) {
        let early = Scope::new(&["trigger", "vars"], "the trigger");
        if let Some(filter) = &trigger.filter {
            self.check_source(context, &early, &filter.source, Kind::Expression);
        }
        if let Some(dedupe) = &trigger.dedupe {
            self.check_input(context, &early, &dedupe.key);
        }
        let incident_scope = Scope::new(&["trigger", "vars", "run"], "`incident`");
        for value in context.incident.values() {
            self.check_input(context, &incident_scope, value);
        }
        let ancestors = context.order.map(|order| ancestors(context.steps, order));
        for (index, step) in context.steps.iter().enumerate() {
            let visible = ancestors.as_ref().map(|a| a[index].as_slice());
            self.check_step_templates(context, step, visible, false);
        }
        for handler in context.handlers {
            self.check_step_templates(context, handler, None, true);
        }
        let output_scope = Scope::new(
            &["trigger", "vars", "run", "incident", "steps"],
            "`outputs`",
        );
        for value in outputs.values() {
            self.check_input(context, &output_scope, value);
        }
    }

    fn check_step_templates(
        &mut self,
        context: &CheckContext<'_>,
        step: &Step,
        visible: Option<&[bool]>,
        is_handler: bool,
    ) {
        let mut roots = vec!["trigger", "vars", "run", "incident", "steps"];
        if is_handler {
            roots.push("error");
        }
        let mut scope = Scope::new(&roots, "`if`");
        scope.step = Some(step.id.as_str());
        scope.visible_steps = visible;
        if let Some(condition) = &step.condition {
            self.check_source(context, &scope, &condition.source, Kind::Expression);
        }
        if let Some(foreach) = &step.foreach {
            scope.place = "`foreach`";
            self.check_input(context, &scope, &foreach.items);
        }
        if let Some(message) = step.approval.as_ref().and_then(|a| a.message.as_ref()) {
            scope.place = "the approval message";
            self.check_input(context, &scope, message);
        }
        roots.push("secrets");
        if let Some(foreach) = &step.foreach {
            roots.push(&foreach.var);
        }
        scope.roots = roots;
        scope.place = "`with`";
        self.check_input(context, &scope, &step.with);
    }

    fn check_input(&mut self, context: &CheckContext<'_>, scope: &Scope<'_>, input: &Input) {
        for (source, kind) in input.sources() {
            self.check_source(context, scope, source, kind);
        }
    }

    fn check_source(
        &mut self,
        context: &CheckContext<'_>,
        scope: &Scope<'_>,
        source: &Source,
        kind: Kind,
    ) {
        let analysis = match template::analyze(source, kind) {
            Ok(analysis) => analysis,
            Err((position, message)) => {
                let hint = if message.contains("unexpected end")
                    || message.contains("end of variable block")
                    || message.contains("end of block")
                    || message.contains("unclosed")
                {
                    "close every `{{` with `}}` and every `{%` with `%}`"
                } else {
                    "see the template reference in docs/playbooks.md"
                };
                let what = match kind {
                    Kind::Expression => "expression",
                    Kind::Template => "template",
                };
                self.error_with_hint(
                    "template-syntax",
                    position,
                    format!("`{}` — invalid {what}: {message}", source.text.trim()),
                    hint,
                );
                return;
            }
        };
        let mut unknown = false;
        for path in analysis.paths {
            if let Err((message, hint)) = check_path(context, scope, &path) {
                let needle = path.split('.').take(2).collect::<Vec<_>>().join(".");
                let position = source
                    .text
                    .find(&needle)
                    .map(|offset| template::position_in(source, offset))
                    .unwrap_or(source.position);
                self.error_with_hint("unknown-reference", position, message, hint);
                unknown = true;
            }
        }
        // What a template may not do is only worth saying of one that reads what it may.
        if let Some((position, message)) = analysis.refused.filter(|_| !unknown) {
            self.error_with_hint(
                "template-sandbox",
                position,
                format!("`{}` — {message}", source.text.trim()),
                "see what templates may do in the template reference in docs/playbooks.md",
            );
        }
    }
}

/// What a playbook declares, for checking template references.
struct CheckContext<'a> {
    steps: &'a [Step],
    step_index: HashMap<&'a str, usize>,
    handlers: &'a [Step],
    vars: &'a serde_json::Map<String, serde_json::Value>,
    secrets: &'a [String],
    incident: &'a BTreeMap<String, Input>,
    order: Option<&'a [usize]>,
}

/// Which variables a template may read where it stands.
struct Scope<'a> {
    roots: Vec<&'a str>,
    place: &'static str,
    /// The step whose template this is.
    step: Option<&'a str>,
    /// Steps guaranteed to have finished before this template runs; `None` if unknown.
    visible_steps: Option<&'a [bool]>,
}

impl<'a> Scope<'a> {
    fn new(roots: &[&'a str], place: &'static str) -> Self {
        Scope {
            roots: roots.to_vec(),
            place,
            step: None,
            visible_steps: None,
        }
    }
}

/// Every variable a template can ever read.
pub(crate) const ROOTS: &[&str] = &[
    "trigger", "vars", "secrets", "steps", "run", "incident", "error",
];

fn check_path(
    context: &CheckContext<'_>,
    scope: &Scope<'_>,
    path: &str,
) -> Result<(), (String, String)> {
    let mut segments = path.split('.');
    let root = segments.next().unwrap_or_default();
    let second = segments.next();
    let third = segments.next();
    if template::is_global_function(root) {
        return Ok(());
    }
    if !scope.roots.contains(&root) {
        if ROOTS.contains(&root) {
            let hint = match root {
                "secrets" => "secrets may only be used in `with:`, so they never reach conditions, logs or outputs".to_owned(),
                "steps" => "the trigger is checked before any step runs".to_owned(),
                "error" => "`error` exists only in failure handlers".to_owned(),
                _ => format!("here you can use {}", backticked(&scope.roots)),
            };
            return Err((format!("`{root}` cannot be used in {}", scope.place), hint));
        }
        let hint = suggest(root, &scope.roots)
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("here you can use {}", backticked(&scope.roots)));
        return Err((format!("unknown variable `{root}`"), hint));
    }
    let Some(second) = second else { return Ok(()) };
    match root {
        "steps" => {
            if !context.step_index.contains_key(second) {
                let ids: Vec<&str> = context
                    .steps
                    .iter()
                    .filter(|s| !s.id.is_placeholder())
                    .map(|s| s.id.as_str())
                    .collect();
                let hint = suggest(second, &ids)
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("steps are {}", backticked(&ids)));
                return Err((
                    format!("`steps.{second}` refers to a step that does not exist"),
                    hint,
                ));
            }
            let index = context.step_index.get(second).copied();
            if let (Some(visible), Some(step), Some(index)) =
                (scope.visible_steps, scope.step, index)
                && !visible[index]
            {
                return Err((
                    format!(
                        "step `{step}` reads `steps.{second}` but does not need `{second}`, so it may run first"
                    ),
                    format!("add `{second}` to the `needs` of `{step}`"),
                ));
            }
            if let Some(field) = third
                && !STEP_RESULT_FIELDS.contains(&field)
            {
                let hint = suggest(field, STEP_RESULT_FIELDS)
                    .map(|s| format!("did you mean `steps.{second}.{s}`?"))
                    .unwrap_or_else(|| {
                        format!("a step result has {}", backticked(STEP_RESULT_FIELDS))
                    });
                return Err((format!("`steps.{second}` has no field `{field}`"), hint));
            }
            Ok(())
        }
        "vars" => known_key(second, context.vars.keys().map(String::as_str), "vars"),
        "secrets" => known_key(
            second,
            context.secrets.iter().map(String::as_str),
            "secrets",
        )
        .map_err(|(m, _)| {
            (
                m,
                format!("declare it in the top-level `secrets:` list, e.g. `secrets: [{second}]`"),
            )
        }),
        "incident" => known_key(
            second,
            context.incident.keys().map(String::as_str),
            "incident",
        ),
        "run" => known_key(second, RUN_FIELDS.iter().copied(), "run"),
        "error" => known_key(second, ERROR_FIELDS.iter().copied(), "error"),
        _ => Ok(()),
    }
}

fn known_key<'k>(
    key: &str,
    known: impl Iterator<Item = &'k str>,
    root: &str,
) -> Result<(), (String, String)> {
    let known: Vec<&str> = known.collect();
    if known.contains(&key) {
        return Ok(());
    }
    let hint = suggest(key, &known)
        .map(|s| format!("did you mean `{root}.{s}`?"))
        .unwrap_or_else(|| {
            if known.is_empty() {
                format!("nothing is declared under `{root}`")
            } else {
                format!("`{root}` has {}", backticked(&known))
            }
        });
    Err((format!("`{root}.{key}` is not declared"), hint))
}

/// Kahn's algorithm; among steps that are ready together, the one declared first goes first.
fn topological_order(steps: &[Step]) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut remaining: Vec<usize> = vec![0; steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for need in &step.needs {
            // A step that needs itself is reported on its own, not as a cycle.
            if let Some(&j) = index.get(need.as_str()).filter(|&&j| j != i) {
                dependents[j].push(i);
                remaining[i] += 1;
            }
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..steps.len())
        .filter(|&i| remaining[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            remaining[j] -= 1;
            if remaining[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    order
}

/// A cycle among `steps`, as a path that starts and ends at the same step.
fn find_cycle(steps: &[Step]) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; steps.len()];
    let mut path = Vec::new();
    fn visit(
        i: usize,
        steps: &[Step],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for need in &steps[i].needs {
            let Some(&j) = index.get(need.as_str()).filter(|&&j| j != i) else {
                continue;
            };
            if state[j] == 1 {
                let start = path.iter().position(|&p| p == j).unwrap_or(0);
                let mut cycle: Vec<usize> = path[start..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if state[j] == 0
                && let Some(cycle) = visit(j, steps, index, state, path)
            {
                return Some(cycle);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    for i in 0..steps.len() {
        if state[i] == 0
            && let Some(cycle) = visit(i, steps, &index, &mut state, &mut path)
        {
            return cycle;
        }
    }
    Vec::new()
}

/// For each step, which steps (by index) it transitively needs.
fn ancestors(steps: &[Step], order: &[usize]) -> Vec<Vec<bool>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut result = vec![vec![false; steps.len()]; steps.len()];
    for &i in order {
        for need in &steps[i].needs {
            if let Some(&j) = index.get(need.as_str()) {
                let inherited = result[j].clone();
                let own = &mut result[i];
                own[j] = true;
                for (mine, theirs) in own.iter_mut().zip(inherited) {
                    *mine |= theirs;
                }
            }
        }
    }
    result
}

/// `api.example.com`, `api.example.com:8443` or `*.example.com`.
fn is_host_pattern(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// The entries of a list, or the value itself where a single value stands for a list of one
/// (`needs: a` as well as `needs: [a]`).
fn one_or_many(node: &Node) -> Vec<&Node> {
    match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    }
}

/// The real ids of `steps`, each once, for hint lists.
fn distinct_ids(steps: &[Step]) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for id in steps
        .iter()
        .filter(|s| !s.id.is_placeholder())
        .map(|s| s.id.as_str())
    {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The closest known name, for "did you mean" hints.
fn suggest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
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

fn suggest_id(text: &str) -> String {
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

fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
