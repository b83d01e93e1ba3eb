//! Payload inspection for the forwarding path: the VP8 payload descriptor (RFC 7741), whether a
//! packet starts a VP8 or H.264 keyframe (RFC 7741 §4.3, RFC 6184), and rewriting a VP8
//! picture id (for resuming a paused track and, later, simulcast layer switches).
//!
//! Everything here takes untrusted bytes from the network: out-of-range input yields `None` or
//! `false`, never a panic. No I/O, no allocation except into a caller's reused buffer.

use bytes::BytesMut;

use crate::router::Codec;

/// VP8 RTP payload descriptor (RFC 7741 §4.2).
///
/// ```text
///       0 1 2 3 4 5 6 7
///      +-+-+-+-+-+-+-+-+
///      |X|R|N|S|R| PID | (REQUIRED)
///      +-+-+-+-+-+-+-+-+
/// X:   |I|L|T|K| RSV   | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// I:   |M| PictureID   | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
///      |   PictureID   | (present when M = 1)
///      +-+-+-+-+-+-+-+-+
/// L:   |   TL0PICIDX   | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// T/K: |TID|Y| KEYIDX  | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S bit: the first payload octet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index (0–7).
    pub partition_index: u8,
    /// The picture id, 7 or 15 bits wide (see [`Self::picture_id_15bit`]).
    pub picture_id: Option<u16>,
    /// M bit: the picture id is 15 bits (two octets) rather than 7.
    pub picture_id_15bit: bool,
    pub tl0_pic_idx: Option<u8>,
    /// TID, present when the T bit is set.
    pub temporal_id: Option<u8>,
    /// Y bit (only meaningful, and only ever true, when the T bit is set).
    pub layer_sync: bool,
    /// KEYIDX, present when the K bit is set.
    pub key_idx: Option<u8>,
    /// Bytes of descriptor before the VP8 payload header.
    pub header_len: usize,
    /// S=1, PID=0 and the VP8 payload header's P bit is 0 (RFC 7741 §4.3): first packet of a key frame.
    pub keyframe: bool,
}

const VP8_X: u8 = 0x80;
const VP8_S: u8 = 0x10;
const VP8_PID: u8 = 0x07;
const VP8_I: u8 = 0x80;
const VP8_L: u8 = 0x40;
const VP8_T: u8 = 0x20;
const VP8_K: u8 = 0x10;
const VP8_M: u8 = 0x80;
/// Inverse key frame flag, the low bit of the VP8 payload header's first octet.
const VP8_P: u8 = 0x01;
/// The VP8 payload header (RFC 7741 §4.3) present at the start of partition 0.
const VP8_PAYLOAD_HEADER_LEN: usize = 3;

/// Parse the VP8 payload descriptor at the start of an RTP payload.
///
/// `None` when the descriptor is truncated, when no VP8 payload follows it, or when a packet
/// starting partition 0 is too short for the 3-octet VP8 payload header. Reserved bits are
/// ignored, as RFC 7741 asks of receivers.
pub fn parse_vp8(payload: &[u8]) -> Option<Vp8Descriptor> {
    let first = *payload.first()?;
    let start_of_partition = first & VP8_S != 0;
    let partition_index = first & VP8_PID;
    let mut d = Vp8Descriptor {
        start_of_partition,
        partition_index,
        picture_id: None,
        picture_id_15bit: false,
        tl0_pic_idx: None,
        temporal_id: None,
        layer_sync: false,
        key_idx: None,
        header_len: 1,
        keyframe: false,
    };
    if first & VP8_X != 0 {
        let x = *payload.get(1)?;
        let mut at = 2;
        if x & VP8_I != 0 {
            let b = *payload.get(at)?;
            if b & VP8_M != 0 {
                let lo = *payload.get(at + 1)?;
                d.picture_id = Some(u16::from_be_bytes([b & !VP8_M, lo]));
                d.picture_id_15bit = true;
                at += 2;
            } else {
                d.picture_id = Some(u16::from(b));
                at += 1;
            }
        }
        if x & VP8_L != 0 {
            d.tl0_pic_idx = Some(*payload.get(at)?);
            at += 1;
        }
        if x & (VP8_T | VP8_K) != 0 {
            let b = *payload.get(at)?;
            if x & VP8_T != 0 {
                d.temporal_id = Some(b >> 6);
                d.layer_sync = b & 0x20 != 0;
            }
            if x & VP8_K != 0 {
                d.key_idx = Some(b & 0x1F);
            }
            at += 1;
        }
        d.header_len = at;
    }
    let vp8 = payload.get(d.header_len..)?;
    if start_of_partition && partition_index == 0 {
        if vp8.len() < VP8_PAYLOAD_HEADER_LEN {
            return None;
        }
        d.keyframe = vp8.first()? & VP8_P == 0;
    } else if vp8.is_empty() {
        return None;
    }
    Some(d)
}

