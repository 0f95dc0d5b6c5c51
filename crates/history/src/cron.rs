//! Cron schedules of `cron_schedule` on a workflow start: the standard five fields (minute,
//! hour, day of month, month, day of week) with lists, ranges, steps and month / weekday names,
//! the `@yearly`.. `@hourly` shorthands and `@every <duration>`. Times are UTC.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Duration as ChronoDuration, Timelike, Utc};

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum CronSchedule {
    /// Five fields, each a bit set of the values it allows.
    Fields {
        minutes: u64,
        hours: u64,
        days_of_month: u64,
        months: u64,
        days_of_week: u64,
        /// Day of month and day of week were both restricted: a day matches either.
        either_day: bool,
    },
    /// `@every <duration>`: a fixed delay.
    Every(Duration),
}

/// The longest `@every` accepted (keeps every time computation far from overflow).
const MAX_EVERY: Duration = Duration::from_secs(100 * 366 * 86_400);

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl CronSchedule {
    /// Parses a schedule; the error says which part is wrong.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.starts_with("CRON_TZ=") || spec.starts_with("TZ=") {
            return Err("time zones are not supported; schedules are in UTC".into());
        }
        if let Some(rest) = spec.strip_prefix("@every ") {
            let d = parse_duration(rest.trim())?;
            if d < Duration::from_secs(1) {
                return Err("@every needs a duration of at least 1s".into());
            }
            if d > MAX_EVERY {
                return Err("@every allows at most 100 years".into());
            }
            return Ok(CronSchedule::Every(d));
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(format!("unknown descriptor {s}")),
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        let minutes = field(fields[0], 0, 59, &[], "minute")?;
        let hours = field(fields[1], 0, 23, &[], "hour")?;
        let days_of_month = field(fields[2], 1, 31, &[], "day of month")?;
        let months = field(fields[3], 1, 12, &MONTHS, "month")?;
        let mut days_of_week = field(fields[4], 0, 7, &DAYS, "day of week")?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1; // 7 is Sunday too
        }
        let restricted = |f: &str| !(f == "*" || f == "?");
        Ok(CronSchedule::Fields {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            either_day: restricted(fields[2]) && restricted(fields[4]),
        })
    }

    /// The first time strictly after `after` that the schedule names (whole minutes for
    /// fields, `after + delay` for `@every`). `None` when nothing matches within five years.
    pub fn next(&self, after: SystemTime) -> Option<SystemTime> {
        let (minutes, hours, dom, months, dow, either) = match self {
            // As the reference's schedules count it: from the whole second.
            CronSchedule::Every(d) => {
                let since = after.duration_since(UNIX_EPOCH).ok()?;
                let whole = UNIX_EPOCH + Duration::from_secs(since.as_secs());
                return whole.checked_add(*d);
            }
            CronSchedule::Fields {
                minutes,
                hours,
                days_of_month,
                months,
                days_of_week,
                either_day,
            } => (
                *minutes,
                *hours,
                *days_of_month,
                *months,
                *days_of_week,
                *either_day,
            ),
        };
        let secs = after.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
        let mut t: DateTime<Utc> = DateTime::from_timestamp(secs - secs % 60 + 60, 0)?;
        let limit = t + ChronoDuration::days(5 * 366);
        let has = |set: u64, v: u32| set & (1u64 << v) != 0;
        while t < limit {
            if !has(months, t.month()) {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = chrono::NaiveDate::from_ymd_opt(y, m, 1)?
                    .and_hms_opt(0, 0, 0)?
                    .and_utc();
                continue;
            }
            let dom_ok = has(dom, t.day());
            let dow_ok = has(dow, t.weekday().num_days_from_sunday());
            let day_ok = if either {
                dom_ok || dow_ok
            } else {
                dom_ok && dow_ok
            };
            if !day_ok {
                t = (t.date_naive() + ChronoDuration::days(1))
                    .and_hms_opt(0, 0, 0)?
                    .and_utc();
                continue;
            }
            if !has(hours, t.hour()) {
                t = t.with_minute(0)? + ChronoDuration::hours(1);
                continue;
            }
            if !has(minutes, t.minute()) {
                t += ChronoDuration::minutes(1);
                continue;
            }
            return Some(UNIX_EPOCH + Duration::from_secs(t.timestamp() as u64));
        }
        None
    }

    /// How long after `now` a run of a workflow whose chain started at `start` waits for its
    /// next scheduled time: the first scheduled time (stepping from `start`, so `@every`
    /// keeps its rhythm) that is not before `now`.
    pub fn backoff(&self, start: SystemTime, now: SystemTime) -> Option<Duration> {
        let mut next = self.next(start)?;
        if let CronSchedule::Every(d) = self
            && next < now
        {
            let behind = now.duration_since(next).unwrap_or_default();
            let steps = behind.as_nanos() / d.as_nanos().max(1);
            next += *d * steps as u32;
        }
        let mut guard = 0;
        while next < now && guard < 1_000_000 {
            next = self.next(next)?;
            guard += 1;
        }
        Some(next.duration_since(now).unwrap_or_default())
    }
}

