//! The plugin host: one engine per process, each plugin compiled once (and cached on disk), a fresh
//! store and instance for every invocation, with limits on time, memory and host resources.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipnet::IpNet;
use playbook::ErrorKind;
use runner::{Grant, Redactor, StepCall, StepError, StepExecutor};
use sha2::Digest;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::riposte::plugin::types;
use crate::bindings::{Plugin, PluginPre};
use crate::egress::{ClientCache, Egress, EgressPolicy, SecretHeader};
use crate::error::Error;
use crate::kv::KvStore;
use crate::manifest::Manifest;
use crate::state::{Hooks, InvocationState, LogBudget};

/// How often the engine's epoch advances: the granularity of deadlines and of yielding.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of the plugin host, from the server's configuration.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled plugins are cached. Only Riposte may write here: the cache is trusted input.
    pub cache_dir: PathBuf,
    /// Linear memory per invocation.
    pub max_memory_bytes: usize,
    /// Optional instruction budget per invocation, on top of the deadline.
    pub fuel: Option<u64>,
    /// Largest output an action may return.
    pub max_output_bytes: usize,
    /// How many invocations may run at once (the size of the instance pool); more wait their
    /// turn, within their deadline.
    pub max_concurrent_invocations: u32,
    pub egress: EgressPolicy,
    /// Addresses destructive actions refuse to touch.
    pub protected: Vec<IpNet>,
    /// Key and value bytes one plugin may keep in its key-value store, across invocations.
    pub max_kv_bytes_per_plugin: usize,
}

impl HostConfig {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            cache_dir: cache_dir.into(),
            max_memory_bytes: 64 * 1024 * 1024,
            fuel: None,
            max_output_bytes: 1024 * 1024,
            max_concurrent_invocations: 128,
            egress: EgressPolicy::default(),
            protected: crate::guard::default_protected_ranges(),
            max_kv_bytes_per_plugin: 8 * 1024 * 1024,
        }
    }
}

/// A loaded plugin: what it declares, and a pre-linked component ready to instantiate.
struct Loaded {
    manifest: Manifest,
    pre: PluginPre<InvocationState>,
}

/// Runs plugins. Cheap to share behind an `Arc`; invocations are independent.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<InvocationState>,
    plugins: HashMap<String, Loaded>,
    config: Arc<HostConfig>,
    egress_policy: Arc<EgressPolicy>,
    http_clients: Arc<ClientCache>,
    kv: Arc<KvStore>,
    /// One permit per instance slot of the pool: a call beyond them would fail to instantiate.
    invocations: tokio::sync::Semaphore,
    ticker: EpochTicker,
}

impl PluginHost {
    pub fn new(config: HostConfig) -> Result<Self, Error> {
        let engine = Engine::new(&engine_config(&config)).map_err(Error::engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(Error::engine)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(Error::engine)?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(Error::engine)?;
        std::fs::create_dir_all(&config.cache_dir).map_err(|source| Error::Io {
            path: config.cache_dir.clone(),
            source,
        })?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(PluginHost {
            engine,
            linker,
            plugins: HashMap::new(),
            egress_policy: Arc::new(config.egress.clone()),
            http_clients: Arc::default(),
            kv: Arc::new(KvStore::new(config.max_kv_bytes_per_plugin)),
            invocations: tokio::sync::Semaphore::new(config.max_concurrent_invocations as usize),
            config: Arc::new(config),
            ticker,
        })
    }

    /// Loads every `*.wasm` file in `dir`.
    pub async fn load_dir(&mut self, dir: &Path) -> Result<Vec<Manifest>, Error> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        paths.sort();
        let mut manifests = Vec::new();
        for path in paths {
            manifests.push(self.load(&path).await?);
        }
        Ok(manifests)
    }

