//! An executor that calls nothing: it records each call and answers with a prepared output.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::event::StepError;
use crate::executor::{StepCall, StepExecutor};

/// Records what each step *would* call. Outputs come from `outputs` by step id (so later steps
/// can be rehearsed with realistic data), or are `null`.
#[derive(Debug, Default)]
pub struct DryRunExecutor {
    outputs: BTreeMap<String, serde_json::Value>,
    calls: Mutex<Vec<StepCall>>,
}

impl DryRunExecutor {
    pub fn new(outputs: BTreeMap<String, serde_json::Value>) -> Self {
        DryRunExecutor {
            outputs,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<StepCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl StepExecutor for DryRunExecutor {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        let output = self
            .outputs
            .get(&call.step_id)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
        Ok(output)
    }

    fn rehearses(&self) -> bool {
        true
    }
}
