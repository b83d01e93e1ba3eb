//! Client → server and server → client messages, tagged by `"type"`.

use crate::{ErrorCode, ParticipantId, TrackId};
use serde::{Deserialize, Serialize};

/// The `type` values a client may send; anything else is `unknown_type`.
pub const CLIENT_MESSAGE_TYPES: &[&str] = &[
    "join",
    "offer",
    "answer",
    "candidate",
    "unpublish",
    "mute_track",
    "spotlight",
    "ping",
    "leave",
    "moderate",
    "track_settings",
    "chat",
    "hand",
    "give_floor",
    "recording",
];

/// Video on demand (`join.video_on_demand`): how long a video track stays in the client's
/// subscriber connection after `track_settings {visible: false}` before the server removes it
/// (a tile hidden and shown again within this time keeps its m-line and gets a keyframe).
pub const VIDEO_ON_DEMAND_GRACE_MS: u64 = 5_000;
/// Video on demand: how many video tracks one client may have asked for (shown, or hidden
/// within the grace) at a time; one more is `limit_exceeded`.
pub const VIDEO_ON_DEMAND_MAX: usize = 32;

/// Longest `chat.text` the server accepts by default, in Unicode characters (`too_large`
/// above; the server's `chat.max_chars`).
pub const CHAT_MAX_CHARS: usize = 2000;
/// How many recent messages a joining participant gets in `chat_history` by default (the
/// server's `chat.history`).
pub const CHAT_HISTORY_LEN: usize = 50;

/// A participant's role, carried in the access token and enforced by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The command room: may publish and set the spotlight.
    Host,
    /// A site: may publish.
    #[default]
    Participant,
    /// Receive only: may not publish.
    Viewer,
    /// A cascade relay subscriber (issue 17): minted only by a Rakor node for its own relay
    /// legs (identity `cascade/<node>`). Receives, may not publish, and is hidden: not in
    /// `joined`/`participant_joined`/`participant_left`, the API's participant lists or
    /// attendance. Not accepted from the command line or the API.
    Relay,
}

impl Role {
    pub fn can_publish(self) -> bool {
        !matches!(self, Role::Viewer | Role::Relay)
    }
    /// A hidden relay participant (not listed to the others, not in attendance).
    pub fn is_hidden(self) -> bool {
        matches!(self, Role::Relay)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Participant => "participant",
            Role::Viewer => "viewer",
            Role::Relay => "relay",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(Role::Host),
            "participant" => Ok(Role::Participant),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "unknown role \"{other}\" (expected host, participant or viewer)"
            )),
        }
    }
}

/// Which of a participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerConnectionKind {
    /// The client offers, the server answers; carries the client's own tracks to the server.
    Publisher,
    /// The server offers, the client answers; carries other participants' tracks to the client.
    Subscriber,
}

/// Media kind of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a track carries, as its publisher declared it (`offer.tracks`). A track whose
/// publisher declared nothing is `camera` (video) or `microphone` (audio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    /// A shared screen or window: the room's presentation.
    Screen,
    /// The audio of a shared screen or tab.
    ScreenAudio,
}

impl TrackSource {
    /// The source of a track whose publisher declared none.
    pub fn default_for(kind: TrackKind) -> Self {
        match kind {
            TrackKind::Audio => TrackSource::Microphone,
            TrackKind::Video => TrackSource::Camera,
        }
    }

    /// The kind of track this source may be.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Camera | TrackSource::Screen => TrackKind::Video,
            TrackSource::Microphone | TrackSource::ScreenAudio => TrackKind::Audio,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Camera => "camera",
            TrackSource::Microphone => "microphone",
            TrackSource::Screen => "screen",
            TrackSource::ScreenAudio => "screen_audio",
        }
    }
}

/// `offer.tracks`: the source of the track sent on transceiver `mid` of the publisher
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackDeclaration {
    pub mid: String,
    pub source: TrackSource,
}

/// The room's presentation: the screen track `track_id` of `participant_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presentation {
    pub participant_id: ParticipantId,
    pub track_id: TrackId,
}

