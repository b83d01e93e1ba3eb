//! Room-wide spotlight across the cascade (issue 17, `crates/server/src/cascade_room.rs`):
//! three real `rakor` nodes (one Redis, one PostgreSQL), the room owned by A.
//!
//! - The host on A spotlights a site on A: sites on B and C get `spotlight` naming that site
//!   under their own node's participant id (the republisher `cascade/<A>/<identity>`), and a
//!   site on C keeps receiving the spotlight site's video (exact payloads, a keyframe).
//! - A host on C spotlights B's site: the owner takes it over and every node applies it (A's
//!   site sees B's republisher, B's site sees itself).
//! - A forged id from a host is refused to that host only; clearing clears everywhere.
//!
//! Needs `RAKOR_TEST_REDIS_URL` and `RAKOR_TEST_POSTGRES_URL` (tests/run.sh starts both);
//! without them the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::Client;
use rakor_e2e::cluster::{has_media_from, seen_as, CascadeSetup};
use rakor_proto::{ClientMessage, ErrorCode, ParticipantId, ServerMessage, TrackKind};
use std::time::Duration;

const MEDIA_WAIT: Duration = Duration::from_secs(30);
const EVENT_WAIT: Duration = Duration::from_secs(15);

/// Wait for `spotlight` naming `want` (None = cleared) at `rx`.
async fn spotlight_at(rx: &mut Client, who: &str, want: Option<&ParticipantId>) {
    let want = want.cloned();
    let got = rx
        .wait_for(
            |m| matches!(m, ServerMessage::Spotlight { participant_id, .. } if *participant_id == want),
            EVENT_WAIT,
        )
        .await;
    assert!(
        got.is_ok(),
        "{who} did not get spotlight {want:?}: {got:?}; its spotlight is {:?}",
        rx.spotlight()
    );
    assert_eq!(rx.spotlight(), want, "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_spotlight_is_room_wide_across_three_nodes() {
    let Some(setup) = CascadeSetup::from_env("cascade_room e2e test") else {
        return;
    };
    let suffix = &setup.suffix;
    let ids = [setup.node_id("a"), setup.node_id("b"), setup.node_id("c")];
    let start = |id: &str| setup.start(id).unwrap();
    let nodes = [start(&ids[0]), start(&ids[1]), start(&ids[2])];
    let room = format!("spotlight-{suffix}");
    let connect = |url: String, sub: &'static str, role: &'static str| {
        setup.join_publishing(url, &room, sub, role)
    };

    // A owns the room (its first join). The governor and a site on A, a site on B, a site
    // and the mayor (a host too) on C.
    let host = connect(nodes[0].ws_url(), "gubernur", "host").await;
    let mut site_a = connect(nodes[0].ws_url(), "kab-semarang", "participant").await;
    let mut site_b = connect(nodes[1].ws_url(), "kab-kendal", "participant").await;
    let mut site_c = connect(nodes[2].ws_url(), "kota-solo", "participant").await;
    let mut host_c = connect(nodes[2].ws_url(), "wali-kota", "host").await;

    // Everyone sees everyone (the legs are up) before the spotlight is set.
    let a_on_c = seen_as(&site_c, "kab-semarang", MEDIA_WAIT).await;
    let a_on_b = seen_as(&site_b, "kab-semarang", MEDIA_WAIT).await;
    site_c
        .wait_media(|r| has_media_from(r, &a_on_c), MEDIA_WAIT)
        .await
        .unwrap_or_else(|e| panic!("C did not receive A's site: {e}"));
    let b_on_a = seen_as(&site_a, "kab-kendal", MEDIA_WAIT).await;
    let b_on_c = seen_as(&host_c, "kab-kendal", MEDIA_WAIT).await;
    // The mayor's republisher is on A (so its commands can be forwarded there).
    seen_as(&host, "wali-kota", MEDIA_WAIT).await;

    // 1. The host on A spotlights the site on A: B and C apply it under their own ids.
    let a_id = site_a.participant_id().clone();
    host.send(&ClientMessage::Spotlight {
        participant_id: Some(a_id.clone()),
    })
    .await
    .unwrap();
    spotlight_at(&mut site_a, "A's site", Some(&a_id)).await;
    spotlight_at(&mut site_b, "B's site", Some(&a_on_b)).await;
    spotlight_at(&mut site_c, "C's site", Some(&a_on_c)).await;
    assert_ne!(a_on_c, a_id, "C names A's site by its own republisher id");
    // C's site keeps receiving the spotlight site's video: exact payloads, a keyframe, at
    // least 60 more packets after the spotlight.
    let before = site_c
        .stats()
        .received_track(&a_on_c, TrackKind::Video)
        .map(|v| v.packets)
        .unwrap_or(0);
    let r = site_c
        .wait_media(
            |r| {
                r.received_track(&a_on_c, TrackKind::Video)
                    .is_some_and(|v| v.packets >= before + 60 && v.keyframes >= 1)
            },
            MEDIA_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("C's site lost the spotlight video: {e}"));
    assert_eq!(r.total_mismatches(), 0, "{}", r.to_json());
    let v = r.received_track(&a_on_c, TrackKind::Video).unwrap();
    eprintln!(
        "C's site: the spotlight site's video {} packets ({} exact), layer packets {:?}, last layer {:?}",
        v.packets, v.payload_matches, v.layer_packets, v.last_layer
    );

    // 2. A forged id from a host is refused to that host only, changing nothing.
    host_c
        .send(&ClientMessage::Spotlight {
            participant_id: Some(ParticipantId("PA_forged".into())),
        })
        .await
        .unwrap();
    let err = host_c
        .wait_for(|m| matches!(m, ServerMessage::Error { .. }), EVENT_WAIT)
        .await
        .unwrap();
    assert!(
        matches!(
            &err,
            ServerMessage::Error {
                code: ErrorCode::UnknownParticipant,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(site_c.spotlight(), Some(a_on_c.clone()));

    // 3. The mayor (a host on C) spotlights B's site: the owner takes it, every node applies it.
    host_c
        .send(&ClientMessage::Spotlight {
            participant_id: Some(b_on_c.clone()),
        })
        .await
        .unwrap();
    let b_id = site_b.participant_id().clone();
    spotlight_at(&mut site_c, "C's site", Some(&b_on_c)).await;
    spotlight_at(&mut site_a, "A's site", Some(&b_on_a)).await;
    spotlight_at(&mut site_b, "B's site", Some(&b_id)).await;
    let b_on_host = seen_as(&host, "kab-kendal", MEDIA_WAIT).await;
    assert_eq!(host.spotlight(), Some(b_on_host), "the owner has it");

    // 4. The host on A clears it: cleared everywhere.
    host.send(&ClientMessage::Spotlight {
        participant_id: None,
    })
    .await
    .unwrap();
    spotlight_at(&mut site_a, "A's site", None).await;
    spotlight_at(&mut site_b, "B's site", None).await;
    spotlight_at(&mut site_c, "C's site", None).await;
    spotlight_at(&mut host_c, "C's host", None).await;
}
