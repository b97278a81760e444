//! The plugin host with real plugins, built from `plugins/` by the test setup, against real HTTP
//! servers on 127.0.0.1.

mod apis;
mod catalogue;
mod connectors;
mod crowdsec;
mod hostile;
mod plugins;

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugin_host::{EgressPolicy, HostConfig, PluginHost};
use runner::{Grant, StepCall, StepError};

pub(crate) fn wasm(name: &str) -> PathBuf {
    test_support::plugin(name)
}

/// A host with the given plugins loaded; loopback is reachable only if `allow_loopback`.
pub(crate) async fn host_with(plugins: &[&str], allow_loopback: bool) -> PluginHost {
    host_from(host_config(allow_loopback), plugins).await
}

/// The tests' host configuration; loopback is reachable only if `allow_loopback`.
pub(crate) fn host_config(allow_loopback: bool) -> HostConfig {
    // One compilation cache for all tests: compiling a component is the slow part of loading it.
    let mut config = HostConfig::new(Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"));
    config.max_memory_bytes = 32 * 1024 * 1024;
    config.egress = EgressPolicy {
        allow_private: if allow_loopback {
            vec!["127.0.0.0/8".parse().expect("cidr")]
        } else {
            Vec::new()
        },
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        ..EgressPolicy::default()
    };
    config
}

/// A host of `config` with the given plugins loaded.
pub(crate) async fn host_from(config: HostConfig, plugins: &[&str]) -> PluginHost {
    let mut host = PluginHost::new(config).expect("host starts");
    for plugin in plugins {
        host.load(&wasm(plugin)).await.expect("plugin loads");
    }
    host
}

pub(crate) fn call(plugin: &str, action: &str, input: serde_json::Value) -> StepCall {
    StepCall {
        run_id: "run-1".into(),
        step_id: "step".into(),
        uses: playbook::PluginRef {
            plugin: plugin.into(),
            action: action.into(),
            version: None,
        },
        input,
        attempt: 1,
        item: None,
        idempotency_key: "run-1:step".into(),
        timeout: Duration::from_secs(5),
        grant: Grant::default(),
    }
}

pub(crate) fn granted(mut call: StepCall, hosts: &[&str], secrets: &[(&str, &str)]) -> StepCall {
    call.grant = Grant {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        secrets: secrets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    call
}

pub(crate) async fn invoke(
    host: &PluginHost,
    call: StepCall,
) -> Result<serde_json::Value, StepError> {
    host.invoke(&call).await
}

pub(crate) use test_support::serve;
