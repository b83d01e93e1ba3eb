//! `/rtc`: the signalling WebSocket. One task per connection: wait for `join`, verify the
//! token, hand the participant to the media core, then relay client messages to it and its
//! events back. Every bad frame gets an `error` to this client only; the media core never sees
//! unparsed input.

use crate::connection::{Connection, Refusal, Stop};
use crate::limits::PreJoinPermit;
use crate::state::AppState;
use crate::token;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::Response;
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
/// `GET /rtc`: upgrade to the signalling WebSocket. The pre-join slot is taken here, before
/// the upgrade (`addr` is the client: the TCP peer or what a trusted proxy forwarded); a
/// refused client is still upgraded, to get the `error` and close a browser can read.
pub async fn ws_handler(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
) -> Response {
    let tracker = state.tracker.clone();
    let admitted = admit(&state, addr);
    ws.max_message_size(HARD_FRAME_CAP)
        .max_frame_size(HARD_FRAME_CAP)
        .on_upgrade(move |socket| {
            tracker.track_future(
                connection(socket, state, addr, admitted)
                    .instrument(tracing::info_span!("signal", peer = %addr)),
            )
        })
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

/// Token bucket for signalling messages per connection (a burst of two seconds' worth).
pub(crate) struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            per_second,
            tokens: per_second * 2.0,
            last: Instant::now(),
        }
    }
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
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

pub(crate) const BINARY_REFUSED: &str = "binary frames are not supported; send JSON text";

async fn connection(
    socket: WebSocket,
    state: AppState,
    addr: SocketAddr,
    admitted: Result<PreJoinPermit, Refusal>,
) {
    let mut conn = Connection::new(socket);
    // Held until joined (through the lobby): counts against the pre-join caps.
    let permit = match admitted {
        Ok(permit) => permit,
        Err(refusal) => return conn.refuse(refusal).await,
    };
    let joined = match join(&mut conn, &state, addr, &permit).await {
        Ok(joined) => joined,
        Err(stop) => return conn.stop(stop).await,
    };
    // The share first, then the permit: a resumed participant's address never counts it out.
    let _share = state.limits.joined(addr.ip(), &joined.pid.0);
    drop(permit);
    let Joined {
        pid,
        sfu,
        room,
        conn_ref,
        mut events,
        _cluster,
        _cascade,
        invitation,
    } = joined;
    let span = tracing::info_span!("participant", room = %room, participant = %pid);
    let ids = Ids {
        pid: &pid,
        conn_ref: &conn_ref,
        invitation: invitation.as_ref(),
    };
    relay(&state, &sfu, ids, &mut conn, &mut events)
        .instrument(span)
        .await;
    tracing::debug!(%addr, "signalling connection ended");
}

/// A new connection: refused while the server shuts down or when too many have not joined
/// (in total or from its address; see [`crate::limits`]).
fn admit(state: &AppState, addr: SocketAddr) -> Result<PreJoinPermit, Refusal> {
    if state.shutdown.is_cancelled() {
        return Err(Refusal::shutting_down());
    }
    state.limits.admit(addr.ip(), Instant::now()).map_err(|e| {
        tracing::info!(code = %e.code, %addr, "connection refused: {}", e.message);
        Refusal::new(e.code, e.message, "limit exceeded")
    })
}

/// A participant handed to the media core.
struct Joined {
    pid: ParticipantId,
    /// The handle pinned to the room's media worker.
    sfu: rakor_sfu::SfuHandle,
    room: String,
    /// Names this connection when it ends (a resumed participant ignores its old connection's
    /// end).
    conn_ref: rakor_sfu::ConnRef,
    events: tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
    /// Counts this connection in its room while it lives (a cluster renews the room's lease).
    _cluster: Option<crate::cluster::RoomGuard>,
    /// A participant of a room another node owns (`cluster.cascade`): keeps the relay legs up.
    _cascade: Option<crate::cascade::CascadeGuard>,
    /// A site that came in with an invitation (its rakor and identity): a removal ends its
    /// admission before the client hears of it, so it cannot come straight back past the lobby.
    invitation: Option<(i64, String)>,
}

