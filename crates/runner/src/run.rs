//! The engine: drives one run of a checked playbook to completion, or to a pause for approval.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, FuturesUnordered, StreamExt};
use playbook::template::SecretMarkers;
use playbook::{
    ApprovalTimeout, ErrorKind, OnFailure, Playbook, PluginRef, RetryPolicy, Step, Undo,
};
use tracing::{info, instrument, warn};

use crate::builtin;
use crate::error::Error;
use crate::event::{
    Decision, Millis, RunEvent, RunState, RunStatus, StepError, StepRecord, StepStatus,
};
use crate::executor::{Grant, StepCall, StepExecutor};
use crate::journal::Journal;
use crate::observer::{Observer, Unobserved};
use crate::redact::Redactor;
use crate::watchdog::Watchdog;

/// Executes playbooks: one per process is enough, runs are independent.
pub struct Runner {
    executor: Arc<dyn StepExecutor>,
    journal: Arc<dyn Journal>,
    observer: Arc<dyn Observer>,
    clock: Clock,
    watchdog: Watchdog,
}

/// Secret values a run may use, by name, with the redactor that hides them. Never printed.
/// Cheap to clone: a worker takes a playbook's secrets for every run it advances, and building
/// the redactor (each secret in its encodings) once per run was work done again and again.
#[derive(Clone, Default)]
pub struct Secrets(Arc<SecretValues>);

#[derive(Default)]
struct SecretValues {
    values: BTreeMap<String, String>,
    redactor: Redactor,
}

impl Secrets {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        let redactor = Redactor::new(values.values().map(String::as_str));
        Secrets(Arc::new(SecretValues { values, redactor }))
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.values.keys()).finish()
    }
}

impl Runner {
    pub fn new(executor: Arc<dyn StepExecutor>, journal: Arc<dyn Journal>) -> Self {
        Runner {
            executor,
            journal,
            observer: Arc::new(Unobserved),
            clock: Clock::new(),
            watchdog: Watchdog::default(),
        }
    }

    /// The same runner, telling `observer` what it records and calls.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Writes `events` to the run's journal: the one path every run event takes, so the
    /// observer and the watchdog see exactly what the journal holds.
    pub(crate) async fn record(&self, run_id: &str, events: &[RunEvent]) -> Result<(), Error> {
        let started = std::time::Instant::now();
        self.journal.append_all(run_id, events).await?;
        self.observer.recorded(events, started.elapsed());
        self.watchdog.progressed(run_id, self.now());
        Ok(())
    }

    /// The runs this runner is driving, and which of them are stalled.
    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    /// Milliseconds since the epoch, by the runner's clock (which follows tokio's, so tests can
    /// pause and advance it).
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Starts a new run of `playbook` for `event` and drives it as far as it can go.
    #[instrument(skip_all, fields(run_id = %run_id, playbook = %playbook.name))]
    pub async fn start(
        &self,
        playbook: &Playbook,
        run_id: &str,
        event: serde_json::Value,
        secrets: &Secrets,
    ) -> Result<RunState, Error> {
        let now = self.now();
        let values = RunValues::new(playbook, run_id, now, &event);
        let context = values.context(Default::default(), &[]);
        let mut incident = serde_json::Map::new();
        let mut incident_error = None;
        for (field, input) in &playbook.incident {
            match input.render(&context) {
                Ok(value) => {
                    incident.insert(field.clone(), value);
                }
                Err(error) => {
                    incident_error.get_or_insert(format!("incident.{field}: {error}"));
                }
            }
        }
        let started = RunEvent::RunStarted {
            run_id: run_id.to_owned(),
            playbook: playbook.name.clone(),
            playbook_version: playbook.version.clone(),
            event,
            incident,
            at: now,
        };
        let mut state = RunState::from_events([&started]).ok_or_else(|| Error::Resume {
            run_id: run_id.to_owned(),
            reason: "the run could not be started".into(),
        })?;
        info!("Run started.");
        if let Some(error) = incident_error {
            let finished = RunEvent::RunFinished {
                status: RunStatus::Failed,
                outputs: serde_json::Value::Object(Default::default()),
                error: Some(error),
                at: self.now(),
            };
            self.record(run_id, &[started, finished.clone()]).await?;
            state.apply(&finished);
            return Ok(state);
        }
        let values = values.with_incident(&state.incident);
        // `RunStarted` is written with the first step's start, before its plugin is called.
        self.drive(playbook, state, secrets, vec![started], Some(values))
            .await
    }

    /// Continues a run from its recorded state: completed steps are not repeated; a step that was
    /// running when the previous process died runs again with the same idempotency key.
    #[instrument(skip_all, fields(run_id = %state.run_id, playbook = %playbook.name))]
    pub async fn resume(
        &self,
        playbook: &Playbook,
        state: RunState,
        secrets: &Secrets,
    ) -> Result<RunState, Error> {
        if state.playbook != playbook.name {
            return Err(Error::Resume {
                run_id: state.run_id,
                reason: format!(
                    "it belongs to playbook `{}`, not `{}`",
                    state.playbook, playbook.name
                ),
            });
        }
        if state.status.is_terminal() {
            return Ok(state);
        }
        self.drive(playbook, state, secrets, Vec::new(), None).await
    }

