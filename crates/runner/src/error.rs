/// What stops the runner itself (as opposed to a step failing, which is a [`crate::StepError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal refused an event. The run stops: nothing happens that is not on the record.
    #[error("cannot record the run event: {0}")]
    Journal(String),
    /// The run state does not belong to this playbook or is already finished.
    #[error("cannot resume run {run_id}: {reason}")]
    Resume { run_id: String, reason: String },
    /// An approval decision for a step that is not waiting for one.
    #[error("step `{step}` of run {run_id} is not waiting for approval")]
    NotWaiting { run_id: String, step: String },
    /// What was asked does not fit the run's state (it ended, it was cancelled, it is queued).
    #[error("{0}")]
    Refused(String),
}
