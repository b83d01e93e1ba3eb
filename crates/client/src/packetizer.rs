//! RTP packetization of the embedded assets (VP8 per RFC 7741, Opus per RFC 7587), the FNV-1a
//! payload hash used for end-to-end payload verification, and VP8 payload-descriptor parsing
//! for keyframe detection on the receive side.
//!
//! Every sender packetizes the same asset with the same rules, so the set of payloads — and of
//! their hashes — is a fixed, precomputed [`MediaAsset::hashes`]. A receiver proves a payload is
//! intact by finding its hash in that set; video has one asset per simulcast layer
//! ([`video_layer`]), so the set it is found in ([`find_payload`]) also names the layer. The VP8
//! descriptor carries no PictureID (it is optional), so payloads do not change from one loop of
//! the asset to the next.

use crate::assets::{self, AssetError};
use bytes::Bytes;
use rakor_proto::TrackKind;
use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

/// Largest RTP payload we produce (descriptor included), leaving room for the RTP header,
/// header extensions and the SRTP tag within a 1280-byte IPv6-safe datagram.
pub const MAX_PAYLOAD: usize = 1200;

/// 64-bit FNV-1a.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Split one VP8 frame into RTP payloads: a one-byte descriptor (S=1 on the first packet,
/// partition index 0, no extensions) followed by at most `max_payload - 1` frame bytes.
pub fn packetize_vp8(frame: &[u8], max_payload: usize) -> Vec<Bytes> {
    let chunk = max_payload.saturating_sub(1).max(1);
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut p = Vec::with_capacity(part.len() + 1);
            p.push(if i == 0 { 0x10 } else { 0x00 });
            p.extend_from_slice(part);
            Bytes::from(p)
        })
        .collect()
}

/// The parts of a VP8 payload descriptor (RFC 7741 §4.2) the receiver needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index.
    pub partition_index: u8,
    /// The 7- or 15-bit PictureID, when present.
    pub picture_id: Option<u16>,
    /// Length of the descriptor; the VP8 payload starts here.
    pub len: usize,
}

/// Parse a VP8 payload descriptor; `None` if the payload is too short for what it announces.
pub fn parse_vp8_descriptor(payload: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *payload.first()?;
    let mut len = 1;
    let mut picture_id = None;
    if b0 & 0x80 != 0 {
        let x = *payload.get(len)?;
        len += 1;
        if x & 0x80 != 0 {
            let m = *payload.get(len)?;
            if m & 0x80 != 0 {
                let lo = *payload.get(len + 1)?;
                picture_id = Some((u16::from(m & 0x7f) << 8) | u16::from(lo));
                len += 2;
            } else {
                picture_id = Some(u16::from(m));
                len += 1;
            }
        }
        if x & 0x40 != 0 {
            len += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            len += 1; // TID/Y/KEYIDX
        }
        if len > payload.len() {
            return None;
        }
    }
    Some(Vp8Descriptor {
        start_of_partition: b0 & 0x10 != 0,
        partition_index: b0 & 0x07,
        picture_id,
        len,
    })
}

/// Whether an RTP VP8 payload is the first packet of a keyframe: S=1, partition 0, and the VP8
/// payload header's P bit is 0.
pub fn vp8_payload_starts_keyframe(payload: &[u8]) -> bool {
    match parse_vp8_descriptor(payload) {
        Some(d) if d.start_of_partition && d.partition_index == 0 => {
            payload.get(d.len).is_some_and(|b| b & 0x01 == 0)
        }
        _ => false,
    }
}

/// Whether an RTP VP8 payload starts a frame (S=1, partition 0), key or not.
pub fn vp8_payload_starts_frame(payload: &[u8]) -> bool {
    parse_vp8_descriptor(payload).is_some_and(|d| d.start_of_partition && d.partition_index == 0)
}