    /// Runs the undos that are due: steps whose effect expired, or that someone asked to undo.
    /// Each undo's outcome is written (and sealed) before the next one starts.
    #[instrument(skip_all, fields(run_id = %state.run_id, playbook = %playbook.name))]
    pub async fn undo_due(
        &self,
        playbook: &Playbook,
        state: RunState,
        secrets: &Secrets,
    ) -> Result<RunState, Error> {
        let due = state.undos_due(self.now());
        if due.is_empty() || state.playbook != playbook.name {
            return Ok(state);
        }
        let values = RunValues::new(playbook, &state.run_id, state.started_at, &state.event)
            .with_incident(&state.incident);
        let drive = Drive::new(self, playbook, state, secrets, Vec::new(), values);
        for id in due {
            let declared = playbook
                .step(&id)
                .and_then(|step| Some((step, step.undo.as_ref()?)));
            match declared {
                Some((step, undo)) => drive.undo(step, undo).await?,
                None => drive
                    .emit(RunEvent::UndoFailed {
                        step: id.clone(),
                        error: StepError::new(
                            ErrorKind::InvalidInput,
                            format!(
                                "playbook `{}` as loaded now declares no `undo:` for step `{id}`",
                                playbook.name
                            ),
                        ),
                        attempts: 0,
                        at: self.now(),
                    })
                    .await?,
            }
            drive.save().await?;
        }
        drive.into_state()
    }

    async fn drive(
        &self,
        playbook: &Playbook,
        state: RunState,
        secrets: &Secrets,
        unsaved: Vec<RunEvent>,
        values: Option<RunValues>,
    ) -> Result<RunState, Error> {
        let _watch = self
            .watchdog
            .watch(&state.run_id, self.now(), playbook.longest_quiet());
        let values = values.unwrap_or_else(|| {
            RunValues::new(playbook, &state.run_id, state.started_at, &state.event)
                .with_incident(&state.incident)
        });
        let drive = Drive::new(self, playbook, state, secrets, unsaved, values);
        drive.run().await?;
        drive.save().await?;
        drive.into_state()
    }
}

/// The wall clock as tokio sees it: real in production, virtual under `tokio::time::pause`.
struct Clock {
    system_at_start: Millis,
    instant_at_start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        let system_at_start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        Clock {
            system_at_start,
            instant_at_start: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> Millis {
        self.system_at_start + self.instant_at_start.elapsed().as_millis() as Millis
    }
}

/// How a step ended, as the scheduler needs to know.
enum StepOutcome {
    Succeeded,
    Failed(StepError),
    Skipped,
    /// Waiting for an approval: the step stays parked until a decision or its deadline.
    Waiting,
    /// A shared limit holds its call: parked until the time it says.
    Deferred,
}

/// Work the scheduler keeps in flight.
enum Task {
    Step(usize),
    /// Run the failure handlers of the step at this index, which failed with this error.
    Handle(usize, StepError),
}

/// What finished.
enum Done {
    Step(usize, StepOutcome),
    Handled,
}

/// Why a step's failure fails the run, if it does.
fn failure_reason(step: &Step, error: &StepError) -> Option<String> {
    let fails = match &step.on_failure {
        OnFailure::Fail => true,
        OnFailure::Continue => false,
        OnFailure::Handle { then_continue, .. } => !then_continue,
    };
    fails.then(|| format!("step `{}` failed: {error}", step.id))
}

/// Whether a step can start now.
enum Readiness {
    Done,
    Blocked,
    Parked,
    Skip(String),
    Run,
}

/// The state of one run while it is being driven.
struct Drive<'a> {
    runner: &'a Runner,
    playbook: &'a Playbook,
    /// Fixed for the run; kept apart from `state` so emitting an event takes no extra lock.
    run_id: String,
    state: Mutex<RunState>,
    /// Events applied to `state` but not yet in the journal: written together before the next
    /// plugin call, retry wait or return, so a step costs one journal write, not three.
    unsaved: Mutex<Vec<RunEvent>>,
    /// Held while writing, so concurrent steps' batches reach the journal in order.
    saving: tokio::sync::Mutex<()>,
    /// Failure handlers already started in this drive: each runs at most once.
    handlers_started: Mutex<HashSet<String>>,
    /// Each step as templates see it (`steps.<id>`: status, output, attempts, error), made once:
    /// every context holds all steps, so building them anew made a run's contexts cost the square
    /// of its steps. A step's entry goes with any event about it, all entries with an event
    /// about the whole run ([`Drive::emit`]).
    step_values: Mutex<Vec<Option<minijinja::Value>>>,
    redactor: &'a Redactor,
    /// `secrets` as templates see them: opaque references, never the values.
    secrets: minijinja::Value,
    /// What stands for each secret in rendered inputs, until the call.
    secret_markers: SecretMarkers,
    /// Values of the secrets the playbook declares, for plugin grants and rendered inputs.
    secret_values: BTreeMap<String, String>,
    /// Parts of the template context that do not change during the run.
    values: RunValues,
}

