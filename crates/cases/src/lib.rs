//! Incident cases: what Riposte keeps about one incident across every alert and run that belongs
//! to it, as people on call need to see it.
//!
//! A case is the fold of its events ([`CaseEvent`], [`Case::fold`]), like a run is the fold of
//! its journal; the store chains those events in the audit trail, so every change has its actor
//! and its place in a tamper-evident record. A case moves through the incident-response phases
//! ([`Phase`]): forward when a step that declares a phase succeeds ([`Case::progress`]), either
//! way when a person moves it ([`Case::change`]). [`observables`] pulls the addresses, hosts,
//! hashes and users out of alerts and step outputs; [`report`] writes the post-incident report.
//!
//! This crate does no I/O and decides nothing about time: the store keeps cases, the server
//! drives them, and every function here is given the clock's reading.

mod error;
pub mod observables;
pub mod report;

use std::collections::HashSet;

use runner::{Millis, RunState, RunStatus, StepStatus};
use serde::{Deserialize, Serialize};

pub use error::Error;
pub use playbook::{Observable, ObservableType, Phase, Severity};

/// A case's number: 1, 2, 3… in the order cases were opened.
pub type CaseId = u64;

/// How many alerts one case takes; the next alert with its key opens a new case. A flood of
/// one alert is dedupe's job; this keeps a case readable and its fold cheap.
pub const MAX_ALERTS: usize = 500;
/// How many observables one case keeps; later ones are not recorded.
pub const MAX_OBSERVABLES: usize = 1_000;
/// How many notes one case takes.
pub const MAX_NOTES: usize = 1_000;
/// How long a note may be, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// The id a case's chain is hashed under in the audit trail (runs are UUIDs, the global trail is
/// `trail`: they never clash).
pub fn chain_id(case: CaseId) -> String {
    format!("case:{case}")
}

/// Something that happened to a case. Serialized with a `type` tag, like run events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CaseEvent {
    /// A playbook's alert opened the case (its first event).
    Opened {
        title: String,
        severity: Severity,
        /// The `case.key` it was opened under.
        key: String,
        /// `playbook:<name>`.
        by: String,
        at: Millis,
    },
    /// An alert (the run it started) joined the case.
    AlertJoined {
        run_id: String,
        playbook: String,
        reason: JoinReason,
        at: Millis,
    },
    /// Observables seen for the first time in this case: in an alert, or a step's output.
    Observed {
        observables: Vec<Observable>,
        run_id: String,
        /// The step whose output held them; none for the alert itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        at: Millis,
    },
    /// A step that declares a phase succeeded: what was done to the incident.
    ActionTaken {
        run_id: String,
        step: String,
        uses: String,
        phase: Phase,
        at: Millis,
    },
    /// A step's effect was undone (or its undo failed for good): it expired, someone asked, or
    /// the case was closed.
    ActionUndone {
        run_id: String,
        step: String,
        succeeded: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Who asked; nobody when the effect expired.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        at: Millis,
    },
    /// A run of the case ended (again, if it was resumed).
    RunEnded {
        run_id: String,
        status: String,
        at: Millis,
    },
    PhaseChanged {
        from: Phase,
        to: Phase,
        /// A person (their token's name), or `playbook:<name>` when a step moved it.
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        at: Millis,
    },
    SeverityChanged {
        from: Severity,
        to: Severity,
        by: String,
        at: Millis,
    },
    /// A person took the case on: the first thing any person does to a case records it.
    Acknowledged { by: String, at: Millis },
    NoteAdded {
        text: String,
        by: String,
        at: Millis,
    },
}

impl CaseEvent {
    pub fn at(&self) -> Millis {
        match self {
            CaseEvent::Opened { at, .. }
            | CaseEvent::AlertJoined { at, .. }
            | CaseEvent::Observed { at, .. }
            | CaseEvent::ActionTaken { at, .. }
            | CaseEvent::ActionUndone { at, .. }
            | CaseEvent::RunEnded { at, .. }
            | CaseEvent::PhaseChanged { at, .. }
            | CaseEvent::SeverityChanged { at, .. }
            | CaseEvent::Acknowledged { at, .. }
            | CaseEvent::NoteAdded { at, .. } => *at,
        }
    }

