//! A cascade relay (issue 17): carries a room's tracks from one Rakor node's instance of the
//! room into another's, through the ordinary signalling and WebRTC path.
//!
//! One direction of a relay ([`relay_one_way`]) is one *relay subscriber* joined to the
//! source node (publishing nothing; [`ClientOptions::relay_tap`] hands it every remote track
//! with its packets) and, on the destination node, one *republisher* per source participant
//! (same name, identity `cascade/<identity>`, subscribing to nothing), which publishes that
//! participant's tracks from the packets the relay subscriber receives ([`FedTrack`]). A
//! republisher joins with its participant (when the participant joins the source room, or
//! when the leg starts for those already there), publishing nothing until the participant's
//! first track arrives, so a site that only watches is in the room on every node from its
//! join (hosts there can remove it or write to it privately): one signalling session per
//! participant per far node. Should one fail to join, it is tried again at the participant's
//! first track or when the leg's control first sends a command as it. Tracks
//! of participants a `relay_if` filter refuses are not relayed (the server refuses those that
//! came from the destination; relay identities start with [`CASCADE_PREFIX`]), so a track
//! crosses each node boundary once and never loops. A keyframe request from the
//! destination becomes a PLI to the source, and what the destination's subscribers show of a
//! relayed video (`track_demand`, the largest tile or hidden) becomes the relay subscriber's
//! `track_settings` at the source, so only the simulcast layer the far node needs crosses.

use crate::media::FedTrack;
use crate::relay_control::{run_command, RelayAction, RelayCommand, RelayControl};
use crate::relay_levels::RelayLevels;
use crate::{Client, ClientError, ClientOptions};
use rakor_proto::{ParticipantId, ParticipantInfo, TrackId, TrackSource};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Identities of relay participants (subscribers and republishers) start with this; their
/// tracks are never relayed again.
pub const CASCADE_PREFIX: &str = "cascade/";

/// Packets queued per relayed track before new ones are dropped (the far side is slower).
pub const RELAY_QUEUE: usize = 512;

/// Where a relay subscriber's session hands the remote tracks ([`ClientOptions::relay_tap`]).
#[derive(Debug, Clone)]
pub struct RelayTap {
    pub tracks: mpsc::UnboundedSender<RelayedTrack>,
    /// Payload bytes handed on (relayed), all tracks.
    pub bytes: Arc<AtomicU64>,
}

/// A remote track the relay subscriber receives, with its packets.
#[derive(Debug)]
pub struct RelayedTrack {
    pub participant_id: ParticipantId,
    pub track_id: TrackId,
    pub source: TrackSource,
    pub packets: mpsc::Receiver<rtc::rtp::Packet>,
    /// Set it to send a PLI upstream.
    pub keyframe_request: Arc<AtomicBool>,
}

/// What one direction of a relay counts.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Tracks being relayed now.
    pub tracks: AtomicI64,
    /// Tracks relayed since the start.
    pub tracks_total: AtomicU64,
    /// Payload bytes relayed.
    pub bytes: Arc<AtomicU64>,
}

/// Makes the token of a republisher for a source participant (its identity is
/// `cascade/<identity>`).
pub type MintToken = Arc<dyn Fn(&ParticipantInfo) -> Result<String, String> + Send + Sync>;

/// Whether a participant is a relay's (its tracks are not relayed again).
pub fn is_relay_identity(identity: &str) -> bool {
    identity.starts_with(CASCADE_PREFIX)
}

/// Where a republished video's `track_demand` goes: tagged with its source track.
fn demand_sink(
    tx: mpsc::UnboundedSender<(TrackId, bool, u32, u32)>,
    source_track: TrackId,
) -> crate::media::DemandSink {
    Arc::new(move |visible, width, height| {
        let _ = tx.send((source_track.clone(), visible, width, height));
    })
}

/// A leg's republishers on the destination, one per source participant, joined with it (at
/// its `participant_joined`, or when the leg starts), or else at its first track or when a
/// command must be sent as it ([`Republishers::run`]: its chat, its hand, a host's
/// moderation).
struct Republishers {
    joined: HashMap<ParticipantId, Client>,
    to_url: String,
    mint: MintToken,
    relay_if: Arc<dyn Fn(&ParticipantInfo) -> bool + Send + Sync>,
    bind_ip: std::net::IpAddr,
    tls_roots: Option<Arc<rustls::RootCertStore>>,
}

