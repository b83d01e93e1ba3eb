//! Two real `rakor` nodes of one province on one Redis (`cluster.redis_url`) and one PostgreSQL
//! (`storage.database_url`): a room joined through node A and through node B (B answers
//! `redirect` to the room's owner, which `rakor-client` follows); the two participants exchange
//! media. Then the owner is killed with SIGKILL: the clients come back by themselves through
//! the surviving node and are in the room there within 10 s, exchanging media (a new
//! participant each: resume state lived in the dead node's memory). A second test restarts
//! Redis during the call. Needs `RAKOR_TEST_REDIS_URL` and `RAKOR_TEST_POSTGRES_URL` (tests/run.sh
//! starts both); without them the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions};
use rakor_e2e::cluster::{has_media_from, random_suffix};
use rakor_e2e::session::{fresh_postgres_database, psql, test_postgres_url, Persistent};
use rakor_e2e::{sign_claims, unix_now, Server};
use rakor_proto::{ParticipantId, TrackKind};
use serde_json::json;
use std::time::{Duration, Instant};

const MEDIA_WAIT: Duration = Duration::from_secs(20);

/// Both receive each other's audio and video (exact payloads).
async fn exchange_media(x: &Client, y: &Client) {
    for (who, rx, tx) in [("x", x, y), ("y", y, x)] {
        let from = tx.current_participant_id();
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
    let all_urls = vec![nodes[0].ws_url(), nodes[1].ws_url()];
    let connect = |url: String, sub: &'static str, role: &'static str| {
        let t = token(sub, role);
        let mut opts = ClientOptions::new(url, t).publish(true, true);
        opts.fallback_urls.clone_from(&all_urls);
        async move {
            Client::connect(opts)
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

    // Node death: kill -9 the owner. The clients come back by themselves: their resume (to
    // the URL they first used, then the other configured node) is answered by the survivor
    // once the dead owner's heartbeat expired, as a new participant; they stay as that one,
    // with new peer connections and the same tracks.
    assert!(host.participant_id() != site.participant_id());
    let (host_before, site_before) = (host.current_participant_id(), site.current_participant_id());
    let killed_at = Instant::now();
    nodes[owner_idx]
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .unwrap();
    let deadline = killed_at + Duration::from_secs(10);
    back_by_itself(&host, &host_before, "dinkes", deadline).await;
    back_by_itself(&site, &site_before, "command-room", deadline).await;
    let back_in = killed_at.elapsed();
    eprintln!("participants back on the surviving node {back_in:?} after the owner's kill -9 (by themselves)");
    let survivor_id = if owner_idx == 0 { &id_b } else { &id_a };
    assert_eq!(&redis_owner(&redis, &room).await, survivor_id);
    exchange_media(&host, &site).await;
    eprintln!(
        "media flowing again {:?} after the kill -9",
        killed_at.elapsed()
    );
    // Nothing stored was lost: PostgreSQL is shared (the operators table exists and migrations ran
    // once for both nodes).
    assert_eq!(psql(&db, "SELECT count(*) FROM operators").unwrap(), "0");
}

/// Wait until the client rejoined by itself (a new participant id) and sees `other`.
async fn back_by_itself(c: &Client, before: &ParticipantId, other: &str, deadline: Instant) {
    loop {
        if &c.current_participant_id() != before
            && c.participants().iter().any(|p| p.identity == other)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not back with {other} by the deadline: {:?}",
            c.participants()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node id holding the room's lease in Redis.
async fn redis_owner(redis: &str, room: &str) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", redis, "GET", &format!("rakor:room:{room}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A Redis of this test's own (the restart must not disturb other tests' Redis), on a fixed
/// loopback port so that it can come back on the same address.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut r = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.up().then_some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start redis-server (no persistence: it comes back empty) and wait for PONG.
    fn up(&mut self) -> bool {
        let Ok(child) = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stop it (SIGTERM) and wait for the exit.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            c.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A gauge of a node's `/metrics` (cluster members label every sample).
fn gauge(server: &Server, name: &str) -> u64 {
    let (_, body) = rakor_e2e::http_get(server.http, "/metrics").unwrap();
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

/// Poll a node's gauge until it has `want` (the heartbeat updates it every 2 s or 250 ms).
async fn wait_gauge(server: &Server, name: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let v = gauge(server, name);
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} = {v}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Packets received from `from` so far (audio + video).
fn packets_from(c: &Client, from: &ParticipantId) -> u64 {
    let r = c.stats();
    [TrackKind::Audio, TrackKind::Video]
        .iter()
        .filter_map(|k| r.received_track(from, *k).map(|t| t.packets))
        .sum()
}

/// Both keep receiving: at least `n` more packets from the other than at `before`.
async fn media_keeps_flowing(x: &Client, y: &Client, before: (u64, u64), n: u64) -> (u64, u64) {
    let (xf, yf) = (y.participant_id().clone(), x.participant_id().clone());
    x.wait_media(
        |r| {
            [TrackKind::Audio, TrackKind::Video]
                .iter()
                .filter_map(|k| r.received_track(&xf, *k).map(|t| t.packets))
                .sum::<u64>()
                >= before.0 + n
        },
        MEDIA_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("x: media stopped: {e}"));
    y.wait_media(
        |r| {
            [TrackKind::Audio, TrackKind::Video]
                .iter()
                .filter_map(|k| r.received_track(&yf, *k).map(|t| t.packets))
                .sum::<u64>()
                >= before.1 + n
        },
        MEDIA_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("y: media stopped: {e}"));
    assert_eq!(x.stats().total_mismatches(), 0);
    assert_eq!(y.stats().total_mismatches(), 0);
    (packets_from(x, &xf), packets_from(y, &yf))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_during_a_rakor_media_keeps_flowing_and_the_cluster_recovers() {
    let Some(pg) = test_postgres_url() else {
        eprintln!("RAKOR_TEST_POSTGRES_URL not set: Redis restart e2e test skipped");
        return;
    };
    let Some(mut redis) = OwnRedis::start() else {
        eprintln!("redis-server not available: Redis restart e2e test skipped");
        return;
    };
    let db = fresh_postgres_database(&pg).unwrap();
    let p = Persistent::on_postgres(&db).unwrap();
    let suffix = random_suffix();
    let url = redis.url();
    let start = |id: &str| {
        p.start_with_env(&[
            ("RAKOR_CLUSTER_REDIS_URL", url.as_str()),
            ("RAKOR_CLUSTER_NODE_ID", id),
            ("RAKOR_CLUSTER_REGION", "central-java"),
        ])
        .unwrap()
    };
    let (id_a, id_b) = (format!("node-a-{suffix}"), format!("node-b-{suffix}"));
    let nodes = [start(&id_a), start(&id_b)];
    let now = unix_now();
    let token = |room: &str, sub: &str| -> String {
        sign_claims(
            &p.key,
            &json!({"sub": sub, "room": room, "name": sub, "role": "participant",
                    "iat": now, "exp": now + 3600, "iss": "rakor"}),
        )
        .unwrap()
    };
    let room = format!("rakor-{suffix}");
    let join = |url: String, room: &str, sub: &str, publish: bool| {
        let opts = ClientOptions::new(url, token(room, sub));
        let opts = if publish {
            opts.publish(true, true)
        } else {
            opts.receive_only()
        };
        Client::connect(opts)
    };
    // Two sites, one through each node: same room, one owner.
    let x = join(nodes[0].ws_url(), &room, "bappeda", true)
        .await
        .unwrap();
    let y = join(nodes[1].ws_url(), &room, "dinkes", true)
        .await
        .unwrap();
    let owner = redis_owner(&url, &room).await;
    let owner_idx = usize::from(owner == id_b);
    let other_idx = 1 - owner_idx;
    assert_eq!(owner, [&id_a, &id_b][owner_idx].as_str());
    exchange_media(&x, &y).await;
    for n in &nodes {
        wait_gauge(n, "rakor_cluster_redis_up", 1, Duration::from_secs(5)).await;
        wait_gauge(n, "rakor_cluster_nodes_alive", 2, Duration::from_secs(5)).await;
    }
    wait_gauge(
        &nodes[owner_idx],
        "rakor_cluster_rooms_owned",
        1,
        Duration::from_secs(5),
    )
    .await;
    let before = (
        packets_from(&x, y.participant_id()),
        packets_from(&y, x.participant_id()),
    );

    // Redis goes away.
    redis.down();
    // Media keeps flowing (nothing on the media path talks to Redis).
    let during = media_keeps_flowing(&x, &y, before, 200).await;
    for n in &nodes {
        wait_gauge(n, "rakor_cluster_redis_up", 0, Duration::from_secs(5)).await;
    }
    // A join to a room with no connection on the node it reaches fails clearly.
    let other_room = format!("other-{suffix}");
    let t0 = Instant::now();
    match join(nodes[other_idx].ws_url(), &other_room, "late", false).await {
        Err(rakor_client::ClientError::Rejected { code, message }) => {
            assert_eq!(
                code,
                rakor_proto::ErrorCode::ClusterUnavailable,
                "{message}"
            );
            assert!(message.contains("cannot place"), "{message}");
        }
        Err(e) => panic!("want cluster_unavailable, got {e}"),
        Ok(_) => panic!("a join placed a room while Redis was down"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // The room living on its owner still takes joins there.
    let z = join(nodes[owner_idx].ws_url(), &room, "bpbd", false)
        .await
        .unwrap();
    assert!(z.participants().iter().any(|p| &p.id == x.participant_id()));
    drop(z);
    let during = media_keeps_flowing(&x, &y, during, 200).await;

    // Redis is back (empty): heartbeats and the owner's lease are re-taken.
    assert!(redis.up(), "redis-server did not come back");
    let back_at = Instant::now();
    for n in &nodes {
        wait_gauge(n, "rakor_cluster_redis_up", 1, Duration::from_secs(5)).await;
        wait_gauge(n, "rakor_cluster_nodes_alive", 2, Duration::from_secs(5)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_owner(&url, &room).await != owner {
        assert!(
            Instant::now() < deadline,
            "the owner did not re-take its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "after Redis came back: heartbeats and the room's lease re-taken in {:?}",
        back_at.elapsed()
    );
    // New joins work again: through the non-owner (redirected to the owner) and for a new
    // room (refused as `cluster_unavailable` only while the nodes re-take their rooms).
    let w = join(nodes[other_idx].ws_url(), &room, "bpbd-2", false)
        .await
        .unwrap();
    assert!(w.participants().iter().any(|p| &p.id == y.participant_id()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        match join(nodes[other_idx].ws_url(), &other_room, "late", false).await {
            Ok(c) => break c,
            Err(rakor_client::ClientError::Rejected {
                code: rakor_proto::ErrorCode::ClusterUnavailable,
                message,
            }) => {
                assert!(Instant::now() < deadline, "still refused: {message}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("join after Redis came back: {e}"),
        }
    };
    assert_eq!(fresh.joined().room, other_room);
    media_keeps_flowing(&x, &y, during, 200).await;
}
