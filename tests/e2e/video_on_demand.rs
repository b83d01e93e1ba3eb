//! Video on demand (`join.video_on_demand`, issue 16): another participant's video is not in
//! the subscriber SDP until the client asks for it (`track_settings {visible: true}`), its
//! media then arrives intact, a video hidden for longer than the grace leaves the connection
//! (its m-line goes inactive and is reused for the next video asked for), a video nobody asked
//! for is paused at its publisher, and bad requests get a clear error to that client only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::Server;
use rakor_proto::{ErrorCode, ParticipantId, ServerMessage, TrackId, TrackKind};
use std::time::Duration;

const MEDIA_WAIT: Duration = Duration::from_secs(20);
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// The grace (5 s) plus the time of an offer.
const REMOVAL_WAIT: Duration = Duration::from_secs(12);

async fn join(server: &Server, identity: &str, publish: bool, on_demand: bool) -> Client {
    let token = server.token("rakor", identity, "participant").unwrap();
    let opts = ClientOptions::new(server.ws_url(), token)
        .publish(publish, publish)
        .video_on_demand(on_demand);
    Client::connect(opts)
        .await
        .unwrap_or_else(|e| panic!("{identity} could not join: {e}"))
}

fn video(r: &Report, from: &ParticipantId) -> (u64, u64) {
    r.received_track(from, TrackKind::Video)
        .map_or((0, 0), |t| (t.packets, t.keyframes))
}

fn audio(r: &Report, from: &ParticipantId) -> u64 {
    r.received_track(from, TrackKind::Audio)
        .map_or(0, |t| t.packets)
}

/// `s` asks for `track` (a 320×180 tile): the offer that brings it, and its mid there.
async fn ask_for(s: &mut Client, track: &TrackId, what: &str) -> (String, String) {
    s.show_video(track, 320, 180).await.unwrap();
    let (sdp, tracks) = offer_where(s, |_, t| t.iter().any(|t| t.track_id == *track), what).await;
    let mid = tracks
        .iter()
        .find(|t| t.track_id == *track)
        .unwrap()
        .mid
        .clone();
    (sdp, mid)
}

