//! Dynacast across cascade nodes (issue 17): a video track a relay republished here (its
//! owner's identity starts with [`RELAY_IDENTITY_PREFIX`]) is one layer the relay chose on the
//! node it came from. What this node's subscribers show of it — hidden by all, or the largest
//! tile — is sent to the republisher (`track_demand`), and the relay asks the source node for
//! that (its own `track_settings`), so a leg carries only the simulcast layer the far node
//! needs, and nothing when nobody there shows the track.

use super::Core;
use crate::router::Leg;
use crate::slab::TrackKey;
use rakor_proto::{ServerMessage, TrackKind};

/// Identities of cascade relay participants start with this (`rakor_client::relay`).
pub(crate) const RELAY_IDENTITY_PREFIX: &str = "cascade/";

/// What a relayed track's subscribers here show, merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Demand {
    pub visible: bool,
    /// The largest tile (CSS pixels); (0, 0): a subscriber reports no size (the top layer).
    pub width: u32,
    pub height: u32,
}

/// Merge the legs' settings: `None` without legs (nothing to say: a track nobody subscribes
/// is left alone), hidden when every leg is paused by its subscriber, else the largest tile
/// of the shown legs — unknown (0, 0) if one of them reported no size. A leg paused for lack
/// of bandwidth still counts as shown (its subscriber shows it; the allocator resumes it).
pub(crate) fn merge_demand<'a>(legs: impl IntoIterator<Item = &'a Leg>) -> Option<Demand> {
    let mut any = false;
    let mut shown = false;
    let mut unknown = false;
    let (mut width, mut height) = (0u32, 0u32);
    for leg in legs {
        any = true;
        if leg.paused {
            continue;
        }
        shown = true;
        if leg.size.1 == 0 {
            unknown = true;
        } else {
            width = width.max(leg.size.0);
            height = height.max(leg.size.1);
        }
    }
    if !any {
        return None;
    }
    Some(match (shown, unknown) {
        (false, _) => Demand {
            visible: false,
            width: 0,
            height: 0,
        },
        (true, true) => Demand {
            visible: true,
            width: 0,
            height: 0,
        },
        (true, false) => Demand {
            visible: true,
            width,
            height,
        },
    })
}

/// Whether `identity` is a cascade relay participant's.
pub(crate) fn is_relay_identity(identity: &str) -> bool {
    identity.starts_with(RELAY_IDENTITY_PREFIX)
}

impl Core {
    /// Every 100 ms: tell each relay republisher what this node's subscribers show of its
    /// video tracks, when that changed since the last time.
    pub(crate) fn update_relay_demands(&mut self) {
        let relayed = self
            .tracks
            .keys_where(|t| t.relayed && t.kind == TrackKind::Video);
        for ti in relayed {
            self.update_relay_demand(ti);
        }
    }

    fn update_relay_demand(&mut self, ti: TrackKey) {
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        let Some(demand) = merge_demand(&t.route.legs) else {
            return;
        };
        if t.demand == Some(demand) {
            return;
        }
        t.demand = Some(demand);
        let (owner, track_id) = (t.owner.clone(), t.id.clone());
        tracing::debug!(track = %track_id, ?demand, "relay demand");
        self.send(
            &owner,
            ServerMessage::TrackDemand {
                track_id,
                visible: demand.visible,
                width: demand.width,
                height: demand.height,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::slab::ConnKey;

    fn leg(paused: bool, size: (u32, u32)) -> Leg {
        let mut l = Leg::new(ConnKey(1), 1);
        l.paused = paused;
        l.size = size;
        l
    }

    #[test]
    fn no_legs_say_nothing() {
        assert_eq!(merge_demand(std::iter::empty()), None);
    }

    #[test]
    fn the_largest_shown_tile_wins_and_hidden_legs_do_not_count() {
        let legs = [
            leg(false, (320, 180)),
            leg(true, (1280, 720)),
            leg(false, (640, 360)),
        ];
        assert_eq!(
            merge_demand(&legs),
            Some(Demand {
                visible: true,
                width: 640,
                height: 360
            })
        );
    }

    #[test]
    fn a_shown_leg_without_a_size_asks_for_the_top_layer() {
        let legs = [leg(false, (320, 180)), leg(false, (0, 0))];
        assert_eq!(
            merge_demand(&legs),
            Some(Demand {
                visible: true,
                width: 0,
                height: 0
            })
        );
    }

    #[test]
    fn every_leg_hidden_hides_the_track_upstream() {
        let legs = [leg(true, (320, 180)), leg(true, (0, 0))];
        assert_eq!(
            merge_demand(&legs),
            Some(Demand {
                visible: false,
                width: 0,
                height: 0
            })
        );
    }

    #[test]
    fn relay_identities() {
        assert!(is_relay_identity("cascade/node-a/bupati"));
        assert!(!is_relay_identity("bupati-cascade/x"));
        assert!(!is_relay_identity(""));
    }
}
