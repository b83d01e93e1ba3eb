//! The signalling task behind a [`crate::Client`]: it owns the WebSocket and both peer
//! connections, and is the only place protocol state changes. Everything reaches it as a message
//! — server frames, peer-connection events, commands from the `Client` handle — and it handles
//! them one at a time, so an offer is always sent before its candidates and a re-offer is only
//! handled after the previous answer went out.
//!
//! By job: `signalling.rs` reads server messages, `publish.rs` and `subscribe.rs` negotiate the
//! two peer connections, `legs.rs` holds each connection's state, its candidates and its events,
//! and `resume.rs` reconnects after the socket drops and resets media. This file holds the state,
//! the run loop that hands each message to them, and the commands from the `Client` handle.

mod legs;
mod publish;
mod resume;
mod signalling;
mod subscribe;

use crate::client::Command;
use crate::error::ClientError;
use crate::media;
use crate::peer::{PeerConfig, PeerEvent};
use crate::room::RoomView;
use crate::stats::StatsHub;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use legs::Leg;
use publish::PubTrack;
use rakor_proto::{ClientMessage, LeaveReason, ParticipantId, PeerConnectionKind, ServerMessage};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::media_stream::track_remote::TrackRemote;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type PeerEventTx = mpsc::UnboundedSender<(PeerConnectionKind, PeerEvent)>;

/// How long `leave` waits for the server to close the socket.
const LEAVE_GRACE: Duration = Duration::from_secs(3);

/// Shared with the `Client` handle: how the session ended.
#[derive(Debug, Default)]
pub(crate) struct CloseState {
    pub closed: bool,
    pub reason: Option<LeaveReason>,
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
    /// A cascade relay: remote tracks are handed out here, not just counted.
    pub relay: Option<crate::relay::RelayTap>,
    /// With `relay`: what each subscriber mid carries (from the server's offers).
    subscribed: std::collections::HashMap<String, rakor_proto::SubscribedTrack>,
    /// Relayed tracks waiting for the publisher offer in flight to be answered.
    pending_fed: Vec<media::FedTrack>,
    /// Senders of tracks stopped while a publisher offer was unanswered: taken off the
    /// connection in the offer after that answer.
    pending_removals: Vec<std::sync::Arc<dyn webrtc::rtp_transceiver::RtpSender>>,
    /// Answer no subscriber offer (see `ClientOptions::subscribe`).
    pub no_subscribe: bool,
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
            relay: None,
            subscribed: std::collections::HashMap::new(),
            pending_fed: Vec::new(),
            pending_removals: Vec::new(),
            no_subscribe: false,
        }
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
            let connect_deadline = self.connect_deadline();
            let stuck = async move {
                match connect_deadline {
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
                () = stuck, if leave_reply.is_none() => self.on_connect_timeout(),
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
            Command::PublishFed { fed, reply } => {
                let r = self.publish_fed(fed).await;
                let _ = reply.send(r);
            }
            Command::PublishSources { sources, reply } => {
                let r = self.publish_sources(&sources).await;
                let _ = reply.send(r);
            }
            Command::UnpublishSource { source, reply } => {
                let r = self.unpublish_source(source, true).await;
                let _ = reply.send(r);
            }
            Command::StopScreen { reply } => {
                let r = self
                    .unpublish_source(rakor_proto::TrackSource::Screen, true)
                    .await;
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
}
