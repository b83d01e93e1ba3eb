//! The publisher connection: adding and removing local tracks, our offers and the server's
//! answers, and starting the pacers once the connection is answered and connected.

use super::Session;
use crate::error::ClientError;
use crate::media::LocalTrack;
use crate::peer;
use rakor_proto::{ClientMessage, PeerConnectionKind, TrackDeclaration, TrackKind, TrackSource};
use std::sync::Arc;
use tokio::task::JoinHandle;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpTransceiver;

/// A local track on the publisher connection.
pub(super) struct PubTrack {
    pub(super) local: LocalTrack,
    pub(super) transceiver: Arc<dyn RtpTransceiver>,
    /// One pacer per layer, then the RTCP reader, once started.
    pub(super) tasks: Option<Vec<JoinHandle<()>>>,
    pub(super) stopped: bool,
}

impl Session {
    fn check_no_unanswered_offer(&self) -> Result<(), ClientError> {
        match &self.publisher {
            Some(leg) if leg.local_sent && !leg.remote_set => Err(ClientError::Signalling(
                "a publisher offer is still unanswered".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Add tracks of the asked kinds (those not already sending) and offer. A kind published
    /// again after `unpublish` gets a new track, and its `sent` counters start over.
    pub(super) async fn publish(&mut self, audio: bool, video: bool) -> Result<(), ClientError> {
        let sources: Vec<TrackSource> = [
            (audio, TrackSource::Microphone),
            (video, TrackSource::Camera),
        ]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
        .collect();
        self.publish_sources(&sources).await
    }

    /// Add tracks of these sources (those not already sending) and offer, declaring every
    /// track's source (`offer.tracks`). `screen`: the synthetic slides
    /// ([`LocalTrack::new_screen`]); `screen_audio`: the looped Opus asset as the screen's
    /// sound ([`LocalTrack::new_screen_audio`]; the server takes it only from the presenter).
    pub(super) async fn publish_sources(
        &mut self,
        sources: &[TrackSource],
    ) -> Result<(), ClientError> {
        self.check_no_unanswered_offer()?;
        let wanted: Vec<TrackSource> = sources
            .iter()
            .copied()
            .filter(|source| {
                !self
                    .pub_tracks
                    .iter()
                    .any(|t| t.local.source == *source && !t.stopped)
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if self.publisher.is_none() {
            self.publisher = Some(self.new_leg(PeerConnectionKind::Publisher).await?);
        }
        let Some(pc) = self.publisher.as_ref().map(|l| l.pc.clone()) else {
            return Err(ClientError::Signalling("no publisher connection".into()));
        };
        let first_new = self.pub_tracks.len();
        for source in wanted {
            let stream = self.participant_id.as_str();
            let local = match source {
                TrackSource::Screen => LocalTrack::new_screen(stream, self.simulcast)?,
                TrackSource::ScreenAudio => LocalTrack::new_screen_audio(stream)?,
                TrackSource::Camera if self.simulcast => LocalTrack::new_simulcast_video(stream)?,
                other => LocalTrack::new(other.kind(), stream)?,
            }
            .with_audio_level(self.audio_level.clone());
            let transceiver = local.add_to(&pc).await?;
            self.pub_tracks.push(PubTrack {
                local,
                transceiver,
                tasks: None,
                stopped: false,
            });
        }
        let sdp = self.set_publisher_offer(&pc).await?;
        // mids exist once the offer is set.
        for t in &self.pub_tracks[first_new..] {
            let mid = t.transceiver.mid().await.ok().flatten();
            self.hub.add_sent_source(t.local.source, t.local.ssrc, mid);
            if t.local.is_simulcast() {
                let ssrcs = t.local.ssrcs();
                self.hub
                    .update_sent_source(t.local.source, |s| s.layer_ssrcs = ssrcs);
            }
        }
        self.send_publisher_offer(sdp).await
    }

    /// Add a relayed track (cascade: its packets come from `fed`) and offer — or, while an
    /// earlier publisher offer is unanswered, queue it for the offer after that answer.
    pub(super) async fn publish_fed(
        &mut self,
        fed: crate::media::FedTrack,
    ) -> Result<(), ClientError> {
        self.pending_fed.push(fed);
        if self.check_no_unanswered_offer().is_err() {
            return Ok(());
        }
        self.flush_pending().await
    }

    /// Offer every queued relayed track (one offer).
    pub(super) async fn flush_fed(&mut self) -> Result<(), ClientError> {
        if self.pending_fed.is_empty() {
            return Ok(());
        }
        if self.publisher.is_none() {
            self.publisher = Some(self.new_leg(PeerConnectionKind::Publisher).await?);
        }
        let Some(pc) = self.publisher.as_ref().map(|l| l.pc.clone()) else {
            return Err(ClientError::Signalling("no publisher connection".into()));
        };
        let first_new = self.pub_tracks.len();
        for fed in std::mem::take(&mut self.pending_fed) {
            let local = LocalTrack::new_fed(fed, self.participant_id.as_str())?;
            let transceiver = local.add_to(&pc).await?;
            self.pub_tracks.push(PubTrack {
                local,
                transceiver,
                tasks: None,
                stopped: false,
            });
        }
        let sdp = self.set_publisher_offer(&pc).await?;
        for t in &self.pub_tracks[first_new..] {
            let mid = t.transceiver.mid().await.ok().flatten();
            self.hub.add_sent_source(t.local.source, t.local.ssrc, mid);
        }
        self.send_publisher_offer(sdp).await
    }

    async fn set_publisher_offer(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
    ) -> Result<String, ClientError> {
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        pc.local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| ClientError::Signalling("no local description after set".into()))
    }

    async fn send_publisher_offer(&mut self, sdp: String) -> Result<(), ClientError> {
        if let Some(leg) = self.publisher.as_mut() {
            leg.mid = peer::first_mid(&sdp);
            leg.remote_set = false;
        }
        // Declare every sending track's source (mids exist once the offer is set).
        let mut tracks = Vec::new();
        for t in self.pub_tracks.iter().filter(|t| !t.stopped) {
            if let Ok(Some(mid)) = t.transceiver.mid().await {
                tracks.push(TrackDeclaration {
                    mid,
                    source: t.local.source,
                });
            }
        }
        let msg = ClientMessage::Offer {
            pc: PeerConnectionKind::Publisher,
            sdp,
            tracks,
        };
        self.send_description(PeerConnectionKind::Publisher, &msg)
            .await
    }

    /// Stop the local track of `kind`: stop its pacer, send `unpublish` (if the server named the
    /// track yet), remove it from the publisher connection and renegotiate.
    pub(super) async fn unpublish(&mut self, kind: TrackKind) -> Result<(), ClientError> {
        self.unpublish_source(TrackSource::default_for(kind), true)
            .await
    }

    /// Stop the local track of `source`, as [`Self::unpublish`]; `tell_server: false` when the
    /// server already dropped it (`presentation_stopped`, a refused screen): no `unpublish`.
    ///
    /// While a publisher offer is unanswered the track still stops at once (its pacer ends and
    /// the server is told, so everyone else sees it end now); only taking it off the
    /// connection waits for that answer ([`Self::flush_pending`]). A relayed track still
    /// queued for the next offer is simply dropped from the queue.
    pub(super) async fn unpublish_source(
        &mut self,
        source: TrackSource,
        tell_server: bool,
    ) -> Result<(), ClientError> {
        let unanswered = self.check_no_unanswered_offer().is_err();
        let Some(t) = self
            .pub_tracks
            .iter_mut()
            .find(|t| t.local.source == source && !t.stopped)
        else {
            if let Some(i) = self.pending_fed.iter().position(|f| f.source == source) {
                self.pending_fed.remove(i);
                return Ok(());
            }
            return Err(ClientError::InvalidOptions(format!(
                "no published {} track",
                source.as_str()
            )));
        };
        t.stopped = true;
        if let Some(tasks) = t.tasks.take() {
            tasks.iter().for_each(JoinHandle::abort);
        }
        let sender = t.transceiver.sender().await.ok().flatten();
        let track_id = self
            .hub
            .report()
            .sent_source(source)
            .and_then(|s| s.track_id.clone())
            .filter(|_| tell_server);
        if let Some(track_id) = track_id {
            self.send_msg(&ClientMessage::Unpublish { track_id })
                .await?;
        }
        let Some(sender) = sender else {
            return Ok(());
        };
        self.pending_removals.push(sender);
        if unanswered {
            return Ok(());
        }
        self.flush_pending().await
    }
    /// Start pacing every local track once the publisher is answered and connected.
    pub(super) async fn start_local_tracks(&mut self) {
        let ready = self
            .publisher
            .as_ref()
            .is_some_and(|l| l.remote_set && l.connected);
        if !ready {
            return;
        }
        for i in 0..self.pub_tracks.len() {
            let t = &self.pub_tracks[i];
            if t.tasks.is_some() || t.stopped {
                continue;
            }
            let started = match t.transceiver.sender().await {
                Ok(Some(sender)) => t.local.start(&sender, self.hub.clone()).await,
                Ok(None) => Err(ClientError::Signalling("transceiver has no sender".into())),
                Err(e) => Err(e.into()),
            };
            match started {
                Ok(tasks) => self.pub_tracks[i].tasks = Some(tasks),
                Err(e) => {
                    self.hub.push_error(format!("starting local track: {e}"));
                    self.pub_tracks[i].stopped = true;
                }
            }
        }
    }

    /// Our published (not stopped) track that the server knows as `track_id`.
    pub(super) fn published_track(&self, track_id: &rakor_proto::TrackId) -> Option<&PubTrack> {
        let source = self.hub.report().sent.values().find_map(|s| {
            (s.track_id.as_ref() == Some(track_id))
                .then(|| s.source.unwrap_or_else(|| TrackSource::default_for(s.kind)))
        })?;
        self.pub_tracks
            .iter()
            .find(|t| t.local.source == source && !t.stopped)
    }

    /// Apply the server's answer to our publisher offer, then start any tracks now ready.
    pub(super) async fn on_publisher_answer(&mut self, sdp: String) -> Result<(), ClientError> {
        let Some(leg) = self.publisher.as_mut() else {
            return Err(ClientError::Signalling(
                "answer without a publisher offer".into(),
            ));
        };
        leg.apply_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        self.start_local_tracks().await;
        // Tracks stopped and relayed tracks that arrived while that offer was out go in the
        // next one.
        self.flush_pending().await
    }

    /// One offer for what waited on an unanswered publisher offer: the senders of stopped
    /// tracks come off the connection, queued relayed tracks are added. Nothing waiting: no
    /// offer.
    pub(super) async fn flush_pending(&mut self) -> Result<(), ClientError> {
        if self.pending_removals.is_empty() {
            return self.flush_fed().await;
        }
        let Some(pc) = self.publisher.as_ref().map(|l| l.pc.clone()) else {
            self.pending_removals.clear();
            return self.flush_fed().await;
        };
        for sender in std::mem::take(&mut self.pending_removals) {
            pc.remove_track(&sender).await?;
        }
        if !self.pending_fed.is_empty() {
            // flush_fed adds them and offers once, with the removals in the same offer.
            return self.flush_fed().await;
        }
        let sdp = self.set_publisher_offer(&pc).await?;
        self.send_publisher_offer(sdp).await
    }
}
