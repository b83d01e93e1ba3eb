//! Per-packet costs of the forwarding hot path: header rewriting per leg, payload inspection
//! (VP8 descriptor, keyframe detection), VP8 picture-id rewriting, and the packet clone the
//! fan-out does for every leg (the baseline the others compare against).
//!
//! `cargo bench -p rakor-sfu --bench forwarding`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rakor_sfu::codec::{self, Vp8Descriptor};
use rakor_sfu::router::{Codec, Leg, PayloadTypes, TrackRoute};
use rtc::rtp::header::{Extension, Header, EXTENSION_PROFILE_ONE_BYTE};
use rtc::rtp::packet::Packet;

/// A typical payload size of a video packet.
const VIDEO_PAYLOAD: usize = 1200;

fn pts(entries: &[(Codec, u8)]) -> PayloadTypes {
    let mut p = PayloadTypes::default();
    for &(c, pt) in entries {
        p.set(c, pt);
    }
    p
}

/// A publisher's video header as received: two one-byte header extensions (e.g. abs-send-time
/// and transport-wide sequence number).
fn received_header() -> Header {
    Header {
        version: 2,
        marker: false,
        payload_type: 120,
        sequence_number: 4242,
        timestamp: 90_000,
        ssrc: 0x1234_5678,
        extension: true,
        extension_profile: EXTENSION_PROFILE_ONE_BYTE,
        extensions: vec![
            Extension {
                id: 2,
                payload: Bytes::from_static(&[0x12, 0x34, 0x56]),
            },
            Extension {
                id: 3,
                payload: Bytes::from_static(&[0x00, 0x2A]),
            },
        ],
        ..Default::default()
    }
}

fn route() -> TrackRoute {
    TrackRoute {
        publisher_pts: pts(&[(Codec::Vp8, 120), (Codec::H264, 125)]),
        legs: vec![Leg {
            pts: pts(&[(Codec::Vp8, 96), (Codec::H264, 102)]),
            active: true,
            ..Leg::new(rakor_sfu::router::ConnKey(1), 1111)
        }],
    }
}

/// A VP8 payload of `len` bytes: X I L T descriptor with a 15-bit picture id, then a key-frame
/// payload header and filler.
fn vp8_payload(len: usize) -> Vec<u8> {
    let mut v = vec![
        0x90, 0xE0, 0x81, 0x23, 0x07, 0x40, 0x50, 0x02, 0x00, 0x9D, 0x01, 0x2A,
    ];
    v.resize(len.max(v.len()), 0xAB);
    v
}

fn bench_router(c: &mut Criterion) {
    let route = route();
    let Some(leg) = route.legs.first().cloned() else {
        return;
    };
    let received = received_header();

    // What the fan-out does once per packet (prepare) and once per leg (rewrite_for); the
    // header clone is in the untimed setup.
    c.bench_function("router/prepare+rewrite_for (2 extensions)", |b| {
        b.iter_batched_ref(
            || received.clone(),
            |h| {
                TrackRoute::prepare(h);
                black_box(route.rewrite_for(&leg, black_box(120), h))
            },
            BatchSize::SmallInput,
        )
    });

    let mut prepared = received.clone();
    TrackRoute::prepare(&mut prepared);
    c.bench_function("router/rewrite_for", |b| {
        b.iter(|| black_box(route.rewrite_for(&leg, black_box(120), &mut prepared)))
    });
}

