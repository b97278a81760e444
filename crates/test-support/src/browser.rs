//! A real browser for the console's tests: Debian's `chromium`, headless, driven by Debian's
//! `chromedriver` on a free loopback port (`scripts/test` installs both), through the W3C
//! WebDriver protocol. Each browser has a profile folder of its own, thrown away with it, and
//! downloads into [`Browser::downloads`] without asking.
//!
//! The client is the dozen WebDriver commands the tests use, over reqwest. thirtyfour was
//! tried first: it switches on serde_json's `preserve_order` feature, which Cargo then unifies
//! into every crate of the workspace, so the tests would have run with another JSON map order
//! than the binary ships with (the JSON Schema golden test caught it).

use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key W3C WebDriver names an element reference by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// What the driver refused, in its words (`no such element: …`).
#[derive(Debug, Clone)]
pub struct WebDriverError(String);

impl fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WebDriverError {}

type Result<T> = std::result::Result<T, WebDriverError>;

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A headless Chromium and the `chromedriver` that drives it; both are killed when dropped
/// ([`Browser::quit`] ends the session cleanly first).
pub struct Browser {
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    chromedriver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` and a browser session, or panics saying what is missing.
    pub async fn start() -> Browser {
        let port = crate::free_port();
        let chromedriver = Command::new(program("chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that dropping the browser kills Chromium with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start chromedriver ({error}): scripts/test installs chromium-driver")
            });
        let profile = tempfile::tempdir().expect("a profile folder");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a client");
        let driver = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            client,
            session: String::new(),
            chromedriver,
            profile,
        };
        browser.wait_for_driver(&driver).await;
        let downloads = browser.downloads();
        std::fs::create_dir_all(&downloads).expect("downloads folder");
        let mut options = json!({
            "args": [
                "--headless=new",
                // Tests run as root in a container: Chromium's sandbox needs user namespaces.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--window-size=1280,900",
                format!("--user-data-dir={}", browser.profile.path().display()),
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
            },
        });
        let chromium = program("chromium");
        if chromium.is_absolute() {
            options["binary"] = json!(chromium);
        }
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": options },
            },
        });
        let answer = browser
            .send(
                reqwest::Method::POST,
                &format!("{driver}/session"),
                Some(capabilities),
            )
            .await
            .unwrap_or_else(|error| panic!("chromedriver could not start chromium: {error}"));
        let id = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {answer}"));
        browser.session = format!("{driver}/session/{id}");
        browser
    }

    /// Where the browser saves downloads.
    pub fn downloads(&self) -> PathBuf {
        self.profile.path().join("downloads")
    }

    /// Waits until a download named `name` has finished, and returns its content.
    pub async fn downloaded(&self, name: &str, within: Duration) -> String {
        let path = self.downloads().join(name);
        let deadline = Instant::now() + within;
        loop {
            // Chromium writes `<name>.crdownload` and renames it when done.
            if let Ok(content) = std::fs::read_to_string(&path) {
                return content;
            }
            if Instant::now() >= deadline {
                let present: Vec<_> = std::fs::read_dir(self.downloads())
                    .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
                    .unwrap_or_default();
                panic!("{name} was not downloaded within {within:?}; the folder has {present:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await
            .map(drop)
    }

    pub async fn current_url(&self) -> Result<String> {
        let url = self.get("/url").await?;
        Ok(url.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        found[ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .ok_or_else(|| WebDriverError(format!("no element reference in {found}")))
    }

    /// The element's text as rendered (what is folded away in a closed `<details>` is not).
    pub async fn text(&self, element: &Element) -> Result<String> {
        let text = self.get(&format!("/element/{}/text", element.0)).await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Result<Option<String>> {
        let value = self
            .get(&format!("/element/{}/attribute/{name}", element.0))
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    pub async fn click(&self, element: &Element) -> Result<()> {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            json!({}),
        )
        .await
        .map(drop)
    }

    /// Types `text` into the element, as keystrokes.
    pub async fn type_into(&self, element: &Element, text: &str) -> Result<()> {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await
        .map(drop)
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn execute(&self, script: &str) -> Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The current window's handle.
    pub async fn window(&self) -> Result<String> {
        let handle = self.get("/window").await?;
        Ok(handle.as_str().unwrap_or_default().to_owned())
    }

    /// Opens a new window (not a tab: a background tab's page is hidden and stops polling).
    pub async fn new_window(&self) -> Result<String> {
        let window = self
            .command(
                reqwest::Method::POST,
                "/window/new",
                json!({ "type": "window" }),
            )
            .await?;
        Ok(window["handle"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn switch_to_window(&self, handle: &str) -> Result<()> {
        self.command(
            reqwest::Method::POST,
            "/window",
            json!({ "handle": handle }),
        )
        .await
        .map(drop)
    }

    /// Saves what the window shows as a PNG.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let encoded = self.get("/screenshot").await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|error| WebDriverError(format!("the screenshot is not base64: {error}")))?;
        std::fs::write(path, png)
            .map_err(|error| WebDriverError(format!("cannot write {}: {error}", path.display())))
    }

    /// Ends the session (closing Chromium); the driver is stopped when dropped.
    pub async fn quit(self) {
        let _ = self
            .send(reqwest::Method::DELETE, &self.session, None)
            .await;
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(
            reqwest::Method::GET,
            &format!("{}{path}", self.session),
            None,
        )
        .await
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        self.send(method, &format!("{}{path}", self.session), Some(body))
            .await
    }

    /// One WebDriver command: its `value`, or the driver's error and message.
    async fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Result<Value> {
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| WebDriverError(format!("chromedriver did not answer: {error}")))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|error| WebDriverError(format!("chromedriver answered no JSON: {error}")))?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        match status.is_success() {
            true => Ok(value),
            false => Err(WebDriverError(format!(
                "{}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"].as_str().unwrap_or_default()
            ))),
        }
    }

    async fn wait_for_driver(&self, driver: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self.client.get(format!("{driver}/status")).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {driver} within 30s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killing the process group ends Chromium too, also when a failed test never quit.
        let group = format!("-{}", self.chromedriver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.chromedriver.wait();
    }
}

/// A Debian program by name: from `PATH`, else where Debian puts it.
fn program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| Path::new("/usr/bin").join(name))
}
