//! Group commit for the chains: every journal write and trail entry of this process goes to one
//! writer task, which links what has queued up to its chains and sends it all in one call of
//! [`CHAIN`]. A worker advancing many runs at once made one script call per journal write, each
//! with its own encoding, wake-ups and Lua call in Redis; the writes of one moment now share one.
//! And since the writer is the only one in the process that appends to the trail, runs sealed at
//! the same moment are linked one after the other in the same call, instead of waiting for each
//! other's round trips.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::batch::{Queue, gather};
use crate::audit::{self, AuditRecord, GENESIS};
use crate::error::Error;

/// A write for the chains: records for a run's journal, an entry for the trail, or both, all
/// appended or none.
pub(super) struct Write {
    pub run: Option<RunRecords>,
    pub trailing: Trailing,
}

/// Records for a run's journal.
pub(super) struct RunRecords {
    pub run_id: String,
    /// The run's journal stream.
    pub stream: String,
    /// Each event's JSON, in order.
    pub events: Vec<String>,
    /// What the script does to the steps waiting for approval (JSON, see [`CHAIN`]), or empty.
    pub approvals: String,
}

/// What a write appends to the trail.
pub(super) enum Trailing {
    Nothing,
    /// The run's records end it (or one of its undos) with this status: its seal.
    Seal(&'static str),
    /// An entry of its own (a call to the management API), as JSON.
    Entry(String),
}

/// Each run's last journal record (`seq`, hash) as this process last wrote or read it: the
/// next write links to it without reading it. Shared by the store (which learns heads when it
/// opens a run) and the writer.
#[derive(Clone, Default)]
pub(super) struct Heads(Arc<Mutex<HashMap<String, (u64, String)>>>);

/// Chain heads kept per process before the cache starts over.
const MAX_CACHED_HEADS: usize = 100_000;

impl Heads {
    fn get(&self, run_id: &str) -> Option<(u64, String)> {
        self.0.lock().ok()?.get(run_id).cloned()
    }

    pub(super) fn remember(&self, run_id: &str, head: (u64, String)) {
        if let Ok(mut heads) = self.0.lock() {
            if heads.len() > MAX_CACHED_HEADS {
                heads.clear();
            }
            heads.insert(run_id.to_owned(), head);
        }
    }

    pub(super) fn forget(&self, run_id: &str) {
        if let Ok(mut heads) = self.0.lock() {
            heads.remove(run_id);
        }
    }
}

/// The queue to the writer task.
pub(super) struct Chains {
    queue: Queue<Pending>,
    /// What each writer task starts from.
    writer: Writer,
}

impl Chains {
    /// The chains of the store whose keys start with `prefix`, whose activity stream keeps
    /// `activity_max_len` records (0: all).
    pub(super) fn new(
        connection: ConnectionManager,
        heads: Heads,
        prefix: &str,
        activity_max_len: u64,
    ) -> Self {
        Chains {
            queue: Queue::default(),
            writer: Writer {
                connection,
                script: Script::new(CHAIN),
                heads,
                trail_head: None,
                activity: format!("{prefix}:activity"),
                trail: format!("{prefix}:trail"),
                activity_max_len,
            },
        }
    }

    /// Appends `write`, with whatever else is queued at the time.
    pub(super) async fn append(&self, write: Write) -> Result<(), Error> {
        let (done, landed) = oneshot::channel();
        let pending = Pending {
            write,
            done,
            tries: 0,
            trail_moved: false,
        };
        self.queue.send(pending, |receiver| {
            tokio::spawn(self.writer.clone().run(receiver));
        })?;
        landed
            .await
            .map_err(|_| Error::Config("the journal writer stopped before answering".into()))?
    }
}

/// Writes queued together in one script call at most: a bound on the call's size.
const MAX_BATCH: usize = 64;

/// How many times a write re-links its records to a chain that moved under it before it fails.
/// Every worker process seals its runs to the one global trail, so with several processes the
/// trail moves often; each try links to the head the last one found (no extra read).
const CHAIN_TRIES: u32 = 200;

/// Tries made at once after the trail moved, before the writer waits between tries: among
/// many processes at once, the random waits are what lets each land.
const TRIES_AT_ONCE: u32 = 16;

/// A write in the writer's hands, with the tries it has had.
struct Pending {
    write: Write,
    done: oneshot::Sender<Result<(), Error>>,
    tries: u32,
    /// Why its last try failed, for the error once the tries run out.
    trail_moved: bool,
}

/// A write as linked for one try.
struct Linked {
    run: Option<((u64, String), Vec<AuditRecord>)>,
    trailing: Option<AuditRecord>,
}

#[derive(Clone)]
struct Writer {
    connection: ConnectionManager,
    script: Script,
    heads: Heads,
    /// The trail's last record as this process last wrote or saw it.
    trail_head: Option<(u64, String)>,
    activity: String,
    trail: String,
    activity_max_len: u64,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Pending>) {
        let mut pending = Vec::new();
        while gather(&mut queue, &mut pending, MAX_BATCH).await {
            pending = self.write(pending).await;
            let waited_on_trail = pending
                .iter()
                .filter(|write| write.trail_moved)
                .map(|write| write.tries)
                .max();
            if let Some(tries) = waited_on_trail {
                back_off(tries).await;
            }
        }
    }

