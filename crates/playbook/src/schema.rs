//! The playbook format as a JSON Schema (draft 2020-12), so editors can complete fields, show what
//! each one means and underline mistakes before `riposte validate` runs.
//!
//! The schema describes the *shape* the compiler accepts: which fields exist, their types, ranges
//! and patterns. It cannot see what needs the whole file or a template parser (`needs` naming real
//! steps, cycles, unique ids, references inside templates), so `riposte validate` remains the
//! authority. Field names come from the lists in `compile.rs` and the unit tests hold every object
//! here to them, so the schema and the compiler cannot drift apart.
//!
//! Where the compiler expects text it also takes a number and uses its text (`version: 2`), so the
//! schema allows numbers there too.

use std::time::Duration;

use serde_json::{Value, json};

use crate::case::{ObservableType, Phase, Severity};
use crate::compile::{
    DEFAULT_APPROVAL_TIMEOUT, DEFAULT_CASE_WINDOW, DEFAULT_STEP_TIMEOUT, MAX_APPROVAL_TIMEOUT,
    MAX_ATTEMPTS, MAX_CASE_WINDOW, MAX_CATCH_UP, MAX_CONCURRENCY, MAX_DEDUPE_WINDOW, MAX_EXPIRY,
    MAX_STEP_TIMEOUT, MAX_STEPS, ROOTS,
};
use crate::model::{ErrorKind, RetryPolicy};

/// The schema's identity, and where it is published.
pub const SCHEMA_ID: &str = "https://riposte.dev/schema/playbook-v1.json";

/// The JSON Schema of a playbook file.
pub fn playbook_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Riposte playbook",
        "description": "A Riposte playbook: a webhook trigger, then steps that call plugin actions, ordered by their `needs`. Reference: docs/playbooks.md.",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "trigger", "steps"],
        "properties": playbook_properties(),
        "$defs": {
            "trigger": trigger(),
            "dedupe": dedupe(),
            "schedule": schedule(),
            "case": case(),
            "step": step(),
            "handler": handler(),
            "foreach": foreach(),
            "retry": retry(),
            "backoff": backoff(),
            "on_failure": on_failure(),
            "approval": approval(),
            "undo": undo(),
            "plugin_grant": plugin_grant(),
            "step_id": {
                "description": "A step id: lowercase letters, digits and `_`, not starting with a digit, at most 64 characters.",
                "type": "string",
                "pattern": ID_PATTERN,
                "maxLength": 64,
            },
            "condition": {
                "description": "An expression such as `trigger.severity == 'high'`, optionally wrapped in `{{ }}`, or `true`/`false`. Jinja truthiness applies: empty lists, `0` and `none` are false.",
                "type": ["string", "boolean"],
                "examples": ["trigger.severity in ['high', 'critical']"],
            },
        },
    })
}

/// A step id; secret names and the `foreach` variable follow the same rule.
const ID_PATTERN: &str = "^[a-z_][a-z0-9_]*$";
/// Playbook names appear in URLs and logs.
const NAME_PATTERN: &str = "^[A-Za-z0-9._-]+$";
/// Webhooks are served at `/hooks/<webhook>`.
const WEBHOOK_PATTERN: &str = "^[a-z0-9_-]+$";
/// `<plugin>/<action>[@<version>]`.
const USES_PATTERN: &str = "^[a-z][a-z0-9_-]*/[a-z][a-z0-9_-]*(@[A-Za-z0-9.+-]+)?$";
/// What `humantime` parses: numbers (decimals allowed) each followed by a unit, spaces optional.
const DURATION_PATTERN: &str = r"^\s*(\d+(\.\d+)?\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$";
/// `foreach.concurrency` when it is not given (see `Compiler::foreach`).
const DEFAULT_CONCURRENCY: u64 = 4;
/// `dedupe.window` when it is not given (see `Compiler::dedupe`).
const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(600);

