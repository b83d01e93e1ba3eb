//! The first real call: the real `rakor` binary, real WebRTC clients (`rakor-client` on the
//! async `webrtc` crate) on loopback. Media assertions are on packets, keyframes and payload
//! bytes that arrived, compared with the sender's known asset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::SinkExt;
use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::{raw_next_json, raw_ws, Server};
use rakor_proto::{ErrorCode, LeaveReason, ParticipantId, ServerMessage, TrackKind};
use std::time::Duration;

const MEDIA_WAIT: Duration = Duration::from_secs(20);
const EVENT_WAIT: Duration = Duration::from_secs(10);

async fn join(
    server: &Server,
    room: &str,
    identity: &str,
    role: &str,
    audio: bool,
    video: bool,
) -> Client {
    let token = server.token(room, identity, role).unwrap();
    Client::connect(ClientOptions::new(server.ws_url(), token).publish(audio, video))
        .await
        .unwrap_or_else(|e| panic!("{identity} could not join: {e}"))
}

/// `from`'s audio and video arrived at this report: packets, a keyframe, exact payloads.
fn has_media_from(r: &Report, from: &ParticipantId, min_video: u64, min_audio: u64) -> bool {
    let v = r.received_track(from, TrackKind::Video);
    let a = r.received_track(from, TrackKind::Audio);
    v.is_some_and(|v| v.packets >= min_video && v.keyframes >= 1 && v.payload_matches >= min_video)
        && a.is_some_and(|a| a.packets >= min_audio && a.payload_matches >= min_audio)
}

