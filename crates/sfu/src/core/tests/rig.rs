//! The test rig, in the style of quinn-proto's `tests/util.rs` `Pair`: one [`Core`] and any
//! number of sites, each an in-memory client (the `rtc` crate's Sans-I/O peer connections,
//! [`ClientPeer`]) that answers the server's offers by itself. Datagrams pass in memory,
//! the clock is simulated and jumps to the next deadline: no sockets, no sleeps.

use crate::core::Core;
use crate::handle::{JoinRequest, Moderation, RoomEvent};
use crate::testkit::{ClientPeer, PublishSpec, SimClock};
use crate::SfuConfig;
use rakor_proto::{
    ClientMessage, LeaveReason, ParticipantId, PeerConnectionKind, ResumeRequest, Role,
    ServerMessage, TrackDeclaration, TrackId, TrackKind, TrackSource,
};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub const ROOM: &str = "rakor-test";
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7882);
/// Bound on delivery rounds per step (a step that does not settle is a bug).
const MAX_ROUNDS: usize = 10_000;

/// One participant's client: signalling queue and its two peer connections.
pub struct Site {
    pub identity: String,
    pub role: Role,
    pub id: ParticipantId,
    pub resume_token: String,
    events: UnboundedReceiver<ServerMessage>,
    /// Every message the server sent this site, in order.
    pub log: Vec<ServerMessage>,
    pub publisher: Option<ClientPeer>,
    pub subscriber: Option<ClientPeer>,
    /// Answer the server's subscriber offers by itself (false: hold them in `held_offers`).
    pub auto_answer: bool,
    pub held_offers: Vec<String>,
    /// Offers received (subscriber connection), with the tracks each listed.
    pub offers: Vec<Vec<TrackId>>,
    /// The signalling connection is closed (its events sender was dropped by the core).
    pub closed: bool,
    /// Its peer connections use ICE over TCP (set before publishing; see [`Rig::join_tcp`]).
    pub tcp: bool,
    n: u8,
    generation: u8,
}

impl Site {
    /// Messages since the last call.
    pub fn take(&mut self) -> Vec<ServerMessage> {
        std::mem::take(&mut self.log)
    }

    pub fn got(&self, f: impl Fn(&ServerMessage) -> bool) -> bool {
        self.log.iter().any(f)
    }

    pub fn addr(&self, pc: PeerConnectionKind) -> SocketAddr {
        let third = match pc {
            PeerConnectionKind::Publisher => 1,
            PeerConnectionKind::Subscriber => 2,
        } + 2 * self.generation;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, third, self.n)), 5000)
    }

    /// Packets received on the subscriber connection from the track `track` (by mid).
    pub fn received_from(&self, mid: &str) -> usize {
        self.subscriber
            .as_ref()
            .and_then(|s| s.received_on_mid(mid))
            .map_or(0, |(_, r)| r.packets.len())
    }
}

pub struct Rig {
    pub clock: SimClock,
    pub core: Core,
    pub sites: Vec<Site>,
    pub room_events: UnboundedReceiver<RoomEvent>,
    /// Addresses whose datagrams (both ways) are dropped.
    pub cut: HashSet<SocketAddr>,
    /// Drop every n-th datagram to these subscriber addresses (a lossy downlink).
    pub lossy: Option<(SocketAddr, usize)>,
    lossy_count: usize,
    /// Addresses whose STUN datagrams to the server are dropped (their media still arrives).
    pub stun_lost: HashSet<SocketAddr>,
    /// The next [`Rig::join`] asks for video on demand (see [`Rig::join_on_demand`]).
    on_demand: bool,
    /// Service input in bounded steps of this many forwarded copies
    /// ([`Core::flush_input_step`], as the shell does); 0: [`Core::flush_input`].
    pub step_copies: u64,
    /// With `step_copies`: the copies each step forwarded, in order.
    pub steps: Vec<u64>,
}

pub fn config() -> SfuConfig {
    SfuConfig {
        bind: SERVER,
        advertise_ips: vec![SERVER.ip()],
        ..SfuConfig::default()
    }
}

impl Rig {
    pub fn new() -> Self {
        Self::with(config())
    }