/// Phase 1: read `join`, check the version and the token, pass the lobby (`crate::lobby`), and
/// join the media core.
async fn join(
    conn: &mut Connection,
    state: &AppState,
    addr: SocketAddr,
    permit: &PreJoinPermit,
) -> Result<Joined, Stop> {
    let JoinFrame {
        version,
        token,
        room,
        resume,
        video_on_demand,
    } = read_join(conn, state, addr).await?;
    if permit.resume_only() && resume.is_none() {
        let msg = format!(
            "too many connections from your address waiting to join (limits.max_unauthenticated_connections_per_ip = {}, or the server's limits.max_unauthenticated_connections); only resumes are accepted now, try again shortly",
            state.config.limits.max_unauthenticated_connections_per_ip
        );
        tracing::info!(%addr, "join refused: resume-only slot without resume");
        return Err(
            Refusal::new(ErrorCode::LimitExceeded, msg, "limit exceeded")
                .to("join")
                .into(),
        );
    }
    if version != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
        );
        return Err(
            Refusal::new(ErrorCode::UnsupportedVersion, msg, "unsupported version")
                .to("join")
                .into(),
        );
    }
    let claims = token::verify(&state.signing_key, &token, room.as_deref()).map_err(|e| {
        tracing::info!(code = %e.code(), "join refused");
        Refusal::new(e.code(), e.to_string(), "token refused").to("join")
    })?;
    // A cluster: the room lives on one node; elsewhere the client is sent there (before the
    // lobby, so that a site waits only once).
    let mut cascade_guard = None;
    let cluster_guard = match &state.cluster {
        None => None,
        Some(cluster) => match cluster
            .place_pinned(&claims.room, &placement_pin(state, &claims.room).await)
            .await
        {
            Ok(crate::cluster::Placement::Local) => Some(cluster.enter(&claims.room)),
            Ok(crate::cluster::Placement::Cascade { node, url }) => {
                // Served here; this node's own participants keep the relay legs to the owner
                // up (relay participants, `cascade/…`, are the legs themselves).
                if let Some(cascade) = &state.cascade {
                    if !crate::cascade::is_relay_identity(&claims.sub) {
                        cascade_guard = Some(cascade.enter(&claims.room, &node, &url));
                    }
                }
                None
            }
            Ok(crate::cluster::Placement::Redirect(url)) => {
                tracing::info!(room = %claims.room, %url, "join redirected to the room's node");
                conn.send(&ServerMessage::Redirect { url }).await;
                conn.close("redirect").await;
                return Err(Stop::Gone);
            }
            Err(e) => {
                return Err(Refusal::new(
                    ErrorCode::ClusterUnavailable,
                    e.to_string(),
                    "cluster unavailable",
                )
                .to("join")
                .into())
            }
        },
    };
    // Invitations: check the rakor, maybe wait in the lobby.
    crate::lobby::gate(state, &claims, conn).await?;
    let (ev_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let conn_ref = ev_tx.downgrade();
    let req = JoinRequest {
        room: claims.room.clone(),
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        role: claims.role,
        events: ev_tx,
        resume,
        video_on_demand,
    };
    // Pinned to the room's media worker: the join, then this participant's messages.
    let refuse =
        |e: rakor_sfu::SfuError| Refusal::new(e.code(), e.to_string(), "join failed").to("join");
    let sfu = state.sfu.for_room(&claims.room).map_err(refuse)?;
    let invitation = claims
        .sid
        .as_deref()
        .and_then(|sid| sid.parse::<i64>().ok())
        .map(|rakor_id| (rakor_id, claims.sub.clone()));
    let pid = sfu.join(req).await.map_err(refuse)?;
    Ok(Joined {
        invitation,
        pid,
        sfu,
        room: claims.room,
        conn_ref,
        events,
        _cluster: cluster_guard,
        _cascade: cascade_guard,
    })
}

/// A cluster: the node id or region the room's rakor is pinned to ("" = none, no rakor, or
/// the session store failed: then the room is placed by load).
async fn placement_pin(state: &AppState, room: &str) -> String {
    match state
        .session
        .store()
        .rakor_for_room(room, rakor_session::wib::now())
        .await
    {
        Ok(r) => r.map(|r| r.node).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(%room, "looking up the room's rakor for placement failed: {e}");
            String::new()
        }
    }
}

