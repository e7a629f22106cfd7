//! A board's settings and the arithmetic of its periods.

use chrono::{DateTime, Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
/// Shortest FIXED period.
pub const MIN_FIXED_MS: i64 = 1000;
/// Longest FIXED period.
pub const MAX_FIXED_MS: i64 = 366 * DAY_MS;
/// Periods per board besides ALL_TIME.
pub const MAX_PERIODS: usize = 8;
/// Past instances kept readable.
pub const MAX_RETENTION: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    Descending,
    Ascending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Set,
    Best,
    Increment,
    Decrement,
}

impl Operator {
    /// The word `lb_submit.lua` takes, also the metric label.
    pub fn word(self) -> &'static str {
        match self {
            Operator::Set => "set",
            Operator::Best => "best",
            Operator::Increment => "incr",
            Operator::Decrement => "decr",
        }
    }
}

/// A period of a board. The derived order is the canonical order of a
/// board's periods (ALL_TIME first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    AllTime,
    Daily,
    Weekly,
    Monthly,
    Fixed { length_ms: i64 },
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::AllTime => f.write_str("ALL_TIME"),
            Period::Daily => f.write_str("DAILY"),
            Period::Weekly => f.write_str("WEEKLY"),
            Period::Monthly => f.write_str("MONTHLY"),
            Period::Fixed { length_ms } => write!(f, "FIXED({length_ms} ms)"),
        }
    }
}

/// A board's settings: immutable once the board exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub order: Order,
    pub operator: Operator,
    /// Canonical: sorted, no duplicates, ALL_TIME first.
    pub periods: Vec<Period>,
    pub retention: u32,
    /// First day of WEEKLY periods, 0 = Monday … 6 = Sunday.
    pub week_start: u8,
}

impl Spec {
    /// Validates and canonicalises; `field` is the request path of the board.
    pub fn new(
        order: Order,
        operator: Operator,
        periods: &[Period],
        retention: u32,
        week_start: u8,
        field: &str,
    ) -> Result<Self> {
        let mut canonical = vec![Period::AllTime];
        for (i, period) in periods.iter().enumerate() {
            if let Period::Fixed { length_ms } = *period
                && !(MIN_FIXED_MS..=MAX_FIXED_MS).contains(&length_ms)
            {
                return Err(Error::invalid(
                    format!("{field}.periods[{i}].length_ms"),
                    format!("must be between {MIN_FIXED_MS} and {MAX_FIXED_MS}, got {length_ms}"),
                ));
            }
            if *period == Period::AllTime {
                continue;
            }
            if canonical.contains(period) {
                return Err(Error::invalid(format!("{field}.periods[{i}]"), format!("{period} is listed twice")));
            }
            canonical.push(*period);
        }
        if canonical.len() > MAX_PERIODS + 1 {
            return Err(Error::invalid(
                format!("{field}.periods"),
                format!("at most {MAX_PERIODS} besides ALL_TIME, got {}", canonical.len() - 1),
            ));
        }
        if retention > MAX_RETENTION {
            return Err(Error::invalid(
                format!("{field}.retention"),
                format!("must be at most {MAX_RETENTION}, got {retention}"),
            ));
        }
        if week_start > 6 {
            return Err(Error::invalid(format!("{field}.week_start"), "must be a weekday"));
        }
        canonical.sort();
        Ok(Spec { order, operator, periods: canonical, retention, week_start })
    }

    /// The instance of `period` that was current `ago` instances before
    /// the one containing `now_ms`.
    pub fn instance(&self, period: Period, now_ms: i64, ago: u32) -> Result<Instance> {
        let ago = i64::from(ago);
        let retention = i64::from(self.retention);
        let (id, start_ms, end_ms, expire_at_ms) = match period {
            Period::AllTime => ("all".to_owned(), 0, 0, 0),
            Period::Daily => {
                let start = (now_ms.div_euclid(DAY_MS) - ago) * DAY_MS;
                (format!("d{}", date(start)?), start, start + DAY_MS, start + DAY_MS * (1 + retention))
            }
            Period::Weekly => {
                let day = now_ms.div_euclid(DAY_MS);
                // 1970-01-01 was a Thursday: Monday-based weekday 3.
                let first = day - (day + 3 - i64::from(self.week_start)).rem_euclid(7) - 7 * ago;
                let start = first * DAY_MS;
                (format!("w{}", date(start)?), start, start + WEEK_MS, start + WEEK_MS * (1 + retention))
            }
            Period::Monthly => {
                let today = date(now_ms)?;
                let index = i64::from(today.year()) * 12 + i64::from(today.month0()) - ago;
                let start = month_start(index)?;
                let name = format!("m{:04}-{:02}", index.div_euclid(12), index.rem_euclid(12) + 1);
                (name, start, month_start(index + 1)?, month_start(index + 1 + retention)?)
            }
            Period::Fixed { length_ms } => {
                let index = now_ms.div_euclid(length_ms) - ago;
                let start = index * length_ms;
                (format!("f{length_ms}.{index}"), start, start + length_ms, start + length_ms * (1 + retention))
            }
        };
        Ok(Instance { period, id, start_ms, end_ms, expire_at_ms })
    }

