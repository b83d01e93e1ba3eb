//! The session manager's hooks into signalling and the media core:
//!
//! - [`gate`]: the one call signalling makes after verifying a token and before
//!   `sfu.join(..)`. Plain tokens (no `sid` claim) pass at once. Invitations are checked
//!   against the stored rakor (exists, same room, not ended, link window open, site still
//!   invited); a site whose link asks for the lobby and that was not admitted before waits,
//!   receiving `lobby {status:"waiting"}`, until an operator admits it (`lobby
//!   {status:"admitted"}`, then the join proceeds) or refuses it (`error {code:"refused"}` and
//!   close). While waiting it may send `ping` (answered) and `leave`.
//! - [`record_attendance`]: turns the media core's join/leave events into attendance records.
//! - [`open_session_manager`], [`first_operator_hint`]: start-up.

use crate::app::{AppState, Invocation};
use crate::config::Config;
use crate::token::Claims;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rakor_proto::{
    parse_client_message, ClientMessage, ErrorCode, LeaveReason, LobbyStatus, Role, ServerMessage,
};
use rakor_session::lobby::Decision;
use rakor_session::model::{AttendanceKind, Personal};
use rakor_session::{Admission, Arrival, Membership, Refusal, SessionManager, SessionSettings};
use std::net::SocketAddr;
use std::sync::Arc;

/// Open the session database (`session.database` in the data directory).
pub async fn open_session_manager(config: &Config) -> anyhow::Result<Arc<SessionManager>> {
    let path = config.session_database_path();
    let settings = SessionSettings {
        login_ttl: config.session.login_ttl,
        login_max_failures: config.session.login_max_failures,
        login_max_failures_per_address: config.session.login_max_failures_per_address,
        login_lockout: config.session.login_lockout,
        hash_concurrency: config.session.password_hash_concurrency,
        hash_queue: config.session.password_hash_queue,
    };
    let manager = SessionManager::open_sqlite(&path, settings)
        .await
        .map_err(|e| anyhow::anyhow!("session database {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "session database open");
    Ok(Arc::new(manager))
}

/// Printed by `rakor serve` while no operator account exists.
pub fn first_operator_hint(config: &Config, invocation: &Invocation, http: SocketAddr) -> String {
    let mut cmd = vec![
        crate::app::shell_quote(&invocation.program),
        "operator".into(),
        "add".into(),
    ];
    if let Some(file) = &invocation.config_file {
        cmd.push("--config".into());
        cmd.push(crate::app::shell_quote(&file.display().to_string()));
    }
    cmd.push("--data-dir".into());
    cmd.push(crate::app::shell_quote(
        &config.server.data_dir.display().to_string(),
    ));
    cmd.extend(["--username".into(), "admin".into()]);
    format!(
        "No operator account yet. Create the first one (it asks for the password), then log in at\n\
         {}/console :\n  {}\n\n",
        config.public_base_url(http),
        cmd.join(" ")
    )
}

/// Consume the media core's join/leave events into the attendance register until the media
/// core stops.
pub async fn record_attendance(
    session: Arc<SessionManager>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<rakor_sfu::RoomEvent>,
) {
    while let Some(ev) = events.recv().await {
        let m = match ev {
            rakor_sfu::RoomEvent::Joined {
                room,
                participant,
                identity,
                name,
                role,
                at,
            } => Membership {
                room,
                participant: participant.to_string(),
                identity,
                name: Personal(name),
                role: role.as_str().to_owned(),
                kind: AttendanceKind::Join,
                reason: None,
                at_ms: unix_ms(at),
            },
            rakor_sfu::RoomEvent::Left {
                room,
                participant,
                identity,
                reason,
                at,
            } => Membership {
                room,
                participant: participant.to_string(),
                identity,
                name: Personal::default(),
                role: String::new(),
                kind: AttendanceKind::Leave,
                reason: serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned)),
                at_ms: unix_ms(at),
            },
        };
        if let Err(e) = session.record(m).await {
            tracing::error!("cannot record attendance: {e}");
        }
    }
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

async fn send(sink: &mut Sink, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(t) => sink.send(Message::Text(Utf8Bytes::from(t))).await.is_ok(),
        Err(_) => false,
    }
}

async fn refuse(sink: &mut Sink, stream: &mut Stream, code: ErrorCode, message: &str) {
    let _ = send(
        sink,
        &ServerMessage::Error {
            code,
            message: message.to_owned(),
            request_type: Some("join".into()),
        },
    )
    .await;
    crate::signal::close(sink, stream, code.as_str()).await;
}

