//! The `Client` against a small in-test mock of the Rakor server: real WebSocket signalling per
//! the protocol (join/joined, publisher offer/answer, subscriber offers with the `tracks`
//! mapping, trickled candidates both ways, track_published, participant events), and a naive
//! forwarder built on the `webrtc` crate. It stands in for the real server until the media core
//! lands, and pins down what the client expects of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::{SinkExt, StreamExt};
use rakor_client::peer::{
    mid_of_remote_track, new_peer_connection, opus_codec, vp8_codec, PeerConfig, PeerEvent,
};
use rakor_client::{Client, ClientError, ClientOptions};
use rakor_proto::*;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};

type PcEvents = mpsc::UnboundedSender<(PeerConnectionKind, PeerEvent)>;
/// (publisher, publisher mid) → subscriber-side local tracks (and their SSRCs) fed from it.
type Forwards = HashMap<(ParticipantId, String), Vec<(Arc<TrackLocalStaticRTP>, u32)>>;

struct Conn {
    info: ParticipantInfo,
    out: mpsc::UnboundedSender<String>,
    pc_tx: PcEvents,
    publisher: Mutex<Option<Arc<dyn PeerConnection>>>,
    subscriber: Mutex<Option<Arc<dyn PeerConnection>>>,
    published: Mutex<Vec<TrackInfo>>,
}

impl Conn {
    fn send(&self, msg: &ServerMessage) {
        let _ = self.out.send(serde_json::to_string(msg).unwrap());
    }
}

#[derive(Default)]
struct Mock {
    conns: Mutex<Vec<Arc<Conn>>>,
    forwards: Mutex<Forwards>,
    next_id: std::sync::atomic::AtomicU32,
}

async fn start_mock() -> (String, Arc<Mock>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/rtc", listener.local_addr().unwrap());
    let mock = Arc::new(Mock::default());
    let m = mock.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let m = m.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    serve(m, ws).await;
                }
            });
        }
    });
    (url, mock)
}

/// (mid, kind, sending) of each audio/video m-section of an SDP.
fn sdp_sections(sdp: &str) -> Vec<(String, TrackKind, bool)> {
    let mut out: Vec<(Option<String>, TrackKind, bool)> = vec![];
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            let kind = if rest.starts_with("audio") {
                TrackKind::Audio
            } else {
                TrackKind::Video
            };
            let port_zero = rest.split_whitespace().nth(1) == Some("0");
            out.push((None, kind, !port_zero));
        } else if let Some(last) = out.last_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                last.0 = Some(mid.to_owned());
            } else if line == "a=inactive" || line == "a=recvonly" {
                last.2 = false;
            }
        }
    }
    out.into_iter()
        .filter_map(|(mid, k, sending)| mid.map(|m| (m, k, sending)))
        .collect()
}