impl<'a> Drive<'a> {
    fn new(
        runner: &'a Runner,
        playbook: &'a Playbook,
        state: RunState,
        secrets: &'a Secrets,
        unsaved: Vec<RunEvent>,
        values: RunValues,
    ) -> Self {
        let granted: BTreeMap<&str, &str> = playbook
            .secrets
            .iter()
            .filter_map(|name| {
                secrets
                    .0
                    .values
                    .get(name)
                    .map(|value| (name.as_str(), value.as_str()))
            })
            .collect();
        // Unguessable per drive, so text in an alert cannot pass for a secret's marker.
        let secret_markers = SecretMarkers::new(format!("{:032x}", rand::random::<u128>()));
        Drive {
            runner,
            playbook,
            redactor: &secrets.0.redactor,
            secrets: secret_markers.context(granted.keys().copied()),
            secret_markers,
            secret_values: granted
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            values,
            run_id: state.run_id.clone(),
            state: Mutex::new(state),
            unsaved: Mutex::new(unsaved),
            saving: tokio::sync::Mutex::new(()),
            handlers_started: Mutex::new(HashSet::new()),
            step_values: Mutex::new(vec![None; playbook.steps.len()]),
        }
    }

    fn into_state(self) -> Result<RunState, Error> {
        self.state
            .into_inner()
            .map_err(|_| Error::Journal("the run state lock is poisoned".into()))
    }

    /// Reads the run state without copying it.
    fn read<R>(&self, read: impl FnOnce(&RunState) -> R) -> Result<R, Error> {
        self.state
            .lock()
            .map(|state| read(&state))
            .map_err(|_| Error::Journal("the run state lock is poisoned".into()))
    }

    /// Applies an event and queues it for the journal. Nothing happens off the record: every
    /// queued event is saved ([`Drive::save`]) before the next plugin call.
    async fn emit(&self, event: RunEvent) -> Result<(), Error> {
        let poisoned = || Error::Journal("the run state lock is poisoned".into());
        self.state.lock().map_err(|_| poisoned())?.apply(&event);
        // After the state changed, so a context built meanwhile from the old state is dropped.
        {
            let mut step_values = self.step_values.lock().map_err(|_| poisoned())?;
            match event.step() {
                Some(id) => {
                    let index = self.playbook.steps.iter().position(|s| s.id.as_str() == id);
                    if let Some(kept) = index.and_then(|i| step_values.get_mut(i)) {
                        *kept = None;
                    }
                }
                None => step_values.fill(None),
            }
        }
        self.unsaved.lock().map_err(|_| poisoned())?.push(event);
        Ok(())
    }

    /// Writes the queued events to the journal, in one batch.
    async fn save(&self) -> Result<(), Error> {
        let _in_order = self.saving.lock().await;
        let events = std::mem::take(
            &mut *self
                .unsaved
                .lock()
                .map_err(|_| Error::Journal("the journal queue lock is poisoned".into()))?,
        );
        if events.is_empty() {
            return Ok(());
        }
        self.runner.record(&self.run_id, &events).await
    }

    async fn run(&self) -> Result<(), Error> {
        // Steps and failure handlers in progress, all polled together. Handlers are never awaited
        // inline: a step left unpolled while it holds the journal's write lock would make every
        // handler wait for it forever.
        let mut in_flight = FuturesUnordered::new();
        let mut running: HashSet<usize> = HashSet::new();
        let mut failure = self.recover_failures().await?;
        loop {
            if failure.is_none() {
                for &index in self.playbook.order() {
                    if running.contains(&index) {
                        continue;
                    }
                    let step = &self.playbook.steps[index];
                    match self.readiness(step)? {
                        Readiness::Done | Readiness::Blocked | Readiness::Parked => {}
                        Readiness::Skip(reason) => {
                            self.emit(RunEvent::StepSkipped {
                                step: step.id.to_string(),
                                reason,
                                at: self.runner.now(),
                            })
                            .await?;
                        }
                        Readiness::Run => {
                            running.insert(index);
                            in_flight.push(self.perform(Task::Step(index)));
                        }
                    }
                }
            }
            let Some(done) = in_flight.next().await else {
                break;
            };
            let Done::Step(index, outcome) = done? else {
                continue;
            };
            running.remove(&index);
            if let StepOutcome::Failed(error) = outcome {
                let step = &self.playbook.steps[index];
                if let Some(reason) = failure_reason(step, &error) {
                    failure.get_or_insert(reason);
                }
                if matches!(step.on_failure, OnFailure::Handle { .. }) {
                    in_flight.push(self.perform(Task::Handle(index, error)));
                }
            }
        }
        self.finish(failure).await
    }

    /// Runs a step, or the failure handlers of a step that failed.
    async fn perform(&self, task: Task) -> Result<Done, Error> {
        match task {
            Task::Step(index) => {
                let outcome = self.run_step(&self.playbook.steps[index], None).await?;
                Ok(Done::Step(index, outcome))
            }
            Task::Handle(index, error) => {
                self.run_handlers(&self.playbook.steps[index], &error)
                    .await?;
                Ok(Done::Handled)
            }
        }
    }

