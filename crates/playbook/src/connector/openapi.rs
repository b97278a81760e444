//! OpenAPI 3 → connector YAML, for `riposte connector import`.
//!
//! [`import`] reads an OpenAPI 3.0 or 3.1 document (YAML or JSON) into the crate's position-keeping
//! [`Node`] tree and writes a connector a person then reviews: each operation becomes an action, its
//! parameters and JSON body typed `input` properties, `servers[0]` the `base_url` (server variables
//! become settings), the first usable security scheme the `auth`. Everything it cannot express is
//! returned as an `openapi-unmapped` [`Diagnostic`] at the document's line and column, never
//! silently dropped. docs/connectors.md ("Importing an OpenAPI document") is the user's view.
//!
//! Bounds: documents up to [`MAX_OPENAPI_BYTES`] (vendor documents are often bigger than a
//! playbook may be, so the parse has its own, larger budget), local `$ref`s followed through at
//! most [`MAX_SCHEMA_DEPTH`] levels of nesting with cycles cut, at most [`MAX_SCHEMA_NODES`]
//! schema nodes per action, and a result no bigger than a connector may be
//! ([`MAX_PLAYBOOK_BYTES`]). Like the rest of the crate, this does no I/O.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use crate::diagnostic::{Diagnostic, FileDiagnostics, Position};
use crate::error::Error;
use crate::yaml::{MAX_PLAYBOOK_BYTES, Node, Value};

/// Largest OpenAPI document `import` reads, in bytes. Vendor documents run to megabytes.
pub const MAX_OPENAPI_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting of schemas written into an action's `input`; deeper parts accept anything.
pub const MAX_SCHEMA_DEPTH: usize = 10;
/// Most schema nodes written for one action's `input`, against `$ref` graphs that fan out.
pub const MAX_SCHEMA_NODES: usize = 2_000;
/// The code of every diagnostic about something the importer could not map.
pub const UNMAPPED: &str = "openapi-unmapped";

/// Longest chain of `$ref`s to `$ref`s followed for parameters, bodies and responses.
const MAX_REF_HOPS: usize = 16;
/// Words templates read as keywords, never as attribute names.
const TEMPLATE_KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "loop",
];
/// Words a plain YAML scalar could be read as, quoted when they are keys.
const YAML_WORDS: &[&str] = &[
    "null", "true", "false", "yes", "no", "on", "off", "y", "n", "~",
];

/// A connector written from an OpenAPI document, and what of the document it does not express.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The connector's YAML text, with a header comment naming the document.
    pub yaml: String,
    /// Every part of the document that was not mapped, at its line and column, in document order.
    pub unmapped: Vec<Diagnostic>,
}

/// Writes a connector named `name` from an OpenAPI 3 document (YAML or JSON text).
///
/// Fails only when there is nothing to import: the name is not a connector name, the text is
/// not an OpenAPI 3 document, or the result would exceed a connector's size limit. The error is
/// [`Error::Invalid`] whose `file` is a placeholder the caller replaces with the document's path.
pub fn import(source: &str, name: &str) -> Result<Imported, Error> {
    let invalid = |diagnostic: Diagnostic| {
        Error::Invalid(FileDiagnostics {
            file: "the OpenAPI document".to_owned(),
            source: source.to_owned(),
            diagnostics: vec![diagnostic],
        })
    };
    if !valid_connector_name(name) {
        return Err(invalid(
            Diagnostic::error(
                "invalid-name",
                Position::START,
                format!("`{name}` is not a valid connector name"),
            )
            .with_hint("use lowercase letters, digits, `-` and `_`, starting with a letter"),
        ));
    }
    let root = parse(source).map_err(invalid)?;
    let version = get(&root, "openapi").map(Node::scalar_text);
    match version.as_deref() {
        Some(version) if version.starts_with("3.") => {}
        _ => {
            let (position, message, hint) = match get(&root, "swagger") {
                Some(node) => (
                    node.pos,
                    "this is a Swagger 2.0 document; only OpenAPI 3.0 and 3.1 are imported",
                    "convert it to OpenAPI 3 first (e.g. with swagger2openapi)",
                ),
                None => (
                    root.pos,
                    "this is not an OpenAPI 3 document: it has no `openapi: 3.x` field",
                    "import the vendor's OpenAPI 3.0 or 3.1 description of its API",
                ),
            };
            return Err(invalid(
                Diagnostic::error("not-openapi", position, message).with_hint(hint),
            ));
        }
    }
    let mut importer = Importer {
        root: &root,
        name: name.to_owned(),
        unmapped: Vec::new(),
        reported: HashSet::new(),
    };
    let yaml = importer.connector(version.as_deref().unwrap_or("3"));
    if yaml.len() > MAX_PLAYBOOK_BYTES {
        return Err(invalid(
            Diagnostic::error(
                "too-large",
                Position::START,
                format!(
                    "the connector would be {} bytes; connectors are limited to {MAX_PLAYBOOK_BYTES} bytes",
                    yaml.len()
                ),
            )
            .with_hint("import a document that describes fewer operations"),
        ));
    }
    let mut unmapped = importer.unmapped;
    unmapped.sort_by_key(|d| d.position);
    Ok(Imported { yaml, unmapped })
}

/// Parses the document with a budget sized for vendor documents rather than playbooks.
fn parse(source: &str) -> Result<Node, Diagnostic> {
    if source.len() > MAX_OPENAPI_BYTES {
        return Err(Diagnostic::error(
            "too-large",
            Position::START,
            format!(
                "the document is {} bytes; OpenAPI documents are imported up to {MAX_OPENAPI_BYTES} bytes",
                source.len()
            ),
        ));
    }
    if let Some(offset) = source.find('\0') {
        let line = source[..offset].matches('\n').count() as u32 + 1;
        let column = source[..offset]
            .rsplit('\n')
            .next()
            .map_or(1, |l| l.chars().count() as u32 + 1);
        return Err(Diagnostic::error(
            "yaml",
            Position::new(line, column),
            "the document contains a NUL byte",
        ));
    }
    // JSON may indent with tabs, which YAML refuses. A tab can stand in JSON only between tokens
    // (inside strings it must be escaped), so a space in its place changes no value and no
    // position.
    let text = if source.trim_start().starts_with('{') && source.contains('\t') {
        Cow::Owned(source.replace('\t', " "))
    } else {
        Cow::Borrowed(source)
    };
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 4_000_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 128,
            max_documents: 2,
            max_nodes: 1_000_000,
            max_total_scalar_bytes: MAX_OPENAPI_BYTES,
        },
        alias_limits: serde_saphyr::options::AliasLimits {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 100,
        },
        strict_booleans: true,
    };
    match serde_saphyr::from_str_with_options::<Option<Node>>(&text, options) {
        Ok(Some(node)) => Ok(node),
        Ok(None) => Err(Diagnostic::error(
            "empty",
            Position::START,
            "the document is empty",
        )),
        Err(error) => {
            let position = error
                .location()
                .map(|loc| Position::new(loc.line() as u32, loc.column() as u32))
                .unwrap_or(Position::START);
            let raw = error.without_snippet().to_string();
            let first = raw.lines().next().unwrap_or(&raw).trim();
            let message = first.find(" at line ").map_or(first, |at| &first[..at]);
            Err(Diagnostic::error("yaml", position, message.to_owned()))
        }
    }
}

struct Importer<'a> {
    root: &'a Node,
    name: String,
    unmapped: Vec<Diagnostic>,
    /// Diagnostics already reported, so a shared `$ref` target is named once per message.
    reported: HashSet<(Position, String)>,
}

/// What an action's `input` schema is being written for.
struct SchemaWalk<'a> {
    action: String,
    /// `$ref`s being expanded, innermost last: one met again is a cycle.
    refs: Vec<&'a str>,
    nodes: usize,
    /// Leave out `readOnly` properties: they are answers, never requests.
    request: bool,
}