    /// Who did it, if a person or a playbook did.
    pub fn actor(&self) -> Option<&str> {
        match self {
            CaseEvent::Opened { by, .. }
            | CaseEvent::PhaseChanged { by, .. }
            | CaseEvent::SeverityChanged { by, .. }
            | CaseEvent::Acknowledged { by, .. }
            | CaseEvent::NoteAdded { by, .. } => Some(by),
            CaseEvent::ActionUndone { by, .. } => by.as_deref(),
            CaseEvent::AlertJoined { .. }
            | CaseEvent::Observed { .. }
            | CaseEvent::ActionTaken { .. }
            | CaseEvent::RunEnded { .. } => None,
        }
    }

    /// One line saying what happened, for timelines. Values from alerts appear as they are:
    /// whoever shows the line escapes it.
    pub fn describe(&self) -> String {
        match self {
            CaseEvent::Opened {
                title, severity, ..
            } => format!("case opened ({severity}): {title}"),
            CaseEvent::AlertJoined {
                run_id,
                playbook,
                reason,
                ..
            } => match reason {
                JoinReason::Opened => format!("alert of `{playbook}` (run {run_id}) opened it"),
                JoinReason::Key { key } => {
                    format!("alert of `{playbook}` (run {run_id}) joined by its key `{key}`")
                }
                JoinReason::Observable { observable } => format!(
                    "alert of `{playbook}` (run {run_id}) joined by the shared {} `{}`",
                    observable.kind, observable.value
                ),
                JoinReason::Called { by_run } => {
                    format!("sub-playbook `{playbook}` (run {run_id}) called by run {by_run}")
                }
            },
            CaseEvent::Observed {
                observables, step, ..
            } => {
                let list: Vec<String> = observables
                    .iter()
                    .map(|o| format!("{} `{}`", o.kind, o.value))
                    .collect();
                match step {
                    Some(step) => format!("step `{step}` found {}", list.join(", ")),
                    None => format!("the alert holds {}", list.join(", ")),
                }
            }
            CaseEvent::ActionTaken {
                step, uses, phase, ..
            } => format!("{}: step `{step}` ({uses}) succeeded", phase.title()),
            CaseEvent::ActionUndone {
                run_id,
                step,
                succeeded,
                error,
                by,
                ..
            } => {
                let why = match by {
                    Some(by) => format!("asked by {by}"),
                    None => "it expired".to_owned(),
                };
                match (succeeded, error) {
                    (true, _) => format!("step `{step}` of run {run_id} undone ({why})"),
                    (false, Some(error)) => {
                        format!("undo of step `{step}` of run {run_id} failed ({why}): {error}")
                    }
                    (false, None) => {
                        format!("undo of step `{step}` of run {run_id} failed ({why})")
                    }
                }
            }
            CaseEvent::RunEnded { run_id, status, .. } => format!("run {run_id} {status}"),
            CaseEvent::PhaseChanged {
                from, to, reason, ..
            } => match reason {
                Some(reason) => format!("moved from {} to {}: {reason}", from.title(), to.title()),
                None => format!("moved from {} to {}", from.title(), to.title()),
            },
            CaseEvent::SeverityChanged { from, to, .. } => {
                format!("severity changed from {from} to {to}")
            }
            CaseEvent::Acknowledged { .. } => "acknowledged".to_owned(),
            CaseEvent::NoteAdded { text, .. } => format!("note: {text}"),
        }
    }
}

/// Why an alert belongs to its case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum JoinReason {
    /// It opened the case.
    Opened,
    /// Its `case.key` is the case's.
    Key { key: String },
    /// It holds an observable the case has seen (`case.join_on`).
    Observable { observable: Observable },
    /// A run of the case called its playbook (`uses: playbook/<name>`): a sub-playbook's run.
    Called { by_run: String },
}

