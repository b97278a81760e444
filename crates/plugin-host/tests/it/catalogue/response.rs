//! Cases, paging and containment connectors: TheHive, Jira, ServiceNow, PagerDuty, CrowdSec (the
//! real Local API), Cloudflare, Defender for Endpoint. Each test calls every action of one
//! connector and checks what the server received (path, query, credential, body) and what the
//! step got back, then a wrong credential.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use playbook::ErrorKind;
use plugin_host::Connectors;
use runner::StepExecutor as _;
use serde_json::{Value, json};
use test_support::vendors::response as vendor;
use test_support::{CrowdSec, Received};

use super::{call, catalogue};

#[tokio::test]
async fn thehive_raises_alerts_opens_cases_and_adds_observables_and_comments() {
    let (address, recorder) = test_support::serve(vendor::thehive()).await;
    let url = format!("http://{address}");
    let hive = catalogue("thehive", &[("url", json!(url))]);
    let key = [("thehive_api_key", vendor::THEHIVE_KEY)];

    let alert_input = json!({
        "title": "Brute force from 185.220.101.45",
        "description": "143 failed logins for `svc-backup` on vpn-gw-01.",
        "severity": "high",
        "tags": ["brute-force"],
        "observables": [{"dataType": "ip", "data": "185.220.101.45", "ioc": true}]
    });
    let alert = hive
        .execute(call("thehive", "create-alert", alert_input.clone(), &key))
        .await
        .expect("TheHive raises the alert");
    assert_eq!(alert["status"], "New");
    assert_eq!(alert["severity"], "HIGH");
    // Without `source_ref`, the call's idempotency key makes the alert unique.
    assert_eq!(alert["source_ref"], "run-1:step");
    let alert_id = alert["id"].as_str().expect("an alert id");
    assert_eq!(alert["url"], format!("{url}/alerts/{alert_id}/details"));
    let sent = last(&recorder);
    assert_eq!(sent.uri, "/api/v1/alert");
    assert_eq!(
        header(&sent, "authorization"),
        format!("Bearer {}", vendor::THEHIVE_KEY)
    );
    let body = json_body(&sent);
    assert_eq!(body["severity"], 3, "the word is TheHive's number: {body}");
    assert_eq!(body["sourceRef"], "run-1:step");
    assert_eq!(
        (body["type"].as_str(), body["source"].as_str()),
        (Some("riposte"), Some("riposte"))
    );
    assert_eq!(
        (body["tlp"].as_u64(), body["pap"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(body["observables"][0]["data"], "185.220.101.45");

    // A retried call sends the same reference, which TheHive refuses as a duplicate.
    let again = hive
        .execute(call("thehive", "create-alert", alert_input, &key))
        .await
        .expect_err("a second alert with the same reference");
    assert_eq!(again.kind, ErrorKind::InvalidInput);
    assert!(
        again.message.contains("already exists"),
        "{}",
        again.message
    );

    let case = hive
        .execute(call(
            "thehive",
            "create-case",
            json!({"title": "Brute force on vpn-gw-01", "description": "Opened by Riposte.", "severity": "critical", "tags": ["riposte"]}),
            &key,
        ))
        .await
        .expect("TheHive opens the case");
    let case_id = case["id"].as_str().expect("a case id").to_owned();
    assert_eq!(case["number"], 42);
    assert_eq!(case["status"], "New");
    assert_eq!(case["url"], format!("{url}/cases/{case_id}/details"));
    let body = json_body(&last(&recorder));
    assert_eq!(body["severity"], 4);
    assert_eq!(body["flag"], false);

    let observables = hive
        .execute(call(
            "thehive",
            "add-observable",
            json!({"case_id": case_id, "data_type": "ip", "data": ["185.220.101.45", "185.220.101.46"], "ioc": true, "message": "brute-force sources"}),
            &key,
        ))
        .await
        .expect("TheHive adds the observables");
    assert_eq!(observables["count"], 2);
    assert_eq!(observables["ids"].as_array().map(Vec::len), Some(2));
    let sent = last(&recorder);
    assert_eq!(
        sent.uri,
        format!("/api/v1/case/{}/observable", encoded_id(&case_id))
    );
    let body = json_body(&sent);
    assert_eq!(body["dataType"], "ip");
    assert_eq!(body["data"], json!(["185.220.101.45", "185.220.101.46"]));
    assert_eq!(
        (body["ioc"].as_bool(), body["sighted"].as_bool()),
        (Some(true), Some(false))
    );

    let comment = hive
        .execute(call(
            "thehive",
            "add-comment",
            json!({"case_id": case_id, "message": "Banned on CrowdSec for **4h**."}),
            &key,
        ))
        .await
        .expect("TheHive adds the comment");
    assert!(
        comment["id"].as_str().is_some_and(|id| id.starts_with('~')),
        "{comment}"
    );
    let sent = last(&recorder);
    assert_eq!(
        sent.uri,
        format!("/api/v1/case/{}/comment", encoded_id(&case_id))
    );
    assert_eq!(
        json_body(&sent),
        json!({"message": "Banned on CrowdSec for **4h**."})
    );

    // A path input that is not a case id never reaches the server.
    let before = recorder.all().len();
    let refused = hive
        .execute(call(
            "thehive",
            "add-comment",
            json!({"case_id": "1/../../admin", "message": "x"}),
            &key,
        ))
        .await
        .expect_err("not a case id");
    assert_eq!(refused.kind, ErrorKind::InvalidInput);
    assert_eq!(recorder.all().len(), before);

    let wrong = "thehive-key-revoked-0000";
    let error = hive
        .execute(call(
            "thehive",
            "create-case",
            json!({"title": "t", "description": "d"}),
            &[("thehive_api_key", wrong)],
        ))
        .await
        .expect_err("a revoked key");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(
        error.message.contains("Authentication failure"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(wrong), "{}", error.message);
}

#[tokio::test]
async fn jira_creates_comments_and_transitions_issues_in_atlassian_document_format() {
    let (address, recorder) = test_support::serve(vendor::jira()).await;
    let jira = catalogue(
        "jira",
        &[
            ("site", json!("acme")),
            ("base_url", json!(format!("http://{address}/rest/api/3"))),
        ],
    );
    let secrets = [
        ("jira_email", vendor::JIRA_EMAIL),
        ("jira_api_token", vendor::JIRA_TOKEN),
    ];

    let issue = jira
        .execute(call(
            "jira",
            "create-issue",
            json!({
                "project": "SEC",
                "summary": "Brute force from 185.220.101.45",
                "description": "143 failed logins on vpn-gw-01.\n\nBanned for 4h by Riposte.\n",
                "issue_type": "Incident",
                "labels": ["riposte", "brute-force"]
            }),
            &secrets,
        ))
        .await
        .expect("Jira creates the issue");
    assert_eq!(issue["key"], "SEC-42");
    assert_eq!(issue["id"], "10042");
    assert_eq!(issue["url"], "https://acme.atlassian.net/browse/SEC-42");
    assert_eq!(
        issue["self"],
        format!("http://{address}/rest/api/3/issue/10042")
    );
    let sent = last(&recorder);
    assert_eq!(sent.uri, "/rest/api/3/issue");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        vendor::JIRA_EMAIL,
        vendor::JIRA_TOKEN
    ));
    assert_eq!(header(&sent, "authorization"), format!("Basic {basic}"));
    let fields = &json_body(&sent)["fields"];
    assert_eq!(fields["project"], json!({"key": "SEC"}));
    assert_eq!(fields["issuetype"], json!({"name": "Incident"}));
    assert_eq!(fields["labels"], json!(["riposte", "brute-force"]));
    // One paragraph per line, empty lines dropped.
    assert_eq!(
        fields["description"],
        json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "143 failed logins on vpn-gw-01."}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "Banned for 4h by Riposte."}]}
        ]})
    );

    // Quotes, markup and JSON-looking text arrive as they were written.
    let text = "He said \"ban it\" <now> & {\"x\": 1}\n'then' $1 \\ done";
    let comment = jira
        .execute(call(
            "jira",
            "add-comment",
            json!({"issue": "SEC-42", "text": text}),
            &secrets,
        ))
        .await
        .expect("Jira adds the comment");
    assert_eq!(comment["id"], "10100");
    assert_eq!(comment["created"], "2026-11-22T21:14:02.000+0000");
    let sent = last(&recorder);
    assert_eq!(sent.uri, "/rest/api/3/issue/SEC-42/comment");
    let paragraphs: Vec<Value> = json_body(&sent)["body"]["content"]
        .as_array()
        .expect("paragraphs")
        .iter()
        .map(|p| p["content"][0]["text"].clone())
        .collect();
    assert_eq!(
        paragraphs,
        vec![
            json!("He said \"ban it\" <now> & {\"x\": 1}"),
            json!("'then' $1 \\ done")
        ]
    );

    let transitions = jira
        .execute(call(
            "jira",
            "list-transitions",
            json!({"issue": "SEC-42"}),
            &secrets,
        ))
        .await
        .expect("Jira lists the transitions");
    assert_eq!(transitions["ids"], json!(["11", "21", "31"]));
    assert_eq!(
        transitions["names"],
        json!(["To Do", "In Progress", "Done"])
    );
    assert_eq!(last(&recorder).uri, "/rest/api/3/issue/SEC-42/transitions");

    let moved = jira
        .execute(call(
            "jira",
            "transition-issue",
            json!({"issue": "SEC-42", "transition_id": "31"}),
            &secrets,
        ))
        .await
        .expect("Jira moves the issue (204)");
    assert_eq!(moved, json!({"issue": "SEC-42", "transition_id": "31"}));
    assert_eq!(
        json_body(&last(&recorder)),
        json!({"transition": {"id": "31"}})
    );

    let refused = jira
        .execute(call(
            "jira",
            "transition-issue",
            json!({"issue": "SEC-42", "transition_id": "99"}),
            &secrets,
        ))
        .await
        .expect_err("no such transition");
    assert_eq!(refused.kind, ErrorKind::InvalidInput);
    assert!(
        refused.message.contains("Transition id '99' is not valid"),
        "{}",
        refused.message
    );
    let missing = jira
        .execute(call(
            "jira",
            "add-comment",
            json!({"issue": "SEC-7", "text": "x"}),
            &secrets,
        ))
        .await
        .expect_err("no such issue");
    assert_eq!(missing.kind, ErrorKind::NotFound);
    let invalid = jira
        .execute(call(
            "jira",
            "create-issue",
            json!({"project": "SEC", "summary": "x", "labels": ["two words"]}),
            &secrets,
        ))
        .await
        .expect_err("a label with a space");
    assert_eq!(invalid.kind, ErrorKind::InvalidInput);

    let wrong = "ATATT3xFfGF0-revoked-token";
    let error = jira
        .execute(call(
            "jira",
            "list-transitions",
            json!({"issue": "SEC-42"}),
            &[
                ("jira_email", vendor::JIRA_EMAIL),
                ("jira_api_token", wrong),
            ],
        ))
        .await
        .expect_err("a revoked token");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(!error.message.contains(wrong), "{}", error.message);
}

