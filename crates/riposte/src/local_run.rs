//! `riposte run`: one playbook, one event, on this machine, with every step shown as it happens.
//!
//! `--dry-run` calls nothing: each step prints the plugin call it would make, and answers with the
//! output given by `--mock <step>=<file.json>` or `--mocks <dir>` (or `null`), so a playbook can be
//! rehearsed end to end before it touches production. Approval gates are assumed approved.
//! Without `--dry-run`, steps run on the built-in `core` plugin and on the WebAssembly plugins
//! loaded with `--plugins <dir>`, and on the connectors loaded with `--connectors <dir>`.
//!
//! With `--journal <file>`, every run event is appended to that file as a JSON line; running again
//! with the same journal resumes the run where it stopped, without repeating finished steps.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_trait::async_trait;
use playbook::Playbook;
use runner::{
    Decision, DryRunExecutor, Journal, RunEvent, RunState, RunStatus, Runner, Secrets,
    StepExecutor, StepStatus,
};

/// Prefix of environment variables that provide secrets: `RIPOSTE_SECRET_ABUSEIPDB_KEY` is the
/// secret `abuseipdb_key`.
const SECRET_ENV_PREFIX: &str = "RIPOSTE_SECRET_";

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The playbook to run.
    playbook: PathBuf,
    /// The event (alert) as a JSON file, as the SIEM would post it.
    #[arg(long)]
    event: PathBuf,
    /// Evaluate conditions and templates and show each call without making it.
    #[arg(long)]
    dry_run: bool,
    /// Sample output of a step for dry runs, as `<step>=<file.json>`. Repeatable.
    #[arg(long = "mock", value_name = "STEP=FILE")]
    mocks: Vec<String>,
    /// A directory of sample outputs for dry runs: `<step>.json` per step.
    #[arg(long = "mocks", value_name = "DIR")]
    mock_dir: Option<PathBuf>,
    /// Approve this step's approval gate without asking. Repeatable; `all` approves every gate.
    #[arg(long = "approve", value_name = "STEP")]
    approve: Vec<String>,
    /// Deny this step's approval gate without asking. Repeatable.
    #[arg(long = "deny", value_name = "STEP")]
    deny: Vec<String>,
    /// Append run events to this JSON-lines file, and resume the run it holds if it has one.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Print run events as JSON lines instead of a human summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    plugins: crate::plugins::PluginArgs,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let playbook = match playbook::load(&args.playbook) {
        Ok(playbook) => playbook,
        Err(playbook::Error::Invalid(checked)) => {
            eprintln!("{}", checked.render());
            anyhow::bail!("{} is not a valid playbook", args.playbook.display());
        }
        Err(error) => return Err(error.into()),
    };
    let event = read_json(&args.event)?;
    crate::runtime(false)?.block_on(run_async(args, playbook, event))
}

