//! Server-side activity retries: policy defaults, validation, and the retry decision of brief
//! B.6 (exponential backoff without jitter, `next_retry_delay`, non-retryable types, maximum
//! attempts, expiration at schedule-to-close).
use std::time::{Duration, SystemTime};

use kairos_core::time::{from_millis, from_pb_duration, to_pb_duration};
use temporalio_protos::temporal::api::common::v1::RetryPolicy;
use temporalio_protos::temporal::api::enums::v1::{RetryState, TimeoutType};
use temporalio_protos::temporal::api::failure::v1::{Failure, failure};

use super::model::ActivityInfo;

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Try again after this delay.
    Retry(Duration),
    /// Give up, for this reason.
    Stop(RetryState),
}

/// Fills in the defaults of a (possibly absent) retry policy.
pub fn normalize_retry_policy(policy: Option<RetryPolicy>) -> RetryPolicy {
    let mut p = policy.unwrap_or_default();
    let mut initial = from_pb_duration(p.initial_interval.as_ref());
    if initial.is_zero() {
        initial = Duration::from_secs(1);
    }
    p.initial_interval = to_pb_duration(initial);
    if p.backoff_coefficient == 0.0 {
        p.backoff_coefficient = 2.0;
    }
    if from_pb_duration(p.maximum_interval.as_ref()).is_zero() {
        p.maximum_interval = to_pb_duration(initial * 100);
    }
    p
}

/// Checks a client-supplied retry policy, with the reference's messages.
pub fn validate(p: &RetryPolicy) -> Result<(), String> {
    if kairos_core::time::is_negative(p.initial_interval.as_ref()) {
        return Err("invalid InitialInterval set on retry policy: negative duration".into());
    }
    if kairos_core::time::is_negative(p.maximum_interval.as_ref()) {
        return Err("invalid MaximumInterval set on retry policy: negative duration".into());
    }
    if default_maximum_overflows(p) {
        // The reference makes the default maximum a hundred initial intervals in signed 64-bit
        // nanoseconds; past about 2.9 years of initial interval that wraps negative and the
        // policy is refused. Refused here too, so a policy means the same on both servers.
        return Err("invalid MaximumInterval set on retry policy: negative duration".into());
    }
    if p.backoff_coefficient != 0.0 && p.backoff_coefficient < 1.0 {
        return Err("BackoffCoefficient cannot be less than 1 on retry policy.".into());
    }
    let max = from_pb_duration(p.maximum_interval.as_ref());
    if !max.is_zero() && max < from_pb_duration(p.initial_interval.as_ref()) {
        return Err("MaximumInterval cannot be less than InitialInterval on retry policy.".into());
    }
    if p.maximum_attempts < 0 {
        return Err("MaximumAttempts cannot be negative on retry policy.".into());
    }
    Ok(())
}

/// True when the maximum interval is unset and a hundred initial intervals, as signed 64-bit
/// nanoseconds (the initial one saturating there), wrap negative.
fn default_maximum_overflows(p: &RetryPolicy) -> bool {
    if p.maximum_interval
        .as_ref()
        .is_some_and(|d| d.seconds != 0 || d.nanos != 0)
    {
        return false;
    }
    let Some(initial) = p.initial_interval.as_ref() else {
        return false;
    };
    let nanos = i128::from(initial.seconds) * 1_000_000_000 + i128::from(initial.nanos);
    let nanos = i64::try_from(nanos.max(0)).unwrap_or(i64::MAX);
    nanos.wrapping_mul(100) < 0
}