#[tokio::test]
async fn servicenow_creates_reads_and_updates_incidents() {
    let (address, recorder) = test_support::serve(vendor::servicenow()).await;
    let now = catalogue(
        "servicenow",
        &[
            ("instance", json!("acme")),
            ("base_url", json!(format!("http://{address}/api/now"))),
        ],
    );
    let secrets = [
        ("servicenow_username", vendor::SERVICENOW_USER),
        ("servicenow_password", vendor::SERVICENOW_PASSWORD),
    ];

    let incident = now
        .execute(call(
            "servicenow",
            "create-incident",
            json!({
                "short_description": "Brute force from 185.220.101.45 on vpn-gw-01",
                "description": "143 failed logins; banned for 4h.",
                "urgency": 1,
                "impact": 2,
                "fields": {"category": "network", "assignment_group": "287ebd7da9fe198100f92cc8d1d2154e"}
            }),
            &secrets,
        ))
        .await
        .expect("ServiceNow creates the incident");
    assert_eq!(incident["number"], "INC0010042");
    assert_eq!(incident["state"], "1");
    assert_eq!(incident["priority"], "2");
    let sys_id = incident["sys_id"].as_str().expect("a sys_id").to_owned();
    assert_eq!(
        incident["url"],
        format!("https://acme.service-now.com/incident.do?sys_id={sys_id}")
    );
    let sent = last(&recorder);
    assert_eq!(
        sent.uri,
        "/api/now/table/incident?sysparm_exclude_reference_link=true"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        vendor::SERVICENOW_USER,
        vendor::SERVICENOW_PASSWORD
    ));
    assert_eq!(header(&sent, "authorization"), format!("Basic {basic}"));
    let body = json_body(&sent);
    assert_eq!(
        (body["urgency"].as_str(), body["impact"].as_str()),
        (Some("1"), Some("2"))
    );
    assert_eq!(body["category"], "network");
    assert!(
        body.get("caller_id").is_none(),
        "fields left out keep their defaults: {body}"
    );

    let read = now
        .execute(call(
            "servicenow",
            "get-incident",
            json!({"sys_id": sys_id}),
            &secrets,
        ))
        .await
        .expect("ServiceNow reads the incident");
    assert_eq!(read["number"], "INC0010042");
    assert_eq!(
        read["short_description"],
        "Brute force from 185.220.101.45 on vpn-gw-01"
    );
    assert_eq!(read["assignment_group"], "287ebd7da9fe198100f92cc8d1d2154e");
    assert_eq!(
        last(&recorder).uri,
        format!("/api/now/table/incident/{sys_id}?sysparm_exclude_reference_link=true")
    );

    let updated = now
        .execute(call(
            "servicenow",
            "update-incident",
            json!({"sys_id": sys_id, "fields": {"state": 6, "close_code": "Solved (Permanently)", "close_notes": "Source banned.", "work_notes": "Closed by Riposte."}}),
            &secrets,
        ))
        .await
        .expect("ServiceNow updates the incident");
    assert_eq!(updated["state"], "6");
    assert_eq!(updated["updated"], "2026-11-22 21:20:40");
    assert_eq!(
        json_body(&last(&recorder)),
        json!({"state": 6, "close_code": "Solved (Permanently)", "close_notes": "Source banned.", "work_notes": "Closed by Riposte."})
    );

    let missing = now
        .execute(call(
            "servicenow",
            "get-incident",
            json!({"sys_id": "0123456789abcdef0123456789abcdef"}),
            &secrets,
        ))
        .await
        .expect_err("no such incident");
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert!(
        missing.message.contains("No Record found"),
        "{}",
        missing.message
    );

    let wrong = "sn-pass-expired-77";
    let error = now
        .execute(call(
            "servicenow",
            "get-incident",
            json!({"sys_id": sys_id}),
            &[
                ("servicenow_username", vendor::SERVICENOW_USER),
                ("servicenow_password", wrong),
            ],
        ))
        .await
        .expect_err("a wrong password");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(
        error.message.contains("User Not Authenticated"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(wrong), "{}", error.message);
}

