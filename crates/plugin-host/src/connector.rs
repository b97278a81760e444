//! Declarative connectors (docs/connectors.md), executed by the host under the plugins' egress
//! policy.
//!
//! A connector's requests leave through the same [`Egress`] a plugin's `wasi:http` requests do:
//! the host must be allowed (the base URL's, the token URL's, the declared `hosts`, the
//! configuration's), every resolved address passes the private-range guard, redirects are not
//! followed, sizes and times are capped. Credentials are added here, after the templates
//! rendered the request, from the secrets the playbook granted: a template never sees one.
//! Tokens (`oauth2`, `login`) are cached per connector and credential until shortly before they
//! expire, and fetched again once when the API answers `401`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use ipnet::IpNet;
use playbook::ErrorKind;
use playbook::connector::{Action, Auth, Body, Connector, Target};
use playbook::template::Input;
use runner::{Redactor, StepCall, StepError, StepExecutor};
use serde_json::{Value, json};
use sha2::Digest as _;
use wasmtime_wasi_http::Error as HttpError;

use crate::egress::{
    Answer, ClientCache, Egress, EgressPolicy, SECRET_MARKER_HEADER, SecretHeader,
};
use crate::error::Error;
use crate::state::LogBudget;

/// A cached token is fetched again this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);
/// How long a `login` token is kept when the answer does not say.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(300);
/// How much of an error answer's body a failure's message quotes.
const QUOTED_BODY_CHARS: usize = 300;

/// Every loaded connector, and the executor of the calls that are not theirs (the plugins).
pub struct Connectors {
    connectors: HashMap<String, Loaded>,
    policy: Arc<EgressPolicy>,
    clients: Arc<ClientCache>,
    tokens: TokenCache,
    protected: Vec<IpNet>,
    plugins: Arc<dyn StepExecutor>,
}

/// What a connector declares, as the API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectorSummary {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub documentation: Option<String>,
    /// The hosts its requests may reach, with its settings applied.
    pub hosts: Vec<String>,
    /// The secrets its auth uses, by the names playbooks grant.
    pub secrets: Vec<String>,
    /// Why its calls cannot be made yet (a setting to configure), if so.
    pub not_configured: Option<String>,
    pub actions: Vec<ConnectorAction>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectorAction {
    pub name: String,
    pub description: Option<String>,
    pub destructive: bool,
    pub input_schema: Value,
}

/// A connector as loaded: its endpoint, once its settings are all given, and its input checks.
struct Loaded {
    connector: Connector,
    /// Why its calls cannot be made, while a setting without a default is not configured.
    endpoint: Result<Endpoint, String>,
    validators: HashMap<String, jsonschema::Validator>,
}

/// Where a connector's requests go, with its settings applied.
struct Endpoint {
    settings: Value,
    /// `None` with `url` auth: the secret is the base URL.
    base_url: Option<url::Url>,
    token_url: Option<url::Url>,
    /// Host patterns its requests may reach.
    hosts: Vec<String>,
}

