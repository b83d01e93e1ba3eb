//! A server that stalls for a few seconds while a leg's ICE checks arrive (its media thread
//! starved of CPU during a join burst, its socket dropping what arrives meanwhile), then
//! answers again. The `webrtc` crate's ICE agent gives a candidate pair up after 8 unanswered
//! checks (~1.6 s at 200 ms) and never tries it again, nor fails the connection: without
//! rakor-client's `ice_check_window` such a leg stays `connecting` until `connect_timeout`
//! resets it (the sixty-site load test's stragglers); with it the leg connects as soon as the
//! server answers again.
//!
//! The server side of the same stall: a lite server whose loop lags more than 4 s discards
//! the responses to its own (triggered) checks as "unknown TransactionID". Upstream `rtc-ice`
//! answered a nominating check (USE-CANDIDATE) on a lite agent only with such a triggered
//! check and selected the pair once that got a response, so the nomination was never answered
//! and the leg stayed `connecting`; the patched `rtc-ice` (third_party/rtc-ice) answers it and
//! takes the pair, as RFC 8445 has a lite agent do.
//!
//! The mock signalling server answers the publisher's offer with a real ICE-lite answer (the
//! same `rtc-ice` agent the server runs) whose only candidate is a UDP relay in front of that
//! answerer: the relay drops every datagram in both directions for [`STALL`] from the first
//! check ([`Relay::Stall`]), or every STUN success response on its way to the answerer
//! ([`Relay::LoseAnswersToTheServer`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/lite_mock.rs"]
mod lite_mock;

use lite_mock::{answer_with_candidate, join, lite_answer, next_offer, Resumes};
use rakor_client::peer::PeerEvent;
use rakor_client::{Client, ClientOptions};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// How long the "server" drops everything, from the first check that reaches it.
const STALL: Duration = Duration::from_secs(3);

/// What the relay in front of the answerer loses.
#[derive(Clone, Copy)]
enum Relay {
    /// Everything, both ways, for [`STALL`] from the first check.
    Stall,
    /// Every STUN Binding success response from the client to the answerer (as if each
    /// arrived after the lite agent's 4 s transaction timeout).
    LoseAnswersToTheServer,
}

async fn start_mock(mode: Relay) -> (String, Resumes) {
    lite_mock::start(move |ws, resumes| async move {
        let Some((mut sink, mut stream)) = join(ws, &resumes, "PA_stall").await else {
            return;
        };
        let mut pcs = Vec::new();
        while let Some((pc, offer)) = next_offer(&mut stream).await {
            let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
            let (server_pc, sdp, mid) = lite_answer(pc, offer, ev_tx).await;
            // The answerer's own UDP host candidate: what the relay forwards to.
            let server_addr = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some((_, ev)) = ev_rx.recv().await {
                    if let PeerEvent::LocalCandidate(Some(c)) = ev {
                        let f: Vec<&str> = c.candidate.split_whitespace().collect();
                        if f.len() > 5 && f[2].eq_ignore_ascii_case("udp") {
                            return format!("{}:{}", f[4], f[5]).parse::<SocketAddr>().ok();
                        }
                    }
                }
                None
            })
            .await
            .ok()
            .flatten()
            .expect("the answerer gathered no UDP candidate");
            let relay = start_relay(server_addr, mode).await;
            // Only the relay is offered as a candidate.
            answer_with_candidate(&mut sink, pc, sdp, mid, relay.port()).await;
            pcs.push(server_pc);
        }
        for pc in pcs {
            let _ = pc.close().await;
        }
    })
    .await
}

