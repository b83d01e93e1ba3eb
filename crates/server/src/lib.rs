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
//! | [`shutdown`] | SIGINT/SIGTERM and the ordered drain |
//! | [`signal`] | WebSocket signalling on `/rtc` |
//! | [`web`] | the embedded browser client: `/`, `/join`, `/static/…` |

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod shutdown;
pub mod signal;
pub mod signing_key;
pub mod token;
pub mod web;
