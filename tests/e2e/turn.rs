//! The built-in TURN server against the real binary.
//!
//! - A site in a network namespace whose firewall lets it open TCP connections to the
//!   signalling and TURN ports only (no UDP at all, no ICE-TCP to the media port) exchanges
//!   audio and video with an open site through TURN over TCP. Both sites are `probe-client`
//!   processes (`rakor-client`, which takes the TURN server from `joined.ice_servers` with no
//!   flag). Needs root and `nft`; prints `SKIP: …` and passes otherwise.
//! - TURN over TLS on the one HTTPS port: Allocate, permissions and a wrong credential through
//!   the one-port demux, and HTTPS still served there.
//! - Bad input on the TURN port (loopback, no root needed): no credentials, wrong and expired
//!   credentials, a peer that is not the media address, the per-identity cap, garbage and
//!   malformed ChannelData each get their answer or close only their own stream, while another
//!   client's allocation keeps working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_e2e::netns::{
    self, decoded_frames as frames, mint_token, received_packets as packets, unix_ms, wait_media,
    Netns, Probe, ServerProc,
};
use rakor_proto::TrackKind;
use rtc::stun::attributes::*;
use rtc::stun::error_code::ErrorCodeAttribute;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::*;
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

const PROBE: &str = env!("CARGO_BIN_EXE_probe-client");

#[test]
fn site_with_only_tcp_to_the_turn_port_exchanges_audio_and_video_through_turn() {
    if let Err(why) = netns::available() {
        eprintln!("SKIP: network namespaces unavailable: {why}");
        return;
    }
    if !netns::have_nft() {
        eprintln!("SKIP: nft not installed (apt-get install nftables)");
        return;
    }
    let srv = Netns::new("usrv").unwrap();
    let site = Netns::new("usite").unwrap();
    srv.veth("rk-usrv", "10.78.0.1/24", &site, "rk-usite", "10.78.0.2/24")
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(
        Some(&srv),
        "10.78.0.1",
        data.path(),
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            // Only TURN: no passive ICE-TCP candidate on the signalling port, which the
            // firewalled site may reach too (tests/e2e/one_port.rs covers that path).
            ("RAKOR_MEDIA_ICE_TCP_ON_HTTP_PORT", "false"),
            ("RAKOR_TURN_LISTEN", "10.78.0.1:0"),
        ],
    )
    .unwrap();
    let turn = server.turn.expect("TURN line in the banner");
    // The site may open TCP to the signalling port and the TURN port, nothing else.
    site.allow_only_tcp_to(&[server.http.port(), turn.port()])
        .unwrap();
    srv.count_tcp_to(turn.port()).unwrap();

    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let t_join = unix_ms();
    let mut open = Probe::start(
        Some(&srv),
        Path::new(PROBE),
        &url,
        &tok("open"),
        "10.78.0.1",
        &["audio", "video"],
        "open",
    )
    .unwrap();
    let mut closed = Probe::start(
        Some(&site),
        Path::new(PROBE),
        &url,
        &tok("turn-only"),
        "10.78.0.2",
        &["audio", "video"],
        "turn-only",
    )
    .unwrap();
    let (open_id, closed_id) = (open.participant_id.clone(), closed.participant_id.clone());

    let (r_closed, t_closed) = wait_media(&mut closed, &open_id, 100, Duration::from_secs(40));
    let (r_open, _) = wait_media(&mut open, &closed_id, 100, Duration::from_secs(40));
    eprintln!(
        "MEASURED turn-tcp: the turn-only site saw the open site's first video frame {} ms after \
         the joins started",
        t_closed.saturating_sub(t_join)
    );
    eprintln!(
        "open <- turn-only: audio {} video {} packets, {} frames; turn-only <- open: audio {} \
         video {} packets, {} frames",
        packets(&r_open, &closed_id, TrackKind::Audio),
        packets(&r_open, &closed_id, TrackKind::Video),
        frames(&r_open, &closed_id),
        packets(&r_closed, &open_id, TrackKind::Audio),
        packets(&r_closed, &open_id, TrackKind::Video),
        frames(&r_closed, &open_id),
    );
    // Proof of the path: the site's UDP and ICE-TCP attempts were dropped, and TCP to the TURN
    // port carried the media (far more than the TURN handshake's few packets).
    let site_drops = site.nft_counters().unwrap();
    let srv_counts = srv.nft_counters().unwrap();
    eprintln!("nft counters: site dropped {site_drops:?}, server tcp to turn {srv_counts:?}");
    assert!(
        site_drops.iter().any(|&n| n > 0),
        "the site never tried another path: {site_drops:?}"
    );
    assert!(
        srv_counts.iter().any(|&n| n > 200),
        "TCP to the TURN port carried no media: {srv_counts:?}"
    );
    let before = packets(&r_closed, &open_id, TrackKind::Video);
    std::thread::sleep(Duration::from_secs(2));
    let later = closed.latest_report(Duration::from_secs(5)).unwrap();
    assert!(
        packets(&later, &open_id, TrackKind::Video) > before,
        "video to the turn-only site stopped"
    );
    drop(server);
}

