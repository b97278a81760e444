//! Replaying one test: the event through the trigger, the run on the real runner with every call
//! answered from the test, and what came out compared with what the test expects.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use playbook::{ErrorKind, Playbook};
use runner::{
    Decision, Journal, Redactor, RunEvent, RunState, RunStatus, Runner, Secrets, StepCall,
    StepError, StepExecutor, StepStatus,
};
use serde_json::{Value, json};

use super::report::Problem;
use super::{Expect, Screened, TestFile, Verdict};

/// The run id a replay uses when the test was not recorded from a run: the same test replays to
/// the same events. A recorded test replays under its run's id, since inputs may hold `run.id`.
const REPLAY_RUN_ID: &str = "00000000-0000-7000-8000-000000000000";

/// What a replay found: nothing when the test passed.
pub(crate) struct Outcome {
    pub(crate) name: String,
    pub(crate) problems: Vec<Problem>,
}

impl Outcome {
    pub(crate) fn broken(reason: String) -> Outcome {
        Outcome {
            name: "(unreadable)".into(),
            problems: vec![Problem::new(reason)],
        }
    }
}

/// The runtime replays run on: a paused clock, so retry back-offs and timeouts take no time.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .context("cannot start the async runtime")
}

pub(crate) async fn replay(
    test: &TestFile,
    playbooks: &BTreeMap<String, Result<Playbook, String>>,
) -> Outcome {
    let mut problems = Vec::new();
    match playbooks.get(&test.playbook) {
        None => {
            let known: Vec<&str> = playbooks.keys().map(String::as_str).collect();
            problems.push(Problem::new(format!(
                "no playbook named `{}` beside the test (found: {})",
                test.playbook,
                known.join(", ")
            )));
        }
        Some(Err(diagnostics)) => problems.push(Problem::new(format!(
            "playbook `{}` is invalid:\n{diagnostics}",
            test.playbook
        ))),
        Some(Ok(playbook)) => {
            if let Err(error) = run(test, playbook, &mut problems).await {
                problems.push(Problem::new(format!("the replay stopped: {error:#}")));
            }
        }
    }
    Outcome {
        name: test.name.clone(),
        problems,
    }
}

