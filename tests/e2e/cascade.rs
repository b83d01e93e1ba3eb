//! The cascade (issue 17, `cluster.cascade = true`): one room with sites on three real `rakor`
//! nodes sharing one Redis and one PostgreSQL. Every participant joins its own node; each
//! non-owner node runs one relay leg to the room's owner (A). Every site receives the audio and
//! video of the sites on the other nodes (exact payloads, keyframes), and `/metrics` shows that
//! each track crossed each node boundary once: node B relays exactly the 6 tracks of A's and C's
//! sites in and its own site's 2 out, and C likewise. Needs `RAKOR_TEST_REDIS_URL` and
//! `RAKOR_TEST_POSTGRES_URL` (tests/run.sh starts both); without them the test says so and does
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_e2e::cluster::{cascade_metric, has_media_from, seen_as, CascadeSetup};
use std::time::{Duration, Instant};

const MEDIA_WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_room_every_track_crosses_each_boundary_once() {
    let Some(setup) = CascadeSetup::from_env("cascade e2e test") else {
        return;
    };
    let suffix = &setup.suffix;
    let ids = [setup.node_id("a"), setup.node_id("b"), setup.node_id("c")];
    let start = |id: &str| setup.start(id).unwrap();
    let nodes = [start(&ids[0]), start(&ids[1]), start(&ids[2])];
    let room = format!("gubernur-{suffix}");
    let connect = |url: String, sub: &'static str, role: &'static str| {
        setup.join_publishing(url, &room, sub, role)
    };

    // The governor's command room joins A first: A owns the room (a cascade keeps a new room
    // where its first join arrives). A site of A, then one site on B and one on C, each on
    // its own node (no redirect).
    let host = connect(nodes[0].ws_url(), "gubernur", "host").await;
    let site_a = connect(nodes[0].ws_url(), "kab-semarang", "participant").await;
    let site_b = connect(nodes[1].ws_url(), "kab-kendal", "participant").await;
    let site_c = connect(nodes[2].ws_url(), "kota-solo", "participant").await;
    let clients = [
        ("gubernur", 0, &host),
        ("kab-semarang", 0, &site_a),
        ("kab-kendal", 1, &site_b),
        ("kota-solo", 2, &site_c),
    ];
    // Every site receives every site of the other nodes (and of its own), exact payloads.
    for (rx_name, _, rx) in clients {
        for (tx_name, _, _) in clients.iter().filter(|(n, ..)| *n != rx_name) {
            let from = seen_as(rx, tx_name, MEDIA_WAIT).await;
            let r = rx
                .wait_media(|r| has_media_from(r, &from), MEDIA_WAIT)
                .await
                .unwrap_or_else(|e| panic!("{rx_name} did not receive {tx_name}'s media: {e}"));
            assert_eq!(r.total_mismatches(), 0, "{}", r.to_json());
        }
    }
    // Each site appears once on every node (one republisher, no loop back to its origin).
    for (rx_name, _, rx) in clients {
        for (tx_name, ..) in clients {
            let suffix = format!("/{tx_name}");
            let n = rx
                .participants()
                .iter()
                .filter(|p| p.identity == tx_name || p.identity.ends_with(&suffix))
                .count();
            let want = usize::from(tx_name != rx_name);
            assert_eq!(
                n,
                want,
                "{rx_name} sees {tx_name} {n} times: {:?}",
                rx.participants()
            );
        }
    }
    // Each track crossed each node boundary once: B and C each relay, on their one leg to the
    // owner A, the 6 tracks of the three sites not on them in, and their own site's 2 out.
    for (i, node) in nodes.iter().enumerate().skip(1) {
        for (dir, want) in [("in", 6), ("out", 2)] {
            let now = cascade_metric(node, "rakor_cascade_tracks", &ids[0], dir);
            let total = cascade_metric(node, "rakor_cascade_tracks_total", &ids[0], dir);
            assert_eq!((now, total), (want, want), "node {i} {dir}");
            assert!(cascade_metric(node, "rakor_cascade_bytes_total", &ids[0], dir) > 0);
        }
    }
    // Inter-node bandwidth over a measured window: what the legs carried vs what sending every
    // track to every remote participant would carry.
    let sum = || -> u64 {
        (1..3)
            .flat_map(|n| ["in", "out"].map(|d| (n, d)))
            .map(|(n, d)| cascade_metric(&nodes[n], "rakor_cascade_bytes_total", &ids[0], d))
            .sum()
    };
    let b0 = sum();
    let window = Duration::from_secs(5);
    tokio::time::sleep(window).await; // a measurement window, not a synchronisation
    let relayed = sum() - b0;
    // Per track and second: the legs carry 16 track crossings (B: 6 in + 2 out, C: the same).
    let per_crossing = relayed as f64 / 16.0;
    // Every track to every remote participant: A's 4 tracks to 2 remote sites, B's 2 to 3,
    // C's 2 to 3 = 20 deliveries across nodes (one site per node here, so nearly the same).
    let naive = per_crossing * 20.0;
    eprintln!(
        "cascade: {:.0} kbit/s across nodes over {window:?} (16 track crossings); every track to every remote participant: {:.0} kbit/s (20 deliveries); ratio {:.2}",
        relayed as f64 * 8.0 / 1000.0 / window.as_secs_f64(),
        naive * 8.0 / 1000.0 / window.as_secs_f64(),
        relayed as f64 / naive
    );
    // Leaving B's only site stops B's legs: its republishers leave A.
    site_b.leave().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let on_a = host
            .participants()
            .iter()
            .filter(|p| p.identity.contains("kab-kendal"))
            .count();
        if on_a == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "B's republisher stayed on A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
