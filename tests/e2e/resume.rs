//! Resume: a participant whose signalling connection drops is kept for `server.resume_grace`
//! and may continue as the same participant with the `resume_token` from `joined`; nobody
//! sees it leave. After the grace window it is removed, and a late resume becomes a new session.
//! A participant whose *media* fails is removed for everyone but parked: it comes back as the
//! same participant with its media reset, and the attendance register shows one stay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::SinkExt;
use rakor_client::{Client, ClientOptions};
use rakor_e2e::netns::{unix_ms, Probe, ProbeLine};
use rakor_e2e::session::{add_rakor, add_site, Api, Persistent, PASSWORD};
use rakor_e2e::{raw_next_json, raw_ws, sign_claims, unix_now, RawWs, Server};
use rakor_proto::{LeaveReason, ServerMessage, TrackKind};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
const PROBE: &str = env!("CARGO_BIN_EXE_probe-client");
/// `limits.dead_peer_timeout` for the parking tests (shorter than the default 10 s).
const DEAD_PEER: Duration = Duration::from_secs(4);

async fn raw_join(server: &Server, token: &str, resume: Option<(&str, &str)>) -> (RawWs, Value) {
    let mut ws = raw_ws(&server.ws_url()).await.unwrap();
    let mut join = json!({"type":"join","version":1,"token":token});
    if let Some((pid, rt)) = resume {
        join["resume"] = json!({"participant_id": pid, "token": rt});
    }
    ws.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let m = raw_next_json(&mut ws, WAIT).await.unwrap().expect("joined");
        if m["type"] == "joined" {
            return (ws, m);
        }
        assert_ne!(m["type"], "error", "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_signalling_resumes_as_the_same_participant() {
    let server = Server::start_with_env(&[], &[("RAKOR_SERVER_RESUME_GRACE", "3s")]).unwrap();
    let publisher = Client::connect(ClientOptions::new(
        server.ws_url(),
        server.token("r", "pub", "host").unwrap(),
    ))
    .await
    .unwrap();
    let mut watcher = Client::connect(
        ClientOptions::new(
            server.ws_url(),
            server.token("r", "watch", "participant").unwrap(),
        )
        .receive_only(),
    )
    .await
    .unwrap();
    let token = server.token("r", "site-7", "participant").unwrap();

    let (ws, joined) = raw_join(&server, &token, None).await;
    assert_eq!(joined["resumed"], false);
    let pid = joined["participant_id"].as_str().unwrap().to_owned();
    let rt = joined["resume_token"].as_str().unwrap().to_owned();
    assert!(rt.len() >= 16, "resume token too short: {rt}");
    // Drop the socket without `leave` (no close frame): a network failure as the server sees it.
    drop(ws);

    // A wrong resume token does not take the session over: it becomes a new participant
    // (and, having the same identity, replaces the suspended one).
    // First: the right token continues the same participant.
    let (mut ws2, joined2) = raw_join(&server, &token, Some((&pid, &rt))).await;
    assert_eq!(joined2["resumed"], true, "{joined2}");
    assert_eq!(joined2["participant_id"], pid.as_str());
    let others: Vec<&str> = joined2["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect();
    assert!(
        others.contains(&"pub") && others.contains(&"watch"),
        "{others:?}"
    );
    // Still in the room: ping works on the new socket.
    ws2.send(Message::text(json!({"type":"ping","ts":9}).to_string()))
        .await
        .unwrap();
    loop {
        let m = raw_next_json(&mut ws2, WAIT).await.unwrap().unwrap();
        if m["type"] == "pong" {
            break;
        }
    }
    // The watcher never saw site-7 leave or join twice; media kept flowing meanwhile.
    let pub_id = publisher.participant_id().clone();
    watcher
        .wait_media(
            |r| {
                r.received_track(&pub_id, TrackKind::Video)
                    .is_some_and(|t| t.packets > 30)
            },
            WAIT,
        )
        .await
        .unwrap();
    let seen: Vec<ServerMessage> = watcher.drain_events();
    let left = seen.iter().filter(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if participant_id.0 == pid)).count();
    let joins = seen.iter().filter(|m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.identity == "site-7")).count();
    assert_eq!((left, joins), (0, 1), "events: {seen:?}");

    // Drop again and let the grace window pass: now everyone sees it leave.
    drop(ws2);
    let t0 = Instant::now();
    let m = watcher
        .wait_for(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if participant_id.0 == pid), WAIT)
        .await
        .unwrap();
    assert!(matches!(
        m,
        ServerMessage::ParticipantLeft {
            reason: LeaveReason::Disconnected,
            ..
        }
    ));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "removed before the grace window: {waited:?}"
    );

    // A resume after that is a new session with a new id.
    let (_ws3, joined3) = raw_join(&server, &token, Some((&pid, &rt))).await;
    assert_eq!(joined3["resumed"], false);
    assert_ne!(joined3["participant_id"], pid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_resume_token_gets_a_new_session() {
    let server = Server::start().unwrap();
    let token = server.token("r", "site-1", "participant").unwrap();
    let (ws, joined) = raw_join(&server, &token, None).await;
    let pid = joined["participant_id"].as_str().unwrap().to_owned();
    drop(ws);
    // Let the server notice the drop first: until then site-1 counts as connected elsewhere,
    // and a resume that fails is answered `replaced` (the rule for stale tabs).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_ws2, j2) = raw_join(
        &server,
        &token,
        Some((&pid, "not-the-secret-not-the-secret-xx")),
    )
    .await;
    assert_eq!(j2["resumed"], false);
    assert_ne!(j2["participant_id"], pid.as_str());
    // Another identity cannot resume site-1's session even with its id.
    let other = server.token("r", "site-2", "participant").unwrap();
    let (_ws3, j3) = raw_join(&server, &other, Some((&pid, "x"))).await;
    assert_eq!(j3["resumed"], false);
}

