//! Which stored timer tasks a transition makes obsolete. Every timer the state creates is
//! recorded on what it times (the workflow task, an activity, a user timer, the run); when that
//! goes away (completed, retried, closed) its timer rows are deleted in the same transaction.
//! Without this every workflow task and activity left a timeout row behind that fired later for
//! nothing, costing a state read and a write of its own.
use std::collections::HashSet;

use kairos_core::time::to_millis;

use super::{NewTimer, closed};
use crate::state::{MutableState, TimerKind, TimerRef};

/// The timer rows a transition writes and deletes.
#[derive(Debug, Default)]
pub struct TimerChanges {
    /// New timers worth storing (those whose owner still exists).
    pub write: Vec<(i64, NewTimer)>,
    /// Stored timers nothing waits for any more.
    pub delete: Vec<TimerRef>,
}

/// Records each new timer on its owner in `after` and lists the timers of `before` that `after`
/// no longer references. A new timer whose owner is already gone is not written at all.
pub fn settle_timers(
    before: &MutableState,
    after: &mut MutableState,
    new: Vec<(i64, NewTimer)>,
) -> TimerChanges {
    let mut write = Vec::with_capacity(new.len());
    for (task_id, timer) in new {
        let reference = TimerRef {
            task_id,
            fire_at_ms: to_millis(timer.fire_at),
            attempt: timer.data.attempt,
        };
        if attach(after, &timer, reference) {
            write.push((task_id, timer));
        }
    }
    let live: HashSet<i64> = tracked(after).map(|t| t.task_id).collect();
    let mut delete: Vec<TimerRef> = tracked(before)
        .filter(|t| !live.contains(&t.task_id))
        .cloned()
        .collect();
    delete.dedup_by_key(|t| t.task_id);
    TimerChanges { write, delete }
}

/// Records a new timer on its owner; false when the owner no longer exists.
fn attach(ms: &mut MutableState, timer: &NewTimer, reference: TimerRef) -> bool {
    let kind = TimerKind::try_from(timer.data.kind).unwrap_or(TimerKind::Unspecified);
    let event_id = timer.data.event_id;
    if matches!(kind, TimerKind::DeleteExecution | TimerKind::Unspecified) {
        return true; // outlives the run: never tracked
    }
    if closed(ms.status) {
        return false;
    }
    let owner = match kind {
        TimerKind::WorkflowRunTimeout
        | TimerKind::WorkflowExecutionTimeout
        | TimerKind::WorkflowStartBackoff
        | TimerKind::WorkflowTaskRetry => Some(&mut ms.run_timer_tasks),
        TimerKind::WorkflowTaskTimeout => ms
            .wft
            .as_mut()
            .filter(|w| w.scheduled_event_id == event_id && w.attempt == timer.data.attempt)
            .map(|w| &mut w.timer_tasks),
        TimerKind::ActivityTimeout | TimerKind::ActivityRetry => ms
            .activities
            .iter_mut()
            .find(|a| a.scheduled_event_id == event_id)
            .map(|a| &mut a.timer_tasks),
        TimerKind::UserTimer => ms
            .timers
            .iter_mut()
            .find(|t| t.started_event_id == event_id)
            .map(|t| &mut t.timer_tasks),
        TimerKind::DeleteExecution | TimerKind::Unspecified => None,
    };
    match owner {
        Some(list) => {
            list.push(reference);
            true
        }
        None => false,
    }
}

/// Every timer the state references; none once the run is closed.
fn tracked(ms: &MutableState) -> impl Iterator<Item = &TimerRef> {
    let open = !closed(ms.status);
    let run = ms.run_timer_tasks.iter();
    let wft = ms.wft.iter().flat_map(|w| w.timer_tasks.iter());
    let activities = ms.activities.iter().flat_map(|a| a.timer_tasks.iter());
    let timers = ms.timers.iter().flat_map(|t| t.timer_tasks.iter());
    run.chain(wft)
        .chain(activities)
        .chain(timers)
        .filter(move |_| open)
}

/// Drops a fired timer's record from its owner (its row is deleted by the firing itself), so
/// re-armed timers (heartbeats) do not pile up in the state.
pub fn forget_timer(ms: &mut MutableState, task_id: i64) {
    let keep = |t: &TimerRef| t.task_id != task_id;
    ms.run_timer_tasks.retain(keep);
    if let Some(w) = ms.wft.as_mut() {
        w.timer_tasks.retain(keep);
    }
    for a in ms.activities.iter_mut() {
        a.timer_tasks.retain(keep);
    }
    for t in ms.timers.iter_mut() {
        t.timer_tasks.retain(keep);
    }
}
