//! Media counters: what a client sent per local track and received per remote track, the
//! serialisable [`Report`] snapshot, and the shared [`StatsHub`] the media tasks write into.
//!
//! Remote tracks are keyed by the server's track id, resolved from the subscriber offer's
//! `tracks` mapping (mid → track) and falling back to the SDP msid. Payload verification checks
//! every received payload's FNV-1a hash against the packetized assets of the track's kind; for
//! video the asset found also names the simulcast layer the payload belongs to.

use crate::packetizer::{self, VIDEO_LAYERS};
use rakor_proto::{ParticipantId, SubscribedTrack, TrackId, TrackKind, TrackSource};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Counters of one local (published) track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentTrackStats {
    pub kind: TrackKind,
    /// What the track carries (`camera`, `microphone`, `screen`), as declared in the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TrackSource>,
    /// The server's id for this track, learnt from `track_published` (matched by mid).
    pub track_id: Option<TrackId>,
    /// The transceiver mid in the publisher connection.
    pub mid: Option<String>,
    pub ssrc: u32,
    pub packets: u64,
    /// Payload bytes (RTP headers excluded).
    pub bytes: u64,
    pub frames: u64,
    pub keyframes: u64,
    /// Completed loops of the asset.
    pub loops: u64,
    pub plis_received: u64,
    pub firs_received: u64,
    pub nacks_received: u64,
    /// Writes the local stack refused (e.g. before negotiation finished).
    pub write_errors: u64,
    /// The server asked us to stop sending this track (`publisher_pause`, dynacast).
    #[serde(default)]
    pub paused: bool,
    /// How many times it was paused.
    #[serde(default)]
    pub pauses: u64,
    /// Simulcast layers (rids) the server last asked for (`publisher_layers`); empty = all.
    #[serde(default)]
    pub active_layers: Vec<String>,
    /// Video packets sent per simulcast layer (0 = `q` … 2 = `f`); a non-simulcast video
    /// track counts in layer 0. `packets`, `bytes`, `frames`, `keyframes` and `loops` are the
    /// sums over all layers.
    #[serde(default)]
    pub layer_packets: [u64; VIDEO_LAYERS],
    /// The SSRC of each simulcast layer, lowest first; empty when not simulcast (`ssrc` is
    /// layer 0's then).
    #[serde(default)]
    pub layer_ssrcs: Vec<u32>,
}

impl SentTrackStats {
    pub fn new(kind: TrackKind, ssrc: u32) -> Self {
        Self {
            kind,
            source: None,
            track_id: None,
            mid: None,
            ssrc,
            packets: 0,
            bytes: 0,
            frames: 0,
            keyframes: 0,
            loops: 0,
            plis_received: 0,
            firs_received: 0,
            nacks_received: 0,
            write_errors: 0,
            paused: false,
            pauses: 0,
            active_layers: Vec::new(),
            layer_packets: [0; VIDEO_LAYERS],
            layer_ssrcs: Vec::new(),
        }
    }
}

/// Unmatched payloads (with no match before them) after which a track's publisher is taken
/// for a non-rakor client ([`ReceivedTrackStats::foreign_publisher`]).
pub const FOREIGN_AFTER: u64 = 50;

