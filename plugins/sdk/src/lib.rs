//! Write Riposte plugins in Rust.
//!
//! A plugin is a type that implements [`Plugin`]: it describes itself ([`Manifest`]) and performs
//! actions on JSON input. [`plugin!`] exports it as a WebAssembly component for Riposte's host;
//! [`http`] sends requests (through the host's egress policy), [`log`], [`secret`] and [`kv`] reach
//! the host's services. The WIT bindings and JSON plumbing stay hidden.
//!
//! ```ignore
//! use riposte_plugin_sdk::{plugin, Action, Context, Error, Manifest, Plugin, Value};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn manifest() -> Manifest {
//!         Manifest::new("hello", env!("CARGO_PKG_VERSION"), "Says hello.")
//!             .action(Action::new("greet", "Greets someone."))
//!     }
//!
//!     fn invoke(action: &str, input: Value, _context: &Context) -> Result<Value, Error> {
//!         match action {
//!             "greet" => Ok(serde_json::json!({ "greeting": format!("hello, {}", input["name"]) })),
//!             other => Err(Error::unknown_action(other)),
//!         }
//!     }
//! }
//!
//! plugin!(Hello);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` file is the plugin.

pub mod http;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "riposte_plugin_sdk::bindings",
    });
}

use bindings::riposte::plugin::host;
pub use bindings::riposte::plugin::types::{Context, Error, RateLimit};
use serde::de::DeserializeOwned;
pub use serde_json::{Value, json};

/// The version of the plugin contract (`plugins/wit/plugin.wit`) this SDK implements.
pub const ABI_VERSION: &str = "0.1.0";

/// A Riposte plugin.
pub trait Plugin {
    /// What the plugin declares: its name, version, actions, hosts and secrets.
    fn manifest() -> Manifest;

    /// Performs `action` with `input` (the step's rendered `with:`), returning its output.
    fn invoke(action: &str, input: Value, context: &Context) -> Result<Value, Error>;
}

/// Exports a [`Plugin`] implementation as the component's `riposte:plugin` world.
#[macro_export]
macro_rules! plugin {
    ($plugin:ty) => {
        struct __RipostePluginExport;

        impl $crate::bindings::Guest for __RipostePluginExport {
            fn describe() -> $crate::bindings::riposte::plugin::types::Manifest {
                $crate::__describe::<$plugin>()
            }

            fn invoke(
                action: ::std::string::String,
                input: ::std::string::String,
                context: $crate::Context,
            ) -> ::std::result::Result<::std::string::String, $crate::Error> {
                $crate::__invoke::<$plugin>(&action, &input, &context)
            }
        }

        $crate::bindings::export!(__RipostePluginExport with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
pub fn __describe<P: Plugin>() -> bindings::riposte::plugin::types::Manifest {
    P::manifest().into_wit()
}

#[doc(hidden)]
pub fn __invoke<P: Plugin>(action: &str, input: &str, context: &Context) -> Result<String, Error> {
    let input: Value = serde_json::from_str(input)
        .map_err(|e| Error::InvalidInput(format!("the input is not JSON: {e}")))?;
    let output = P::invoke(action, input, context)?;
    serde_json::to_string(&output)
        .map_err(|e| Error::Internal(format!("the output is not JSON: {e}")))
}

/// Reads an action's input into a typed struct; a mismatch is an `invalid-input` error that names
/// the field.
pub fn parse<T: DeserializeOwned>(input: Value) -> Result<T, Error> {
    serde_json::from_value(input).map_err(|e| Error::InvalidInput(e.to_string()))
}

/// Turns a typed output into JSON.
pub fn output<T: serde::Serialize>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::Internal(e.to_string()))
}

impl Error {
    pub fn unknown_action(action: &str) -> Self {
        Error::InvalidInput(format!("unknown action `{action}`"))
    }

    /// The error for an HTTP status from an upstream API, by what a retry could change.
    pub fn from_status(status: u16, body: &str, retry_after_ms: Option<u64>) -> Self {
        let detail = format!(
            "HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        );
        match status {
            400 | 422 => Error::InvalidInput(detail),
            401 | 403 => Error::Unauthorized(detail),
            404 => Error::NotFound(detail),
            429 => Error::RateLimited(RateLimit {
                message: detail,
                retry_after_ms,
            }),
            _ => Error::Upstream(detail),
        }
    }
}

/// What a plugin declares about itself.
#[derive(Debug, Clone)]
pub struct Manifest {
    name: String,
    version: String,
    description: String,
    actions: Vec<Action>,
    hosts: Vec<String>,
    secrets: Vec<Secret>,
}

impl Manifest {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Manifest {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            actions: Vec::new(),
            hosts: Vec::new(),
            secrets: Vec::new(),
        }
    }

    pub fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// A host the plugin calls by default (playbooks still have to grant it).
    pub fn host(mut self, host: &str) -> Self {
        self.hosts.push(host.into());
        self
    }

    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    fn into_wit(self) -> bindings::riposte::plugin::types::Manifest {
        use bindings::riposte::plugin::types as wit;
        wit::Manifest {
            abi_version: ABI_VERSION.into(),
            name: self.name,
            version: self.version,
            description: self.description,
            actions: self
                .actions
                .into_iter()
                .map(|a| wit::Action {
                    name: a.name,
                    description: a.description,
                    input_schema: a.input_schema.to_string(),
                    output_schema: a.output_schema.to_string(),
                    idempotent: a.idempotent,
                    destructive: a.destructive,
                })
                .collect(),
            hosts: self.hosts,
            secrets: self
                .secrets
                .into_iter()
                .map(|s| wit::SecretRequest {
                    name: s.name,
                    description: s.description,
                    header: s.header,
                    header_format: s.header_format,
                })
                .collect(),
        }
    }
}

/// One action of a plugin.
#[derive(Debug, Clone)]
pub struct Action {
    name: String,
    description: String,
    input_schema: Value,
    output_schema: Value,
    idempotent: bool,
    destructive: bool,
}

impl Action {
    pub fn new(name: &str, description: &str) -> Self {
        Action {
            name: name.into(),
            description: description.into(),
            input_schema: json!({ "type": "object" }),
            output_schema: json!({ "type": "object" }),
            idempotent: true,
            destructive: false,
        }
    }

    /// JSON Schema of the input.
    pub fn input(mut self, schema: Value) -> Self {
        self.input_schema = schema;
        self
    }

    /// JSON Schema of the output.
    pub fn output(mut self, schema: Value) -> Self {
        self.output_schema = schema;
        self
    }

    /// The action changes something outside Riposte; protected addresses apply to its input.
    pub fn destructive(mut self) -> Self {
        self.destructive = true;
        self
    }

    /// Calling it twice has a different effect than calling it once.
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }
}

