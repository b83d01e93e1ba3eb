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
            },
            SubscribedTrack {
                mid: video_mid.clone(),
                track_id: TrackId("TR_video".into()),
                participant_id: sender.clone(),
                kind: TrackKind::Video,
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