async fn serve(mock: Arc<Mock>, ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = out_rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    // join
    let Some(Ok(Message::Text(first))) = stream.next().await else {
        return;
    };
    let ClientMessage::Join { token, .. } = parse_client_message(first.as_str()).unwrap() else {
        panic!("first message is not join")
    };
    if token == "bad" {
        let _ = out_tx.send(
            serde_json::to_string(&ServerMessage::error(
                ErrorCode::InvalidToken,
                "bad signature",
            ))
            .unwrap(),
        );
        drop(out_tx);
        let _ = writer.await;
        return;
    }
    let n = mock
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = ParticipantId(format!("PA_{n}"));
    let info = ParticipantInfo {
        id: pid.clone(),
        identity: token.clone(),
        name: token,
        role: Role::Participant,
        tracks: vec![],
    };
    let (pc_tx, mut pc_rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        info: info.clone(),
        out: out_tx.clone(),
        pc_tx,
        publisher: Mutex::new(None),
        subscriber: Mutex::new(None),
        published: Mutex::new(vec![]),
    });
    let others: Vec<Arc<Conn>> = mock.conns.lock().await.clone();
    conn.send(&ServerMessage::Joined {
        version: PROTOCOL_VERSION,
        participant_id: pid.clone(),
        room: "rakor-test".into(),
        identity: info.identity.clone(),
        name: info.name.clone(),
        role: Role::Participant,
        participants: others.iter().map(|c| c.info.clone()).collect(),
        spotlight: None,
        resume_token: "mock-resume-token".into(),
        resumed: false,
        media_reset: false,
        presentation: None,
        ice_servers: Vec::new(),
    });
    // A message type from a future server version: clients must ignore it.
    let _ = out_tx.send(r#"{"type":"future_feature","x":1}"#.to_owned());
    for o in &others {
        o.send(&ServerMessage::ParticipantJoined {
            participant: info.clone(),
        });
    }
    mock.conns.lock().await.push(conn.clone());

    let mut reason = LeaveReason::Disconnected;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(Message::Text(text))) = frame else { break };
                match parse_client_message(text.as_str()) {
                    Ok(ClientMessage::Offer { sdp, .. }) => on_publisher_offer(&mock, &conn, sdp).await,
                    Ok(ClientMessage::Answer { sdp, .. }) => {
                        // Browser-like: the client is the DTLS client on the leg it answers.
                        assert!(sdp.contains("a=setup:active"), "client answer: {sdp}");
                        let pc = conn.subscriber.lock().await.clone().unwrap();
                        pc.set_remote_description(RTCSessionDescription::answer(sdp).unwrap()).await.unwrap();
                    }
                    Ok(ClientMessage::Candidate { pc, candidate }) => {
                        let leg = match pc {
                            PeerConnectionKind::Publisher => conn.publisher.lock().await.clone(),
                            PeerConnectionKind::Subscriber => conn.subscriber.lock().await.clone(),
                        };
                        if let (Some(leg), false) = (leg, candidate.candidate.is_empty()) {
                            let _ = leg
                                .add_ice_candidate(RTCIceCandidateInit {
                                    candidate: candidate.candidate,
                                    sdp_mid: candidate.sdp_mid,
                                    sdp_mline_index: candidate.sdp_mline_index,
                                    ..Default::default()
                                })
                                .await;
                        }
                    }
                    Ok(ClientMessage::Unpublish { track_id }) => {
                        let was = {
                            let mut published = conn.published.lock().await;
                            let before = published.len();
                            published.retain(|t| t.id != track_id);
                            published.len() != before
                        };
                        if was {
                            announce_unpublished(&mock, &conn, &track_id).await;
                        } else {
                            conn.send(&ServerMessage::error(ErrorCode::UnknownTrack, "not yours"));
                        }
                    }
                    Ok(ClientMessage::Ping { ts }) => conn.send(&ServerMessage::Pong { ts }),
                    Ok(ClientMessage::Leave {}) => { reason = LeaveReason::ClientRequest; break }
                    Ok(_) => {}
                    Err(e) => conn.send(&ServerMessage::error(e.code, e.message)),
                }
            }
            Some((kind, ev)) = pc_rx.recv() => match ev {
                PeerEvent::LocalCandidate(Some(c)) => conn.send(&ServerMessage::Candidate {
                    pc: kind,
                    candidate: IceCandidate { candidate: c.candidate, sdp_mid: Some("0".into()), sdp_mline_index: Some(0), username_fragment: None },
                }),
                PeerEvent::Track(track) => {
                    let pc = conn.publisher.lock().await.clone().unwrap();
                    let mid = mid_of_remote_track(&pc, &track).await.unwrap();
                    tokio::spawn(forward(mock.clone(), pid.clone(), mid, track));
                }
                _ => {}
            }
        }
    }
    mock.conns.lock().await.retain(|c| c.info.id != pid);
    for o in mock.conns.lock().await.iter() {
        o.send(&ServerMessage::ParticipantLeft {
            participant_id: pid.clone(),
            reason,
            by: None,
        });
    }
    for leg in [
        conn.publisher.lock().await.take(),
        conn.subscriber.lock().await.take(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = leg.close().await;
    }
    drop(out_tx);
    drop(conn);
    writer.abort();
}

