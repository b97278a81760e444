//! The console over HTTP, without a browser: sign-in and sessions, the headers every page
//! carries, CSRF and origin checks on every form, roles, escaping of attacker-controlled alert
//! values, and the trail of what people did. The browser tests (`browser.rs`) drive it as a
//! person does.

use std::time::Duration;

use serde_json::json;

use crate::{ADMIN_TOKEN, BACKENDS, OUTSIDER_TOKEN, RESPONDER_TOKEN, Server, VIEWER_TOKEN, run_id};

const ORIGIN: &str = "http://riposte.test";
const HOST: &str = "riposte.test";

/// A playbook whose alerts open cases and wait for approval.
pub(crate) const CASES: &str = r#"
name: brute-force
description: Brute force
trigger: { webhook: alerts, auth: siem }
case:
  key: "{{ trigger.src_ip }}"
  title: "{{ trigger.title }}"
  severity: high
steps:
  - id: enrich
    uses: core/echo
    timeout: 2s
    with: { ip: "{{ trigger.src_ip }}", link: "{{ trigger.link }}" }
    phase: detection_and_analysis
  - id: block
    uses: core/echo
    timeout: 2s
    needs: enrich
    with: { ip: "{{ trigger.src_ip }}" }
    phase: containment
    approval: { approvers: [soc], timeout: 1h }
"#;

/// A signed-in browser, as far as HTTP goes: its session cookie and the CSRF token its pages
/// carry.
struct Signed {
    cookie: String,
    csrf: String,
}

