//! Run events and the run state they add up to.
//!
//! Every state change of a run is a [`RunEvent`]. The runner appends each event to a
//! [`crate::Journal`] *before* acting on it, and [`RunState`] is nothing but the fold of those events
//! ([`RunState::apply`]). So the audit trail and the checkpoint are the same record: a crashed run is
//! resumed by folding its journal, and a step whose success was recorded is never run again.

use std::collections::BTreeMap;

use playbook::ErrorKind;
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// Something that happened in a run. Serialized with a `type` tag, e.g. `{"type":"step_started",…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    /// The webhook delivery that asked for the run was accepted: the run's first record, written
    /// with the delivery itself (before any worker saw it).
    RunAccepted {
        trigger: String,
        /// Who sent it: the webhook authentication profile that verified it, or `public`.
        actor: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery_id: Option<String>,
        /// The playbook the run was accepted for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        playbook: Option<String>,
        /// SHA-256 (hex) of the event as the run record stores it: with `playbook`, this puts the
        /// run record's columns under the chain. Absent in records written before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_sha256: Option<String>,
        at: Millis,
    },
    RunStarted {
        run_id: String,
        playbook: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        playbook_version: Option<String>,
        event: serde_json::Value,
        incident: serde_json::Map<String, serde_json::Value>,
        at: Millis,
    },
    StepStarted {
        step: String,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<usize>,
        /// The rendered input, with secrets redacted.
        input: serde_json::Value,
        at: Millis,
    },
    StepRetrying {
        step: String,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<usize>,
        error: StepError,
        delay_ms: u64,
        at: Millis,
    },
    StepSucceeded {
        step: String,
        output: serde_json::Value,
        attempts: u32,
        duration_ms: u64,
        at: Millis,
    },
    StepFailed {
        step: String,
        error: StepError,
        attempts: u32,
        duration_ms: u64,
        at: Millis,
    },
    StepSkipped {
        step: String,
        reason: String,
        at: Millis,
    },
    ApprovalRequested {
        step: String,
        approvers: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        deadline: Millis,
        at: Millis,
    },
    ApprovalDecided {
        step: String,
        decision: Decision,
        at: Millis,
    },
    /// A worker picked the run up again after the previous one lost it (crashed, or stalled past
    /// its lease): the run was stalled, and is recovered from its journal.
    RunRecovered {
        /// How many times the run's job had been handed to a worker, this time included.
        deliveries: u32,
        at: Millis,
    },
    /// Someone resumed a failed run: its failed and skipped steps run again (with the same
    /// idempotency keys); the outputs of the steps that succeeded are kept.
    RunResumed { by: String, at: Millis },
    /// The sender reported that the alert that started the run ended (a resolved alert with the
    /// same dedupe key): recorded on the run, whatever its state.
    AlertResolved {
        /// The dedupe key that linked it to this run.
        key: String,
        /// The resolved alert as it was delivered.
        event: serde_json::Value,
        at: Millis,
    },
    /// Someone cancelled the run: nothing more of it runs.
    RunCancelled {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        at: Millis,
    },
    RunFinished {
        status: RunStatus,
        outputs: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        at: Millis,
    },
}

impl RunEvent {
    /// When it happened.
    pub fn at(&self) -> Millis {
        match self {
            RunEvent::RunAccepted { at, .. }
            | RunEvent::RunStarted { at, .. }
            | RunEvent::StepStarted { at, .. }
            | RunEvent::StepRetrying { at, .. }
            | RunEvent::StepSucceeded { at, .. }
            | RunEvent::StepFailed { at, .. }
            | RunEvent::StepSkipped { at, .. }
            | RunEvent::ApprovalRequested { at, .. }
            | RunEvent::ApprovalDecided { at, .. }
            | RunEvent::RunRecovered { at, .. }
            | RunEvent::RunResumed { at, .. }
            | RunEvent::AlertResolved { at, .. }
            | RunEvent::RunCancelled { at, .. }
            | RunEvent::RunFinished { at, .. } => *at,
        }
    }