fn assert_exact(r: &Report, who: &str) {
    assert_eq!(
        r.total_mismatches(),
        0,
        "{who} received payloads that the sender never sent: {}",
        r.to_json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_exchange_audio_and_video() {
    let server = Server::start().unwrap();
    let a = join(&server, "rakor-1", "command-room", "host", true, true).await;
    let mut b = join(&server, "rakor-1", "dishub", "participant", false, false).await;
    let c = join(
        &server,
        "rakor-1",
        "disdukcapil",
        "participant",
        true,
        false,
    )
    .await;
    let a_id = a.participant_id().clone();

    // B and C receive A's audio and video: packets, at least one keyframe, exact payload bytes.
    for (who, cl) in [("B", &b), ("C", &c)] {
        let r = cl
            .wait_media(|r| has_media_from(r, &a_id, 60, 50), MEDIA_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{who} did not receive A's media: {e}"));
        assert_exact(&r, who);
        let v = r.received_track(&a_id, TrackKind::Video).unwrap();
        assert!(v.frames >= 5, "{who}: frames {}", v.frames);
        assert!(v.first_packet_ms.is_some());
    }

    // B publishes; A and C receive it.
    b.publish(true, true).await.unwrap();
    let b_id = b.participant_id().clone();
    for (who, cl) in [("A", &a), ("C", &c)] {
        let r = cl
            .wait_media(|r| has_media_from(r, &b_id, 30, 30), MEDIA_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{who} did not receive B's media: {e}"));
        assert_exact(&r, who);
    }

    // A sent what the others got (its counters moved), and the server asked it for keyframes.
    let ra = a.stats();
    let sent_v = ra.sent_track(TrackKind::Video).unwrap();
    assert!(sent_v.packets >= 60 && sent_v.keyframes >= 1);

    // C leaves: A and B see its track go, then C itself.
    let c_id = c.participant_id().clone();
    let c_track = c
        .local_track_id(TrackKind::Audio)
        .expect("C's audio track id");
    c.leave().await;
    let mut a = a;
    for cl in [&mut a, &mut b] {
        cl.wait_for(|m| matches!(m, ServerMessage::TrackUnpublished { track_id, .. } if *track_id == c_track), EVENT_WAIT)
            .await
            .unwrap();
        let m = cl
            .wait_for(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if *participant_id == c_id), EVENT_WAIT)
            .await
            .unwrap();
        assert!(
            matches!(
                m,
                ServerMessage::ParticipantLeft {
                    reason: LeaveReason::ClientRequest,
                    ..
                }
            ),
            "{m:?}"
        );
    }

    // A and B keep exchanging media after C left.
    let before = b
        .stats()
        .received_track(&a_id, TrackKind::Video)
        .map_or(0, |t| t.packets);
    b.wait_media(
        |r| {
            r.received_track(&a_id, TrackKind::Video)
                .is_some_and(|t| t.packets >= before + 30)
        },
        MEDIA_WAIT,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let server = Server::start().unwrap();
    let a = join(&server, "room-a", "pub-a", "participant", true, true).await;
    let a_watch = join(&server, "room-a", "watch-a", "participant", false, false).await;
    let b_watch = join(&server, "room-b", "watch-b", "participant", false, false).await;
    assert!(
        b_watch.joined().participants.is_empty(),
        "room-b must not list room-a's people"
    );
    let a_id = a.participant_id().clone();
    // Media demonstrably flows in room-a...
    a_watch
        .wait_media(|r| has_media_from(r, &a_id, 60, 50), MEDIA_WAIT)
        .await
        .unwrap();
    // ...and none of it reached room-b in the same time.
    let rb = b_watch.stats();
    assert_eq!(
        rb.total_received_packets(),
        0,
        "room-b got media: {}",
        rb.to_json()
    );
    let mut b_watch = b_watch;
    let leaked: Vec<_> = b_watch
        .drain_events()
        .into_iter()
        .filter(|m| {
            matches!(
                m,
                ServerMessage::ParticipantJoined { .. }
                    | ServerMessage::TrackPublished { .. }
                    | ServerMessage::Offer { .. }
            )
        })
        .collect();
    assert!(leaked.is_empty(), "room-b saw room-a events: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_cannot_publish_but_receives() {
    let server = Server::start().unwrap();
    let host = join(&server, "r", "host", "host", true, true).await;
    let mut viewer = join(&server, "r", "viewer", "viewer", false, false).await;
    let err = viewer.publish(true, true).await;
    // Either the client sees the rejection directly or as an error event.
    let m = viewer
        .wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Error {
                        code: ErrorCode::Forbidden,
                        ..
                    }
                )
            },
            EVENT_WAIT,
        )
        .await;
    assert!(
        m.is_ok()
            || matches!(
                err,
                Err(rakor_client::ClientError::Rejected {
                    code: ErrorCode::Forbidden,
                    ..
                })
            ),
        "viewer publish not refused: {err:?} / {m:?}"
    );
    let host_id = host.participant_id().clone();
    viewer
        .wait_media(|r| has_media_from(r, &host_id, 30, 30), MEDIA_WAIT)
        .await
        .unwrap();
    // No track of the viewer reached anyone.
    let mut host = host;
    let published: Vec<_> = host
        .drain_events()
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::TrackPublished { participant_id, .. } if participant_id == viewer.participant_id()))
        .collect();
    assert!(published.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_identity_replaces_the_older_connection() {
    let server = Server::start().unwrap();
    let mut other = join(&server, "r", "other", "participant", false, false).await;
    let mut first = join(&server, "r", "puskesmas-1", "participant", true, false).await;
    let first_id = first.participant_id().clone();
    let first_resume = first.joined().resume_token.clone();
    let second = join(&server, "r", "puskesmas-1", "participant", true, false).await;
    assert_ne!(second.participant_id(), &first_id);
    first
        .wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Leave {
                        reason: LeaveReason::Replaced,
                        ..
                    }
                )
            },
            EVENT_WAIT,
        )
        .await
        .unwrap();
    first.closed(EVENT_WAIT).await.unwrap();
    other
        .wait_for(
            |m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Replaced, .. } if *participant_id == first_id),
            EVENT_WAIT,
        )
        .await
        .unwrap();
    let second_id = second.participant_id().clone();
    // The replaced connection coming back with its resume token must not push the newer one
    // out: `replaced`, then a normal close.
    let mut stale = raw_ws(&server.ws_url()).await.unwrap();
    let token = server.token("r", "puskesmas-1", "participant").unwrap();
    stale
        .send(tokio_tungstenite::tungstenite::Message::text(
            serde_json::json!({"type": "join", "version": 1, "token": token,
                "resume": {"participant_id": first_id.0, "token": first_resume}})
            .to_string(),
        ))
        .await
        .unwrap();
    let refused = raw_next_json(&mut stale, EVENT_WAIT).await.unwrap();
    assert_eq!(
        refused.as_ref().and_then(|m| m["code"].as_str()),
        Some("replaced"),
        "{refused:?}"
    );
    assert!(raw_next_json(&mut stale, EVENT_WAIT)
        .await
        .unwrap()
        .is_none());
    // The newer connection's audio reaches the room.
    if let Err(e) = other
        .wait_media(
            |r| {
                r.received_track(&second_id, TrackKind::Audio)
                    .is_some_and(|t| t.packets >= 20)
            },
            MEDIA_WAIT,
        )
        .await
    {
        for m in other.drain_events() {
            eprintln!("EVENT {}", serde_json::to_string(&m).unwrap());
        }
        panic!("{e}");
    }
    assert!(
        second
            .joined()
            .participants
            .iter()
            .all(|p| p.id != first_id),
        "ghost of the older connection"
    );
    assert!(
        !other.drain_events().iter().any(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if *participant_id == second_id)),
        "the stale resume pushed the newer connection out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_sets_the_spotlight_for_everyone() {
    let server = Server::start().unwrap();
    let mut host = join(&server, "r", "command-room", "host", false, false).await;
    let mut site1 = join(&server, "r", "site-1", "participant", false, false).await;
    let mut site2 = join(&server, "r", "site-2", "participant", false, false).await;
    let s2 = site2.participant_id().clone();
    host.send(&rakor_proto::ClientMessage::Spotlight {
        participant_id: Some(s2.clone()),
    })
    .await
    .unwrap();
    for cl in [&mut host, &mut site1, &mut site2] {
        let m = cl
            .wait_for(|m| matches!(m, ServerMessage::Spotlight { participant_id: Some(p), .. } if *p == s2), EVENT_WAIT)
            .await
            .unwrap();
        assert!(matches!(m, ServerMessage::Spotlight { .. }));
    }
    // A late joiner learns the spotlight in `joined`.
    let late = join(&server, "r", "site-3", "participant", false, false).await;
    assert_eq!(late.joined().spotlight.as_ref(), Some(&s2));
    // Only the host may set it; unknown participants are refused.
    site1
        .send(&rakor_proto::ClientMessage::Spotlight {
            participant_id: None,
        })
        .await
        .unwrap();
    site1
        .wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Error {
                        code: ErrorCode::Forbidden,
                        ..
                    }
                )
            },
            EVENT_WAIT,
        )
        .await
        .unwrap();
    host.send(&rakor_proto::ClientMessage::Spotlight {
        participant_id: Some(ParticipantId("PA_nobody".into())),
    })
    .await
    .unwrap();
    host.wait_for(
        |m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::UnknownParticipant,
                    ..
                }
            )
        },
        EVENT_WAIT,
    )
    .await
    .unwrap();
    // The spotlighted site leaving clears it.
    site2.leave().await;
    site1
        .wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Spotlight {
                        participant_id: None,
                        ..
                    }
                )
            },
            EVENT_WAIT,
        )
        .await
        .unwrap();
}

