//! Forwarding decisions for one published track: which subscriber legs get a packet and how its
//! header is rewritten for each (SSRC and payload type are per leg; header extensions are
//! stripped because their ids are negotiated per leg). Plain data, no I/O, unit-tested.

pub use crate::slab::ConnKey;
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
    /// The codec's name as in a mime subtype: `opus`, `VP8`, `H264`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Vp8 => "VP8",
            Codec::H264 => "H264",
        }
    }

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
    /// The subscriber connection in the media core.
    pub conn: ConnKey,
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
    /// Simulcast: the layer being forwarded (`None` = none yet) and the one wanted.
    pub layer: Option<u8>,
    pub target: u8,
    /// Simulcast: the layer the tile and the bandwidth ask for, live or not (a keyframe of it
    /// is taken even before the 100 ms re-evaluation has seen the layer come back).
    pub want: u8,
    /// Outgoing RTP timestamps, continuous across layer switches.
    pub ts: TsRewriter,
    /// Outgoing VP8 picture ids / TL0PICIDX, continuous across layer switches.
    pub pic: PicIdRewriter,
    /// Layer switches done.
    pub switches: u64,
    /// The subscriber's bandwidth carries no video for this leg now ([`crate::bwe`]).
    pub bw_paused: bool,
    /// Simulcast: the highest layer the subscriber's bandwidth allows (`u8::MAX`: any).
    pub cap: u8,
    /// The bandwidth allocator's last allotment (0 = none, k = up to layer k − 1; `None`:
    /// not allocated yet).
    pub allot: Option<usize>,
}

impl Leg {
    /// A new, not yet negotiated leg.
    pub fn new(conn: ConnKey, ssrc: u32) -> Self {
        Self {
            conn,
            ssrc,
            pts: PayloadTypes::default(),
            active: false,
            paused: false,
            needs_keyframe: false,
            size: (0, 0),
            seq: SeqRewriter::default(),
            layer: Some(0),
            target: 0,
            want: 0,
            ts: TsRewriter::default(),
            pic: PicIdRewriter::default(),
            switches: 0,
            bw_paused: false,
            cap: u8::MAX,
            allot: None,
        }
    }

    /// A leg of a simulcast track: nothing is forwarded until a keyframe of `target` arrives.
    pub fn simulcast(conn: ConnKey, ssrc: u32, target: u8) -> Self {
        Self {
            layer: None,
            target,
            want: target,
            ..Self::new(conn, ssrc)
        }
    }

