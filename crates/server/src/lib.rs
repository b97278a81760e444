//! The Riposte server: webhook ingress, workers, and their configuration.
//!
//! [`serve`] runs the HTTP API and workers in one process; [`work`] runs workers only. Any number
//! of processes share one store (Redis) and split the work; with no Redis configured, one process
//! keeps everything in a local SQLite file. The path of an alert: [`app`] authenticates the
//! delivery ([`webhook_auth`]), checks its body ([`ingress`]), screens it with each playbook on
//! the trigger, and answers 202 once [`store::Store::accept`] has stored the runs and their jobs;
//! a [`worker::Worker`] claims a job, folds the run's journal, and lets the runner advance it
//! through the plugins. This crate knows HTTP and process wiring; it knows no Redis keys (the
//! `store` crate does) and no wasmtime (the `plugin-host` crate does).

pub mod access;
mod api;
pub mod app;
pub mod catalog;
pub mod config;
mod error;
pub mod executor;
pub mod ingress;
mod listener;
pub mod metrics;
mod queue;
pub mod webhook_auth;
pub mod worker;

use std::sync::Arc;

use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken;

pub use crate::api::{Timeline, timeline};
pub use crate::config::{Config, StoreConfig};
pub use crate::error::Error;

/// Everything a process needs, opened and checked.
pub struct Parts {
    pub config: Config,
    pub store: Arc<dyn store::Store>,
    pub playbooks: Arc<catalog::Playbooks>,
    pub runner: Arc<runner::Runner>,
    pub executor: Arc<executor::PluginExecutor>,
    pub metrics: Arc<metrics::Metrics>,
}

impl Parts {
    /// Loads the playbooks and plugins and opens the store.
    pub async fn open(mut config: Config) -> Result<Parts, Error> {
        let catalog = catalog::Catalog::load(&config)?;
        if !config.workers.lease_configured {
            let longest = catalog.longest_step_timeout() + std::time::Duration::from_secs(30);
            config.workers.lease = config.workers.lease.max(longest);
        }
        let store = open_store(&config.store).await?;
        let plugins = match &config.plugins {
            Some(dir) => {
                let mut host_config = plugin_host::HostConfig::new(&config.cache_dir);
                host_config.egress = plugin_host::EgressPolicy {
                    allow_private: config.allow_private.clone(),
                    user_agent: concat!("riposte/", env!("CARGO_PKG_VERSION")).into(),
                    ..plugin_host::EgressPolicy::default()
                };
                let mut host = plugin_host::PluginHost::new(host_config)?;
                let loaded = host.load_dir(dir).await?;
                tracing::info!(plugins = loaded.len(), dir = %dir.display(), "Plugins loaded.");
                Some(host)
            }
            None => None,
        };
        check_plugins(&catalog, plugins.as_ref())?;
        let metrics = Arc::new(metrics::Metrics::default());
        let executor = Arc::new(executor::PluginExecutor {
            plugins,
            metrics: Arc::clone(&metrics),
        });
        let journal = Arc::new(metrics::MeteredJournal {
            store: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
        });
        let runner = Arc::new(runner::Runner::new(executor.clone(), journal));
        Ok(Parts {
            config,
            store,
            playbooks: Arc::new(catalog::Playbooks::new(catalog)),
            runner,
            executor,
            metrics,
        })
    }

    fn worker(&self) -> Arc<worker::Worker> {
        Arc::new(worker::Worker {
            id: worker::new_worker_id(),
            store: Arc::clone(&self.store),
            runner: Arc::clone(&self.runner),
            playbooks: Arc::clone(&self.playbooks),
            config: self.config.workers.clone(),
            metrics: Arc::clone(&self.metrics),
        })
    }

    fn app_state(&self) -> Result<app::AppState, Error> {
        app::AppState::new(self)
    }

    /// What reloads this process's playbooks from disk.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            config: self.config.clone(),
            executor: Arc::clone(&self.executor),
            playbooks: Arc::clone(&self.playbooks),
        }
    }
}

/// Reloads the playbooks of one process.
#[derive(Clone)]
pub struct Reloader {
    config: Config,
    executor: Arc<executor::PluginExecutor>,
    playbooks: Arc<catalog::Playbooks>,
}

impl Reloader {
    /// Loads the playbooks from disk again and puts them in use if every one is valid and every
    /// plugin they use is loaded; otherwise keeps the ones in use and returns the problems. Runs in
    /// progress finish on the playbook they started with.
    pub fn reload(&self) -> Result<usize, Error> {
        let catalog = catalog::Catalog::load(&self.config)?;
        check_plugins(&catalog, self.executor.plugins.as_ref())?;
        let longest = catalog.longest_step_timeout();
        if longest >= self.config.workers.lease {
            return Err(Error::Playbooks(vec![format!(
                "a step timeout ({}) is not shorter than this process's worker lease ({}); restart to raise the lease",
                humantime::format_duration(longest),
                humantime::format_duration(self.config.workers.lease)
            )]));
        }
        let count = catalog.playbooks().count();
        self.playbooks.replace(catalog);
        tracing::info!(playbooks = count, "Playbooks reloaded.");
        Ok(count)
    }
}

