//! The shared store: every process of a deployment talks to one Redis.
//!
//! The queue is a Redis Stream read through a consumer group, so Redis itself does the
//! bookkeeping: `XREADGROUP` delivers, the pending-entries list is the set of leases (an entry's
//! idle time is its lease clock), `XAUTOCLAIM` hands out entries whose worker went quiet, and
//! `XACK` + `XDEL` finish them. Multi-key changes (accepting a delivery, promoting timers,
//! releasing jobs) are Lua scripts, so they are atomic. Keys (under a configurable prefix `p`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `p:jobs` | stream, group `workers` | one entry per job: `run` = run id, `lost` = deliveries lost before a release |
//! | `p:run:<id>` | hash | playbook, trigger, event, accepted_at, dead |
//! | `p:run:<id>:events` | stream | the run's journal: `e` = JSON event, `n` = seq, `p`/`h` = previous and own hash (`audit`) |
//! | `p:run:<id>:lock` | string | worker holding the run, with a TTL |
//! | `p:runs` | sorted set | run ids by acceptance time |
//! | `p:idem:delivery:<trigger>:<id>`, `p:idem:dedupe:<playbook>:<key>` | string, TTL | idempotency keys |
//! | `p:timers` | sorted set | run ids by due time |
//! | `p:ignored` | stream, capped | deliveries every playbook filtered out, field `d` = JSON |
//! | `p:trail` | stream | the global trail (`audit::TrailEntry`), chained like a journal |
//! | `p:activity` | stream, capped | every journal record across runs, `r` = run id, other fields as the run's stream |
//!
//! Journal records and trail entries are written by one task per process, several runs' writes
//! in one script call: see [`chains`].
//!
//! Cases and the steps waiting for approval have keys of their own: see [`case_keys`]. A console
//! session is `p:session:<SHA-256 of its id>`, a string that expires with it.

mod batch;
mod case_keys;
mod chains;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use cases::{CaseId, CaseSummary, Observable, Phase};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};
use runner::{Millis, RunEvent};
use serde::Serialize;

use crate::audit::{self, AuditRecord, GENESIS, TrailEntry};
use crate::error::Error;
use crate::limits::{Held, Limit, LimitState, Outcome};
use crate::{
    ActivityPage, ActivityRecord, Admission, ApprovalChanges, CaseMatch, CaseQuery, CaseWrite,
    Claim, Delivery, IGNORED_KEPT, Ignored, OpenedRun, PendingApproval, RunQuery, RunRecord,
    Session, Store, TrailPage, millis, repeat_of,
};
use chains::{Chains, Heads, RunRecords, Trailing, Write};

const GROUP: &str = "workers";

/// The Redis store. Cheap to clone: clones share one multiplexed connection that reconnects
/// by itself.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
    /// Where this process is in its look for jobs whose worker went quiet.
    orphan_scan: std::sync::Arc<std::sync::Mutex<OrphanScan>>,
    /// Each run's journal head as this process last wrote or read it.
    heads: Heads,
    /// Every journal write and trail entry of this process, grouped into script calls.
    chains: std::sync::Arc<Chains>,
    /// How many records the activity stream keeps (0: all of them).
    activity_max_len: u64,
}

/// The activity stream's default length: about 10,000 four-step runs, some 40 MB of Redis
/// memory (measured: 410 bytes a record).
pub const ACTIVITY_MAX_LEN: u64 = 100_000;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    accept: Script,
    ack: Script,
    extend: Script,
    release: Script,
    promote: Script,
    lock: Script,
    open: Script,
    unlock: Script,
    write_case: Script,
    swap: Script,
}

/// Replaces a key's value if it is still the one read (`""` for none): the compare-and-set under
/// which shared limits change. Returns 1 if it replaced it.
const SWAP: &str = r#"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// How long an untouched limit's state is kept.
const LIMIT_TTL_MS: u64 = 24 * 60 * 60 * 1000;

impl Scripts {
    fn new() -> Self {
        Scripts {
            accept: Script::new(ACCEPT),
            ack: Script::new(ACK),
            extend: Script::new(EXTEND),
            release: Script::new(RELEASE),
            promote: Script::new(PROMOTE),
            lock: Script::new(LOCK),
            open: Script::new(OPEN),
            unlock: Script::new(UNLOCK),
            write_case: Script::new(case_keys::WRITE_CASE),
            swap: Script::new(SWAP),
        }
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS
    /// verified against the public root certificates) and prepares the queue. All keys start
    /// with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, Error> {
        RedisStore::connect_trusting(url, prefix, None).await
    }

