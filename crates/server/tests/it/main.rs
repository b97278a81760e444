//! The server end to end: a real HTTP server on loopback, a real store (a `redis-server` started
//! for the test, or a SQLite file), the real WebAssembly plugins, and loopback servers that speak
//! the APIs the plugins call.

mod api;
mod calls;
mod canary;
mod cases;
mod console;
mod ingress;
mod limits;
mod runs;
mod senders;
mod slack;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use runner::{RunEvent, RunState, RunStatus};
use server::{CancellationToken, Config, Parts};
use sha2::Sha256;
use test_support::RedisServer;

pub(crate) const SIEM_SECRET: &str = "siem-signing-secret-9d2c";
pub(crate) const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const BEARER_TOKEN: &str = "bearer-token-4be1";
/// The `splunk` profile's URL tokens: the current one and the next (a rotation).
pub(crate) const URL_TOKEN: &str = "splunk-url-token-1f6c0d2b9e7a44c1";
pub(crate) const NEXT_URL_TOKEN: &str = "splunk-url-token-next-8b3e5a7c0d91";
/// Management API tokens, one per role (configured by their hashes only).
pub(crate) const VIEWER_TOKEN: &str = "rpt_viewer-token-for-tests-5b0c";
pub(crate) const RESPONDER_TOKEN: &str = "rpt_responder-token-for-tests-77e1";
pub(crate) const ADMIN_TOKEN: &str = "rpt_admin-token-for-tests-c3a9";
/// A responder outside the `soc` group that the test playbooks' approvals name.
pub(crate) const OUTSIDER_TOKEN: &str = "rpt_intern-token-for-tests-91d4";
/// The one browser origin allowed to call the API.
pub(crate) const SOC_ORIGIN: &str = "https://soc.example.com";

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Redis,
    Sqlite,
}

pub(crate) const BACKENDS: [Backend; 2] = [Backend::Redis, Backend::Sqlite];

/// How a test server is set up, beyond its playbooks.
struct Options<'a> {
    /// Workers in the process (0: API only).
    workers: usize,
    /// More (or other) environment variables.
    env: &'a [(&'a str, &'a str)],
    /// YAML appended to the configuration file.
    config: &'a str,
    /// YAML lines added under `auth:` (indented by two spaces).
    auth: &'a str,
    /// How long a worker keeps a run it stopped renewing (and longer than any step's timeout).
    lease: &'a str,
    /// Served on loopback (else its router is called directly).
    listening: bool,
    /// With the real plugins.
    plugins: bool,
    /// Answers the plugin steps in their place (the plugins are still installed, so that the
    /// playbooks load).
    executor: Option<Arc<dyn runner::StepExecutor>>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            workers: 8,
            env: &[],
            config: "",
            auth: "",
            lease: "5s",
            listening: false,
            plugins: false,
            executor: None,
        }
    }
}

