use std::path::PathBuf;

use crate::diagnostic::{FileDiagnostics, Position};

/// Everything that can go wrong in this crate after a playbook has been checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template failed while rendering, e.g. a variable that is missing in this event.
    #[error("`{expression}` (at {position}): {message}")]
    Template {
        position: Position,
        expression: String,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `split` did not yield a list of events a delivery may hold.
    #[error("{0}")]
    Split(String),
    /// The playbook has errors; each one is in the diagnostics.
    #[error("{} has {} error(s)", .0.file, .0.diagnostics.len())]
    Invalid(FileDiagnostics),
}
