//! `http`: call any HTTP API from a playbook without writing a plugin. Requests pass the host's
//! egress policy like every plugin's: only hosts the playbook grants to `http` are reachable.

use riposte_plugin_sdk::http::Request as HttpRequest;
use riposte_plugin_sdk::{
    Action, Context, Error, Manifest, Plugin, Secret, Value, json, output, parse, plugin,
};
use serde::{Deserialize, Serialize};

struct Http;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// A JSON body (sent with `content-type: application/json`).
    json: Option<Value>,
    /// A text body.
    body: Option<String>,
    /// Statuses that count as success; by default 2xx.
    expect: Option<Vec<u16>>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Serialize)]
struct RequestOutput {
    status: u16,
    headers: std::collections::BTreeMap<String, String>,
    /// The body as JSON when it parses, otherwise as text.
    body: Value,
}

impl Plugin for Http {
    fn manifest() -> Manifest {
        Manifest::new(
            "http",
            env!("CARGO_PKG_VERSION"),
            "A generic, policy-checked HTTP request.",
        )
        .action(
            Action::new(
                "request",
                "Sends one HTTP request and returns status, headers and body. Requests other than GET, HEAD and OPTIONS carry the step's idempotency key as `Idempotency-Key` unless the playbook sets that header.",
            )
            .not_idempotent()
            .input(json!({
                "type": "object",
                "required": ["url"],
                "additionalProperties": false,
                "properties": {
                    "method": { "type": "string", "default": "GET" },
                    "url": { "type": "string", "format": "uri" },
                    "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                    "json": { "description": "A JSON body." },
                    "body": { "type": "string", "description": "A text body." },
                    "expect": { "type": "array", "items": { "type": "integer" } }
                }
            }))
            .output(json!({
                "type": "object",
                "properties": {
                    "status": { "type": "integer" },
                    "headers": { "type": "object" },
                    "body": {}
                }
            })),
        )
        .secret(Secret::header(
            "http_authorization",
            "Sent as the `Authorization` header to the granted hosts (e.g. `Bearer …`).",
            "authorization",
            "{secret}",
        ))
    }

    fn invoke(action: &str, input: Value, context: &Context) -> Result<Value, Error> {
        if action != "request" {
            return Err(Error::unknown_action(action));
        }
        let input: RequestInput = parse(input)?;
        // The host attaches `http_authorization` only if the playbook granted it.
        let mut request =
            HttpRequest::new(&input.method, &input.url).with_secret("http_authorization");
        for (name, value) in &input.headers {
            request = request.header(name, value);
        }
        // The step's idempotency key (stable across retries and crash recovery) lets an API that
        // honours the IETF `Idempotency-Key` header apply a repeated request once.
        let method = input.method.to_ascii_uppercase();
        let has_key = input
            .headers
            .keys()
            .any(|name| name.eq_ignore_ascii_case("idempotency-key"));
        if !has_key && !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
            request = request.header("Idempotency-Key", &context.idempotency_key);
        }
        request = match (&input.json, input.body) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidInput(
                    "give `json` or `body`, not both".into(),
                ));
            }
            (Some(json), None) => request.json(json),
            (None, Some(body)) => request.body(body.into_bytes()),
            (None, None) => request,
        };
        let response = request.send()?;
        let expected = match &input.expect {
            Some(statuses) => statuses.contains(&response.status),
            None => response.is_success(),
        };
        if !expected {
            return Err(Error::from_status(
                response.status,
                &response.text(),
                response.retry_after_ms(),
            ));
        }
        let body = serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| Value::String(response.text()));
        output(&RequestOutput {
            status: response.status,
            headers: response.headers.into_iter().collect(),
            body,
        })
    }
}

plugin!(Http);