/// Counters of one remote (subscribed) track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedTrackStats {
    pub track_id: TrackId,
    pub participant_id: Option<ParticipantId>,
    pub kind: TrackKind,
    /// What the track carries (`camera`, `microphone`, `screen`, `screen_audio`), from the
    /// server's offer (absent when the server did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TrackSource>,
    /// The transceiver mid in the subscriber connection.
    pub mid: Option<String>,
    pub ssrc: Option<u32>,
    pub packets: u64,
    /// Payload bytes (RTP headers and padding excluded).
    pub bytes: u64,
    /// Frames, counted by RTP timestamp changes.
    pub frames: u64,
    /// VP8 keyframes (first packet of a keyframe seen).
    pub keyframes: u64,
    /// Time from the track appearing in a subscriber offer to its first RTP packet.
    pub first_packet_ms: Option<u64>,
    pub last_seq: Option<u16>,
    /// Packets missing according to forward jumps of the sequence number.
    pub seq_gaps: u64,
    /// Packets whose sequence number went backwards (reordered or duplicated).
    pub out_of_order: u64,
    /// Payloads found in the packetization of an asset of the track's kind (byte-exact, by
    /// FNV-1a 64; for video, any simulcast layer's asset).
    pub payload_matches: u64,
    /// Non-empty payloads not found there. Always 0 when `foreign_publisher`.
    pub payload_mismatches: u64,
    /// The publisher does not send the rakor test assets (none of its first
    /// [`FOREIGN_AFTER`] payloads matched, e.g. a browser or another client): payload
    /// verification does not apply to this track, so `payload_mismatches` is reset to 0 and no
    /// longer counted (it would otherwise equal the packet count and read like a failure).
    #[serde(default)]
    pub foreign_publisher: bool,
    /// Packets with an empty payload (padding / probing), not verified.
    pub padding_packets: u64,
    /// PLIs this client sent for the track while waiting for its first keyframe.
    pub plis_sent: u64,
    /// Video packets whose payload belongs to the asset of simulcast layer 0 / 1 / 2 (a
    /// non-simulcast sender's video is layer 0). Sums to `payload_matches` for video.
    #[serde(default)]
    pub layer_packets: [u64; VIDEO_LAYERS],
    /// The layer of the newest (by sequence number) video packet whose payload was identified.
    #[serde(default)]
    pub last_layer: Option<u8>,
    /// The latest pauses between two frames' first packets of at least [`FRAME_GAP_MIN`]
    /// (video freezes as the receiver sees them; at most [`TIMELINE_MAX`] kept).
    #[serde(default)]
    pub frame_gaps: Vec<FrameGap>,
    /// The latest changes of `last_layer`, with their wall-clock time (at most
    /// [`TIMELINE_MAX`] kept).
    #[serde(default)]
    pub layer_changes: Vec<LayerChange>,
    /// Packets that arrived after the sequence number had moved past them and filled a gap
    /// counted in `seq_gaps` (a reordered packet or a NACK retransmission). `seq_gaps -
    /// gaps_filled` is the loss that stayed unrepaired (gaps older than the last
    /// [`MISSING_MEMORY`] missing sequence numbers are no longer matched).
    #[serde(default)]
    pub gaps_filled: u64,
    /// Sequence numbers still missing, oldest first (at most [`MISSING_MEMORY`]).
    #[serde(skip)]
    missing: VecDeque<u16>,
    #[serde(skip)]
    last_timestamp: Option<u32>,
    #[serde(skip)]
    last_frame_at: Option<Instant>,
}

/// A pause in a received video: no new frame for `gap_ms`, ending at `end_unix_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameGap {
    pub end_unix_ms: u64,
    pub gap_ms: u64,
}

/// The received video switched to simulcast `layer` at `at_unix_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerChange {
    pub at_unix_ms: u64,
    pub layer: u8,
}

/// Shorter pauses between frames are not recorded in `frame_gaps` (15 fps is 67 ms apart).
pub const FRAME_GAP_MIN: Duration = Duration::from_millis(200);
/// Entries kept in `frame_gaps` and `layer_changes`.
pub const TIMELINE_MAX: usize = 32;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn push_bounded<T>(v: &mut Vec<T>, item: T) {
    if v.len() >= TIMELINE_MAX {
        v.remove(0);
    }
    v.push(item);
}

/// How many missing sequence numbers a received track remembers for `gaps_filled`.
pub const MISSING_MEMORY: usize = 512;

impl ReceivedTrackStats {
    pub fn new(track_id: TrackId, participant_id: Option<ParticipantId>, kind: TrackKind) -> Self {
        Self {
            track_id,
            participant_id,
            kind,
            source: None,
            mid: None,
            ssrc: None,
            packets: 0,
            bytes: 0,
            frames: 0,
            keyframes: 0,
            first_packet_ms: None,
            last_seq: None,
            seq_gaps: 0,
            out_of_order: 0,
            payload_matches: 0,
            payload_mismatches: 0,
            foreign_publisher: false,
            padding_packets: 0,
            plis_sent: 0,
            layer_packets: [0; VIDEO_LAYERS],
            last_layer: None,
            frame_gaps: Vec::new(),
            layer_changes: Vec::new(),
            last_timestamp: None,
            last_frame_at: None,
            gaps_filled: 0,
            missing: VecDeque::new(),
        }
    }

