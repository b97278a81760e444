//! What steps call: the built-in `core` plugin, then the WebAssembly plugins.

use async_trait::async_trait;
use playbook::ErrorKind;
use runner::{StepCall, StepError, StepExecutor};

/// The built-in `core` plugin (`core.echo` returns its input), and the loaded WebAssembly plugins.
pub struct PluginExecutor {
    pub plugins: Option<plugin_host::PluginHost>,
}

#[async_trait]
impl StepExecutor for PluginExecutor {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
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