#[tokio::test]
async fn pagerduty_triggers_acknowledges_and_resolves_with_the_routing_key_in_the_body() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (address, recorder) = test_support::serve(vendor::pagerduty(Arc::clone(&events))).await;
    let pager = catalogue(
        "pagerduty",
        &[("base_url", json!(format!("http://{address}/v2")))],
    );
    let key = [("pagerduty_routing_key", vendor::PAGERDUTY_ROUTING_KEY)];

    let paged = pager
        .execute(call(
            "pagerduty",
            "trigger",
            json!({
                "summary": "Brute force from 185.220.101.45: 143 failures",
                "severity": "critical",
                "source": "vpn-gw-01",
                "custom_details": {"count": 143, "user": "svc-backup"},
                "links": [{"href": "https://splunk.soc.example.com/x", "text": "Splunk"}]
            }),
            &key,
        ))
        .await
        .expect("PagerDuty accepts the event");
    // Without `dedup_key`, the call's idempotency key: a retried call never pages twice.
    assert_eq!(paged["dedup_key"], "run-1:step");
    assert_eq!(paged["status"], "success");
    let sent = last(&recorder);
    assert_eq!(sent.uri, "/v2/enqueue");
    let body = json_body(&sent);
    assert_eq!(body["routing_key"], vendor::PAGERDUTY_ROUTING_KEY);
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["dedup_key"], "run-1:step");
    assert_eq!(body["client"], "Riposte");
    assert_eq!(
        body["payload"]["summary"],
        "Brute force from 185.220.101.45: 143 failures"
    );
    assert_eq!(body["payload"]["severity"], "critical");
    assert_eq!(body["payload"]["source"], "vpn-gw-01");
    assert_eq!(
        body["payload"]["custom_details"],
        json!({"count": 143, "user": "svc-backup"})
    );
    assert_eq!(body["links"][0]["text"], "Splunk");
    assert!(
        sent.headers.get("authorization").is_none(),
        "the key goes in the body only"
    );

    for action in ["acknowledge", "resolve"] {
        let done = pager
            .execute(call(
                "pagerduty",
                action,
                json!({"dedup_key": "run-1:step"}),
                &key,
            ))
            .await
            .unwrap_or_else(|e| panic!("PagerDuty accepts the {action}: {e:?}"));
        assert_eq!(
            done,
            json!({"dedup_key": "run-1:step", "status": "success"})
        );
        let body = json_body(&last(&recorder));
        assert_eq!(body["event_action"], action);
        assert_eq!(body["routing_key"], vendor::PAGERDUTY_ROUTING_KEY);
        assert!(body.get("payload").is_none(), "{body}");
    }
    assert_eq!(events.lock().map(|e| e.len()).unwrap_or_default(), 3);

    let before = recorder.all().len();
    let invalid = pager
        .execute(call(
            "pagerduty",
            "trigger",
            json!({"summary": "x", "severity": "urgent"}),
            &key,
        ))
        .await
        .expect_err("not a PagerDuty severity");
    assert_eq!(invalid.kind, ErrorKind::InvalidInput);
    let ungranted = pager
        .execute(call(
            "pagerduty",
            "resolve",
            json!({"dedup_key": "run-1:step"}),
            &[],
        ))
        .await
        .expect_err("no routing key granted");
    assert_eq!(ungranted.kind, ErrorKind::Unauthorized);
    assert_eq!(
        recorder.all().len(),
        before,
        "neither call reached PagerDuty"
    );

    // PagerDuty answers a wrong routing key as an invalid event (400): it has no 401.
    let wrong = "0123456789abcdef0123456789abcdef";
    let error = pager
        .execute(call(
            "pagerduty",
            "trigger",
            json!({"summary": "x"}),
            &[("pagerduty_routing_key", wrong)],
        ))
        .await
        .expect_err("an unknown routing key");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(
        error.message.contains("Invalid routing key"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(wrong), "{}", error.message);
}

