//! H.264 for the recorder: RTP depacketization (RFC 6184, packetization-mode 1: single NAL
//! units, STAP-A, FU-A) into access units, the SPS fields a Matroska track needs (coded size),
//! and the `avcC` record (ISO/IEC 14496-15 §5.3.3.1) that is the track's CodecPrivate.
//!
//! An access unit is the packets of one RTP timestamp, up to the one with the marker bit. Its
//! NAL units are written length-prefixed (4 bytes, big-endian), as Matroska's `V_MPEG4/ISO/AVC`
//! wants; SPS and PPS are taken out of the stream into the file's `avcC` (a different SPS or
//! PPS, e.g. a resolution change, starts a new file), access unit delimiters are dropped.
//! After a loss (the jitter buffer's [`Released::Loss`], a fragment whose start is missing, an
//! access unit without its marker) everything is dropped up to the next IDR, and the caller
//! asks the publisher for it; the same until the first IDR with a known SPS/PPS.
//!
//! All input comes from the network: anything malformed is dropped and counted, never a panic.

use super::depack::{Frame, Released, StreamBroken};
use std::time::Instant;

/// Largest access unit assembled (a bigger one is dropped as garbage).
const MAX_FRAME: usize = 4 << 20;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// The parameter sets of a stream and the coded size its SPS gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Params {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub width: u16,
    pub height: u16,
}

impl H264Params {
    /// From an SPS and a PPS NAL unit (with their one-byte NAL headers); `None` when the SPS
    /// does not parse or either is empty.
    pub fn new(sps: Vec<u8>, pps: Vec<u8>) -> Option<Self> {
        if pps.is_empty() {
            return None;
        }
        let (width, height) = sps_size(&sps)?;
        Some(Self {
            sps,
            pps,
            width,
            height,
        })
    }

    /// The AVCDecoderConfigurationRecord (`avcC`): one SPS, one PPS, 4-byte NAL lengths.
    pub fn avcc(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(11 + self.sps.len() + self.pps.len());
        v.push(1); // configurationVersion
        v.push(self.sps.get(1).copied().unwrap_or(66)); // AVCProfileIndication
        v.push(self.sps.get(2).copied().unwrap_or(0)); // profile_compatibility
        v.push(self.sps.get(3).copied().unwrap_or(30)); // AVCLevelIndication
        v.push(0xFC | 3); // reserved + lengthSizeMinusOne = 3
        v.push(0xE0 | 1); // reserved + numOfSequenceParameterSets = 1
        v.extend_from_slice(&(self.sps.len().min(0xFFFF) as u16).to_be_bytes());
        v.extend_from_slice(&self.sps);
        v.push(1); // numOfPictureParameterSets
        v.extend_from_slice(&(self.pps.len().min(0xFFFF) as u16).to_be_bytes());
        v.extend_from_slice(&self.pps);
        v
    }
}

