//! Containment that ends: the example `contain-brute-force` playbook bans an address on a real
//! CrowdSec Local API with a 2 s expiry (3 s when its process is killed), and Riposte lifts the ban when it expires (CrowdSec's own
//! decision lasts a day): with the process that banned it still up, and with that process killed
//! between the ban and the expiry, where a worker started afterwards lifts it.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use runner::{RunEvent, RunState, RunStatus};
use store::Store;
use test_support::process::Launcher;
use test_support::{CrowdSec, Recorder, RedisServer, apis, free_port, plugin_dir, workspace_root};

const SPLUNK_TOKEN: &str = "splunk-url-token-5f1e2a9c0d7b4e36";
const SOURCE: &str = "45.155.205.233";

/// `riposte` processes running the example playbook against CrowdSec, loopback fakes of
/// AbuseIPDB and a Slack incoming webhook, on one Redis.
struct Containment {
    launcher: Launcher,
    processes: Vec<Child>,
    redis: RedisServer,
    crowdsec: CrowdSec,
    slack: Recorder,
    _dir: tempfile::TempDir,
}

impl Containment {
    /// The example, with its ban lasting `ban_duration` (`2s`) instead of four hours.
    async fn new(ban_duration: &str) -> Containment {
        let crowdsec = tokio::task::spawn_blocking(CrowdSec::start)
            .await
            .expect("CrowdSec started");
        let redis = RedisServer::start();
        let (abuseipdb, _) =
            test_support::serve(apis::abuseipdb(Arc::new(AtomicUsize::new(0)))).await;
        let (slack, slack_requests) =
            test_support::serve(axum::Router::new().fallback(async || "ok")).await;
        let example =
            std::fs::read_to_string(workspace_root().join("playbooks/contain-brute-force.yaml"))
                .expect("the example playbook");
        // The example as deployed here: CrowdSec, AbuseIPDB and Slack on loopback, and a ban
        // that lasts seconds instead of 4 h. Each replacement must hit, so a changed example fails
        // here rather than testing something else.
        let mut playbook = example;
        for (from, to) in [
            (
                "crowdsec-lapi.security.svc:8080\"]",
                format!("127.0.0.1:{}\"]", crowdsec.port),
            ),
            (
                "crowdsec_lapi: http://crowdsec-lapi.security.svc:8080",
                format!("crowdsec_lapi: {}", crowdsec.url),
            ),
            ("ban_duration: 4h", format!("ban_duration: {ban_duration}")),
            (
                "hosts: [api.abuseipdb.com]",
                format!("hosts: [\"{abuseipdb}\"]"),
            ),
            (
                "      max_age_days: 7\n",
                format!("      max_age_days: 7\n      base_url: http://{abuseipdb}\n"),
            ),
            ("hosts: [hooks.slack.com]", format!("hosts: [\"{slack}\"]")),
        ] {
            assert!(
                playbook.contains(from),
                "the example no longer holds `{from}`"
            );
            playbook = playbook.replacen(from, &to, 1);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("playbooks")).expect("dir");
        std::fs::write(
            dir.path().join("playbooks/contain-brute-force.yaml"),
            playbook,
        )
        .expect("playbook");
        let config = format!(
            r#"
playbooks: playbooks
plugins: {plugins}
data_dir: data
redis: {{ url_env: UNDO_REDIS_URL, prefix: undo }}
workers: {{ concurrency: 4, poll_interval: 20ms }}
auth:
  splunk: {{ type: url-token, tokens_env: [UNDO_SPLUNK_TOKEN] }}
egress:
  allow_private: [127.0.0.0/8]
"#,
            plugins = plugin_dir().display()
        );
        std::fs::write(dir.path().join("riposte.yaml"), config).expect("config");
        let env = BTreeMap::from([
            ("UNDO_REDIS_URL".to_owned(), redis.url()),
            ("UNDO_SPLUNK_TOKEN".to_owned(), SPLUNK_TOKEN.to_owned()),
            (
                "RIPOSTE_SECRET_ABUSEIPDB_KEY".to_owned(),
                apis::ABUSEIPDB_KEY.to_owned(),
            ),
            (
                "RIPOSTE_SECRET_CROWDSEC_MACHINE_ID".to_owned(),
                crowdsec.machine_id.clone(),
            ),
            (
                "RIPOSTE_SECRET_CROWDSEC_PASSWORD".to_owned(),
                crowdsec.password.clone(),
            ),
            (
                "RIPOSTE_SECRET_SLACK_WEBHOOK_URL".to_owned(),
                format!("http://{slack}/services/T0/B0/x"),
            ),
            (
                "RIPOSTE_SECRET_PAGERDUTY_ROUTING_KEY".to_owned(),
                "pd-routing-key".to_owned(),
            ),
        ]);
        Containment {
            launcher: Launcher {
                binary: env!("CARGO_BIN_EXE_riposte").into(),
                dir: dir.path().to_owned(),
                env,
                port: free_port(),
            },
            processes: Vec::new(),
            redis,
            crowdsec,
            slack: slack_requests,
            _dir: dir,
        }
    }

