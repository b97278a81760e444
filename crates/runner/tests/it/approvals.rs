//! Approval gates: the run waits, a decision (or the deadline) resumes it.

use std::time::Duration;

use runner::{Decision, RunEvent, RunStatus, StepStatus};
use serde_json::json;

use crate::{Harness, Scripted, playbook};

fn gated(on_timeout: &str) -> String {
    format!(
        r#"
name: gated
trigger: {{ webhook: t, public: true }}
steps:
  - id: enrich
    uses: test/act
  - id: block
    uses: test/act
    needs: [enrich]
    approval:
      approvers: [soc-leads]
      timeout: 30m
      on_timeout: {on_timeout}
      message: "Block {{{{ trigger.ip }}}}?"
  - id: notify
    uses: test/act
    needs: [block]
  - id: unrelated
    uses: test/act
"#
    )
}

#[tokio::test(start_paused = true)]
async fn the_run_waits_for_approval_without_calling_the_gated_step() {
    let harness = Harness::new(Scripted::new());
    let state = harness
        .start(&playbook(&gated("deny")), json!({"ip": "203.0.113.7"}))
        .await;

    assert_eq!(state.status, RunStatus::WaitingForApproval);
    assert_eq!(state.step_status("block"), StepStatus::WaitingForApproval);
    assert_eq!(
        state.step_status("unrelated"),
        StepStatus::Succeeded,
        "other branches go on"
    );
    assert!(harness.executor.calls_of("block").is_empty());
    let requested = harness.events().into_iter().find_map(|e| match e {
        RunEvent::ApprovalRequested {
            approvers,
            message,
            deadline,
            at,
            ..
        } => Some((approvers, message, deadline - at)),
        _ => None,
    });
    assert_eq!(
        requested,
        Some((
            vec!["soc-leads".to_owned()],
            Some("Block 203.0.113.7?".to_owned()),
            30 * 60 * 1000
        ))
    );
    assert_eq!(
        state.next_deadline(),
        Some(harness.runner.now() + 30 * 60 * 1000)
    );

    // Resuming without a decision before the deadline changes nothing.
    let state = harness
        .runner
        .resume(&playbook(&gated("deny")), state, &Default::default())
        .await
        .expect("resumes");
    assert_eq!(state.status, RunStatus::WaitingForApproval);
    assert!(harness.executor.calls_of("block").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_approval_resumes_the_run_and_the_step_runs_once() {
    let pb = playbook(&gated("deny"));
    let harness = Harness::new(Scripted::new());
    let mut state = harness.start(&pb, json!({"ip": "203.0.113.7"})).await;
    harness
        .runner
        .decide(
            &mut state,
            "block",
            Decision::Approved {
                by: "alice".into(),
                comment: None,
            },
        )
        .await
        .expect("decides");
    let state = harness
        .runner
        .resume(&pb, state, &Default::default())
        .await
        .expect("resumes");

    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(harness.executor.calls_of("block").len(), 1);
    assert_eq!(state.step_status("notify"), StepStatus::Succeeded);
    // The decision is on the record, with who made it.
    assert!(harness.events().iter().any(|e| matches!(e,
        RunEvent::ApprovalDecided { step, decision: Decision::Approved { by, .. }, .. } if step == "block" && by == "alice")));
    // Deciding again is refused: the gate is closed.
    let mut again = state.clone();
    let refused = harness
        .runner
        .decide(
            &mut again,
            "block",
            Decision::Approved {
                by: "bob".into(),
                comment: None,
            },
        )
        .await;
    assert!(refused.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_denial_skips_the_step_and_its_dependents() {
    let pb = playbook(&gated("approve"));
    let harness = Harness::new(Scripted::new());
    let mut state = harness.start(&pb, json!({"ip": "203.0.113.7"})).await;
    harness
        .runner
        .decide(
            &mut state,
            "block",
            Decision::Denied {
                by: "bob".into(),
                reason: Some("false positive".into()),
            },
        )
        .await
        .expect("decides");
    let state = harness
        .runner
        .resume(&pb, state, &Default::default())
        .await
        .expect("resumes");

    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(state.step_status("block"), StepStatus::Skipped);
    assert_eq!(state.step_status("notify"), StepStatus::Skipped);
    assert!(harness.executor.calls_of("block").is_empty());
}

async fn after_timeout(on_timeout: &str) -> (runner::RunState, Harness) {
    let pb = playbook(&gated(on_timeout));
    let harness = Harness::new(Scripted::new());
    let state = harness.start(&pb, json!({"ip": "203.0.113.7"})).await;
    tokio::time::advance(Duration::from_secs(31 * 60)).await;
    let state = harness
        .runner
        .resume(&pb, state, &Default::default())
        .await
        .expect("resumes");
    (state, harness)
}

#[tokio::test(start_paused = true)]
async fn silence_past_the_deadline_denies_by_default() {
    let (state, harness) = after_timeout("deny").await;
    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(state.step_status("block"), StepStatus::Skipped);
    assert!(harness.executor.calls_of("block").is_empty());
    assert!(harness.events().iter().any(|e| matches!(
        e,
        RunEvent::ApprovalDecided {
            decision: Decision::TimedOut,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn silence_past_the_deadline_can_approve() {
    let (state, harness) = after_timeout("approve").await;
    assert_eq!(state.status, RunStatus::Succeeded);
    assert_eq!(harness.executor.calls_of("block").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn silence_past_the_deadline_can_fail_the_step() {
    let (state, harness) = after_timeout("fail").await;
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(state.step_status("block"), StepStatus::Failed);
    assert!(harness.executor.calls_of("block").is_empty());
}
