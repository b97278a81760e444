//! Connectors under the host's policy, against loopback APIs: a connector reaches only the hosts
//! it declares and reads only the secrets it is granted; inputs are checked before any request;
//! answers become error kinds the runner retries on; pages and tokens work as documented.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use playbook::ErrorKind;
use plugin_host::{Connectors, EgressPolicy};
use runner::{Grant, StepCall, StepExecutor as _};
use serde_json::{Value, json};

use crate::serve;

/// The connectors in `files` (name → YAML), loaded with `settings`, loopback allowed.
fn load(
    files: &[(&str, String)],
    settings: &[(&str, &str, Value)],
) -> (Connectors, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(format!("{name}.yaml")), text).expect("write");
    }
    let mut all: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (connector, key, value) in settings {
        all.entry((*connector).to_owned())
            .or_default()
            .insert((*key).to_owned(), value.clone());
    }
    let egress = EgressPolicy {
        allow_private: vec!["127.0.0.0/8".parse().expect("cidr")],
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        ..EgressPolicy::default()
    };
    let connectors = Connectors::load_dir(dir.path(), &all, egress).expect("connectors load");
    (connectors, dir)
}

fn call(uses: &str, input: Value, secrets: &[(&str, &str)]) -> StepCall {
    let (plugin, action) = uses.split_once('/').expect("connector/action");
    StepCall {
        run_id: "run-7".into(),
        step_id: "step".into(),
        uses: playbook::PluginRef {
            plugin: plugin.into(),
            action: action.into(),
            version: None,
        },
        input,
        attempt: 1,
        item: None,
        idempotency_key: "run-7:step".into(),
        timeout: Duration::from_secs(5),
        grant: Grant {
            hosts: Vec::new(),
            secrets: secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        },
    }
}

/// An API that echoes what it was sent, and counts.
fn echo(hits: Arc<AtomicUsize>) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: axum::http::Uri| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let token = headers
                .get("x-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            Json(json!({ "path": uri.path(), "query": uri.query(), "token": token }))
        }
    })
}

const FETCHER: &str = r#"connector: fetcher
base_url: https://api.example.com
settings:
  elsewhere: { default: null }
secrets:
  fetch_token: The API token.
auth: { type: header, header: X-Token, secret: fetch_token }
actions:
  get:
    input:
      type: object
      properties:
        url: { type: string }
      additionalProperties: false
    request:
      url: "{{ input.url }}"
  pages:
    request: { path: /first }
    paginate:
      items: "{{ [response.body.path] }}"
      next: "{{ response.body.path == '/first' and settings.elsewhere or none }}"
"#;

#[tokio::test]
async fn a_connector_reaches_only_the_hosts_it_declares() {
    let own_hits = Arc::new(AtomicUsize::new(0));
    let other_hits = Arc::new(AtomicUsize::new(0));
    let (own, _) = serve(echo(own_hits.clone())).await;
    let (other, _) = serve(echo(other_hits.clone())).await;
    let (connectors, _dir) = load(
        &[("fetcher", FETCHER.to_owned())],
        &[
            ("fetcher", "base_url", json!(format!("http://{own}"))),
            (
                "fetcher",
                "elsewhere",
                json!(format!("http://{other}/second")),
            ),
        ],
    );
    let secrets = [("fetch_token", "tok-1")];

    // Its own host: allowed, with its credential.
    let answer = connectors
        .execute(call(
            "fetcher/get",
            json!({"url": format!("http://{own}/x")}),
            &secrets,
        ))
        .await
        .expect("its own host answers");
    assert_eq!(answer["token"], "tok-1");

    // Another loopback port, by a URL from the input: refused before any connection.
    let refused = connectors
        .execute(call(
            "fetcher/get",
            json!({"url": format!("http://{other}/x")}),
            &secrets,
        ))
        .await
        .expect_err("another host is refused");
    assert_eq!(refused.kind, ErrorKind::InvalidInput);
    assert!(
        refused
            .message
            .contains("is not among the hosts connector `fetcher` may reach"),
        "{}",
        refused.message
    );

    // A next page on another host: the first page is fetched, the second refused.
    let refused = connectors
        .execute(call("fetcher/pages", json!({}), &secrets))
        .await
        .expect_err("a page elsewhere is refused");
    assert!(refused.message.contains("may reach"), "{}", refused.message);
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "nothing reached the other host"
    );

    // The metadata address and a non-HTTP scheme are refused too.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ] {
        let refused = connectors
            .execute(call("fetcher/get", json!({"url": url}), &secrets))
            .await
            .expect_err("refused");
        assert_eq!(
            refused.kind,
            ErrorKind::InvalidInput,
            "{url}: {}",
            refused.message
        );
    }

    // A playbook that grants hosts narrows the connector to them.
    let mut narrowed = call(
        "fetcher/get",
        json!({"url": format!("http://{own}/x")}),
        &secrets,
    );
    narrowed.grant.hosts = vec!["api.example.com".into()];
    let refused = connectors.execute(narrowed).await.expect_err("narrowed");
    assert!(refused.message.contains("may reach"), "{}", refused.message);
    assert_eq!(
        own_hits.load(Ordering::SeqCst),
        2,
        "the allowed call and the first page"
    );
}

