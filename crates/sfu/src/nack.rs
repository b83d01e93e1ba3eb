//! The retransmission cache of a sending leg: answers a subscriber's RTCP NACKs (RFC 4585
//! generic NACK) by resending the packets it still holds, on the original SSRC (or as RFC 4588
//! RTX when the stream negotiated it).
//!
//! It replaces `rtc`'s NACK responder, which gives every NACK-capable stream a fixed ring of
//! 1,024 packet slots allocated when the stream is bound (~100 KiB of packet structs per video
//! leg before a single packet is sent, whether the leg is ever forwarded or not). Here a stream's
//! history is **sized by time and therefore by bitrate**: it holds what was sent in the last
//! [`HISTORY`] (at most [`MAX_PACKETS`]), allocates nothing until the leg sends its first packet,
//! and gives its memory back once the leg has been silent (paused by dynacast, an unforwarded
//! speaker, a hidden tile) for longer than the history. A 120 packet/s video leg holds ~120
//! packets, a 50 packet/s audio leg ~50, a paused leg none. The payloads are shared
//! (`Bytes`) with the publisher's packet, so the cost per held packet is a 64-byte record ([`Sent`]).

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::header::Header;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::TransportContext;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a sent packet stays retransmittable. A NACK arrives one round trip plus the
/// receiver's reordering wait after the loss, and may be repeated a few times; one second
/// covers that on the links this server serves (libwebrtc keeps about the same).
pub(crate) const HISTORY: Duration = Duration::from_millis(1000);

/// Upper bound per stream whatever the bitrate (~10 Mbit/s of 1,200-byte packets for a second).
pub(crate) const MAX_PACKETS: usize = 1024;

/// How much longer than [`HISTORY`] a sending stream may hold packets before it evicts (in a
/// batch; see [`Stream::add`]): at most ~5 % more packets held.
pub(crate) const EVICT_SLACK: Duration = Duration::from_millis(50);

/// A held packet and when it was sent.
///
/// Compact (64 bytes against 128 for the packet struct and instant): a forwarded packet's header
/// is plain by the time it reaches this interceptor (the forwarder strips the publisher's
/// extensions, and the transport-wide number is added wire-ward of here), so the fields that
/// vary per packet are kept and the header is rebuilt on a resend. A header that is not plain
/// (CSRCs, extensions, padding) is kept whole, boxed.
struct Sent {
    at: Instant,
    timestamp: u32,
    sequence_number: u16,
    payload_type: u8,
    marker: bool,
    payload: bytes::Bytes,
    /// The whole header when it is not plain (rare: then one allocation per packet).
    full: Option<Box<Header>>,
}

impl Sent {
    fn new(at: Instant, packet: &rtc::rtp::Packet) -> Self {
        let h = &packet.header;
        let plain = h.version == 2
            && !h.padding
            && !h.extension
            && h.csrc.is_empty()
            && h.extensions.is_empty()
            && h.extensions_padding == 0;
        Sent {
            at,
            timestamp: h.timestamp,
            sequence_number: h.sequence_number,
            payload_type: h.payload_type,
            marker: h.marker,
            payload: packet.payload.clone(),
            full: (!plain).then(|| Box::new(h.clone())),
        }
    }

    /// The packet as it was sent on `ssrc`.
    fn packet(&self, ssrc: u32) -> rtc::rtp::Packet {
        let header = match &self.full {
            Some(h) => (**h).clone(),
            None => Header {
                version: 2,
                marker: self.marker,
                payload_type: self.payload_type,
                sequence_number: self.sequence_number,
                timestamp: self.timestamp,
                ssrc,
                ..Default::default()
            },
        };
        rtc::rtp::Packet {
            header,
            payload: self.payload.clone(),
        }
    }
}

/// One sending stream that negotiated generic NACK.
struct Stream {
    ssrc: u32,
    ssrc_rtx: Option<u32>,
    payload_type_rtx: Option<u8>,
    rtx_sequence_number: u16,
    /// Sent packets in send order (oldest first).
    sent: VecDeque<Sent>,
    /// The newest held packet's sequence number and the oldest's send time, kept here so that
    /// keeping a packet reads neither end of the ring: both were cache misses on every packet
    /// and leg (the ring's back was written one packet interval ago, its front a second ago).
    newest_seq: Option<u16>,
    oldest_at: Option<Instant>,
}

