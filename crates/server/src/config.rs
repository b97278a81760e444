//! The server's configuration: a YAML file, then `RIPOSTE_*` environment variables on top, checked
//! at start so a mistake stops the server with every problem listed instead of failing later.
//!
//! Secret values never live in the file: it names the environment variables that hold them
//! (`secrets_env`, `tokens_env`, `credentials_env`, `url_env`), so the file can sit in a
//! ConfigMap or a repository.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::AuthProfile;
use crate::error::Error;
use crate::tokens::{ApiToken, Role};

/// Where the server keeps its state.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded default: one SQLite file.
    Sqlite {
        path: PathBuf,
        synchronous: store::Synchronous,
    },
    /// A Redis shared by every process (scale-out).
    Redis {
        url: String,
        prefix: String,
        /// Records the activity stream keeps (0: all).
        activity_max_len: u64,
        /// PEM certificates of the authority a `rediss://` server's certificate is checked
        /// against, instead of the public roots.
        ca_file: Option<PathBuf>,
    },
}

/// The checked configuration. Its `Debug` form names secrets but never shows them.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `riposte worker` answers `/healthz`, `/readyz` and `/metrics`, if anywhere.
    pub ops_listen: Option<SocketAddr>,
    /// Folder of playbooks (`*.yaml`, `*.yml`, searched recursively).
    pub playbooks: PathBuf,
    /// Folder of plugins (`*.wasm`); none means only the built-in `core` plugin.
    pub plugins: Option<PathBuf>,
    /// Where compiled plugins are cached.
    pub cache_dir: PathBuf,
    pub store: StoreConfig,
    pub workers: WorkerConfig,
    pub webhooks: WebhookConfig,
    pub http: HttpConfig,
    /// Authentication profiles by name, as playbooks' `trigger.auth` refer to them.
    pub auth: BTreeMap<String, AuthProfile>,
    /// Private ranges plugins may reach (refused by default).
    pub allow_private: Vec<IpNet>,
    /// Secret values from `RIPOSTE_SECRET_<NAME>` variables, by `<NAME>` (a playbook's secret
    /// `abuseipdb_key` reads `RIPOSTE_SECRET_ABUSEIPDB_KEY`).
    pub secrets: BTreeMap<String, String>,
    pub api: ApiConfig,
    pub console: ConsoleConfig,
    /// Approvals in Slack, when configured.
    pub slack: Option<SlackConfig>,
    /// Limits shared by every worker, per plugin (integration) name.
    pub limits: BTreeMap<String, store::limits::Limit>,
    /// Declarative connectors (docs/connectors.md), if any.
    pub connectors: Option<ConnectorsConfig>,
}

/// Where connector files are, and the deployment's settings of each.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorsConfig {
    /// Folder of connector files (`*.yaml`, searched recursively).
    pub path: PathBuf,
    /// `settings.<connector>.<setting>`.
    pub settings: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

/// Slack: where approval requests are posted, and who may answer them there.
#[derive(Clone, PartialEq, Eq)]
pub struct SlackConfig {
    /// Checks that an interaction came from Slack (the app's signing secret).
    pub signing_secret: String,
    /// Posts and updates messages (a bot token, `xoxb-…`).
    pub bot_token: String,
    /// Slack's Web API (`https://slack.com/api`).
    pub api_url: String,
    /// Slack user id → the API token name whose role and groups that person decides with.
    pub users: BTreeMap<String, String>,
}

impl fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackConfig")
            .field("api_url", &self.api_url)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

/// The web console at `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// Whether the session cookie is marked `Secure`: always, never, or (`None`) when the
    /// request reached the proxy in front over TLS (`X-Forwarded-Proto: https`).
    pub secure_cookie: Option<bool>,
}

/// The management API: who may call it, and from which browser origins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiConfig {
    /// Tokens, by the SHA-256 of their value: the values themselves are never configured.
    pub tokens: Vec<ApiToken>,
    /// Browser origins allowed to call the API (CORS). Empty: CORS is off.
    pub cors_origins: Vec<http::HeaderValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Jobs one process works on at once; 0 makes `serve` an API-only process.
    pub concurrency: usize,
    /// How long a job (and its run's lock) stays with a worker that stops renewing it (crashed):
    /// the time to recover its run. Longer than the longest step timeout of every loaded playbook:
    /// checked at start when configured, else 60 s or that timeout plus 30 s.
    pub lease: Duration,
    pub lease_configured: bool,
    /// A job handed out this many times without finishing is dead-lettered.
    pub max_deliveries: u32,
    /// How often idle workers look for new jobs and due timers.
    pub poll_interval: Duration,
}

