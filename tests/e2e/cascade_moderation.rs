//! Chat, raised hands and the host's moderation across the cascade (issue 17,
//! `crates/server/src/cascade_moderation.rs`): three real `rakor` nodes (one Redis, one
//! PostgreSQL), the room of a scheduled rakor owned by A (the command room).
//!
//! - A site on C chats: every participant on A, B and C gets it exactly once, from the site's
//!   participant on its node (its republisher elsewhere, same name), and the rakor's record
//!   holds it once. A private message from the host on A reaches only B's site. A late joiner
//!   on C gets the recent history from C's room.
//! - Oversized and too-frequent chat is refused to its sender only and nothing refused is
//!   delivered or stored; a site's `give_floor` is refused to it only.
//! - A's site and then B's site raise their hands: the host on A sees both, in that order, and
//!   C mirrors the queue. The host mutes B's site: B's node mutes it (`moderator_mute` from
//!   its own node). The host gives B's site the floor: unmuted at B, hand down on A,
//!   spotlighted on every node, and C receives its audio again.
//! - A host on a non-owner node (B) moderates room-wide through its republisher on the owner:
//!   it mutes A's site (A's own node mutes it; C stops receiving its audio), mutes C's site
//!   (C's node mutes it), then gives C's site the floor: unmuted at C, hand down, spotlighted
//!   on A and C, heard on A again; B gets the owner's echo without giving the floor twice.
//!
//! Needs `RAKOR_TEST_REDIS_URL` and `RAKOR_TEST_POSTGRES_URL` (tests/run.sh starts both);
//! without them the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::Client;
use rakor_e2e::cluster::{
    seen_all, seen_as, CascadeSetup, Joins,
    Joins::{Audio, Watching},
};
use rakor_e2e::session::{add_site, wib_in, Api, PASSWORD};
use rakor_proto::{
    ChatEntry, ClientMessage, ErrorCode, LeaveReason, ModerateAction, ParticipantId, ServerMessage,
    TrackKind,
};
use serde_json::Value;
use std::time::{Duration, Instant};

const LEG_WAIT: Duration = Duration::from_secs(30);
const EVENT_WAIT: Duration = Duration::from_secs(15);

/// The cast: (node: 0 = A, the room's owner, 1 = B, 2 = C; identity; role; how it joins).
type Member = (usize, &'static str, &'static str, Joins);
const GOVERNOR_A: Member = (0, "gubernur", "host", Audio);
const SEMARANG_A: Member = (0, "kab-semarang", "participant", Audio);
const DEMAK_A: Member = (0, "kab-demak", "participant", Audio);
const REGENT_B: Member = (1, "bupati", "host", Audio);
const REGENT_B_WATCHING: Member = (1, "bupati", "host", Watching);
const KENDAL_B: Member = (1, "kab-kendal", "participant", Audio);
const KENDAL_B_WATCHING: Member = (1, "kab-kendal", "participant", Watching);
const BATANG_B: Member = (1, "kab-batang", "participant", Audio);
const SOLO_C: Member = (2, "kota-solo", "participant", Audio);
const BATANG_C: Member = (2, "kab-batang", "participant", Audio);
const HOST_C: Member = (2, "bupati-solo", "host", Audio);

/// `c` (a host) sends `moderate {action}` about `who`.
async fn moderate(c: &Client, action: ModerateAction, who: &ParticipantId) {
    c.send(&ClientMessage::Moderate {
        action,
        participant_id: Some(who.clone()),
    })
    .await
    .unwrap();
}

/// The chat messages `c` gets up to and including the one with text `marker`.
async fn chats_until(c: &mut Client, who: &str, marker: &str) -> Vec<ChatEntry> {
    let mut got = Vec::new();
    loop {
        match c
            .wait_for(|m| matches!(m, ServerMessage::Chat(_)), EVENT_WAIT)
            .await
        {
            Ok(ServerMessage::Chat(e)) => {
                let done = e.text == marker;
                got.push(e);
                if done {
                    return got;
                }
            }
            other => panic!("{who}: no chat \"{marker}\": {other:?}; before it: {got:?}"),
        }
    }
}

/// The chat messages `c` gets until each of `texts` has arrived. Messages of different
/// senders reach a non-owner node through different republishers, so their order there is
/// not the owner's (one sender's messages keep their order).
async fn chats_until_all(c: &mut Client, who: &str, texts: &[&str]) -> Vec<ChatEntry> {
    let mut got: Vec<ChatEntry> = Vec::new();
    while !texts.iter().all(|t| got.iter().any(|e| e.text == *t)) {
        match c
            .wait_for(|m| matches!(m, ServerMessage::Chat(_)), EVENT_WAIT)
            .await
        {
            Ok(ServerMessage::Chat(e)) => got.push(e),
            other => panic!("{who}: not all of {texts:?}: {other:?}; got: {got:?}"),
        }
    }
    got
}

async fn next_error(c: &mut Client, who: &str) -> ErrorCode {
    match c
        .wait_for(|m| matches!(m, ServerMessage::Error { .. }), EVENT_WAIT)
        .await
    {
        Ok(ServerMessage::Error { code, .. }) => code,
        other => panic!("{who}: no error: {other:?}"),
    }
}

fn no_error(c: &mut Client, who: &str) {
    let errs: Vec<ServerMessage> = c
        .drain_events()
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::Error { .. }))
        .collect();
    assert!(errs.is_empty(), "{who} got another's refusal: {errs:?}");
}

/// Wait for a `hands` list equal to `want` at `c`.
async fn hands_at(c: &mut Client, who: &str, want: &[&ParticipantId]) {
    let want: Vec<ParticipantId> = want.iter().map(|p| (*p).clone()).collect();
    let got = c
        .wait_for(
            |m| matches!(m, ServerMessage::Hands { hands } if hands.iter().map(|h| &h.participant_id).eq(want.iter())),
            EVENT_WAIT,
        )
        .await;
    assert!(got.is_ok(), "{who}: hands never {want:?}: {got:?}");
}