/// Why a presentation ended (`presentation_stopped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresentationEnd {
    /// The presenter unpublished its screen track (or left).
    Unpublished,
    /// A host or operator stopped it (`moderate {action: "stop_presentation"}`).
    Stopped,
    /// A host started presenting in its place.
    TakenOver,
}

/// An ICE candidate in the browser's `RTCIceCandidateInit` JSON form. An empty `candidate`
/// string means end-of-candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
}

/// Messages a client sends. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on every connection. `room`, if given, must equal the token's room
    /// (`wrong_room` otherwise): a client that joins from an invitation for a known room states it.
    Join {
        version: u32,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// Resume an earlier session of the same identity after the connection dropped:
        /// the `participant_id` and `resume_token` from its `joined`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeRequest>,
        /// Video on demand (default false): the server announces other participants' video
        /// tracks (`track_published`, `joined`) but puts one into this client's subscriber
        /// offer only when the client asks with `track_settings {visible: true}`, and takes it
        /// out again ([`VIDEO_ON_DEMAND_GRACE_MS`] after `visible: false`), reusing its m-line
        /// for the next video asked for. Audio is subscribed as without it.
        #[serde(default, skip_serializing_if = "is_false")]
        video_on_demand: bool,
    },
    /// An SDP offer for the publisher peer connection (`pc` must be `publisher`). `tracks`
    /// declares the source of the tracks it sends, by `mid` (optional; a track not declared is
    /// `camera` or `microphone` by its kind).
    Offer {
        pc: PeerConnectionKind,
        sdp: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tracks: Vec<TrackDeclaration>,
    },
    /// The SDP answer to a server `offer` for the subscriber peer connection.
    Answer { pc: PeerConnectionKind, sdp: String },
    /// A trickled ICE candidate of the client's side of `pc`.
    Candidate {
        pc: PeerConnectionKind,
        candidate: IceCandidate,
    },
    /// Stop publishing one of the client's tracks.
    Unpublish { track_id: TrackId },
    /// Mark one of the client's tracks muted or unmuted (shown to others; media keeps its path).
    MuteTrack { track_id: TrackId, muted: bool },
    /// Host only: put a participant on everyone's main view, or clear it with `null`.
    Spotlight {
        participant_id: Option<ParticipantId>,
    },
    /// Application-level keepalive; the server answers `pong` with the same `ts`.
    Ping {
        #[serde(default)]
        ts: u64,
    },
    /// Leave the room; the server closes the connection.
    Leave {},
    /// Host only: moderate another participant of the room, or end the meeting.
    Moderate {
        action: ModerateAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant_id: Option<ParticipantId>,
    },
    /// Host only: start or stop recording the room (`recording` tells everyone).
    Recording { action: RecordingAction },
    /// How the client shows a remote video track it subscribes to: `visible: false` (tile off
    /// screen, collapsed, tab hidden) stops its forwarding to this client; `true` resumes it
    /// from the next keyframe. `width`/`height`: the tile's size in CSS pixels (0 = unknown).
    TrackSettings {
        track_id: TrackId,
        visible: bool,
        #[serde(default)]
        width: u32,
        #[serde(default)]
        height: u32,
    },
    /// A chat message to the room, or (host only) to one participant (`to`). Text only, at most
    /// [`CHAT_MAX_CHARS`] characters, not blank; rate-limited per participant.
    Chat {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<ParticipantId>,
    },
    /// Raise (`true`) or lower (`false`) the sender's hand.
    Hand { raised: bool },
    /// Host only: give the floor to a participant — its moderator mute is lifted, it is
    /// spotlighted and its hand is lowered.
    GiveFloor { participant_id: ParticipantId },
}

impl ClientMessage {
    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Unpublish { .. } => "unpublish",
            ClientMessage::MuteTrack { .. } => "mute_track",
            ClientMessage::Spotlight { .. } => "spotlight",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Leave {} => "leave",
            ClientMessage::Moderate { .. } => "moderate",
            ClientMessage::TrackSettings { .. } => "track_settings",
            ClientMessage::Chat { .. } => "chat",
            ClientMessage::Hand { .. } => "hand",
            ClientMessage::GiveFloor { .. } => "give_floor",
            ClientMessage::Recording { .. } => "recording",
        }
    }
}

