//! Two real `rakor` nodes of one province on one Redis (`cluster.redis_url`) and one PostgreSQL
//! (`storage.database_url`): a room joined through node A and through node B (B answers
//! `redirect` to the room's owner, which `rakor-client` follows); the two participants exchange
//! media. Then the owner is killed with SIGKILL: its participants join again through the
//! surviving node and are in the room there within 10 s (a fresh join: resume state lived in the
//! dead node's memory). Needs `RAKOR_TEST_REDIS_URL` and `RAKOR_TEST_POSTGRES_URL` (tests/run.sh
//! starts both); without them the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::session::{fresh_postgres_database, psql, test_postgres_url, Persistent};
use rakor_e2e::{sign_claims, unix_now, Server};
use rakor_proto::{ParticipantId, TrackKind};
use serde_json::json;
use std::time::{Duration, Instant};

const MEDIA_WAIT: Duration = Duration::from_secs(20);

fn random_suffix() -> String {
    use std::io::Read as _;
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn has_media_from(r: &Report, from: &ParticipantId) -> bool {
    let v = r.received_track(from, TrackKind::Video);
    let a = r.received_track(from, TrackKind::Audio);
    v.is_some_and(|v| v.packets >= 30 && v.keyframes >= 1 && v.payload_matches >= 30)
        && a.is_some_and(|a| a.packets >= 30 && a.payload_matches >= 30)
}

/// Both receive each other's audio and video (exact payloads).
async fn exchange_media(x: &Client, y: &Client) {
    for (who, rx, tx) in [("x", x, y), ("y", y, x)] {
        let from = tx.participant_id().clone();
        let r = rx
            .wait_media(|r| has_media_from(r, &from), MEDIA_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{who} did not receive the other's media: {e}"));
        assert_eq!(r.total_mismatches(), 0, "{}", r.to_json());
    }
}

fn log_has(server: &Server, lines: &mut Vec<String>, needle: &str) -> bool {
    lines.extend(std::iter::from_fn(|| server.output.try_recv().ok()));
    lines.iter().any(|l| l.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_redirect_exchange_media_and_survive_the_owner_s_kill_9() {
    let (Ok(redis), Some(pg)) = (std::env::var("RAKOR_TEST_REDIS_URL"), test_postgres_url()) else {
        eprintln!(
            "RAKOR_TEST_REDIS_URL or RAKOR_TEST_POSTGRES_URL not set: cluster e2e test skipped"
        );
        return;
    };
    let db = fresh_postgres_database(&pg).unwrap();
    // One configuration for the province: the same signing key and database on both nodes.
    let p = Persistent::on_postgres(&db).unwrap();
    let suffix = random_suffix();
    let (id_a, id_b) = (format!("node-a-{suffix}"), format!("node-b-{suffix}"));
    let start = |id: &str| {
        p.start_with_env(&[
            ("RAKOR_CLUSTER_REDIS_URL", redis.as_str()),
            ("RAKOR_CLUSTER_NODE_ID", id),
            ("RAKOR_CLUSTER_REGION", "central-java"),
        ])
        .unwrap()
    };
    let mut nodes = [start(&id_a), start(&id_b)];
    let room = format!("rakor-{suffix}");
    let now = unix_now();
    let token = |sub: &str, role: &str| -> String {
        sign_claims(
            &p.key,
            &json!({"sub": sub, "room": room, "name": sub, "role": role,
                    "iat": now, "exp": now + 3600, "iss": "rakor"}),
        )
        .unwrap()
    };
    let connect = |url: String, sub: &'static str, role: &'static str| {
        let t = token(sub, role);
        async move {
            Client::connect(ClientOptions::new(url, t).publish(true, true))
                .await
                .unwrap_or_else(|e| panic!("{sub} could not join: {e}"))
        }
    };

    // The first join of the room, through A: A is the least loaded (both empty; ties go to
    // the smaller id) or takes it — either way the room is placed and owned by one node.
    let host = connect(nodes[0].ws_url(), "command-room", "host").await;
    // The second through B: same room, so B redirects to the owner (or owns it itself).
    let site = connect(nodes[1].ws_url(), "dinkes", "participant").await;
    let host_id = host.participant_id().clone();
    assert!(
        site.participants().iter().any(|p| p.id == host_id),
        "the site joined through B is not in the host's room: {:?}",
        site.participants()
    );
    let owner = redis_owner(&redis, &room).await;
    assert!(owner == id_a || owner == id_b, "owner {owner}");
    // The join that arrived at the non-owner was redirected (and logged so there).
    let owner_idx = usize::from(owner == id_b);
    let other_idx = 1 - owner_idx;
    let mut other_log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log_has(
        &nodes[other_idx],
        &mut other_log,
        "join redirected to the room's node",
    ) {
        assert!(
            Instant::now() < deadline,
            "no redirect logged: {other_log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivor_url = nodes[other_idx].ws_url();
    exchange_media(&host, &site).await;

    // Join time (WebSocket to `joined`) at the owner vs through the other node (one redirect).
    let mut direct = Vec::new();
    let mut redirected = Vec::new();
    for i in 0..5 {
        for (url, times) in [
            (nodes[owner_idx].ws_url(), &mut direct),
            (survivor_url.clone(), &mut redirected),
        ] {
            let t = token(&format!("viewer-{i}-{}", times.len()), "participant");
            let t0 = Instant::now();
            let c = Client::connect(ClientOptions::new(url, t).receive_only())
                .await
                .unwrap();
            times.push(t0.elapsed());
            assert!(c.participants().iter().any(|p| p.id == host_id));
            drop(c);
        }
    }
    direct.sort();
    redirected.sort();
    eprintln!(
        "join time, median of 5: at the owner {:?}, through the other node (redirect) {:?}",
        direct[2], redirected[2]
    );

    // Node death: kill -9 the owner. Both participants join again through the survivor.
    drop(host);
    drop(site);
    let killed_at = Instant::now();
    nodes[owner_idx]
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .unwrap();
    // Back within 10 s: a client retries its join while the dead owner's lease runs out
    // (at most 6 s; until then the survivor still redirects to the dead node).
    let rejoin = |sub: &'static str, role: &'static str| {
        let t = token(sub, role);
        let url = survivor_url.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match Client::connect(
                    ClientOptions::new(url.clone(), t.clone()).publish(true, true),
                )
                .await
                {
                    Ok(c) => return c,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "{sub} not back in 10 s: {e}");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        }
    };
    let host = rejoin("command-room", "host").await;
    let site = rejoin("dinkes", "participant").await;
    let back_in = killed_at.elapsed();
    assert!(back_in < Duration::from_secs(10), "back after {back_in:?}");
    eprintln!("participants back on the surviving node {back_in:?} after the owner's kill -9");
    let survivor_id = if owner_idx == 0 { &id_b } else { &id_a };
    assert_eq!(&redis_owner(&redis, &room).await, survivor_id);
    assert!(site
        .participants()
        .iter()
        .any(|p| &p.id == host.participant_id()));
    exchange_media(&host, &site).await;
    // Nothing stored was lost: PostgreSQL is shared (the operators table exists and migrations ran
    // once for both nodes).
    assert_eq!(psql(&db, "SELECT count(*) FROM operators").unwrap(), "0");
}

/// The node id holding the room's lease in Redis.
async fn redis_owner(redis: &str, room: &str) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", redis, "GET", &format!("rakor:room:{room}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
