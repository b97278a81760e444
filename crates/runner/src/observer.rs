//! What the runner reports besides its journal: every batch of records it wrote and every
//! plugin call it made, with how long each took. The server counts them for `/metrics`; since
//! every run event goes through [`crate::Runner`]'s one journal path, what is counted is exactly
//! what the journal holds.

use std::time::Duration;

use playbook::PluginRef;

use crate::event::{RunEvent, StepError};

/// Told of what the runner records and calls. Both methods do nothing by default.
pub trait Observer: Send + Sync {
    /// `events` were written to the journal, in one write that took `took`.
    fn recorded(&self, events: &[RunEvent], took: Duration) {
        let _ = (events, took);
    }

    /// A plugin action (`uses`) was called and answered `outcome` after `took`.
    fn called(&self, uses: &PluginRef, outcome: Result<(), &StepError>, took: Duration) {
        let _ = (uses, outcome, took);
    }
}

/// An observer that counts nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unobserved;

impl Observer for Unobserved {}
