//! Simulcast: a `rakor-client` publisher sends three VP8 layers (rid q/h/f, each a different
//! pre-encoded asset, so a receiver knows the layer by the payload bytes); each subscriber gets
//! the one layer its tile size asks for (`track_settings`), switches at a keyframe of the new
//! layer, and sees one continuous stream (no sequence gaps, exact payloads).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::Server;
use rakor_proto::{ClientMessage, ParticipantId, ServerMessage, TrackId, TrackKind};
use std::time::Duration;

const MEDIA_WAIT: Duration = Duration::from_secs(20);

async fn subscriber(server: &Server, identity: &str) -> Client {
    let token = server.token("rakor", identity, "participant").unwrap();
    Client::connect(ClientOptions::new(server.ws_url(), token).receive_only())
        .await
        .unwrap_or_else(|e| panic!("{identity} could not join: {e}"))
}

/// A site publishing video as three simulcast layers.
async fn simulcast_publisher(server: &Server) -> Client {
    let token = server.token("rakor", "camat-kota", "participant").unwrap();
    Client::connect(
        ClientOptions::new(server.ws_url(), token)
            .publish(false, true)
            .simulcast(true),
    )
    .await
    .unwrap()
}

fn layers(r: &Report, from: &ParticipantId) -> [u64; 3] {
    r.received_track(from, TrackKind::Video)
        .map_or([0; 3], |t| t.layer_packets)
}

fn video(r: &Report, from: &ParticipantId) -> (u64, u64, u64, Option<u8>) {
    r.received_track(from, TrackKind::Video)
        .map_or((0, 0, 0, None), |t| {
            (t.packets, t.keyframes, t.seq_gaps, t.last_layer)
        })
}

async fn tile(client: &Client, track: &TrackId, height: u32) {
    client
        .send(&ClientMessage::TrackSettings {
            track_id: track.clone(),
            visible: true,
            width: height * 16 / 9,
            height,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_gets_the_layer_its_tile_needs_and_switches_cleanly() {
    let server = Server::start().unwrap();
    let publisher = simulcast_publisher(&server).await;
    let p = publisher.participant_id().clone();
    let wall = subscriber(&server, "command-room-wall").await;
    let main = subscriber(&server, "dinkes").await;
    publisher.wait_published(MEDIA_WAIT).await.unwrap();
    let track = publisher.local_track_id(TrackKind::Video).unwrap();
    // Both receive something first (the subscriber offer is answered), then say their sizes.
    for s in [&wall, &main] {
        s.wait_media(|r| video(r, &p).0 > 0, MEDIA_WAIT)
            .await
            .unwrap();
    }
    tile(&wall, &track, 180).await; // a wall tile: the low layer
    tile(&main, &track, 720).await; // a main view: the high layer

    // From the switch on, each gets only its layer.
    let w = wall
        .wait_media(|r| video(r, &p).3 == Some(0), MEDIA_WAIT)
        .await
        .unwrap_or_else(|e| panic!("wall never got the low layer: {e}"));
    let m = main
        .wait_media(|r| video(r, &p).3 == Some(2), MEDIA_WAIT)
        .await
        .unwrap_or_else(|e| panic!("main view never got the high layer: {e}"));
    let (w0, m0) = (layers(&w, &p), layers(&m, &p));
    let w = wall
        .wait_media(|r| layers(r, &p)[0] >= w0[0] + 60, MEDIA_WAIT)
        .await
        .unwrap();
    let m = main
        .wait_media(|r| layers(r, &p)[2] >= m0[2] + 60, MEDIA_WAIT)
        .await
        .unwrap();
    let (w1, m1) = (layers(&w, &p), layers(&m, &p));
    assert_eq!(
        [w1[1] - w0[1], w1[2] - w0[2]],
        [0, 0],
        "wall got other layers: {w0:?} -> {w1:?}"
    );
    assert_eq!(
        [m1[0] - m0[0], m1[1] - m0[1]],
        [0, 0],
        "main got other layers: {m0:?} -> {m1:?}"
    );

    // The wall's tile grows: it switches up at a keyframe of the high layer and the stream
    // stays continuous (no sequence gap, every payload exact, frames keep decoding).
    let before = wall.stats();
    let (_, k0, g0, _) = video(&before, &p);
    tile(&wall, &track, 720).await;
    let after = wall
        .wait_media(
            |r| video(r, &p).3 == Some(2) && layers(r, &p)[2] >= layers(&before, &p)[2] + 60,
            MEDIA_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("wall did not switch up: {e}"));
    let (_, k1, g1, _) = video(&after, &p);
    assert!(
        k1 > k0,
        "the switch did not start at a keyframe ({k0} -> {k1})"
    );
    assert!(
        g1 - g0 <= 2,
        "the switch left a sequence gap of {} packets",
        g1 - g0
    );
    assert_eq!(after.total_mismatches(), 0, "{}", after.to_json());
    let sent = publisher.stats();
    let s = sent.sent_track(TrackKind::Video).unwrap();
    // The low and high layers were sent; the middle one only while someone could need it
    // (dynacast: nobody's tile asks for it here).
    assert!(
        s.layer_packets[0] > 0 && s.layer_packets[2] > 0,
        "the publisher sends the needed layers: {:?}",
        s.layer_packets
    );
}

fn sent_layers(c: &Client) -> [u64; 3] {
    c.stats()
        .sent_track(TrackKind::Video)
        .map_or([0; 3], |t| t.layer_packets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_nobody_needs_are_paused_at_the_publisher() {
    let server = Server::start().unwrap();
    let mut publisher = simulcast_publisher(&server).await;
    let p = publisher.participant_id().clone();
    let wall = subscriber(&server, "command-room-wall").await;
    publisher.wait_published(MEDIA_WAIT).await.unwrap();
    let track = publisher.local_track_id(TrackKind::Video).unwrap();
    wall.wait_media(|r| video(r, &p).0 > 0, MEDIA_WAIT)
        .await
        .unwrap();

    // Only a small tile shows it: only `q` is needed, `h` and `f` stop at the publisher.
    tile(&wall, &track, 180).await;
    publisher
        .wait_for(
            |m| matches!(m, ServerMessage::PublisherLayers { track_id, rids } if *track_id == track && rids == &["q"]),
            MEDIA_WAIT,
        )
        .await
        .unwrap();
    let before = sent_layers(&publisher);
    let r0 = wall.stats();
    wall.wait_media(|r| layers(r, &p)[0] >= layers(&r0, &p)[0] + 40, MEDIA_WAIT)
        .await
        .unwrap();
    let after = sent_layers(&publisher);
    assert!(
        after[1] - before[1] <= 6 && after[2] - before[2] <= 6,
        "unneeded layers kept being sent: {before:?} -> {after:?}"
    );
    assert!(
        after[0] > before[0],
        "the needed layer stopped: {before:?} -> {after:?}"
    );

    // The tile grows: `f` is needed again, the publisher resumes it and the wall switches up.
    tile(&wall, &track, 720).await;
    publisher
        .wait_for(
            |m| matches!(m, ServerMessage::PublisherLayers { track_id, rids } if *track_id == track && rids.iter().any(|r| r == "f")),
            MEDIA_WAIT,
        )
        .await
        .unwrap();
    let r1 = wall.stats();
    wall.wait_media(
        |r| video(r, &p).3 == Some(2) && layers(r, &p)[2] >= layers(&r1, &p)[2] + 30,
        MEDIA_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("the resumed high layer never reached the wall: {e}"));
}