    pub fn with(cfg: SfuConfig) -> Self {
        let clock = SimClock::start();
        let (tx, room_events) = unbounded_channel();
        let core = Core::new(cfg, SERVER, Some(tx), clock.now(), SystemTime::UNIX_EPOCH);
        Rig {
            clock,
            core,
            sites: Vec::new(),
            room_events,
            cut: HashSet::new(),
            lossy: None,
            lossy_count: 0,
            stun_lost: HashSet::new(),
            on_demand: false,
            step_copies: 0,
            steps: Vec::new(),
        }
    }

    /// A site joins with `join.video_on_demand`. Returns its index.
    pub fn join_on_demand(&mut self, name: &str, role: Role) -> usize {
        self.on_demand = true;
        let i = self.join(name, role);
        self.on_demand = false;
        i
    }

    /// A site joins (identity `name`). Returns its index.
    pub fn join(&mut self, name: &str, role: Role) -> usize {
        let n = u8::try_from(self.sites.len() + 1).unwrap_or(u8::MAX);
        let (tx, events) = unbounded_channel();
        let id = self
            .core
            .join(
                self.clock.now(),
                JoinRequest {
                    room: ROOM.into(),
                    identity: name.into(),
                    name: name.into(),
                    role,
                    events: tx,
                    resume: None,
                    video_on_demand: self.on_demand,
                },
            )
            .unwrap_or_else(|e| panic!("join {name}: {e}"));
        self.sites.push(Site {
            identity: name.into(),
            role,
            id,
            resume_token: String::new(),
            events,
            log: Vec::new(),
            publisher: None,
            subscriber: None,
            auto_answer: true,
            held_offers: Vec::new(),
            offers: Vec::new(),
            closed: false,
            tcp: false,
            n,
            generation: 0,
        });
        let i = self.sites.len() - 1;
        self.settle();
        i
    }

    /// A site joins (identity `name`) whose peer connections will use ICE over TCP only.
    pub fn join_tcp(&mut self, name: &str, role: Role) -> usize {
        let i = self.join(name, role);
        self.sites[i].tcp = true;
        i
    }

    /// Site `i` joins again on a new signalling connection (and new peer connections), as a
    /// resume of its session (`resume`) or as a fresh join of the same identity.
    pub fn rejoin(
        &mut self,
        i: usize,
        resume: Option<bool>,
    ) -> Result<ParticipantId, crate::SfuError> {
        self.rejoin_after_chat(i, resume, None)
    }

    /// [`Rig::rejoin`], naming the last chat message the site has (`join.resume.last_chat_id`).
    pub fn rejoin_after_chat(
        &mut self,
        i: usize,
        resume: Option<bool>,
        last_chat_id: Option<String>,
    ) -> Result<ParticipantId, crate::SfuError> {
        let (tx, events) = unbounded_channel();
        let site = &mut self.sites[i];
        let req = JoinRequest {
            room: ROOM.into(),
            identity: site.identity.clone(),
            name: site.identity.clone(),
            role: site.role,
            events: tx,
            video_on_demand: false,
            resume: resume.map(|media_reset| ResumeRequest {
                participant_id: site.id.clone(),
                token: site.resume_token.clone(),
                media_reset,
                last_chat_id: last_chat_id.clone(),
            }),
        };
        site.events = events;
        site.closed = false;
        if resume != Some(false) {
            // New peer connections (fresh join or media reset).
            site.generation += 1;
            site.publisher = None;
            site.subscriber = None;
        }
        let r = self.core.join(self.clock.now(), req);
        if let Ok(id) = &r {
            self.sites[i].id = id.clone();
        }
        self.settle();
        r
    }

    /// Site `i` publishes these tracks (one offer).
    pub fn publish(&mut self, i: usize, spec: PublishSpec) {
        self.publish_as(i, spec, false);
    }

    /// Site `i` publishes these tracks (one offer); `screen`: its last video track (the
    /// simulcast one if any) is declared a screen share (`offer.tracks`).
    pub fn publish_as(&mut self, i: usize, spec: PublishSpec, screen: bool) {
        let now = self.clock.now();
        let addr = self.sites[i].addr(PeerConnectionKind::Publisher);
        let mut pc = ClientPeer::publisher(now, addr, spec).expect("publisher peer");
        pc.set_tcp(self.sites[i].tcp);
        let sdp = pc.offer(now).expect("offer");
        self.sites[i].publisher = Some(pc);
        let tracks = if screen {
            let mid = video_mids(&sdp).pop().expect("a video section");
            vec![TrackDeclaration {
                mid,
                source: TrackSource::Screen,
            }]
        } else {
            Vec::new()
        };
        self.send(
            i,
            ClientMessage::Offer {
                pc: PeerConnectionKind::Publisher,
                sdp,
                tracks,
            },
        );
    }

