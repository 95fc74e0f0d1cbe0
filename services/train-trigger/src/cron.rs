//! Cron expressions: five fields (minute, hour, day of month, month, day of week; UTC) with
//! `*`, numbers, lists `a,b`, ranges `a-b` and steps `*/n` or `a-b/n`. As in classic cron, when
//! both day fields are restricted a day matching either counts.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

fn field(text: &str, min: u32, max: u32, what: &str) -> Result<Vec<bool>, String> {
    let mut set = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what}: bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = a
                .parse()
                .map_err(|_| format!("{what}: bad number in {part:?}"))?;
            let b = b
                .parse()
                .map_err(|_| format!("{what}: bad number in {part:?}"))?;
            (a, b)
        } else {
            let n = range
                .parse()
                .map_err(|_| format!("{what}: bad number in {part:?}"))?;
            (n, if part.contains('/') { max } else { n })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{what}: {part:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            set[v as usize] = true;
            v += step;
        }
    }
    Ok(set)
}

impl Cron {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = parts[..] else {
            return Err(format!(
                "cron {text:?}: expected five fields (minute hour day-of-month month day-of-week)"
            ));
        };
        let mut weekdays = field(dow, 0, 7, "day of week")?;
        // 7 is Sunday too.
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Self {
            minutes: field(m, 0, 59, "minute")?,
            hours: field(h, 0, 23, "hour")?,
            days: field(dom, 1, 31, "day of month")?,
            months: field(mon, 1, 12, "month")?,
            weekdays,
            days_restricted: dom != "*",
            weekdays_restricted: dow != "*",
        })
    }

    fn matches(&self, t: &DateTime<Utc>) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            _ => day && weekday,
        };
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.months[t.month() as usize]
            && day_ok
    }

    /// Whether a minute the expression names starts in `(after, until]` (milliseconds since
    /// the epoch). Looks at most a year of minutes.
    pub(crate) fn fired_between(&self, after: i64, until: i64) -> bool {
        const MINUTE: i64 = 60_000;
        let mut t = (after.div_euclid(MINUTE) + 1) * MINUTE;
        let limit = until.min(after.saturating_add(366 * 24 * 60 * MINUTE));
        while t <= limit {
            if DateTime::from_timestamp_millis(t).is_some_and(|d| self.matches(&d)) {
                return true;
            }
            t += MINUTE;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn nightly_at_three() {
        let c = Cron::parse("0 3 * * *").unwrap();
        assert!(c.fired_between(at("2026-11-28T02:59:00Z"), at("2026-11-28T03:00:00Z")));
        assert!(!c.fired_between(at("2026-11-28T03:00:00Z"), at("2026-11-29T02:59:59Z")));
        assert!(c.fired_between(at("2026-11-28T03:00:00Z"), at("2026-11-29T03:00:00Z")));
    }

    #[test]
    fn steps_ranges_lists_and_weekdays() {
        let c = Cron::parse("*/15 9-17 * * 1-5").unwrap();
        // Saturday 2026-11-28: no; Monday 2026-11-30 09:15: yes.
        assert!(!c.fired_between(at("2026-11-28T00:00:00Z"), at("2026-11-28T23:59:00Z")));
        assert!(c.fired_between(at("2026-11-30T09:14:00Z"), at("2026-11-30T09:15:00Z")));
        assert!(!c.fired_between(at("2026-11-30T09:15:00Z"), at("2026-11-30T09:29:00Z")));
        assert!(Cron::parse("0 3 * *").is_err());
        assert!(Cron::parse("61 3 * * *").is_err());
        assert!(
            Cron::parse("0 3 * * 7")
                .unwrap()
                .fired_between(at("2026-11-29T00:00:00Z"), at("2026-11-29T03:00:00Z"))
        );
    }
}
