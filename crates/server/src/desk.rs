//! The case desk: alerts open and join cases, runs move them on, people change them, and the
//! report is put together.
//!
//! Every change is decided on the case as read (the `cases` crate decides) and stored only on
//! the chain head it was read at ([`store::Store::write_case`] refuses a moved head): concurrent
//! workers and people never overwrite each other, a refused write is read and decided again.
//! Writing is idempotent per run (a run joins once, a step is recorded once), so a worker that
//! crashed half-way simply asks again.

use std::sync::Arc;

use cases::report::{Chain, Report, RunMaterial};
use cases::{Case, CaseEvent, CaseId, Change, JoinReason, Observable, RunProgress};
use playbook::Playbook;
use runner::{RunEvent, RunState};
use store::audit::{self, AuditRecord, GENESIS};
use store::{CaseKey, CaseWrite, Store};

use crate::error::Error;
use crate::metrics::Metrics;

/// How often a write refused on a moved head is decided again before giving up.
const ATTEMPTS: usize = 50;

/// A case as read: its fold, its events and the head of its chain.
pub struct CaseRead {
    pub case: Case,
    pub events: Vec<CaseEvent>,
    pub records: Vec<AuditRecord>,
    head: (u64, String),
}

/// Opens, joins, moves and reports cases. Cheap to clone.
#[derive(Clone)]
pub struct CaseDesk {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl CaseDesk {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        CaseDesk { store, metrics }
    }

