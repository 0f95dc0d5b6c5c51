//! Activity commands: scheduling one (its timeouts settled against each other and the run's,
//! its first attempt dispatched) and requesting one's cancellation.
use super::*;

impl Transition<'_> {
    /// Checks a schedule activity task command.
    pub(super) fn check_schedule_activity_task(
        &self,
        a: &cmd::ScheduleActivityTaskCommandAttributes,
        budget: &mut Budget,
    ) -> Result<(), Refusal> {
        let bad = |m: &str| Err((C::BadScheduleActivityAttributes, m.to_string()));
        if a.activity_id.is_empty() {
            return bad("ActivityId is not set on command.");
        }
        if a.activity_type.as_ref().is_none_or(|t| t.name.is_empty()) {
            return bad("ActivityType is not set on command.");
        }
        if is_negative(a.schedule_to_close_timeout.as_ref())
            || is_negative(a.schedule_to_start_timeout.as_ref())
            || is_negative(a.start_to_close_timeout.as_ref())
            || is_negative(a.heartbeat_timeout.as_ref())
        {
            return bad("A valid timeout may not be negative.");
        }
        if dur(a.schedule_to_close_timeout.as_ref()).is_zero()
            && dur(a.start_to_close_timeout.as_ref()).is_zero()
        {
            return bad("A valid StartToClose or ScheduleToCloseTimeout is not set on command.");
        }
        if let Some(policy) = &a.retry_policy
            && let Err(m) = retry::validate(policy)
        {
            return bad(&m);
        }
        if self
            .ms
            .activities
            .iter()
            .any(|x| x.activity_id == a.activity_id)
            || budget.new_activity_ids.contains(&a.activity_id)
        {
            return Err((
                C::ScheduleActivityDuplicateId,
                format!("Activity with id {} already exists", a.activity_id),
            ));
        }
        budget.new_activity_ids.push(a.activity_id.clone());
        budget.pending_activities += 1;
        if budget.pending_activities > self.env.max_pending_activities.max(1) {
            return Err((
                C::PendingActivitiesLimitExceeded,
                "the number of pending activities exceeds the limit".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn schedule_activity_task(
        &mut self,
        a: &cmd::ScheduleActivityTaskCommandAttributes,
        completed_id: i64,
    ) -> bool {
        let run_timeout = dur(self.ms.run_timeout.as_ref());
        let cap = |d: Duration| {
            if !run_timeout.is_zero() && (d.is_zero() || d > run_timeout) {
                run_timeout
            } else {
                d
            }
        };
        let mut s2c = dur(a.schedule_to_close_timeout.as_ref());
        let mut s2s = dur(a.schedule_to_start_timeout.as_ref());
        let mut stc = dur(a.start_to_close_timeout.as_ref());
        let mut hb = dur(a.heartbeat_timeout.as_ref());
        if !s2c.is_zero() {
            if s2s.is_zero() || s2s > s2c {
                s2s = s2c;
            }
            if stc.is_zero() || stc > s2c {
                stc = s2c;
            }
        }
        s2c = cap(s2c);
        s2s = cap(s2s);
        stc = cap(stc);
        if hb > stc {
            hb = stc;
        }
        let task_queue = a
            .task_queue
            .as_ref()
            .map(|q| q.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.ms.task_queue.clone());
        let retry_policy = normalize_retry_policy(a.retry_policy.clone());
        let id = self.append(event(
            EventType::ActivityTaskScheduled,
            hist::ActivityTaskScheduledEventAttributes {
                activity_id: a.activity_id.clone(),
                activity_type: a.activity_type.clone(),
                task_queue: Some(TaskQueue {
                    name: task_queue.clone(),
                    kind: TaskQueueKind::Normal as i32,
                    normal_name: String::new(),
                }),
                header: a.header.clone(),
                input: a.input.clone(),
                // The event records every timeout, zero included, as the reference does.
                schedule_to_close_timeout: Some(kairos_core::time::to_pb_duration_explicit(s2c)),
                schedule_to_start_timeout: Some(kairos_core::time::to_pb_duration_explicit(s2s)),
                start_to_close_timeout: Some(kairos_core::time::to_pb_duration_explicit(stc)),
                heartbeat_timeout: Some(kairos_core::time::to_pb_duration_explicit(hb)),
                workflow_task_completed_event_id: completed_id,
                retry_policy: Some(retry_policy.clone()),
                priority: a.priority.clone(),
                ..Default::default()
            },
        ));
        let mut info = ActivityInfo {
            scheduled_event_id: id,
            activity_id: a.activity_id.clone(),
            activity_type: a.activity_type.clone(),
            task_queue,
            header: a.header.clone(),
            input: a.input.clone(),
            schedule_to_close: to_pb_duration(s2c),
            schedule_to_start: to_pb_duration(s2s),
            start_to_close: to_pb_duration(stc),
            heartbeat: to_pb_duration(hb),
            retry_policy: Some(retry_policy),
            scheduled_time_ms: self.now_ms(),
            attempt: 1,
            current_attempt_scheduled_time_ms: self.now_ms(),
            priority: a.priority.clone(),
            ..Default::default()
        };
        if !s2c.is_zero() {
            self.timer(
                self.now + s2c,
                TimerData {
                    kind: TimerKind::ActivityTimeout as i32,
                    event_id: id,
                    attempt: 0,
                    timeout_type: TimeoutType::ScheduleToClose as i32,
                    ..Default::default()
                },
            );
        }
        self.dispatch_activity_attempt(&mut info);
        self.ms.activities.push(info);
        false
    }

    /// Checks a request cancel activity task command.
    pub(super) fn check_request_cancel_activity_task(
        &self,
        a: &cmd::RequestCancelActivityTaskCommandAttributes,
        _budget: &mut Budget,
    ) -> Result<(), Refusal> {
        if a.scheduled_event_id <= 0 || a.scheduled_event_id >= self.ms.next_event_id {
            return Err((
                C::BadRequestCancelActivityAttributes,
                format!("invalid scheduled event id {}", a.scheduled_event_id),
            ));
        }
        Ok(())
    }

    /// Applies a request cancel activity task command; true when it needs a new workflow task.
    pub(super) fn request_cancel_activity_task(
        &mut self,
        a: &cmd::RequestCancelActivityTaskCommandAttributes,
        completed_id: i64,
        identity: &str,
    ) -> bool {
        let requested = self.append(event(
            EventType::ActivityTaskCancelRequested,
            hist::ActivityTaskCancelRequestedEventAttributes {
                scheduled_event_id: a.scheduled_event_id,
                workflow_task_completed_event_id: completed_id,
            },
        ));
        let Some(pos) = self
            .ms
            .activities
            .iter()
            .position(|x| x.scheduled_event_id == a.scheduled_event_id)
        else {
            return false;
        };
        if self.ms.activities[pos].started {
            self.ms.activities[pos].cancel_requested = true;
            self.ms.activities[pos].cancel_requested_event_id = requested;
            false
        } else {
            let act = self.ms.activities.remove(pos);
            self.transfers_done.push(act.transfer_task_id);
            self.append(event(
                EventType::ActivityTaskCanceled,
                hist::ActivityTaskCanceledEventAttributes {
                    scheduled_event_id: act.scheduled_event_id,
                    latest_cancel_requested_event_id: requested,
                    identity: identity.to_string(),
                    ..Default::default()
                },
            ));
            true
        }
    }
}
