//! `riposte plugin inspect|new`, and the `--plugins` flags that load plugins into a local run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use plugin_host::{Connectors, EgressPolicy, HostConfig, PluginHost};
use runner::StepExecutor;

#[derive(clap::Subcommand)]
pub(crate) enum PluginCommand {
    /// Print what a plugin declares: actions with their schemas, hosts, secrets.
    Inspect {
        /// The plugin, a `.wasm` component.
        file: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Scaffold a new plugin crate written with riposte-plugin-sdk.
    New {
        /// The plugin's name (lowercase letters, digits and `-`), used in `uses: <name>/<action>`.
        name: String,
        /// Where to create the crate's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The riposte-plugin-sdk crate to depend on (default: `plugins/sdk` of this checkout).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Flags that load WebAssembly plugins for a local run.
#[derive(clap::Args)]
pub(crate) struct PluginArgs {
    /// Load every `*.wasm` plugin in this folder.
    #[arg(long = "plugins", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Let plugins reach this private range (e.g. `127.0.0.0/8` for services on this machine).
    /// Repeatable. Private, loopback and metadata addresses are refused otherwise.
    #[arg(long = "allow-private", value_name = "CIDR")]
    allow_private: Vec<ipnet::IpNet>,
    /// Where compiled plugins are cached (default: ~/.cache/riposte/plugins).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Load every connector (`*.yaml`) in this folder (docs/connectors.md).
    #[arg(long = "connectors", value_name = "DIR")]
    connectors: Option<PathBuf>,
    /// A connector's setting, as the server's `connectors.settings` gives it:
    /// `<connector>.<setting>=<value>` (a JSON value, or text). Repeatable.
    #[arg(long = "connector-setting", value_name = "CONNECTOR.SETTING=VALUE")]
    connector_settings: Vec<String>,
}

impl PluginArgs {
    /// What performs the steps: the connectors of `--connectors`, then the plugins of
    /// `--plugins`.
    pub(crate) async fn executor(&self) -> anyhow::Result<Arc<dyn StepExecutor>> {
        let plugins: Arc<dyn StepExecutor> = match self.host().await? {
            Some(host) => Arc::new(host),
            None => Arc::new(runner::NoPlugins),
        };
        let Some(dir) = &self.connectors else {
            return Ok(plugins);
        };
        let mut settings: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
        for text in &self.connector_settings {
            let (key, value) = text.split_once('=').with_context(|| {
                format!("`--connector-setting {text}` must be `<connector>.<setting>=<value>`")
            })?;
            let (connector, setting) = key.split_once('.').with_context(|| {
                format!("`--connector-setting {text}` must name `<connector>.<setting>`")
            })?;
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
            settings
                .entry(connector.to_owned())
                .or_default()
                .insert(setting.to_owned(), value);
        }
        let connectors = Connectors::load_dir(dir, &settings, self.egress())?.with_plugins(plugins);
        Ok(Arc::new(connectors))
    }

    fn egress(&self) -> EgressPolicy {
        EgressPolicy {
            allow_private: self.allow_private.clone(),
            user_agent: concat!("riposte/", env!("CARGO_PKG_VERSION")).into(),
            ..EgressPolicy::default()
        }
    }

    /// A plugin host with the plugins of `--plugins` loaded, or `None` without the flag.
    pub(crate) async fn host(&self) -> anyhow::Result<Option<PluginHost>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let mut config = HostConfig::new(cache_dir(self.cache_dir.as_deref()));
        config.egress = self.egress();
        let mut host = PluginHost::new(config)?;
        let loaded = host.load_dir(dir).await?;
        if loaded.is_empty() {
            anyhow::bail!("no plugins (*.wasm) in {}", dir.display());
        }
        Ok(Some(host))
    }
}

pub(crate) fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Inspect { file, json } => inspect(&file, json),
        PluginCommand::New { name, dir, sdk } => scaffold(&name, &dir, sdk.as_deref()),
    }
}

