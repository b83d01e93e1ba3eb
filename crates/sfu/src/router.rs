//! Forwarding decisions for one published track: which subscriber legs get a packet and how its
//! header is rewritten for each (SSRC and payload type are per leg; header extensions are
//! stripped because their ids are negotiated per leg). Plain data, no I/O, unit-tested.

use rtc::rtp::header::Header;

/// Codecs the media core negotiates. The index is used for per-leg payload-type tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus = 0,
    Vp8 = 1,
    H264 = 2,
}

pub const CODEC_COUNT: usize = 3;

impl Codec {
    /// From an SDP/RTP mime type such as `video/VP8` (case-insensitive).
    pub fn from_mime(mime: &str) -> Option<Codec> {
        let sub = mime.rsplit('/').next()?;
        if sub.eq_ignore_ascii_case("opus") {
            Some(Codec::Opus)
        } else if sub.eq_ignore_ascii_case("vp8") {
            Some(Codec::Vp8)
        } else if sub.eq_ignore_ascii_case("h264") {
            Some(Codec::H264)
        } else {
            None
        }
    }
}

/// Payload type ↔ codec table of one connection direction (at most a handful of entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadTypes {
    by_codec: [Option<u8>; CODEC_COUNT],
}

impl PayloadTypes {
    pub fn set(&mut self, codec: Codec, pt: u8) {
        // Keep the first (preferred) payload type of a codec.
        let slot = &mut self.by_codec[codec as usize];
        if slot.is_none() {
            *slot = Some(pt);
        }
    }

    pub fn pt(&self, codec: Codec) -> Option<u8> {
        self.by_codec[codec as usize]
    }

    /// Which codec a payload type stands for.
    pub fn codec(&self, pt: u8) -> Option<Codec> {
        [Codec::Opus, Codec::Vp8, Codec::H264]
            .into_iter()
            .find(|c| self.by_codec[*c as usize] == Some(pt))
    }

    pub fn is_empty(&self) -> bool {
        self.by_codec.iter().all(Option::is_none)
    }
}

/// One subscriber's copy of a published track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The subscriber connection's slot in the worker.
    pub conn: usize,
    /// The SSRC the subscriber sees for this track.
    pub ssrc: u32,
    /// Payload types negotiated on the subscriber's connection.
    pub pts: PayloadTypes,
    /// Connected and negotiated: packets flow.
    pub active: bool,
    /// The subscriber does not show this track (`track_settings` with `visible: false`).
    pub paused: bool,
    /// Forwarding (re)starts only at the first packet of a keyframe (after a pause).
    pub needs_keyframe: bool,
    /// The tile size the subscriber last reported (CSS pixels; 0 = unknown).
    pub size: (u32, u32),
    /// Outgoing sequence numbers, continuous across the gaps the server makes on purpose.
    pub seq: SeqRewriter,
}

impl Leg {
    /// A new, not yet negotiated leg.
    pub fn new(conn: usize, ssrc: u32) -> Self {
        Self {
            conn,
            ssrc,
            pts: PayloadTypes::default(),
            active: false,
            paused: false,
            needs_keyframe: false,
            size: (0, 0),
            seq: SeqRewriter::default(),
        }
    }

    /// Whether this packet goes to this leg (call it for every packet of the track; it keeps
    /// the sequence numbers continuous over what it refuses). `keyframe_start`: the packet is
    /// the first of a keyframe.
    pub fn admit(&mut self, keyframe_start: bool) -> bool {
        if !self.active || self.paused {
            self.seq.skip();
            return false;
        }
        if self.needs_keyframe {
            if !keyframe_start {
                self.seq.skip();
                return false;
            }
            self.needs_keyframe = false;
        }
        true
    }

    /// Stop or resume (from the next keyframe) this leg. True if it changed.
    pub fn set_paused(&mut self, paused: bool) -> bool {
        if self.paused == paused {
            return false;
        }
        self.paused = paused;
        if !paused {
            self.needs_keyframe = true;
        }
        true
    }
}

/// Rewrites one leg's RTP sequence numbers so that packets the server drops on purpose (a
/// paused leg, audio of a site that is not among the loudest, deltas before a keyframe) leave no
/// gap: a receiver would take a gap for loss, NACK it, and its jitter buffer would wait. Real
/// loss upstream still shows as a gap (it is not skipped, only offset), so NACKs keep working.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqRewriter {
    offset: u16,
    /// Highest sequence number sent on this leg.
    last_out: Option<u16>,
    /// Packets were dropped on purpose since the last one sent: re-anchor on the next.
    resync: bool,
}

