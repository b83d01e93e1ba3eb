//! Audio levels across cascade nodes (issue 17): a relay leg's subscriber (role `relay`) is
//! told, every speaker update, the smoothed level of each audio track this node forwards
//! (`track_levels`). The relay's republisher on the far node writes it into the relayed
//! packets' RFC 6464 extension (`rakor_client::relay_levels`), so the far node's
//! loudest-speaker selection measures relayed sites exactly like its own.
//!
//! Only forwarded tracks are listed: the audio of a site that is not among this node's
//! loudest does not cross the leg, so its level would be of no use there. A track that
//! speaks here is reported at most at the speech threshold, so it speaks on the far node too
//! (its mean over the window may lie above the threshold while single packets do not).
//! Off the per-packet path: one message per room and change (every 100 ms at most), and a
//! refresh every [`REFRESH`] so that a relay that joins, or a republisher whose track
//! appears later, learns steady levels too.

use super::Core;
use rakor_proto::{Role, ServerMessage, TrackLevel};
use std::time::{Duration, Instant};

/// Unchanged levels are sent again this often while some track is listed.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// What a room's relay subscribers were last told.
#[derive(Debug, Default)]
pub(crate) struct RelayLevels {
    last: Vec<TrackLevel>,
    sent_at: Option<Instant>,
}

impl RelayLevels {
    /// Whether `levels` should be sent at `now`: they differ from the last ones (an empty
    /// list after a non-empty one included), or they are listed and [`REFRESH`] has passed.
    pub(crate) fn due(&self, levels: &[TrackLevel], now: Instant) -> bool {
        if levels != self.last.as_slice() {
            return true;
        }
        !levels.is_empty()
            && self
                .sent_at
                .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH)
    }

    pub(crate) fn sent(&mut self, levels: Vec<TrackLevel>, now: Instant) {
        self.last = levels;
        self.sent_at = Some(now);
    }
}

/// The RFC 6464 level (-dBov, 0..=127) a far node should measure for a track measured here at
/// `smoothed`: rounded and clamped (not a number: silence); a speaking track at most
/// `threshold`.
pub(crate) fn reported_level(smoothed: f32, speaking: bool, threshold: u8) -> u8 {
    let level = if smoothed.is_nan() {
        127
    } else {
        // Lossless: clamped into 0..=127 first.
        smoothed.round().clamp(0.0, 127.0) as u8
    };
    if speaking {
        level.min(threshold)
    } else {
        level
    }
}

impl Core {
    /// Every 100 ms, after [`Core::update_speakers`]: tell each room's relay subscribers the
    /// levels of the audio tracks the room forwards now, when they changed (or to refresh).
    /// Rooms without a relay subscriber cost one scan of their participant list.
    pub(crate) fn update_relay_levels(&mut self, now: Instant) {
        let Core {
            rooms,
            participants,
            tracks,
            ..
        } = self;
        for room in rooms.values_mut() {
            let is_relay = |id: &&rakor_proto::ParticipantId| {
                participants.get(*id).is_some_and(|p| p.role == Role::Relay)
            };
            if !room.participants.iter().any(|id| is_relay(&id)) {
                continue;
            }
            let threshold = room.speakers.config().speech_threshold;
            let mut levels = Vec::new();
            for sel in [&room.speakers, &room.host_speakers] {
                for &ti in sel.active() {
                    let Some(t) = tracks.get(ti) else { continue };
                    if t.moderator_muted || !t.speaker_forward || !t.speaker_enrolled {
                        continue; // its audio does not cross the leg
                    }
                    let Some(level) = sel.level(ti) else { continue };
                    let speaking = sel.speaking().contains(&ti);
                    levels.push(TrackLevel {
                        track_id: t.id.clone(),
                        level: reported_level(level, speaking, threshold),
                    });
                }
            }
            if !room.relay_levels.due(&levels, now) {
                continue;
            }
            let msg = ServerMessage::TrackLevels {
                levels: levels.clone(),
            };
            for id in room.participants.iter().filter(is_relay) {
                if let Some(p) = participants.get(id) {
                    let _ = p.events.send(msg.clone());
                }
            }
            room.relay_levels.sent(levels, now);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rakor_proto::TrackId;

    #[test]
    fn reported_levels() {
        // (smoothed, speaking, threshold 50) → level
        let cases = [
            (20.4, false, 20),
            (20.6, true, 21),
            (72.0, true, 50), // speaking here: speaks there too
            (72.0, false, 72),
            (-3.0, false, 0),
            (300.0, false, 127),
            (f32::NAN, false, 127),
            (f32::INFINITY, false, 127),
            (f32::NEG_INFINITY, true, 0),
        ];
        for (smoothed, speaking, want) in cases {
            assert_eq!(
                reported_level(smoothed, speaking, 50),
                want,
                "{smoothed} {speaking}"
            );
        }
    }

    fn lv(track: &str, level: u8) -> TrackLevel {
        TrackLevel {
            track_id: TrackId(track.into()),
            level,
        }
    }

    #[test]
    fn sent_on_change_and_refreshed_every_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = RelayLevels::default();
        assert!(!r.due(&[], ms(0)), "nothing listed, nothing said yet");
        let a = vec![lv("TR_a", 20)];
        assert!(r.due(&a, ms(0)));
        r.sent(a.clone(), ms(0));
        assert!(!r.due(&a, ms(100)), "unchanged");
        assert!(!r.due(&a, ms(999)));
        assert!(r.due(&a, ms(1000)), "refresh");
        assert!(r.due(&[lv("TR_a", 21)], ms(100)), "a level changed");
        assert!(
            r.due(&[lv("TR_a", 20), lv("TR_b", 40)], ms(100)),
            "a track more"
        );
        assert!(r.due(&[], ms(100)), "nothing forwarded any more: said once");
        r.sent(Vec::new(), ms(100));
        assert!(!r.due(&[], ms(5000)), "an empty list is not refreshed");
    }
}