    /// The same, with a `rediss://` URL whose certificate is verified against `ca` (PEM
    /// certificates of a private certificate authority) instead of the public roots.
    pub async fn connect_trusting(
        url: &str,
        prefix: &str,
        ca: Option<Vec<u8>>,
    ) -> Result<RedisStore, Error> {
        let client = match ca {
            None => redis::Client::open(url)?,
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let connection = ConnectionManager::new_with_config(client, config).await?;
        let heads = Heads::default();
        let store = RedisStore {
            chains: std::sync::Arc::new(Chains::new(
                connection.clone(),
                heads.clone(),
                prefix,
                ACTIVITY_MAX_LEN,
            )),
            connection,
            prefix: prefix.to_owned(),
            scripts: std::sync::Arc::new(Scripts::new()),
            orphan_scan: Default::default(),
            heads,
            activity_max_len: ACTIVITY_MAX_LEN,
        };
        store.create_group().await?;
        Ok(store)
    }

    /// Keeps the newest `records` records in the activity stream (0: all). Trimming is
    /// approximate (whole stream nodes at a time), so slightly more may stay.
    pub fn with_activity_max_len(mut self, records: u64) -> Self {
        self.activity_max_len = records;
        self.chains = std::sync::Arc::new(Chains::new(
            self.connection.clone(),
            self.heads.clone(),
            &self.prefix,
            records,
        ));
        self
    }

    /// The consumer group must exist before the first job; `0` (not `$`) so jobs added before
    /// any worker ever ran are delivered too. A Redis still loading its data (just restarted) is
    /// waited for, up to a minute.
    async fn create_group(&self) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.key("jobs"))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut connection)
                .await;
            match created {
                Err(error)
                    if error.code() == Some("LOADING") && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) if error.code() != Some("BUSYGROUP") => return Err(error.into()),
                _ => return Ok(()),
            }
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn run_key(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}", self.prefix)
    }
}

/// The delivery as the accept script reads it. Numbers travel as strings: Lua's cjson would
/// turn them into doubles.
#[derive(Serialize)]
struct ScriptDelivery<'a> {
    trigger: &'a str,
    delivery_key: Option<String>,
    delivery_ttl_ms: String,
    received_at: String,
    runs: Vec<ScriptRun<'a>>,
    /// The ignored record (`[trigger, playbooks…]` as JSON), if any playbook filtered it out.
    ignored: Option<String>,
    genesis: &'static str,
    ignored_kept: String,
    activity_max_len: String,
}

#[derive(Serialize)]
struct ScriptRun<'a> {
    run_id: &'a str,
    playbook: &'a str,
    event: String,
    dedupe_key: Option<String>,
    window_ms: String,
    /// The run's first journal record (`RunEvent::RunAccepted`), and its hash.
    accepted: String,
    accepted_hash: String,
}

#[async_trait]
impl runner::Journal for RedisStore {
    async fn append(&self, run_id: &str, event: &RunEvent) -> Result<(), runner::Error> {
        self.append_all(run_id, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, run_id: &str, events: &[RunEvent]) -> Result<(), runner::Error> {
        let json = events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| runner::Error::Journal(error.to_string()))?;
        let approvals = match ApprovalChanges::of(events) {
            Some(changes) => self.approval_ops(run_id, &changes)?,
            None => String::new(),
        };
        let seal = audit::seal_status(events);
        self.chains
            .append(Write {
                run: Some(RunRecords {
                    run_id: run_id.to_owned(),
                    stream: format!("{}:events", self.run_key(run_id)),
                    events: json,
                    approvals,
                }),
                trailing: seal.map_or(Trailing::Nothing, Trailing::Seal),
            })
            .await?;
        if seal.is_some() {
            self.heads.forget(run_id);
        }
        Ok(())
    }
}

impl RedisStore {
    /// Reads, changes and writes one limit's state, again if another process changed it first.
    async fn change_limit<T>(
        &self,
        key: &str,
        mut change: impl FnMut(&mut LimitState) -> T,
    ) -> Result<T, Error> {
        let key = self.key(&format!("limit:{key}"));
        let mut connection = self.connection.clone();
        loop {
            let read: Option<String> = connection.get(&key).await?;
            let mut state = LimitState::parse(read.as_deref());
            let answer = change(&mut state);
            let swapped: i64 = self
                .scripts
                .swap
                .key(&key)
                .arg(read.unwrap_or_default())
                .arg(state.to_json())
                .arg(LIMIT_TTL_MS)
                .invoke_async(&mut connection)
                .await?;
            if swapped == 1 {
                return Ok(answer);
            }
        }
    }

    /// What the chain script does to the steps waiting for approval (JSON, see [`CHAIN`]).
    fn approval_ops(&self, run_id: &str, changes: &ApprovalChanges) -> Result<String, Error> {
        #[derive(Serialize)]
        struct Ops<'a> {
            waiting: String,
            steps: String,
            run: &'a str,
            requested: Vec<(&'a str, String)>,
            decided: &'a [String],
            ended: bool,
        }
        serde_json::to_string(&Ops {
            waiting: self.key("approvals"),
            steps: format!("{}:approvals", self.run_key(run_id)),
            run: run_id,
            requested: changes
                .requested
                .iter()
                .map(|(step, deadline)| (step.as_str(), deadline.to_string()))
                .collect(),
            decided: &changes.decided,
            ended: changes.ended,
        })
        .map_err(|error| Error::corrupt("approvals", error))
    }
}

