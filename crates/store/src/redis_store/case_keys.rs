//! Cases in Redis. Keys (under the prefix `p`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `p:cases:next` | string | the last case number handed out |
//! | `p:case:<id>` | hash | `summary` (JSON), `phase`, `open` (1/0), `alerts` |
//! | `p:case:<id>:events` | stream | the case's events, chained like a run's journal |
//! | `p:cases:open`, `p:cases:closed`, `p:cases:phase:<phase>` | sorted sets | case ids by last update |
//! | `p:cases:all` | sorted set | case ids by number |
//! | `p:case:key:<key>` | string, expires | the case alerts with this key join |
//! | `p:case:obs:<type>:<value>` | sorted set, expires | cases by when they last saw the observable |
//! | `p:run:<id>:case` | string | the case the run's alert joined |
//! | `p:approvals` | sorted set | `<run id>\n<step>` of steps waiting for approval, by deadline |
//! | `p:run:<id>:approvals` | set | the run's steps in `p:approvals` |

use std::collections::BTreeMap;

use cases::{CaseId, CaseSummary, Observable, Phase};
use redis::AsyncCommands;
use runner::Millis;
use serde::Serialize;

use super::{RedisStore, audit_record};
use crate::audit::{self, AuditRecord, GENESIS};
use crate::error::Error;
use crate::{CaseMatch, CaseQuery, CaseWrite, OBSERVABLES_KEPT_MS, PendingApproval};

/// Cases read per round trip while a list is filtered.
const SCAN_BATCH: usize = 500;

/// A case write as the script reads it. Numbers travel as strings (Lua's cjson makes doubles);
/// absent options are left out (cjson's null is true in Lua).
#[derive(Serialize)]
struct ScriptCaseWrite<'a> {
    case: String,
    genesis: &'static str,
    last: String,
    prev: &'a str,
    /// `[record, hash]` pairs.
    records: Vec<(String, String)>,
    summary: String,
    phase: &'static str,
    open: &'static str,
    alerts: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    key_expires_at: String,
    exclusive: bool,
    max_alerts: String,
    /// `[type, value]` pairs.
    seen: Vec<(&'static str, &'a str)>,
    at: String,
    observables_kept_ms: String,
}

/// ARGV: prefix, the write (JSON). Returns 1 after storing it all, 0 (storing nothing) when the
/// case's chain moved, the run is in a case already, or an exclusive key finds another case
/// that takes alerts.
pub(super) const WRITE_CASE: &str = r#"
local p = ARGV[1]
local d = cjson.decode(ARGV[2])
local c = d.case
local stream = p .. ':case:' .. c .. ':events'
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local head, n = d.genesis, '0'
if last[1] then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'h' then head = fields[i + 1] end
    if fields[i] == 'n' then n = fields[i + 1] end
  end
end
if head ~= d.prev or n ~= d.last then return 0 end
local run_key, key_key
if d.run then
  run_key = p .. ':run:' .. d.run .. ':case'
  if redis.call('EXISTS', run_key) == 1 then return 0 end
end
if d.key then
  key_key = p .. ':case:key:' .. d.key
  if d.exclusive then
    local other = redis.call('GET', key_key)
    if other and other ~= c then
      local f = redis.call('HMGET', p .. ':case:' .. other, 'open', 'alerts')
      if f[1] == '1' and tonumber(f[2]) < tonumber(d.max_alerts) then return 0 end
    end
  end
end
if run_key then redis.call('SET', run_key, c) end
if key_key then redis.call('SET', key_key, c, 'PXAT', d.key_expires_at) end
local seq, prev = tonumber(d.last), d.prev
for _, r in ipairs(d.records) do
  seq = seq + 1
  redis.call('XADD', stream, '*', 'e', r[1], 'n', seq, 'p', prev, 'h', r[2])
  prev = r[2]
end
local hash = p .. ':case:' .. c
local old = redis.call('HGET', hash, 'phase')
if old then redis.call('ZREM', p .. ':cases:phase:' .. old, c) end
redis.call('HSET', hash, 'summary', d.summary, 'phase', d.phase, 'open', d.open, 'alerts', d.alerts)
redis.call('ZADD', p .. ':cases:phase:' .. d.phase, d.updated_at, c)
if d.open == '1' then
  redis.call('ZADD', p .. ':cases:open', d.updated_at, c)
  redis.call('ZREM', p .. ':cases:closed', c)
