//! An in-memory WebRTC client peer on the `rtc` crate's Sans-I/O `RTCPeerConnection`: no
//! sockets, no clock reads. Datagrams go in with [`ClientPeer::handle_datagram`] and come out of
//! [`ClientPeer::poll_transmit`]; time only moves through the `now` arguments.
//!
//! The peer behaves like a browser towards Rakor: full ICE (it is the controlling agent, the
//! server being ICE-lite), DTLS client (`a=setup:actpass` when offering, `a=setup:active` when
//! answering), one host candidate at a fake address that it adds itself, then end-of-candidates.
//!
//! Two roles, one per connection, as Rakor's clients use them:
//! - **publisher** ([`ClientPeer::publisher`]): offers sendonly tracks ([`PublishSpec`]): Opus
//!   with the RFC 6464 audio level extension, VP8, VP8 simulcast with RIDs `q`/`h`/`f`; then
//!   writes real RTP on them ([`ClientPeer::send_audio`], [`ClientPeer::send_vp8`]).
//! - **subscriber** ([`ClientPeer::subscriber`]): answers the server's offer
//!   ([`ClientPeer::apply_offer`]), collects the RTP it receives per SSRC
//!   ([`ClientPeer::received`]) and sends PLIs ([`ClientPeer::send_pli`]).
//!
//! Both roles see inbound RTCP (the crate's RTCP tap is registered), e.g. the server's PLIs to a
//! publisher ([`ClientPeer::plis_received`]).

use crate::codec::parse_vp8;
use crate::conn::{codec_params, codecs, RtcpTap, AUDIO_LEVEL_URI};
use crate::router::Codec;
use bytes::{Bytes, BytesMut};
use rtc::interceptor::{Registry, Slot, TwccSenderBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId,
    RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// The `sdes:mid` header extension (BUNDLE demux; sent on every packet when negotiated).
pub(crate) const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// The `sdes:rtp-stream-id` header extension (the RID of a simulcast layer).
pub(crate) const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// The simulcast RIDs a publisher sends, low to high (layer index = position).
pub(crate) const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// Which sendonly tracks a publisher offers, in this m-line order: audio, video, simulcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PublishSpec {
    /// An Opus track with the RFC 6464 audio level extension.
    pub audio: bool,
    /// A single-encoding VP8 track ([`ClientPeer::send_vp8`] with `layer: None`).
    pub video: bool,
    /// A VP8 track with three simulcast encodings, RIDs [`SIMULCAST_RIDS`]
    /// ([`ClientPeer::send_vp8`] with `layer: Some(0..3)`).
    pub simulcast: bool,
}

/// One RTP packet a subscriber received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceivedPacket {
    /// When it came out of the connection (the `now` of the datagram that carried it).
    pub at: Instant,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// The RTP payload (after SRTP decryption).
    pub payload: Bytes,
    /// The packet starts a VP8 keyframe (always false for other codecs).
    pub keyframe: bool,
}

/// The RTP a subscriber received on one SSRC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReceivedStream {
    /// The mid of the transceiver it arrived on, if known.
    pub mid: Option<String>,
    /// The `rtc` track id it was delivered with.
    pub track_id: String,
    /// In arrival order.
    pub packets: Vec<ReceivedPacket>,
}

impl ReceivedStream {
    /// Sequence numbers, in arrival order.
    pub(crate) fn sequence_numbers(&self) -> Vec<u16> {
        self.packets.iter().map(|p| p.sequence_number).collect()
    }

    /// Packets that start a VP8 keyframe.
    pub(crate) fn keyframes(&self) -> usize {
        self.packets.iter().filter(|p| p.keyframe).count()
    }
}

/// A sendonly track of a publisher and its RTP state, one entry per encoding (layer).
struct OutTrack {
    transceiver: RTCRtpTransceiverId,
    sender: RTCRtpSenderId,
    codec: Codec,
    clock_rate: u32,
    layers: Vec<OutLayer>,
    mid: Option<String>,
}

struct OutLayer {
    rid: Option<&'static str>,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    picture_id: u16,
}

