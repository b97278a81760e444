//! Declarative connectors: an HTTP API's actions declared in YAML (docs/connectors.md).
//!
//! [`compile`] checks a connector file the way [`crate::compile`] checks a playbook — every
//! problem at its line and column — and returns a [`Connector`]: its base URL and hosts, its
//! settings and secrets, how it authenticates, and each action's input schema, request, answers
//! and output, with templates already checked. The plugin host executes it; nothing here does I/O.

pub mod openapi;

use std::collections::BTreeMap;
use std::path::Path;

use crate::diagnostic::{Diagnostic, FileDiagnostics};
use crate::error::Error;
use crate::template::{Condition, Input};

pub use crate::compile::connector::{
    ACTION_FIELDS, AUTH_FIELDS, AUTH_TYPES, CONNECTOR_FIELDS, DEFAULT_RETRY_STATUSES,
    MAX_PAGES_LIMIT, PAGINATE_FIELDS, REQUEST_FIELDS, SETTING_FIELDS, compile,
};

/// Default and ceiling of `paginate.max_pages`.
pub const DEFAULT_MAX_PAGES: u32 = 10;

/// A connector that passed every check.
#[derive(Debug, Clone)]
pub struct Connector {
    /// What steps write before the `/` of `uses:`.
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    /// The vendor API reference the connector follows.
    pub documentation: Option<String>,
    /// Where paths are appended; may read `settings`. `None` only with `url` auth, where the
    /// secret is the base URL.
    pub base_url: Option<Input>,
    /// Hosts requests may reach beside the base URL's and the token URL's.
    pub hosts: Vec<String>,
    /// Deployment values templates read as `settings.<name>`.
    pub settings: BTreeMap<String, Setting>,
    /// Secret names its auth uses, with what each is.
    pub secrets: BTreeMap<String, String>,
    pub auth: Auth,
    pub actions: BTreeMap<String, Action>,
}

impl Connector {
    /// The secrets the auth sends, by the names a playbook grants.
    pub fn auth_secrets(&self) -> Vec<&str> {
        match &self.auth {
            Auth::None => Vec::new(),
            Auth::Header { secret, .. }
            | Auth::Bearer { secret }
            | Auth::Query { secret, .. }
            | Auth::Body { secret, .. }
            | Auth::Url { secret } => vec![secret.as_str()],
            Auth::Basic { username, password } => vec![username.as_str(), password.as_str()],
            Auth::OAuth2 {
                client_id,
                client_secret,
                ..
            } => vec![client_id.as_str(), client_secret.as_str()],
            Auth::Login { fields, .. } => fields.values().map(String::as_str).collect(),
        }
    }
}

/// A deployment value.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub description: Option<String>,
    /// Without one, the server's configuration must set it.
    pub default: Option<serde_json::Value>,
}

/// How requests authenticate. Every field naming a secret holds the secret's *name*; the host
/// attaches its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    /// `<header>: <format with {secret} replaced>`.
    Header {
        header: String,
        secret: String,
        format: String,
    },
    Bearer {
        secret: String,
    },
    Basic {
        username: String,
        password: String,
    },
    Query {
        param: String,
        secret: String,
    },
    /// A top-level field of the JSON body.
    Body {
        field: String,
        secret: String,
    },
    /// The secret is the base URL.
    Url {
        secret: String,
    },
    /// OAuth 2.0 client credentials; the token is sent as a bearer.
    OAuth2 {
        token_url: Input,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    },
    /// Credentials posted as JSON to `base_url + path`; the answer's `token` field is the bearer.
    Login {
        path: String,
        /// Body field → secret name.
        fields: BTreeMap<String, String>,
        token: String,
        /// The answer's field holding the token's expiry (RFC 3339).
        expires: Option<String>,
    },
}

/// One action: a request and what its answer means.
#[derive(Debug, Clone)]
pub struct Action {
    pub description: Option<String>,
    /// Its input is screened for protected addresses, as a destructive plugin action's is.
    pub destructive: bool,
    /// JSON Schema of the step's `with:`.
    pub input: serde_json::Value,
    pub request: Request,
    /// Statuses that succeed; `None` means every 2xx.
    pub ok: Option<Vec<u16>>,
    /// Statuses that fail as retryable (`rate_limited` for 429, `upstream` otherwise).
    pub retry: Vec<u16>,
    /// An answer whose status succeeds but that fails all the same (`{"ok": false}` in a 200).
    pub fail_if: Option<Condition>,
    /// The failure's message, from the answer.
    pub error: Option<Input>,
    /// The failure's error kind, from the answer, instead of the status's (`null`: the status's).
    pub error_kind: Option<Input>,
    pub paginate: Option<Paginate>,
    pub output: Option<Input>,
}

