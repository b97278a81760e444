//! Threat intelligence and chat connectors: VirusTotal, AbuseIPDB, GreyNoise, Shodan, MISP,
//! Slack and Microsoft Teams, each action called against `test_support::vendors::intel`'s
//! loopback servers. Each test checks the request the vendor received (path, query, credential,
//! body), the step's output, and at least one failure: a wrong or missing credential is
//! `unauthorized` and its message never holds the secret.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use playbook::ErrorKind;
use plugin_host::Connectors;
use runner::{StepCall, StepError, StepExecutor as _};
use serde_json::{Value, json};
use test_support::vendors::intel::{
    self, ABUSEIPDB_KEY, EICAR_MD5, EICAR_SHA256, EVIL_DOMAIN, EVIL_URL, GOOGLE_DNS, GREYNOISE_KEY,
    MISP_EVENT_ID, MISP_KEY, SCANNER, SHODAN_KEY, SLACK_CHANNEL_ID, SLACK_TOKEN, SLACK_TS,
    TEAMS_SIG, TEAMS_WORKFLOW_PATH, TOR_EXIT, TeamsCards, VIRUSTOTAL_KEY,
};
use test_support::{Received, Recorder};

use super::{call, catalogue};

// ----------------------------------------------------------------------------------------------
// VirusTotal
// ----------------------------------------------------------------------------------------------

fn virustotal(addr: SocketAddr) -> Connectors {
    catalogue(
        "virustotal",
        &[("base_url", json!(format!("http://{addr}/api/v3")))],
    )
}

fn vt(action: &str, input: Value) -> StepCall {
    call(
        "virustotal",
        action,
        input,
        &[("virustotal_key", VIRUSTOTAL_KEY)],
    )
}

#[tokio::test]
async fn virustotal_reports_an_ip_a_domain_a_file_and_a_url() {
    let (addr, seen) = test_support::serve(intel::virustotal()).await;
    let connectors = virustotal(addr);

    let ip = connectors
        .execute(vt("ip-report", json!({"ip": TOR_EXIT})))
        .await
        .expect("ip-report");
    let request = last(&seen);
    assert_eq!(request.uri, format!("/api/v3/ip_addresses/{TOR_EXIT}"));
    assert_eq!(header(&request, "x-apikey"), Some(VIRUSTOTAL_KEY));
    assert_eq!(ip["found"], true);
    assert_eq!(ip["malicious"], 14);
    assert_eq!(ip["suspicious"], 3);
    assert_eq!(ip["harmless"], 55);
    assert_eq!(ip["reputation"], -35);
    assert_eq!(ip["country"], "DE");
    assert_eq!(ip["asn"], 60729);
    assert_eq!(ip["as_owner"], "Stiftung Erneuerbare Freiheit");
    assert_eq!(ip["network"], "185.220.101.0/24");
    assert_eq!(ip["tags"], json!([]));
    assert_eq!(
        ip["link"],
        format!("https://www.virustotal.com/gui/ip-address/{TOR_EXIT}")
    );

    let domain = connectors
        .execute(vt("domain-report", json!({"domain": "Evil.Example"})))
        .await
        .expect("domain-report");
    assert_eq!(last(&seen).uri, "/api/v3/domains/evil.example");
    assert_eq!(domain["found"], true);
    assert_eq!(domain["malicious"], 9);
    assert_eq!(domain["categories"]["Sophos"], "phishing");
    assert_eq!(domain["registrar"], "NameCheap, Inc.");
    assert_eq!(domain["creation_date"], 1_790_035_200);
    assert_eq!(domain["tags"], json!(["dga"]));

    let file = connectors
        .execute(vt(
            "file-report",
            json!({"hash": EICAR_MD5.to_ascii_uppercase()}),
        ))
        .await
        .expect("file-report");
    assert_eq!(last(&seen).uri, format!("/api/v3/files/{EICAR_MD5}"));
    assert_eq!(file["found"], true);
    assert_eq!(file["malicious"], 63);
    assert_eq!(file["sha256"], EICAR_SHA256);
    assert_eq!(file["name"], "eicar.com");
    assert_eq!(file["type"], "Text");
    assert_eq!(file["size"], 68);
    assert_eq!(file["threat_label"], "virus.eicar/test");
    assert_eq!(file["first_seen"], 1_148_301_722);

    let url = connectors
        .execute(vt("url-report", json!({"url": EVIL_URL})))
        .await
        .expect("url-report");
    // The URL's id is its unpadded URL-safe base64.
    assert_eq!(
        last(&seen).uri,
        "/api/v3/urls/aHR0cDovL2V2aWwuZXhhbXBsZS9sb2dpbg"
    );
    assert_eq!(url["found"], true);
    assert_eq!(url["malicious"], 11);
    assert_eq!(url["final_url"], "https://evil.example/login/");
    assert_eq!(url["title"], "Sign in to your account");
    assert_eq!(url["http_status"], 200);
    assert_eq!(url["tags"], json!(["redirect"]));
    let link = url["link"].as_str().expect("a link");
    assert!(
        link.starts_with("https://www.virustotal.com/gui/url/") && link.len() == 35 + 64,
        "{link}"
    );
}

