use super::rig::{Rig, ROOM};
use crate::handle::{Moderation, RoomEvent};
use crate::testkit::{layer_of, PublishSpec};
use crate::SfuError;
use rakor_proto::{
    ClientMessage, ErrorCode, LeaveReason, ModerateAction, ParticipantId, PeerConnectionKind,
    PresentationEnd, Role, ServerMessage, TrackDeclaration, TrackId, TrackKind, TrackSource,
};
use std::time::Duration;

const AV: PublishSpec = PublishSpec {
    audio: true,
    video: true,
    simulcast: false,
};

/// Host + one site; the site publishes audio and video; the host's subscriber connection is
/// up and receiving. Returns (rig, host, site).
pub(super) fn host_and_site() -> (Rig, usize, usize) {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let site = rig.join("dishub", Role::Participant);
    rig.publish(site, AV);
    let ok = rig.run_while_sending(
        Duration::from_secs(3),
        |r, _| {
            r.audio(site, 30);
            r.video(site, true, None);
        },
        |r| r.connected(host) && r.connected(site) && r.sites[host].subscriber.is_some(),
    );
    assert!(ok, "host and site connect in simulated time");
    (rig, host, site)
}

/// A site whose network drops UDP joins over ICE-TCP (an active candidate paired with the
/// server's passive one; every packet an RFC 4571 frame on its stream), a UDP site beside it:
/// media flows both ways, the server's packets to it leave as TCP transmits, and closing its
/// connections names its streams for the shell to close.
#[test]
fn ice_tcp_site_exchanges_media_with_a_udp_site() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let site = rig.join_tcp("no-udp", Role::Participant);
    rig.publish(host, AV);
    rig.publish(site, AV);
    let ok = rig.run_while_sending(
        Duration::from_secs(5),
        |r, _| {
            for s in [host, site] {
                r.audio(s, 30);
                r.video(s, true, None);
            }
        },
        |r| {
            r.connected(host)
                && r.connected(site)
                && r.sites[host].subscriber.is_some()
                && r.sites[site].subscriber.is_some()
        },
    );
    assert!(ok, "both sites connect, one over ICE-TCP");
    let site_addr = rig.sites[site].publisher.as_ref().unwrap().addr();
    assert!(
        rig.core.stream_bound(site_addr),
        "the stream was bound by its ICE check"
    );
    let (amid, vmid) = mids(&rig, host, site);
    let (hamid, hvmid) = mids(&rig, site, host);
    for _ in 0..25 {
        media(&mut rig, site, 1);
        media(&mut rig, host, 1);
    }
    assert!(
        rig.sites[host].received_from(&amid) >= 20,
        "UDP host hears the TCP site"
    );
    assert!(
        rig.sites[host].received_from(&vmid) >= 20,
        "UDP host sees the TCP site"
    );
    assert!(
        rig.sites[site].received_from(&hamid) >= 20,
        "TCP site hears the host"
    );
    assert!(
        rig.sites[site].received_from(&hvmid) >= 20,
        "TCP site sees the host"
    );
    let s = rig.core.stats();
    assert!(s.tcp_frames_in > 40, "{s:?}");
    assert_eq!(s.tcp_frames_unknown_source, 0, "{s:?}");
    // The TCP site leaves: its streams are named for closing, and forgotten.
    rig.core.drain_closed_streams().for_each(drop);
    rig.send(site, ClientMessage::Leave {});
    let closed: Vec<_> = rig.core.drain_closed_streams().collect();
    assert!(closed.contains(&site_addr), "{closed:?}");
    assert!(!rig.core.stream_bound(site_addr));
}

pub(super) fn mids(rig: &Rig, sub: usize, by: usize) -> (String, String) {
    let a = rig.published(by, TrackKind::Audio)[0].clone();
    let v = rig.published(by, TrackKind::Video)[0].clone();
    (rig.mid_of(sub, &a).unwrap(), rig.mid_of(sub, &v).unwrap())
}

/// Send `n` audio+video packets from `site` (a keyframe first), one per 20 ms.
pub(super) fn media(rig: &mut Rig, site: usize, n: u64) {
    rig.run_while_sending(
        Duration::from_millis(20 * n),
        |r, t| {
            r.audio(site, 30);
            r.video(site, t == 0, None);
        },
        |_| false,
    );
}

#[test]
fn join_publish_subscribe_and_leave() {
    let (mut rig, host, site) = host_and_site();
    let (amid, vmid) = mids(&rig, host, site);
    let (a0, v0) = (
        rig.sites[host].received_from(&amid),
        rig.sites[host].received_from(&vmid),
    );
    media(&mut rig, site, 25);
    let (a1, v1) = (
        rig.sites[host].received_from(&amid),
        rig.sites[host].received_from(&vmid),
    );
    assert!(a1 >= a0 + 24, "host got the site's audio: {a0} → {a1}");
    assert!(v1 >= v0 + 24, "host got the site's video: {v0} → {v1}");
    // Sequence numbers are consecutive on the leg.
    let sub = rig.sites[host].subscriber.as_ref().unwrap();
    let seqs = sub.received_on_mid(&vmid).unwrap().1.sequence_numbers();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );
    // The host joined first: it was told of the site, its tracks, and gets attendance.
    assert!(rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantJoined { .. })));
    let joined = rig.room_events();
    assert_eq!(
        joined
            .iter()
            .filter(|e| matches!(e, RoomEvent::Joined { .. }))
            .count(),
        2
    );
    // The site leaves.
    rig.sites[host].take();
    rig.send(site, ClientMessage::Leave {});
    let site_id = rig.sites[site].id.clone();
    assert!(rig.sites[host].got(|m| matches!(m, ServerMessage::TrackUnpublished { participant_id, .. } if *participant_id == site_id)));
    assert!(rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::ClientRequest, .. } if *participant_id == site_id)));
    assert!(rig.room_events().iter().any(|e| matches!(e, RoomEvent::Left { identity, reason: LeaveReason::ClientRequest, .. } if identity == "dishub")));
    assert!(rig.sites[site].closed, "the site's signalling is released");
    assert_eq!(rig.core.room_info(ROOM).unwrap().participants.len(), 1);
}