    /// After a crash, failures already on record still decide the run, and their handlers that
    /// had not finished run now (nothing else runs yet).
    async fn recover_failures(&self) -> Result<Option<String>, Error> {
        // Only the failures are read: cloning the whole state (event, inputs, outputs) cost
        // 1% of a worker's CPU, for runs that almost never have one.
        let failed: Vec<(&Step, StepError)> = self.read(|state| {
            self.playbook
                .steps
                .iter()
                .filter_map(|step| {
                    state
                        .step(step.id.as_str())
                        .filter(|r| r.status == StepStatus::Failed)
                        .and_then(|r| r.error.clone())
                        .map(|error| (step, error))
                })
                .collect()
        })?;
        let mut failure = None;
        for (step, error) in failed {
            self.run_handlers(step, &error).await?;
            if let Some(reason) = failure_reason(step, &error) {
                failure.get_or_insert(reason);
            }
        }
        Ok(failure)
    }

    fn readiness(&self, step: &Step) -> Result<Readiness, Error> {
        let now = self.runner.now();
        self.read(|state| Self::readiness_in(state, step, now))
    }

    fn readiness_in(state: &RunState, step: &Step, now: Millis) -> Readiness {
        let record = state.step(step.id.as_str());
        match record.map(|r| r.status) {
            Some(status) if status.is_terminal() => return Readiness::Done,
            Some(StepStatus::Pending)
                if record
                    .and_then(|r| r.deferred_until)
                    .is_some_and(|until| now < until) =>
            {
                return Readiness::Parked;
            }
            Some(StepStatus::WaitingForApproval) => {
                let open = record
                    .and_then(|r| r.approval.as_ref())
                    .filter(|a| a.decision.is_none());
                if let Some(approval) = open
                    && now < approval.deadline
                {
                    return Readiness::Parked;
                }
            }
            _ => {}
        }
        for need in &step.needs {
            match state.step_status(need.as_str()) {
                StepStatus::Succeeded => {}
                StepStatus::Failed => {
                    return Readiness::Skip(format!("it needs `{need}`, which failed"));
                }
                StepStatus::Skipped => {
                    return Readiness::Skip(format!("it needs `{need}`, which was skipped"));
                }
                _ => return Readiness::Blocked,
            }
        }
        Readiness::Run
    }

    /// The template context: trigger, vars, run, incident, the results of steps so far, and extras.
    fn context(&self, extra: &[(&str, minijinja::Value)]) -> Result<minijinja::Value, Error> {
        let mut step_values = self
            .step_values
            .lock()
            .map_err(|_| Error::Journal("the step values lock is poisoned".into()))?;
        let steps = self.read(|state| {
            self.playbook
                .steps
                .iter()
                .zip(step_values.iter_mut())
                .map(|(step, kept)| {
                    let id = step.id.as_str();
                    let value = kept.get_or_insert_with(|| step_value(state.step(id)));
                    (id, value.clone())
                })
                .collect::<BTreeMap<&str, minijinja::Value>>()
        })?;
        Ok(self.values.context(minijinja::Value::from(steps), extra))
    }

    /// Runs the failure handlers `failed` names, in order. A handler runs at most once per run,
    /// even when several failing steps name it at once.
    async fn run_handlers(&self, failed: &Step, error: &StepError) -> Result<(), Error> {
        let OnFailure::Handle { handlers, .. } = &failed.on_failure else {
            return Ok(());
        };
        let error_context = minijinja::Value::from_serialize(serde_json::json!({
            "step": failed.id.as_str(),
            "kind": error.kind,
            "message": error.message,
        }));
        for id in handlers {
            let Some(handler) = self.playbook.handler(id.as_str()) else {
                continue;
            };
            let status = self.read(|state| state.step_status(id.as_str()))?;
            let claimed = self
                .handlers_started
                .lock()
                .map_err(|_| Error::Journal("the handler lock is poisoned".into()))?
                .insert(id.as_str().to_owned());
            if status.is_terminal() || !claimed {
                continue;
            }
            if let StepOutcome::Failed(handler_error) =
                self.run_step(handler, Some(error_context.clone())).await?
            {
                warn!(handler = %id, error = %handler_error, "Failure handler failed.");
            }
        }
        Ok(())
    }

    async fn finish(&self, failure: Option<String>) -> Result<(), Error> {
        let (unfinished, waiting, held) = self.read(|state| {
            let unfinished: Vec<&Step> = self
                .playbook
                .steps
                .iter()
                .filter(|step| !state.step_status(step.id.as_str()).is_terminal())
                .collect();
            let waiting = unfinished
                .iter()
                .any(|step| state.step_status(step.id.as_str()) == StepStatus::WaitingForApproval);
            let held = state
                .steps
                .values()
                .any(|record| !record.status.is_terminal() && record.deferred_until.is_some());
            (unfinished, waiting, held)
        })?;
        let now = self.runner.now();
        if let Some(reason) = failure {
            for step in unfinished {
                self.emit(RunEvent::StepSkipped {
                    step: step.id.to_string(),
                    reason: "not started: the run had already failed".into(),
                    at: now,
                })
                .await?;
            }
            let outputs = self.render_outputs().unwrap_or_default();
            return self
                .emit(RunEvent::RunFinished {
                    status: RunStatus::Failed,
                    outputs: serde_json::Value::Object(outputs),
                    error: Some(reason),
                    at: now,
                })
                .await;
        }
        if waiting {
            info!("Run waits for approval.");
            return Ok(());
        }
        if held {
            info!("Run waits for a shared limit.");
            return Ok(());
        }
        let (status, outputs, error) = match self.render_outputs() {
            Ok(outputs) => (RunStatus::Succeeded, outputs, None),
            Err(error) => (RunStatus::Failed, Default::default(), Some(error)),
        };
        info!(?status, "Run finished.");
        self.emit(RunEvent::RunFinished {
            status,
            outputs: serde_json::Value::Object(outputs),
            error,
            at: now,
        })
        .await
    }