#[tokio::test]
async fn virustotal_unknown_items_are_answers_not_failures() {
    let (addr, seen) = test_support::serve(intel::virustotal()).await;
    let connectors = virustotal(addr);
    for (action, input) in [
        ("ip-report", json!({"ip": "198.51.100.7"})),
        ("domain-report", json!({"domain": "never-seen.example"})),
        ("file-report", json!({"hash": "0".repeat(64)})),
        ("url-report", json!({"url": "https://never-seen.example/"})),
    ] {
        let output = connectors
            .execute(vt(action, input))
            .await
            .unwrap_or_else(|e| panic!("{action}: a 404 NotFoundError is `found: false`: {e:?}"));
        assert_eq!(output["found"], false, "{action}");
        assert_eq!(output["malicious"], 0, "{action}");
        assert_eq!(output["reputation"], 0, "{action}");
        assert_eq!(output["tags"], json!([]), "{action}");
    }
    assert_eq!(seen.all().len(), 4);
}

#[tokio::test]
async fn virustotal_refuses_a_wrong_key_and_bad_input() {
    let (addr, seen) = test_support::serve(intel::virustotal()).await;
    let connectors = virustotal(addr);
    let wrong = "vt-wrong-key-0000";
    let error = connectors
        .execute(call(
            "virustotal",
            "ip-report",
            json!({"ip": TOR_EXIT}),
            &[("virustotal_key", wrong)],
        ))
        .await
        .expect_err("a wrong key fails");
    assert_unauthorized(&error, wrong);
    assert!(error.message.contains("WrongCredentialsError"), "{error:?}");
    assert_eq!(header(&last(&seen), "x-apikey"), Some(wrong));

    let error = connectors
        .execute(call(
            "virustotal",
            "ip-report",
            json!({"ip": TOR_EXIT}),
            &[],
        ))
        .await
        .expect_err("no key fails");
    assert_eq!(error.kind, ErrorKind::Unauthorized, "{error:?}");

    let before = seen.all().len();
    let error = connectors
        .execute(vt("file-report", json!({"hash": "not-a-hash"})))
        .await
        .expect_err("a malformed hash fails");
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error:?}");
    assert_eq!(seen.all().len(), before, "no request is made for bad input");
}

// ----------------------------------------------------------------------------------------------
// AbuseIPDB
// ----------------------------------------------------------------------------------------------

fn abuseipdb(addr: SocketAddr) -> Connectors {
    catalogue(
        "abuseipdb",
        &[("base_url", json!(format!("http://{addr}/api/v2")))],
    )
}

fn abuse(action: &str, input: Value) -> StepCall {
    call(
        "abuseipdb",
        action,
        input,
        &[("abuseipdb_key", ABUSEIPDB_KEY)],
    )
}

#[tokio::test]
async fn abuseipdb_checks_an_ip_and_a_network() {
    let (addr, seen) = test_support::serve(intel::abuseipdb()).await;
    let connectors = abuseipdb(addr);

    let ip = connectors
        .execute(abuse("check-ip", json!({"ip": TOR_EXIT})))
        .await
        .expect("check-ip");
    let request = last(&seen);
    assert_eq!(path(&request), "/api/v2/check");
    assert_eq!(
        query(&request),
        pairs(&[("ipAddress", TOR_EXIT), ("maxAgeInDays", "30")])
    );
    assert_eq!(header(&request, "key"), Some(ABUSEIPDB_KEY));
    assert_eq!(ip["ip"], TOR_EXIT);
    assert_eq!(ip["score"], 100);
    assert_eq!(ip["reports"], 1873);
    assert_eq!(ip["distinct_users"], 412);
    assert_eq!(ip["country"], "DE");
    assert_eq!(ip["usage_type"], "Data Center/Web Hosting/Transit");
    assert_eq!(ip["is_tor"], true);
    assert_eq!(ip["is_whitelisted"], false);
    assert_eq!(ip["last_reported_at"], "2026-11-22T21:14:02+00:00");

    let clean = connectors
        .execute(abuse(
            "check-ip",
            json!({"ip": "198.51.100.7", "max_age_days": 90}),
        ))
        .await
        .expect("check-ip");
    assert_eq!(query(&last(&seen))["maxAgeInDays"], "90");
    assert_eq!(clean["score"], 0);
    assert_eq!(clean["reports"], 0);
    assert_eq!(clean["country"], Value::Null);
    assert_eq!(clean["last_reported_at"], Value::Null);

    let block = connectors
        .execute(abuse("check-block", json!({"network": "185.220.101.0/24"})))
        .await
        .expect("check-block");
    let request = last(&seen);
    assert_eq!(path(&request), "/api/v2/check-block");
    assert_eq!(
        query(&request),
        pairs(&[("network", "185.220.101.0/24"), ("maxAgeInDays", "30")])
    );
    assert_eq!(block["network"], "185.220.101.0");
    assert_eq!(block["netmask"], "255.255.255.0");
    assert_eq!(block["first"], "185.220.101.1");
    assert_eq!(block["last"], "185.220.101.254");
    assert_eq!(block["possible_hosts"], 254);
    assert_eq!(block["reported_count"], 2);
    assert_eq!(block["max_score"], 100);
    assert_eq!(block["reported"][1]["ipAddress"], "185.220.101.46");

    let quiet = connectors
        .execute(abuse("check-block", json!({"network": "198.51.100.0/28"})))
        .await
        .expect("check-block");
    assert_eq!(quiet["reported_count"], 0);
    assert_eq!(quiet["max_score"], 0);
}