/// Where a page after `cursor` (a stream entry id) starts in `XRANGE`.
fn exclusive_start(cursor: Option<&str>) -> Result<String, Error> {
    let Some(id) = cursor else {
        return Ok("-".into());
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    match id.split_once('-') {
        Some((millis, seq)) if digits(millis) && digits(seq) => Ok(format!("({id}")),
        _ => Err(Error::Cursor(id.into())),
    }
}

/// A run's record from its hash's fields.
fn run_record(run_id: &str, fields: &HashMap<String, String>) -> Result<RunRecord, Error> {
    let field = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| Error::corrupt(format!("run {run_id}"), format!("no `{name}`")))
    };
    let event = serde_json::from_str(&field("event")?)
        .map_err(|error| Error::corrupt(format!("run {run_id}"), error))?;
    let accepted_at = field("accepted_at")?
        .parse()
        .map_err(|error| Error::corrupt(format!("run {run_id}"), error))?;
    Ok(RunRecord {
        run_id: run_id.to_owned(),
        playbook: field("playbook")?,
        trigger: field("trigger")?,
        event,
        accepted_at,
        dead: fields.get("dead").cloned(),
    })
}

/// A run's event from its journal entry (`position`: the entry's stream id, or its index).
fn run_event(
    run_id: &str,
    position: impl std::fmt::Display,
    json: &str,
) -> Result<RunEvent, Error> {
    serde_json::from_str(json)
        .map_err(|error| Error::corrupt(format!("run {run_id} event {position}"), error))
}

fn audit_record(entry: &redis::streams::StreamId) -> AuditRecord {
    AuditRecord {
        seq: entry.get("n").unwrap_or(0),
        prev: entry.get("p").unwrap_or_default(),
        hash: entry.get("h").unwrap_or_default(),
        event: entry.get("e").unwrap_or_default(),
    }
}

/// The longest a process goes between two passes over the pending list for orphans.
const ORPHAN_PASS_EVERY: Duration = Duration::from_secs(1);

/// A process's look through the pending list for jobs whose worker went quiet. An orphan only
/// appears a whole lease after its worker's last renewal, so a pass every quarter lease (at most
/// [`ORPHAN_PASS_EVERY`]) finds it soon enough; an `XAUTOCLAIM` on every claim cost Redis more
/// than the job's `XREADGROUP` (47 µs against 15 µs a call, measured by `INFO commandstats`) and
/// the claim a second round trip.
#[derive(Debug)]
struct OrphanScan {
    /// Where the next `XAUTOCLAIM` starts: each call looks at a bounded slice of the pending
    /// list, so going on from the last call reaches every entry, however many are in flight.
    cursor: String,
    /// When the last pass began.
    began: Option<std::time::Instant>,
}

impl Default for OrphanScan {
    fn default() -> Self {
        OrphanScan {
            cursor: "0-0".into(),
            began: None,
        }
    }
}

