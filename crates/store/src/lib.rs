//! Where the server keeps everything that must survive a crash: accepted deliveries and their
//! idempotency keys, the job queue, run journals (the checkpoints and the audit trail in one),
//! timers for approval deadlines, per-run locks, the steps waiting for approval, and incident
//! cases (their chained events, and the indexes by which alerts find them).
//!
//! [`Store`] is the one interface; [`RedisStore`] (shared by every process of a scaled-out
//! deployment) and [`SqliteStore`] (the embedded default, one local file) implement it, and one
//! conformance suite (`tests/it`) runs against both. This crate is the only one that knows Redis
//! key names or SQL tables. It knows nothing of HTTP, plugins or how a playbook runs: a job is just
//! "advance run X", and the worker folds the run's journal to know what is left to do.
//!
//! Guarantees every implementation gives:
//! - [`Store::accept`] is atomic: the idempotency keys, the run records and their jobs are stored
//!   together or not at all, and only then does the caller answer 202.
//! - A claimed job stays leased to its worker until acked, released or its lease runs out; then
//!   [`Store::claim`] hands it out again (at-least-once delivery). Jobs are idempotent per run.
//! - [`runner::Journal::append`] returns only once the event is stored.
//! - [`Store::write_case`] stores a case's events, its summary and its indexes together or not
//!   at all, and only on the chain head its writer read: concurrent writers never interleave.

pub mod audit;
mod error;
pub mod limits;
mod redis_store;
mod sqlite_store;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use cases::{CaseEvent, CaseId, CaseSummary, Observable, Phase, Severity};
use runner::{Millis, RunEvent};
use serde::{Deserialize, Serialize};

pub use audit::{AuditRecord, TrailEntry};
pub use error::Error;
pub use redis_store::{ACTIVITY_MAX_LEN, RedisStore};
pub use sqlite_store::{SqliteStore, Synchronous};

/// One accepted webhook delivery, with the runs it starts.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub trigger: String,
    /// The sender's delivery id (e.g. `X-GitHub-Delivery`, `webhook-id`): a repeat of it starts
    /// nothing and gets the original answer.
    pub delivery_id: Option<String>,
    /// How long a delivery id is remembered.
    pub delivery_ttl: Duration,
    pub runs: Vec<NewRun>,
    /// Playbooks on the trigger whose `filter` rejected the event: recorded, nothing started.
    pub ignored: Vec<String>,
    pub received_at: Millis,
}

impl NewRun {
    /// Its first record as stored.
    fn accepted_json(&self) -> Result<String, Error> {
        serde_json::to_string(&self.accepted).map_err(|error| Error::corrupt("run_accepted", error))
    }
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub playbook: Option<String>,
    /// Accepted at or after.
    pub since: Option<Millis>,
    /// Accepted at or before.
    pub until: Option<Millis>,
    /// Only runs listed after this one (acceptance time, run id): the previous page's last.
    pub after: Option<(Millis, String)>,
    pub limit: usize,
}

/// Records of the global trail, and where the next page starts: after the last record returned,
/// so a reader that keeps it reads only what is added later (`None` for an empty page).
#[derive(Debug, Clone, Default)]
pub struct TrailPage {
    pub records: Vec<AuditRecord>,
    pub next: Option<String>,
}

/// Records of every run's chain in the order they were stored, and where the next page starts
/// (as for [`TrailPage`]): the global activity stream.
#[derive(Debug, Clone, Default)]
pub struct ActivityPage {
    pub records: Vec<ActivityRecord>,
    pub next: Option<String>,
}

/// One record of a run's chain, as the activity stream holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRecord {
    pub run_id: String,
    pub record: AuditRecord,
}

/// A delivery that every playbook on its trigger filtered out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    pub trigger: String,
    pub playbooks: Vec<String>,
    pub received_at: Millis,
}

/// How long a case is found by an observable it saw: the longest `case.window` a playbook may
/// set.
pub const OBSERVABLES_KEPT_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// How many ignored deliveries are kept (the oldest go first).
pub const IGNORED_KEPT: u64 = 10_000;

/// A run to start for a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRun {
    pub run_id: String,
    pub playbook: String,
    pub event: serde_json::Value,
    /// The playbook's rendered `dedupe` key and window, if it has one.
    pub dedupe: Option<DedupeKey>,
    /// The run's first record (`RunEvent::RunAccepted`, made by the runner), stored with it.
    pub accepted: RunEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeKey {
    pub key: String,
    pub window_ms: u64,
}

