//! `riposte validate`: diagnostics like a compiler's, or JSON for tools, for playbooks and
//! connectors (a file whose top level has `connector:`) alike.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::Format;

pub(crate) fn validate(paths: &[PathBuf], format: Format) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files).with_context(|| format!("cannot read {}", path.display()))?;
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        anyhow::bail!("no playbooks or connectors (*.yaml, *.yml) found in the given paths");
    }
    let mut results = Vec::with_capacity(files.len());
    let mut is_connector = Vec::with_capacity(files.len());
    for file in &files {
        let connector = std::fs::read_to_string(file)
            .is_ok_and(|source| playbook::connector::is_connector(&source));
        let checked = if connector {
            playbook::connector::check_file(file)
        } else {
            playbook::check_file(file)
        };
        results.push(match checked {
            Ok(checked) => checked,
            Err(playbook::Error::Invalid(checked)) => checked,
            Err(error) => return Err(error.into()),
        });
        is_connector.push(connector);
    }
    let kinds = &is_connector;
    let valid = |connectors: bool| {
        results
            .iter()
            .enumerate()
            .filter(move |(index, result)| kinds[*index] == connectors && !result.has_errors())
    };
    let connectors: Vec<playbook::connector::Connector> = valid(true)
        .filter_map(|(_, result)| playbook::connector::compile(&result.source).ok())
        .collect();
    let playbooks: Vec<(usize, playbook::Playbook)> = valid(false)
        .filter_map(|(index, result)| Some((index, playbook::compile(&result.source).ok()?)))
        .collect();
    let compiled: Vec<&playbook::Playbook> =
        playbooks.iter().map(|(_, playbook)| playbook).collect();
    // Sub-playbooks: every call names a valid playbook among those checked, and none loops.
    // Connectors: every call of one checked here names an action of it, with its inputs.
    let connector_refs: Vec<&playbook::connector::Connector> = connectors.iter().collect();
    let problems: Vec<_> = playbook::check_calls(&compiled)
        .into_iter()
        .chain(playbook::connector::check_calls(&compiled, &connector_refs))
        .collect();
    for (index, problem) in problems {
        results[playbooks[index].0].diagnostics.push(problem);
    }
    let failed = results.iter().filter(|r| r.has_errors()).count();
    let problems: usize = results.iter().map(|r| r.diagnostics.len()).sum();
    match format {
        Format::Json => crate::print_stdout(&serde_json::to_string_pretty(&results)?),
        Format::Text => {
            for result in results.iter().filter(|r| r.has_errors()) {
                eprintln!("{}", result.render());
            }
            if failed == 0 {
                eprintln!("checked {}: all valid", counted(&is_connector));
            } else {
                eprintln!(
                    "checked {}: {problems} error(s) in {failed} file(s)",
                    counted(&is_connector)
                );
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !path.is_dir() {
        // A named file is checked whatever its extension; a missing one is reported by the check.
        files.push(path.to_owned());
        return Ok(());
    }
    files.extend(playbook::files_in(path)?);
    Ok(())
}

/// "3 playbook(s) and 2 connector(s)", or just the playbooks when there is no connector.
fn counted(is_connector: &[bool]) -> String {
    let connectors = is_connector.iter().filter(|c| **c).count();
    let playbooks = is_connector.len() - connectors;
    match connectors {
        0 => format!("{playbooks} playbook(s)"),
        _ => format!("{playbooks} playbook(s) and {connectors} connector(s)"),
    }
}