async fn moderator_mute_at(c: &mut Client, who: &str, muted: bool) {
    let got = c
        .wait_for(
            |m| matches!(m, ServerMessage::ModeratorMute { muted: x } if *x == muted),
            EVENT_WAIT,
        )
        .await;
    assert!(got.is_ok(), "{who}: no moderator_mute {muted}: {got:?}");
}

async fn spotlight_at(c: &mut Client, who: &str, want: &ParticipantId) {
    let got = c
        .wait_for(
            |m| matches!(m, ServerMessage::Spotlight { participant_id: Some(p), .. } if p == want),
            EVENT_WAIT,
        )
        .await;
    assert!(got.is_ok(), "{who}: no spotlight on {want}: {got:?}");
}

fn audio_from(c: &Client, from: &ParticipantId) -> u64 {
    c.stats()
        .received_track(from, TrackKind::Audio)
        .map_or(0, |t| t.packets)
}

/// The rakor's record once `done` holds for its chat (at most `EVENT_WAIT`).
async fn record_when(api: &Api, rakor: i64, done: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        let r = tokio::task::block_in_place(|| api.get(&format!("/api/v1/rakor/{rakor}/record")))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json().unwrap();
        if v["chat"].as_array().is_some_and(|c| done(c)) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stored(rec: &Value, text: &str) -> Vec<Value> {
    rec["chat"]
        .as_array()
        .map(|c| c.iter().filter(|m| m["text"] == text).cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_hands_and_moderation_are_room_wide_across_three_nodes() {
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test") else {
        return;
    };
    let ids = [setup.node_id("a"), setup.node_id("b"), setup.node_id("c")];
    let out = setup.p.add_operator("operator", PASSWORD).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = |id: &str| setup.start(id).unwrap();
    let nodes = [start(&ids[0]), start(&ids[1]), start(&ids[2])];
    let mut api = Api::new(nodes[0].http);
    tokio::task::block_in_place(|| api.login("operator", PASSWORD)).unwrap();

    // A scheduled rakor whose room the sites join (so chat has a record to go to).
    let room = format!("moder-{}", setup.suffix);
    let rakor = tokio::task::block_in_place(|| {
        let host = add_site(&api, "Command Room Provinsi", "opd")?;
        let site = add_site(&api, "Kabupaten Kendal", "other")?;
        let v = api.expect(
            "POST",
            "/api/v1/rakor",
            Some(serde_json::json!({
                "title": "Rakor DBD", "agenda": "Penanganan DBD",
                "start": wib_in(60), "end": wib_in(3660),
                "host_site_id": host, "invited_site_ids": [site], "room": room,
            })),
            201,
        )?;
        let id = v["id"].as_i64().unwrap();
        anyhow::Ok(id)
    })
    .unwrap();

    // A owns the room (its first join): the governor and a site; a site on B; a site on C.
    let [mut host, mut site_a, mut site_b, mut site_c] = setup
        .cast(&nodes, &room, [GOVERNOR_A, SEMARANG_A, KENDAL_B, SOLO_C])
        .await;

    // The legs are up: everyone sees everyone (republishers on every node).
    let [b_on_a, c_on_a, c_on_b, host_on_b, host_on_c, a_on_c, b_on_c, _] = seen_all(
        [
            (&host, "kab-kendal"),
            (&host, "kota-solo"),
            (&site_b, "kota-solo"),
            (&site_b, "gubernur"),
            (&site_c, "gubernur"),
            (&site_c, "kab-semarang"),
            (&site_c, "kab-kendal"),
            (&site_b, "kab-semarang"),
        ],
        LEG_WAIT,
    )
    .await;
    let b_id = site_b.participant_id().clone();
    let host_id = host.participant_id().clone();
    let c_id = site_c.participant_id().clone();

    // 1. C's site chats; the host on A then sends a marker. Everyone gets C's message once,
    //    from C's site as it is known on their node, then the marker.
    let said = "Kasus DBD minggu ini: 12 (Solo)";
    let marker = "Terima kasih, lanjut";
    site_c.chat(said).await.unwrap();
    let got = chats_until(&mut host, "the host on A", said).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].from.participant_id, c_on_a);
    assert_eq!(got[0].from.name, "kota-solo");
    host.chat(marker).await.unwrap();
    for (c, who, from_c, from_host) in [
        (&mut host, "the host on A", &c_on_a, host_id.clone()),
        (&mut site_a, "A's site", &c_on_a, host_id.clone()),
        (&mut site_b, "B's site", &c_on_b, host_on_b.clone()),
        (&mut site_c, "C's site", &c_id, host_on_c.clone()),
    ] {
        let n = if who == "the host on A" { 0 } else { 1 };
        let got = chats_until_all(c, who, &[said, marker][1 - n..]).await;
        let of_c: Vec<&ChatEntry> = got.iter().filter(|e| e.text == said).collect();
        assert_eq!(of_c.len(), n, "{who}: {got:?}");
        if let Some(e) = of_c.first() {
            assert_eq!(&e.from.participant_id, from_c, "{who}");
            assert_eq!(e.from.name, "kota-solo", "{who}");
        }
        let last = got.iter().find(|e| e.text == marker).unwrap();
        assert_eq!(last.from.participant_id, from_host, "{who}");
        assert!(last.to.is_none());
        assert_eq!(got.len(), n + 1, "{who}: exactly once: {got:?}");
    }

    // 2. A private message from the host on A to B's site: B's site alone gets it, from the
    //    host's participant on B; the others get the next public marker and nothing else.
    let secret = "Mohon siapkan data anggaran";
    host.chat_to(&b_on_a, secret).await.unwrap();
    let got = chats_until(&mut site_b, "B's site", secret).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].from.participant_id, host_on_b);
    assert_eq!(got[0].to.as_ref(), Some(&b_id));
    let marker2 = "Baik, berikutnya";
    host.chat(marker2).await.unwrap();
    let got = chats_until(&mut host, "the host on A", marker2).await;
    assert_eq!(
        got.iter().filter(|e| e.text == secret).count(),
        1,
        "its own copy"
    );
    for (c, who) in [
        (&mut site_a, "A's site"),
        (&mut site_c, "C's site"),
        (&mut site_b, "B's site"),
    ] {
        let got = chats_until(c, who, marker2).await;
        assert_eq!(got.len(), 1, "{who} got more than the marker: {got:?}");
    }

    // 3. Bad input from C's site, refused to it alone: an oversized message, then a burst
    //    over the rate (5 at once by default); those accepted reach every node once.
    let long = "x".repeat(rakor_proto::CHAT_MAX_CHARS + 1);
    site_c.chat(long.clone()).await.unwrap();
    assert_eq!(
        next_error(&mut site_c, "C's site").await,
        ErrorCode::TooLarge
    );
    let burst: Vec<String> = (0..6).map(|i| format!("laporan {i}")).collect();
    for t in &burst {
        site_c.chat(t.clone()).await.unwrap();
    }
    // C's site sees its accepted messages (in order), then the refusal of the next.
    let mut k = 0;
    loop {
        match site_c.next_event_timeout(EVENT_WAIT).await.unwrap() {
            ServerMessage::Chat(e) => {
                assert_eq!(e.text, burst[k]);
                k += 1;
            }
            ServerMessage::Error { code, .. } => {
                assert_eq!(code, ErrorCode::RateLimited);
                break;
            }
            _ => {}
        }
    }
    assert!((1..burst.len()).contains(&k), "{k} accepted");
    let accepted = &burst[..k];
    let marker3 = "Cukup";
    // The host waits for the accepted ones before its marker (the relays' order).
    let got = chats_until(&mut host, "the host on A", &burst[k - 1]).await;
    assert_eq!(got.len(), k, "{got:?}");
    host.chat(marker3).await.unwrap();
    for (c, who, n) in [
        (&mut site_a, "A's site", k),
        (&mut site_b, "B's site", k),
        (&mut site_c, "C's site", 0),
    ] {
        let mut want: Vec<&str> = accepted[..n].iter().map(String::as_str).collect();
        want.push(marker3);
        let got = chats_until_all(c, who, &want).await;
        // C's site's messages in their order, the host's marker among them anywhere.
        let of_c: Vec<&str> = got
            .iter()
            .map(|e| e.text.as_str())
            .filter(|t| *t != marker3)
            .collect();
        assert_eq!(
            of_c,
            want[..n],
            "{who}: each accepted message once, nothing refused"
        );
        assert_eq!(got.len(), n + 1, "{who}: the marker once: {got:?}");
    }
    // A site may not give the floor: refused to it only, nothing crosses.
    site_b
        .send(&ClientMessage::GiveFloor {
            participant_id: b_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        next_error(&mut site_b, "B's site").await,
        ErrorCode::Forbidden
    );
    // A forged addressee of a private message: refused to the host only.
    host.chat_to(&ParticipantId("PA_forged".into()), "?")
        .await
        .unwrap();
    assert_eq!(
        next_error(&mut host, "the host").await,
        ErrorCode::UnknownParticipant
    );
    no_error(&mut site_a, "A's site");

    // 4. A late joiner on C gets the recent history from C's room: C's site's message, the
    //    markers, the accepted burst, not the private message nor anything refused.
    let mut late = setup
        .join_audio(nodes[2].ws_url(), &room, "kab-batang", "participant")
        .await;
    let hist = late
        .wait_for(
            |m| matches!(m, ServerMessage::ChatHistory { .. }),
            EVENT_WAIT,
        )
        .await
        .unwrap();
    let ServerMessage::ChatHistory { messages, .. } = hist else {
        unreachable!()
    };
    let texts: Vec<&str> = messages.iter().map(|e| e.text.as_str()).collect();
    let mut want = vec![said, marker, marker2];
    want.extend(accepted.iter().map(String::as_str));
    want.push(marker3);
    assert_eq!(texts, want, "the late joiner's history");
    assert_eq!(messages[0].from.participant_id, c_id);

    // 5. Hands: A's site, then B's site. The host on A sees both, in order; C mirrors them.
    site_a.raise_hand(true).await.unwrap();
    hands_at(&mut host, "the host on A", &[site_a.participant_id()]).await;
    site_b.raise_hand(true).await.unwrap();
    let a_id = site_a.participant_id().clone();
    hands_at(&mut host, "the host on A", &[&a_id, &b_on_a]).await;
    hands_at(&mut site_c, "C's site", &[&a_on_c, &b_on_c]).await;

    // 6. The host on A mutes B's site: B's own node mutes it.
    moderate(&host, ModerateAction::MuteAudio, &b_on_a).await;
    moderator_mute_at(&mut site_b, "B's site", true).await;

    // 7. The host gives B's site the floor: unmuted at B, its hand down on A (A's site's
    //    stays), spotlighted on every node under each node's id, and C hears it again.
    host.give_floor(&b_on_a).await.unwrap();
    moderator_mute_at(&mut site_b, "B's site", false).await;
    hands_at(&mut host, "the host on A", &[&a_id]).await;
    spotlight_at(&mut site_b, "B's site", &b_id).await;
    spotlight_at(&mut site_a, "A's site", &b_on_a).await;
    spotlight_at(&mut site_c, "C's site", &b_on_c).await;
    hands_at(&mut site_c, "C's site", &[&a_on_c]).await;
    let before = audio_from(&site_c, &b_on_c);
    site_c
        .wait_media(
            |r| {
                r.received_track(&b_on_c, TrackKind::Audio)
                    .is_some_and(|t| t.packets >= before + 25)
            },
            EVENT_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("C does not hear B's site after the floor: {e}"));

    // 8. The record: every delivered public message once (no relay's copy), the private one
    //    once, nothing refused; the hands and the floor by the sites' own identities.
    let mut all: Vec<&str> = vec![said, marker, marker2, marker3];
    all.extend(accepted.iter().map(String::as_str));
    let rec = record_when(&api, rakor, |c| c.len() > all.len()).await;
    for t in &all {
        assert_eq!(stored(&rec, t).len(), 1, "\"{t}\" stored once: {rec}");
    }
    let from_c = &stored(&rec, said)[0];
    assert_eq!(from_c["from_identity"], "kota-solo", "{rec}");
    let private = stored(&rec, secret);
    assert_eq!(private.len(), 1, "{rec}");
    for t in burst[k..].iter().chain([&long]) {
        assert!(stored(&rec, t).is_empty(), "refused \"{t}\" stored: {rec}");
    }
    assert_eq!(
        rec["chat"].as_array().unwrap().len(),
        all.len() + 1,
        "{rec}"
    );
    assert!(
        !rec["chat"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["from_identity"]
                .as_str()
                .unwrap_or("")
                .starts_with("cascade/")),
        "{rec}"
    );
    // Hands and floor, each once, by the sites' own identities (none by a republisher).
    let hands = rec["hands"].as_array().unwrap();
    let who: Vec<&str> = hands
        .iter()
        .map(|h| h["identity"].as_str().unwrap())
        .collect();
    assert_eq!(who, ["kab-semarang", "kab-kendal"], "{rec}");
    assert_eq!(hands[1]["given_floor"], true, "{rec}");
    let floor = rec["floor"].as_array().unwrap();
    assert_eq!(floor.len(), 1, "{rec}");
    assert_eq!(floor[0]["identity"], "kab-kendal", "{rec}");
    // By the governor (its name), not "operator": B applied the owner's floor for it.
    assert_eq!(floor[0]["by"], "gubernur", "{rec}");
    assert!(
        !rec["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["identity"]
                .as_str()
                .is_some_and(|i| i.starts_with("cascade/"))),
        "{rec}"
    );
    no_error(&mut site_a, "A's site");
    drop(late);
}