const H264_NAL_TYPE: u8 = 0x1F;
const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;
const H264_FU_START: u8 = 0x80;

/// First packet of an H.264 IDR/keyframe: NAL type 5 (IDR) or 7 (SPS) directly, inside a
/// STAP-A (24), or an FU-A (28) with the start bit whose NAL type is 5 (RFC 6184).
///
/// A STAP-A whose aggregation units overrun the packet (or are empty) is malformed: `false`.
pub fn h264_is_keyframe(payload: &[u8]) -> bool {
    let Some(&nal) = payload.first() else {
        return false;
    };
    match nal & H264_NAL_TYPE {
        H264_IDR | H264_SPS => true,
        H264_STAP_A => stap_a_has_keyframe(payload.get(1..).unwrap_or_default()),
        H264_FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & H264_FU_START != 0 && fu & H264_NAL_TYPE == H264_IDR),
        _ => false,
    }
}

/// The aggregation units of a STAP-A (after its NAL header): `[size: u16][NAL unit]`...
fn stap_a_has_keyframe(mut units: &[u8]) -> bool {
    let mut found = false;
    while !units.is_empty() {
        let Some(&[hi, lo]) = units.get(..2) else {
            return false;
        };
        let size = usize::from(u16::from_be_bytes([hi, lo]));
        let Some(nal) = units.get(2..2 + size) else {
            return false;
        };
        let Some(&header) = nal.first() else {
            return false;
        };
        found |= matches!(header & H264_NAL_TYPE, H264_IDR | H264_SPS);
        units = units.get(2 + size..).unwrap_or_default();
    }
    found
}

/// Whether `payload` (of `codec`) is the first packet of a keyframe. Audio never is.
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Opus => false,
        Codec::Vp8 => parse_vp8(payload).is_some_and(|d| d.keyframe),
        Codec::H264 => h264_is_keyframe(payload),
    }
}

