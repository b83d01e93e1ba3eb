//! Every configured limit, exceeded against the real server: the client over the limit gets the
//! documented error (docs/protocol.md, "Limits"), and a participant already in a room is not
//! disturbed (its session answers `ping`, and where media flows it keeps flowing).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::SinkExt;
use rakor_client::{Client, ClientError, ClientOptions};
use rakor_e2e::{raw_next_json, raw_ws, Server};
use rakor_proto::{ErrorCode, ServerMessage, TrackKind};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// Start the server with a `[limits]` section.
fn server_with_limits(limits: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rakor.toml");
    std::fs::write(&file, format!("[limits]\n{limits}\n")).unwrap();
    let server = Server::start_with(&["--config", file.to_str().unwrap()]).unwrap();
    (server, dir)
}

async fn try_join(server: &Server, room: &str, identity: &str) -> Result<Client, ClientError> {
    let token = server.token(room, identity, "participant").unwrap();
    Client::connect(ClientOptions::new(server.ws_url(), token).receive_only()).await
}

fn rejected_with(r: Result<Client, ClientError>, want: ErrorCode) -> String {
    match r {
        Err(ClientError::Rejected { code, message }) if code == want => message,
        Err(e) => panic!("expected {want}, got {e}"),
        Ok(c) => panic!("expected {want}, but {} joined", c.participant_id()),
    }
}

