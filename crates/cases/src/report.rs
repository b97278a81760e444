//! The post-incident report: a case's timeline across all its runs, every action and decision
//! with who and when, its observables, what was contained, and the state of the audit chains
//! it rests on. [`Report`] is the JSON form; [`Report::markdown`] the one people read.
//!
//! Alert values are attacker-controlled: the Markdown escapes every value it did not write
//! itself, so a report shows an alert's `<script>` or `[link](javascript:…)` as text.

use std::time::{Duration, UNIX_EPOCH};

use runner::{Decision, Millis, RunEvent, RunState};
use serde::Serialize;

use crate::{Action, Case, Durations, Phase};

/// The state of one hash chain, as verified when the report was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub intact: bool,
    pub records: usize,
    /// Where and how it breaks, if it does.
    pub broken: Option<String>,
}

/// What the report needs of one run of the case.
pub struct RunMaterial {
    pub run_id: String,
    pub playbook: String,
    pub accepted_at: Millis,
    pub events: Vec<RunEvent>,
    pub chain: Chain,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub case: Case,
    pub durations: Durations,
    /// The case's own chain.
    pub chain: Chain,
    pub runs: Vec<RunOutline>,
    pub timeline: Vec<Moment>,
    pub decisions: Vec<DecisionRecord>,
    /// The steps of the containment phase that succeeded: what was contained.
    pub contained: Vec<Action>,
    pub generated_at: Millis,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunOutline {
    pub run_id: String,
    pub playbook: String,
    pub status: String,
    pub accepted_at: Millis,
    pub finished_at: Option<Millis>,
    pub chain: Chain,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moment {
    pub at: Millis,
    /// `case`, or the run it happened in.
    pub source: String,
    pub by: Option<String>,
    pub what: String,
}

/// An approval decision in one of the case's runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    pub run_id: String,
    pub step: String,
    /// `approved`, `denied` or `timed_out`.
    pub decision: &'static str,
    pub by: Option<String>,
    pub note: Option<String>,
    pub at: Millis,
}

impl Report {
    /// The report of `case`, whose own records are `case_events` (as [`Case::fold`] read them),
    /// from the material of its runs.
    pub fn assemble(
        case: Case,
        case_events: &[crate::CaseEvent],
        chain: Chain,
        runs: Vec<RunMaterial>,
        generated_at: Millis,
    ) -> Report {
        let mut timeline: Vec<Moment> = case_events
            .iter()
            .map(|event| Moment {
                at: event.at(),
                source: "case".to_owned(),
                by: event.actor().map(str::to_owned),
                what: event.describe(),
            })
            .collect();
        let mut decisions = Vec::new();
        let mut outlines = Vec::new();
        for run in runs {
            for event in &run.events {
                timeline.push(Moment {
                    at: event.at(),
                    source: run.run_id.clone(),
                    by: event.actor().map(str::to_owned),
                    what: event.describe(),
                });
                if let RunEvent::ApprovalDecided { step, decision, at } = event {
                    let (name, note) = match decision {
                        Decision::Approved { comment, .. } => ("approved", comment.clone()),
                        Decision::Denied { reason, .. } => ("denied", reason.clone()),
                        Decision::TimedOut => ("timed_out", None),
                    };
                    decisions.push(DecisionRecord {
                        run_id: run.run_id.clone(),
                        step: step.clone(),
                        decision: name,
                        by: decision.by().map(str::to_owned),
                        note,
                        at: *at,
                    });
                }
            }
            let state = RunState::from_events(&run.events);
            let status = match (&state, RunEvent::cancelled_by(&run.events)) {
                (Some(state), _) => state.status.as_str(),
                (None, Some(_)) => "cancelled",
                (None, None) => "queued",
            };
            outlines.push(RunOutline {
                status: status.to_owned(),
                finished_at: state.as_ref().and_then(|state| state.finished_at),
                run_id: run.run_id,
                playbook: run.playbook,
                accepted_at: run.accepted_at,
                chain: run.chain,
            });
        }
        // Stable: events of one source keep their journal order when times tie.
        timeline.sort_by_key(|moment| moment.at);
        decisions.sort_by_key(|decision| decision.at);
        let contained = case
            .actions
            .iter()
            .filter(|action| action.phase == Phase::Containment)
            .cloned()
            .collect();
        Report {
            durations: case.durations(),
            case,
            chain,
            runs: outlines,
            timeline,
            decisions,
            contained,
            generated_at,
        }
    }

