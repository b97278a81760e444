//! The playbook language: YAML in, a checked [`Playbook`] out, with diagnostics people can act on.
//!
//! [`compile`] parses a playbook (with a budget against hostile YAML), decodes it and checks it in
//! one pass that reports *every* problem with its line, column and a hint: unknown fields with
//! "did you mean", missing and cyclic `needs`, template syntax errors and references to steps,
//! variables or secrets that do not exist. Templates and conditions are minijinja, sandboxed (see
//! [`template`]), with filters for security work (see [`filters`]). [`schema`] publishes the format
//! as JSON Schema for editors. [`Playbook::screen`] is what a trigger makes of an event: its
//! filter's verdict and its dedupe key; [`Playbook::case_opening`] what its `case:` block makes of
//! it, in the words of the incident-response lifecycle ([`Phase`], [`Severity`], OCSF's
//! [`ObservableType`]s).
//!
//! This crate does no I/O beyond reading the files it is asked to load, and knows nothing of plugins,
//! queues or storage: the `runner` crate executes what this crate checked.

pub mod addresses;
mod calls;
mod case;
mod compile;
pub mod connector;
mod diagnostic;
mod error;
pub mod filters;
mod model;
pub mod schedule;
pub mod schema;
mod screen;
pub mod template;
mod yaml;

use std::path::Path;

pub use calls::{PLAYBOOK_CALL, check_calls};
pub use case::{CaseOpening, CaseRule, Observable, ObservableType, Phase, Severity};
pub use compile::{
    APPROVAL_FIELDS, BACKOFF_FIELDS, CASE_FIELDS, DEDUPE_FIELDS, DEFAULT_APPROVAL_TIMEOUT,
    DEFAULT_STEP_TIMEOUT, ERROR_FIELDS, FOREACH_FIELDS, MAX_EXPIRY, MAX_STEP_TIMEOUT,
    ON_FAILURE_FIELDS, PLAYBOOK_FIELDS, PLUGIN_GRANT_FIELDS, RETRY_FIELDS, RUN_FIELDS,
    SCHEDULE_FIELDS, STEP_FIELDS, STEP_RESULT_FIELDS, TRIGGER_FIELDS, UNDO_FIELDS, UNDO_ROOTS,
    compile,
};
pub use diagnostic::{Diagnostic, FileDiagnostics, Position};
pub use error::Error;
pub use model::{
    Approval, ApprovalTimeout, Dedupe, ErrorKind, Foreach, OnFailure, Playbook, PluginGrant,
    PluginRef, RetryPolicy, Step, StepId, Trigger, Undo,
};
pub use schedule::Schedule;
pub use screen::{MAX_SPLIT_ITEMS, Screening};
pub use template::{Condition, Input};
pub use yaml::MAX_PLAYBOOK_BYTES;

/// Reads and checks one playbook file.
pub fn load(path: &Path) -> Result<Playbook, Error> {
    let source = read(path)?;
    compile(&source).map_err(|diagnostics| {
        Error::Invalid(FileDiagnostics {
            file: path.display().to_string(),
            source,
            diagnostics,
        })
    })
}

/// Whether `path` is a playbook test (`*.test.yaml`, `*.test.yml`), which `riposte test` runs and
/// nothing loads as a playbook.
pub fn is_test_file(path: &Path) -> bool {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .is_some_and(|stem| stem.ends_with(".test"))
}

/// The playbook files (`*.yaml`, `*.yml`, but not `*.test.yaml`) in `dir` and its subfolders,
/// sorted.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // Hidden entries are not playbooks: editors' swap files, and the `..data` folders
            // through which a Kubernetes ConfigMap volume links every file a second time.
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files)?;
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
                && !is_test_file(&path)
            {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// Checks one playbook file and returns its diagnostics (empty when it is valid).
pub fn check_file(path: &Path) -> Result<FileDiagnostics, Error> {
    let source = read(path)?;
    let diagnostics = compile(&source).err().unwrap_or_default();
    Ok(FileDiagnostics {
        file: path.display().to_string(),
        source,
        diagnostics,
    })
}

pub(crate) fn read(path: &Path) -> Result<String, Error> {
    let read_error = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.len() > MAX_PLAYBOOK_BYTES as u64 {
        // Refuse before reading, so a huge file never reaches memory.
        return Err(Error::Invalid(FileDiagnostics {
            file: path.display().to_string(),
            source: String::new(),
            diagnostics: vec![Diagnostic::error(
                "too-large",
                Position::START,
                format!(
                    "the file is {} bytes; playbooks are limited to {MAX_PLAYBOOK_BYTES} bytes",
                    metadata.len()
                ),
            )],
        }));
    }
    // Read through a bound, not by trusting the size: special files report none, and a file can
    // grow between the check and the read.
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(read_error)?,
            MAX_PLAYBOOK_BYTES as u64 + 1,
        ),
        &mut text,
    )
    .map_err(read_error)?;
    Ok(text)
}
