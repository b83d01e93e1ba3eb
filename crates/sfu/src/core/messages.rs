//! Messages from and to participants: the dispatch of a joined client's messages to the job
//! that handles them, the one refusal path (`error` to that client only), and sending.

use super::state::Participant;
use super::Core;
use crate::slab::TrackKey;
use rakor_proto::{
    ClientMessage, ErrorCode, LeaveReason, ParticipantId, ParticipantInfo, PeerConnectionKind,
    ServerMessage, TrackId, TrackInfo,
};
use std::time::Instant;

/// A client-caused failure: sent as `error` to that client.
#[derive(Debug)]
pub(crate) struct Reject(pub ErrorCode, pub String);

impl Reject {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Reject(code, msg.into())
    }

    pub fn not_joined() -> Self {
        Reject::new(ErrorCode::InvalidState, "not joined")
    }
}

impl Core {
    /// A message from joined participant `participant`. A refusal goes back to it as `error`
    /// naming the request; nobody else is affected.
    pub fn client_message(
        &mut self,
        now: Instant,
        participant: &ParticipantId,
        msg: ClientMessage,
    ) {
        let Some(p) = self.participants.get(participant) else {
            return;
        };
        let span = p.span.clone();
        let _g = span.enter();
        let ty = msg.type_name();
        if let Err(Reject(code, message)) = self.dispatch(participant, msg, now) {
            tracing::debug!(%code, %message, "rejected client message");
            self.send(
                participant,
                ServerMessage::Error {
                    code,
                    message,
                    request_type: Some(ty.to_owned()),
                },
            );
        }
        self.renegotiate_pending(now);
        self.service_dirty(now);
    }

    fn dispatch(
        &mut self,
        pid: &ParticipantId,
        msg: ClientMessage,
        now: Instant,
    ) -> Result<(), Reject> {
        match msg {
            ClientMessage::Join { .. } => {
                Err(Reject::new(ErrorCode::InvalidState, "already joined"))
            }
            ClientMessage::Offer {
                pc: PeerConnectionKind::Publisher,
                sdp,
                tracks,
            } => self.publish(pid, &sdp, &tracks, now),
            ClientMessage::Offer {
                pc: PeerConnectionKind::Subscriber,
                ..
            } => Err(Reject::new(
                ErrorCode::BadRequest,
                "the server makes the offers on the subscriber connection; send \"answer\"",
            )),
            ClientMessage::Answer {
                pc: PeerConnectionKind::Subscriber,
                sdp,
            } => self.subscriber_answer(pid, sdp, now),
            ClientMessage::Answer {
                pc: PeerConnectionKind::Publisher,
                ..
            } => Err(Reject::new(
                ErrorCode::BadRequest,
                "the client makes the offers on the publisher connection; send \"offer\"",
            )),
            ClientMessage::Candidate { pc, candidate } => self.remote_candidate(pid, pc, candidate),
            ClientMessage::Unpublish { track_id } => {
                let ti = self.own_track(pid, &track_id)?;
                self.unpublish(ti, now);
                Ok(())
            }
            ClientMessage::MuteTrack { track_id, muted } => {
                self.mute_own_track(pid, track_id, muted)
            }
            ClientMessage::Spotlight { participant_id } => self.spotlight(pid, participant_id, now),
            ClientMessage::Recording { action } => self.host_recording(pid, action, now),
            ClientMessage::Ping { ts } => {
                self.send(pid, ServerMessage::Pong { ts });
                Ok(())
            }
            ClientMessage::Moderate {
                action,
                participant_id,
            } => self.host_moderates(pid, action, participant_id, now),
            ClientMessage::Leave {} => {
                self.remove_participant(pid, LeaveReason::ClientRequest, false, now);
                Ok(())
            }
            ClientMessage::TrackSettings {
                track_id,
                visible,
                width,
                height,
            } => self.track_settings(pid, &track_id, visible, (width, height), now),
            ClientMessage::Chat { text, to } => self.chat(pid, text, to, now),
            ClientMessage::Hand { raised } => self.hand(pid, raised, now),
            ClientMessage::GiveFloor { participant_id } => {
                self.host_gives_floor(pid, participant_id, now)
            }
        }
    }

    /// `mute_track` of the client's own track: tell the room.
    fn mute_own_track(
        &mut self,
        pid: &ParticipantId,
        track_id: TrackId,
        muted: bool,
    ) -> Result<(), Reject> {
        let ti = self.own_track(pid, &track_id)?;
        let Some(t) = self.tracks.get_mut(ti) else {
            return Ok(());
        };
        if t.muted == muted {
            return Ok(());
        }
        if t.moderator_muted && !muted {
            return Err(Reject::new(
                ErrorCode::Forbidden,
                "a moderator muted this audio; only a moderator can unmute it",
            ));
        }
        t.muted = muted;
        let room = t.room.clone();
        let m = ServerMessage::TrackMuted {
            participant_id: pid.clone(),
            track_id,
            muted,
            by: None,
        };
        self.broadcast(&room, None, &m);
        Ok(())
    }

    /// A track `pid` publishes, by id.
    pub(crate) fn own_track(
        &self,
        pid: &ParticipantId,
        track_id: &TrackId,
    ) -> Result<TrackKey, Reject> {
        let p = self.participants.get(pid).ok_or_else(Reject::not_joined)?;
        p.tracks
            .iter()
            .copied()
            .find(|&t| self.tracks.get(t).is_some_and(|t| &t.id == track_id))
            .ok_or_else(|| {
                Reject::new(
                    ErrorCode::UnknownTrack,
                    format!("no track \"{track_id}\" published by you"),
                )
            })
    }

    /// Queue a message for one participant's signalling connection.
    pub(crate) fn send(&self, to: &ParticipantId, msg: ServerMessage) {
        if let Some(p) = self.participants.get(to) {
            let _ = p.events.send(msg);
        }
    }

    /// Queue a message for everyone in `room` (but `except`).
    pub(crate) fn broadcast(
        &self,
        room: &str,
        except: Option<&ParticipantId>,
        msg: &ServerMessage,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for id in &r.participants {
            if Some(id) != except {
                self.send(id, msg.clone());
            }
        }
    }

    pub(crate) fn track_info(&self, ti: TrackKey) -> Option<TrackInfo> {
        let t = self.tracks.get(ti)?;
        Some(TrackInfo {
            id: t.id.clone(),
            kind: t.kind,
            mid: t.mid.clone(),
            muted: t.muted,
            source: Some(t.source),
        })
    }

    pub(crate) fn participant_info(&self, p: &Participant) -> ParticipantInfo {
        ParticipantInfo {
            id: p.id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            role: p.role,
            tracks: p
                .tracks
                .iter()
                .filter_map(|&t| self.track_info(t))
                .collect(),
        }
    }

    /// Everyone in `room` but `except`, as `participants` lists them in `joined`.
    pub(crate) fn others_info(&self, room: &str, except: &ParticipantId) -> Vec<ParticipantInfo> {
        self.rooms
            .get(room)
            .map(|r| {
                r.participants
                    .iter()
                    .filter(|id| *id != except)
                    .filter_map(|id| self.participants.get(id))
                    .filter(|p| !p.role.is_hidden())
                    .map(|p| self.participant_info(p))
                    .collect()
            })
            .unwrap_or_default()
    }
}
