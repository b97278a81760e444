//! Deliveries the server must refuse (or ignore), each with its status and reason.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{BACKENDS, BEARER_TOKEN, Backend, SVIX_SECRET, Server, answer, sign};

fn echo_playbook(name: &str, trigger: &str) -> (String, String) {
    (
        format!("{name}.yaml"),
        format!(
            r#"
name: {name}
trigger: {trigger}
steps:
  - id: echo
    uses: core/echo
    timeout: 2s
    with: {{ seen: "{{{{ trigger.ip }}}}" }}
"#
        ),
    )
}

fn playbooks() -> Vec<(String, String)> {
    vec![
        echo_playbook(
            "signed",
            "{ webhook: signed, auth: siem, filter: \"trigger.ip is ip_address\" }",
        ),
        echo_playbook("svix", "{ webhook: svix, auth: svix }"),
        echo_playbook("bearer", "{ webhook: bearer, auth: token }"),
        echo_playbook("public", "{ webhook: open, public: true }"),
    ]
}

async fn start(backend: Backend) -> Server {
    let playbooks = playbooks();
    let borrowed: Vec<(&str, String)> = playbooks
        .iter()
        .map(|(name, yaml)| (name.as_str(), yaml.clone()))
        .collect();
    Server::start(backend, &borrowed).await
}

