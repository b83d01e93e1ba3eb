//! Rakor's TURN server (RFC 8656), Sans-I/O: the protocol without sockets or clocks.
//!
//! - [`credentials`]: short-lived credentials minted per join (the TURN REST API convention).
//! - [`framing`]: cutting a TCP/TLS byte stream into STUN messages and ChannelData.
//! - [`Session`]: one client transport (a TCP or TLS stream): long-term-credential
//!   authentication (401 + REALM + NONCE, MESSAGE-INTEGRITY, 438 stale nonce), at most one
//!   allocation with its lifetime, permissions and channels, Send/Data indications and
//!   ChannelData. It relays **only** to the configured peers (Rakor's media addresses);
//!   anything else is refused with 403.
//! - [`Quota`]: allocations in total and per user, shared by every session.
//!
//! STUN messages are parsed and built with the `rtc` family's `rtc-stun` / `rtc-turn` code
//! (re-exported by `rtc`), as the media core already depends on it; the server logic (which
//! `rtc-turn` does not have: it only has a client) is here. The I/O shell lives in
//! `rakor-server` (`crates/server/src/turn.rs`).

pub mod credentials;
pub mod framing;
mod quota;
mod session;

pub use quota::{Quota, QuotaRefusal};
pub use session::{Action, At, Session, TurnConfig};

/// Errors of this crate's helpers (protocol refusals are STUN error responses, not errors).
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("crypto: {0}")]
    Crypto(String),
}

#[cfg(test)]
mod tests;
