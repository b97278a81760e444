//! Undo and expiry: a step's `undo:` runs once when its effect expires or someone asks, with its
//! own retries and idempotency key, recorded in the journal also after the run ended.

use std::time::Duration;

use playbook::ErrorKind;
use runner::{RunEvent, RunState, RunStatus, UndoStatus};
use serde_json::json;

use crate::{Harness, Scripted, fail, ok, playbook, secrets};

const BAN: &str = r#"
name: ban
trigger: { webhook: t, public: true }
secrets: [lapi_key]
vars: { ban_for: 2h }
steps:
  - id: ban
    uses: block-ip/ban
    with: { ip: "{{ trigger.ip }}", duration: 24h }
    expires: "{{ vars.ban_for }}"
    undo:
      uses: block-ip/unban
      with:
        ip: "{{ input.ip }}"
        alert: "{{ output.alert_ids[0] }}"
        key: "{{ secrets.lapi_key }}"
      retry: { max_attempts: 2, backoff: 1s, on: [upstream] }
  - id: notify
    uses: core/echo
    needs: ban
    with: { text: banned }
  - id: tag
    uses: test/tag
    undo: { uses: test/untag, with: { untag: "{{ input.label }}" } }
    with: { label: suspicious }
"#;

/// Advances run-1 as a worker does when its timer fires.
async fn advance(harness: &Harness, playbook: &playbook::Playbook) -> RunState {
    harness
        .runner
        .advance(
            playbook,
            "run-1",
            &json!({"ip": "203.0.113.9"}),
            &harness.events(),
            &secrets(&[("lapi_key", "s3cret-key")]),
            1,
        )
        .await
        .expect("advances")
}

