//! The real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port,
//! with a webhook receiver that sends to the URLs a test gives (with a bearer token, resolved
//! alerts included), grouping by `alertname` and waiting one second before it sends. Killed
//! when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A running Alertmanager.
pub struct Alertmanager {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Where a receiver sends, and the bearer token it sends, if any.
pub struct Webhook<'a> {
    pub url: &'a str,
    pub bearer: Option<&'a str>,
}

impl Alertmanager {
    pub fn start(webhooks: &[Webhook<'_>]) -> Alertmanager {
        let dir = tempfile::tempdir().expect("a temporary folder for Alertmanager");
        let configs: String = webhooks
            .iter()
            .map(|webhook| {
                let auth = webhook
                    .bearer
                    .map(|token| format!("\n        http_config:\n          authorization:\n            credentials: {token}"))
                    .unwrap_or_default();
                format!(
                    "\n      - url: {}\n        send_resolved: true\n        max_alerts: 0{auth}",
                    webhook.url
                )
            })
            .collect();
        let config = format!(
            "route:\n  receiver: riposte\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: riposte\n    webhook_configs:{configs}\n"
        );
        std::fs::write(dir.path().join("alertmanager.yml"), config).expect("config");
        let port = free_port();
        let binary = ["prometheus-alertmanager", "alertmanager"]
            .into_iter()
            .find(|name| {
                Command::new(name)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("Alertmanager is installed (Debian's prometheus-alertmanager; scripts/test installs it)");
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Alertmanager starts");
        Alertmanager {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until it answers `/-/ready`.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{}/-/ready", self.base())).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "Alertmanager did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts alerts to its API (`POST /api/v2/alerts`), as Prometheus does.
    pub async fn post_alerts(&self, alerts: &serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.base()))
            .json(alerts)
            .send()
            .await
            .expect("Alertmanager answers");
        assert!(
            response.status().is_success(),
            "Alertmanager refused the alerts: {}",
            response.text().await.unwrap_or_default()
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