async fn run_async(
    args: RunArgs,
    playbook: Playbook,
    event: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let screening = playbook
        .screen(&event)
        .context("the trigger failed on this event")?;
    if let Some(key) = screening.dedupe_key.as_ref().filter(|_| !args.json) {
        eprintln!("dedupe key: {key}");
    }
    if !screening.matched {
        eprintln!(
            "The trigger's filter does not match this event: the server would answer 200 \"ignored\" and start nothing."
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The case the server would file the run under, so a rehearsal shows a broken `case:`
    // block before an alert does.
    let opening = playbook
        .case_opening(&event)
        .context("the case block failed on this event")?;
    if let Some(opening) = opening.filter(|_| !args.json) {
        let observables: Vec<String> = opening
            .observables
            .iter()
            .map(|observable| format!("{} {}", observable.kind.as_str(), observable.value))
            .collect();
        eprintln!(
            "case: {:?} ({}), key {}, window {}{}",
            opening.title,
            opening.severity,
            opening.key,
            humantime::format_duration(opening.window),
            match observables.is_empty() {
                true => String::new(),
                false => format!("; observables: {}", observables.join(", ")),
            }
        );
    }

    let mut mocks = BTreeMap::new();
    if let Some(dir) = &args.mock_dir {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if let (Some(step), Some("json")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|e| e.to_str()),
            ) {
                mocks.insert(step.to_owned(), read_json(&path)?);
            }
        }
    }
    for mock in &args.mocks {
        let (step, file) = mock
            .split_once('=')
            .with_context(|| format!("`--mock {mock}` must be `<step>=<file.json>`"))?;
        mocks.insert(step.to_owned(), read_json(Path::new(file))?);
    }
    let executor: Arc<dyn StepExecutor> = if args.dry_run {
        Arc::new(DryRunExecutor::new(mocks))
    } else {
        args.plugins.executor().await?
    };
    let (journal, earlier) = match &args.journal {
        Some(path) => {
            let file = FileJournal::open(path)?;
            let earlier = file.events.clone();
            (Some(file), earlier)
        }
        None => (None, Vec::new()),
    };
    let printer = Arc::new(Printer {
        inner: journal.map(Mutex::new),
        json: args.json,
        dry_run: args.dry_run,
        playbook: playbook.clone(),
    });
    let runner = Runner::new(executor, printer.clone());
    let secrets = secrets_from_env(&playbook, args.dry_run);

    let mut state = match RunState::from_events(&earlier) {
        Some(state) => {
            if !args.json {
                eprintln!(
                    "Resuming run {} from {} recorded events.",
                    state.run_id,
                    earlier.len()
                );
            }
            runner.resume(&playbook, state, &secrets).await?
        }
        None => {
            let run_id = runner::new_run_id();
            if !args.json {
                eprintln!(
                    "Run {run_id} of playbook `{}`{}",
                    playbook.name,
                    if args.dry_run {
                        " (dry run: nothing is called)"
                    } else {
                        ""
                    }
                );
            }
            runner.start(&playbook, &run_id, event, &secrets).await?
        }
    };

    while state.status == RunStatus::WaitingForApproval {
        let mut decided = false;
        for (step, approvers) in waiting_steps(&state) {
            let decision = decide(&args, &step, &approvers)?;
            if let Some(decision) = decision {
                runner.decide(&mut state, &step, decision).await?;
                decided = true;
            }
        }
        if !decided {
            eprintln!(
                "The run waits for approval. Continue it with `--journal <file> --approve <step>` or `--deny <step>`."
            );
            return Ok(ExitCode::from(3));
        }
        state = runner.resume(&playbook, state, &secrets).await?;
    }

    if !args.json {
        print_summary(&state);
        if args.dry_run && state.status == RunStatus::Failed {
            eprintln!(
                "  hint: in a dry run, steps answer `null` unless given sample output with --mock <step>=<file.json>"
            );
        }
    }
    Ok(match state.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn waiting_steps(state: &RunState) -> Vec<(String, Vec<String>)> {
    state
        .steps
        .iter()
        .filter(|(_, record)| record.status == StepStatus::WaitingForApproval)
        .map(|(id, record)| {
            let approvers = record
                .approval
                .as_ref()
                .map(|a| a.approvers.clone())
                .unwrap_or_default();
            (id.clone(), approvers)
        })
        .collect()
}

/// Decides an approval from the flags, by asking on a terminal, or not at all.
fn decide(args: &RunArgs, step: &str, approvers: &[String]) -> anyhow::Result<Option<Decision>> {
    let by = std::env::var("USER").unwrap_or_else(|_| "local-user".into());
    if args.deny.iter().any(|s| s == step) {
        return Ok(Some(Decision::Denied { by, reason: None }));
    }
    if args.approve.iter().any(|s| s == step || s == "all") || args.dry_run {
        return Ok(Some(Decision::Approved { by, comment: None }));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!(
        "Step `{step}` needs approval (approvers: {}). Approve? [y/N] ",
        approvers.join(", ")
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(Some(if matches!(answer.trim(), "y" | "Y" | "yes") {
        Decision::Approved { by, comment: None }
    } else {
        Decision::Denied {
            by,
            reason: Some("denied at the terminal".into()),
        }
    }))
}

fn print_summary(state: &RunState) {
    let status = match state.status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Running => "running",
        RunStatus::WaitingForApproval => "waiting for approval",
        RunStatus::Cancelled => "cancelled",
    };
    eprintln!("Run {} {status}.", state.run_id);
    if let Some(error) = &state.error {
        eprintln!("  reason: {error}");
    }
    if let Some(outputs) = state
        .outputs
        .as_ref()
        .filter(|o| o.as_object().is_some_and(|m| !m.is_empty()))
    {
        let text = serde_json::to_string_pretty(outputs).unwrap_or_default();
        crate::print_stdout(&text);
    }
}

/// Shows each event as it is recorded, and passes it on to the journal file if there is one.
struct Printer {
    inner: Option<Mutex<FileJournal>>,
    json: bool,
    dry_run: bool,
    playbook: Playbook,
}

#[async_trait]
impl Journal for Printer {
    async fn append(&self, run_id: &str, event: &RunEvent) -> Result<(), runner::Error> {
        if let Some(file) = &self.inner {
            file.lock()
                .map_err(|_| runner::Error::Journal("the journal file lock is poisoned".into()))?
                .append(event)
                .map_err(|error| runner::Error::Journal(format!("{error:#}")))?;
        }
        if self.json {
            let line =
                serde_json::to_string(event).map_err(|e| runner::Error::Journal(e.to_string()))?;
            crate::print_stdout(&line);
        } else if let Some(line) = self.describe(run_id, event) {
            eprintln!("{line}");
        }
        Ok(())
    }
}

impl Printer {
    fn step_label(&self, id: &str) -> String {
        match self.playbook.step(id).or_else(|| self.playbook.handler(id)) {
            Some(step) if step.name.is_some() => {
                format!("{id} ({}, {})", step.display_name(), step.uses)
            }
            Some(step) => format!("{id} ({})", step.uses),
            None => id.to_owned(),
        }
    }

    fn describe(&self, _run_id: &str, event: &RunEvent) -> Option<String> {
        Some(match event {
            RunEvent::RunStarted { incident, .. } if !incident.is_empty() => {
                format!(
                    "  incident: {}",
                    serde_json::Value::Object(incident.clone())
                )
            }
            RunEvent::RunAccepted { .. }
            | RunEvent::RunStarted { .. }
            | RunEvent::RunFinished { .. } => return None,
            RunEvent::RunCancelled { by, .. } => format!("■ cancelled by {by}"),
            RunEvent::RunRecovered { deliveries, .. } => {
                format!("↺ recovered after its worker was lost (delivery {deliveries})")
            }
            RunEvent::RunResumed { by, .. } => format!("↺ resumed by {by}"),
            RunEvent::AlertResolved { key, .. } => format!("✓ the alert was resolved ({key})"),
            RunEvent::StepStarted {
                step,
                attempt,
                item,
                input,
                ..
            } => {
                let item = item.map(|i| format!(" [item {i}]")).unwrap_or_default();
                if self.dry_run {
                    format!("▶ {}{item} would call with {input}", self.step_label(step))
                } else {
                    format!("▶ {}{item} attempt {attempt}", self.step_label(step))
                }
            }
            RunEvent::StepRetrying {
                step,
                attempt,
                error,
                delay_ms,
                ..
            } => format!("↻ {step} attempt {attempt} failed ({error}); retrying in {delay_ms} ms"),
            RunEvent::StepSucceeded {
                step,
                attempts,
                duration_ms,
                output,
                ..
            } => {
                format!("✓ {step} succeeded in {duration_ms} ms ({attempts} attempt(s)) → {output}")
            }
            RunEvent::StepFailed {
                step,
                error,
                attempts,
                duration_ms,
                ..
            } => {
                format!("✗ {step} failed after {attempts} attempt(s) in {duration_ms} ms: {error}")
            }
            RunEvent::StepSkipped { step, reason, .. } => format!("– {step} skipped: {reason}"),
            RunEvent::ApprovalRequested {
                step,
                approvers,
                message,
                ..
            } => format!(
                "⏸ {step} waits for approval by {}{}",
                approvers.join(", "),
                message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            RunEvent::ApprovalDecided { step, decision, .. } => match decision {
                Decision::Approved { by, .. } => format!("  {step} approved by {by}"),
                Decision::Denied { by, .. } => format!("  {step} denied by {by}"),
                Decision::TimedOut => format!("  {step}: nobody decided in time"),
            },
            RunEvent::UndoScheduled { step, due, by, .. } => match by {
                Some(by) => format!("⟲ undo of {step} asked by {by}"),
                None => format!("⟲ {step} expires at {due} ms: its undo is scheduled"),
            },
            RunEvent::UndoStarted {
                step,
                attempt,
                input,
                ..
            } => {
                if self.dry_run {
                    format!("⟲ undo of {step} would call with {input}")
                } else {
                    format!("⟲ undo of {step} attempt {attempt}")
                }
            }
            RunEvent::UndoRetrying {
                step,
                attempt,
                error,
                delay_ms,
                ..
            } => format!(
                "↻ undo of {step} attempt {attempt} failed ({error}); retrying in {delay_ms} ms"
            ),
            RunEvent::UndoSucceeded { step, output, .. } => format!("✓ {step} undone → {output}"),
            RunEvent::UndoFailed { step, error, .. } => format!("✗ undo of {step} failed: {error}"),
            RunEvent::StepDeferred { step, reason, .. } => format!("⏸ {step} held: {reason}"),
        })
    }
}

/// A journal in a JSON-lines file, flushed after every event.
struct FileJournal {
    file: std::fs::File,
    events: Vec<RunEvent>,
}

impl FileJournal {
    fn open(path: &Path) -> anyhow::Result<FileJournal> {
        let mut events = Vec::new();
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the journal {}", path.display()))?;
            for (number, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let event = serde_json::from_str(line).with_context(|| {
                    format!("{}:{}: not a run event", path.display(), number + 1)
                })?;
                events.push(event);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        Ok(FileJournal { file, events })
    }

    fn append(&mut self, event: &RunEvent) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(event)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        self.events.push(event.clone());
        Ok(())
    }
}

/// Secrets the playbook declares, read from `RIPOSTE_SECRET_<NAME>` environment variables. A dry
/// run stands a placeholder in for a secret that is not set, so a rehearsal needs no credentials.
fn secrets_from_env(playbook: &Playbook, dry_run: bool) -> Secrets {
    let mut values = BTreeMap::new();
    for name in &playbook.secrets {
        let variable = format!("{SECRET_ENV_PREFIX}{}", name.to_ascii_uppercase());
        match std::env::var(&variable) {
            Ok(value) => {
                values.insert(name.clone(), value);
            }
            Err(_) if dry_run => {
                values.insert(name.clone(), format!("<secret {name}>"));
            }
            Err(_) => eprintln!("warning: secret `{name}` is not set; set {variable}"),
        }
    }
    Secrets::new(values)
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}
