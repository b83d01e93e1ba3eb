//! Media tasks around the `webrtc` tracks: [`LocalTrack`] loops a packetized asset into a
//! `TrackLocalStaticRTP` in real time — or, as simulcast, one asset per layer (rid `q`/`h`/`f`),
//! each on its own SSRC — and reads the RTCP feedback about it (a PLI or FIR makes the pacer of
//! the SSRC it names jump to a keyframe); [`read_remote_track`] drains a remote track, counts every packet
//! into the [`StatsHub`], and sends PLIs until the first video keyframe arrives.
//!
//! These are public so tools can wire peer connections by hand (the in-process loopback test
//! does); [`crate::Client`] uses them for the signalled connections.

use crate::error::ClientError;
use crate::packetizer::{self, MediaAsset, VIDEO_LAYERS};
use crate::peer::{self, opus_codec, vp8_codec};
use crate::stats::StatsHub;
use rakor_proto::{TrackKind, TrackSource};
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
use std::sync::{Arc, OnceLock};
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

/// The RFC 6464 extension's one byte for every level 0..=127: V (bit 7) set at or below
/// [`VOICE_LEVEL`], the level in the low 7 bits. Static, so a packet's extension payload is a
/// `Bytes` pointing here: no allocation per packet.
static AUDIO_LEVEL_BYTES: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        // Lossless: i < 128.
        let level = i as u8;
        t[i] = if level <= VOICE_LEVEL {
            0x80 | level
        } else {
            level
        };
        i += 1;
    }
    t
};

/// The RFC 6464 audio level extension payload for `level` (-dBov; above 127 counts as 127).
pub fn audio_level_ext(level: u8) -> bytes::Bytes {
    let i = usize::from(level.min(127));
    AUDIO_LEVEL_BYTES
        .get(i..=i)
        .map_or_else(bytes::Bytes::new, bytes::Bytes::from_static)
}

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

/// The rids of the simulcast layers, lowest first, as offered (`a=simulcast:send q;h;f`).
pub const SIMULCAST_RIDS: [&str; VIDEO_LAYERS] = ["q", "h", "f"];

/// One encoding of a local track: its SSRC, the asset it loops and its own keyframe request.
struct Layer {
    /// 0 = low … 2 = high; the index into [`SIMULCAST_RIDS`] and the assets.
    index: usize,
    /// The rid of a simulcast layer; `None` for a plain (single-encoding) track.
    rid: Option<&'static str>,
    ssrc: u32,
    asset: &'static MediaAsset,
    keyframe_request: Arc<AtomicBool>,
    /// The server does not need this layer now (`publisher_layers`, dynacast).
    stopped: Arc<AtomicBool>,
}

/// One published track that loops the embedded asset of its kind — or, for a simulcast video
/// track, one asset per layer, each on its own SSRC.
pub struct LocalTrack {
    pub kind: TrackKind,
    /// What it carries: declared in the offer; its counters are under this source's key.
    pub source: TrackSource,
    /// The SSRC of the track's (first) encoding; layer 0's for a simulcast track.
    pub ssrc: u32,
    pub track: Arc<TrackLocalStaticRTP>,
    layers: Vec<Layer>,
    /// Audio level (0 = loudest … 127 = silence, -dBov) sent in the RFC 6464 extension with
    /// every audio packet; [`NO_AUDIO_LEVEL`] = no extension.
    audio_level: Arc<AtomicU8>,
    /// The server asked us to stop sending (dynacast): the pacers send nothing meanwhile.
    paused: Arc<AtomicBool>,
    /// Set by [`LocalTrack::add_to`]; simulcast packets carry its mid.
    transceiver: OnceLock<Arc<dyn RtpTransceiver>>,
    /// A relayed track (cascade): its packets come from this channel instead of an asset
    /// (taken by [`LocalTrack::start`]).
    feed: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<rtc::rtp::Packet>>>,
    /// A relayed track: where the server's `track_demand` about it goes.
    demand: Option<DemandSink>,
}