/// Three `rakor bot` processes in one room exchange audio and video: each bot's JSON report
/// shows both others' tracks with packets, a keyframe and only exact payloads.
#[test]
fn three_rakor_bots_exchange_audio_and_video() {
    let server = Server::start().unwrap();
    let bots: Vec<_> = ["bot-a", "bot-b", "bot-c"]
        .iter()
        .map(|id| {
            let token = server.token("bots", id, "participant").unwrap();
            std::process::Command::new(rakor_e2e::rakor_bin())
                .args([
                    "bot",
                    "--url",
                    &server.ws_url(),
                    "--token",
                    &token,
                    "--duration",
                    "8s",
                    "--report",
                    "json",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let reports: Vec<Report> = bots
        .into_iter()
        .map(|b| {
            let out = b.wait_with_output().unwrap();
            assert!(out.status.success(), "rakor bot failed: {:?}", out.status);
            serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
        })
        .collect();
    for (i, r) in reports.iter().enumerate() {
        let others: Vec<&ParticipantId> = reports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, o)| o.participant_id.as_ref())
            .collect();
        assert_eq!(others.len(), 2);
        for o in others {
            assert!(
                has_media_from(r, o, 20, 20),
                "bot {i} lacks media from {o}: {}",
                r.to_json()
            );
        }
        assert_exact(r, "bot");
    }
}

/// The host moderates over signalling: mute a site's audio (the server stops forwarding it and
/// tells the site), unmute, remove a site, end the meeting. Others may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_moderates_over_signalling() {
    use rakor_proto::{ClientMessage, ModerateAction};
    let server = Server::start().unwrap();
    let mut host = join(&server, "r", "command-room", "host", false, false).await;
    let mut site = join(&server, "r", "dishub", "participant", true, true).await;
    let mut other = join(&server, "r", "bapeda", "participant", false, false).await;
    let sid = site.participant_id().clone();
    let audio = |r: &Report| {
        r.received_track(&sid, TrackKind::Audio)
            .map_or(0, |t| t.packets)
    };
    let video = |r: &Report| {
        r.received_track(&sid, TrackKind::Video)
            .map_or(0, |t| t.packets)
    };
    other
        .wait_media(|r| audio(r) > 20 && video(r) > 20, MEDIA_WAIT)
        .await
        .unwrap();

    // A site may not moderate.
    other
        .send(&ClientMessage::Moderate {
            action: ModerateAction::MuteAudio,
            participant_id: Some(sid.clone()),
        })
        .await
        .unwrap();
    other
        .wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Error {
                        code: ErrorCode::Forbidden,
                        ..
                    }
                )
            },
            EVENT_WAIT,
        )
        .await
        .unwrap();

    // The host mutes the site: it is told, the room sees its audio muted, audio stops flowing.
    host.send(&ClientMessage::Moderate {
        action: ModerateAction::MuteAudio,
        participant_id: Some(sid.clone()),
    })
    .await
    .unwrap();
    site.wait_for(
        |m| matches!(m, ServerMessage::ModeratorMute { muted: true }),
        EVENT_WAIT,
    )
    .await
    .unwrap();
    other
        .wait_for(
            |m| matches!(m, ServerMessage::TrackMuted { muted: true, .. }),
            EVENT_WAIT,
        )
        .await
        .unwrap();
    let r0 = other.stats();
    let r1 = other
        .wait_media(|r| video(r) >= video(&r0) + 40, MEDIA_WAIT)
        .await
        .unwrap();
    assert!(
        audio(&r1) <= audio(&r0) + 3,
        "audio still forwarded while muted: {} → {}",
        audio(&r0),
        audio(&r1)
    );

    // Unmute: audio flows again.
    host.send(&ClientMessage::Moderate {
        action: ModerateAction::UnmuteAudio,
        participant_id: Some(sid.clone()),
    })
    .await
    .unwrap();
    let a1 = audio(&r1);
    other
        .wait_media(|r| audio(r) >= a1 + 20, MEDIA_WAIT)
        .await
        .unwrap();

    // Remove needs a participant; unknown ids are refused.
    host.send(&ClientMessage::Moderate {
        action: ModerateAction::Remove,
        participant_id: None,
    })
    .await
    .unwrap();
    host.wait_for(
        |m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            )
        },
        EVENT_WAIT,
    )
    .await
    .unwrap();
    host.send(&ClientMessage::Moderate {
        action: ModerateAction::Remove,
        participant_id: Some(ParticipantId("PA_nobody".into())),
    })
    .await
    .unwrap();
    host.wait_for(
        |m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::UnknownParticipant,
                    ..
                }
            )
        },
        EVENT_WAIT,
    )
    .await
    .unwrap();

    // Remove the site: it gets `leave {removed}`, the others see it go.
    host.send(&ClientMessage::Moderate {
        action: ModerateAction::Remove,
        participant_id: Some(sid.clone()),
    })
    .await
    .unwrap();
    site.wait_for(
        |m| {
            matches!(
                m,
                ServerMessage::Leave {
                    reason: LeaveReason::Removed,
                    ..
                }
            )
        },
        EVENT_WAIT,
    )
    .await
    .unwrap();
    other
        .wait_for(
            |m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Removed, .. } if *participant_id == sid),
            EVENT_WAIT,
        )
        .await
        .unwrap();

    // End the meeting: everyone, the host included, is told and disconnected.
    host.send(&ClientMessage::Moderate {
        action: ModerateAction::EndRoom,
        participant_id: None,
    })
    .await
    .unwrap();
    for cl in [&mut other, &mut host] {
        cl.wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Leave {
                        reason: LeaveReason::RoomEnded,
                        ..
                    }
                )
            },
            EVENT_WAIT,
        )
        .await
        .unwrap();
    }
}