/// The 443-only site: its namespace's only way to the server is TCP to port 443, the one HTTPS
/// port (built-in TLS, a private CA the probes trust through `RAKOR_CA_FILE`). The server offers
/// no ICE-TCP on that port and its TURN/TCP port is firewalled, so the one path left is TURN
/// over TLS on 443 (`turns:` from `joined.ice_servers`), which `rakor-client` takes by itself.
#[test]
fn site_with_only_tcp_443_exchanges_audio_and_video_through_turn_over_tls() {
    if let Err(why) = netns::available() {
        eprintln!("SKIP: network namespaces unavailable: {why}");
        return;
    }
    if !netns::have_nft() {
        eprintln!("SKIP: nft not installed (apt-get install nftables)");
        return;
    }
    let srv = Netns::new("tlsrv").unwrap();
    let site = Netns::new("tlsite").unwrap();
    srv.veth(
        "rk-tlsrv",
        "10.77.0.1/24",
        &site,
        "rk-tlsite",
        "10.77.0.2/24",
    )
    .unwrap();
    let ca = rakor_e2e::tls::TestCa::new().unwrap();
    let (cert, key, _) = ca.issue("server", &["10.77.0.1"], 7).unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start_on(
        Some(&srv),
        "10.77.0.1",
        443,
        data.path(),
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            ("RAKOR_TURN_LISTEN", "10.77.0.1:0"),
            // No passive ICE-TCP on the HTTPS port: only TURN/TLS may carry this site's media.
            ("RAKOR_MEDIA_ICE_TCP_ON_HTTP_PORT", "false"),
            ("RAKOR_SERVER_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("RAKOR_SERVER_TLS_KEY_FILE", key.to_str().unwrap()),
        ],
    )
    .unwrap();
    assert_eq!(server.http.port(), 443);
    // At the server: from the site, TCP to 443 is accepted (counted), everything else dropped
    // (counted): UDP to the media port, TCP to the media port and to the TURN/TCP port.
    srv.allow_only_tcp_port_from("10.77.0.2", 443).unwrap();
    // UDP from the server is dropped at the site (not the site's own local UDP: the TURN
    // client talks to its local bridge over loopback).
    site.drop_udp(Some("10.77.0.1")).unwrap();

    std::env::set_var("RAKOR_CA_FILE", &ca.ca_file);
    let url = format!("wss://{}/rtc", server.http);
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let t_join = unix_ms();
    let mut open = Probe::start(
        Some(&srv),
        Path::new(PROBE),
        &url,
        &tok("open"),
        "10.77.0.1",
        &["audio", "video"],
        "open",
    )
    .unwrap();
    let mut closed = Probe::start(
        Some(&site),
        Path::new(PROBE),
        &url,
        &tok("tls-443-only"),
        "10.77.0.2",
        &["audio", "video"],
        "tls-443-only",
    )
    .unwrap();
    let (open_id, closed_id) = (open.participant_id.clone(), closed.participant_id.clone());

    let (r_closed, t_closed) = wait_media(&mut closed, &open_id, 100, Duration::from_secs(45));
    let (r_open, _) = wait_media(&mut open, &closed_id, 100, Duration::from_secs(45));
    eprintln!(
        "MEASURED turn-tls: the 443-only site saw the open site's first video frame {} ms after \
         the joins started",
        t_closed.saturating_sub(t_join)
    );
    eprintln!(
        "open <- 443-only: audio {} video {} packets, {} frames; 443-only <- open: audio {} \
         video {} packets, {} frames; paths: publisher {:?} subscriber {:?}; TURN bytes in: \
         tls {} tcp {}",
        packets(&r_open, &closed_id, TrackKind::Audio),
        packets(&r_open, &closed_id, TrackKind::Video),
        frames(&r_open, &closed_id),
        packets(&r_closed, &open_id, TrackKind::Audio),
        packets(&r_closed, &open_id, TrackKind::Video),
        frames(&r_closed, &open_id),
        r_closed.publisher_path,
        r_closed.subscriber_path,
        r_closed.turn_tls_bytes_in,
        r_closed.turn_tcp_bytes_in,
    );
    assert!(frames(&r_open, &closed_id) > 0 && frames(&r_closed, &open_id) > 0);
    assert_eq!(r_open.total_mismatches(), 0, "{}", r_open.to_json());
    // The selected path of both of the site's connections is the relay, and the relay was
    // reached over TLS (media-sized byte counts; nothing over plain TURN/TCP).
    for (what, path) in [
        ("publisher", &r_closed.publisher_path),
        ("subscriber", &r_closed.subscriber_path),
    ] {
        assert!(
            path.as_deref().is_some_and(|p| p.starts_with("relay ")),
            "{what} path is not the relay: {path:?}"
        );
    }
    assert!(
        r_closed.turn_tls_bytes_in > 100_000,
        "too little through TURN/TLS: {}",
        r_closed.turn_tls_bytes_in
    );
    assert_eq!(r_closed.turn_tcp_bytes_in, 0, "nothing over plain TURN/TCP");
    // The open site, with UDP, did not take the relay.
    assert_eq!(
        r_open.publisher_path.as_deref(),
        Some("host udp -> host udp"),
        "{}",
        r_open.to_json()
    );
    // The firewall: TCP to 443 carried it all; the site's other attempts were dropped.
    let counts = srv.nft_counters().unwrap();
    eprintln!("nft counters at the server: {counts:?} (accepted to 443, dropped)");
    assert!(counts.len() >= 2 && counts[0] > 300, "{counts:?}");
    assert!(
        counts[1] > 0,
        "the site never tried another path: {counts:?}"
    );

    let before = packets(&r_closed, &open_id, TrackKind::Video);
    let before_up = packets(&r_open, &closed_id, TrackKind::Video);
    std::thread::sleep(Duration::from_secs(2));
    let later = closed.latest_report(Duration::from_secs(5)).unwrap();
    let later_up = open.latest_report(Duration::from_secs(5)).unwrap();
    assert!(
        packets(&later, &open_id, TrackKind::Video) > before,
        "video to the 443-only site stopped"
    );
    assert!(
        packets(&later_up, &closed_id, TrackKind::Video) > before_up,
        "video from the 443-only site stopped"
    );
    drop(server);
}

