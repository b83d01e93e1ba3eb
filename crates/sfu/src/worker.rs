//! The media worker: one thread, one UDP socket, every connection of its rooms.
//!
//! The loop takes commands from signalling, fires due timers, services "dirty" connections
//! (events, inbound RTP/RTCP, outbound datagrams), flushes the datagrams, then waits in
//! `poll(2)` for the socket (at most 10 ms, so commands are seen without a wake-up fd).
//! Forwarding is a direct call from the publisher's packet into each subscriber leg's
//! `handle_write`; payloads are shared `Bytes`, never copied per subscriber.
//! Room and participant logic (join, publish, subscribe, leave) is in [`crate::rooms`].

use crate::demux::Demux;
use crate::handle::{Command, SfuStats};
use crate::rooms::{Participant, Room, Track};
use crate::router::{rewrite_header, TrackRoute};
use crate::{SfuConfig, SfuError};
use bytes::BytesMut;
use rakor_proto::{LeaveReason, ParticipantId, PeerConnectionKind};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MAX_WAIT: Duration = Duration::from_millis(10);
const RECV_BATCH: usize = 256;
const RECV_BUF: usize = 2048;
/// RTP clock rate of every video codec Rakor negotiates.
const VIDEO_CLOCK_RATE: u32 = 90_000;
/// How often the loudest speakers, bandwidth allotments and simulcast layers are re-evaluated.
const SPEAKER_UPDATE: Duration = Duration::from_millis(100);
/// How often the worker logs its counters and forwarding latency (`media stats`).
const STATS_LOG: Duration = Duration::from_secs(10);

/// One WebRTC connection on the shared socket.
pub(crate) struct Conn {
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    pub owner: ParticipantId,
    pub kind: PeerConnectionKind,
    pub deadline: Option<Instant>,
    pub dirty: bool,
    pub connected: bool,
    /// Publisher connection: media SSRC → (track slot, simulcast layer).
    pub inbound: Vec<(u32, usize, u8)>,
    /// Subscriber connection: our SSRC → track slot.
    pub outbound: Vec<(u32, usize)>,
    /// Subscriber connection: its bandwidth estimate (`None`: estimation off) and what the
    /// allocator made of it ([`crate::bwe`]).
    pub estimate: Option<std::sync::Arc<crate::bwe::EstimateCell>>,
    pub alloc: crate::bwe::Allocator,
}

/// A slab: stable indices, reused after removal.
pub(crate) struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, v: T) -> usize {
        if let Some(i) = self.free.pop() {
            self.items[i] = Some(v);
            i
        } else {
            self.items.push(Some(v));
            self.items.len() - 1
        }
    }
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.items.get_mut(i)?.take();
        if v.is_some() {
            self.free.push(i);
        }
        v
    }
    pub fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)?.as_ref()
    }
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)?.as_mut()
    }
    pub fn len(&self) -> usize {
        self.items.len() - self.free.len()
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.items
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| v.as_mut().map(|v| (i, v)))
    }
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (i, v)))
    }
}

pub(crate) struct Worker {
    pub cfg: SfuConfig,
    pub local_addr: SocketAddr,
    pub advertise: Vec<IpAddr>,
    sock: UdpSocket,
    rx: mpsc::Receiver<Command>,
    pub conns: Slab<Conn>,
    pub demux: Demux,
    pub tracks: Slab<Track>,
    pub participants: HashMap<ParticipantId, Participant>,
    pub rooms: HashMap<String, Room>,
    /// Participants out of the room after a media failure, held for a resume (resume.rs).
    pub parked: HashMap<ParticipantId, crate::resume::Parked>,
    pub stats: SfuStats,
    pub stopping: bool,
    pub room_events: Option<tokio::sync::mpsc::UnboundedSender<crate::RoomEvent>>,
    out: Vec<(SocketAddr, BytesMut)>,
    rtp_scratch: Vec<(Instant, rtc::rtp::packet::Packet)>,
    next_speaker_update: Instant,
    /// Socket-read instants of the packets forwarded since the last flush.
    fwd_pending: Vec<Instant>,
    /// Forwarding latency since the last `media stats` line.
    fwd_latency: crate::metrics::LatencyHistogram,
    next_stats_log: Instant,
}

