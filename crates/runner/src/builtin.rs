//! The built-in `core` plugin, answered by the runner itself without a plugin host: `core/echo`
//! returns its input (for trying playbooks out, and for steps that only shape data).

use playbook::ErrorKind;

use crate::event::StepError;
use crate::executor::StepCall;

/// The plugin name of the built-in actions.
pub const CORE: &str = "core";

/// The answer of a built-in action, or `None` when `call` is for another plugin.
pub(crate) fn call(call: &StepCall) -> Option<Result<serde_json::Value, StepError>> {
    if call.uses.plugin != CORE {
        return None;
    }
    Some(match call.uses.action.as_str() {
        "echo" => Ok(call.input.clone()),
        action => Err(StepError::new(
            ErrorKind::InvalidInput,
            format!("the core plugin has no action `{action}`; it has `echo`"),
        )),
    })
}
