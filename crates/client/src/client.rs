//! [`Client`]: the handle tests, bots and the load tool hold. It joins a room over
//! `ws://HOST:PORT/rtc`, then forwards commands to the session task (`session.rs`) and offers the
//! server's messages as an event stream plus media [`Report`]s to assert on.

use crate::error::ClientError;
use crate::peer::PeerConfig;
use crate::room::RoomView;
use crate::session::{CloseState, Session};
use crate::stats::{Report, StatsHub};
use futures_util::{SinkExt, StreamExt};
use rakor_proto::{
    ClientMessage, LeaveReason, ParticipantId, ParticipantInfo, Role, ServerMessage, TrackId,
    TrackKind, PROTOCOL_VERSION,
};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Events kept for `wait_for`/`next_event` beyond this are dropped, oldest first.
const MAX_BACKLOG: usize = 4096;

/// How to connect and what to publish.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The signalling URL, `ws://HOST:PORT/rtc` or `wss://HOST:PORT/rtc`.
    pub url: String,
    /// The access token (JWT) sent in `join`.
    pub token: String,
    /// Publish the looped Opus asset right after joining.
    pub publish_audio: bool,
    /// Publish the looped VP8 asset right after joining.
    pub publish_video: bool,
    /// Share a synthetic screen (slides, source `screen`) right after joining.
    pub publish_screen: bool,
    /// With the screen, also publish its sound (source `screen_audio`: the looped Opus asset).
    pub publish_screen_audio: bool,
    /// Local IP of the ICE host candidates (default `127.0.0.1`).
    pub bind_ip: IpAddr,
    /// STUN/TURN URLs (default none).
    pub ice_servers: Vec<String>,
    /// ICE over TCP (default true): connect to the server's passive TCP candidates too, so a
    /// network that drops UDP still gets media; UDP is used whenever it works.
    pub ice_tcp: bool,
    /// Use the ICE servers the server hands out in `joined.ice_servers` (default true): its
    /// TURN server is then tried after UDP and ICE-TCP, with no flag needed.
    pub server_ice_servers: bool,
    /// Relayed (TURN) candidates only (default false): to test or measure the TURN path.
    pub relay_only: bool,
    /// Limit for the WebSocket handshake plus `joined` (default 10 s).
    pub join_timeout: Duration,
    /// When the signalling connection drops without `leave`, reconnect and resume the same
    /// session (`join.resume`) for up to this long; zero disables it (default 30 s).
    pub resume_window: Duration,
    /// When nothing (not even the server's WebSocket ping, every 2.5 s by default) arrived
    /// on the signalling connection for this long, treat it as dropped and resume (default
    /// 10 s; zero disables it). A dead link is then noticed while it is still down, so the
    /// resume goes through as soon as it is back.
    pub signalling_timeout: Duration,
    /// A peer connection whose server description is applied but that has not reached
    /// `connected` within this long counts as failed: with resume on, the client resumes with
    /// a media reset (new peer connections), as when one reports `failed` (default 20 s; zero
    /// disables it). The `webrtc` crate's ICE agent only ever fails a connection whose selected
    /// pair went silent; one still checking (every pair failed, or a nominated pair whose
    /// answer never matched) stays `connecting` for good.
    pub connect_timeout: Duration,
    /// How long the ICE agent keeps checking a candidate pair that has not answered yet (one
    /// check every 200 ms; default 20 s, as `connect_timeout`; zero: the `webrtc` crate's
    /// default of 8 checks). The crate gives a pair up for good after its last check and
    /// never tries it again, even when the server answers later; with its default a server
    /// (or a client runtime) stalled for ~1.6 s during a join burst left the leg
    /// `connecting` until `connect_timeout` reset it.
    pub ice_check_window: Duration,
    /// The room to state in `join` (must match the token's room); `None` = the token's room.
    pub room: Option<String>,
    /// Audio level (-dBov: 0 loudest … 127 silence) sent with every audio packet in the
    /// RFC 6464 header extension; `None` = no extension (the server then always forwards this
    /// audio). Change it during the call with [`Client::set_audio_level`].
    pub audio_level: Option<u8>,
    /// Publish the video as simulcast: one transceiver with three encodings, rid `q`, `h`, `f`
    /// (low to high: 320x240, 640x360, 1280x720 assets), each on its own SSRC, every packet
    /// carrying the mid and rid header extensions (default false: one plain encoding).
    pub simulcast: bool,
    /// Certificate authorities trusted for `wss://` (and for TURN over TLS); `None` = the
    /// system's. Load a private CA with [`crate::tls::roots_with_ca_file`].
    pub tls_roots: Option<Arc<rustls::RootCertStore>>,
    /// When a resume is answered with a new participant (`joined {resumed: false}`: the
    /// session is gone, e.g. its node died and another node of the cluster now holds the
    /// room), stay as that new participant: peer connections are replaced and the same
    /// tracks published again (default true). False: leave it and end, as before.
    pub rejoin: bool,
    /// Other signalling URLs of the same cluster, tried in turn after [`Self::url`] when
    /// resuming (a node that does not hold the room redirects to the one that does). Empty
    /// by default: only `url` (which itself redirects to the room's current node).
    pub fallback_urls: Vec<String>,
    /// A cascade relay ([`crate::relay`]): every remote track is handed to this tap (with
    /// its packets) instead of only being counted (default none).
    pub relay_tap: Option<crate::relay::RelayTap>,
    /// Answer the server's subscriber offers (default true). A cascade republisher sets it
    /// false: it only publishes, and no media is sent to it (it then joins with
    /// `video_on_demand`, so the server keeps no video leg for it).
    pub subscribe: bool,
    /// Video on demand (`join.video_on_demand`, default false): other participants' video
    /// is added to the subscriber connection only once asked for with [`Client::show_video`]
    /// (or a `track_settings {visible: true}` sent by hand), and removed after
    /// [`Client::hide_video`] plus the server's grace. Audio is subscribed as usual.
    pub video_on_demand: bool,
}

