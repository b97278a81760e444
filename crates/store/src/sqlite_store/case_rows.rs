//! Cases in SQLite: a row per case (its summary and the columns lists filter on), its chained
//! events, the keys and observables alerts find it by, and which case each run joined.

use std::collections::BTreeMap;

use cases::{CaseId, CaseSummary, Observable, Phase};
use runner::Millis;
use rusqlite::{Connection, OptionalExtension, params};

use crate::audit::{self, AuditRecord, GENESIS};
use crate::error::Error;
use crate::{CaseMatch, CaseQuery, CaseWrite, OBSERVABLES_KEPT_MS};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY,
    phase TEXT NOT NULL,
    severity TEXT NOT NULL,
    open INTEGER NOT NULL,
    alerts INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_listed ON cases (open DESC, updated_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS case_ids (id INTEGER PRIMARY KEY AUTOINCREMENT);
CREATE TABLE IF NOT EXISTS case_playbooks (
    playbook TEXT NOT NULL,
    case_id INTEGER NOT NULL,
    PRIMARY KEY (playbook, case_id)
);
CREATE TABLE IF NOT EXISTS case_events (
    case_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (case_id, seq)
);
CREATE TABLE IF NOT EXISTS case_keys (
    key TEXT PRIMARY KEY,
    case_id INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS case_keys_by_expiry ON case_keys (expires_at);
CREATE TABLE IF NOT EXISTS case_observables (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    case_id INTEGER NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value, case_id)
);
CREATE INDEX IF NOT EXISTS case_observables_by_time ON case_observables (seen_at);
CREATE TABLE IF NOT EXISTS run_cases (
    run_id TEXT PRIMARY KEY,
    case_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    deadline INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE INDEX IF NOT EXISTS approvals_by_deadline ON approvals (deadline);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
";

pub(super) fn next_id(connection: &Connection) -> Result<CaseId, Error> {
    connection
        .prepare_cached("INSERT INTO case_ids DEFAULT VALUES")?
        .execute([])?;
    let id = connection.last_insert_rowid();
    // AUTOINCREMENT remembers the highest id on its own: the rows are not needed.
    connection
        .prepare_cached("DELETE FROM case_ids WHERE id < ?1")?
        .execute(params![id])?;
    Ok(id as CaseId)
}

pub(super) fn write(connection: &mut Connection, write: &CaseWrite) -> Result<bool, Error> {
    let events = write
        .events
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::corrupt("case event", error))?;
    let summary =
        serde_json::to_string(&write.summary).map_err(|error| Error::corrupt("case", error))?;
    let case = write.case as i64;
    let transaction = super::Savepoint::open(connection)?;
    let head: (i64, String) = transaction
        .prepare_cached(
            "SELECT seq, hash FROM case_events WHERE case_id = ?1 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![case], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .unwrap_or((0, GENESIS.to_owned()));
    if (head.0 as u64, head.1.as_str()) != (write.head.0, write.head.1.as_str()) {
        return Ok(false);
    }
    if let Some(run_id) = &write.run {
        let joined = transaction
            .prepare_cached("INSERT OR IGNORE INTO run_cases (run_id, case_id) VALUES (?1, ?2)")?
            .execute(params![run_id, case])?;
        if joined == 0 {
            return Ok(false);
        }
    }
    if let Some(key) = &write.key {
        if key.exclusive {
            let other: Option<i64> = transaction
                .prepare_cached(
                    "SELECT k.case_id FROM case_keys k JOIN cases c ON c.id = k.case_id
                     WHERE k.key = ?1 AND k.expires_at > ?2 AND k.case_id != ?3
                       AND c.open = 1 AND c.alerts < ?4",
                )?
                .query_row(
                    params![key.key, write.at as i64, case, cases::MAX_ALERTS as i64],
                    |row| row.get(0),
                )
                .optional()?;
            if other.is_some() {
                return Ok(false);
            }
        }
        transaction
            .prepare_cached(
                "INSERT INTO case_keys (key, case_id, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET case_id = excluded.case_id,
                   expires_at = excluded.expires_at",
            )?
            .execute(params![key.key, case, key.expires_at as i64])?;
    }
    let linked = audit::link(
        &cases::chain_id(write.case),
        (write.head.0, &write.head.1),
        events,
    );
    let mut insert = transaction.prepare_cached(
        "INSERT INTO case_events (case_id, seq, event, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for record in &linked {
        insert.execute(params![
            case,
            record.seq as i64,
            record.event,
            record.prev,
            record.hash
        ])?;
    }
    drop(insert);
    let listed = &write.summary;
    transaction
        .prepare_cached(
            "INSERT INTO cases (id, phase, severity, open, alerts, updated_at, summary)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET phase = excluded.phase,
               severity = excluded.severity, open = excluded.open, alerts = excluded.alerts,
               updated_at = excluded.updated_at, summary = excluded.summary",
        )?
        .execute(params![
            case,
            listed.phase.as_str(),
            listed.severity.as_str(),
            listed.phase != Phase::Closed,
            listed.alerts as i64,
            listed.updated_at as i64,
            summary
        ])?;
    for playbook in &listed.playbooks {
        transaction
            .prepare_cached(
                "INSERT OR IGNORE INTO case_playbooks (playbook, case_id) VALUES (?1, ?2)",
            )?
            .execute(params![playbook, case])?;
    }
    for observable in &write.seen {
        transaction
            .prepare_cached(
                "INSERT INTO case_observables (kind, value, case_id, seen_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, value, case_id)
                 DO UPDATE SET seen_at = MAX(seen_at, excluded.seen_at)",
            )?
            .execute(params![
                observable.kind.as_str(),
                observable.value,
                case,
                write.at as i64
            ])?;
    }
    // What no alert can find a case by any more.
    transaction
        .prepare_cached("DELETE FROM case_keys WHERE expires_at <= ?1")?
        .execute(params![write.at as i64])?;
    transaction
        .prepare_cached("DELETE FROM case_observables WHERE seen_at < ?1")?
        .execute(params![write.at.saturating_sub(OBSERVABLES_KEPT_MS) as i64])?;
    transaction.commit()?;
    Ok(true)
}

pub(super) fn records(connection: &Connection, case: CaseId) -> Result<Vec<AuditRecord>, Error> {
    let mut statement = connection.prepare_cached(
        "SELECT seq, prev, hash, event FROM case_events WHERE case_id = ?1 ORDER BY seq",
    )?;
    let rows = statement.query_map(params![case as i64], |row| super::audit_record(row, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn find(
    connection: &Connection,
    key: &str,
    observables: &[Observable],
    seen_since: Millis,
    now: Millis,
) -> Result<Option<CaseMatch>, Error> {
    let by_key: Option<i64> = connection
        .prepare_cached(
            "SELECT k.case_id FROM case_keys k JOIN cases c ON c.id = k.case_id
             WHERE k.key = ?1 AND k.expires_at > ?2 AND c.open = 1 AND c.alerts < ?3",
        )?
        .query_row(params![key, now as i64, cases::MAX_ALERTS as i64], |row| {
            row.get(0)
        })
        .optional()?;
    if let Some(case) = by_key {
        return Ok(Some(CaseMatch {
            case: case as CaseId,
            by: None,
        }));
    }
    let mut best: Option<(i64, i64, &Observable)> = None;
    let mut statement = connection.prepare_cached(
        "SELECT o.case_id, o.seen_at FROM case_observables o JOIN cases c ON c.id = o.case_id
         WHERE o.kind = ?1 AND o.value = ?2 AND o.seen_at >= ?3 AND c.open = 1 AND c.alerts < ?4
         ORDER BY o.seen_at DESC, o.case_id DESC LIMIT 1",
    )?;
    for observable in observables {
        let found: Option<(i64, i64)> = statement
            .query_row(
                params![
                    observable.kind.as_str(),
                    observable.value,
                    seen_since as i64,
                    cases::MAX_ALERTS as i64
                ],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((case, seen_at)) = found
            && best.is_none_or(|(_, best_seen, _)| seen_at > best_seen)
        {
            best = Some((case, seen_at, observable));
        }
    }
    Ok(best.map(|(case, _, observable)| CaseMatch {
        case: case as CaseId,
        by: Some(observable.clone()),
    }))
}

pub(super) fn case_of_run(connection: &Connection, run_id: &str) -> Result<Option<CaseId>, Error> {
    Ok(connection
        .prepare_cached("SELECT case_id FROM run_cases WHERE run_id = ?1")?
        .query_row(params![run_id], |row| row.get::<_, i64>(0))
        .optional()?
        .map(|case| case as CaseId))
}

pub(super) fn list(connection: &Connection, query: &CaseQuery) -> Result<Vec<CaseSummary>, Error> {
    let mut statement = connection.prepare_cached(
        "SELECT summary FROM cases
         WHERE (?1 IS NULL OR phase = ?1) AND (?2 IS NULL OR severity = ?2)
           AND (?3 IS NULL OR id IN (SELECT case_id FROM case_playbooks WHERE playbook = ?3))
         ORDER BY open DESC, updated_at DESC, id DESC LIMIT ?4 OFFSET ?5",
    )?;
    let rows = statement.query_map(
        params![
            query.phase.map(Phase::as_str),
            query.severity.map(cases::Severity::as_str),
            query.playbook,
            query.limit as i64,
            query.offset as i64
        ],
        |row| row.get::<_, String>(0),
    )?;
    rows.map(|row| serde_json::from_str(&row?).map_err(|error| Error::corrupt("case", error)))
        .collect()
}

pub(super) fn counts(connection: &Connection) -> Result<BTreeMap<Phase, u64>, Error> {
    let mut statement =
        connection.prepare_cached("SELECT phase, COUNT(*) FROM cases GROUP BY phase")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let (phase, count) = row?;
        let phase = Phase::parse(&phase)
            .ok_or_else(|| Error::corrupt("case", format!("`{phase}` is not a phase")))?;
        counts.insert(phase, count as u64);
    }
    Ok(counts)
}

pub(super) fn ids(connection: &Connection) -> Result<Vec<CaseId>, Error> {
    let mut statement = connection.prepare_cached("SELECT id FROM cases ORDER BY id")?;
    let rows = statement.query_map([], |row| row.get::<_, i64>(0))?;
    rows.map(|row| Ok(row? as CaseId)).collect()
}
