//! `/rtc`: the signalling WebSocket. One task per connection: wait for `join`, verify the
//! token, hand the participant to the media core, then relay client messages to it and its
//! events back. Every bad frame gets an `error` to this client only; the media core never sees
//! unparsed input.

use crate::state::AppState;
use crate::token;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use rakor_proto::{
    parse_client_message, ClientMessage, ErrorCode, LeaveReason, ParticipantId, ServerMessage,
    PROTOCOL_VERSION,
};
use rakor_sfu::JoinRequest;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Frames above this close the connection at the WebSocket layer; frames between the
/// configured limit (64 KiB) and this get a `frame_too_large` error and are dropped.
const HARD_FRAME_CAP: usize = 1 << 20;
/// A connection must send `join` within this time.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /rtc`: upgrade to the signalling WebSocket.
pub async fn ws_handler(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
) -> Response {
    let tracker = state.tracker.clone();
    ws.max_message_size(HARD_FRAME_CAP)
        .max_frame_size(HARD_FRAME_CAP)
        .on_upgrade(move |socket| {
            tracker.track_future(
                connection(socket, state, addr)
                    .instrument(tracing::info_span!("signal", peer = %addr)),
            )
        })
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send_msg(sink: &mut Sink, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => sink
            .send(Message::Text(Utf8Bytes::from(text)))
            .await
            .is_ok(),
        Err(e) => {
            tracing::error!("serialize server message: {e}");
            false
        }
    }
}

async fn send_error(
    sink: &mut Sink,
    code: ErrorCode,
    message: impl Into<String>,
    request_type: Option<&str>,
) -> bool {
    let m = ServerMessage::Error {
        code,
        message: message.into(),
        request_type: request_type.map(str::to_owned),
    };
    send_msg(sink, &m).await
}

type Stream = futures_util::stream::SplitStream<WebSocket>;

/// How long the server waits for the client's half of the closing handshake.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Close with a reason and complete the WebSocket closing handshake: send our Close, then
/// read (and discard) until the client's Close arrives or [`CLOSE_HANDSHAKE`] passes.
///
/// Dropping the TCP connection while the client's frames (trickle candidates, say) sit unread
/// makes the kernel answer with a reset, and a reset can reach the client before it has read
/// the frames we sent last (`leave`, `error`) — the client would then think the link failed and
/// try to resume a session the server ended on purpose.
pub(crate) async fn close(sink: &mut Sink, stream: &mut Stream, reason: &str) {
    let frame = CloseFrame {
        code: 1000,
        reason: Utf8Bytes::from(reason.to_owned()),
    };
    if sink.send(Message::Close(Some(frame))).await.is_ok() {
        let drain = async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, drain).await;
    }
    let _ = sink.close().await;
}

/// Check a text frame's size, then parse it.
fn parse(text: &str, max_frame: usize) -> Result<ClientMessage, (ErrorCode, String)> {
    if text.len() > max_frame {
        return Err((
            ErrorCode::FrameTooLarge,
            format!("frame of {} bytes exceeds {max_frame} bytes", text.len()),
        ));
    }
    parse_client_message(text).map_err(|e| (e.code, e.message))
}

/// WebSocket liveness: the server pings every quarter of `limits.dead_peer_timeout`; a
/// connection from which nothing (no pong, no message) arrived for three of those intervals is
/// dead (so it is noticed, at the next ping tick, within the timeout),
/// and its participant is handed to the media core as disconnected (see `rakor_sfu::liveness`).
struct Keepalive {
    timeout: Duration,
    last_heard: Instant,
}

impl Keepalive {
    fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            last_heard: now,
        }
    }
    fn ping_interval(&self) -> Duration {
        (self.timeout / 4).max(Duration::from_millis(100))
    }
    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }
    fn is_dead(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard)
            >= self.timeout.saturating_sub(self.ping_interval())
    }
}