/// A secret the plugin needs.
#[derive(Debug, Clone)]
pub struct Secret {
    name: String,
    description: String,
    header: Option<String>,
    header_format: Option<String>,
}

impl Secret {
    /// A secret the plugin reads itself with [`secret`].
    pub fn readable(name: &str, description: &str) -> Self {
        Secret {
            name: name.into(),
            description: description.into(),
            header: None,
            header_format: None,
        }
    }

    /// A secret the host adds as `header: format` (where `{secret}` stands for the value) to the
    /// requests that ask for it with [`http::Request::with_secret`]. The plugin never sees it.
    pub fn header(name: &str, description: &str, header: &str, format: &str) -> Self {
        Secret {
            name: name.into(),
            description: description.into(),
            header: Some(header.into()),
            header_format: Some(format.into()),
        }
    }
}

/// A granted secret's value. Secrets bound to a header are not readable.
pub fn secret(name: &str) -> Option<String> {
    host::secret(name)
}

/// Structured logs, tagged by the host with the plugin, run and step.
pub mod log {
    use super::host::{self, Level};

    pub fn info(message: &str, fields: &[(&str, &str)]) {
        emit(Level::Info, message, fields);
    }

    pub fn warn(message: &str, fields: &[(&str, &str)]) {
        emit(Level::Warn, message, fields);
    }

    pub fn debug(message: &str, fields: &[(&str, &str)]) {
        emit(Level::Debug, message, fields);
    }

    pub fn error(message: &str, fields: &[(&str, &str)]) {
        emit(Level::Error, message, fields);
    }

    fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        host::log(level, message, &fields);
    }
}

/// The plugin's private key-value store (e.g. to cache lookups).
pub mod kv {
    use super::host;

    pub fn get(key: &str) -> Option<String> {
        host::kv_get(key)
    }

    pub fn set(key: &str, value: &str, ttl_seconds: Option<u32>) {
        host::kv_set(key, value, ttl_seconds);
    }
}