    fn render_outputs(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let context = self.context(&[]).map_err(|e| e.to_string())?;
        self.playbook
            .outputs
            .iter()
            .map(|(name, input)| {
                input
                    .render(&context)
                    .map(|value| (name.clone(), self.redactor.redact(&value)))
                    .map_err(|error| format!("output `{name}`: {error}"))
            })
            .collect()
    }

    /// Runs one step (or handler): condition, approval, inputs, attempts.
    #[instrument(skip_all, fields(step = %step.id))]
    async fn run_step(
        &self,
        step: &Step,
        error_context: Option<minijinja::Value>,
    ) -> Result<StepOutcome, Error> {
        let started = self.runner.now();
        let mut extra = Vec::new();
        if let Some(error) = error_context {
            extra.push(("error", error));
        }
        let context = self.context(&extra)?;
        if let Some(condition) = &step.condition {
            match condition.evaluate(&context) {
                Ok(true) => {}
                Ok(false) => return self.skip(step, "its `if` condition is false".into()).await,
                Err(error) => {
                    let error = StepError::new(ErrorKind::InvalidInput, format!("`if`: {error}"));
                    return self.fail(step, error, 0, started).await;
                }
            }
        }
        if let Some(approval) = &step.approval {
            let record =
                self.read(|state| state.step(step.id.as_str()).cloned().unwrap_or_default())?;
            let decision = match record.approval {
                None => {
                    let message = approval
                        .message
                        .as_ref()
                        .and_then(|m| m.render(&context).ok())
                        .map(|m| match m {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        });
                    self.emit(RunEvent::ApprovalRequested {
                        step: step.id.to_string(),
                        approvers: approval.approvers.clone(),
                        message,
                        deadline: started + approval.timeout.as_millis() as Millis,
                        at: started,
                    })
                    .await?;
                    return Ok(StepOutcome::Waiting);
                }
                Some(pending) => match pending.decision {
                    Some(decision) => decision,
                    None if started < pending.deadline => return Ok(StepOutcome::Waiting),
                    None => {
                        self.emit(RunEvent::ApprovalDecided {
                            step: step.id.to_string(),
                            decision: Decision::TimedOut,
                            at: started,
                        })
                        .await?;
                        Decision::TimedOut
                    }
                },
            };
            match (decision, approval.on_timeout) {
                (Decision::Approved { .. }, _) | (Decision::TimedOut, ApprovalTimeout::Approve) => {
                }
                (Decision::Denied { by, .. }, _) => {
                    return self
                        .skip(step, format!("approval was denied by {by}"))
                        .await;
                }
                (Decision::TimedOut, ApprovalTimeout::Deny) => {
                    return self.skip(step, "nobody approved it in time".into()).await;
                }
                (Decision::TimedOut, ApprovalTimeout::Fail) => {
                    let error = StepError::new(ErrorKind::Timeout, "nobody approved it in time");
                    return self.fail(step, error, 0, started).await;
                }
            }
        }

        let with_secrets = merged(&context, [("secrets", self.secrets.clone())]);
        // Attempts already made by a process that crashed during this step keep their numbers.
        let earlier = self.read(|state| state.step(step.id.as_str()).map_or(0, |r| r.attempts))?;
        let result = match &step.foreach {
            None => match step.with.render(&with_secrets) {
                Ok(input) => self.attempts(Act::Do(step), input, None, earlier).await?,
                Err(error) => Err((
                    StepError::new(ErrorKind::InvalidInput, format!("`with`: {error}")),
                    0,
                )),
            },
            Some(foreach) => self.each(step, foreach, &context, earlier).await?,
        };
        match result {
            Ok((output, attempts)) => {
                let finished = self.runner.now();
                self.emit(RunEvent::StepSucceeded {
                    step: step.id.to_string(),
                    output: self.redactor.redact(&output),
                    attempts,
                    duration_ms: finished.saturating_sub(started),
                    at: finished,
                })
                .await?;
                self.schedule_expiry(step, finished).await?;
                Ok(StepOutcome::Succeeded)
            }
            // `attempts` recorded the hold; the step is called again when it ends.
            Err((error, _)) if error.deferred_until.is_some() => Ok(StepOutcome::Deferred),
            Err((error, attempts)) => self.fail(step, error, attempts, started).await,
        }
    }

