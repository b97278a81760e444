//! Crash tests: real `riposte` processes killed with SIGKILL at random moments under load, a Redis
//! restarted under load, and a 50,000-alert backlog. Every accepted webhook must reach a terminal
//! state, and each step's side effect must reach the loopback ticket service under one stable
//! idempotency key. What they measure (recovery times, drain rates) is printed: run them with
//! `cargo nextest run -p riposte crash --no-capture` to see it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rand::Rng;
use runner::{RunEvent, RunState, RunStatus};
use store::Store;
use test_support::process::Launcher;
use test_support::{RedisServer, free_port, plugin_dir, serve};

const TOKEN: &str = "crash-test-token";

/// The loopback ticket service: applies each `Idempotency-Key` once, counts repeats.
#[derive(Clone)]
struct Tickets {
    applied: Arc<Mutex<HashMap<String, u32>>>,
    /// How long a request takes, in milliseconds (a random value in this range).
    latency: std::ops::Range<u64>,
}

impl Default for Tickets {
    fn default() -> Self {
        Tickets {
            applied: Arc::default(),
            latency: 2..15,
        }
    }
}

impl Tickets {
    fn router(&self) -> Router {
        let tickets = self.clone();
        let handler = move |headers: HeaderMap| {
            let tickets = tickets.clone();
            async move {
                let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(serde_json::json!({"error": "no key"})),
                    );
                };
                // A little latency, so kills land in the middle of steps.
                let pause = rand::rng().random_range(tickets.latency.clone());
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let mut applied = tickets.applied.lock().unwrap_or_else(|e| e.into_inner());
                *applied.entry(key.to_owned()).or_default() += 1;
                let id = applied.len();
                (StatusCode::CREATED, Json(serde_json::json!({"id": id})))
            }
        };
        Router::new()
            .route("/tickets", post(handler.clone()))
            .route("/tickets/close", post(handler))
    }

    fn keys(&self) -> HashMap<String, u32> {
        self.applied
            .lock()
            .map(|applied| applied.clone())
            .unwrap_or_default()
    }
}

/// Open a ticket, enrich (built-in), close the ticket: two side effects per run.
fn playbook(port: u16) -> String {
    format!(
        r#"
name: crash
trigger: {{ webhook: crash, auth: token }}
plugins:
  http: {{ hosts: ["127.0.0.1:{port}"] }}
steps:
  - id: open
    uses: http/request
    timeout: 2s
    with: {{ method: POST, url: "http://127.0.0.1:{port}/tickets", json: {{ alert: "{{{{ trigger.n }}}}" }} }}
  - id: enrich
    uses: core/echo
    needs: [open]
    timeout: 2s
    with: {{ ticket: "{{{{ steps.open.output.body.id }}}}" }}
  - id: close
    uses: http/request
    needs: [enrich]
    timeout: 2s
    with: {{ method: POST, url: "http://127.0.0.1:{port}/tickets/close", json: {{ ticket: "{{{{ steps.enrich.output.ticket }}}}" }} }}
"#
    )
}

/// A deployment of `riposte` processes on one machine, sharing a store.
struct Deployment {
    dir: tempfile::TempDir,
    launcher: Launcher,
    api: Option<Child>,
    workers: Vec<Child>,
}

impl Deployment {
    fn new(redis_url: Option<&str>, playbook: &str) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("playbooks")).expect("dir");
        std::fs::write(dir.path().join("playbooks/crash.yaml"), playbook).expect("playbook");
        let redis = if redis_url.is_some() {
            "redis: { url_env: CRASH_REDIS_URL, prefix: crash }"
        } else {
            ""
        };
        let config = format!(
            r#"
playbooks: playbooks
plugins: {plugins}
data_dir: data
{redis}
workers: {{ concurrency: 16, lease: 3s, poll_interval: 20ms, max_deliveries: 100 }}
auth:
  token: {{ type: bearer, tokens_env: [CRASH_TOKEN] }}
egress:
  allow_private: [127.0.0.0/8]
"#,
            plugins = plugin_dir().display()
        );
        std::fs::write(dir.path().join("riposte.yaml"), config).expect("config");
        let mut env = BTreeMap::from([("CRASH_TOKEN".to_owned(), TOKEN.to_owned())]);
        if let Some(url) = redis_url {
            env.insert("CRASH_REDIS_URL".into(), url.to_owned());
        }
        Deployment {
            launcher: Launcher {
                binary: env!("CARGO_BIN_EXE_riposte").into(),
                dir: dir.path().to_owned(),
                env,
                port: free_port(),
            },
            dir,
            api: None,
            workers: Vec::new(),
        }
    }

    fn base(&self) -> String {
        self.launcher.base()
    }

    fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("data/riposte.db")
    }

    /// Starts the API process (with `workers` workers of its own) and waits until it answers.
    async fn start_api(&mut self, workers: usize) {
        self.api = Some(self.launcher.spawn("serve", workers));
        if let Err(problem) = self.launcher.wait_ready(Duration::from_secs(60)).await {
            panic!("the API never got ready: {problem}");
        }
    }

    fn kill_api(&mut self) {
        if let Some(mut api) = self.api.take() {
            let _ = api.kill();
            let _ = api.wait();
        }
    }

    fn start_worker(&mut self) {
        let worker = self.launcher.spawn("worker", 16);
        self.workers.push(worker);
    }

    /// SIGKILLs worker `index` and starts a new process in its place at once.
    fn kill_and_replace_worker(&mut self, index: usize) {
        let mut victim = self.workers.remove(index);
        let _ = victim.kill();
        let _ = victim.wait();
        self.start_worker();
    }

    fn logs(&self) -> String {
        self.launcher.logs()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.kill_api();
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
    }
}

