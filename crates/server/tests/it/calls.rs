//! Sub-playbooks: a step that `uses: playbook/<name>` runs that playbook as a child run with its
//! own journal, linked to its caller and filed under the caller's case; the child's outputs are
//! the step's output, and a child that waits for a person holds its caller until they decide.

use std::time::Duration;

use runner::{Decision, RunEvent, RunStatus};
use serde_json::json;

use crate::{BACKENDS, Server, run_id};

/// The caller: opens a case, calls `contain-host` for the alert's host, reports what came back.
const TRIAGE: &str = r#"
name: triage
trigger: { webhook: triage, auth: siem }
case:
  key: "host:{{ trigger.host }}"
steps:
  - id: look
    uses: core/echo
    timeout: 2s
    with: { host: "{{ trigger.host }}" }
  - id: contain
    uses: playbook/contain-host
    needs: look
    timeout: 4s
    with:
      host: "{{ steps.look.output.host }}"
      reason: "triage of {{ trigger.host }}"
  - id: report
    uses: core/echo
    timeout: 2s
    needs: contain
    with: { isolated: "{{ steps.contain.output.isolated }}", ticket: "{{ steps.contain.output.ticket }}" }
outputs:
  isolated: "{{ steps.contain.output.isolated }}"
"#;

/// The child: its trigger is the caller's input; a person approves the isolation.
const CONTAIN_HOST: &str = r#"
name: contain-host
trigger: { webhook: contain-host, auth: siem }
steps:
  - id: isolate
    uses: core/echo
    timeout: 2s
    phase: containment
    approval: { approvers: [soc], timeout: 1h }
    with: { isolated: "{{ trigger.host }}", why: "{{ trigger.reason }}" }
  - id: ticket
    uses: core/echo
    timeout: 2s
    needs: isolate
    with: { id: "INC-{{ trigger.host | upper }}" }
outputs:
  isolated: "{{ steps.isolate.output.isolated }}"
  ticket: "{{ steps.ticket.output.id }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_runs_a_playbook_as_a_child_run_and_gets_its_outputs() {
    for backend in BACKENDS {
        let server = Server::in_process(
            backend,
            &[
                ("triage.yaml", TRIAGE.into()),
                ("contain-host.yaml", CONTAIN_HOST.into()),
            ],
        )
        .await;
        let (status, answer) = server
            .post_signed("triage", &json!({ "host": "web-07" }).to_string(), &[])
            .await;
        assert_eq!(status, 202, "{answer}");
        let parent = run_id(&answer);
        let child = server::calls::child_of(&parent, "contain");

        // The child waits for a person; its caller waits with it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let events = server.events(&child).await;
            if events
                .iter()
                .any(|e| matches!(e, RunEvent::ApprovalRequested { .. }))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: the child never asked: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let record = server
            .store
            .run(&child)
            .await
            .expect("store")
            .expect("child");
        assert_eq!(record.playbook, "contain-host");
        assert_eq!(record.trigger, "playbook/contain-host");
        assert_eq!(
            record.event,
            json!({ "host": "web-07", "reason": "triage of web-07" }),
            "the child's trigger is the step's input"
        );
        match &server.events(&child).await[0] {
            RunEvent::RunAccepted {
                actor, delivery_id, ..
            } => {
                assert_eq!(actor, &format!("run:{parent}"), "linked to its caller");
                assert_eq!(
                    delivery_id.as_deref(),
                    Some(format!("call:{parent}:contain").as_str())
                );
            }
            other => panic!("not an acceptance: {other:?}"),
        }
        let parent_state =
            runner::RunState::from_events(&server.events(&parent).await).expect("started");
        assert_eq!(parent_state.status, RunStatus::Running);

        server
            .control
            .decide(
                &child,
                "isolate",
                Decision::Approved {
                    by: "alice".into(),
                    comment: None,
                },
            )
            .await
            .expect("decided");
        let done = server.finished(&parent, Duration::from_secs(15)).await;
        assert_eq!(done.status, RunStatus::Succeeded, "{backend:?}: {done:#?}");
        assert_eq!(
            done.step("contain").and_then(|s| s.output.clone()),
            Some(json!({ "isolated": "web-07", "ticket": "INC-WEB-07" })),
            "the child's outputs are the step's output"
        );
        assert_eq!(
            done.step("report").and_then(|s| s.output.clone()),
            Some(json!({ "isolated": "web-07", "ticket": "INC-WEB-07" }))
        );
        let child_state = server.finished(&child, Duration::from_secs(1)).await;
        assert_eq!(child_state.status, RunStatus::Succeeded);

        // One child per call; it is on its caller's case, and its containment moved the case.
        let runs = server
            .store
            .list_runs(&store::RunQuery {
                playbook: Some("contain-host".into()),
                since: None,
                until: None,
                after: None,
                limit: 10,
            })
            .await
            .expect("runs");
        assert_eq!(runs.len(), 1);
        let case = server
            .store
            .case_of_run(&parent)
            .await
            .expect("store")
            .expect("a case");
        let desk = server::desk::CaseDesk::new(server.store.clone(), Default::default());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let read = desk.read(case).await.expect("store").expect("case");
            let called = read.case.alerts.iter().find(|alert| alert.run_id == child);
            if let Some(alert) = called
                && read.case.phase == cases::Phase::Containment
            {
                assert_eq!(
                    alert.reason,
                    cases::JoinReason::Called {
                        by_run: parent.clone()
                    }
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: {:#?}",
                read.case
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let verified = store::audit::verify_store(server.store.as_ref())
            .await
            .expect("verified");
        assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_fails_fails_its_calling_step() {
    let failing = CONTAIN_HOST
        .replace("    approval: { approvers: [soc], timeout: 1h }\n", "")
        .replace(
            "    with: { id: \"INC-{{ trigger.host | upper }}\" }",
            "    with: { id: \"{{ trigger.missing_field }}\" }",
        );
    let server = Server::in_process(
        crate::Backend::Sqlite,
        &[
            ("triage.yaml", TRIAGE.into()),
            ("contain-host.yaml", failing),
        ],
    )
    .await;
    let (status, answer) = server
        .post_signed("triage", &json!({ "host": "web-08" }).to_string(), &[])
        .await;
    assert_eq!(status, 202, "{answer}");
    let parent = run_id(&answer);
    let done = server.finished(&parent, Duration::from_secs(15)).await;
    assert_eq!(done.status, RunStatus::Failed);
    let error = done
        .step("contain")
        .and_then(|s| s.error.clone())
        .expect("the step failed");
    let child = server::calls::child_of(&parent, "contain");
    assert!(
        error
            .message
            .starts_with(&format!("sub-playbook `contain-host` (run {child}) failed")),
        "{error}"
    );
    assert!(error.message.contains("missing_field"), "{error}");
}