/// Every step's plugin and action must be loaded (or built in): found at start, not at 3 a.m.
fn check_plugins(
    catalog: &catalog::Catalog,
    plugins: Option<&plugin_host::PluginHost>,
) -> Result<(), Error> {
    let problems: Vec<String> = catalog
        .playbooks()
        .flat_map(|playbook| plugin_problems(playbook, plugins))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Playbooks(problems))
    }
}

/// The steps of `playbook` whose plugin or action is not loaded.
fn plugin_problems(
    playbook: &playbook::Playbook,
    plugins: Option<&plugin_host::PluginHost>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for step in playbook.steps.iter().chain(&playbook.handlers) {
        let uses = &step.uses;
        if uses.plugin == "core" {
            continue;
        }
        match plugins.and_then(|host| host.manifest(&uses.plugin)) {
            None => problems.push(format!(
                "playbook `{}`, step `{}`: plugin `{}` is not loaded (the plugins folder: `plugins:` or RIPOSTE_PLUGINS)",
                playbook.name,
                step.id.as_str(),
                uses.plugin
            )),
            Some(manifest) if !manifest.actions.iter().any(|a| a.name == uses.action) => {
                problems.push(format!(
                    "playbook `{}`, step `{}`: plugin `{}` has no action `{}`",
                    playbook.name,
                    step.id.as_str(),
                    uses.plugin,
                    uses.action
                ))
            }
            Some(_) => {}
        }
    }
    problems
}

/// Opens the configured store.
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn store::Store>, Error> {
    Ok(match config {
        StoreConfig::Sqlite { path, synchronous } => {
            Arc::new(store::SqliteStore::open(path, *synchronous)?)
        }
        StoreConfig::Redis {
            url,
            prefix,
            activity_max_len,
            ca_file,
        } => {
            let ca = match ca_file {
                Some(file) => {
                    let pem = std::fs::read(file).map_err(|source| Error::Io {
                        what: format!("cannot read redis.ca_file {}", file.display()),
                        source,
                    })?;
                    // An empty trust store would refuse every server, after retries, with a
                    // reason that names the server's certificate rather than this file.
                    if !pem
                        .windows(b"-----BEGIN CERTIFICATE-----".len())
                        .any(|window| window == b"-----BEGIN CERTIFICATE-----")
                    {
                        return Err(Error::Config(vec![format!(
                            "redis.ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                            file.display()
                        )]));
                    }
                    Some(pem)
                }
                None => None,
            };
            Arc::new(
                store::RedisStore::connect_trusting(url, prefix, ca)
                    .await?
                    .with_activity_max_len(*activity_max_len),
            )
        }
    })
}