/// Bounds on slow clients, so a connection that sends nothing (or trickles) does not hold a
/// socket forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// How long a client may take to send a request's headers (an idle connection counts too).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a webhook's body.
    pub body_read_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub max_body_bytes: usize,
    /// How long a delivery id is remembered for deduplication.
    pub delivery_ttl: Duration,
    /// Headers whose value identifies a delivery, first present wins.
    pub delivery_id_headers: Vec<http::HeaderName>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Sqlite { path, synchronous } => f
                .debug_struct("Sqlite")
                .field("path", path)
                .field("synchronous", synchronous)
                .finish(),
            // The URL may carry a password.
            StoreConfig::Redis {
                prefix,
                activity_max_len,
                ca_file,
                ..
            } => f
                .debug_struct("Redis")
                .field("url", &"<hidden>")
                .field("prefix", prefix)
                .field("activity_max_len", activity_max_len)
                .field("ca_file", ca_file)
                .finish(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("ops_listen", &self.ops_listen)
            .field("playbooks", &self.playbooks)
            .field("plugins", &self.plugins)
            .field("cache_dir", &self.cache_dir)
            .field("store", &self.store)
            .field("workers", &self.workers)
            .field("webhooks", &self.webhooks)
            .field("http", &self.http)
            .field("auth", &self.auth)
            .field("allow_private", &self.allow_private)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("api", &self.api)
            .field("console", &self.console)
            .finish()
    }
}

/// The YAML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    ops_listen: Option<String>,
    playbooks: Option<PathBuf>,
    plugins: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    redis: Option<RawRedis>,
    sqlite: Option<RawSqlite>,
    #[serde(default)]
    workers: RawWorkers,
    #[serde(default)]
    webhooks: RawWebhooks,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    auth: BTreeMap<String, RawAuth>,
    #[serde(default)]
    egress: RawEgress,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    console: RawConsole,
    slack: Option<RawSlack>,
    #[serde(default)]
    limits: BTreeMap<String, RawLimit>,
    connectors: Option<RawConnectors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnectors {
    path: PathBuf,
    #[serde(default)]
    settings: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    /// `<calls>/s`, `/m` or `/h`.
    rate: Option<String>,
    concurrency: Option<u32>,
    breaker: Option<RawBreaker>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failures: u32,
    cool_down: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    signing_secret_env: String,
    bot_token_env: String,
    api_url: Option<String>,
    #[serde(default)]
    users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    session_ttl: Option<String>,
    /// `auto`, `always` or `never`.
    secure_cookie: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    cors_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    role: String,
    sha256: String,
    /// Groups the token's holder belongs to, for steps whose `approvers` name a group.
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url_env: Option<String>,
    prefix: Option<String>,
    activity_max_len: Option<u64>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlite {
    path: Option<PathBuf>,
    synchronous: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    concurrency: Option<usize>,
    lease: Option<String>,
    max_deliveries: Option<u32>,
    poll_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    max_body_bytes: Option<usize>,
    delivery_ttl: Option<String>,
    delivery_id_headers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow_private: Vec<String>,
}

/// One authentication profile. `type` picks the scheme; the other fields belong to it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(rename = "type")]
    kind: String,
    header: Option<String>,
    prefix: Option<String>,
    tolerance: Option<String>,
    #[serde(default)]
    secrets_env: Vec<String>,
    #[serde(default)]
    tokens_env: Vec<String>,
    #[serde(default)]
    credentials_env: Vec<String>,
}

/// Shortest token a `url-token` profile accepts.
const MIN_URL_TOKEN_LEN: usize = 24;

const DEFAULT_DELIVERY_ID_HEADERS: &[&str] = &[
    "idempotency-key",
    "webhook-id",
    "x-github-delivery",
    "x-riposte-delivery",
];

