//! The server's load generator (`bench/load` builds and runs it).
//!
//! It starts loopback services that speak the real APIs (AbuseIPDB, Slack, a ticket API), a
//! `riposte serve` process on a four-step playbook with three plugin calls, and measures:
//! 1. ingest: alerts posted as fast as `--concurrency` connections allow, into an API-only
//!    process: accepted alerts/s and accept latency (p50, p99, max);
//! 2. drain: `--workers` `riposte worker` processes (1 unless given) started on that backlog:
//!    completed runs/s and the workers' CPU time per run;
//! 3. steady: API and workers in one process under load at once: accept latency and runs/s;
//!
//! and the peak memory (VmHWM) of each riposte process. For the steady phase it also reports the
//! cost of the audit trail: journal writes and records per run and the time per write (from the
//! server's `/metrics`), and on Redis the Redis CPU time per run and how long Redis took to answer a
//! PING sent every millisecond while the alerts were posted. For both phases that post alerts it
//! reports the accepts as the server itself timed them (`/metrics` again), which tells the time
//! inside the handler from the time around it, and how the accepts over 5 ms bunch by when they
//! were answered: a stall of the server holds up every post in flight at once.
//!
//! With `--rate R` the steady phase offers R alerts/s on a fixed schedule (open loop), and each
//! accept's latency counts from when it was due to be sent, so a slow answer cannot hide the
//! wait of the alerts queued behind it (coordinated omission); it also prints how late the posts
//! left, the load generator's own share of that latency. A closed loop's latency is only
//! concurrency / throughput (Little's law).
//!
//! Usage: `loadgen --riposte <binary> --plugins <dir> [--alerts N] [--concurrency C]
//! [--workers N] [--rate R] [--redis <url>]` (SQLite when no Redis is given).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use runner::{RunEvent, RunState, RunStatus};
use sha2::Digest as _;
use store::Store;
use test_support::apis::{ABUSEIPDB_KEY, SLACK_TOKEN, abuseipdb, slack};
use test_support::process::Launcher;
use test_support::{free_port, serve};

const TOKEN: &str = "load-test-token";
/// A viewer token for `/metrics`, configured by its SHA-256.
const METRICS_TOKEN: &str = "rpt_load-metrics-viewer";

struct Options {
    riposte: PathBuf,
    plugins: PathBuf,
    alerts: usize,
    concurrency: usize,
    /// Worker processes in the drain phase.
    workers: usize,
    /// Alerts per second offered in the steady phase, whatever the answers' pace (open loop);
    /// `None`: as fast as `concurrency` connections allow (closed loop).
    rate: Option<f64>,
    redis: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        riposte: PathBuf::new(),
        plugins: PathBuf::new(),
        alerts: 20_000,
        concurrency: 64,
        workers: 1,
        rate: None,
        redis: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--riposte" => options.riposte = value.into(),
            "--plugins" => options.plugins = value.into(),
            "--alerts" => options.alerts = value.parse().map_err(|_| "--alerts: a number")?,
            "--concurrency" => {
                options.concurrency = value.parse().map_err(|_| "--concurrency: a number")?
            }
            "--workers" => options.workers = value.parse().map_err(|_| "--workers: a number")?,
            "--rate" => {
                let rate: f64 = value.parse().map_err(|_| "--rate: alerts per second")?;
                if !(rate > 0.0 && rate.is_finite()) {
                    return Err("--rate: a positive number of alerts per second".into());
                }
                options.rate = Some(rate);
            }
            "--redis" => options.redis = Some(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.riposte.as_os_str().is_empty() || options.plugins.as_os_str().is_empty() {
        return Err("--riposte <binary> and --plugins <dir> are required".into());
    }
    // The processes run in a temporary directory: make the paths absolute.
    for path in [&mut options.riposte, &mut options.plugins] {
        *path = path
            .canonicalize()
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    Ok(options)
}

fn playbook(abuse: u16, tickets: u16, slack: u16) -> String {
    format!(
        r##"
name: load
# As SIEMs and playbooks do: each alert has a delivery id and a dedupe key, so the store keeps
# two idempotency keys per alert.
trigger:
  webhook: load
  auth: token
  dedupe: {{ key: "{{{{ trigger.n }}}}:{{{{ trigger.ip }}}}", window: 1h }}
secrets: [abuseipdb_key, slack_bot_token]
plugins:
  enrich-ioc: {{ hosts: ["127.0.0.1:{abuse}"], secrets: [abuseipdb_key] }}
  http: {{ hosts: ["127.0.0.1:{tickets}"] }}
  notify-slack: {{ hosts: ["127.0.0.1:{slack}"], secrets: [slack_bot_token] }}
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    timeout: 5s
    with: {{ ip: "{{{{ trigger.ip }}}}", base_url: "http://127.0.0.1:{abuse}" }}
  - id: decide
    uses: core/echo
    needs: [enrich]
    timeout: 5s
    with: {{ escalate: "{{{{ steps.enrich.output.score >= 50 }}}}" }}
  - id: ticket
    uses: http/request
    needs: [decide]
    timeout: 5s
    with:
      method: POST
      url: "http://127.0.0.1:{tickets}/tickets"
      json: {{ ip: "{{{{ trigger.ip }}}}", escalate: "{{{{ steps.decide.output.escalate }}}}" }}
  - id: notify
    uses: notify-slack/post-message
    needs: [ticket]
    timeout: 5s
    with:
      channel: "#soc"
      text: "{{{{ trigger.ip | defang }}}}: ticket {{{{ steps.ticket.output.body.id }}}}"
      base_url: "http://127.0.0.1:{slack}"
"##
    )
}

/// A `riposte` process of a phase, killed when dropped: also when the load generator panics (a
/// run that never finishes), which left the process behind, working and polling, for the next
/// measurement to share the cores with.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Deployment {
    dir: tempfile::TempDir,
    launcher: Launcher,
    options: Arc<Options>,
}

impl Deployment {
    fn spawn(&self, role: &str, workers: usize) -> Started {
        Started(self.launcher.spawn(role, workers))
    }

