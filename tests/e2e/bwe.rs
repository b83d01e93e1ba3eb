//! Per-subscriber bandwidth estimation against the real server (issue 6, benchmark 3): a site
//! in its own network namespace watches a simulcast publisher at the top layer; its downlink is
//! then capped to 300 kbit/s with a token bucket filter on the server side of the veth (tbf,
//! ../shared/recipes/network-faults.md). The server's estimate (TWCC feedback → GCC) must move
//! that site to a lower layer quickly, keep it there without flapping while the cap holds, keep
//! its video advancing, and bring the top layer back after the cap is lifted. Times are read
//! from the probe's own wall-clock timeline of layer changes and frame gaps
//! (`ReceivedTrackStats::layer_changes` / `frame_gaps`), printed as `MEASURED` lines.
//! Needs root for namespaces (prints `SKIP:` otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{ReceivedTrackStats, Report};
use rakor_e2e::netns::{self, mint_token, unix_ms, Netns, Probe, ProbeLine, ServerProc};
use rakor_proto::{ParticipantId, TrackKind};
use std::path::Path;
use std::time::Duration;

const PROBE: &str = env!("CARGO_BIN_EXE_probe-client");

fn video_from<'a>(r: &'a Report, from: &str) -> Option<&'a ReceivedTrackStats> {
    r.received_track(&ParticipantId(from.to_owned()), TrackKind::Video)
}

/// The first report (in the probe's output order, waiting for new ones) that satisfies `f`.
fn wait_report(
    p: &mut Probe,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut(&Report) -> bool,
) -> Report {
    match p.wait(timeout, |l| match l {
        ProbeLine::Report(r) if f(r) => Some(r.clone()),
        _ => None,
    }) {
        Ok(r) => r,
        Err(e) => panic!("{}: {what}: {e}", p.proc.label),
    }
}

#[test]
fn capped_subscriber_drops_to_a_lower_layer_and_recovers() {
    if let Err(why) = netns::available() {
        eprintln!("SKIP: network namespaces unavailable: {why}");
        return;
    }
    let srv = Netns::new("srv").unwrap();
    let site = Netns::new("site").unwrap();
    srv.veth("rk-srv", "10.77.0.1/24", &site, "rk-site", "10.77.0.2/24")
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(Some(&srv), "10.77.0.1", data.path(), &[]).unwrap();
    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rakor", id, "participant").unwrap();
    let publisher = Probe::start(
        Some(&srv),
        Path::new(PROBE),
        &url,
        &tok("command-room"),
        "10.77.0.1",
        &["audio", "video", "simulcast"],
        "publisher",
    )
    .unwrap();
    let pub_id = publisher.participant_id.clone();
    let mut weak = Probe::start(
        Some(&site),
        Path::new(PROBE),
        &url,
        &tok("weak-site"),
        "10.77.0.2",
        &[],
        "weak",
    )
    .unwrap();

    // No tile size reported: the site gets the top layer while its link is free.
    wait_report(&mut weak, Duration::from_secs(30), "top layer", |r| {
        video_from(r, &pub_id).is_some_and(|v| v.last_layer == Some(2) && v.layer_packets[2] > 100)
    });

    // 300 kbit/s from the server to the site.
    let capped_at = unix_ms();
    srv.rate_cap("rk-srv", "300kbit").unwrap();
    let r = wait_report(&mut weak, Duration::from_secs(15), "downgrade", |r| {
        video_from(r, &pub_id).is_some_and(|v| {
            v.layer_changes
                .iter()
                .any(|c| c.at_unix_ms >= capped_at && c.layer < 2)
        })
    });
    let v = video_from(&r, &pub_id).unwrap();
    let down = v
        .layer_changes
        .iter()
        .find(|c| c.at_unix_ms >= capped_at && c.layer < 2)
        .copied()
        .unwrap();
    let downgrade_ms = down.at_unix_ms - capped_at;

    // Hold the cap: the site stays below the top layer and its video keeps advancing.
    let frames_at_down = v.frames;
    let hold_from = unix_ms();
    let r = wait_report(&mut weak, Duration::from_secs(20), "cap held 10 s", |_| {
        unix_ms() >= hold_from + 10_000
    });
    let v = video_from(&r, &pub_id).unwrap().clone();
    let worst_gap = v
        .frame_gaps
        .iter()
        .filter(|g| g.end_unix_ms >= capped_at)
        .map(|g| g.gap_ms)
        .max()
        .unwrap_or(0);
    let back_up_while_capped = v
        .layer_changes
        .iter()
        .filter(|c| c.at_unix_ms > down.at_unix_ms && c.layer == 2)
        .count();
    eprintln!(
        "MEASURED 300 kbit/s cap: downgrade to layer {} after {downgrade_ms} ms; worst frame gap \
         since the cap {worst_gap} ms; frames +{} in the 10 s that followed; layer changes since: {:?}",
        down.layer,
        v.frames - frames_at_down,
        v.layer_changes
            .iter()
            .filter(|c| c.at_unix_ms >= capped_at)
            .map(|c| c.layer)
            .collect::<Vec<_>>(),
    );
    assert!(
        downgrade_ms < 5_000,
        "downgrade took {downgrade_ms} ms (goal < 1 s)"
    );
    assert_eq!(
        back_up_while_capped, 0,
        "the top layer came back while the link was capped: {:?}",
        v.layer_changes
    );
    assert!(
        v.frames - frames_at_down >= 50,
        "video stalled under the cap: +{} frames in 10 s",
        v.frames - frames_at_down
    );
    assert_eq!(v.payload_mismatches, 0);

    // Lift the cap: the top layer comes back (GCC climbs; the allocator steps up with headroom).
    let lifted_at = unix_ms();
    srv.rate_uncap("rk-srv").unwrap();
    let r = wait_report(&mut weak, Duration::from_secs(60), "recovery", |r| {
        video_from(r, &pub_id).is_some_and(|v| {
            v.layer_changes
                .iter()
                .any(|c| c.at_unix_ms >= lifted_at && c.layer == 2)
        })
    });
    let v = video_from(&r, &pub_id).unwrap();
    let up = v
        .layer_changes
        .iter()
        .find(|c| c.at_unix_ms >= lifted_at && c.layer == 2)
        .unwrap();
    eprintln!(
        "MEASURED cap lifted: top layer again after {} ms",
        up.at_unix_ms - lifted_at
    );
    drop(publisher);
}
