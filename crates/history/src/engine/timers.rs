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
    pending: Mutex<BTreeMap<(i64, i32, i64), Packed>>,
    wake: Notify,
}

/// A queued timer without what its key already says: the fire time its row is stored under (a
/// retried timer is due later) and one allocation holding the run's ids and the timer's data.
/// Every open workflow has a timer here, so its size is most of an idle server's memory per open
/// workflow: with whole `TimerTask`s (a 120-byte value and four allocations) a restart on 30 000
/// sleeping workflows took 29.5 MiB, with these 21.5 MiB (docs/benchmarks.md).
struct Packed {
    fire_at_ms: i64,
    /// The namespace id, workflow id and run id, each after its length (u32, little endian),
    /// then the data.
    bytes: Box<[u8]>,
}

impl Packed {
    fn new(timer: &TimerTask) -> Self {
        let ids = [&timer.namespace_id, &timer.workflow_id, &timer.run_id];
        let mut bytes =
            Vec::with_capacity(12 + ids.iter().map(|s| s.len()).sum::<usize>() + timer.data.len());
        for id in ids {
            bytes.extend_from_slice(&(id.len() as u32).to_le_bytes());
            bytes.extend_from_slice(id.as_bytes());
        }
        bytes.extend_from_slice(&timer.data);
        Packed {
            fire_at_ms: timer.fire_at_ms,
            bytes: bytes.into_boxed_slice(),
        }
    }

    fn unpack(self, shard_id: i32, task_id: i64) -> TimerTask {
        let mut rest: &[u8] = &self.bytes;
        let mut id = || {
            let (len, tail) = rest.split_at(4);
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let (text, tail) = tail.split_at(len);
            rest = tail;
            // Packed from a `String` above.
            String::from_utf8(text.to_vec()).expect("packed from a String")
        };
        let (namespace_id, workflow_id, run_id) = (id(), id(), id());
        TimerTask {
            task_id,
            shard_id,
            fire_at_ms: self.fire_at_ms,
            namespace_id,
            workflow_id,
            run_id,
            data: rest.to_vec(),
        }
    }
}

/// A timer made ready for the queue, due at its fire time. Made before the commit that stores
/// its row (from the batch's row, not a copy of it) and queued after.
pub(super) struct Queued {
    key: (i64, i32, i64),
    packed: Packed,
}

impl Queued {
    pub(super) fn of(timer: &TimerTask) -> Self {
        Queued {
            key: (timer.fire_at_ms, timer.shard_id, timer.task_id),
            packed: Packed::new(timer),
        }
    }
}

impl Queue {
    pub(super) fn push(&self, timer: Queued) {
        let earliest = {
            let mut pending = self.pending.lock();
            pending.insert(timer.key, timer.packed);
            pending.keys().next() == Some(&timer.key)
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Queues a timer whose firing failed to fire again a second after `now_ms`. Its row keeps
    /// its own `fire_at_ms`: it is part of the stored key the firing transaction deletes the
    /// row by, so a retry must not change it.
    fn retry(&self, timer: &TimerTask, now_ms: i64) {
        let mut queued = Queued::of(timer);
        queued.key.0 = now_ms + 1000;
        self.push(queued);
    }

    #[cfg(test)]
    fn push_row(&self, timer: &TimerTask) {
        self.push(Queued::of(timer));
    }

    /// Forgets a timer whose row was deleted (what it timed is gone).
    pub(super) fn remove(&self, fire_at_ms: i64, shard_id: i32, task_id: i64) {
        self.pending.lock().remove(&(fire_at_ms, shard_id, task_id));
    }

    /// Forgets every timer of a shard given up (its new holder fires them).
    pub(super) fn forget_shard(&self, shard_id: i32) {
        self.pending.lock().retain(|key, _| key.1 != shard_id);
    }

    fn pop_due(&self, now_ms: i64) -> Vec<TimerTask> {
        let mut pending = self.pending.lock();
        let later = pending.split_off(&(now_ms + 1, i32::MIN, i64::MIN));
        let due = std::mem::replace(&mut *pending, later);
        due.into_iter()
            .map(|((_, shard_id, task_id), packed)| packed.unpack(shard_id, task_id))
            .collect()
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
                        let moved = matches!(e, crate::Error::ShardOwnershipLost { .. });
                        if moved && !engine.is_acquiring(timer.shard_id) {
                            // The shard's new owner fires it.
                            continue;
                        }
                        if moved {
                            // Due before its shard's lease is installed: retried.
                            let now_ms = to_millis(engine.inner.clock.now());
                            engine.inner.timers.retry(&timer, now_ms);
                            continue;
                        }
                        tracing::warn!(error = %e, task_id = timer.task_id, "failed to fire a timer; retrying in 1s");
                        let now_ms = to_millis(engine.inner.clock.now());
                        engine.inner.timers.retry(&timer, now_ms);
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
            let shard = engine.shard(shard_id)?;
            engine
                .apply(engine.plan_drop_timer(&key, &shard, timer.key()), None)
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
        queue.push_row(&timer(0, 1 << 40, 1_000, "a"));
        queue.push_row(&timer(1, 1 << 40, 1_000, "b"));
        queue.push_row(&timer(1, (1 << 40) + 1, 2_000, "b"));
        let due = queue.pop_due(1_000);
        let mut runs: Vec<_> = due.iter().map(|t| t.run_id.as_str()).collect();
        runs.sort();
        assert_eq!(runs, ["a", "b"]);
        assert_eq!(queue.next_fire_ms(), Some(2_000));
    }

    #[test]
    fn a_queued_timer_comes_back_as_it_was_pushed() {
        let queue = Queue::default();
        let timers = [
            TimerTask {
                task_id: 42,
                shard_id: 3,
                fire_at_ms: 500,
                namespace_id: "0d6c9c52-8a3e-4f7e-9a4b-5d2c1e0f9a87".into(),
                workflow_id: "order-\u{1F355}-7".into(),
                run_id: "b6a1f0e2-3c4d-4e5f-8a9b-0c1d2e3f4a5b".into(),
                data: vec![8, 1, 16, 9, 0, 255],
            },
            // Empty ids and data pack and unpack too.
            TimerTask {
                task_id: 43,
                shard_id: 0,
                fire_at_ms: 500,
                namespace_id: String::new(),
                workflow_id: String::new(),
                run_id: String::new(),
                data: Vec::new(),
            },
        ];
        for timer in &timers {
            queue.push_row(timer);
        }
        let mut due = queue.pop_due(500);
        due.sort_by_key(|t| t.task_id);
        assert_eq!(due, timers);
    }

    #[test]
    fn a_retried_timer_keeps_the_fire_time_its_row_is_stored_under() {
        let queue = Queue::default();
        let timer = timer(1, 7, 100, "run");
        // Its firing failed at 100: due again a second later.
        queue.retry(&timer, 100);
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
