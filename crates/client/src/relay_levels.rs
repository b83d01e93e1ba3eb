//! Audio levels across a cascade relay leg (issue 17). The source node tells its relay
//! subscriber the smoothed level of each audio track it forwards (`track_levels`, sent only to
//! participants with the `relay` role, every speaker update that changes one and at least
//! every second). [`RelayLevels`] keeps, per relayed audio track, the level its republisher
//! writes into every packet's RFC 6464 extension ([`crate::media::FedTrack::audio_level`]), so
//! the destination node measures a relayed site like one of its own and its loudest-speaker
//! selection and `speakers` cover the whole room.

use crate::media::NO_AUDIO_LEVEL;
use rakor_proto::{ParticipantId, TrackId, TrackLevel};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The levels of one relay leg's audio tracks, by source track id.
#[derive(Debug, Default)]
pub struct RelayLevels {
    tracks: HashMap<TrackId, (ParticipantId, Arc<AtomicU8>)>,
}

impl RelayLevels {
    pub fn new() -> Self {
        Self::default()
    }

    /// The level cell of the relayed audio track `track` of `participant` (the source's ids),
    /// for its [`crate::media::FedTrack`]: [`NO_AUDIO_LEVEL`] (no extension) until the source
    /// names it.
    pub fn track(&mut self, participant: &ParticipantId, track: &TrackId) -> Arc<AtomicU8> {
        let (_, cell) = self
            .tracks
            .entry(track.clone())
            .or_insert_with(|| (participant.clone(), Arc::new(AtomicU8::new(NO_AUDIO_LEVEL))));
        cell.clone()
    }

    /// A `track_levels` from the source node: store each known track's level (above 127:
    /// 127). Tracks this leg does not relay (a track it never relays back to its origin, one
    /// not republished yet) are ignored; returns how many were.
    pub fn apply(&self, levels: &[TrackLevel]) -> usize {
        let mut unknown = 0;
        for l in levels {
            match self.tracks.get(&l.track_id) {
                Some((_, cell)) => cell.store(l.level.min(127), Ordering::Relaxed),
                None => unknown += 1,
            }
        }
        unknown
    }

    /// The source participant left: forget its tracks.
    pub fn forget(&mut self, participant: &ParticipantId) {
        self.tracks.retain(|_, (p, _)| p != participant);
    }

    /// How many tracks are known.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn lv(track: &str, level: u8) -> TrackLevel {
        TrackLevel {
            track_id: TrackId(track.into()),
            level,
        }
    }

    #[test]
    fn levels_reach_the_known_tracks_and_unknown_ones_are_ignored() {
        let (pa, pb) = (ParticipantId("PA_a".into()), ParticipantId("PA_b".into()));
        let mut r = RelayLevels::new();
        let a = r.track(&pa, &TrackId("TR_a".into()));
        let b = r.track(&pb, &TrackId("TR_b".into()));
        assert_eq!(a.load(Ordering::Relaxed), NO_AUDIO_LEVEL, "none until told");
        let unknown = r.apply(&[lv("TR_a", 20), lv("TR_nobody", 3), lv("TR_b", 200)]);
        assert_eq!(unknown, 1);
        assert_eq!(a.load(Ordering::Relaxed), 20);
        assert_eq!(b.load(Ordering::Relaxed), 127, "clamped to silence");
        // The same track again: the same cell (a republish keeps its level).
        let a2 = r.track(&pa, &TrackId("TR_a".into()));
        assert!(Arc::ptr_eq(&a, &a2));
        // Unlisted tracks keep their last level (their audio does not cross meanwhile).
        assert_eq!(r.apply(&[]), 0);
        assert_eq!(a.load(Ordering::Relaxed), 20);
        r.forget(&pa);
        assert_eq!(r.len(), 1);
        assert_eq!(r.apply(&[lv("TR_a", 10)]), 1, "forgotten: unknown now");
        assert_eq!(a.load(Ordering::Relaxed), 20);
    }
}
