//! Dynacast across cascade nodes (`relay_demand.rs`): a relay republisher is told what this
//! node's subscribers show of its video; an ordinary publisher never is.

use super::rig::Rig;
use crate::testkit::PublishSpec;
use rakor_proto::{ClientMessage, Role, ServerMessage, TrackId, TrackKind};
use std::time::Duration;

const VIDEO: PublishSpec = PublishSpec {
    audio: false,
    video: true,
    simulcast: false,
};

/// A host and one publisher `identity`, connected and receiving. Returns (rig, host, site).
fn host_and(identity: &str) -> (Rig, usize, usize) {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let site = rig.join(identity, Role::Participant);
    rig.publish(site, VIDEO);
    let ok = rig.run_while_sending(
        Duration::from_secs(3),
        |r, _| r.video(site, true, None),
        |r| r.connected(host) && r.connected(site) && r.sites[host].subscriber.is_some(),
    );
    assert!(ok, "host and site connect in simulated time");
    (rig, host, site)
}

fn demands(rig: &mut Rig, site: usize) -> Vec<(TrackId, bool, u32, u32)> {
    rig.sites[site]
        .take()
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::TrackDemand {
                track_id,
                visible,
                width,
                height,
            } => Some((track_id, visible, width, height)),
            _ => None,
        })
        .collect()
}

fn settings(track: &TrackId, visible: bool, height: u32) -> ClientMessage {
    ClientMessage::TrackSettings {
        track_id: track.clone(),
        visible,
        width: height * 16 / 9,
        height,
    }
}

#[test]
fn a_relay_republisher_hears_the_largest_tile_and_a_hide() {
    let (mut rig, host, relay) = host_and("cascade/node-a/bupati-kendal");
    let track = rig.published(relay, TrackKind::Video)[0].clone();
    rig.run_for(Duration::from_millis(300));
    // Subscribed, no size reported yet: the top layer.
    let first = demands(&mut rig, relay);
    assert_eq!(first, vec![(track.clone(), true, 0, 0)], "{first:?}");
    rig.send(host, settings(&track, true, 180));
    rig.run_for(Duration::from_millis(300));
    assert_eq!(
        demands(&mut rig, relay),
        vec![(track.clone(), true, 320, 180)]
    );
    // Unchanged settings: nothing more.
    rig.send(host, settings(&track, true, 180));
    rig.run_for(Duration::from_millis(300));
    assert!(demands(&mut rig, relay).is_empty());
    rig.send(host, settings(&track, true, 720));
    rig.run_for(Duration::from_millis(300));
    assert_eq!(
        demands(&mut rig, relay),
        vec![(track.clone(), true, 1280, 720)]
    );
    rig.send(host, settings(&track, false, 720));
    rig.run_for(Duration::from_millis(300));
    assert_eq!(demands(&mut rig, relay), vec![(track.clone(), false, 0, 0)]);
}

#[test]
fn an_ordinary_publisher_never_gets_a_track_demand() {
    let (mut rig, host, site) = host_and("kab-kendal");
    let track = rig.published(site, TrackKind::Video)[0].clone();
    rig.send(host, settings(&track, true, 180));
    rig.send(host, settings(&track, false, 180));
    rig.run_for(Duration::from_millis(500));
    assert!(demands(&mut rig, site).is_empty());
}

#[test]
fn track_settings_for_an_unknown_track_is_refused_and_no_demand_follows() {
    let (mut rig, host, relay) = host_and("cascade/node-a/bupati-kendal");
    rig.run_for(Duration::from_millis(300));
    let _ = demands(&mut rig, relay);
    rig.send(
        host,
        settings(&TrackId("TR_doesnotexist".into()), false, 180),
    );
    rig.run_for(Duration::from_millis(300));
    assert!(rig.sites[host].got(|m| matches!(m, ServerMessage::Error { .. })));
    assert!(demands(&mut rig, relay).is_empty());
}