    fn base(&self) -> String {
        self.launcher.base()
    }

    async fn store(&self) -> Arc<dyn Store> {
        match &self.options.redis {
            Some(url) => Arc::new(
                store::RedisStore::connect(url, &self.prefix())
                    .await
                    .expect("redis"),
            ),
            None => Arc::new(
                store::SqliteStore::open(
                    &self.dir.path().join("data/riposte.db"),
                    store::Synchronous::Normal,
                )
                .expect("sqlite"),
            ),
        }
    }

    fn prefix(&self) -> String {
        format!("load{}", self.launcher.port)
    }

    async fn wait_ready(&self) {
        if let Err(problem) = self.launcher.wait_ready(Duration::from_secs(120)).await {
            panic!("{problem}");
        }
    }
}

/// Posts alert `n`: its run id when it was accepted.
async fn post_alert(client: reqwest::Client, url: String, n: usize) -> Option<String> {
    let ip = format!("198.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
    let response = client
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("idempotency-key", format!("load-{n}"))
        .body(format!(r#"{{"ip": "{ip}", "n": {n}}}"#))
        .send()
        .await;
    match response {
        Ok(response) if response.status().as_u16() == 202 => response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|answer| answer["runs"][0]["run_id"].as_str().map(str::to_owned)),
        _ => None,
    }
}

/// One alert posted: when it was sent (from the start of its phase; in an open loop, when it was
/// due), how long its answer took, and the run it started.
struct Post {
    sent: Duration,
    latency: Duration,
    run: Option<String>,
}

/// Accept latencies (sorted), run ids, the time it took to post them all, and the slow accepts.
type Posted = (Vec<Duration>, Vec<String>, Duration, SlowAccepts);

fn posted(started: Instant, results: Vec<Post>) -> Posted {
    let elapsed = started.elapsed();
    let slow = slow_accepts(&results);
    let mut latencies: Vec<Duration> = results.iter().map(|post| post.latency).collect();
    latencies.sort_unstable();
    let runs = results.into_iter().filter_map(|post| post.run).collect();
    (latencies, runs, elapsed, slow)
}

/// The accept latency goal: an accept that takes longer is slow.
const SLOW: Duration = Duration::from_millis(5);

/// The slow accepts, by when they were answered. A stall that holds up every post in flight at
/// once shows as a few windows holding many; a tail spread over the run, as many holding few.
struct SlowAccepts {
    /// How many slow accepts were answered in each window of [`SLOW`] that had any, most first.
    by_window: Vec<usize>,
}

fn slow_accepts(results: &[Post]) -> SlowAccepts {
    let mut windows: BTreeMap<u128, usize> = BTreeMap::new();
    for post in results.iter().filter(|post| post.latency >= SLOW) {
        let answered = post.sent.saturating_add(post.latency);
        *windows
            .entry(answered.as_micros() / SLOW.as_micros())
            .or_default() += 1;
    }
    let mut by_window: Vec<usize> = windows.into_values().collect();
    by_window.sort_unstable_by(|a, b| b.cmp(a));
    SlowAccepts { by_window }
}

/// Posts `count` alerts starting at `first`, `concurrency` at a time (closed loop): one task per
/// connection, each posting its next alert as soon as the last is answered, as that many
/// senders would. (All of them polled in one task, the answers waited for that task's one
/// thread, and that wait counted as the server's.)
async fn post_alerts(
    client: &reqwest::Client,
    base: &str,
    first: usize,
    count: usize,
    concurrency: usize,
) -> Posted {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let url = format!("{base}/hooks/load");
    let senders: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut results = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        break results;
                    }
                    let sent = Instant::now();
                    let run = post_alert(client.clone(), url.clone(), n).await;
                    results.push(Post {
                        sent: sent - started,
                        latency: sent.elapsed(),
                        run,
                    });
                }
            })
        })
        .collect();
    let mut results = Vec::with_capacity(count);
    for sender in senders {
        results.extend(sender.await.expect("a sender's task"));
    }
    posted(started, results)
}

