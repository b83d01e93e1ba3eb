//! The presentation: a published screen track is the room's presentation, one at a time.
//! A second presenter's screen track is refused (`presentation_active`, to it only) unless it
//! is a host, whose screen share takes over; a host or operator stops another's presentation.
//! Everyone learns the current one from `presentation` (and `joined`); the media core reports
//! starts and stops on the room-event queue for the rakor's record. What the allocator makes
//! of it: `allocate.rs`.

use super::Core;
use crate::handle::RoomEvent;
use crate::slab::{ConnKey, TrackKey};
use crate::SfuError;
use rakor_proto::{
    ErrorCode, ParticipantId, Presentation, PresentationEnd, ServerMessage, TrackId, TrackSource,
};
use std::time::Instant;

impl Core {
    /// The room's presentation as `joined` and `presentation` name it.
    pub(crate) fn presentation_info(&self, room: &str) -> Option<Presentation> {
        let ti = self.rooms.get(room)?.presentation?;
        let t = self.tracks.get(ti)?;
        Some(Presentation {
            participant_id: t.owner.clone(),
            track_id: t.id.clone(),
        })
    }

    /// May a new track of `source` on transceiver `mid` of `pid`'s publisher connection `ci`
    /// be published? Cameras and microphones always; a screen track when nobody presents, or
    /// (a host's) by taking over; a screen's audio only from the presenter. A refused track's
    /// mid is suppressed (not published again while it keeps sending) and a refused screen
    /// track gets its publisher `presentation_active`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit_source(
        &mut self,
        pid: &ParticipantId,
        room: &str,
        host: bool,
        ci: ConnKey,
        mid: &str,
        source: TrackSource,
        now: Instant,
    ) -> bool {
        let current = self.rooms.get(room).and_then(|r| r.presentation);
        let presenter = current
            .and_then(|ti| self.tracks.get(ti))
            .map(|t| t.owner.clone());
        let admitted = match source {
            TrackSource::Camera | TrackSource::Microphone => return true,
            TrackSource::ScreenAudio => presenter.as_ref() == Some(pid),
            TrackSource::Screen => match (current, &presenter) {
                (None, _) => true,
                (Some(ti), Some(owner)) if host && owner != pid => {
                    tracing::info!(presenter = %owner, "host takes over the presentation");
                    self.stop_presenting(ti, PresentationEnd::TakenOver, Some(pid), now);
                    true
                }
                _ => false,
            },
        };
        if !admitted {
            if let Some(c) = self.conns.get_mut(ci) {
                c.suppressed_mids.push(mid.to_owned());
            }
            if source == TrackSource::Screen {
                let who = presenter
                    .as_ref()
                    .and_then(|o| self.participants.get(o))
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                tracing::info!(mid, "screen track refused: a presentation is active");
                self.send(
                    pid,
                    ServerMessage::Error {
                        code: ErrorCode::PresentationActive,
                        message: format!(
                            "{who} is presenting; one presentation at a time (the screen track \
                             with mid \"{mid}\" is not published: remove it)"
                        ),
                        request_type: Some("offer".to_owned()),
                    },
                );
            } else if source == TrackSource::ScreenAudio {
                tracing::info!(mid, "screen audio refused: not the presenter");
                self.send(
                    pid,
                    ServerMessage::Error {
                        code: ErrorCode::Forbidden,
                        message: format!(
                            "screen_audio is published only with your own presentation (the \
                             track with mid \"{mid}\" is not published: remove it)"
                        ),
                        request_type: Some("offer".to_owned()),
                    },
                );
            }
        }
        admitted
    }

    /// Screen track `ti`, just published and subscribed, becomes `room`'s presentation.
    pub(crate) fn start_presentation(&mut self, room: &str, ti: TrackKey, now: Instant) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.presentation = Some(ti);
        let Some(t) = self.tracks.get(ti) else {
            return;
        };
        let (owner, track) = (t.owner.clone(), t.id.clone());
        tracing::info!(presenter = %owner, track = %track, "presentation started");
        // The top layer from the start (text must not be downscaled).
        self.retarget_leg(ti, None, now);
        let identity = self
            .participants
            .get(&owner)
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        self.broadcast(
            room,
            None,
            &ServerMessage::Presentation {
                presentation: Some(Presentation {
                    participant_id: owner.clone(),
                    track_id: track.clone(),
                }),
                by: None,
            },
        );
        self.room_event(RoomEvent::PresentationStarted {
            room: room.to_owned(),
            participant: owner,
            identity,
            track,
            at: self.wall(now),
        });
    }

    /// A host or operator (`by`: the host) stops `room`'s presentation.
    pub(crate) fn stop_presentation(
        &mut self,
        room: &str,
        by: Option<&ParticipantId>,
        now: Instant,
    ) -> Result<(), SfuError> {
        let ti = self
            .rooms
            .get(room)
            .ok_or_else(|| SfuError::UnknownRoom(room.to_owned()))?
            .presentation
            .ok_or_else(|| SfuError::NoPresentation(room.to_owned()))?;
        self.stop_presenting(ti, PresentationEnd::Stopped, by, now);
        Ok(())
    }

    /// End presentation `ti` without its presenter asking: its screen track (and the screen's
    /// audio) stop being forwarded and are unpublished, their mids suppressed; the presenter
    /// gets `presentation_stopped`. A takeover announces the new presentation instead of none.
    fn stop_presenting(
        &mut self,
        ti: TrackKey,
        reason: PresentationEnd,
        by: Option<&ParticipantId>,
        now: Instant,
    ) {
        let Some(t) = self.tracks.get(ti) else {
            return;
        };
        let (room, owner, pub_conn) = (t.room.clone(), t.owner.clone(), t.publisher_conn);
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        if r.presentation != Some(ti) {
            return;
        }
        r.presentation = None;
        let screen: Vec<TrackKey> = self
            .participants
            .get(&owner)
            .map(|p| {
                p.tracks
                    .iter()
                    .copied()
                    .filter(|&x| {
                        x == ti
                            || self
                                .tracks
                                .get(x)
                                .is_some_and(|t| t.source == TrackSource::ScreenAudio)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mids: Vec<String> = screen
            .iter()
            .filter_map(|&x| self.tracks.get(x).map(|t| t.mid.clone()))
            .collect();
        if let Some(c) = self.conns.get_mut(pub_conn) {
            c.suppressed_mids.extend(mids);
        }
        let Some(track_id) = self.tracks.get(ti).map(|t| t.id.clone()) else {
            return;
        };
        for x in screen {
            self.unpublish(x, now);
        }
        self.send(
            &owner,
            ServerMessage::PresentationStopped {
                track_id: track_id.clone(),
                reason,
                by: by.cloned(),
            },
        );
        self.presentation_ended(&room, &owner, &track_id, reason, by, now);
    }

    /// After `owner`'s screen track `track` stopped being `room`'s presentation (already
    /// cleared): tell the room (unless a takeover's new presentation follows) and report it
    /// for the record.
    pub(crate) fn presentation_ended(
        &mut self,
        room: &str,
        owner: &ParticipantId,
        track: &TrackId,
        reason: PresentationEnd,
        by: Option<&ParticipantId>,
        now: Instant,
    ) {
        tracing::info!(presenter = %owner, %track, ?reason, "presentation ended");
        if reason != PresentationEnd::TakenOver {
            self.broadcast(
                room,
                None,
                &ServerMessage::Presentation {
                    presentation: None,
                    by: by.cloned(),
                },
            );
        }
        let identity = self
            .participants
            .get(owner)
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        self.room_event(RoomEvent::PresentationStopped {
            room: room.to_owned(),
            participant: owner.clone(),
            identity,
            track: track.clone(),
            reason,
            by: by.cloned(),
            at: self.wall(now),
        });
    }
}
