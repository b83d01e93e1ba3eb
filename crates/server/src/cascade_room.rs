//! Room-wide state across the cascade (issue 17): the spotlight.
//!
//! The room's owner is authoritative. Each non-owner node's inbound relay subscriber (joined
//! to the owner) receives the room's `spotlight` events like any participant; the node maps
//! the spotlighted participant to its own instance of the room (a participant of this node
//! when the site is here, else its republisher `cascade/<origin>/<identity>`) and applies the
//! same spotlight locally through the operator path ([`rakor_sfu::Moderation::Spotlight`]), so
//! its sites get `spotlight` naming their own participant id. A host on a non-owner node sets
//! the spotlight here as on one node; the outbound relay subscriber (joined here) sees that
//! `spotlight`, and the host's republisher on the owner (a host there too) sends the same
//! spotlight to the owner, which then tells every node (the spotlight inside a floor the host
//! gave goes with that floor, `crate::cascade_moderation`, and is not sent again). Unknown or
//! unmappable ids (a relay subscriber, an id nobody has) are refused: logged, never applied,
//! never a panic.

use rakor_client::relay::CASCADE_PREFIX;
use rakor_client::relay_control::{RelayAction, RelayCommand, RelayControl};
use rakor_proto::{ParticipantId, ParticipantInfo, Role, ServerMessage};
use rakor_sfu::{Moderation, SfuHandle};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The owner's spotlight as an identity in this node's room instance: `None` = not known yet,
/// `Some(None)` = cleared, `Some(Some(identity))` = that participant here.
pub type Wanted = Option<Option<String>>;

/// While the spotlighted participant is not here yet (its republisher is joining), the
/// spotlight is tried again this often, at most [`UNRESOLVED_TRIES`] times.
const UNRESOLVED_RETRY: Duration = Duration::from_millis(250);
const UNRESOLVED_TRIES: u32 = 120;

/// The identity on node `dst` of the participant whose identity on node `src` is `identity`
/// (every node's room instance names a site of another node `cascade/<origin>/<identity>`).
/// `None` for what has no counterpart: a relay subscriber (`cascade/<node>`), an empty or
/// malformed identity.
pub fn map_identity(identity: &str, src: &str, dst: &str) -> Option<String> {
    if identity.is_empty() || src.is_empty() || dst.is_empty() {
        return None;
    }
    match identity.strip_prefix(CASCADE_PREFIX) {
        None => Some(format!("{CASCADE_PREFIX}{src}/{identity}")),
        Some(rest) => {
            let (origin, id) = rest.split_once('/')?;
            if origin.is_empty() || id.is_empty() {
                None
            } else if origin == dst {
                Some(id.to_owned())
            } else {
                Some(identity.to_owned())
            }
        }
    }
}

/// The identity of participant `id` in `participants` mapped from node `src` to `dst`
/// (`None`: nobody there has that id, or it has no counterpart).
fn mapped(
    id: &ParticipantId,
    participants: &[ParticipantInfo],
    src: &str,
    dst: &str,
) -> Option<String> {
    let p = participants.iter().find(|p| &p.id == id)?;
    map_identity(&p.identity, src, dst)
}

/// What a `spotlight` event of the owner's room means here: `Some(wanted)` to apply, `None`
/// to refuse (an id the owner's room does not list, or one without a counterpart here).
pub fn owner_spotlight_here(
    target: Option<&ParticipantId>,
    owner_participants: &[ParticipantInfo],
    owner: &str,
    me: &str,
) -> Option<Option<String>> {
    match target {
        None => Some(None),
        Some(id) => mapped(id, owner_participants, owner, me).map(Some),
    }
}

/// Which participant of this node's room instance has `identity` (for applying the owner's
/// spotlight here): `Some(None)` to clear, `None` while nobody here has it.
pub fn local_target(
    participants: &[ParticipantInfo],
    identity: Option<&str>,
) -> Option<Option<ParticipantId>> {
    match identity {
        None => Some(None),
        Some(identity) => participants
            .iter()
            .find(|p| p.identity == identity)
            .map(|p| Some(p.id.clone())),
    }
}

/// The inbound leg's control (source: the owner's room): follows the owner's spotlight.
pub struct FollowOwner {
    pub owner: String,
    pub me: String,
    pub wanted: watch::Sender<Wanted>,
}

