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
    /// A step's effect is to be undone at `due`: it expires (no `by`), or someone asked (`by`,
    /// due at once). Recorded also after the run ended.
    UndoScheduled {
        step: String,
        due: Millis,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        at: Millis,
    },
    UndoStarted {
        step: String,
        attempt: u32,
        /// The undo's rendered input, with secrets redacted.
        input: serde_json::Value,
        at: Millis,
    },
    UndoRetrying {
        step: String,
        attempt: u32,
        error: StepError,
        delay_ms: u64,
        at: Millis,
    },
    UndoSucceeded {
        step: String,
        output: serde_json::Value,
        attempts: u32,
        at: Millis,
    },
    /// A shared limit held the step's call (see [`StepError::deferred`]): it is parked, holding
    /// no worker, and called again at `until`.
    StepDeferred {
        step: String,
        until: Millis,
        reason: String,
        at: Millis,
    },
    /// The undo failed for good (after its retries): the effect is still in place.
    UndoFailed {
        step: String,
        error: StepError,
        attempts: u32,
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
            | RunEvent::RunFinished { at, .. }
            | RunEvent::UndoScheduled { at, .. }
            | RunEvent::UndoStarted { at, .. }
            | RunEvent::UndoRetrying { at, .. }
            | RunEvent::UndoSucceeded { at, .. }
            | RunEvent::UndoFailed { at, .. }
            | RunEvent::StepDeferred { at, .. } => *at,
        }
    }

    /// Whether the store seals the run's journal with this event: it ends the run, or ends an
    /// undo (which may come after the run ended, and must not be cut off unnoticed either).
    pub fn seals(&self) -> bool {
        self.is_terminal()
            || matches!(
                self,
                RunEvent::UndoSucceeded { .. } | RunEvent::UndoFailed { .. }
            )
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
            | RunEvent::ApprovalDecided { step, .. }
            | RunEvent::UndoScheduled { step, .. }
            | RunEvent::UndoStarted { step, .. }
            | RunEvent::UndoRetrying { step, .. }
            | RunEvent::UndoSucceeded { step, .. }
            | RunEvent::UndoFailed { step, .. }
            | RunEvent::StepDeferred { step, .. } => Some(step),
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
            RunEvent::UndoScheduled { by, .. } => by.as_deref(),
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
            RunEvent::UndoScheduled { step, by, .. } => match by {
                Some(by) => format!("undo of step `{step}` asked by {by}"),
                None => format!("undo of step `{step}` scheduled for when it expires"),
            },
            RunEvent::UndoStarted { step, attempt, .. } => {
                format!("undo of step `{step}` started (attempt {attempt})")
            }
            RunEvent::UndoRetrying {
                step,
                attempt,
                error,
                delay_ms,
                ..
            } => format!(
                "undo of step `{step}` attempt {attempt} failed ({error}); retrying in {delay_ms} ms"
            ),
            RunEvent::UndoSucceeded { step, attempts, .. } => {
                format!("step `{step}` undone after {attempts} attempt(s)")
            }
            RunEvent::UndoFailed {
                step,
                error,
                attempts,
                ..
            } => format!("undo of step `{step}` failed after {attempts} attempt(s): {error}"),
            RunEvent::StepDeferred { step, reason, .. } => {
                format!("step `{step}` held: {reason}")
            }
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
    /// The call was not made: a limit shared by every worker (a rate, a concurrency, an open
    /// circuit breaker) holds it until then. The runner parks the step instead of failing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<Millis>,
}

impl StepError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StepError {
            kind,
            message: message.into(),
            retry_after_ms: None,
            deferred_until: None,
        }
    }

    /// A call a shared limit holds until `until`, for `reason`.
    pub fn deferred(until: Millis, reason: impl Into<String>) -> Self {
        StepError {
            deferred_until: Some(until),
            ..StepError::new(ErrorKind::RateLimited, reason)
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
    /// The input of its last attempt as recorded (secrets redacted): what an undo reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Its undo, once one was scheduled or asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoState>,
    /// While a shared limit holds its call: when it is called again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<Millis>,
}

/// Where a step's undo stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoState {
    pub status: UndoStatus,
    /// When it is due (or was, once it ran).
    pub due: Millis,
    /// Who asked for it; nobody when the step's effect expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UndoStatus {
    Scheduled,
    Running,
    Succeeded,
    Failed,
}

