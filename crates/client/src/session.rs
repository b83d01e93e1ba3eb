//! The signalling task behind a [`crate::Client`]: it owns the WebSocket and both peer
//! connections, and is the only place protocol state changes. Everything reaches it as a message
//! — server frames, peer-connection events, commands from the `Client` handle — and it handles
//! them one at a time, so an offer is always sent before its candidates and a re-offer is only
//! handled after the previous answer went out.

use crate::client::Command;
use crate::error::ClientError;
use crate::media::{self, LocalTrack};
use crate::peer::{self, PeerConfig, PeerEvent};
use crate::room::RoomView;
use crate::stats::StatsHub;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rakor_proto::{
    ClientMessage, IceCandidate, LeaveReason, ParticipantId, PeerConnectionKind, ServerMessage,
    SubscribedTrack, TrackKind,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpTransceiver;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type PeerEventTx = mpsc::UnboundedSender<(PeerConnectionKind, PeerEvent)>;

/// Server `type`s this client version knows; anything else is ignored, as the protocol requires.
const KNOWN_SERVER_TYPES: &[&str] = &[
    "joined",
    "answer",
    "offer",
    "candidate",
    "participant_joined",
    "participant_left",
    "track_published",
    "track_unpublished",
    "track_muted",
    "spotlight",
    "pong",
    "leave",
    "error",
];

/// The longest pause between two resume attempts (they start 250 ms apart and double).
const RESUME_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long `leave` waits for the server to close the socket.
const LEAVE_GRACE: Duration = Duration::from_secs(3);
/// Server candidates kept while the matching description is not applied yet.
const MAX_PENDING_CANDIDATES: usize = 64;

/// Shared with the `Client` handle: how the session ended.
#[derive(Debug, Default)]
pub(crate) struct CloseState {
    pub closed: bool,
    pub reason: Option<LeaveReason>,
}

struct PubTrack {
    local: LocalTrack,
    transceiver: Arc<dyn RtpTransceiver>,
    /// One pacer per layer, then the RTCP reader, once started.
    tasks: Option<Vec<JoinHandle<()>>>,
    stopped: bool,
}

/// One leg (publisher or subscriber) and its negotiation state.
struct Leg {
    pc: Arc<dyn PeerConnection>,
    /// Our description went out, so our candidates may follow.
    local_sent: bool,
    /// The server's description is applied, so its candidates may be added.
    remote_set: bool,
    connected: bool,
    /// mid our trickled candidates are tagged with.
    mid: Option<String>,
    pending_remote: Vec<RTCIceCandidateInit>,
}

impl Leg {
    fn new(pc: Arc<dyn PeerConnection>) -> Self {
        Self {
            pc,
            local_sent: false,
            remote_set: false,
            connected: false,
            mid: None,
            pending_remote: vec![],
        }
    }
}

pub(crate) struct Session {
    pub participant_id: ParticipantId,
    pub sink: SplitSink<Ws, Message>,
    pub stream: SplitStream<Ws>,
    pub cmd_rx: mpsc::UnboundedReceiver<Command>,
    pub events_tx: mpsc::UnboundedSender<ServerMessage>,
    pub hub: Arc<StatsHub>,
    pub room: Arc<Mutex<RoomView>>,
    pub close: Arc<Mutex<CloseState>>,
    pub peer_config: PeerConfig,
    pub pc_tx: PeerEventTx,
    pub pc_rx: mpsc::UnboundedReceiver<(PeerConnectionKind, PeerEvent)>,
    publisher: Option<Leg>,
    pub_tracks: Vec<PubTrack>,
    subscriber: Option<Leg>,
    remote_tracks: Vec<Arc<dyn TrackRemote>>,
    reader_tasks: Vec<JoinHandle<()>>,
    close_reason: Option<LeaveReason>,
    /// For reconnecting with `join.resume` after the socket drops.
    resume: Option<(crate::client::ClientOptions, String)>,
    /// The audio level our audio tracks send (see `ClientOptions::audio_level`).
    pub audio_level: Arc<std::sync::atomic::AtomicU8>,
    /// Publish video as three simulcast layers (see `ClientOptions::simulcast`).
    pub simulcast: bool,
    /// Our media is gone (a peer connection failed, or the server said `leave {resumable}`):
    /// the next resume asks for a media reset.
    media_lost: bool,
    /// Resume now (a peer connection failed while the socket was up).
    resume_now: bool,
    /// The server ended the session but holds it for a resume (`leave {resumable: true}`).
    resumable_leave: Option<LeaveReason>,
    /// Last frame of any kind from the server (see `ClientOptions::signalling_timeout`).
    last_heard: tokio::time::Instant,
}

enum Flow {
    Continue,
    /// Leave was sent: wait for the server to close, then reply.
    Leaving(oneshot::Sender<()>),
    /// Drop the socket now (no close frame).
    Abort(Option<oneshot::Sender<()>>),
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        participant_id: ParticipantId,
        ws: Ws,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        events_tx: mpsc::UnboundedSender<ServerMessage>,
        hub: Arc<StatsHub>,
        room: Arc<Mutex<RoomView>>,
        close: Arc<Mutex<CloseState>>,
        peer_config: PeerConfig,
    ) -> Self {
        let (sink, stream) = ws.split();
        let (pc_tx, pc_rx) = mpsc::unbounded_channel();
        Self {
            participant_id,
            sink,
            stream,
            cmd_rx,
            events_tx,
            hub,
            room,
            close,
            peer_config,
            pc_tx,
            pc_rx,
            publisher: None,
            pub_tracks: vec![],
            subscriber: None,
            remote_tracks: vec![],
            reader_tasks: vec![],
            close_reason: None,
            resume: None,
            audio_level: Arc::new(std::sync::atomic::AtomicU8::new(
                crate::media::NO_AUDIO_LEVEL,
            )),
            simulcast: false,
            media_lost: false,
            resume_now: false,
            resumable_leave: None,
            last_heard: tokio::time::Instant::now(),
        }
    }

    /// Close both peer connections (each given 2 s) and forget them.
    async fn close_peer_connections(&mut self) {
        for leg in [self.publisher.take(), self.subscriber.take()]
            .into_iter()
            .flatten()
        {
            if tokio::time::timeout(Duration::from_secs(2), leg.pc.close())
                .await
                .is_err()
            {
                tracing::debug!("peer connection close timed out");
            }
        }
    }

    /// Enable automatic resume with these options and the `resume_token` from `joined`.
    pub fn with_resume(mut self, opts: crate::client::ClientOptions, resume_token: String) -> Self {
        if !opts.resume_window.is_zero() {
            self.resume = Some((opts, resume_token));
        }
        self
    }

    /// The socket dropped without `leave` (or the server said `leave {resumable: true}`):
    /// reconnect and resume the same participant. Its peer connections are kept, unless the
    /// server answers `media_reset` (its media failed meanwhile; we may also ask for that when
    /// ours failed): then they are replaced and the same kinds of tracks published again.
    /// Retries until the resume window ends. True if resumed.
    async fn try_resume(&mut self) -> bool {
        let Some((opts, token)) = self.resume.clone() else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + opts.resume_window;
        let mut backoff = Duration::from_millis(250);
        while tokio::time::Instant::now() < deadline {
            let req = rakor_proto::ResumeRequest {
                participant_id: self.participant_id.clone(),
                token: token.clone(),
                media_reset: self.media_lost,
            };
            let attempt =
                tokio::time::timeout(opts.join_timeout, crate::client::join(&opts, Some(req)))
                    .await;
            match attempt {
                Ok(Ok((ws, joined, true, media_reset))) => {
                    let (sink, stream) = ws.split();
                    self.sink = sink;
                    self.stream = stream;
                    self.last_heard = tokio::time::Instant::now();
                    self.resumable_leave = None;
                    tracing::info!(media_reset, "signalling resumed");
                    let msg = ServerMessage::Joined {
                        version: rakor_proto::PROTOCOL_VERSION,
                        participant_id: joined.participant_id,
                        room: joined.room,
                        identity: joined.identity,
                        name: joined.name,
                        role: joined.role,
                        participants: joined.participants,
                        spotlight: joined.spotlight,
                        resume_token: joined.resume_token,
                        resumed: true,
                        media_reset,
                    };
                    if let Ok(mut room) = self.room.lock() {
                        room.apply(&msg);
                    }
                    let _ = self.events_tx.send(msg);
                    if media_reset {
                        self.media_lost = false;
                        if let Err(e) = self.reset_media().await {
                            self.hub
                                .push_error(format!("publishing again after a resume: {e}"));
                        }
                    }
                    return true;
                }
                Ok(Ok((ws, joined, false, _))) => {
                    // The session is gone (grace window over): this became a new participant,
                    // which we do not want; leave it and end. The `joined` is passed on so that
                    // the application (and tests) see how the resume was answered.
                    let _ = self.events_tx.send(ServerMessage::Joined {
                        version: rakor_proto::PROTOCOL_VERSION,
                        participant_id: joined.participant_id,
                        room: joined.room,
                        identity: joined.identity,
                        name: joined.name,
                        role: joined.role,
                        participants: joined.participants,
                        spotlight: joined.spotlight,
                        resume_token: String::new(),
                        resumed: false,
                        media_reset: false,
                    });
                    let (mut sink, _) = ws.split();
                    let _ = sink.send(Message::text(r#"{"type":"leave"}"#)).await;
                    return false;
                }
                Ok(Err(ClientError::Rejected { .. })) => return false,
                Ok(Err(_)) | Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
                }
            }
        }
        false
    }

    /// After `joined {media_reset: true}`: drop both peer connections and everything reading
    /// or writing them, then publish the same kinds of tracks on a new publisher connection.
    /// The subscriber connection is created again by the server's next offer. Counters in
    /// the stats hub keep growing.
    async fn reset_media(&mut self) -> Result<(), ClientError> {
        let mut audio = false;
        let mut video = false;
        for t in self.pub_tracks.iter_mut() {
            if let Some(tasks) = t.tasks.take() {
                tasks.iter().for_each(JoinHandle::abort);
            }
            if !t.stopped {
                audio |= t.local.kind == TrackKind::Audio;
                video |= t.local.kind == TrackKind::Video;
            }
        }
        self.pub_tracks.clear();
        self.reader_tasks.drain(..).for_each(|t| t.abort());
        self.remote_tracks.clear();
        // Events of the old connections must not reach the new ones: a fresh channel.
        let (pc_tx, pc_rx) = mpsc::unbounded_channel();
        self.pc_tx = pc_tx;
        self.pc_rx = pc_rx;
        self.close_peer_connections().await;
        self.publish(audio, video).await
    }

    /// Run until the socket closes, the handle is dropped, or `leave`/`disconnect`.
    pub async fn run(mut self) {
        let mut leave_reply: Option<oneshot::Sender<()>> = None;
        let mut leave_deadline: Option<tokio::time::Instant> = None;
        let mut abort_reply: Option<oneshot::Sender<()>> = None;
        let mut send_close_frame = false;
        let silence_limit = self
            .resume
            .as_ref()
            .map_or(Duration::ZERO, |(o, _)| o.signalling_timeout);
        loop {
            if self.resume_now {
                // A peer connection failed: start over on a new signalling connection, asking
                // the server for a media reset.
                self.resume_now = false;
                if leave_reply.is_none() && self.close_reason.is_none() {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), self.sink.close()).await;
                    if self.try_resume().await {
                        continue;
                    }
                    break;
                }
            }
            let deadline = async {
                match leave_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let silent = async {
                if silence_limit.is_zero() || leave_reply.is_some() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep_until(self.last_heard + silence_limit).await;
            };
            tokio::select! {
                frame = self.stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        self.last_heard = tokio::time::Instant::now();
                        self.on_text(text.as_str()).await
                    }
                    Some(Ok(Message::Close(_))) if self.resumable_leave.is_some() => {
                        // `leave {resumable: true}`: our media failed; come back with a reset.
                        self.media_lost = true;
                        if leave_reply.is_none() && self.try_resume().await {
                            continue;
                        }
                        self.close_reason = self.resumable_leave.take();
                        break;
                    }
                    Some(Ok(Message::Close(frame))) if frame.as_ref().is_some_and(|f| f.code == CloseCode::Normal) => {
                        // The server ended the session on purpose (its `leave` or `error` came
                        // first): nothing to resume.
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        if self.resumable_leave.is_some() {
                            self.media_lost = true;
                        }
                        if leave_reply.is_none() && self.close_reason.is_none() && self.try_resume().await {
                            continue;
                        }
                        self.close_reason = self.close_reason.or(self.resumable_leave.take());
                        break;
                    }
                    Some(Ok(_)) => self.last_heard = tokio::time::Instant::now(),
                    Some(Err(e)) => {
                        if leave_reply.is_none() {
                            self.hub.push_error(format!("websocket: {e}"));
                            if self.close_reason.is_none() && self.try_resume().await {
                                continue;
                            }
                        }
                        break;
                    }
                },
                Some((pc, ev)) = self.pc_rx.recv() => self.on_peer_event(pc, ev).await,
                cmd = self.cmd_rx.recv(), if leave_reply.is_none() => match cmd {
                    None => { send_close_frame = true; break; }
                    Some(cmd) => match self.on_command(cmd).await {
                        Flow::Continue => {}
                        Flow::Leaving(reply) => {
                            leave_reply = Some(reply);
                            leave_deadline = Some(tokio::time::Instant::now() + LEAVE_GRACE);
                        }
                        Flow::Abort(reply) => { abort_reply = reply; break; }
                    },
                },
                () = deadline => { send_close_frame = true; break; }
                () = silent => {
                    // Nothing from the server for `signalling_timeout`: the link is dead.
                    tracing::info!(timeout = ?silence_limit, "signalling silent; resuming");
                    if self.close_reason.is_none() && self.try_resume().await {
                        continue;
                    }
                    break;
                }
            }
        }
        if send_close_frame {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.close()).await;
        }
        self.shutdown().await;
        if let Some(reply) = leave_reply {
            let _ = reply.send(());
        }
        if let Some(reply) = abort_reply {
            let _ = reply.send(());
        }
    }

    async fn shutdown(&mut self) {
        for t in self.pub_tracks.iter_mut() {
            if let Some(tasks) = t.tasks.take() {
                tasks.iter().for_each(JoinHandle::abort);
            }
        }
        self.reader_tasks.drain(..).for_each(|t| t.abort());
        self.close_peer_connections().await;
        if let Ok(mut c) = self.close.lock() {
            c.closed = true;
            c.reason = self.close_reason;
        }
        // Dropping `events_tx` (with self) ends the handle's event stream.
    }

    async fn write(&mut self, text: String) -> Result<(), ClientError> {
        self.sink
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))
    }

    async fn send_msg(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text =
            serde_json::to_string(msg).map_err(|e| ClientError::Signalling(e.to_string()))?;
        self.write(text).await
    }

    async fn on_command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Publish {
                audio,
                video,
                reply,
            } => {
                let r = self.publish(audio, video).await;
                let _ = reply.send(r);
            }
            Command::Unpublish { kind, reply } => {
                let r = self.unpublish(kind).await;
                let _ = reply.send(r);
            }
            Command::SendText { text, reply } => {
                let r = self.write(text).await;
                let _ = reply.send(r);
            }
            Command::RequestKeyframes { reply } => {
                let mut sent = 0;
                for t in &self.remote_tracks {
                    if media::request_keyframe(t).await.is_ok() {
                        sent += 1;
                    }
                }
                let _ = reply.send(sent);
            }
            Command::Leave { reply } => {
                if let Err(e) = self.send_msg(&ClientMessage::Leave {}).await {
                    tracing::debug!(error = %e, "leave not sent");
                    return Flow::Abort(Some(reply));
                }
                return Flow::Leaving(reply);
            }
            Command::Disconnect { reply } => return Flow::Abort(Some(reply)),
        }
        Flow::Continue
    }

    async fn new_leg(&self, kind: PeerConnectionKind) -> Result<Leg, ClientError> {
        let pc = peer::new_peer_connection(&self.peer_config, kind, self.pc_tx.clone()).await?;
        Ok(Leg::new(pc))
    }

    fn check_no_unanswered_offer(&self) -> Result<(), ClientError> {
        match &self.publisher {
            Some(leg) if leg.local_sent && !leg.remote_set => Err(ClientError::Signalling(
                "a publisher offer is still unanswered".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Add tracks of the asked kinds (those not already sending) and offer. A kind published
    /// again after `unpublish` gets a new track, and its `sent` counters start over.
    async fn publish(&mut self, audio: bool, video: bool) -> Result<(), ClientError> {
        self.check_no_unanswered_offer()?;
        let wanted: Vec<TrackKind> = [(audio, TrackKind::Audio), (video, TrackKind::Video)]
            .into_iter()
            .filter(|(on, kind)| {
                *on && !self
                    .pub_tracks
                    .iter()
                    .any(|t| t.local.kind == *kind && !t.stopped)
            })
            .map(|(_, k)| k)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if self.publisher.is_none() {
            self.publisher = Some(self.new_leg(PeerConnectionKind::Publisher).await?);
        }
        let Some(pc) = self.publisher.as_ref().map(|l| l.pc.clone()) else {
            return Err(ClientError::Signalling("no publisher connection".into()));
        };
        let first_new = self.pub_tracks.len();
        for kind in wanted {
            let local = if kind == TrackKind::Video && self.simulcast {
                LocalTrack::new_simulcast_video(self.participant_id.as_str())?
            } else {
                LocalTrack::new(kind, self.participant_id.as_str())?
            }
            .with_audio_level(self.audio_level.clone());
            let transceiver = local.add_to(&pc).await?;
            self.pub_tracks.push(PubTrack {
                local,
                transceiver,
                tasks: None,
                stopped: false,
            });
        }
        let sdp = self.set_publisher_offer(&pc).await?;
        // mids exist once the offer is set.
        for t in &self.pub_tracks[first_new..] {
            let mid = t.transceiver.mid().await.ok().flatten();
            self.hub.add_sent(t.local.kind, t.local.ssrc, mid);
            if t.local.is_simulcast() {
                let ssrcs = t.local.ssrcs();
                self.hub
                    .update_sent(t.local.kind, |s| s.layer_ssrcs = ssrcs);
            }
        }
        self.send_publisher_offer(sdp).await
    }

    async fn set_publisher_offer(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
    ) -> Result<String, ClientError> {
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        pc.local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| ClientError::Signalling("no local description after set".into()))
    }

    async fn send_publisher_offer(&mut self, sdp: String) -> Result<(), ClientError> {
        if let Some(leg) = self.publisher.as_mut() {
            leg.mid = peer::first_mid(&sdp);
            leg.remote_set = false;
        }
        self.send_msg(&ClientMessage::Offer {
            pc: PeerConnectionKind::Publisher,
            sdp,
        })
        .await?;
        if let Some(leg) = self.publisher.as_mut() {
            leg.local_sent = true;
        }
        Ok(())
    }

    /// Stop the local track of `kind`: stop its pacer, send `unpublish` (if the server named the
    /// track yet), remove it from the publisher connection and renegotiate.
    async fn unpublish(&mut self, kind: TrackKind) -> Result<(), ClientError> {
        self.check_no_unanswered_offer()?;
        let Some(t) = self
            .pub_tracks
            .iter_mut()
            .find(|t| t.local.kind == kind && !t.stopped)
        else {
            return Err(ClientError::InvalidOptions(format!(
                "no published {kind:?} track"
            )));
        };
        t.stopped = true;
        if let Some(tasks) = t.tasks.take() {
            tasks.iter().for_each(JoinHandle::abort);
        }
        let sender = t.transceiver.sender().await.ok().flatten();
        let track_id = self
            .hub
            .report()
            .sent_track(kind)
            .and_then(|s| s.track_id.clone());
        if let Some(track_id) = track_id {
            self.send_msg(&ClientMessage::Unpublish { track_id })
                .await?;
        }
        let Some(pc) = self.publisher.as_ref().map(|l| l.pc.clone()) else {
            return Ok(());
        };
        if let Some(sender) = sender {
            pc.remove_track(&sender).await?;
        }
        let sdp = self.set_publisher_offer(&pc).await?;
        self.send_publisher_offer(sdp).await
    }

    /// Start pacing every local track once the publisher is answered and connected.
    async fn start_local_tracks(&mut self) {
        let ready = self
            .publisher
            .as_ref()
            .is_some_and(|l| l.remote_set && l.connected);
        if !ready {
            return;
        }
        for i in 0..self.pub_tracks.len() {
            let t = &self.pub_tracks[i];
            if t.tasks.is_some() || t.stopped {
                continue;
            }
            let started = match t.transceiver.sender().await {
                Ok(Some(sender)) => t.local.start(&sender, self.hub.clone()).await,
                Ok(None) => Err(ClientError::Signalling("transceiver has no sender".into())),
                Err(e) => Err(e.into()),
            };
            match started {
                Ok(tasks) => self.pub_tracks[i].tasks = Some(tasks),
                Err(e) => {
                    self.hub.push_error(format!("starting local track: {e}"));
                    self.pub_tracks[i].stopped = true;
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) {
        let msg = match serde_json::from_str::<ServerMessage>(text) {
            Ok(m) => m,
            Err(e) => {
                let ty = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
                match ty {
                    Some(t) if !KNOWN_SERVER_TYPES.contains(&t.as_str()) => {
                        tracing::debug!(r#type = %t, "ignoring unknown server message type");
                    }
                    _ => self
                        .hub
                        .push_error(format!("unparseable server message: {e}")),
                }
                return;
            }
        };
        if let Ok(mut room) = self.room.lock() {
            room.apply(&msg);
        }
        match &msg {
            ServerMessage::Answer {
                pc: PeerConnectionKind::Publisher,
                sdp,
            } => {
                if let Err(e) = self.on_publisher_answer(sdp.clone()).await {
                    self.hub.push_error(format!("publisher answer: {e}"));
                }
            }
            ServerMessage::Offer {
                pc: PeerConnectionKind::Subscriber,
                sdp,
                tracks,
            } => {
                if let Err(e) = self.on_subscriber_offer(sdp.clone(), tracks).await {
                    self.hub.push_error(format!("subscriber offer: {e}"));
                }
            }
            ServerMessage::Answer { pc, .. } | ServerMessage::Offer { pc, .. } => {
                self.hub.push_error(format!(
                    "unexpected {} for the {pc:?} connection",
                    msg_type(&msg)
                ));
            }
            ServerMessage::Candidate { pc, candidate } => {
                self.on_remote_candidate(*pc, candidate).await
            }
            ServerMessage::TrackPublished {
                participant_id,
                track,
            } if *participant_id == self.participant_id => {
                self.hub.set_sent_track_id(&track.mid, &track.id);
            }
            ServerMessage::Leave {
                reason,
                resumable: true,
            } if self.resume.is_some() => self.resumable_leave = Some(*reason),
            ServerMessage::Leave { reason, .. } => self.close_reason = Some(*reason),
            ServerMessage::PublisherPause { track_id, paused } => {
                if let Some(t) = self.published_track(track_id) {
                    t.local.set_paused(*paused);
                    self.hub.update_sent(t.local.kind, |s| {
                        if *paused && !s.paused {
                            s.pauses += 1;
                        }
                        s.paused = *paused;
                    });
                }
            }
            ServerMessage::PublisherLayers { track_id, rids } => {
                if let Some(t) = self.published_track(track_id) {
                    let sent = t.local.set_active_layers(rids);
                    self.hub.update_sent(t.local.kind, |s| {
                        s.active_layers = sent.iter().map(|r| (*r).to_owned()).collect();
                    });
                }
            }
            _ => {}
        }
        let _ = self.events_tx.send(msg);
    }

    /// Our published (not stopped) track that the server knows as `track_id`.
    fn published_track(&self, track_id: &rakor_proto::TrackId) -> Option<&PubTrack> {
        let kind = self
            .hub
            .report()
            .sent
            .values()
            .find_map(|s| (s.track_id.as_ref() == Some(track_id)).then_some(s.kind))?;
        self.pub_tracks
            .iter()
            .find(|t| t.local.kind == kind && !t.stopped)
    }

    async fn on_publisher_answer(&mut self, sdp: String) -> Result<(), ClientError> {
        let Some(leg) = self.publisher.as_mut() else {
            return Err(ClientError::Signalling(
                "answer without a publisher offer".into(),
            ));
        };
        leg.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        leg.remote_set = true;
        for c in std::mem::take(&mut leg.pending_remote) {
            add_candidate(&leg.pc, c).await;
        }
        self.start_local_tracks().await;
        Ok(())
    }

    async fn on_subscriber_offer(
        &mut self,
        sdp: String,
        tracks: &[SubscribedTrack],
    ) -> Result<(), ClientError> {
        self.hub.map_subscribed(tracks, Instant::now());
        if self.subscriber.is_none() {
            self.subscriber = Some(self.new_leg(PeerConnectionKind::Subscriber).await?);
        }
        let Some(leg) = self.subscriber.as_mut() else {
            return Err(ClientError::Signalling("no subscriber connection".into()));
        };
        leg.pc
            .set_remote_description(RTCSessionDescription::offer(sdp)?)
            .await?;
        leg.remote_set = true;
        for c in std::mem::take(&mut leg.pending_remote) {
            add_candidate(&leg.pc, c).await;
        }
        let answer = leg.pc.create_answer(None).await?;
        leg.pc.set_local_description(answer).await?;
        let sdp = leg
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| ClientError::Signalling("no local description after set".into()))?;
        leg.mid = peer::first_mid(&sdp);
        self.send_msg(&ClientMessage::Answer {
            pc: PeerConnectionKind::Subscriber,
            sdp,
        })
        .await?;
        if let Some(leg) = self.subscriber.as_mut() {
            leg.local_sent = true;
        }
        Ok(())
    }

    async fn on_remote_candidate(&mut self, pc: PeerConnectionKind, c: &IceCandidate) {
        if c.candidate.is_empty() {
            return; // end-of-candidates: nothing to do for an ICE-lite peer
        }
        let init = RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid.clone(),
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment.clone(),
            url: None,
        };
        let leg = match pc {
            PeerConnectionKind::Publisher => self.publisher.as_mut(),
            PeerConnectionKind::Subscriber => self.subscriber.as_mut(),
        };
        match leg {
            Some(leg) if leg.remote_set => add_candidate(&leg.pc, init).await,
            Some(leg) => {
                if leg.pending_remote.len() < MAX_PENDING_CANDIDATES {
                    leg.pending_remote.push(init);
                }
            }
            None if pc == PeerConnectionKind::Subscriber => {
                // The subscriber connection is created by the first offer; a candidate before it
                // is a server bug, but harmless: its SDP carries the candidates too.
                tracing::debug!("subscriber candidate before any offer");
            }
            None => tracing::debug!("publisher candidate before publishing"),
        }
    }

    async fn on_peer_event(&mut self, pc: PeerConnectionKind, ev: PeerEvent) {
        match ev {
            PeerEvent::LocalCandidate(c) => {
                let leg = match pc {
                    PeerConnectionKind::Publisher => self.publisher.as_ref(),
                    PeerConnectionKind::Subscriber => self.subscriber.as_ref(),
                };
                let Some(leg) = leg.filter(|l| l.local_sent) else {
                    return;
                };
                let candidate = match c {
                    Some(init) => IceCandidate {
                        candidate: init.candidate,
                        sdp_mid: leg.mid.clone().or(init.sdp_mid.filter(|m| !m.is_empty())),
                        sdp_mline_index: Some(0),
                        username_fragment: None,
                    },
                    None => IceCandidate {
                        candidate: String::new(),
                        sdp_mid: leg.mid.clone(),
                        sdp_mline_index: Some(0),
                        username_fragment: None,
                    },
                };
                if let Err(e) = self
                    .send_msg(&ClientMessage::Candidate { pc, candidate })
                    .await
                {
                    tracing::debug!(error = %e, "candidate not sent");
                }
            }
            PeerEvent::State(state) => {
                let publisher = pc == PeerConnectionKind::Publisher;
                self.hub.set_pc_state(publisher, peer::state_name(state));
                if state == RTCPeerConnectionState::Failed {
                    self.hub.push_error(format!("{pc:?} connection failed"));
                    // Our media is gone: resume with a media reset (the server may still
                    // think it is fine, or have parked us already).
                    if self.resume.is_some() {
                        self.media_lost = true;
                        self.resume_now = true;
                    }
                }
                let leg = if publisher {
                    self.publisher.as_mut()
                } else {
                    self.subscriber.as_mut()
                };
                if let Some(leg) = leg {
                    leg.connected = state == RTCPeerConnectionState::Connected;
                }
                if publisher && state == RTCPeerConnectionState::Connected {
                    self.start_local_tracks().await;
                }
            }
            PeerEvent::Track(track) => {
                let leg = match pc {
                    PeerConnectionKind::Publisher => self.publisher.as_ref(),
                    PeerConnectionKind::Subscriber => self.subscriber.as_ref(),
                };
                let mid = match leg {
                    Some(l) => peer::mid_of_remote_track(&l.pc, &track).await,
                    None => None,
                };
                self.remote_tracks.push(track.clone());
                self.reader_tasks
                    .push(tokio::spawn(media::read_remote_track(
                        track,
                        mid,
                        self.hub.clone(),
                    )));
            }
        }
    }
}

async fn add_candidate(pc: &Arc<dyn PeerConnection>, c: RTCIceCandidateInit) {
    // Duplicates of candidates already in the SDP are expected; errors are not fatal.
    if let Err(e) = pc.add_ice_candidate(c).await {
        tracing::debug!(error = %e, "remote candidate not added");
    }
}

fn msg_type(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Answer { .. } => "answer",
        ServerMessage::Offer { .. } => "offer",
        _ => "message",
    }
}