async fn run(
    test: &TestFile,
    playbook: &Playbook,
    problems: &mut Vec<Problem>,
) -> anyhow::Result<()> {
    let expect = &test.expect;
    // A mistake in the test would otherwise replay as something else (an unknown error kind as
    // `internal`, a decision for a misspelt step as no decision at all).
    let mistakes = mistakes(test, playbook);
    if !mistakes.is_empty() {
        problems.extend(mistakes);
        return Ok(());
    }
    let screening = playbook.screen(&test.event)?;
    let screened = if screening.matched {
        Screened::Matched
    } else {
        Screened::Ignored
    };
    let wanted = expect.screened.unwrap_or(Screened::Matched);
    if screened != wanted {
        problems.push(Problem::new(match screened {
            Screened::Ignored => "the trigger's filter ignores the event: no run starts".to_owned(),
            Screened::Matched => {
                "the trigger's filter takes the event, which the test expects it to ignore"
                    .to_owned()
            }
        }));
        return Ok(());
    }
    if let Some(key) = &expect.dedupe_key {
        compare(
            problems,
            "the dedupe key",
            &json!(key),
            &json!(screening.dedupe_key),
        );
    }
    if screened == Screened::Ignored {
        if !test.answers.is_empty()
            || !test.approvals.is_empty()
            || expect.status.is_some()
            || !expect.steps.is_empty()
            || expect.outputs.is_some()
            || expect.case.is_some()
        {
            problems.push(Problem::new(
                "the test expects the filter to ignore the event, so no run starts: it cannot also \
                 give answers, approvals, or expect a status, steps, outputs or a case",
            ));
        }
        return Ok(());
    }

    // Secrets are placeholders: their values are redacted from every record, as in production,
    // and recordings hold `[REDACTED]` where they went.
    let placeholders: BTreeMap<String, String> = playbook
        .secrets
        .iter()
        .map(|name| (name.clone(), format!("replayed-secret-{name}")))
        .collect();
    let secrets = Secrets::new(placeholders.clone());
    let executor = Arc::new(Answers::new(
        test,
        Redactor::new(placeholders.values().map(String::as_str)),
    ));
    let journal = Arc::new(Recorded::default());
    let runner = Runner::new(executor.clone(), journal.clone());
    let run_id = test.recorded_from.as_deref().unwrap_or(REPLAY_RUN_ID);
    let mut state = runner
        .start(playbook, run_id, test.event.clone(), &secrets)
        .await?;
    let mut decided_steps = Vec::new();
    while state.status == RunStatus::WaitingForApproval {
        let waiting: Vec<String> = state
            .steps
            .iter()
            .filter(|(_, record)| record.status == StepStatus::WaitingForApproval)
            .map(|(id, _)| id.clone())
            .collect();
        let mut decided = false;
        let mut let_pass = None;
        for step in waiting {
            let decision = match test.approvals.get(&step) {
                Some(Verdict::Approve) => Decision::Approved {
                    by: "riposte-test".into(),
                    comment: None,
                },
                Some(Verdict::Deny) => Decision::Denied {
                    by: "riposte-test".into(),
                    reason: None,
                },
                Some(Verdict::Timeout) => {
                    // Nobody decides: the paused clock moves past the gate's deadline, and the
                    // runner applies its `on_timeout` when the run resumes.
                    let timeout = playbook
                        .step_or_handler(&step)
                        .and_then(|found| found.approval.as_ref())
                        .map(|approval| approval.timeout)
                        .unwrap_or_default();
                    let_pass = let_pass.max(Some(timeout));
                    decided_steps.push(step);
                    continue;
                }
                None => continue,
            };
            runner.decide(&mut state, &step, decision).await?;
            decided_steps.push(step);
            decided = true;
        }
        if let Some(timeout) = let_pass {
            tokio::time::advance(timeout + std::time::Duration::from_secs(1)).await;
            decided = true;
        }
        if !decided {
            break;
        }
        state = runner.resume(playbook, state, &secrets).await?;
    }
    problems.extend(executor.problems());
    problems.extend(executor.unused());
    for step in test.approvals.keys() {
        if !decided_steps.contains(step) {
            problems.push(Problem::new(format!(
                "step `{step}`: the test decides an approval the run never asked for"
            )));
        }
    }
    check(expect, playbook, &state, &journal.events(), problems);
    if let Some(case) = &expect.case {
        let actual = case_of(playbook, &test.event, &state)?;
        compare(problems, "the case", case, &actual);
    }
    Ok(())
}

