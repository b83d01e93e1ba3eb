use crate::peer_connection::event::{RTCEventInternal, TaggedRTCEventInternal};
use crate::peer_connection::message::internal::{
    RTCMessageInternal, RTPMessage, TaggedRTCMessageInternal,
};

use bytes::BytesMut;
use interceptor::Packet;
use log::debug;
use shared::error::{Error, Result};
use shared::marshal::{Marshal, MarshalSize, Unmarshal};
use shared::util::is_rtcp;
use srtp::context::Context;
use std::collections::VecDeque;
use std::time::Instant;

#[derive(Default)]
pub(crate) struct SrtpHandlerContext {
    pub(crate) local_srtp_context: Option<Context>,
    pub(crate) remote_srtp_context: Option<Context>,

    pub(crate) read_outs: VecDeque<TaggedRTCMessageInternal>,
    pub(crate) write_outs: VecDeque<TaggedRTCMessageInternal>,
    pub(crate) event_outs: VecDeque<TaggedRTCEventInternal>,
}

/// SrtpHandler implements SRTP/RTP/RTCP Protocols handling
pub(crate) struct SrtpHandler<'a> {
    ctx: &'a mut SrtpHandlerContext,
}

impl<'a> SrtpHandler<'a> {
    pub(crate) fn new(ctx: &'a mut SrtpHandlerContext) -> Self {
        SrtpHandler { ctx }
    }

    pub(crate) fn name(&self) -> &'static str {
        "SrtpHandler"
    }

    /// Rakor patch (issue 16): whether outgoing packets can be protected (the local SRTP
    /// context exists, i.e. the DTLS handshake completed).
    pub(crate) fn can_protect(&self) -> bool {
        self.ctx.local_srtp_context.is_some()
    }

    /// Marshals and protects an outgoing RTP or RTCP packet: what `handle_write` does with
    /// `RTPMessage::Packet`, returning the datagram instead of queueing it (Rakor patch, issue
    /// 16: the in-place write path of a forwarded packet calls this directly).
    pub(crate) fn protect(
        &mut self,
        packet: Packet,
        transport: &shared::TransportContext,
    ) -> Result<BytesMut> {
        match packet {
            Packet::Rtcp(rtcp_packets) => {
                if rtcp_packets.is_empty() {
                    return Err(Error::Other("empty rtcp_packets".to_string()));
                };

                if let Some(context) = self.ctx.local_srtp_context.as_mut() {
                    let packet = rtcp::packet::marshal(&rtcp_packets)?;
                    context.encrypt_rtcp(&packet)
                } else {
                    Err(Error::Other(format!(
                        "local_srp_context is not set yet for rtcp_packet {:?}",
                        transport.peer_addr
                    )))
                }
            }
            Packet::Rtp(rtp_message) => {
                if let Some(context) = self.ctx.local_srtp_context.as_mut() {
                    // Rakor patch: marshal once into a buffer with room for the auth tag
                    // and encrypt there (was: `marshal()` into one buffer, then
                    // `encrypt_rtp` copied it into a second): one allocation and one
                    // payload copy per packet instead of two.
                    let len = rtp_message.marshal_size();
                    let mut packet =
                        BytesMut::with_capacity(len + context.rtp_protection_overhead());
                    if rtp_message.header.padding {
                        packet.resize(len, 0);
                        let n = rtp_message.marshal_to(&mut packet)?;
                        packet.truncate(n);
                    } else {
                        // Rakor patch (issue 16): without padding the packet is the header and
                        // the payload, so only the header's room is zeroed before it is
                        // marshalled (was: the whole packet, then overwritten); same bytes.
                        let header_len = rtp_message.header.marshal_size();
                        packet.resize(header_len, 0);
                        let n = rtp_message.header.marshal_to(&mut packet)?;
                        packet.truncate(n);
                        packet.extend_from_slice(&rtp_message.payload);
                    }
                    context.encrypt_rtp_in_place(&mut packet)?;
                    Ok(packet)
                } else {
                    Err(Error::Other(format!(
                        "local_srtp_context is not set yet for rtp_packet {:?}",
                        transport.peer_addr
                    )))
                }
            }
            _ => Err(Error::Other(
                "unsupported packet kind for srtp write".to_string(),
            )),
        }
    }
}