#[tokio::test]
async fn a_connector_reads_only_the_secrets_it_is_granted() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (api, requests) = serve(echo(hits.clone())).await;
    let (connectors, _dir) = load(
        &[("fetcher", FETCHER.to_owned())],
        &[("fetcher", "base_url", json!(format!("http://{api}")))],
    );
    // Granted another secret (as a playbook granting it to another plugin would): its value is
    // never sent, and the call fails as unauthorized before any request.
    let refused = connectors
        .execute(call(
            "fetcher/get",
            json!({"url": format!("http://{api}/x")}),
            &[("slack_token", "xoxb-not-yours")],
        ))
        .await
        .expect_err("no granted secret");
    assert_eq!(refused.kind, ErrorKind::Unauthorized);
    assert!(
        refused.message.contains("`fetch_token`"),
        "{}",
        refused.message
    );
    assert!(!refused.message.contains("xoxb-not-yours"));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert!(requests.all().is_empty());
}

#[tokio::test]
async fn secrets_never_reach_error_messages() {
    // An API that quotes the credential back in its error, as some do.
    let router = Router::new().fallback(|headers: HeaderMap| async move {
        let token = headers
            .get("x-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            StatusCode::FORBIDDEN,
            Json(json!({"message": format!("token {token} lacks the scope")})),
        )
    });
    let (api, _) = serve(router).await;
    let (connectors, _dir) = load(
        &[("fetcher", FETCHER.to_owned())],
        &[("fetcher", "base_url", json!(format!("http://{api}")))],
    );
    let failed = connectors
        .execute(call(
            "fetcher/get",
            json!({"url": format!("http://{api}/x")}),
            &[("fetch_token", "tok-secret-4471")],
        ))
        .await
        .expect_err("forbidden");
    assert_eq!(failed.kind, ErrorKind::Unauthorized);
    assert!(failed.message.contains("HTTP 403"), "{}", failed.message);
    assert!(
        !failed.message.contains("tok-secret-4471"),
        "{}",
        failed.message
    );
    assert!(failed.message.contains("[REDACTED]"), "{}", failed.message);
}

const TICKETS: &str = r#"connector: tickets
base_url: https://tickets.example.com/api
settings:
  queue: { default: SOC }
secrets:
  client_id: OAuth client.
  client_secret: OAuth secret.
auth:
  type: oauth2
  token_url: "{{ settings.base_url }}/oauth/token"
  client_id: client_id
  client_secret: client_secret
  scope: tickets
