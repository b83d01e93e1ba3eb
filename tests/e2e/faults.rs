//! Faults against the real server: participants as separate `probe-client` processes, weak and
//! dying links made inside network namespaces this test creates (veth pairs, 10.77.0.0/24,
//! `ip link set down`, nftables loss, tbf caps; ../shared/recipes/network-faults.md).
//! Tests that need namespaces print `SKIP: …` and pass when `ip netns add` is refused (not root).
//! Every test is bounded; namespaces and processes are removed by drop guards, also on failure.
//! Measured times are printed (`--no-capture` shows them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::netns::{self, mint_token, unix_ms, Netns, Probe, ServerProc};
use rakor_proto::{ParticipantId, ServerMessage, TrackKind};
use std::path::Path;
use std::time::{Duration, Instant};

const PROBE: &str = env!("CARGO_BIN_EXE_probe-client");
/// The default `limits.dead_peer_timeout`.
const DEAD_PEER: Duration = Duration::from_secs(10);
/// Slack for process scheduling and pipes between the server deciding and the probe printing.
const SLACK: Duration = Duration::from_millis(800);

/// Video packets from `from`, over every track id it published (a media reset republishes).
fn video_packets(r: &Report, from: &str) -> u64 {
    r.received_packets(&ParticipantId(from.to_owned()), TrackKind::Video)
}

fn video_frames(r: &Report, from: &str) -> (u64, u64) {
    r.received_track(&ParticipantId(from.to_owned()), TrackKind::Video)
        .map_or((0, 0), |t| (t.frames, t.keyframes))
}

