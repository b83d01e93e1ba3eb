//! Room state across a cascade relay leg (issue 17): besides tracks, a leg hands the source
//! room's signalling events to a [`RelayControl`] (the server's `cascade_room`), which may
//! answer with a [`RelayCommand`] that one source participant's republisher sends on the
//! destination node (e.g. a host's spotlight on a non-owner node, forwarded to the owner by
//! that host's republisher, itself a host there). Chat, raised hands and moderation
//! (`crates/server/src/cascade_moderation.rs`) also queue commands on a leg
//! ([`RelayControl::commands`]) and watch what the republishers themselves receive
//! ([`RelayControl::republisher_event`]: a private chat or a moderator mute addressed to a
//! relayed site on the far node). A host's give-floor and moderator mute on a non-owner node go
//! to the owner the same way ([`RelayAction::GiveFloor`], [`RelayAction::MuteAudio`]), and so do
//! its `remove`, `end_room` and `stop_presentation` ([`RelayAction::Remove`],
//! [`RelayAction::EndRoom`], [`RelayAction::StopPresentation`]).

use crate::Client;
use rakor_proto::{ClientMessage, ModerateAction, ParticipantId, ParticipantInfo, ServerMessage};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};

/// Commands queued for a leg from outside its source events (another leg, several commands
/// for one event); the leg running now holds the lock, a restarted leg takes it over.
pub type CommandQueue = Arc<Mutex<mpsc::UnboundedReceiver<RelayCommand>>>;

/// What a relay leg does with its source room's signalling besides relaying tracks.
pub trait RelayControl: Send + Sync {
    /// A server message of the source room as the relay subscriber received it (also, once
    /// after joining, a `spotlight` with the room's spotlight at join time); `participants`:
    /// the source room as the relay subscriber knows it now.
    fn source_event(
        &self,
        msg: &ServerMessage,
        participants: &[ParticipantInfo],
    ) -> Option<RelayCommand>;

    /// Commands to run besides those [`RelayControl::source_event`] answers with.
    fn commands(&self) -> Option<CommandQueue> {
        None
    }

    /// A server message one of this leg's republishers received on the destination node
    /// (`source`: the source participant it republishes; `me`: its own participant id and
    /// identity there). Republishers' messages are read every [`REPUBLISHER_POLL`].
    fn republisher_event(
        &self,
        source: &ParticipantId,
        me: (&ParticipantId, &str),
        msg: &ServerMessage,
    ) {
        let _ = (source, me, msg);
    }
}

/// How often a leg reads what its republishers received.
pub const REPUBLISHER_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A command sent on the destination node by the republisher of a source participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCommand {
    /// The source participant (id on the source node) whose republisher sends it.
    pub as_participant: ParticipantId,
    pub action: RelayAction,
}

/// What a [`RelayCommand`] does on the destination node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAction {
    /// Set the destination room's spotlight to the participant with this identity there
    /// (`None`: clear it).
    Spotlight { identity: Option<String> },
    /// Send a chat message, to the room or (`to`: an identity on the destination) privately.
    Chat { text: String, to: Option<String> },
    /// Raise or lower the republisher's hand.
    Hand { raised: bool },
    /// Give the floor (`give_floor`) to the participant with this identity there; the
    /// republisher must be a host there.
    GiveFloor { identity: String },
    /// Moderator-mute (`moderate mute_audio`) or unmute (`unmute_audio`) the participant with
    /// this identity there; the republisher must be a host there.
    MuteAudio { identity: String, muted: bool },
    /// Remove (`moderate remove`) the participant with this identity there; the republisher
    /// must be a host there.
    Remove { identity: String },
    /// End the room there (`moderate end_room`); the republisher must be a host there.
    EndRoom,
    /// Stop the room's presentation there (`moderate stop_presentation`); the republisher
    /// must be a host there.
    StopPresentation,
    /// Moderator-mute (`muted`) or unmute `as_participant` itself in the leg's *source* room,
    /// sent there by the leg's relay subscriber (`moderate` from role `relay`), not by a
    /// republisher: this node's operator or host (un)muted the participant's republisher here.
    SourceMute { muted: bool },
}