    /// Whether a packet of `layer` goes to this leg (call it for every packet of the track; it
    /// keeps sequence numbers, timestamps and picture ids continuous over what it refuses and
    /// across layer switches). `keyframe_start`: the packet is the first of a keyframe. A switch
    /// to `target` happens only there, so the receiver's decoder never sees a broken reference.
    pub fn admit(&mut self, layer: u8, keyframe_start: bool) -> bool {
        if !self.active || self.paused || self.bw_paused {
            if self.layer == Some(layer) {
                self.seq.skip();
            }
            return false;
        }
        if self.layer != Some(layer) {
            if (layer == self.target || layer == self.want) && keyframe_start {
                self.target = layer;
                self.switch_to(layer);
                return true;
            }
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

    fn switch_to(&mut self, layer: u8) {
        if self.layer.is_some() {
            self.switches += 1;
        }
        self.layer = Some(layer);
        self.needs_keyframe = false;
        self.seq.skip();
        self.ts.switch();
        self.pic.switch();
    }

    /// How one admitted packet is rewritten for this leg (call it after [`Self::admit`] said
    /// yes): the sequence number always; for a simulcast track also the RTP timestamp and,
    /// for VP8, the picture id / TL0PICIDX, so a layer switch looks like one continuous stream.
    /// `picture` is `None` when the payload can go out unchanged (no copy needed).
    pub fn translate(
        &mut self,
        seq: u16,
        ts: u32,
        vp8: Option<&crate::codec::Vp8Descriptor>,
        simulcast: bool,
        now: std::time::Instant,
    ) -> Translation {
        let seq = self.seq.rewrite(seq);
        if !simulcast {
            return Translation {
                seq,
                ts,
                picture: None,
            };
        }
        Translation {
            seq,
            ts: self.ts.rewrite(ts, now, VIDEO_CLOCK_RATE),
            picture: vp8.and_then(|d| {
                d.picture_id
                    .and_then(|pid| self.pic.rewrite(pid, d.tl0_pic_idx))
            }),
        }
    }

    /// Stop or resume (from the next keyframe) this leg for bandwidth. True if it changed.
    pub fn set_bw_paused(&mut self, paused: bool) -> bool {
        if self.bw_paused == paused {
            return false;
        }
        self.bw_paused = paused;
        if !paused {
            self.needs_keyframe = true;
        }
        true
    }

    /// Whether this leg forwards anything now (negotiated, shown, within bandwidth).
    pub fn flowing(&self) -> bool {
        self.active && !self.paused && !self.bw_paused
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

/// RTP clock rate of every video codec Rakor negotiates.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// A packet's header values for one leg ([`Leg::translate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub seq: u16,
    pub ts: u32,
    /// New VP8 (picture id, TL0PICIDX), when the payload must be rewritten for this leg.
    pub picture: Option<(u16, Option<u8>)>,
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

/// Rewrites one leg's RTP timestamps so a layer switch (each simulcast layer has its own random
/// timestamp base) continues the stream: the first packet after a switch gets the last sent
/// timestamp plus the wall-clock time since it, at the codec's clock rate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TsRewriter {
    offset: u32,
    last_out: Option<(u32, std::time::Instant)>,
    resync: bool,
}

impl TsRewriter {
    pub fn switch(&mut self) {
        self.resync = true;
    }

    pub fn rewrite(&mut self, ts: u32, now: std::time::Instant, clock_rate: u32) -> u32 {
        if self.resync {
            self.resync = false;
            if let Some((last, at)) = self.last_out {
                let micros = now.saturating_duration_since(at).as_micros();
                let ticks = u32::try_from(micros * u128::from(clock_rate) / 1_000_000)
                    .unwrap_or(u32::MAX / 2)
                    .max(1);
                self.offset = last.wrapping_add(ticks).wrapping_sub(ts);
            }
        }
        let out = ts.wrapping_add(self.offset);
        if self
            .last_out
            .is_none_or(|(last, _)| out != last && out.wrapping_sub(last) < 0x8000_0000)
        {
            self.last_out = Some((out, now));
        }
        out
    }
}

/// Rewrites one leg's VP8 picture ids (and TL0PICIDX) so they stay continuous across layer
/// switches; `None` from [`Self::rewrite`] means the packet can go out unchanged (no copy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PicIdRewriter {
    offset: u16,
    tl0_offset: u8,
    last_out: Option<(u16, u8)>,
    resync: bool,
}

impl PicIdRewriter {
    pub fn switch(&mut self) {
        self.resync = true;
    }

    /// New (picture id, TL0PICIDX) for a packet with these, or `None` if unchanged.
    pub fn rewrite(&mut self, picture_id: u16, tl0: Option<u8>) -> Option<(u16, Option<u8>)> {
        const MASK: u16 = 0x7fff;
        if self.resync {
            self.resync = false;
            if let Some((last, last_tl0)) = self.last_out {
                self.offset = last.wrapping_add(1).wrapping_sub(picture_id) & MASK;
                if let Some(t) = tl0 {
                    self.tl0_offset = last_tl0.wrapping_add(1).wrapping_sub(t);
                }
            }
        }
        let out = picture_id.wrapping_add(self.offset) & MASK;
        let out_tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        let newer = self.last_out.is_none_or(|(last, _)| {
            let d = out.wrapping_sub(last) & MASK;
            d != 0 && d < 0x4000
        });
        if newer {
            self.last_out = Some((out, out_tl0.unwrap_or(0)));
        }
        if self.offset == 0 && (tl0.is_none() || self.tl0_offset == 0) {
            None
        } else {
            Some((out, out_tl0))
        }
    }
}

/// The simulcast layer a subscriber should get for a tile of `height` CSS pixels (0 = unknown:
/// the best), among `layers` layers ordered low to high (about 180p, 360p, 720p).
pub fn desired_layer(height: u32, layers: usize) -> u8 {
    let top = u8::try_from(layers.saturating_sub(1)).unwrap_or(u8::MAX);
    let want = match height {
        0 => top,
        1..=240 => 0,
        241..=480 => 1,
        _ => 2,
    };
    want.min(top)
}

/// Pick the layer to forward: the highest live layer not above `desired`, else the lowest
/// live one above it; `None` when no layer is live.
pub fn choose_layer(desired: u8, live: &[bool]) -> Option<u8> {
    let d = usize::from(desired);
    let below = live
        .iter()
        .take(d + 1)
        .rposition(|&l| l)
        .and_then(|i| u8::try_from(i).ok());
    below.or_else(|| {
        live.iter()
            .enumerate()
            .skip(d + 1)
            .find(|(_, &l)| l)
            .and_then(|(i, _)| u8::try_from(i).ok())
    })
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

    pub fn leg_mut(&mut self, conn: ConnKey) -> Option<&mut Leg> {
        self.legs.iter_mut().find(|l| l.conn == conn)
    }

    /// The leg that a subscriber's RTCP (by the SSRC it names) refers to.
    pub fn has_leg_ssrc(&self, conn: ConnKey, ssrc: u32) -> bool {
        self.legs.iter().any(|l| l.conn == conn && l.ssrc == ssrc)
    }

    pub fn remove_leg(&mut self, conn: ConnKey) -> Option<Leg> {
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
                    ..Leg::new(ConnKey(1), 1111)
                },
                Leg {
                    pts: pts(&[(Codec::Vp8, 97)]),
                    active: true,
                    ..Leg::new(ConnKey(2), 2222)
                },
                Leg {
                    pts: pts(&[(Codec::Vp8, 96)]),
                    ..Leg::new(ConnKey(3), 3333)
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
        route.legs.push(Leg::new(ConnKey(5), 1));
        assert!(route.has_leg_ssrc(ConnKey(5), 1));
        assert!(!route.has_leg_ssrc(ConnKey(5), 2));
        route.leg_mut(ConnKey(5)).unwrap().active = true;
        assert!(route.remove_leg(ConnKey(5)).unwrap().active);
        assert!(route.remove_leg(ConnKey(5)).is_none());
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
            ..Leg::new(ConnKey(1), 7)
        };
        // (incoming seq, first packet of a keyframe) -> forwarded as
        let mut sent = Vec::new();
        let mut feed = |leg: &mut Leg, seq: u16, kf: bool| {
            if leg.admit(0, kf) {
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
        let mut idle = Leg::new(ConnKey(2), 8);
        assert!(!idle.admit(0, true));
    }

    #[test]
    fn layer_choice_by_tile_height_and_liveness() {
        for (height, layers, want) in [
            (0, 3, 2),
            (180, 3, 0),
            (240, 3, 0),
            (360, 3, 1),
            (720, 3, 2),
            (1080, 3, 2),
            (720, 2, 1),
            (720, 1, 0),
            (0, 0, 0),
        ] {
            assert_eq!(
                desired_layer(height, layers),
                want,
                "{height}px of {layers}"
            );
        }
        for (desired, live, want) in [
            (2u8, &[true, true, true][..], Some(2u8)),
            (2, &[true, true, false], Some(1)),
            (1, &[true, false, true], Some(0)),
            (0, &[false, true, true], Some(1)),
            (0, &[false, false, false], None),
            (2, &[], None),
        ] {
            assert_eq!(choose_layer(desired, live), want, "{desired} of {live:?}");
        }
    }

    /// A simulated layer switch: two layers with their own sequence, timestamp and picture-id
    /// bases; the leg switches from layer 0 to layer 1 only at layer 1's keyframe, and what it
    /// sends is one continuous stream.
    #[test]
    fn simulcast_switch_at_a_keyframe_gives_one_continuous_stream() {
        let t0 = crate::testkit::SimClock::start().now();
        let mut leg = Leg {
            active: true,
            ..Leg::simulcast(ConnKey(1), 7, 0)
        };
        // (layer, seq, ts, picture id, keyframe start) per packet, 2 packets per frame,
        // frames 1/15 s apart (6000 ticks at 90 kHz).
        let mut out: Vec<(u16, u32, u16)> = Vec::new();
        let mut send =
            |leg: &mut Leg, layer: u8, seq: u16, ts: u32, pid: u16, kf: bool, ms: u64| {
                let now = t0 + std::time::Duration::from_millis(ms);
                if leg.admit(layer, kf) {
                    let s = leg.seq.rewrite(seq);
                    let t = leg.ts.rewrite(ts, now, 90_000);
                    let p = leg.pic.rewrite(pid, None).map_or(pid, |(p, _)| p);
                    out.push((s, t, p));
                }
            };
        for f in 0..4u16 {
            let ms = u64::from(f) * 66;
            let ts0 = 1_000 + u32::from(f) * 6000;
            let ts1 = 900_000 + u32::from(f) * 6000;
            // Layer 0 (seq base 100, pid base 10) and layer 1 (seq 5000, pid 20000), interleaved.
            send(&mut leg, 0, 100 + 2 * f, ts0, 10 + f, f == 0, ms);
            send(&mut leg, 0, 101 + 2 * f, ts0, 10 + f, false, ms);
            if f == 1 {
                leg.target = 1; // the subscriber's tile grew
            }
            send(&mut leg, 1, 5000 + 2 * f, ts1, 20000 + f, f == 3, ms);
            send(&mut leg, 1, 5001 + 2 * f, ts1, 20000 + f, false, ms);
        }
        // Frames 0..3 of layer 0 (layer 1's deltas are refused while waiting), then layer 1
        // from its keyframe at frame 3.
        let seqs: Vec<u16> = out.iter().map(|o| o.0).collect();
        assert_eq!(seqs, (100..110).collect::<Vec<u16>>());
        let pids: Vec<u16> = out.iter().map(|o| o.2).collect();
        assert_eq!(pids, [10, 10, 11, 11, 12, 12, 13, 13, 14, 14]);
        let ts: Vec<u32> = out.iter().map(|o| o.1).collect();
        assert_eq!(
            &ts[..8],
            &[1000, 1000, 7000, 7000, 13000, 13000, 19000, 19000]
        );
        // After the switch: the last timestamp plus the elapsed time (none here: the same
        // capture instant, so one tick), never layer 1's own base (900 000 + ...).
        assert_eq!(ts[8], 19001);
        assert_eq!(ts[8], ts[9]);
        assert_eq!(leg.layer, Some(1));
        assert_eq!(leg.switches, 1);
    }

    #[test]
    fn picture_id_rewriter_is_a_no_op_until_a_switch_and_wraps() {
        let mut r = PicIdRewriter::default();
        assert_eq!(r.rewrite(5, Some(1)), None);
        assert_eq!(r.rewrite(6, Some(1)), None);
        r.switch();
        assert_eq!(r.rewrite(30000, Some(200)), Some((7, Some(2))));
        assert_eq!(r.rewrite(30001, Some(200)), Some((8, Some(2))));
        // 15-bit wrap of the incoming id.
        r.switch();
        assert_eq!(r.rewrite(0x7fff, None), Some((9, None)));
        assert_eq!(r.rewrite(0, None), Some((10, None)));
    }
}