impl ClientOptions {
    /// Options that publish audio and video from `127.0.0.1`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            publish_audio: true,
            publish_video: true,
            publish_screen: false,
            publish_screen_audio: false,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            ice_servers: Vec::new(),
            ice_tcp: true,
            server_ice_servers: true,
            relay_only: false,
            join_timeout: Duration::from_secs(10),
            resume_window: Duration::from_secs(30),
            signalling_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(20),
            ice_check_window: Duration::from_secs(20),
            room: None,
            audio_level: None,
            simulcast: false,
            tls_roots: None,
            rejoin: true,
            fallback_urls: Vec::new(),
            relay_tap: None,
            subscribe: true,
            video_on_demand: false,
        }
    }

    /// Ask for other participants' video only when shown (see [`ClientOptions::video_on_demand`]).
    pub fn video_on_demand(mut self, on: bool) -> Self {
        self.video_on_demand = on;
        self
    }

    /// Send this audio level with the published audio (see [`ClientOptions::audio_level`]).
    pub fn audio_level(mut self, level: Option<u8>) -> Self {
        self.audio_level = level;
        self
    }

    /// Publish video as three simulcast layers (see [`ClientOptions::simulcast`]).
    pub fn simulcast(mut self, on: bool) -> Self {
        self.simulcast = on;
        self
    }

    /// Choose what to publish on join.
    pub fn publish(mut self, audio: bool, video: bool) -> Self {
        self.publish_audio = audio;
        self.publish_video = video;
        self
    }

    /// Also share a synthetic screen on join (see [`Client::publish_screen`]).
    pub fn screen(mut self, on: bool) -> Self {
        self.publish_screen = on;
        self
    }

    /// Also publish the screen's sound on join (source `screen_audio`; the server takes it only
    /// from the presenter, so use it with [`ClientOptions::screen`]).
    pub fn screen_audio(mut self, on: bool) -> Self {
        self.publish_screen_audio = on;
        self
    }

    /// Publish nothing on join (subscribe only).
    pub fn receive_only(self) -> Self {
        self.publish(false, false)
    }

    /// Use (or not) ICE over TCP (see [`ClientOptions::ice_tcp`]).
    pub fn ice_tcp(mut self, on: bool) -> Self {
        self.ice_tcp = on;
        self
    }

    pub fn bind_ip(mut self, ip: IpAddr) -> Self {
        self.bind_ip = ip;
        self
    }
}