/// A TCP relay in front of the server's HTTP port whose connections can be cut (the
/// signalling WebSocket drops; UDP media is untouched).
struct CuttableRelay {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    /// While true, new connections are closed at once (the link stays down).
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CuttableRelay {
    async fn start(target: std::net::SocketAddr) -> CuttableRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, rx) = tokio::sync::watch::channel(0u64);
        let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_held = held.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_held.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut rx = rx.clone();
                rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.changed() => {} // cut: both sockets dropped
                    }
                });
            }
        });
        CuttableRelay { addr, cut, held }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Keep the link down (`true`: new connections are closed at once) or let it come back.
    fn hold(&self, on: bool) {
        self.held.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Chat sent while a site's signalling is down reaches it after the resume: the client names
/// the last chat it saw (`join.resume.last_chat_id`) and gets the messages after it
/// (`chat_history {after}`), in order; none is lost and none arrives twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_client_gets_the_chat_it_missed() {
    let server = Server::start().unwrap();
    let relay = CuttableRelay::start(server.http).await;
    let mut site = Client::connect(
        ClientOptions::new(
            format!("ws://{}/rtc", relay.addr),
            server.token("r", "site-4", "participant").unwrap(),
        )
        .receive_only(),
    )
    .await
    .unwrap();
    let mut host = Client::connect(
        ClientOptions::new(
            server.ws_url(),
            server.token("r", "command-room", "host").unwrap(),
        )
        .receive_only(),
    )
    .await
    .unwrap();
    let is_chat = |text: &str| {
        let text = text.to_owned();
        move |m: &ServerMessage| matches!(m, ServerMessage::Chat(c) if c.text == text)
    };
    host.chat("sebelum putus").await.unwrap();
    let ServerMessage::Chat(first) = site.wait_for(is_chat("sebelum putus"), WAIT).await.unwrap()
    else {
        unreachable!()
    };

    relay.hold(true);
    relay.cut_all();
    let missed = ["selama putus 1", "selama putus 2", "selama putus 3"];
    for text in missed {
        host.chat(text).await.unwrap();
        host.wait_for(is_chat(text), WAIT).await.unwrap();
    }
    relay.hold(false);

    // Everything the site receives until the chat history that follows its resume.
    let mut live: Vec<(String, String)> = Vec::new();
    let mut resumed = false;
    let (after, history) = loop {
        let m = site
            .next_event_timeout(Duration::from_secs(20))
            .await
            .unwrap();
        match m {
            ServerMessage::Chat(c) => live.push((c.id, c.text)),
            ServerMessage::Joined { resumed: r, .. } => {
                assert!(r, "the site resumed its session");
                resumed = true;
            }
            ServerMessage::ChatHistory { messages, after } if resumed => break (after, messages),
            _ => {}
        }
    };
    // `after` is the last message the site had before the cut.
    let last_seen = live.last().map_or(first.id.clone(), |(id, _)| id.clone());
    assert_eq!(after, Some(last_seen), "{live:?}");
    let before_cut: Vec<&str> = std::iter::once(first.text.as_str())
        .chain(live.iter().map(|(_, t)| t.as_str()))
        .collect();
    // What arrived live plus the history: each message once, in order.
    let all: Vec<&str> = before_cut
        .iter()
        .copied()
        .chain(history.iter().map(|c| c.text.as_str()))
        .collect();
    let mut want = vec!["sebelum putus"];
    want.extend(missed);
    assert_eq!(all, want);
    assert!(
        !history.is_empty(),
        "the cut lost messages that the resume brought back"
    );
    // Chat goes on live after the resume.
    host.chat("setelah").await.unwrap();
    site.wait_for(is_chat("setelah"), WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headless_client_resumes_by_itself_and_media_keeps_flowing() {
    let server = Server::start().unwrap();
    let relay = CuttableRelay::start(server.http).await;
    let url = format!("ws://{}/rtc", relay.addr);
    let mut site = Client::connect(ClientOptions::new(
        url,
        server.token("r", "site-3", "participant").unwrap(),
    ))
    .await
    .unwrap();
    let mut watcher = Client::connect(
        ClientOptions::new(server.ws_url(), server.token("r", "watch", "host").unwrap())
            .receive_only(),
    )
    .await
    .unwrap();
    let site_id = site.participant_id().clone();
    watcher
        .wait_media(
            |r| {
                r.received_track(&site_id, TrackKind::Video)
                    .is_some_and(|t| t.packets > 30)
            },
            WAIT,
        )
        .await
        .unwrap();

    let t0 = Instant::now();
    relay.cut_all();
    let m = site
        .wait_for(
            |m| matches!(m, ServerMessage::Joined { resumed: true, .. }),
            WAIT,
        )
        .await
        .expect("the client resumed");
    let ServerMessage::Joined { participant_id, .. } = m else {
        unreachable!()
    };
    assert_eq!(participant_id, site_id, "same participant after the resume");
    println!("signalling resumed {:?} after the cut", t0.elapsed());
    // Signalling works again: a ping round trip.
    site.ping(5).await.unwrap();
    site.wait_for(|m| matches!(m, ServerMessage::Pong { ts: 5 }), WAIT)
        .await
        .unwrap();
    // Media never stopped and the watcher never saw the site leave.
    let before = watcher
        .stats()
        .received_track(&site_id, TrackKind::Video)
        .map_or(0, |t| t.packets);
    watcher
        .wait_media(
            |r| {
                r.received_track(&site_id, TrackKind::Video)
                    .is_some_and(|t| t.packets > before + 30)
            },
            WAIT,
        )
        .await
        .unwrap();
    let gone = watcher
        .drain_events()
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if *participant_id == site_id))
        .count();
    assert_eq!(gone, 0);
    assert!(!site.is_closed());
}

