//! Cases end to end: alerts open and join them (by key, by a shared observable), steps with a
//! phase move them, a decision acknowledges them, people move them over the API, and the report
//! tells the story; concurrent alerts never split one incident into two cases.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{BACKENDS, RESPONDER_TOKEN, Server, VIEWER_TOKEN, run_id};

/// Brute force from an address: enrichment, then a containment step behind an approval.
const SSH: &str = r#"
name: ssh-brute-force
description: SSH brute force
trigger: { webhook: ssh, auth: siem }
case:
  key: "src:{{ trigger.src_ip }}"
  window: 1h
  title: "SSH brute force from {{ trigger.src_ip }}"
  severity: "{{ trigger.level }}"
  join_on: [ip_address]
steps:
  - id: enrich
    uses: core/echo
    timeout: 2s
    with: { ip: "{{ trigger.src_ip }}", reporter: "abuse@example.net" }
    phase: detection_and_analysis
  - id: block
    uses: core/echo
    needs: enrich
    timeout: 2s
    with: { blocked: "{{ trigger.src_ip }}" }
    phase: containment
    approval: { approvers: [soc], timeout: 1h, on_timeout: deny }
"#;

/// Another rule that sees the same addresses: its alerts join by the shared address.
const SCAN: &str = r#"
name: port-scan
trigger: { webhook: scan, auth: siem }
case:
  key: "scan:{{ trigger.rule }}"
  join_on: ip_address
steps:
  - id: note
    uses: core/echo
    timeout: 2s
    with: { seen: "{{ trigger.attacker }}" }
"#;