#[tokio::test]
async fn abuseipdb_reports_an_ip_once_per_quarter_hour() {
    let (addr, seen) = test_support::serve(intel::abuseipdb()).await;
    let connectors = abuseipdb(addr);
    let report = || {
        abuse(
            "report-ip",
            json!({"ip": TOR_EXIT, "categories": [18, 22], "comment": "sshd: 240 failed logins in 5 min"}),
        )
    };
    let output = connectors.execute(report()).await.expect("report-ip");
    let request = last(&seen);
    assert_eq!(request.uri, "/api/v2/report");
    assert_eq!(header(&request, "key"), Some(ABUSEIPDB_KEY));
    assert_eq!(
        header(&request, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        form(&request.body),
        pairs(&[
            ("ip", TOR_EXIT),
            ("categories", "18,22"),
            ("comment", "sshd: 240 failed logins in 5 min"),
        ]),
        "`timestamp` is left out when not given"
    );
    assert_eq!(output, json!({"ip": TOR_EXIT, "score": 100}));

    let error = connectors
        .execute(report())
        .await
        .expect_err("a second report within 15 minutes is refused");
    assert_eq!(error.kind, ErrorKind::RateLimited, "{error:?}");
    assert_eq!(error.retry_after_ms, Some(900_000));
    assert!(error.message.contains("once in 15 minutes"), "{error:?}");

    // Reports are public: the protected-address guard keeps one's own addresses out.
    let before = seen.all().len();
    let error = connectors
        .execute(abuse(
            "report-ip",
            json!({"ip": "10.20.30.40", "categories": [15]}),
        ))
        .await
        .expect_err("a private address is not reported");
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error:?}");
    assert_eq!(seen.all().len(), before);
}

#[tokio::test]
async fn abuseipdb_refuses_a_wrong_key() {
    let (addr, _seen) = test_support::serve(intel::abuseipdb()).await;
    let connectors = abuseipdb(addr);
    let wrong = "abuseipdb-wrong-key-1234";
    let error = connectors
        .execute(call(
            "abuseipdb",
            "check-ip",
            json!({"ip": TOR_EXIT}),
            &[("abuseipdb_key", wrong)],
        ))
        .await
        .expect_err("a wrong key fails");
    assert_unauthorized(&error, wrong);
    assert!(error.message.contains("Authentication failed"), "{error:?}");
}

// ----------------------------------------------------------------------------------------------
// GreyNoise
// ----------------------------------------------------------------------------------------------

fn greynoise(addr: SocketAddr) -> Connectors {
    catalogue(
        "greynoise",
        &[("base_url", json!(format!("http://{addr}")))],
    )
}

fn gn(action: &str, input: Value) -> StepCall {
    call(
        "greynoise",
        action,
        input,
        &[("greynoise_key", GREYNOISE_KEY)],
    )
}

#[tokio::test]
async fn greynoise_community_tells_noise_riot_and_unseen_apart() {
    let (addr, seen) = test_support::serve(intel::greynoise()).await;
    let connectors = greynoise(addr);

    let scanner = connectors
        .execute(gn("community", json!({"ip": SCANNER})))
        .await
        .expect("community");
    let request = last(&seen);
    assert_eq!(request.uri, format!("/v3/community/{SCANNER}"));
    assert_eq!(header(&request, "key"), Some(GREYNOISE_KEY));
    assert_eq!(scanner["found"], true);
    assert_eq!(scanner["noise"], true);
    assert_eq!(scanner["riot"], false);
    assert_eq!(scanner["classification"], "malicious");
    assert_eq!(scanner["last_seen"], "2026-11-21");
    assert_eq!(
        scanner["link"],
        format!("https://viz.greynoise.io/ip/{SCANNER}")
    );

    let google = connectors
        .execute(gn("community", json!({"ip": GOOGLE_DNS})))
        .await
        .expect("community");
    assert_eq!(google["riot"], true);
    assert_eq!(google["classification"], "benign");
    assert_eq!(google["name"], "Google Public DNS");

    let unseen = connectors
        .execute(gn("community", json!({"ip": "198.51.100.7"})))
        .await
        .expect("a 404 is `found: false`");
    assert_eq!(unseen["found"], false);
    assert_eq!(unseen["noise"], false);
    assert_eq!(unseen["classification"], Value::Null);
    assert_eq!(
        unseen["message"],
        "IP not observed scanning the internet or contained in RIOT data set."
    );
}