// ---- bad input on the real TURN listener (loopback) ----

/// A TURN-over-TCP test client speaking raw STUN.
struct Raw {
    s: Box<dyn Wire>,
    username: String,
    password: String,
    realm: String,
    nonce: String,
}

/// A byte stream a TURN client talks over: plain TCP or TLS.
trait Wire: Read + Write {}
impl<T: Read + Write> Wire for T {}

impl Raw {
    fn connect(addr: SocketAddr, username: &str, password: &str) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw::over(Box::new(s), username, password)
    }

    /// TURN over TLS to `addr` (the HTTPS port), trusting `tls` and naming `server_name`.
    fn connect_tls(
        addr: SocketAddr,
        tls: std::sync::Arc<rustls::ClientConfig>,
        server_name: &str,
        username: &str,
        password: &str,
    ) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
        let conn = rustls::ClientConnection::new(tls, name).unwrap();
        Raw::over(
            Box::new(rustls::StreamOwned::new(conn, s)),
            username,
            password,
        )
    }

    fn over(s: Box<dyn Wire>, username: &str, password: &str) -> Raw {
        Raw {
            s,
            username: username.into(),
            password: password.into(),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    fn request(&mut self, method: Method, build: impl FnOnce(&mut Message)) -> Message {
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
            let p = rtc::crypto::default_provider().unwrap();
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
        self.s.write_all(&m.raw).unwrap();
        self.read()
    }

    fn read(&mut self) -> Message {
        let mut head = [0u8; 20];
        self.s.read_exact(&mut head).unwrap();
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let mut raw = head.to_vec();
        raw.resize(20 + len, 0);
        self.s.read_exact(&mut raw[20..]).unwrap();
        let mut m = Message::new();
        m.unmarshal_binary(&raw).unwrap();
        m
    }

    /// Allocate, answering the 401 challenge; the final answer's error code (None = success).
    fn allocate(&mut self) -> Option<u16> {
        let r = self.request(METHOD_ALLOCATE, transport);
        assert_eq!(code(&r), Some(401), "a first Allocate is challenged");
        self.realm = TextAttribute::get_from_as(&r, ATTR_REALM).unwrap().text;
        self.nonce = TextAttribute::get_from_as(&r, ATTR_NONCE).unwrap().text;
        code(&self.request(METHOD_ALLOCATE, transport))
    }

    /// True once the server closed the stream.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

fn transport(m: &mut Message) {
    m.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

fn code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|()| e.code.0)
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

fn mint(data: &Path, user: &str, expires_at: u64) -> (String, String) {
    let secret = std::fs::read_to_string(data.join("turn.secret")).unwrap();
    let p = rtc::crypto::default_provider().unwrap();
    let c = rakor_turn::credentials::mint(p.crypto(), secret.trim().as_bytes(), user, expires_at)
        .unwrap();
    (c.username, c.credential)
}

#[test]
fn the_turn_port_refuses_bad_credentials_foreign_peers_and_garbage() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(
        None,
        "127.0.0.1",
        data.path(),
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            // Only TURN: no passive ICE-TCP candidate on the signalling port, which the
            // firewalled site may reach too (tests/e2e/one_port.rs covers that path).
            ("RAKOR_MEDIA_ICE_TCP_ON_HTTP_PORT", "false"),
            ("RAKOR_TURN_LISTEN", "127.0.0.1:0"),
            ("RAKOR_TURN_MAX_ALLOCATIONS_PER_IDENTITY", "2"),
        ],
    )
    .unwrap();
    let turn = server.turn.unwrap();
    let now = rakor_e2e::unix_now();

    // A good allocation that must survive everything below.
    let (u, p) = mint(data.path(), "good", now + 600);
    let mut good = Raw::connect(turn, &u, &p);
    assert_eq!(good.allocate(), None);
    let r = good.request(METHOD_CREATE_PERMISSION, peer(server.media));
    assert_eq!(code(&r), None, "permission to the media address");

    // Wrong and expired credentials: 401.
    let mut wrong = Raw::connect(turn, &u, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_eq!(wrong.allocate(), Some(401));
    let (u_old, p_old) = mint(data.path(), "late", now - 1);
    let mut expired = Raw::connect(turn, &u_old, &p_old);
    assert_eq!(expired.allocate(), Some(401));

    // Peers other than the media address: 403.
    for bad in [
        "127.0.0.1:9",
        &format!("127.0.0.1:{}", server.media.port() + 1),
    ] {
        let bad: SocketAddr = bad.parse().unwrap();
        let r = good.request(METHOD_CREATE_PERMISSION, peer(bad));
        assert_eq!(code(&r), Some(403), "permission to {bad}");
        let r = good.request(METHOD_CHANNEL_BIND, |m| {
            m.add(ATTR_CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
            peer(bad)(m);
        });
        assert_eq!(code(&r), Some(403), "channel to {bad}");
    }

    // The per-identity cap (2): a third allocation for "good" is refused.
    let mut second = Raw::connect(turn, &u, &p);
    assert_eq!(second.allocate(), None);
    let mut third = Raw::connect(turn, &u, &p);
    assert_eq!(third.allocate(), Some(486));

    // Garbage closes only its own stream; so does ChannelData before any allocation, and a
    // STUN header with a bad length.
    for (what, bytes) in [
        ("garbage", vec![0xFFu8; 64]),
        (
            "ChannelData before Allocate",
            vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4],
        ),
        ("unaligned STUN length", {
            let mut m = Message::new();
            m.typ = MessageType::new(METHOD_BINDING, CLASS_REQUEST);
            m.new_transaction_id().unwrap();
            m.write_header();
            let mut raw = m.raw.clone();
            raw[3] = 3;
            raw.extend_from_slice(&[0, 0, 0]);
            raw
        }),
    ] {
        let mut g = TcpStream::connect(turn).unwrap();
        g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        g.write_all(&bytes).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(g.read(&mut b), Ok(0) | Err(_)),
            "{what}: the stream must be closed"
        );
    }
    // Malformed ChannelData on an allocated stream (an invalid channel number) closes it too.
    second
        .s
        .write_all(&[0x50, 0x00, 0x00, 0x04, 1, 2, 3, 4])
        .unwrap();
    assert!(second.closed(), "bad channel number closes the stream");

    // The good client is unaffected: it still answers, and its allocation is alive.
    let r = good.request(METHOD_REFRESH, |m| {
        m.add(ATTR_LIFETIME, &600u32.to_be_bytes())
    });
    assert_eq!(code(&r), None, "the good allocation still refreshes");
    drop(server);
}

