//! The lobby: [`gate`], the one call signalling makes after verifying a token and before
//!   `sfu.join(..)`. Plain tokens (no `sid` claim) pass at once. Invitations are checked
//!   against the stored rakor (exists, same room, not ended, link window open, site still
//!   invited); a site whose link asks for the lobby and that was not admitted before waits,
//!   receiving `lobby {status:"waiting"}`, until an operator admits it (`lobby
//!   {status:"admitted"}`, then the join proceeds) or refuses it (`error {code:"refused"}` and
//!   close). While waiting it may send `ping` (answered) and `leave`.
//!
//! Attendance (`crate::attendance`) and opening the database (`crate::storage`) live beside it.

use crate::state::AppState;
use crate::token::Claims;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rakor_proto::{
    parse_client_message, ClientMessage, ErrorCode, LeaveReason, LobbyStatus, Role, ServerMessage,
};
use rakor_session::lobby::Decision;
use rakor_session::{Admission, Arrival, Refusal};

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
    }
}

/// Check an arriving participant's invitation and hold it in the lobby if needed. `true` =
/// proceed to `sfu.join`; `false` = the connection was answered and closed here.
pub async fn gate(state: &AppState, claims: &Claims, sink: &mut Sink, stream: &mut Stream) -> bool {
    let arrival = Arrival {
        sid: claims.sid.as_deref(),
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
        Admission::Wait { rakor_id, site_id } => {
            wait(state, claims, rakor_id, site_id, sink, stream).await
        }
    }
}

async fn wait(
    state: &AppState,
    claims: &Claims,
    rakor_id: i64,
    site_id: Option<i64>,
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
                        if let Err(e) = state.session.admitted(rakor_id, &claims.sub).await {
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