    /// Tries `batch` once; answers the writes that landed or failed for good, and returns the
    /// ones to try again.
    async fn write(&mut self, batch: Vec<Pending>) -> Vec<Pending> {
        // A run's second write waits for the next call: it links to the first one's records.
        let mut runs = HashSet::new();
        let (batch, later): (Vec<Pending>, Vec<Pending>) = batch.into_iter().partition(|write| {
            write
                .write
                .run
                .as_ref()
                .is_none_or(|run| runs.insert(run.run_id.clone()))
        });
        let linked = match self.link(&batch).await {
            Ok(linked) => linked,
            Err(error) => return fail_all(batch, error, later),
        };
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&self.activity)
            .key(&self.trail)
            .arg(self.activity_max_len);
        let trail_from = self.trail_head.clone().unwrap_or((0, GENESIS.to_owned()));
        invocation.arg(&trail_from.1).arg(trail_from.0 + 1);
        for (write, linked) in batch.iter().zip(&linked) {
            let run = write.write.run.as_ref();
            invocation.key(run.map_or(&self.trail, |run| &run.stream));
            invocation
                .arg(run.map_or("", |run| run.run_id.as_str()))
                .arg(run.map_or("", |run| run.approvals.as_str()));
            match &linked.run {
                Some(((last, prev), records)) => {
                    invocation.arg(prev).arg(last + 1).arg(records.len());
                    for record in records {
                        invocation.arg(&record.event).arg(&record.hash);
                    }
                }
                None => {
                    invocation.arg("").arg(0).arg(0);
                }
            }
            match &linked.trailing {
                Some(record) => invocation.arg(&record.event).arg(&record.hash),
                None => invocation.arg("").arg(""),
            };
        }
        let mut connection = self.connection.clone();
        let replies = match invocation
            .invoke_async::<Vec<(u8, u64, String)>>(&mut connection)
            .await
        {
            Ok(replies) if replies.len() == batch.len() => replies,
            Ok(replies) => {
                let error = Error::corrupt(
                    "chain script reply",
                    format!("{} answers for {} writes", replies.len(), batch.len()),
                );
                return fail_all(batch, error, later);
            }
            Err(error) => return fail_all(batch, Error::Redis(error), later),
        };
        let mut again = later;
        for ((mut write, linked), (moved, seq, head)) in batch.into_iter().zip(linked).zip(replies)
        {
            match moved {
                LANDED => {
                    if let (Some(run), Some((_, records))) = (&write.write.run, &linked.run)
                        && let Some(last) = records.last()
                    {
                        self.heads
                            .remember(&run.run_id, (last.seq, last.hash.clone()));
                    }
                    if let Some(record) = &linked.trailing {
                        self.trail_head = Some((record.seq, record.hash.clone()));
                    }
                    let _ = write.done.send(Ok(()));
                    continue;
                }
                RUN_MOVED => {
                    if let Some(run) = &write.write.run {
                        self.heads.remember(&run.run_id, (seq, head));
                    }
                    write.trail_moved = false;
                }
                TRAIL_MOVED => {
                    self.trail_head = Some((seq, head));
                    write.trail_moved = true;
                }
                // Its seal followed one that could not land.
                _ => write.trail_moved = true,
            }
            write.tries += 1;
            if write.tries < CHAIN_TRIES {
                again.push(write);
            } else {
                let error = write.gave_up();
                let _ = write.done.send(Err(error));
            }
        }
        again
    }

    /// Links each write's records to its run's head and its trail entry after the one before.
    async fn link(&mut self, batch: &[Pending]) -> Result<Vec<Linked>, Error> {
        let mut linked = Vec::with_capacity(batch.len());
        // The head the next trail entry links to: the last one linked in this batch.
        let mut trail_head = None;
        for Pending { write, .. } in batch {
            let run = match &write.run {
                Some(run) => {
                    let head = match self.heads.get(&run.run_id) {
                        Some(head) => head,
                        None => read_head(&mut self.connection.clone(), &run.stream).await?,
                    };
                    let records = audit::link(&run.run_id, (head.0, &head.1), run.events.clone());
                    Some((head, records))
                }
                None => None,
            };
            let last_record = run.as_ref().and_then(|(_, records)| records.last());
            let entry = match (&write.trailing, &write.run, last_record) {
                (Trailing::Entry(json), _, _) => Some(json.clone()),
                (Trailing::Seal(status), Some(sealed), Some(last)) => {
                    let seal = audit::sealed(&sealed.run_id, status, last);
                    Some(
                        serde_json::to_string(&seal)
                            .map_err(|error| Error::corrupt("trail", error))?,
                    )
                }
                _ => None,
            };
            let trailing = match entry {
                Some(entry) => {
                    let (last, prev) = match trail_head.take() {
                        Some(head) => head,
                        None => self.trail_head().await?,
                    };
                    let record = audit::link(audit::TRAIL, (last, &prev), vec![entry]).pop();
                    trail_head = record
                        .as_ref()
                        .map(|record| (record.seq, record.hash.clone()));
                    record
                }
                None => None,
            };
            linked.push(Linked { run, trailing });
        }
        Ok(linked)
    }

    /// The trail's head as this process last saw it, read once if it has not seen it yet.
    async fn trail_head(&mut self) -> Result<(u64, String), Error> {
        if let Some(head) = &self.trail_head {
            return Ok(head.clone());
        }
        let head = read_head(&mut self.connection.clone(), &self.trail).await?;
        self.trail_head = Some(head.clone());
        Ok(head)
    }
}

