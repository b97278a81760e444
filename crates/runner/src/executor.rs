//! The seam between the runner and whatever performs a step: the WASM plugin host in production,
//! a recorder in dry runs and tests.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use playbook::PluginRef;

use crate::event::StepError;

/// One call of a plugin action, with everything the plugin needs to act exactly once.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCall {
    pub run_id: String,
    pub step_id: String,
    pub uses: PluginRef,
    /// The rendered `with:` input.
    pub input: serde_json::Value,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The position in the `foreach` list, for steps that loop.
    pub item: Option<usize>,
    /// Stable across attempts and crashes (`<run>:<step>` or `<run>:<step>:<item>`), so a plugin
    /// can make a retried side effect happen once.
    pub idempotency_key: String,
    /// The attempt's deadline: the step's `timeout`.
    pub timeout: Duration,
    /// What the playbook lets this plugin do.
    pub grant: Grant,
}

/// The capabilities a playbook grants one plugin: hosts it may reach, secrets it may use.
#[derive(Clone, Default, PartialEq)]
pub struct Grant {
    /// Host patterns: `api.example.com`, `api.example.com:8443`, `*.example.com`.
    pub hosts: Vec<String>,
    /// Secret values by name.
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("hosts", &self.hosts)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Performs plugin calls. Implementations must be safe to call concurrently.
#[async_trait]
pub trait StepExecutor: Send + Sync {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError>;

    /// A rehearsal (a dry run) is given every call, the runner's built-in `core` actions too, so
    /// it shows each call a run would make; other executors only get plugin calls.
    fn rehearses(&self) -> bool {
        false
    }
}

/// The executor when no plugin is installed: every call fails, saying so (the built-in `core`
/// actions still work: the runner answers them itself).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPlugins;

#[async_trait]
impl StepExecutor for NoPlugins {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        Err(StepError::new(
            playbook::ErrorKind::Internal,
            format!(
                "plugin `{}` is not installed: no plugins folder is configured (`plugins:` for the server, `--plugins <dir>` for `riposte run`)",
                call.uses.plugin
            ),
        ))
    }
}
