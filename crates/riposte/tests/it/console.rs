//! The README's quick start in a real browser: `riposte serve` on the quick start's own
//! configuration and playbooks, the README's alert sent over HTTP, then Debian's Chromium signs in
//! to the console, finds the case, approves the containment step, watches the run finish without
//! reloading, and downloads the post-incident report. Alerts are attacker-controlled, so a second
//! test sends one full of markup and proves none of it runs.
//!
//! `UPDATE_SCREENSHOTS=1` also saves the main pages to `docs/console/` for the README.

use std::process::Child;
use std::time::{Duration, Instant};

use test_support::browser::{Browser, Element};
use test_support::process::Launcher;
use test_support::{free_port, workspace_root};

const WEBHOOK_TOKEN: &str = "quickstart-webhook-token-in-a-browser";
const API_TOKEN: &str = "rpt_quickstart-admin-token-in-a-browser-0c1d";
/// The alert the README sends.
const README_ALERT: &str =
    r#"{"rule": "ssh-brute-force", "ip": "185.220.101.45", "severity": "high"}"#;
/// Patient enough for a loaded CI machine; a passing test takes a fraction of it.
const WITHIN: Duration = Duration::from_secs(30);

/// `riposte serve` as `scripts/serve` starts it: the quick start's configuration file and
/// playbooks, credentials in the environment, the embedded SQLite store.
struct QuickStart {
    launcher: Launcher,
    process: Child,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl QuickStart {
    async fn start() -> QuickStart {
        let root = workspace_root();
        let dir = tempfile::tempdir().expect("temp dir");
        // The quick start's file, with its paths (relative to config/) made to fit here.
        let config = std::fs::read_to_string(root.join("config/riposte.yaml")).expect("config");
        for line in [
            "playbooks: ../playbooks\n",
            "data_dir: ../.riposte\n",
            "  path: ../connectors\n",
        ] {
            assert!(config.contains(line), "config/riposte.yaml lost `{line}`");
        }
        let config = config
            .replace(
                "playbooks: ../playbooks\n",
                &format!("playbooks: {}\n", root.join("playbooks").display()),
            )
            .replace("data_dir: ../.riposte\n", "data_dir: data\n")
            .replace(
                "  path: ../connectors\n",
                &format!("  path: {}\n", root.join("connectors").display()),
            );
        std::fs::write(dir.path().join("riposte.yaml"), config).expect("write config");
        let hash = server::tokens::token_hash(API_TOKEN);
        let env = [
            ("RIPOSTE_QUICKSTART_TOKEN", WEBHOOK_TOKEN.to_owned()),
            ("RIPOSTE_ELASTIC_TOKEN", "elastic-token-unused-here".into()),
            (
                "RIPOSTE_SPLUNK_URL_TOKEN",
                "splunk-url-token-unused-here".into(),
            ),
            ("RIPOSTE_WAZUH_TOKEN", "wazuh-token-unused-here".into()),
            (
                "RIPOSTE_MAIL_GATEWAY_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            ),
            ("RIPOSTE_API_TOKEN_QUICKSTART", format!("admin:{hash}")),
            (
                "RIPOSTE_PLUGINS",
                test_support::plugin_dir().display().to_string(),
            ),
        ];
        let launcher = Launcher {
            binary: env!("CARGO_BIN_EXE_riposte").into(),
            dir: dir.path().to_owned(),
            env: env
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
            port: free_port(),
        };
        let process = launcher.spawn("serve", 4);
        if let Err(problem) = launcher.wait_ready(Duration::from_secs(120)).await {
            panic!("the quick start never got ready: {problem}");
        }
        QuickStart {
            launcher,
            process,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.launcher.base())
    }

    /// Sends an alert as the README's curl does; returns the new run's id.
    async fn alert(&self, body: &str) -> String {
        let response = self
            .client
            .post(self.url("/hooks/hello"))
            .bearer_auth(WEBHOOK_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .timeout(WITHIN)
            .send()
            .await
            .expect("send the alert");
        assert_eq!(response.status(), 202, "{}", self.launcher.logs());
        let answer: serde_json::Value = response.json().await.expect("json");
        assert_eq!(answer["status"], "accepted", "{answer}");
        answer["runs"][0]["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no run id in {answer}"))
            .to_owned()
    }
}

impl Drop for QuickStart {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Signs in on the page the console sends a stranger to.
async fn sign_in(browser: &Browser, quick_start: &QuickStart) {
    browser.goto(&quick_start.url("/")).await.expect("open /");
    let token = browser.find("#token").await.expect("sign-in page");
    browser
        .type_into(&token, API_TOKEN)
        .await
        .expect("type the token");
    let submit = browser
        .find("form[action='/sign-in'] button[type='submit']")
        .await
        .expect("sign-in button");
    browser.click(&submit).await.expect("sign in");
    wait_for_text(browser, "header .who", "quickstart · admin").await;
}

/// Waits until the text of the element `css` selects contains `expected`; panics with what it
/// shows instead.
async fn wait_for_text(browser: &Browser, css: &str, expected: &str) -> Element {
    let deadline = Instant::now() + WITHIN;
    loop {
        let shown = match browser.find(css).await {
            Ok(element) => match browser.text(&element).await {
                Ok(text) if text.contains(expected) => return element,
                Ok(text) => text,
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            let url = browser.current_url().await;
            panic!("`{css}` never showed {expected:?} on {url:?}; it shows: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element `css` selects.
async fn click(browser: &Browser, css: &str) {
    let element = browser
        .find(css)
        .await
        .unwrap_or_else(|error| panic!("`{css}`: {error}"));
    browser
        .click(&element)
        .await
        .unwrap_or_else(|error| panic!("clicking `{css}`: {error}"));
}

/// Waits until the page's main text, shown or folded away in `<details>`, contains `expected`.
async fn wait_for_content(browser: &Browser, expected: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let content = script(
            browser,
            "return document.querySelector('main').textContent;",
        )
        .await;
        let content = content.as_str().unwrap_or_default();
        if content.contains(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never held {expected:?}; it holds: {content}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves the page to `docs/console/<name>.png` when asked to.
async fn screenshot(browser: &Browser, name: &str) {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_none() {
        return;
    }
    let folder = workspace_root().join("docs/console");
    std::fs::create_dir_all(&folder).expect("docs/console");
    browser
        .screenshot(&folder.join(format!("{name}.png")))
        .await
        .expect("screenshot");
}

async fn script(browser: &Browser, source: &str) -> serde_json::Value {
    browser.execute(source).await.expect("script")
}

#[tokio::test]
async fn a_new_user_follows_the_quick_start_to_a_report_in_the_console() {
    let quick_start = QuickStart::start().await;
    let run = quick_start.alert(README_ALERT).await;
    let browser = Browser::start().await;
    sign_in(&browser, &quick_start).await;

    // The cases page lists the case the alert opened; its page shows the run waiting.
    wait_for_text(
        &browser,
        "#cases",
        "ssh-brute-force from 185[.]220[.]101[.]45",
    )
    .await;
    screenshot(&browser, "cases").await;
    click(&browser, "#cases a[href^='/cases/']").await;
    let case_url = browser.current_url().await.expect("url");
    wait_for_text(&browser, "#alerts", "waiting for approval").await;
    wait_for_text(
        &browser,
        ".phasebar [aria-current='step']",
        "Detection and analysis",
    )
    .await;
    wait_for_text(&browser, "#observables", "185.220.101.45").await;
    screenshot(&browser, "case").await;
    // Marks this page: a reload would lose it, so it proves the updates below came live.
    script(&browser, "window.__sameCasePage = true; return null;").await;

    // Another window, as a colleague would: the approvals inbox, and approve.
    let case_window = browser.window().await.expect("window");
    let inbox_window = browser.new_window().await.expect("new window");
    browser
        .switch_to_window(&inbox_window)
        .await
        .expect("switch");
    browser
        .goto(&quick_start.url("/approvals"))
        .await
        .expect("inbox");
    let inbox = wait_for_text(&browser, "#inbox", "step contain").await;
    let text = browser.text(&inbox).await.expect("text");
    assert!(
        text.contains("Block 185[.]220[.]101[.]45? ssh-brute-force"),
        "the approval's message: {text}"
    );
    screenshot(&browser, "approvals").await;
    click(
        &browser,
        &format!("form[action='/runs/{run}/steps/contain/approve'] button.approve"),
    )
    .await;
    // The console goes to the run, which finishes.
    wait_for_text(&browser, "[role='status']", "Approved").await;
    wait_for_text(&browser, "#run-status", "succeeded").await;
    wait_for_text(
        &browser,
        "#step-contain .decision",
        "Approved by quickstart",
    )
    .await;
    // What no longer applies went with the live update: a run that ended cannot be cancelled.
    assert!(
        browser.find("form[action$='/cancel']").await.is_err(),
        "the ended run still offers to cancel it"
    );
    screenshot(&browser, "run").await;

    // Back on the case page, untouched: the run and the phase changed under the reader's eyes.
    browser
        .switch_to_window(&case_window)
        .await
        .expect("switch back");
    wait_for_text(&browser, "#alerts", "succeeded").await;
    wait_for_text(&browser, ".phasebar [aria-current='step']", "Containment").await;
    assert_eq!(
        script(&browser, "return window.__sameCasePage === true;").await,
        serde_json::json!(true),
        "the case page was reloaded instead of updated in place"
    );
    assert_eq!(browser.current_url().await.expect("url"), case_url);

    // The post-incident report, downloaded as a user does.
    click(&browser, "#report-md").await;
    let case = case_url
        .rsplit('/')
        .next()
        .expect("case id")
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let report = browser
        .downloaded(&format!("case-{case}-report.md"), WITHIN)
        .await;
    for expected in [
        // Markdown's own characters in alert values are escaped.
        "# Case 1: ssh-brute-force from 185\\[.\\]220\\[.\\]101\\[.\\]45",
        "| Phase | Containment |",
        "| Key | `185.220.101.45` |",
        "| Containment | contain | core/echo |",
        "by quickstart",
        "case chain intact",
    ] {
        assert!(
            report.contains(expected),
            "the report lacks {expected:?}:\n{report}"
        );
    }

    browser
        .goto(&quick_start.url("/audit"))
        .await
        .expect("audit");
    click(&browser, "#verify").await;
    wait_for_text(&browser, "#verified", "Intact: the trail's").await;
    wait_for_text(&browser, "#verified", "1 case(s)").await;
    screenshot(&browser, "audit").await;
    browser.quit().await;
}

#[tokio::test]
async fn markup_in_an_alert_stays_text_in_a_real_browser() {
    let quick_start = QuickStart::start().await;
    let hostile = serde_json::json!({
        "rule": "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">",
        "ip": "203.0.113.66",
        // High, from a public address: the run waits for approval, so the inbox shows it too.
        "severity": "high",
        "user": "<b onmouseover=\"window.__pwned = 6\">root</b>",
        "link": "javascript:window.__pwned = 3",
        "details": { "html": "<a href=\"javascript:window.__pwned = 4\">click</a><svg onload=\"window.__pwned = 5\">" },
    });
    let run = quick_start.alert(&hostile.to_string()).await;
    let browser = Browser::start().await;
    sign_in(&browser, &quick_start).await;
    wait_for_text(&browser, "#cases", "<script>window.__pwned = 1</script>").await;
    let case_link = browser
        .find("#cases a[href^='/cases/']")
        .await
        .expect("case link");
    let case_href = browser
        .attribute(&case_link, "href")
        .await
        .expect("href")
        .expect("an href");

    // Every page that shows the alert's values (the runs list shows none of them).
    for (path, shows_the_alert) in [
        ("/".to_owned(), true),
        (case_href.clone(), true),
        ("/runs".to_owned(), false),
        ("/approvals".to_owned(), true),
        (format!("/runs/{run}"), true),
    ] {
        browser.goto(&quick_start.url(&path)).await.expect("page");
        if shows_the_alert {
            wait_for_content(&browser, "window.__pwned = 1").await;
        }
        let page = script(
            &browser,
            "return {
                pwned: typeof window.__pwned,
                scripts: document.querySelectorAll('main script').length,
                images: document.querySelectorAll('main img, main svg').length,
                handlers: document.querySelectorAll('main [onerror], main [onload], main [onmouseover]').length,
                javascript_links: Array.from(document.querySelectorAll('a[href]'))
                    .filter(a => a.href.trim().toLowerCase().startsWith('javascript:')).length
            };",
        )
        .await;
        assert_eq!(
            page,
            serde_json::json!({
                "pwned": "undefined",
                "scripts": 0,
                "images": 0,
                "handlers": 0,
                "javascript_links": 0
            }),
            "{path}"
        );
    }
    // The run's page holds the alert as the sender wrote it, as text.
    for literal in [
        "onerror=\\\"window.__pwned = 2\\\"",
        "javascript:window.__pwned = 3",
        "<svg onload=\\\"window.__pwned = 5\\\">",
    ] {
        wait_for_content(&browser, literal).await;
    }
    browser.quit().await;
}