impl Connectors {
    /// Loads every `*.yaml` connector in `dir`, with the settings the configuration gives each
    /// (`settings[<connector>][<setting>]`).
    pub fn load_dir(
        dir: &Path,
        settings: &BTreeMap<String, BTreeMap<String, Value>>,
        egress: EgressPolicy,
    ) -> Result<Connectors, Error> {
        let files = playbook::files_in(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut connectors = HashMap::new();
        for path in files {
            let connector = playbook::connector::load(&path).map_err(|error| match error {
                playbook::Error::Invalid(diagnostics) => Error::Invalid {
                    path: path.clone(),
                    reason: format!("\n{}", diagnostics.render()),
                },
                other => Error::Invalid {
                    path: path.clone(),
                    reason: other.to_string(),
                },
            })?;
            let name = connector.name.clone();
            let loaded =
                Loaded::new(connector, settings.get(&name)).map_err(|reason| Error::Invalid {
                    path: path.clone(),
                    reason,
                })?;
            if connectors.insert(name.clone(), loaded).is_some() {
                return Err(Error::Invalid {
                    path,
                    reason: format!("a connector named `{name}` is already loaded"),
                });
            }
        }
        if let Some(unknown) = settings.keys().find(|name| !connectors.contains_key(*name)) {
            return Err(Error::Invalid {
                path: dir.to_owned(),
                reason: format!(
                    "the configuration has settings for `{unknown}`, but no connector has that name"
                ),
            });
        }
        Ok(Connectors {
            connectors,
            policy: Arc::new(egress),
            clients: Arc::default(),
            tokens: TokenCache::default(),
            protected: crate::guard::default_protected_ranges(),
            plugins: Arc::new(runner::NoPlugins),
        })
    }

    /// Calls that name no connector go to `plugins`.
    pub fn with_plugins(mut self, plugins: Arc<dyn StepExecutor>) -> Connectors {
        self.plugins = plugins;
        self
    }

    /// Addresses destructive actions refuse to touch (default: [`crate::default_protected_ranges`]).
    pub fn with_protected(mut self, protected: Vec<IpNet>) -> Connectors {
        self.protected = protected;
        self
    }

    /// The loaded connectors, by name.
    pub fn connectors(&self) -> impl Iterator<Item = &Connector> {
        self.connectors.values().map(|loaded| &loaded.connector)
    }

    pub fn get(&self, name: &str) -> Option<&Connector> {
        self.connectors.get(name).map(|loaded| &loaded.connector)
    }

    /// What each connector declares, for people and the API, sorted by name.
    pub fn summaries(&self) -> Vec<ConnectorSummary> {
        let mut summaries: Vec<ConnectorSummary> = self
            .connectors
            .values()
            .map(|loaded| {
                let connector = &loaded.connector;
                ConnectorSummary {
                    name: connector.name.clone(),
                    version: connector.version.clone(),
                    description: connector.description.clone(),
                    documentation: connector.documentation.clone(),
                    hosts: loaded
                        .endpoint
                        .as_ref()
                        .map(|endpoint| endpoint.hosts.clone())
                        .unwrap_or_else(|_| connector.hosts.clone()),
                    secrets: connector.secrets.keys().cloned().collect(),
                    not_configured: loaded.endpoint.as_ref().err().cloned(),
                    actions: connector
                        .actions
                        .iter()
                        .map(|(name, action)| ConnectorAction {
                            name: name.clone(),
                            description: action.description.clone(),
                            destructive: action.destructive,
                            input_schema: action.input.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        summaries.sort_by(|a, b| a.name.cmp(&b.name));
        summaries
    }

    async fn call(&self, loaded: &Loaded, call: &StepCall) -> Result<Value, StepError> {
        let connector = &loaded.connector;
        let action = connector.actions.get(&call.uses.action).ok_or_else(|| {
            let known: Vec<&str> = connector.actions.keys().map(String::as_str).collect();
            StepError::new(
                ErrorKind::InvalidInput,
                format!(
                    "connector `{}` has no action `{}`; it has {}",
                    connector.name,
                    call.uses.action,
                    known.join(", ")
                ),
            )
        })?;
        if let Some(wanted) = &call.uses.version
            && connector.version.as_deref() != Some(wanted.as_str())
        {
            return Err(StepError::new(
                ErrorKind::Internal,
                format!(
                    "the playbook pins `{}@{wanted}` but version {} is loaded",
                    connector.name,
                    connector.version.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        let endpoint = loaded
            .endpoint
            .as_ref()
            .map_err(|reason| StepError::new(ErrorKind::Internal, reason.clone()))?;
        let input = loaded.checked_input(&call.uses.action, action, &call.input)?;
        if action.destructive {
            crate::guard::check(&input, &self.protected)
                .map_err(|reason| StepError::new(ErrorKind::InvalidInput, reason))?;
        }
        let redactor = Redactor::new(call.grant.secrets.values().map(String::as_str));
        let exchange = Exchange {
            connectors: self,
            loaded,
            endpoint,
            action,
            call,
            context: json!({
                "input": input,
                "settings": endpoint.settings,
                "call": {
                    "run_id": call.run_id,
                    "step_id": call.step_id,
                    "attempt": call.attempt,
                    "idempotency_key": call.idempotency_key,
                    "now": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                },
            }),
        };
        exchange.run().await.map_err(|mut error| {
            error.message = redactor.redact_str(&error.message);
            error
        })
    }
}

#[async_trait]
impl StepExecutor for Connectors {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        match self.connectors.get(&call.uses.plugin) {
            Some(loaded) => self.call(loaded, &call).await,
            None => self.plugins.execute(call).await,
        }
    }

    fn rehearses(&self) -> bool {
        self.plugins.rehearses()
    }
}

impl Endpoint {
    fn new(
        connector: &Connector,
        configured: &BTreeMap<String, Value>,
    ) -> Result<Endpoint, String> {
        let mut settings = serde_json::Map::new();
        for (name, setting) in &connector.settings {
            if name == "base_url" {
                continue;
            }
            // Every setting without a default is configured: `Loaded::new` saw to it.
            if let Some(value) = configured.get(name).or(setting.default.as_ref()) {
                settings.insert(name.clone(), value.clone());
            }
        }
        let render_url = |input: &Input, what: &str, context: &Value| -> Result<url::Url, String> {
            let rendered = input
                .render(&minijinja::Value::from_serialize(context))
                .map_err(|error| format!("`{what}` does not render: {error}"))?;
            let text = rendered.as_str().unwrap_or_default();
            parse_base(text).map_err(|reason| format!("`{what}` {reason}"))
        };
        let context = json!({ "settings": settings });
        let base_url = match (configured.get("base_url"), &connector.base_url) {
            (Some(Value::String(url)), _) => Some(
                parse_base(url).map_err(|reason| format!("the configured `base_url` {reason}"))?,
            ),
            (Some(_), _) => return Err("the configured `base_url` must be a string".into()),
            (None, Some(input)) => Some(render_url(input, "base_url", &context)?),
            (None, None) => None,
        };
        settings.insert(
            "base_url".into(),
            base_url
                .as_ref()
                .map_or(Value::Null, |url| Value::String(url.to_string())),
        );
        let context = json!({ "settings": settings });
        let token_url = match &connector.auth {
            Auth::OAuth2 { token_url, .. } => Some(render_url(token_url, "token_url", &context)?),
            _ => None,
        };
        let mut hosts = connector.hosts.clone();
        hosts.extend(base_url.iter().chain(&token_url).filter_map(host_pattern));
        match settings.get("hosts") {
            Some(Value::Array(extra)) => {
                for host in extra {
                    let host = host
                        .as_str()
                        .ok_or("the setting `hosts` must be a list of host names")?;
                    hosts.push(host.to_owned());
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => return Err("the setting `hosts` must be a list of host names".into()),
        }
        Ok(Endpoint {
            settings: Value::Object(settings),
            base_url,
            token_url,
            hosts,
        })
    }
}

impl Loaded {
    /// A connector with the settings the configuration gives it. A setting the connector does
    /// not declare, or a base URL that is not one, is an error; a setting without a default that
    /// is not given leaves the connector loaded but unusable, saying so (like a secret that is
    /// not set: the steps that need it fail, with the reason).
    fn new(
        connector: Connector,
        configured: Option<&BTreeMap<String, Value>>,
    ) -> Result<Loaded, String> {
        let empty = BTreeMap::new();
        let configured = configured.unwrap_or(&empty);
        if let Some(unknown) = configured
            .keys()
            .find(|key| !connector.settings.contains_key(*key))
        {
            let known: Vec<&str> = connector.settings.keys().map(String::as_str).collect();
            return Err(format!(
                "the configuration sets `{unknown}`, which connector `{}` does not declare; it has {}",
                connector.name,
                known.join(", ")
            ));
        }
        let mut validators = HashMap::new();
        for (name, action) in &connector.actions {
            let validator = jsonschema::validator_for(&action.input).map_err(|error| {
                format!("the input schema of `{name}` does not compile: {error}")
            })?;
            validators.insert(name.clone(), validator);
        }
        let missing: Vec<String> = connector
            .settings
            .iter()
            .filter(|(name, setting)| {
                let has_base_url =
                    connector.base_url.is_some() || matches!(connector.auth, Auth::Url { .. });
                !configured.contains_key(*name)
                    && setting.default.is_none()
                    && !(*name == "base_url" && has_base_url)
            })
            .map(|(name, setting)| {
                format!(
                    "`connectors.settings.{}.{name}` ({})",
                    connector.name,
                    setting.description.as_deref().unwrap_or("no description")
                )
            })
            .collect();
        let endpoint = if missing.is_empty() {
            Ok(Endpoint::new(&connector, configured)?)
        } else {
            let reason = format!(
                "connector `{}` is not configured: set {} in the server configuration",
                connector.name,
                missing.join(" and ")
            );
            tracing::warn!(connector = %connector.name, %reason, "A connector cannot be used until it is configured.");
            Err(reason)
        };
        Ok(Loaded {
            connector,
            endpoint,
            validators,
        })
    }

    /// The step's input with the schema's top-level defaults filled in, if it matches the schema.
    fn checked_input(
        &self,
        name: &str,
        action: &Action,
        input: &Value,
    ) -> Result<Value, StepError> {
        let mut input = match input {
            Value::Null => json!({}),
            other => other.clone(),
        };
        if let (Some(object), Some(properties)) = (
            input.as_object_mut(),
            action.input.get("properties").and_then(Value::as_object),
        ) {
            for (key, property) in properties {
                if let Some(default) = property.get("default")
                    && !object.contains_key(key)
                {
                    object.insert(key.clone(), default.clone());
                }
            }
        }
        if let Some(validator) = self.validators.get(name) {
            let problems: Vec<String> = validator
                .iter_errors(&input)
                .take(5)
                .map(|error| {
                    let at = error.instance_path().to_string();
                    if at.is_empty() {
                        error.to_string()
                    } else {
                        format!("{at}: {error}")
                    }
                })
                .collect();
            if !problems.is_empty() {
                return Err(StepError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the input of `{}/{name}` does not match its schema: {}",
                        self.connector.name,
                        problems.join("; ")
                    ),
                ));
            }
        }
        Ok(input)
    }
}

/// One call of one action: its requests (pages, token fetches) and what they mean.
struct Exchange<'a> {
    connectors: &'a Connectors,
    loaded: &'a Loaded,
    endpoint: &'a Endpoint,
    action: &'a Action,
    call: &'a StepCall,
    context: Value,
}

impl Exchange<'_> {
    async fn run(&self) -> Result<Value, StepError> {
        let base = self.base_url()?;
        let mut url = self.first_url(&base)?;
        let mut items: Vec<Value> = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            let answer = self.send_authenticated(url.clone()).await?;
            let response = response_value(&answer);
            let mut context = self.context.clone();
            context["response"] = response.clone();
            if !self.action.succeeds(answer.status.as_u16()) {
                return Err(self.failure(&answer, &context, None));
            }
            if let Some(condition) = &self.action.fail_if {
                let failed = condition
                    .evaluate(&minijinja::Value::from_serialize(&context))
                    .map_err(|error| {
                        StepError::new(
                            ErrorKind::Internal,
                            format!(
                                "connector `{}`: `fail_if` of `{}` failed: {error}",
                                self.loaded.connector.name, self.call.uses.action
                            ),
                        )
                    })?;
                if failed {
                    return Err(self.failure(&answer, &context, Some(ErrorKind::InvalidInput)));
                }
            }
            let Some(paginate) = &self.action.paginate else {
                return self.output(context, response["body"].clone());
            };
            match self.render(&paginate.items, &context, "paginate.items")? {
                Value::Array(page) => items.extend(page),
                Value::Null => {}
                other => items.push(other),
            }
            let next = self.render(&paginate.next, &context, "paginate.next")?;
            let next_url = self.next_page(&base, &url, next)?;
            match next_url {
                Some(next) if pages < paginate.max_pages => url = next,
                _ => {
                    context["items"] = Value::Array(items.clone());
                    return self.output(context, json!({ "items": items }));
                }
            }
        }
    }

    fn output(&self, context: Value, default: Value) -> Result<Value, StepError> {
        match &self.action.output {
            Some(output) => self.render(output, &context, "output"),
            None => Ok(default),
        }
    }

    fn render(&self, input: &Input, context: &Value, what: &str) -> Result<Value, StepError> {
        input
            .render(&minijinja::Value::from_serialize(context))
            .map_err(|error| {
                StepError::new(
                    ErrorKind::Internal,
                    format!(
                        "connector `{}`: `{what}` of `{}` failed: {error}",
                        self.loaded.connector.name, self.call.uses.action
                    ),
                )
            })
    }

    /// The base URL: the connector's, or with `url` auth the granted secret.
    fn base_url(&self) -> Result<url::Url, StepError> {
        if let Auth::Url { secret } = &self.loaded.connector.auth {
            let value = self.secret(secret)?;
            return parse_base(value).map_err(|reason| {
                StepError::new(
                    ErrorKind::InvalidInput,
                    format!("the secret `{secret}` is not a usable URL: it {reason}"),
                )
            });
        }
        self.endpoint
            .base_url
            .clone()
            .ok_or_else(|| StepError::new(ErrorKind::Internal, "the connector has no base URL"))
    }

    fn first_url(&self, base: &url::Url) -> Result<url::Url, StepError> {
        let request = &self.action.request;
        let mut url = match &request.target {
            Target::Path(path) => {
                let path = self.render(path, &self.context, "request.path")?;
                join_path(base, path.as_str().unwrap_or_default()).map_err(|reason| {
                    StepError::new(
                        ErrorKind::InvalidInput,
                        format!("the request's path {reason}"),
                    )
                })?
            }
            Target::Url(url) => {
                let url = self.render(url, &self.context, "request.url")?;
                url::Url::parse(url.as_str().unwrap_or_default()).map_err(|error| {
                    StepError::new(
                        ErrorKind::InvalidInput,
                        format!("the request's url is not a URL: {error}"),
                    )
                })?
            }
        };
        for (name, value) in &request.query {
            let value = self.render(value, &self.context, "request.query")?;
            append_query(&mut url, name, &value);
        }
        Ok(url)
    }

    /// The next page's URL from what `paginate.next` rendered: a URL, or query parameters.
    fn next_page(
        &self,
        base: &url::Url,
        current: &url::Url,
        next: Value,
    ) -> Result<Option<url::Url>, StepError> {
        let invalid = |reason: String| {
            StepError::new(
                ErrorKind::Upstream,
                format!("the next page's address {reason}"),
            )
        };
        match next {
            Value::Null => Ok(None),
            Value::String(text) if text.is_empty() => Ok(None),
            Value::String(text) if text.starts_with('/') && !text.starts_with("//") => {
                let mut url = base.clone();
                let (path, query) = text.split_once('?').unwrap_or((&text, ""));
                url = join_path(&url, path).map_err(invalid)?;
                url.set_query((!query.is_empty()).then_some(query));
                Ok(Some(url))
            }
            Value::String(text) => url::Url::parse(&text)
                .map(Some)
                .map_err(|error| invalid(format!("is not a URL: {error}"))),
            Value::Object(parameters) => {
                let set: Vec<(String, Value)> = parameters
                    .into_iter()
                    .filter(|(_, value)| !is_empty(value))
                    .collect();
                if set.is_empty() {
                    return Ok(None);
                }
                let mut url = current.clone();
                let kept: Vec<(String, String)> = url
                    .query_pairs()
                    .filter(|(name, _)| !set.iter().any(|(key, _)| key == name))
                    .map(|(name, value)| (name.into_owned(), value.into_owned()))
                    .collect();
                url.set_query(None);
                for (name, value) in &kept {
                    url.query_pairs_mut().append_pair(name, value);
                }
                for (name, value) in &set {
                    append_query(&mut url, name, value);
                }
                Ok(Some(url))
            }
            other => Err(invalid(format!(
                "must be a URL or a mapping of query parameters, not {other}"
            ))),
        }
    }

    /// Sends the action's request to `url` with its credentials; on a `401` with a cached token,
    /// fetches the token again and sends once more.
    async fn send_authenticated(&self, url: url::Url) -> Result<Answer, StepError> {
        let answer = self.send(url.clone(), false).await?;
        let token_auth = matches!(
            self.loaded.connector.auth,
            Auth::OAuth2 { .. } | Auth::Login { .. }
        );
        if answer.status == http::StatusCode::UNAUTHORIZED && token_auth {
            return self.send(url, true).await;
        }
        Ok(answer)
    }

    async fn send(&self, mut url: url::Url, fresh_token: bool) -> Result<Answer, StepError> {
        let request = &self.action.request;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        for (name, value) in &request.headers {
            let value = self.render(value, &self.context, "request.headers")?;
            let text = match value {
                Value::Null => continue,
                Value::String(text) => text,
                other => other.to_string(),
            };
            let name = http::HeaderName::from_bytes(name.as_bytes());
            let value = http::HeaderValue::from_str(&text);
            match (name, value) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                _ => {
                    return Err(StepError::new(
                        ErrorKind::InvalidInput,
                        "a request header has a name or value HTTP does not allow",
                    ));
                }
            }
        }
        let mut json_body = match &request.body {
            Body::Json(body) => Some(self.render(body, &self.context, "request.body")?),
            _ => None,
        };
        let mut form_body = match &request.body {
            Body::Form(fields) => {
                let mut pairs = Vec::new();
                for (name, value) in fields {
                    match self.render(value, &self.context, "request.form")? {
                        Value::Null => {}
                        Value::String(text) => pairs.push((name.clone(), text)),
                        other => pairs.push((name.clone(), other.to_string())),
                    }
                }
                Some(pairs)
            }
            _ => None,
        };
        let mut secret_headers = Vec::new();
        let mut secret_outside_headers = false;
        match &self.loaded.connector.auth {
            Auth::None => {}
            Auth::Header {
                header,
                secret,
                format,
            } => {
                let value = format.replace("{secret}", self.secret(secret)?);
                secret_headers.push(self.secret_header(secret, header, &value)?);
            }
            Auth::Bearer { secret } => {
                let value = format!("Bearer {}", self.secret(secret)?);
                secret_headers.push(self.secret_header(secret, "authorization", &value)?);
            }
            Auth::Basic { username, password } => {
                let pair = format!("{}:{}", self.secret(username)?, self.secret(password)?);
                let value = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                );
                secret_headers.push(self.secret_header(username, "authorization", &value)?);
            }
            Auth::Query { param, secret } => {
                url.query_pairs_mut()
                    .append_pair(param, self.secret(secret)?);
                secret_outside_headers = true;
            }
            Auth::Body { field, secret } => {
                let value = Value::String(self.secret(secret)?.to_owned());
                match (&mut json_body, &mut form_body) {
                    (Some(Value::Object(body)), _) => {
                        body.insert(field.clone(), value);
                    }
                    (None, Some(form)) => {
                        form.push((field.clone(), self.secret(secret)?.to_owned()))
                    }
                    (None, None) => json_body = Some(json!({ field.clone(): value })),
                    _ => {
                        return Err(StepError::new(
                            ErrorKind::Internal,
                            "the request's body is not a JSON object, so the secret has no field to go in",
                        ));
                    }
                }
                secret_outside_headers = true;
            }
            Auth::Url { .. } => secret_outside_headers = true,
            Auth::OAuth2 { .. } | Auth::Login { .. } => {
                let token = self.token(fresh_token).await?;
                secret_headers.push(self.secret_header(
                    "token",
                    "authorization",
                    &format!("Bearer {token}"),
                )?);
            }
        }
        let body = match (json_body, form_body) {
            (Some(body), _) => {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
            }
            (None, Some(form)) => {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                Bytes::from(serde_urlencoded::to_string(&form).unwrap_or_default())
            }
            (None, None) => Bytes::new(),
        };
        let method = http::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| StepError::new(ErrorKind::Internal, "the request's method is invalid"))?;
        self.exchange(
            method,
            url,
            headers,
            body,
            secret_headers,
            secret_outside_headers,
        )
        .await
    }

    /// One request through the egress policy, with the connector's hosts as the grant.
    async fn exchange(
        &self,
        method: http::Method,
        url: url::Url,
        mut headers: http::HeaderMap,
        body: Bytes,
        secret_headers: Vec<SecretHeader>,
        secret_outside_headers: bool,
    ) -> Result<Answer, StepError> {
        let uri: http::Uri = url.as_str().parse().map_err(|_| {
            StepError::new(
                ErrorKind::InvalidInput,
                "the request's address is not a valid URI",
            )
        })?;
        if !secret_headers.is_empty() {
            let names: Vec<&str> = secret_headers.iter().map(|s| s.name.as_str()).collect();
            if let Ok(value) = http::HeaderValue::from_str(&names.join(",")) {
                headers.insert(SECRET_MARKER_HEADER, value);
            }
        }
        let egress = Egress {
            policy: Arc::clone(&self.connectors.policy),
            clients: Arc::clone(&self.connectors.clients),
            granted_hosts: self.granted_hosts(),
            secret_headers,
            secret_outside_headers,
            logs: Arc::new(LogBudget::default()),
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        egress
            .exchange(method, &uri, headers, body)
            .await
            .map_err(|error| self.refused(&host, &url, error))
    }

    /// The connector's hosts, narrowed by the playbook's grant when it lists any.
    fn granted_hosts(&self) -> Vec<String> {
        let grant = &self.call.grant.hosts;
        if grant.is_empty() {
            return self.endpoint.hosts.clone();
        }
        self.endpoint
            .hosts
            .iter()
            .filter(|pattern| {
                grant
                    .iter()
                    .any(|granted| granted.eq_ignore_ascii_case(pattern))
            })
            .cloned()
            .collect()
    }

    fn refused(&self, host: &str, url: &url::Url, error: HttpError) -> StepError {
        let port = url.port_or_known_default().unwrap_or(0);
        let (kind, why) = match error {
            HttpError::HttpRequestDenied => (
                ErrorKind::InvalidInput,
                format!(
                    "{host}:{port} is not among the hosts connector `{}` may reach",
                    self.loaded.connector.name
                ),
            ),
            HttpError::DestinationIpProhibited => (
                ErrorKind::InvalidInput,
                format!("{host} resolves to an address the egress policy refuses"),
            ),
            HttpError::ConnectionReadTimeout
            | HttpError::ConnectionTimeout
            | HttpError::DnsTimeout => {
                (ErrorKind::Timeout, format!("{host} did not answer in time"))
            }
            HttpError::HttpResponseBodySize(limit) => (
                ErrorKind::Upstream,
                format!(
                    "{host} answered more than {} bytes",
                    limit.unwrap_or_default()
                ),
            ),
            HttpError::HttpRequestBodySize(limit) => (
                ErrorKind::InvalidInput,
                format!(
                    "the request is larger than {} bytes",
                    limit.unwrap_or_default()
                ),
            ),
            HttpError::InternalError(Some(reason)) if reason.starts_with("refused") => {
                (ErrorKind::InvalidInput, format!("{host}: {reason}"))
            }
            HttpError::DnsError { .. } | HttpError::DestinationNotFound => {
                (ErrorKind::Upstream, format!("{host} cannot be resolved"))
            }
            HttpError::ConnectionRefused => (
                ErrorKind::Upstream,
                format!("{host}:{port} refused the connection"),
            ),
            _ => (ErrorKind::Upstream, format!("the request to {host} failed")),
        };
        StepError::new(
            kind,
            format!(
                "{}/{}: {why}",
                self.loaded.connector.name, self.call.uses.action
            ),
        )
    }

    fn secret(&self, name: &str) -> Result<&str, StepError> {
        self.call
            .grant
            .secrets
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| {
                StepError::new(
                    ErrorKind::Unauthorized,
                    format!(
                        "connector `{}` needs the secret `{name}`, which the playbook does not grant it (`plugins: {{ {}: {{ secrets: [{name}] }} }}`) or the server does not have",
                        self.loaded.connector.name, self.loaded.connector.name
                    ),
                )
            })
    }

    fn secret_header(
        &self,
        name: &str,
        header: &str,
        value: &str,
    ) -> Result<SecretHeader, StepError> {
        let invalid = || {
            StepError::new(
                ErrorKind::InvalidInput,
                format!("the secret `{name}` cannot be sent as the header `{header}`"),
            )
        };
        Ok(SecretHeader {
            name: name.to_owned(),
            header: http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| invalid())?,
            value: http::HeaderValue::from_str(value).map_err(|_| invalid())?,
        })
    }

    /// A bearer token for `oauth2` or `login` auth, from the cache or fetched.
    async fn token(&self, fresh: bool) -> Result<String, StepError> {
        let connector = &self.loaded.connector;
        // Keyed by every credential the token is fetched with: a call granted another secret
        // (a wrong password, another client) must never be served a token it could not get.
        let mut digest = sha2::Sha256::new();
        for name in connector.auth_secrets() {
            digest.update(self.secret(name)?.as_bytes());
            digest.update([0]);
        }
        let credential = format!("{:x}", digest.finalize());
        let slot = self.connectors.tokens.slot(&connector.name, &credential);
        let mut cached = slot.lock().await;
        if !fresh
            && let Some(token) = cached.as_ref()
            && token.valid_until > Instant::now()
        {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<Token, StepError> {
        let connector = &self.loaded.connector;
        let (url, body, content_type, token_field, expires_field) = match &connector.auth {
            Auth::OAuth2 {
                client_id,
                client_secret,
                scope,
                ..
            } => {
                let mut form = vec![
                    ("grant_type", "client_credentials".to_owned()),
                    ("client_id", self.secret(client_id)?.to_owned()),
                    ("client_secret", self.secret(client_secret)?.to_owned()),
                ];
                if let Some(scope) = scope {
                    form.push(("scope", scope.clone()));
                }
                let url = self.endpoint.token_url.clone().ok_or_else(|| {
                    StepError::new(ErrorKind::Internal, "the connector has no token URL")
                })?;
                (
                    url,
                    serde_urlencoded::to_string(&form).unwrap_or_default(),
                    "application/x-www-form-urlencoded",
                    "access_token",
                    None,
                )
            }
            Auth::Login {
                path,
                fields,
                token,
                expires,
            } => {
                let mut body = serde_json::Map::new();
                for (field, secret) in fields {
                    body.insert(
                        field.clone(),
                        Value::String(self.secret(secret)?.to_owned()),
                    );
                }
                let base = self.base_url()?;
                let url = join_path(&base, path).map_err(|reason| {
                    StepError::new(ErrorKind::Internal, format!("the login path {reason}"))
                })?;
                (
                    url,
                    Value::Object(body).to_string(),
                    "application/json",
                    token.as_str(),
                    expires.as_deref(),
                )
            }
            _ => {
                return Err(StepError::new(
                    ErrorKind::Internal,
                    "this auth has no token",
                ));
            }
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let answer = self
            .exchange(
                http::Method::POST,
                url,
                headers,
                Bytes::from(body),
                Vec::new(),
                true,
            )
            .await?;
        let response = response_value(&answer);
        if !answer.status.is_success() {
            let mut error = status_error(answer.status.as_u16(), &response, &[]);
            if error.kind == ErrorKind::InvalidInput || error.kind == ErrorKind::NotFound {
                error.kind = ErrorKind::Unauthorized;
            }
            error.message = format!(
                "{}: the token request was refused: {}",
                connector.name, error.message
            );
            return Err(error);
        }
        let body = &response["body"];
        let value = body
            .get(token_field)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                StepError::new(
                    ErrorKind::Upstream,
                    format!(
                        "{}: the token answer has no `{token_field}`",
                        connector.name
                    ),
                )
            })?
            .to_owned();
        let life = match (
            expires_field,
            body.get("expires_in").and_then(Value::as_u64),
        ) {
            (Some(field), _) => body
                .get(field)
                .and_then(Value::as_str)
                .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
                .and_then(|at| {
                    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                        .to_std()
                        .ok()
                })
                .unwrap_or(DEFAULT_TOKEN_LIFE),
            (None, Some(seconds)) => Duration::from_secs(seconds),
            (None, None) => DEFAULT_TOKEN_LIFE,
        };
        Ok(Token {
            value,
            valid_until: Instant::now() + life.saturating_sub(TOKEN_MARGIN),
        })
    }

    /// The error an answer means: by its status (or `kind`, for an answer `fail_if` failed),
    /// unless `error_kind` says otherwise; the message from `error` when given.
    fn failure(&self, answer: &Answer, context: &Value, kind: Option<ErrorKind>) -> StepError {
        let status = answer.status.as_u16();
        let mut error = status_error(status, &context["response"], &self.action.retry);
        if let Some(kind) = kind {
            error.kind = kind;
        }
        if let Some(template) = &self.action.error_kind
            && let Ok(Value::String(name)) = self.render(template, context, "error_kind")
            && let Some(kind) = ErrorKind::parse(&name)
        {
            error.kind = kind;
        }
        if let Some(template) = &self.action.error
            && let Ok(message) = self.render(template, context, "error")
        {
            let message = match message {
                Value::String(text) => text,
                other => other.to_string(),
            };
            if !message.is_empty() {
                error.message = format!("HTTP {status}: {message}");
            }
        }
        if error.kind == ErrorKind::RateLimited {
            error.retry_after_ms = retry_after(&answer.headers);
        }
        error.message = format!(
            "{}/{}: {}",
            self.loaded.connector.name, self.call.uses.action, error.message
        );
        error
    }
}

/// What a status means when it is not `ok`.
fn status_error(status: u16, response: &Value, retry: &[u16]) -> StepError {
    let kind = match status {
        429 if retry.contains(&429) || retry.is_empty() => ErrorKind::RateLimited,
        _ if retry.contains(&status) => ErrorKind::Upstream,
        400 | 409 | 422 => ErrorKind::InvalidInput,
        401 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        500.. => ErrorKind::Upstream,
        _ => ErrorKind::InvalidInput,
    };
    let body = match &response["body"] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let quoted: String = body.chars().take(QUOTED_BODY_CHARS).collect();
    let ellipsis = if body.chars().count() > QUOTED_BODY_CHARS {
        "…"
    } else {
        ""
    };
    StepError::new(kind, format!("HTTP {status}: {quoted}{ellipsis}"))
}

/// `Retry-After`, in seconds or as an HTTP date, in milliseconds from now.
fn retry_after(headers: &http::HeaderMap) -> Option<u64> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    let wait = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// The answer as templates see it: status, headers (lower-case names), body (JSON when it is).
fn response_value(answer: &Answer) -> Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &answer.headers {
        if let Ok(text) = value.to_str() {
            headers.insert(name.as_str().to_owned(), Value::String(text.to_owned()));
        }
    }
    let body = if answer.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&answer.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()))
    };
    json!({
        "status": answer.status.as_u16(),
        "headers": headers,
        "body": body,
    })
}

