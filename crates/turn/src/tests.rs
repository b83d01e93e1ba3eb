//! Table-driven tests of the TURN session: real STUN messages in, decoded replies out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::type_complexity)]

use crate::credentials;
use crate::framing::{next_frame, write_channel_data, Frame, FramingError};
use crate::{Action, At, Quota, Session, TurnConfig};
use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc::stun::attributes::*;
use rtc::stun::error_code::ErrorCodeAttribute;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::*;
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-secret";
const UNIX: u64 = 1_800_000_000;

fn media() -> SocketAddr {
    "10.0.0.1:7882".parse().unwrap()
}
fn media_local() -> SocketAddr {
    "127.0.0.1:7882".parse().unwrap()
}
fn relay() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

fn provider() -> Arc<dyn RTCCryptoProvider> {
    rtc::crypto::default_provider().unwrap()
}

fn config() -> Arc<TurnConfig> {
    Arc::new(TurnConfig {
        secret: SECRET.to_vec(),
        peers: vec![(media(), media_local())],
        max_packets_per_second: 100,
        ..TurnConfig::default()
    })
}

/// A test client: builds requests, keeps the nonce.
struct Client {
    session: Session,
    username: String,
    password: String,
    nonce: String,
    realm: String,
    t0: Instant,
}

struct Reply {
    m: Message,
}

impl Reply {
    fn class(&self) -> MessageClass {
        self.m.typ.class
    }
    fn code(&self) -> Option<u16> {
        let mut e = ErrorCodeAttribute::default();
        use rtc::stun::message::Getter;
        e.get_from(&self.m).ok().map(|()| e.code.0)
    }
    fn text(&self, t: AttrType) -> Option<String> {
        TextAttribute::get_from_as(&self.m, t).ok().map(|a| a.text)
    }
    fn addr(&self, t: AttrType) -> Option<SocketAddr> {
        let mut a = XorMappedAddress::default();
        a.get_from_as(&self.m, t)
            .ok()
            .map(|()| SocketAddr::new(a.ip, a.port))
    }
    fn lifetime(&self) -> Option<u32> {
        let v = self.m.get(ATTR_LIFETIME).ok()?;
        Some(u32::from_be_bytes(v[..4].try_into().ok()?))
    }
}

fn parse(bytes: &[u8]) -> Reply {
    let mut m = Message::new();
    m.unmarshal_binary(bytes).unwrap();
    Reply { m }
}

fn only_reply(actions: &[Action]) -> Reply {
    match actions {
        [Action::Reply(b)] => parse(b),
        other => panic!("expected one reply, got {other:?}"),
    }
}

impl Client {
    fn new(user: &str, expires_at: u64) -> Self {
        Self::with_secret(user, expires_at, SECRET)
    }

