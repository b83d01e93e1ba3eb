//! Self-test of the harness: one [`ClientPeer`] against one server-side connection built as the
//! media core builds them (`crate::conn::build`, ICE-lite, our host candidate), all in memory,
//! in simulated time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{ClientPeer, PublishSpec, SimClock, SIMULCAST_RIDS};
use crate::bwe::EstimateCell;
use crate::conn::{self, AUDIO_LEVEL_URI, PT_VP8};
use crate::liveness::IceTimeouts;
use crate::router::Codec;
use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER_PORT: u16 = 3478;
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(10);

fn client_addr(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 5000)
}

/// One server-side connection driven like the worker drives it.
struct Server {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    state: RTCPeerConnectionState,
    opened: Vec<RTCTrackEventInit>,
    rtp: Vec<rtc::rtp::packet::Packet>,
    rtcp: Vec<Box<dyn rtc::rtcp::Packet>>,
}

impl Server {
    /// `estimate`: a subscriber connection with congestion control (as `core/negotiate.rs` `new_conn`).
    fn new(now: Instant, estimate: Option<Arc<EstimateCell>>) -> Self {
        let (ufrag, pwd) = conn::ice_credentials();
        let timeouts = IceTimeouts::for_dead_peer_timeout(DEAD_PEER_TIMEOUT);
        let send_only = estimate.is_some();
        let pc = conn::build(now, &ufrag, &pwd, timeouts, estimate, send_only).unwrap();
        Self {
            pc,
            addr: SocketAddr::new(SERVER_IP, SERVER_PORT),
            state: RTCPeerConnectionState::New,
            opened: Vec::new(),
            rtp: Vec::new(),
            rtcp: Vec::new(),
        }
    }

    fn add_local_candidates(&mut self) {
        for c in conn::host_candidates(&[SERVER_IP], SERVER_PORT, false, None) {
            self.pc.add_local_candidate(c).unwrap();
        }
        self.pc
            .add_local_candidate(RTCIceCandidateInit::default())
            .unwrap();
    }

    /// As `core/publish.rs` `publish()`: client offer in, answer out.
    fn answer(&mut self, now: Instant, offer: &str) -> String {
        self.pc
            .set_remote_description(now, RTCSessionDescription::offer(offer.to_owned()).unwrap())
            .unwrap();
        self.add_local_candidates();
        let answer = self.pc.create_answer(None).unwrap();
        self.pc.set_local_description(now, answer).unwrap();
        self.pc.local_description().unwrap().sdp
    }

    /// As `core/negotiate.rs` `subscribe()`: a sendonly track with our SSRC.
    fn add_sendonly(&mut self, codec: Codec, ssrc: u32) -> RTCRtpSenderId {
        let kind = if codec == Codec::Opus {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let mst = MediaStreamTrack::new(
            "publisher".into(),
            format!("track-{ssrc}"),
            format!("track-{ssrc}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: conn::codec_params(codec).unwrap(),
                ..Default::default()
            }],
        );
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec!["publisher".into()],
            send_encodings: vec![],
        };
        let tid = self.pc.add_transceiver_from_track(mst, Some(init)).unwrap();
        self.pc.rtp_transceiver(tid).unwrap().sender().unwrap()
    }

    /// As `send_subscriber_offer()`: candidates, offer.
    fn offer(&mut self, now: Instant) -> String {
        self.add_local_candidates();
        let offer = self.pc.create_offer(None).unwrap();
        self.pc.set_local_description(now, offer).unwrap();
        self.pc.local_description().unwrap().sdp
    }

    fn apply_answer(&mut self, now: Instant, answer: &str) {
        self.pc
            .set_remote_description(
                now,
                RTCSessionDescription::answer(answer.to_owned()).unwrap(),
            )
            .unwrap();
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, d: BytesMut) {
        self.pc
            .handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: self.addr,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: d,
            })
            .unwrap();
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(ev) = self.pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => self.state = s,
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    self.opened.push(init)
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, p) => self.rtp.push(p),
                RTCMessage::RtcpPacket(_, p) => self.rtcp.extend(p),
                _ => {}
            }
        }
    }

    fn plis(&self) -> Vec<u32> {
        self.rtcp
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<PictureLossIndication>())
            .map(|p| p.media_ssrc)
            .collect()
    }
}