/// The Standard Webhooks headers for `body`, signed at `timestamp`.
fn standard_webhooks(id: &str, timestamp: u64, body: &str) -> [(String, String); 3] {
    let key = STANDARD
        .decode(SVIX_SECRET.trim_start_matches("whsec_"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    [
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), format!("v1,{signature}")),
    ]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_with_their_status_and_a_reason() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let url = |trigger: &str| format!("{}/hooks/{trigger}", server.base);
        let body = r#"{"ip": "203.0.113.7"}"#;
        let post = |trigger: &str| {
            server
                .client
                .post(url(trigger))
                .header("content-type", "application/json")
        };
        let check = |(status, answer): (u16, serde_json::Value), expected: u16, reason: &str| {
            assert_eq!(status, expected, "{backend:?}: {answer}");
            let text = answer["error"].as_str().unwrap_or_default();
            assert!(
                text.contains(reason),
                "{backend:?}: `{text}` should mention `{reason}`"
            );
        };

        let sent = |request: reqwest::RequestBuilder| async move {
            answer(request.send().await.expect("answer")).await
        };
        check(
            sent(post("nope").body(body)).await,
            404,
            "no playbook listens",
        );
        check(
            sent(post("signed").body(body)).await,
            401,
            "x-hub-signature-256",
        );
        let forged = post("signed")
            .header(
                "x-hub-signature-256",
                sign("not-the-secret", body.as_bytes()),
            )
            .body(body);
        check(sent(forged).await, 401, "do not match");
        // The signature covers the raw bytes: a re-serialised body no longer matches.
        let tampered = post("signed")
            .header(
                "x-hub-signature-256",
                sign(crate::SIEM_SECRET, body.as_bytes()),
            )
            .body(r#"{"ip":"203.0.113.7"}"#);
        check(sent(tampered).await, 401, "do not match");
        let (status, answer) = server
            .client
            .post(url("signed"))
            .header("content-type", "text/plain")
            .header(
                "x-hub-signature-256",
                sign(crate::SIEM_SECRET, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .map(|r| (r.status().as_u16(), r))
            .expect("answer");
        check((status, crate::answer(answer).await.1), 415, "text/plain");
        let malformed = r#"{"ip": "203.0.113.7""#;
        let (status, answer) = server.post_signed("signed", malformed, &[]).await;
        check((status, answer), 400, "EOF while parsing");
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let (status, answer) = server.post_signed("signed", &deep, &[]).await;
        check((status, answer), 400, "deeper");
        let big = format!(
            r#"{{"ip": "203.0.113.7", "pad": "{}"}}"#,
            "x".repeat(70_000)
        );
        let (status, answer) = server.post_signed("signed", &big, &[]).await;
        check((status, answer), 413, "larger than 65536");
        // The unread rest of the body ends the connection, and the answer says so: a client that
        // sent its next request down it would see it cut off.
        let refused = post("open").body(big.clone()).send().await.expect("answer");
        assert_eq!(refused.status(), 413, "{backend:?}");
        assert_eq!(
            refused.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "{backend:?}"
        );
        // Chunked, with no length announced: cut off while streaming.
        let (status, reason) = chunked_upload(&server.base, "open", 40, 4096).await;
        assert_eq!(status, 413, "{backend:?}: {reason}");
        assert!(
            reason.contains("larger than 65536"),
            "{backend:?}: {reason}"
        );
        let wrong_token = post("bearer").bearer_auth("guess").body(body);
        check(sent(wrong_token).await, 401, "do not match");

        // A Standard Webhooks delivery from ten minutes ago is a replay.
        let mut stale = post("svix").body(body);
        for (name, value) in standard_webhooks("msg_1", now() - 600, body) {
            stale = stale.header(name, value);
        }
        check(sent(stale).await, 401, "window");
        assert_eq!(
            server.store.queue_depth().await.expect("depth"),
            0,
            "{backend:?}: no refused delivery queued anything"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scheme_accepts_what_it_should_and_filtered_events_are_ignored() {
    for backend in BACKENDS {
        let server = start(backend).await;
        let url = |trigger: &str| format!("{}/hooks/{trigger}", server.base);
        let body = r#"{"ip": "203.0.113.7"}"#;
        let mut svix = server
            .client
            .post(url("svix"))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in standard_webhooks("msg_2", now(), body) {
            svix = svix.header(name, value);
        }
        let bearer = server
            .client
            .post(url("bearer"))
            .header("content-type", "application/json")
            .bearer_auth(BEARER_TOKEN)
            .body(body);
        let open = server
            .client
            .post(url("open"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body);
        let mut runs = Vec::new();
        for request in [svix, bearer, open] {
            let (status, answer) = answer(request.send().await.expect("answer")).await;
            assert_eq!(status, 202, "{backend:?}: {answer}");
            runs.push(crate::run_id(&answer));
        }
        let (status, answer) = server.post_signed("signed", body, &[]).await;
        assert_eq!(status, 202, "{backend:?}: {answer}");
        runs.push(crate::run_id(&answer));
        for run in &runs {
            let state = server.finished(run, Duration::from_secs(10)).await;
            crate::assert_succeeded(&state);
            assert_eq!(
                state.step("echo").and_then(|step| step.output.clone()),
                Some(serde_json::json!({"seen": "203.0.113.7"})),
                "{backend:?}"
            );
        }

        // The filter wants an IP address: this event is acknowledged and ignored.
        let (status, answer) = server
            .post_signed("signed", r#"{"ip": "not an address"}"#, &[])
            .await;
        assert_eq!(status, 200, "{backend:?}: {answer}");
        assert_eq!(answer["status"], "ignored");
        assert_eq!(answer["ignored"][0], "signed");
        assert_eq!(answer["runs"].as_array().map(Vec::len), Some(0));
        let recorded = server.store.ignored(1).await.expect("ignored");
        assert_eq!(recorded[0].trigger, "signed", "{backend:?}");
        assert_eq!(recorded[0].playbooks, ["signed"], "{backend:?}");
        server.stop().await;
    }
}

/// Sends `chunks` chunks of `size` spaces with `Transfer-Encoding: chunked` over a raw connection
/// (the server may answer and close before the upload ends), and returns the status and body.
async fn chunked_upload(base: &str, trigger: &str, chunks: usize, size: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST /hooks/{trigger} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = format!("{size:x}\r\n{}\r\n", " ".repeat(size));
    for _ in 0..chunks {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A captured signed delivery, resent with other unsigned headers, is the same delivery: the
/// delivery id comes from what the signature covers (Standard Webhooks' `webhook-id`, or the
/// HMAC-signed body), never from an unsigned `Idempotency-Key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delivery_replayed_with_new_unsigned_ids_starts_one_run() {
    let server = start(Backend::Sqlite).await;
    let body = r#"{"ip": "203.0.113.8"}"#;
    let signed = standard_webhooks("msg_replayed", now(), body);
    let mut runs = std::collections::BTreeSet::new();
    let mut accepted = 0;
    for attempt in 0..20 {
        let mut request = server
            .client
            .post(format!("{}/hooks/svix", server.base))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("replay-{attempt}"))
            .body(body);
        for (name, value) in &signed {
            request = request.header(name, value);
        }
        let (status, answer) = answer(request.send().await.expect("answer")).await;
        accepted += usize::from(status == 202);
        runs.insert(crate::run_id(&answer));
    }
    assert_eq!(
        (accepted, runs.len()),
        (1, 1),
        "Standard Webhooks: {runs:?}"
    );

    runs.clear();
    accepted = 0;
    for attempt in 0..20 {
        let key = format!("replay-{attempt}");
        let unsigned: &[(&str, &str)] = match attempt % 3 {
            0 => &[("idempotency-key", &key)],
            1 => &[("x-github-delivery", &key)],
            _ => &[],
        };
        let (status, answer) = server.post_signed("signed", body, unsigned).await;
        accepted += usize::from(status == 202);
        runs.insert(crate::run_id(&answer));
    }
    assert_eq!((accepted, runs.len()), (1, 1), "HMAC: {runs:?}");

    // Bearer credentials sign nothing: there the sender's own delivery id is all there is.
    let mut bearer_runs = std::collections::BTreeSet::new();
    for key in ["first", "second", "second"] {
        let (status, answer) = answer(
            server
                .client
                .post(format!("{}/hooks/bearer", server.base))
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .bearer_auth(BEARER_TOKEN)
                .body(body)
                .send()
                .await
                .expect("answer"),
        )
        .await;
        assert!(status == 202 || status == 200, "{answer}");
        bearer_runs.insert(crate::run_id(&answer));
    }
    assert_eq!(bearer_runs.len(), 2, "{bearer_runs:?}");
    server.stop().await;
}

/// Clients that open connections and send nothing, trickle their headers, or stop sending a
/// body, are cut off: none holds a socket past the configured timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let playbooks = playbooks();
    let borrowed: Vec<(&str, String)> = playbooks
        .iter()
        .map(|(name, yaml)| (name.as_str(), yaml.clone()))
        .collect();
    let server = Server::start_with_options(
        Backend::Sqlite,
        &borrowed,
        1,
        &[],
        "http: { header_read_timeout: 1s, body_read_timeout: 1s }",
    )
    .await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for n in 0..100 {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        if n % 2 == 0 {
            // Headers that never end.
            stream
                .write_all(b"POST /hooks/open HTTP/1.1\r\nhost: riposte\r\nx-slow: ")
                .await
                .expect("write");
        }
        idle.push(stream);
    }
    let started = tokio::time::Instant::now();
    for (n, stream) in idle.iter_mut().enumerate() {
        let mut buffer = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("connection {n} is still open after 10 s"));
        // Closed (0 bytes), reset, or a 408 before closing: all end the connection.
        if let Ok(read) = closed
            && read > 0
        {
            let text = String::from_utf8_lossy(&buffer[..read]);
            assert!(text.contains("408"), "connection {n}: {text}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A body that stops half-way is answered 408.
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /hooks/open HTTP/1.1\r\nhost: riposte\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ip\": ",
        )
        .await
        .expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 1s"), "{text}");
    // The server still answers everyone else.
    let (status, answer) = answer(
        server
            .client
            .post(format!("{}/hooks/open", server.base))
            .header("content-type", "application/json")
            .body(r#"{"ip": "203.0.113.9"}"#)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    server.stop().await;
}

/// A burst of concurrent deliveries leaves no threads behind (each store operation once took a
/// thread of tokio's blocking pool: a burst of 2,000 left ~200 idle threads, and their memory,
/// for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_deliveries_leaves_no_threads_behind() {
    let server = start(Backend::Sqlite).await;
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| tasks.count())
            .unwrap_or(0)
    };
    let before = threads();
    let sent = futures::future::join_all((0..400).map(|n| {
        server
            .client
            .post(format!("{}/hooks/open", server.base))
            .header("content-type", "application/json")
            .body(format!(r#"{{"ip": "198.51.100.{}", "n": {n}}}"#, n % 250))
            .send()
    }))
    .await;
    let accepted = sent
        .into_iter()
        .filter(|answer| answer.as_ref().is_ok_and(|a| a.status() == 202))
        .count();
    assert_eq!(accepted, 400);
    let after = threads();
    assert!(
        after <= before + 8,
        "{before} threads before the burst, {after} after"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_with_only_a_schedule_takes_no_webhook() {
    const NIGHTLY: &str = r#"
name: nightly
trigger:
  webhook: nightly
  schedule: { cron: "30 2 * * *", timezone: Europe/Paris }
steps:
  - { id: sweep, uses: core/echo, timeout: 2s, with: { tick: "{{ trigger.schedule.tick }}" } }
"#;
    let server = Server::in_process(Backend::Sqlite, &[("nightly.yaml", NIGHTLY.into())]).await;
    let (status, answer) = server
        .send(
            "POST",
            "/hooks/nightly",
            &[("content-type", "application/json")],
            Some(r#"{"schedule": {"tick": "forged"}}"#),
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|error| error.contains("accepts nothing")),
        "{answer}"
    );
}
