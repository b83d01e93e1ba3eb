//! Screen sharing through the real binary: a `rakor bot --publish audio,video,screen` presents
//! and everyone receives its slides with source `screen` (the bot reports name each received
//! track's source); one presentation at a time (a second presenter is refused), the host takes
//! over and stops another's presentation, a participant's stop is refused, and a screen track
//! over the track limit is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientError, ClientOptions, Report};
use rakor_e2e::Server;
use rakor_proto::{
    ClientMessage, ErrorCode, ModerateAction, ParticipantId, PresentationEnd, ServerMessage,
    TrackSource,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn join(server: &Server, identity: &str, role: &str) -> Client {
    let token = server.token("rakor", identity, role).unwrap();
    let mut o = ClientOptions::new(server.ws_url(), token).receive_only();
    o.join_timeout = Duration::from_secs(20);
    Client::connect(o)
        .await
        .unwrap_or_else(|e| panic!("{identity} could not join: {e}"))
}

/// Packets received from `from`'s screen track, and the layer of the last one.
fn screen_from(r: &Report, from: &ParticipantId) -> (u64, Option<u8>) {
    r.received_from(from)
        .find(|t| t.source == Some(TrackSource::Screen))
        .map_or((0, None), |t| (t.packets, t.last_layer))
}

async fn presentation_is(c: &mut Client, who: Option<&ParticipantId>) {
    let want = who.cloned();
    c.wait_for(
        |m| {
            matches!(m, ServerMessage::Presentation { presentation, .. }
            if presentation.as_ref().map(|p| &p.participant_id) == want.as_ref())
        },
        WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("presentation {want:?}: {e}"));
}

async fn error_is(c: &mut Client, code: ErrorCode) {
    c.wait_for(
        |m| matches!(m, ServerMessage::Error { code: got, .. } if *got == code),
        WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("error {code}: {e}"));
}

fn stop(participant: Option<ParticipantId>) -> ClientMessage {
    ClientMessage::Moderate {
        action: ModerateAction::StopPresentation,
        participant_id: participant,
    }
}

/// A bot presents (with its camera and microphone); a second bot and a host client receive the
/// slides — 1280x720 keyframes, exact payloads — as a track with source `screen`; the second
/// bot's JSON report names the source of every track it received.
#[test]
fn a_bot_presents_and_everyone_receives_it_with_source_screen() {
    let server = Server::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut host = rt.block_on(join(&server, "command-room", "host"));
    let bot = |id: &str, publish: &str| {
        let token = server.token("rakor", id, "participant").unwrap();
        std::process::Command::new(rakor_e2e::rakor_bin())
            .args([
                "bot",
                "--url",
                &server.ws_url(),
                "--token",
                &token,
                "--publish",
                publish,
                "--duration",
                "10s",
                "--report",
                "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let presenter = bot("bappeda", "audio,video,screen");
    let viewer = bot("dinkes", "audio,video");
    let pid = rt.block_on(async {
        let m = host
            .wait_for(
                |m| {
                    matches!(
                        m,
                        ServerMessage::Presentation {
                            presentation: Some(_),
                            ..
                        }
                    )
                },
                WAIT,
            )
            .await
            .unwrap();
        let ServerMessage::Presentation {
            presentation: Some(p),
            ..
        } = m
        else {
            unreachable!()
        };
        p.participant_id
    });
    rt.block_on(host.wait_media(|r| screen_from(r, &pid).0 >= 40, WAIT))
        .unwrap();
    let report = |child: std::process::Child| -> Report {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "rakor bot failed: {:?}", out.status);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let p = report(presenter);
    let v = report(viewer);
    assert_eq!(p.participant_id.as_ref(), Some(&pid));
    let sent = p
        .sent_source(TrackSource::Screen)
        .expect("the bot shared its screen");
    assert!(
        sent.packets > 0 && sent.track_id.is_some(),
        "{}",
        p.to_json()
    );
    assert!(p
        .sent_source(TrackSource::Camera)
        .is_some_and(|s| s.packets > 0));
    // The viewer bot's report: each of the presenter's tracks with its source.
    let mut sources: Vec<&str> = v
        .received_from(&pid)
        .filter(|t| t.packets > 0)
        .filter_map(|t| t.source.map(|s| s.as_str()))
        .collect();
    sources.sort_unstable();
    assert_eq!(
        sources,
        ["camera", "microphone", "screen"],
        "{}",
        v.to_json()
    );
    let slides = v.received_source(TrackSource::Screen).next().unwrap();
    assert!(
        slides.keyframes >= 2,
        "slides are keyframes: {}",
        v.to_json()
    );
    assert_eq!(slides.payload_mismatches, 0);
    assert_eq!(slides.last_layer, Some(2), "1280x720 slides");
    // Low frame rate: 2 fps over at most 10 s.
    assert!(slides.frames <= 25, "{} frames", slides.frames);
    let json: serde_json::Value = serde_json::from_str(&v.to_json()).unwrap();
    assert!(json["received"]
        .as_object()
        .unwrap()
        .values()
        .any(|t| t["source"] == "screen"));
    // The host saw it at the top layer too.
    assert_eq!(screen_from(&host.stats(), &pid).1, Some(2));
}

/// One presentation at a time: a second presenter is refused (`presentation_active`, its
/// screen taken off by the client); a participant's stop is refused (`forbidden`); the host
/// stops another's presentation (`presentation_stopped {stopped}`), and takes over the next
/// one (`presentation_stopped {taken_over}`), whose slides then reach everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_host_takeover_and_stop_and_a_participant_cannot_stop() {
    let server = Server::start().unwrap();
    let mut host = join(&server, "command-room", "host").await;
    let mut a = join(&server, "bappeda", "participant").await;
    let mut b = join(&server, "dinkes", "participant").await;
    let (h_id, a_id, b_id) = (
        host.participant_id().clone(),
        a.participant_id().clone(),
        b.participant_id().clone(),
    );
    a.publish_screen().await.unwrap();
    for c in [&mut host, &mut a, &mut b] {
        presentation_is(c, Some(&a_id)).await;
    }
    host.wait_media(|r| screen_from(r, &a_id).0 >= 10, WAIT)
        .await
        .unwrap();

    // B presents too: refused, to B only; its client takes the screen off again.
    b.publish_screen().await.unwrap();
    error_is(&mut b, ErrorCode::PresentationActive).await;
    // B tries to stop A's presentation: forbidden.
    b.send(&stop(Some(a_id.clone()))).await.unwrap();
    error_is(&mut b, ErrorCode::Forbidden).await;
    let before = screen_from(&host.stats(), &a_id).0;
    host.wait_media(|r| screen_from(r, &a_id).0 >= before + 5, WAIT)
        .await
        .expect("A still presents");
    assert_eq!(
        host.presentation().map(|p| p.participant_id),
        Some(a_id.clone())
    );

    // The host stops it.
    host.send(&stop(None)).await.unwrap();
    a.wait_for(
        |m| matches!(m, ServerMessage::PresentationStopped { reason: PresentationEnd::Stopped, by: Some(by), .. } if *by == h_id),
        WAIT,
    )
    .await
    .unwrap();
    for c in [&mut host, &mut b] {
        presentation_is(c, None).await;
    }

    // B presents now (its refused screen is gone, it shares again), then the host takes over.
    b.publish_screen().await.unwrap();
    presentation_is(&mut host, Some(&b_id)).await;
    host.publish_screen().await.unwrap();
    b.wait_for(
        |m| matches!(m, ServerMessage::PresentationStopped { reason: PresentationEnd::TakenOver, by: Some(by), .. } if *by == h_id),
        WAIT,
    )
    .await
    .unwrap();
    for c in [&mut a, &mut b] {
        presentation_is(c, Some(&h_id)).await;
        c.wait_media(|r| screen_from(r, &h_id).0 >= 10, WAIT)
            .await
            .unwrap();
    }
    // Nobody but the refused B got an error on the way.
    for c in [&mut host, &mut a] {
        let err = c
            .wait_for(
                |m| matches!(m, ServerMessage::Error { .. }),
                Duration::from_millis(300),
            )
            .await;
        assert!(matches!(err, Err(ClientError::Timeout(_))), "{err:?}");
    }
}

/// A screen track counts against `limits.max_tracks_per_participant`: over it, the offer is
/// refused (`limit_exceeded`), nothing is presented, and the others are undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_track_over_the_track_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rakor.toml");
    std::fs::write(&file, "[limits]\nmax_tracks_per_participant = 2\n").unwrap();
    let server = Server::start_with(&["--config", file.to_str().unwrap()]).unwrap();
    let mut host = join(&server, "command-room", "host").await;
    let token = server.token("rakor", "bappeda", "participant").unwrap();
    let mut a = Client::connect(ClientOptions::new(server.ws_url(), token))
        .await
        .unwrap();
    let a_id = a.participant_id().clone();
    a.wait_published(WAIT).await.unwrap();
    a.publish_screen().await.unwrap();
    error_is(&mut a, ErrorCode::LimitExceeded).await;
    assert_eq!(host.presentation(), None);
    // The host still gets A's camera and microphone.
    let before = host
        .stats()
        .received_from(&a_id)
        .map(|t| t.packets)
        .sum::<u64>();
    host.wait_media(
        |r| r.received_from(&a_id).map(|t| t.packets).sum::<u64>() >= before + 50,
        WAIT,
    )
    .await
    .unwrap();
    let p = host
        .wait_for(
            |m| matches!(m, ServerMessage::Presentation { .. }),
            Duration::from_millis(300),
        )
        .await;
    assert!(p.is_err(), "no presentation: {p:?}");
}

/// The operator stops a presentation through the HTTP API (`POST
/// /api/v1/rakor/{id}/presentation/stop`): the presenter gets `presentation_stopped` without
/// `by`; with nobody presenting the API answers 409 `no_presentation`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_stops_a_presentation_through_the_api() {
    use rakor_e2e::session::{add_rakor, add_site, token_of, Persistent};
    let p = Persistent::new().unwrap();
    let (server, api) = tokio::task::block_in_place(|| p.start_logged_in()).unwrap();
    let host_site = add_site(&api, "Command Room", "other").unwrap();
    let site = add_site(&api, "Bappeda", "opd").unwrap();
    let v = add_rakor(&api, "Rakor", host_site, &[site], 600, 60).unwrap();
    let id = v["id"].as_i64().unwrap();
    let links = api
        .get(&format!("/api/v1/rakor/{id}/invitations"))
        .unwrap()
        .json()
        .unwrap();
    let host_link = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["site_id"] == host_site)
        .unwrap()["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut o = ClientOptions::new(server.ws_url(), token_of(&host_link).unwrap()).receive_only();
    o.join_timeout = Duration::from_secs(20);
    let mut host = Client::connect(o).await.unwrap();
    let path = format!("/api/v1/rakor/{id}/presentation/stop");
    let none = tokio::task::block_in_place(|| api.post(&path, serde_json::json!({}))).unwrap();
    assert_eq!(
        (none.status, none.error_code()),
        (409, "no_presentation".to_owned())
    );
    host.publish_screen().await.unwrap();
    let me = host.participant_id().clone();
    presentation_is(&mut host, Some(&me)).await;
    tokio::task::block_in_place(|| api.expect("POST", &path, Some(serde_json::json!({})), 204))
        .unwrap();
    host.wait_for(
        |m| {
            matches!(
                m,
                ServerMessage::PresentationStopped {
                    reason: PresentationEnd::Stopped,
                    by: None,
                    ..
                }
            )
        },
        WAIT,
    )
    .await
    .unwrap();
    presentation_is(&mut host, None).await;
}

/// Packets received from `from`'s track of `source`.
fn packets_of(r: &Report, from: &ParticipantId, source: TrackSource) -> u64 {
    r.received_from(from)
        .filter(|t| t.source == Some(source))
        .map(|t| t.packets)
        .sum()
}

/// The presentation's sound (`screen_audio`) is forwarded with the presentation, outside the
/// loudest-speaker selection: with `media.loudest_speakers = 1` and two loud sites talking, a
/// presenter whose screen audio carries near-silence still reaches everyone, and `speakers`
/// never names it. A site that is not presenting gets `forbidden` for a screen audio track (to
/// it only; nothing is published). The host's stop takes the screen audio off with the slides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_audio_goes_with_the_presentation_outside_the_loudest_speakers() {
    let server = Server::start_with_env(&[], &[("RAKOR_MEDIA_LOUDEST_SPEAKERS", "1")]).unwrap();
    let mut host = join(&server, "command-room", "host").await;
    let talker = |id: &'static str, level: u8| {
        let token = server.token("rakor", id, "participant").unwrap();
        let mut o = ClientOptions::new(server.ws_url(), token)
            .publish(true, false)
            .audio_level(Some(level));
        o.join_timeout = Duration::from_secs(20);
        Client::connect(o)
    };
    let t1 = talker("dinkes", 20).await.unwrap();
    let t2 = talker("dishub", 30).await.unwrap();
    let token = server.token("rakor", "bappeda", "participant").unwrap();
    let mut o = ClientOptions::new(server.ws_url(), token)
        .publish(false, false)
        .screen(true)
        .screen_audio(true)
        .audio_level(Some(127));
    o.join_timeout = Duration::from_secs(20);
    let mut presenter = Client::connect(o).await.unwrap();
    let p_id = presenter.participant_id().clone();
    presentation_is(&mut host, Some(&p_id)).await;
    host.wait_media(
        |r| {
            packets_of(r, &p_id, TrackSource::ScreenAudio) >= 100
                && packets_of(r, &p_id, TrackSource::Screen) >= 5
        },
        WAIT,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "screen audio did not arrive: {e}\n{}",
            host.stats().to_json()
        )
    });
    // The loudest site is heard, the other is not: the selection works, and the screen audio
    // is not part of it.
    let (a1, a2) = (t1.participant_id().clone(), t2.participant_id().clone());
    let heard = |r: &Report, p: &ParticipantId| packets_of(r, p, TrackSource::Microphone);
    let r = host.stats();
    assert!(heard(&r, &a1) > 0, "{}", r.to_json());
    let before = (
        heard(&r, &a2),
        packets_of(&r, &p_id, TrackSource::ScreenAudio),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = host.stats();
    assert!(
        heard(&r, &a2) <= before.0 + 5,
        "the second talker is not forwarded with loudest_speakers = 1: {}",
        r.to_json()
    );
    assert!(
        packets_of(&r, &p_id, TrackSource::ScreenAudio) >= before.1 + 50,
        "screen audio keeps flowing: {}",
        r.to_json()
    );
    for m in host.drain_events() {
        if let ServerMessage::Speakers {
            speaking,
            forwarded,
        } = m
        {
            assert!(
                !speaking.contains(&p_id) && !forwarded.contains(&p_id),
                "speakers named the presenter: {speaking:?} {forwarded:?}"
            );
        }
    }
    // The presenter's report names what it sent.
    let sent = presenter.stats();
    assert!(sent
        .sent_source(TrackSource::ScreenAudio)
        .is_some_and(|s| s.packets > 0 && s.track_id.is_some()));

    // A site that does not present: its screen audio is refused, to it only.
    t2.publish_sources(&[TrackSource::ScreenAudio])
        .await
        .unwrap();
    let mut t2 = t2;
    error_is(&mut t2, ErrorCode::Forbidden).await;
    let a2_id = t2.participant_id().clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !host.drain_events().iter().any(|m| matches!(m,
            ServerMessage::TrackPublished { participant_id, track }
                if *participant_id == a2_id && track.source == Some(TrackSource::ScreenAudio))),
        "a refused screen audio was published"
    );

    // The host stops the presentation: slides and sound are both unpublished.
    host.send(&stop(None)).await.unwrap();
    presenter
        .wait_for(
            |m| matches!(m, ServerMessage::PresentationStopped { .. }),
            WAIT,
        )
        .await
        .unwrap();
    let mut gone = Vec::new();
    while gone.len() < 2 {
        let m = host
            .wait_for(
                |m| matches!(m, ServerMessage::TrackUnpublished { participant_id, .. } if *participant_id == p_id),
                WAIT,
            )
            .await
            .unwrap();
        gone.push(m);
    }
    let after = packets_of(&host.stats(), &p_id, TrackSource::ScreenAudio);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        packets_of(&host.stats(), &p_id, TrackSource::ScreenAudio) <= after + 5,
        "screen audio stopped with the presentation"
    );
    drop(t1);
}

