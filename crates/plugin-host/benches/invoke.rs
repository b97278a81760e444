//! The cost of one plugin invocation: a fresh store and instance, the call, JSON in and out.
//! Compare with ~40–75 µs measured for a bare wasmtime component instantiate + call here.

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

criterion_group!(benches, bench);
criterion_main!(benches);