/// Reads the bits of an RBSP (emulation prevention bytes removed).
struct Bits {
    data: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn new(nal_body: &[u8]) -> Self {
        let mut data = Vec::with_capacity(nal_body.len());
        let mut zeros = 0;
        for &b in nal_body {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            data.push(b);
        }
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Exp-Golomb ue(v).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// Exp-Golomb se(v).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// The coded picture size (cropping applied) from an SPS NAL unit (H.264 §7.3.2.1.1).
pub fn sps_size(sps: &[u8]) -> Option<(u16, u16)> {
    if sps.first()? & 0x1F != NAL_SPS {
        return None;
    }
    let mut b = Bits::new(sps.get(1..)?);
    let profile = b.bits(8)?;
    b.bits(16)?; // constraint flags, level
    b.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_planes = 0;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = b.ue()?;
        if chroma_format == 3 {
            separate_planes = b.bit()?;
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.bit()?; // qpprime_y_zero_transform_bypass_flag
        if b.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + b.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            b.bit()?;
            b.se()?;
            b.se()?;
            let n = b.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                b.se()?;
            }
        }
        _ => {}
    }
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag
    let w_mbs = u64::from(b.ue()?) + 1;
    let h_units = u64::from(b.ue()?) + 1;
    let frame_mbs_only = u64::from(b.bit()?);
    if frame_mbs_only == 0 {
        b.bit()?; // mb_adaptive_frame_field_flag
    }
    b.bit()?; // direct_8x8_inference_flag
    let (mut l, mut r, mut t, mut bo) = (0u64, 0u64, 0u64, 0u64);
    if b.bit()? == 1 {
        l = u64::from(b.ue()?);
        r = u64::from(b.ue()?);
        t = u64::from(b.ue()?);
        bo = u64::from(b.ue()?);
    }
    let (crop_x, crop_y) = match (chroma_format, separate_planes) {
        (1, _) => (2, 2 * (2 - frame_mbs_only)),
        (2, 0) => (2, 2 - frame_mbs_only),
        _ => (1, 2 - frame_mbs_only),
    };
    let w = (w_mbs * 16).checked_sub(crop_x * (l + r))?;
    let h = ((2 - frame_mbs_only) * h_units * 16).checked_sub(crop_y * (t + bo))?;
    let w = u16::try_from(w).ok().filter(|&w| w > 0)?;
    let h = u16::try_from(h).ok().filter(|&h| h > 0)?;
    Some((w, h))
}

/// The access unit being assembled.
#[derive(Debug)]
struct Au {
    rtp_ts: u32,
    arrival: Instant,
    /// Length-prefixed NAL units.
    data: Vec<u8>,
    idr: bool,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    /// A fragmented NAL unit in progress.
    fu: Option<Vec<u8>>,
}

/// H.264 access unit assembly (RFC 6184, packetization-mode 0 and 1).
#[derive(Debug, Default)]
pub struct H264Assembler {
    cur: Option<Au>,
    /// The stream's current parameter sets (the last SPS and PPS that parsed).
    params: Option<H264Params>,
    /// A loss happened (or the recording starts): drop access units until the next IDR.
    pub waiting_keyframe: bool,
    pub frames_dropped: u64,
    pub garbage: u64,
}

impl H264Assembler {
    /// Start waiting for an IDR (a recording starts, or a loss).
    pub fn need_keyframe(&mut self) {
        if self.cur.take().is_some() {
            self.frames_dropped += 1;
        }
        self.waiting_keyframe = true;
    }

    fn broken(&mut self) -> Result<Option<Frame>, StreamBroken> {
        self.need_keyframe();
        Err(StreamBroken)
    }

    fn garbage(&mut self) -> Result<Option<Frame>, StreamBroken> {
        self.garbage += 1;
        self.broken()
    }

    /// Feed one released item; a completed access unit is returned. `Err(StreamBroken)`: a
    /// loss or garbage broke the stream, ask for a keyframe.
    pub fn push(&mut self, r: Released) -> Result<Option<Frame>, StreamBroken> {
        let p = match r {
            Released::Loss => return self.broken(),
            Released::Packet(p) => p,
        };
        let Some(&hdr) = p.payload.first() else {
            return self.garbage();
        };
        if hdr & 0x80 != 0 {
            return self.garbage(); // forbidden_zero_bit
        }
        if let Some(cur) = &self.cur {
            if cur.rtp_ts != p.ts {
                // The previous access unit never got its marker: it may be incomplete.
                self.frames_dropped += 1;
                self.cur = None;
                return self.broken_then(p);
            }
        }
        self.packet(p)
    }

    /// After dropping an unfinished access unit: wait for an IDR, but still look at this
    /// packet (it may start that IDR).
    fn broken_then(&mut self, p: super::depack::RtpIn) -> Result<Option<Frame>, StreamBroken> {
        self.waiting_keyframe = true;
        match self.packet(p) {
            Ok(Some(f)) => Ok(Some(f)),
            _ => Err(StreamBroken),
        }
    }

