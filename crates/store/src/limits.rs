//! Limits shared by every worker of a deployment, one per integration (a plugin): a rate, a
//! number of calls at once, a pause an upstream asked for (`429` with `Retry-After`), and a
//! circuit breaker that opens after repeated failures and lets one call probe after a cool-down.
//!
//! A limit's state is one small record in the store, changed by read-modify-write under the
//! store's atomicity (a SQLite transaction; a compare-and-set script on Redis), so both stores
//! share this logic. The rate is a GCRA (generic cell rate algorithm): one timestamp, bursts up
//! to the rate. Slots are leased, so a worker that dies holding one frees it after its lease.

use std::collections::BTreeMap;

use runner::Millis;
use serde::{Deserialize, Serialize};

/// How long a refused call waits for a slot of a full concurrency limit, or for a probe in
/// flight, before asking again.
pub const SLOT_WAIT_MS: u64 = 250;
/// How long a pause is when an upstream answered `429` without `Retry-After`.
pub const DEFAULT_PAUSE_MS: u64 = 1_000;

/// One integration's limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limit {
    /// At most `calls` calls per `per_ms`, shared by every worker.
    pub rate: Option<(u32, u64)>,
    /// At most this many calls in flight at once.
    pub concurrency: Option<u32>,
    /// Opens after this many failures in a row, for `cool_down_ms`.
    pub breaker: Option<Breaker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub failures: u32,
    pub cool_down_ms: u64,
}

/// How a call that held a slot went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The upstream failed (unreachable, 5xx, timeout): it counts for the breaker.
    Failed,
    /// The upstream asked to slow down: every worker pauses for `retry_after_ms` (or a second).
    RateLimited {
        retry_after_ms: Option<u64>,
    },
    /// The call failed for a reason that says nothing of the upstream's health (bad input).
    Neutral,
}

/// Why a call must wait, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub until: Millis,
    pub reason: String,
}

/// The stored state of one limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LimitState {
    /// The GCRA's theoretical arrival time, in microseconds (rates above 1,000 a second).
    #[serde(default)]
    tat_us: u64,
    /// Slots in use: holder → lease end.
    #[serde(default)]
    holders: BTreeMap<String, Millis>,
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    open_until: Millis,
    /// The one call let through to probe a half-open breaker.
    #[serde(default)]
    probe: Option<String>,
    #[serde(default)]
    paused_until: Millis,
}