async fn on_publisher_offer(mock: &Arc<Mock>, conn: &Arc<Conn>, sdp: String) {
    let existing = conn.publisher.lock().await.clone();
    let renegotiation = existing.is_some();
    let pc = match existing {
        Some(pc) => pc,
        None => {
            let pc = new_peer_connection(
                &server_peer_config(),
                PeerConnectionKind::Publisher,
                conn.pc_tx.clone(),
            )
            .await
            .unwrap();
            *conn.publisher.lock().await = Some(pc.clone());
            pc
        }
    };
    assert!(sdp.contains("a=setup:actpass"), "client offer: {sdp}");
    let sections = sdp_sections(&sdp);
    pc.set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
        .await
        .unwrap();
    let answer = pc.create_answer(None).await.unwrap();
    pc.set_local_description(answer).await.unwrap();
    let sdp = pc.local_description().await.unwrap().sdp;
    assert!(
        sdp.contains("a=ice-lite") && sdp.contains("a=setup:passive"),
        "{sdp}"
    );
    conn.send(&ServerMessage::Answer {
        pc: PeerConnectionKind::Publisher,
        sdp,
    });
    if renegotiation {
        // A section that stopped sending unpublishes its track.
        let stopped: Vec<TrackInfo> = {
            let mut published = conn.published.lock().await;
            let stopped: Vec<TrackInfo> = published
                .iter()
                .filter(|t| {
                    !sections
                        .iter()
                        .any(|(m, _, sending)| *m == t.mid && *sending)
                })
                .cloned()
                .collect();
            published.retain(|t| !stopped.contains(t));
            stopped
        };
        for t in stopped {
            announce_unpublished(mock, conn, &t.id).await;
        }
        return;
    }
    let tracks: Vec<TrackInfo> = sections
        .into_iter()
        .filter(|(_, _, sending)| *sending)
        .map(|(mid, kind, _)| TrackInfo {
            id: TrackId(format!("TR_{}_{mid}", conn.info.id)),
            kind,
            mid,
            muted: false,
            source: None,
        })
        .collect();
    *conn.published.lock().await = tracks.clone();
    let conns = mock.conns.lock().await.clone();
    for c in &conns {
        for t in &tracks {
            c.send(&ServerMessage::TrackPublished {
                participant_id: conn.info.id.clone(),
                track: t.clone(),
            });
        }
    }
    for other in conns.iter().filter(|c| c.info.id != conn.info.id) {
        subscribe(mock, other, &conn.info.id, &tracks).await;
    }
}

async fn announce_unpublished(mock: &Arc<Mock>, conn: &Arc<Conn>, track_id: &TrackId) {
    for c in mock.conns.lock().await.iter() {
        c.send(&ServerMessage::TrackUnpublished {
            participant_id: conn.info.id.clone(),
            track_id: track_id.clone(),
        });
    }
}

async fn subscribe(
    mock: &Arc<Mock>,
    sub: &Arc<Conn>,
    publisher: &ParticipantId,
    tracks: &[TrackInfo],
) {
    let pc = {
        let mut slot = sub.subscriber.lock().await;
        if slot.is_none() {
            *slot = Some(
                new_peer_connection(
                    &server_peer_config(),
                    PeerConnectionKind::Subscriber,
                    sub.pc_tx.clone(),
                )
                .await
                .unwrap(),
            );
        }
        slot.clone().unwrap()
    };
    let mut mapping = vec![];
    let mut transceivers = vec![];
    for t in tracks {
        let ssrc = rand::random::<u32>();
        let (codec, kind) = match t.kind {
            TrackKind::Audio => (opus_codec(), RtpCodecKind::Audio),
            TrackKind::Video => (vp8_codec(vec![]), RtpCodecKind::Video),
        };
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            publisher.to_string(),
            t.id.to_string(),
            t.id.to_string(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec,
                ..Default::default()
            }],
        )));
        let tr = pc
            .add_transceiver_from_track(
                local.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        transceivers.push((tr, t));
        mock.forwards
            .lock()
            .await
            .entry((publisher.clone(), t.mid.clone()))
            .or_default()
            .push((local, ssrc));
    }
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    // mids are assigned by the offer.
    for (tr, t) in transceivers {
        let mid = tr.mid().await.unwrap().unwrap();
        mapping.push(SubscribedTrack {
            mid,
            track_id: t.id.clone(),
            participant_id: publisher.clone(),
            kind: t.kind,
            source: None,
        });
    }
    let sdp = pc.local_description().await.unwrap().sdp;
    sub.send(&ServerMessage::Offer {
        pc: PeerConnectionKind::Subscriber,
        sdp,
        tracks: mapping,
    });
}

async fn forward(
    mock: Arc<Mock>,
    publisher: ParticipantId,
    mid: String,
    track: Arc<dyn TrackRemote>,
) {
    while let Some(ev) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(mut pkt) = ev {
            pkt.header.extension = false;
            pkt.header.extensions.clear();
            let outs = mock
                .forwards
                .lock()
                .await
                .get(&(publisher.clone(), mid.clone()))
                .cloned()
                .unwrap_or_default();
            for (local, ssrc) in outs {
                let mut p = pkt.clone();
                p.header.ssrc = ssrc;
                let _ = local.write_rtp(p).await;
            }
        }
    }
}

