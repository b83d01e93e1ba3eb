//! Hostile clients before `join`, against the real `rakor` binary on loopback (issue 13, items
//! 1 and 8): sockets that never join are capped per client address and closed at the
//! first-frame deadline, a participant whose connection dropped still resumes while strangers
//! behind its address hold every pre-join slot, and the lobby is under the same limits (its
//! waiting connections count, its messages are size- and rate-limited, its wait is bounded)
//! while the operator's admit still works. Every test checks that a participant already in a
//! room keeps receiving media. Attackers use other loopback addresses (127.0.0.x) than the
//! participants; each socket binds its source address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use rakor_client::{Client, ClientOptions};
use rakor_e2e::session::{add_rakor, add_site, token_of, Api, Persistent, PASSWORD};
use rakor_e2e::{RawWs, Server};
use rakor_proto::{ParticipantId, TrackKind};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A signalling WebSocket from source address `src`.
async fn ws_from(src: IpAddr, http: SocketAddr) -> Result<RawWs> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let stream = sock.connect(http).await?;
    let url = format!("ws://{http}/rtc");
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await?;
    Ok(ws)
}

async fn send(ws: &mut RawWs, v: Value) -> Result<()> {
    ws.send(Message::Text(v.to_string().into())).await?;
    Ok(())
}

