//! Timer commands: starting a user timer and cancelling one.
use super::*;

/// The longest a user timer waits (the reference's cap).
const MAX_TIMER: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

impl Transition<'_> {
    /// Checks a start timer command.
    pub(super) fn check_start_timer(
        &self,
        a: &cmd::StartTimerCommandAttributes,
        budget: &mut Budget,
    ) -> Result<(), Refusal> {
        if a.timer_id.is_empty() {
            return Err((
                C::BadStartTimerAttributes,
                "TimerId is not set on command.".into(),
            ));
        }
        // A missing or zero timeout is a timer that fires at once (through the timer queue,
        // as every timer), as the reference accepts it since 1.23; only a negative one, or one
        // whose seconds and nanoseconds disagree in sign, is refused.
        if let Some(d) = &a.start_to_fire_timeout {
            let why = if d.seconds < 0 && d.nanos > 0 || d.seconds > 0 && d.nanos < 0 {
                Some("duration has seconds and nanos with different signs")
            } else if d.seconds < 0 || d.nanos < 0 {
                Some("negative duration")
            } else {
                None
            };
            if let Some(why) = why {
                return Err((
                    C::BadStartTimerAttributes,
                    format!(
                        "An invalid StartToFireTimeout is set on StartTimerCommand: {why}. TimerId={}",
                        a.timer_id
                    ),
                ));
            }
        }
        if self.ms.timers.iter().any(|t| t.timer_id == a.timer_id)
            || budget.new_timer_ids.contains(&a.timer_id)
        {
            return Err((
                C::StartTimerDuplicateId,
                format!("Timer with id {} already exists", a.timer_id),
            ));
        }
        budget.new_timer_ids.push(a.timer_id.clone());
        Ok(())
    }

    /// Applies a start timer command; true when it needs a new workflow task.
    pub(super) fn start_timer(
        &mut self,
        a: &cmd::StartTimerCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        let id = self.append(event(
            EventType::TimerStarted,
            hist::TimerStartedEventAttributes {
                timer_id: a.timer_id.clone(),
                start_to_fire_timeout: a.start_to_fire_timeout,
                workflow_task_completed_event_id: completed_id,
            },
        ));
        // Past 100 years a timer is held to 100 years, as the reference caps it.
        let fire_at = self.now + dur(a.start_to_fire_timeout.as_ref()).min(MAX_TIMER);
        self.ms.timers.push(TimerInfo {
            timer_id: a.timer_id.clone(),
            started_event_id: id,
            fire_time_ms: to_millis(fire_at),
            timer_tasks: Vec::new(),
        });
        self.timer(
            fire_at,
            TimerData {
                kind: TimerKind::UserTimer as i32,
                event_id: id,
                timer_id: a.timer_id.clone(),
                ..Default::default()
            },
        );
        false
    }

    /// Checks a cancel timer command.
    pub(super) fn check_cancel_timer(
        &self,
        a: &cmd::CancelTimerCommandAttributes,
        budget: &mut Budget,
    ) -> Result<(), Refusal> {
        let known = self.ms.timers.iter().any(|t| t.timer_id == a.timer_id)
            || budget.new_timer_ids.contains(&a.timer_id);
        if !known {
            return Err((
                C::BadCancelTimerAttributes,
                format!("Timer with id {} is not pending", a.timer_id),
            ));
        }
        Ok(())
    }

    /// Applies a cancel timer command; true when it needs a new workflow task.
    pub(super) fn cancel_timer(
        &mut self,
        a: &cmd::CancelTimerCommandAttributes,
        completed_id: i64,
        identity: &str,
    ) -> bool {
        let Some(pos) = self.ms.timers.iter().position(|t| t.timer_id == a.timer_id) else {
            return false;
        };
        let timer = self.ms.timers.remove(pos);
        self.append(event(
            EventType::TimerCanceled,
            hist::TimerCanceledEventAttributes {
                timer_id: timer.timer_id,
                started_event_id: timer.started_event_id,
                workflow_task_completed_event_id: completed_id,
                identity: identity.to_string(),
            },
        ));
        false
    }
}
