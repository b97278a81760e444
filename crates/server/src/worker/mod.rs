//! Workers: take jobs from the store and advance their runs with the runner and the plugins.
//!
//! A job says only "advance run X"; the run's journal says what is left. So a job is idempotent,
//! and a redelivered job (its worker crashed) resumes the run where the journal stops: completed
//! steps are not repeated, a step that was running runs again with the same idempotency key.
//! The run's lock keeps two workers off one run; a run waiting for approval holds no worker (a
//! timer at its deadline, or a decision, brings it back).

mod queue;
mod schedule;

use std::sync::Arc;
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;

use playbook::Playbook;
use runner::{RunStatus, Runner};
use store::{Claim, OpenedRun, Store};
use tokio_util::sync::CancellationToken;
use tower::limit::ConcurrencyLimitLayer;
use tracing::{info, warn};

use crate::catalog::Playbooks;
use crate::config::WorkerConfig;
use crate::desk::CaseDesk;
use crate::error::Error;
use crate::metrics::Metrics;
use queue::{QueueBackend, QueueConfig};

/// How long a run waits for a worker that has its playbook before it fails.
const MISSING_PLAYBOOK_PATIENCE_MS: u64 = 3_600_000;

/// One worker process's share of the work.
pub struct Worker {
    /// Unique per process start, so a restarted process never inherits a dead one's leases.
    pub id: String,
    pub store: Arc<dyn Store>,
    pub runner: Arc<Runner>,
    /// The playbooks in use; each run takes the current set when a worker picks it up.
    pub playbooks: Arc<Playbooks>,
    pub config: WorkerConfig,
    pub metrics: Arc<Metrics>,
    /// Where runs join their cases and record what they did.
    pub desk: CaseDesk,
    /// How long a scheduled tick's delivery id is remembered (`webhooks.delivery_ttl`).
    pub delivery_ttl: Duration,
    /// Posts approval requests to Slack, when configured.
    pub slack: Option<Arc<crate::slack::Slack>>,
    /// Holds back new advances while the API of this process takes a burst of webhooks.
    pub api_first: Arc<crate::api_first::ApiFirst>,
}

/// Who releases a run's lock once its advance is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unlock {
    /// The advance, at its end.
    Now,
    /// The ack of the job that advanced it (`Store::ack`), which the queue sends for the jobs done
    /// since its last call together: one store operation per advance fewer.
    WithAck,
}

/// How often the watchdog looks for stalled runs.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(5);

/// A new worker id: host, process and a random part.
pub fn new_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "riposte".into());
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &random[random.len() - 8..]
    )
}

impl Worker {
    /// Works until `shutdown` fires, then stops taking jobs, lets the runs in hand finish (jobs
    /// claimed but not started are given back at once), and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), Error> {
        info!(worker = %self.id, concurrency = self.config.concurrency, "Worker started.");
        let timers = tokio::spawn(Arc::clone(&self).promote_timers(shutdown.clone()));
        let watchdog = tokio::spawn(Arc::clone(&self).watch_for_stalls(shutdown.clone()));
        let schedules = tokio::spawn(Arc::clone(&self).fire_schedules(shutdown.clone()));
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        let mut shards = Vec::new();
        for (index, concurrency) in shard_sizes(self.config.concurrency, threads)
            .into_iter()
            .enumerate()
        {
            let holder: Arc<str> = format!("{}-{index}", self.id).into();
            let backend = QueueBackend::new(
                Arc::clone(&self.store),
                QueueConfig {
                    lease: self.config.lease,
                    heartbeat: self.config.lease / 3,
                    poll_interval: self.config.poll_interval,
                    max_in_flight: concurrency,
                },
                Arc::clone(&self.api_first),
            );
            let context = WorkerContext::new(&holder);
            let worker = Arc::clone(&self);
            let handler = move |claim: Claim| {
                Arc::clone(&worker)
                    .handle(Arc::clone(&holder), claim)
                    .boxed()
            };
            let apalis_worker = WorkerBuilder::new(&context)
                .backend(backend)
                .layer(ConcurrencyLimitLayer::new(concurrency))
                .build(handler);
            shards.push((context, tokio::spawn(apalis_worker.run())));
        }
        shutdown.cancelled().await;
        // Stopping is refused until apalis has started the worker (a signal right after start):
        // ask again until it takes or the worker is gone.
        for (context, running) in &shards {
            while context.stop().is_err() && !running.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut stopped = Ok(());
        for (_, running) in shards {
            let ended = match running.await {
                Ok(result) => result.map_err(|error| Error::Worker(error.to_string())),
                Err(error) => Err(Error::Worker(error.to_string())),
            };
            if ended.is_err() {
                stopped = ended;
            }
        }
        timers.abort();
        schedules.abort();
        watchdog.abort();
        info!(worker = %self.id, "Worker stopped.");
        stopped
    }

