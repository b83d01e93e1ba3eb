//! Admission and departure: a join (new, resumed, or the same identity again), the one
//! [`Core::seat`] path that puts a participant into a room (shared by a join and the return of
//! a parked participant), and [`Core::remove_participant`].

use super::relay_demand::is_relay_identity;
use super::state::{random_id, OfferState, Participant, Room};
use super::Core;
use crate::handle::{JoinRequest, RoomEvent, RoomSnapshot};
use crate::SfuError;
use rakor_proto::{LeaveReason, ParticipantId, Role, ServerMessage, PROTOCOL_VERSION};
use std::time::Instant;

/// Who is being seated, and how its `joined` reads.
pub(crate) struct Seat {
    pub id: ParticipantId,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub events: crate::EventSender,
    pub resume_token: String,
    pub moderator_muted: bool,
    /// A parked participant coming back (`joined {resumed, media_reset}`), not a new one.
    pub resumed: bool,
    pub video_on_demand: bool,
}

impl Core {
    /// Join a room. On success `joined` (and any subscriber offer) is queued on
    /// `req.events`; the room has been told with `participant_joined`.
    pub fn join(&mut self, now: Instant, req: JoinRequest) -> Result<ParticipantId, SfuError> {
        let r = self.admit(now, req);
        self.service_dirty(now);
        r
    }

    fn admit(&mut self, now: Instant, req: JoinRequest) -> Result<ParticipantId, SfuError> {
        if self.stopping {
            return Err(SfuError::ShuttingDown);
        }
        if let Some(resume) = &req.resume {
            if self.try_resume(&req.room, &req.identity, resume, &req.events, now)? {
                return Ok(resume.participant_id.clone());
            }
            // A stale connection (replaced by a newer one of the same identity) must not push
            // the live one out by coming back.
            if self.identity_live(&req.room, &req.identity) {
                tracing::info!(room = %req.room, "resume refused: the identity is connected elsewhere");
                return Err(SfuError::Replaced);
            }
            tracing::info!(room = %req.room, "resume not possible; joining as a new session");
        }
        // A session of this identity parked after a media failure ends here (resume.rs). A
        // moderator's mute stays with the identity in the room (moderate.rs).
        let parked_muted = self.end_parked_identity(&req.room, &req.identity);
        // The same identity joining again replaces the older connection.
        if let Some(old) = self.identity_in_room(&req.room, &req.identity) {
            tracing::info!(room = %req.room, identity = %req.identity, "identity joined again; replacing");
            self.remove_participant(&old, LeaveReason::Replaced, true, now);
        }
        self.check_room_limits(&req.room, req.role)?;
        let moderator_muted = parked_muted
            || self
                .rooms
                .get(&req.room)
                .is_some_and(|r| r.muted_identities.contains(&req.identity));
        let id = ParticipantId(random_id("PA_"));
        self.seat(
            Seat {
                id: id.clone(),
                room: req.room,
                identity: req.identity,
                name: req.name,
                role: req.role,
                events: req.events,
                resume_token: super::resume::new_token(),
                moderator_muted,
                resumed: false,
                video_on_demand: req.video_on_demand,
            },
            now,
        );
        Ok(id)
    }

    /// Whether one more participant fits into `room` (and, for a new room, the server).
    pub(crate) fn check_room_limits(&self, room: &str, role: Role) -> Result<(), SfuError> {
        // A cascade relay subscriber (`Role::Relay`) is its node's leg, not a site: it is not
        // counted, and never refused for a full room (a refused leg would cut a whole node's
        // sites off the room). Republishers are counted: each stands for a real site.
        let count = self.rooms.get(room).map_or(0, |r| {
            r.participants
                .iter()
                .filter(|id| {
                    self.participants
                        .get(*id)
                        .is_some_and(|p| p.role != Role::Relay)
                })
                .count()
        });
        if role != Role::Relay && count >= self.cfg.max_participants_per_room {
            return Err(SfuError::RoomFull(room.to_owned()));
        }
        if count == 0 && self.rooms.len() >= self.cfg.max_rooms {
            return Err(SfuError::TooManyRooms(self.cfg.max_rooms));
        }
        Ok(())
    }