fn playbook_properties() -> Value {
    json!({
        "name": {
            "description": "The playbook's name, as it appears in URLs, logs and the audit trail: letters, digits, `-`, `_` and `.`, at most 128 characters. Put prose in `description`.",
            "type": ["string", "number"],
            "pattern": NAME_PATTERN,
            "maxLength": 128,
            "examples": ["block-malicious-ip"],
        },
        "description": text("What the playbook is for, for people."),
        "version": text("The playbook's own version, recorded with every run (quote it: `\"1.10\"`)."),
        "tags": {
            "description": "Labels for finding playbooks: a string or a list of strings.",
            "type": ["string", "array"],
            "items": { "type": ["string", "number"] },
        },
        "incident": {
            "description": "Incident fields (`title`, `severity`, …) rendered once when a run starts. Values may be any YAML; strings may be templates that read `trigger`, `vars` and `run`. Templates elsewhere read them as `incident.<field>`.",
            "type": "object",
        },
        "vars": {
            "description": "Constants read by templates as `vars.<name>`: any YAML values (protected ranges, thresholds, channel names). They are not templates themselves.",
            "type": "object",
        },
        "secrets": {
            "description": "Names of the secrets this playbook may read, as `{{ secrets.<name> }}`, and only inside a step's `with:`. The values live in the server's secret store, never in the playbook.",
            "type": ["string", "array"],
            "pattern": ID_PATTERN,
            "maxLength": 64,
            "items": { "type": "string", "pattern": ID_PATTERN, "maxLength": 64 },
        },
        "trigger": {
            "$ref": "#/$defs/trigger",
            "description": "The webhook that starts this playbook, and how incoming events are authenticated, filtered and deduplicated.",
        },
        "steps": {
            "description": format!("The steps, each a plugin call. A step runs once every step in its `needs` has succeeded and its `if` is true; steps without `needs` between them run in parallel. At least one, at most {MAX_STEPS}."),
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_STEPS,
            "items": { "$ref": "#/$defs/step" },
        },
        "handlers": {
            "description": format!("Failure handlers: steps that run only when a failing step lists them in its `on_failure`, in that order. They can read `error.step`, `error.kind` and `error.message`. At most {MAX_STEPS}."),
            "type": "array",
            "maxItems": MAX_STEPS,
            "items": { "$ref": "#/$defs/handler" },
        },
        "plugins": {
            "description": "What each plugin may do, by plugin name: the hosts it may reach and the secrets it may use. A plugin gets nothing that is not granted here.",
            "type": "object",
            "additionalProperties": { "$ref": "#/$defs/plugin_grant" },
        },
        "outputs": {
            "description": "What the run reports when it ends, as `name: value` pairs. Strings may be templates that read `trigger`, `vars`, `run`, `incident` and `steps`; never `secrets`.",
            "type": "object",
        },
        "case": {
            "$ref": "#/$defs/case",
            "description": "Each run opens an incident case, or joins the open case its alert belongs to: by `key`, or by a shared observable (`join_on`).",
        },
    })
}

fn case() -> Value {
    let observable_names = ObservableType::ALL.map(ObservableType::as_str);
    let observables: serde_json::Map<String, Value> = ObservableType::ALL
        .iter()
        .map(|kind| {
            let description = format!(
                "{} observables (OCSF `type_id` {}): a template that yields one value or a list.",
                kind.ocsf_name(),
                kind.ocsf_id()
            );
            (
                kind.as_str().to_owned(),
                json!({ "description": description, "type": "string" }),
            )
        })
        .collect();
    json!({
        "description": "How the playbook's runs open and join incident cases. Templates here read `trigger` and `vars`.",
        "type": "object",
        "additionalProperties": false,
        "required": ["key"],
        "properties": {
            "key": {
                "description": "A template rendered for each alert: alerts whose key renders the same join the same open case while `window` lasts. Keys are shared by all playbooks, so two rules can feed one case; prefix them to keep playbooks apart.",
                "type": "string",
                "examples": ["{{ trigger.src_ip }}", "host:{{ trigger.agent.name }}"],
            },
            "window": duration(
                "How long after a case's last alert a new alert with the same key (or a shared observable) still joins it.",
                MAX_CASE_WINDOW,
                Some(DEFAULT_CASE_WINDOW),
            ),
            "title": text("The case's title, a template; the playbook's description (or name) when absent."),
            "severity": {
                "description": format!("The case's severity: one of {}, or a template rendering a sender's word for one (`warning`, `error`, `info`, … are understood; anything else is `medium`).", Severity::ALL.map(Severity::as_str).join(", ")),
                "type": "string",
                "examples": ["high", "{{ trigger.labels.severity }}"],
            },
            "observables": {
                "description": "Observables the alert holds that automatic extraction would not find, by OCSF type: a template per type that yields a value or a list of values.",
                "type": "object",
                "additionalProperties": false,
                "properties": observables,
            },
            "join_on": {
                "description": "Observable types by which an alert joins an open case that saw the same value within `window` (the same address in two rules), when no case has its key.",
                "oneOf": [
                    { "enum": observable_names },
                    { "type": "array", "items": { "enum": observable_names } },
                ],
            },
            "undo_on_close": {
                "description": "Closing the case undoes what this playbook's runs still hold: the `undo:` of each of their steps that succeeded and was not undone yet.",
                "type": "boolean",
                "default": false,
            },
        },
    })
}