#[tokio::test]
async fn greynoise_ip_context_and_quick() {
    let (addr, seen) = test_support::serve(intel::greynoise()).await;
    let connectors = greynoise(addr);

    let context = connectors
        .execute(gn("ip-context", json!({"ip": SCANNER})))
        .await
        .expect("ip-context");
    let request = last(&seen);
    assert_eq!(request.uri, format!("/v3/ip/{SCANNER}"));
    assert_eq!(header(&request, "key"), Some(GREYNOISE_KEY));
    assert_eq!(context["noise"], true);
    assert_eq!(context["riot"], false);
    assert_eq!(context["classification"], "malicious");
    assert_eq!(context["actor"], "unknown");
    assert_eq!(
        context["tags"],
        json!(["SSH Bruteforcer", "Apache ActiveMQ RCE Attempt"])
    );
    assert_eq!(context["cves"], json!(["CVE-2023-46604"]));
    assert_eq!(context["first_seen"], "2024-03-02");
    assert_eq!(context["asn"], "AS208843");
    assert_eq!(context["organization"], "Alpha Strike Labs GmbH");
    assert_eq!(context["country_code"], "DE");
    assert_eq!(context["spoofable"], false);
    assert_eq!(context["service_name"], Value::Null);
    assert_eq!(context["trust_level"], Value::Null);

    let google = connectors
        .execute(gn("ip-context", json!({"ip": GOOGLE_DNS})))
        .await
        .expect("ip-context");
    assert_eq!(google["noise"], false);
    assert_eq!(google["riot"], true);
    assert_eq!(google["classification"], Value::Null);
    assert_eq!(google["tags"], json!([]));
    assert_eq!(google["service_name"], "Google Public DNS");
    assert_eq!(google["service_category"], "public_dns");
    assert_eq!(google["trust_level"], "1");

    let quick = connectors
        .execute(gn("ip-quick", json!({"ip": SCANNER})))
        .await
        .expect("ip-quick");
    assert_eq!(last(&seen).uri, format!("/v3/ip/{SCANNER}?quick=true"));
    assert_eq!(
        quick,
        json!({"noise": true, "riot": false, "classification": "malicious", "trust_level": null})
    );
}

#[tokio::test]
async fn greynoise_refuses_a_wrong_key() {
    let (addr, _seen) = test_support::serve(intel::greynoise()).await;
    let connectors = greynoise(addr);
    let wrong = "gn-wrong-key-5678";
    for action in ["community", "ip-context"] {
        let error = connectors
            .execute(call(
                "greynoise",
                action,
                json!({"ip": SCANNER}),
                &[("greynoise_key", wrong)],
            ))
            .await
            .expect_err("a wrong key fails");
        assert_unauthorized(&error, wrong);
    }
}

// ----------------------------------------------------------------------------------------------
// Shodan
// ----------------------------------------------------------------------------------------------

fn shodan(addr: SocketAddr) -> Connectors {
    catalogue("shodan", &[("base_url", json!(format!("http://{addr}")))])
}

fn sh(action: &str, input: Value) -> StepCall {
    call("shodan", action, input, &[("shodan_key", SHODAN_KEY)])
}

#[tokio::test]
async fn shodan_describes_a_host() {
    let (addr, seen) = test_support::serve(intel::shodan()).await;
    let connectors = shodan(addr);

    let host = connectors
        .execute(sh("host-info", json!({"ip": TOR_EXIT})))
        .await
        .expect("host-info");
    let request = last(&seen);
    assert_eq!(path(&request), format!("/shodan/host/{TOR_EXIT}"));
    assert_eq!(
        query(&request),
        pairs(&[("key", SHODAN_KEY)]),
        "the key is in the query, `history` left out"
    );
    assert_eq!(host["found"], true);
    assert_eq!(host["ports"], json!([22, 80, 9001]));
    assert_eq!(host["products"], json!(["OpenSSH", "nginx"]));
    assert_eq!(host["vulns"], json!(["CVE-2021-41617", "CVE-2023-48795"]));
    assert_eq!(host["hostnames"], json!(["tor-exit-45.for-privacy.net"]));
    assert_eq!(host["tags"], json!(["tor"]));
    assert_eq!(host["org"], "Stiftung Erneuerbare Freiheit");
    assert_eq!(host["asn"], "AS60729");
    assert_eq!(host["os"], Value::Null);
    assert_eq!(host["country_code"], "DE");
    assert_eq!(
        host["link"],
        format!("https://www.shodan.io/host/{TOR_EXIT}")
    );

    let history = connectors
        .execute(sh("host-info", json!({"ip": TOR_EXIT, "history": true})))
        .await
        .expect("host-info with history");
    assert_eq!(query(&last(&seen))["history"], "true");
    assert_eq!(
        history["products"],
        json!(["OpenSSH", "nginx", "Apache httpd"])
    );

    let unknown = connectors
        .execute(sh("host-info", json!({"ip": "198.51.100.7"})))
        .await
        .expect("a 404 is `found: false`");
    assert_eq!(unknown["found"], false);
    assert_eq!(unknown["ports"], json!([]));
    assert_eq!(unknown["org"], Value::Null);
}

