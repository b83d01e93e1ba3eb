//! A minimal mock of the Rakor signalling server for the client's connection tests: it answers
//! `join` with `joined` (reporting each resume request to the test) and every publisher offer
//! with a real ICE-lite answer (the same `rtc` agent the server runs) whose candidates the test
//! chooses. Shared by `connect_timeout.rs` and `ice_stall.rs`.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rakor_client::peer::{new_peer_connection, PeerConfig, PeerEvent};
use rakor_proto::*;
use std::future::Future;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

/// What the mock saw: `media_reset` for each `join` that carried a resume request.
pub type Resumes = mpsc::UnboundedReceiver<bool>;
pub type Ws = WebSocketStream<TcpStream>;
pub type Sink = SplitSink<Ws, Message>;
pub type Stream = SplitStream<Ws>;
pub type Events = mpsc::UnboundedSender<(PeerConnectionKind, PeerEvent)>;

/// Listens on loopback; every WebSocket connection is handed to `serve` with the sender of the
/// returned [`Resumes`]. Returns the `ws://` URL.
pub async fn start<F, Fut>(serve: F) -> (String, Resumes)
where
    F: Fn(Ws, mpsc::UnboundedSender<bool>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/rtc", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            tokio::spawn(serve(ws, tx.clone()));
        }
    });
    (url, rx)
}

pub fn text(m: &ServerMessage) -> Message {
    Message::text(serde_json::to_string(m).unwrap())
}

/// Reads the client's `join` and answers `joined` as participant `id`; a resume request's
/// `media_reset` goes to `resumes`. `None` if the client went away first.
pub async fn join(
    ws: Ws,
    resumes: &mpsc::UnboundedSender<bool>,
    id: &str,
) -> Option<(Sink, Stream)> {
    let (mut sink, mut stream) = ws.split();
    let Some(Ok(Message::Text(first))) = stream.next().await else {
        return None;
    };
    let ClientMessage::Join { token, resume, .. } = parse_client_message(first.as_str()).unwrap()
    else {
        panic!("first message is not join")
    };
    if let Some(r) = &resume {
        let _ = resumes.send(r.media_reset);
    }
    let joined = ServerMessage::Joined {
        version: PROTOCOL_VERSION,
        participant_id: ParticipantId(id.into()),
        room: "rakor-test".into(),
        identity: token.clone(),
        name: token,
        role: Role::Participant,
        participants: vec![],
        spotlight: None,
        resume_token: "mock-resume-token".into(),
        resumed: resume.is_some(),
        media_reset: resume.is_some_and(|r| r.media_reset),
        presentation: None,
        ice_servers: Vec::new(),
    };
    sink.send(text(&joined)).await.ok()?;
    Some((sink, stream))
}

/// The next `offer` the client sends (other messages are skipped); `None` when it went away.
pub async fn next_offer(stream: &mut Stream) -> Option<(PeerConnectionKind, String)> {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        if let Ok(ClientMessage::Offer { pc, sdp, .. }) = parse_client_message(text.as_str()) {
            return Some((pc, sdp));
        }
    }
    None
}

/// An ICE-lite answer to `offer` from a real agent (its events go to `events`): the answering
/// connection (keep it alive), the answer's SDP with every candidate line removed, and the
/// answer's first `mid`.
pub async fn lite_answer(
    pc: PeerConnectionKind,
    offer: String,
    events: Events,
) -> (Arc<dyn PeerConnection>, String, Option<String>) {
    let config = PeerConfig {
        imitate_server: true,
        ice_tcp: false,
        ..PeerConfig::default()
    };
    let server_pc = new_peer_connection(&config, pc, events).await.unwrap();
    server_pc
        .set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let answer = server_pc.create_answer(None).await.unwrap();
    server_pc.set_local_description(answer).await.unwrap();
    let sdp = server_pc.local_description().await.unwrap().sdp;
    let sdp: String = sdp
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
        .collect();
    let mid = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_owned());
    (server_pc, sdp, mid)
}

/// Sends the answer, then its only candidate: a UDP host candidate at 127.0.0.1:`port`.
pub async fn answer_with_candidate(
    sink: &mut Sink,
    pc: PeerConnectionKind,
    sdp: String,
    mid: Option<String>,
    port: u16,
) {
    let _ = sink.send(text(&ServerMessage::Answer { pc, sdp })).await;
    let candidate = IceCandidate {
        candidate: format!("candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"),
        sdp_mid: mid,
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    let _ = sink
        .send(text(&ServerMessage::Candidate { pc, candidate }))
        .await;
}