    fn with_secret(user: &str, expires_at: u64, secret: &[u8]) -> Self {
        let p = provider();
        let c = credentials::mint(p.crypto(), secret, user, expires_at).unwrap();
        Self {
            session: Session::new(config(), p, "192.0.2.10:40000".parse().unwrap(), true),
            username: c.username,
            password: c.credential,
            nonce: String::new(),
            realm: String::new(),
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: u64) -> At {
        At {
            now: self.t0 + Duration::from_secs(secs),
            unix: UNIX + secs,
        }
    }

    /// A request of `method` with `attrs` added by `build`; signed when we know a nonce.
    fn request(&self, method: Method, build: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut m = Message::new();
        m.typ = MessageType::new(method, CLASS_REQUEST);
        m.new_transaction_id().unwrap();
        m.write_header();
        build(&mut m);
        if !self.nonce.is_empty() {
            TextAttribute::new(ATTR_USERNAME, self.username.clone())
                .add_to(&mut m)
                .unwrap();
            TextAttribute::new(ATTR_REALM, self.realm.clone())
                .add_to(&mut m)
                .unwrap();
            TextAttribute::new(ATTR_NONCE, self.nonce.clone())
                .add_to(&mut m)
                .unwrap();
            let p = provider();
            MessageIntegrity::new_long_term_integrity_with_provider(
                self.username.clone(),
                self.realm.clone(),
                self.password.clone(),
                p.crypto(),
            )
            .unwrap()
            .add_to(&mut m)
            .unwrap();
        }
        m.raw
    }

    fn send(&mut self, raw: &[u8], secs: u64, quota: &Mutex<Quota>) -> Vec<Action> {
        let at = self.at(secs);
        self.session.handle_stun(raw, at, quota)
    }

    /// Allocate, answering the 401 challenge; returns the final actions.
    fn allocate(&mut self, secs: u64, quota: &Mutex<Quota>) -> Vec<Action> {
        let raw = self.request(METHOD_ALLOCATE, udp_transport);
        let actions = self.send(&raw, secs, quota);
        if self.nonce.is_empty() {
            let r = only_reply(&actions);
            assert_eq!(r.code(), Some(401));
            self.nonce = r.text(ATTR_NONCE).unwrap();
            self.realm = r.text(ATTR_REALM).unwrap();
            let raw = self.request(METHOD_ALLOCATE, udp_transport);
            return self.send(&raw, secs, quota);
        }
        actions
    }

    fn allocated(&mut self, secs: u64, quota: &Mutex<Quota>) -> Reply {
        assert_eq!(self.allocate(secs, quota), vec![Action::OpenRelay]);
        let at = self.at(secs);
        only_reply(&self.session.relay_opened(relay(), at))
    }

    fn key(&self) -> Vec<u8> {
        let text = format!("{}:{}:{}", self.username, self.realm, self.password);
        provider()
            .crypto()
            .hash(HashAlgorithm::Md5, text.as_bytes())
            .unwrap()
    }
}

fn udp_transport(m: &mut Message) {
    m.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

fn peer(addr: SocketAddr) -> impl FnOnce(&mut Message) {
    move |m| {
        XorMappedAddress {
            ip: addr.ip(),
            port: addr.port(),
        }
        .add_to_as(m, ATTR_XOR_PEER_ADDRESS)
        .unwrap();
    }
}

fn quota() -> Mutex<Quota> {
    Mutex::new(Quota::new(10, 2))
}

#[test]
fn allocate_after_the_401_challenge_gets_a_relay_and_a_signed_response() {
    let q = quota();
    let mut c = Client::new("site-a", UNIX + 600);
    let mut r = c.allocated(0, &q);
    assert_eq!(r.class(), CLASS_SUCCESS_RESPONSE);
    assert_eq!(r.addr(ATTR_XOR_RELAYED_ADDRESS), Some(relay()));
    assert_eq!(
        r.addr(ATTR_XORMAPPED_ADDRESS),
        Some("192.0.2.10:40000".parse().unwrap())
    );
    assert_eq!(r.lifetime(), Some(600));
    let p = provider();
    MessageIntegrity::check(&mut r.m, &c.key(), p.crypto()).unwrap();
    assert_eq!(c.session.relay_addr(), Some(relay()));
    assert_eq!(c.session.user(), Some("site-a"));
    assert_eq!(q.lock().unwrap().total(), 1);
    // A second Allocate on the same transport: 437.
    let raw = c.request(METHOD_ALLOCATE, udp_transport);
    assert_eq!(only_reply(&c.send(&raw, 1, &q)).code(), Some(437));
}

#[test]
fn bad_credentials_are_refused() {
    // (what is wrong, client, expected code)
    let cases: Vec<(&str, Box<dyn Fn() -> Client>, u16)> = vec![
        ("expired", Box::new(|| Client::new("site-a", UNIX - 1)), 401),
        (
            "minted with another secret",
            Box::new(|| Client::with_secret("site-a", UNIX + 600, b"other")),
            401,
        ),
        (
            "wrong password",
            Box::new(|| {
                let mut c = Client::new("site-a", UNIX + 600);
                c.password = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
                c
            }),
            401,
        ),
        (
            "expiry edited to the future",
            Box::new(|| {
                let mut c = Client::new("site-a", UNIX - 1);
                c.username = format!("{}:site-a", UNIX + 3600);
                c
            }),
            401,
        ),
        (
            "not a REST-API username",
            Box::new(|| {
                let mut c = Client::new("site-a", UNIX + 600);
                c.username = "admin".into();
                c
            }),
            401,
        ),
    ];
    for (what, make, code) in cases {
        let q = quota();
        let mut c = make();
        let actions = c.allocate(0, &q);
        let r = only_reply(&actions);
        assert_eq!(r.code(), Some(code), "{what}");
        assert!(
            r.text(ATTR_NONCE).is_some(),
            "{what}: a challenge carries a nonce"
        );
        assert_eq!(q.lock().unwrap().total(), 0, "{what}");
    }
}

#[test]
fn stale_or_foreign_nonces_get_438_and_a_new_nonce_works() {
    let q = quota();
    let mut a = Client::new("site-a", UNIX + 7200);
    let raw = a.request(METHOD_ALLOCATE, udp_transport);
    let r = only_reply(&a.send(&raw, 0, &q));
    a.nonce = r.text(ATTR_NONCE).unwrap();
    a.realm = r.text(ATTR_REALM).unwrap();
    // A nonce issued to another transport is not valid here.
    let mut b = Client::new("site-a", UNIX + 7200);
    b.nonce = a.nonce.clone();
    b.realm = a.realm.clone();
    let raw = b.request(METHOD_ALLOCATE, udp_transport);
    assert_eq!(only_reply(&b.send(&raw, 0, &q)).code(), Some(438));
    // Our own nonce, after its lifetime (600 s): stale.
    let raw = a.request(METHOD_ALLOCATE, udp_transport);
    let r = only_reply(&a.send(&raw, 601, &q));
    assert_eq!(r.code(), Some(438));
    let fresh = r.text(ATTR_NONCE).unwrap();
    assert_ne!(fresh, a.nonce);
    a.nonce = fresh;
    let raw = a.request(METHOD_ALLOCATE, udp_transport);
    assert_eq!(a.send(&raw, 602, &q), vec![Action::OpenRelay]);
}

#[test]
fn only_the_media_address_may_be_a_peer() {
    let q = quota();
    let mut c = Client::new("site-a", UNIX + 600);
    c.allocated(0, &q);
    let forbidden: [&str; 4] = [
        "127.0.0.1:9",
        "10.0.0.1:7883",
        "10.0.0.2:7882",
        "127.0.0.1:7882",
    ];
    for p in forbidden {
        let p: SocketAddr = p.parse().unwrap();
        let raw = c.request(METHOD_CREATE_PERMISSION, peer(p));
        assert_eq!(
            only_reply(&c.send(&raw, 1, &q)).code(),
            Some(403),
            "permission {p}"
        );
        let raw = c.request(METHOD_CHANNEL_BIND, |m| {
            m.add(ATTR_CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
            peer(p)(m);
        });
        assert_eq!(
            only_reply(&c.send(&raw, 1, &q)).code(),
            Some(403),
            "channel {p}"
        );
        let send = send_indication(p, b"hello");
        assert_eq!(c.send(&send, 1, &q), vec![], "send {p}");
    }
    // One forbidden address among allowed ones refuses the whole request.
    let raw = c.request(METHOD_CREATE_PERMISSION, |m| {
        peer(media())(m);
        peer("127.0.0.1:9".parse().unwrap())(m);
    });
    assert_eq!(only_reply(&c.send(&raw, 1, &q)).code(), Some(403));
    // Before a permission, Send to the media address is dropped too.
    assert_eq!(c.send(&send_indication(media(), b"x"), 1, &q), vec![]);
    let raw = c.request(METHOD_CREATE_PERMISSION, peer(media()));
    assert_eq!(
        only_reply(&c.send(&raw, 1, &q)).class(),
        CLASS_SUCCESS_RESPONSE
    );
    assert_eq!(
        c.send(&send_indication(media(), b"stun"), 2, &q),
        vec![Action::SendToPeer {
            to: media_local(),
            data: b"stun".to_vec()
        }]
    );
    // Data from the media socket comes back as a Data indication naming the media address.
    let mut out = Vec::new();
    assert!(c
        .session
        .from_peer(media_local(), b"answer", c.at(2).now, &mut out));
    let r = parse(&out);
    assert_eq!(r.m.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
    assert_eq!(r.addr(ATTR_XOR_PEER_ADDRESS), Some(media()));
    assert_eq!(r.m.get(ATTR_DATA).unwrap(), b"answer");
    // From anyone else: dropped.
    assert!(!c
        .session
        .from_peer("127.0.0.1:9".parse().unwrap(), b"x", c.at(2).now, &mut out));
    // Permissions expire after 300 s.
    assert!(!c
        .session
        .from_peer(media_local(), b"late", c.at(302).now, &mut out));
}

fn send_indication(to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new();
    m.typ = MessageType::new(METHOD_SEND, CLASS_INDICATION);
    m.new_transaction_id().unwrap();
    m.write_header();
    peer(to)(&mut m);
    m.add(ATTR_DATA, data);
    m.raw
}

#[test]
fn channels_carry_data_both_ways_with_stream_padding() {
    let q = quota();
    let mut c = Client::new("site-a", UNIX + 600);
    c.allocated(0, &q);
    let now = c.at(1).now;
    assert_eq!(
        c.session.channel_target(0x4001, 10, now),
        None,
        "not bound yet"
    );
    for (number, code) in [(0x3FFF_u16, Some(400)), (0x5000, Some(400)), (0x4001, None)] {
        let raw = c.request(METHOD_CHANNEL_BIND, |m| {
            m.add(
                ATTR_CHANNEL_NUMBER,
                &[(number >> 8) as u8, number as u8, 0, 0],
            );
            peer(media())(m);
        });
        let r = only_reply(&c.send(&raw, 1, &q));
        assert_eq!(r.code(), code, "channel {number:#x}");
    }
    // The same peer on another channel: 400.
    let raw = c.request(METHOD_CHANNEL_BIND, |m| {
        m.add(ATTR_CHANNEL_NUMBER, &[0x40, 0x02, 0, 0]);
        peer(media())(m);
    });
    assert_eq!(only_reply(&c.send(&raw, 1, &q)).code(), Some(400));
    assert_eq!(
        c.session.channel_target(0x4001, 10, now),
        Some(media_local())
    );
    assert_eq!(c.session.channel_target(0x4002, 10, now), None);
    let mut out = Vec::new();
    assert!(c.session.from_peer(media_local(), b"hello", now, &mut out));
    assert_eq!(
        out,
        [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]
    );
    // Datagrams are appended (a stream gathers several into one write), each padded.
    let mut batch = vec![0xAA];
    assert!(c.session.from_peer(media_local(), b"hi", now, &mut batch));
    assert!(c
        .session
        .from_peer(media_local(), b"hello", now, &mut batch));
    assert_eq!(
        batch,
        [
            0xAA, 0x40, 0x01, 0, 2, b'h', b'i', 0, 0, 0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l',
            b'o', 0, 0, 0
        ]
    );
    assert!(
        !c.session
            .from_peer("127.0.0.1:9".parse().unwrap(), b"x", now, &mut batch),
        "not a permitted peer"
    );
    assert_eq!(batch.len(), 21, "a refused datagram appends nothing");
    assert_eq!(
        next_frame(&out),
        Ok(Some(Frame::ChannelData {
            channel: 0x4001,
            data_len: 5,
            len: 12
        }))
    );
    // Channels expire after 600 s (the allocation was refreshed meanwhile).
    let raw = c.request(METHOD_REFRESH, |m| {
        m.add(ATTR_LIFETIME, &3600u32.to_be_bytes())
    });
    assert_eq!(only_reply(&c.send(&raw, 2, &q)).lifetime(), Some(3600));
    assert_eq!(c.session.channel_target(0x4001, 10, c.at(601).now), None);
}

#[test]
fn the_rate_limit_drops_a_flood() {
    let q = quota();
    let mut c = Client::new("site-a", UNIX + 600);
    c.allocated(0, &q);
    let raw = c.request(METHOD_CHANNEL_BIND, |m| {
        m.add(ATTR_CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
        peer(media())(m);
    });
    c.send(&raw, 0, &q);
    let now = c.at(1).now;
    let passed = (0..1000)
        .filter(|_| c.session.channel_target(0x4000, 100, now).is_some())
        .count();
    assert_eq!(passed, 100, "one second's worth at 100 packets/s");
    assert!(c
        .session
        .channel_target(0x4000, 100, now + Duration::from_millis(100))
        .is_some());
}

#[test]
fn quotas_per_user_and_in_total() {
    let q = Mutex::new(Quota::new(3, 2));
    let mut a1 = Client::new("site-a", UNIX + 600);
    let mut a2 = Client::new("site-a", UNIX + 600);
    let mut a3 = Client::new("site-a", UNIX + 600);
    a1.allocated(0, &q);
    a2.allocated(0, &q);
    assert_eq!(
        only_reply(&a3.allocate(0, &q)).code(),
        Some(486),
        "third for one user"
    );
    let mut b = Client::new("site-b", UNIX + 600);
    b.allocated(0, &q);
    let mut c = Client::new("site-c", UNIX + 600);
    assert_eq!(
        only_reply(&c.allocate(0, &q)).code(),
        Some(508),
        "total of 3"
    );
    // Closing a transport gives its place back.
    a1.session.close(&q);
    assert_eq!(c.allocate(1, &q), vec![Action::OpenRelay]);
    // A relay socket that cannot be bound: 508 and the place is returned.
    let r = only_reply(&c.session.relay_failed(&q));
    assert_eq!(r.code(), Some(508));
    assert_eq!(q.lock().unwrap().total(), 2);
}

#[test]
fn a_revoked_credential_opens_no_allocation_and_others_are_unaffected() {
    let q = quota();
    let mut a = Client::new("site-a", UNIX + 600);
    let mut b = Client::new("site-b", UNIX + 600);
    b.allocated(0, &q);
    q.lock().unwrap().revoke(&a.username, UNIX + 600, UNIX);
    assert!(q.lock().unwrap().is_revoked(&a.username));
    assert_eq!(
        only_reply(&a.allocate(0, &q)).code(),
        Some(401),
        "revoked credential"
    );
    assert_eq!(
        q.lock().unwrap().total(),
        1,
        "no place taken by the refusal"
    );
    // A fresh credential for the same user (another expiry) still works.
    let mut a2 = Client::new("site-a", UNIX + 601);
    a2.allocated(0, &q);
    assert_eq!(q.lock().unwrap().total(), 2);
    // Expired revocations are dropped on the next revoke.
    q.lock().unwrap().revoke("1:x", 1, UNIX + 601);
    assert!(!q.lock().unwrap().is_revoked(&a.username));
    assert!(!q.lock().unwrap().is_revoked("1:x"), "already expired");
}

#[test]
fn refresh_zero_deletes_and_lifetimes_expire() {
    let q = quota();
    let mut c = Client::new("site-a", UNIX + 60);
    c.allocated(0, &q);
    // After the credential expired, the allocation it opened can still be refreshed...
    let raw = c.request(METHOD_REFRESH, |m| {
        m.add(ATTR_LIFETIME, &99_999u32.to_be_bytes())
    });
    let r = only_reply(&c.send(&raw, 120, &q));
    assert_eq!(r.lifetime(), Some(3600), "capped at max_lifetime");
    // ...but other credentials on the same transport are refused (441).
    let mut other = Client::new("site-b", UNIX + 600);
    other.nonce = c.nonce.clone();
    other.realm = c.realm.clone();
    let raw = other.request(METHOD_REFRESH, |_| {});
    assert_eq!(only_reply(&c.send(&raw, 121, &q)).code(), Some(441));
    let raw = c.request(METHOD_REFRESH, |m| {
        m.add(ATTR_LIFETIME, &0u32.to_be_bytes())
    });
    let actions = c.send(&raw, 122, &q);
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[1], Action::CloseRelay);
    assert_eq!(q.lock().unwrap().total(), 0);
    // Without its allocation the expired credential opens nothing any more.
    let raw = c.request(METHOD_REFRESH, |_| {});
    assert_eq!(only_reply(&c.send(&raw, 123, &q)).code(), Some(401));
    // A new Allocate with the expired credential is refused.
    let raw = c.request(METHOD_ALLOCATE, udp_transport);
    assert_eq!(only_reply(&c.send(&raw, 124, &q)).code(), Some(401));

    let mut d = Client::new("site-d", UNIX + 600);
    d.allocated(0, &q);
    assert_eq!(d.session.poll_timeout(), Some(d.at(600).now));
    assert_eq!(d.session.handle_timeout(d.at(599).now, &q), vec![]);
    assert_eq!(
        d.session.handle_timeout(d.at(600).now, &q),
        vec![Action::CloseRelay]
    );
    assert_eq!(q.lock().unwrap().total(), 0);
}

#[test]
fn requests_it_cannot_serve_get_clear_errors() {
    let q = quota();
    let mut c = Client::new("site-a", UNIX + 600);
    c.allocate(0, &q); // learn the nonce
    c.session.close(&q);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "TCP relay",
            c.request(METHOD_ALLOCATE, |m| {
                m.add(ATTR_REQUESTED_TRANSPORT, &[6, 0, 0, 0])
            }),
            442,
        ),
        ("no transport", c.request(METHOD_ALLOCATE, |_| {}), 400),
        (
            "IPv6 relay",
            c.request(METHOD_ALLOCATE, |m| {
                udp_transport(m);
                m.add(ATTR_REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
            }),
            440,
        ),
        (
            "unknown required attribute",
            c.request(METHOD_ALLOCATE, |m| m.add(AttrType(0x7777), &[1, 2, 3, 4])),
            420,
        ),
        (
            "permission without allocation",
            c.request(METHOD_CREATE_PERMISSION, peer(media())),
            437,
        ),
        ("unsupported method", c.request(METHOD_CONNECT, |_| {}), 400),
    ];
    for (what, raw, code) in cases {
        assert_eq!(
            only_reply(&c.send(&raw, 1, &q)).code(),
            Some(code),
            "{what}"
        );
    }
    // Binding needs no credentials.
    let mut fresh = Client::new("x", UNIX);
    let raw = fresh.request(METHOD_BINDING, |_| {});
    let r = only_reply(&fresh.send(&raw, 0, &q));
    assert_eq!(
        r.addr(ATTR_XORMAPPED_ADDRESS),
        Some("192.0.2.10:40000".parse().unwrap())
    );
    // A message whose attributes run past its end: close the stream.
    let mut bad = raw.clone();
    bad[2..4].copy_from_slice(&8u16.to_be_bytes());
    bad.extend_from_slice(&[0x00, 0x06, 0x00, 0x40, 1, 2, 3, 4]);
    assert_eq!(fresh.send(&bad, 0, &q), vec![Action::Close]);
}

#[test]
fn framing_cuts_streams_and_refuses_garbage() {
    let stun = {
        let mut m = Message::new();
        m.typ = MessageType::new(METHOD_BINDING, CLASS_REQUEST);
        m.new_transaction_id().unwrap();
        m.write_header();
        m.raw
    };
    let mut cd = Vec::new();
    write_channel_data(&mut cd, 0x4000, &[1, 2, 3], true);
    assert_eq!(cd.len(), 8);
    let mut udp = Vec::new();
    write_channel_data(&mut udp, 0x4000, &[1, 2, 3], false);
    assert_eq!(udp.len(), 7);
    let cases: Vec<(&str, Vec<u8>, Result<Option<Frame>, FramingError>)> = vec![
        ("empty", vec![], Ok(None)),
        ("half a STUN header", stun[..10].to_vec(), Ok(None)),
        (
            "a STUN message",
            stun.clone(),
            Ok(Some(Frame::Stun { len: 20 })),
        ),
        ("half a ChannelData", cd[..6].to_vec(), Ok(None)),
        (
            "ChannelData",
            cd.clone(),
            Ok(Some(Frame::ChannelData {
                channel: 0x4000,
                data_len: 3,
                len: 8,
            })),
        ),
        // "GE" reads as channel 0x4745: a frame of 0x5420 bytes is awaited; the shell closes
        // a stream whose ChannelData comes before any allocation.
        ("HTTP", b"GET / HTTP/1.1\r\n".to_vec(), Ok(None)),
        (
            "HTTP POST",
            b"POST / HTTP/1.1\r\n".to_vec(),
            Err(FramingError::BadChannel(0x504F)),
        ),
        ("TLS record", vec![0x16, 3, 1, 0, 0x40], Ok(None)),
        (
            "high bits",
            vec![0xFF, 0, 0, 0],
            Err(FramingError::Garbage(0xFF)),
        ),
        (
            "channel 0x5000",
            vec![0x50, 0, 0, 4, 1, 2, 3, 4],
            Err(FramingError::BadChannel(0x5000)),
        ),
        (
            "unaligned STUN",
            {
                let mut s = stun.clone();
                s[3] = 3;
                s
            },
            Err(FramingError::UnalignedStun(3)),
        ),
        (
            "bad cookie",
            {
                let mut s = stun.clone();
                s[4] = 0;
                s
            },
            Err(FramingError::BadCookie),
        ),
        (
            "huge STUN",
            {
                let mut s = stun.clone();
                s[2] = 0xFF;
                s[3] = 0xFC;
                s
            },
            Err(FramingError::StunTooLarge(20 + 0xFFFC)),
        ),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(next_frame(&bytes), want, "{what}");
    }
}
