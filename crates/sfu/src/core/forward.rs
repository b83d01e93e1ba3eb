//! The hot path: a publisher connection's inbound RTP fanned out to every admitted leg of its
//! track (a direct `handle_write` into each subscriber connection; payloads are shared `Bytes`,
//! copied only for a VP8 leg whose picture ids a layer switch moved), subscribers' keyframe
//! requests (PLI/FIR) passed on to the publisher, throttled per track.

use super::speaking::LevelSample;
use super::Core;
use crate::router::{rewrite_header, Codec, TrackRoute};
use crate::slab::{ConnKey, TrackKey};
use bytes::BytesMut;
use rakor_proto::{PeerConnectionKind, TrackKind};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use std::time::Instant;

impl Core {
    /// Drain inbound RTP/RTCP of one connection: forward RTP, act on subscribers' feedback.
    /// In a bounded step ([`Self::flush_input_step`]) packets are read and forwarded one at a
    /// time until the step's copy limit; the rest stays queued in `rtc` and the connection
    /// dirty, for the next step.
    pub(crate) fn read_messages(&mut self, ci: ConnKey, now: Instant) {
        loop {
            if self.copy_limit.is_some_and(|l| self.stats.rtp_out >= l) {
                if let Some(c) = self.conns.get_mut(ci) {
                    c.work.mark_dirty(ci, &mut self.inputs);
                }
                return;
            }
            let chunk = if self.copy_limit.is_some() {
                1
            } else {
                usize::MAX
            };
            if !self.read_some_messages(ci, now, chunk) {
                return;
            }
        }
    }