/// A case: the fold of its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: CaseId,
    pub title: String,
    pub severity: Severity,
    pub phase: Phase,
    pub key: String,
    pub opened_by: String,
    pub opened_at: Millis,
    pub updated_at: Millis,
    pub acknowledged: Option<Acknowledgement>,
    /// When it first reached containment (or a later phase other than closed).
    pub contained_at: Option<Millis>,
    /// When it first reached recovery (or a later phase other than closed).
    pub recovered_at: Option<Millis>,
    /// When it was closed, while it is.
    pub closed_at: Option<Millis>,
    pub alerts: Vec<CaseAlert>,
    pub observables: Vec<Sighting>,
    pub actions: Vec<Action>,
    /// Effects of the case's runs that were undone, or whose undo failed, in order.
    #[serde(default)]
    pub undone: Vec<Undone>,
    pub notes: Vec<Note>,
    pub phases: Vec<PhaseChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub by: String,
    pub at: Millis,
}

/// An alert of the case: the run it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseAlert {
    pub run_id: String,
    pub playbook: String,
    pub reason: JoinReason,
    pub joined_at: Millis,
    /// How its run ended, once it has.
    pub status: Option<String>,
    pub ended_at: Option<Millis>,
}

/// An observable and where the case first saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    #[serde(flatten)]
    pub observable: Observable,
    pub run_id: String,
    pub step: Option<String>,
    pub first_seen: Millis,
}

/// What a step that declares a phase did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub run_id: String,
    pub step: String,
    pub uses: String,
    pub phase: Phase,
    pub at: Millis,
}

/// An undo of a step's effect, as the case knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undone {
    pub run_id: String,
    pub step: String,
    pub succeeded: bool,
    pub error: Option<String>,
    pub by: Option<String>,
    pub at: Millis,
}

impl Case {
    /// The last undo of a run's step, if there was one.
    pub fn undo_of(&self, run_id: &str, step: &str) -> Option<&Undone> {
        self.undone
            .iter()
            .rev()
            .find(|undone| undone.run_id == run_id && undone.step == step)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub text: String,
    pub by: String,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseChange {
    pub from: Phase,
    pub to: Phase,
    pub by: String,
    pub reason: Option<String>,
    pub at: Millis,
}

/// A case as lists show it and the store indexes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub id: CaseId,
    pub title: String,
    pub severity: Severity,
    pub phase: Phase,
    pub playbooks: Vec<String>,
    pub opened_at: Millis,
    pub updated_at: Millis,
    pub alerts: usize,
    pub observables: usize,
    pub acknowledged_at: Option<Millis>,
}

/// What a person does to a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Acknowledge,
    Move { to: Phase, reason: Option<String> },
    Severity(Severity),
    Note(String),
}

/// What a run has done, as a case reads it: its state, and for each step the phase and action
/// its playbook gives it.
pub struct RunProgress<'a> {
    pub playbook: &'a str,
    pub state: &'a RunState,
    /// The phase and `uses` of a step (or handler), by id; `None` for steps without a phase or
    /// when the playbook is not at hand.
    pub phase_of: &'a dyn Fn(&str) -> Option<(Phase, String)>,
}

impl Case {
    /// The case its events add up to; `None` if they do not start with [`CaseEvent::Opened`].
    pub fn fold(id: CaseId, events: &[CaseEvent]) -> Option<Case> {
        let (first, rest) = events.split_first()?;
        let CaseEvent::Opened {
            title,
            severity,
            key,
            by,
            at,
        } = first
        else {
            return None;
        };
        let mut case = Case {
            id,
            title: title.clone(),
            severity: *severity,
            phase: Phase::DetectionAndAnalysis,
            key: key.clone(),
            opened_by: by.clone(),
            opened_at: *at,
            updated_at: *at,
            acknowledged: None,
            contained_at: None,
            recovered_at: None,
            closed_at: None,
            alerts: Vec::new(),
            observables: Vec::new(),
            actions: Vec::new(),
            undone: Vec::new(),
            notes: Vec::new(),
            phases: Vec::new(),
        };
        for event in rest {
            case.apply(event);
        }
        Some(case)
    }

