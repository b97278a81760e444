//! Parse + check throughput: a realistic playbook and a large generated one.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A playbook of `steps` steps in a chain, each with templates, a condition, a retry policy and a
/// failure handler, the shape a big real playbook has.
fn large_playbook(steps: usize) -> String {
    let mut yaml = String::from(
        "name: large\ntrigger:\n  webhook: bench\n  auth: siem\n  filter: trigger.severity in ['high', 'critical']\n  dedupe: { key: \"{{ trigger.id }}\", window: 10m }\nsecrets: [api_key]\nvars:\n  protected: [\"10.0.0.0/8\", \"192.168.0.0/16\"]\nsteps:\n",
    );
    for i in 0..steps {
        yaml.push_str(&format!(
            "  - id: step_{i}\n    name: Step number {i}\n    uses: enrich-ioc/check-ip@1.0.0\n"
        ));
        if i > 0 {
            yaml.push_str(&format!("    needs: [step_{}]\n    if: steps.step_{}.output.score >= 10 and trigger.ip is not in_cidr(vars.protected)\n", i - 1, i - 1));
        }
        yaml.push_str("    with:\n      ip: \"{{ trigger.ip }}\"\n      key: \"{{ secrets.api_key }}\"\n      note: \"Alert {{ trigger.id }} from {{ trigger.host | upper }} at {{ run.started_at }}\"\n");
        yaml.push_str("    timeout: 30s\n    retry: { max_attempts: 3, backoff: { initial: 1s, max: 30s }, on: [rate_limited, upstream] }\n    on_failure: { run: [notify], then: fail }\n");
    }
    yaml.push_str("handlers:\n  - id: notify\n    uses: notify-slack/post-message\n    with: { text: \"{{ error.step }} failed: {{ error.message }}\" }\n");
    yaml
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    for steps in [4, 100, 500] {
        let yaml = large_playbook(steps);
        assert!(
            playbook::compile(&yaml).is_ok(),
            "the benchmark playbook must be valid"
        );
        group.throughput(Throughput::Bytes(yaml.len() as u64));
        group.bench_function(format!("{steps}_steps"), |b| {
            b.iter(|| playbook::compile(std::hint::black_box(&yaml)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
