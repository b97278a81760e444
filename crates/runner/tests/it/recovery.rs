//! Crashes: a run resumed from its journal never repeats a step whose success was recorded.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use playbook::ErrorKind;
use runner::{Journal, MemoryJournal, RunEvent, RunState, RunStatus, Runner, StepStatus};
use serde_json::json;

use crate::{Behaviour, Harness, Scripted, fail, ok, playbook};

const CHAIN: &str = r#"
name: chain
trigger: { webhook: t, public: true }
steps:
  - { id: one, uses: test/act }
  - { id: two, uses: test/act, needs: [one] }
  - { id: three, uses: test/act, needs: [two], with: { got: "{{ steps.one.output.v }}" } }
"#;

#[tokio::test(start_paused = true)]
async fn a_run_killed_mid_step_resumes_without_repeating_finished_steps() {
    let pb = playbook(CHAIN);
    // The first process: `two` never answers, and the process "dies" after 30 seconds.
    let first = Harness::new(
        Scripted::new()
            .on("one", vec![ok(json!({"v": 42}))])
            .on("two", vec![Behaviour::Hang]),
    );
    let died = tokio::time::timeout(Duration::from_secs(30), first.start(&pb, json!({}))).await;
    assert!(
        died.is_err(),
        "the first process must still be stuck in `two`"
    );

    // A new process with a new executor picks the run up from the journal alone.
    let journal_events = first.journal.events("run-1");
    let recovered = RunState::from_events(&journal_events).expect("a run on record");
    assert_eq!(recovered.step_status("one"), StepStatus::Succeeded);
    assert_eq!(recovered.step_status("two"), StepStatus::Running);

    let second_executor = Scripted::new();
    let second = Runner::new(second_executor.clone(), first.journal.clone());
    let state = second
        .resume(&pb, recovered, &Default::default())
        .await
        .expect("resumes");

    assert_eq!(state.status, RunStatus::Succeeded);
    assert!(
        second_executor.calls_of("one").is_empty(),
        "`one` succeeded before the crash"
    );
    let two = second_executor.calls_of("two");
    assert_eq!(two.len(), 1);
    assert_eq!(
        two[0].call.idempotency_key, "run-1:two",
        "same key as before the crash"
    );
    assert_eq!(
        two[0].call.attempt, 2,
        "attempt numbers continue across the crash"
    );
    assert_eq!(
        second_executor.calls_of("three")[0].call.input,
        json!({"got": 42})
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_recorded_before_a_crash_still_fails_the_run() {
    let yaml = r#"
name: failed-before-crash
trigger: { webhook: t, public: true }
steps:
  - { id: one, uses: test/act }
  - { id: two, uses: test/act }
"#;
    let pb = playbook(yaml);
    let journal = Arc::new(MemoryJournal::new());
    // Rebuild a journal as a process would leave it: `one` failed, then the process died.
    let first = Runner::new(
        Scripted::new()
            .on("one", vec![fail(ErrorKind::Internal, "boom")])
            .on("two", vec![Behaviour::Hang]),
        journal.clone(),
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        first.start(&pb, "run-1", json!({}), &Default::default()),
    )
    .await;
    let state = journal.state("run-1").expect("on record");
    assert_eq!(state.step_status("one"), StepStatus::Failed);
    assert_eq!(state.status, RunStatus::Running);

    let second = Runner::new(Scripted::new(), journal.clone());
    let state = second
        .resume(&pb, state, &Default::default())
        .await
        .expect("resumes");
    assert_eq!(state.status, RunStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn resuming_a_finished_run_does_nothing() {
    let pb = playbook(CHAIN);
    let harness = Harness::new(Scripted::new());
    let state = harness.start(&pb, json!({})).await;
    let calls = harness.executor.seen().len();
    let again = harness
        .runner
        .resume(&pb, state.clone(), &Default::default())
        .await
        .expect("resumes");
    assert_eq!(again, state);
    assert_eq!(harness.executor.seen().len(), calls);
}

#[tokio::test(start_paused = true)]
async fn a_run_cannot_be_resumed_with_another_playbook() {
    let harness = Harness::new(Scripted::new());
    let state = harness.start(&playbook(CHAIN), json!({})).await;
    let other = playbook(&CHAIN.replace("name: chain", "name: other"));
    assert!(
        harness
            .runner
            .resume(&other, state, &Default::default())
            .await
            .is_err()
    );
}

/// A journal that refuses every append after the first `limit`.
struct FailingJournal {
    inner: MemoryJournal,
    limit: usize,
}

#[async_trait]
impl Journal for FailingJournal {
    async fn append(&self, run_id: &str, event: &RunEvent) -> Result<(), runner::Error> {
        if self.inner.events(run_id).len() >= self.limit {
            return Err(runner::Error::Journal("disk full".into()));
        }
        self.inner.append(run_id, event).await
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_happens_off_the_record_when_the_journal_fails() {
    let executor = Scripted::new();
    // RunStarted, StepStarted(one), StepSucceeded(one) are accepted; StepStarted(two) is refused.
    let journal = Arc::new(FailingJournal {
        inner: MemoryJournal::new(),
        limit: 3,
    });
    let runner = Runner::new(executor.clone(), journal.clone());
    let result = runner
        .start(&playbook(CHAIN), "run-1", json!({}), &Default::default())
        .await;
    assert!(
        matches!(result, Err(runner::Error::Journal(_))),
        "{result:?}"
    );
    assert_eq!(executor.calls_of("one").len(), 1);
    assert!(
        executor.calls_of("two").is_empty(),
        "a call that could not be recorded must not be made"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_resumed_reruns_its_failed_steps_and_keeps_what_succeeded() {
    let pb = playbook(CHAIN);
    // The downstream tool behind `two` is down: the run fails there.
    let first = Harness::new(Scripted::new().on("one", vec![ok(json!({"v": 42}))]).on(
        "two",
        vec![fail(ErrorKind::InvalidInput, "ticketing is down")],
    ));
    let failed = first.start(&pb, json!({})).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.step_status("three"), StepStatus::Skipped);

    // The tool is back; someone resumes the run.
    let resumed = RunEvent::RunResumed {
        by: "analyst@example.com".into(),
        at: 1,
    };
    first
        .journal
        .append("run-1", &resumed)
        .await
        .expect("append");
    let reopened = RunState::from_events(&first.journal.events("run-1")).expect("a run on record");
    assert_eq!(reopened.status, RunStatus::Running);
    assert_eq!(reopened.step_status("one"), StepStatus::Succeeded);
    assert_eq!(reopened.step_status("two"), StepStatus::Pending);
    assert_eq!(reopened.error, None);

    let executor = Scripted::new();
    let state = Runner::new(executor.clone(), first.journal.clone())
        .resume(&pb, reopened, &Default::default())
        .await
        .expect("resumes");
    assert_eq!(state.status, RunStatus::Succeeded, "{:?}", state.error);
    assert!(executor.calls_of("one").is_empty(), "`one` is kept");
    let two = executor.calls_of("two");
    assert_eq!(two.len(), 1);
    assert_eq!(
        two[0].call.idempotency_key, "run-1:two",
        "same key as the failed attempt"
    );
    assert_eq!(
        executor.calls_of("three")[0].call.input,
        json!({"got": 42}),
        "the kept output feeds the rest"
    );
}

#[test]
fn a_recovery_is_counted_in_the_run_state() {
    let started = RunEvent::RunStarted {
        run_id: "r".into(),
        playbook: "p".into(),
        playbook_version: None,
        event: json!({}),
        incident: Default::default(),
        at: 0,
    };
    let recovered = RunEvent::RunRecovered {
        deliveries: 2,
        at: 5,
    };
    let state = RunState::from_events([&started, &recovered, &recovered]).expect("a run");
    assert_eq!(state.recoveries, 2);
    assert_eq!(state.status, RunStatus::Running);
}