fn bench_codec(c: &mut Criterion) {
    let minimal = [0x10u8, 0x50, 0x02, 0x00];
    let full = vp8_payload(VIDEO_PAYLOAD);
    c.bench_function("codec/parse_vp8 (no X)", |b| {
        b.iter(|| codec::parse_vp8(black_box(&minimal)))
    });
    c.bench_function("codec/parse_vp8 (X I15 L T)", |b| {
        b.iter(|| codec::parse_vp8(black_box(&full)))
    });

    c.bench_function("codec/is_keyframe VP8", |b| {
        b.iter(|| codec::is_keyframe(black_box(Codec::Vp8), black_box(&full)))
    });
    let mut fu_a = vec![0x7C, 0x85];
    fu_a.resize(VIDEO_PAYLOAD, 0x88);
    c.bench_function("codec/is_keyframe H264 FU-A", |b| {
        b.iter(|| codec::is_keyframe(black_box(Codec::H264), black_box(&fu_a)))
    });
    // SPS, PPS, then a small non-IDR unit: the STAP-A walk reads every unit.
    let stap_a = [
        0x78, 0x00, 0x04, 0x67, 0x42, 0x00, 0x1F, 0x00, 0x02, 0x68, 0xCE, 0x00, 0x03, 0x41, 0x9A,
        0x00,
    ];
    c.bench_function("codec/is_keyframe H264 STAP-A", |b| {
        b.iter(|| codec::is_keyframe(black_box(Codec::H264), black_box(&stap_a)))
    });

    let Some(desc): Option<Vp8Descriptor> = codec::parse_vp8(&full) else {
        return;
    };
    let mut out = BytesMut::with_capacity(VIDEO_PAYLOAD);
    let mut id = 0u16;
    c.bench_function("codec/rewrite_vp8_picture_id (1200 B)", |b| {
        b.iter(|| {
            id = id.wrapping_add(1);
            codec::rewrite_vp8_picture_id(black_box(&full), &desc, id, Some(id as u8), &mut out)
        })
    });
}

fn bench_packet_clone(c: &mut Criterion) {
    let mut header = received_header();
    TrackRoute::prepare(&mut header);
    let packet = Packet {
        header,
        payload: Bytes::from(vp8_payload(VIDEO_PAYLOAD)),
    };
    c.bench_function("baseline/rtp Packet clone (Bytes payload)", |b| {
        b.iter(|| black_box(&packet).clone())
    });
}

/// SRTP protection of one forwarded packet (1200 B payload, two header extensions), as `rtc`
/// does it per leg: before the vendored patch, `marshal()` into one buffer and `encrypt_rtp`
/// into a second (two allocations, two payload copies); after it, `marshal_to` into a buffer
/// with room for the tag and `encrypt_rtp_in_place` (one of each).
fn bench_srtp_protect(c: &mut Criterion) {
    use rtc::shared::marshal::{Marshal, MarshalSize};
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;
    let Ok(provider) = rtc::crypto::default_provider() else {
        return;
    };
    let new_ctx = || {
        Context::new(
            &[7u8; 16],
            &[9u8; 14],
            ProtectionProfile::Aes128CmHmacSha1_80,
            None,
            None,
            provider.crypto(),
        )
    };
    let (Ok(mut two), Ok(mut one)) = (new_ctx(), new_ctx()) else {
        return;
    };
    let mut pkt = Packet {
        header: received_header(),
        payload: Bytes::from(vp8_payload(VIDEO_PAYLOAD)),
    };
    c.bench_function("srtp/marshal + encrypt_rtp (two copies)", |b| {
        b.iter(|| {
            pkt.header.sequence_number = pkt.header.sequence_number.wrapping_add(1);
            let raw = black_box(&pkt).marshal().ok();
            raw.and_then(|r| two.encrypt_rtp(&r).ok())
        })
    });
    c.bench_function("srtp/marshal_to + encrypt_rtp_in_place (one copy)", |b| {
        b.iter(|| {
            pkt.header.sequence_number = pkt.header.sequence_number.wrapping_add(1);
            let p = black_box(&pkt);
            let len = p.marshal_size();
            let mut buf = BytesMut::with_capacity(len + one.rtp_protection_overhead());
            buf.resize(len, 0);
            let ok = p.marshal_to(&mut buf).is_ok() && one.encrypt_rtp_in_place(&mut buf).is_ok();
            ok.then_some(buf)
        })
    });
}

criterion_group!(
    benches,
    bench_router,
    bench_codec,
    bench_packet_clone,
    bench_srtp_protect
);
criterion_main!(benches);