    /// Cap the estimate of site `i`'s subscriber connection (`None`: lift it).
    pub fn cap_estimate(&mut self, i: usize, bps: Option<f64>) {
        let id = self.sites[i].id.clone();
        let cell = self
            .core
            .participants
            .get(&id)
            .and_then(|p| p.sub_conn)
            .and_then(|ci| self.core.conns.get(ci))
            .and_then(|c| c.estimate.clone())
            .expect("a subscriber connection with an estimate");
        cell.set_cap(bps);
    }

    /// A client message from site `i`.
    pub fn send(&mut self, i: usize, msg: ClientMessage) {
        let id = self.sites[i].id.clone();
        self.core.client_message(self.clock.now(), &id, msg);
        self.settle();
    }

    /// The operator (or the server) moderates the room.
    pub fn moderate(&mut self, action: Moderation) -> Result<(), crate::SfuError> {
        let r = self.core.moderate(self.clock.now(), ROOM, action);
        self.settle();
        r
    }

    /// Site `i`'s signalling connection dropped.
    pub fn drop_signalling(&mut self, i: usize) {
        let id = self.sites[i].id.clone();
        self.core
            .disconnect(self.clock.now(), &id, LeaveReason::Disconnected, None);
        self.settle();
    }

    /// Cut (or restore) site `i`'s media path: its datagrams are lost both ways.
    pub fn cut_media(&mut self, i: usize, cut: bool) {
        for pc in [
            PeerConnectionKind::Publisher,
            PeerConnectionKind::Subscriber,
        ] {
            let a = self.sites[i].addr(pc);
            if cut {
                self.cut.insert(a);
            } else {
                self.cut.remove(&a);
            }
        }
    }

    /// Site `i` sends one audio packet with this level (dBov, 0 = loudest) and voice flag.
    pub fn audio(&mut self, i: usize, level: u8) {
        let now = self.clock.now();
        if let Some(p) = self.sites[i].publisher.as_mut() {
            p.send_audio(now, level, true).expect("send audio");
        }
        self.settle();
    }

    /// Site `i` sends one VP8 frame on its single video track (`layer` None) or a simulcast
    /// layer.
    pub fn video(&mut self, i: usize, keyframe: bool, layer: Option<usize>) {
        let now = self.clock.now();
        if let Some(p) = self.sites[i].publisher.as_mut() {
            p.send_vp8(now, keyframe, layer).expect("send vp8");
        }
        self.settle();
    }

    /// Site `i` sends `n` audio packets and `n` VP8 frames before any is delivered: the core
    /// reads them as one batch.
    pub fn burst(&mut self, i: usize, n: usize) {
        let now = self.clock.now();
        if let Some(p) = self.sites[i].publisher.as_mut() {
            for _ in 0..n {
                p.send_audio(now, 30, true).expect("send audio");
                p.send_vp8(now, false, None).expect("send vp8");
            }
        }
        self.settle();
    }