/// `rakor bot --publish screen,screen_audio` presents with sound: the host receives the slides
/// and the screen audio, each named by its source, and the bot's JSON report lists both.
#[test]
fn a_bot_presents_with_screen_audio() {
    let server = Server::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut host = rt.block_on(join(&server, "command-room", "host"));
    let token = server.token("rakor", "bappeda", "participant").unwrap();
    let bot = std::process::Command::new(rakor_e2e::rakor_bin())
        .args(["bot", "--url", &server.ws_url(), "--token", &token])
        .args(["--publish", "screen,screen_audio", "--duration", "6s"])
        .args(["--report", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = rt.block_on(async {
        let m = host
            .wait_for(
                |m| {
                    matches!(
                        m,
                        ServerMessage::Presentation {
                            presentation: Some(_),
                            ..
                        }
                    )
                },
                WAIT,
            )
            .await
            .unwrap();
        let ServerMessage::Presentation {
            presentation: Some(p),
            ..
        } = m
        else {
            unreachable!()
        };
        p.participant_id
    });
    rt.block_on(host.wait_media(
        |r| {
            packets_of(r, &pid, TrackSource::ScreenAudio) >= 50
                && packets_of(r, &pid, TrackSource::Screen) >= 3
        },
        WAIT,
    ))
    .unwrap();
    let out = bot.wait_with_output().unwrap();
    assert!(out.status.success(), "rakor bot failed: {:?}", out.status);
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    for source in [TrackSource::Screen, TrackSource::ScreenAudio] {
        assert!(
            report
                .sent_source(source)
                .is_some_and(|s| s.packets > 0 && s.track_id.is_some()),
            "{source:?}: {}",
            report.to_json()
        );
    }
    assert!(report.sent_source(TrackSource::Microphone).is_none());
}