/// Like the real server: ICE-lite, DTLS passive when answering the publisher's offer.
fn server_peer_config() -> PeerConfig {
    PeerConfig {
        imitate_server: true,
        ..PeerConfig::default()
    }
}

fn opts(url: &str, token: &str) -> ClientOptions {
    ClientOptions::new(url, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_join_returns_the_server_error_code() {
    let (url, _mock) = start_mock().await;
    match Client::connect(opts(&url, "bad")).await {
        Err(ClientError::Rejected { code, message }) => {
            assert_eq!(code, ErrorCode::InvalidToken);
            assert_eq!(message, "bad signature");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("join with a bad token succeeded"),
    }
    assert!(matches!(
        Client::connect(opts("http://x", "t")).await,
        Err(ClientError::InvalidOptions(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_media_reaches_a_subscriber_through_the_mock_server() {
    let (url, _mock) = start_mock().await;
    let t = Duration::from_secs(20);

    // B subscribes only, and is in the room first.
    let mut b = Client::connect(opts(&url, "viewer-b").receive_only())
        .await
        .unwrap();
    assert!(b.joined().participants.is_empty());

    let a = Client::connect(opts(&url, "site-a")).await.unwrap();
    assert_eq!(a.joined().participants.len(), 1);
    let a_id = a.participant_id().clone();

    // B hears about A, then A's tracks.
    let joined = b
        .wait_for(|m| matches!(m, ServerMessage::ParticipantJoined { .. }), t)
        .await
        .unwrap();
    assert!(
        matches!(joined, ServerMessage::ParticipantJoined { participant } if participant.id == a_id)
    );

    // A learns its own track ids by mid and starts sending.
    let sent = a.wait_published(t).await.unwrap();
    assert_eq!(sent.sent.len(), 2);
    let video_id = a.local_track_id(TrackKind::Video).unwrap();
    assert_eq!(video_id, TrackId(format!("TR_{a_id}_1")));

    // B receives both tracks from A, keyed by A's track ids, byte-exact.
    let report = b
        .wait_media(
            |r| {
                r.received_track(&a_id, TrackKind::Video)
                    .is_some_and(|v| v.frames >= 10 && v.keyframes >= 1)
                    && r.received_track(&a_id, TrackKind::Audio)
                        .is_some_and(|a| a.packets >= 25)
            },
            t,
        )
        .await
        .unwrap();
    eprintln!("subscriber report: {}", report.to_json());
    let v = report.received_track(&a_id, TrackKind::Video).unwrap();
    assert_eq!(v.track_id, video_id);
    assert!(v.first_packet_ms.is_some());
    assert_eq!(report.total_mismatches(), 0, "{}", report.to_json());
    assert!(report.received.values().all(|t| t.payload_matches > 0));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.subscriber_state.as_deref(), Some("connected"));
    assert_eq!(b.participants().len(), 1);
    assert_eq!(b.participants()[0].tracks.len(), 2);
    assert!(b.stats().sent.is_empty());

    // Ping/pong, and a malformed frame gets an error event without closing anything.
    b.ping(42).await.unwrap();
    let pong = b
        .wait_for(|m| matches!(m, ServerMessage::Pong { .. }), t)
        .await
        .unwrap();
    assert_eq!(pong, ServerMessage::Pong { ts: 42 });
    b.send_raw("{not json").await.unwrap();
    let err = b
        .wait_for(|m| matches!(m, ServerMessage::Error { .. }), t)
        .await
        .unwrap();
    assert!(matches!(
        err,
        ServerMessage::Error {
            code: ErrorCode::MalformedJson,
            ..
        }
    ));

    // A stops its audio: B is told once (unpublish, then the renegotiation), A's audio stops.
    let audio_id = a.local_track_id(TrackKind::Audio).unwrap();
    a.unpublish(TrackKind::Audio).await.unwrap();
    let gone = b
        .wait_for(|m| matches!(m, ServerMessage::TrackUnpublished { .. }), t)
        .await
        .unwrap();
    assert_eq!(
        gone,
        ServerMessage::TrackUnpublished {
            participant_id: a_id.clone(),
            track_id: audio_id
        }
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_audio = a.stats().sent_track(TrackKind::Audio).unwrap().packets;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.stats().sent_track(TrackKind::Audio).unwrap().packets,
        sent_audio
    );
    assert!(a.stats().errors.is_empty(), "{:?}", a.stats().errors);
    assert_eq!(b.participants()[0].tracks.len(), 1);

    // C joins later and publishes video only: B gets a re-offer on its existing subscriber
    // connection, A gets its first subscriber offer.
    let c = Client::connect(opts(&url, "site-c").publish(false, true))
        .await
        .unwrap();
    let c_id = c.participant_id().clone();
    for (who, client) in [("b", &b), ("a", &a)] {
        let r = client
            .wait_media(
                |r| {
                    r.received_track(&c_id, TrackKind::Video)
                        .is_some_and(|v| v.frames >= 5 && v.keyframes >= 1)
                },
                t,
            )
            .await
            .unwrap_or_else(|e| panic!("{who} did not get C's video: {e}"));
        assert_eq!(r.total_mismatches(), 0);
        assert!(r.received_track(&c_id, TrackKind::Audio).is_none());
    }
    // A's media still flows to B after the renegotiation.
    let before = b
        .stats()
        .received_track(&a_id, TrackKind::Video)
        .unwrap()
        .packets;
    b.wait_media(
        |r| {
            r.received_track(&a_id, TrackKind::Video)
                .is_some_and(|v| v.packets > before + 5)
        },
        t,
    )
    .await
    .unwrap();

    // C drops off the network: B is told it disconnected.
    let final_c = c.disconnect().await;
    assert!(final_c.sent_track(TrackKind::Video).unwrap().packets > 0);
    assert!(final_c.sent_track(TrackKind::Audio).is_none());
    let left = b
        .wait_for(|m| matches!(m, ServerMessage::ParticipantLeft { .. }), t)
        .await
        .unwrap();
    assert_eq!(
        left,
        ServerMessage::ParticipantLeft {
            participant_id: c_id,
            reason: LeaveReason::Disconnected,
            by: None
        }
    );

    // A leaves; B is told why.
    let final_a = a.leave().await;
    assert!(final_a.sent_track(TrackKind::Video).unwrap().packets > 0);
    let left = b
        .wait_for(|m| matches!(m, ServerMessage::ParticipantLeft { .. }), t)
        .await
        .unwrap();
    assert_eq!(
        left,
        ServerMessage::ParticipantLeft {
            participant_id: a_id,
            reason: LeaveReason::ClientRequest,
            by: None
        }
    );
    assert!(b.participants().is_empty());
    let final_b = b.leave().await;
    assert!(final_b.errors.is_empty(), "{:?}", final_b.errors);
}

// Default (current-thread) runtime on purpose: the client must not need a multi-thread one.
#[tokio::test]
async fn bot_publishes_for_its_duration_then_leaves() {
    let (url, _mock) = start_mock().await;
    let t = Duration::from_secs(20);
    let mut viewer = Client::connect(opts(&url, "viewer").receive_only())
        .await
        .unwrap();
    let mut args = rakor_client::bot::BotArgs::new(url.clone(), "bot-1");
    args.publish_audio = false;
    args.duration = Some(Duration::from_secs(3));
    let bot = tokio::spawn(rakor_client::bot::run(args));

    let joined = viewer
        .wait_for(|m| matches!(m, ServerMessage::ParticipantJoined { .. }), t)
        .await
        .unwrap();
    let ServerMessage::ParticipantJoined { participant } = joined else {
        unreachable!()
    };
    viewer
        .wait_media(
            |r| {
                r.received_track(&participant.id, TrackKind::Video)
                    .is_some_and(|v| v.payload_matches > 5)
            },
            t,
        )
        .await
        .unwrap();

    let report = bot.await.unwrap().unwrap();
    let sent = report.sent_track(TrackKind::Video).unwrap();
    assert!(
        sent.packets > 0 && sent.track_id.is_some(),
        "{}",
        report.to_json()
    );
    assert!(report.sent_track(TrackKind::Audio).is_none());
    let left = viewer
        .wait_for(|m| matches!(m, ServerMessage::ParticipantLeft { .. }), t)
        .await
        .unwrap();
    assert!(matches!(
        left,
        ServerMessage::ParticipantLeft {
            reason: LeaveReason::ClientRequest,
            ..
        }
    ));
    assert_eq!(viewer.stats().total_mismatches(), 0);
}
