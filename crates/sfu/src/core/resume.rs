//! Resume: a participant whose network went away may come back as the same participant within
//! `resume_grace`, with the `resume_token` from its `joined`. Two held states:
//!
//! - **suspended** — its *signalling* connection dropped. It stays in the room with its tracks,
//!   subscriptions and peer connections (media keeps flowing if the network does), nobody sees
//!   it leave, and a resume just attaches the new connection.
//! - **parked** ("left but resumable") — its *media* failed (ICE consent lost), suspended or
//!   not. The room must see a dead site go within `dead_peer_timeout`, so it is removed for
//!   everyone as usual (`participant_left` `media_failed`, tracks unpublished, connections
//!   closed), but a [`Parked`] record (id, room, identity, name, role, resume token,
//!   moderator mute) is kept until the grace window, counted from when it was first lost, ends.
//!   A resume brings it back under the same id (`participant_joined` to the others,
//!   `joined {resumed, media_reset}` to it); it publishes again and gets a fresh subscriber
//!   offer. Attendance sees one continuous stay: the [`crate::RoomEvent::Left`] of a parked
//!   participant is held back, dropped on a resume, and sent (with the time it was lost) when
//!   the record expires or is dropped (the same identity joined fresh, the room ended, shutdown).
//!
//! A client whose own peer connections failed may also ask for a media reset in `join.resume`
//! (`media_reset: true`); a participant still in the room then has its tracks unpublished and
//! its connections closed in place, without leaving.
//!
//! Chat sent while a participant was suspended or parked went nowhere (or into a dying
//! socket): after every resume it gets what it missed (`Core::send_missed_chat`), from the
//! `last_chat_id` it names in `join.resume`.
//!
//! `leave`, a moderator's removal, `replaced` and the end of a room never park anyone: only
//! [`Core::peer_lost`] does, for `media_failed`.

use super::join::Seat;
use super::state::OfferState;
use super::Core;
use crate::handle::{EventSender, RoomEvent};
use crate::SfuError;
use rakor_proto::{LeaveReason, ParticipantId, ResumeRequest, Role, ServerMessage};
use std::time::{Instant, SystemTime};

/// A participant out of the room after a media failure, held for a resume.
pub(crate) struct Parked {
    pub id: ParticipantId,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub resume_token: String,
    pub moderator_muted: bool,
    pub video_on_demand: bool,
    /// Why it left the room (`media_failed`): the reason of its deferred attendance leave.
    pub reason: LeaveReason,
    /// When it left the room: the time of its deferred attendance leave.
    pub left_at: SystemTime,
    /// The end of its resume window.
    pub until: Instant,
}

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

impl Core {
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

    /// The media of `pid` failed: remove it from the room for everyone, but park it for a
    /// resume within the grace window counted from when it was first lost (its signalling may
    /// have dropped earlier). If its signalling is still up, it is told with
    /// `leave {reason, resumable: true}`. Returns false if it must be removed for good instead
    /// (resume disabled, or its window is already over).
    pub(crate) fn park(&mut self, pid: &ParticipantId, reason: LeaveReason, now: Instant) -> bool {
        let grace = self.cfg.resume_grace;
        if grace.is_zero() {
            return false;
        }
        let Some(p) = self.participants.get(pid) else {
            return true; // already gone (its other connection failed first)
        };
        let until = p.suspended_until.unwrap_or(now + grace);
        if until <= now {
            return false;
        }
        let signalling_up = p.suspended_until.is_none();
        let parked = Parked {
            id: p.id.clone(),
            room: p.room.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            role: p.role,
            resume_token: p.resume_token.clone(),
            moderator_muted: p.moderator_muted,
            video_on_demand: p.video_on_demand,
            reason,
            left_at: self.wall(now),
            until,
        };
        {
            let _g = p.span.enter();
            tracing::info!(
                window_ms = until.saturating_duration_since(now).as_millis() as u64,
                "media failed; out of the room, parked for resume"
            );
        }
        if signalling_up {
            let _ = p.events.send(ServerMessage::Leave {
                reason,
                resumable: true,
            });
        }
        // With the record in place, `remove_participant` holds back the attendance leave.
        self.parked.insert(pid.clone(), parked);
        self.remove_participant(pid, reason, false, now);
        true
    }

    /// Try to continue `pid`'s session on a new signalling connection: a suspended (or still
    /// connected) participant keeps its media unless the client asks for a reset; a parked one
    /// comes back into the room with its media reset. On success the client gets
    /// `joined {resumed: true}` and, if needed, a fresh subscriber offer. `Ok(false)`: no such
    /// session (gone, wrong token, room or identity); the caller joins a new one.
    pub(crate) fn try_resume(
        &mut self,
        room: &str,
        identity: &str,
        resume: &ResumeRequest,
        events: &EventSender,
        now: Instant,
    ) -> Result<bool, SfuError> {
        let pid = &resume.participant_id;
        let matches =
            |r: &str, i: &str, t: &str| r == room && i == identity && same_secret(t, &resume.token);
        if let Some(p) = self.participants.get(pid) {
            if !matches(&p.room, &p.identity, &p.resume_token) {
                return Ok(false);
            }
            self.resume_in_room(pid, events, resume.media_reset, now);
            self.send_missed_chat(pid, resume.last_chat_id.as_deref());
            return Ok(true);
        }
        match self.parked.get(pid) {
            Some(k) if k.until > now && matches(&k.room, &k.identity, &k.resume_token) => {}
            _ => return Ok(false),
        }
        self.unpark(pid, events, now)?;
        self.send_missed_chat(pid, resume.last_chat_id.as_deref());
        Ok(true)
    }