impl Config {
    /// Reads `file` (if given) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Error> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Config::from_parts(file, &env)
    }

    /// Builds the configuration from a file and an explicit environment (tests pass their own).
    pub fn from_parts(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, Error> {
        let (raw, base) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    Error::Config(vec![format!("cannot read {}: {error}", path.display())])
                })?;
                let raw: RawConfig = serde_saphyr::from_str(&text)
                    .map_err(|error| Error::Config(vec![format!("{}: {error}", path.display())]))?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (raw, base)
            }
            None => (RawConfig::default(), PathBuf::new()),
        };
        let mut problems = Vec::new();
        let var = |name: &str| env.get(name).filter(|value| !value.is_empty()).cloned();
        // Paths in the file are relative to the file; paths from the environment to the cwd.
        let path = |from_env: Option<String>, from_file: Option<PathBuf>, default: &str| {
            from_env
                .map(PathBuf::from)
                .or_else(|| from_file.map(|p| base.join(p)))
                .unwrap_or_else(|| PathBuf::from(default))
        };

        let listen_text = var("RIPOSTE_LISTEN")
            .or(raw.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_text.parse().unwrap_or_else(|error| {
            problems.push(format!(
                "listen: `{listen_text}` is not an address like 127.0.0.1:8080 ({error})"
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let ops_listen = var("RIPOSTE_OPS_LISTEN")
            .or(raw.ops_listen)
            .and_then(|text| match text.parse() {
                Ok(address) => Some(address),
                Err(error) => {
                    problems.push(format!(
                        "ops_listen: `{text}` is not an address like 0.0.0.0:9090 ({error})"
                    ));
                    None
                }
            });
        let playbooks = path(var("RIPOSTE_PLAYBOOKS"), raw.playbooks, "playbooks");
        let plugins = var("RIPOSTE_PLUGINS")
            .map(PathBuf::from)
            .or_else(|| raw.plugins.map(|p| base.join(p)));
        let data_dir = path(var("RIPOSTE_DATA_DIR"), raw.data_dir, ".riposte");
        let connectors = match var("RIPOSTE_CONNECTORS") {
            Some(dir) => Some(ConnectorsConfig {
                path: PathBuf::from(dir),
                settings: raw
                    .connectors
                    .as_ref()
                    .map(|c| c.settings.clone())
                    .unwrap_or_default(),
            }),
            None => raw.connectors.as_ref().map(|c| ConnectorsConfig {
                path: base.join(&c.path),
                settings: c.settings.clone(),
            }),
        };

        let redis_url = match raw.redis.as_ref().and_then(|r| r.url_env.as_deref()) {
            Some(name) => match var(name) {
                Some(url) => Some(url),
                None => {
                    problems.push(format!(
                        "redis.url_env: the environment variable {name} is not set"
                    ));
                    None
                }
            },
            None => {
                let url = var("RIPOSTE_REDIS_URL");
                if url.is_none() && raw.redis.is_some() {
                    problems.push(
                        "redis: the section has no `url_env` and RIPOSTE_REDIS_URL is not set; remove the section to use SQLite".into(),
                    );
                }
                url
            }
        };
        let store = match redis_url {
            Some(url) => {
                let redis = raw.redis.unwrap_or_default();
                StoreConfig::Redis {
                    url,
                    prefix: redis.prefix.unwrap_or_else(|| "riposte".into()),
                    activity_max_len: redis.activity_max_len.unwrap_or(store::ACTIVITY_MAX_LEN),
                    ca_file: var("RIPOSTE_REDIS_CA_FILE")
                        .map(PathBuf::from)
                        .or_else(|| redis.ca_file.map(|file| base.join(file))),
                }
            }
            None => {
                let sqlite = raw.sqlite.unwrap_or_default();
                let synchronous = match sqlite.synchronous.as_deref() {
                    None | Some("normal") => store::Synchronous::Normal,
                    Some("full") => store::Synchronous::Full,
                    Some(other) => {
                        problems.push(format!(
                            "sqlite.synchronous: `{other}` is not one of `normal`, `full`"
                        ));
                        store::Synchronous::Normal
                    }
                };
                StoreConfig::Sqlite {
                    path: sqlite
                        .path
                        .map(|p| base.join(p))
                        .unwrap_or_else(|| data_dir.join("riposte.db")),
                    synchronous,
                }
            }
        };

        let mut duration = |field: &str, text: Option<String>, default: Duration| match text {
            None => default,
            Some(text) => humantime::parse_duration(&text).unwrap_or_else(|error| {
                problems.push(format!(
                    "{field}: `{text}` is not a duration like 30s ({error})"
                ));
                default
            }),
        };
        let lease_text = var("RIPOSTE_LEASE").or(raw.workers.lease);
        let lease_configured = lease_text.is_some();
        let lease = duration("workers.lease", lease_text, Duration::from_secs(60));
        let poll_interval = duration(
            "workers.poll_interval",
            raw.workers.poll_interval,
            Duration::from_millis(50),
        );
        let delivery_ttl = duration(
            "webhooks.delivery_ttl",
            raw.webhooks.delivery_ttl,
            Duration::from_secs(24 * 3600),
        );
        let http = HttpConfig {
            header_read_timeout: duration(
                "http.header_read_timeout",
                raw.http.header_read_timeout,
                Duration::from_secs(10),
            ),
            body_read_timeout: duration(
                "http.body_read_timeout",
                raw.http.body_read_timeout,
                Duration::from_secs(30),
            ),
        };
        let session_ttl = duration(
            "console.session_ttl",
            raw.console.session_ttl,
            Duration::from_secs(12 * 3600),
        );
        // A sign-in shorter than a minute cannot be used; one longer than a month outlives
        // the people and tokens it was made for.
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 24 * 3600)).contains(&session_ttl) {
            problems.push(format!(
                "console.session_ttl: {} is not between 1m and 30d",
                humantime::format_duration(session_ttl)
            ));
        }
        let concurrency = match var("RIPOSTE_WORKERS") {
            Some(text) => text.parse().unwrap_or_else(|_| {
                problems.push(format!("RIPOSTE_WORKERS: `{text}` is not a number"));
                0
            }),
            None => raw.workers.concurrency.unwrap_or(64),
        };
        let workers = WorkerConfig {
            concurrency,
            lease,
            lease_configured,
            max_deliveries: raw.workers.max_deliveries.unwrap_or(5).max(1),
            poll_interval,
        };

        let mut delivery_id_headers = Vec::new();
        let header_names = raw.webhooks.delivery_id_headers.unwrap_or_else(|| {
            DEFAULT_DELIVERY_ID_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect()
        });
        for name in header_names {
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) => delivery_id_headers.push(header),
                Err(_) => problems.push(format!(
                    "webhooks.delivery_id_headers: `{name}` is not a header name"
                )),
            }
        }
        let webhooks = WebhookConfig {
            max_body_bytes: raw.webhooks.max_body_bytes.unwrap_or(1024 * 1024),
            delivery_ttl,
            delivery_id_headers,
        };

        let mut auth = BTreeMap::new();
        for (name, profile) in raw.auth {
            match auth_profile(&name, profile, &var) {
                Ok(profile) => {
                    auth.insert(name, profile);
                }
                Err(problem) => problems.push(problem),
            }
        }

        let mut allow_private = Vec::new();
        for range in raw.egress.allow_private {
            match range.parse::<IpNet>() {
                Ok(net) => allow_private.push(net),
                Err(error) => problems.push(format!(
                    "egress.allow_private: `{range}` is not a CIDR range ({error})"
                )),
            }
        }

        let api = api_config(raw.api, env, &mut problems);
        let secure_cookie = match raw.console.secure_cookie.as_deref() {
            None | Some("auto") => None,
            Some("always") => Some(true),
            Some("never") => Some(false),
            Some(other) => {
                problems.push(format!(
                    "console.secure_cookie: `{other}` is not `auto`, `always` or `never`"
                ));
                None
            }
        };
        let console = ConsoleConfig {
            session_ttl,
            secure_cookie,
        };
        let slack = raw
            .slack
            .and_then(|raw| slack_config(raw, &api, env, &mut problems));

        let limits = raw
            .limits
            .into_iter()
            .map(|(name, raw)| {
                let limit = limit_config(&name, raw, &mut problems);
                (name, limit)
            })
            .collect();

        let secrets = env
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix("RIPOSTE_SECRET_")
                    .map(|name| (name.to_owned(), value.clone()))
            })
            .collect();

        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        Ok(Config {
            listen,
            ops_listen,
            playbooks,
            plugins,
            cache_dir: data_dir.join("cache"),
            store,
            workers,
            webhooks,
            http,
            auth,
            allow_private,
            secrets,
            api,
            console,
            slack,
            limits,
            connectors,
        })
    }
}