actions:
  create:
    input:
      type: object
      required: [title]
      additionalProperties: false
      properties:
        title: { type: string, maxLength: 40 }
        severity: { type: string, enum: [low, high], default: low }
    request:
      method: POST
      path: /tickets
      headers: { Idempotency-Key: "{{ call.idempotency_key }}" }
      body:
        queue: "{{ settings.queue }}"
        title: "{{ input.title }}"
        severity: "{{ input.severity }}"
    ok: [201]
    error: "{{ response.body.message }}"
    output:
      id: "{{ response.body.id }}"
  list:
    request: { path: /tickets, query: { limit: 2 } }
    paginate:
      items: "{{ response.body.tickets }}"
      next: { cursor: "{{ response.body.next }}" }
      max_pages: 3
    output:
      ids: "{{ items | map(attribute='id') | list }}"
"#;

/// A ticketing API with an OAuth token endpoint, a busy spell and three pages.
fn tickets(tokens: Arc<AtomicUsize>, busy: Arc<AtomicUsize>) -> Router {
    let issued = tokens.clone();
    Router::new()
        .route(
            "/api/oauth/token",
            post(move |body: String| {
                let issued = issued.clone();
                async move {
                    let form: BTreeMap<String, String> =
                        serde_urlencoded::from_str(&body).unwrap_or_default();
                    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
                        || form.get("client_secret").map(String::as_str) != Some("cs-1")
                        || form.get("scope").map(String::as_str) != Some("tickets")
                    {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"})));
                    }
                    let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                    (
                        StatusCode::OK,
                        Json(json!({"token_type": "Bearer", "expires_in": 3600, "access_token": format!("at-{n}")})),
                    )
                }
            }),
        )
        .route(
            "/api/tickets",
            post(move |headers: HeaderMap, Json(body): Json<Value>| {
                let busy = busy.clone();
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    if !auth.starts_with("Bearer at-") {
                        return (StatusCode::UNAUTHORIZED, [("retry-after", "0")], Json(json!({"message": "no token"}))).into_response();
                    }
                    if busy.fetch_sub(1, Ordering::SeqCst) > 0 {
                        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3")], Json(json!({"message": "slow down"}))).into_response();
                    }
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    (StatusCode::CREATED, [("retry-after", "0")], Json(json!({"id": format!("T-{key}"), "echo": body, "auth": auth}))).into_response()
                }
            })
            .get(|headers: HeaderMap, Query(query): Query<BTreeMap<String, String>>| async move {
                if headers.get("authorization").is_none() {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"message": "no token"})));
                }
                let (tickets, next) = match query.get("cursor").map(String::as_str) {
                    None => (json!([{"id": 1}, {"id": 2}]), json!("c2")),
                    Some("c2") => (json!([{"id": 3}, {"id": 4}]), json!("c3")),
                    Some("c3") => (json!([{"id": 5}]), json!("c4")),
                    Some(_) => (json!([{"id": 99}]), Value::Null),
                };
                (StatusCode::OK, Json(json!({"tickets": tickets, "next": next})))
            }),
        )
}

