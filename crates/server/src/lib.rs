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

pub mod app;
pub mod catalog;
pub mod config;
mod error;
pub mod executor;
pub mod ingress;
mod queue;
pub mod webhook_auth;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken;

pub use crate::config::{Config, StoreConfig};
pub use crate::error::Error;

/// Everything a process needs, opened and checked.
pub struct Parts {
    pub config: Config,
    pub store: Arc<dyn store::Store>,
    pub catalog: Arc<catalog::Catalog>,
    pub runner: Arc<runner::Runner>,
    pub secrets: Arc<HashMap<String, runner::Secrets>>,
}

impl Parts {
    /// Loads the playbooks and plugins and opens the store.
    pub async fn open(mut config: Config) -> Result<Parts, Error> {
        let catalog = Arc::new(catalog::Catalog::load(&config)?);
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
        let executor = Arc::new(executor::PluginExecutor { plugins });
        let runner = Arc::new(runner::Runner::new(executor, store.clone()));
        let secrets = catalog
            .playbooks()
            .map(|playbook| {
                let values = playbook
                    .secrets
                    .iter()
                    .filter_map(|name| {
                        let value = config.secrets.get(&name.to_ascii_uppercase());
                        if value.is_none() {
                            tracing::warn!(playbook = %playbook.name, secret = %name, "Secret not set: set RIPOSTE_SECRET_{}.", name.to_ascii_uppercase());
                        }
                        value.map(|value| (name.clone(), value.clone()))
                    })
                    .collect();
                (playbook.name.clone(), runner::Secrets::new(values))
            })
            .collect();
        Ok(Parts {
            config,
            store,
            catalog,
            runner,
            secrets: Arc::new(secrets),
        })
    }

    fn worker(&self) -> Arc<worker::Worker> {
        Arc::new(worker::Worker {
            id: worker::new_worker_id(),
            store: Arc::clone(&self.store),
            runner: Arc::clone(&self.runner),
            catalog: Arc::clone(&self.catalog),
            secrets: Arc::clone(&self.secrets),
            config: self.config.workers.clone(),
        })
    }

    fn app_state(&self) -> app::AppState {
        app::AppState {
            store: Arc::clone(&self.store),
            catalog: Arc::clone(&self.catalog),
            webhooks: Arc::new(self.config.webhooks.clone()),
        }
    }
}

/// Opens the configured store.
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn store::Store>, Error> {
    Ok(match config {
        StoreConfig::Sqlite { path, synchronous } => {
            Arc::new(store::SqliteStore::open(path, *synchronous)?)
        }
        StoreConfig::Redis { url, prefix } => {
            Arc::new(store::RedisStore::connect(url, prefix).await?)
        }
    })
}

/// Serves the HTTP API on `listener` and runs workers, until `shutdown`: then stops accepting,
/// lets in-flight requests and runs finish (runs up to a lease), and returns.
pub async fn serve(
    listener: TcpListener,
    parts: Parts,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // `workers.concurrency: 0` makes an API-only process (scale the two independently).
    let worker = (parts.config.workers.concurrency > 0)
        .then(|| tokio::spawn(parts.worker().run(shutdown.clone())));
    let router = app::app(parts.app_state());
    let signal = shutdown.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { signal.cancelled().await })
        .await
        .map_err(|source| Error::Io {
            what: "the HTTP server failed".into(),
            source,
        });
    shutdown.cancel();
    if let Some(worker) = worker {
        worker
            .await
            .map_err(|error| Error::Worker(error.to_string()))??;
    }
    served
}

/// Runs workers only, until `shutdown`.
pub async fn work(parts: Parts, shutdown: CancellationToken) -> Result<(), Error> {
    if parts.config.workers.concurrency == 0 {
        return Err(Error::Config(vec![
            "workers.concurrency is 0: a worker process needs at least one".into(),
        ]));
    }
    parts.worker().run(shutdown).await
}

/// Resumes a failed run from its failed steps (after the downstream tool is back): the steps
/// that succeeded keep their outputs, the others run again with the same idempotency keys.
pub async fn resume_failed(store: &dyn store::Store, run_id: &str, by: &str) -> Result<(), Error> {
    let events = store.events(run_id).await?;
    let Some(state) = runner::RunState::from_events(&events) else {
        return Err(Error::Resume(format!(
            "run {run_id} has not started (or does not exist)"
        )));
    };
    if state.status != runner::RunStatus::Failed {
        return Err(Error::Resume(format!(
            "run {run_id} is {:?}, not failed; only a failed run can be resumed",
            state.status
        )));
    }
    let resumed = runner::RunEvent::RunResumed {
        by: by.to_owned(),
        at: store::now_millis(),
    };
    runner::Journal::append(store, run_id, &resumed).await?;
    store.revive(run_id).await?;
    store.push(run_id).await?;
    Ok(())
}