/// A running server and what it stands on; stopped when dropped. Started in full (HTTP on
/// loopback, the real plugins) or in process (its router called directly, no plugins: fast).
pub(crate) struct Server {
    pub(crate) base: String,
    /// Set in process: requests go straight to the router.
    router: Option<axum::Router>,
    pub(crate) store: Arc<dyn store::Store>,
    /// Cancels, decides and resumes runs, as the API and the CLI do.
    pub(crate) control: server::RunControl,
    /// What the webhooks and the worker in it share: accepts in flight, advances under way.
    pub(crate) api_first: Arc<server::api_first::ApiFirst>,
    pub(crate) client: reqwest::Client,
    pub(crate) config: Config,
    /// The folder the server loads playbooks from.
    pub(crate) playbooks: std::path::PathBuf,
    /// Where it keeps its files (the SQLite store, compiled plugins).
    pub(crate) data: std::path::PathBuf,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), server::Error>>>,
    pub(crate) redis: Option<RedisServer>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `riposte serve` in-process with these playbooks (file name, YAML).
    pub(crate) async fn start(backend: Backend, playbooks: &[(&str, String)]) -> Server {
        Server::start_with(backend, playbooks, 8).await
    }

    /// The same with `workers` workers in the process (0: API only).
    pub(crate) async fn start_with(
        backend: Backend,
        playbooks: &[(&str, String)],
        workers: usize,
    ) -> Server {
        Server::start_with_env(backend, playbooks, workers, &[]).await
    }

    /// The same, serving on loopback with its workers in the process (`riposte serve`), with a
    /// test's `executor` answering the plugin steps.
    pub(crate) async fn serving_with_executor(
        backend: Backend,
        playbooks: &[(&str, String)],
        executor: Arc<dyn runner::StepExecutor>,
    ) -> Server {
        let options = Options {
            listening: true,
            plugins: true,
            executor: Some(executor),
            ..Options::default()
        };
        Server::open(backend, playbooks, options).await
    }

    /// The same with more (or other) environment variables.
    pub(crate) async fn start_with_env(
        backend: Backend,
        playbooks: &[(&str, String)],
        workers: usize,
        extra_env: &[(&str, &str)],
    ) -> Server {
        Server::start_with_options(backend, playbooks, workers, extra_env, "").await
    }

    /// The same with more configuration (YAML appended to the file).
    pub(crate) async fn start_with_options(
        backend: Backend,
        playbooks: &[(&str, String)],
        workers: usize,
        extra_env: &[(&str, &str)],
        extra_config: &str,
    ) -> Server {
        let options = Options {
            workers,
            env: extra_env,
            config: extra_config,
            listening: true,
            plugins: true,
            ..Options::default()
        };
        Server::open(backend, playbooks, options).await
    }

    /// A server on loopback without the plugins (its playbooks use `core/echo`), for senders
    /// that post to it over the network.
    pub(crate) async fn listening(
        backend: Backend,
        playbooks: &[(&str, String)],
        extra_env: &[(&str, &str)],
        extra_config: &str,
    ) -> Server {
        let options = Options {
            env: extra_env,
            config: extra_config,
            listening: true,
            ..Options::default()
        };
        Server::open(backend, playbooks, options).await
    }

    /// A server whose router is called directly, with workers but without the plugins (its
    /// playbooks use `core/echo`) or a listener: most API behaviour, in a fraction of the time.
    pub(crate) async fn in_process(backend: Backend, playbooks: &[(&str, String)]) -> Server {
        Server::open(backend, playbooks, Options::default()).await
    }

    /// The same with authentication profiles of its own (YAML lines under `auth:`) and the
    /// environment variables that hold their secrets.
    pub(crate) async fn in_process_with_auth(
        backend: Backend,
        playbooks: &[(&str, String)],
        auth: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let options = Options {
            env,
            auth,
            lease: "2m",
            ..Options::default()
        };
        Server::open(backend, playbooks, options).await
    }

    /// A server in process whose plugin steps `executor` answers.
    pub(crate) async fn in_process_with_executor(
        backend: Backend,
        playbooks: &[(&str, String)],
        executor: Arc<dyn runner::StepExecutor>,
    ) -> Server {
        let options = Options {
            plugins: true,
            executor: Some(executor),
            ..Options::default()
        };
        Server::open(backend, playbooks, options).await
    }

    async fn open(backend: Backend, playbooks: &[(&str, String)], options: Options<'_>) -> Server {
        let Options {
            workers,
            env: extra_env,
            config: extra_config,
            auth: extra_auth,
            lease,
            listening,
            plugins,
            executor,
        } = options;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("playbooks")).expect("playbooks dir");
        for (name, yaml) in playbooks {
            std::fs::write(dir.path().join("playbooks").join(name), yaml).expect("playbook");
        }
        let mut env = BTreeMap::from([
            ("SIEM_SECRET".to_owned(), SIEM_SECRET.to_owned()),
            ("SVIX_SECRET".to_owned(), SVIX_SECRET.to_owned()),
            ("BEARER_TOKEN".to_owned(), BEARER_TOKEN.to_owned()),
            ("SPLUNK_URL_TOKEN".to_owned(), URL_TOKEN.to_owned()),
            (
                "SPLUNK_URL_TOKEN_NEXT".to_owned(),
                NEXT_URL_TOKEN.to_owned(),
            ),
            (
                "RIPOSTE_SECRET_ABUSEIPDB_KEY".to_owned(),
                test_support::apis::ABUSEIPDB_KEY.to_owned(),
            ),
            (
                "RIPOSTE_SECRET_SLACK_BOT_TOKEN".to_owned(),
                test_support::apis::SLACK_TOKEN.to_owned(),
            ),
        ]);
        env.extend(
            extra_env
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        for (name, role, token, groups) in [
            ("VIEWER", "viewer", VIEWER_TOKEN, ""),
            ("ONCALL", "responder", RESPONDER_TOKEN, ":soc"),
            ("INTERN", "responder", OUTSIDER_TOKEN, ":helpdesk"),
            ("ADMIN", "admin", ADMIN_TOKEN, ""),
        ] {
            env.insert(
                format!("RIPOSTE_API_TOKEN_{name}"),
                format!("{role}:{}{groups}", server::tokens::token_hash(token)),
            );
        }
        let redis = match backend {
            Backend::Redis => {
                let redis = RedisServer::start();
                env.insert("TEST_REDIS_URL".into(), redis.url());
                Some(redis)
            }
            Backend::Sqlite => None,
        };
        let redis_section = if redis.is_some() {
            "redis: { url_env: TEST_REDIS_URL, prefix: e2e }"
        } else {
            ""
        };
        let config = format!(
            r#"
listen: 127.0.0.1:0
playbooks: playbooks
{plugins}
data_dir: data
{redis_section}
workers: {{ concurrency: {workers}, lease: {lease}, poll_interval: 20ms }}
webhooks: {{ max_body_bytes: 65536 }}
auth:
  siem: {{ type: hmac-sha256, secrets_env: [SIEM_SECRET] }}
  svix: {{ type: standard-webhooks, secrets_env: [SVIX_SECRET], tolerance: 5m }}
  token: {{ type: bearer, tokens_env: [BEARER_TOKEN] }}
  url: {{ type: url-token, tokens_env: [SPLUNK_URL_TOKEN, SPLUNK_URL_TOKEN_NEXT] }}
{extra_auth}
egress:
  allow_private: [127.0.0.0/8]
api:
  cors_origins: ["{SOC_ORIGIN}"]
{extra_config}
"#,
            plugins = if plugins {
                format!("plugins: {}", test_support::plugin_dir().display())
            } else {
                String::new()
            }
        );
        let file = dir.path().join("riposte.yaml");
        std::fs::write(&file, config).expect("config");
        let config = Config::from_parts(Some(&file), &env).expect("valid configuration");
        let mut parts = Parts::open(config.clone()).await.expect("server parts");
        if let Some(executor) = executor {
            let journal: Arc<dyn runner::Journal> = parts.store.clone();
            parts.runner = Arc::new(runner::Runner::new(executor, journal));
        }
        let store = Arc::clone(&parts.store);
        let control = parts.control();
        let api_first = Arc::clone(&parts.api_first);
        let shutdown = CancellationToken::new();
        let (base, router, task) = if listening {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("address"));
            let task = tokio::spawn(server::serve(listener, parts, shutdown.clone()));
            (base, None, task)
        } else {
            let router = parts.router().expect("router");
            let task = tokio::spawn(server::work(parts, None, shutdown.clone()));
            (String::new(), Some(router), task)
        };
        Server {
            base,
            router,
            store,
            control,
            api_first,
            config,
            playbooks: dir.path().join("playbooks"),
            data: dir.path().join("data"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            shutdown,
            task: Some(task),
            redis,
            _dir: dir,
        }
    }

    /// POSTs `body` to `/hooks/<trigger>` signed for the `siem` profile (GitHub's scheme).
    pub(crate) async fn post_signed(
        &self,
        trigger: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let signature = sign(SIEM_SECRET, body.as_bytes());
        let mut all = vec![
            ("content-type", "application/json"),
            ("x-hub-signature-256", signature.as_str()),
        ];
        all.extend_from_slice(headers);
        self.send("POST", &format!("/hooks/{trigger}"), &all, Some(body))
            .await
    }

    /// Sends a request: to the router in process, over loopback otherwise; the status and the
    /// body (as JSON when it is JSON).
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, _, text) = self.request(method, path, headers, body).await;
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    /// The same, answering the status, the headers and the body as text.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, http::HeaderMap, String) {
        let method =
            http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
        let Some(router) = &self.router else {
            let mut request = self.client.request(method, format!("{}{path}", self.base));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.body(body.to_owned());
            }
            let response = request.send().await.expect("the server answers");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.expect("body");
            return (status, headers, text);
        };
        let mut request = http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(axum::body::Body::from(body.unwrap_or_default().to_owned()))
            .expect("request");
        let response = tower::ServiceExt::oneshot(router.clone(), request)
            .await
            .expect("the router answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// Waits for the run to finish and returns its final state.
    pub(crate) async fn finished(&self, run_id: &str, within: Duration) -> RunState {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let events = self.store.events(run_id).await.expect("events");
            if let Some(state) = RunState::from_events(&events)
                && state.status.is_terminal()
            {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not finish within {within:?}: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn events(&self, run_id: &str) -> Vec<RunEvent> {
        self.store.events(run_id).await.expect("events")
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("clean stop");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, json)
}

/// GitHub's `X-Hub-Signature-256` value for `body`.
pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// The run id the server answered for the first (or only) playbook.
pub(crate) fn run_id(answer: &serde_json::Value) -> String {
    answer["runs"][0]["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run id in {answer}"))
        .to_owned()
}

pub(crate) fn assert_succeeded(state: &RunState) {
    assert_eq!(
        state.status,
        RunStatus::Succeeded,
        "the run failed: {:?}",
        state.error
    );
}