fn plugin_grant() -> Value {
    json!({
        "description": "The capabilities granted to one plugin.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "hosts": {
                "description": "Hosts the plugin may call: `api.example.com` (ports 80 and 443), `api.example.com:8443`, or `*.example.com`. Private and loopback addresses stay refused unless the server allows their range.",
                "type": ["string", "array"],
                "items": { "type": "string", "pattern": HOST_PATTERN },
                "pattern": HOST_PATTERN,
            },
            "secrets": {
                "description": "Secrets the plugin may use, by name; each must be listed in the top-level `secrets`. Secrets the plugin binds to a header are attached by the host and never shown to the plugin.",
                "type": ["string", "array"],
                "items": { "type": "string", "pattern": ID_PATTERN },
                "pattern": ID_PATTERN,
            },
        },
    })
}

/// `host`, `host:port` or `*.domain`.
const HOST_PATTERN: &str = r"^(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$";

fn trigger() -> Value {
    json!({
        "description": "What starts this playbook: the webhook, which needs either `auth` or `public: true`, and a `schedule` (with a schedule, neither is needed: the webhook then takes nothing).",
        "type": "object",
        "additionalProperties": false,
        "required": ["webhook"],
        "properties": {
            "webhook": {
                "description": "The trigger's name: events are posted to `/hooks/<webhook>`. Lowercase letters, digits, `-` and `_`, at most 64 characters.",
                "type": ["string", "number"],
                "pattern": WEBHOOK_PATTERN,
                "maxLength": 64,
                "examples": ["suricata-alerts"],
            },
            "auth": text("The name of an authentication profile in the server configuration that deliveries must pass. It names the profile; it is never a secret itself."),
            "public": {
                "description": "Accept unauthenticated deliveries. Required (as `true`) when there is no `auth` and no `schedule`; cannot be `true` together with `auth`.",
                "type": "boolean",
                "default": false,
            },
            "split": {
                "description": "Split a delivery (a batch of alerts) into one event per item: a template on the delivery (`trigger`) that yields a list, at most 1000 items. Each item is then `trigger` for the filter, the dedupe key and its own run.",
                "type": "string",
                "pattern": "\\{[{%]",
                "examples": ["{{ trigger.alerts }}"],
            },
            "filter": {
                "$ref": "#/$defs/condition",
                "description": "Events for which this condition is false are acknowledged and ignored: no run starts. It may read `trigger` and `vars`.",
            },
            "dedupe": {
                "$ref": "#/$defs/dedupe",
                "description": "Suppress repeated deliveries of the same alert within a time window.",
            },
            "resolved": {
                "$ref": "#/$defs/condition",
                "description": "Events for which this condition is true report that an alert ended (`status == 'resolved'`): they start no run and are recorded on the run their `dedupe` key started. Needs `dedupe`.",
            },
            "schedule": {
                "$ref": "#/$defs/schedule",
                "description": "Also start a run on each tick of a cron expression, once across every process sharing the store. The run's `trigger` is `{\"schedule\": {\"tick\": \"<RFC 3339>\", \"cron\": …, \"timezone\": …, \"caught_up\": bool}}`.",
            },
        },
        "dependentRequired": { "resolved": ["dedupe"] },
        // Exactly what the compiler asks: `auth`, or else `public: true`; never both.
        "if": { "required": ["auth"] },
        "then": { "properties": { "public": { "const": false } } },
        "else": {
            "anyOf": [
                { "required": ["public"], "properties": { "public": { "const": true } } },
                { "required": ["schedule"] },
            ],
        },
    })
}

