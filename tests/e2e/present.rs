//! Chat, raised hands, giving the floor and the rakor's record, through the real `rakor`
//! binary with a real SQLite file: the command room (host) and three sites of a scheduled
//! rakor. Chat reaches everyone with the same text, a private message only its pair, a late
//! joiner gets the public history; oversized, too-frequent, pre-join and forbidden messages get
//! a clear error to their sender only and are not stored; a raised hand reaches the host; a
//! site cannot give the floor; the host gives it to a moderator-muted site, whose audio then
//! reaches the host again; the operator gives it over the API; the record (JSON, CSV, HTML)
//! holds the chat, the hands, the floor and the spotlight timeline in WIB.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{bail, Result};
use futures_util::SinkExt;
use rakor_client::{Client, ClientOptions};
use rakor_e2e::session::{add_rakor, add_site, token_of, Api, Persistent, Resp};
use rakor_e2e::{raw_next_json, raw_ws};
use rakor_proto::{
    ClientMessage, ErrorCode, ModerateAction, ParticipantId, ServerMessage, TrackKind,
    CHAT_MAX_CHARS,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
const MARKUP: &str = "<img src=x onerror=alert(1)> Kasus DBD minggu ini: 12";

fn get(api: &Api, path: &str) -> Result<Resp> {
    tokio::task::block_in_place(|| api.get(path))
}
fn get_json(api: &Api, path: &str) -> Result<Value> {
    let r = get(api, path)?;
    if r.status != 200 {
        bail!("GET {path}: {} {}", r.status, r.body);
    }
    r.json()
}

async fn poll<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn opts(url: &str, token: &str) -> ClientOptions {
    let mut o = ClientOptions::new(url, token).receive_only();
    o.join_timeout = Duration::from_secs(30);
    o
}

/// A site joins with its link and the operator admits it from the lobby.
async fn admitted(api: &Api, rakor: i64, o: ClientOptions) -> Result<Client> {
    let join = tokio::spawn(Client::connect(o));
    poll("a site in the lobby", WAIT, || {
        let live = get_json(api, &format!("/api/v1/rakor/{rakor}/live"))?;
        Ok((!live["lobby"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .is_empty())
        .then_some(()))
    })
    .await?;
    tokio::task::block_in_place(|| {
        api.expect(
            "POST",
            &format!("/api/v1/rakor/{rakor}/lobby/admit-all"),
            Some(json!({})),
            200,
        )
    })?;
    Ok(join.await??)
}

async fn next_chat(c: &mut Client) -> Result<rakor_proto::ChatEntry> {
    match c
        .wait_for(|m| matches!(m, ServerMessage::Chat(_)), WAIT)
        .await?
    {
        ServerMessage::Chat(e) => Ok(e),
        _ => unreachable!(),
    }
}

async fn next_error(c: &mut Client) -> Result<(ErrorCode, Option<String>)> {
    match c
        .wait_for(|m| matches!(m, ServerMessage::Error { .. }), WAIT)
        .await?
    {
        ServerMessage::Error {
            code, request_type, ..
        } => Ok((code, request_type)),
        _ => unreachable!(),
    }
}

async fn hands(c: &mut Client) -> Result<Vec<ParticipantId>> {
    match c
        .wait_for(|m| matches!(m, ServerMessage::Hands { .. }), WAIT)
        .await?
    {
        ServerMessage::Hands { hands } => Ok(hands.into_iter().map(|h| h.participant_id).collect()),
        _ => unreachable!(),
    }
}

fn no_error(c: &mut Client) {
    let errs: Vec<ServerMessage> = c
        .drain_events()
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::Error { .. }))
        .collect();
    assert!(
        errs.is_empty(),
        "another participant's refusal reached this one: {errs:?}"
    );
}