/// What the server said before closing: the JSON messages, then the Close frame's code and
/// reason (`None` if the TCP connection ended without one). Fails if the socket is still open
/// after `timeout`.
async fn until_closed(
    ws: &mut RawWs,
    timeout: Duration,
) -> Result<(Vec<Value>, Option<(u16, String)>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut msgs = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("still open after {timeout:?}; got {msgs:?}"),
            Ok(None) | Ok(Some(Err(_))) => return Ok((msgs, None)),
            Ok(Some(Ok(Message::Close(f)))) => {
                // Let the stream answer the Close (the server waits for it).
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
                return Ok((msgs, f.map(|f| (u16::from(f.code), f.reason.to_string()))));
            }
            Ok(Some(Ok(Message::Text(t)))) => msgs.push(serde_json::from_str(t.as_str())?),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The next JSON message of `type` `ty` (others skipped), at most `WAIT`.
async fn next_of(ws: &mut RawWs, ty: &str) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("no {ty} within {WAIT:?}"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                bail!("closed while waiting for {ty}")
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str())?;
                if v["type"] == ty {
                    return Ok(v);
                }
                if v["type"] == "error" {
                    bail!("error while waiting for {ty}: {v}");
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The one `error` before the close, its code, and the close reason.
fn refusal(closed: &(Vec<Value>, Option<(u16, String)>)) -> (String, String, String) {
    let (msgs, close) = closed;
    let err = msgs
        .iter()
        .find(|m| m["type"] == "error")
        .unwrap_or_else(|| panic!("no error before the close: {msgs:?}"));
    let (code, reason) = close
        .clone()
        .unwrap_or_else(|| panic!("no Close frame after {err}"));
    assert_eq!(code, 1000, "{reason}");
    (
        err["code"].as_str().unwrap_or_default().to_owned(),
        err["message"].as_str().unwrap_or_default().to_owned(),
        reason,
    )
}

/// A publishing participant and a watcher in room `r`, media flowing between them (from
/// 127.0.0.1, the default source).
struct Bystanders {
    _publisher: Client,
    watcher: Client,
    pid: ParticipantId,
}

impl Bystanders {
    async fn start(url: &str, publisher: String, watcher: String) -> Result<Self> {
        let publisher = Client::connect(ClientOptions::new(url, publisher)).await?;
        let watcher = Client::connect(ClientOptions::new(url, watcher).receive_only()).await?;
        let pid = publisher.participant_id().clone();
        let b = Self {
            _publisher: publisher,
            watcher,
            pid,
        };
        b.media_flows().await?;
        Ok(b)
    }

    /// At least 20 more video packets arrive at the watcher.
    async fn media_flows(&self) -> Result<()> {
        let before = self
            .watcher
            .stats()
            .received_track(&self.pid, TrackKind::Video)
            .map_or(0, |t| t.packets);
        self.watcher
            .wait_media(
                |r| {
                    r.received_track(&self.pid, TrackKind::Video)
                        .is_some_and(|t| t.packets >= before + 20)
                },
                Duration::from_secs(20),
            )
            .await
            .map_err(|e| anyhow!("media stopped: {e}"))?;
        Ok(())
    }
}

async fn bystanders(server: &Server) -> Result<Bystanders> {
    Bystanders::start(
        &server.ws_url(),
        server.token("r", "pub", "host")?,
        server.token("r", "watch", "participant")?,
    )
    .await
}

/// Item 1: one address holding its share of pre-join sockets is refused beyond it
/// (`limit_exceeded`, naming the key); a client from another address still joins; the sockets
/// that never send a frame are closed at `limits.join_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_capped_and_its_idle_sockets_closed_at_the_deadline() -> Result<()> {
    let server = Server::start_with_env(
        &[],
        &[
            ("RAKOR_LIMITS_MAX_UNAUTHENTICATED_CONNECTIONS_PER_IP", "8"),
            ("RAKOR_LIMITS_JOIN_TIMEOUT", "3s"),
        ],
    )?;
    let b = bystanders(&server).await?;
    let attacker = lo(2);
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(ws_from(attacker, server.http).await?);
    }
    // The ninth from the same address: refused at once.
    let mut ninth = ws_from(attacker, server.http).await?;
    let (code, message, reason) = refusal(&until_closed(&mut ninth, WAIT).await?);
    assert_eq!(code, "limit_exceeded");
    assert!(
        message.contains("max_unauthenticated_connections_per_ip = 8"),
        "{message}"
    );
    assert_eq!(reason, "limit exceeded");
    // Another address joins meanwhile (a raw join from 127.0.0.3, and a full client).
    let mut other = ws_from(lo(3), server.http).await?;
    send(
        &mut other,
        json!({"type":"join","version":1,"token":server.token("r","site-3","participant")?}),
    )
    .await?;
    next_of(&mut other, "joined").await?;
    let late = Client::connect(
        ClientOptions::new(server.ws_url(), server.token("r", "late", "participant")?)
            .receive_only(),
    )
    .await?;
    drop(late);
    // The idle ones: closed by the server at the deadline, each with its error.
    for ws in &mut idle {
        let (code, message, reason) = refusal(&until_closed(ws, WAIT).await?);
        assert_eq!(code, "invalid_state");
        assert!(message.contains("limits.join_timeout"), "{message}");
        assert_eq!(reason, "join timeout");
    }
    let took = opened.elapsed();
    eprintln!("8 idle sockets closed by {took:?} after opening (join_timeout 3 s)");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "closed after {took:?}, deadline 3 s"
    );
    // Their slots are free again.
    let mut again = ws_from(attacker, server.http).await?;
    send(
        &mut again,
        json!({"type":"join","version":1,"token":server.token("r","site-2","participant")?}),
    )
    .await?;
    next_of(&mut again, "joined").await?;
    b.media_flows().await?;
    Ok(())
}