    /// Resume a participant that is still in the room.
    fn resume_in_room(
        &mut self,
        pid: &ParticipantId,
        events: &EventSender,
        media_reset: bool,
        now: Instant,
    ) {
        let Some(p) = self.participants.get_mut(pid) else {
            return;
        };
        p.events = events.clone();
        p.suspended_until = None;
        // A subscriber offer sent to the old connection may be lost: offer again.
        if p.offer.outstanding() && !media_reset {
            p.offer = OfferState::NEEDED_NOW;
            for l in &mut p.legs {
                l.negotiation.offer_lost();
            }
        }
        let span = p.span.clone();
        let _g = span.enter();
        tracing::info!(media_reset, "resumed");
        self.send_joined(pid, true, media_reset);
        if media_reset {
            self.reset_media(pid, now);
        }
        self.renegotiate_pending(now);
    }

    /// Drop a participant's published tracks, subscriptions and both peer connections without
    /// it leaving the room, then subscribe it afresh to everything published there.
    fn reset_media(&mut self, pid: &ParticipantId, now: Instant) {
        self.drop_media(pid, now);
        let Some(p) = self.participants.get_mut(pid) else {
            return;
        };
        let conns = [p.pub_conn.take(), p.sub_conn.take()];
        p.legs.clear();
        p.offer = OfferState::Stable;
        for ci in conns.into_iter().flatten() {
            self.close_conn(ci);
        }
        self.subscribe_to_room(pid, now);
    }

    /// Bring a parked participant back into its room under the same id, with its media reset.
    /// The room limits apply as for a join (the record stays parked if they refuse).
    fn unpark(
        &mut self,
        pid: &ParticipantId,
        events: &EventSender,
        now: Instant,
    ) -> Result<(), SfuError> {
        let Some((room, role)) = self.parked.get(pid).map(|k| (k.room.clone(), k.role)) else {
            return Ok(());
        };
        self.check_room_limits(&room, role)?;
        let Some(k) = self.parked.remove(pid) else {
            return Ok(());
        };
        let moderator_muted = k.moderator_muted
            || self
                .rooms
                .get(&k.room)
                .is_some_and(|r| r.muted_identities.contains(&k.identity));
        self.seat(
            Seat {
                id: k.id,
                room: k.room,
                identity: k.identity,
                name: k.name,
                role: k.role,
                events: events.clone(),
                resume_token: k.resume_token,
                moderator_muted,
                resumed: true,
                video_on_demand: k.video_on_demand,
            },
            now,
        );
        Ok(())
    }

    /// A parked participant will not come back: send its held-back attendance leave.
    fn end_park(&self, k: Parked) {
        let span = tracing::info_span!("participant", room = %k.room, participant = %k.id);
        let _g = span.enter();
        tracing::info!(reason = ?k.reason, "parked session ended");
        if super::relay_demand::is_relay_identity(&k.identity) {
            return; // no attendance for cascade relays
        }
        self.room_event(RoomEvent::Left {
            room: k.room,
            participant: k.id,
            identity: k.identity,
            reason: k.reason,
            at: k.left_at,
        });
    }

    /// End the parked sessions that match `which`. True if one of them was moderator-muted.
    fn end_parks(&mut self, which: impl Fn(&Parked) -> bool) -> bool {
        let ids: Vec<ParticipantId> = self
            .parked
            .values()
            .filter(|k| which(k))
            .map(|k| k.id.clone())
            .collect();
        let mut muted = false;
        for id in ids {
            if let Some(k) = self.parked.remove(&id) {
                muted |= k.moderator_muted;
                self.end_park(k);
            }
        }
        muted
    }

    /// A fresh join of `identity` into `room`: its parked session (if any) is over. True if
    /// that session was moderator-muted (the mute carries over).
    pub(crate) fn end_parked_identity(&mut self, room: &str, identity: &str) -> bool {
        self.end_parks(|k| k.room == room && k.identity == identity)
    }

    /// The room ended: nobody parked from it may come back.
    pub(crate) fn end_parked_room(&mut self, room: &str) {
        self.end_parks(|k| k.room == room);
    }

    /// Shutdown: every parked session ends.
    pub(crate) fn end_all_parked(&mut self) {
        self.end_parks(|_| true);
    }

    /// Remove suspended participants and end parked sessions whose grace window has passed.
    pub(crate) fn expire_suspended(&mut self, now: Instant) {
        let expired: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.suspended_until.is_some_and(|d| d <= now))
            .map(|p| p.id.clone())
            .collect();
        for pid in expired {
            self.remove_participant(&pid, LeaveReason::Disconnected, false, now);
        }
        if self.parked.values().any(|k| k.until <= now) {
            self.end_parks(|k| k.until <= now);
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