/// One `limits.<plugin>` entry; every problem is listed.
fn limit_config(name: &str, raw: RawLimit, problems: &mut Vec<String>) -> store::limits::Limit {
    let rate = raw.rate.and_then(|text| {
        let parsed = text.split_once('/').and_then(|(calls, per)| {
            let calls: u32 = calls.trim().parse().ok().filter(|n| *n > 0)?;
            let per_ms = match per.trim() {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return None,
            };
            Some((calls, per_ms))
        });
        if parsed.is_none() {
            problems.push(format!(
                "limits.{name}.rate: `{text}` is not a rate like `10/s`, `300/m` or `1000/h`"
            ));
        }
        parsed
    });
    if raw.concurrency == Some(0) {
        problems.push(format!(
            "limits.{name}.concurrency: 0 would hold every call; leave it out for no limit"
        ));
    }
    let breaker = raw.breaker.and_then(|breaker| {
        if breaker.failures == 0 {
            problems.push(format!("limits.{name}.breaker.failures must be at least 1"));
        }
        match humantime::parse_duration(&breaker.cool_down) {
            Ok(cool_down) => Some(store::limits::Breaker {
                failures: breaker.failures.max(1),
                cool_down_ms: u64::try_from(cool_down.as_millis()).unwrap_or(u64::MAX),
            }),
            Err(error) => {
                problems.push(format!(
                    "limits.{name}.breaker.cool_down: `{}` is not a duration like 30s ({error})",
                    breaker.cool_down
                ));
                None
            }
        }
    });
    store::limits::Limit {
        rate,
        concurrency: raw.concurrency.filter(|n| *n > 0),
        breaker,
    }
}