/// A chain's last record: its `seq` and hash (0 and the genesis hash for an empty one).
async fn read_head(
    connection: &mut ConnectionManager,
    stream: &str,
) -> Result<(u64, String), Error> {
    use redis::AsyncCommands;
    let reply: redis::streams::StreamRangeReply =
        connection.xrevrange_count(stream, "+", "-", 1).await?;
    Ok(match reply.ids.first() {
        Some(entry) => (
            entry.get("n").unwrap_or(0),
            entry.get("h").unwrap_or_else(|| GENESIS.to_owned()),
        ),
        None => (0, GENESIS.to_owned()),
    })
}

impl Pending {
    fn gave_up(&self) -> Error {
        Error::Config(match (&self.write.run, self.trail_moved) {
            (Some(run), false) => format!(
                "the journal of run {} kept changing under this process; is another process writing to it?",
                run.run_id
            ),
            _ => {
                "the audit trail kept changing under this process; too many writers at once".into()
            }
        })
    }
}

/// Answers every write of `batch` with `error`; returns `later`, the writes not tried.
fn fail_all(batch: Vec<Pending>, error: Error, later: Vec<Pending>) -> Vec<Pending> {
    for write in batch {
        let error = match &error {
            Error::Redis(error) => Error::Redis(error.clone()),
            Error::Corrupt { what, reason } => Error::corrupt(what, reason),
            other => Error::Config(other.to_string()),
        };
        let _ = write.done.send(Err(error));
    }
    later
}

/// A random wait of up to `try_number` ms (at most 10), before the writer tries again; none for
/// the first [`TRIES_AT_ONCE`].
async fn back_off(try_number: u32) {
    if try_number < TRIES_AT_ONCE {
        return;
    }
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let bound = u64::from((try_number - TRIES_AT_ONCE).clamp(1, 10)) * 1_000;
    tokio::time::sleep(Duration::from_micros(random % bound)).await;
}

/// What [`CHAIN`] answers for a write, with the chain's head (`seq`, hash) when it moved.
const LANDED: u8 = 0;
const RUN_MOVED: u8 = 1;
const TRAIL_MOVED: u8 = 2;