impl Republishers {
    /// Whether `info` has a republisher, joining one (publishing nothing yet) when it has
    /// none and `relay_if` accepts it. Refusals and failures are logged.
    async fn ensure(&mut self, info: &ParticipantInfo) -> bool {
        if self.joined.contains_key(&info.id) {
            return true;
        }
        if !(self.relay_if)(info) {
            tracing::debug!(participant = %info.id, "cascade: not relayed; no republisher");
            return false;
        }
        let token = match (self.mint)(info) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cascade: no token for a republisher");
                return false;
            }
        };
        let mut opts = ClientOptions::new(self.to_url.clone(), token);
        opts.publish_audio = false;
        opts.publish_video = false;
        opts.subscribe = false;
        opts.bind_ip = self.bind_ip;
        opts.tls_roots = self.tls_roots.clone();
        match Client::connect(opts).await {
            Ok(c) => {
                self.joined.insert(info.id.clone(), c);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, participant = %info.id, "cascade: republisher did not join");
                false
            }
        }
    }

    /// Run `cmd` as its participant's republisher, joining one first for a participant of
    /// `roster` that has none (it publishes nothing). A participant nobody in `roster` is,
    /// or one `relay_if` refuses (a relay subscriber), gets nothing sent (logged).
    async fn run(&mut self, cmd: RelayCommand, roster: &[ParticipantInfo]) {
        if !self.joined.contains_key(&cmd.as_participant) {
            match roster.iter().find(|p| p.id == cmd.as_participant) {
                Some(info) => {
                    if self.ensure(info).await {
                        tracing::info!(participant = %info.id, "cascade: republisher joined for a participant that publishes nothing");
                    }
                }
                None => {
                    tracing::warn!(participant = %cmd.as_participant, "cascade: a command as nobody in the source room; dropped")
                }
            }
        }
        run_command(self.joined.get(&cmd.as_participant), cmd).await;
    }
}

/// (Un)mute `participant` in the source room as the relay subscriber (what this node did to
/// its republisher here, repeated at its source; [`RelayAction::SourceMute`]). A participant
/// no longer there is refused by the source (`unknown_participant`, to the subscriber only).
async fn mute_at_source(subscriber: &Client, participant: ParticipantId, muted: bool) {
    let action = if muted {
        rakor_proto::ModerateAction::MuteAudio
    } else {
        rakor_proto::ModerateAction::UnmuteAudio
    };
    let msg = rakor_proto::ClientMessage::Moderate {
        action,
        participant_id: Some(participant),
    };
    if let Err(e) = subscriber.send(&msg).await {
        tracing::warn!(error = %e, "cascade: a mute not repeated at the source");
    }
}

/// A track being relayed: its source (what the republisher unpublishes when the source
/// track ends) and the task that feeds it.
struct Relaying {
    source: TrackSource,
    task: tokio::task::JoinHandle<()>,
}

/// The source room as a leg knows it *in event order*: everyone in the subscriber's view
/// now, plus those whose `participant_left` the leg has not handled yet (the subscriber's
/// view is updated as messages arrive, ahead of the leg), so a command can still name who
/// left or who asked (e.g. the host who ended the room).
#[derive(Default)]
struct Roster(HashMap<ParticipantId, ParticipantInfo>);

impl Roster {
    fn refresh(&mut self, now: Vec<ParticipantInfo>) -> Vec<ParticipantInfo> {
        for p in now {
            self.0.insert(p.id.clone(), p);
        }
        self.0.values().cloned().collect()
    }
}

/// One direction of a relay: join `from` (as a relay participant, publishing nothing),
/// republish every track there of a participant `relay_if` accepts into the room at `to_url`
/// (one republisher per participant, its token from `mint`), until `stop` completes or the
/// relay subscriber's session ends. Every client leaves on the way out.
pub async fn relay_one_way(
    from: ClientOptions,
    to_url: String,
    mint: MintToken,
    relay_if: Arc<dyn Fn(&ParticipantInfo) -> bool + Send + Sync>,
    counters: Arc<RelayCounters>,
    stop: impl Future<Output = ()>,
) -> Result<(), ClientError> {
    relay_one_way_with(from, to_url, mint, relay_if, counters, None, stop).await
}

