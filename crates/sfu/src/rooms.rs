//! Rooms, participants and tracks inside the media worker: join, publish (client offer →
//! server answer), subscribe (server offer → client answer, renegotiated whenever the set of
//! remote tracks changes, one offer outstanding at a time), mute, spotlight, leave.
//! Every client-caused failure becomes an `error` message to that client only.

use crate::bwe::{default_layer_cost, Level, RateMeter, VideoDemand};
use crate::conn;
use crate::handle::{Command, EventSender, JoinRequest, Moderation, RoomEvent, RoomSnapshot};
use crate::keyframe::KeyframeThrottle;
use crate::router::{choose_layer, desired_layer, Codec, Leg, PayloadTypes, TrackRoute};
use crate::speakers::{SpeakerConfig, SpeakerSelector};
use crate::worker::{Conn, Worker};
use crate::SfuError;
use rakor_proto::{
    ClientMessage, ErrorCode, IceCandidate, LeaveReason, ParticipantId, ParticipantInfo,
    PeerConnectionKind, Role, ServerMessage, SubscribedTrack, TrackId, TrackInfo, TrackKind,
    PROTOCOL_VERSION,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use std::time::Instant;

/// A published track and its forwarding route.
pub(crate) struct Track {
    pub id: TrackId,
    pub owner: ParticipantId,
    pub publisher_conn: usize,
    pub kind: TrackKind,
    pub mid: String,
    pub muted: bool,
    pub receiver_id: RTCRtpReceiverId,
    pub media_ssrc: Option<u32>,
    pub codec: Codec,
    pub route: TrackRoute,
    pub keyframe: KeyframeThrottle,
    /// A moderator muted the owner's audio: not forwarded.
    pub moderator_muted: bool,
    pub room: String,
    /// The owner is a host: its audio is always forwarded (not subject to speaker selection).
    pub host: bool,
    /// Simulcast layers, low to high (empty: one stream, `media_ssrc`).
    pub layers: Vec<TrackLayer>,
    /// Dynacast: the layers the publisher was last told to send (`None`: all, never told).
    pub sent_layers: Option<Vec<u8>>,
    /// Dynacast: the publisher was told to stop sending this (video) track.
    pub publisher_paused: bool,
    /// Negotiated id of the RFC 6464 audio level extension on this (audio) track.
    pub audio_level_ext: Option<u8>,
    /// Audio: among the loudest speakers (or not subject to selection), so forwarded.
    pub speaker_forward: bool,
    /// Audio: in its room's speaker selection (since its first packet with a level).
    pub speaker_enrolled: bool,
    /// Incoming bitrate (a simulcast track: of all layers; each layer has its own).
    pub rate: RateMeter,
}

/// One simulcast layer of a published video track.
pub(crate) struct TrackLayer {
    pub rid: String,
    pub ssrc: Option<u32>,
    /// Incoming bitrate of this layer (what forwarding it costs a subscriber).
    pub rate: RateMeter,
    /// Last packet of this layer (a layer not seen for [`LAYER_LIVE`] is not chosen).
    pub last_seen: Option<Instant>,
}

/// A simulcast layer without packets for this long counts as not sent (bandwidth-limited
/// browsers drop their high layers).
pub(crate) const LAYER_LIVE: std::time::Duration = std::time::Duration::from_millis(1500);

/// One subscribed remote track on a participant's subscriber connection.
pub(crate) struct SubLeg {
    pub track: usize,
    pub sender_id: RTCRtpSenderId,
    pub ssrc: u32,
    /// Part of the offer that is waiting for an answer.
    pub in_offer: bool,
    /// Part of an answered offer.
    pub negotiated: bool,
}

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub events: EventSender,
    pub span: tracing::Span,
    pub pub_conn: Option<usize>,
    pub sub_conn: Option<usize>,
    pub tracks: Vec<usize>,
    pub legs: Vec<SubLeg>,
    pub offer_pending: bool,
    pub needs_offer: bool,
    /// A moderator muted this participant's audio.
    pub moderator_muted: bool,
    /// Secret for `join.resume`.
    pub resume_token: String,
    /// Signalling dropped; removed at this instant unless resumed (see `resume.rs`).
    pub suspended_until: Option<Instant>,
}

pub(crate) struct Room {
    /// In join order.
    pub participants: Vec<ParticipantId>,
    pub spotlight: Option<ParticipantId>,
    /// Sites' audio tracks (by track slot) competing for the `loudest_speakers` slots.
    pub speakers: SpeakerSelector<usize>,
    /// Hosts' audio tracks: always forwarded; tracked only to say when they speak.
    pub host_speakers: SpeakerSelector<usize>,
    /// What the last `speakers` message said (speaking, forwarded).
    pub announced: (Vec<ParticipantId>, Vec<ParticipantId>),
}

impl Room {
    pub fn new(loudest_speakers: usize) -> Self {
        let cfg = SpeakerConfig::default();
        Room {
            participants: Vec::new(),
            spotlight: None,
            speakers: SpeakerSelector::new(SpeakerConfig {
                max_active: loudest_speakers,
                ..cfg.clone()
            }),
            host_speakers: SpeakerSelector::new(SpeakerConfig {
                max_active: usize::MAX,
                ..cfg
            }),
            announced: (Vec::new(), Vec::new()),
        }
    }
}

fn random_id(prefix: &str) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 12)
    )
}

/// A client-caused failure: sent as `error` to that client.
pub(crate) struct Reject(ErrorCode, String);

impl Reject {
    fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Reject(code, msg.into())
    }
}

fn kind_of(k: RtpCodecKind) -> Option<TrackKind> {
    match k {
        RtpCodecKind::Audio => Some(TrackKind::Audio),
        RtpCodecKind::Video => Some(TrackKind::Video),
        _ => None,
    }
}

/// Count the audio/video m-lines of an SDP that send media (not inactive/recvonly), and make
/// sure the text is plausibly an SDP before the core parses it.
/// Simulcast layers per media section of an offer: `(mid, rids)` from `a=simulcast:send`, in
/// the order listed there, which Rakor's clients keep low to high (`q;h;f`). Alternatives
/// (`q,x`) count by their first rid; a paused rid (`~h`) still counts.
pub(crate) fn simulcast_rids(sdp: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut mid: Option<String> = None;
    let mut rids: Option<Vec<String>> = None;
    let mut flush = |mid: &mut Option<String>, rids: &mut Option<Vec<String>>| {
        if let (Some(m), Some(r)) = (mid.take(), rids.take()) {
            if r.len() > 1 {
                out.push((m, r));
            }
        }
        *mid = None;
        *rids = None;
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            flush(&mut mid, &mut rids);
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("a=simulcast:send ") {
            let list = rest.split_whitespace().next().unwrap_or("");
            let r: Vec<String> = list
                .split(';')
                .filter_map(|alt| alt.split(',').next())
                .map(|r| r.trim_start_matches('~').to_owned())
                .filter(|r| !r.is_empty() && r.len() <= 16)
                .take(4)
                .collect();
            rids = Some(r);
        }
    }
    flush(&mut mid, &mut rids);
    out
}

pub(crate) fn count_sending_media(sdp: &str) -> Result<usize, Reject> {
    if !sdp.starts_with("v=0") {
        return Err(Reject::new(
            ErrorCode::InvalidSdp,
            "SDP must start with \"v=0\"",
        ));
    }
    let mut count = 0;
    let mut in_media = false;
    let mut sending = true;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            if in_media && sending {
                count += 1;
            }
            in_media = rest.starts_with("audio") || rest.starts_with("video");
            sending = true;
        } else if in_media && (line == "a=inactive" || line == "a=recvonly") {
            sending = false;
        }
    }
    if in_media && sending {
        count += 1;
    }
    Ok(count)
}

