//! The signalling side's handle to the media worker: commands in, events out.

use crate::{shell, SfuConfig, SfuError};
use rakor_proto::{
    ClientMessage, LeaveReason, ParticipantId, PresentationEnd, Role, ServerMessage, TrackId,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Where the worker sends a participant's server messages. When the worker drops it (after a
/// final `leave` or `error`), the signalling connection closes.
pub type EventSender = tokio::sync::mpsc::UnboundedSender<ServerMessage>;

/// Names one signalling connection of a participant without keeping it open: a weak handle
/// to the [`EventSender`] given in its [`JoinRequest`] (see [`SfuHandle::disconnect_conn`]).
pub type ConnRef = tokio::sync::mpsc::WeakUnboundedSender<ServerMessage>;

/// A request to join a room, made by signalling after the token was verified.
#[derive(Debug)]
pub struct JoinRequest {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub events: EventSender,
    /// Continue an earlier session of this identity (`join.resume`: participant id, resume
    /// token, media reset). If it is gone, the join proceeds as a new session
    /// (`joined.resumed` = false).
    pub resume: Option<rakor_proto::ResumeRequest>,
    /// `join.video_on_demand`: other participants' video joins this participant's subscriber
    /// connection only when it asks (`track_settings {visible: true}`; `core/dynacast.rs`).
    pub video_on_demand: bool,
}

/// What a moderator (the session manager's operator, or the host) does to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moderation {
    /// Stop (or resume) forwarding a participant's audio, and tell it.
    MuteAudio {
        participant: ParticipantId,
        muted: bool,
    },
    /// Remove a participant: it gets `leave {reason: "removed"}`.
    Remove { participant: ParticipantId },
    /// Set or clear the spotlight.
    Spotlight { participant: Option<ParticipantId> },
    /// End the meeting: everyone gets `leave {reason: "room_ended"}`.
    EndRoom,
    /// Give the floor: lift the participant's moderator mute, spotlight it, lower its hand.
    /// `by_name`: who gave it, for the record (`None`: "operator"; a cascade node names the
    /// host of the owner's `floor_given`).
    GiveFloor {
        participant: ParticipantId,
        by_name: Option<String>,
    },
    /// Stop the room's presentation (the presenter gets `presentation_stopped`); none →
    /// [`crate::SfuError::NoPresentation`].
    StopPresentation,
    /// Cascade: the room owner's recent chat (to the room only, oldest first), for a node whose
    /// relay leg started after it. Kept as this room's recent history when the room has no chat
    /// here yet (otherwise ignored: a restarted leg brings nothing twice) and sent to everyone
    /// here now as `chat_history`; not reported for the record (the sender's node stored it).
    SeedChat {
        messages: Vec<rakor_proto::ChatEntry>,
    },
}

/// What happened in a room, for the rakor's record (the timeline of
/// [`RoomEvent::Timeline`]). Stored by its [`TimelineKind::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineKind {
    HandRaised,
    HandLowered,
    FloorGiven,
    SpotlightSet,
    SpotlightCleared,
    PresentationStarted,
    PresentationStopped,
    RecordingStarted,
    RecordingStopped,
}

impl TimelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::HandRaised => "hand_raised",
            TimelineKind::HandLowered => "hand_lowered",
            TimelineKind::FloorGiven => "floor_given",
            TimelineKind::SpotlightSet => "spotlight_set",
            TimelineKind::SpotlightCleared => "spotlight_cleared",
            TimelineKind::PresentationStarted => "presentation_started",
            TimelineKind::PresentationStopped => "presentation_stopped",
            TimelineKind::RecordingStarted => "recording_started",
            TimelineKind::RecordingStopped => "recording_stopped",
        }
    }
}

/// Who a timeline event or a chat message is about: a participant of the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub participant: ParticipantId,
    pub identity: String,
    pub name: String,
}

