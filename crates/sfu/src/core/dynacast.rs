//! What each subscriber shows decides what flows: a tile's size picks the simulcast layer of
//! its leg, a hidden tile pauses its leg, and the publisher is told to pause a video nobody
//! shows (`publisher_pause`) or to send only the simulcast layers someone needs
//! (`publisher_layers`) — dynacast.

use super::messages::Reject;
use super::state::{tile_layer, VIDEO_GRACE};
use super::Core;
use crate::router::choose_layer;
use crate::slab::{ConnKey, TrackKey};
use rakor_proto::{ErrorCode, ParticipantId, ServerMessage, TrackId, TrackKind};
use std::time::Instant;

impl Core {
    /// A subscriber shows (or hides) a remote video track: pause or resume its leg, then let
    /// the publisher pause the track if nobody shows it (dynacast).
    pub(crate) fn track_settings(
        &mut self,
        pid: &ParticipantId,
        track_id: &TrackId,
        visible: bool,
        size: (u32, u32),
        now: Instant,
    ) -> Result<(), Reject> {
        let room = self.participants.get(pid).map(|p| p.room.clone());
        let found = self
            .tracks
            .iter()
            .find(|(_, t)| t.id == *track_id && Some(&t.room) == room.as_ref())
            .map(|(i, t)| (i, t.kind));
        let Some((ti, kind)) = found else {
            return Err(Reject::new(
                ErrorCode::UnknownTrack,
                format!("no track {track_id} in this room"),
            ));
        };
        if kind != TrackKind::Video {
            return Err(Reject::new(
                ErrorCode::BadRequest,
                "track_settings applies to video tracks",
            ));
        }
        if self.on_demand_leg(pid, ti, visible, now)? {
            return Ok(()); // hiding a video that was never asked for: nothing to do
        }
        let sub_conn = self.participants.get(pid).and_then(|p| p.sub_conn);
        let Some(leg) = sub_conn.and_then(|ci| self.tracks.get_mut(ti)?.route.leg_mut(ci)) else {
            return Err(Reject::new(
                ErrorCode::UnknownTrack,
                format!("track {track_id} is not subscribed on this connection yet"),
            ));
        };
        leg.size = size;
        if self.retarget_leg(ti, sub_conn, now) {
            self.request_keyframe(ti, now);
        }
        let Some(leg) = sub_conn.and_then(|ci| self.tracks.get_mut(ti)?.route.leg_mut(ci)) else {
            return Ok(());
        };
        if leg.set_paused(!visible) {
            tracing::debug!(track = %track_id, visible, "subscriber leg paused/resumed");
            self.update_publisher_pause(ti);
            if visible {
                self.request_keyframe(ti, now);
            }
        }
        Ok(())
    }

    /// Video on demand: add the leg of a video the client asks for and keep when it was
    /// hidden. True: nothing more to do (a hide of a video without leg). Not for a client
    /// without video on demand (false, untouched).
    fn on_demand_leg(
        &mut self,
        pid: &ParticipantId,
        ti: TrackKey,
        visible: bool,
        now: Instant,
    ) -> Result<bool, Reject> {
        let Some(p) = self.participants.get_mut(pid) else {
            return Ok(false);
        };
        if !p.video_on_demand {
            return Ok(false);
        }
        if let Some(l) = p.legs.iter_mut().find(|l| l.track == ti) {
            if l.on_demand {
                l.hidden_since = if visible {
                    None
                } else {
                    l.hidden_since.or(Some(now))
                };
            }
            return Ok(false);
        }
        if !visible {
            return Ok(true);
        }
        if self.tracks.get(ti).is_some_and(|t| t.owner == *pid) {
            return Err(Reject::new(
                ErrorCode::BadRequest,
                "that is your own track; it is not sent back to you",
            ));
        }
        let asked = p.legs.iter().filter(|l| l.on_demand).count();
        let max = self.cfg.max_videos_on_demand;
        if asked >= max {
            return Err(Reject::new(
                ErrorCode::LimitExceeded,
                format!(
                    "at most {max} videos asked for at a time (hide one; it is removed {} ms later)",
                    rakor_proto::VIDEO_ON_DEMAND_GRACE_MS
                ),
            ));
        }
        self.subscribe_on_demand(pid, ti, now)?;
        self.renegotiate_pending(now);
        Ok(false)
    }

    /// Video on demand: remove the legs hidden for longer than [`VIDEO_GRACE`] (their
    /// m-lines go inactive in the next offer and are reused for the next video asked for).
    pub(crate) fn expire_hidden_legs(&mut self, now: Instant) {
        let mut expired: Vec<(ParticipantId, TrackKey)> = Vec::new();
        for p in self.participants.values().filter(|p| p.video_on_demand) {
            for l in &p.legs {
                let over = l
                    .hidden_since
                    .is_some_and(|h| now.saturating_duration_since(h) >= VIDEO_GRACE);
                if l.on_demand && over {
                    expired.push((p.id.clone(), l.track));
                }
            }
        }
        for (pid, ti) in expired {
            tracing::debug!(participant = %pid, track = %ti, "hidden video removed (on demand)");
            self.unsubscribe(&pid, ti);
        }
    }