impl Action {
    pub fn succeeds(&self, status: u16) -> bool {
        match &self.ok {
            Some(ok) => ok.contains(&status),
            None => (200..300).contains(&status),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: Target,
    pub query: Vec<(String, Input)>,
    pub headers: Vec<(String, Input)>,
    pub body: Body,
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Appended to the base URL.
    Path(Input),
    /// An absolute URL.
    Url(Input),
}

#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(Input),
    Form(Vec<(String, Input)>),
}

#[derive(Debug, Clone)]
pub struct Paginate {
    /// Each page's items.
    pub items: Input,
    /// The next page: a URL, or query parameters; null or empty stops.
    pub next: Input,
    pub max_pages: u32,
}

/// Reads and checks one connector file.
pub fn load(path: &Path) -> Result<Connector, Error> {
    let source = crate::read(path)?;
    compile(&source).map_err(|diagnostics| {
        Error::Invalid(FileDiagnostics {
            file: path.display().to_string(),
            source,
            diagnostics,
        })
    })
}

/// Whether a YAML text is a connector rather than a playbook: its top level has `connector:`.
pub fn is_connector(source: &str) -> bool {
    source
        .lines()
        .any(|line| line.starts_with("connector:") || line.starts_with("\"connector\":"))
}

/// Checks a connector file and returns its diagnostics (empty when it is valid).
pub fn check_file(path: &Path) -> Result<FileDiagnostics, Error> {
    let source = crate::read(path)?;
    let diagnostics: Vec<Diagnostic> = compile(&source).err().unwrap_or_default();
    Ok(FileDiagnostics {
        file: path.display().to_string(),
        source,
        diagnostics,
    })
}

/// Checks the steps of `playbooks` that call one of `connectors`: the action exists, the
/// literal `with:` keys are inputs it declares (when its schema closes its properties), and the
/// inputs it requires are given. Returns each problem with the index of its playbook, at the
/// step. Calls of anything else (plugins) are not this function's business.
pub fn check_calls(
    playbooks: &[&crate::Playbook],
    connectors: &[&Connector],
) -> Vec<(usize, Diagnostic)> {
    let mut problems = Vec::new();
    for (index, playbook) in playbooks.iter().enumerate() {
        for step in playbook.steps.iter().chain(&playbook.handlers) {
            let calls = std::iter::once((&step.uses, &step.with))
                .chain(step.undo.as_ref().map(|undo| (&undo.uses, &undo.with)));
            for (uses, with) in calls {
                let Some(connector) = connectors.iter().find(|c| c.name == uses.plugin) else {
                    continue;
                };
                let problem = |code: &'static str, message: String, hint: String| {
                    (
                        index,
                        Diagnostic::error(code, step.position, message).with_hint(hint),
                    )
                };
                let Some(action) = connector.actions.get(&uses.action) else {
                    let known: Vec<&str> = connector.actions.keys().map(String::as_str).collect();
                    let hint = crate::compile::suggest(&uses.action, &known)
                        .map(|name| format!("did you mean `{}/{name}`?", connector.name))
                        .unwrap_or_else(|| format!("its actions are {}", known.join(", ")));
                    problems.push(problem(
                        "unknown-action",
                        format!(
                            "step `{}` calls `{uses}`, but connector `{}` has no action `{}`",
                            step.id, connector.name, uses.action
                        ),
                        hint,
                    ));
                    continue;
                };
                let Input::Map(given) = with else { continue };
                let properties = action.input.get("properties").and_then(|p| p.as_object());
                let closed = action.input.get("additionalProperties")
                    == Some(&serde_json::Value::Bool(false));
                if let (Some(properties), true) = (properties, closed) {
                    let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                    for (key, _) in given {
                        if !properties.contains_key(key) {
                            let hint = crate::compile::suggest(key, &known)
                                .map(|name| format!("did you mean `{name}`?"))
                                .unwrap_or_else(|| format!("its inputs are {}", known.join(", ")));
                            problems.push(problem(
                                "unknown-input",
                                format!("step `{}` gives `{uses}` the input `{key}`, which it does not take", step.id),
                                hint,
                            ));
                        }
                    }
                }
                let required = action.input.get("required").and_then(|r| r.as_array());
                for name in required.into_iter().flatten().filter_map(|r| r.as_str()) {
                    let has_default = properties
                        .and_then(|p| p.get(name))
                        .is_some_and(|p| p.get("default").is_some());
                    if !has_default && !given.iter().any(|(key, _)| key == name) {
                        problems.push(problem(
                            "missing-input",
                            format!(
                                "step `{}` calls `{uses}` without its required input `{name}`",
                                step.id
                            ),
                            format!("add `{name}:` under `with:`"),
                        ));
                    }
                }
            }
        }
    }
    problems
}