    fn packet(&mut self, p: super::depack::RtpIn) -> Result<Option<Frame>, StreamBroken> {
        let au = self.cur.get_or_insert_with(|| Au {
            rtp_ts: p.ts,
            arrival: p.arrival,
            data: Vec::with_capacity(p.payload.len() * 4),
            idr: false,
            sps: None,
            pps: None,
            fu: None,
        });
        let payload = &p.payload[..];
        let ok = match payload[0] & 0x1F {
            1..=23 => {
                if au.fu.is_some() {
                    false // a fragmented NAL unit lost its end
                } else {
                    add_nal(au, payload)
                }
            }
            STAP_A => {
                let mut rest = &payload[1..];
                let mut ok = au.fu.is_none() && !rest.is_empty();
                while ok && !rest.is_empty() {
                    let len = match rest {
                        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
                        _ => 0,
                    };
                    match rest.get(2..2 + len) {
                        Some(nal) if len > 0 => {
                            ok = add_nal(au, nal);
                            rest = &rest[2 + len..];
                        }
                        _ => ok = false,
                    }
                }
                ok
            }
            FU_A => match payload.get(1) {
                None => false,
                Some(&fu) => fu_a(au, payload[0], fu, &payload[2..]),
            },
            _ => false, // STAP-B, MTAP, FU-B: not in packetization-mode 1; 0, 30, 31: reserved
        };
        if !ok || au.data.len() > MAX_FRAME {
            return self.garbage();
        }
        if !p.marker {
            return Ok(None);
        }
        let Some(au) = self.cur.take() else {
            return Ok(None);
        };
        if au.fu.is_some() {
            // The marker came mid-fragment.
            return self.garbage();
        }
        if let (Some(sps), Some(pps)) = (au.sps.clone(), au.pps.clone()) {
            match H264Params::new(sps, pps) {
                Some(params) => self.params = Some(params),
                None => return self.garbage(),
            }
        } else if let Some(sps) = au.sps.clone() {
            // A new SPS with the PPS from before.
            let pps = self
                .params
                .as_ref()
                .map(|p| p.pps.clone())
                .unwrap_or_default();
            match H264Params::new(sps, pps) {
                Some(params) => self.params = Some(params),
                None => return self.garbage(),
            }
        } else if let (Some(pps), Some(old)) = (au.pps.clone(), self.params.as_mut()) {
            old.pps = pps;
        }
        if au.data.is_empty() {
            return Ok(None); // only parameter sets (or delimiters)
        }
        if self.waiting_keyframe && !(au.idr && self.params.is_some()) {
            self.frames_dropped += 1;
            return Ok(None);
        }
        let params = if au.idr { self.params.clone() } else { None };
        if au.idr {
            self.waiting_keyframe = false;
        }
        Ok(Some(Frame {
            rtp_ts: au.rtp_ts,
            keyframe: au.idr,
            data: au.data,
            arrival: au.arrival,
            size: params.as_ref().map(|p| (p.width, p.height)),
            h264: params,
        }))
    }
}

/// One FU-A fragment (`body` after the two header bytes); false if the NAL unit it belongs to
/// cannot be complete (its start or end is missing) or is too large.
fn fu_a(au: &mut Au, indicator: u8, fu: u8, body: &[u8]) -> bool {
    let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
    if start {
        if au.fu.is_some() {
            return false; // the previous fragmented NAL unit lost its end
        }
        let mut nal = Vec::with_capacity(body.len() * 8 + 1);
        nal.push((indicator & 0xE0) | (fu & 0x1F));
        au.fu = Some(nal);
    }
    let Some(nal) = au.fu.as_mut() else {
        return false; // a middle or end fragment whose start is missing
    };
    if nal.len() + body.len() > MAX_FRAME {
        return false;
    }
    nal.extend_from_slice(body);
    if end {
        if let Some(nal) = au.fu.take() {
            return add_nal(au, &nal);
        }
    }
    true
}