/// One frame of an asset, already split into RTP payloads.
#[derive(Debug, Clone)]
pub struct AssetFrame {
    pub payloads: Vec<Bytes>,
    pub keyframe: bool,
}

/// An asset packetized once: what every sender loops and every receiver checks against.
#[derive(Debug)]
pub struct MediaAsset {
    pub kind: TrackKind,
    pub frames: Vec<AssetFrame>,
    /// Wall-clock time between frames (1/15 s video, 20 ms audio).
    pub frame_duration: Duration,
    /// RTP clock rate (90 kHz video, 48 kHz Opus).
    pub clock_rate: u32,
    /// RTP timestamp increment per frame.
    pub ticks_per_frame: u32,
    /// FNV-1a 64 hashes of every payload the packetizer produces for this asset.
    pub hashes: HashSet<u64>,
    /// Indices of keyframes in `frames` (empty for audio).
    pub keyframe_indices: Vec<usize>,
}

impl MediaAsset {
    fn new(
        kind: TrackKind,
        frames: Vec<AssetFrame>,
        frame_duration: Duration,
        clock_rate: u32,
        ticks_per_frame: u32,
    ) -> Result<Self, AssetError> {
        if frames.is_empty() {
            return Err(AssetError {
                container: "asset",
                message: "no frames".into(),
            });
        }
        let hashes = frames
            .iter()
            .flat_map(|f| f.payloads.iter())
            .map(|p| fnv1a64(p))
            .collect();
        let keyframe_indices = frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.keyframe)
            .map(|(i, _)| i)
            .collect();
        Ok(Self {
            kind,
            frames,
            frame_duration,
            clock_rate,
            ticks_per_frame,
            hashes,
            keyframe_indices,
        })
    }

    /// The first keyframe at or after `index`, wrapping to the first keyframe of the asset.
    pub fn next_keyframe(&self, index: usize) -> usize {
        self.keyframe_indices
            .iter()
            .copied()
            .find(|&k| k >= index)
            .or_else(|| self.keyframe_indices.first().copied())
            .unwrap_or(index)
    }

    /// Total payload packets in one loop of the asset.
    pub fn packets_per_loop(&self) -> usize {
        self.frames.iter().map(|f| f.payloads.len()).sum()
    }

    /// Whether a received payload is one this asset's packetization produces.
    pub fn contains_payload(&self, payload: &[u8]) -> bool {
        self.hashes.contains(&fnv1a64(payload))
    }
}

fn build_video(ivf: &[u8]) -> Result<MediaAsset, AssetError> {
    let (header, frames) = assets::parse_ivf(ivf)?;
    if &header.fourcc != b"VP80" {
        return Err(AssetError {
            container: "ivf",
            message: "not VP8".into(),
        });
    }
    let frames = frames
        .iter()
        .map(|f| AssetFrame {
            payloads: packetize_vp8(&f.data, MAX_PAYLOAD),
            keyframe: assets::vp8_frame_is_keyframe(&f.data),
        })
        .collect();
    MediaAsset::new(
        TrackKind::Video,
        frames,
        Duration::from_nanos(1_000_000_000 / 15),
        90_000,
        6000,
    )
}

fn build_audio() -> Result<MediaAsset, AssetError> {
    let frames = assets::parse_ogg_opus(assets::OPUS_OGG)?
        .into_iter()
        .map(|p| AssetFrame {
            payloads: vec![p],
            keyframe: false,
        })
        .collect();
    MediaAsset::new(
        TrackKind::Audio,
        frames,
        Duration::from_millis(20),
        48_000,
        960,
    )
}

/// A synthetic presentation: each "slide" is shown this long…
pub const SLIDE_DURATION: Duration = Duration::from_secs(3);
/// …at this frame rate (a screen share of slides: high resolution, low frame rate).
pub const SLIDE_FPS: u32 = 2;

