//! The durable timer queue: every timer row of the owned shards is held in memory in fire
//! order; a loop fires what is due on the engine's clock, each firing one transition that also
//! deletes the timer row, so a timer fires at least once and its effect is applied once.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kairos_core::ids::RunKey;
use kairos_core::time::to_millis;
use kairos_persistence::TimerTask;
use parking_lot::Mutex;
use prost::Message;
use temporalio_protos::temporal::api::enums::v1::TimeoutType;
use tokio::sync::Notify;

use super::Engine;
use crate::state::{TimerData, TimerKind};

/// Timers waiting to fire, by (due time, shard, task id). The due time is the row's fire time,
/// or later for a timer whose firing failed and is retried.
#[derive(Default)]
pub(super) struct Queue {
    /// Keyed by (due time, shard, task id): task ids are unique per shard only, so two shards'
    /// timers may share an id (and a millisecond); without the shard one would replace the other.
    pending: Mutex<BTreeMap<(i64, i32, i64), TimerTask>>,
    wake: Notify,
}

impl Queue {
    pub(super) fn push(&self, timer: TimerTask) {
        self.push_at(timer.fire_at_ms, timer);
    }

    /// Queues a timer whose firing failed to fire again a second after `now_ms`.
    fn retry(&self, timer: TimerTask, now_ms: i64) {
        self.push_at(now_ms + 1000, timer);
    }