fn schedule() -> Value {
    json!({
        "description": "When a scheduled trigger fires.",
        "type": "object",
        "additionalProperties": false,
        "required": ["cron"],
        "properties": {
            "cron": {
                "description": "A cron expression: five fields (minute hour day-of-month month day-of-week) or six with seconds first; `*/n`, ranges, lists, names (`MON`, `JAN`), `L`, `W`, `#` and `@daily`-style nicknames.",
                "type": "string",
                "examples": ["0 9 * * MON-FRI", "*/30 * * * * *", "@hourly"],
            },
            "timezone": {
                "description": "The IANA time zone the expression is read in; ticks follow its daylight saving.",
                "type": "string",
                "default": "UTC",
                "examples": ["Europe/Paris", "America/New_York"],
            },
            "catch_up": duration(
                "On start, fire the most recent tick missed within this long before, once (none by default: ticks missed while no process ran are skipped).",
                MAX_CATCH_UP,
                None,
            ),
        },
    })
}

fn dedupe() -> Value {
    json!({
        "description": "Suppresses repeated deliveries of the same alert within a window.",
        "type": "object",
        "additionalProperties": false,
        "required": ["key"],
        "properties": {
            "key": {
                "description": "A template rendered for each event; events with a key already seen within `window` are duplicates. It may read `trigger` and `vars`.",
                "type": "string",
                "examples": ["{{ trigger.alert_id }}"],
            },
            "window": duration(
                "How long a key is remembered.",
                MAX_DEDUPE_WINDOW,
                Some(DEFAULT_DEDUPE_WINDOW),
            ),
        },
    })
}

