//! The management API: the authorization matrix read from the OpenAPI document, runs watched,
//! approved and cancelled over HTTP with every call in the audit trail, playbooks reloaded,
//! metrics, CORS.

use std::time::Duration;

use runner::RunEvent;
use serde_json::{Value, json};

use crate::{
    ADMIN_TOKEN, BACKENDS, OUTSIDER_TOKEN, RESPONDER_TOKEN, SOC_ORIGIN, Server, VIEWER_TOKEN,
    run_id,
};

const ROLES: [(&str, &str); 3] = [
    ("viewer", VIEWER_TOKEN),
    ("responder", RESPONDER_TOKEN),
    ("admin", ADMIN_TOKEN),
];

fn rank(role: &str) -> usize {
    ROLES
        .iter()
        .position(|(name, _)| *name == role)
        .unwrap_or_else(|| panic!("unknown role `{role}` in the OpenAPI document"))
}

/// A playbook whose one step waits for a human.
const GATED: &str = r#"
name: gated
trigger: { webhook: siem, auth: siem }
steps:
  - id: block
    uses: core/echo
    timeout: 2s
    approval: { approvers: [soc], timeout: 1h, on_timeout: deny }
    with: { ip: "{{ trigger.src_ip }}" }
outputs:
  blocked: "{{ steps.block.output.ip }}"
"#;