/// Write `payload` with its VP8 picture id (and TL0PICIDX, when both the descriptor and
/// `tl0_pic_idx` have one) replaced into `out` (cleared first). Keeps the original picture-id
/// width: 7-bit ids wrap at 128, 15-bit ids at 32768.
///
/// `desc` must be what [`parse_vp8`] returns for `payload`; it is checked, and a payload that
/// does not parse to it is treated as malformed. Returns false (and leaves `out` empty) if the
/// payload has no picture id or is malformed.
pub fn rewrite_vp8_picture_id(
    payload: &[u8],
    desc: &Vp8Descriptor,
    picture_id: u16,
    tl0_pic_idx: Option<u8>,
    out: &mut BytesMut,
) -> bool {
    out.clear();
    if desc.picture_id.is_none() || parse_vp8(payload).as_ref() != Some(desc) {
        return false;
    }
    // A picture id implies the X and I bits, so it starts at octet 2 and TL0PICIDX follows it.
    let (id, id_len) = if desc.picture_id_15bit {
        ((picture_id & 0x7FFF) | u16::from(VP8_M) << 8, 2)
    } else {
        (picture_id & 0x7F, 1)
    };
    out.extend_from_slice(payload);
    let id_bytes = id.to_be_bytes();
    let id_written = match (out.get_mut(2..2 + id_len), id_bytes.get(2 - id_len..)) {
        (Some(dst), Some(src)) => {
            dst.copy_from_slice(src);
            true
        }
        _ => false,
    };
    let tl0_written = match (desc.tl0_pic_idx, tl0_pic_idx) {
        (Some(_), Some(t)) => out.get_mut(2 + id_len).map(|b| *b = t).is_some(),
        _ => true,
    };
    if !(id_written && tl0_written) {
        out.clear();
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A descriptor with no optional fields; cases override what they set.
    const BASE: Vp8Descriptor = Vp8Descriptor {
        start_of_partition: false,
        partition_index: 0,
        picture_id: None,
        picture_id_15bit: false,
        tl0_pic_idx: None,
        temporal_id: None,
        layer_sync: false,
        key_idx: None,
        header_len: 1,
        keyframe: false,
    };

    /// Minimal well-formed VP8 payloads (descriptor + the fewest payload bytes that parse), so
    /// every strict prefix is truncated. Payload-header octet 0x50 has P=0 (key frame), 0x51 P=1.
    fn vp8_cases() -> Vec<(&'static str, Vec<u8>, Vp8Descriptor)> {
        vec![
            (
                "no X, S=1 PID=0, key frame",
                vec![0x10, 0x50, 0x02, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    keyframe: true,
                    ..BASE
                },
            ),
            (
                "no X, S=1 PID=0, delta frame (P=1)",
                vec![0x10, 0x51, 0x02, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    ..BASE
                },
            ),
            ("no X, continuation (S=0)", vec![0x00, 0xAA], BASE),
            (
                "no X, S=1 PID=1: no payload header, P bit not read",
                vec![0x11, 0x50],
                Vp8Descriptor {
                    start_of_partition: true,
                    partition_index: 1,
                    ..BASE
                },
            ),
            (
                "X with no optional fields",
                vec![0x90, 0x00, 0x50, 0x00, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    header_len: 2,
                    keyframe: true,
                    ..BASE
                },
            ),
            (
                "X I, 7-bit picture id, delta",
                vec![0x90, 0x80, 0x25, 0x51, 0x00, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    picture_id: Some(0x25),
                    header_len: 3,
                    ..BASE
                },
            ),
            (
                "X I, 15-bit picture id, key frame",
                vec![0x90, 0x80, 0x81, 0x23, 0x50, 0x00, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    picture_id: Some(0x0123),
                    picture_id_15bit: true,
                    header_len: 4,
                    keyframe: true,
                    ..BASE
                },
            ),
            (
                "X I L, 15-bit picture id 0x7FFF",
                vec![0x90, 0xC0, 0xFF, 0xFF, 0x07, 0x51, 0x00, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    picture_id: Some(0x7FFF),
                    picture_id_15bit: true,
                    tl0_pic_idx: Some(7),
                    header_len: 5,
                    ..BASE
                },
            ),
            (
                "X I L T, 7-bit id, TID=2 Y=1, continuation",
                vec![0x80, 0xE0, 0x7F, 0x09, 0xA0, 0xCC],
                Vp8Descriptor {
                    picture_id: Some(0x7F),
                    tl0_pic_idx: Some(9),
                    temporal_id: Some(2),
                    layer_sync: true,
                    header_len: 5,
                    ..BASE
                },
            ),
            (
                "X I T K, TID=1 Y=0 KEYIDX=17, key frame",
                vec![0x90, 0xB0, 0x05, 0x51, 0x50, 0x00, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    picture_id: Some(5),
                    temporal_id: Some(1),
                    key_idx: Some(17),
                    header_len: 4,
                    keyframe: true,
                    ..BASE
                },
            ),
            (
                "X K only: TID and Y ignored",
                vec![0x90, 0x10, 0xFF, 0x51, 0x00, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    key_idx: Some(31),
                    header_len: 3,
                    ..BASE
                },
            ),
            (
                "X L only (no picture id)",
                vec![0x90, 0x40, 0x2A, 0x51, 0x00, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    tl0_pic_idx: Some(42),
                    header_len: 3,
                    ..BASE
                },
            ),
            (
                "X I L T K, 15-bit id, all fields",
                vec![0x80, 0xF0, 0xAB, 0xCD, 0xFE, 0x7E, 0x01],
                Vp8Descriptor {
                    picture_id: Some(0x2BCD),
                    picture_id_15bit: true,
                    tl0_pic_idx: Some(0xFE),
                    temporal_id: Some(1),
                    layer_sync: true,
                    key_idx: Some(30),
                    header_len: 6,
                    ..BASE
                },
            ),
            (
                "reserved and N bits ignored",
                vec![0xF8, 0x8F, 0x11, 0x50, 0x00, 0x00],
                Vp8Descriptor {
                    start_of_partition: true,
                    picture_id: Some(0x11),
                    header_len: 3,
                    keyframe: true,
                    ..BASE
                },
            ),
        ]
    }

    #[test]
    fn parse_vp8_descriptors() {
        for (name, bytes, want) in vp8_cases() {
            assert_eq!(parse_vp8(&bytes), Some(want), "{name}");
            assert_eq!(is_keyframe(Codec::Vp8, &bytes), want.keyframe, "{name}");
        }
    }

    #[test]
    fn parse_vp8_rejects_malformed() {
        let cases: &[(&str, &[u8])] = &[
            ("empty", &[]),
            ("descriptor without payload", &[0x00]),
            ("X descriptor without payload", &[0x80, 0x00]),
            (
                "partition 0 start, 1 of 3 payload header octets",
                &[0x10, 0x50],
            ),
            (
                "partition 0 start, 2 of 3 payload header octets",
                &[0x10, 0x50, 0x00],
            ),
            (
                "full descriptor, no payload",
                &[0x90, 0xF0, 0x80, 0x01, 0x02, 0x03],
            ),
        ];
        for (name, bytes) in cases {
            assert_eq!(parse_vp8(bytes), None, "{name}");
        }
    }

    #[test]
    fn truncated_vp8_is_rejected_at_every_length() {
        let mut out = BytesMut::new();
        for (name, bytes, desc) in vp8_cases() {
            for len in 0..bytes.len() {
                let cut = &bytes[..len];
                assert_eq!(parse_vp8(cut), None, "{name}: {len} bytes");
                assert!(!is_keyframe(Codec::Vp8, cut), "{name}: {len} bytes");
                out.extend_from_slice(b"stale");
                assert!(
                    !rewrite_vp8_picture_id(cut, &desc, 1, Some(1), &mut out),
                    "{name}: {len} bytes"
                );
                assert!(out.is_empty(), "{name}: {len} bytes");
            }
        }
    }

    /// (payload, new picture id, new tl0, expected output; None = refused)
    type RewriteCase = (&'static [u8], u16, Option<u8>, Option<&'static [u8]>);

    #[test]
    fn rewrites_vp8_picture_id() {
        let cases: &[RewriteCase] = &[
            (
                &[0x90, 0x80, 0x25, 0x51, 0x00, 0x00],
                0x26,
                None,
                Some(&[0x90, 0x80, 0x26, 0x51, 0x00, 0x00]),
            ),
            // 7-bit ids wrap at 128: 200 % 128 = 72.
            (
                &[0x90, 0x80, 0x25, 0x51, 0x00, 0x00],
                200,
                None,
                Some(&[0x90, 0x80, 0x48, 0x51, 0x00, 0x00]),
            ),
            // No TL0PICIDX in the packet: the new one is ignored.
            (
                &[0x90, 0x80, 0x25, 0x51, 0x00, 0x00],
                1,
                Some(9),
                Some(&[0x90, 0x80, 0x01, 0x51, 0x00, 0x00]),
            ),
            // 15-bit ids wrap at 32768 and keep the M bit.
            (
                &[0x90, 0xC0, 0xFF, 0xFF, 0x07, 0x51, 0x00, 0x00],
                0x8001,
                Some(0x10),
                Some(&[0x90, 0xC0, 0x80, 0x01, 0x10, 0x51, 0x00, 0x00]),
            ),
            // tl0_pic_idx None keeps the packet's own.
            (
                &[0x90, 0xC0, 0xFF, 0xFF, 0x07, 0x51, 0x00, 0x00],
                0x1234,
                None,
                Some(&[0x90, 0xC0, 0x92, 0x34, 0x07, 0x51, 0x00, 0x00]),
            ),
            (
                &[0x80, 0xE0, 0x7F, 0x09, 0xA0, 0xCC],
                0,
                Some(0xFF),
                Some(&[0x80, 0xE0, 0x00, 0xFF, 0xA0, 0xCC]),
            ),
            // No picture id: refused.
            (&[0x90, 0x40, 0x2A, 0x51, 0x00, 0x00], 1, Some(1), None),
            (&[0x10, 0x50, 0x02, 0x00], 1, None, None),
        ];
        let mut out = BytesMut::with_capacity(64);
        for (i, &(payload, id, tl0, want)) in cases.iter().enumerate() {
            let desc = parse_vp8(payload).unwrap();
            out.extend_from_slice(b"stale");
            let ok = rewrite_vp8_picture_id(payload, &desc, id, tl0, &mut out);
            assert_eq!(ok.then_some(&out[..]), want, "case {i}");
            if !ok {
                assert!(out.is_empty(), "case {i}");
            }
        }
    }

    #[test]
    fn rewrite_refuses_a_descriptor_of_another_packet() {
        let seven = [0x90, 0x80, 0x25, 0x51, 0x00, 0x00];
        let fifteen = [0x90, 0x80, 0x81, 0x23, 0x50, 0x00, 0x00];
        let mut out = BytesMut::new();
        let d15 = parse_vp8(&fifteen).unwrap();
        assert!(!rewrite_vp8_picture_id(&seven, &d15, 1, None, &mut out));
        assert!(out.is_empty());
        let d7 = parse_vp8(&seven).unwrap();
        assert!(!rewrite_vp8_picture_id(&fifteen, &d7, 1, None, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn h264_keyframes() {
        let cases: &[(&str, &[u8], bool)] = &[
            ("empty", &[], false),
            ("single NAL IDR", &[0x65, 0x88, 0x84], true),
            ("single NAL SPS", &[0x67, 0x42, 0x00, 0x1F], true),
            ("single NAL PPS", &[0x68, 0xCE], false),
            ("single NAL non-IDR slice", &[0x41, 0x9A], false),
            (
                "STAP-A with SPS and PPS",
                &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE],
                true,
            ),
            (
                "STAP-A with PPS and IDR",
                &[0x78, 0x00, 0x02, 0x68, 0xCE, 0x00, 0x02, 0x65, 0x88],
                true,
            ),
            (
                "STAP-A with non-IDR slices",
                &[0x78, 0x00, 0x02, 0x41, 0x9A, 0x00, 0x01, 0x41],
                false,
            ),
            ("STAP-A header only", &[0x78], false),
            (
                "STAP-A unit overruns",
                &[0x78, 0x00, 0x05, 0x67, 0x42],
                false,
            ),
            ("STAP-A empty unit", &[0x78, 0x00, 0x00], false),
            (
                "STAP-A SPS then a lone size octet",
                &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00],
                false,
            ),
            ("FU-A start of IDR", &[0x7C, 0x85, 0x88, 0x84], true),
            ("FU-A middle of IDR", &[0x7C, 0x05, 0x88, 0x84], false),
            ("FU-A end of IDR", &[0x7C, 0x45, 0x88], false),
            ("FU-A start of non-IDR slice", &[0x5C, 0x81, 0x9A], false),
            ("FU-A indicator only", &[0x7C], false),
            (
                "STAP-B is not used by WebRTC",
                &[0x79, 0x00, 0x00, 0x00, 0x02, 0x67, 0x42],
                false,
            ),
        ];
        for &(name, bytes, want) in cases {
            assert_eq!(h264_is_keyframe(bytes), want, "{name}");
            assert_eq!(is_keyframe(Codec::H264, bytes), want, "{name}");
        }
    }

    #[test]
    fn is_keyframe_dispatches_by_codec() {
        let vp8_key = [0x10, 0x50, 0x02, 0x00];
        let h264_idr = [0x65, 0x88, 0x84];
        // (codec, payload, expected)
        let cases: &[(Codec, &[u8], bool)] = &[
            (Codec::Opus, &vp8_key, false),
            (Codec::Opus, &h264_idr, false),
            (Codec::Vp8, &vp8_key, true),
            (Codec::H264, &h264_idr, true),
            // 0x65 as a VP8 descriptor: no X, S=0 — a continuation, not a key frame.
            (Codec::Vp8, &h264_idr, false),
        ];
        for &(codec, bytes, want) in cases {
            assert_eq!(is_keyframe(codec, bytes), want, "{codec:?} {bytes:02x?}");
        }
    }

    /// xorshift64: deterministic pseudo-random bytes without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Random bytes, biased so that most descriptors have X and I set.
        fn payload(&mut self) -> Vec<u8> {
            let len = (self.next() % 24) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
            if self.next() & 3 != 0 {
                if let Some(b) = v.get_mut(0) {
                    *b |= 0x80;
                }
                if let Some(b) = v.get_mut(1) {
                    *b |= 0x80;
                }
            }
            v
        }
    }

    #[test]
    fn random_payloads_never_panic_and_rewrite_round_trips() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut out = BytesMut::new();
        let (mut parsed, mut rewritten) = (0, 0);
        let mut previous: Option<Vp8Descriptor> = None;
        for i in 0..5000 {
            let payload = rng.payload();
            for codec in [Codec::Opus, Codec::Vp8, Codec::H264] {
                let _ = is_keyframe(codec, &payload);
            }
            let _ = h264_is_keyframe(&payload);
            let new_id = rng.next() as u16;
            let new_tl0 = (rng.next() & 1 == 0).then(|| rng.next() as u8);
            // Someone else's descriptor: refused or applied, never a panic.
            if let Some(other) = previous {
                if rewrite_vp8_picture_id(&payload, &other, new_id, new_tl0, &mut out) {
                    assert_eq!(parse_vp8(&payload), Some(other), "#{i}");
                } else {
                    assert!(out.is_empty(), "#{i}");
                }
            }
            let Some(d) = parse_vp8(&payload) else {
                assert!(!is_keyframe(Codec::Vp8, &payload));
                continue;
            };
            parsed += 1;
            previous = Some(d);
            assert!(d.header_len < payload.len(), "#{i} {payload:02x?}");
            let ok = rewrite_vp8_picture_id(&payload, &d, new_id, new_tl0, &mut out);
            assert_eq!(ok, d.picture_id.is_some(), "#{i} {payload:02x?}");
            if !ok {
                assert!(out.is_empty());
                continue;
            }
            rewritten += 1;
            let again = parse_vp8(&out).unwrap();
            let mask = if d.picture_id_15bit { 0x7FFF } else { 0x7F };
            let tl0 = d.tl0_pic_idx.map(|old| new_tl0.unwrap_or(old));
            assert_eq!(
                again,
                Vp8Descriptor {
                    picture_id: Some(new_id & mask),
                    tl0_pic_idx: tl0,
                    ..d
                },
                "#{i} {payload:02x?}"
            );
            // Every octet but the picture id and TL0PICIDX is untouched.
            let id_len = if d.picture_id_15bit { 2 } else { 1 };
            let changed = 2..2 + id_len + usize::from(d.tl0_pic_idx.is_some());
            assert_eq!(out.len(), payload.len());
            for (j, (a, b)) in payload.iter().zip(out.iter()).enumerate() {
                if !changed.contains(&j) {
                    assert_eq!(a, b, "#{i} octet {j} of {payload:02x?}");
                }
            }
        }
        assert!(parsed > 2000 && rewritten > 1000, "{parsed} {rewritten}");
    }

    #[test]
    fn parse_vp8_agrees_with_rtc_depacketizer() {
        use rtc::rtp::codec::vp8::Vp8Packet;
        use rtc::rtp::packetizer::Depacketizer;
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        let mut compared = 0;
        for _ in 0..5000 {
            let payload = bytes::Bytes::from(rng.payload());
            let (Some(ours), Ok(vp8)) = (
                parse_vp8(&payload),
                Vp8Packet::default().depacketize(&payload),
            ) else {
                continue;
            };
            let mut theirs = Vp8Packet::default();
            let _ = theirs.depacketize(&payload);
            compared += 1;
            assert_eq!(ours.header_len, payload.len() - vp8.len(), "{payload:02x?}");
            assert_eq!(ours.picture_id.unwrap_or(0), theirs.picture_id);
            assert_eq!(ours.tl0_pic_idx.unwrap_or(0), theirs.tl0_pic_idx);
            assert_eq!(ours.temporal_id.unwrap_or(0), theirs.tid);
            assert_eq!(u8::from(ours.layer_sync), theirs.y);
            assert_eq!(ours.key_idx.unwrap_or(0), theirs.key_idx);
            assert_eq!(ours.partition_index, theirs.pid);
            assert_eq!(u8::from(ours.start_of_partition), theirs.s);
        }
        assert!(compared > 1000, "{compared}");
    }
}