    /// Adds one event to the case.
    pub fn apply(&mut self, event: &CaseEvent) {
        self.updated_at = self.updated_at.max(event.at());
        match event {
            CaseEvent::Opened { .. } => {}
            CaseEvent::AlertJoined {
                run_id,
                playbook,
                reason,
                at,
            } => self.alerts.push(CaseAlert {
                run_id: run_id.clone(),
                playbook: playbook.clone(),
                reason: reason.clone(),
                joined_at: *at,
                status: None,
                ended_at: None,
            }),
            CaseEvent::Observed {
                observables,
                run_id,
                step,
                at,
            } => {
                for observable in observables {
                    if self.observables.len() < MAX_OBSERVABLES && !self.knows(observable) {
                        self.observables.push(Sighting {
                            observable: observable.clone(),
                            run_id: run_id.clone(),
                            step: step.clone(),
                            first_seen: *at,
                        });
                    }
                }
            }
            CaseEvent::ActionTaken {
                run_id,
                step,
                uses,
                phase,
                at,
            } => self.actions.push(Action {
                run_id: run_id.clone(),
                step: step.clone(),
                uses: uses.clone(),
                phase: *phase,
                at: *at,
            }),
            CaseEvent::ActionUndone {
                run_id,
                step,
                succeeded,
                error,
                by,
                at,
            } => self.undone.push(Undone {
                run_id: run_id.clone(),
                step: step.clone(),
                succeeded: *succeeded,
                error: error.clone(),
                by: by.clone(),
                at: *at,
            }),
            CaseEvent::RunEnded { run_id, status, at } => {
                if let Some(alert) = self.alerts.iter_mut().find(|a| &a.run_id == run_id) {
                    alert.status = Some(status.clone());
                    alert.ended_at = Some(*at);
                }
            }
            CaseEvent::PhaseChanged {
                from,
                to,
                by,
                reason,
                at,
            } => {
                self.reach(*to, *at);
                self.phases.push(PhaseChange {
                    from: *from,
                    to: *to,
                    by: by.clone(),
                    reason: reason.clone(),
                    at: *at,
                });
            }
            CaseEvent::SeverityChanged { to, .. } => self.severity = *to,
            CaseEvent::Acknowledged { by, at } => {
                self.acknowledged.get_or_insert_with(|| Acknowledgement {
                    by: by.clone(),
                    at: *at,
                });
            }
            CaseEvent::NoteAdded { text, by, at } => self.notes.push(Note {
                text: text.clone(),
                by: by.clone(),
                at: *at,
            }),
        }
    }

    fn reach(&mut self, phase: Phase, at: Millis) {
        self.phase = phase;
        if phase == Phase::Closed {
            self.closed_at = Some(at);
            return;
        }
        self.closed_at = None;
        if phase >= Phase::Containment {
            self.contained_at.get_or_insert(at);
        }
        if phase >= Phase::Recovery {
            self.recovered_at.get_or_insert(at);
        }
    }

    pub fn is_open(&self) -> bool {
        self.phase != Phase::Closed
    }

    /// Whether a new alert may still join: open, and not full.
    pub fn takes_alerts(&self) -> bool {
        self.is_open() && self.alerts.len() < MAX_ALERTS
    }

    pub fn has_run(&self, run_id: &str) -> bool {
        self.alerts.iter().any(|alert| alert.run_id == run_id)
    }

    pub fn knows(&self, observable: &Observable) -> bool {
        self.observables
            .iter()
            .any(|sighting| &sighting.observable == observable)
    }

    /// The playbooks whose alerts are in the case, in the order they joined.
    pub fn playbooks(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.alerts
            .iter()
            .filter(|alert| seen.insert(alert.playbook.as_str()))
            .map(|alert| alert.playbook.clone())
            .collect()
    }

    pub fn summary(&self) -> CaseSummary {
        CaseSummary {
            id: self.id,
            title: self.title.clone(),
            severity: self.severity,
            phase: self.phase,
            playbooks: self.playbooks(),
            opened_at: self.opened_at,
            updated_at: self.updated_at,
            alerts: self.alerts.len(),
            observables: self.observables.len(),
            acknowledged_at: self.acknowledged.as_ref().map(|ack| ack.at),
        }
    }

    /// The events that open a case for an alert.
    pub fn opening(
        opening: &playbook::CaseOpening,
        playbook: &str,
        run_id: &str,
        observables: Vec<Observable>,
        at: Millis,
    ) -> Vec<CaseEvent> {
        let mut events = vec![
            CaseEvent::Opened {
                title: opening.title.clone(),
                severity: opening.severity,
                key: opening.key.clone(),
                by: format!("playbook:{playbook}"),
                at,
            },
            CaseEvent::AlertJoined {
                run_id: run_id.to_owned(),
                playbook: playbook.to_owned(),
                reason: JoinReason::Opened,
                at,
            },
        ];
        let observables: Vec<Observable> = observables.into_iter().take(MAX_OBSERVABLES).collect();
        if !observables.is_empty() {
            events.push(CaseEvent::Observed {
                observables,
                run_id: run_id.to_owned(),
                step: None,
                at,
            });
        }
        events
    }