/// Token bucket for signalling messages per connection.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            per_second,
            tokens: per_second * 2.0,
            last: Instant::now(),
        }
    }
    fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_second).min(self.per_second * 2.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn connection(socket: WebSocket, state: AppState, addr: SocketAddr) {
    let (mut sink, mut stream) = socket.split();
    let max_frame = state.config.limits.max_frame_bytes;
    if state.shutdown.is_cancelled() {
        send_error(
            &mut sink,
            ErrorCode::ServerShuttingDown,
            "the server is shutting down",
            None,
        )
        .await;
        close(&mut sink, &mut stream, "server shutting down").await;
        return;
    }
    // Held until joined: counts against limits.max_unauthenticated_connections.
    let unauthenticated = match state.limits.admit() {
        Ok(permit) => permit,
        Err(e) => {
            tracing::info!(code = %e.code, "connection refused: {}", e.message);
            send_error(&mut sink, e.code, e.message, None).await;
            close(&mut sink, &mut stream, "limit exceeded").await;
            return;
        }
    };

    // Phase 1: join.
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let (join_version, join_token, join_room, join_resume) = loop {
        let next = tokio::select! {
            n = tokio::time::timeout_at(deadline, stream.next()) => n,
            _ = state.shutdown.cancelled() => {
                send_error(&mut sink, ErrorCode::ServerShuttingDown, "the server is shutting down", None).await;
                close(&mut sink, &mut stream, "server shutting down").await;
                return;
            }
        };
        let frame = match next {
            Err(_) => {
                send_error(
                    &mut sink,
                    ErrorCode::InvalidState,
                    "no \"join\" within 10 s",
                    None,
                )
                .await;
                close(&mut sink, &mut stream, "join timeout").await;
                return;
            }
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(f))) => f,
        };
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                send_error(
                    &mut sink,
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text",
                    None,
                )
                .await;
                close(&mut sink, &mut stream, "bad request").await;
                return;
            }
            Message::Close(_) => return,
            _ => continue,
        };
        match parse(text.as_str(), max_frame) {
            Ok(ClientMessage::Join {
                version,
                token,
                room,
                resume,
            }) => {
                if let Err(e) = state.limits.join_attempt(addr.ip(), Instant::now()) {
                    tracing::info!(code = %e.code, "join refused: {}", e.message);
                    send_error(&mut sink, e.code, e.message, Some("join")).await;
                    close(&mut sink, &mut stream, "too many join attempts").await;
                    return;
                }
                break (version, token, room, resume);
            }
            Ok(other) => {
                let ty = other.type_name();
                send_error(
                    &mut sink,
                    ErrorCode::InvalidState,
                    "the first message must be \"join\"",
                    Some(ty),
                )
                .await;
                close(&mut sink, &mut stream, "join first").await;
                return;
            }
            Err((code, message)) => {
                send_error(&mut sink, code, message, None).await;
                close(&mut sink, &mut stream, "bad request").await;
                return;
            }
        }
    };
    if join_version != PROTOCOL_VERSION {
        let msg = format!("protocol version {join_version} is not supported; this server speaks {PROTOCOL_VERSION}");
        send_error(&mut sink, ErrorCode::UnsupportedVersion, msg, Some("join")).await;
        close(&mut sink, &mut stream, "unsupported version").await;
        return;
    }
    let claims = match token::verify(&state.signing_key, &join_token, join_room.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(code = %e.code(), "join refused");
            send_error(&mut sink, e.code(), e.to_string(), Some("join")).await;
            close(&mut sink, &mut stream, "token refused").await;
            return;
        }
    };
    // Invitations: check the rakor, maybe wait in the lobby (crate::lobby).
    if !crate::lobby::gate(&state, &claims, &mut sink, &mut stream).await {
        return;
    }
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    // Names this connection when it ends (a resumed participant ignores its old connection's end).
    let conn = ev_tx.downgrade();
    let req = JoinRequest {
        room: claims.room.clone(),
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        role: claims.role,
        events: ev_tx,
        resume: join_resume,
    };
    let pid: ParticipantId = match state.sfu.join(req).await {
        Ok(pid) => pid,
        Err(e) => {
            send_error(&mut sink, e.code(), e.to_string(), Some("join")).await;
            close(&mut sink, &mut stream, "join failed").await;
            return;
        }
    };
    drop(unauthenticated);
    let span = tracing::info_span!("participant", room = %claims.room, participant = %pid);
    relay(
        &state,
        &pid,
        &conn,
        &mut sink,
        &mut stream,
        &mut ev_rx,
        max_frame,
    )
    .instrument(span)
    .await;
    tracing::debug!(%addr, "signalling connection ended");
}

