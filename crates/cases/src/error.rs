/// Why a person's change to a case was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The change is malformed: an empty note, a note too long.
    #[error("{0}")]
    Invalid(String),
    /// The case is already as asked.
    #[error("{0}")]
    Unchanged(String),
}
