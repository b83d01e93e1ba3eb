//! The cascade's relay legs (issue 17), on real `rakor` nodes sharing one Redis and one
//! PostgreSQL:
//!
//! - a leg carries the simulcast layer the far node needs: a simulcast publisher on node A
//!   (the room's owner), a subscriber on node B; B's relay leg asks A for the layer B's
//!   subscriber's tile needs (`track_demand` → the relay subscriber's `track_settings`): a small
//!   tile → only the low layer crosses (the publisher is told to send only `q`, B's subscriber
//!   receives layer 0, the leg's bytes are small); the tile grows → the high layer crosses; the
//!   tile hidden → nothing crosses (the publisher pauses). The legs' relay subscribers (role
//!   `relay`) are not in B's participant list;
//! - with video on demand on the far node, a video nobody there asked for does not cross;
//! - legs follow a new owner: the owner of a three-node room is killed with SIGKILL; the sites
//!   on the two other nodes receive each other again without rejoining.
//!
//! Needs `RAKOR_TEST_REDIS_URL` and `RAKOR_TEST_POSTGRES_URL` (tests/run.sh starts both);
//! without them the tests say so and do nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::cluster::{cascade_metric, has_media_from, seen_as, CascadeSetup};
use rakor_e2e::Server;
use rakor_proto::{ClientMessage, ParticipantId, Role, ServerMessage, TrackId, TrackKind};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn video(r: &Report, from: &ParticipantId) -> (u64, Option<u8>, [u64; 3]) {
    r.received_track(from, TrackKind::Video)
        .map_or((0, None, [0; 3]), |t| {
            (t.packets, t.last_layer, t.layer_packets)
        })
}

async fn tile(client: &Client, track: &TrackId, visible: bool, height: u32) {
    client
        .send(&ClientMessage::TrackSettings {
            track_id: track.clone(),
            visible,
            width: height * 16 / 9,
            height,
        })
        .await
        .unwrap();
}