impl DedupeKey {
    /// A key that holds for `window` (a window past what milliseconds count holds forever).
    pub fn new(key: String, window: std::time::Duration) -> DedupeKey {
        DedupeKey {
            key,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// What became of each run of an accepted delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    pub playbook: String,
    pub run_id: String,
    /// True when an earlier delivery (same delivery id, or same dedupe key within its window)
    /// already started this run: nothing new was started.
    pub duplicate: bool,
}

/// The record of an accepted run, as the worker needs it to start the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub playbook: String,
    pub trigger: String,
    pub event: serde_json::Value,
    pub accepted_at: Millis,
    /// Set when the run was given up on (dead-lettered), with the reason.
    pub dead: Option<String>,
}

/// What a worker finds when it opens a run to advance it ([`Store::open_run`]).
#[derive(Debug, Clone, PartialEq)]
pub enum OpenedRun {
    /// There is no such run.
    Missing,
    /// The run was given up on: it is not locked and never advanced again.
    Dead,
    /// Another worker holds the run's lock.
    Busy,
    /// The run is locked for the caller, with what advancing it needs.
    Locked {
        record: RunRecord,
        events: Vec<RunEvent>,
    },
}

/// One delivery of a job to a worker: the run to advance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The store's id for this job (a stream entry id, a row id).
    pub job_id: String,
    pub run_id: String,
    /// How many times this job has been handed to a worker, this time included. More than one
    /// means an earlier worker lost it (crashed, or stalled past its lease).
    pub deliveries: u32,
}

/// A change to one case, stored atomically by [`Store::write_case`].
#[derive(Debug, Clone)]
pub struct CaseWrite {
    pub case: CaseId,
    /// The head of the case's chain (`seq`, hash) the events were decided on: `(0, GENESIS)`
    /// for a new case.
    pub head: (u64, String),
    pub events: Vec<CaseEvent>,
    /// The case as the events leave it.
    pub summary: CaseSummary,
    /// A run that joins the case with these events.
    pub run: Option<String>,
    /// The key alerts find the case by, from now on.
    pub key: Option<CaseKey>,
    /// Observables seen now: alerts holding one find the case by it for a while.
    pub seen: Vec<Observable>,
    pub at: Millis,
}

/// A case's key and how long it finds the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseKey {
    pub key: String,
    pub expires_at: Millis,
    /// For a new case: refused while the key still finds another case that takes alerts.
    pub exclusive: bool,
}

/// The open case an alert joins, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseMatch {
    pub case: CaseId,
    /// The observable it shares with the alert; `None` when its key found it.
    pub by: Option<Observable>,
}

/// Which cases to list: open ones first, each group most recently updated first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseQuery {
    pub phase: Option<Phase>,
    pub severity: Option<Severity>,
    pub playbook: Option<String>,
    /// Cases skipped (those of the pages before).
    pub offset: usize,
    pub limit: usize,
}

impl CaseQuery {
    fn matches(&self, summary: &CaseSummary) -> bool {
        self.phase.is_none_or(|phase| summary.phase == phase)
            && self
                .severity
                .is_none_or(|severity| summary.severity == severity)
            && self
                .playbook
                .as_ref()
                .is_none_or(|playbook| summary.playbooks.contains(playbook))
    }
}

/// A person signed in to the console: stored under the SHA-256 of its id (the cookie's value),
/// so a copy of the store opens no session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The API token's name: the actor in the audit trail.
    pub actor: String,
    /// The hash the token had at sign-in: a token rotated or removed since ends the session.
    pub token_sha256: String,
    /// The value every form of the session must carry.
    pub csrf: String,
    pub expires_at: Millis,
}

/// A step waiting for a person's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    pub run_id: String,
    pub step: String,
    pub deadline: Millis,
}

/// How a batch of a run's events changes the steps that wait for approval.
#[derive(Debug, Default)]
struct ApprovalChanges {
    requested: Vec<(String, Millis)>,
    decided: Vec<String>,
    /// The run ended: nothing of it waits any more.
    ended: bool,
}

