//! The media core as a Sans-I/O state machine: every room, participant and WebRTC connection
//! of one media worker, with no socket and no clock.
//!
//! In the style of quinn-proto and str0m, the caller (the shell, [`crate::shell`], or a test
//! harness) owns the socket and the clock and drives [`Core`] with:
//!
//! - commands from signalling with `now` ([`Core::join`], [`Core::client_message`],
//!   [`Core::disconnect`], [`Core::moderate`], …),
//! - datagrams with `now` and their source ([`Core::handle_datagram`]), and ICE-TCP frames
//!   (RFC 4571, already unframed) with `now` and their stream ([`Core::handle_stream_packet`]),
//! - timeouts with `now` ([`Core::handle_timeout`], when [`Core::poll_timeout`] has passed),
//!
//! and takes out
//!
//! - packets to send ([`Core::drain_transmits`]), each to a UDP address or to a TCP stream:
//!   every entry point ends by servicing the connections it touched, so their output is
//!   queued when it returns; and the TCP streams whose connection closed
//!   ([`Core::drain_closed_streams`]);
//! - events for signalling: ready-to-send [`rakor_proto::ServerMessage`]s on each
//!   participant's [`crate::EventSender`] (an in-memory queue given with its join), and
//!   membership changes on the room-event queue (attendance);
//! - the next deadline ([`Core::poll_timeout`]).
//!
//! Where each job lives: `state` (the data), `join` (admission: join, the same identity
//! again, leave), `resume` (suspend, park, resume), `liveness` (what a lost peer means),
//! `messages` (client message dispatch, sending to participants), `publish` (client offers,
//! published tracks), `negotiate` (subscriber legs and the server's offers, ICE candidates),
//! `moderate` (mute, remove, spotlight, end), `present` (chat, raised hands, giving the
//! floor), `presentation` (the room's presentation: one screen share at a time, host takeover
//! and stop), `dynacast` (tile sizes, hidden video, simulcast
//! layer choice, what publishers must send), `allocate` (bandwidth per subscriber), `speaking`
//! (loudest speakers), `relay_levels` (their levels to cascade relays), `forward` (the per-packet fan-out and keyframe requests), `service`
//! (driving the `rtc` connections).

mod allocate;
mod dynacast;
mod forward;
mod join;
pub(crate) mod liveness;
mod messages;
mod moderate;
mod negotiate;
pub(crate) mod present;
mod presentation;
mod publish;
pub mod record;
mod relay_demand;
mod relay_levels;
mod resume;
mod service;
mod speaking;
pub(crate) mod state;

#[cfg(test)]
mod tests;

use crate::demux::{Demux, Transport};
use crate::handle::{RoomEvent, SfuStats};
use crate::slab::{ConnKey, Slab, TrackKey};
use crate::SfuConfig;
use bytes::BytesMut;
use rakor_proto::ParticipantId;
use resume::Parked;
use state::{Conn, Participant, Room, Track};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

/// How often the loudest speakers, bandwidth allotments and simulcast layers are re-evaluated.
const TICK: Duration = Duration::from_millis(100);

/// A packet to send: a datagram from the media socket to `dst`, or (`Transport::Tcp`) one
/// RFC 4571 frame on the accepted ICE-TCP stream whose peer address is `dst`.
#[derive(Debug)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub transport: Transport,
    pub data: BytesMut,
}