    /// After [`Self::record`] of a packet that arrived at `now`: note a frame gap or a layer
    /// change it made (`frames_before` / `layer_before`: the counters before that packet).
    pub fn note_timing(&mut self, now: Instant, frames_before: u64, layer_before: Option<u8>) {
        if self.frames != frames_before {
            if let Some(prev) = self.last_frame_at {
                let gap = now.saturating_duration_since(prev);
                if gap >= FRAME_GAP_MIN {
                    push_bounded(
                        &mut self.frame_gaps,
                        FrameGap {
                            end_unix_ms: unix_ms(),
                            gap_ms: gap.as_millis() as u64,
                        },
                    );
                }
            }
            self.last_frame_at = Some(now);
        }
        if let (Some(layer), true) = (self.last_layer, self.last_layer != layer_before) {
            push_bounded(
                &mut self.layer_changes,
                LayerChange {
                    at_unix_ms: unix_ms(),
                    layer,
                },
            );
        }
    }

    /// Count one RTP packet. `since_offer` is the time since the track appeared in an offer.
    pub fn record(
        &mut self,
        seq: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &[u8],
        since_offer: Option<Duration>,
    ) {
        if self.packets == 0 {
            self.first_packet_ms = since_offer.map(|d| d.as_millis() as u64);
        }
        self.packets += 1;
        self.ssrc = Some(ssrc);
        let in_order = match self.last_seq {
            Some(last) => {
                let diff = seq.wrapping_sub(last);
                if diff == 0 || diff >= 0x8000 {
                    self.out_of_order += 1;
                    if let Some(i) = self.missing.iter().position(|&m| m == seq) {
                        self.missing.remove(i);
                        self.gaps_filled += 1;
                    }
                    false
                } else {
                    self.seq_gaps += u64::from(diff - 1);
                    let skipped = usize::from(diff - 1);
                    let remembered = skipped.min(MISSING_MEMORY) as u16;
                    for back in (1..=remembered).rev() {
                        self.missing.push_back(seq.wrapping_sub(back));
                    }
                    while self.missing.len() > MISSING_MEMORY {
                        self.missing.pop_front();
                    }
                    self.last_seq = Some(seq);
                    true
                }
            }
            None => {
                self.last_seq = Some(seq);
                true
            }
        };
        if payload.is_empty() {
            self.padding_packets += 1;
            return;
        }
        self.bytes += payload.len() as u64;
        if self.last_timestamp != Some(timestamp) {
            self.frames += 1;
            self.last_timestamp = Some(timestamp);
        }
        if self.kind == TrackKind::Video && packetizer::vp8_payload_starts_keyframe(payload) {
            self.keyframes += 1;
        }
        match packetizer::find_payload(self.kind, payload) {
            Some(layer) => {
                self.payload_matches += 1;
                if self.kind == TrackKind::Video {
                    if let Some(n) = self.layer_packets.get_mut(usize::from(layer)) {
                        *n += 1;
                    }
                    // A retransmission of an older packet says nothing about the current layer.
                    if in_order {
                        self.last_layer = Some(layer);
                    }
                }
            }
            None if self.foreign_publisher => {}
            None => {
                self.payload_mismatches += 1;
                if self.payload_matches == 0 && self.payload_mismatches >= FOREIGN_AFTER {
                    self.foreign_publisher = true;
                    self.payload_mismatches = 0;
                }
            }
        }
    }
}

/// A snapshot of everything a client sent and received. Serialises to JSON (`rakor bot --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub participant_id: Option<ParticipantId>,
    /// Milliseconds since the client (or hub) was created.
    pub elapsed_ms: u64,
    /// Local tracks, keyed by source: `"audio"` (the microphone), `"video"` (the camera),
    /// `"screen"` (a screen share).
    pub sent: BTreeMap<String, SentTrackStats>,
    /// Remote tracks, keyed by the server's track id.
    pub received: BTreeMap<TrackId, ReceivedTrackStats>,
    /// Last connection state of the publisher / subscriber peer connection.
    pub publisher_state: Option<String>,
    pub subscriber_state: Option<String>,
    /// The selected ICE candidate pair of the publisher / subscriber connection once connected,
    /// `"<local type> <protocol> -> <remote type> <protocol>"`, e.g. `"host udp -> host udp"`,
    /// `"host tcp -> host tcp"` (ICE-TCP), `"relay udp -> host udp"` (through TURN: which
    /// transport reached the TURN server shows in the byte counts below).
    #[serde(default)]
    pub publisher_path: Option<String>,
    #[serde(default)]
    pub subscriber_path: Option<String>,
    /// Bytes received from TURN servers over TCP (`turn:…?transport=tcp`) and over TLS
    /// (`turns:`), all connections together.
    #[serde(default)]
    pub turn_tcp_bytes_in: u64,
    #[serde(default)]
    pub turn_tls_bytes_in: u64,
    /// Client-side failures (SDP, ICE, ...) worth showing in a test failure; capped.
    pub errors: Vec<String>,
}

