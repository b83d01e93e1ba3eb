//! `rakor-server`: everything behind the `rakor` binary — configuration, command line, access
//! tokens, the HTTP/WebSocket service and shutdown. `main.rs` only calls [`cli::main`].
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | the typed config tree: defaults, TOML file, `RAKOR_*` env, flags, validation |
//! | [`signing_key`] | the token signing key (configured, or generated into the data dir) |
//! | [`token`] | minting and verifying HS256 access tokens |
//! | [`cli`] | `rakor serve`, `rakor token`, `rakor bot` |
//! | [`app`] | [`app::AppState`] and the `serve` flow (start, banner, run, drain) |
//! | [`http`] | the axum router: `/healthz`, `/rtc`, request tracing |
//! | [`serve`] | the accept loop: connection caps, header-read and idle timeouts, open-file limit |
//! | [`client_addr`] | the client's address: TCP peer or trusted proxy's `X-Forwarded-For` |
//! | [`limits`] | unauthenticated connections, join attempts per IP |
//! | [`soak`] | `rakor soak`: bounded soak test of a running server |
//! | [`loadtest`] | `rakor loadtest`: bounded load test of a server on this machine |
//! | [`shutdown`] | SIGINT/SIGTERM and the ordered drain |
//! | [`signal`] | WebSocket signalling on `/rtc` |
//! | [`web`] | the embedded browser client: `/`, `/join`, `/static/…` |
//! | [`api`] | the session manager's REST API under `/api/v1`, `/api/openapi.json` |
//! | [`lobby`] | the invitation gate and lobby before `join`; attendance from room events |
//! | [`console`] | the operator console page `/console` |
//! | [`operator_cli`] | `rakor operator add` |

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod api;
pub mod app;
pub mod cli;
pub mod client_addr;
pub mod config;
pub mod console;
pub mod http;
pub mod limits;
pub mod loadtest;
pub mod lobby;
pub mod operator_cli;
pub mod serve;
pub mod shutdown;
pub mod signal;
pub mod signing_key;
pub mod soak;
pub mod token;
pub mod web;