/// Bounded servicing steps (issue 16, the shell's `STEP_COPIES`): a batch of 16 packets read
/// at once is forwarded one copy per step (each step's datagrams can be sent before the next
/// packet is forwarded), none lost, in order on each leg.
#[test]
fn a_batch_is_forwarded_in_bounded_steps_in_order() {
    let (mut rig, host, site) = host_and_site();
    let (amid, vmid) = mids(&rig, host, site);
    let (a0, v0) = (
        rig.sites[host].received_from(&amid),
        rig.sites[host].received_from(&vmid),
    );
    rig.step_copies = 1;
    rig.burst(site, 8);
    assert_eq!(rig.steps.iter().sum::<u64>(), 16, "{:?}", rig.steps);
    assert!(rig.steps.iter().all(|&c| c <= 1), "{:?}", rig.steps);
    assert_eq!(rig.steps.iter().filter(|&&c| c == 1).count(), 16);
    assert_eq!(rig.sites[host].received_from(&amid), a0 + 8);
    assert_eq!(rig.sites[host].received_from(&vmid), v0 + 8);
    let sub = rig.sites[host].subscriber.as_ref().unwrap();
    for mid in [&amid, &vmid] {
        let seqs = sub.received_on_mid(mid).unwrap().1.sequence_numbers();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{mid}: {seqs:?}"
        );
    }
    // A larger budget: the same batch in fewer steps, each at most one packet over it.
    rig.step_copies = 5;
    rig.steps.clear();
    rig.burst(site, 8);
    assert_eq!(rig.steps.iter().sum::<u64>(), 16, "{:?}", rig.steps);
    assert!(rig.steps.iter().all(|&c| c <= 5), "{:?}", rig.steps);
    assert!(
        rig.steps.iter().filter(|&&c| c > 0).count() >= 4,
        "{:?}",
        rig.steps
    );
    assert_eq!(rig.sites[host].received_from(&vmid), v0 + 16);
}

/// Servicing walks the lists of connections with work (issue 16, `state::Work`): a
/// publisher connection flagged by two datagrams of one batch is serviced once, the leg the
/// batch wrote to once, nothing else; in bounded steps the leg, written in every step, is still
/// serviced (its timer asked) once per batch, and nothing that was not flagged is serviced.
#[test]
fn each_flagged_connection_is_serviced_once_per_batch() {
    let (mut rig, host, site) = host_and_site();
    rig.settle();
    let conn = |rig: &Rig, i: usize, publisher: bool| {
        let p = &rig.core.participants[&rig.sites[i].id];
        if publisher { p.pub_conn } else { p.sub_conn }.expect("connection")
    };
    let (publisher, leg) = (conn(&rig, site, true), conn(&rig, host, false));
    let (_, vmid) = mids(&rig, host, site);
    let v0 = rig.sites[host].received_from(&vmid);
    let count = |log: &[crate::slab::ConnKey], ci| log.iter().filter(|&&c| c == ci).count();
    for (step_copies, publisher_services) in [(0, 1), (1, 3)] {
        rig.step_copies = step_copies;
        rig.steps.clear();
        let now = rig.clock.now();
        let p = rig.sites[site].publisher.as_mut().expect("publisher");
        p.send_audio(now, 30, true).expect("send audio");
        p.send_vp8(now, false, None).expect("send vp8");
        rig.core.service_log.clear();
        let out_before = rig.core.stats.rtp_out;
        rig.datagrams();
        let log = std::mem::take(&mut rig.core.service_log);
        assert_eq!(
            rig.core.stats.rtp_out - out_before,
            2,
            "{step_copies}: both forwarded"
        );
        assert_eq!(count(&log, leg), 1, "{step_copies}: the leg once: {log:?}");
        // One service per step (the last one finds its input gone).
        assert_eq!(
            count(&log, publisher),
            publisher_services,
            "{step_copies}: {log:?} {:?}",
            rig.steps
        );
        assert_eq!(log.len(), publisher_services + 1, "nothing else: {log:?}");
        rig.settle();
    }
    assert_eq!(
        rig.sites[host].received_from(&vmid),
        v0 + 2,
        "the video reached the host"
    );
}

#[test]
fn the_same_identity_joining_twice_replaces_the_older_session() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let first = rig.join("dinkes", Role::Participant);
    let second = rig.join("dinkes", Role::Participant);
    assert!(rig.sites[first].got(|m| matches!(
        m,
        ServerMessage::Leave {
            reason: LeaveReason::Replaced,
            ..
        }
    )));
    assert!(rig.sites[first].closed);
    let old = rig.sites[first].id.clone();
    assert!(rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Replaced, .. } if *participant_id == old)));
    let info = rig.core.room_info(ROOM).unwrap();
    assert_eq!(info.participants.len(), 2);
    assert!(info
        .participants
        .iter()
        .any(|p| p.id == rig.sites[second].id));
    // A stale resume of the replaced session cannot push the live one out.
    rig.sites[first].id = old;
    let token = rig.sites[first].resume_token.clone();
    assert!(!token.is_empty());
    let r = rig.rejoin(first, Some(false));
    assert!(matches!(r, Err(SfuError::Replaced)), "{r:?}");
    assert_eq!(rig.core.room_info(ROOM).unwrap().participants.len(), 2);
}

#[test]
fn resume_inside_the_grace_window_keeps_the_participant_and_its_media() {
    let (mut rig, host, site) = host_and_site();
    let id = rig.sites[site].id.clone();
    rig.drop_signalling(site);
    rig.run_for(Duration::from_secs(5));
    assert!(
        !rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantLeft { .. })),
        "nobody sees a suspended site leave"
    );
    let (_, vmid) = mids(&rig, host, site);
    let before = rig.sites[host].received_from(&vmid);
    media(&mut rig, site, 10);
    assert!(
        rig.sites[host].received_from(&vmid) >= before + 9,
        "media flows while suspended"
    );
    let r = rig.rejoin(site, Some(false)).unwrap();
    assert_eq!(r, id, "the same participant");
    assert!(rig.sites[site].got(|m| matches!(
        m,
        ServerMessage::Joined {
            resumed: true,
            media_reset: false,
            ..
        }
    )));
    rig.run_for(Duration::from_secs(40));
    assert!(
        !rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantLeft { .. })),
        "a resumed site does not expire"
    );
}

#[test]
fn after_the_grace_window_the_site_is_gone_and_a_resume_is_a_new_session() {
    let (mut rig, host, site) = host_and_site();
    let id = rig.sites[site].id.clone();
    rig.drop_signalling(site);
    rig.run_for(Duration::from_secs(31));
    assert!(rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Disconnected, .. } if *participant_id == id)));
    let r = rig.rejoin(site, Some(false)).unwrap();
    assert_ne!(r, id, "a new participant");
    assert!(rig.sites[site].got(|m| matches!(m, ServerMessage::Joined { resumed: false, .. })));
}

