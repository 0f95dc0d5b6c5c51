//! Conversions between `std::time` and the protobuf well-known types. Every value that comes
//! from the wire is brought into range here: a duration saturates at the protobuf maximum
//! (about 10,000 years), a timestamp at the protobuf range, so no arithmetic on them later can
//! overflow, wrap negative, or panic.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_wkt_types::{Duration as PbDuration, Timestamp};

/// The largest duration protobuf allows (`google.protobuf.Duration`: 315,576,000,000 s, about
/// 10,000 years). Longer ones saturate to it: they never end in practice, as in the reference,
/// and a time this far past any clock reading still fits every representation we use
/// (milliseconds since the epoch in an `i64`, `SystemTime`, a tokio `Instant`).
pub const MAX_DURATION: Duration = Duration::from_secs(315_576_000_000);

/// The latest timestamp protobuf allows (9999-12-31T23:59:59Z), in seconds since the epoch.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// A protobuf timestamp for a system time.
pub fn to_timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A system time for a protobuf timestamp (times before 1970 clamp to the epoch, times past
/// the protobuf range to its end).
pub fn from_timestamp(t: &Timestamp) -> SystemTime {
    if t.seconds < 0 {
        return UNIX_EPOCH;
    }
    let seconds = t.seconds.min(MAX_TIMESTAMP_SECONDS) as u64;
    UNIX_EPOCH + Duration::new(seconds, t.nanos.clamp(0, 999_999_999) as u32)
}

/// Milliseconds since the epoch, as stored in the database.
pub fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The system time for stored milliseconds.
pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A protobuf duration; `None` for zero, as Temporal leaves unset durations absent. Saturates
/// at [`MAX_DURATION`].
pub fn to_pb_duration(d: Duration) -> Option<PbDuration> {
    if d.is_zero() {
        return None;
    }
    let d = d.min(MAX_DURATION);
    Some(PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

/// A protobuf duration that is present even when zero (for fields the reference always sets).
pub fn to_pb_duration_explicit(d: Duration) -> PbDuration {
    to_pb_duration(d).unwrap_or_default()
}

/// A `std` duration from an optional protobuf one; absent and negative both mean zero, and
/// anything past [`MAX_DURATION`] (up to `i64::MAX` seconds, nanoseconds out of range) is
/// [`MAX_DURATION`].
pub fn from_pb_duration(d: Option<&PbDuration>) -> Duration {
    match d {
        Some(d) if d.seconds > 0 || (d.seconds == 0 && d.nanos > 0) => {
            let seconds = d.seconds as u64;
            if seconds >= MAX_DURATION.as_secs() {
                return MAX_DURATION;
            }
            // Nanoseconds past a second carry over (checked above to stay in range).
            let nanos = d.nanos.max(0) as u64;
            Duration::from_secs(seconds + nanos / 1_000_000_000)
                .saturating_add(Duration::from_nanos(nanos % 1_000_000_000))
                .min(MAX_DURATION)
        }
        _ => Duration::ZERO,
    }
}

/// True when a protobuf duration is present and negative (an invalid request).
pub fn is_negative(d: Option<&PbDuration>) -> bool {
    matches!(d, Some(d) if d.seconds < 0 || d.nanos < 0)
}

/// `t + d`, or the latest representable time when that overflows: "never", not a panic.
pub fn add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d)
        .unwrap_or_else(|| UNIX_EPOCH + MAX_DURATION + MAX_DURATION)
}

/// A tokio deadline `d` from now, saturating far in the future instead of overflowing.
pub fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(MAX_DURATION))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(seconds: i64, nanos: i32) -> PbDuration {
        PbDuration { seconds, nanos }
    }

    #[test]
    fn durations_from_the_wire_saturate_instead_of_wrapping() {
        let check = |seconds, nanos, want: Duration| {
            assert_eq!(
                from_pb_duration(Some(&pb(seconds, nanos))),
                want,
                "{seconds}s {nanos}ns"
            );
        };
        check(1, 500, Duration::new(1, 500));
        check(0, 0, Duration::ZERO);
        check(-5, 0, Duration::ZERO);
        check(0, -1, Duration::ZERO);
        check(1, i32::MAX, Duration::new(3, 147_483_647));
        check(315_576_000_000, 0, MAX_DURATION);
        check(
            315_575_999_999,
            999_999_999,
            Duration::new(315_575_999_999, 999_999_999),
        );
        check(315_575_999_999, i32::MAX, MAX_DURATION);
        check(50_000_000_000_000_000, 0, MAX_DURATION);
        check(i64::MAX, i32::MAX, MAX_DURATION);
        // The longest duration is a time far in the future, in every representation.
        let now = SystemTime::now();
        let far = add(now, MAX_DURATION);
        assert!(to_millis(far) > to_millis(now));
        assert_eq!(
            from_millis(to_millis(far)),
            UNIX_EPOCH + Duration::from_millis(to_millis(far) as u64)
        );
        assert!(add(far, Duration::MAX) > far);
        assert!(deadline_after(Duration::MAX) > tokio::time::Instant::now());
        assert_eq!(to_pb_duration(Duration::MAX), Some(pb(315_576_000_000, 0)));
    }

    #[test]
    fn timestamps_from_the_wire_stay_in_range() {
        let t = |seconds, nanos| from_timestamp(&Timestamp { seconds, nanos });
        assert_eq!(t(-1, 0), UNIX_EPOCH);
        assert_eq!(t(10, -3), UNIX_EPOCH + Duration::from_secs(10));
        assert_eq!(t(i64::MAX, i32::MAX), t(MAX_TIMESTAMP_SECONDS, 999_999_999));
        assert!(to_millis(t(i64::MAX, 0)) > 0);
        assert_eq!(
            to_timestamp(t(1, 2)),
            Timestamp {
                seconds: 1,
                nanos: 2
            }
        );
    }
}
