//! Every way a run changes, besides running its steps: it is accepted, advanced (started,
//! resumed, or recovered after its worker was lost), given up on, cancelled, decided at an
//! approval gate, or resumed after it failed. Each is a [`Runner`] operation that checks the run's
//! state and records its event through the runner's one journal path, stamped by its one clock.
//! Whoever calls them (the server) holds the run's lock and reads its journal; it writes no event
//! itself.

use playbook::{Playbook, Step};
use sha2::Digest as _;
use tracing::{info, warn};

use crate::error::Error;
use crate::event::{Decision, RunEvent, RunState, RunStatus, StepStatus, UndoStatus};
use crate::run::{Runner, Secrets};

/// What a run is accepted with: its delivery and what it will run.
#[derive(Debug, Clone, Copy)]
pub struct Acceptance<'a> {
    pub trigger: &'a str,
    /// The authentication profile that verified the delivery, or `public`.
    pub actor: &'a str,
    pub delivery_id: Option<&'a str>,
    pub playbook: &'a str,
    pub event: &'a serde_json::Value,
}

/// Whether a cancelled run had started: one that had not must also leave the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    Started,
    Queued,
}

/// SHA-256 (hex) of an event as a run record stores it (its JSON text).
pub fn event_digest(event: &serde_json::Value) -> String {
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(event.to_string().as_bytes()))
}

impl Runner {
    /// A run's first record, which the store writes with the run itself. It carries the
    /// playbook and the digest of the event, so the run record's columns are under the chain.
    pub fn accepted(&self, run: Acceptance<'_>) -> RunEvent {
        RunEvent::RunAccepted {
            trigger: run.trigger.to_owned(),
            actor: run.actor.to_owned(),
            delivery_id: run.delivery_id.map(str::to_owned),
            playbook: Some(run.playbook.to_owned()),
            event_sha256: Some(event_digest(run.event)),
            at: self.now(),
        }
    }

    /// Takes a run as far as it goes: starts it when only its acceptance is on record, else
    /// resumes it from its journal, first recording that it was recovered when `deliveries`
    /// says an earlier worker lost it.
    pub async fn advance(
        &self,
        playbook: &Playbook,
        run_id: &str,
        event: &serde_json::Value,
        events: &[RunEvent],
        secrets: &Secrets,
        deliveries: u32,
    ) -> Result<RunState, Error> {
        let state = match RunState::from_events(events) {
            None => self.start(playbook, run_id, event.clone(), secrets).await?,
            Some(mut state) if deliveries > 1 && !state.status.is_terminal() => {
                let recovered = RunEvent::RunRecovered {
                    deliveries,
                    at: self.now(),
                };
                self.record(run_id, std::slice::from_ref(&recovered))
                    .await?;
                state.apply(&recovered);
                info!(run_id, deliveries, "Recovering a run its worker lost.");
                self.resume(playbook, state, secrets).await?
            }
            Some(state) => self.resume(playbook, state, secrets).await?,
        };
        self.undo_due(playbook, state, secrets).await
    }

    /// Asks for a step's effect to be undone now (`step`), or every effect the run still holds
    /// (its steps with `undo:` that succeeded and were not undone); the undos run when the run is
    /// next advanced. Returns the steps.
    pub async fn request_undo(
        &self,
        playbook: &Playbook,
        state: &mut RunState,
        step: Option<&str>,
        by: &str,
    ) -> Result<Vec<String>, Error> {
        let holds = |step: &Step| -> Result<(), String> {
            let id = step.id.as_str();
            if step.undo.is_none() {
                return Err(format!("step `{id}` declares no `undo:`"));
            }
            let record = state.step(id);
            let status = record.map_or(StepStatus::Pending, |r| r.status);
            if status != StepStatus::Succeeded {
                return Err(format!(
                    "step `{id}` is {}: only a step that succeeded has an effect to undo",
                    status.as_str()
                ));
            }
            match record.and_then(|r| r.undo.as_ref()).map(|u| u.status) {
                Some(UndoStatus::Succeeded) => Err(format!("step `{id}` was already undone")),
                Some(UndoStatus::Running) => Err(format!("step `{id}` is being undone")),
                _ => Ok(()),
            }
        };
        let steps: Vec<&Step> = match step {
            Some(id) => {
                let step = playbook.step(id).ok_or_else(|| {
                    Error::Refused(format!("playbook `{}` has no step `{id}`", playbook.name))
                })?;
                holds(step).map_err(Error::Refused)?;
                vec![step]
            }
            None => playbook
                .steps
                .iter()
                .filter(|step| holds(step).is_ok())
                .collect(),
        };
        if steps.is_empty() {
            return Err(Error::Refused(format!(
                "run {} holds nothing to undo",
                state.run_id
            )));
        }
        let now = self.now();
        let events: Vec<RunEvent> = steps
            .iter()
            .map(|step| RunEvent::UndoScheduled {
                step: step.id.to_string(),
                due: now,
                by: Some(by.to_owned()),
                at: now,
            })
            .collect();
        self.record(&state.run_id, &events).await?;
        for event in &events {
            state.apply(event);
        }
        info!(run_id = %state.run_id, by, steps = events.len(), "Undo asked for.");
        Ok(steps.iter().map(|step| step.id.to_string()).collect())
    }