/// Posts `count` alerts starting at `first` at `rate` per second on a fixed schedule, however
/// many are waiting for an answer (open loop). Latency counts from each alert's due time; the
/// second part of the answer is how late each was sent (sorted), a share of that latency that is
/// the load generator's own.
async fn post_alerts_at(
    client: &reqwest::Client,
    base: &str,
    first: usize,
    count: usize,
    rate: f64,
) -> (Posted, Vec<Duration>) {
    let started = Instant::now();
    let (client, url) = (client.clone(), format!("{base}/hooks/load"));
    let runtime = tokio::runtime::Handle::current();
    // tokio's timers fire on whole milliseconds: a sender on them is up to a millisecond late,
    // and that lateness would count as the server's. A thread of its own sleeps to each due time.
    let posts = tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|i| {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (client, url) = (client.clone(), url.clone());
                runtime.spawn(async move {
                    let late = due.elapsed();
                    let run = post_alert(client, url, first + i).await;
                    (due.elapsed(), late, run)
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("the sender's thread");
    let mut results = Vec::with_capacity(count);
    let mut late = Vec::with_capacity(count);
    for post in posts {
        let (latency, sent_late, run) = post.await.unwrap_or((Duration::MAX, Duration::MAX, None));
        results.push(Post {
            sent: Duration::from_secs_f64(results.len() as f64 / rate),
            latency,
            run,
        });
        late.push(sent_late);
    }
    late.sort_unstable();
    (posted(started, results), late)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// "p50 …, p99 …, max … ms" of `sorted`, in milliseconds with `decimals` places.
fn spread(sorted: &[Duration], decimals: usize) -> String {
    let [p50, p99, max] = [0.50, 0.99, 1.0].map(|p| percentile(sorted, p).as_secs_f64() * 1e3);
    format!("p50 {p50:.decimals$} ms, p99 {p99:.decimals$} ms, max {max:.decimals$} ms")
}

fn report_accepts(label: &str, (latencies, runs, elapsed, slow): &Posted) {
    println!(
        "{label}: {}/{} accepted in {:.2} s = {:.0} alerts/s; accept latency {}",
        runs.len(),
        latencies.len(),
        elapsed.as_secs_f64(),
        runs.len() as f64 / elapsed.as_secs_f64(),
        spread(latencies, 2),
    );
    let count: usize = slow.by_window.iter().sum();
    if count == 0 {
        println!("  accepts of {} ms or more: none", SLOW.as_millis());
        return;
    }
    let most: Vec<String> = slow
        .by_window
        .iter()
        .take(3)
        .map(usize::to_string)
        .collect();
    println!(
        "  accepts of {} ms or more: {count} ({:.2}%), answered in {} windows of {} ms; the most in one: {}",
        SLOW.as_millis(),
        count as f64 * 100.0 / latencies.len().max(1) as f64,
        slow.by_window.len(),
        SLOW.as_millis(),
        most.join(", "),
    );
}

/// When the runs of a phase started and finished.
struct Finished {
    succeeded: usize,
    /// The first run's start (ms since the epoch).
    first_start: u64,
    /// Each run's finish (ms since the epoch), sorted.
    finishes: Vec<u64>,
    /// Each run's time from start to finish, sorted.
    durations: Vec<Duration>,
}

/// Waits for every run to finish and reads when each started and finished.
async fn finished(store: &dyn Store, runs: &[String]) -> Finished {
    let deadline = Instant::now() + Duration::from_secs(600);
    while store.queue_depth().await.unwrap_or(1) > 0 {
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut result = Finished {
        succeeded: 0,
        first_start: u64::MAX,
        finishes: Vec::with_capacity(runs.len()),
        durations: Vec::with_capacity(runs.len()),
    };
    for run in runs {
        let events = loop {
            let events = store.events(run).await.unwrap_or_default();
            if RunState::from_events(&events).is_some_and(|s| s.status.is_terminal()) {
                break events;
            }
            assert!(Instant::now() < deadline, "run {run} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut started = None;
        for event in &events {
            match event {
                RunEvent::RunStarted { at, .. } => {
                    result.first_start = result.first_start.min(*at);
                    started = Some(*at);
                }
                RunEvent::RunFinished { at, status, .. } => {
                    result.finishes.push(*at);
                    if let Some(started) = started {
                        result
                            .durations
                            .push(Duration::from_millis(at.saturating_sub(started)));
                    }
                    result.succeeded += usize::from(*status == RunStatus::Succeeded);
                }
                _ => {}
            }
        }
    }
    result.finishes.sort_unstable();
    result.durations.sort_unstable();
    result
}

/// The server's `/metrics` text, or `None` (said) if it did not answer.
async fn metrics(client: &reqwest::Client, base: &str) -> Option<String> {
    let answer = client
        .get(format!("{base}/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await;
    match answer {
        Ok(response) => Some(response.text().await.unwrap_or_default()),
        Err(error) => {
            println!("  /metrics did not answer: {error}");
            None
        }
    }
}

/// The audit trail's cost, from the server's own metrics: journal writes (each one round trip,
/// all of a step's records batched) and records per run, and the time per write.
async fn report_audit_cost(client: &reqwest::Client, base: &str, runs: usize) {
    let Some(text) = metrics(client, base).await else {
        return;
    };
    let value = |name: &str| metric_value(&text, name);
    let writes = value("riposte_journal_write_duration_seconds_count");
    let seconds = value("riposte_journal_write_duration_seconds_sum");
    let records = value("riposte_journal_records_total");
    let runs = runs.max(1) as f64;
    println!(
        "  audit trail: {:.1} journal writes and {:.1} records per run; {:.3} ms per write, {:.2} ms of journal writing per run",
        writes / runs,
        records / runs,
        seconds * 1e3 / writes.max(1.0),
        seconds * 1e3 / runs
    );
}

/// How often, and for how long in all, the worker held runs back while the API took a burst of
/// webhooks (`server::api_first`).
async fn report_held_back(client: &reqwest::Client, base: &str) {
    let Some(text) = metrics(client, base).await else {
        return;
    };
    println!(
        "  advances held back while the API took a burst: {:.0}, {:.2} s waited in all",
        metric_value(&text, "riposte_advances_held_back_total"),
        metric_value(&text, "riposte_advance_hold_back_seconds_total")
    );
}

/// The value of an unlabelled metric in a `/metrics` text, 0 if it is not there.
fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The accepts as the server timed them (`riposte_webhook_duration_seconds`, from the request's
/// headers read to its answer): what of the latency above was spent inside the handler, and so
/// what was not (the kernel's queues, hyper, and the load generator waiting for a core).
async fn report_server_latency(client: &reqwest::Client, base: &str) {
    let Some(text) = metrics(client, base).await else {
        return;
    };
    let buckets = accept_buckets(&text);
    let Some(&(_, count)) = buckets.last() else {
        println!("  the server timed no accepts");
        return;
    };
    let within = |bound: f64| {
        buckets
            .iter()
            .find(|(le, _)| *le >= bound)
            .map_or(count, |(_, below)| *below)
    };
    let quantile = |q: f64| {
        let rank = q * count;
        let at = buckets.iter().position(|(_, below)| *below >= rank);
        let upper = at.map_or(f64::INFINITY, |at| buckets[at].0);
        let lower = at
            .and_then(|at| at.checked_sub(1))
            .map_or(0.0, |at| buckets[at].0);
        format!("({:.2}, {:.2}] ms", lower * 1e3, upper * 1e3)
    };
    println!(
        "  as the server timed them (headers read to answer): {:.2}% within 5 ms; p50 in {}, p99 in {}",
        within(0.005) * 100.0 / count.max(1.0),
        quantile(0.5),
        quantile(0.99)
    );
}

/// The cumulative buckets of accepted webhooks (status 202, every trigger's summed), as (upper
/// bound in seconds, count), ascending; the last is `+Inf`, the total.
fn accept_buckets(metrics: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let labels = line.strip_prefix("riposte_webhook_duration_seconds_bucket{")?;
            let (labels, count) = labels.split_once("} ")?;
            if !labels.contains("status=\"202\"") {
                return None;
            }
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets.dedup_by(|later, kept| {
        let same_bound = later.0 == kept.0;
        if same_bound {
            kept.1 += later.1;
        }
        same_bound
    });
    buckets
}

/// Pings the Redis at `url` every millisecond, on a connection of its own, until `stop` is set,
/// and returns how long each answer took (sorted): how long Redis keeps a command waiting while the
/// load runs, which every accept on Redis waits through too. The probe runs on the load
/// generator's runtime, so its figures include waiting for a core like the accepts'. `None`
/// without Redis, or when it cannot connect; a failed PING ends the probe.
async fn probe_redis(url: Option<String>, stop: Arc<AtomicBool>) -> Option<Vec<Duration>> {
    let client = redis::Client::open(url?).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let answered: Result<String, _> = redis::cmd("PING").query_async(&mut connection).await;
        if answered.is_err() {
            break;
        }
        answers.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    answers.sort_unstable();
    Some(answers)
}

/// Redis's own CPU time so far (user + system, seconds), from `INFO cpu`.
async fn redis_cpu(url: Option<&str>) -> Option<f64> {
    let client = redis::Client::open(url?).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut connection)
        .await
        .ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some(field("used_cpu_user:")? + field("used_cpu_sys:")?)
}

fn report_runs(label: &str, runs: usize, finished: &Finished) {
    let last = finished.finishes.last().copied().unwrap_or(0);
    let since_start = |at: u64| at.saturating_sub(finished.first_start) as f64 / 1e3;
    let seconds = since_start(last);
    println!(
        "{label}: {}/{runs} four-step runs succeeded in {seconds:.2} s = {:.0} runs/s",
        finished.succeeded,
        finished.succeeded as f64 / seconds.max(0.001)
    );
    // Where the rate bends: a long tail shows as a late last finish against the 90th percentile.
    let finished_by = |p: f64| {
        let index = ((finished.finishes.len().max(1) - 1) as f64 * p).round() as usize;
        since_start(finished.finishes.get(index).copied().unwrap_or(0))
    };
    println!(
        "  finished by: 50% {:.2} s, 90% {:.2} s, 99% {:.2} s, all {seconds:.2} s; a run from start to finish: {}",
        finished_by(0.5),
        finished_by(0.9),
        finished_by(0.99),
        spread(&finished.durations, 0),
    );
}

/// Peak and current resident memory of a process, from /proc.
fn memory(child: &Child) -> String {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .map(|line| line[name.len()..].trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "peak {} (now {}), CPU {}",
        field("VmHWM:"),
        field("VmRSS:"),
        cpu(&format!("/proc/{}/stat", child.id()))
    )
}

/// User + system CPU time of a process so far, from /proc.
fn cpu(stat_file: &str) -> String {
    format!("{:.1} s", cpu_seconds(stat_file))
}

/// User + system CPU seconds of a process so far, from /proc (clock ticks of 10 ms).
fn cpu_seconds(stat_file: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_file).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

#[tokio::main]
async fn main() {
    let options = match options() {
        Ok(options) => Arc::new(options),
        Err(problem) => {
            eprintln!("loadgen: {problem}");
            std::process::exit(2);
        }
    };
    // Stopped by a signal, the phases' processes must go too: dropping the measurement drops
    // their guards. A signal's default action would end this process and leave them working.
    let measured = tokio::select! {
        () = measure(options) => true,
        () = interrupted() => false,
    };
    if !measured {
        eprintln!("loadgen: interrupted; its riposte processes are stopped");
        std::process::exit(130);
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// The three phases, as the module's documentation describes.
async fn measure(options: Arc<Options>) {
    let (abuse, _) = serve(abuseipdb(Arc::new(AtomicUsize::new(0)))).await;
    let (slack_address, _) = serve(slack()).await;
    let ticket_ids = Arc::new(AtomicUsize::new(0));
    let tickets = Router::new().route(
        "/tickets",
        post(move || {
            let ids = Arc::clone(&ticket_ids);
            async move {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                (
                    axum::http::StatusCode::CREATED,
                    axum::Json(serde_json::json!({ "id": id })),
                )
            }
        }),
    );
    let (tickets_address, _) = serve(tickets).await;

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("playbooks")).expect("playbooks dir");
    std::fs::write(
        dir.path().join("playbooks/load.yaml"),
        playbook(abuse.port(), tickets_address.port(), slack_address.port()),
    )
    .expect("playbook");
    let port = free_port();
    let redis = if options.redis.is_some() {
        format!("redis: {{ url_env: LOAD_REDIS_URL, prefix: load{port} }}")
    } else {
        String::new()
    };
    let config = format!(
        r#"
playbooks: playbooks
plugins: {plugins}
data_dir: data
{redis}
workers: {{ concurrency: 64, poll_interval: 20ms }}
auth: {{ token: {{ type: bearer, tokens_env: [LOAD_TOKEN] }} }}
egress: {{ allow_private: [127.0.0.0/8] }}
"#,
        plugins = options.plugins.display()
    );
    std::fs::write(dir.path().join("riposte.yaml"), config).expect("config");
    let mut env = BTreeMap::from([
        ("LOAD_TOKEN".to_owned(), TOKEN.to_owned()),
        (
            "RIPOSTE_SECRET_ABUSEIPDB_KEY".to_owned(),
            ABUSEIPDB_KEY.to_owned(),
        ),
        (
            "RIPOSTE_SECRET_SLACK_BOT_TOKEN".to_owned(),
            SLACK_TOKEN.to_owned(),
        ),
    ]);
    if let Some(url) = &options.redis {
        env.insert("LOAD_REDIS_URL".into(), url.clone());
    }
    let hash: String = sha2::Sha256::digest(METRICS_TOKEN.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    env.insert("RIPOSTE_API_TOKEN_LOAD".into(), format!("viewer:{hash}"));
    let deployment = Deployment {
        launcher: Launcher {
            binary: options.riposte.clone(),
            dir: dir.path().to_owned(),
            env,
            port,
        },
        dir,
        options: Arc::clone(&options),
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .build()
        .expect("client");
    let backend = if options.redis.is_some() {
        "redis"
    } else {
        "sqlite"
    };
    println!(
        "riposte load: {} alerts, {} connections, {backend} store, 2 cores shared by everything",
        options.alerts, options.concurrency
    );

    // 1. Ingest into an API-only process.
    let api = deployment.spawn("serve", 0);
    deployment.wait_ready().await;
    let ingest = post_alerts(
        &client,
        &deployment.base(),
        0,
        options.alerts,
        options.concurrency,
    )
    .await;
    report_accepts("ingest (API only)", &ingest);
    let (_, runs, _, _) = ingest;
    report_server_latency(&client, &deployment.base()).await;
    println!("  API process memory: {}", memory(&api.0));

    // 2. Worker processes drain the backlog.
    let store = deployment.store().await;
    let redis_cpu_before = redis_cpu(options.redis.as_deref()).await;
    let workers: Vec<Started> = (0..options.workers)
        .map(|_| deployment.spawn("worker", 64))
        .collect();
    let drained = finished(store.as_ref(), &runs).await;
    report_runs(
        &format!("drain ({} worker processes)", options.workers),
        runs.len(),
        &drained,
    );
    let worker_cpu: f64 = workers
        .iter()
        .map(|worker| cpu_seconds(&format!("/proc/{}/stat", worker.0.id())))
        .sum();
    // Includes starting up (loading plugins, compiling nothing: the cache is warm) and polling
    // the emptied queue until every run's end is read back: a little over the runs' own cost.
    println!(
        "  worker CPU: {:.2} ms per run",
        worker_cpu * 1e3 / runs.len().max(1) as f64
    );
    if let (Some(before), Some(after)) =
        (redis_cpu_before, redis_cpu(options.redis.as_deref()).await)
    {
        println!(
            "  Redis CPU: {:.3} ms per run",
            (after - before) * 1e3 / runs.len().max(1) as f64
        );
    }
    for worker in &workers {
        println!("  worker process memory: {}", memory(&worker.0));
    }
    println!(
        "  load generator and loopback services so far: CPU {}",
        cpu("/proc/self/stat")
    );
    drop(workers);
    drop(api);
    // The load generator's own store has a checkpointer, which would copy and restart the WAL of
    // the process measured next while it takes the alerts: it is opened again once they are in.
    drop(store);

    // 3. Steady state: one process accepts and runs at once.
    let both = deployment.spawn("serve", 64);
    deployment.wait_ready().await;
    let redis_cpu_before = redis_cpu(options.redis.as_deref()).await;
    let probe_stop = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(probe_redis(options.redis.clone(), Arc::clone(&probe_stop)));
    let (posted, sender_late) = match options.rate {
        Some(rate) => {
            let (posted, late) = post_alerts_at(
                &client,
                &deployment.base(),
                options.alerts,
                options.alerts,
                rate,
            )
            .await;
            (posted, Some(late))
        }
        None => {
            let posted = post_alerts(
                &client,
                &deployment.base(),
                options.alerts,
                options.alerts,
                options.concurrency,
            )
            .await;
            (posted, None)
        }
    };
    let label = match options.rate {
        Some(rate) => format!("steady (API + workers, {rate:.0} alerts/s offered)"),
        None => "steady (API + workers)".to_owned(),
    };
    probe_stop.store(true, Ordering::Relaxed);
    report_accepts(&label, &posted);
    let (_, runs, _, _) = posted;
    report_server_latency(&client, &deployment.base()).await;
    if let Some(late) = sender_late {
        println!(
            "  sent behind schedule (counted in that latency): {}",
            spread(&late, 2)
        );
    }
    if let Ok(Some(pings)) = probe.await
        && !pings.is_empty()
    {
        println!(
            "  Redis answered a PING (one a millisecond, meanwhile) in: {}",
            spread(&pings, 2)
        );
    }
    let store = deployment.store().await;
    let steady = finished(store.as_ref(), &runs).await;
    report_runs("steady (API + workers)", runs.len(), &steady);
    println!("  process memory: {}", memory(&both.0));
    report_audit_cost(&client, &deployment.base(), runs.len()).await;
    report_held_back(&client, &deployment.base()).await;
    if let (Some(before), Some(after)) =
        (redis_cpu_before, redis_cpu(options.redis.as_deref()).await)
    {
        println!(
            "  Redis CPU: {:.3} ms per run (everything: queue, journal, trail)",
            (after - before) * 1e3 / runs.len().max(1) as f64
        );
    }
    drop(both);
}

#[cfg(test)]
mod tests {
    use super::accept_buckets;

    #[test]
    fn the_accept_buckets_are_read_in_any_label_order_only_for_accepts_and_summed_over_triggers() {
        let metrics = r#"# TYPE riposte_webhook_duration_seconds histogram
riposte_webhook_duration_seconds_sum{trigger="siem",status="202"} 0.01
riposte_webhook_duration_seconds_bucket{le="0.005",trigger="siem",status="202"} 9
riposte_webhook_duration_seconds_bucket{le="+Inf",trigger="siem",status="202"} 10
riposte_webhook_duration_seconds_bucket{trigger="siem",status="202",le="0.001"} 4
riposte_webhook_duration_seconds_bucket{le="0.001",trigger="unknown",status="404"} 1
riposte_webhook_duration_seconds_bucket{le="0.001",trigger="edr",status="202"} 1
riposte_webhook_duration_seconds_bucket{le="0.005",trigger="edr",status="202"} 2
riposte_webhook_duration_seconds_bucket{le="+Inf",trigger="edr",status="202"} 2
"#;
        assert_eq!(
            accept_buckets(metrics),
            [(0.001, 5.0), (0.005, 11.0), (f64::INFINITY, 12.0)]
        );
    }
}