/// Membership changes (attendance), chat and the room's timeline (the rakor's record). Sent on the channel given to [`Sfu::start_with_events`].
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    Joined {
        room: String,
        participant: ParticipantId,
        identity: String,
        name: String,
        role: Role,
        at: std::time::SystemTime,
    },
    Left {
        room: String,
        participant: ParticipantId,
        identity: String,
        reason: LeaveReason,
        at: std::time::SystemTime,
    },
    /// A chat message the server accepted and delivered (refused ones are never reported).
    Chat {
        room: String,
        id: String,
        from: Subject,
        /// A private message from the host: its addressee.
        to: Option<Subject>,
        text: String,
        at: std::time::SystemTime,
    },
    /// A hand, the floor, the spotlight (and, from other modules, presentations, recordings).
    Timeline {
        room: String,
        kind: TimelineKind,
        /// Whom it is about (none for `spotlight_cleared`).
        subject: Option<Subject>,
        /// Who did it: a participant's name, `"operator"`, or none (the participant itself or
        /// the server).
        by: Option<String>,
        /// Anything more, stored as is (e.g. `left` for a hand that went down as its site left).
        detail: Option<String>,
        at: std::time::SystemTime,
    },
    /// `participant` started presenting (its screen track `track` became the room's
    /// presentation).
    PresentationStarted {
        room: String,
        participant: ParticipantId,
        identity: String,
        track: TrackId,
        at: std::time::SystemTime,
    },
    /// The presentation of `participant` ended: it unpublished (or left), a host or operator
    /// stopped it, or a host took over. `by`: the host who stopped it or took over (`None`:
    /// the presenter itself, or an operator through the API).
    PresentationStopped {
        room: String,
        participant: ParticipantId,
        identity: String,
        track: TrackId,
        reason: PresentationEnd,
        by: Option<ParticipantId>,
        at: std::time::SystemTime,
    },
    /// A recording's files are closed and its manifest final (`failed`: why it stopped on
    /// its own). The server makes the composite from here.
    RecordingFinished {
        room: String,
        dir: std::path::PathBuf,
        failed: Option<String>,
    },
}

/// Counters of the worker, for metrics and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct SfuStats {
    pub rooms: usize,
    pub participants: usize,
    pub connections: usize,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub datagrams_unknown_source: u64,
    pub send_errors: u64,
    /// Datagrams the kernel dropped on the media sockets because their receive buffer was
    /// full (the worker did not read fast enough; `media.socket_buffer_bytes`).
    pub socket_drops: u64,
    /// ICE-TCP: streams open now, frames read, frames that routed nowhere, frames dropped
    /// because a stream's write buffer was full, and streams refused or closed by a limit
    /// (too many, a malformed frame, nothing valid in time).
    pub tcp_streams: usize,
    pub tcp_frames_in: u64,
    pub tcp_frames_unknown_source: u64,
    pub tcp_frames_dropped: u64,
    pub tcp_streams_refused: u64,
    /// Forwarding latency (socket read → end of the send batch) over the last 10 s window
    /// with traffic: median, 99th percentile (µs) and packets measured.
    pub fwd_latency_p50_us: u64,
    pub fwd_latency_p99_us: u64,
    pub fwd_latency_samples: u64,
    /// Recording: rooms recording now, packets handed to the recorder thread, packets dropped
    /// because its channel was full, frames written, the recorder thread's CPU time (µs).
    pub recording_rooms: usize,
    pub rec_packets_handed: u64,
    pub rec_packets_dropped: u64,
    pub rec_frames_written: u64,
    pub rec_thread_cpu_us: u64,
    /// The media thread's CPU time (µs), for benchmarks.
    pub media_thread_cpu_us: u64,
}