impl SeqRewriter {
    /// A packet is being dropped on purpose.
    pub fn skip(&mut self) {
        self.resync = true;
    }

    /// The sequence number to send for incoming `seq`.
    pub fn rewrite(&mut self, seq: u16) -> u16 {
        if self.resync {
            self.resync = false;
            if let Some(last) = self.last_out {
                self.offset = last.wrapping_add(1).wrapping_sub(seq);
            }
        }
        let out = seq.wrapping_add(self.offset);
        if self.last_out.is_none_or(|last| seq_newer(out, last)) {
            self.last_out = Some(out);
        }
        out
    }
}

/// RFC 3550 serial number order: `a` comes after `b`.
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Why a packet was not forwarded to a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Inactive,
    UnknownPayloadType,
    CodecNotNegotiated,
}

/// SSRC and payload type of a [`TrackRoute::prepare`]d header for `leg` (whose admission was
/// decided already, see [`Leg::admit`]).
pub fn rewrite_header(
    publisher_pts: &PayloadTypes,
    leg: &Leg,
    publisher_pt: u8,
    header: &mut Header,
) -> Result<(), Drop> {
    let codec = publisher_pts
        .codec(publisher_pt)
        .ok_or(Drop::UnknownPayloadType)?;
    header.payload_type = leg.pts.pt(codec).ok_or(Drop::CodecNotNegotiated)?;
    header.ssrc = leg.ssrc;
    Ok(())
}

/// The route of one published track.
#[derive(Debug, Clone, Default)]
pub struct TrackRoute {
    /// Payload types the publisher negotiated.
    pub publisher_pts: PayloadTypes,
    pub legs: Vec<Leg>,
}

impl TrackRoute {
    /// Strip what is per-leg from an incoming packet's header, once before the fan-out.
    pub fn prepare(header: &mut Header) {
        header.extension = false;
        header.extensions.clear();
        header.extensions_padding = 0;
    }

    /// Rewrite `header` (already [`Self::prepare`]d, holding the publisher's payload type in
    /// `publisher_pt`) for `leg`.
    pub fn rewrite_for(
        &self,
        leg: &Leg,
        publisher_pt: u8,
        header: &mut Header,
    ) -> Result<(), Drop> {
        if !leg.active {
            return Err(Drop::Inactive);
        }
        rewrite_header(&self.publisher_pts, leg, publisher_pt, header)
    }

    pub fn leg_mut(&mut self, conn: usize) -> Option<&mut Leg> {
        self.legs.iter_mut().find(|l| l.conn == conn)
    }

    /// The leg that a subscriber's RTCP (by the SSRC it names) refers to.
    pub fn has_leg_ssrc(&self, conn: usize, ssrc: u32) -> bool {
        self.legs.iter().any(|l| l.conn == conn && l.ssrc == ssrc)
    }

