//! The checked playbook: what [`crate::compile`] produces and the runner executes.
//!
//! Every value here has passed the checker, so the runner never has to re-validate: step ids are
//! unique identifiers, `needs` form a DAG, templates parse and only reference things that exist.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::case::{CaseRule, Phase};
use crate::diagnostic::Position;
use crate::template::{Condition, Input};

/// A playbook that passed every check.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub name: String,
    pub description: Option<String>,
    pub version: Option<String>,
    pub tags: Vec<String>,
    /// Incident fields (`title`, `severity`, …), rendered once when a run starts.
    pub incident: BTreeMap<String, Input>,
    /// Constants available to templates as `vars.*`.
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Names of the secrets this playbook may read, as `secrets.<name>` in `with:`.
    pub secrets: Vec<String>,
    pub trigger: Trigger,
    /// Steps in declaration order; [`Playbook::order`] gives an order that respects `needs`.
    pub steps: Vec<Step>,
    /// Steps that run only when a failing step names them in `on_failure`.
    pub handlers: Vec<Step>,
    /// What each plugin may do, by plugin name.
    pub plugins: BTreeMap<String, PluginGrant>,
    pub outputs: BTreeMap<String, Input>,
    /// How its runs open or join an incident case, if they do.
    pub case: Option<CaseRule>,
    pub(crate) order: Vec<usize>,
}

impl Playbook {
    /// Indices into [`Playbook::steps`] in an order where every step comes after the steps it needs.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id.as_str() == id)
    }

    pub fn handler(&self, id: &str) -> Option<&Step> {
        self.handlers.iter().find(|s| s.id.as_str() == id)
    }

    /// A step or handler by id.
    pub fn step_or_handler(&self, id: &str) -> Option<&Step> {
        self.step(id).or_else(|| self.handler(id))
    }

    /// The longest a run of this playbook goes without a journal write while it is driven: one
    /// attempt (its timeout) or one retry delay, whichever is longer.
    pub fn longest_quiet(&self) -> Duration {
        self.steps
            .iter()
            .chain(&self.handlers)
            .map(|step| match step.retry.max_attempts {
                0 | 1 => step.timeout,
                _ => step.timeout.max(step.retry.max_delay),
            })
            .max()
            .unwrap_or_default()
    }
}

/// The capabilities a playbook grants one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginGrant {
    /// Hosts the plugin may call: `host`, `host:port` or `*.domain`.
    pub hosts: Vec<String>,
    /// Names of secrets (declared in the playbook's `secrets`) the plugin may use.
    pub secrets: Vec<String>,
}

/// The webhook a playbook answers and how incoming events are screened.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// The trigger name: events arrive at `POST /hooks/<webhook>`.
    pub webhook: String,
    /// Name of an authentication profile in the server configuration (never a secret itself).
    pub auth: Option<String>,
    /// Explicitly accept unauthenticated deliveries. Without `auth` or `public: true` the server refuses.
    pub public: bool,
    /// Splits a delivery into one event per item (a batch of alerts): each item is screened,
    /// and runs, on its own.
    pub split: Option<Input>,
    /// Events for which this is false are acknowledged and ignored.
    pub filter: Option<Condition>,
    pub dedupe: Option<Dedupe>,
    /// An event for which this is true reports that an alert ended: it starts no run, and is
    /// recorded on the run its dedupe key started.
    pub resolved: Option<Condition>,
    /// Also (or, without `auth` and `public`, only) fires on these ticks.
    pub schedule: Option<crate::Schedule>,
}

/// Suppresses repeated deliveries of the same alert within a window.
#[derive(Debug, Clone)]
pub struct Dedupe {
    pub key: Input,
    pub window: Duration,
}

/// A step identifier: usable as `steps.<id>` in templates, so letters, digits and `_` only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Stands in for a missing or invalid id while the rest of the step is still checked.
    pub(crate) fn placeholder(index: usize) -> StepId {
        StepId(format!("#{index}"))
    }

    /// Whether this id stands in for one that was missing or invalid (and already reported).
    pub(crate) fn is_placeholder(&self) -> bool {
        self.0.starts_with('#')
    }

    pub(crate) fn is_valid(candidate: &str) -> bool {
        let mut chars = candidate.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && candidate.len() <= 64
    }
}