/// Serves the HTTP API on `listener` and runs workers, until `shutdown`: then stops accepting,
/// lets in-flight requests and the runs in hand finish (however long they take: the supervisor's
/// grace period is the bound, and a SIGKILL after it is recovered through the leases), gives back
/// jobs claimed but not started, and returns.
pub async fn serve(
    listener: TcpListener,
    parts: Parts,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // `workers.concurrency: 0` makes an API-only process (scale the two independently).
    let worker = (parts.config.workers.concurrency > 0)
        .then(|| tokio::spawn(parts.worker().run(shutdown.clone())));
    let router = app::app(parts.app_state()?);
    listener::serve(
        listener,
        router,
        parts.config.http.header_read_timeout,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    if let Some(worker) = worker {
        worker
            .await
            .map_err(|error| Error::Worker(error.to_string()))??;
    }
    Ok(())
}

/// Runs workers only, until `shutdown`; with `ops`, also answers `/healthz`, `/readyz` and
/// `/metrics` there ([`app::ops`]).
pub async fn work(
    parts: Parts,
    ops: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if parts.config.workers.concurrency == 0 {
        return Err(Error::Config(vec![
            "workers.concurrency is 0: a worker process needs at least one".into(),
        ]));
    }
    // Probes and scrapes are answered until the runs in hand are finished, not only until
    // SIGTERM: a drain can take minutes, and its metrics matter.
    let ops_done = CancellationToken::new();
    let ops = match ops {
        Some(listener) => {
            let router = app::ops(parts.app_state()?);
            Some(tokio::spawn(listener::serve(
                listener,
                router,
                parts.config.http.header_read_timeout,
                ops_done.clone(),
            )))
        }
        None => None,
    };
    let worked = parts.worker().run(shutdown).await;
    ops_done.cancel();
    if let Some(ops) = ops {
        ops.await
            .map_err(|error| Error::Worker(error.to_string()))?;
    }
    worked
}

/// Resumes a failed run from its failed steps (after the downstream tool is back): the steps
/// that succeeded keep their outputs, the others run again with the same idempotency keys. A run
/// dead-lettered before it started is queued again. Running it again after it stopped half-way
/// is safe: a run already marked resumed is queued again.
pub async fn resume_failed(store: &dyn store::Store, run_id: &str, by: &str) -> Result<(), Error> {
    let Some(record) = store.run(run_id).await? else {
        return Err(Error::Resume(format!("there is no run {run_id}")));
    };
    let events = store.events(run_id).await?;
    if runner::RunEvent::cancelled_by(&events).is_some() {
        return Err(Error::Resume(format!(
            "run {run_id} was cancelled; a cancelled run is not resumed"
        )));
    }
    match runner::RunState::from_events(&events) {
        None if record.dead.is_some() => {}
        None => {
            return Err(Error::Resume(format!(
                "run {run_id} has not started yet; it is still queued"
            )));
        }
        Some(state) if state.status == runner::RunStatus::Failed => {
            let resumed = runner::RunEvent::RunResumed {
                by: by.to_owned(),
                at: store::now_millis(),
            };
            runner::Journal::append(store, run_id, &resumed).await?;
        }
        Some(_) if matches!(events.last(), Some(runner::RunEvent::RunResumed { .. })) => {}
        Some(state) => {
            return Err(Error::Resume(format!(
                "run {run_id} is {:?}, not failed; only a failed run can be resumed",
                state.status
            )));
        }
    }
    store.revive(run_id).await?;
    store.push(run_id).await?;
    Ok(())
}

/// Runs `operation` on a run under its lock, so it never races a worker, a decision or a deadline.
/// A run being advanced holds the lock until its worker is done with it: waits up to 10 s.
async fn with_run_lock<T>(
    store: &dyn store::Store,
    run_id: &str,
    operation: impl AsyncFnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let holder = format!("api-{}", uuid::Uuid::now_v7().simple());
    let lease = std::time::Duration::from_secs(30);
    let mut tries = 0;
    while !store.lock_run(run_id, &holder, lease).await? {
        tries += 1;
        if tries > 100 {
            return Err(Error::Conflict(format!(
                "run {run_id} is being advanced by a worker; try again"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let outcome = operation().await;
    store.unlock_run(run_id, &holder).await?;
    outcome
}

/// Records a decision on a step waiting for approval and queues the run, so any worker resumes
/// it.
pub async fn decide(
    store: &dyn store::Store,
    run_id: &str,
    step: &str,
    decision: runner::Decision,
) -> Result<(), Error> {
    with_run_lock(store, run_id, async || {
        let events = store.events(run_id).await?;
        let state = runner::RunState::from_events(&events)
            .ok_or_else(|| Error::Conflict(format!("run {run_id} has not started")))?;
        let waiting = state
            .step(step)
            .and_then(|record| record.approval.as_ref())
            .is_some_and(|approval| approval.decision.is_none());
        if !waiting || state.status.is_terminal() {
            return Err(Error::Run(runner::Error::NotWaiting {
                run_id: run_id.to_owned(),
                step: step.to_owned(),
            }));
        }
        let event = runner::RunEvent::ApprovalDecided {
            step: step.to_owned(),
            decision,
            at: store::now_millis(),
        };
        runner::Journal::append(store, run_id, &event).await?;
        store.push(run_id).await?;
        Ok(())
    })
    .await
}

/// Cancels a run that has not ended: nothing more of it runs. A queued run is also taken off
/// the queue (marked dead with the reason), so no worker starts it.
pub async fn cancel(
    store: &dyn store::Store,
    run_id: &str,
    by: &str,
    reason: Option<String>,
) -> Result<(), Error> {
    with_run_lock(store, run_id, async || {
        let events = store.events(run_id).await?;
        let state = runner::RunState::from_events(&events);
        if let Some(state) = &state
            && state.status.is_terminal()
        {
            return Err(Error::Conflict(format!(
                "run {run_id} has already ended: {}",
                state.status.as_str()
            )));
        }
        if runner::RunEvent::cancelled_by(&events).is_some() {
            return Err(Error::Conflict(format!(
                "run {run_id} was already cancelled"
            )));
        }
        let cancelled = runner::RunEvent::RunCancelled {
            by: by.to_owned(),
            reason,
            at: store::now_millis(),
        };
        runner::Journal::append(store, run_id, &cancelled).await?;
        if state.is_none() {
            store
                .dead_letter(run_id, &format!("cancelled by {by} before it started"))
                .await?;
        }
        Ok(())
    })
    .await
}