    /// Runs a `foreach` step: every item, `concurrency` at a time; the output is the list of outputs.
    async fn each(
        &self,
        step: &Step,
        foreach: &playbook::Foreach,
        context: &minijinja::Value,
        earlier: u32,
    ) -> Result<Result<(serde_json::Value, u32), (StepError, u32)>, Error> {
        let items = match foreach.items.render(context) {
            Ok(serde_json::Value::Array(items)) => items,
            Ok(other) => {
                let error = StepError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "`foreach` must yield a list, but it yielded {}",
                        json_kind(&other)
                    ),
                );
                return Ok(Err((error, 0)));
            }
            Err(error) => {
                let error = StepError::new(ErrorKind::InvalidInput, format!("`foreach`: {error}"));
                return Ok(Err((error, 0)));
            }
        };
        let results: Vec<_> = stream::iter(items.into_iter().enumerate())
            .map(|(index, item)| async move {
                let item_context = merged(
                    context,
                    [
                        ("secrets", self.secrets.clone()),
                        (
                            foreach.var.as_str(),
                            minijinja::Value::from_serialize(&item),
                        ),
                    ],
                );
                match step.with.render(&item_context) {
                    Ok(input) => {
                        self.attempts(Act::Do(step), input, Some(index), earlier)
                            .await
                    }
                    Err(error) => Ok(Err((
                        StepError::new(
                            ErrorKind::InvalidInput,
                            format!("`with` for item {index}: {error}"),
                        ),
                        0,
                    ))),
                }
            })
            .buffered(foreach.concurrency.max(1))
            .collect()
            .await;
        let mut outputs = Vec::with_capacity(results.len());
        let mut most_attempts = 0;
        for (index, result) in results.into_iter().enumerate() {
            match result? {
                Ok((output, attempts)) => {
                    most_attempts = most_attempts.max(attempts);
                    outputs.push(output);
                }
                Err((mut error, attempts)) => {
                    error.message = format!("item {index}: {}", error.message);
                    return Ok(Err((error, most_attempts.max(attempts))));
                }
            }
        }
        Ok(Ok((serde_json::Value::Array(outputs), most_attempts)))
    }

    /// Calls the plugin until it succeeds, fails for good, or runs out of attempts.
    async fn attempts(
        &self,
        act: Act<'_>,
        input: serde_json::Value,
        item: Option<usize>,
        earlier: u32,
    ) -> Result<Result<(serde_json::Value, u32), (StepError, u32)>, Error> {
        let run_id = &self.run_id;
        let step_id = act.step().id.as_str();
        let idempotency_key = match (act, item) {
            (Act::Undo(..), _) => format!("{run_id}:{step_id}:undo"),
            (Act::Do(_), item) => idempotency_key(run_id, step_id, item),
        };
        let (uses, timeout, retry) = act.call();
        // The plugin gets the secrets' values where the template put their markers; the record
        // gets `[REDACTED]` there.
        let redacted_input = self.redactor.redact(&self.secret_markers.conceal(&input));
        let input = self.secret_markers.reveal(&input, &self.secret_values);
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = earlier + tries;
            let step = step_id.to_owned();
            let at = self.runner.now();
            let input_record = redacted_input.clone();
            self.emit(match act {
                Act::Do(_) => RunEvent::StepStarted {
                    step,
                    attempt,
                    item,
                    input: input_record,
                    at,
                },
                Act::Undo(..) => RunEvent::UndoStarted {
                    step,
                    attempt,
                    input: input_record,
                    at,
                },
            })
            .await?;
            let call = StepCall {
                run_id: run_id.clone(),
                step_id: step_id.to_owned(),
                uses: uses.clone(),
                input: input.clone(),
                attempt,
                item,
                idempotency_key: idempotency_key.clone(),
                timeout,
                grant: self.grant(&uses.plugin),
            };
            let built_in = if self.runner.executor.rehearses() {
                None
            } else {
                builtin::call(&call)
            };
            // On the record before anything leaves the process. A built-in answer does nothing
            // outside it: its start goes with the next write, and a crash before that only
            // makes it answer again.
            if built_in.is_none() {
                self.save().await?;
            }
            let called = std::time::Instant::now();
            let result = match built_in {
                Some(answer) => answer,
                None => {
                    match tokio::time::timeout(timeout, self.runner.executor.execute(call)).await {
                        Ok(result) => result,
                        Err(_) => Err(StepError::new(
                            ErrorKind::Timeout,
                            format!("no answer within {}", humantime::format_duration(timeout)),
                        )),
                    }
                }
            };
            self.runner
                .observer
                .called(uses, result.as_ref().map(drop), called.elapsed());
            let mut error = match result {
                Ok(output) => return Ok(Ok((output, attempt))),
                Err(error) => error,
            };
            if let Some(until) = error.deferred_until {
                // A whole step parks, holding no worker; an item of a `foreach` or an undo waits
                // here, since its siblings or its run are in hand. Neither counts as a try.
                if matches!(act, Act::Do(_)) && item.is_none() {
                    self.emit(RunEvent::StepDeferred {
                        step: step_id.to_owned(),
                        until,
                        reason: error.message.clone(),
                        at: self.runner.now(),
                    })
                    .await?;
                    self.save().await?;
                    return Ok(Err((error, attempt)));
                }
                tries -= 1;
                let wait = until.saturating_sub(self.runner.now());
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            error.message = self.redactor.redact_str(&error.message);
            if tries >= retry.max_attempts || !retry.retry_on.contains(&error.kind) {
                return Ok(Err((error, attempt)));
            }
            let delay = backoff(retry, tries + 1, &error);
            let delay_ms = delay.as_millis() as u64;
            warn!(attempt, kind = %error.kind, delay_ms, "Attempt failed; retrying.");
            let step = step_id.to_owned();
            let at = self.runner.now();
            self.emit(match act {
                Act::Do(_) => RunEvent::StepRetrying {
                    step,
                    attempt,
                    item,
                    error,
                    delay_ms,
                    at,
                },
                Act::Undo(..) => RunEvent::UndoRetrying {
                    step,
                    attempt,
                    error,
                    delay_ms,
                    at,
                },
            })
            .await?;
            self.save().await?;
            tokio::time::sleep(delay).await;
        }
    }

    /// Schedules the undo of a step that succeeded, when its effect expires. An expiry that
    /// cannot be worked out is recorded as a failed undo, so it shows and people undo by hand.
    async fn schedule_expiry(&self, step: &Step, finished: Millis) -> Result<(), Error> {
        let Some(expires) = &step.expires else {
            return Ok(());
        };
        let lasts = self
            .undo_context(step)
            .and_then(|context| expires.render(&context).map_err(|e| e.to_string()))
            .and_then(|value| expiry(&value));
        match lasts {
            Ok(lasts) => {
                self.emit(RunEvent::UndoScheduled {
                    step: step.id.to_string(),
                    due: finished + lasts.as_millis() as Millis,
                    by: None,
                    at: finished,
                })
                .await
            }
            Err(reason) => {
                warn!(%reason, "The step's expiry could not be worked out.");
                self.emit(RunEvent::UndoScheduled {
                    step: step.id.to_string(),
                    due: finished,
                    by: None,
                    at: finished,
                })
                .await?;
                self.emit(RunEvent::UndoFailed {
                    step: step.id.to_string(),
                    error: StepError::new(ErrorKind::InvalidInput, format!("`expires`: {reason}")),
                    attempts: 0,
                    at: finished,
                })
                .await
            }
        }
    }

    /// What an undo's templates read: the step's context, and its recorded `input` and `output`.
    fn undo_context(&self, step: &Step) -> Result<minijinja::Value, String> {
        let (input, output) = self
            .read(|state| {
                let record = state.step(step.id.as_str());
                (
                    record.and_then(|r| r.input.clone()),
                    record.and_then(|r| r.output.clone()),
                )
            })
            .map_err(|e| e.to_string())?;
        self.context(&[
            ("input", minijinja::Value::from_serialize(&input)),
            ("output", minijinja::Value::from_serialize(&output)),
        ])
        .map_err(|e| e.to_string())
    }

    /// Undoes one step: renders the undo's inputs and calls its plugin with its retry policy.
    async fn undo(&self, step: &Step, undo: &Undo) -> Result<(), Error> {
        let earlier = self.read(|state| {
            state
                .step(step.id.as_str())
                .and_then(|r| r.undo.as_ref())
                .map_or(0, |u| u.attempts)
        })?;
        let rendered = self.undo_context(step).and_then(|context| {
            let with_secrets = merged(&context, [("secrets", self.secrets.clone())]);
            undo.with.render(&with_secrets).map_err(|e| e.to_string())
        });
        let result = match rendered {
            Ok(input) => {
                self.attempts(Act::Undo(step, undo), input, None, earlier)
                    .await?
            }
            Err(error) => Err((
                StepError::new(ErrorKind::InvalidInput, format!("undo `with`: {error}")),
                earlier,
            )),
        };
        let at = self.runner.now();
        let step_id = step.id.to_string();
        match result {
            Ok((output, attempts)) => {
                info!(step = %step.id, "Step undone.");
                self.emit(RunEvent::UndoSucceeded {
                    step: step_id,
                    output: self.redactor.redact(&output),
                    attempts,
                    at,
                })
                .await
            }
            Err((error, attempts)) => {
                warn!(step = %step.id, %error, "Undo failed.");
                self.emit(RunEvent::UndoFailed {
                    step: step_id,
                    error,
                    attempts,
                    at,
                })
                .await
            }
        }
    }

    /// What the playbook grants `plugin`: its hosts, and the values of its secrets.
    fn grant(&self, plugin: &str) -> Grant {
        let Some(grant) = self.playbook.plugins.get(plugin) else {
            return Grant::default();
        };
        Grant {
            hosts: grant.hosts.clone(),
            secrets: grant
                .secrets
                .iter()
                .filter_map(|name| {
                    self.secret_values
                        .get(name)
                        .map(|v| (name.clone(), v.clone()))
                })
                .collect(),
        }
    }

    async fn skip(&self, step: &Step, reason: String) -> Result<StepOutcome, Error> {
        self.emit(RunEvent::StepSkipped {
            step: step.id.to_string(),
            reason,
            at: self.runner.now(),
        })
        .await?;
        Ok(StepOutcome::Skipped)
    }

    async fn fail(
        &self,
        step: &Step,
        error: StepError,
        attempts: u32,
        started: Millis,
    ) -> Result<StepOutcome, Error> {
        let finished = self.runner.now();
        warn!(error = %error, "Step failed.");
        self.emit(RunEvent::StepFailed {
            step: step.id.to_string(),
            error: error.clone(),
            attempts,
            duration_ms: finished.saturating_sub(started),
            at: finished,
        })
        .await?;
        Ok(StepOutcome::Failed(error))
    }
}

