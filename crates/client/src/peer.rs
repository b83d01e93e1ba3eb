//! Building a `webrtc` peer connection the way every Rakor client leg needs it (Opus 111 +
//! VP8 96, the audio-level and simulcast mid/rid/rrid header extensions, default interceptors, an [`RtcpTap`] so keyframe requests and NACKs reach the
//! application, mDNS off, an explicit bind IP), and the event handler that turns the driver's
//! callbacks into [`PeerEvent`]s on a channel.
//!
//! The handler callbacks run on the peer connection's driver task, so they only forward: all
//! real work happens in whoever drains the channel.

use crate::error::ClientError;
use rakor_proto::PeerConnectionKind;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState,
    RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState, Registry,
    SettingEngineBuilder,
};

/// The RTP header extension carrying the m-section's mid.
pub const SDES_MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// The RTP header extension carrying a simulcast layer's rid (`q`, `h`, `f`).
pub const SDES_RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// The RTP header extension carrying the rid a repair (RTX) stream repairs.
pub const SDES_REPAIRED_RTP_STREAM_ID_URI: &str =
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// Payload type we register for Opus (the server's offer may use another; the answer follows it).
pub const OPUS_PT: u8 = 111;
/// Payload type we register for VP8.
pub const VP8_PT: u8 = 96;

/// Where and how a peer connection binds.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Local IP for the ICE host candidate (`127.0.0.1` for loopback tests).
    pub bind_ip: IpAddr,
    /// STUN/TURN URLs (none by default: the server is ICE-lite and reachable directly).
    pub ice_servers: Vec<String>,
    /// ICE over TCP: a TCP listener on `bind_ip` and active TCP candidates, so a server's
    /// passive TCP candidates (trickled) are tried when UDP is blocked. UDP is preferred.
    pub ice_tcp: bool,
    /// ICE servers the server handed out (`joined.ice_servers`, renewed by `ice_servers`).
    /// TURN over TCP goes through a local bridge (see [`crate::turn_tcp`]).
    pub turn_servers: Vec<rakor_proto::IceServer>,
    /// Use relayed (TURN) candidates only (`iceTransportPolicy: "relay"`), for tests and
    /// measurements of the TURN path.
    pub relay_only: bool,
    /// Behave like the Rakor server's side of a leg: ICE-lite, and `a=setup:passive` (DTLS
    /// server) when answering. Clients never set it; test peers standing in for the server do.
    pub imitate_server: bool,
    /// Roots for `turns:` (TURN over TLS); `None`: the system's. The same as for `wss://`.
    pub tls_roots: Option<Arc<rustls::RootCertStore>>,
    /// Bytes the TURN bridges received, by transport (shared with the client's report).
    pub bridge_counters: Arc<crate::turn_tcp::BridgeCounters>,
    /// How long the ICE agent keeps checking a candidate pair that has not answered yet, one
    /// check every [`ICE_CHECK_INTERVAL`] (see [`crate::ClientOptions::ice_check_window`]);
    /// zero: the `webrtc` crate's default (8 checks, ~1.6 s, then the pair is given up).
    pub ice_check_window: Duration,
}

/// The ICE agent's pace while checking (the `webrtc` crate's default).
pub const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// The checks per candidate pair that cover `window` at [`ICE_CHECK_INTERVAL`]; `None` (the
/// crate's default, 7 retries) for zero or less.
pub fn ice_max_binding_requests(window: Duration) -> Option<u16> {
    let n = window.as_millis() / ICE_CHECK_INTERVAL.as_millis();
    if n <= 7 {
        None
    } else {
        Some(u16::try_from(n).unwrap_or(u16::MAX))
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            ice_servers: Vec::new(),
            ice_tcp: true,
            turn_servers: Vec::new(),
            relay_only: false,
            imitate_server: false,
            tls_roots: None,
            bridge_counters: Arc::default(),
            ice_check_window: Duration::from_secs(20),
        }
    }
}

/// Something a peer connection reported.
pub enum PeerEvent {
    /// A local ICE candidate to trickle; `None` when gathering is complete.
    LocalCandidate(Option<RTCIceCandidateInit>),
    /// The connection state changed.
    State(RTCPeerConnectionState),
    /// A remote track produced its first packet.
    Track(Arc<dyn TrackRemote>),
}

/// Forwards a peer connection's callbacks, tagged with which connection it is.
pub struct ForwardingHandler {
    pc: PeerConnectionKind,
    tx: mpsc::UnboundedSender<(PeerConnectionKind, PeerEvent)>,
}

