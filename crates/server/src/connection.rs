//! One signalling WebSocket as the server speaks on it: [`Connection::send`] a message,
//! [`Connection::error`] to this client only, [`Connection::close`] with a reason (completing
//! the closing handshake), and the one refusal path, [`Connection::refuse`]: send an `error`,
//! then close. `signal.rs` (before and after `join`) and `lobby.rs` (while a site waits) both
//! speak through it.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rakor_proto::{ErrorCode, ServerMessage};
use std::time::Duration;

/// How long the server waits for the client's half of the closing handshake.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Why a connection is turned away: the `error` it gets, then the reason in the Close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// The `type` of the client message refused (`join`, …), if one was.
    pub request_type: Option<&'static str>,
    /// The Close frame's reason.
    pub close_reason: &'static str,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>, close_reason: &'static str) -> Self {
        Self {
            code,
            message: message.into(),
            request_type: None,
            close_reason,
        }
    }

    /// The same refusal, as the answer to a client message of type `request_type`.
    pub fn to(mut self, request_type: &'static str) -> Self {
        self.request_type = Some(request_type);
        self
    }

    /// The server is shutting down: no new joins.
    pub fn shutting_down() -> Self {
        Self::new(
            ErrorCode::ServerShuttingDown,
            "the server is shutting down",
            "server shutting down",
        )
    }
}

/// Why a connection stops before its participant joins.
#[derive(Debug)]
pub enum Stop {
    /// Turn the client away ([`Connection::refuse`]).
    Refuse(Refusal),
    /// Nothing more to say: the client went away, or the connection was already answered and
    /// closed.
    Gone,
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Self {
        Stop::Refuse(r)
    }
}

/// A signalling WebSocket, split so that reading and writing can wait in one `select!`.
pub struct Connection {
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
}

impl Connection {
    pub fn new(socket: WebSocket) -> Self {
        let (sink, stream) = socket.split();
        Self { sink, stream }
    }

    /// Send one message as a JSON text frame. `false` when it could not be sent (the peer is
    /// gone).
    pub async fn send(&mut self, msg: &ServerMessage) -> bool {
        match serde_json::to_string(msg) {
            Ok(text) => self
                .sink
                .send(Message::Text(Utf8Bytes::from(text)))
                .await
                .is_ok(),
            Err(e) => {
                tracing::error!("serialize server message: {e}");
                false
            }
        }
    }

    /// Send an `error` to this client (the connection stays open). `false` when it could not
    /// be sent.
    pub async fn error(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
        request_type: Option<&str>,
    ) -> bool {
        let m = ServerMessage::Error {
            code,
            message: message.into(),
            request_type: request_type.map(str::to_owned),
        };
        self.send(&m).await
    }

    /// Turn the client away: its `error`, then the close (whether or not the error was sent).
    pub async fn refuse(&mut self, refusal: Refusal) {
        let Refusal {
            code,
            message,
            request_type,
            close_reason,
        } = refusal;
        self.error(code, message, request_type).await;
        self.close(close_reason).await;
    }

    /// Act on a [`Stop`]: refuse, or nothing.
    pub async fn stop(&mut self, stop: Stop) {
        if let Stop::Refuse(refusal) = stop {
            self.refuse(refusal).await;
        }
    }

    /// Close with a reason and complete the WebSocket closing handshake: send our Close, then
    /// read (and discard) until the client's Close arrives or [`CLOSE_HANDSHAKE`] passes.
    ///
    /// Dropping the TCP connection while the client's frames (trickle candidates, say) sit
    /// unread makes the kernel answer with a reset, and a reset can reach the client before it
    /// has read the frames we sent last (`leave`, `error`) — the client would then think the
    /// link failed and try to resume a session the server ended on purpose.
    pub async fn close(&mut self, reason: &str) {
        let frame = CloseFrame {
            code: 1000,
            reason: Utf8Bytes::from(reason.to_owned()),
        };
        if self.sink.send(Message::Close(Some(frame))).await.is_ok() {
            let stream = &mut self.stream;
            let drain = async {
                while let Some(Ok(m)) = stream.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, drain).await;
        }
        let _ = self.sink.close().await;
    }

    /// Close at once, without a reason and without waiting for the client (it said `leave`).
    pub async fn hang_up(&mut self) {
        let _ = self.sink.close().await;
    }

    /// Send a WebSocket ping.
    pub async fn ping(&mut self) -> Result<(), axum::Error> {
        self.sink.send(Message::Ping(Default::default())).await
    }

    /// The next frame from the client; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Message, axum::Error>> {
        self.stream.next().await
    }
}
