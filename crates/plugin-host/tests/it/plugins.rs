//! Well-behaved plugins: loading, the contract, secrets, the key-value store, errors, egress.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::{get, post};
use playbook::ErrorKind;
use serde_json::json;

use crate::{call, granted, host_with, invoke, serve, wasm};

#[tokio::test]
async fn plugins_describe_themselves() {
    let host = host_with(&["testbed", "http"], false).await;
    let names: Vec<&str> = host.manifests().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["http", "testbed"]);
    let http = host.manifest("http").expect("http is loaded");
    assert_eq!(http.abi_version, plugin_host::ABI_VERSION);
    let request = &http.actions[0];
    assert_eq!(request.name, "request");
    assert!(!request.idempotent);
    assert_eq!(request.input_schema["required"], json!(["url"]));
    let testbed = host.manifest("testbed").expect("testbed is loaded");
    assert!(
        testbed
            .actions
            .iter()
            .any(|a| a.name == "block" && a.destructive)
    );
}

#[tokio::test]
async fn a_plugin_gets_its_input_and_context_in_a_fresh_instance() {
    let host = host_with(&["testbed"], false).await;
    let mut echo = call("testbed", "echo", json!({"ip": "203.0.113.7", "n": 3}));
    echo.attempt = 2;
    let output = invoke(&host, echo).await.expect("echo");
    assert_eq!(output["input"], json!({"ip": "203.0.113.7", "n": 3}));
    assert_eq!(output["attempt"], 2);
    assert_eq!(output["idempotency_key"], "run-1:step");
}

#[tokio::test]
async fn unknown_plugins_actions_and_pinned_versions_are_clear_errors() {
    let host = host_with(&["testbed"], false).await;
    let missing = invoke(&host, call("nope", "x", json!({})))
        .await
        .expect_err("not installed");
    assert!(missing.message.contains("plugin `nope` is not installed"));
    let action = invoke(&host, call("testbed", "nope", json!({})))
        .await
        .expect_err("no such action");
    assert!(action.message.contains("has no action `nope`"), "{action}");
    let mut pinned = call("testbed", "echo", json!({}));
    pinned.uses.version = Some("9.9".into());
    let version = invoke(&host, pinned).await.expect_err("wrong version");
    assert!(version.message.contains("pins `testbed@9.9`"), "{version}");
}

#[tokio::test]
async fn typed_plugin_errors_keep_their_kind() {
    let host = host_with(&["testbed"], false).await;
    let limited = invoke(
        &host,
        call("testbed", "fail", json!({"kind": "rate_limited"})),
    )
    .await
    .expect_err("fails");
    assert_eq!(limited.kind, ErrorKind::RateLimited);
    assert_eq!(limited.retry_after_ms, Some(1500));
    for (kind, expected) in [
        ("unauthorized", ErrorKind::Unauthorized),
        ("not_found", ErrorKind::NotFound),
        ("upstream", ErrorKind::Upstream),
        ("invalid_input", ErrorKind::InvalidInput),
    ] {
        let error = invoke(&host, call("testbed", "fail", json!({ "kind": kind })))
            .await
            .expect_err("fails");
        assert_eq!(error.kind, expected);
    }
}

#[tokio::test]
async fn the_key_value_store_persists_across_invocations() {
    let host = host_with(&["testbed"], false).await;
    let set = invoke(
        &host,
        call(
            "testbed",
            "kv",
            json!({"key": "ip:1.2.3.4", "value": "bad"}),
        ),
    )
    .await
    .expect("set");
    assert_eq!(set["value"], "bad");
    let read = invoke(&host, call("testbed", "kv", json!({"key": "ip:1.2.3.4"})))
        .await
        .expect("get");
    assert_eq!(read["value"], "bad");
    let other = invoke(&host, call("testbed", "kv", json!({"key": "ip:5.6.7.8"})))
        .await
        .expect("get");
    assert_eq!(other["value"], serde_json::Value::Null);
}

#[tokio::test]
async fn header_secrets_are_attached_by_the_host_and_hidden_from_the_plugin() {
    let headers = Arc::new(Mutex::new(None));
    let recorded = headers.clone();
    let router = axum::Router::new().route(
        "/whoami",
        get(move |request_headers: http::HeaderMap| {
            let recorded = recorded.clone();
            async move {
                *recorded.lock().expect("lock") = request_headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap_or_default().to_owned());
                Json(json!({"you": "ok"}))
            }
        }),
    );
    let (addr, _seen) = serve(router).await;
    let host = host_with(&["testbed"], true).await;
    let secrets = [
        ("api_token", "tok-4e1d-canary"),
        ("readable_token", "read-me-1234"),
    ];
    let pattern = format!("127.0.0.1:{}", addr.port());

    let fetch = |attach: Option<&str>| {
        let mut input = json!({ "url": format!("http://{addr}/whoami") });
        if let Some(name) = attach {
            input["attach"] = json!(name);
        }
        granted(call("testbed", "fetch", input), &[&pattern], &secrets)
    };
    let output = invoke(&host, fetch(Some("api_token")))
        .await
        .expect("fetch");
    assert_eq!(output["status"], 200);
    assert_eq!(
        headers.lock().expect("lock").as_deref(),
        Some("Bearer tok-4e1d-canary")
    );
    // Over plain HTTP to an address the server did not allow, the secret is refused, not sent
    // (no connection is attempted: the refusal comes first).
    let public = granted(
        call(
            "testbed",
            "fetch",
            json!({"url": "http://93.184.215.14/", "attach": "api_token"}),
        ),
        &["93.184.215.14"],
        &secrets,
    );
    let refused = invoke(&host, public).await.expect_err("secrets need HTTPS");
    assert_eq!(refused.kind, playbook::ErrorKind::InvalidInput);
    assert!(
        refused.message.contains("only sent over HTTPS"),
        "{refused}"
    );
    // A request that does not ask for the secret goes without it.
    invoke(&host, fetch(None)).await.expect("fetch");
    assert_eq!(headers.lock().expect("lock").as_deref(), None);
    // A readable secret is never attached by the host.
    invoke(&host, fetch(Some("readable_token")))
        .await
        .expect("fetch");
    assert_eq!(headers.lock().expect("lock").as_deref(), None);

    let hidden = invoke(
        &host,
        granted(
            call("testbed", "secret", json!({"name": "api_token"})),
            &[],
            &secrets,
        ),
    )
    .await
    .expect("secret");
    assert_eq!(
        hidden["readable"], false,
        "a header-bound secret must not be readable"
    );
    let readable = invoke(
        &host,
        granted(
            call("testbed", "secret", json!({"name": "readable_token"})),
            &[],
            &secrets,
        ),
    )
    .await
    .expect("secret");
    assert_eq!(readable, json!({"readable": true, "length": 12}));
    let ungranted = invoke(
        &host,
        call("testbed", "secret", json!({"name": "readable_token"})),
    )
    .await
    .expect("secret");
    assert_eq!(
        ungranted["readable"], false,
        "a secret the playbook did not grant is invisible"
    );
}

