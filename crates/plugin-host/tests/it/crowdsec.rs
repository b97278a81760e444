//! `block-ip` against a real CrowdSec Local API: the ban is visible to bouncers, then lifted.

use playbook::ErrorKind;
use serde_json::{Value, json};
use test_support::CrowdSec;

use crate::{call, granted, host_with, invoke};

async fn decisions(crowdsec: &CrowdSec, ip: &str) -> Value {
    let body = reqwest::Client::new()
        .get(format!("{}/v1/decisions?ip={ip}", crowdsec.url))
        .header("X-Api-Key", &crowdsec.bouncer_key)
        .send()
        .await
        .expect("the bouncer API answers")
        .text()
        .await
        .expect("a body");
    // An empty list is the literal body `null`.
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test]
async fn block_ip_bans_on_crowdsec_once_per_key_and_unbans() {
    let crowdsec = tokio::task::spawn_blocking(CrowdSec::start)
        .await
        .expect("started");
    let host = host_with(&["block-ip"], true).await;
    let grant = |action: &str, input: Value| {
        let mut input = input;
        input["base_url"] = json!(crowdsec.url);
        granted(
            call("block-ip", action, input),
            &[&format!("127.0.0.1:{}", crowdsec.port)],
            &[
                ("crowdsec_machine_id", crowdsec.machine_id.as_str()),
                ("crowdsec_password", crowdsec.password.as_str()),
            ],
        )
    };

    let banned = invoke(
        &host,
        grant(
            "ban",
            json!({"ip": "198.51.100.7", "duration": "30m", "reason": "riposte test"}),
        ),
    )
    .await
    .expect("banned");
    assert_eq!(banned["already_banned"], false);
    assert_eq!(banned["alert_ids"].as_array().map(Vec::len), Some(1));

    let seen = decisions(&crowdsec, "198.51.100.7").await;
    let list = seen.as_array().expect("one decision");
    assert_eq!(list.len(), 1, "{seen}");
    assert_eq!(list[0]["type"], "ban");
    assert_eq!(list[0]["value"], "198.51.100.7");
    assert!(
        list[0]["duration"]
            .as_str()
            .unwrap_or_default()
            .starts_with("29m"),
        "{seen}"
    );

    // A retry of the same step (same idempotency key) does not ban twice.
    let again = invoke(
        &host,
        grant("ban", json!({"ip": "198.51.100.7", "duration": "30m"})),
    )
    .await
    .expect("retried");
    assert_eq!(again["already_banned"], true);
    assert_eq!(
        decisions(&crowdsec, "198.51.100.7")
            .await
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let unbanned = invoke(&host, grant("unban", json!({"ip": "198.51.100.7"})))
        .await
        .expect("unbanned");
    assert_eq!(unbanned["deleted"], 1);
    assert_eq!(decisions(&crowdsec, "198.51.100.7").await, Value::Null);

    // The guard stops a protected address before the plugin runs.
    let refused = invoke(&host, grant("ban", json!({"ip": "10.0.0.1"})))
        .await
        .expect_err("protected");
    assert_eq!(refused.kind, ErrorKind::InvalidInput);
    let wrong = invoke(
        &host,
        grant("ban", json!({"ip": "203.0.113.9", "duration": "forever"})),
    )
    .await
    .expect_err("bad duration");
    assert_eq!(wrong.kind, ErrorKind::InvalidInput);

    let ungranted = call(
        "block-ip",
        "ban",
        json!({"ip": "203.0.113.9", "base_url": crowdsec.url}),
    );
    let ungranted = granted(ungranted, &[&format!("127.0.0.1:{}", crowdsec.port)], &[]);
    let error = invoke(&host, ungranted).await.expect_err("no credentials");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
}
