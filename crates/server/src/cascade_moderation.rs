//! Chat, raised hands and the host's moderation across the cascade (issue 17), the same shape
//! as the spotlight ([`crate::cascade_room`]): the room's owner is authoritative, each
//! non-owner node follows the owner's events on its inbound leg and sends its own sites'
//! actions to the owner through their republishers there.
//!
//! - *Chat to the room.* A site's message is accepted (size, rate, role) by its own node and
//!   delivered there; the outbound leg sees it and the site's republisher on the owner sends
//!   the same text ([`local_chat_to_owner`]). Every node's inbound leg sees the owner's `chat`
//!   and the sender's republisher on that node sends it there ([`owner_chat_here`]), except on
//!   the sender's own node (it has it). So each message is delivered once on each node, named
//!   by the sender's participant there (its republisher: same display name), and stored once:
//!   the record keeps only messages whose sender is not a `cascade/…` identity (attendance.rs).
//! - *Private chat from a host.* Only the addressee gets it; when the addressee is a site of
//!   another node, that is its republisher, which reports it ([`RelayControl::republisher_event`],
//!   [`private_chat_across`]), and the host's republisher on the site's node sends it on.
//! - *Hands.* A node forwards its own sites' raised hands to the owner (the republisher raises
//!   or lowers its hand, [`hands_to_mirror`]); the owner's queue thus holds every site in the
//!   order the hands reached it, and other nodes mirror it through their republishers.
//! - *Floor and mute.* The owner's `floor_given` is applied on every node through the operator
//!   path ([`Apply::GiveFloor`], `SfuHandle::moderate`): the site is unmuted, its hand lowered
//!   and it is spotlighted where it is connected. A moderator mute of a site's republisher on
//!   the owner reaches the republisher (`moderator_mute`); its node then mutes the site itself
//!   ([`Apply::MuteAudio`]), enforced by the server where the site is connected.
//! - *A non-owner host's floor and mute.* A host of this node gives the floor or (un)mutes
//!   here first; the outbound leg sees `floor_given` / `track_muted` with the host in `by`
//!   and the host's republisher on the owner repeats it there ([`local_host_to_owner`]), so
//!   the owner and then every node apply it as above. The owner's `floor_given` comes back
//!   here: noted in [`Echoes`], it is skipped when it already holds. What this node applies
//!   for the owner has no `by` (the operator path) and is never sent back: no loop.
//! - *A non-owner host's remove, end of the room, stop of the presentation.* The same way:
//!   `participant_left.by` / `presentation.by` name the host; its republisher on the owner
//!   repeats it ([`local_removal_to_owner`], [`local_host_command`]). A republisher the owner
//!   removed, or whose presentation it stopped, has its site's node do the same to the site
//!   ([`republisher_told_here`]); the owner's room ending ends every node's ([`Apply::EndRoom`]).
//! - *Unmutes and the record.* The owner's unmute lifts the mute of the site's republishers on
//!   the other nodes ([`owner_unmute_here`]; a host there may have muted it first); a floor
//!   applied for the owner is recorded with the name of the owner's host who gave it.
//! - *An operator's (or host's) mute of a republisher here* reaches that republisher as
//!   `moderator_mute`; the inbound leg's relay subscriber repeats it on the owner
//!   ([`mute_at_owner`], `moderate` from role `relay`), which mutes the participant there, and
//!   a third node's site's own node then mutes the site: a mute through any node's API acts
//!   room-wide.
//! - *Participants that publish nothing* have a republisher from their join
//!   (`rakor_client::relay`), so hosts elsewhere can name them and their chat and hands cross.
//!
//! Ids nobody has, relay subscribers and unmappable identities are refused (logged, nothing
//! forwarded); the commands of non-hosts were already refused by their own node.

use crate::cascade_room::map_identity;
use rakor_client::relay::CASCADE_PREFIX;
use rakor_client::relay_control::{CommandQueue, RelayAction, RelayCommand, RelayControl};
use rakor_proto::{
    ChatEntry, LeaveReason, ParticipantId, ParticipantInfo, PresentationEnd, RaisedHand, Role,
    ServerMessage,
};
use rakor_sfu::{Moderation, SfuHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a leg asks of this node's instance of the room (the operator path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// Give the floor to the participant with this identity here. `echo`: the owner's answer
    /// to a floor a host of this node gave (and forwarded): skipped when it holds here already.
    /// `by_name`: the name of the owner's host who gave it (recorded as the giver here).
    GiveFloor {
        identity: String,
        echo: bool,
        by_name: Option<String>,
    },
    /// Set the moderator mute of the participant with this identity here.
    MuteAudio { identity: String, muted: bool },
    /// Remove the participant with this identity here (the owner removed its republisher).
    Remove { identity: String },
    /// End this node's instance of the room (the owner's ended).
    EndRoom,
    /// Stop this node's presentation (the owner stopped its presenter's republisher's).
    StopPresentation,
    /// The owner's recent chat (its `chat_history` to this node's relay subscriber), each
    /// message with its sender's identity here (`None`: nobody this node can name), kept as
    /// this room's history when it has none yet ([`owner_history_here`]).
    SeedChat {
        messages: Vec<(ChatEntry, Option<String>)>,
    },
}

/// One leg's queue of extra commands: where to send them, and what the leg reads.
pub struct LegQueue {
    pub tx: mpsc::UnboundedSender<RelayCommand>,
    pub rx: CommandQueue,
}