/// Media is a sign of life: a publishing site whose consent checks are all lost (a lossy uplink
/// on a loaded machine loses or delays them first) while its media arrives stays in the room
/// well past the dead-peer timeout, and its audio keeps reaching the host. (A site from which
/// nothing arrives is removed in time: the next test.)
#[test]
fn media_keeps_a_site_whose_consent_checks_are_lost_in_the_room() {
    let (mut rig, host, site) = host_and_site();
    let id = rig.sites[site].id.clone();
    let audio = rig.published(site, TrackKind::Audio)[0].clone();
    let mid = rig
        .mid_of(host, &audio)
        .expect("the host receives the site's audio");
    let publisher = rig.sites[site].addr(PeerConnectionKind::Publisher);
    rig.stun_lost.insert(publisher);
    let before = rig.sites[host].received_from(&mid);
    let quiet_for = rig.core.cfg.dead_peer_timeout * 2;
    rig.run_while_sending(quiet_for, |r, _| r.audio(site, 30), |_| false);
    assert!(
        !rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, .. } if *participant_id == id)),
        "a site whose media arrives is not removed"
    );
    let during = rig.sites[host].received_from(&mid) - before;
    assert!(
        during > 500,
        "the host kept receiving its audio: {during} packets in {quiet_for:?}"
    );
    // Now nothing at all arrives from it (checks, media, reports): gone within the timeout.
    rig.cut_media(site, true);
    rig.run_for(rig.core.cfg.dead_peer_timeout);
    assert!(
        rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::MediaFailed, .. } if *participant_id == id)),
        "a silent site goes within the dead-peer timeout"
    );
}

#[test]
fn a_media_failure_parks_the_site_and_a_resume_brings_it_back_under_the_same_id() {
    let (mut rig, host, site) = host_and_site();
    let id = rig.sites[site].id.clone();
    rig.cut_media(site, true);
    rig.run_for(Duration::from_secs(10));
    assert!(
        rig.sites[host].got(|m| matches!(m, ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::MediaFailed, .. } if *participant_id == id)),
        "the room sees a dead site go within the dead-peer timeout"
    );
    assert!(rig.sites[site].got(|m| matches!(
        m,
        ServerMessage::Leave {
            reason: LeaveReason::MediaFailed,
            resumable: true
        }
    )));
    // Attendance holds the leave back while parked.
    assert!(!rig
        .room_events()
        .iter()
        .any(|e| matches!(e, RoomEvent::Left { .. })));
    rig.cut_media(site, false);
    rig.sites[host].take();
    let r = rig.rejoin(site, Some(true)).unwrap();
    assert_eq!(r, id);
    assert!(rig.sites[site].got(|m| matches!(
        m,
        ServerMessage::Joined {
            resumed: true,
            media_reset: true,
            ..
        }
    )));
    assert!(rig.sites[host].got(
        |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.id == id)
    ));
    // It publishes again and the host receives it.
    rig.publish(site, AV);
    media(&mut rig, site, 60);
    let v = rig.published(site, TrackKind::Video);
    let vmid = rig.mid_of(host, v.last().unwrap()).unwrap();
    assert!(
        rig.sites[host].received_from(&vmid) > 20,
        "video again after the resume"
    );
    assert!(
        !rig.room_events()
            .iter()
            .any(|e| matches!(e, RoomEvent::Left { .. })),
        "one continuous stay"
    );
}

#[test]
fn a_moderator_mute_stops_the_audio_and_sticks_across_a_rejoin() {
    let (mut rig, host, site) = host_and_site();
    let (amid, _) = mids(&rig, host, site);
    let id = rig.sites[site].id.clone();
    // A forged id: refused to the host.
    rig.send(
        host,
        ClientMessage::Moderate {
            action: ModerateAction::MuteAudio,
            participant_id: Some(ParticipantId("PA_forged".into())),
        },
    );
    assert!(rig.sites[host].got(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::UnknownParticipant,
            ..
        }
    )));
    rig.send(
        host,
        ClientMessage::Moderate {
            action: ModerateAction::MuteAudio,
            participant_id: Some(id.clone()),
        },
    );
    assert!(rig.sites[site].got(|m| matches!(m, ServerMessage::ModeratorMute { muted: true })));
    // The room learns which host muted it (a cascade node forwards its own host's mute).
    let host_id = rig.sites[host].id.clone();
    assert!(rig.sites[host].got(
        |m| matches!(m, ServerMessage::TrackMuted { muted: true, by: Some(b), .. } if b == &host_id)
    ));
    let before = rig.sites[host].received_from(&amid);
    media(&mut rig, site, 20);
    assert_eq!(
        rig.sites[host].received_from(&amid),
        before,
        "muted audio is not forwarded"
    );
    // The site cannot unmute itself.
    let track = rig.published(site, TrackKind::Audio)[0].clone();
    rig.send(
        site,
        ClientMessage::MuteTrack {
            track_id: track,
            muted: false,
        },
    );
    assert!(rig.sites[site].got(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    )));
    // It leaves and joins again: still muted.
    rig.send(site, ClientMessage::Leave {});
    rig.rejoin(site, None).unwrap();
    assert!(rig.sites[site].got(|m| matches!(m, ServerMessage::ModeratorMute { muted: true })));
    rig.publish(site, AV);
    media(&mut rig, site, 40);
    let a = rig.published(site, TrackKind::Audio);
    let amid2 = rig.mid_of(host, a.last().unwrap()).unwrap();
    assert_eq!(
        rig.sites[host].received_from(&amid2),
        0,
        "still muted after a rejoin"
    );
    let info = rig.core.room_info(ROOM).unwrap();
    assert_eq!(info.moderator_muted, vec![rig.sites[site].id.clone()]);
}

#[test]
fn the_host_removes_a_site_and_a_site_cannot_moderate() {
    let (mut rig, host, site) = host_and_site();
    let host_id = rig.sites[host].id.clone();
    rig.send(
        site,
        ClientMessage::Moderate {
            action: ModerateAction::Remove,
            participant_id: Some(host_id),
        },
    );
    assert!(rig.sites[site].got(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    )));
    assert_eq!(rig.core.room_info(ROOM).unwrap().participants.len(), 2);
    let id = rig.sites[site].id.clone();
    rig.send(
        host,
        ClientMessage::Moderate {
            action: ModerateAction::Remove,
            participant_id: Some(id.clone()),
        },
    );
    assert!(rig.sites[site].got(|m| matches!(
        m,
        ServerMessage::Leave {
            reason: LeaveReason::Removed,
            ..
        }
    )));
    assert!(rig.sites[site].closed);
    assert!(rig.sites[host].got(|m| matches!(
        m,
        ServerMessage::ParticipantLeft {
            reason: LeaveReason::Removed,
            ..
        }
    )));
    assert!(matches!(
        rig.moderate(Moderation::Remove { participant: id }),
        Err(SfuError::UnknownParticipant(_))
    ));
}