#[tokio::test]
async fn shodan_resolves_names_and_addresses() {
    let (addr, seen) = test_support::serve(intel::shodan()).await;
    let connectors = shodan(addr);

    let resolved = connectors
        .execute(sh(
            "dns-resolve",
            json!({"hostnames": [EVIL_DOMAIN, "nxdomain.example"]}),
        ))
        .await
        .expect("dns-resolve");
    let request = last(&seen);
    assert_eq!(path(&request), "/dns/resolve");
    assert_eq!(
        query(&request),
        pairs(&[
            ("hostnames", "evil.example,nxdomain.example"),
            ("key", SHODAN_KEY)
        ])
    );
    assert_eq!(
        resolved,
        json!({"addresses": {"evil.example": "203.0.113.7", "nxdomain.example": null}, "resolved": 1})
    );

    let reverse = connectors
        .execute(sh("dns-reverse", json!({"ips": [TOR_EXIT, GOOGLE_DNS]})))
        .await
        .expect("dns-reverse");
    let request = last(&seen);
    assert_eq!(path(&request), "/dns/reverse");
    assert_eq!(query(&request)["ips"], format!("{TOR_EXIT},{GOOGLE_DNS}"));
    assert_eq!(
        reverse["hostnames"],
        json!({TOR_EXIT: ["tor-exit-45.for-privacy.net"], GOOGLE_DNS: ["dns.google"]})
    );
}

#[tokio::test]
async fn shodan_refuses_a_wrong_key_without_showing_it() {
    let (addr, seen) = test_support::serve(intel::shodan()).await;
    let connectors = shodan(addr);
    let wrong = "shodanWrongKey00000000000";
    let error = connectors
        .execute(call(
            "shodan",
            "host-info",
            json!({"ip": TOR_EXIT}),
            &[("shodan_key", wrong)],
        ))
        .await
        .expect_err("a wrong key fails");
    assert_unauthorized(&error, wrong);
    assert_eq!(query(&last(&seen))["key"], wrong);
}

// ----------------------------------------------------------------------------------------------
// MISP
// ----------------------------------------------------------------------------------------------

fn misp(addr: SocketAddr) -> Connectors {
    // MISP has no default address: the `url` setting is required, and `base_url` reads it.
    catalogue("misp", &[("url", json!(format!("http://{addr}")))])
}

fn mi(action: &str, input: Value) -> StepCall {
    call("misp", action, input, &[("misp_key", MISP_KEY)])
}

#[tokio::test]
async fn misp_searches_attributes() {
    let (addr, seen) = test_support::serve(intel::misp()).await;
    let connectors = misp(addr);

    let found = connectors
        .execute(mi("search-attributes", json!({"value": TOR_EXIT})))
        .await
        .expect("search-attributes");
    let request = last(&seen);
    assert_eq!(request.uri, "/attributes/restSearch");
    assert_eq!(header(&request, "authorization"), Some(MISP_KEY));
    assert_eq!(header(&request, "accept"), Some("application/json"));
    assert_eq!(header(&request, "content-type"), Some("application/json"));
    assert_eq!(
        body(&request),
        json!({"returnFormat": "json", "value": TOR_EXIT, "type": null, "category": null, "to_ids": null,
               "last": null, "enforceWarninglist": true, "includeEventTags": true, "limit": 100, "page": 1})
    );
    assert_eq!(found["found"], true);
    assert_eq!(found["count"], 1);
    assert_eq!(found["event_ids"], json!([MISP_EVENT_ID]));
    assert_eq!(found["to_ids"], true);
    assert_eq!(
        found["attributes"][0]["Event"]["info"],
        "Tor exit nodes brute-forcing SSH"
    );
    assert_eq!(found["attributes"][0]["Tag"][0]["name"], "tlp:amber");

    let filtered = connectors
        .execute(mi(
            "search-attributes",
            json!({"value": "%evil%", "type": "domain", "to_ids": true, "last": "30d", "limit": 10}),
        ))
        .await
        .expect("search-attributes");
    let sent = body(&last(&seen));
    assert_eq!(sent["type"], "domain");
    assert_eq!(sent["to_ids"], true);
    assert_eq!(sent["last"], "30d");
    assert_eq!(sent["limit"], 10);
    assert_eq!(filtered["event_ids"], json!(["1398"]));

    let none = connectors
        .execute(mi("search-attributes", json!({"value": "198.51.100.7"})))
        .await
        .expect("search-attributes");
    assert_eq!(
        none,
        json!({"found": false, "count": 0, "event_ids": [], "to_ids": false, "attributes": []})
    );
}