impl Server {
    async fn sign_in(&self, token: &str) -> Signed {
        let body = format!("token={}&next=%2F", token);
        let (status, headers, page) = self
            .request(
                "POST",
                "/sign-in",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("host", HOST),
                    ("origin", ORIGIN),
                ],
                Some(&body),
            )
            .await;
        assert_eq!(status, 303, "{page}");
        let set_cookie = headers
            .get("set-cookie")
            .and_then(|value| value.to_str().ok())
            .expect("a session cookie")
            .to_owned();
        let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
        let (_, _, page) = self.page(&cookie, "/").await;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSRF token in the page")
            .to_owned();
        Signed { cookie, csrf }
    }

    async fn page(&self, cookie: &str, path: &str) -> (u16, http::HeaderMap, String) {
        self.request("GET", path, &[("cookie", cookie), ("host", HOST)], None)
            .await
    }

    /// Posts a console form with the session's cookie, from `origin`.
    async fn form(
        &self,
        signed: &Signed,
        path: &str,
        fields: &str,
        origin: &str,
    ) -> (u16, http::HeaderMap, String) {
        self.request(
            "POST",
            path,
            &[
                ("cookie", &signed.cookie),
                ("content-type", "application/x-www-form-urlencoded"),
                ("host", HOST),
                ("origin", origin),
            ],
            Some(fields),
        )
        .await
    }

    async fn case_opened_by(&self, run: &str) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(case) = self.store.case_of_run(run).await.expect("case") {
                return case;
            }
            assert!(tokio::time::Instant::now() < deadline, "no case for {run}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_a_token_and_every_page_is_locked_down() {
    let server = Server::in_process(crate::Backend::Sqlite, &[("cases.yaml", CASES.into())]).await;
    let (status, headers, _) = server.request("GET", "/runs", &[], None).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/sign-in?next=%2Fruns");

    let (status, _, page) = server
        .request(
            "POST",
            "/sign-in",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("host", HOST),
                ("origin", ORIGIN),
            ],
            Some("token=rpt_not-a-token"),
        )
        .await;
    assert_eq!(status, 401);
    assert!(page.contains("That token is not valid here."));
    let (status, _, _) = server
        .request(
            "POST",
            "/sign-in",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("host", HOST),
                ("origin", "http://evil.example.com"),
            ],
            Some(&format!("token={VIEWER_TOKEN}")),
        )
        .await;
    assert_eq!(status, 403, "a sign-in posted from another site");

    let (status, headers, _) = server
        .request(
            "POST",
            "/sign-in",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("host", HOST),
                ("origin", ORIGIN),
                ("x-forwarded-proto", "https"),
            ],
            Some(&format!("token={VIEWER_TOKEN}&next=%2F%2Fevil.example.com")),
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        headers["location"], "/",
        "only paths of the console are followed"
    );
    let cookie = headers["set-cookie"].to_str().expect("text");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }

    let viewer = server.sign_in(VIEWER_TOKEN).await;
    for path in ["/", "/runs", "/approvals", "/playbooks", "/audit"] {
        let (status, headers, page) = server.page(&viewer.cookie, path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let policy = headers["content-security-policy"].to_str().expect("text");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(!page.contains("<script>"), "{path}: no inline script");
        assert!(!page.contains(" style="), "{path}: no inline style");
        assert!(!has_inline_handler(&page), "{path}: no inline handlers");
    }

    // Signing out ends the session on the server, not only in the browser.
    let (status, _, _) = server
        .form(
            &viewer,
            "/sign-out",
            &format!("csrf={}", viewer.csrf),
            ORIGIN,
        )
        .await;
    assert_eq!(status, 303);
    let (status, _, _) = server.page(&viewer.cookie, "/").await;
    assert_eq!(status, 303, "the old cookie opens nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_needs_the_session_token_and_this_origin_and_the_role_it_changes() {
    for backend in BACKENDS {
        let server = Server::in_process(backend, &[("cases.yaml", CASES.into())]).await;
        let body = json!({ "src_ip": "203.0.113.5", "title": "Brute force", "link": "x" });
        let (status, answer) = server.post_signed("alerts", &body.to_string(), &[]).await;
        assert_eq!(status, 202, "{answer}");
        let run = run_id(&answer);
        let case = server.case_opened_by(&run).await;
        let note = |csrf: &str| format!("csrf={csrf}&text=seen");
        let path = format!("/cases/{case}/notes");

        let responder = server.sign_in(RESPONDER_TOKEN).await;
        let (status, _, _) = server.form(&responder, &path, &note("wrong"), ORIGIN).await;
        assert_eq!(status, 403, "{backend:?}: a wrong CSRF token");
        let (status, _, _) = server
            .form(
                &responder,
                &path,
                &note(&responder.csrf),
                "http://evil.example.com",
            )
            .await;
        assert_eq!(status, 403, "{backend:?}: another origin");
        let (status, _, _) = server
            .request(
                "POST",
                &path,
                &[
                    ("cookie", &responder.cookie),
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("host", HOST),
                ],
                Some(&note(&responder.csrf)),
            )
            .await;
        assert_eq!(status, 403, "{backend:?}: neither Origin nor Referer");

        let viewer = server.sign_in(VIEWER_TOKEN).await;
        let (status, _, page) = server
            .form(&viewer, &path, &note(&viewer.csrf), ORIGIN)
            .await;
        assert_eq!(
            status, 403,
            "{backend:?}: a viewer cannot change a case: {page}"
        );
        let (status, _, page) = server
            .form(
                &viewer,
                "/playbooks/reload",
                &format!("csrf={}", viewer.csrf),
                ORIGIN,
            )
            .await;
        assert_eq!(status, 403, "{backend:?}: {page}");

        let (status, headers, _) = server
            .form(&responder, &path, &note(&responder.csrf), ORIGIN)
            .await;
        assert_eq!(status, 303, "{backend:?}");
        assert_eq!(headers["location"], format!("/cases/{case}?done=noted"));
        let (status, _, page) = server
            .page(&responder.cookie, &format!("/cases/{case}?done=noted"))
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("Note added."), "{page}");
        assert!(page.contains(">seen<"), "{page}");

        // The approval is decided in the console; the trail has who did what there.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, _, page) = server.page(&responder.cookie, "/approvals").await;
            if page.contains(&format!("/runs/{run}/steps/block/approve")) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{page}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // A responder the step does not name sees the step, not the buttons, and is refused.
        let outsider = server.sign_in(OUTSIDER_TOKEN).await;
        let (_, _, page) = server.page(&outsider.cookie, "/approvals").await;
        assert!(!page.contains("/steps/block/approve"), "{page}");
        assert!(page.contains("You (intern) are not among them."), "{page}");
        let (status, _, page) = server
            .form(
                &outsider,
                &format!("/runs/{run}/steps/block/approve"),
                &format!("csrf={}", outsider.csrf),
                ORIGIN,
            )
            .await;
        assert_eq!(status, 403, "{backend:?}: {page}");
        assert!(page.contains("may be decided by soc"), "{page}");

        let (status, _, page) = server
            .form(
                &responder,
                &format!("/runs/{run}/steps/block/approve"),
                &format!("csrf={}&note=go", responder.csrf),
                ORIGIN,
            )
            .await;
        assert_eq!(status, 303, "{backend:?}: {page}");
        server.finished(&run, Duration::from_secs(10)).await;

        let admin = server.sign_in(ADMIN_TOKEN).await;
        let (status, _, page) = server
            .form(
                &admin,
                "/audit/verify",
                &format!("csrf={}", admin.csrf),
                ORIGIN,
            )
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("Intact"), "{page}");
        let trail: Vec<serde_json::Value> = server
            .store
            .trail_tail(100)
            .await
            .expect("trail")
            .iter()
            .map(|record| serde_json::from_str(&record.event).expect("JSON"))
            .collect();
        for (actor, path, status) in [
            ("oncall", path.as_str(), 303),
            ("viewer", path.as_str(), 403),
            ("oncall", &format!("/runs/{run}/steps/block/approve"), 303),
            ("oncall", "/sign-in", 303),
        ] {
            assert!(
                trail.iter().any(|entry| entry["actor"] == actor
                    && entry["path"] == path
                    && entry["status"] == status),
                "{backend:?}: {actor} {path} {status} in {trail:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_values_are_only_ever_text() {
    let server = Server::in_process(crate::Backend::Sqlite, &[("cases.yaml", CASES.into())]).await;
    let hostile = json!({
        "src_ip": "198.51.100.66",
        "title": "<script>window.__pwned = 1</script><img src=x onerror=alert(1)>",
        "link": "javascript:alert(document.cookie)",
    });
    let (status, answer) = server
        .post_signed("alerts", &hostile.to_string(), &[])
        .await;
    assert_eq!(status, 202, "{answer}");
    let run = run_id(&answer);
    let case = server.case_opened_by(&run).await;
    let viewer = server.sign_in(VIEWER_TOKEN).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in [
        "/".to_owned(),
        format!("/cases/{case}"),
        format!("/runs/{run}"),
        "/approvals".to_owned(),
    ] {
        let (status, _, page) = server.page(&viewer.cookie, &path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!page.contains("<script>window"), "{path}: {page}");
        assert!(!page.contains("<img src=x"), "{path}");
        assert!(!page.contains("href=\"javascript:"), "{path}");
        if path.starts_with("/cases/") || path == "/" {
            assert!(
                page.contains("&lt;script&gt;window.__pwned = 1&lt;/script&gt;"),
                "{path}: the title shows as text"
            );
        }
    }
}

/// Whether the page has an attribute like ` onclick=`.
fn has_inline_handler(page: &str) -> bool {
    page.match_indices(" on").any(|(at, _)| {
        let rest = &page[at + 3..];
        let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    })
}
