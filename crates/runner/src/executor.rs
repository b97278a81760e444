//! The seam between the runner and whatever performs a step: the WASM plugin host in production,
//! a recorder in dry runs and tests.

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
}

/// Performs plugin calls. Implementations must be safe to call concurrently.
#[async_trait]
pub trait StepExecutor: Send + Sync {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError>;
}
