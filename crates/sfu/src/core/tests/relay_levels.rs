//! Audio levels across cascade nodes (`relay_levels.rs`): a relay subscriber is told the
//! levels of the audio the room forwards (`track_levels`); nobody else ever is.

use super::rig::{config, Rig};
use crate::testkit::PublishSpec;
use rakor_proto::{Role, ServerMessage, TrackId, TrackKind, TrackLevel};
use std::time::Duration;

const AUDIO: PublishSpec = PublishSpec {
    audio: true,
    video: false,
    simulcast: false,
};

fn levels(rig: &mut Rig, site: usize) -> Vec<Vec<TrackLevel>> {
    rig.sites[site]
        .take()
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::TrackLevels { levels } => Some(levels),
            _ => None,
        })
        .collect()
}

fn level_of(list: &[TrackLevel], track: &TrackId) -> Option<u8> {
    list.iter().find(|l| l.track_id == *track).map(|l| l.level)
}

/// One forwarded slot (`loudest_speakers = 1`): a host at -40, a loud site at -20, a quiet
/// one at -100. The relay hears the host's and the loud site's levels (the quiet site's
/// audio is not forwarded, so it is not listed); the host and the sites hear none.
#[test]
fn a_relay_hears_the_levels_of_the_forwarded_audio_and_nobody_else_does() {
    let mut rig = Rig::with(crate::SfuConfig {
        loudest_speakers: 1,
        ..config()
    });
    let host = rig.join("command-room", Role::Host);
    let loud = rig.join("kab-kendal", Role::Participant);
    let quiet = rig.join("kab-demak", Role::Participant);
    let relay = rig.join("cascade/node-b", Role::Relay);
    for s in [host, loud, quiet] {
        rig.publish(s, AUDIO);
    }
    let send = |r: &mut Rig, _: u64| {
        r.audio(host, 40);
        r.audio(loud, 20);
        r.audio(quiet, 100);
    };
    let ok = rig.run_while_sending(Duration::from_secs(3), send, |r| {
        [host, loud, quiet].iter().all(|&s| r.connected(s))
    });
    assert!(ok, "the publishers connect in simulated time");
    let (h, l, q) = (
        rig.published(host, TrackKind::Audio)[0].clone(),
        rig.published(loud, TrackKind::Audio)[0].clone(),
        rig.published(quiet, TrackKind::Audio)[0].clone(),
    );
    // Past the hold (1.5 s): the loud site holds the one slot.
    rig.run_while_sending(Duration::from_secs(3), send, |_| false);
    let _ = levels(&mut rig, relay);
    rig.run_while_sending(Duration::from_millis(1500), send, |_| false);
    let got = levels(&mut rig, relay);
    let last = got.last().expect("the relay was told the levels");
    assert_eq!(level_of(last, &l), Some(20), "{last:?}");
    assert_eq!(level_of(last, &h), Some(40), "{last:?}");
    assert_eq!(
        level_of(last, &q),
        None,
        "not forwarded, not listed: {last:?}"
    );
    assert_eq!(last.len(), 2, "{last:?}");
    // Steady levels: refreshed about once a second, not every 100 ms.
    assert!(
        (1..=3).contains(&got.len()),
        "{} messages in 1.5 s",
        got.len()
    );
    for s in [host, loud, quiet] {
        assert!(
            !rig.sites[s].got(|m| matches!(m, ServerMessage::TrackLevels { .. })),
            "site {s} got a relay-only message"
        );
    }

    // The quiet site speaks up and the loud one falls silent: after the hold the relay hears
    // the new speaker's level, and the silent one is no longer listed.
    let send = |r: &mut Rig, _: u64| {
        r.audio(host, 40);
        r.audio(loud, 127);
        r.audio(quiet, 10);
    };
    let ok = rig.run_while_sending(Duration::from_secs(4), send, |r| {
        r.sites[relay]
            .log
            .iter()
            .rev()
            .find_map(|m| match m {
                ServerMessage::TrackLevels { levels } => Some(levels),
                _ => None,
            })
            .is_some_and(|last| level_of(last, &q) == Some(10) && level_of(last, &l).is_none())
    });
    assert!(
        ok,
        "the relay never heard the new speaker: {:?}",
        levels(&mut rig, relay)
    );
}

/// No relay in the room: no `track_levels` at all.
#[test]
fn without_a_relay_nobody_hears_levels() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let site = rig.join("kab-kendal", Role::Participant);
    rig.publish(site, AUDIO);
    rig.run_while_sending(Duration::from_secs(3), |r, _| r.audio(site, 20), |_| false);
    for s in [host, site] {
        assert!(!rig.sites[s].got(|m| matches!(m, ServerMessage::TrackLevels { .. })));
    }
}
