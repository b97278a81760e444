//! The tamper-evident chain over a run's journal.
//!
//! Every record carries its position (`seq`, from 1), the hash of the record before it (`prev`;
//! 64 zeros for the first) and its own hash: SHA-256 over a version tag, the run id, `seq`, `prev`
//! and the event exactly as stored. Editing a record changes its hash; deleting, inserting or
//! reordering records breaks a `seq` or a `prev` link. What the chain cannot show by itself is a
//! cut tail: dropping the last records leaves a valid, shorter chain (docs/audit.md).
//!
//! The global trail is one more chain, hashed under the id [`TRAIL`]: calls to the management
//! API, and a seal for every run that ends (its number of records and its last hash), written
//! atomically with the run's last record. [`verify_store`] checks both: the trail, every run's
//! chain, and every run against its seal, so a cut tail or a deleted run shows too.

use std::collections::HashMap;

use runner::{Millis, RunEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Store};

/// The id the global trail's records are hashed under (run ids are UUIDs: they never clash).
pub const TRAIL: &str = "trail";

/// A record of the global trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TrailEntry {
    /// A run ended: its journal had `records` records, the last with hash `head`.
    RunSealed {
        run_id: String,
        status: String,
        records: u64,
        head: String,
        at: Millis,
    },
    /// A call to the management API by an authenticated token, allowed or refused.
    ApiCall {
        actor: String,
        role: String,
        method: String,
        path: String,
        status: u16,
        at: Millis,
    },
}

/// `prev` of a run's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One record of a run's journal, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    /// The event's JSON, byte for byte as it was hashed.
    pub event: String,
}

/// Where a chain breaks first, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {position} of {}: {reason}", chain_name(.run_id))]
pub struct ChainBreak {
    /// The run's id, or the chain's (`case:<n>`, `trail`).
    pub run_id: String,
    /// The record's position in the journal as read (from 1).
    pub position: usize,
    pub reason: String,
}

/// A chain as people name it: `run <id>`, `case <n>`, `the trail`.
fn chain_name(id: &str) -> String {
    match id {
        TRAIL => "the trail".to_owned(),
        id => match id.strip_prefix("case:") {
            Some(case) => format!("case {case}"),
            None => format!("run {id}"),
        },
    }
}

/// The hash of a record, hex.
pub fn record_hash(run_id: &str, seq: u64, prev: &str, event: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"riposte-audit-v1\n");
    for part in [run_id, &seq.to_string(), prev, event] {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    data_encoding::HEXLOWER.encode(&hasher.finalize())
}

/// Checks a run's records in the order they were read; returns how many there are.
pub fn verify(run_id: &str, records: &[AuditRecord]) -> Result<usize, ChainBreak> {
    let mut chain = Chain::new(run_id);
    for record in records {
        chain.check(record)?;
    }
    Ok(chain.position)
}

/// A chain checked record by record (the trail is read in pages).
struct Chain<'a> {
    id: &'a str,
    prev: String,
    position: usize,
}

impl<'a> Chain<'a> {
    fn new(id: &'a str) -> Self {
        Chain {
            id,
            prev: GENESIS.to_owned(),
            position: 0,
        }
    }

    fn check(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        self.position += 1;
        let broken = |reason: String| ChainBreak {
            run_id: self.id.to_owned(),
            position: self.position,
            reason,
        };
        if record.seq != self.position as u64 {
            return Err(broken(format!(
                "it says it is record {}: records before it were deleted, or records were reordered",
                record.seq
            )));
        }
        if record.prev != self.prev {
            return Err(broken(
                "it does not link to the record before it: that one was replaced, or records were removed or reordered"
                    .into(),
            ));
        }
        if record.hash != record_hash(self.id, record.seq, &record.prev, &record.event) {
            return Err(broken(
                "its content does not match its hash: it was edited".into(),
            ));
        }
        self.prev.clone_from(&record.hash);
        Ok(())
    }
}

/// Links `events` (JSON) to a chain whose last record is `head` (`seq`, hash).
pub fn link(id: &str, head: (u64, &str), events: Vec<String>) -> Vec<AuditRecord> {
    let (mut seq, mut prev) = (head.0, head.1.to_owned());
    events
        .into_iter()
        .map(|event| {
            seq += 1;
            let hash = record_hash(id, seq, &prev, &event);
            AuditRecord {
                seq,
                prev: std::mem::replace(&mut prev, hash.clone()),
                hash,
                event,
            }
        })
        .collect()
}

/// The seal for a batch of a run's records, if the batch ends the run or one of its undos.
pub(crate) fn seal(
    run_id: &str,
    events: &[RunEvent],
    linked: &[AuditRecord],
) -> Option<TrailEntry> {
    Some(sealed(run_id, seal_status(events)?, linked.last()?))
}

/// The status a batch of a run's events seals it with, if the batch ends the run or one of its
/// undos.
pub(crate) fn seal_status(events: &[RunEvent]) -> Option<&'static str> {
    events.iter().rev().find_map(|event| match event {
        RunEvent::RunFinished { status, .. } => Some(status.as_str()),
        RunEvent::RunCancelled { .. } => Some("cancelled"),
        RunEvent::UndoSucceeded { .. } => Some("undone"),
        RunEvent::UndoFailed { .. } => Some("undo_failed"),
        _ => None,
    })
}