/// Compares the run with what the test expects.
fn check(
    expect: &Expect,
    playbook: &Playbook,
    state: &RunState,
    events: &[RunEvent],
    problems: &mut Vec<Problem>,
) {
    if let Some(status) = &expect.status
        && status != state.status.as_str()
    {
        let why = if state.status == RunStatus::WaitingForApproval {
            let waiting: Vec<String> = state
                .steps
                .iter()
                .filter(|(_, record)| record.status == StepStatus::WaitingForApproval)
                .map(|(id, _)| format!("`{id}`"))
                .collect();
            format!(
                ": the test decides no approval of {} (give it in `approvals:`)",
                waiting.join(", ")
            )
        } else {
            state
                .error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        };
        let verb = if state.status.is_terminal() {
            ""
        } else {
            "is "
        };
        problems.push(Problem::new(format!(
            "the run {verb}{} instead of {status}{why}",
            state.status.as_str(),
        )));
    }
    // In the order the steps run, so the first difference is where the run first went another
    // way.
    let position = |id: &str| {
        let ordered = playbook.order().iter().map(|&index| &playbook.steps[index]);
        ordered
            .chain(&playbook.handlers)
            .position(|step| step.id.as_str() == id)
            .unwrap_or(usize::MAX)
    };
    let mut expected: Vec<(&String, &super::ExpectStep)> = expect.steps.iter().collect();
    expected.sort_by_key(|(id, _)| position(id));
    for (id, wanted) in expected {
        if playbook.step_or_handler(id).is_none() {
            problems.push(Problem::new(format!(
                "step `{id}`: the playbook has no such step"
            )));
            continue;
        }
        let record = state.step(id);
        let status = record.map_or("not_run", |r| r.status.as_str());
        if let Some(expected) = &wanted.status
            && expected != status
        {
            let why = record
                .and_then(|r| {
                    r.error
                        .as_ref()
                        .map(|e| e.message.clone())
                        .or_else(|| r.skip_reason.clone())
                })
                .map(|why| format!(" ({why})"))
                .unwrap_or_default();
            problems.push(Problem::new(format!(
                "step `{id}`: {status} instead of {expected}{why}"
            )));
        }
        if let Some(expected) = &wanted.input {
            let input = last_input(events, id);
            compare(
                problems,
                &format!("step `{id}`: its input"),
                expected,
                &input,
            );
        }
        if let Some(expected) = &wanted.output {
            let output = record.and_then(|r| r.output.clone()).unwrap_or(Value::Null);
            compare(
                problems,
                &format!("step `{id}`: its output"),
                expected,
                &output,
            );
        }
        if let Some(words) = &wanted.error {
            let message = record
                .and_then(|r| r.error.as_ref())
                .map(|e| e.message.clone())
                .unwrap_or_default();
            if !message.contains(words.as_str()) {
                problems.push(Problem::new(format!(
                    "step `{id}`: its error does not say `{words}` (it says: {})",
                    if message.is_empty() {
                        "nothing"
                    } else {
                        &message
                    }
                )));
            }
        }
    }
    if let Some(expected) = &expect.outputs {
        let outputs = state.outputs.clone().unwrap_or(Value::Null);
        if !holds(expected, &outputs) {
            problems.push(Problem::with_diff(
                "the run's outputs differ",
                expected,
                &project(expected, &outputs),
            ));
        }
    }
}

/// What in the test cannot be replayed as written: an answer with an unknown error kind or with
/// both an output and an error, a decision for a step that is no approval gate.
fn mistakes(test: &TestFile, playbook: &Playbook) -> Vec<Problem> {
    let mut problems = Vec::new();
    for answer in &test.answers {
        let label = format!(
            "step `{}`{}",
            answer.step,
            answer
                .item
                .map(|i| format!(" item {i}"))
                .unwrap_or_default()
        );
        if let Some(error) = &answer.error {
            if ErrorKind::parse(&error.kind).is_none() {
                let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                problems.push(Problem::new(format!(
                    "{label}: an answer's error kind `{}` is not one of {}",
                    error.kind,
                    kinds.join(", ")
                )));
            }
            if answer.output.is_some() {
                problems.push(Problem::new(format!(
                    "{label}: an answer gives both an `output` and an `error`; give one"
                )));
            }
        }
    }
    for step in test.approvals.keys() {
        match playbook.step_or_handler(step) {
            None => problems.push(Problem::new(format!(
                "`approvals`: the playbook has no step `{step}`"
            ))),
            Some(found) if found.approval.is_none() => problems.push(Problem::new(format!(
                "`approvals`: step `{step}` has no approval gate"
            ))),
            Some(_) => {}
        }
    }
    problems
}

/// The input a step's last attempt was called with, as the journal recorded it.
fn last_input(events: &[RunEvent], id: &str) -> Value {
    let inputs: Vec<&Value> = events
        .iter()
        .filter_map(|event| match event {
            RunEvent::StepStarted {
                step, input, item, ..
            } if step == id && item.is_none() => Some(input),
            _ => None,
        })
        .collect();
    if let Some(last) = inputs.last() {
        return (*last).clone();
    }
    // A `foreach` step: each item's last input, in order.
    let mut items: BTreeMap<usize, Value> = BTreeMap::new();
    for event in events {
        if let RunEvent::StepStarted {
            step,
            input,
            item: Some(item),
            ..
        } = event
            && step == id
        {
            items.insert(*item, input.clone());
        }
    }
    if items.is_empty() {
        Value::Null
    } else {
        Value::Array(items.into_values().collect())
    }
}