/// Appends several writes, each all or nothing. KEYS: the activity stream, the trail, then each
/// write's journal (the trail again for a write without one). ARGV: the activity stream's
/// length bound (`0`: none), the trail head the first trail entry links to (hash, next `seq`),
/// then for each write: run id (empty: none), approvals (JSON or empty), the journal head its
/// records link to (hash, next `seq`), their number, each record's JSON and hash, then its trail
/// entry's JSON and hash (empty: none).
///
/// A write lands if its journal's head is still the one it linked to. Trail entries are linked
/// one after the other, so they land all together or none: if the trail moved, or a write with
/// an entry could not land, no entry does. Answers, per write: `{0, 0, ''}` landed, `{1, seq,
/// hash}` its journal moved (to that head), `{2, seq, hash}` the trail moved, `{3, 0, ''}` another
/// write's entry kept its own out. Approvals: `waiting` (the sorted set of steps waiting, by
/// deadline), `steps` (the run's set of them), `run`, `requested` (step, deadline pairs),
/// `decided` (steps), `ended` (the run ended: none waits any more).
const CHAIN: &str = r#"
local activity, trail, max_len = KEYS[1], KEYS[2], ARGV[1]
local function head_of(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  local head, n = '0000000000000000000000000000000000000000000000000000000000000000', 0
  if last[1] then
    local fields = last[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'h' then head = fields[i + 1] end
      if fields[i] == 'n' then n = tonumber(fields[i + 1]) end
    end
  end
  return n, head
end
local function copy(fields)
  if max_len ~= '0' then
    redis.call('XADD', activity, 'MAXLEN', '~', max_len, '*', unpack(fields))
  else
    redis.call('XADD', activity, '*', unpack(fields))
  end
end
local function approve(approvals)
  if approvals == '' then return end
  local o = cjson.decode(approvals)
  for _, r in ipairs(o.requested) do
    redis.call('ZADD', o.waiting, r[2], o.run .. '\n' .. r[1])
    redis.call('SADD', o.steps, r[1])
  end
  for _, step in ipairs(o.decided) do
    redis.call('ZREM', o.waiting, o.run .. '\n' .. step)
    redis.call('SREM', o.steps, step)
  end
  if o.ended then
    for _, step in ipairs(redis.call('SMEMBERS', o.steps)) do
      redis.call('ZREM', o.waiting, o.run .. '\n' .. step)
    end
    redis.call('DEL', o.steps)
  end
end
local writes, a = {}, 4
for k = 3, #KEYS do
  local w = {key = KEYS[k], run = ARGV[a], approvals = ARGV[a + 1], prev = ARGV[a + 2],
             first = tonumber(ARGV[a + 3]), count = tonumber(ARGV[a + 4]), at = a + 5}
  a = a + 5 + 2 * w.count
  w.entry, w.entry_hash = ARGV[a], ARGV[a + 1]
  a = a + 2
  writes[#writes + 1] = w
end
local replies, entries_land, entries_refused = {}, true, {3, 0, ''}
for i, w in ipairs(writes) do
  if w.run ~= '' then
    local n, head = head_of(w.key)
    if head ~= w.prev or n + 1 ~= w.first then
      replies[i] = {1, n, head}
      if w.entry ~= '' then entries_land = false end
    end
  end
end
for _, w in ipairs(writes) do
  if w.entry ~= '' then
    local n, head = head_of(trail)
    if head ~= ARGV[2] or n + 1 ~= tonumber(ARGV[3]) then
      entries_land, entries_refused = false, {2, n, head}
    end
    break
  end
end
local trail_prev, trail_seq = ARGV[2], tonumber(ARGV[3])
for i, w in ipairs(writes) do
  if replies[i] == nil then
    if w.entry ~= '' and not entries_land then
      replies[i] = entries_refused
    else
      local prev = w.prev
      for c = 0, w.count - 1 do
        local record, hash = ARGV[w.at + 2 * c], ARGV[w.at + 2 * c + 1]
        redis.call('XADD', w.key, '*', 'e', record, 'n', w.first + c, 'p', prev, 'h', hash)
        copy({'r', w.run, 'e', record, 'n', w.first + c, 'p', prev, 'h', hash})
        prev = hash
      end
      approve(w.approvals)
      if w.entry ~= '' then
        redis.call('XADD', trail, '*', 'e', w.entry, 'n', trail_seq, 'p', trail_prev, 'h', w.entry_hash)
        trail_prev, trail_seq = w.entry_hash, trail_seq + 1
      end
      replies[i] = {0, 0, ''}
    end
  end
end
return replies
"#;