    /// Compiles (or takes from the cache) and checks one plugin, and makes it callable by name.
    pub async fn load(&mut self, path: &Path) -> Result<Manifest, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let component = self.compile(path, &bytes)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::Invalid {
                path: path.to_owned(),
                reason: format!("it needs imports Riposte does not provide: {e}"),
            })?;
        let pre = PluginPre::new(pre).map_err(|e| Error::Invalid {
            path: path.to_owned(),
            reason: format!("it does not export the riposte:plugin world: {e}"),
        })?;
        let manifest = self.describe(&pre, path).await?;
        if let Some(existing) = self.plugins.get(&manifest.name) {
            return Err(Error::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "a plugin named `{}` (version {}) is already loaded",
                    manifest.name, existing.manifest.version
                ),
            });
        }
        tracing::info!(plugin = %manifest.name, version = %manifest.version, "Plugin loaded.");
        self.plugins.insert(
            manifest.name.clone(),
            Loaded {
                manifest: manifest.clone(),
                pre,
            },
        );
        Ok(manifest)
    }

    /// What the loaded plugins declare, sorted by name.
    pub fn manifests(&self) -> Vec<&Manifest> {
        let mut manifests: Vec<&Manifest> = self.plugins.values().map(|l| &l.manifest).collect();
        manifests.sort_by(|a, b| a.name.cmp(&b.name));
        manifests
    }

    pub fn manifest(&self, plugin: &str) -> Option<&Manifest> {
        self.plugins.get(plugin).map(|l| &l.manifest)
    }

    /// Calls `action` of `plugin` in a fresh instance, within the limits and the grant.
    pub async fn invoke(&self, call: &StepCall) -> Result<serde_json::Value, StepError> {
        let plugin = call.uses.plugin.as_str();
        let loaded = self.plugins.get(plugin).ok_or_else(|| {
            StepError::new(
                ErrorKind::Internal,
                format!("plugin `{plugin}` is not installed"),
            )
        })?;
        let action = loaded
            .manifest
            .actions
            .iter()
            .find(|a| a.name == call.uses.action)
            .ok_or_else(|| {
                let known: Vec<&str> = loaded
                    .manifest
                    .actions
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect();
                StepError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "plugin `{plugin}` has no action `{}`; it has {}",
                        call.uses.action,
                        known.join(", ")
                    ),
                )
            })?;
        if let Some(wanted) = &call.uses.version
            && !version_matches(&loaded.manifest.version, wanted)
        {
            return Err(StepError::new(
                ErrorKind::Internal,
                format!(
                    "the playbook pins `{plugin}@{wanted}` but version {} is installed",
                    loaded.manifest.version
                ),
            ));
        }
        if action.destructive {
            crate::guard::check(&call.input, &self.config.protected)
                .map_err(|reason| StepError::new(ErrorKind::InvalidInput, reason))?;
        }
        let input = serde_json::to_string(&call.input)
            .map_err(|e| StepError::new(ErrorKind::InvalidInput, e.to_string()))?;
        let context = types::Context {
            run_id: call.run_id.clone(),
            step_id: call.step_id.clone(),
            attempt: call.attempt,
            idempotency_key: call.idempotency_key.clone(),
        };
        // Waiting for a slot counts against the step's deadline.
        let started = Instant::now();
        let _slot = tokio::time::timeout(call.timeout, self.invocations.acquire())
            .await
            .map_err(|_| timeout_error(call.timeout))?
            .map_err(|_| StepError::new(ErrorKind::Internal, "the plugin host is shutting down"))?;
        let timeout = call.timeout.saturating_sub(started.elapsed());
        let logs = Arc::new(LogBudget::default());
        let mut store = self.store(
            &loaded.manifest,
            &call.grant,
            &call.run_id,
            &call.step_id,
            timeout,
            Arc::clone(&logs),
        );
        // The epoch deadline stops guest code; this outer deadline also covers a guest waiting in a
        // host call (an HTTP request), which an epoch cannot interrupt.
        let outer = timeout + Duration::from_secs(1);
        let result = tokio::time::timeout(outer, async {
            let instance = loaded.pre.instantiate_async(&mut store).await?;
            instance
                .call_invoke(&mut store, &call.uses.action, &input, &context)
                .await
        })
        .await;
        logs.summarize(plugin, &call.run_id, &call.step_id);
        let output = match result {
            Err(_) => return Err(timeout_error(call.timeout)),
            Ok(Err(trap)) => {
                return Err(trap_error(
                    &trap,
                    call.timeout,
                    self.config.max_memory_bytes,
                ));
            }
            Ok(Ok(Err(error))) => return Err(plugin_error(error)),
            Ok(Ok(Ok(output))) => output,
        };
        if output.len() > self.config.max_output_bytes {
            return Err(StepError::new(
                ErrorKind::Internal,
                format!(
                    "the output is {} bytes, more than the {} allowed",
                    output.len(),
                    self.config.max_output_bytes
                ),
            ));
        }
        serde_json::from_str(&output).map_err(|e| {
            StepError::new(
                ErrorKind::Internal,
                format!("the plugin returned invalid JSON: {e}"),
            )
        })
    }

    fn compile(&self, path: &Path, bytes: &[u8]) -> Result<Component, Error> {
        let mut key = sha2::Sha256::new();
        key.update(bytes);
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut hasher);
        key.update(std::hash::Hasher::finish(&hasher).to_le_bytes());
        let digest = data_encoding::HEXLOWER.encode(&key.finalize());
        let cached = self.config.cache_dir.join(format!("{digest}.cwasm"));
        if cached.exists() {
            // SAFETY: `cache_dir` is written only by this function, with output of
            // `Engine::precompile_component` for this engine configuration (it is in the key), and
            // the configuration documents that only Riposte may write there.
            #[allow(unsafe_code)]
            let component = unsafe { Component::deserialize_file(&self.engine, &cached) };
            match component {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(%error, path = %cached.display(), "Ignoring an unusable cache entry.")
                }
            }
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| Error::Invalid {
                path: path.to_owned(),
                reason: format!("it is not a valid WebAssembly component: {e}"),
            })?;
        let temporary = cached.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::write(&temporary, &compiled)
            .and_then(|()| std::fs::rename(&temporary, &cached));
        if let Err(error) = written {
            tracing::warn!(%error, "Could not cache a compiled plugin.");
        }
        // SAFETY: `compiled` was produced just now by `precompile_component` on this engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &compiled) };
        component.map_err(Error::engine)
    }

    async fn describe(
        &self,
        pre: &PluginPre<InvocationState>,
        path: &Path,
    ) -> Result<Manifest, Error> {
        let mut store = self.store(
            &Manifest::placeholder(),
            &Grant::default(),
            "load",
            "describe",
            Duration::from_secs(5),
            Arc::default(),
        );
        let described = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        }
        .await
        .map_err(|e| Error::Invalid {
            path: path.to_owned(),
            reason: format!("`describe` failed: {e}"),
        })?;
        let manifest = Manifest::from(described);
        manifest.check_abi().map_err(|reason| Error::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(manifest)
    }

    /// A fresh store for one invocation: nothing carries over from any other.
    fn store(
        &self,
        manifest: &Manifest,
        grant: &Grant,
        run_id: &str,
        step_id: &str,
        timeout: Duration,
        logs: Arc<LogBudget>,
    ) -> Store<InvocationState> {
        let mut secret_headers = Vec::new();
        let mut readable_secrets = std::collections::BTreeMap::new();
        for (name, value) in &grant.secrets {
            let binding = manifest.secrets.iter().find(|s| &s.name == name);
            match binding.and_then(|b| b.header.as_ref().map(|h| (h, b.header_format.as_deref()))) {
                Some((header, format)) => {
                    let text = format.unwrap_or("{secret}").replace("{secret}", value);
                    match (
                        http::HeaderName::try_from(header.as_str()),
                        http::HeaderValue::try_from(text),
                    ) {
                        (Ok(header), Ok(mut value)) => {
                            value.set_sensitive(true);
                            secret_headers.push(SecretHeader {
                                name: name.clone(),
                                header,
                                value,
                            });
                        }
                        _ => tracing::warn!(
                            plugin = %manifest.name,
                            secret = %name,
                            "The secret cannot be sent as the header the plugin declares; it is not attached."
                        ),
                    }
                }
                None => {
                    readable_secrets.insert(name.clone(), value.clone());
                }
            }
        }
        let mut wasi = WasiCtxBuilder::new();
        // Nothing from the host: no environment, arguments, files, stdio, or sockets.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .max_random_size(64 * 1024);
        let mut table = ResourceTable::new();
        table.set_max_capacity(10_000);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(64 * 1024);
        let state = InvocationState {
            wasi: wasi.build(),
            table,
            http,
            hooks: Hooks {
                egress: Egress {
                    policy: self.egress_policy.clone(),
                    clients: self.http_clients.clone(),
                    granted_hosts: grant.hosts.clone(),
                    secret_headers,
                    secret_outside_headers: false,
                    logs: Arc::clone(&logs),
                },
            },
            limits: StoreLimitsBuilder::new()
                .memory_size(self.config.max_memory_bytes)
                .instances(32)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            plugin: Arc::from(manifest.name.as_str()),
            run_id: run_id.to_owned(),
            step_id: step_id.to_owned(),
            kv: self.kv.clone(),
            readable_secrets,
            redactor: Redactor::new(grant.secrets.values().map(String::as_str)),
            logs,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Bounds what the guest can make the host copy in one call (its output included).
        store.set_hostcall_fuel(self.config.max_output_bytes + 64 * 1024);
        if let Some(fuel) = self.config.fuel {
            let _ = store.set_fuel(fuel);
        }
        // Yield to the runtime every tick, so a busy plugin never starves other work, and trap at
        // the deadline.
        let deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}

#[async_trait]
impl StepExecutor for PluginHost {
    async fn execute(&self, call: StepCall) -> Result<serde_json::Value, StepError> {
        self.invoke(&call).await
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// How much of each memory and table of a finished call stays mapped for the next one.
const KEEP_RESIDENT_BYTES: usize = 1024 * 1024;

fn engine_config(config: &HostConfig) -> Config {
    let mut engine = Config::new();
    engine.epoch_interruption(true);
    engine.consume_fuel(config.fuel.is_some());
    engine.wasm_component_model(true);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(config.max_concurrent_invocations + 16)
        .total_core_instances((config.max_concurrent_invocations + 16) * 4)
        .total_memories((config.max_concurrent_invocations + 16) * 2)
        .total_tables((config.max_concurrent_invocations + 16) * 4)
        .total_stacks(config.max_concurrent_invocations + 16)
        .max_memory_size(config.max_memory_bytes)
        // Resetting a slot by `madvise` cost a worker 8% of its CPU, mostly TLB shootdowns on
        // every core. With PAGEMAP_SCAN (Linux 6.7+) the pages a call dirtied are zeroed with
        // `memset` and stay mapped, up to this much per memory; without it, as before.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .pagemap_scan(Enabled::Auto);
    engine.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    engine
}

/// `1.2` matches `1.2.x`, `1` matches `1.x.y`, `1.2.3` matches exactly: a pin compares whole
/// version components, so `0.1` never matches `0.10.0`.
fn version_matches(version: &str, pin: &str) -> bool {
    let version: Vec<&str> = version.split(['.', '-', '+']).collect();
    let pin: Vec<&str> = pin.split(['.', '-', '+']).collect();
    pin.len() <= version.len() && pin.iter().zip(&version).all(|(p, v)| p == v)
}

fn timeout_error(timeout: Duration) -> StepError {
    StepError::new(
        ErrorKind::Timeout,
        format!(
            "the plugin ran past its deadline of {}",
            humantime::format_duration(timeout)
        ),
    )
}

fn trap_error(trap: &wasmtime::Error, timeout: Duration, max_memory: usize) -> StepError {
    if let Some(wasmtime::Trap::Interrupt) = trap.downcast_ref::<wasmtime::Trap>() {
        return timeout_error(timeout);
    }
    if let Some(wasmtime::Trap::OutOfFuel) = trap.downcast_ref::<wasmtime::Trap>() {
        return StepError::new(ErrorKind::Timeout, "the plugin ran out of fuel");
    }
    let text = format!("{trap:#}");
    if text.contains("fuel allocated for hostcalls") {
        return StepError::new(
            ErrorKind::Internal,
            "the plugin passed more data to the host than it allows (its output or a host call's arguments are too large)",
        );
    }
    if text.contains("growing memory") {
        return StepError::new(
            ErrorKind::Internal,
            format!(
                "the plugin exceeded its memory limit of {} MiB",
                max_memory / (1024 * 1024)
            ),
        );
    }
    let first_line = text.lines().next().unwrap_or("trap");
    StepError::new(
        ErrorKind::Internal,
        format!("the plugin crashed: {first_line}"),
    )
}

fn plugin_error(error: types::Error) -> StepError {
    match error {
        types::Error::InvalidInput(m) => StepError::new(ErrorKind::InvalidInput, m),
        types::Error::Unauthorized(m) => StepError::new(ErrorKind::Unauthorized, m),
        types::Error::NotFound(m) => StepError::new(ErrorKind::NotFound, m),
        types::Error::RateLimited(limit) => StepError {
            retry_after_ms: limit.retry_after_ms,
            ..StepError::new(ErrorKind::RateLimited, limit.message)
        },
        types::Error::Upstream(m) => StepError::new(ErrorKind::Upstream, m),
        types::Error::Internal(m) => StepError::new(ErrorKind::Internal, m),
    }
}

/// A thread that advances the engine's epoch every tick, until stopped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("riposte-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "Cannot start the epoch ticker: plugin deadlines will not be enforced.");
        }
        EpochTicker { stop }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