    pub fn remove_leg(&mut self, conn: usize) -> Option<Leg> {
        let i = self.legs.iter().position(|l| l.conn == conn)?;
        Some(self.legs.swap_remove(i))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pts(entries: &[(Codec, u8)]) -> PayloadTypes {
        let mut p = PayloadTypes::default();
        for &(c, pt) in entries {
            p.set(c, pt);
        }
        p
    }

    #[test]
    fn codec_from_mime() {
        for (m, c) in [
            ("video/VP8", Some(Codec::Vp8)),
            ("video/vp8", Some(Codec::Vp8)),
            ("audio/opus", Some(Codec::Opus)),
            ("video/H264", Some(Codec::H264)),
            ("video/VP9", None),
            ("", None),
        ] {
            assert_eq!(Codec::from_mime(m), c, "{m}");
        }
    }

    #[test]
    fn rewrites_ssrc_and_payload_type_per_leg() {
        let route = TrackRoute {
            publisher_pts: pts(&[(Codec::Vp8, 120), (Codec::H264, 125)]),
            legs: vec![
                Leg {
                    pts: pts(&[(Codec::Vp8, 96), (Codec::H264, 102)]),
                    active: true,
                    ..Leg::new(1, 1111)
                },
                Leg {
                    pts: pts(&[(Codec::Vp8, 97)]),
                    active: true,
                    ..Leg::new(2, 2222)
                },
                Leg {
                    pts: pts(&[(Codec::Vp8, 96)]),
                    ..Leg::new(3, 3333)
                },
            ],
        };
        let base = Header {
            payload_type: 120,
            ssrc: 42,
            sequence_number: 7,
            timestamp: 9000,
            extension: true,
            extensions: vec![rtc::rtp::header::Extension {
                id: 3,
                payload: bytes::Bytes::from_static(&[1]),
            }],
            ..Default::default()
        };
        let mut prepared = base.clone();
        TrackRoute::prepare(&mut prepared);
        assert!(!prepared.extension && prepared.extensions.is_empty());

        // (leg, publisher pt, expected)
        let cases = [
            (0, 120, Ok((96, 1111))),
            (1, 120, Ok((97, 2222))),
            (2, 120, Err(Drop::Inactive)),
            (0, 125, Ok((102, 1111))),
            (1, 125, Err(Drop::CodecNotNegotiated)),
            (0, 99, Err(Drop::UnknownPayloadType)),
        ];
        for (leg, pt, want) in cases {
            let mut h = prepared.clone();
            let got = route
                .rewrite_for(&route.legs[leg], pt, &mut h)
                .map(|()| (h.payload_type, h.ssrc));
            assert_eq!(got, want, "leg {leg} pt {pt}");
            if got.is_ok() {
                assert_eq!(
                    (h.sequence_number, h.timestamp),
                    (7, 9000),
                    "seq/ts untouched"
                );
            }
        }
    }

    #[test]
    fn legs_are_found_and_removed() {
        let mut route = TrackRoute::default();
        route.legs.push(Leg::new(5, 1));
        assert!(route.has_leg_ssrc(5, 1));
        assert!(!route.has_leg_ssrc(5, 2));
        route.leg_mut(5).unwrap().active = true;
        assert!(route.remove_leg(5).unwrap().active);
        assert!(route.remove_leg(5).is_none());
    }

    #[test]
    fn seq_newer_follows_serial_order() {
        for (a, b, newer) in [
            (1u16, 0u16, true),
            (0, 1, false),
            (5, 5, false),
            (0, 65535, true),
            (65535, 0, false),
            (0x8000, 0, false),
            (0x7fff, 0, true),
        ] {
            assert_eq!(seq_newer(a, b), newer, "{a} after {b}");
        }
    }

    #[test]
    fn seq_rewriter_closes_gaps_made_on_purpose_only() {
        let mut r = SeqRewriter::default();
        // A continuous run passes with offset 0.
        assert_eq!(
            (100..103).map(|s| r.rewrite(s)).collect::<Vec<_>>(),
            [100, 101, 102]
        );
        // Upstream loss (104 lost) stays visible as a gap.
        assert_eq!(r.rewrite(104), 104);
        // 105..=200 dropped on purpose; 201 continues right after 104.
        r.skip();
        assert_eq!(r.rewrite(201), 105);
        assert_eq!(r.rewrite(202), 106);
        // A late (reordered) packet keeps its place and does not move the high mark.
        assert_eq!(r.rewrite(200), 104);
        assert_eq!(r.rewrite(203), 107);
        // Across the 16-bit wrap.
        r.skip();
        assert_eq!(r.rewrite(65534), 108);
        assert_eq!(r.rewrite(65535), 109);
        assert_eq!(r.rewrite(0), 110);
        // Sent wraps too.
        let mut w = SeqRewriter::default();
        w.rewrite(65535);
        w.skip();
        assert_eq!(w.rewrite(10), 0);
    }

    #[test]
    fn a_leg_resumes_at_a_keyframe_without_a_sequence_gap() {
        let mut leg = Leg {
            active: true,
            ..Leg::new(1, 7)
        };
        // (incoming seq, first packet of a keyframe) -> forwarded as
        let mut sent = Vec::new();
        let mut feed = |leg: &mut Leg, seq: u16, kf: bool| {
            if leg.admit(kf) {
                sent.push(leg.seq.rewrite(seq));
            }
        };
        feed(&mut leg, 10, true);
        feed(&mut leg, 11, false);
        assert!(leg.set_paused(true));
        assert!(!leg.set_paused(true));
        for s in 12..20 {
            feed(&mut leg, s, s == 15);
        }
        assert!(leg.set_paused(false));
        feed(&mut leg, 20, false); // a delta: still waiting for a keyframe
        feed(&mut leg, 21, true); // keyframe: resume right after 11
        feed(&mut leg, 22, false);
        assert_eq!(sent, [10, 11, 12, 13]);
        // An inactive leg sends nothing.
        let mut idle = Leg::new(2, 8);
        assert!(!idle.admit(true));
    }
}