/// Poll `p`'s reports until `from`'s video reached `min` packets.
fn wait_video(p: &mut Probe, from: &str, min: u64, timeout: Duration) -> Report {
    let deadline = Instant::now() + timeout;
    loop {
        let r = p.latest_report(Duration::from_secs(5)).unwrap();
        if video_packets(&r, from) >= min {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{}: video from {from} stuck at {} packets: {}",
            p.proc.label,
            video_packets(&r, from),
            r.to_json()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A server namespace and a site namespace joined by a veth pair:
/// server side `rk-srv` 10.77.0.1, site side `rk-site` 10.77.0.2.
struct Topology {
    site: Netns,
    srv: Netns,
}

fn topology() -> Option<Topology> {
    if let Err(why) = netns::available() {
        eprintln!("SKIP: network namespaces unavailable: {why}");
        return None;
    }
    let srv = Netns::new("srv").unwrap();
    let site = Netns::new("site").unwrap();
    srv.veth("rk-srv", "10.77.0.1/24", &site, "rk-site", "10.77.0.2/24")
        .unwrap();
    Some(Topology { site, srv })
}

fn server_in(ns: &Netns, data: &Path) -> ServerProc {
    ServerProc::start(Some(ns), "10.77.0.1", data, &[]).unwrap()
}

#[test]
fn killed_client_is_removed_for_the_others_within_10s() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(None, "127.0.0.1", data.path(), &[]).unwrap();
    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let mut watcher = Probe::start(
        None,
        Path::new(PROBE),
        &url,
        &tok("watch"),
        "127.0.0.1",
        &[],
        "watch",
    )
    .unwrap();
    let mut victim = Probe::start(
        None,
        Path::new(PROBE),
        &url,
        &tok("victim"),
        "127.0.0.1",
        &["audio", "video"],
        "victim",
    )
    .unwrap();
    let victim_id = victim.participant_id.clone();
    wait_video(&mut watcher, &victim_id, 30, Duration::from_secs(20));

    let t0 = unix_ms();
    victim.proc.kill9();
    let (t, reason) = watcher
        .wait_left(&victim_id, Duration::from_secs(15))
        .unwrap();
    let took = Duration::from_millis(t.saturating_sub(t0));
    eprintln!("MEASURED killed client: participant_left ({reason}) after {took:?}");
    assert!(took < DEAD_PEER, "took {took:?}");
}

#[test]
fn blackholed_site_is_removed_within_the_dead_peer_timeout() {
    let Some(topo) = topology() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = server_in(&topo.srv, data.path());
    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let mut watcher = Probe::start(
        Some(&topo.srv),
        Path::new(PROBE),
        &url,
        &tok("watch"),
        "10.77.0.1",
        &[],
        "watch",
    )
    .unwrap();
    let site = Probe::start(
        Some(&topo.site),
        Path::new(PROBE),
        &url,
        &tok("site"),
        "10.77.0.2",
        &["audio", "video"],
        "site",
    )
    .unwrap();
    let site_id = site.participant_id.clone();
    wait_video(&mut watcher, &site_id, 30, Duration::from_secs(20));

    // The site's link dies: nothing leaves or arrives, no FIN, the process lives on.
    let t0 = unix_ms();
    topo.site.link("rk-site", false).unwrap();
    let (t, reason) = watcher
        .wait_left(&site_id, DEAD_PEER + Duration::from_secs(5))
        .unwrap();
    let took = Duration::from_millis(t.saturating_sub(t0));
    eprintln!("MEASURED blackholed site: participant_left ({reason}) after {took:?}");
    assert!(took <= DEAD_PEER + SLACK, "took {took:?}");
    assert!(
        reason == "disconnected" || reason == "media_failed",
        "reason {reason}"
    );
    // The healthy watcher, silent on signalling all along, is still in the room.
    let r = watcher.latest_report(Duration::from_secs(5)).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    drop(site);
}

#[test]
fn lossy_capped_site_keeps_receiving_video_and_others_are_unaffected() {
    let Some(topo) = topology() else { return };
    if !netns::have_nft() {
        eprintln!("SKIP: nft is not installed (apt-get install nftables; tests/run.sh does it)");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = server_in(&topo.srv, data.path());
    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let publisher = Probe::start(
        Some(&topo.srv),
        Path::new(PROBE),
        &url,
        &tok("command-room"),
        "10.77.0.1",
        &["audio", "video"],
        "publisher",
    )
    .unwrap();
    let pub_id = publisher.participant_id.clone();
    let mut watcher = Probe::start(
        Some(&topo.srv),
        Path::new(PROBE),
        &url,
        &tok("watch"),
        "10.77.0.1",
        &[],
        "watch",
    )
    .unwrap();
    let mut weak = Probe::start(
        Some(&topo.site),
        Path::new(PROBE),
        &url,
        &tok("weak-site"),
        "10.77.0.2",
        &[],
        "weak",
    )
    .unwrap();
    wait_video(&mut weak, &pub_id, 30, Duration::from_secs(20));
    wait_video(&mut watcher, &pub_id, 30, Duration::from_secs(20));

    // 20% random loss of everything UDP arriving at the site, 300 kbit/s each way.
    topo.site.udp_loss(20).unwrap();
    topo.site.rate_cap("rk-site", "300kbit").unwrap();
    topo.srv.rate_cap("rk-srv", "300kbit").unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let w1 = weak.latest_report(Duration::from_secs(5)).unwrap();
    let o1 = watcher.latest_report(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_secs(12));
    let w2 = weak.latest_report(Duration::from_secs(5)).unwrap();
    let o2 = watcher.latest_report(Duration::from_secs(5)).unwrap();

    let (f1, k1) = video_frames(&w1, &pub_id);
    let (f2, k2) = video_frames(&w2, &pub_id);
    let wv = w2
        .received_track(&ParticipantId(pub_id.clone()), TrackKind::Video)
        .cloned()
        .unwrap();
    eprintln!(
        "MEASURED weak site over 12 s: frames +{}, keyframes +{}, packets +{}, seq gaps {}, PLIs sent {}, mismatches {}",
        f2 - f1,
        k2 - k1,
        video_packets(&w2, &pub_id) - video_packets(&w1, &pub_id),
        wv.seq_gaps,
        wv.plis_sent,
        wv.payload_mismatches
    );
    // 15 fps × 12 s = 180 frames sent; most must complete despite the loss.
    assert!(
        f2 - f1 >= 60,
        "weak site's video stalled: frames {f1} → {f2}"
    );
    assert!(k2 > k1, "no new keyframe at the weak site: {k1} → {k2}");
    assert_eq!(wv.payload_mismatches, 0);

    let (of1, _) = video_frames(&o1, &pub_id);
    let (of2, _) = video_frames(&o2, &pub_id);
    let ov = o2
        .received_track(&ParticipantId(pub_id.clone()), TrackKind::Video)
        .cloned()
        .unwrap();
    eprintln!(
        "MEASURED unaffected watcher over 12 s: frames +{}, seq gaps {}",
        of2 - of1,
        ov.seq_gaps
    );
    assert!(
        of2 - of1 >= 150,
        "the unaffected watcher's video slowed: {of1} → {of2}"
    );
    assert_eq!(ov.payload_mismatches, 0);
    drop(publisher);
}

#[test]
fn outage_shorter_than_the_dead_peer_timeout_resumes_media() {
    let Some(topo) = topology() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = server_in(&topo.srv, data.path());
    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let mut watcher = Probe::start(
        Some(&topo.srv),
        Path::new(PROBE),
        &url,
        &tok("watch"),
        "10.77.0.1",
        &[],
        "watch",
    )
    .unwrap();
    let site = Probe::start(
        Some(&topo.site),
        Path::new(PROBE),
        &url,
        &tok("site"),
        "10.77.0.2",
        &["audio", "video"],
        "site",
    )
    .unwrap();
    let site_id = site.participant_id.clone();
    wait_video(&mut watcher, &site_id, 30, Duration::from_secs(20));

    topo.site.link("rk-site", false).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let before = video_packets(
        &watcher.latest_report(Duration::from_secs(5)).unwrap(),
        &site_id,
    );
    topo.site.link("rk-site", true).unwrap();
    let up = Instant::now();
    let deadline = up + Duration::from_secs(10);
    let resumed = loop {
        let r = watcher.latest_report(Duration::from_secs(5)).unwrap();
        if video_packets(&r, &site_id) > before + 5 {
            break up.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "media did not resume: {}",
            r.to_json()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("MEASURED 5 s outage: the site's video reached the watcher again {resumed:?} after the link came back (same participant, no reconnect)");
    assert!(
        !watcher.seen.iter().any(
            |(_, l)| matches!(l, netns::ProbeLine::Event(e) if e["type"] == "participant_left")
        ),
        "the site was removed during a 5 s outage"
    );
    assert!(resumed < Duration::from_secs(5), "{resumed:?}");
    drop(site);
}

#[test]
fn outage_longer_than_the_dead_peer_timeout_parks_and_resumes_the_same_participant() {
    let Some(topo) = topology() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = server_in(&topo.srv, data.path());
    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let mut watcher = Probe::start(
        Some(&topo.srv),
        Path::new(PROBE),
        &url,
        &tok("watch"),
        "10.77.0.1",
        &["audio", "video"],
        "watch",
    )
    .unwrap();
    let mut site = Probe::start(
        Some(&topo.site),
        Path::new(PROBE),
        &url,
        &tok("site"),
        "10.77.0.2",
        &["audio", "video"],
        "site",
    )
    .unwrap();
    let (site_id, watch_id) = (site.participant_id.clone(), watcher.participant_id.clone());
    wait_video(&mut watcher, &site_id, 30, Duration::from_secs(20));
    wait_video(&mut site, &watch_id, 30, Duration::from_secs(20));

    // 12 s without a link: longer than the dead-peer timeout, shorter than the 30 s grace.
    let t0 = unix_ms();
    topo.site.link("rk-site", false).unwrap();
    let (t_left, reason) = watcher
        .wait_left(&site_id, Duration::from_secs(15))
        .unwrap();
    let gone = Duration::from_millis(t_left.saturating_sub(t0));
    eprintln!("MEASURED 12 s outage: participant_left ({reason}) after {gone:?}");
    assert_eq!(reason, "media_failed");
    assert!(gone < DEAD_PEER + SLACK, "{gone:?}");
    std::thread::sleep(Duration::from_millis(
        12_000u64.saturating_sub(unix_ms() - t0),
    ));
    let before_watch = video_packets(
        &watcher.latest_report(Duration::from_secs(5)).unwrap(),
        &site_id,
    );
    let before_site = video_packets(
        &site.latest_report(Duration::from_secs(5)).unwrap(),
        &watch_id,
    );
    topo.site.link("rk-site", true).unwrap();
    let up = Instant::now();
    let up_ms = unix_ms();

    // The same participant id joins again, then its video reaches the watcher.
    let deadline = up + Duration::from_secs(15);
    let (mut rejoined, mut video_back) = (None, None);
    while rejoined.is_none() || video_back.is_none() {
        let r = watcher.latest_report(Duration::from_secs(5)).unwrap();
        if rejoined.is_none() {
            rejoined = watcher.seen.iter().find_map(|(t, l)| match l {
                netns::ProbeLine::Event(e)
                    if *t >= up_ms
                        && e["type"] == "participant_joined"
                        && e["participant"]["id"] == site_id.as_str() =>
                {
                    Some(Duration::from_millis(t - up_ms))
                }
                _ => None,
            });
        }
        if video_back.is_none() && video_packets(&r, &site_id) > before_watch {
            video_back = Some(up.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "no rejoin/video after the link came back (rejoined {rejoined:?}): {}",
            r.to_json()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (rejoined, video_back) = (rejoined.unwrap(), video_back.unwrap());
    // And the site receives the watcher's video again.
    let deadline = up + Duration::from_secs(15);
    let site_back = loop {
        let r = site.latest_report(Duration::from_secs(5)).unwrap();
        if video_packets(&r, &watch_id) > before_site {
            break up.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the site receives nothing again: {}",
            r.to_json()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "MEASURED 12 s outage: after the link came back, participant_joined (same id) at {rejoined:?}, first video packet at the watcher {video_back:?}, the site receives again {site_back:?}"
    );
    let resumed: Vec<&serde_json::Value> = site
        .seen
        .iter()
        .filter_map(|(_, l)| match l {
            netns::ProbeLine::Event(e) if e["type"] == "joined" => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0]["resumed"], true);
    assert_eq!(resumed[0]["media_reset"], true);
    let count = |ty: &str| {
        watcher
            .seen
            .iter()
            .filter(|(t, l)| *t >= t0 && matches!(l, netns::ProbeLine::Event(e) if e["type"] == ty))
            .count()
    };
    assert_eq!(
        (count("participant_left"), count("participant_joined")),
        (1, 1)
    );
    drop(site);
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_kill9_and_restart_keeps_the_data_dir_and_clients_rejoin() {
    let data = tempfile::tempdir().unwrap();
    let host_token = mint_token(data.path(), "rakor", "command-room", "host").unwrap();
    let site_token = mint_token(data.path(), "rakor", "dishub", "participant").unwrap();
    let mut server = ServerProc::start(None, "127.0.0.1", data.path(), &[]).unwrap();
    let host = Client::connect(ClientOptions::new(server.ws_url(), host_token.clone()))
        .await
        .unwrap();
    let site =
        Client::connect(ClientOptions::new(server.ws_url(), site_token.clone()).receive_only())
            .await
            .unwrap();
    let host_id = host.participant_id().clone();
    site.wait_media(
        |r| {
            r.received_track(&host_id, TrackKind::Video)
                .is_some_and(|t| t.packets >= 30)
        },
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let before = snapshot(data.path());
    assert!(before.iter().any(|(n, _)| n == "signing.key"), "{before:?}");

    server.proc.kill9();
    // The old sessions are gone with the server (the clients may keep trying to resume
    // against the dead address); the sites start over with a fresh join below.
    drop(site);
    drop(host);

    let t_restart = Instant::now();
    let server = ServerProc::start(None, "127.0.0.1", data.path(), &[]).unwrap();
    let after = snapshot(data.path());
    for (name, bytes) in &before {
        let now = after.iter().find(|(n, _)| n == name);
        assert!(now.is_some(), "{name} vanished from the data dir");
        if name == "signing.key" {
            assert_eq!(Some(bytes), now.map(|(_, b)| b), "the signing key changed");
        }
    }
    // Tokens minted before the crash still work: a fresh join to a fresh room, media again.
    let host = Client::connect(ClientOptions::new(server.ws_url(), host_token))
        .await
        .unwrap();
    let site = Client::connect(ClientOptions::new(server.ws_url(), site_token).receive_only())
        .await
        .unwrap();
    assert!(
        site.joined()
            .participants
            .iter()
            .all(|p| p.id == *host.participant_id()),
        "no ghost participants from before the crash: {:?}",
        site.joined().participants
    );
    let host_id = host.participant_id().clone();
    site.wait_media(
        |r| {
            r.received_track(&host_id, TrackKind::Video)
                .is_some_and(|t| t.packets >= 10)
        },
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    eprintln!(
        "MEASURED restart after kill -9: server ready, both rejoined and video flowing {:?} after the restart began",
        t_restart.elapsed()
    );
    let mut site = site;
    site.ping(1).await.unwrap();
    site.wait_for(
        |m| matches!(m, ServerMessage::Pong { .. }),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}