/// A cascade relay subscriber (role `relay`) is hidden: nobody is told it joined or left, a
/// later joiner's `joined` does not list it, the room snapshot (API, console) leaves it out,
/// and attendance never sees it; it still receives the room's tracks and may not publish.
#[test]
fn a_relay_subscriber_is_hidden_from_lists_and_attendance() {
    let (mut rig, host, _site) = host_and("kab-kendal");
    let _ = rig.room_events();
    let _ = rig.sites[host].take();
    let relay = rig.join("cascade/node-b", Role::Relay);
    rig.run_for(Duration::from_millis(300));
    let relay_id = rig.sites[relay].id.clone();
    assert!(
        !rig.sites[host]
            .got(|m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.id == relay_id)),
        "the host was told about the relay"
    );
    let late = rig.join("kota-solo", Role::Participant);
    assert!(rig.sites[late].got(|m| matches!(
        m,
        ServerMessage::Joined { participants, .. }
            if participants.len() == 2 && participants.iter().all(|p| p.id != relay_id)
    )));
    let snapshot = rig.core.room_info(super::rig::ROOM).unwrap();
    assert!(snapshot.participants.iter().all(|p| p.id != relay_id));
    assert_eq!(snapshot.participants.len(), 3);
    // It receives the site's video like any subscriber.
    assert!(rig.sites[relay].got(|m| matches!(
        m,
        ServerMessage::Offer { tracks, .. } if !tracks.is_empty()
    )));
    // It may not publish.
    rig.publish(relay, VIDEO);
    assert!(rig.sites[relay].got(|m| matches!(m, ServerMessage::Error { .. })));
    // It leaves: nobody hears of it; attendance saw only the late joiner.
    let _ = rig.sites[host].take();
    rig.drop_signalling(relay);
    rig.run_for(Duration::from_secs(120));
    assert!(!rig.sites[host].got(
        |m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if *participant_id == relay_id)
    ));
    let events = rig.room_events();
    assert!(
        events.iter().all(|e| match e {
            crate::handle::RoomEvent::Joined { identity, .. }
            | crate::handle::RoomEvent::Left { identity, .. } => identity != "cascade/node-b",
            _ => true,
        }),
        "attendance saw the relay: {events:?}"
    );
}

/// A relay subscriber is its node's leg, not a site: it neither counts against
/// `max_participants_per_room` nor is refused by it (a refused leg would cut a whole node's
/// sites off the room); sites still are, relay or not in the room.
#[test]
fn relay_subscribers_do_not_count_against_the_room_limit_nor_are_refused_by_it() {
    let mut rig = Rig::with(crate::SfuConfig {
        max_participants_per_room: 2,
        ..super::rig::config()
    });
    let _host = rig.join("command-room", Role::Host);
    let _relay_b = rig.join("cascade/node-b", Role::Relay);
    // Two sites fit: the relay is not counted.
    let _site = rig.join("kab-kendal", Role::Participant);
    // The room is full for sites now, but a second node's leg still joins.
    let _relay_c = rig.join("cascade/node-c", Role::Relay);
    let refused = rig.core.join(
        rig.clock.now(),
        crate::handle::JoinRequest {
            room: super::rig::ROOM.into(),
            identity: "kota-solo".into(),
            name: "kota-solo".into(),
            role: Role::Participant,
            events: tokio::sync::mpsc::unbounded_channel().0,
            resume: None,
            video_on_demand: false,
        },
    );
    assert!(
        matches!(refused, Err(crate::SfuError::RoomFull(_))),
        "a third site joined a room of two: {refused:?}"
    );
}