impl Server {
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let authorization = token.map(|token| format!("Bearer {token}"));
        let mut headers = Vec::new();
        if let Some(authorization) = &authorization {
            headers.push(("authorization", authorization.as_str()));
        }
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.send(method, path, &headers, body).await
    }

    /// Every record of a paged audit endpoint, read a few at a time with the viewer's token.
    async fn pages(&self, path: &str) -> Vec<Value> {
        let mut records = Vec::new();
        let mut url = format!("{path}?limit=3");
        loop {
            let (status, page) = self.call("GET", &url, Some(VIEWER_TOKEN), None).await;
            assert_eq!(status, 200, "{url}: {page}");
            let batch = page["records"].as_array().expect("records");
            assert!(batch.len() <= 3, "{url}: {page}");
            records.extend(batch.iter().cloned());
            match page["next"].as_str() {
                Some(next) => url = format!("{path}?limit=3&after={next}"),
                None => return records,
            }
        }
    }

    async fn trail(&self) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .trail_page(after.as_deref(), 500)
                .await
                .expect("trail");
            entries.extend(
                page.records
                    .iter()
                    .map(|record| serde_json::from_str(&record.event).expect("JSON")),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => return entries,
            }
        }
    }

    /// A run of `gated` for an alert about `src_ip`. A signed body is its delivery's identity:
    /// runs of one server need addresses of their own.
    async fn waiting_run(&self, src_ip: &str) -> String {
        let body = format!(r#"{{"src_ip": "{src_ip}"}}"#);
        let (status, answer) = self.post_signed("siem", &body, &[]).await;
        assert_eq!(status, 202, "{answer}");
        let run = run_id(&answer);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, detail) = self
                .call(
                    "GET",
                    &format!("/api/v1/runs/{run}"),
                    Some(VIEWER_TOKEN),
                    None,
                )
                .await;
            if detail["status"] == "waiting_for_approval" {
                return run;
            }
            assert!(tokio::time::Instant::now() < deadline, "{detail}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_can_do_exactly_what_the_openapi_document_says_and_every_call_is_audited() {
    let server = Server::in_process(crate::Backend::Sqlite, &[("gated.yaml", GATED.into())]).await;
    let (status, document) = server.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        document,
        serde_json::from_str::<Value>(server::http::OPENAPI).expect("JSON"),
        "the served document is the embedded one"
    );
    let (mut protected, mut expected_refusals) = (0, 0);
    for (template, operations) in document["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let documented: Vec<u16> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|code| code.parse().expect("a status code"))
                .collect();
            let path = template
                .replace("{trigger}", "nobody-listens")
                .replace("{run_id}", "no-such-run")
                .replace("{case}", "999999")
                .replace("{step}", "block");
            let Some(role) = operation["x-riposte-role"].as_str() else {
                // Public: answered without a token, with a documented status.
                let (status, body) = server.call(method, &path, None, None).await;
                assert!(
                    documented.contains(&status),
                    "{method} {template}: {status} is not documented ({documented:?}): {body}"
                );
                continue;
            };
            protected += 1;
            for token in [None, Some("rpt_not-a-token")] {
                let (status, body) = server.call(method, &path, token, None).await;
                assert_eq!(status, 401, "{method} {template} with {token:?}: {body}");
                assert!(documented.contains(&401), "{method} {template}: 401");
            }
            for (name, token) in ROLES {
                let (status, body) = server.call(method, &path, Some(token), None).await;
                if rank(name) < rank(role) {
                    assert_eq!(status, 403, "{method} {template} as {name}: {body}");
                    expected_refusals += 1;
                } else {
                    assert!(
                        status != 401 && status != 403,
                        "{method} {template} as {name}: {status} {body}"
                    );
                }
                assert!(
                    documented.contains(&status),
                    "{method} {template} as {name}: {status} is not documented ({documented:?}): {body}"
                );
            }
        }
    }
    assert!(protected >= 12, "only {protected} protected operations");

    // Every call with a valid token is in the trail with its actor, refused ones too; calls
    // without one are not (anyone can make those).
    let calls: Vec<Value> = server
        .trail()
        .await
        .into_iter()
        .filter(|entry| entry["type"] == "api_call")
        .collect();
    // Successful scrapes of /metrics are not management calls; the viewer's is the only one.
    assert_eq!(calls.len(), protected * 3 - 3, "{calls:#?}");
    assert!(!calls.iter().any(|call| call["path"] == "/metrics"));
    let refused = calls.iter().filter(|call| call["status"] == 403).count();
    assert_eq!(refused, expected_refusals);
    assert!(calls.iter().any(|call| call["actor"] == "viewer"
        && call["method"] == "POST"
        && call["path"] == "/api/v1/runs/no-such-run/cancel"
        && call["status"] == 403));
    assert!(calls.iter().any(|call| call["actor"] == "oncall"
        && call["role"] == "responder"
        && call["path"] == "/api/v1/runs/no-such-run/cancel"
        && call["status"] == 404));
    let report = store::audit::verify_store(server.store.as_ref())
        .await
        .expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn every_route_is_in_the_openapi_document_and_every_operation_has_a_route() {
    // The routers' routes, as `http/mod.rs` declares them.
    let source = include_str!("../../src/http/mod.rs");
    let mut routes: Vec<(String, String)> = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let path = rest
            .split('"')
            .nth(1)
            .expect("a route's path literal")
            .to_owned();
        let call = &rest[..rest.find("))").expect("end of route")];
        for method in ["get", "post", "put", "delete", "patch"] {
            if call.contains(&format!("{method}(")) {
                routes.push((method.to_owned(), path.clone()));
            }
        }
    }
    let document: Value = serde_json::from_str(server::http::OPENAPI).expect("JSON");
    let mut documented: Vec<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .expect("operations")
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    // A worker's operations router serves some of the same endpoints: each counts once.
    routes.sort();
    routes.dedup();
    documented.sort();
    assert!(routes.len() >= 15, "{routes:?}");
    assert_eq!(routes, documented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_approves_one_run_and_cancels_another_over_http_and_the_trail_shows_who() {
    for backend in BACKENDS {
        let server = Server::in_process(backend, &[("gated.yaml", GATED.into())]).await;
        let approved = server.waiting_run("203.0.113.9").await;

        let (status, page) = server
            .call(
                "GET",
                "/api/v1/runs?status=waiting_for_approval&playbook=gated",
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["runs"][0]["run_id"], approved.as_str(), "{page}");
        let (_, detail) = server
            .call(
                "GET",
                &format!("/api/v1/runs/{approved}"),
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        assert_eq!(detail["steps"][0]["id"], "block", "{detail}");
        assert_eq!(detail["steps"][0]["status"], "waiting_for_approval");
        assert_eq!(detail["steps"][0]["approval"]["approvers"], json!(["soc"]));
        assert_eq!(detail["event"], json!({"src_ip": "203.0.113.9"}));

        let approve = format!("/api/v1/runs/{approved}/steps/block/approve");
        let (status, body) = server
            .call("POST", &approve, Some(VIEWER_TOKEN), None)
            .await;
        assert_eq!(status, 403, "{body}");
        // A responder, but not one of the step's approvers (`soc`).
        let (status, body) = server
            .call("POST", &approve, Some(OUTSIDER_TOKEN), None)
            .await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("may be decided by soc"))
        );
        let (status, body) = server
            .call(
                "POST",
                &approve,
                Some(RESPONDER_TOKEN),
                Some(r#"{"comment": "confirmed with the SOC lead"}"#),
            )
            .await;
        assert_eq!(status, 202, "{backend:?}: {body}");
        let state = server.finished(&approved, Duration::from_secs(10)).await;
        crate::assert_succeeded(&state);
        assert_eq!(state.outputs, Some(json!({"blocked": "203.0.113.9"})));
        let (status, body) = server
            .call("POST", &approve, Some(RESPONDER_TOKEN), None)
            .await;
        assert_eq!(
            status, 409,
            "a decided step cannot be decided again: {body}"
        );

        let cancelled = server.waiting_run("203.0.113.10").await;
        let cancel = format!("/api/v1/runs/{cancelled}/cancel");
        let (status, body) = server
            .call(
                "POST",
                &cancel,
                Some(RESPONDER_TOKEN),
                Some(r#"{"reason": "false positive"}"#),
            )
            .await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        assert_eq!(body["status"], "cancelled");
        assert_eq!(body["error"], "cancelled by oncall: false positive");
        let (status, _) = server
            .call("POST", &cancel, Some(RESPONDER_TOKEN), None)
            .await;
        assert_eq!(status, 409, "an ended run cannot be cancelled");
        let (status, body) = server
            .call("POST", &cancel, Some(RESPONDER_TOKEN), Some("{\"why\": 1}"))
            .await;
        assert_eq!(status, 400, "{body}");

        // The timelines: who sent each run, who decided, who cancelled; both chains intact.
        let (status, timeline) = server
            .call(
                "GET",
                &format!("/api/v1/runs/{approved}/timeline"),
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(timeline["chain"]["intact"], true, "{timeline}");
        let events: Vec<&Value> = timeline["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|record| &record["event"])
            .collect();
        assert_eq!(events[0]["type"], "run_accepted");
        assert_eq!(events[0]["actor"], "webhook:siem");
        assert!(events.iter().any(
            |event| event["type"] == "approval_decided" && event["decision"]["by"] == "oncall"
        ));
        let journal = server.events(&cancelled).await;
        assert!(
            matches!(journal.last(), Some(RunEvent::RunCancelled { by, reason: Some(reason), .. })
                if by == "oncall" && reason == "false positive"),
            "{journal:#?}"
        );
        let (_, listed) = server
            .call(
                "GET",
                "/api/v1/runs?status=cancelled",
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        assert_eq!(listed["runs"].as_array().map(Vec::len), Some(1), "{listed}");

        // The trail: the calls with their actor, and a seal for each ended run.
        let trail = server.trail().await;
        assert!(trail.iter().any(|entry| entry["type"] == "api_call"
            && entry["actor"] == "oncall"
            && entry["path"] == cancel
            && entry["status"] == 200));
        for run in [&approved, &cancelled] {
            assert!(
                trail
                    .iter()
                    .any(|entry| entry["type"] == "run_sealed" && entry["run_id"] == run.as_str()),
                "{backend:?}: no seal for {run}: {trail:#?}"
            );
        }
        // The same trail over HTTP (taken before: reading it is a call that adds to it), and
        // the activity stream holding the approved run's records exactly as its timeline.
        let over_http = server.pages("/api/v1/audit/trail").await;
        assert_eq!(
            over_http
                .iter()
                .map(|record| &record["entry"])
                .collect::<Vec<_>>()[..trail.len()],
            trail.iter().collect::<Vec<_>>()[..],
            "{backend:?}"
        );
        let activity = server.pages("/api/v1/audit/activity").await;
        let of_approved: Vec<Value> = activity
            .iter()
            .filter(|record| record["run_id"] == approved.as_str())
            .map(|record| json!({"seq": record["seq"], "prev": record["prev"], "hash": record["hash"], "event": record["event"]}))
            .collect();
        let timeline_records: Vec<Value> = timeline["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|record| json!({"seq": record["seq"], "prev": record["prev"], "hash": record["hash"], "event": record["event"]}))
            .collect();
        assert_eq!(of_approved, timeline_records, "{backend:?}");
        assert!(
            activity
                .iter()
                .any(|record| record["run_id"] == cancelled.as_str()
                    && record["event"]["type"] == "run_cancelled")
        );
        // A forwarder resumes at the cursor and finds only what came after: nothing, here.
        let (_, page) = server
            .call(
                "GET",
                "/api/v1/audit/activity?limit=500",
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        let cursor = page["cursor"]
            .as_str()
            .expect("a cursor after the last record");
        assert!(page["next"].is_null(), "{page}");
        let (status, later) = server
            .call(
                "GET",
                &format!("/api/v1/audit/activity?after={cursor}"),
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200, "{later}");
        assert_eq!(later["records"], json!([]), "{backend:?}");
        assert!(
            later["cursor"].is_null() && later["next"].is_null(),
            "{later}"
        );
        let (status, body) = server
            .call(
                "GET",
                "/api/v1/audit/activity?after=nonsense",
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 400, "{backend:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("nonsense")),
            "{body}"
        );

        let report = store::audit::verify_store(server.store.as_ref())
            .await
            .expect("verify");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.sealed, 2);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_newest_first_in_pages_and_bad_filters_are_refused() {
    let server = Server::in_process(crate::Backend::Sqlite, &[("gated.yaml", GATED.into())]).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        let (status, answer) = server
            .post_signed("siem", &format!(r#"{{"src_ip": "203.0.113.{n}"}}"#), &[])
            .await;
        assert_eq!(status, 202);
        sent.push(run_id(&answer));
    }
    let mut listed = Vec::new();
    let mut path = "/api/v1/runs?limit=2".to_owned();
    loop {
        let (status, page) = server.call("GET", &path, Some(VIEWER_TOKEN), None).await;
        assert_eq!(status, 200, "{page}");
        listed.extend(
            page["runs"]
                .as_array()
                .expect("runs")
                .iter()
                .map(|run| run["run_id"].as_str().expect("id").to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/runs?limit=2&after={next}"),
            None => break,
        }
    }
    sent.reverse();
    assert_eq!(listed, sent, "newest first, each once");
    for bad in [
        "status=lost",
        "limit=0",
        "limit=501",
        "since=yesterday",
        "after=nonsense",
        "colour=red",
    ] {
        let (status, body) = server
            .call(
                "GET",
                &format!("/api/v1/runs?{bad}"),
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (_, none) = server
        .call(
            "GET",
            "/api/v1/runs?since=2999-01-01T00:00:00Z",
            Some(VIEWER_TOKEN),
            None,
        )
        .await;
    assert_eq!(none["runs"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbooks_are_listed_validated_and_reloaded_and_a_bad_reload_keeps_the_old_ones() {
    let server = Server::in_process(crate::Backend::Sqlite, &[("gated.yaml", GATED.into())]).await;
    let (_, listed) = server
        .call("GET", "/api/v1/playbooks", Some(VIEWER_TOKEN), None)
        .await;
    assert_eq!(listed["playbooks"][0]["name"], "gated");
    assert_eq!(listed["playbooks"][0]["trigger"]["webhook"], "siem");
    assert_eq!(listed["playbooks"][0]["steps"][0]["uses"], "core/echo");

    let validate = |yaml: &'static str| {
        let server = &server;
        async move {
            let authorization = format!("Bearer {VIEWER_TOKEN}");
            server
                .send(
                    "POST",
                    "/api/v1/playbooks/validate",
                    &[
                        ("authorization", authorization.as_str()),
                        ("content-type", "application/yaml"),
                    ],
                    Some(yaml),
                )
                .await
        }
    };
    let (status, verdict) = validate(GATED).await;
    assert_eq!(
        (status, &verdict["valid"]),
        (200, &json!(true)),
        "{verdict}"
    );
    let (_, verdict) = validate("name: broken\ntrigger: { webhook: x, public: true }\nsteps:\n  - id: a\n    uses: core/echo\n    retyr: 3\n").await;
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["problems"][0]["line"], 6, "{verdict}");
    assert_eq!(verdict["problems"][0]["code"], "unknown-field", "{verdict}");
    let (_, verdict) = validate(
        "name: elsewhere\ntrigger: { webhook: x, public: true }\nsteps:\n  - id: a\n    uses: not-installed/act\n",
    )
    .await;
    assert_eq!(verdict["valid"], false);
    assert_eq!(
        verdict["problems"][0]["code"], "plugin-not-loaded",
        "{verdict}"
    );

    // A new playbook on disk: a reload puts it in use, and its trigger answers.
    std::fs::write(
        server.playbooks.join("echo.yaml"),
        "name: echo\ntrigger: { webhook: echo, public: true }\nsteps:\n  - id: a\n    uses: core/echo\n    timeout: 2s\n",
    )
    .expect("write");
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/playbooks/reload",
            Some(RESPONDER_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server
        .call("POST", "/api/v1/playbooks/reload", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!((status, &body), (200, &json!({"playbooks": 2})));
    let (status, _) = server.call("POST", "/hooks/echo", None, Some("{}")).await;
    assert_eq!(status, 202);

    // A broken one: the reload is refused with the problem, and both old playbooks stay.
    std::fs::write(server.playbooks.join("broken.yaml"), "name: [").expect("write");
    let (status, body) = server
        .call("POST", "/api/v1/playbooks/reload", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("broken.yaml")),
        "{body}"
    );
    let (status, _) = server.call("POST", "/hooks/echo", None, Some("{}")).await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_listed_with_what_they_declare() {
    let server = Server::start(crate::Backend::Sqlite, &[("gated.yaml", GATED.into())]).await;
    let (status, body) = server
        .call("GET", "/api/v1/plugins", Some(VIEWER_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let plugins = body["plugins"].as_array().expect("plugins");
    let enrich = plugins
        .iter()
        .find(|plugin| plugin["name"] == "enrich-ioc")
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        enrich["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|action| action["name"] == "check-ip"
                && action["input_schema"].is_object()
                && action["idempotent"].is_boolean())
    );
    assert!(enrich["secrets"].as_array().is_some_and(|s| !s.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_catalogue_loads_and_is_listed_with_what_to_configure() {
    let catalogue = test_support::workspace_root().join("connectors");
    let config = format!(
        "connectors:\n  path: {}\n  settings:\n    jira: {{ site: acme }}\n",
        catalogue.display()
    );
    let server = Server::start_with_options(
        crate::Backend::Sqlite,
        &[("gated.yaml", GATED.into())],
        1,
        &[],
        &config,
    )
    .await;
    let (status, body) = server
        .call("GET", "/api/v1/plugins", Some(VIEWER_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let connectors = body["connectors"].as_array().expect("connectors");
    assert!(connectors.len() >= 12, "{body}");
    let by_name = |name: &str| {
        connectors
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` in {body}"))
    };
    let abuseipdb = by_name("abuseipdb");
    assert_eq!(abuseipdb["not_configured"], serde_json::Value::Null);
    assert!(
        abuseipdb["hosts"]
            .as_array()
            .is_some_and(|h| h.contains(&"api.abuseipdb.com".into()))
    );
    assert!(
        abuseipdb["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["input_schema"].is_object()))
    );
    // Configured here: its site makes its host.
    let jira = by_name("jira");
    assert_eq!(jira["not_configured"], serde_json::Value::Null, "{jira}");
    assert!(
        jira["hosts"]
            .as_array()
            .is_some_and(|h| h.contains(&"acme.atlassian.net".into())),
        "{jira}"
    );
    // Not configured: it says what to set.
    let servicenow = by_name("servicenow");
    assert!(
        servicenow["not_configured"]
            .as_str()
            .is_some_and(|why| why.contains("connectors.settings.servicenow.")),
        "{servicenow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_webhooks_runs_steps_and_plugin_calls() {
    let server = Server::start(crate::Backend::Sqlite, &[("gated.yaml", GATED.into())]).await;
    let run = server.waiting_run("203.0.113.9").await;
    let (status, _) = server
        .call(
            "POST",
            &format!("/api/v1/runs/{run}/steps/block/approve"),
            Some(RESPONDER_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 202);
    server.finished(&run, Duration::from_secs(10)).await;
    server
        .call("POST", "/hooks/made-up-trigger", None, Some("{}"))
        .await;
    let (status, _) = server.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 401);
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .expect("metrics");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|kind| kind.starts_with("text/plain"))
    );
    let text = response.text().await.expect("text");
    for line in [
        "riposte_webhooks_total{trigger=\"siem\",status=\"202\"} 1",
        "riposte_webhooks_total{trigger=\"unknown\",status=\"404\"} 1",
        "riposte_webhook_duration_seconds_count{trigger=\"siem\",status=\"202\"} 1",
        "riposte_webhook_duration_seconds_bucket{le=\"0.005\",trigger=\"siem\",status=\"202\"} ",
        "riposte_webhook_duration_seconds_bucket{le=\"+Inf\",trigger=\"siem\",status=\"202\"} 1",
        "riposte_webhook_duration_seconds_count{trigger=\"unknown\",status=\"404\"} 1",
        "riposte_runs_total{outcome=\"succeeded\"} 1",
        "riposte_steps_total{outcome=\"succeeded\"} 1",
        "riposte_step_duration_seconds_count{outcome=\"succeeded\"} 1",
        "riposte_plugin_call_duration_seconds_count{plugin=\"core\",action=\"echo\",outcome=\"ok\"} 1",
        "riposte_queue_depth ",
    ] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }
    assert!(!text.contains("made-up-trigger"));
    let accept_seconds: f64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                "riposte_webhook_duration_seconds_sum{trigger=\"siem\",status=\"202\"} ",
            )
        })
        .and_then(|seconds| seconds.trim().parse().ok())
        .expect("the accept's time");
    assert!(
        accept_seconds > 0.0 && accept_seconds < 10.0,
        "the accept took {accept_seconds} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_the_configured_origin() {
    let server = Server::start(crate::Backend::Sqlite, &[("gated.yaml", GATED.into())]).await;
    let preflight = |origin: &'static str| {
        server
            .client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/v1/runs", server.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight(SOC_ORIGIN).await.expect("preflight");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        SOC_ORIGIN,
        "{allowed:?}"
    );
    let other = preflight("https://evil.example.net")
        .await
        .expect("preflight");
    assert!(
        !other.headers().contains_key("access-control-allow-origin"),
        "{other:?}"
    );
}

/// Runs cancelled over the API, and failed ones, are counted where the runner records them: one
/// journal path, whoever changes the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_runs_are_counted_in_the_metrics() {
    let server = Server::in_process(crate::Backend::Sqlite, &[("gated.yaml", GATED.into())]).await;
    let run = server.waiting_run("203.0.113.9").await;
    let (status, body) = server
        .call(
            "POST",
            &format!("/api/v1/runs/{run}/cancel"),
            Some(RESPONDER_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = server
        .call("GET", "/metrics", Some(VIEWER_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let text = metrics.as_str().expect("text");
    assert!(
        text.contains("riposte_runs_total{outcome=\"cancelled\"} 1"),
        "{text}"
    );
}
