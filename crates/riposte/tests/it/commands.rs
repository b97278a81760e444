//! Validating, publishing the schema, and running playbooks locally.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn riposte(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(args)
        .current_dir(workspace_root())
        .env_remove("RIPOSTE_LOG")
        .output()
        .expect("the riposte binary runs")
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["schema", "--help"],
        vec!["run", "--help"],
        vec!["plugin", "--help"],
        vec!["plugin", "inspect", "--help"],
        vec!["plugin", "new", "--help"],
        vec!["serve", "--help"],
        vec!["worker", "--help"],
        vec!["resume", "--help"],
        vec!["approve", "--help"],
        vec!["undo", "--help"],
        vec!["deny", "--help"],
        vec!["audit", "verify", "--help"],
        vec!["token", "new", "--help"],
        vec!["audit", "export", "--help"],
    ] {
        let output = riposte(&args);
        assert!(output.status.success(), "{args:?}");
        assert!(text(&output.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn the_example_playbooks_validate() {
    let output = riposte(&["validate", "playbooks/"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("all valid"));
}

#[test]
fn invalid_playbooks_exit_1_with_located_diagnostics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "name: typo\ntrigger: { webhook: t, public: true }\nsteps:\n  - id: a\n    uses: x/y\n    retires: 3\n",
    )
    .expect("write");
    let output = riposte(&["validate", file.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("unknown field `retires`"), "{stderr}");
    assert!(stderr.contains("typo.yaml:6:5"), "{stderr}");
    assert!(stderr.contains("did you mean `retry`?"), "{stderr}");

    let output = riposte(&[
        "validate",
        "--format",
        "json",
        file.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let diagnostic = &json[0]["diagnostics"][0];
    assert_eq!(diagnostic["code"], "unknown-field");
    assert_eq!(diagnostic["line"], 6);
    assert_eq!(diagnostic["column"], 5);
    assert_eq!(diagnostic["hint"], "did you mean `retry`?");
}

#[test]
fn sub_playbooks_that_call_each_other_or_nothing_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, calls: &[&str]| {
        let steps: String = calls
            .iter()
            .enumerate()
            .map(|(n, callee)| format!("  - id: call_{n}\n    uses: playbook/{callee}\n"))
            .collect();
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!("name: {name}\ntrigger: {{ webhook: {name}, public: true }}\nsteps:\n{steps}"),
        )
        .expect("write");
    };
    write("triage", &["enrich", "contain"]);
    write("enrich", &["lookup"]);
    std::fs::write(
        dir.path().join("lookup.yaml"),
        "name: lookup\ntrigger: { webhook: lookup, public: true }\nsteps:\n  - { id: ask, uses: core/echo }\n",
    )
    .expect("write");
    let valid = riposte(&["validate", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(valid.status.code(), Some(1), "`contain` does not exist yet");
    let stderr = text(&valid.stderr);
    assert!(
        stderr.contains("step `call_1` calls playbook `contain`, which does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("triage.yaml:6:5"), "{stderr}");

    write("contain", &["triage"]);
    let cycle = riposte(&["validate", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(cycle.status.code(), Some(1));
    let stderr = text(&cycle.stderr);
    assert!(
        stderr.contains("error[call-cycle]: step `call_0` calls playbook `triage`, which calls `contain` back: contain → triage → contain"),
        "{stderr}"
    );
    assert!(
        stderr.contains("calls `triage` back: triage → contain → triage"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("enrich.yaml"),
        "enrich calls no cycle: {stderr}"
    );

    write("contain", &["lookup"]);
    let fixed = riposte(&["validate", dir.path().to_str().expect("utf-8 path")]);
    assert!(fixed.status.success(), "{}", text(&fixed.stderr));
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let output = riposte(&["validate", "does/not/exist.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("cannot read"));
}

#[test]
fn the_published_schema_is_the_one_checked_into_docs() {
    let output = riposte(&["schema"]);
    assert!(output.status.success());
    let published = std::fs::read_to_string(workspace_root().join("docs/playbook.schema.json"))
        .expect("docs/playbook.schema.json");
    assert_eq!(text(&output.stdout), published);
}

const GATED: &str = r#"
name: local
trigger:
  webhook: t
  public: true
  filter: trigger.kind == 'alert'
secrets: [token]
steps:
  - id: enrich
    uses: core/echo
    with: { ip: "{{ trigger.ip }}", token: "{{ secrets.token }}" }
  - id: block
    uses: core/echo
    needs: [enrich]
    approval: { approvers: [soc] }
    with: { ip: "{{ steps.enrich.output.ip }}" }
outputs:
  blocked: "{{ steps.block.output.ip }}"
"#;

fn write_gated(dir: &Path) -> (String, String) {
    let playbook = dir.join("local.yaml");
    let event = dir.join("event.json");
    std::fs::write(&playbook, GATED).expect("write playbook");
    std::fs::write(&event, r#"{"kind": "alert", "ip": "203.0.113.7"}"#).expect("write event");
    (
        playbook.to_str().expect("utf-8").to_owned(),
        event.to_str().expect("utf-8").to_owned(),
    )
}

#[test]
fn a_dry_run_shows_each_call_and_makes_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (playbook, event) = write_gated(dir.path());
    let without_mock = riposte(&["run", &playbook, "--event", &event, "--dry-run"]);
    assert_eq!(without_mock.status.code(), Some(1));
    assert!(text(&without_mock.stderr).contains("--mock <step>=<file.json>"));

    let mock = dir.path().join("enrich.json");
    std::fs::write(&mock, r#"{"ip": "203.0.113.7"}"#).expect("write mock");
    let enrich = format!("enrich={}", mock.display());
    let block = format!("block={}", mock.display());
    let output = riposte(&[
        "run",
        &playbook,
        "--event",
        &event,
        "--dry-run",
        "--mock",
        &enrich,
        "--mock",
        &block,
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"block (core/echo) would call with {"ip":"203.0.113.7"}"#),
        "{stderr}"
    );
    assert!(stderr.contains("dry run"), "{stderr}");
    assert!(
        stderr.contains(r#"enrich (core/echo) would call with {"ip":"203.0.113.7""#),
        "{stderr}"
    );
    assert!(
        stderr.contains("block waits for approval by soc"),
        "{stderr}"
    );
}

#[test]
fn a_local_run_waits_for_approval_and_resumes_from_its_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (playbook, event) = write_gated(dir.path());
    let journal = dir.path().join("run.jsonl");
    let journal = journal.to_str().expect("utf-8");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            playbook.as_str(),
            "--event",
            event.as_str(),
            "--journal",
            journal,
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(&args)
            .env("RIPOSTE_SECRET_TOKEN", "tok-canary-5150")
            .output()
            .expect("runs")
    };

    let waiting = run(&[]);
    assert_eq!(waiting.status.code(), Some(3), "{}", text(&waiting.stderr));
    assert!(text(&waiting.stderr).contains("waits for approval"));

    let approved = run(&["--approve", "block"]);
    let stderr = text(&approved.stderr);
    assert!(approved.status.success(), "{stderr}");
    assert!(stderr.contains("Resuming run"), "{stderr}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&approved.stdout).expect("outputs as JSON"),
        serde_json::json!({"blocked": "203.0.113.7"})
    );

    let recorded = std::fs::read_to_string(journal).expect("journal");
    let enrich_successes = recorded
        .lines()
        .filter(|l| l.contains(r#""type":"step_succeeded""#) && l.contains(r#""step":"enrich""#))
        .count();
    assert_eq!(
        enrich_successes, 1,
        "a resumed run must not repeat a finished step"
    );
    assert!(
        !recorded.contains("tok-canary-5150"),
        "the secret leaked into the journal"
    );
}

#[test]
fn an_event_the_filter_rejects_starts_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (playbook, _) = write_gated(dir.path());
    let event = dir.path().join("other.json");
    std::fs::write(&event, r#"{"kind": "heartbeat"}"#).expect("write");
    let output = riposte(&["run", &playbook, "--event", event.to_str().expect("utf-8")]);
    assert!(output.status.success());
    assert!(text(&output.stderr).contains("does not match"));
}

#[test]
fn a_plugin_this_build_cannot_run_fails_its_step_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let playbook = dir.path().join("p.yaml");
    std::fs::write(
        &playbook,
        "name: p\ntrigger: { webhook: t, public: true }\nsteps:\n  - { id: enrich, uses: enrich-ioc/check-ip }\n",
    )
    .expect("write");
    let event = dir.path().join("e.json");
    std::fs::write(&event, "{}").expect("write");
    let output = riposte(&[
        "run",
        playbook.to_str().expect("utf-8"),
        "--event",
        event.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("plugin `enrich-ioc` is not installed"));
}

#[test]
fn every_example_playbook_rehearses_cleanly_on_its_sample_event() {
    let root = workspace_root();
    let mut rehearsed = 0;
    for entry in std::fs::read_dir(root.join("playbooks")).expect("playbooks/") {
        let path = entry.expect("entry").path();
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|_| path.extension().is_some_and(|e| e == "yaml"))
        else {
            continue;
        };
        let event = format!("playbooks/events/{name}.json");
        let mocks = format!("playbooks/mocks/{name}");
        let playbook = format!("playbooks/{name}.yaml");
        let mut args = vec![
            "run",
            playbook.as_str(),
            "--event",
            event.as_str(),
            "--dry-run",
        ];
        if root.join(&mocks).is_dir() {
            args.extend(["--mocks", mocks.as_str()]);
        }
        let output = riposte(&args);
        assert!(
            output.status.success(),
            "{name} failed its rehearsal:\n{}",
            text(&output.stderr)
        );
        rehearsed += 1;
    }
    assert!(rehearsed >= 3, "expected at least three example playbooks");
}

#[test]
fn a_rehearsal_shows_the_case_an_alert_would_open() {
    let output = riposte(&[
        "run",
        "playbooks/hello-webhook.yaml",
        "--event",
        "playbooks/events/hello-webhook.json",
        "--dry-run",
        "--mocks",
        "playbooks/mocks/hello-webhook",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = text(&output.stderr);
    assert!(
        shown.contains(
            "case: \"ssh-brute-force from 185[.]220[.]101[.]45\" (high), key 185.220.101.45, window 1day"
        ),
        "{shown}"
    );
}

#[test]
fn serve_refuses_a_broken_configuration_with_every_problem_listed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("riposte.yaml");
    std::fs::write(
        &config,
        "workers: { lease: soon }\nauth:\n  siem: { type: bearer, tokens_env: [NOT_SET_ANYWHERE] }\n",
    )
    .expect("config");
    let output = riposte(&["serve", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("workers.lease: `soon`"), "{stderr}");
    assert!(stderr.contains("NOT_SET_ANYWHERE is not set"), "{stderr}");
}

#[test]
fn audit_verify_accepts_an_intact_trail_and_names_the_first_edited_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("data/riposte.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let run_id = runtime.block_on(async {
        let store = store::SqliteStore::open(&database, store::Synchronous::Normal).expect("open");
        let run_id = "01a2-audit-run".to_owned();
        let delivery = store::Delivery {
            trigger: "t".into(),
            delivery_id: None,
            delivery_ttl: std::time::Duration::from_secs(60),
            runs: vec![test_support::new_run(
                &run_id,
                "p",
                "t",
                serde_json::json!({}),
            )],
            ignored: Vec::new(),
            received_at: 1,
        };
        store::Store::accept(&store, &delivery)
            .await
            .expect("accept");
        for at in 1..=3 {
            let event = runner::RunEvent::RunRecovered { deliveries: 2, at };
            runner::Journal::append(&store, &run_id, &event)
                .await
                .expect("append");
        }
        run_id
    });
    let config = dir.path().join("riposte.yaml");
    std::fs::write(&config, "data_dir: data\n").expect("config");
    let config = config.to_str().expect("utf-8");

    let intact = riposte(&["audit", "verify", "--config", config]);
    assert_eq!(intact.status.code(), Some(0), "{}", text(&intact.stderr));
    assert!(
        text(&intact.stdout).contains("intact: trail of 0 record(s), 1 run(s) with 4 record(s)"),
        "{}",
        text(&intact.stdout)
    );

    let markdown = riposte(&["audit", "export", &run_id, "--config", config]);
    assert_eq!(
        markdown.status.code(),
        Some(0),
        "{}",
        text(&markdown.stderr)
    );
    let timeline = text(&markdown.stdout);
    assert!(timeline.contains(&format!("# Run {run_id}")), "{timeline}");
    assert!(
        timeline.contains("- Hash chain: intact (4 records)"),
        "{timeline}"
    );
    assert!(
        timeline.contains("| 4 | 1970-01-01T00:00:00.003Z | run_recovered |  | delivery 2 |"),
        "{timeline}"
    );
    let json = riposte(&[
        "audit", "export", &run_id, "--format", "json", "--config", config,
    ]);
    let export: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON export");
    assert_eq!(export["records"].as_array().map(Vec::len), Some(4));
    assert_eq!(export["records"][0]["event"]["type"], "run_accepted");
    assert_eq!(export["records"][2]["seq"], 3);
    assert_eq!(export["records"][2]["event"]["type"], "run_recovered");

    let connection = rusqlite::Connection::open(&database).expect("open");
    connection
        .execute(
            "UPDATE run_events SET event = replace(event, '\"at\":2', '\"at\":9') WHERE seq = 3",
            [],
        )
        .expect("tamper");
    let broken = riposte(&["audit", "verify", "--config", config, "--run", &run_id]);
    assert_eq!(broken.status.code(), Some(1));
    let report = text(&broken.stdout);
    assert!(
        report.contains(&format!("BROKEN record 3 of run {run_id}")),
        "{report}"
    );
    assert!(report.contains("edited"), "{report}");
    let exported = riposte(&["audit", "export", &run_id, "--config", config]);
    assert!(text(&exported.stdout).contains("- Hash chain: BROKEN: record 3"));
}

#[test]
fn token_new_prints_a_fresh_token_once_and_only_its_hash_for_the_configuration() {
    let first = riposte(&["token", "new", "--name", "oncall", "--role", "responder"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let token = text(&first.stdout).trim().to_owned();
    assert!(token.starts_with("rpt_") && token.len() == 47, "{token}");
    let how = text(&first.stderr);
    let hash = server::tokens::token_hash(&token);
    assert!(how.contains(&format!("sha256: {hash}")), "{how}");
    assert!(
        how.contains(&format!("RIPOSTE_API_TOKEN_ONCALL=responder:{hash}")),
        "{how}"
    );
    assert!(
        !how.contains(&token),
        "the token is printed once, on stdout"
    );
    let second = riposte(&["token", "new", "--name", "oncall", "--role", "responder"]);
    assert_ne!(text(&second.stdout), text(&first.stdout));
    let refused = riposte(&["token", "new", "--name", "oncall", "--role", "root"]);
    assert_eq!(refused.status.code(), Some(2));
}