impl OutLayer {
    fn new(rid: Option<&'static str>) -> Self {
        Self {
            rid,
            ssrc: loop {
                let s: u32 = rand::random();
                if s != 0 {
                    break s;
                }
            },
            seq: rand::random(),
            ts_base: rand::random(),
            picture_id: rand::random::<u16>() & 0x7FFF,
        }
    }
}

/// What the subscriber knows about one received track (by `rtc` track id).
#[derive(Clone)]
struct InTrack {
    receiver: Option<RTCRtpReceiverId>,
    mid: Option<String>,
    vp8_pts: Vec<u8>,
}

/// The connection role a [`ClientPeer`] was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientRole {
    /// Offers sendonly tracks.
    Publisher,
    /// Answers the server's sendonly offer.
    Subscriber,
}

/// An in-memory WebRTC client connection (see the module docs).
pub(crate) struct ClientPeer {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    role: ClientRole,
    epoch: Instant,
    candidates_added: bool,
    /// ICE over TCP: our candidate is `tcptype active` and every packet is a TCP frame.
    tcp: bool,
    state: RTCPeerConnectionState,
    ice_state: RTCIceConnectionState,
    events: VecDeque<RTCPeerConnectionEvent>,
    audio: Option<OutTrack>,
    video: Option<OutTrack>,
    simulcast: Option<OutTrack>,
    in_tracks: HashMap<String, InTrack>,
    received: BTreeMap<u32, ReceivedStream>,
    rtcp: Vec<Box<dyn rtc::rtcp::Packet>>,
}

impl std::fmt::Debug for ClientPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPeer")
            .field("addr", &self.addr)
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn other(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}

/// The client's media engine: the server's codecs (same payload types), the audio level
/// extension on audio, and (from the default interceptors) mid/rid and transport-cc.
fn media_engine() -> Result<MediaEngine, Error> {
    let mut me = MediaEngine::default();
    for (codec, kind) in codecs() {
        me.register_codec(codec, kind)?;
    }
    me.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    Ok(me)
}

impl ClientPeer {
    /// A publisher connection offering the tracks of `spec`; its host candidate is `addr`.
    pub(crate) fn publisher(
        now: Instant,
        addr: SocketAddr,
        spec: PublishSpec,
    ) -> Result<Self, Error> {
        let mut peer = Self::build(now, addr, ClientRole::Publisher)?;
        if spec.audio {
            peer.audio = Some(peer.add_send_track(Codec::Opus, &[None], "audio")?);
        }
        if spec.video {
            peer.video = Some(peer.add_send_track(Codec::Vp8, &[None], "video")?);
        }
        if spec.simulcast {
            let rids = SIMULCAST_RIDS.map(Some);
            peer.simulcast = Some(peer.add_send_track(Codec::Vp8, &rids, "simulcast")?);
        }
        Ok(peer)
    }

    /// A subscriber connection: it waits for the server's offer ([`Self::apply_offer`]).
    pub(crate) fn subscriber(now: Instant, addr: SocketAddr) -> Result<Self, Error> {
        Self::build(now, addr, ClientRole::Subscriber)
    }