/// The input of a relayed local track ([`LocalTrack::new_fed`]): the packets to send (their
/// SSRC and payload type are rewritten, payload and timing kept), and a flag set when the far
/// side asks for a keyframe (the relay passes it on upstream).
pub struct FedTrack {
    pub source: TrackSource,
    pub packets: tokio::sync::mpsc::Receiver<rtc::rtp::Packet>,
    pub keyframe_request: Arc<AtomicBool>,
    /// Called with what the destination node's subscribers show of it (`track_demand`:
    /// visible, width, height), so the relay can ask the source node for that layer.
    pub demand: Option<DemandSink>,
    /// An audio track: the level (-dBov; [`NO_AUDIO_LEVEL`]: none yet) written into every
    /// packet's RFC 6464 extension — the source node's measure of it (`track_levels`,
    /// [`crate::relay_levels`]), so the destination node selects its loudest speakers among
    /// relayed sites too.
    pub audio_level: Option<Arc<AtomicU8>>,
}

/// Receives a relayed track's `track_demand` (visible, width, height).
pub type DemandSink = Arc<dyn Fn(bool, u32, u32) + Send + Sync>;

impl std::fmt::Debug for FedTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FedTrack")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn encoding(
    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    ssrc: u32,
    rid: &str,
) -> RTCRtpEncodingParameters {
    RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            rid: rid.to_owned(),
            ssrc: Some(ssrc),
            ..Default::default()
        },
        active: true,
        codec,
        ..Default::default()
    }
}

impl LocalTrack {
    /// A new track of `kind` in media stream `stream_id` (the msid stream), with a random SSRC.
    pub fn new(kind: TrackKind, stream_id: &str) -> Result<Self, ClientError> {
        Self::new_named(kind, stream_id, crate::stats::kind_key(kind))
    }