/// What bouncers see for `ip` (an empty list is the literal body `null`).
async fn crowdsec_decisions(crowdsec: &CrowdSec, ip: &str) -> Value {
    let body = reqwest::Client::new()
        .get(format!("{}/v1/decisions?ip={ip}", crowdsec.url))
        .header("X-Api-Key", &crowdsec.bouncer_key)
        .send()
        .await
        .expect("the bouncer API answers")
        .text()
        .await
        .expect("a body");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test]
async fn crowdsec_bans_lists_and_unbans_on_the_real_local_api() {
    let crowdsec = tokio::task::spawn_blocking(CrowdSec::start)
        .await
        .expect("CrowdSec started");
    let lapi = catalogue("crowdsec", &[("base_url", json!(crowdsec.url))]);
    let secrets = [
        ("crowdsec_machine_id", crowdsec.machine_id.as_str()),
        ("crowdsec_password", crowdsec.password.as_str()),
    ];
    let ip = "185.220.101.45";

    let banned = lapi
        .execute(call(
            "crowdsec",
            "ban",
            json!({"ip": ip, "duration": "30m", "reason": "riposte test"}),
            &secrets,
        ))
        .await
        .expect("CrowdSec takes the ban");
    assert_eq!(banned["ip"], ip);
    assert_eq!(
        banned["alert_ids"].as_array().map(Vec::len),
        Some(1),
        "{banned}"
    );

    let seen = crowdsec_decisions(&crowdsec, ip).await;
    let decisions = seen.as_array().expect("one decision");
    assert_eq!(decisions.len(), 1, "{seen}");
    assert_eq!(decisions[0]["type"], "ban");
    assert_eq!(decisions[0]["scope"], "Ip");
    assert_eq!(decisions[0]["origin"], "cscli");
    assert_eq!(decisions[0]["scenario"], "riposte test");
    // The LAPI stamped the alert with its clock: the ban lasts 30 minutes from now.
    assert!(
        decisions[0]["duration"]
            .as_str()
            .is_some_and(|d| d.starts_with("29m")),
        "{seen}"
    );

    let listed = lapi
        .execute(call("crowdsec", "list-alerts", json!({"ip": ip}), &secrets))
        .await
        .expect("CrowdSec lists the alerts");
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(
        listed["alert_ids"],
        json!([banned["alert_ids"][0]
            .as_str()
            .and_then(|id| id.parse::<u64>().ok())])
    );
    let alert = &listed["alerts"][0];
    assert_eq!(alert["decisions"][0]["value"], ip);
    assert_eq!(alert["message"], "riposte test [riposte:run-1:step]");

    let range = lapi
        .execute(call(
            "crowdsec",
            "ban",
            json!({"ip": "185.220.100.0/24", "duration": "1h"}),
            &secrets,
        ))
        .await
        .expect("CrowdSec takes the range");
    assert_eq!(range["alert_ids"].as_array().map(Vec::len), Some(1));

    let unbanned = lapi
        .execute(call("crowdsec", "unban", json!({"ip": ip}), &secrets))
        .await
        .expect("CrowdSec deletes the decisions");
    assert_eq!(unbanned, json!({"ip": ip, "deleted": 1}));
    assert_eq!(crowdsec_decisions(&crowdsec, ip).await, Value::Null);
    let listed = lapi
        .execute(call("crowdsec", "list-alerts", json!({"ip": ip}), &secrets))
        .await
        .expect("CrowdSec lists the alerts");
    assert_eq!(listed["count"], 0, "{listed}");
    assert_eq!(listed["alerts"], json!([]));
    let everything = lapi
        .execute(call(
            "crowdsec",
            "list-alerts",
            json!({"ip": ip, "active_only": false}),
            &secrets,
        ))
        .await
        .expect("CrowdSec lists the alerts");
    assert_eq!(
        everything["count"], 1,
        "the alert stays, its decision is gone: {everything}"
    );

    let range_unbanned = lapi
        .execute(call(
            "crowdsec",
            "unban",
            json!({"ip": "185.220.100.0/24"}),
            &secrets,
        ))
        .await
        .expect("CrowdSec deletes the range's decision");
    assert_eq!(range_unbanned["deleted"], 1);

    // The guard stops protected addresses and broad ranges; the schema stops bad durations.
    for (input, why) in [
        (json!({"ip": "10.0.0.1"}), "a private address"),
        (json!({"ip": "185.0.0.0/8"}), "a /8"),
        (json!({"ip": ip, "duration": "forever"}), "not a duration"),
    ] {
        let refused = lapi
            .execute(call("crowdsec", "ban", input, &secrets))
            .await
            .expect_err(why);
        assert_eq!(
            refused.kind,
            ErrorKind::InvalidInput,
            "{why}: {}",
            refused.message
        );
    }

    // A fresh catalogue holds no token: the wrong password meets the login.
    let fresh = catalogue("crowdsec", &[("base_url", json!(crowdsec.url))]);
    let wrong = "not-the-machine-password";
    let error = fresh
        .execute(call(
            "crowdsec",
            "list-alerts",
            json!({"ip": ip}),
            &[
                ("crowdsec_machine_id", crowdsec.machine_id.as_str()),
                ("crowdsec_password", wrong),
            ],
        ))
        .await
        .expect_err("a wrong password");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(
        error.message.contains("incorrect Username or Password"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(wrong), "{}", error.message);
}

#[tokio::test]
async fn cloudflare_adds_finds_and_removes_list_items_through_bulk_operations() {
    let (address, recorder) = test_support::serve(vendor::cloudflare()).await;
    let flare = catalogue(
        "cloudflare",
        &[
            ("base_url", json!(format!("http://{address}/client/v4"))),
            ("account_id", json!(vendor::CLOUDFLARE_ACCOUNT)),
            ("list_id", json!(vendor::CLOUDFLARE_LIST)),
        ],
    );
    let token = [("cloudflare_api_token", vendor::CLOUDFLARE_TOKEN)];
    let items = format!(
        "/client/v4/accounts/{}/rules/lists/{}/items",
        vendor::CLOUDFLARE_ACCOUNT,
        vendor::CLOUDFLARE_LIST
    );
    let ip = "185.220.101.45";

    let added = flare
        .execute(call(
            "cloudflare",
            "add-ip",
            json!({"ip": ip, "comment": "riposte: brute force"}),
            &token,
        ))
        .await
        .expect("Cloudflare takes the item");
    let operation = added["operation_id"]
        .as_str()
        .expect("an operation id")
        .to_owned();
    assert_eq!(operation.len(), 32);
    let sent = last(&recorder);
    assert_eq!(sent.uri, items);
    assert_eq!(
        header(&sent, "authorization"),
        format!("Bearer {}", vendor::CLOUDFLARE_TOKEN)
    );
    assert_eq!(
        json_body(&sent),
        json!([{"ip": ip, "comment": "riposte: brute force"}])
    );

    // The addition is asynchronous: running, then completed.
    let status = || {
        call(
            "cloudflare",
            "operation-status",
            json!({"operation_id": operation}),
            &token,
        )
    };
    let running = flare
        .execute(status())
        .await
        .expect("the operation's status");
    assert_eq!(
        (running["status"].as_str(), running["done"].as_bool()),
        (Some("running"), Some(false))
    );
    let completed = flare
        .execute(status())
        .await
        .expect("the operation's status");
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["done"], true);
    assert_eq!(completed["completed"], "2026-11-22T21:14:03Z");
    assert_eq!(
        last(&recorder).uri,
        format!(
            "/client/v4/accounts/{}/rules/lists/bulk_operations/{operation}",
            vendor::CLOUDFLARE_ACCOUNT
        )
    );

    // One item a page: the range that holds the address, then the address, read through the cursor.
    let before = recorder.all().len();
    let found = flare
        .execute(call(
            "cloudflare",
            "find-ip",
            json!({"ip": ip, "per_page": 1}),
            &token,
        ))
        .await
        .expect("Cloudflare lists the items");
    assert_eq!(found["found"], true);
    assert_eq!(found["items"].as_array().map(Vec::len), Some(2), "{found}");
    let item_ids = found["item_ids"].as_array().expect("ids").clone();
    assert_eq!(item_ids.len(), 1, "only the exact item: {found}");
    assert_ne!(item_ids[0], vendor::CLOUDFLARE_RANGE_ITEM);
    let pages: Vec<String> = recorder.all()[before..]
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(
        pages,
        vec![
            format!("{items}?search={ip}&per_page=1"),
            format!("{items}?search={ip}&per_page=1&cursor=page-1"),
        ]
    );

    let removed = flare
        .execute(call(
            "cloudflare",
            "remove-items",
            json!({"item_ids": item_ids}),
            &token,
        ))
        .await
        .expect("Cloudflare removes the item");
    assert_eq!(removed["operation_id"].as_str().map(str::len), Some(32));
    let sent = last(&recorder);
    assert_eq!(sent.uri, items);
    assert_eq!(json_body(&sent), json!({"items": [{"id": item_ids[0]}]}));
    let gone = flare
        .execute(call("cloudflare", "find-ip", json!({"ip": ip}), &token))
        .await
        .expect("Cloudflare lists the items");
    assert_eq!(gone["found"], false, "{gone}");
    assert_eq!(gone["item_ids"], json!([]));

    // A step may name another list; this account has no such list.
    let other = flare
        .execute(call(
            "cloudflare",
            "add-ip",
            json!({"ip": ip, "list_id": "ffffffffffffffffffffffffffffffff"}),
            &token,
        ))
        .await
        .expect_err("an unknown list");
    assert_eq!(other.kind, ErrorKind::NotFound);
    assert!(
        other.message.contains("list not found"),
        "{}",
        other.message
    );
    assert!(
        last(&recorder)
            .uri
            .contains("/lists/ffffffffffffffffffffffffffffffff/items")
    );

    let before = recorder.all().len();
    for (input, why) in [
        (json!({"ip": "192.168.1.10"}), "a private address"),
        (json!({"ip": "185.0.0.0/8"}), "a /8"),
    ] {
        let refused = flare
            .execute(call("cloudflare", "add-ip", input, &token))
            .await
            .expect_err(why);
        assert_eq!(
            refused.kind,
            ErrorKind::InvalidInput,
            "{why}: {}",
            refused.message
        );
    }
    assert_eq!(
        recorder.all().len(),
        before,
        "the guard stops them before any request"
    );

    let wrong = "cf-token-rolled-0000000000";
    let error = flare
        .execute(call(
            "cloudflare",
            "find-ip",
            json!({"ip": ip}),
            &[("cloudflare_api_token", wrong)],
        ))
        .await
        .expect_err("a rolled token");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(
        error.message.contains("Authentication error"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(wrong), "{}", error.message);
}

fn defender_catalogue(address: std::net::SocketAddr) -> Connectors {
    catalogue(
        "defender",
        &[
            ("base_url", json!(format!("http://{address}/api"))),
            ("login_url", json!(format!("http://{address}"))),
            ("tenant", json!(vendor::DEFENDER_TENANT)),
        ],
    )
}

#[tokio::test]
async fn defender_isolates_and_releases_a_machine_with_one_client_credentials_token() {
    let token_requests = Arc::new(AtomicUsize::new(0));
    let (address, recorder) =
        test_support::serve(vendor::defender(Arc::clone(&token_requests))).await;
    let defender = defender_catalogue(address);
    let secrets = [
        ("defender_client_id", vendor::DEFENDER_CLIENT_ID),
        ("defender_client_secret", vendor::DEFENDER_CLIENT_SECRET),
    ];
    let machine = vendor::DEFENDER_MACHINE;

    let device = defender
        .execute(call(
            "defender",
            "get-machine",
            json!({"machine_id": machine}),
            &secrets,
        ))
        .await
        .expect("Defender shows the machine");
    assert_eq!(device["hostname"], "ws-0231.corp.acme.example");
    assert_eq!(device["last_ip"], "10.20.30.41");
    assert_eq!(device["risk"], "High");
    assert_eq!(device["tags"], json!(["finance"]));

    let received = recorder.all();
    assert_eq!(received.len(), 2, "a token, then the machine");
    assert_eq!(
        received[0].uri,
        format!("/{}/oauth2/v2.0/token", vendor::DEFENDER_TENANT)
    );
    assert_eq!(
        header(&received[0], "content-type"),
        "application/x-www-form-urlencoded"
    );
    let form: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(&received[0].body).expect("a form");
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], vendor::DEFENDER_CLIENT_ID);
    assert_eq!(form["client_secret"], vendor::DEFENDER_CLIENT_SECRET);
    assert_eq!(form["scope"], vendor::DEFENDER_SCOPE);
    assert!(received[0].headers.get("authorization").is_none());
    assert_eq!(received[1].uri, format!("/api/machines/{machine}"));
    assert!(header(&received[1], "authorization").starts_with("Bearer eyJ0eXAi"));

    let isolated = defender
        .execute(call(
            "defender",
            "isolate-machine",
            json!({"machine_id": machine, "comment": "Riposte: ransomware alert 4211", "isolation_type": "Selective"}),
            &secrets,
        ))
        .await
        .expect("Defender isolates the machine");
    assert_eq!(isolated["type"], "Isolate");
    assert_eq!(isolated["status"], "Pending");
    assert_eq!(isolated["machine_id"], machine);
    assert_eq!(
        isolated["action_id"],
        "b89eb834-4578-496c-8be0-03f004061435"
    );
    let sent = last(&recorder);
    assert_eq!(sent.uri, format!("/api/machines/{machine}/isolate"));
    assert_eq!(
        json_body(&sent),
        json!({"Comment": "Riposte: ransomware alert 4211", "IsolationType": "Selective"})
    );

    let released = defender
        .execute(call(
            "defender",
            "release-machine",
            json!({"machine_id": machine, "comment": "Riposte: case closed"}),
            &secrets,
        ))
        .await
        .expect("Defender releases the machine");
    assert_eq!(released["type"], "Unisolate");
    let sent = last(&recorder);
    assert_eq!(sent.uri, format!("/api/machines/{machine}/unisolate"));
    assert_eq!(json_body(&sent), json!({"Comment": "Riposte: case closed"}));

    // Three calls, one token.
    assert_eq!(token_requests.load(Ordering::SeqCst), 1);

    let missing = defender
        .execute(call(
            "defender",
            "get-machine",
            json!({"machine_id": "ffffffffffffffffffffffffffffffffffffffff"}),
            &secrets,
        ))
        .await
        .expect_err("no such machine");
    assert_eq!(missing.kind, ErrorKind::NotFound);
    let refused = defender
        .execute(call(
            "defender",
            "isolate-machine",
            json!({"machine_id": machine}),
            &secrets,
        ))
        .await
        .expect_err("Defender wants a comment");
    assert_eq!(refused.kind, ErrorKind::InvalidInput);

    // A fresh catalogue holds no token: the wrong secret meets the identity platform.
    let fresh = defender_catalogue(address);
    let wrong = "dfe8Q~expired.secret-000";
    let error = fresh
        .execute(call(
            "defender",
            "get-machine",
            json!({"machine_id": machine}),
            &[
                ("defender_client_id", vendor::DEFENDER_CLIENT_ID),
                ("defender_client_secret", wrong),
            ],
        ))
        .await
        .expect_err("a wrong client secret");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(
        error.message.contains("invalid_client"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(wrong), "{}", error.message);
}