/// [`relay_one_way`], handing the source room's signalling events to `control`
/// ([`crate::relay_control`]) and running the commands it answers with.
pub async fn relay_one_way_with(
    mut from: ClientOptions,
    to_url: String,
    mint: MintToken,
    relay_if: Arc<dyn Fn(&ParticipantInfo) -> bool + Send + Sync>,
    counters: Arc<RelayCounters>,
    control: Option<Arc<dyn RelayControl>>,
    stop: impl Future<Output = ()>,
) -> Result<(), ClientError> {
    let (tx, mut tracks) = mpsc::unbounded_channel();
    from.publish_audio = false;
    from.publish_video = false;
    from.publish_screen = false;
    from.publish_screen_audio = false;
    from.relay_tap = Some(RelayTap {
        tracks: tx,
        bytes: counters.bytes.clone(),
    });
    let mut subscriber = Client::connect(from.clone()).await?;
    let mut republishers = Republishers {
        joined: HashMap::new(),
        to_url,
        mint,
        relay_if,
        bind_ip: from.bind_ip,
        tls_roots: from.tls_roots.clone(),
    };
    let mut roster = Roster::default();
    // Every participant of the source room is in the room on the far node from its join (a
    // republisher, without tracks until its first one arrives), so that hosts there can name
    // one that only watches (remove it, write to it privately) before it acts.
    for info in subscriber.participants() {
        republishers.ensure(&info).await;
    }
    // Relayed tracks by source track: whose, what source, the task feeding them.
    let mut relaying: HashMap<TrackId, Relaying> = HashMap::new();
    // What the destination's subscribers show of a relayed video (`track_demand` to its
    // republisher), keyed by the source track: asked of the source node as our own
    // `track_settings`, so the leg carries the layer the far node needs (or nothing).
    let (demand_tx, mut demands) = mpsc::unbounded_channel::<(TrackId, bool, u32, u32)>();
    // The source node's levels of the audio it forwards (`track_levels`), written by the
    // republishers into the relayed packets (the far node selects its loudest speakers).
    let mut levels = RelayLevels::new();
    if let Some(c) = &control {
        // The room's spotlight at join time, as if it had just been set.
        let now = rakor_proto::ServerMessage::Spotlight {
            participant_id: subscriber.spotlight(),
            by: subscriber.current_participant_id(),
        };
        let room = roster.refresh(subscriber.participants());
        if let Some(cmd) = c.source_event(&now, &room) {
            republishers.run(cmd, &room).await;
        }
    }
    // Commands queued from outside this leg's source events, and what the republishers
    // receive (read every `REPUBLISHER_POLL`; also keeps their event queues short).
    let mut queued = match control.as_ref().and_then(|c| c.commands()) {
        Some(q) => Some(q.lock_owned().await),
        None => None,
    };
    let mut poll = tokio::time::interval(crate::relay_control::REPUBLISHER_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(cmd) = async {
                match queued.as_mut() {
                    Some(q) => q.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let RelayAction::SourceMute { muted } = cmd.action {
                    mute_at_source(&subscriber, cmd.as_participant, muted).await;
                    continue;
                }
                let room = roster.refresh(subscriber.participants());
                republishers.run(cmd, &room).await;
            }
            _ = poll.tick() => {
                for (source, r) in republishers.joined.iter_mut() {
                    let identity = r.joined().identity.clone();
                    let id = r.current_participant_id();
                    for msg in r.drain_events() {
                        if let Some(c) = &control {
                            c.republisher_event(source, (&id, &identity), &msg);
                        }
                    }
                }
            }
            Some((track_id, visible, width, height)) = demands.recv() => {
                let ask = rakor_proto::ClientMessage::TrackSettings { track_id, visible, width, height };
                if let Err(e) = subscriber.send(&ask).await {
                    tracing::debug!(error = %e, "cascade: could not pass a track demand upstream");
                }
            }
            ev = subscriber.next_event() => {
                match ev {
                    None => break,
                    Some(left @ rakor_proto::ServerMessage::ParticipantLeft { .. }) => {
                        // The control sees who left (and who removed it) while the roster
                        // still names them, then its republisher goes.
                        let room = roster.refresh(subscriber.participants());
                        if let Some(c) = &control {
                            if let Some(cmd) = c.source_event(&left, &room) {
                                republishers.run(cmd, &room).await;
                            }
                        }
                        let rakor_proto::ServerMessage::ParticipantLeft { participant_id, .. } = left else { continue };
                        roster.0.remove(&participant_id);
                        levels.forget(&participant_id);
                        if let Some(r) = republishers.joined.remove(&participant_id) {
                            tokio::spawn(r.leave());
                        }
                    }
                    Some(rakor_proto::ServerMessage::ParticipantJoined { participant }) => {
                        roster.0.insert(participant.id.clone(), participant.clone());
                        republishers.ensure(&participant).await;
                        if let Some(c) = &control {
                            let room = roster.refresh(subscriber.participants());
                            let msg = rakor_proto::ServerMessage::ParticipantJoined { participant };
                            if let Some(cmd) = c.source_event(&msg, &room) {
                                republishers.run(cmd, &room).await;
                            }
                        }
                    }
                    Some(rakor_proto::ServerMessage::TrackUnpublished { participant_id, track_id }) => {
                        // The source track ended (unpublished, a presentation stopped there):
                        // its republished track ends too, or the far node would keep a dead
                        // track (and, for a screen, a presentation nobody gives any more).
                        if let Some(r) = relaying.remove(&track_id) {
                            if !r.task.is_finished() {
                                r.task.abort();
                                counters.tracks.fetch_sub(1, Ordering::Relaxed);
                            }
                            if let Some(republisher) = republishers.joined.get(&participant_id) {
                                if let Err(e) = republisher.unpublish_source(r.source).await {
                                    // Already taken off by the far node (a stopped or taken
                                    // over presentation), or the republisher is going.
                                    tracing::debug!(error = %e, track = %track_id, "cascade: relayed track not unpublished");
                                }
                            }
                        }
                        if let Some(c) = &control {
                            let room = roster.refresh(subscriber.participants());
                            let msg = rakor_proto::ServerMessage::TrackUnpublished { participant_id, track_id };
                            if let Some(cmd) = c.source_event(&msg, &room) {
                                republishers.run(cmd, &room).await;
                            }
                        }
                    }
                    Some(rakor_proto::ServerMessage::TrackLevels { levels: l }) => {
                        let unknown = levels.apply(&l);
                        if unknown > 0 {
                            tracing::debug!(unknown, "cascade: levels of tracks this leg does not relay");
                        }
                    }
                    Some(other) => {
                        if let Some(c) = &control {
                            let room = roster.refresh(subscriber.participants());
                            if let Some(cmd) = c.source_event(&other, &room) {
                                republishers.run(cmd, &room).await;
                            }
                        }
                    }
                }
            }
            t = tracks.recv() => {
                let Some(t) = t else { break };
                let Some(info) = subscriber
                    .participants()
                    .into_iter()
                    .find(|p| p.id == t.participant_id)
                else {
                    continue;
                };
                if !(republishers.relay_if)(&info) {
                    // Not relayed (dropping `t.packets`: the track is only drained). A video
                    // leg is paused at the source, so it does not cross the boundary again
                    // (audio has no pause; it is small).
                    if t.source.kind() == rakor_proto::TrackKind::Video {
                        let hide = rakor_proto::ClientMessage::TrackSettings {
                            track_id: t.track_id.clone(),
                            visible: false,
                            width: 0,
                            height: 0,
                        };
                        if let Err(e) = subscriber.send(&hide).await {
                            tracing::debug!(error = %e, "cascade: could not pause an unrelayed track");
                        }
                    }
                    continue;
                }
                if !republishers.ensure(&info).await {
                    continue;
                }
                let Some(republisher) = republishers.joined.get(&info.id) else { continue };
                let (ptx, prx) = mpsc::channel(RELAY_QUEUE);
                let fed = FedTrack {
                    source: t.source,
                    packets: prx,
                    keyframe_request: t.keyframe_request.clone(),
                    demand: (t.source.kind() == rakor_proto::TrackKind::Video)
                        .then(|| demand_sink(demand_tx.clone(), t.track_id.clone())),
                    audio_level: (t.source.kind() == rakor_proto::TrackKind::Audio)
                        .then(|| levels.track(&info.id, &t.track_id)),
                };
                if let Err(e) = republisher.publish_fed(fed).await {
                    tracing::warn!(error = %e, track = %t.track_id, "cascade: track not republished");
                    continue;
                }
                counters.tracks.fetch_add(1, Ordering::Relaxed);
                counters.tracks_total.fetch_add(1, Ordering::Relaxed);
                let gauge = counters.clone();
                let mut packets = t.packets;
                let task = tokio::spawn(async move {
                    while let Some(p) = packets.recv().await {
                        if ptx.send(p).await.is_err() {
                            break;
                        }
                    }
                    gauge.tracks.fetch_sub(1, Ordering::Relaxed);
                });
                let source = t.source;
                if let Some(old) = relaying.insert(t.track_id, Relaying { source, task }) {
                    if !old.task.is_finished() {
                        old.task.abort();
                        counters.tracks.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    for r in relaying.into_values() {
        r.task.abort();
    }
    let leaving: Vec<_> = republishers
        .joined
        .into_values()
        .map(|c| c.leave())
        .collect();
    futures_util::future::join_all(leaving).await;
    subscriber.leave().await;
    Ok(())
}