impl LegQueue {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

impl Default for LegQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// A site of the node whose room this is (not a relay's participant).
fn is_own_site(p: &ParticipantInfo) -> bool {
    p.role != Role::Relay && !p.identity.starts_with(CASCADE_PREFIX)
}

/// The command that repeats the owner's room message `entry` on node `me` (sent by the
/// sender's republisher here), or `None`: private (handled by the addressee's republisher),
/// sent by nobody the owner's room lists, by a relay subscriber, or by a site of `me` (it was
/// delivered here first).
pub fn owner_chat_here(
    entry: &ChatEntry,
    owner_participants: &[ParticipantInfo],
    owner: &str,
    me: &str,
) -> Option<RelayCommand> {
    if entry.to.is_some() {
        return None;
    }
    let sender = owner_participants
        .iter()
        .find(|p| p.id == entry.from.participant_id)?;
    if sender.role == Role::Relay {
        return None;
    }
    let here = map_identity(&sender.identity, owner, me)?;
    if !here.starts_with(CASCADE_PREFIX) {
        return None; // our own site's message: delivered here already
    }
    Some(RelayCommand {
        as_participant: sender.id.clone(),
        action: RelayAction::Chat {
            text: entry.text.clone(),
            to: None,
        },
    })
}

/// The command that takes a room message of this node's own site to the owner (sent by the
/// site's republisher there), or `None` (private, a relayed participant's, unknown sender).
pub fn local_chat_to_owner(
    entry: &ChatEntry,
    participants: &[ParticipantInfo],
) -> Option<RelayCommand> {
    if entry.to.is_some() {
        return None;
    }
    let sender = participants
        .iter()
        .find(|p| p.id == entry.from.participant_id)?;
    if !is_own_site(sender) {
        return None;
    }
    Some(RelayCommand {
        as_participant: sender.id.clone(),
        action: RelayAction::Chat {
            text: entry.text.clone(),
            to: None,
        },
    })
}

/// A private chat a republisher received (`me`: its id and identity on node `dst`, which it
/// republishes from node `src`): the command for the *other* leg (whose source room is `dst`)
/// that has the sender's republisher on `src` deliver it to the site there. `None` when it
/// is not addressed to this republisher (its own echo, a message to the room).
pub fn private_chat_across(
    entry: &ChatEntry,
    me: (&ParticipantId, &str),
    dst: &str,
    src: &str,
) -> Option<RelayCommand> {
    if entry.to.as_ref() != Some(me.0) || entry.from.participant_id == *me.0 {
        return None;
    }
    let to = map_identity(me.1, dst, src)?;
    Some(RelayCommand {
        as_participant: entry.from.participant_id.clone(),
        action: RelayAction::Chat {
            text: entry.text.clone(),
            to: Some(to),
        },
    })
}

/// Mirror a room's raised hands: those of `hands` whose participant `keep` accepts, in order;
/// `mirrored` (what was raised before) becomes them. Returns the hands to lower, then those to
/// raise (oldest first), as commands for the participants' republishers.
pub fn hands_to_mirror(
    hands: &[RaisedHand],
    participants: &[ParticipantInfo],
    keep: impl Fn(&ParticipantInfo) -> bool,
    mirrored: &mut Vec<ParticipantId>,
) -> Vec<RelayCommand> {
    let wanted: Vec<ParticipantId> = hands
        .iter()
        .filter(|h| {
            participants
                .iter()
                .find(|p| p.id == h.participant_id)
                .is_some_and(&keep)
        })
        .map(|h| h.participant_id.clone())
        .collect();
    let cmd = |id: &ParticipantId, raised| RelayCommand {
        as_participant: id.clone(),
        action: RelayAction::Hand { raised },
    };
    let mut out: Vec<RelayCommand> = mirrored
        .iter()
        .filter(|id| !wanted.contains(id))
        .map(|id| cmd(id, false))
        .collect();
    out.extend(
        wanted
            .iter()
            .filter(|id| !mirrored.contains(id))
            .map(|id| cmd(id, true)),
    );
    *mirrored = wanted;
    out
}

/// The owner's `floor_given` (by the owner's host `by`) as an action here: the identity on
/// node `me` of its target, and the host's name for the record (`None`: the operator's).
pub fn owner_floor_here(
    target: &ParticipantId,
    by: Option<&ParticipantId>,
    owner_participants: &[ParticipantInfo],
    owner: &str,
    me: &str,
) -> Option<Apply> {
    let p = owner_participants.iter().find(|p| &p.id == target)?;
    let by_name = by
        .and_then(|b| owner_participants.iter().find(|p| &p.id == b))
        .map(|h| h.name.clone());
    map_identity(&p.identity, owner, me).map(|identity| Apply::GiveFloor {
        identity,
        echo: false,
        by_name,
    })
}

/// The owner's `track_muted {muted: false}` of `target` as an action here: lift the moderator
/// mute of its republisher here (a host here may have muted it; the owner's unmute must reach
/// this node's listeners too). `None` for this node's own sites (their node unmutes them
/// through their republisher's `moderator_mute`), relay subscribers and unknown ids.
pub fn owner_unmute_here(
    target: &ParticipantId,
    owner_participants: &[ParticipantInfo],
    owner: &str,
    me: &str,
) -> Option<Apply> {
    let p = owner_participants
        .iter()
        .find(|p| &p.id == target)
        .filter(|p| p.role != Role::Relay)?;
    let here = map_identity(&p.identity, owner, me)?;
    here.starts_with(CASCADE_PREFIX)
        .then_some(Apply::MuteAudio {
            identity: here,
            muted: false,
        })
}

/// A moderation by `by` of `target` (ids on node `me`) as the command for `by`'s republisher
/// on the owner, naming the target's counterpart there (`action`). `None`: `by` is not a
/// host of this node (`None` here: an operator, or the owner's own moderation applied here;
/// a relayed host; the relay), the target is nobody here, or it has no counterpart at the
/// owner (a relay subscriber; logged, it stays on this node).
pub fn local_host_to_owner(
    target: &ParticipantId,
    by: Option<&ParticipantId>,
    participants: &[ParticipantInfo],
    owner: &str,
    me: &str,
    action: impl FnOnce(String) -> RelayAction,
) -> Option<RelayCommand> {
    let by = by?;
    let host = participants.iter().find(|p| &p.id == by)?;
    if host.role != Role::Host || !is_own_site(host) {
        return None;
    }
    let there = participants
        .iter()
        .find(|p| &p.id == target)
        .filter(|p| p.role != Role::Relay)
        .and_then(|p| map_identity(&p.identity, me, owner));
    let Some(there) = there else {
        tracing::warn!(participant = %target, "cascade: a host here moderated a participant the owner cannot name; it stays on this node");
        return None;
    };
    Some(RelayCommand {
        as_participant: by.clone(),
        action: action(there),
    })
}

/// A removal by `by` of `target` (ids on node `me`) as the command for `by`'s republisher on
/// the owner. Only the removal of a *relayed* participant (a republisher here) crosses: a
/// site of this node is removed where it is connected, and its republishers leave with it.
/// `None` as for [`local_host_to_owner`].
pub fn local_removal_to_owner(
    target: &ParticipantId,
    by: Option<&ParticipantId>,
    participants: &[ParticipantInfo],
    owner: &str,
    me: &str,
) -> Option<RelayCommand> {
    let t = participants.iter().find(|p| &p.id == target)?;
    if is_own_site(t) {
        return None;
    }
    local_host_to_owner(target, by, participants, owner, me, |identity| {
        RelayAction::Remove { identity }
    })
}

/// `by`, when it is a host of this node (not a relayed one, nor the operator path), as the
/// command for its republisher on the owner to do `action` there.
pub fn local_host_command(
    by: Option<&ParticipantId>,
    participants: &[ParticipantInfo],
    action: RelayAction,
) -> Option<RelayCommand> {
    let by = by?;
    let host = participants.iter().find(|p| &p.id == by)?;
    (host.role == Role::Host && is_own_site(host)).then(|| RelayCommand {
        as_participant: by.clone(),
        action,
    })
}

/// The owner's `chat_history` (sent to this node's inbound relay subscriber at its join) as
/// the history this node's room keeps, when its leg started after the chat: the messages to
/// the room, each with its sender's identity here (mapped like a chat's sender; `None` for one
/// the owner's room no longer lists or a relay). `None` for an empty history or a resume's
/// (`after`).
pub fn owner_history_here(
    messages: &[ChatEntry],
    after: Option<&str>,
    owner_participants: &[ParticipantInfo],
    owner: &str,
    me: &str,
) -> Option<Apply> {
    if after.is_some() {
        return None;
    }
    let messages: Vec<(ChatEntry, Option<String>)> = messages
        .iter()
        .filter(|m| m.to.is_none())
        .map(|m| {
            let here = owner_participants
                .iter()
                .find(|p| p.id == m.from.participant_id)
                .filter(|p| p.role != Role::Relay)
                .and_then(|p| map_identity(&p.identity, owner, me));
            (m.clone(), here)
        })
        .collect();
    (!messages.is_empty()).then_some(Apply::SeedChat { messages })
}

/// What this node's site's republisher on the owner was told (`identity`: its identity
/// there), as an action on the site here: removed there, removed here; its presentation
/// stopped by a host or operator there (`reason: stopped`), stopped here. `None`: anything else, or an identity
/// that is not one of this node's sites.
pub fn republisher_told_here(
    msg: &ServerMessage,
    identity: &str,
    owner: &str,
    me: &str,
) -> Option<Apply> {
    let here = map_identity(identity, owner, me).filter(|h| !h.starts_with(CASCADE_PREFIX));
    match msg {
        ServerMessage::Leave {
            reason: LeaveReason::Removed,
            ..
        } => here.map(|identity| Apply::Remove { identity }),
        ServerMessage::PresentationStopped {
            reason: PresentationEnd::Stopped,
            ..
        } => here.map(|_| Apply::StopPresentation),
        _ => None,
    }
}

/// At most this many floors forwarded to the owner wait for its echo (a host without a
/// republisher forwards nothing, so its floors are never echoed).
const ECHOES_MAX: usize = 16;

/// Floors a host of this node gave and forwarded (the target's identity here), until the
/// owner's `floor_given` for it comes back.
pub type Echoes = Arc<Mutex<Vec<String>>>;

fn expect_echo(echoes: &Echoes, identity: String) {
    let mut e = lock(echoes);
    if e.len() >= ECHOES_MAX {
        e.remove(0);
    }
    e.push(identity);
}

fn take_echo(echoes: &Echoes, identity: &str) -> bool {
    let mut e = lock(echoes);
    match e.iter().position(|i| i == identity) {
        Some(k) => {
            e.remove(k);
            true
        }
        None => false,
    }
}

/// A `moderator_mute` received by this node's site's republisher on the owner: mute the site
/// itself here. `None` for an identity that is not one of this node's sites.
pub fn republisher_mute_here(identity: &str, muted: bool, owner: &str, me: &str) -> Option<Apply> {
    let here = map_identity(identity, owner, me)?;
    (!here.starts_with(CASCADE_PREFIX)).then_some(Apply::MuteAudio {
        identity: here,
        muted,
    })
}

/// A `moderator_mute` received here by the republisher of the owner's participant `source`
/// (a site of the owner or of a third node): this node's operator or a host here (un)muted it,
/// or this node applied the owner's unmute or floor. The inbound leg's relay subscriber
/// repeats it on the owner ([`RelayAction::SourceMute`]), which mutes the participant there
/// (for a third node's site: its republisher, whose node then mutes the site), so an
/// operator's mute through any node's API acts room-wide, as a host's does; a repeat of what
/// holds on the owner already changes nothing there.
pub fn mute_at_owner(source: &ParticipantId, muted: bool) -> RelayCommand {
    RelayCommand {
        as_participant: source.clone(),
        action: RelayAction::SourceMute { muted },
    }
}

fn send_all(tx: &mpsc::UnboundedSender<RelayCommand>, cmds: Vec<RelayCommand>) {
    for c in cmds {
        if tx.send(c).is_err() {
            tracing::debug!("cascade: leg queue closed");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What both legs' controls of one room share: the nodes, where [`Apply`] asks go, and the
/// two legs' queues.
pub struct LegShared {
    pub owner: String,
    pub me: String,
    pub apply: mpsc::UnboundedSender<Apply>,
    /// This leg's queue, as the leg reads it.
    pub queue: CommandQueue,
    /// This leg's queue, to send on (e.g. mirrored hands).
    pub own: mpsc::UnboundedSender<RelayCommand>,
    /// The other leg's queue (a private chat crossing to the far node).
    pub other: mpsc::UnboundedSender<RelayCommand>,
    /// Floors this node's hosts forwarded (the same for both legs).
    pub echoes: Echoes,
}

/// The inbound leg's control (source: the owner's room): chat, hands and the floor from the
/// owner; private chats to republishers of the owner's participants here go to the owner
/// (`leg.other`: the outbound leg's queue).
pub struct FollowOwnerRoom {
    pub leg: LegShared,
    pub mirrored: Mutex<Vec<ParticipantId>>,
    /// The owner's room ended and this node was asked to end its own.
    pub ended: AtomicBool,
}

impl RelayControl for FollowOwnerRoom {
    fn source_event(
        &self,
        msg: &ServerMessage,
        participants: &[ParticipantInfo],
    ) -> Option<RelayCommand> {
        match msg {
            ServerMessage::Chat(entry) => {
                owner_chat_here(entry, participants, &self.leg.owner, &self.leg.me)
            }
            // The owner's recent chat at this leg's join: this node's history, if it has none.
            ServerMessage::ChatHistory { messages, after } => {
                if let Some(a) = owner_history_here(
                    messages,
                    after.as_deref(),
                    participants,
                    &self.leg.owner,
                    &self.leg.me,
                ) {
                    let _ = self.leg.apply.send(a);
                }
                None
            }
            ServerMessage::Hands { hands } => {
                let (owner, me) = (&self.leg.owner, &self.leg.me);
                // The owner's sites and other nodes' sites; ours raise their hands here.
                let keep = |p: &ParticipantInfo| {
                    p.role != Role::Relay
                        && map_identity(&p.identity, owner, me)
                            .is_some_and(|m| m.starts_with(CASCADE_PREFIX))
                };
                let cmds = hands_to_mirror(hands, participants, keep, &mut lock(&self.mirrored));
                send_all(&self.leg.own, cmds);
                None
            }
            ServerMessage::TrackMuted {
                participant_id,
                muted: false,
                ..
            } => {
                if let Some(a) =
                    owner_unmute_here(participant_id, participants, &self.leg.owner, &self.leg.me)
                {
                    let _ = self.leg.apply.send(a);
                }
                None
            }
            ServerMessage::FloorGiven { participant_id, by } => {
                match owner_floor_here(
                    participant_id,
                    by.as_ref(),
                    participants,
                    &self.leg.owner,
                    &self.leg.me,
                ) {
                    Some(Apply::GiveFloor {
                        identity, by_name, ..
                    }) => {
                        let echo = take_echo(&self.leg.echoes, &identity);
                        let _ = self.leg.apply.send(Apply::GiveFloor {
                            identity,
                            echo,
                            by_name,
                        });
                    }
                    Some(a) => {
                        let _ = self.leg.apply.send(a);
                    }
                    None => {
                        tracing::warn!(participant = %participant_id, "cascade: the owner gave the floor to nobody this node can map")
                    }
                }
                None
            }
            // The owner's room ended (everyone there leaves; this leg's subscriber last):
            // end this node's too, once.
            ServerMessage::ParticipantLeft {
                reason: LeaveReason::RoomEnded,
                ..
            }
            | ServerMessage::Leave {
                reason: LeaveReason::RoomEnded,
                ..
            } => {
                if !self.ended.swap(true, Ordering::Relaxed) {
                    tracing::info!(owner = %self.leg.owner, "cascade: the owner's room ended; ending it here");
                    let _ = self.leg.apply.send(Apply::EndRoom);
                }
                None
            }
            _ => None,
        }
    }

    fn commands(&self) -> Option<CommandQueue> {
        Some(self.leg.queue.clone())
    }

    fn republisher_event(
        &self,
        source: &ParticipantId,
        me: (&ParticipantId, &str),
        msg: &ServerMessage,
    ) {
        match msg {
            ServerMessage::Chat(entry) => {
                if let Some(cmd) = private_chat_across(entry, me, &self.leg.me, &self.leg.owner) {
                    send_all(&self.leg.other, vec![cmd]);
                }
            }
            ServerMessage::ModeratorMute { muted } => {
                send_all(&self.leg.own, vec![mute_at_owner(source, *muted)]);
            }
            _ => {}
        }
    }
}

/// The outbound leg's control (source: this node's room): this node's sites' chat and hands
/// go to the owner; what the owner's host does to their republishers comes back here
/// (`leg.other`: the inbound leg's queue).
pub struct ForwardLocalRoom {
    pub leg: LegShared,
    pub forwarded: Mutex<Vec<ParticipantId>>,
    /// A host of this node ended the room and the owner was asked to end it.
    pub ended: AtomicBool,
}

impl RelayControl for ForwardLocalRoom {
    fn source_event(
        &self,
        msg: &ServerMessage,
        participants: &[ParticipantInfo],
    ) -> Option<RelayCommand> {
        match msg {
            ServerMessage::Chat(entry) => local_chat_to_owner(entry, participants),
            ServerMessage::Hands { hands } => {
                let cmds =
                    hands_to_mirror(hands, participants, is_own_site, &mut lock(&self.forwarded));
                send_all(&self.leg.own, cmds);
                None
            }
            // A host of this node gave the floor or (un)muted someone: its republisher on the
            // owner does the same there, and every node follows the owner.
            ServerMessage::FloorGiven { participant_id, by } => {
                let cmd = local_host_to_owner(
                    participant_id,
                    by.as_ref(),
                    participants,
                    &self.leg.owner,
                    &self.leg.me,
                    |identity| RelayAction::GiveFloor { identity },
                )?;
                if let Some(p) = participants.iter().find(|p| &p.id == participant_id) {
                    expect_echo(&self.leg.echoes, p.identity.clone());
                }
                Some(cmd)
            }
            ServerMessage::TrackMuted {
                participant_id,
                muted,
                by,
                ..
            } => local_host_to_owner(
                participant_id,
                by.as_ref(),
                participants,
                &self.leg.owner,
                &self.leg.me,
                |identity| RelayAction::MuteAudio {
                    identity,
                    muted: *muted,
                },
            ),
            ServerMessage::ParticipantLeft {
                participant_id,
                reason: LeaveReason::Removed,
                by,
            } => local_removal_to_owner(
                participant_id,
                by.as_ref(),
                participants,
                &self.leg.owner,
                &self.leg.me,
            ),
            // Everyone here leaves, each `participant_left` naming the host: once.
            ServerMessage::ParticipantLeft {
                reason: LeaveReason::RoomEnded,
                by,
                ..
            } => {
                let cmd = local_host_command(by.as_ref(), participants, RelayAction::EndRoom)?;
                (!self.ended.swap(true, Ordering::Relaxed)).then_some(cmd)
            }
            ServerMessage::Presentation {
                presentation: None,
                by,
            } => local_host_command(by.as_ref(), participants, RelayAction::StopPresentation),
            _ => None,
        }
    }

    fn commands(&self) -> Option<CommandQueue> {
        Some(self.leg.queue.clone())
    }

    fn republisher_event(
        &self,
        _source: &ParticipantId,
        me: (&ParticipantId, &str),
        msg: &ServerMessage,
    ) {
        match msg {
            ServerMessage::Chat(entry) => {
                if let Some(cmd) = private_chat_across(entry, me, &self.leg.owner, &self.leg.me) {
                    send_all(&self.leg.other, vec![cmd]);
                }
            }
            ServerMessage::Leave { .. } | ServerMessage::PresentationStopped { .. } => {
                if let Some(a) = republisher_told_here(msg, me.1, &self.leg.owner, &self.leg.me) {
                    tracing::info!(identity = %me.1, action = ?a, "cascade: the owner acted on this node's site");
                    let _ = self.leg.apply.send(a);
                }
            }
            ServerMessage::ModeratorMute { muted } => {
                match republisher_mute_here(me.1, *muted, &self.leg.owner, &self.leg.me) {
                    Some(a) => {
                        let _ = self.leg.apply.send(a);
                    }
                    None => {
                        tracing::warn!(identity = %me.1, "cascade: a moderator mute for no site of this node")
                    }
                }
            }
            _ => {}
        }
    }
}

/// Two controls on one leg (the spotlight's and this module's): every event goes to both.
pub struct BothControls(pub Arc<dyn RelayControl>, pub Arc<dyn RelayControl>);

impl RelayControl for BothControls {
    fn source_event(
        &self,
        msg: &ServerMessage,
        participants: &[ParticipantInfo],
    ) -> Option<RelayCommand> {
        let a = self.0.source_event(msg, participants);
        let b = self.1.source_event(msg, participants);
        a.or(b)
    }

    fn commands(&self) -> Option<CommandQueue> {
        self.1.commands().or_else(|| self.0.commands())
    }

    fn republisher_event(
        &self,
        source: &ParticipantId,
        me: (&ParticipantId, &str),
        msg: &ServerMessage,
    ) {
        self.0.republisher_event(source, me, msg);
        self.1.republisher_event(source, me, msg);
    }
}

/// The two legs' controls of one room between node `me` and the room's `owner`: fresh
/// queues, one shared [`Echoes`], both asking `apply`.
pub fn leg_controls(
    owner: &str,
    me: &str,
    apply: mpsc::UnboundedSender<Apply>,
) -> (FollowOwnerRoom, ForwardLocalRoom) {
    let (inbound, outbound) = (LegQueue::new(), LegQueue::new());
    let echoes = Echoes::default();
    let shared = |queue: &LegQueue, other: &LegQueue| LegShared {
        owner: owner.to_owned(),
        me: me.to_owned(),
        apply: apply.clone(),
        queue: queue.rx.clone(),
        own: queue.tx.clone(),
        other: other.tx.clone(),
        echoes: echoes.clone(),
    };
    let follow = FollowOwnerRoom {
        leg: shared(&inbound, &outbound),
        mirrored: Mutex::new(Vec::new()),
        ended: AtomicBool::new(false),
    };
    let forward = ForwardLocalRoom {
        leg: shared(&outbound, &inbound),
        forwarded: Mutex::new(Vec::new()),
        ended: AtomicBool::new(false),
    };
    (follow, forward)
}

/// The controls of one room's two legs: the spotlight's (`spotlight`: inbound, outbound)
/// joined with this module's, whose [`Apply`] asks run on `sfu` until `stop`.
pub fn controls(
    sfu: Option<SfuHandle>,
    room: &str,
    owner: &str,
    me: &str,
    spotlight: (Arc<dyn RelayControl>, Arc<dyn RelayControl>),
    stop: &CancellationToken,
) -> (Arc<dyn RelayControl>, Arc<dyn RelayControl>) {
    let (apply, asks) = mpsc::unbounded_channel();
    if let Some(sfu) = sfu {
        tokio::spawn(apply_moderation(sfu, room.to_owned(), asks, stop.clone()));
    }
    let (follow, forward) = leg_controls(owner, me, apply);
    (
        Arc::new(BothControls(spotlight.0, Arc::new(follow))),
        Arc::new(BothControls(spotlight.1, Arc::new(forward))),
    )
}

/// Apply what the legs ask ([`Apply`]) to this node's instance of `room`, in order, until
/// `stop`.
pub async fn apply_moderation(
    sfu: SfuHandle,
    room: String,
    mut asks: mpsc::UnboundedReceiver<Apply>,
    stop: CancellationToken,
) {
    loop {
        let ask = tokio::select! {
            _ = stop.cancelled() => break,
            a = asks.recv() => match a { Some(a) => a, None => break },
        };
        apply_one(&sfu, &room, ask).await;
    }
}

async fn apply_one(sfu: &SfuHandle, room: &str, ask: Apply) {
    let snap = match sfu.room_info(room).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%room, error = %e, "cascade: cannot read the room to apply moderation");
            return;
        }
    };
    let find = |identity: &str| {
        let pid = snap
            .participants
            .iter()
            .find(|p| p.identity == identity)
            .map(|p| p.id.clone());
        if pid.is_none() {
            tracing::warn!(%room, %identity, "cascade: moderation for a participant not in this node's room");
        }
        pid
    };
    let m = match ask {
        Apply::GiveFloor {
            identity,
            echo,
            by_name,
        } => {
            let Some(pid) = find(&identity) else { return };
            let holds = snap.spotlight.as_ref() == Some(&pid)
                && !snap.moderator_muted.contains(&pid)
                && !snap.hands.iter().any(|h| h.participant_id == pid);
            if echo && holds {
                tracing::debug!(%room, %identity, "cascade: the owner's echo of this node's floor; already so");
                return;
            }
            Moderation::GiveFloor {
                participant: pid,
                by_name,
            }
        }
        Apply::MuteAudio { identity, muted } => {
            let Some(pid) = find(&identity) else { return };
            if snap.moderator_muted.contains(&pid) == muted {
                return; // already so (e.g. the floor was given just before)
            }
            Moderation::MuteAudio {
                participant: pid,
                muted,
            }
        }
        Apply::Remove { identity } => {
            let Some(pid) = find(&identity) else { return };
            Moderation::Remove { participant: pid }
        }
        Apply::EndRoom => Moderation::EndRoom,
        Apply::SeedChat { messages } => {
            // Each sender named by its participant here (a site's republisher, or our own
            // site); one this node cannot name keeps the owner's id (its name still shows).
            let messages = messages
                .into_iter()
                .map(|(mut m, identity)| {
                    let here = identity.and_then(|i| {
                        snap.participants
                            .iter()
                            .find(|p| p.identity == i)
                            .map(|p| p.id.clone())
                    });
                    if let Some(pid) = here {
                        m.from.participant_id = pid;
                    }
                    m
                })
                .collect();
            Moderation::SeedChat { messages }
        }
        Apply::StopPresentation => {
            if snap.presentation.is_none() {
                return; // already stopped here (the host here stopped it first)
            }
            Moderation::StopPresentation
        }
    };
    tracing::info!(%room, action = ?m, "cascade: the owner's moderation applied here");
    if let Err(e) = sfu.moderate(room, m).await {
        tracing::warn!(%room, error = %e, "cascade: moderation not applied");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::cascade_room::test_people::{p, pid};
    use rakor_proto::ChatSender;

    fn chat(from: &str, to: Option<&str>) -> ChatEntry {
        ChatEntry {
            id: "CH_1".into(),
            from: ChatSender {
                participant_id: pid(from),
                name: "x".into(),
            },
            text: "Kasus DBD minggu ini: 12".into(),
            at: "2030-05-01T02:01:05.123Z".into(),
            to: to.map(pid),
        }
    }

    fn hand(id: &str) -> RaisedHand {
        RaisedHand {
            participant_id: pid(id),
            name: id.into(),
            at: "2030-05-01T02:04:00.000Z".into(),
        }
    }

    fn say(as_p: &str, to: Option<&str>) -> RelayCommand {
        RelayCommand {
            as_participant: pid(as_p),
            action: RelayAction::Chat {
                text: "Kasus DBD minggu ini: 12".into(),
                to: to.map(str::to_owned),
            },
        }
    }

    /// The owner A's room as C's inbound relay subscriber sees it.
    fn owner_room() -> Vec<ParticipantInfo> {
        vec![
            p("PA_gub", "gubernur", Role::Host),
            p("PA_sem", "kab-semarang", Role::Participant),
            p("PA_solo", "cascade/c/kota-solo", Role::Participant),
            p("PA_kendal", "cascade/b/kab-kendal", Role::Participant),
            p("PA_relay_b", "cascade/b", Role::Relay),
        ]
    }

    #[test]
    fn the_owners_chat_is_repeated_here_once_by_the_senders_republisher() {
        let owner = owner_room();
        let here = |e: &ChatEntry| owner_chat_here(e, &owner, "a", "c");
        assert_eq!(here(&chat("PA_sem", None)), Some(say("PA_sem", None)));
        assert_eq!(here(&chat("PA_kendal", None)), Some(say("PA_kendal", None)));
        assert_eq!(here(&chat("PA_gub", None)), Some(say("PA_gub", None)));
        // Our own site's message came back from the owner: not again.
        assert_eq!(here(&chat("PA_solo", None)), None);
        // Private ones go by the addressee's republisher; forged and relay senders: nothing.
        assert_eq!(here(&chat("PA_gub", Some("PA_solo"))), None);
        assert_eq!(here(&chat("PA_forged", None)), None);
        assert_eq!(here(&chat("PA_relay_b", None)), None);
    }

    #[test]
    fn the_owners_history_is_this_nodes_with_senders_mapped_here() {
        let owner = owner_room();
        let history = [
            chat("PA_gub", None),
            chat("PA_gub", Some("PA_solo")),
            chat("PA_solo", None),
            chat("PA_kendal", None),
            chat("PA_forged", None),
            chat("PA_relay_b", None),
        ];
        let here = owner_history_here(&history, None, &owner, "a", "c");
        let Some(Apply::SeedChat { messages }) = here else {
            panic!("{here:?}")
        };
        let senders: Vec<Option<&str>> = messages.iter().map(|(_, i)| i.as_deref()).collect();
        // The private one is dropped; our own site is ours again; unknown senders and the
        // relay are kept with their names but named by nobody here.
        assert_eq!(
            senders,
            [
                Some("cascade/a/gubernur"),
                Some("kota-solo"),
                Some("cascade/b/kab-kendal"),
                None,
                None
            ]
        );
        // A resume's (`after`) or an empty history: nothing.
        assert_eq!(
            owner_history_here(&history, Some("CH_1"), &owner, "a", "c"),
            None
        );
        assert_eq!(owner_history_here(&[], None, &owner, "a", "c"), None);
    }

    #[test]
    fn only_this_nodes_sites_chat_goes_to_the_owner() {
        let local = [
            p("PC_solo", "kota-solo", Role::Participant),
            p("PC_wali", "wali-kota", Role::Host),
            p("PC_sem", "cascade/a/kab-semarang", Role::Participant),
            p("PC_relay", "cascade/a", Role::Relay),
        ];
        let fwd = |e: &ChatEntry| local_chat_to_owner(e, &local);
        assert_eq!(fwd(&chat("PC_solo", None)), Some(say("PC_solo", None)));
        assert_eq!(fwd(&chat("PC_wali", None)), Some(say("PC_wali", None)));
        assert_eq!(fwd(&chat("PC_sem", None)), None, "relayed here: not back");
        assert_eq!(fwd(&chat("PC_relay", None)), None);
        assert_eq!(fwd(&chat("PC_forged", None)), None);
        assert_eq!(fwd(&chat("PC_wali", Some("PC_solo"))), None);
    }

    #[test]
    fn a_private_chat_to_a_republisher_crosses_to_the_sites_node() {
        // On the owner A, the republisher of C's site (PA_solo) gets the governor's message:
        // C's inbound leg (source A) has the governor's republisher on C deliver it to kota-solo.
        let me = (&pid("PA_solo"), "cascade/c/kota-solo");
        assert_eq!(
            private_chat_across(&chat("PA_gub", Some("PA_solo")), me, "a", "c"),
            Some(say("PA_gub", Some("kota-solo")))
        );
        // Its own echo, a message to someone else, a message to the room: nothing.
        assert_eq!(
            private_chat_across(&chat("PA_solo", Some("PA_x")), me, "a", "c"),
            None
        );
        assert_eq!(
            private_chat_across(&chat("PA_gub", Some("PA_sem")), me, "a", "c"),
            None
        );
        assert_eq!(
            private_chat_across(&chat("PA_gub", None), me, "a", "c"),
            None
        );
        // On C, the republisher of A's site gets the mayor's message: to kab-semarang on A.
        let me = (&pid("PC_sem"), "cascade/a/kab-semarang");
        assert_eq!(
            private_chat_across(&chat("PC_wali", Some("PC_sem")), me, "c", "a"),
            Some(say("PC_wali", Some("kab-semarang")))
        );
        // An identity without a counterpart: nothing.
        let me = (&pid("PC_relay"), "cascade/a");
        assert_eq!(
            private_chat_across(&chat("PC_wali", Some("PC_relay")), me, "c", "a"),
            None
        );
    }

    #[test]
    fn hands_are_mirrored_in_order_and_lowered() {
        let local = [
            p("PB_kendal", "kab-kendal", Role::Participant),
            p("PB_batang", "kab-batang", Role::Participant),
            p("PB_sem", "cascade/a/kab-semarang", Role::Participant),
        ];
        let mut fwd = Vec::new();
        let h = |raised, id: &str| RelayCommand {
            as_participant: pid(id),
            action: RelayAction::Hand { raised },
        };
        let cmds = hands_to_mirror(
            &[hand("PB_sem"), hand("PB_batang"), hand("PB_kendal")],
            &local,
            is_own_site,
            &mut fwd,
        );
        assert_eq!(cmds, vec![h(true, "PB_batang"), h(true, "PB_kendal")]);
        // The same list again: nothing; a forged id in the list: ignored.
        let again = [
            hand("PB_sem"),
            hand("PB_batang"),
            hand("PB_kendal"),
            hand("PB_forged"),
        ];
        assert!(hands_to_mirror(&again, &local, is_own_site, &mut fwd).is_empty());
        // Batang's hand goes down (given the floor on the owner, or lowered here).
        let cmds = hands_to_mirror(&[hand("PB_kendal")], &local, is_own_site, &mut fwd);
        assert_eq!(cmds, vec![h(false, "PB_batang")]);
        let cmds = hands_to_mirror(&[], &local, is_own_site, &mut fwd);
        assert_eq!(cmds, vec![h(false, "PB_kendal")]);
        assert!(fwd.is_empty());
    }

    #[test]
    fn the_owners_floor_and_a_remote_mute_map_to_this_node() {
        let owner = owner_room();
        assert_eq!(
            owner_floor_here(&pid("PA_solo"), None, &owner, "a", "c"),
            Some(Apply::GiveFloor {
                identity: "kota-solo".into(),
                echo: false,
                by_name: None
            })
        );
        assert_eq!(
            owner_floor_here(&pid("PA_kendal"), Some(&pid("PA_gub")), &owner, "a", "c"),
            Some(Apply::GiveFloor {
                identity: "cascade/b/kab-kendal".into(),
                echo: false,
                by_name: Some("gubernur".into())
            })
        );
        assert_eq!(
            owner_floor_here(&pid("PA_forged"), None, &owner, "a", "c"),
            None
        );
        assert_eq!(
            owner_floor_here(&pid("PA_relay_b"), None, &owner, "a", "c"),
            None
        );
        assert_eq!(
            republisher_mute_here("cascade/c/kota-solo", true, "a", "c"),
            Some(Apply::MuteAudio {
                identity: "kota-solo".into(),
                muted: true
            })
        );
        assert_eq!(
            republisher_mute_here("cascade/b/kab-kendal", true, "a", "c"),
            None
        );
        assert_eq!(republisher_mute_here("cascade/c", true, "a", "c"), None);
    }

    #[test]
    fn the_controls_queue_hands_and_floor_and_cross_private_chats() {
        let (apply_tx, mut apply_rx) = mpsc::unbounded_channel();
        let (follow, forward) = leg_controls("a", "c", apply_tx);
        let owner = owner_room();
        // The owner's queue: B's site, then C's own site (its hand is up here already).
        let hands = ServerMessage::Hands {
            hands: vec![hand("PA_kendal"), hand("PA_solo")],
        };
        assert_eq!(follow.source_event(&hands, &owner), None);
        let mut q = follow.leg.queue.try_lock().unwrap();
        assert_eq!(
            q.try_recv().ok(),
            Some(RelayCommand {
                as_participant: pid("PA_kendal"),
                action: RelayAction::Hand { raised: true }
            })
        );
        assert!(q.try_recv().is_err());
        let floor = ServerMessage::FloorGiven {
            participant_id: pid("PA_solo"),
            by: Some(pid("PA_gub")),
        };
        follow.source_event(&floor, &owner);
        assert_eq!(
            apply_rx.try_recv().ok(),
            Some(Apply::GiveFloor {
                identity: "kota-solo".into(),
                echo: false,
                by_name: Some("gubernur".into())
            })
        );
        // The governor's private message to C's site reaches C's republisher on A.
        forward.republisher_event(
            &pid("PC_solo"),
            (&pid("PA_solo"), "cascade/c/kota-solo"),
            &ServerMessage::Chat(chat("PA_gub", Some("PA_solo"))),
        );
        assert_eq!(q.try_recv().ok(), Some(say("PA_gub", Some("kota-solo"))));
        forward.republisher_event(
            &pid("PC_solo"),
            (&pid("PA_solo"), "cascade/c/kota-solo"),
            &ServerMessage::ModeratorMute { muted: true },
        );
        assert_eq!(
            apply_rx.try_recv().ok(),
            Some(Apply::MuteAudio {
                identity: "kota-solo".into(),
                muted: true
            })
        );
        drop(q);
        // This node's operator muted B's site's republisher here (B's site is `PA_kendal` on
        // the owner): the inbound leg's relay subscriber repeats it on the owner, where B's
        // node learns it; nothing is applied here (it holds here already).
        follow.republisher_event(
            &pid("PA_kendal"),
            (&pid("PC_kendal"), "cascade/b/kab-kendal"),
            &ServerMessage::ModeratorMute { muted: true },
        );
        let mut q = follow.leg.queue.try_lock().unwrap();
        assert_eq!(
            q.try_recv().ok(),
            Some(RelayCommand {
                as_participant: pid("PA_kendal"),
                action: RelayAction::SourceMute { muted: true }
            })
        );
        assert!(apply_rx.try_recv().is_err());
    }

    /// Node B's room (the owner is A): its host, its site, relayed sites of A and C, the
    /// owner's host relayed, the relay subscriber.
    fn b_room() -> Vec<ParticipantInfo> {
        vec![
            p("PB_bupati", "bupati", Role::Host),
            p("PB_kendal", "kab-kendal", Role::Participant),
            p("PB_sem", "cascade/a/kab-semarang", Role::Participant),
            p("PB_solo", "cascade/c/kota-solo", Role::Participant),
            p("PB_gub", "cascade/a/gubernur", Role::Host),
            p("PB_relay", "cascade/a", Role::Relay),
        ]
    }

    #[test]
    fn a_local_hosts_floor_and_mute_go_to_the_owner_as_the_host() {
        let b = b_room();
        let floor = |t: &str, by: Option<&str>| {
            local_host_to_owner(&pid(t), by.map(pid).as_ref(), &b, "a", "b", |identity| {
                RelayAction::GiveFloor { identity }
            })
        };
        let floor_to = |identity: &str| {
            Some(RelayCommand {
                as_participant: pid("PB_bupati"),
                action: RelayAction::GiveFloor {
                    identity: identity.into(),
                },
            })
        };
        // C's site (a republisher on A too), A's own site, B's own site.
        assert_eq!(
            floor("PB_solo", Some("PB_bupati")),
            floor_to("cascade/c/kota-solo")
        );
        assert_eq!(floor("PB_sem", Some("PB_bupati")), floor_to("kab-semarang"));
        assert_eq!(
            floor("PB_kendal", Some("PB_bupati")),
            floor_to("cascade/b/kab-kendal")
        );
        // Not by a host of this node: the operator path (the owner's floor applied here), a
        // relayed host, a site, a forged id.
        assert_eq!(floor("PB_solo", None), None);
        assert_eq!(floor("PB_solo", Some("PB_gub")), None);
        assert_eq!(floor("PB_solo", Some("PB_kendal")), None);
        assert_eq!(floor("PB_solo", Some("PB_forged")), None);
        // Targets the owner cannot name: the relay subscriber, nobody.
        assert_eq!(floor("PB_relay", Some("PB_bupati")), None);
        assert_eq!(floor("PB_forged", Some("PB_bupati")), None);
        let mute = local_host_to_owner(
            &pid("PB_sem"),
            Some(&pid("PB_bupati")),
            &b,
            "a",
            "b",
            |identity| RelayAction::MuteAudio {
                identity,
                muted: true,
            },
        );
        assert_eq!(
            mute.map(|c| c.action),
            Some(RelayAction::MuteAudio {
                identity: "kab-semarang".into(),
                muted: true
            })
        );
    }

    #[test]
    fn the_outbound_leg_forwards_a_local_floor_and_mute_and_expects_the_echo_once() {
        let (apply_tx, mut apply_rx) = mpsc::unbounded_channel();
        let (follow, forward) = leg_controls("a", "b", apply_tx);
        let b = b_room();
        let given = |by: Option<&str>| ServerMessage::FloorGiven {
            participant_id: pid("PB_solo"),
            by: by.map(pid),
        };
        assert_eq!(
            forward.source_event(&given(Some("PB_bupati")), &b),
            Some(RelayCommand {
                as_participant: pid("PB_bupati"),
                action: RelayAction::GiveFloor {
                    identity: "cascade/c/kota-solo".into()
                },
            })
        );
        // The owner's floor applied here (operator path, no `by`): not sent back.
        assert_eq!(forward.source_event(&given(None), &b), None);
        // The owner's echo is marked once; the next floor to the same site is the owner's own.
        let owner = owner_room();
        let echo = ServerMessage::FloorGiven {
            participant_id: pid("PA_solo"),
            by: Some(pid("PA_rep_bupati")),
        };
        follow.source_event(&echo, &owner);
        assert_eq!(
            apply_rx.try_recv().ok(),
            Some(Apply::GiveFloor {
                identity: "cascade/c/kota-solo".into(),
                echo: true,
                by_name: None
            })
        );
        follow.source_event(&echo, &owner);
        assert_eq!(
            apply_rx.try_recv().ok(),
            Some(Apply::GiveFloor {
                identity: "cascade/c/kota-solo".into(),
                echo: false,
                by_name: None
            })
        );
        // The host's mute and unmute; a site's own mute (no `by`) and the operator's: nothing.
        let muted = |m: bool, by: Option<&str>| ServerMessage::TrackMuted {
            participant_id: pid("PB_sem"),
            track_id: rakor_proto::TrackId("TR_1".into()),
            muted: m,
            by: by.map(pid),
        };
        for m in [true, false] {
            assert_eq!(
                forward.source_event(&muted(m, Some("PB_bupati")), &b),
                Some(RelayCommand {
                    as_participant: pid("PB_bupati"),
                    action: RelayAction::MuteAudio {
                        identity: "kab-semarang".into(),
                        muted: m
                    },
                })
            );
        }
        assert_eq!(forward.source_event(&muted(true, None), &b), None);
        assert_eq!(forward.source_event(&muted(true, Some("PB_gub")), &b), None);
    }

    #[test]
    fn a_local_hosts_removal_end_and_stop_go_to_the_owner() {
        let b = b_room();
        let remove = |t: &str, by: Option<&str>| {
            local_removal_to_owner(&pid(t), by.map(pid).as_ref(), &b, "a", "b")
        };
        let remove_there = |identity: &str| {
            Some(RelayCommand {
                as_participant: pid("PB_bupati"),
                action: RelayAction::Remove {
                    identity: identity.into(),
                },
            })
        };
        // Relayed sites: removed where they are connected (C's through its republisher on A).
        assert_eq!(
            remove("PB_solo", Some("PB_bupati")),
            remove_there("cascade/c/kota-solo")
        );
        assert_eq!(
            remove("PB_sem", Some("PB_bupati")),
            remove_there("kab-semarang")
        );
        // B's own site is removed here already; not by a host of B; the relay; nobody.
        assert_eq!(remove("PB_kendal", Some("PB_bupati")), None);
        assert_eq!(remove("PB_solo", None), None);
        assert_eq!(remove("PB_solo", Some("PB_gub")), None);
        assert_eq!(remove("PB_solo", Some("PB_kendal")), None);
        assert_eq!(remove("PB_relay", Some("PB_bupati")), None);
        assert_eq!(remove("PB_forged", Some("PB_bupati")), None);

        let (apply_tx, _apply_rx) = mpsc::unbounded_channel();
        let (_follow, forward) = leg_controls("a", "b", apply_tx);
        let left = |id: &str, reason, by: Option<&str>| ServerMessage::ParticipantLeft {
            participant_id: pid(id),
            reason,
            by: by.map(pid),
        };
        assert_eq!(
            forward.source_event(
                &left("PB_solo", LeaveReason::Removed, Some("PB_bupati")),
                &b
            ),
            remove_there("cascade/c/kota-solo")
        );
        assert_eq!(
            forward.source_event(&left("PB_solo", LeaveReason::Disconnected, None), &b),
            None
        );
        // The room ended here: every `participant_left` names the host; the owner is asked
        // once. The owner's end applied here (no `by`) is not sent back.
        let ended = |id: &str, by: Option<&str>| left(id, LeaveReason::RoomEnded, by);
        assert_eq!(forward.source_event(&ended("PB_kendal", None), &b), None);
        assert_eq!(
            forward.source_event(&ended("PB_kendal", Some("PB_gub")), &b),
            None
        );
        assert_eq!(
            forward.source_event(&ended("PB_kendal", Some("PB_bupati")), &b),
            Some(RelayCommand {
                as_participant: pid("PB_bupati"),
                action: RelayAction::EndRoom
            })
        );
        assert_eq!(
            forward.source_event(&ended("PB_bupati", Some("PB_bupati")), &b),
            None
        );
        // A host here stopped the presentation: stopped at the owner too.
        let stopped = |by: Option<&str>| ServerMessage::Presentation {
            presentation: None,
            by: by.map(pid),
        };
        assert_eq!(
            forward.source_event(&stopped(Some("PB_bupati")), &b),
            Some(RelayCommand {
                as_participant: pid("PB_bupati"),
                action: RelayAction::StopPresentation
            })
        );
        assert_eq!(forward.source_event(&stopped(None), &b), None);
        assert_eq!(forward.source_event(&stopped(Some("PB_sem")), &b), None);
    }

    #[test]
    fn the_owners_end_removal_and_stop_apply_here() {
        let (apply_tx, mut apply_rx) = mpsc::unbounded_channel();
        let (follow, forward) = leg_controls("a", "c", apply_tx);
        let owner = owner_room();
        let ended = ServerMessage::ParticipantLeft {
            participant_id: pid("PA_sem"),
            reason: LeaveReason::RoomEnded,
            by: Some(pid("PA_gub")),
        };
        assert_eq!(follow.source_event(&ended, &owner), None);
        assert_eq!(apply_rx.try_recv().ok(), Some(Apply::EndRoom));
        let own_leave = ServerMessage::Leave {
            reason: LeaveReason::RoomEnded,
            resumable: false,
        };
        follow.source_event(&own_leave, &owner);
        assert!(apply_rx.try_recv().is_err(), "ended once");

        let removed = ServerMessage::Leave {
            reason: LeaveReason::Removed,
            resumable: false,
        };
        let told = |m: &ServerMessage, identity: &str| republisher_told_here(m, identity, "a", "c");
        assert_eq!(
            told(&removed, "cascade/c/kota-solo"),
            Some(Apply::Remove {
                identity: "kota-solo".into()
            })
        );
        assert_eq!(told(&removed, "cascade/b/kab-kendal"), None);
        assert_eq!(told(&removed, "cascade/c"), None);
        assert_eq!(told(&own_leave, "cascade/c/kota-solo"), None);
        let stop = |reason| ServerMessage::PresentationStopped {
            track_id: rakor_proto::TrackId("TR_s".into()),
            reason,
            by: None,
        };
        assert_eq!(
            told(&stop(PresentationEnd::Stopped), "cascade/c/kota-solo"),
            Some(Apply::StopPresentation)
        );
        assert_eq!(
            told(&stop(PresentationEnd::Unpublished), "cascade/c/kota-solo"),
            None
        );
        // Through the outbound leg's control: the site's republisher on A was removed.
        forward.republisher_event(
            &pid("PC_solo"),
            (&pid("PA_solo"), "cascade/c/kota-solo"),
            &removed,
        );
        assert_eq!(
            apply_rx.try_recv().ok(),
            Some(Apply::Remove {
                identity: "kota-solo".into()
            })
        );
    }

    #[test]
    fn the_owners_unmute_lifts_a_republishers_mute_here() {
        let owner = owner_room();
        let unmute = |id: &str| owner_unmute_here(&pid(id), &owner, "a", "c");
        // A's own site and B's site: their republishers here.
        assert_eq!(
            unmute("PA_sem"),
            Some(Apply::MuteAudio {
                identity: "cascade/a/kab-semarang".into(),
                muted: false
            })
        );
        assert_eq!(
            unmute("PA_kendal"),
            Some(Apply::MuteAudio {
                identity: "cascade/b/kab-kendal".into(),
                muted: false
            })
        );
        // C's own site (its republisher's `moderator_mute` does it), the relay, nobody.
        assert_eq!(unmute("PA_solo"), None);
        assert_eq!(unmute("PA_relay_b"), None);
        assert_eq!(unmute("PA_forged"), None);
        let (apply_tx, mut apply_rx) = mpsc::unbounded_channel();
        let (follow, _forward) = leg_controls("a", "c", apply_tx);
        let muted = |m: bool| ServerMessage::TrackMuted {
            participant_id: pid("PA_sem"),
            track_id: rakor_proto::TrackId("TR_1".into()),
            muted: m,
            by: Some(pid("PA_gub")),
        };
        follow.source_event(&muted(true), &owner);
        assert!(
            apply_rx.try_recv().is_err(),
            "a mute is enforced at the site's node"
        );
        follow.source_event(&muted(false), &owner);
        assert_eq!(
            apply_rx.try_recv().ok(),
            Some(Apply::MuteAudio {
                identity: "cascade/a/kab-semarang".into(),
                muted: false
            })
        );
    }
}