impl ForwardingHandler {
    pub fn new(
        pc: PeerConnectionKind,
        tx: mpsc::UnboundedSender<(PeerConnectionKind, PeerEvent)>,
    ) -> Arc<Self> {
        Arc::new(Self { pc, tx })
    }

    fn send(&self, ev: PeerEvent) {
        // The receiver is gone only when the session ended; nothing to do then.
        let _ = self.tx.send((self.pc, ev));
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ForwardingHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.send(PeerEvent::LocalCandidate(Some(init))),
            Err(e) => tracing::debug!(error = %e, "local candidate not serialisable"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.send(PeerEvent::LocalCandidate(None));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.send(PeerEvent::Track(track));
    }
}

fn media_engine() -> Result<MediaEngine, ClientError> {
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: OPUS_PT,
        },
        RtpCodecKind::Audio,
    )?;
    // RFC 6464 audio levels: the server forwards only the loudest speakers.
    me.register_header_extension(
        rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability {
            uri: crate::media::AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    // Simulcast (RFC 8852/8853): a layer's packets name their m-section (mid) and layer (rid),
    // because simulcast offers carry no `a=ssrc` lines. `register_default_interceptors` registers
    // them too (idempotent); registering here, in the same order, keeps the ids it would assign
    // and does not depend on the interceptor set.
    for uri in [
        SDES_MID_URI,
        SDES_RTP_STREAM_ID_URI,
        SDES_REPAIRED_RTP_STREAM_ID_URI,
    ] {
        me.register_header_extension(
            rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )?;
    }
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8_codec(vec![
                fb("goog-remb", ""),
                fb("ccm", "fir"),
                fb("nack", ""),
                fb("nack", "pli"),
            ]),
            payload_type: VP8_PT,
        },
        RtpCodecKind::Video,
    )?;
    Ok(me)
}

/// The VP8 codec description used on local tracks.
pub fn vp8_codec(rtcp_feedback: Vec<RTCPFeedback>) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback,
    }
}

/// The Opus codec description used on local tracks.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Build a peer connection whose events go to `tx`, tagged `kind`.
pub async fn new_peer_connection(
    config: &PeerConfig,
    kind: PeerConnectionKind,
    tx: mpsc::UnboundedSender<(PeerConnectionKind, PeerEvent)>,
) -> Result<Arc<dyn PeerConnection>, ClientError> {
    let mut me = media_engine()?;
    let registry = register_default_interceptors(Registry::new(), &mut me)?
        .with(Slot::from(14_000), RtcpTap::default());
    // A client answers with `a=setup:active` (DTLS client), as browsers do; without this the
    // stack answers an ICE-lite offer with `passive`.
    let answering_role = if config.imitate_server {
        RTCDtlsRole::Server
    } else {
        RTCDtlsRole::Client
    };
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_answering_dtls_role(answering_role)
        .with_lite(config.imitate_server)
        // Keep checking an unanswered pair through a stall of the server (or of this process)
        // instead of giving it up after ~1.6 s: the agent never tries a failed pair again and
        // never fails a connection that is still checking, so one stall during a join burst
        // would leave the leg `connecting` until `connect_timeout` resets it.
        .with_ice_connection_attempts(
            Some(ICE_CHECK_INTERVAL),
            ice_max_binding_requests(config.ice_check_window),
        )
        .build();
    let mut ice_servers = if config.ice_servers.is_empty() {
        vec![]
    } else {
        vec![RTCIceServer {
            urls: config.ice_servers.clone(),
            ..Default::default()
        }]
    };
    ice_servers.extend(turn_ice_servers(config).await);
    let mut rtc_config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers);
    if config.relay_only {
        rtc_config = rtc_config.with_ice_transport_policy(
            rtc::peer_connection::configuration::RTCIceTransportPolicy::Relay,
        );
    }
    let rtc_config = rtc_config.build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(rtc_config)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        // Large UDP buffers: TURN/TCP/TLS bridges hand over bursts (crate::runtime).
        .with_runtime(Arc::new(crate::runtime::BufferedTokioRuntime))
        .with_handler(ForwardingHandler::new(kind, tx))
        .with_udp_addrs(vec![SocketAddr::new(config.bind_ip, 0).to_string()])
        // The webrtc crate connects to a remote passive TCP candidate when it is trickled
        // (`add_ice_candidate`), and gathers active candidates only with a TCP listener.
        .with_tcp_addrs(if config.ice_tcp && !config.imitate_server {
            vec![SocketAddr::new(config.bind_ip, 0).to_string()]
        } else {
            vec![]
        })
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// The server's `ice_servers` as the `webrtc` crate can use them: TURN over TCP (`turn:…?
/// transport=tcp`) and over TLS (`turns:`) each through a local bridge ([`crate::turn_tcp`]),
/// the TLS one verifying the server's certificate with [`PeerConfig::tls_roots`]. Everything
/// else is passed on as it is. ICE then prefers, by candidate priority, direct UDP, then
/// ICE-TCP, then the relays: the client falls back by itself, with no flag.
async fn turn_ice_servers(config: &PeerConfig) -> Vec<RTCIceServer> {
    use crate::turn_tcp::{parse_turn_url, start_bridge, TurnConnector};
    let mut out = Vec::new();
    for s in &config.turn_servers {
        for url in &s.urls {
            let entry = |urls: Vec<String>| RTCIceServer {
                urls,
                username: s.username.clone(),
                credential: s.credential.clone(),
            };
            match parse_turn_url(url) {
                Some(u) if u.tcp => {
                    let server = if u.host.contains(':') {
                        format!("[{}]:{}", u.host, u.port)
                    } else {
                        format!("{}:{}", u.host, u.port)
                    };
                    let connector = if u.secure {
                        match TurnConnector::tls(&u.host, config.tls_roots.as_ref()) {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::debug!(%url, error = %e, "no TURN/TLS bridge");
                                continue;
                            }
                        }
                    } else {
                        TurnConnector::Tcp
                    };
                    match start_bridge(
                        config.bind_ip,
                        server,
                        connector,
                        config.bridge_counters.clone(),
                    )
                    .await
                    {
                        Ok(local) => out.push(entry(vec![format!("turn:{local}?transport=udp")])),
                        Err(e) => tracing::debug!(%url, error = %e, "no TURN bridge"),
                    }
                }
                _ => out.push(entry(vec![url.clone()])),
            }
        }
    }
    out
}

