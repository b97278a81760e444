//! A new user's connector: one YAML file for an API Riposte has never seen (a loopback asset
//! inventory), checked by `riposte validate` beside the playbook that calls it, then called by a
//! real `riposte serve` for a real webhook.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use runner::{RunEvent, RunState, RunStatus};
use store::Store;
use test_support::process::Launcher;
use test_support::{RedisServer, free_port};

use crate::commands::text;

const INVENTORY_TOKEN: &str = "inv-token-93be11";

/// The user's file: their inventory's one lookup, by address.
const CONNECTOR: &str = r#"connector: inventory
version: 1.0.0
description: Who owns an address, from our asset inventory.
base_url: https://inventory.corp.example/api
secrets:
  inventory_token: A read-only API token.
auth:
  type: header
  header: X-Inventory-Token
  secret: inventory_token
actions:
  owner:
    description: The asset and owner behind an address.
    input:
      type: object
      required: [ip]
      additionalProperties: false
      properties:
        ip: { type: string }
        include_retired: { type: boolean, default: false }
    request:
      path: /assets
      query:
        ip: "{{ input.ip }}"
        retired: "{{ input.include_retired }}"
    ok: [200, 404]
    output:
      known: "{{ response.status == 200 }}"
      owner: "{{ response.body.owner if response.status == 200 else none }}"
      hostname: "{{ response.body.hostname if response.status == 200 else none }}"
"#;

const PLAYBOOK: &str = r#"name: who-owns-it
trigger:
  webhook: suspicious-login
  public: true
secrets: [inventory_token]
plugins:
  inventory:
    secrets: [inventory_token]
steps:
  - id: owner
    uses: inventory/owner
    with:
      ip: "{{ trigger.source_ip }}"
outputs:
  owner: "{{ steps.owner.output.owner }}"
"#;

/// The loopback inventory: checks the token where the user's API expects it.
fn inventory() -> axum::Router {
    axum::Router::new().route(
        "/api/assets",
        get(
            |headers: HeaderMap, Query(query): Query<BTreeMap<String, String>>| async move {
                if headers
                    .get("x-inventory-token")
                    .and_then(|v| v.to_str().ok())
                    != Some(INVENTORY_TOKEN)
                {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(serde_json::json!({"error": "bad token"})),
                    );
                }
                match query.get("ip").map(String::as_str) {
                    Some("10.20.0.15") => (
                        StatusCode::OK,
                        Json(serde_json::json!({
                            "ip": "10.20.0.15", "hostname": "build-07", "owner": "platform-team",
                            "retired": query.get("retired").map(String::as_str) == Some("true"),
                        })),
                    ),
                    _ => (
                        StatusCode::NOT_FOUND,
                        Json(serde_json::json!({"error": "no such asset"})),
                    ),
                }
            },
        ),
    )
}

fn validate(dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["validate", "connectors", "playbooks"])
        .current_dir(dir)
        .env_remove("RIPOSTE_LOG")
        .output()
        .expect("the riposte binary runs")
}

