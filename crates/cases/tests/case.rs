//! A case's life: opened by an alert, moved by the steps that succeed and by people, reported.

use cases::report::{Chain, Report, RunMaterial};
use cases::{Case, CaseEvent, Change, JoinReason, Observable, ObservableType, Phase, Severity};
use runner::{Decision, RunEvent, RunState, RunStatus};
use serde_json::json;

const RUN: &str = "0190d6f0-0000-7000-8000-000000000001";

fn opening() -> playbook::CaseOpening {
    playbook::CaseOpening {
        key: "203.0.113.7".into(),
        window: std::time::Duration::from_secs(3600),
        title: "Brute force from 203.0.113.7".into(),
        severity: Severity::High,
        observables: Vec::new(),
        join_on: Vec::new(),
    }
}

fn ip(value: &str) -> Observable {
    Observable {
        kind: ObservableType::IpAddress,
        value: value.into(),
    }
}

fn opened() -> (Case, Vec<CaseEvent>) {
    let events = Case::opening(&opening(), "ssh", RUN, vec![ip("203.0.113.7")], 1_000);
    let case = Case::fold(7, &events).expect("opened");
    (case, events)
}

/// A run's journal: started at 2 000, then `steps` (id, finished at) succeeded.
fn run_events(steps: &[(&str, u64)], finished: Option<RunStatus>) -> Vec<RunEvent> {
    let mut events = vec![RunEvent::RunStarted {
        run_id: RUN.into(),
        playbook: "ssh".into(),
        playbook_version: None,
        event: json!({ "src_ip": "203.0.113.7" }),
        incident: serde_json::Map::new(),
        at: 2_000,
    }];
    for (step, at) in steps {
        events.push(RunEvent::StepSucceeded {
            step: (*step).into(),
            output: json!({ "reported_by": "analyst@example.org", "host": "web-01" }),
            attempts: 1,
            duration_ms: 5,
            at: *at,
        });
    }
    if let Some(status) = finished {
        events.push(RunEvent::RunFinished {
            status,
            outputs: json!({}),
            error: None,
            at: 9_000,
        });
    }
    events
}

fn phases(step: &str) -> Option<(Phase, String)> {
    match step {
        "enrich" => Some((Phase::DetectionAndAnalysis, "enrich-ioc/check-ip".into())),
        "block" => Some((Phase::Containment, "block-ip/ban".into())),
        "verify" => Some((Phase::Recovery, "http/request".into())),
        _ => None,
    }
}

fn progress(case: &Case, events: &[RunEvent]) -> Vec<CaseEvent> {
    let state = RunState::from_events(events).expect("started");
    case.progress(
        &cases::RunProgress {
            playbook: "ssh",
            state: &state,
            phase_of: &phases,
        },
        10_000,
    )
}

fn apply(case: &mut Case, log: &mut Vec<CaseEvent>, events: Vec<CaseEvent>) {
    for event in events {
        case.apply(&event);
        log.push(event);
    }
}

#[test]
fn an_alert_opens_a_case_with_what_it_holds() {
    let (case, _) = opened();
    assert_eq!(case.id, 7);
    assert_eq!(case.phase, Phase::DetectionAndAnalysis);
    assert_eq!(case.severity, Severity::High);
    assert_eq!(case.opened_by, "playbook:ssh");
    assert_eq!(case.alerts.len(), 1);
    assert_eq!(case.alerts[0].reason, JoinReason::Opened);
    assert!(case.knows(&ip("203.0.113.7")));
    assert_eq!(case.summary().playbooks, vec!["ssh".to_owned()]);
    assert!(Case::fold(7, &[]).is_none());
}

