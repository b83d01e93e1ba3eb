//! Fault test: one participant behind a 200 ms (each way) link, made by a userspace relay
//! because the kernel here has no `sch_netem` (../shared/recipes/network-faults.md).
//!
//! Design, everything on loopback and in this process:
//! - The real `rakor serve` binds HTTP and media on 127.0.0.1 (ephemeral ports).
//! - A **UDP relay** listens on 127.0.0.1:0 and forwards datagrams between the delayed participant
//!   and the server's media port, like a NAT: every client source address gets its own upstream
//!   socket (so the server's demux sees one distinct address per peer connection, as it would
//!   behind a NAT). Each direction is a FIFO timer queue: the reader stamps a datagram with its
//!   arrival time and queues it (bounded; overflow is dropped and counted, like a router queue),
//!   the writer sleeps until *that* datagram is due and sends it. The delay is constant, so the
//!   FIFO is in due order and no datagram waits longer than its own 200 ms.
//! - The server is ICE-lite and writes its own host candidates (`127.0.0.1 <media port>`), and
//!   `rakor_client::ClientOptions` has no way to rewrite a remote candidate. So the delayed
//!   participant's **signalling** goes through a WebSocket proxy in this test, which forwards
//!   every message unchanged except that the server's candidate `127.0.0.1 <media port> typ` is
//!   rewritten to the relay's address (in the SDP and in trickled candidates). The proxy delays
//!   messages 200 ms each way too: the whole link is slow, not only media. WebSocket ping/pong
//!   is answered per hop by tungstenite (it is not forwarded).
//! - The other participants (publisher, watcher) connect to the server directly.
//!
//! The relay measures the ICE round trip the delayed client sees: a STUN binding request from the
//! client is matched (by transaction id) to the server's response as delivered back to the client.
//!
//! Asserted: the delayed participant keeps receiving the publisher's video (frames and keyframes
//! increase over 12 s, no payload mismatches), its own video reaches an undelayed watcher, and
//! the watcher's video from the publisher is unaffected. Figures are printed (`--no-capture`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::{SinkExt, StreamExt};
use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::Server;
use rakor_proto::{ParticipantId, TrackKind};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const DELAY: Duration = Duration::from_millis(200);
/// Datagrams queued per direction at most (≈ 200 ms of far more than this test sends).
const QUEUE: usize = 4096;
/// Client source addresses the relay maps at most (two peer connections, plus ICE restarts).
const MAX_MAPPINGS: usize = 16;
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

#[derive(Default)]
struct RelayStats {
    to_server: AtomicU64,
    to_client: AtomicU64,
    dropped: AtomicU64,
    candidates_rewritten: AtomicU64,
    /// STUN binding requests seen from the client, by transaction id: when they reached the relay.
    stun_pending: Mutex<HashMap<[u8; 12], Instant>>,
    /// Request-to-response round trips as seen by the client.
    stun_rtts: Mutex<Vec<Duration>>,
}

/// (STUN message type, transaction id) of a STUN datagram.
fn stun(data: &[u8]) -> Option<(u16, [u8; 12])> {
    if data.len() < 20 || data[0] & 0xC0 != 0 || data[4..8] != STUN_MAGIC {
        return None;
    }
    let mut tx = [0u8; 12];
    tx.copy_from_slice(&data[8..20]);
    Some((u16::from_be_bytes([data[0], data[1]]), tx))
}