/// The session is intact: a ping is answered.
async fn answers_ping(c: &mut Client, ts: u64) {
    c.ping(ts).await.unwrap();
    c.wait_for(
        |m| matches!(m, ServerMessage::Pong { ts: t } if *t == ts),
        WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("no pong {ts}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rooms_refuses_a_new_room_but_not_an_existing_one() {
    let (server, _cfg) = server_with_limits("max_rooms = 2");
    let mut a = try_join(&server, "room-a", "a1").await.unwrap();
    let b = try_join(&server, "room-b", "b1").await.unwrap();
    let msg = rejected_with(
        try_join(&server, "room-c", "c1").await,
        ErrorCode::LimitExceeded,
    );
    assert!(msg.contains("2 rooms"), "{msg}");
    // Existing rooms still take participants; the ones inside are undisturbed.
    let _a2 = try_join(&server, "room-a", "a2").await.unwrap();
    answers_ping(&mut a, 1).await;
    // A room that empties frees its slot.
    b.leave().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_join(&server, "room-c", "c1").await {
            Ok(_) => break,
            Err(ClientError::Rejected {
                code: ErrorCode::LimitExceeded,
                ..
            }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("room-c still refused after room-b emptied: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_participants_per_room() {
    let (server, _cfg) = server_with_limits("max_participants_per_room = 2");
    let mut a = try_join(&server, "r", "a").await.unwrap();
    let _b = try_join(&server, "r", "b").await.unwrap();
    let msg = rejected_with(try_join(&server, "r", "c").await, ErrorCode::LimitExceeded);
    assert!(msg.contains("full"), "{msg}");
    let _other = try_join(&server, "other", "c").await.unwrap();
    answers_ping(&mut a, 2).await;
    assert!(
        !a.drain_events()
            .iter()
            .any(|m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.identity == "c")),
        "the refused participant must not be announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tracks_per_participant() {
    let (server, _cfg) = server_with_limits("max_tracks_per_participant = 1");
    let watcher = try_join(&server, "r", "watch").await.unwrap();
    let token = server.token("r", "pub", "participant").unwrap();
    let mut p = Client::connect(ClientOptions::new(server.ws_url(), token).receive_only())
        .await
        .unwrap();
    let r = p.publish(true, true).await;
    let got = p
        .wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Error {
                        code: ErrorCode::LimitExceeded,
                        ..
                    }
                )
            },
            WAIT,
        )
        .await;
    assert!(
        got.is_ok()
            || matches!(
                r,
                Err(ClientError::Rejected {
                    code: ErrorCode::LimitExceeded,
                    ..
                })
            ),
        "no limit_exceeded: publish {r:?}, event {got:?}"
    );
    // Still in the room, and one track is fine.
    answers_ping(&mut p, 3).await;
    drop(watcher);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_per_second_and_frame_size() {
    let (server, _cfg) = server_with_limits("messages_per_second = 5\nmax_frame_bytes = 2048");
    // A bystander receiving media must not notice anything.
    let token = server.token("r", "pub", "host").unwrap();
    let publisher = Client::connect(ClientOptions::new(server.ws_url(), token))
        .await
        .unwrap();
    let watcher = try_join(&server, "r", "watch").await.unwrap();
    let pid = publisher.participant_id().clone();
    watcher
        .wait_media(
            |r| {
                r.received_track(&pid, TrackKind::Video)
                    .is_some_and(|t| t.packets >= 20)
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap();

    let mut noisy = try_join(&server, "r", "noisy").await.unwrap();
    let big = format!(r#"{{"type":"ping","ts":7,"pad":"{}"}}"#, "x".repeat(4096));
    noisy.send_raw(big).await.unwrap();
    noisy
        .wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Error {
                        code: ErrorCode::FrameTooLarge,
                        ..
                    }
                )
            },
            WAIT,
        )
        .await
        .unwrap();
    for ts in 100..130 {
        noisy.ping(ts).await.unwrap();
    }
    noisy
        .wait_for(
            |m| {
                matches!(
                    m,
                    ServerMessage::Error {
                        code: ErrorCode::RateLimited,
                        ..
                    }
                )
            },
            WAIT,
        )
        .await
        .unwrap();
    // After a pause the connection is usable again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    noisy.drain_events();
    answers_ping(&mut noisy, 999).await;

    let before = watcher
        .stats()
        .received_track(&pid, TrackKind::Video)
        .map_or(0, |t| t.packets);
    watcher
        .wait_media(
            |r| {
                r.received_track(&pid, TrackKind::Video)
                    .is_some_and(|t| t.packets >= before + 20)
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_capped() {
    let (server, _cfg) = server_with_limits("max_unauthenticated_connections = 3");
    let mut joined = try_join(&server, "r", "inside").await.unwrap();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(raw_ws(&server.ws_url()).await.unwrap());
    }
    // The slots are taken before the upgrade is answered: no wait needed. The fourth comes
    // from the address `inside` joined from, which keeps a resume share there: it is admitted
    // for a resume only, so its plain `join` is refused.
    let mut fourth = raw_ws(&server.ws_url()).await.unwrap();
    let token = server.token("r", "fourth", "participant").unwrap();
    fourth
        .send(Message::Text(
            json!({"type":"join","version":1,"token":token})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let m = raw_next_json(&mut fourth, WAIT)
        .await
        .unwrap()
        .expect("an error before close");
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["code"], "limit_exceeded", "{m}");
    assert!(
        m["message"]
            .as_str()
            .unwrap()
            .contains("max_unauthenticated_connections"),
        "{m}"
    );
    assert!(
        raw_next_json(&mut fourth, WAIT).await.unwrap().is_none(),
        "closed after the error"
    );
    // The joined participant does not count and is undisturbed.
    answers_ping(&mut joined, 4).await;
    // One of the waiting sockets joins: its slot is free again.
    let token = server.token("r", "late", "participant").unwrap();
    let mut w = idle.pop().unwrap();
    w.send(Message::Text(
        json!({"type":"join","version":1,"token":token})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let m = raw_next_json(&mut w, WAIT).await.unwrap().unwrap();
    assert_eq!(m["type"], "joined", "{m}");
    let _now_ok = try_join(&server, "r", "after").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_attempts_per_ip_per_minute() {
    let (server, _cfg) = server_with_limits("join_attempts_per_ip_per_minute = 3");
    let mut first = try_join(&server, "r", "a").await.unwrap();
    // Failed attempts count too: a bad token is an attempt.
    let mut ws = raw_ws(&server.ws_url()).await.unwrap();
    ws.send(Message::Text(
        json!({"type":"join","version":1,"token":"garbage"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let m = raw_next_json(&mut ws, WAIT).await.unwrap().unwrap();
    assert_eq!(m["code"], "invalid_token", "{m}");
    let _second = try_join(&server, "r", "b").await.unwrap();
    let msg = rejected_with(try_join(&server, "r", "c").await, ErrorCode::RateLimited);
    assert!(msg.contains("join_attempts_per_ip_per_minute"), "{msg}");
    answers_ping(&mut first, 5).await;
}