fn step() -> Value {
    json!({
        "description": "One step: a plugin call with its inputs and policies.",
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "uses"],
        "properties": {
            "id": {
                "$ref": "#/$defs/step_id",
                "description": "The step's unique id, read by templates as `steps.<id>`: lowercase letters, digits and `_`, not starting with a digit, at most 64 characters.",
            },
            "name": text("The name shown to people in logs and approval requests; the id when absent."),
            "uses": {
                "description": "The plugin action to call: `<plugin>/<action>`, optionally pinned as `<plugin>/<action>@<version>`. `core/echo` is built in and returns its input. `playbook/<name>` runs the playbook of that name as a child run (its `trigger` is this step's input, its outputs this step's output).",
                "type": "string",
                "pattern": USES_PATTERN,
                "examples": ["enrich-ioc/check-ip", "block-ip/ban@1.2.0", "notify-slack/post-message", "http/request", "core/echo"],
            },
            "with": {
                "description": "The action's inputs, as `name: value` pairs of any YAML. Strings may be templates that read `trigger`, `vars`, `secrets`, `run`, `incident`, the `steps` this step needs, the `foreach` variable, and `error` in handlers.",
                "type": "object",
            },
            "if": {
                "$ref": "#/$defs/condition",
                "description": "Run the step only when this condition is true; otherwise it is skipped (and so are the steps that need it). It may read `trigger`, `vars`, `run`, `incident` and the `steps` this step needs; never `secrets`.",
            },
            "foreach": {
                "description": "Run the step once per item of a list: a list, a lone expression that yields one (`\"{{ trigger.iocs }}\"`), or `{ items, as, concurrency }`. Each run reads its item as `item` (or the `as` name) in `with:`; the step's output is the list of the items' outputs.",
                "oneOf": [
                    { "type": "string", "examples": ["{{ trigger.urls }}"] },
                    { "type": "array" },
                    { "$ref": "#/$defs/foreach" },
                ],
            },
            "needs": {
                "description": "Steps that must succeed before this one starts: a step id or a list of them. If one of them fails or is skipped, this step is skipped.",
                "oneOf": [
                    { "$ref": "#/$defs/step_id" },
                    { "type": "array", "items": { "$ref": "#/$defs/step_id" } },
                ],
            },
            "timeout": duration(
                "The deadline of one attempt; an attempt that takes longer fails with the error kind `timeout`.",
                MAX_STEP_TIMEOUT,
                Some(DEFAULT_STEP_TIMEOUT),
            ),
            "retry": {
                "description": format!("How often to try the step: a number of attempts (the first included, so `1` means no retry; at most {MAX_ATTEMPTS}), or a policy `{{ max_attempts, backoff, on }}`."),
                "oneOf": [
                    { "type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS },
                    { "$ref": "#/$defs/retry" },
                ],
            },
            "on_failure": {
                "description": "What happens when the step fails for good: `fail` (the default: the run fails), `continue` (steps that need it are skipped, the rest go on), a list of handler ids to run before failing, or `{ run: [handlers], then: fail|continue }`.",
                "default": "fail",
                "oneOf": [
                    { "enum": ["fail", "continue"] },
                    { "type": "array", "items": { "$ref": "#/$defs/step_id" } },
                    { "$ref": "#/$defs/on_failure" },
                ],
            },
            "approval": {
                "$ref": "#/$defs/approval",
                "description": "A human gate: the run waits for one of `approvers` to approve or deny before the step runs.",
            },
            "phase": {
                "description": "The incident-response phase the step's work belongs to. When it succeeds, the run's case moves on to that phase (never back; people can move it either way).",
                "enum": Phase::OF_STEPS.map(Phase::as_str),
            },
            "undo": {
                "$ref": "#/$defs/undo",
                "description": "How to take the step's effect back (lift a ban, release a host): run when `expires` says, when someone asks (`riposte undo`, the API, the console), or when the case closes (`case.undo_on_close`).",
            },
            "expires": {
                "description": format!("How long the step's effect lasts: its `undo` runs this long after it succeeded, as a durable timer (once, also across restarts). A duration such as `2h`, or a template rendering one that may read what `undo` may (e.g. `\"{{{{ vars.ban_duration }}}}\"`); at most {}. Needs `undo`.", humantime::format_duration(MAX_EXPIRY)),
                "type": ["string", "integer"],
                "examples": ["4h", "{{ vars.ban_duration }}"],
            },
        },
    })
}

