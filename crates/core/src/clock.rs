//! The only place that reads the wall clock. Everything else asks a [`Clock`], so tests can
//! drive time by hand with [`ManualClock`].
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;

/// A source of "now" that timer loops can also wait on.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
    /// A receiver that changes whenever the clock jumps (manual clocks only); `None` for a clock
    /// that simply follows real time.
    fn jumps(&self) -> Option<watch::Receiver<SystemTime>>;
}

/// Real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn jumps(&self) -> Option<watch::Receiver<SystemTime>> {
        None
    }
}

/// A clock that moves on its own at real speed from a chosen start, and can be pushed forward
/// by [`ManualClock::advance`] to skip time in tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
    tx: Arc<watch::Sender<SystemTime>>,
}

#[derive(Debug)]
struct ManualInner {
    offset: Duration,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock that starts at real time and only differs once advanced.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(SystemTime::now());
        Self {
            inner: Arc::new(Mutex::new(ManualInner {
                offset: Duration::ZERO,
            })),
            tx: Arc::new(tx),
        }
    }

    /// Moves the clock forward; timer loops waiting on this clock wake up and fire what is due.
    pub fn advance(&self, by: Duration) {
        let now = {
            let mut inner = self.inner.lock();
            inner.offset += by;
            SystemTime::now() + inner.offset
        };
        self.tx.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.inner.lock().offset
    }
    fn jumps(&self) -> Option<watch::Receiver<SystemTime>> {
        Some(self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_advances() {
        let clock = ManualClock::new();
        let before = clock.now();
        let jumps = clock.jumps().expect("manual clocks report jumps");
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now().duration_since(before).expect("forward") >= Duration::from_secs(3600));
        assert!(jumps.has_changed().expect("sender alive"));
    }
}
