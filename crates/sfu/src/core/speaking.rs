//! Loudest speakers: the audio level (RFC 6464) of each forwarded packet is observed after
//! the fan-out (like mediasoup's AudioLevelObserver), and every 100 ms each room's selection
//! gates which sites' audio is forwarded and tells the room who speaks (`speakers`).

use super::Core;
use crate::slab::TrackKey;
use rakor_proto::{ParticipantId, ServerMessage};
use std::time::Instant;

/// One audio level read from a packet during the fan-out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelSample {
    pub track: TrackKey,
    pub level: u8,
    pub voice: bool,
}

impl Core {
    /// The observer step after a fan-out: feed the levels read from the packets into their
    /// rooms' selections. A track's first level enrols it (it now competes for a slot).
    pub(crate) fn observe_levels(&mut self, samples: &[LevelSample], now: Instant) {
        let Core { tracks, rooms, .. } = self;
        for s in samples {
            let Some(track) = tracks.get_mut(s.track) else {
                continue;
            };
            let Some(room) = rooms.get_mut(&track.room) else {
                continue;
            };
            let selector = if track.host {
                &mut room.host_speakers
            } else {
                &mut room.speakers
            };
            if !track.speaker_enrolled {
                track.speaker_enrolled = true;
                selector.add(s.track, now);
                track.speaker_forward = track.host || selector.is_active(s.track);
            }
            selector.observe(s.track, s.level, s.voice, now);
        }
    }

    /// The audio level extension of a track was (re)negotiated: take the track out of speaker
    /// selection until its first packet that carries a level; a track that never sends levels
    /// is always forwarded.
    pub(crate) fn reset_speaker(&mut self, ti: TrackKey) {
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        t.speaker_enrolled = false;
        t.speaker_forward = true;
        if let Some(room) = self.rooms.get_mut(&t.room) {
            room.speakers.remove(ti);
            room.host_speakers.remove(ti);
        }
    }

    /// Re-evaluate every room's loudest speakers: gate the forwarding of sites' audio and tell
    /// the room who speaks (`speakers`) when that changed. Called every 100 ms.
    pub(crate) fn update_speakers(&mut self, now: Instant) {
        let mut announce: Vec<(String, ServerMessage)> = Vec::new();
        let mut loudest: Vec<(String, Option<ParticipantId>)> = Vec::new();
        for (name, room) in self.rooms.iter_mut() {
            let change = room.speakers.update(now);
            let host_change = room.host_speakers.update(now);
            if change.active_changed {
                for (ti, t) in self.tracks.iter_mut() {
                    if t.room == *name && t.speaker_enrolled && !t.host {
                        t.speaker_forward = room.speakers.is_active(ti);
                    }
                }
            }
            if !(change.active_changed || change.speaking_changed || host_change.speaking_changed) {
                continue;
            }
            let owner = |ti: &TrackKey| self.tracks.get(*ti).map(|t| t.owner.clone());
            let mut speaking: Vec<ParticipantId> = room
                .host_speakers
                .speaking()
                .iter()
                .chain(room.speakers.speaking())
                .filter_map(owner)
                .collect();
            speaking.dedup();
            let forwarded: Vec<ParticipantId> =
                room.speakers.active().iter().filter_map(owner).collect();
            if room.announced != (speaking.clone(), forwarded.clone()) {
                if room.announced.0.first() != speaking.first() {
                    loudest.push((name.clone(), speaking.first().cloned()));
                }
                room.announced = (speaking.clone(), forwarded.clone());
                announce.push((
                    name.clone(),
                    ServerMessage::Speakers {
                        speaking,
                        forwarded,
                    },
                ));
            }
        }
        for (room, msg) in announce {
            self.broadcast(&room, None, &msg);
        }
        for (room, who) in loudest {
            self.record_speaker(&room, who, now);
        }
    }
}