    /// [`Worker::run`] in a process that also serves the API: on a runtime of its own, as many
    /// threads as the API's, which yield to the API's when both want the CPU ([`YIELDING_NICE`]).
    /// A burst of webhooks is then answered first, and the worker drains the backlog it leaves on
    /// the CPU that is left: an accept answered late is a SIEM retrying or giving up, a run started
    /// late is only later. With CPU to spare, the worker gets all of it.
    pub async fn run_beside_the_api(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("riposte-worker")
            .on_thread_start(yield_to_the_api)
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                what: "cannot start the worker's runtime".into(),
                source,
            })?;
        let (done, worked) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("riposte-worker".into())
            .spawn(move || {
                yield_to_the_api();
                let _ = done.send(runtime.block_on(self.run(shutdown)));
                // Every run in hand has finished; what may still be spawned (a DNS lookup, a
                // pooled connection) is dropped rather than waited for.
                runtime.shutdown_background();
            })
            .map_err(|source| Error::Io {
                what: "cannot start the worker's thread".into(),
                source,
            })?;
        worked
            .await
            .map_err(|_| Error::Worker("the worker's runtime stopped".into()))?
    }

    /// Turns due timers (approval deadlines, runs to look at again) into jobs.
    async fn promote_timers(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(error) = self.store.promote_due(self.runner.now()).await {
                warn!(%error, "Could not promote due timers.");
            }
            tokio::time::sleep(self.config.poll_interval.max(Duration::from_millis(50))).await;
        }
    }

    /// Logs and counts runs in hand that stopped making progress: a stall must show, not hold
    /// a worker silently. Each stalled run is reported once.
    async fn watch_for_stalls(self: Arc<Self>, shutdown: CancellationToken) {
        let mut reported = std::collections::HashSet::new();
        while !shutdown.is_cancelled() {
            tokio::time::sleep(WATCHDOG_INTERVAL).await;
            let stalled = self.runner.watchdog().stalled(self.runner.now());
            let mut new = 0;
            for stall in &stalled {
                if reported.insert(stall.run_id.clone()) {
                    new += 1;
                    tracing::error!(
                        run_id = %stall.run_id,
                        quiet_s = stall.quiet_ms / 1000,
                        "A run has made no progress for longer than its playbook allows: it is stalled."
                    );
                }
            }
            reported.retain(|run_id| stalled.iter().any(|stall| &stall.run_id == run_id));
            self.metrics.stalls(stalled.len(), new);
        }
    }

    /// Advances one job's run for `holder` (its shard), once it has its turn (none is held back
    /// unless this process's API is taking a burst of webhooks: [`crate::api_first`]). `Ok` acks
    /// the job; `Err` (the store failed, or a bug panicked) leaves it leased, so it comes back
    /// after its lease, on this worker or another.
    #[tracing::instrument(skip_all, fields(run_id = %claim.run_id, deliveries = claim.deliveries))]
    async fn handle(self: Arc<Self>, holder: Arc<str>, claim: Claim) -> Result<(), BoxDynError> {
        let turn = self.api_first.turn().await;
        if let Some(waited) = turn.held_back() {
            self.metrics.advance_held_back(waited);
        }
        let advanced =
            std::panic::AssertUnwindSafe(self.advance_as(&holder, &claim, Unlock::WithAck))
                .catch_unwind()
                .await;
        match advanced {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                warn!(%error, "Could not advance the run; its job comes back after its lease.");
                Err(error.into())
            }
            Err(_) => {
                warn!("Advancing the run panicked; its job comes back after its lease.");
                Err("advancing the run panicked".into())
            }
        }
    }

    /// Advances a sub-playbook's run for the step that called it (see [`crate::calls`]), as a
    /// job would, under a lock holder of its own: a job of the same run that this worker took
    /// meanwhile does not share the lock.
    pub(crate) async fn advance_run(&self, run_id: &str) -> Result<(), Error> {
        let claim = Claim {
            job_id: String::new(),
            run_id: run_id.to_owned(),
            deliveries: 1,
        };
        self.advance_as(&format!("{}-call", self.id), &claim, Unlock::Now)
            .await
    }

    /// Advances `claim`'s run holding its lock as `holder`.
    async fn advance_as(&self, holder: &str, claim: &Claim, unlock: Unlock) -> Result<(), Error> {
        let run_id = claim.run_id.as_str();
        let (record, events) = match self
            .store
            .open_run(run_id, holder, self.config.lease)
            .await?
        {
            OpenedRun::Locked { record, events } => (record, events),
            OpenedRun::Missing => {
                warn!("A job names a run that does not exist; dropping it.");
                return Ok(());
            }
            OpenedRun::Dead => return Ok(()),
            OpenedRun::Busy => {
                // Another worker is advancing this run: look again shortly.
                self.store
                    .schedule(run_id, self.runner.now() + 1_000)
                    .await?;
                return Ok(());
            }
        };
        // Checked under the lock: a job that came back while a live worker still advances its run
        // (the lock was held) is not a stall.
        if claim.deliveries > self.config.max_deliveries {
            let reason = format!(
                "dead-lettered: its job was handed to a worker {} times without finishing (workers crashed or stalled past their lease)",
                claim.deliveries
            );
            let given_up = self.give_up(run_id, &reason).await;
            self.store.unlock_run(run_id, holder).await?;
            return given_up;
        }
        // Renew the run's lock while the run advances; the job's lease is renewed by the queue.
        let renew = async {
            loop {
                tokio::time::sleep(self.config.lease / 3).await;
                match self.store.lock_run(run_id, holder, self.config.lease).await {
                    Ok(true) => {}
                    // Another worker took the run over (this one stalled past its lease): stop
                    // here; the journal tells the other where to go on.
                    Ok(false) => return Error::LostRun(run_id.to_owned()),
                    Err(error) => warn!(%error, "Could not renew the run's lock."),
                }
            }
        };
        let outcome = tokio::select! {
            outcome = self.advance_locked(run_id, &record, &events, claim.deliveries) => outcome,
            lost = renew => Err(lost),
        };
        // A failed job is not acked: its lock is released here.
        if unlock == Unlock::Now || outcome.is_err() {
            self.store.unlock_run(run_id, holder).await?;
        }
        outcome
    }

    async fn advance_locked(
        &self,
        run_id: &str,
        record: &store::RunRecord,
        events: &[runner::RunEvent],
        deliveries: u32,
    ) -> Result<(), Error> {
        let catalog = self.playbooks.current();
        let Some(playbook) = catalog.playbook(&record.playbook) else {
            // During a rolling deploy another process may still have the playbook: wait for one,
            // up to a point.
            let waited = self.runner.now().saturating_sub(record.accepted_at);
            if waited < MISSING_PLAYBOOK_PATIENCE_MS {
                warn!(playbook = %record.playbook, "This worker does not have the run's playbook; trying again later.");
                self.store
                    .schedule(run_id, self.runner.now() + 30_000)
                    .await?;
                return Ok(());
            }
            let reason = format!(
                "playbook `{}` is not loaded on any worker that took the run in the hour since it was accepted",
                record.playbook
            );
            return self.give_up(run_id, &reason).await;
        };
        let secrets = catalog.secrets(&record.playbook);
        // A sub-playbook's run is filed under its caller's case, whatever its own playbook says.
        let called = record
            .trigger
            .strip_prefix(playbook::PLAYBOOK_CALL)
            .is_some_and(|rest| rest.starts_with('/'));
        let has_case = playbook.case.is_some() || called;
        if playbook.case.is_some() {
            match self.desk.join(playbook, run_id, &record.event).await {
                Ok(_) => {}
                // The run goes on; it joins when it is next advanced.
                Err(Error::Conflict(reason)) => {
                    warn!(%reason, "The run could not join its case yet.")
                }
                Err(error) => return Err(error),
            }
        }
        let state = self
            .runner
            .advance(
                playbook,
                run_id,
                &record.event,
                events,
                &secrets,
                deliveries,
            )
            .await?;
        // An approval's deadline, or an effect's expiry: the run is advanced again then.
        if let Some(wakeup) = state.next_wakeup() {
            self.store.schedule(run_id, wakeup).await?;
        }
        if state.status == RunStatus::WaitingForApproval {
            self.post_to_slack(playbook, run_id, events).await;
        }
        if has_case {
            self.record_on_case(run_id, Some(playbook)).await?;
        }
        Ok(())
    }

    /// Posts the approval requests this advance made (those not in the journal before it) to
    /// the Slack channels their steps name. At most once: a worker lost between the request and
    /// the post leaves it to the console and the API.
    async fn post_to_slack(&self, playbook: &Playbook, run_id: &str, before: &[runner::RunEvent]) {
        let Some(slack) = &self.slack else {
            return;
        };
        let asked_before: std::collections::HashSet<&str> = before
            .iter()
            .filter_map(|event| match event {
                runner::RunEvent::ApprovalRequested { step, .. } => Some(step.as_str()),
                _ => None,
            })
            .collect();
        let events = match self.store.events(run_id).await {
            Ok(events) => events,
            Err(error) => {
                warn!(%error, "Could not read the run to post its approval to Slack.");
                return;
            }
        };
        for event in &events {
            let runner::RunEvent::ApprovalRequested {
                step,
                approvers,
                message,
                deadline,
                ..
            } = event
            else {
                continue;
            };
            let channel = playbook
                .step_or_handler(step)
                .and_then(|declared| declared.approval.as_ref())
                .and_then(|approval| approval.slack.as_deref());
            let Some(channel) = channel.filter(|_| !asked_before.contains(step.as_str())) else {
                continue;
            };
            let request = crate::slack::Request {
                channel,
                run_id,
                playbook: &playbook.name,
                step,
                message: message.as_deref(),
                approvers,
                deadline_secs: deadline / 1000,
            };
            match slack.request_approval(&request).await {
                Ok(()) => info!(%step, %channel, "Approval request posted to Slack."),
                Err(error) => warn!(%error, %step, "Could not post the approval request to Slack."),
            }
        }
    }

    /// Tells the run's case what the run did. A store failure fails the job, so the job comes
    /// back and tells it then; a case that kept changing is told on the run's next advance.
    async fn record_on_case(&self, run_id: &str, playbook: Option<&Playbook>) -> Result<(), Error> {
        match self.desk.record_progress(run_id, playbook).await {
            Err(Error::Conflict(reason)) => {
                warn!(%reason, "Could not record the run's progress on its case yet.");
                Ok(())
            }
            other => other,
        }
    }

    /// Gives up on a run: it ends as failed with `reason` (recorded by the runner) and is
    /// dead-lettered, so it shows why and is never advanced again.
    async fn give_up(&self, run_id: &str, reason: &str) -> Result<(), Error> {
        let events = self.store.events(run_id).await?;
        self.runner.give_up(run_id, &events, reason).await?;
        self.store.dead_letter(run_id, reason).await?;
        let catalog = self.playbooks.current();
        let playbook = match self.store.run(run_id).await? {
            Some(record) => catalog.playbook(&record.playbook),
            None => None,
        };
        self.record_on_case(run_id, playbook.map(|playbook| &**playbook))
            .await
    }
}