impl OrphanScan {
    /// Where this claim's `XAUTOCLAIM` starts, if it makes one: a pass under way goes on with
    /// every claim until it has been through the list; a new one begins when it is due.
    fn next_cursor(&mut self, lease: Duration) -> Option<String> {
        if self.cursor != "0-0" {
            return Some(self.cursor.clone());
        }
        let due = self
            .began
            .is_none_or(|began| began.elapsed() >= (lease / 4).min(ORPHAN_PASS_EVERY));
        if due {
            self.began = Some(std::time::Instant::now());
        }
        due.then(|| self.cursor.clone())
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn accept(&self, delivery: &Delivery) -> Result<Vec<Admission>, Error> {
        let payload = ScriptDelivery {
            trigger: &delivery.trigger,
            delivery_key: delivery
                .delivery_id
                .as_ref()
                .map(|id| format!("delivery:{}:{id}", delivery.trigger)),
            delivery_ttl_ms: millis(delivery.delivery_ttl).max(1).to_string(),
            received_at: delivery.received_at.to_string(),
            runs: delivery
                .runs
                .iter()
                .map(|run| {
                    let accepted = run.accepted_json()?;
                    Ok(ScriptRun {
                        run_id: &run.run_id,
                        playbook: &run.playbook,
                        event: run.event.to_string(),
                        dedupe_key: run
                            .dedupe
                            .as_ref()
                            .map(|dedupe| format!("dedupe:{}:{}", run.playbook, dedupe.key)),
                        window_ms: run
                            .dedupe
                            .as_ref()
                            .map_or(1, |dedupe| dedupe.window_ms.max(1))
                            .to_string(),
                        accepted_hash: audit::record_hash(&run.run_id, 1, GENESIS, &accepted),
                        accepted,
                    })
                })
                .collect::<Result<_, Error>>()?,
            ignored: if delivery.ignored.is_empty() {
                None
            } else {
                let record = Ignored {
                    trigger: delivery.trigger.clone(),
                    playbooks: delivery.ignored.clone(),
                    received_at: delivery.received_at,
                };
                Some(
                    serde_json::to_string(&record)
                        .map_err(|error| Error::corrupt("ignored", error))?,
                )
            },
            ignored_kept: IGNORED_KEPT.to_string(),
            activity_max_len: self.activity_max_len.to_string(),
            genesis: GENESIS,
        };
        let payload =
            serde_json::to_string(&payload).map_err(|error| Error::corrupt("delivery", error))?;
        let mut connection = self.connection.clone();
        let (repeat, answer): (u8, String) = self
            .scripts
            .accept
            .arg(&self.prefix)
            .arg(payload)
            .invoke_async(&mut connection)
            .await?;
        if repeat == 1 {
            return repeat_of(&answer);
        }
        serde_json::from_str(&answer).map_err(|error| Error::corrupt("admissions", error))
    }

    async fn dedupe_run(&self, playbook: &str, key: &str) -> Result<Option<String>, Error> {
        let mut connection = self.connection.clone();
        Ok(connection
            .get(self.key(&format!("idem:dedupe:{playbook}:{key}")))
            .await?)
    }

    async fn ignored(&self, limit: usize) -> Result<Vec<Ignored>, Error> {
        let mut connection = self.connection.clone();
        let reply: redis::streams::StreamRangeReply = connection
            .xrevrange_count(self.key("ignored"), "+", "-", limit)
            .await?;
        reply
            .ids
            .iter()
            .map(|entry| {
                let json: String = entry
                    .get("d")
                    .ok_or_else(|| Error::corrupt("ignored", "no `d` field"))?;
                serde_json::from_str(&json).map_err(|error| Error::corrupt("ignored", error))
            })
            .collect()
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, Error> {
        let mut connection = self.connection.clone();
        let fields: HashMap<String, String> = connection.hgetall(self.run_key(run_id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        run_record(run_id, &fields).map(Some)
    }

    async fn events(&self, run_id: &str) -> Result<Vec<RunEvent>, Error> {
        let mut connection = self.connection.clone();
        let reply: redis::streams::StreamRangeReply = connection
            .xrange_all(format!("{}:events", self.run_key(run_id)))
            .await?;
        reply
            .ids
            .iter()
            .map(|entry| {
                let json: String = entry.get("e").ok_or_else(|| {
                    Error::corrupt(format!("run {run_id} event {}", entry.id), "no `e` field")
                })?;
                run_event(run_id, &entry.id, &json)
            })
            .collect()
    }

    async fn open_run(
        &self,
        run_id: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<OpenedRun, Error> {
        let mut connection = self.connection.clone();
        let run_key = self.run_key(run_id);
        type Opened = (i8, HashMap<String, String>, Vec<String>, u64, String);
        let (taken, fields, events, last, hash): Opened = self
            .scripts
            .open
            .key(&run_key)
            .key(format!("{run_key}:lock"))
            .key(format!("{run_key}:events"))
            .arg(worker)
            .arg(millis(lease).max(1))
            .invoke_async(&mut connection)
            .await?;
        Ok(match taken {
            OPEN_MISSING => OpenedRun::Missing,
            OPEN_DEAD => OpenedRun::Dead,
            OPEN_BUSY => OpenedRun::Busy,
            _ => {
                let opened = OpenedRun::Locked {
                    record: run_record(run_id, &fields)?,
                    events: events
                        .iter()
                        .enumerate()
                        .map(|(index, json)| run_event(run_id, index, json))
                        .collect::<Result<_, _>>()?,
                };
                // The advance's first write links to this head instead of reading it again:
                // one round trip per advance fewer. Should another process append meanwhile,
                // the chain script refuses the write and says where the head went.
                let hash = if hash.is_empty() {
                    GENESIS.to_owned()
                } else {
                    hash
                };
                self.heads.remember(run_id, (last, hash));
                opened
            }
        })
    }

    async fn audit_records(&self, run_id: &str) -> Result<Vec<AuditRecord>, Error> {
        let mut connection = self.connection.clone();
        let reply: redis::streams::StreamRangeReply = connection
            .xrange_all(format!("{}:events", self.run_key(run_id)))
            .await?;
        Ok(reply.ids.iter().map(audit_record).collect())
    }

    async fn run_ids(&self) -> Result<Vec<String>, Error> {
        let mut connection = self.connection.clone();
        Ok(connection.zrange(self.key("runs"), 0, -1).await?)
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, Error> {
        let mut connection = self.connection.clone();
        let mut runs = Vec::new();
        let mut max = match (&query.after, query.until) {
            (Some((at, _)), Some(until)) => (*at).min(until),
            (Some((at, _)), None) => *at,
            (None, Some(until)) => until,
            (None, None) => u64::MAX,
        };
        let min = query.since.unwrap_or(0);
        let mut skip_from = query.after.clone();
        let mut offset = 0;
        // The index holds every run: filter by playbook while paging, a bounded number of pages.
        for _ in 0..100 {
            if runs.len() >= query.limit {
                break;
            }
            let page: Vec<(String, u64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(self.key("runs"))
                .arg(if max == u64::MAX {
                    "+inf".to_owned()
                } else {
                    max.to_string()
                })
                .arg(min)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(offset)
                .arg(500)
                .query_async(&mut connection)
                .await?;
            let Some((_, last_score)) = page.last().cloned() else {
                break;
            };
            let full = page.len() == 500;
            for (run_id, accepted_at) in page {
                // Ties on the cursor's millisecond: only ids below the cursor's come after it.
                if let Some((at, id)) = &skip_from
                    && accepted_at == *at
                    && run_id >= *id
                {
                    continue;
                }
                if runs.len() >= query.limit {
                    break;
                }
                if let Some(record) = self.run(&run_id).await?
                    && query
                        .playbook
                        .as_ref()
                        .is_none_or(|playbook| *playbook == record.playbook)
                {
                    runs.push(record);
                }
            }
            if !full {
                break;
            }
            // Continue below the last score seen; entries sharing it are skipped by offset.
            if last_score == max {
                offset += 500;
            } else {
                max = last_score;
                offset = 0;
                skip_from = None;
            }
        }
        Ok(runs)
    }

    async fn trail_append(&self, entry: &TrailEntry) -> Result<(), Error> {
        let json = serde_json::to_string(entry).map_err(|error| Error::corrupt("trail", error))?;
        self.chains
            .append(Write {
                run: None,
                trailing: Trailing::Entry(json),
            })
            .await
    }

    async fn trail_page(&self, after: Option<&str>, limit: usize) -> Result<TrailPage, Error> {
        let from = exclusive_start(after)?;
        let mut connection = self.connection.clone();
        let reply: redis::streams::StreamRangeReply = connection
            .xrange_count(self.key("trail"), from, "+", limit.max(1))
            .await?;
        Ok(TrailPage {
            next: reply.ids.last().map(|entry| entry.id.clone()),
            records: reply.ids.iter().map(audit_record).collect(),
        })
    }

    async fn trail_tail(&self, limit: usize) -> Result<Vec<AuditRecord>, Error> {
        let mut connection = self.connection.clone();
        let reply: redis::streams::StreamRangeReply = connection
            .xrevrange_count(self.key("trail"), "+", "-", limit.max(1))
            .await?;
        Ok(reply.ids.iter().map(audit_record).collect())
    }

    async fn activity_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ActivityPage, Error> {
        let from = exclusive_start(after)?;
        let mut connection = self.connection.clone();
        let reply: redis::streams::StreamRangeReply = connection
            .xrange_count(self.key("activity"), from, "+", limit.max(1))
            .await?;
        Ok(ActivityPage {
            next: reply.ids.last().map(|entry| entry.id.clone()),
            records: reply
                .ids
                .iter()
                .map(|entry| ActivityRecord {
                    run_id: entry.get("r").unwrap_or_default(),
                    record: audit_record(entry),
                })
                .collect(),
        })
    }

    async fn dead_letter(&self, run_id: &str, reason: &str) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: () = connection
            .hset(self.run_key(run_id), "dead", reason)
            .await?;
        Ok(())
    }

    async fn revive(&self, run_id: &str) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: () = connection.hdel(self.run_key(run_id), "dead").await?;
        Ok(())
    }

    async fn push(&self, run_id: &str) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: String = connection
            .xadd(self.key("jobs"), "*", &[("run", run_id)])
            .await?;
        Ok(())
    }

    async fn claim(&self, worker: &str, max: usize, lease: Duration) -> Result<Vec<Claim>, Error> {
        let jobs = self.key("jobs");
        let mut connection = self.connection.clone();
        let mut claims = Vec::new();
        // Orphans first: entries idle (unrenewed) for longer than a lease lost their worker.
        // The scan is plain data: a panic elsewhere while it was locked leaves it usable.
        let scan = || {
            self.orphan_scan
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let cursor = scan().next_cursor(lease);
        let entries = match cursor {
            Some(cursor) => {
                let orphans: Value = redis::cmd("XAUTOCLAIM")
                    .arg(&jobs)
                    .arg(GROUP)
                    .arg(worker)
                    .arg(millis(lease))
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut connection)
                    .await?;
                let (next_cursor, entries) = autoclaimed_entries(orphans)?;
                scan().cursor = next_cursor;
                entries
            }
            None => Vec::new(),
        };
        for (job_id, job) in entries {
            let Some(JobFields { run_id, lost }) = job else {
                // The entry was deleted under us (acked by its slow worker): drop the lease.
                let _: () = connection.xack(&jobs, GROUP, &[&job_id]).await?;
                continue;
            };
            let pending: redis::streams::StreamPendingCountReply = connection
                .xpending_count(&jobs, GROUP, &job_id, &job_id, 1)
                .await?;
            let deliveries = lost
                + pending
                    .ids
                    .first()
                    .map_or(1, |entry| entry.times_delivered as u32);
            claims.push(Claim {
                job_id,
                run_id,
                deliveries,
            });
        }
        if claims.len() < max {
            let options = redis::streams::StreamReadOptions::default()
                .group(GROUP, worker)
                .count(max - claims.len());
            let reply: Option<redis::streams::StreamReadReply> =
                connection.xread_options(&[&jobs], &[">"], &options).await?;
            for key in reply.map(|reply| reply.keys).unwrap_or_default() {
                for entry in key.ids {
                    let run_id: Option<String> = entry.get("run");
                    let lost: u32 = entry.get("lost").unwrap_or(0);
                    match run_id {
                        Some(run_id) => claims.push(Claim {
                            job_id: entry.id,
                            run_id,
                            deliveries: lost + 1,
                        }),
                        None => {
                            let _: () = connection.xack(&jobs, GROUP, &[&entry.id]).await?;
                        }
                    }
                }
            }
        }
        Ok(claims)
    }

    async fn extend(
        &self,
        worker: &str,
        job_ids: &[String],
        _lease: Duration,
    ) -> Result<(), Error> {
        if job_ids.is_empty() {
            return Ok(());
        }
        // A lease is the entry's idle time in the pending list: claiming it again resets it.
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.extend.key(self.key("jobs"));
        invocation.arg(GROUP).arg(worker);
        for id in job_ids {
            invocation.arg(id);
        }
        let _: () = invocation.invoke_async(&mut connection).await?;
        Ok(())
    }

    async fn ack(&self, worker: &str, jobs: &[Claim]) -> Result<(), Error> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.ack.key(self.key("jobs"));
        invocation.arg(GROUP).arg(worker);
        for job in jobs {
            invocation
                .key(format!("{}:lock", self.run_key(&job.run_id)))
                .arg(&job.job_id);
        }
        let _: () = invocation.invoke_async(&mut connection).await?;
        Ok(())
    }

    async fn release(&self, worker: &str, job_ids: &[String]) -> Result<(), Error> {
        if job_ids.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.release.key(self.key("jobs"));
        invocation.arg(GROUP).arg(worker);
        for id in job_ids {
            invocation.arg(id);
        }
        let _: () = invocation.invoke_async(&mut connection).await?;
        Ok(())
    }

    async fn queue_depth(&self) -> Result<u64, Error> {
        let mut connection = self.connection.clone();
        Ok(connection.xlen(self.key("jobs")).await?)
    }

    async fn schedule(&self, run_id: &str, due: Millis) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: () = redis::cmd("ZADD")
            .arg(self.key("timers"))
            .arg("LT")
            .arg(due)
            .arg(run_id)
            .query_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn promote_due(&self, now: Millis) -> Result<usize, Error> {
        let mut connection = self.connection.clone();
        let promoted: usize = self
            .scripts
            .promote
            .key(self.key("timers"))
            .key(self.key("jobs"))
            .arg(now)
            .invoke_async(&mut connection)
            .await?;
        Ok(promoted)
    }

    async fn lock_run(&self, run_id: &str, worker: &str, lease: Duration) -> Result<bool, Error> {
        let mut connection = self.connection.clone();
        let taken: u8 = self
            .scripts
            .lock
            .key(format!("{}:lock", self.run_key(run_id)))
            .arg(worker)
            .arg(millis(lease).max(1))
            .invoke_async(&mut connection)
            .await?;
        Ok(taken == 1)
    }

    async fn unlock_run(&self, run_id: &str, worker: &str) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: () = self
            .scripts
            .unlock
            .key(format!("{}:lock", self.run_key(run_id)))
            .arg(worker)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn pending_approvals(&self, limit: usize) -> Result<Vec<PendingApproval>, Error> {
        self.approvals(limit).await
    }

    async fn next_case_id(&self) -> Result<CaseId, Error> {
        self.next_case().await
    }

    async fn write_case(&self, write: &CaseWrite) -> Result<bool, Error> {
        self.store_case(write).await
    }

    async fn case_records(&self, case: CaseId) -> Result<Vec<AuditRecord>, Error> {
        self.read_case_records(case).await
    }

    async fn find_case(
        &self,
        key: &str,
        observables: &[Observable],
        seen_since: Millis,
        _now: Millis,
    ) -> Result<Option<CaseMatch>, Error> {
        // Keys expire in Redis itself.
        self.find(key, observables, seen_since).await
    }

    async fn case_of_run(&self, run_id: &str) -> Result<Option<CaseId>, Error> {
        self.run_case(run_id).await
    }

    async fn list_cases(&self, query: &CaseQuery) -> Result<Vec<CaseSummary>, Error> {
        self.cases(query).await
    }

    async fn case_counts(&self) -> Result<BTreeMap<Phase, u64>, Error> {
        self.counts().await
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, Error> {
        self.all_cases().await
    }

    async fn put_session(&self, id_hash: &str, session: &Session) -> Result<(), Error> {
        let json =
            serde_json::to_string(session).map_err(|error| Error::corrupt("session", error))?;
        let mut connection = self.connection.clone();
        let _: () = redis::cmd("SET")
            .arg(self.key(&format!("session:{id_hash}")))
            .arg(json)
            .arg("PXAT")
            .arg(session.expires_at.max(1))
            .query_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: Millis) -> Result<Option<Session>, Error> {
        let mut connection = self.connection.clone();
        let json: Option<String> = connection
            .get(self.key(&format!("session:{id_hash}")))
            .await?;
        let session: Option<Session> = json
            .map(|json| {
                serde_json::from_str(&json).map_err(|error| Error::corrupt("session", error))
            })
            .transpose()?;
        Ok(session.filter(|session| session.expires_at > now))
    }

    async fn end_session(&self, id_hash: &str) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: () = connection
            .del(self.key(&format!("session:{id_hash}")))
            .await?;
        Ok(())
    }

    async fn take_slot(
        &self,
        key: &str,
        holder: &str,
        limit: &Limit,
        now: Millis,
        lease_end: Millis,
    ) -> Result<Result<(), Held>, Error> {
        self.change_limit(key, |state| state.take(holder, limit, now, lease_end))
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
        self.change_limit(key, |state| state.give_back(holder, limit, outcome, now))
            .await
    }

    async fn ping(&self) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }
}

/// A job entry's fields: the run, and how many earlier deliveries were lost before a release.
struct JobFields {
    run_id: String,
    lost: u32,
}

/// `XAUTOCLAIM`'s reply: `[cursor, [[id, [field, value, …]] | nil, …], [deleted ids]]`. Entries
/// deleted while pending come back without data (Redis 7) or as nil (6.2).
/// The cursor for the next scan (`0-0` once the whole list was scanned), and each entry's id
/// with its fields (none when the entry was deleted while pending).
type Autoclaimed = (String, Vec<(String, Option<JobFields>)>);

/// Returns the cursor for the next scan and the entries.
fn autoclaimed_entries(reply: Value) -> Result<Autoclaimed, Error> {
    let Value::Array(parts) = reply else {
        return Err(Error::corrupt("XAUTOCLAIM reply", "not an array"));
    };
    let cursor = parts
        .first()
        .and_then(bulk_string)
        .unwrap_or_else(|| "0-0".into());
    let mut entries = Vec::new();
    if let Some(Value::Array(claimed)) = parts.get(1) {
        for entry in claimed {
            let Value::Array(pair) = entry else { continue };
            let Some(id) = pair.first().and_then(bulk_string) else {
                continue;
            };
            let field = |name: &str| match pair.get(1) {
                Some(Value::Array(fields)) => fields
                    .chunks(2)
                    .find(|field| field.first().and_then(bulk_string).as_deref() == Some(name))
                    .and_then(|field| field.get(1).and_then(bulk_string)),
                _ => None,
            };
            let job = field("run").map(|run_id| JobFields {
                run_id,
                lost: field("lost")
                    .and_then(|lost| lost.parse().ok())
                    .unwrap_or(0),
            });
            entries.push((id, job));
        }
    }
    if let Some(Value::Array(deleted)) = parts.get(2) {
        entries.extend(deleted.iter().filter_map(bulk_string).map(|id| (id, None)));
    }
    Ok((cursor, entries))
}

fn bulk_string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// ARGV: prefix, delivery JSON. Returns `{1, earlier answer}` for a repeated delivery id, else
/// `{0, answer}` after storing idempotency keys, run records and jobs.
const ACCEPT: &str = r#"
local p = ARGV[1]
local d = cjson.decode(ARGV[2])
local max_len = d.activity_max_len
local function copy(fields)
  if max_len ~= '0' then
    redis.call('XADD', p .. ':activity', 'MAXLEN', '~', max_len, '*', unpack(fields))
  else
    redis.call('XADD', p .. ':activity', '*', unpack(fields))
  end
end
local delivery_key = d.delivery_key ~= cjson.null and d.delivery_key or nil
if delivery_key then
  local earlier = redis.call('GET', p .. ':idem:' .. delivery_key)
  if earlier then return {1, earlier} end
end
local out = {}
for _, r in ipairs(d.runs) do
  local earlier = false
  if r.dedupe_key ~= cjson.null then
    local key = p .. ':idem:' .. r.dedupe_key
    earlier = redis.call('GET', key)
    if not earlier then redis.call('SET', key, r.run_id, 'PX', r.window_ms) end
  end
  if earlier then
    out[#out + 1] = {playbook = r.playbook, run_id = earlier, duplicate = true}
  else
    redis.call('HSET', p .. ':run:' .. r.run_id, 'playbook', r.playbook, 'trigger', d.trigger,
      'event', r.event, 'accepted_at', d.received_at)
    redis.call('ZADD', p .. ':runs', d.received_at, r.run_id)
    redis.call('XADD', p .. ':jobs', '*', 'run', r.run_id)
    redis.call('XADD', p .. ':run:' .. r.run_id .. ':events', '*', 'e', r.accepted, 'n', 1,
      'p', d.genesis, 'h', r.accepted_hash)
    copy({'r', r.run_id, 'e', r.accepted, 'n', 1, 'p', d.genesis, 'h', r.accepted_hash})
    out[#out + 1] = {playbook = r.playbook, run_id = r.run_id, duplicate = false}
  end
end
local answer = '[]'
if #out > 0 then answer = cjson.encode(out) end
if d.ignored ~= cjson.null and d.ignored ~= nil then
  redis.call('XADD', p .. ':ignored', 'MAXLEN', '~', d.ignored_kept, '*', 'd', d.ignored)
end
if delivery_key then
  redis.call('SET', p .. ':idem:' .. delivery_key, answer, 'PX', d.delivery_ttl_ms)
end
return {0, answer}
"#;

/// KEYS: jobs, then each job's run lock. ARGV: group, worker, then each job's id. One script
/// rather than MULTI/XACK/XDEL/EXEC: half the commands on the path every run takes; each run's
/// lock is released as [`UNLOCK`] does, if `worker` still holds it.
const ACK: &str = r#"
for i = 3, #ARGV do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  if redis.call('GET', KEYS[i - 1]) == ARGV[2] then redis.call('DEL', KEYS[i - 1]) end
end
"#;

/// KEYS: jobs. ARGV: group, worker, ids…: resets the idle time of the entries the worker still
/// owns (another worker may have taken one over after a lapse; that one is left alone).
const EXTEND: &str = r#"
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
"#;

/// KEYS: jobs. ARGV: group, worker, ids…: re-adds the worker's entries as new jobs and drops the
/// old ones, so they are handed out at once. The new entry's `lost` field carries the earlier
/// failed deliveries forward; the released one does not count.
const RELEASE: &str = r#"
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if entry[1] then
      local fields = entry[1][2]
      local run, lost = nil, 0
      for f = 1, #fields, 2 do
        if fields[f] == 'run' then run = fields[f + 1] end
        if fields[f] == 'lost' then lost = tonumber(fields[f + 1]) or 0 end
      end
      if run then
        redis.call('XADD', KEYS[1], '*', 'run', run, 'lost', lost + pending[1][4] - 1)
      end
    end
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
"#;

/// KEYS: timers, jobs. ARGV: now. Moves due timers into the queue.
const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, run_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], run_id)
  redis.call('XADD', KEYS[2], '*', 'run', run_id)
end
return #due
"#;

/// KEYS: lock. ARGV: worker, lease ms.
const LOCK: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// What [`OPEN`] found, in its reply's first element.
const OPEN_MISSING: i8 = -1;
const OPEN_DEAD: i8 = -2;
const OPEN_BUSY: i8 = 0;

/// KEYS: run, lock, events. ARGV: worker, lease ms. Unless the run is missing or dead, takes its
/// lock as [`LOCK`] does; once locked, replies {1, the run's fields, its journal's `e` values, the
/// last record's `n` and `h`} (0 and "" for an empty journal).
const OPEN: &str = r#"
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {-1, {}, {}, 0, ''} end
if redis.call('HEXISTS', KEYS[1], 'dead') == 1 then return {-2, {}, {}, 0, ''} end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return {0, {}, {}, 0, ''} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local events, seq, hash = {}, 0, ''
for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', '+')) do
  local values, event = entry[2], ''
  seq, hash = 0, ''
  for i = 1, #values, 2 do
    if values[i] == 'e' then event = values[i + 1]
    elseif values[i] == 'n' then seq = tonumber(values[i + 1]) or 0
    elseif values[i] == 'h' then hash = values[i + 1] end
  end
  events[#events + 1] = event
end
return {1, fields, events, seq, hash}
"#;

/// KEYS: lock. ARGV: worker.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"#;
