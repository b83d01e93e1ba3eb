//! Hostile and malformed input against the real server: every bad frame gets a clear `error`
//! with a stable code to that client only, the server keeps running, and a third participant
//! keeps receiving media throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::SinkExt;
use rakor_client::{Client, ClientError, ClientOptions};
use rakor_e2e::{raw_next_json, raw_ws, sign_claims, signing_key_bytes, unix_now, Server};
use rakor_proto::{ErrorCode, ParticipantId, ServerMessage, TrackKind};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
const MEDIA_WAIT: Duration = Duration::from_secs(20);

/// A publisher and a watcher in room "r", media flowing.
async fn live_room(server: &Server) -> (Client, Client, ParticipantId) {
    let p = Client::connect(ClientOptions::new(
        server.ws_url(),
        server.token("r", "pub", "host").unwrap(),
    ))
    .await
    .unwrap();
    let w = Client::connect(
        ClientOptions::new(
            server.ws_url(),
            server.token("r", "watch", "participant").unwrap(),
        )
        .receive_only(),
    )
    .await
    .unwrap();
    let pid = p.participant_id().clone();
    w.wait_media(
        |r| {
            r.received_track(&pid, TrackKind::Video)
                .is_some_and(|t| t.packets >= 30)
        },
        MEDIA_WAIT,
    )
    .await
    .unwrap();
    (p, w, pid)
}

/// The watcher's video from `pid` advances by at least `n` more packets and stays exact.
async fn still_flowing(w: &Client, pid: &ParticipantId, n: u64) {
    let before = w
        .stats()
        .received_track(pid, TrackKind::Video)
        .map_or(0, |t| t.packets);
    let r = w
        .wait_media(
            |r| {
                r.received_track(pid, TrackKind::Video)
                    .is_some_and(|t| t.packets >= before + n)
            },
            MEDIA_WAIT,
        )
        .await
        .expect("media stopped for the bystander");
    assert_eq!(r.total_mismatches(), 0);
}

