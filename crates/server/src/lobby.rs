//! The lobby: [`gate`], the one call signalling makes after verifying a token and before
//! `sfu.join(..)`. Plain tokens (no `sid` claim) pass at once. Invitations are checked against
//! the stored rakor (exists, same room, not ended, link window open, site still invited); a
//! site whose link asks for the lobby and that was not admitted before waits, receiving `lobby
//! {status:"waiting"}`, until an operator admits it (`lobby {status:"admitted"}`, then the join
//! proceeds) or refuses it (`error {code:"refused"}` and close). While waiting it may send
//! `ping` (answered) and `leave`. Refusals go through signalling's one refusal path
//! ([`crate::connection::Connection::refuse`]).
//!
//! The lobby is under the limits of a connection that has not joined: the waiting connection
//! keeps its pre-join slot (total and per address, [`crate::limits`]); a wait lasts at most
//! `limits.lobby_max_wait` (then `lobby_timeout` and close); frames above
//! [`LOBBY_MAX_FRAME_BYTES`] get `frame_too_large` and close; more than
//! [`LOBBY_MESSAGES_PER_SECOND`] messages a second (after a burst of twice that) get
//! `rate_limited` and close.
//!
//! Attendance (`crate::attendance`) and opening the database (`crate::storage`) live beside it.

use crate::connection::{Connection, Refusal as ConnRefusal, Stop};
use crate::state::AppState;
use crate::token::Claims;
use axum::extract::ws::Message;
use rakor_proto::{
    parse_client_message, ClientMessage, ErrorCode, LeaveReason, LobbyStatus, Role, ServerMessage,
};
use rakor_session::lobby::Decision;
use rakor_session::{Admission, Arrival, Refusal};

/// Largest frame a waiting site may send (it needs `ping` and `leave`, well under 100 bytes).
pub const LOBBY_MAX_FRAME_BYTES: usize = 1024;
/// Messages a second a waiting site may send (the web client pings every 2.5 s).
pub const LOBBY_MESSAGES_PER_SECOND: u32 = 5;

