#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[test]
fn parses_every_client_message() {
    let cases = [
        (r#"{"type":"join","version":1,"token":"t"}"#, "join"),
        (
            r#"{"type":"join","version":1,"token":"t","room":"r1"}"#,
            "join",
        ),
        (r#"{"type":"offer","pc":"publisher","sdp":"v=0"}"#, "offer"),
        (
            r#"{"type":"answer","pc":"subscriber","sdp":"v=0"}"#,
            "answer",
        ),
        (
            r#"{"type":"candidate","pc":"publisher","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
            "candidate",
        ),
        (r#"{"type":"unpublish","track_id":"TR_x"}"#, "unpublish"),
        (
            r#"{"type":"mute_track","track_id":"TR_x","muted":true}"#,
            "mute_track",
        ),
        (r#"{"type":"spotlight","participant_id":null}"#, "spotlight"),
        (
            r#"{"type":"spotlight","participant_id":"PA_1"}"#,
            "spotlight",
        ),
        (r#"{"type":"ping","ts":5}"#, "ping"),
        (r#"{"type":"ping"}"#, "ping"),
        (r#"{"type":"leave"}"#, "leave"),
        (
            r#"{"type":"moderate","action":"mute_audio","participant_id":"PA_1"}"#,
            "moderate",
        ),
        (r#"{"type":"moderate","action":"end_room"}"#, "moderate"),
    ];
    for (text, ty) in cases {
        let m = parse_client_message(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(m.type_name(), ty);
        // Round trip.
        let back = serde_json::to_string(&m).unwrap();
        assert_eq!(parse_client_message(&back).unwrap(), m);
    }
}

#[test]
fn rejects_bad_frames_with_stable_codes() {
    let big = format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(MAX_FRAME_BYTES)
    );
    let cases: Vec<(&str, ErrorCode)> = vec![
        ("", ErrorCode::MalformedJson),
        ("{", ErrorCode::MalformedJson),
        ("[1,2]", ErrorCode::MalformedJson),
        ("\"join\"", ErrorCode::MalformedJson),
        ("{}", ErrorCode::BadRequest),
        (r#"{"type":5}"#, ErrorCode::BadRequest),
        (r#"{"type":"explode"}"#, ErrorCode::UnknownType),
        (r#"{"type":"join","version":1}"#, ErrorCode::BadRequest),
        (
            r#"{"type":"join","version":"1","token":"t"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"join","version":1,"token":"t","extra":1}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"offer","pc":"sideways","sdp":"v=0"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"candidate","pc":"publisher","candidate":{}}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"mute_track","track_id":"TR_x"}"#,
            ErrorCode::BadRequest,
        ),
        (&big, ErrorCode::FrameTooLarge),
    ];
    for (text, code) in cases {
        let err = parse_client_message(text).expect_err(text);
        assert_eq!(err.code, code, "{text}: {}", err.message);
        assert!(!err.message.is_empty());
    }
}

#[test]
fn server_messages_serialize_with_type_tags() {
    let m = ServerMessage::error(ErrorCode::InvalidToken, "bad signature");
    let v: serde_json::Value = serde_json::to_value(&m).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "invalid_token");
    assert!(v.get("request_type").is_none());

    let m = ServerMessage::ParticipantLeft {
        participant_id: ParticipantId("PA_1".into()),
        reason: LeaveReason::Replaced,
        by: None,
    };
    let v: serde_json::Value = serde_json::to_value(&m).unwrap();
    assert_eq!(v["type"], "participant_left");
    assert_eq!(v["reason"], "replaced");
}

#[test]
fn error_code_names_match_serde() {
    for code in [
        ErrorCode::MalformedJson,
        ErrorCode::UnknownType,
        ErrorCode::BadRequest,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::WrongRoom,
        ErrorCode::InvalidState,
        ErrorCode::Forbidden,
        ErrorCode::InvalidSdp,
        ErrorCode::InvalidCandidate,
        ErrorCode::UnknownTrack,
        ErrorCode::UnknownParticipant,
        ErrorCode::RateLimited,
        ErrorCode::LimitExceeded,
        ErrorCode::ServerShuttingDown,
        ErrorCode::Internal,
        ErrorCode::Refused,
        ErrorCode::NotInvited,
        ErrorCode::SessionEnded,
        ErrorCode::NotYetValid,
        ErrorCode::Replaced,
        ErrorCode::LinkRevoked,
        ErrorCode::Banned,
        ErrorCode::LobbyTimeout,
        ErrorCode::TooLarge,
        ErrorCode::PresentationActive,
        ErrorCode::ClusterUnavailable,
    ] {
        assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
    }
}

#[test]
fn redirect_is_the_documented_message() {
    let m = ServerMessage::Redirect {
        url: "wss://node-b.prov.example/rtc".into(),
    };
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"type":"redirect","url":"wss://node-b.prov.example/rtc"}"#
    );
    assert!(ErrorCode::ClusterUnavailable.is_fatal());
    assert_eq!(
        serde_json::to_value(ErrorCode::ClusterUnavailable).unwrap(),
        "cluster_unavailable"
    );
}

#[test]
fn media_reset_and_resumable_are_additive() {
    // Absent when false: earlier clients see exactly the old messages.
    let leave = ServerMessage::Leave {
        reason: LeaveReason::MediaFailed,
        resumable: false,
    };
    assert_eq!(
        serde_json::to_string(&leave).unwrap(),
        r#"{"type":"leave","reason":"media_failed"}"#
    );
    let leave = ServerMessage::Leave {
        reason: LeaveReason::MediaFailed,
        resumable: true,
    };
    let v: serde_json::Value = serde_json::to_value(&leave).unwrap();
    assert_eq!(v["resumable"], true);
    let back: ServerMessage = serde_json::from_value(v).unwrap();
    assert_eq!(back, leave);
    // A `leave` without the field still parses (older servers).
    let old: ServerMessage =
        serde_json::from_str(r#"{"type":"leave","reason":"removed"}"#).unwrap();
    assert_eq!(
        old,
        ServerMessage::Leave {
            reason: LeaveReason::Removed,
            resumable: false
        }
    );
    let joined: ServerMessage = serde_json::from_str(
        r#"{"type":"joined","version":1,"participant_id":"PA_1","room":"r","identity":"i",
            "name":"n","role":"participant","participants":[],"spotlight":null,
            "resume_token":"t","resumed":true,"media_reset":true}"#,
    )
    .unwrap();
    assert!(matches!(
        joined,
        ServerMessage::Joined {
            resumed: true,
            media_reset: true,
            ..
        }
    ));
    // `ice_servers` is optional on the wire (servers before TURN did not send it).
    assert!(matches!(&joined, ServerMessage::Joined { ice_servers, .. } if ice_servers.is_empty()));
    let with: ServerMessage = serde_json::from_str(
        r#"{"type":"ice_servers","ice_servers":[{"urls":["turn:h:3478?transport=tcp"],
            "username":"1:a","credential":"c","expires_at":1}]}"#,
    )
    .unwrap();
    assert_eq!(
        with,
        ServerMessage::IceServers {
            ice_servers: vec![IceServer {
                urls: vec!["turn:h:3478?transport=tcp".into()],
                username: "1:a".into(),
                credential: "c".into(),
                expires_at: 1,
            }]
        }
    );
    // The request side: `join.resume.media_reset` is optional.
    for (text, reset) in [
        (
            r#"{"type":"join","version":1,"token":"t","resume":{"participant_id":"PA_1","token":"s"}}"#,
            false,
        ),
        (
            r#"{"type":"join","version":1,"token":"t","resume":{"participant_id":"PA_1","token":"s","media_reset":true}}"#,
            true,
        ),
    ] {
        let m = parse_client_message(text).unwrap();
        let ClientMessage::Join {
            resume: Some(r), ..
        } = m
        else {
            panic!("{text}")
        };
        assert_eq!(r.media_reset, reset, "{text}");
    }
}

#[test]
fn track_sources_on_the_wire() {
    // An offer may declare sources by mid; an older client's offer has none.
    let m: ClientMessage = serde_json::from_str(
        r#"{"type":"offer","pc":"publisher","sdp":"v=0","tracks":[{"mid":"2","source":"screen"}]}"#,
    )
    .unwrap();
    assert_eq!(
        m,
        ClientMessage::Offer {
            pc: PeerConnectionKind::Publisher,
            sdp: "v=0".into(),
            tracks: vec![TrackDeclaration {
                mid: "2".into(),
                source: TrackSource::Screen
            }],
        }
    );
    let old: ClientMessage =
        serde_json::from_str(r#"{"type":"offer","pc":"publisher","sdp":"v=0"}"#).unwrap();
    assert!(matches!(old, ClientMessage::Offer { tracks, .. } if tracks.is_empty()));
    // An unknown source is a bad request, not a silent camera.
    assert!(serde_json::from_str::<ClientMessage>(
        r#"{"type":"offer","pc":"publisher","sdp":"v=0","tracks":[{"mid":"0","source":"window"}]}"#
    )
    .is_err());
    // A track from a server that names no source is camera/microphone by kind.
    let t: TrackInfo =
        serde_json::from_str(r#"{"id":"TR_a","kind":"audio","mid":"0","muted":false}"#).unwrap();
    assert_eq!(t.source(), TrackSource::Microphone);
    let t = TrackInfo {
        id: TrackId("TR_b".into()),
        kind: TrackKind::Video,
        mid: "1".into(),
        muted: false,
        source: Some(TrackSource::ScreenAudio),
    };
    assert_eq!(
        serde_json::to_value(&t).unwrap()["source"],
        serde_json::json!("screen_audio")
    );
    let stop: ClientMessage =
        serde_json::from_str(r#"{"type":"moderate","action":"stop_presentation"}"#).unwrap();
    assert_eq!(
        stop,
        ClientMessage::Moderate {
            action: ModerateAction::StopPresentation,
            participant_id: None
        }
    );
    let ev = ServerMessage::Presentation {
        presentation: None,
        by: None,
    };
    assert_eq!(
        serde_json::to_value(&ev).unwrap(),
        serde_json::json!({"type":"presentation","presentation":null})
    );
}

#[test]
fn join_video_on_demand_is_optional() {
    for (text, on) in [
        (r#"{"type":"join","version":1,"token":"t"}"#, false),
        (
            r#"{"type":"join","version":1,"token":"t","video_on_demand":true}"#,
            true,
        ),
    ] {
        let m = parse_client_message(text).unwrap();
        let ClientMessage::Join {
            video_on_demand, ..
        } = &m
        else {
            panic!("{text}")
        };
        assert_eq!(*video_on_demand, on, "{text}");
        // An older server's clients never send the field unless it is on.
        let back = serde_json::to_string(&m).unwrap();
        assert_eq!(back.contains("video_on_demand"), on, "{back}");
    }
    assert!(parse_client_message(
        r#"{"type":"join","version":1,"token":"t","video_on_demand":"yes"}"#
    )
    .is_err());
}

/// `track_levels` is server → relay only: a client that sends it gets `unknown_type` (an
/// error to that client only, the session goes on); the server's form round-trips.
#[test]
fn track_levels_is_a_server_message_only() {
    let text = r#"{"type":"track_levels","levels":[{"track_id":"TR_x","level":20}]}"#;
    let err = parse_client_message(text).expect_err("a client may not send track_levels");
    assert_eq!(err.code, ErrorCode::UnknownType, "{}", err.message);
    let m: ServerMessage = serde_json::from_str(text).unwrap();
    assert_eq!(
        m,
        ServerMessage::TrackLevels {
            levels: vec![TrackLevel {
                track_id: TrackId("TR_x".into()),
                level: 20
            }]
        }
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&serde_json::to_string(&m).unwrap()).unwrap(),
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    );
    // A level outside a byte is not a level.
    assert!(serde_json::from_str::<ServerMessage>(
        r#"{"type":"track_levels","levels":[{"track_id":"TR_x","level":300}]}"#
    )
    .is_err());
}