/// The two peers and the wire between them: zero latency, no loss, simulated time.
struct Net {
    clock: SimClock,
    client: ClientPeer,
    server: Server,
    datagrams: usize,
    /// The wire is cut: datagrams are dropped.
    cut: bool,
}

impl Net {
    /// Deliver everything both sides have to send (until both are quiet). Returns whether
    /// anything moved.
    fn deliver(&mut self) -> bool {
        let now = self.clock.now();
        let mut moved = false;
        for _ in 0..10_000 {
            let mut any = false;
            while let Some((dst, d)) = self.client.poll_transmit() {
                any = true;
                self.datagrams += 1;
                if dst == self.server.addr && !self.cut {
                    self.server.handle_datagram(now, self.client.addr(), d);
                }
            }
            while let Some(m) = self.server.pc.poll_write() {
                any = true;
                self.datagrams += 1;
                assert_eq!(m.transport.local_addr, self.server.addr);
                if m.transport.peer_addr == self.client.addr() && !self.cut {
                    self.client
                        .handle_datagram(now, self.server.addr, m.message)
                        .unwrap();
                }
            }
            if !any {
                break;
            }
            moved = true;
        }
        moved
    }

    /// Fire the timers due now, or else move the clock to the next deadline (never past
    /// `limit`). Returns false when there is nothing left to do before `limit`.
    fn tick(&mut self, limit: Instant) -> bool {
        let next = [self.client.poll_timeout(), self.server.pc.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next.filter(|t| *t <= limit) else {
            self.clock.advance_to(limit);
            return false;
        };
        let now = self.clock.advance_to(next);
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now).unwrap();
        }
        if self.server.pc.poll_timeout().is_some_and(|t| t <= now) {
            self.server.pc.handle_timeout(now).unwrap();
            self.server.pump();
        }
        true
    }

    /// Run (deliver, timers) until `done` holds, at most `max` simulated time and a bounded
    /// number of steps. Returns whether `done` held.
    fn run_until(&mut self, max: Duration, done: impl Fn(&Net) -> bool) -> bool {
        let limit = self.clock.now() + max;
        for _ in 0..100_000 {
            self.deliver();
            if done(self) {
                return true;
            }
            if !self.tick(limit) {
                self.deliver();
                return done(self);
            }
        }
        panic!("run_until: step bound hit at {:?}", self.clock.elapsed());
    }

    /// Run for `d` of simulated time.
    fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    fn connected(&self) -> bool {
        self.client.is_connected() && self.server.state == RTCPeerConnectionState::Connected
    }
}

/// The extmap id the SDP gives `uri`.
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.strip_prefix("a=extmap:")?;
        let (id, u) = rest.split_once(' ')?;
        (u.trim() == uri).then(|| id.split('/').next()?.parse().ok())?
    })
}

fn publisher_net(spec: PublishSpec) -> (Net, String, String) {
    let clock = SimClock::start();
    let mut client = ClientPeer::publisher(clock.now(), client_addr(2), spec).unwrap();
    let mut server = Server::new(clock.now(), None);
    let offer = client.offer(clock.now()).unwrap();
    let answer = server.answer(clock.now(), &offer);
    client.apply_answer(clock.now(), &answer).unwrap();
    let mut net = Net {
        clock,
        client,
        server,
        datagrams: 0,
        cut: false,
    };
    assert!(
        net.run_until(Duration::from_secs(10), Net::connected),
        "not connected: client {:?} / server {:?}",
        net.client.state(),
        net.server.state
    );
    (net, offer, answer)
}