/// The slides of simulcast layer `ivf`: the asset's keyframes (distinct pictures of the test
/// pattern), each repeated as keyframes for [`SLIDE_DURATION`] at [`SLIDE_FPS`]; the slide
/// changes every few seconds, and a receiver can start at any frame. Every payload is one the
/// layer's video asset produces too, so a receiver recognises the layer (1280x720 on top).
fn build_slides(ivf: &[u8]) -> Result<MediaAsset, AssetError> {
    let (header, frames) = assets::parse_ivf(ivf)?;
    if &header.fourcc != b"VP80" {
        return Err(AssetError {
            container: "ivf",
            message: "not VP8".into(),
        });
    }
    let per_slide = (SLIDE_DURATION.as_secs() as usize) * (SLIDE_FPS as usize);
    let slides: Vec<AssetFrame> = frames
        .iter()
        .filter(|f| assets::vp8_frame_is_keyframe(&f.data))
        .flat_map(|f| {
            let frame = AssetFrame {
                payloads: packetize_vp8(&f.data, MAX_PAYLOAD),
                keyframe: true,
            };
            std::iter::repeat_n(frame, per_slide)
        })
        .collect();
    MediaAsset::new(
        TrackKind::Video,
        slides,
        Duration::from_nanos(1_000_000_000 / u64::from(SLIDE_FPS)),
        90_000,
        90_000 / SLIDE_FPS,
    )
}

static SLIDES: [Cell; VIDEO_LAYERS] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];

/// The packetized slides of simulcast layer `layer` (2 = 1280x720, the asset of a
/// non-simulcast screen share), built once.
pub fn slides_layer(layer: usize) -> Result<&'static MediaAsset, AssetError> {
    let (Some(cell), Some(ivf)) = (SLIDES.get(layer), assets::VP8_LAYER_IVFS.get(layer)) else {
        return Err(AssetError {
            container: "asset",
            message: format!("no slides layer {layer}"),
        });
    };
    cell.get_or_init(|| build_slides(ivf))
        .as_ref()
        .map_err(Clone::clone)
}

/// Simulcast layers a sender can publish (rids `q`, `h`, `f`), each looping its own asset.
pub const VIDEO_LAYERS: usize = 3;

type Cell = OnceLock<Result<MediaAsset, AssetError>>;
static VIDEO: [Cell; VIDEO_LAYERS] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
static AUDIO: Cell = OnceLock::new();

/// The packetized asset for `kind`, built once per process. For video this is layer 0 (the
/// asset of every non-simulcast sender).
pub fn asset(kind: TrackKind) -> Result<&'static MediaAsset, AssetError> {
    match kind {
        TrackKind::Video => video_layer(0),
        TrackKind::Audio => AUDIO
            .get_or_init(build_audio)
            .as_ref()
            .map_err(Clone::clone),
    }
}

/// The packetized VP8 asset of simulcast layer `layer` (0 = low … 2 = high), built once.
pub fn video_layer(layer: usize) -> Result<&'static MediaAsset, AssetError> {
    let (Some(cell), Some(ivf)) = (VIDEO.get(layer), assets::VP8_LAYER_IVFS.get(layer)) else {
        return Err(AssetError {
            container: "asset",
            message: format!("no video layer {layer}"),
        });
    };
    cell.get_or_init(|| build_video(ivf))
        .as_ref()
        .map_err(Clone::clone)
}

