//! The real plugins against loopback servers that speak the APIs they call (AbuseIPDB v2,
//! VirusTotal v3, Slack Web API and incoming webhooks), and a whole playbook run through the runner.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use playbook::ErrorKind;
use runner::{MemoryJournal, RunStatus, Runner, Secrets};
use serde_json::{Value, json};

use test_support::apis::{
    ABUSEIPDB_KEY, SLACK_TOKEN, VIRUSTOTAL_KEY, abuseipdb, slack, virustotal,
};

use crate::{call, granted, host_with, invoke, serve};

fn host_of(addr: std::net::SocketAddr) -> String {
    format!("127.0.0.1:{}", addr.port())
}

#[tokio::test]
async fn enrich_ioc_checks_an_ip_on_abuseipdb_and_caches_the_answer() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (addr, seen) = serve(abuseipdb(hits.clone())).await;
    let host = host_with(&["enrich-ioc"], true).await;
    let check = |ip: &str| {
        granted(
            call(
                "enrich-ioc",
                "check-ip",
                json!({"ip": ip, "base_url": format!("http://{addr}")}),
            ),
            &[&host_of(addr)],
            &[("abuseipdb_key", ABUSEIPDB_KEY)],
        )
    };
    let output = invoke(&host, check("185.220.101[.]45"))
        .await
        .expect("lookup");
    assert_eq!(output["verdict"], "malicious");
    assert_eq!(output["score"], 100);
    assert_eq!(output["reports"], 1873);
    assert_eq!(output["is_tor"], true);
    assert!(
        seen.all()[0]
            .uri
            .contains("ipAddress=185.220.101.45&maxAgeInDays=90"),
        "{:?}",
        seen.all()[0].uri
    );

    let again = invoke(&host, check("185.220.101.45"))
        .await
        .expect("cached lookup");
    assert_eq!(again, output);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the second lookup comes from the plugin's cache"
    );

    let clean = invoke(&host, check("198.51.100.20")).await.expect("lookup");
    assert_eq!(clean["verdict"], "clean");

    let unauthorized = granted(
        call(
            "enrich-ioc",
            "check-ip",
            json!({"ip": "203.0.113.9", "base_url": format!("http://{addr}")}),
        ),
        &[&host_of(addr)],
        &[],
    );
    let error = invoke(&host, unauthorized)
        .await
        .expect_err("no key granted");
    assert_eq!(error.kind, ErrorKind::Unauthorized);

    let bad = invoke(
        &host,
        call("enrich-ioc", "check-ip", json!({"ip": "not-an-ip"})),
    )
    .await
    .expect_err("invalid");
    assert_eq!(bad.kind, ErrorKind::InvalidInput);
}

#[tokio::test]
async fn enrich_ioc_checks_hashes_urls_and_domains_on_virustotal() {
    let (addr, _seen) = serve(virustotal()).await;
    let host = host_with(&["enrich-ioc"], true).await;
    let base = format!("http://{addr}");
    let lookup = |action: &str, input: Value| {
        let mut input = input;
        input["base_url"] = json!(base);
        granted(
            call("enrich-ioc", action, input),
            &[&host_of(addr)],
            &[("virustotal_key", VIRUSTOTAL_KEY)],
        )
    };
    let hash = invoke(
        &host,
        lookup(
            "check-hash",
            json!({"hash": "44D88612FEA8A8F36DE82E1278ABB02F"}),
        ),
    )
    .await
    .expect("hash");
    assert_eq!(hash["verdict"], "malicious");
    assert_eq!(hash["malicious"], 61);
    assert_eq!(hash["score"], 84);

    let url = invoke(
        &host,
        lookup("check-url", json!({"url": "hxxp://evil[.]example/login"})),
    )
    .await
    .expect("url");
    assert_eq!(url["indicator"], "http://evil.example/login");
    assert_eq!(url["verdict"], "malicious");

    let domain = invoke(
        &host,
        lookup("check-domain", json!({"domain": "evil[.]example"})),
    )
    .await
    .expect("domain");
    assert_eq!(domain["verdict"], "malicious");

    let unknown = invoke(&host, lookup("check-hash", json!({"hash": "0".repeat(64)})))
        .await
        .expect("unknown hash");
    assert_eq!(unknown["verdict"], "unknown");
    assert_eq!(unknown["found"], false);

    let invalid = invoke(&host, lookup("check-hash", json!({"hash": "xyz"})))
        .await
        .expect_err("not a hash");
    assert_eq!(invalid.kind, ErrorKind::InvalidInput);
}