#[test]
fn clock_only_moves_when_told() {
    let mut c = SimClock::start();
    let t0 = c.now();
    assert_eq!(c.now(), t0);
    assert_eq!(
        c.advance(Duration::from_millis(20)),
        t0 + Duration::from_millis(20)
    );
    c.advance_to(t0);
    assert_eq!(c.now(), t0 + Duration::from_millis(20), "never goes back");
    c.advance_to(t0 + Duration::from_secs(3));
    assert_eq!(c.elapsed(), Duration::from_secs(3));
}

#[test]
fn publisher_connects_and_media_reaches_the_server() {
    let spec = PublishSpec {
        audio: true,
        video: true,
        simulcast: false,
    };
    let (mut net, offer, answer) = publisher_net(spec);
    assert!(offer.contains("a=setup:actpass"));
    assert!(answer.contains("a=setup:passive"));
    assert!(answer.contains("a=ice-lite"));
    let connect_time = net.clock.elapsed();
    assert!(connect_time < Duration::from_secs(2), "{connect_time:?}");

    let (audio, video) = (
        net.client.audio_ssrc().unwrap(),
        net.client.video_ssrc().unwrap(),
    );
    for i in 0..10u8 {
        let now = net.clock.now();
        net.client.send_audio(now, 30 + i, true).unwrap();
        net.client.send_vp8(now, i == 0, None).unwrap();
        net.run_for(Duration::from_millis(20));
    }
    let srv = &net.server;
    let a: Vec<_> = srv.rtp.iter().filter(|p| p.header.ssrc == audio).collect();
    let v: Vec<_> = srv.rtp.iter().filter(|p| p.header.ssrc == video).collect();
    assert_eq!((a.len(), v.len()), (10, 10));
    // Consecutive sequence numbers, as sent.
    for w in a.windows(2).chain(v.windows(2)) {
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1)
        );
    }
    // The audio level made it, under the negotiated extension id.
    let level_id = extmap_id(&answer, AUDIO_LEVEL_URI).expect("audio level negotiated");
    let lvl = a[3].header.get_extension(level_id).unwrap();
    assert_eq!(lvl.as_ref(), &[0x80 | 33]);
    assert_eq!(a[3].payload[0], 0xF8);
    // VP8: first is a keyframe with a 15-bit picture id, ids increment.
    let d0 = crate::codec::parse_vp8(&v[0].payload).unwrap();
    let d1 = crate::codec::parse_vp8(&v[1].payload).unwrap();
    assert!(d0.keyframe && !d1.keyframe && d0.picture_id_15bit);
    assert_eq!(d1.picture_id, d0.picture_id.map(|p| (p + 1) & 0x7FFF));
    assert_eq!(v[0].header.payload_type, PT_VP8);
    // Both tracks opened on the server with our SSRCs.
    let mut opened: Vec<u32> = srv.opened.iter().map(|o| o.ssrc).collect();
    opened.sort_unstable();
    let mut want = vec![audio, video];
    want.sort_unstable();
    assert_eq!(opened, want);
    // The client numbers what it sends (transport-cc); the server's default interceptors answer
    // with transport-wide congestion feedback.
    assert!(net
        .client
        .take_rtcp()
        .iter()
        .any(|p| p.as_any().is::<TransportLayerCc>()));
    // Server → publisher: a PLI (as the worker's request_keyframe) reaches the client.
    let rx = srv
        .opened
        .iter()
        .find(|o| o.ssrc == video)
        .unwrap()
        .receiver_id;
    let now = net.clock.now();
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: video,
    };
    net.server
        .pc
        .rtp_receiver(rx)
        .unwrap()
        .write_rtcp(now, vec![Box::new(pli)])
        .unwrap();
    assert!(net.run_until(Duration::from_millis(100), |n| n
        .client
        .plis_received()
        .contains(&video)));
    eprintln!(
        "publisher: connected after {connect_time:?} simulated, {} datagrams",
        net.datagrams
    );
}

