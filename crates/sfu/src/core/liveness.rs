//! What happens to a participant whose network went away: signalling lost → suspended, media
//! failed (no packet accepted from one of its connections for the silence budget, or ICE consent
//! expired; see [`crate::liveness`]) → parked ([`super::resume`]), resume disabled → removed.

use super::Core;
use rakor_proto::{LeaveReason, ParticipantId};
use std::time::Instant;

impl Core {
    /// On the tick: fail every connected connection from which nothing was accepted (consent
    /// check, DTLS, media, RTCP) for the silence budget — its participant's media is gone.
    pub(crate) fn expire_silent(&mut self, now: Instant) {
        let budget = crate::liveness::silence_budget(self.cfg.dead_peer_timeout);
        // Empty (no allocation) unless a connection went silent.
        let mut lost: Vec<ParticipantId> = Vec::new();
        for (ci, c) in self.conns.iter_mut() {
            if c.connected && now.saturating_duration_since(c.heard_at) >= budget {
                c.connected = false;
                tracing::info!(conn = %ci, participant = %c.owner, silent_for = ?now.saturating_duration_since(c.heard_at), "media connection silent: failed");
                if !lost.contains(&c.owner) {
                    lost.push(c.owner.clone());
                }
            }
        }
        for pid in lost {
            self.peer_lost(&pid, LeaveReason::MediaFailed, now);
        }
    }

    /// A participant's network is gone: its WebSocket died or stopped answering pings
    /// (`reason` = `disconnected`), or one of its media connections failed ICE consent
    /// (`media_failed`).
    ///
    /// - signalling lost: *suspended* — kept in the room for `resume_grace` (core/resume.rs);
    /// - media failed: removed from the room for everyone within the dead-peer timeout, and
    ///   *parked* for a resume until the grace window (counted from the first loss) ends;
    /// - resume disabled (`resume_grace` 0): removed at once.
    pub(crate) fn peer_lost(&mut self, pid: &ParticipantId, reason: LeaveReason, now: Instant) {
        if reason == LeaveReason::Disconnected && self.suspend(pid, now) {
            return;
        }
        if reason == LeaveReason::MediaFailed && self.park(pid, reason, now) {
            return;
        }
        // After a media failure the signalling socket may still be open: tell the client why.
        let notify_self = reason != LeaveReason::Disconnected;
        self.remove_participant(pid, reason, notify_self, now);
    }

    /// Signalling reports that connection `conn` of `pid` ended. A report from a connection
    /// the participant no longer uses (it resumed on a new one before the old one was noticed
    /// dead) is stale and ignored.
    pub(crate) fn signalling_lost(
        &mut self,
        pid: &ParticipantId,
        reason: LeaveReason,
        conn: Option<&crate::handle::ConnRef>,
        now: Instant,
    ) {
        let current = |w: &crate::handle::ConnRef| {
            let Some(p) = self.participants.get(pid) else {
                return false;
            };
            w.upgrade().is_some_and(|tx| tx.same_channel(&p.events))
        };
        if conn.is_some_and(|w| !current(w)) {
            tracing::debug!(participant = %pid, "stale disconnect of a replaced connection; ignored");
            return;
        }
        self.peer_lost(pid, reason, now);
    }

    /// Signalling reports that a participant's connection ended (`conn`: which one; `None`:
    /// whichever is attached). See [`crate::SfuHandle::disconnect_conn`].
    pub fn disconnect(
        &mut self,
        now: Instant,
        participant: &ParticipantId,
        reason: LeaveReason,
        conn: Option<&crate::handle::ConnRef>,
    ) {
        self.signalling_lost(participant, reason, conn, now);
        self.service_dirty(now);
    }
}
