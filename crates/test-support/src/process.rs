//! `riposte` processes for the crash tests and the load generator: started from one folder (its
//! `riposte.yaml`, its playbooks and data), with an environment and a port of their own; each
//! role's log is appended to `<role>.log` in the folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start `riposte` processes of one deployment.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `riposte` binary.
    pub binary: PathBuf,
    /// Holds `riposte.yaml`; the processes run in it.
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Where `serve` listens, on 127.0.0.1.
    pub port: u16,
}

impl Launcher {
    /// Starts `riposte <role>` (`serve` or `worker`) with `workers` workers.
    pub fn spawn(&self, role: &str, workers: usize) -> Child {
        let mut command = Command::new(&self.binary);
        command
            .args([role, "--config"])
            .arg(self.dir.join("riposte.yaml"))
            .current_dir(&self.dir)
            .envs(&self.env)
            .env("RIPOSTE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("RIPOSTE_WORKERS", workers.to_string())
            .env("RIPOSTE_LOG", "warn")
            .stdout(Stdio::null());
        if let Ok(log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(role))
        {
            command.stderr(log);
        }
        command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()))
    }

    /// The API's address.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the API answers `/readyz`, or says why not after `within`.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", self.base())).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "riposte did not get ready within {within:?}:\n{}",
                    self.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the processes logged so far.
    pub fn logs(&self) -> String {
        ["serve", "worker"]
            .iter()
            .filter_map(|role| std::fs::read_to_string(self.log(role)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn log(&self, role: &str) -> PathBuf {
        Path::new(&self.dir).join(format!("{role}.log"))
    }
}