impl Stream {
    /// Drops what is older than [`HISTORY`] (and what exceeds [`MAX_PACKETS`]).
    fn evict(&mut self, now: Instant) {
        while let Some(front) = self.sent.front() {
            let expired = now.saturating_duration_since(front.at) > HISTORY;
            if expired || self.sent.len() > MAX_PACKETS {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        self.oldest_at = self.sent.front().map(|s| s.at);
        // A silent leg returns its ring; a leg whose rate fell returns most of it.
        if self.sent.is_empty() {
            self.sent = VecDeque::new();
            self.newest_seq = None;
        } else if self.sent.capacity() > 64 && self.sent.len() < self.sent.capacity() / 4 {
            self.sent.shrink_to(self.sent.len() * 2);
        }
    }

    fn add(&mut self, now: Instant, packet: &rtc::rtp::Packet) {
        let seq = packet.header.sequence_number;
        if let Some(last) = self.newest_seq {
            let diff = seq.wrapping_sub(last);
            // A repeat or an older sequence number (a resend already held): keep the first.
            if diff == 0 || diff >= 0x8000 {
                return;
            }
        }
        self.sent.push_back(Sent::new(now, packet));
        self.newest_seq = Some(seq);
        let oldest = *self.oldest_at.get_or_insert(now);
        // Evicted in batches, [`EVICT_SLACK`] apart: the ring's front is read once per batch
        // (in order, so mostly from cache), not once per packet. A NACK or a timeout evicts
        // exactly first, so nothing older than [`HISTORY`] is ever resent.
        if now.saturating_duration_since(oldest) > HISTORY + EVICT_SLACK
            || self.sent.len() > MAX_PACKETS
        {
            self.evict(now);
        }
    }

    /// The held packet with sequence number `seq`.
    fn get(&self, seq: u16) -> Option<&Sent> {
        let last = self.sent.back()?.sequence_number;
        let back = last.wrapping_sub(seq) as usize;
        // Sequence numbers are contiguous unless the forwarder skipped some (layer switches
        // renumber, so gaps are rare): look where it should be, then search.
        let guess = self.sent.len().checked_sub(1 + back);
        if let Some(s) = guess.and_then(|i| self.sent.get(i)) {
            if s.sequence_number == seq {
                return Some(s);
            }
        }
        self.sent.iter().rev().find(|s| s.sequence_number == seq)
    }
}

/// The interceptor (see the module documentation).
#[derive(Default)]
pub(crate) struct NackCache {
    /// A connection sends a handful of streams: a vector beats a map.
    streams: Vec<Stream>,
    wq: VecDeque<TaggedPacket>,
    rq: VecDeque<TaggedPacket>,
}

impl NackCache {
    /// Packets held over all streams (tests, memory accounting).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.streams.iter().map(|s| s.sent.len()).sum()
    }

    /// Ring slots allocated over all streams.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.streams.iter().map(|s| s.sent.capacity()).sum()
    }