/// The idempotency key of a step's calls (of one item's, for `foreach`): the same for every
/// attempt, also after a crash, so a plugin (or a sub-playbook) recognises a call made again.
pub fn idempotency_key(run_id: &str, step: &str, item: Option<usize>) -> String {
    match item {
        Some(index) => format!("{run_id}:{step}:{index}"),
        None => format!("{run_id}:{step}"),
    }
}

/// A plugin call the runner makes: a step's (or one of its items'), or a step's undo.
#[derive(Clone, Copy)]
enum Act<'p> {
    Do(&'p Step),
    Undo(&'p Step, &'p Undo),
}

impl<'p> Act<'p> {
    fn step(self) -> &'p Step {
        match self {
            Act::Do(step) | Act::Undo(step, _) => step,
        }
    }

    /// What it calls, the deadline of one attempt, and its retry policy.
    fn call(self) -> (&'p PluginRef, Duration, &'p RetryPolicy) {
        match self {
            Act::Do(step) => (&step.uses, step.timeout, &step.retry),
            Act::Undo(_, undo) => (&undo.uses, undo.timeout, &undo.retry),
        }
    }
}

/// A step as templates see it: its status, output, attempts and error (`steps.<id>`).
fn step_value(record: Option<&StepRecord>) -> minijinja::Value {
    minijinja::context! {
        status => record.map_or(StepStatus::Pending, |r| r.status).as_str(),
        output => record
            .and_then(|r| r.output.as_ref())
            .map_or(minijinja::Value::from(()), minijinja::Value::from_serialize),
        attempts => record.map_or(0, |r| r.attempts),
        error => record.and_then(|r| r.error.as_ref()).map(|e| minijinja::context! {
            kind => e.kind.as_str(),
            message => e.message.as_str(),
        }),
    }
}