/// The fields of the client's `join`.
struct JoinFrame {
    version: u32,
    token: String,
    room: Option<String>,
    resume: Option<rakor_proto::ResumeRequest>,
    video_on_demand: bool,
}

/// Wait (at most `limits.join_timeout`) for the first message, which must be `join`; count it
/// against the join attempts of the client's address.
async fn read_join(
    conn: &mut Connection,
    state: &AppState,
    addr: SocketAddr,
) -> Result<JoinFrame, Stop> {
    let max_frame = state.config.limits.max_frame_bytes;
    let join_timeout = state.config.limits.join_timeout;
    let deadline = tokio::time::Instant::now() + join_timeout;
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout_at(deadline, conn.next()) => n,
            _ = state.shutdown.cancelled() => return Err(Refusal::shutting_down().into()),
        };
        let frame = match next {
            Err(_) => {
                tracing::info!(%addr, "no join within {join_timeout:?}; closing");
                return Err(Refusal::new(
                    ErrorCode::InvalidState,
                    format!(
                        "no \"join\" within {} (limits.join_timeout)",
                        humantime::format_duration(join_timeout)
                    ),
                    "join timeout",
                )
                .into());
            }
            Ok(None) | Ok(Some(Err(_))) => return Err(Stop::Gone),
            Ok(Some(Ok(f))) => f,
        };
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                return Err(
                    Refusal::new(ErrorCode::BadRequest, BINARY_REFUSED, "bad request").into(),
                )
            }
            Message::Close(_) => return Err(Stop::Gone),
            _ => continue,
        };
        return match parse(text.as_str(), max_frame) {
            Ok(ClientMessage::Join {
                version,
                token,
                room,
                resume,
                video_on_demand,
            }) => {
                // A node's cascade relay participants arrive from its address in bursts (one
                // per relayed site): with a valid relay token they do not use up the address's
                // join rate (`crate::cascade::is_signed_relay_token`).
                if !crate::cascade::is_signed_relay_token(&state.signing_key, &token) {
                    state
                        .limits
                        .join_attempt(addr.ip(), Instant::now())
                        .map_err(|e| {
                            tracing::info!(code = %e.code, "join refused: {}", e.message);
                            Refusal::new(e.code, e.message, "too many join attempts").to("join")
                        })?;
                }
                Ok(JoinFrame {
                    version,
                    token,
                    room,
                    resume,
                    video_on_demand,
                })
            }
            Ok(other) => Err(Refusal::new(
                ErrorCode::InvalidState,
                "the first message must be \"join\"",
                "join first",
            )
            .to(other.type_name())
            .into()),
            Err((code, message)) => Err(Refusal::new(code, message, "bad request").into()),
        };
    }
}

/// Who a relayed connection is.
#[derive(Clone, Copy)]
struct Ids<'a> {
    pid: &'a ParticipantId,
    conn_ref: &'a rakor_sfu::ConnRef,
    /// The rakor and identity of a site that joined with an invitation.
    invitation: Option<&'a (i64, String)>,
}

