//! Media tasks around the `webrtc` tracks: [`LocalTrack`] loops a packetized asset into a
//! `TrackLocalStaticRTP` in real time and reads the RTCP feedback about it (a PLI or FIR makes the
//! pacer jump to a keyframe); [`read_remote_track`] drains a remote track, counts every packet
//! into the [`StatsHub`], and sends PLIs until the first video keyframe arrives.
//!
//! These are public so tools can wire peer connections by hand (the in-process loopback test
//! does); [`crate::Client`] uses them for the signalled connections.

use crate::error::ClientError;
use crate::packetizer::{self, MediaAsset};
use crate::peer::{opus_codec, vp8_codec};
use crate::stats::StatsHub;
use rakor_proto::TrackKind;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::header::Header;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

/// The RFC 6464 client-to-mixer audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// `audio_level` value meaning "send no audio level extension".
pub const NO_AUDIO_LEVEL: u8 = u8::MAX;
/// Levels at or below this (-dBov) are flagged as voice (the V bit).
const VOICE_LEVEL: u8 = 60;

/// Keyframe requests closer together than this are answered once.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// A receiver waiting for its first keyframe repeats its PLI this often.
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

pub(crate) fn codec_kind(kind: TrackKind) -> RtpCodecKind {
    match kind {
        TrackKind::Audio => RtpCodecKind::Audio,
        TrackKind::Video => RtpCodecKind::Video,
    }
}

/// One published track that loops the embedded asset of its kind.
pub struct LocalTrack {
    pub kind: TrackKind,
    pub ssrc: u32,
    pub track: Arc<TrackLocalStaticRTP>,
    asset: &'static MediaAsset,
    keyframe_request: Arc<AtomicBool>,
    /// Audio level (0 = loudest … 127 = silence, -dBov) sent in the RFC 6464 extension with
    /// every audio packet; [`NO_AUDIO_LEVEL`] = no extension.
    audio_level: Arc<AtomicU8>,
    /// The server asked us to stop sending (dynacast): the pacer sends nothing meanwhile.
    paused: Arc<AtomicBool>,
}

impl LocalTrack {
    /// A new track of `kind` in media stream `stream_id` (the msid stream), with a random SSRC.
    pub fn new(kind: TrackKind, stream_id: &str) -> Result<Self, ClientError> {
        let asset = packetizer::asset(kind)?;
        let ssrc = rand::random::<u32>();
        let codec = match kind {
            TrackKind::Audio => opus_codec(),
            TrackKind::Video => vp8_codec(vec![]),
        };
        let name = crate::stats::kind_key(kind);
        let track = MediaStreamTrack::new(
            stream_id.to_owned(),
            format!("{stream_id}-{name}"),
            format!("rakor-{name}"),
            codec_kind(kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec,
                ..Default::default()
            }],
        );
        Ok(Self {
            kind,
            ssrc,
            track: Arc::new(TrackLocalStaticRTP::new(track)),
            asset,
            keyframe_request: Arc::new(AtomicBool::new(false)),
            audio_level: Arc::new(AtomicU8::new(NO_AUDIO_LEVEL)),
            paused: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Stop (or resume) sending; resuming starts at a keyframe.
    pub fn set_paused(&self, paused: bool) {
        let was = self.paused.swap(paused, Ordering::Relaxed);
        if was && !paused {
            self.keyframe_request.store(true, Ordering::Relaxed);
        }
    }

    /// Read the audio level to send from `level` (shared, so it can change during the call).
    pub fn with_audio_level(mut self, level: Arc<AtomicU8>) -> Self {
        self.audio_level = level;
        self
    }

    /// Add this track to `pc` as a `sendonly` transceiver.
    pub async fn add_to(
        &self,
        pc: &Arc<dyn PeerConnection>,
    ) -> Result<Arc<dyn RtpTransceiver>, ClientError> {
        let track: Arc<dyn TrackLocal> = self.track.clone();
        Ok(pc
            .add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await?)
    }

    /// Start pacing the asset and reading RTCP feedback, once the connection is negotiated and
    /// connected. Returns the two tasks (abort them to stop).
    pub async fn start(
        &self,
        sender: &Arc<dyn RtpSender>,
        hub: Arc<StatsHub>,
    ) -> Result<[JoinHandle<()>; 2], ClientError> {
        let params = sender.get_parameters().await?.rtp_parameters;
        let audio_level_ext = params
            .header_extensions
            .iter()
            .find(|e| e.uri == AUDIO_LEVEL_URI)
            .and_then(|e| u8::try_from(e.id).ok())
            .filter(|_| self.kind == TrackKind::Audio);
        let payload_type = params
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                ClientError::Signalling("no codec negotiated for a local track".into())
            })?;
        let pacer = tokio::spawn(pace(
            self.track.clone(),
            self.asset,
            self.ssrc,
            payload_type,
            hub.clone(),
            self.keyframe_request.clone(),
            audio_level_ext.map(|id| (id, self.audio_level.clone())),
            self.paused.clone(),
        ));
        let rtcp = tokio::spawn(read_feedback(
            self.track.clone(),
            self.kind,
            hub,
            self.keyframe_request.clone(),
        ));
        Ok([pacer, rtcp])
    }
}

