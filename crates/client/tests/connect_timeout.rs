//! A peer connection whose ICE checks are never answered. The `webrtc` crate's ICE agent only
//! fails a connection whose *selected* pair goes silent: one still checking stays `connecting`
//! for good (what left two of the sixty-site load test's bots without media for 138 s). The
//! client's `connect_timeout` treats such a leg as failed and resumes with a media reset.
//!
//! The mock signalling server here answers the publisher's offer with a real ICE-lite answer
//! whose only candidate is a UDP socket that never reads: checks vanish, nothing ever answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/lite_mock.rs"]
mod lite_mock;

use lite_mock::{answer_with_candidate, join, lite_answer, next_offer, Resumes};
use rakor_client::{Client, ClientOptions};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

async fn start_mock() -> (String, Resumes, UdpSocket) {
    // Bound and never read: checks sent here are silently lost.
    let black_hole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hole_port = black_hole.local_addr().unwrap().port();
    let (url, resumes) = lite_mock::start(move |ws, resumes| async move {
        let Some((mut sink, mut stream)) = join(ws, &resumes, "PA_stuck").await else {
            return;
        };
        let mut pcs = Vec::new();
        while let Some((pc, offer)) = next_offer(&mut stream).await {
            let (ev_tx, _ev_rx) = mpsc::unbounded_channel();
            let (server_pc, sdp, mid) = lite_answer(pc, offer, ev_tx).await;
            // Only the black hole is ever offered as a candidate.
            answer_with_candidate(&mut sink, pc, sdp, mid, hole_port).await;
            pcs.push(server_pc);
        }
        for pc in pcs {
            let _ = pc.close().await;
        }
    })
    .await;
    (url, resumes, black_hole)
}

fn opts(url: &str, connect_timeout: Duration) -> ClientOptions {
    let mut o = ClientOptions::new(url, "site-stuck").publish(true, false);
    o.ice_tcp = false;
    o.connect_timeout = connect_timeout;
    // The mock sends no WebSocket pings: keep the silence timeout out of it.
    o.signalling_timeout = Duration::ZERO;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_checks_are_never_answered_stays_connecting_without_the_timeout() {
    let (url, mut resumes, _hole) = start_mock().await;
    let client = Client::connect(opts(&url, Duration::ZERO)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let report = client.stats();
    // The ICE agent never gives up on its own: no `failed`, so no resume either.
    assert_ne!(
        report.publisher_state.as_deref(),
        Some("connected"),
        "{report:?}"
    );
    assert_ne!(
        report.publisher_state.as_deref(),
        Some("failed"),
        "the ICE agent failed the connection by itself: {report:?}"
    );
    assert!(resumes.try_recv().is_err(), "resumed without a timeout");
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_connecting_after_connect_timeout_resumes_with_a_media_reset() {
    let (url, mut resumes, _hole) = start_mock().await;
    let started = std::time::Instant::now();
    let client = Client::connect(opts(&url, Duration::from_secs(2)))
        .await
        .unwrap();
    let media_reset = tokio::time::timeout(Duration::from_secs(15), resumes.recv())
        .await
        .expect("no resume within 15 s of a 2 s connect timeout")
        .unwrap();
    assert!(media_reset, "the resume did not ask for a media reset");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "resumed after {waited:?}, before the timeout"
    );
    let report = client.stats();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("Publisher connection not connected")),
        "{:?}",
        report.errors
    );
    // The new publisher connection is checked (and timed out) again: still bounded, no panic.
    let again = tokio::time::timeout(Duration::from_secs(15), resumes.recv())
        .await
        .expect("the second stuck connection was not timed out")
        .unwrap();
    assert!(again);
    client.disconnect().await;
}
