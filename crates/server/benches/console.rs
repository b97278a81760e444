//! What a console page costs the server with 10,000 cases in the store: each page rendered by
//! the router in process (session lookup, store reads, HTML), from the request to the last byte
//! of the body. The store is filled through the real path: 10,000 alerts posted to two
//! playbooks with a `case:` block, run by the server's own workers: 9,000 end in containment,
//! 1,000 wait for approval (the inbox). SQLite, then Redis (a `redis-server` of its own).
//!
//! `cargo bench -p server --bench console`; `BENCH_CASES=n` for another size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode, header};
use server::{CancellationToken, Config, Parts};
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "rpt_console-bench-admin-token-6f0e";
const HOST: &str = "riposte.bench";

const CONTAINED: &str = r#"
name: bench-contained
trigger: { webhook: contained, public: true }
case:
  key: "{{ trigger.ip }}"
  title: "{{ trigger.rule }} from {{ trigger.ip }}"
  severity: "{{ trigger.severity }}"
steps:
  - { id: triage, uses: core/echo, phase: detection_and_analysis, with: { ip: "{{ trigger.ip }}", user: "{{ trigger.user }}" } }
  - { id: contain, uses: core/echo, needs: [triage], phase: containment, with: { blocked: "{{ trigger.ip }}" } }
"#;

const WAITING: &str = r#"
name: bench-waiting
trigger: { webhook: waiting, public: true }
case:
  key: "{{ trigger.ip }}"
  title: "{{ trigger.rule }} from {{ trigger.ip }}"
  severity: "{{ trigger.severity }}"
steps:
  - { id: triage, uses: core/echo, phase: detection_and_analysis, with: { ip: "{{ trigger.ip }}" } }
  - id: contain
    uses: core/echo
    needs: [triage]
    phase: containment
    approval: { approvers: [soc], message: "Block {{ trigger.ip }}?" }
    with: { blocked: "{{ trigger.ip }}" }
"#;

/// A server in process over a store holding `cases` cases, signed in as an admin.
struct Filled {
    router: axum::Router,
    cookie: String,
    /// A case and a run in the middle of the store.
    case: u64,
    run: String,
    shutdown: CancellationToken,
    _redis: Option<test_support::RedisServer>,
    _dir: tempfile::TempDir,
}

async fn request(router: &axum::Router, request: Request<Body>) -> (StatusCode, String, usize) {
    let response = router.clone().oneshot(request).await.expect("a response");
    let status = response.status();
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (status, cookie, body.len())
}

async fn fill(redis: bool, cases: usize) -> Filled {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("playbooks")).expect("playbooks");
    std::fs::write(dir.path().join("playbooks/contained.yaml"), CONTAINED).expect("playbook");
    std::fs::write(dir.path().join("playbooks/waiting.yaml"), WAITING).expect("playbook");
    let mut env = BTreeMap::from([(
        "RIPOSTE_API_TOKEN_BENCH".to_owned(),
        format!("admin:{}", server::tokens::token_hash(ADMIN_TOKEN)),
    )]);
    let redis_server = redis.then(test_support::RedisServer::start);
    let redis_section = match &redis_server {
        Some(server) => {
            env.insert("BENCH_REDIS_URL".into(), server.url());
            "redis: { url_env: BENCH_REDIS_URL, prefix: bench }"
        }
        None => "",
    };
    let config = format!(
        "playbooks: playbooks\ndata_dir: data\n{redis_section}\nworkers: {{ concurrency: 16, poll_interval: 20ms }}\n"
    );
    let file = dir.path().join("riposte.yaml");
    std::fs::write(&file, config).expect("config");
    let config = Config::from_parts(Some(&file), &env).expect("configuration");
    let parts = Parts::open(config).await.expect("server parts");
    let store = Arc::clone(&parts.store);
    let router = parts.router().expect("router");
    let shutdown = CancellationToken::new();
    tokio::spawn(server::work(parts, None, shutdown.clone()));

    let started = Instant::now();
    let mut run_ids = Vec::with_capacity(cases);
    for n in 0..cases {
        let trigger = if n % 10 == 0 { "waiting" } else { "contained" };
        let rule = ["ssh-brute-force", "port-scan", "impossible-travel"][n % 3];
        let severity = ["low", "medium", "high", "critical"][n % 4];
        let alert = serde_json::json!({
            "rule": rule,
            "ip": format!("198.18.{}.{}", n / 256, n % 256),
            "user": format!("user{}", n % 500),
            "severity": severity,
        });
        let post = Request::post(format!("/hooks/{trigger}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(alert.to_string()))
            .expect("request");
        let response = router.clone().oneshot(post).await.expect("a response");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("json");
        run_ids.push(
            answer["runs"][0]["run_id"]
                .as_str()
                .expect("run")
                .to_owned(),
        );
    }
    let waiting = cases.div_ceil(10) as u64;
    let contained = cases as u64 - waiting;
    loop {
        let counts = store.case_counts().await.expect("counts");
        let in_phase = |phase| counts.get(&phase).copied().unwrap_or(0);
        if in_phase(cases::Phase::Containment) == contained
            && in_phase(cases::Phase::DetectionAndAnalysis) == waiting
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the workers did not get through {cases} alerts: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{} store: {cases} cases ({contained} contained, {waiting} waiting for approval) in {:.1?}",
        if redis { "Redis" } else { "SQLite" },
        started.elapsed()
    );

    let sign_in = Request::post("/sign-in")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={ADMIN_TOKEN}&next=/")))
        .expect("request");
    let (status, set_cookie, _) = request(&router, sign_in).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "signed in");
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("a session cookie")
        .to_owned();
    Filled {
        router,
        cookie,
        case: cases as u64 / 2 + 1,
        run: run_ids[cases / 2].clone(),
        shutdown,
        _redis: redis_server,
        _dir: dir,
    }
}

fn pages(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cases: usize = std::env::var("BENCH_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000);
    for (backend, redis) in [("sqlite", false), ("redis", true)] {
        let filled = runtime.block_on(fill(redis, cases));
        let mut group = c.benchmark_group(format!("console/{backend}/{cases}-cases"));
        group
            .sample_size(30)
            .measurement_time(Duration::from_secs(4))
            .warm_up_time(Duration::from_secs(1));
        let paths = [
            ("cases", "/".to_owned()),
            (
                "cases-filtered",
                "/?phase=containment&severity=high".to_owned(),
            ),
            ("case", format!("/cases/{}", filled.case)),
            ("case-report", format!("/cases/{}/report.md", filled.case)),
            ("runs", "/runs".to_owned()),
            ("run", format!("/runs/{}", filled.run)),
            ("approvals", "/approvals".to_owned()),
            ("playbooks", "/playbooks".to_owned()),
            ("audit", "/audit".to_owned()),
        ];
        for (name, path) in paths {
            let get = || {
                Request::get(path.as_str())
                    .header(header::COOKIE, filled.cookie.as_str())
                    .body(Body::empty())
                    .expect("request")
            };
            let (status, _, bytes) = runtime.block_on(request(&filled.router, get()));
            assert_eq!(status, StatusCode::OK, "{path}");
            eprintln!("{backend} {path}: {bytes} bytes");
            group.bench_function(name, |b| {
                b.iter(|| runtime.block_on(request(&filled.router, get())))
            });
        }
        group.finish();
        filled.shutdown.cancel();
    }
}

criterion_group!(benches, pages);
criterion_main!(benches);