/// How far a worker's threads are niced below the API's in a process that serves both: at 10, the
/// kernel gives a thread about a tenth of the CPU a thread at the API's level gets when both are
/// ready to run.
const YIELDING_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`YIELDING_NICE`] (Linux keeps a nice value per
/// thread), and queues its SQLite operations behind the API's
/// ([`store::SqliteStore::queue_behind_the_api`]: they gather until a core is free, instead of
/// waking the store's thread for each). A refusal (a sandbox that forbids it) is logged: the
/// worker then competes as equals.
fn yield_to_the_api() {
    store::SqliteStore::queue_behind_the_api();
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let thread = Some(rustix::thread::gettid());
        let lowered = getpriority_process(thread)
            .and_then(|nice| setpriority_process(thread, (nice + YIELDING_NICE).min(19)));
        if let Err(error) = lowered {
            warn!(%error, "Could not lower the priority of a worker thread.");
        }
    }
}

/// How many runs each shard of a worker holds: one shard per runtime thread (at most one per run
/// in hand), the concurrency shared out as evenly as it goes.
///
/// apalis polls every handler of a worker inside its one task, so a worker's runs go forward on
/// one thread at a time; a task per run instead spends more on waking each run's task than the
/// one wake-up of a shard that serves many. A shard per thread keeps both.
fn shard_sizes(concurrency: usize, threads: usize) -> Vec<usize> {
    let shards = threads.clamp(1, concurrency.max(1));
    (0..shards)
        .map(|index| concurrency / shards + usize::from(index < concurrency % shards))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::shard_sizes;

    #[test]
    fn the_concurrency_is_shared_out_among_at_most_one_shard_per_thread() {
        assert_eq!(shard_sizes(64, 2), [32, 32]);
        assert_eq!(shard_sizes(5, 2), [3, 2]);
        assert_eq!(shard_sizes(8, 3), [3, 3, 2]);
        // Never a shard without a run to hold.
        assert_eq!(shard_sizes(1, 4), [1]);
        assert_eq!(shard_sizes(3, 1), [3]);
    }
}