/// Which asset of `kind` a received payload belongs to: `Some(layer)` (the simulcast layer of a
/// video asset; always 0 for audio) if its FNV-1a hash is in that asset's packetization, `None`
/// if it is in none (corrupted, or not ours).
pub fn find_payload(kind: TrackKind, payload: &[u8]) -> Option<u8> {
    let hash = fnv1a64(payload);
    match kind {
        TrackKind::Audio => asset(kind)
            .is_ok_and(|a| a.hashes.contains(&hash))
            .then_some(0),
        TrackKind::Video => (0..VIDEO_LAYERS)
            .find(|&l| video_layer(l).is_ok_and(|a| a.hashes.contains(&hash)))
            .and_then(|l| u8::try_from(l).ok()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn slides_are_high_resolution_keyframes_at_a_low_frame_rate() {
        let top = slides_layer(2).unwrap();
        assert!(top.frames.len() >= 2 * 6, "at least two slides");
        assert!(top.frames.iter().all(|f| f.keyframe));
        assert_eq!(top.frame_duration, Duration::from_millis(500));
        // Two different pictures, each shown for 3 s.
        assert_ne!(top.frames[0].payloads, top.frames[6].payloads);
        assert_eq!(top.frames[0].payloads, top.frames[5].payloads);
        // A receiver recognises the 1280x720 layer from any slide's payload.
        let first = &top.frames[6].payloads[0];
        assert_eq!(find_payload(TrackKind::Video, first), Some(2));
        let (h, _) = crate::assets::parse_ivf(crate::assets::VP8_IVF_HIGH).unwrap();
        assert_eq!((h.width, h.height), (1280, 720));
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn vp8_packetizer_splits_with_start_bit_and_reassembles() {
        let frame: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let payloads = packetize_vp8(&frame, 1200);
        assert_eq!(payloads.len(), 3);
        assert_eq!(payloads[0][0], 0x10);
        assert!(payloads[1..].iter().all(|p| p[0] == 0x00));
        assert!(payloads.iter().all(|p| p.len() <= 1200));
        let joined: Vec<u8> = payloads.iter().flat_map(|p| p[1..].to_vec()).collect();
        assert_eq!(joined, frame);
    }

    #[test]
    fn vp8_descriptor_table() {
        // (payload, Some((start, pid, picture_id, len)))
        type Want = Option<(bool, u8, Option<u16>, usize)>;
        let cases: &[(&[u8], Want)] = &[
            (&[0x10, 0x00], Some((true, 0, None, 1))),
            (&[0x00, 0x01], Some((false, 0, None, 1))),
            (&[0x13, 0x00], Some((true, 3, None, 1))),
            // X, I with 7-bit PictureID 0x25
            (&[0x90, 0x80, 0x25, 0x00], Some((true, 0, Some(0x25), 3))),
            // X, I with 15-bit PictureID 0x1234, L, T
            (
                &[0x90, 0xe0, 0x92, 0x34, 0x01, 0x20, 0x00],
                Some((true, 0, Some(0x1234), 6)),
            ),
            // truncated: X set but no extension byte
            (&[0x90], None),
            // truncated: 15-bit PictureID missing its low byte
            (&[0x90, 0x80, 0x92], None),
            (&[], None),
        ];
        for (payload, want) in cases {
            let got = parse_vp8_descriptor(payload)
                .map(|d| (d.start_of_partition, d.partition_index, d.picture_id, d.len));
            assert_eq!(got, *want, "payload {payload:02x?}");
        }
    }

    #[test]
    fn vp8_keyframe_detection() {
        assert!(vp8_payload_starts_keyframe(&[0x10, 0x00, 0x00]));
        assert!(!vp8_payload_starts_keyframe(&[0x10, 0x01, 0x00])); // interframe
        assert!(!vp8_payload_starts_keyframe(&[0x00, 0x00, 0x00])); // not a start
        assert!(!vp8_payload_starts_keyframe(&[0x11, 0x00])); // partition 1
        assert!(!vp8_payload_starts_keyframe(&[0x10])); // no VP8 header
        assert!(vp8_payload_starts_keyframe(&[0x90, 0x80, 0x05, 0x00])); // with PictureID
    }

    #[test]
    fn video_asset_packetization_is_stable() {
        let v = asset(TrackKind::Video).unwrap();
        assert_eq!(v.frames.len(), 60);
        assert_eq!(v.keyframe_indices, vec![0, 30]);
        assert_eq!(v.ticks_per_frame, 6000);
        // Keyframes span several packets; the first one is detected as a keyframe start.
        assert!(v.frames[0].payloads.len() >= 4);
        assert!(vp8_payload_starts_keyframe(&v.frames[0].payloads[0]));
        assert!(!vp8_payload_starts_keyframe(&v.frames[1].payloads[0]));
        assert!(vp8_payload_starts_frame(&v.frames[1].payloads[0]));
        // Hash set: every payload is found, a modified one is not.
        for f in &v.frames {
            for p in &f.payloads {
                assert!(v.contains_payload(p));
            }
        }
        let mut bad = v.frames[5].payloads[0].to_vec();
        bad[3] ^= 0x01;
        assert!(!v.contains_payload(&bad));
        assert_eq!(v.next_keyframe(0), 0);
        assert_eq!(v.next_keyframe(1), 30);
        assert_eq!(v.next_keyframe(31), 0);
        assert!(v.packets_per_loop() > 60);
    }

    #[test]
    fn every_layer_payload_is_found_in_its_own_layer_only() {
        assert!(std::ptr::eq(
            video_layer(0).unwrap(),
            asset(TrackKind::Video).unwrap()
        ));
        assert!(video_layer(VIDEO_LAYERS).is_err());
        let layers: Vec<&MediaAsset> = (0..VIDEO_LAYERS).map(|l| video_layer(l).unwrap()).collect();
        for (l, a) in layers.iter().enumerate() {
            assert_eq!(a.frames.len(), 60, "layer {l}");
            assert_eq!(a.keyframe_indices, vec![0, 30], "layer {l}");
            assert_eq!(a.ticks_per_frame, 6000);
            for other in &layers[l + 1..] {
                assert!(a.hashes.is_disjoint(&other.hashes), "layer {l} overlaps");
            }
            for p in a.frames.iter().flat_map(|f| f.payloads.iter()) {
                assert_eq!(find_payload(TrackKind::Video, p), Some(l as u8));
            }
        }
        // Higher layers carry more packets per loop.
        assert!(layers[0].packets_per_loop() < layers[1].packets_per_loop());
        assert!(layers[1].packets_per_loop() < layers[2].packets_per_loop());
        // Table: (kind, payload, expected layer)
        let a = asset(TrackKind::Audio).unwrap();
        let mut bad = layers[2].frames[7].payloads[0].to_vec();
        bad[1] ^= 0x01;
        let cases: Vec<(TrackKind, &[u8], Option<u8>)> = vec![
            (TrackKind::Video, &layers[0].frames[0].payloads[0], Some(0)),
            (TrackKind::Video, &layers[1].frames[30].payloads[1], Some(1)),
            (TrackKind::Video, &layers[2].frames[59].payloads[0], Some(2)),
            (TrackKind::Video, &bad, None),
            (TrackKind::Video, &a.frames[0].payloads[0], None),
            (TrackKind::Audio, &a.frames[3].payloads[0], Some(0)),
            (TrackKind::Audio, &layers[1].frames[0].payloads[0], None),
            (TrackKind::Video, b"", None),
        ];
        for (kind, payload, want) in cases {
            assert_eq!(
                find_payload(kind, payload),
                want,
                "{kind:?} {:02x?}",
                &payload[..payload.len().min(4)]
            );
        }
    }

    #[test]
    fn audio_asset_is_one_payload_per_20ms() {
        let a = asset(TrackKind::Audio).unwrap();
        assert_eq!(a.ticks_per_frame, 960);
        assert_eq!(a.frame_duration, Duration::from_millis(20));
        assert!(a
            .frames
            .iter()
            .all(|f| f.payloads.len() == 1 && !f.keyframe));
        assert!(a.keyframe_indices.is_empty());
        assert_eq!(a.next_keyframe(7), 7);
        // Video and audio payload sets do not overlap.
        let v = asset(TrackKind::Video).unwrap();
        assert!(a.hashes.is_disjoint(&v.hashes));
    }
}