/// Freeze or thaw a process (SIGSTOP/SIGCONT): its WebSocket and ICE consent checks stop as if
/// its network had died, without anything being closed.
fn signal(p: &Probe, sig: &str) {
    let pid = p.proc.pid().expect("probe running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn packets_from(p: &mut Probe, from: &str) -> u64 {
    let r = p.latest_report(Duration::from_secs(5)).unwrap();
    r.received_packets(
        &rakor_proto::ParticipantId(from.to_owned()),
        TrackKind::Video,
    )
}

/// Poll `p`'s reports until its video from `from` passed `min` packets; the time it took.
fn wait_packets(p: &mut Probe, from: &str, min: u64, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let n = packets_from(p, from);
        if n >= min {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "{}: video from {from} stuck at {n} packets (want {min})",
            p.proc.label
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Server messages of type `ty` that `p` printed at or after `since` (Unix ms).
fn events<'a>(
    p: &'a Probe,
    ty: &'a str,
    since: u64,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    p.seen.iter().filter_map(move |(t, l)| match l {
        ProbeLine::Event(e) if *t >= since && e["type"] == ty => Some(e),
        _ => None,
    })
}

/// Media fails (the site's process frozen past the dead-peer timeout, inside the grace window):
/// the room sees it leave (`media_failed`) in time; when it thaws, `rakor-client` resumes by
/// itself, the server answers `media_reset`, the same participant id rejoins, publishes again
/// and receives again; and the attendance register shows one continuous stay.
#[test]
fn media_failure_parks_the_site_and_it_resumes_with_one_attendance_stay() {
    let p = Persistent::new().unwrap();
    let out = p.add_operator("operator", PASSWORD).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = p.config.display().to_string();
    let server = Server::start_with_env(
        &["--config", &cfg],
        &[("RAKOR_LIMITS_DEAD_PEER_TIMEOUT", "4s")],
    )
    .unwrap();
    let mut api = Api::new(server.http);
    api.login("operator", PASSWORD).unwrap();
    let host = add_site(&api, "Command Room", "other").unwrap();
    let site_id = add_site(&api, "Puskesmas Kota", "puskesmas").unwrap();
    let v = add_rakor(&api, "Rakor ketahanan", host, &[site_id], 120, 60).unwrap();
    let rakor = v["id"].as_i64().unwrap();
    let room = v["room"].as_str().expect("the rakor's room").to_owned();
    let now = unix_now();
    let tok = |sub: &str, role: &str| {
        sign_claims(
            &p.key,
            &json!({"sub": sub, "room": room, "name": sub, "role": role,
                    "iat": now, "exp": now + 3600, "iss": "rakor"}),
        )
        .unwrap()
    };
    let url = server.ws_url();
    let mut watcher = Probe::start(
        None,
        Path::new(PROBE),
        &url,
        &tok("command-room", "host"),
        "127.0.0.1",
        &["audio", "video"],
        "watch",
    )
    .unwrap();
    let mut site = Probe::start(
        None,
        Path::new(PROBE),
        &url,
        &tok("puskesmas-kota", "participant"),
        "127.0.0.1",
        &["audio", "video"],
        "site",
    )
    .unwrap();
    let (watch_pid, site_pid) = (watcher.participant_id.clone(), site.participant_id.clone());
    wait_packets(&mut watcher, &site_pid, 30, Duration::from_secs(20));
    wait_packets(&mut site, &watch_pid, 30, Duration::from_secs(20));

    let before_site = packets_from(&mut site, &watch_pid);
    let t0 = unix_ms();
    signal(&site, "-STOP");
    let (t_left, reason) = watcher
        .wait_left(&site_pid, Duration::from_secs(10))
        .unwrap();
    let took = Duration::from_millis(t_left.saturating_sub(t0));
    eprintln!("MEASURED frozen site: participant_left ({reason}) after {took:?}");
    assert_eq!(reason, "media_failed");
    assert!(took < DEAD_PEER + Duration::from_millis(800), "{took:?}");
    // Past the dead-peer timeout, well inside the 30 s grace window.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(took));
    let before_watch = packets_from(&mut watcher, &site_pid);
    signal(&site, "-CONT");
    let up = Instant::now();
    watcher
        .wait(WAIT, |l| match l {
            ProbeLine::Event(e)
                if e["type"] == "participant_joined"
                    && e["participant"]["id"] == site_pid.as_str() =>
            {
                Some(())
            }
            _ => None,
        })
        .unwrap();
    let rejoined = up.elapsed();
    // Upper bounds: the probes report every 500 ms.
    wait_packets(&mut watcher, &site_pid, before_watch + 5, WAIT);
    let back = up.elapsed();
    wait_packets(&mut site, &watch_pid, before_site + 5, WAIT);
    let receives = up.elapsed();
    eprintln!(
        "MEASURED parked site thawed: participant_joined (same id) after {rejoined:?}, its video at the watcher by {back:?}, the watcher's video at the site by {receives:?}"
    );
    // The site was told: resumed, media reset; the same participant throughout.
    let resumed: Vec<&serde_json::Value> = events(&site, "joined", 0).collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0]["resumed"], true);
    assert_eq!(resumed[0]["media_reset"], true);
    assert_eq!(resumed[0]["participant_id"], site_pid.as_str());
    // The watcher saw one leave and one join of that id, and nobody else join.
    let left = events(&watcher, "participant_left", t0).count();
    let joined: Vec<&serde_json::Value> = events(&watcher, "participant_joined", t0).collect();
    assert_eq!(left, 1);
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!(joined[0]["participant"]["id"], site_pid.as_str());

    // The register: one row for the site, one join, no reconnect, present.
    let reg = api
        .get(&format!("/api/v1/rakor/{rakor}/attendance"))
        .unwrap()
        .json()
        .unwrap();
    let row = reg["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["identity"] == "puskesmas-kota")
        .unwrap_or_else(|| panic!("no row for the site: {reg}"))
        .clone();
    assert_eq!(row["joins"], 1, "{row}");
    assert_eq!(row["reconnects"], 0, "{row}");
    assert_eq!(row["status"], "present", "{row}");
    assert!(row["last_leave_utc"].is_null(), "{row}");
    drop(site);
    drop(watcher);
}

/// A parked session whose grace window has passed is gone: the resume (with the right token,
/// sent by `rakor-client` when it thaws) gets `joined {resumed: false}` with a new id — the
/// documented answer — and the client stays as that new participant (`rejoin`), publishing
/// again; the old id never comes back.
#[test]
fn an_expired_park_refuses_the_resume() {
    let server = Server::start_with_env(
        &[],
        &[
            ("RAKOR_LIMITS_DEAD_PEER_TIMEOUT", "4s"),
            ("RAKOR_SERVER_RESUME_GRACE", "5s"),
        ],
    )
    .unwrap();
    let url = server.ws_url();
    let mut watcher = Probe::start(
        None,
        Path::new(PROBE),
        &url,
        &server.token("r", "command-room", "host").unwrap(),
        "127.0.0.1",
        &[],
        "watch",
    )
    .unwrap();
    let mut site = Probe::start(
        None,
        Path::new(PROBE),
        &url,
        &server.token("r", "site-9", "participant").unwrap(),
        "127.0.0.1",
        &["audio", "video"],
        "site",
    )
    .unwrap();
    let site_pid = site.participant_id.clone();
    wait_packets(&mut watcher, &site_pid, 30, Duration::from_secs(20));
    let t0 = Instant::now();
    let t0_ms = unix_ms();
    signal(&site, "-STOP");
    let (_, reason) = watcher
        .wait_left(&site_pid, Duration::from_secs(10))
        .unwrap();
    assert_eq!(reason, "media_failed");
    // The window (5 s) counts from when the site was first lost (~3 s): over by ~8 s.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(t0.elapsed()));
    signal(&site, "-CONT");
    let answer = site
        .wait(WAIT, |l| match l {
            ProbeLine::Event(e) if e["type"] == "joined" => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(answer["resumed"], false, "{answer}");
    let new_pid = answer["participant_id"].as_str().unwrap().to_owned();
    assert_ne!(new_pid, site_pid, "{answer}");
    // rakor-client (`ClientOptions::rejoin`, on by default) stays as that new participant and
    // publishes again: the watcher receives the new participant's media. By then it has seen
    // everything about the old id, which must never have come back.
    wait_packets(&mut watcher, &new_pid, 30, Duration::from_secs(20));
    let back = events(&watcher, "participant_joined", t0_ms)
        .filter(|e| e["participant"]["id"] == site_pid.as_str())
        .count();
    assert_eq!(back, 0, "the expired participant came back");
    let left = events(&watcher, "participant_left", t0_ms)
        .filter(|e| e["participant_id"] == site_pid.as_str())
        .count();
    assert_eq!(left, 1);
}