/// What the server said in `joined`.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub participant_id: ParticipantId,
    /// Secret for resuming this session (`join.resume`).
    pub resume_token: String,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    /// Everyone else in the room at join time.
    pub participants: Vec<ParticipantInfo>,
    pub spotlight: Option<ParticipantId>,
    /// The room's presentation at join time.
    pub presentation: Option<rakor_proto::Presentation>,
    /// STUN/TURN servers with credentials minted for this session (`joined.ice_servers`).
    pub ice_servers: Vec<rakor_proto::IceServer>,
}

/// Requests from the handle to the session task.
pub(crate) enum Command {
    Publish {
        audio: bool,
        video: bool,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Unpublish {
        kind: TrackKind,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    PublishFed {
        fed: crate::media::FedTrack,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    PublishSources {
        sources: Vec<rakor_proto::TrackSource>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    UnpublishSource {
        source: rakor_proto::TrackSource,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    StopScreen {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    SendText {
        text: String,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    RequestKeyframes {
        reply: oneshot::Sender<usize>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    Disconnect {
        reply: oneshot::Sender<()>,
    },
}

/// A joined participant. Dropping it closes the WebSocket (without `leave`) and both peer
/// connections.
pub struct Client {
    joined: Joined,
    cmd_tx: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<ServerMessage>,
    backlog: VecDeque<ServerMessage>,
    hub: Arc<StatsHub>,
    room: Arc<Mutex<RoomView>>,
    close: Arc<Mutex<CloseState>>,
    audio_level: Arc<std::sync::atomic::AtomicU8>,
    session: Option<JoinHandle<()>>,
}

impl Client {
    /// Open the WebSocket, `join`, and wait for `joined` (or the server's error as
    /// [`ClientError::Rejected`]). Then publish what `opts` asks for (the offer is sent; media
    /// flows once the server answered and ICE/DTLS connected — see [`Client::wait_published`]).
    pub async fn connect(opts: ClientOptions) -> Result<Client, ClientError> {
        if !(opts.url.starts_with("ws://") || opts.url.starts_with("wss://")) {
            return Err(ClientError::InvalidOptions(format!(
                "url must be ws://…, got {}",
                opts.url
            )));
        }
        let timeout = opts.join_timeout;
        let (ws, joined, ..) = tokio::time::timeout(timeout, join(&opts, None))
            .await
            .map_err(|_| ClientError::Timeout(format!("no `joined` within {timeout:?}")))??;
        let hub = Arc::new(StatsHub::new());
        hub.set_participant(joined.participant_id.clone());
        let view = RoomView {
            participants: joined
                .participants
                .iter()
                .map(|p| (p.id.clone(), p.clone()))
                .collect(),
            spotlight: joined.spotlight.clone(),
            presentation: joined.presentation.clone(),
            last_chat_id: None,
        };
        let room = Arc::new(Mutex::new(view));
        let close = Arc::new(Mutex::new(CloseState::default()));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let session = Session::new(
            joined.participant_id.clone(),
            ws,
            cmd_rx,
            events_tx,
            hub.clone(),
            room.clone(),
            close.clone(),
            PeerConfig {
                bind_ip: opts.bind_ip,
                ice_servers: opts.ice_servers.clone(),
                ice_tcp: opts.ice_tcp,
                turn_servers: if opts.server_ice_servers {
                    joined.ice_servers.clone()
                } else {
                    Vec::new()
                },
                relay_only: opts.relay_only,
                imitate_server: false,
                tls_roots: opts.tls_roots.clone(),
                bridge_counters: hub.turn_counters(),
                ice_check_window: opts.ice_check_window,
            },
        )
        .with_resume(opts.clone(), joined.resume_token.clone());
        let audio_level = Arc::new(std::sync::atomic::AtomicU8::new(
            opts.audio_level
                .map_or(crate::media::NO_AUDIO_LEVEL, |l| l.min(127)),
        ));
        let mut session = session;
        session.audio_level = audio_level.clone();
        session.simulcast = opts.simulcast;
        session.relay = opts.relay_tap.clone();
        session.no_subscribe = !opts.subscribe;
        let client = Client {
            joined,
            cmd_tx,
            events,
            backlog: VecDeque::new(),
            hub,
            room,
            close,
            audio_level,
            session: Some(tokio::spawn(session.run())),
        };
        let sources: Vec<rakor_proto::TrackSource> = [
            (opts.publish_audio, rakor_proto::TrackSource::Microphone),
            (opts.publish_video, rakor_proto::TrackSource::Camera),
            (opts.publish_screen, rakor_proto::TrackSource::Screen),
            (
                opts.publish_screen_audio,
                rakor_proto::TrackSource::ScreenAudio,
            ),
        ]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
        .collect();
        if !sources.is_empty() {
            client
                .request(|reply| Command::PublishSources { sources, reply })
                .await??;
        }
        Ok(client)
    }

    /// Change the audio level sent from now on (`None` = stop sending the extension, which
    /// only takes effect for packets sent after this call).
    pub fn set_audio_level(&self, level: Option<u8>) {
        self.audio_level.store(
            level.map_or(crate::media::NO_AUDIO_LEVEL, |l| l.min(127)),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Our participant id at the first `joined`.
    pub fn participant_id(&self) -> &ParticipantId {
        &self.joined.participant_id
    }

    /// Our participant id now: differs from [`Self::participant_id`] after a rejoin as a new
    /// participant ([`ClientOptions::rejoin`], e.g. after the room's node died).
    pub fn current_participant_id(&self) -> ParticipantId {
        self.hub
            .participant()
            .unwrap_or_else(|| self.joined.participant_id.clone())
    }

    /// Everything `joined` said.
    pub fn joined(&self) -> &Joined {
        &self.joined
    }

    /// The other participants as currently known (from `joined` and later events).
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.room
            .lock()
            .map(|r| r.participants.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The current spotlight, as last announced.
    pub fn spotlight(&self) -> Option<ParticipantId> {
        self.room.lock().ok().and_then(|r| r.spotlight.clone())
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmd_tx
            .send(make(tx))
            .map_err(|_| self.closed_error())?;
        rx.await.map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed {
            reason: self.close_reason(),
        }
    }

    /// Publish the looped asset(s) on the publisher connection (sends an offer; tracks already
    /// published are kept). Fails if a previous publisher offer is still unanswered.
    pub async fn publish(&self, audio: bool, video: bool) -> Result<(), ClientError> {
        self.request(|reply| Command::Publish {
            audio,
            video,
            reply,
        })
        .await?
    }

    /// Stop sending the local track of `kind`: `unpublish` (once its server id is known), then
    /// remove it from the publisher connection and renegotiate, as docs/protocol.md asks.
    /// While an earlier publisher offer is unanswered the track stops and the server is told at
    /// once; the renegotiation follows that answer.
    pub async fn unpublish(&self, kind: TrackKind) -> Result<(), ClientError> {
        self.request(|reply| Command::Unpublish { kind, reply })
            .await?
    }

    /// Publish tracks of these sources in one offer (`screen`: see [`Client::publish_screen`]).
    pub async fn publish_sources(
        &self,
        sources: &[rakor_proto::TrackSource],
    ) -> Result<(), ClientError> {
        let sources = sources.to_vec();
        self.request(|reply| Command::PublishSources { sources, reply })
            .await?
    }

    /// Publish a relayed track (cascade): its packets come from `fed` ([`crate::relay`]).
    /// While a previous publisher offer is unanswered it is queued for the next offer.
    pub async fn publish_fed(&self, fed: crate::media::FedTrack) -> Result<(), ClientError> {
        self.request(|reply| Command::PublishFed { fed, reply })
            .await?
    }

    /// Share a (synthetic) screen: a video track with source `screen` — slides that change
    /// every few seconds, 1280x720, at a low frame rate (simulcast if the options say so). The
    /// server makes it the room's presentation, or refuses it (`error presentation_active`,
    /// after which the track is taken off again by itself).
    pub async fn publish_screen(&self) -> Result<(), ClientError> {
        self.request(|reply| Command::PublishSources {
            sources: vec![rakor_proto::TrackSource::Screen],
            reply,
        })
        .await?
    }

    /// Stop sending the local track of `source` (a cascade republisher: the relayed track
    /// whose source track ended), as [`Client::unpublish`].
    pub async fn unpublish_source(
        &self,
        source: rakor_proto::TrackSource,
    ) -> Result<(), ClientError> {
        self.request(|reply| Command::UnpublishSource { source, reply })
            .await?
    }

    /// Stop sharing the screen (`unpublish`, then remove the track and renegotiate).
    pub async fn stop_screen(&self) -> Result<(), ClientError> {
        self.request(|reply| Command::StopScreen { reply }).await?
    }

    /// The room's presentation as last announced (`joined`, `presentation`).
    pub fn presentation(&self) -> Option<rakor_proto::Presentation> {
        self.room.lock().ok().and_then(|r| r.presentation.clone())
    }

    /// The server's id of our screen track, once `track_published` named it.
    pub fn screen_track_id(&self) -> Option<TrackId> {
        self.hub
            .report()
            .sent_source(rakor_proto::TrackSource::Screen)
            .and_then(|s| s.track_id.clone())
    }

    /// Send `mute_track` for our local track of `kind` (media keeps flowing, as the protocol
    /// says; only the others' UI changes).
    pub async fn set_muted(&self, kind: TrackKind, muted: bool) -> Result<(), ClientError> {
        let track_id = self.local_track_id(kind).ok_or_else(|| {
            ClientError::InvalidOptions(format!("no server track id for our {kind:?} track yet"))
        })?;
        self.send(&ClientMessage::MuteTrack { track_id, muted })
            .await
    }

    /// Send a protocol message.
    pub async fn send(&self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text =
            serde_json::to_string(msg).map_err(|e| ClientError::Signalling(e.to_string()))?;
        self.send_raw(text).await
    }

    /// Send an arbitrary text frame (tests use it for malformed input).
    pub async fn send_raw(&self, text: impl Into<String>) -> Result<(), ClientError> {
        let text = text.into();
        self.request(|reply| Command::SendText { text, reply })
            .await?
    }

    /// Send `ping {ts}`; the answer is a `pong` event.
    /// Show a remote video track in a tile `width`x`height` CSS pixels (0: unknown):
    /// `track_settings {visible: true}`. With video on demand this is what adds the track to
    /// the subscriber connection (a new server offer follows).
    pub async fn show_video(
        &self,
        track_id: &TrackId,
        width: u32,
        height: u32,
    ) -> Result<(), ClientError> {
        self.send(&ClientMessage::TrackSettings {
            track_id: track_id.clone(),
            visible: true,
            width,
            height,
        })
        .await
    }

    /// Stop showing a remote video track (`track_settings {visible: false}`): its forwarding
    /// stops at once; with video on demand the server removes it after its grace.
    pub async fn hide_video(&self, track_id: &TrackId) -> Result<(), ClientError> {
        self.send(&ClientMessage::TrackSettings {
            track_id: track_id.clone(),
            visible: false,
            width: 0,
            height: 0,
        })
        .await
    }

    pub async fn ping(&self, ts: u64) -> Result<(), ClientError> {
        self.send(&ClientMessage::Ping { ts }).await
    }

    /// Send `chat {text}` to the room; the server's `chat` (to everyone, this client too) or an
    /// `error` (`too_large`, `rate_limited`, …) is an event.
    pub async fn chat(&self, text: impl Into<String>) -> Result<(), ClientError> {
        self.send(&ClientMessage::Chat {
            text: text.into(),
            to: None,
        })
        .await
    }

    /// Host only: `chat {text, to}`, a private message to one participant.
    pub async fn chat_to(
        &self,
        to: &ParticipantId,
        text: impl Into<String>,
    ) -> Result<(), ClientError> {
        self.send(&ClientMessage::Chat {
            text: text.into(),
            to: Some(to.clone()),
        })
        .await
    }

    /// Raise (`true`) or lower this participant's hand (`hand {raised}`); the room's `hands`
    /// list is an event.
    pub async fn raise_hand(&self, raised: bool) -> Result<(), ClientError> {
        self.send(&ClientMessage::Hand { raised }).await
    }

    /// Host only: `give_floor {participant_id}`.
    pub async fn give_floor(&self, participant: &ParticipantId) -> Result<(), ClientError> {
        self.send(&ClientMessage::GiveFloor {
            participant_id: participant.clone(),
        })
        .await
    }

    /// Send a PLI on every remote track; returns how many were sent.
    pub async fn request_keyframes(&self) -> Result<usize, ClientError> {
        self.request(|reply| Command::RequestKeyframes { reply })
            .await
    }

    fn pull(&mut self) {
        while let Ok(msg) = self.events.try_recv() {
            self.push_backlog(msg);
        }
    }

    fn push_backlog(&mut self, msg: ServerMessage) {
        if self.backlog.len() >= MAX_BACKLOG {
            self.backlog.pop_front();
        }
        self.backlog.push_back(msg);
    }

    /// The next server message (in order, including ones `wait_for` skipped), or `None` once
    /// the session has ended and everything was read.
    pub async fn next_event(&mut self) -> Option<ServerMessage> {
        if let Some(m) = self.backlog.pop_front() {
            return Some(m);
        }
        self.events.recv().await
    }

    /// [`Client::next_event`] with a limit.
    pub async fn next_event_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<ServerMessage, ClientError> {
        match tokio::time::timeout(timeout, self.next_event()).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(self.closed_error()),
            Err(_) => Err(ClientError::Timeout(format!(
                "no server message within {timeout:?}"
            ))),
        }
    }

    /// Wait for the first server message matching `pred` (already received ones first) and
    /// remove it; messages that do not match stay queued for later calls, in order.
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&ServerMessage) -> bool,
        timeout: Duration,
    ) -> Result<ServerMessage, ClientError> {
        self.pull();
        if let Some(i) = self.backlog.iter().position(&mut pred) {
            if let Some(m) = self.backlog.remove(i) {
                return Ok(m);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(m)) if pred(&m) => return Ok(m),
                Ok(Some(m)) => self.push_backlog(m),
                Ok(None) => return Err(self.closed_error()),
                Err(_) => {
                    let seen: Vec<&str> = self.backlog.iter().map(type_name).collect();
                    return Err(ClientError::Timeout(format!(
                        "no matching server message within {timeout:?}; queued: {seen:?}"
                    )));
                }
            }
        }
    }

    /// Every server message received so far and not yet consumed.
    pub fn drain_events(&mut self) -> Vec<ServerMessage> {
        self.pull();
        self.backlog.drain(..).collect()
    }

    /// A snapshot of the media counters.
    pub fn stats(&self) -> Report {
        self.hub.report()
    }

    /// The shared counters (for tools that watch many clients).
    pub fn hub(&self) -> Arc<StatsHub> {
        self.hub.clone()
    }

    /// Wait until `pred` holds for the media report (woken on every counter change).
    pub async fn wait_media(
        &self,
        pred: impl FnMut(&Report) -> bool,
        timeout: Duration,
    ) -> Result<Report, ClientError> {
        self.hub.wait_for(pred, timeout).await.map_err(|last| {
            ClientError::Timeout(format!(
                "media condition not met within {timeout:?}; last report: {}",
                last.to_json()
            ))
        })
    }

    /// Wait until every local track has its server track id and has sent packets.
    pub async fn wait_published(&self, timeout: Duration) -> Result<Report, ClientError> {
        self.wait_media(
            |r| {
                !r.sent.is_empty()
                    && r.sent
                        .values()
                        .all(|s| s.track_id.is_some() && s.packets > 0)
            },
            timeout,
        )
        .await
    }

    /// The server's id of our local track of `kind`, once `track_published` named it.
    pub fn local_track_id(&self, kind: TrackKind) -> Option<TrackId> {
        self.hub
            .report()
            .sent_track(kind)
            .and_then(|s| s.track_id.clone())
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.close.lock().map(|c| c.closed).unwrap_or(true)
    }

    /// The reason of the server's `leave`, if it sent one.
    pub fn close_reason(&self) -> Option<LeaveReason> {
        self.close.lock().ok().and_then(|c| c.reason)
    }

    /// Wait until the session has ended (the server closed, or after `leave`).
    pub async fn closed(&mut self, timeout: Duration) -> Result<Option<LeaveReason>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(m)) => self.push_backlog(m),
                Ok(None) => break,
                Err(_) => {
                    return Err(ClientError::Timeout(format!(
                        "session still open after {timeout:?}"
                    )))
                }
            }
        }
        if let Some(h) = self.session.take() {
            let _ = tokio::time::timeout_at(deadline, h).await;
        }
        Ok(self.close_reason())
    }

    /// Send `leave`, wait (up to 3 s) for the server to close, close the peer connections and
    /// return the final report.
    pub async fn leave(mut self) -> Report {
        let _ = self.request(|reply| Command::Leave { reply }).await;
        if let Some(h) = self.session.take() {
            let _ = h.await;
        }
        self.hub.report()
    }

    /// Drop the WebSocket without `leave` or a close frame (a network failure, as the server
    /// sees it), close the peer connections, and return the final report.
    pub async fn disconnect(mut self) -> Report {
        let _ = self.request(|reply| Command::Disconnect { reply }).await;
        if let Some(h) = self.session.take() {
            let _ = h.await;
        }
        self.hub.report()
    }
}

fn type_name(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Joined { .. } => "joined",
        ServerMessage::IceServers { .. } => "ice_servers",
        ServerMessage::Answer { .. } => "answer",
        ServerMessage::Offer { .. } => "offer",
        ServerMessage::Candidate { .. } => "candidate",
        ServerMessage::ParticipantJoined { .. } => "participant_joined",
        ServerMessage::ParticipantLeft { .. } => "participant_left",
        ServerMessage::TrackPublished { .. } => "track_published",
        ServerMessage::TrackUnpublished { .. } => "track_unpublished",
        ServerMessage::TrackMuted { .. } => "track_muted",
        ServerMessage::Spotlight { .. } => "spotlight",
        ServerMessage::Speakers { .. } => "speakers",
        ServerMessage::PublisherPause { .. } => "publisher_pause",
        ServerMessage::PublisherLayers { .. } => "publisher_layers",
        ServerMessage::TrackDemand { .. } => "track_demand",
        ServerMessage::TrackLevels { .. } => "track_levels",
        ServerMessage::Pong { .. } => "pong",
        ServerMessage::Lobby { .. } => "lobby",
        ServerMessage::ModeratorMute { .. } => "moderator_mute",
        ServerMessage::Presentation { .. } => "presentation",
        ServerMessage::PresentationStopped { .. } => "presentation_stopped",
        ServerMessage::Leave { .. } => "leave",
        ServerMessage::Error { .. } => "error",
        ServerMessage::Chat(_) => "chat",
        ServerMessage::ChatHistory { .. } => "chat_history",
        ServerMessage::Hands { .. } => "hands",
        ServerMessage::FloorGiven { .. } => "floor_given",
        ServerMessage::Recording { .. } => "recording",
        ServerMessage::Redirect { .. } => "redirect",
    }
}

/// WebSocket handshake, `join`, and the wait for `joined`, following at most
/// [`rakor_proto::MAX_REDIRECTS`] `redirect`s of a cluster (the same `join` sent to the room's
/// node).
pub(crate) async fn join(
    opts: &ClientOptions,
    resume: Option<rakor_proto::ResumeRequest>,
) -> Result<(crate::session::Ws, Joined, bool, bool), ClientError> {
    join_from(opts, &opts.url, resume).await
}

/// [`join`] starting at `url` (one of the cluster's signalling URLs).
pub(crate) async fn join_from(
    opts: &ClientOptions,
    url: &str,
    resume: Option<rakor_proto::ResumeRequest>,
) -> Result<(crate::session::Ws, Joined, bool, bool), ClientError> {
    let mut url = url.to_owned();
    for _ in 0..=rakor_proto::MAX_REDIRECTS {
        match join_at(opts, &url, resume.clone()).await? {
            JoinAttempt::Joined(j) => return Ok(*j),
            JoinAttempt::Redirect(to) => {
                if !(to.starts_with("ws://") || to.starts_with("wss://")) {
                    return Err(ClientError::Signalling(format!(
                        "redirect to a non-WebSocket URL: {to}"
                    )));
                }
                tracing::info!(from = %url, to = %to, "redirected to the room's node");
                url = to;
            }
        }
    }
    Err(ClientError::Signalling(format!(
        "more than {} redirects in a row (last to {url})",
        rakor_proto::MAX_REDIRECTS
    )))
}

/// How one `join` at one URL ended.
enum JoinAttempt {
    Joined(Box<(crate::session::Ws, Joined, bool, bool)>),
    Redirect(String),
}

async fn join_at(
    opts: &ClientOptions,
    url: &str,
    resume: Option<rakor_proto::ResumeRequest>,
) -> Result<JoinAttempt, ClientError> {
    let connector = if url.starts_with("wss://") {
        let config = crate::tls::client_config(opts.tls_roots.as_ref())?;
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    } else {
        None
    };
    let (mut ws, _response) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
            .await
            .map_err(|e| ClientError::WebSocket(format!("connecting to {url}: {e}")))?;
    let join = ClientMessage::Join {
        version: PROTOCOL_VERSION,
        token: opts.token.clone(),
        room: opts.room.clone(),
        resume,
        // A client that answers no subscriber offer (a cascade republisher) asks for no video:
        // without this the server would keep a never-negotiated, shown leg without a size for
        // every other video in the room, which counts as "the top layer wanted" (a relayed
        // track's `track_demand`, dynacast).
        video_on_demand: opts.video_on_demand || !opts.subscribe,
    };
    let text = serde_json::to_string(&join).map_err(|e| ClientError::Signalling(e.to_string()))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| ClientError::WebSocket(e.to_string()))?;
    loop {
        let frame = match ws.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(ClientError::WebSocket(e.to_string())),
            None => return Err(ClientError::Closed { reason: None }),
        };
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(_) => return Err(ClientError::Closed { reason: None }),
            _ => continue,
        };
        match serde_json::from_str::<ServerMessage>(text.as_str()) {
            Ok(ServerMessage::Joined {
                participant_id,
                room,
                identity,
                name,
                role,
                participants,
                spotlight,
                resume_token,
                resumed,
                media_reset,
                presentation,
                ice_servers,
                ..
            }) => {
                let joined = Joined {
                    ice_servers,
                    participant_id,
                    resume_token,
                    room,
                    identity,
                    name,
                    role,
                    participants,
                    spotlight,
                    presentation,
                };
                return Ok(JoinAttempt::Joined(Box::new((
                    ws,
                    joined,
                    resumed,
                    media_reset,
                ))));
            }
            Ok(ServerMessage::Redirect { url }) => {
                let _ = ws.close(None).await;
                return Ok(JoinAttempt::Redirect(url));
            }
            Ok(ServerMessage::Error { code, message, .. }) => {
                return Err(ClientError::Rejected { code, message });
            }
            Ok(ServerMessage::Leave { reason, .. }) => {
                return Err(ClientError::Closed {
                    reason: Some(reason),
                });
            }
            Ok(other) => {
                tracing::debug!(r#type = type_name(&other), "ignoring message before joined")
            }
            Err(e) => tracing::debug!(error = %e, "ignoring unparseable message before joined"),
        }
    }
}