/// Wait until `c` received `n` more audio packets from `from` than `before`.
async fn hears(c: &Client, who: &str, from: &ParticipantId, before: u64, n: u64) {
    c.wait_media(
        |r| {
            r.received_track(from, TrackKind::Audio)
                .is_some_and(|t| t.packets >= before + n)
        },
        EVENT_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("{who} does not hear {from}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_owner_hosts_floor_and_mute_are_room_wide() {
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test (host on B)") else {
        return;
    };
    let ids = [setup.node_id("a"), setup.node_id("b"), setup.node_id("c")];
    let start = |id: &str| setup.start(id).unwrap();
    let nodes = [start(&ids[0]), start(&ids[1]), start(&ids[2])];
    let room = format!("host-b-{}", setup.suffix);

    // A owns the room (its first join): a site there; the host on B; a site on C.
    let [mut site_a, mut host_b, mut site_c] = setup
        .cast(&nodes, &room, [SEMARANG_A, REGENT_B, SOLO_C])
        .await;
    // (`_`: the host's republisher on the owner.)
    let [c_on_a, _, a_on_b, c_on_b, a_on_c, host_on_c] = seen_all(
        [
            (&site_a, "kota-solo"),
            (&site_a, "bupati"),
            (&host_b, "kab-semarang"),
            (&host_b, "kota-solo"),
            (&site_c, "kab-semarang"),
            (&site_c, "bupati"),
        ],
        LEG_WAIT,
    )
    .await;
    let c_id = site_c.participant_id().clone();
    // Media crosses every way before anyone is muted.
    hears(&site_c, "C's site", &a_on_c, 0, 25).await;
    hears(&site_a, "A's site", &c_on_a, 0, 25).await;

    // 1. The host on B mutes A's site: A's own node mutes it (the owner got it from the
    //    host's republisher there), so C stops receiving it. The clock: the host's own audio
    //    at C (always forwarded) goes on meanwhile.
    moderate(&host_b, ModerateAction::MuteAudio, &a_on_b).await;
    moderator_mute_at(&mut site_a, "A's site", true).await;
    let a_at_c = audio_from(&site_c, &a_on_c);
    hears(
        &site_c,
        "C's site",
        &host_on_c,
        audio_from(&site_c, &host_on_c),
        100,
    )
    .await;
    let late = audio_from(&site_c, &a_on_c) - a_at_c;
    assert!(
        late <= 10,
        "C still receives A's muted site: {late} packets over 2 s of the host's audio"
    );
    // ... and unmutes it: heard on C again.
    moderate(&host_b, ModerateAction::UnmuteAudio, &a_on_b).await;
    moderator_mute_at(&mut site_a, "A's site", false).await;
    hears(
        &site_c,
        "C's site",
        &a_on_c,
        audio_from(&site_c, &a_on_c),
        25,
    )
    .await;

    // 2. C's site raises its hand (the owner's queue holds it); the host on B mutes it: C's
    //    own node mutes it.
    site_c.raise_hand(true).await.unwrap();
    hands_at(&mut site_a, "A's site", &[&c_on_a]).await;
    hands_at(&mut host_b, "the host on B", &[&c_on_b]).await;
    moderate(&host_b, ModerateAction::MuteAudio, &c_on_b).await;
    moderator_mute_at(&mut site_c, "C's site", true).await;

    // 3. The host on B gives C's site the floor: unmuted at C, spotlighted on A and C under
    //    each node's id, its hand down on A and C, and A hears it again.
    site_a.drain_events();
    host_b.drain_events();
    host_b.give_floor(&c_on_b).await.unwrap();
    moderator_mute_at(&mut site_c, "C's site", false).await;
    spotlight_at(&mut site_c, "C's site", &c_id).await;
    spotlight_at(&mut site_a, "A's site", &c_on_a).await;
    hands_at(&mut site_a, "A's site", &[]).await;
    hands_at(&mut site_c, "C's site", &[]).await;
    hears(
        &site_a,
        "A's site",
        &c_on_a,
        audio_from(&site_a, &c_on_a),
        25,
    )
    .await;

    // 4. Once, not twice: B gets the owner's echo of its floor and does not give it again;
    //    the owner spotlights C's site once (the spotlight went with the floor). A marker
    //    chat from C's site arrives after both would have.
    site_c.chat("Siap, Pak Bupati").await.unwrap();
    for (c, who) in [(&mut site_a, "A's site"), (&mut host_b, "the host on B")] {
        let got = chats_until(c, who, "Siap, Pak Bupati").await;
        assert_eq!(got.len(), 1, "{who}: {got:?}");
    }
    let on_b: Vec<ServerMessage> = host_b.drain_events();
    let floors = on_b
        .iter()
        .filter(|m| matches!(m, ServerMessage::FloorGiven { .. }))
        .count();
    assert_eq!(floors, 1, "the host on B: one floor_given: {on_b:?}");
    let on_a: Vec<ServerMessage> = site_a.drain_events();
    let spots = on_a
        .iter()
        .filter(|m| matches!(m, ServerMessage::Spotlight { .. }))
        .count();
    // spotlight_at consumed the first one.
    assert_eq!(spots, 0, "A's site: one spotlight: {on_a:?}");
    let floors = on_a
        .iter()
        .filter(|m| matches!(m, ServerMessage::FloorGiven { participant_id, .. } if participant_id == &c_on_a))
        .count();
    assert_eq!(floors, 1, "A's site: one floor_given: {on_a:?}");
    no_error(&mut site_c, "C's site");
}

/// Start three cascade nodes `a`, `b`, `c` (A owns the rooms its sites join first).
fn three_nodes(setup: &CascadeSetup) -> [rakor_e2e::Server; 3] {
    let ids = [setup.node_id("a"), setup.node_id("b"), setup.node_id("c")];
    ids.map(|id| setup.start(&id).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_that_publishes_nothing_chats_and_raises_its_hand_room_wide() {
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test (watching site)") else {
        return;
    };
    let nodes = three_nodes(&setup);
    let room = format!("watch-{}", setup.suffix);

    // A owns the room: the governor. On B a site that only watches (no tracks: its
    // republishers elsewhere publish nothing) and a site publishing audio; a site on C.
    let [mut host, mut watcher, _batang, mut site_c] = setup
        .cast(
            &nodes,
            &room,
            [GOVERNOR_A, KENDAL_B_WATCHING, BATANG_B, SOLO_C],
        )
        .await;
    // Every leg is up (B's and C's both ways): their publishing sites are on A, the host on
    // B and C.
    seen_all(
        [
            (&host, "kab-batang"),
            (&host, "kota-solo"),
            (&watcher, "gubernur"),
            (&site_c, "gubernur"),
        ],
        LEG_WAIT,
    )
    .await;

    // 1. The watching site chats: the host on A and C's site get it once, named after it;
    //    on B it is delivered once (by its own node).
    let said = "Kendal memantau, tanpa kamera";
    watcher.chat(said).await.unwrap();
    let got = chats_until(&mut host, "the host on A", said).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].from.name, "kab-kendal");
    let kendal_on_a = seen_as(&host, "kab-kendal", EVENT_WAIT).await;
    assert_eq!(got[0].from.participant_id, kendal_on_a);
    let republisher = host
        .participants()
        .into_iter()
        .find(|p| p.id == kendal_on_a)
        .unwrap();
    assert!(republisher.tracks.is_empty(), "{republisher:?}");
    let got = chats_until(&mut site_c, "C's site", said).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let kendal_on_c = seen_as(&site_c, "kab-kendal", EVENT_WAIT).await;
    assert_eq!(got[0].from.participant_id, kendal_on_c);
    let marker = "Baik, terima kasih Kendal";
    host.chat(marker).await.unwrap();
    let got = chats_until_all(&mut watcher, "the watching site", &[said, marker]).await;
    assert_eq!(got.len(), 2, "once each: {got:?}");
    assert_eq!(&got[0].from.participant_id, watcher.participant_id());

    // 2. It raises its hand: the owner's queue holds it, C mirrors it.
    watcher.raise_hand(true).await.unwrap();
    hands_at(&mut host, "the host on A", &[&kendal_on_a]).await;
    hands_at(&mut site_c, "C's site", &[&kendal_on_c]).await;
    // ... and the host on A can answer it privately now (its republisher there).
    host.chat_to(&kendal_on_a, "Silakan, Kendal").await.unwrap();
    let got = chats_until(&mut watcher, "the watching site", "Silakan, Kendal").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].to.as_ref(), Some(watcher.participant_id()));
    no_error(&mut host, "the host on A");
}

