//! The runner executes one checked playbook for one event.
//!
//! It orders steps by their `needs` and runs independent ones in parallel, evaluates `if`
//! conditions, loops over `foreach` lists with a concurrency limit, retries with exponential backoff
//! and jitter, enforces per-attempt timeouts, runs failure handlers, and pauses at approval gates.
//!
//! Two seams keep it free of infrastructure: a [`StepExecutor`] performs plugin calls (the WASM
//! plugin host in production, [`DryRunExecutor`] for rehearsals; the built-in `core/echo` the
//! runner answers itself), and a [`Journal`] durably stores every [`RunEvent`] before the runner
//! acts on it. The events are the audit trail *and* the checkpoint: [`RunState`] is their fold, so
//! [`Runner::resume`] continues a crashed run without repeating a step whose success was recorded.
//!
//! The runner owns a run's state machine: besides driving steps, every other change of a run
//! (acceptance, recovery, giving up, cancellation, approval decisions, resuming a failed run) is a
//! [`Runner`] operation ([`control`](Runner::advance)), and every event goes through one journal
//! path, stamped by one clock, reported to one [`Observer`] (metrics) and [`Watchdog`] (stalls).
//! The runner knows nothing of Redis, HTTP or wasmtime.

mod builtin;
mod control;
mod dry_run;
mod error;
mod event;
mod executor;
mod journal;
mod observer;
mod redact;
mod run;
mod watchdog;

pub use builtin::CORE;
pub use control::{Acceptance, Cancelled, event_digest};
pub use dry_run::DryRunExecutor;
pub use error::Error;
pub use event::{
    ApprovalState, Decision, Millis, RunEvent, RunState, RunStatus, StepError, StepRecord,
    StepStatus, UndoState, UndoStatus,
};
pub use executor::{Grant, NoPlugins, StepCall, StepExecutor};
pub use journal::{Journal, MemoryJournal};
pub use observer::{Observer, Unobserved};
pub use redact::{REDACTED, Redactor};
pub use run::{Runner, Secrets, idempotency_key};
pub use watchdog::{STALL_MARGIN, Stall, Watchdog};

/// A new, time-ordered run id.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
