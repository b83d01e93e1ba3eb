//! Chat, raised hands and giving the floor on the simulated rig.

use super::rig::{Rig, ROOM};
use super::scenarios::{host_and_site, media, mids};
use crate::core::present::{CHAT_BURST, CHAT_INTERVAL};
use crate::handle::{Moderation, RoomEvent, TimelineKind};
use crate::SfuError;
use rakor_proto::{
    ChatEntry, ClientMessage, ErrorCode, ModerateAction, ParticipantId, Role, ServerMessage,
    CHAT_HISTORY_LEN, CHAT_MAX_CHARS,
};

fn chat(text: &str) -> ClientMessage {
    ClientMessage::Chat {
        text: text.into(),
        to: None,
    }
}

fn chats(rig: &Rig, i: usize) -> Vec<ChatEntry> {
    rig.sites[i]
        .log
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Chat(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn error_code(rig: &mut Rig, i: usize) -> Option<(ErrorCode, Option<String>)> {
    rig.sites[i].take().into_iter().find_map(|m| match m {
        ServerMessage::Error {
            code, request_type, ..
        } => Some((code, request_type)),
        _ => None,
    })
}

fn chat_events(rig: &mut Rig) -> Vec<(String, Option<String>, String)> {
    rig.room_events()
        .into_iter()
        .filter_map(|e| match e {
            RoomEvent::Chat { from, to, text, .. } => {
                Some((from.identity, to.map(|t| t.identity), text))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn chat_reaches_everyone_private_chat_only_its_pair_and_a_late_joiner_gets_the_history() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let a = rig.join("dishub", Role::Participant);
    let b = rig.join("bapeda", Role::Participant);
    let _ = rig.room_events();
    let markup = "<img src=x onerror=alert(1)> kasus DBD naik 12%";
    rig.send(a, chat(markup));
    let a_id = rig.sites[a].id.clone();
    for s in [host, a, b] {
        let got = chats(&rig, s);
        assert_eq!(got.len(), 1, "site {s} gets the message once");
        assert_eq!(got[0].text, markup, "the same text, untouched");
        assert_eq!(got[0].from.participant_id, a_id);
        assert_eq!(got[0].from.name, "dishub");
        assert!(got[0].to.is_none());
        assert!(got[0].id.starts_with("CH_"));
        assert!(got[0].at.ends_with('Z') && got[0].at.starts_with("1970-01-01T"));
    }
    // The host writes privately to b: b and the host get it, a does not.
    let b_id = rig.sites[b].id.clone();
    rig.send(
        host,
        ClientMessage::Chat {
            text: "Mohon siapkan data anggaran".into(),
            to: Some(b_id.clone()),
        },
    );
    assert_eq!(chats(&rig, b).len(), 2);
    assert_eq!(chats(&rig, host).len(), 2);
    assert_eq!(
        chats(&rig, a).len(),
        1,
        "a private message reaches its pair only"
    );
    assert_eq!(chats(&rig, b)[1].to, Some(b_id));
    assert_eq!(
        chat_events(&mut rig),
        vec![
            ("dishub".into(), None, markup.into()),
            (
                "command-room".into(),
                Some("bapeda".into()),
                "Mohon siapkan data anggaran".into()
            ),
        ],
        "both delivered messages are reported for the record"
    );
    // A late joiner gets the public history only; b coming back gets its private one too.
    let c = rig.join("dinkes", Role::Participant);
    let hist: Vec<ServerMessage> = rig.sites[c]
        .log
        .iter()
        .filter(|m| matches!(m, ServerMessage::ChatHistory { .. }))
        .cloned()
        .collect();
    match hist.as_slice() {
        [ServerMessage::ChatHistory { messages, .. }] => {
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0].text, markup);
        }
        other => panic!("expected one chat_history, got {other:?}"),
    }
    rig.send(b, ClientMessage::Leave {});
    rig.rejoin(b, None).unwrap();
    assert!(rig.sites[b]
        .got(|m| matches!(m, ServerMessage::ChatHistory { messages, .. } if messages.len() == 2)));
}

#[test]
fn the_history_keeps_the_latest_messages_only() {
    let mut rig = Rig::new();
    let _host = rig.join("command-room", Role::Host);
    let a = rig.join("dishub", Role::Participant);
    for i in 0..(CHAT_HISTORY_LEN + 7) {
        rig.send(a, chat(&format!("pesan {i}")));
        rig.run_for(CHAT_INTERVAL);
    }
    let late = rig.join("dinkes", Role::Participant);
    let Some(ServerMessage::ChatHistory { messages, .. }) = rig.sites[late]
        .log
        .iter()
        .find(|m| matches!(m, ServerMessage::ChatHistory { .. }))
    else {
        panic!("no history")
    };
    assert_eq!(messages.len(), CHAT_HISTORY_LEN);
    assert_eq!(messages[0].text, "pesan 7", "oldest kept first");
    assert_eq!(
        messages[CHAT_HISTORY_LEN - 1].text,
        format!("pesan {}", CHAT_HISTORY_LEN + 6)
    );
}

#[test]
fn refused_chat_gets_a_clear_error_to_its_sender_only_and_is_not_reported() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let a = rig.join("dishub", Role::Participant);
    let b = rig.join("bapeda", Role::Participant);
    let _ = rig.room_events();
    for s in [host, a, b] {
        rig.sites[s].take();
    }
    // One character over the limit (multi-byte characters count once each).
    rig.send(a, chat(&"é".repeat(CHAT_MAX_CHARS + 1)));
    assert_eq!(
        error_code(&mut rig, a),
        Some((ErrorCode::TooLarge, Some("chat".into())))
    );
    rig.send(a, chat("  \n "));
    assert_eq!(
        error_code(&mut rig, a).map(|e| e.0),
        Some(ErrorCode::BadRequest)
    );
    // A site may not write privately.
    let host_id = rig.sites[host].id.clone();
    rig.send(
        a,
        ClientMessage::Chat {
            text: "halo".into(),
            to: Some(host_id),
        },
    );
    assert_eq!(
        error_code(&mut rig, a).map(|e| e.0),
        Some(ErrorCode::Forbidden)
    );
    // The host, to nobody.
    rig.send(
        host,
        ClientMessage::Chat {
            text: "halo".into(),
            to: Some(ParticipantId("PA_nobody".into())),
        },
    );
    assert_eq!(
        error_code(&mut rig, host).map(|e| e.0),
        Some(ErrorCode::UnknownParticipant)
    );
    assert!(chats(&rig, b).is_empty(), "nothing refused reached anyone");
    assert!(
        chat_events(&mut rig).is_empty(),
        "nothing refused is reported"
    );
    // Exactly the limit passes.
    rig.send(a, chat(&"é".repeat(CHAT_MAX_CHARS)));
    assert_eq!(chats(&rig, b).len(), 1);
    // The rate limit: the rest of the burst passes, the next is refused, one interval later
    // one more passes.
    for i in 1..CHAT_BURST {
        rig.send(a, chat(&format!("burst {i}")));
    }
    assert_eq!(chats(&rig, b).len(), CHAT_BURST as usize);
    rig.sites[a].take();
    rig.send(a, chat("terlalu cepat"));
    assert_eq!(
        error_code(&mut rig, a).map(|e| e.0),
        Some(ErrorCode::RateLimited)
    );
    assert!(!chats(&rig, b).iter().any(|c| c.text == "terlalu cepat"));
    assert!(
        !rig.sites[b].got(|m| matches!(m, ServerMessage::Error { .. })),
        "others see no error"
    );
    // Another site is not limited by a's burst.
    rig.send(host, chat("host tidak dibatasi oleh dishub"));
    assert!(chats(&rig, b).iter().any(|c| c.from.name == "command-room"));
    rig.run_for(CHAT_INTERVAL);
    rig.send(a, chat("sekarang boleh"));
    assert!(chats(&rig, b).iter().any(|c| c.text == "sekarang boleh"));
    let reported = chat_events(&mut rig);
    assert_eq!(reported.len(), CHAT_BURST as usize + 2);
    assert!(!reported.iter().any(|(_, _, t)| t == "terlalu cepat"));
}

#[test]
fn a_cascade_republisher_repeats_its_sites_chat_without_the_rate_limit_but_not_the_size() {
    let mut rig = Rig::new();
    let relayed = rig.join("cascade/node-c/kota-solo", Role::Participant);
    let b = rig.join("bapeda", Role::Participant);
    // What the site's own node accepted arrives in a burst after a slow leg: all delivered.
    for i in 0..CHAT_BURST + 3 {
        rig.send(relayed, chat(&format!("laporan {i}")));
    }
    assert_eq!(chats(&rig, b).len(), CHAT_BURST as usize + 3);
    // The size limit still holds.
    rig.sites[relayed].take();
    rig.send(relayed, chat(&"x".repeat(CHAT_MAX_CHARS + 1)));
    assert_eq!(
        error_code(&mut rig, relayed).map(|e| e.0),
        Some(ErrorCode::TooLarge)
    );
}

fn hands_of(rig: &Rig, i: usize) -> Option<Vec<ParticipantId>> {
    rig.sites[i].log.iter().rev().find_map(|m| match m {
        ServerMessage::Hands { hands } => {
            Some(hands.iter().map(|h| h.participant_id.clone()).collect())
        }
        _ => None,
    })
}

fn timeline(rig: &mut Rig) -> Vec<(TimelineKind, Option<String>, Option<String>)> {
    rig.room_events()
        .into_iter()
        .filter_map(|e| match e {
            RoomEvent::Timeline {
                kind, subject, by, ..
            } => Some((kind, subject.map(|s| s.identity), by)),
            _ => None,
        })
        .collect()
}

#[test]
fn hands_in_order_and_the_host_gives_the_floor_unmuting_and_spotlighting_the_site() {
    let (mut rig, host, site) = host_and_site();
    let (amid, _) = mids(&rig, host, site);
    let other = rig.join("bapeda", Role::Participant);
    let site_id = rig.sites[site].id.clone();
    let other_id = rig.sites[other].id.clone();
    // The host mutes the site (sticky, per identity).
    rig.send(
        host,
        ClientMessage::Moderate {
            action: ModerateAction::MuteAudio,
            participant_id: Some(site_id.clone()),
        },
    );
    let _ = rig.room_events();
    // Two hands go up: other first.
    rig.send(other, ClientMessage::Hand { raised: true });
    rig.send(site, ClientMessage::Hand { raised: true });
    rig.send(site, ClientMessage::Hand { raised: true }); // again: no change
    assert_eq!(
        hands_of(&rig, host),
        Some(vec![other_id.clone(), site_id.clone()]),
        "in the order they went up"
    );
    assert_eq!(
        rig.core.room_info(ROOM).unwrap().hands.len(),
        2,
        "the operator's view has them too"
    );
    // A late joiner sees the hands at once.
    let late = rig.join("dinkes", Role::Participant);
    assert_eq!(hands_of(&rig, late).map(|h| h.len()), Some(2));
    // A site may not give the floor.
    rig.sites[other].take();
    rig.send(
        other,
        ClientMessage::GiveFloor {
            participant_id: other_id.clone(),
        },
    );
    assert_eq!(
        error_code(&mut rig, other),
        Some((ErrorCode::Forbidden, Some("give_floor".into())))
    );
    // Nor the host to someone not in the room.
    rig.sites[host].take();
    rig.send(
        host,
        ClientMessage::GiveFloor {
            participant_id: ParticipantId("PA_nobody".into()),
        },
    );
    assert_eq!(
        error_code(&mut rig, host).map(|e| e.0),
        Some(ErrorCode::UnknownParticipant)
    );
    assert!(!rig.sites[site].got(|m| matches!(m, ServerMessage::FloorGiven { .. })));
    // The host gives the floor to the site: unmuted, spotlighted, hand down.
    let before = rig.sites[host].received_from(&amid);
    media(&mut rig, site, 10);
    assert_eq!(rig.sites[host].received_from(&amid), before, "muted");
    for s in [host, site, other] {
        rig.sites[s].take();
    }
    rig.send(
        host,
        ClientMessage::GiveFloor {
            participant_id: site_id.clone(),
        },
    );
    assert!(rig.sites[site].got(|m| matches!(m, ServerMessage::ModeratorMute { muted: false })));
    for s in [host, site, other] {
        assert!(rig.sites[s].got(
            |m| matches!(m, ServerMessage::FloorGiven { participant_id, by: Some(_) } if *participant_id == site_id)
        ));
        assert!(rig.sites[s].got(
            |m| matches!(m, ServerMessage::Spotlight { participant_id: Some(p), .. } if *p == site_id)
        ));
        assert_eq!(hands_of(&rig, s), Some(vec![other_id.clone()]));
    }
    let info = rig.core.room_info(ROOM).unwrap();
    assert_eq!(info.spotlight, Some(site_id.clone()));
    assert!(info.moderator_muted.is_empty());
    media(&mut rig, site, 20);
    assert!(
        rig.sites[host].received_from(&amid) > before + 10,
        "the site's audio is forwarded again"
    );
    // The operator gives the floor to the other site (its hand goes down too).
    rig.moderate(Moderation::GiveFloor {
        participant: other_id.clone(),
        by_name: None,
    })
    .unwrap();
    assert_eq!(hands_of(&rig, host), Some(vec![]));
    assert!(matches!(
        rig.moderate(Moderation::GiveFloor {
            participant: ParticipantId("PA_nobody".into()),
            by_name: None,
        }),
        Err(SfuError::UnknownParticipant(_))
    ));
    let tl = timeline(&mut rig);
    let kinds: Vec<TimelineKind> = tl.iter().map(|t| t.0).collect();
    assert_eq!(
        kinds,
        vec![
            TimelineKind::HandRaised,
            TimelineKind::HandRaised,
            TimelineKind::SpotlightSet,
            TimelineKind::FloorGiven,
            TimelineKind::SpotlightSet,
            TimelineKind::FloorGiven,
        ]
    );
    assert_eq!(
        tl[3],
        (
            TimelineKind::FloorGiven,
            Some("dishub".into()),
            Some("command-room".into())
        )
    );
    assert_eq!(
        tl[5],
        (
            TimelineKind::FloorGiven,
            Some("bapeda".into()),
            Some("operator".into())
        )
    );
    // A hand goes down by itself; a site leaving with its hand up drops it from the list.
    rig.send(late, ClientMessage::Hand { raised: true });
    assert_eq!(hands_of(&rig, host).map(|h| h.len()), Some(1));
    rig.send(late, ClientMessage::Leave {});
    assert_eq!(hands_of(&rig, host), Some(vec![]));
    let tl = timeline(&mut rig);
    assert_eq!(
        tl.last(),
        Some(&(TimelineKind::HandLowered, Some("dinkes".into()), None)),
        "a hand that goes down as its site leaves is on the timeline: {tl:?}"
    );
    // The host has no hand to raise.
    rig.sites[host].take();
    rig.send(host, ClientMessage::Hand { raised: true });
    assert_eq!(
        error_code(&mut rig, host).map(|e| e.0),
        Some(ErrorCode::Forbidden)
    );
}

/// The chat history a resume brings: what came after the client's `last_chat_id`, or the whole
/// recent history when that id is unknown; nothing when nothing was missed.
#[test]
fn a_resume_brings_the_chat_missed_since_the_last_id() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let b = rig.join("bapeda", Role::Participant);
    rig.send(host, chat("satu"));
    let seen = chats(&rig, b);
    assert_eq!(seen.len(), 1);
    let first = seen[0].id.clone();
    rig.drop_signalling(b);
    rig.send(host, chat("dua"));
    rig.send(host, chat("tiga"));
    rig.sites[b].take();
    let history = |rig: &mut Rig| -> Vec<(Option<String>, Vec<String>)> {
        rig.sites[b]
            .take()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::ChatHistory { messages, after } => {
                    Some((after, messages.into_iter().map(|c| c.text).collect()))
                }
                _ => None,
            })
            .collect()
    };
    rig.rejoin_after_chat(b, Some(false), Some(first.clone()))
        .unwrap();
    let got = history(&mut rig);
    assert_eq!(
        got,
        vec![(Some(first), vec!["dua".to_owned(), "tiga".to_owned()])]
    );
    // Nothing missed since the last one: no chat_history.
    let last = chats(&rig, host).last().map(|c| c.id.clone());
    rig.drop_signalling(b);
    rig.rejoin_after_chat(b, Some(false), last).unwrap();
    assert!(history(&mut rig).is_empty());
    // An id the room does not know (older than its history): the whole recent history.
    rig.drop_signalling(b);
    rig.rejoin_after_chat(b, Some(false), Some("CH_unknown".into()))
        .unwrap();
    assert_eq!(
        history(&mut rig),
        vec![(
            None,
            vec!["satu".to_owned(), "dua".to_owned(), "tiga".to_owned()]
        )]
    );
}