/// Wait for `leave {reason}` at `c` (its own node ends its session).
async fn leave_at(c: &mut Client, who: &str, reason: LeaveReason) {
    let got = c
        .wait_for(
            |m| matches!(m, ServerMessage::Leave { reason: r, .. } if *r == reason),
            EVENT_WAIT,
        )
        .await;
    assert!(got.is_ok(), "{who}: no leave {reason:?}: {got:?}");
}

/// Wait until `c` sees `gone` leave with `reason`.
async fn left_at(c: &mut Client, who: &str, gone: &ParticipantId, reason: LeaveReason) {
    let got = c
        .wait_for(
            |m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: r, .. } if participant_id == gone && *r == reason),
            EVENT_WAIT,
        )
        .await;
    assert!(
        got.is_ok(),
        "{who}: {gone} never left ({reason:?}): {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_owner_hosts_remove_and_end_room_are_room_wide() {
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test (remove, end_room)")
    else {
        return;
    };
    let nodes = three_nodes(&setup);
    let room = format!("end-b-{}", setup.suffix);

    // A owns the room: two sites there; the host on B (publishing nothing: its republisher on
    // the owner joins when it first acts); two sites on C.
    let [mut site_a, mut demak, mut host_b, mut site_c, mut batang] = setup
        .cast(
            &nodes,
            &room,
            [SEMARANG_A, DEMAK_A, REGENT_B_WATCHING, SOLO_C, BATANG_C],
        )
        .await;
    let [c_on_a, demak_on_b, c_on_b, _, _] = seen_all(
        [
            (&site_a, "kota-solo"),
            (&host_b, "kab-demak"),
            (&host_b, "kota-solo"),
            (&host_b, "kab-batang"),
            (&batang, "kab-semarang"),
        ],
        LEG_WAIT,
    )
    .await;
    // B's outbound leg is up too (the host's first act crosses through it): its spotlight on
    // A's site reaches A.
    let a_on_b = seen_as(&host_b, "kab-semarang", LEG_WAIT).await;
    host_b
        .send(&ClientMessage::Spotlight {
            participant_id: Some(a_on_b.clone()),
        })
        .await
        .unwrap();
    let a_id = site_a.participant_id().clone();
    spotlight_at(&mut site_a, "A's site", &a_id).await;

    // 1. The host on B removes C's site: C's own node removes it (through the owner, which
    //    removed its republisher there), so A sees it leave too.
    moderate(&host_b, ModerateAction::Remove, &c_on_b).await;
    leave_at(&mut site_c, "C's site", LeaveReason::Removed).await;
    left_at(&mut site_a, "A's site", &c_on_a, LeaveReason::Removed).await;

    // 2. ... and A's site Demak: the owner removes it.
    moderate(&host_b, ModerateAction::Remove, &demak_on_b).await;
    leave_at(&mut demak, "Demak on A", LeaveReason::Removed).await;
    let demak_on_a = demak.participant_id().clone();
    left_at(&mut site_a, "A's site", &demak_on_a, LeaveReason::Removed).await;

    // A forged target: refused to the host only, nothing crosses.
    moderate(
        &host_b,
        ModerateAction::Remove,
        &ParticipantId("PA_forged".into()),
    )
    .await;
    assert_eq!(
        next_error(&mut host_b, "the host on B").await,
        ErrorCode::UnknownParticipant
    );

    // 3. The host on B ends the room: every node ends it (A's and C's sites get `leave`
    //    from their own node).
    host_b
        .send(&ClientMessage::Moderate {
            action: ModerateAction::EndRoom,
            participant_id: None,
        })
        .await
        .unwrap();
    leave_at(&mut host_b, "the host on B", LeaveReason::RoomEnded).await;
    leave_at(&mut site_a, "A's site", LeaveReason::RoomEnded).await;
    leave_at(&mut batang, "C's other site", LeaveReason::RoomEnded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owners_unmute_of_a_site_another_nodes_host_muted_is_heard_there() {
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test (unmute back)") else {
        return;
    };
    let nodes = three_nodes(&setup);
    let room = format!("unmute-{}", setup.suffix);

    // A owns the room: the governor and a site; on B its regent (host) and a site listening.
    let [mut host, mut site_a, host_b, site_b] = setup
        .cast(&nodes, &room, [GOVERNOR_A, SEMARANG_A, REGENT_B, KENDAL_B])
        .await;
    let [a_on_b, _, _] = seen_all(
        [
            (&site_b, "kab-semarang"),
            (&host, "bupati"),
            (&host, "kab-kendal"),
        ],
        LEG_WAIT,
    )
    .await;
    let a_on_host_b = seen_as(&host_b, "kab-semarang", LEG_WAIT).await;
    hears(&site_b, "B's site", &a_on_b, 0, 25).await;

    // 1. B's regent mutes A's site: A mutes it (B's instance of its republisher too).
    moderate(&host_b, ModerateAction::MuteAudio, &a_on_host_b).await;
    moderator_mute_at(&mut site_a, "A's site", true).await;

    // 2. The governor unmutes it on A: B's listeners hear it again (B lifts its own mute of
    //    the site's republisher, not only A).
    moderate(&host, ModerateAction::UnmuteAudio, site_a.participant_id()).await;
    moderator_mute_at(&mut site_a, "A's site", false).await;
    hears(
        &site_b,
        "B's site",
        &a_on_b,
        audio_from(&site_b, &a_on_b),
        25,
    )
    .await;
    no_error(&mut host, "the governor");
}

/// The participant list of the rakor's live room as node `api`'s operator API shows it.
fn live_names(api: &Api, rakor: i64) -> Vec<String> {
    let r = api.get(&format!("/api/v1/rakor/{rakor}/live")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().unwrap()["participants"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watching_site_is_in_the_room_on_every_node_from_its_join() {
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test (watcher at join)")
    else {
        return;
    };
    let out = setup.p.add_operator("operator", PASSWORD).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = three_nodes(&setup);
    let mut api = Api::new(nodes[0].http);
    tokio::task::block_in_place(|| api.login("operator", PASSWORD)).unwrap();
    let room = format!("roster-{}", setup.suffix);
    let rakor = tokio::task::block_in_place(|| {
        let host = add_site(&api, "Command Room Provinsi", "opd")?;
        let v = api.expect(
            "POST",
            "/api/v1/rakor",
            Some(serde_json::json!({
                "title": "Rakor Inflasi", "agenda": "Harga beras",
                "start": wib_in(60), "end": wib_in(3660),
                "host_site_id": host, "invited_site_ids": [], "room": room,
            })),
            201,
        )?;
        anyhow::Ok(v["id"].as_i64().unwrap())
    })
    .unwrap();

    // A owns the room: the governor. On B a site that only watches and never acts; on C a
    // regent (host).
    let [mut host, mut watcher, mut host_c] = setup
        .cast(&nodes, &room, [GOVERNOR_A, KENDAL_B_WATCHING, HOST_C])
        .await;

    // 1. Without doing anything, the watching site is in the room on A and on C (its
    //    republishers, without tracks), and in the owner's live participant list.
    let [kendal_on_a, kendal_on_c, _] = seen_all(
        [
            (&host, "kab-kendal"),
            (&host_c, "kab-kendal"),
            (&watcher, "gubernur"),
        ],
        LEG_WAIT,
    )
    .await;
    let on_a = host
        .participants()
        .into_iter()
        .find(|p| p.id == kendal_on_a)
        .unwrap();
    assert!(on_a.tracks.is_empty(), "{on_a:?}");
    assert_eq!(on_a.name, "kab-kendal");
    let names = tokio::task::block_in_place(|| live_names(&api, rakor));
    assert!(
        names.iter().any(|n| n == "kab-kendal"),
        "the owner's live list: {names:?}"
    );

    // 2. The host on C (a third node) and the governor write to it privately: it gets both,
    //    addressed to itself, and nobody else does.
    seen_as(&watcher, "bupati-solo", LEG_WAIT).await;
    host_c
        .chat_to(&kendal_on_c, "Kendal, mohon laporan harga")
        .await
        .unwrap();
    let got = chats_until(
        &mut watcher,
        "the watching site",
        "Kendal, mohon laporan harga",
    )
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].to.as_ref(), Some(watcher.participant_id()));
    assert_eq!(got[0].from.name, "bupati-solo");
    host.chat_to(&kendal_on_a, "Kendal, dari gubernur")
        .await
        .unwrap();
    let got = chats_until(&mut watcher, "the watching site", "Kendal, dari gubernur").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].from.name, "gubernur");
    no_error(&mut host, "the governor");
    no_error(&mut host_c, "the host on C");

    // 3. The governor removes it: B's node removes it, C sees it leave (its republisher
    //    there leaves with it).
    moderate(&host, ModerateAction::Remove, &kendal_on_a).await;
    leave_at(&mut watcher, "the watching site", LeaveReason::Removed).await;
    let gone = host_c
        .wait_for(
            |m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if *participant_id == kendal_on_c),
            EVENT_WAIT,
        )
        .await;
    assert!(
        gone.is_ok(),
        "the host on C: the watching site never left: {gone:?}"
    );
    no_error(&mut host, "the governor");
}