/// Every room of one media worker, without I/O (see the module docs).
pub struct Core {
    pub(crate) cfg: SfuConfig,
    /// The media socket's address: what `rtc` is told each datagram arrived on.
    pub(crate) local_addr: SocketAddr,
    /// The IPs in our host candidates.
    pub(crate) advertise: Vec<IpAddr>,
    pub(crate) conns: Slab<ConnKey, Conn>,
    pub(crate) demux: Demux,
    pub(crate) tracks: Slab<TrackKey, Track>,
    pub(crate) participants: HashMap<ParticipantId, Participant>,
    pub(crate) rooms: HashMap<String, Room>,
    /// Participants out of the room after a media failure, held for a resume (resume.rs).
    pub(crate) parked: HashMap<ParticipantId, Parked>,
    /// Recent chat per room (present.rs), kept while the room is empty for a while.
    pub(crate) chat_logs: HashMap<String, present::ChatLog>,
    pub(crate) stats: SfuStats,
    pub(crate) stopping: bool,
    room_events: Option<tokio::sync::mpsc::UnboundedSender<RoomEvent>>,
    /// Packets to send (the outbox: one Vec reused, drained by the shell).
    out: Vec<Transmit>,
    /// Peer addresses of TCP streams whose connection closed (the shell closes them).
    closed_streams: Vec<SocketAddr>,
    rtp_scratch: Vec<(Instant, rtc::rtp::packet::Packet)>,
    /// Connection keys of one pass (due timers, dirty connections), reused across wake-ups.
    pub(crate) conn_scratch: Vec<ConnKey>,
    /// The connections with input to service ([`state::Work`]: each flagged one is here).
    pub(crate) inputs: Vec<ConnKey>,
    /// The connections with output (forwarded packets) to service or whose timer to ask.
    pub(crate) outputs: Vec<ConnKey>,
    /// During a bounded step: the legs the step wrote to (drained at its end).
    pub(crate) step_written: Vec<ConnKey>,
    /// Tests: every connection serviced, in order.
    #[cfg(test)]
    pub(crate) service_log: Vec<ConnKey>,
    /// The earliest connection timer (`Conn::deadline`): never later than the true earliest,
    /// possibly earlier (a connection closed or its timer moved later); recomputed whenever
    /// timers fire, so [`Self::poll_timeout`] does not ask every connection on each wake-up.
    pub(crate) conn_deadline: Option<Instant>,
    level_scratch: Vec<speaking::LevelSample>,
    next_tick: Instant,
    /// Read instants of the packets forwarded since the last drain (forwarding latency).
    forwarded_read_at: Vec<Instant>,
    /// During a bounded step ([`Self::flush_input_step`]): the `stats.rtp_out` at which
    /// publishers' packets stop being read until the next step.
    pub(crate) copy_limit: Option<u64>,
    /// Wall clock at `epoch`: attendance times are `wall_epoch + (now − epoch)`.
    epoch: (Instant, SystemTime),
    /// The recorder thread's hand-off (None: recording disabled), the rooms being recorded
    /// (with their start), and the last recorded-track number given out.
    pub(crate) recorder: Option<crate::record::RecorderTap>,
    pub(crate) recording: HashMap<String, SystemTime>,
    pub(crate) next_rec: u64,
}

impl Core {
    /// A core for the media socket bound at `local_addr`. `now` and `wall` are the same
    /// moment on the monotonic and the wall clock (attendance times are derived from them).
    pub fn new(
        cfg: SfuConfig,
        local_addr: SocketAddr,
        room_events: Option<tokio::sync::mpsc::UnboundedSender<RoomEvent>>,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let advertise = if !cfg.advertise_ips.is_empty() {
            cfg.advertise_ips.clone()
        } else if local_addr.ip().is_unspecified() {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        } else {
            vec![local_addr.ip()]
        };
        Core {
            cfg,
            local_addr,
            advertise,
            conns: Slab::default(),
            demux: Demux::default(),
            tracks: Slab::default(),
            participants: HashMap::new(),
            rooms: HashMap::new(),
            parked: HashMap::new(),
            chat_logs: HashMap::new(),
            stats: SfuStats::default(),
            stopping: false,
            room_events,
            out: Vec::with_capacity(1024),
            closed_streams: Vec::new(),
            rtp_scratch: Vec::with_capacity(64),
            conn_scratch: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            step_written: Vec::new(),
            #[cfg(test)]
            service_log: Vec::new(),
            conn_deadline: None,
            level_scratch: Vec::with_capacity(64),
            next_tick: now,
            forwarded_read_at: Vec::with_capacity(1024),
            copy_limit: None,
            epoch: (now, wall),
            recorder: None,
            recording: HashMap::new(),
            next_rec: 0,
        }
    }

    /// The wall-clock time of monotonic instant `now`.
    pub(crate) fn wall(&self, now: Instant) -> SystemTime {
        let (at, wall) = self.epoch;
        wall + now.saturating_duration_since(at)
    }