impl TryFrom<String> for StepId {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if StepId::is_valid(&value) {
            Ok(StepId(value))
        } else {
            Err(value)
        }
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `uses: <plugin>/<action>[@<version>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginRef {
    pub plugin: String,
    pub action: String,
    pub version: Option<String>,
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.plugin, self.action)?;
        if let Some(version) = &self.version {
            write!(f, "@{version}")?;
        }
        Ok(())
    }
}

/// One step: a plugin call with its inputs and policies.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: StepId,
    pub name: Option<String>,
    pub uses: PluginRef,
    /// Inputs: a mapping whose leaves may be templates.
    pub with: Input,
    pub condition: Option<Condition>,
    pub foreach: Option<Foreach>,
    pub needs: Vec<StepId>,
    /// Deadline of one attempt.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub on_failure: OnFailure,
    pub approval: Option<Approval>,
    /// The incident-response phase the step belongs to: when it succeeds, the run's case moves
    /// on to that phase (never back).
    pub phase: Option<Phase>,
    /// How to take the step's effect back (lift a ban, release a host), on demand or when it
    /// expires.
    pub undo: Option<Undo>,
    /// How long the step's effect lasts: its `undo` runs this long after it succeeded. A
    /// duration, or a template that renders one.
    pub expires: Option<Input>,
    /// Where the step starts in the file, for messages.
    pub position: Position,
}

/// A step's compensation: a plugin call of its own, whose `with:` may read the step's recorded
/// `input` and its `output`.
#[derive(Debug, Clone)]
pub struct Undo {
    pub uses: PluginRef,
    pub with: Input,
    /// Deadline of one attempt (the step's, unless the undo sets its own).
    pub timeout: Duration,
    /// The step's retry policy, unless the undo sets its own.
    pub retry: RetryPolicy,
}

impl Step {
    /// The name to show people: `name:` if given, otherwise the id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.id.as_str())
    }
}

/// Run the step once per item of a list.
#[derive(Debug, Clone)]
pub struct Foreach {
    pub items: Input,
    /// The variable each item is bound to in `with:` (default `item`).
    pub var: String,
    /// How many items run at the same time.
    pub concurrency: usize,
}

/// Why a plugin call failed, as the runner needs to know to decide on a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidInput,
    Unauthorized,
    NotFound,
    RateLimited,
    Upstream,
    Timeout,
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::InvalidInput,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::RateLimited,
        ErrorKind::Upstream,
        ErrorKind::Timeout,
        ErrorKind::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not_found",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }

    pub fn parse(text: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often and how patiently a failing step is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included; 1 means no retry.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    /// Spread retries of many runs over time, so a recovering upstream is not hit all at once.
    pub jitter: bool,
    /// The error kinds that are retried; others fail at once.
    pub retry_on: Vec<ErrorKind>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: true,
            retry_on: vec![
                ErrorKind::RateLimited,
                ErrorKind::Upstream,
                ErrorKind::Timeout,
            ],
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry), before jitter.
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(64) as i32;
        let delay = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(delay.min(self.max_delay.as_secs_f64()))
    }
}

/// What happens when a step fails for good.
#[derive(Debug, Clone, PartialEq)]
pub enum OnFailure {
    /// The run fails; steps not started yet are cancelled.
    Fail,
    /// The step is recorded as failed, steps that need it are skipped, the rest go on.
    Continue,
    /// Run these handlers in order, then fail or continue.
    Handle {
        handlers: Vec<StepId>,
        then_continue: bool,
    },
}

/// A human gate before a step runs.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Users or groups who may decide, as names the server knows.
    pub approvers: Vec<String>,
    pub timeout: Duration,
    pub on_timeout: ApprovalTimeout,
    /// Shown to approvers; may be a template.
    pub message: Option<Input>,
    /// A Slack channel the request is posted to, with Approve and Deny buttons.
    pub slack: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalTimeout {
    /// Treat silence as a denial: the step is skipped (the safe default for destructive steps).
    Deny,
    /// Treat silence as consent.
    Approve,
    /// The step fails and its `on_failure` applies.
    Fail,
}
