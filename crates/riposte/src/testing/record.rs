//! `riposte record`: a finished run, read from the server's store, as a test file that replays it.
//!
//! The event is the run's as stored; each plugin or connector call's input and answer come from
//! the run's journal, which already redacted every secret (and its encoded forms); the expected
//! outcome is every step's status, input and output, and the run's status and outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use playbook::Playbook;
use runner::{Decision, RunEvent, RunState, StepStatus};
use serde_json::Value;

use super::{Answer, AnswerError, Expect, ExpectStep, TestFile, Verdict};

pub(crate) fn record(
    config_file: Option<&Path>,
    run_id: &str,
    output: Option<&Path>,
    name: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = server::config::Config::load(config_file)?;
    let (record, events) = crate::runtime(false)?.block_on(async {
        let store = server::open_store(&config.store).await?;
        let record = store.run(run_id).await?;
        let events = store.events(run_id).await?;
        Ok::<_, anyhow::Error>((record, events))
    })?;
    let record = record.with_context(|| format!("no run {run_id} in the store"))?;
    let state =
        RunState::from_events(&events).with_context(|| format!("run {run_id} never started"))?;
    if !state.status.is_terminal() {
        anyhow::bail!(
            "run {run_id} has not ended ({}); record it once it has",
            state.status.as_str()
        );
    }
    let playbook = playbook_named(&config.playbooks, &record.playbook)?;
    let test = from_run(&playbook, run_id, record.event, &events, &state, name);
    let text = format!(
        "# Recorded by `riposte record` from run {run_id}. Replay it with `riposte test`.\n# Secrets were never recorded: the journal holds `[REDACTED]` where they went.\n{}",
        serde_saphyr::to_string(&test).context("cannot write the test as YAML")?
    );
    match output {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => crate::print_stdout(text.trim_end()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The playbook a run used, from the configuration's folder.
fn playbook_named(dir: &Path, name: &str) -> anyhow::Result<Playbook> {
    let files: Vec<PathBuf> =
        playbook::files_in(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    files
        .iter()
        .filter_map(|file| playbook::load(file).ok())
        .find(|playbook| playbook.name == name)
        .with_context(|| format!("no valid playbook named `{name}` in {}", dir.display()))
}

/// The test that replays a run: its event, its calls' answers, its decisions, its outcome.
pub(crate) fn from_run(
    playbook: &Playbook,
    run_id: &str,
    event: Value,
    events: &[RunEvent],
    state: &RunState,
    name: Option<&str>,
) -> TestFile {
    // Built-in `core` steps are answered by the runner itself, not by a plugin: nothing to record.
    let calls_a_plugin = |step: &str| {
        playbook
            .step_or_handler(step)
            .is_some_and(|s| s.uses.plugin != runner::CORE)
    };
    let mut answers = Vec::new();
    let mut approvals = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        match event {
            RunEvent::StepStarted {
                step,
                attempt,
                item,
                input,
                ..
            } if calls_a_plugin(step) => {
                let (output, error) = answer_of(&events[index + 1..], step, *attempt, *item);
                answers.push(Answer {
                    step: step.clone(),
                    item: *item,
                    input: Some(input.clone()),
                    output,
                    error,
                });
            }
            RunEvent::ApprovalDecided { step, decision, .. } => {
                let verdict = match decision {
                    Decision::Approved { .. } => Verdict::Approve,
                    Decision::Denied { .. } => Verdict::Deny,
                    // Replayed as a deadline that passes, so the gate's `on_timeout` (deny,
                    // approve or fail) decides as it did.
                    Decision::TimedOut => Verdict::Timeout,
                };
                approvals.insert(step.clone(), verdict);
            }
            _ => {}
        }
    }
    let steps = state
        .steps
        .iter()
        .map(|(id, record)| {
            let input = events.iter().rev().find_map(|event| match event {
                RunEvent::StepStarted {
                    step,
                    input,
                    item: None,
                    ..
                } if step == id => Some(input.clone()),
                _ => None,
            });
            (
                id.clone(),
                ExpectStep {
                    status: Some(record.status.as_str().to_owned()),
                    input,
                    output: record
                        .output
                        .clone()
                        .filter(|_| record.status == StepStatus::Succeeded),
                    error: record.error.as_ref().map(|e| e.message.clone()),
                },
            )
        })
        .collect();
    let dedupe_key = playbook.screen(&event).ok().and_then(|s| s.dedupe_key);
    TestFile {
        name: name.map_or_else(
            || format!("replays run {run_id} of {}", playbook.name),
            str::to_owned,
        ),
        playbook: playbook.name.clone(),
        recorded_from: Some(run_id.to_owned()),
        event,
        answers,
        approvals,
        expect: Expect {
            screened: None,
            dedupe_key,
            status: Some(state.status.as_str().to_owned()),
            steps,
            outputs: state.outputs.clone(),
            case: None,
        },
    }
}

/// How the call of `step` (attempt, item) that started just before `after` was answered.
fn answer_of(
    after: &[RunEvent],
    step: &str,
    attempt: u32,
    item: Option<usize>,
) -> (Option<Value>, Option<AnswerError>) {
    for event in after {
        match event {
            RunEvent::StepRetrying {
                step: s,
                attempt: a,
                item: i,
                error,
                ..
            } if s == step && *a == attempt && *i == item => {
                return (None, Some(answer_error(error)));
            }
            RunEvent::StepFailed { step: s, error, .. } if s == step => {
                let Some(index) = item else {
                    return (None, Some(answer_error(error)));
                };
                // A `foreach` step fails with its first failed item's error, prefixed with the
                // item; the journal holds no other item's outcome (nor a succeeded item's output).
                let Some(message) = error.message.strip_prefix(&format!("item {index}: ")) else {
                    break;
                };
                return (
                    None,
                    Some(AnswerError {
                        kind: error.kind.as_str().to_owned(),
                        message: message.to_owned(),
                    }),
                );
            }
            RunEvent::StepSucceeded {
                step: s, output, ..
            } if s == step => {
                // A `foreach` step's output lists its items' outputs in order.
                let output = match item {
                    Some(index) => output.get(index).cloned().unwrap_or(Value::Null),
                    None => output.clone(),
                };
                return (Some(output), None);
            }
            RunEvent::StepStarted {
                step: s,
                attempt: a,
                item: i,
                ..
            } if s == step && *i == item && *a > attempt => break,
            _ => {}
        }
    }
    (None, None)
}

fn answer_error(error: &runner::StepError) -> AnswerError {
    AnswerError {
        kind: error.kind.as_str().to_owned(),
        message: error.message.clone(),
    }
}
