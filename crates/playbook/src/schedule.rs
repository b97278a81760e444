//! Schedules: a trigger that fires on the ticks of a cron expression, in a time zone.
//!
//! croner parses the expression (five fields, or six with seconds first; `L`, `W`, `#` and
//! the `@daily` names too); chrono-tz knows the zones, so a tick at 09:00 Europe/Paris stays at
//! 09:00 across daylight saving. A tick is named by its instant, which is what makes it fire
//! once: every process computes the same ticks, and the store accepts each tick's delivery once.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Most ticks one call of [`Schedule::ticks`] returns: a schedule of every second that missed
/// a day still costs a bounded amount of work.
pub const MAX_TICKS: usize = 1_000;

/// When a `schedule:` trigger fires.
#[derive(Clone)]
pub struct Schedule {
    /// The expression as written.
    pub cron: String,
    pub timezone: Tz,
    /// On start, the most recent tick within this long before is fired if nobody fired it
    /// (`None`: ticks missed while no process ran are skipped).
    pub catch_up: Option<Duration>,
    parsed: croner::Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("cron", &self.cron)
            .field("timezone", &self.timezone.name())
            .field("catch_up", &self.catch_up)
            .finish()
    }
}

impl Schedule {
    /// Parses an expression and a time zone name; the error says what is wrong in words.
    pub fn new(cron: &str, timezone: &str, catch_up: Option<Duration>) -> Result<Schedule, String> {
        let parsed = croner::Cron::from_str(cron.trim())
            .map_err(|error| format!("`{cron}` is not a cron expression: {error}"))?;
        let timezone = Tz::from_str(timezone.trim())
            .map_err(|_| format!("`{timezone}` is not a time zone of the IANA database"))?;
        let schedule = Schedule {
            cron: cron.trim().to_owned(),
            timezone,
            catch_up,
            parsed,
        };
        // An expression can parse and never match (`0 0 30 2 *`: the 30th of February).
        match schedule.next_after(SystemTime::now()) {
            Some(_) => Ok(schedule),
            None => Err(format!("`{cron}` never fires")),
        }
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let after: DateTime<Utc> = after.into();
        let local = self.timezone.from_utc_datetime(&after.naive_utc());
        self.parsed
            .find_next_occurrence(&local, false)
            .ok()
            .map(|tick| SystemTime::from(tick.with_timezone(&Utc)))
    }

    /// The ticks in `(after, until]`, oldest first, at most [`MAX_TICKS`] (the newest kept).
    pub fn ticks(&self, after: SystemTime, until: SystemTime) -> Vec<SystemTime> {
        let mut ticks = std::collections::VecDeque::new();
        let mut cursor = after;
        while let Some(tick) = self.next_after(cursor).filter(|tick| *tick <= until) {
            if ticks.len() == MAX_TICKS {
                ticks.pop_front();
            }
            ticks.push_back(tick);
            cursor = tick;
        }
        ticks.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).expect("a time")
    }

    #[test]
    fn ticks_follow_the_zone_across_daylight_saving() {
        let schedule = Schedule::new("0 9 * * *", "Europe/Paris", None).expect("valid");
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
        let ticks = schedule.ticks(at("2026-03-27T12:00:00Z"), at("2026-03-30T12:00:00Z"));
        let shown: Vec<String> = ticks
            .iter()
            .map(|tick| humantime::format_rfc3339_seconds(*tick).to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "2026-03-28T08:00:00Z",
                "2026-03-29T07:00:00Z",
                "2026-03-30T07:00:00Z"
            ]
        );
    }

    #[test]
    fn seconds_are_a_sixth_field_and_a_long_gap_is_bounded() {
        let schedule = Schedule::new("*/10 * * * * *", "UTC", None).expect("valid");
        let ticks = schedule.ticks(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:01:00Z"));
        assert_eq!(
            ticks.len(),
            6,
            "10 s apart, the start excluded, the end included"
        );
        assert_eq!(ticks.last(), Some(&at("2026-01-01T00:01:00Z")));
        let day = schedule.ticks(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"));
        assert_eq!(day.len(), MAX_TICKS);
        assert_eq!(
            day.last(),
            Some(&at("2026-01-02T00:00:00Z")),
            "the newest kept"
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_in_words() {
        let refused = |cron: &str, zone: &str| match Schedule::new(cron, zone, None) {
            Ok(_) => panic!("`{cron}` in {zone} was accepted"),
            Err(problem) => problem,
        };
        assert!(refused("61 * * * *", "UTC").contains("is not a cron expression"));
        assert!(refused("0 9 * * *", "Mars/Olympus").contains("is not a time zone"));
        assert!(refused("0 0 30 2 *", "UTC").contains("never fires"));
    }
}