/// Item 1 (resumes): a participant's connection drops while strangers behind its address hold
/// every pre-join slot; it resumes anyway — before the server noticed the old connection was
/// dead, and again after the old connection closed. A fresh `join` on the same over-cap
/// connection kind is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_participant_resumes_while_its_address_is_at_the_cap() -> Result<()> {
    // The strangers' sockets must outlive the test: a long first-frame deadline.
    let server = Server::start_with_env(
        &[],
        &[
            ("RAKOR_LIMITS_MAX_UNAUTHENTICATED_CONNECTIONS_PER_IP", "4"),
            ("RAKOR_LIMITS_JOIN_TIMEOUT", "60s"),
        ],
    )?;
    let b = bystanders(&server).await?;
    let nat = lo(2);
    let token = server.token("r", "site", "participant")?;
    let mut first = ws_from(nat, server.http).await?;
    send(&mut first, json!({"type":"join","version":1,"token":token})).await?;
    let joined = next_of(&mut first, "joined").await?;
    let pid = joined["participant_id"].as_str().unwrap().to_owned();
    let resume_token = joined["resume_token"].as_str().unwrap().to_owned();
    // Strangers behind the same address take every ordinary slot.
    let mut strangers = Vec::new();
    for _ in 0..4 {
        strangers.push(ws_from(nat, server.http).await?);
    }
    let mut over = ws_from(nat, server.http).await?;
    // Beyond the cap, a fresh join (no resume) is refused even on the resume share.
    send(
        &mut over,
        json!({"type":"join","version":1,"token":server.token("r","stranger","participant")?}),
    )
    .await?;
    let (code, message, _) = refusal(&until_closed(&mut over, WAIT).await?);
    assert_eq!(code, "limit_exceeded");
    assert!(message.contains("only resumes"), "{message}");
    let resume = json!({"type":"join","version":1,"token":token,
        "resume":{"participant_id":pid,"token":resume_token}});
    // The site's link went silent: `first` stays open on the server's side (not noticed yet).
    let mut second = ws_from(nat, server.http).await?;
    send(&mut second, resume.clone()).await?;
    let j = next_of(&mut second, "joined").await?;
    assert_eq!(j["resumed"], true, "{j}");
    assert_eq!(j["participant_id"], pid.as_str(), "{j}");
    // Now the connection closes (the server sees it), and the site resumes once more.
    drop(second);
    let mut third = ws_from(nat, server.http).await?;
    send(&mut third, resume).await?;
    let j = next_of(&mut third, "joined").await?;
    assert_eq!(j["resumed"], true, "{j}");
    assert_eq!(j["participant_id"], pid.as_str(), "{j}");
    // The strangers' address is still full for anything else.
    let mut over = ws_from(nat, server.http).await?;
    send(&mut over, json!({"type":"join","version":1,"token":"x"})).await?;
    let (code, ..) = refusal(&until_closed(&mut over, WAIT).await?);
    assert_eq!(code, "limit_exceeded");
    drop(first);
    b.media_flows().await?;
    Ok(())
}

/// A rakor whose one invited site waits in the lobby; the server with `env`.
struct LobbyRig {
    _p: Persistent,
    server: Server,
    api: Api,
    id: i64,
    site_token: String,
}

/// A plain token signed with the data set's key.
fn plain_token(p: &Persistent, room: &str, identity: &str, role: &str) -> Result<String> {
    let now = rakor_e2e::unix_now();
    rakor_e2e::sign_claims(
        &p.key,
        &json!({"sub": identity, "room": room, "name": identity, "role": role,
            "iat": now, "exp": now + 600, "iss": "rakor"}),
    )
}

impl LobbyRig {
    fn start(env: &[(&str, &str)]) -> Result<Self> {
        let p = Persistent::new()?;
        let out = p.add_operator("operator", PASSWORD)?;
        if !out.status.success() {
            bail!("operator add: {}", String::from_utf8_lossy(&out.stderr));
        }
        let server = p.start_with_env(env)?;
        let mut api = Api::new(server.http);
        api.login("operator", PASSWORD)?;
        let host = add_site(&api, "Command Room", "other")?;
        let dishub = add_site(&api, "Dishub", "opd")?;
        let v = add_rakor(&api, "Rakor", host, &[dishub], 600, 60)?;
        let id = v["id"].as_i64().ok_or_else(|| anyhow!("no id in {v}"))?;
        let links = api
            .get(&format!("/api/v1/rakor/{id}/invitations"))?
            .json()?;
        let site_token = token_of(
            links[1]["link"]
                .as_str()
                .ok_or_else(|| anyhow!("no link"))?,
        )?;
        Ok(Self {
            _p: p,
            server,
            api,
            id,
            site_token,
        })
    }

    fn lobby(&self) -> Result<Vec<Value>> {
        let live = self
            .api
            .get(&format!("/api/v1/rakor/{}/live", self.id))?
            .json()?;
        Ok(live["lobby"].as_array().cloned().unwrap_or_default())
    }

    /// The site's link, joined from `src`: the socket once it says `lobby {status:"waiting"}`.
    async fn wait_in_lobby(&self, src: IpAddr) -> Result<RawWs> {
        let mut ws = ws_from(src, self.server.http).await?;
        send(
            &mut ws,
            json!({"type":"join","version":1,"token":self.site_token}),
        )
        .await?;
        let m = next_of(&mut ws, "lobby").await?;
        assert_eq!(m["status"], "waiting", "{m}");
        Ok(ws)
    }