fn undo() -> Value {
    json!({
        "description": "A step's compensation: a plugin call of its own. Its `with:` may read what the step's `with:` may, the step's own result (`steps.<id>`), and the step's recorded `input` and `output`. Its idempotency key is `<run>:<step>:undo`.",
        "type": "object",
        "additionalProperties": false,
        "required": ["uses"],
        "properties": {
            "uses": {
                "description": "The plugin action that undoes the step, e.g. `block-ip/unban`. Its plugin needs a grant in `plugins:` like any step's.",
                "type": "string",
                "pattern": USES_PATTERN,
                "examples": ["block-ip/unban"],
            },
            "with": {
                "description": "The action's inputs; templates may read `input` and `output` (the step's), besides what the step may read.",
                "type": "object",
            },
            "timeout": duration("The deadline of one attempt (the step's by default).", MAX_STEP_TIMEOUT, None),
            "retry": {
                "description": "How often to try the undo (the step's policy by default): a number of attempts or a policy.",
                "oneOf": [
                    { "type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS },
                    { "$ref": "#/$defs/retry" },
                ],
            },
        },
    })
}

/// A handler is a step without `needs`: it runs when a failing step names it in `on_failure`.
fn handler() -> Value {
    let mut handler = step();
    if let Some(properties) = handler["properties"].as_object_mut() {
        properties.remove("needs");
        properties.remove("approval");
        properties.remove("undo");
        properties.remove("expires");
    }
    handler["properties"]["if"]["description"] = json!(
        "Run the handler only when this condition is true. It may read `trigger`, `vars`, `run`, `incident`, `steps` and `error`; never `secrets`."
    );
    handler["description"] = json!(
        "A failure handler: a step that runs only when a failing step names it in `on_failure`. It has no `needs` or `approval`, and its templates can also read `error.step`, `error.kind` and `error.message`."
    );
    handler
}

fn foreach() -> Value {
    json!({
        "description": "The long form of `foreach`.",
        "type": "object",
        "additionalProperties": false,
        "required": ["items"],
        "properties": {
            "items": {
                "description": "The list: a YAML list, or a lone expression that yields one. It may read what `if` may read.",
                "type": ["string", "array"],
            },
            "as": {
                "description": "The name each item has in `with:`.",
                "type": "string",
                "pattern": ID_PATTERN,
                "maxLength": 64,
                "not": { "enum": ROOTS },
                "default": "item",
            },
            "concurrency": {
                "description": "How many items run at the same time.",
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_CONCURRENCY,
                "default": DEFAULT_CONCURRENCY,
            },
        },
    })
}

fn retry() -> Value {
    let defaults = RetryPolicy::default();
    let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|kind| kind.as_str()).collect();
    let default_kinds: Vec<&str> = defaults.retry_on.iter().map(|kind| kind.as_str()).collect();
    json!({
        "description": "The long form of `retry`.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "max_attempts": {
                "description": "Total attempts, the first included; `1` means no retry.",
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ATTEMPTS,
                "default": defaults.max_attempts,
            },
            "backoff": {
                "description": "The delay before the first retry (a duration), or `{ initial, max, multiplier, jitter }`. Each later delay is the previous one times `multiplier`, capped at `max`.",
                "oneOf": [
                    duration_value(MAX_STEP_TIMEOUT),
                    { "$ref": "#/$defs/backoff" },
                ],
            },
            "on": {
                "description": "The error kinds that are retried, one or a list; other errors fail at once.",
                "default": default_kinds,
                "oneOf": [
                    { "enum": kinds },
                    { "type": "array", "items": { "enum": kinds } },
                ],
            },
        },
    })
}

fn backoff() -> Value {
    let defaults = RetryPolicy::default();
    json!({
        "description": "Exponential backoff between attempts.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "initial": duration("The delay before the first retry.", MAX_STEP_TIMEOUT, Some(defaults.initial_delay)),
            "max": duration("The longest delay between two attempts; `initial` may not be longer.", MAX_STEP_TIMEOUT, Some(defaults.max_delay)),
            "multiplier": {
                "description": "Each delay is the previous one times this, from 1 to 10.",
                "type": "number",
                "minimum": 1,
                "maximum": 10,
                "default": defaults.multiplier,
            },
            "jitter": {
                "description": "Randomise each delay so that the retries of many runs do not hit a recovering service at the same moment.",
                "type": "boolean",
                "default": defaults.jitter,
            },
        },
    })
}

fn on_failure() -> Value {
    json!({
        "description": "Run failure handlers, then fail or continue.",
        "type": "object",
        "additionalProperties": false,
        "required": ["run"],
        "properties": {
            "run": {
                "description": "The handlers to run, in order: a handler id or a list of them, declared under the top-level `handlers:`.",
                "oneOf": [
                    { "$ref": "#/$defs/step_id" },
                    { "type": "array", "items": { "$ref": "#/$defs/step_id" } },
                ],
            },
            "then": {
                "description": "After the handlers: `fail` ends the run; `continue` goes on with the steps that do not need this one.",
                "enum": ["fail", "continue"],
                "default": "fail",
            },
        },
    })
}