impl ApprovalChanges {
    fn of(events: &[RunEvent]) -> Option<ApprovalChanges> {
        let mut changes = ApprovalChanges::default();
        for event in events {
            match event {
                RunEvent::ApprovalRequested { step, deadline, .. } => {
                    changes.requested.push((step.clone(), *deadline));
                }
                RunEvent::ApprovalDecided { step, .. } => changes.decided.push(step.clone()),
                event if event.is_terminal() => changes.ended = true,
                _ => {}
            }
        }
        let any = !changes.requested.is_empty() || !changes.decided.is_empty() || changes.ended;
        any.then_some(changes)
    }
}

/// Durable state shared by the server's processes. See the crate docs for the guarantees.
#[async_trait]
pub trait Store: runner::Journal + Send + Sync + 'static {
    /// Stores a delivery's idempotency keys, run records and jobs atomically. Runs whose delivery
    /// id or dedupe key was seen before come back as duplicates and start nothing. Playbooks that
    /// filtered the event out are recorded as an [`Ignored`] delivery.
    async fn accept(&self, delivery: &Delivery) -> Result<Vec<Admission>, Error>;

    /// The most recent ignored deliveries, newest first.
    async fn ignored(&self, limit: usize) -> Result<Vec<Ignored>, Error>;

    /// The run that `playbook`'s dedupe key `key` started, while the key's window lasts.
    async fn dedupe_run(&self, playbook: &str, key: &str) -> Result<Option<String>, Error>;

    /// The accepted run, if it exists.
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, Error>;

    /// The run's journal in order (empty before the run starts).
    async fn events(&self, run_id: &str) -> Result<Vec<RunEvent>, Error>;

    /// The run's journal as chained records, for verification and export.
    async fn audit_records(&self, run_id: &str) -> Result<Vec<AuditRecord>, Error>;

    /// Every accepted run, oldest first.
    async fn run_ids(&self) -> Result<Vec<String>, Error>;

    /// Accepted runs matching `query`, newest first, at most `query.limit`.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, Error>;

    /// Appends to the global trail (runs are sealed by the store itself, when they end).
    async fn trail_append(&self, entry: &audit::TrailEntry) -> Result<(), Error>;

    /// The global trail in order, a page at a time: `after` is the previous page's `next`; an
    /// empty page is the end (for now).
    async fn trail_page(&self, after: Option<&str>, limit: usize) -> Result<TrailPage, Error>;

    /// The trail's last `limit` records, newest first.
    async fn trail_tail(&self, limit: usize) -> Result<Vec<AuditRecord>, Error>;

    /// Every run's records across runs, in the order they were stored, a page at a time:
    /// `after` is the previous page's `next`. On Redis only the newest records are kept here (a
    /// bounded copy for consumers that tail it); each run's own journal keeps all of its records.
    async fn activity_page(&self, after: Option<&str>, limit: usize)
    -> Result<ActivityPage, Error>;

    /// Gives up on a run: it is marked dead with `reason` and no longer advanced.
    async fn dead_letter(&self, run_id: &str, reason: &str) -> Result<(), Error>;

    /// Clears a run's dead-letter mark (it is being resumed).
    async fn revive(&self, run_id: &str) -> Result<(), Error>;

    /// Adds a job to advance `run_id` now.
    async fn push(&self, run_id: &str) -> Result<(), Error>;

    /// Hands up to `max` jobs to `worker`, leased for `lease`. Jobs whose lease ran out are handed
    /// out again first. Returns at once, possibly with nothing.
    async fn claim(&self, worker: &str, max: usize, lease: Duration) -> Result<Vec<Claim>, Error>;

    /// Renews the leases `worker` holds on these jobs.
    async fn extend(&self, worker: &str, job_ids: &[String], lease: Duration) -> Result<(), Error>;

    /// The jobs are done: they are removed for good, and the locks `worker` still holds on their
    /// runs are released with them (a worker leaves a run's lock to its job's ack: one operation
    /// per advance fewer).
    async fn ack(&self, worker: &str, jobs: &[Claim]) -> Result<(), Error>;

    /// Hands jobs back at once (graceful shutdown), so any worker can take them.
    async fn release(&self, worker: &str, job_ids: &[String]) -> Result<(), Error>;

    /// Jobs waiting or leased.
    async fn queue_depth(&self) -> Result<u64, Error>;

    /// Asks for a job for `run_id` at `due` (an approval deadline, a busy run tried later).
    /// A run has at most one timer; the earlier due time wins.
    async fn schedule(&self, run_id: &str, due: Millis) -> Result<(), Error>;

    /// Turns timers due at `now` into jobs; returns how many.
    async fn promote_due(&self, now: Millis) -> Result<usize, Error>;

    /// Takes the run's lock for `worker` unless another worker holds it; so one run is never
    /// advanced by two workers at once. Renewing is taking it again.
    async fn lock_run(&self, run_id: &str, worker: &str, lease: Duration) -> Result<bool, Error>;

    /// What advancing a run starts with, in one round trip: takes its lock for `worker` (as
    /// [`Store::lock_run`]) unless it is missing or dead, and reads its record and journal.
    /// The journal read is the one the worker folds: only the lock holder appends to it.
    async fn open_run(
        &self,
        run_id: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<OpenedRun, Error>;

    /// Releases the run's lock if `worker` holds it.
    async fn unlock_run(&self, run_id: &str, worker: &str) -> Result<(), Error>;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), Error>;

    /// Takes a slot of the shared limit `key` for `holder`, leased until `lease_end`, or says
    /// until when the limit holds the call ([`limits`]).
    async fn take_slot(
        &self,
        key: &str,
        holder: &str,
        limit: &limits::Limit,
        now: Millis,
        lease_end: Millis,
    ) -> Result<Result<(), limits::Held>, Error>;

    /// Gives `holder`'s slot of `key` back, with how its call went.
    async fn give_slot_back(
        &self,
        key: &str,
        holder: &str,
        limit: &limits::Limit,
        outcome: limits::Outcome,
        now: Millis,
    ) -> Result<(), Error>;

    /// Steps waiting for approval in runs that have not ended, soonest deadline first.
    async fn pending_approvals(&self, limit: usize) -> Result<Vec<PendingApproval>, Error>;

    /// A case number never handed out before.
    async fn next_case_id(&self) -> Result<CaseId, Error>;

    /// Stores a change to a case: its events linked to `write.head`, its summary, the run that
    /// joins it, its key and the observables it saw, all or nothing. Stores nothing and returns
    /// false when the chain has moved past `head`, the run is in a case already, or an exclusive
    /// key still finds another case: the writer reads the case again and decides again.
    async fn write_case(&self, write: &CaseWrite) -> Result<bool, Error>;

    /// A case's chained records in order (empty when there is no such case).
    async fn case_records(&self, case: CaseId) -> Result<Vec<AuditRecord>, Error>;

    /// The case an alert joins at `now`: the open case (taking alerts) its key names, else the
    /// open case that most recently saw one of `observables` since `seen_since`.
    async fn find_case(
        &self,
        key: &str,
        observables: &[Observable],
        seen_since: Millis,
        now: Millis,
    ) -> Result<Option<CaseMatch>, Error>;

    /// The case a run's alert joined.
    async fn case_of_run(&self, run_id: &str) -> Result<Option<CaseId>, Error>;

    /// Cases matching `query`, at most `query.limit`.
    async fn list_cases(&self, query: &CaseQuery) -> Result<Vec<CaseSummary>, Error>;

    /// How many cases are in each phase (phases without cases are absent).
    async fn case_counts(&self) -> Result<BTreeMap<Phase, u64>, Error>;

    /// Every case, in the order they were opened.
    async fn case_ids(&self) -> Result<Vec<CaseId>, Error>;

    /// Keeps a console session, under the hash of its id, until it expires.
    async fn put_session(&self, id_hash: &str, session: &Session) -> Result<(), Error>;

    /// The session, unless it has expired at `now` or ended.
    async fn session(&self, id_hash: &str, now: Millis) -> Result<Option<Session>, Error>;

    /// Ends a session (signing out).
    async fn end_session(&self, id_hash: &str) -> Result<(), Error>;
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as Millis)
        .unwrap_or(0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The answer given to the first delivery, given again to a repeat of it.
fn repeat_of(earlier: &str) -> Result<Vec<Admission>, Error> {
    let admissions: Vec<Admission> =
        serde_json::from_str(earlier).map_err(|error| Error::corrupt("admissions", error))?;
    Ok(admissions
        .into_iter()
        .map(|admission| Admission {
            duplicate: true,
            ..admission
        })
        .collect())
}