/// How long a step's effect lasts, from its rendered `expires`: a duration's text or seconds.
fn expiry(value: &serde_json::Value) -> Result<Duration, String> {
    let lasts = match value {
        serde_json::Value::String(text) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("`{text}` is not a duration ({e})"))?,
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{n} is not a whole number of seconds"))?,
        other => return Err(format!("it rendered {}, not a duration", json_kind(other))),
    };
    if lasts > playbook::MAX_EXPIRY {
        return Err(format!(
            "{} is longer than the maximum of {}",
            humantime::format_duration(lasts),
            humantime::format_duration(playbook::MAX_EXPIRY)
        ));
    }
    Ok(lasts)
}

/// The delay before attempt `next_attempt`: the policy's exponential delay, jittered ("equal
/// jitter": between half and all of it) so retries of many runs spread out, then raised to the
/// upstream's `retry-after` when it gave one — jitter never makes us call back early — within the
/// policy's maximum.
fn backoff(policy: &RetryPolicy, next_attempt: u32, error: &StepError) -> Duration {
    let mut delay = policy.delay_before(next_attempt);
    if policy.jitter {
        let half = delay / 2;
        delay = half + half.mul_f64(rand::random::<f64>());
    }
    if let Some(retry_after) = error.retry_after_ms {
        delay = delay
            .max(Duration::from_millis(retry_after))
            .min(policy.max_delay);
    }
    delay
}

/// `base` with `values` added (or replacing same-named ones), without rebuilding `base`.
fn merged<'k>(
    base: &minijinja::Value,
    values: impl IntoIterator<Item = (&'k str, minijinja::Value)>,
) -> minijinja::Value {
    let values: BTreeMap<&str, minijinja::Value> = values.into_iter().collect();
    minijinja::context! { ..minijinja::Value::from(values), ..base.clone() }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// The parts of a run's template context that do not change while it runs: the event, the
/// playbook's `vars`, the run itself and its `incident`, each converted once.
struct RunValues {
    trigger: minijinja::Value,
    vars: minijinja::Value,
    run: minijinja::Value,
    incident: minijinja::Value,
}

impl RunValues {
    fn new(
        playbook: &Playbook,
        run_id: &str,
        started_at: Millis,
        event: &serde_json::Value,
    ) -> Self {
        RunValues {
            trigger: minijinja::Value::from_serialize(event),
            vars: minijinja::Value::from_serialize(&playbook.vars),
            run: minijinja::Value::from_serialize(serde_json::json!({
                "id": run_id, "playbook": playbook.name, "started_at": started_at,
            })),
            incident: minijinja::Value::UNDEFINED,
        }
    }

    fn with_incident(self, incident: &serde_json::Map<String, serde_json::Value>) -> Self {
        RunValues {
            incident: minijinja::Value::from_serialize(incident),
            ..self
        }
    }

    /// The template context: these values, the results of steps so far, and `extra`.
    fn context(
        &self,
        steps: minijinja::Value,
        extra: &[(&str, minijinja::Value)],
    ) -> minijinja::Value {
        let base = minijinja::context! {
            trigger => self.trigger.clone(),
            vars => self.vars.clone(),
            run => self.run.clone(),
            incident => self.incident.clone(),
            steps => steps,
        };
        let extra: BTreeMap<&str, minijinja::Value> = extra.iter().cloned().collect();
        minijinja::context! { ..minijinja::Value::from(extra), ..base }
    }
}
