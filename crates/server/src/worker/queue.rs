//! The one module that knows apalis: it turns the store's job queue into an apalis 1.0 backend,
//! so apalis's `WorkerBuilder` (concurrency layer, graceful stop) drives our job handler while the
//! store's own delivery mechanism (Redis Streams' pending-entries list, SQLite lease columns) keeps
//! the books. Why this and not apalis-redis is in `docs/decisions.md`.
//!
//! Delivery contract (at-least-once, a job is never dropped):
//! * a claimed job stays leased while its handler runs: the worker heartbeat extends the
//!   leases of every job this worker holds;
//! * handler `Ok` → `ack`, which also releases the run's lock the handler left to it; handler
//!   `Err` (infrastructure failure only) → the job is neither acked nor released and we stop
//!   extending it, so the queue hands it out again once the lease runs out (the lease doubles as
//!   retry back-off; no hot loop while e.g. the DB is down);
//! * graceful stop: apalis waits for running handlers (their results are acked), and jobs
//!   claimed but never started are released at once.
//!
//! Queue errors are logged, never returned: apalis treats any backend error as fatal and
//! drops the worker future, cancelling every running handler mid-flight. A failed ack or
//! extend only means a later redelivery, which the lease already covers.
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::codec::Codec;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::persistence::{
    Persisted, Persistence, State, TaskEvent, TaskPersistLayer,
};
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::{Task, builder::TaskBuilder, task_id::TaskId};
use apalis_core::worker::context::WorkerContext;

use store::{Claim, Store};

use crate::api_first::ApiFirst;

#[derive(Debug, Clone)]
pub(crate) struct QueueConfig {
    /// Lease taken on claim and renewed by every heartbeat.
    pub(crate) lease: Duration,
    /// How often the leases of running jobs are renewed; keep well below `lease`.
    pub(crate) heartbeat: Duration,
    /// How long an idle worker waits before asking the queue again.
    pub(crate) poll_interval: Duration,
    /// Most jobs one shard holds at once. Set it to the shard's concurrency: a claim never
    /// asks for more than the free slots, because apalis does not heartbeat while it holds
    /// claimed-but-undispatched tasks (`persistence/mod.rs`, `poll_ready` only beats in `Ready`).
    pub(crate) max_in_flight: usize,
}

/// The jobs each worker (by name) has claimed and not yet settled, by job id; shared by all
/// clones, because `Persisted` clones the persistence for every operation.
type InFlight = Arc<Mutex<HashMap<String, HashMap<String, Claim>>>>;

pub(crate) struct QueuePersistence {
    queue: Arc<dyn Store>,
    config: QueueConfig,
    /// Whether this process's API is taking a burst of webhooks, when claims stay small.
    api_first: Arc<ApiFirst>,
    in_flight: InFlight,
}

impl Clone for QueuePersistence {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            config: self.config.clone(),
            api_first: Arc::clone(&self.api_first),
            in_flight: self.in_flight.clone(),
        }
    }
}