/// Wait until the presentation `c` knows (`joined`, `presentation`) is `want`'s (`None`: no
/// presentation), reading its `presentation` messages as they come.
async fn presentation_at(c: &mut Client, who: &str, want: Option<&ParticipantId>) {
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        let now = c.presentation().map(|p| p.participant_id);
        if now.as_ref() == want {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let got = c
            .wait_for(|m| matches!(m, ServerMessage::Presentation { .. }), left)
            .await;
        assert!(
            got.is_ok(),
            "{who}: presentation {now:?}, never {want:?}: {got:?}"
        );
    }
}

/// Wait for `presentation_stopped {reason}` at the presenter `c`.
async fn presentation_stopped_at(c: &mut Client, who: &str, want: rakor_proto::PresentationEnd) {
    let got = c
        .wait_for(
            |m| matches!(m, ServerMessage::PresentationStopped { reason, .. } if *reason == want),
            EVENT_WAIT,
        )
        .await;
    assert!(
        got.is_ok(),
        "{who}: no presentation_stopped {want:?}: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presentations_are_stopped_and_taken_over_across_nodes() {
    use rakor_proto::PresentationEnd;
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test (presentation)") else {
        return;
    };
    let nodes = three_nodes(&setup);
    let room = format!("present-{}", setup.suffix);

    // A owns the room: the governor and a site; on B a regent (host) and a site; a site on C.
    let [mut host, mut site_a, mut host_b, mut kendal, mut site_c] = setup
        .cast(
            &nodes,
            &room,
            [GOVERNOR_A, SEMARANG_A, REGENT_B, KENDAL_B, SOLO_C],
        )
        .await;
    let [c_on_a, c_on_b, a_on_b, a_on_c, hostb_on_a, hostb_on_c, kendal_on_a, kendal_on_c] =
        seen_all(
            [
                (&site_a, "kota-solo"),
                (&host_b, "kota-solo"),
                (&host_b, "kab-semarang"),
                (&site_c, "kab-semarang"),
                (&site_a, "bupati"),
                (&site_c, "bupati"),
                (&site_a, "kab-kendal"),
                (&site_c, "kab-kendal"),
            ],
            LEG_WAIT,
        )
        .await;
    seen_all([(&host, "kota-solo"), (&host, "bupati")], LEG_WAIT).await;

    // 1. C's site presents; the regent on B (a non-owner) stops it: C's node stops it
    //    (`presentation_stopped {reason: stopped}` at the site), and A sees it end.
    site_c.publish_screen().await.unwrap();
    presentation_at(&mut site_a, "A's site", Some(&c_on_a)).await;
    presentation_at(&mut host_b, "the host on B", Some(&c_on_b)).await;
    host_b
        .send(&ClientMessage::Moderate {
            action: ModerateAction::StopPresentation,
            participant_id: None,
        })
        .await
        .unwrap();
    presentation_stopped_at(&mut site_c, "C's site", PresentationEnd::Stopped).await;
    presentation_at(&mut site_a, "A's site", None).await;
    presentation_at(&mut host_b, "the host on B", None).await;

    // 2. A's site presents; the regent on B shares its screen and takes over: A's node tells
    //    its presenter `taken_over`, and A and C show the regent's presentation.
    site_a.publish_screen().await.unwrap();
    presentation_at(&mut host_b, "the host on B", Some(&a_on_b)).await;
    presentation_at(&mut site_c, "C's site", Some(&a_on_c)).await;
    host_b.publish_screen().await.unwrap();
    presentation_stopped_at(&mut site_a, "A's site", PresentationEnd::TakenOver).await;
    presentation_at(&mut host, "the governor", Some(&hostb_on_a)).await;
    presentation_at(&mut site_c, "C's site", Some(&hostb_on_c)).await;
    host_b.stop_screen().await.unwrap();
    presentation_at(&mut site_c, "C's site", None).await;
    presentation_at(&mut host, "the governor", None).await;

    // 3. B's site presents; the governor (the owner's host) takes over: B's node tells its
    //    presenter `taken_over`.
    kendal.publish_screen().await.unwrap();
    presentation_at(&mut host, "the governor", Some(&kendal_on_a)).await;
    presentation_at(&mut site_c, "C's site", Some(&kendal_on_c)).await;
    host.publish_screen().await.unwrap();
    presentation_stopped_at(&mut kendal, "B's site", PresentationEnd::TakenOver).await;
    let host_id = host.participant_id().clone();
    presentation_at(&mut site_a, "A's site", Some(&host_id)).await;
    no_error(&mut host, "the governor");
    no_error(&mut host_b, "the host on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operators_mute_on_a_third_node_is_room_wide() {
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test (operator on C)") else {
        return;
    };
    let out = setup.p.add_operator("operator", PASSWORD).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = three_nodes(&setup);
    let room = format!("op-c-{}", setup.suffix);
    // The operator's console on C (a node that neither owns the room nor has the site).
    let mut api_c = Api::new(nodes[2].http);
    tokio::task::block_in_place(|| api_c.login("operator", PASSWORD)).unwrap();
    let rakor = tokio::task::block_in_place(|| {
        let host = add_site(&api_c, "Command Room Provinsi", "opd")?;
        let v = api_c.expect(
            "POST",
            "/api/v1/rakor",
            Some(serde_json::json!({
                "title": "Rakor Banjir", "agenda": "Tanggap darurat",
                "start": wib_in(60), "end": wib_in(3660),
                "host_site_id": host, "invited_site_ids": [], "room": room,
            })),
            201,
        )?;
        anyhow::Ok(v["id"].as_i64().unwrap())
    })
    .unwrap();

    // A owns the room: the governor and a site listening; a site on B; a site on C.
    let [host, site_a, mut kendal, site_c] = setup
        .cast(&nodes, &room, [GOVERNOR_A, SEMARANG_A, KENDAL_B, SOLO_C])
        .await;
    let [kendal_on_a, kendal_on_c, _] = seen_all(
        [
            (&host, "kab-kendal"),
            (&site_c, "kab-kendal"),
            (&kendal, "gubernur"),
        ],
        LEG_WAIT,
    )
    .await;
    let host_id = host.participant_id().clone();
    hears(&site_a, "A's site", &kendal_on_a, 0, 25).await;

    // 1. The operator on C mutes B's site (its participant on C): B's node mutes it, so A
    //    stops receiving it too. The clock: the governor's audio at A's site (a host's audio
    //    is always forwarded) goes on meanwhile.
    let mute = |muted: bool| {
        let r = tokio::task::block_in_place(|| {
            api_c.post(
                &format!("/api/v1/rakor/{rakor}/participants/{kendal_on_c}/mute"),
                serde_json::json!({ "muted": muted }),
            )
        })
        .unwrap();
        assert_eq!(r.status, 204, "{}", r.body);
    };
    mute(true);
    moderator_mute_at(&mut kendal, "B's site", true).await;
    let at_a = audio_from(&site_a, &kendal_on_a);
    hears(
        &site_a,
        "A's site",
        &host_id,
        audio_from(&site_a, &host_id),
        100,
    )
    .await;
    let late = audio_from(&site_a, &kendal_on_a) - at_a;
    assert!(
        late <= 10,
        "A still receives B's muted site: {late} packets over 2 s of the governor's audio"
    );

    // 2. The operator on C unmutes it: B unmutes it and A hears it again.
    mute(false);
    moderator_mute_at(&mut kendal, "B's site", false).await;
    hears(
        &site_a,
        "A's site",
        &kendal_on_a,
        audio_from(&site_a, &kendal_on_a),
        25,
    )
    .await;
    drop((host, site_c));
}

