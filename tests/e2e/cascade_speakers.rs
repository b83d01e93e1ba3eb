//! Loudest-speaker selection across the cascade (issue 17, `crates/sfu/src/core/relay_levels.rs`,
//! `crates/client/src/relay_levels.rs`): three real `rakor` nodes (one Redis, one PostgreSQL),
//! the room owned by A, every node with `media.loudest_speakers = 2`.
//!
//! A loud site on A (-10 dBov) and on B (-20), a very quiet site on A (-110), a quiet site on
//! C (-90) and a listener on C. The source nodes tell their relay subscribers the smoothed
//! levels of the audio they forward (`track_levels`), the republishers write them into the
//! relayed packets, and C selects among relayed and local sites alike:
//!
//! - C's `speakers` names both loud remote sites (as C's participant ids of their
//!   republishers) in `speaking` and as the two `forwarded` — so the local quiet site lost its
//!   slot to them (the relayed audio is selected, not "always forwarded");
//! - neither quiet site is named speaking;
//! - the listener on C receives the two loud sites' audio, and the quiet local site's no more.
//!
//! Needs `RAKOR_TEST_REDIS_URL` and `RAKOR_TEST_POSTGRES_URL` (tests/run.sh starts both);
//! without them the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::cluster::{seen_as, CascadeSetup};
use rakor_proto::{ParticipantId, ServerMessage, TrackKind};
use std::collections::BTreeSet;
use std::time::Duration;

const JOIN_WAIT: Duration = Duration::from_secs(30);
const EVENT_WAIT: Duration = Duration::from_secs(30);
const MEDIA_WAIT: Duration = Duration::from_secs(20);

fn audio_packets(r: &Report, from: &ParticipantId) -> u64 {
    r.received_track(from, TrackKind::Audio)
        .map_or(0, |t| t.packets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn speakers_are_selected_room_wide_across_three_nodes() {
    let Some(setup) = CascadeSetup::from_env("cascade_speakers e2e test") else {
        return;
    };
    let suffix = &setup.suffix;
    let ids = [setup.node_id("a"), setup.node_id("b"), setup.node_id("c")];
    let two = [("RAKOR_MEDIA_LOUDEST_SPEAKERS", "2")];
    let start = |id: &str| setup.start_with(id, &two).unwrap();
    let nodes = [start(&ids[0]), start(&ids[1]), start(&ids[2])];
    let room = format!("speakers-{suffix}");
    // A site publishing audio only, at `level` -dBov (None: a listener publishing nothing).
    let join = |url: String, sub: &'static str, level: Option<u8>| {
        let token = setup.token(&room, sub, "participant").unwrap();
        async move {
            let opts = ClientOptions::new(url, token)
                .publish(level.is_some(), false)
                .audio_level(level);
            Client::connect(opts)
                .await
                .unwrap_or_else(|e| panic!("{sub} could not join: {e}"))
        }
    };

    // A owns the room (its first join). C's quiet site joins before the loud ones reach C,
    // so it holds one of C's two slots first and must be displaced.
    let loud_a = join(nodes[0].ws_url(), "kab-semarang", Some(10)).await;
    let _quiet_a = join(nodes[0].ws_url(), "kab-demak", Some(110)).await;
    let quiet_c = join(nodes[2].ws_url(), "kota-solo", Some(90)).await;
    let mut listener = join(nodes[2].ws_url(), "kab-klaten", None).await;
    let _loud_b = join(nodes[1].ws_url(), "kab-kendal", Some(20)).await;

    let a_on_c = seen_as(&listener, "kab-semarang", JOIN_WAIT).await;
    let b_on_c = seen_as(&listener, "kab-kendal", JOIN_WAIT).await;
    let quiet_a_on_c = seen_as(&listener, "kab-demak", JOIN_WAIT).await;
    let quiet_c_id = quiet_c.participant_id().clone();
    assert_ne!(
        a_on_c,
        *loud_a.participant_id(),
        "C names A's site by its republisher"
    );
    let loud: BTreeSet<ParticipantId> = [a_on_c.clone(), b_on_c.clone()].into();

    // C forwards exactly the two loud remote sites: they took both slots by their levels.
    let m = listener
        .wait_for(
            |m| matches!(m, ServerMessage::Speakers { forwarded, .. } if forwarded.iter().cloned().collect::<BTreeSet<_>>() == loud),
            EVENT_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("C never forwarded the loud remote sites {loud:?}: {e}"));
    let ServerMessage::Speakers {
        speaking,
        forwarded,
    } = m
    else {
        unreachable!()
    };
    eprintln!("C's speakers: speaking {speaking:?}, forwarded {forwarded:?}");
    for p in &loud {
        assert!(
            speaking.contains(p),
            "loud remote {p} not speaking on C: {speaking:?}"
        );
    }
    for p in [&quiet_a_on_c, &quiet_c_id] {
        assert!(
            !speaking.contains(p),
            "quiet {p} speaking on C: {speaking:?}"
        );
        assert!(
            !forwarded.contains(p),
            "quiet {p} forwarded on C: {forwarded:?}"
        );
    }
    assert_eq!(
        speaking.first(),
        Some(&a_on_c),
        "the loudest first: {speaking:?}"
    );

    // C's listener hears the loud remote sites, and no more of the quiet local one.
    let before = listener.stats();
    let after = listener
        .wait_media(
            |r| {
                loud.iter()
                    .all(|p| audio_packets(r, p) >= audio_packets(&before, p) + 100)
            },
            MEDIA_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("C's listener does not hear the loud remote sites: {e}"));
    let grew = audio_packets(&after, &quiet_c_id) - audio_packets(&before, &quiet_c_id);
    // A packet or two may have been in flight at the switch.
    assert!(
        grew <= 2,
        "the quiet local site is still forwarded on C: +{grew} packets"
    );
    assert_eq!(after.total_mismatches(), 0, "{}", after.to_json());
}