/// One complete NAL unit of an access unit; false if it is malformed.
fn add_nal(au: &mut Au, nal: &[u8]) -> bool {
    let Some(&h) = nal.first() else {
        return false;
    };
    if h & 0x80 != 0 {
        return false;
    }
    match h & 0x1F {
        NAL_SPS => au.sps = Some(nal.to_vec()),
        NAL_PPS => au.pps = Some(nal.to_vec()),
        NAL_AUD => {}
        0 | 24..=31 => return false,
        t => {
            if t == NAL_IDR {
                au.idr = true;
            }
            let Ok(len) = u32::try_from(nal.len()) else {
                return false;
            };
            au.data.extend_from_slice(&len.to_be_bytes());
            au.data.extend_from_slice(nal);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::depack::RtpIn;
    use bytes::Bytes;

    /// A baseline SPS for 320x240 (as libx264 writes it) and a PPS.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xC0, 0x0C, 0xD9, 0x01, 0x41, 0xFB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x01, 0xE8, 0xF1, 0x42, 0xA4, 0x80,
    ];
    const PPS: &[u8] = &[0x68, 0xCB, 0x83, 0xCB, 0x20];

    fn pkt(seq: u16, ts: u32, marker: bool, payload: Vec<u8>) -> Released {
        Released::Packet(RtpIn {
            seq,
            ts,
            marker,
            arrival: Instant::now(),
            payload: Bytes::from(payload),
        })
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![STAP_A | 0x60];
        for n in nals {
            v.extend_from_slice(&(n.len() as u16).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    fn fu_a(nal_hdr: u8, start: bool, end: bool, body: &[u8]) -> Vec<u8> {
        let mut v = vec![(nal_hdr & 0xE0) | FU_A];
        v.push((nal_hdr & 0x1F) | if start { 0x80 } else { 0 } | if end { 0x40 } else { 0 });
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn sps_size_of_libx264_baseline() {
        assert_eq!(sps_size(SPS), Some((320, 240)));
        assert_eq!(sps_size(PPS), None);
        assert_eq!(sps_size(&[0x67]), None);
        assert_eq!(sps_size(&[0x67, 0x42, 0, 0x0d]), None);
    }

    #[test]
    fn avcc_record() {
        let p = H264Params::new(SPS.to_vec(), PPS.to_vec());
        let Some(p) = p else {
            unreachable!("the SPS parses")
        };
        let a = p.avcc();
        assert_eq!(&a[..6], &[1, 0x42, 0xC0, 0x0C, 0xFF, 0xE1]);
        assert_eq!(&a[6..8], &(SPS.len() as u16).to_be_bytes());
        assert_eq!(&a[8..8 + SPS.len()], SPS);
        let rest = &a[8 + SPS.len()..];
        assert_eq!(rest[0], 1);
        assert_eq!(&rest[1..3], &(PPS.len() as u16).to_be_bytes());
        assert_eq!(&rest[3..], PPS);
        assert_eq!(H264Params::new(SPS.to_vec(), Vec::new()), None);
    }

    #[test]
    fn stap_a_and_fu_a_make_an_idr_access_unit() {
        let mut a = H264Assembler::default();
        a.need_keyframe();
        // A P frame first: dropped while waiting for an IDR.
        assert!(matches!(
            a.push(pkt(1, 0, true, vec![0x41, 1, 2])),
            Ok(None)
        ));
        // SPS+PPS in a STAP-A, the IDR in three fragments (start, middle, end).
        assert!(matches!(
            a.push(pkt(2, 3000, false, stap_a(&[SPS, PPS]))),
            Ok(None)
        ));
        assert!(matches!(
            a.push(pkt(3, 3000, false, fu_a(0x65, true, false, &[1, 2]))),
            Ok(None)
        ));
        assert!(matches!(
            a.push(pkt(4, 3000, false, fu_a(0x65, false, false, &[3]))),
            Ok(None)
        ));
        let f = a.push(pkt(5, 3000, true, fu_a(0x65, false, true, &[4, 5])));
        let Ok(Some(f)) = f else {
            unreachable!("an IDR: {f:?}")
        };
        assert!(f.keyframe);
        assert_eq!(f.size, Some((320, 240)));
        assert_eq!(f.data, vec![0, 0, 0, 6, 0x65, 1, 2, 3, 4, 5]);
        assert_eq!(f.h264.map(|p| p.pps), Some(PPS.to_vec()));
        // A P frame of two single NAL units (slices) plays.
        assert!(matches!(
            a.push(pkt(6, 6000, false, vec![0x41, 7])),
            Ok(None)
        ));
        let f = a.push(pkt(7, 6000, true, vec![0x41, 8, 9]));
        let Ok(Some(f)) = f else {
            unreachable!("a P frame: {f:?}")
        };
        assert!(!f.keyframe);
        assert_eq!(f.data, vec![0, 0, 0, 2, 0x41, 7, 0, 0, 0, 3, 0x41, 8, 9]);
        assert_eq!(a.frames_dropped, 1);
    }

    #[test]
    fn a_lost_fragment_drops_the_frame_until_the_next_idr() {
        let mut a = H264Assembler::default();
        assert!(matches!(
            a.push(pkt(1, 0, false, stap_a(&[SPS, PPS]))),
            Ok(None)
        ));
        let f = a.push(pkt(2, 0, true, vec![0x65, 1]));
        assert!(matches!(f, Ok(Some(Frame { keyframe: true, .. }))), "{f:?}");
        // A P frame whose middle fragment is lost: start, (loss), end.
        assert!(matches!(
            a.push(pkt(3, 3000, false, fu_a(0x41, true, false, &[1]))),
            Ok(None)
        ));
        assert_eq!(a.push(Released::Loss), Err(StreamBroken));
        assert_eq!(
            a.push(pkt(5, 3000, true, fu_a(0x41, false, true, &[3]))),
            Err(StreamBroken)
        );
        // The next P frame is dropped too (its reference is gone) ...
        assert!(matches!(
            a.push(pkt(6, 6000, true, vec![0x41, 9])),
            Ok(None)
        ));
        // ... until an IDR (the parameter sets are still known).
        let f = a.push(pkt(7, 9000, true, vec![0x65, 9]));
        assert!(matches!(f, Ok(Some(Frame { keyframe: true, .. }))), "{f:?}");
        assert!(a.frames_dropped >= 2);
    }

    #[test]
    fn a_fragment_without_its_start_or_end_breaks_the_stream() {
        let mut a = H264Assembler::default();
        assert!(matches!(
            a.push(pkt(1, 0, false, stap_a(&[SPS, PPS]))),
            Ok(None)
        ));
        assert!(matches!(
            a.push(pkt(2, 0, true, vec![0x65, 1])),
            Ok(Some(_))
        ));
        // An end fragment with no start (the jitter buffer's gap was given up silently).
        assert_eq!(
            a.push(pkt(3, 3000, true, fu_a(0x41, false, true, &[1]))),
            Err(StreamBroken)
        );
        assert!(a.waiting_keyframe);
        let f = a.push(pkt(4, 6000, true, vec![0x65, 2]));
        assert!(matches!(f, Ok(Some(Frame { keyframe: true, .. }))));
        // A start, then a new start before the end: the first NAL unit lost its end.
        assert!(matches!(
            a.push(pkt(5, 9000, false, fu_a(0x41, true, false, &[1]))),
            Ok(None)
        ));
        assert_eq!(
            a.push(pkt(6, 9000, true, fu_a(0x41, true, true, &[1]))),
            Err(StreamBroken)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut a = H264Assembler::default();
        let mut state = 0x9e37_79b9u32;
        for i in 0..5000u16 {
            let len = usize::from(i % 30);
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            if let Ok(Some(f)) = a.push(pkt(i, u32::from(i / 3), i % 3 == 2, payload)) {
                assert!(!f.data.is_empty());
            }
        }
        assert!(a.garbage > 0);
        // Malformed STAP-A: a length beyond the packet, a zero length.
        assert_eq!(
            a.push(pkt(1, 1, true, vec![STAP_A, 0, 9, 0x41])),
            Err(StreamBroken)
        );
        assert_eq!(
            a.push(pkt(2, 2, true, vec![STAP_A, 0, 0])),
            Err(StreamBroken)
        );
    }
}