#[test]
fn spotlight_is_for_the_host_and_reaches_everyone() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let a = rig.join("dishub", Role::Participant);
    let b = rig.join("bapeda", Role::Participant);
    let a_id = rig.sites[a].id.clone();
    rig.send(
        b,
        ClientMessage::Spotlight {
            participant_id: Some(a_id.clone()),
        },
    );
    assert!(rig.sites[b].got(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    )));
    rig.send(
        host,
        ClientMessage::Spotlight {
            participant_id: Some(a_id.clone()),
        },
    );
    for s in [host, a, b] {
        assert!(rig.sites[s].got(
            |m| matches!(m, ServerMessage::Spotlight { participant_id: Some(p), .. } if *p == a_id)
        ));
    }
    assert_eq!(
        rig.core.room_info(ROOM).unwrap().spotlight,
        Some(a_id.clone())
    );
    // The spotlighted site leaves: the spotlight clears for everyone.
    rig.send(a, ClientMessage::Leave {});
    assert!(rig.sites[b].got(|m| matches!(
        m,
        ServerMessage::Spotlight {
            participant_id: None,
            ..
        }
    )));
}

/// Sites publishing one after another (a join burst) while the host answers at once: each
/// answer holds the next offer back by its gap, so the host renegotiates a few times for the
/// burst, not once per site, and the last offer carries every leg (issue 16).
#[test]
fn a_burst_of_publishers_is_offered_in_a_few_renegotiations() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let sites: Vec<_> = (0..12)
        .map(|i| rig.join(&format!("opd-{i}"), Role::Participant))
        .collect();
    for (i, &s) in sites.iter().enumerate() {
        rig.publish(s, AV);
        if i % 3 == 2 {
            rig.run_for(Duration::from_millis(20));
        }
    }
    rig.run_for(Duration::from_secs(2));
    let offers = &rig.sites[host].offers;
    assert!(
        offers.len() <= 4,
        "{} offers for 12 publishers: not coalesced",
        offers.len()
    );
    assert_eq!(
        offers.last().map(Vec::len),
        Some(24),
        "every leg in the last offer"
    );
}

#[test]
fn tracks_published_while_an_offer_is_outstanding_wait_for_its_answer() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let a = rig.join("dishub", Role::Participant);
    let b = rig.join("bapeda", Role::Participant);
    rig.sites[host].auto_answer = false;
    // Three tracks in one offer: one subscriber offer carrying all three.
    rig.publish(
        a,
        PublishSpec {
            audio: true,
            video: true,
            simulcast: true,
        },
    );
    assert_eq!(
        rig.sites[host].offers.len(),
        1,
        "one offer for the three tracks"
    );
    assert_eq!(rig.sites[host].offers[0].len(), 3);
    // Another site publishes while that offer is unanswered: no second offer yet.
    rig.publish(b, AV);
    assert_eq!(
        rig.sites[host].offers.len(),
        1,
        "one offer outstanding at a time"
    );
    rig.sites[host].auto_answer = true;
    rig.answer_held(host);
    assert_eq!(
        rig.sites[host].offers.len(),
        1,
        "the next offer waits its gap after the answer (3 legs × 8 ms)"
    );
    rig.run_for(Duration::from_millis(150));
    assert_eq!(
        rig.sites[host].offers.len(),
        2,
        "the change is offered after the answer and its gap"
    );
    assert_eq!(
        rig.sites[host].offers[1].len(),
        5,
        "the next offer lists every leg"
    );
    // And nothing more once it is answered.
    rig.run_for(Duration::from_secs(1));
    assert_eq!(rig.sites[host].offers.len(), 2);
}

#[test]
fn a_hidden_video_is_paused_and_resumes_at_a_keyframe_without_a_sequence_gap() {
    let (mut rig, host, site) = host_and_site();
    let (_, vmid) = mids(&rig, host, site);
    let track = rig.published(site, TrackKind::Video)[0].clone();
    media(&mut rig, site, 10);
    let hide = |visible| ClientMessage::TrackSettings {
        track_id: track.clone(),
        visible,
        width: 320,
        height: 180,
    };
    rig.send(host, hide(false));
    assert!(
        rig.sites[site].got(|m| matches!(m, ServerMessage::PublisherPause { paused: true, .. })),
        "nobody shows it: the publisher pauses"
    );
    let n = rig.sites[host].received_from(&vmid);
    // Deltas only while hidden: nothing arrives.
    rig.run_while_sending(
        Duration::from_millis(400),
        |r, _| r.video(site, false, None),
        |_| false,
    );
    assert_eq!(rig.sites[host].received_from(&vmid), n);
    rig.send(host, hide(true));
    assert!(
        rig.sites[site].got(|m| matches!(m, ServerMessage::PublisherPause { paused: false, .. }))
    );
    let plis = rig.sites[site]
        .publisher
        .as_ref()
        .unwrap()
        .plis_received()
        .len();
    // Deltas before the keyframe are held back; the keyframe restarts the leg.
    rig.video(site, false, None);
    rig.video(site, false, None);
    assert_eq!(
        rig.sites[host].received_from(&vmid),
        n,
        "no delta before the keyframe"
    );
    rig.run_for(Duration::from_millis(600));
    assert!(
        rig.sites[site]
            .publisher
            .as_ref()
            .unwrap()
            .plis_received()
            .len()
            > plis,
        "a keyframe was asked for"
    );
    rig.video(site, true, None);
    rig.video(site, false, None);
    let sub = rig.sites[host].subscriber.as_ref().unwrap();
    let stream = sub.received_on_mid(&vmid).unwrap().1;
    assert_eq!(stream.packets.len(), n + 2);
    assert!(stream.packets[n].keyframe, "resumed at a keyframe");
    let seqs = stream.sequence_numbers();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "no gap: {seqs:?}"
    );
}

/// Host + a site that publishes one VP8 simulcast track (q/h/f).
fn simulcast_publisher() -> (Rig, usize, usize) {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let site = rig.join("dishub", Role::Participant);
    rig.publish(
        site,
        PublishSpec {
            audio: false,
            video: false,
            simulcast: true,
        },
    );
    (rig, host, site)
}

#[test]
fn a_simulcast_leg_switches_layers_only_at_a_keyframe() {
    let (mut rig, host, site) = simulcast_publisher();
    let send_all = |r: &mut Rig, t: u64| {
        for l in 0..3 {
            r.video(site, t.is_multiple_of(25), Some(l));
        }
    };
    assert!(
        rig.run_while_sending(Duration::from_secs(3), send_all, |r| r.connected(host)
            && r.sites[host].subscriber.is_some())
    );
    let track = rig.published(site, TrackKind::Video)[0].clone();
    let vmid = rig.mid_of(host, &track).unwrap();
    // A small wall tile: layer 0 only.
    rig.send(
        host,
        ClientMessage::TrackSettings {
            track_id: track.clone(),
            visible: true,
            width: 320,
            height: 180,
        },
    );
    rig.run_while_sending(Duration::from_secs(2), send_all, |_| false);
    let layers = |r: &Rig| -> Vec<usize> {
        let sub = r.sites[host].subscriber.as_ref().unwrap();
        sub.received_on_mid(&vmid)
            .unwrap()
            .1
            .packets
            .iter()
            .filter_map(|p| layer_of(&p.payload))
            .collect()
    };
    let before = layers(&rig);
    assert!(before.len() > 20);
    assert_eq!(
        *before.last().unwrap(),
        0,
        "a small tile gets the lowest layer"
    );
    // The tile grows: layer 2 from its next keyframe on, never a delta of it first.
    rig.send(
        host,
        ClientMessage::TrackSettings {
            track_id: track.clone(),
            visible: true,
            width: 1280,
            height: 720,
        },
    );
    let n = before.len();
    rig.run_while_sending(Duration::from_secs(2), send_all, |_| false);
    let sub = rig.sites[host].subscriber.as_ref().unwrap();
    let pkts = &sub.received_on_mid(&vmid).unwrap().1.packets;
    let first_top = pkts[n..]
        .iter()
        .position(|p| layer_of(&p.payload) == Some(2))
        .expect("switched up");
    assert!(
        pkts[n + first_top].keyframe,
        "the switch happens at a keyframe of the new layer"
    );
    assert!(
        pkts[n + first_top..]
            .iter()
            .all(|p| layer_of(&p.payload) == Some(2)),
        "no flapping back"
    );
    let seqs: Vec<u16> = pkts.iter().map(|p| p.sequence_number).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "one continuous stream"
    );
}

