//! Driving the `rtc` connections: a datagram in, then every connection with input or output
//! ("dirty") serviced — its events (tracks opening, connection state), its inbound RTP/RTCP
//! (to `forward`), its outbound datagrams (to the outbox) — and its timer cached.

use super::state::{Conn, Work};
use super::Core;
use crate::demux::Transport;
use crate::slab::ConnKey;
use bytes::BytesMut;
use rakor_proto::{LeaveReason, PeerConnectionKind};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::time::Instant;

/// Passes over the dirty connections per entry point: a publisher's packets make subscriber
/// legs dirty, their output is then queued on the next pass.
const SERVICE_PASSES: usize = 4;

impl Core {
    /// One datagram that arrived on the media socket from `src` at `now`. Routed by ICE
    /// ufrag, then by source address ([`crate::demux`]); unknown sources are counted and
    /// dropped, malformed input is dropped by that connection.
    ///
    /// The connection is serviced on the next [`Self::service_dirty`], so a batch of
    /// datagrams can be read before anything is serviced: call [`Self::flush_input`] after the
    /// batch.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        let local_addr = self.local_addr;
        if !self.read_packet(now, local_addr, src, Transport::Udp, datagram) {
            self.stats.datagrams_unknown_source += 1;
        }
    }

    /// One packet (an RFC 4571 frame without its length prefix) that arrived at `now` on the
    /// ICE-TCP stream from `peer`, accepted at our candidate address `local` (from
    /// [`Self::tcp_candidate_addr`]). Routed like a datagram, by ufrag, then by the stream once
    /// an authenticated binding went over it. False when it routes nowhere: a stream's first
    /// frame that does not is closed by the shell; later ones are dropped. Call
    /// [`Self::flush_input`] after a batch, as for datagrams.
    pub fn handle_stream_packet(
        &mut self,
        now: Instant,
        local: SocketAddr,
        peer: SocketAddr,
        packet: &[u8],
    ) -> bool {
        self.stats.tcp_frames_in += 1;
        let routed = self.read_packet(now, local, peer, Transport::Tcp, packet);
        if !routed {
            self.stats.tcp_frames_unknown_source += 1;
        }
        routed
    }

    /// Route a packet and hand it to its connection's `rtc` core; false if it routes nowhere.
    fn read_packet(
        &mut self,
        now: Instant,
        local_addr: SocketAddr,
        src: SocketAddr,
        transport: Transport,
        packet: &[u8],
    ) -> bool {
        let Some(ci) = self.demux.route(packet, src, transport) else {
            return false;
        };
        let Some(c) = self.conns.get_mut(ci) else {
            return false;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: src,
                ecn: None,
                transport_protocol: match transport {
                    Transport::Udp => TransportProtocol::UDP,
                    Transport::Tcp => TransportProtocol::TCP,
                },
            },
            message: BytesMut::from(packet),
        };
        match c.pc.handle_read(msg) {
            Ok(()) => c.heard_at = now,
            // Malformed or unexpected input from the network: drop it, keep the connection.
            Err(e) => tracing::debug!(conn = %ci, "handle_read: {e}"),
        }
        c.work.mark_dirty(ci, &mut self.inputs);
        true
    }

    /// Service what a batch of [`Self::handle_datagram`] calls left to do at `now` (after
    /// bounded steps: the timers of the legs they wrote to).
    pub fn flush_input(&mut self, now: Instant) {
        self.service_dirty(now);
    }

    /// One bounded step of [`Self::flush_input`] (issue 16): the connections with input are
    /// serviced, their packets forwarded one at a time, until about `budget` copies were
    /// forwarded in this step; then the legs written in the step are drained, so their
    /// datagrams are in the outbox. True when input is left: send the outbox, then call again.
    /// A step always forwards at least one packet (the step may exceed `budget` by one
    /// packet's fan-out), so repeated calls finish. `budget` 0 is [`Self::flush_input`].
    ///
    /// The legs' timers are not asked here: call [`Self::flush_input`] once after the last
    /// step of the last slice of a turn (each `poll_timeout` is a sweep of a leg's handler
    /// pipeline; per slice and leg it cost more than the copies a small slice sends).
    /// A step walks the lists of connections with input and of legs it wrote to
    /// ([`super::state::Work`]), never every connection: its cost follows what it forwards.
    pub fn flush_input_step(&mut self, now: Instant, budget: u64) -> bool {
        if budget == 0 {
            self.service_dirty(now);
            return false;
        }
        let limit = self.stats.rtp_out.saturating_add(budget);
        self.copy_limit = Some(limit);
        // The connections with input, in the order their input came, until the limit; those
        // not reached stay first on the list for the next step.
        let mut list = std::mem::take(&mut self.conn_scratch);
        list.clear();
        std::mem::swap(&mut list, &mut self.inputs);
        let mut reached = 0;
        for &ci in &list {
            if self.stats.rtp_out >= limit {
                break;
            }
            reached += 1;
            let Some(c) = self.conns.get_mut(ci) else {
                continue;
            };
            if c.work.take_input() && c.work.dirty() {
                self.service(ci, now);
            }
        }
        // Marked meanwhile (a connection that stopped at the limit, a publisher asked for a
        // keyframe): after the ones not reached.
        list.drain(..reached);
        list.append(&mut self.inputs);
        std::mem::swap(&mut list, &mut self.inputs);
        self.conn_scratch = list;
        // The legs this step wrote to: their datagrams to the outbox. Their timers are asked
        // once, by the last step (each `poll_write`/`poll_timeout` is a sweep of the handler
        // pipeline: per step and leg it would cost more than the copies it sends).
        let written = std::mem::take(&mut self.step_written);
        for &ci in &written {
            if self.conns.get_mut(ci).is_some_and(|c| c.work.drain()) {
                self.drain_writes(ci);
            }
        }
        self.step_written = written;
        self.step_written.clear();
        self.copy_limit = None;
        let conns = &self.conns;
        self.inputs
            .iter()
            .any(|&ci| conns.get(ci).is_some_and(|c| c.work.dirty()))
    }

    /// Service every connection on the lists (input, then output), in up to
    /// [`SERVICE_PASSES`] passes: servicing one may give another work.
    pub(crate) fn service_dirty(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.conn_scratch);
        for _ in 0..SERVICE_PASSES {
            if self.inputs.is_empty() && self.outputs.is_empty() {
                break;
            }
            list.clear();
            std::mem::swap(&mut list, &mut self.inputs);
            self.service_listed(&list, now, Work::take_input);
            list.clear();
            std::mem::swap(&mut list, &mut self.outputs);
            self.service_listed(&list, now, Work::take_output);
        }
        list.clear();
        self.conn_scratch = list;
    }

    /// Service the connections of `list` (taken off `inputs` or `outputs`) whose entry counts
    /// (`take`: [`Work::take_input`] / [`Work::take_output`]) and that still have work.
    fn service_listed(&mut self, list: &[ConnKey], now: Instant, take: fn(&mut Work) -> bool) {
        for &ci in list {
            if let Some(c) = self.conns.get_mut(ci) {
                if take(&mut c.work) && c.work.any() {
                    self.service(ci, now);
                }
            }
        }
    }

    fn service(&mut self, ci: ConnKey, now: Instant) {
        let Some(c) = self.conns.get_mut(ci) else {
            return;
        };
        // A connection that only had forwarded packets written to it has no event or read
        // waiting: skip those two sweeps of its handler pipeline (issue 16).
        let input = c.work.begin_service();
        #[cfg(test)]
        self.service_log.push(ci);
        if input {
            let mut events = Vec::new();
            while let Some(ev) = c.pc.poll_event() {
                events.push(ev);
            }
            for ev in events {
                self.handle_event(ci, ev, now);
            }
            self.read_messages(ci, now);
        }
        self.drain_writes(ci);
        if let Some(c) = self.conns.get_mut(ci) {
            c.deadline = c.pc.poll_timeout();
            if let Some(d) = c.deadline {
                self.conn_deadline = Some(self.conn_deadline.map_or(d, |e| e.min(d)));
            }
        }
    }

    /// Queue a connection's outbound packets (and learn the addresses and streams its ICE
    /// agent accepted, see [`crate::demux::Demux::learn_from_outgoing`]).
    fn drain_writes(&mut self, ci: ConnKey) {
        let Core {
            conns, out, demux, ..
        } = self;
        if let Some(c) = conns.get_mut(ci) {
            while let Some(m) = c.pc.poll_write() {
                let transport = transport_of(&m.transport);
                demux.learn_from_outgoing(&m.message, m.transport.peer_addr, transport, ci);
                out.push(super::Transmit {
                    dst: m.transport.peer_addr,
                    transport,
                    data: m.message,
                });
            }
        }
    }

    fn handle_event(&mut self, ci: ConnKey, ev: RTCPeerConnectionEvent, now: Instant) {
        match ev {
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.on_track_open(ci, init.receiver_id, init.ssrc, init.rid.as_deref(), now);
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(c) = self.conns.get_mut(ci) else {
                    return;
                };
                tracing::debug!(conn = %ci, kind = ?c.kind, participant = %c.owner, ?state, "connection state");
                match state {
                    RTCPeerConnectionState::Connected => {
                        c.connected = true;
                        if c.kind == PeerConnectionKind::Subscriber {
                            self.activate_subscriber_legs(ci, now);
                        }
                    }
                    RTCPeerConnectionState::Failed => {
                        c.connected = false;
                        let owner = c.owner.clone();
                        tracing::info!(participant = %owner, "media connection failed");
                        self.peer_lost(&owner, LeaveReason::MediaFailed, now);
                    }
                    RTCPeerConnectionState::Disconnected => c.connected = false,
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Create a connection and register its ufrag with the demux.
    pub(crate) fn insert_conn(&mut self, conn: Conn) -> ConnKey {
        let ufrag = conn.ufrag.clone();
        let ci = self.conns.insert(conn);
        if let Some(c) = self.conns.get_mut(ci) {
            c.work.mark_dirty(ci, &mut self.inputs);
        }
        self.demux.add_ufrag(ufrag, ci);
        ci
    }

    /// Close and forget a connection, queueing what its close produced.
    pub(crate) fn close_conn(&mut self, ci: ConnKey) {
        let Some(mut c) = self.conns.remove(ci) else {
            return;
        };
        if let Err(e) = c.pc.close() {
            tracing::debug!(conn = %ci, "close: {e}");
        }
        while let Some(m) = c.pc.poll_write() {
            self.transmit(m.transport.peer_addr, transport_of(&m.transport), m.message);
        }
        self.demux
            .remove_conn(&c.ufrag, ci, &mut self.closed_streams);
    }
}

/// Which way an `rtc` output leaves: its selected candidate pair's protocol.
fn transport_of(t: &TransportContext) -> Transport {
    if t.transport_protocol == TransportProtocol::TCP {
        Transport::Tcp
    } else {
        Transport::Udp
    }
}
