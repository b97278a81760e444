//! Shared limits per integration (`limits:` in the configuration): a concurrency limit every
//! worker respects, a circuit breaker that opens after failures and lets one probe through after
//! its cool-down, and a `429` that pauses every worker for its `Retry-After`. A held step is
//! parked (`step_deferred`), not failed, and holds no worker while it waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use runner::{RunEvent, RunStatus};
use test_support::serve;

use crate::{Backend, Server, run_id};

/// A loopback API: `/slow` answers after 300 ms and counts calls in flight; `/flaky` fails
/// with 500 until `healthy`; `/busy` answers `429 Retry-After: 1` once, then 200.
struct Upstream {
    port: u16,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

async fn upstream() -> Upstream {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let busy_once = Arc::new(AtomicBool::new(true));
    let (now, most, up, count, busy) = (
        in_flight.clone(),
        most_in_flight.clone(),
        healthy.clone(),
        calls.clone(),
        busy_once.clone(),
    );
    let router = axum::Router::new()
        .route(
            "/slow",
            axum::routing::post(move || {
                let (now, most) = (now.clone(), most.clone());
                async move {
                    let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(current, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    "{}"
                }
            }),
        )
        .route(
            "/flaky",
            axum::routing::post(move || {
                let (up, count) = (up.clone(), count.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    if up.load(Ordering::SeqCst) {
                        (axum::http::StatusCode::OK, "{}")
                    } else {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{}")
                    }
                }
            }),
        )
        .route(
            "/busy",
            axum::routing::post(move || {
                let busy = busy.clone();
                async move {
                    if busy.swap(false, Ordering::SeqCst) {
                        (
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "1")],
                            "{}",
                        )
                    } else {
                        (axum::http::StatusCode::OK, [("retry-after", "0")], "{}")
                    }
                }
            }),
        );
    let (address, _) = serve(router).await;
    Upstream {
        port: address.port(),
        in_flight,
        most_in_flight,
        healthy,
        calls,
    }
}

fn playbook(port: u16, path: &str) -> String {
    format!(
        r#"
name: limited
trigger: {{ webhook: siem, auth: siem }}
plugins:
  http: {{ hosts: ["127.0.0.1:{port}"] }}
steps:
  - id: call
    uses: http/request
    timeout: 3s
    with: {{ method: POST, url: "http://127.0.0.1:{port}/{path}", json: {{ n: "{{{{ trigger.n }}}}" }} }}
"#
    )
}

async fn alert(server: &Server, n: usize) -> String {
    let (status, answer) = server
        .post_signed("siem", &format!(r#"{{"n": {n}}}"#), &[])
        .await;
    assert_eq!(status, 202, "{answer}");
    run_id(&answer)
}

fn held(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            RunEvent::StepDeferred { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_holds_calls_beyond_it_and_every_run_succeeds() {
    let upstream = upstream().await;
    let server = Server::start_with_options(
        Backend::Redis,
        &[("limited.yaml", playbook(upstream.port, "slow"))],
        8,
        &[],
        "limits:\n  http: { concurrency: 1, rate: 20/s }\n",
    )
    .await;
    let mut runs = Vec::new();
    for n in 0..4 {
        runs.push(alert(&server, n).await);
    }
    let mut reasons = Vec::new();
    for run in &runs {
        let done = server.finished(run, Duration::from_secs(20)).await;
        assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
        reasons.extend(held(&server.events(run).await));
    }
    assert_eq!(
        upstream.most_in_flight.load(Ordering::SeqCst),
        1,
        "never two calls at once, though 8 workers were free"
    );
    assert_eq!(upstream.in_flight.load(Ordering::SeqCst), 0);
    assert!(
        reasons
            .iter()
            .any(|reason| reason == "the shared limit of `http`: 1 call(s) already in flight"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opens_after_failures_and_a_probe_closes_it() {
    let upstream = upstream().await;
    let server = Server::start_with_options(
        Backend::Sqlite,
        &[("limited.yaml", playbook(upstream.port, "flaky"))],
        8,
        &[],
        "limits:\n  http: { breaker: { failures: 2, cool_down: 1s } }\n",
    )
    .await;
    for n in 0..2 {
        let run = alert(&server, n).await;
        let done = server.finished(&run, Duration::from_secs(10)).await;
        assert_eq!(done.status, RunStatus::Failed);
    }
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2);
    // Open: the next call is held without reaching the upstream, which recovers meanwhile.
    let run = alert(&server, 2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while held(&server.events(&run).await).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2, "held, not called");
    let reasons = held(&server.events(&run).await);
    assert!(
        reasons[0].contains("circuit breaker is open after 2 failures"),
        "{reasons:?}"
    );
    upstream.healthy.store(true, Ordering::SeqCst);
    let done = server.finished(&run, Duration::from_secs(10)).await;
    assert_eq!(
        done.status,
        RunStatus::Succeeded,
        "the probe after the cool-down"
    );
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 3);
    let closed = alert(&server, 3).await;
    let done = server.finished(&closed, Duration::from_secs(10)).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert!(
        held(&server.events(&closed).await).is_empty(),
        "closed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_worker_for_its_retry_after() {
    let upstream = upstream().await;
    let server = Server::start_with_options(
        Backend::Redis,
        &[(
            "limited.yaml",
            playbook(upstream.port, "busy").replace(
                "    timeout: 3s\n",
                "    timeout: 3s\n    retry: { max_attempts: 2, backoff: 100ms, on: [rate_limited] }\n",
            ),
        )],
        8,
        &[],
        "limits:\n  http: { concurrency: 8 }\n",
    )
    .await;
    let first = alert(&server, 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server
        .events(&first)
        .await
        .iter()
        .any(|event| matches!(event, RunEvent::StepRetrying { .. }))
    {
        assert!(tokio::time::Instant::now() < deadline, "no 429 seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another run's call during the pause is held until the upstream's second is over.
    let second = alert(&server, 1).await;
    for run in [&first, &second] {
        let done = server.finished(run, Duration::from_secs(10)).await;
        assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
    }
    let reasons = held(&server.events(&second).await);
    assert_eq!(
        reasons,
        ["the shared limit of `http`: the upstream asked to slow down (429)"]
    );
}
