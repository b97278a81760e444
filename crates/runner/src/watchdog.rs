//! Which runs this process is driving, and when each last wrote to its journal. A driven run
//! writes at least once per attempt or retry delay; one that stays quiet for longer than its
//! playbook allows is stalled (a bug, a store that stopped answering) and must show, not hold a
//! worker silently: [`Watchdog::stalled`] names it, and the server logs and counts it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::event::Millis;

/// How much longer than its longest attempt or retry delay a run may stay quiet before it counts
/// as stalled: journal writes and scheduling take time too.
pub const STALL_MARGIN: Duration = Duration::from_secs(30);

/// The runs being driven, with their last progress.
#[derive(Debug, Default)]
pub struct Watchdog {
    runs: Mutex<HashMap<String, Watched>>,
}

#[derive(Debug)]
struct Watched {
    last_progress: Millis,
    quiet_limit_ms: u64,
}

/// A run that has made no progress for longer than its playbook allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub run_id: String,
    pub quiet_ms: u64,
}

impl Watchdog {
    /// Runs quiet for longer than they may be, at `now`.
    pub fn stalled(&self, now: Millis) -> Vec<Stall> {
        let Ok(runs) = self.runs.lock() else {
            return Vec::new();
        };
        let mut stalled: Vec<Stall> = runs
            .iter()
            .filter_map(|(run_id, watched)| {
                let quiet_ms = now.saturating_sub(watched.last_progress);
                (quiet_ms > watched.quiet_limit_ms).then(|| Stall {
                    run_id: run_id.clone(),
                    quiet_ms,
                })
            })
            .collect();
        stalled.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        stalled
    }

    /// How many runs are being driven.
    pub fn driving(&self) -> usize {
        self.runs.lock().map_or(0, |runs| runs.len())
    }

    /// Watches `run_id` until the guard is dropped.
    pub(crate) fn watch(&self, run_id: &str, now: Millis, quiet_limit: Duration) -> Watch<'_> {
        let quiet_limit_ms =
            u64::try_from((quiet_limit + STALL_MARGIN).as_millis()).unwrap_or(u64::MAX);
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(
                run_id.to_owned(),
                Watched {
                    last_progress: now,
                    quiet_limit_ms,
                },
            );
        }
        Watch {
            watchdog: self,
            run_id: run_id.to_owned(),
        }
    }

    pub(crate) fn progressed(&self, run_id: &str, now: Millis) {
        if let Ok(mut runs) = self.runs.lock()
            && let Some(watched) = runs.get_mut(run_id)
        {
            watched.last_progress = now;
        }
    }
}

/// Stops watching its run when dropped (the drive ended, however it ended).
pub(crate) struct Watch<'a> {
    watchdog: &'a Watchdog,
    run_id: String,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.watchdog.runs.lock() {
            runs.remove(&self.run_id);
        }
    }
}
