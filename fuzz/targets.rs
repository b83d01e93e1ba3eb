//! The fuzz targets' bodies, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly,
//! libFuzzer) and the stable smoke run in `cargo nextest` (`tests/e2e/fuzz_smoke.rs`, seeded
//! random mutations). Each takes arbitrary bytes and checks that the code the server runs on
//! untrusted input never panics and keeps its invariants; a panic here is a bug.

use rakor_proto::{parse_client_message, ClientMessage, ErrorCode};
use rakor_sfu::demux::{classify, stun_local_ufrag, DatagramKind, Demux};
use rakor_sfu::router::{Codec, Leg, PayloadTypes, TrackRoute};
use std::net::SocketAddr;

/// Signalling: one WebSocket text frame from a client.
pub fn signalling(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_client_message(&text) {
        Ok(msg) => {
            // What parsed re-serialises and parses to the same message.
            let again = serde_json::to_string(&msg).expect("serialise a parsed message");
            let back: ClientMessage = parse_client_message(&again).expect("re-parse");
            assert_eq!(back, msg);
        }
        Err(e) => {
            // Every failure carries a documented, non-fatal-by-itself code.
            assert!(
                matches!(
                    e.code,
                    ErrorCode::MalformedJson
                        | ErrorCode::UnknownType
                        | ErrorCode::BadRequest
                        | ErrorCode::FrameTooLarge
                ),
                "{e:?}"
            );
        }
    }
}

/// Media port: classify a packet, extract the STUN ufrag, route it (as a UDP datagram and as
/// an ICE-TCP frame).
pub fn demux(data: &[u8]) {
    use rakor_sfu::demux::{ConnKey, Transport};
    let kind = classify(data);
    let ufrag = stun_local_ufrag(data);
    // (`stun_local_ufrag` does not look at the first byte; `route` asks it only for STUN.)
    assert!(ufrag.is_none_or(|u| !u.is_empty() && !u.contains(':')));
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut d = Demux::default();
        d.learn_from_outgoing(data, ([10, 0, 0, 2], 5000).into(), transport, ConnKey(2));
        d.add_ufrag("srvufrag".into(), ConnKey(1));
        let src: SocketAddr = ([10, 0, 0, 1], 5000).into();
        let routed = d.route(data, src, transport);
        if let Some(c) = routed {
            assert_eq!(c, ConnKey(1));
            assert_eq!(kind, DatagramKind::Stun);
            assert_eq!(ufrag, Some("srvufrag"));
            // Naming a ufrag teaches no address or stream: only an authenticated binding does.
            assert_eq!(d.route(&[0x80, 0, 0, 0], src, transport), None);
            assert!(!d.stream_bound(src));
        }
        let mut streams = Vec::new();
        d.remove_conn("srvufrag", ConnKey(1), &mut streams);
        assert_eq!(d.route(data, src, transport), None);
    }
}

/// ICE-TCP: RFC 4571 framing of a hostile stream, fed in two chunks split by the first byte.
pub fn tcp_frames(data: &[u8]) {
    use rakor_sfu::ice_tcp::{FrameDecoder, FrameError, MAX_FRAME};
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let mut d = FrameDecoder::default();
    let mut bytes = 0usize;
    let mut frames = 0usize;
    for chunk in [&rest[..cut], &rest[cut..]] {
        match d.feed(chunk, |p| {
            assert!(!p.is_empty() && p.len() <= MAX_FRAME);
            bytes += 2 + p.len();
            frames += 1;
            true
        }) {
            Ok(_) => assert!(d.pending() < 2 + MAX_FRAME),
            Err(e) => {
                assert!(matches!(e, FrameError::Empty | FrameError::TooLong(_)));
                assert_eq!(d.pending(), 0);
                return;
            }
        }
    }
    assert_eq!(bytes + d.pending(), rest.len(), "{frames} frames");
}

/// SDP: the server's own pre-check of a publisher offer.
pub fn sdp(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let n = rakor_sfu::count_sending_media(&text);
    // Not SDP → refused. The SDP parser (the one the media core uses, so what the track limit
    // counts) skips blank lines (CR/LF) before a line and reads the value after `v=` leniently
    // ("\r\nv= 0…" is SDP to it); the first line must still be `v=`.
    if !text.trim_start_matches(['\r', '\n']).starts_with("v=") {
        assert_eq!(n, None);
    }
    if let Some(n) = n {
        assert!(n <= text.matches("m=").count());
    }
    // Simulcast layers: bounded however hostile the offer.
    for (_mid, rids) in rakor_sfu::simulcast_rids(&text) {
        assert!((2..=4).contains(&rids.len()), "{rids:?}");
        assert!(rids.iter().all(|r| !r.is_empty() && r.len() <= 16));
    }
}

