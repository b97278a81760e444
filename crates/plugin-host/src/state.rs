//! What one plugin invocation owns: its WASI context (which grants nothing), its HTTP hooks
//! (the egress policy), its limits, and its view of secrets and the key-value store.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use runner::Redactor;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::bindings::riposte::plugin::host::{self, Level};
use crate::egress::Egress;
use crate::kv::KvStore;

pub(crate) struct InvocationState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: Hooks,
    pub(crate) limits: StoreLimits,
    pub(crate) plugin: Arc<str>,
    pub(crate) run_id: String,
    pub(crate) step_id: String,
    pub(crate) kv: Arc<KvStore>,
    /// Granted secrets the plugin may read itself (those not bound to a header).
    pub(crate) readable_secrets: BTreeMap<String, String>,
    /// Redacts every granted secret from what the plugin logs.
    pub(crate) redactor: Redactor,
    /// Bounds the lines this invocation makes the host log.
    pub(crate) logs: Arc<LogBudget>,
}

/// How many lines one invocation may put in the host's log: its own `log` calls, and what the
/// host says about it (refused requests, refused key-value entries). A plugin looping on a refused
/// host must not flood the log: past the budget, lines are counted, and [`LogBudget::summarize`]
/// says how many were left out when the invocation ends.
#[derive(Debug, Default)]
pub(crate) struct LogBudget {
    plugin_lines: AtomicU32,
    host_lines: AtomicU32,
}

/// Lines of the plugin's own `log` calls logged per invocation.
pub(crate) const PLUGIN_LOG_LINES: u32 = 200;
/// Warnings the host logs about one invocation (refusals).
pub(crate) const HOST_LOG_LINES: u32 = 5;

impl LogBudget {
    /// Whether a line of the plugin's own may be logged.
    pub(crate) fn plugin_line(&self) -> bool {
        self.plugin_lines.fetch_add(1, Ordering::Relaxed) < PLUGIN_LOG_LINES
    }

    /// Whether a warning of the host's about this invocation may be logged.
    pub(crate) fn host_line(&self) -> bool {
        self.host_lines.fetch_add(1, Ordering::Relaxed) < HOST_LOG_LINES
    }

    /// Logs how many lines were left out, if any.
    pub(crate) fn summarize(&self, plugin: &str, run: &str, step: &str) {
        let left_out =
            |count: &AtomicU32, budget: u32| count.load(Ordering::Relaxed).saturating_sub(budget);
        let (own, host) = (
            left_out(&self.plugin_lines, PLUGIN_LOG_LINES),
            left_out(&self.host_lines, HOST_LOG_LINES),
        );
        if own > 0 || host > 0 {
            tracing::warn!(
                plugin,
                run,
                step,
                plugin_lines_left_out = own,
                refusals_left_out = host,
                "The invocation logged more than its budget; the rest was counted, not logged."
            );
        }
    }
}

/// The `wasi:http` hooks: every outgoing request goes through the egress policy.
pub(crate) struct Hooks {
    pub(crate) egress: Egress,
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>
    {
        let egress = self.egress.clone();
        Box::new(async move {
            let response = egress.send(request).await?;
            let io: IoFuture = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

impl crate::bindings::riposte::plugin::types::Host for InvocationState {}

impl host::Host for InvocationState {
    async fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        if !self.logs.plugin_line() {
            return;
        }
        // Redact first: truncating first could cut a secret and leave its start unredacted.
        let message = truncate(&self.redactor.redact_str(&message), 4096);
        let fields: Vec<String> = fields
            .iter()
            .take(32)
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    truncate(k, 64),
                    truncate(&self.redactor.redact_str(v), 1024)
                )
            })
            .collect();
        let fields = fields.join(" ");
        let (plugin, run, step) = (&*self.plugin, &self.run_id, &self.step_id);
        match level {
            Level::Trace => tracing::trace!(plugin, run, step, fields, "{message}"),
            Level::Debug => tracing::debug!(plugin, run, step, fields, "{message}"),
            Level::Info => tracing::info!(plugin, run, step, fields, "{message}"),
            Level::Warn => tracing::warn!(plugin, run, step, fields, "{message}"),
            Level::Error => tracing::error!(plugin, run, step, fields, "{message}"),
        }
    }

    async fn secret(&mut self, name: String) -> Option<String> {
        self.readable_secrets.get(&name).cloned()
    }

    async fn kv_get(&mut self, key: String) -> Option<String> {
        self.kv.get(&self.plugin, &key)
    }

    async fn kv_set(&mut self, key: String, value: String, ttl_seconds: Option<u32>) {
        if let Err(refused) = self.kv.set(&self.plugin, key, value, ttl_seconds)
            && self.logs.host_line()
        {
            let reason = match refused {
                crate::kv::Refused::TooLarge => "the key or value is too large",
                crate::kv::Refused::Full => "the plugin's store is at its quota",
            };
            tracing::warn!(plugin = %self.plugin, reason, "Key-value entry refused.");
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