    /// Queues `timer` to fire at `due_ms`. The row keeps its own `fire_at_ms`: it is part of the
    /// stored key the firing transaction deletes the row by, so a retry must not change it.
    fn push_at(&self, due_ms: i64, timer: TimerTask) {
        let earliest = {
            let mut pending = self.pending.lock();
            let key = (due_ms, timer.shard_id, timer.task_id);
            pending.insert(key, timer);
            pending.keys().next() == Some(&key)
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Forgets a timer whose row was deleted (what it timed is gone).
    pub(super) fn remove(&self, fire_at_ms: i64, shard_id: i32, task_id: i64) {
        self.pending.lock().remove(&(fire_at_ms, shard_id, task_id));
    }

    fn pop_due(&self, now_ms: i64) -> Vec<TimerTask> {
        let mut pending = self.pending.lock();
        let later = pending.split_off(&(now_ms + 1, i32::MIN, i64::MIN));
        let due = std::mem::replace(&mut *pending, later);
        due.into_values().collect()
    }

    fn next_fire_ms(&self) -> Option<i64> {
        self.pending.lock().keys().next().map(|k| k.0)
    }
}

/// Fires due timers until the process ends.
pub(super) async fn run(engine: Engine) {
    let mut jumps = engine.inner.clock.jumps();
    loop {
        let now_ms = to_millis(engine.inner.clock.now());
        // Timers of one run fire in their queue order (time, then task id), one after the
        // other: two timeouts due together must not race for the run (an activity's
        // schedule-to-close before its start-to-close). Different runs fire concurrently.
        let mut by_run: HashMap<(String, String, String), Vec<TimerTask>> = HashMap::new();
        for timer in engine.inner.timers.pop_due(now_ms) {
            by_run
                .entry((
                    timer.namespace_id.clone(),
                    timer.workflow_id.clone(),
                    timer.run_id.clone(),
                ))
                .or_default()
                .push(timer);
        }
        for (_, timers) in by_run {
            let engine = engine.clone();
            tokio::spawn(async move {
                for timer in timers {
                    if let Err(e) = fire(&engine, &timer).await {
                        tracing::warn!(error = %e, task_id = timer.task_id, "failed to fire a timer; retrying in 1s");
                        let now_ms = to_millis(engine.inner.clock.now());
                        engine.inner.timers.retry(timer, now_ms);
                    }
                }
            });
        }
        let wait = match engine.inner.timers.next_fire_ms() {
            Some(at) => Duration::from_millis(
                (at - to_millis(engine.inner.clock.now())).clamp(0, 60_000) as u64,
            ),
            None => Duration::from_secs(60),
        };
        let jumped = async {
            match jumps.as_mut() {
                Some(rx) => {
                    let _ = rx.changed().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = engine.inner.timers.wake.notified() => {}
            _ = jumped => {}
        }
    }
}

async fn fire(engine: &Engine, timer: &TimerTask) -> crate::Result<()> {
    let data = TimerData::decode(timer.data.as_slice())
        .map_err(|e| crate::Error::Unavailable(format!("failed to decode a timer: {e}")))?;
    let key = RunKey {
        namespace_id: timer.namespace_id.clone(),
        workflow_id: timer.workflow_id.clone(),
        run_id: timer.run_id.clone(),
    };
    let kind = TimerKind::try_from(data.kind).unwrap_or(TimerKind::Unspecified);
    if kind == TimerKind::DeleteExecution {
        return engine.delete(&key, Some(timer.key())).await;
    }
    let timeout_type = TimeoutType::try_from(data.timeout_type).unwrap_or(TimeoutType::Unspecified);
    let result = engine
        .transact(&key, Some(timer.key()), |t| {
            match kind {
                TimerKind::UserTimer => t.user_timer_fired(data.event_id),
                TimerKind::ActivityTimeout => {
                    t.activity_timeout(data.event_id, data.attempt, timeout_type)
                }
                TimerKind::ActivityRetry => t.activity_retry_fired(data.event_id, data.attempt),
                TimerKind::WorkflowTaskTimeout => {
                    t.wft_timeout(data.event_id, data.attempt, timeout_type)
                }
                TimerKind::WorkflowRunTimeout | TimerKind::WorkflowExecutionTimeout => {
                    t.run_timeout_fired()
                }
                TimerKind::WorkflowStartBackoff => t.start_backoff_fired(),
                TimerKind::WorkflowTaskRetry => t.wft_retry_fired(),
                TimerKind::DeleteExecution | TimerKind::Unspecified => {}
            }
            Ok(())
        })
        .await;
    match result {
        // The run was deleted: the timer has nothing left to do.
        Err(crate::Error::NotFound(_)) => {
            let shard_id = kairos_core::ids::shard_for(
                &key.namespace_id,
                &key.workflow_id,
                engine.inner.options.shard_count,
            );
            engine
                .commit_timer_delete(&key, shard_id, timer.key())
                .await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_persistence::TimerKey;

    fn timer(shard_id: i32, task_id: i64, fire_at_ms: i64, run: &str) -> TimerTask {
        TimerTask {
            task_id,
            shard_id,
            fire_at_ms,
            namespace_id: "ns".into(),
            workflow_id: format!("wf-{run}"),
            run_id: run.into(),
            data: Vec::new(),
        }
    }

    #[test]
    fn same_task_id_and_time_on_two_shards_are_two_timers() {
        // Every shard numbers its tasks from the same base, so this happens in practice.
        let queue = Queue::default();
        queue.push(timer(0, 1 << 40, 1_000, "a"));
        queue.push(timer(1, 1 << 40, 1_000, "b"));
        queue.push(timer(1, (1 << 40) + 1, 2_000, "b"));
        let due = queue.pop_due(1_000);
        let mut runs: Vec<_> = due.iter().map(|t| t.run_id.as_str()).collect();
        runs.sort();
        assert_eq!(runs, ["a", "b"]);
        assert_eq!(queue.next_fire_ms(), Some(2_000));
    }

    #[test]
    fn a_retried_timer_keeps_the_fire_time_its_row_is_stored_under() {
        let queue = Queue::default();
        let timer = timer(1, 7, 100, "run");
        // Its firing failed at 100: due again a second later.
        queue.retry(timer, 100);
        assert!(
            queue.pop_due(1_099).is_empty(),
            "not due before the retry time"
        );
        let due = queue.pop_due(1_100);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].key(),
            TimerKey {
                fire_at_ms: 100,
                task_id: 7
            },
            "the delete key must still match the stored row"
        );
    }
}