    /// Read a connection's inbound messages until `chunk` RTP packets were read or none is
    /// left, and act on them; true when it stopped at `chunk` (more may be queued).
    fn read_some_messages(&mut self, ci: ConnKey, now: Instant, chunk: usize) -> bool {
        let mut rtp = std::mem::take(&mut self.rtp_scratch);
        let mut keyframe_tracks: Vec<TrackKey> = Vec::new();
        let mut full = false;
        if let Some(c) = self.conns.get_mut(ci) {
            while let Some(TaggedRTCMessage {
                now: read_at,
                message,
            }) = c.pc.poll_read()
            {
                match message {
                    RTCMessage::RtpPacket(_, pkt) if c.kind == PeerConnectionKind::Publisher => {
                        rtp.push((read_at, pkt));
                        if rtp.len() >= chunk {
                            full = true;
                            break;
                        }
                    }
                    RTCMessage::RtcpPacket(_, pkts) if c.kind == PeerConnectionKind::Subscriber => {
                        for p in &pkts {
                            let any = p.as_any();
                            let mut asked = |ssrc: u32| {
                                if let Some(o) = c.outbound.iter().find(|o| o.ssrc == ssrc) {
                                    keyframe_tracks.push(o.track);
                                }
                            };
                            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                                asked(pli.media_ssrc);
                            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                                fir.fir.iter().for_each(|e| asked(e.ssrc));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for t in keyframe_tracks {
            self.request_keyframe(t, now);
        }
        if !rtp.is_empty() {
            self.forward(ci, &mut rtp, now);
        }
        rtp.clear();
        self.rtp_scratch = rtp;
        full
    }

    /// One publisher's packets to every admitted leg of their tracks.
    fn forward(
        &mut self,
        ci: ConnKey,
        rtp: &mut Vec<(Instant, rtc::rtp::packet::Packet)>,
        now: Instant,
    ) {
        let mut levels = std::mem::take(&mut self.level_scratch);
        let stepping = self.copy_limit.is_some();
        let Core {
            conns,
            tracks,
            stats,
            forwarded_read_at,
            recorder,
            outputs,
            step_written,
            ..
        } = self;
        for (read_at, mut pkt) in rtp.drain(..) {
            stats.rtp_in += 1;
            let Some(c) = conns.get(ci) else { break };
            let Some(stream) = c.inbound.iter().find(|s| s.ssrc == pkt.header.ssrc) else {
                continue;
            };
            let (ti, layer) = (stream.track, stream.layer);
            let Some(track) = tracks.get_mut(ti) else {
                continue;
            };
            if track.moderator_muted {
                continue; // a moderator muted this audio: not forwarded
            }
            track.rate.add(pkt.payload.len(), now);
            if let (Some(rec), Some(tap)) = (track.rec, recorder.as_mut()) {
                // Recording: one hand-off (a simulcast track's lowest layer only).
                if layer == 0 {
                    tap.packet(crate::record::RecPacket {
                        rec,
                        arrival: read_at,
                        seq: pkt.header.sequence_number,
                        ts: pkt.header.timestamp,
                        marker: pkt.header.marker,
                        payload: pkt.payload.clone(),
                    });
                }
            }
            if let Some(id) = track.audio_level_ext {
                if let Some((level, voice)) = pkt
                    .header
                    .get_extension(id)
                    .and_then(|ext| crate::speakers::parse_audio_level(&ext))
                {
                    levels.push(LevelSample {
                        track: ti,
                        level,
                        voice,
                    });
                }
            }
            if !track.speaker_forward {
                // Not among the loudest speakers right now.
                track.route.legs.iter_mut().for_each(|l| l.seq.skip());
                continue;
            }
            let simulcast = track.is_simulcast();
            if let Some(l) = track.layers.get_mut(usize::from(layer)) {
                l.last_seen = Some(now);
                l.rate.add(pkt.payload.len(), now);
            }
            let publisher_pt = pkt.header.payload_type;
            let (in_seq, in_ts) = (pkt.header.sequence_number, pkt.header.timestamp);
            let TrackRoute {
                publisher_pts,
                legs,
            } = &mut track.route;
            let codec = publisher_pts.codec(publisher_pt);
            // Parse the payload only when a leg waits for a keyframe (a resume or a switch).
            let keyframe = legs
                .iter()
                .any(|l| l.needs_keyframe || l.layer != Some(l.target) || l.layer != Some(l.want))
                && codec.is_some_and(|c| crate::codec::is_keyframe(c, &pkt.payload));
            // Simulcast VP8: picture ids are rewritten per leg after a layer switch.
            let vp8 = if simulcast && codec == Some(Codec::Vp8) {
                crate::codec::parse_vp8(&pkt.payload)
            } else {
                None
            };
            TrackRoute::prepare(&mut pkt.header);
            let mut copies = 0u32;
            for leg in legs.iter_mut() {
                if !leg.admit(layer, keyframe) {
                    continue;
                }
                let mut q = pkt.clone(); // payload is Bytes: a refcount, not a copy
                if rewrite_header(publisher_pts, leg, publisher_pt, &mut q.header).is_err() {
                    leg.seq.skip();
                    continue;
                }
                let tr = leg.translate(in_seq, in_ts, vp8.as_ref(), simulcast, now);
                q.header.sequence_number = tr.seq;
                q.header.timestamp = tr.ts;
                if let (Some((id, tl0)), Some(d)) = (tr.picture, &vp8) {
                    // Only after a switch moved the ids: one copy for this leg.
                    let mut out = BytesMut::with_capacity(pkt.payload.len());
                    if crate::codec::rewrite_vp8_picture_id(&pkt.payload, d, id, tl0, &mut out) {
                        q.payload = out.freeze();
                    }
                }
                let Some(sub) = conns.get_mut(leg.conn) else {
                    continue;
                };
                match sub.pc.handle_write(TaggedRTCMessage {
                    now,
                    message: RTCMessage::RtpPacket(String::new(), q),
                }) {
                    Ok(()) => {
                        stats.rtp_out += 1;
                        copies += 1;
                    }
                    Err(e) => tracing::debug!(conn = %leg.conn, "handle_write: {e}"),
                }
                if sub.work.mark_written(leg.conn, outputs) && stepping {
                    step_written.push(leg.conn);
                }
            }
            if copies > 0 {
                forwarded_read_at.push(read_at);
            }
        }
        if !levels.is_empty() {
            self.observe_levels(&levels, now);
            levels.clear();
        }
        self.level_scratch = levels;
    }

    /// Ask the publisher of a video track for a keyframe, throttled per track.
    pub(crate) fn request_keyframe(&mut self, ti: TrackKey, now: Instant) {
        let Some(track) = self.tracks.get_mut(ti) else {
            return;
        };
        if track.kind != TrackKind::Video || !track.keyframe.request(now) {
            return;
        }
        self.send_pli(ti, now);
    }

    fn send_pli(&mut self, ti: TrackKey, now: Instant) {
        let Some(track) = self.tracks.get(ti) else {
            return;
        };
        // A simulcast track: every layer is asked (a switch may be waiting on any of them).
        let ssrcs: Vec<u32> = if track.is_simulcast() {
            track.layers.iter().filter_map(|l| l.ssrc).collect()
        } else {
            track.media_ssrc.into_iter().collect()
        };
        let (receiver_id, pc_idx) = (track.receiver_id, track.publisher_conn);
        if ssrcs.is_empty() {
            return;
        }
        let Some(c) = self.conns.get_mut(pc_idx) else {
            return;
        };
        if let Some(mut receiver) = c.pc.rtp_receiver(receiver_id) {
            let plis: Vec<Box<dyn rtc::rtcp::Packet>> = ssrcs
                .into_iter()
                .map(|media_ssrc| {
                    Box::new(PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc,
                    }) as Box<dyn rtc::rtcp::Packet>
                })
                .collect();
            if let Err(e) = receiver.write_rtcp(now, plis) {
                tracing::debug!("write PLI: {e}");
            }
            c.work.mark_dirty(pc_idx, &mut self.inputs);
        }
    }

    /// Keyframe requests held back by the throttle whose time has come.
    pub(crate) fn poll_keyframe_throttles(&mut self, now: Instant) {
        let due = self
            .tracks
            .keys_where(|t| t.keyframe.deadline().is_some_and(|d| d <= now));
        for ti in due {
            if self
                .tracks
                .get_mut(ti)
                .is_some_and(|t| t.keyframe.poll(now))
            {
                self.send_pli(ti, now);
            }
        }
    }
}
