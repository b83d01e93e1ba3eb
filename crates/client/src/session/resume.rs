//! Reconnecting: resuming the same participant on a new signalling connection after the socket
//! drops (or the server holds us for a resume), and replacing both peer connections when the
//! media has to be reset.

use super::Session;
use crate::client::Joined;
use crate::error::ClientError;
use futures_util::{SinkExt, StreamExt};
use rakor_proto::ServerMessage;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The longest pause between two resume attempts (they start 250 ms apart and double).
const RESUME_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Session {
    /// Enable automatic resume with these options and the `resume_token` from `joined`.
    pub fn with_resume(mut self, opts: crate::client::ClientOptions, resume_token: String) -> Self {
        if !opts.resume_window.is_zero() {
            self.resume = Some((opts, resume_token));
        }
        self
    }

    /// The socket dropped without `leave` (or the server said `leave {resumable: true}`):
    /// reconnect and resume the same participant. Its peer connections are kept, unless the
    /// server answers `media_reset` (its media failed meanwhile; we may also ask for that when
    /// ours failed): then they are replaced and the same kinds of tracks published again.
    /// Retries until the resume window ends. True if resumed.
    pub(super) async fn try_resume(&mut self) -> bool {
        let Some((opts, token)) = self.resume.clone() else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + opts.resume_window;
        let mut backoff = Duration::from_millis(250);
        // The URL first used, then the cluster's other nodes in turn.
        let urls: Vec<String> = std::iter::once(opts.url.clone())
            .chain(opts.fallback_urls.iter().cloned())
            .collect();
        let mut attempt_no = 0usize;
        while tokio::time::Instant::now() < deadline {
            let url = &urls[attempt_no % urls.len()];
            attempt_no += 1;
            let req = rakor_proto::ResumeRequest {
                participant_id: self.participant_id.clone(),
                token: token.clone(),
                media_reset: self.media_lost,
                last_chat_id: self.room.lock().ok().and_then(|r| r.last_chat_id.clone()),
            };
            let attempt = tokio::time::timeout(
                opts.join_timeout,
                crate::client::join_from(&opts, url, Some(req)),
            )
            .await;
            match attempt {
                Ok(Ok((ws, joined, true, media_reset))) => {
                    let (sink, stream) = ws.split();
                    self.sink = sink;
                    self.stream = stream;
                    self.last_heard = tokio::time::Instant::now();
                    self.resumable_leave = None;
                    tracing::info!(media_reset, "signalling resumed");
                    if opts.server_ice_servers {
                        self.peer_config
                            .turn_servers
                            .clone_from(&joined.ice_servers);
                    }
                    let msg = joined_message(joined, true, media_reset);
                    if let Ok(mut room) = self.room.lock() {
                        room.apply(&msg);
                    }
                    let _ = self.events_tx.send(msg);
                    if media_reset {
                        self.media_lost = false;
                        if let Err(e) = self.reset_media().await {
                            self.hub
                                .push_error(format!("publishing again after a resume: {e}"));
                        }
                    }
                    return true;
                }
                Ok(Ok((ws, joined, false, _))) if opts.rejoin => {
                    // The session is gone (its node died, or the grace window ended): stay
                    // as the new participant, with new peer connections and the same tracks.
                    let (sink, stream) = ws.split();
                    self.sink = sink;
                    self.stream = stream;
                    self.last_heard = tokio::time::Instant::now();
                    self.resumable_leave = None;
                    tracing::info!(
                        old = %self.participant_id,
                        new = %joined.participant_id,
                        "session gone; rejoined as a new participant"
                    );
                    self.participant_id = joined.participant_id.clone();
                    self.hub.set_participant(joined.participant_id.clone());
                    if let Some((_, t)) = self.resume.as_mut() {
                        t.clone_from(&joined.resume_token);
                    }
                    if opts.server_ice_servers {
                        self.peer_config
                            .turn_servers
                            .clone_from(&joined.ice_servers);
                    }
                    // The room as the new `joined` describes it (the old view is stale).
                    if let Ok(mut room) = self.room.lock() {
                        room.participants.clear();
                    }
                    let msg = joined_message(joined, false, true);
                    if let Ok(mut room) = self.room.lock() {
                        room.apply(&msg);
                    }
                    let _ = self.events_tx.send(msg);
                    self.media_lost = false;
                    if let Err(e) = self.reset_media().await {
                        self.hub
                            .push_error(format!("publishing again after a rejoin: {e}"));
                    }
                    return true;
                }
                Ok(Ok((ws, joined, false, _))) => {
                    // The session is gone (grace window over): this became a new participant,
                    // which we do not want; leave it and end. The `joined` is passed on so that
                    // the application (and tests) see how the resume was answered.
                    let _ = self.events_tx.send(joined_message(joined, false, false));
                    let (mut sink, _) = ws.split();
                    let _ = sink.send(Message::text(r#"{"type":"leave"}"#)).await;
                    return false;
                }
                // The cluster cannot place the room yet (Redis down or re-forming): retry.
                Ok(Err(ClientError::Rejected {
                    code: rakor_proto::ErrorCode::ClusterUnavailable,
                    ..
                })) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
                }
                Ok(Err(ClientError::Rejected { .. })) => return false,
                Ok(Err(_)) | Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
                }
            }
        }
        false
    }

    /// After `joined {media_reset: true}`: drop both peer connections and everything reading
    /// or writing them, then publish the same kinds of tracks on a new publisher connection.
    /// The subscriber connection is created again by the server's next offer. Counters in
    /// the stats hub keep growing.
    async fn reset_media(&mut self) -> Result<(), ClientError> {
        let mut sources = Vec::new();
        for t in self.pub_tracks.iter_mut() {
            if let Some(tasks) = t.tasks.take() {
                tasks.iter().for_each(JoinHandle::abort);
            }
            if !t.stopped {
                sources.push(t.local.source);
            }
        }
        self.pub_tracks.clear();
        self.pending_removals.clear();
        self.reader_tasks.drain(..).for_each(|t| t.abort());
        self.remote_tracks.clear();
        // Events of the old connections must not reach the new ones: a fresh channel.
        let (pc_tx, pc_rx) = mpsc::unbounded_channel();
        self.pc_tx = pc_tx;
        self.pc_rx = pc_rx;
        self.close_peer_connections().await;
        self.publish_sources(&sources).await
    }
}

/// The `joined` a resume attempt was answered with, as the room view and the application see
/// it. A refused resume (`resumed: false`) carries no resume token: that participant is left.
fn joined_message(joined: Joined, resumed: bool, media_reset: bool) -> ServerMessage {
    ServerMessage::Joined {
        version: rakor_proto::PROTOCOL_VERSION,
        participant_id: joined.participant_id,
        room: joined.room,
        identity: joined.identity,
        name: joined.name,
        role: joined.role,
        participants: joined.participants,
        spotlight: joined.spotlight,
        presentation: joined.presentation,
        resume_token: if resumed {
            joined.resume_token
        } else {
            String::new()
        },
        resumed,
        media_reset,
        ice_servers: joined.ice_servers,
    }
}