else
  redis.call('ZADD', p .. ':cases:closed', d.updated_at, c)
  redis.call('ZREM', p .. ':cases:open', c)
end
redis.call('ZADD', p .. ':cases:all', c, c)
for _, o in ipairs(d.seen) do
  local k = p .. ':case:obs:' .. o[1] .. ':' .. o[2]
  redis.call('ZADD', k, 'GT', d.at, c)
  redis.call('PEXPIRE', k, d.observables_kept_ms)
end
return 1
"#;

impl RedisStore {
    fn case_key(&self, case: CaseId) -> String {
        self.key(&format!("case:{case}"))
    }

    pub(super) async fn next_case(&self) -> Result<CaseId, Error> {
        let mut connection = self.connection.clone();
        Ok(connection.incr(self.key("cases:next"), 1).await?)
    }

    pub(super) async fn store_case(&self, write: &CaseWrite) -> Result<bool, Error> {
        let events = write
            .events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Error::corrupt("case event", error))?;
        let linked = audit::link(
            &cases::chain_id(write.case),
            (write.head.0, &write.head.1),
            events,
        );
        let summary = &write.summary;
        let payload = ScriptCaseWrite {
            case: write.case.to_string(),
            genesis: GENESIS,
            last: write.head.0.to_string(),
            prev: &write.head.1,
            records: linked
                .into_iter()
                .map(|record| (record.event, record.hash))
                .collect(),
            summary: serde_json::to_string(summary)
                .map_err(|error| Error::corrupt("case", error))?,
            phase: summary.phase.as_str(),
            open: if summary.phase == Phase::Closed {
                "0"
            } else {
                "1"
            },
            alerts: summary.alerts.to_string(),
            updated_at: summary.updated_at.to_string(),
            run: write.run.as_deref(),
            key: write.key.as_ref().map(|key| key.key.as_str()),
            key_expires_at: write
                .key
                .as_ref()
                .map_or(0, |key| key.expires_at)
                .max(1)
                .to_string(),
            exclusive: write.key.as_ref().is_some_and(|key| key.exclusive),
            max_alerts: cases::MAX_ALERTS.to_string(),
            seen: write
                .seen
                .iter()
                .map(|observable| (observable.kind.as_str(), observable.value.as_str()))
                .collect(),
            at: write.at.to_string(),
            observables_kept_ms: OBSERVABLES_KEPT_MS.to_string(),
        };
        let payload =
            serde_json::to_string(&payload).map_err(|error| Error::corrupt("case", error))?;
        let mut connection = self.connection.clone();
        let written: u8 = self
            .scripts
            .write_case
            .arg(&self.prefix)
            .arg(payload)
            .invoke_async(&mut connection)
            .await?;
        Ok(written == 1)
    }

    pub(super) async fn read_case_records(&self, case: CaseId) -> Result<Vec<AuditRecord>, Error> {
        let mut connection = self.connection.clone();
        let reply: redis::streams::StreamRangeReply = connection
            .xrange_all(format!("{}:events", self.case_key(case)))
            .await?;
        Ok(reply.ids.iter().map(audit_record).collect())
    }

    /// Whether the case is open and not full, by its hash.
    async fn takes_alerts(&self, case: &str) -> Result<bool, Error> {
        let mut connection = self.connection.clone();
        let (open, alerts): (Option<String>, Option<usize>) = redis::cmd("HMGET")
            .arg(self.key(&format!("case:{case}")))
            .arg("open")
            .arg("alerts")
            .query_async(&mut connection)
            .await?;
        Ok(open.as_deref() == Some("1") && alerts.is_some_and(|n| n < cases::MAX_ALERTS))
    }

    pub(super) async fn find(
        &self,
        key: &str,
        observables: &[Observable],
        seen_since: Millis,
    ) -> Result<Option<CaseMatch>, Error> {
        let mut connection = self.connection.clone();
        let by_key: Option<String> = connection.get(self.key(&format!("case:key:{key}"))).await?;
        if let Some(case) = by_key
            && self.takes_alerts(&case).await?
        {
            return Ok(Some(CaseMatch {
                case: parse_id(&case)?,
                by: None,
            }));
        }
        let mut best: Option<(f64, CaseId, &Observable)> = None;
        for observable in observables {
            let seen: Vec<(String, f64)> = connection
                .zrevrangebyscore_limit_withscores(
                    self.key(&format!(
                        "case:obs:{}:{}",
                        observable.kind.as_str(),
                        observable.value
                    )),
                    "+inf",
                    seen_since as f64,
                    0,
                    10,
                )
                .await?;
            for (case, at) in seen {
                if best.is_some_and(|(best_at, _, _)| best_at >= at) {
                    break;
                }
                if self.takes_alerts(&case).await? {
                    best = Some((at, parse_id(&case)?, observable));
                    break;
                }
            }
        }
        Ok(best.map(|(_, case, observable)| CaseMatch {
            case,
            by: Some(observable.clone()),
        }))
    }

    pub(super) async fn run_case(&self, run_id: &str) -> Result<Option<CaseId>, Error> {
        let mut connection = self.connection.clone();
        let case: Option<String> = connection
            .get(format!("{}:case", self.run_key(run_id)))
            .await?;
        case.as_deref().map(parse_id).transpose()
    }

    pub(super) async fn cases(&self, query: &CaseQuery) -> Result<Vec<CaseSummary>, Error> {
        let sets = match query.phase {
            Some(phase) => vec![self.key(&format!("cases:phase:{phase}"))],
            None => vec![self.key("cases:open"), self.key("cases:closed")],
        };
        let mut connection = self.connection.clone();
        let mut found = Vec::new();
        let mut skip = query.offset;
        let filtered = query.severity.is_some() || query.playbook.is_some();
        for set in sets {
            if found.len() >= query.limit {
                break;
            }
            if !filtered {
                // Every case of the set matches: page by position.
                let size: usize = connection.zcard(&set).await?;
                if skip >= size {
                    skip -= size;
                    continue;
                }
                let wanted = query.limit - found.len();
                let ids: Vec<String> = connection
                    .zrevrange(&set, skip as isize, (skip + wanted) as isize - 1)
                    .await?;
                skip = 0;
                found.extend(self.summaries(&ids).await?);
                continue;
            }
            let mut start = 0;
            loop {
                let ids: Vec<String> = connection
                    .zrevrange(&set, start, start + SCAN_BATCH as isize - 1)
                    .await?;
                if ids.is_empty() {
                    break;
                }
                start += ids.len() as isize;
                for summary in self.summaries(&ids).await? {
                    if !query.matches(&summary) {
                        continue;
                    }
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    found.push(summary);
                    if found.len() >= query.limit {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
    }

    async fn summaries(&self, ids: &[String]) -> Result<Vec<CaseSummary>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.key(&format!("case:{id}")), "summary");
        }
        let mut connection = self.connection.clone();
        let found: Vec<Option<String>> = pipe.query_async(&mut connection).await?;
        found
            .into_iter()
            .flatten()
            .map(|json| serde_json::from_str(&json).map_err(|error| Error::corrupt("case", error)))
            .collect()
    }

    pub(super) async fn counts(&self) -> Result<BTreeMap<Phase, u64>, Error> {
        let mut pipe = redis::pipe();
        for phase in Phase::ALL {
            pipe.zcard(self.key(&format!("cases:phase:{phase}")));
        }
        let mut connection = self.connection.clone();
        let sizes: Vec<u64> = pipe.query_async(&mut connection).await?;
        Ok(Phase::ALL
            .into_iter()
            .zip(sizes)
            .filter(|(_, size)| *size > 0)
            .collect())
    }

    pub(super) async fn all_cases(&self) -> Result<Vec<CaseId>, Error> {
        let mut connection = self.connection.clone();
        let ids: Vec<String> = connection.zrange(self.key("cases:all"), 0, -1).await?;
        ids.iter().map(|id| parse_id(id)).collect()
    }

    pub(super) async fn approvals(&self, limit: usize) -> Result<Vec<PendingApproval>, Error> {
        let mut connection = self.connection.clone();
        let waiting: Vec<(String, f64)> = connection
            .zrange_withscores(self.key("approvals"), 0, limit as isize - 1)
            .await?;
        waiting
            .into_iter()
            .map(|(member, deadline)| {
                let (run_id, step) = member
                    .split_once('\n')
                    .ok_or_else(|| Error::corrupt("approvals", format!("`{member}`")))?;
                Ok(PendingApproval {
                    run_id: run_id.to_owned(),
                    step: step.to_owned(),
                    deadline: deadline as Millis,
                })
            })
            .collect()
    }
}

fn parse_id(text: &str) -> Result<CaseId, Error> {
    text.parse()
        .map_err(|_| Error::corrupt("case", format!("`{text}` is not a case number")))
}