    fn new_named(kind: TrackKind, stream_id: &str, name: &str) -> Result<Self, ClientError> {
        let asset = packetizer::asset(kind)?;
        let ssrc = rand::random::<u32>();
        let codec = match kind {
            TrackKind::Audio => opus_codec(),
            TrackKind::Video => vp8_codec(vec![]),
        };
        let layer = Layer {
            index: 0,
            rid: None,
            ssrc,
            asset,
            keyframe_request: Arc::new(AtomicBool::new(false)),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        Ok(Self::with_layers(
            kind,
            name,
            stream_id,
            vec![encoding(codec, ssrc, "")],
            vec![layer],
        ))
    }

    /// A synthetic screen share (source `screen`): slides that change every few seconds at a
    /// low frame rate ([`packetizer::slides_layer`]); 1280x720 as one encoding, or simulcast
    /// (rid `q`/`h`/`f`, 320x240 … 1280x720) when `simulcast`.
    pub fn new_screen(stream_id: &str, simulcast: bool) -> Result<Self, ClientError> {
        let mut t = if simulcast {
            Self::new_simulcast_named(stream_id, "screen")?
        } else {
            Self::new_named(TrackKind::Video, stream_id, "screen")?
        };
        let single = t.layers.len() == 1;
        for l in &mut t.layers {
            // One encoding: the 1280x720 slides (counted as layer 0, like any plain track).
            l.asset = packetizer::slides_layer(if single { VIDEO_LAYERS - 1 } else { l.index })?;
        }
        t.source = TrackSource::Screen;
        Ok(t)
    }

    /// A synthetic screen's audio (source `screen_audio`: the sound of a shared tab): the
    /// looped Opus asset on its own track, with the shared audio level like the microphone's.
    pub fn new_screen_audio(stream_id: &str) -> Result<Self, ClientError> {
        let mut t = Self::new_named(TrackKind::Audio, stream_id, "screen_audio")?;
        t.source = TrackSource::ScreenAudio;
        Ok(t)
    }

    /// A simulcast video track in media stream `stream_id`: one transceiver whose track has
    /// three encodings, rid `q`, `h`, `f` (low to high, in that order in the offer), each with
    /// its own random SSRC and looping its own asset ([`packetizer::video_layer`]).
    pub fn new_simulcast_video(stream_id: &str) -> Result<Self, ClientError> {
        Self::new_simulcast_named(stream_id, "video")
    }

    fn new_simulcast_named(stream_id: &str, name: &str) -> Result<Self, ClientError> {
        let mut ssrcs: Vec<u32> = Vec::with_capacity(VIDEO_LAYERS);
        while ssrcs.len() < VIDEO_LAYERS {
            let ssrc = rand::random::<u32>();
            if ssrc != 0 && !ssrcs.contains(&ssrc) {
                ssrcs.push(ssrc);
            }
        }
        let mut encodings = Vec::with_capacity(VIDEO_LAYERS);
        let mut layers = Vec::with_capacity(VIDEO_LAYERS);
        for (index, (rid, ssrc)) in SIMULCAST_RIDS.into_iter().zip(ssrcs).enumerate() {
            encodings.push(encoding(vp8_codec(vec![]), ssrc, rid));
            layers.push(Layer {
                index,
                rid: Some(rid),
                ssrc,
                asset: packetizer::video_layer(index)?,
                keyframe_request: Arc::new(AtomicBool::new(false)),
                stopped: Arc::new(AtomicBool::new(false)),
            });
        }
        Ok(Self::with_layers(
            TrackKind::Video,
            name,
            stream_id,
            encodings,
            layers,
        ))
    }

    fn with_layers(
        kind: TrackKind,
        name: &str,
        stream_id: &str,
        encodings: Vec<RTCRtpEncodingParameters>,
        layers: Vec<Layer>,
    ) -> Self {
        let track = MediaStreamTrack::new(
            stream_id.to_owned(),
            format!("{stream_id}-{name}"),
            format!("rakor-{name}"),
            codec_kind(kind),
            encodings,
        );
        Self {
            kind,
            source: TrackSource::default_for(kind),
            ssrc: layers.first().map_or(0, |l| l.ssrc),
            track: Arc::new(TrackLocalStaticRTP::new(track)),
            layers,
            audio_level: Arc::new(AtomicU8::new(NO_AUDIO_LEVEL)),
            paused: Arc::new(AtomicBool::new(false)),
            transceiver: OnceLock::new(),
            feed: std::sync::Mutex::new(None),
            demand: None,
        }
    }

    /// A relayed track (cascade): one plain encoding of `fed.source`'s kind whose packets come
    /// from `fed.packets`; keyframe requests about it set `fed.keyframe_request`.
    pub fn new_fed(fed: FedTrack, stream_id: &str) -> Result<Self, ClientError> {
        let kind = fed.source.kind();
        let mut t = Self::new_named(kind, stream_id, fed.source.as_str())?;
        t.source = fed.source;
        if let Some(l) = t.layers.first_mut() {
            l.keyframe_request = fed.keyframe_request;
        }
        t.feed = std::sync::Mutex::new(Some(fed.packets));
        t.demand = fed.demand;
        if let Some(level) = fed.audio_level {
            t.audio_level = level;
        }
        Ok(t)
    }

    /// The server says what its subscribers show of this track (`track_demand`): a relayed
    /// track passes it on to its relay; any other track ignores it. True when passed on.
    pub fn on_demand(&self, visible: bool, width: u32, height: u32) -> bool {
        match &self.demand {
            Some(sink) => {
                sink(visible, width, height);
                true
            }
            None => false,
        }
    }

    /// Whether this track is sent as simulcast (several rid-tagged encodings).
    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// The SSRC of every encoding, lowest layer first (one entry unless simulcast).
    pub fn ssrcs(&self) -> Vec<u32> {
        self.layers.iter().map(|l| l.ssrc).collect()
    }

    /// Stop (or resume) sending, on every layer; resuming starts each layer at a keyframe.
    pub fn set_paused(&self, paused: bool) {
        let was = self.paused.swap(paused, Ordering::Relaxed);
        if was && !paused {
            for l in &self.layers {
                l.keyframe_request.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Simulcast dynacast: send only the layers whose rid is in `rids` (the others stop until
    /// named again, then restart at a keyframe). Returns the rids now sent.
    pub fn set_active_layers(&self, rids: &[String]) -> Vec<&'static str> {
        let mut sent = Vec::new();
        for l in &self.layers {
            let Some(rid) = l.rid else { continue };
            let on = rids.iter().any(|r| r == rid);
            let was_stopped = l.stopped.swap(!on, Ordering::Relaxed);
            if on {
                sent.push(rid);
                if was_stopped {
                    l.keyframe_request.store(true, Ordering::Relaxed);
                }
            }
        }
        sent
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
        let transceiver = pc
            .add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await?;
        // Only the first transceiver counts; a track is added to one connection.
        let _ = self.transceiver.set(transceiver.clone());
        Ok(transceiver)
    }

    /// Start pacing the asset(s) and reading RTCP feedback, once the connection is negotiated
    /// and connected. Returns the tasks — one pacer per layer, then the RTCP reader (abort them
    /// to stop).
    pub async fn start(
        &self,
        sender: &Arc<dyn RtpSender>,
        hub: Arc<StatsHub>,
    ) -> Result<Vec<JoinHandle<()>>, ClientError> {
        let params = sender.get_parameters().await?.rtp_parameters;
        let ext_id = |uri: &str| {
            params
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .and_then(|e| u8::try_from(e.id).ok())
        };
        let audio_level_ext = ext_id(AUDIO_LEVEL_URI).filter(|_| self.kind == TrackKind::Audio);
        let payload_type = params
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                ClientError::Signalling("no codec negotiated for a local track".into())
            })?;
        // Simulcast layers name their m-section and rid in every packet: the offer has no
        // `a=ssrc` lines, so that is how the receiver maps each SSRC to its layer.
        let mut simulcast_exts: Vec<(u8, bytes::Bytes)> = Vec::new();
        let mut rid_ext = None;
        if self.is_simulcast() {
            rid_ext = Some(ext_id(peer::SDES_RTP_STREAM_ID_URI).ok_or_else(|| {
                ClientError::Signalling(
                    "simulcast: the rtp-stream-id header extension was not negotiated".into(),
                )
            })?);
            let mid = match self.transceiver.get() {
                Some(t) => t.mid().await.ok().flatten(),
                None => None,
            };
            match (ext_id(peer::SDES_MID_URI), mid) {
                (Some(id), Some(mid)) => simulcast_exts.push((id, bytes::Bytes::from(mid))),
                _ => hub.push_error(
                    "simulcast: no mid header extension or mid; layers carry only their rid".into(),
                ),
            }
        }
        let mut tasks = Vec::with_capacity(self.layers.len() + 1);
        let feed = self.feed.lock().ok().and_then(|mut f| f.take());
        let fed = feed.is_some();
        if let (Some(packets), Some(layer)) = (feed, self.layers.first()) {
            tasks.push(tokio::spawn(feed_track(
                packets,
                self.track.clone(),
                self.source,
                layer.ssrc,
                payload_type,
                audio_level_ext.map(|id| (id, self.audio_level.clone())),
                hub.clone(),
            )));
        }
        for layer in self.layers.iter().filter(|_| !fed) {
            let mut extensions = simulcast_exts.clone();
            if let (Some(id), Some(rid)) = (rid_ext, layer.rid) {
                extensions.push((id, bytes::Bytes::from_static(rid.as_bytes())));
            }
            let pacer = Pacer {
                source: self.source,
                track: self.track.clone(),
                asset: layer.asset,
                layer: layer.index,
                ssrc: layer.ssrc,
                payload_type,
                hub: hub.clone(),
                keyframe_request: layer.keyframe_request.clone(),
                audio_level: audio_level_ext.map(|id| (id, self.audio_level.clone())),
                paused: self.paused.clone(),
                stopped: layer.stopped.clone(),
                extensions,
            };
            tasks.push(tokio::spawn(pacer.run()));
        }
        let requests = self
            .layers
            .iter()
            .map(|l| (l.ssrc, l.keyframe_request.clone()))
            .collect();
        tasks.push(tokio::spawn(read_feedback(
            self.track.clone(),
            self.source,
            hub,
            requests,
        )));
        Ok(tasks)
    }
}

/// A relayed track's sender: every packet from `packets` goes out on `track` with our SSRC
/// and payload type (header extensions dropped: their ids belong to the upstream connection);
/// sequence numbers and timestamps are the upstream's, already continuous. An audio track
/// with `audio_level` (our negotiated extension id, the level) carries that level.
async fn feed_track(
    mut packets: tokio::sync::mpsc::Receiver<rtc::rtp::Packet>,
    track: Arc<TrackLocalStaticRTP>,
    source: TrackSource,
    ssrc: u32,
    payload_type: u8,
    audio_level: Option<(u8, Arc<AtomicU8>)>,
    hub: Arc<StatsHub>,
) {
    while let Some(mut pkt) = packets.recv().await {
        pkt.header.ssrc = ssrc;
        pkt.header.payload_type = payload_type;
        rewrite_extensions(&mut pkt.header, audio_level.as_ref());
        let bytes = pkt.payload.len() as u64;
        let ok = track.write_rtp(pkt).await.is_ok();
        hub.update_sent_source(source, |s| {
            if ok {
                s.packets += 1;
                s.bytes += bytes;
            } else {
                s.write_errors += 1;
            }
        });
    }
}

/// Drop a relayed packet's header extensions (their ids are the upstream connection's) and,
/// with `audio_level` (our extension id, the level) set to a level, write that level. Reuses
/// the header's extension list and a static payload ([`audio_level_ext`]): nothing is
/// allocated when the packet arrived with an extension; one that arrived without any (the
/// SFU strips them) needs its list's first slot — one small allocation, beside the
/// `webrtc` crate's own per-packet ones in `write_rtp` (its driver channel, marshalling,
/// SRTP), which its API does not let us avoid.
fn rewrite_extensions(header: &mut Header, audio_level: Option<&(u8, Arc<AtomicU8>)>) {
    header.extension = false;
    header.extensions.clear();
    header.extensions_padding = 0;
    let Some((id, level)) = audio_level else {
        return;
    };
    let level = level.load(Ordering::Relaxed);
    if level == NO_AUDIO_LEVEL {
        return;
    }
    if let Err(e) = header.set_extension(*id, audio_level_ext(level)) {
        tracing::debug!(error = %e, "audio level extension not set");
    }
}

/// One layer's pacer: loops `asset` into `track` in real time with this layer's SSRC.
struct Pacer {
    source: TrackSource,
    track: Arc<TrackLocalStaticRTP>,
    asset: &'static MediaAsset,
    layer: usize,
    ssrc: u32,
    payload_type: u8,
    hub: Arc<StatsHub>,
    keyframe_request: Arc<AtomicBool>,
    audio_level: Option<(u8, Arc<AtomicU8>)>,
    paused: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    /// Header extensions (id, value) set on every packet (simulcast: mid and rid).
    extensions: Vec<(u8, bytes::Bytes)>,
}

impl Pacer {
    /// One frame per `frame_duration`, the RTP timestamp advancing by `ticks_per_frame`, the
    /// marker bit on the last packet of each video frame.
    async fn run(self) {
        let Pacer {
            source,
            track,
            asset,
            layer,
            ssrc,
            payload_type,
            hub,
            keyframe_request,
            audio_level,
            paused,
            stopped,
            extensions,
        } = self;
        let kind = asset.kind;
        let mut seq: u16 = rand::random();
        let mut timestamp: u32 = rand::random();
        let mut index = 0usize;
        let mut first = true;
        let mut last_keyframe_jump: Option<Instant> = None;
        let mut ticker = tokio::time::interval(asset.frame_duration);
        loop {
            ticker.tick().await;
            if paused.load(Ordering::Relaxed) || stopped.load(Ordering::Relaxed) {
                // Keep the media clock running so the stream resumes at the right time.
                timestamp = timestamp.wrapping_add(asset.ticks_per_frame);
                continue;
            }
            if keyframe_request.swap(false, Ordering::Relaxed) {
                let now = Instant::now();
                if last_keyframe_jump
                    .is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_INTERVAL)
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
                for (id, value) in &extensions {
                    if let Err(e) = pkt.header.set_extension(*id, value.clone()) {
                        tracing::debug!(error = %e, id, "header extension not set");
                    }
                }
                if let Some((id, level)) = &audio_level {
                    let level = level.load(Ordering::Relaxed);
                    if level != NO_AUDIO_LEVEL {
                        if let Err(e) = pkt.header.set_extension(*id, audio_level_ext(level)) {
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
                        tracing::debug!(error = %e, ?kind, layer, "write_rtp failed");
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
            hub.update_sent_source(source, |s| {
                s.packets += packets;
                s.bytes += bytes;
                s.write_errors += errors;
                if kind == TrackKind::Video {
                    if let Some(n) = s.layer_packets.get_mut(layer) {
                        *n += packets;
                    }
                }
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
}

/// Which layers (indices into `layer_ssrcs`) a keyframe request naming `requested` SSRCs is
/// for. A single-encoding track answers every request; a simulcast track answers the layers
/// named, or all of them when the request names none of its SSRCs.
fn keyframe_targets(layer_ssrcs: &[u32], requested: &[u32]) -> Vec<usize> {
    if layer_ssrcs.len() == 1 {
        return vec![0];
    }
    let named: Vec<usize> = layer_ssrcs
        .iter()
        .enumerate()
        .filter(|(_, s)| requested.contains(s))
        .map(|(i, _)| i)
        .collect();
    if named.is_empty() {
        (0..layer_ssrcs.len()).collect()
    } else {
        named
    }
}

/// Count the feedback about a local track and flag keyframe requests for the pacer of the
/// layer (SSRC) they name. `layers` is (SSRC, keyframe flag) per layer.
async fn read_feedback(
    track: Arc<TrackLocalStaticRTP>,
    source: TrackSource,
    hub: Arc<StatsHub>,
    layers: Vec<(u32, Arc<AtomicBool>)>,
) {
    let layer_ssrcs: Vec<u32> = layers.iter().map(|(s, _)| *s).collect();
    while let Some(ev) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = ev else {
            continue;
        };
        let (mut plis, mut firs, mut nacks) = (0u64, 0u64, 0u64);
        let mut requested: Vec<u32> = Vec::new();
        for p in &packets {
            let any = p.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                plis += 1;
                requested.push(pli.media_ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                firs += 1;
                requested.push(fir.media_ssrc);
                requested.extend(fir.fir.iter().map(|e| e.ssrc));
            } else if any.is::<TransportLayerNack>() {
                nacks += 1;
            }
        }
        if plis + firs > 0 {
            for i in keyframe_targets(&layer_ssrcs, &requested) {
                if let Some((_, flag)) = layers.get(i) {
                    flag.store(true, Ordering::Relaxed);
                }
            }
        }
        if plis + firs + nacks > 0 {
            hub.update_sent_source(source, |s| {
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

/// Like [`read_remote_track`], and also pass every packet on to `out` (a cascade relay
/// republishes it); a set `keyframe_request` (the far side wants a keyframe) becomes a PLI.
/// Packets that do not fit in `out` (the far side is slower) are dropped, not queued.
pub async fn relay_remote_track(
    track: Arc<dyn TrackRemote>,
    mid: Option<String>,
    hub: Arc<StatsHub>,
    out: tokio::sync::mpsc::Sender<rtc::rtp::Packet>,
    keyframe_request: Arc<AtomicBool>,
    bytes_counter: Arc<std::sync::atomic::AtomicU64>,
) {
    let stream_id = track.stream_id().await;
    let track_id = track.track_id().await;
    let kind = match track.kind().await {
        RtpCodecKind::Audio => TrackKind::Audio,
        _ => TrackKind::Video,
    };
    let mut last_pli: Option<Instant> = None;
    let _ = request_keyframe(&track).await;
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let now = Instant::now();
                hub.record_received(mid.as_deref(), (&stream_id, &track_id), kind, &pkt, now);
                if keyframe_request.swap(false, Ordering::Relaxed)
                    && last_pli.is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_INTERVAL)
                {
                    last_pli = Some(now);
                    let _ = request_keyframe(&track).await;
                }
                if out.is_closed() {
                    // Not relayed (the relay skips it, or its far side is gone): just drain.
                    continue;
                }
                let len = pkt.payload.len() as u64;
                if out.try_send(pkt).is_ok() {
                    bytes_counter.fetch_add(len, Ordering::Relaxed);
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    tracing::debug!(?mid, %track_id, "relayed remote track ended");
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn relayed_packets_carry_our_audio_level_and_no_foreign_extension() {
        use rtc::rtp::header::Extension;
        let level = Arc::new(AtomicU8::new(NO_AUDIO_LEVEL));
        let ours = (3u8, level.clone());
        let upstream = || Header {
            version: 2,
            extension: true,
            extension_profile: 0xBEDE,
            extensions: vec![
                Extension {
                    id: 1,
                    payload: bytes::Bytes::from_static(&[0x85]),
                },
                Extension {
                    id: 3,
                    payload: bytes::Bytes::from_static(&[1, 2]),
                },
            ],
            ..Default::default()
        };
        // No level known yet: the upstream's extensions are dropped, none is written.
        let mut h = upstream();
        rewrite_extensions(&mut h, Some(&ours));
        assert!(!h.extension && h.extensions.is_empty());
        // A video track (no level): the same.
        let mut h = upstream();
        rewrite_extensions(&mut h, None);
        assert!(h.extensions.is_empty());
        // (level, the extension byte: V set at or below -60 dBov)
        for (l, byte) in [
            (0u8, 0x80u8),
            (20, 0x94),
            (60, 0xBC),
            (61, 61),
            (127, 127),
            (200, 127),
        ] {
            level.store(l, Ordering::Relaxed);
            let mut h = upstream();
            let list = h.extensions.as_ptr();
            rewrite_extensions(&mut h, Some(&ours));
            assert_eq!(
                h.extensions.as_ptr(),
                list,
                "the list is reused, not reallocated"
            );
            assert_eq!(
                h.get_extension(3).as_deref(),
                Some(&[byte][..]),
                "level {l}"
            );
            assert_eq!(h.extensions.len(), 1);
            // It goes on the wire as a one-byte extension the SFU parses back.
            let pkt = rtc::rtp::Packet {
                header: h,
                payload: bytes::Bytes::from_static(&[0xAA; 10]),
            };
            let wire = rtc::shared::marshal::Marshal::marshal(&pkt).unwrap();
            let mut buf = &wire[..];
            let back =
                <rtc::rtp::Packet as rtc::shared::marshal::Unmarshal>::unmarshal(&mut buf).unwrap();
            assert_eq!(back.header.get_extension(3).as_deref(), Some(&[byte][..]));
            assert_eq!(back.payload, pkt.payload);
        }
        // The extension payload points into the static table (no copy per packet).
        let a = audio_level_ext(20);
        let b = audio_level_ext(20);
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    fn keyframe_requests_go_to_the_layer_they_name() {
        let (q, h, f) = (11u32, 22u32, 33u32);
        // (layer SSRCs, SSRCs named by the PLIs/FIRs, layers that jump to a keyframe)
        let cases: &[(&[u32], &[u32], &[usize])] = &[
            (&[q], &[q], &[0]),
            (&[q], &[999], &[0]), // a plain track answers any request, as before
            (&[q], &[], &[0]),
            (&[q, h, f], &[h], &[1]),
            (&[q, h, f], &[f, q], &[0, 2]),
            (&[q, h, f], &[0], &[0, 1, 2]), // names none of ours: all layers
            (&[q, h, f], &[999, f], &[2]),
        ];
        for (layers, requested, want) in cases {
            assert_eq!(
                keyframe_targets(layers, requested),
                want.to_vec(),
                "{layers:?} {requested:?}"
            );
        }
    }

    #[tokio::test]
    async fn simulcast_track_has_three_rid_encodings_with_distinct_ssrcs() {
        let t = LocalTrack::new_simulcast_video("PA_s").unwrap();
        assert!(t.is_simulcast());
        let ssrcs = t.ssrcs();
        assert_eq!(ssrcs.len(), 3);
        assert_eq!(t.ssrc, ssrcs[0]);
        assert!(ssrcs[0] != ssrcs[1] && ssrcs[1] != ssrcs[2] && ssrcs[0] != ssrcs[2]);
        let track = t.track.track().await;
        let codings: Vec<(String, Option<u32>)> = track
            .codings()
            .iter()
            .map(|c| {
                (
                    c.rtp_coding_parameters.rid.to_string(),
                    c.rtp_coding_parameters.ssrc,
                )
            })
            .collect();
        let want: Vec<(String, Option<u32>)> = SIMULCAST_RIDS
            .iter()
            .zip(&ssrcs)
            .map(|(r, s)| (r.to_string(), Some(*s)))
            .collect();
        assert_eq!(codings, want);
        for (i, l) in t.layers.iter().enumerate() {
            assert!(std::ptr::eq(l.asset, packetizer::video_layer(i).unwrap()));
        }
        // Pausing pauses every layer; resuming asks each layer for a keyframe.
        t.set_paused(true);
        assert!(t.paused.load(Ordering::Relaxed));
        t.set_paused(false);
        assert!(t
            .layers
            .iter()
            .all(|l| l.keyframe_request.load(Ordering::Relaxed)));
        // A plain track is unchanged: one encoding, no rid.
        let plain = LocalTrack::new(TrackKind::Video, "PA_s").unwrap();
        assert!(!plain.is_simulcast());
        assert_eq!(plain.ssrcs(), vec![plain.ssrc]);
        let track = plain.track.track().await;
        assert_eq!(track.codings().len(), 1);
        assert!(track.codings()[0].rtp_coding_parameters.rid.is_empty());
    }
}