/// The texts of the `chat_history` messages `c` gets until all of `texts` arrived.
async fn history_until(c: &mut Client, who: &str, texts: &[&str]) -> Vec<ChatEntry> {
    let mut got: Vec<ChatEntry> = Vec::new();
    while !texts.iter().all(|t| got.iter().any(|e| e.text == *t)) {
        match c
            .wait_for(
                |m| matches!(m, ServerMessage::ChatHistory { .. }),
                EVENT_WAIT,
            )
            .await
        {
            Ok(ServerMessage::ChatHistory { messages, after }) => {
                assert!(after.is_none(), "{who}: {after:?}");
                for m in messages {
                    if !got.iter().any(|e| e.id == m.id) {
                        got.push(m);
                    }
                }
            }
            other => panic!("{who}: no history with {texts:?}: {other:?}; got: {got:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_leg_starts_later_gets_the_earlier_chat() {
    let Some(setup) = CascadeSetup::from_env("cascade_moderation e2e test (late history)") else {
        return;
    };
    let nodes = three_nodes(&setup);
    let room = format!("history-{}", setup.suffix);

    // A owns the room: the governor and a site talk before anyone is on C.
    let [host, mut site_a] = setup.cast(&nodes, &room, [GOVERNOR_A, SEMARANG_A]).await;
    let said = ["Rapat dimulai", "Agenda pertama: banjir", "Semarang siap"];
    host.chat(said[0]).await.unwrap();
    host.chat(said[1]).await.unwrap();
    // (Two senders' messages reach the owner in any order: the site answers once it has both.)
    chats_until(&mut site_a, "A's site", said[1]).await;
    site_a.chat(said[2]).await.unwrap();
    chats_until(&mut site_a, "A's site", said[2]).await;

    // 1. The first site on C (C's leg starts with it): it gets the room's history, once
    //    each, in order, named by the senders' participants on C.
    let mut solo = setup
        .join_audio(nodes[2].ws_url(), &room, "kota-solo", "participant")
        .await;
    let got = history_until(&mut solo, "C's first site", &said).await;
    let texts: Vec<&str> = got.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, said, "{got:?}");
    let [host_on_c, a_on_c] =
        seen_all([(&solo, "gubernur"), (&solo, "kab-semarang")], LEG_WAIT).await;
    assert_eq!(got[0].from.participant_id, host_on_c);
    assert_eq!(got[0].from.name, "gubernur");
    assert_eq!(got[2].from.participant_id, a_on_c);

    // 2. A later site on C gets it in its join's history, and then the room's next message.
    let mut batang = setup
        .join_audio(nodes[2].ws_url(), &room, "kab-batang", "participant")
        .await;
    let got = history_until(&mut batang, "C's later site", &said).await;
    assert_eq!(got.len(), 3, "{got:?}");
    host.chat("Lanjut").await.unwrap();
    let got = chats_until(&mut batang, "C's later site", "Lanjut").await;
    assert_eq!(got.len(), 1, "{got:?}");
    let got = chats_until(&mut solo, "C's first site", "Lanjut").await;
    assert_eq!(got.len(), 1, "no history message again as chat: {got:?}");
}