impl QueuePersistence {
    /// The in-flight map; a panic elsewhere while holding it leaves it usable (it is plain data).
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Claim>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn held(&self, worker: &WorkerContext) -> Vec<String> {
        let map = self.lock();
        map.get(worker.name())
            .map(|jobs| jobs.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// No longer in flight: the job as it was claimed, if it was.
    fn settle(&self, worker: &WorkerContext, job_id: &str) -> Option<Claim> {
        self.lock()
            .get_mut(worker.name())
            .and_then(|jobs| jobs.remove(job_id))
    }
}

fn job_id(id: &TaskId) -> String {
    id.as_string()
        .map(str::to_owned)
        .unwrap_or_else(|| id.to_string())
}

impl Persistence for QueuePersistence {
    type Compact = Claim;
    type Response = ();
    type Error = store::Error;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), store::Error> {
        // A previous run of this worker (restarted by a Monitor after a panic or error) may
        // have left jobs behind; hand them back instead of extending them forever.
        let stale = self.lock().remove(worker.name()).unwrap_or_default();
        if !stale.is_empty() {
            let stale: Vec<String> = stale.into_keys().collect();
            if let Err(e) = self.queue.release(worker.name(), &stale).await {
                tracing::warn!(error = %e, "releasing stale jobs failed; their leases will expire");
            }
        }
        Ok(())
    }

    async fn heartbeat(&mut self, worker: &WorkerContext) -> Result<(), store::Error> {
        let ids = self.held(worker);
        if !ids.is_empty()
            && let Err(e) = self
                .queue
                .extend(worker.name(), &ids, self.config.lease)
                .await
        {
            tracing::warn!(error = %e, jobs = ids.len(), "extending leases failed");
        }
        Ok(())
    }

    async fn fetch_next(
        &mut self,
        worker: &WorkerContext,
    ) -> Result<Vec<Task<Claim>>, store::Error> {
        let held = self.held(worker).len();
        let free = self.config.max_in_flight.saturating_sub(held).max(1);
        let max = self.api_first.claimable(held, free);
        if max == 0 {
            // Claimed in a burst, the jobs would wait here while other workers could run them.
            return Ok(Vec::new());
        }
        let claims = match self
            .queue
            .claim(worker.name(), max, self.config.lease)
            .await
        {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying after the poll interval");
                return Ok(Vec::new());
            }
        };
        let mut map = self.lock();
        let held = map.entry(worker.name().to_owned()).or_default();
        Ok(claims
            .into_iter()
            // A lease we lost (missed heartbeats) may come back to us while its first handler
            // still runs: that run keeps it; a second one would also be a duplicate task id.
            .filter(|c| match held.entry(c.job_id.clone()) {
                Entry::Occupied(_) => false,
                Entry::Vacant(slot) => {
                    slot.insert(c.clone());
                    true
                }
            })
            .map(|c| {
                let attempt = c.deliveries.saturating_sub(1) as usize; // apalis adds 1 on start
                TaskBuilder::new(c.clone())
                    .task_id(TaskId::from_string(c.job_id))
                    .attempt(attempt)
                    .build()
            })
            .collect())
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Claim>>,
        worker: &WorkerContext,
    ) -> Result<u64, store::Error> {
        let ids: Vec<String> = tasks.into_iter().map(|t| t.args.job_id).collect();
        for id in &ids {
            self.settle(worker, id);
        }
        if let Err(e) = self.queue.release(worker.name(), &ids).await {
            tracing::warn!(error = %e, jobs = ids.len(), "release failed; leases will expire");
        }
        Ok(ids.len() as u64)
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<()>>,
        worker: &WorkerContext,
    ) -> Result<(), store::Error> {
        let mut done = Vec::new();
        for event in events {
            let TaskEvent::Complete(completed) = event else {
                continue;
            };
            let id = job_id(&completed.task_id);
            // Settled either way: an errored job must not be extended, or it never comes back.
            let claim = self.settle(worker, &id);
            match completed.result {
                // A job this worker no longer had on its books (it restarted meanwhile) is still
                // acked; the lock on its run, unknown here, lapses with its lease.
                Ok(()) => done.push(claim.unwrap_or(Claim {
                    job_id: id,
                    run_id: String::new(),
                    deliveries: 0,
                })),
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "handler failed; redelivery after lease")
                }
            }
        }
        // The jobs that completed since the last call, acked together, and their runs' locks
        // released with them.
        if !done.is_empty()
            && let Err(e) = self.queue.ack(worker.name(), &done).await
        {
            tracing::warn!(error = %e, jobs = done.len(), "ack failed; jobs will be redelivered");
        }
        Ok(())
    }

    async fn push_tasks(&mut self, tasks: Vec<Task<Claim>>) -> Result<(), store::Error> {
        for t in tasks {
            self.queue.push(&t.args.run_id).await?;
        }
        Ok(())
    }
}

/// Results are not stored, but `TaskPersistLayer` only reports completions through a codec.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Discard;

#[derive(Debug, thiserror::Error)]
#[error("task results are not stored")]
pub(crate) struct NotStored;

impl<T> Codec<T> for Discard {
    type Error = NotStored;
    type Compact = ();
    fn encode(&self, _: &T) -> Result<(), NotStored> {
        Ok(())
    }
    fn decode(&self, _: &()) -> Result<T, NotStored> {
        Err(NotStored)
    }
}

/// The apalis backend: `WorkerBuilder::new(name).backend(QueueBackend::new(queue, config))`.
pub(crate) struct QueueBackend {
    persisted: Persisted<QueuePersistence>,
    config: QueueConfig,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl QueueBackend {
    pub(crate) fn new(
        queue: Arc<dyn Store>,
        config: QueueConfig,
        api_first: Arc<ApiFirst>,
    ) -> Self {
        let p = QueuePersistence {
            queue,
            config: config.clone(),
            api_first,
            in_flight: Default::default(),
        };
        Self {
            persisted: Persisted::new(p),
            config,
            idle: None,
        }
    }
}

/// Clones share the queue and in-flight map (so a Monitor factory may clone one backend per
/// run; `register` then releases what a crashed run left) but get a fresh apalis state machine.
impl Clone for QueueBackend {
    fn clone(&self) -> Self {
        Self {
            persisted: self.persisted.clone(),
            config: self.config.clone(),
            idle: None,
        }
    }
}

impl Backend for QueueBackend {
    type Task = Task<Claim>;
    type Error = store::Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), store::Error>> {
        self.persisted.poll_ready(cx, worker, self.config.heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<Claim>, store::Error>>> {
        let next = self.persisted.poll_next(cx, worker);
        // Pending in `Ready` means the claim came back empty. `Persisted` then parks on the
        // worker waker, which nothing wakes when a job is pushed, so arm our own timer.
        // (apalis's `poll_with_interval` re-creates its Delay without polling it, so it
        // does not re-arm: its timer is replaced without being polled.)
        if next.is_pending() && matches!(self.persisted.state(), State::Ready) {
            loop {
                let sleep = self
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.config.poll_interval)));
                if sleep.as_mut().poll(cx).is_pending() {
                    break;
                }
                self.idle = None; // fired: this poll was its wake-up; arm the next one
            }
        }
        next
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), store::Error>> {
        self.persisted.poll_close(cx, worker)
    }
}

impl BackendConfig for QueueBackend {
    type Args = Claim;
    type Id = String;
    type Kind = Ephemeral; // tasks already carry `Claim`; no codec step
    type Config = QueueConfig;
    type Layer = TaskPersistLayer<Discard, ()>;

    fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        // persist_results(true) is what makes apalis emit `Complete` events (our acks).
        self.persisted
            .layer(Discard, self.config.max_in_flight)
            .persist_results(true)
    }
}