impl LimitState {
    pub(crate) fn parse(json: Option<&str>) -> LimitState {
        json.and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default()
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Takes a slot for `holder` until `lease_end`, or says why not.
    pub(crate) fn take(
        &mut self,
        holder: &str,
        limit: &Limit,
        now: Millis,
        lease_end: Millis,
    ) -> Result<(), Held> {
        self.holders.retain(|_, end| *end > now);
        if self.paused_until > now {
            return Err(Held {
                until: self.paused_until,
                reason: "the upstream asked to slow down (429)".into(),
            });
        }
        let mut probing = false;
        if let Some(breaker) = limit.breaker
            && self.failures >= breaker.failures
        {
            if now < self.open_until {
                return Err(Held {
                    until: self.open_until,
                    reason: format!(
                        "the circuit breaker is open after {} failures in a row",
                        self.failures
                    ),
                });
            }
            if self
                .probe
                .as_ref()
                .is_some_and(|probe| probe != holder && self.holders.contains_key(probe))
            {
                return Err(Held {
                    until: now + SLOT_WAIT_MS,
                    reason: "the circuit breaker is half-open and one call is probing".into(),
                });
            }
            probing = true;
        }
        if let Some(most) = limit.concurrency
            && !self.holders.contains_key(holder)
            && self.holders.len() >= most as usize
        {
            return Err(Held {
                until: now + SLOT_WAIT_MS,
                reason: format!("{most} call(s) already in flight"),
            });
        }
        if let Some((calls, per_ms)) = limit.rate {
            let (now_us, per_us) = (now.saturating_mul(1_000), per_ms.saturating_mul(1_000));
            let interval = (per_us / u64::from(calls.max(1))).max(1);
            let next = self.tat_us.max(now_us) + interval;
            if next > now_us + per_us {
                return Err(Held {
                    until: (next - per_us).div_ceil(1_000),
                    reason: format!("at most {calls} call(s) per {per_ms} ms"),
                });
            }
            self.tat_us = next;
        }
        if probing {
            self.probe = Some(holder.to_owned());
        }
        self.holders.insert(holder.to_owned(), lease_end);
        Ok(())
    }

    /// Gives `holder`'s slot back with how its call went.
    pub(crate) fn give_back(&mut self, holder: &str, limit: &Limit, outcome: Outcome, now: Millis) {
        self.holders.remove(holder);
        if self.probe.as_deref() == Some(holder) {
            self.probe = None;
        }
        match outcome {
            Outcome::Succeeded => self.failures = 0,
            Outcome::Failed => {
                self.failures = self.failures.saturating_add(1);
                if let Some(breaker) = limit.breaker
                    && self.failures >= breaker.failures
                {
                    self.open_until = now + breaker.cool_down_ms;
                }
            }
            Outcome::RateLimited { retry_after_ms } => {
                self.paused_until = self
                    .paused_until
                    .max(now + retry_after_ms.unwrap_or(DEFAULT_PAUSE_MS));
            }
            Outcome::Neutral => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_lets_a_burst_through_then_spaces_calls() {
        let limit = Limit {
            rate: Some((2, 1_000)),
            ..Limit::default()
        };
        let mut state = LimitState::default();
        assert!(state.take("a", &limit, 0, 10_000).is_ok());
        assert!(state.take("b", &limit, 0, 10_000).is_ok());
        let held = state
            .take("c", &limit, 0, 10_000)
            .expect_err("third in a second");
        assert_eq!(held.until, 500);
        assert!(state.take("c", &limit, 500, 10_000).is_ok());
    }

    #[test]
    fn concurrency_counts_live_leases_only() {
        let limit = Limit {
            concurrency: Some(1),
            ..Limit::default()
        };
        let mut state = LimitState::default();
        assert!(state.take("a", &limit, 0, 1_000).is_ok());
        assert!(state.take("b", &limit, 10, 2_000).is_err());
        // `a`'s worker died: its lease ends and the slot is free again.
        assert!(state.take("b", &limit, 1_000, 2_000).is_ok());
        state.give_back("b", &limit, Outcome::Succeeded, 1_100);
        assert!(state.take("c", &limit, 1_100, 3_000).is_ok());
    }

    #[test]
    fn a_breaker_opens_then_lets_one_probe_through() {
        let limit = Limit {
            breaker: Some(Breaker {
                failures: 2,
                cool_down_ms: 5_000,
            }),
            ..Limit::default()
        };
        let mut state = LimitState::default();
        for holder in ["a", "b"] {
            assert!(state.take(holder, &limit, 0, 1_000).is_ok());
            state.give_back(holder, &limit, Outcome::Failed, 100);
        }
        let open = state.take("c", &limit, 200, 1_000).expect_err("open");
        assert_eq!(open.until, 5_100);
        assert!(
            state.take("probe", &limit, 5_100, 9_000).is_ok(),
            "half-open"
        );
        assert!(
            state.take("other", &limit, 5_200, 9_000).is_err(),
            "one probe"
        );
        state.give_back("probe", &limit, Outcome::Failed, 5_300);
        assert_eq!(
            state
                .take("other", &limit, 5_400, 9_000)
                .map_err(|h| h.until),
            Err(10_300),
            "a failed probe opens it again"
        );
        assert!(state.take("probe2", &limit, 10_300, 19_000).is_ok());
        state.give_back("probe2", &limit, Outcome::Succeeded, 10_400);
        assert!(state.take("x", &limit, 10_500, 19_000).is_ok());
        assert!(state.take("y", &limit, 10_500, 19_000).is_ok(), "closed");
    }

    #[test]
    fn a_429_pauses_everyone_for_its_retry_after() {
        let limit = Limit::default();
        let mut state = LimitState::default();
        assert!(state.take("a", &limit, 0, 1_000).is_ok());
        state.give_back(
            "a",
            &limit,
            Outcome::RateLimited {
                retry_after_ms: Some(3_000),
            },
            100,
        );
        assert_eq!(
            state.take("b", &limit, 200, 1_000).map_err(|h| h.until),
            Err(3_100)
        );
        assert!(state.take("b", &limit, 3_100, 5_000).is_ok());
    }
}