#[test]
fn publisher_simulcast_layers_reach_the_server_with_rids() {
    let spec = PublishSpec {
        audio: false,
        video: false,
        simulcast: true,
    };
    let (mut net, offer, answer) = publisher_net(spec);
    assert!(offer.contains("a=simulcast:send q;h;f"), "{offer}");
    for rid in SIMULCAST_RIDS {
        assert!(offer.contains(&format!("a=rid:{rid} send")), "{offer}");
    }
    assert!(answer.contains("a=simulcast:recv q;h;f"), "{answer}");
    let ssrcs = net.client.simulcast_ssrcs();
    for i in 0..3 {
        let now = net.clock.now();
        for layer in 0..3 {
            net.client.send_vp8(now, i == 0, Some(layer)).unwrap();
        }
        net.run_for(Duration::from_millis(33));
    }
    for (layer, ssrc) in ssrcs.iter().enumerate() {
        let got = net
            .server
            .rtp
            .iter()
            .filter(|p| p.header.ssrc == *ssrc)
            .count();
        assert_eq!(got, 3, "layer {layer}");
        let open = net.server.opened.iter().find(|o| o.ssrc == *ssrc).unwrap();
        assert_eq!(open.rid.as_deref(), Some(SIMULCAST_RIDS[layer]));
    }
}

#[test]
fn subscriber_receives_server_media_and_sends_pli() {
    let clock = SimClock::start();
    let now = clock.now();
    let cell = Arc::new(EstimateCell::default());
    let mut server = Server::new(now, Some(cell.clone()));
    let (vssrc, assrc) = (0x1111_2222, 0x3333_4444);
    let vsender = server.add_sendonly(Codec::Vp8, vssrc);
    let _asender = server.add_sendonly(Codec::Opus, assrc);
    let offer = server.offer(now);
    let mut client = ClientPeer::subscriber(now, client_addr(3)).unwrap();
    let answer = client.apply_offer(now, &offer).unwrap();
    assert!(answer.contains("a=setup:active"), "{answer}");
    assert!(answer.contains("a=recvonly"), "{answer}");
    server.apply_answer(now, &answer);
    let mut net = Net {
        clock,
        client,
        server,
        datagrams: 0,
        cut: false,
    };
    assert!(
        net.run_until(Duration::from_secs(10), Net::connected),
        "not connected: client {:?} / server {:?}",
        net.client.state(),
        net.server.state
    );

    // Server → client: VP8 through the validating sender, audio the worker's way (handle_write).
    for i in 0..5u16 {
        let now = net.clock.now();
        let key = i == 0;
        let mut payload = vec![0x90, 0x80, 0x80, i as u8];
        payload.extend_from_slice(if key {
            &[0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]
        } else {
            &[0x11, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0]
        });
        let pkt = rtc::rtp::packet::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: PT_VP8,
                sequence_number: 1000 + i,
                timestamp: 3000 * u32::from(i),
                ssrc: vssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        net.server
            .pc
            .rtp_sender(vsender)
            .unwrap()
            .write_rtp(now, pkt)
            .unwrap();
        let audio = rtc::rtp::packet::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: conn::PT_OPUS,
                sequence_number: 7 + i,
                timestamp: 960 * u32::from(i),
                ssrc: assrc,
                ..Default::default()
            },
            payload: vec![0xF8, 1, 2, 3].into(),
        };
        net.server
            .pc
            .handle_write(TaggedRTCMessage {
                now,
                message: RTCMessage::RtpPacket(String::new(), audio),
            })
            .unwrap();
        net.run_for(Duration::from_millis(20));
    }
    let v = net.client.received().get(&vssrc).expect("video received");
    assert_eq!(v.sequence_numbers(), vec![1000, 1001, 1002, 1003, 1004]);
    assert_eq!(v.keyframes(), 1);
    assert!(v.packets[0].keyframe);
    assert_eq!(v.mid.as_deref(), Some("0"));
    let a = net.client.received().get(&assrc).expect("audio received");
    assert_eq!(a.sequence_numbers(), vec![7, 8, 9, 10, 11]);
    assert_eq!(a.packets[2].payload.as_ref(), &[0xF8, 1, 2, 3]);
    assert_eq!(net.client.received_on_mid("1").map(|(s, _)| s), Some(assrc));

    // The client's transport-cc feedback reached the server's congestion controller.
    assert!(net
        .server
        .rtcp
        .iter()
        .any(|p| p.as_any().is::<TransportLayerCc>()));
    assert!(
        cell.estimate().is_some(),
        "no bandwidth estimate from feedback"
    );
    // Client → server: a PLI, delivered to the application by the RTCP tap.
    let now = net.clock.now();
    net.client.send_pli(now, vssrc).unwrap();
    assert!(net.run_until(Duration::from_millis(100), |n| n
        .server
        .plis()
        .contains(&vssrc)));
    eprintln!(
        "subscriber: {} datagrams, {:?} simulated",
        net.datagrams,
        net.clock.elapsed()
    );
}