/// Phase 2: client frames → media core; events → client. Ends when either side ends.
async fn relay(
    state: &AppState,
    pid: &ParticipantId,
    conn: &rakor_sfu::ConnRef,
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    ev_rx: &mut tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
    max_frame: usize,
) {
    let mut limit = RateLimit::new(state.config.limits.messages_per_second);
    let mut keepalive = Keepalive::new(state.config.limits.dead_peer_timeout, Instant::now());
    let mut ping_timer = tokio::time::interval(keepalive.ping_interval());
    ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ping_timer.tick() => {
                if keepalive.is_dead(Instant::now()) {
                    tracing::info!(timeout = ?keepalive.timeout, "signalling silent (no pong); removing the participant");
                    break;
                }
                let ping = sink.send(Message::Ping(Default::default()));
                if !matches!(tokio::time::timeout(keepalive.timeout, ping).await, Ok(Ok(()))) {
                    break;
                }
            }
            ev = ev_rx.recv() => match ev {
                Some(msg) => {
                    // A peer that stopped reading fills the TCP window; do not wait on it forever.
                    let sent = tokio::time::timeout(keepalive.timeout, send_msg(sink, &msg)).await;
                    if !matches!(sent, Ok(true)) {
                        state.sfu.disconnect_conn(pid.clone(), LeaveReason::Disconnected, conn.clone());
                        return;
                    }
                }
                None => {
                    // The media core ended this participant (leave, replaced, shutdown).
                    close(sink, stream, "session ended").await;
                    return;
                }
            },
            frame = stream.next() => {
                keepalive.heard(Instant::now());
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        if !send_error(sink, ErrorCode::BadRequest, "binary frames are not supported; send JSON text", None).await {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue, // ping/pong are answered by the WebSocket layer
                    Some(Err(e)) => {
                        tracing::debug!("websocket read: {e}");
                        break;
                    }
                };
                if !limit.allow(Instant::now()) {
                    if !send_error(sink, ErrorCode::RateLimited, "too many messages; slow down", None).await {
                        break;
                    }
                    continue;
                }
                match parse(text.as_str(), max_frame) {
                    Ok(ClientMessage::Join { .. }) => {
                        if !send_error(sink, ErrorCode::InvalidState, "already joined", Some("join")).await {
                            break;
                        }
                    }
                    Ok(msg) => {
                        if state.sfu.client_message(pid.clone(), msg).is_err() {
                            send_error(sink, ErrorCode::Internal, "the media core is not running", None).await;
                            close(sink, stream, "internal").await;
                            return;
                        }
                    }
                    Err((code, message)) => {
                        if !send_error(sink, code, message, None).await {
                            break;
                        }
                    }
                }
            }
        }
    }
    // The client went away without `leave`.
    state
        .sfu
        .disconnect_conn(pid.clone(), LeaveReason::Disconnected, conn.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_burst_then_refills() {
        let mut r = RateLimit::new(5);
        let t0 = r.last;
        let allowed = (0..20).filter(|_| r.allow(t0)).count();
        assert_eq!(allowed, 10, "burst of two seconds' worth");
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + Duration::from_millis(250)));
    }

    #[test]
    fn keepalive_declares_a_silent_peer_dead_after_the_timeout() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Duration::from_secs(10), t0);
        assert_eq!(k.ping_interval(), Duration::from_millis(2500));
        assert!(!k.is_dead(t0 + Duration::from_millis(7499)));
        k.heard(t0 + Duration::from_secs(5));
        assert!(!k.is_dead(t0 + Duration::from_secs(12)));
        assert!(k.is_dead(t0 + Duration::from_millis(12500)));
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let text = format!(r#"{{"type":"ping","ts":1,"x":"{}"}}"#, "a".repeat(100));
        assert_eq!(
            parse(&text, 50).err().map(|e| e.0),
            Some(ErrorCode::FrameTooLarge)
        );
        assert!(parse(r#"{"type":"ping","ts":1}"#, 50).is_ok());
    }
}
