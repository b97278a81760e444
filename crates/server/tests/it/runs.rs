//! Deliveries that become runs: real plugins, deduplication, approvals that hold no worker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use runner::{RunEvent, RunStatus, StepCall, StepError, StepExecutor};
use test_support::apis::{ABUSEIPDB_KEY, SLACK_TOKEN, abuseipdb, slack};
use test_support::{Recorder, serve};
use tokio::io::AsyncWriteExt as _;

use crate::{BACKENDS, Backend, Server, assert_succeeded, run_id};

/// Enrich the source IP on AbuseIPDB, then tell Slack: the playbook of the end-to-end tests.
fn enrich_and_notify(abuse_port: u16, slack_port: u16, extra_trigger: &str) -> String {
    format!(
        r##"
name: enrich-and-notify
trigger:
  webhook: siem
  auth: siem
  filter: trigger.src_ip is ip_address
{extra_trigger}
secrets: [abuseipdb_key, slack_bot_token]
plugins:
  enrich-ioc: {{ hosts: ["127.0.0.1:{abuse_port}"], secrets: [abuseipdb_key] }}
  notify-slack: {{ hosts: ["127.0.0.1:{slack_port}"], secrets: [slack_bot_token] }}
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    with: {{ ip: "{{{{ trigger.src_ip }}}}", base_url: "http://127.0.0.1:{abuse_port}" }}
    timeout: 3s
  - id: notify
    uses: notify-slack/post-message
    needs: [enrich]
    timeout: 3s
    with:
      channel: "#soc"
      text: "{{{{ trigger.src_ip | defang }}}} scored {{{{ steps.enrich.output.score }}}}"
      base_url: "http://127.0.0.1:{slack_port}"
outputs:
  verdict: "{{{{ steps.enrich.output.verdict }}}}"
"##
    )
}

struct Apis {
    abuse_port: u16,
    slack_port: u16,
    slack: Recorder,
    abuse_hits: Arc<AtomicUsize>,
}