    /// The events by which an alert joins this case.
    pub fn joining(
        &self,
        playbook: &str,
        run_id: &str,
        reason: JoinReason,
        observables: Vec<Observable>,
        at: Millis,
    ) -> Vec<CaseEvent> {
        let mut events = vec![CaseEvent::AlertJoined {
            run_id: run_id.to_owned(),
            playbook: playbook.to_owned(),
            reason,
            at,
        }];
        events.extend(self.observed(observables, run_id, None, at));
        events
    }

    /// An [`CaseEvent::Observed`] for those of `observables` the case has not seen and has room for.
    fn observed(
        &self,
        observables: Vec<Observable>,
        run_id: &str,
        step: Option<&str>,
        at: Millis,
    ) -> Option<CaseEvent> {
        let room = MAX_OBSERVABLES.saturating_sub(self.observables.len());
        let mut seen = HashSet::new();
        let new: Vec<Observable> = observables
            .into_iter()
            .filter(|observable| !self.knows(observable) && seen.insert(observable.clone()))
            .take(room)
            .collect();
        (!new.is_empty()).then(|| CaseEvent::Observed {
            observables: new,
            run_id: run_id.to_owned(),
            step: step.map(str::to_owned),
            at,
        })
    }

    /// What a run of the case did that the case has not recorded yet: the steps with a phase
    /// that succeeded (moving the case forward, never back, and never out of closed), what
    /// their outputs revealed, and how the run ended. Empty when there is nothing new, so it can
    /// be asked after every step of the run.
    pub fn progress(&self, run: &RunProgress<'_>, now: Millis) -> Vec<CaseEvent> {
        let state = run.state;
        let mut events = Vec::new();
        let mut steps: Vec<(&String, &runner::StepRecord)> = state
            .steps
            .iter()
            .filter(|(_, step)| step.status == StepStatus::Succeeded)
            .collect();
        steps.sort_by_key(|(id, step)| (step.finished_at, id.as_str()));
        let mut phase = self.phase;
        let mut known = self.clone();
        for (id, step) in steps {
            let at = step.finished_at.unwrap_or(now);
            let acted = known
                .actions
                .iter()
                .any(|action| action.run_id == state.run_id && &action.step == id);
            if !acted && let Some((step_phase, uses)) = (run.phase_of)(id) {
                let action = CaseEvent::ActionTaken {
                    run_id: state.run_id.clone(),
                    step: id.clone(),
                    uses,
                    phase: step_phase,
                    at,
                };
                known.apply(&action);
                events.push(action);
                if phase != Phase::Closed && step_phase > phase {
                    events.push(CaseEvent::PhaseChanged {
                        from: phase,
                        to: step_phase,
                        by: format!("playbook:{}", run.playbook),
                        reason: Some(format!("step `{id}` of run {} succeeded", state.run_id)),
                        at,
                    });
                    phase = step_phase;
                }
            }
            if let Some(output) = &step.output
                && let Some(observed) =
                    known.observed(observables::extract(output), &state.run_id, Some(id), at)
            {
                known.apply(&observed);
                events.push(observed);
            }
        }
        let mut undos: Vec<(&String, &runner::UndoState)> = state
            .steps
            .iter()
            .filter_map(|(id, step)| Some((id, step.undo.as_ref()?)))
            .collect();
        undos.sort_by_key(|(id, undo)| (undo.finished_at, id.as_str()));
        for (id, undo) in undos {
            let (Some(at), false) = (undo.finished_at, undo.status.is_open()) else {
                continue;
            };
            let known_undo = known
                .undo_of(&state.run_id, id)
                .is_some_and(|undone| undone.at == at);
            if !known_undo {
                let undone = CaseEvent::ActionUndone {
                    run_id: state.run_id.clone(),
                    step: id.clone(),
                    succeeded: undo.status == runner::UndoStatus::Succeeded,
                    error: undo.error.as_ref().map(ToString::to_string),
                    by: undo.requested_by.clone(),
                    at,
                };
                known.apply(&undone);
                events.push(undone);
            }
        }
        let ended = state.status.is_terminal()
            && known
                .alerts
                .iter()
                .find(|alert| alert.run_id == state.run_id)
                .is_some_and(|alert| alert.status.as_deref() != Some(state.status.as_str()));
        if ended {
            events.push(CaseEvent::RunEnded {
                run_id: state.run_id.clone(),
                status: state.status.as_str().to_owned(),
                at: state.finished_at.unwrap_or(now),
            });
        }
        events
    }