#[tokio::test]
async fn notify_slack_posts_messages_and_maps_slack_errors() {
    let (addr, seen) = serve(slack()).await;
    let host = host_with(&["notify-slack"], true).await;
    let post = |channel: &str, token: Option<&str>| {
        let secrets: Vec<(&str, &str)> = token
            .map(|t| vec![("slack_bot_token", t)])
            .unwrap_or_default();
        granted(
            call(
                "notify-slack",
                "post-message",
                json!({
                    "channel": channel,
                    "text": "Blocked 185[.]220[.]101[.]45",
                    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Blocked* 185[.]220[.]101[.]45"}}],
                    "base_url": format!("http://{addr}")
                }),
            ),
            &[&host_of(addr)],
            &secrets,
        )
    };
    let posted = invoke(&host, post("#soc", Some(SLACK_TOKEN)))
        .await
        .expect("posted");
    assert_eq!(
        posted,
        json!({"channel": "C024BE91L", "ts": "1795400000.000100"})
    );
    let body: Value = serde_json::from_str(&seen.all()[0].body).expect("JSON body");
    assert_eq!(body["blocks"][0]["type"], "section");

    let cases = [
        ("#soc", None, ErrorKind::Unauthorized),
        ("#nowhere", Some(SLACK_TOKEN), ErrorKind::NotFound),
        ("#busy", Some(SLACK_TOKEN), ErrorKind::RateLimited),
    ];
    for (channel, token, kind) in cases {
        let error = invoke(&host, post(channel, token))
            .await
            .expect_err("refused");
        assert_eq!(error.kind, kind, "{channel}: {error}");
    }
    let limited = invoke(&host, post("#busy", Some(SLACK_TOKEN)))
        .await
        .expect_err("rate limited");
    assert_eq!(limited.retry_after_ms, Some(7000));

    let webhook_url = format!("http://{addr}/services/T000/B000/XXXX");
    let hook = granted(
        call("notify-slack", "webhook", json!({"text": "Run finished"})),
        &[&host_of(addr)],
        &[("slack_webhook_url", webhook_url.as_str())],
    );
    assert_eq!(
        invoke(&host, hook).await.expect("delivered"),
        json!({"delivered": true})
    );
}

#[tokio::test]
async fn a_playbook_runs_real_plugins_end_to_end_and_keeps_secrets_out_of_the_record() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (abuse, _) = serve(abuseipdb(hits)).await;
    let (slack_addr, slack_seen) = serve(slack()).await;
    let yaml = format!(
        r##"
name: e2e
trigger: {{ webhook: siem, public: true }}
secrets: [abuseipdb_key, slack_bot_token]
plugins:
  enrich-ioc: {{ hosts: ["127.0.0.1:{abuse_port}"], secrets: [abuseipdb_key] }}
  notify-slack: {{ hosts: ["127.0.0.1:{slack_port}"], secrets: [slack_bot_token] }}
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    with: {{ ip: "{{{{ trigger.src_ip }}}}", base_url: "http://127.0.0.1:{abuse_port}" }}
  - id: notify
    uses: notify-slack/post-message
    needs: [enrich]
    if: steps.enrich.output.verdict == 'malicious'
    with:
      channel: "#soc"
      text: "{{{{ trigger.src_ip | defang }}}} scored {{{{ steps.enrich.output.score }}}}"
      base_url: "http://127.0.0.1:{slack_port}"
outputs:
  verdict: "{{{{ steps.enrich.output.verdict }}}}"
  ts: "{{{{ steps.notify.output.ts }}}}"
"##,
        abuse_port = abuse.port(),
        slack_port = slack_addr.port()
    );
    let pb = playbook::compile(&yaml).unwrap_or_else(|d| panic!("{d:?}"));
    let host = host_with(&["enrich-ioc", "notify-slack"], true).await;
    let journal = Arc::new(MemoryJournal::new());
    let runner = Runner::new(Arc::new(host), journal.clone());
    let secrets = Secrets::new(
        [
            ("abuseipdb_key".to_owned(), ABUSEIPDB_KEY.to_owned()),
            ("slack_bot_token".to_owned(), SLACK_TOKEN.to_owned()),
        ]
        .into(),
    );
    let state = runner
        .start(
            &pb,
            "run-e2e",
            json!({"src_ip": "185.220.101.45"}),
            &secrets,
        )
        .await
        .expect("runs");
    assert_eq!(state.status, RunStatus::Succeeded, "{:?}", state.error);
    assert_eq!(
        state.outputs,
        Some(json!({"verdict": "malicious", "ts": "1795400000.000100"}))
    );
    let slack_body: Value = serde_json::from_str(&slack_seen.all()[0].body).expect("JSON");
    assert_eq!(slack_body["text"], "185[.]220[.]101[.]45 scored 100");

    let record = serde_json::to_string(&journal.events("run-e2e")).expect("serializable");
    for secret in [ABUSEIPDB_KEY, SLACK_TOKEN] {
        assert!(!record.contains(secret), "{secret} leaked into the journal");
    }
}