/// Tasks of the relay and the proxy; aborted on drop.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The UDP relay: returns its client-facing address.
async fn udp_relay(server: SocketAddr, stats: Arc<RelayStats>, tasks: &mut Tasks) -> SocketAddr {
    let down = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = down.local_addr().unwrap();

    // server → client: (arrival, datagram, client address).
    let (down_tx, mut down_rx) = mpsc::channel::<(Instant, Vec<u8>, SocketAddr)>(QUEUE);
    {
        let down = down.clone();
        let stats = stats.clone();
        tasks.0.push(tokio::spawn(async move {
            while let Some((t, data, to)) = down_rx.recv().await {
                tokio::time::sleep_until(t + DELAY).await;
                if down.send_to(&data, to).await.is_ok() {
                    stats.to_client.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((0x0101, tx)) = stun(&data) {
                    if let Some(t0) = stats.stun_pending.lock().unwrap().remove(&tx) {
                        stats.stun_rtts.lock().unwrap().push(t0.elapsed());
                    }
                }
            }
        }));
    }

    // client → server: (arrival, datagram, the upstream socket of that client address).
    let (up_tx, mut up_rx) = mpsc::channel::<(Instant, Vec<u8>, Arc<UdpSocket>)>(QUEUE);
    {
        let stats = stats.clone();
        tasks.0.push(tokio::spawn(async move {
            while let Some((t, data, sock)) = up_rx.recv().await {
                tokio::time::sleep_until(t + DELAY).await;
                if sock.send(&data).await.is_ok() {
                    stats.to_server.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Reader of the client side; makes one upstream socket (and its reader) per client address.
    let reader = tokio::spawn(async move {
        // Aborted with this task (its future is dropped).
        let mut upstream_readers = Tasks(Vec::new());
        let mut map: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, from)) = down.recv_from(&mut buf).await else {
                return;
            };
            let now = Instant::now();
            let data = buf[..n].to_vec();
            let sock = match map.get(&from) {
                Some(s) => s.clone(),
                None if map.len() < MAX_MAPPINGS => {
                    let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    s.connect(server).await.unwrap();
                    map.insert(from, s.clone());
                    let (s2, down_tx, stats) = (s.clone(), down_tx.clone(), stats.clone());
                    upstream_readers.0.push(tokio::spawn(async move {
                        let mut buf = vec![0u8; 2048];
                        while let Ok(n) = s2.recv(&mut buf).await {
                            if down_tx
                                .try_send((Instant::now(), buf[..n].to_vec(), from))
                                .is_err()
                            {
                                stats.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }));
                    s
                }
                None => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            if let Some((0x0001, tx)) = stun(&data) {
                stats.stun_pending.lock().unwrap().insert(tx, now);
            }
            if up_tx.try_send((now, data, sock)).is_err() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tasks.0.push(reader);
    addr
}

/// Forward one direction of a WebSocket, each message `DELAY` late, rewriting text with `rewrite`.
fn ws_pump<R, W>(
    mut from: R,
    mut to: W,
    rewrite: impl Fn(&str) -> String + Send + 'static,
) -> JoinHandle<()>
where
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin
        + Send
        + 'static,
    W: futures_util::Sink<Message> + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Message)>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some((t, msg)) = rx.recv().await {
            tokio::time::sleep_until(t + DELAY).await;
            let close = matches!(msg, Message::Close(_));
            if to.send(msg).await.is_err() || close {
                break;
            }
        }
        let _ = to.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(msg)) = from.next().await {
            let msg = match msg {
                Message::Text(t) => Message::text(rewrite(t.as_str())),
                m @ (Message::Binary(_) | Message::Close(_)) => m,
                // Ping/Pong are answered per hop.
                _ => continue,
            };
            if tx.send((Instant::now(), msg)).await.is_err() {
                break;
            }
        }
        drop(tx);
        let _ = writer.await;
    })
}

/// The delayed participant's signalling path: returns the `ws://…/rtc` URL to give it.
async fn ws_proxy(
    server_url: String,
    media: SocketAddr,
    relay: SocketAddr,
    stats: Arc<RelayStats>,
    tasks: &mut Tasks,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/rtc", listener.local_addr().unwrap());
    let from = format!(" {} {} typ ", media.ip(), media.port());
    let to = format!(" {} {} typ ", relay.ip(), relay.port());
    tasks.0.push(tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let server_url = server_url.clone();
            let (from, to, stats) = (from.clone(), to.clone(), stats.clone());
            tokio::spawn(async move {
                let Ok(client_ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let Ok((server_ws, _)) = tokio_tungstenite::connect_async(&server_url).await else {
                    return;
                };
                let (c_tx, c_rx) = client_ws.split();
                let (s_tx, s_rx) = server_ws.split();
                let up = ws_pump(c_rx, s_tx, |t| t.to_owned());
                let down = ws_pump(s_rx, c_tx, move |t| {
                    let n = t.matches(from.as_str()).count() as u64;
                    if n > 0 {
                        stats.candidates_rewritten.fetch_add(n, Ordering::Relaxed);
                        t.replace(from.as_str(), &to)
                    } else {
                        t.to_owned()
                    }
                });
                let _ = tokio::join!(up, down);
            });
        }
    }));
    url
}

fn video(r: &Report, from: &ParticipantId) -> rakor_client::ReceivedTrackStats {
    r.received_track(from, TrackKind::Video)
        .cloned()
        .unwrap_or_else(|| panic!("no video from {from:?}: {}", r.to_json()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_site_keeps_receiving_video_and_others_are_unaffected() {
    let server = Server::start().unwrap();
    let stats = Arc::new(RelayStats::default());
    let mut tasks = Tasks(Vec::new());
    let relay = udp_relay(server.media, stats.clone(), &mut tasks).await;
    let far_url = ws_proxy(
        server.ws_url(),
        server.media,
        relay,
        stats.clone(),
        &mut tasks,
    )
    .await;
    eprintln!(
        "server media {} · relay {relay} · delayed signalling {far_url}",
        server.media
    );

    let tok = |id: &str| server.token("rakor", id, "participant").unwrap();
    let publisher = Client::connect(ClientOptions::new(server.ws_url(), tok("command-room")))
        .await
        .unwrap();
    let watcher = Client::connect(ClientOptions::new(server.ws_url(), tok("watch")).receive_only())
        .await
        .unwrap();
    let t_join = std::time::Instant::now();
    let far = Client::connect(ClientOptions::new(far_url, tok("far-site")))
        .await
        .unwrap();
    let joined_in = t_join.elapsed();
    let pub_id = publisher.participant_id().clone();
    let far_id = far.participant_id().clone();

    let has_video = |from: ParticipantId, min: u64| {
        move |r: &Report| {
            r.received_track(&from, TrackKind::Video)
                .is_some_and(|t| t.packets >= min)
        }
    };
    far.wait_media(has_video(pub_id.clone(), 30), Duration::from_secs(30))
        .await
        .unwrap();
    let far_media_in = t_join.elapsed();
    watcher
        .wait_media(has_video(far_id.clone(), 30), Duration::from_secs(30))
        .await
        .unwrap();
    watcher
        .wait_media(has_video(pub_id.clone(), 30), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        stats.candidates_rewritten.load(Ordering::Relaxed) > 0,
        "the server's candidate was never seen in the proxied signalling"
    );
    assert!(
        stats.to_server.load(Ordering::Relaxed) > 0 && stats.to_client.load(Ordering::Relaxed) > 0,
        "media did not go through the relay"
    );

    let f1 = far.stats();
    let w1 = watcher.stats();
    let window = Duration::from_secs(12);
    tokio::time::sleep(window).await;
    let f2 = far.stats();
    let w2 = watcher.stats();

    // The delayed participant receiving the publisher.
    let (a, b) = (video(&f1, &pub_id), video(&f2, &pub_id));
    let rtts = stats.stun_rtts.lock().unwrap().clone();
    let rtt_min = rtts.iter().min().copied().unwrap_or_default();
    let rtt_max = rtts.iter().max().copied().unwrap_or_default();
    eprintln!(
        "MEASURED 200 ms each way: joined via the proxy in {joined_in:?}; publisher's video at the delayed site {far_media_in:?} after its join began (first packet {:?} ms after the offer); ICE round trip seen by the client {rtt_min:?}..{rtt_max:?} over {} STUN checks",
        b.first_packet_ms,
        rtts.len()
    );
    eprintln!(
        "MEASURED delayed site over {window:?}: frames +{} ({:.1}/s), keyframes +{}, packets +{}, seq gaps {}, out of order {}, PLIs sent {}, mismatches {}",
        b.frames - a.frames,
        (b.frames - a.frames) as f64 / window.as_secs_f64(),
        b.keyframes - a.keyframes,
        b.packets - a.packets,
        b.seq_gaps,
        b.out_of_order,
        b.plis_sent,
        b.payload_mismatches
    );
    // 15 fps × 12 s = 180 frames; a delay alone loses nothing.
    assert!(
        b.frames - a.frames >= 150,
        "the delayed site's video slowed: {} → {}",
        a.frames,
        b.frames
    );
    assert!(
        b.keyframes > a.keyframes,
        "no new keyframe at the delayed site"
    );
    assert_eq!(b.payload_mismatches, 0);
    assert!(
        rtt_min >= 2 * DELAY && rtt_max < Duration::from_secs(2),
        "round trip through the relay {rtt_min:?}..{rtt_max:?} (expected ≥ {:?})",
        2 * DELAY
    );

    // The delayed participant's own video at the undelayed watcher.
    let (a, b) = (video(&w1, &far_id), video(&w2, &far_id));
    eprintln!(
        "MEASURED watcher ← delayed site over {window:?}: frames +{} ({:.1}/s), keyframes +{}, seq gaps {}, mismatches {}",
        b.frames - a.frames,
        (b.frames - a.frames) as f64 / window.as_secs_f64(),
        b.keyframes - a.keyframes,
        b.seq_gaps,
        b.payload_mismatches
    );
    assert!(
        b.frames - a.frames >= 150,
        "the delayed site's video at the watcher slowed: {} → {}",
        a.frames,
        b.frames
    );
    assert_eq!(b.payload_mismatches, 0);

    // The watcher's video from the publisher: unaffected.
    let (a, b) = (video(&w1, &pub_id), video(&w2, &pub_id));
    eprintln!(
        "MEASURED watcher ← publisher over {window:?}: frames +{} ({:.1}/s), seq gaps {}, mismatches {}",
        b.frames - a.frames,
        (b.frames - a.frames) as f64 / window.as_secs_f64(),
        b.seq_gaps,
        b.payload_mismatches
    );
    assert!(
        b.frames - a.frames >= 150,
        "the unaffected watcher's video slowed: {} → {}",
        a.frames,
        b.frames
    );
    assert_eq!(b.payload_mismatches, 0);
    assert!(w2.errors.is_empty(), "watcher errors: {:?}", w2.errors);
    assert!(f2.errors.is_empty(), "delayed site errors: {:?}", f2.errors);
    eprintln!(
        "MEASURED relay: {} datagrams to the server, {} to the client, {} dropped (queue/mappings)",
        stats.to_server.load(Ordering::Relaxed),
        stats.to_client.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed)
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);

    drop(far);
    drop(watcher);
    drop(publisher);
    drop(tasks);
}
