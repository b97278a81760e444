//! Hostile plugins fail their own step, within their limits, and the host stays healthy.

use std::time::{Duration, Instant};

use playbook::ErrorKind;
use serde_json::json;

use crate::{call, granted, host_config, host_from, host_with, invoke, serve};

/// After each hostile call, a well-behaved call on the same host must still work.
async fn still_healthy(host: &plugin_host::PluginHost) {
    let output = invoke(host, call("testbed", "echo", json!({"ok": 1})))
        .await
        .expect("echo works");
    assert_eq!(output["input"], json!({"ok": 1}));
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_its_deadline() {
    let host = host_with(&["testbed"], false).await;
    let mut spin = call("testbed", "spin", json!({}));
    spin.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = invoke(&host, spin)
        .await
        .expect_err("a spinning plugin must not return");
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(error.message.contains("deadline"), "{error}");
    // Bounded: well under the outer safety margin, not minutes.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn a_spinning_plugin_does_not_starve_other_work() {
    let host = host_with(&["testbed"], false).await;
    let mut spin = call("testbed", "spin", json!({}));
    spin.timeout = Duration::from_secs(2);
    // On a current-thread runtime, the echo can only finish while the spin runs if the spin yields.
    let (spun, echoed) = tokio::join!(invoke(&host, spin), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let output = invoke(&host, call("testbed", "echo", json!({}))).await;
        (output, started.elapsed())
    });
    assert_eq!(spun.expect_err("spins").kind, ErrorKind::Timeout);
    let (output, took) = echoed;
    assert!(output.is_ok());
    assert!(
        took < Duration::from_millis(1500),
        "the echo waited {took:?} for the spinning plugin"
    );
}

#[tokio::test]
async fn an_allocation_bomb_hits_the_memory_cap() {
    let host = host_with(&["testbed"], false).await;
    let error = invoke(&host, call("testbed", "allocate", json!({})))
        .await
        .expect_err("cannot allocate forever");
    assert_eq!(error.kind, ErrorKind::Internal, "{error}");
    assert!(error.message.contains("memory limit of 32 MiB"), "{error}");
    still_healthy(&host).await;
}

#[tokio::test]
async fn a_trap_fails_the_step_with_a_clear_error() {
    let host = host_with(&["testbed"], false).await;
    let error = invoke(&host, call("testbed", "trap", json!({})))
        .await
        .expect_err("traps");
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(error.message.starts_with("the plugin crashed"), "{error}");
    still_healthy(&host).await;
}

#[tokio::test]
async fn a_huge_output_is_refused() {
    let host = host_with(&["testbed"], false).await;
    let error = invoke(
        &host,
        call("testbed", "huge-output", json!({"megabytes": 4})),
    )
    .await
    .expect_err("too big");
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error
            .message
            .contains("passed more data to the host than it allows"),
        "{error}"
    );
    still_healthy(&host).await;
}

#[tokio::test]
async fn requests_to_hosts_the_playbook_did_not_grant_are_refused() {
    let host = host_with(&["testbed"], true).await;
    let fetch = call("testbed", "fetch", json!({"url": "http://example.com/"}));
    let error = invoke(&host, granted(fetch, &["api.other.test"], &[]))
        .await
        .expect_err("not granted");
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
    assert!(
        error.message.contains("does not grant this host"),
        "{error}"
    );
}

#[tokio::test]
async fn the_metadata_address_is_refused_even_when_granted() {
    let host = host_with(&["testbed"], true).await;
    let fetch = call(
        "testbed",
        "fetch",
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    );
    let error = invoke(&host, granted(fetch, &["169.254.169.254"], &[]))
        .await
        .expect_err("metadata");
    assert!(
        error
            .message
            .contains("private, loopback, link-local or a metadata address"),
        "{error}"
    );
}

