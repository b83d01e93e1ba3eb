//! The subscriber connection: answering the server's offers (the connection is created by the
//! first one) and reading the remote tracks it brings.

use super::Session;
use crate::error::ClientError;
use crate::media;
use crate::peer;
use rakor_proto::{ClientMessage, PeerConnectionKind, SubscribedTrack};
use std::sync::Arc;
use std::time::Instant;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::RTCSessionDescription;

impl Session {
    /// Answer the server's offer for the subscriber connection, creating it on the first one.
    pub(super) async fn on_subscriber_offer(
        &mut self,
        sdp: String,
        tracks: &[SubscribedTrack],
    ) -> Result<(), ClientError> {
        if self.no_subscribe {
            return Ok(());
        }
        self.hub.map_subscribed(tracks, Instant::now());
        if self.relay.is_some() {
            for t in tracks {
                self.subscribed.insert(t.mid.clone(), t.clone());
            }
        }
        if self.subscriber.is_none() {
            self.subscriber = Some(self.new_leg(PeerConnectionKind::Subscriber).await?);
        }
        let Some(leg) = self.subscriber.as_mut() else {
            return Err(ClientError::Signalling("no subscriber connection".into()));
        };
        leg.apply_remote_description(RTCSessionDescription::offer(sdp)?)
            .await?;
        let answer = leg.pc.create_answer(None).await?;
        leg.pc.set_local_description(answer).await?;
        let sdp = leg
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| ClientError::Signalling("no local description after set".into()))?;
        leg.mid = peer::first_mid(&sdp);
        let msg = ClientMessage::Answer {
            pc: PeerConnectionKind::Subscriber,
            sdp,
        };
        self.send_description(PeerConnectionKind::Subscriber, &msg)
            .await
    }

    /// A remote track arrived: keep it (for keyframe requests) and count what it receives.
    pub(super) async fn on_remote_track(
        &mut self,
        pc: PeerConnectionKind,
        track: Arc<dyn TrackRemote>,
    ) {
        let mid = match self.leg(pc) {
            Some(l) => peer::mid_of_remote_track(&l.pc, &track).await,
            None => None,
        };
        self.remote_tracks.push(track.clone());
        if let Some(relay) = &self.relay {
            let sub = mid.as_ref().and_then(|m| self.subscribed.get(m));
            if let Some(sub) = sub {
                let (tx, packets) = tokio::sync::mpsc::channel(crate::relay::RELAY_QUEUE);
                let keyframe_request = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let relayed = crate::relay::RelayedTrack {
                    participant_id: sub.participant_id.clone(),
                    track_id: sub.track_id.clone(),
                    source: sub
                        .source
                        .unwrap_or_else(|| rakor_proto::TrackSource::default_for(sub.kind)),
                    packets,
                    keyframe_request: keyframe_request.clone(),
                };
                if relay.tracks.send(relayed).is_ok() {
                    self.reader_tasks
                        .push(tokio::spawn(media::relay_remote_track(
                            track,
                            mid,
                            self.hub.clone(),
                            tx,
                            keyframe_request,
                            relay.bytes.clone(),
                        )));
                    return;
                }
            }
        }
        self.reader_tasks
            .push(tokio::spawn(media::read_remote_track(
                track,
                mid,
                self.hub.clone(),
            )));
    }
}