/// Loop `asset` into `track` in real time: one frame per `frame_duration`, the RTP timestamp
/// advancing by `ticks_per_frame`, the marker bit on the last packet of each video frame.
#[allow(clippy::too_many_arguments)]
async fn pace(
    track: Arc<TrackLocalStaticRTP>,
    asset: &'static MediaAsset,
    ssrc: u32,
    payload_type: u8,
    hub: Arc<StatsHub>,
    keyframe_request: Arc<AtomicBool>,
    audio_level: Option<(u8, Arc<AtomicU8>)>,
    paused: Arc<AtomicBool>,
) {
    let kind = asset.kind;
    let mut seq: u16 = rand::random();
    let mut timestamp: u32 = rand::random();
    let mut index = 0usize;
    let mut first = true;
    let mut last_keyframe_jump: Option<Instant> = None;
    let mut ticker = tokio::time::interval(asset.frame_duration);
    loop {
        ticker.tick().await;
        if paused.load(Ordering::Relaxed) {
            // Keep the media clock running so the stream resumes at the right time.
            timestamp = timestamp.wrapping_add(asset.ticks_per_frame);
            continue;
        }
        if keyframe_request.swap(false, Ordering::Relaxed) {
            let now = Instant::now();
            if last_keyframe_jump.is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_INTERVAL)
            {
                index = asset.next_keyframe(index);
                last_keyframe_jump = Some(now);
            }
        }
        let Some(frame) = asset.frames.get(index) else {
            index = 0;
            continue;
        };
        let last = frame.payloads.len().saturating_sub(1);
        let (mut packets, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        for (i, payload) in frame.payloads.iter().enumerate() {
            let marker = match kind {
                TrackKind::Video => i == last,
                TrackKind::Audio => first,
            };
            let mut pkt = rtc::rtp::Packet {
                header: Header {
                    version: 2,
                    marker,
                    payload_type,
                    sequence_number: seq,
                    timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            if let Some((id, level)) = &audio_level {
                let level = level.load(Ordering::Relaxed);
                if level != NO_AUDIO_LEVEL {
                    let level = level.min(127);
                    let v = if level <= VOICE_LEVEL { 0x80 } else { 0 };
                    let ext = bytes::Bytes::copy_from_slice(&[v | level]);
                    if let Err(e) = pkt.header.set_extension(*id, ext) {
                        tracing::debug!(error = %e, "audio level extension not set");
                    }
                }
            }
            match track.write_rtp(pkt).await {
                Ok(()) => {
                    seq = seq.wrapping_add(1);
                    packets += 1;
                    bytes += payload.len() as u64;
                    first = false;
                }
                Err(e) => {
                    errors += 1;
                    tracing::debug!(error = %e, ?kind, "write_rtp failed");
                }
            }
        }
        let keyframe = frame.keyframe;
        index += 1;
        let wrapped = index >= asset.frames.len();
        if wrapped {
            index = 0;
        }
        timestamp = timestamp.wrapping_add(asset.ticks_per_frame);
        hub.update_sent(kind, |s| {
            s.packets += packets;
            s.bytes += bytes;
            s.write_errors += errors;
            if packets > 0 {
                s.frames += 1;
                if keyframe {
                    s.keyframes += 1;
                }
            }
            if wrapped {
                s.loops += 1;
            }
        });
    }
}

/// Count the feedback about a local track and flag keyframe requests for its pacer.
async fn read_feedback(
    track: Arc<TrackLocalStaticRTP>,
    kind: TrackKind,
    hub: Arc<StatsHub>,
    keyframe_request: Arc<AtomicBool>,
) {
    while let Some(ev) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = ev else {
            continue;
        };
        let (mut plis, mut firs, mut nacks) = (0u64, 0u64, 0u64);
        for p in &packets {
            let any = p.as_any();
            if any.is::<PictureLossIndication>() {
                plis += 1;
            } else if any.is::<FullIntraRequest>() {
                firs += 1;
            } else if any.is::<TransportLayerNack>() {
                nacks += 1;
            }
        }
        if plis + firs > 0 {
            keyframe_request.store(true, Ordering::Relaxed);
        }
        if plis + firs + nacks > 0 {
            hub.update_sent(kind, |s| {
                s.plis_received += plis;
                s.firs_received += firs;
                s.nacks_received += nacks;
            });
        }
    }
}

/// Drain a remote track until it ends, counting every RTP packet into `hub`. `mid` is the
/// transceiver's mid in the receiving connection (resolved to a server track id by the hub).
pub async fn read_remote_track(
    track: Arc<dyn TrackRemote>,
    mid: Option<String>,
    hub: Arc<StatsHub>,
) {
    let stream_id = track.stream_id().await;
    let track_id = track.track_id().await;
    let kind = match track.kind().await {
        RtpCodecKind::Audio => TrackKind::Audio,
        _ => TrackKind::Video,
    };
    tracing::debug!(?mid, %stream_id, %track_id, ?kind, "remote track opened");
    // Like a browser's decoder: until a video keyframe arrives, ask for one (at most every
    // KEYFRAME_RETRY), so a subscriber that joins mid-stream gets a picture.
    let mut keyframe_seen = kind == TrackKind::Audio;
    let mut last_pli: Option<Instant> = None;
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let now = Instant::now();
                hub.record_received(mid.as_deref(), (&stream_id, &track_id), kind, &pkt, now);
                if !keyframe_seen {
                    if packetizer::vp8_payload_starts_keyframe(&pkt.payload) {
                        keyframe_seen = true;
                    } else if last_pli.is_none_or(|t| now.duration_since(t) >= KEYFRAME_RETRY) {
                        last_pli = Some(now);
                        if request_keyframe(&track).await.is_ok() {
                            hub.count_pli_sent(mid.as_deref(), &track_id);
                        }
                    }
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    tracing::debug!(?mid, %track_id, "remote track ended");
}

/// Send a PLI for a remote track (asks its sender, via the SFU, for a keyframe).
pub async fn request_keyframe(track: &Arc<dyn TrackRemote>) -> Result<(), ClientError> {
    let ssrcs = track.ssrcs().await;
    let packets: Vec<Box<dyn rtc::rtcp::Packet>> = ssrcs
        .into_iter()
        .map(|media_ssrc| {
            Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            }) as Box<dyn rtc::rtcp::Packet>
        })
        .collect();
    if packets.is_empty() {
        return Ok(());
    }
    Ok(track.write_rtcp(packets).await?)
}
