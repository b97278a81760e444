//! A run's timeline: its audit records with the state of their hash chain, as the API serves it
//! and `riposte audit export` prints it.

use serde::Serialize;

use crate::error::Error;

/// A run's audit records with the state of their hash chain.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub run_id: String,
    pub chain: ChainState,
    pub records: Vec<TimelineRecord>,
}

#[derive(Debug, Serialize)]
pub struct ChainState {
    pub intact: bool,
    pub records: usize,
    pub broken: Option<Broken>,
}

#[derive(Debug, Serialize)]
pub struct Broken {
    pub position: usize,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct TimelineRecord {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    /// The event as stored (`null` if it is not JSON: it was tampered with).
    pub event: serde_json::Value,
}

/// A run's timeline, or `None` when the run has no journal.
pub async fn timeline(store: &dyn store::Store, run_id: &str) -> Result<Option<Timeline>, Error> {
    let records = store.audit_records(run_id).await?;
    if records.is_empty() {
        return Ok(None);
    }
    let broken = store::audit::verify(run_id, &records).err();
    Ok(Some(Timeline {
        run_id: run_id.to_owned(),
        chain: ChainState {
            intact: broken.is_none(),
            records: records.len(),
            broken: broken.map(|broken| Broken {
                position: broken.position,
                reason: broken.reason,
            }),
        },
        records: records
            .into_iter()
            .map(|record| TimelineRecord {
                seq: record.seq,
                event: serde_json::from_str(&record.event).unwrap_or(serde_json::Value::Null),
                prev: record.prev,
                hash: record.hash,
            })
            .collect(),
    }))
}