/// Posts alert `n` until the server accepts it (a SIEM retries on errors); returns the run id.
async fn deliver(client: &reqwest::Client, base: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = client
            .post(format!("{base}/hooks/crash"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("alert-{n}"))
            .body(format!(r#"{{"n": {n}}}"#))
            .send()
            .await;
        if let Ok(response) = sent
            && response.status().is_success()
            && let Ok(answer) = response.json::<serde_json::Value>().await
            && let Some(run) = answer["runs"][0]["run_id"].as_str()
        {
            return run.to_owned();
        }
        assert!(Instant::now() < deadline, "alert {n} was never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `count` alerts, 32 at a time; returns the accepted run ids.
async fn deliver_all(base: String, count: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut runs = Vec::with_capacity(count);
    let mut in_flight = futures::stream::FuturesOrdered::new();
    for n in 0..count {
        let (client, base) = (client.clone(), base.clone());
        in_flight.push_back(async move { deliver(&client, &base, n).await });
        if in_flight.len() >= 32
            && let Some(run) = futures::StreamExt::next(&mut in_flight).await
        {
            runs.push(run);
        }
    }
    while let Some(run) = futures::StreamExt::next(&mut in_flight).await {
        runs.push(run);
    }
    runs
}

/// Waits until every run is terminal; returns their final states.
async fn wait_for_all(store: &dyn Store, runs: &[String], within: Duration) -> Vec<RunState> {
    let deadline = Instant::now() + within;
    let mut finished: HashMap<String, RunState> = HashMap::new();
    loop {
        for run in runs {
            if finished.contains_key(run) {
                continue;
            }
            let events = store.events(run).await.unwrap_or_default();
            if let Some(state) = RunState::from_events(&events)
                && state.status.is_terminal()
            {
                finished.insert(run.clone(), state);
            }
        }
        if finished.len() == runs.len() {
            return runs.iter().filter_map(|run| finished.remove(run)).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} runs never finished",
            runs.len() - finished.len(),
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every run succeeded, and each step's side effect arrived under one stable key.
async fn check_outcome(store: &dyn Store, runs: &[String], tickets: &Tickets, label: &str) {
    let unique: HashSet<_> = runs.iter().collect();
    assert_eq!(unique.len(), runs.len(), "{label}: one run per alert");
    let states = wait_for_all(store, runs, Duration::from_secs(240)).await;
    let failed: Vec<_> = states
        .iter()
        .filter(|s| s.status != RunStatus::Succeeded)
        .map(|s| (&s.run_id, &s.error))
        .collect();
    assert!(failed.is_empty(), "{label}: runs failed: {failed:?}");

    let keys = tickets.keys();
    let expected: HashSet<String> = runs
        .iter()
        .flat_map(|run| [format!("{run}:open"), format!("{run}:close")])
        .collect();
    let seen: HashSet<String> = keys.keys().cloned().collect();
    assert_eq!(
        seen.len(),
        expected.len(),
        "{label}: one key per step of each run"
    );
    assert_eq!(seen, expected, "{label}: keys are run id + step id");
    let repeats: u32 = keys.values().map(|count| count - 1).sum();

    // How long recovered runs were stalled: from their last event before the recovery to it.
    let mut stalls = Vec::new();
    for state in states.iter().filter(|s| s.recoveries > 0) {
        let events = store.events(&state.run_id).await.unwrap_or_default();
        for pair in events.windows(2) {
            if let RunEvent::RunRecovered { at, .. } = &pair[1] {
                stalls.push(at.saturating_sub(pair[0].at()));
            }
        }
    }
    stalls.sort_unstable();
    let percentile = |p: f64| {
        stalls
            .get(((stalls.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    eprintln!(
        "{label}: {} runs succeeded; {} recovered after a lost worker (stall p50 {} ms, max {} ms); {} step requests repeated under the same key and applied once",
        states.len(),
        stalls.len(),
        percentile(0.5),
        percentile(1.0),
        repeats
    );
}

async fn open_store(deployment: &Deployment, redis: Option<&RedisServer>) -> Arc<dyn Store> {
    match redis {
        Some(redis) => Arc::new(
            store::RedisStore::connect(&redis.url(), "crash")
                .await
                .expect("redis"),
        ),
        None => Arc::new(
            store::SqliteStore::open(&deployment.sqlite_path(), store::Synchronous::Normal)
                .expect("sqlite"),
        ),
    }
}

const ALERTS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_workers_killed_at_random_lose_nothing_and_repeat_no_side_effect() {
    let redis = RedisServer::start();
    let tickets = Tickets::default();
    let (address, _) = serve(tickets.router()).await;
    let mut deployment = Deployment::new(Some(&redis.url()), &playbook(address.port()));
    deployment.start_api(0).await;
    deployment.start_worker();
    deployment.start_worker();

    let started = Instant::now();
    let sending = tokio::spawn(deliver_all(deployment.base(), ALERTS));
    let mut kills = 0;
    while !sending.is_finished() || kills < 12 {
        let pause = rand::rng().random_range(100..500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::rng().random_range(0..deployment.workers.len());
        deployment.kill_and_replace_worker(victim);
        kills += 1;
    }
    let runs = sending.await.expect("sender");
    eprintln!(
        "redis: {ALERTS} alerts accepted in {:?} while {kills} workers were SIGKILLed",
        started.elapsed()
    );
    let store = open_store(&deployment, Some(&redis)).await;
    check_outcome(store.as_ref(), &runs, &tickets, "redis, killed workers").await;
    eprintln!(
        "redis: all done {:?} after the first alert",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_server_killed_at_random_loses_nothing_and_repeats_no_side_effect() {
    let tickets = Tickets::default();
    let (address, _) = serve(tickets.router()).await;
    let mut deployment = Deployment::new(None, &playbook(address.port()));
    deployment.start_api(16).await;

    let started = Instant::now();
    let sending = tokio::spawn(deliver_all(deployment.base(), ALERTS));
    let mut kills = 0;
    while !sending.is_finished() || kills < 6 {
        let pause = rand::rng().random_range(300..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // The one process holds the API and the workers: the sender retries while it is down.
        deployment.kill_api();
        deployment.start_api(16).await;
        kills += 1;
    }
    let runs = sending.await.expect("sender");
    eprintln!(
        "sqlite: {ALERTS} alerts accepted in {:?} while the server was SIGKILLed {kills} times",
        started.elapsed()
    );
    let store = open_store(&deployment, None).await;
    check_outcome(store.as_ref(), &runs, &tickets, "sqlite, killed server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_loses_no_accepted_alert() {
    let mut redis = RedisServer::start();
    let tickets = Tickets::default();
    let (address, _) = serve(tickets.router()).await;
    let mut deployment = Deployment::new(Some(&redis.url()), &playbook(address.port()));
    deployment.start_api(0).await;
    deployment.start_worker();
    deployment.start_worker();

    let sending = tokio::spawn(deliver_all(deployment.base(), ALERTS));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let restarted = Instant::now();
    redis.restart();
    eprintln!(
        "redis restarted (SIGKILL, AOF replay) in {:?}",
        restarted.elapsed()
    );
    let runs = sending.await.expect("sender");
    let store = open_store(&deployment, Some(&redis)).await;
    check_outcome(store.as_ref(), &runs, &tickets, "redis restarted").await;
}

/// One cheap step, so the test measures the queue, not the plugins.
const BACKLOG_PLAYBOOK: &str = r#"
name: crash
trigger: { webhook: crash, auth: token }
steps:
  - id: note
    uses: core/echo
    timeout: 2s
    with: { n: "{{ trigger.n }}" }
"#;

const BACKLOG: usize = 50_000;

async fn queue_backlog(store: &Arc<dyn Store>) -> Vec<String> {
    let mut runs = Vec::with_capacity(BACKLOG);
    let mut batch = futures::stream::FuturesUnordered::new();
    for n in 0..BACKLOG {
        let store = Arc::clone(store);
        batch.push(async move {
            let delivery = store::Delivery {
                trigger: "crash".into(),
                delivery_id: None,
                delivery_ttl: Duration::from_secs(60),
                runs: vec![test_support::new_run(
                    &runner::new_run_id(),
                    "crash",
                    "crash",
                    serde_json::json!({ "n": n }),
                )],
                ignored: Vec::new(),
                received_at: store::now_millis(),
            };
            store.accept(&delivery).await.expect("accept")[0]
                .run_id
                .clone()
        });
        if batch.len() >= 64
            && let Some(run) = futures::StreamExt::next(&mut batch).await
        {
            runs.push(run);
        }
    }
    while let Some(run) = futures::StreamExt::next(&mut batch).await {
        runs.push(run);
    }
    runs
}

async fn drain_backlog(store: Arc<dyn Store>, mut deployment: Deployment, label: &str) {
    let queued = Instant::now();
    let runs = queue_backlog(&store).await;
    eprintln!("{label}: {BACKLOG} alerts queued in {:?}", queued.elapsed());
    let started = Instant::now();
    deployment.start_worker();
    deployment.start_worker();
    // Progress is checked every two seconds: once the workers have started (their first job
    // done, within a minute: they load and compile the plugins first), a stall (no job done in
    // 10 s) fails the test.
    let mut last_depth = u64::MAX;
    let mut last_progress = Instant::now();
    let mut patience = Duration::from_secs(60);
    loop {
        let depth = store.queue_depth().await.expect("depth");
        if depth == 0 {
            break;
        }
        if depth < last_depth {
            if last_depth != u64::MAX && depth < BACKLOG as u64 {
                patience = Duration::from_secs(10);
            }
            last_depth = depth;
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < patience,
            "{label}: the drain stalled at {depth} jobs: {}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{label}: drained {BACKLOG} runs in {elapsed:?} ({:.0} runs/s with 2 worker processes)",
        BACKLOG as f64 / elapsed.as_secs_f64()
    );
    let states = wait_for_all(store.as_ref(), &runs, Duration::from_secs(120)).await;
    assert!(
        states.iter().all(|s| s.status == RunStatus::Succeeded),
        "{label}: every run succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_fifty_thousand_alerts_drains_without_a_stall() {
    let redis = RedisServer::start();
    let deployment = Deployment::new(Some(&redis.url()), BACKLOG_PLAYBOOK);
    let store = open_store(&deployment, Some(&redis)).await;
    drain_backlog(store, deployment, "redis backlog").await;

    let deployment = Deployment::new(None, BACKLOG_PLAYBOOK);
    std::fs::create_dir_all(deployment.sqlite_path().parent().unwrap_or(Path::new(".")))
        .expect("data dir");
    let store = open_store(&deployment, None).await;
    drain_backlog(store, deployment, "sqlite backlog").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_runs_in_hand_finish_and_exits_cleanly() {
    let tickets = Tickets {
        latency: 300..400,
        ..Tickets::default()
    };
    let (address, _) = serve(tickets.router()).await;
    let mut deployment = Deployment::new(None, &playbook(address.port()));
    deployment.start_api(8).await;
    let runs = deliver_all(deployment.base(), 40).await;
    // Let the workers get into their first steps, then ask the process to stop.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let api = deployment.api.take().expect("running");
    let pid = api.id().to_string();
    let signalled = Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let exit = tokio::task::spawn_blocking(move || {
        let mut api = api;
        api.wait()
    })
    .await
    .expect("join")
    .expect("wait");
    eprintln!("SIGTERM: the server stopped in {:?}", signalled.elapsed());
    assert!(
        exit.success(),
        "a graceful stop exits 0: {exit:?} {}",
        deployment.logs()
    );

    // What was in hand finished; what was not started went back to the queue. A new process
    // finishes the rest, and no step ran twice.
    let store = open_store(&deployment, None).await;
    let finished_before_restart = {
        let mut count = 0;
        for run in &runs {
            let events = store.events(run).await.expect("events");
            let state = RunState::from_events(&events);
            assert!(
                state.as_ref().is_none_or(|s| s.status.is_terminal()),
                "run {run} was left half-done: {state:?}"
            );
            count += usize::from(state.is_some());
        }
        count
    };
    assert!(finished_before_restart > 0, "runs in hand were finished");
    deployment.start_api(8).await;
    check_outcome(store.as_ref(), &runs, &tickets, "sigterm").await;
    let repeated: u32 = tickets.keys().values().map(|count| count - 1).sum();
    assert_eq!(repeated, 0, "a graceful stop repeats no step");
}