pub(crate) fn spawn(
    config: SfuConfig,
    rx: mpsc::Receiver<Command>,
    room_events: Option<tokio::sync::mpsc::UnboundedSender<crate::RoomEvent>>,
) -> Result<(SocketAddr, std::thread::JoinHandle<()>), SfuError> {
    let sock = UdpSocket::bind(config.bind).map_err(|source| SfuError::Bind {
        addr: config.bind,
        source,
    })?;
    sock.set_nonblocking(true)?;
    set_buffer_sizes(&sock, config.socket_buffer_bytes);
    let local_addr = sock.local_addr()?;
    let advertise = if !config.advertise_ips.is_empty() {
        config.advertise_ips.clone()
    } else if local_addr.ip().is_unspecified() {
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    } else {
        vec![local_addr.ip()]
    };
    let worker = Worker {
        cfg: config,
        local_addr,
        advertise,
        sock,
        rx,
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
        next_speaker_update: Instant::now(),
        fwd_pending: Vec::with_capacity(1024),
        fwd_latency: crate::metrics::LatencyHistogram::default(),
        next_stats_log: Instant::now() + STATS_LOG,
    };
    let join = std::thread::Builder::new()
        .name("rakor-media".into())
        .spawn(move || {
            let mut worker = worker;
            let span = tracing::info_span!("media_worker", addr = %local_addr);
            let _g = span.enter();
            tracing::info!("media worker started");
            worker.run();
            tracing::info!("media worker stopped");
        })?;
    Ok((local_addr, join))
}