fn undo_calls(executor: &Scripted) -> Vec<crate::Seen> {
    executor
        .seen()
        .into_iter()
        .filter(|seen| seen.call.idempotency_key.ends_with(":undo"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_expiring_step_is_undone_once_when_it_expires() {
    let executor = Scripted::new().on("ban", vec![ok(json!({"alert_ids": ["42"]}))]);
    let harness = Harness::new(executor.clone());
    let compiled = playbook(BAN);
    let state = advance(&harness, &compiled).await;
    assert_eq!(state.status, RunStatus::Succeeded);
    let banned_at = state.step("ban").and_then(|r| r.finished_at).expect("done");
    let undo = state
        .step("ban")
        .and_then(|r| r.undo.clone())
        .expect("scheduled");
    assert_eq!(undo.status, UndoStatus::Scheduled);
    assert_eq!(undo.due, banned_at + 2 * 3600 * 1000);
    assert_eq!(undo.requested_by, None);
    assert_eq!(state.next_wakeup(), Some(undo.due));
    // `tag` declares an undo but no expiry: nothing is scheduled for it.
    assert_eq!(state.step("tag").and_then(|r| r.undo.clone()), None);

    // Looked at again before it expires: nothing is undone.
    tokio::time::advance(Duration::from_secs(3600)).await;
    advance(&harness, &compiled).await;
    assert!(undo_calls(&executor).is_empty());

    tokio::time::advance(Duration::from_secs(3600)).await;
    let state = advance(&harness, &compiled).await;
    let calls = undo_calls(&executor);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0].call;
    assert_eq!(call.uses.to_string(), "block-ip/unban");
    assert_eq!(call.idempotency_key, "run-1:ban:undo");
    assert_eq!(
        call.input,
        json!({"ip": "203.0.113.9", "alert": "42", "key": "s3cret-key"}),
        "the undo reads the step's recorded input and output, and gets the secret's value"
    );
    let undo = state
        .step("ban")
        .and_then(|r| r.undo.clone())
        .expect("undo");
    assert_eq!(undo.status, UndoStatus::Succeeded);
    assert_eq!(state.next_wakeup(), None);
    assert_eq!(
        state.status,
        RunStatus::Succeeded,
        "the run's own outcome stands"
    );

    // The undo is on record after the run ended; the secret is not.
    let events = harness.events();
    let finished = events
        .iter()
        .position(|e| matches!(e, RunEvent::RunFinished { .. }))
        .expect("finished");
    let started = events
        .iter()
        .position(|e| matches!(e, RunEvent::UndoStarted { .. }))
        .expect("undo started");
    assert!(started > finished);
    let text = serde_json::to_string(&events).expect("json");
    assert!(!text.contains("s3cret-key"), "{text}");
    assert!(matches!(events.last(), Some(RunEvent::UndoSucceeded { step, .. }) if step == "ban"));

    // Advanced again (a timer that fires twice, a job delivered again): never undone twice.
    tokio::time::advance(Duration::from_secs(3600)).await;
    advance(&harness, &compiled).await;
    assert_eq!(undo_calls(&executor).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_undo_is_retried_shows_as_failed_and_can_be_asked_for_again() {
    let executor = Scripted::new().on("ban", vec![ok(json!({"alert_ids": ["42"]}))]);
    let harness = Harness::new(executor.clone());
    let compiled = playbook(BAN);
    advance(&harness, &compiled).await;
    executor.on(
        "ban",
        vec![
            fail(ErrorKind::Upstream, "LAPI down"),
            fail(ErrorKind::Upstream, "LAPI still down"),
        ],
    );
    let mut state = harness.journal.state("run-1").expect("state");
    let asked = harness
        .runner
        .request_undo(&compiled, &mut state, Some("ban"), "alice")
        .await
        .expect("asked");
    assert_eq!(asked, ["ban"]);
    let state = advance(&harness, &compiled).await;
    let undo = state
        .step("ban")
        .and_then(|r| r.undo.clone())
        .expect("undo");
    assert_eq!(undo.status, UndoStatus::Failed);
    assert_eq!(undo.attempts, 2, "the undo's retry policy: two attempts");
    assert_eq!(undo.requested_by.as_deref(), Some("alice"));
    assert_eq!(
        undo.error.as_ref().map(|e| e.message.as_str()),
        Some("LAPI still down")
    );
    assert!(
        harness
            .events()
            .iter()
            .any(|e| matches!(e, RunEvent::UndoRetrying { attempt: 1, .. }))
    );
    assert_eq!(
        state.next_wakeup(),
        None,
        "a failed undo waits for a person"
    );

    // Asked again: it runs again, attempts counted on, and succeeds.
    let mut state = harness.journal.state("run-1").expect("state");
    harness
        .runner
        .request_undo(&compiled, &mut state, None, "bob")
        .await
        .expect("asked again");
    let state = advance(&harness, &compiled).await;
    let undo = state
        .step("ban")
        .and_then(|r| r.undo.clone())
        .expect("undo");
    assert_eq!(undo.status, UndoStatus::Succeeded);
    assert_eq!(undo.attempts, 3);
    assert_eq!(undo.requested_by.as_deref(), Some("bob"));
    // Asking for everything the run holds also undid `tag`, which has no expiry.
    let tag = state.step("tag").and_then(|r| r.undo.clone()).expect("tag");
    assert_eq!(tag.status, UndoStatus::Succeeded);
    let untag = undo_calls(&executor)
        .into_iter()
        .find(|seen| seen.call.step_id == "tag")
        .expect("tag undone");
    assert_eq!(untag.call.input, json!({"untag": "suspicious"}));
}

#[tokio::test(start_paused = true)]
async fn only_what_a_run_holds_can_be_undone() {
    let executor = Scripted::new()
        .on("ban", vec![ok(json!({"alert_ids": ["42"]}))])
        .on("tag", vec![fail(ErrorKind::InvalidInput, "no")]);
    let harness = Harness::new(executor.clone());
    let compiled = playbook(&BAN.replace(
        "    with: { label: suspicious }",
        "    with: { label: suspicious }\n    on_failure: continue",
    ));
    advance(&harness, &compiled).await;
    let mut state = harness.journal.state("run-1").expect("state");
    let refused = |result: Result<Vec<String>, runner::Error>| match result {
        Err(runner::Error::Refused(reason)) => reason,
        other => panic!("not refused: {other:?}"),
    };
    let runner = &harness.runner;
    assert_eq!(
        refused(
            runner
                .request_undo(&compiled, &mut state, Some("notify"), "a")
                .await
        ),
        "step `notify` declares no `undo:`"
    );
    assert_eq!(
        refused(
            runner
                .request_undo(&compiled, &mut state, Some("tag"), "a")
                .await
        ),
        "step `tag` is failed: only a step that succeeded has an effect to undo"
    );
    assert_eq!(
        refused(
            runner
                .request_undo(&compiled, &mut state, Some("nope"), "a")
                .await
        ),
        "playbook `ban` has no step `nope`"
    );
    runner
        .request_undo(&compiled, &mut state, None, "a")
        .await
        .expect("ban is held");
    advance(&harness, &compiled).await;
    let mut state = harness.journal.state("run-1").expect("state");
    assert_eq!(
        refused(
            runner
                .request_undo(&compiled, &mut state, Some("ban"), "a")
                .await
        ),
        "step `ban` was already undone"
    );
    assert_eq!(
        refused(runner.request_undo(&compiled, &mut state, None, "a").await),
        "run run-1 holds nothing to undo"
    );
    assert_eq!(undo_calls(&executor).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expiry_that_cannot_be_worked_out_is_a_failed_undo_not_a_silent_one() {
    let executor = Scripted::new().on("ban", vec![ok(json!({"alert_ids": ["42"]}))]);
    let harness = Harness::new(executor.clone());
    let compiled = playbook(&BAN.replace("ban_for: 2h", "ban_for: forever"));
    let state = advance(&harness, &compiled).await;
    assert_eq!(
        state.status,
        RunStatus::Succeeded,
        "the ban itself succeeded"
    );
    let undo = state
        .step("ban")
        .and_then(|r| r.undo.clone())
        .expect("undo");
    assert_eq!(undo.status, UndoStatus::Failed);
    let error = undo.error.expect("why");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(
        error
            .message
            .starts_with("`expires`: `forever` is not a duration"),
        "{error}"
    );
    assert!(undo_calls(&executor).is_empty());
}