/// Decides whether a failed attempt is retried. `timeout` is set when the attempt timed out.
pub fn decide(
    act: &ActivityInfo,
    failure: &Failure,
    timeout: Option<TimeoutType>,
    now: SystemTime,
) -> RetryDecision {
    if act.cancel_requested {
        return RetryDecision::Stop(RetryState::CancelRequested);
    }
    let policy = normalize_retry_policy(act.retry_policy.clone());
    let failure_type = match timeout {
        Some(TimeoutType::StartToClose) => Some("TemporalTimeout:StartToClose".to_string()),
        Some(TimeoutType::Heartbeat) => Some("TemporalTimeout:Heartbeat".to_string()),
        Some(_) => return RetryDecision::Stop(RetryState::Timeout),
        None => None,
    };
    let mut next_retry_delay = None;
    let failure_type = match (&failure.failure_info, failure_type) {
        (_, Some(t)) => t,
        (Some(failure::FailureInfo::ApplicationFailureInfo(info)), None) => {
            if info.non_retryable {
                return RetryDecision::Stop(RetryState::NonRetryableFailure);
            }
            if info.next_retry_delay.is_some() {
                next_retry_delay = Some(from_pb_duration(info.next_retry_delay.as_ref()));
            }
            info.r#type.clone()
        }
        (Some(failure::FailureInfo::CanceledFailureInfo(_)), None)
        | (Some(failure::FailureInfo::TerminatedFailureInfo(_)), None) => {
            return RetryDecision::Stop(RetryState::NonRetryableFailure);
        }
        _ => String::new(),
    };
    if !failure_type.is_empty() && policy.non_retryable_error_types.contains(&failure_type) {
        return RetryDecision::Stop(RetryState::NonRetryableFailure);
    }
    if policy.maximum_attempts > 0 && act.attempt >= policy.maximum_attempts {
        return RetryDecision::Stop(RetryState::MaximumAttemptsReached);
    }
    let delay = next_retry_delay.unwrap_or_else(|| backoff(&policy, act.attempt));
    let s2c = from_pb_duration(act.schedule_to_close.as_ref());
    if !s2c.is_zero() && now + delay >= from_millis(act.scheduled_time_ms) + s2c {
        return RetryDecision::Stop(RetryState::Timeout);
    }
    RetryDecision::Retry(delay)
}

/// `initial × coefficient^(attempt-1)`, capped at the maximum interval.
pub fn backoff(policy: &RetryPolicy, attempt: i32) -> Duration {
    let initial = from_pb_duration(policy.initial_interval.as_ref()).as_secs_f64();
    let max = from_pb_duration(policy.maximum_interval.as_ref()).as_secs_f64();
    let raw = initial * policy.backoff_coefficient.powi((attempt - 1).max(0));
    let capped = if max > 0.0 { raw.min(max) } else { raw };
    const LONGEST: f64 = 10.0 * 365.0 * 86_400.0;
    // A NaN (a NaN coefficient, or zero times infinity) waits as long as allowed rather than
    // panicking in the conversion.
    let seconds = if capped.is_nan() {
        LONGEST
    } else {
        capped.clamp(0.0, LONGEST)
    };
    Duration::from_secs_f64(seconds)
}

/// Decides whether a failed or timed-out run is retried under its workflow retry policy
/// (`timeout` for a run timeout). Without a policy the run is never retried.
pub fn decide_workflow(
    ms: &crate::state::MutableState,
    failure: Option<&Failure>,
    now: SystemTime,
) -> RetryDecision {
    let Some(policy) = ms.retry_policy.clone() else {
        return RetryDecision::Stop(RetryState::RetryPolicyNotSet);
    };
    let policy = normalize_retry_policy(Some(policy));
    let mut next_retry_delay = None;
    if let Some(failure) = failure {
        let failure_type = match &failure.failure_info {
            Some(failure::FailureInfo::ApplicationFailureInfo(info)) => {
                if info.non_retryable {
                    return RetryDecision::Stop(RetryState::NonRetryableFailure);
                }
                if info.next_retry_delay.is_some() {
                    next_retry_delay = Some(from_pb_duration(info.next_retry_delay.as_ref()));
                }
                info.r#type.clone()
            }
            Some(failure::FailureInfo::CanceledFailureInfo(_))
            | Some(failure::FailureInfo::TerminatedFailureInfo(_)) => {
                return RetryDecision::Stop(RetryState::NonRetryableFailure);
            }
            _ => String::new(),
        };
        if !failure_type.is_empty() && policy.non_retryable_error_types.contains(&failure_type) {
            return RetryDecision::Stop(RetryState::NonRetryableFailure);
        }
    }
    let attempt = ms.attempt.max(1);
    if policy.maximum_attempts > 0 && attempt >= policy.maximum_attempts {
        return RetryDecision::Stop(RetryState::MaximumAttemptsReached);
    }
    let delay = next_retry_delay.unwrap_or_else(|| backoff(&policy, attempt));
    if ms.execution_expiration_ms > 0 && now + delay >= from_millis(ms.execution_expiration_ms) {
        return RetryDecision::Stop(RetryState::Timeout);
    }
    RetryDecision::Retry(delay)
}
