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
    // Under load Alertmanager may flush the group before all three alerts are in it, and send
    // the rest a group interval later: take the notification that carries all three.
    let notification = wait_for(Duration::from_secs(30), || async {
        received.all().into_iter().find_map(|request| {
            let body: serde_json::Value = serde_json::from_str(&request.body).ok()?;
            let alerts = body["alerts"].as_array().map(Vec::len);
            (alerts == Some(ADDRESSES.len())).then_some(request.body)
        })
    })
    .await;
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
trigger: { webhook: splunk, auth: url }
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

/// Every sender's recipe (docs/senders/) with the payload shape that sender really posts
/// (tests/senders/), through the authentication that sender can really do: the runs it starts,
/// and the fields each run's `incident` extracts; for senders that report resolved alerts, the
/// resolved delivery lands on the runs the firing one started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sender_recipe_extracts_its_fields_from_what_the_sender_posts() {
    let root = test_support::workspace_root();
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
    };
    let senders: Vec<serde_json::Value> =
        serde_json::from_str(&read("tests/senders/senders.json")).expect("senders.json");
    assert!(senders.len() >= 9, "{} senders", senders.len());
    for sender in &senders {
        let name = sender["sender"].as_str().expect("sender");
        let field = |key: &str| sender[key].as_str().unwrap_or_default().to_owned();
        let profile = &sender["profile"];
        let (env, credential) = secrets_for(profile);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = Server::in_process_with_auth(
            Backend::Sqlite,
            &[(&format!("{name}.yaml"), read(&field("playbook")))],
            &format!("  {name}: {profile}"),
            &env,
        )
        .await;
        let post = |body: String| {
            let (server, credential, webhook, content_type) = (
                &server,
                &credential,
                field("webhook"),
                field("content_type"),
            );
            async move {
                let mut headers = vec![("content-type".to_owned(), content_type)];
                let mut path = format!("/hooks/{webhook}");
                match credential {
                    Credential::Header(name, value) => headers.push((name.clone(), value.clone())),
                    Credential::Hmac {
                        header,
                        prefix,
                        secret,
                    } => headers.push((header.clone(), hmac_hex(secret, prefix, body.as_bytes()))),
                    Credential::Path(token) => path = format!("{path}/{token}"),
                }
                let borrowed: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                server.send("POST", &path, &borrowed, Some(&body)).await
            }
        };
        let (status, answer) = post(read(&format!("tests/senders/{}", field("fixture")))).await;
        let expected: Vec<serde_json::Value> =
            serde_json::from_str(&read(&format!("tests/senders/{}", field("expected"))))
                .expect("expected incidents");
        let runs: Vec<String> = answer["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|run| run["duplicate"] == false)
            .filter_map(|run| run["run_id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(status, 202, "{name}: {answer}");
        assert_eq!(
            runs.len() as u64,
            sender["runs"].as_u64().unwrap_or(0),
            "{name}: {answer}"
        );
        assert_eq!(runs.len(), expected.len(), "{name}: {answer}");
        for (run, incident) in runs.iter().zip(&expected) {
            let state = server.finished(run, Duration::from_secs(10)).await;
            crate::assert_succeeded(&state);
            assert_eq!(
                serde_json::Value::Object(state.incident.clone()),
                *incident,
                "{name}: the incident of run {run}"
            );
        }
        if let Some(resolved) = sender["resolved_fixture"].as_str() {
            let (status, answer) = post(read(&format!("tests/senders/{resolved}"))).await;
            assert_eq!(
                (status, answer["status"].as_str()),
                (200, Some("resolved")),
                "{name}: {answer}"
            );
            let recorded: BTreeSet<String> = answer["resolved"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["run_id"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(
                recorded.len() as u64,
                sender["resolved_recorded"].as_u64().unwrap_or(0),
                "{name}: {answer}"
            );
            for run in &recorded {
                assert!(
                    runs.contains(run),
                    "{name}: {run} is not a run the firing alerts started"
                );
                assert!(
                    server
                        .events(run)
                        .await
                        .iter()
                        .any(|event| matches!(event, RunEvent::AlertResolved { .. })),
                    "{name}: run {run} does not record the resolution"
                );
            }
        }
        server.stop().await;
    }
}

/// How a test sender authenticates.
enum Credential {
    Header(String, String),
    Hmac {
        header: String,
        prefix: String,
        secret: String,
    },
    Path(String),
}

/// Secret values for a profile's variables, and how a sender presents them.
fn secrets_for(profile: &serde_json::Value) -> (Vec<(String, String)>, Credential) {
    let variables = |key: &str| -> Vec<String> {
        profile[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let token = "recipe-token-5d1c9e2a7b3f4a6c8e0d1f2a".to_owned();
    match profile["type"].as_str().unwrap_or_default() {
        "bearer" => (
            variables("tokens_env")
                .into_iter()
                .map(|v| (v, token.clone()))
                .collect(),
            Credential::Header("authorization".into(), format!("Bearer {token}")),
        ),
        "basic" => {
            use base64::Engine as _;
            let pair = "elastic-connector:recipe-password-3c9f".to_owned();
            let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
            (
                variables("credentials_env")
                    .into_iter()
                    .map(|v| (v, pair.clone()))
                    .collect(),
                Credential::Header("authorization".into(), format!("Basic {encoded}")),
            )
        }
        "hmac-sha256" => (
            variables("secrets_env")
                .into_iter()
                .map(|v| (v, token.clone()))
                .collect(),
            Credential::Hmac {
                header: profile["header"]
                    .as_str()
                    .unwrap_or("x-hub-signature-256")
                    .to_owned(),
                prefix: profile["prefix"].as_str().unwrap_or("sha256=").to_owned(),
                secret: token,
            },
        ),
        "url-token" => (
            variables("tokens_env")
                .into_iter()
                .map(|v| (v, token.clone()))
                .collect(),
            Credential::Path(token),
        ),
        other => panic!("no test credential for profile type {other}"),
    }
}

fn hmac_hex(secret: &str, prefix: &str, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{prefix}{hex}")
}