    /// The report for people: Markdown, every value from outside escaped.
    pub fn markdown(&self) -> String {
        let case = &self.case;
        let mut text = format!("# Case {}: {}\n\n", case.id, md(&case.title));
        text.push_str(&format!(
            "Generated {} by Riposte.\n\n| | |\n|---|---|\n",
            time(self.generated_at)
        ));
        let after = |at: Option<Millis>, took: Option<u64>| match (at, took) {
            (Some(at), Some(took)) => format!("{} (after {})", time(at), span(took)),
            _ => "—".to_owned(),
        };
        let durations = &self.durations;
        let rows = [
            ("Severity", case.severity.to_string()),
            ("Phase", case.phase.title().to_owned()),
            (
                "Opened",
                format!("{} by {}", time(case.opened_at), md(&case.opened_by)),
            ),
            (
                "Acknowledged",
                match &case.acknowledged {
                    Some(ack) => format!(
                        "{} by {}",
                        after(Some(ack.at), durations.to_acknowledge_ms),
                        md(&ack.by)
                    ),
                    None => "—".to_owned(),
                },
            ),
            (
                "Contained",
                after(case.contained_at, durations.to_contain_ms),
            ),
            (
                "Recovered",
                after(case.recovered_at, durations.to_recover_ms),
            ),
            ("Closed", after(case.closed_at, durations.to_close_ms)),
            ("Key", format!("`{}`", code(&case.key))),
            (
                "Playbooks",
                case.playbooks()
                    .iter()
                    .map(|name| md(name))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("Audit", self.audit_line()),
        ];
        for (name, value) in rows {
            text.push_str(&format!("| {name} | {value} |\n"));
        }

        text.push_str("\n## Alerts and runs\n\n| Run | Playbook | Joined | Why | Status | Chain |\n|---|---|---|---|---|---|\n");
        for alert in &case.alerts {
            let outline = self.runs.iter().find(|run| run.run_id == alert.run_id);
            let why = match &alert.reason {
                crate::JoinReason::Opened => "opened the case".to_owned(),
                crate::JoinReason::Key { key } => format!("same key `{}`", code(key)),
                crate::JoinReason::Observable { observable } => {
                    format!("shared {} `{}`", observable.kind, code(&observable.value))
                }
                crate::JoinReason::Called { by_run } => format!("called by run {}", md(by_run)),
            };
            text.push_str(&format!(
                "| {} | {} | {} | {why} | {} | {} |\n",
                md(&alert.run_id),
                md(&alert.playbook),
                time(alert.joined_at),
                outline.map_or("?", |run| run.status.as_str()),
                outline.map_or("?".to_owned(), |run| chain_text(&run.chain)),
            ));
        }

        text.push_str("\n## Actions\n\n");
        if case.actions.is_empty() {
            text.push_str("No step with a phase has succeeded.\n");
        } else {
            text.push_str("| When | Phase | Step | Action | Run |\n|---|---|---|---|---|\n");
            for action in &case.actions {
                text.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    time(action.at),
                    action.phase.title(),
                    md(&action.step),
                    md(&action.uses),
                    md(&action.run_id)
                ));
            }
        }
        text.push_str("\n### Contained\n\n");
        if self.contained.is_empty() {
            text.push_str("Nothing was contained by a playbook step.\n");
        }
        for action in &self.contained {
            let now = match case.undo_of(&action.run_id, &action.step) {
                Some(undone) => {
                    let why = match &undone.by {
                        Some(by) => format!("asked by {}", md(by)),
                        None => "expired".to_owned(),
                    };
                    match (undone.succeeded, &undone.error) {
                        (true, _) => format!("undone {} ({why})", time(undone.at)),
                        (false, Some(error)) => {
                            format!("**undo failed** {} ({why}): {}", time(undone.at), md(error))
                        }
                        (false, None) => format!("**undo failed** {} ({why})", time(undone.at)),
                    }
                }
                None => "still in place".to_owned(),
            };
            text.push_str(&format!(
                "- {}: `{}` by step {} of run {}; {now}\n",
                time(action.at),
                code(&action.uses),
                md(&action.step),
                md(&action.run_id)
            ));
        }

