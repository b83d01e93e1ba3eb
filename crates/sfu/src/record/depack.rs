//! From RTP packets to media frames, for the recorder: a small per-track jitter buffer
//! (reordering within a window; a gap that does not fill in time is a loss), then frame
//! assembly: Opus is one packet per frame; VP8 frames are the packets of one RTP timestamp,
//! from the one with S=1/PID=0 to the marker bit, with the payload descriptors stripped. After a
//! loss the broken frame is dropped and so is everything up to the next keyframe (a decoder
//! would show garbage otherwise); the caller asks the publisher for that keyframe.
//!
//! All input comes from the network: anything malformed is dropped and counted, never a panic.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A gap is declared lost when the packet after it has waited this long.
pub const REORDER_WAIT: Duration = Duration::from_millis(150);
/// At most this many packets are held; beyond it the oldest gap is given up.
const MAX_HELD: usize = 256;
/// A sequence jump larger than this (either way) restarts the stream.
const MAX_JUMP: u64 = 3000;
/// Largest VP8 frame assembled (a bigger one is dropped as garbage).
const MAX_FRAME: usize = 4 << 20;

/// One RTP packet as handed to the recorder.
#[derive(Debug, Clone)]
pub struct RtpIn {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub arrival: Instant,
    pub payload: Bytes,
}

/// What the jitter buffer releases, in order.
#[derive(Debug)]
pub enum Released {
    Packet(RtpIn),
    /// One or more packets before the next one are missing.
    Loss,
}

/// Reorders one SSRC's packets by (unwrapped) sequence number.
#[derive(Debug, Default)]
pub struct JitterBuffer {
    /// Next sequence number to release (unwrapped).
    next: Option<u64>,
    /// Highest unwrapped sequence seen, for unwrapping.
    highest: u64,
    held: BTreeMap<u64, RtpIn>,
    pub late_or_duplicate: u64,
    pub lost_gaps: u64,
}

impl JitterBuffer {
    fn unwrap_seq(&mut self, seq: u16) -> u64 {
        if self.next.is_none() {
            self.highest = (1u64 << 16) + u64::from(seq); // room to go back a little
            return self.highest;
        }
        let cur = self.highest;
        let delta = i64::from(seq.wrapping_sub(cur as u16) as i16);
        let v = (cur as i64 + delta).max(0) as u64;
        if v > self.highest {
            self.highest = v;
        }
        v
    }

    /// Add a packet; released packets (and losses) are appended to `out`.
    pub fn push(&mut self, p: RtpIn, out: &mut Vec<Released>) {
        let s = self.unwrap_seq(p.seq);
        let next = *self.next.get_or_insert(s);
        if s < next {
            if next - s > MAX_JUMP {
                self.restart(s, out);
            } else {
                self.late_or_duplicate += 1;
                return;
            }
        } else if s - next > MAX_JUMP {
            self.restart(s, out);
        }
        let arrival = p.arrival;
        if self.held.insert(s, p).is_some() {
            self.late_or_duplicate += 1;
        }
        self.release(arrival, out);
    }

    fn restart(&mut self, s: u64, out: &mut Vec<Released>) {
        self.held.clear();
        self.next = Some(s);
        self.highest = s;
        out.push(Released::Loss);
        self.lost_gaps += 1;
    }

    /// Release what is in order, and give up on gaps older than [`REORDER_WAIT`] at `now`.
    pub fn release(&mut self, now: Instant, out: &mut Vec<Released>) {
        loop {
            let Some(next) = self.next else { return };
            if let Some(p) = self.held.remove(&next) {
                self.next = Some(next + 1);
                out.push(Released::Packet(p));
                continue;
            }
            let Some((&first, oldest)) = self.held.iter().next() else {
                return;
            };
            let waited = now.saturating_duration_since(oldest.arrival);
            if waited >= REORDER_WAIT || self.held.len() > MAX_HELD {
                self.next = Some(first);
                self.lost_gaps += 1;
                out.push(Released::Loss);
                continue;
            }
            return;
        }
    }
}

/// A complete frame for the muxer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub rtp_ts: u32,
    pub keyframe: bool,
    pub data: Vec<u8>,
    /// Arrival of the frame's first packet.
    pub arrival: Instant,
    /// VP8 and H.264 keyframes: the coded size.
    pub size: Option<(u16, u16)>,
    /// H.264 IDR access units: the stream's SPS and PPS (the file's `avcC`).
    pub h264: Option<super::h264::H264Params>,
}

/// A loss or garbage broke the VP8 stream: the caller asks for a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBroken;

