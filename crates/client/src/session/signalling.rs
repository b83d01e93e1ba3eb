//! Server messages: parsing each text frame (unknown types are ignored, as the protocol
//! requires), keeping the room view current, and handing each message to the part that acts on
//! it before passing it on to the application.

use super::Session;
use rakor_proto::{PeerConnectionKind, ServerMessage};

/// Server `type`s this client version knows; anything else is ignored, as the protocol requires.
const KNOWN_SERVER_TYPES: &[&str] = &[
    "joined",
    "ice_servers",
    "answer",
    "offer",
    "candidate",
    "participant_joined",
    "participant_left",
    "track_published",
    "track_unpublished",
    "track_muted",
    "spotlight",
    "presentation",
    "presentation_stopped",
    "speakers",
    "publisher_pause",
    "publisher_layers",
    "moderator_mute",
    "lobby",
    "pong",
    "leave",
    "error",
];

impl Session {
    /// Handle one text frame from the server.
    pub(super) async fn on_text(&mut self, text: &str) {
        let msg = match serde_json::from_str::<ServerMessage>(text) {
            Ok(m) => m,
            Err(e) => {
                let ty = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
                match ty {
                    Some(t) if !KNOWN_SERVER_TYPES.contains(&t.as_str()) => {
                        tracing::debug!(r#type = %t, "ignoring unknown server message type");
                    }
                    _ => self
                        .hub
                        .push_error(format!("unparseable server message: {e}")),
                }
                return;
            }
        };
        if let Ok(mut room) = self.room.lock() {
            room.apply(&msg);
        }
        match &msg {
            ServerMessage::Answer {
                pc: PeerConnectionKind::Publisher,
                sdp,
            } => {
                if let Err(e) = self.on_publisher_answer(sdp.clone()).await {
                    self.hub.push_error(format!("publisher answer: {e}"));
                }
            }
            ServerMessage::Offer {
                pc: PeerConnectionKind::Subscriber,
                sdp,
                tracks,
            } => {
                if let Err(e) = self.on_subscriber_offer(sdp.clone(), tracks).await {
                    self.hub.push_error(format!("subscriber offer: {e}"));
                }
            }
            ServerMessage::Answer { pc, .. } | ServerMessage::Offer { pc, .. } => {
                self.hub.push_error(format!(
                    "unexpected {} for the {pc:?} connection",
                    msg_type(&msg)
                ));
            }
            ServerMessage::Candidate { pc, candidate } => {
                self.on_remote_candidate(*pc, candidate).await
            }
            ServerMessage::TrackPublished {
                participant_id,
                track,
            } if *participant_id == self.participant_id => {
                self.hub.set_sent_track_id(&track.mid, &track.id);
            }
            ServerMessage::Leave {
                reason,
                resumable: true,
            } if self.resume.is_some() => self.resumable_leave = Some(*reason),
            ServerMessage::Leave { reason, .. } => self.close_reason = Some(*reason),
            ServerMessage::PublisherPause { track_id, paused } => {
                if let Some(t) = self.published_track(track_id) {
                    t.local.set_paused(*paused);
                    self.hub.update_sent_source(t.local.source, |s| {
                        if *paused && !s.paused {
                            s.pauses += 1;
                        }
                        s.paused = *paused;
                    });
                }
            }
            ServerMessage::IceServers { ice_servers } => {
                // For peer connections built from now on (allocations open keep working).
                self.peer_config.turn_servers.clone_from(ice_servers);
            }
            ServerMessage::TrackDemand {
                track_id,
                visible,
                width,
                height,
            } => {
                if let Some(t) = self.published_track(track_id) {
                    t.local.on_demand(*visible, *width, *height);
                }
            }
            ServerMessage::PublisherLayers { track_id, rids } => {
                if let Some(t) = self.published_track(track_id) {
                    let sent = t.local.set_active_layers(rids);
                    self.hub.update_sent_source(t.local.source, |s| {
                        s.active_layers = sent.iter().map(|r| (*r).to_owned()).collect();
                    });
                }
            }
            // Our screen share is over without our asking (a host stopped it or took over), or
            // was refused (someone else presents): stop it and take it off the connection.
            ServerMessage::PresentationStopped { .. }
            | ServerMessage::Error {
                code: rakor_proto::ErrorCode::PresentationActive,
                ..
            } => {
                if let Err(e) = self
                    .unpublish_source(rakor_proto::TrackSource::Screen, false)
                    .await
                {
                    self.hub
                        .push_error(format!("stopping the screen share: {e}"));
                }
            }
            _ => {}
        }
        let _ = self.events_tx.send(msg);
    }
}

fn msg_type(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Answer { .. } => "answer",
        ServerMessage::Offer { .. } => "offer",
        _ => "message",
    }
}