fn approval() -> Value {
    json!({
        "description": "A human gate before a step runs.",
        "type": "object",
        "additionalProperties": false,
        "required": ["approvers"],
        "properties": {
            "approvers": {
                "description": "Users or groups who may decide, as names the server knows: one or a non-empty list.",
                "type": ["string", "number", "array"],
                "minItems": 1,
                "items": { "type": ["string", "number"] },
            },
            "timeout": duration(
                "How long to wait for a decision.",
                MAX_APPROVAL_TIMEOUT,
                Some(DEFAULT_APPROVAL_TIMEOUT),
            ),
            "on_timeout": {
                "description": "What silence means when `timeout` passes: `deny` skips the step, `approve` runs it, `fail` fails it (and its `on_failure` applies).",
                "enum": ["deny", "approve", "fail"],
                "default": "deny",
            },
            "message": {
                "description": "Shown to approvers. A template that may read what `if` may read.",
                "type": "string",
            },
            "slack": text("A Slack channel (id or `#name`) the request is posted to, with Approve and Deny buttons; people the server's `slack.users` maps to an approver decide there."),
        },
    })
}

/// A free-text field; numbers are accepted and read as their text.
fn text(description: &str) -> Value {
    json!({ "description": description, "type": ["string", "number"] })
}

/// A duration field with its description, maximum and default.
fn duration(description: &str, max: Duration, default: Option<Duration>) -> Value {
    let mut schema = duration_value(max);
    schema["description"] = json!(format!(
        "{description} A duration such as `30s`, `5m` or `1h 30m`, or a whole number of seconds; at most {}.",
        humantime::format_duration(max)
    ));
    if let Some(default) = default {
        schema["default"] = json!(humantime::format_duration(default).to_string());
    }
    schema
}

fn duration_value(max: Duration) -> Value {
    json!({
        "oneOf": [
            { "type": "string", "pattern": DURATION_PATTERN },
            { "type": "integer", "minimum": 1, "maximum": max.as_secs() },
        ],
    })
}

/// The connector format's schema identity.
pub const CONNECTOR_SCHEMA_ID: &str = "https://riposte.dev/schema/connector-v1.json";