impl<'a> Importer<'a> {
    fn connector(&mut self, openapi: &str) -> String {
        let root = self.root;
        let info = get(root, "info");
        let title = info
            .and_then(|i| get(i, "title"))
            .map(Node::scalar_text)
            .unwrap_or_else(|| "an untitled API".to_owned());
        let version = info.and_then(|i| get(i, "version")).map(Node::scalar_text);

        let mut notes = Vec::new();
        let (base_url, settings) = self.server(&mut notes);
        let (secrets, auth) = self.auth(&base_url);
        let actions = self.actions();
        if let Some((webhooks, _)) = entry(root, "webhooks") {
            self.report(
                webhooks.pos,
                "`webhooks` are not mapped: connectors make requests, they do not receive them"
                    .to_owned(),
            );
        }

        let mut connector = vec![("connector".to_owned(), Y::Str(self.name.clone()))];
        if let Some(version) = &version {
            connector.push(("version".to_owned(), Y::Str(version.clone())));
        }
        connector.push(("description".to_owned(), Y::Str(one_line(&title, 200))));
        let documentation = get(root, "externalDocs")
            .and_then(|docs| get(docs, "url"))
            .map(Node::scalar_text)
            .unwrap_or_else(|| match &version {
                Some(version) => format!("{title} {version}"),
                None => title.clone(),
            });
        connector.push((
            "documentation".to_owned(),
            Y::Str(one_line(&documentation, 300)),
        ));
        connector.push(("base_url".to_owned(), Y::Str(base_url)));
        if !settings.is_empty() {
            connector.push(("settings".to_owned(), Y::Map(settings)));
        }
        if !secrets.is_empty() {
            connector.push(("secrets".to_owned(), Y::Map(secrets)));
        }
        if let Some(auth) = auth {
            connector.push(("auth".to_owned(), auth));
        }
        connector.push(("actions".to_owned(), Y::Map(actions)));

        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Imported by `riposte connector import` from the OpenAPI {} document {}{}.",
            one_line(openapi, 20),
            one_line(&quote(&title), 200),
            version
                .as_deref()
                .map(|v| format!(" {}", one_line(v, 40)))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "# Review it before use: describe the secrets, pick outputs, then run `riposte validate`."
        );
        for note in notes {
            let _ = writeln!(out, "# {}", one_line(&note, 300));
        }
        write_map(&mut out, &connector, 0);
        out
    }

    /// `base_url` from `servers[0]`, and the settings its variables become.
    fn server(&mut self, notes: &mut Vec<String>) -> (String, Vec<(String, Y)>) {
        let mut settings = Vec::new();
        let servers = get(self.root, "servers").map(items).unwrap_or_default();
        for extra in servers.iter().skip(1) {
            let url = get(extra, "url").map(Node::scalar_text).unwrap_or_default();
            self.report(
                extra.pos,
                format!(
                    "server `{url}` is not mapped: a connector has one base URL, the first server's (the `base_url` setting points it elsewhere)"
                ),
            );
        }
        let Some(server) = servers.first() else {
            notes.push("The document names no server: configure the `server` setting (scheme and host, e.g. https://api.example.com).".to_owned());
            settings.push(setting(
                "server",
                "The API's scheme and host, e.g. https://api.example.com: the document names no server.",
                None,
            ));
            return ("{{ settings.server }}".to_owned(), settings);
        };
        let raw = get(server, "url")
            .map(Node::scalar_text)
            .unwrap_or_default();
        let variables = get(server, "variables");
        let mut url = String::new();
        let mut rest = raw.as_str();
        let mut declared = BTreeSet::new();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            url.push_str(&rest[..open]);
            let variable = &rest[open + 1..close];
            let name = setting_name(variable);
            let _ = write!(url, "{{{{ settings.{name} }}}}");
            if declared.insert(name.clone()) {
                let spec = variables.and_then(|v| get(v, variable));
                let mut description = spec
                    .and_then(|s| get(s, "description"))
                    .map(|d| one_line(&d.scalar_text(), 300))
                    .unwrap_or_else(|| format!("The server URL's `{variable}`."));
                if let Some(choices) = spec.and_then(|s| get(s, "enum")) {
                    let choices: Vec<String> = items(choices)
                        .iter()
                        .map(|c| format!("`{}`", c.scalar_text()))
                        .collect();
                    let _ = write!(description, " One of {}.", choices.join(", "));
                }
                let default = spec
                    .and_then(|s| get(s, "default"))
                    .map(|d| Y::Str(d.scalar_text()));
                settings.push(setting(&name, &description, default));
            }
            rest = &rest[close + 1..];
        }
        url.push_str(rest);
        let absolute = url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("{{ settings.");
        if !absolute {
            let relative = url.trim_start_matches('/');
            notes.push(format!(
                "The document's server URL `{raw}` is relative: configure the `server` setting (scheme and host)."
            ));
            settings.push(setting(
                "server",
                &format!(
                    "The API's scheme and host, e.g. https://api.example.com: the document's server URL `{raw}` is relative."
                ),
                None,
            ));
            url = if relative.is_empty() {
                "{{ settings.server }}".to_owned()
            } else {
                format!("{{{{ settings.server }}}}/{relative}")
            };
        }
        while url.ends_with('/') && !url.ends_with("://") {
            url.pop();
        }
        (url, settings)
    }

    /// The `secrets` and `auth` of the first usable security scheme, preferring the ones the
    /// document's top-level `security` names, in its order.
    fn auth(&mut self, base_url: &str) -> (Vec<(String, Y)>, Option<Y>) {
        let Some(schemes) = get(self.root, "components").and_then(|c| get(c, "securitySchemes"))
        else {
            return (Vec::new(), None);
        };
        let Value::Map(entries) = &schemes.value else {
            return (Vec::new(), None);
        };
        let mut order: Vec<String> = Vec::new();
        for requirement in get(self.root, "security").map(items).unwrap_or_default() {
            if let Value::Map(names) = &requirement.value {
                for (name, _) in names {
                    let name = name.scalar_text();
                    if !order.contains(&name) {
                        order.push(name);
                    }
                }
            }
        }
        for (name, _) in entries {
            let name = name.scalar_text();
            if !order.contains(&name) {
                order.push(name);
            }
        }
        let mut chosen: Option<(String, MappedAuth)> = None;
        for scheme_name in order {
            let Some(node) = entries
                .iter()
                .find(|(k, _)| k.scalar_text() == scheme_name)
                .map(|(_, v)| v)
            else {
                continue;
            };
            let Some(scheme) = self.deref(node, &format!("security scheme `{scheme_name}`")) else {
                continue;
            };
            match self.scheme(&scheme_name, scheme, base_url) {
                Ok(mapped) => match &chosen {
                    None => chosen = Some((scheme_name, mapped)),
                    Some((used, _)) => {
                        let used = used.clone();
                        self.report(
                            scheme.pos,
                            format!(
                                "security scheme `{scheme_name}` is not mapped: a connector authenticates one way, and this one uses `{used}`"
                            ),
                        );
                    }
                },
                Err(why) => self.report(
                    scheme.pos,
                    format!("security scheme `{scheme_name}` is not mapped: {why}"),
                ),
            }
        }
        match chosen {
            Some((_, mapped)) => (mapped.secrets, Some(mapped.auth)),
            None => (Vec::new(), None),
        }
    }

    /// One security scheme as `(secrets, auth)`, or why it cannot be one.
    fn scheme(
        &mut self,
        scheme_name: &str,
        scheme: &Node,
        base_url: &str,
    ) -> Result<MappedAuth, String> {
        let text = |field: &str| {
            get(scheme, field)
                .map(Node::scalar_text)
                .unwrap_or_default()
        };
        let kind = text("type");
        let origin = format!("security scheme `{scheme_name}`");
        let secret = |suffix: &str| secret_name(&self.name, suffix);
        match kind.as_str() {
            "apiKey" => {
                let param = text("name");
                let location = text("in");
                if param.is_empty() {
                    return Err("it names no parameter".to_owned());
                }
                let key = secret("api_key");
                let (auth, description) = match location.as_str() {
                    "header" => (
                        vec![
                            ("type", Y::str("header")),
                            ("header", Y::Str(param.clone())),
                            ("secret", Y::Str(key.clone())),
                        ],
                        format!("The API key sent in the `{param}` header ({origin})."),
                    ),
                    "query" => (
                        vec![
                            ("type", Y::str("query")),
                            ("param", Y::Str(param.clone())),
                            ("secret", Y::Str(key.clone())),
                        ],
                        format!("The API key sent as the `{param}` query parameter ({origin})."),
                    ),
                    "cookie" => return Err("connectors send no cookies".to_owned()),
                    other => return Err(format!("an API key `in: {other}` is not a place HTTP has")),
                };
                MappedAuth::new(vec![(key, Y::Str(description))], Y::pairs(auth))
            }
            "http" => match text("scheme").to_ascii_lowercase().as_str() {
                "bearer" => {
                    let key = secret("token");
                    MappedAuth::new(
                        vec![(
                            key.clone(),
                            Y::Str(format!("The bearer token ({origin}).")),
                        )],
                        Y::pairs(vec![("type", Y::str("bearer")), ("secret", Y::Str(key))]),
                    )
                }
                "basic" => {
                    let username = secret("username");
                    let password = secret("password");
                    MappedAuth::new(
                        vec![
                            (username.clone(), Y::Str(format!("The user name ({origin})."))),
                            (password.clone(), Y::Str(format!("The password ({origin})."))),
                        ],
                        Y::pairs(vec![
                            ("type", Y::str("basic")),
                            ("username", Y::Str(username)),
                            ("password", Y::Str(password)),
                        ]),
                    )
                }
                other => Err(format!(
                    "HTTP `{other}` authentication is not supported; `basic` and `bearer` are"
                )),
            },
            "oauth2" => {
                let flows = get(scheme, "flows");
                let Some(flow) = flows.and_then(|f| get(f, "clientCredentials")) else {
                    let names: Vec<String> = flows
                        .map(|f| match &f.value {
                            Value::Map(entries) => entries
                                .iter()
                                .map(|(k, _)| format!("`{}`", k.scalar_text()))
                                .collect(),
                            _ => Vec::new(),
                        })
                        .unwrap_or_default();
                    return Err(format!(
                        "only the OAuth 2.0 client-credentials flow is mapped, and it has {}",
                        if names.is_empty() {
                            "no flow".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ));
                };
                let token_url = get(flow, "tokenUrl").map(Node::scalar_text).unwrap_or_default();
                if token_url.is_empty() {
                    return Err("its client-credentials flow has no `tokenUrl`".to_owned());
                }
                let token_url = absolute_url(&token_url, base_url);
                let client_id = secret("client_id");
                let client_secret = secret("client_secret");
                let mut auth = vec![
                    ("type", Y::str("oauth2")),
                    ("token_url", Y::Str(token_url)),
                    ("client_id", Y::Str(client_id.clone())),
                    ("client_secret", Y::Str(client_secret.clone())),
                ];
                if let Some(Value::Map(scopes)) = get(flow, "scopes").map(|s| &s.value)
                    && !scopes.is_empty()
                {
                    let scopes: Vec<String> = scopes.iter().map(|(k, _)| k.scalar_text()).collect();
                    auth.push(("scope", Y::Str(scopes.join(" "))));
                }
                MappedAuth::new(
                    vec![
                        (client_id, Y::Str(format!("The OAuth 2.0 client id ({origin})."))),
                        (
                            client_secret,
                            Y::Str(format!("The OAuth 2.0 client secret ({origin}).")),
                        ),
                    ],
                    Y::pairs(auth),
                )
            }
            "openIdConnect" => Err(
                "OpenID Connect discovery is not mapped; write an `oauth2` auth with the provider's token URL by hand"
                    .to_owned(),
            ),
            "mutualTLS" => Err("connectors do not present client certificates".to_owned()),
            other => Err(format!("`type: {other}` is not a security scheme type")),
        }
    }

    /// Every operation of `paths`, as actions named after their `operationId`.
    fn actions(&mut self) -> Vec<(String, Y)> {
        let mut actions: Vec<(String, Y)> = Vec::new();
        let mut names = HashSet::new();
        let Some(paths) = get(self.root, "paths") else {
            return actions;
        };
        let Value::Map(entries) = &paths.value else {
            return actions;
        };
        for (path_key, item) in entries {
            let path = path_key.scalar_text();
            let Some(item) = self.deref(item, &format!("path `{path}`")) else {
                continue;
            };
            let Value::Map(fields) = &item.value else {
                continue;
            };
            let common = get(item, "parameters");
            for (key, operation) in fields {
                let key_text = key.scalar_text();
                let method = key_text.to_ascii_lowercase();
                match method.as_str() {
                    "get" | "put" | "post" | "delete" | "patch" | "head" => {}
                    "options" | "trace" | "query" => {
                        self.report(
                            key.pos,
                            format!(
                                "`{} {path}` is not mapped: connectors send GET, POST, PUT, PATCH, DELETE and HEAD",
                                method.to_ascii_uppercase()
                            ),
                        );
                        continue;
                    }
                    "servers" => {
                        self.report(
                            key.pos,
                            format!(
                                "the servers of `{path}` are not mapped: every action uses the connector's base URL"
                            ),
                        );
                        continue;
                    }
                    _ => continue,
                }
                let base = operation_name(get(operation, "operationId"), &method, &path);
                let mut name = base.clone();
                let mut n = 2;
                while !names.insert(name.clone()) {
                    let suffix = format!("-{n}");
                    name = format!("{}{suffix}", truncate(&base, 64 - suffix.len()));
                    n += 1;
                }
                if let Some(action) = self.action(&name, &method, &path, operation, common) {
                    actions.push((name, action));
                }
            }
        }
        actions
    }

    fn action(
        &mut self,
        name: &str,
        method: &str,
        path: &str,
        operation: &'a Node,
        common: Option<&'a Node>,
    ) -> Option<Y> {
        let mut walk = SchemaWalk {
            action: name.to_owned(),
            refs: Vec::new(),
            nodes: 0,
            request: true,
        };
        let mut properties: Vec<(String, Y)> = Vec::new();
        let mut required: Vec<String> = Vec::new();
        let mut used: HashSet<String> = HashSet::new();
        let mut path_templates: Vec<(String, String)> = Vec::new();
        let mut query: Vec<(String, Y)> = Vec::new();
        let mut headers: Vec<(String, Y)> = Vec::new();

        // The body is `input.body`: claim the name before any parameter does.
        let body = self.body(name, operation, &mut walk);
        let body = match body {
            BodyMapping::Unmappable => return None,
            other => other,
        };
        if !matches!(body, BodyMapping::None) {
            used.insert("body".to_owned());
        }

        for parameter in self.parameters(name, common, get(operation, "parameters")) {
            let Some(param_name) = get(parameter, "name").map(Node::scalar_text) else {
                continue;
            };
            let location = get(parameter, "in")
                .map(Node::scalar_text)
                .unwrap_or_default();
            match location.as_str() {
                "path" | "query" | "header" => {}
                "cookie" => {
                    self.report(
                        parameter.pos,
                        format!(
                            "cookie parameter `{param_name}` of `{name}` is not mapped: connectors send no cookies"
                        ),
                    );
                    continue;
                }
                other => {
                    self.report(
                        parameter.pos,
                        format!(
                            "parameter `{param_name}` of `{name}` is not mapped: `in: {other}` is not a place HTTP has"
                        ),
                    );
                    continue;
                }
            }
            if location == "header"
                && ["accept", "content-type", "authorization"]
                    .contains(&param_name.to_ascii_lowercase().as_str())
            {
                self.report(
                    parameter.pos,
                    format!(
                        "header parameter `{param_name}` of `{name}` is not mapped: OpenAPI ignores it, and the connector's `auth` and the host set these headers"
                    ),
                );
                continue;
            }
            let Some(schema_node) = get(parameter, "schema") else {
                let why = if get(parameter, "content").is_some() {
                    "it is serialized with `content`, which connectors do not do"
                } else {
                    "it has no `schema`"
                };
                self.report(
                    parameter.pos,
                    format!("{location} parameter `{param_name}` of `{name}` is not mapped: {why}"),
                );
                continue;
            };
            let mut schema = self.schema(schema_node, 1, &mut walk);
            if let Some(description) = get(parameter, "description") {
                schema.describe(&description.scalar_text());
            }
            let is_required = location == "path"
                || get(parameter, "required").is_some_and(|r| r.value == Value::Bool(true));
            let has_default = schema.get("default").is_some();
            let input = unique_input(&param_name, &location, &mut used);
            let value = if location == "path" {
                format!("{{{{ {} | urlencode }}}}", input_ref(&input))
            } else if is_required || has_default {
                format!("{{{{ {} }}}}", input_ref(&input))
            } else {
                format!("{{{{ {} | default(none) }}}}", input_ref(&input))
            };
            if is_required {
                required.push(input.clone());
            }
            properties.push((input, schema));
            match location.as_str() {
                "path" => path_templates.push((param_name, value)),
                "query" => query.push((param_name, Y::Str(value))),
                _ => headers.push((param_name, Y::Str(value))),
            }
        }

        // The path, with each `{name}` a template over its input.
        let mut rendered = String::new();
        let mut rest = path;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            rendered.push_str(&rest[..open]);
            let variable = &rest[open + 1..close];
            match path_templates.iter().find(|(n, _)| n == variable) {
                Some((_, template)) => rendered.push_str(template),
                None => {
                    let input = unique_input(variable, "path", &mut used);
                    self.report(
                        operation.pos,
                        format!(
                            "`{{{variable}}}` in the path of `{name}` is not declared as a parameter: it is imported as the required string input `{input}`"
                        ),
                    );
                    let _ = write!(rendered, "{{{{ {} | urlencode }}}}", input_ref(&input));
                    required.push(input.clone());
                    properties.push((input, Y::pairs(vec![("type", Y::str("string"))])));
                }
            }
            rest = &rest[close + 1..];
        }
        rendered.push_str(rest);
        if !rendered.starts_with('/') {
            rendered.insert(0, '/');
        }

        let mut request = vec![
            ("method", Y::Str(method.to_ascii_uppercase())),
            ("path", Y::Str(rendered)),
        ];
        if !query.is_empty() {
            request.push(("query", Y::Map(query)));
        }
        if !headers.is_empty() {
            request.push(("headers", Y::Map(headers)));
        }
        match body {
            BodyMapping::Json {
                schema,
                required: body_required,
            } => {
                if body_required {
                    required.push("body".to_owned());
                }
                properties.push(("body".to_owned(), schema));
                request.push(("body", Y::str("{{ input.body }}")));
            }
            BodyMapping::Form {
                schema,
                fields,
                required: body_required,
            } => {
                if body_required {
                    required.push("body".to_owned());
                }
                properties.push(("body".to_owned(), schema));
                request.push(("form", Y::Map(fields)));
            }
            BodyMapping::None | BodyMapping::Unmappable => {}
        }

        for (field, what) in [
            (
                "callbacks",
                "its callbacks are not mapped: connectors make requests, they do not receive them",
            ),
            (
                "servers",
                "its servers are not mapped: every action uses the connector's base URL",
            ),
        ] {
            if let Some((key, _)) = entry(operation, field) {
                self.report(key.pos, format!("`{name}`: {what}"));
            }
        }

        let mut input = vec![
            ("type", Y::str("object")),
            ("additionalProperties", Y::Bool(false)),
        ];
        if !required.is_empty() {
            input.push((
                "required",
                Y::Seq(required.into_iter().map(Y::Str).collect()),
            ));
        }
        if !properties.is_empty() {
            input.push(("properties", Y::Map(properties)));
        }

        let mut action = Vec::new();
        let text = |field: &str| {
            get(operation, field)
                .map(|n| one_line(&n.scalar_text(), 500))
                .filter(|t| !t.is_empty())
        };
        let mut description = text("summary")
            .or_else(|| text("description"))
            .unwrap_or_else(|| format!("{} {path}", method.to_ascii_uppercase()));
        if let Some(answer) = self.answer(operation) {
            if !description.ends_with(['.', '!', '?']) {
                description.push('.');
            }
            let _ = write!(description, " {answer}");
        }
        action.push(("description", Y::Str(description)));
        action.push(("input", Y::pairs(input)));
        action.push(("request", Y::pairs(request)));
        Some(Y::pairs(action))
    }

    /// The path item's parameters with the operation's, which replace those of the same name and
    /// place; each resolved.
    fn parameters(
        &mut self,
        action: &str,
        common: Option<&'a Node>,
        own: Option<&'a Node>,
    ) -> Vec<&'a Node> {
        let mut merged: Vec<&'a Node> = Vec::new();
        for list in [common, own].into_iter().flatten() {
            for parameter in items(list) {
                let Some(parameter) = self.deref(parameter, &format!("a parameter of `{action}`"))
                else {
                    continue;
                };
                let key = |p: &Node| {
                    (
                        get(p, "name").map(Node::scalar_text),
                        get(p, "in").map(Node::scalar_text),
                    )
                };
                let identity = key(parameter);
                merged.retain(|p| key(p) != identity);
                merged.push(parameter);
            }
        }
        merged
    }

    /// The request body, as the `body` input and what the request sends of it.
    fn body(
        &mut self,
        action: &str,
        operation: &'a Node,
        walk: &mut SchemaWalk<'a>,
    ) -> BodyMapping {
        let Some(body) = get(operation, "requestBody") else {
            return BodyMapping::None;
        };
        let Some(body) = self.deref(body, &format!("the request body of `{action}`")) else {
            return BodyMapping::None;
        };
        let required = get(body, "required").is_some_and(|r| r.value == Value::Bool(true));
        let content: Vec<(&'a Node, &'a Node)> = match get(body, "content").map(|c| &c.value) {
            Some(Value::Map(entries)) => entries.iter().map(|(k, v)| (k, v)).collect(),
            _ => Vec::new(),
        };
        let media = |(key, _): &&(&'a Node, &'a Node)| {
            key.scalar_text()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        };
        let json = content.iter().find(|entry| {
            let media = media(entry);
            media == "application/json" || media.ends_with("+json") || media == "*/*"
        });
        let form = content
            .iter()
            .find(|entry| media(entry) == "application/x-www-form-urlencoded");
        let description = get(body, "description").map(Node::scalar_text);
        if let Some((_, media_type)) = json {
            let mut schema = match get(media_type, "schema") {
                Some(schema) => self.schema(schema, 1, walk),
                None => Y::Map(Vec::new()),
            };
            if let Some(description) = &description {
                schema.describe(description);
            }
            // An optional object body defaults to `{}`, so steps may leave it out; any other
            // optional body is required here: the request has no way to send none.
            let object = schema.get("type") == Some(&Y::str("object"));
            if !required && object {
                schema.set("default", Y::Map(Vec::new()));
            }
            return BodyMapping::Json {
                schema,
                required: required || !object,
            };
        }
        if let Some((key, media_type)) = form {
            let schema_node = get(media_type, "schema");
            let mut schema = match schema_node {
                Some(schema) => self.schema(schema, 1, walk),
                None => Y::Map(Vec::new()),
            };
            let names: Vec<String> = match schema.get("properties") {
                Some(Y::Map(properties)) => properties.iter().map(|(k, _)| k.clone()).collect(),
                _ => Vec::new(),
            };
            if names.is_empty() {
                self.report(
                    key.pos,
                    format!(
                        "the form body of `{action}` is not mapped: its schema lists no properties to send as fields"
                    ),
                );
                return if required {
                    BodyMapping::Unmappable
                } else {
                    BodyMapping::None
                };
            }
            let required_fields: Vec<String> = match schema.get("required") {
                Some(Y::Seq(list)) => list
                    .iter()
                    .filter_map(|r| match r {
                        Y::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let fields = names
                .into_iter()
                .map(|field| {
                    let access = format!("input.body{}", attribute(&field));
                    let template = if required_fields.contains(&field) {
                        format!("{{{{ {access} }}}}")
                    } else {
                        format!("{{{{ {access} | default(none) }}}}")
                    };
                    (field, Y::Str(template))
                })
                .collect();
            if let Some(description) = &description {
                schema.describe(description);
            }
            if !required {
                schema.set("default", Y::Map(Vec::new()));
            }
            return BodyMapping::Form {
                schema,
                fields,
                required,
            };
        }
        let Some((key, _)) = content.first() else {
            return BodyMapping::None;
        };
        let types: Vec<String> = content
            .iter()
            .map(|(k, _)| format!("`{}`", k.scalar_text()))
            .collect();
        if required {
            self.report(
                key.pos,
                format!(
                    "operation `{action}` is not imported: its request body is {}, and connectors send JSON or form fields",
                    types.join(" or ")
                ),
            );
            BodyMapping::Unmappable
        } else {
            self.report(
                key.pos,
                format!(
                    "the optional request body of `{action}` is not mapped: it is {}, and connectors send JSON or form fields",
                    types.join(" or ")
                ),
            );
            BodyMapping::None
        }
    }

    /// A sentence naming the top-level fields of the first 2xx JSON answer, if it has any.
    fn answer(&mut self, operation: &'a Node) -> Option<String> {
        let Value::Map(responses) = &get(operation, "responses")?.value else {
            return None;
        };
        let mut success: Vec<(String, &'a Node)> = responses
            .iter()
            .map(|(k, v)| (k.scalar_text().to_ascii_uppercase(), v))
            .filter(|(code, _)| code.starts_with('2'))
            .collect();
        success.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, response) in success {
            let response = self.deref_quietly(response)?;
            let Some(Value::Map(content)) = get(response, "content").map(|c| &c.value) else {
                continue;
            };
            let Some((_, media_type)) = content.iter().find(|(k, _)| {
                let media = k.scalar_text().to_ascii_lowercase();
                media.starts_with("application/json") || media.contains("+json")
            }) else {
                continue;
            };
            let schema = self.deref_quietly(get(media_type, "schema")?)?;
            let (list, fields) = self.fields(schema);
            if fields.is_empty() {
                return None;
            }
            let shown: Vec<String> = fields.iter().take(12).map(|f| format!("`{f}`")).collect();
            let mut named = shown.join(", ");
            if fields.len() > shown.len() {
                let _ = write!(named, " and {} more", fields.len() - shown.len());
            }
            return Some(if list {
                format!("Answers with a list of objects with {named}.")
            } else {
                format!("Answers with {named}.")
            });
        }
        None
    }

    /// Whether a response schema is a list, and the top-level property names of it (or of its
    /// items), through `allOf`.
    fn fields(&mut self, schema: &'a Node) -> (bool, Vec<String>) {
        let mut list = false;
        let mut schema = schema;
        if get(schema, "type").map(Node::scalar_text).as_deref() == Some("array") {
            let Some(items) = get(schema, "items").and_then(|i| self.deref_quietly(i)) else {
                return (true, Vec::new());
            };
            list = true;
            schema = items;
        }
        let mut fields = Vec::new();
        let mut pending = vec![schema];
        let mut visited = 0;
        while let Some(schema) = pending.pop() {
            visited += 1;
            if visited > 32 {
                break;
            }
            if let Some(Value::Map(properties)) = get(schema, "properties").map(|p| &p.value) {
                for (key, _) in properties {
                    let key = key.scalar_text();
                    if !fields.contains(&key) {
                        fields.push(key);
                    }
                }
            }
            if let Some(parts) = get(schema, "allOf") {
                for part in items(parts).into_iter().rev() {
                    if let Some(part) = self.deref_quietly(part) {
                        pending.push(part);
                    }
                }
            }
        }
        (list, fields)
    }

    /// A JSON Schema (2020-12) for one OpenAPI schema: local `$ref`s expanded, OpenAPI-only
    /// keywords translated or left out.
    fn schema(&mut self, node: &'a Node, depth: usize, walk: &mut SchemaWalk<'a>) -> Y {
        if walk.nodes >= MAX_SCHEMA_NODES {
            if walk.nodes == MAX_SCHEMA_NODES {
                walk.nodes += 1;
                let action = walk.action.clone();
                self.report(
                    node.pos,
                    format!(
                        "the input schema of `{action}` is cut here: it would have more than {MAX_SCHEMA_NODES} nodes, and the rest accepts any value"
                    ),
                );
            }
            return Y::Map(Vec::new());
        }
        walk.nodes += 1;
        if let Value::Bool(b) = node.value {
            return Y::Bool(b);
        }
        if !matches!(node.value, Value::Map(_)) {
            return Y::Map(Vec::new());
        }
        if depth > MAX_SCHEMA_DEPTH {
            let action = walk.action.clone();
            self.report(
                node.pos,
                format!(
                    "the input schema of `{action}` is cut here: it nests deeper than {MAX_SCHEMA_DEPTH} levels, and what is deeper accepts any value"
                ),
            );
            return Y::Map(Vec::new());
        }
        if let Some(reference) = get(node, "$ref") {
            let target = reference.scalar_text();
            let mut resolved = if !target.starts_with('#') {
                self.report(
                    reference.pos,
                    format!(
                        "`$ref: {target}` is not followed: only references inside the document are; the value accepts anything"
                    ),
                );
                Y::Map(Vec::new())
            } else if let Some(at) = walk.refs.iter().position(|r| *r == target) {
                let cycle: Vec<&str> = walk.refs[at..].to_vec();
                self.report(
                    reference.pos,
                    format!(
                        "the recursive schema `{}` is expanded once: deeper values accept anything",
                        cycle.join("` → `")
                    ),
                );
                Y::Map(Vec::new())
            } else {
                match self.pointer(&target) {
                    Some(found) => {
                        let target_text = match &reference.value {
                            Value::String(s) => s.as_str(),
                            _ => "",
                        };
                        walk.refs.push(target_text);
                        let resolved = self.schema(found, depth, walk);
                        walk.refs.pop();
                        resolved
                    }
                    None => {
                        self.report(
                            reference.pos,
                            format!("`$ref: {target}` points at nothing in the document; the value accepts anything"),
                        );
                        Y::Map(Vec::new())
                    }
                }
            };
            // OpenAPI 3.1 lets a reference carry its own description.
            if let Some(description) = get(node, "description") {
                resolved.describe(&description.scalar_text());
            }
            return resolved;
        }

        let mut out: Vec<(String, Y)> = Vec::new();
        let nullable = get(node, "nullable").is_some_and(|n| n.value == Value::Bool(true));
        if let Some(kind) = get(node, "type") {
            let mut kinds: Vec<String> = match &kind.value {
                Value::Seq(list) => list.iter().map(Node::scalar_text).collect(),
                _ => vec![kind.scalar_text()],
            };
            kinds.retain(|k| {
                [
                    "string", "number", "integer", "boolean", "array", "object", "null",
                ]
                .contains(&k.as_str())
            });
            if nullable && !kinds.iter().any(|k| k == "null") && !kinds.is_empty() {
                kinds.push("null".to_owned());
            }
            match kinds.len() {
                0 => {}
                1 => out.push(("type".to_owned(), Y::Str(kinds.remove(0)))),
                _ => out.push((
                    "type".to_owned(),
                    Y::Seq(kinds.into_iter().map(Y::Str).collect()),
                )),
            }
        }
        if let Some(description) = get(node, "description")
            && let Value::String(text) = &description.value
        {
            out.push(("description".to_owned(), Y::Str(text.clone())));
        }
        for field in ["enum", "const", "default"] {
            if let Some(value) = get(node, field) {
                if field == "enum" && !matches!(value.value, Value::Seq(_)) {
                    continue;
                }
                out.push((field.to_owned(), Y::from_node(value)));
            }
        }
        for field in ["format", "pattern"] {
            if let Some(value) = get(node, field)
                && let Value::String(text) = &value.value
            {
                out.push((field.to_owned(), Y::Str(text.clone())));
            }
        }
        for field in [
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "minProperties",
            "maxProperties",
        ] {
            if let Some(count) = get(node, field).and_then(count) {
                out.push((field.to_owned(), Y::Int(count)));
            }
        }
        // OpenAPI 3.0 writes an exclusive bound as a boolean beside `minimum`/`maximum`; 3.1
        // and JSON Schema write the bound itself.
        for (bound, exclusive) in [
            ("minimum", "exclusiveMinimum"),
            ("maximum", "exclusiveMaximum"),
        ] {
            let value = get(node, bound).and_then(number);
            match get(node, exclusive).map(|n| &n.value) {
                Some(Value::Bool(true)) => {
                    if let Some(value) = value {
                        out.push((exclusive.to_owned(), value));
                    }
                }
                Some(Value::Int(_) | Value::Float(_)) => {
                    if let Some(value) = value {
                        out.push((bound.to_owned(), value));
                    }
                    if let Some(limit) = get(node, exclusive).and_then(number) {
                        out.push((exclusive.to_owned(), limit));
                    }
                }
                _ => {
                    if let Some(value) = value {
                        out.push((bound.to_owned(), value));
                    }
                }
            }
        }
        if let Some(value) = get(node, "multipleOf").and_then(number) {
            out.push(("multipleOf".to_owned(), value));
        }
        if let Some(unique) = get(node, "uniqueItems")
            && let Value::Bool(unique) = unique.value
        {
            out.push(("uniqueItems".to_owned(), Y::Bool(unique)));
        }
        if let Some(items) = get(node, "items") {
            let items = self.schema(items, depth + 1, walk);
            out.push(("items".to_owned(), items));
        }
        let mut read_only = Vec::new();
        if let Some(Value::Map(properties)) = get(node, "properties").map(|p| &p.value) {
            let mut converted = Vec::new();
            for (key, value) in properties {
                let key = key.scalar_text();
                if walk.request && self.read_only(value) {
                    read_only.push(key);
                    continue;
                }
                let schema = self.schema(value, depth + 1, walk);
                converted.push((key, schema));
            }
            out.push(("properties".to_owned(), Y::Map(converted)));
        }
        if let Some(required) = get(node, "required")
            && let Value::Seq(names) = &required.value
        {
            let mut kept: Vec<String> = Vec::new();
            for name in names {
                let name = name.scalar_text();
                if !read_only.contains(&name) && !kept.contains(&name) {
                    kept.push(name);
                }
            }
            if !kept.is_empty() {
                out.push((
                    "required".to_owned(),
                    Y::Seq(kept.into_iter().map(Y::Str).collect()),
                ));
            }
        }
        if let Some(additional) = get(node, "additionalProperties") {
            let additional = self.schema(additional, depth + 1, walk);
            out.push(("additionalProperties".to_owned(), additional));
        }
        for field in ["allOf", "anyOf", "oneOf"] {
            if let Some(list) = get(node, field)
                && let Value::Seq(parts) = &list.value
                && !parts.is_empty()
            {
                let parts = parts
                    .iter()
                    .map(|part| self.schema(part, depth + 1, walk))
                    .collect();
                out.push((field.to_owned(), Y::Seq(parts)));
            }
        }
        if let Some(not) = get(node, "not") {
            let not = self.schema(not, depth + 1, walk);
            out.push(("not".to_owned(), not));
        }
        Y::Map(out)
    }

    /// Whether a property's schema (or what it references) is `readOnly: true`.
    fn read_only(&mut self, schema: &'a Node) -> bool {
        let flag =
            |node: &Node| get(node, "readOnly").is_some_and(|r| r.value == Value::Bool(true));
        if flag(schema) {
            return true;
        }
        self.deref_quietly(schema).is_some_and(flag)
    }

    /// Follows `$ref`s to the object they name, reporting a reference that cannot be followed.
    fn deref(&mut self, node: &'a Node, what: &str) -> Option<&'a Node> {
        let mut node = node;
        for _ in 0..MAX_REF_HOPS {
            let Some(reference) = get(node, "$ref") else {
                return Some(node);
            };
            let target = reference.scalar_text();
            if !target.starts_with('#') {
                self.report(
                    reference.pos,
                    format!(
                        "{what} is not mapped: `$ref: {target}` is outside the document, and only references inside it are followed"
                    ),
                );
                return None;
            }
            match self.pointer(&target) {
                Some(found) => node = found,
                None => {
                    self.report(
                        reference.pos,
                        format!("{what} is not mapped: `$ref: {target}` points at nothing in the document"),
                    );
                    return None;
                }
            }
        }
        self.report(
            node.pos,
            format!("{what} is not mapped: its `$ref`s lead to `$ref`s more than {MAX_REF_HOPS} times (a cycle?)"),
        );
        None
    }

    /// [`Self::deref`] for what is only described, never sent: problems are not reported.
    fn deref_quietly(&self, node: &'a Node) -> Option<&'a Node> {
        let mut node = node;
        for _ in 0..MAX_REF_HOPS {
            let Some(reference) = get(node, "$ref") else {
                return Some(node);
            };
            node = self.pointer(&reference.scalar_text())?;
        }
        None
    }

    /// The node a local reference (`#/components/schemas/Name`, a JSON pointer) names.
    fn pointer(&self, reference: &str) -> Option<&'a Node> {
        let path = reference.strip_prefix('#')?;
        let mut node = self.root;
        if path.is_empty() {
            return Some(node);
        }
        for token in path.strip_prefix('/')?.split('/') {
            let token = percent_decode(token).replace("~1", "/").replace("~0", "~");
            node = match &node.value {
                Value::Map(entries) => entries
                    .iter()
                    .find(|(key, _)| key.scalar_text() == token)
                    .map(|(_, value)| value)?,
                Value::Seq(list) => list.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    fn report(&mut self, position: Position, message: String) {
        if self.reported.insert((position, message.clone())) {
            self.unmapped
                .push(Diagnostic::error(UNMAPPED, position, message));
        }
    }
}

/// A security scheme as the connector's `secrets` and `auth`.
struct MappedAuth {
    secrets: Vec<(String, Y)>,
    auth: Y,
}

impl MappedAuth {
    fn new(secrets: Vec<(String, Y)>, auth: Y) -> Result<MappedAuth, String> {
        Ok(MappedAuth { secrets, auth })
    }
}

enum BodyMapping {
    None,
    Json {
        schema: Y,
        required: bool,
    },
    Form {
        schema: Y,
        fields: Vec<(String, Y)>,
        required: bool,
    },
    /// A required body that connectors cannot send: the operation is left out.
    Unmappable,
}

/// A YAML value to write, keys in the order they were added.
#[derive(Debug, Clone, PartialEq)]
enum Y {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

impl Y {
    fn str(text: &str) -> Y {
        Y::Str(text.to_owned())
    }

    fn pairs(entries: Vec<(&str, Y)>) -> Y {
        Y::Map(
            entries
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    }

    /// A literal copy of a document value (`default`, `enum`).
    fn from_node(node: &Node) -> Y {
        match &node.value {
            Value::Null => Y::Null,
            Value::Bool(b) => Y::Bool(*b),
            Value::Int(i) => Y::Int(*i),
            Value::Float(f) => Y::Float(*f),
            Value::String(s) => Y::Str(s.clone()),
            Value::Seq(list) => Y::Seq(list.iter().map(Y::from_node).collect()),
            Value::Map(entries) => Y::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text(), Y::from_node(v)))
                    .collect(),
            ),
        }
    }

    fn get(&self, key: &str) -> Option<&Y> {
        match self {
            Y::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets a key, in place when it exists.
    fn set(&mut self, key: &str, value: Y) {
        if let Y::Bool(true) = self {
            *self = Y::Map(Vec::new());
        }
        if let Y::Map(entries) = self {
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key.to_owned(), value)),
            }
        }
    }

    /// Gives a schema a description when it has none, after its `type`.
    fn describe(&mut self, description: &str) {
        if description.trim().is_empty() || self.get("description").is_some() {
            return;
        }
        if let Y::Bool(true) = self {
            *self = Y::Map(Vec::new());
        }
        if let Y::Map(entries) = self {
            let at = usize::from(entries.first().is_some_and(|(k, _)| k == "type"));
            entries.insert(
                at,
                ("description".to_owned(), Y::Str(description.to_owned())),
            );
        }
    }
}

fn write_map(out: &mut String, entries: &[(String, Y)], indent: usize) {
    for (key, value) in entries {
        push_indent(out, indent);
        out.push_str(&yaml_key(key));
        out.push(':');
        match value {
            Y::Map(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, indent + 2);
            }
            Y::Seq(list) if !inline_seq(list) => {
                out.push('\n');
                write_seq(out, list, indent + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, list: &[Y], indent: usize) {
    for item in list {
        // A nested block starts on the dash's line: write it indented, then swap the first
        // line's indentation for the dash.
        let mut block = String::new();
        match item {
            Y::Map(inner) if !inner.is_empty() => write_map(&mut block, inner, indent + 2),
            Y::Seq(inner) if !inline_seq(inner) => write_seq(&mut block, inner, indent + 2),
            other => {
                push_indent(out, indent);
                out.push_str("- ");
                out.push_str(&inline(other));
                out.push('\n');
                continue;
            }
        }
        push_indent(out, indent);
        out.push_str("- ");
        out.push_str(block.get(indent + 2..).unwrap_or_default());
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Whether a list is written on one line: empty, or scalars only.
fn inline_seq(list: &[Y]) -> bool {
    list.iter().all(|item| match item {
        Y::Map(inner) => inner.is_empty(),
        Y::Seq(inner) => inner.is_empty(),
        _ => true,
    })
}

fn inline(value: &Y) -> String {
    match value {
        Y::Null => "null".to_owned(),
        Y::Bool(b) => b.to_string(),
        Y::Int(i) => i.to_string(),
        Y::Float(f) => {
            serde_json::Number::from_f64(*f).map_or_else(|| "null".to_owned(), |n| n.to_string())
        }
        Y::Str(text) => quote(text),
        Y::Seq(list) => format!(
            "[{}]",
            list.iter().map(inline).collect::<Vec<_>>().join(", ")
        ),
        Y::Map(entries) if entries.is_empty() => "{}".to_owned(),
        Y::Map(entries) => format!(
            "{{ {} }}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", yaml_key(k), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A JSON-style double-quoted scalar, which YAML reads as the same string; characters YAML does
/// not allow in a document are escaped.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A mapping key: plain when YAML reads it back as the same string, else quoted.
fn yaml_key(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !YAML_WORDS.contains(&key.to_ascii_lowercase().as_str());
    if plain { key.to_owned() } else { quote(key) }
}

fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.scalar_text() == key)
            .map(|(_, v)| v),
        _ => None,
    }
}

/// A mapping's entry: the key (for positions) and the value.
fn entry<'n>(node: &'n Node, key: &str) -> Option<(&'n Node, &'n Node)> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.scalar_text() == key)
            .map(|(k, v)| (k, v)),
        _ => None,
    }
}

fn items(node: &Node) -> Vec<&Node> {
    match &node.value {
        Value::Seq(list) => list.iter().collect(),
        _ => Vec::new(),
    }
}

/// A non-negative whole number (`minLength: 1` or `1.0`).
fn count(node: &Node) -> Option<i64> {
    match node.value {
        Value::Int(i) if i >= 0 => Some(i),
        Value::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Some(f as i64),
        _ => None,
    }
}

fn number(node: &Node) -> Option<Y> {
    match node.value {
        Value::Int(i) => Some(Y::Int(i)),
        Value::Float(f) if f.is_finite() => Some(Y::Float(f)),
        _ => None,
    }
}

fn setting(name: &str, description: &str, default: Option<Y>) -> (String, Y) {
    let mut fields = vec![("description", Y::str(description))];
    if let Some(default) = default {
        fields.push(("default", default));
    }
    (name.to_owned(), Y::pairs(fields))
}

/// A server variable's setting name: snake case, clear of the settings every connector has.
fn setting_name(variable: &str) -> String {
    let mut name = identifier(variable, "_");
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name = format!("v_{name}");
    }
    let mut name = truncate(&name, 48).to_owned();
    if matches!(name.as_str(), "base_url" | "hosts" | "server") {
        name.push_str("_variable");
    }
    name
}

/// `<connector>_<suffix>` as a secret name (lowercase, digits, `_`, at most 64 characters).
fn secret_name(connector: &str, suffix: &str) -> String {
    let prefix = identifier(connector, "_");
    format!("{}_{suffix}", truncate(&prefix, 63 - suffix.len()))
}

/// A token URL as an absolute URL: OpenAPI reads a relative one against the server's.
fn absolute_url(url: &str, base_url: &str) -> String {
    if url.starts_with("https://") || url.starts_with("http://") {
        return url.to_owned();
    }
    if let Some(path) = url.strip_prefix('/') {
        // Relative to the server's origin.
        let origin = match base_url.find("://") {
            Some(scheme) => {
                let after = scheme + 3;
                match base_url[after..].find('/') {
                    Some(slash) => &base_url[..after + slash],
                    None => base_url,
                }
            }
            None => base_url,
        };
        return format!("{origin}/{path}");
    }
    format!("{base_url}/{url}")
}

/// An action's name: its `operationId` in kebab case, else the method and the path.
fn operation_name(operation_id: Option<&Node>, method: &str, path: &str) -> String {
    let name = operation_id
        .map(|id| identifier(&id.scalar_text(), "-"))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| identifier(&format!("{method} {path}"), "-"));
    let name = if name.is_empty() {
        method.to_owned()
    } else {
        name
    };
    truncate(&name, 64).trim_end_matches('-').to_owned()
}

/// Words of `raw` (split at non-alphanumerics and at camelCase humps), lowercased and joined
/// with `separator`.
fn identifier(raw: &str, separator: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        let previous = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
        let next = chars.get(i + 1).copied();
        let hump = c.is_ascii_uppercase()
            && previous.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
            });
        if hump && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.push(c.to_ascii_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words.join(separator)
}

/// An input property name for a parameter: its name in snake case, unique among the action's
/// inputs, and readable as `input.<name>` in a template.
fn unique_input(raw: &str, location: &str, used: &mut HashSet<String>) -> String {
    let mut name = identifier(raw, "_");
    if name.is_empty() {
        name = "param".to_owned();
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) || TEMPLATE_KEYWORDS.contains(&name.as_str())
    {
        name = format!("p_{name}");
    }
    let name = truncate(&name, 48).to_owned();
    if used.insert(name.clone()) {
        return name;
    }
    let placed = format!("{name}_{location}");
    if used.insert(placed.clone()) {
        return placed;
    }
    let mut n = 2;
    loop {
        let numbered = format!("{placed}_{n}");
        if used.insert(numbered.clone()) {
            return numbered;
        }
        n += 1;
    }
}

/// `input.<name>` for an input property name [`unique_input`] made.
fn input_ref(name: &str) -> String {
    format!("input.{name}")
}

/// `.<field>` when a template can read the field so, else `["<field>"]`.
fn attribute(field: &str) -> String {
    let plain = field
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !TEMPLATE_KEYWORDS.contains(&field);
    if plain {
        format!(".{field}")
    } else {
        let escaped = field.replace('\\', "\\\\").replace('"', "\\\"");
        format!("[\"{escaped}\"]")
    }
}

fn valid_connector_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
        && name != crate::PLAYBOOK_CALL
        && name != "core"
}

/// Text on one line (whitespace runs become one space), cut to about `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cleaned: String = joined.chars().filter(|c| !c.is_control()).collect();
    if cleaned.chars().count() <= max {
        return cleaned;
    }
    let mut cut: String = cleaned.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{Auth, Body, Connector, Target, compile};
    use crate::template::Input;

    const PAGERDUTY: &str = include_str!("../../../../tests/data/openapi/pagerduty-events-v2.json");
    const CROWDSEC: &str = include_str!("../../../../tests/data/openapi/crowdsec-service-api.json");

    /// A hand-written document with parameters in every place, JSON, form and multipart bodies,
    /// references in and out of the document, and a recursive schema.
    const ACME: &str = r##"openapi: 3.0.3
info:
  title: Acme Threat Intel
  version: "1.2"
servers:
  - url: https://{region}.api.acme.example/v1/
    variables:
      region:
        default: eu
        enum: [eu, us]
        description: Where the account lives.
  - url: https://backup.acme.example/v1
security:
  - key: []
paths:
  /ips/{ip}:
    parameters:
      - $ref: "#/components/parameters/Ip"
    get:
      operationId: getIPReputation
      summary: Reputation of an address.
      parameters:
        - name: maxAgeDays
          in: query
          schema: { type: integer, minimum: 1, maximum: 365, default: 30 }
        - name: verbose
          in: query
          description: Add the reports.
          schema: { type: boolean }
        - name: X-Request-Id
          in: header
          required: true
          schema: { type: string }
        - name: session
          in: cookie
          schema: { type: string }
      responses:
        "200":
          description: OK
          content:
            application/json:
              schema: { $ref: "#/components/schemas/Reputation" }
  /reports:
    post:
      operationId: createReport
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Report" }
      responses:
        "201": { description: Created }
      callbacks:
        done:
          "{$request.body#/url}":
            post:
              responses:
                "200": { description: OK }
  /trees:
    put:
      operationId: put_tree
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Node" }
      responses:
        "204": { description: Stored }
  /login:
    post:
      requestBody:
        content:
          application/x-www-form-urlencoded:
            schema:
              type: object
              required: [user]
              properties:
                user: { type: string }
                remember-me: { type: boolean }
      responses:
        "204": { description: Logged in }
  /files:
    post:
      operationId: uploadFile
      requestBody:
        required: true
        content:
          multipart/form-data:
            schema: { type: object }
      responses:
        "201": { description: Stored }
components:
  parameters:
    Ip:
      name: ip
      in: path
      required: true
      schema: { type: string }
  schemas:
    Reputation:
      type: object
      properties:
        score: { type: integer, minimum: 0, exclusiveMinimum: true }
        country: { type: string }
    Report:
      type: object
      required: [id, ip]
      properties:
        id: { type: string, readOnly: true }
        ip: { type: string, example: 192.0.2.1 }
        comment: { type: string, nullable: true }
        external: { $ref: "other.yaml#/Thing" }
    Node:
      type: object
      properties:
        name: { type: string }
        children:
          type: array
          items: { $ref: "#/components/schemas/Node" }
  securitySchemes:
    key: { type: apiKey, in: header, name: X-Api-Key }
    session: { type: apiKey, in: cookie, name: sid }
"##;

    fn imported(source: &str) -> Imported {
        import(source, "acme").expect("the document imports")
    }

    /// The connector the importer wrote, compiled by the connector compiler.
    fn compiled(imported: &Imported) -> Connector {
        match compile(&imported.yaml) {
            Ok(connector) => connector,
            Err(diagnostics) => panic!(
                "the imported connector does not compile: {diagnostics:#?}\n{}",
                imported.yaml
            ),
        }
    }

    fn messages(imported: &Imported) -> Vec<String> {
        imported
            .unmapped
            .iter()
            .map(|d| format!("{}: {}", d.position, d.message))
            .collect()
    }

    fn has(imported: &Imported, position: &str, fragment: &str) -> bool {
        messages(imported)
            .iter()
            .any(|m| m.starts_with(&format!("{position}: ")) && m.contains(fragment))
    }

    /// The text a request field was written as.
    fn template(input: &Input) -> String {
        match input {
            Input::Literal(serde_json::Value::String(text)) => text.clone(),
            Input::Expression(source) => format!("{{{{ {} }}}}", source.text.trim()),
            Input::Template(source) => source.text.clone(),
            other => panic!("not text: {other:?}"),
        }
    }

    /// `line:column` of the first `needle` in `source`.
    fn at(source: &str, needle: &str) -> String {
        let offset = source.find(needle).expect("the needle is in the document");
        let line = source[..offset].matches('\n').count() + 1;
        let column = source[..offset]
            .rsplit('\n')
            .next()
            .map_or(0, |l| l.chars().count())
            + 1;
        format!("{line}:{column}")
    }

    #[test]
    fn maps_parameters_bodies_servers_and_auth() {
        let imported = imported(ACME);
        let connector = compiled(&imported);
        assert!(imported.yaml.starts_with(
            "# Imported by `riposte connector import` from the OpenAPI 3.0.3 document \"Acme Threat Intel\" 1.2.\n"
        ));
        assert_eq!(connector.name, "acme");
        assert_eq!(connector.version.as_deref(), Some("1.2"));
        let base_url = connector.base_url.as_ref().map(template);
        assert_eq!(
            base_url.as_deref(),
            Some("https://{{ settings.region }}.api.acme.example/v1")
        );
        let region = &connector.settings["region"];
        assert_eq!(region.default, Some(serde_json::json!("eu")));
        assert_eq!(
            region.description.as_deref(),
            Some("Where the account lives. One of `eu`, `us`.")
        );
        assert_eq!(
            connector.auth,
            Auth::Header {
                header: "X-Api-Key".into(),
                secret: "acme_api_key".into(),
                format: "{secret}".into(),
            }
        );
        assert!(connector.secrets.contains_key("acme_api_key"));

        let names: Vec<&str> = connector.actions.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "create-report",
                "get-ip-reputation",
                "post-login",
                "put-tree"
            ]
        );

        let get = &connector.actions["get-ip-reputation"];
        assert_eq!(
            get.description.as_deref(),
            Some("Reputation of an address. Answers with `score`, `country`.")
        );
        assert_eq!(get.request.method, "GET");
        let Target::Path(path) = &get.request.target else {
            panic!("a path")
        };
        assert_eq!(template(path), "/ips/{{ input.ip | urlencode }}");
        let query: Vec<(String, String)> = get
            .request
            .query
            .iter()
            .map(|(k, v)| (k.clone(), template(v)))
            .collect();
        assert_eq!(
            query,
            [
                (
                    "maxAgeDays".to_owned(),
                    "{{ input.max_age_days }}".to_owned()
                ),
                (
                    "verbose".to_owned(),
                    "{{ input.verbose | default(none) }}".to_owned()
                ),
            ]
        );
        let headers: Vec<(String, String)> = get
            .request
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), template(v)))
            .collect();
        assert_eq!(
            headers,
            [(
                "X-Request-Id".to_owned(),
                "{{ input.x_request_id }}".to_owned()
            )]
        );
        assert_eq!(
            get.input,
            serde_json::json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["ip", "x_request_id"],
                "properties": {
                    "ip": { "type": "string" },
                    "max_age_days": { "type": "integer", "default": 30, "minimum": 1, "maximum": 365 },
                    "verbose": { "type": "boolean", "description": "Add the reports." },
                    "x_request_id": { "type": "string" },
                },
            })
        );

        // The JSON body is `input.body`, sent whole; read-only fields are left out of it.
        let create = &connector.actions["create-report"];
        assert!(
            matches!(&create.request.body, Body::Json(body) if template(body) == "{{ input.body }}")
        );
        assert_eq!(create.input["required"], serde_json::json!(["body"]));
        assert_eq!(
            create.input["properties"]["body"],
            serde_json::json!({
                "type": "object",
                "properties": {
                    "ip": { "type": "string" },
                    "comment": { "type": ["string", "null"] },
                    "external": {},
                },
                "required": ["ip"],
            })
        );

        // An optional object body defaults to `{}`.
        let tree = &connector.actions["put-tree"];
        assert_eq!(
            tree.input["properties"]["body"]["default"],
            serde_json::json!({})
        );
        assert!(tree.input.get("required").is_none());

        // A form body's fields come from `input.body`, optional ones left out when absent.
        let login = &connector.actions["post-login"];
        let Body::Form(fields) = &login.request.body else {
            panic!("a form body")
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.clone(), template(v)))
            .collect();
        assert_eq!(
            fields,
            [
                ("user".to_owned(), "{{ input.body.user }}".to_owned()),
                (
                    "remember-me".to_owned(),
                    "{{ input.body[\"remember-me\"] | default(none) }}".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn reports_what_it_cannot_map_where_the_document_says_it() {
        let imported = imported(ACME);
        // The cookie parameter `session` is the mapping after `- ` on line 34.
        assert_eq!(ACME.lines().nth(33), Some("        - name: session"));
        assert!(
            has(
                &imported,
                "34:11",
                "cookie parameter `session` of `get-ip-reputation` is not mapped: connectors send no cookies"
            ),
            "{:#?}",
            messages(&imported)
        );
        for (needle, fragment) in [
            (
                "url: https://backup",
                "server `https://backup.acme.example/v1` is not mapped",
            ),
            (
                "callbacks:",
                "`create-report`: its callbacks are not mapped",
            ),
            (
                "multipart/form-data",
                "operation `upload-file` is not imported",
            ),
            (
                "\"other.yaml#/Thing\"",
                "`$ref: other.yaml#/Thing` is not followed",
            ),
            (
                "\"#/components/schemas/Node\" }\n  securitySchemes",
                "the recursive schema `#/components/schemas/Node` is expanded once",
            ),
            (
                "{ type: apiKey, in: cookie",
                "security scheme `session` is not mapped: connectors send no cookies",
            ),
        ] {
            let position = at(ACME, needle);
            assert!(
                has(&imported, &position, fragment),
                "no `{fragment}` at {position} in {:#?}",
                messages(&imported)
            );
        }
        assert_eq!(imported.unmapped.len(), 7, "{:#?}", messages(&imported));
        assert!(imported.unmapped.iter().all(|d| d.code == UNMAPPED));
        let positions: Vec<Position> = imported.unmapped.iter().map(|d| d.position).collect();
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(positions, sorted, "in document order");
    }

    /// A document with one operation and one security scheme.
    fn with_scheme(scheme: &str) -> String {
        format!(
            "openapi: 3.1.0\ninfo: {{ title: T, version: '1' }}\nservers: [{{ url: 'https://api.example.com/v2' }}]\n\
             paths:\n  /ping:\n    get:\n      operationId: ping\n      responses: {{ '204': {{ description: OK }} }}\n\
             components:\n  securitySchemes:\n    s: {scheme}\n"
        )
    }

    #[test]
    fn maps_each_kind_of_auth() {
        let cases = [
            (
                "{ type: apiKey, in: header, name: X-Key }",
                Auth::Header {
                    header: "X-Key".into(),
                    secret: "acme_api_key".into(),
                    format: "{secret}".into(),
                },
            ),
            (
                "{ type: apiKey, in: query, name: key }",
                Auth::Query {
                    param: "key".into(),
                    secret: "acme_api_key".into(),
                },
            ),
            (
                "{ type: http, scheme: bearer, bearerFormat: JWT }",
                Auth::Bearer {
                    secret: "acme_token".into(),
                },
            ),
            (
                "{ type: http, scheme: Basic }",
                Auth::Basic {
                    username: "acme_username".into(),
                    password: "acme_password".into(),
                },
            ),
        ];
        for (scheme, expected) in cases {
            let imported = imported(&with_scheme(scheme));
            let connector = compiled(&imported);
            assert_eq!(connector.auth, expected, "{scheme}");
            assert!(imported.unmapped.is_empty(), "{:#?}", messages(&imported));
            for secret in connector.auth_secrets() {
                assert!(connector.secrets.contains_key(secret), "{secret} declared");
            }
        }

        let oauth = with_scheme(
            "{ type: oauth2, flows: { clientCredentials: { tokenUrl: /oauth/token, scopes: { read: Read, write: Write } } } }",
        );
        let connector = compiled(&imported(&oauth));
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
        } = &connector.auth
        else {
            panic!("oauth2, not {:?}", connector.auth)
        };
        assert_eq!(template(token_url), "https://api.example.com/oauth/token");
        assert_eq!(
            (client_id.as_str(), client_secret.as_str(), scope.as_deref()),
            ("acme_client_id", "acme_client_secret", Some("read write"))
        );

        for (scheme, why) in [
            (
                "{ type: apiKey, in: cookie, name: sid }",
                "connectors send no cookies",
            ),
            (
                "{ type: http, scheme: digest }",
                "HTTP `digest` authentication is not supported",
            ),
            (
                "{ type: oauth2, flows: { authorizationCode: { authorizationUrl: 'https://a.example/auth', tokenUrl: 'https://a.example/token', scopes: {} } } }",
                "only the OAuth 2.0 client-credentials flow is mapped, and it has `authorizationCode`",
            ),
            (
                "{ type: openIdConnect, openIdConnectUrl: 'https://a.example/.well-known' }",
                "OpenID Connect",
            ),
            ("{ type: mutualTLS }", "client certificates"),
        ] {
            let imported = imported(&with_scheme(scheme));
            let connector = compiled(&imported);
            assert_eq!(connector.auth, Auth::None, "{scheme}");
            assert!(
                has(&imported, "11:8", why),
                "{scheme}: {:#?}",
                messages(&imported)
            );
        }
    }

    #[test]
    fn a_relative_or_missing_server_becomes_a_setting() {
        for (servers, base_url) in [
            (
                "servers: [{ url: /api/v1/ }]\n",
                "{{ settings.server }}/api/v1",
            ),
            ("servers: [{ url: / }]\n", "{{ settings.server }}"),
            ("", "{{ settings.server }}"),
        ] {
            let source = format!(
                "openapi: 3.0.0\ninfo: {{ title: T, version: '1' }}\n{servers}paths:\n  /x:\n    get:\n      responses: {{ '204': {{ description: OK }} }}\n"
            );
            let imported = imported(&source);
            let connector = compiled(&imported);
            assert_eq!(
                connector.base_url.as_ref().map(template).as_deref(),
                Some(base_url)
            );
            assert_eq!(
                connector.settings["server"].default, None,
                "must be configured"
            );
            assert!(
                imported.yaml.contains("\n# The document"),
                "{}",
                imported.yaml
            );
            assert!(connector.actions.contains_key("get-x"));
        }
    }

    #[test]
    fn reference_cycles_and_fan_outs_terminate() {
        let source = r##"openapi: 3.0.0
info: { title: Loops, version: "1" }
servers: [{ url: "https://api.example.com" }]
paths:
  /a:
    post:
      operationId: a
      parameters:
        - $ref: "#/components/parameters/P1"
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/A" }
      responses: { "204": { description: OK } }
  /self:
    post:
      operationId: self
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Self" }
      responses: { "204": { description: OK } }
  /wide:
    post:
      operationId: wide
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/W0" }
      responses: { "204": { description: OK } }
components:
  parameters:
    P1: { $ref: "#/components/parameters/P2" }
    P2: { $ref: "#/components/parameters/P1" }
  schemas:
    A:
      type: object
      properties:
        b: { $ref: "#/components/schemas/B" }
    B:
      type: object
      properties:
        a: { $ref: "#/components/schemas/A" }
    Self: { $ref: "#/components/schemas/Self" }
"##;
        // Twenty levels, each referring to the next twice: 2^20 paths without a budget.
        let mut source = source.to_owned();
        for level in 0..20 {
            let next = level + 1;
            source.push_str(&format!(
                "    W{level}:\n      type: object\n      properties:\n        l: {{ $ref: \"#/components/schemas/W{next}\" }}\n        r: {{ $ref: \"#/components/schemas/W{next}\" }}\n"
            ));
        }
        source.push_str("    W20: { type: string }\n");
        let imported = imported(&source);
        let connector = compiled(&imported);
        let all = messages(&imported);
        assert!(
            all.iter().any(|m| m.contains(
                "a parameter of `a` is not mapped: its `$ref`s lead to `$ref`s more than 16 times"
            )),
            "{all:#?}"
        );
        let position = at(&source, "\"#/components/schemas/A\" }\n    Self");
        assert!(
            has(
                &imported,
                &position,
                "the recursive schema `#/components/schemas/A` → `#/components/schemas/B` is expanded once"
            ),
            "{all:#?}"
        );
        let position = at(&source, "\"#/components/schemas/Self\" }\n    W0");
        assert!(
            has(
                &imported,
                &position,
                "the recursive schema `#/components/schemas/Self` is expanded once"
            ),
            "{all:#?}"
        );
        assert!(
            messages(&imported)
                .iter()
                .any(|m| m.contains("the input schema of `wide` is cut"))
        );
        assert_eq!(
            connector.actions["a"].input["properties"]["body"],
            serde_json::json!({
                "type": "object",
                "properties": { "b": { "type": "object", "properties": { "a": {} } } },
            })
        );
        assert!(imported.yaml.len() < MAX_PLAYBOOK_BYTES);
    }

    #[test]
    fn imports_the_pagerduty_events_api() {
        let imported = imported(PAGERDUTY);
        let connector = compiled(&imported);
        assert!(imported.unmapped.is_empty(), "{:#?}", messages(&imported));
        assert_eq!(
            connector.base_url.as_ref().map(template).as_deref(),
            Some("https://events.pagerduty.com/v2")
        );
        assert_eq!(connector.auth, Auth::None);
        let event = &connector.actions["create-v2-event"];
        assert_eq!(event.request.method, "POST");
        assert!(
            matches!(&event.request.target, Target::Path(path) if template(path) == "/enqueue")
        );
        assert_eq!(
            event.input["properties"]["body"]["required"],
            serde_json::json!(["routing_key", "event_action"])
        );
        assert_eq!(
            event.input["properties"]["body"]["properties"]["payload"]["required"],
            serde_json::json!(["summary", "severity", "source"])
        );
        assert_eq!(
            event.description.as_deref(),
            Some("Send an event to PagerDuty. Answers with `status`, `dedup_key`, `message`.")
        );
    }

    #[test]
    fn imports_the_crowdsec_service_api() {
        let imported = imported(CROWDSEC);
        let connector = compiled(&imported);
        assert_eq!(
            messages(&imported),
            [
                "1:7800: operation `upload-blocklist-content` is not imported: its request body is `multipart/form-data`, and connectors send JSON or form fields",
                "1:62169: security scheme `BasicAuth` is not mapped: a connector authenticates one way, and this one uses `ApiKeyAuth`",
            ]
        );
        assert_eq!(
            connector.auth,
            Auth::Header {
                header: "x-api-key".into(),
                secret: "acme_api_key".into(),
                format: "{secret}".into(),
            }
        );
        assert_eq!(
            connector.base_url.as_ref().map(template).as_deref(),
            Some("https://admin.api.crowdsec.net/v1")
        );
        assert_eq!(
            connector.actions.len(),
            27,
            "28 operations, less the upload"
        );
        let download = &connector.actions["download-blocklist-content"];
        let headers: Vec<&str> = download
            .request
            .headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(headers, ["if-modified-since", "if-none-match"]);
        let add = &connector.actions["add-ips-to-blocklist"];
        assert_eq!(
            add.input["required"],
            serde_json::json!(["blocklist_id", "body"])
        );
        assert_eq!(
            add.input["properties"]["body"]["required"],
            serde_json::json!(["ips"])
        );
    }

    #[test]
    fn refuses_what_is_not_an_openapi_3_document() {
        let refused = |source: &str, name: &str| match import(source, name) {
            Err(Error::Invalid(file)) => file.diagnostics[0].message.clone(),
            other => panic!("refused, not {other:?}"),
        };
        assert!(refused("swagger: '2.0'\ninfo: {}\n", "acme").contains("Swagger 2.0"));
        assert!(refused("name: a playbook\n", "acme").contains("not an OpenAPI 3 document"));
        assert!(refused("{ \"openapi\": ", "acme").len() > 1);
        assert!(
            refused(&with_scheme("{ type: mutualTLS }"), "Acme")
                .contains("not a valid connector name")
        );
        let huge = format!(
            "openapi: 3.0.0\ndescription: \"{}\"\n",
            "x".repeat(MAX_OPENAPI_BYTES)
        );
        assert!(refused(&huge, "acme").contains("imported up to"));
    }

    #[test]
    fn names_and_scalars_survive_yaml() {
        assert_eq!(identifier("getIPReputation", "-"), "get-ip-reputation");
        assert_eq!(identifier("createV2Event", "-"), "create-v2-event");
        assert_eq!(
            identifier("post /blocklists/{blocklist_id}/ips", "-"),
            "post-blocklists-blocklist-id-ips"
        );
        assert_eq!(identifier("X-Request-ID", "_"), "x_request_id");
        assert_eq!(setting_name("apiVersion"), "api_version");
        assert_eq!(setting_name("1st"), "v_1st");
        assert_eq!(setting_name("hosts"), "hosts_variable");
        let mut used = HashSet::new();
        assert_eq!(unique_input("in", "query", &mut used), "p_in");
        assert_eq!(unique_input("2fa", "query", &mut used), "p_2fa");
        assert_eq!(unique_input("page", "query", &mut used), "page");
        assert_eq!(unique_input("Page", "header", &mut used), "page_header");
        for text in [
            "plain",
            "a \"quoted\" \\ path\nnext",
            "{{ not a template }}",
            "tab\there",
            "\u{85}\u{2028}\u{feff}",
            "yes",
            "null",
            "3.0",
        ] {
            let yaml = format!("key: {}\n{}: 1\n", quote(text), yaml_key(text));
            let node = crate::yaml::parse(&yaml).expect("valid YAML");
            let Value::Map(entries) = &node.value else {
                panic!("a mapping")
            };
            assert_eq!(entries[0].1.value, Value::String(text.to_owned()), "{yaml}");
            assert_eq!(entries[1].0.value, Value::String(text.to_owned()), "{yaml}");
        }
    }
}
