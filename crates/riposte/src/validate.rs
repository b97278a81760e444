//! `riposte validate`: diagnostics like a compiler's, or JSON for tools.

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
        anyhow::bail!("no playbooks (*.yaml, *.yml) found in the given paths");
    }
    let mut results = Vec::with_capacity(files.len());
    for file in &files {
        results.push(match playbook::check_file(file) {
            Ok(checked) => checked,
            Err(playbook::Error::Invalid(checked)) => checked,
            Err(error) => return Err(error.into()),
        });
    }
    // Sub-playbooks: every call names a valid playbook among those checked, and none loops.
    let valid: Vec<(usize, playbook::Playbook)> = results
        .iter()
        .enumerate()
        .filter(|(_, result)| !result.has_errors())
        .filter_map(|(index, result)| Some((index, playbook::compile(&result.source).ok()?)))
        .collect();
    let compiled: Vec<&playbook::Playbook> = valid.iter().map(|(_, playbook)| playbook).collect();
    for (index, problem) in playbook::check_calls(&compiled) {
        results[valid[index].0].diagnostics.push(problem);
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
                eprintln!("checked {} playbook(s): all valid", files.len());
            } else {
                eprintln!(
                    "checked {} playbook(s): {problems} error(s) in {failed} file(s)",
                    files.len()
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