/// A participant's TURN credentials die with its session: when the host removes it, or when it
/// leaves, its allocation is torn down (the server closes the TURN stream) and its credential
/// opens no new allocation; another participant's allocation is untouched, and the same
/// identity joining again gets credentials that work.
#[test]
fn leaving_or_removal_ends_the_turn_allocation_and_revokes_the_credential() {
    use rakor_client::{Client, ClientOptions};
    use rakor_proto::{ClientMessage, LeaveReason, ModerateAction};
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(
        None,
        "127.0.0.1",
        data.path(),
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            ("RAKOR_TURN_LISTEN", "127.0.0.1:0"),
        ],
    )
    .unwrap();
    let turn = server.turn.unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = server.ws_url();
    let join = |identity: &str, role: &str| {
        let tok = mint_token(data.path(), "rakor", identity, role).unwrap();
        let opts = ClientOptions::new(url.clone(), tok).publish(false, false);
        rt.block_on(Client::connect(opts)).unwrap()
    };
    let creds = |c: &Client| {
        let s = c
            .joined()
            .ice_servers
            .first()
            .expect("TURN credentials in joined")
            .clone();
        (s.username, s.credential)
    };
    let host = join("command", "host");
    let mut removed = join("site-removed", "participant");
    let leaver = join("site-leaves", "participant");
    let stays = join("site-stays", "participant");

    let (ru, rp) = creds(&removed);
    let (lu, lp) = creds(&leaver);
    let (su, sp) = creds(&stays);
    let mut r_alloc = Raw::connect(turn, &ru, &rp);
    assert_eq!(r_alloc.allocate(), None);
    let mut l_alloc = Raw::connect(turn, &lu, &lp);
    assert_eq!(l_alloc.allocate(), None);
    let mut s_alloc = Raw::connect(turn, &su, &sp);
    assert_eq!(s_alloc.allocate(), None);

    // The host removes one site.
    rt.block_on(host.send(&ClientMessage::Moderate {
        action: ModerateAction::Remove,
        participant_id: Some(removed.participant_id().clone()),
    }))
    .unwrap();
    assert_eq!(
        rt.block_on(removed.closed(Duration::from_secs(5))).unwrap(),
        Some(LeaveReason::Removed)
    );
    assert!(r_alloc.closed(), "the removed site's allocation must end");
    assert_eq!(
        Raw::connect(turn, &ru, &rp).allocate(),
        Some(401),
        "the removed site's credential opens nothing more"
    );

    // Another leaves by itself.
    rt.block_on(leaver.leave());
    assert!(l_alloc.closed(), "the leaver's allocation must end");
    assert_eq!(Raw::connect(turn, &lu, &lp).allocate(), Some(401));

    // The one that stays keeps its allocation.
    let r = s_alloc.request(METHOD_REFRESH, |m| {
        m.add(ATTR_LIFETIME, &600u32.to_be_bytes())
    });
    assert_eq!(code(&r), None, "the other allocation still refreshes");

    // The same identity joining again (in the same second or not) gets working credentials.
    let back = join("site-leaves", "participant");
    let (bu, bp) = creds(&back);
    assert_ne!(bu, lu, "a revoked username is not handed out again");
    assert_eq!(Raw::connect(turn, &bu, &bp).allocate(), None);
    drop((host, stays, back));
    drop(server);
}

