//! `rakor-server`: everything behind the `rakor` binary — configuration, command line, access
//! tokens, the HTTP/WebSocket service and shutdown. `main.rs` only calls [`cli::main`].
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | the typed config tree: defaults, TOML file, `RAKOR_*` env, flags, validation |
//! | [`signing_key`] | the token signing key (configured, or generated into the data dir) |
//! | [`token`] | minting and verifying HS256 access tokens |
//! | [`cli`] | the command line: `rakor serve`, `rakor token`, `rakor operator`, and the tools' subcommands |
//! | [`check_config`] | `rakor check-config`: the effective configuration and its problems on this host |
//! | [`app`] | the `serve` flow (start, banner, run, drain) |
//! | [`state`] | [`state::AppState`], shared by every handler (a leaf: imports no handler) |
//! | [`http`] | the axum router: `/healthz`, `/rtc`, request tracing |
//! | [`serve`] | the accept loop: connection caps, header-read and idle timeouts, open-file limit |
//! | [`client_addr`] | the client's address: TCP peer or trusted proxy's `X-Forwarded-For` |
//! | [`limits`] | connections that have not joined (total, per address, resume shares), join attempts per IP |
//! | [`tools`] | feature `tools` (default): `rakor bot`, `rakor soak`, `rakor loadtest` |
//! | [`shutdown`] | SIGINT/SIGTERM and the ordered drain |
//! | [`signal`] | WebSocket signalling on `/rtc` |
//! | [`connection`] | one signalling WebSocket: send, error, close, and the one refusal path |
//! | [`web`] | the embedded browser client: `/`, `/join`, `/static/…` |
//! | [`api`] | the session manager's REST API under `/api/v1`, `/api/openapi.json` |
//! | [`lobby`] | the invitation gate and lobby before `join` |
//! | [`attendance`] | the attendance register, fed by the media core's join/leave events |
//! | [`byte_stream`] | one type for TCP and TLS streams; the hand-off to the TURN server |
//! | [`tls`] | built-in HTTPS: the certificate files, rustls, reload on SIGHUP |
//! | [`one_port`] | one TCP port for everything: first-byte classification (TLS, ICE-TCP, HTTP; after TLS: TURN or HTTP), prefix replay |
//! | [`turn`] | the built-in TURN server's I/O (listener, streams, relay sockets) and credentials per join |
//! | [`storage`] | opening the session database at start-up |
//! | [`console`] | the operator console page `/console` |
//! | [`operator_cli`] | `rakor operator add` |

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod api;
pub mod app;
pub mod attendance;
pub mod byte_stream;
pub mod cascade;
pub mod cascade_moderation;
pub mod cascade_room;
pub mod check_config;
pub mod cli;
pub mod client_addr;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod console;
pub mod http;
pub mod limits;
pub mod lobby;
pub mod one_port;
pub mod operator_cli;
pub mod recording;
pub mod serve;
pub mod shutdown;
pub mod signal;
pub mod signing_key;
pub mod state;
pub mod storage;
pub mod tls;
pub mod token;
#[cfg(feature = "tools")]
pub mod tools;
pub mod turn;
pub mod web;
