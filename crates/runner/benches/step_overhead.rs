//! The runner's own cost per step: a no-op executor and a journal that stores nothing, so what is
//! measured is scheduling, template rendering, event building and redaction.

use std::sync::Arc;

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runner::{Journal, RunEvent, Runner, Secrets, StepCall, StepError, StepExecutor};

struct NoOp;

#[async_trait]
impl StepExecutor for NoOp {
    async fn execute(&self, _call: StepCall) -> Result<serde_json::Value, StepError> {
        Ok(serde_json::json!({"score": 90, "malicious": true}))
    }
}

struct Discard;

#[async_trait]
impl Journal for Discard {
    async fn append(&self, _run_id: &str, event: &RunEvent) -> Result<(), runner::Error> {
        std::hint::black_box(event);
        Ok(())
    }
}

/// The four-step alert playbook of our throughput goal: enrich, decide, block, notify.
const FOUR_STEPS: &str = r#"
name: four
trigger: { webhook: bench, public: true }
secrets: [api_key]
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    with: { ip: "{{ trigger.ip }}", key: "{{ secrets.api_key }}" }
  - id: block
    uses: block-ip/ban
    needs: [enrich]
    if: steps.enrich.output.score >= 80
    with: { ip: "{{ trigger.ip }}", duration: 4h }
  - id: ticket
    uses: http/request
    needs: [enrich]
    with: { body: "IP {{ trigger.ip }} scored {{ steps.enrich.output.score }}" }
  - id: notify
    uses: notify-slack/post-message
    needs: [block, ticket]
    with: { text: "Blocked {{ trigger.ip | defang }} for alert {{ trigger.id }}" }
"#;

fn chain(steps: usize) -> String {
    let mut yaml = String::from("name: chain\ntrigger: { webhook: bench, public: true }\nsteps:\n");
    for i in 0..steps {
        yaml.push_str(&format!(
            "  - id: s{i}\n    uses: test/noop\n    with: {{ ip: \"{{{{ trigger.ip }}}}\" }}\n"
        ));
        if i > 0 {
            yaml.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    yaml
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runner = Runner::new(Arc::new(NoOp), Arc::new(Discard));
    let secrets = Secrets::new([("api_key".to_owned(), "k-0123456789".to_owned())].into());
    let event = serde_json::json!({"id": "alert-1", "ip": "203.0.113.7", "host": "web-1", "severity": "high"});

    let mut group = c.benchmark_group("runner");
    for (name, yaml, steps) in [
        ("four_step_run", FOUR_STEPS.to_owned(), 4),
        ("chain_of_50", chain(50), 50),
    ] {
        let playbook = playbook::compile(&yaml).expect("valid benchmark playbook");
        group.throughput(Throughput::Elements(steps));
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let state = runner
                        .start(&playbook, "bench-run", event.clone(), &secrets)
                        .await
                        .expect("runs");
                    assert_eq!(state.status, runner::RunStatus::Succeeded);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