/// `turn.max_streams_per_ip`: a source address with that many TURN streams open gets its next
/// one closed at once; others are unaffected, and a closed stream frees its place.
#[test]
fn turn_streams_per_source_address_are_capped() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(
        None,
        "127.0.0.1",
        data.path(),
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            ("RAKOR_TURN_LISTEN", "127.0.0.1:0"),
            ("RAKOR_TURN_MAX_STREAMS_PER_IP", "3"),
        ],
    )
    .unwrap();
    let turn = server.turn.unwrap();
    let now = rakor_e2e::unix_now();
    let (u, p) = mint(data.path(), "office", now + 600);
    let mut a = Raw::connect(turn, &u, &p);
    assert_eq!(a.allocate(), None);
    // Two more streams that only sit there (half-open: no Allocate yet).
    let idle1 = TcpStream::connect(turn).unwrap();
    let idle2 = TcpStream::connect(turn).unwrap();
    // Both count once the server accepted them: a fourth stream is refused (closed).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut fourth_closed = false;
    while std::time::Instant::now() < deadline {
        if refused(&mut TcpStream::connect(turn).unwrap()) {
            fourth_closed = true;
            break;
        }
    }
    assert!(
        fourth_closed,
        "a fourth stream from the same address must be closed"
    );
    // The first allocation is unaffected.
    let r = a.request(METHOD_REFRESH, |m| {
        m.add(ATTR_LIFETIME, &600u32.to_be_bytes())
    });
    assert_eq!(code(&r), None);
    // Closing two streams frees places: a new stream allocates (within a bounded wait for the
    // server to see the closes).
    drop((idle1, idle2));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(turn).unwrap();
        if !refused(&mut s) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut c = Raw::over(Box::new(s), &u, &p);
            assert_eq!(c.allocate(), None, "a freed place allocates");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no place freed");
    }
    drop(server);
}