#[test]
fn validate_checks_a_connector_and_the_calls_of_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["connectors", "playbooks"] {
        std::fs::create_dir(dir.path().join(sub)).expect("dir");
    }
    std::fs::write(dir.path().join("connectors/inventory.yaml"), CONNECTOR).expect("write");
    std::fs::write(dir.path().join("playbooks/who-owns-it.yaml"), PLAYBOOK).expect("write");
    let valid = validate(dir.path());
    assert!(valid.status.success(), "{}", text(&valid.stderr));
    assert!(
        text(&valid.stderr).contains("checked 1 playbook(s) and 1 connector(s): all valid"),
        "{}",
        text(&valid.stderr)
    );

    // A connector whose template reads a secret, and a playbook with a misspelt input and
    // without the required one: each named with its file, line and column.
    let leaky = CONNECTOR.replace(
        "ip: \"{{ input.ip }}\"",
        "ip: \"{{ input.ip }}\"\n        token: \"{{ secrets.inventory_token }}\"",
    );
    std::fs::write(dir.path().join("connectors/inventory.yaml"), leaky).expect("write");
    let invalid = validate(dir.path());
    assert!(!invalid.status.success());
    let stderr = text(&invalid.stderr);
    assert!(
        stderr.contains("error[unknown-reference]: `secrets` cannot be used in a request")
            && stderr.contains("connectors/inventory.yaml:25:"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("connectors/inventory.yaml"), CONNECTOR).expect("write");
    let misspelt = PLAYBOOK.replace("      ip: ", "      address: ");
    std::fs::write(dir.path().join("playbooks/who-owns-it.yaml"), misspelt).expect("write");
    let invalid = validate(dir.path());
    assert!(!invalid.status.success());
    let stderr = text(&invalid.stderr);
    assert!(
        stderr.contains("error[unknown-input]: step `owner` gives `inventory/owner` the input `address`, which it does not take")
            && stderr.contains("error[missing-input]: step `owner` calls `inventory/owner` without its required input `ip`")
            && stderr.contains("playbooks/who-owns-it.yaml:10:"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connector_is_called_from_a_playbook_by_the_server() {
    let (api, requests) = test_support::serve(inventory()).await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["connectors", "playbooks"] {
        std::fs::create_dir(dir.path().join(sub)).expect("dir");
    }
    std::fs::write(dir.path().join("connectors/inventory.yaml"), CONNECTOR).expect("write");
    std::fs::write(dir.path().join("playbooks/who-owns-it.yaml"), PLAYBOOK).expect("write");
    // The deployment points the connector at the inventory (here on loopback, which the egress
    // policy must then allow).
    let config = format!(
        r#"
playbooks: playbooks
connectors:
  path: connectors
  settings:
    inventory: {{ base_url: "http://{api}/api" }}
data_dir: data
redis: {{ url_env: CONNECTOR_REDIS_URL, prefix: conn }}
workers: {{ concurrency: 2, poll_interval: 20ms }}
egress:
  allow_private: [127.0.0.0/8]
"#
    );
    std::fs::write(dir.path().join("riposte.yaml"), config).expect("config");
    let launcher = Launcher {
        binary: env!("CARGO_BIN_EXE_riposte").into(),
        dir: dir.path().to_owned(),
        env: BTreeMap::from([
            ("CONNECTOR_REDIS_URL".to_owned(), redis.url()),
            (
                "RIPOSTE_SECRET_INVENTORY_TOKEN".to_owned(),
                INVENTORY_TOKEN.to_owned(),
            ),
        ]),
        port: free_port(),
    };
    let mut server = Killed(launcher.spawn("serve", 2));
    if let Err(problem) = launcher.wait_ready(Duration::from_secs(60)).await {
        panic!("riposte serve never got ready: {problem}");
    }

    let response = reqwest::Client::new()
        .post(format!("{}/hooks/suspicious-login", launcher.base()))
        .json(&serde_json::json!({"source_ip": "10.20.0.15", "user": "alice"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("posted");
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.expect("JSON");
    let run_id = answer["runs"][0]["run_id"]
        .as_str()
        .expect("a run")
        .to_owned();

    let store = store::RedisStore::connect(&redis.url(), "conn")
        .await
        .expect("redis");
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let events = store.events(&run_id).await.expect("events");
        if let Some(state) = RunState::from_events(&events)
            && state.status.is_terminal()
        {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end: {events:#?}\n{}",
            launcher.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state.status, RunStatus::Succeeded, "{}", launcher.logs());
    let output = state
        .step("owner")
        .and_then(|step| step.output.clone())
        .expect("the step's output");
    assert_eq!(
        output,
        serde_json::json!({"known": true, "owner": "platform-team", "hostname": "build-07"})
    );
    assert_eq!(
        state.outputs,
        Some(serde_json::json!({"owner": "platform-team"}))
    );

    let received = requests.all();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].uri, "/api/assets?ip=10.20.0.15&retired=false");
    // The journal holds what the step was given, never the token the host attached.
    let events = store.events(&run_id).await.expect("events");
    let journal = serde_json::to_string(&events).expect("JSON");
    assert!(!journal.contains(INVENTORY_TOKEN));
    assert!(
        events
            .iter()
            .any(|event| matches!(event, RunEvent::StepSucceeded { step, .. } if step == "owner"))
    );
    let verified = store::audit::verify_store(&store).await.expect("verified");
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    server.0.kill().ok();

    // The run, recorded as a test, holds the connector's answer but never its token, and
    // replays without the inventory.
    let root = dir.path().to_owned();
    let run = run_id.clone();
    let redis_url = redis.url();
    let recorded = tokio::task::spawn_blocking(move || {
        let record = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(["record", &run, "--config", "riposte.yaml"])
            .args(["--output", "playbooks/who-owns-it.test.yaml"])
            .env("CONNECTOR_REDIS_URL", redis_url)
            .env_remove("RIPOSTE_LOG")
            .current_dir(&root)
            .output()
            .expect("riposte record runs");
        let replay = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(["test", "playbooks"])
            .env_remove("RIPOSTE_LOG")
            .current_dir(&root)
            .output()
            .expect("riposte test runs");
        (record, replay)
    })
    .await
    .expect("joined");
    let (record, replay) = recorded;
    assert!(record.status.success(), "{}", text(&record.stderr));
    let recording = std::fs::read_to_string(dir.path().join("playbooks/who-owns-it.test.yaml"))
        .expect("the recording");
    assert!(!recording.contains(INVENTORY_TOKEN), "{recording}");
    assert!(recording.contains("platform-team"), "{recording}");
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    assert!(
        text(&replay.stderr).contains("1 test(s): 1 passed, 0 failed"),
        "{}",
        text(&replay.stderr)
    );
}

/// Kills the server when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn riposte_run_calls_a_connector_locally() {
    let (api, requests) = test_support::serve(inventory()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("connectors")).expect("dir");
    std::fs::write(dir.path().join("connectors/inventory.yaml"), CONNECTOR).expect("write");
    std::fs::write(dir.path().join("who-owns-it.yaml"), PLAYBOOK).expect("write");
    std::fs::write(
        dir.path().join("event.json"),
        r#"{"source_ip": "10.20.0.15"}"#,
    )
    .expect("write");
    let setting = format!("inventory.base_url=http://{api}/api");
    let cwd = dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(["run", "who-owns-it.yaml", "--event", "event.json", "--json"])
            .args([
                "--connectors",
                "connectors",
                "--connector-setting",
                &setting,
            ])
            .args(["--allow-private", "127.0.0.0/8"])
            .env("RIPOSTE_SECRET_INVENTORY_TOKEN", INVENTORY_TOKEN)
            .env_remove("RIPOSTE_LOG")
            .current_dir(cwd)
            .output()
            .expect("the riposte binary runs")
    })
    .await
    .expect("joined");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("\"owner\":\"platform-team\""),
        "the step's output is printed: {stdout}"
    );
    assert_eq!(requests.all().len(), 1);
}