    async fn serve(&mut self) {
        self.processes.push(self.launcher.spawn("serve", 4));
        if let Err(problem) = self.launcher.wait_ready(Duration::from_secs(60)).await {
            panic!("riposte serve never got ready: {problem}");
        }
    }

    fn kill_all(&mut self) {
        for mut process in self.processes.drain(..) {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    async fn store(&self) -> store::RedisStore {
        store::RedisStore::connect(&self.redis.url(), "undo")
            .await
            .expect("redis")
    }

    /// Posts the example's Splunk alert as Splunk does; returns the run it started.
    async fn alert(&self) -> String {
        let event = std::fs::read_to_string(
            workspace_root().join("playbooks/events/contain-brute-force.json"),
        )
        .expect("the example event");
        let response = reqwest::Client::new()
            .post(format!(
                "{}/hooks/splunk-brute-force/{SPLUNK_TOKEN}",
                self.launcher.base()
            ))
            .header("content-type", "application/json")
            .body(event)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("posted");
        assert_eq!(response.status(), 202);
        let answer: serde_json::Value = response.json().await.expect("JSON");
        answer["runs"][0]["run_id"]
            .as_str()
            .expect("a run")
            .to_owned()
    }

    /// CrowdSec's decisions on the source, as its bouncers see them.
    async fn decisions(&self) -> Vec<serde_json::Value> {
        let body = reqwest::Client::new()
            .get(format!("{}/v1/decisions?ip={SOURCE}", self.crowdsec.url))
            .header("X-Api-Key", &self.crowdsec.bouncer_key)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the bouncer API answers")
            .text()
            .await
            .expect("a body");
        // No decision is the literal body `null`.
        serde_json::from_str::<Option<Vec<serde_json::Value>>>(&body)
            .expect("JSON")
            .unwrap_or_default()
    }

    /// Waits until `done` holds, or panics with `what` and the processes' logs.
    async fn wait_until<F: AsyncFn() -> bool>(&self, what: &str, within: Duration, done: F) {
        let deadline = Instant::now() + within;
        while !done().await {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {within:?}:\n{}",
                self.launcher.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn events(&self, run_id: &str) -> Vec<RunEvent> {
        self.store().await.events(run_id).await.expect("events")
    }

    /// Whether no process holds the run: a process is done with a run once it lets go of the
    /// run's lock.
    async fn run_released(&self, run_id: &str) -> bool {
        let store = self.store().await;
        let free = store
            .lock_run(run_id, "undo-test", Duration::from_secs(5))
            .await
            .expect("lock");
        if free {
            store.unlock_run(run_id, "undo-test").await.expect("unlock");
        }
        free
    }

    /// Whether the unban is over: gone from CrowdSec, its outcome in the journal, and the process
    /// that lifted it done with the run (it writes the case after the journal). CrowdSec shows the
    /// unban as soon as the plugin's call returns, before the worker writes anything down: waiting
    /// for the unban alone lost that race once in CI.
    async fn unban_finished(&self, run_id: &str) -> bool {
        self.decisions().await.is_empty()
            && self.events(run_id).await.iter().any(|event| {
                matches!(
                    event,
                    RunEvent::UndoSucceeded { .. } | RunEvent::UndoFailed { .. }
                )
            })
            && self.run_released(run_id).await
    }
}

impl Drop for Containment {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// What the journal, the case and the audit trail must say once the ban was lifted.
async fn assert_undone_once(containment: &Containment, run_id: &str) {
    let events = containment.events(run_id).await;
    let state = RunState::from_events(&events).expect("started");
    assert_eq!(state.status, RunStatus::Succeeded, "{events:#?}");
    let undone: Vec<&RunEvent> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                RunEvent::UndoStarted { .. } | RunEvent::UndoSucceeded { .. }
            )
        })
        .collect();
    assert_eq!(undone.len(), 2, "one attempt, one success: {undone:#?}");
    match undone[1] {
        RunEvent::UndoSucceeded { step, output, .. } => {
            assert_eq!(step, "ban");
            assert_eq!(output["ip"], SOURCE);
            assert_eq!(output["deleted"], 1, "the unban deleted the ban's decision");
        }
        other => panic!("not an undo: {other:?}"),
    }
    let ban = state.step("ban").expect("ban");
    let undo = ban.undo.as_ref().expect("undo");
    assert_eq!(undo.requested_by, None, "undone because it expired");
    let banned_at = ban.finished_at.expect("banned");
    assert!(
        undo.finished_at.expect("undone") >= banned_at + 2_000,
        "lifted after its expiry, not before"
    );

    let store: Arc<dyn Store> = Arc::new(containment.store().await);
    let case = store
        .case_of_run(run_id)
        .await
        .expect("store")
        .expect("the run opened a case");
    let desk = server::desk::CaseDesk::new(Arc::clone(&store), Arc::default());
    let read = desk.read(case).await.expect("store").expect("the case");
    assert!(
        read.case
            .actions
            .iter()
            .any(|action| action.step == "ban" && action.phase == playbook::Phase::Containment),
        "{:?}",
        read.case.actions
    );
    let undone = read.case.undo_of(run_id, "ban").expect("the case knows");
    assert!(undone.succeeded && undone.by.is_none(), "{undone:?}");

    let verified = store::audit::verify_store(store.as_ref())
        .await
        .expect("verified");
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    let trail = store.trail_tail(100).await.expect("trail");
    assert!(
        trail
            .iter()
            .any(|record| record.event.contains("\"undone\"") && record.event.contains(run_id)),
        "the undo is sealed in the trail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_ban_is_lifted_when_it_expires() {
    let mut containment = Containment::new("2s").await;
    containment.serve().await;
    let run_id = containment.alert().await;
    containment
        .wait_until("the ban", Duration::from_secs(30), async || {
            !containment.decisions().await.is_empty()
        })
        .await;
    let decisions = containment.decisions().await;
    assert_eq!(decisions[0]["type"], "ban");
    assert!(
        decisions[0]["duration"]
            .as_str()
            .unwrap_or_default()
            .starts_with("23h"),
        "CrowdSec keeps it for a day: only Riposte lifts it after 2 s: {decisions:?}"
    );
    containment
        .wait_until("the unban", Duration::from_secs(20), async || {
            containment.unban_finished(&run_id).await
        })
        .await;
    assert_undone_once(&containment, &run_id).await;
    assert!(
        containment
            .slack
            .all()
            .iter()
            .any(|request| request.body.contains("Banned")),
        "the SOC was told"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_is_lifted_when_it_expires_even_if_its_process_was_killed() {
    // Three seconds, to leave the process time to finish the run and be killed before the
    // expiry on a busy machine.
    let mut containment = Containment::new("3s").await;
    containment.serve().await;
    let run_id = containment.alert().await;
    containment
        .wait_until("the run's end", Duration::from_secs(30), async || {
            RunState::from_events(&containment.events(&run_id).await)
                .is_some_and(|state| state.status.is_terminal())
        })
        .await;
    // The process is done with the run once it lets go of the run's lock (a process killed
    // holding it keeps the run from others until its lease, a minute, runs out).
    containment
        .wait_until(
            "the run's lock to be free",
            Duration::from_secs(30),
            async || containment.run_released(&run_id).await,
        )
        .await;
    // Killed between the ban and its expiry: nothing lifts it while no process runs.
    containment.kill_all();
    let events = containment.events(&run_id).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RunEvent::UndoStarted { .. })),
        "killed before the expiry"
    );
    assert!(!containment.decisions().await.is_empty(), "banned");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(
        !containment.decisions().await.is_empty(),
        "still banned after its expiry while no process ran"
    );

    containment
        .processes
        .push(containment.launcher.spawn("worker", 4));
    containment
        .wait_until(
            "the unban by the new worker",
            Duration::from_secs(30),
            async || containment.unban_finished(&run_id).await,
        )
        .await;
    assert_undone_once(&containment, &run_id).await;
}