#[tokio::test]
async fn inputs_are_checked_tokens_cached_answers_mapped_and_pages_followed() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(1));
    let (api, requests) = serve(tickets(tokens.clone(), busy.clone())).await;
    let (connectors, _dir) = load(
        &[("tickets", TICKETS.to_owned())],
        &[("tickets", "base_url", json!(format!("http://{api}/api")))],
    );
    let secrets = [("client_id", "ci-1"), ("client_secret", "cs-1")];

    // An input the schema refuses: no request at all.
    let refused = connectors
        .execute(call(
            "tickets/create",
            json!({"title": "x", "severity": "urgent"}),
            &secrets,
        ))
        .await
        .expect_err("invalid input");
    assert_eq!(refused.kind, ErrorKind::InvalidInput);
    assert!(refused.message.contains("/severity"), "{}", refused.message);
    assert!(requests.all().is_empty());

    // The API is busy once: rate limited, with its Retry-After, for the step's retry to honour.
    let limited = connectors
        .execute(call("tickets/create", json!({"title": "Phish"}), &secrets))
        .await
        .expect_err("busy");
    assert_eq!(limited.kind, ErrorKind::RateLimited);
    assert_eq!(limited.retry_after_ms, Some(3000));
    assert!(limited.message.contains("slow down"), "{}", limited.message);

    // Then it works: defaults filled in, settings and the idempotency key in the request, the
    // token fetched once for every call.
    let created = connectors
        .execute(call("tickets/create", json!({"title": "Phish"}), &secrets))
        .await
        .expect("created");
    assert_eq!(created, json!({"id": "T-run-7:step"}));
    let ids = connectors
        .execute(call("tickets/list", json!({}), &secrets))
        .await
        .expect("listed");
    assert_eq!(
        ids,
        json!({"ids": [1, 2, 3, 4, 5]}),
        "three pages, max_pages stops the fourth"
    );
    assert_eq!(tokens.load(Ordering::SeqCst), 1, "the token is cached");
    let sent = requests.all();
    let create = sent
        .iter()
        .rfind(|r| r.uri == "/api/tickets")
        .expect("a create");
    let body: Value = serde_json::from_str(&create.body).expect("JSON body");
    assert_eq!(
        body,
        json!({"queue": "SOC", "title": "Phish", "severity": "low"})
    );
    assert_eq!(create.headers["authorization"], "Bearer at-1");
    let pages: Vec<&str> = sent
        .iter()
        .filter(|r| r.uri.starts_with("/api/tickets?"))
        .map(|r| r.uri.as_str())
        .collect();
    assert_eq!(
        pages,
        [
            "/api/tickets?limit=2",
            "/api/tickets?limit=2&cursor=c2",
            "/api/tickets?limit=2&cursor=c3"
        ]
    );

    // A wrong client secret: the token request is refused, as unauthorized, without the secret.
    let refused = connectors
        .execute(call(
            "tickets/create",
            json!({"title": "Phish"}),
            &[("client_id", "ci-2"), ("client_secret", "wrong-cs-77")],
        ))
        .await
        .expect_err("bad client");
    assert_eq!(refused.kind, ErrorKind::Unauthorized);
    assert!(
        refused.message.contains("token request"),
        "{}",
        refused.message
    );
    assert!(!refused.message.contains("wrong-cs-77"));
}

#[tokio::test]
async fn a_connector_without_its_settings_says_what_to_configure() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("jira.yaml"),
        "connector: jira\nbase_url: \"https://{{ settings.site }}.atlassian.net\"\nsettings:\n  site: { description: Your site }\nactions:\n  me: { request: { path: /rest/api/3/myself } }\n",
    )
    .expect("write");
    // It loads (a deployment need not configure connectors it does not use), and its calls
    // say what is missing.
    let unconfigured =
        Connectors::load_dir(dir.path(), &BTreeMap::new(), EgressPolicy::default()).expect("loads");
    let refused = unconfigured
        .execute(call("jira/me", json!({}), &[]))
        .await
        .expect_err("not configured");
    assert_eq!(refused.kind, ErrorKind::Internal);
    assert!(
        refused.message.contains(
            "connector `jira` is not configured: set `connectors.settings.jira.site` (Your site)"
        ),
        "{}",
        refused.message
    );
    // A setting it does not declare is a mistake in the configuration: refused at load.
    let settings = BTreeMap::from([(
        "jira".to_owned(),
        BTreeMap::from([("sight".to_owned(), json!("acme"))]),
    )]);
    let error = Connectors::load_dir(dir.path(), &settings, EgressPolicy::default())
        .err()
        .expect("an unknown setting");
    assert!(error.to_string().contains("sets `sight`"), "{error}");
    // Settings for a connector that does not exist too.
    let settings = BTreeMap::from([("jria".to_owned(), BTreeMap::new())]);
    let error = Connectors::load_dir(dir.path(), &settings, EgressPolicy::default())
        .err()
        .expect("an unknown connector");
    assert!(
        error.to_string().contains("no connector has that name"),
        "{error}"
    );
}