fn refusal_code(r: Refusal) -> ErrorCode {
    match r {
        Refusal::NotInvited => ErrorCode::NotInvited,
        Refusal::SessionEnded => ErrorCode::SessionEnded,
        Refusal::NotYetValid => ErrorCode::NotYetValid,
        Refusal::LinkRevoked => ErrorCode::LinkRevoked,
        Refusal::Banned => ErrorCode::Banned,
    }
}

/// Check an arriving participant's invitation and hold it in the lobby if needed. `true` =
/// proceed to `sfu.join`; `false` = the connection was answered and closed here.
pub async fn gate(state: &AppState, claims: &Claims, sink: &mut Sink, stream: &mut Stream) -> bool {
    let arrival = Arrival {
        sid: claims.sid.as_deref(),
        link: claims.lid.as_deref(),
        room: &claims.room,
        identity: &claims.sub,
        is_host: claims.role == Role::Host,
        lobby: claims.lobby,
    };
    let admission = match state.session.gate(&arrival).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("lobby gate: {e}");
            refuse(
                sink,
                stream,
                ErrorCode::Internal,
                "the session manager failed; try again",
            )
            .await;
            return false;
        }
    };
    match admission {
        Admission::Direct => true,
        Admission::Refused(r, message) => {
            tracing::info!(code = %refusal_code(r), "invitation refused");
            refuse(sink, stream, refusal_code(r), &message).await;
            false
        }
        Admission::Wait {
            rakor_id,
            site_id,
            link_id,
        } => wait(state, claims, (rakor_id, site_id, &link_id), sink, stream).await,
    }
}

async fn wait(
    state: &AppState,
    claims: &Claims,
    (rakor_id, site_id, link_id): (i64, Option<i64>, &str),
    sink: &mut Sink,
    stream: &mut Stream,
) -> bool {
    let lobby = state.session.lobby();
    let mut ticket = lobby.enter(rakor_id, &claims.sub, site_id, &claims.name);
    tracing::info!(rakor = rakor_id, identity = %claims.sub, "site waiting in the lobby");
    if !send(
        sink,
        &ServerMessage::Lobby {
            status: LobbyStatus::Waiting,
        },
    )
    .await
    {
        lobby.leave(&ticket);
        return false;
    }
    loop {
        tokio::select! {
            d = &mut ticket.decision => {
                return match d {
                    Ok(Decision::Admit) => {
                        if let Err(e) = state.session.admitted(rakor_id, &claims.sub, link_id).await {
                            tracing::error!("cannot store the admission: {e}");
                        }
                        send(sink, &ServerMessage::Lobby { status: LobbyStatus::Admitted }).await
                    }
                    Ok(Decision::Refuse) => {
                        refuse(sink, stream, ErrorCode::Refused, "the operator did not admit this site to the rakor").await;
                        false
                    }
                    Err(_) => {
                        // The same site arrived again on another connection.
                        let _ = send(sink, &ServerMessage::Leave { reason: LeaveReason::Replaced, resumable: false }).await;
                        crate::signal::close(sink, stream, "replaced").await;
                        false
                    }
                };
            }
            _ = state.shutdown.cancelled() => {
                lobby.leave(&ticket);
                refuse(sink, stream, ErrorCode::ServerShuttingDown, "the server is shutting down").await;
                return false;
            }
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        lobby.leave(&ticket);
                        return false;
                    }
                    Some(Ok(_)) => continue,
                };
                match parse_client_message(text.as_str()) {
                    Ok(ClientMessage::Ping { ts }) => {
                        if !send(sink, &ServerMessage::Pong { ts }).await {
                            lobby.leave(&ticket);
                            return false;
                        }
                    }
                    Ok(ClientMessage::Leave {}) => {
                        lobby.leave(&ticket);
                        let _ = sink.close().await;
                        return false;
                    }
                    Ok(other) => {
                        let _ = send(sink, &ServerMessage::Error {
                            code: ErrorCode::InvalidState,
                            message: "waiting in the lobby for an operator".into(),
                            request_type: Some(other.type_name().to_owned()),
                        }).await;
                    }
                    Err(e) => {
                        let _ = send(sink, &ServerMessage::error(e.code, e.message)).await;
                    }
                }
            }
        }
    }
}
