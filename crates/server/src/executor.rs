//! What steps call: the built-in `core` plugin, then the WebAssembly plugins.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use playbook::ErrorKind;
use runner::{StepCall, StepError, StepExecutor};

use crate::metrics::Metrics;

/// The built-in `core` plugin (`core.echo` returns its input), and the loaded WebAssembly plugins.
/// Every call is timed into the plugin latency histogram.
pub struct PluginExecutor {
    pub plugins: Option<plugin_host::PluginHost>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl StepExecutor for PluginExecutor {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        let started = Instant::now();
        let (plugin, action) = (call.uses.plugin.clone(), call.uses.action.clone());
        let result = self.call(call).await;
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.kind.to_string(),
        };
        self.metrics
            .plugin_call(&plugin, &action, &outcome, started.elapsed());
        result
    }
}

impl PluginExecutor {
    async fn call(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        match (
            call.uses.plugin.as_str(),
            call.uses.action.as_str(),
            &self.plugins,
        ) {
            ("core", "echo", _) => Ok(call.input),
            ("core", action, _) => Err(StepError::new(
                ErrorKind::InvalidInput,
                format!("the core plugin has no action `{action}`; it has `echo`"),
            )),
            (_, _, Some(host)) => host.invoke(&call).await,
            (plugin, _, None) => Err(StepError::new(
                ErrorKind::Internal,
                format!(
                    "plugin `{plugin}` is not installed: no plugins folder is configured (`plugins:` for the server, `--plugins <dir>` for `riposte run`)"
                ),
            )),
        }
    }
}