async fn apis() -> Apis {
    let abuse_hits = Arc::new(AtomicUsize::new(0));
    let (abuse, _) = serve(abuseipdb(Arc::clone(&abuse_hits))).await;
    let (slack_address, slack) = serve(slack()).await;
    Apis {
        abuse_port: abuse.port(),
        slack_port: slack_address.port(),
        slack,
        abuse_hits,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_runs_the_real_plugins_to_completion() {
    for backend in BACKENDS {
        let apis = apis().await;
        let playbook = enrich_and_notify(apis.abuse_port, apis.slack_port, "");
        let server = Server::start(backend, &[("enrich.yaml", playbook)]).await;
        let (status, answer) = server
            .post_signed("siem", r#"{"src_ip": "185.220.101.45"}"#, &[])
            .await;
        assert_eq!(status, 202, "{backend:?}: {answer}");
        assert_eq!(answer["status"], "accepted");
        let run = run_id(&answer);
        let state = server.finished(&run, Duration::from_secs(20)).await;
        assert_succeeded(&state);
        assert_eq!(
            state.outputs,
            Some(serde_json::json!({"verdict": "malicious"})),
            "{backend:?}"
        );
        let messages = apis.slack.all();
        assert_eq!(messages.len(), 1, "{backend:?}");
        assert!(
            messages[0].body.contains("185[.]220[.]101[.]45 scored 100"),
            "{}",
            messages[0].body
        );
        // Each step's idempotency key is the run and the step, handed to the plugin.
        let record = serde_json::to_string(&server.events(&run).await).expect("json");
        for secret in [ABUSEIPDB_KEY, SLACK_TOKEN] {
            assert!(!record.contains(secret), "{backend:?}: a secret leaked");
        }
        // The journal is a hash chain, intact: accepted, started, 2 × (step started, step
        // succeeded), finished.
        let chain = server.store.audit_records(&run).await.expect("records");
        assert_eq!(store::audit::verify(&run, &chain), Ok(7), "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_delivery_returns_the_original_run_and_starts_nothing() {
    for backend in BACKENDS {
        let apis = apis().await;
        let playbook = enrich_and_notify(
            apis.abuse_port,
            apis.slack_port,
            "  dedupe: { key: \"{{ trigger.src_ip }}\", window: 1h }",
        );
        let server = Server::start(backend, &[("enrich.yaml", playbook)]).await;
        let body = r#"{"src_ip": "185.220.101.45"}"#;
        let delivery = [("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")];
        let (status, first) = server.post_signed("siem", body, &delivery).await;
        assert_eq!(status, 202, "{backend:?}: {first}");
        let (status, repeat) = server.post_signed("siem", body, &delivery).await;
        assert_eq!(status, 200, "{backend:?}: {repeat}");
        assert_eq!(repeat["status"], "duplicate");
        assert_eq!(run_id(&repeat), run_id(&first), "{backend:?}");
        assert_eq!(repeat["runs"][0]["duplicate"], true);
        // Another delivery of the same alert: the playbook's dedupe key catches it.
        let (status, same_alert) = server
            .post_signed("siem", body, &[("x-github-delivery", "another-delivery")])
            .await;
        assert_eq!(status, 200, "{backend:?}: {same_alert}");
        assert_eq!(run_id(&same_alert), run_id(&first), "{backend:?}");
        // A different alert is a new run.
        let (status, other) = server
            .post_signed("siem", r#"{"src_ip": "203.0.113.9"}"#, &[])
            .await;
        assert_eq!(status, 202, "{backend:?}: {other}");

        assert_succeeded(
            &server
                .finished(&run_id(&first), Duration::from_secs(20))
                .await,
        );
        assert_succeeded(
            &server
                .finished(&run_id(&other), Duration::from_secs(20))
                .await,
        );
        assert_eq!(
            apis.slack.all().len(),
            2,
            "{backend:?}: one message per run"
        );
        assert_eq!(apis.abuse_hits.load(Ordering::SeqCst), 2, "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_approval_holds_no_worker_and_its_timeout_resumes_it() {
    let playbook = r#"
name: gated
trigger: { webhook: gated, auth: siem }
steps:
  - id: ask
    uses: core/echo
    timeout: 2s
    with: { ip: "{{ trigger.ip }}" }
    approval:
      approvers: [soc]
      timeout: 1s
      on_timeout: approve
  - id: after
    uses: core/echo
    timeout: 2s
    needs: [ask]
    with: { done: true }
"#;
    for backend in BACKENDS {
        let server = Server::start(backend, &[("gated.yaml", playbook.to_owned())]).await;
        let (status, answer) = server
            .post_signed("gated", r#"{"ip": "203.0.113.5"}"#, &[])
            .await;
        assert_eq!(status, 202, "{backend:?}: {answer}");
        let run = run_id(&answer);
        // While the run waits, its job is done: nothing holds a worker or a lease.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let waiting = server
                .events(&run)
                .await
                .iter()
                .any(|event| matches!(event, RunEvent::ApprovalRequested { .. }));
            if waiting && server.store.queue_depth().await.expect("depth") == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: never parked"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let state = server.finished(&run, Duration::from_secs(10)).await;
        assert_eq!(
            state.status,
            RunStatus::Succeeded,
            "{backend:?}: {:?}",
            state.error
        );
        assert!(
            server.events(&run).await.iter().any(|event| matches!(
                event,
                RunEvent::ApprovalDecided {
                    decision: runner::Decision::TimedOut,
                    ..
                }
            )),
            "{backend:?}: the deadline decided"
        );
        server.stop().await;
    }
}

const ECHO: &str = r#"
name: echo
trigger: { webhook: echo, auth: siem }
steps:
  - id: echo
    uses: core/echo
    timeout: 2s
    with: { ip: "{{ trigger.ip }}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lost_too_often_is_dead_lettered_with_its_reason() {
    for backend in BACKENDS {
        // API only: the test plays the workers that take the job and die.
        let server = Server::start_with(backend, &[("echo.yaml", ECHO.to_owned())], 0).await;
        let (status, answer) = server
            .post_signed("echo", r#"{"ip": "203.0.113.5"}"#, &[])
            .await;
        assert_eq!(status, 202, "{backend:?}: {answer}");
        let run = run_id(&answer);
        for lost in 1..=5 {
            let claims = server
                .store
                .claim(&format!("doomed-{lost}"), 1, Duration::from_millis(1))
                .await
                .expect("claim");
            assert_eq!(claims.len(), 1, "{backend:?}");
            assert_eq!(claims[0].deliveries, lost, "{backend:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A real worker gets the job a sixth time (the default allows five) and gives up.
        let mut config = server.config.clone();
        config.workers.concurrency = 2;
        let parts = server::Parts::open(config).await.expect("parts");
        let stop = server::CancellationToken::new();
        // With its operations endpoint, as a worker pod runs it.
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("ops port");
        let ops_base = format!("http://{}", ops.local_addr().expect("address"));
        let worker = tokio::spawn(server::work(parts, Some(ops), stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let reason = loop {
            let record = server.store.run(&run).await.expect("run").expect("exists");
            if let Some(reason) = record.dead {
                break reason;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: never dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(reason.contains("6 times"), "{backend:?}: {reason}");
        // The job is acked once the worker is done with it.
        while server.store.queue_depth().await.expect("depth") > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: job left"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let journal = server.events(&run).await;
        assert!(
            matches!(&journal[..], [RunEvent::RunAccepted { .. }]),
            "{backend:?}: it never ran: {journal:?}"
        );
        // The worker answers probes and scrapes (with a token), and nothing else.
        let status = |path: &'static str, token: Option<&'static str>| {
            let mut request = server.client.get(format!("{ops_base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let answer = request.send().await.expect("the worker answers");
                (answer.status().as_u16(), answer.text().await.expect("body"))
            }
        };
        assert_eq!(status("/healthz", None).await.0, 200, "{backend:?}");
        assert_eq!(status("/readyz", None).await.0, 200, "{backend:?}");
        assert_eq!(status("/metrics", None).await.0, 401, "{backend:?}");
        let (code, metrics) = status("/metrics", Some(crate::VIEWER_TOKEN)).await;
        assert_eq!(code, 200, "{backend:?}: {metrics}");
        assert!(
            metrics.contains("riposte_queue_depth 0"),
            "{backend:?}: {metrics}"
        );
        assert_eq!(
            status("/api/v1/runs", Some(crate::VIEWER_TOKEN)).await.0,
            404
        );
        stop.cancel();
        worker.await.expect("worker task").expect("clean stop");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_resumes_from_its_failed_step_once_the_tool_is_back() {
    for backend in BACKENDS {
        let apis = apis().await;
        let ticketing_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tickets_seen = Arc::new(AtomicUsize::new(0));
        let (up, seen) = (Arc::clone(&ticketing_up), Arc::clone(&tickets_seen));
        let (tickets, _) = serve(axum::Router::new().route(
            "/tickets",
            axum::routing::post(move || {
                let (up, seen) = (Arc::clone(&up), Arc::clone(&seen));
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    if up.load(Ordering::SeqCst) {
                        (axum::http::StatusCode::CREATED, r#"{"id": 7}"#)
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            r#"{"error": "down"}"#,
                        )
                    }
                }
            }),
        ))
        .await;
        let playbook = format!(
            r##"
name: resumable
trigger: {{ webhook: siem, auth: siem }}
secrets: [abuseipdb_key]
plugins:
  enrich-ioc: {{ hosts: ["127.0.0.1:{abuse}"], secrets: [abuseipdb_key] }}
  http: {{ hosts: ["127.0.0.1:{tickets}"] }}
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    timeout: 3s
    with: {{ ip: "{{{{ trigger.src_ip }}}}", base_url: "http://127.0.0.1:{abuse}" }}
  - id: ticket
    uses: http/request
    needs: [enrich]
    timeout: 3s
    with:
      method: POST
      url: "http://127.0.0.1:{tickets}/tickets"
      json: {{ score: "{{{{ steps.enrich.output.score }}}}" }}
outputs:
  ticket: "{{{{ steps.ticket.output.body.id }}}}"
  score: "{{{{ steps.enrich.output.score }}}}"
"##,
            abuse = apis.abuse_port,
            tickets = tickets.port()
        );
        let server = Server::start(backend, &[("resumable.yaml", playbook)]).await;
        let (status, answer) = server
            .post_signed("siem", r#"{"src_ip": "185.220.101.45"}"#, &[])
            .await;
        assert_eq!(status, 202, "{backend:?}: {answer}");
        let run = run_id(&answer);
        let failed = server.finished(&run, Duration::from_secs(20)).await;
        assert_eq!(failed.status, RunStatus::Failed, "{backend:?}");
        assert_eq!(apis.abuse_hits.load(Ordering::SeqCst), 1);

        let not_failed = server.control.resume_failed("no-such-run", "t").await;
        assert!(
            not_failed.is_err(),
            "{backend:?}: only a failed run resumes"
        );
        ticketing_up.store(true, Ordering::SeqCst);
        server
            .control
            .resume_failed(&run, "analyst@example.com")
            .await
            .expect("resumes");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let state = loop {
            let events = server.events(&run).await;
            let state = runner::RunState::from_events(&events).expect("a run");
            if state.status == RunStatus::Succeeded {
                break state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            state.outputs,
            Some(serde_json::json!({"ticket": 7, "score": 100})),
            "{backend:?}"
        );
        assert_eq!(
            apis.abuse_hits.load(Ordering::SeqCst),
            1,
            "{backend:?}: the enrichment that succeeded is kept, not repeated"
        );
        assert!(server.events(&run).await.iter().any(|event| matches!(
            event,
            RunEvent::RunResumed { by, .. } if by == "analyst@example.com"
        )));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_decided_while_the_run_waits_resumes_it_on_a_worker() {
    let playbook = r#"
name: gated
trigger: { webhook: gated, auth: siem }
steps:
  - id: ask
    uses: core/echo
    timeout: 2s
    with: { ip: "{{ trigger.ip }}" }
    approval: { approvers: [soc], timeout: 1h, on_timeout: deny }
  - id: after
    uses: core/echo
    needs: [ask]
    timeout: 2s
    with: { approved_by: done }
"#;
    for backend in BACKENDS {
        let server = Server::start(backend, &[("gated.yaml", playbook.to_owned())]).await;
        let (status, answer) = server
            .post_signed("gated", r#"{"ip": "203.0.113.5"}"#, &[])
            .await;
        assert_eq!(status, 202, "{backend:?}: {answer}");
        let run = run_id(&answer);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !server
            .events(&run)
            .await
            .iter()
            .any(|event| matches!(event, RunEvent::ApprovalRequested { .. }))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: never asked"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wrong_step = server
            .control
            .decide(
                &run,
                "after",
                runner::Decision::Approved {
                    by: "x".into(),
                    comment: None,
                },
            )
            .await;
        assert!(wrong_step.is_err(), "{backend:?}: `after` is not waiting");
        server
            .control
            .decide(
                &run,
                "ask",
                runner::Decision::Approved {
                    by: "oncall@example.com".into(),
                    comment: Some("seen it".into()),
                },
            )
            .await
            .expect("decided");
        let state = server.finished(&run, Duration::from_secs(10)).await;
        assert_eq!(
            state.status,
            RunStatus::Succeeded,
            "{backend:?}: {:?}",
            state.error
        );
        let twice = server
            .control
            .decide(
                &run,
                "ask",
                runner::Decision::Approved {
                    by: "y".into(),
                    comment: None,
                },
            )
            .await;
        assert!(twice.is_err(), "{backend:?}: decided once");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_right_after_it_started_stops() {
    for backend in BACKENDS {
        let server = Server::start(backend, &[("echo.yaml", ECHO.to_owned())]).await;
        // No request, no pause: the worker may not have been polled yet.
        tokio::time::timeout(Duration::from_secs(10), server.stop())
            .await
            .unwrap_or_else(|_| panic!("{backend:?}: the server did not stop"));
    }
}

/// Notes the task each plugin call runs in, by run, and holds every call until calls of
/// `together` runs have arrived (or 3 s passed: then the call fails).
/// One plugin step per run, for tests whose executor answers in the plugin's place.
const ENRICH_PLAYBOOK: &str = r#"
name: enrich
trigger: { webhook: enrich, auth: siem }
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    timeout: 4s
    with: { ip: "{{ trigger.ip }}" }
"#;

/// Posts `count` alerts to [`ENRICH_PLAYBOOK`]'s trigger; gives back the ids of the runs they
/// started.
async fn post_enrich_alerts(server: &Server, count: u8) -> Vec<String> {
    let mut runs = Vec::new();
    for last in 1..=count {
        let (status, answer) = server
            .post_signed("enrich", &format!(r#"{{"ip": "203.0.113.{last}"}}"#), &[])
            .await;
        assert_eq!(status, 202, "{answer}");
        runs.push(run_id(&answer));
    }
    runs
}

/// Posts `count` alerts to [`ENRICH_PLAYBOOK`]'s trigger and waits until each run has succeeded;
/// gives back their ids.
async fn enrich_runs_succeed(server: &Server, count: u8) -> Vec<String> {
    let runs = post_enrich_alerts(server, count).await;
    for run in &runs {
        assert_succeeded(&server.finished(run, Duration::from_secs(20)).await);
    }
    runs
}

struct HeldTogether {
    together: usize,
    calls: Mutex<Vec<(String, tokio::task::Id)>>,
    arrived: tokio::sync::Notify,
}

impl HeldTogether {
    fn runs_seen(&self) -> usize {
        let calls = self.calls.lock().expect("calls");
        calls
            .iter()
            .map(|(run, _)| run)
            .collect::<HashSet<_>>()
            .len()
    }
}

#[async_trait]
impl StepExecutor for HeldTogether {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        let task = tokio::task::try_id().expect("a plugin call runs in a task");
        self.calls
            .lock()
            .expect("calls")
            .push((call.run_id.clone(), task));
        self.arrived.notify_waiters();
        let all_here = async {
            loop {
                let arrived = self.arrived.notified();
                if self.runs_seen() >= self.together {
                    return;
                }
                arrived.await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(3), all_here).await {
            Ok(()) => Ok(serde_json::json!({ "score": 0 })),
            Err(_) => Err(StepError::new(
                playbook::ErrorKind::Timeout,
                "fewer runs than expected were in hand at once",
            )),
        }
    }
}

/// apalis polls every job's handler inside its one worker task, so a worker's runs would go
/// forward on one thread at a time. A worker takes its jobs in one shard per runtime thread, each
/// its own apalis worker and task, the concurrency shared among them (here 8 on two threads: 4
/// each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_advances_its_runs_in_one_task_per_runtime_thread() {
    for backend in BACKENDS {
        // Five runs held together do not fit in one shard of four.
        let held = Arc::new(HeldTogether {
            together: 5,
            calls: Mutex::default(),
            arrived: tokio::sync::Notify::new(),
        });
        let server = Server::in_process_with_executor(
            backend,
            &[("enrich.yaml", ENRICH_PLAYBOOK.to_owned())],
            held.clone(),
        )
        .await;
        let runs = enrich_runs_succeed(&server, 6).await;
        let calls = held.calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), runs.len(), "{backend:?}: one call per run");
        let tasks: HashSet<tokio::task::Id> = calls.iter().map(|(_, task)| *task).collect();
        assert_eq!(
            tasks.len(),
            2,
            "{backend:?}: the runs went forward in one task per runtime thread: {calls:?}"
        );
        server.stop().await;
    }
}

/// The nice value of the calling thread (Linux keeps one per thread).
fn this_threads_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("getpriority")
}

/// Notes the nice value of the thread each plugin call runs on.
#[derive(Default)]
struct NiceOfCalls(Mutex<Vec<i32>>);

#[async_trait]
impl StepExecutor for NiceOfCalls {
    async fn execute(&self, _: StepCall) -> Result<serde_json::Value, StepError> {
        self.0
            .lock()
            .expect("nice values")
            .push(this_threads_nice());
        Ok(serde_json::json!({ "score": 0 }))
    }
}

/// In a process that serves the API, the worker runs on threads of its own that yield to the
/// API's (nice 10 below them), and its store operations queue behind the API's: a burst of
/// webhooks is answered before the backlog is worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_the_api_a_worker_runs_on_threads_that_yield_to_it() {
    // The API answers on the test's runtime, at the test's own nice value.
    let api_nice = this_threads_nice();
    assert!(
        api_nice < 19,
        "the test runs at the lowest priority already"
    );
    let calls = Arc::new(NiceOfCalls::default());
    let server = enrich_server_calling(calls.clone()).await;
    let runs = enrich_runs_succeed(&server, 4).await;
    let seen = calls.0.lock().expect("nice values").clone();
    assert_eq!(seen, vec![(api_nice + 10).min(19); runs.len()]);
    assert_eq!(
        this_threads_nice(),
        api_nice,
        "the API's threads keep theirs"
    );
    // Its store operations queue behind the API's: they wake the SQLite store's background
    // thread, which nothing else wakes (each run writes its journal four times and more).
    let wake_ups = background_store_wake_ups();
    assert!(
        wake_ups >= runs.len() as u64,
        "the store's background thread woke {wake_ups} times for {} runs",
        runs.len()
    );
    server.stop().await;
}

/// Holds every plugin call until released, noting the runs whose calls started.
struct HeldCalls {
    started: Mutex<Vec<String>>,
    arrived: tokio::sync::Notify,
    released: tokio::sync::Semaphore,
}

impl HeldCalls {
    fn new() -> Self {
        HeldCalls {
            started: Mutex::default(),
            arrived: tokio::sync::Notify::new(),
            released: tokio::sync::Semaphore::new(0),
        }
    }

    fn started(&self) -> usize {
        self.started.lock().expect("calls").len()
    }

    /// Waits (at most 10 s) until `count` calls have started.
    async fn until_started(&self, count: usize) {
        let all_here = async {
            loop {
                let arrived = self.arrived.notified();
                if self.started() >= count {
                    return;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_here)
            .await
            .unwrap_or_else(|_| panic!("{count} calls did not start: {}", self.started()));
    }
}

#[async_trait]
impl StepExecutor for HeldCalls {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        self.started.lock().expect("calls").push(call.run_id);
        self.arrived.notify_waiters();
        let released = self.released.acquire().await;
        released.expect("the semaphore stays open").forget();
        Ok(serde_json::json!({ "score": 0 }))
    }
}

/// A server on SQLite and [`ENRICH_PLAYBOOK`] whose plugin calls go to `calls`.
async fn enrich_server_calling(calls: Arc<dyn StepExecutor>) -> Server {
    Server::serving_with_executor(
        Backend::Sqlite,
        &[("enrich.yaml", ENRICH_PLAYBOOK.to_owned())],
        calls,
    )
    .await
}

/// A server on [`ENRICH_PLAYBOOK`] whose plugin calls wait until released.
async fn enrich_with_held_calls() -> (Arc<HeldCalls>, Server) {
    let calls = Arc::new(HeldCalls::new());
    let server = enrich_server_calling(calls.clone()).await;
    (calls, server)
}

/// While the API takes a burst of webhooks, the worker beside it starts new advances only while
/// fewer than two are under way (the store's queue goes to the accepts), and goes back to all of
/// its concurrency once the burst is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_the_api_a_worker_holds_back_while_a_burst_of_webhooks_is_accepted() {
    let (calls, server) = enrich_with_held_calls().await;
    // A burst's worth of deliveries in flight.
    let burst: Vec<_> = (0..server::api_first::BURST_ACCEPTS)
        .map(|_| server.api_first.accepting())
        .collect();
    let runs = post_enrich_alerts(&server, 3).await;
    calls
        .until_started(server::api_first::ADVANCES_IN_A_BURST)
        .await;
    // The worker (eight runs at once) has had the third run's job long enough to start it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls.started(),
        server::api_first::ADVANCES_IN_A_BURST,
        "a third advance started during the burst"
    );
    drop(burst);
    calls.until_started(3).await;
    calls.released.add_permits(3);
    for run in &runs {
        assert_succeeded(&server.finished(run, Duration::from_secs(20)).await);
    }
    let (_, metrics) = server
        .call("GET", "/metrics", Some(crate::VIEWER_TOKEN), None)
        .await;
    let metrics = metrics.as_str().expect("metrics are text");
    assert!(
        metrics.contains("riposte_advances_held_back_total 1\n"),
        "{metrics}"
    );
    server.stop().await;
}

/// During a burst the worker beside the API claims only the jobs it may start (each of its shards
/// tops up to the advances a burst allows): the rest stay in the queue, where another worker
/// process takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_burst_a_worker_beside_the_api_leaves_the_jobs_it_cannot_start_to_others() {
    const RUNS: u8 = 12;
    let (calls, server) = enrich_with_held_calls().await;
    let burst: Vec<_> = (0..server::api_first::BURST_ACCEPTS)
        .map(|_| server.api_first.accepting())
        .collect();
    let runs = post_enrich_alerts(&server, RUNS).await;
    calls
        .until_started(server::api_first::ADVANCES_IN_A_BURST)
        .await;
    // Its shards look at the queue every 20 ms: long enough for them to claim all they would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elsewhere = server
        .store
        .claim(
            "another-process",
            usize::from(RUNS),
            Duration::from_secs(30),
        )
        .await
        .expect("another worker claims");
    // Eight runs at once, in two shards (one per runtime thread): without the burst the worker
    // would hold eight of the twelve jobs; in it, at most two a shard.
    let most_held = 2 * server::api_first::ADVANCES_IN_A_BURST;
    assert!(
        elsewhere.len() >= usize::from(RUNS) - most_held,
        "another worker found {} of {RUNS} jobs",
        elsewhere.len()
    );
    let given_back: Vec<String> = elsewhere.into_iter().map(|claim| claim.job_id).collect();
    server
        .store
        .release("another-process", &given_back)
        .await
        .expect("release");
    drop(burst);
    calls.released.add_permits(usize::from(RUNS));
    for run in &runs {
        assert_succeeded(&server.finished(run, Duration::from_secs(20)).await);
    }
    server.stop().await;
}

/// A delivery counts towards a burst from when it is read and authenticated until it is answered:
/// here four accepts wait for Redis, paused for writes, while a fifth delivery's body has not
/// all arrived (a slow or hostile sender does not hold the worker back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_count_towards_a_burst_once_read_until_answered() {
    let server =
        Server::listening(Backend::Redis, &[("echo.yaml", ECHO.to_owned())], &[], "").await;
    let redis = server.redis.as_ref().expect("a Redis store");
    let mut connection = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .query_async(&mut connection)
        .await
        .expect("CLIENT PAUSE");
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut half_sent = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    half_sent
        .write_all(
            b"POST /hooks/echo HTTP/1.1\r\nhost: riposte\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ip\": ",
        )
        .await
        .expect("write");
    let alerts: Vec<String> = (1..=4)
        .map(|last| format!(r#"{{"ip": "203.0.113.{last}"}}"#))
        .collect();
    let posts = futures::future::join_all(
        alerts
            .iter()
            .map(|alert| server.post_signed("echo", alert, &[])),
    );
    let watch = async {
        let four_in_flight = async {
            while server.api_first.accepts_in_flight() < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), four_in_flight)
            .await
            .expect("four accepts in flight");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.api_first.accepts_in_flight(), 4);
        let () = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async(&mut connection)
            .await
            .expect("CLIENT UNPAUSE");
    };
    let (answers, ()) = tokio::join!(posts, watch);
    for (status, answer) in answers {
        assert_eq!(status, 202, "{answer}");
    }
    assert_eq!(server.api_first.accepts_in_flight(), 0);
    drop(half_sent);
    server.stop().await;
}

/// How often a SQLite store's background thread (`riposte-sql-bg`) in this process has gone back
/// to sleep after its first wait, the most of any: once per wake-up.
fn background_store_wake_ups() -> u64 {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    threads
        .filter_map(Result::ok)
        .filter(|thread| {
            std::fs::read_to_string(thread.path().join("comm"))
                .is_ok_and(|name| name.trim_end() == "riposte-sql-bg")
        })
        .filter_map(|thread| {
            let status = std::fs::read_to_string(thread.path().join("status")).ok()?;
            let line = status
                .lines()
                .find(|line| line.starts_with("voluntary_ctxt_switches:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|switches| switches.saturating_sub(1))
        .max()
        .unwrap_or(0)
}