#[tokio::test]
async fn misp_adds_an_event_an_attribute_and_a_sighting() {
    let (addr, seen) = test_support::serve(intel::misp()).await;
    let connectors = misp(addr);

    let event = connectors
        .execute(mi(
            "add-event",
            json!({
                "info": "Brute force from 203.0.113.50",
                "threat_level": 3,
                "tags": ["tlp:amber", "riposte:auto"],
                "attributes": [{"type": "ip-src", "value": "203.0.113.50", "to_ids": true, "comment": "sshd"}]
            }),
        ))
        .await
        .expect("add-event");
    let request = last(&seen);
    assert_eq!(request.uri, "/events/add");
    assert_eq!(header(&request, "authorization"), Some(MISP_KEY));
    assert_eq!(
        body(&request),
        json!({
            "info": "Brute force from 203.0.113.50", "distribution": 0, "threat_level_id": 3, "analysis": 0,
            "published": false, "Tag": [{"name": "tlp:amber"}, {"name": "riposte:auto"}],
            "Attribute": [{"type": "ip-src", "value": "203.0.113.50", "to_ids": true, "comment": "sshd"}]
        })
    );
    assert_eq!(event["event_id"], "1403");
    assert_eq!(event["info"], "Brute force from 203.0.113.50");
    assert_eq!(event["attribute_count"], 1);
    assert_eq!(event["link"], format!("http://{addr}/events/view/1403"));
    assert!(
        event["uuid"].as_str().is_some_and(|u| u.len() == 36),
        "{event}"
    );

    let attribute = connectors
        .execute(mi(
            "add-attribute",
            json!({"event_id": 1403, "type": "domain", "value": "c2.evil.example"}),
        ))
        .await
        .expect("add-attribute");
    let request = last(&seen);
    assert_eq!(request.uri, "/attributes/add/1403");
    assert_eq!(
        body(&request),
        json!({"type": "domain", "value": "c2.evil.example", "category": null, "to_ids": null,
               "comment": "", "distribution": 5})
    );
    assert_eq!(attribute["event_id"], "1403");
    assert_eq!(attribute["type"], "domain");
    assert_eq!(attribute["value"], "c2.evil.example");
    assert_eq!(attribute["category"], "Network activity", "MISP's default");
    assert_eq!(attribute["to_ids"], true);
    assert!(attribute["attribute_id"].is_string(), "{attribute}");

    let sighting = connectors
        .execute(mi(
            "add-sighting",
            json!({"value": TOR_EXIT, "type": "false-positive", "source": "fw-edge-01"}),
        ))
        .await
        .expect("add-sighting");
    let request = last(&seen);
    assert_eq!(request.uri, "/sightings/add");
    assert_eq!(
        body(&request),
        json!({"value": TOR_EXIT, "type": "1", "source": "fw-edge-01"})
    );
    assert_eq!(sighting["attribute_id"], "88213");
    assert_eq!(sighting["event_id"], MISP_EVENT_ID);
    assert!(sighting["sighting_id"].is_string(), "{sighting}");
}

#[tokio::test]
async fn misp_failures() {
    let (addr, _seen) = test_support::serve(intel::misp()).await;
    let connectors = misp(addr);

    // Without `url`, the connector cannot be used, and says which setting is missing.
    let error = catalogue("misp", &[])
        .execute(mi("search-attributes", json!({"value": TOR_EXIT})))
        .await
        .expect_err("an unconfigured MISP fails");
    assert!(
        error.message.contains("connectors.settings.misp.url"),
        "{error:?}"
    );

    let wrong = "Wr0ngMispKeyWr0ngMispKeyWr0ngMispKey0000";
    let error = connectors
        .execute(call(
            "misp",
            "search-attributes",
            json!({"value": TOR_EXIT}),
            &[("misp_key", wrong)],
        ))
        .await
        .expect_err("a wrong key fails");
    assert_unauthorized(&error, wrong);
    assert!(error.message.contains("Authentication failed"), "{error:?}");

    let error = connectors
        .execute(mi(
            "add-attribute",
            json!({"event_id": "9999", "type": "ip-dst", "value": TOR_EXIT}),
        ))
        .await
        .expect_err("an unknown event fails");
    assert_eq!(error.kind, ErrorKind::NotFound, "{error:?}");
    assert!(error.message.contains("Invalid event"), "{error:?}");

    // MISP refuses an invalid attribute with a 403, which the status table reads as
    // `unauthorized`; the message carries MISP's reasons.
    let error = connectors
        .execute(mi(
            "add-attribute",
            json!({"event_id": MISP_EVENT_ID, "type": "ip-dst", "value": "not-an-address"}),
        ))
        .await
        .expect_err("an invalid value fails");
    assert_eq!(error.kind, ErrorKind::Unauthorized, "{error:?}");
    assert!(
        error
            .message
            .contains("Could not add Attribute {\"value\":[\"Value not in the right type/format."),
        "{error:?}"
    );
}

// ----------------------------------------------------------------------------------------------
// Slack
// ----------------------------------------------------------------------------------------------

fn slack(addr: SocketAddr) -> Connectors {
    catalogue(
        "slack",
        &[("base_url", json!(format!("http://{addr}/api")))],
    )
}

fn sl(action: &str, input: Value) -> StepCall {
    call("slack", action, input, &[("slack_bot_token", SLACK_TOKEN)])
}