/// `join.resume`: which earlier session to continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    pub participant_id: ParticipantId,
    pub token: String,
    /// The client's own peer connections are gone or failed (ICE `failed`): whatever the
    /// server still holds, start the media over (`joined.media_reset` = true). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub media_reset: bool,
    /// The `id` of the last `chat` (or `chat_history` entry) the client has. After
    /// `joined {resumed: true}` the server sends `chat_history {after: <this id>}` with the
    /// messages that came after it (none: no `chat_history`); when it is absent or no longer in
    /// the server's recent history, `chat_history` without `after`: the whole recent history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_chat_id: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a host asks with `recording`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingAction {
    Start,
    Stop,
}

/// What a host does with `moderate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerateAction {
    /// Stop forwarding the participant's audio and tell it (`moderator_mute {muted: true}`).
    MuteAudio,
    /// Forward its audio again.
    UnmuteAudio,
    /// Remove the participant (`leave {reason: "removed"}`).
    Remove,
    /// End the meeting for everyone (`leave {reason: "room_ended"}`); no `participant_id`.
    EndRoom,
    /// Stop the room's presentation (the presenter gets `presentation_stopped`); no
    /// `participant_id` needed (if given, it must be the presenter).
    StopPresentation,
}

/// A published track as other participants see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: TrackId,
    pub kind: TrackKind,
    /// The `mid` of the transceiver in the *publisher's* own publisher connection.
    pub mid: String,
    pub muted: bool,
    /// What the track carries; absent from an older server: `camera`/`microphone` by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TrackSource>,
}

impl TrackInfo {
    /// The track's source (declared, or the default for its kind).
    pub fn source(&self) -> TrackSource {
        self.source
            .unwrap_or_else(|| TrackSource::default_for(self.kind))
    }
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub tracks: Vec<TrackInfo>,
}

/// Which remote track a transceiver (`mid`) of the subscriber connection carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribedTrack {
    pub mid: String,
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: TrackKind,
    /// The track's source (as in `track_published`); absent from an older server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TrackSource>,
}

/// Who sent a chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSender {
    pub participant_id: ParticipantId,
    pub name: String,
}

/// A chat message as the server delivers it (`chat`, and each entry of `chat_history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatEntry {
    /// Unique per server (`CH_…`).
    pub id: String,
    pub from: ChatSender,
    /// Exactly the text that was sent.
    pub text: String,
    /// When the server accepted it, UTC RFC 3339 with milliseconds.
    pub at: String,
    /// Set on a private message from the host: the one addressee (it and the sender get it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ParticipantId>,
}

/// One track's level in `track_levels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackLevel {
    pub track_id: TrackId,
    /// -dBov, 0 (loudest) ..= 127 (silence).
    pub level: u8,
}

/// One raised hand, in the order hands went up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaisedHand {
    pub participant_id: ParticipantId,
    pub name: String,
    /// When the hand went up, UTC RFC 3339 with milliseconds.
    pub at: String,
}

/// Why a participant left, or why the server tells a client to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The client sent `leave`.
    ClientRequest,
    /// The WebSocket closed or failed without `leave`.
    Disconnected,
    /// The same identity joined again; the older connection is closed.
    Replaced,
    /// A host or operator removed the participant.
    Removed,
    /// The media connection failed (ICE/DTLS) and could not recover.
    MediaFailed,
    /// The server is shutting down.
    ServerShutdown,
    /// An operator or the host ended the meeting for everyone.
    RoomEnded,
}

/// One entry of `ice_servers`: the shape of WebRTC's `RTCIceServer`, plus when the
/// credentials stop opening new TURN allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:host:port?transport=tcp`, `turns:host:port?transport=tcp`, …
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
    /// Unix seconds; 0 = does not expire.
    #[serde(default)]
    pub expires_at: u64,
}

/// Where a site stands in the lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LobbyStatus {
    Waiting,
    Admitted,
}

