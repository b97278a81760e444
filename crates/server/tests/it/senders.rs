//! Senders as they ship: the real Prometheus Alertmanager posting a grouped notification (one run
//! per alert), a resend (no run), and the resolved notification (recorded on the runs the firing
//! alerts started); and a sender that can only be given a URL, authenticated by a token in it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use runner::RunEvent;
use test_support::alertmanager::{Alertmanager, Webhook};

use crate::{BEARER_TOKEN, Backend, Server, answer};

const ALERTMANAGER: &str = r#"
name: alertmanager-batch
trigger:
  webhook: alertmanager
  auth: token
  split: "{{ trigger.alerts }}"
  dedupe: { key: "{{ trigger.fingerprint }}", window: 24h }
  resolved: trigger.status == 'resolved'
incident:
  alert: "{{ trigger.labels.alertname }}"
  address: "{{ trigger.labels.instance }}"
steps:
  - id: note
    uses: core/echo
    timeout: 2s
    with: { address: "{{ trigger.labels.instance }}" }
"#;

const ADDRESSES: [&str; 3] = ["198.51.100.11", "198.51.100.12", "198.51.100.13"];

/// The alerts as Prometheus posts them to Alertmanager's API: firing, or ended at `ends`.
fn alerts(ends: Option<SystemTime>) -> serde_json::Value {
    let rfc3339 = |at: SystemTime| humantime::format_rfc3339_seconds(at).to_string();
    let started = SystemTime::now() - Duration::from_secs(60);
    serde_json::Value::Array(
        ADDRESSES
            .iter()
            .map(|address| {
                let mut alert = serde_json::json!({
                    "labels": { "alertname": "SshBruteForce", "instance": address, "severity": "critical" },
                    "annotations": { "summary": format!("SSH brute force from {address}") },
                    "startsAt": rfc3339(started),
                });
                if let Some(ends) = ends {
                    alert["endsAt"] = serde_json::json!(rfc3339(ends));
                }
                alert
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_groups_start_one_run_per_alert_and_resolve_them() {
    let server = Server::listening(
        Backend::Sqlite,
        &[("alertmanager.yaml", ALERTMANAGER.into())],
        &[],
        "",
    )
    .await;
    // A second receiver records exactly what Alertmanager sends, to send it again.
    let (copy, received) = test_support::serve(
        axum::Router::new().route("/copy", axum::routing::post(|| async { "ok" })),
    )
    .await;
    let riposte = format!("{}/hooks/alertmanager", server.base);
    let copy = format!("http://{copy}/copy");
    let alertmanager = Alertmanager::start(&[
        Webhook {
            url: &riposte,
            bearer: Some(BEARER_TOKEN),
        },
        Webhook {
            url: &copy,
            bearer: None,
        },
    ]);
    alertmanager.wait_ready().await;
    alertmanager.post_alerts(&alerts(None)).await;

    // One grouped notification, three runs: one per alert, each with its own address.
    let runs = wait_for(Duration::from_secs(30), || async {
        let page = server
            .store
            .list_runs(&store::RunQuery {
                playbook: Some("alertmanager-batch".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("runs");
        (page.len() == ADDRESSES.len()).then_some(page)
    })
    .await;
    let mut addresses = BTreeSet::new();
    for run in &runs {
        let state = server.finished(&run.run_id, Duration::from_secs(10)).await;
        crate::assert_succeeded(&state);
        addresses.insert(
            state.incident["address"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        assert_eq!(state.incident["alert"], "SshBruteForce");
    }
    assert_eq!(
        addresses,
        ADDRESSES.iter().map(|a| (*a).to_owned()).collect(),
        "one run per address"
    );

    // The same notification again (Alertmanager resends when a delivery failed): nothing new.
    let notification = received.all().first().expect("a notification").body.clone();
    let (status, resent) = answer(
        server
            .client
            .post(&riposte)
            .bearer_auth(BEARER_TOKEN)
            .header("content-type", "application/json")
            .body(notification)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        (status, resent["status"].as_str()),
        (200, Some("duplicate")),
        "{resent}"
    );
    assert_eq!(resent["runs"].as_array().map(Vec::len), Some(3), "{resent}");

    // The alerts end: Alertmanager sends them resolved, and each lands on its run.
    alertmanager
        .post_alerts(&alerts(Some(SystemTime::now() - Duration::from_secs(1))))
        .await;
    for run in &runs {
        let resolved = wait_for(Duration::from_secs(30), || async {
            let events = server.events(&run.run_id).await;
            events.iter().find_map(|event| match event {
                RunEvent::AlertResolved { event, .. } => Some(event.clone()),
                _ => None,
            })
        })
        .await;
        assert_eq!(resolved["status"], "resolved", "{resolved}");
        assert_eq!(resolved["labels"]["alertname"], "SshBruteForce");
    }
    let total = server
        .store
        .list_runs(&store::RunQuery {
            limit: 50,
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(total.len(), 3, "a resolved alert starts no run");
    server.stop().await;
}

/// A sender that can only be given a URL: the token is its last segment, two tokens work during
/// a rotation, and the token appears nowhere Riposte writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_token_authenticates_senders_that_set_no_header() {
    const TOKEN: &str = crate::URL_TOKEN;
    const NEXT: &str = crate::NEXT_URL_TOKEN;
    let playbook = r#"
name: splunk-alert
trigger: { webhook: splunk, auth: splunk }
incident:
  search: "{{ trigger.search_name }}"
steps:
  - { id: note, uses: core/echo, timeout: 2s, with: { search: "{{ trigger.search_name }}" } }
"#;
    let bearer = r#"
name: bearer-trigger
trigger: { webhook: bearer-trigger, auth: token }
steps:
  - { id: note, uses: core/echo, timeout: 2s }
"#;
    let server = Server::in_process(
        Backend::Sqlite,
        &[
            ("splunk.yaml", playbook.into()),
            ("bearer.yaml", bearer.into()),
        ],
    )
    .await;
    let body = r#"{"search_name": "Brute force", "sid": "scheduler__admin__search__RMD5", "result": {"src_ip": "198.51.100.7"}}"#;
    let post = |path: String| {
        let server = &server;
        async move {
            server
                .send(
                    "POST",
                    &path,
                    &[("content-type", "application/json")],
                    Some(body),
                )
                .await
        }
    };
    let (status, refused) = post("/hooks/splunk".into()).await;
    assert_eq!(status, 401, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("/hooks/<trigger>/<token>"))
    );
    let (status, wrong) = post("/hooks/splunk/not-the-token-at-all-000000".into()).await;
    assert_eq!(status, 401, "{wrong}");
    let mut runs = Vec::new();
    for token in [TOKEN, NEXT] {
        let (status, accepted) = post(format!("/hooks/splunk/{token}")).await;
        assert_eq!(status, 202, "{accepted}");
        runs.push(crate::run_id(&accepted));
    }
    // A trigger with another profile takes no token in its URL.
    let (status, _) = server
        .send(
            "POST",
            &format!("/hooks/bearer-trigger/{TOKEN}"),
            &[("content-type", "application/json")],
            Some(body),
        )
        .await;
    assert_eq!(status, 401);
    for run in &runs {
        crate::assert_succeeded(&server.finished(run, Duration::from_secs(10)).await);
        let journal = serde_json::to_string(&server.events(run).await).expect("JSON");
        let (_, detail) = server
            .send(
                "GET",
                &format!("/api/v1/runs/{run}/timeline"),
                &[("authorization", &format!("Bearer {}", crate::VIEWER_TOKEN))],
                None,
            )
            .await;
        for text in [journal, detail.to_string()] {
            assert!(!text.contains(TOKEN) && !text.contains(NEXT), "{text}");
        }
    }
    server.stop().await;
}

/// Polls `probe` until it yields, or fails after `within`.
async fn wait_for<T, F, Fut>(within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
