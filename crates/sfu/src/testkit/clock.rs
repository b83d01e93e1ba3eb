//! A simulated clock for Sans-I/O tests: the only real clock read is [`SimClock::start`].

use std::time::{Duration, Instant};

/// Simulated monotonic time. Starts at the real `Instant::now()` (so that anything inside the
/// `rtc` crate pairing an `Instant` with the wall clock stays plausible) and then only moves when
/// the test moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SimClock {
    start: Instant,
    now: Instant,
}

impl SimClock {
    /// A clock at the real current instant (the one real clock read of a test).
    pub(crate) fn start() -> Self {
        let now = Instant::now();
        Self { start: now, now }
    }

    /// The simulated current instant.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time elapsed since [`SimClock::start`].
    pub(crate) fn elapsed(&self) -> Duration {
        self.now.duration_since(self.start)
    }

    /// Move the clock forward by `d`; returns the new instant.
    pub(crate) fn advance(&mut self, d: Duration) -> Instant {
        self.now += d;
        self.now
    }

    /// Move the clock forward to `t`. An instant in the past is ignored (time never goes back);
    /// returns the (possibly unchanged) current instant.
    pub(crate) fn advance_to(&mut self, t: Instant) -> Instant {
        if t > self.now {
            self.now = t;
        }
        self.now
    }
}
