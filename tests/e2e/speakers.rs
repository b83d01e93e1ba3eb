//! Loudest-speaker audio: the server forwards only the `media.loudest_speakers` (3) loudest sites
//! by their RFC 6464 audio level, plus the host, and says who speaks (`speakers`).
//!
//! Real binary, real WebRTC clients (`rakor-client` sending the audio level extension with a
//! level each test sets), packets counted at a receive-only listener.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::Server;
use rakor_proto::{ParticipantId, ServerMessage, TrackKind};
use std::collections::BTreeSet;
use std::time::Duration;

const MEDIA_WAIT: Duration = Duration::from_secs(20);
const EVENT_WAIT: Duration = Duration::from_secs(15);

async fn join(server: &Server, identity: &str, role: &str, level: Option<u8>) -> Client {
    let token = server.token("rakor", identity, role).unwrap();
    let opts = ClientOptions::new(server.ws_url(), token)
        .publish(level.is_some(), false)
        .audio_level(level);
    Client::connect(opts)
        .await
        .unwrap_or_else(|e| panic!("{identity} could not join: {e}"))
}

fn audio_packets(r: &Report, from: &ParticipantId) -> u64 {
    r.received_track(from, TrackKind::Audio)
        .map_or(0, |t| t.packets)
}

/// Wait until the listener is told that exactly `want` sites are forwarded.
async fn wait_forwarded(
    listener: &mut Client,
    want: &BTreeSet<ParticipantId>,
) -> Vec<ParticipantId> {
    let m = listener
        .wait_for(
            |m| matches!(m, ServerMessage::Speakers { forwarded, .. } if forwarded.iter().cloned().collect::<BTreeSet<_>>() == *want),
            EVENT_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("forwarded set never became {want:?}: {e}"));
    match m {
        ServerMessage::Speakers { speaking, .. } => speaking,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_three_loudest_sites_and_the_host_are_heard() {
    let server = Server::start().unwrap();
    let mut listener = join(&server, "listener", "participant", None).await;
    // The host is quieter than every loud site but is always heard.
    let host = join(&server, "command-room", "host", Some(45)).await;
    // Quiet sites join first and take the free slots; the loud ones must displace them.
    let mut sites = Vec::new();
    for (name, level) in [
        ("quiet-1", 90u8),
        ("quiet-2", 85),
        ("quiet-3", 80),
        ("loud-1", 10),
        ("loud-2", 20),
        ("loud-3", 30),
    ] {
        sites.push((name, join(&server, name, "participant", Some(level)).await));
    }
    let id = |n: &str| {
        sites
            .iter()
            .find(|(s, _)| *s == n)
            .map(|(_, c)| c.participant_id().clone())
            .unwrap()
    };
    let loud: BTreeSet<ParticipantId> = ["loud-1", "loud-2", "loud-3"].map(id).into();
    let quiet: Vec<ParticipantId> = ["quiet-1", "quiet-2", "quiet-3"].map(id).into();
    let host_id = host.participant_id().clone();

    let speaking = wait_forwarded(&mut listener, &loud).await;
    // Speaking: the loud sites and the host (-45 dBov is speech), not the quiet ones.
    for p in loud.iter().chain([&host_id]) {
        assert!(speaking.contains(p), "{p} not in speaking {speaking:?}");
    }
    for p in &quiet {
        assert!(!speaking.contains(p), "quiet {p} in speaking {speaking:?}");
    }

    // From now on the listener receives the loud sites and the host, and nothing of the quiet.
    let before = listener.stats();
    let after = listener
        .wait_media(
            |r| {
                loud.iter()
                    .chain([&host_id])
                    .all(|p| audio_packets(r, p) >= audio_packets(&before, p) + 100)
            },
            MEDIA_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("loud sites / host not heard: {e}"));
    for p in &quiet {
        let grew = audio_packets(&after, p) - audio_packets(&before, p);
        // A packet or two may have been in flight at the switch.
        assert!(
            grew <= 2,
            "quiet site {p} still forwarded: +{grew} packets in 2 s"
        );
    }
    assert_eq!(after.total_mismatches(), 0, "{}", after.to_json());

    // Speaker change: loud-1 falls silent and quiet-1 speaks up; after the hold quiet-1 is
    // forwarded in loud-1's place and reaches the listener.
    let client = |n: &str| &sites.iter().find(|(s, _)| *s == n).unwrap().1;
    client("loud-1").set_audio_level(Some(127));
    client("quiet-1").set_audio_level(Some(5));
    let want: BTreeSet<ParticipantId> = [id("quiet-1"), id("loud-2"), id("loud-3")].into();
    wait_forwarded(&mut listener, &want).await;
    let before = listener.stats();
    let q1 = id("quiet-1");
    listener
        .wait_media(
            |r| audio_packets(r, &q1) >= audio_packets(&before, &q1) + 50,
            MEDIA_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("the new speaker is not heard: {e}"));
    drop(sites);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_without_levels_is_always_forwarded() {
    let server = Server::start().unwrap();
    let listener = join(&server, "listener", "participant", None).await;
    // Five sites whose client sends no audio level: all heard, none announced as speaking.
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(join(&server, &format!("site-{i}"), "participant", None).await);
        clients.last().unwrap().publish(true, false).await.unwrap();
    }
    let sites: Vec<ParticipantId> = clients.iter().map(|c| c.participant_id().clone()).collect();
    listener
        .wait_media(
            |r| sites.iter().all(|p| audio_packets(r, p) >= 50),
            MEDIA_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("sites without audio levels not all heard: {e}"));
}
