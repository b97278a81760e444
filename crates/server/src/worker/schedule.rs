//! Scheduled triggers: every worker process looks at the clock and fires the ticks of the
//! playbooks with a `schedule:`; each tick is a delivery whose id names the playbook and the
//! tick, so the store accepts it once however many processes fire it, and the run it starts is
//! an ordinary run from then on (queued, leased, recovered).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use playbook::{Playbook, Schedule};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Worker;
use crate::error::Error;

/// How often the clock is looked at: a tick fires at most this late.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// What a process has looked at for one playbook's schedule.
struct Checked {
    /// The expression and zone it was for: a reload that changes them starts afresh.
    identity: String,
    /// Ticks up to here are fired (or were skipped).
    until: SystemTime,
}

impl Worker {
    pub(super) async fn fire_schedules(self: Arc<Self>, shutdown: CancellationToken) {
        let mut checked: HashMap<String, Checked> = HashMap::new();
        while !shutdown.is_cancelled() {
            let now = SystemTime::now();
            let catalog = self.playbooks.current();
            for playbook in catalog.playbooks() {
                let Some(schedule) = &playbook.trigger.schedule else {
                    continue;
                };
                let identity = format!("{} {}", schedule.cron, schedule.timezone.name());
                let known = checked
                    .get(&playbook.name)
                    .filter(|seen| seen.identity == identity)
                    .map(|seen| seen.until);
                let (ticks, caught_up) = match (known, schedule.catch_up) {
                    (Some(until), _) => (schedule.ticks(until, now), false),
                    // New to this process: the most recent missed tick, if asked for (the
                    // delivery id keeps it from firing again if another process fired it).
                    (None, Some(window)) => {
                        let missed = schedule.ticks(now - window, now);
                        (missed.last().copied().into_iter().collect(), true)
                    }
                    (None, None) => (Vec::new(), false),
                };
                let mut fired_until = now;
                for tick in ticks {
                    if let Err(error) = self.fire(playbook, schedule, tick, caught_up).await {
                        // Tried again on the next look; the delivery id makes that safe.
                        warn!(%error, playbook = %playbook.name, "Could not fire a scheduled run.");
                        fired_until = tick - Duration::from_millis(1);
                        break;
                    }
                }
                checked.insert(
                    playbook.name.clone(),
                    Checked {
                        identity,
                        until: fired_until,
                    },
                );
            }
            tokio::time::sleep(CHECK_INTERVAL).await;
        }
    }

    /// Accepts the run of one tick, once across every process sharing the store.
    async fn fire(
        &self,
        playbook: &Arc<Playbook>,
        schedule: &Schedule,
        tick: SystemTime,
        caught_up: bool,
    ) -> Result<(), Error> {
        let tick_ms = tick
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let event = json!({
            "schedule": {
                "tick": humantime::format_rfc3339_millis(tick).to_string(),
                "cron": schedule.cron,
                "timezone": schedule.timezone.name(),
                "caught_up": caught_up,
            },
        });
        let screening = playbook
            .screen(&event)
            .map_err(|error| Error::Invalid(format!("the schedule's event: {error}")))?;
        if !screening.matched {
            return Ok(());
        }
        let delivery_id = format!("schedule:{}:{tick_ms}", playbook.name);
        let trigger = playbook.trigger.webhook.as_str();
        let run = store::NewRun {
            run_id: runner::new_run_id(),
            playbook: playbook.name.clone(),
            accepted: self.runner.accepted(runner::Acceptance {
                trigger,
                actor: "schedule",
                delivery_id: Some(&delivery_id),
                playbook: &playbook.name,
                event: &event,
            }),
            dedupe: screening
                .dedupe_key
                .zip(playbook.trigger.dedupe.as_ref())
                .map(|(key, dedupe)| store::DedupeKey::new(key, dedupe.window)),
            event,
        };
        let delivery = store::Delivery {
            trigger: trigger.to_owned(),
            delivery_id: Some(delivery_id),
            delivery_ttl: self.delivery_ttl,
            runs: vec![run],
            ignored: Vec::new(),
            received_at: self.runner.now(),
        };
        let admissions = self.store.accept(&delivery).await?;
        if let Some(admission) = admissions.iter().find(|admission| !admission.duplicate) {
            info!(playbook = %playbook.name, run_id = %admission.run_id, caught_up, "Scheduled run started.");
        }
        Ok(())
    }
}