/// The JSON Schema of a connector file (docs/connectors.md).
pub fn connector_schema() -> Value {
    use crate::connector::{
        AUTH_TYPES, DEFAULT_MAX_PAGES, DEFAULT_RETRY_STATUSES, MAX_PAGES_LIMIT,
    };
    let name = |description: &str| json!({ "description": description, "type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$" });
    let templated = |description: &str| json!({ "description": description });
    let statuses = |description: &str| {
        json!({
            "description": description,
            "type": "array",
            "items": { "type": "integer", "minimum": 100, "maximum": 599 },
        })
    };
    let pairs = |description: &str| {
        json!({
            "description": description,
            "type": "object",
            "additionalProperties": true,
        })
    };
    let auth_variants: Vec<Value> = AUTH_TYPES
        .iter()
        .map(|(kind, required, optional)| {
            let mut properties = serde_json::Map::new();
            properties.insert("type".into(), json!({ "const": kind }));
            for field in required.iter().chain(optional.iter()) {
                let schema = match *field {
                    "fields" => json!({
                        "description": "Body field → the name of the secret that fills it.",
                        "type": "object",
                        "additionalProperties": { "type": "string" },
                    }),
                    "format" => json!({ "description": "The header's value, with `{secret}` where the secret goes.", "type": "string", "default": "{secret}" }),
                    "token_url" => json!({ "description": "The OAuth 2.0 token endpoint; may read `settings`.", "type": "string" }),
                    "path" => json!({ "description": "Appended to `base_url`: where credentials are posted.", "type": "string", "pattern": "^/" }),
                    "secret" | "username" | "password" | "client_id" | "client_secret" => json!({ "description": "The name of a secret declared under `secrets`.", "type": "string", "pattern": ID_PATTERN }),
                    _ => json!({ "type": "string" }),
                };
                properties.insert((*field).into(), schema);
            }
            let mut required_fields = vec!["type"];
            required_fields.extend_from_slice(required);
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": required_fields,
                "properties": properties,
            })
        })
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": CONNECTOR_SCHEMA_ID,
        "title": "Riposte connector",
        "description": "A declarative connector: an HTTP API's actions, called from playbooks as `uses: <connector>/<action>`. Reference: docs/connectors.md.",
        "type": "object",
        "additionalProperties": false,
        "required": ["connector", "actions"],
        "properties": {
            "connector": name("The connector's name: what steps write before the `/` of `uses:`."),
            "version": text("The connector's version; a step may pin it (`uses: <connector>/<action>@<version>`)."),
            "description": text("One line on what it is for."),
            "documentation": text("The vendor API reference (and version) it follows."),
            "base_url": { "description": "Where the API is: `https://…`, may read `settings`. Request paths are appended to it. Not needed with `url` auth.", "type": "string" },
            "hosts": { "description": "More hosts requests may reach; the base URL's and the token URL's are always allowed.", "type": "array", "items": { "type": "string" } },
            "settings": {
                "description": "Deployment values, read as `settings.<name>` and set under `connectors.settings.<connector>` in the server configuration.",
                "type": "object",
                "propertyNames": { "pattern": ID_PATTERN },
                "additionalProperties": { "$ref": "#/$defs/setting" },
            },
            "secrets": {
                "description": "The secrets its auth uses, by name, with what each is. Playbooks grant them by these names.",
                "type": "object",
                "propertyNames": { "pattern": ID_PATTERN },
                "additionalProperties": { "type": ["string", "null"] },
            },
            "auth": { "$ref": "#/$defs/auth" },
            "actions": {
                "description": "The actions, by name.",
                "type": "object",
                "minProperties": 1,
                "propertyNames": { "pattern": "^[a-z0-9_-]{1,64}$" },
                "additionalProperties": { "$ref": "#/$defs/action" },
            },
        },
        "$defs": {
            "setting": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "description": text("What the setting is."),
                    "default": { "description": "Its value unless the configuration sets one; without it, the configuration must." },
                },
            },
            "auth": {
                "description": "How requests authenticate; the host attaches the secrets (templates never see them).",
                "oneOf": auth_variants,
            },
            "action": {
                "type": "object",
                "additionalProperties": false,
                "required": ["request"],
                "properties": {
                    "description": text("What the action does."),
                    "destructive": { "description": "Screen the input for protected addresses, as for destructive plugin actions.", "type": "boolean", "default": false },
                    "input": { "description": "A JSON Schema (2020-12) of the step's `with:`; top-level defaults are filled in.", "type": "object" },
                    "request": { "$ref": "#/$defs/request" },
                    "ok": statuses("Statuses that succeed; default every 2xx."),
                    "retry": { "allOf": [statuses("Statuses that fail as retryable: `rate_limited` for 429, `upstream` otherwise."), { "default": DEFAULT_RETRY_STATUSES }] },
                    "fail_if": templated("A condition over `response`: an answer whose status succeeds fails when it is true (`not response.body.ok`)."),
                    "error": templated("The failure's message, rendered from `response`."),
                    "error_kind": templated("The failure's error kind, rendered from `response` (`invalid_input`, `unauthorized`, `not_found`, `rate_limited`, `upstream`, `timeout`, `internal`); `null` keeps the status's."),
                    "paginate": { "$ref": "#/$defs/paginate" },
                    "output": templated("What the step's output is, rendered from `response` (and `items` when paginating); default the answer's body."),
                },
            },
            "request": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "method": { "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "get", "post", "put", "patch", "delete", "head"], "default": "GET" },
                    "path": { "description": "Appended to `base_url`; a template over `input`, `settings`, `call`.", "type": "string" },
                    "url": { "description": "Instead of `path`: an absolute URL, still held to the allowed hosts.", "type": "string" },
                    "query": pairs("Query parameters; `null` leaves one out, a list repeats it."),
                    "headers": pairs("Request headers."),
                    "body": templated("A JSON body, with templates in its leaves."),
                    "form": pairs("A form-encoded body, instead of `body`."),
                },
                "not": { "anyOf": [{ "required": ["path", "url"] }, { "required": ["body", "form"] }] },
            },
            "paginate": {
                "type": "object",
                "additionalProperties": false,
                "required": ["items", "next"],
                "properties": {
                    "items": templated("Each page's items."),
                    "next": templated("The next page: a URL (absolute, or relative to `base_url`), or a mapping of query parameters; `null` or empty stops."),
                    "max_pages": { "type": "integer", "minimum": 1, "maximum": MAX_PAGES_LIMIT, "default": DEFAULT_MAX_PAGES },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests;
