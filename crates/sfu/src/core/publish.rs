//! Publishing: a client's offer on its publisher connection becomes our answer; the
//! transceivers it receives on become the room's published tracks (announced, subscribed by
//! everyone else); a track's first RTP teaches us its SSRC (and simulcast layer); unpublishing
//! takes a track out of every subscriber.

use super::messages::Reject;
use super::state::{random_id, InboundStream, Track, TrackLayer};
use super::Core;
use crate::bwe::RateMeter;
use crate::conn;
use crate::keyframe::KeyframeThrottle;
use crate::router::{Codec, PayloadTypes, TrackRoute};
use crate::slab::{ConnKey, TrackKey};
use rakor_proto::{
    ErrorCode, ParticipantId, PeerConnectionKind, PresentationEnd, Role, ServerMessage,
    TrackDeclaration, TrackId, TrackInfo, TrackKind, TrackSource,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use std::time::Instant;

/// A transceiver the publisher connection receives on, as negotiated.
struct ReceivingTrack {
    mid: String,
    receiver: RTCRtpReceiverId,
    kind: TrackKind,
    codec: Codec,
    pts: PayloadTypes,
    audio_level_ext: Option<u8>,
}

fn kind_of(k: RtpCodecKind) -> Option<TrackKind> {
    match k {
        RtpCodecKind::Audio => Some(TrackKind::Audio),
        RtpCodecKind::Video => Some(TrackKind::Video),
        _ => None,
    }
}

impl Core {
    /// Client offer on the publisher connection → answer, then announce new tracks.
    pub(crate) fn publish(
        &mut self,
        pid: &ParticipantId,
        sdp: &str,
        declared: &[TrackDeclaration],
        now: Instant,
    ) -> Result<(), Reject> {
        let p = self.participants.get(pid).ok_or_else(Reject::not_joined)?;
        if !p.role.can_publish() {
            return Err(Reject::new(
                ErrorCode::Forbidden,
                format!("role \"{}\" may not publish", p.role.as_str()),
            ));
        }
        if !sdp.starts_with("v=0") {
            return Err(Reject::new(
                ErrorCode::InvalidSdp,
                "SDP must start with \"v=0\"",
            ));
        }
        let offer = RTCSessionDescription::offer(sdp.to_owned())
            .map_err(|e| Reject::new(ErrorCode::InvalidSdp, format!("invalid offer: {e}")))?;
        // Limits on what the parser understood, which is what the `rtc` core will act on.
        let parsed = offer
            .unmarshal()
            .map_err(|e| Reject::new(ErrorCode::InvalidSdp, format!("invalid offer: {e}")))?;
        let sections = parsed.media_descriptions.len();
        if sections > crate::sdp::MAX_MEDIA_SECTIONS {
            return Err(Reject::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{sections} media sections offered; at most {}",
                    crate::sdp::MAX_MEDIA_SECTIONS
                ),
            ));
        }
        let media = crate::sdp::sending_media(&parsed);
        if media > self.cfg.max_tracks_per_participant {
            return Err(Reject::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{media} tracks offered; at most {} per participant",
                    self.cfg.max_tracks_per_participant
                ),
            ));
        }
        let sources = crate::sdp::declared_sources(&parsed, declared)
            .map_err(|msg| Reject::new(ErrorCode::BadRequest, msg))?;
        let rids = crate::sdp::simulcast_layers(&parsed);
        let (ci, fresh) = match p.pub_conn {
            Some(ci) => (ci, false),
            None => (
                self.new_conn(pid, PeerConnectionKind::Publisher, now)?,
                true,
            ),
        };
        let cands = self.host_candidates();
        let answer_sdp = {
            let Some(c) = self.conns.get_mut(ci) else {
                return Err(Reject::new(
                    ErrorCode::Internal,
                    "publisher connection vanished",
                ));
            };
            let r = (|| {
                c.pc.set_remote_description(now, offer)?;
                if fresh {
                    for cand in cands {
                        c.pc.add_local_candidate(cand)?;
                    }
                    c.pc.add_local_candidate(RTCIceCandidateInit::default())?;
                }
                let answer = c.pc.create_answer(None)?;
                c.pc.set_local_description(now, answer)?;
                Ok::<_, rtc::shared::error::Error>(c.pc.local_description().map(|d| d.sdp))
            })();
            c.work.mark_dirty(ci, &mut self.inputs);
            match r {
                Ok(Some(sdp)) => sdp,
                Ok(None) | Err(_) => {
                    let msg = match r {
                        Err(e) => format!("cannot negotiate the offer: {e}"),
                        _ => "no local description".to_owned(),
                    };
                    if fresh {
                        self.close_conn(ci);
                    }
                    return Err(Reject::new(ErrorCode::InvalidSdp, msg));
                }
            }
        };
        if let Some(p) = self.participants.get_mut(pid) {
            p.pub_conn = Some(ci);
        }
        // The answer carries our candidates; they are trickled too.
        self.send(
            pid,
            ServerMessage::Answer {
                pc: PeerConnectionKind::Publisher,
                sdp: answer_sdp,
            },
        );
        if fresh {
            self.trickle_local_candidates(pid, PeerConnectionKind::Publisher);
        }
        self.sync_published_tracks(pid, ci, &rids, &sources, now);
        Ok(())
    }

    /// The transceivers a publisher connection receives on, as negotiated.
    fn receiving_tracks(&mut self, ci: ConnKey) -> Vec<ReceivingTrack> {
        let mut receiving = Vec::new();
        let Some(c) = self.conns.get_mut(ci) else {
            return receiving;
        };
        let ids: Vec<_> = c.pc.get_transceivers().collect();
        for tid in ids {
            let Some(t) = c.pc.rtp_transceiver(tid) else {
                continue;
            };
            let (Some(mid), Some(receiver)) = (t.mid().clone(), t.receiver()) else {
                continue;
            };
            if !t.direction().has_recv() {
                continue;
            }
            let Some(mut r) = c.pc.rtp_receiver(receiver) else {
                continue;
            };
            let Some(kind) = kind_of(r.track().kind()) else {
                continue;
            };
            let params = &r.get_parameters().rtp_parameters;
            let codecs = params.codecs.clone();
            let audio_level_ext = params
                .header_extensions
                .iter()
                .find(|e| e.uri == conn::AUDIO_LEVEL_URI)
                .and_then(|e| u8::try_from(e.id).ok())
                .filter(|_| kind == TrackKind::Audio);
            let codec = codecs
                .iter()
                .find_map(|c| Codec::from_mime(&c.rtp_codec.mime_type))
                .unwrap_or(if kind == TrackKind::Audio {
                    Codec::Opus
                } else {
                    Codec::Vp8
                });
            receiving.push(ReceivingTrack {
                mid,
                receiver,
                kind,
                codec,
                pts: conn::payload_types(&codecs),
                audio_level_ext,
            });
        }
        receiving
    }

    /// Compare the publisher connection's receiving transceivers with the published tracks:
    /// publish new ones, unpublish stopped ones.
    fn sync_published_tracks(
        &mut self,
        pid: &ParticipantId,
        ci: ConnKey,
        rids: &[(String, Vec<String>)],
        sources: &[(String, TrackSource)],
        now: Instant,
    ) {
        let mut receiving = self.receiving_tracks(ci);
        let source_of = |r: &ReceivingTrack| {
            sources
                .iter()
                .find(|(m, _)| *m == r.mid)
                .map(|(_, s)| *s)
                .unwrap_or_else(|| TrackSource::default_for(r.kind))
        };
        // Screen tracks first: whether this participant presents decides its screen audio.
        receiving.sort_by_key(|r| source_of(r) != TrackSource::Screen);
        // A suppressed mid (refused or stopped screen track) is forgotten once it stops
        // receiving; until then it is not published again.
        if let Some(c) = self.conns.get_mut(ci) {
            c.suppressed_mids
                .retain(|m| receiving.iter().any(|r| &r.mid == m));
        }
        let current: Vec<TrackKey> = self
            .participants
            .get(pid)
            .map(|p| p.tracks.clone())
            .unwrap_or_default();
        // Unpublish tracks whose transceiver stopped receiving.
        for &ti in &current {
            let gone = self
                .tracks
                .get(ti)
                .is_some_and(|t| !receiving.iter().any(|r| r.mid == t.mid));
            if gone {
                self.unpublish(ti, now);
            }
        }
        let Some((room, host, muted)) = self
            .participants
            .get(pid)
            .map(|p| (p.room.clone(), p.role == Role::Host, p.moderator_muted))
        else {
            return;
        };
        for r in receiving {
            let existing = self.participants.get(pid).and_then(|p| {
                p.tracks
                    .iter()
                    .copied()
                    .find(|&t| self.tracks.get(t).is_some_and(|t| t.mid == r.mid))
            });
            if let Some(ti) = existing {
                if let Some(t) = self.tracks.get_mut(ti) {
                    t.route.publisher_pts = r.pts;
                    t.receiver_id = r.receiver;
                    let ext = speaker_level_ext(t.source, r.audio_level_ext);
                    if t.audio_level_ext != ext {
                        t.audio_level_ext = ext;
                        self.reset_speaker(ti);
                    }
                }
                continue;
            }
            let source = source_of(&r);
            if self
                .conns
                .get(ci)
                .is_some_and(|c| c.suppressed_mids.contains(&r.mid))
            {
                continue;
            }
            if !self.admit_source(pid, &room, host, ci, &r.mid, source, now) {
                continue;
            }
            let layers = rids
                .iter()
                .find(|(m, _)| *m == r.mid)
                .filter(|_| r.kind == TrackKind::Video)
                .map(|(_, rids)| {
                    rids.iter()
                        .map(|rid| TrackLayer {
                            rid: rid.clone(),
                            ssrc: None,
                            last_seen: None,
                            rate: RateMeter::default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let id = TrackId(random_id("TR_"));
            let moderator_muted = r.kind == TrackKind::Audio && muted;
            let ti = self.tracks.insert(Track {
                id: id.clone(),
                owner: pid.clone(),
                publisher_conn: ci,
                kind: r.kind,
                source,
                mid: r.mid.clone(),
                muted: moderator_muted,
                receiver_id: r.receiver,
                media_ssrc: None,
                codec: r.codec,
                route: TrackRoute {
                    publisher_pts: r.pts,
                    legs: Vec::new(),
                },
                keyframe: KeyframeThrottle::new(self.cfg.keyframe_request_interval),
                moderator_muted,
                room: room.clone(),
                host,
                audio_level_ext: speaker_level_ext(source, r.audio_level_ext),
                speaker_forward: true,
                speaker_enrolled: false,
                publisher_paused: false,
                layers,
                sent_layers: None,
                rate: RateMeter::default(),
                rec: None,
                relayed: self
                    .participants
                    .get(pid)
                    .is_some_and(|p| super::relay_demand::is_relay_identity(&p.identity)),
                demand: None,
            });
            if let Some(p) = self.participants.get_mut(pid) {
                p.tracks.push(ti);
            }
            self.record_track(ti, now);
            tracing::info!(track = %id, kind = ?r.kind, source = source.as_str(), mid = %r.mid, "track published");
            let info = TrackInfo {
                id,
                kind: r.kind,
                mid: r.mid,
                muted: moderator_muted,
                source: Some(source),
            };
            self.broadcast(
                &room,
                None,
                &ServerMessage::TrackPublished {
                    participant_id: pid.clone(),
                    track: info,
                },
            );
            let others: Vec<ParticipantId> = self
                .rooms
                .get(&room)
                .map(|r| {
                    r.participants
                        .iter()
                        .filter(|o| *o != pid)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for o in others {
                if let Err(Reject(code, msg)) = self.subscribe(&o, ti, now) {
                    tracing::warn!(%code, subscriber = %o, "subscribe failed: {msg}");
                }
            }
            if source == TrackSource::Screen {
                self.start_presentation(&room, ti, now);
            }
        }
    }

    /// First RTP of a publisher's stream: learn its SSRC, then serve waiting subscribers a
    /// keyframe.
    pub(crate) fn on_track_open(
        &mut self,
        ci: ConnKey,
        receiver: RTCRtpReceiverId,
        ssrc: u32,
        stream_rid: Option<&str>,
        now: Instant,
    ) {
        let found = self
            .tracks
            .iter()
            .find(|(_, t)| t.publisher_conn == ci && t.receiver_id == receiver)
            .map(|(i, _)| i);
        let Some(ti) = found else { return };
        let mut layer = 0u8;
        if let Some(t) = self.tracks.get_mut(ti) {
            if let Some(i) = stream_rid.and_then(|r| t.layers.iter().position(|l| l.rid == r)) {
                if let Some(l) = t.layers.get_mut(i) {
                    l.ssrc = Some(ssrc);
                }
                layer = u8::try_from(i).unwrap_or(0);
                tracing::debug!(track = %t.id, rid = stream_rid.unwrap_or(""), ssrc, "simulcast layer open");
            }
            if t.media_ssrc.is_none() || t.layers.is_empty() {
                t.media_ssrc = Some(ssrc);
            }
        }
        let pts = self.conns.get_mut(ci).and_then(|c| {
            c.pc.rtp_receiver(receiver)
                .map(|mut r| conn::payload_types(&r.get_parameters().rtp_parameters.codecs))
        });
        if let (Some(pts), Some(t)) = (pts, self.tracks.get_mut(ti)) {
            if !pts.is_empty() {
                t.route.publisher_pts = pts;
            }
        }
        if let Some(c) = self.conns.get_mut(ci) {
            c.inbound.retain(|s| !(s.track == ti && s.layer == layer));
            c.inbound.push(InboundStream {
                ssrc,
                track: ti,
                layer,
            });
        }
        if self
            .tracks
            .get(ti)
            .is_some_and(|t| t.route.legs.iter().any(|l| l.active))
        {
            self.request_keyframe(ti, now);
        }
    }

    /// Stop forwarding a track, remove it from every subscriber, tell the room.
    pub(crate) fn unpublish(&mut self, ti: TrackKey, now: Instant) {
        let subscribers: Vec<ParticipantId> = self
            .tracks
            .get(ti)
            .map(|t| {
                t.route
                    .legs
                    .iter()
                    .filter_map(|l| self.conns.get(l.conn).map(|c| c.owner.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for sub in subscribers {
            self.unsubscribe(&sub, ti);
        }
        let Some(track) = self.tracks.remove(ti) else {
            return;
        };
        let mut presenting = false;
        if let Some(r) = self.rooms.get_mut(&track.room) {
            if r.presentation == Some(ti) {
                r.presentation = None;
                presenting = true;
            }
        }
        self.record_track_end(track.rec);
        if let Some(room) = self.rooms.get_mut(&track.room) {
            room.speakers.remove(ti);
            room.host_speakers.remove(ti);
        }
        tracing::info!(track = %track.id, "track unpublished");
        if let Some(c) = self.conns.get_mut(track.publisher_conn) {
            c.inbound.retain(|s| s.track != ti);
        }
        if let Some(p) = self.participants.get_mut(&track.owner) {
            p.tracks.retain(|&t| t != ti);
        }
        let m = ServerMessage::TrackUnpublished {
            participant_id: track.owner.clone(),
            track_id: track.id.clone(),
        };
        self.broadcast(&track.room, None, &m);
        if presenting {
            self.presentation_ended(
                &track.room,
                &track.owner,
                &track.id,
                PresentationEnd::Unpublished,
                None,
                now,
            );
        }
    }

    /// Unpublish everything `pid` publishes and drop its subscriptions (its connections and
    /// its place in the room stay).
    pub(crate) fn drop_media(&mut self, pid: &ParticipantId, now: Instant) {
        let Some(p) = self.participants.get(pid) else {
            return;
        };
        let tracks = p.tracks.clone();
        let legs: Vec<TrackKey> = p.legs.iter().map(|l| l.track).collect();
        for ti in tracks {
            self.unpublish(ti, now);
        }
        for ti in legs {
            self.unsubscribe(pid, ti);
        }
    }
}

/// The audio level extension the loudest-speaker selection reads for a track of `source`:
/// none for `screen_audio`, which is the presentation's sound, not a site speaking — it is
/// always forwarded with the presentation and never named in `speakers`.
fn speaker_level_ext(source: TrackSource, ext: Option<u8>) -> Option<u8> {
    ext.filter(|_| source != TrackSource::ScreenAudio)
}