/// VP8 frame assembly (RFC 7741).
#[derive(Debug, Default)]
pub struct Vp8Assembler {
    cur: Option<Frame>,
    /// A loss happened: drop frames until the next keyframe.
    pub waiting_keyframe: bool,
    pub frames_dropped: u64,
    pub garbage: u64,
}

/// Width and height from a VP8 keyframe's uncompressed header (RFC 6386 §9.1).
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (w > 0 && h > 0).then_some((w, h))
}

impl Vp8Assembler {
    /// Start waiting for a keyframe (a recording starts, or a loss).
    pub fn need_keyframe(&mut self) {
        if self.cur.take().is_some() {
            self.frames_dropped += 1;
        }
        self.waiting_keyframe = true;
    }

    /// Feed one released item; a completed frame is returned. `Err(StreamBroken)` means: a loss broke
    /// the stream, ask for a keyframe.
    pub fn push(&mut self, r: Released) -> Result<Option<Frame>, StreamBroken> {
        let p = match r {
            Released::Loss => {
                self.need_keyframe();
                return Err(StreamBroken);
            }
            Released::Packet(p) => p,
        };
        let Some(d) = crate::codec::parse_vp8(&p.payload) else {
            self.garbage += 1;
            self.need_keyframe();
            return Err(StreamBroken);
        };
        let body = p.payload.get(d.header_len..).unwrap_or_default();
        let starts = d.start_of_partition && d.partition_index == 0;
        if let Some(cur) = &self.cur {
            if cur.rtp_ts != p.ts || starts {
                // The previous frame never got its marker: incomplete.
                self.cur = None;
                self.frames_dropped += 1;
                if !starts {
                    self.need_keyframe();
                    return Err(StreamBroken);
                }
            }
        }
        if self.cur.is_none() {
            if !starts {
                // A middle packet with no start: the start was lost or is garbage.
                return Ok(None);
            }
            if self.waiting_keyframe && !d.keyframe {
                self.frames_dropped += 1;
                return Ok(None);
            }
            self.cur = Some(Frame {
                rtp_ts: p.ts,
                keyframe: d.keyframe,
                data: Vec::with_capacity(body.len() * 4),
                arrival: p.arrival,
                size: None,
                h264: None,
            });
        }
        let Some(cur) = self.cur.as_mut() else {
            return Ok(None);
        };
        if cur.data.len() + body.len() > MAX_FRAME {
            self.garbage += 1;
            self.need_keyframe();
            return Err(StreamBroken);
        }
        cur.data.extend_from_slice(body);
        if !p.marker {
            return Ok(None);
        }
        let Some(mut f) = self.cur.take() else {
            return Ok(None);
        };
        if f.keyframe {
            f.size = vp8_keyframe_size(&f.data);
            if f.size.is_none() {
                // Says keyframe, has no valid keyframe header: garbage.
                self.garbage += 1;
                self.need_keyframe();
                return Err(StreamBroken);
            }
            self.waiting_keyframe = false;
        }
        Ok(Some(f))
    }
}