#[tokio::test]
async fn every_special_purpose_range_is_refused_even_when_granted() {
    let (addr, seen) =
        crate::serve(axum::Router::new().route("/", axum::routing::get(|| async { "hi" }))).await;
    let port = addr.port();
    // Loopback is allowed here, so only the ranges themselves can refuse these.
    let host = host_with(&["testbed"], true).await;
    // IPv6 forms that carry these (IPv4-mapped, NAT64) are covered by `playbook::addresses`.
    for address in ["0.0.0.1", "0.0.0.0", "192.0.2.1", "198.18.0.1"] {
        let fetch = call(
            "testbed",
            "fetch",
            json!({ "url": format!("http://{address}:{port}/") }),
        );
        let error = invoke(&host, granted(fetch, &[&format!("{address}:{port}")], &[]))
            .await
            .expect_err(address);
        assert!(
            error.message.contains("the host refused the request"),
            "{address}: {error}"
        );
    }
    assert!(
        seen.all().is_empty(),
        "a refused request reached the server"
    );
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_unless_loopback_is_allowed() {
    let (addr, seen) =
        crate::serve(axum::Router::new().route("/", axum::routing::get(|| async { "hi" }))).await;
    let url = format!("http://localhost:{}/", addr.port());
    let host_pattern = format!("localhost:{}", addr.port());

    let strict = host_with(&["testbed"], false).await;
    let fetch = granted(
        call("testbed", "fetch", json!({ "url": url })),
        &[&host_pattern],
        &[],
    );
    let error = invoke(&strict, fetch.clone())
        .await
        .expect_err("loopback is private");
    assert!(error.message.contains("metadata address"), "{error}");
    assert!(
        seen.all().is_empty(),
        "the refused request must never reach the server"
    );

    let allowing = host_with(&["testbed"], true).await;
    let output = invoke(&allowing, fetch)
        .await
        .expect("allowed by the loopback rule");
    assert_eq!(output["status"], 200);
}

#[tokio::test]
async fn destructive_actions_refuse_protected_and_overly_broad_targets() {
    let host = host_with(&["testbed"], false).await;
    for (target, refused) in [
        ("10.1.2.3", true),
        ("0.0.0.0/0", true),
        ("192.168.0.0/16", true),
        ("203.0.0.0/8", true),
        ("::1", true),
        ("::ffff:10.1.2.3", true),
        ("10[.]1[.]2[.]3", true),
        ("10.1.2.3:22", true),
        // An endpoint (where to connect), not a target: the egress policy governs it.
        ("http://10.1.2.3/admin", false),
        ("[::1]:8080", true),
        ("203.0.113.7", false),
        ("198.51.100.0/24", false),
    ] {
        let result = invoke(&host, call("testbed", "block", json!({ "target": target }))).await;
        match (refused, result) {
            (true, Err(error)) => {
                assert_eq!(error.kind, ErrorKind::InvalidInput);
                assert!(error.message.starts_with("refused:"), "{error}");
            }
            (false, Ok(output)) => assert_eq!(output["blocked"], target),
            (refused, result) => panic!("{target}: expected refused={refused}, got {result:?}"),
        }
    }
}

#[tokio::test]
async fn a_plugin_sees_no_environment_files_or_sockets() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    // Loopback is allowed for HTTP here, to show that raw sockets stay closed regardless.
    let host = host_with(&["testbed"], true).await;
    let output = invoke(
        &host,
        call(
            "testbed",
            "sandbox",
            json!({ "connect": address.to_string() }),
        ),
    )
    .await
    .expect("the probe runs");
    assert_eq!(
        output,
        json!({
            "env_vars": 0,
            "args": 0,
            "root_listable": false,
            "file_readable": false,
            "tcp_connected": false,
        })
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs_in_any_encoding() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let canary = "canary-5ec2e7-token";
    let encoded = [
        canary.to_owned(),
        "Y2FuYXJ5LTVlYzJlNy10b2tlbg==".to_owned(),
        canary
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    ];
    let host = host_with(&["testbed"], false).await;
    for form in &encoded {
        let log = call(
            "testbed",
            "log",
            json!({ "message": format!("key is {form}"), "value": form }),
        );
        invoke(&host, granted(log, &[], &[("readable_token", canary)]))
            .await
            .expect("logs");
    }
    let captured = buffer.text();
    assert!(captured.contains("key is [REDACTED]"), "{captured}");
    for form in &encoded {
        assert!(
            !captured.contains(form.as_str()),
            "`{form}` reached the logs:\n{captured}"
        );
    }
}

/// A plugin looping on a refused host, or logging in a loop, puts a bounded number of lines in
/// the host's log, and one line that counts the rest.
#[tokio::test]
async fn a_plugin_cannot_flood_the_log() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let host = host_with(&["testbed"], false).await;
    let fetch = call(
        "testbed",
        "fetch",
        json!({"url": "http://not-granted.example/", "times": 5_000}),
    );
    invoke(&host, fetch).await.expect_err("never granted");
    let logged = buffer.text();
    let refusals = logged.matches("Outbound request refused.").count();
    assert!(
        (1..=5).contains(&refusals),
        "{refusals} refusals logged:\n{logged}"
    );
    assert!(logged.contains("refusals_left_out=4995"), "{logged}");

    let log = call(
        "testbed",
        "log",
        json!({"message": "chatty", "value": "v", "times": 10_000}),
    );
    invoke(&host, log).await.expect("logs");
    let logged = buffer.text();
    let lines = logged.matches("chatty").count();
    assert_eq!(lines, 200, "the plugin's own lines are bounded");
    assert!(logged.contains("plugin_lines_left_out=9800"), "{logged}");
}

/// Log lines captured from a test's subscriber.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("UTF-8 logs")
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_hosts_instance_slots_wait_for_one() {
    // Two calls at once, and a pool of 16 instance slots more than that: of 24 calls that each
    // wait for a slow answer, some would find no slot to instantiate in, unless they wait.
    let mut config = host_config(true);
    config.max_concurrent_invocations = 2;
    let host = std::sync::Arc::new(host_from(config, &["testbed"]).await);
    let slow = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            "slow"
        }),
    );
    let (address, _) = serve(slow).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let host = std::sync::Arc::clone(&host);
        let fetch = granted(
            call(
                "testbed",
                "fetch",
                json!({ "url": format!("http://{address}/slow") }),
            ),
            &[&address.to_string()],
            &[],
        );
        calls.spawn(async move { invoke(&host, fetch).await });
    }
    while let Some(answer) = calls.join_next().await {
        let output = answer
            .expect("the call's task")
            .expect("every call finds a slot");
        assert_eq!(output["status"], 200, "{output}");
    }
}