#[tokio::test]
async fn the_http_plugin_calls_a_granted_api() {
    let router = axum::Router::new().route(
        "/api/tickets",
        post(|Json(body): Json<serde_json::Value>| async move {
            (
                http::StatusCode::CREATED,
                Json(json!({"id": 42, "title": body["title"]})),
            )
        }),
    );
    let (addr, seen) = serve(router).await;
    let host = host_with(&["http"], true).await;
    let request = call(
        "http",
        "request",
        json!({
            "method": "POST",
            "url": format!("http://{addr}/api/tickets"),
            "json": {"title": "Block 203.0.113.7"},
            "headers": {"x-request-id": "run-1", "authorization": "forged-by-the-playbook"}
        }),
    );
    let output = invoke(
        &host,
        granted(
            request,
            &[&format!("127.0.0.1:{}", addr.port())],
            &[("http_authorization", "Token abc-123")],
        ),
    )
    .await
    .expect("request");
    assert_eq!(output["status"], 201);
    assert_eq!(
        output["body"],
        json!({"id": 42, "title": "Block 203.0.113.7"})
    );
    let requests = seen.all();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].headers.get_all("authorization").iter().count(),
        1,
        "the host's secret replaces a header of the same name"
    );
    assert!(
        requests[0].headers.get("riposte-secret").is_none(),
        "the marker never leaves the host"
    );
    assert_eq!(
        requests[0]
            .headers
            .get("x-request-id")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("run-1")
    );
    assert_eq!(
        requests[0]
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("Token abc-123")
    );

    let missing = call(
        "http",
        "request",
        json!({ "url": format!("http://{addr}/nope") }),
    );
    let error = invoke(
        &host,
        granted(missing, &[&format!("127.0.0.1:{}", addr.port())], &[]),
    )
    .await
    .expect_err("404");
    assert_eq!(error.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn compiled_plugins_are_cached_and_reused() {
    let cache = tempfile::tempdir().expect("cache");
    let mut first =
        plugin_host::PluginHost::new(plugin_host::HostConfig::new(cache.path())).expect("host");
    first.load(&wasm("testbed")).await.expect("compiles");
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(cached.len(), 1, "one compiled plugin in the cache");
    let modified = cached[0]
        .metadata()
        .and_then(|m| m.modified())
        .expect("mtime");

    let mut again =
        plugin_host::PluginHost::new(plugin_host::HostConfig::new(cache.path())).expect("host");
    let manifest = again
        .load(&wasm("testbed"))
        .await
        .expect("loads from the cache");
    assert_eq!(manifest.name, "testbed");
    let after = cached[0]
        .metadata()
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(modified, after, "the cached file is reused, not rewritten");
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("dir");
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm not really").expect("write");
    let cache = tempfile::tempdir().expect("cache");
    let mut host =
        plugin_host::PluginHost::new(plugin_host::HostConfig::new(cache.path())).expect("host");
    let error = host.load(&bogus).await.expect_err("refused");
    assert!(
        error.to_string().contains("is not a usable plugin"),
        "{error}"
    );
}

/// docs/plugins.md carries the reference of every shipped plugin, generated from what the
/// plugins declare: it cannot drift. `UPDATE_GOLDEN=1` rewrites it after a change.
#[tokio::test]
async fn the_plugin_reference_in_the_docs_is_what_the_plugins_declare() {
    let host = host_with(&["enrich-ioc", "block-ip", "notify-slack", "http"], false).await;
    let reference: String = host
        .manifests()
        .into_iter()
        .map(plugin_host::reference::markdown)
        .collect::<Vec<_>>()
        .join("\n");
    let path = test_support::workspace_root().join("docs/plugins.md");
    let docs = std::fs::read_to_string(&path).expect("docs/plugins.md");
    let (start, end) = (
        "<!-- plugin-reference:start -->\n",
        "<!-- plugin-reference:end -->",
    );
    let from = docs.find(start).expect("the start marker") + start.len();
    let to = docs.find(end).expect("the end marker");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let updated = format!("{}{reference}\n{}", &docs[..from], &docs[to..]);
        std::fs::write(&path, updated).expect("write docs/plugins.md");
        return;
    }
    assert_eq!(
        docs[from..to].trim_end(),
        reference.trim_end(),
        "docs/plugins.md's plugin reference is out of date: rerun with UPDATE_GOLDEN=1"
    );
}