/// The seal of a run whose journal now ends with `last`.
pub(crate) fn sealed(run_id: &str, status: &str, last: &AuditRecord) -> TrailEntry {
    TrailEntry::RunSealed {
        run_id: run_id.to_owned(),
        status: status.to_owned(),
        records: last.seq,
        head: last.hash.clone(),
        at: crate::now_millis(),
    }
}

/// What [`verify_store`] found.
#[derive(Debug, Default)]
pub struct Verification {
    pub trail_records: usize,
    pub runs: usize,
    pub cases: usize,
    pub case_records: usize,
    pub records: usize,
    pub sealed: usize,
    /// Every chain that is broken, at its first broken record; runs that disagree with their seal.
    pub problems: Vec<ChainBreak>,
}

/// Checks the global trail, every run's chain, every run against its seal, and every case's
/// chain.
pub async fn verify_store(store: &dyn Store) -> Result<Verification, Error> {
    let mut report = Verification::default();
    let mut trail = Chain::new(TRAIL);
    let mut trail_intact = true;
    let mut seals: HashMap<String, (u64, String)> = HashMap::new();
    let mut after = None;
    loop {
        let page = store.trail_page(after.as_deref(), 1_000).await?;
        for record in &page.records {
            report.trail_records += 1;
            if trail_intact && let Err(broken) = trail.check(record) {
                report.problems.push(broken);
                trail_intact = false;
            }
            if let Ok(TrailEntry::RunSealed {
                run_id,
                records,
                head,
                ..
            }) = serde_json::from_str(&record.event)
            {
                seals.insert(run_id, (records, head));
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    for run_id in store.run_ids().await? {
        report.runs += 1;
        let records = store.audit_records(&run_id).await?;
        report.records += records.len();
        if let Err(broken) = verify(&run_id, &records) {
            report.problems.push(broken);
            seals.remove(&run_id);
            continue;
        }
        if let Some(problem) = record_mismatch(store, &run_id, &records).await? {
            report.problems.push(problem);
        }
        let ended = records.last().is_some_and(|record| {
            serde_json::from_str::<RunEvent>(&record.event).is_ok_and(|event| event.seals())
        });
        let problem = |position: usize, reason: String| ChainBreak {
            run_id: run_id.clone(),
            position,
            reason,
        };
        match seals.remove(&run_id) {
            Some((sealed, head)) => {
                report.sealed += 1;
                let at_seal = usize::try_from(sealed)
                    .ok()
                    .and_then(|n| records.get(n.checked_sub(1)?));
                match at_seal {
                    None => report.problems.push(problem(
                        records.len() + 1,
                        format!(
                            "the run was sealed at {sealed} records but its journal has {}: records were cut from its end",
                            records.len()
                        ),
                    )),
                    Some(record) if record.hash != head => report.problems.push(problem(
                        sealed as usize,
                        "it is not the record the run was sealed with: the journal was rewritten".into(),
                    )),
                    Some(_) => {}
                }
            }
            None if ended => report.problems.push(problem(
                records.len(),
                "the run ended but the trail holds no seal for it: the trail's tail was cut".into(),
            )),
            None => {}
        }
    }
    for case in store.case_ids().await? {
        report.cases += 1;
        let records = store.case_records(case).await?;
        report.case_records += records.len();
        if let Err(broken) = verify(&cases::chain_id(case), &records) {
            report.problems.push(broken);
        }
    }
    for (run_id, (sealed, _)) in seals {
        report.problems.push(ChainBreak {
            run_id,
            position: 1,
            reason: format!(
                "the trail sealed this run at {sealed} records, but the run is gone from the store"
            ),
        });
    }
    Ok(report)
}

/// Where the run record (its playbook and event columns) or the started run's event disagrees
/// with what the run's first record says was accepted.
async fn record_mismatch(
    store: &dyn Store,
    run_id: &str,
    records: &[AuditRecord],
) -> Result<Option<ChainBreak>, Error> {
    let problem = |position: usize, reason: &str| {
        Some(ChainBreak {
            run_id: run_id.to_owned(),
            position,
            reason: reason.to_owned(),
        })
    };
    let Some(Ok(RunEvent::RunAccepted {
        playbook: Some(playbook),
        event_sha256: Some(digest),
        ..
    })) = records
        .first()
        .map(|record| serde_json::from_str::<RunEvent>(&record.event))
    else {
        // Written before the record covered the run's columns: nothing to compare.
        return Ok(None);
    };
    let Some(run) = store.run(run_id).await? else {
        return Ok(problem(1, "the run's record is gone from the store"));
    };
    if run.playbook != playbook || runner::event_digest(&run.event) != digest {
        return Ok(problem(
            1,
            "the run record's playbook or event is not what was accepted: the record was edited",
        ));
    }
    for (index, record) in records.iter().enumerate() {
        if let Ok(RunEvent::RunStarted {
            playbook: started,
            event,
            ..
        }) = serde_json::from_str::<RunEvent>(&record.event)
            && (started != playbook || runner::event_digest(&event) != digest)
        {
            return Ok(problem(
                index + 1,
                "the run started with another playbook or event than was accepted",
            ));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