    /// The participant of `identity` in `room`, if any.
    fn identity_in_room(&self, room: &str, identity: &str) -> Option<ParticipantId> {
        self.rooms.get(room)?.participants.iter().find_map(|id| {
            self.participants
                .get(id)
                .filter(|p| p.identity == identity)
                .map(|p| p.id.clone())
        })
    }

    /// `identity` is in `room` with a live signalling connection.
    fn identity_live(&self, room: &str, identity: &str) -> bool {
        self.identity_in_room(room, identity).is_some_and(|id| {
            self.participants
                .get(&id)
                .is_some_and(|p| p.suspended_until.is_none())
        })
    }

    /// Put a participant into its room: `joined` to it, `participant_joined` to the others,
    /// attendance, and a subscription to everything already published there. The room limits
    /// were checked by the caller.
    pub(crate) fn seat(&mut self, s: Seat, now: Instant) {
        let span = tracing::info_span!("participant", room = %s.room, participant = %s.id);
        {
            let _g = span.enter();
            if s.resumed {
                tracing::info!("resumed after a media failure; back in the room");
            } else {
                tracing::info!(role = s.role.as_str(), "joined");
            }
        }
        let loudest = self.cfg.loudest_speakers;
        self.rooms
            .entry(s.room.clone())
            .or_insert_with(|| Room::new(loudest));
        let p = Participant {
            id: s.id.clone(),
            room: s.room.clone(),
            identity: s.identity,
            name: s.name,
            role: s.role,
            events: s.events,
            span,
            pub_conn: None,
            sub_conn: None,
            tracks: Vec::new(),
            legs: Vec::new(),
            offer: OfferState::Stable,
            moderator_muted: s.moderator_muted,
            resume_token: s.resume_token,
            suspended_until: None,
            chat_bucket: Default::default(),
            video_on_demand: s.video_on_demand,
        };
        let info = self.participant_info(&p);
        // To the others only (it is not in the room's list yet); a hidden relay to nobody.
        if !p.role.is_hidden() {
            self.broadcast(
                &s.room,
                None,
                &ServerMessage::ParticipantJoined { participant: info },
            );
        }
        // Cascade relay participants are not attendance: each site counts on its own node.
        if !s.resumed && !is_relay_identity(&p.identity) {
            self.room_event(RoomEvent::Joined {
                room: s.room.clone(),
                participant: s.id.clone(),
                identity: p.identity.clone(),
                name: p.name.clone(),
                role: p.role,
                at: self.wall(now),
            });
        }
        self.participants.insert(s.id.clone(), p);
        if let Some(r) = self.rooms.get_mut(&s.room) {
            r.participants.push(s.id.clone());
        }
        self.send_joined(&s.id, s.resumed, s.resumed);
        self.send_recording_state(&s.id);
        self.record_room_auto(&s.room, now);
        self.subscribe_to_room(&s.id, now);
        if s.video_on_demand {
            // Videos nobody asked for may now be paused at their publishers.
            let videos = self.tracks.keys_where(|t| t.room == s.room);
            for ti in videos {
                self.update_publisher_pause(ti);
            }
        }
        self.renegotiate_pending(now);
    }

    /// `joined` with the room as it is now; a muted participant is reminded that it is.
    pub(crate) fn send_joined(&self, pid: &ParticipantId, resumed: bool, media_reset: bool) {
        let Some(p) = self.participants.get(pid) else {
            return;
        };
        let spotlight = self.rooms.get(&p.room).and_then(|r| r.spotlight.clone());
        let _ = p.events.send(ServerMessage::Joined {
            version: PROTOCOL_VERSION,
            participant_id: pid.clone(),
            room: p.room.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            role: p.role,
            participants: self.others_info(&p.room, pid),
            spotlight,
            presentation: self.presentation_info(&p.room),
            resume_token: p.resume_token.clone(),
            resumed,
            media_reset,
            // Filled per connection by the signalling server (it owns the TURN secret).
            ice_servers: Vec::new(),
        });
        if p.moderator_muted && (media_reset || !resumed) {
            // Its audio stays muted when it publishes (again).
            let _ = p.events.send(ServerMessage::ModeratorMute { muted: true });
        }
        if !resumed {
            let messages = self.chat_history(&p.room, &p.identity);
            if !messages.is_empty() {
                let _ = p.events.send(ServerMessage::ChatHistory {
                    messages,
                    after: None,
                });
            }
        }
        let hands = self.hands(&p.room);
        if !hands.is_empty() {
            let _ = p.events.send(ServerMessage::Hands { hands });
        }
    }