/// A base URL: absolute, `http` or `https`, with a host, no query or fragment.
fn parse_base(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|error| format!("is not a URL ({error})"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err("must be an https:// (or http://) URL with a host".into());
    }
    Ok(url)
}

/// `base`'s path followed by `path`, refusing what could leave the base: `..` segments,
/// backslashes, queries and fragments, a scheme.
fn join_path(base: &url::Url, path: &str) -> Result<url::Url, String> {
    if path.contains('\\') || path.contains('?') || path.contains('#') || path.contains("://") {
        return Err(format!(
            "`{path}` has a character a path may not hold here (`\\`, `?`, `#` or a scheme)"
        ));
    }
    if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err(format!("`{path}` has a `.` or `..` segment"));
    }
    if !path.is_empty() && !path.starts_with('/') {
        return Err(format!("`{path}` does not start with `/`"));
    }
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(if joined.is_empty() { "/" } else { &joined });
    Ok(url)
}

/// Adds a query parameter: `null` leaves it out, a list repeats it.
fn append_query(url: &mut url::Url, name: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                append_query(url, name, item);
            }
        }
        Value::String(text) => {
            url.query_pairs_mut().append_pair(name, text);
        }
        other => {
            url.query_pairs_mut().append_pair(name, &other.to_string());
        }
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}

