//! The cost of one plugin invocation: a fresh store and instance, the call, JSON in and out;
//! against `bare/noop_call`, the same component instantiated and called with wasmtime alone
//! (default engine, empty WASI contexts, host functions that do nothing; no pool, limits,
//! grant, deadline or JSON). The ratio of `plugin/noop_invocation` to `bare/noop_call` is what
//! the host adds per call (docs/server.md).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use plugin_host::{HostConfig, PluginHost};
use runner::{Grant, StepCall};

fn call(action: &str, input: serde_json::Value) -> StepCall {
    StepCall {
        run_id: "bench".into(),
        step_id: "step".into(),
        uses: playbook::PluginRef {
            plugin: "testbed".into(),
            action: action.into(),
            version: None,
        },
        input,
        attempt: 1,
        item: None,
        idempotency_key: "bench:step".into(),
        timeout: Duration::from_secs(5),
        grant: Grant::default(),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = tempfile::tempdir().expect("cache");
    let host = runtime.block_on(async {
        let mut host = PluginHost::new(HostConfig::new(cache.path())).expect("host");
        host.load(&test_support::plugin("testbed"))
            .await
            .expect("testbed loads");
        host
    });
    let noop = call("noop", serde_json::json!({}));
    let echo = call(
        "echo",
        serde_json::json!({
            "ip": "203.0.113.7",
            "alert": { "id": "a-1", "rule": "Threat Intel IP Address Indicator Match", "severity": "high" },
            "iocs": ["evil.example", "203.0.113.7", "44d88612fea8a8f36de82e1278abb02f"]
        }),
    );
    let mut group = c.benchmark_group("plugin");
    group.bench_function("noop_invocation", |b| {
        b.iter(|| runtime.block_on(host.invoke(&noop)).expect("noop"))
    });
    group.bench_function("echo_json_invocation", |b| {
        b.iter(|| runtime.block_on(host.invoke(&echo)).expect("echo"))
    });
    group.finish();
    bare_wasmtime(c, &runtime);

    // A four-step run (enrich → block and ticket in parallel → notify) where every step is a
    // real plugin invocation, with the runner's bookkeeping and a journal that keeps nothing.
    let playbook = playbook::compile(FOUR_STEPS).expect("a valid benchmark playbook");
    let runner = runner::Runner::new(std::sync::Arc::new(host), std::sync::Arc::new(Discard));
    let event = serde_json::json!({"id": "alert-1", "ip": "203.0.113.7"});
    let secrets = runner::Secrets::default();
    c.bench_function("run/four_plugin_steps", |b| {
        b.iter(|| {
            let state = runtime
                .block_on(runner.start(&playbook, "bench-run", event.clone(), &secrets))
                .expect("runs");
            assert_eq!(state.status, runner::RunStatus::Succeeded);
        })
    });
}

const FOUR_STEPS: &str = r#"
name: four
trigger: { webhook: bench, public: true }
steps:
  - { id: enrich, uses: testbed/echo, with: { ip: "{{ trigger.ip }}" } }
  - { id: block, uses: testbed/noop, needs: [enrich], if: "steps.enrich.output.input.ip == trigger.ip" }
  - { id: ticket, uses: testbed/echo, needs: [enrich], with: { title: "Alert {{ trigger.id }}" } }
  - { id: notify, uses: testbed/noop, needs: [block, ticket] }
"#;

struct Discard;

#[async_trait::async_trait]
impl runner::Journal for Discard {
    async fn append(&self, _run_id: &str, event: &runner::RunEvent) -> Result<(), runner::Error> {
        std::hint::black_box(event);
        Ok(())
    }
}

/// The plugin world bound with wasmtime's own generator, apart from the host's bindings.
mod bare {
    wasmtime::component::bindgen!({
        path: "../../plugins/wit",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

/// A store's data for the bare call: the WASI and WASI HTTP contexts the plugin world imports.
struct BareState {
    wasi: wasmtime_wasi::WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    table: wasmtime::component::ResourceTable,
    no_requests: NoRequests,
}

impl wasmtime_wasi::WasiView for BareState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for BareState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.no_requests,
        }
    }
}

impl bare::riposte::plugin::types::Host for BareState {}

/// Riposte's host functions, doing nothing: `noop` calls none of them.
impl bare::riposte::plugin::host::Host for BareState {
    async fn log(
        &mut self,
        _level: bare::riposte::plugin::host::Level,
        _message: String,
        _fields: Vec<(String, String)>,
    ) {
    }
    async fn secret(&mut self, _name: String) -> Option<String> {
        None
    }
    async fn kv_get(&mut self, _key: String) -> Option<String> {
        None
    }
    async fn kv_set(&mut self, _key: String, _value: String, _ttl_seconds: Option<u32>) {}
}

/// wasi:http without a way out: `noop` makes no request.
struct NoRequests;

type IoFuture = Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl wasmtime_wasi_http::WasiHttpHooks for NoRequests {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _io: IoFuture,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (http::Response<wasmtime_wasi_http::WasiBody>, IoFuture),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::DestinationIpProhibited) })
    }
}

/// The testbed called with wasmtime alone: the component pre-instantiated once, then per call a
/// store, an instance and `invoke`; with a default engine, and with one that pools instances as
/// the host's does.
fn bare_wasmtime(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let mut pooled = wasmtime::Config::new();
    pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
        wasmtime::PoolingAllocationConfig::new(),
    ));
    let mut group = c.benchmark_group("bare");
    for (name, engine) in [
        ("noop_call", wasmtime::Engine::default()),
        (
            "noop_call_pooled",
            wasmtime::Engine::new(&pooled).expect("a pooling engine"),
        ),
    ] {
        bare_call(&mut group, name, &engine, runtime);
    }
    group.finish();
}

fn bare_call(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    engine: &wasmtime::Engine,
    runtime: &tokio::runtime::Runtime,
) {
    let bytes = std::fs::read(test_support::plugin("testbed")).expect("testbed");
    let component = wasmtime::component::Component::new(engine, &bytes).expect("component");
    let mut linker = wasmtime::component::Linker::<BareState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).expect("wasi:http");
    bare::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
        .expect("riposte:plugin");
    let pre = bare::PluginPre::new(linker.instantiate_pre(&component).expect("pre"))
        .expect("the plugin world");
    let context = bare::riposte::plugin::types::Context {
        run_id: "bench".into(),
        step_id: "step".into(),
        attempt: 1,
        idempotency_key: "bench:step".into(),
    };
    let call = || async {
        let mut store = wasmtime::Store::new(
            engine,
            BareState {
                wasi: wasmtime_wasi::WasiCtx::builder().build(),
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
                table: wasmtime::component::ResourceTable::new(),
                no_requests: NoRequests,
            },
        );
        let instance = pre.instantiate_async(&mut store).await.expect("instance");
        instance
            .call_invoke(&mut store, "noop", "{}", &context)
            .await
            .expect("call")
            .expect("noop succeeds")
    };
    group.bench_function(name, |b| b.iter(|| runtime.block_on(call())));
}

criterion_group!(benches, bench);
criterion_main!(benches);