/// A relay subscriber may repeat its node's mute of a participant here (`moderate
/// mute_audio/unmute_audio`, as the operator: no `by`), once; anything else it asks is
/// refused (`forbidden`), and so is an id nobody here has (`unknown_participant`).
#[test]
fn a_relay_subscriber_may_only_mute_and_unmute() {
    use rakor_proto::{ErrorCode, ModerateAction};
    let (mut rig, host, site) = host_and("kab-kendal");
    let relay = rig.join("cascade/node-c", Role::Relay);
    rig.run_for(Duration::from_millis(300));
    let site_id = rig.sites[site].id.clone();
    let moderate = |action, target: &rakor_proto::ParticipantId| ClientMessage::Moderate {
        action,
        participant_id: Some(target.clone()),
    };
    let _ = rig.sites[site].take();
    rig.send(relay, moderate(ModerateAction::MuteAudio, &site_id));
    let got = rig.sites[site].take();
    let mutes = got
        .iter()
        .filter(|m| matches!(m, ServerMessage::ModeratorMute { muted: true }))
        .count();
    assert_eq!(mutes, 1, "{got:?}");
    // Already muted: nothing again.
    rig.send(relay, moderate(ModerateAction::MuteAudio, &site_id));
    assert!(!rig.sites[site].got(|m| matches!(m, ServerMessage::ModeratorMute { .. })));
    // A forged id, and a removal: refused to the relay only.
    let _ = rig.sites[relay].take();
    rig.send(
        relay,
        moderate(
            ModerateAction::MuteAudio,
            &rakor_proto::ParticipantId("PA_forged".into()),
        ),
    );
    assert!(rig.sites[relay].got(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::UnknownParticipant,
            ..
        }
    )));
    rig.send(relay, moderate(ModerateAction::Remove, &site_id));
    assert!(rig.sites[relay].got(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    )));
    assert!(!rig.sites[site].got(|m| matches!(m, ServerMessage::Leave { .. })));
    assert!(!rig.sites[host].got(|m| matches!(m, ServerMessage::Error { .. })));
    rig.send(relay, moderate(ModerateAction::UnmuteAudio, &site_id));
    assert!(rig.sites[site].got(|m| matches!(m, ServerMessage::ModeratorMute { muted: false })));
}

/// The owner's recent chat for a node whose leg started after it (`Moderation::SeedChat`):
/// kept here and sent to everyone here but the relay, given to later joiners, never reported
/// for the record, and ignored once the room has chat here (a restarted leg).
#[test]
fn the_owners_history_is_kept_once_and_sent_to_everyone_here() {
    use rakor_proto::{ChatEntry, ChatSender, ParticipantId};
    let (mut rig, host, _site) = host_and("kab-kendal");
    let relay = rig.join("cascade/node-b", Role::Relay);
    rig.run_for(Duration::from_millis(300));
    let _ = rig.room_events();
    let entry = |id: &str, to: Option<&str>| ChatEntry {
        id: id.into(),
        from: ChatSender {
            participant_id: ParticipantId("PA_gub".into()),
            name: "gubernur".into(),
        },
        text: "Rapat dimulai".into(),
        at: "2030-05-01T02:01:05.123Z".into(),
        to: to.map(|t| ParticipantId(t.into())),
    };
    let history = |rig: &mut Rig, i: usize| -> Vec<String> {
        rig.sites[i]
            .take()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::ChatHistory {
                    messages,
                    after: None,
                } => Some(messages.into_iter().map(|m| m.id).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let _ = rig.sites[host].take();
    let _ = rig.sites[relay].take();
    rig.moderate(crate::Moderation::SeedChat {
        messages: vec![entry("CH_a", None), entry("CH_p", Some("PA_x"))],
    })
    .unwrap();
    assert_eq!(history(&mut rig, host), ["CH_a"]);
    assert!(history(&mut rig, relay).is_empty());
    let late = rig.join("kota-solo", Role::Participant);
    assert_eq!(history(&mut rig, late), ["CH_a"]);
    rig.moderate(crate::Moderation::SeedChat {
        messages: vec![entry("CH_b", None)],
    })
    .unwrap();
    assert!(history(&mut rig, host).is_empty());
    let events = rig.room_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, crate::handle::RoomEvent::Chat { .. })),
        "{events:?}"
    );
}