#[tokio::test]
async fn an_answer_that_succeeds_by_status_can_still_fail_with_its_own_kind() {
    // A chat API in Slack's manner: every answer is a 200, failures say `ok: false`.
    let router = Router::new().fallback(|headers: HeaderMap, body: String| async move {
        let sent: Value = serde_json::from_str(&body).unwrap_or_default();
        let answer = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Bearer good") if sent["text"] == "" => json!({"ok": false, "error": "no_text"}),
            Some("Bearer good") => json!({"ok": true, "ts": "1.2", "at": sent["at"]}),
            _ => json!({"ok": false, "error": "invalid_auth"}),
        };
        Json(answer)
    });
    let (api, _) = serve(router).await;
    let connector = r#"connector: chat
base_url: https://chat.example.com/api
secrets: { chat_token: A bot token. }
auth: { type: bearer, secret: chat_token }
actions:
  post:
    input: { type: object, properties: { text: { type: string } } }
    request:
      method: POST
      path: /chat.postMessage
      body: { text: "{{ input.text }}", at: "{{ call.now }}" }
    fail_if: "not response.body.ok"
    error: "{{ response.body.error }}"
    error_kind: "{{ 'unauthorized' if response.body.error == 'invalid_auth' else none }}"
    output: { ts: "{{ response.body.ts }}", at: "{{ response.body.at }}" }
"#;
    let (connectors, _dir) = load(
        &[("chat", connector.to_owned())],
        &[("chat", "base_url", json!(format!("http://{api}/api")))],
    );
    let posted = connectors
        .execute(call(
            "chat/post",
            json!({"text": "hi"}),
            &[("chat_token", "good")],
        ))
        .await
        .expect("posted");
    assert_eq!(posted["ts"], "1.2");
    let at = posted["at"].as_str().expect("call.now was sent");
    assert!(chrono_like(at), "{at}");

    let empty = connectors
        .execute(call(
            "chat/post",
            json!({"text": ""}),
            &[("chat_token", "good")],
        ))
        .await
        .expect_err("ok: false");
    assert_eq!(empty.kind, ErrorKind::InvalidInput);
    assert!(
        empty.message.ends_with("HTTP 200: no_text"),
        "{}",
        empty.message
    );

    let unauthorized = connectors
        .execute(call(
            "chat/post",
            json!({"text": "hi"}),
            &[("chat_token", "bad")],
        ))
        .await
        .expect_err("invalid_auth");
    assert_eq!(
        unauthorized.kind,
        ErrorKind::Unauthorized,
        "{}",
        unauthorized.message
    );
}

/// `2026-12-03T23:59:00Z`.
fn chrono_like(text: &str) -> bool {
    text.len() == 20 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn an_imported_vendor_document_calls_the_vendor() {
    // PagerDuty's own OpenAPI document of its Events API v2 (tests/data/openapi), imported as is.
    let document = std::fs::read_to_string(
        test_support::workspace_root().join("tests/data/openapi/pagerduty-events-v2.json"),
    )
    .expect("the vendor document");
    let imported = playbook::connector::openapi::import(&document, "pagerduty-events")
        .expect("the document imports");
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (api, _) = serve(test_support::vendors::response::pagerduty(events.clone())).await;
    let (connectors, _dir) = load(
        &[("pagerduty-events", imported.yaml)],
        &[(
            "pagerduty-events",
            "base_url",
            json!(format!("http://{api}/v2")),
        )],
    );
    let event = json!({
        "routing_key": test_support::vendors::response::PAGERDUTY_ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "run-7:step",
        "payload": {"summary": "Brute force from 185.220.101.45", "severity": "critical", "source": "riposte"},
    });
    let answer = connectors
        .execute(call(
            "pagerduty-events/create-v2-event",
            json!({"body": event}),
            &[],
        ))
        .await
        .expect("PagerDuty accepted the event");
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(answer["dedup_key"], "run-7:step");
    let received = events.lock().expect("events").clone();
    assert_eq!(received, vec![event]);

    // The schema the document gives is enforced before anything is sent.
    let refused = connectors
        .execute(call(
            "pagerduty-events/create-v2-event",
            json!({"body": {"event_action": "page-everyone"}}),
            &[],
        ))
        .await
        .expect_err("not an event action");
    assert_eq!(refused.kind, ErrorKind::InvalidInput);
    assert_eq!(events.lock().expect("events").len(), 1);
}