impl Report {
    /// The local track of `kind`, if published.
    pub fn sent_track(&self, kind: TrackKind) -> Option<&SentTrackStats> {
        self.sent.get(kind_key(kind))
    }

    /// The local track of `source`, if published.
    pub fn sent_source(&self, source: TrackSource) -> Option<&SentTrackStats> {
        self.sent.get(source_key(source))
    }

    /// Remote tracks of `source`.
    pub fn received_source(
        &self,
        source: TrackSource,
    ) -> impl Iterator<Item = &ReceivedTrackStats> {
        self.received
            .values()
            .filter(move |t| t.source == Some(source))
    }

    /// Remote tracks published by `participant`.
    pub fn received_from<'a>(
        &'a self,
        participant: &'a ParticipantId,
    ) -> impl Iterator<Item = &'a ReceivedTrackStats> + 'a {
        self.received
            .values()
            .filter(move |t| t.participant_id.as_ref() == Some(participant))
    }

    /// The remote track of `kind` published by `participant` (the first, if several).
    pub fn received_track(
        &self,
        participant: &ParticipantId,
        kind: TrackKind,
    ) -> Option<&ReceivedTrackStats> {
        self.received
            .values()
            .find(|t| t.participant_id.as_ref() == Some(participant) && t.kind == kind)
    }

    /// Packets received from `participant`'s tracks of `kind`, summed over every track id it
    /// published them under (after a media reset a participant publishes new track ids).
    pub fn received_packets(&self, participant: &ParticipantId, kind: TrackKind) -> u64 {
        self.received_from(participant)
            .filter(|t| t.kind == kind)
            .map(|t| t.packets)
            .sum()
    }

    /// Remote tracks of `kind`.
    pub fn received_kind(&self, kind: TrackKind) -> impl Iterator<Item = &ReceivedTrackStats> {
        self.received.values().filter(move |t| t.kind == kind)
    }

    /// Sum of `payload_mismatches` over all remote tracks.
    pub fn total_mismatches(&self) -> u64 {
        self.received.values().map(|t| t.payload_mismatches).sum()
    }

    /// Sum of received packets over all remote tracks.
    pub fn total_received_packets(&self) -> u64 {
        self.received.values().map(|t| t.packets).sum()
    }

    /// Pretty JSON (for logs and `rakor bot --json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

pub(crate) fn kind_key(kind: TrackKind) -> &'static str {
    match kind {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    }
}

/// The key of a local track of `source` in [`Report::sent`]: the camera and microphone keep
/// the keys of their kind (`video`, `audio`).
pub fn source_key(source: TrackSource) -> &'static str {
    match source {
        TrackSource::Camera => "video",
        TrackSource::Microphone => "audio",
        TrackSource::Screen => "screen",
        TrackSource::ScreenAudio => "screen_audio",
    }
}

const MAX_ERRORS: usize = 50;

#[derive(Default)]
struct HubState {
    report: Report,
    /// Subscriber mid → the remote track it carries (from the latest offers).
    mids: HashMap<String, SubscribedTrack>,
    /// When each remote track first appeared in an offer.
    offered_at: HashMap<TrackId, Instant>,
}

/// Shared, lock-protected counters plus a [`Notify`] that wakes [`StatsHub::wait_for`] on every
/// change. One per client; the media tasks hold an `Arc` of it.
pub struct StatsHub {
    created: Instant,
    state: Mutex<HubState>,
    changed: Notify,
    /// Written by the TURN bridges ([`crate::turn_tcp`]).
    turn_bytes: Arc<crate::turn_tcp::BridgeCounters>,
}

impl Default for StatsHub {
    fn default() -> Self {
        Self::new()
    }
}

impl StatsHub {
    pub fn new() -> Self {
        Self {
            created: Instant::now(),
            state: Mutex::new(HubState::default()),
            changed: Notify::new(),
            turn_bytes: Arc::default(),
        }
    }

