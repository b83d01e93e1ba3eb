//! One leg — the publisher or the subscriber peer connection — and its negotiation state:
//! creating and closing legs, trickled ICE candidates in both directions (held back until the
//! matching description is applied), and the events a peer connection reports.

use super::Session;
use crate::error::ClientError;
use crate::peer::{self, PeerEvent};
use rakor_proto::{ClientMessage, IceCandidate, PeerConnectionKind};
use std::sync::Arc;
use std::time::Duration;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

/// Server candidates kept while the matching description is not applied yet.
const MAX_PENDING_CANDIDATES: usize = 64;

/// One leg (publisher or subscriber) and its negotiation state.
pub(super) struct Leg {
    pub(super) pc: Arc<dyn PeerConnection>,
    /// Our description went out, so our candidates may follow.
    pub(super) local_sent: bool,
    /// The server's description is applied, so its candidates may be added.
    pub(super) remote_set: bool,
    pub(super) connected: bool,
    /// When the server's description was first applied while not connected (the connect
    /// timeout runs from here); `None` once connected.
    pub(super) connecting_since: Option<tokio::time::Instant>,
    /// mid our trickled candidates are tagged with.
    pub(super) mid: Option<String>,
    pub(super) pending_remote: Vec<RTCIceCandidateInit>,
}

impl Leg {
    pub(super) fn new(pc: Arc<dyn PeerConnection>) -> Self {
        Self {
            pc,
            local_sent: false,
            remote_set: false,
            connected: false,
            connecting_since: None,
            mid: None,
            pending_remote: vec![],
        }
    }

    /// Apply the server's description, then the candidates that waited for it.
    pub(super) async fn apply_remote_description(
        &mut self,
        description: RTCSessionDescription,
    ) -> Result<(), ClientError> {
        self.pc.set_remote_description(description).await?;
        self.remote_set = true;
        if !self.connected && self.connecting_since.is_none() {
            self.connecting_since = Some(tokio::time::Instant::now());
        }
        for c in std::mem::take(&mut self.pending_remote) {
            add_candidate(&self.pc, c).await;
        }
        Ok(())
    }
}

impl Session {
    /// When the first leg that is still connecting runs out of `connect_timeout` (only with
    /// resume on: the remedy is a resume with a media reset).
    pub(super) fn connect_deadline(&self) -> Option<tokio::time::Instant> {
        let timeout = self
            .resume
            .as_ref()
            .map(|(o, _)| o.connect_timeout)
            .filter(|t| !t.is_zero())?;
        [self.publisher.as_ref(), self.subscriber.as_ref()]
            .into_iter()
            .flatten()
            .filter(|l| !l.connected)
            .filter_map(|l| l.connecting_since)
            .map(|since| since + timeout)
            .min()
    }

    /// A leg stayed `connecting` past `connect_timeout`: treat it as failed (its ICE agent
    /// will not say so) and resume with a media reset, which replaces both connections.
    pub(super) fn on_connect_timeout(&mut self) {
        let now = tokio::time::Instant::now();
        let Some(deadline) = self.connect_deadline() else {
            return;
        };
        if deadline > now {
            return;
        }
        for (kind, leg) in [
            (PeerConnectionKind::Publisher, self.publisher.as_mut()),
            (PeerConnectionKind::Subscriber, self.subscriber.as_mut()),
        ] {
            let Some(leg) = leg else { continue };
            if let Some(since) = leg.connecting_since.filter(|_| !leg.connected) {
                leg.connecting_since = None;
                let waited = now.saturating_duration_since(since);
                tracing::info!(
                    ?kind,
                    ?waited,
                    "peer connection never connected; media reset"
                );
                self.hub.push_error(format!(
                    "{kind:?} connection not connected {:.1} s after the server's description: resuming with a media reset",
                    waited.as_secs_f64()
                ));
            }
        }
        self.media_lost = true;
        self.resume_now = true;
    }

    /// The leg of `kind`, once it exists.
    pub(super) fn leg(&self, kind: PeerConnectionKind) -> Option<&Leg> {
        match kind {
            PeerConnectionKind::Publisher => self.publisher.as_ref(),
            PeerConnectionKind::Subscriber => self.subscriber.as_ref(),
        }
    }

    fn leg_mut(&mut self, kind: PeerConnectionKind) -> Option<&mut Leg> {
        match kind {
            PeerConnectionKind::Publisher => self.publisher.as_mut(),
            PeerConnectionKind::Subscriber => self.subscriber.as_mut(),
        }
    }

    /// Send our description (`offer` or `answer`) for the leg of `kind`; from now on its
    /// candidates may follow.
    pub(super) async fn send_description(
        &mut self,
        kind: PeerConnectionKind,
        msg: &ClientMessage,
    ) -> Result<(), ClientError> {
        self.send_msg(msg).await?;
        if let Some(leg) = self.leg_mut(kind) {
            leg.local_sent = true;
        }
        Ok(())
    }

