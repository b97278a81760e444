//! Every way a run changes goes through the runner's one journal path: what the observer sees is
//! exactly what the journal holds, whichever operation changed the run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner::{Decision, MemoryJournal, Observer, RunEvent, RunState, RunStatus, Runner};
use serde_json::json;

use crate::{Scripted, playbook};

/// Keeps every event it is told of.
#[derive(Default)]
struct Seen(Mutex<Vec<RunEvent>>);

impl Observer for Seen {
    fn recorded(&self, events: &[RunEvent], _took: Duration) {
        self.0.lock().expect("lock").extend_from_slice(events);
    }
}

const GATED: &str = r#"
name: gated
trigger: { webhook: t, public: true }
steps:
  - id: ask
    uses: core/echo
    approval: { approvers: [soc] }
  - id: fail
    uses: test/act
    needs: [ask]
"#;

#[tokio::test(start_paused = true)]
async fn every_operation_is_recorded_once_and_observed() {
    let journal = Arc::new(MemoryJournal::new());
    let seen = Arc::new(Seen::default());
    let executor = Scripted::new().on(
        "fail",
        vec![crate::fail(playbook::ErrorKind::Upstream, "down")],
    );
    let runner = Runner::new(executor, journal.clone()).with_observer(seen.clone());
    let compiled = playbook(GATED);
    let secrets = runner::Secrets::default();

    // Started, waiting; decided; resumed to a failure; resumed by a person; recovered after a
    // lost worker; given up on.
    let events = journal.events("r1");
    let state = runner
        .advance(&compiled, "r1", &json!({}), &events, &secrets, 1)
        .await
        .expect("advances");
    assert_eq!(state.status, RunStatus::WaitingForApproval);
    let mut state = journal.state("r1").expect("started");
    let approved = Decision::Approved {
        by: "oncall".into(),
        comment: None,
    };
    runner
        .decide(&mut state, "ask", approved.clone())
        .await
        .expect("decides");
    assert!(
        runner.decide(&mut state, "ask", approved).await.is_err(),
        "decided twice"
    );
    let state = runner
        .advance(
            &compiled,
            "r1",
            &json!({}),
            &journal.events("r1"),
            &secrets,
            1,
        )
        .await
        .expect("advances");
    assert_eq!(state.status, RunStatus::Failed);
    runner
        .resume_failed("r1", &journal.events("r1"), "analyst", false)
        .await
        .expect("resumes");
    runner
        .advance(
            &compiled,
            "r1",
            &json!({}),
            &journal.events("r1"),
            &secrets,
            2,
        )
        .await
        .expect("recovers");
    runner
        .give_up("r1", &journal.events("r1"), "lost too often")
        .await
        .expect("gives up");

    // A queued run cancelled, and a cancelled run refused a second cancellation.
    let cancelled = runner
        .cancel("r2", &[], "oncall", None)
        .await
        .expect("cancels");
    assert_eq!(cancelled, runner::Cancelled::Queued);
    let mut r2 = journal.events("r2");
    assert!(runner.cancel("r2", &r2, "oncall", None).await.is_err());
    assert!(
        runner
            .resume_failed("r2", &r2, "analyst", false)
            .await
            .is_err(),
        "a cancelled run is not resumed"
    );

    let mut journaled = journal.events("r1");
    journaled.append(&mut r2);
    assert_eq!(*seen.0.lock().expect("lock"), journaled);
    let kinds = |events: &[RunEvent]| {
        events
            .iter()
            .map(|event| {
                serde_json::to_value(event).expect("JSON")["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    let r1 = kinds(&journal.events("r1"));
    for kind in [
        "run_started",
        "approval_decided",
        "run_resumed",
        "run_recovered",
        "run_finished",
    ] {
        assert!(r1.contains(&kind.to_owned()), "{kind} in {r1:?}");
    }
    assert_eq!(kinds(&journal.events("r2")), ["run_cancelled"]);
    // Every event carries the runner's clock.
    let now = runner.now();
    assert!(journal.events("r1").iter().all(|event| event.at() <= now));
    assert!(RunState::from_events(&journal.events("r1")).is_some());
}