/// Tokens from the file and from `RIPOSTE_API_TOKEN_<NAME>=<role>:<sha256>[:<group>,…]`
/// variables.
fn slack_config(
    raw: RawSlack,
    api: &ApiConfig,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<SlackConfig> {
    let mut secret = |field: &str, name: &str| match env.get(name).map(|value| value.trim()) {
        Some(value) if !value.is_empty() => Some(value.to_owned()),
        _ => {
            problems.push(format!(
                "slack.{field}: the environment variable {name} is not set"
            ));
            None
        }
    };
    let signing_secret = secret("signing_secret_env", &raw.signing_secret_env);
    let bot_token = secret("bot_token_env", &raw.bot_token_env);
    for (user, name) in &raw.users {
        if !api.tokens.iter().any(|token| token.name == *name) {
            problems.push(format!(
                "slack.users.{user}: `{name}` is not the name of an API token (its role and groups are what the person decides with)"
            ));
        }
    }
    Some(SlackConfig {
        signing_secret: signing_secret?,
        bot_token: bot_token?,
        api_url: raw
            .api_url
            .unwrap_or_else(|| "https://slack.com/api".to_owned())
            .trim_end_matches('/')
            .to_owned(),
        users: raw.users,
    })
}

fn api_config(
    raw: RawApi,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> ApiConfig {
    let from_env = env.iter().filter_map(|(key, value)| {
        let name = key.strip_prefix("RIPOSTE_API_TOKEN_")?;
        let mut parts = value.splitn(3, ':');
        let (role, sha256, groups) = (parts.next()?, parts.next().unwrap_or(""), parts.next());
        Some((
            key.clone(),
            RawToken {
                name: name.to_ascii_lowercase().replace('_', "-"),
                role: role.to_owned(),
                sha256: sha256.to_owned(),
                groups: groups
                    .into_iter()
                    .flat_map(|groups| groups.split(','))
                    .map(str::trim)
                    .filter(|group| !group.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
        ))
    });
    let from_file = raw
        .tokens
        .into_iter()
        .enumerate()
        .map(|(index, token)| (format!("api.tokens[{index}]"), token));
    let mut tokens: Vec<ApiToken> = Vec::new();
    for (source, token) in from_file.chain(from_env) {
        let Some(role) = Role::parse(&token.role) else {
            problems.push(format!(
                "{source}: role `{}` is not one of viewer, responder, admin",
                token.role
            ));
            continue;
        };
        let sha256 = token.sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            problems.push(format!(
                "{source}: `sha256` must be the token's SHA-256 in hex (64 characters; `riposte token new` prints it), never the token itself"
            ));
            continue;
        }
        if tokens.iter().any(|other| other.name == token.name) {
            problems.push(format!(
                "{source}: a token named `{}` is already configured",
                token.name
            ));
            continue;
        }
        tokens.push(ApiToken {
            name: token.name,
            role,
            sha256,
            groups: token.groups,
        });
    }
    let mut cors_origins = Vec::new();
    for origin in raw.cors_origins {
        let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
            && !origin.ends_with('/')
            && origin != "*";
        match http::HeaderValue::from_str(&origin) {
            Ok(value) if valid => cors_origins.push(value),
            _ => problems.push(format!(
                "api.cors_origins: `{origin}` is not an exact origin like https://soc.example.com (no wildcards, no path)"
            )),
        }
    }
    ApiConfig {
        tokens,
        cors_origins,
    }
}

fn auth_profile(
    name: &str,
    raw: RawAuth,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<AuthProfile, String> {
    let values = |field: &str, names: &[String]| -> Result<Vec<String>, String> {
        if names.is_empty() {
            return Err(format!(
                "auth.{name}: `{field}` must name at least one environment variable"
            ));
        }
        names
            .iter()
            .map(|env_name| match var(env_name) {
                None => Err(format!(
                    "auth.{name}.{field}: the environment variable {env_name} is not set"
                )),
                // A blank secret is one anybody can guess.
                Some(value) if value.trim().is_empty() => Err(format!(
                    "auth.{name}.{field}: the environment variable {env_name} holds only whitespace, which anybody could forge"
                )),
                Some(value) => Ok(value),
            })
            .collect()
    };
    match raw.kind.as_str() {
        "hmac-sha256" => {
            let header = raw.header.unwrap_or_else(|| "x-hub-signature-256".into());
            let header = http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("auth.{name}.header: `{header}` is not a header name"))?;
            Ok(AuthProfile::HmacSha256 {
                header,
                prefix: raw.prefix.unwrap_or_else(|| "sha256=".into()),
                secrets: values("secrets_env", &raw.secrets_env)?
                    .into_iter()
                    .map(String::into_bytes)
                    .collect(),
            })
        }
        "standard-webhooks" => {
            let tolerance = match raw.tolerance {
                None => Duration::from_secs(300),
                Some(text) => humantime::parse_duration(&text)
                    .map_err(|error| format!("auth.{name}.tolerance: `{text}`: {error}"))?,
            };
            let secrets = values("secrets_env", &raw.secrets_env)?;
            for (index, secret) in secrets.iter().enumerate() {
                let key = secret.strip_prefix("whsec_").unwrap_or(secret);
                match base64::engine::general_purpose::STANDARD.decode(key) {
                    Ok(key) if !key.is_empty() => {}
                    Ok(_) => {
                        return Err(format!(
                            "auth.{name}.secrets_env: {} holds an empty Standard Webhooks key (nothing after `whsec_`), which anybody could forge",
                            raw.secrets_env[index]
                        ));
                    }
                    Err(_) => {
                        return Err(format!(
                            "auth.{name}.secrets_env: {} does not hold a Standard Webhooks key (`whsec_` and base64)",
                            raw.secrets_env[index]
                        ));
                    }
                }
            }
            Ok(AuthProfile::StandardWebhooks { secrets, tolerance })
        }
        "bearer" => Ok(AuthProfile::Bearer {
            tokens: values("tokens_env", &raw.tokens_env)?,
        }),
        "url-token" => {
            let tokens = values("tokens_env", &raw.tokens_env)?;
            for (index, token) in tokens.iter().enumerate() {
                // The token is the only thing between the trigger and the world, and it is a
                // path segment: long, and without characters a URL would change.
                let usable = token.len() >= MIN_URL_TOKEN_LEN
                    && token.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
                    });
                if !usable {
                    return Err(format!(
                        "auth.{name}.tokens_env: {} must hold at least {MIN_URL_TOKEN_LEN} characters of letters, digits, `-`, `_`, `.` and `~` (e.g. `openssl rand -hex 24`)",
                        raw.tokens_env[index]
                    ));
                }
            }
            Ok(AuthProfile::UrlToken { tokens })
        }
        "basic" => {
            let credentials = values("credentials_env", &raw.credentials_env)?
                .into_iter()
                .enumerate()
                .map(|(index, pair)| match pair.split_once(':') {
                    Some((user, password))
                        if !user.trim().is_empty() && !password.trim().is_empty() =>
                    {
                        Ok((user.to_owned(), password.to_owned()))
                    }
                    _ => Err(format!(
                        "auth.{name}.credentials_env: {} must hold `user:password`, with neither part empty",
                        raw.credentials_env[index]
                    )),
                })
                .collect::<Result<_, _>>()?;
            Ok(AuthProfile::Basic { credentials })
        }
        other => Err(format!(
            "auth.{name}.type: `{other}` is not one of `hmac-sha256`, `standard-webhooks`, `bearer`, `basic`, `url-token`"
        )),
    }
}

#[cfg(test)]
mod tests;