pub(crate) enum Command {
    Moderate {
        room: String,
        action: Moderation,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    RoomInfo {
        room: String,
        reply: oneshot::Sender<Option<RoomSnapshot>>,
    },
    Join {
        req: JoinRequest,
        reply: oneshot::Sender<Result<ParticipantId, SfuError>>,
    },
    Client {
        participant: ParticipantId,
        msg: ClientMessage,
    },
    Disconnect {
        participant: ParticipantId,
        reason: LeaveReason,
        /// The connection that ended; `None`: whichever is attached.
        conn: Option<ConnRef>,
    },
    Stats {
        reply: oneshot::Sender<SfuStats>,
    },
    AdoptTcp {
        sock: std::net::TcpStream,
        peer: SocketAddr,
        candidate_port: u16,
    },
    Recording {
        room: String,
        start: bool,
        reply: oneshot::Sender<Result<Option<std::time::SystemTime>, crate::RecordingError>>,
    },
    RecordingStatus {
        room: String,
        reply: oneshot::Sender<Option<crate::RecordingStatus>>,
    },
    Recorder(crate::record::RecFeedback),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Who is in a room now.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSnapshot {
    pub participants: Vec<rakor_proto::ParticipantInfo>,
    pub spotlight: Option<ParticipantId>,
    /// Participants whose audio a moderator muted.
    pub moderator_muted: Vec<ParticipantId>,
    /// Raised hands, in the order they went up.
    pub hands: Vec<rakor_proto::RaisedHand>,
    /// The room's presentation (its one screen share), if any.
    pub presentation: Option<rakor_proto::Presentation>,
}

/// One media worker as signalling sees it.
struct Worker {
    /// Commands; each send also wakes the worker's `poll` ([`crate::wake`]).
    tx: crate::wake::CommandTx,
    media_addr: SocketAddr,
}

/// Cheap to clone; every signalling connection holds one. With several media workers
/// (`SfuConfig::workers`) it routes each command to the worker that owns its room
/// ([`crate::workers`]); a participant's own messages go through a handle pinned to its room's
/// worker ([`SfuHandle::for_room`]).
#[derive(Clone)]
pub struct SfuHandle {
    workers: Arc<[Worker]>,
    placement: Arc<crate::workers::Placement>,
    /// A handle pinned to one worker (the room of the participant using it).
    pinned: Option<usize>,
}

/// The running media core.
pub struct Sfu;

impl Sfu {
    /// Bind the media socket(s) and start the worker thread(s).
    pub fn start(config: SfuConfig) -> Result<(SfuHandle, std::thread::JoinHandle<()>), SfuError> {
        Self::start_with_events(config, None)
    }

    /// Like [`Sfu::start`], and report joins and leaves on `events` (attendance). With
    /// `config.workers` > 1, one worker thread per worker, each with its own socket on port
    /// `config.bind.port() + index` (all OS-picked for port 0); the returned thread joins
    /// them all.
    pub fn start_with_events(
        config: SfuConfig,
        events: Option<tokio::sync::mpsc::UnboundedSender<RoomEvent>>,
    ) -> Result<(SfuHandle, std::thread::JoinHandle<()>), SfuError> {
        let n = config.workers.clamp(1, crate::workers::MAX_WORKERS);
        let placement = Arc::new(crate::workers::Placement::new(n, config.max_rooms));
        let mut workers = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for index in 0..n {
            let mut cfg = config.clone();
            cfg.workers = n;
            cfg.worker_index = index;
            if config.bind.port() != 0 {
                let port = usize::from(config.bind.port()) + index;
                let port = u16::try_from(port).map_err(|_| SfuError::Bind {
                    addr: config.bind,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("media port + {index} is above 65535"),
                    ),
                })?;
                cfg.bind.set_port(port);
            }
            let (tx, rx, wake) = crate::wake::CommandTx::channel();
            let recorder = match &cfg.recording {
                Some(settings) => {
                    let feedback = tx.clone();
                    let outlets = crate::record::recorder::Outlets {
                        feedback: Box::new(move |fb| {
                            let _ = feedback.send(Command::Recorder(fb));
                        }),
                        events: events.clone(),
                    };
                    let spawned = crate::record::spawn(settings.clone(), outlets).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("recordings directory {}: {e}", settings.dir.display()),
                        )
                    })?;
                    Some(spawned)
                }
                None => None,
            };
            let spawned = shell::spawn(
                cfg,
                rx,
                wake,
                events.clone(),
                recorder,
                Arc::clone(&placement),
            );
            let (media_addr, join) = match spawned {
                Ok(v) => v,
                Err(e) => {
                    // Stop the workers already running (dropping their channels ends them).
                    drop(workers);
                    for t in threads {
                        let _ = std::thread::JoinHandle::join(t);
                    }
                    return Err(e);
                }
            };
            workers.push(Worker { tx, media_addr });
            threads.push(join);
        }
        let join = if threads.len() == 1 {
            threads.pop().ok_or(SfuError::WorkerGone)?
        } else {
            std::thread::Builder::new()
                .name("rakor-media-join".into())
                .spawn(move || {
                    for t in threads {
                        let _ = t.join();
                    }
                })?
        };
        Ok((
            SfuHandle {
                workers: workers.into(),
                placement,
                pinned: None,
            },
            join,
        ))
    }
}