    /// The retained instance of `period` named `id` (`field` names it in
    /// errors).
    pub fn instance_by_id(&self, period: Period, id: &str, now_ms: i64, field: &str) -> Result<Instance> {
        let retained = if period == Period::AllTime { 0 } else { self.retention };
        for ago in 0..=retained {
            let instance = self.instance(period, now_ms, ago)?;
            if instance.id == id {
                return Ok(instance);
            }
        }
        Err(Error::invalid(field, format!("{id:?} is not a current or retained instance of {period}")))
    }
}

/// One instance of a period: a day, a week, a month, a fixed slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub period: Period,
    pub id: String,
    /// [start_ms, end_ms), both 0 for ALL_TIME.
    pub start_ms: i64,
    pub end_ms: i64,
    /// When its keys expire: `retention` instances after it ends (0: never).
    pub expire_at_ms: i64,
}

fn date(ms: i64) -> Result<NaiveDate> {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.date_naive())
        .ok_or_else(|| Error::Internal(format!("time {ms} ms is out of range")))
}

/// Unix ms of the first day of month `index` (= year × 12 + month0).
fn month_start(index: i64) -> Result<i64> {
    let year = i32::try_from(index.div_euclid(12)).map_err(|_| Error::Internal("year out of range".into()))?;
    NaiveDate::from_ymd_opt(year, index.rem_euclid(12) as u32 + 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| Error::Internal(format!("month {index} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(periods: &[Period], retention: u32, week_start: u8) -> Spec {
        Spec::new(Order::Descending, Operator::Best, periods, retention, week_start, "board").unwrap()
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn periods_are_canonical_and_validated() {
        let s = spec(&[Period::Weekly, Period::AllTime, Period::Daily], 0, 0);
        assert_eq!(s.periods, [Period::AllTime, Period::Daily, Period::Weekly]);
        let err =
            Spec::new(Order::Ascending, Operator::Set, &[Period::Daily, Period::Daily], 0, 0, "board").unwrap_err();
        assert!(err.to_string().starts_with("board.periods[1]:"), "{err}");
        let err =
            Spec::new(Order::Ascending, Operator::Set, &[Period::Fixed { length_ms: 10 }], 0, 0, "board").unwrap_err();
        assert!(err.to_string().starts_with("board.periods[0].length_ms:"), "{err}");
        let err = Spec::new(Order::Ascending, Operator::Set, &[], 1001, 0, "board").unwrap_err();
        assert!(err.to_string().starts_with("board.retention:"), "{err}");
    }

    #[test]
    fn calendar_periods_follow_utc_boundaries() {
        let s = spec(&[Period::Daily, Period::Weekly, Period::Monthly], 2, 0);
        let now = ms("2026-11-24T23:59:59.999Z"); // a Tuesday
        let day = s.instance(Period::Daily, now, 0).unwrap();
        assert_eq!(day.id, "d2026-11-24");
        assert_eq!((day.start_ms, day.end_ms), (ms("2026-11-24T00:00:00Z"), ms("2026-11-25T00:00:00Z")));
        assert_eq!(day.expire_at_ms, ms("2026-11-27T00:00:00Z"));
        assert_eq!(s.instance(Period::Daily, now + 1, 0).unwrap().id, "d2026-11-25");
        let week = s.instance(Period::Weekly, now, 0).unwrap();
        assert_eq!((week.id.as_str(), week.start_ms), ("w2026-11-23", ms("2026-11-23T00:00:00Z")));
        assert_eq!(s.instance(Period::Weekly, now, 1).unwrap().id, "w2026-11-16");
        // Weeks starting on Sunday.
        let sunday = spec(&[Period::Weekly], 0, 6);
        assert_eq!(sunday.instance(Period::Weekly, now, 0).unwrap().id, "w2026-11-22");
        let month = s.instance(Period::Monthly, now, 0).unwrap();
        assert_eq!((month.start_ms, month.end_ms), (ms("2026-11-01T00:00:00Z"), ms("2026-12-01T00:00:00Z")));
        assert_eq!(month.expire_at_ms, ms("2027-02-01T00:00:00Z"));
        assert_eq!(s.instance(Period::Monthly, now, 11).unwrap().id, "m2025-12");
    }

    #[test]
    fn fixed_periods_count_from_the_epoch() {
        let s = spec(&[Period::Fixed { length_ms: 1000 }], 3, 0);
        let i = s.instance(Period::Fixed { length_ms: 1000 }, 12_345, 1).unwrap();
        assert_eq!((i.id.as_str(), i.start_ms, i.end_ms, i.expire_at_ms), ("f1000.11", 11_000, 12_000, 15_000));
        let found = s.instance_by_id(Period::Fixed { length_ms: 1000 }, "f1000.9", 12_345, "period.id").unwrap();
        assert_eq!(found.start_ms, 9000);
        let err = s.instance_by_id(Period::Fixed { length_ms: 1000 }, "f1000.8", 12_345, "period.id").unwrap_err();
        assert!(err.to_string().starts_with("period.id:"), "{err}");
    }
}
