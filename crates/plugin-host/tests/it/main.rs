//! The plugin host with real plugins, built from `plugins/` by the test setup, against real HTTP
//! servers on 127.0.0.1.

mod apis;
mod hostile;
mod plugins;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use plugin_host::{EgressPolicy, HostConfig, PluginHost};
use runner::{Grant, StepCall, StepError};

/// Builds the plugins once per test process and returns the folder holding the `.wasm` files.
pub(crate) fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugins");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the plugins failed");
        target.join("wasm32-wasip2/release")
    })
}

pub(crate) fn wasm(name: &str) -> PathBuf {
    plugin_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

/// A host with the given plugins loaded; loopback is reachable only if `allow_loopback`.
pub(crate) async fn host_with(
    plugins: &[&str],
    allow_loopback: bool,
) -> (PluginHost, tempfile::TempDir) {
    // One compilation cache for all tests: compiling a component is the slow part of loading it.
    let cache = tempfile::tempdir().expect("scratch dir");
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
    let mut host = PluginHost::new(config).expect("host starts");
    for plugin in plugins {
        host.load(&wasm(plugin)).await.expect("plugin loads");
    }
    (host, cache)
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

/// What a loopback server saw.
#[derive(Clone, Default)]
pub(crate) struct Seen {
    pub(crate) requests: Arc<Mutex<Vec<(String, http::HeaderMap, String)>>>,
}

impl Seen {
    pub(crate) fn all(&self) -> Vec<(String, http::HeaderMap, String)> {
        self.requests.lock().expect("lock").clone()
    }
}

/// Serves `router` on 127.0.0.1 with an ephemeral port, recording every request.
pub(crate) async fn serve(router: axum::Router) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let recorder = seen.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let recorder = recorder.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                recorder.requests.lock().expect("lock").push((
                    parts.uri.to_string(),
                    parts.headers.clone(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
                next.run(axum::extract::Request::from_parts(
                    parts,
                    axum::body::Body::from(bytes),
                ))
                .await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (address, seen)
}