impl RelayControl for FollowOwner {
    fn source_event(
        &self,
        msg: &ServerMessage,
        participants: &[ParticipantInfo],
    ) -> Option<RelayCommand> {
        if let ServerMessage::Spotlight { participant_id, .. } = msg {
            match owner_spotlight_here(participant_id.as_ref(), participants, &self.owner, &self.me)
            {
                Some(w) => {
                    self.wanted.send_replace(Some(w));
                }
                None => tracing::warn!(
                    participant = ?participant_id,
                    "cascade: the owner's spotlight names nobody this node can map; not applied"
                ),
            }
        }
        None
    }
}

/// The outbound leg's control (source: this node's room): a spotlight a host of this node
/// set goes to the owner through that host's republisher.
pub struct ForwardLocalHost {
    pub owner: String,
    pub me: String,
    /// What this node last learnt from the owner (a spotlight equal to it is the owner's own,
    /// applied here, and is not sent back).
    pub wanted: watch::Receiver<Wanted>,
    /// The last `floor_given` seen (target, by): the spotlight that follows it is part of
    /// that floor, which goes to the owner as a whole (`crate::cascade_moderation`).
    pub floor: Mutex<Option<(ParticipantId, ParticipantId)>>,
}

impl ForwardLocalHost {
    pub fn new(owner: String, me: String, wanted: watch::Receiver<Wanted>) -> Self {
        Self {
            owner,
            me,
            wanted,
            floor: Mutex::new(None),
        }
    }
}

/// The command that takes a spotlight set on node `me` (as its outbound relay subscriber saw
/// it) to the owner, or `None`: not set by a host of this node, already the owner's, or
/// naming nobody with a counterpart there.
pub fn forward_spotlight(
    target: Option<&ParticipantId>,
    by: &ParticipantId,
    participants: &[ParticipantInfo],
    wanted: &Wanted,
    owner: &str,
    me: &str,
) -> Option<RelayCommand> {
    let host = participants.iter().find(|p| &p.id == by)?;
    if host.role != Role::Host || host.identity.starts_with(CASCADE_PREFIX) {
        return None; // the operator path, the cascade itself, or a relayed host
    }
    let here = match target {
        None => None,
        Some(id) => Some(participants.iter().find(|p| &p.id == id)?.identity.clone()),
    };
    if wanted.as_ref() == Some(&here) {
        return None; // the owner has it already
    }
    let there = match here {
        None => None,
        Some(identity) => Some(map_identity(&identity, me, owner)?),
    };
    Some(RelayCommand {
        as_participant: by.clone(),
        action: RelayAction::Spotlight { identity: there },
    })
}

impl RelayControl for ForwardLocalHost {
    fn source_event(
        &self,
        msg: &ServerMessage,
        participants: &[ParticipantInfo],
    ) -> Option<RelayCommand> {
        let mut floor = self.floor.lock().unwrap_or_else(|e| e.into_inner());
        let (participant_id, by) = match msg {
            ServerMessage::FloorGiven {
                participant_id,
                by: Some(by),
            } => {
                *floor = Some((participant_id.clone(), by.clone()));
                return None;
            }
            ServerMessage::Spotlight { participant_id, by } => (participant_id, by),
            _ => return None,
        };
        // The spotlight of a floor just given: forwarded with the floor, not again.
        let given = floor.take();
        drop(floor);
        if given.is_some_and(|(t, b)| participant_id.as_ref() == Some(&t) && &b == by) {
            return None;
        }
        let wanted = self.wanted.borrow().clone();
        forward_spotlight(
            participant_id.as_ref(),
            by,
            participants,
            &wanted,
            &self.owner,
            &self.me,
        )
    }
}

