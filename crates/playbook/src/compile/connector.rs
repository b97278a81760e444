//! Connector YAML → checked [`Connector`], with the playbook compiler's decoders, so a connector's
//! problems read like a playbook's: every one, at its line and column, with a hint.

use super::references::{known_key, syntax_hint};
use super::*;
use crate::connector::{
    Action, Auth, Body, Connector, DEFAULT_MAX_PAGES, Paginate, Request, Setting, Target,
};

pub const CONNECTOR_FIELDS: &[&str] = &[
    "connector",
    "version",
    "description",
    "documentation",
    "base_url",
    "hosts",
    "settings",
    "secrets",
    "auth",
    "actions",
];
pub const SETTING_FIELDS: &[&str] = &["description", "default"];
/// Every field any auth type takes; which ones a type takes is in [`AUTH_TYPES`].
pub const AUTH_FIELDS: &[&str] = &[
    "type",
    "header",
    "format",
    "secret",
    "username",
    "password",
    "param",
    "field",
    "token_url",
    "client_id",
    "client_secret",
    "scope",
    "path",
    "fields",
    "token",
    "expires",
];
/// Each auth type with its required and optional fields.
pub const AUTH_TYPES: &[(&str, &[&str], &[&str])] = &[
    ("none", &[], &[]),
    ("header", &["header", "secret"], &["format"]),
    ("bearer", &["secret"], &[]),
    ("basic", &["username", "password"], &[]),
    ("query", &["param", "secret"], &[]),
    ("body", &["field", "secret"], &[]),
    ("url", &["secret"], &[]),
    (
        "oauth2",
        &["token_url", "client_id", "client_secret"],
        &["scope"],
    ),
    ("login", &["path", "fields", "token"], &["expires"]),
];
pub const ACTION_FIELDS: &[&str] = &[
    "description",
    "destructive",
    "input",
    "request",
    "ok",
    "retry",
    "fail_if",
    "error",
    "error_kind",
    "paginate",
    "output",
];
pub const REQUEST_FIELDS: &[&str] = &["method", "path", "url", "query", "headers", "body", "form"];
pub const PAGINATE_FIELDS: &[&str] = &["items", "next", "max_pages"];
/// Statuses retried unless an action says otherwise.
pub const DEFAULT_RETRY_STATUSES: &[u16] = &[429, 500, 502, 503, 504];
pub const MAX_PAGES_LIMIT: u32 = 100;

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// What templates may read, by where they stand.
const REQUEST_ROOTS: &[&str] = &["input", "settings", "call"];
const ANSWER_ROOTS: &[&str] = &["input", "settings", "call", "response"];
const OUTPUT_ROOTS: &[&str] = &["input", "settings", "call", "response", "items"];
const SETTINGS_ROOTS: &[&str] = &["settings"];
const CALL_FIELDS: &[&str] = &["run_id", "step_id", "attempt", "idempotency_key", "now"];
const RESPONSE_FIELDS: &[&str] = &["status", "headers", "body"];

/// Checks a connector's YAML text; returns the connector or every problem found.
pub fn compile(source: &str) -> Result<Connector, Vec<Diagnostic>> {
    let root = yaml::parse(source).map_err(|d| vec![d])?;
    let mut compiler = Compiler::new(source);
    let connector = compiler.connector(&root);
    compiler.finish(connector)
}