    /// Whether this event ends the run (until someone resumes it).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunEvent::RunFinished { .. } | RunEvent::RunCancelled { .. }
        )
    }

    /// Who cancelled the run these events record, if someone did. A run cancelled while queued
    /// never started, so [`RunState`] cannot say: this reads the events themselves.
    pub fn cancelled_by(events: &[RunEvent]) -> Option<&str> {
        events.iter().find_map(|event| match event {
            RunEvent::RunCancelled { by, .. } => Some(by.as_str()),
            _ => None,
        })
    }

    /// The step this event is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            RunEvent::StepStarted { step, .. }
            | RunEvent::StepRetrying { step, .. }
            | RunEvent::StepSucceeded { step, .. }
            | RunEvent::StepFailed { step, .. }
            | RunEvent::StepSkipped { step, .. }
            | RunEvent::ApprovalRequested { step, .. }
            | RunEvent::ApprovalDecided { step, .. } => Some(step),
            RunEvent::RunAccepted { .. }
            | RunEvent::RunStarted { .. }
            | RunEvent::RunRecovered { .. }
            | RunEvent::RunResumed { .. }
            | RunEvent::AlertResolved { .. }
            | RunEvent::RunCancelled { .. }
            | RunEvent::RunFinished { .. } => None,
        }
    }
}

impl RunEvent {
    /// Who did it, when a person (or a sender) did: the sender's auth profile, an approver, whoever
    /// cancelled or resumed the run.
    pub fn actor(&self) -> Option<&str> {
        match self {
            RunEvent::RunAccepted { actor, .. } => Some(actor),
            RunEvent::ApprovalDecided { decision, .. } => decision.by(),
            RunEvent::RunResumed { by, .. } | RunEvent::RunCancelled { by, .. } => Some(by),
            _ => None,
        }
    }

    /// One line saying what happened, for timelines and reports. Values from alerts and plugins
    /// appear as they are: whoever shows the line escapes it.
    pub fn describe(&self) -> String {
        match self {
            RunEvent::RunAccepted { trigger, actor, .. } => {
                format!("alert accepted on trigger `{trigger}` from {actor}")
            }
            RunEvent::RunStarted { playbook, .. } => format!("run of `{playbook}` started"),
            RunEvent::StepStarted {
                step,
                attempt,
                item,
                ..
            } => match item {
                Some(item) => format!("step `{step}` started (item {item}, attempt {attempt})"),
                None => format!("step `{step}` started (attempt {attempt})"),
            },
            RunEvent::StepRetrying {
                step,
                attempt,
                error,
                delay_ms,
                ..
            } => format!(
                "step `{step}` attempt {attempt} failed ({error}); retrying in {delay_ms} ms"
            ),
            RunEvent::StepSucceeded {
                step,
                attempts,
                duration_ms,
                ..
            } => format!("step `{step}` succeeded after {attempts} attempt(s) in {duration_ms} ms"),
            RunEvent::StepFailed {
                step,
                error,
                attempts,
                ..
            } => format!("step `{step}` failed after {attempts} attempt(s): {error}"),
            RunEvent::StepSkipped { step, reason, .. } => {
                format!("step `{step}` skipped: {reason}")
            }
            RunEvent::ApprovalRequested {
                step, approvers, ..
            } => format!(
                "step `{step}` waits for approval by {}",
                approvers.join(", ")
            ),
            RunEvent::ApprovalDecided { step, decision, .. } => match decision {
                Decision::Approved { by, comment } => match comment {
                    Some(comment) => format!("step `{step}` approved by {by}: {comment}"),
                    None => format!("step `{step}` approved by {by}"),
                },
                Decision::Denied { by, reason } => match reason {
                    Some(reason) => format!("step `{step}` denied by {by}: {reason}"),
                    None => format!("step `{step}` denied by {by}"),
                },
                Decision::TimedOut => format!("nobody decided on step `{step}` in time"),
            },
            RunEvent::RunRecovered { deliveries, .. } => {
                format!("run recovered by another worker (delivery {deliveries})")
            }
            RunEvent::RunResumed { by, .. } => format!("run resumed by {by}"),
            RunEvent::AlertResolved { key, .. } => {
                format!("the sender reported the alert `{key}` resolved")
            }
            RunEvent::RunCancelled { by, reason, .. } => match reason {
                Some(reason) => format!("run cancelled by {by}: {reason}"),
                None => format!("run cancelled by {by}"),
            },
            RunEvent::RunFinished { status, error, .. } => match error {
                Some(error) => format!("run {}: {error}", status.as_str()),
                None => format!("run {}", status.as_str()),
            },
        }
    }
}

