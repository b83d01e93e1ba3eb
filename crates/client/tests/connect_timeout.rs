//! A peer connection whose ICE checks are never answered. The `webrtc` crate's ICE agent only
//! fails a connection whose *selected* pair goes silent: one still checking stays `connecting`
//! for good (what left two of the sixty-site load test's bots without media for 138 s). The
//! client's `connect_timeout` treats such a leg as failed and resumes with a media reset.
//!
//! The mock signalling server here answers the publisher's offer with a real ICE-lite answer
//! whose only candidate is a UDP socket that never reads: checks vanish, nothing ever answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::{SinkExt, StreamExt};
use rakor_client::peer::{new_peer_connection, PeerConfig};
use rakor_client::{Client, ClientOptions};
use rakor_proto::*;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::peer_connection::RTCSessionDescription;

/// What the mock saw: `Some(media_reset)` for each `join` that carried a resume request.
type Resumes = mpsc::UnboundedReceiver<bool>;

async fn start_mock() -> (String, Resumes, UdpSocket) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/rtc", listener.local_addr().unwrap());
    // Bound and never read: checks sent here are silently lost.
    let black_hole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hole_port = black_hole.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                serve(ws, tx, hole_port).await;
            });
        }
    });
    (url, rx, black_hole)
}

async fn serve(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    resumes: mpsc::UnboundedSender<bool>,
    hole_port: u16,
) {
    let (mut sink, mut stream) = ws.split();
    let Some(Ok(Message::Text(first))) = stream.next().await else {
        return;
    };
    let ClientMessage::Join { token, resume, .. } = parse_client_message(first.as_str()).unwrap()
    else {
        panic!("first message is not join")
    };
    let resumed = resume.is_some();
    if let Some(r) = &resume {
        let _ = resumes.send(r.media_reset);
    }
    let joined = ServerMessage::Joined {
        version: PROTOCOL_VERSION,
        participant_id: ParticipantId("PA_stuck".into()),
        room: "rakor-test".into(),
        identity: token.clone(),
        name: token,
        role: Role::Participant,
        participants: vec![],
        spotlight: None,
        resume_token: "mock-resume-token".into(),
        resumed,
        media_reset: resume.is_some_and(|r| r.media_reset),
        presentation: None,
        ice_servers: Vec::new(),
    };
    let send = |m: &ServerMessage| Message::text(serde_json::to_string(m).unwrap());
    if sink.send(send(&joined)).await.is_err() {
        return;
    }
    let mut pcs = Vec::new();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(ClientMessage::Offer { pc, sdp, .. }) = parse_client_message(text.as_str()) else {
            continue;
        };
        let (ev_tx, _ev_rx) = mpsc::unbounded_channel();
        let config = PeerConfig {
            imitate_server: true,
            ice_tcp: false,
            ..PeerConfig::default()
        };
        let server_pc = new_peer_connection(&config, pc, ev_tx).await.unwrap();
        server_pc
            .set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
            .await
            .unwrap();
        let answer = server_pc.create_answer(None).await.unwrap();
        server_pc.set_local_description(answer).await.unwrap();
        let sdp = server_pc.local_description().await.unwrap().sdp;
        // Only the black hole is ever offered as a candidate.
        let sdp: String = sdp
            .split_inclusive('\n')
            .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
            .collect();
        let mid = sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .map(|m| m.trim().to_owned());
        let _ = sink.send(send(&ServerMessage::Answer { pc, sdp })).await;
        let candidate = IceCandidate {
            candidate: format!("candidate:1 1 udp 2130706431 127.0.0.1 {hole_port} typ host"),
            sdp_mid: mid,
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        let _ = sink
            .send(send(&ServerMessage::Candidate { pc, candidate }))
            .await;
        pcs.push(server_pc);
    }
    for pc in pcs {
        let _ = pc.close().await;
    }
}

fn opts(url: &str, connect_timeout: Duration) -> ClientOptions {
    let mut o = ClientOptions::new(url, "site-stuck").publish(true, false);
    o.ice_tcp = false;
    o.connect_timeout = connect_timeout;
    // The mock sends no WebSocket pings: keep the silence timeout out of it.
    o.signalling_timeout = Duration::ZERO;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_checks_are_never_answered_stays_connecting_without_the_timeout() {
    let (url, mut resumes, _hole) = start_mock().await;
    let client = Client::connect(opts(&url, Duration::ZERO)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let report = client.stats();
    // The ICE agent never gives up on its own: no `failed`, so no resume either.
    assert_ne!(
        report.publisher_state.as_deref(),
        Some("connected"),
        "{report:?}"
    );
    assert_ne!(
        report.publisher_state.as_deref(),
        Some("failed"),
        "the ICE agent failed the connection by itself: {report:?}"
    );
    assert!(resumes.try_recv().is_err(), "resumed without a timeout");
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_connecting_after_connect_timeout_resumes_with_a_media_reset() {
    let (url, mut resumes, _hole) = start_mock().await;
    let started = std::time::Instant::now();
    let client = Client::connect(opts(&url, Duration::from_secs(2)))
        .await
        .unwrap();
    let media_reset = tokio::time::timeout(Duration::from_secs(15), resumes.recv())
        .await
        .expect("no resume within 15 s of a 2 s connect timeout")
        .unwrap();
    assert!(media_reset, "the resume did not ask for a media reset");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "resumed after {waited:?}, before the timeout"
    );
    let report = client.stats();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("Publisher connection not connected")),
        "{:?}",
        report.errors
    );
    // The new publisher connection is checked (and timed out) again: still bounded, no panic.
    let again = tokio::time::timeout(Duration::from_secs(15), resumes.recv())
        .await
        .expect("the second stuck connection was not timed out")
        .unwrap();
    assert!(again);
    client.disconnect().await;
}
