//! Bandwidth per subscriber: every 100 ms each subscriber connection's video legs get what
//! its estimate allows ([`crate::bwe::Allocator`]) — a cap on the simulcast layer, or no video
//! at all for the least important legs. Audio is counted first and never cut; the room's
//! presentation (a screen share) comes right after it, at its top layer when that fits.

use super::state::tile_layer;
use super::Core;
use crate::bwe::{default_layer_cost, Level, VideoDemand};
use crate::slab::{ConnKey, TrackKey};
use rakor_proto::TrackKind;
use std::collections::HashMap;
use std::time::Instant;

/// One video leg's demand on its subscriber's bandwidth.
struct LegDemand {
    track: TrackKey,
    demand: VideoDemand,
    /// The allotment it has now (`None`: never allocated).
    current: Option<Level>,
}

/// What one subscriber connection receives.
#[derive(Default)]
struct SubscriberLoad {
    audio_bps: f64,
    video: Vec<LegDemand>,
}

/// An audio track's cost before its rate has been measured.
const AUDIO_DEFAULT_BPS: f64 = 50_000.0;

impl Core {
    /// Close the bitrate windows, then allot each subscriber connection's video legs.
    pub(crate) fn update_bandwidth(&mut self, now: Instant) {
        for (_, t) in self.tracks.iter_mut() {
            t.rate.tick(now);
            t.layers.iter_mut().for_each(|l| l.rate.tick(now));
        }
        for (ci, load) in self.subscriber_loads() {
            if load.video.is_empty() {
                continue;
            }
            let Some(c) = self.conns.get_mut(ci) else {
                continue;
            };
            let estimate = c.estimate.as_ref().and_then(|e| e.estimate());
            let may_probe = c.estimate.as_ref().is_some_and(|e| e.may_probe());
            let demands: Vec<VideoDemand> = load.video.iter().map(|l| l.demand.clone()).collect();
            let current: Vec<Option<Level>> = load.video.iter().map(|l| l.current).collect();
            let levels = c
                .alloc
                .step(now, estimate, load.audio_bps, &demands, &current, may_probe);
            if c.alloc.take_probe_start() {
                if let Some(e) = &c.estimate {
                    e.start_probe();
                }
                tracing::debug!(conn = %ci, ?estimate, "bandwidth probe");
            }
            for (leg, level) in load.video.into_iter().zip(levels) {
                if leg.current == Some(level) {
                    continue;
                }
                let simulcast = leg.demand.layer_costs.len() > 1;
                self.apply_allotment(leg.track, ci, level, simulcast, estimate, now);
            }
        }
    }

    /// One pass over the tracks: per subscriber connection with an estimate, the audio it
    /// receives and the demand of each shown video leg.
    fn subscriber_loads(&self) -> HashMap<ConnKey, SubscriberLoad> {
        let mut subs: HashMap<ConnKey, SubscriberLoad> = HashMap::new();
        for (ti, t) in self.tracks.iter() {
            let high_priority = t.host
                || self
                    .rooms
                    .get(&t.room)
                    .is_some_and(|r| r.spotlight.as_ref() == Some(&t.owner));
            let presentation = self
                .rooms
                .get(&t.room)
                .is_some_and(|r| r.presentation == Some(ti));
            for leg in t.route.legs.iter().filter(|l| l.active) {
                if self
                    .conns
                    .get(leg.conn)
                    .is_none_or(|c| c.estimate.is_none())
                {
                    continue;
                }
                let sub = subs.entry(leg.conn).or_default();
                match t.kind {
                    TrackKind::Audio => {
                        if t.speaker_forward && !t.moderator_muted {
                            sub.audio_bps += if t.rate.bps() > 0.0 {
                                t.rate.bps()
                            } else {
                                AUDIO_DEFAULT_BPS
                            };
                        }
                    }
                    TrackKind::Video if !leg.paused => {
                        let layer_costs: Vec<f64> = if t.is_simulcast() {
                            t.layers
                                .iter()
                                .enumerate()
                                .map(|(i, l)| match l.rate.bps() {
                                    r if r > 0.0 => r,
                                    _ => default_layer_cost(i),
                                })
                                .collect()
                        } else {
                            vec![t.rate.bps()]
                        };
                        let n = layer_costs.len();
                        let desired = if n > 1 {
                            usize::from(tile_layer(t.source, leg.size.1, n))
                        } else {
                            0
                        };
                        sub.video.push(LegDemand {
                            track: ti,
                            demand: VideoDemand {
                                presentation,
                                high_priority,
                                area: u64::from(leg.size.0) * u64::from(leg.size.1),
                                layer_costs,
                                desired,
                            },
                            current: leg.allot,
                        });
                    }
                    TrackKind::Video => {}
                }
            }
        }
        subs
    }

    /// Apply one leg's allotment: no video (level 0), or video up to layer `level − 1`.
    fn apply_allotment(
        &mut self,
        ti: TrackKey,
        ci: ConnKey,
        level: Level,
        simulcast: bool,
        estimate: Option<f64>,
        now: Instant,
    ) {
        let Some(leg) = self.tracks.get_mut(ti).and_then(|t| t.route.leg_mut(ci)) else {
            return;
        };
        let before = leg.allot.replace(level);
        let resumed = leg.set_bw_paused(level == 0);
        if level > 0 {
            leg.cap = u8::try_from(level - 1).unwrap_or(u8::MAX);
        }
        if before.is_some() {
            tracing::debug!(
                track = %ti,
                conn = %ci,
                ?before,
                level,
                ?estimate,
                "bandwidth allotment"
            );
        }
        let waiting = simulcast && level > 0 && self.retarget_leg(ti, Some(ci), now);
        if resumed || waiting {
            self.request_keyframe(ti, now);
        }
        if simulcast {
            self.update_publisher_layers(ti);
        }
    }
}