impl Compiler<'_> {
    fn connector(&mut self, root: &Node) -> Option<Connector> {
        let fields = self.mapping(root, "the connector", CONNECTOR_FIELDS)?;
        let name = self
            .required(&fields, "connector", "the connector")
            .map(|node| self.connector_name(node));
        let text = |this: &mut Self, field: &str| fields.get(field).map(|n| this.string(n, field));
        let version = text(self, "version");
        let description = text(self, "description");
        let documentation = text(self, "documentation");
        let mut settings = fields
            .get("settings")
            .map(|n| self.settings(n))
            .unwrap_or_default();
        // `base_url` and `hosts` are always settings: the configuration may point them elsewhere.
        settings.entry("base_url".into()).or_insert(Setting {
            description: Some("Where the API is.".into()),
            default: None,
        });
        settings.entry("hosts".into()).or_insert(Setting {
            description: Some("Hosts allowed beside the connector's own.".into()),
            default: Some(serde_json::Value::Array(Vec::new())),
        });

        let setting_names: Vec<&str> = settings.keys().map(String::as_str).collect();
        let base_url = fields
            .get("base_url")
            .map(|node| self.url_template(node, "base_url", &setting_names));
        let hosts = fields
            .get("hosts")
            .map(|n| self.string_list(n, "hosts"))
            .unwrap_or_default();
        let secrets = fields
            .get("secrets")
            .map(|n| self.connector_secrets(n))
            .unwrap_or_default();
        let auth = fields
            .get("auth")
            .map(|n| self.auth(n, &secrets, &setting_names))
            .unwrap_or(Auth::None);
        if base_url.is_none() && !matches!(auth, Auth::Url { .. }) {
            self.required(&fields, "base_url", "the connector");
        }
        let actions = match self.required(&fields, "actions", "the connector") {
            Some(node) => self.actions(node, &setting_names),
            None => BTreeMap::new(),
        };
        Some(Connector {
            name: name?,
            version,
            description,
            documentation,
            base_url,
            hosts,
            settings,
            secrets,
            auth,
            actions,
        })
    }

    fn connector_name(&mut self, node: &Node) -> String {
        let name = self.string(node, "connector");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
        if !valid {
            self.error_with_hint(
                "invalid-name",
                node.pos,
                format!("`{name}` is not a valid connector name"),
                "use lowercase letters, digits, `-` and `_`, starting with a letter: steps write `uses: <connector>/<action>`",
            );
        }
        if name == crate::PLAYBOOK_CALL || name == "core" {
            self.error(
                "invalid-name",
                node.pos,
                format!("`{name}` is reserved: `uses: {name}/…` means something else"),
            );
        }
        name
    }

    fn settings(&mut self, node: &Node) -> BTreeMap<String, Setting> {
        let entries = self.named_entries(
            node,
            "settings",
            "settings are read as `settings.<name>`: lowercase letters, digits and `_`",
            "e.g. `settings: { site: { description: Your Jira site } }`",
        );
        let mut settings = BTreeMap::new();
        for (name, value) in entries {
            let Some(fields) = self.mapping(value, &format!("setting `{name}`"), SETTING_FIELDS)
            else {
                continue;
            };
            let description = fields
                .get("description")
                .map(|n| self.string(n, "description"));
            let default = fields.get("default").map(Node::to_json);
            settings.insert(
                name,
                Setting {
                    description,
                    default,
                },
            );
        }
        settings
    }

    fn connector_secrets(&mut self, node: &Node) -> BTreeMap<String, String> {
        let entries = self.named_entries(
            node,
            "secrets",
            "a playbook grants secrets by name: lowercase letters, digits and `_`",
            "name each secret with what it is: `secrets: { api_key: Your API key }`",
        );
        entries
            .into_iter()
            .map(|(name, value)| {
                let description = match &value.value {
                    Value::Null => String::new(),
                    _ => self.string(value, "secret description"),
                };
                (name, description)
            })
            .collect()
    }

    /// The entries of a mapping whose keys are names templates or grants use (`settings`,
    /// `secrets`), each name checked.
    fn named_entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        name_hint: &str,
        shape_hint: &str,
    ) -> Vec<(String, &'n Node)> {
        let Value::Map(entries) = &node.value else {
            self.error_with_hint(
                "wrong-type",
                node.pos,
                format!("`{what}` must be a mapping, found {}", node.kind()),
                shape_hint,
            );
            return Vec::new();
        };
        entries
            .iter()
            .map(|(key, value)| {
                let name = key.scalar_text();
                if !StepId::is_valid(&name) {
                    self.error_with_hint(
                        "invalid-name",
                        key.pos,
                        format!("`{name}` is not a valid name in `{what}`"),
                        name_hint,
                    );
                }
                (name, value)
            })
            .collect()
    }

    fn auth(&mut self, node: &Node, secrets: &BTreeMap<String, String>, settings: &[&str]) -> Auth {
        let Some(fields) = self.mapping(node, "`auth`", AUTH_FIELDS) else {
            return Auth::None;
        };
        let Some(kind_node) = self.required(&fields, "type", "`auth`") else {
            return Auth::None;
        };
        let kind = self.string(kind_node, "type");
        let type_names: Vec<&str> = AUTH_TYPES.iter().map(|(name, _, _)| *name).collect();
        let Some((_, required, optional)) = AUTH_TYPES.iter().find(|(name, _, _)| *name == kind)
        else {
            let hint = suggest(&kind, &type_names)
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("expected one of {}", backticked(&type_names)));
            self.error_with_hint(
                "unknown-auth",
                kind_node.pos,
                format!("unknown auth type `{kind}`"),
                hint,
            );
            return Auth::None;
        };
        for (field, value) in &fields.entries {
            if *field != "type" && !required.contains(field) && !optional.contains(field) {
                let mut takes: Vec<&str> = required.to_vec();
                takes.extend_from_slice(optional);
                self.error_with_hint(
                    "unknown-field",
                    value.pos,
                    format!("auth type `{kind}` has no field `{field}`"),
                    if takes.is_empty() {
                        "it takes no other field".to_owned()
                    } else {
                        format!("it takes {}", backticked(&takes))
                    },
                );
            }
        }
        let mut missing = false;
        for field in *required {
            missing |= self
                .required(&fields, field, &format!("auth `{kind}`"))
                .is_none();
        }
        if missing {
            return Auth::None;
        }
        let text = |this: &mut Self, field: &str| {
            fields
                .get(field)
                .map(|n| this.string(n, field))
                .unwrap_or_default()
        };
        let secret = |this: &mut Self, field: &str| {
            let Some(node) = fields.get(field) else {
                return String::new();
            };
            let name = this.string(node, field);
            this.declared_secret(&name, node.pos, secrets);
            name
        };
        match kind.as_str() {
            "header" => {
                let format = fields
                    .get("format")
                    .map(|n| self.string(n, "format"))
                    .unwrap_or_else(|| "{secret}".into());
                if !format.contains("{secret}")
                    && let Some(node) = fields.get("format")
                {
                    self.error_with_hint(
                        "invalid-auth",
                        node.pos,
                        "`format` does not place the secret",
                        "write `{secret}` where the secret goes, e.g. `Token token={secret}`",
                    );
                }
                let header = text(self, "header");
                if http_token(&header).is_none()
                    && let Some(node) = fields.get("header")
                {
                    self.error(
                        "invalid-auth",
                        node.pos,
                        format!("`{header}` is not a valid header name"),
                    );
                }
                Auth::Header {
                    header,
                    secret: secret(self, "secret"),
                    format,
                }
            }
            "bearer" => Auth::Bearer {
                secret: secret(self, "secret"),
            },
            "basic" => Auth::Basic {
                username: secret(self, "username"),
                password: secret(self, "password"),
            },
            "query" => Auth::Query {
                param: text(self, "param"),
                secret: secret(self, "secret"),
            },
            "body" => Auth::Body {
                field: text(self, "field"),
                secret: secret(self, "secret"),
            },
            "url" => Auth::Url {
                secret: secret(self, "secret"),
            },
            "oauth2" => Auth::OAuth2 {
                token_url: fields
                    .get("token_url")
                    .map(|n| self.url_template(n, "token_url", settings))
                    .unwrap_or(Input::Literal(serde_json::Value::Null)),
                client_id: secret(self, "client_id"),
                client_secret: secret(self, "client_secret"),
                scope: fields.get("scope").map(|n| self.string(n, "scope")),
            },
            "login" => {
                let mut login_fields = BTreeMap::new();
                if let Some(node) = fields.get("fields") {
                    match &node.value {
                        Value::Map(entries) if !entries.is_empty() => {
                            for (key, value) in entries {
                                let name = self.string(value, "fields");
                                self.declared_secret(&name, value.pos, secrets);
                                login_fields.insert(key.scalar_text(), name);
                            }
                        }
                        _ => self.error_with_hint(
                            "wrong-type",
                            node.pos,
                            "`fields` must map body fields to secret names",
                            "e.g. `fields: { machine_id: crowdsec_machine_id, password: crowdsec_password }`",
                        ),
                    }
                }
                let path = text(self, "path");
                if !path.starts_with('/')
                    && let Some(node) = fields.get("path")
                {
                    self.error(
                        "invalid-auth",
                        node.pos,
                        "`path` must start with `/`: it is appended to `base_url`",
                    );
                }
                Auth::Login {
                    path,
                    fields: login_fields,
                    token: text(self, "token"),
                    expires: fields.get("expires").map(|n| self.string(n, "expires")),
                }
            }
            _ => Auth::None,
        }
    }

    fn declared_secret(
        &mut self,
        name: &str,
        position: Position,
        secrets: &BTreeMap<String, String>,
    ) {
        if secrets.contains_key(name) {
            return;
        }
        let known: Vec<&str> = secrets.keys().map(String::as_str).collect();
        let hint = suggest(name, &known)
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| {
                format!("declare it under the top-level `secrets:`, e.g. `secrets: {{ {name}: what it is }}`")
            });
        self.error_with_hint(
            "unknown-secret",
            position,
            format!("the secret `{name}` is not declared"),
            hint,
        );
    }

    fn actions(&mut self, node: &Node, settings: &[&str]) -> BTreeMap<String, Action> {
        let mut actions = BTreeMap::new();
        let Value::Map(entries) = &node.value else {
            self.error(
                "wrong-type",
                node.pos,
                format!("`actions` must be a mapping, found {}", node.kind()),
            );
            return actions;
        };
        if entries.is_empty() {
            self.error(
                "missing-field",
                node.pos,
                "the connector declares no action",
            );
        }
        for (key, value) in entries {
            let name = key.scalar_text();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')
                });
            if !valid {
                self.error_with_hint(
                    "invalid-name",
                    key.pos,
                    format!("`{name}` is not a valid action name"),
                    "steps write `uses: <connector>/<action>`: lowercase letters, digits, `-` and `_`",
                );
            }
            if let Some(action) = self.action(value, &name, settings) {
                actions.insert(name, action);
            }
        }
        actions
    }

    fn action(&mut self, node: &Node, name: &str, settings: &[&str]) -> Option<Action> {
        let what = format!("action `{name}`");
        let fields = self.mapping(node, &what, ACTION_FIELDS)?;
        let description = fields
            .get("description")
            .map(|n| self.string(n, "description"));
        let destructive = fields
            .get("destructive")
            .is_some_and(|n| self.boolean(n, "destructive"));
        let input = fields
            .get("input")
            .map(|n| self.input_schema(n))
            .unwrap_or_else(|| serde_json::json!({"type": "object"}));
        let request = match self.required(&fields, "request", &what) {
            Some(node) => self.request(node, settings)?,
            None => return None,
        };
        let ok = fields.get("ok").map(|n| self.statuses(n, "ok"));
        let retry = fields
            .get("retry")
            .map(|n| self.statuses(n, "retry"))
            .unwrap_or_else(|| DEFAULT_RETRY_STATUSES.to_vec());
        let error = fields
            .get("error")
            .map(|n| self.checked_input(n, ANSWER_ROOTS, settings, "`error`"));
        let fail_if = fields.get("fail_if").map(|node| {
            let text = match &node.value {
                Value::Bool(b) => b.to_string(),
                _ => self.string(node, "fail_if"),
            };
            let condition = Condition::from_text(&text, self.text_position(node));
            self.check_connector_source(
                &condition.source,
                Kind::Expression,
                ANSWER_ROOTS,
                settings,
                "`fail_if`",
            );
            condition
        });
        let error_kind = fields
            .get("error_kind")
            .map(|n| self.checked_input(n, ANSWER_ROOTS, settings, "`error_kind`"));
        if let Some(node) = fields.get("error_kind")
            && let Value::String(kind) = &node.value
            && !kind.contains("{{")
            && ErrorKind::parse(kind).is_none()
        {
            let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
            self.error_with_hint(
                "unknown-error-kind",
                node.pos,
                format!("`{kind}` is not an error kind"),
                format!("expected one of {}", backticked(&kinds)),
            );
        }
        let paginate = fields
            .get("paginate")
            .and_then(|n| self.paginate(n, settings));
        let output = fields
            .get("output")
            .map(|n| self.checked_input(n, OUTPUT_ROOTS, settings, "`output`"));
        if paginate.is_none()
            && let Some(output) = &output
            && output
                .sources()
                .iter()
                .any(|(source, _)| mentions_root(&source.text, "items"))
        {
            self.error_with_hint(
                "unknown-reference",
                fields.get("output").map_or(node.pos, |n| n.pos),
                "`items` exists only in actions that `paginate`",
                "read the answer as `response.body`",
            );
        }
        Some(Action {
            description,
            destructive,
            input,
            request,
            ok,
            retry,
            fail_if,
            error,
            error_kind,
            paginate,
            output,
        })
    }

    fn input_schema(&mut self, node: &Node) -> serde_json::Value {
        let schema = node.to_json();
        if !schema.is_object() {
            self.error_with_hint(
                "wrong-type",
                node.pos,
                format!("`input` must be a JSON Schema (a mapping), found {}", node.kind()),
                "e.g. `input: { type: object, required: [ip], properties: { ip: { type: string } } }`",
            );
            return serde_json::json!({"type": "object"});
        }
        if let Err(error) = jsonschema::meta::validate(&schema) {
            self.error_with_hint(
                "invalid-schema",
                node.pos,
                format!("`input` is not a valid JSON Schema: {error}"),
                "see https://json-schema.org/understanding-json-schema/",
            );
        }
        schema
    }

    fn statuses(&mut self, node: &Node, what: &str) -> Vec<u16> {
        one_or_many(node)
            .into_iter()
            .map(|item| self.integer(item, what, 100, 599) as u16)
            .collect()
    }

    fn request(&mut self, node: &Node, settings: &[&str]) -> Option<Request> {
        let fields = self.mapping(node, "`request`", REQUEST_FIELDS)?;
        let method = match fields.get("method") {
            Some(node) => {
                let method = self.string(node, "method").to_ascii_uppercase();
                if !METHODS.contains(&method.as_str()) {
                    self.error_with_hint(
                        "invalid-method",
                        node.pos,
                        format!("`{method}` is not a method connectors use"),
                        format!("expected one of {}", backticked(METHODS)),
                    );
                }
                method
            }
            None => "GET".into(),
        };
        let target = match (fields.get("path"), fields.get("url")) {
            (Some(path), Some(url)) => {
                self.error_with_hint(
                    "conflicting-fields",
                    url.pos,
                    "a request has a `path` or a `url`, not both",
                    "`path` is appended to `base_url`; `url` is absolute",
                );
                Target::Path(self.checked_input(path, REQUEST_ROOTS, settings, "`path`"))
            }
            (Some(path), None) => {
                if let Value::String(text) = &path.value
                    && !text.is_empty()
                    && !text.starts_with('/')
                    && !text.starts_with("{{")
                {
                    self.error_with_hint(
                        "invalid-path",
                        path.pos,
                        "`path` must start with `/`: it is appended to `base_url`",
                        format!("write `/{text}`"),
                    );
                }
                Target::Path(self.checked_input(path, REQUEST_ROOTS, settings, "`path`"))
            }
            (None, Some(url)) => {
                Target::Url(self.checked_input(url, REQUEST_ROOTS, settings, "`url`"))
            }
            (None, None) => Target::Path(Input::Literal(serde_json::Value::String(String::new()))),
        };
        let pairs = |this: &mut Self, field: &str| {
            fields
                .get(field)
                .map(|n| this.pairs(n, field, settings))
                .unwrap_or_default()
        };
        let query = pairs(self, "query");
        let headers = pairs(self, "headers");
        for (name, _) in &headers {
            if http_token(name).is_none()
                && let Some(node) = fields.get("headers")
            {
                self.error(
                    "invalid-header",
                    node.pos,
                    format!("`{name}` is not a valid header name"),
                );
            }
        }
        let body = match (fields.get("body"), fields.get("form")) {
            (Some(_), Some(form)) => {
                self.error(
                    "conflicting-fields",
                    form.pos,
                    "a request has a JSON `body` or a `form`, not both",
                );
                Body::None
            }
            (Some(body), None) => {
                Body::Json(self.checked_input(body, REQUEST_ROOTS, settings, "`body`"))
            }
            (None, Some(_)) => Body::Form(pairs(self, "form")),
            (None, None) => Body::None,
        };
        Some(Request {
            method,
            target,
            query,
            headers,
            body,
        })
    }

    /// A mapping of names to values that may be templates (query parameters, headers, form
    /// fields).
    fn pairs(&mut self, node: &Node, what: &str, settings: &[&str]) -> Vec<(String, Input)> {
        let Value::Map(entries) = &node.value else {
            self.error(
                "wrong-type",
                node.pos,
                format!("`{what}` must be a mapping, found {}", node.kind()),
            );
            return Vec::new();
        };
        entries
            .iter()
            .map(|(key, value)| {
                (
                    key.scalar_text(),
                    self.checked_input(value, REQUEST_ROOTS, settings, "a request"),
                )
            })
            .collect()
    }

    fn paginate(&mut self, node: &Node, settings: &[&str]) -> Option<Paginate> {
        let fields = self.mapping(node, "`paginate`", PAGINATE_FIELDS)?;
        let items = self
            .required(&fields, "items", "`paginate`")
            .map(|n| self.checked_input(n, ANSWER_ROOTS, settings, "`paginate`"));
        let next = self
            .required(&fields, "next", "`paginate`")
            .map(|n| self.checked_input(n, ANSWER_ROOTS, settings, "`paginate`"));
        let max_pages = fields
            .get("max_pages")
            .map(|n| self.integer(n, "max_pages", 1, u64::from(MAX_PAGES_LIMIT)) as u32)
            .unwrap_or(DEFAULT_MAX_PAGES);
        Some(Paginate {
            items: items?,
            next: next?,
            max_pages,
        })
    }

    /// `base_url` and `token_url`: a URL, or a template over `settings` that renders one.
    fn url_template(&mut self, node: &Node, what: &'static str, settings: &[&str]) -> Input {
        let input = self.checked_input(node, SETTINGS_ROOTS, settings, what);
        // A template is checked when it renders; any other value that is not a URL text (a
        // number, a list, `null` from an empty `base_url:`) is refused here.
        let url = match &input {
            Input::Expression(_) | Input::Template(_) => true,
            Input::Literal(serde_json::Value::String(url)) => {
                url.starts_with("https://") || url.starts_with("http://")
            }
            Input::Literal(_) | Input::List(_) | Input::Map(_) => false,
        };
        if !url {
            self.error_with_hint(
                "invalid-url",
                node.pos,
                format!("`{what}` must be an `https://` (or `http://`) URL"),
                "e.g. `https://api.example.com/v2`",
            );
        }
        input
    }

    /// Any value whose strings may be templates, with each template checked against the
    /// variables its place may read.
    fn checked_input(
        &mut self,
        node: &Node,
        roots: &[&str],
        settings: &[&str],
        place: &'static str,
    ) -> Input {
        let input = self.input(node);
        for (source, kind) in input.sources() {
            self.check_connector_source(source, kind, roots, settings, place);
        }
        input
    }

    fn check_connector_source(
        &mut self,
        source: &Source,
        kind: Kind,
        roots: &[&str],
        settings: &[&str],
        place: &'static str,
    ) {
        let analysis = match template::analyze(source, kind) {
            Ok(analysis) => analysis,
            Err((position, message)) => {
                self.error_with_hint(
                    "template-syntax",
                    position,
                    format!("`{}` — invalid template: {message}", source.text.trim()),
                    syntax_hint(&message),
                );
                return;
            }
        };
        let mut unknown = false;
        for path in analysis.paths {
            let mut segments = path.split('.');
            let root = segments.next().unwrap_or_default();
            let second = segments.next();
            if template::is_global_function(root) {
                continue;
            }
            let problem = if !roots.contains(&root) {
                let hint = match root {
                    "secrets" => {
                        "connectors never see secrets: the host attaches them as `auth` says"
                            .to_owned()
                    }
                    "response" | "items" => format!("the answer is not there yet in {place}"),
                    _ => suggest(root, roots)
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| format!("here you can use {}", backticked(roots))),
                };
                Some((format!("`{root}` cannot be used in {place}"), hint))
            } else {
                match (root, second) {
                    ("settings", Some(key)) => {
                        known_key(key, settings.iter().copied(), "settings").err()
                    }
                    ("call", Some(key)) => {
                        known_key(key, CALL_FIELDS.iter().copied(), "call").err()
                    }
                    ("response", Some(key)) => {
                        known_key(key, RESPONSE_FIELDS.iter().copied(), "response").err()
                    }
                    _ => None,
                }
            };
            if let Some((message, hint)) = problem {
                let position = source
                    .text
                    .find(root)
                    .map(|offset| template::position_in(source, offset))
                    .unwrap_or(source.position);
                self.error_with_hint("unknown-reference", position, message, hint);
                unknown = true;
            }
        }
        if let Some((position, message)) = analysis.refused.filter(|_| !unknown) {
            self.error_with_hint(
                "template-sandbox",
                position,
                format!("`{}` — {message}", source.text.trim()),
                "see what templates may do in the template reference in docs/playbooks.md",
            );
        }
    }
}

/// Whether template text reads the variable `root`.
fn mentions_root(text: &str, root: &str) -> bool {
    text.match_indices(root).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + root.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// `name` if it is an HTTP token (a valid header name).
fn http_token(name: &str) -> Option<&str> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    valid.then_some(name)
}
