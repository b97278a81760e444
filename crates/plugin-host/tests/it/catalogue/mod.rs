//! The connector catalogue (`connectors/`), each connector's every action called through
//! [`plugin_host::Connectors`] against a loopback server that answers as the vendor documents.

mod intel;
mod response;

use std::collections::BTreeMap;
use std::time::Duration;

use plugin_host::{Connectors, EgressPolicy};
use runner::{Grant, StepCall};

/// The repository's catalogue, with `base_url` (and any other setting) of `connector` pointed at
/// a loopback server.
pub(crate) fn catalogue(connector: &str, settings: &[(&str, serde_json::Value)]) -> Connectors {
    let mut all = BTreeMap::new();
    all.insert(
        connector.to_owned(),
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    );
    let egress = EgressPolicy {
        allow_private: vec!["127.0.0.0/8".parse().expect("cidr")],
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        ..EgressPolicy::default()
    };
    Connectors::load_dir(
        &test_support::workspace_root().join("connectors"),
        &all,
        egress,
    )
    .expect("the catalogue loads")
}

/// A call of `connector/action` with `input`, granted `secrets`.
pub(crate) fn call(
    connector: &str,
    action: &str,
    input: serde_json::Value,
    secrets: &[(&str, &str)],
) -> StepCall {
    StepCall {
        run_id: "run-1".into(),
        step_id: "step".into(),
        uses: playbook::PluginRef {
            plugin: connector.into(),
            action: action.into(),
            version: None,
        },
        input,
        attempt: 1,
        item: None,
        idempotency_key: "run-1:step".into(),
        timeout: Duration::from_secs(5),
        grant: Grant {
            hosts: Vec::new(),
            secrets: secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        },
    }
}