/// The case the run opens, as the test can check it.
fn case_of(playbook: &Playbook, event: &Value, state: &RunState) -> anyhow::Result<Value> {
    let Some(opening) = playbook.case_opening(event)? else {
        return Ok(Value::Null);
    };
    let phase = playbook
        .steps
        .iter()
        .chain(&playbook.handlers)
        .filter(|step| {
            state
                .step(step.id.as_str())
                .is_some_and(|record| record.status == StepStatus::Succeeded)
        })
        .filter_map(|step| step.phase)
        .max()
        .unwrap_or(playbook::Phase::DetectionAndAnalysis);
    Ok(json!({
        "title": opening.title,
        "severity": opening.severity,
        "key": opening.key,
        "observables": opening.observables,
        "phase": phase,
    }))
}

/// Adds a problem when `actual` does not hold everything `expected` gives.
pub(crate) fn compare(problems: &mut Vec<Problem>, what: &str, expected: &Value, actual: &Value) {
    if !holds(expected, actual) {
        problems.push(Problem::with_diff(
            format!("{what} differs"),
            expected,
            &project(expected, actual),
        ));
    }
}

/// `actual` cut to the fields `expected` gives, so a diff shows only what the test checks.
fn project(expected: &Value, actual: &Value) -> Value {
    match (expected, actual) {
        (Value::Object(wanted), Value::Object(found)) => Value::Object(
            wanted
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), project(value, found.get(key)?))))
                .collect(),
        ),
        (Value::Array(wanted), Value::Array(found)) if wanted.len() == found.len() => Value::Array(
            wanted
                .iter()
                .zip(found)
                .map(|(w, f)| project(w, f))
                .collect(),
        ),
        _ => actual.clone(),
    }
}

/// Whether `actual` holds `expected`: every field an expected object gives is there with a
/// matching value; lists and scalars are equal.
fn holds(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(wanted), Value::Object(found)) => wanted
            .iter()
            .all(|(key, value)| found.get(key).is_some_and(|found| holds(value, found))),
        (Value::Array(wanted), Value::Array(found)) => {
            wanted.len() == found.len() && wanted.iter().zip(found).all(|(w, f)| holds(w, f))
        }
        (Value::Number(wanted), Value::Number(found)) => {
            wanted == found || wanted.as_f64() == found.as_f64()
        }
        _ => expected == actual,
    }
}

/// The run's records, kept in memory.
#[derive(Default)]
struct Recorded {
    events: Mutex<Vec<RunEvent>>,
}

impl Recorded {
    fn events(&self) -> Vec<RunEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl Journal for Recorded {
    async fn append(&self, _run_id: &str, event: &RunEvent) -> Result<(), runner::Error> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
        Ok(())
    }
}

/// The answers not given yet, by step and item, in order.
type AnswerQueues = BTreeMap<(String, Option<usize>), VecDeque<super::Answer>>;

/// Answers each call from the test, in order per step and item; a call it does not hold fails,
/// and so does one made with another input than recorded.
struct Answers {
    queues: Mutex<AnswerQueues>,
    problems: Mutex<Vec<Problem>>,
    redactor: Redactor,
}

impl Answers {
    fn new(test: &TestFile, redactor: Redactor) -> Answers {
        let mut queues = AnswerQueues::new();
        for answer in &test.answers {
            queues
                .entry((answer.step.clone(), answer.item))
                .or_default()
                .push_back(answer.clone());
        }
        Answers {
            queues: Mutex::new(queues),
            problems: Mutex::new(Vec::new()),
            redactor,
        }
    }

    fn problem(&self, problem: Problem) {
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(problem);
    }

