//! The signalling side's handle to the media worker: commands in, events out.

use crate::{shell, SfuConfig, SfuError};
use rakor_proto::{
    ClientMessage, LeaveReason, ParticipantId, PresentationEnd, Role, ServerMessage, TrackId,
};
use std::net::SocketAddr;
use std::sync::mpsc;
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
    GiveFloor { participant: ParticipantId },
    /// Stop the room's presentation (the presenter gets `presentation_stopped`); none →
    /// [`crate::SfuError::NoPresentation`].
    StopPresentation,
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

/// Cheap to clone; every signalling connection holds one.
#[derive(Clone)]
pub struct SfuHandle {
    tx: mpsc::Sender<Command>,
    media_addr: SocketAddr,
}

/// The running media core.
pub struct Sfu;

impl Sfu {
    /// Bind the media socket and start the worker thread.
    pub fn start(config: SfuConfig) -> Result<(SfuHandle, std::thread::JoinHandle<()>), SfuError> {
        Self::start_with_events(config, None)
    }

    /// Like [`Sfu::start`], and report joins and leaves on `events` (attendance).
    pub fn start_with_events(
        config: SfuConfig,
        events: Option<tokio::sync::mpsc::UnboundedSender<RoomEvent>>,
    ) -> Result<(SfuHandle, std::thread::JoinHandle<()>), SfuError> {
        let (tx, rx) = mpsc::channel();
        let recorder = match &config.recording {
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
        let (media_addr, join) = shell::spawn(config, rx, events, recorder)?;
        Ok((SfuHandle { tx, media_addr }, join))
    }
}

impl SfuHandle {
    /// The bound media socket address.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Join a room. On success the worker has already queued `joined` (and any subscriber
    /// offer) on `req.events`.
    pub async fn join(&self, req: JoinRequest) -> Result<ParticipantId, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Join { req, reply })
            .map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Hand a client message (after `join`) to the worker. Errors come back as `error` events.
    pub fn client_message(
        &self,
        participant: ParticipantId,
        msg: ClientMessage,
    ) -> Result<(), SfuError> {
        self.tx
            .send(Command::Client { participant, msg })
            .map_err(|_| SfuError::WorkerGone)
    }

    /// The signalling connection of a participant ended.
    pub fn disconnect(&self, participant: ParticipantId, reason: LeaveReason) {
        let _ = self.tx.send(Command::Disconnect {
            participant,
            reason,
            conn: None,
        });
    }

    /// The signalling connection `conn` (made with `events.downgrade()` from its
    /// [`JoinRequest`]) of a participant ended. Ignored if the participant has resumed on
    /// another connection meanwhile, so a late report from the old one cannot suspend it.
    pub fn disconnect_conn(&self, participant: ParticipantId, reason: LeaveReason, conn: ConnRef) {
        let _ = self.tx.send(Command::Disconnect {
            participant,
            reason,
            conn: Some(conn),
        });
    }

    /// Hand an ICE-TCP stream accepted on another listener (the HTTPS port's one-port demux)
    /// to the worker, which serves it like a stream accepted on the media TCP listener: RFC
    /// 4571 frames, routed by ICE ufrag, closed on a malformed frame or when no authenticated
    /// check binds it in time. Nothing of the stream may have been read (peeked is fine).
    /// `candidate_port` is the port of the passive TCP candidate it belongs to
    /// ([`SfuConfig::extra_tcp_port`](crate::SfuConfig::extra_tcp_port)). The socket may be
    /// blocking; the worker makes it non-blocking. Without `ice_tcp` it is closed.
    pub fn adopt_tcp_stream(
        &self,
        sock: std::net::TcpStream,
        peer: SocketAddr,
        candidate_port: u16,
    ) -> Result<(), SfuError> {
        self.tx
            .send(Command::AdoptTcp {
                sock,
                peer,
                candidate_port,
            })
            .map_err(|_| SfuError::WorkerGone)
    }

    /// Worker counters.
    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Stats { reply })
            .map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// Moderate a room (operator or host action). Unknown room or participant →
    /// [`SfuError::UnknownParticipant`] / [`SfuError::UnknownRoom`].
    pub async fn moderate(&self, room: &str, action: Moderation) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Moderate {
                room: room.to_owned(),
                action,
                reply,
            })
            .map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Start (`start`) or stop recording `room`. A start returns when it began.
    pub async fn recording(
        &self,
        room: &str,
        start: bool,
    ) -> Result<Result<Option<std::time::SystemTime>, crate::RecordingError>, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Recording {
                room: room.to_owned(),
                start,
                reply,
            })
            .map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// Whether `room` is being recorded now.
    pub async fn recording_status(
        &self,
        room: &str,
    ) -> Result<Option<crate::RecordingStatus>, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::RecordingStatus {
                room: room.to_owned(),
                reply,
            })
            .map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// Who is in `room` now (None if nobody).
    pub async fn room_info(&self, room: &str) -> Result<Option<RoomSnapshot>, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::RoomInfo {
                room: room.to_owned(),
                reply,
            })
            .map_err(|_| SfuError::WorkerGone)?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// Tell every participant `leave {reason: server_shutdown}`, close all connections and stop
    /// the worker. Returns when the worker has done so.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}