fn code_of(m: &serde_json::Value) -> &str {
    m["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_after_join_get_errors_and_harm_nobody() {
    let server = Server::start().unwrap();
    let (_p, w, pid) = live_room(&server).await;
    let mut bad = Client::connect(
        ClientOptions::new(
            server.ws_url(),
            server.token("r", "mallory", "participant").unwrap(),
        )
        .receive_only(),
    )
    .await
    .unwrap();

    let huge = format!(
        r#"{{"type":"ping","ts":1,"pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let offer_garbage =
        json!({"type":"offer","pc":"publisher","sdp":"v=0\r\nthis is not sdp\r\nm=video x\r\n"})
            .to_string();
    let offer_not_sdp = json!({"type":"offer","pc":"publisher","sdp":"hello"}).to_string();
    let cases: Vec<(String, ErrorCode)> = vec![
        ("{not json".into(), ErrorCode::MalformedJson),
        ("[1,2,3]".into(), ErrorCode::MalformedJson),
        (r#"{"type":"teleport"}"#.into(), ErrorCode::UnknownType),
        (r#"{"no_type":true}"#.into(), ErrorCode::BadRequest),
        (r#"{"type":"offer","pc":"publisher"}"#.into(), ErrorCode::BadRequest),
        (r#"{"type":"ping","ts":"soon"}"#.into(), ErrorCode::BadRequest),
        (r#"{"type":"leave","extra":1}"#.into(), ErrorCode::BadRequest),
        (json!({"type":"join","version":1,"token":"x"}).to_string(), ErrorCode::InvalidState),
        (json!({"type":"answer","pc":"subscriber","sdp":"v=0\r\n"}).to_string(), ErrorCode::InvalidState),
        (json!({"type":"answer","pc":"publisher","sdp":"v=0\r\n"}).to_string(), ErrorCode::BadRequest),
        (json!({"type":"offer","pc":"subscriber","sdp":"v=0\r\n"}).to_string(), ErrorCode::BadRequest),
        (
            json!({"type":"candidate","pc":"publisher","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}}).to_string(),
            ErrorCode::InvalidState,
        ),
        (huge, ErrorCode::FrameTooLarge),
        (offer_garbage, ErrorCode::InvalidSdp),
        (offer_not_sdp, ErrorCode::InvalidSdp),
        (json!({"type":"unpublish","track_id":"TR_doesnotexist"}).to_string(), ErrorCode::UnknownTrack),
        (json!({"type":"mute_track","track_id":"TR_doesnotexist","muted":true}).to_string(), ErrorCode::UnknownTrack),
        (json!({"type":"spotlight","participant_id":pid.0}).to_string(), ErrorCode::Forbidden),
    ];
    for (frame, want) in cases {
        bad.send_raw(frame.clone()).await.unwrap();
        let m = bad
            .wait_for(|m| matches!(m, ServerMessage::Error { .. }), WAIT)
            .await
            .unwrap_or_else(|e| panic!("no error for {:.80}: {e}", frame));
        let ServerMessage::Error { code, message, .. } = m else {
            unreachable!()
        };
        assert_eq!(code, want, "frame {:.80} → {message}", frame);
        assert!(!message.is_empty());
    }
    // Still in the session after all that: ping answers.
    bad.ping(42).await.unwrap();
    bad.wait_for(|m| matches!(m, ServerMessage::Pong { ts: 42 }), WAIT)
        .await
        .unwrap();
    // The bystander saw none of these errors and kept receiving.
    let mut w = w;
    let errors: Vec<_> = w
        .drain_events()
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::Error { .. }))
        .collect();
    assert!(errors.is_empty(), "bystander got errors: {errors:?}");
    still_flowing(&w, &pid, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_handshakes_are_refused() {
    let server = Server::start().unwrap();
    let (_p, w, pid) = live_room(&server).await;
    let key = signing_key_bytes(server.data_dir.path()).unwrap();
    let now = unix_now();
    let claims = |exp: u64, room: &str| json!({"sub":"x","room":room,"name":"X","role":"participant","iat":now - 10,"exp":exp,"iss":"rakor"});
    let expired = sign_claims(&key, &claims(now - 5, "r")).unwrap();
    let forged = sign_claims(&[7u8; 32], &claims(now + 3600, "r")).unwrap();
    let valid = sign_claims(&key, &claims(now + 3600, "r")).unwrap();
    let mut tampered = valid.clone();
    // Flip a character in the payload part.
    let dot = tampered.find('.').unwrap() + 5;
    let c = tampered.as_bytes()[dot];
    tampered.replace_range(dot..dot + 1, if c == b'A' { "B" } else { "A" });
    let alg_none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims(now + 3600, "r").to_string().as_bytes())
    );

    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"type":"join","version":1,"token":expired}),
            "token_expired",
        ),
        (
            json!({"type":"join","version":1,"token":forged}),
            "invalid_token",
        ),
        (
            json!({"type":"join","version":1,"token":tampered}),
            "invalid_token",
        ),
        (
            json!({"type":"join","version":1,"token":alg_none}),
            "invalid_token",
        ),
        (
            json!({"type":"join","version":1,"token":"garbage"}),
            "invalid_token",
        ),
        (
            json!({"type":"join","version":1,"token":valid,"room":"other-room"}),
            "wrong_room",
        ),
        (
            json!({"type":"join","version":2,"token":valid}),
            "unsupported_version",
        ),
        (
            json!({"type":"offer","pc":"publisher","sdp":"v=0\r\n"}),
            "invalid_state",
        ),
        (json!({"type":"join"}), "bad_request"),
    ];
    for (first, want) in cases {
        let mut ws = raw_ws(&server.ws_url()).await.unwrap();
        ws.send(Message::text(first.to_string())).await.unwrap();
        let m = raw_next_json(&mut ws, WAIT)
            .await
            .unwrap()
            .expect("an error before close");
        assert_eq!(m["type"], "error", "{first}");
        assert_eq!(code_of(&m), want, "{first} → {m}");
        // Then the server closes.
        assert!(
            raw_next_json(&mut ws, WAIT).await.unwrap().is_none(),
            "socket left open after {want}"
        );
    }
    // Binary frame first.
    let mut ws = raw_ws(&server.ws_url()).await.unwrap();
    ws.send(Message::binary(vec![0u8, 1, 2, 3])).await.unwrap();
    let m = raw_next_json(&mut ws, WAIT).await.unwrap().unwrap();
    assert_eq!(code_of(&m), "bad_request");

    // Through the client API too: the rejection carries the code.
    let err = Client::connect(ClientOptions::new(server.ws_url(), expired.clone()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                code: ErrorCode::TokenExpired,
                ..
            }
        ),
        "{err:?}"
    );

    // The valid token still joins, and the bystander never noticed.
    Client::connect(ClientOptions::new(server.ws_url(), valid).receive_only())
        .await
        .unwrap();
    still_flowing(&w, &pid, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_on_the_media_port_are_dropped() {
    let server = Server::start().unwrap();
    let (_p, w, pid) = live_room(&server).await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // STUN-looking, DTLS-looking, RTP-looking and random junk from an unknown source, plus a
    // STUN binding request with a USERNAME naming no connection.
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42],
        vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],
        vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xde, 0xad],
        vec![0xff; 1400],
    ];
    let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
    stun.extend_from_slice(b"nobody:x");
    junk.push(stun);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in [3usize, 17, 100, 300, 1200] {
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.push(seed as u8);
        }
        junk.push(v);
    }
    for _ in 0..50 {
        for j in &junk {
            sock.send_to(j, server.media).unwrap();
        }
    }
    still_flowing(&w, &pid, 30).await;
    assert!(rakor_e2e::http_get(server.http, "/healthz").unwrap().0 == 200);
}

fn base64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