    fn problems(&self) -> Vec<Problem> {
        std::mem::take(&mut *self.problems.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Answers no call asked for: the playbook no longer makes a call it made.
    fn unused(&self) -> Vec<Problem> {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues
            .iter()
            .filter(|(_, answers)| !answers.is_empty())
            .map(|((step, item), answers)| {
                Problem::new(format!(
                    "step `{step}`{}: {} recorded answer(s) no call asked for (the playbook no longer makes that call)",
                    item.map(|i| format!(" item {i}")).unwrap_or_default(),
                    answers.len()
                ))
            })
            .collect()
    }
}

#[async_trait]
impl StepExecutor for Answers {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        let label = format!(
            "step `{}`{}",
            call.step_id,
            call.item.map(|i| format!(" item {i}")).unwrap_or_default()
        );
        let input = self.redactor.redact(&call.input);
        let answer = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&(call.step_id.clone(), call.item))
            .and_then(VecDeque::pop_front);
        let Some(answer) = answer else {
            self.problem(Problem::new(format!(
                "{label}: a call the recording does not hold: `{}` with {}",
                call.uses, input
            )));
            return Err(StepError::new(
                ErrorKind::Internal,
                "the test holds no answer for this call",
            ));
        };
        if let Some(recorded) = &answer.input
            && recorded != &input
        {
            self.problem(Problem::with_diff(
                format!(
                    "{label}: called `{}` with another input than recorded",
                    call.uses
                ),
                recorded,
                &input,
            ));
        }
        match (answer.output, answer.error) {
            (_, Some(error)) => Err(StepError::new(
                ErrorKind::parse(&error.kind).unwrap_or(ErrorKind::Internal),
                error.message,
            )),
            (output, None) => Ok(output.unwrap_or(Value::Null)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_values_match_when_every_given_field_matches() {
        let actual =
            json!({"ip": "1.2.3.4", "score": 90, "tags": ["a", "b"], "meta": {"x": 1, "y": 2}});
        assert!(holds(&json!({"ip": "1.2.3.4"}), &actual));
        assert!(holds(&json!({"meta": {"y": 2}, "score": 90.0}), &actual));
        assert!(!holds(&json!({"ip": "1.2.3.5"}), &actual));
        assert!(
            !holds(&json!({"tags": ["a"]}), &actual),
            "lists match whole"
        );
        assert!(
            !holds(&json!({"missing": null}), &actual),
            "a given field must be there"
        );
        assert!(!holds(&json!(1), &json!("1")));
    }

    #[test]
    fn a_test_that_cannot_be_replayed_as_written_says_why() {
        let playbook = playbook::compile(
            r#"name: gate
trigger: { webhook: gate, public: true }
steps:
  - id: look
    uses: enrich-ioc/check-ip
    with: { ip: "{{ trigger.ip }}" }
  - id: ban
    uses: block-ip/ban
    needs: look
    approval: { approvers: [soc] }
    with: { ip: "{{ trigger.ip }}" }
"#,
        )
        .expect("a valid playbook");
        let test = super::super::parse(
            r#"name: mistakes
playbook: gate
event: { ip: 203.0.113.9 }
answers:
  - { step: look, error: { kind: rate_limit, message: slow down } }
  - { step: look, output: { score: 1 }, error: { kind: upstream } }
approvals: { look: approve, bna: deny, ban: approve }
"#,
        )
        .expect("a test file");
        let headlines: Vec<String> = mistakes(&test, &playbook)
            .into_iter()
            .map(|p| p.headline)
            .collect();
        assert_eq!(
            headlines,
            [
                "step `look`: an answer's error kind `rate_limit` is not one of invalid_input, unauthorized, not_found, rate_limited, upstream, timeout, internal",
                "step `look`: an answer gives both an `output` and an `error`; give one",
                "`approvals`: the playbook has no step `bna`",
                "`approvals`: step `look` has no approval gate",
            ]
        );
    }
}