#[tokio::test]
async fn slack_posts_updates_and_looks_up() {
    let (addr, seen) = test_support::serve(intel::slack()).await;
    let connectors = slack(addr);

    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*Brute force* from `185.220.101.45`"}}]);
    let posted = connectors
        .execute(sl(
            "post-message",
            json!({"channel": "#soc", "text": "Brute force from 185.220.101.45", "blocks": blocks}),
        ))
        .await
        .expect("post-message");
    let request = last(&seen);
    assert_eq!(request.uri, "/api/chat.postMessage");
    assert_eq!(
        header(&request, "authorization"),
        Some(format!("Bearer {SLACK_TOKEN}").as_str())
    );
    assert_eq!(
        body(&request),
        json!({"channel": "#soc", "text": "Brute force from 185.220.101.45", "unfurl_links": false, "blocks": blocks}),
        "`thread_ts` is left out when not given"
    );
    assert_eq!(
        posted,
        json!({"ok": true, "error": null, "channel": SLACK_CHANNEL_ID, "ts": SLACK_TS})
    );

    let reply = connectors
        .execute(sl(
            "post-message",
            json!({"channel": SLACK_CHANNEL_ID, "text": "Banned for 4h.", "thread_ts": SLACK_TS}),
        ))
        .await
        .expect("post-message in a thread");
    assert_eq!(
        body(&last(&seen)),
        json!({"channel": SLACK_CHANNEL_ID, "text": "Banned for 4h.", "unfurl_links": false, "thread_ts": SLACK_TS}),
        "`blocks` is left out when not given"
    );
    assert_eq!(reply["ok"], true);
    assert_ne!(reply["ts"], SLACK_TS);

    let updated = connectors
        .execute(sl(
            "update-message",
            json!({"channel": SLACK_CHANNEL_ID, "ts": SLACK_TS, "text": "Brute force from 185.220.101.45: banned"}),
        ))
        .await
        .expect("update-message");
    let request = last(&seen);
    assert_eq!(request.uri, "/api/chat.update");
    assert_eq!(
        body(&request),
        json!({"channel": SLACK_CHANNEL_ID, "ts": SLACK_TS, "text": "Brute force from 185.220.101.45: banned", "blocks": []})
    );
    assert_eq!(
        updated,
        json!({"ok": true, "error": null, "channel": SLACK_CHANNEL_ID, "ts": SLACK_TS})
    );

    let alice = connectors
        .execute(sl("lookup-user", json!({"email": "alice@example.com"})))
        .await
        .expect("lookup-user");
    let request = last(&seen);
    assert_eq!(path(&request), "/api/users.lookupByEmail");
    assert_eq!(query(&request), pairs(&[("email", "alice@example.com")]));
    assert_eq!(
        header(&request, "authorization"),
        Some(format!("Bearer {SLACK_TOKEN}").as_str())
    );
    assert_eq!(
        alice,
        json!({"ok": true, "error": null, "user_id": "U0G9QF9C6", "name": "alice", "real_name": "Alice Martin",
               "deleted": false, "is_bot": false, "tz": "Europe/Paris"})
    );

    let nobody = connectors
        .execute(sl("lookup-user", json!({"email": "mallory@example.com"})))
        .await
        .expect("users_not_found is an answer");
    assert_eq!(nobody["ok"], false);
    assert_eq!(nobody["error"], "users_not_found");
    assert_eq!(nobody["user_id"], Value::Null);
}

#[tokio::test]
async fn slack_failures_are_outputs_except_rate_limits_and_missing_tokens() {
    let (addr, seen) = test_support::serve(intel::slack()).await;
    let connectors = slack(addr);

    // Slack answers HTTP 200 with `ok: false`: the step succeeds and says so.
    let nowhere = connectors
        .execute(sl(
            "post-message",
            json!({"channel": "#nowhere", "text": "hello"}),
        ))
        .await
        .expect("a refusal in a 200");
    assert_eq!(
        nowhere,
        json!({"ok": false, "error": "channel_not_found", "channel": null, "ts": null})
    );

    let wrong = "xoxb-wrong-token-9999";
    let refused = connectors
        .execute(call(
            "slack",
            "post-message",
            json!({"channel": "#soc", "text": "hello"}),
            &[("slack_bot_token", wrong)],
        ))
        .await
        .expect("invalid_auth comes in a 200");
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"], "invalid_auth");
    assert!(!refused.to_string().contains(wrong));
    assert_eq!(
        header(&last(&seen), "authorization"),
        Some(format!("Bearer {wrong}").as_str())
    );

    let error = connectors
        .execute(sl(
            "post-message",
            json!({"channel": "#busy", "text": "hello"}),
        ))
        .await
        .expect_err("a 429 fails, to be retried");
    assert_eq!(error.kind, ErrorKind::RateLimited, "{error:?}");
    assert_eq!(error.retry_after_ms, Some(7000));
    assert!(error.message.contains("ratelimited"), "{error:?}");

    let before = seen.all().len();
    let error = connectors
        .execute(call(
            "slack",
            "post-message",
            json!({"channel": "#soc", "text": "hello"}),
            &[],
        ))
        .await
        .expect_err("no token, no request");
    assert_eq!(error.kind, ErrorKind::Unauthorized, "{error:?}");
    assert_eq!(seen.all().len(), before);
}

// ----------------------------------------------------------------------------------------------
// Microsoft Teams
// ----------------------------------------------------------------------------------------------

/// The catalogue with the workflow's host allowed (`url` auth: the secret is the URL).
fn teams(addr: SocketAddr) -> Connectors {
    catalogue(
        "teams",
        &[("hosts", json!([format!("127.0.0.1:{}", addr.port())]))],
    )
}

fn tm(addr: SocketAddr, action: &str, input: Value) -> StepCall {
    let url = intel::teams_workflow_url(addr, TEAMS_SIG);
    call(
        "teams",
        action,
        input,
        &[("teams_workflow_url", url.as_str())],
    )
}