impl SfuHandle {
    /// The first worker's media socket address (the only one with one worker).
    pub fn media_addr(&self) -> SocketAddr {
        self.workers
            .first()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |w| w.media_addr)
    }

    /// Every worker's media socket address, by worker index.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.media_addr).collect()
    }

    /// How many media workers run.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The worker that owns `room` now (None: not placed, i.e. nobody is in it).
    pub fn worker_of_room(&self, room: &str) -> Option<usize> {
        self.placement.get(room)
    }

    /// Rooms per worker (placed and not yet forgotten).
    pub fn rooms_per_worker(&self) -> Vec<usize> {
        self.placement.rooms_per_worker()
    }

    /// A handle pinned to the worker of `room` (placing the room if it is new): signalling
    /// uses it for a participant's join and then its messages and its disconnect. A new room
    /// when all workers together hold `max_rooms` → [`SfuError::TooManyRooms`].
    pub fn for_room(&self, room: &str) -> Result<SfuHandle, SfuError> {
        let w = self.placement.place(room, std::time::Instant::now())?;
        Ok(SfuHandle {
            workers: Arc::clone(&self.workers),
            placement: Arc::clone(&self.placement),
            pinned: Some(w),
        })
    }

    fn worker(&self, index: usize) -> Result<&Worker, SfuError> {
        self.workers.get(index).ok_or(SfuError::WorkerGone)
    }

    fn send_to(&self, index: usize, cmd: Command) -> Result<(), SfuError> {
        self.worker(index)?
            .tx
            .send(cmd)
            .map_err(|_| SfuError::WorkerGone)
    }

    /// The worker for a command about `room`: the pinned one, else where the room is placed
    /// (`place`: place it if new), else the first (which answers "no such room").
    fn room_worker(&self, room: &str, place: bool) -> Result<usize, SfuError> {
        if let Some(w) = self.pinned {
            return Ok(w);
        }
        if place {
            return self.placement.place(room, std::time::Instant::now());
        }
        Ok(self.placement.get(room).unwrap_or(0))
    }

    /// A command about one participant: to the pinned worker, else to every worker (the
    /// others do not know the participant and ignore it).
    fn participant_command(&self, make: impl Fn() -> Command) -> Result<(), SfuError> {
        match self.pinned {
            Some(w) => self.send_to(w, make()),
            None => {
                let mut any = false;
                for w in self.workers.iter() {
                    any |= w.tx.send(make()).is_ok();
                }
                if any {
                    Ok(())
                } else {
                    Err(SfuError::WorkerGone)
                }
            }
        }
    }

    /// Join a room. On success the worker has already queued `joined` (and any subscriber
    /// offer) on `req.events`.
    pub async fn join(&self, req: JoinRequest) -> Result<ParticipantId, SfuError> {
        let (reply, rx) = oneshot::channel();
        let w = self.room_worker(&req.room, true)?;
        self.send_to(w, Command::Join { req, reply })?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Hand a client message (after `join`) to the worker. Errors come back as `error` events.
    /// Use a handle from [`SfuHandle::for_room`] with several workers (an unpinned handle
    /// sends a copy to each).
    pub fn client_message(
        &self,
        participant: ParticipantId,
        msg: ClientMessage,
    ) -> Result<(), SfuError> {
        if let Some(w) = self.pinned.or((self.workers.len() == 1).then_some(0)) {
            return self.send_to(w, Command::Client { participant, msg });
        }
        self.participant_command(|| Command::Client {
            participant: participant.clone(),
            msg: msg.clone(),
        })
    }

    /// The signalling connection of a participant ended.
    pub fn disconnect(&self, participant: ParticipantId, reason: LeaveReason) {
        let _ = self.participant_command(|| Command::Disconnect {
            participant: participant.clone(),
            reason,
            conn: None,
        });
    }

    /// The signalling connection `conn` (made with `events.downgrade()` from its
    /// [`JoinRequest`]) of a participant ended. Ignored if the participant has resumed on
    /// another connection meanwhile, so a late report from the old one cannot suspend it.
    pub fn disconnect_conn(&self, participant: ParticipantId, reason: LeaveReason, conn: ConnRef) {
        let _ = self.participant_command(|| Command::Disconnect {
            participant: participant.clone(),
            reason,
            conn: Some(conn.clone()),
        });
    }

    /// Hand an ICE-TCP stream accepted on another listener (the HTTPS port's one-port demux)
    /// to the worker, which serves it like a stream accepted on the media TCP listener: RFC
    /// 4571 frames, routed by ICE ufrag, closed on a malformed frame or when no authenticated
    /// check binds it in time. Nothing of the stream may have been read (peeked is fine).
    /// `candidate_port` is the port of the passive TCP candidate it belongs to
    /// ([`SfuConfig::extra_tcp_port`](crate::SfuConfig::extra_tcp_port)). The socket may be
    /// blocking; the worker makes it non-blocking. Without `ice_tcp` it is closed. With
    /// several workers use [`SfuHandle::adopt_tcp_stream_framed`] (this goes to the first).
    pub fn adopt_tcp_stream(
        &self,
        sock: std::net::TcpStream,
        peer: SocketAddr,
        candidate_port: u16,
    ) -> Result<(), SfuError> {
        self.send_to(
            0,
            Command::AdoptTcp {
                sock,
                peer,
                candidate_port,
            },
        )
    }

    /// [`SfuHandle::adopt_tcp_stream`] to the worker that owns the connection the stream's
    /// first STUN message (`first_stun`, the first RFC 4571 frame's payload, peeked) is for:
    /// the tag at the start of the server ufrag in its USERNAME ([`crate::workers`]). No
    /// USERNAME or an unknown tag: the first worker, which closes the stream when its first
    /// frame routes nowhere.
    pub fn adopt_tcp_stream_framed(
        &self,
        sock: std::net::TcpStream,
        peer: SocketAddr,
        candidate_port: u16,
        first_stun: &[u8],
    ) -> Result<(), SfuError> {
        let w = crate::demux::stun_local_ufrag(first_stun)
            .and_then(crate::workers::worker_of_ufrag)
            .filter(|w| *w < self.workers.len())
            .unwrap_or(0);
        self.send_to(
            w,
            Command::AdoptTcp {
                sock,
                peer,
                candidate_port,
            },
        )
    }

    /// Worker counters, summed over the workers ([`crate::workers::sum_stats`]).
    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        Ok(crate::workers::sum_stats(&self.stats_per_worker().await?))
    }

    /// Each worker's counters, by worker index.
    pub async fn stats_per_worker(&self) -> Result<Vec<SfuStats>, SfuError> {
        let mut replies = Vec::with_capacity(self.workers.len());
        for w in self.workers.iter() {
            let (reply, rx) = oneshot::channel();
            w.tx.send(Command::Stats { reply })
                .map_err(|_| SfuError::WorkerGone)?;
            replies.push(rx);
        }
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(rx.await.map_err(|_| SfuError::WorkerGone)?);
        }
        Ok(out)
    }

    /// Moderate a room (operator or host action). Unknown room or participant →
    /// [`SfuError::UnknownParticipant`] / [`SfuError::UnknownRoom`].
    pub async fn moderate(&self, room: &str, action: Moderation) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send_to(
            self.room_worker(room, false)?,
            Command::Moderate {
                room: room.to_owned(),
                action,
                reply,
            },
        )?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Start (`start`) or stop recording `room`. A start returns when it began.
    pub async fn recording(
        &self,
        room: &str,
        start: bool,
    ) -> Result<Result<Option<std::time::SystemTime>, crate::RecordingError>, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send_to(
            self.room_worker(room, start)?,
            Command::Recording {
                room: room.to_owned(),
                start,
                reply,
            },
        )?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// Whether `room` is being recorded now.
    pub async fn recording_status(
        &self,
        room: &str,
    ) -> Result<Option<crate::RecordingStatus>, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send_to(
            self.room_worker(room, false)?,
            Command::RecordingStatus {
                room: room.to_owned(),
                reply,
            },
        )?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// Who is in `room` now (None if nobody).
    pub async fn room_info(&self, room: &str) -> Result<Option<RoomSnapshot>, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send_to(
            self.room_worker(room, false)?,
            Command::RoomInfo {
                room: room.to_owned(),
                reply,
            },
        )?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// Tell every participant `leave {reason: server_shutdown}`, close all connections and stop
    /// every worker. Returns when the workers have done so.
    pub async fn shutdown(&self) {
        let mut replies = Vec::with_capacity(self.workers.len());
        for w in self.workers.iter() {
            let (reply, rx) = oneshot::channel();
            if w.tx.send(Command::Shutdown { reply }).is_ok() {
                replies.push(rx);
            }
        }
        for rx in replies {
            let _ = rx.await;
        }
    }
}
