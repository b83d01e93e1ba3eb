//! The media core as a Sans-I/O state machine: every room, participant and WebRTC connection
//! of one media worker, with no socket and no clock.
//!
//! In the style of quinn-proto and str0m, the caller (the shell, [`crate::shell`], or a test
//! harness) owns the socket and the clock and drives [`Core`] with:
//!
//! - commands from signalling with `now` ([`Core::join`], [`Core::client_message`],
//!   [`Core::disconnect`], [`Core::moderate`], …),
//! - datagrams with `now` and their source ([`Core::handle_datagram`]),
//! - timeouts with `now` ([`Core::handle_timeout`], when [`Core::poll_timeout`] has passed),
//!
//! and takes out
//!
//! - datagrams to send ([`Core::drain_transmits`]): every entry point ends by servicing the
//!   connections it touched, so their output is queued when it returns;
//! - events for signalling: ready-to-send [`rakor_proto::ServerMessage`]s on each
//!   participant's [`crate::EventSender`] (an in-memory queue given with its join), and
//!   membership changes on the room-event queue (attendance);
//! - the next deadline ([`Core::poll_timeout`]).
//!
//! Where each job lives: `state` (the data), `join` (admission: join, the same identity
//! again, leave), `resume` (suspend, park, resume), `liveness` (what a lost peer means),
//! `messages` (client message dispatch, sending to participants), `publish` (client offers,
//! published tracks), `negotiate` (subscriber legs and the server's offers, ICE candidates),
//! `moderate` (mute, remove, spotlight, end), `dynacast` (tile sizes, hidden video, simulcast
//! layer choice, what publishers must send), `allocate` (bandwidth per subscriber), `speaking`
//! (loudest speakers), `forward` (the per-packet fan-out and keyframe requests), `service`
//! (driving the `rtc` connections).

mod allocate;
mod dynacast;
mod forward;
mod join;
pub(crate) mod liveness;
mod messages;
mod moderate;
mod negotiate;
mod publish;
mod resume;
mod service;
mod speaking;
pub(crate) mod state;

#[cfg(test)]
mod tests;

use crate::demux::Demux;
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

/// A datagram to send from the media socket.
#[derive(Debug)]
pub struct Transmit {
    pub dst: SocketAddr,
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
    pub(crate) stats: SfuStats,
    pub(crate) stopping: bool,
    room_events: Option<tokio::sync::mpsc::UnboundedSender<RoomEvent>>,
    /// Datagrams to send (the outbox: one Vec reused, drained by the shell).
    out: Vec<Transmit>,
    rtp_scratch: Vec<(Instant, rtc::rtp::packet::Packet)>,
    level_scratch: Vec<speaking::LevelSample>,
    next_tick: Instant,
    /// Read instants of the packets forwarded since the last drain (forwarding latency).
    forwarded_read_at: Vec<Instant>,
    /// Wall clock at `epoch`: attendance times are `wall_epoch + (now − epoch)`.
    epoch: (Instant, SystemTime),
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
            stats: SfuStats::default(),
            stopping: false,
            room_events,
            out: Vec::with_capacity(1024),
            rtp_scratch: Vec::with_capacity(64),
            level_scratch: Vec::with_capacity(64),
            next_tick: now,
            forwarded_read_at: Vec::with_capacity(1024),
            epoch: (now, wall),
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

    /// Read instants of the packets forwarded since the last call (the shell measures the
    /// forwarding latency from them once their datagrams are sent).
    pub fn drain_forwarded(&mut self) -> std::vec::Drain<'_, Instant> {
        self.forwarded_read_at.drain(..)
    }

    /// The earliest instant at which [`Self::handle_timeout`] has work (None: no timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.conns.iter().filter_map(|(_, c)| c.deadline);
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
            self.update_speakers(now);
            self.update_bandwidth(now);
            self.update_layers(now);
            self.next_tick = now + TICK;
        }
        self.renegotiate_pending(now);
        let due = self
            .conns
            .keys_where(|c| c.deadline.is_some_and(|d| d <= now));
        for ci in due {
            if let Some(c) = self.conns.get_mut(ci) {
                if let Err(e) = rtc::sansio::Protocol::handle_timeout(&mut c.pc, now) {
                    tracing::debug!(conn = %ci, "handle_timeout: {e}");
                }
                c.deadline = None;
                c.dirty = true;
            }
        }
        self.poll_keyframe_throttles(now);
        self.service_dirty(now);
    }

    /// Counters, with the current sizes.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.stats.clone();
        s.rooms = self.rooms.len();
        s.participants = self.participants.len();
        s.connections = self.conns.len();
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
        if let Some(tx) = &self.room_events {
            let _ = tx.send(ev);
        }
    }

    pub(crate) fn transmit(&mut self, dst: SocketAddr, data: BytesMut) {
        self.out.push(Transmit { dst, data });
    }
}
