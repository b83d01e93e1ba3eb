//! Moderation: the operator (through the session manager's API) and the host (over
//! signalling) mute a site's audio, remove a site, set the spotlight or end the room. One path
//! for both; the host's requests are checked for the role first.

use super::messages::Reject;
use super::Core;
use crate::handle::Moderation;
use crate::SfuError;
use rakor_proto::{ErrorCode, LeaveReason, ParticipantId, Role, ServerMessage, TrackKind};
use std::time::Instant;

impl Core {
    /// Moderate `room` (operator or host). Unknown room or participant →
    /// [`SfuError::UnknownRoom`] / [`SfuError::UnknownParticipant`].
    pub fn moderate(
        &mut self,
        now: Instant,
        room: &str,
        action: Moderation,
    ) -> Result<(), SfuError> {
        let r = self.apply_moderation(room, action, None, now);
        self.renegotiate_pending(now);
        self.service_dirty(now);
        r
    }

    /// The room of `pid` if it is the host; `forbidden` with `why` otherwise.
    pub(crate) fn host_room(&self, pid: &ParticipantId, why: &str) -> Result<String, Reject> {
        let p = self.participants.get(pid).ok_or_else(Reject::not_joined)?;
        if p.role != Role::Host {
            return Err(Reject::new(ErrorCode::Forbidden, why));
        }
        Ok(p.room.clone())
    }

    /// `moderate` from a client: host only, then the same path as the operator's API.
    pub(crate) fn host_moderates(
        &mut self,
        pid: &ParticipantId,
        action: rakor_proto::ModerateAction,
        target: Option<ParticipantId>,
        now: Instant,
    ) -> Result<(), Reject> {
        use rakor_proto::ModerateAction as A;
        if self
            .participants
            .get(pid)
            .is_some_and(|p| p.role == Role::Relay)
        {
            return self.relay_mutes(pid, action, target);
        }
        let room = self.host_room(pid, "only the host may moderate")?;
        let need_target = || {
            target.clone().ok_or_else(|| {
                Reject::new(
                    ErrorCode::BadRequest,
                    "this action needs \"participant_id\"",
                )
            })
        };
        let m = match action {
            A::MuteAudio | A::UnmuteAudio => {
                // The operator's path, but the room learns which host did it
                // (`track_muted.by`: a cascade node forwards its own host's mute to the owner).
                let target = need_target()?;
                let member = self
                    .rooms
                    .get(&room)
                    .is_some_and(|r| r.participants.contains(&target));
                if !member {
                    return Err(Reject::new(
                        ErrorCode::UnknownParticipant,
                        SfuError::UnknownParticipant(target.0.clone()).to_string(),
                    ));
                }
                let muted = action == A::MuteAudio;
                return self
                    .mute_audio(&room, &target, muted, Some(pid))
                    .map_err(|e| Reject::new(e.code(), e.to_string()));
            }
            A::Remove => Moderation::Remove {
                participant: need_target()?,
            },
            A::EndRoom => Moderation::EndRoom,
            A::StopPresentation => {
                if let Some(t) = &target {
                    let presenter = self.presentation_info(&room).map(|p| p.participant_id);
                    if presenter.as_ref() != Some(t) {
                        return Err(Reject::new(
                            ErrorCode::InvalidState,
                            format!("participant \"{t}\" is not presenting"),
                        ));
                    }
                }
                return self
                    .stop_presentation(&room, Some(pid), now)
                    .map_err(|e| Reject::new(e.code(), e.to_string()));
            }
        };

        self.apply_moderation(&room, m, Some(pid), now)
            .map_err(|e| Reject::new(e.code(), e.to_string()))
    }

    /// `moderate mute_audio/unmute_audio` from a cascade relay subscriber (role `relay`, whose
    /// token only the cluster's key makes): the relay's node muted (or unmuted) this room's
    /// participant `target` there — its operator or a host, through the participant's
    /// republisher — and repeats it here, at the participant's source, as the operator would
    /// (no `by`). Nothing else is allowed to a relay (`forbidden`); an id nobody in the room
    /// has is `unknown_participant`. A target already so is left alone (the same mute may also
    /// arrive through a host's republisher).
    fn relay_mutes(
        &mut self,
        pid: &ParticipantId,
        action: rakor_proto::ModerateAction,
        target: Option<ParticipantId>,
    ) -> Result<(), Reject> {
        use rakor_proto::ModerateAction as A;
        let muted = match action {
            A::MuteAudio => true,
            A::UnmuteAudio => false,
            _ => {
                return Err(Reject::new(
                    ErrorCode::Forbidden,
                    "a relay may only mute or unmute",
                ))
            }
        };
        let room = self
            .participants
            .get(pid)
            .map(|p| p.room.clone())
            .ok_or_else(Reject::not_joined)?;
        let target = target.ok_or_else(|| {
            Reject::new(
                ErrorCode::BadRequest,
                "this action needs \"participant_id\"",
            )
        })?;
        let member = self
            .rooms
            .get(&room)
            .is_some_and(|r| r.participants.contains(&target));
        let Some(p) = self.participants.get(&target).filter(|_| member) else {
            return Err(Reject::new(
                ErrorCode::UnknownParticipant,
                SfuError::UnknownParticipant(target.0.clone()).to_string(),
            ));
        };
        if p.moderator_muted == muted {
            return Ok(());
        }
        tracing::info!(participant = %target, muted, relay = %pid, "a cascade relay repeats a node's mute");
        self.mute_audio(&room, &target, muted, None)
            .map_err(|e| Reject::new(e.code(), e.to_string()))
    }