    /// Gives up on a run for `reason`: it ends as failed, if it started and has not ended (a
    /// run given up before it started only has its acceptance on record). The store then
    /// dead-letters it, so it is never advanced again.
    pub async fn give_up(
        &self,
        run_id: &str,
        events: &[RunEvent],
        reason: &str,
    ) -> Result<(), Error> {
        warn!(run_id, %reason, "Giving up on a run.");
        if RunState::from_events(events).is_some_and(|state| !state.status.is_terminal()) {
            let finished = RunEvent::RunFinished {
                status: RunStatus::Failed,
                outputs: serde_json::Value::Object(Default::default()),
                error: Some(reason.to_owned()),
                at: self.now(),
            };
            self.record(run_id, &[finished]).await?;
        }
        Ok(())
    }

    /// Cancels a run that has not ended: nothing more of it runs.
    pub async fn cancel(
        &self,
        run_id: &str,
        events: &[RunEvent],
        by: &str,
        reason: Option<String>,
    ) -> Result<Cancelled, Error> {
        let state = RunState::from_events(events);
        if let Some(state) = &state
            && state.status.is_terminal()
        {
            return Err(Error::Refused(format!(
                "run {run_id} has already ended: {}",
                state.status.as_str()
            )));
        }
        if RunEvent::cancelled_by(events).is_some() {
            return Err(Error::Refused(format!(
                "run {run_id} was already cancelled"
            )));
        }
        let cancelled = RunEvent::RunCancelled {
            by: by.to_owned(),
            reason,
            at: self.now(),
        };
        self.record(run_id, &[cancelled]).await?;
        Ok(match state {
            Some(_) => Cancelled::Started,
            None => Cancelled::Queued,
        })
    }

    /// Records a decision on a step that waits for approval; advance the run afterwards.
    pub async fn decide(
        &self,
        state: &mut RunState,
        step: &str,
        decision: Decision,
    ) -> Result<(), Error> {
        let waiting = state
            .step(step)
            .and_then(|record| record.approval.as_ref())
            .is_some_and(|approval| approval.decision.is_none());
        if !waiting || state.status.is_terminal() {
            return Err(Error::NotWaiting {
                run_id: state.run_id.clone(),
                step: step.to_owned(),
            });
        }
        let event = RunEvent::ApprovalDecided {
            step: step.to_owned(),
            decision,
            at: self.now(),
        };
        self.record(&state.run_id, std::slice::from_ref(&event))
            .await?;
        state.apply(&event);
        Ok(())
    }

    /// Marks a failed run resumed by `by`: when next advanced, its failed and skipped steps run
    /// again (same idempotency keys) and what succeeded is kept. A run already marked resumed
    /// (an earlier resume stopped half-way) stays as it is; so does one the store gave up on
    /// before it started (`dead_before_start`): it only needs queueing again.
    pub async fn resume_failed(
        &self,
        run_id: &str,
        events: &[RunEvent],
        by: &str,
        dead_before_start: bool,
    ) -> Result<(), Error> {
        if RunEvent::cancelled_by(events).is_some() {
            return Err(Error::Refused(format!(
                "run {run_id} was cancelled; a cancelled run is not resumed"
            )));
        }
        match RunState::from_events(events) {
            None if dead_before_start => Ok(()),
            None => Err(Error::Refused(format!(
                "run {run_id} has not started yet; it is still queued"
            ))),
            Some(state) if state.status == RunStatus::Failed => {
                let resumed = RunEvent::RunResumed {
                    by: by.to_owned(),
                    at: self.now(),
                };
                self.record(run_id, &[resumed]).await
            }
            Some(_) if matches!(events.last(), Some(RunEvent::RunResumed { .. })) => Ok(()),
            Some(state) => Err(Error::Refused(format!(
                "run {run_id} is {}, not failed; only a failed run can be resumed",
                state.status.as_str()
            ))),
        }
    }

    /// Records on a run that the sender reported its alert resolved (`event`, linked by the dedupe
    /// key `key`), whatever the run's state; a report already on record (the same delivery
    /// sent again) is not recorded twice. Returns whether it was recorded.
    pub async fn resolve(
        &self,
        run_id: &str,
        events: &[RunEvent],
        key: &str,
        event: &serde_json::Value,
    ) -> Result<bool, Error> {
        let already = events.iter().any(|recorded| {
            matches!(recorded, RunEvent::AlertResolved { key: k, event: e, .. } if k == key && e == event)
        });
        if already {
            return Ok(false);
        }
        let resolved = RunEvent::AlertResolved {
            key: key.to_owned(),
            event: event.clone(),
            at: self.now(),
        };
        self.record(run_id, &[resolved]).await?;
        info!(
            run_id,
            "An alert the run started for was reported resolved."
        );
        Ok(true)
    }
}