#[test]
fn silent_client_fails_within_the_dead_peer_timeout_in_simulated_time() {
    let spec = PublishSpec {
        audio: true,
        ..Default::default()
    };
    let (mut net, _, _) = publisher_net(spec);
    // Consent checks keep it up through long quiet stretches.
    net.run_for(Duration::from_secs(30));
    assert!(net.connected());
    net.cut = true;
    let cut_at = net.clock.now();
    assert!(net.run_until(DEAD_PEER_TIMEOUT, |n| n.server.state
        == RTCPeerConnectionState::Failed));
    let server_failed = net.clock.now() - cut_at;
    assert!(net.run_until(Duration::from_secs(60), |n| n.client.is_failed()));
    eprintln!(
        "dead peer: server failed {server_failed:?}, client {:?} after the cut",
        net.clock.now() - cut_at
    );
}

#[test]
fn subscriber_renegotiation_adds_a_track() {
    let clock = SimClock::start();
    let now = clock.now();
    let mut server = Server::new(now, None);
    let (first, second) = (0x0101_0101, 0x0202_0202);
    server.add_sendonly(Codec::Opus, first);
    let offer = server.offer(now);
    let mut client = ClientPeer::subscriber(now, client_addr(4)).unwrap();
    let answer = client.apply_offer(now, &offer).unwrap();
    server.apply_answer(now, &answer);
    let mut net = Net {
        clock,
        client,
        server,
        datagrams: 0,
        cut: false,
    };
    assert!(net.run_until(Duration::from_secs(10), Net::connected));

    // Server re-offers with a second (VP8) track, as renegotiate_pending does.
    let now = net.clock.now();
    let sender = net.server.add_sendonly(Codec::Vp8, second);
    let offer = net.server.offer(now);
    let answer = net.client.apply_offer(now, &offer).unwrap();
    net.server.apply_answer(now, &answer);
    let mut payload = vec![0x90, 0x80, 0x80, 0x01];
    payload.extend_from_slice(&[0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]);
    let pkt = rtc::rtp::packet::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: true,
            payload_type: PT_VP8,
            sequence_number: 42,
            ssrc: second,
            ..Default::default()
        },
        payload: payload.into(),
    };
    net.server
        .pc
        .rtp_sender(sender)
        .unwrap()
        .write_rtp(now, pkt)
        .unwrap();
    assert!(net.run_until(Duration::from_millis(100), |n| n
        .client
        .received()
        .contains_key(&second)));
    let (ssrc, s) = net.client.received_on_mid("1").unwrap();
    assert_eq!(
        (ssrc, s.sequence_numbers(), s.keyframes()),
        (second, vec![42], 1)
    );
}
