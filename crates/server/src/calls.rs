//! The runner's executor: plugin calls, held by the shared limits of their plugin
//! (`limits:` in the configuration, [`store::limits`]), and sub-playbooks.
//!
//! A call whose plugin has limits first takes a slot in the store; a limit that holds it answers
//! a deferred error, and the runner parks the step (holding no worker) until the time the limit
//! says. The outcome of the call goes back with the slot: failures feed the circuit breaker, a
//! `429` pauses every worker for its `Retry-After`.
//!
//! Sub-playbooks: a step that `uses: playbook/<name>` runs that playbook as a child run. The
//! child is a run of its own in the store: its own journal and audit chain, in the run list and
//! the console, filed under the caller's case, its `trigger` the step's input; its outputs are the
//! step's output.
//!
//! The child's id is derived from the step call's idempotency key, and it is accepted with a
//! delivery id made of that key, so a step retried, or resumed after its worker died, finds the
//! child it started instead of starting another. The calling worker drives the child itself,
//! under the child's lock, through the same [`Worker::advance`] a job takes (so a child never waits
//! for a free worker slot while its caller holds one); when another worker holds the child (it
//! was queued like every run, or it waits for an approval decided elsewhere), the caller watches
//! its journal until it ends. The caller's step timeout bounds the wait.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use playbook::{ErrorKind, PLAYBOOK_CALL};
use runner::{Acceptance, RunEvent, RunState, RunStatus, StepCall, StepError, StepExecutor};
use sha2::Digest as _;
use store::limits::{Limit, Outcome};

use crate::catalog::Playbooks;
use crate::desk::CaseDesk;
use crate::error::Error;
use crate::worker::Worker;

/// How much longer than a call's timeout its slot of a limit is leased.
const LEASE_MARGIN_MS: u64 = 30_000;

/// The longest pause between two looks at a child someone else drives.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// The step executor of a process: sub-playbook calls here, every other call to the plugins.
pub struct Calls {
    plugins: Arc<dyn StepExecutor>,
    store: Arc<dyn store::Store>,
    playbooks: Arc<Playbooks>,
    desk: CaseDesk,
    delivery_ttl: Duration,
    /// Shared limits, by plugin name.
    limits: BTreeMap<String, Limit>,
    /// The process's worker, which drives children; set once it exists (it needs the runner,
    /// which needs this executor).
    worker: OnceLock<Weak<Worker>>,
}

impl Calls {
    pub(crate) fn new(
        plugins: Arc<dyn StepExecutor>,
        store: Arc<dyn store::Store>,
        playbooks: Arc<Playbooks>,
        desk: CaseDesk,
        delivery_ttl: Duration,
        limits: BTreeMap<String, Limit>,
    ) -> Calls {
        Calls {
            plugins,
            store,
            playbooks,
            desk,
            delivery_ttl,
            limits,
            worker: OnceLock::new(),
        }
    }

    /// The worker that drives children (the first one the process makes).
    pub(crate) fn driven_by(&self, worker: &Arc<Worker>) {
        let _ = self.worker.set(Arc::downgrade(worker));
    }

