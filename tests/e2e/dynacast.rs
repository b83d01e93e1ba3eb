//! Video a subscriber does not show is not forwarded to it (`track_settings`), resumes with a
//! keyframe and without a sequence gap when shown again, and a track nobody shows is paused at
//! the publisher (`publisher_pause`, dynacast).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::Server;
use rakor_proto::{ClientMessage, ErrorCode, ParticipantId, ServerMessage, TrackId, TrackKind};
use std::time::Duration;

const MEDIA_WAIT: Duration = Duration::from_secs(20);
const EVENT_WAIT: Duration = Duration::from_secs(10);

async fn join(server: &Server, identity: &str, audio: bool, video: bool) -> Client {
    let token = server.token("rakor", identity, "participant").unwrap();
    Client::connect(ClientOptions::new(server.ws_url(), token).publish(audio, video))
        .await
        .unwrap_or_else(|e| panic!("{identity} could not join: {e}"))
}

fn video(r: &Report, from: &ParticipantId) -> (u64, u64, u64) {
    r.received_track(from, TrackKind::Video)
        .map_or((0, 0, 0), |t| (t.packets, t.keyframes, t.seq_gaps))
}

fn audio(r: &Report, from: &ParticipantId) -> u64 {
    r.received_track(from, TrackKind::Audio)
        .map_or(0, |t| t.packets)
}

async fn show(client: &Client, track: &TrackId, visible: bool) {
    client
        .send(&ClientMessage::TrackSettings {
            track_id: track.clone(),
            visible,
            width: if visible { 320 } else { 0 },
            height: if visible { 180 } else { 0 },
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_video_stops_and_resumes_with_a_keyframe_and_nobody_showing_pauses_the_publisher() {
    let server = Server::start().unwrap();
    let mut publisher = join(&server, "camat-kota", true, true).await;
    let s1 = join(&server, "dinkes", false, false).await;
    let s2 = join(&server, "dishub", false, false).await;
    let p = publisher.participant_id().clone();
    for s in [&s1, &s2] {
        s.wait_media(|r| video(r, &p).0 >= 30 && video(r, &p).1 >= 1, MEDIA_WAIT)
            .await
            .unwrap();
    }
    publisher.wait_published(MEDIA_WAIT).await.unwrap();
    let track = publisher.local_track_id(TrackKind::Video).unwrap();

    // S1 hides the video: it stops reaching S1 while S2 keeps receiving it.
    show(&s1, &track, false).await;
    let hidden_at = s1.stats();
    let s2_before = s2.stats();
    s2.wait_media(
        |r| video(r, &p).0 >= video(&s2_before, &p).0 + 60,
        MEDIA_WAIT,
    )
    .await
    .unwrap();
    let s1_grew = video(&s1.stats(), &p).0 - video(&hidden_at, &p).0;
    assert!(
        s1_grew <= 10,
        "hidden video still reached S1: +{s1_grew} packets"
    );

    // S2 hides it too: nobody shows it, so the publisher is told to pause and stops sending.
    show(&s2, &track, false).await;
    publisher
        .wait_for(
            |m| matches!(m, ServerMessage::PublisherPause { track_id, paused: true } if *track_id == track),
            EVENT_WAIT,
        )
        .await
        .unwrap();
    let sent_paused = publisher.stats();
    assert!(sent_paused.sent_track(TrackKind::Video).unwrap().paused);
    // Audio keeps flowing meanwhile (it is the clock for this check).
    let a_before = s1.stats();
    s1.wait_media(|r| audio(r, &p) >= audio(&a_before, &p) + 100, MEDIA_WAIT)
        .await
        .unwrap();
    let sent_grew = publisher
        .stats()
        .sent_track(TrackKind::Video)
        .unwrap()
        .packets
        - sent_paused.sent_track(TrackKind::Video).unwrap().packets;
    assert!(
        sent_grew <= 10,
        "paused publisher kept sending video: +{sent_grew} packets"
    );

    // S1 shows it again: the publisher resumes, S1 gets a fresh keyframe and the stream
    // continues without a sequence gap.
    let before = s1.stats();
    show(&s1, &track, true).await;
    publisher
        .wait_for(
            |m| matches!(m, ServerMessage::PublisherPause { track_id, paused: false } if *track_id == track),
            EVENT_WAIT,
        )
        .await
        .unwrap();
    let r = s1
        .wait_media(
            |r| {
                let (n, k, _) = video(r, &p);
                n >= video(&before, &p).0 + 30 && k > video(&before, &p).1
            },
            MEDIA_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("video did not resume with a keyframe: {e}"));
    let gaps = video(&r, &p).2 - video(&before, &p).2;
    assert!(
        gaps <= 2,
        "resumed stream has a sequence gap of {gaps} packets"
    );
    assert_eq!(r.total_mismatches(), 0, "{}", r.to_json());
    assert!(
        !publisher
            .stats()
            .sent_track(TrackKind::Video)
            .unwrap()
            .paused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_settings_for_unknown_or_audio_tracks_are_refused() {
    let server = Server::start().unwrap();
    let publisher = join(&server, "camat-kota", true, false).await;
    let mut sub = join(&server, "dinkes", false, false).await;
    let p = publisher.participant_id().clone();
    sub.wait_media(|r| audio(r, &p) >= 10, MEDIA_WAIT)
        .await
        .unwrap();
    publisher.wait_published(MEDIA_WAIT).await.unwrap();
    let audio_track = publisher.local_track_id(TrackKind::Audio).unwrap();
    for (track, code) in [
        (TrackId("TR_nope".into()), ErrorCode::UnknownTrack),
        (audio_track, ErrorCode::BadRequest),
    ] {
        show(&sub, &track, false).await;
        sub.wait_for(
            |m| matches!(m, ServerMessage::Error { code: c, .. } if *c == code),
            EVENT_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("no {code} error: {e}"));
    }
    // The session is intact: audio keeps arriving.
    let before = sub.stats();
    sub.wait_media(|r| audio(r, &p) >= audio(&before, &p) + 50, MEDIA_WAIT)
        .await
        .unwrap();
}