#[test]
fn steps_move_the_case_forward_once_and_never_back() {
    let (mut case, mut log) = opened();
    // Containment succeeded at 3 000, enrichment after it: the case stays in containment.
    let journal = run_events(&[("block", 3_000), ("enrich", 4_000)], None);
    let events = progress(&case, &journal);
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| match event {
            CaseEvent::ActionTaken { .. } => "action",
            CaseEvent::PhaseChanged { .. } => "phase",
            CaseEvent::Observed { .. } => "observed",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["action", "phase", "observed", "action"]);
    apply(&mut case, &mut log, events);
    assert_eq!(case.phase, Phase::Containment);
    assert_eq!(case.contained_at, Some(3_000));
    assert_eq!(case.recovered_at, None);
    assert!(case.knows(&Observable {
        kind: ObservableType::Hostname,
        value: "web-01".into()
    }));
    assert!(
        progress(&case, &journal).is_empty(),
        "asking again records nothing new"
    );

    // A person closes it; a later recovery step is recorded but does not reopen it.
    let closing = case
        .change(
            Change::Move {
                to: Phase::Closed,
                reason: Some("false positive".into()),
            },
            "alice",
            5_000,
        )
        .expect("closed");
    apply(&mut case, &mut log, closing);
    let journal = run_events(
        &[("block", 3_000), ("enrich", 4_000), ("verify", 6_000)],
        Some(RunStatus::Succeeded),
    );
    let events = progress(&case, &journal);
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, CaseEvent::PhaseChanged { .. }))
    );
    apply(&mut case, &mut log, events);
    assert_eq!(case.phase, Phase::Closed);
    assert_eq!(case.closed_at, Some(5_000));
    assert_eq!(case.actions.len(), 3);
    assert_eq!(case.alerts[0].status.as_deref(), Some("succeeded"));
    assert_eq!(
        Case::fold(7, &log).as_ref(),
        Some(&case),
        "the fold is the state"
    );
}

#[test]
fn the_first_thing_a_person_does_acknowledges_the_case() {
    let (case, _) = opened();
    let events = case
        .change(Change::Note("looking".into()), "bob", 1_500)
        .expect("note");
    assert!(matches!(&events[0], CaseEvent::Acknowledged { by, at: 1_500 } if by == "bob"));
    assert!(matches!(&events[1], CaseEvent::NoteAdded { text, .. } if text == "looking"));

    let mut acknowledged = case.clone();
    for event in &events {
        acknowledged.apply(event);
    }
    assert_eq!(acknowledged.durations().to_acknowledge_ms, Some(500));
    assert_eq!(
        acknowledged.change(Change::Acknowledge, "carol", 2_000),
        Ok(vec![]),
        "acknowledging twice changes nothing"
    );
    assert!(
        acknowledged
            .change(Change::Note("  ".into()), "bob", 2_000)
            .is_err()
    );
    assert!(
        acknowledged
            .change(Change::Severity(Severity::High), "bob", 2_000)
            .is_err(),
        "already high"
    );
    assert!(
        acknowledged
            .change(
                Change::Move {
                    to: Phase::DetectionAndAnalysis,
                    reason: None
                },
                "bob",
                2_000
            )
            .is_err()
    );
}

