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
}

/// Why a packet was not forwarded to a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Inactive,
    UnknownPayloadType,
    CodecNotNegotiated,
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
        let codec = self
            .publisher_pts
            .codec(publisher_pt)
            .ok_or(Drop::UnknownPayloadType)?;
        header.payload_type = leg.pts.pt(codec).ok_or(Drop::CodecNotNegotiated)?;
        header.ssrc = leg.ssrc;
        Ok(())
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
                    conn: 1,
                    ssrc: 1111,
                    pts: pts(&[(Codec::Vp8, 96), (Codec::H264, 102)]),
                    active: true,
                },
                Leg {
                    conn: 2,
                    ssrc: 2222,
                    pts: pts(&[(Codec::Vp8, 97)]),
                    active: true,
                },
                Leg {
                    conn: 3,
                    ssrc: 3333,
                    pts: pts(&[(Codec::Vp8, 96)]),
                    active: false,
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
        route.legs.push(Leg {
            conn: 5,
            ssrc: 1,
            pts: PayloadTypes::default(),
            active: false,
        });
        assert!(route.has_leg_ssrc(5, 1));
        assert!(!route.has_leg_ssrc(5, 2));
        route.leg_mut(5).unwrap().active = true;
        assert!(route.remove_leg(5).unwrap().active);
        assert!(route.remove_leg(5).is_none());
    }
}