    /// Run for `d` of simulated time: timers fire, the clock jumps from deadline to deadline.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.clock.now() + d;
        self.run_until(end);
    }

    pub fn run_until(&mut self, end: Instant) {
        for _ in 0..MAX_ROUNDS {
            self.settle();
            let next = self.next_deadline().map_or(end, |t| t.min(end));
            if next > self.clock.now() {
                self.clock.advance_to(next);
            }
            self.fire_timers();
            if self.clock.now() >= end {
                self.settle();
                return;
            }
        }
        panic!("run_until did not reach its end");
    }

    /// Run (in 20 ms steps of media from `media`) until `cond` holds or `limit` passes.
    pub fn run_while_sending(
        &mut self,
        limit: Duration,
        mut media: impl FnMut(&mut Rig, u64),
        cond: impl Fn(&Rig) -> bool,
    ) -> bool {
        let end = self.clock.now() + limit;
        let mut tick = 0u64;
        while self.clock.now() < end {
            media(self, tick);
            tick += 1;
            self.run_for(Duration::from_millis(20));
            if cond(self) {
                return true;
            }
        }
        false
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let mut t = self.core.poll_timeout();
        for s in &mut self.sites {
            for pc in [s.publisher.as_mut(), s.subscriber.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(d) = pc.poll_timeout() {
                    t = Some(t.map_or(d, |t| t.min(d)));
                }
            }
        }
        t
    }

    fn fire_timers(&mut self) {
        let now = self.clock.now();
        if self.core.poll_timeout().is_some_and(|d| d <= now) {
            self.core.handle_timeout(now);
        }
        for s in &mut self.sites {
            for pc in [s.publisher.as_mut(), s.subscriber.as_mut()]
                .into_iter()
                .flatten()
            {
                if pc.poll_timeout().is_some_and(|d| d <= now) {
                    let _ = pc.handle_timeout(now);
                }
            }
        }
    }

    /// Deliver signalling and datagrams until everything is quiet (at the current instant).
    pub fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let a = self.signalling();
            let b = self.datagrams();
            if !a && !b {
                return;
            }
        }
        panic!("the rig did not settle");
    }

    /// Read each site's server messages and act on them as a client would. True if any.
    fn signalling(&mut self) -> bool {
        let now = self.clock.now();
        let mut any = false;
        let mut answers: Vec<(usize, String)> = Vec::new();
        for (i, s) in self.sites.iter_mut().enumerate() {
            loop {
                let msg = match s.events.try_recv() {
                    Ok(m) => m,
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        s.closed = true;
                        break;
                    }
                };
                any = true;
                match &msg {
                    ServerMessage::Joined {
                        resume_token,
                        participant_id,
                        ..
                    } => {
                        s.resume_token = resume_token.clone();
                        s.id = participant_id.clone();
                    }
                    ServerMessage::Answer {
                        pc: PeerConnectionKind::Publisher,
                        sdp,
                    } => {
                        if let Some(p) = s.publisher.as_mut() {
                            p.apply_answer(now, sdp).expect("apply answer");
                        }
                    }
                    ServerMessage::Offer {
                        pc: PeerConnectionKind::Subscriber,
                        sdp,
                        tracks,
                    } => {
                        s.offers
                            .push(tracks.iter().map(|t| t.track_id.clone()).collect());
                        if s.auto_answer {
                            let addr = s.addr(PeerConnectionKind::Subscriber);
                            let tcp = s.tcp;
                            let sub = match s.subscriber.as_mut() {
                                Some(sub) => sub,
                                None => s.subscriber.insert({
                                    let mut pc =
                                        ClientPeer::subscriber(now, addr).expect("subscriber peer");
                                    pc.set_tcp(tcp);
                                    pc
                                }),
                            };
                            answers.push((i, sub.apply_offer(now, sdp).expect("apply offer")));
                        } else {
                            s.held_offers.push(sdp.clone());
                        }
                    }
                    _ => {}
                }
                s.log.push(msg);
            }
        }
        for (i, sdp) in answers {
            let id = self.sites[i].id.clone();
            self.core.client_message(
                now,
                &id,
                ClientMessage::Answer {
                    pc: PeerConnectionKind::Subscriber,
                    sdp,
                },
            );
        }
        any
    }

    /// Answer the held offers of site `i` (after `auto_answer` was off).
    pub fn answer_held(&mut self, i: usize) {
        let now = self.clock.now();
        let offers = std::mem::take(&mut self.sites[i].held_offers);
        for sdp in offers {
            let s = &mut self.sites[i];
            let addr = s.addr(PeerConnectionKind::Subscriber);
            let tcp = s.tcp;
            let sub = match s.subscriber.as_mut() {
                Some(sub) => sub,
                None => s.subscriber.insert({
                    let mut pc = ClientPeer::subscriber(now, addr).expect("subscriber peer");
                    pc.set_tcp(tcp);
                    pc
                }),
            };
            let answer = sub.apply_offer(now, &sdp).expect("apply offer");
            self.send(
                i,
                ClientMessage::Answer {
                    pc: PeerConnectionKind::Subscriber,
                    sdp: answer,
                },
            );
        }
    }

    /// Move datagrams between the clients and the core. True if any moved.
    /// One round of datagrams both ways: the clients' to the core (one batch, serviced), the
    /// core's to the clients. True if any moved.
    pub fn datagrams(&mut self) -> bool {
        let now = self.clock.now();
        let mut any = false;
        for s in &mut self.sites {
            for pc in [s.publisher.as_mut(), s.subscriber.as_mut()]
                .into_iter()
                .flatten()
            {
                let from = pc.addr();
                let tcp = pc.is_tcp();
                while let Some((dst, d)) = pc.poll_transmit() {
                    any = true;
                    // STUN's first byte is 0 or 1 (RFC 7983); DTLS and SRTP differ.
                    let stun_lost =
                        self.stun_lost.contains(&from) && d.first().is_some_and(|b| *b < 2);
                    if dst == SERVER && !self.cut.contains(&from) && !stun_lost {
                        if tcp {
                            // The stream is named by the client's address; it arrives at our
                            // passive candidate (the media port).
                            self.core.handle_stream_packet(now, SERVER, from, &d);
                        } else {
                            self.core.handle_datagram(now, from, &d);
                        }
                    }
                }
            }
        }
        if self.step_copies == 0 {
            self.core.flush_input(now);
        } else {
            loop {
                let before = self.core.stats.rtp_out;
                let left = self.core.flush_input_step(now, self.step_copies);
                self.steps.push(self.core.stats.rtp_out - before);
                if !left {
                    break;
                }
            }
            self.core.flush_input(now);
        }
        let out: Vec<crate::core::Transmit> = self.core.drain_transmits().collect();
        self.core.drain_forwarded().for_each(drop);
        for t in out {
            any = true;
            if self.cut.contains(&t.dst) {
                continue;
            }
            if let Some((addr, every)) = self.lossy {
                if t.dst == addr {
                    self.lossy_count += 1;
                    if self.lossy_count.is_multiple_of(every) {
                        continue;
                    }
                }
            }
            for s in &mut self.sites {
                for pc in [s.publisher.as_mut(), s.subscriber.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    let by_tcp = t.transport == crate::demux::Transport::Tcp;
                    if pc.addr() == t.dst && pc.is_tcp() == by_tcp {
                        let _ = pc.handle_datagram(now, SERVER, t.data.clone());
                    }
                }
            }
        }
        any
    }

    /// Attendance events so far.
    pub fn room_events(&mut self) -> Vec<RoomEvent> {
        let mut v = Vec::new();
        while let Ok(e) = self.room_events.try_recv() {
            v.push(e);
        }
        v
    }

    /// The track ids site `by` published, by kind, oldest first (from its own log: the room's
    /// `track_published` reaches the publisher too).
    pub fn published(&self, by: usize, kind: TrackKind) -> Vec<TrackId> {
        let id = &self.sites[by].id;
        self.sites[by]
            .log
            .iter()
            .filter_map(|m| match m {
                ServerMessage::TrackPublished {
                    participant_id,
                    track,
                } if participant_id == id && track.kind == kind => Some(track.id.clone()),
                _ => None,
            })
            .fold(Vec::new(), |mut v, t| {
                if !v.contains(&t) {
                    v.push(t);
                }
                v
            })
    }

    /// The mid site `sub` receives track `track` on (from the offers' track lists).
    pub fn mid_of(&self, sub: usize, track: &TrackId) -> Option<String> {
        self.sites[sub].log.iter().rev().find_map(|m| match m {
            ServerMessage::Offer { tracks, .. } => tracks
                .iter()
                .find(|t| &t.track_id == track)
                .map(|t| t.mid.clone()),
            _ => None,
        })
    }

    /// Whether both of site `i`'s peer connections that exist are connected.
    pub fn connected(&self, i: usize) -> bool {
        let s = &self.sites[i];
        s.publisher.as_ref().is_none_or(|p| p.is_connected())
            && s.subscriber.as_ref().is_none_or(|p| p.is_connected())
    }
}

/// The mids of an SDP's video sections, in order.
pub fn video_mids(sdp: &str) -> Vec<String> {
    let mut mids = Vec::new();
    let mut video = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            video = m.starts_with("video");
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            if video {
                mids.push(mid.trim().to_owned());
            }
        }
    }
    mids
}
