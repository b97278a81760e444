//! The embedded default: everything in one local SQLite file, so a single node needs no other
//! service and still loses nothing across a restart.
//!
//! One connection, used by one thread at a time, which runs the operations in turn: SQLite
//! serialises writers anyway. (Handing each operation to tokio's blocking pool instead grew a
//! thread per concurrent request, ~200 threads after a burst of 2,000 webhooks, which then never
//! exited and kept their memory.)
//!
//! Group commit: the thread holding it takes every operation waiting (up to [`MAX_GROUP`]) into one
//! transaction, and answers them only once that transaction has committed. Should one of them fail,
//! the group runs again with each operation in a savepoint of its own, kept in memory, so that the
//! failing one changes nothing ([`run_group`]). Under load, dozens of accepted webhooks and journal
//! writes share one commit instead of paying one each; alone, an operation commits at once. An
//! answer still means "stored": a killed process loses nothing answered. WAL journal mode lets the
//! file be read (backups, `sqlite3`) while the server writes; a thread of its own copies the WAL
//! back into the file ([`checkpoint`]), so that no commit waits for it.
//!
//! Two threads take turns on that connection ([`lanes`]). One wakes the moment an operation
//! arrives: an accepted webhook is answered as soon as it is stored. The other takes the
//! operations of threads marked with [`SqliteStore::queue_behind_the_api`] (a worker's, in a
//! process that also serves the API), and the kernel runs it only once a core is free: instead of
//! preempting the worker for each of its operations and committing them one by one, it finds them
//! gathered. Whichever thread holds the connection takes what waits in both.

mod case_rows;
mod checkpoint;
mod lanes;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cases::{CaseId, CaseSummary, Observable, Phase};
use runner::{Millis, RunEvent};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};

use self::checkpoint::{Checkpointer, wait_for_lock};
use self::lanes::{Lane, Lanes};
use crate::audit::{self, AuditRecord, GENESIS, TrailEntry};
use crate::error::Error;
use crate::limits::{Held, Limit, LimitState, Outcome};
use crate::{
    ActivityPage, ActivityRecord, Admission, ApprovalChanges, CaseMatch, CaseQuery, CaseWrite,
    Claim, Delivery, IGNORED_KEPT, Ignored, NewRun, OpenedRun, PendingApproval, RunQuery,
    RunRecord, Session, Store, TrailPage, millis, now_millis, repeat_of,
};

/// How hard SQLite pushes each commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Survives a killed process; a power cut may lose the last commits (WAL `NORMAL`).
    #[default]
    Normal,
    /// Also survives a power cut, at the price of an fsync per commit (`FULL`).
    Full,
}

/// The embedded store. Cheap to clone; the connection's threads end with the last clone.
#[derive(Clone)]
pub struct SqliteStore {
    operations: Arc<Sender>,
}

/// The store's side of the lanes: dropping the last one lets the connection's threads finish
/// what waits and end.
struct Sender(Arc<Lanes>);

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Work for the connection's threads, kept until its group has committed.
type Operation = Box<dyn Pending>;

/// An operation waiting for its group's commit. It may run twice: once with the rest of its group
/// and, should any operation of the group fail, again alone ([`run_group`]), so what it does must
/// depend only on the database and what it was given.
trait Pending: Send {
    /// Runs it and keeps its result; `false` if it failed (what it wrote is then still there).
    fn run(&mut self, connection: &mut Connection) -> bool;

    /// Replaces its result with `error`: it could not run, or its writes could not be kept.
    fn fail(&mut self, error: Error);

    /// Sends its result, or the commit's error instead.
    fn answer(self: Box<Self>, commit_failed: Option<&Error>);
}

/// An operation, its result once it has run, and where its answer goes.
struct Waiting<T, F> {
    operation: F,
    result: Option<Result<T, Error>>,
    reply: tokio::sync::oneshot::Sender<Result<T, Error>>,
}