/// The destination participant id of `identity` as `republisher` sees the room: itself or
/// one of the others; `None` when nobody there has it.
pub fn destination_id(republisher: &Client, identity: &str) -> Option<ParticipantId> {
    if republisher.joined().identity == identity {
        return Some(republisher.current_participant_id());
    }
    republisher
        .participants()
        .into_iter()
        .find(|p| p.identity == identity)
        .map(|p| p.id)
}

/// Send `cmd` as its participant's republisher (one of `republisher`). A command naming
/// nobody on the destination is dropped with a warning (the destination refuses unknown ids
/// anyway: `error {"code":"unknown_participant"}` to the republisher only).
pub async fn run_command(republisher: Option<&Client>, cmd: RelayCommand) {
    let Some(r) = republisher else {
        tracing::warn!(
            participant = %cmd.as_participant,
            "cascade: no republisher to send a room command as; it stays on this node"
        );
        return;
    };
    match cmd.action {
        RelayAction::Spotlight { identity } => {
            let target = match identity {
                None => None,
                Some(identity) => match destination_id(r, &identity) {
                    Some(id) => Some(id),
                    None => {
                        tracing::warn!(%identity, "cascade: spotlight target not on the far node; not forwarded");
                        return;
                    }
                },
            };
            let msg = ClientMessage::Spotlight {
                participant_id: target,
            };
            if let Err(e) = r.send(&msg).await {
                tracing::warn!(error = %e, "cascade: spotlight not forwarded");
            }
        }
        RelayAction::Chat { text, to } => {
            let to = match to {
                None => None,
                Some(identity) => match destination_id(r, &identity) {
                    Some(id) => Some(id),
                    None => {
                        tracing::warn!(%identity, "cascade: private chat addressee not on the far node; not forwarded");
                        return;
                    }
                },
            };
            if let Err(e) = r.send(&ClientMessage::Chat { text, to }).await {
                tracing::warn!(error = %e, "cascade: chat not forwarded");
            }
        }
        RelayAction::Hand { raised } => {
            if let Err(e) = r.send(&ClientMessage::Hand { raised }).await {
                tracing::warn!(error = %e, "cascade: hand not forwarded");
            }
        }
        RelayAction::GiveFloor { identity } => {
            let Some(participant_id) = destination_id(r, &identity) else {
                tracing::warn!(%identity, "cascade: floor target not on the far node; not forwarded");
                return;
            };
            if let Err(e) = r.send(&ClientMessage::GiveFloor { participant_id }).await {
                tracing::warn!(error = %e, "cascade: give floor not forwarded");
            }
        }
        RelayAction::MuteAudio { identity, muted } => {
            let Some(participant_id) = destination_id(r, &identity) else {
                tracing::warn!(%identity, "cascade: mute target not on the far node; not forwarded");
                return;
            };
            let action = if muted {
                ModerateAction::MuteAudio
            } else {
                ModerateAction::UnmuteAudio
            };
            let msg = ClientMessage::Moderate {
                action,
                participant_id: Some(participant_id),
            };
            if let Err(e) = r.send(&msg).await {
                tracing::warn!(error = %e, "cascade: moderator mute not forwarded");
            }
        }
        RelayAction::Remove { identity } => {
            let Some(participant_id) = destination_id(r, &identity) else {
                tracing::warn!(%identity, "cascade: removal target not on the far node; not forwarded");
                return;
            };
            moderate(r, ModerateAction::Remove, Some(participant_id)).await;
        }
        RelayAction::EndRoom => moderate(r, ModerateAction::EndRoom, None).await,
        RelayAction::SourceMute { .. } => {
            tracing::warn!(
                "cascade: a source mute is the relay subscriber's; not sent by a republisher"
            )
        }
        RelayAction::StopPresentation => moderate(r, ModerateAction::StopPresentation, None).await,
    }
}

async fn moderate(r: &Client, action: ModerateAction, participant_id: Option<ParticipantId>) {
    let msg = ClientMessage::Moderate {
        action,
        participant_id,
    };
    if let Err(e) = r.send(&msg).await {
        tracing::warn!(error = %e, ?action, "cascade: moderation not forwarded");
    }
}
