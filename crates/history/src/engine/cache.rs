//! The run cache: the mutable state of recently used runs with their recent events (so a task
//! answer needs no read), bounded, oldest unused runs dropped first.
use super::*;

/// Cached runs in insertion order, bounded: past the capacity the oldest entries no request is
/// using are dropped. First-in-first-out rather than LRU: a hot run that is dropped only costs
/// one read from the store, and the bookkeeping stays O(1).
#[derive(Default)]
pub(super) struct RunCache {
    pub(super) slots: HashMap<RunKey, RunSlot>,
    pub(super) order: std::collections::VecDeque<RunKey>,
}

impl RunCache {
    pub(super) fn slot(&mut self, key: &RunKey, capacity: usize) -> RunSlot {
        if let Some(slot) = self.slots.get(key) {
            return slot.clone();
        }
        let slot = RunSlot::default();
        self.slots.insert(key.clone(), slot.clone());
        self.order.push_back(key.clone());
        self.evict(capacity);
        slot
    }

    pub(super) fn evict(&mut self, capacity: usize) {
        // Each entry is looked at once per call at most, so a cache full of busy runs cannot
        // spin; it just stays over capacity until they are released.
        let mut budget = self.order.len();
        while self.slots.len() > capacity && budget > 0 {
            budget -= 1;
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            match self.slots.get(&oldest) {
                // In use by a request: keep it, look again later.
                Some(slot) if Arc::strong_count(slot) > 1 => self.order.push_back(oldest),
                Some(_) => {
                    self.slots.remove(&oldest);
                }
                None => {}
            }
        }
    }

    pub(super) fn get(&self, key: &RunKey) -> Option<RunSlot> {
        self.slots.get(key).cloned()
    }

