//! Playbooks tested like code: the quick start's real run, recorded from a real server with
//! `riposte record`, replays with `riposte test`; a change to the playbook that changes a step's
//! input fails the replay with a diff that names the step, and the JUnit report says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use test_support::free_port;
use test_support::process::Launcher;

use crate::commands::{text, workspace_root};

const TOKEN: &str = "quickstart-token-replay-7d1c";

fn riposte(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(args)
        .current_dir(dir)
        .env_remove("RIPOSTE_LOG")
        // The configuration's auth profile needs its variable, also for commands on the store.
        .env("RIPOSTE_QUICKSTART_TOKEN", TOKEN)
        .output()
        .expect("the riposte binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_run_recorded_replays_and_a_changed_input_fails_naming_the_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("playbooks/tests")).expect("dirs");
    let quick_start = workspace_root().join("playbooks/hello-webhook.yaml");
    let playbook = std::fs::read_to_string(&quick_start).expect("the quick start's playbook");
    std::fs::write(dir.path().join("playbooks/hello-webhook.yaml"), &playbook).expect("write");
    // The quick start's configuration, cut to its playbook: SQLite under data/, its auth profile.
    std::fs::write(
        dir.path().join("riposte.yaml"),
        "playbooks: playbooks\ndata_dir: data\nworkers: { concurrency: 2, poll_interval: 20ms }\nauth:\n  quickstart: { type: bearer, tokens_env: [RIPOSTE_QUICKSTART_TOKEN] }\n",
    )
    .expect("config");
    let launcher = Launcher {
        binary: env!("CARGO_BIN_EXE_riposte").into(),
        dir: dir.path().to_owned(),
        env: BTreeMap::from([("RIPOSTE_QUICKSTART_TOKEN".to_owned(), TOKEN.to_owned())]),
        port: free_port(),
    };
    let server = Killed(launcher.spawn("serve", 2));
    if let Err(problem) = launcher.wait_ready(Duration::from_secs(60)).await {
        panic!("riposte serve never got ready: {problem}");
    }
    // The README's alert.
    let response = reqwest::Client::new()
        .post(format!("{}/hooks/hello", launcher.base()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"rule": "ssh-brute-force", "ip": "185.220.101.45", "severity": "high"}))
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

    // It waits for someone to approve the containment step; approve it as the README does.
    let root = dir.path().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let approved = riposte(
            &root,
            &["approve", &run_id, "contain", "--config", "riposte.yaml"],
        );
        if approved.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never waited for approval: {}\n{}",
            text(&approved.stderr),
            launcher.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let test_file = "playbooks/tests/hello-webhook.test.yaml";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recorded = riposte(
            &root,
            &[
                "record",
                &run_id,
                "--config",
                "riposte.yaml",
                "--output",
                test_file,
            ],
        );
        if recorded.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run could not be recorded: {}\n{}",
            text(&recorded.stderr),
            launcher.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);
    let recording = std::fs::read_to_string(root.join(test_file)).expect("the test file");
    assert!(
        recording.contains(&format!("recorded_from: {run_id}")) || recording.contains(&run_id),
        "{recording}"
    );
    assert!(recording.contains("contain: approve"), "{recording}");

    // Replayed as recorded: it passes.
    let replayed = riposte(&root, &["test", "playbooks", "--junit", "report.xml"]);
    let stderr = text(&replayed.stderr);
    assert!(replayed.status.success(), "{stderr}\n{recording}");
    assert!(
        stderr.contains("PASS playbooks/tests/hello-webhook.test.yaml"),
        "{stderr}"
    );
    assert!(stderr.contains("1 test(s): 1 passed, 0 failed"), "{stderr}");

    // The triage step now shares the address as it came instead of defanged: the replay fails,
    // naming the step and showing the input that changed.
    let changed = playbook.replacen(
        "      ip: \"{{ trigger.ip | defang }}\"",
        "      ip: \"{{ trigger.ip }}\"",
        1,
    );
    assert_ne!(
        changed, playbook,
        "the quick start's triage input is no longer where it was"
    );
    std::fs::write(root.join("playbooks/hello-webhook.yaml"), changed).expect("write");
    let replayed = riposte(&root, &["test", "playbooks", "--junit", "report.xml"]);
    let stderr = text(&replayed.stderr);
    assert_eq!(replayed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("FAIL playbooks/tests/hello-webhook.test.yaml"),
        "{stderr}"
    );
    assert!(
        stderr.contains("✗ step `triage`: its input differs"),
        "{stderr}"
    );
    assert!(
        stderr.contains("-  \"ip\": \"185[.]220[.]101[.]45\""),
        "{stderr}"
    );
    assert!(stderr.contains("+  \"ip\": \"185.220.101.45\""), "{stderr}");
    let junit = std::fs::read_to_string(root.join("report.xml")).expect("the JUnit report");
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert!(
        junit.contains("<failure message=\"step `triage`: its input differs\""),
        "{junit}"
    );
}

#[test]
fn a_call_the_recording_does_not_hold_fails_naming_the_step_and_the_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("lookup.yaml"),
        r#"name: lookup
trigger: { webhook: lookup, public: true }
secrets: [api_key]
plugins: { enrich-ioc: { secrets: [api_key] } }
steps:
  - id: first
    uses: enrich-ioc/check-ip
    with: { ip: "{{ trigger.ip }}", key: "{{ secrets.api_key }}" }
  - id: second
    uses: enrich-ioc/check-domain
    needs: [first]
    with: { domain: "{{ steps.first.output.domain }}" }
"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("lookup.test.yaml"),
        r#"name: looks the address up
playbook: lookup
event: { ip: 203.0.113.9 }
answers:
  - step: first
    input: { ip: 203.0.113.9, key: "[REDACTED]" }
    output: { domain: example.net, score: 3 }
expect:
  status: succeeded
  steps:
    first: { status: succeeded, output: { score: 3 } }
"#,
    )
    .expect("write");
    let output = riposte(dir.path(), &["test", "."]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // The secret matched as `[REDACTED]`; the second call is not in the test.
    assert!(!stderr.contains("step `first`: called"), "{stderr}");
    assert!(
        stderr.contains(
            "✗ step `second`: a call the recording does not hold: `enrich-ioc/check-domain` with {\"domain\":\"example.net\"}"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("✗ the run failed instead of succeeded"),
        "{stderr}"
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