impl<T, F> Pending for Waiting<T, F>
where
    T: Send,
    F: FnMut(&mut Connection) -> Result<T, Error> + Send,
{
    fn run(&mut self, connection: &mut Connection) -> bool {
        // A panic here would end the thread; keep it to this operation.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.operation)(connection)
        }))
        .unwrap_or_else(|_| Err(Error::Config("a SQLite operation panicked".into())));
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn fail(&mut self, error: Error) {
        self.result = Some(Err(error));
    }

    fn answer(self: Box<Self>, commit_failed: Option<&Error>) {
        let result = match (commit_failed, self.result) {
            (Some(error), _) => Err(Error::Config(format!(
                "the SQLite transaction did not commit: {error}"
            ))),
            (None, Some(result)) => result,
            (None, None) => Err(Error::Config("a SQLite operation did not run".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// Most operations in one transaction: bounds how long the first of them waits for its answer.
const MAX_GROUP: usize = 256;

/// Prepared statements the connection keeps (rusqlite's statement cache).
const STATEMENTS_KEPT: usize = 128;

/// Leases up to `?4` jobs whose lease ended by `?3` to worker `?1` until `?2`.
const CLAIM: &str = "UPDATE jobs SET leased_by = ?1, lease_until = ?2, deliveries = deliveries + 1
     WHERE id IN (SELECT id FROM jobs WHERE lease_until <= ?3 ORDER BY lease_until, id LIMIT ?4)
     RETURNING id, run_id, deliveries";

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    playbook TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    event TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    dead TEXT,
    locked_by TEXT,
    lock_until INTEGER
);
CREATE TABLE IF NOT EXISTS run_events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    prev TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    leased_by TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_lease ON jobs (lease_until, id);
CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency (expires_at);
CREATE TABLE IF NOT EXISTS timers (
    run_id TEXT PRIMARY KEY,
    due INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_by_due ON timers (due);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (accepted_at, run_id);
CREATE TABLE IF NOT EXISTS limits (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trail (
    seq INTEGER PRIMARY KEY,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ignored (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger_name TEXT NOT NULL,
    playbooks TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
";

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<SqliteStore, Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| {
                Error::Config(format!("cannot create {}: {error}", parent.display()))
            })?;
        }
        let connection = Connection::open(path)?;
        // A second process on the same file, or the checkpointer, holding the lock: wait for it
        // instead of failing at once.
        connection.busy_handler(Some(wait_for_lock))?;
        keep_statements_prepared(&connection)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        let level = match synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        connection.pragma_update(None, "synchronous", level)?;
        keep_statement_journals_in_memory(&connection)?;
        connection.execute_batch(SCHEMA)?;
        connection.execute_batch(case_rows::SCHEMA)?;
        add_chain_columns(&connection)?;
        // The checkpointer's thread copies the WAL back into the file, so that this thread never
        // stops answering to do it. Should it fail to start, SQLite checkpoints here as usual.
        let lanes = Arc::new(Lanes::default());
        let arrivals = Arc::clone(&lanes);
        let checkpointer_stop = match Checkpointer::start(
            path,
            checkpoint::Restart::AS_SHIPPED,
            move || arrivals.prompt_arrivals(),
        ) {
            Ok(stop) => {
                connection.pragma_update(None, "wal_autocheckpoint", 0)?;
                Some(stop)
            }
            Err(error) => {
                tracing::warn!(%error, "No checkpointer thread: the writer checkpoints the WAL itself.");
                None
            }
        };
        let connection = Arc::new(Mutex::new(connection));
        let mut checkpointer_stop = checkpointer_stop;
        for lane in [Lane::Prompt, Lane::Background] {
            let (lanes, connection) = (Arc::clone(&lanes), Arc::clone(&connection));
            let checkpointer_stop = checkpointer_stop.take();
            std::thread::Builder::new()
                .name(lane.thread_name().into())
                .spawn(move || {
                    let _checkpointer_stop = checkpointer_stop;
                    lane.schedule_this_thread();
                    lanes.serve(lane, || {
                        let mut connection = connection
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        // Taken once the connection is ours: all that queued meanwhile, in
                        // either lane, shares the commit.
                        let group = lanes.take(MAX_GROUP);
                        if !group.is_empty() {
                            run_group(&mut connection, group);
                        }
                    });
                })
                .map_err(|error| {
                    Error::Config(format!("cannot start the SQLite thread: {error}"))
                })?;
        }
        Ok(SqliteStore {
            operations: Arc::new(Sender(lanes)),
        })
    }

    /// Operations the calling thread queues from now on wait for a free core instead of
    /// preempting it: they go to the connection's second thread, which the kernel runs only when
    /// a core is free (Linux `SCHED_BATCH`), unless the first takes them along with an operation
    /// of its own. For a worker's threads in a process that also serves the API: their journal
    /// writes gather and share commits, and the API's accepts still wake the store at once.
    pub fn queue_behind_the_api() {
        lanes::queue_this_thread(Lane::Background);
    }

    /// Reads, changes and writes one limit's state in one operation.
    async fn change_limit<T: Send + 'static>(
        &self,
        key: String,
        mut change: impl FnMut(&mut LimitState) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.with(move |connection| {
            let json: Option<String> = connection
                .prepare_cached("SELECT state FROM limits WHERE key = ?1")?
                .query_row(params![key], |row| row.get(0))
                .optional()?;
            let mut state = LimitState::parse(json.as_deref());
            let answer = change(&mut state);
            connection
                .prepare_cached(
                    "INSERT INTO limits (key, state) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET state = excluded.state",
                )?
                .execute(params![key, state.to_json()])?;
            Ok(answer)
        })
        .await
    }

    /// Runs `operation` on the connection's thread and waits for its result, which comes once
    /// the operation's group has committed.
    async fn with<T, F>(&self, operation: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.operations.0.push(Box::new(Waiting {
            operation,
            result: None,
            reply,
        }));
        answer
            .await
            .map_err(|_| Error::Config("the SQLite connection's thread has stopped".into()))?
    }
}

/// Runs `group` in one transaction and answers each operation once it has committed.
///
/// First every operation runs as it comes, with nothing between them. Should one fail, the
/// transaction is rolled back and the group runs again with each operation in a savepoint of its
/// own ([`run_alone`]), so the one that fails leaves nothing behind and the others still commit.
/// Failures are rare; a savepoint for every operation cost an API process 7% of its CPU under a
/// burst of webhooks, SQLite copying every page an operation changes into the savepoint's journal.
fn run_group(connection: &mut Connection, mut group: Vec<Operation>) {
    // BEGIN IMMEDIATE takes the write lock up front (should another process on the file, or the
    // checkpointer, hold it, this waits for it up to 5 s). Should it fail, each operation runs on
    // its own, as its own transaction.
    let mut began = run_cached(connection, "BEGIN IMMEDIATE").is_ok();
    let all_succeeded = began && group.iter_mut().all(|operation| operation.run(connection));
    if !all_succeeded {
        if began {
            // Should this fail, SQLite has already rolled the transaction back (a full disk, an
            // I/O error), or the savepoints below fail and say so to each operation.
            let _ = run_cached(connection, "ROLLBACK");
            began = run_cached(connection, "BEGIN IMMEDIATE").is_ok();
        }
        for operation in &mut group {
            run_alone(connection, operation.as_mut());
        }
    }
    let committed = if began {
        run_cached(connection, "COMMIT").map_err(|error| {
            let _ = run_cached(connection, "ROLLBACK");
            Error::from(error)
        })
    } else {
        Ok(())
    };
    let failure = committed.err();
    for operation in group {
        operation.answer(failure.as_ref());
    }
}

/// Runs one operation in a savepoint: its writes stay if it succeeds and are undone if it fails.
/// Outside a transaction, the savepoint is the operation's own transaction.
fn run_alone(connection: &mut Connection, operation: &mut dyn Pending) {
    if let Err(error) = run_cached(connection, "SAVEPOINT operation") {
        operation.fail(error.into());
        return;
    }
    if operation.run(connection) {
        if let Err(error) = run_cached(connection, "RELEASE operation") {
            operation.fail(error.into());
            undo_savepoint(connection);
        }
    } else {
        undo_savepoint(connection);
    }
}

/// Undoes what was written since the savepoint `operation`, and closes it (ROLLBACK TO leaves it
/// open).
fn undo_savepoint(connection: &Connection) {
    let _ = run_cached(connection, "ROLLBACK TO operation");
    let _ = run_cached(connection, "RELEASE operation");
}

/// Every statement this thread runs stays prepared: rusqlite keeps 16 by default, and the store's
/// hot operations alone use more. With the query planner's stability guarantee, a statement's
/// plan no longer depends on the values bound to it, so SQLite stops preparing a statement anew
/// whenever a bound time or limit changes (`lease_until <= ?3 … LIMIT ?4`, every claim): that was
/// 1% of a worker's CPU.
fn keep_statements_prepared(connection: &Connection) -> Result<(), Error> {
    connection.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// A savepoint copies every page it changes into a statement journal, so that what it did can be
/// undone. Once that journal passes 64 KiB, SQLite moves it to a temporary file and writes there
/// until the transaction ends: when every operation had a savepoint, nine in ten of the writer's
/// writes under a burst of webhooks (a third of an API process's CPU, ~56 KB per accepted alert)
/// went there, for a rollback that almost never happens. Savepoints are now taken only when an
/// operation of a group has failed ([`run_group`]) or must undo part of what it did; in memory
/// their journal costs a copy, and a transaction holds at most [`MAX_GROUP`] operations, which
/// bounds it. (This also keeps SQLite's other temporary files in memory: the store's queries read
/// by index and with limits, so none builds a large one.)
fn keep_statement_journals_in_memory(connection: &Connection) -> Result<(), Error> {
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Runs a statement that takes no parameters and returns no rows, prepared once: rusqlite's
/// `execute_batch` and `savepoint` parse their SQL anew every time, and this thread begins and
/// ends several transactions and savepoints per run.
fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

/// What rusqlite's `Savepoint` does, with cached statements ([`run_cached`]): its changes stay
/// if [`Savepoint::commit`] is called, and are undone if it is dropped first. For an operation
/// that succeeds yet must undo part of what it wrote (a case write that finds it lost a race);
/// [`run_group`] already undoes whatever a failing operation wrote.
struct Savepoint<'c> {
    connection: &'c Connection,
    released: bool,
}

impl<'c> Savepoint<'c> {
    fn open(connection: &'c Connection) -> rusqlite::Result<Savepoint<'c>> {
        run_cached(connection, "SAVEPOINT part")?;
        Ok(Savepoint {
            connection,
            released: false,
        })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        run_cached(self.connection, "RELEASE part")?;
        self.released = true;
        Ok(())
    }
}

impl std::ops::Deref for Savepoint<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.released {
            // Undo, then close the savepoint (ROLLBACK TO leaves it open).
            let _ = run_cached(self.connection, "ROLLBACK TO part");
            let _ = run_cached(self.connection, "RELEASE part");
        }
    }
}

fn read_run(connection: &Connection, run_id: &str) -> Result<Option<RunRecord>, Error> {
    connection
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"))?
        .query_row(params![run_id], run_row)
        .optional()?
        .map(RunRow::into_record)
        .transpose()
}

fn read_events(connection: &Connection, run_id: &str) -> Result<Vec<RunEvent>, Error> {
    let mut statement =
        connection.prepare_cached("SELECT event FROM run_events WHERE run_id = ?1 ORDER BY seq")?;
    let rows = statement.query_map(params![run_id], |row| row.get::<_, String>(0))?;
    let mut events = Vec::new();
    for row in rows {
        let json = row?;
        events.push(
            serde_json::from_str(&json)
                .map_err(|error| Error::corrupt(format!("run {run_id} event"), error))?,
        );
    }
    Ok(events)
}

/// Takes (or renews) the run's lock for `worker` unless another worker holds it unexpired.
fn take_run_lock(
    connection: &Connection,
    run_id: &str,
    worker: &str,
    lease: Duration,
) -> Result<bool, Error> {
    let now = now_millis();
    let changed = connection
        .prepare_cached(
            "UPDATE runs SET locked_by = ?2, lock_until = ?3
             WHERE run_id = ?1 AND (locked_by IS NULL OR locked_by = ?2 OR lock_until <= ?4)",
        )?
        .execute(params![
            run_id,
            worker,
            (now + millis(lease)) as i64,
            now as i64
        ])?;
    Ok(changed == 1)
}

/// Releases the run's lock if `worker` holds it.
fn unlock(connection: &Connection, run_id: &str, worker: &str) -> Result<(), Error> {
    connection
        .prepare_cached(
            "UPDATE runs SET locked_by = NULL, lock_until = NULL
             WHERE run_id = ?1 AND locked_by = ?2",
        )?
        .execute(params![run_id, worker])?;
    Ok(())
}

#[async_trait]
impl runner::Journal for SqliteStore {
    async fn append(&self, run_id: &str, event: &RunEvent) -> Result<(), runner::Error> {
        self.append_all(run_id, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, run_id: &str, events: &[RunEvent]) -> Result<(), runner::Error> {
        let run_id = run_id.to_owned();
        let events = events.to_vec();
        let json = events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| runner::Error::Journal(error.to_string()))?;
        self.with(move |connection| {
            // One transaction reads the chain's head, links the new records to it, and seals
            // the run in the trail if they end it.
            let head: Option<(i64, String)> = connection
                .prepare_cached(
                    "SELECT seq, hash FROM run_events WHERE run_id = ?1
                     ORDER BY seq DESC LIMIT 1",
                )?
                .query_row(params![run_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let (last, prev) = head.unwrap_or((0, GENESIS.to_owned()));
            let linked = audit::link(&run_id, (last as u64, &prev), json.clone());
            insert_records(connection, &run_id, &linked)?;
            if let Some(seal) = audit::seal(&run_id, &events, &linked) {
                append_trail(connection, &seal)?;
            }
            if let Some(changes) = ApprovalChanges::of(&events) {
                record_approvals(connection, &run_id, &changes)?;
            }
            Ok(())
        })
        .await
        .map_err(runner::Error::from)
    }
}

/// The columns [`run_row`] reads, in its order.
const RUN_COLUMNS: &str = "run_id, playbook, trigger_name, event, accepted_at, dead";

/// A `runs` row as stored: the event still JSON text.
struct RunRow {
    run_id: String,
    playbook: String,
    trigger: String,
    event: String,
    accepted_at: i64,
    dead: Option<String>,
}

fn run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: row.get(0)?,
        playbook: row.get(1)?,
        trigger: row.get(2)?,
        event: row.get(3)?,
        accepted_at: row.get(4)?,
        dead: row.get(5)?,
    })
}

impl RunRow {
    fn into_record(self) -> Result<RunRecord, Error> {
        let event = serde_json::from_str(&self.event)
            .map_err(|error| Error::corrupt(format!("run {}", self.run_id), error))?;
        Ok(RunRecord {
            run_id: self.run_id,
            playbook: self.playbook,
            trigger: self.trigger,
            event,
            accepted_at: self.accepted_at as Millis,
            dead: self.dead,
        })
    }
}

fn insert_records(
    transaction: &Connection,
    run_id: &str,
    records: &[AuditRecord],
) -> Result<(), Error> {
    let mut insert = transaction.prepare_cached(
        "INSERT INTO run_events (run_id, seq, event, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for record in records {
        insert.execute(params![
            run_id,
            record.seq as i64,
            record.event,
            record.prev,
            record.hash
        ])?;
    }
    Ok(())
}

/// Up to `limit` rows of `sql` (parameters: the cursor, the limit; it selects `rowid AS cursor`)
/// after the cursor `after`, and the cursor after the last of them.
fn rows_after<T>(
    connection: &Connection,
    sql: &str,
    after: i64,
    limit: usize,
    read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<(Vec<T>, Option<String>), Error> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut last = None;
    let rows = statement.query_map(params![after, limit.max(1) as i64], |row| {
        last = Some(row.get::<_, i64>("cursor")?);
        read(row)
    })?;
    let rows = rows.collect::<Result<Vec<_>, _>>()?;
    Ok((rows, last.map(|rowid| rowid.to_string())))
}

/// The audit record in a row's columns `seq, prev, hash, event`, from column `first` on.
pub(super) fn audit_record(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: row.get::<_, i64>(first)? as u64,
        prev: row.get(first + 1)?,
        hash: row.get(first + 2)?,
        event: row.get(first + 3)?,
    })
}