/// A token fetched with one credential must not serve a call granted another: the cache is keyed
/// by every credential value, not only the client id (or the login's first field).
#[tokio::test]
async fn a_cached_token_does_not_serve_a_call_with_a_different_secret() {
    let token_requests = Arc::new(AtomicUsize::new(0));
    let (address, _recorder) =
        test_support::serve(vendor::defender(Arc::clone(&token_requests))).await;
    let defender = defender_catalogue(address);
    let machine = json!({"machine_id": vendor::DEFENDER_MACHINE});
    defender
        .execute(call(
            "defender",
            "get-machine",
            machine.clone(),
            &[
                ("defender_client_id", vendor::DEFENDER_CLIENT_ID),
                ("defender_client_secret", vendor::DEFENDER_CLIENT_SECRET),
            ],
        ))
        .await
        .expect("the right secret");
    let error = defender
        .execute(call(
            "defender",
            "get-machine",
            machine,
            &[
                ("defender_client_id", vendor::DEFENDER_CLIENT_ID),
                ("defender_client_secret", "not-the-secret"),
            ],
        ))
        .await
        .expect_err("a wrong secret gets no cached token");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(token_requests.load(Ordering::SeqCst), 2);
}

/// The request a server received last.
fn last(recorder: &test_support::Recorder) -> Received {
    recorder.all().pop().expect("the server received a request")
}

fn header(received: &Received, name: &str) -> String {
    received
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn json_body(received: &Received) -> Value {
    serde_json::from_str(&received.body).unwrap_or_else(|error| {
        panic!(
            "{} sent no JSON body ({error}): {}",
            received.uri, received.body
        )
    })
}

/// A TheHive id in a path: `urlencode` writes `~` as `%7E`.
fn encoded_id(id: &str) -> String {
    id.replace('~', "%7E")
}