fn audio_from(c: &Client, from: &ParticipantId) -> u64 {
    c.stats()
        .received_track(from, TrackKind::Audio)
        .map_or(0, |t| t.packets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_hands_floor_and_the_record() -> Result<()> {
    let p = Persistent::new()?;
    let (server, api) = tokio::task::block_in_place(|| p.start_logged_in())?;
    let url = server.ws_url();
    let host_site = tokio::task::block_in_place(|| add_site(&api, "Command Room Pemalang", "opd"))?;
    let mut ids = Vec::new();
    for name in ["Dinas Kesehatan", "Bapeda", "Dinas Perhubungan"] {
        ids.push(tokio::task::block_in_place(|| add_site(&api, name, "opd"))?);
    }
    let v = tokio::task::block_in_place(|| add_rakor(&api, "Rakor DBD", host_site, &ids, 180, 60))?;
    let rakor = v["id"].as_i64().unwrap();
    let links = get_json(&api, &format!("/api/v1/rakor/{rakor}/invitations"))?;
    let mut token: BTreeMap<i64, String> = BTreeMap::new();
    for l in links.as_array().unwrap() {
        token.insert(
            l["site_id"].as_i64().unwrap(),
            token_of(l["link"].as_str().unwrap())?,
        );
    }

    // Chat before join: the connection's pre-join refusal.
    let mut raw = raw_ws(&url).await?;
    raw.send(Message::text(
        json!({"type":"chat","text":"halo"}).to_string(),
    ))
    .await?;
    let m = raw_next_json(&mut raw, WAIT).await?.unwrap();
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["code"], "invalid_state", "{m}");
    drop(raw);

    // The command room, Dinas Kesehatan (publishes audio) and Bapeda.
    let mut host = Client::connect(opts(&url, &token[&host_site])).await?;
    let host_id = host.participant_id().clone();
    let mut dinkes = admitted(
        &api,
        rakor,
        opts(&url, &token[&ids[0]]).publish(true, false),
    )
    .await?;
    let dinkes_id = dinkes.participant_id().clone();
    let mut bapeda = admitted(&api, rakor, opts(&url, &token[&ids[1]])).await?;
    let bapeda_id = bapeda.participant_id().clone();

    // Chat to the room: everyone gets the same text, from Dinas Kesehatan.
    dinkes.chat(MARKUP).await?;
    for c in [&mut host, &mut dinkes, &mut bapeda] {
        let e = next_chat(c).await?;
        assert_eq!(e.text, MARKUP);
        assert_eq!(e.from.participant_id, dinkes_id);
        assert_eq!(e.from.name, "Dinas Kesehatan");
        assert!(e.to.is_none() && e.at.ends_with('Z'), "{e:?}");
    }

    // Bad input: a clear error to the sender only, nothing delivered.
    dinkes.chat("x".repeat(CHAT_MAX_CHARS + 1)).await?;
    assert_eq!(
        next_error(&mut dinkes).await?,
        (ErrorCode::TooLarge, Some("chat".into()))
    );
    dinkes.chat_to(&host_id, "pribadi?").await?;
    assert_eq!(next_error(&mut dinkes).await?.0, ErrorCode::Forbidden);
    host.chat_to(&ParticipantId("PA_nobody".into()), "halo")
        .await?;
    assert_eq!(
        next_error(&mut host).await?.0,
        ErrorCode::UnknownParticipant
    );
    // The rate limit: seven more back to back. The bucket holds at most five, so at least two
    // are refused (`rate_limited`, to the sender only); the others reach everyone, in order.
    for i in 2..=8 {
        dinkes.chat(format!("pesan {i}")).await?;
    }
    let mut delivered = Vec::new();
    let mut limited = 0;
    for _ in 2..=8 {
        match dinkes
            .wait_for(
                |m| {
                    matches!(m, ServerMessage::Chat(e) if e.from.participant_id == dinkes_id)
                        || matches!(m, ServerMessage::Error { .. })
                },
                WAIT,
            )
            .await?
        {
            ServerMessage::Chat(e) => delivered.push(e.text),
            ServerMessage::Error { code, .. } => {
                assert_eq!(code, ErrorCode::RateLimited);
                limited += 1;
            }
            _ => unreachable!(),
        }
    }
    assert!(
        limited >= 2 && delivered.len() + limited == 7,
        "{delivered:?} {limited}"
    );
    for text in &delivered {
        assert_eq!(&next_chat(&mut bapeda).await?.text, text);
        assert_eq!(&next_chat(&mut host).await?.text, text);
    }
    // The host writes privately to Bapeda, then to the room: Dinas Kesehatan's next message
    // is the public one (its order is the server's).
    host.chat_to(&bapeda_id, "Mohon siapkan data anggaran")
        .await?;
    let private = next_chat(&mut bapeda).await?;
    assert_eq!(private.to, Some(bapeda_id.clone()));
    host.chat("Terima kasih").await?;
    assert_eq!(
        next_chat(&mut dinkes).await?.text,
        "Terima kasih",
        "no private message leaked"
    );
    assert_eq!(next_chat(&mut bapeda).await?.text, "Terima kasih");
    no_error(&mut bapeda);

    // A late joiner gets the public history (6 messages), not the private one.
    let mut dishub = admitted(&api, rakor, opts(&url, &token[&ids[2]])).await?;
    let hist = dishub
        .wait_for(|m| matches!(m, ServerMessage::ChatHistory { .. }), WAIT)
        .await?;
    let ServerMessage::ChatHistory { messages, .. } = hist else {
        unreachable!()
    };
    let texts: Vec<String> = messages.iter().map(|m| m.text.clone()).collect();
    let mut public = vec![MARKUP.to_owned()];
    public.extend(delivered.iter().cloned());
    public.push("Terima kasih".into());
    assert_eq!(
        texts, public,
        "the public history, without the private message"
    );

    // Hands: Bapeda first, then Dinas Kesehatan; the host sees them in order.
    bapeda.raise_hand(true).await?;
    assert_eq!(hands(&mut host).await?, vec![bapeda_id.clone()]);
    dinkes.raise_hand(true).await?;
    assert_eq!(
        hands(&mut host).await?,
        vec![bapeda_id.clone(), dinkes_id.clone()]
    );
    let live = get_json(&api, &format!("/api/v1/rakor/{rakor}/live"))?;
    let order: Vec<&str> = live["hands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["participant_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![bapeda_id.0.as_str(), dinkes_id.0.as_str()],
        "{live}"
    );
    // A site cannot give the floor.
    bapeda.give_floor(&bapeda_id).await?;
    assert_eq!(
        next_error(&mut bapeda).await?,
        (ErrorCode::Forbidden, Some("give_floor".into()))
    );
    host.give_floor(&ParticipantId("PA_nobody".into())).await?;
    assert_eq!(
        next_error(&mut host).await?.0,
        ErrorCode::UnknownParticipant
    );

    // The host mutes Dinas Kesehatan: its audio stops reaching the host.
    poll("the host hears Dinas Kesehatan", WAIT, || {
        Ok((audio_from(&host, &dinkes_id) > 20).then_some(()))
    })
    .await?;
    host.send(&ClientMessage::Moderate {
        action: ModerateAction::MuteAudio,
        participant_id: Some(dinkes_id.clone()),
    })
    .await?;
    dinkes
        .wait_for(
            |m| matches!(m, ServerMessage::ModeratorMute { muted: true }),
            WAIT,
        )
        .await?;
    // Once the packets in flight are in (no change over a 100 ms poll), the count stays put
    // over the next half second (50 packets at 20 ms if it were forwarded).
    let mut last = audio_from(&host, &dinkes_id);
    let stalled = poll("the muted audio stops", WAIT, || {
        let now = audio_from(&host, &dinkes_id);
        let same = now == last;
        last = now;
        Ok(same.then_some(now))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let muted_at = audio_from(&host, &dinkes_id);
    assert!(
        muted_at <= stalled + 1,
        "muted audio is not forwarded: {stalled} → {muted_at}"
    );

    // The host gives it the floor: unmuted, spotlighted, its hand down; its audio flows again.
    host.give_floor(&dinkes_id).await?;
    dinkes
        .wait_for(
            |m| matches!(m, ServerMessage::ModeratorMute { muted: false }),
            WAIT,
        )
        .await?;
    for c in [&mut host, &mut bapeda] {
        c.wait_for(
            |m| matches!(m, ServerMessage::FloorGiven { participant_id, .. } if *participant_id == dinkes_id),
            WAIT,
        )
        .await?;
        c.wait_for(
            |m| matches!(m, ServerMessage::Spotlight { participant_id: Some(p), .. } if *p == dinkes_id),
            WAIT,
        )
        .await?;
        assert_eq!(hands(c).await?, vec![bapeda_id.clone()]);
    }
    poll("Dinas Kesehatan heard again", WAIT, || {
        Ok((audio_from(&host, &dinkes_id) > muted_at + 20).then_some(()))
    })
    .await?;

    // The operator gives the floor to Bapeda over the API; unknown participants are 404.
    tokio::task::block_in_place(|| {
        api.expect(
            "POST",
            &format!("/api/v1/rakor/{rakor}/participants/{}/floor", bapeda_id.0),
            Some(json!({})),
            204,
        )
    })?;
    assert_eq!(hands(&mut host).await?, Vec::<ParticipantId>::new());
    let r = tokio::task::block_in_place(|| {
        api.post(
            &format!("/api/v1/rakor/{rakor}/participants/PA_nobody/floor"),
            json!({}),
        )
    })?;
    assert_eq!(r.status, 404, "{}", r.body);

    // The record: every delivered message (the public ones and the private one), none of the
    // refused ones.
    let want = public.len() + 1;
    let rec = poll("the record has every event", WAIT, || {
        let r = get_json(&api, &format!("/api/v1/rakor/{rakor}/record"))?;
        let ok = r["chat"].as_array().map_or(0, Vec::len) == want
            && r["floor"].as_array().map_or(0, Vec::len) == 2;
        Ok(ok.then_some(r))
    })
    .await?;
    let chat = rec["chat"].as_array().unwrap();
    assert_eq!(chat.len(), want, "{rec}");
    assert_eq!(chat[0]["text"], MARKUP);
    let stored_public: Vec<&str> = chat
        .iter()
        .filter(|c| c["to_identity"].is_null())
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        stored_public, public,
        "exactly the delivered messages, in order"
    );
    assert_eq!(chat[0]["from_site"], "Dinas Kesehatan");
    assert_eq!(chat[0]["from_identity"], format!("site-{}", ids[0]));
    assert!(chat[0]["at_wib"].as_str().unwrap().len() == 19, "{rec}");
    assert!(!chat
        .iter()
        .any(|c| c["text"] == "pribadi?" || c["text"] == "halo"));
    assert!(!chat
        .iter()
        .any(|c| c["text"].as_str().unwrap().len() > CHAT_MAX_CHARS));
    let private: Vec<&Value> = chat
        .iter()
        .filter(|c| !c["to_identity"].is_null())
        .collect();
    assert_eq!(private.len(), 1);
    assert_eq!(private[0]["to_site"], "Bapeda");
    let hands_rec = rec["hands"].as_array().unwrap();
    assert_eq!(hands_rec.len(), 2, "{rec}");
    assert_eq!(hands_rec[0]["site"], "Bapeda");
    assert_eq!(hands_rec[1]["site"], "Dinas Kesehatan");
    assert!(hands_rec.iter().all(|h| h["given_floor"] == true), "{rec}");
    let floor = rec["floor"].as_array().unwrap();
    assert_eq!(floor[0]["site"], "Dinas Kesehatan");
    assert_eq!(floor[0]["by"], "Command Room Pemalang");
    assert_eq!(floor[1]["site"], "Bapeda");
    assert_eq!(floor[1]["by"], "operator");
    let kinds: Vec<&str> = rec["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "hand_raised",
            "hand_raised",
            "spotlight_set",
            "floor_given",
            "spotlight_set",
            "floor_given"
        ],
        "{rec}"
    );
    assert!(rec["attendance"]["rows"].as_array().unwrap().len() >= 4);

    // CSV (by query and by Accept) and the printable page.
    let csv = get(&api, &format!("/api/v1/rakor/{rakor}/record?format=csv"))?;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.body.starts_with('\u{feff}'));
    assert!(csv
        .body
        .contains("Bagian,Waktu (WIB),Jenis,Lokasi,Nama,Kepada,Isi\r\n"));
    assert!(
        csv.body.contains(&format!(
            ",Pesan,Dinas Kesehatan,Dinas Kesehatan,,{MARKUP}\r\n"
        )),
        "{}",
        csv.body
    );
    assert!(csv.body.contains(",Pesan pribadi,Command Room Pemalang,Command Room Pemalang,Bapeda,Mohon siapkan data anggaran\r\n"), "{}", csv.body);
    assert!(csv.body.contains(",Diberi kesempatan bicara,Dinas Kesehatan,Dinas Kesehatan,,oleh Command Room Pemalang\r\n"), "{}", csv.body);
    let (k, v) = api.auth.clone().unwrap();
    let by_accept = tokio::task::block_in_place(|| {
        rakor_e2e::session::request(
            server.http,
            "GET",
            &format!("/api/v1/rakor/{rakor}/record"),
            &[(k.as_str(), v.as_str()), ("Accept", "text/csv")],
            None,
        )
    })?;
    assert!(by_accept
        .header("content-type")
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(by_accept.body, csv.body);
    let html = get(&api, &format!("/api/v1/rakor/{rakor}/record?format=html"))?;
    assert_eq!(html.status, 200);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(html.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!html.body.contains("<img"));
    let bad = get(&api, &format!("/api/v1/rakor/{rakor}/record?format=xml"))?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let none = get(&api, "/api/v1/rakor/99999/record")?;
    assert_eq!(none.status, 404);

    for c in [host, dinkes, bapeda, dishub] {
        c.leave().await;
    }
    Ok(())
}