    fn build(now: Instant, addr: SocketAddr, role: ClientRole) -> Result<Self, Error> {
        let mut me = media_engine()?;
        // Defaults: NACK, RTCP reports, transport-cc receiver (feedback on what it receives),
        // mid/rid extensions. Like a browser, it also numbers what it sends for transport-cc,
        // and the RTCP tap hands inbound RTCP (PLI, reports) to the test.
        let registry = register_default_interceptors(Registry::new(), &mut me)?
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(Slot::from(14_000), RtcpTap::default());
        let se = SettingEngineBuilder::new()
            .with_answering_dtls_role(RTCDtlsRole::Client)
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(se)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)?;
        Ok(Self {
            pc,
            addr,
            role,
            epoch: now,
            candidates_added: false,
            tcp: false,
            state: RTCPeerConnectionState::New,
            ice_state: RTCIceConnectionState::New,
            events: VecDeque::new(),
            audio: None,
            video: None,
            simulcast: None,
            in_tracks: HashMap::new(),
            received: BTreeMap::new(),
            rtcp: Vec::new(),
        })
    }

    fn add_send_track(
        &mut self,
        codec: Codec,
        rids: &[Option<&'static str>],
        label: &str,
    ) -> Result<OutTrack, Error> {
        let params = codec_params(codec).ok_or_else(|| other("codec without parameters"))?;
        let kind = if codec == Codec::Opus {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let layers: Vec<OutLayer> = rids.iter().map(|r| OutLayer::new(*r)).collect();
        let encodings = layers
            .iter()
            .map(|l| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: l.rid.unwrap_or_default().to_owned(),
                    ssrc: Some(l.ssrc),
                    ..Default::default()
                },
                codec: params.clone(),
                ..Default::default()
            })
            .collect();
        let stream_id = format!("client-{}", self.addr);
        let track = MediaStreamTrack::new(
            stream_id.clone(),
            label.to_owned(),
            label.to_owned(),
            kind,
            encodings,
        );
        let transceiver = self.pc.add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![stream_id],
                send_encodings: vec![],
            }),
        )?;
        let sender = self
            .pc
            .rtp_transceiver(transceiver)
            .and_then(|t| t.sender())
            .ok_or(Error::ErrRTPSenderNotExisted)?;
        Ok(OutTrack {
            transceiver,
            sender,
            codec,
            clock_rate: params.clock_rate,
            layers,
            mid: None,
        })
    }

    /// The address of this peer's host candidate (the source of everything it transmits).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Publisher or subscriber.
    pub(crate) fn role(&self) -> ClientRole {
        self.role
    }

    /// Use ICE over TCP instead of UDP (before the first offer or answer): the candidate is
    /// `tcptype active` (so it pairs only with the server's passive TCP candidate), and
    /// packets in and out are TCP frames, [`Self::addr`] naming the stream.
    pub(crate) fn set_tcp(&mut self, on: bool) {
        self.tcp = on;
    }

    pub(crate) fn is_tcp(&self) -> bool {
        self.tcp
    }

    fn add_local_candidates(&mut self) -> Result<(), Error> {
        if self.candidates_added {
            return Ok(());
        }
        let (network, port, tcp_type) = if self.tcp {
            // RFC 6544: an active candidate's port is 9 (discard); it connects out.
            ("tcp", 9, rtc::ice::tcp_type::TcpType::Active)
        } else {
            (
                "udp",
                self.addr.port(),
                rtc::ice::tcp_type::TcpType::Unspecified,
            )
        };
        let host = CandidateHostConfig {
            base_config: CandidateConfig {
                network: network.into(),
                address: self.addr.ip().to_string(),
                port,
                component: 1,
                ..Default::default()
            },
            tcp_type,
        }
        .new_candidate_host()?;
        self.pc
            .add_local_candidate(RTCIceCandidate::from(&host).to_json()?)?;
        self.pc
            .add_local_candidate(RTCIceCandidateInit::default())?;
        self.candidates_added = true;
        Ok(())
    }

    fn local_sdp(&self) -> Result<String, Error> {
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| other("no local description"))
    }

    /// Learn the mids of the send tracks (assigned by `set_local_description`).
    fn learn_mids(&mut self) {
        for t in [&mut self.audio, &mut self.video, &mut self.simulcast]
            .into_iter()
            .flatten()
        {
            if let Some(tr) = self.pc.rtp_transceiver(t.transceiver) {
                t.mid.clone_from(tr.mid());
            }
        }
    }

    /// Publisher: create and apply the offer (with our candidate and end-of-candidates; the
    /// first offer adds them) and return its SDP, for the server's `publish`.
    pub(crate) fn offer(&mut self, now: Instant) -> Result<String, Error> {
        self.add_local_candidates()?;
        let offer = self.pc.create_offer(None)?;
        self.pc.set_local_description(now, offer)?;
        self.learn_mids();
        self.pump(now);
        self.local_sdp()
    }

    /// Publisher: apply the server's answer; ICE and DTLS start on the next transmits.
    pub(crate) fn apply_answer(&mut self, now: Instant, sdp: &str) -> Result<(), Error> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::answer(sdp.to_owned())?)?;
        self.learn_mids();
        self.pump(now);
        Ok(())
    }

    /// Subscriber: apply the server's offer (first one or a renegotiation) and return our
    /// answer's SDP (recvonly for its sendonly sections, `a=setup:active`).
    pub(crate) fn apply_offer(&mut self, now: Instant, sdp: &str) -> Result<String, Error> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::offer(sdp.to_owned())?)?;
        self.add_local_candidates()?;
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        self.learn_mids();
        self.pump(now);
        self.local_sdp()
    }

    // ---- datagrams and timers -------------------------------------------------------------

    /// A datagram (or, in TCP mode, an unframed TCP frame) from `from` arrived.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: impl Into<BytesMut>,
    ) -> Result<(), Error> {
        let r = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: if self.tcp {
                    TransportProtocol::TCP
                } else {
                    TransportProtocol::UDP
                },
            },
            message: datagram.into(),
        });
        self.pump(now);
        r
    }

    /// The next datagram to send: `(destination, bytes)`; the source is [`Self::addr`].
    pub(crate) fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        let tcp = self.tcp;
        self.pc
            .poll_write()
            .filter(|m| (m.transport.transport_protocol == TransportProtocol::TCP) == tcp)
            .map(|m| (m.transport.peer_addr, m.message))
    }

    /// When [`Self::handle_timeout`] is next due.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// Run the timers due at `now` (ICE checks, DTLS retransmits, RTCP reports, ...).
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        let r = self.pc.handle_timeout(now);
        self.pump(now);
        r
    }

    // ---- state and events -----------------------------------------------------------------

    /// The peer connection state, as last reported by the connection.
    pub(crate) fn state(&self) -> RTCPeerConnectionState {
        self.state
    }

    /// The ICE connection state, as last reported by the connection.
    pub(crate) fn ice_state(&self) -> RTCIceConnectionState {
        self.ice_state
    }

    /// ICE and DTLS are up: media can flow.
    pub(crate) fn is_connected(&self) -> bool {
        self.state == RTCPeerConnectionState::Connected
    }

    /// The connection failed (ICE or DTLS).
    pub(crate) fn is_failed(&self) -> bool {
        self.state == RTCPeerConnectionState::Failed
    }

    /// The next connection event not yet taken (every event the connection emitted, in order;
    /// the peer has already acted on them).
    pub(crate) fn poll_event(&mut self) -> Option<RTCPeerConnectionEvent> {
        self.events.pop_front()
    }

    /// The underlying `rtc` connection, for what this API does not cover. Call
    /// [`Self::handle_timeout`] (or anything else that pumps) afterwards to collect its output.
    pub(crate) fn pc_mut(&mut self) -> &mut RTCPeerConnection {
        &mut self.pc
    }

    /// Drain the connection's events and inbound messages into our records.
    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.pc.poll_event() {
            match &ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => self.state = *s,
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(s) => self.ice_state = *s,
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let info = self.in_track_info(init.receiver_id);
                    self.in_tracks.insert(init.track_id.clone(), info);
                }
                _ => {}
            }
            self.events.push_back(ev);
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track_id, pkt) => {
                    let info = match self.in_tracks.get(&track_id) {
                        Some(i) => i.clone(),
                        None => {
                            let i = self.find_in_track(&track_id);
                            self.in_tracks.insert(track_id.clone(), i.clone());
                            i
                        }
                    };
                    let pt = pkt.header.payload_type;
                    let keyframe = info.vp8_pts.contains(&pt)
                        && parse_vp8(&pkt.payload).is_some_and(|d| d.keyframe);
                    let stream = self.received.entry(pkt.header.ssrc).or_default();
                    if stream.track_id.is_empty() {
                        stream.track_id = track_id;
                    }
                    if stream.mid.is_none() {
                        stream.mid = info.mid;
                    }
                    stream.packets.push(ReceivedPacket {
                        at: now,
                        sequence_number: pkt.header.sequence_number,
                        timestamp: pkt.header.timestamp,
                        payload_type: pt,
                        marker: pkt.header.marker,
                        payload: pkt.payload,
                        keyframe,
                    });
                }
                RTCMessage::RtcpPacket(_, pkts) => self.rtcp.extend(pkts),
                _ => {}
            }
        }
    }

    /// Mid and VP8 payload types of the transceiver owning `receiver`.
    fn in_track_info(&mut self, receiver: RTCRtpReceiverId) -> InTrack {
        let ids: Vec<RTCRtpTransceiverId> = self.pc.get_transceivers().collect();
        let mid = ids.into_iter().find_map(|tid| {
            let t = self.pc.rtp_transceiver(tid)?;
            (t.receiver() == Some(receiver))
                .then(|| t.mid().clone())
                .flatten()
        });
        let vp8_pts = self
            .pc
            .rtp_receiver(receiver)
            .map(|mut r| {
                r.get_parameters()
                    .rtp_parameters
                    .codecs
                    .iter()
                    .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8))
                    .map(|c| c.payload_type)
                    .collect()
            })
            .unwrap_or_default();
        InTrack {
            receiver: Some(receiver),
            mid,
            vp8_pts,
        }
    }

    /// [`Self::in_track_info`] for a track id whose `OnOpen` we have not seen.
    fn find_in_track(&mut self, track_id: &str) -> InTrack {
        let ids: Vec<RTCRtpReceiverId> = self.pc.get_receivers().collect();
        let found = ids.into_iter().find(|rid| {
            self.pc
                .rtp_receiver(*rid)
                .is_some_and(|r| r.track().track_id() == track_id)
        });
        match found {
            Some(r) => self.in_track_info(r),
            None => InTrack {
                receiver: None,
                mid: None,
                vp8_pts: Vec::new(),
            },
        }
    }

    // ---- receiving --------------------------------------------------------------------------

    /// RTP received so far, per SSRC.
    pub(crate) fn received(&self) -> &BTreeMap<u32, ReceivedStream> {
        &self.received
    }

    /// The RTP received on the transceiver with `mid` (the first SSRC seen there).
    pub(crate) fn received_on_mid(&self, mid: &str) -> Option<(u32, &ReceivedStream)> {
        self.received
            .iter()
            .find(|(_, s)| s.mid.as_deref() == Some(mid))
            .map(|(ssrc, s)| (*ssrc, s))
    }

    /// Packets received on transceiver `mid`, over every SSRC it carried (a reused m-line).
    pub(crate) fn packets_on_mid(&self, mid: &str) -> usize {
        self.received
            .values()
            .filter(|s| s.mid.as_deref() == Some(mid))
            .map(|s| s.packets.len())
            .sum()
    }

    /// Forget the RTP received so far.
    pub(crate) fn clear_received(&mut self) {
        self.received.clear();
    }

    /// Take the RTCP packets received so far (any type: PLI, reports, transport-cc feedback).
    pub(crate) fn take_rtcp(&mut self) -> Vec<Box<dyn rtc::rtcp::Packet>> {
        std::mem::take(&mut self.rtcp)
    }

    /// Media SSRCs of the PLIs received so far (kept; [`Self::take_rtcp`] clears them).
    pub(crate) fn plis_received(&self) -> Vec<u32> {
        self.rtcp
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<PictureLossIndication>())
            .map(|p| p.media_ssrc)
            .collect()
    }

    /// Subscriber: send a PLI for `media_ssrc` (through its receiver when that SSRC has been
    /// received, else directly into the connection).
    pub(crate) fn send_pli(&mut self, now: Instant, media_ssrc: u32) -> Result<(), Error> {
        let pli: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        })];
        let receiver = self
            .received
            .get(&media_ssrc)
            .and_then(|s| self.in_tracks.get(&s.track_id))
            .and_then(|t| t.receiver);
        let r = match receiver.and_then(|id| self.pc.rtp_receiver(id)) {
            Some(mut rx) => rx.write_rtcp(now, pli),
            None => self.pc.handle_write(TaggedRTCMessage {
                now,
                message: RTCMessage::RtcpPacket(String::new(), pli),
            }),
        };
        self.pump(now);
        r
    }

    // ---- sending ----------------------------------------------------------------------------

    /// SSRC of the audio track.
    pub(crate) fn audio_ssrc(&self) -> Option<u32> {
        self.audio
            .as_ref()
            .and_then(|t| t.layers.first())
            .map(|l| l.ssrc)
    }

    /// SSRC of the single-encoding VP8 track.
    pub(crate) fn video_ssrc(&self) -> Option<u32> {
        self.video
            .as_ref()
            .and_then(|t| t.layers.first())
            .map(|l| l.ssrc)
    }

    /// SSRCs of the simulcast layers, low to high ([`SIMULCAST_RIDS`] order).
    pub(crate) fn simulcast_ssrcs(&self) -> Vec<u32> {
        self.simulcast
            .as_ref()
            .map(|t| t.layers.iter().map(|l| l.ssrc).collect())
            .unwrap_or_default()
    }

    /// Mids of the audio, video and simulcast tracks (known once the offer is applied).
    pub(crate) fn send_mids(&self) -> [Option<String>; 3] {
        [&self.audio, &self.video, &self.simulcast].map(|t| t.as_ref().and_then(|t| t.mid.clone()))
    }

    /// Publisher: send one 20 ms Opus packet with the RFC 6464 audio level (`level`: 0–127,
    /// −dBov; `voice`: the V bit). Also carries `sdes:mid` when negotiated.
    pub(crate) fn send_audio(&mut self, now: Instant, level: u8, voice: bool) -> Result<(), Error> {
        let level_ext = Bytes::from(vec![(u8::from(voice) << 7) | (level & 0x7F)]);
        // A plausible Opus packet: TOC (config 31 = CELT FB 20 ms, mono, one frame) + bytes.
        let mut payload = vec![0xF8];
        payload.extend(std::iter::repeat_n(level, 40));
        self.send(
            now,
            TrackSel::Audio,
            0,
            Bytes::from(payload),
            true,
            Some(level_ext),
        )
    }

    /// Publisher: send one VP8 frame as a single RTP packet (marker set) with a valid payload
    /// descriptor (X, I, 15-bit picture id incremented per frame and per stream, S=1, PID 0) and
    /// payload header (P bit clear and the keyframe start code and size on a keyframe).
    /// `layer`: `None` for the single-encoding track, `Some(i)` for simulcast layer `i`.
    pub(crate) fn send_vp8(
        &mut self,
        now: Instant,
        keyframe: bool,
        layer: Option<usize>,
    ) -> Result<(), Error> {
        let (sel, i) = match layer {
            None => (TrackSel::Video, 0),
            Some(i) => (TrackSel::Simulcast, i),
        };
        let picture_id = {
            let l = self
                .out_track(sel)?
                .layers
                .get_mut(i)
                .ok_or_else(|| other(format!("no simulcast layer {i}")))?;
            let p = l.picture_id;
            l.picture_id = (l.picture_id + 1) & 0x7FFF;
            p
        };
        let (w, h): (u16, u16) = [(320, 180), (640, 360), (1280, 720)]
            .get(if layer.is_some() { i } else { 1 })
            .copied()
            .unwrap_or((640, 360));
        let [pid_hi, pid_lo] = picture_id.to_be_bytes();
        // Descriptor: X=1 S=1 PID=0 | I=1 | M=1 + 15-bit picture id.
        let mut payload = vec![0x90, 0x80, 0x80 | pid_hi, pid_lo];
        if keyframe {
            // Frame tag: P=0 (key), version 0, show_frame=1; start code; width; height.
            payload.extend_from_slice(&[0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]);
            payload.extend_from_slice(&w.to_le_bytes());
            payload.extend_from_slice(&h.to_le_bytes());
            payload.extend(std::iter::repeat_n(filler(0xA0, layer), 200));
        } else {
            payload.extend_from_slice(&[0x11, 0x02, 0x00]);
            payload.extend(std::iter::repeat_n(filler(0xC0, layer), 60));
        }
        self.send(now, sel, i, Bytes::from(payload), true, None)
    }

    fn out_track(&mut self, sel: TrackSel) -> Result<&mut OutTrack, Error> {
        match sel {
            TrackSel::Audio => self.audio.as_mut(),
            TrackSel::Video => self.video.as_mut(),
            TrackSel::Simulcast => self.simulcast.as_mut(),
        }
        .ok_or_else(|| other(format!("no {sel:?} track")))
    }

    fn send(
        &mut self,
        now: Instant,
        sel: TrackSel,
        layer: usize,
        payload: Bytes,
        marker: bool,
        audio_level: Option<Bytes>,
    ) -> Result<(), Error> {
        let elapsed = now.saturating_duration_since(self.epoch);
        let t = self.out_track(sel)?;
        let (sender, codec, rate, mid) = (t.sender, t.codec, t.clock_rate, t.mid.clone());
        let l = t
            .layers
            .get_mut(layer)
            .ok_or_else(|| other(format!("no layer {layer}")))?;
        // RTP timestamps wrap at 2^32.
        let ticks =
            u32::try_from((elapsed.as_micros() * u128::from(rate) / 1_000_000) % (1u128 << 32))
                .unwrap_or_default();
        let mut header = rtc::rtp::header::Header {
            version: 2,
            marker,
            sequence_number: l.seq,
            timestamp: l.ts_base.wrapping_add(ticks),
            ssrc: l.ssrc,
            ..Default::default()
        };
        l.seq = l.seq.wrapping_add(1);
        let rid = l.rid;
        let mut sender = self
            .pc
            .rtp_sender(sender)
            .ok_or(Error::ErrRTPSenderNotExisted)?;
        let params = sender.get_parameters();
        let mime = match codec {
            Codec::Opus => MIME_TYPE_OPUS,
            Codec::Vp8 => MIME_TYPE_VP8,
            Codec::H264 => rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264,
        };
        header.payload_type = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
            .ok_or(Error::ErrRTPTransceiverCodecUnsupported)?;
        let ext_id = |uri: &str| {
            params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .and_then(|e| u8::try_from(e.id).ok())
        };
        let mut exts: Vec<(u8, Bytes)> = Vec::new();
        if let (Some(id), Some(mid)) = (ext_id(MID_URI), mid) {
            exts.push((id, Bytes::from(mid.into_bytes())));
        }
        if let (Some(id), Some(rid)) = (ext_id(RID_URI), rid) {
            exts.push((id, Bytes::from_static(rid.as_bytes())));
        }
        if let (Some(id), Some(level)) = (ext_id(AUDIO_LEVEL_URI), audio_level) {
            exts.push((id, level));
        }
        for (id, value) in exts {
            header
                .set_extension(id, value)
                .map_err(|e| other(format!("header extension {id}: {e}")))?;
        }
        let r = sender.write_rtp(now, rtc::rtp::packet::Packet { header, payload });
        self.pump(now);
        r
    }
}

#[derive(Debug, Clone, Copy)]
enum TrackSel {
    Audio,
    Video,
    Simulcast,
}

/// The filler byte of a synthetic VP8 payload: `base` (0xA0 keyframe, 0xC0 delta) plus the
/// simulcast layer (0–3; 0xF for the single-encoding track), so a receiver can tell which
/// layer a forwarded packet came from ([`layer_of`]).
fn filler(base: u8, layer: Option<usize>) -> u8 {
    base | layer
        .and_then(|l| u8::try_from(l).ok())
        .unwrap_or(0xF)
        .min(0xF)
}

/// The simulcast layer a synthetic VP8 payload of [`ClientPeer::send_vp8`] was sent on
/// (`None`: the single-encoding track or not such a payload).
pub(crate) fn layer_of(payload: &[u8]) -> Option<usize> {
    let last = *payload.last()?;
    let layer = usize::from(last & 0x0F);
    (matches!(last & 0xF0, 0xA0 | 0xC0) && layer < 4).then_some(layer)
}