/// A page cursor: the rowid of the previous page's last row.
fn rowid_cursor(cursor: Option<&str>) -> Result<i64, Error> {
    match cursor {
        None => Ok(0),
        Some(cursor) => cursor.parse().map_err(|_| Error::Cursor(cursor.into())),
    }
}

/// Keeps the table of steps waiting for approval in step with a run's new events.
fn record_approvals(
    transaction: &Connection,
    run_id: &str,
    changes: &ApprovalChanges,
) -> Result<(), Error> {
    for (step, deadline) in &changes.requested {
        transaction
            .prepare_cached(
                "INSERT INTO approvals (run_id, step, deadline) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id, step) DO UPDATE SET deadline = excluded.deadline",
            )?
            .execute(params![run_id, step, *deadline as i64])?;
    }
    for step in &changes.decided {
        transaction
            .prepare_cached("DELETE FROM approvals WHERE run_id = ?1 AND step = ?2")?
            .execute(params![run_id, step])?;
    }
    if changes.ended {
        transaction
            .prepare_cached("DELETE FROM approvals WHERE run_id = ?1")?
            .execute(params![run_id])?;
    }
    Ok(())
}

/// Links `entry` to the trail's head, inside the caller's transaction.
fn append_trail(transaction: &Connection, entry: &TrailEntry) -> Result<(), Error> {
    let json = serde_json::to_string(entry).map_err(|error| Error::corrupt("trail", error))?;
    let head: Option<(i64, String)> = transaction
        .prepare_cached("SELECT seq, hash FROM trail ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (last, prev) = head.unwrap_or((0, GENESIS.to_owned()));
    for record in audit::link(audit::TRAIL, (last as u64, &prev), vec![json]) {
        transaction
            .prepare_cached("INSERT INTO trail (seq, prev, hash, entry) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![
                record.seq as i64,
                record.prev,
                record.hash,
                record.event
            ])?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn accept(&self, delivery: &Delivery) -> Result<Vec<Admission>, Error> {
        let accepted = delivery
            .runs
            .iter()
            .map(NewRun::accepted_json)
            .collect::<Result<Vec<String>, Error>>()?;
        let delivery = delivery.clone();
        self.with(move |connection| {
            let now = now_millis();
            connection
                .prepare_cached("DELETE FROM idempotency WHERE expires_at <= ?1")?
                .execute(params![now as i64])?;
            let delivery_key = delivery
                .delivery_id
                .as_ref()
                .map(|id| format!("delivery:{}:{id}", delivery.trigger));
            if let Some(key) = &delivery_key {
                let earlier: Option<String> = connection
                    .prepare_cached("SELECT value FROM idempotency WHERE key = ?1")?
                    .query_row(params![key], |row| row.get(0))
                    .optional()?;
                if let Some(earlier) = earlier {
                    return repeat_of(&earlier);
                }
            }
            let mut admissions = Vec::with_capacity(delivery.runs.len());
            for (run, accepted) in delivery.runs.iter().zip(&accepted) {
                if let Some(dedupe) = &run.dedupe {
                    let key = format!("dedupe:{}:{}", run.playbook, dedupe.key);
                    let earlier: Option<String> = connection
                        .prepare_cached("SELECT value FROM idempotency WHERE key = ?1")?
                        .query_row(params![key], |row| row.get(0))
                        .optional()?;
                    if let Some(earlier_run) = earlier {
                        admissions.push(Admission {
                            playbook: run.playbook.clone(),
                            run_id: earlier_run,
                            duplicate: true,
                        });
                        continue;
                    }
                    connection
                        .prepare_cached(
                            "INSERT INTO idempotency (key, value, expires_at)
                 VALUES  (?1, ?2, ?3)",
                        )?
                        .execute(params![key, run.run_id, (now + dedupe.window_ms) as i64])?;
                }
                connection
                    .prepare_cached(
                        "INSERT INTO runs (run_id, playbook, trigger_name, event, accepted_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        run.run_id,
                        run.playbook,
                        delivery.trigger,
                        run.event.to_string(),
                        delivery.received_at as i64
                    ])?;
                connection
                    .prepare_cached("INSERT INTO jobs (run_id) VALUES (?1)")?
                    .execute(params![run.run_id])?;
                let first = audit::link(&run.run_id, (0, GENESIS), vec![accepted.clone()]);
                insert_records(connection, &run.run_id, &first)?;
                admissions.push(Admission {
                    playbook: run.playbook.clone(),
                    run_id: run.run_id.clone(),
                    duplicate: false,
                });
            }
            if !delivery.ignored.is_empty() {
                let playbooks = serde_json::to_string(&delivery.ignored)
                    .map_err(|error| Error::corrupt("ignored", error))?;
                connection
                    .prepare_cached(
                        "INSERT INTO ignored (trigger_name, playbooks, received_at)
                 VALUES  (?1, ?2, ?3)",
                    )?
                    .execute(params![
                        delivery.trigger,
                        playbooks,
                        delivery.received_at as i64
                    ])?;
                connection
                    .prepare_cached(
                        "DELETE FROM ignored WHERE id <= (SELECT MAX(id) FROM ignored) - ?1",
                    )?
                    .execute(params![IGNORED_KEPT as i64])?;
            }
            if let Some(key) = &delivery_key {
                let answer = serde_json::to_string(&admissions)
                    .map_err(|error| Error::corrupt("admissions", error))?;
                connection
                    .prepare_cached(
                        "INSERT INTO idempotency (key, value, expires_at)
                 VALUES  (?1, ?2, ?3)",
                    )?
                    .execute(params![
                        key,
                        answer,
                        (now + millis(delivery.delivery_ttl)) as i64
                    ])?;
            }
            Ok(admissions)
        })
        .await
    }

    async fn dedupe_run(&self, playbook: &str, key: &str) -> Result<Option<String>, Error> {
        let key = format!("dedupe:{playbook}:{key}");
        self.with(move |connection| {
            Ok(connection
                .prepare_cached("SELECT value FROM idempotency WHERE key = ?1 AND expires_at > ?2")?
                .query_row(params![key, now_millis() as i64], |row| row.get(0))
                .optional()?)
        })
        .await
    }

    async fn ignored(&self, limit: usize) -> Result<Vec<Ignored>, Error> {
        self.with(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT trigger_name, playbooks, received_at FROM ignored
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = statement.query_map(params![limit as i64], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            let mut ignored = Vec::new();
            for row in rows {
                let (trigger, playbooks, received_at) = row?;
                ignored.push(Ignored {
                    trigger,
                    playbooks: serde_json::from_str(&playbooks)
                        .map_err(|error| Error::corrupt("ignored", error))?,
                    received_at: received_at as Millis,
                });
            }
            Ok(ignored)
        })
        .await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, Error> {
        let run_id = run_id.to_owned();
        self.with(move |connection| read_run(connection, &run_id))
            .await
    }

    async fn events(&self, run_id: &str) -> Result<Vec<RunEvent>, Error> {
        let run_id = run_id.to_owned();
        self.with(move |connection| read_events(connection, &run_id))
            .await
    }

    async fn open_run(
        &self,
        run_id: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<OpenedRun, Error> {
        let (run_id, worker) = (run_id.to_owned(), worker.to_owned());
        self.with(move |connection| {
            let Some(record) = read_run(connection, &run_id)? else {
                return Ok(OpenedRun::Missing);
            };
            if record.dead.is_some() {
                return Ok(OpenedRun::Dead);
            }
            if !take_run_lock(connection, &run_id, &worker, lease)? {
                return Ok(OpenedRun::Busy);
            }
            let events = read_events(connection, &run_id)?;
            Ok(OpenedRun::Locked { record, events })
        })
        .await
    }

    async fn audit_records(&self, run_id: &str) -> Result<Vec<AuditRecord>, Error> {
        let run_id = run_id.to_owned();
        self.with(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, prev, hash, event FROM run_events WHERE run_id = ?1 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![run_id], |row| audit_record(row, 0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn run_ids(&self) -> Result<Vec<String>, Error> {
        self.with(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT run_id FROM runs ORDER BY accepted_at, run_id")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, Error> {
        let query = query.clone();
        self.with(move |connection| {
            let (after_at, after_id) = query
                .after
                .clone()
                .map_or((i64::MAX, String::new()), |(at, id)| (at as i64, id));
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE (?1 IS NULL OR playbook = ?1)
                   AND accepted_at >= ?2 AND accepted_at <= ?3
                   AND (accepted_at < ?4 OR (accepted_at = ?4 AND (?5 = '' OR run_id < ?5)))
                 ORDER BY accepted_at DESC, run_id DESC LIMIT ?6"
            ))?;
            let rows = statement.query_map(
                params![
                    query.playbook,
                    query.since.map_or(0, |since| since as i64),
                    query.until.map_or(i64::MAX, |until| until as i64),
                    after_at,
                    after_id,
                    query.limit as i64
                ],
                run_row,
            )?;
            rows.map(|row| row?.into_record()).collect()
        })
        .await
    }

    async fn trail_append(&self, entry: &TrailEntry) -> Result<(), Error> {
        let entry = entry.clone();
        self.with(move |connection| {
            append_trail(connection, &entry)?;
            Ok(())
        })
        .await
    }

    async fn trail_tail(&self, limit: usize) -> Result<Vec<AuditRecord>, Error> {
        self.with(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, prev, hash, entry FROM trail ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows =
                statement.query_map(params![limit.max(1) as i64], |row| audit_record(row, 0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn trail_page(&self, after: Option<&str>, limit: usize) -> Result<TrailPage, Error> {
        let after = rowid_cursor(after)?;
        self.with(move |connection| {
            let (records, next) = rows_after(
                connection,
                "SELECT seq, prev, hash, entry, rowid AS cursor FROM trail WHERE rowid > ?1
                 ORDER BY rowid LIMIT ?2",
                after,
                limit,
                |row| audit_record(row, 0),
            )?;
            Ok(TrailPage { records, next })
        })
        .await
    }

    async fn activity_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ActivityPage, Error> {
        // SQLite admits one writer at a time, whatever the process, and a new row takes the
        // next rowid: rowid order is the order records were stored in, so the journal table is
        // the activity stream.
        let after = rowid_cursor(after)?;
        self.with(move |connection| {
            let (records, next) = rows_after(
                connection,
                "SELECT run_id, seq, prev, hash, event, rowid AS cursor FROM run_events WHERE rowid > ?1
                 ORDER BY rowid LIMIT ?2",
                after,
                limit,
                |row| {
                    Ok(ActivityRecord {
                        run_id: row.get(0)?,
                        record: audit_record(row, 1)?,
                    })
                },
            )?;
            Ok(ActivityPage { records, next })
        })
        .await
    }

    async fn dead_letter(&self, run_id: &str, reason: &str) -> Result<(), Error> {
        let (run_id, reason) = (run_id.to_owned(), reason.to_owned());
        self.with(move |connection| {
            connection
                .prepare_cached("UPDATE runs SET dead = ?2 WHERE run_id = ?1")?
                .execute(params![run_id, reason])?;
            Ok(())
        })
        .await
    }

    async fn revive(&self, run_id: &str) -> Result<(), Error> {
        let run_id = run_id.to_owned();
        self.with(move |connection| {
            connection
                .prepare_cached("UPDATE runs SET dead = NULL WHERE run_id = ?1")?
                .execute(params![run_id])?;
            Ok(())
        })
        .await
    }

    async fn push(&self, run_id: &str) -> Result<(), Error> {
        let run_id = run_id.to_owned();
        self.with(move |connection| {
            connection
                .prepare_cached("INSERT INTO jobs (run_id) VALUES (?1)")?
                .execute(params![run_id])?;
            Ok(())
        })
        .await
    }

    async fn claim(&self, worker: &str, max: usize, lease: Duration) -> Result<Vec<Claim>, Error> {
        let worker = worker.to_owned();
        self.with(move |connection| {
            let now = now_millis() as i64;
            let mut statement = connection.prepare_cached(CLAIM)?;
            let rows = statement.query_map(
                params![worker, now + millis(lease) as i64, now, max as i64],
                |row| {
                    Ok(Claim {
                        job_id: row.get::<_, i64>(0)?.to_string(),
                        run_id: row.get(1)?,
                        deliveries: row.get(2)?,
                    })
                },
            )?;
            let mut claims = rows.collect::<Result<Vec<_>, _>>()?;
            // RETURNING gives no order; hand jobs out oldest first.
            claims.sort_by_key(|claim| claim.job_id.parse::<i64>().unwrap_or(i64::MAX));
            Ok(claims)
        })
        .await
    }

    async fn extend(&self, worker: &str, job_ids: &[String], lease: Duration) -> Result<(), Error> {
        let (worker, job_ids) = (worker.to_owned(), job_ids.to_vec());
        self.with(move |connection| {
            let until = (now_millis() + millis(lease)) as i64;
            for id in &job_ids {
                connection
                    .prepare_cached(
                        "UPDATE jobs SET lease_until = ?1 WHERE id = ?2 AND leased_by = ?3",
                    )?
                    .execute(params![until, id, worker])?;
            }
            Ok(())
        })
        .await
    }

    async fn ack(&self, worker: &str, jobs: &[Claim]) -> Result<(), Error> {
        let (worker, jobs) = (worker.to_owned(), jobs.to_vec());
        self.with(move |connection| {
            for job in &jobs {
                connection
                    .prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                    .execute(params![job.job_id])?;
                unlock(connection, &job.run_id, &worker)?;
            }
            Ok(())
        })
        .await
    }

    async fn release(&self, worker: &str, job_ids: &[String]) -> Result<(), Error> {
        let (worker, job_ids) = (worker.to_owned(), job_ids.to_vec());
        self.with(move |connection| {
            for id in &job_ids {
                // Handing back is not a failed delivery: undo its count.
                connection
                    .prepare_cached(
                        "UPDATE jobs SET leased_by = NULL, lease_until = 0,
                     deliveries = MAX(deliveries - 1, 0) WHERE id = ?1 AND leased_by = ?2",
                    )?
                    .execute(params![id, worker])?;
            }
            Ok(())
        })
        .await
    }

    async fn queue_depth(&self) -> Result<u64, Error> {
        self.with(|connection| {
            let depth: i64 =
                connection.query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get(0))?;
            Ok(depth as u64)
        })
        .await
    }

    async fn schedule(&self, run_id: &str, due: Millis) -> Result<(), Error> {
        let run_id = run_id.to_owned();
        self.with(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO timers (run_id, due) VALUES (?1, ?2)
                 ON CONFLICT (run_id) DO UPDATE SET due = MIN(due, excluded.due)",
                )?
                .execute(params![run_id, due as i64])?;
            Ok(())
        })
        .await
    }

    async fn promote_due(&self, now: Millis) -> Result<usize, Error> {
        self.with(move |connection| {
            let due: Vec<String> = {
                let mut statement = connection
                    .prepare_cached("DELETE FROM timers WHERE due <= ?1 RETURNING run_id")?;
                let rows = statement.query_map(params![now as i64], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for run_id in &due {
                connection
                    .prepare_cached("INSERT INTO jobs (run_id) VALUES (?1)")?
                    .execute(params![run_id])?;
            }
            Ok(due.len())
        })
        .await
    }

    async fn lock_run(&self, run_id: &str, worker: &str, lease: Duration) -> Result<bool, Error> {
        let (run_id, worker) = (run_id.to_owned(), worker.to_owned());
        self.with(move |connection| take_run_lock(connection, &run_id, &worker, lease))
            .await
    }

    async fn unlock_run(&self, run_id: &str, worker: &str) -> Result<(), Error> {
        let (run_id, worker) = (run_id.to_owned(), worker.to_owned());
        self.with(move |connection| unlock(connection, &run_id, &worker))
            .await
    }

    async fn take_slot(
        &self,
        key: &str,
        holder: &str,
        limit: &Limit,
        now: Millis,
        lease_end: Millis,
    ) -> Result<Result<(), Held>, Error> {
        let (key, holder, limit) = (key.to_owned(), holder.to_owned(), limit.clone());
        self.change_limit(key, move |state| {
            state.take(&holder, &limit, now, lease_end)
        })
        .await
    }

    async fn give_slot_back(
        &self,
        key: &str,
        holder: &str,
        limit: &Limit,
        outcome: Outcome,
        now: Millis,
    ) -> Result<(), Error> {
        let (key, holder, limit) = (key.to_owned(), holder.to_owned(), limit.clone());
        self.change_limit(key, move |state| {
            state.give_back(&holder, &limit, outcome, now)
        })
        .await
    }

    async fn ping(&self) -> Result<(), Error> {
        self.with(|connection| {
            connection.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn pending_approvals(&self, limit: usize) -> Result<Vec<PendingApproval>, Error> {
        self.with(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT run_id, step, deadline FROM approvals ORDER BY deadline, run_id LIMIT ?1",
            )?;
            let rows = statement.query_map(params![limit as i64], |row| {
                Ok(PendingApproval {
                    run_id: row.get(0)?,
                    step: row.get(1)?,
                    deadline: row.get::<_, i64>(2)? as Millis,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn next_case_id(&self) -> Result<CaseId, Error> {
        self.with(|connection| case_rows::next_id(connection)).await
    }

    async fn write_case(&self, write: &CaseWrite) -> Result<bool, Error> {
        let write = write.clone();
        self.with(move |connection| case_rows::write(connection, &write))
            .await
    }

    async fn case_records(&self, case: CaseId) -> Result<Vec<AuditRecord>, Error> {
        self.with(move |connection| case_rows::records(connection, case))
            .await
    }

    async fn find_case(
        &self,
        key: &str,
        observables: &[Observable],
        seen_since: Millis,
        now: Millis,
    ) -> Result<Option<CaseMatch>, Error> {
        let key = key.to_owned();
        let observables = observables.to_vec();
        self.with(move |connection| {
            case_rows::find(connection, &key, &observables, seen_since, now)
        })
        .await
    }

    async fn case_of_run(&self, run_id: &str) -> Result<Option<CaseId>, Error> {
        let run_id = run_id.to_owned();
        self.with(move |connection| case_rows::case_of_run(connection, &run_id))
            .await
    }

    async fn list_cases(&self, query: &CaseQuery) -> Result<Vec<CaseSummary>, Error> {
        let query = query.clone();
        self.with(move |connection| case_rows::list(connection, &query))
            .await
    }

    async fn case_counts(&self) -> Result<BTreeMap<Phase, u64>, Error> {
        self.with(|connection| case_rows::counts(connection)).await
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, Error> {
        self.with(|connection| case_rows::ids(connection)).await
    }

    async fn put_session(&self, id_hash: &str, session: &Session) -> Result<(), Error> {
        let id_hash = id_hash.to_owned();
        let json =
            serde_json::to_string(session).map_err(|error| Error::corrupt("session", error))?;
        let expires_at = session.expires_at as i64;
        self.with(move |connection| {
            connection
                .prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?
                .execute(params![now_millis() as i64])?;
            connection
                .prepare_cached(
                    "INSERT INTO sessions (id_hash, session, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id_hash) DO UPDATE SET session = excluded.session,
                       expires_at = excluded.expires_at",
                )?
                .execute(params![id_hash, json, expires_at])?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: Millis) -> Result<Option<Session>, Error> {
        let id_hash = id_hash.to_owned();
        self.with(move |connection| {
            let json: Option<String> = connection
                .prepare_cached(
                    "SELECT session FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![id_hash, now as i64], |row| row.get(0))
                .optional()?;
            json.map(|json| {
                serde_json::from_str(&json).map_err(|error| Error::corrupt("session", error))
            })
            .transpose()
        })
        .await
    }

    async fn end_session(&self, id_hash: &str) -> Result<(), Error> {
        let id_hash = id_hash.to_owned();
        self.with(move |connection| {
            connection
                .prepare_cached("DELETE FROM sessions WHERE id_hash = ?1")?
                .execute(params![id_hash])?;
            Ok(())
        })
        .await
    }
}

/// Files created before the journal was chained lack its columns; their old records verify as
/// unchained.
fn add_chain_columns(connection: &Connection) -> Result<(), Error> {
    let mut statement = connection.prepare("PRAGMA table_info(run_events)")?;
    let columns: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    for column in ["prev", "hash"] {
        if !columns.iter().any(|name| name == column) {
            connection.execute_batch(&format!(
                "ALTER TABLE run_events ADD COLUMN {column} TEXT NOT NULL DEFAULT ''"
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rusqlite::StatementStatus;

    use super::*;

    fn table_of_numbers() -> Connection {
        let connection = Connection::open_in_memory().expect("open");
        connection
            .execute_batch("CREATE TABLE numbers (n INTEGER NOT NULL)")
            .expect("table");
        connection
    }

    fn numbers(connection: &Connection) -> Vec<i64> {
        let mut statement = connection
            .prepare("SELECT n FROM numbers ORDER BY n")
            .expect("select");
        let rows = statement.query_map([], |row| row.get(0)).expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    }

    fn insert(connection: &Connection, n: i64) {
        connection
            .execute("INSERT INTO numbers (n) VALUES (?1)", [n])
            .expect("insert");
    }

    #[test]
    fn a_savepoint_keeps_its_changes_only_if_committed_in_a_group_and_alone() {
        let connection = table_of_numbers();
        // In a group's transaction, as `run_group` runs operations, twice over so that the
        // cached statements are reused.
        run_cached(&connection, "BEGIN IMMEDIATE").expect("begin");
        for round in 0..2 {
            let kept = Savepoint::open(&connection).expect("savepoint");
            insert(&kept, 10 + round);
            kept.commit().expect("release");
            let dropped = Savepoint::open(&connection).expect("savepoint");
            insert(&dropped, 20 + round);
            drop(dropped);
        }
        run_cached(&connection, "COMMIT").expect("commit");
        assert_eq!(numbers(&connection), [10, 11]);
        // Alone, as when BEGIN failed: the savepoint is the transaction, and a dropped one
        // leaves none open.
        let dropped = Savepoint::open(&connection).expect("savepoint");
        insert(&dropped, 30);
        drop(dropped);
        assert!(connection.is_autocommit(), "a transaction was left open");
        let kept = Savepoint::open(&connection).expect("savepoint");
        insert(&kept, 40);
        kept.commit().expect("release");
        assert!(connection.is_autocommit(), "a transaction was left open");
        assert_eq!(numbers(&connection), [10, 11, 40]);
    }

    /// An operation for [`run_group`] that inserts `n` into `numbers`, then fails if `fails` (after
    /// writing, or by panicking); it counts its runs in `runs`.
    fn numbered(
        n: i64,
        fails: Option<&'static str>,
        runs: &Arc<AtomicUsize>,
    ) -> (
        Operation,
        tokio::sync::oneshot::Receiver<Result<i64, Error>>,
    ) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let runs = Arc::clone(runs);
        let operation = move |connection: &mut Connection| {
            runs.fetch_add(1, Ordering::SeqCst);
            insert(connection, n);
            match fails {
                Some("panic") => panic!("operation {n} panics"),
                Some(reason) => Err(Error::corrupt("numbers", reason)),
                None => Ok(n),
            }
        };
        let waiting = Waiting {
            operation,
            result: None,
            reply,
        };
        (Box::new(waiting), answer)
    }

    fn answered(
        mut answer: tokio::sync::oneshot::Receiver<Result<i64, Error>>,
    ) -> Result<i64, String> {
        answer
            .try_recv()
            .expect("an answer")
            .map_err(|error| error.to_string())
    }

    #[test]
    fn a_group_without_failures_runs_each_operation_once_and_keeps_all() {
        let mut connection = table_of_numbers();
        let runs = Arc::new(AtomicUsize::new(0));
        let (operations, answers): (Vec<_>, Vec<_>) =
            (1..=3).map(|n| numbered(n, None, &runs)).unzip();
        run_group(&mut connection, operations);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let answers: Vec<_> = answers.into_iter().map(answered).collect();
        assert_eq!(answers, [Ok(1), Ok(2), Ok(3)]);
        assert_eq!(numbers(&connection), [1, 2, 3]);
        assert!(connection.is_autocommit(), "a transaction was left open");
    }

    #[test]
    fn operations_that_fail_in_a_group_leave_nothing_behind_and_the_others_commit() {
        let mut connection = table_of_numbers();
        let runs = Arc::new(AtomicUsize::new(0));
        let (operations, answers): (Vec<_>, Vec<_>) = [
            (1, None),
            (2, Some("refused")),
            (3, None),
            (4, Some("panic")),
            (5, None),
        ]
        .into_iter()
        .map(|(n, fails)| numbered(n, fails, &runs))
        .unzip();
        run_group(&mut connection, operations);
        let answers: Vec<_> = answers.into_iter().map(answered).collect();
        assert_eq!(answers[0], Ok(1));
        assert!(answers[1].as_ref().is_err_and(|e| e.contains("refused")));
        assert_eq!(answers[2], Ok(3));
        assert!(answers[3].as_ref().is_err_and(|e| e.contains("panicked")));
        assert_eq!(answers[4], Ok(5));
        assert_eq!(numbers(&connection), [1, 3, 5]);
        // The first two ran until the failure, then all five ran again, each in a savepoint.
        assert_eq!(runs.load(Ordering::SeqCst), 2 + 5);
        assert!(connection.is_autocommit(), "a transaction was left open");
    }

    /// How often the claim statement was prepared anew over claims at three different times.
    fn claim_reprepares(connection: &Connection) -> i32 {
        connection.execute_batch(SCHEMA).expect("schema");
        for now in [1_000_i64, 2_000, 3_000] {
            connection
                .execute("INSERT INTO jobs (run_id) VALUES ('r')", [])
                .expect("job");
            let mut statement = connection.prepare_cached(CLAIM).expect("claim");
            let claimed = statement
                .query_map(params!["w", now + 60_000, now, 16], |row| {
                    row.get::<_, i64>(0)
                })
                .expect("claim")
                .count();
            assert!(claimed > 0, "nothing claimed at {now}");
        }
        let statement = connection.prepare_cached(CLAIM).expect("claim");
        statement.get_status(StatementStatus::RePrepare)
    }

    /// What this thread writes (Linux's per-thread I/O accounting) while 8 operations run in one
    /// transaction as `run_group` runs them once one has failed, each in its savepoint and each
    /// changing 20 pages that were there before; and by how much the WAL grew meanwhile.
    fn written_by_one_group(path: &Path, in_memory: bool) -> (u64, u64) {
        let connection = Connection::open(path).expect("open");
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .expect("WAL");
        if in_memory {
            keep_statement_journals_in_memory(&connection).expect("configure");
        }
        connection
            .execute_batch(
                "CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
                 INSERT INTO rows (id, body)
                 WITH RECURSIVE n(id) AS (SELECT 0 UNION ALL SELECT id + 1 FROM n WHERE id < 399)
                 SELECT id, printf('%.1000c', 'x') FROM n;",
            )
            .expect("rows");
        let wal_size = || {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            std::fs::metadata(wal).expect("the WAL").len()
        };
        let written = || {
            let io = std::fs::read_to_string("/proc/thread-self/io").expect("I/O accounting");
            io.lines()
                .find_map(|line| line.strip_prefix("wchar: "))
                .and_then(|bytes| bytes.parse::<u64>().ok())
                .expect("wchar")
        };
        let (wal_before, written_before) = (wal_size(), written());
        run_cached(&connection, "BEGIN IMMEDIATE").expect("begin");
        for operation in 0..8_i64 {
            let savepoint = Savepoint::open(&connection).expect("savepoint");
            // Four rows fill a page, so the 20 rows `id % 20 = operation` lie on 20 pages.
            savepoint
                .execute(
                    "UPDATE rows SET body = printf('%.1000c', ?1) WHERE id % 20 = ?2",
                    params![operation.to_string(), operation],
                )
                .expect("update");
            savepoint.commit().expect("release");
        }
        run_cached(&connection, "COMMIT").expect("commit");
        (written() - written_before, wal_size() - wal_before)
    }

    #[test]
    fn a_group_writes_its_wal_and_nothing_else() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (written, wal) = written_by_one_group(&dir.path().join("memory.db"), true);
        assert!(wal > 0, "the WAL did not grow");
        assert!(written <= wal, "wrote {written} bytes for {wal} of WAL");
        // The control: by default SQLite spills a savepoint's journal past 64 KiB to a file.
        let (written, wal) = written_by_one_group(&dir.path().join("default.db"), false);
        assert!(
            written > wal + 64 * 1024,
            "wrote {written} bytes for {wal} of WAL"
        );
    }

    #[test]
    fn the_claim_statement_is_not_prepared_anew_for_every_time_bound_to_it() {
        let connection = Connection::open_in_memory().expect("open");
        keep_statements_prepared(&connection).expect("configure");
        assert_eq!(claim_reprepares(&connection), 0);
        // The control: without the planner's stability guarantee, SQLite prepares it again.
        let unconfigured = Connection::open_in_memory().expect("open");
        assert!(claim_reprepares(&unconfigured) > 0);
    }

    /// Where an operation ran: its thread's name and scheduling policy (`/proc/thread-self/stat`,
    /// field 41: 0 normal, 3 `SCHED_BATCH`).
    fn where_it_runs(store: &SqliteStore) -> (String, u32) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime
            .block_on(store.with(|_| {
                let name = std::thread::current().name().unwrap_or_default().to_owned();
                let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
                let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                let policy = after_name
                    .split_whitespace()
                    .nth(41 - 3)
                    .and_then(|field| field.parse().ok())
                    .unwrap_or(u32::MAX);
                Ok((name, policy))
            }))
            .expect("the operation ran")
    }

    #[test]
    fn a_thread_that_queues_behind_the_api_has_its_operations_run_when_a_core_is_free() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(&dir.path().join("lanes.db"), Synchronous::Normal)
            .expect("the store opens");
        // The control: an unmarked thread's operation wakes the prompt thread, a normal one.
        let (name, policy) = where_it_runs(&store);
        assert_eq!(name, "riposte-sqlite");
        if cfg!(target_os = "linux") {
            assert_eq!(policy, 0);
        }
        let (name, policy) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    SqliteStore::queue_behind_the_api();
                    where_it_runs(&store)
                })
                .join()
                .expect("the marked thread")
        });
        assert_eq!(name, "riposte-sql-bg");
        if cfg!(target_os = "linux") {
            assert_eq!(policy, 3, "the background thread is not SCHED_BATCH");
        }
    }

    #[test]
    fn the_checkpointer_counts_the_prompt_lanes_arrivals_only() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(&dir.path().join("lanes.db"), Synchronous::Normal)
            .expect("the store opens");
        let arrivals = || store.operations.0.prompt_arrivals();
        let before = arrivals();
        where_it_runs(&store);
        assert_eq!(arrivals(), before + 1);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                SqliteStore::queue_behind_the_api();
                where_it_runs(&store);
            });
        });
        assert_eq!(
            arrivals(),
            before + 1,
            "a worker's operation counted as an accept"
        );
    }

    #[test]
    fn operations_queued_in_both_lanes_at_once_are_all_answered_and_kept() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("lanes.db");
        let store = SqliteStore::open(&path, Synchronous::Normal).expect("the store opens");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime
            .block_on(store.with(|connection| {
                connection.execute_batch("CREATE TABLE numbers (n INTEGER NOT NULL)")?;
                Ok(())
            }))
            .expect("the table");
        let insert_from = |first: i64, behind_the_api: bool| {
            let store = store.clone();
            std::thread::spawn(move || {
                if behind_the_api {
                    SqliteStore::queue_behind_the_api();
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async {
                    let inserts = (first..first + 100).map(|n| {
                        store.with(move |connection| {
                            connection.execute("INSERT INTO numbers (n) VALUES (?1)", [n])?;
                            Ok(n)
                        })
                    });
                    futures::future::join_all(inserts).await
                })
            })
        };
        let threads = [
            insert_from(0, false),
            insert_from(100, true),
            insert_from(200, true),
        ];
        for thread in threads {
            let answers = thread.join().expect("an inserting thread");
            assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        }
        drop(store);
        let reopened = Connection::open(&path).expect("reopen");
        assert_eq!(numbers(&reopened), (0..300).collect::<Vec<i64>>());
    }
}
