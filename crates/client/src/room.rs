//! [`RoomView`]: the client's picture of the room (other participants, their tracks, the
//! spotlight), kept up to date from the server's events.

use rakor_proto::{ParticipantId, ParticipantInfo, ServerMessage};
use std::collections::BTreeMap;

/// Everyone else in the room as this client has been told, plus the spotlight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomView {
    pub participants: BTreeMap<ParticipantId, ParticipantInfo>,
    pub spotlight: Option<ParticipantId>,
    /// The room's presentation (`joined.presentation`, then `presentation`).
    pub presentation: Option<rakor_proto::Presentation>,
    /// The id of the last chat message received (`chat`, or the last of a `chat_history`):
    /// sent as `join.resume.last_chat_id` so that a resume brings the messages missed.
    pub last_chat_id: Option<String>,
}

impl RoomView {
    /// Apply one server message; messages that do not change the room are ignored.
    pub fn apply(&mut self, msg: &ServerMessage) {
        match msg {
            ServerMessage::Joined {
                participants,
                spotlight,
                presentation,
                ..
            } => {
                self.presentation = presentation.clone();
                self.participants = participants
                    .iter()
                    .map(|p| (p.id.clone(), p.clone()))
                    .collect();
                self.spotlight = spotlight.clone();
            }
            ServerMessage::ParticipantJoined { participant } => {
                self.participants
                    .insert(participant.id.clone(), participant.clone());
            }
            ServerMessage::ParticipantLeft { participant_id, .. } => {
                self.participants.remove(participant_id);
            }
            ServerMessage::TrackPublished {
                participant_id,
                track,
            } => {
                if let Some(p) = self.participants.get_mut(participant_id) {
                    p.tracks.retain(|t| t.id != track.id);
                    p.tracks.push(track.clone());
                }
            }
            ServerMessage::TrackUnpublished {
                participant_id,
                track_id,
            } => {
                if let Some(p) = self.participants.get_mut(participant_id) {
                    p.tracks.retain(|t| &t.id != track_id);
                }
            }
            ServerMessage::TrackMuted {
                participant_id,
                track_id,
                muted,
                ..
            } => {
                if let Some(t) = self
                    .participants
                    .get_mut(participant_id)
                    .and_then(|p| p.tracks.iter_mut().find(|t| &t.id == track_id))
                {
                    t.muted = *muted;
                }
            }
            ServerMessage::Spotlight { participant_id, .. } => {
                self.spotlight = participant_id.clone();
            }
            ServerMessage::Presentation { presentation, .. } => {
                self.presentation = presentation.clone();
            }
            ServerMessage::Chat(entry) => self.last_chat_id = Some(entry.id.clone()),
            ServerMessage::ChatHistory { messages, .. } => {
                if let Some(last) = messages.last() {
                    self.last_chat_id = Some(last.id.clone());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rakor_proto::{LeaveReason, Role, TrackId, TrackInfo, TrackKind};

    fn pid(s: &str) -> ParticipantId {
        ParticipantId(s.into())
    }

    #[test]
    fn room_view_follows_events() {
        let mut room = RoomView::default();
        let info = |id: &str| ParticipantInfo {
            id: pid(id),
            identity: id.into(),
            name: id.into(),
            role: Role::Participant,
            tracks: vec![],
        };
        room.apply(&ServerMessage::Joined {
            version: 1,
            participant_id: pid("PA_me"),
            room: "r".into(),
            identity: "me".into(),
            name: "me".into(),
            role: Role::Host,
            participants: vec![info("PA_a")],
            spotlight: None,
            resume_token: String::new(),
            resumed: false,
            media_reset: false,
            presentation: None,
            ice_servers: Vec::new(),
        });
        room.apply(&ServerMessage::ParticipantJoined {
            participant: info("PA_b"),
        });
        let track = TrackInfo {
            id: TrackId("TR_1".into()),
            kind: TrackKind::Video,
            mid: "1".into(),
            muted: false,
            source: None,
        };
        room.apply(&ServerMessage::TrackPublished {
            participant_id: pid("PA_b"),
            track: track.clone(),
        });
        room.apply(&ServerMessage::TrackMuted {
            participant_id: pid("PA_b"),
            track_id: track.id.clone(),
            muted: true,
            by: None,
        });
        assert!(room.participants[&pid("PA_b")].tracks[0].muted);
        room.apply(&ServerMessage::Spotlight {
            participant_id: Some(pid("PA_b")),
            by: pid("PA_me"),
        });
        assert_eq!(room.spotlight, Some(pid("PA_b")));
        room.apply(&ServerMessage::TrackUnpublished {
            participant_id: pid("PA_b"),
            track_id: track.id,
        });
        assert!(room.participants[&pid("PA_b")].tracks.is_empty());
        room.apply(&ServerMessage::ParticipantLeft {
            participant_id: pid("PA_a"),
            reason: LeaveReason::Disconnected,
            by: None,
        });
        assert_eq!(
            room.participants.keys().cloned().collect::<Vec<_>>(),
            vec![pid("PA_b")]
        );
    }
}
