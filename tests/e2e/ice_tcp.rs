//! ICE over TCP against the real server (RFC 6544 passive candidates on the media port
//! number): a site in a network namespace whose firewall drops all UDP (nftables, both ways:
//! nothing UDP arrives at the site, nothing UDP from the site arrives at the server) exchanges
//! audio and video with an open site, both as `probe-client` processes (`rakor-client`, whose
//! ICE agent connects to the server's trickled passive TCP candidates).
//!
//! Needs root (network namespaces) and `nft`; prints `SKIP: …` and passes otherwise. Every
//! wait is bounded; namespaces and processes are removed by drop guards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_e2e::netns::{
    self, decoded_frames as frames, mint_token, received_packets as packets, unix_ms, wait_media,
    Netns, Probe, ServerProc,
};
use rakor_proto::TrackKind;
use std::path::Path;
use std::time::Duration;

const PROBE: &str = env!("CARGO_BIN_EXE_probe-client");

#[test]
fn site_without_udp_exchanges_audio_and_video_over_ice_tcp() {
    ice_tcp_call(1, false);
}

/// Two media workers; a first room takes worker 0, so the call's room is on worker 1, whose
/// own TCP listener (its own port, in its own passive candidates) must carry the media.
#[test]
fn ice_tcp_reaches_the_second_media_worker() {
    ice_tcp_call(2, true);
}

fn ice_tcp_call(workers: usize, occupy_first_worker: bool) {
    if let Err(why) = netns::available() {
        eprintln!("SKIP: network namespaces unavailable: {why}");
        return;
    }
    if !netns::have_nft() {
        eprintln!("SKIP: nft not installed (apt-get install nftables)");
        return;
    }
    // Server namespace 10.77.0.1, the UDP-less site 10.77.0.2 behind a veth pair.
    let srv = Netns::new("tsrv").unwrap();
    let site = Netns::new("tsite").unwrap();
    srv.veth("rk-tsrv", "10.77.0.1/24", &site, "rk-tsite", "10.77.0.2/24")
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    // The media port's own TCP listener is under test here: no second passive candidate on
    // the HTTP port (that path is tests/e2e/one_port.rs), so TCP media can only use this one.
    let server = ServerProc::start(
        Some(&srv),
        "10.77.0.1",
        data.path(),
        &[
            ("RAKOR_MEDIA_ICE_TCP_ON_HTTP_PORT", "false"),
            ("RAKOR_MEDIA_WORKERS", &workers.to_string()),
        ],
    )
    .unwrap();
    // The firewall: no UDP reaches the site, no UDP from the site reaches the server.
    site.drop_udp(None).unwrap();
    srv.drop_udp(Some("10.77.0.2")).unwrap();
    srv.count_tcp_to(server.media.port()).unwrap();

    let url = server.ws_url();
    // With a first room on worker 0, the call's room goes to worker 1 (fewest rooms).
    let room = if occupy_first_worker {
        "second"
    } else {
        "rakor"
    };
    let _first = occupy_first_worker.then(|| {
        let tok = mint_token(data.path(), "first", "elsewhere", "participant").unwrap();
        Probe::start(
            Some(&srv),
            Path::new(PROBE),
            &url,
            &tok,
            "10.77.0.1",
            &["audio"],
            "elsewhere",
        )
        .unwrap()
    });
    let tok = |id: &str| mint_token(data.path(), room, id, "participant").unwrap();
    let t_join = unix_ms();
    let mut open = Probe::start(
        Some(&srv),
        Path::new(PROBE),
        &url,
        &tok("open"),
        "10.77.0.1",
        &["audio", "video"],
        "open",
    )
    .unwrap();
    let mut closed = Probe::start(
        Some(&site),
        Path::new(PROBE),
        &url,
        &tok("tcp-only"),
        "10.77.0.2",
        &["audio", "video"],
        "tcp-only",
    )
    .unwrap();
    let (open_id, closed_id) = (open.participant_id.clone(), closed.participant_id.clone());

    // Both directions: the UDP-less site's media reaches the open site, and the reverse.
    let (r_open, t_open) = wait_media(&mut open, &closed_id, 100, Duration::from_secs(40));
    let (r_closed, _) = wait_media(&mut closed, &open_id, 100, Duration::from_secs(40));
    // (Polled every 200 ms; the reverse direction is waited for afterwards, so not timed.)
    eprintln!(
        "MEASURED ice-tcp: the open site saw the tcp-only site's first video frame {} ms after \
         the joins started",
        t_open.saturating_sub(t_join)
    );
    eprintln!(
        "open <- tcp-only: audio {} video {} packets, {} frames; tcp-only <- open: audio {} \
         video {} packets, {} frames",
        packets(&r_open, &closed_id, TrackKind::Audio),
        packets(&r_open, &closed_id, TrackKind::Video),
        frames(&r_open, &closed_id),
        packets(&r_closed, &open_id, TrackKind::Audio),
        packets(&r_closed, &open_id, TrackKind::Video),
        frames(&r_closed, &open_id),
    );

    // Proof that the path is TCP: UDP from the site was tried and dropped, and TCP to the
    // media port carried the media (well over the handshake's few packets).
    let site_drops = site.nft_counters().unwrap();
    let srv_counts = srv.nft_counters().unwrap();
    eprintln!(
        "nft counters: site {site_drops:?}, server {srv_counts:?} (udp dropped, tcp to media port)"
    );
    if occupy_first_worker {
        // Worker 1 has the call (its port is not worker 0's, counted above): its TCP
        // streams and its forwarding say so.
        let m = netns_metrics(&srv, &server);
        assert_eq!(worker_metric(&m, "rakor_worker_rooms", 1), 1, "{m}");
        assert_eq!(worker_metric(&m, "rakor_worker_rooms", 0), 1, "{m}");
        assert!(
            worker_metric(&m, "rakor_worker_rtp_packets_forwarded_total", 1) > 200,
            "{m}"
        );
        assert!(metric_value(&m, "rakor_ice_tcp_streams") >= 1, "{m}");
    } else {
        assert!(
            srv_counts.iter().any(|&n| n > 200),
            "TCP to the media port carried no media: {srv_counts:?}"
        );
    }

    // The media keeps flowing (not just a burst at connect).
    let before = packets(&r_closed, &open_id, TrackKind::Video);
    std::thread::sleep(Duration::from_secs(2));
    let later = closed.latest_report(Duration::from_secs(5)).unwrap();
    assert!(
        packets(&later, &open_id, TrackKind::Video) > before,
        "video to the tcp-only site stopped"
    );
    drop(server);
}

/// `/metrics` of a server in a namespace (curl inside it).
fn netns_metrics(ns: &Netns, server: &ServerProc) -> String {
    ns.exec("curl", &["-s", &format!("http://{}/metrics", server.http)])
        .unwrap()
}

/// A per-worker gauge or counter (`name{worker="i"} v`).
fn worker_metric(body: &str, name: &str, worker: usize) -> u64 {
    let prefix = format!("{name}{{worker=\"{worker}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

fn metric_value(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}
