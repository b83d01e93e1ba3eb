//! Building the server side of one WebRTC connection on the Sans-I/O `rtc` core: codecs,
//! interceptors (NACK, reports, an RTCP tap), ICE-lite with our own ufrag, and host candidates
//! on the shared media socket.

use crate::bwe::{EstimateCell, SubscriberEstimator};
use crate::liveness::IceTimeouts;
use crate::nack::NackCache;
use crate::router::{Codec, PayloadTypes};
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, Packet, Registry, SenderReportBuilder, Slot,
    StreamInfo, TaggedPacket, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Payload types the server offers on subscriber connections.
pub(crate) const PT_OPUS: u8 = 111;
pub(crate) const PT_VP8: u8 = 96;
pub(crate) const PT_H264: u8 = 102;

fn video_feedback() -> Vec<RTCPFeedback> {
    [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(t, p)| RTCPFeedback {
            typ: t.to_owned(),
            parameter: p.to_owned(),
        })
        .collect()
}

/// Opus, VP8 and H.264 (constrained baseline, packetization-mode 1). No RTX: retransmissions
/// use the original SSRC (RFC 4585 NACK), which keeps the forwarding table one SSRC per track.
pub(crate) fn codecs() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    vec![
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: PT_OPUS,
            },
            RtpCodecKind::Audio,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: video_feedback(),
                },
                payload_type: PT_VP8,
            },
            RtpCodecKind::Video,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line:
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                            .to_owned(),
                    rtcp_feedback: video_feedback(),
                },
                payload_type: PT_H264,
            },
            RtpCodecKind::Video,
        ),
    ]
}

/// The codec (as negotiated for sending) that a subscriber track of `codec` announces.
pub(crate) fn codec_params(codec: Codec) -> Option<RTCRtpCodec> {
    let mime = match codec {
        Codec::Opus => MIME_TYPE_OPUS,
        Codec::Vp8 => MIME_TYPE_VP8,
        Codec::H264 => MIME_TYPE_H264,
    };
    codecs()
        .into_iter()
        .find(|(c, _)| c.rtp_codec.mime_type == mime)
        .map(|(c, _)| c.rtp_codec)
}

/// Payload types of a negotiated codec list.
pub(crate) fn payload_types(codecs: &[RTCRtpCodecParameters]) -> PayloadTypes {
    let mut pts = PayloadTypes::default();
    for c in codecs {
        if let Some(codec) = Codec::from_mime(&c.rtp_codec.mime_type) {
            pts.set(codec, c.payload_type);
        }
    }
    pts
}

/// Marks inbound RTCP for delivery to the application (the terminal interceptor drops it
/// otherwise), so the worker sees subscribers' PLI/FIR.
#[derive(Default)]
pub(crate) struct RtcpTap {
    rq: VecDeque<TaggedPacket>,
    wq: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut m: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(m.message.packet, Packet::Rtcp(_)) {
            m.message.add(Attribute::DeliverToApplication);
        }
        self.rq.push_back(m);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.rq.pop_front()
    }
    fn handle_write(&mut self, m: TaggedPacket) -> Result<(), Self::Error> {
        self.wq.push_back(m);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.wq.pop_front()
    }
}