    /// Simulcast: set a leg's target layer (or every leg's, `conn` None) from its tile size,
    /// its bandwidth cap and the layers that are live. True when a leg now waits for a
    /// keyframe of another layer.
    pub(crate) fn retarget_leg(
        &mut self,
        ti: TrackKey,
        conn: Option<ConnKey>,
        now: Instant,
    ) -> bool {
        let Some(t) = self.tracks.get_mut(ti) else {
            return false;
        };
        if !t.is_simulcast() {
            return false;
        }
        let live = t.live_layers(now);
        let n = t.layers.len();
        let source = t.source;
        let mut waiting = false;
        for leg in t
            .route
            .legs
            .iter_mut()
            .filter(|l| conn.is_none_or(|c| l.conn == c))
        {
            let desired = tile_layer(source, leg.size.1, n).min(leg.cap);
            leg.want = desired;
            if let Some(target) = choose_layer(desired, &live) {
                leg.target = target;
            }
            waiting |= leg.flowing() && leg.layer != Some(leg.target);
        }
        waiting
    }

    /// Every 100 ms: re-choose simulcast layers (a layer may have stopped or started) and ask
    /// for keyframes where a switch waits.
    pub(crate) fn update_layers(&mut self, now: Instant) {
        let simulcast = self.tracks.keys_where(|t| t.is_simulcast());
        for ti in simulcast {
            if self.retarget_leg(ti, None, now) {
                self.request_keyframe(ti, now);
            }
            self.update_publisher_layers(ti);
        }
    }

    /// Dynacast per layer: tell the publisher which simulcast layers anyone needs — each shown
    /// leg's wanted layer (by its tile, even if not sent now), its target and, while switching,
    /// its current one. No shown leg: all layers (a track nobody shows is paused as a whole).
    pub(crate) fn update_publisher_layers(&mut self, ti: TrackKey) {
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        let n = t.layers.len();
        let source = t.source;
        let mut needed = vec![false; n];
        let mut any = false;
        for leg in t.route.legs.iter().filter(|l| !l.paused && !l.bw_paused) {
            any = true;
            let want = [
                Some(tile_layer(source, leg.size.1, n).min(leg.cap)),
                Some(leg.target),
                leg.layer,
            ];
            for l in want.into_iter().flatten() {
                if let Some(slot) = needed.get_mut(usize::from(l)) {
                    *slot = true;
                }
            }
        }
        // A recorded track: the recorder takes the lowest layer, so it is always needed.
        if t.rec.is_some() {
            if let Some(slot) = needed.get_mut(0) {
                *slot = true;
            }
        }
        let needed: Vec<u8> = (0..n)
            .filter(|&i| !any || needed.get(i).copied().unwrap_or(false))
            .filter_map(|i| u8::try_from(i).ok())
            .collect();
        let all = needed.len() == n;
        let unchanged = match &t.sent_layers {
            None => all,
            Some(prev) => *prev == needed,
        };
        if unchanged {
            return;
        }
        let rids: Vec<String> = needed
            .iter()
            .filter_map(|&i| t.layers.get(usize::from(i)).map(|l| l.rid.clone()))
            .collect();
        t.sent_layers = Some(needed);
        let (owner, track_id) = (t.owner.clone(), t.id.clone());
        tracing::debug!(track = %track_id, ?rids, "publisher layers");
        self.send(&owner, ServerMessage::PublisherLayers { track_id, rids });
    }

    /// Dynacast: a video track that has subscribers, all of which have paused it, is paused at
    /// the publisher (`publisher_pause`), and resumed as soon as one shows it or a new one
    /// subscribes. A track without subscribers is left alone (joins would wait on it).
    pub(crate) fn update_publisher_pause(&mut self, ti: TrackKey) {
        // Someone in the room with video on demand did not ask for it: a track without legs
        // is then wanted by nobody (without such a participant it is left alone).
        let asked_by_none = self.tracks.get(ti).is_some_and(|t| {
            t.route.legs.is_empty()
                && self.rooms.get(&t.room).is_some_and(|r| {
                    r.participants.iter().any(|o| {
                        *o != t.owner && self.participants.get(o).is_some_and(|p| p.video_on_demand)
                    })
                })
        });
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        if t.kind != TrackKind::Video {
            return;
        }
        // A recorded track is never paused: the recorder needs it even if nobody shows it.
        let pause = t.rec.is_none()
            && (asked_by_none
                || (!t.route.legs.is_empty() && t.route.legs.iter().all(|l| l.paused)));
        if pause == t.publisher_paused {
            return;
        }
        t.publisher_paused = pause;
        let (owner, track_id) = (t.owner.clone(), t.id.clone());
        tracing::debug!(track = %track_id, pause, "publisher pause");
        self.send(
            &owner,
            ServerMessage::PublisherPause {
                track_id,
                paused: pause,
            },
        );
    }
}
