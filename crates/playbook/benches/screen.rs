//! What screening one alert costs the API process before it is stored: the trigger's `filter`
//! and its `dedupe` key, a text template, against the alert.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const PLAYBOOK: &str = r#"
name: screen
trigger:
  webhook: siem
  public: true
  filter: trigger.severity in ['high', 'critical']
  dedupe: { key: "{{ trigger.rule }}:{{ trigger.ip }}", window: 1h }
steps:
  - { id: s, uses: core/echo }
"#;

fn bench(c: &mut Criterion) {
    let playbook = playbook::compile(PLAYBOOK).expect("the benchmark playbook must be valid");
    let alert = json!({"rule": "ssh-brute-force", "ip": "185.220.101.4", "severity": "high"});
    let screened = playbook.screen(&alert).expect("screens");
    assert_eq!(
        screened.dedupe_key.as_deref(),
        Some("ssh-brute-force:185.220.101.4")
    );
    let mut group = c.benchmark_group("screen");
    group.throughput(Throughput::Elements(1));
    group.bench_function("filter_and_dedupe_key", |b| {
        b.iter(|| playbook.screen(std::hint::black_box(&alert)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
