//! What the store's benches share: an empty SQLite store with a runtime to drive it, and the
//! delivery of one alert as a SIEM sends it.

use std::time::Duration;

use store::{DedupeKey, Delivery, NewRun, SqliteStore, Synchronous};

/// A one-thread runtime and a new SQLite store in a temporary directory (kept while the store is).
pub(crate) fn sqlite_store() -> (tokio::runtime::Runtime, tempfile::TempDir, SqliteStore) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("bench.db"), Synchronous::Normal)
        .expect("a SQLite store");
    (runtime, dir, store)
}

/// Alert `n`: a delivery id and one run with a dedupe key (the common SIEM case).
pub(crate) fn delivery(n: usize) -> Delivery {
    let event = serde_json::json!({
        "rule": "ssh-brute-force",
        "ip": format!("185.220.{}.{}", n / 256 % 256, n % 256),
        "severity": "high",
    });
    Delivery {
        trigger: "siem".into(),
        delivery_id: Some(format!("delivery-{n}")),
        delivery_ttl: Duration::from_secs(24 * 3600),
        runs: vec![NewRun {
            run_id: uuid::Uuid::now_v7().to_string(),
            playbook: "malicious-ip".into(),
            accepted: runner::RunEvent::RunAccepted {
                trigger: "siem".into(),
                actor: "webhook:siem".into(),
                delivery_id: Some(format!("delivery-{n}")),
                playbook: Some("malicious-ip".into()),
                event_sha256: Some(runner::event_digest(&event)),
                at: store::now_millis(),
            },
            event,
            dedupe: Some(DedupeKey {
                key: format!("ssh-brute-force:{n}"),
                window_ms: 3_600_000,
            }),
        }],
        ignored: Vec::new(),
        received_at: store::now_millis(),
    }
}