#[test]
fn a_bandwidth_drop_moves_a_simulcast_leg_down() {
    let (mut rig, host, site) = simulcast_publisher();
    let send_all = |r: &mut Rig, t: u64| {
        for l in 0..3 {
            for _ in 0..(l + 1) {
                r.video(site, t.is_multiple_of(25), Some(l));
            }
        }
    };
    assert!(
        rig.run_while_sending(Duration::from_secs(3), send_all, |r| r.connected(host)
            && r.sites[host].subscriber.is_some())
    );
    let track = rig.published(site, TrackKind::Video)[0].clone();
    let vmid = rig.mid_of(host, &track).unwrap();
    rig.send(
        host,
        ClientMessage::TrackSettings {
            track_id: track,
            visible: true,
            width: 1280,
            height: 720,
        },
    );
    let last_layer = |r: &Rig| {
        let sub = r.sites[host].subscriber.as_ref().unwrap();
        sub.received_on_mid(&vmid)
            .and_then(|(_, s)| s.packets.last().and_then(|p| layer_of(&p.payload)))
    };
    assert!(
        rig.run_while_sending(Duration::from_secs(4), send_all, |r| last_layer(r)
            == Some(2)),
        "the top layer first"
    );
    // The host's downlink loses every 3rd datagram: its estimate drops, the leg goes down.
    let sub_addr = rig.sites[host].subscriber.as_ref().unwrap().addr();
    rig.lossy = Some((sub_addr, 3));
    let down = rig.run_while_sending(Duration::from_secs(5), send_all, |r| {
        last_layer(r).is_some_and(|l| l < 2)
    });
    assert!(down, "a lower layer under loss, got {:?}", last_layer(&rig));
}

#[test]
fn the_track_limit_counts_what_the_sdp_parser_understood() {
    let mut cfg = super::rig::config();
    cfg.max_tracks_per_participant = 2;
    let mut rig = Rig::with(cfg);
    let host = rig.join("command-room", Role::Host);
    let site = rig.join("dishub", Role::Participant);
    let now = rig.clock.now();
    let mut pc = crate::testkit::ClientPeer::publisher(
        now,
        "10.9.9.9:5000".parse().unwrap(),
        PublishSpec {
            audio: true,
            video: true,
            simulcast: true,
        },
    )
    .unwrap();
    let offer = pc.offer(now).unwrap();
    // The text check of old counted "m=audio"/"m=video": spacing slipped past it.
    let spaced = offer
        .replace("m=audio", "m= audio")
        .replace("m=video", "m= video");
    for sdp in [offer, spaced] {
        rig.sites[site].take();
        rig.send(
            site,
            ClientMessage::Offer {
                pc: rakor_proto::PeerConnectionKind::Publisher,
                sdp,
                tracks: Vec::new(),
            },
        );
        assert!(
            rig.sites[site].got(|m| matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::LimitExceeded | ErrorCode::InvalidSdp,
                    ..
                }
            )),
            "refused: {:?}",
            rig.sites[site].log
        );
    }
    assert!(rig.published(site, TrackKind::Audio).is_empty());
    assert!(!rig.sites[host].got(|m| matches!(m, ServerMessage::TrackPublished { .. })));
}

// ---- The presentation (screen sharing) ----

const SCREEN: PublishSpec = PublishSpec {
    audio: false,
    video: true,
    simulcast: false,
};

fn presentation_of(m: &ServerMessage) -> Option<Option<(ParticipantId, TrackId)>> {
    match m {
        ServerMessage::Presentation { presentation, .. } => Some(
            presentation
                .as_ref()
                .map(|p| (p.participant_id.clone(), p.track_id.clone())),
        ),
        _ => None,
    }
}

/// The last `presentation` event site `i` got (`None`: none yet).
fn last_presentation(rig: &Rig, i: usize) -> Option<Option<(ParticipantId, TrackId)>> {
    rig.sites[i].log.iter().rev().find_map(presentation_of)
}

fn screen_track_of(rig: &Rig, by: usize) -> Option<TrackId> {
    let id = &rig.sites[by].id;
    rig.sites[by].log.iter().rev().find_map(|m| match m {
        ServerMessage::TrackPublished {
            participant_id,
            track,
        } if participant_id == id && track.source() == TrackSource::Screen => {
            Some(track.id.clone())
        }
        _ => None,
    })
}