/// Messages the server sends. Clients must ignore unknown types and fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        version: u32,
        participant_id: ParticipantId,
        room: String,
        identity: String,
        name: String,
        role: Role,
        /// Everyone else already in the room, with their published tracks.
        participants: Vec<ParticipantInfo>,
        spotlight: Option<ParticipantId>,
        /// Secret for resuming this session after a dropped connection (`join.resume`).
        #[serde(default)]
        resume_token: String,
        /// True when this `joined` continues an earlier session (same participant id, tracks
        /// and peer connections kept); false for a new session.
        #[serde(default)]
        resumed: bool,
        /// Only with `resumed: true`: the participant's peer connections and published tracks
        /// are gone (its media failed and it was out of the room while held for the resume, or
        /// the client asked with `join.resume.media_reset`). Close both peer connections,
        /// publish again on a new publisher connection, and answer the fresh subscriber offer
        /// that follows. Absent (false) otherwise.
        #[serde(default, skip_serializing_if = "is_false")]
        media_reset: bool,
        /// The room's presentation now (null: none); later changes come as `presentation`.
        #[serde(default)]
        presentation: Option<Presentation>,
        /// STUN/TURN servers for both peer connections (`RTCConfiguration.iceServers`), with
        /// credentials minted for this session. Empty when the server offers none (then the
        /// server's own candidates are enough on open networks).
        #[serde(default)]
        ice_servers: Vec<IceServer>,
    },
    /// Fresh credentials for the ICE servers, sent before the previous ones expire (use them
    /// for new peer connections and ICE restarts; allocations already open keep working).
    IceServers {
        ice_servers: Vec<IceServer>,
    },
    /// Answer to the client's publisher `offer`.
    Answer {
        pc: PeerConnectionKind,
        sdp: String,
    },
    /// Offer for the subscriber connection; `tracks` maps each transceiver `mid` to a remote track.
    Offer {
        pc: PeerConnectionKind,
        sdp: String,
        tracks: Vec<SubscribedTrack>,
    },
    /// A server ICE candidate for `pc` (empty `candidate` = end-of-candidates).
    Candidate {
        pc: PeerConnectionKind,
        candidate: IceCandidate,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    /// `by`: the host who removed the participant (`reason: removed`) or ended the room
    /// (`room_ended`) with `moderate`; absent otherwise (an operator, or the participant's
    /// own leaving).
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: LeaveReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ParticipantId>,
    },
    TrackPublished {
        participant_id: ParticipantId,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_id: ParticipantId,
        track_id: TrackId,
    },
    /// A track was muted or unmuted. `by`: the host who did it with `moderate`
    /// (`mute_audio`/`unmute_audio`); absent for the participant's own `mute_track`, an
    /// operator's mute, and the unmute that comes with `floor_given` (which names its host).
    TrackMuted {
        participant_id: ParticipantId,
        track_id: TrackId,
        muted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ParticipantId>,
    },
    /// The spotlight changed (`participant_id` null = cleared); `by` is the host who set it.
    Spotlight {
        participant_id: Option<ParticipantId>,
        by: ParticipantId,
    },
    /// The room's presentation changed: `presentation` is the screen track everyone should
    /// show on the main view, or null when none. `by`: who ended the previous one when a host
    /// or operator did (null otherwise).
    Presentation {
        presentation: Option<Presentation>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ParticipantId>,
    },
    /// Your presentation (screen track `track_id`) ended without your asking: the server no
    /// longer forwards it. Stop capturing and remove the track (its transceiver is not
    /// published again until it stops sending).
    PresentationStopped {
        track_id: TrackId,
        reason: PresentationEnd,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<ParticipantId>,
    },
    /// Dynacast: nobody in the room shows your video track `track_id` now (`paused: true`):
    /// stop sending it (the server would drop it) until `paused: false`, then resume (the
    /// server asks for a keyframe).
    PublisherPause {
        track_id: TrackId,
        paused: bool,
    },
    /// Dynacast for a simulcast track: only the layers in `rids` are needed by anyone now;
    /// stop sending the others (keep the encodings negotiated) until a later `publisher_layers`
    /// names them again, then restart them with a keyframe.
    PublisherLayers {
        track_id: TrackId,
        rids: Vec<String>,
    },
    /// Cascade (issue 17), sent only to a relay republisher (identity `cascade/…`): what this
    /// node's subscribers of your video track `track_id` show, merged — `visible: false` when
    /// every one hides it, else the largest tile (`width`/`height` in CSS pixels; 0 = some
    /// subscriber reports no size, so the top layer). The relay passes it upstream as its own
    /// `track_settings` for the source track. Sent on changes (checked every 100 ms).
    TrackDemand {
        track_id: TrackId,
        visible: bool,
        #[serde(default)]
        width: u32,
        #[serde(default)]
        height: u32,
    },
    /// Cascade only (issue 17); sent only to a relay subscriber (role `relay`), never to an
    /// ordinary client (ignore it if you get it). The smoothed audio level (RFC 6464 -dBov, 0
    /// loudest .. 127 silence) of each audio track this node forwards now, as its
    /// loudest-speaker selection measured it; a track that speaks here is reported at most at
    /// the speech threshold, so it speaks on the far node too. Sent when a level changes
    /// (checked every 100 ms) and at least every second while a track is listed. The relay's
    /// republisher writes it into the relayed packets' audio level extension, so the far node
    /// selects its loudest speakers among relayed and local sites alike.
    TrackLevels {
        levels: Vec<TrackLevel>,
    },
    /// The room is being recorded (`active: true`, since `started_at`, RFC 3339 UTC) or no
    /// longer (`active: false`; `reason` says why when it was not a stop, e.g. the disk
    /// filled). Sent to everyone in the room when it changes, and right after `joined` to a
    /// participant who joins a room being recorded. Show it: people must know.
    Recording {
        active: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A moderator (operator or host) muted or unmuted your audio: while muted the server does
    /// not forward it. Your audio tracks are also announced with `track_muted`.
    ModeratorMute {
        muted: bool,
    },
    /// Who is speaking now (RFC 6464 audio levels the clients send), loudest first; sent when
    /// the set changes. An empty list: nobody. The server forwards the audio of at most
    /// `media.loudest_speakers` sites at a time (plus the host's), so a participant not in
    /// `forwarded` is not heard.
    Speakers {
        speaking: Vec<ParticipantId>,
        forwarded: Vec<ParticipantId>,
    },
    Pong {
        ts: u64,
    },
    /// A chat message (to the room, or a private one to you or from you).
    Chat(ChatEntry),
    /// Right after `joined` when the room has chat: the recent messages you may see (at most
    /// [`CHAT_HISTORY_LEN`] by default), oldest first. After a resume: with `after` (the
    /// resume's `last_chat_id`), only the messages that came after that one — append them;
    /// without `after`, the whole recent history — merge by `id`.
    ChatHistory {
        messages: Vec<ChatEntry>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// The raised hands, in the order they went up (empty: none). Sent to everyone on every
    /// change, and right after `joined` when a hand is up.
    Hands {
        hands: Vec<RaisedHand>,
    },
    /// The host (`by`; an operator: `by` null) gave the floor to `participant_id`: its audio is
    /// no longer moderator-muted, it is spotlighted (a `spotlight` follows) and its hand is down.
    FloorGiven {
        participant_id: ParticipantId,
        #[serde(default)]
        by: Option<ParticipantId>,
    },
    /// Sent after `join` for an invitation that must wait for an operator: `waiting` while in
    /// the lobby (the client may send `ping` and `leave` meanwhile), `admitted` just before
    /// `joined`. A refusal is an `error` with code `refused`.
    Lobby {
        status: LobbyStatus,
    },
    /// The server ends this participant's session; the connection closes after it.
    Leave {
        reason: LeaveReason,
        /// The session is held for `server.resume_grace`: reconnect with `join.resume` to come
        /// back as the same participant (its media starts over). Absent (false) otherwise.
        #[serde(default, skip_serializing_if = "is_false")]
        resumable: bool,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// The `type` of the client message that caused the error, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_type: Option<String>,
    },
    /// The answer to a `join` at a node of a cluster that does not own the room: send the same
    /// `join` to `url` (the owner's signalling WebSocket URL). The connection closes after it
    /// (1000, reason `redirect`). A client follows at most [`MAX_REDIRECTS`] in a row.
    Redirect {
        url: String,
    },
}

/// How many `redirect`s in a row a client follows before giving up.
pub const MAX_REDIRECTS: usize = 3;

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            request_type: None,
        }
    }
}