/// Leg bytes per second from A into B over a short window (a measurement, not a wait).
async fn leg_rate(b: &Server, a_id: &str) -> f64 {
    let window = Duration::from_secs(3);
    let b0 = cascade_metric(b, "rakor_cascade_bytes_total", a_id, "in");
    tokio::time::sleep(window).await;
    (cascade_metric(b, "rakor_cascade_bytes_total", a_id, "in") - b0) as f64 / window.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leg_carries_the_layer_the_far_tile_needs_and_nothing_when_hidden() {
    let Some(setup) = CascadeSetup::from_env("cascade_legs e2e test") else {
        return;
    };
    let ids = [setup.node_id("a"), setup.node_id("b")];
    let (a, b) = (setup.start(&ids[0]).unwrap(), setup.start(&ids[1]).unwrap());
    let room = format!("gubernur-{}", setup.suffix);
    let token = |sub: &str| setup.token(&room, sub, "participant").unwrap();
    // The publisher joins A first: A owns the room.
    let mut publisher = Client::connect(
        ClientOptions::new(a.ws_url(), token("camat-kota"))
            .publish(false, true)
            .simulcast(true),
    )
    .await
    .unwrap();
    publisher.wait_published(WAIT).await.unwrap();
    let wall = Client::connect(ClientOptions::new(b.ws_url(), token("dinkes-wall")).receive_only())
        .await
        .unwrap();
    // B's subscriber sees the publisher as the relay's republisher, with one video track.
    let deadline = Instant::now() + WAIT;
    let (from, track) = loop {
        let found = wall.participants().into_iter().find_map(|p| {
            let v = p.tracks.iter().find(|t| t.kind == TrackKind::Video)?;
            p.identity
                .ends_with("/camat-kota")
                .then(|| (p.id.clone(), v.id.clone()))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < deadline, "{:?}", wall.participants());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wall.wait_media(|r| video(r, &from).0 > 0, WAIT)
        .await
        .unwrap_or_else(|e| panic!("no relayed video on B: {e}"));
    // The legs' relay subscribers are hidden (role `relay`): B's subscriber sees the publisher
    // (as its republisher) and nobody else.
    let others = wall.participants();
    assert!(
        others.len() == 1 && others.iter().all(|p| p.role != Role::Relay),
        "B's subscriber sees more than the publisher: {others:?}"
    );

    // A small tile on B: the leg asks for the low layer; the publisher needs to send only `q`.
    tile(&wall, &track, true, 180).await;
    publisher
        .wait_for(
            |m| matches!(m, ServerMessage::PublisherLayers { rids, .. } if rids == &["q"]),
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("the leg kept asking for more than the low layer: {e}"));
    let r = wall
        .wait_media(|r| video(r, &from).1 == Some(0), WAIT)
        .await
        .unwrap_or_else(|e| panic!("B never got the low layer: {e}"));
    let l0 = video(&r, &from).2;
    let r = wall
        .wait_media(|r| video(r, &from).2[0] >= l0[0] + 60, WAIT)
        .await
        .unwrap();
    let l1 = video(&r, &from).2;
    assert_eq!(
        [l1[1] - l0[1], l1[2] - l0[2]],
        [0, 0],
        "other layers crossed: {l0:?} -> {l1:?}"
    );
    let low_rate = leg_rate(&b, &ids[0]).await;

    // The tile grows: the high layer crosses (earlier `publisher_layers` are dropped first).
    publisher.drain_events();
    tile(&wall, &track, true, 720).await;
    publisher
        .wait_for(
            |m| matches!(m, ServerMessage::PublisherLayers { rids, .. } if rids.iter().any(|r| r == "f")),
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("the high layer was never asked for: {e}"));
    let r = wall
        .wait_media(|r| video(r, &from).1 == Some(2), WAIT)
        .await
        .unwrap_or_else(|e| panic!("B never got the high layer: {e}"));
    let h0 = video(&r, &from).2;
    wall.wait_media(|r| video(r, &from).2[2] >= h0[2] + 60, WAIT)
        .await
        .unwrap();
    let high_rate = leg_rate(&b, &ids[0]).await;
    eprintln!(
        "cascade leg A→B for one simulcast camera: {:.0} kbit/s for a 180p tile, {:.0} kbit/s for a 720p tile",
        low_rate * 8.0 / 1000.0,
        high_rate * 8.0 / 1000.0
    );
    assert!(
        low_rate * 2.0 < high_rate,
        "the low layer's leg ({low_rate:.0} B/s) is not much smaller than the high one's ({high_rate:.0} B/s)"
    );

    // Hidden on B: the leg asks for nothing, the publisher pauses (dynacast across nodes) and
    // the leg carries no video.
    tile(&wall, &track, false, 720).await;
    publisher
        .wait_for(
            |m| matches!(m, ServerMessage::PublisherPause { paused: true, .. }),
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("the publisher was not paused: {e}"));
    let hidden_rate = leg_rate(&b, &ids[0]).await;
    assert!(
        hidden_rate < low_rate / 10.0,
        "video kept crossing while hidden: {hidden_rate:.0} B/s"
    );
    // Shown again: it resumes.
    tile(&wall, &track, true, 180).await;
    let r0 = wall.stats();
    wall.wait_media(
        |r| video(r, &from).2[0] >= video(&r0, &from).2[0] + 30,
        WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("the video did not come back: {e}"));
}

/// The participant id under which `rx` sees the site `identity` through a relay
/// (`cascade/<origin>/<identity>`), other than `not`, once it is there.
async fn relayed_as(rx: &Client, identity: &str, not: Option<&ParticipantId>) -> ParticipantId {
    let deadline = Instant::now() + WAIT;
    let suffix = format!("/{identity}");
    loop {
        if let Some(p) = rx
            .participants()
            .into_iter()
            .find(|p| p.identity.ends_with(&suffix) && Some(&p.id) != not)
        {
            return p.id;
        }
        assert!(
            Instant::now() < deadline,
            "{identity} never appeared (again): {:?}",
            rx.participants()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legs_follow_a_new_owner_after_the_owner_s_kill_9() {
    let Some(setup) = CascadeSetup::from_env("cascade_legs e2e test") else {
        return;
    };
    let ids = [setup.node_id("a"), setup.node_id("b"), setup.node_id("c")];
    let start = |id: &str| setup.start(id).unwrap();
    let mut a = start(&ids[0]);
    let (b, c) = (start(&ids[1]), start(&ids[2]));
    let room = format!("gubernur-{}", setup.suffix);
    let connect = |url: String, sub: &'static str, role: &'static str| {
        setup.join_publishing(url, &room, sub, role)
    };
    // The governor joins A first: A owns the room; a site on B and one on C.
    let _host = connect(a.ws_url(), "gubernur", "host").await;
    let site_b = connect(b.ws_url(), "kab-kendal", "participant").await;
    let site_c = connect(c.ws_url(), "kota-solo", "participant").await;
    let b_on_c = relayed_as(&site_c, "kab-kendal", None).await;
    let c_on_b = relayed_as(&site_b, "kota-solo", None).await;
    for (rx, from) in [(&site_c, &b_on_c), (&site_b, &c_on_b)] {
        rx.wait_media(|r| has_media_from(r, from), WAIT)
            .await
            .unwrap_or_else(|e| panic!("no media through the owner: {e}"));
    }

    // The owner dies. B and C find out through Redis; one takes the room over, the other's
    // legs go to it; both sites stay joined and receive each other again.
    let killed_at = Instant::now();
    a.signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .unwrap();
    let b_on_c2 = relayed_as(&site_c, "kab-kendal", Some(&b_on_c)).await;
    let c_on_b2 = relayed_as(&site_b, "kota-solo", Some(&c_on_b)).await;
    for (rx, from) in [(&site_c, &b_on_c2), (&site_b, &c_on_b2)] {
        rx.wait_media(|r| has_media_from(r, from), WAIT)
            .await
            .unwrap_or_else(|e| panic!("no media after the owner's death: {e}"));
        assert_eq!(rx.stats().total_mismatches(), 0);
    }
    eprintln!(
        "cascade: the sites on the surviving nodes receive each other again {:?} after the owner's kill -9 (no rejoin)",
        killed_at.elapsed()
    );
    assert!(!site_b.is_closed() && !site_c.is_closed());
}

/// With video on demand the far node asks for a video only when someone there shows it. A
/// relayed video that nobody on the far node has asked for crosses nothing (the far node's
/// own relay subscriber has it, paused, so its merged demand is "hidden"), until a
/// participant there asks for it; then the layer that tile needs comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_video_nobody_on_the_far_node_asks_for_does_not_cross() {
    let Some(setup) = CascadeSetup::from_env("cascade_legs e2e test") else {
        return;
    };
    let ids = [setup.node_id("a"), setup.node_id("b")];
    let (a, b) = (setup.start(&ids[0]).unwrap(), setup.start(&ids[1]).unwrap());
    let room = format!("gubernur-{}", setup.suffix);
    let token = |sub: &str| setup.token(&room, sub, "participant").unwrap();
    let publisher = Client::connect(
        ClientOptions::new(a.ws_url(), token("camat-kota"))
            .publish(false, true)
            .simulcast(true),
    )
    .await
    .unwrap();
    publisher.wait_published(WAIT).await.unwrap();
    // On B, a participant with video on demand that shows nobody yet.
    let wall = Client::connect(
        ClientOptions::new(b.ws_url(), token("dinkes-wall"))
            .receive_only()
            .video_on_demand(true),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let (from, track) = loop {
        let found = wall.participants().into_iter().find_map(|p| {
            let v = p.tracks.iter().find(|t| t.kind == TrackKind::Video)?;
            p.identity
                .ends_with("/camat-kota")
                .then(|| (p.id.clone(), v.id.clone()))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < deadline, "{:?}", wall.participants());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Nobody shows the video anywhere: the leg carries nothing once the relay's first
    // subscription (shown at the top layer until it hears from B) has been paused. Measured in
    // 3 s windows until one is quiet, at most WAIT.
    let deadline = Instant::now() + WAIT;
    let idle_rate = loop {
        let rate = leg_rate(&b, &ids[0]).await;
        if rate < 500.0 {
            break rate;
        }
        assert!(
            Instant::now() < deadline,
            "a video nobody on B asked for kept crossing: {rate:.0} B/s"
        );
    };
    assert_eq!(video(&wall.stats(), &from).0, 0);
    // B asks for a small tile: the low layer crosses.
    tile(&wall, &track, true, 180).await;
    let r = wall
        .wait_media(|r| video(r, &from).2[0] >= 30, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the video did not come once asked for: {e}"));
    assert_eq!(video(&r, &from).2[1..], [0, 0], "more than the low layer");
    let asked_rate = leg_rate(&b, &ids[0]).await;
    eprintln!(
        "cascade leg A→B, one simulcast camera with video on demand on B: {:.1} kbit/s while nobody on B asked for it, {:.0} kbit/s for a 180p tile",
        idle_rate * 8.0 / 1000.0,
        asked_rate * 8.0 / 1000.0
    );
    assert!(asked_rate > idle_rate * 10.0);
}

/// The load tool's pattern: a participant with video on demand on B asks for a relayed video
/// (a 180p tile) as soon as it is published there. Only the low layer crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tile_asked_for_at_once_on_the_far_node_brings_only_its_layer() {
    let Some(setup) = CascadeSetup::from_env("cascade_legs e2e test") else {
        return;
    };
    let ids = [setup.node_id("a"), setup.node_id("b")];
    let (a, b) = (setup.start(&ids[0]).unwrap(), setup.start(&ids[1]).unwrap());
    let room = format!("gubernur-{}", setup.suffix);
    let token = |sub: &str| setup.token(&room, sub, "participant").unwrap();
    let publisher = Client::connect(
        ClientOptions::new(a.ws_url(), token("camat-kota"))
            .publish(false, true)
            .simulcast(true),
    )
    .await
    .unwrap();
    publisher.wait_published(WAIT).await.unwrap();
    let wall = Client::connect(
        ClientOptions::new(b.ws_url(), token("dinkes-wall"))
            .receive_only()
            .video_on_demand(true),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let (from, track) = loop {
        let found = wall.participants().into_iter().find_map(|p| {
            let v = p.tracks.iter().find(|t| t.kind == TrackKind::Video)?;
            p.identity
                .ends_with("/camat-kota")
                .then(|| (p.id.clone(), v.id.clone()))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < deadline, "{:?}", wall.participants());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tile(&wall, &track, true, 180).await;
    let r = wall
        .wait_media(|r| video(r, &from).0 >= 60, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the video did not come: {e}"));
    let l0 = video(&r, &from).2;
    let r = wall
        .wait_media(
            |r| video(r, &from).2.iter().sum::<u64>() >= l0.iter().sum::<u64>() + 60,
            WAIT,
        )
        .await
        .unwrap();
    let l1 = video(&r, &from).2;
    let rate = leg_rate(&b, &ids[0]).await;
    eprintln!(
        "cascade leg A→B, 180p asked for at once on B: {:.0} kbit/s, layers {l0:?} -> {l1:?}",
        rate * 8.0 / 1000.0
    );
    assert_eq!(
        [l1[1] - l0[1], l1[2] - l0[2]],
        [0, 0],
        "more than the low layer crossed: {l0:?} -> {l1:?}"
    );
}

/// Three nodes, the layer the owner's wall needs: a site on B (simulcast) shown at 180p on A's
/// wall, while C holds the republishers of A's host and B's site. Republishers subscribe to
/// nothing; before they joined with video on demand, the server kept a never-negotiated, shown
/// leg without a size for every other relayed video on C, which counted as "top layer wanted"
/// there, was passed up through A, and made every relayed camera cross at its top layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_three_nodes_a_site_crosses_at_the_layer_the_owner_s_wall_needs() {
    let Some(setup) = CascadeSetup::from_env("cascade_legs e2e test") else {
        return;
    };
    let ids = [setup.node_id("a"), setup.node_id("b"), setup.node_id("c")];
    let a = setup.start(&ids[0]).unwrap();
    let b = setup.start(&ids[1]).unwrap();
    let c = setup.start(&ids[2]).unwrap();
    let room = format!("gubernur-{}", setup.suffix);
    let token = |sub: &str, role: &str| setup.token(&room, sub, role).unwrap();
    // The host joins A first: A owns the room. Everyone asks for video on demand, so the
    // only tile on B's site is the wall's below (a subscriber that reports no size wants the
    // top layer).
    let host = Client::connect(
        ClientOptions::new(a.ws_url(), token("gubernur", "host"))
            .publish(true, true)
            .video_on_demand(true),
    )
    .await
    .unwrap();
    host.wait_published(WAIT).await.unwrap();
    let site = Client::connect(
        ClientOptions::new(b.ws_url(), token("camat-kota", "participant"))
            .publish(false, true)
            .simulcast(true)
            .video_on_demand(true),
    )
    .await
    .unwrap();
    site.wait_published(WAIT).await.unwrap();
    // C: a site that shows nothing but the host; its node then republishes the host and B's site.
    let viewer = Client::connect(
        ClientOptions::new(c.ws_url(), token("puskesmas", "participant"))
            .receive_only()
            .video_on_demand(true),
    )
    .await
    .unwrap();
    seen_as(&viewer, "camat-kota", WAIT).await;
    let wall = Client::connect(
        ClientOptions::new(a.ws_url(), token("dinkes-wall", "participant"))
            .receive_only()
            .video_on_demand(true),
    )
    .await
    .unwrap();
    let from = seen_as(&wall, "camat-kota", WAIT).await;
    let deadline = Instant::now() + WAIT;
    let track = loop {
        let v = wall.participants().into_iter().find_map(|p| {
            (p.id == from)
                .then(|| p.tracks.into_iter().find(|t| t.kind == TrackKind::Video))
                .flatten()
        });
        if let Some(v) = v {
            break v.id;
        }
        assert!(Instant::now() < deadline, "{:?}", wall.participants());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tile(&wall, &track, true, 180).await;
    let r = wall
        .wait_media(|r| video(r, &from).0 >= 60, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the video did not come to A's wall: {e}"));
    // Let the demands settle through both hops (each is re-evaluated every 100 ms): another
    // 60 packets at A's wall, then measure what leaves B.
    let n = video(&r, &from).0;
    wall.wait_media(|r| video(r, &from).0 >= n + 60, WAIT)
        .await
        .unwrap();
    let window = Duration::from_secs(3);
    let out0 = cascade_metric(&b, "rakor_cascade_bytes_total", &ids[0], "out");
    tokio::time::sleep(window).await;
    let out1 = cascade_metric(&b, "rakor_cascade_bytes_total", &ids[0], "out");
    let kbit = (out1 - out0) as f64 * 8.0 / 1000.0 / window.as_secs_f64();
    eprintln!("cascade leg B→A, 180p on A's wall, C holding republishers: {kbit:.0} kbit/s");
    // The low layer of the looped asset is ~110-130 kbit/s, the top one ~480.
    assert!(
        kbit > 20.0 && kbit < 250.0,
        "B's leg carried {kbit:.0} kbit/s: not (only) the low layer"
    );
}