fn errors(rig: &Rig, i: usize) -> Vec<ErrorCode> {
    rig.sites[i]
        .log
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

/// A site's screen share is published with source `screen` and becomes everyone's
/// presentation (and a late joiner's, in `joined`); a second site's screen share is refused
/// with `presentation_active`, to it only, and its screen is neither announced nor forwarded.
#[test]
fn one_presentation_at_a_time_and_a_second_presenter_is_refused() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let a = rig.join("bappeda", Role::Participant);
    let b = rig.join("dinkes", Role::Participant);
    rig.publish_as(a, SCREEN, true);
    let track = screen_track_of(&rig, a).expect("the screen track is published");
    let want = Some(Some((rig.sites[a].id.clone(), track.clone())));
    for i in [host, a, b] {
        assert_eq!(last_presentation(&rig, i), want, "site {i} is told");
        assert!(rig.sites[i].got(|m| matches!(m,
            ServerMessage::TrackPublished { track: t, .. }
                if t.id == track && t.source == Some(TrackSource::Screen))));
    }
    let ev = rig.room_events();
    assert!(ev.iter().any(|e| matches!(e,
        RoomEvent::PresentationStarted { participant, track: t, identity, .. }
            if *participant == rig.sites[a].id && *t == track && identity == "bappeda")));
    // The presentation reaches the host's subscriber connection.
    let ok = rig.run_while_sending(
        Duration::from_secs(3),
        |r, t| r.video(a, t.is_multiple_of(25), None),
        |r| {
            r.mid_of(host, &track)
                .is_some_and(|m| r.sites[host].received_from(&m) > 10)
        },
    );
    assert!(ok, "the host receives the presentation");

    // A second presenter: refused, to it only.
    for s in &mut rig.sites {
        s.take();
    }
    rig.publish_as(b, SCREEN, true);
    assert_eq!(errors(&rig, b), vec![ErrorCode::PresentationActive]);
    assert!(rig.sites[b].got(|m| matches!(m,
        ServerMessage::Error { request_type: Some(t), .. } if t == "offer")));
    for i in [host, a] {
        assert!(errors(&rig, i).is_empty(), "nobody else gets an error");
        assert!(
            !rig.sites[i].got(|m| matches!(m, ServerMessage::TrackPublished { .. })),
            "the refused screen is not announced"
        );
        assert_eq!(last_presentation(&rig, i), None, "the presentation stays");
    }
    assert!(rig.room_events().is_empty());
    // Its publisher connection is up (answered), but nothing of its screen is forwarded.
    rig.run_while_sending(
        Duration::from_secs(2),
        |r, t| {
            r.video(a, t.is_multiple_of(25), None);
            r.video(b, t.is_multiple_of(25), None);
        },
        |_| false,
    );
    assert!(rig.connected(b));
    let legs_from_b = rig.sites[host]
        .log
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Offer { tracks, .. } => Some(tracks.clone()),
            _ => None,
        })
        .flatten()
        .filter(|t| t.participant_id == rig.sites[b].id)
        .count();
    assert_eq!(legs_from_b, 0, "no leg for the refused screen");
    // A late joiner learns the presentation in `joined`.
    let late = rig.join("diskominfo", Role::Participant);
    assert!(rig.sites[late].got(|m| matches!(m,
        ServerMessage::Joined { presentation: Some(p), .. }
            if p.track_id == track)));
}

/// The host's screen share takes over: the previous presenter is told its presentation was
/// stopped (`taken_over`, by the host), its screen track is unpublished, and everyone's
/// presentation is the host's; the record gets the stop and the start.
#[test]
fn the_host_takes_over_the_presentation() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let a = rig.join("bappeda", Role::Participant);
    let b = rig.join("dinkes", Role::Participant);
    rig.publish_as(a, SCREEN, true);
    let a_track = screen_track_of(&rig, a).unwrap();
    rig.room_events();
    for s in &mut rig.sites {
        s.take();
    }
    rig.publish_as(host, SCREEN, true);
    let h_track = screen_track_of(&rig, host).expect("the host's screen is published");
    let host_id = rig.sites[host].id.clone();
    assert!(rig.sites[a].got(|m| matches!(m,
        ServerMessage::PresentationStopped { track_id, reason: PresentationEnd::TakenOver, by: Some(by) }
            if *track_id == a_track && *by == host_id)));
    for i in [host, a, b] {
        assert!(errors(&rig, i).is_empty());
        assert!(rig.sites[i].got(|m| matches!(m,
            ServerMessage::TrackUnpublished { track_id, .. } if *track_id == a_track)));
        assert_eq!(
            last_presentation(&rig, i),
            Some(Some((host_id.clone(), h_track.clone())))
        );
        // No flash of "no presentation" in between.
        assert!(!rig.sites[i]
            .log
            .iter()
            .any(|m| presentation_of(m) == Some(None)));
    }
    let ev = rig.room_events();
    assert!(
        matches!(&ev[..], [
        RoomEvent::PresentationStopped { participant, reason: PresentationEnd::TakenOver, by: Some(by), .. },
        RoomEvent::PresentationStarted { participant: started, .. },
    ] if *participant == rig.sites[a].id && *by == host_id && *started == host_id),
        "{ev:?}"
    );
}

/// A participant cannot stop another's presentation (`forbidden`, to it only); the host can
/// (the presenter gets `presentation_stopped`, everyone `presentation: null` by the host, and
/// its screen is no longer forwarded); so can the operator, through the moderation API.
#[test]
fn the_host_stops_a_presentation_and_a_participant_cannot() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let a = rig.join("bappeda", Role::Participant);
    let b = rig.join("dinkes", Role::Participant);
    rig.publish_as(a, SCREEN, true);
    let track = screen_track_of(&rig, a).unwrap();
    let a_id = rig.sites[a].id.clone();
    assert!(rig.run_while_sending(
        Duration::from_secs(3),
        |r, t| r.video(a, t.is_multiple_of(25), None),
        |r| r
            .mid_of(host, &track)
            .is_some_and(|m| r.sites[host].received_from(&m) > 10),
    ));
    let mid = rig.mid_of(host, &track).unwrap();
    for s in &mut rig.sites {
        s.take();
    }
    rig.send(
        b,
        ClientMessage::Moderate {
            action: ModerateAction::StopPresentation,
            participant_id: Some(a_id.clone()),
        },
    );
    assert_eq!(errors(&rig, b), vec![ErrorCode::Forbidden]);
    for i in [host, a] {
        assert!(rig.sites[i].log.is_empty(), "nobody else hears of it");
    }
    // The host names someone who does not present: refused.
    rig.send(
        host,
        ClientMessage::Moderate {
            action: ModerateAction::StopPresentation,
            participant_id: Some(rig.sites[b].id.clone()),
        },
    );
    assert_eq!(errors(&rig, host), vec![ErrorCode::InvalidState]);
    rig.sites[host].take();
    rig.room_events();
    rig.send(
        host,
        ClientMessage::Moderate {
            action: ModerateAction::StopPresentation,
            participant_id: None,
        },
    );
    let host_id = rig.sites[host].id.clone();
    assert!(rig.sites[a].got(|m| matches!(m,
        ServerMessage::PresentationStopped { track_id, reason: PresentationEnd::Stopped, by: Some(by) }
            if *track_id == track && *by == host_id)));
    for i in [host, a, b] {
        assert!(rig.sites[i].got(|m| matches!(m,
            ServerMessage::Presentation { presentation: None, by: Some(by) } if *by == host_id)));
    }
    assert!(
        matches!(&rig.room_events()[..], [RoomEvent::PresentationStopped {
        participant, reason: PresentationEnd::Stopped, by: Some(by), ..
    }] if *participant == a_id && *by == host_id)
    );
    // The presenter keeps sending (it has not reacted yet): nothing more is forwarded.
    let before = rig.sites[host].received_from(&mid);
    rig.run_while_sending(
        Duration::from_secs(1),
        |r, t| r.video(a, t.is_multiple_of(25), None),
        |_| false,
    );
    assert_eq!(rig.sites[host].received_from(&mid), before);
    // Nothing to stop now; then the operator stops another site's presentation.
    assert!(matches!(
        rig.moderate(Moderation::StopPresentation),
        Err(SfuError::NoPresentation(_))
    ));
    rig.publish_as(b, SCREEN, true);
    let b_track = screen_track_of(&rig, b).expect("b presents now");
    rig.room_events();
    rig.moderate(Moderation::StopPresentation).unwrap();
    assert!(rig.sites[b].got(|m| matches!(m,
        ServerMessage::PresentationStopped { track_id, reason: PresentationEnd::Stopped, by: None }
            if *track_id == b_track)));
    assert!(matches!(
        &rig.room_events()[..],
        [RoomEvent::PresentationStopped {
            reason: PresentationEnd::Stopped,
            by: None,
            ..
        }]
    ));
}