/// `s` receives 30 video packets and a keyframe from `from` (its report then).
async fn video_arrives(s: &Client, from: &ParticipantId, what: &str) -> Report {
    s.wait_media(
        |r| video(r, from).0 >= 30 && video(r, from).1 >= 1,
        MEDIA_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The next subscriber offer matching `pred` (its SDP and tracks).
async fn offer_where(
    client: &mut Client,
    mut pred: impl FnMut(&str, &[rakor_proto::SubscribedTrack]) -> bool,
    what: &str,
) -> (String, Vec<rakor_proto::SubscribedTrack>) {
    let m = client
        .wait_for(
            |m| matches!(m, ServerMessage::Offer { sdp, tracks, .. } if pred(sdp, tracks)),
            REMOVAL_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("no offer {what}: {e}"));
    let ServerMessage::Offer { sdp, tracks, .. } = m else {
        unreachable!()
    };
    (sdp, tracks)
}

fn video_sections(sdp: &str) -> usize {
    sdp.lines().filter(|l| l.starts_with("m=video")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_is_added_when_asked_removed_after_the_grace_and_its_m_line_reused() {
    let server = Server::start().unwrap();
    let mut a = join(&server, "camat-kota", true, false).await;
    let b = join(&server, "dinkes", true, false).await;
    let mut s = join(&server, "dishub", false, true).await;
    let (pa, pb) = (a.participant_id().clone(), b.participant_id().clone());
    a.wait_published(MEDIA_WAIT).await.unwrap();
    b.wait_published(MEDIA_WAIT).await.unwrap();
    let va = a.local_track_id(TrackKind::Video).unwrap();
    let vb = b.local_track_id(TrackKind::Video).unwrap();

    // Audio is subscribed as usual; no video is in any offer S got.
    s.wait_media(|r| audio(r, &pa) >= 25 && audio(r, &pb) >= 25, MEDIA_WAIT)
        .await
        .unwrap();
    for m in s.drain_events() {
        if let ServerMessage::Offer { sdp, tracks, .. } = m {
            assert_eq!(
                video_sections(&sdp),
                0,
                "video before it was asked for:\n{sdp}"
            );
            assert!(
                tracks.iter().all(|t| t.kind == TrackKind::Audio),
                "{tracks:?}"
            );
        }
    }
    assert_eq!(video(&s.stats(), &pa).0, 0);
    // Nobody asked for A's video (B, without video on demand, gets it but S does not): it
    // keeps flowing to B; for a track only on-demand clients could want, see below.

    // S asks for A's video: an offer with it follows, then its media with a keyframe.
    let (sdp, mid_a) = ask_for(&mut s, &va, "with A's video").await;
    assert_eq!(video_sections(&sdp), 1, "{sdp}");
    let r = video_arrives(&s, &pa, "A's video did not arrive after asking").await;
    assert_eq!(r.total_mismatches(), 0, "{}", r.to_json());
    assert_eq!(video(&r, &pb).0, 0, "B's video was never asked for");

    // Hidden: forwarding stops at once, and after the grace the track leaves the offer (its
    // m-line inactive).
    s.hide_video(&va).await.unwrap();
    let (sdp, tracks) = offer_where(
        &mut s,
        |_, t| t.iter().all(|t| t.track_id != va),
        "without A's video",
    )
    .await;
    assert!(
        tracks.iter().all(|t| t.kind == TrackKind::Audio),
        "{tracks:?}"
    );
    assert_eq!(video_sections(&sdp), 1, "{sdp}");
    let section = sdp.split("m=").find(|m| m.starts_with("video")).unwrap();
    assert!(
        section.contains("a=inactive"),
        "removed video m-line not inactive:\n{section}"
    );
    let stopped = video(&s.stats(), &pa).0;

    // B's video next: the same m-line (mid) is reused, the SDP does not grow, media arrives.
    let (sdp, mid_b) = ask_for(&mut s, &vb, "with B's video").await;
    assert_eq!(video_sections(&sdp), 1, "the m-line was not reused:\n{sdp}");
    assert_eq!(mid_b, mid_a, "B's video should take A's old mid");
    let r = video_arrives(&s, &pb, "B's video did not arrive on the reused m-line").await;
    assert_eq!(r.total_mismatches(), 0, "{}", r.to_json());
    assert!(
        video(&r, &pa).0 <= stopped + 10,
        "A's removed video still arrives"
    );
    // A keeps sending its video (B, an ordinary client, shows it).
    let before = b.stats();
    b.wait_media(
        |r| video(r, &pa).0 >= video(&before, &pa).0 + 30,
        MEDIA_WAIT,
    )
    .await
    .unwrap();
    let _ = a.drain_events();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_only_on_demand_clients_could_want_is_paused_until_asked() {
    let server = Server::start().unwrap();
    let mut a = join(&server, "camat-kota", true, false).await;
    let s = join(&server, "dishub", false, true).await;
    let pa = a.participant_id().clone();
    // Paused as soon as it is published (S, on demand, has not asked): the publisher may not
    // even have sent a video packet yet.
    let m = a
        .wait_for(
            |m| matches!(m, ServerMessage::PublisherPause { paused: true, .. }),
            MEDIA_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("a video nobody asked for was not paused: {e}"));
    let va = a.local_track_id(TrackKind::Video).unwrap();
    assert!(
        matches!(&m, ServerMessage::PublisherPause { track_id, .. } if *track_id == va),
        "{m:?}"
    );
    s.show_video(&va, 640, 360).await.unwrap();
    a.wait_for(
        |m| matches!(m, ServerMessage::PublisherPause { track_id, paused: false } if *track_id == va),
        EVENT_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("asking did not resume the publisher: {e}"));
    let r = video_arrives(&s, &pa, "A's video did not arrive after the resume").await;
    assert_eq!(r.total_mismatches(), 0, "{}", r.to_json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_forged_audio_and_too_many_requests_are_refused_to_that_client_only() {
    let server = Server::start_with_env(&[], &[("RAKOR_MEDIA_MAX_VIDEOS_ON_DEMAND", "1")]).unwrap();
    let a = join(&server, "camat-kota", true, false).await;
    let b = join(&server, "dinkes", true, false).await;
    let mut s = join(&server, "dishub", false, true).await;
    let (pa, pb) = (a.participant_id().clone(), b.participant_id().clone());
    a.wait_published(MEDIA_WAIT).await.unwrap();
    b.wait_published(MEDIA_WAIT).await.unwrap();
    s.wait_media(|r| audio(r, &pa) >= 10 && audio(r, &pb) >= 10, MEDIA_WAIT)
        .await
        .unwrap();
    let va = a.local_track_id(TrackKind::Video).unwrap();
    let vb = b.local_track_id(TrackKind::Video).unwrap();
    let audio_a = a.local_track_id(TrackKind::Audio).unwrap();
    for (track, code) in [
        (TrackId("TR_forged000000".into()), ErrorCode::UnknownTrack),
        (TrackId(format!("{}x", va.0)), ErrorCode::UnknownTrack),
        (audio_a, ErrorCode::BadRequest),
    ] {
        s.show_video(&track, 320, 180).await.unwrap();
        let e = s
            .wait_for(|m| matches!(m, ServerMessage::Error { .. }), EVENT_WAIT)
            .await
            .unwrap_or_else(|e| panic!("no error for {track}: {e}"));
        assert!(
            matches!(&e, ServerMessage::Error { code: c, .. } if *c == code),
            "{track}: {e:?}"
        );
    }
    // One video is allowed (the limit is 1 here); a second is `limit_exceeded`.
    s.show_video(&va, 320, 180).await.unwrap();
    s.show_video(&vb, 320, 180).await.unwrap();
    let e = s
        .wait_for(|m| matches!(m, ServerMessage::Error { .. }), EVENT_WAIT)
        .await
        .unwrap();
    assert!(
        matches!(&e, ServerMessage::Error { code: ErrorCode::LimitExceeded, message, .. } if message.contains("at most 1")),
        "{e:?}"
    );
    // S's session is intact: the video it asked for arrives, B's does not.
    let r = s
        .wait_media(
            |r| video(r, &pa).0 >= 30 && video(r, &pa).1 >= 1,
            MEDIA_WAIT,
        )
        .await
        .unwrap();
    assert_eq!(video(&r, &pb).0, 0);
    // The others saw no error and still receive each other.
    for (c, from) in [(&a, &pb), (&b, &pa)] {
        let before = c.stats();
        c.wait_media(
            |r| video(r, from).0 >= video(&before, from).0 + 30,
            MEDIA_WAIT,
        )
        .await
        .unwrap();
    }
    let mut a = a;
    let mut b = b;
    for c in [&mut a, &mut b] {
        assert!(
            !c.drain_events()
                .iter()
                .any(|m| matches!(m, ServerMessage::Error { .. })),
            "an error reached another participant"
        );
    }
}
