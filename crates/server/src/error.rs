/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the configuration has problems:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    #[error("the playbooks have problems:\n{}", .0.join("\n"))]
    Playbooks(Vec<String>),
    #[error("the plugins or connectors could not be loaded")]
    Plugins(#[from] plugin_host::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Run(#[from] runner::Error),
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The request conflicts with the run's state (it ended, it is busy), or the case's.
    #[error("{0}")]
    Conflict(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed (an empty note).
    #[error("{0}")]
    Invalid(String),
    #[error("run {0} was taken over by another worker")]
    LostRun(String),
    #[error("the worker stopped: {0}")]
    Worker(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