fn set_buffer_sizes(sock: &UdpSocket, bytes: usize) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: valid fd, option value is a c_int of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::warn!(
                opt,
                "setsockopt buffer size failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Wait for the socket to become readable (or writable), at most `timeout`.
fn poll_fd(fd: i32, events: i16, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(10);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0 && (pfd.revents & events) != 0
}

impl Worker {
    fn run(&mut self) {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            // 1. Commands from signalling.
            loop {
                match self.rx.try_recv() {
                    Ok(Command::Shutdown { reply }) => {
                        self.shutdown();
                        let _ = reply.send(());
                        return;
                    }
                    Ok(cmd) => self.handle_command(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.shutdown();
                        return;
                    }
                }
            }
            let now = Instant::now();
            self.expire_suspended(now);
            if now >= self.next_speaker_update {
                self.update_speakers(now);
                self.update_bandwidth(now);
                self.update_layers(now);
                self.next_speaker_update = now + SPEAKER_UPDATE;
            }
            if now >= self.next_stats_log {
                self.log_stats();
                self.next_stats_log = now + STATS_LOG;
            }
            self.renegotiate_pending(now);

            // 2. Timers.
            let due: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
                .map(|(i, _)| i)
                .collect();
            for i in due {
                if let Some(c) = self.conns.get_mut(i) {
                    if let Err(e) = c.pc.handle_timeout(now) {
                        tracing::debug!(conn = i, "handle_timeout: {e}");
                    }
                    c.deadline = None;
                    c.dirty = true;
                }
            }
            self.poll_keyframe_throttles(now);

            // 3. Service dirty connections until quiet, then send.
            self.service_dirty(now);
            self.flush();

            // 4. Wait for datagrams.
            let wait = self
                .conns
                .iter()
                .filter_map(|(_, c)| c.deadline)
                .chain(
                    self.tracks
                        .iter()
                        .filter_map(|(_, t)| t.keyframe.deadline()),
                )
                .min()
                .map_or(MAX_WAIT, |d| {
                    d.saturating_duration_since(Instant::now()).min(MAX_WAIT)
                });
            if !wait.is_zero() {
                poll_fd(self.sock.as_raw_fd(), libc::POLLIN, wait);
            }
            self.receive(&mut buf);
        }
    }

    fn receive(&mut self, buf: &mut [u8]) {
        for _ in 0..RECV_BATCH {
            let (n, src) = match self.sock.recv_from(buf) {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (e.g. port unreachable) surface here on Linux; not fatal.
                    tracing::debug!("recv_from: {e}");
                    continue;
                }
            };
            self.stats.datagrams_in += 1;
            let Some(datagram) = buf.get(..n) else {
                continue;
            };
            let Some(ci) = self.demux.route(datagram, src) else {
                self.stats.datagrams_unknown_source += 1;
                continue;
            };
            let now = Instant::now();
            let local_addr = self.local_addr;
            let Some(c) = self.conns.get_mut(ci) else {
                continue;
            };
            let msg = TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr,
                    peer_addr: src,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(datagram),
            };
            if let Err(e) = c.pc.handle_read(msg) {
                // Malformed or unexpected input from the network: drop it, keep the connection.
                tracing::debug!(conn = ci, "handle_read: {e}");
            }
            c.dirty = true;
        }
    }

    pub(crate) fn service_dirty(&mut self, now: Instant) {
        // Publishers' reads mark subscriber legs dirty; a few passes settle it.
        for _ in 0..4 {
            let dirty: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.dirty)
                .map(|(i, _)| i)
                .collect();
            if dirty.is_empty() {
                return;
            }
            for i in dirty {
                self.service(i, now);
            }
        }
    }

    fn service(&mut self, ci: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(ci) else {
            return;
        };
        c.dirty = false;
        let mut events = Vec::new();
        while let Some(ev) = c.pc.poll_event() {
            events.push(ev);
        }
        for ev in events {
            self.handle_event(ci, ev, now);
        }
        self.read_messages(ci, now);
        if let Some(c) = self.conns.get_mut(ci) {
            while let Some(m) = c.pc.poll_write() {
                self.out.push((m.transport.peer_addr, m.message));
            }
            c.deadline = c.pc.poll_timeout();
        }
    }

    fn handle_event(&mut self, ci: usize, ev: RTCPeerConnectionEvent, now: Instant) {
        match ev {
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.on_track_open(ci, init.receiver_id, init.ssrc, init.rid.as_deref(), now);
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(c) = self.conns.get_mut(ci) else {
                    return;
                };
                tracing::debug!(conn = ci, kind = ?c.kind, participant = %c.owner, ?state, "connection state");
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
                        self.peer_lost(&owner, LeaveReason::MediaFailed);
                    }
                    RTCPeerConnectionState::Disconnected => c.connected = false,
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Drain inbound RTP/RTCP of one connection: forward RTP, act on subscribers' feedback.
    fn read_messages(&mut self, ci: usize, now: Instant) {
        let mut rtp = std::mem::take(&mut self.rtp_scratch);
        let mut keyframe_tracks: Vec<usize> = Vec::new();
        {
            let Some(c) = self.conns.get_mut(ci) else {
                return;
            };
            while let Some(TaggedRTCMessage {
                now: read_at,
                message,
            }) = c.pc.poll_read()
            {
                match message {
                    RTCMessage::RtpPacket(_, pkt) if c.kind == PeerConnectionKind::Publisher => {
                        rtp.push((read_at, pkt))
                    }
                    RTCMessage::RtcpPacket(_, pkts) if c.kind == PeerConnectionKind::Subscriber => {
                        for p in &pkts {
                            let any = p.as_any();
                            let media_ssrcs: Vec<u32> =
                                if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                                    vec![pli.media_ssrc]
                                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                                    fir.fir.iter().map(|e| e.ssrc).collect()
                                } else {
                                    Vec::new()
                                };
                            for ssrc in media_ssrcs {
                                if let Some(&(_, t)) = c.outbound.iter().find(|(s, _)| *s == ssrc) {
                                    keyframe_tracks.push(t);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for t in keyframe_tracks {
            self.request_keyframe(t, now);
        }
        if !rtp.is_empty() {
            self.forward(ci, &mut rtp, now);
        }
        rtp.clear();
        self.rtp_scratch = rtp;
    }

    /// The hot path: one publisher's packets to every active leg of their tracks.
    fn forward(
        &mut self,
        ci: usize,
        rtp: &mut Vec<(Instant, rtc::rtp::packet::Packet)>,
        now: Instant,
    ) {
        let Worker {
            conns,
            tracks,
            rooms,
            stats,
            fwd_pending,
            ..
        } = self;
        for (read_at, mut pkt) in rtp.drain(..) {
            stats.rtp_in += 1;
            let Some(c) = conns.get(ci) else { return };
            let Some(&(_, ti, layer)) = c.inbound.iter().find(|(s, ..)| *s == pkt.header.ssrc)
            else {
                continue;
            };
            let Some(track) = tracks.get_mut(ti) else {
                continue;
            };
            if track.moderator_muted {
                continue; // a moderator muted this audio: not forwarded
            }
            track.rate.add(pkt.payload.len(), now);
            if let Some(id) = track.audio_level_ext {
                let level = pkt
                    .header
                    .get_extension(id)
                    .and_then(|ext| crate::speakers::parse_audio_level(&ext));
                if let (Some((level, voice)), Some(room)) = (level, rooms.get_mut(&track.room)) {
                    let selector = if track.host {
                        &mut room.host_speakers
                    } else {
                        &mut room.speakers
                    };
                    if !track.speaker_enrolled {
                        // First level from this track: it now competes for a slot.
                        track.speaker_enrolled = true;
                        selector.add(ti, now);
                        track.speaker_forward = track.host || selector.is_active(ti);
                    }
                    selector.observe(ti, level, voice, now);
                }
            }
            if !track.speaker_forward {
                // Not among the loudest speakers right now.
                track.route.legs.iter_mut().for_each(|l| l.seq.skip());
                continue;
            }
            let simulcast = track.layers.len() > 1;
            if let Some(l) = track.layers.get_mut(usize::from(layer)) {
                l.last_seen = Some(now);
                l.rate.add(pkt.payload.len(), now);
            }
            let publisher_pt = pkt.header.payload_type;
            let (in_seq, in_ts) = (pkt.header.sequence_number, pkt.header.timestamp);
            let TrackRoute {
                publisher_pts,
                legs,
            } = &mut track.route;
            let codec = publisher_pts.codec(publisher_pt);
            // Parse the payload only when a leg waits for a keyframe (a resume or a switch).
            let keyframe = legs
                .iter()
                .any(|l| l.needs_keyframe || l.layer != Some(l.target) || l.layer != Some(l.want))
                && codec.is_some_and(|c| crate::codec::is_keyframe(c, &pkt.payload));
            // Simulcast VP8: picture ids are rewritten per leg after a layer switch.
            let vp8 = if simulcast && codec == Some(crate::router::Codec::Vp8) {
                crate::codec::parse_vp8(&pkt.payload)
            } else {
                None
            };
            TrackRoute::prepare(&mut pkt.header);
            let mut copies = 0u32;
            for leg in legs.iter_mut() {
                if !leg.admit(layer, keyframe) {
                    continue;
                }
                let mut q = pkt.clone(); // payload is Bytes: a refcount, not a copy
                if rewrite_header(publisher_pts, leg, publisher_pt, &mut q.header).is_err() {
                    leg.seq.skip();
                    continue;
                }
                q.header.sequence_number = leg.seq.rewrite(in_seq);
                if simulcast {
                    q.header.timestamp = leg.ts.rewrite(in_ts, now, VIDEO_CLOCK_RATE);
                    if let Some(d) = &vp8 {
                        if let Some((id, tl0)) = d
                            .picture_id
                            .and_then(|pid| leg.pic.rewrite(pid, d.tl0_pic_idx))
                        {
                            // Only after a switch moved the ids: one copy for this leg.
                            let mut out = BytesMut::with_capacity(pkt.payload.len());
                            if crate::codec::rewrite_vp8_picture_id(
                                &pkt.payload,
                                d,
                                id,
                                tl0,
                                &mut out,
                            ) {
                                q.payload = out.freeze();
                            }
                        }
                    }
                }
                let Some(sub) = conns.get_mut(leg.conn) else {
                    continue;
                };
                match sub.pc.handle_write(TaggedRTCMessage {
                    now,
                    message: RTCMessage::RtpPacket(String::new(), q),
                }) {
                    Ok(()) => {
                        stats.rtp_out += 1;
                        copies += 1;
                    }
                    Err(e) => tracing::debug!(conn = leg.conn, "handle_write: {e}"),
                }
                sub.dirty = true;
            }
            if copies > 0 {
                fwd_pending.push(read_at);
            }
        }
    }

    /// The periodic `media stats` line: counters and the forwarding latency of the window.
    fn log_stats(&mut self) {
        let h = &self.fwd_latency;
        self.stats.fwd_latency_p50_us = h.quantile(0.5).unwrap_or(0);
        self.stats.fwd_latency_p99_us = h.quantile(0.99).unwrap_or(0);
        self.stats.fwd_latency_samples = h.count();
        if h.count() > 0 {
            tracing::info!(
                rtp_in = self.stats.rtp_in,
                rtp_out = self.stats.rtp_out,
                fwd_p50_us = self.stats.fwd_latency_p50_us,
                fwd_p99_us = self.stats.fwd_latency_p99_us,
                fwd_samples = h.count(),
                "media stats"
            );
        }
        self.fwd_latency.reset();
    }

    /// Ask the publisher of a video track for a keyframe, throttled per track.
    pub(crate) fn request_keyframe(&mut self, ti: usize, now: Instant) {
        let Some(track) = self.tracks.get_mut(ti) else {
            return;
        };
        if track.kind != rakor_proto::TrackKind::Video || !track.keyframe.request(now) {
            return;
        }
        self.send_pli(ti, now);
    }

    fn send_pli(&mut self, ti: usize, now: Instant) {
        let Some(track) = self.tracks.get(ti) else {
            return;
        };
        // A simulcast track: every layer is asked (a switch may be waiting on any of them).
        let ssrcs: Vec<u32> = if track.layers.len() > 1 {
            track.layers.iter().filter_map(|l| l.ssrc).collect()
        } else {
            track.media_ssrc.into_iter().collect()
        };
        let (receiver_id, pc_idx) = (track.receiver_id, track.publisher_conn);
        if ssrcs.is_empty() {
            return;
        }
        let Some(c) = self.conns.get_mut(pc_idx) else {
            return;
        };
        if let Some(mut receiver) = c.pc.rtp_receiver(receiver_id) {
            let plis: Vec<Box<dyn rtc::rtcp::Packet>> = ssrcs
                .into_iter()
                .map(|media_ssrc| {
                    Box::new(PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc,
                    }) as Box<dyn rtc::rtcp::Packet>
                })
                .collect();
            if let Err(e) = receiver.write_rtcp(now, plis) {
                tracing::debug!("write PLI: {e}");
            }
            c.dirty = true;
        }
    }

    fn poll_keyframe_throttles(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.keyframe.deadline().is_some_and(|d| d <= now))
            .map(|(i, _)| i)
            .collect();
        for ti in due {
            if self
                .tracks
                .get_mut(ti)
                .is_some_and(|t| t.keyframe.poll(now))
            {
                self.send_pli(ti, now);
            }
        }
    }

    /// Send every queued datagram.
    pub(crate) fn flush(&mut self) {
        let fd = self.sock.as_raw_fd();
        for (dst, data) in self.out.drain(..) {
            let mut tries = 0;
            loop {
                match self.sock.send_to(&data, dst) {
                    Ok(_) => {
                        self.stats.datagrams_out += 1;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock && tries < 3 => {
                        tries += 1;
                        poll_fd(fd, libc::POLLOUT, Duration::from_millis(5));
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.stats.send_errors += 1;
                        tracing::debug!(%dst, "send_to: {e}");
                        break;
                    }
                }
            }
        }
        if !self.fwd_pending.is_empty() {
            let done = Instant::now();
            for read_at in self.fwd_pending.drain(..) {
                self.fwd_latency
                    .record(done.saturating_duration_since(read_at));
            }
        }
    }

    pub(crate) fn stats_snapshot(&self) -> SfuStats {
        let mut s = self.stats.clone();
        s.rooms = self.rooms.len();
        s.participants = self.participants.len();
        s.connections = self.conns.len();
        s
    }

    fn shutdown(&mut self) {
        self.stopping = true;
        let ids: Vec<ParticipantId> = self.participants.keys().cloned().collect();
        tracing::info!(participants = ids.len(), "media worker shutting down");
        for id in ids {
            self.remove_participant(&id, LeaveReason::ServerShutdown, true);
        }
        self.end_all_parked();
        self.service_dirty(Instant::now());
        self.flush();
    }

    /// Close and forget a connection, flushing what its close produced.
    pub(crate) fn close_conn(&mut self, ci: usize) {
        let Some(mut c) = self.conns.remove(ci) else {
            return;
        };
        if let Err(e) = c.pc.close() {
            tracing::debug!(conn = ci, "close: {e}");
        }
        while let Some(m) = c.pc.poll_write() {
            self.out.push((m.transport.peer_addr, m.message));
        }
        self.demux.remove_conn(&c.ufrag, ci);
    }
}
