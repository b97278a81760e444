//! Shared helpers for the workspace's tests: real parts, started by the tests themselves.
//!
//! - [`plugin_dir`] builds the WebAssembly plugins in `plugins/` from source (once per test process;
//!   cargo's lock makes concurrent test processes wait for one build).
//! - [`serve`] runs an axum router on 127.0.0.1 with an ephemeral port and records every request,
//!   for loopback servers that speak the APIs plugins call.
//! - [`CrowdSec`] starts a real CrowdSec Local API (Debian's `crowdsec`) on a free port, with a
//!   registered watcher and bouncer, through `tests/services/crowdsec.sh`.
//! - [`browser::Browser`] is Debian's `chromium`, headless, driven over W3C WebDriver by its
//!   `chromedriver` on a free port.
//!
//! Never a dependency of production code.

pub mod alertmanager;
pub mod apis;
pub mod browser;
pub mod process;
pub mod vendors;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// Builds the plugins (release, `wasm32-wasip2`) and returns the folder holding the `.wasm` files.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        // Beside the workspace's own build (CI keeps it outside the clone), so rebuilds are rare.
        let target = std::env::var_os("RIPOSTE_PLUGIN_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("plugins"))
            })
            .unwrap_or_else(|| root.join("target/plugins"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status();
        match status {
            Ok(status) if status.success() => {}
            other => panic!(
                "building the plugins failed ({other:?}); is the wasm32-wasip2 target installed?"
            ),
        }
        target.join("wasm32-wasip2/release")
    })
}

/// The built plugin called `name` (`enrich-ioc` → `enrich_ioc.wasm`).
pub fn plugin(name: &str) -> PathBuf {
    plugin_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One request a loopback server received: path and query, headers, body.
#[derive(Debug, Clone)]
pub struct Received {
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// Everything a loopback server received, in order.
#[derive(Clone, Default)]
pub struct Recorder {
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    pub fn all(&self) -> Vec<Received> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Serves `router` on 127.0.0.1 with an ephemeral port, recording every request.
pub async fn serve(router: axum::Router) -> (SocketAddr, Recorder) {
    let recorder = Recorder::default();
    let sink = recorder.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let sink = sink.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                if let Ok(mut requests) = sink.requests.lock() {
                    requests.push(Received {
                        uri: parts.uri.to_string(),
                        headers: parts.headers.clone(),
                        body: String::from_utf8_lossy(&bytes).into_owned(),
                    });
                }
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
        .expect("binding 127.0.0.1:0");
    let address = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (address, recorder)
}

/// A throw-away CrowdSec Local API on 127.0.0.1, stopped when dropped.
pub struct CrowdSec {
    pub url: String,
    pub port: u16,
    pub machine_id: String,
    pub password: String,
    pub bouncer_key: String,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl CrowdSec {
    /// Starts the LAPI and waits until it answers. Needs Debian's `crowdsec` package, which
    /// `scripts/test` installs.
    pub fn start() -> CrowdSec {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let output = Command::new("bash")
            .arg(workspace_root().join("tests/services/crowdsec.sh"))
            .env("CS_DIR", dir.path())
            .env("CS_PORT", port.to_string())
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "CrowdSec did not start (is the `crowdsec` package installed? scripts/test installs it):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let env =
            std::fs::read_to_string(dir.path().join("env")).expect("the script writes an env file");
        let value = |name: &str| {
            env.lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("{name} missing from the CrowdSec env file"))
        };
        CrowdSec {
            url: value("CS_URL"),
            port,
            machine_id: value("CS_MACHINE_ID"),
            password: value("CS_MACHINE_PASSWORD"),
            bouncer_key: value("CS_BOUNCER_KEY"),
            pid: value("CS_PID").parse().expect("a pid"),
            _dir: dir,
        }
    }
}

impl Drop for CrowdSec {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

/// A throw-away `redis-server` (Debian's) on a free loopback port, with its data in a temporary
/// folder; killed when dropped. Append-only persistence is on, so [`RedisServer::restart`] keeps
/// what was acknowledged.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// Speaks TLS only, with a certificate for 127.0.0.1 signed by its own authority (`ca.pem`).
    tls: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(false)
    }

    /// A Redis that speaks only TLS, its certificate signed by a throw-away certificate
    /// authority ([`RedisServer::ca_file`]). Certificates are made with the `openssl` command.
    pub fn start_tls() -> RedisServer {
        RedisServer::start_with(true)
    }

    fn start_with(tls: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary folder for Redis");
        if tls {
            make_certificates(dir.path());
        }
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
            tls,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The PEM certificate of the authority that signed a TLS server's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        if self.tls {
            let file = |name: &str| self.dir.path().join(name);
            command
                .args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(file("server.pem"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.arg("--port").arg(self.port.to_string());
        }
        let child = command
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A certificate authority (`ca.pem`) and a certificate for 127.0.0.1 it signed (`server.pem`,
/// `server.key`), valid for a day.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (Debian package openssl) must be installed");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions file");
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(
        &format!(
            "req -x509 {new_key} -keyout ca.key -out ca.pem -days 1 -subj /CN=riposte-test-ca"
        )
        .split(' ')
        .collect::<Vec<_>>(),
    );
    openssl(
        &format!("req {new_key} -keyout server.key -out server.csr -subj /CN=127.0.0.1")
            .split(' ')
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "server.ext",
    ]);
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A run to accept straight into a store, as the server would accept it: its first record
/// made by a runner, from a delivery of `trigger` by `public`.
pub fn new_run(
    run_id: &str,
    playbook: &str,
    trigger: &str,
    event: serde_json::Value,
) -> store::NewRun {
    let runner = runner::Runner::new(
        std::sync::Arc::new(runner::NoPlugins),
        std::sync::Arc::new(runner::MemoryJournal::new()),
    );
    store::NewRun {
        run_id: run_id.to_owned(),
        playbook: playbook.to_owned(),
        accepted: runner.accepted(runner::Acceptance {
            trigger,
            actor: "public",
            delivery_id: None,
            playbook,
            event: &event,
        }),
        event,
        dedupe: None,
    }
}
