//! What every handler shares.

use std::sync::Arc;

use super::access::Tokens;
use super::openapi::{OPENAPI, Permissions};
use crate::catalog::Playbooks;
use crate::config::{ConsoleConfig, HttpConfig, WebhookConfig};
use crate::control::RunControl;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::{Parts, Reloader};

/// A handle on what the handlers share. axum clones the router's state for every request
/// (three times for a webhook), so it is one `Arc`: cloned field by field, with a whole `Config`
/// in the reloader, the clones were 6% of an API process's CPU under a burst of webhooks.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares ([`AppState`]).
pub struct Shared {
    pub store: Arc<dyn store::Store>,
    pub playbooks: Arc<Playbooks>,
    /// Makes each accepted run's first record, by the runner's clock.
    pub runner: Arc<runner::Runner>,
    /// Cancels, decides and resumes runs.
    pub control: RunControl,
    /// Opens, moves and reports cases.
    pub desk: crate::desk::CaseDesk,
    pub webhooks: Arc<WebhookConfig>,
    pub http: HttpConfig,
    pub tokens: Arc<Tokens>,
    pub permissions: Arc<Permissions>,
    pub metrics: Arc<Metrics>,
    pub installed: crate::installed::Installed,
    pub reloader: Reloader,
    pub cors_origins: Vec<http::HeaderValue>,
    pub console: ConsoleConfig,
    /// Approvals in Slack, when configured.
    pub slack: Option<Arc<crate::slack::Slack>>,
    /// Counts the webhooks in flight, which hold the process's worker back.
    pub api_first: Arc<crate::api_first::ApiFirst>,
}

impl AppState {
    pub fn new(parts: &Parts) -> Result<AppState, Error> {
        let openapi: serde_json::Value = serde_json::from_str(OPENAPI)
            .map_err(|error| Error::Config(vec![format!("openapi.json is broken: {error}")]))?;
        Ok(AppState(Arc::new(Shared {
            store: Arc::clone(&parts.store),
            playbooks: Arc::clone(&parts.playbooks),
            runner: Arc::clone(&parts.runner),
            control: parts.control(),
            desk: parts.desk(),
            webhooks: Arc::new(parts.config.webhooks.clone()),
            http: parts.config.http.clone(),
            tokens: Arc::new(Tokens::new(&parts.config.api.tokens)),
            permissions: Arc::new(Permissions::from_openapi(&openapi)),
            metrics: Arc::clone(&parts.metrics),
            installed: parts.installed.clone(),
            reloader: parts.reloader(),
            cors_origins: parts.config.api.cors_origins.clone(),
            console: parts.config.console.clone(),
            slack: parts.slack.clone(),
            api_first: Arc::clone(&parts.api_first),
        })))
    }
}