/// A refusal in the lobby: an `error` answering `join`, closed with the code as the reason.
fn refused(code: ErrorCode, message: impl Into<String>) -> Stop {
    ConnRefusal::new(code, message, code.as_str())
        .to("join")
        .into()
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

/// Check an arriving participant's invitation and hold it in the lobby if needed. `Ok` =
/// proceed to `sfu.join`; `Err` = refuse, or the connection already ended here.
pub async fn gate(state: &AppState, claims: &Claims, conn: &mut Connection) -> Result<(), Stop> {
    let arrival = Arrival {
        sid: claims.sid.as_deref(),
        link: claims.lid.as_deref(),
        room: &claims.room,
        identity: &claims.sub,
        is_host: claims.role == Role::Host,
        lobby: claims.lobby,
    };
    let admission = state.session.gate(&arrival).await.map_err(|e| {
        tracing::error!("lobby gate: {e}");
        refused(ErrorCode::Internal, "the session manager failed; try again")
    })?;
    match admission {
        Admission::Direct => Ok(()),
        Admission::Refused(r, message) => {
            tracing::info!(code = %refusal_code(r), "invitation refused");
            Err(refused(refusal_code(r), message))
        }
        Admission::Wait {
            rakor_id,
            site_id,
            link_id,
        } => wait(state, claims, (rakor_id, site_id, &link_id), conn).await,
    }
}

/// A waiting site's frame (`None`: binary) against the lobby's rate and size limits: `Err` =
/// refuse and close.
fn check_lobby_frame(text: Option<&str>, limit: &mut crate::signal::RateLimit) -> Result<(), Stop> {
    if !limit.allow(std::time::Instant::now()) {
        let msg = format!(
            "more than {LOBBY_MESSAGES_PER_SECOND} messages a second while waiting in the lobby"
        );
        return Err(ConnRefusal::new(ErrorCode::RateLimited, msg, "rate limited").into());
    }
    if let Some(t) = text {
        if t.len() > LOBBY_MAX_FRAME_BYTES {
            let msg = format!(
                "frame of {} bytes exceeds {LOBBY_MAX_FRAME_BYTES} bytes allowed while waiting in the lobby",
                t.len()
            );
            return Err(ConnRefusal::new(ErrorCode::FrameTooLarge, msg, "frame too large").into());
        }
    }
    Ok(())
}

async fn wait(
    state: &AppState,
    claims: &Claims,
    (rakor_id, site_id, link_id): (i64, Option<i64>, &str),
    conn: &mut Connection,
) -> Result<(), Stop> {
    let lobby = state.session.lobby();
    let max_wait = state.config.limits.lobby_max_wait;
    let deadline = tokio::time::Instant::now() + max_wait;
    let mut limit = crate::signal::RateLimit::new(LOBBY_MESSAGES_PER_SECOND);
    let mut ticket = lobby.enter(rakor_id, &claims.sub, site_id, &claims.name);
    tracing::info!(rakor = rakor_id, identity = %claims.sub, "site waiting in the lobby");
    if !conn
        .send(&ServerMessage::Lobby {
            status: LobbyStatus::Waiting,
        })
        .await
    {
        lobby.leave(&ticket);
        return Err(Stop::Gone);
    }
    loop {
        tokio::select! {
            d = &mut ticket.decision => {
                return match d {
                    Ok(Decision::Admit) => {
                        if let Err(e) = state.session.admitted(rakor_id, &claims.sub, link_id).await {
                            tracing::error!("cannot store the admission: {e}");
                        }
                        let sent = conn.send(&ServerMessage::Lobby { status: LobbyStatus::Admitted }).await;
                        if sent { Ok(()) } else { Err(Stop::Gone) }
                    }
                    Ok(Decision::Refuse) => {
                        Err(refused(ErrorCode::Refused, "the operator did not admit this site to the rakor"))
                    }
                    Err(_) => {
                        // The same site arrived again on another connection.
                        let _ = conn.send(&ServerMessage::Leave { reason: LeaveReason::Replaced, resumable: false }).await;
                        conn.close("replaced").await;
                        Err(Stop::Gone)
                    }
                };
            }
            _ = state.shutdown.cancelled() => {
                lobby.leave(&ticket);
                return Err(refused(ErrorCode::ServerShuttingDown, "the server is shutting down"));
            }
            _ = tokio::time::sleep_until(deadline) => {
                lobby.leave(&ticket);
                tracing::info!(rakor = rakor_id, identity = %claims.sub, "lobby wait over {max_wait:?}; closing");
                let msg = format!(
                    "no operator admitted this site within {} (limits.lobby_max_wait); join again to wait again",
                    humantime::format_duration(max_wait)
                );
                return Err(refused(ErrorCode::LobbyTimeout, msg));
            }
            frame = conn.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => Some(t),
                    Some(Ok(Message::Binary(_))) => None,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        lobby.leave(&ticket);
                        return Err(Stop::Gone);
                    }
                    Some(Ok(_)) => {
                        // WebSocket ping/pong (answered by the WebSocket layer): counted too.
                        if let Err(stop) = check_lobby_frame(Some(""), &mut limit) {
                            lobby.leave(&ticket);
                            return Err(stop);
                        }
                        continue;
                    }
                };
                if let Err(stop) = check_lobby_frame(text.as_ref().map(|t| t.as_str()), &mut limit) {
                    lobby.leave(&ticket);
                    tracing::info!(rakor = rakor_id, identity = %claims.sub, "lobby frame refused; closing");
                    return Err(stop);
                }
                let Some(text) = text else {
                    let _ = conn.error(ErrorCode::BadRequest, crate::signal::BINARY_REFUSED, None).await;
                    continue;
                };
                match parse_client_message(text.as_str()) {
                    Ok(ClientMessage::Ping { ts }) => {
                        if !conn.send(&ServerMessage::Pong { ts }).await {
                            lobby.leave(&ticket);
                            return Err(Stop::Gone);
                        }
                    }
                    Ok(ClientMessage::Leave {}) => {
                        lobby.leave(&ticket);
                        conn.hang_up().await;
                        return Err(Stop::Gone);
                    }
                    Ok(other) => {
                        let _ = conn.error(
                            ErrorCode::InvalidState,
                            "waiting in the lobby for an operator",
                            Some(other.type_name()),
                        ).await;
                    }
                    Err(e) => {
                        let _ = conn.error(e.code, e.message, None).await;
                    }
                }
            }
        }
    }
}
