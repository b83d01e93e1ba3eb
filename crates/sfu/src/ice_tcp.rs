//! ICE over TCP (RFC 6544) without sockets: the RFC 4571 framing of accepted streams (a 2-byte
//! big-endian length, then one STUN, DTLS, RTP or RTCP packet), each stream's bounded write
//! queue, and which streams are admitted (per source IP and in total). The shell
//! (`shell_tcp.rs`) does the I/O with these; routing frames to connections is the demux's job
//! ([`crate::demux`]).

use std::collections::HashMap;
use std::net::IpAddr;

/// The largest packet a frame may carry. Media over TCP still comes in UDP-sized packets (the
/// peers' DTLS and RTP are sized for a path MTU), and the UDP path reads datagrams into a
/// buffer of this size too; a longer frame is taken for garbage and closes the stream.
pub const MAX_FRAME: usize = 2048;

/// How many bytes may wait in one stream's write queue (about 0.8 s of a 2.5 Mbit/s video).
/// What does not fit is dropped, a whole packet at a time, so the framing stays intact; a
/// peer that stops reading for good loses its connection by ICE consent like a dead UDP path.
pub const MAX_QUEUED: usize = 256 * 1024;

/// Why a stream's input is not RFC 4571 framing of WebRTC packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("frame of {0} bytes (at most {MAX_FRAME})")]
    TooLong(usize),
}

/// Splits a byte stream into frames; keeps at most one partial frame between reads.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    pending: Vec<u8>,
}

impl FrameDecoder {
    /// Append `data` and hand each complete packet to `on_frame`, in order, until it returns
    /// false (the rest is dropped then: the caller is closing the stream). The number of
    /// packets handed over, or the first framing error (the stream must be closed).
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(&[u8]) -> bool,
    ) -> Result<usize, FrameError> {
        self.pending.extend_from_slice(data);
        let mut at = 0usize;
        let mut frames = 0usize;
        let result = loop {
            let Some(&[hi, lo]) = self.pending.get(at..at + 2) else {
                break Ok(frames);
            };
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if len == 0 {
                break Err(FrameError::Empty);
            }
            if len > MAX_FRAME {
                break Err(FrameError::TooLong(len));
            }
            let Some(packet) = self.pending.get(at + 2..at + 2 + len) else {
                break Ok(frames);
            };
            at += 2 + len;
            frames += 1;
            if !on_frame(packet) {
                self.pending.clear();
                return Ok(frames);
            }
        };
        if result.is_err() {
            self.pending.clear();
        } else {
            self.pending.drain(..at);
        }
        result
    }

    /// Bytes of a partial frame waiting for the rest.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// One stream's outgoing bytes not yet taken by the kernel, bounded by [`MAX_QUEUED`].
#[derive(Debug, Default)]
pub struct WriteQueue {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    sent: usize,
}

impl WriteQueue {
    /// Queue `packet` framed; false (nothing queued) if it does not fit or is not framable.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let Ok(len) = u16::try_from(packet.len()) else {
            return false;
        };
        if self.len() + 2 + packet.len() > MAX_QUEUED {
            return false;
        }
        if self.sent > 0 && self.sent * 2 >= self.buf.len() {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(packet);
        true
    }

    /// The bytes to write next.
    pub fn front(&self) -> &[u8] {
        self.buf.get(self.sent..).unwrap_or_default()
    }

    /// `n` bytes of [`Self::front`] were written.
    pub fn advance(&mut self, n: usize) {
        self.sent = self.sent.saturating_add(n).min(self.buf.len());
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a new stream is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyFromIp,
    TooMany,
}

/// Counts open streams per source IP and in total against their caps.
#[derive(Debug)]
pub struct StreamAdmission {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
    max_per_ip: usize,
    max_total: usize,
}

impl StreamAdmission {
    pub fn new(max_per_ip: usize, max_total: usize) -> Self {
        Self {
            per_ip: HashMap::new(),
            total: 0,
            max_per_ip,
            max_total,
        }
    }