impl Worker {
    pub(crate) fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Join { req, reply } => {
                let r = self.join(req);
                let _ = reply.send(r);
            }
            Command::Client { participant, msg } => {
                let Some(p) = self.participants.get(&participant) else {
                    return;
                };
                let span = p.span.clone();
                let _g = span.enter();
                let ty = msg.type_name();
                let now = Instant::now();
                if let Err(Reject(code, message)) = self.client_message(&participant, msg, now) {
                    tracing::debug!(%code, %message, "rejected client message");
                    self.send(
                        &participant,
                        ServerMessage::Error {
                            code,
                            message,
                            request_type: Some(ty.to_owned()),
                        },
                    );
                }
                self.service_dirty(now);
                self.flush();
            }
            Command::Disconnect {
                participant,
                reason,
                conn,
            } => {
                self.signalling_lost(&participant, reason, conn.as_ref());
                self.service_dirty(Instant::now());
                self.flush();
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats_snapshot());
            }
            Command::Moderate {
                room,
                action,
                reply,
            } => {
                let r = self.moderate(&room, action);
                let _ = reply.send(r);
                let now = Instant::now();
                self.renegotiate_pending(now);
                self.service_dirty(now);
                self.flush();
            }
            Command::RoomInfo { room, reply } => {
                let snap = self.rooms.get(&room).map(|r| RoomSnapshot {
                    participants: r
                        .participants
                        .iter()
                        .filter_map(|id| self.participants.get(id))
                        .map(|p| self.participant_info(p))
                        .collect(),
                    spotlight: r.spotlight.clone(),
                    moderator_muted: r
                        .participants
                        .iter()
                        .filter(|id| {
                            self.participants
                                .get(*id)
                                .is_some_and(|p| p.moderator_muted)
                        })
                        .cloned()
                        .collect(),
                });
                let _ = reply.send(snap);
            }
            Command::Shutdown { .. } => {}
        }
    }

    pub(crate) fn send(&self, to: &ParticipantId, msg: ServerMessage) {
        if let Some(p) = self.participants.get(to) {
            let _ = p.events.send(msg);
        }
    }

    pub(crate) fn broadcast(
        &self,
        room: &str,
        except: Option<&ParticipantId>,
        msg: &ServerMessage,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for id in &r.participants {
            if Some(id) != except {
                self.send(id, msg.clone());
            }
        }
    }

    fn track_info(&self, ti: usize) -> Option<TrackInfo> {
        let t = self.tracks.get(ti)?;
        Some(TrackInfo {
            id: t.id.clone(),
            kind: t.kind,
            mid: t.mid.clone(),
            muted: t.muted,
        })
    }

    pub(crate) fn participant_info(&self, p: &Participant) -> ParticipantInfo {
        ParticipantInfo {
            id: p.id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            role: p.role,
            tracks: p
                .tracks
                .iter()
                .filter_map(|&t| self.track_info(t))
                .collect(),
        }
    }

    fn room_event(&self, ev: RoomEvent) {
        if let Some(tx) = &self.room_events {
            let _ = tx.send(ev);
        }
    }

    /// The room of `pid` if it is the host; `forbidden` with `why` otherwise.
    fn host_room(&self, pid: &ParticipantId, why: &str) -> Result<String, Reject> {
        let p = self
            .participants
            .get(pid)
            .ok_or_else(|| Reject::new(ErrorCode::InvalidState, "not joined"))?;
        if p.role != Role::Host {
            return Err(Reject::new(ErrorCode::Forbidden, why));
        }
        Ok(p.room.clone())
    }

    /// `moderate` from a client: host only, then the same path as the operator's API.
    fn host_moderates(
        &mut self,
        pid: &ParticipantId,
        action: rakor_proto::ModerateAction,
        target: Option<ParticipantId>,
    ) -> Result<(), Reject> {
        use rakor_proto::ModerateAction as A;
        let room = self.host_room(pid, "only the host may moderate")?;
        let need_target = || {
            target.clone().ok_or_else(|| {
                Reject::new(
                    ErrorCode::BadRequest,
                    "this action needs \"participant_id\"",
                )
            })
        };
        let m = match action {
            A::MuteAudio => Moderation::MuteAudio {
                participant: need_target()?,
                muted: true,
            },
            A::UnmuteAudio => Moderation::MuteAudio {
                participant: need_target()?,
                muted: false,
            },
            A::Remove => Moderation::Remove {
                participant: need_target()?,
            },
            A::EndRoom => Moderation::EndRoom,
        };
        self.moderate(&room, m).map_err(|e| match e {
            SfuError::UnknownParticipant(id) => Reject::new(
                ErrorCode::UnknownParticipant,
                format!("no participant \"{id}\" in this room"),
            ),
            other => Reject::new(ErrorCode::Internal, other.to_string()),
        })
    }

    fn moderate(&mut self, room: &str, action: Moderation) -> Result<(), SfuError> {
        let members = self
            .rooms
            .get(room)
            .map(|r| r.participants.clone())
            .ok_or_else(|| SfuError::UnknownRoom(room.to_owned()))?;
        let check = |p: &ParticipantId| {
            if members.contains(p) {
                Ok(())
            } else {
                Err(SfuError::UnknownParticipant(p.0.clone()))
            }
        };
        match action {
            Moderation::MuteAudio { participant, muted } => {
                check(&participant)?;
                let tracks = match self.participants.get_mut(&participant) {
                    Some(p) => {
                        p.moderator_muted = muted;
                        p.tracks.clone()
                    }
                    None => return Err(SfuError::UnknownParticipant(participant.0)),
                };
                tracing::info!(participant = %participant, muted, "moderator audio mute");
                self.send(&participant, ServerMessage::ModeratorMute { muted });
                for ti in tracks {
                    let Some(t) = self.tracks.get_mut(ti) else {
                        continue;
                    };
                    if t.kind != TrackKind::Audio {
                        continue;
                    }
                    t.moderator_muted = muted;
                    t.muted = muted;
                    let m = ServerMessage::TrackMuted {
                        participant_id: participant.clone(),
                        track_id: t.id.clone(),
                        muted,
                    };
                    self.broadcast(room, None, &m);
                }
            }
            Moderation::Remove { participant } => {
                check(&participant)?;
                self.remove_participant(&participant, LeaveReason::Removed, true);
            }
            Moderation::Spotlight { participant } => {
                if let Some(p) = &participant {
                    check(p)?;
                }
                if let Some(r) = self.rooms.get_mut(room) {
                    r.spotlight = participant.clone();
                }
                // `by` names the room's host if any, else the spotlighted participant.
                let by = members
                    .iter()
                    .find(|id| {
                        self.participants
                            .get(*id)
                            .is_some_and(|p| p.role == Role::Host)
                    })
                    .or(participant.as_ref())
                    .or(members.first())
                    .cloned()
                    .unwrap_or_else(|| ParticipantId(String::new()));
                self.broadcast(
                    room,
                    None,
                    &ServerMessage::Spotlight {
                        participant_id: participant,
                        by,
                    },
                );
            }
            Moderation::EndRoom => {
                tracing::info!(room, "room ended by a moderator");
                for p in members {
                    self.remove_participant(&p, LeaveReason::RoomEnded, true);
                }
                self.end_parked_room(room);
            }
        }
        Ok(())
    }

    fn join(&mut self, req: JoinRequest) -> Result<ParticipantId, SfuError> {
        if self.stopping {
            return Err(SfuError::ShuttingDown);
        }
        if let Some(resume) = &req.resume {
            let now = Instant::now();
            if self.try_resume(&req.room, &req.identity, resume, &req.events, now)? {
                self.service_dirty(now);
                self.flush();
                return Ok(resume.participant_id.clone());
            }
            // A stale connection (replaced by a newer one of the same identity) must not push
            // the live one out by coming back.
            let live_elsewhere = self.rooms.get(&req.room).is_some_and(|r| {
                r.participants.iter().any(|id| {
                    self.participants
                        .get(id)
                        .is_some_and(|p| p.identity == req.identity && p.suspended_until.is_none())
                })
            });
            if live_elsewhere {
                tracing::info!(room = %req.room, "resume refused: the identity is connected elsewhere");
                return Err(SfuError::Replaced);
            }
            tracing::info!(room = %req.room, "resume not possible; joining as a new session");
        }
        // A session of this identity parked after a media failure ends here (resume.rs).
        self.end_parked_identity(&req.room, &req.identity);
        // The same identity joining again replaces the older connection.
        let old = self.rooms.get(&req.room).and_then(|r| {
            r.participants
                .iter()
                .find(|id| {
                    self.participants
                        .get(*id)
                        .is_some_and(|p| p.identity == req.identity)
                })
                .cloned()
        });
        if let Some(old) = old {
            tracing::info!(room = %req.room, identity = %req.identity, "identity joined again; replacing");
            self.remove_participant(&old, LeaveReason::Replaced, true);
        }
        let count = self
            .rooms
            .get(&req.room)
            .map_or(0, |r| r.participants.len());
        if count >= self.cfg.max_participants_per_room {
            return Err(SfuError::RoomFull(req.room));
        }
        if count == 0 && self.rooms.len() >= self.cfg.max_rooms {
            return Err(SfuError::TooManyRooms(self.cfg.max_rooms));
        }
        let id = ParticipantId(random_id("PA_"));
        let span = tracing::info_span!("participant", room = %req.room, participant = %id);
        let _g = span.enter();
        tracing::info!(role = req.role.as_str(), "joined");
        let loudest = self.cfg.loudest_speakers;
        self.rooms
            .entry(req.room.clone())
            .or_insert_with(|| Room::new(loudest));
        let (spotlight, others) = match self.rooms.get(&req.room) {
            Some(room) => (
                room.spotlight.clone(),
                room.participants
                    .iter()
                    .filter_map(|pid| self.participants.get(pid))
                    .map(|p| self.participant_info(p))
                    .collect::<Vec<_>>(),
            ),
            None => (None, Vec::new()),
        };
        let p = Participant {
            id: id.clone(),
            room: req.room.clone(),
            identity: req.identity,
            name: req.name,
            role: req.role,
            events: req.events,
            span: span.clone(),
            pub_conn: None,
            sub_conn: None,
            tracks: Vec::new(),
            legs: Vec::new(),
            offer_pending: false,
            needs_offer: false,
            moderator_muted: false,
            resume_token: crate::resume::new_token(),
            suspended_until: None,
        };
        let _ = p.events.send(ServerMessage::Joined {
            version: PROTOCOL_VERSION,
            participant_id: id.clone(),
            room: req.room.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            role: p.role,
            participants: others,
            spotlight,
            resume_token: p.resume_token.clone(),
            resumed: false,
            media_reset: false,
        });
        let info = self.participant_info(&p);
        self.broadcast(
            &req.room,
            None,
            &ServerMessage::ParticipantJoined { participant: info },
        );
        self.room_event(RoomEvent::Joined {
            room: req.room.clone(),
            participant: id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            role: p.role,
            at: std::time::SystemTime::now(),
        });
        self.participants.insert(id.clone(), p);
        if let Some(r) = self.rooms.get_mut(&req.room) {
            r.participants.push(id.clone());
        }
        // Subscribe to everything already published in the room.
        let existing: Vec<usize> = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                self.participants
                    .get(&t.owner)
                    .is_some_and(|o| o.room == req.room)
            })
            .map(|(i, _)| i)
            .collect();
        let now = Instant::now();
        for ti in existing {
            if let Err(Reject(code, msg)) = self.subscribe(&id, ti, now) {
                tracing::warn!(%code, "subscribe on join failed: {msg}");
            }
        }
        self.renegotiate_pending(now);
        self.service_dirty(now);
        self.flush();
        Ok(id)
    }

    fn client_message(
        &mut self,
        pid: &ParticipantId,
        msg: ClientMessage,
        now: Instant,
    ) -> Result<(), Reject> {
        match msg {
            ClientMessage::Join { .. } => {
                Err(Reject::new(ErrorCode::InvalidState, "already joined"))
            }
            ClientMessage::Offer {
                pc: PeerConnectionKind::Publisher,
                sdp,
            } => self.publish(pid, &sdp, now),
            ClientMessage::Offer {
                pc: PeerConnectionKind::Subscriber,
                ..
            } => Err(Reject::new(
                ErrorCode::BadRequest,
                "the server makes the offers on the subscriber connection; send \"answer\"",
            )),
            ClientMessage::Answer {
                pc: PeerConnectionKind::Subscriber,
                sdp,
            } => self.subscriber_answer(pid, sdp, now),
            ClientMessage::Answer {
                pc: PeerConnectionKind::Publisher,
                ..
            } => Err(Reject::new(
                ErrorCode::BadRequest,
                "the client makes the offers on the publisher connection; send \"offer\"",
            )),
            ClientMessage::Candidate { pc, candidate } => self.remote_candidate(pid, pc, candidate),
            ClientMessage::Unpublish { track_id } => {
                let ti = self.own_track(pid, &track_id)?;
                self.unpublish(ti, now);
                Ok(())
            }
            ClientMessage::MuteTrack { track_id, muted } => {
                let ti = self.own_track(pid, &track_id)?;
                let Some(t) = self.tracks.get_mut(ti) else {
                    return Ok(());
                };
                if t.muted != muted {
                    t.muted = muted;
                    let room = self
                        .participants
                        .get(pid)
                        .map(|p| p.room.clone())
                        .unwrap_or_default();
                    let m = ServerMessage::TrackMuted {
                        participant_id: pid.clone(),
                        track_id,
                        muted,
                    };
                    self.broadcast(&room, None, &m);
                }
                Ok(())
            }
            ClientMessage::Spotlight { participant_id } => self.spotlight(pid, participant_id),
            ClientMessage::Ping { ts } => {
                self.send(pid, ServerMessage::Pong { ts });
                Ok(())
            }
            ClientMessage::Moderate {
                action,
                participant_id,
            } => self.host_moderates(pid, action, participant_id),
            ClientMessage::Leave {} => {
                self.remove_participant(pid, LeaveReason::ClientRequest, false);
                Ok(())
            }
            ClientMessage::TrackSettings {
                track_id,
                visible,
                width,
                height,
            } => self.track_settings(pid, &track_id, visible, (width, height), now),
        }
    }

    /// A subscriber shows (or hides) a remote video track: pause or resume its leg, then let
    /// the publisher pause the track if nobody shows it (dynacast).
    fn track_settings(
        &mut self,
        pid: &ParticipantId,
        track_id: &TrackId,
        visible: bool,
        size: (u32, u32),
        now: Instant,
    ) -> Result<(), Reject> {
        let room = self.participants.get(pid).map(|p| p.room.clone());
        let sub_conn = self.participants.get(pid).and_then(|p| p.sub_conn);
        let found = self
            .tracks
            .iter()
            .find(|(_, t)| t.id == *track_id && Some(&t.room) == room.as_ref())
            .map(|(i, t)| (i, t.kind));
        let Some((ti, kind)) = found else {
            return Err(Reject::new(
                ErrorCode::UnknownTrack,
                format!("no track {track_id} in this room"),
            ));
        };
        if kind != TrackKind::Video {
            return Err(Reject::new(
                ErrorCode::BadRequest,
                "track_settings applies to video tracks",
            ));
        }
        let Some(leg) = sub_conn.and_then(|ci| self.tracks.get_mut(ti)?.route.leg_mut(ci)) else {
            return Err(Reject::new(
                ErrorCode::UnknownTrack,
                format!("track {track_id} is not subscribed on this connection yet"),
            ));
        };
        leg.size = size;
        let retarget = self.retarget_leg(ti, sub_conn, now);
        if retarget {
            self.request_keyframe(ti, now);
        }
        let Some(leg) = sub_conn.and_then(|ci| self.tracks.get_mut(ti)?.route.leg_mut(ci)) else {
            return Ok(());
        };
        if leg.set_paused(!visible) {
            tracing::debug!(track = %track_id, visible, "subscriber leg paused/resumed");
            self.update_publisher_pause(ti);
            if visible {
                self.request_keyframe(ti, now);
            }
        }
        Ok(())
    }

    /// Simulcast: set a leg's target layer from its tile size and the layers that are live.
    /// True when the leg now waits for a keyframe of another layer.
    fn retarget_leg(&mut self, ti: usize, conn: Option<usize>, now: Instant) -> bool {
        let Some(t) = self.tracks.get_mut(ti) else {
            return false;
        };
        if t.layers.len() < 2 {
            return false;
        }
        let live: Vec<bool> = t
            .layers
            .iter()
            .map(|l| {
                l.last_seen
                    .is_some_and(|s| now.saturating_duration_since(s) < LAYER_LIVE)
            })
            .collect();
        let n = t.layers.len();
        let mut waiting = false;
        for leg in t
            .route
            .legs
            .iter_mut()
            .filter(|l| conn.is_none_or(|c| l.conn == c))
        {
            let desired = desired_layer(leg.size.1, n).min(leg.cap);
            leg.want = desired;
            if let Some(target) = choose_layer(desired, &live) {
                leg.target = target;
            }
            waiting |= leg.flowing() && leg.layer != Some(leg.target);
        }
        waiting
    }

    /// Every 100 ms: re-choose simulcast layers (a layer may have stopped or started) and ask
    /// for keyframes where a switch waits.
    pub(crate) fn update_layers(&mut self, now: Instant) {
        let simulcast: Vec<usize> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.layers.len() > 1)
            .map(|(i, _)| i)
            .collect();
        for ti in simulcast {
            if self.retarget_leg(ti, None, now) {
                self.request_keyframe(ti, now);
            }
            self.update_publisher_layers(ti);
        }
    }

    /// Every 100 ms: close the bitrate windows, then give each subscriber connection's video
    /// legs what its bandwidth estimate allows ([`crate::bwe`]): a cap on the simulcast layer,
    /// or no video at all for the least important legs.
    pub(crate) fn update_bandwidth(&mut self, now: Instant) {
        for (_, t) in self.tracks.iter_mut() {
            t.rate.tick(now);
            t.layers.iter_mut().for_each(|l| l.rate.tick(now));
        }
        // One pass over the tracks: per subscriber connection, its audio and its video legs.
        struct Sub {
            audio_bps: f64,
            legs: Vec<(usize, VideoDemand, Option<Level>)>,
        }
        let mut subs: std::collections::HashMap<usize, Sub> = std::collections::HashMap::new();
        for (ti, t) in self.tracks.iter() {
            let high_priority = t.host
                || self
                    .rooms
                    .get(&t.room)
                    .is_some_and(|r| r.spotlight.as_ref() == Some(&t.owner));
            for leg in t.route.legs.iter().filter(|l| l.active) {
                if self
                    .conns
                    .get(leg.conn)
                    .is_none_or(|c| c.estimate.is_none())
                {
                    continue;
                }
                let sub = subs.entry(leg.conn).or_insert_with(|| Sub {
                    audio_bps: 0.0,
                    legs: Vec::new(),
                });
                match t.kind {
                    TrackKind::Audio => {
                        if t.speaker_forward && !t.moderator_muted {
                            sub.audio_bps += if t.rate.bps() > 0.0 {
                                t.rate.bps()
                            } else {
                                50_000.0
                            };
                        }
                    }
                    TrackKind::Video if !leg.paused => {
                        let layer_costs: Vec<f64> = if t.layers.len() > 1 {
                            t.layers
                                .iter()
                                .enumerate()
                                .map(|(i, l)| match l.rate.bps() {
                                    r if r > 0.0 => r,
                                    _ => default_layer_cost(i),
                                })
                                .collect()
                        } else {
                            vec![t.rate.bps()]
                        };
                        let n = layer_costs.len();
                        let desired = if n > 1 {
                            usize::from(desired_layer(leg.size.1, n))
                        } else {
                            0
                        };
                        let demand = VideoDemand {
                            high_priority,
                            area: u64::from(leg.size.0) * u64::from(leg.size.1),
                            layer_costs,
                            desired,
                        };
                        sub.legs.push((ti, demand, leg.allot));
                    }
                    TrackKind::Video => {}
                }
            }
        }
        for (ci, sub) in subs {
            if sub.legs.is_empty() {
                continue;
            }
            let Some(c) = self.conns.get_mut(ci) else {
                continue;
            };
            let estimate = c.estimate.as_ref().and_then(|e| e.estimate());
            let demands: Vec<VideoDemand> = sub.legs.iter().map(|(_, d, _)| d.clone()).collect();
            let current: Vec<Option<Level>> = sub.legs.iter().map(|(.., a)| *a).collect();
            let levels = c
                .alloc
                .step(now, estimate, sub.audio_bps, &demands, &current);
            for ((ti, demand, before), level) in sub.legs.into_iter().zip(levels) {
                if before == Some(level) {
                    continue;
                }
                self.apply_allotment(ti, ci, level, demand.layer_costs.len() > 1, estimate, now);
            }
        }
    }

    /// Apply one leg's allotment: no video (level 0), or video up to layer `level − 1`.
    fn apply_allotment(
        &mut self,
        ti: usize,
        ci: usize,
        level: Level,
        simulcast: bool,
        estimate: Option<f64>,
        now: Instant,
    ) {
        let Some(leg) = self.tracks.get_mut(ti).and_then(|t| t.route.leg_mut(ci)) else {
            return;
        };
        let before = leg.allot.replace(level);
        let resumed = leg.set_bw_paused(level == 0);
        if level > 0 {
            leg.cap = u8::try_from(level - 1).unwrap_or(u8::MAX);
        }
        if before.is_some() {
            tracing::debug!(
                track = ti,
                conn = ci,
                ?before,
                level,
                ?estimate,
                "bandwidth allotment"
            );
        }
        let waiting = simulcast && level > 0 && self.retarget_leg(ti, Some(ci), now);
        if resumed || waiting {
            self.request_keyframe(ti, now);
        }
        if simulcast {
            self.update_publisher_layers(ti);
        }
    }

    /// Dynacast per layer: tell the publisher which simulcast layers anyone needs — each shown
    /// leg's wanted layer (by its tile, even if not sent now), its target and, while switching,
    /// its current one. No shown leg: all layers (a track nobody shows is paused as a whole).
    fn update_publisher_layers(&mut self, ti: usize) {
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        let n = t.layers.len();
        let mut needed = vec![false; n];
        let mut any = false;
        for leg in t.route.legs.iter().filter(|l| !l.paused && !l.bw_paused) {
            any = true;
            let want = [
                Some(desired_layer(leg.size.1, n).min(leg.cap)),
                Some(leg.target),
                leg.layer,
            ];
            for l in want.into_iter().flatten() {
                if let Some(slot) = needed.get_mut(usize::from(l)) {
                    *slot = true;
                }
            }
        }
        let needed: Vec<u8> = if any {
            (0..n)
                .filter(|&i| needed.get(i).copied().unwrap_or(false))
                .filter_map(|i| u8::try_from(i).ok())
                .collect()
        } else {
            (0..n).filter_map(|i| u8::try_from(i).ok()).collect()
        };
        let all = needed.len() == n;
        let unchanged = match &t.sent_layers {
            None => all,
            Some(prev) => *prev == needed,
        };
        if unchanged {
            return;
        }
        let rids: Vec<String> = needed
            .iter()
            .filter_map(|&i| t.layers.get(usize::from(i)).map(|l| l.rid.clone()))
            .collect();
        t.sent_layers = Some(needed);
        let (owner, track_id) = (t.owner.clone(), t.id.clone());
        tracing::debug!(track = %track_id, ?rids, "publisher layers");
        self.send(&owner, ServerMessage::PublisherLayers { track_id, rids });
    }

    /// Dynacast: a video track that has subscribers, all of which have paused it, is paused at
    /// the publisher (`publisher_pause`), and resumed as soon as one shows it or a new one
    /// subscribes. A track without subscribers is left alone (joins would wait on it).
    pub(crate) fn update_publisher_pause(&mut self, ti: usize) {
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        if t.kind != TrackKind::Video {
            return;
        }
        let pause = !t.route.legs.is_empty() && t.route.legs.iter().all(|l| l.paused);
        if pause == t.publisher_paused {
            return;
        }
        t.publisher_paused = pause;
        let (owner, track_id) = (t.owner.clone(), t.id.clone());
        tracing::debug!(track = %track_id, pause, "publisher pause");
        self.send(
            &owner,
            ServerMessage::PublisherPause {
                track_id,
                paused: pause,
            },
        );
    }

    fn own_track(&self, pid: &ParticipantId, track_id: &TrackId) -> Result<usize, Reject> {
        let p = self
            .participants
            .get(pid)
            .ok_or_else(|| Reject::new(ErrorCode::InvalidState, "not joined"))?;
        p.tracks
            .iter()
            .copied()
            .find(|&t| self.tracks.get(t).is_some_and(|t| &t.id == track_id))
            .ok_or_else(|| {
                Reject::new(
                    ErrorCode::UnknownTrack,
                    format!("no track \"{track_id}\" published by you"),
                )
            })
    }

    fn spotlight(
        &mut self,
        pid: &ParticipantId,
        target: Option<ParticipantId>,
    ) -> Result<(), Reject> {
        let room = self.host_room(pid, "only the host may set the spotlight")?;
        if let Some(t) = &target {
            if self.participants.get(t).is_none_or(|tp| tp.room != room) {
                return Err(Reject::new(
                    ErrorCode::UnknownParticipant,
                    format!("no participant \"{t}\" in this room"),
                ));
            }
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.spotlight = target.clone();
        }
        tracing::info!(spotlight = ?target.as_ref().map(|t| t.0.as_str()), "spotlight set");
        self.broadcast(
            &room,
            None,
            &ServerMessage::Spotlight {
                participant_id: target,
                by: pid.clone(),
            },
        );
        Ok(())
    }

    fn new_conn(
        &mut self,
        owner: &ParticipantId,
        kind: PeerConnectionKind,
        now: Instant,
    ) -> Result<usize, Reject> {
        let (ufrag, pwd) = conn::ice_credentials();
        let timeouts =
            crate::liveness::IceTimeouts::for_dead_peer_timeout(self.cfg.dead_peer_timeout);
        let estimate = (kind == PeerConnectionKind::Subscriber && self.cfg.bandwidth_estimation)
            .then(|| std::sync::Arc::new(crate::bwe::EstimateCell::default()));
        let pc = conn::build(now, &ufrag, &pwd, timeouts, estimate.clone()).map_err(|e| {
            Reject::new(
                ErrorCode::Internal,
                format!("cannot create a peer connection: {e}"),
            )
        })?;
        let ci = self.conns.insert(Conn {
            pc,
            ufrag: ufrag.clone(),
            owner: owner.clone(),
            kind,
            deadline: None,
            dirty: true,
            connected: false,
            inbound: Vec::new(),
            outbound: Vec::new(),
            estimate,
            alloc: crate::bwe::Allocator::new(crate::bwe::BweConfig::default()),
        });
        self.demux.add_ufrag(ufrag, ci);
        Ok(ci)
    }

    /// Add our host candidates (and end-of-candidates) to a connection, before its first
    /// offer/answer is created so that the SDP carries them.
    fn add_local_candidates(&mut self, ci: usize) {
        let cands = conn::host_candidates(&self.advertise, self.local_addr.port());
        let Some(c) = self.conns.get_mut(ci) else {
            return;
        };
        for cand in cands {
            if let Err(e) = c.pc.add_local_candidate(cand) {
                tracing::warn!("add_local_candidate: {e}");
            }
        }
        let _ = c.pc.add_local_candidate(RTCIceCandidateInit::default());
    }

    /// Trickle our candidates too, after the SDP message, for clients that expect trickle.
    fn trickle_local_candidates(&self, owner: &ParticipantId, kind: PeerConnectionKind) {
        let cands = conn::host_candidates(&self.advertise, self.local_addr.port());
        for cand in cands
            .into_iter()
            .chain(std::iter::once(RTCIceCandidateInit::default()))
        {
            self.send(
                owner,
                ServerMessage::Candidate {
                    pc: kind,
                    candidate: IceCandidate {
                        candidate: cand.candidate,
                        sdp_mid: Some("0".into()),
                        sdp_mline_index: Some(0),
                        username_fragment: None,
                    },
                },
            );
        }
    }

    /// Client offer on the publisher connection → answer, then announce new tracks.
    fn publish(&mut self, pid: &ParticipantId, sdp: &str, now: Instant) -> Result<(), Reject> {
        let p = self
            .participants
            .get(pid)
            .ok_or_else(|| Reject::new(ErrorCode::InvalidState, "not joined"))?;
        if !p.role.can_publish() {
            return Err(Reject::new(
                ErrorCode::Forbidden,
                format!("role \"{}\" may not publish", p.role.as_str()),
            ));
        }
        let media = count_sending_media(sdp)?;
        if media > self.cfg.max_tracks_per_participant {
            return Err(Reject::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{media} tracks offered; at most {} per participant",
                    self.cfg.max_tracks_per_participant
                ),
            ));
        }
        let offer = RTCSessionDescription::offer(sdp.to_owned())
            .map_err(|e| Reject::new(ErrorCode::InvalidSdp, format!("invalid offer: {e}")))?;
        let (ci, fresh) = match p.pub_conn {
            Some(ci) => (ci, false),
            None => (
                self.new_conn(pid, PeerConnectionKind::Publisher, now)?,
                true,
            ),
        };
        let answer_sdp = {
            let Some(c) = self.conns.get_mut(ci) else {
                return Err(Reject::new(
                    ErrorCode::Internal,
                    "publisher connection vanished",
                ));
            };
            let r = (|| {
                c.pc.set_remote_description(now, offer)?;
                if fresh {
                    let cands = conn::host_candidates(&self.advertise, self.local_addr.port());
                    for cand in cands {
                        c.pc.add_local_candidate(cand)?;
                    }
                    c.pc.add_local_candidate(RTCIceCandidateInit::default())?;
                }
                let answer = c.pc.create_answer(None)?;
                c.pc.set_local_description(now, answer)?;
                Ok::<_, rtc::shared::error::Error>(c.pc.local_description().map(|d| d.sdp))
            })();
            c.dirty = true;
            match r {
                Ok(Some(sdp)) => sdp,
                Ok(None) | Err(_) => {
                    let msg = match r {
                        Err(e) => format!("cannot negotiate the offer: {e}"),
                        _ => "no local description".to_owned(),
                    };
                    if fresh {
                        self.close_conn(ci);
                    }
                    return Err(Reject::new(ErrorCode::InvalidSdp, msg));
                }
            }
        };
        if let Some(p) = self.participants.get_mut(pid) {
            p.pub_conn = Some(ci);
        }
        // The answer carries our candidates; they are trickled too.
        self.send(
            pid,
            ServerMessage::Answer {
                pc: PeerConnectionKind::Publisher,
                sdp: answer_sdp,
            },
        );
        if fresh {
            self.trickle_local_candidates(pid, PeerConnectionKind::Publisher);
        }
        let rids = simulcast_rids(sdp);
        self.sync_published_tracks(pid, ci, &rids, now);
        Ok(())
    }

    /// Compare the publisher connection's receiving transceivers with the published tracks:
    /// publish new ones, unpublish stopped ones.
    fn sync_published_tracks(
        &mut self,
        pid: &ParticipantId,
        ci: usize,
        rids: &[(String, Vec<String>)],
        now: Instant,
    ) {
        #[allow(clippy::type_complexity)]
        let mut receiving: Vec<(
            String,
            RTCRtpReceiverId,
            TrackKind,
            Codec,
            PayloadTypes,
            Option<u8>,
        )> = Vec::new();
        if let Some(c) = self.conns.get_mut(ci) {
            let ids: Vec<_> = c.pc.get_transceivers().collect();
            for tid in ids {
                let Some(t) = c.pc.rtp_transceiver(tid) else {
                    continue;
                };
                let (Some(mid), Some(rid)) = (t.mid().clone(), t.receiver()) else {
                    continue;
                };
                if !t.direction().has_recv() {
                    continue;
                }
                let Some(mut r) = c.pc.rtp_receiver(rid) else {
                    continue;
                };
                let Some(kind) = kind_of(r.track().kind()) else {
                    continue;
                };
                let params = &r.get_parameters().rtp_parameters;
                let codecs = params.codecs.clone();
                let audio_level_ext = params
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == conn::AUDIO_LEVEL_URI)
                    .and_then(|e| u8::try_from(e.id).ok())
                    .filter(|_| kind == TrackKind::Audio);
                let pts = conn::payload_types(&codecs);
                let codec = codecs
                    .iter()
                    .find_map(|c| Codec::from_mime(&c.rtp_codec.mime_type))
                    .unwrap_or(if kind == TrackKind::Audio {
                        Codec::Opus
                    } else {
                        Codec::Vp8
                    });
                receiving.push((mid, rid, kind, codec, pts, audio_level_ext));
            }
        }
        let current: Vec<usize> = self
            .participants
            .get(pid)
            .map(|p| p.tracks.clone())
            .unwrap_or_default();
        // Unpublish tracks whose transceiver stopped receiving.
        for &ti in &current {
            let gone = self
                .tracks
                .get(ti)
                .is_some_and(|t| !receiving.iter().any(|(m, ..)| *m == t.mid));
            if gone {
                self.unpublish(ti, now);
            }
        }
        let Some(room) = self.participants.get(pid).map(|p| p.room.clone()) else {
            return;
        };
        let host = self
            .participants
            .get(pid)
            .is_some_and(|p| p.role == Role::Host);
        for (mid, rid, kind, codec, pts, audio_level_ext) in receiving {
            let existing = self.participants.get(pid).and_then(|p| {
                p.tracks
                    .iter()
                    .copied()
                    .find(|&t| self.tracks.get(t).is_some_and(|t| t.mid == mid))
            });
            if let Some(ti) = existing {
                if let Some(t) = self.tracks.get_mut(ti) {
                    t.route.publisher_pts = pts;
                    t.receiver_id = rid;
                    if t.audio_level_ext != audio_level_ext {
                        t.audio_level_ext = audio_level_ext;
                        self.reset_speaker(ti);
                    }
                }
                continue;
            }
            let id = TrackId(random_id("TR_"));
            let ti = self.tracks.insert(Track {
                id: id.clone(),
                owner: pid.clone(),
                publisher_conn: ci,
                kind,
                mid: mid.clone(),
                muted: false,
                receiver_id: rid,
                media_ssrc: None,
                codec,
                route: TrackRoute {
                    publisher_pts: pts,
                    legs: Vec::new(),
                },
                keyframe: KeyframeThrottle::new(self.cfg.keyframe_request_interval),
                moderator_muted: kind == TrackKind::Audio
                    && self
                        .participants
                        .get(pid)
                        .is_some_and(|p| p.moderator_muted),
                room: room.clone(),
                host,
                audio_level_ext,
                speaker_forward: true,
                speaker_enrolled: false,
                publisher_paused: false,
                layers: rids
                    .iter()
                    .find(|(m, _)| *m == mid)
                    .filter(|_| kind == TrackKind::Video)
                    .map(|(_, r)| {
                        r.iter()
                            .map(|rid| TrackLayer {
                                rid: rid.clone(),
                                ssrc: None,
                                last_seen: None,
                                rate: RateMeter::default(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                sent_layers: None,
                rate: RateMeter::default(),
            });
            if let Some(p) = self.participants.get_mut(pid) {
                p.tracks.push(ti);
            }
            tracing::info!(track = %id, ?kind, %mid, "track published");
            let info = TrackInfo {
                id,
                kind,
                mid,
                muted: false,
            };
            self.broadcast(
                &room,
                None,
                &ServerMessage::TrackPublished {
                    participant_id: pid.clone(),
                    track: info,
                },
            );
            let others: Vec<ParticipantId> = self
                .rooms
                .get(&room)
                .map(|r| {
                    r.participants
                        .iter()
                        .filter(|o| *o != pid)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for o in others {
                if let Err(Reject(code, msg)) = self.subscribe(&o, ti, now) {
                    tracing::warn!(%code, subscriber = %o, "subscribe failed: {msg}");
                }
            }
        }
    }

    /// Add a leg for track `ti` on `sub`'s subscriber connection; renegotiation follows.
    pub(crate) fn subscribe(
        &mut self,
        sub: &ParticipantId,
        ti: usize,
        now: Instant,
    ) -> Result<(), Reject> {
        let Some(track) = self.tracks.get(ti) else {
            return Ok(());
        };
        let (owner, track_id, kind, codec) = (
            track.owner.clone(),
            track.id.clone(),
            track.kind,
            track.codec,
        );
        let ci = match self.participants.get(sub).and_then(|p| p.sub_conn) {
            Some(ci) => ci,
            None => {
                let ci = self.new_conn(sub, PeerConnectionKind::Subscriber, now)?;
                if let Some(p) = self.participants.get_mut(sub) {
                    p.sub_conn = Some(ci);
                }
                ci
            }
        };
        let ssrc = loop {
            let s: u32 = rand::random();
            if s != 0
                && !self
                    .conns
                    .get(ci)
                    .is_some_and(|c| c.outbound.iter().any(|(o, _)| *o == s))
            {
                break s;
            }
        };
        let codec_params = conn::codec_params(codec)
            .ok_or_else(|| Reject::new(ErrorCode::Internal, "codec without parameters"))?;
        let rtc_kind = if kind == TrackKind::Audio {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let mst = MediaStreamTrack::new(
            owner.0.clone(),
            track_id.0.clone(),
            track_id.0.clone(),
            rtc_kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec_params,
                ..Default::default()
            }],
        );
        let Some(c) = self.conns.get_mut(ci) else {
            return Err(Reject::new(
                ErrorCode::Internal,
                "subscriber connection vanished",
            ));
        };
        // A new sendonly transceiver per subscribed track: m-lines of removed tracks are left
        // inactive, never recycled for another track (clients map mids to tracks once).
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![owner.0.clone()],
            send_encodings: vec![],
        };
        let sender_id =
            c.pc.add_transceiver_from_track(mst, Some(init))
                .ok()
                .and_then(|tid| c.pc.rtp_transceiver(tid).and_then(|t| t.sender()))
                .ok_or_else(|| {
                    Reject::new(
                        ErrorCode::Internal,
                        "cannot add the track to the subscriber connection",
                    )
                })?;
        c.outbound.push((ssrc, ti));
        if let Some(t) = self.tracks.get_mut(ti) {
            let leg = if t.layers.len() > 1 {
                Leg::simulcast(ci, ssrc, desired_layer(0, t.layers.len()))
            } else {
                Leg::new(ci, ssrc)
            };
            t.route.legs.push(leg);
        }
        self.update_publisher_pause(ti);
        if let Some(p) = self.participants.get_mut(sub) {
            p.legs.push(SubLeg {
                track: ti,
                sender_id,
                ssrc,
                in_offer: false,
                negotiated: false,
            });
            p.needs_offer = true;
        }
        Ok(())
    }

    /// Remove `sub`'s leg of track `ti`.
    pub(crate) fn unsubscribe(&mut self, sub: &ParticipantId, ti: usize) {
        let Some(p) = self.participants.get_mut(sub) else {
            return;
        };
        let Some(i) = p.legs.iter().position(|l| l.track == ti) else {
            return;
        };
        let leg = p.legs.swap_remove(i);
        p.needs_offer = true;
        let Some(ci) = p.sub_conn else { return };
        if let Some(c) = self.conns.get_mut(ci) {
            if let Err(e) = c.pc.remove_track(leg.sender_id) {
                tracing::debug!("remove_track: {e}");
            }
            c.outbound.retain(|(s, _)| *s != leg.ssrc);
            c.dirty = true;
        }
        if let Some(t) = self.tracks.get_mut(ti) {
            t.route.remove_leg(ci);
        }
        self.update_publisher_pause(ti);
    }

    /// Send a subscriber offer to everyone who needs one and has none outstanding.
    pub(crate) fn renegotiate_pending(&mut self, now: Instant) {
        let due: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.needs_offer && !p.offer_pending && p.sub_conn.is_some())
            .map(|p| p.id.clone())
            .collect();
        for pid in due {
            if let Err(Reject(code, msg)) = self.send_subscriber_offer(&pid, now) {
                tracing::warn!(participant = %pid, %code, "subscriber offer failed: {msg}");
                self.send(&pid, ServerMessage::error(code, msg));
            }
        }
    }

    fn send_subscriber_offer(&mut self, pid: &ParticipantId, now: Instant) -> Result<(), Reject> {
        let Some(p) = self.participants.get_mut(pid) else {
            return Ok(());
        };
        let Some(ci) = p.sub_conn else { return Ok(()) };
        p.needs_offer = false;
        p.offer_pending = true;
        let first = self
            .conns
            .get(ci)
            .is_some_and(|c| c.pc.local_description().is_none());
        if first {
            self.add_local_candidates(ci);
        }
        let Some(c) = self.conns.get_mut(ci) else {
            return Ok(());
        };
        let sdp = (|| {
            let offer = c.pc.create_offer(None)?;
            c.pc.set_local_description(now, offer)?;
            Ok::<_, rtc::shared::error::Error>(c.pc.local_description().map(|d| d.sdp))
        })()
        .map_err(|e| {
            Reject::new(
                ErrorCode::Internal,
                format!("cannot create the subscriber offer: {e}"),
            )
        })?
        .ok_or_else(|| Reject::new(ErrorCode::Internal, "no local description"))?;
        c.dirty = true;
        // mid of each leg, by its sender.
        let mut mids: Vec<(RTCRtpSenderId, String)> = Vec::new();
        let ids: Vec<_> = c.pc.get_transceivers().collect();
        for tid in ids {
            if let Some(t) = c.pc.rtp_transceiver(tid) {
                if let (Some(s), Some(m)) = (t.sender(), t.mid().clone()) {
                    mids.push((s, m));
                }
            }
        }
        let legs: Vec<(usize, RTCRtpSenderId)> = self
            .participants
            .get(pid)
            .map(|p| p.legs.iter().map(|l| (l.track, l.sender_id)).collect())
            .unwrap_or_default();
        let tracks: Vec<SubscribedTrack> = legs
            .into_iter()
            .filter_map(|(ti, sid)| {
                let t = self.tracks.get(ti)?;
                let mid = mids.iter().find(|(s, _)| *s == sid)?.1.clone();
                Some(SubscribedTrack {
                    mid,
                    track_id: t.id.clone(),
                    participant_id: t.owner.clone(),
                    kind: t.kind,
                })
            })
            .collect();
        if let Some(p) = self.participants.get_mut(pid) {
            for l in &mut p.legs {
                l.in_offer = tracks.iter().any(|t| {
                    self.tracks
                        .get(l.track)
                        .is_some_and(|tr| tr.id == t.track_id)
                });
            }
        }
        self.send(
            pid,
            ServerMessage::Offer {
                pc: PeerConnectionKind::Subscriber,
                sdp,
                tracks,
            },
        );
        if first {
            self.trickle_local_candidates(pid, PeerConnectionKind::Subscriber);
        }
        Ok(())
    }

    fn subscriber_answer(
        &mut self,
        pid: &ParticipantId,
        sdp: String,
        now: Instant,
    ) -> Result<(), Reject> {
        let p = self
            .participants
            .get(pid)
            .ok_or_else(|| Reject::new(ErrorCode::InvalidState, "not joined"))?;
        let (Some(ci), true) = (p.sub_conn, p.offer_pending) else {
            return Err(Reject::new(
                ErrorCode::InvalidState,
                "no subscriber offer is waiting for an answer",
            ));
        };
        if !sdp.starts_with("v=0") {
            return Err(Reject::new(
                ErrorCode::InvalidSdp,
                "SDP must start with \"v=0\"",
            ));
        }
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| Reject::new(ErrorCode::InvalidSdp, format!("invalid answer: {e}")))?;
        let Some(c) = self.conns.get_mut(ci) else {
            return Ok(());
        };
        c.pc.set_remote_description(now, answer).map_err(|e| {
            Reject::new(
                ErrorCode::InvalidSdp,
                format!("cannot apply the answer: {e}"),
            )
        })?;
        c.dirty = true;
        let connected = c.connected;
        // Payload types negotiated per leg.
        let senders: Vec<(RTCRtpSenderId, usize)> = self
            .participants
            .get(pid)
            .map(|p| p.legs.iter().map(|l| (l.sender_id, l.track)).collect())
            .unwrap_or_default();
        for (sid, ti) in senders {
            let pts = self.conns.get_mut(ci).and_then(|c| {
                c.pc.rtp_sender(sid)
                    .map(|mut s| conn::payload_types(&s.get_parameters().rtp_parameters.codecs))
            });
            if let (Some(pts), Some(t)) = (pts, self.tracks.get_mut(ti)) {
                if let Some(leg) = t.route.leg_mut(ci) {
                    leg.pts = pts;
                }
            }
        }
        if let Some(p) = self.participants.get_mut(pid) {
            p.offer_pending = false;
            for l in &mut p.legs {
                l.negotiated |= l.in_offer;
                l.in_offer = false;
            }
        }
        if connected {
            self.activate_subscriber_legs(ci, now);
        }
        self.renegotiate_pending(now);
        Ok(())
    }

    /// Negotiated legs on a connected subscriber connection start receiving, with a keyframe.
    pub(crate) fn activate_subscriber_legs(&mut self, ci: usize, now: Instant) {
        let Some(owner) = self.conns.get(ci).map(|c| c.owner.clone()) else {
            return;
        };
        let legs: Vec<usize> = self
            .participants
            .get(&owner)
            .map(|p| {
                p.legs
                    .iter()
                    .filter(|l| l.negotiated)
                    .map(|l| l.track)
                    .collect()
            })
            .unwrap_or_default();
        for ti in legs {
            let newly = self
                .tracks
                .get_mut(ti)
                .and_then(|t| t.route.leg_mut(ci))
                .is_some_and(|l| {
                    let was = l.active;
                    l.active = true;
                    !was
                });
            if newly {
                self.request_keyframe(ti, now);
            }
        }
    }

    /// First RTP of a publisher's stream: learn its SSRC, then serve waiting subscribers a keyframe.
    pub(crate) fn on_track_open(
        &mut self,
        ci: usize,
        rid: RTCRtpReceiverId,
        ssrc: u32,
        stream_rid: Option<&str>,
        now: Instant,
    ) {
        let found = self
            .tracks
            .iter()
            .find(|(_, t)| t.publisher_conn == ci && t.receiver_id == rid)
            .map(|(i, _)| i);
        let Some(ti) = found else { return };
        let mut layer = 0u8;
        if let Some(t) = self.tracks.get_mut(ti) {
            if let Some(i) = stream_rid.and_then(|r| t.layers.iter().position(|l| l.rid == r)) {
                if let Some(l) = t.layers.get_mut(i) {
                    l.ssrc = Some(ssrc);
                }
                layer = u8::try_from(i).unwrap_or(0);
                tracing::debug!(track = %t.id, rid = stream_rid.unwrap_or(""), ssrc, "simulcast layer open");
            }
            if t.media_ssrc.is_none() || t.layers.is_empty() {
                t.media_ssrc = Some(ssrc);
            }
        }
        let pts = self.conns.get_mut(ci).and_then(|c| {
            c.pc.rtp_receiver(rid)
                .map(|mut r| conn::payload_types(&r.get_parameters().rtp_parameters.codecs))
        });
        if let (Some(pts), Some(t)) = (pts, self.tracks.get_mut(ti)) {
            if !pts.is_empty() {
                t.route.publisher_pts = pts;
            }
        }
        if let Some(c) = self.conns.get_mut(ci) {
            c.inbound.retain(|&(_, t, l)| !(t == ti && l == layer));
            c.inbound.push((ssrc, ti, layer));
        }
        if self
            .tracks
            .get(ti)
            .is_some_and(|t| t.route.legs.iter().any(|l| l.active))
        {
            self.request_keyframe(ti, now);
        }
    }

    fn remote_candidate(
        &mut self,
        pid: &ParticipantId,
        pc: PeerConnectionKind,
        cand: IceCandidate,
    ) -> Result<(), Reject> {
        let p = self
            .participants
            .get(pid)
            .ok_or_else(|| Reject::new(ErrorCode::InvalidState, "not joined"))?;
        let ci = match pc {
            PeerConnectionKind::Publisher => p.pub_conn,
            PeerConnectionKind::Subscriber => p.sub_conn,
        }
        .ok_or_else(|| {
            Reject::new(
                ErrorCode::InvalidState,
                "no such peer connection yet; send the offer first",
            )
        })?;
        if cand.candidate.is_empty() {
            return Ok(()); // end-of-candidates
        }
        let s = cand.candidate.strip_prefix("a=").unwrap_or(&cand.candidate);
        if !s.starts_with("candidate:") || s.len() > 1024 {
            return Err(Reject::new(
                ErrorCode::InvalidCandidate,
                "a candidate must start with \"candidate:\"",
            ));
        }
        let Some(c) = self.conns.get_mut(ci) else {
            return Ok(());
        };
        if c.pc.remote_description().is_none() {
            return Err(Reject::new(
                ErrorCode::InvalidState,
                "candidate before the description it belongs to",
            ));
        }
        c.pc.add_remote_candidate(RTCIceCandidateInit {
            candidate: cand.candidate,
            sdp_mid: cand.sdp_mid,
            sdp_mline_index: cand.sdp_mline_index,
            username_fragment: cand.username_fragment,
            ..Default::default()
        })
        .map_err(|e| {
            Reject::new(
                ErrorCode::InvalidCandidate,
                format!("cannot apply candidate: {e}"),
            )
        })?;
        c.dirty = true;
        Ok(())
    }

    /// Stop forwarding a track, remove it from every subscriber, tell the room.
    /// The audio level extension of a track was (re)negotiated: take the track out of speaker
    /// selection until its first packet that carries a level (see the worker's `forward`); a
    /// track that never sends levels is always forwarded.
    fn reset_speaker(&mut self, ti: usize) {
        let Some(t) = self.tracks.get_mut(ti) else {
            return;
        };
        t.speaker_enrolled = false;
        t.speaker_forward = true;
        if let Some(room) = self.rooms.get_mut(&t.room) {
            room.speakers.remove(ti);
            room.host_speakers.remove(ti);
        }
    }

    /// Re-evaluate every room's loudest speakers: gate the forwarding of sites' audio and tell
    /// the room who speaks (`speakers`) when that changed. Called every 100 ms or so.
    pub(crate) fn update_speakers(&mut self, now: Instant) {
        let mut announce: Vec<(String, ServerMessage)> = Vec::new();
        for (name, room) in self.rooms.iter_mut() {
            let change = room.speakers.update(now);
            let host_change = room.host_speakers.update(now);
            if change.active_changed {
                for (ti, t) in self.tracks.iter_mut() {
                    if t.room == *name && t.speaker_enrolled && !t.host {
                        t.speaker_forward = room.speakers.is_active(ti);
                    }
                }
            }
            if !(change.active_changed || change.speaking_changed || host_change.speaking_changed) {
                continue;
            }
            let owner = |ti: &usize| self.tracks.get(*ti).map(|t| t.owner.clone());
            let mut speaking: Vec<ParticipantId> = room
                .host_speakers
                .speaking()
                .iter()
                .chain(room.speakers.speaking())
                .filter_map(owner)
                .collect();
            speaking.dedup();
            let forwarded: Vec<ParticipantId> =
                room.speakers.active().iter().filter_map(owner).collect();
            if room.announced != (speaking.clone(), forwarded.clone()) {
                room.announced = (speaking.clone(), forwarded.clone());
                announce.push((
                    name.clone(),
                    ServerMessage::Speakers {
                        speaking,
                        forwarded,
                    },
                ));
            }
        }
        for (room, msg) in announce {
            self.broadcast(&room, None, &msg);
        }
    }

    pub(crate) fn unpublish(&mut self, ti: usize, _now: Instant) {
        let subscribers: Vec<ParticipantId> = self
            .tracks
            .get(ti)
            .map(|t| {
                t.route
                    .legs
                    .iter()
                    .filter_map(|l| self.conns.get(l.conn).map(|c| c.owner.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for sub in subscribers {
            self.unsubscribe(&sub, ti);
        }
        let Some(track) = self.tracks.remove(ti) else {
            return;
        };
        if let Some(room) = self.rooms.get_mut(&track.room) {
            room.speakers.remove(ti);
            room.host_speakers.remove(ti);
        }
        tracing::info!(track = %track.id, "track unpublished");
        if let Some(c) = self.conns.get_mut(track.publisher_conn) {
            c.inbound.retain(|&(_, t, _)| t != ti);
        }
        let room = self.participants.get(&track.owner).map(|p| p.room.clone());
        if let Some(p) = self.participants.get_mut(&track.owner) {
            p.tracks.retain(|&t| t != ti);
        }
        if let Some(room) = room {
            let m = ServerMessage::TrackUnpublished {
                participant_id: track.owner.clone(),
                track_id: track.id,
            };
            self.broadcast(&room, None, &m);
        }
    }

    /// Unpublish everything `pid` publishes and drop its subscriptions (its connections and
    /// its place in the room stay).
    pub(crate) fn drop_media(&mut self, pid: &ParticipantId, now: Instant) {
        let Some(p) = self.participants.get(pid) else {
            return;
        };
        let tracks = p.tracks.clone();
        let legs: Vec<usize> = p.legs.iter().map(|l| l.track).collect();
        for ti in tracks {
            self.unpublish(ti, now);
        }
        for ti in legs {
            self.unsubscribe(pid, ti);
        }
    }

    /// Remove a participant: its tracks, its legs, its connections. `notify_self` sends it a
    /// final `leave` (when the server, not the client, ends the session).
    pub(crate) fn remove_participant(
        &mut self,
        pid: &ParticipantId,
        reason: LeaveReason,
        notify_self: bool,
    ) {
        let Some(p) = self.participants.get(pid) else {
            return;
        };
        let span = p.span.clone();
        let _g = span.enter();
        tracing::info!(?reason, "left");
        if notify_self {
            let _ = p.events.send(ServerMessage::Leave {
                reason,
                resumable: false,
            });
        }
        let room = p.room.clone();
        let now = Instant::now();
        self.drop_media(pid, now);
        let Some(p) = self.participants.remove(pid) else {
            return;
        };
        // Parked for a resume (resume.rs): its attendance leave waits for the park to end.
        if !self.parked.contains_key(pid) {
            self.room_event(RoomEvent::Left {
                room: room.clone(),
                participant: pid.clone(),
                identity: p.identity.clone(),
                reason,
                at: std::time::SystemTime::now(),
            });
        }
        for ci in [p.pub_conn, p.sub_conn].into_iter().flatten() {
            self.close_conn(ci);
        }
        let mut cleared_spotlight = false;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.participants.retain(|x| x != pid);
            if r.spotlight.as_ref() == Some(pid) {
                r.spotlight = None;
                cleared_spotlight = true;
            }
            if r.participants.is_empty() {
                self.rooms.remove(&room);
            }
        }
        self.broadcast(
            &room,
            None,
            &ServerMessage::ParticipantLeft {
                participant_id: pid.clone(),
                reason,
            },
        );
        if cleared_spotlight {
            self.broadcast(
                &room,
                None,
                &ServerMessage::Spotlight {
                    participant_id: None,
                    by: pid.clone(),
                },
            );
        }
        self.renegotiate_pending(now);
        // Dropping `p.events` lets the signalling connection close.
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_sending_media_sections() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert_eq!(count_sending_media(sdp).ok(), Some(2));
        assert!(count_sending_media("hello").is_err());
        assert_eq!(count_sending_media("v=0\r\n").ok(), Some(0));
    }

    #[test]
    fn simulcast_rids_in_offer_order_per_media_section() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:q send\r\na=rid:h send\r\n\
                   a=rid:f send\r\na=simulcast:send q;~h;f,x\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=simulcast:send only\r\n";
        assert_eq!(
            simulcast_rids(sdp),
            vec![(
                "1".to_owned(),
                vec!["q".to_owned(), "h".to_owned(), "f".to_owned()]
            )]
        );
        assert!(simulcast_rids("").is_empty());
        assert!(simulcast_rids("a=simulcast:send a;b").is_empty()); // no mid
    }
}
