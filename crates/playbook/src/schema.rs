//! placeholder
pub fn playbook_schema() -> serde_json::Value { serde_json::Value::Null }