impl Server {
    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, Some(VIEWER_TOKEN), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Waits until the case shows what `done` looks for.
    async fn case_until(&self, case: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = self
                .call(
                    "GET",
                    &format!("/api/v1/cases/{case}"),
                    Some(VIEWER_TOKEN),
                    None,
                )
                .await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "case {case}: {status} {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The case the run's alert joined, once it has.
    async fn case_of(&self, run: &str) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(case) = self.store.case_of_run(run).await.expect("case of run") {
                return case;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run} joined no case"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn alert(&self, trigger: &str, body: Value) -> String {
        let (status, answer) = self.post_signed(trigger, &body.to_string(), &[]).await;
        assert_eq!(status, 202, "{answer}");
        run_id(&answer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_open_and_join_a_case_that_moves_through_the_phases_and_is_reported() {
    for backend in BACKENDS {
        let server = Server::in_process(
            backend,
            &[("ssh.yaml", SSH.into()), ("scan.yaml", SCAN.into())],
        )
        .await;
        let first = server
            .alert(
                "ssh",
                json!({ "src_ip": "203.0.113.7", "level": "warning", "user": "root" }),
            )
            .await;
        let case = server.case_of(&first).await;
        let opened = server
            .case_until(case, |case| {
                case["alerts"].as_array().is_some_and(|a| a.len() == 1)
            })
            .await;
        assert_eq!(opened["title"], "SSH brute force from 203.0.113.7");
        assert_eq!(opened["severity"], "medium", "`warning` read as medium");
        assert_eq!(opened["phase"], "detection_and_analysis");
        assert_eq!(opened["opened_by"], "playbook:ssh-brute-force");

        // The same address again joins by key; a scan rule's alert joins by the address.
        let second = server
            .alert(
                "ssh",
                json!({ "src_ip": "203.0.113.7", "level": "high", "n": 2 }),
            )
            .await;
        // Workers take alerts in any order: the scan alert is sent once the second has joined,
        // so the reasons below come in this order.
        assert_eq!(server.case_of(&second).await, case);
        let scan = server
            .alert("scan", json!({ "rule": "nmap", "attacker": "203.0.113.7" }))
            .await;
        assert_eq!(server.case_of(&scan).await, case);
        let joined = server
            .case_until(case, |case| {
                case["alerts"].as_array().is_some_and(|a| a.len() == 3)
                    && case["actions"].as_array().is_some_and(|a| a.len() >= 2)
            })
            .await;
        let reasons: Vec<&str> = joined["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|alert| alert["reason"]["by"].as_str().expect("reason"))
            .collect();
        assert_eq!(reasons, ["opened", "key", "observable"], "{joined:#}");
        assert_eq!(
            joined["alerts"][2]["reason"]["observable"],
            json!({ "type": "IP Address", "type_id": 2, "value": "203.0.113.7" })
        );
        let observables: Vec<(String, String)> = joined["observables"]
            .as_array()
            .expect("observables")
            .iter()
            .map(|o| {
                (
                    o["type"].as_str().expect("type").to_owned(),
                    o["value"].as_str().expect("value").to_owned(),
                )
            })
            .collect();
        for expected in [
            ("IP Address", "203.0.113.7"),
            ("User Name", "root"),
            ("Email Address", "abuse@example.net"),
        ] {
            assert!(
                observables
                    .iter()
                    .any(|(kind, value)| (kind.as_str(), value.as_str()) == expected),
                "{expected:?} in {observables:?}"
            );
        }
        assert_eq!(joined["phase"], "detection_and_analysis");
        assert!(joined["acknowledged"].is_null());

        // Approving the containment step acknowledges the case; its success contains it.
        for run in [&first, &second] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let (status, body) = server
                    .call(
                        "POST",
                        &format!("/api/v1/runs/{run}/steps/block/approve"),
                        Some(RESPONDER_TOKEN),
                        None,
                    )
                    .await;
                if status == 202 {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            server.finished(run, Duration::from_secs(10)).await;
        }
        let contained = server
            .case_until(case, |case| {
                case["phase"] == "containment"
                    && case["alerts"]
                        .as_array()
                        .is_some_and(|a| a.iter().all(|alert| alert["status"] == "succeeded"))
            })
            .await;
        assert_eq!(contained["acknowledged"]["by"], "oncall");
        assert!(contained["durations"]["to_contain_ms"].is_u64());
        assert_eq!(contained["phases"][0]["by"], "playbook:ssh-brute-force");

        // People move it on, note it, and close it; each change is in the case's chain.
        let path = format!("/api/v1/cases/{case}");
        for (what, body) in [
            (
                "phase",
                json!({ "phase": "recovery", "reason": "ban verified" }),
            ),
            ("notes", json!({ "text": "<b>not</b> a test" })),
            ("severity", json!({ "severity": "high" })),
            ("phase", json!({ "phase": "closed" })),
        ] {
            let (status, answer) = server
                .call(
                    "POST",
                    &format!("{path}/{what}"),
                    Some(RESPONDER_TOKEN),
                    Some(&body.to_string()),
                )
                .await;
            assert_eq!(status, 200, "{what}: {answer}");
        }
        let (status, answer) = server
            .call(
                "POST",
                &format!("{path}/phase"),
                Some(VIEWER_TOKEN),
                Some(r#"{"phase": "recovery"}"#),
            )
            .await;
        assert_eq!(status, 403, "a viewer cannot move a case: {answer}");
        let (status, answer) = server
            .call(
                "POST",
                &format!("{path}/phase"),
                Some(RESPONDER_TOKEN),
                Some(r#"{"phase": "closed"}"#),
            )
            .await;
        assert_eq!(status, 409, "already closed: {answer}");
        let (status, _) = server
            .call(
                "POST",
                &format!("{path}/notes"),
                Some(RESPONDER_TOKEN),
                Some(r#"{"text": "  "}"#),
            )
            .await;
        assert_eq!(status, 400, "an empty note");

        let page = server.get("/api/v1/cases?phase=closed").await;
        assert_eq!(page["cases"][0]["id"], case);
        assert_eq!(page["counts"]["closed"], 1);

        let report = server.get(&format!("{path}/report")).await;
        assert_eq!(report["chain"]["intact"], true);
        assert_eq!(report["runs"].as_array().map(Vec::len), Some(3));
        assert!(
            report["runs"]
                .as_array()
                .expect("runs")
                .iter()
                .all(|run| run["chain"]["intact"] == true)
        );
        assert_eq!(report["decisions"].as_array().map(Vec::len), Some(2));
        assert_eq!(report["contained"].as_array().map(Vec::len), Some(2));
        let (status, markdown) = server
            .call(
                "GET",
                &format!("{path}/report?format=markdown"),
                Some(VIEWER_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200);
        let markdown = markdown.as_str().expect("text");
        assert!(
            markdown.contains("&lt;b&gt;not&lt;/b&gt; a test"),
            "{markdown}"
        );
        assert!(markdown.contains("| Closed |"), "{markdown}");

        // A closed case takes no more alerts: the same address opens a new one.
        let after = server
            .alert(
                "ssh",
                json!({ "src_ip": "203.0.113.7", "level": "low", "n": 3 }),
            )
            .await;
        assert_ne!(server.case_of(&after).await, case);

        let metrics = server
            .call("GET", "/metrics", Some(VIEWER_TOKEN), None)
            .await
            .1;
        let metrics = metrics.as_str().expect("text");
        for line in [
            "riposte_cases_opened_total 2",
            "riposte_case_time_to_seconds_count{to=\"acknowledge\"} 1",
            "riposte_case_time_to_seconds_count{to=\"contain\"} 1",
            "riposte_case_time_to_seconds_count{to=\"recover\"} 1",
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
        let verification = store::audit::verify_store(server.store.as_ref())
            .await
            .expect("verify");
        assert!(
            verification.problems.is_empty(),
            "{:?}",
            verification.problems
        );
        assert_eq!(verification.cases, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_of_one_incident_arriving_together_make_one_case() {
    for backend in BACKENDS {
        let server = Server::in_process(backend, &[("scan.yaml", SCAN.into())]).await;
        let alerts = (0..24).map(|n| {
            let server = &server;
            async move {
                server
                    .alert(
                        "scan",
                        json!({ "rule": "sweep", "attacker": "198.51.100.4", "n": n }),
                    )
                    .await
            }
        });
        let runs = futures::future::join_all(alerts).await;
        let mut cases = std::collections::BTreeSet::new();
        for run in &runs {
            cases.insert(server.case_of(run).await);
        }
        assert_eq!(cases.len(), 1, "{backend:?}: {cases:?}");
        let case = *cases.iter().next().expect("one case");
        let joined = server
            .case_until(case, |case| {
                case["alerts"]
                    .as_array()
                    .is_some_and(|a| a.len() == runs.len())
            })
            .await;
        assert_eq!(joined["observables"].as_array().map(Vec::len), Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_whose_key_renders_empty_get_a_case_each_and_the_list_pages_them() {
    const BY_HOST: &str = r#"
name: by-host
trigger: { webhook: host, auth: siem }
case:
  key: "{{ trigger.host | default('') }}"
steps:
  - { id: note, uses: core/echo, timeout: 2s, with: { seen: "{{ trigger.rule }}" } }
"#;
    let server = Server::in_process(crate::Backend::Sqlite, &[("host.yaml", BY_HOST.into())]).await;
    let with_host = [
        server
            .alert("host", json!({ "rule": "a", "host": "web-1" }))
            .await,
        server
            .alert("host", json!({ "rule": "b", "host": "web-1" }))
            .await,
    ];
    let without = [
        server.alert("host", json!({ "rule": "c" })).await,
        server.alert("host", json!({ "rule": "d" })).await,
    ];
    assert_eq!(
        server.case_of(&with_host[0]).await,
        server.case_of(&with_host[1]).await,
        "one host, one case"
    );
    let (c, d) = (
        server.case_of(&without[0]).await,
        server.case_of(&without[1]).await,
    );
    assert_ne!(c, d, "alerts without a host are not one incident");
    assert_ne!(c, server.case_of(&with_host[0]).await);

    // Three cases: pages of two, then the last one, which says it is the last.
    let first = server.get("/api/v1/cases?limit=2").await;
    assert_eq!(first["cases"].as_array().map(Vec::len), Some(2), "{first}");
    assert_eq!(first["next"], 2, "{first}");
    let last = server.get("/api/v1/cases?limit=2&offset=2").await;
    assert_eq!(last["cases"].as_array().map(Vec::len), Some(1), "{last}");
    assert!(last["next"].is_null(), "{last}");
    let exact = server.get("/api/v1/cases?limit=3").await;
    assert!(
        exact["next"].is_null(),
        "a full last page is the last: {exact}"
    );
}