    /// Admit one more stream from `ip` (counted until [`Self::release`]), or say why not.
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.total >= self.max_total {
            return Err(Refusal::TooMany);
        }
        let n = self.per_ip.entry(ip).or_default();
        if *n >= self.max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// A stream from `ip` closed.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    pub fn open(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut q = WriteQueue::default();
        for p in packets {
            assert!(q.push(p));
        }
        q.front().to_vec()
    }

    fn decode_all(d: &mut FrameDecoder, data: &[u8]) -> (Vec<Vec<u8>>, Result<usize, FrameError>) {
        let mut got = Vec::new();
        let r = d.feed(data, |p| {
            got.push(p.to_vec());
            true
        });
        (got, r)
    }

    #[test]
    fn decodes_frames_split_anywhere() {
        let packets: [&[u8]; 3] = [b"stun", &[0x80; 1200], b"x"];
        let wire = framed(&packets);
        // Every split point, and byte by byte.
        for cut in 0..=wire.len() {
            let mut d = FrameDecoder::default();
            let (mut got, r1) = decode_all(&mut d, &wire[..cut]);
            let (rest, r2) = decode_all(&mut d, &wire[cut..]);
            got.extend(rest);
            assert!(r1.is_ok() && r2.is_ok());
            assert_eq!(got, packets.map(<[u8]>::to_vec).to_vec(), "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
        let mut d = FrameDecoder::default();
        let mut n = 0;
        for b in &wire {
            n += d.feed(std::slice::from_ref(b), |_| true).unwrap();
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn malformed_frames_are_errors() {
        for (wire, err) in [
            (vec![0u8, 0, 1, 2], FrameError::Empty),
            (vec![0x08, 0x01], FrameError::TooLong(2049)),
            (vec![0xff, 0xff, 0], FrameError::TooLong(65535)),
        ] {
            let mut d = FrameDecoder::default();
            assert_eq!(decode_all(&mut d, &wire).1, Err(err));
            assert_eq!(d.pending(), 0);
        }
        // A good frame before the bad one is still delivered.
        let mut wire = framed(&[b"ok"]);
        wire.extend_from_slice(&[0, 0]);
        let mut d = FrameDecoder::default();
        let (got, r) = decode_all(&mut d, &wire);
        assert_eq!(got, vec![b"ok".to_vec()]);
        assert_eq!(r, Err(FrameError::Empty));
        // The largest allowed frame passes.
        let big = vec![1u8; MAX_FRAME];
        let (got, r) = decode_all(&mut FrameDecoder::default(), &framed(&[&big]));
        assert_eq!((got.len(), r), (1, Ok(1)));
    }

    #[test]
    fn stopping_drops_the_rest() {
        let wire = framed(&[b"a", b"b", b"c"]);
        let mut d = FrameDecoder::default();
        let mut seen = 0;
        let r = d.feed(&wire, |_| {
            seen += 1;
            false
        });
        assert_eq!((seen, r), (1, Ok(1)));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn write_queue_is_bounded_by_whole_packets() {
        let mut q = WriteQueue::default();
        let p = vec![7u8; 1000];
        let mut queued = 0;
        while q.push(&p) {
            queued += 1;
        }
        assert_eq!(queued, MAX_QUEUED / 1002);
        assert!(q.len() <= MAX_QUEUED);
        // Partial writes, then room again.
        let before = q.len();
        q.advance(1500);
        assert_eq!(q.len(), before - 1500);
        assert!(q.push(&p));
        q.advance(usize::MAX);
        assert!(q.is_empty() && q.front().is_empty());
        assert!(!q.push(&vec![0u8; 70_000]), "not framable");
        // What is written is valid framing.
        assert!(q.push(b"hi"));
        let mut d = FrameDecoder::default();
        assert_eq!(decode_all(&mut d, q.front()).0, vec![b"hi".to_vec()]);
    }

    #[test]
    fn admission_caps_per_ip_and_in_total() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let mut adm = StreamAdmission::new(2, 3);
        assert_eq!(adm.admit(a), Ok(()));
        assert_eq!(adm.admit(a), Ok(()));
        assert_eq!(adm.admit(a), Err(Refusal::TooManyFromIp));
        assert_eq!(adm.admit(b), Ok(()));
        assert_eq!(adm.admit(c), Err(Refusal::TooMany));
        adm.release(a);
        assert_eq!(adm.admit(c), Ok(()));
        assert_eq!(adm.open(), 3);
        adm.release(c);
        adm.release(c); // a second release of nothing changes nothing
        assert_eq!(adm.open(), 2);
    }
}
