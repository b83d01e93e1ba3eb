//! Dead-peer detection on the media side, and the one place that decides what happens to a
//! participant whose network went away.
//!
//! The server is ICE-lite: it never sends checks itself, it only watches the client's. The `rtc`
//! ICE agent records when it last received a connectivity/consent check from the selected remote
//! candidate (only STUN counts: the `rtc` 0.21 peer connection does not report media to the
//! agent) and moves the connection to `Disconnected`, then `Failed`, after the timeouts set here.
//! Clients send consent checks every 2–2.5 s (webrtc-rs, browsers; browsers more often once one
//! goes unanswered), so a client silent for several intervals is a dead one. [`IceTimeouts::for_dead_peer_timeout`] splits the configured
//! `limits.dead_peer_timeout` so that `Failed` fires (and the participant is gone for everyone)
//! within it, timer granularity included.
//!
//! Signalling detects the same thing from the other side (WebSocket pings unanswered, in the
//! server crate) and reports it with [`crate::SfuHandle::disconnect`]. Both paths end in
//! `Core::peer_lost` (`core/liveness.rs`), which suspends (signalling lost) or parks (media
//! failed) the participant for a resume (`core/resume.rs`).

use std::time::Duration;

/// The ICE agent's timers for one server-side connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceTimeouts {
    /// Silence after which the connection is `Disconnected` (media stops being counted on).
    pub disconnected: Duration,
    /// Further silence after which it is `Failed`.
    pub failed: Duration,
    /// How often the agent re-evaluates (an ICE-lite agent sends nothing on this timer).
    pub check_interval: Duration,
}

impl IceTimeouts {
    /// Timers such that `disconnected + failed + 2 × check_interval <= dead_peer_timeout`: the
    /// silence is counted from the client's last check, which is up to a check interval old when
    /// the network dies, and the agent looks every `check_interval` (10 s → 4 s + 4 s, checked
    /// every second: failed 6–9 s after the network died).
    pub fn for_dead_peer_timeout(dead_peer_timeout: Duration) -> Self {
        let check_interval =
            (dead_peer_timeout / 10).clamp(Duration::from_millis(200), Duration::from_secs(1));
        let budget = dead_peer_timeout.saturating_sub(check_interval * 2);
        let disconnected = budget / 2;
        Self {
            disconnected,
            failed: budget.saturating_sub(disconnected),
            check_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fit_inside_the_dead_peer_timeout() {
        for secs in [3u64, 5, 10, 30, 300] {
            let total = Duration::from_secs(secs);
            let t = IceTimeouts::for_dead_peer_timeout(total);
            assert!(
                t.disconnected + t.failed + t.check_interval * 2 <= total,
                "{secs}s: {t:?}"
            );
            assert!(t.disconnected >= Duration::from_secs(1), "{secs}s: {t:?}");
            assert!(t.failed >= Duration::from_secs(1), "{secs}s: {t:?}");
        }
        let t = IceTimeouts::for_dead_peer_timeout(Duration::from_secs(10));
        assert_eq!(
            (t.disconnected, t.failed, t.check_interval),
            (
                Duration::from_secs(4),
                Duration::from_secs(4),
                Duration::from_secs(1)
            )
        );
    }
}