impl<'a>
    sansio::Protocol<TaggedRTCMessageInternal, TaggedRTCMessageInternal, TaggedRTCEventInternal>
    for SrtpHandler<'a>
{
    type Rout = TaggedRTCMessageInternal;
    type Wout = TaggedRTCMessageInternal;
    type Eout = TaggedRTCEventInternal;
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedRTCMessageInternal) -> Result<()> {
        if let RTCMessageInternal::Rtp(RTPMessage::Raw(message)) = msg.message {
            debug!("srtp read {:?}", msg.transport.peer_addr);

            #[allow(clippy::collapsible_else_if)]
            if is_rtcp(&message) {
                if let Some(context) = self.ctx.remote_srtp_context.as_mut() {
                    let mut decrypted = context.decrypt_rtcp(&message)?;
                    let rtcp_packets = rtcp::packet::unmarshal(&mut decrypted)?;
                    if rtcp_packets.is_empty() {
                        return Err(Error::Other("empty rtcp_packets".to_string()));
                    }

                    self.ctx.read_outs.push_back(TaggedRTCMessageInternal {
                        now: msg.now,
                        transport: msg.transport,
                        message: RTCMessageInternal::Rtp(RTPMessage::Packet(Packet::Rtcp(
                            rtcp_packets,
                        ))),
                    });
                } else {
                    return Err(Error::Other(format!(
                        "remote_srtp_context is not set yet for rtcp_packet {:?}",
                        msg.transport.peer_addr
                    )));
                }
            } else {
                if let Some(context) = self.ctx.remote_srtp_context.as_mut() {
                    let mut decrypted = context.decrypt_rtp(&message)?;
                    let rtp_packet = rtp::Packet::unmarshal(&mut decrypted)?;

                    self.ctx.read_outs.push_back(TaggedRTCMessageInternal {
                        now: msg.now,
                        transport: msg.transport,
                        message: RTCMessageInternal::Rtp(RTPMessage::Packet(Packet::Rtp(
                            rtp_packet,
                        ))),
                    });
                } else {
                    return Err(Error::Other(format!(
                        "remote_srtp_context is not set yet for rtp_packet {:?}",
                        msg.transport.peer_addr
                    )));
                }
            }
        } else {
            debug!("bypass srtp read {:?}", msg.transport.peer_addr);
            self.ctx.read_outs.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.ctx.read_outs.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedRTCMessageInternal) -> Result<()> {
        if let RTCMessageInternal::Rtp(message) = msg.message {
            debug!("srtp write {:?}", msg.transport.peer_addr);

            let encrypted = match message {
                RTPMessage::Packet(packet) => self.protect(packet, &msg.transport)?,
                RTPMessage::Raw(raw_packet) => {
                    // Bypass
                    debug!("Bypass srtp write {:?}", msg.transport.peer_addr);
                    raw_packet
                }
                RTPMessage::TrackPacket(_) => {
                    return Err(Error::Other(
                        "application level track message should never reach here".to_string(),
                    ));
                }
            };

            self.ctx.write_outs.push_back(TaggedRTCMessageInternal {
                now: msg.now,
                transport: msg.transport,
                message: RTCMessageInternal::Rtp(RTPMessage::Raw(encrypted)),
            });
        } else {
            // Bypass
            debug!("Bypass srtp write {:?}", msg.transport.peer_addr);
            self.ctx.write_outs.push_back(msg);
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.ctx.write_outs.pop_front()
    }

    fn handle_event(&mut self, mut evt: TaggedRTCEventInternal) -> Result<()> {
        if let RTCEventInternal::DTLSHandshakeComplete(local_srtp_context, remote_srtp_context) =
            &mut evt.event
        {
            debug!("srtp recv dtls handshake complete");

            self.ctx.local_srtp_context = local_srtp_context.take();
            self.ctx.remote_srtp_context = remote_srtp_context.take()
        }

        self.ctx.event_outs.push_back(evt);

        Ok(())
    }

    fn poll_event(&mut self) -> Option<Self::Eout> {
        self.ctx.event_outs.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<()> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod srtp_handler_test {
    use super::*;
    use srtp::protection_profile::ProtectionProfile;

    fn context() -> Context {
        let provider = crypto::default_provider().expect("test crypto provider");
        let profile = ProtectionProfile::Aes128CmHmacSha1_80;
        Context::new(
            &vec![7; profile.key_len()],
            &vec![9; profile.salt_len()],
            profile,
            None,
            None,
            provider.crypto(),
        )
        .expect("srtp context")
    }

    /// Rakor patch (issue 16): `protect` marshals a packet without padding as its header then
    /// its payload (zeroing only the header's room); the datagram is the one `encrypt_rtp` makes
    /// of the packet's `marshal()`, with CSRCs and an extension, and with padding (the other
    /// branch).
    #[test]
    fn protect_is_encrypt_rtp_of_the_marshalled_packet() {
        let shared_ctx = shared::TransportContext::default();
        for padding in [false, true] {
            let mut packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    padding,
                    marker: true,
                    payload_type: 96,
                    sequence_number: 4242,
                    timestamp: 0x1234_5678,
                    ssrc: 0xCAFE_F00D,
                    csrc: vec![1, 2],
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(b"a payload of some odd length"),
            };
            packet
                .header
                .set_extension(1, bytes::Bytes::from_static(&[0xAB, 0xCD]))
                .expect("extension");
            let expected = context()
                .encrypt_rtp(&packet.marshal().expect("marshal"))
                .expect("encrypt");

            let mut ctx = SrtpHandlerContext {
                local_srtp_context: Some(context()),
                ..Default::default()
            };
            let mut handler = SrtpHandler::new(&mut ctx);
            let got = handler
                .protect(Packet::Rtp(packet), &shared_ctx)
                .expect("protect");
            assert_eq!(got, expected, "padding: {padding}");
        }
    }
}