/// The presenter unpublishing (or leaving) ends the presentation for everyone.
#[test]
fn the_presentation_ends_when_the_presenter_leaves() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let a = rig.join("bappeda", Role::Participant);
    rig.publish_as(a, SCREEN, true);
    assert!(screen_track_of(&rig, a).is_some());
    rig.room_events();
    rig.send(a, ClientMessage::Leave {});
    assert_eq!(last_presentation(&rig, host), Some(None));
    assert!(matches!(
        &rig.room_events()[..],
        [
            RoomEvent::PresentationStopped {
                reason: PresentationEnd::Unpublished,
                by: None,
                ..
            },
            RoomEvent::Left { .. },
        ]
    ));
    // Someone else may present now.
    let b = rig.join("dinkes", Role::Participant);
    rig.publish_as(b, SCREEN, true);
    assert!(screen_track_of(&rig, b).is_some());
    assert!(errors(&rig, b).is_empty());
}

/// A screen track counts against the track limit; a declaration that does not fit the offer
/// (an unknown mid, `screen` on an audio section) is a bad request; both to that client only.
#[test]
fn a_screen_track_over_the_track_limit_and_bad_declarations_are_refused() {
    let mut cfg = super::rig::config();
    cfg.max_tracks_per_participant = 2;
    let mut rig = Rig::with(cfg);
    let host = rig.join("command-room", Role::Host);
    let site = rig.join("dishub", Role::Participant);
    rig.publish_as(
        site,
        PublishSpec {
            audio: true,
            video: true,
            simulcast: true,
        },
        true,
    );
    assert_eq!(errors(&rig, site), vec![ErrorCode::LimitExceeded]);
    assert!(screen_track_of(&rig, site).is_none());
    assert_eq!(last_presentation(&rig, host), None);
    let now = rig.clock.now();
    let mut pc =
        crate::testkit::ClientPeer::publisher(now, "10.9.9.9:5000".parse().unwrap(), AV).unwrap();
    let sdp = pc.offer(now).unwrap();
    for (mid, source) in [("7", TrackSource::Screen), ("0", TrackSource::Screen)] {
        rig.sites[site].take();
        rig.send(
            site,
            ClientMessage::Offer {
                pc: rakor_proto::PeerConnectionKind::Publisher,
                sdp: sdp.clone(),
                tracks: vec![TrackDeclaration {
                    mid: mid.into(),
                    source,
                }],
            },
        );
        assert_eq!(errors(&rig, site), vec![ErrorCode::BadRequest], "mid {mid}");
    }
    assert!(errors(&rig, host).is_empty());
    assert!(!rig.sites[host].got(|m| matches!(m, ServerMessage::TrackPublished { .. })));
}

/// Under a constrained estimate the presentation is forwarded at its top simulcast layer,
/// though its tile is small, while the cameras (in large tiles) are held at their lowest.
#[test]
fn the_presentation_gets_its_top_layer_while_cameras_stay_at_the_bottom() {
    let mut rig = Rig::new();
    let host = rig.join("command-room", Role::Host);
    let presenter = rig.join("bappeda", Role::Participant);
    let cams = [
        rig.join("dinkes", Role::Participant),
        rig.join("dishub", Role::Participant),
    ];
    let simulcast = PublishSpec {
        audio: false,
        video: false,
        simulcast: true,
    };
    rig.publish_as(presenter, simulcast, true);
    for c in cams {
        rig.publish(c, simulcast);
    }
    // Each layer costs more than the one below (more packets per frame).
    let send_all = move |r: &mut Rig, t: u64| {
        for s in std::iter::once(presenter).chain(cams) {
            for l in 0..3 {
                for _ in 0..(l + 1) {
                    r.video(s, t.is_multiple_of(25), Some(l));
                }
            }
        }
    };
    assert!(
        rig.run_while_sending(Duration::from_secs(3), send_all, |r| {
            r.connected(host) && r.sites[host].subscriber.is_some()
        })
    );
    let slides = screen_track_of(&rig, presenter).unwrap();
    let cam_tracks: Vec<TrackId> = cams
        .iter()
        .map(|&c| rig.published(c, TrackKind::Video)[0].clone())
        .collect();
    // The slides in a small tile, the cameras in large ones.
    for (t, (w, h)) in std::iter::once((slides.clone(), (320, 180)))
        .chain(cam_tracks.iter().map(|t| (t.clone(), (1280, 720))))
    {
        rig.send(
            host,
            ClientMessage::TrackSettings {
                track_id: t,
                visible: true,
                width: w,
                height: h,
            },
        );
    }
    let mids: Vec<String> = std::iter::once(&slides)
        .chain(&cam_tracks)
        .map(|t| rig.mid_of(host, t).unwrap())
        .collect();
    let last_layers = |r: &Rig| -> Vec<Option<usize>> {
        let sub = r.sites[host].subscriber.as_ref().unwrap();
        mids.iter()
            .map(|m| {
                sub.received_on_mid(m)
                    .and_then(|(_, s)| s.packets.last().and_then(|p| layer_of(&p.payload)))
            })
            .collect()
    };
    // Unconstrained: everyone at the top (the slides despite their small tile).
    assert!(
        rig.run_while_sending(Duration::from_secs(4), send_all, |r| last_layers(r)
            == vec![Some(2); 3]),
        "all at the top first: {:?}",
        last_layers(&rig)
    );
    // Let the per-layer rates be measured (1 s windows).
    rig.run_while_sending(Duration::from_secs(3), send_all, |_| false);
    assert_eq!(last_layers(&rig), vec![Some(2); 3]);
    // The link shrinks: room for the slides' top layer and the cameras' lowest ones only.
    let (slides_rates, cam_rates) = {
        let core = &rig.core;
        let rate = |id: &TrackId| -> Vec<f64> {
            core.tracks
                .iter()
                .find(|(_, t)| t.id == *id)
                .map(|(_, t)| t.layers.iter().map(|l| l.rate.bps()).collect())
                .unwrap()
        };
        (rate(&slides), rate(&cam_tracks[0]))
    };
    let need = slides_rates[2] + 2.0 * cam_rates[0];
    let camera_upgrade = cam_rates[1] - cam_rates[0];
    assert!(camera_upgrade > 0.0, "{cam_rates:?}");
    // Budget (0.9 of the estimate): the need plus half a camera upgrade.
    rig.cap_estimate(host, Some((need + camera_upgrade * 0.5) / 0.9));
    let ok = rig.run_while_sending(Duration::from_secs(4), send_all, |r| {
        last_layers(r) == vec![Some(2), Some(0), Some(0)]
    });
    assert!(
        ok,
        "slides at the top, cameras at the bottom: {:?} (slides {slides_rates:?}, cameras {cam_rates:?})",
        last_layers(&rig)
    );
    // And it holds.
    rig.run_while_sending(Duration::from_secs(3), send_all, |_| false);
    assert_eq!(last_layers(&rig), vec![Some(2), Some(0), Some(0)]);
}