    /// Close both peer connections (each given 2 s) and forget them.
    pub(super) async fn close_peer_connections(&mut self) {
        for leg in [self.publisher.take(), self.subscriber.take()]
            .into_iter()
            .flatten()
        {
            if tokio::time::timeout(Duration::from_secs(2), leg.pc.close())
                .await
                .is_err()
            {
                tracing::debug!("peer connection close timed out");
            }
        }
    }

    pub(super) async fn new_leg(&self, kind: PeerConnectionKind) -> Result<Leg, ClientError> {
        let pc = peer::new_peer_connection(&self.peer_config, kind, self.pc_tx.clone()).await?;
        Ok(Leg::new(pc))
    }

    /// A server candidate: add it, or hold it until its leg's remote description is applied.
    pub(super) async fn on_remote_candidate(&mut self, pc: PeerConnectionKind, c: &IceCandidate) {
        if c.candidate.is_empty() {
            return; // end-of-candidates: nothing to do for an ICE-lite peer
        }
        let init = RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid.clone(),
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment.clone(),
            url: None,
        };
        match self.leg_mut(pc) {
            Some(leg) if leg.remote_set => add_candidate(&leg.pc, init).await,
            Some(leg) => {
                if leg.pending_remote.len() < MAX_PENDING_CANDIDATES {
                    leg.pending_remote.push(init);
                }
            }
            None if pc == PeerConnectionKind::Subscriber => {
                // The subscriber connection is created by the first offer; a candidate before it
                // is a server bug, but harmless: its SDP carries the candidates too.
                tracing::debug!("subscriber candidate before any offer");
            }
            None => tracing::debug!("publisher candidate before publishing"),
        }
    }

    /// Our candidates (sent once our description went out), connection state, remote tracks.
    pub(super) async fn on_peer_event(&mut self, pc: PeerConnectionKind, ev: PeerEvent) {
        match ev {
            PeerEvent::LocalCandidate(c) => {
                let Some(leg) = self.leg(pc).filter(|l| l.local_sent) else {
                    return;
                };
                let candidate = match c {
                    Some(init) => IceCandidate {
                        candidate: init.candidate,
                        sdp_mid: leg.mid.clone().or(init.sdp_mid.filter(|m| !m.is_empty())),
                        sdp_mline_index: Some(0),
                        username_fragment: None,
                    },
                    None => IceCandidate {
                        candidate: String::new(),
                        sdp_mid: leg.mid.clone(),
                        sdp_mline_index: Some(0),
                        username_fragment: None,
                    },
                };
                if let Err(e) = self
                    .send_msg(&ClientMessage::Candidate { pc, candidate })
                    .await
                {
                    tracing::debug!(error = %e, "candidate not sent");
                }
            }
            PeerEvent::State(state) => {
                let publisher = pc == PeerConnectionKind::Publisher;
                self.hub.set_pc_state(publisher, peer::state_name(state));
                if state == RTCPeerConnectionState::Failed {
                    self.hub.push_error(format!("{pc:?} connection failed"));
                    // Our media is gone: resume with a media reset (the server may still
                    // think it is fine, or have parked us already).
                    if self.resume.is_some() {
                        self.media_lost = true;
                        self.resume_now = true;
                    }
                }
                if let Some(leg) = self.leg_mut(pc) {
                    leg.connected = state == RTCPeerConnectionState::Connected;
                    if leg.connected {
                        leg.connecting_since = None;
                    }
                }
                if state == RTCPeerConnectionState::Connected {
                    if let Some(leg) = self.leg(pc) {
                        // The selected pair may be set a moment after `Connected` (seen on the
                        // subscriber connection): look again, a bounded number of times.
                        let (pc, hub) = (leg.pc.clone(), self.hub.clone());
                        tokio::spawn(async move {
                            for _ in 0..40 {
                                if let Some(path) = peer::selected_path(&pc).await {
                                    hub.set_pc_path(publisher, Some(path));
                                    return;
                                }
                                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                            }
                        });
                    }
                }
                if publisher && state == RTCPeerConnectionState::Connected {
                    self.start_local_tracks().await;
                }
            }
            PeerEvent::Track(track) => self.on_remote_track(pc, track).await,
        }
    }
}

async fn add_candidate(pc: &Arc<dyn PeerConnection>, c: RTCIceCandidateInit) {
    // Duplicates of candidates already in the SDP are expected; errors are not fatal.
    if let Err(e) = pc.add_ice_candidate(c).await {
        tracing::debug!(error = %e, "remote candidate not added");
    }
}
