//! `rakor-client`: a headless Rakor participant on the async `webrtc` crate.
//!
//! Used by the integration tests (against the real `rakor` binary), by `rakor bot` and by the load
//! tool. It speaks the signalling protocol of `rakor-proto` over `ws://HOST:PORT/rtc`, publishes
//! a looped pre-encoded VP8/Opus asset on the publisher connection, answers the server's
//! subscriber offers, and counts what it sends and receives — including a byte-exact check of every
//! received payload against the known asset packetization.
//!
//! Layout: [`client`] (the [`Client`] handle), `session` (the signalling task behind it),
//! [`peer`] (building peer connections), [`media`] (pacing and counting), [`stats`] (the
//! [`Report`]), [`packetizer`] and [`assets`] (the synthetic media), [`bot`] (`rakor bot`), [`tls`] (the CAs
//! trusted for `wss://`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod assets;
pub mod bot;
pub mod client;
mod error;
pub mod media;
pub mod packetizer;
pub mod peer;
pub mod relay;
pub mod relay_control;
pub mod relay_levels;
mod room;
pub mod runtime;
mod session;
pub mod stats;
pub mod tls;
pub mod turn_tcp;

pub use client::{Client, ClientOptions, Joined};
pub use error::ClientError;
pub use room::RoomView;
pub use stats::{FrameGap, LayerChange, ReceivedTrackStats, Report, SentTrackStats, StatsHub};