/// The selected candidate pair of `pc` as `"<local type> <protocol> -> <remote type>
/// <protocol>"` (`"relay udp -> host udp"`), `None` before ICE selected one.
pub async fn selected_path(pc: &Arc<dyn PeerConnection>) -> Option<String> {
    let mut transport = None;
    for t in pc.get_transceivers().await {
        if let Ok(Some(s)) = t.sender().await {
            if let Ok(Some(d)) = s.transport().await {
                transport = Some(d);
                break;
            }
        }
        if let Ok(Some(r)) = t.receiver().await {
            if let Ok(Some(d)) = r.transport().await {
                transport = Some(d);
                break;
            }
        }
    }
    let pair = transport?
        .ice_transport()
        .get_selected_candidate_pair()
        .await
        .ok()??;
    let (l, r) = (pair.local(), pair.remote());
    Some(format!(
        "{} {} -> {} {}",
        l.typ, l.protocol, r.typ, r.protocol
    ))
}

/// Marks inbound keyframe requests (PLI, FIR) and NACKs for delivery to the application, so a
/// local track's `poll()` yields them. Placed after the built-in interceptors, which have acted on
/// the packets by then; everything else is left unmarked and stops at the end of the chain.
#[derive(Default)]
pub struct RtcpTap {
    rq: VecDeque<TaggedPacket>,
    wq: VecDeque<TaggedPacket>,
}

fn is_for_application(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<TransportLayerNack>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| is_for_application(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.rq.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.rq.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.wq.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.wq.pop_front()
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The mid of the transceiver whose receiver carries `track`, if any.
pub async fn mid_of_remote_track(
    pc: &Arc<dyn PeerConnection>,
    track: &Arc<dyn TrackRemote>,
) -> Option<String> {
    let want = Arc::as_ptr(track) as *const () as usize;
    for t in pc.get_transceivers().await {
        if let Ok(Some(r)) = t.receiver().await {
            if Arc::as_ptr(r.track()) as *const () as usize == want {
                return t.mid().await.ok().flatten();
            }
        }
    }
    None
}

/// The first `a=mid:` of an SDP (what trickled candidates are tagged with; everything is bundled).
pub fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:").map(str::to_owned))
}

/// A short name for a connection state, for reports.
pub fn state_name(state: RTCPeerConnectionState) -> String {
    format!("{state}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn first_mid_is_found() {
        let sdp =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 x 96\r\na=mid:1\r\n";
        assert_eq!(first_mid(sdp).as_deref(), Some("0"));
        assert_eq!(first_mid("v=0\r\n"), None);
    }
}
