//! Dead-peer detection on the media side, and the one place that decides what happens to a
//! participant whose network went away.
//!
//! The server is ICE-lite: it never sends checks itself, it only listens. **Anything the
//! client sends that its connection accepts is a sign of life**: consent checks (STUN), DTLS,
//! SRTP media and SRTCP reports. The core stamps each connection with the time of its last such
//! packet (`Conn::heard_at`, in `core/service.rs`) and, on its 100 ms tick, fails a connected
//! one silent for [`silence_budget`] of `limits.dead_peer_timeout` (`Core::expire_silent`,
//! `core/liveness.rs`): the participant is gone for everyone within the timeout.
//!
//! Why not the ICE agent's own timers alone: the `rtc` 0.21 agent counts only STUN, so a site
//! whose consent checks were lost or late — a lossy uplink on a loaded machine, the very sites
//! Rakor serves — was removed while its media still arrived (seen in the recording suite: a
//! site with 20 % loss removed after 8 s). The agent keeps consent timers of its own, set by
//! [`IceTimeouts::consent`] to RFC 7675's 30 s: a client that sends media but never a check for
//! that long has a broken ICE stack and is failed by the agent.
//!
//! Clients send consent checks every 2–2.5 s (webrtc-rs, browsers); a publishing client also
//! sends media and sender reports, a subscribing one receiver reports and transport feedback.
//! [`IceTimeouts::for_dead_peer_timeout`] is the older split of the timeout into STUN-only
//! agent timers (kept for the `rtc`-level tests in `testkit`).
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

/// RFC 7675: consent expires 30 s after the last check.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

impl IceTimeouts {
    /// The agent timers of a core connection: consent (STUN only) expires after 30 s, or the
    /// dead-peer timeout if that is longer; the dead-peer timeout itself is enforced by the core
    /// from every accepted packet ([`silence_budget`]).
    pub fn consent(dead_peer_timeout: Duration) -> Self {
        let quick = Self::for_dead_peer_timeout(dead_peer_timeout);
        Self {
            disconnected: CONSENT_TIMEOUT.max(dead_peer_timeout),
            failed: quick.failed,
            check_interval: quick.check_interval,
        }
    }
}

/// Silence (no accepted packet at all) after which the core fails a connected connection: the
/// dead-peer timeout less two of the agent's check intervals, so that with the core's 100 ms
/// tick the room sees the site go within the timeout (10 s → 8 s).
pub fn silence_budget(dead_peer_timeout: Duration) -> Duration {
    let t = IceTimeouts::for_dead_peer_timeout(dead_peer_timeout);
    t.disconnected + t.failed
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
        for secs in [3u64, 5, 10, 30, 300] {
            let total = Duration::from_secs(secs);
            let budget = silence_budget(total);
            assert!(budget + Duration::from_millis(100) <= total, "{secs}s");
            let c = IceTimeouts::consent(total);
            assert!(c.disconnected >= CONSENT_TIMEOUT.max(total) && c.disconnected > budget);
        }
        assert_eq!(
            silence_budget(Duration::from_secs(10)),
            Duration::from_secs(8)
        );
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