    /// The lobby is empty again (the server took the closed site out), within `WAIT`.
    async fn lobby_empties(&self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.lobby()?.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("still in the lobby: {:?}", self.lobby()?);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Item 8 (lobby): a waiting site that floods, sends an oversized frame or waits longer than
/// `limits.lobby_max_wait` gets its error and is closed and taken out of the lobby; a waiting
/// site holds one of its address's pre-join slots; the operator's admit still works; the room's
/// media is undisturbed throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lobby_is_under_the_pre_join_limits() -> Result<()> {
    let rig = tokio::task::block_in_place(|| {
        LobbyRig::start(&[
            ("RAKOR_LIMITS_LOBBY_MAX_WAIT", "3s"),
            ("RAKOR_LIMITS_MAX_UNAUTHENTICATED_CONNECTIONS_PER_IP", "2"),
        ])
    })?;
    let b = Bystanders::start(
        &rig.server.ws_url(),
        plain_token(&rig._p, "r", "pub", "host")?,
        plain_token(&rig._p, "r", "watch", "participant")?,
    )
    .await?;
    let site = lo(2);

    // Flood: 30 pings at once → rate_limited, closed, out of the lobby.
    let mut ws = rig.wait_in_lobby(site).await?;
    for ts in 0..30 {
        send(&mut ws, json!({"type":"ping","ts":ts})).await?;
    }
    let closed = until_closed(&mut ws, WAIT).await?;
    let pongs = closed.0.iter().filter(|m| m["type"] == "pong").count();
    assert!((5..30).contains(&pongs), "{pongs} pongs before the limit");
    let (code, message, reason) = refusal(&closed);
    assert_eq!(code, "rate_limited", "{message}");
    assert_eq!(reason, "rate limited");
    rig.lobby_empties().await?;

    // Oversized: a 2 KiB ping → frame_too_large, closed.
    let mut ws = rig.wait_in_lobby(site).await?;
    let pad = "x".repeat(2048);
    send(&mut ws, json!({"type":"ping","ts":1,"pad":pad})).await?;
    let (code, message, reason) = refusal(&until_closed(&mut ws, WAIT).await?);
    assert_eq!(code, "frame_too_large", "{message}");
    assert!(message.contains("1024"), "{message}");
    assert_eq!(reason, "frame too large");
    rig.lobby_empties().await?;

    // A waiting site counts against its address: with it and one idle socket, the address is
    // at its cap of 2.
    let waited = Instant::now();
    let mut ws = rig.wait_in_lobby(site).await?;
    let _idle = ws_from(site, rig.server.http).await?;
    let mut third = ws_from(site, rig.server.http).await?;
    let (code, message, _) = refusal(&until_closed(&mut third, WAIT).await?);
    assert_eq!(code, "limit_exceeded");
    assert!(message.contains("per_ip = 2"), "{message}");

    // Over time: nobody decides within 3 s → lobby_timeout, closed, out of the lobby.
    let (code, message, reason) = refusal(&until_closed(&mut ws, WAIT).await?);
    let took = waited.elapsed();
    eprintln!("lobby wait closed after {took:?} (lobby_max_wait 3 s)");
    assert_eq!(code, "lobby_timeout", "{message}");
    assert!(message.contains("limits.lobby_max_wait"), "{message}");
    assert_eq!(reason, "lobby_timeout");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "closed after {took:?}, max wait 3 s"
    );
    rig.lobby_empties().await?;

    // The operator's admit still works, from another address.
    let mut ws = rig.wait_in_lobby(lo(3)).await?;
    let entry = rig.lobby()?[0]["id"]
        .as_u64()
        .ok_or_else(|| anyhow!("no entry id"))?;
    tokio::task::block_in_place(|| {
        rig.api.expect(
            "POST",
            &format!("/api/v1/rakor/{}/lobby/{entry}/admit", rig.id),
            Some(json!({})),
            200,
        )
    })?;
    let m = next_of(&mut ws, "lobby").await?;
    assert_eq!(m["status"], "admitted", "{m}");
    next_of(&mut ws, "joined").await?;
    b.media_flows().await?;
    Ok(())
}