        text.push_str("\n## Decisions\n\n");
        if self.decisions.is_empty() {
            text.push_str("No approval was asked for.\n");
        } else {
            text.push_str(
                "| When | Run | Step | Decision | By | Note |\n|---|---|---|---|---|---|\n",
            );
            for decision in &self.decisions {
                text.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    time(decision.at),
                    md(&decision.run_id),
                    md(&decision.step),
                    decision.decision,
                    decision.by.as_deref().map_or("the deadline".to_owned(), md),
                    decision.note.as_deref().map_or(String::new(), md),
                ));
            }
        }

        text.push_str("\n## Phases\n\n");
        if case.phases.is_empty() {
            text.push_str("The case has not moved from Detection and analysis.\n");
        }
        for change in &case.phases {
            text.push_str(&format!(
                "- {}: {} → {} by {}{}\n",
                time(change.at),
                change.from.title(),
                change.to.title(),
                md(&change.by),
                change
                    .reason
                    .as_deref()
                    .map_or(String::new(), |reason| format!(" ({})", md(reason)))
            ));
        }

        text.push_str("\n## Observables\n\n");
        if case.observables.is_empty() {
            text.push_str("None were found.\n");
        } else {
            text.push_str("| Type (OCSF) | Value | First seen | Where |\n|---|---|---|---|\n");
            for sighting in &case.observables {
                let place = match &sighting.step {
                    Some(step) => format!("output of {} in run {}", md(step), md(&sighting.run_id)),
                    None => format!("alert of run {}", md(&sighting.run_id)),
                };
                text.push_str(&format!(
                    "| {} ({}) | `{}` | {} | {place} |\n",
                    sighting.observable.kind,
                    sighting.observable.kind.ocsf_id(),
                    code(&sighting.observable.value),
                    time(sighting.first_seen)
                ));
            }
        }

        text.push_str("\n## Notes\n\n");
        if case.notes.is_empty() {
            text.push_str("No notes.\n");
        }
        for note in &case.notes {
            text.push_str(&format!(
                "- {} by {}: {}\n",
                time(note.at),
                md(&note.by),
                md(&note.text)
            ));
        }

        text.push_str("\n## Timeline\n\n| When (UTC) | Where | Who | What |\n|---|---|---|---|\n");
        for moment in &self.timeline {
            text.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                time(moment.at),
                md(&moment.source),
                moment.by.as_deref().map_or(String::new(), md),
                md(&moment.what)
            ));
        }
        text
    }

    fn audit_line(&self) -> String {
        let broken = self.runs.iter().filter(|run| !run.chain.intact).count();
        format!(
            "case chain {}; {} run chain(s) intact, {broken} broken",
            chain_text(&self.chain),
            self.runs.len() - broken
        )
    }
}

fn chain_text(chain: &Chain) -> String {
    match &chain.broken {
        None => format!("intact ({} records)", chain.records),
        Some(reason) => format!("**BROKEN**: {}", md(reason)),
    }
}

/// A time as people read it (UTC, to the second).
pub fn time(at: Millis) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at)).to_string()
}

/// A duration to the second.
pub fn span(millis: u64) -> String {
    humantime::format_duration(Duration::from_secs(millis / 1000)).to_string()
}

/// Text that Markdown shows as it is: no emphasis, links, HTML or table breaks.
fn md(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '\n' | '\r' | '\t' => escaped.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '|' | '!' | '~' | '{' | '}' => {
                escaped.push('\\');
                escaped.push(c);
            }
            c if c.is_control() => {}
            c => escaped.push(c),
        }
    }
    escaped
}

/// Text for inside a code span: it cannot end the span or the table cell.
fn code(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '`' => '\'',
            '|' => '¦',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escapes_what_it_did_not_write() {
        assert_eq!(
            md("<script>alert(1)</script> [x](javascript:alert(1)) | *b*\nnext"),
            "&lt;script&gt;alert\\(1\\)&lt;/script&gt; \\[x\\]\\(javascript:alert\\(1\\)\\) \\| \\*b\\* next"
        );
        assert_eq!(code("a`b|c\nd"), "a'b¦c d");
    }
}
