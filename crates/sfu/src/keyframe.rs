//! Keyframe request throttling: at most one PLI per published video track per interval, and
//! a request made inside the interval is remembered and sent when it ends (so a late subscriber
//! is never left waiting for the next natural keyframe).

use std::time::{Duration, Instant};

/// Per-track throttle. Time is an input.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: None,
            pending: false,
        }
    }

    /// Ask for a keyframe now. Returns true if a request must be sent now; otherwise it is
    /// deferred until [`Self::poll`] says so.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// Whether a deferred request is due now (and mark it sent).
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.pending && self.deadline().is_some_and(|d| now >= d) {
            self.pending = false;
            self.last_sent = Some(now);
            return true;
        }
        false
    }

    /// When a deferred request becomes due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        self.last_sent.map(|t| t + self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_and_defers() {
        let t0 = crate::testkit::SimClock::start().now();
        let ms = Duration::from_millis;
        let mut k = KeyframeThrottle::new(ms(500));
        // (offset ms, action, expected)
        let steps: &[(u64, &str, bool)] = &[
            (0, "request", true),
            (100, "request", false),
            (200, "request", false),
            (400, "poll", false),
            (500, "poll", true),
            (600, "poll", false),
            (700, "request", false),
            (1000, "poll", true),
            (2000, "request", true),
            (2100, "poll", false),
        ];
        for &(at, action, want) in steps {
            let now = t0 + ms(at);
            let got = if action == "request" {
                k.request(now)
            } else {
                k.poll(now)
            };
            assert_eq!(got, want, "{action} at {at} ms");
        }
        assert_eq!(k.deadline(), None);
    }
}