#[tokio::test]
async fn teams_posts_cards_to_the_workflow() {
    let cards = TeamsCards::default();
    let (addr, seen) = test_support::serve(intel::teams(cards.clone())).await;
    let connectors = teams(addr);

    let output = connectors
        .execute(tm(
            addr,
            "post-card",
            json!({
                "title": "Brute force from 185.220.101.45",
                "text": "**240** failed SSH logins on `web-01`; the address is banned for 4h.",
                "color": "Attention",
                "facts": [{"title": "Host", "value": "web-01"}, {"title": "Score", "value": "100"}],
                "link_url": "https://riposte.example/runs/run-1",
                "link_title": "Open the run"
            }),
        ))
        .await
        .expect("post-card");
    assert_eq!(output, json!({"accepted": true, "status": 202}));
    let request = last(&seen);
    assert_eq!(path(&request), TEAMS_WORKFLOW_PATH);
    assert_eq!(
        query(&request),
        pairs(&[
            ("api-version", "2016-06-01"),
            ("sp", "/triggers/manual/run"),
            ("sv", "1.0"),
            ("sig", TEAMS_SIG),
        ])
    );
    assert_eq!(header(&request, "authorization"), None);
    let sent = body(&request);
    assert_eq!(sent["type"], "message");
    let attachment = &sent["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(attachment["contentUrl"], Value::Null);
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(
        card["body"],
        json!([
            {"type": "TextBlock", "text": "Brute force from 185.220.101.45", "size": "Medium", "weight": "Bolder",
             "color": "Attention", "wrap": true, "style": "heading"},
            {"type": "TextBlock", "text": "**240** failed SSH logins on `web-01`; the address is banned for 4h.", "wrap": true},
            {"type": "FactSet", "facts": [{"title": "Host", "value": "web-01"}, {"title": "Score", "value": "100"}]}
        ])
    );
    assert_eq!(
        card["actions"],
        json!([{"type": "Action.OpenUrl", "title": "Open the run", "url": "https://riposte.example/runs/run-1"}])
    );

    connectors
        .execute(tm(
            addr,
            "post-card",
            json!({"title": "Run finished", "text": "Nothing to do."}),
        ))
        .await
        .expect("post-card without facts or link");
    let card = &body(&last(&seen))["attachments"][0]["content"];
    assert_eq!(card["body"].as_array().map(Vec::len), Some(2), "no FactSet");
    assert_eq!(card["body"][0]["color"], "Default");
    assert_eq!(card["actions"], json!([]));

    let custom = json!({"type": "AdaptiveCard", "version": "1.5",
                        "body": [{"type": "TextBlock", "text": "Custom"}],
                        "actions": [{"type": "Action.OpenUrl", "title": "Case", "url": "https://riposte.example/cases/7"}]});
    connectors
        .execute(tm(addr, "post-adaptive-card", json!({"card": custom})))
        .await
        .expect("post-adaptive-card");
    let card = &body(&last(&seen))["attachments"][0]["content"];
    assert_eq!(card["body"], custom["body"]);
    assert_eq!(card["actions"], custom["actions"]);
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(cards.all().len(), 3, "the workflow accepted every card");
}

#[tokio::test]
async fn teams_refuses_a_wrong_signature_and_unlisted_hosts() {
    let (addr, seen) = test_support::serve(intel::teams(TeamsCards::default())).await;
    let connectors = teams(addr);
    let wrong_sig = "WrongSignatureWrongSignature0000000000000";
    let url = intel::teams_workflow_url(addr, wrong_sig);
    let error = connectors
        .execute(call(
            "teams",
            "post-card",
            json!({"title": "t", "text": "x"}),
            &[("teams_workflow_url", url.as_str())],
        ))
        .await
        .expect_err("a wrong signature fails");
    assert_unauthorized(&error, wrong_sig);
    assert!(
        error
            .message
            .contains("DirectApiInvalidAuthorizationSignature"),
        "{error:?}"
    );

    // Without `hosts`, the workflow's host (here 127.0.0.1:<port>) is not one the connector may
    // reach: nothing is sent.
    let before = seen.all().len();
    let unlisted = catalogue("teams", &[]);
    let error = unlisted
        .execute(tm(addr, "post-card", json!({"title": "t", "text": "x"})))
        .await
        .expect_err("an unlisted host is refused");
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error:?}");
    assert!(!error.message.contains(TEAMS_SIG), "{error:?}");
    assert_eq!(seen.all().len(), before);
}

// ----------------------------------------------------------------------------------------------

/// The last request the server received.
fn last(recorder: &Recorder) -> Received {
    recorder.all().pop().expect("the server received a request")
}

fn header<'a>(request: &'a Received, name: &str) -> Option<&'a str> {
    request
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
}

fn path(request: &Received) -> &str {
    request
        .uri
        .split_once('?')
        .map_or(request.uri.as_str(), |(path, _)| path)
}

/// The request's query parameters, decoded.
fn query(request: &Received) -> BTreeMap<String, String> {
    form(request.uri.split_once('?').map_or("", |(_, query)| query))
}

/// `application/x-www-form-urlencoded` text, decoded.
fn form(text: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn body(request: &Received) -> Value {
    serde_json::from_str(&request.body).expect("a JSON body")
}

/// A failure for a refused credential, whose message does not hold the credential.
fn assert_unauthorized(error: &StepError, secret: &str) {
    assert_eq!(error.kind, ErrorKind::Unauthorized, "{error:?}");
    assert!(
        !error.message.contains(secret),
        "the secret leaked into the message: {}",
        error.message
    );
}