    /// Remove a participant: its tracks, its legs, its connections. `notify_self` sends it a
    /// final `leave` (when the server, not the client, ends the session).
    pub(crate) fn remove_participant(
        &mut self,
        pid: &ParticipantId,
        reason: LeaveReason,
        notify_self: bool,
        now: Instant,
    ) {
        self.remove_participant_by(pid, reason, notify_self, None, now);
    }

    /// [`Core::remove_participant`]; `by`: the host whose `moderate` removed it or ended the
    /// room (`participant_left.by`, so a cascade node forwards its own host's to the owner).
    pub(crate) fn remove_participant_by(
        &mut self,
        pid: &ParticipantId,
        reason: LeaveReason,
        notify_self: bool,
        by: Option<&ParticipantId>,
        now: Instant,
    ) {
        let Some(p) = self.participants.get(pid) else {
            return;
        };
        let span = p.span.clone();
        let _g = span.enter();
        tracing::info!(?reason, "left");
        if notify_self {
            let _ = p.events.send(ServerMessage::Leave {
                reason,
                resumable: false,
            });
        }
        let room = p.room.clone();
        self.drop_media(pid, now);
        let Some(p) = self.participants.remove(pid) else {
            return;
        };
        // Parked for a resume (resume.rs): its attendance leave waits for the park to end.
        if !self.parked.contains_key(pid) && !is_relay_identity(&p.identity) {
            self.room_event(RoomEvent::Left {
                room: room.clone(),
                participant: pid.clone(),
                identity: p.identity.clone(),
                reason,
                at: self.wall(now),
            });
        }
        for ci in [p.pub_conn, p.sub_conn].into_iter().flatten() {
            self.close_conn(ci);
        }
        let mut cleared_spotlight = false;
        let mut hand_dropped = false;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.participants.retain(|x| x != pid);
            let hands = r.hands.len();
            r.hands.retain(|(id, _)| id != pid);
            hand_dropped = r.hands.len() != hands;
            if r.spotlight.as_ref() == Some(pid) {
                r.spotlight = None;
                cleared_spotlight = true;
            }
            if r.participants.is_empty() {
                self.rooms.remove(&room);
                self.record_room_gone(&room, now);
            }
        }
        if p.video_on_demand {
            // Videos it did not ask for may be wanted by nobody else.
            let videos = self.tracks.keys_where(|t| t.room == room);
            for ti in videos {
                self.update_publisher_pause(ti);
            }
        }
        if !p.role.is_hidden() {
            self.broadcast(
                &room,
                None,
                &ServerMessage::ParticipantLeft {
                    participant_id: pid.clone(),
                    reason,
                    by: by.cloned(),
                },
            );
        }
        if hand_dropped {
            let hands = self.hands(&room);
            self.broadcast(&room, None, &ServerMessage::Hands { hands });
            self.timeline_detail(
                &room,
                crate::handle::TimelineKind::HandLowered,
                Some(crate::handle::Subject {
                    participant: pid.clone(),
                    identity: p.identity.clone(),
                    name: p.name.clone(),
                }),
                None,
                Some("left".to_owned()),
                now,
            );
        }
        if cleared_spotlight {
            self.timeline(
                &room,
                crate::handle::TimelineKind::SpotlightCleared,
                None,
                None,
                now,
            );
            self.broadcast(
                &room,
                None,
                &ServerMessage::Spotlight {
                    participant_id: None,
                    by: pid.clone(),
                },
            );
        }
        self.renegotiate_pending(now);
        // Dropping `p.events` lets the signalling connection close.
    }

    /// Who is in `room` now (None if nobody).
    pub fn room_info(&self, room: &str) -> Option<RoomSnapshot> {
        let r = self.rooms.get(room)?;
        let members = || {
            r.participants
                .iter()
                .filter_map(|id| self.participants.get(id))
                .filter(|p| !p.role.is_hidden())
        };
        Some(RoomSnapshot {
            participants: members().map(|p| self.participant_info(p)).collect(),
            spotlight: r.spotlight.clone(),
            moderator_muted: members()
                .filter(|p| p.moderator_muted)
                .map(|p| p.id.clone())
                .collect(),
            hands: self.hands(room),
            presentation: self.presentation_info(room),
        })
    }
}
