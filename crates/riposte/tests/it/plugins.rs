//! `riposte plugin inspect|new` and `riposte run --plugins` with real plugins.

use std::process::Command;

use axum::Json;
use axum::routing::post;
use serde_json::json;

use crate::commands::{riposte, text, workspace_root};

fn path_of(plugin: &str) -> String {
    test_support::plugin(plugin).display().to_string()
}

#[test]
fn inspect_prints_what_a_plugin_declares() {
    let human = riposte(&["plugin", "inspect", &path_of("enrich-ioc")]);
    let stdout = text(&human.stdout);
    assert!(human.status.success(), "{}", text(&human.stderr));
    assert!(stdout.contains("enrich-ioc/check-ip"), "{stdout}");
    assert!(
        stdout.contains("attached by the host as the `key` header"),
        "{stdout}"
    );
    // Every input, the optional ones with their defaults, and every output with its type.
    for line in [
        "ip: string (required)",
        "base_url: string (optional, default \"https://api.abuseipdb.com\")",
        "max_age_days: integer (optional, default 90, 1 to 365)",
        "score: integer (always, 0 to 100)",
        "verdict: one of: malicious, suspicious, clean, unknown (always)",
    ] {
        assert!(stdout.contains(line), "`{line}` missing from:\n{stdout}");
    }

    let json = riposte(&["plugin", "inspect", "--json", &path_of("testbed")]);
    let manifest: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON manifest");
    assert_eq!(manifest["name"], "testbed");
    let block = manifest["actions"]
        .as_array()
        .and_then(|actions| actions.iter().find(|a| a["name"] == "block"))
        .expect("the block action");
    assert_eq!(block["destructive"], true);
}

#[test]
fn inspect_refuses_a_file_that_is_not_a_plugin() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("junk.wasm");
    std::fs::write(&file, b"not wasm").expect("write");
    let output = riposte(&["plugin", "inspect", file.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("is not a usable plugin"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn new_scaffolds_a_plugin_that_builds_and_loads() {
    let dir = tempfile::tempdir().expect("dir");
    let sdk = workspace_root().join("plugins/sdk");
    let dir_arg = dir.path().to_str().expect("utf-8");
    let sdk_arg = sdk.to_str().expect("utf-8");

    let refused = riposte(&[
        "plugin", "new", "Bad_Name", "--dir", dir_arg, "--sdk", sdk_arg,
    ]);
    assert_eq!(refused.status.code(), Some(2));

    let created = riposte(&[
        "plugin",
        "new",
        "threat-intel",
        "--dir",
        dir_arg,
        "--sdk",
        sdk_arg,
    ]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let crate_dir = dir.path().join("threat-intel");
    // Build it where the other plugins are built, so the SDK and its dependencies are reused.
    let target = test_support::plugin_dir().join("../..");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(&crate_dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the scaffolded plugin must build");
    let wasm = target.join("wasm32-wasip2/release/threat_intel.wasm");
    let inspected = riposte(&["plugin", "inspect", wasm.to_str().expect("utf-8")]);
    assert!(
        text(&inspected.stdout).contains("threat-intel/lookup"),
        "{}",
        text(&inspected.stderr)
    );
}

#[tokio::test]
async fn run_loads_plugins_and_calls_a_real_api_within_the_grant() {
    let router = axum::Router::new().route(
        "/tickets",
        post(|Json(body): Json<serde_json::Value>| async move {
            Json(json!({"id": 7, "title": body["title"]}))
        }),
    );
    let (addr, seen) = test_support::serve(router).await;
    let dir = tempfile::tempdir().expect("dir");
    let playbook = dir.path().join("ticket.yaml");
    std::fs::write(
        &playbook,
        format!(
            r#"
name: ticket
trigger: {{ webhook: t, public: true }}
plugins:
  http: {{ hosts: ["127.0.0.1:{port}"] }}
steps:
  - id: open
    uses: http/request
    with:
      method: POST
      url: "http://127.0.0.1:{port}/tickets"
      json: {{ title: "Alert {{{{ trigger.id }}}}" }}
outputs:
  ticket: "{{{{ steps.open.output.body.id }}}}"
"#,
            port = addr.port()
        ),
    )
    .expect("write playbook");
    let event = dir.path().join("event.json");
    std::fs::write(&event, r#"{"id": "A-1"}"#).expect("write event");
    let plugins = test_support::plugin_dir().display().to_string();
    let args = |allow: bool| {
        let mut args = vec![
            "run".to_owned(),
            playbook.display().to_string(),
            "--event".to_owned(),
            event.display().to_string(),
            "--plugins".to_owned(),
            plugins.clone(),
        ];
        if allow {
            args.extend(["--allow-private".to_owned(), "127.0.0.0/8".to_owned()]);
        }
        args
    };
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_riposte"))
                .args(&args)
                .output()
                .expect("runs")
        })
    };

    let refused = run(args(false)).await.expect("joined");
    assert_eq!(
        refused.status.code(),
        Some(1),
        "loopback is private unless allowed"
    );
    assert!(
        text(&refused.stderr).contains("the host refused the request"),
        "{}",
        text(&refused.stderr)
    );
    assert!(seen.all().is_empty());

    let allowed = run(args(true)).await.expect("joined");
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let outputs: serde_json::Value = serde_json::from_slice(&allowed.stdout).expect("outputs");
    assert_eq!(outputs, json!({"ticket": 7}));
    assert_eq!(seen.all().len(), 1);
}