/// RTP: parse a packet (the `rtc` core's parser), strip and rewrite its header for a leg
/// chosen by the input, write it out again: SSRC/PT changed as asked, sequence number,
/// timestamp, marker and payload untouched.
pub fn rtp_rewrite(data: &[u8]) {
    use rtc::shared::marshal::{Marshal, Unmarshal};
    let (Some(&sel), Some(rest)) = (data.first(), data.get(1..)) else {
        return;
    };
    let mut buf = rest;
    let Ok(pkt) = rtc::rtp::packet::Packet::unmarshal(&mut buf) else {
        return;
    };
    let mut publisher = PayloadTypes::default();
    publisher.set(Codec::Vp8, pkt.header.payload_type);
    publisher.set(Codec::Opus, pkt.header.payload_type.wrapping_add(1) & 0x7f);
    let mut leg_pts = PayloadTypes::default();
    leg_pts.set(Codec::Vp8, sel & 0x7f);
    let route = TrackRoute {
        publisher_pts: publisher,
        legs: vec![Leg {
            pts: leg_pts,
            active: sel & 0x80 == 0,
            ..Leg::new(rakor_sfu::router::ConnKey(0), u32::from(sel) * 0x0101_0101)
        }],
    };
    rtp_payload(sel, &pkt);
    let mut h = pkt.header.clone();
    TrackRoute::prepare(&mut h);
    assert!(!h.extension && h.extensions.is_empty());
    let Some(leg) = route.legs.first() else {
        return;
    };
    match route.rewrite_for(leg, pkt.header.payload_type, &mut h) {
        Ok(()) => {
            assert_eq!((h.ssrc, h.payload_type), (leg.ssrc, sel & 0x7f));
            let out = rtc::rtp::packet::Packet {
                header: h.clone(),
                payload: pkt.payload.clone(),
            };
            let Ok(bytes) = out.marshal() else { return };
            let mut b = &bytes[..];
            let back =
                rtc::rtp::packet::Packet::unmarshal(&mut b).expect("re-parse a rewritten packet");
            assert_eq!(back.header.ssrc, leg.ssrc);
            assert_eq!(back.header.sequence_number, pkt.header.sequence_number);
            assert_eq!(back.header.timestamp, pkt.header.timestamp);
            assert_eq!(back.header.marker, pkt.header.marker);
            assert_eq!(back.payload, pkt.payload);
        }
        Err(_) => assert!(!leg.active || leg.pts.pt(Codec::Vp8).is_none()),
    }
}

/// What the server reads from an RTP packet itself: the RFC 6464 audio level in any header
/// extension, the VP8 descriptor / H.264 keyframe test, the VP8 picture-id rewrite, and a leg's
/// sequence-number rewriting around a pause.
fn rtp_payload(sel: u8, pkt: &rtc::rtp::packet::Packet) {
    use rakor_sfu::codec;
    for ext in &pkt.header.extensions {
        if let Some((level, _voice)) = rakor_sfu::speakers::parse_audio_level(&ext.payload) {
            assert!(level <= 127);
        }
    }
    let payload = &pkt.payload[..];
    let _ = codec::h264_is_keyframe(payload);
    let _ = codec::is_keyframe(Codec::H264, payload);
    let kf = codec::is_keyframe(Codec::Vp8, payload);
    if let Some(d) = codec::parse_vp8(payload) {
        assert!(d.header_len <= payload.len());
        assert_eq!(kf, d.keyframe);
        let mut out = bytes::BytesMut::new();
        let want = u16::from(sel) * 131;
        if codec::rewrite_vp8_picture_id(payload, &d, want, Some(sel), &mut out) {
            let back = codec::parse_vp8(&out).expect("re-parse a rewritten VP8 payload");
            let mask = if d.picture_id_15bit { 0x7fff } else { 0x7f };
            assert_eq!(back.picture_id, Some(want & mask));
            assert_eq!(back.keyframe, d.keyframe);
        } else {
            assert!(out.is_empty());
        }
    }
    // A leg that sends, pauses for `sel` packets, and resumes at a keyframe: no gap on the wire.
    let mut leg = Leg {
        active: true,
        ..Leg::new(rakor_sfu::router::ConnKey(0), 1)
    };
    let s0 = pkt.header.sequence_number;
    assert!(leg.admit(0, false));
    let first = leg.seq.rewrite(s0);
    leg.set_paused(true);
    for i in 1..=u16::from(sel) {
        assert!(!leg.admit(0, i % 7 == 0));
    }
    leg.set_paused(false);
    let resume = s0.wrapping_add(u16::from(sel)).wrapping_add(1);
    assert!(!leg.admit(0, false), "resumed before a keyframe");
    assert!(leg.admit(0, true));
    assert_eq!(
        leg.seq.rewrite(resume.wrapping_add(1)),
        first.wrapping_add(1)
    );
}