/// Why a plugin call failed: typed, so the runner can tell what to retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
    /// For `rate_limited`: how long the upstream asked us to wait, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl StepError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StepError {
            kind,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// A human's (or the clock's) answer to an approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Approved {
        by: String,
        /// Why, in the approver's words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    Denied {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Nobody decided before the deadline; the step's `on_timeout` applies.
    TimedOut,
}

impl Decision {
    /// The person who decided (nobody, when the deadline did).
    pub fn by(&self) -> Option<&str> {
        match self {
            Decision::Approved { by, .. } | Decision::Denied { by, .. } => Some(by),
            Decision::TimedOut => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Nothing can progress until an approval is decided or times out.
    WaitingForApproval,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::WaitingForApproval => "waiting_for_approval",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    WaitingForApproval,
    Succeeded,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::WaitingForApproval => "waiting_for_approval",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// An approval's lifecycle within a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalState {
    pub approvers: Vec<String>,
    pub requested_at: Millis,
    pub deadline: Millis,
    pub decision: Option<Decision>,
}

/// What is known about one step (or failure handler) of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub status: StepStatus,
    pub attempts: u32,
    pub output: Option<serde_json::Value>,
    pub error: Option<StepError>,
    pub skip_reason: Option<String>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub approval: Option<ApprovalState>,
}

impl Default for StepRecord {
    fn default() -> Self {
        StepRecord {
            status: StepStatus::Pending,
            attempts: 0,
            output: None,
            error: None,
            skip_reason: None,
            started_at: None,
            finished_at: None,
            approval: None,
        }
    }
}

/// Everything known about a run: the fold of its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    pub playbook: String,
    pub event: serde_json::Value,
    pub incident: serde_json::Map<String, serde_json::Value>,
    pub started_at: Millis,
    pub status: RunStatus,
    pub steps: BTreeMap<String, StepRecord>,
    pub outputs: Option<serde_json::Value>,
    pub error: Option<String>,
    pub finished_at: Option<Millis>,
    /// How often a worker had to recover the run after another lost it.
    pub recoveries: u32,
    /// When the sender last reported the run's alert resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Millis>,
}

