//! Every run ends: failure handlers, retries, timeouts and parallel steps, in any combination,
//! bring a run to an end state. The journal here suspends on every write ([`SlowJournal`]), as a
//! real store does, so concurrent steps interleave around it.

use std::fmt::Write as _;
use std::time::Duration;

use playbook::ErrorKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runner::{RunStatus, StepStatus};
use serde_json::json;

use crate::{Behaviour, Harness, Scripted, fail, ok, playbook, slow};

/// Longer than any generated run can take on the virtual clock: reaching it means a hang.
const NO_RUN_TAKES_THAT_LONG: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(start_paused = true)]
async fn a_failure_handler_beside_a_running_step_does_not_hang() {
    for on_failure in ["{ run: [hh], then: continue }", "[hh]"] {
        let yaml = format!(
            r#"
name: hang2
trigger: {{ webhook: t, public: true }}
steps:
  - {{ id: bad, uses: test/fail, on_failure: {on_failure} }}
  - {{ id: other, uses: test/echo, with: {{ x: 1 }} }}
handlers:
  - {{ id: hh, uses: test/echo, with: {{ m: "x" }} }}
"#
        );
        let executor = Scripted::new().on("bad", vec![fail(ErrorKind::Upstream, "down")]);
        let harness = Harness::with_slow_journal(executor);
        let state = tokio::time::timeout(
            NO_RUN_TAKES_THAT_LONG,
            harness.start(&playbook(&yaml), json!({})),
        )
        .await
        .unwrap_or_else(|_| panic!("the run with `on_failure: {on_failure}` hangs"));
        assert_eq!(
            state.step_status("hh"),
            StepStatus::Succeeded,
            "{on_failure}"
        );
        assert_eq!(
            state.step_status("other"),
            StepStatus::Succeeded,
            "{on_failure}"
        );
        let expected = if on_failure.contains("continue") {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        assert_eq!(state.status, expected, "{on_failure}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_named_by_two_failing_steps_runs_once() {
    let yaml = r#"
name: twice
trigger: { webhook: t, public: true }
steps:
  - { id: a, uses: test/act, on_failure: { run: [page], then: continue } }
  - { id: b, uses: test/act, on_failure: { run: [page], then: continue } }
handlers:
  - { id: page, uses: test/page }
"#;
    let executor = Scripted::new()
        .on("a", vec![fail(ErrorKind::Upstream, "a down")])
        .on("b", vec![fail(ErrorKind::Upstream, "b down")])
        .on("page", vec![slow(json!("paged"), 2)]);
    let harness = Harness::with_slow_journal(executor);
    let state = tokio::time::timeout(
        NO_RUN_TAKES_THAT_LONG,
        harness.start(&playbook(yaml), json!({})),
    )
    .await
    .expect("the run hangs");
    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(harness.executor.calls_of("page").len(), 1);
}

/// Generates playbooks with parallel steps, `needs`, retries, timeouts, every form of
/// `on_failure`, handlers that fail or hang, and steps whose plugin answers, fails, is slow or
/// never answers; runs each on a journal that suspends; checks that the run ends, that every step
/// ended, and that the journal folds to the state the runner returned.
#[tokio::test(start_paused = true)]
async fn generated_playbooks_always_end() {
    for seed in 0..400 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (yaml, executor) = generate(&mut rng);
        let harness = Harness::with_slow_journal(executor);
        let compiled = playbook(&yaml);
        let state = tokio::time::timeout(
            NO_RUN_TAKES_THAT_LONG,
            harness.start(&compiled, json!({ "n": seed })),
        )
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the run never ended:\n{yaml}"));
        assert!(
            matches!(state.status, RunStatus::Succeeded | RunStatus::Failed),
            "seed {seed}: the run ended {:?}:\n{yaml}",
            state.status
        );
        for step in &compiled.steps {
            assert!(
                state.step_status(step.id.as_str()).is_terminal(),
                "seed {seed}: step `{}` is {:?} in an ended run:\n{yaml}",
                step.id,
                state.step_status(step.id.as_str())
            );
        }
        assert_eq!(
            harness.journal.state("run-1").as_ref(),
            Some(&state),
            "seed {seed}: the journal does not fold to the returned state:\n{yaml}"
        );
    }
}

fn generate(rng: &mut StdRng) -> (String, std::sync::Arc<Scripted>) {
    let steps = rng.random_range(1..=6);
    let handlers = rng.random_range(0..=3);
    let mut executor = Scripted::new();
    let mut yaml = String::from("name: generated\ntrigger: { webhook: t, public: true }\nsteps:\n");
    for index in 0..steps {
        let id = format!("s{index}");
        let _ = writeln!(yaml, "  - id: {id}\n    uses: test/act\n    timeout: 5s");
        let needs: Vec<String> = (0..index)
            .filter(|_| rng.random_bool(0.3))
            .map(|need| format!("s{need}"))
            .collect();
        if !needs.is_empty() {
            let _ = writeln!(yaml, "    needs: [{}]", needs.join(", "));
        }
        if rng.random_bool(0.4) {
            let _ = writeln!(
                yaml,
                "    retry: {{ max_attempts: {}, backoff: {{ initial: 1s, max: 3s }}, on: [upstream, timeout] }}",
                rng.random_range(2..=3)
            );
        }
        if handlers > 0 {
            let named: Vec<String> = (0..handlers)
                .filter(|_| rng.random_bool(0.5))
                .map(|handler| format!("h{handler}"))
                .collect();
            let then = if rng.random_bool(0.5) {
                "continue"
            } else {
                "fail"
            };
            match rng.random_range(0..4) {
                0 if !named.is_empty() => {
                    let _ = writeln!(yaml, "    on_failure: [{}]", named.join(", "));
                }
                1 if !named.is_empty() => {
                    let _ = writeln!(
                        yaml,
                        "    on_failure: {{ run: [{}], then: {then} }}",
                        named.join(", ")
                    );
                }
                2 => {
                    let _ = writeln!(yaml, "    on_failure: continue");
                }
                _ => {}
            }
        } else if rng.random_bool(0.3) {
            let _ = writeln!(yaml, "    on_failure: continue");
        }
        executor = executor.on(&id, behaviours(rng));
    }
    if handlers > 0 {
        yaml.push_str("handlers:\n");
        for index in 0..handlers {
            let id = format!("h{index}");
            let _ = writeln!(yaml, "  - id: {id}\n    uses: test/page\n    timeout: 5s");
            if rng.random_bool(0.3) {
                let _ = writeln!(
                    yaml,
                    "    retry: {{ max_attempts: 2, backoff: 1s, on: [upstream] }}"
                );
            }
            executor = executor.on(&id, behaviours(rng));
        }
    }
    (yaml, executor)
}

/// What a step's plugin does on its first few calls (later calls echo their input).
fn behaviours(rng: &mut StdRng) -> Vec<Behaviour> {
    (0..rng.random_range(0..=3))
        .map(|_| match rng.random_range(0..6) {
            0 => ok(json!({ "ok": true })),
            1 => fail(ErrorKind::Upstream, "upstream down"),
            2 => fail(ErrorKind::Internal, "broken"),
            3 => slow(json!("late"), rng.random_range(1..=4)),
            4 => Behaviour::Hang,
            _ => Behaviour::Err(
                runner::StepError::new(ErrorKind::Upstream, "slow failure"),
                Duration::from_millis(rng.random_range(1..=3_000)),
            ),
        })
        .collect()
}

/// A journal that stores `answers` writes, then never answers again (a store that hung).
struct HangingJournal {
    answers: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl runner::Journal for HangingJournal {
    async fn append(&self, run_id: &str, event: &runner::RunEvent) -> Result<(), runner::Error> {
        self.append_all(run_id, std::slice::from_ref(event)).await
    }

    async fn append_all(
        &self,
        _run_id: &str,
        _events: &[runner::RunEvent],
    ) -> Result<(), runner::Error> {
        let left = self.answers.load(std::sync::atomic::Ordering::SeqCst);
        if left == 0 {
            std::future::pending::<()>().await;
        }
        self.answers
            .store(left - 1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_that_stops_making_progress_is_reported_stalled() {
    let compiled = playbook(
        r#"
name: stuck
trigger: { webhook: t, public: true }
steps:
  - { id: a, uses: test/act, timeout: 10s }
  - { id: b, uses: test/act, needs: [a], timeout: 10s }
"#,
    );
    let journal = HangingJournal {
        answers: std::sync::atomic::AtomicUsize::new(1),
    };
    let runner = std::sync::Arc::new(runner::Runner::new(
        Scripted::new(),
        std::sync::Arc::new(journal),
    ));
    let driving = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .start(&compiled, "run-1", json!({}), &runner::Secrets::default())
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runner.watchdog().driving(), 1);
    assert_eq!(runner.watchdog().stalled(runner.now()), []);
    // Past the longest attempt (10 s) and the margin: stalled.
    tokio::time::sleep(Duration::from_secs(10) + runner::STALL_MARGIN).await;
    let stalled = runner.watchdog().stalled(runner.now());
    assert_eq!(stalled.len(), 1, "{stalled:?}");
    assert_eq!(stalled[0].run_id, "run-1");
    assert!(stalled[0].quiet_ms >= 40_000, "{stalled:?}");
    driving.abort();
    let _ = driving.await;
    assert_eq!(
        runner.watchdog().driving(),
        0,
        "an abandoned drive is no longer watched"
    );
}
