//! Schedule triggers: a five-field cron expression read in UTC, the next
//! tick after a time, and the tick missed while the runtime was down (the
//! latest one between the last tick it ran and now: missed ticks run once,
//! not once each — what Kubernetes CronJobs and Temporal schedules do
//! with their default catch-up of one).

use chrono::{DateTime, Utc};
use croner::Cron;

/// One schedule trigger of a workflow.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The workflow.
    pub workflow: String,
    /// The trigger's name.
    pub trigger: String,
    cron: Cron,
    /// The next tick (ms since the epoch).
    pub next_ms: u64,
}

fn at(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

fn ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

impl Schedule {
    /// The schedule of `expression` (checked by the compiler; `Err` names
    /// what does not parse), its next tick after `now_ms`.
    pub fn new(
        workflow: &str,
        trigger: &str,
        expression: &str,
        now_ms: u64,
    ) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::new()
            .parse(expression)
            .map_err(|e| format!("schedule {expression:?} does not parse: {e}"))?;
        let mut schedule = Schedule {
            workflow: workflow.to_string(),
            trigger: trigger.to_string(),
            cron,
            next_ms: 0,
        };
        schedule.next_ms = schedule.after(now_ms);
        Ok(schedule)
    }

    /// The first tick strictly after `ms` (never, as `u64::MAX`).
    pub fn after(&self, after_ms: u64) -> u64 {
        self.cron
            .find_next_occurrence(&at(after_ms), false)
            .map_or(u64::MAX, ms)
    }

    /// The latest tick in `(last_ms, now_ms]`: the one missed while the
    /// runtime was down, if any.
    pub fn missed(&self, last_ms: u64, now_ms: u64) -> Option<u64> {
        let latest = self
            .cron
            .find_previous_occurrence(&at(now_ms), true)
            .ok()
            .map(ms)?;
        (latest > last_ms).then_some(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30T10:07:00Z.
    const T: u64 = 1_796_033_220_000;

    #[test]
    fn the_next_tick_of_every_15_minutes_is_the_next_quarter_hour() {
        let s = Schedule::new("p", "every-15m", "*/15 * * * *", T).expect("parses");
        assert_eq!(s.next_ms, T + 8 * 60_000);
        assert_eq!(s.after(s.next_ms), s.next_ms + 15 * 60_000);
    }

    #[test]
    fn only_the_latest_missed_tick_runs() {
        let s = Schedule::new("p", "every-15m", "*/15 * * * *", T).expect("parses");
        // Down from 08:50 to 10:07: ticks at 09:00 … 10:00 were missed; 10:00 runs.
        let down_since = T - 77 * 60_000;
        assert_eq!(s.missed(down_since, T), Some(T - 7 * 60_000));
        // Last tick ran at 10:00: nothing missed.
        assert_eq!(s.missed(T - 7 * 60_000, T), None);
    }

    #[test]
    fn an_expression_that_does_not_parse_is_refused_with_the_reason() {
        let e = Schedule::new("p", "t", "61 * * * *", T).expect_err("refused");
        assert!(e.contains("61 * * * *"), "{e}");
    }
}