/// `host` or `host:port` (when the port is not the scheme's default), as grants spell hosts.
fn host_pattern(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// One connector's token for one set of credentials; locked while it is fetched.
type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Tokens by connector and credential; one fetch at a time per slot.
#[derive(Default)]
struct TokenCache {
    slots: Mutex<HashMap<(String, String), TokenSlot>>,
}

impl TokenCache {
    fn slot(&self, connector: &str, credential: &str) -> TokenSlot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            slots
                .entry((connector.to_owned(), credential.to_owned()))
                .or_default(),
        )
    }
}

struct Token {
    value: String,
    valid_until: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> url::Url {
        url::Url::parse("https://api.example.com/v2/").expect("url")
    }

    #[test]
    fn paths_join_the_base_and_cannot_leave_it() {
        assert_eq!(
            join_path(&base(), "/check").expect("joins").as_str(),
            "https://api.example.com/v2/check"
        );
        assert_eq!(
            join_path(&base(), "").expect("joins").as_str(),
            "https://api.example.com/v2"
        );
        for hostile in [
            "/../admin",
            "/a/./b",
            "/x?y=1",
            "/x#f",
            "/x\\y",
            "/http://evil.example",
        ] {
            assert!(
                join_path(&base(), hostile).is_err(),
                "{hostile} was accepted"
            );
        }
    }