impl Interceptor for RtcpTap {
    /// Writes pass through untouched (no move through `wq`).
    fn write_in_place(&mut self, _m: &mut TaggedPacket) -> bool {
        self.wq.is_empty()
    }
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The RFC 6464 client-to-mixer audio level header extension.
pub(crate) const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Header extensions a simulcast publisher's layers are identified by.
const SIMULCAST_EXTENSIONS: [&str; 3] = [
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
];

/// Random ICE credentials: the ufrag is the demux key, so it must be unique on the socket.
pub(crate) fn ice_credentials() -> (String, String) {
    use rand::distributions::{Alphanumeric, DistString};
    let mut rng = rand::thread_rng();
    (
        Alphanumeric.sample_string(&mut rng, 16),
        Alphanumeric.sample_string(&mut rng, 32),
    )
}

/// A server-side connection: ICE-lite, DTLS passive when answering, our ufrag/pwd, and ICE
/// timers that fail a silent client within the dead-peer timeout (see [`crate::liveness`]).
/// With `estimate` (subscriber connections), what it sends is numbered for transport-wide
/// congestion feedback and the receiver's feedback drives GCC into that cell ([`crate::bwe`]).
/// `send_only` (subscriber connections): only the interceptors a sending leg uses.
pub(crate) fn build(
    now: Instant,
    ufrag: &str,
    pwd: &str,
    timeouts: IceTimeouts,
    estimate: Option<Arc<EstimateCell>>,
    send_only: bool,
) -> Result<RTCPeerConnection, Error> {
    let mut me = MediaEngine::default();
    for (codec, kind) in codecs() {
        me.register_codec(codec, kind)?;
    }
    // RFC 6464 audio levels from publishers (speaker selection, `crate::speakers`); never
    // offered to subscribers (the server strips extensions when forwarding).
    me.register_header_extension(
        rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        Some(rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly),
    )?;
    // Simulcast from publishers: the core maps each layer's SSRC to its RID with these.
    for uri in SIMULCAST_EXTENSIONS {
        me.register_header_extension(
            rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RtpCodecKind::Video,
            Some(rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly),
        )?;
    }
    // The defaults register the transport-cc extension and feedback (both kinds) and report
    // arrivals to publishers; a subscriber connection also numbers what it sends and runs GCC on
    // the feedback. No pacer: forwarded media cannot be sent slower than it arrives; the
    // allocator picks layers instead.
    //
    // A send-only (subscriber) connection has no inbound RTP: the NACK generator, receiver
    // reports and the TWCC receiver would only pass every outgoing packet through their queues
    // (a move of the packet struct each). It keeps a NACK responder (Rakor's time-sized
    // [`NackCache`] instead of `rtc`'s fixed 1,024-slot ring per stream) and sender reports; the
    // defaults still run for what they register in the media engine (feedback, extensions).
    let defaults = register_default_interceptors(Registry::new(), &mut me)?;
    let registry = if send_only {
        Registry::new()
            .with(Slot::NackResponder, NackCache::default())
            .with(Slot::SenderReport, SenderReportBuilder::new().build())
    } else {
        defaults
    };
    let mut registry = registry.with(Slot::from(14_000), RtcpTap::default());
    if let Some(cell) = estimate {
        registry = registry
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(SubscriberEstimator::new(cell)).build(),
            );
    }
    let se = SettingEngineBuilder::new()
        .with_lite(true)
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_ice_timeouts(
            Some(timeouts.disconnected),
            Some(timeouts.failed),
            Some(timeouts.check_interval),
        )
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(se)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)
}

/// Host candidates for the shared media port, one per advertised IP: UDP, and with `tcp` also a
/// passive ICE-TCP candidate (RFC 6544, `tcptype passive`) on the same IP and port number (the
/// shell's TCP listener), and on `extra_tcp_port` (the HTTPS port's demux) when given. UDP
/// first: clients prefer it, TCP is the fallback.
pub(crate) fn host_candidates(
    ips: &[IpAddr],
    port: u16,
    tcp: bool,
    extra_tcp_port: Option<u16>,
) -> Vec<RTCIceCandidateInit> {
    let udp = ips.iter().map(|ip| (ip, port, "udp", TcpType::Unspecified));
    let tcp_ports = std::iter::once(port)
        .chain(extra_tcp_port.filter(|p| *p != port))
        .filter(|_| tcp);
    let tcp = tcp_ports.flat_map(|p| ips.iter().map(move |ip| (ip, p, "tcp", TcpType::Passive)));
    udp.chain(tcp)
        .filter_map(|(ip, port, network, tcp_type)| {
            let host = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: network.into(),
                    address: ip.to_string(),
                    port,
                    component: 1,
                    ..Default::default()
                },
                tcp_type,
            }
            .new_candidate_host()
            .ok()?;
            RTCIceCandidate::from(&host).to_json().ok()
        })
        .collect()
}
