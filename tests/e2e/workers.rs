//! Several media workers (`media.workers`) against the real binary on loopback: two rooms land
//! on different workers (each worker owns whole rooms, on its own port) and media flows in
//! each, with real WebRTC clients (`rakor-client`); `/metrics` sums the workers and shows each.
//! The ICE-TCP and one-port paths to a second worker are in `ice_tcp.rs` and `one_port.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::Server;
use rakor_proto::{ParticipantId, TrackKind};
use std::time::Duration;

const MEDIA_WAIT: Duration = Duration::from_secs(30);

async fn join(server: &Server, room: &str, identity: &str, publish: bool) -> Client {
    let token = server.token(room, identity, "participant").unwrap();
    Client::connect(ClientOptions::new(server.ws_url(), token).publish(publish, publish))
        .await
        .unwrap_or_else(|e| panic!("{identity} could not join: {e}"))
}

fn has_media_from(r: &Report, from: &ParticipantId, min: u64) -> bool {
    let v = r.received_track(from, TrackKind::Video);
    let a = r.received_track(from, TrackKind::Audio);
    v.is_some_and(|v| v.packets >= min && v.keyframes >= 1 && v.payload_matches >= min)
        && a.is_some_and(|a| a.packets >= min && a.payload_matches >= min)
}

fn metrics(server: &Server) -> String {
    let (status, body) = rakor_e2e::http_get(server.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    body
}

fn metric(body: &str, key: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{body}"))
}

fn worker(body: &str, name: &str, w: usize) -> u64 {
    metric(body, &format!("{name}{{worker=\"{w}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_on_two_workers_both_forward() {
    let server = Server::start_with_env(&[], &[("RAKOR_MEDIA_WORKERS", "2")]).unwrap();
    // Room alpha is placed first (worker 0), beta next (worker 1: fewest rooms).
    let a_pub = join(&server, "alpha", "alpha-pub", true).await;
    let a_sub = join(&server, "alpha", "alpha-sub", false).await;
    let b_pub = join(&server, "beta", "beta-pub", true).await;
    let b_sub = join(&server, "beta", "beta-sub", false).await;
    let (a_id, b_id) = (
        a_pub.participant_id().clone(),
        b_pub.participant_id().clone(),
    );
    for (who, cl, from) in [("alpha", &a_sub, &a_id), ("beta", &b_sub, &b_id)] {
        let r = cl
            .wait_media(|r| has_media_from(r, from, 50), MEDIA_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{who}'s subscriber got no media: {e}"));
        assert_eq!(r.total_mismatches(), 0, "{who}: {}", r.to_json());
        // Nothing of the other room arrives.
        let other = if from == &a_id { &b_id } else { &a_id };
        assert!(r.received_track(other, TrackKind::Video).is_none());
    }
    let m = metrics(&server);
    assert_eq!(worker(&m, "rakor_worker_rooms", 0), 1, "{m}");
    assert_eq!(worker(&m, "rakor_worker_rooms", 1), 1, "{m}");
    assert_eq!(worker(&m, "rakor_worker_participants", 0), 2, "{m}");
    assert_eq!(worker(&m, "rakor_worker_participants", 1), 2, "{m}");
    let f0 = worker(&m, "rakor_worker_rtp_packets_forwarded_total", 0);
    let f1 = worker(&m, "rakor_worker_rtp_packets_forwarded_total", 1);
    assert!(f0 >= 100 && f1 >= 100, "{m}");
    // The totals are the sums.
    assert_eq!(metric(&m, "rakor_rooms"), 2, "{m}");
    assert_eq!(metric(&m, "rakor_participants"), 4, "{m}");
    let total = metric(&m, "rakor_rtp_packets_forwarded_total");
    assert!(total >= f0 + f1, "{total} < {f0} + {f1}: {m}");
    assert!(worker(&m, "rakor_worker_thread_cpu_microseconds_total", 1) > 0);

    // A new participant of alpha goes to alpha's worker (and gets its media).
    let late = join(&server, "alpha", "alpha-late", false).await;
    late.wait_media(|r| has_media_from(r, &a_id, 30), MEDIA_WAIT)
        .await
        .expect("a late joiner of alpha gets alpha's media");
    let m = metrics(&server);
    assert_eq!(worker(&m, "rakor_worker_participants", 0), 3, "{m}");
    drop((a_pub, a_sub, b_pub, b_sub, late));
}