impl UndoStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UndoStatus::Scheduled => "scheduled",
            UndoStatus::Running => "running",
            UndoStatus::Succeeded => "succeeded",
            UndoStatus::Failed => "failed",
        }
    }

    /// Whether the undo still has to run.
    pub fn is_open(self) -> bool {
        matches!(self, UndoStatus::Scheduled | UndoStatus::Running)
    }
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
            input: None,
            undo: None,
            deferred_until: None,
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

    /// A step's undo, made scheduled if nothing was on record (a journal cut short before its
    /// `UndoScheduled` still folds).
    fn undo_mut(&mut self, step: &str) -> Option<&mut UndoState> {
        let record = self.steps.get_mut(step)?;
        Some(record.undo.get_or_insert(UndoState {
            status: UndoStatus::Scheduled,
            due: 0,
            requested_by: None,
            attempts: 0,
            output: None,
            error: None,
            finished_at: None,
        }))
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

    /// When the run must be looked at again: its earliest open approval deadline or undo.
    pub fn next_wakeup(&self) -> Option<Millis> {
        let undo = self
            .steps
            .values()
            .filter_map(|record| record.undo.as_ref())
            .filter(|undo| undo.status.is_open())
            .map(|undo| undo.due)
            .min();
        let deadline = (!self.status.is_terminal())
            .then(|| self.next_deadline())
            .flatten();
        let deferred = self
            .steps
            .values()
            .filter(|record| !record.status.is_terminal())
            .filter_map(|record| record.deferred_until)
            .min()
            .filter(|_| !self.status.is_terminal());
        undo.into_iter().chain(deadline).chain(deferred).min()
    }

    /// The steps whose undo is due at `now` (or was interrupted), earliest first.
    pub fn undos_due(&self, now: Millis) -> Vec<String> {
        let mut due: Vec<(Millis, &String)> = self
            .steps
            .iter()
            .filter_map(|(id, record)| {
                let undo = record.undo.as_ref()?;
                (undo.status.is_open() && undo.due <= now).then_some((undo.due, id))
            })
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id.clone()).collect()
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
                step,
                attempt,
                input,
                at,
                ..
            } => {
                let record = self.steps.entry(step.clone()).or_default();
                record.status = StepStatus::Running;
                record.attempts = record.attempts.max(*attempt);
                record.started_at.get_or_insert(*at);
                record.input = Some(input.clone());
                record.deferred_until = None;
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
            RunEvent::UndoScheduled { step, due, by, .. } => {
                let record = self.steps.entry(step.clone()).or_default();
                match &mut record.undo {
                    Some(undo) if undo.status == UndoStatus::Succeeded => {}
                    // Asked again after it failed: it runs again, with its attempts counted on.
                    Some(undo) if undo.status == UndoStatus::Failed => {
                        undo.status = UndoStatus::Scheduled;
                        undo.due = *due;
                        undo.requested_by = by.clone();
                        undo.error = None;
                        undo.finished_at = None;
                    }
                    Some(undo) => {
                        undo.due = undo.due.min(*due);
                        if by.is_some() {
                            undo.requested_by = by.clone();
                        }
                    }
                    None => {
                        record.undo = Some(UndoState {
                            status: UndoStatus::Scheduled,
                            due: *due,
                            requested_by: by.clone(),
                            attempts: 0,
                            output: None,
                            error: None,
                            finished_at: None,
                        })
                    }
                }
            }
            RunEvent::StepDeferred { step, until, .. } => {
                let record = self.steps.entry(step.clone()).or_default();
                record.status = StepStatus::Pending;
                record.deferred_until = Some(*until);
            }
            RunEvent::UndoStarted { step, attempt, .. } => {
                if let Some(undo) = self.undo_mut(step) {
                    undo.status = UndoStatus::Running;
                    undo.attempts = undo.attempts.max(*attempt);
                }
            }
            RunEvent::UndoRetrying { .. } => {}
            RunEvent::UndoSucceeded {
                step,
                output,
                attempts,
                at,
            } => {
                if let Some(undo) = self.undo_mut(step) {
                    undo.status = UndoStatus::Succeeded;
                    undo.output = Some(output.clone());
                    undo.attempts = *attempts;
                    undo.finished_at = Some(*at);
                }
            }
            RunEvent::UndoFailed {
                step,
                error,
                attempts,
                at,
            } => {
                if let Some(undo) = self.undo_mut(step) {
                    undo.status = UndoStatus::Failed;
                    undo.error = Some(error.clone());
                    undo.attempts = *attempts;
                    undo.finished_at = Some(*at);
                }
            }
        }
    }
}