/// A UDP relay: the client talks to `front`, the answerer at `server` sees `back`. Nothing
/// passes for [`STALL`] after the first datagram from the client; afterwards both ways pass.
/// Bounded: it ends when the test's runtime does.
async fn start_relay(server: SocketAddr, mode: Relay) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut open_at: Option<Instant> = None;
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    client = Some(from);
                    let stall = match mode {
                        Relay::Stall => STALL,
                        Relay::LoseAnswersToTheServer => Duration::ZERO,
                    };
                    let open = *open_at.get_or_insert_with(|| Instant::now() + stall);
                    // A STUN Binding success response: message type 0x0101.
                    let answer = n >= 20 && a[0] == 0x01 && a[1] == 0x01;
                    let lost = matches!(mode, Relay::LoseAnswersToTheServer) && answer;
                    if Instant::now() >= open && !lost {
                        let _ = back.send_to(&a[..n], server).await;
                    }
                }
                Ok((n, _)) = back.recv_from(&mut b) => {
                    if let (Some(c), Some(open)) = (client, open_at) {
                        if Instant::now() >= open {
                            let _ = front.send_to(&b[..n], c).await;
                        }
                    }
                }
            }
        }
    });
    addr
}

fn opts(url: &str, ice_check_window: Duration) -> ClientOptions {
    let mut o = ClientOptions::new(url, "site-stall").publish(true, false);
    o.ice_tcp = false;
    o.ice_check_window = ice_check_window;
    // The default: the recovery of last resort, far beyond this test's wait.
    o.connect_timeout = Duration::from_secs(20);
    // The mock sends no WebSocket pings: keep the silence timeout out of it.
    o.signalling_timeout = Duration::ZERO;
    o
}

/// Waits (bounded by `limit`) until the publisher connection reports `connected`; returns
/// how long that took from `since`, or `None`.
async fn connected_within(client: &Client, since: Instant, limit: Duration) -> Option<Duration> {
    let end = since + limit;
    while Instant::now() < end {
        if client.stats().publisher_state.as_deref() == Some("connected") {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_crates_default_a_3_s_stall_leaves_the_leg_connecting() {
    let (url, mut resumes) = start_mock(Relay::Stall).await;
    let started = Instant::now();
    let client = Client::connect(opts(&url, Duration::ZERO)).await.unwrap();
    // The relay forwards again 3 s after the first check; the agent gave the pair up after
    // ~1.6 s and sends nothing more, so nothing ever reaches the answerer.
    let got = connected_within(&client, started, Duration::from_secs(10)).await;
    assert_eq!(got, None, "connected although the agent gave the pair up");
    let report = client.stats();
    assert_ne!(
        report.publisher_state.as_deref(),
        Some("failed"),
        "{report:?}"
    );
    assert!(
        resumes.try_recv().is_err(),
        "resumed before connect_timeout"
    );
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_whose_checks_go_unanswered_for_3_s_connects_when_the_server_answers_again() {
    let (url, mut resumes) = start_mock(Relay::Stall).await;
    let started = Instant::now();
    // The default window (20 s).
    let window = ClientOptions::new(&url, "site-stall").ice_check_window;
    assert!(window > STALL * 2, "{window:?}");
    let client = Client::connect(opts(&url, window)).await.unwrap();
    let got = connected_within(&client, started, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still {:?} after 10 s", client.stats().publisher_state));
    assert!(got >= STALL, "connected after {got:?}, during the stall");
    assert!(
        resumes.try_recv().is_err(),
        "the leg was reset instead of connecting"
    );
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lite_server_that_never_hears_the_answers_to_its_own_checks_still_takes_the_nomination() {
    let (url, mut resumes) = start_mock(Relay::LoseAnswersToTheServer).await;
    let started = Instant::now();
    let window = ClientOptions::new(&url, "site-stall").ice_check_window;
    let client = Client::connect(opts(&url, window)).await.unwrap();
    // Upstream: the client's pair succeeds (the answerer answers its plain checks), the
    // client nominates it, and the answerer replies to each nomination only with a check of
    // its own whose answer it never gets: `connecting` until connect_timeout (20 s).
    connected_within(&client, started, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still {:?} after 10 s", client.stats().publisher_state));
    assert!(
        resumes.try_recv().is_err(),
        "the leg was reset instead of connecting"
    );
    client.disconnect().await;
}
