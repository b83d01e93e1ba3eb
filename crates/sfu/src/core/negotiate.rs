//! Subscriptions and their negotiation: a leg per remote track on each participant's
//! subscriber connection, the server's offers (one outstanding at a time, see
//! [`super::state::OfferState`]), the client's answers, and ICE candidates both ways.

use super::messages::Reject;
use super::state::{Conn, LegNegotiation, OfferState, OutboundStream, SubLeg};
use super::Core;
use crate::conn;
use crate::router::{desired_layer, Leg};
use crate::slab::{ConnKey, TrackKey};
use rakor_proto::{
    ErrorCode, IceCandidate, ParticipantId, PeerConnectionKind, ServerMessage, SubscribedTrack,
    TrackKind,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::time::Instant;

/// Remote ICE candidates one connection accepts; more are refused (each costs the ICE agent
/// a candidate pair to keep).
pub(crate) const MAX_REMOTE_CANDIDATES: usize = 32;

impl LegNegotiation {
    /// The offer this leg was in may never have reached the client (its signalling was
    /// replaced): it goes into the next offer again.
    pub fn offer_lost(&mut self) {
        if *self == LegNegotiation::Offered {
            *self = LegNegotiation::New;
        }
    }
}

impl Core {
    /// A new server-side connection for `owner` (not yet negotiated).
    pub(crate) fn new_conn(
        &mut self,
        owner: &ParticipantId,
        kind: PeerConnectionKind,
        now: Instant,
    ) -> Result<ConnKey, Reject> {
        let (mut ufrag, pwd) = conn::ice_credentials();
        // The owning worker's tag: a stream on the shared HTTPS port finds this worker by it.
        crate::workers::tag_ufrag(&mut ufrag, self.cfg.worker_index);
        let timeouts = crate::liveness::IceTimeouts::consent(self.cfg.dead_peer_timeout);
        let estimate = (kind == PeerConnectionKind::Subscriber && self.cfg.bandwidth_estimation)
            .then(|| std::sync::Arc::new(crate::bwe::EstimateCell::default()));
        let send_only = kind == PeerConnectionKind::Subscriber;
        let pc =
            conn::build(now, &ufrag, &pwd, timeouts, estimate.clone(), send_only).map_err(|e| {
                Reject::new(
                    ErrorCode::Internal,
                    format!("cannot create a peer connection: {e}"),
                )
            })?;
        Ok(self.insert_conn(Conn {
            pc,
            ufrag,
            owner: owner.clone(),
            kind,
            deadline: None,
            work: Default::default(),
            connected: false,
            heard_at: now,
            inbound: Vec::new(),
            outbound: Vec::new(),
            estimate,
            alloc: crate::bwe::Allocator::new(crate::bwe::BweConfig::default()),
            remote_candidates: 0,
            suppressed_mids: Vec::new(),
        }))
    }

    /// Add our host candidates (and end-of-candidates) to a connection, before its first
    /// offer/answer is created so that the SDP carries them.
    fn add_local_candidates(&mut self, ci: ConnKey) {
        let cands = self.host_candidates();
        let Some(c) = self.conns.get_mut(ci) else {
            return;
        };
        for cand in cands {
            if let Err(e) = c.pc.add_local_candidate(cand) {
                tracing::warn!("add_local_candidate: {e}");
            }
        }
        let _ = c.pc.add_local_candidate(RTCIceCandidateInit::default());
    }

    /// Trickle our candidates too, after the SDP message, for clients that expect trickle.
    pub(crate) fn trickle_local_candidates(&self, owner: &ParticipantId, kind: PeerConnectionKind) {
        let cands = self.host_candidates();
        for cand in cands
            .into_iter()
            .chain(std::iter::once(RTCIceCandidateInit::default()))
        {
            self.send(
                owner,
                ServerMessage::Candidate {
                    pc: kind,
                    candidate: IceCandidate {
                        candidate: cand.candidate,
                        sdp_mid: Some("0".into()),
                        sdp_mline_index: Some(0),
                        username_fragment: None,
                    },
                },
            );
        }
    }

    /// Subscribe `pid` to every track published by the others in its room.
    pub(crate) fn subscribe_to_room(&mut self, pid: &ParticipantId, now: Instant) {
        let Some(room) = self.participants.get(pid).map(|p| p.room.clone()) else {
            return;
        };
        let existing = self
            .tracks
            .keys_where(|t| t.owner != *pid && t.room == room);
        for ti in existing {
            if let Err(Reject(code, msg)) = self.subscribe(pid, ti, now) {
                tracing::warn!(%code, track = %ti, "subscribe failed: {msg}");
            }
        }
    }

    /// Subscribe `sub` to track `ti` as a participant joining or a track being published
    /// does: a leg, renegotiation following — except a video track for a participant with
    /// video on demand, which gets its leg only when asked ([`Core::subscribe_on_demand`]).
    pub(crate) fn subscribe(
        &mut self,
        sub: &ParticipantId,
        ti: TrackKey,
        now: Instant,
    ) -> Result<(), Reject> {
        let on_demand = self
            .participants
            .get(sub)
            .is_some_and(|p| p.video_on_demand);
        if on_demand
            && self
                .tracks
                .get(ti)
                .is_some_and(|t| t.kind == TrackKind::Video)
        {
            // Nothing held for it; a publisher nobody asks may pause it.
            self.update_publisher_pause(ti);
            return Ok(());
        }
        self.add_leg(sub, ti, false, now)
    }

    /// Video on demand: the client asked for video track `ti` — a leg on its subscriber
    /// connection, on a recycled m-line (one whose track was removed) when there is one.
    pub(crate) fn subscribe_on_demand(
        &mut self,
        sub: &ParticipantId,
        ti: TrackKey,
        now: Instant,
    ) -> Result<(), Reject> {
        self.add_leg(sub, ti, true, now)
    }

    /// Add a leg for track `ti` on `sub`'s subscriber connection; renegotiation follows.
    fn add_leg(
        &mut self,
        sub: &ParticipantId,
        ti: TrackKey,
        on_demand: bool,
        now: Instant,
    ) -> Result<(), Reject> {
        let Some(track) = self.tracks.get(ti) else {
            return Ok(());
        };
        let (owner, track_id, kind, codec) = (
            track.owner.clone(),
            track.id.clone(),
            track.kind,
            track.codec,
        );
        let ci = match self.participants.get(sub).and_then(|p| p.sub_conn) {
            Some(ci) => ci,
            None => {
                let ci = self.new_conn(sub, PeerConnectionKind::Subscriber, now)?;
                if let Some(p) = self.participants.get_mut(sub) {
                    p.sub_conn = Some(ci);
                }
                ci
            }
        };
        let ssrc = loop {
            let s: u32 = rand::random();
            if s != 0
                && !self
                    .conns
                    .get(ci)
                    .is_some_and(|c| c.outbound.iter().any(|o| o.ssrc == s))
            {
                break s;
            }
        };
        let codec_params = conn::codec_params(codec)
            .ok_or_else(|| Reject::new(ErrorCode::Internal, "codec without parameters"))?;
        let rtc_kind = if kind == TrackKind::Audio {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let mst = MediaStreamTrack::new(
            owner.0.clone(),
            track_id.0.clone(),
            track_id.0.clone(),
            rtc_kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec_params,
                ..Default::default()
            }],
        );
        let Some(c) = self.conns.get_mut(ci) else {
            return Err(Reject::new(
                ErrorCode::Internal,
                "subscriber connection vanished",
            ));
        };
        // A new sendonly transceiver per subscribed track: m-lines of removed tracks are left
        // inactive, never recycled for another track (clients map mids to tracks once). A
        // client with video on demand was told that mids are reused (each offer's `tracks`
        // says what a mid carries now): `add_track` takes a transceiver of the same kind
        // whose sender was removed, so its SDP does not grow with every video shown.
        let sender_id = if on_demand {
            let before = c.pc.get_transceivers().count();
            let sid = c.pc.add_track(mst).ok();
            // None to recycle: `add_track` made a new (sendrecv) transceiver; ours only send.
            if c.pc.get_transceivers().count() > before {
                if let Some(mut t) = c.pc.rtp_transceiver(before) {
                    t.set_direction(RTCRtpTransceiverDirection::Sendonly);
                }
            }
            sid
        } else {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![owner.0.clone()],
                send_encodings: vec![],
            };
            c.pc.add_transceiver_from_track(mst, Some(init))
                .ok()
                .and_then(|tid| c.pc.rtp_transceiver(tid).and_then(|t| t.sender()))
        }
        .ok_or_else(|| {
            Reject::new(
                ErrorCode::Internal,
                "cannot add the track to the subscriber connection",
            )
        })?;
        c.outbound.push(OutboundStream { ssrc, track: ti });
        if let Some(t) = self.tracks.get_mut(ti) {
            let leg = if t.is_simulcast() {
                Leg::simulcast(ci, ssrc, desired_layer(0, t.layers.len()))
            } else {
                Leg::new(ci, ssrc)
            };
            t.route.legs.push(leg);
        }
        self.update_publisher_pause(ti);
        if let Some(p) = self.participants.get_mut(sub) {
            p.legs.push(SubLeg {
                track: ti,
                sender_id,
                ssrc,
                negotiation: LegNegotiation::New,
                on_demand,
                hidden_since: None,
            });
            p.offer.legs_changed();
        }
        Ok(())
    }

    /// Remove `sub`'s leg of track `ti`.
    pub(crate) fn unsubscribe(&mut self, sub: &ParticipantId, ti: TrackKey) {
        let Some(p) = self.participants.get_mut(sub) else {
            return;
        };
        let Some(i) = p.legs.iter().position(|l| l.track == ti) else {
            return;
        };
        let leg = p.legs.swap_remove(i);
        p.offer.legs_changed();
        let Some(ci) = p.sub_conn else { return };
        if let Some(c) = self.conns.get_mut(ci) {
            if let Err(e) = c.pc.remove_track(leg.sender_id) {
                tracing::debug!("remove_track: {e}");
            }
            c.outbound.retain(|o| o.ssrc != leg.ssrc);
            c.work.mark_dirty(ci, &mut self.inputs);
        }
        if let Some(t) = self.tracks.get_mut(ti) {
            t.route.remove_leg(ci);
        }
        self.update_publisher_pause(ti);
    }

    /// Send a subscriber offer to everyone who needs one and has none outstanding.
    pub(crate) fn renegotiate_pending(&mut self, now: Instant) {
        let due: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.offer.due(now) && p.sub_conn.is_some())
            .map(|p| p.id.clone())
            .collect();
        for pid in due {
            if let Err(Reject(code, msg)) = self.send_subscriber_offer(&pid, now) {
                tracing::warn!(participant = %pid, %code, "subscriber offer failed: {msg}");
                self.send(&pid, ServerMessage::error(code, msg));
            }
        }
    }

    fn send_subscriber_offer(&mut self, pid: &ParticipantId, now: Instant) -> Result<(), Reject> {
        let Some(p) = self.participants.get_mut(pid) else {
            return Ok(());
        };
        let Some(ci) = p.sub_conn else { return Ok(()) };
        p.offer = OfferState::Sent { again: false };
        let first = self
            .conns
            .get(ci)
            .is_some_and(|c| c.pc.local_description().is_none());
        if first {
            self.add_local_candidates(ci);
        }
        let Some(c) = self.conns.get_mut(ci) else {
            return Ok(());
        };
        let sdp = (|| {
            let offer = c.pc.create_offer(None)?;
            c.pc.set_local_description(now, offer)?;
            Ok::<_, rtc::shared::error::Error>(c.pc.local_description().map(|d| d.sdp))
        })()
        .map_err(|e| {
            Reject::new(
                ErrorCode::Internal,
                format!("cannot create the subscriber offer: {e}"),
            )
        })?
        .ok_or_else(|| Reject::new(ErrorCode::Internal, "no local description"))?;
        c.work.mark_dirty(ci, &mut self.inputs);
        // mid of each leg, by its sender.
        let mut mids: Vec<(RTCRtpSenderId, String)> = Vec::new();
        let ids: Vec<_> = c.pc.get_transceivers().collect();
        for tid in ids {
            if let Some(t) = c.pc.rtp_transceiver(tid) {
                if let (Some(s), Some(m)) = (t.sender(), t.mid().clone()) {
                    mids.push((s, m));
                }
            }
        }
        let mut tracks: Vec<SubscribedTrack> = Vec::new();
        if let Some(p) = self.participants.get_mut(pid) {
            for l in &mut p.legs {
                let offered = self.tracks.get(l.track).and_then(|t| {
                    let mid = mids.iter().find(|(s, _)| *s == l.sender_id)?.1.clone();
                    Some(SubscribedTrack {
                        mid,
                        track_id: t.id.clone(),
                        participant_id: t.owner.clone(),
                        kind: t.kind,
                        source: Some(t.source),
                    })
                });
                match offered {
                    Some(t) => {
                        tracks.push(t);
                        if l.negotiation == LegNegotiation::New {
                            l.negotiation = LegNegotiation::Offered;
                        }
                    }
                    None => l.negotiation.offer_lost(),
                }
            }
        }
        self.send(
            pid,
            ServerMessage::Offer {
                pc: PeerConnectionKind::Subscriber,
                sdp,
                tracks,
            },
        );
        if first {
            self.trickle_local_candidates(pid, PeerConnectionKind::Subscriber);
        }
        Ok(())
    }

    /// The client's answer to our subscriber offer: the offered legs are negotiated (and start
    /// if the connection is up); the next offer follows if the legs changed meanwhile.
    pub(crate) fn subscriber_answer(
        &mut self,
        pid: &ParticipantId,
        sdp: String,
        now: Instant,
    ) -> Result<(), Reject> {
        let p = self.participants.get(pid).ok_or_else(Reject::not_joined)?;
        let (Some(ci), true) = (p.sub_conn, p.offer.outstanding()) else {
            return Err(Reject::new(
                ErrorCode::InvalidState,
                "no subscriber offer is waiting for an answer",
            ));
        };
        if !sdp.starts_with("v=0") {
            return Err(Reject::new(
                ErrorCode::InvalidSdp,
                "SDP must start with \"v=0\"",
            ));
        }
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| Reject::new(ErrorCode::InvalidSdp, format!("invalid answer: {e}")))?;
        let Some(c) = self.conns.get_mut(ci) else {
            return Ok(());
        };
        c.pc.set_remote_description(now, answer).map_err(|e| {
            Reject::new(
                ErrorCode::InvalidSdp,
                format!("cannot apply the answer: {e}"),
            )
        })?;
        c.work.mark_dirty(ci, &mut self.inputs);
        let connected = c.connected;
        // Payload types negotiated per leg.
        let senders: Vec<(RTCRtpSenderId, TrackKey)> = self
            .participants
            .get(pid)
            .map(|p| p.legs.iter().map(|l| (l.sender_id, l.track)).collect())
            .unwrap_or_default();
        for (sid, ti) in senders {
            let pts = self.conns.get_mut(ci).and_then(|c| {
                c.pc.rtp_sender(sid)
                    .map(|mut s| conn::payload_types(&s.get_parameters().rtp_parameters.codecs))
            });
            if let (Some(pts), Some(t)) = (pts, self.tracks.get_mut(ti)) {
                if let Some(leg) = t.route.leg_mut(ci) {
                    leg.pts = pts;
                }
            }
        }
        if let Some(p) = self.participants.get_mut(pid) {
            let legs = p.legs.len();
            p.offer.answered(now, legs);
            for l in &mut p.legs {
                if l.negotiation == LegNegotiation::Offered {
                    l.negotiation = LegNegotiation::Negotiated;
                }
            }
        }
        if connected {
            self.activate_subscriber_legs(ci, now);
        }
        self.renegotiate_pending(now);
        Ok(())
    }

    /// Negotiated legs on a connected subscriber connection start receiving, with a keyframe.
    pub(crate) fn activate_subscriber_legs(&mut self, ci: ConnKey, now: Instant) {
        let Some(owner) = self.conns.get(ci).map(|c| c.owner.clone()) else {
            return;
        };
        let legs: Vec<TrackKey> = self
            .participants
            .get(&owner)
            .map(|p| {
                p.legs
                    .iter()
                    .filter(|l| l.negotiation == LegNegotiation::Negotiated)
                    .map(|l| l.track)
                    .collect()
            })
            .unwrap_or_default();
        for ti in legs {
            let newly = self
                .tracks
                .get_mut(ti)
                .and_then(|t| t.route.leg_mut(ci))
                .is_some_and(|l| {
                    let was = l.active;
                    l.active = true;
                    !was
                });
            if newly {
                self.request_keyframe(ti, now);
            }
        }
    }

    /// A client's ICE candidate for one of its connections.
    pub(crate) fn remote_candidate(
        &mut self,
        pid: &ParticipantId,
        pc: PeerConnectionKind,
        cand: IceCandidate,
    ) -> Result<(), Reject> {
        let p = self.participants.get(pid).ok_or_else(Reject::not_joined)?;
        let ci = match pc {
            PeerConnectionKind::Publisher => p.pub_conn,
            PeerConnectionKind::Subscriber => p.sub_conn,
        }
        .ok_or_else(|| {
            Reject::new(
                ErrorCode::InvalidState,
                "no such peer connection yet; send the offer first",
            )
        })?;
        if cand.candidate.is_empty() {
            return Ok(()); // end-of-candidates
        }
        let s = cand.candidate.strip_prefix("a=").unwrap_or(&cand.candidate);
        if !s.starts_with("candidate:") || s.len() > 1024 {
            return Err(Reject::new(
                ErrorCode::InvalidCandidate,
                "a candidate must start with \"candidate:\"",
            ));
        }
        let Some(c) = self.conns.get_mut(ci) else {
            return Ok(());
        };
        if c.pc.remote_description().is_none() {
            return Err(Reject::new(
                ErrorCode::InvalidState,
                "candidate before the description it belongs to",
            ));
        }
        if c.remote_candidates >= MAX_REMOTE_CANDIDATES {
            return Err(Reject::new(
                ErrorCode::LimitExceeded,
                format!("at most {MAX_REMOTE_CANDIDATES} candidates per connection"),
            ));
        }
        c.pc.add_remote_candidate(RTCIceCandidateInit {
            candidate: cand.candidate,
            sdp_mid: cand.sdp_mid,
            sdp_mline_index: cand.sdp_mline_index,
            username_fragment: cand.username_fragment,
            ..Default::default()
        })
        .map_err(|e| {
            Reject::new(
                ErrorCode::InvalidCandidate,
                format!("cannot apply candidate: {e}"),
            )
        })?;
        c.remote_candidates += 1;
        c.work.mark_dirty(ci, &mut self.inputs);
        Ok(())
    }
}
