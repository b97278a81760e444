//! What a playbook's trigger makes of an event before any run starts: its `filter` decides
//! whether the event starts a run, and its `dedupe` key whether an earlier run already covers it.

use crate::error::Error;
use crate::model::Playbook;

/// The trigger's verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screening {
    /// False when the trigger's `filter` rejects the event.
    pub matched: bool,
    /// The rendered `dedupe` key, if the trigger has one and the event matched.
    pub dedupe_key: Option<String>,
}

impl Playbook {
    /// Evaluates the trigger's `filter` and `dedupe` key for `event`.
    pub fn screen(&self, event: &serde_json::Value) -> Result<Screening, Error> {
        let context = minijinja::context! {
            trigger => minijinja::Value::from_serialize(event),
            vars => minijinja::Value::from_serialize(&self.vars),
        };
        let matched = match &self.trigger.filter {
            Some(filter) => filter.evaluate(&context)?,
            None => true,
        };
        let dedupe_key = match (&self.trigger.dedupe, matched) {
            (Some(dedupe), true) => Some(match dedupe.key.render(&context)? {
                serde_json::Value::String(key) => key,
                other => other.to_string(),
            }),
            _ => None,
        };
        Ok(Screening {
            matched,
            dedupe_key,
        })
    }
}