    /// The events recording that a run that never started was cancelled.
    pub fn cancelled_before_start(&self, run_id: &str, at: Millis) -> Vec<CaseEvent> {
        let recorded = self
            .alerts
            .iter()
            .find(|alert| alert.run_id == run_id)
            .is_some_and(|alert| alert.status.is_none());
        match recorded {
            true => vec![CaseEvent::RunEnded {
                run_id: run_id.to_owned(),
                status: RunStatus::Cancelled.as_str().to_owned(),
                at,
            }],
            false => Vec::new(),
        }
    }

    /// The events a person's change makes: the change, preceded by an acknowledgement if
    /// nobody has acknowledged the case yet. Acknowledging an acknowledged case changes nothing.
    pub fn change(&self, change: Change, by: &str, at: Millis) -> Result<Vec<CaseEvent>, Error> {
        let mut events = Vec::new();
        if self.acknowledged.is_none() {
            events.push(CaseEvent::Acknowledged {
                by: by.to_owned(),
                at,
            });
        }
        let by = by.to_owned();
        match change {
            Change::Acknowledge => {}
            Change::Move { to, reason } => {
                if to == self.phase {
                    return Err(Error::Unchanged(format!(
                        "case {} is already in {}",
                        self.id,
                        to.title()
                    )));
                }
                let reason = reason
                    .map(|reason| reason.trim().to_owned())
                    .filter(|reason| !reason.is_empty());
                if let Some(reason) = &reason {
                    check_text(reason)?;
                }
                events.push(CaseEvent::PhaseChanged {
                    from: self.phase,
                    to,
                    by,
                    reason,
                    at,
                });
            }
            Change::Severity(to) => {
                if to == self.severity {
                    return Err(Error::Unchanged(format!(
                        "case {} is already {to}",
                        self.id
                    )));
                }
                events.push(CaseEvent::SeverityChanged {
                    from: self.severity,
                    to,
                    by,
                    at,
                });
            }
            Change::Note(text) => {
                let text = text.trim().to_owned();
                check_text(&text)?;
                if self.notes.len() >= MAX_NOTES {
                    return Err(Error::Invalid(format!(
                        "case {} has {MAX_NOTES} notes, the most it takes",
                        self.id
                    )));
                }
                events.push(CaseEvent::NoteAdded { text, by, at });
            }
        }
        Ok(events)
    }

    /// How long it took to acknowledge, contain, recover and close, in milliseconds from
    /// opening (each `None` until it happens).
    pub fn durations(&self) -> Durations {
        let since_open = |at: Option<Millis>| at.map(|at| at.saturating_sub(self.opened_at));
        Durations {
            to_acknowledge_ms: since_open(self.acknowledged.as_ref().map(|ack| ack.at)),
            to_contain_ms: since_open(self.contained_at),
            to_recover_ms: since_open(self.recovered_at),
            to_close_ms: since_open(self.closed_at),
        }
    }
}

/// The times that measure how an incident was handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    pub to_acknowledge_ms: Option<u64>,
    pub to_contain_ms: Option<u64>,
    pub to_recover_ms: Option<u64>,
    pub to_close_ms: Option<u64>,
}

fn check_text(text: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Err(Error::Invalid("the text is empty".into()));
    }
    let chars = text.chars().count();
    if chars > MAX_NOTE_CHARS {
        return Err(Error::Invalid(format!(
            "the text has {chars} characters; at most {MAX_NOTE_CHARS} are allowed"
        )));
    }
    Ok(())
}
