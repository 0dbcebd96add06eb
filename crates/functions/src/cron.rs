//! Timer triggers: cron expressions (the `cron` crate), in UTC.

use std::str::FromStr;

/// A parsed cron expression.
pub struct Schedule(cron::Schedule);

impl Schedule {
    /// Parses `sec min hour dom month dow [year]`, or the classic five fields
    /// `min hour dom month dow` (run at second 0).
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        let full = if fields == 5 { format!("0 {expr}") } else { expr.to_string() };
        cron::Schedule::from_str(&full).map(Schedule).map_err(|e| e.to_string())
    }

    /// The first time after `after_ms` (ms since the epoch) the schedule fires.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = chrono::DateTime::from_timestamp_millis(after_ms)?;
        self.0.after(&after).next().map(|t| t.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields() {
        let every_minute = Schedule::parse("* * * * *").unwrap();
        assert_eq!(every_minute.next_after(0), Some(60_000));
        let every_second = Schedule::parse("* * * * * *").unwrap();
        assert_eq!(every_second.next_after(1_500), Some(2_000));
        assert!(Schedule::parse("every day").is_err());
    }
}