/// Opus: one packet is one frame. Empty or oversized payloads are dropped.
pub fn opus_frame(p: RtpIn) -> Option<Frame> {
    if p.payload.is_empty() || p.payload.len() > 1500 {
        return None;
    }
    Some(Frame {
        rtp_ts: p.ts,
        keyframe: true,
        data: p.payload.to_vec(),
        arrival: p.arrival,
        size: None,
        h264: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8], t: Instant) -> RtpIn {
        RtpIn {
            seq,
            ts,
            marker,
            arrival: t,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn seqs(out: &[Released]) -> Vec<Option<u16>> {
        out.iter()
            .map(|r| match r {
                Released::Packet(p) => Some(p.seq),
                Released::Loss => None,
            })
            .collect()
    }

    #[test]
    fn jitter_reorders_and_wraps() {
        let t = Instant::now();
        let mut jb = JitterBuffer::default();
        let mut out = Vec::new();
        for s in [65534u16, 0, 65535, 1, 1] {
            jb.push(pkt(s, 0, false, &[1], t), &mut out);
        }
        assert_eq!(seqs(&out), vec![Some(65534), Some(65535), Some(0), Some(1)]);
        assert_eq!(jb.late_or_duplicate, 1);
    }

    #[test]
    fn jitter_gives_up_on_a_gap_after_the_wait() {
        let t = Instant::now();
        let mut jb = JitterBuffer::default();
        let mut out = Vec::new();
        jb.push(pkt(10, 0, false, &[1], t), &mut out);
        jb.push(pkt(12, 0, false, &[1], t), &mut out);
        assert_eq!(seqs(&out), vec![Some(10)]);
        jb.release(t + Duration::from_millis(100), &mut out);
        assert_eq!(out.len(), 1);
        jb.release(t + REORDER_WAIT, &mut out);
        assert_eq!(seqs(&out), vec![Some(10), None, Some(12)]);
        // 11 arriving now is late.
        jb.push(pkt(11, 0, false, &[1], t), &mut out);
        assert_eq!(jb.late_or_duplicate, 1);
    }

    #[test]
    fn jitter_restarts_on_a_jump() {
        let t = Instant::now();
        let mut jb = JitterBuffer::default();
        let mut out = Vec::new();
        jb.push(pkt(100, 0, false, &[1], t), &mut out);
        jb.push(pkt(30000, 0, false, &[1], t), &mut out);
        assert_eq!(seqs(&out), vec![Some(100), None, Some(30000)]);
    }

    /// A VP8 keyframe payload: descriptor (X, I with 15-bit picture id), then a frame header.
    fn vp8(start: bool, key: bool, body: &[u8]) -> Vec<u8> {
        let mut v = vec![if start { 0x90 } else { 0x80 }, 0x80, 0x80, 0x01];
        if start {
            // frame tag: P bit 0 = keyframe
            v.extend_from_slice(&[if key { 0x00 } else { 0x01 }, 0, 0]);
            if key {
                v.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
            }
        }
        v.extend_from_slice(body);
        v
    }

    fn feed(a: &mut Vp8Assembler, p: RtpIn) -> Result<Option<Frame>, StreamBroken> {
        a.push(Released::Packet(p))
    }

    #[test]
    fn vp8_assembles_waits_for_keyframe_and_recovers_after_loss() {
        let t = Instant::now();
        let mut a = Vp8Assembler::default();
        a.need_keyframe();
        // A delta frame first: dropped while waiting for a keyframe.
        assert_eq!(
            feed(&mut a, pkt(1, 100, true, &vp8(true, false, &[9]), t)),
            Ok(None)
        );
        // A two-packet keyframe.
        assert_eq!(
            feed(&mut a, pkt(2, 200, false, &vp8(true, true, &[1]), t)),
            Ok(None)
        );
        let f = feed(&mut a, pkt(3, 200, true, &vp8(false, false, &[2]), t))
            .ok()
            .flatten();
        let f = f.as_ref();
        assert_eq!(f.map(|f| f.keyframe), Some(true));
        assert_eq!(f.and_then(|f| f.size), Some((320, 240)));
        assert_eq!(f.map(|f| f.data.len()), Some(3 + 7 + 1 + 1));
        // A delta frame plays.
        let f = feed(&mut a, pkt(4, 300, true, &vp8(true, false, &[5]), t));
        assert!(matches!(
            f,
            Ok(Some(Frame {
                keyframe: false,
                ..
            }))
        ));
        // A loss: ask for a keyframe, drop deltas until it comes.
        assert_eq!(a.push(Released::Loss), Err(StreamBroken));
        assert_eq!(
            feed(&mut a, pkt(6, 400, true, &vp8(true, false, &[5]), t)),
            Ok(None)
        );
        let f = feed(&mut a, pkt(7, 500, true, &vp8(true, true, &[5]), t));
        assert!(matches!(f, Ok(Some(Frame { keyframe: true, .. }))));
    }

    #[test]
    fn vp8_frame_without_marker_is_dropped() {
        let t = Instant::now();
        let mut a = Vp8Assembler::default();
        assert_eq!(
            feed(&mut a, pkt(1, 100, false, &vp8(true, true, &[1]), t)),
            Ok(None)
        );
        // The next frame starts before the marker: the first is incomplete, dropped.
        let r = feed(&mut a, pkt(2, 200, true, &vp8(true, true, &[1]), t));
        assert!(matches!(r, Ok(Some(Frame { rtp_ts: 200, .. }))));
        assert_eq!(a.frames_dropped, 1);
    }

    #[test]
    fn garbage_never_panics_and_never_becomes_a_frame() {
        let t = Instant::now();
        let mut a = Vp8Assembler::default();
        let mut state = 0x1234_5678u32;
        let mut frames = 0;
        for i in 0..5000u16 {
            let len = (i % 40) as usize;
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            if let Ok(Some(f)) = feed(&mut a, pkt(i, u32::from(i / 3), i % 3 == 2, &payload, t)) {
                // Only a frame whose keyframe header checks out, or deltas after one.
                frames += 1;
                assert!(!f.data.is_empty() || !f.keyframe);
            }
        }
        assert!(a.garbage > 0);
        let _ = frames;
        assert_eq!(opus_frame(pkt(1, 1, true, &[], t)), None);
    }
}
