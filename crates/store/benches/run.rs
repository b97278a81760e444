//! What one four-step run costs the embedded store, one run at a time: its accept (delivery id
//! and dedupe key), the job's claim, opening the run (lock, record, journal), the journal writes
//! the runner makes while the run advances (plugin calls answer at once), the unlock and the ack.
//! The plugin calls and the HTTP they make are not in it: this is the store's share of a run, and
//! the SQLite thread's work that `bench/load` shows as a quarter of a worker's CPU.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{delivery, sqlite_store};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runner::{Runner, Secrets, StepCall, StepError, StepExecutor};
use store::{OpenedRun, Store};

/// The shape of `bench/load`'s playbook: three plugin calls and a built-in step.
const FOUR_STEPS: &str = r##"
name: load
trigger: { webhook: load, public: true }
secrets: [abuseipdb_key, slack_bot_token]
steps:
  - id: enrich
    uses: enrich-ioc/check-ip
    with: { ip: "{{ trigger.ip }}" }
  - id: decide
    uses: core/echo
    needs: [enrich]
    with: { escalate: "{{ steps.enrich.output.score >= 50 }}" }
  - id: ticket
    uses: http/request
    needs: [decide]
    with:
      method: POST
      json: { ip: "{{ trigger.ip }}", escalate: "{{ steps.decide.output.escalate }}" }
  - id: notify
    uses: notify-slack/post-message
    needs: [ticket]
    with: { channel: "#soc", text: "{{ trigger.ip | defang }}: ticket {{ steps.ticket.output.body.id }}" }
"##;

/// Answers every plugin call at once, with what the loopback services of `bench/load` return.
struct Answering;

#[async_trait]
impl StepExecutor for Answering {
    async fn execute(&self, _call: StepCall) -> Result<serde_json::Value, StepError> {
        Ok(serde_json::json!({
            "score": 90,
            "status": 201,
            "body": {"id": "T-1", "ok": true, "ts": "1700000000.000100"},
        }))
    }
}

fn run(c: &mut Criterion) {
    let (runtime, _dir, store) = sqlite_store();
    let store = Arc::new(store);
    let runner = Runner::new(Arc::new(Answering), store.clone());
    let playbook = playbook::compile(FOUR_STEPS).expect("a valid playbook");
    let secrets = Secrets::new(
        [
            (
                "abuseipdb_key".to_owned(),
                "abuse-0123456789abcdef".to_owned(),
            ),
            (
                "slack_bot_token".to_owned(),
                "xoxb-0123456789-abcdef".to_owned(),
            ),
        ]
        .into(),
    );
    let lease = Duration::from_secs(60);
    let mut next = 0;
    let mut group = c.benchmark_group("sqlite");
    group.throughput(Throughput::Elements(1));
    group.bench_function("four_step_run", |b| {
        b.iter(|| {
            next += 1;
            runtime.block_on(async {
                store.accept(&delivery(next)).await.expect("accept");
                let claims = store.claim("bench", 1, lease).await.expect("claim");
                let [claim] = claims.as_slice() else {
                    panic!("claimed {} jobs, not one", claims.len());
                };
                let OpenedRun::Locked { record, events } = store
                    .open_run(&claim.run_id, "bench", lease)
                    .await
                    .expect("open")
                else {
                    panic!("the run could not be opened");
                };
                let state = runner
                    .advance(
                        &playbook,
                        &claim.run_id,
                        &record.event,
                        &events,
                        &secrets,
                        1,
                    )
                    .await
                    .expect("advance");
                assert_eq!(state.status, runner::RunStatus::Succeeded);
                store
                    .ack("bench", std::slice::from_ref(claim))
                    .await
                    .expect("ack");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, run);
criterion_main!(benches);
