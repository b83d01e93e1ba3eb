//! Resume: a participant whose signalling connection dropped is *suspended* instead of removed.
//! Its tracks, subscriptions and peer connections stay (media keeps flowing if the network
//! does), nobody sees it leave, and the same client may come back within `resume_grace` with the
//! `resume_token` from its `joined` to continue as the same participant. If it does not, or its
//! media fails meanwhile (the dead-peer timeout), it is removed as usual.

use crate::handle::EventSender;
use crate::worker::Worker;
use rakor_proto::{LeaveReason, ParticipantId, ServerMessage, PROTOCOL_VERSION};
use std::time::Instant;

/// A fresh secret for `joined.resume_token`.
pub(crate) fn new_token() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}

/// Compare secrets without an early exit.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Worker {
    /// The signalling connection of `pid` ended without `leave`: keep it for a resume.
    /// Returns false if it must be removed now (resume disabled).
    pub(crate) fn suspend(&mut self, pid: &ParticipantId, now: Instant) -> bool {
        let grace = self.cfg.resume_grace;
        if grace.is_zero() {
            return false;
        }
        let Some(p) = self.participants.get_mut(pid) else {
            return true;
        };
        // Events go nowhere until a resume attaches a new connection.
        let (dead, _) = tokio::sync::mpsc::unbounded_channel();
        p.events = dead;
        p.suspended_until = Some(now + grace);
        let _g = p.span.enter();
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "signalling dropped; kept for resume"
        );
        true
    }

    /// Try to continue `pid`'s session on a new signalling connection. On success the client
    /// gets `joined {resumed: true}` and, if a subscriber offer was in flight, a fresh one.
    pub(crate) fn try_resume(
        &mut self,
        room: &str,
        identity: &str,
        pid: &ParticipantId,
        token: &str,
        events: &EventSender,
        now: Instant,
    ) -> bool {
        let Some(p) = self.participants.get_mut(pid) else {
            return false;
        };
        if p.room != room || p.identity != identity || !same_secret(&p.resume_token, token) {
            return false;
        }
        p.events = events.clone();
        p.suspended_until = None;
        // A subscriber offer sent to the old connection may be lost: offer again.
        if p.offer_pending {
            p.offer_pending = false;
            p.needs_offer = true;
            for l in &mut p.legs {
                l.in_offer = false;
            }
        }
        let span = p.span.clone();
        let _g = span.enter();
        tracing::info!("resumed");
        let (name, role, resume_token) = (p.name.clone(), p.role, p.resume_token.clone());
        let (spotlight, others) = match self.rooms.get(room) {
            Some(r) => (
                r.spotlight.clone(),
                r.participants
                    .iter()
                    .filter(|id| *id != pid)
                    .filter_map(|id| self.participants.get(id))
                    .map(|o| self.participant_info(o))
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        let _ = events.send(ServerMessage::Joined {
            version: PROTOCOL_VERSION,
            participant_id: pid.clone(),
            room: room.to_owned(),
            identity: identity.to_owned(),
            name,
            role,
            participants: others,
            spotlight,
            resume_token,
            resumed: true,
        });
        self.renegotiate_pending(now);
        true
    }

    /// Remove suspended participants whose grace window has passed.
    pub(crate) fn expire_suspended(&mut self, now: Instant) {
        let expired: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.suspended_until.is_some_and(|d| d <= now))
            .map(|p| p.id.clone())
            .collect();
        for pid in expired {
            self.remove_participant(&pid, LeaveReason::Disconnected, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        for (a, b, same) in [
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("abc", "ab", false),
            ("", "", true),
        ] {
            assert_eq!(same_secret(a, b), same, "{a} vs {b}");
        }
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert_ne!(t, new_token());
    }
}
