//! The tamper-evident chain over a run's journal.
//!
//! Every record carries its position (`seq`, from 1), the hash of the record before it (`prev`;
//! 64 zeros for the first) and its own hash: SHA-256 over a version tag, the run id, `seq`, `prev`
//! and the event exactly as stored. Editing a record changes its hash; deleting, inserting or
//! reordering records breaks a `seq` or a `prev` link. What the chain cannot show by itself is a
//! cut tail: dropping the last records leaves a valid, shorter chain (docs/audit.md).

use sha2::{Digest, Sha256};

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

/// Where a run's chain breaks first, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {position} of run {run_id}: {reason}")]
pub struct ChainBreak {
    pub run_id: String,
    /// The record's position in the journal as read (from 1).
    pub position: usize,
    pub reason: String,
}

/// The hash of a record, hex.
pub fn record_hash(run_id: &str, seq: u64, prev: &str, event: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"riposte-audit-v1\n");
    for part in [run_id, &seq.to_string(), prev, event] {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Checks a run's records in the order they were read; returns how many there are.
pub fn verify(run_id: &str, records: &[AuditRecord]) -> Result<usize, ChainBreak> {
    let mut prev = GENESIS;
    for (index, record) in records.iter().enumerate() {
        let position = index + 1;
        let broken = |reason: String| ChainBreak {
            run_id: run_id.to_owned(),
            position,
            reason,
        };
        if record.seq != position as u64 {
            return Err(broken(format!(
                "it says it is record {}: records before it were deleted, or records were reordered",
                record.seq
            )));
        }
        if record.prev != prev {
            return Err(broken(
                "it does not link to the record before it: that one was replaced, or records were removed or reordered"
                    .into(),
            ));
        }
        if record.hash != record_hash(run_id, record.seq, &record.prev, &record.event) {
            return Err(broken(
                "its content does not match its hash: it was edited".into(),
            ));
        }
        prev = &record.hash;
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests;