/// Applies the owner's spotlight ([`FollowOwner`]) to this node's instance of `room` until
/// `stop`: at every change, and again while the spotlighted site's republisher is not here
/// yet.
pub async fn apply_owner_spotlight(
    sfu: SfuHandle,
    room: String,
    mut wanted: watch::Receiver<Wanted>,
    stop: CancellationToken,
) {
    let mut tries = 0u32;
    loop {
        let want = wanted.borrow_and_update().clone();
        let mut settled = true;
        if let Some(want) = want {
            settled = apply_once(&sfu, &room, want.as_deref()).await;
            if settled {
                tries = 0;
            } else {
                tries += 1;
                if tries >= UNRESOLVED_TRIES {
                    tracing::warn!(%room, identity = ?want, "cascade: the owner's spotlight is not in this node's room; given up until it changes");
                    settled = true;
                    tries = 0;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = wanted.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(UNRESOLVED_RETRY), if !settled => {}
        }
    }
}

/// One attempt; false while the spotlighted identity is not in the room here.
async fn apply_once(sfu: &SfuHandle, room: &str, want: Option<&str>) -> bool {
    let snap = match sfu.room_info(room).await {
        Ok(Some(s)) => s,
        Ok(None) => return false, // nobody here yet
        Err(e) => {
            tracing::warn!(%room, error = %e, "cascade: cannot read the room to apply the spotlight");
            return true;
        }
    };
    let Some(target) = local_target(&snap.participants, want) else {
        return false;
    };
    if snap.spotlight == target {
        return true;
    }
    tracing::info!(%room, spotlight = ?target, "cascade: the owner's spotlight applied here");
    if let Err(e) = sfu
        .moderate(
            room,
            Moderation::Spotlight {
                participant: target,
            },
        )
        .await
    {
        tracing::warn!(%room, error = %e, "cascade: the owner's spotlight not applied");
    }
    true
}

/// Participants for the cascade modules' unit tests (this one's and `cascade_moderation`'s).
#[cfg(test)]
pub(crate) mod test_people {
    use rakor_proto::{ParticipantId, ParticipantInfo, Role};

    /// A participant `id` with `identity` (also its name) and `role`, publishing nothing.
    pub(crate) fn p(id: &str, identity: &str, role: Role) -> ParticipantInfo {
        ParticipantInfo {
            id: ParticipantId(id.into()),
            identity: identity.into(),
            name: identity.into(),
            role,
            tracks: Vec::new(),
        }
    }

    pub(crate) fn pid(s: &str) -> ParticipantId {
        ParticipantId(s.into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::test_people::{p, pid};
    use super::*;

    #[test]
    fn identities_map_between_nodes() {
        // A site of A, seen from C: A's republisher on C.
        assert_eq!(
            map_identity("kab-semarang", "a", "c").as_deref(),
            Some("cascade/a/kab-semarang")
        );
        // C's own site, as the owner A names it: the local participant on C.
        assert_eq!(
            map_identity("cascade/c/kota-solo", "a", "c").as_deref(),
            Some("kota-solo")
        );
        // B's site through A: the same republisher identity on C.
        assert_eq!(
            map_identity("cascade/b/kab-kendal", "a", "c").as_deref(),
            Some("cascade/b/kab-kendal")
        );
        // From C to the owner A: A's republisher on C is A's own site.
        assert_eq!(
            map_identity("cascade/a/gubernur", "c", "a").as_deref(),
            Some("gubernur")
        );
        assert_eq!(
            map_identity("kota-solo", "c", "a").as_deref(),
            Some("cascade/c/kota-solo")
        );
    }

    #[test]
    fn unmappable_identities_are_refused() {
        assert_eq!(map_identity("cascade/c", "a", "c"), None); // a relay subscriber
        assert_eq!(map_identity("cascade/", "a", "c"), None);
        assert_eq!(map_identity("cascade//x", "a", "c"), None);
        assert_eq!(map_identity("cascade/b/", "a", "c"), None);
        assert_eq!(map_identity("", "a", "c"), None);
        assert_eq!(map_identity("x", "", "c"), None);
    }

    #[test]
    fn the_owners_spotlight_maps_to_this_nodes_ids() {
        let owner = [
            p("PA_host", "gubernur", Role::Host),
            p("PA_sem", "kab-semarang", Role::Participant),
            p("PA_solo", "cascade/c/kota-solo", Role::Participant),
            p("PA_relay", "cascade/c", Role::Viewer),
        ];
        let here = |t: Option<&str>| owner_spotlight_here(t.map(pid).as_ref(), &owner, "a", "c");
        assert_eq!(
            here(Some("PA_sem")),
            Some(Some("cascade/a/kab-semarang".into()))
        );
        assert_eq!(here(Some("PA_solo")), Some(Some("kota-solo".into())));
        assert_eq!(here(None), Some(None));
        // Forged or unmappable ids are refused.
        assert_eq!(here(Some("PA_nobody")), None);
        assert_eq!(here(Some("PA_relay")), None);
        assert_eq!(here(Some("")), None);

        let local = [
            p("PC_solo", "kota-solo", Role::Participant),
            p("PC_sem", "cascade/a/kab-semarang", Role::Participant),
        ];
        assert_eq!(
            local_target(&local, Some("cascade/a/kab-semarang")),
            Some(Some(pid("PC_sem")))
        );
        assert_eq!(
            local_target(&local, Some("kota-solo")),
            Some(Some(pid("PC_solo")))
        );
        assert_eq!(local_target(&local, None), Some(None));
        assert_eq!(local_target(&local, Some("cascade/b/kab-kendal")), None);
    }

    #[test]
    fn follow_owner_sets_what_to_apply_and_refuses_unknown_ids() {
        let (tx, rx) = watch::channel(None);
        let c = FollowOwner {
            owner: "a".into(),
            me: "c".into(),
            wanted: tx,
        };
        let owner = [p("PA_sem", "kab-semarang", Role::Participant)];
        let ev = |t: Option<&str>| ServerMessage::Spotlight {
            participant_id: t.map(pid),
            by: pid("PA_host"),
        };
        assert_eq!(c.source_event(&ev(Some("PA_forged")), &owner), None);
        assert_eq!(*rx.borrow(), None, "a forged id changes nothing");
        assert_eq!(c.source_event(&ev(Some("PA_sem")), &owner), None);
        assert_eq!(*rx.borrow(), Some(Some("cascade/a/kab-semarang".into())));
        c.source_event(&ev(None), &owner);
        assert_eq!(*rx.borrow(), Some(None));
        // Other messages are not about the spotlight.
        c.source_event(&ServerMessage::Pong { ts: 1 }, &owner);
        assert_eq!(*rx.borrow(), Some(None));
    }

    #[test]
    fn a_local_hosts_spotlight_goes_to_the_owner_once() {
        let local = [
            p("PC_host", "wali-kota", Role::Host),
            p("PC_solo", "kota-solo", Role::Participant),
            p("PC_sem", "cascade/a/kab-semarang", Role::Participant),
            p("PC_gub", "cascade/a/gubernur", Role::Host),
            p("PC_relay", "cascade/a", Role::Viewer),
        ];
        let fwd = |t: Option<&str>, by: &str, wanted: &Wanted| {
            forward_spotlight(t.map(pid).as_ref(), &pid(by), &local, wanted, "a", "c")
        };
        assert_eq!(
            fwd(Some("PC_sem"), "PC_host", &None),
            Some(RelayCommand {
                as_participant: pid("PC_host"),
                action: RelayAction::Spotlight {
                    identity: Some("kab-semarang".into())
                },
            })
        );
        assert_eq!(
            fwd(Some("PC_solo"), "PC_host", &None).map(|c| c.action),
            Some(RelayAction::Spotlight {
                identity: Some("cascade/c/kota-solo".into())
            })
        );
        assert_eq!(
            fwd(None, "PC_host", &Some(Some("kota-solo".into()))).map(|c| c.action),
            Some(RelayAction::Spotlight { identity: None })
        );
        // Already the owner's spotlight (applied here from the owner): not sent back.
        assert_eq!(
            fwd(
                Some("PC_sem"),
                "PC_host",
                &Some(Some("cascade/a/kab-semarang".into()))
            ),
            None
        );
        assert_eq!(fwd(None, "PC_host", &Some(None)), None);
        // Not a host of this node: a relayed host, a participant, the relay, an unknown id.
        assert_eq!(fwd(Some("PC_solo"), "PC_gub", &None), None);
        assert_eq!(fwd(Some("PC_sem"), "PC_solo", &None), None);
        assert_eq!(fwd(Some("PC_sem"), "PC_relay", &None), None);
        assert_eq!(fwd(Some("PC_sem"), "PC_forged", &None), None);
        // A target nobody here has, or without a counterpart at the owner.
        assert_eq!(fwd(Some("PC_forged"), "PC_host", &None), None);
        assert_eq!(fwd(Some("PC_relay"), "PC_host", &None), None);
    }

    #[test]
    fn the_spotlight_of_a_local_floor_goes_with_the_floor_only() {
        let local = [
            p("PC_host", "wali-kota", Role::Host),
            p("PC_sem", "cascade/a/kab-semarang", Role::Participant),
        ];
        let (_tx, rx) = watch::channel(None);
        let c = ForwardLocalHost::new("a".into(), "c".into(), rx);
        let floor = ServerMessage::FloorGiven {
            participant_id: pid("PC_sem"),
            by: Some(pid("PC_host")),
        };
        let spot = ServerMessage::Spotlight {
            participant_id: Some(pid("PC_sem")),
            by: pid("PC_host"),
        };
        assert_eq!(c.source_event(&floor, &local), None);
        assert_eq!(c.source_event(&spot, &local), None, "part of the floor");
        // The host's own spotlight afterwards goes to the owner as before.
        assert!(c.source_event(&spot, &local).is_some());
    }
}
