//! Reads: history pages and long polls, and the progress waiters are told after each commit.
use super::*;

impl Engine {
    pub(super) async fn read_events(
        &self,
        key: &RunKey,
        first: i64,
        last: i64,
    ) -> Result<Vec<HistoryEvent>> {
        let rows = self
            .inner
            .store
            .read_events(
                &key.namespace_id,
                &key.workflow_id,
                &key.run_id,
                first,
                (last - first + 1).max(0) as usize,
            )
            .await?;
        rows.iter()
            .map(|(_, bytes)| {
                HistoryEvent::decode(bytes.as_slice()).map_err(|e| {
                    Error::Unavailable(format!("failed to decode a history event: {e}"))
                })
            })
            .collect()
    }

    /// A page of a run's history. With `wait` (a long poll), waits up to that long (and never
    /// past the history long-poll timeout) for events past the token, then answers with what
    /// there is and a token to poll again; with `close_only`, returns only the close event once
    /// the run has closed.
    pub async fn history_page(
        &self,
        key: &RunKey,
        page_size: i32,
        token_bytes: &[u8],
        wait: Option<Duration>,
        close_only: bool,
    ) -> Result<HistoryPage> {
        let wait_new_event = wait.is_some();
        let mut from = 1;
        if !token_bytes.is_empty() {
            let token = PageToken::decode(token_bytes)
                .map_err(|_| Error::Invalid("invalid next page token".into()))?;
            if token.run_id != key.run_id {
                return Err(Error::Invalid(
                    "next page token belongs to another run".into(),
                ));
            }
            from = token.next_event_id;
        }
        let (mut next_event_id, status, mut close_event_id) = self.progress(key).await?;
        let mut closed = status_closed(status);
        // The close event as the closing commit reported it, so a result long poll needs no
        // read of the (by then uncached) run.
        let mut close_event: Option<Arc<HistoryEvent>> = None;
        // Something to wait for: the close (close_only) or events past the token.
        let ready = |closed: bool, next: i64| closed || (!close_only && from < next);
        if wait_new_event && !ready(closed, next_event_id) {
            let mut rx = self.watch(key);
            let deadline = kairos_core::time::deadline_after(
                wait.unwrap_or_default()
                    .min(self.inner.options.history_long_poll_timeout),
            );
            // Read again once subscribed: a commit in between is not missed.
            let (next, status, close) = self.progress(key).await?;
            (next_event_id, closed, close_event_id) = (next, status_closed(status), close);
            while !ready(closed, next_event_id) {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {
                        let seen = rx.borrow_and_update().clone();
                        if seen.gone {
                            // Deleted: reading it again answers NOT_FOUND.
                            self.progress(key).await?;
                            continue;
                        }
                        if seen.next_event_id >= next_event_id {
                            next_event_id = seen.next_event_id;
                            closed = status_closed(seen.status);
                            close_event_id = seen.close_event.as_ref().map_or(0, |e| e.event_id);
                            close_event = seen.close_event;
                            if closed && close_event.is_none() {
                                // Closed without its event at hand: ask the run.
                                (next_event_id, _, close_event_id) = self.progress(key).await?;
                            }
                        }
                    }
                    _ => {
                        // Still waiting: no events, and a token to poll again with.
                        let token = PageToken {
                            run_id: key.run_id.clone(),
                            next_event_id: from,
                        };
                        return Ok(HistoryPage {
                            events: Vec::new(),
                            next_page_token: token.encode_to_vec(),
                        });
                    }
                }
            }
        }
        if close_only {
            if !closed {
                return Ok(HistoryPage::default());
            }
            let events = match close_event.filter(|e| e.event_id == close_event_id) {
                Some(event) => vec![(*event).clone()],
                None => {
                    let events = self
                        .read_events(key, close_event_id, close_event_id)
                        .await?;
                    if events.is_empty() {
                        // Deleted since it closed (a delete terminates, then deletes): reading
                        // the run again answers NOT_FOUND rather than an empty page.
                        self.progress(key).await?;
                    }
                    events
                }
            };
            return Ok(HistoryPage {
                events,
                next_page_token: Vec::new(),
            });
        }
        let max = self.inner.options.limits.history_page_size.max(1);
        let size = if page_size <= 0 {
            max
        } else {
            page_size.min(max * 4)
        };
        let last = (from + size as i64 - 1).min(next_event_id - 1);
        let events = if last >= from {
            self.read_events(key, from, last).await?
        } else {
            Vec::new()
        };
        let after = from + events.len() as i64;
        let next_page_token = if after < next_event_id || (wait_new_event && !closed) {
            PageToken {
                run_id: key.run_id.clone(),
                next_event_id: after,
            }
            .encode_to_vec()
        } else {
            Vec::new()
        };
        Ok(HistoryPage {
            events,
            next_page_token,
        })
    }

    /// A page of a run's history, newest first.
    pub async fn history_page_reverse(
        &self,
        key: &RunKey,
        page_size: i32,
        token_bytes: &[u8],
    ) -> Result<HistoryPage> {
        let ms = self.read_state(key).await?;
        let mut last = ms.next_event_id - 1;
        if !token_bytes.is_empty() {
            let token = PageToken::decode(token_bytes)
                .map_err(|_| Error::Invalid("invalid next page token".into()))?;
            if token.run_id != key.run_id {
                return Err(Error::Invalid(
                    "next page token belongs to another run".into(),
                ));
            }
            last = token.next_event_id;
        }
        let max = self.inner.options.limits.history_page_size.max(1);
        let size = if page_size <= 0 {
            max
        } else {
            page_size.min(max * 4)
        } as i64;
        let first = (last - size + 1).max(1);
        let mut events = if last >= first {
            self.read_events(key, first, last).await?
        } else {
            Vec::new()
        };
        events.reverse();
        let next_page_token = if first > 1 {
            PageToken {
                run_id: key.run_id.clone(),
                next_event_id: first - 1,
            }
            .encode_to_vec()
        } else {
            Vec::new()
        };
        Ok(HistoryPage {
            events,
            next_page_token,
        })
    }

    /// A receiver that sees the run's next event id change (any committed transition).
    pub fn watch(&self, key: &RunKey) -> watch::Receiver<RunProgress> {
        let mut watchers = self.inner.watchers.lock();
        watchers.retain(|_, tx| tx.receiver_count() > 0);
        watchers
            .entry(key.clone())
            .or_insert_with(|| watch::channel(RunProgress::default()).0)
            .subscribe()
    }

    /// Where a run stands (next event id, status, close event id), without copying its state.
    pub(super) async fn progress(&self, key: &RunKey) -> Result<(i64, i32, i64)> {
        let existing = self.inner.runs.lock().get(key);
        if let Some(slot) = existing {
            let mut guard = slot.lock().await;
            self.load(key, &mut guard).await?;
            let ms = &guard.as_ref().expect("loaded").ms;
            return Ok((ms.next_event_id, ms.status, ms.close_event_id));
        }
        let ms = self.read_state(key).await?;
        Ok((ms.next_event_id, ms.status, ms.close_event_id))
    }
}

