//! In-process loopback, no server: a publishing peer connection built with the client's
//! publishing code sends the looped VP8 + Opus assets to a receiving peer connection whose tracks
//! are counted by the client's receive code. Proves the media half of `rakor-client` (pacing,
//! packetization, payload verification, keyframe detection, PLI feedback) on its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::media::{read_remote_track, request_keyframe, LocalTrack};
use rakor_client::peer::{mid_of_remote_track, new_peer_connection, PeerConfig, PeerEvent};
use rakor_client::StatsHub;
use rakor_proto::{ParticipantId, PeerConnectionKind, SubscribedTrack, TrackId, TrackKind};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

type Events = mpsc::UnboundedReceiver<(PeerConnectionKind, PeerEvent)>;

/// Wait until `events` reports ICE gathering complete, returning anything else seen meanwhile.
async fn gathered(events: &mut Events) {
    let wait = async {
        while let Some((_, ev)) = events.recv().await {
            if let PeerEvent::LocalCandidate(None) = ev {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("ICE gathering did not complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_to_subscriber_loopback_counts_and_verifies_media() {
    let sender_hub = Arc::new(StatsHub::new());
    let receiver_hub = Arc::new(StatsHub::new());
    let config = PeerConfig::default();

    let (a_tx, mut a_events) = mpsc::unbounded_channel();
    let (b_tx, mut b_events) = mpsc::unbounded_channel();
    let a = new_peer_connection(&config, PeerConnectionKind::Publisher, a_tx)
        .await
        .unwrap();
    let b = new_peer_connection(&config, PeerConnectionKind::Subscriber, b_tx)
        .await
        .unwrap();

    // Publisher side: one audio and one video track, sendonly.
    let audio = LocalTrack::new(TrackKind::Audio, "PA_sender").unwrap();
    let video = LocalTrack::new(TrackKind::Video, "PA_sender").unwrap();
    let audio_t = audio.add_to(&a).await.unwrap();
    let video_t = video.add_to(&a).await.unwrap();

    // Offer/answer without trickle: wait for gathering, then the SDP carries the candidates.
    let offer = a.create_offer(None).await.unwrap();
    a.set_local_description(offer).await.unwrap();
    gathered(&mut a_events).await;
    let offer_sdp = a.local_description().await.unwrap().sdp;
    let audio_mid = audio_t.mid().await.unwrap().unwrap();
    let video_mid = video_t.mid().await.unwrap().unwrap();
    sender_hub.add_sent(TrackKind::Audio, audio.ssrc, Some(audio_mid.clone()));
    sender_hub.add_sent(TrackKind::Video, video.ssrc, Some(video_mid.clone()));

    // The mapping a server would send with its subscriber offer.
    let sender = ParticipantId("PA_sender".into());
    receiver_hub.map_subscribed(
        &[
            SubscribedTrack {
                mid: audio_mid.clone(),
                track_id: TrackId("TR_audio".into()),
                participant_id: sender.clone(),
                kind: TrackKind::Audio,
                source: None,
            },
            SubscribedTrack {
                mid: video_mid.clone(),
                track_id: TrackId("TR_video".into()),
                participant_id: sender.clone(),
                kind: TrackKind::Video,
                source: None,
            },
        ],
        Instant::now(),
    );

    b.set_remote_description(RTCSessionDescription::offer(offer_sdp).unwrap())
        .await
        .unwrap();
    let answer = b.create_answer(None).await.unwrap();
    b.set_local_description(answer).await.unwrap();
    gathered(&mut b_events).await;
    let answer_sdp = b.local_description().await.unwrap().sdp;
    a.set_remote_description(RTCSessionDescription::answer(answer_sdp).unwrap())
        .await
        .unwrap();

    // Receiver: count every remote track; hand the video track back for a PLI later.
    let (video_track_tx, video_track_rx) = oneshot::channel::<Arc<dyn TrackRemote>>();
    let b2 = b.clone();
    let rhub = receiver_hub.clone();
    tokio::spawn(async move {
        let mut video_track_tx = Some(video_track_tx);
        while let Some((_, ev)) = b_events.recv().await {
            if let PeerEvent::Track(track) = ev {
                let mid = mid_of_remote_track(&b2, &track).await;
                if mid.as_deref() == Some(video_mid.as_str()) {
                    if let Some(tx) = video_track_tx.take() {
                        let _ = tx.send(track.clone());
                    }
                }
                tokio::spawn(read_remote_track(track, mid, rhub.clone()));
            }
        }
    });

    // Publisher: start pacing once connected.
    let mut tasks = Vec::new();
    let wait_connected = async {
        while let Some((_, ev)) = a_events.recv().await {
            if let PeerEvent::State(RTCPeerConnectionState::Connected) = ev {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait_connected)
        .await
        .expect("publisher never connected");
    for (local, t) in [(&audio, &audio_t), (&video, &video_t)] {
        let sender = t.sender().await.unwrap().unwrap();
        tasks.extend(local.start(&sender, sender_hub.clone()).await.unwrap());
    }
    // Keep draining publisher events so its channel does not grow.
    tokio::spawn(async move { while a_events.recv().await.is_some() {} });

    let report = receiver_hub
        .wait_for(
            |r| {
                let v = r.received.get(&TrackId("TR_video".into()));
                let au = r.received.get(&TrackId("TR_audio".into()));
                v.is_some_and(|v| v.frames >= 20 && v.keyframes >= 1)
                    && au.is_some_and(|a| a.packets >= 50)
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|r| panic!("media did not arrive: {}", r.to_json()));

    let v = report.received_track(&sender, TrackKind::Video).unwrap();
    let au = report.received_track(&sender, TrackKind::Audio).unwrap();
    for t in [v, au] {
        assert!(t.packets > 0 && t.bytes > 0 && t.frames > 0, "{t:?}");
        assert!(t.payload_matches > 0, "{t:?}");
        assert_eq!(t.payload_mismatches, 0, "{t:?}");
        assert!(t.first_packet_ms.is_some(), "{t:?}");
        assert!(t.last_seq.is_some());
    }
    assert!(v.packets > v.frames, "keyframes span several packets");
    assert_eq!(v.mid.as_deref(), Some(v.mid.as_deref().unwrap_or_default()));
    assert_eq!(au.keyframes, 0);

    let sent = sender_hub.report();
    let sv = sent.sent_track(TrackKind::Video).unwrap();
    assert!(
        sv.packets >= v.packets && sv.frames > 0 && sv.keyframes >= 1,
        "{sv:?}"
    );
    assert_eq!(sv.write_errors, 0);

    // A PLI from the receiver reaches the sender's RTCP reader and makes it send a keyframe.
    let video_track = video_track_rx.await.unwrap();
    let keyframes_before = v.keyframes;
    request_keyframe(&video_track).await.unwrap();
    sender_hub
        .wait_for(
            |r| {
                r.sent_track(TrackKind::Video)
                    .is_some_and(|s| s.plis_received >= 1)
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|r| panic!("PLI not seen by the sender: {}", r.to_json()));
    let after = receiver_hub
        .wait_for(
            |r| {
                r.received
                    .get(&TrackId("TR_video".into()))
                    .is_some_and(|v| v.keyframes > keyframes_before)
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|r| panic!("no keyframe after PLI: {}", r.to_json()));
    assert_eq!(after.total_mismatches(), 0);

    // The report serialises with the documented fields.
    let json = serde_json::to_value(&after).unwrap();
    let vj = &json["received"]["TR_video"];
    for field in [
        "participant_id",
        "kind",
        "packets",
        "bytes",
        "frames",
        "keyframes",
        "first_packet_ms",
        "payload_matches",
        "payload_mismatches",
    ] {
        assert!(!vj[field].is_null(), "missing {field} in {vj}");
    }

    tasks.iter().for_each(|t| t.abort());
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// The lines of the m-section of `kind` ("audio"/"video") in an SDP.
fn m_section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
    let mut out = vec![];
    let mut inside = false;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            inside = line.starts_with(&format!("m={kind}"));
        }
        if inside {
            out.push(line);
        }
    }
    out
}

/// The id an SDP section maps `uri` to (`a=extmap:<id> <uri>`).
fn extmap_id(section: &[&str], uri: &str) -> Option<u8> {
    section.iter().find_map(|l| {
        let rest = l.strip_prefix("a=extmap:")?;
        let (id, u) = rest.split_once(' ')?;
        (u.trim() == uri).then(|| id.split('/').next()?.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_publisher_offers_q_h_f_and_every_layer_arrives_with_its_rid() {
    use rakor_client::media::SIMULCAST_RIDS;
    use rakor_client::peer::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use webrtc::media_stream::track_remote::TrackRemoteEvent;

    let sender_hub = Arc::new(StatsHub::new());
    let receiver_hub = Arc::new(StatsHub::new());
    let config = PeerConfig::default();
    let (a_tx, mut a_events) = mpsc::unbounded_channel();
    let (b_tx, mut b_events) = mpsc::unbounded_channel();
    let a = new_peer_connection(&config, PeerConnectionKind::Publisher, a_tx)
        .await
        .unwrap();
    let b = new_peer_connection(&config, PeerConnectionKind::Subscriber, b_tx)
        .await
        .unwrap();

    let audio = LocalTrack::new(TrackKind::Audio, "PA_sim").unwrap();
    let video = LocalTrack::new_simulcast_video("PA_sim").unwrap();
    let ssrcs = video.ssrcs();
    assert_eq!(ssrcs.len(), 3);
    let audio_t = audio.add_to(&a).await.unwrap();
    let video_t = video.add_to(&a).await.unwrap();

    let offer = a.create_offer(None).await.unwrap();
    a.set_local_description(offer).await.unwrap();
    gathered(&mut a_events).await;
    let offer_sdp = a.local_description().await.unwrap().sdp;
    let vsec = m_section(&offer_sdp, "video");
    eprintln!("simulcast offer, video section:\n{}", vsec.join("\n"));
    // The layers in order q, h, f — one transceiver, one m-section.
    let rid_lines: Vec<&str> = vsec
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=rid:"))
        .collect();
    assert_eq!(rid_lines, ["a=rid:q send", "a=rid:h send", "a=rid:f send"]);
    assert!(vsec.contains(&"a=simulcast:send q;h;f"), "{vsec:?}");
    assert!(vsec.contains(&"a=sendonly"), "{vsec:?}");
    assert_eq!(offer_sdp.matches("m=video").count(), 1);
    let rid_ext = extmap_id(&vsec, SDES_RTP_STREAM_ID_URI).expect("rid extmap in the offer");
    let mid_ext = extmap_id(&vsec, SDES_MID_URI).expect("mid extmap in the offer");
    // The plain audio track is unchanged: no rid, no simulcast.
    let asec = m_section(&offer_sdp, "audio");
    assert!(asec
        .iter()
        .all(|l| !l.starts_with("a=rid:") && !l.starts_with("a=simulcast:")));
    assert!(asec.iter().any(|l| l.starts_with("a=ssrc:")));

    let audio_mid = audio_t.mid().await.unwrap().unwrap();
    let video_mid = video_t.mid().await.unwrap().unwrap();
    sender_hub.add_sent(TrackKind::Audio, audio.ssrc, Some(audio_mid.clone()));
    sender_hub.add_sent(TrackKind::Video, video.ssrc, Some(video_mid.clone()));
    let sender = ParticipantId("PA_sim".into());
    receiver_hub.map_subscribed(
        &[SubscribedTrack {
            mid: video_mid.clone(),
            track_id: TrackId("TR_video".into()),
            participant_id: sender.clone(),
            kind: TrackKind::Video,
            source: None,
        }],
        Instant::now(),
    );

    b.set_remote_description(RTCSessionDescription::offer(offer_sdp).unwrap())
        .await
        .unwrap();
    let answer = b.create_answer(None).await.unwrap();
    b.set_local_description(answer).await.unwrap();
    gathered(&mut b_events).await;
    let answer_sdp = b.local_description().await.unwrap().sdp;
    let answer_video = m_section(&answer_sdp, "video");
    eprintln!("answer, video section:\n{}", answer_video.join("\n"));
    assert!(
        answer_video.contains(&"a=simulcast:recv q;h;f"),
        "{answer_video:?}"
    );
    a.set_remote_description(RTCSessionDescription::answer(answer_sdp).unwrap())
        .await
        .unwrap();

    // Receiver: count the video through the client's counters, and check on the side that each
    // SSRC opened with its rid and that each packet's rid extension names the layer whose asset
    // its payload comes from.
    let opened: Arc<Mutex<HashMap<u32, String>>> = Arc::default();
    let rid_mismatches = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (video_track_tx, video_track_rx) = oneshot::channel::<Arc<dyn TrackRemote>>();
    {
        let (b2, rhub, opened, bad) = (
            b.clone(),
            receiver_hub.clone(),
            opened.clone(),
            rid_mismatches.clone(),
        );
        tokio::spawn(async move {
            let mut video_track_tx = Some(video_track_tx);
            while let Some((_, ev)) = b_events.recv().await {
                let PeerEvent::Track(track) = ev else {
                    continue;
                };
                let mid = mid_of_remote_track(&b2, &track).await;
                if mid.as_deref() != Some(video_mid.as_str()) {
                    tokio::spawn(read_remote_track(track, mid, rhub.clone()));
                    continue;
                }
                if let Some(tx) = video_track_tx.take() {
                    let _ = tx.send(track.clone());
                }
                let (rhub, opened, bad) = (rhub.clone(), opened.clone(), bad.clone());
                let video_mid = video_mid.clone();
                tokio::spawn(async move {
                    while let Some(ev) = track.poll().await {
                        match ev {
                            TrackRemoteEvent::OnOpen(init) => {
                                let rid = init.rid.clone().unwrap_or_default();
                                opened.lock().unwrap().insert(init.ssrc, rid);
                            }
                            TrackRemoteEvent::OnRtpPacket(pkt) => {
                                let layer = rakor_client::packetizer::find_payload(
                                    TrackKind::Video,
                                    &pkt.payload,
                                );
                                let rid = pkt.header.get_extension(rid_ext);
                                let want = layer.map(|l| SIMULCAST_RIDS[l as usize].as_bytes());
                                if rid.as_deref() != want {
                                    bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                if pkt.header.get_extension(mid_ext).as_deref()
                                    != Some(video_mid.as_bytes())
                                {
                                    bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                rhub.record_received(
                                    mid.as_deref(),
                                    ("", ""),
                                    TrackKind::Video,
                                    &pkt,
                                    Instant::now(),
                                );
                            }
                            TrackRemoteEvent::OnEnded => break,
                            _ => {}
                        }
                    }
                });
            }
        });
    }

    let wait_connected = async {
        while let Some((_, ev)) = a_events.recv().await {
            if let PeerEvent::State(RTCPeerConnectionState::Connected) = ev {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait_connected)
        .await
        .expect("publisher never connected");
    let mut tasks = Vec::new();
    for (local, t) in [(&audio, &audio_t), (&video, &video_t)] {
        let sender = t.sender().await.unwrap().unwrap();
        tasks.extend(local.start(&sender, sender_hub.clone()).await.unwrap());
    }
    assert_eq!(
        tasks.len(),
        2 + 4,
        "audio: pacer + rtcp; video: 3 pacers + rtcp"
    );
    tokio::spawn(async move { while a_events.recv().await.is_some() {} });

    let report = receiver_hub
        .wait_for(
            |r| {
                r.received
                    .get(&TrackId("TR_video".into()))
                    .is_some_and(|v| v.layer_packets.iter().all(|&n| n >= 30))
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|r| panic!("not every layer arrived: {}", r.to_json()));
    let v = &report.received[&TrackId("TR_video".into())];
    assert_eq!(v.payload_mismatches, 0, "{v:?}");
    assert_eq!(v.layer_packets.iter().sum::<u64>(), v.payload_matches);
    assert!(v.last_layer.is_some());
    assert_eq!(
        rid_mismatches.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "packets whose rid/mid extension does not match their layer"
    );
    // Each layer SSRC opened on the one remote track with its rid.
    let opened_now = opened.lock().unwrap().clone();
    let want: HashMap<u32, String> = ssrcs
        .iter()
        .zip(SIMULCAST_RIDS)
        .map(|(s, r)| (*s, r.to_owned()))
        .collect();
    assert_eq!(opened_now, want);

    let sent = sender_hub.report();
    let sv = sent.sent_track(TrackKind::Video).unwrap();
    assert!(sv.layer_packets.iter().all(|&n| n > 0), "{sv:?}");
    assert_eq!(sv.layer_packets.iter().sum::<u64>(), sv.packets);
    assert_eq!(sv.write_errors, 0, "{sv:?}");
    // The higher layers are bigger.
    assert!(sv.layer_packets[0] < sv.layer_packets[2], "{sv:?}");

    // A PLI naming the middle layer's SSRC reaches the sender.
    let video_track = video_track_rx.await.unwrap();
    video_track
        .write_rtcp(vec![Box::new(
            rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrcs[1],
            },
        )])
        .await
        .unwrap();
    sender_hub
        .wait_for(
            |r| {
                r.sent_track(TrackKind::Video)
                    .is_some_and(|s| s.plis_received >= 1)
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|r| panic!("PLI for layer h not seen: {}", r.to_json()));

    // Pausing stops all three layers; resuming restarts all three.
    video.set_paused(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = sender_hub
        .report()
        .sent_track(TrackKind::Video)
        .unwrap()
        .layer_packets;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = sender_hub
        .report()
        .sent_track(TrackKind::Video)
        .unwrap()
        .layer_packets;
    assert_eq!(paused_at, still, "a layer kept sending while paused");
    video.set_paused(false);
    sender_hub
        .wait_for(
            |r| {
                r.sent_track(TrackKind::Video)
                    .is_some_and(|s| (0..3).all(|l| s.layer_packets[l] > still[l]))
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|r| panic!("layers did not resume: {}", r.to_json()));

    tasks.iter().for_each(|t| t.abort());
    a.close().await.unwrap();
    b.close().await.unwrap();
}