#[test]
fn the_report_covers_the_case_and_its_runs_and_escapes_alert_values() {
    let mut events = Case::opening(
        &playbook::CaseOpening {
            title: "<script>alert(1)</script>".into(),
            ..opening()
        },
        "ssh",
        RUN,
        vec![ip("203.0.113.7")],
        1_000,
    );
    let mut case = Case::fold(3, &events).expect("opened");
    let mut journal = run_events(&[("block", 3_000)], None);
    journal.push(RunEvent::ApprovalDecided {
        step: "verify".into(),
        decision: Decision::Approved {
            by: "alice".into(),
            comment: Some("[ok](javascript:alert(1))".into()),
        },
        at: 3_500,
    });
    let progress = progress(&case, &journal);
    apply(&mut case, &mut events, progress);
    let chain = Chain {
        intact: true,
        records: events.len(),
        broken: None,
    };
    let report = Report::assemble(
        case,
        &events,
        chain.clone(),
        vec![RunMaterial {
            run_id: RUN.into(),
            playbook: "ssh".into(),
            accepted_at: 900,
            events: journal,
            chain,
        }],
        20_000,
    );
    assert_eq!(report.contained.len(), 1);
    assert_eq!(report.decisions.len(), 1);
    assert_eq!(report.decisions[0].by.as_deref(), Some("alice"));
    assert_eq!(report.durations.to_contain_ms, Some(2_000));
    let times: Vec<u64> = report.timeline.iter().map(|moment| moment.at).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "in order");

    let markdown = report.markdown();
    for section in [
        "# Case 3: ",
        "## Alerts and runs",
        "## Actions",
        "### Contained",
        "## Decisions",
        "## Observables",
        "## Timeline",
        "| Contained | 1970-01-01T00:00:03Z (after 2s) |",
        "IP Address (2)",
    ] {
        assert!(markdown.contains(section), "{section} in\n{markdown}");
    }
    assert!(!markdown.contains("<script>"), "{markdown}");
    assert!(!markdown.contains("](javascript"), "{markdown}");
    let json = serde_json::to_value(&report).expect("serializable");
    assert_eq!(json["case"]["observables"][0]["type"], "IP Address");
    assert_eq!(json["case"]["observables"][0]["type_id"], 2);
}

#[test]
fn an_undo_reaches_the_case_once_and_the_report_says_what_still_holds() {
    let (mut case, mut log) = opened();
    let mut journal = run_events(&[("block", 3_000)], Some(RunStatus::Succeeded));
    let contained = progress(&case, &journal);
    apply(&mut case, &mut log, contained);
    let report = Report::assemble(case.clone(), &log, unbroken(log.len()), Vec::new(), 20_000);
    assert!(report.markdown().contains("still in place"));

    journal.push(RunEvent::UndoScheduled {
        step: "block".into(),
        due: 5_000,
        by: None,
        at: 3_000,
    });
    journal.push(RunEvent::UndoStarted {
        step: "block".into(),
        attempt: 1,
        input: json!({"ip": "203.0.113.7"}),
        at: 5_000,
    });
    journal.push(RunEvent::UndoFailed {
        step: "block".into(),
        error: runner::StepError::new(playbook::ErrorKind::Upstream, "LAPI down"),
        attempts: 1,
        at: 5_100,
    });
    let failed = progress(&case, &journal);
    assert!(
        matches!(
            &failed[..],
            [CaseEvent::ActionUndone {
                succeeded: false,
                by: None,
                at: 5_100,
                ..
            }]
        ),
        "{failed:?}"
    );
    apply(&mut case, &mut log, failed);
    assert!(progress(&case, &journal).is_empty(), "told once");

    journal.push(RunEvent::UndoScheduled {
        step: "block".into(),
        due: 6_000,
        by: Some("alice".into()),
        at: 6_000,
    });
    journal.push(RunEvent::UndoSucceeded {
        step: "block".into(),
        output: json!({"deleted": 1}),
        attempts: 2,
        at: 6_100,
    });
    let undone = progress(&case, &journal);
    assert!(
        matches!(&undone[..], [CaseEvent::ActionUndone { succeeded: true, by: Some(by), at: 6_100, .. }] if by == "alice"),
        "{undone:?}"
    );
    apply(&mut case, &mut log, undone);
    assert_eq!(case.undone.len(), 2);
    assert!(case.undo_of(RUN, "block").is_some_and(|u| u.succeeded));
    let report = Report::assemble(case.clone(), &log, unbroken(log.len()), Vec::new(), 20_000);
    let text = report.markdown();
    assert!(
        text.contains("undone") && text.contains("asked by alice"),
        "{text}"
    );
    assert!(!text.contains("still in place"), "{text}");
    // The fold of the logged events is the case the progress built.
    assert_eq!(Case::fold(7, &log).expect("folds"), case);
}

fn unbroken(records: usize) -> Chain {
    Chain {
        intact: true,
        records,
        broken: None,
    }
}