    fn handle_nack(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == nack.media_ssrc) else {
            return;
        };
        // Exactly the last [`HISTORY`] is resendable (adding evicts in batches).
        stream.evict(now);
        for pair in &nack.nacks {
            let lost = std::iter::once(pair.packet_id).chain(
                (0..16u16)
                    .filter(|i| pair.lost_packets & (1 << i) != 0)
                    .map(|i| pair.packet_id.wrapping_add(i + 1)),
            );
            for seq in lost {
                let Some(original) = stream.get(seq) else {
                    continue;
                };
                let packet = match (stream.ssrc_rtx, stream.payload_type_rtx) {
                    (Some(ssrc), Some(pt)) => {
                        let mut payload = Vec::with_capacity(2 + original.payload.len());
                        payload.extend_from_slice(&seq.to_be_bytes());
                        payload.extend_from_slice(&original.payload);
                        let rtx_seq = stream.rtx_sequence_number;
                        let packet = rtc::rtp::Packet {
                            header: Header {
                                version: 2,
                                ssrc,
                                payload_type: pt,
                                sequence_number: rtx_seq,
                                timestamp: original.timestamp,
                                marker: original.marker,
                                ..Default::default()
                            },
                            payload: payload.into(),
                        };
                        stream.rtx_sequence_number = rtx_seq.wrapping_add(1);
                        packet
                    }
                    _ => original.packet(stream.ssrc),
                };
                // Tagged so the congestion controller counts it as new bytes on the wire.
                self.wq.push_back(TaggedPacket {
                    now,
                    transport: TransportContext::default(),
                    message: AttributedPacket::new(Packet::Rtp(packet))
                        .with(Attribute::Retransmission),
                });
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackCache {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(ref packets) = msg.message.packet {
            for p in packets {
                if let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() {
                    self.handle_nack(msg.now, nack);
                }
            }
        }
        self.rq.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.rq.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.keep(&msg);
        self.wq.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.wq.pop_front()
    }

    /// No timer of its own: whenever the connection wakes for another reason (reports, ICE,
    /// sending), silent streams drop what has aged out.
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        for s in &mut self.streams {
            s.evict(now);
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl NackCache {
    /// What a write does besides passing the packet on: keep a first transmission.
    fn keep(&mut self, msg: &TaggedPacket) {
        if let Packet::Rtp(ref p) = msg.message.packet {
            if !msg.message.has(&Attribute::Retransmission) {
                if let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == p.header.ssrc) {
                    stream.add(msg.now, p);
                }
            }
        }
    }
}

impl Interceptor for NackCache {
    /// The forwarded packet is kept and passed on where it lies (no move through `wq`), unless
    /// retransmissions are waiting in `wq`: they go first, by the queue.
    fn write_in_place(&mut self, msg: &mut TaggedPacket) -> bool {
        if !self.wq.is_empty() {
            return false;
        }
        self.keep(msg);
        true
    }

    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty());
        if !nack {
            return;
        }
        self.streams.retain(|s| s.ssrc != info.ssrc);
        self.streams.push(Stream {
            ssrc: info.ssrc,
            ssrc_rtx: info.ssrc_rtx,
            payload_type_rtx: info.payload_type_rtx,
            rtx_sequence_number: 0,
            sent: VecDeque::new(),
            newest_seq: None,
            oldest_at: None,
        });
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.retain(|s| s.ssrc != info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rtc::interceptor::RTCPFeedback;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn info(ssrc: u32, nack: bool) -> StreamInfo {
        StreamInfo {
            ssrc,
            rtcp_feedback: if nack {
                vec![RTCPFeedback {
                    typ: "nack".to_owned(),
                    parameter: String::new(),
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    fn rtp(now: Instant, ssrc: u32, seq: u16) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: bytes::Bytes::from(vec![seq as u8; 100]),
            })),
        }
    }

    fn nack(now: Instant, ssrc: u32, packet_id: u16, lost_packets: u16) -> TaggedPacket {
        let n = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: ssrc,
            nacks: vec![NackPair {
                packet_id,
                lost_packets,
            }],
        };
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(n)])),
        }
    }

    /// Sends `n` packets at `pps` from `start`, draining the write side; returns the last time.
    fn send(c: &mut NackCache, start: Instant, ssrc: u32, seq0: u16, n: u16, pps: u32) -> Instant {
        let step = Duration::from_secs(1) / pps;
        let mut t = start;
        for i in 0..n {
            t = start + step * u32::from(i);
            c.handle_write(rtp(t, ssrc, seq0.wrapping_add(i))).unwrap();
            assert!(c.poll_write().is_some());
        }
        t
    }

    fn resent(c: &mut NackCache) -> Vec<(u32, u16, u8)> {
        let mut out = vec![];
        while let Some(m) = c.poll_write() {
            assert!(m.message.has(&Attribute::Retransmission));
            let Packet::Rtp(p) = m.message.packet else {
                panic!("not RTP")
            };
            out.push((p.header.ssrc, p.header.sequence_number, p.payload[0]));
        }
        out
    }

    #[test]
    fn nothing_allocated_before_the_first_packet_and_unnacked_streams_hold_nothing() {
        let now = Instant::now();
        let mut c = NackCache::default();
        c.bind_local_stream(&info(10, true));
        c.bind_local_stream(&info(20, false));
        assert_eq!(c.allocated(), 0);
        send(&mut c, now, 20, 0, 50, 50);
        assert_eq!(c.held(), 0, "a stream without nack feedback holds nothing");
    }

    #[test]
    fn resends_nacked_packets_including_the_bitmap_across_wraparound() {
        let now = Instant::now();
        let mut c = NackCache::default();
        c.bind_local_stream(&info(10, true));
        let t = send(&mut c, now, 10, 65_530, 20, 100);
        // 65,534 and, from the bitmap, 65,535 (bit 0), 1 (bit 2); 5 was never NACKed.
        c.handle_read(nack(t, 10, 65_534, 0b101)).unwrap();
        assert!(
            c.poll_read().is_some(),
            "the NACK still travels up the chain"
        );
        assert_eq!(
            resent(&mut c),
            vec![(10, 65_534, 254), (10, 65_535, 255), (10, 1, 1)]
        );
        // A NACK for another SSRC or a sequence number never sent resends nothing.
        c.handle_read(nack(t, 11, 65_534, 0)).unwrap();
        c.handle_read(nack(t, 10, 100, 0)).unwrap();
        assert!(resent(&mut c).is_empty());
    }

    #[test]
    fn history_is_sized_by_time_so_by_bitrate() {
        let now = Instant::now();
        let mut c = NackCache::default();
        c.bind_local_stream(&info(10, true));
        c.bind_local_stream(&info(20, true));
        // 3 s of 50 packet/s audio and of 300 packet/s video: each keeps about one second.
        // (Up to EVICT_SLACK more between batches: 2.5 packets of audio, 15 of video.)
        send(&mut c, now, 10, 0, 150, 50);
        let audio = c.held();
        assert!((50..=55).contains(&audio), "audio holds {audio}");
        send(&mut c, now, 20, 0, 900, 300);
        let video = c.held() - audio;
        assert!((300..=317).contains(&video), "video holds {video}");
        // A packet older than the history is gone; a recent one is resent.
        let t = now + Duration::from_millis(2990);
        c.handle_read(nack(t, 20, 10, 0)).unwrap();
        c.handle_read(nack(t, 20, 890, 0)).unwrap();
        assert_eq!(resent(&mut c), vec![(20, 890, (890u16 & 0xff) as u8)]);
    }

    #[test]
    fn a_silent_leg_gives_its_memory_back() {
        let now = Instant::now();
        let mut c = NackCache::default();
        c.bind_local_stream(&info(10, true));
        let t = send(&mut c, now, 10, 0, 120, 120);
        assert!(c.allocated() >= 100);
        c.handle_timeout(t + HISTORY + Duration::from_millis(10))
            .unwrap();
        assert_eq!((c.held(), c.allocated()), (0, 0));
        c.unbind_local_stream(&info(10, true));
        assert!(c.streams.is_empty());
    }

    #[test]
    fn rtx_streams_resend_as_rfc4588() {
        let now = Instant::now();
        let mut c = NackCache::default();
        let mut i = info(10, true);
        i.ssrc_rtx = Some(11);
        i.payload_type_rtx = Some(97);
        c.bind_local_stream(&i);
        let t = send(&mut c, now, 10, 500, 10, 100);
        c.handle_read(nack(t, 10, 503, 0)).unwrap();
        let m = c.poll_write().unwrap();
        let Packet::Rtp(p) = m.message.packet else {
            panic!("not RTP")
        };
        assert_eq!((p.header.ssrc, p.header.payload_type), (11, 97));
        assert_eq!(&p.payload[..2], &503u16.to_be_bytes());
        assert_eq!(p.payload.len(), 102);
    }

    /// A resend is the packet as first sent, byte for byte: rebuilt from the compact record
    /// for a plain header (marker, payload type, timestamp kept), kept whole otherwise
    /// (CSRCs, an extension, padding).
    #[test]
    fn a_resend_marshals_as_the_original() {
        use rtc::shared::marshal::Marshal;
        let now = Instant::now();
        let mut c = NackCache::default();
        c.bind_local_stream(&info(10, true));
        let plain = rtc::rtp::Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: 7,
                timestamp: 123_456,
                ssrc: 10,
                // Left by the forwarder's strip (`extension` false): not on the wire.
                extension_profile: 0xBEDE,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"plain payload"),
        };
        let mut odd = rtc::rtp::Packet {
            header: Header {
                version: 2,
                payload_type: 111,
                sequence_number: 8,
                timestamp: 123_999,
                ssrc: 10,
                csrc: vec![0xdead_beef],
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"with csrc and an extension"),
        };
        odd.header
            .set_extension(3, bytes::Bytes::from_static(&[1, 2, 3]))
            .unwrap();
        for p in [&plain, &odd] {
            let m = TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(p.clone())),
            };
            c.handle_write(m).unwrap();
            assert!(c.poll_write().is_some());
        }
        c.handle_read(nack(now, 10, 7, 0b1)).unwrap();
        for original in [&plain, &odd] {
            let m = c.poll_write().expect("resent");
            assert!(m.message.has(&Attribute::Retransmission));
            let Packet::Rtp(p) = m.message.packet else {
                panic!("not RTP")
            };
            assert_eq!(p.marshal().unwrap(), original.marshal().unwrap());
        }
        assert!(c.poll_write().is_none());
    }

    /// Adding evicts in batches (up to `EVICT_SLACK` late), but what a NACK can get back is
    /// exactly the last `HISTORY`.
    #[test]
    fn nothing_older_than_the_history_is_resent_between_evictions() {
        let now = Instant::now();
        let mut c = NackCache::default();
        c.bind_local_stream(&info(10, true));
        // 100 packets at 100 packet/s: seq i leaves at i × 10 ms; nothing evicted yet.
        send(&mut c, now, 10, 0, 100, 100);
        assert_eq!(c.held(), 100);
        // At 1,070 ms seq 5 (50 ms) is 1,020 ms old, seq 10 (100 ms) 970 ms.
        let t = now + Duration::from_millis(1070);
        c.handle_read(nack(t, 10, 5, 1 << 4)).unwrap();
        assert_eq!(resent(&mut c), vec![(10, 10, 10)]);
    }
}
