//! Recording, the media core's side: which rooms record, which tracks are handed to the
//! recorder thread (`crate::record`), the `recording` notice to everyone in the room, and the
//! keyframe requests the recorder asks for. The per-packet hand-off is in `forward.rs`.

use super::messages::Reject;
use super::Core;
use crate::record::{MarkKind, RecControl, RecFeedback, RecorderTap};
use crate::slab::TrackKey;
use rakor_proto::{ErrorCode, ParticipantId, Role, ServerMessage, TrackKind};
use std::time::{Instant, SystemTime};

/// Why a recording cannot start or stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    #[error("recording is not enabled on this server")]
    Disabled,
    #[error("nobody is in room \"{0}\"")]
    NotLive(String),
    #[error("room \"{0}\" is already being recorded")]
    AlreadyRecording(String),
    #[error("room \"{0}\" is not being recorded")]
    NotRecording(String),
    #[error("not enough free disk space to record: {free} bytes free, {min} required (recording.min_free)")]
    LowDisk { free: u64, min: u64 },
}

impl RecordingError {
    /// The wire code a host gets for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            RecordingError::LowDisk { .. } => ErrorCode::LimitExceeded,
            _ => ErrorCode::InvalidState,
        }
    }
}

/// A room's recording as the API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingStatus {
    pub started_at: SystemTime,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Core {
    /// Attach the recorder (the shell does, when recording is configured).
    pub(crate) fn set_recorder(&mut self, tap: RecorderTap) {
        self.recorder = Some(tap);
    }

    /// The recording state of `room` (None: not recording).
    pub fn recording_status(&self, room: &str) -> Option<RecordingStatus> {
        self.recording
            .get(room)
            .map(|&started_at| RecordingStatus { started_at })
    }

    /// Start recording `room`: every published track is handed to the recorder from now on.
    pub fn recording_start(
        &mut self,
        room: &str,
        now: Instant,
    ) -> Result<SystemTime, RecordingError> {
        let Some(tap) = &self.recorder else {
            return Err(RecordingError::Disabled);
        };
        if !self.rooms.contains_key(room) {
            return Err(RecordingError::NotLive(room.to_owned()));
        }
        if self.recording.contains_key(room) {
            return Err(RecordingError::AlreadyRecording(room.to_owned()));
        }
        if !tap.disk_ok() {
            return Err(RecordingError::LowDisk {
                free: tap.free_bytes(),
                min: tap.settings.min_free_bytes,
            });
        }
        let started_at = self.wall(now);
        tap.control(RecControl::Start {
            room: room.to_owned(),
            started_at,
        });
        self.recording.insert(room.to_owned(), started_at);
        let tracks = self.tracks.keys_where(|t| t.room == room);
        for ti in tracks {
            self.record_track(ti, now);
        }
        self.record_initial_marks(room, now);
        tracing::info!(%room, "recording started");
        self.room_event(crate::RoomEvent::Timeline {
            room: room.to_owned(),
            kind: crate::TimelineKind::RecordingStarted,
            subject: None,
            by: None,
            detail: None,
            at: started_at,
        });
        self.broadcast(
            room,
            None,
            &ServerMessage::Recording {
                active: true,
                started_at: Some(rfc3339(started_at)),
                reason: None,
            },
        );
        Ok(started_at)
    }

    /// Stop recording `room` (`reason`: why, when it was not asked for).
    pub fn recording_stop(
        &mut self,
        room: &str,
        reason: Option<String>,
        now: Instant,
    ) -> Result<(), RecordingError> {
        if self.recording.remove(room).is_none() {
            return Err(RecordingError::NotRecording(room.to_owned()));
        }
        let tracks = self
            .tracks
            .keys_where(|t| t.room == room && t.rec.is_some());
        for &ti in &tracks {
            if let Some(t) = self.tracks.get_mut(ti) {
                t.rec = None;
            }
            // Dynacast as before the recording.
            self.update_publisher_pause(ti);
            if self.tracks.get(ti).is_some_and(|t| t.is_simulcast()) {
                self.update_publisher_layers(ti);
            }
        }
        if reason.is_none() {
            if let Some(tap) = &self.recorder {
                tap.control(RecControl::Stop {
                    room: room.to_owned(),
                });
            }
        }
        tracing::info!(%room, ?reason, "recording stopped");
        self.room_event(crate::RoomEvent::Timeline {
            room: room.to_owned(),
            kind: crate::TimelineKind::RecordingStopped,
            subject: None,
            by: None,
            detail: reason.clone(),
            at: self.wall(now),
        });
        self.broadcast(
            room,
            None,
            &ServerMessage::Recording {
                active: false,
                started_at: None,
                reason,
            },
        );
        Ok(())
    }

    /// A track of a recorded room starts being handed to the recorder.
    pub(crate) fn record_track(&mut self, ti: TrackKey, now: Instant) {
        let next = self.next_rec + 1;
        let Some(tap) = &self.recorder else {
            return;
        };
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        if t.rec.is_some() || !self.recording.contains_key(&t.room) {
            return;
        }
        let Some(p) = self.participants.get(&t.owner) else {
            return;
        };
        self.next_rec = next;
        t.rec = Some(next);
        tap.control(RecControl::Track {
            room: t.room.clone(),
            rec: next,
            participant: t.owner.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            track: t.id.clone(),
            kind: t.kind,
            codec: t.codec,
        });
        if t.kind == TrackKind::Video {
            // Dynacast may have paused it (nobody showed it): the recorder needs it.
            self.update_publisher_pause(ti);
            if self.tracks.get(ti).is_some_and(|t| t.is_simulcast()) {
                self.update_publisher_layers(ti);
            }
            // The file starts at a keyframe: ask now.
            self.request_keyframe(ti, now);
        }
    }

    /// A recorded track is gone (unpublished, its publisher left).
    pub(crate) fn record_track_end(&mut self, rec: Option<u64>) {
        if let (Some(rec), Some(tap)) = (rec, &self.recorder) {
            tap.control(RecControl::TrackEnd { rec });
        }
    }

    /// The room is gone (its last participant left): its recording ends.
    pub(crate) fn record_room_gone(&mut self, room: &str, now: Instant) {
        if self.recording.remove(room).is_some() {
            self.room_event(crate::RoomEvent::Timeline {
                room: room.to_owned(),
                kind: crate::TimelineKind::RecordingStopped,
                subject: None,
                by: None,
                detail: Some("the room ended".to_owned()),
                at: self.wall(now),
            });
            if let Some(tap) = &self.recorder {
                tap.control(RecControl::Stop {
                    room: room.to_owned(),
                });
            }
            tracing::info!(%room, "recording stopped: the room ended");
        }
    }

    /// A room just got its first participant: with `recording.auto`, record it.
    pub(crate) fn record_room_auto(&mut self, room: &str, now: Instant) {
        if self.recorder.as_ref().is_some_and(|t| t.settings.auto)
            && !self.recording.contains_key(room)
        {
            if let Err(e) = self.recording_start(room, now) {
                tracing::warn!(%room, "automatic recording did not start: {e}");
            }
        }
    }

    /// Tell a participant who just joined that the room is being recorded.
    pub(crate) fn send_recording_state(&self, pid: &ParticipantId) {
        let Some(p) = self.participants.get(pid) else {
            return;
        };
        if let Some(&at) = self.recording.get(&p.room) {
            self.send(
                pid,
                ServerMessage::Recording {
                    active: true,
                    started_at: Some(rfc3339(at)),
                    reason: None,
                },
            );
        }
    }

    /// The host's `recording {action}`.
    pub(crate) fn host_recording(
        &mut self,
        pid: &ParticipantId,
        action: rakor_proto::RecordingAction,
        now: Instant,
    ) -> Result<(), Reject> {
        let p = self.participants.get(pid).ok_or_else(Reject::not_joined)?;
        if p.role != Role::Host {
            return Err(Reject::new(
                ErrorCode::Forbidden,
                "only a host may start or stop a recording",
            ));
        }
        let room = p.room.clone();
        let r = match action {
            rakor_proto::RecordingAction::Start => self.recording_start(&room, now).map(|_| ()),
            rakor_proto::RecordingAction::Stop => self.recording_stop(&room, None, now),
        };
        r.map_err(|e| Reject::new(e.code(), e.to_string()))
    }

    /// A spotlight or presentation change of a recorded room goes into its manifest's
    /// timeline (the composite shows it large).
    pub(crate) fn record_mark(&self, ev: &crate::RoomEvent) {
        use crate::{RoomEvent, TimelineKind};
        let (room, at, kind, participant, track) = match ev {
            RoomEvent::Timeline {
                room,
                kind: TimelineKind::SpotlightSet,
                subject,
                at,
                ..
            } => (
                room,
                *at,
                MarkKind::Spotlight,
                subject.as_ref().map(|s| s.participant.clone()),
                None,
            ),
            RoomEvent::Timeline {
                room,
                kind: TimelineKind::SpotlightCleared,
                at,
                ..
            } => (room, *at, MarkKind::Spotlight, None, None),
            RoomEvent::PresentationStarted {
                room,
                participant,
                track,
                at,
                ..
            } => (
                room,
                *at,
                MarkKind::Presentation,
                Some(participant.clone()),
                Some(track.clone()),
            ),
            RoomEvent::PresentationStopped { room, at, .. } => {
                (room, *at, MarkKind::Presentation, None, None)
            }
            _ => return,
        };
        self.send_mark(room, at, kind, participant, track);
    }

    fn send_mark(
        &self,
        room: &str,
        at: SystemTime,
        kind: MarkKind,
        participant: Option<ParticipantId>,
        track: Option<rakor_proto::TrackId>,
    ) {
        if let (Some(tap), true) = (&self.recorder, self.recording.contains_key(room)) {
            tap.control(RecControl::Mark {
                room: room.to_owned(),
                at,
                kind,
                participant,
                track,
            });
        }
    }

    /// The loudest speaking site of a recorded room changed (`update_speakers`).
    pub(crate) fn record_speaker(&self, room: &str, loudest: Option<ParticipantId>, now: Instant) {
        self.send_mark(room, self.wall(now), MarkKind::Speaker, loudest, None);
    }

    /// The state at a recording's start: who is spotlighted, presenting, speaking.
    fn record_initial_marks(&self, room: &str, now: Instant) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let at = self.wall(now);
        if let Some(p) = &r.spotlight {
            self.send_mark(room, at, MarkKind::Spotlight, Some(p.clone()), None);
        }
        if let Some(t) = r.presentation.and_then(|ti| self.tracks.get(ti)) {
            self.send_mark(
                room,
                at,
                MarkKind::Presentation,
                Some(t.owner.clone()),
                Some(t.id.clone()),
            );
        }
        if let Some(p) = r.announced.0.first() {
            self.send_mark(room, at, MarkKind::Speaker, Some(p.clone()), None);
        }
    }

    /// What the recorder thread asks for.
    pub(crate) fn recorder_feedback(&mut self, fb: RecFeedback, now: Instant) {
        match fb {
            RecFeedback::Keyframe { rec } => {
                let ti = self.tracks.keys_where(|t| t.rec == Some(rec));
                for ti in ti {
                    self.request_keyframe(ti, now);
                }
            }
            RecFeedback::Failed { room, reason } => {
                let _ = self.recording_stop(&room, Some(reason), now);
            }
        }
    }

    /// Hand-off counters: (packets handed to the recorder, dropped because it was behind).
    pub(crate) fn recorder_counters(&self) -> Option<(u64, u64, u64, u64)> {
        self.recorder.as_ref().map(|t| {
            t.publish_counters();
            use std::sync::atomic::Ordering::Relaxed;
            (
                t.shared.handed.load(Relaxed),
                t.shared.dropped.load(Relaxed),
                t.shared.frames_written.load(Relaxed),
                t.shared.thread_cpu_us.load(Relaxed),
            )
        })
    }
}
