//! Where run events go: the audit trail and the checkpoint in one.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Error;
use crate::event::{RunEvent, RunState};

/// Durable, append-only storage of run events.
///
/// The runner awaits [`Journal::append`] before it acts on an event, so an implementation must
/// return only once the event is stored as durably as it promises (e.g. acknowledged by Redis).
#[async_trait]
pub trait Journal: Send + Sync {
    async fn append(&self, run_id: &str, event: &RunEvent) -> Result<(), Error>;

    /// Appends events in order. The runner batches what happened between two plugin calls into
    /// one call; a store that can write them in one round trip (all or none) should.
    async fn append_all(&self, run_id: &str, events: &[RunEvent]) -> Result<(), Error> {
        for event in events {
            self.append(run_id, event).await?;
        }
        Ok(())
    }
}

/// A journal in memory: for local runs and tests.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    runs: Mutex<HashMap<String, Vec<RunEvent>>>,
}

impl MemoryJournal {
    pub fn new() -> Self {
        MemoryJournal::default()
    }

    /// The events of a run, in the order they were appended.
    pub fn events(&self, run_id: &str) -> Vec<RunEvent> {
        self.runs
            .lock()
            .map(|runs| runs.get(run_id).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The run state rebuilt from the events, as a resuming process would see it.
    pub fn state(&self, run_id: &str) -> Option<RunState> {
        RunState::from_events(&self.events(run_id))
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn append(&self, run_id: &str, event: &RunEvent) -> Result<(), Error> {
        self.append_all(run_id, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, run_id: &str, events: &[RunEvent]) -> Result<(), Error> {
        let mut runs = self
            .runs
            .lock()
            .map_err(|_| Error::Journal("the in-memory journal is poisoned".into()))?;
        runs.entry(run_id.to_owned())
            .or_default()
            .extend_from_slice(events);
        Ok(())
    }
}