/// A and B publish audio and video; S joins with video on demand; all connected.
fn on_demand_room(cfg: crate::SfuConfig) -> (Rig, usize, usize, usize) {
    let mut rig = Rig::with(cfg);
    let a = rig.join("camat-kota", Role::Participant);
    let b = rig.join("dinkes", Role::Participant);
    let s = rig.join_on_demand("dishub", Role::Participant);
    rig.publish(a, AV);
    rig.publish(b, AV);
    let ok = rig.run_while_sending(
        Duration::from_secs(3),
        |r, _| {
            for i in [a, b] {
                r.audio(i, 30);
                r.video(i, true, None);
            }
        },
        |r| r.connected(a) && r.connected(b) && r.connected(s) && r.sites[s].subscriber.is_some(),
    );
    assert!(ok, "everyone connects in simulated time");
    (rig, a, b, s)
}

fn show(track: &TrackId, visible: bool) -> ClientMessage {
    ClientMessage::TrackSettings {
        track_id: track.clone(),
        visible,
        width: 320,
        height: 180,
    }
}

#[test]
fn video_on_demand_adds_a_leg_when_asked_and_recycles_its_mid_after_the_grace() {
    let (mut rig, a, b, s) = on_demand_room(super::rig::config());
    let va = rig.published(a, TrackKind::Video)[0].clone();
    let vb = rig.published(b, TrackKind::Video)[0].clone();
    let aa = rig.published(a, TrackKind::Audio)[0].clone();
    assert!(rig.mid_of(s, &aa).is_some(), "audio is subscribed as usual");
    assert!(rig.mid_of(s, &va).is_none() && rig.mid_of(s, &vb).is_none());
    assert!(rig.sites[s]
        .offers
        .iter()
        .flatten()
        .all(|t| *t != va && *t != vb));
    // B (eager) receives A's video; A's video has a leg, so it is not paused.
    assert!(rig.mid_of(b, &va).is_some());

    rig.send(s, show(&va, true));
    let mid = rig
        .mid_of(s, &va)
        .expect("A's video is offered once asked for");
    media(&mut rig, a, 10);
    assert!(rig.sites[s].received_from(&mid) > 0, "A's video arrives");

    // Hidden within the grace and shown again: same leg, no new offer.
    let offers = rig.sites[s].offers.len();
    rig.send(s, show(&va, false));
    rig.run_for(Duration::from_secs(2));
    rig.send(s, show(&va, true));
    rig.run_for(Duration::from_secs(4));
    assert_eq!(
        rig.sites[s].offers.len(),
        offers,
        "no renegotiation within the grace"
    );

    // Hidden past the grace: removed (the next offer does not list it).
    rig.send(s, show(&va, false));
    rig.run_for(Duration::from_secs(6));
    assert_eq!(rig.sites[s].offers.len(), offers + 1);
    assert!(rig.sites[s].offers.last().unwrap().iter().all(|t| *t != va));

    // B's video takes the freed mid.
    rig.send(s, show(&vb, true));
    assert_eq!(
        rig.mid_of(s, &vb),
        Some(mid.clone()),
        "the m-line is reused"
    );
    let on_mid = |r: &Rig| r.sites[s].subscriber.as_ref().unwrap().packets_on_mid(&mid);
    let before = on_mid(&rig);
    media(&mut rig, b, 10);
    assert!(on_mid(&rig) > before, "B's video arrives on it");
}

#[test]
fn video_on_demand_refuses_bad_requests_to_that_client_only() {
    let cfg = crate::SfuConfig {
        max_videos_on_demand: 1,
        ..super::rig::config()
    };
    let (mut rig, a, b, s) = on_demand_room(cfg);
    let va = rig.published(a, TrackKind::Video)[0].clone();
    let vb = rig.published(b, TrackKind::Video)[0].clone();
    let aa = rig.published(a, TrackKind::Audio)[0].clone();
    for i in [a, b, s] {
        rig.sites[i].take();
    }
    for (track, code) in [
        (TrackId("TR_forged".into()), ErrorCode::UnknownTrack),
        (aa, ErrorCode::BadRequest),
    ] {
        rig.send(s, show(&track, true));
        let log = rig.sites[s].take();
        assert!(
            log.iter()
                .any(|m| matches!(m, ServerMessage::Error { code: c, .. } if *c == code)),
            "{track}: {log:?}"
        );
        assert!(!log.iter().any(|m| matches!(m, ServerMessage::Offer { .. })));
    }
    rig.send(s, show(&va, true));
    rig.send(s, show(&vb, true));
    assert!(rig.sites[s].got(|m| matches!(
        m,
        ServerMessage::Error {
            code: ErrorCode::LimitExceeded,
            ..
        }
    )));
    assert!(rig.mid_of(s, &va).is_some() && rig.mid_of(s, &vb).is_none());
    // Hiding a video never asked for is fine (no error).
    rig.sites[s].take();
    rig.send(s, show(&vb, false));
    assert!(!rig.sites[s].got(|m| matches!(m, ServerMessage::Error { .. })));
    for i in [a, b] {
        assert!(!rig.sites[i].got(|m| matches!(m, ServerMessage::Error { .. })));
    }
}

#[test]
fn video_on_demand_pauses_a_video_nobody_asked_for() {
    let mut rig = Rig::new();
    let a = rig.join("camat-kota", Role::Participant);
    let s = rig.join_on_demand("dishub", Role::Participant);
    rig.publish(a, AV);
    rig.run_while_sending(
        Duration::from_secs(3),
        |r, _| {
            r.audio(a, 30);
            r.video(a, true, None);
        },
        |r| r.connected(a) && r.connected(s),
    );
    let va = rig.published(a, TrackKind::Video)[0].clone();
    assert!(rig.sites[a].got(
        |m| matches!(m, ServerMessage::PublisherPause { track_id, paused: true } if *track_id == va)
    ));
    rig.send(s, show(&va, true));
    assert!(rig.sites[a].got(
        |m| matches!(m, ServerMessage::PublisherPause { track_id, paused: false } if *track_id == va)
    ));
}
