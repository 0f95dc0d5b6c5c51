//! Conversions between `std::time` and the protobuf well-known types.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_wkt_types::{Duration as PbDuration, Timestamp};

/// A protobuf timestamp for a system time.
pub fn to_timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A system time for a protobuf timestamp (times before 1970 clamp to the epoch).
pub fn from_timestamp(t: &Timestamp) -> SystemTime {
    if t.seconds < 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.max(0) as u32)
}

/// Milliseconds since the epoch, as stored in the database.
pub fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The system time for stored milliseconds.
pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A protobuf duration; `None` for zero, as Temporal leaves unset durations absent.
pub fn to_pb_duration(d: Duration) -> Option<PbDuration> {
    if d.is_zero() {
        return None;
    }
    Some(PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

/// A protobuf duration that is present even when zero (for fields the reference always sets).
pub fn to_pb_duration_explicit(d: Duration) -> PbDuration {
    to_pb_duration(d).unwrap_or_default()
}

/// A `std` duration from an optional protobuf one; absent and negative both mean zero.
pub fn from_pb_duration(d: Option<&PbDuration>) -> Duration {
    match d {
        Some(d) if d.seconds > 0 || (d.seconds == 0 && d.nanos > 0) => {
            Duration::new(d.seconds as u64, d.nanos.max(0) as u32)
        }
        _ => Duration::ZERO,
    }
}

/// True when a protobuf duration is present and negative (an invalid request).
pub fn is_negative(d: Option<&PbDuration>) -> bool {
    matches!(d, Some(d) if d.seconds < 0 || d.nanos < 0)
}