    #[test]
    fn statuses_map_to_error_kinds() {
        let retry = playbook::connector::DEFAULT_RETRY_STATUSES;
        let kind = |status| status_error(status, &json!({"body": null}), retry).kind;
        assert_eq!(kind(429), ErrorKind::RateLimited);
        assert_eq!(kind(503), ErrorKind::Upstream);
        assert_eq!(kind(501), ErrorKind::Upstream);
        assert_eq!(kind(401), ErrorKind::Unauthorized);
        assert_eq!(kind(403), ErrorKind::Unauthorized);
        assert_eq!(kind(404), ErrorKind::NotFound);
        assert_eq!(kind(422), ErrorKind::InvalidInput);
        assert_eq!(kind(418), ErrorKind::InvalidInput);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("7"),
        );
        assert_eq!(retry_after(&headers), Some(7000));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_str(&later).expect("header"),
        );
        let wait = retry_after(&headers).expect("a date is read");
        assert!((55_000..=60_000).contains(&wait), "{wait}");
    }

    #[test]
    fn query_values_repeat_lists_and_drop_nulls() {
        let mut url = base();
        append_query(&mut url, "ip", &json!("185.220.101.45"));
        append_query(&mut url, "tag", &json!(["a b", "c"]));
        append_query(&mut url, "none", &Value::Null);
        append_query(&mut url, "days", &json!(30));
        assert_eq!(url.query(), Some("ip=185.220.101.45&tag=a+b&tag=c&days=30"));
    }
}