/// Whether the server closed `s` at once (read 0 or reset within 300 ms; a stream the server
/// keeps just times out, as a TURN server says nothing first).
fn refused(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// One join of an open site and a second site (TCP to signalling and TURN only when
/// `firewall`); ms from the joins until the second site decoded the open site's first frame.
fn first_frame_round(i: usize, firewall: bool) -> u64 {
    let srv = Netns::new(&format!("bs{i}")).unwrap();
    let site = Netns::new(&format!("bc{i}")).unwrap();
    let (a, b) = (format!("10.79.{i}.1"), format!("10.79.{i}.2"));
    srv.veth(
        &format!("rk-bs{i}"),
        &format!("{a}/24"),
        &site,
        &format!("rk-bc{i}"),
        &format!("{b}/24"),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let listen = format!("{a}:0");
    let server = ServerProc::start(
        Some(&srv),
        &a,
        data.path(),
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            // Only TURN: no passive ICE-TCP candidate on the signalling port, which the
            // firewalled site may reach too (tests/e2e/one_port.rs covers that path).
            ("RAKOR_MEDIA_ICE_TCP_ON_HTTP_PORT", "false"),
            ("RAKOR_TURN_LISTEN", &listen),
        ],
    )
    .unwrap();
    if firewall {
        site.allow_only_tcp_to(&[server.http.port(), server.turn.unwrap().port()])
            .unwrap();
    }
    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let t_join = unix_ms();
    let open = Probe::start(
        Some(&srv),
        Path::new(PROBE),
        &url,
        &tok("open"),
        &a,
        &["audio", "video"],
        "open",
    )
    .unwrap();
    let mut other = Probe::start(
        Some(&site),
        Path::new(PROBE),
        &url,
        &tok("other"),
        &b,
        &["audio", "video"],
        "other",
    )
    .unwrap();
    let (_, t) = wait_media(&mut other, &open.participant_id, 1, Duration::from_secs(40));
    drop(open);
    drop(server);
    t.saturating_sub(t_join)
}

/// Figures for docs/benchmarks.md: join to first remote frame over UDP and over TURN/TCP,
/// medians of 5. `cargo test --release -p rakor-e2e --test turn -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run by hand"]
fn join_to_first_frame_udp_vs_turn_tcp() {
    if netns::available().is_err() || !netns::have_nft() {
        eprintln!("SKIP: needs root and nft");
        return;
    }
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let udp: Vec<u64> = (0..5).map(|i| first_frame_round(i, false)).collect();
    let turn: Vec<u64> = (0..5).map(|i| first_frame_round(10 + i, true)).collect();
    eprintln!(
        "MEASURED join to first remote frame: UDP median {} ms {udp:?}; TURN/TCP median {} ms {turn:?}",
        median(udp.clone()),
        median(turn.clone())
    );
}

/// TURN over TLS on the one HTTPS port (the `turns:` URL the server offers in `joined` when it
/// has built-in HTTPS): the listener tells the TLS ClientHello from HTTP and ICE-TCP, then,
/// after the handshake, a STUN message from an HTTP request, and hands the decrypted stream to
/// the TURN server. The same rules hold as on the TURN port (credentials, media address only),
/// and the port still serves HTTPS.
#[test]
fn turn_over_tls_on_the_https_port() {
    let ca = rakor_e2e::tls::TestCa::new().unwrap();
    let (cert, key, _) = ca.issue("server", &["localhost"], 7).unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(
        None,
        "127.0.0.1",
        data.path(),
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            ("RAKOR_TURN_LISTEN", "127.0.0.1:0"),
            ("RAKOR_SERVER_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("RAKOR_SERVER_TLS_KEY_FILE", key.to_str().unwrap()),
        ],
    )
    .unwrap();
    let tls = ca.client_config().unwrap();
    let now = rakor_e2e::unix_now();
    let (u, p) = mint(data.path(), "tls-site", now + 600);

    let mut site = Raw::connect_tls(server.http, tls.clone(), "localhost", &u, &p);
    assert_eq!(site.allocate(), None, "Allocate over TLS on the HTTPS port");
    let r = site.request(METHOD_CREATE_PERMISSION, peer(server.media));
    assert_eq!(code(&r), None, "permission to the media address over TLS");
    let r = site.request(
        METHOD_CREATE_PERMISSION,
        peer("127.0.0.1:9".parse().unwrap()),
    );
    assert_eq!(code(&r), Some(403), "no other peer over TLS either");

    let mut wrong = Raw::connect_tls(
        server.http,
        tls.clone(),
        "localhost",
        &u,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    assert_eq!(wrong.allocate(), Some(401), "a wrong credential over TLS");

    // The same port, the same TLS, an HTTP request: HTTPS as before.
    let s = TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost".to_owned()).unwrap();
    let mut https = rustls::StreamOwned::new(rustls::ClientConnection::new(tls, name).unwrap(), s);
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = https.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The allocation made over TLS still answers after all that.
    let r = site.request(METHOD_REFRESH, |_| {});
    assert_eq!(code(&r), None, "refresh over TLS");
}

/// How the second site of a [`first_frame_over`] round reaches the server.
#[derive(Clone, Copy, Debug)]
enum Path443 {
    /// No firewall: direct UDP.
    Udp,
    /// TCP to 443 only; ICE-TCP on the one port.
    IceTcp,
    /// TCP to 443 only; no ICE-TCP offered there: TURN over TLS on the one port.
    TurnTls,
}

/// One round with built-in HTTPS on 443 and TURN on: ms from the joins until the second site
/// decoded the open site's first frame, and the second site's selected publisher path.
fn first_frame_over(i: usize, path: Path443) -> (u64, Option<String>) {
    let srv = Netns::new(&format!("fs{i}")).unwrap();
    let site = Netns::new(&format!("fc{i}")).unwrap();
    let (a, b) = (format!("10.76.{i}.1"), format!("10.76.{i}.2"));
    srv.veth(
        &format!("rk-fs{i}"),
        &format!("{a}/24"),
        &site,
        &format!("rk-fc{i}"),
        &format!("{b}/24"),
    )
    .unwrap();
    let ca = rakor_e2e::tls::TestCa::new().unwrap();
    let (cert, key, _) = ca.issue("server", &[&a], 7).unwrap();
    let data = tempfile::tempdir().unwrap();
    let listen = format!("{a}:0");
    let ice_tcp = if matches!(path, Path443::TurnTls) {
        "false"
    } else {
        "true"
    };
    let server = ServerProc::start_on(
        Some(&srv),
        &a,
        443,
        data.path(),
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            ("RAKOR_TURN_LISTEN", &listen),
            ("RAKOR_MEDIA_ICE_TCP_ON_HTTP_PORT", ice_tcp),
            ("RAKOR_SERVER_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("RAKOR_SERVER_TLS_KEY_FILE", key.to_str().unwrap()),
        ],
    )
    .unwrap();
    if !matches!(path, Path443::Udp) {
        srv.allow_only_tcp_port_from(&b, 443).unwrap();
        // UDP from the server is dropped at the site (not the site's own local UDP: the TURN
        // client talks to its local bridge over loopback).
        site.drop_udp(Some(&a)).unwrap();
    }
    std::env::set_var("RAKOR_CA_FILE", &ca.ca_file);
    let url = format!("wss://{}/rtc", server.http);
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let t_join = unix_ms();
    let open = Probe::start(
        Some(&srv),
        Path::new(PROBE),
        &url,
        &tok("open"),
        &a,
        &["audio", "video"],
        "open",
    )
    .unwrap();
    let mut other = Probe::start(
        Some(&site),
        Path::new(PROBE),
        &url,
        &tok("other"),
        &b,
        &["audio", "video"],
        "other",
    )
    .unwrap();
    let (r, t) = wait_media(&mut other, &open.participant_id, 1, Duration::from_secs(40));
    drop(open);
    drop(server);
    (t.saturating_sub(t_join), r.publisher_path)
}

/// Figures for docs/benchmarks.md: join to first remote frame over UDP, ICE-TCP on the one
/// HTTPS port and TURN/TLS on it, medians of 5 in one run. `cargo test --release -p rakor-e2e
/// --test turn join_to_first_frame_udp_ice_tcp_turn_tls -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run by hand"]
fn join_to_first_frame_udp_ice_tcp_turn_tls() {
    if netns::available().is_err() || !netns::have_nft() {
        eprintln!("SKIP: needs root and nft");
        return;
    }
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut results = Vec::new();
    for (k, path) in [Path443::Udp, Path443::IceTcp, Path443::TurnTls]
        .into_iter()
        .enumerate()
    {
        let mut ms = Vec::new();
        for i in 0..5 {
            let (t, p) = first_frame_over(k * 10 + i, path);
            eprintln!("{path:?} round {i}: {t} ms, path {p:?}");
            ms.push(t);
        }
        results.push((path, median(ms.clone()), ms));
    }
    for (path, m, all) in results {
        eprintln!("MEASURED join to first remote frame over {path:?}: median {m} ms {all:?}");
    }
}
