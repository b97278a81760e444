//! Run control: what people (over the API, the console or the CLI) do to runs. Each operation
//! takes the run's lock, so it never races a worker, a decision or a deadline, reads the run's
//! journal, and asks the runner, which owns the run's state machine and records the event; then
//! it tells the store what follows for the queue (queue the run again, take it off the queue)
//! and the case desk what follows for the run's case (a decision acknowledges it, a cancelled
//! run has ended).

use std::sync::Arc;
use std::time::Duration;

use runner::{Decision, RunState, Runner};

use crate::catalog::Catalog;
use crate::desk::CaseDesk;
use crate::error::Error;

/// How long an operation waits for a worker that is advancing the run.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// Cancels, decides and resumes runs. Cheap to clone.
#[derive(Clone)]
pub struct RunControl {
    store: Arc<dyn store::Store>,
    runner: Arc<Runner>,
    desk: CaseDesk,
}

impl RunControl {
    pub fn new(store: Arc<dyn store::Store>, runner: Arc<Runner>, desk: CaseDesk) -> Self {
        RunControl {
            store,
            runner,
            desk,
        }
    }

    /// Cancels a run that has not ended: nothing more of it runs. A queued run is also taken off
    /// the queue (marked dead with the reason), so no worker starts it.
    pub async fn cancel(
        &self,
        run_id: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<(), Error> {
        self.with_run_lock(run_id, async || {
            let events = self.store.events(run_id).await?;
            let cancelled = self.runner.cancel(run_id, &events, by, reason).await?;
            if cancelled == runner::Cancelled::Queued {
                self.store
                    .dead_letter(run_id, &format!("cancelled by {by} before it started"))
                    .await?;
            }
            Ok(())
        })
        .await?;
        // The cancellation stands even if its case cannot be told now; the worker tells it
        // when it next looks at the run.
        if let Err(error) = self.desk.record_progress(run_id, None).await {
            tracing::warn!(%error, run_id, "Could not record the cancellation on the run's case.");
        }
        Ok(())
    }

    /// Records a decision on a step waiting for approval and queues the run, so any worker
    /// resumes it.
    pub async fn decide(&self, run_id: &str, step: &str, decision: Decision) -> Result<(), Error> {
        let by = decision.by().map(str::to_owned);
        self.with_run_lock(run_id, async || {
            let events = self.store.events(run_id).await?;
            let mut state = RunState::from_events(&events)
                .ok_or_else(|| Error::Conflict(format!("run {run_id} has not started")))?;
            self.runner.decide(&mut state, step, decision).await?;
            self.store.push(run_id).await?;
            Ok(())
        })
        .await?;
        if let Some(by) = by
            && let Err(error) = self.desk.acknowledged_through(run_id, &by).await
        {
            tracing::warn!(%error, run_id, "Could not record on the run's case who decided.");
        }
        Ok(())
    }

    /// Resumes a failed run from its failed steps (after the downstream tool is back): the steps
    /// that succeeded keep their outputs, the others run again with the same idempotency keys. A
    /// run dead-lettered before it started is queued again. Running it again after it stopped
    /// half-way is safe: a run already marked resumed is queued again.
    pub async fn resume_failed(&self, run_id: &str, by: &str) -> Result<(), Error> {
        let Some(record) = self.store.run(run_id).await? else {
            return Err(Error::Resume(format!("there is no run {run_id}")));
        };
        self.with_run_lock(run_id, async || {
            let events = self.store.events(run_id).await?;
            self.runner
                .resume_failed(run_id, &events, by, record.dead.is_some())
                .await
                .map_err(|error| match error {
                    runner::Error::Refused(reason) => Error::Resume(reason),
                    other => Error::Run(other),
                })?;
            self.store.revive(run_id).await?;
            self.store.push(run_id).await?;
            Ok(())
        })
        .await
    }

    /// Asks for a run's effects to be undone now: `step`, or everything the run still holds;
    /// queues the run, so a worker calls the undos (with their retries, durably). Returns the
    /// steps. `catalog` says how each step is undone.
    pub async fn undo(
        &self,
        catalog: &Catalog,
        run_id: &str,
        step: Option<&str>,
        by: &str,
    ) -> Result<Vec<String>, Error> {
        let Some(record) = self.store.run(run_id).await? else {
            return Err(Error::NotFound(format!("there is no run {run_id}")));
        };
        let playbook = catalog.playbook(&record.playbook).ok_or_else(|| {
            Error::Conflict(format!(
                "playbook `{}` is not loaded, so how to undo its steps is not known",
                record.playbook
            ))
        })?;
        self.with_run_lock(run_id, async || {
            let events = self.store.events(run_id).await?;
            let mut state = RunState::from_events(&events)
                .ok_or_else(|| Error::Conflict(format!("run {run_id} has not started")))?;
            let steps = self
                .runner
                .request_undo(playbook, &mut state, step, by)
                .await
                .map_err(|error| match error {
                    runner::Error::Refused(reason) => Error::Conflict(reason),
                    other => Error::Run(other),
                })?;
            self.store.push(run_id).await?;
            Ok(steps)
        })
        .await
    }

    /// A person's change to a case. Closing it also asks, for each of its runs whose playbook
    /// says `case.undo_on_close`, to undo what the run still holds (a run holding nothing is
    /// left as it is); returns the case as the change leaves it.
    pub async fn change_case(
        &self,
        catalog: &Catalog,
        case: cases::CaseId,
        change: cases::Change,
        by: &str,
    ) -> Result<cases::Case, Error> {
        let closes = matches!(
            change,
            cases::Change::Move {
                to: cases::Phase::Closed,
                ..
            }
        );
        let changed = self.desk.change(case, change, by).await?;
        if !closes || changed.phase != cases::Phase::Closed {
            return Ok(changed);
        }
        for alert in &changed.alerts {
            let undoes = catalog
                .playbook(&alert.playbook)
                .and_then(|playbook| playbook.case.as_ref())
                .is_some_and(|rule| rule.undo_on_close);
            if !undoes {
                continue;
            }
            match self.undo(catalog, &alert.run_id, None, by).await {
                Ok(steps) => {
                    tracing::info!(run_id = %alert.run_id, ?steps, "Undoing a run's effects as its case closed.")
                }
                Err(Error::Conflict(reason)) => {
                    tracing::debug!(run_id = %alert.run_id, %reason, "Nothing undone as the case closed.")
                }
                Err(error) => return Err(error),
            }
        }
        Ok(changed)
    }

    /// Runs `operation` under the run's lock. A run being advanced holds the lock until its
    /// worker is done with it: waits up to [`LOCK_PATIENCE`].
    async fn with_run_lock<T>(
        &self,
        run_id: &str,
        operation: impl AsyncFnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let holder = format!("api-{}", uuid::Uuid::now_v7().simple());
        let lease = Duration::from_secs(30);
        let pause = Duration::from_millis(100);
        let mut waited = Duration::ZERO;
        while !self.store.lock_run(run_id, &holder, lease).await? {
            if waited >= LOCK_PATIENCE {
                return Err(Error::Conflict(format!(
                    "run {run_id} is being advanced by a worker; try again"
                )));
            }
            tokio::time::sleep(pause).await;
            waited += pause;
        }
        let outcome = operation().await;
        self.store.unlock_run(run_id, &holder).await?;
        outcome
    }
}
