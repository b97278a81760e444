use std::path::PathBuf;

/// What can go wrong loading plugins or setting up the host (a failing *invocation* is a
/// [`runner::StepError`] instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a plugin this host can run.
    #[error("{path} is not a usable plugin: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("the WebAssembly engine failed: {0}")]
    Engine(String),
}

impl Error {
    pub(crate) fn engine(error: impl std::fmt::Display) -> Self {
        Error::Engine(format!("{error:#}"))
    }
}