    /// The case, if it exists.
    pub async fn read(&self, case: CaseId) -> Result<Option<CaseRead>, Error> {
        let records = self.store.case_records(case).await?;
        let events = records
            .iter()
            .map(|record| {
                serde_json::from_str::<CaseEvent>(&record.event).map_err(|error| {
                    Error::Conflict(format!(
                        "record {} of case {case} cannot be read: {error}",
                        record.seq
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let Some(folded) = Case::fold(case, &events) else {
            return Ok(None);
        };
        let head = records.last().map_or((0, GENESIS.to_owned()), |record| {
            (record.seq, record.hash.clone())
        });
        Ok(Some(CaseRead {
            case: folded,
            events,
            records,
            head,
        }))
    }

    /// Opens a case for the run's alert, or joins it to the open case it belongs to (by the
    /// playbook's `case.key`, else by a shared observable of a `join_on` type). Returns the
    /// case; `None` when the playbook opens no cases. Asking again for a run that joined a case
    /// returns that case.
    pub async fn join(
        &self,
        playbook: &Playbook,
        run_id: &str,
        event: &serde_json::Value,
    ) -> Result<Option<CaseId>, Error> {
        if playbook.case.is_none() {
            return Ok(None);
        }
        if let Some(case) = self.store.case_of_run(run_id).await? {
            return Ok(Some(case));
        }
        let mut opening = match playbook.case_opening(event) {
            Ok(Some(opening)) => opening,
            Ok(None) => return Ok(None),
            Err(error) => {
                // The run goes on: an incident without its case beats no response at all.
                tracing::warn!(%error, playbook = %playbook.name, "The playbook's `case` block failed on this alert; the run has no case.");
                return Ok(None);
            }
        };
        if opening.key.trim().is_empty() {
            // The key read a field this alert lacks: it groups nothing, so the alert gets a
            // case of its own instead of joining every other alert that lacks the field.
            opening.key = format!("run:{run_id}");
        }
        let mut observables = cases::observables::extract(event);
        for observable in &opening.observables {
            if !observables.contains(observable) {
                observables.push(observable.clone());
            }
        }
        let joinable: Vec<Observable> = observables
            .iter()
            .filter(|observable| opening.join_on.contains(&observable.kind))
            .cloned()
            .collect();
        let window = u64::try_from(opening.window.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..ATTEMPTS {
            let now = store::now_millis();
            let found = self
                .store
                .find_case(&opening.key, &joinable, now.saturating_sub(window), now)
                .await?;
            let key = CaseKey {
                key: opening.key.clone(),
                expires_at: now.saturating_add(window),
                exclusive: found.is_none(),
            };
            let (case, before, head, events) = match found {
                Some(found) => {
                    let Some(read) = self.read(found.case).await? else {
                        continue;
                    };
                    if !read.case.takes_alerts() {
                        continue;
                    }
                    let reason = match found.by {
                        None => JoinReason::Key {
                            key: opening.key.clone(),
                        },
                        Some(observable) => JoinReason::Observable { observable },
                    };
                    let events =
                        read.case
                            .joining(&playbook.name, run_id, reason, observables.clone(), now);
                    (found.case, Some(read.case), read.head, events)
                }
                None => {
                    let case = self.store.next_case_id().await?;
                    let events =
                        Case::opening(&opening, &playbook.name, run_id, observables.clone(), now);
                    (case, None, (0, GENESIS.to_owned()), events)
                }
            };
            let addition = Addition {
                before: before.as_ref(),
                head,
                events,
                run: Some(run_id),
                key: Some(key),
                seen: observables.clone(),
                at: now,
            };
            let written = self.write(case, addition).await?;
            if written.is_some() {
                return Ok(Some(case));
            }
            if let Some(case) = self.store.case_of_run(run_id).await? {
                return Ok(Some(case));
            }
        }
        Err(Error::Conflict(format!(
            "the case of run {run_id} kept changing while it joined; it joins when the run is next advanced"
        )))
    }

    /// Files a sub-playbook's run (`run_id`, of `playbook`) under `case`, the case of the run that
    /// called it. A run already filed, or a case that takes no more alerts, is left as it is.
    pub async fn attach_call(
        &self,
        case: CaseId,
        playbook: &str,
        run_id: &str,
        by_run: &str,
    ) -> Result<(), Error> {
        for _ in 0..ATTEMPTS {
            if self.store.case_of_run(run_id).await?.is_some() {
                return Ok(());
            }
            let Some(read) = self.read(case).await? else {
                return Ok(());
            };
            if !read.case.takes_alerts() {
                return Ok(());
            }
            let now = store::now_millis();
            let reason = JoinReason::Called {
                by_run: by_run.to_owned(),
            };
            let events = read.case.joining(playbook, run_id, reason, Vec::new(), now);
            let addition = Addition {
                run: Some(run_id),
                ..Addition::to(&read, events, now)
            };
            if self.write(case, addition).await?.is_some() {
                return Ok(());
            }
        }
        Err(Error::Conflict(format!(
            "case {case} kept changing while sub-playbook run {run_id} joined it"
        )))
    }

    /// Records on the run's case what the run did since the case last looked: steps with a
    /// phase that succeeded (moving the case on), what their outputs revealed, how it ended.
    /// Does nothing for a run without a case. `playbook` gives the steps' phases; without it
    /// only the run's end and observables are recorded.
    pub async fn record_progress(
        &self,
        run_id: &str,
        playbook: Option<&Playbook>,
    ) -> Result<(), Error> {
        let Some(case) = self.store.case_of_run(run_id).await? else {
            return Ok(());
        };
        let journal = self.store.events(run_id).await?;
        let state = RunState::from_events(&journal);
        let phase_of = |step: &str| {
            let step = playbook?.step_or_handler(step)?;
            Some((step.phase?, step.uses.to_string()))
        };
        for _ in 0..ATTEMPTS {
            let Some(read) = self.read(case).await? else {
                return Ok(());
            };
            let now = store::now_millis();
            let events = match &state {
                Some(state) => read.case.progress(
                    &RunProgress {
                        playbook: &state.playbook,
                        state,
                        phase_of: &phase_of,
                    },
                    now,
                ),
                None if RunEvent::cancelled_by(&journal).is_some() => {
                    read.case.cancelled_before_start(run_id, now)
                }
                None => Vec::new(),
            };
            if events.is_empty() {
                return Ok(());
            }
            let seen = events
                .iter()
                .flat_map(|event| match event {
                    CaseEvent::Observed { observables, .. } => observables.clone(),
                    _ => Vec::new(),
                })
                .collect();
            let addition = Addition {
                seen,
                ..Addition::to(&read, events, now)
            };
            let written = self.write(case, addition).await?;
            if written.is_some() {
                return Ok(());
            }
        }
        Err(Error::Conflict(format!(
            "case {case} kept changing while run {run_id} was recorded on it"
        )))
    }

    /// A person's change to a case; returns the case as it leaves it.
    pub async fn change(&self, case: CaseId, change: Change, by: &str) -> Result<Case, Error> {
        for _ in 0..ATTEMPTS {
            let Some(read) = self.read(case).await? else {
                return Err(Error::NotFound(format!("there is no case {case}")));
            };
            let now = store::now_millis();
            let events =
                read.case
                    .change(change.clone(), by, now)
                    .map_err(|error| match error {
                        cases::Error::Invalid(reason) => Error::Invalid(reason),
                        cases::Error::Unchanged(reason) => Error::Conflict(reason),
                    })?;
            if events.is_empty() {
                return Ok(read.case);
            }
            if let Some(after) = self.write(case, Addition::to(&read, events, now)).await? {
                return Ok(after);
            }
        }
        Err(Error::Conflict(format!(
            "case {case} kept changing; try again"
        )))
    }

    /// A person decided on a step of the run: if the run's case is not acknowledged yet, that
    /// person has now taken it on.
    pub async fn acknowledged_through(&self, run_id: &str, by: &str) -> Result<(), Error> {
        match self.store.case_of_run(run_id).await? {
            Some(case) => self.change(case, Change::Acknowledge, by).await.map(drop),
            None => Ok(()),
        }
    }

    /// The post-incident report, with every chain it rests on verified now.
    pub async fn report(&self, case: CaseId) -> Result<Option<Report>, Error> {
        let Some(read) = self.read(case).await? else {
            return Ok(None);
        };
        let chain = chain_state(&cases::chain_id(case), &read.records);
        let mut runs = Vec::new();
        for alert in &read.case.alerts {
            let records = self.store.audit_records(&alert.run_id).await?;
            let events = records
                .iter()
                .filter_map(|record| serde_json::from_str::<RunEvent>(&record.event).ok())
                .collect();
            let accepted_at = self
                .store
                .run(&alert.run_id)
                .await?
                .map_or(alert.joined_at, |record| record.accepted_at);
            runs.push(RunMaterial {
                run_id: alert.run_id.clone(),
                playbook: alert.playbook.clone(),
                accepted_at,
                events,
                chain: chain_state(&alert.run_id, &records),
            });
        }
        Ok(Some(Report::assemble(
            read.case,
            &read.events,
            chain,
            runs,
            store::now_millis(),
        )))
    }

    /// Stores the addition; returns the case as it leaves it, or `None` when the store refused
    /// (the head moved, the run joined elsewhere, the key was taken).
    async fn write(&self, case: CaseId, addition: Addition<'_>) -> Result<Option<Case>, Error> {
        let Addition {
            before,
            head,
            events,
            run,
            key,
            seen,
            at,
        } = addition;
        let after = match before {
            Some(before) => {
                let mut after = before.clone();
                for event in &events {
                    after.apply(event);
                }
                after
            }
            None => Case::fold(case, &events)
                .ok_or_else(|| Error::Conflict("a new case must start with its opening".into()))?,
        };
        let write = CaseWrite {
            case,
            head,
            events,
            summary: after.summary(),
            run: run.map(str::to_owned),
            key,
            seen,
            at,
        };
        if !self.store.write_case(&write).await? {
            return Ok(None);
        }
        self.metrics.case_written(before, &after);
        Ok(Some(after))
    }
}

/// What one write adds to a case.
struct Addition<'a> {
    /// The case as read (`None`: a new case).
    before: Option<&'a Case>,
    /// The head it was read at.
    head: (u64, String),
    events: Vec<CaseEvent>,
    /// The run that joins with these events.
    run: Option<&'a str>,
    key: Option<CaseKey>,
    seen: Vec<Observable>,
    at: runner::Millis,
}

impl<'a> Addition<'a> {
    fn to(read: &'a CaseRead, events: Vec<CaseEvent>, at: runner::Millis) -> Self {
        Addition {
            before: Some(&read.case),
            head: read.head.clone(),
            events,
            run: None,
            key: None,
            seen: Vec::new(),
            at,
        }
    }
}

fn chain_state(id: &str, records: &[AuditRecord]) -> Chain {
    match audit::verify(id, records) {
        Ok(count) => Chain {
            intact: true,
            records: count,
            broken: None,
        },
        Err(broken) => Chain {
            intact: false,
            records: records.len(),
            broken: Some(broken.to_string()),
        },
    }
}