    /// The datagrams queued since the last call.
    pub fn drain_transmits(&mut self) -> std::vec::Drain<'_, Transmit> {
        self.out.drain(..)
    }

    /// The ICE-TCP streams (by peer address) whose connection closed since the last call: the
    /// shell closes them.
    pub fn drain_closed_streams(&mut self) -> std::vec::Drain<'_, SocketAddr> {
        self.closed_streams.drain(..)
    }

    /// Read instants of the packets forwarded since the last call (the shell measures the
    /// forwarding latency from them once their datagrams are sent).
    pub fn drain_forwarded(&mut self) -> std::vec::Drain<'_, Instant> {
        self.forwarded_read_at.drain(..)
    }

    /// The earliest instant at which [`Self::handle_timeout`] has work (None: no timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.conn_deadline.into_iter();
        let keyframes = self
            .tracks
            .iter()
            .filter_map(|(_, t)| t.keyframe.deadline());
        let suspended = self.participants.values().filter_map(|p| p.suspended_until);
        let parked = self.parked.values().map(|k| k.until);
        let tick = (!self.rooms.is_empty()).then_some(self.next_tick);
        conns
            .chain(keyframes)
            .chain(suspended)
            .chain(parked)
            .chain(tick)
            .min()
    }

    /// Fire what is due at `now`: connection timers, keyframe-request throttles, the 100 ms
    /// re-evaluation (speakers, bandwidth, simulcast layers), resume windows.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_suspended(now);
        if now >= self.next_tick {
            self.expire_silent(now);
            self.update_speakers(now);
            self.update_relay_levels(now);
            self.update_bandwidth(now);
            self.update_layers(now);
            self.expire_hidden_legs(now);
            self.update_relay_demands();
            self.next_tick = now + TICK;
        }
        self.renegotiate_pending(now);
        let mut due = std::mem::take(&mut self.conn_scratch);
        self.conns
            .keys_where_into(&mut due, |c| c.deadline.is_some_and(|d| d <= now));
        for &ci in &due {
            if let Some(c) = self.conns.get_mut(ci) {
                if let Err(e) = rtc::sansio::Protocol::handle_timeout(&mut c.pc, now) {
                    tracing::debug!(conn = %ci, "handle_timeout: {e}");
                }
                c.deadline = None;
                c.work.mark_dirty(ci, &mut self.inputs);
            }
        }
        self.conn_scratch = due;
        debug_assert!(
            self.conns.iter().all(|(_, c)| c.work.listed()),
            "a connection with work to do is not on the core's lists"
        );
        // The fired timers are gone: the cache starts again from the connections' timers
        // (servicing the fired ones below adds their next ones).
        self.conn_deadline = self.conns.iter().filter_map(|(_, c)| c.deadline).min();
        self.poll_keyframe_throttles(now);
        self.service_dirty(now);
    }

    /// Counters, with the current sizes.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.stats.clone();
        s.rooms = self.rooms.len();
        s.participants = self.participants.len();
        s.connections = self.conns.len();
        s.recording_rooms = self.recording.len();
        if let Some((handed, dropped, frames, cpu)) = self.recorder_counters() {
            s.rec_packets_handed = handed;
            s.rec_packets_dropped = dropped;
            s.rec_frames_written = frames;
            s.rec_thread_cpu_us = cpu;
        }
        s
    }

    /// Record forwarding latency figures computed by the shell (for [`Self::stats`]).
    pub fn set_latency(&mut self, p50_us: u64, p99_us: u64, samples: u64) {
        self.stats.fwd_latency_p50_us = p50_us;
        self.stats.fwd_latency_p99_us = p99_us;
        self.stats.fwd_latency_samples = samples;
    }

    /// Everyone gets `leave {server_shutdown}`, every connection is closed (its last
    /// datagrams queued); no join is accepted afterwards.
    pub fn shutdown(&mut self, now: Instant) {
        self.stopping = true;
        let ids: Vec<ParticipantId> = self.participants.keys().cloned().collect();
        tracing::info!(participants = ids.len(), "media core shutting down");
        for id in ids {
            self.remove_participant(&id, rakor_proto::LeaveReason::ServerShutdown, true, now);
        }
        self.end_all_parked();
        self.service_dirty(now);
    }

    pub(crate) fn room_event(&self, ev: RoomEvent) {
        self.record_mark(&ev);
        if let Some(tx) = &self.room_events {
            let _ = tx.send(ev);
        }
    }

    pub(crate) fn transmit(&mut self, dst: SocketAddr, transport: Transport, data: BytesMut) {
        self.out.push(Transmit {
            dst,
            transport,
            data,
        });
    }

    /// The address of our passive TCP candidate that a stream accepted on `stream_local` (the
    /// listener's side of it) belongs to: `rtc` matches inbound packets to a local candidate
    /// by this address. The stream's own IP when it is advertised, else the first advertised
    /// IP (the bind IP is unspecified, or a 1:1 NAT's public IP is advertised).
    pub fn tcp_candidate_addr(&self, stream_local: SocketAddr) -> SocketAddr {
        let port = self.local_addr.port();
        let ip = if self.advertise.contains(&stream_local.ip()) {
            stream_local.ip()
        } else {
            self.advertise.first().copied().unwrap_or(stream_local.ip())
        };
        SocketAddr::new(ip, port)
    }

    /// Our host candidates (see [`crate::conn::host_candidates`]).
    pub(crate) fn host_candidates(
        &self,
    ) -> Vec<rtc::peer_connection::transport::RTCIceCandidateInit> {
        crate::conn::host_candidates(
            &self.advertise,
            self.local_addr.port(),
            self.cfg.ice_tcp,
            self.cfg.extra_tcp_port,
        )
    }

    /// Whether the ICE-TCP stream from `peer` is bound to a connection (an authenticated
    /// binding went over it). The shell closes streams that stay unbound too long.
    pub fn stream_bound(&self, peer: SocketAddr) -> bool {
        self.demux.stream_bound(peer)
    }

    /// The shell closed the ICE-TCP stream from `peer` (end of stream, error, a malformed
    /// frame, a full write buffer): forget it. The connection itself lives on; if that was its
    /// path, ICE consent fails it like a lost UDP path.
    pub fn stream_closed(&mut self, peer: SocketAddr) {
        self.demux.stream_closed(peer);
    }
}