    async fn call_playbook(&self, call: &StepCall) -> Result<serde_json::Value, StepError> {
        let name = call.uses.action.as_str();
        let catalog = self.playbooks.current();
        if catalog.playbook(name).is_none() {
            return Err(StepError::new(
                ErrorKind::NotFound,
                format!("playbook `{name}` is not loaded"),
            ));
        }
        let worker = self.worker.get().and_then(Weak::upgrade).ok_or_else(|| {
            StepError::new(
                ErrorKind::Internal,
                "this process runs no workers, so it cannot run a sub-playbook",
            )
        })?;
        let child = child_run_id(&call.idempotency_key);
        self.start_child(call, name, &child, &worker)
            .await
            .map_err(store_failed)?;
        let mut pause = Duration::from_millis(20);
        let mut events = Vec::new();
        loop {
            // A child waiting for a person is only watched: its deadline has a timer, and the
            // decision queues it. Any other child is driven here, if no other worker holds it.
            let waits_for_a_person = RunState::from_events(&events)
                .is_some_and(|state| state.status == RunStatus::WaitingForApproval);
            if !waits_for_a_person {
                worker.advance_run(&child).await.map_err(store_failed)?;
            }
            events = self
                .store
                .events(&child)
                .await
                .map_err(|error| store_failed(error.into()))?;
            if let Some(outcome) = outcome(name, &child, &events) {
                return outcome;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Calls a plugin within its shared limits: takes a slot (or answers when to try again),
    /// calls, and gives the slot back with the outcome.
    async fn call_limited(
        &self,
        call: StepCall,
        limit: &Limit,
    ) -> Result<serde_json::Value, StepError> {
        let key = format!("plugin:{}", call.uses.plugin);
        let holder = format!("{}#{}", call.idempotency_key, call.attempt);
        let now = store::now_millis();
        // A worker that dies holding the slot frees it when the call could no longer be running.
        let lease_end = now
            .saturating_add(u64::try_from(call.timeout.as_millis()).unwrap_or(u64::MAX))
            .saturating_add(LEASE_MARGIN_MS);
        let taken = self
            .store
            .take_slot(&key, &holder, limit, now, lease_end)
            .await
            .map_err(|error| store_failed(error.into()))?;
        if let Err(held) = taken {
            return Err(StepError::deferred(
                held.until,
                format!(
                    "the shared limit of `{}`: {}",
                    call.uses.plugin, held.reason
                ),
            ));
        }
        let plugin = call.uses.plugin.clone();
        let result = self.plugins.execute(call).await;
        let outcome = match &result {
            Ok(_) => Outcome::Succeeded,
            Err(error) => match error.kind {
                ErrorKind::Upstream | ErrorKind::Timeout => Outcome::Failed,
                ErrorKind::RateLimited => Outcome::RateLimited {
                    retry_after_ms: error.retry_after_ms,
                },
                _ => Outcome::Neutral,
            },
        };
        let now = store::now_millis();
        if let Err(error) = self
            .store
            .give_slot_back(&key, &holder, limit, outcome, now)
            .await
        {
            tracing::warn!(%error, %plugin, "Could not give a limit's slot back; it frees at its lease's end.");
        }
        result
    }

    /// Accepts the child run, unless an earlier attempt did, and files it under the caller's
    /// case.
    async fn start_child(
        &self,
        call: &StepCall,
        name: &str,
        child: &str,
        worker: &Worker,
    ) -> Result<(), Error> {
        if self.store.run(child).await?.is_none() {
            let trigger = format!("{PLAYBOOK_CALL}/{name}");
            let actor = format!("run:{}", call.run_id);
            let delivery_id = format!("call:{}", call.idempotency_key);
            let accepted = worker.runner.accepted(Acceptance {
                trigger: &trigger,
                actor: &actor,
                delivery_id: Some(&delivery_id),
                playbook: name,
                event: &call.input,
            });
            let delivery = store::Delivery {
                trigger,
                delivery_id: Some(delivery_id),
                delivery_ttl: self.delivery_ttl,
                runs: vec![store::NewRun {
                    run_id: child.to_owned(),
                    playbook: name.to_owned(),
                    event: call.input.clone(),
                    dedupe: None,
                    accepted,
                }],
                ignored: Vec::new(),
                received_at: store::now_millis(),
            };
            self.store.accept(&delivery).await?;
            tracing::info!(parent = %call.run_id, step = %call.step_id, child, playbook = name, "Sub-playbook run started.");
        }
        if let Some(case) = self.store.case_of_run(&call.run_id).await? {
            match self.desk.attach_call(case, name, child, &call.run_id).await {
                Err(Error::Conflict(reason)) => {
                    tracing::warn!(%reason, "The sub-playbook run could not join its caller's case yet.")
                }
                other => other?,
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StepExecutor for Calls {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        if call.uses.plugin == PLAYBOOK_CALL {
            return self.call_playbook(&call).await;
        }
        match self.limits.get(&call.uses.plugin) {
            Some(limit) => self.call_limited(call, limit).await,
            None => self.plugins.execute(call).await,
        }
    }

    fn rehearses(&self) -> bool {
        self.plugins.rehearses()
    }
}

/// The id of the child run that step `step` of run `run_id` started (a step without `foreach`).
pub fn child_of(run_id: &str, step: &str) -> String {
    child_run_id(&runner::idempotency_key(run_id, step, None))
}

/// The id of the child run a step call starts: the same for every attempt of the call, a UUID
/// like every run id.
pub fn child_run_id(idempotency_key: &str) -> String {
    let digest = sha2::Sha256::digest(format!("riposte-call:{idempotency_key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// How the child ended, as the calling step's result; `None` while it has not.
fn outcome(
    name: &str,
    child: &str,
    events: &[RunEvent],
) -> Option<Result<serde_json::Value, StepError>> {
    let failed = |how: String| {
        Some(Err(StepError::new(
            ErrorKind::Upstream,
            format!("sub-playbook `{name}` (run {child}) {how}"),
        )))
    };
    match RunState::from_events(events) {
        Some(state) if state.status == RunStatus::Succeeded => Some(Ok(state
            .outputs
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())))),
        Some(state) if state.status.is_terminal() => failed(match state.error {
            Some(error) => format!("{}: {error}", state.status.as_str()),
            None => state.status.as_str().to_owned(),
        }),
        None => RunEvent::cancelled_by(events)
            .and_then(|by| failed(format!("was cancelled by {by} before it started"))),
        Some(_) => None,
    }
}

fn store_failed(error: Error) -> StepError {
    StepError::new(
        ErrorKind::Upstream,
        format!("the sub-playbook's run could not be read or written: {error}"),
    )
}
