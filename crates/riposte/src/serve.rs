//! `riposte serve` and `riposte worker`: the server processes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use server::{CancellationToken, Config, Parts};

/// Which processes to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// HTTP API and workers.
    Serve,
    /// Workers only.
    Worker,
}

pub(crate) fn run(config_file: Option<&Path>, role: Role) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_file)?;
    crate::runtime(true)?.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let (listen, ops_listen) = (config.listen, config.ops_listen);
        let parts = Parts::open(config).await?;
        match role {
            Role::Serve => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let address = listener.local_addr()?;
                tracing::info!(%address, "Listening for webhooks on http://{address}/hooks/<trigger>.");
                eprintln!("riposte: listening on http://{address} (webhooks at /hooks/<trigger>)");
                server::serve(listener, parts, shutdown).await?;
            }
            Role::Worker => {
                let ops = match ops_listen {
                    Some(address) => {
                        let listener = tokio::net::TcpListener::bind(address)
                            .await
                            .with_context(|| format!("cannot listen on {address}"))?;
                        let address = listener.local_addr()?;
                        eprintln!(
                            "riposte: worker health and metrics on http://{address} (/healthz, /readyz, /metrics)"
                        );
                        Some(listener)
                    }
                    None => None,
                };
                server::work(parts, ops, shutdown).await?
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `riposte resume <run>`: resumes a failed run from its failed steps.
pub(crate) fn resume(
    config_file: Option<&Path>,
    run_id: &str,
    by: &str,
) -> anyhow::Result<ExitCode> {
    on_the_store(config_file, async |store| {
        control(store).resume_failed(run_id, by).await?;
        eprintln!("Run {run_id} resumed: a worker picks it up from its failed steps.");
        Ok(())
    })
}

/// `riposte undo <run> [step]`: asks for a run's effects to be undone; a worker calls the undos.
pub(crate) fn undo(
    config_file: Option<&Path>,
    run_id: &str,
    step: Option<&str>,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_file)?;
    let catalog = server::catalog::Catalog::load(&config)?;
    crate::runtime(false)?.block_on(async move {
        let store = server::open_store(&config.store).await?;
        let steps = control(store).undo(&catalog, run_id, step, by).await?;
        eprintln!(
            "Undo of {} in run {run_id} asked for: a worker calls it.",
            steps
                .iter()
                .map(|step| format!("`{step}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `riposte approve|deny <run> <step>`: decides an approval gate; any worker resumes the run.
pub(crate) fn decide(
    config_file: Option<&Path>,
    run_id: &str,
    step: &str,
    decision: runner::Decision,
) -> anyhow::Result<ExitCode> {
    on_the_store(config_file, async |store| {
        control(store).decide(run_id, step, decision).await?;
        eprintln!("Decision on step `{step}` of run {run_id} recorded: a worker resumes the run.");
        Ok(())
    })
}

/// `riposte audit verify`: checks one run's chain, or everything: the global trail, every
/// run's chain, and every run against its seal in the trail.
pub(crate) fn audit_verify(
    config_file: Option<&Path>,
    run: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut intact = true;
    on_the_store(config_file, async |store| {
        let Some(run_id) = run else {
            let report = store::audit::verify_store(store.as_ref()).await?;
            for broken in &report.problems {
                crate::print_stdout(&format!("BROKEN {broken}"));
            }
            intact = report.problems.is_empty();
            crate::print_stdout(&format!(
                "{}: trail of {} record(s), {} run(s) with {} record(s), {} sealed, {} case(s) with {} record(s)",
                if intact { "intact" } else { "BROKEN" },
                report.trail_records,
                report.runs,
                report.records,
                report.sealed,
                report.cases,
                report.case_records
            ));
            return Ok(());
        };
        let chain = store.audit_records(run_id).await?;
        match store::audit::verify(run_id, &chain) {
            Ok(count) => {
                crate::print_stdout(&format!("intact: run {run_id}, {count} record(s) checked"))
            }
            Err(broken) => {
                intact = false;
                crate::print_stdout(&format!("BROKEN {broken}"));
            }
        }
        Ok(())
    })?;
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `riposte audit export <run>`: the run's timeline, as Markdown or JSON, with its chain's state.
pub(crate) fn audit_export(
    config_file: Option<&Path>,
    run_id: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    on_the_store(config_file, async |store| {
        let Some(timeline) = server::timeline(store.as_ref(), run_id).await? else {
            return Err(server::Error::Resume(format!(
                "run {run_id} has no journal"
            )));
        };
        let text = if json {
            serde_json::to_string_pretty(&timeline).unwrap_or_default()
        } else {
            timeline_markdown(&timeline)
        };
        crate::print_stdout(&text);
        Ok(())
    })
}

/// `riposte case report <case>`: the post-incident report, as Markdown or JSON.
pub(crate) fn case_report(
    config_file: Option<&Path>,
    case: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    on_the_store(config_file, async |store| {
        let desk = server::desk::CaseDesk::new(store, Arc::default());
        let Some(report) = desk.report(case).await? else {
            return Err(server::Error::NotFound(format!("there is no case {case}")));
        };
        let text = match json {
            true => serde_json::to_string_pretty(&report).unwrap_or_default(),
            false => report.markdown(),
        };
        crate::print_stdout(&text);
        Ok(())
    })
}

/// A run's timeline as a Markdown table: when, what, which step, the details that matter.
fn timeline_markdown(timeline: &server::Timeline) -> String {
    let events: Vec<&serde_json::Value> = timeline
        .records
        .iter()
        .map(|record| &record.event)
        .collect();
    let playbook = events
        .iter()
        .find_map(|event| event["playbook"].as_str())
        .unwrap_or("?");
    let chain = match &timeline.chain.broken {
        None => format!("intact ({} records)", timeline.chain.records),
        Some(broken) => format!(
            "BROKEN: record {} of run {}: {}",
            broken.position, timeline.run_id, broken.reason
        ),
    };
    let mut text = format!(
        "# Run {}\n\n- Playbook: `{playbook}`\n- Hash chain: {chain}\n\n\
         | # | Time (UTC) | Event | Step | Details |\n|---|---|---|---|---|\n",
        timeline.run_id
    );
    for (index, event) in events.iter().enumerate() {
        let at = event["at"].as_u64().unwrap_or(0);
        let time = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(at),
        );
        let kind = event["type"].as_str().unwrap_or("?");
        let step = event["step"].as_str().unwrap_or("");
        let details = match kind {
            "run_accepted" => format!("from {} on trigger {}", event["actor"], event["trigger"]),
            "run_cancelled" => format!("by {} {}", event["by"], event["reason"]),
            "step_started" => format!("attempt {}", event["attempt"]),
            "step_retrying" => format!(
                "attempt {} failed: {}; retry in {} ms",
                event["attempt"], event["error"]["message"], event["delay_ms"]
            ),
            "step_succeeded" => format!(
                "{} attempt(s), {} ms; output {}",
                event["attempts"], event["duration_ms"], event["output"]
            ),
            "step_failed" => format!("{}: {}", event["error"]["kind"], event["error"]["message"]),
            "step_skipped" => event["reason"].as_str().unwrap_or("").to_owned(),
            "approval_requested" => format!("approvers {}", event["approvers"]),
            "approval_decided" => format!("{} {}", event["decision"], event["by"]),
            "run_recovered" => format!("delivery {}", event["deliveries"]),
            "run_resumed" => format!("by {}", event["by"]),
            "run_finished" => format!("{} {}", event["status"], event["error"]),
            _ => String::new(),
        };
        // Table cells cannot hold pipes or line breaks.
        let details = details.replace('|', "\\|").replace('\n', " ");
        text.push_str(&format!(
            "| {} | {time} | {kind} | {step} | {details} |\n",
            index + 1
        ));
    }
    text
}

/// Runs one operation on the store the configuration names (the server's own).
fn on_the_store(
    config_file: Option<&Path>,
    operation: impl AsyncFnOnce(Arc<dyn store::Store>) -> Result<(), server::Error>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_file)?;
    crate::runtime(false)?.block_on(async move {
        let store = server::open_store(&config.store).await?;
        operation(store).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Run control over `store`, as the server's: the runner records the events (no plugin is called).
fn control(store: Arc<dyn store::Store>) -> server::RunControl {
    let journal: Arc<dyn runner::Journal> = store.clone();
    let runner = runner::Runner::new(Arc::new(runner::NoPlugins), journal);
    let desk = server::desk::CaseDesk::new(Arc::clone(&store), Arc::default());
    server::RunControl::new(store, Arc::new(runner), desk)
}

/// SIGTERM (Kubernetes, systemd) or Ctrl-C: stop taking work, finish what is in hand.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("Shutting down: no new work; finishing what is in hand.");
    shutdown.cancel();
}