/// A page of history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// The events.
    pub events: Vec<HistoryEvent>,
    /// Where the next page starts; empty when done.
    pub next_page_token: Vec<u8>,
}

/// Position stored in history page tokens.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct PageToken {
    #[prost(string, tag = "1")]
    pub(super) run_id: String,
    #[prost(int64, tag = "2")]
    pub(super) next_event_id: i64,
}

/// What waiters on a run (history long polls, update and query waits) are told after each
/// commit.
#[derive(Debug, Clone, Default)]
pub struct RunProgress {
    /// The run's next event id after the commit.
    pub next_event_id: i64,
    /// Its status after the commit.
    pub status: i32,
    /// The close event, when this commit closed the run.
    pub close_event: Option<Arc<HistoryEvent>>,
    /// The run was deleted.
    pub gone: bool,
}

impl RunProgress {
    pub(super) fn of(ms: &MutableState, events: &[HistoryEvent]) -> Self {
        let close_event = (status_closed(ms.status) && ms.close_event_id > 0)
            .then(|| events.iter().find(|e| e.event_id == ms.close_event_id))
            .flatten()
            .map(|e| Arc::new(e.clone()));
        Self {
            next_event_id: ms.next_event_id,
            status: ms.status,
            close_event,
            gone: false,
        }
    }
}