    pub(super) fn remove(&mut self, key: &RunKey) {
        // The key stays in `order` until it reaches the front (`evict` skips missing keys) or
        // the next compaction, which keeps `order` from growing with removed runs.
        self.slots.remove(key);
        if self.order.len() > 2 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.order.retain(|k| slots.contains_key(k));
        }
    }

    /// Keeps only the runs `keep` says yes to (a released shard's go).
    pub(super) fn retain(&mut self, keep: impl Fn(&RunKey) -> bool) {
        self.slots.retain(|key, _| keep(key));
        self.order.retain(|key| keep(key));
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

pub(super) struct Cached {
    pub(super) ms: MutableState,
    pub(super) version: i64,
    /// The run's most recent events, ids `tail_first..ms.next_event_id`, so that workflow task
    /// answers (which carry the events since the last completed task) need no store read. Kept
    /// encoded: a decoded `HistoryEvent` is kilobytes (its attribute enum is as large as the
    /// largest variant), the encoded one a hundred bytes or so.
    pub(super) tail: Vec<Vec<u8>>,
    pub(super) tail_first: i64,
    /// The lease (`range_id`) of the run's shard this copy is known current under; 0 when
    /// none. A copy from an earlier hold of the shard is never trusted: another node may have
    /// changed the run in between.
    pub(super) lease: i64,
}

/// Events kept per cached run at most (a run with no completed task for long).
pub(super) const TAIL_MAX: usize = 512;

impl Cached {
    /// A run's cache entry; `encoded` are its most recent events, ending just before
    /// `ms.next_event_id`.
    pub(super) fn new(ms: MutableState, version: i64, encoded: Vec<Vec<u8>>) -> Self {
        let mut cached = Cached {
            tail_first: ms.next_event_id - encoded.len() as i64,
            ms,
            version,
            tail: encoded,
            lease: 0,
        };
        cached.trim_tail();
        cached
    }

    /// Records the events of a committed transition (state already updated), encoded, the first
    /// one's id being `first_id`.
    pub(super) fn append(&mut self, first_id: i64, encoded: Vec<Vec<u8>>) {
        let expected = self.tail_first + self.tail.len() as i64;
        match encoded.first() {
            Some(_) if first_id == expected => self.tail.extend(encoded),
            Some(_) => {
                // Not contiguous with what is held (should not happen): start over empty.
                self.tail.clear();
                self.tail_first = self.ms.next_event_id;
            }
            None => {}
        }
        self.trim_tail();
    }

    /// Drops events no workflow task answer needs any more, and bounds the tail.
    pub(super) fn trim_tail(&mut self) {
        let keep_from = (self.ms.last_completed_wft_started_id + 1)
            .max(self.tail_first + self.tail.len() as i64 - TAIL_MAX as i64);
        if keep_from > self.tail_first {
            let drop = ((keep_from - self.tail_first) as usize).min(self.tail.len());
            self.tail.drain(..drop);
            self.tail_first += drop as i64;
        }
    }

    /// Events `first..=last` if all are held, those from `new.0` on taken from `new.1` (the
    /// events of a transition not yet appended).
    pub(super) fn events_with(
        &self,
        first: i64,
        last: i64,
        (new_first, new): (i64, &[Vec<u8>]),
    ) -> Option<Vec<Vec<u8>>> {
        if new.is_empty() || last < new_first {
            return self.events(first, last);
        }
        let mut out = if first < new_first {
            self.events(first, new_first - 1)?
        } else {
            Vec::new()
        };
        let from = (first.max(new_first) - new_first) as usize;
        let to = (last - new_first) as usize;
        out.extend_from_slice(new.get(from..=to)?);
        Some(out)
    }

    /// Events `first..=last` if all are held.
    pub(super) fn events(&self, first: i64, last: i64) -> Option<Vec<Vec<u8>>> {
        let end = self.tail_first + self.tail.len() as i64;
        if first < self.tail_first || last >= end || first > last {
            return None;
        }
        let from = (first - self.tail_first) as usize;
        let to = (last - self.tail_first) as usize;
        // Handed out encoded, as they go on the wire (kairos_core::wire).
        Some(self.tail[from..=to].to_vec())
    }
}

pub(super) type RunSlot = Arc<tokio::sync::Mutex<Option<Cached>>>;

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn key(n: u32) -> RunKey {
        RunKey {
            namespace_id: "ns".into(),
            workflow_id: format!("wf-{n}"),
            run_id: format!("run-{n}"),
        }
    }

    #[test]
    fn oldest_unused_runs_are_dropped_past_capacity() {
        let mut cache = RunCache::default();
        let held = cache.slot(&key(1), 2);
        let _ = cache.slot(&key(2), 2);
        let _ = cache.slot(&key(3), 2);
        // Run 1 is in use, so run 2 (the oldest unused) went instead.
        assert_eq!(cache.len(), 2);
        assert!(cache.slots.contains_key(&key(1)));
        assert!(!cache.slots.contains_key(&key(2)));
        assert!(
            Arc::ptr_eq(&held, &cache.slot(&key(1), 2)),
            "same slot while cached"
        );
        drop(held);
        // Run 1 went to the back of the queue when it was skipped: run 3 goes next, then 1.
        let _ = cache.slot(&key(4), 2);
        assert_eq!(cache.len(), 2);
        assert!(!cache.slots.contains_key(&key(3)));
        let _ = cache.slot(&key(5), 2);
        assert_eq!(cache.len(), 2);
        assert!(
            !cache.slots.contains_key(&key(1)),
            "released, then dropped in its turn"
        );
    }

    fn ev(id: i64) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            ..Default::default()
        }
    }

    #[test]
    fn the_event_tail_serves_ranges_it_holds_and_forgets_completed_tasks() {
        let ms = MutableState {
            next_event_id: 4,
            ..Default::default()
        };
        let mut cached = Cached::new(ms, 1, encode_all(&[ev(1), ev(2), ev(3)]));
        assert_eq!(cached.events(1, 3).map(|v| v.len()), Some(3));
        assert!(cached.events(1, 4).is_none(), "not yet written");
        // A task completes (started id 3) and events 4..=6 are written.
        cached.ms.last_completed_wft_started_id = 3;
        cached.ms.next_event_id = 7;
        cached.append(4, encode_all(&[ev(4), ev(5), ev(6)]));
        assert!(
            cached.events(1, 6).is_none(),
            "events of completed tasks are dropped"
        );
        let got = cached.events(4, 6).expect("held");
        assert_eq!(
            got.iter()
                .map(|b| HistoryEvent::decode(b.as_slice()).unwrap().event_id)
                .collect::<Vec<_>>(),
            [4, 5, 6]
        );
        // A gap (should not happen) empties the tail rather than serving wrong events.
        cached.ms.next_event_id = 10;
        cached.append(9, encode_all(&[ev(9)]));
        assert!(cached.events(4, 6).is_none());
        assert!(cached.events(9, 9).is_none());
    }

    #[test]
    fn removed_runs_do_not_pile_up_in_the_order() {
        let mut cache = RunCache::default();
        for n in 0..5000 {
            let _ = cache.slot(&key(n), 10_000);
            cache.remove(&key(n));
        }
        assert_eq!(cache.len(), 0);
        assert!(
            cache.order.len() <= 1024 + 1,
            "order holds {}",
            cache.order.len()
        );
    }

    #[test]
    fn a_cache_of_busy_runs_grows_instead_of_spinning() {
        let mut cache = RunCache::default();
        let held: Vec<_> = (0..5).map(|n| cache.slot(&key(n), 2)).collect();
        assert_eq!(cache.len(), 5);
        drop(held);
        let _ = cache.slot(&key(9), 2);
        assert_eq!(cache.len(), 2);
    }
}