/// Phase 2: client frames → media core; events → client. Ends when either side ends.
async fn relay(
    state: &AppState,
    sfu: &rakor_sfu::SfuHandle,
    ids: Ids<'_>,
    conn: &mut Connection,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
) {
    let Ids {
        pid,
        conn_ref,
        invitation,
    } = ids;
    let max_frame = state.config.limits.max_frame_bytes;
    let mut limit = RateLimit::new(state.config.limits.messages_per_second);
    let mut keepalive = Keepalive::new(state.config.limits.dead_peer_timeout, Instant::now());
    let mut ping_timer = tokio::time::interval(keepalive.ping_interval());
    ping_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // TURN credentials: minted into each `joined`, renewed halfway through their lifetime.
    let mut turn_identity: Option<String> = None;
    // Every credential minted for this participant and not yet expired: revoked when the media
    // core ends the participant (leave, removal, ban, replacement).
    let mut turn_minted: Vec<rakor_proto::IceServer> = Vec::new();
    let ice_refresh = state
        .turn_service
        .as_ref()
        .map_or(Duration::from_secs(3600), |t| t.credential_ttl() / 2);
    let mut ice_timer =
        tokio::time::interval_at(tokio::time::Instant::now() + ice_refresh, ice_refresh);
    ice_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ice_timer.tick(), if turn_identity.is_some() => {
                if let (Some(turn), Some(identity)) = (&state.turn_service, &turn_identity) {
                    let ice_servers = turn.ice_servers(identity);
                    remember_minted(&mut turn_minted, &ice_servers);
                    let msg = ServerMessage::IceServers { ice_servers };
                    let sent = tokio::time::timeout(keepalive.timeout, conn.send(&msg)).await;
                    if !matches!(sent, Ok(true)) {
                        sfu.disconnect_conn(pid.clone(), LeaveReason::Disconnected, conn_ref.clone());
                        return;
                    }
                }
            }
            _ = ping_timer.tick() => {
                if keepalive.is_dead(Instant::now()) {
                    tracing::info!(timeout = ?keepalive.timeout, "signalling silent (no pong); removing the participant");
                    break;
                }
                if !matches!(tokio::time::timeout(keepalive.timeout, conn.ping()).await, Ok(Ok(()))) {
                    break;
                }
            }
            ev = events.recv() => match ev {
                Some(mut msg) => {
                    if let (ServerMessage::Joined { identity, ice_servers, .. }, Some(turn)) =
                        (&mut msg, &state.turn_service)
                    {
                        *ice_servers = turn.ice_servers(identity);
                        remember_minted(&mut turn_minted, ice_servers);
                        turn_identity = Some(identity.clone());
                        ice_timer.reset();
                    }
                    if let (ServerMessage::Leave { reason: LeaveReason::Removed, .. }, Some((rakor_id, identity))) =
                        (&msg, invitation)
                    {
                        // The attendance record revokes it too, but later: a client that
                        // reconnects the moment it reads `leave` must already find no admission.
                        if let Err(e) = state.session.revoke_admission(*rakor_id, identity).await {
                            tracing::error!(rakor = rakor_id, "cannot revoke the removed site's admission: {e}");
                        }
                    }
                    // A peer that stopped reading fills the TCP window; do not wait on it forever.
                    let sent = tokio::time::timeout(keepalive.timeout, conn.send(&msg)).await;
                    if !matches!(sent, Ok(true)) {
                        sfu.disconnect_conn(pid.clone(), LeaveReason::Disconnected, conn_ref.clone());
                        return;
                    }
                }
                None => {
                    // The media core ended this participant (leave, replaced, shutdown): its
                    // TURN credentials open nothing more, its allocations end.
                    if let Some(turn) = &state.turn_service {
                        if !turn_minted.is_empty() {
                            let ended = turn.revoke(&turn_minted);
                            tracing::debug!(ended, "TURN credentials of the participant revoked");
                        }
                    }
                    conn.close("session ended").await;
                    return;
                }
            },
            frame = conn.next() => {
                keepalive.heard(Instant::now());
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        if !conn.error(ErrorCode::BadRequest, BINARY_REFUSED, None).await {
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
                    if !conn.error(ErrorCode::RateLimited, "too many messages; slow down", None).await {
                        break;
                    }
                    continue;
                }
                match parse(text.as_str(), max_frame) {
                    Ok(ClientMessage::Join { .. }) => {
                        if !conn.error(ErrorCode::InvalidState, "already joined", Some("join")).await {
                            break;
                        }
                    }
                    Ok(msg) => {
                        if sfu.client_message(pid.clone(), msg).is_err() {
                            let refusal = Refusal::new(ErrorCode::Internal, "the media core is not running", "internal");
                            return conn.refuse(refusal).await;
                        }
                    }
                    Err((code, message)) => {
                        if !conn.error(code, message, None).await {
                            break;
                        }
                    }
                }
            }
        }
    }
    // The client went away without `leave`.
    sfu.disconnect_conn(pid.clone(), LeaveReason::Disconnected, conn_ref.clone());
}

/// Keep the credentials just minted, dropping those already expired.
fn remember_minted(minted: &mut Vec<rakor_proto::IceServer>, new: &[rakor_proto::IceServer]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    minted.retain(|s| s.expires_at >= now);
    minted.extend(new.iter().cloned());
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
