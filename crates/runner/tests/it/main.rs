//! Runner tests. Time-dependent behaviour runs on tokio's paused clock: sleeps advance virtual
//! time instantly, so timings are exact and the tests are fast.

mod approvals;
mod control;
mod every_run_ends;
mod execution;
mod recovery;
mod undo;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use playbook::{ErrorKind, Playbook};
use runner::{
    Journal, MemoryJournal, RunEvent, RunState, Runner, Secrets, StepCall, StepError, StepExecutor,
};
use tokio::time::Instant;

/// Compiles a playbook, panicking with its diagnostics if it is invalid.
pub(crate) fn playbook(yaml: &str) -> Playbook {
    playbook::compile(yaml).unwrap_or_else(|diagnostics| {
        let rendered: Vec<String> = diagnostics
            .iter()
            .map(|d| d.render("test.yaml", yaml))
            .collect();
        panic!("invalid test playbook:\n{}", rendered.join("\n"))
    })
}

/// What a scripted step does on one call.
#[derive(Clone, Debug)]
pub(crate) enum Behaviour {
    /// Answer with this output after `delay`.
    Ok(serde_json::Value, Duration),
    /// Fail with this error after `delay`.
    Err(StepError, Duration),
    /// Never answer (a hung upstream, or a process that dies mid-step).
    Hang,
}

pub(crate) fn ok(output: serde_json::Value) -> Behaviour {
    Behaviour::Ok(output, Duration::ZERO)
}

pub(crate) fn slow(output: serde_json::Value, seconds: u64) -> Behaviour {
    Behaviour::Ok(output, Duration::from_secs(seconds))
}

pub(crate) fn fail(kind: ErrorKind, message: &str) -> Behaviour {
    Behaviour::Err(StepError::new(kind, message), Duration::ZERO)
}

/// A call as the executor saw it, with the virtual time it arrived.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) call: StepCall,
    pub(crate) at: Duration,
}

/// An executor whose steps follow a script: per step id, a queue of behaviours; when the queue is
/// empty the step echoes its input.
pub(crate) struct Scripted {
    script: Mutex<HashMap<String, VecDeque<Behaviour>>>,
    seen: Mutex<Vec<Seen>>,
    origin: Instant,
}

impl Scripted {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Scripted {
            script: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            origin: Instant::now(),
        })
    }

    pub(crate) fn on(self: &Arc<Self>, step: &str, behaviours: Vec<Behaviour>) -> Arc<Self> {
        self.script
            .lock()
            .expect("script lock")
            .entry(step.to_owned())
            .or_default()
            .extend(behaviours);
        self.clone()
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub(crate) fn calls_of(&self, step: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.call.step_id == step)
            .collect()
    }
}

#[async_trait]
impl StepExecutor for Scripted {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        let behaviour = self
            .script
            .lock()
            .expect("script lock")
            .get_mut(&call.step_id)
            .and_then(VecDeque::pop_front);
        self.seen.lock().expect("seen lock").push(Seen {
            call: call.clone(),
            at: self.origin.elapsed(),
        });
        match behaviour {
            None => Ok(call.input),
            Some(Behaviour::Ok(output, delay)) => {
                tokio::time::sleep(delay).await;
                Ok(output)
            }
            Some(Behaviour::Err(error, delay)) => {
                tokio::time::sleep(delay).await;
                Err(error)
            }
            Some(Behaviour::Hang) => std::future::pending().await,
        }
    }
}

/// A journal that takes time to answer, as a store over the network does: an append suspends
/// its caller, so concurrent steps really interleave around the journal (the in-memory journal
/// answers without ever yielding, which hides lock-order bugs).
pub(crate) struct SlowJournal {
    pub(crate) inner: Arc<MemoryJournal>,
}

#[async_trait]
impl Journal for SlowJournal {
    async fn append(&self, run_id: &str, event: &RunEvent) -> Result<(), runner::Error> {
        self.append_all(run_id, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, run_id: &str, events: &[RunEvent]) -> Result<(), runner::Error> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.inner.append_all(run_id, events).await
    }
}

/// A runner over a scripted executor and an in-memory journal.
pub(crate) struct Harness {
    pub(crate) runner: Runner,
    pub(crate) journal: Arc<MemoryJournal>,
    pub(crate) executor: Arc<Scripted>,
}

impl Harness {
    pub(crate) fn new(executor: Arc<Scripted>) -> Self {
        let journal = Arc::new(MemoryJournal::new());
        Harness {
            runner: Runner::new(executor.clone(), journal.clone()),
            journal,
            executor,
        }
    }

    /// A harness whose journal suspends on every write ([`SlowJournal`]).
    pub(crate) fn with_slow_journal(executor: Arc<Scripted>) -> Self {
        let journal = Arc::new(MemoryJournal::new());
        let slow = Arc::new(SlowJournal {
            inner: journal.clone(),
        });
        Harness {
            runner: Runner::new(executor.clone(), slow),
            journal,
            executor,
        }
    }

    pub(crate) async fn start(&self, playbook: &Playbook, event: serde_json::Value) -> RunState {
        self.start_with_secrets(playbook, event, &Secrets::default())
            .await
    }

    pub(crate) async fn start_with_secrets(
        &self,
        playbook: &Playbook,
        event: serde_json::Value,
        secrets: &Secrets,
    ) -> RunState {
        self.runner
            .start(playbook, "run-1", event, secrets)
            .await
            .expect("the runner itself must not fail")
    }

    pub(crate) fn events(&self) -> Vec<RunEvent> {
        self.journal.events("run-1")
    }
}

pub(crate) fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    Secrets::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
}