    /// `by`: the host who asked (`None`: an operator, through the API or a cascade leg).
    fn apply_moderation(
        &mut self,
        room: &str,
        action: Moderation,
        by: Option<&ParticipantId>,
        now: Instant,
    ) -> Result<(), SfuError> {
        let members = self
            .rooms
            .get(room)
            .map(|r| r.participants.clone())
            .ok_or_else(|| SfuError::UnknownRoom(room.to_owned()))?;
        let check = |p: &ParticipantId| {
            if members.contains(p) {
                Ok(())
            } else {
                Err(SfuError::UnknownParticipant(p.0.clone()))
            }
        };
        match action {
            Moderation::MuteAudio { participant, muted } => {
                check(&participant)?;
                self.mute_audio(room, &participant, muted, None)?;
            }
            Moderation::Remove { participant } => {
                check(&participant)?;
                self.remove_participant_by(&participant, LeaveReason::Removed, true, by, now);
            }
            Moderation::Spotlight { participant } => {
                if let Some(p) = &participant {
                    check(p)?;
                }
                // `by` names the room's host if any, else the spotlighted participant.
                let by = members
                    .iter()
                    .find(|id| {
                        self.participants
                            .get(*id)
                            .is_some_and(|p| p.role == Role::Host)
                    })
                    .or(participant.as_ref())
                    .or(members.first())
                    .cloned()
                    .unwrap_or_else(|| ParticipantId(String::new()));
                self.set_spotlight(room, participant, by, Some("operator".to_owned()), now);
            }
            Moderation::StopPresentation => {
                self.stop_presentation(room, None, now)?;
            }
            Moderation::SeedChat { messages } => self.seed_chat(room, messages),
            Moderation::EndRoom => {
                tracing::info!(room, "room ended by a moderator");
                // Relay participants (a cascade's) last: a relay subscriber sees everyone
                // leave, and who ended the room (`by`), before its own `leave`.
                let relay = |c: &Self, p: &ParticipantId| {
                    c.participants.get(p).is_some_and(|x| x.role == Role::Relay)
                };
                let (relays, others): (Vec<_>, Vec<_>) =
                    members.into_iter().partition(|p| relay(self, p));
                for p in others.into_iter().chain(relays) {
                    self.remove_participant_by(&p, LeaveReason::RoomEnded, true, by, now);
                }
                self.end_parked_room(room);
                self.forget_chat(room);
            }
            Moderation::GiveFloor {
                participant,
                by_name,
            } => {
                check(&participant)?;
                self.give_floor(room, &participant, None, by_name, now)?;
            }
        }
        Ok(())
    }

    /// Stop (or resume) forwarding a participant's audio. The mute belongs to its identity in
    /// the room: a rejoin or a second device of the same site stays muted. `by`: the host who
    /// asked (`track_muted.by`), `None` for an operator or a floor given.
    pub(crate) fn mute_audio(
        &mut self,
        room: &str,
        participant: &ParticipantId,
        muted: bool,
        by: Option<&ParticipantId>,
    ) -> Result<(), SfuError> {
        let (identity, tracks) = match self.participants.get_mut(participant) {
            Some(p) => {
                p.moderator_muted = muted;
                (p.identity.clone(), p.tracks.clone())
            }
            None => return Err(SfuError::UnknownParticipant(participant.0.clone())),
        };
        if let Some(r) = self.rooms.get_mut(room) {
            if muted {
                r.muted_identities.insert(identity);
            } else {
                r.muted_identities.remove(&identity);
            }
        }
        tracing::info!(participant = %participant, muted, "moderator audio mute");
        self.send(participant, ServerMessage::ModeratorMute { muted });
        for ti in tracks {
            let Some(t) = self.tracks.get_mut(ti) else {
                continue;
            };
            if t.kind != TrackKind::Audio {
                continue;
            }
            t.moderator_muted = muted;
            t.muted = muted;
            let m = ServerMessage::TrackMuted {
                participant_id: participant.clone(),
                track_id: t.id.clone(),
                muted,
                by: by.cloned(),
            };
            self.broadcast(room, None, &m);
        }
        Ok(())
    }

    /// `spotlight` from a client: host only.
    pub(crate) fn spotlight(
        &mut self,
        pid: &ParticipantId,
        target: Option<ParticipantId>,
        now: Instant,
    ) -> Result<(), Reject> {
        let room = self.host_room(pid, "only the host may set the spotlight")?;
        if let Some(t) = &target {
            if self.participants.get(t).is_none_or(|tp| tp.room != room) {
                return Err(Reject::new(
                    ErrorCode::UnknownParticipant,
                    format!("no participant \"{t}\" in this room"),
                ));
            }
        }
        tracing::info!(spotlight = ?target.as_ref().map(|t| t.0.as_str()), "spotlight set");
        let by_name = self.participants.get(pid).map(|p| p.name.clone());
        self.set_spotlight(&room, target, pid.clone(), by_name, now);
        Ok(())
    }

    /// Set or clear the spotlight, tell the room, and put it on the timeline (`by_name`: who
    /// did it, for the record).
    pub(crate) fn set_spotlight(
        &mut self,
        room: &str,
        target: Option<ParticipantId>,
        by: ParticipantId,
        by_name: Option<String>,
        now: Instant,
    ) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.spotlight = target.clone();
        }
        let (kind, subject) = match &target {
            Some(t) => (
                crate::handle::TimelineKind::SpotlightSet,
                self.participants.get(t).map(|p| crate::handle::Subject {
                    participant: t.clone(),
                    identity: p.identity.clone(),
                    name: p.name.clone(),
                }),
            ),
            None => (crate::handle::TimelineKind::SpotlightCleared, None),
        };
        self.timeline(room, kind, subject, by_name, now);
        self.broadcast(
            room,
            None,
            &ServerMessage::Spotlight {
                participant_id: target,
                by,
            },
        );
    }
}
