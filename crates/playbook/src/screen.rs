//! What a playbook's trigger makes of a delivery before any run starts: `split` turns a batch into
//! one event per item; for each event, `filter` decides whether it starts a run, `dedupe` whether
//! an earlier run already covers it, and `resolved` whether it reports that an alert ended.

use crate::error::Error;
use crate::model::Playbook;

/// Most events one delivery may split into.
pub const MAX_SPLIT_ITEMS: usize = 1_000;

/// The trigger's verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screening {
    /// False when the trigger's `filter` rejects the event.
    pub matched: bool,
    /// The rendered `dedupe` key, if the trigger has one and the event matched.
    pub dedupe_key: Option<String>,
    /// True when the event matched and reports that its alert ended (`resolved`).
    pub resolved: bool,
}

impl Playbook {
    /// The events a delivery makes: the items `split` yields, or the delivery itself.
    pub fn split(&self, delivery: &serde_json::Value) -> Result<Vec<serde_json::Value>, Error> {
        let Some(split) = &self.trigger.split else {
            return Ok(vec![delivery.clone()]);
        };
        let context = self.trigger_context(delivery);
        match split.render(&context)? {
            serde_json::Value::Array(items) if items.len() <= MAX_SPLIT_ITEMS => Ok(items),
            serde_json::Value::Array(items) => Err(Error::Split(format!(
                "`split` yielded {} items; a delivery may hold at most {MAX_SPLIT_ITEMS}",
                items.len()
            ))),
            other => Err(Error::Split(format!(
                "`split` must yield a list, but it yielded {}",
                match other {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Object(_) => "a mapping",
                    serde_json::Value::Array(_) => "a list",
                }
            ))),
        }
    }

    /// Evaluates the trigger's `filter`, `dedupe` key and `resolved` for one event.
    pub fn screen(&self, event: &serde_json::Value) -> Result<Screening, Error> {
        let context = self.trigger_context(event);
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
        let resolved = match (&self.trigger.resolved, matched) {
            (Some(resolved), true) => resolved.evaluate(&context)?,
            _ => false,
        };
        Ok(Screening {
            matched,
            dedupe_key,
            resolved,
        })
    }

    pub(crate) fn trigger_context(&self, event: &serde_json::Value) -> minijinja::Value {
        minijinja::context! {
            trigger => minijinja::Value::from_serialize(event),
            vars => minijinja::Value::from_serialize(&self.vars),
        }
    }
}