fn field(spec: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<u64, String> {
    let mut set = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("bad step {s:?} in the {what} field"))?;
                if step == 0 {
                    return Err(format!("step 0 in the {what} field"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        // Day of week: 7 is Sunday again, so an open range ends at 6 (7 only when named).
        let open_max = if max == 7 { 6 } else { max };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, open_max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, min, what)?, value(b, names, min, what)?)
        } else {
            let v = value(range, names, min, what)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if step > 1 { open_max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!(
                "{part:?} is out of range {min}-{max} in the {what} field"
            ));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn value(s: &str, names: &[&str], min: u32, what: &str) -> Result<u32, String> {
    if let Ok(v) = s.parse::<u32>() {
        return Ok(v);
    }
    let lower = s.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + min)
        .ok_or_else(|| format!("bad value {s:?} in the {what} field"))
}

/// `1h30m`, `90s`, `500ms`: a Go-style duration.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit"))?;
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        let part = Duration::try_from_secs_f64(number * unit)
            .map_err(|_| format!("duration {s:?} is out of range"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("duration {s:?} is out of range"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        let t = DateTime::parse_from_rfc3339(s).unwrap();
        UNIX_EPOCH + Duration::from_secs(t.timestamp() as u64)
    }

    fn next(spec: &str, after: &str) -> String {
        let t = CronSchedule::parse(spec).unwrap().next(at(after)).unwrap();
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        DateTime::from_timestamp(secs, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    #[test]
    fn the_next_time_follows_each_field() {
        assert_eq!(
            next("* * * * *", "2026-11-28T10:00:30Z"),
            "2026-11-28T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-11-28T10:00:00Z"),
            "2026-11-28T10:15:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2026-11-28T10:00:00Z"),
            "2026-11-29T02:30:00Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-11-28T10:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        // 2026-11-28 is a Saturday.
        assert_eq!(
            next("0 9 * * MON-FRI", "2026-11-28T10:00:00Z"),
            "2026-11-30T09:00:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-11-28T10:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        // Day of month and day of week both restricted: either matches.
        assert_eq!(
            next("0 0 1 * sun", "2026-11-28T10:00:00Z"),
            "2026-11-29T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-11-28T10:59:59Z"),
            "2026-11-28T11:00:00Z"
        );
        assert_eq!(
            next("@every 90s", "2026-11-28T10:00:00Z"),
            "2026-11-28T10:01:30Z"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-11-28T10:00:00Z"),
            "2026-11-29T00:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (spec, needle) in [
            ("* * * *", "expected 5 fields"),
            ("61 * * * *", "out of range"),
            ("* * * foo *", "bad value"),
            ("*/0 * * * *", "step 0"),
            ("@sometimes", "unknown descriptor"),
            ("@every 10x", "unknown unit"),
            ("CRON_TZ=Europe/Paris 0 * * * *", "time zones"),
            ("@every 99999999999999999999s", "out of range"),
            ("@every 2000000h", "at most 100 years"),
        ] {
            let err = CronSchedule::parse(spec).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn the_backoff_lands_on_the_first_scheduled_time_not_before_now() {
        let s = CronSchedule::parse("*/5 * * * *").unwrap();
        let start = at("2026-11-28T10:00:10Z");
        assert_eq!(
            s.backoff(start, at("2026-11-28T10:00:10Z")),
            Some(Duration::from_secs(290))
        );
        assert_eq!(
            s.backoff(start, at("2026-11-28T10:07:00Z")),
            Some(Duration::from_secs(180))
        );
        let every = CronSchedule::parse("@every 10s").unwrap();
        assert_eq!(
            every.backoff(start, at("2026-11-28T10:00:35Z")),
            Some(Duration::from_secs(5))
        );
    }
}
