/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store holds a record it cannot read ({what}): {reason}")]
    Corrupt { what: String, reason: String },
    #[error("`{0}` is not a cursor this store returned as `next`")]
    Cursor(String),
    #[error("the store is not configured correctly: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<Error> for runner::Error {
    fn from(error: Error) -> Self {
        runner::Error::Journal(error.to_string())
    }
}