    /// The counters the TURN bridges of this client write into.
    pub fn turn_counters(&self) -> Arc<crate::turn_tcp::BridgeCounters> {
        self.turn_bytes.clone()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HubState) -> R) -> R {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let r = f(&mut guard);
        drop(guard);
        self.changed.notify_waiters();
        r
    }

    /// A snapshot of all counters.
    pub fn report(&self) -> Report {
        let elapsed = self.created.elapsed().as_millis() as u64;
        let guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut r = guard.report.clone();
        drop(guard);
        r.elapsed_ms = elapsed;
        r.turn_tcp_bytes_in = self.turn_bytes.tcp_bytes_in.load(Ordering::Relaxed);
        r.turn_tls_bytes_in = self.turn_bytes.tls_bytes_in.load(Ordering::Relaxed);
        r
    }

    /// Wait until `pred` holds for a snapshot, or `timeout` passes (`Err` with the last one).
    pub async fn wait_for(
        &self,
        mut pred: impl FnMut(&Report) -> bool,
        timeout: Duration,
    ) -> Result<Report, Report> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let report = self.report();
            if pred(&report) {
                return Ok(report);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let report = self.report();
                return if pred(&report) {
                    Ok(report)
                } else {
                    Err(report)
                };
            }
        }
    }

    pub(crate) fn set_participant(&self, id: ParticipantId) {
        self.with(|s| s.report.participant_id = Some(id));
    }

    /// The participant id last set (ours now).
    pub(crate) fn participant(&self) -> Option<ParticipantId> {
        self.with(|s| s.report.participant_id.clone())
    }

    /// Record an error for the report (capped).
    pub fn push_error(&self, message: String) {
        self.with(|s| {
            if s.report.errors.len() < MAX_ERRORS {
                s.report.errors.push(message);
            }
        });
    }

    pub(crate) fn set_pc_path(&self, publisher: bool, path: Option<String>) {
        self.with(|s| {
            if publisher {
                s.report.publisher_path = path;
            } else {
                s.report.subscriber_path = path;
            }
        });
    }

    pub(crate) fn set_pc_state(&self, publisher: bool, state: String) {
        self.with(|s| {
            if publisher {
                s.report.publisher_state = Some(state);
            } else {
                s.report.subscriber_state = Some(state);
            }
        });
    }

    /// Register a local track (before it sends).
    /// A local track of `kind` was added to the publisher connection. If one of that kind was
    /// published before (a media reset after a resume, or publishing again), its counters
    /// keep growing; its SSRC, mid and server id are the new track's.
    pub fn add_sent(&self, kind: TrackKind, ssrc: u32, mid: Option<String>) {
        self.add_sent_source(TrackSource::default_for(kind), ssrc, mid);
    }

    /// [`Self::add_sent`] for a local track of `source` (keyed by [`source_key`]).
    pub fn add_sent_source(&self, source: TrackSource, ssrc: u32, mid: Option<String>) {
        self.with(|s| {
            let st = s
                .report
                .sent
                .entry(source_key(source).to_owned())
                .or_insert_with(|| SentTrackStats::new(source.kind(), ssrc));
            st.source = Some(source);
            st.ssrc = ssrc;
            st.mid = mid;
            st.track_id = None;
            st.paused = false;
            st.active_layers.clear();
            st.layer_ssrcs.clear();
        });
    }

    /// Update the counters of the local track of `kind`.
    pub fn update_sent(&self, kind: TrackKind, f: impl FnOnce(&mut SentTrackStats)) {
        self.update_sent_source(TrackSource::default_for(kind), f);
    }

    /// Update the counters of the local track of `source`.
    pub fn update_sent_source(&self, source: TrackSource, f: impl FnOnce(&mut SentTrackStats)) {
        self.with(|s| {
            if let Some(st) = s.report.sent.get_mut(source_key(source)) {
                f(st);
            }
        });
    }

    /// Learn the server's id of one of our tracks from `track_published` (matched by mid).
    /// Returns whether a local track matched.
    pub(crate) fn set_sent_track_id(&self, mid: &str, track_id: &TrackId) -> bool {
        self.with(|s| {
            for st in s.report.sent.values_mut() {
                if st.mid.as_deref() == Some(mid) {
                    st.track_id = Some(track_id.clone());
                    return true;
                }
            }
            false
        })
    }

    /// Apply the `tracks` mapping of a subscriber offer received at `now`.
    pub fn map_subscribed(&self, tracks: &[SubscribedTrack], now: Instant) {
        self.with(|s| {
            for t in tracks {
                s.offered_at.entry(t.track_id.clone()).or_insert(now);
                s.mids.insert(t.mid.clone(), t.clone());
            }
        });
    }

    /// Count a PLI sent for the remote track on `mid` (or with msid track id `msid_track`).
    pub(crate) fn count_pli_sent(&self, mid: Option<&str>, msid_track: &str) {
        self.with(|s| {
            let id = mid
                .and_then(|m| s.mids.get(m))
                .map(|t| t.track_id.clone())
                .unwrap_or_else(|| TrackId(msid_track.to_owned()));
            if let Some(t) = s.report.received.get_mut(&id) {
                t.plis_sent += 1;
            }
        });
    }

    /// Count one packet of the remote track on subscriber transceiver `mid`. `msid` is the
    /// (stream id, track id) from the SDP, used when the offer's mapping lacks the mid.
    pub fn record_received(
        &self,
        mid: Option<&str>,
        msid: (&str, &str),
        kind: TrackKind,
        pkt: &rtc::rtp::Packet,
        now: Instant,
    ) {
        self.with(|s| {
            let mapped = mid.and_then(|m| s.mids.get(m));
            let (track_id, participant, kind, source) = match mapped {
                Some(t) => (
                    t.track_id.clone(),
                    Some(t.participant_id.clone()),
                    t.kind,
                    t.source,
                ),
                None => (
                    TrackId(msid.1.to_owned()),
                    (!msid.0.is_empty()).then(|| ParticipantId(msid.0.to_owned())),
                    kind,
                    None,
                ),
            };
            let since_offer = s
                .offered_at
                .get(&track_id)
                .map(|t| now.saturating_duration_since(*t));
            let entry = s
                .report
                .received
                .entry(track_id.clone())
                .or_insert_with(|| ReceivedTrackStats::new(track_id, participant, kind));
            if entry.mid.is_none() {
                entry.mid = mid.map(str::to_owned);
            }
            if entry.source.is_none() {
                entry.source = source;
            }
            let (frames_before, layer_before) = (entry.frames, entry.last_layer);
            entry.record(
                pkt.header.sequence_number,
                pkt.header.timestamp,
                pkt.header.ssrc,
                &pkt.payload,
                since_offer,
            );
            entry.note_timing(now, frames_before, layer_before);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::packetizer::asset;

    fn pkt(seq: u16, ts: u32, payload: bytes::Bytes) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                sequence_number: seq,
                timestamp: ts,
                ssrc: 42,
                ..Default::default()
            },
            payload,
        }
    }

    #[test]
    fn received_counters_follow_the_asset() {
        let v = asset(TrackKind::Video).unwrap();
        let hub = StatsHub::new();
        let t0 = Instant::now();
        hub.map_subscribed(
            &[SubscribedTrack {
                mid: "1".into(),
                track_id: TrackId("TR_v".into()),
                participant_id: ParticipantId("PA_a".into()),
                kind: TrackKind::Video,
                source: None,
            }],
            t0,
        );
        let mut seq = 65530u16; // wraps during the test
        for (i, frame) in v.frames.iter().take(31).enumerate() {
            for p in &frame.payloads {
                if seq == 2 {
                    seq = seq.wrapping_add(1); // one lost packet
                    continue;
                }
                hub.record_received(
                    Some("1"),
                    ("", ""),
                    TrackKind::Video,
                    &pkt(seq, 1000 + i as u32 * 6000, p.clone()),
                    t0 + Duration::from_millis(250),
                );
                seq = seq.wrapping_add(1);
            }
        }
        // A corrupted payload and a padding packet.
        let mut bad = v.frames[3].payloads[0].to_vec();
        bad[2] ^= 0xff;
        hub.record_received(
            Some("1"),
            ("", ""),
            TrackKind::Video,
            &pkt(seq, 1, bad.into()),
            t0,
        );
        hub.record_received(
            Some("1"),
            ("", ""),
            TrackKind::Video,
            &pkt(seq.wrapping_add(1), 1, bytes::Bytes::new()),
            t0,
        );
        let r = hub.report();
        let t = r
            .received_track(&ParticipantId("PA_a".into()), TrackKind::Video)
            .unwrap();
        assert_eq!(t.track_id, TrackId("TR_v".into()));
        assert_eq!(t.mid.as_deref(), Some("1"));
        assert_eq!(t.first_packet_ms, Some(250));
        // 31 frames sent, one (single-packet frame 5) lost, plus the corrupted packet's frame.
        assert_eq!(t.frames, 31);
        assert_eq!(t.keyframes, 2);
        assert_eq!(t.seq_gaps, 1);
        assert_eq!(t.payload_mismatches, 1);
        assert_eq!(t.padding_packets, 1);
        assert_eq!(t.payload_matches + 2, t.packets);
        assert_eq!(r.total_mismatches(), 1);
    }

    #[test]
    fn a_foreign_publisher_is_not_reported_as_mismatches() {
        // Opaque payloads (e.g. a browser's encoder): after FOREIGN_AFTER with no match, the
        // track is marked foreign and mismatches are no longer counted.
        let mut t = ReceivedTrackStats::new(TrackId("TR_b".into()), None, TrackKind::Audio);
        for i in 0..(FOREIGN_AFTER + 30) {
            let payload = [0xA5u8, i as u8, 0x5A, 0x42, 0x17];
            t.record(i as u16, i as u32 * 960, 8, &payload, None);
        }
        assert!(t.foreign_publisher);
        assert_eq!((t.payload_mismatches, t.payload_matches), (0, 0));
        assert_eq!(t.packets, FOREIGN_AFTER + 30);
        // A rakor asset with one corrupted payload after matches stays a mismatch, not foreign.
        let a = asset(TrackKind::Audio).unwrap();
        let mut r = ReceivedTrackStats::new(TrackId("TR_r".into()), None, TrackKind::Audio);
        r.record(1, 1, 8, &a.frames[0].payloads[0], None);
        for i in 2..(FOREIGN_AFTER + 10) {
            r.record(i as u16, i as u32, 8, &[0xA5, i as u8, 1, 2], None);
        }
        assert!(!r.foreign_publisher);
        assert_eq!(r.payload_mismatches, FOREIGN_AFTER + 8);
    }

    #[test]
    fn received_video_is_counted_per_simulcast_layer() {
        use crate::packetizer::video_layer;
        let mut t = ReceivedTrackStats::new(TrackId("TR_v".into()), None, TrackKind::Video);
        // (layer whose asset the payload comes from, or None = corrupted; last_layer after it)
        let cases: [(Option<usize>, Option<u8>); 6] = [
            (Some(0), Some(0)),
            (Some(2), Some(2)),
            (Some(2), Some(2)),
            (None, Some(2)),
            (Some(1), Some(1)),
            (Some(0), Some(0)),
        ];
        for (i, (layer, want_last)) in cases.into_iter().enumerate() {
            let payload = match layer {
                Some(l) => video_layer(l).unwrap().frames[i].payloads[0].to_vec(),
                None => {
                    let mut p = video_layer(1).unwrap().frames[i].payloads[0].to_vec();
                    p[1] ^= 0xff;
                    p
                }
            };
            t.record(i as u16, i as u32, 7, &payload, None);
            assert_eq!(t.last_layer, want_last, "packet {i}");
        }
        assert_eq!(t.layer_packets, [2, 1, 2]);
        assert_eq!(t.payload_matches, 5);
        assert_eq!(t.payload_mismatches, 1);
        // Audio never counts layers.
        let a = asset(TrackKind::Audio).unwrap();
        let mut at = ReceivedTrackStats::new(TrackId("TR_a".into()), None, TrackKind::Audio);
        at.record(1, 1, 8, &a.frames[0].payloads[0], None);
        assert_eq!(
            (at.payload_matches, at.layer_packets, at.last_layer),
            (1, [0; 3], None)
        );
        // Reports written before these fields existed still parse.
        let mut json = serde_json::to_value(&t).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.remove("layer_packets");
        obj.remove("last_layer");
        let old: ReceivedTrackStats = serde_json::from_value(json).unwrap();
        assert_eq!((old.layer_packets, old.last_layer), ([0; 3], None));
        let mut sent = serde_json::to_value(SentTrackStats::new(TrackKind::Video, 1)).unwrap();
        let obj = sent.as_object_mut().unwrap();
        obj.remove("layer_packets");
        obj.remove("layer_ssrcs");
        let old: SentTrackStats = serde_json::from_value(sent).unwrap();
        assert!(old.layer_ssrcs.is_empty());
    }

    #[test]
    fn unmapped_mid_falls_back_to_msid_and_reorder_is_counted() {
        let a = asset(TrackKind::Audio).unwrap();
        let hub = StatsHub::new();
        let now = Instant::now();
        let p = a.frames[0].payloads[0].clone();
        for seq in [10u16, 11, 13, 12, 12] {
            hub.record_received(
                None,
                ("PA_x", "TR_y"),
                TrackKind::Audio,
                &pkt(seq, seq as u32 * 960, p.clone()),
                now,
            );
        }
        let r = hub.report();
        let t = &r.received[&TrackId("TR_y".into())];
        assert_eq!(t.participant_id, Some(ParticipantId("PA_x".into())));
        assert_eq!(t.first_packet_ms, None);
        assert_eq!(t.seq_gaps, 1);
        assert_eq!(t.out_of_order, 2);
        // 12 filled the gap; the second 12 is a duplicate.
        assert_eq!(t.gaps_filled, 1);
        assert_eq!(t.last_seq, Some(13));
        assert_eq!(t.payload_matches, 5);
        assert_eq!(t.keyframes, 0);
    }

    #[test]
    fn gaps_filled_counts_late_packets_across_the_wrap_and_forgets_old_gaps() {
        let mut t = ReceivedTrackStats::new(TrackId("TR_a".into()), None, TrackKind::Audio);
        // (seq, gaps, filled) after each packet
        let cases: [(u16, u64, u64); 7] = [
            (65533, 0, 0),
            (1, 3, 0),     // 65534, 65535, 0 missing
            (65535, 3, 1), // a retransmission
            (0, 3, 2),
            (0, 3, 2), // duplicate
            (1000, 1001, 2),
            (65534, 1001, 2), // forgotten: more than MISSING_MEMORY newer gaps since
        ];
        for (seq, gaps, filled) in cases {
            t.record(seq, u32::from(seq), 1, &[], None);
            assert_eq!((t.seq_gaps, t.gaps_filled), (gaps, filled), "after {seq}");
        }
        // 2..=999 went missing: only the newest MISSING_MEMORY (488..=999) are remembered.
        for seq in [999, 487, 488] {
            t.record(seq, u32::from(seq), 1, &[], None);
        }
        assert_eq!(
            t.gaps_filled, 4,
            "999 and 488 filled gaps, 487 was forgotten"
        );
    }

    #[test]
    fn report_serialises_and_round_trips() {
        let hub = StatsHub::new();
        hub.set_participant(ParticipantId("PA_me".into()));
        hub.add_sent(TrackKind::Video, 7, Some("1".into()));
        assert!(hub.set_sent_track_id("1", &TrackId("TR_mine".into())));
        assert!(!hub.set_sent_track_id("9", &TrackId("TR_other".into())));
        hub.update_sent(TrackKind::Video, |s| {
            s.packets = 3;
            s.plis_received = 1;
        });
        let r = hub.report();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["participant_id"], "PA_me");
        assert_eq!(json["sent"]["video"]["track_id"], "TR_mine");
        assert_eq!(json["sent"]["video"]["packets"], 3);
        assert_eq!(json["sent"]["video"]["kind"], "video");
        assert!(json["received"].as_object().unwrap().is_empty());
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.sent_track(TrackKind::Video).unwrap().plis_received, 1);
        assert!(r.sent_track(TrackKind::Audio).is_none());
    }

    #[tokio::test]
    async fn wait_for_wakes_on_change_and_times_out() {
        let hub = std::sync::Arc::new(StatsHub::new());
        let h2 = hub.clone();
        let waiter = tokio::spawn(async move {
            h2.wait_for(|r| r.errors.len() == 2, Duration::from_secs(5))
                .await
        });
        tokio::task::yield_now().await;
        hub.push_error("one".into());
        hub.push_error("two".into());
        assert!(waiter.await.unwrap().is_ok());
        let err = hub
            .wait_for(|r| r.errors.len() == 3, Duration::from_millis(20))
            .await;
        assert_eq!(err.unwrap_err().errors.len(), 2);
    }
}
