//! Resume: a participant whose signalling connection drops is kept for `server.resume_grace`
//! and may continue as the same participant with the `resume_token` from `joined`; nobody
//! sees it leave. After the grace window it is removed, and a late resume becomes a new session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::SinkExt;
use rakor_client::{Client, ClientOptions};
use rakor_e2e::{raw_next_json, raw_ws, RawWs, Server};
use rakor_proto::{LeaveReason, ServerMessage, TrackKind};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

async fn raw_join(server: &Server, token: &str, resume: Option<(&str, &str)>) -> (RawWs, Value) {
    let mut ws = raw_ws(&server.ws_url()).await.unwrap();
    let mut join = json!({"type":"join","version":1,"token":token});
    if let Some((pid, rt)) = resume {
        join["resume"] = json!({"participant_id": pid, "token": rt});
    }
    ws.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let m = raw_next_json(&mut ws, WAIT).await.unwrap().expect("joined");
        if m["type"] == "joined" {
            return (ws, m);
        }
        assert_ne!(m["type"], "error", "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_signalling_resumes_as_the_same_participant() {
    let server = Server::start_with_env(&[], &[("RAKOR_SERVER_RESUME_GRACE", "3s")]).unwrap();
    let publisher = Client::connect(ClientOptions::new(
        server.ws_url(),
        server.token("r", "pub", "host").unwrap(),
    ))
    .await
    .unwrap();
    let mut watcher = Client::connect(
        ClientOptions::new(
            server.ws_url(),
            server.token("r", "watch", "participant").unwrap(),
        )
        .receive_only(),
    )
    .await
    .unwrap();
    let token = server.token("r", "site-7", "participant").unwrap();

    let (ws, joined) = raw_join(&server, &token, None).await;
    assert_eq!(joined["resumed"], false);
    let pid = joined["participant_id"].as_str().unwrap().to_owned();
    let rt = joined["resume_token"].as_str().unwrap().to_owned();
    assert!(rt.len() >= 16, "resume token too short: {rt}");
    // Drop the socket without `leave` (no close frame): a network failure as the server sees it.
    drop(ws);

    // A wrong resume token does not take the session over: it becomes a new participant
    // (and, having the same identity, replaces the suspended one).
    // First: the right token continues the same participant.
    let (mut ws2, joined2) = raw_join(&server, &token, Some((&pid, &rt))).await;
    assert_eq!(joined2["resumed"], true, "{joined2}");
    assert_eq!(joined2["participant_id"], pid.as_str());
    let others: Vec<&str> = joined2["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect();
    assert!(
        others.contains(&"pub") && others.contains(&"watch"),
        "{others:?}"
    );
    // Still in the room: ping works on the new socket.
    ws2.send(Message::text(json!({"type":"ping","ts":9}).to_string()))
        .await
        .unwrap();
    loop {
        let m = raw_next_json(&mut ws2, WAIT).await.unwrap().unwrap();
        if m["type"] == "pong" {
            break;
        }
    }
    // The watcher never saw site-7 leave or join twice; media kept flowing meanwhile.
    let pub_id = publisher.participant_id().clone();
    watcher
        .wait_media(
            |r| {
                r.received_track(&pub_id, TrackKind::Video)
                    .is_some_and(|t| t.packets > 30)
            },
            WAIT,
        )
        .await
        .unwrap();
    let seen: Vec<ServerMessage> = watcher.drain_events();
    let left = seen.iter().filter(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if participant_id.0 == pid)).count();
    let joins = seen.iter().filter(|m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.identity == "site-7")).count();
    assert_eq!((left, joins), (0, 1), "events: {seen:?}");

    // Drop again and let the grace window pass: now everyone sees it leave.
    drop(ws2);
    let t0 = Instant::now();
    let m = watcher
        .wait_for(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if participant_id.0 == pid), WAIT)
        .await
        .unwrap();
    assert!(matches!(
        m,
        ServerMessage::ParticipantLeft {
            reason: LeaveReason::Disconnected,
            ..
        }
    ));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "removed before the grace window: {waited:?}"
    );

    // A resume after that is a new session with a new id.
    let (_ws3, joined3) = raw_join(&server, &token, Some((&pid, &rt))).await;
    assert_eq!(joined3["resumed"], false);
    assert_ne!(joined3["participant_id"], pid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_resume_token_gets_a_new_session() {
    let server = Server::start().unwrap();
    let token = server.token("r", "site-1", "participant").unwrap();
    let (ws, joined) = raw_join(&server, &token, None).await;
    let pid = joined["participant_id"].as_str().unwrap().to_owned();
    drop(ws);
    let (_ws2, j2) = raw_join(
        &server,
        &token,
        Some((&pid, "not-the-secret-not-the-secret-xx")),
    )
    .await;
    assert_eq!(j2["resumed"], false);
    assert_ne!(j2["participant_id"], pid.as_str());
    // Another identity cannot resume site-1's session even with its id.
    let other = server.token("r", "site-2", "participant").unwrap();
    let (_ws3, j3) = raw_join(&server, &other, Some((&pid, "x"))).await;
    assert_eq!(j3["resumed"], false);
}

/// A TCP relay in front of the server's HTTP port whose connections can be cut (the
/// signalling WebSocket drops; UDP media is untouched).
struct CuttableRelay {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
}

impl CuttableRelay {
    async fn start(target: std::net::SocketAddr) -> CuttableRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, rx) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.changed() => {} // cut: both sockets dropped
                    }
                });
            }
        });
        CuttableRelay { addr, cut }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headless_client_resumes_by_itself_and_media_keeps_flowing() {
    let server = Server::start().unwrap();
    let relay = CuttableRelay::start(server.http).await;
    let url = format!("ws://{}/rtc", relay.addr);
    let mut site = Client::connect(ClientOptions::new(
        url,
        server.token("r", "site-3", "participant").unwrap(),
    ))
    .await
    .unwrap();
    let mut watcher = Client::connect(
        ClientOptions::new(server.ws_url(), server.token("r", "watch", "host").unwrap())
            .receive_only(),
    )
    .await
    .unwrap();
    let site_id = site.participant_id().clone();
    watcher
        .wait_media(
            |r| {
                r.received_track(&site_id, TrackKind::Video)
                    .is_some_and(|t| t.packets > 30)
            },
            WAIT,
        )
        .await
        .unwrap();

    let t0 = Instant::now();
    relay.cut_all();
    let m = site
        .wait_for(
            |m| matches!(m, ServerMessage::Joined { resumed: true, .. }),
            WAIT,
        )
        .await
        .expect("the client resumed");
    let ServerMessage::Joined { participant_id, .. } = m else {
        unreachable!()
    };
    assert_eq!(participant_id, site_id, "same participant after the resume");
    println!("signalling resumed {:?} after the cut", t0.elapsed());
    // Signalling works again: a ping round trip.
    site.ping(5).await.unwrap();
    site.wait_for(|m| matches!(m, ServerMessage::Pong { ts: 5 }), WAIT)
        .await
        .unwrap();
    // Media never stopped and the watcher never saw the site leave.
    let before = watcher
        .stats()
        .received_track(&site_id, TrackKind::Video)
        .map_or(0, |t| t.packets);
    watcher
        .wait_media(
            |r| {
                r.received_track(&site_id, TrackKind::Video)
                    .is_some_and(|t| t.packets > before + 30)
            },
            WAIT,
        )
        .await
        .unwrap();
    let gone = watcher
        .drain_events()
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if *participant_id == site_id))
        .count();
    assert_eq!(gone, 0);
    assert!(!site.is_closed());
}
