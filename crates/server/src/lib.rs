//! The Riposte server: webhook ingress, the management API, workers, and their configuration.
//!
//! [`serve`] runs the HTTP side and workers in one process; [`work`] runs workers only. Any
//! number of processes share one store (Redis) and split the work; with no Redis configured, one
//! process keeps everything in a local SQLite file. The path of an alert: [`http`] authenticates
//! the delivery ([`auth`]), checks its body, screens it with each playbook on the trigger, and
//! answers 202 once [`store::Store::accept`] has stored the runs and their jobs; a
//! [`worker::Worker`] claims a job, locks the run, and lets the runner advance it. People steer
//! runs through [`control::RunControl`] (cancel, decide, resume), which locks the run and asks the
//! runner: the runner writes every run event, this crate none. This crate knows HTTP and process
//! wiring; it knows no Redis keys (the `store` crate does) and no wasmtime (the `plugin-host`
//! crate does).

pub mod api_first;
pub mod auth;
pub mod calls;
pub mod catalog;
pub mod config;
mod console;
pub mod control;
pub mod desk;
mod error;
pub mod http;
pub mod installed;
pub mod metrics;
pub mod slack;
pub mod timeline;
pub mod tokens;
pub mod views;
pub mod worker;

use std::sync::Arc;

use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken;

pub use crate::config::{Config, StoreConfig};
pub use crate::control::RunControl;
pub use crate::error::Error;
pub use crate::timeline::{Timeline, timeline};

/// Everything a process needs, opened and checked.
pub struct Parts {
    pub config: Config,
    pub store: Arc<dyn store::Store>,
    pub playbooks: Arc<catalog::Playbooks>,
    pub runner: Arc<runner::Runner>,
    /// The plugins and connectors loaded.
    pub installed: installed::Installed,
    pub metrics: Arc<metrics::Metrics>,
    /// Approvals in Slack, when configured.
    pub slack: Option<Arc<slack::Slack>>,
    /// Holds the worker back while the API takes a burst of webhooks.
    pub api_first: Arc<api_first::ApiFirst>,
    /// The runner's executor: plugins, and sub-playbooks (which the process's worker drives).
    calls: Arc<calls::Calls>,
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
        let installed = installed::Installed::load(&config).await?;
        check_installed(&catalog, &installed)?;
        let metrics = Arc::new(metrics::Metrics::default());
        let plugin_calls = installed.executor();
        let playbooks = Arc::new(catalog::Playbooks::new(catalog));
        let calls = Arc::new(calls::Calls::new(
            plugin_calls,
            Arc::clone(&store),
            Arc::clone(&playbooks),
            desk::CaseDesk::new(Arc::clone(&store), Arc::clone(&metrics)),
            config.webhooks.delivery_ttl,
            config.limits.clone(),
        ));
        let journal: Arc<dyn runner::Journal> = store.clone();
        let runner =
            Arc::new(runner::Runner::new(calls.clone(), journal).with_observer(metrics.clone()));
        let slack = config
            .slack
            .clone()
            .map(|slack| Arc::new(slack::Slack::new(slack)));
        Ok(Parts {
            config,
            store,
            playbooks,
            runner,
            installed,
            metrics,
            slack,
            api_first: Arc::default(),
            calls,
        })
    }

    fn worker(&self) -> Arc<worker::Worker> {
        let worker = Arc::new(worker::Worker {
            id: worker::new_worker_id(),
            store: Arc::clone(&self.store),
            runner: Arc::clone(&self.runner),
            playbooks: Arc::clone(&self.playbooks),
            config: self.config.workers.clone(),
            metrics: Arc::clone(&self.metrics),
            desk: self.desk(),
            delivery_ttl: self.config.webhooks.delivery_ttl,
            slack: self.slack.clone(),
            api_first: Arc::clone(&self.api_first),
        });
        self.calls.driven_by(&worker);
        worker
    }

    /// What people use to cancel, decide and resume runs.
    pub fn control(&self) -> RunControl {
        RunControl::new(
            Arc::clone(&self.store),
            Arc::clone(&self.runner),
            self.desk(),
        )
    }

    /// What opens, joins, moves and reports cases.
    pub fn desk(&self) -> desk::CaseDesk {
        desk::CaseDesk::new(Arc::clone(&self.store), Arc::clone(&self.metrics))
    }

    fn app_state(&self) -> Result<http::AppState, Error> {
        http::AppState::new(self)
    }

    /// The router [`serve`] serves, to call in process (tests, tools).
    pub fn router(&self) -> Result<axum::Router, Error> {
        Ok(http::app(self.app_state()?))
    }

    /// What reloads this process's playbooks from disk.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            config: self.config.clone(),
            installed: self.installed.clone(),
            playbooks: Arc::clone(&self.playbooks),
        }
    }
}

/// Reloads the playbooks of one process.
#[derive(Clone)]
pub struct Reloader {
    config: Config,
    installed: installed::Installed,
    playbooks: Arc<catalog::Playbooks>,
}

impl Reloader {
    /// Loads the playbooks from disk again and puts them in use if every one is valid and every
    /// plugin they use is loaded; otherwise keeps the ones in use and returns the problems. Runs in
    /// progress finish on the playbook they started with.
    pub fn reload(&self) -> Result<usize, Error> {
        let catalog = catalog::Catalog::load(&self.config)?;
        check_installed(&catalog, &self.installed)?;
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

    /// Every playbook file in the folder, checked as `riposte validate` checks it: what a
    /// reload would load, and what it would refuse and why.
    pub fn check_files(&self) -> Result<Vec<playbook::FileDiagnostics>, Error> {
        let io = |source: std::io::Error| Error::Io {
            what: format!("cannot read {}", self.config.playbooks.display()),
            source,
        };
        playbook::files_in(&self.config.playbooks)
            .map_err(io)?
            .iter()
            .map(|file| {
                playbook::check_file(file)
                    .map_err(|error| Error::Playbooks(vec![error.to_string()]))
            })
            .collect()
    }
}

/// Every step's plugin or connector, and its action, must be loaded (or built in): found at
/// start, not at 3 a.m.
fn check_installed(
    catalog: &catalog::Catalog,
    installed: &installed::Installed,
) -> Result<(), Error> {
    let problems: Vec<String> = catalog
        .playbooks()
        .flat_map(|playbook| installed.problems(playbook))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Playbooks(problems))
    }
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
        .then(|| tokio::spawn(parts.worker().run_beside_the_api(shutdown.clone())));
    let router = http::app(parts.app_state()?);
    http::serve(
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
/// `/metrics` there ([`http::ops`]).
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
            let router = http::ops(parts.app_state()?);
            Some(tokio::spawn(http::serve(
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
