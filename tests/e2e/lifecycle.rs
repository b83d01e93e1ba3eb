//! The process around the call: health check, the printed token command, and SIGTERM during
//! an active call (clients are told `leave {reason: server_shutdown}`, the process exits 0).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions};
use rakor_e2e::{http_get, Server};
use rakor_proto::{LeaveReason, TrackKind};
use std::time::{Duration, Instant};

#[test]
fn healthz_reports_ok_and_version() {
    let server = Server::start().unwrap();
    let (status, body) = http_get(server.http, "/healthz").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert_eq!(v["status"], "ok");
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(http_get(server.http, "/nope").unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_call_tells_clients_and_exits_zero() {
    let mut server = Server::start().unwrap();
    let mut a = Client::connect(ClientOptions::new(
        server.ws_url(),
        server.token("r", "a", "host").unwrap(),
    ))
    .await
    .unwrap();
    let mut b = Client::connect(
        ClientOptions::new(
            server.ws_url(),
            server.token("r", "b", "participant").unwrap(),
        )
        .receive_only(),
    )
    .await
    .unwrap();
    let a_id = a.participant_id().clone();
    b.wait_media(
        |r| {
            r.received_track(&a_id, TrackKind::Video)
                .is_some_and(|t| t.packets > 20)
        },
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let st = server.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
        (st, server)
    });
    assert_eq!(
        a.closed(Duration::from_secs(10)).await.unwrap(),
        Some(LeaveReason::ServerShutdown)
    );
    assert_eq!(
        b.closed(Duration::from_secs(10)).await.unwrap(),
        Some(LeaveReason::ServerShutdown)
    );
    let (st, _server) = status.await.unwrap();
    let st = st.unwrap();
    assert!(st.success(), "exit status {st:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t0.elapsed()
    );
}

#[test]
fn start_banner_prints_a_token_command_that_works() {
    let server = Server::start().unwrap();
    // The banner's token command names this data dir; minting with it yields a join URL.
    let token = server.token("rakor-demo", "command-room", "host").unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT has three parts");
}
