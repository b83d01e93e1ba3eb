//! Stopping a track while a publisher offer of ours is still unanswered (a cascade relay whose
//! source track ended while the republisher's previous offer was out; a presenter stopped by a
//! host while another track was being added). The track must end for the room at once
//! (`unpublish` goes out before the answer) and come off the publisher connection in the offer
//! that follows that answer; before, the client refused with "a publisher offer is still
//! unanswered" and the track stayed published on the server.
//!
//! The mock server answers each publisher offer (a real ICE-lite answer; no connectivity is
//! needed) only when the test allows it, names each declared track (`track_published`, id
//! `TR_<mid>`) and reports every offer and `unpublish` it reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/lite_mock.rs"]
#[allow(dead_code)] // this test answers without candidates: not every helper is used
mod lite_mock;

use futures_util::{SinkExt, StreamExt};
use lite_mock::{join, lite_answer, text};
use rakor_client::{Client, ClientOptions};
use rakor_proto::*;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// What the mock read from the client.
#[derive(Debug)]
enum Seen {
    Offer {
        tracks: Vec<TrackDeclaration>,
        sdp: String,
    },
    Unpublish(TrackId),
}

type Script = (mpsc::UnboundedSender<Seen>, mpsc::UnboundedReceiver<()>);

/// Starts the mock; returns its URL, what it reads, and the permits to answer the oldest
/// unanswered publisher offer (one per `send(())`).
async fn start_mock() -> (
    String,
    mpsc::UnboundedReceiver<Seen>,
    mpsc::UnboundedSender<()>,
) {
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let (permit_tx, permit_rx) = mpsc::unbounded_channel();
    let script: Arc<Mutex<Option<Script>>> = Arc::new(Mutex::new(Some((seen_tx, permit_rx))));
    let (url, _resumes) = lite_mock::start(move |ws, resumes| {
        let script = script.lock().unwrap().take();
        async move {
            let Some((seen, mut permits)) = script else {
                return;
            };
            let Some((mut sink, mut stream)) = join(ws, &resumes, "PA_pub").await else {
                return;
            };
            let (events_tx, _events_rx) = mpsc::unbounded_channel();
            let mut unanswered: VecDeque<(String, Vec<TrackDeclaration>)> = VecDeque::new();
            let mut named: HashSet<String> = HashSet::new();
            let mut answerers = Vec::new();
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        let Some(Ok(Message::Text(t))) = msg else { break };
                        match parse_client_message(t.as_str()) {
                            Ok(ClientMessage::Offer { pc: PeerConnectionKind::Publisher, sdp, tracks }) => {
                                let _ = seen.send(Seen::Offer { tracks: tracks.clone(), sdp: sdp.clone() });
                                unanswered.push_back((sdp, tracks));
                            }
                            Ok(ClientMessage::Unpublish { track_id }) => {
                                let _ = seen.send(Seen::Unpublish(track_id));
                            }
                            _ => {}
                        }
                    }
                    permit = permits.recv() => {
                        if permit.is_none() {
                            break;
                        }
                        let Some((offer, tracks)) = unanswered.pop_front() else {
                            panic!("a permit with no unanswered offer");
                        };
                        let (pc, sdp, _) =
                            lite_answer(PeerConnectionKind::Publisher, offer, events_tx.clone()).await;
                        answerers.push(pc);
                        let answer = ServerMessage::Answer { pc: PeerConnectionKind::Publisher, sdp };
                        let _ = sink.send(text(&answer)).await;
                        for t in tracks.into_iter().filter(|t| named.insert(t.mid.clone())) {
                            let published = ServerMessage::TrackPublished {
                                participant_id: ParticipantId("PA_pub".into()),
                                track: TrackInfo {
                                    id: TrackId(format!("TR_{}", t.mid)),
                                    kind: t.source.kind(),
                                    mid: t.mid,
                                    muted: false,
                                    source: Some(t.source),
                                },
                            };
                            let _ = sink.send(text(&published)).await;
                        }
                    }
                }
            }
            for pc in answerers {
                let _ = pc.close().await;
            }
        }
    })
    .await;
    (url, seen_rx, permit_tx)
}

async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("the mock read nothing more from the client in time")
        .expect("the mock went away")
}

/// The direction attribute of the media section whose `a=mid:` is `mid`.
fn direction_of(sdp: &str, mid: &str) -> Option<String> {
    let section = sdp
        .split("\nm=")
        .find(|s| s.lines().any(|l| l.trim() == format!("a=mid:{mid}")))?;
    section.lines().map(str::trim).find_map(|l| {
        ["sendrecv", "sendonly", "recvonly", "inactive"]
            .into_iter()
            .find(|d| l == format!("a={d}"))
            .map(str::to_owned)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_stopped_while_an_offer_is_unanswered_ends_at_once_and_comes_off_after_the_answer()
{
    let (url, mut seen, permits) = start_mock().await;
    let mut opts = ClientOptions::new(&url, "site-pub").publish(true, true);
    opts.connect_timeout = Duration::ZERO;
    let mut client = Client::connect(opts).await.unwrap();

    // Offer 1: microphone and camera; answered, both named.
    let Seen::Offer { tracks: first, .. } = next_seen(&mut seen).await else {
        panic!("the client's first message to the mock is not its publisher offer")
    };
    let camera = first
        .iter()
        .find(|t| t.source == TrackSource::Camera)
        .expect("offer 1 declares the camera")
        .mid
        .clone();
    permits.send(()).unwrap();
    let camera_id = TrackId(format!("TR_{camera}"));
    client
        .wait_for(
            |m| matches!(m, ServerMessage::TrackPublished { track, .. } if track.id == camera_id),
            WAIT,
        )
        .await
        .unwrap();

    // Offer 2 (a screen) goes out and stays unanswered.
    client.publish_screen().await.unwrap();
    let Seen::Offer { tracks: second, .. } = next_seen(&mut seen).await else {
        panic!("no offer for the screen")
    };
    assert!(second.iter().any(|t| t.source == TrackSource::Screen));

    // Stopping the camera now is accepted, and the room is told before any answer.
    client.unpublish(TrackKind::Video).await.unwrap();
    match next_seen(&mut seen).await {
        Seen::Unpublish(id) => assert_eq!(id, camera_id),
        other => panic!("expected the camera's unpublish before the answer, got {other:?}"),
    }

    // Once offer 2 is answered, offer 3 takes the camera off the connection.
    permits.send(()).unwrap();
    let Seen::Offer { tracks: third, sdp } = next_seen(&mut seen).await else {
        panic!("no renegotiating offer after the answer")
    };
    let sources: Vec<TrackSource> = third.iter().map(|t| t.source).collect();
    assert!(!sources.contains(&TrackSource::Camera), "{sources:?}");
    assert!(sources.contains(&TrackSource::Microphone), "{sources:?}");
    assert!(sources.contains(&TrackSource::Screen), "{sources:?}");
    let dir = direction_of(&sdp, &camera);
    assert!(
        matches!(dir.as_deref(), Some("inactive" | "recvonly")),
        "the camera's section still sends: {dir:?}"
    );
    // Nothing else was pending: no further offer while offer 3 is unanswered.
    assert!(seen.try_recv().is_err());
    // And a second stop of the same track is refused clearly, not sent again.
    let again = client.unpublish(TrackKind::Video).await;
    assert!(again.is_err(), "{again:?}");
}