impl RunState {
    /// Rebuilds a run from its journal. Returns `None` until the run has started (the events
    /// before `RunStarted` record its acceptance, or its cancellation while it was queued).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a RunEvent>) -> Option<RunState> {
        let mut events = events
            .into_iter()
            .skip_while(|event| matches!(event, RunEvent::RunAccepted { .. }));
        let mut state = match events.next()? {
            RunEvent::RunStarted {
                run_id,
                playbook,
                event,
                incident,
                at,
                ..
            } => RunState {
                run_id: run_id.clone(),
                playbook: playbook.clone(),
                event: event.clone(),
                incident: incident.clone(),
                started_at: *at,
                status: RunStatus::Running,
                steps: BTreeMap::new(),
                outputs: None,
                error: None,
                finished_at: None,
                recoveries: 0,
                resolved_at: None,
            },
            _ => return None,
        };
        for event in events {
            state.apply(event);
        }
        Some(state)
    }

    pub fn step(&self, id: &str) -> Option<&StepRecord> {
        self.steps.get(id)
    }

    pub fn step_status(&self, id: &str) -> StepStatus {
        self.steps
            .get(id)
            .map_or(StepStatus::Pending, |record| record.status)
    }

    /// The earliest approval deadline still open: when the run must be looked at again.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.steps
            .values()
            .filter_map(|record| record.approval.as_ref())
            .filter(|approval| approval.decision.is_none())
            .map(|approval| approval.deadline)
            .min()
    }

    /// Applies one event. Unknown combinations are applied as literally as possible: the journal
    /// is the truth and the fold must never refuse it.
    pub fn apply(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunAccepted { .. } | RunEvent::RunStarted { .. } => {}
            RunEvent::RunCancelled { by, reason, at } => {
                self.status = RunStatus::Cancelled;
                self.error = Some(match reason {
                    Some(reason) => format!("cancelled by {by}: {reason}"),
                    None => format!("cancelled by {by}"),
                });
                self.finished_at = Some(*at);
                for record in self.steps.values_mut() {
                    if record.status == StepStatus::WaitingForApproval {
                        record.status = StepStatus::Skipped;
                        record.skip_reason = Some("the run was cancelled".into());
                    }
                }
            }
            RunEvent::RunRecovered { .. } => self.recoveries += 1,
            RunEvent::AlertResolved { at, .. } => self.resolved_at = Some(*at),
            RunEvent::RunResumed { .. } => {
                self.status = RunStatus::Running;
                self.error = None;
                self.outputs = None;
                self.finished_at = None;
                for record in self.steps.values_mut() {
                    if record.status != StepStatus::Succeeded {
                        *record = StepRecord::default();
                    }
                }
            }
            RunEvent::StepStarted {
                step, attempt, at, ..
            } => {
                let record = self.steps.entry(step.clone()).or_default();
                record.status = StepStatus::Running;
                record.attempts = record.attempts.max(*attempt);
                record.started_at.get_or_insert(*at);
            }
            RunEvent::StepRetrying { .. } => {}
            RunEvent::StepSucceeded {
                step,
                output,
                attempts,
                at,
                ..
            } => {
                let record = self.steps.entry(step.clone()).or_default();
                record.status = StepStatus::Succeeded;
                record.output = Some(output.clone());
                record.error = None;
                record.attempts = *attempts;
                record.finished_at = Some(*at);
            }
            RunEvent::StepFailed {
                step,
                error,
                attempts,
                at,
                ..
            } => {
                let record = self.steps.entry(step.clone()).or_default();
                record.status = StepStatus::Failed;
                record.error = Some(error.clone());
                record.attempts = *attempts;
                record.finished_at = Some(*at);
            }
            RunEvent::StepSkipped { step, reason, at } => {
                let record = self.steps.entry(step.clone()).or_default();
                record.status = StepStatus::Skipped;
                record.skip_reason = Some(reason.clone());
                record.finished_at = Some(*at);
            }
            RunEvent::ApprovalRequested {
                step,
                approvers,
                deadline,
                at,
                ..
            } => {
                let record = self.steps.entry(step.clone()).or_default();
                record.status = StepStatus::WaitingForApproval;
                record.approval = Some(ApprovalState {
                    approvers: approvers.clone(),
                    requested_at: *at,
                    deadline: *deadline,
                    decision: None,
                });
                self.status = RunStatus::WaitingForApproval;
            }
            RunEvent::ApprovalDecided { step, decision, .. } => {
                let record = self.steps.entry(step.clone()).or_default();
                if let Some(approval) = record.approval.as_mut() {
                    approval.decision = Some(decision.clone());
                }
                if record.status == StepStatus::WaitingForApproval {
                    record.status = StepStatus::Pending;
                }
                if self.status == RunStatus::WaitingForApproval {
                    self.status = RunStatus::Running;
                }
            }
            RunEvent::RunFinished {
                status,
                outputs,
                error,
                at,
            } => {
                self.status = *status;
                self.outputs = Some(outputs.clone());
                self.error = error.clone();
                self.finished_at = Some(*at);
            }
        }
    }
}