fn inspect(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let manifest = crate::runtime(false)?.block_on(async {
        let mut host = PluginHost::new(HostConfig::new(cache_dir(None)))?;
        host.load(file).await
    })?;
    if json {
        crate::print_stdout(&serde_json::to_string_pretty(&manifest)?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::print_stdout(&plugin_host::reference::text(&manifest));
    Ok(ExitCode::SUCCESS)
}

fn scaffold(name: &str, parent: &Path, sdk: Option<&Path>) -> anyhow::Result<ExitCode> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        anyhow::bail!(
            "`{name}` is not a plugin name: use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let sdk = match sdk {
        Some(path) => path.to_owned(),
        None => PathBuf::from("plugins/sdk"),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "cannot find riposte-plugin-sdk at {}; pass --sdk <path to plugins/sdk>",
            sdk.display()
        )
    })?;
    let root = parent.join(name);
    if root.exists() {
        anyhow::bail!("{} already exists", root.display());
    }
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("cannot create {}", root.display()))?;
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

# Build with: cargo build --release --target wasm32-wasip2
# The plugin is target/wasm32-wasip2/release/{file}.wasm
[lib]
crate-type = ["cdylib"]

[dependencies]
riposte-plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
strip = true

# A workspace of its own, so it builds wherever it is created.
[workspace]
"#,
        file = name.replace('-', "_"),
        sdk = sdk.display()
    );
    let lib = format!(
        r#"//! `{name}`: describe what it does, for whom, and which API it calls.

use riposte_plugin_sdk::http::Request;
use riposte_plugin_sdk::{{Action, Context, Error, Manifest, Plugin, Secret, Value, json, output, parse, plugin}};
use serde::{{Deserialize, Serialize}};

struct {type_name};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupInput {{
    /// What to look up.
    query: String,
    /// Where the API is (for tests and proxies).
    #[serde(default = "default_base_url")]
    base_url: String,
}}

fn default_base_url() -> String {{
    "https://api.example.com".into()
}}

#[derive(Serialize)]
struct LookupOutput {{
    query: String,
    status: u16,
    answer: Value,
}}

impl Plugin for {type_name} {{
    fn manifest() -> Manifest {{
        Manifest::new("{name}", env!("CARGO_PKG_VERSION"), "What this plugin does.")
            .action(
                Action::new("lookup", "Looks something up.")
                    .input(json!({{
                        "type": "object",
                        "required": ["query"],
                        "properties": {{ "query": {{ "type": "string" }}, "base_url": {{ "type": "string" }} }}
                    }}))
                    .output(json!({{ "type": "object" }})),
            )
            .host("api.example.com")
            .secret(Secret::header("{secret}_token", "API token, sent as `Authorization: Bearer`.", "authorization", "Bearer {{secret}}"))
    }}

    fn invoke(action: &str, input: Value, _context: &Context) -> Result<Value, Error> {{
        match action {{
            "lookup" => {{
                let input: LookupInput = parse(input)?;
                let url = format!("{{}}/lookup?q={{}}", input.base_url.trim_end_matches('/'), input.query);
                let response = Request::get(&url)
                    .header("accept", "application/json")
                    .with_secret("{secret}_token")
                    .send()?
                    .error_for_status()?;
                output(&LookupOutput {{ query: input.query, status: response.status, answer: response.json()? }})
            }}
            other => Err(Error::unknown_action(other)),
        }}
    }}
}}

plugin!({type_name});
"#,
        secret = name.replace('-', "_"),
    );
    std::fs::write(root.join("Cargo.toml"), cargo)?;
    std::fs::write(root.join("src/lib.rs"), lib)?;
    eprintln!(
        "Created {}. Build it with:\n  cd {} && cargo build --release --target wasm32-wasip2\nthen check it with:\n  riposte plugin inspect {}/target/wasm32-wasip2/release/{}.wasm",
        root.display(),
        root.display(),
        root.display(),
        name.replace('-', "_")
    );
    Ok(ExitCode::SUCCESS)
}

/// `~/.cache/riposte/plugins`, or `$XDG_CACHE_HOME/riposte/plugins`.
fn cache_dir(given: Option<&Path>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_owned();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("riposte/plugins")
}
