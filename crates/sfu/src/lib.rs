//! Rakor's media core: rooms, participants and the forwarding of their media.
//!
//! One media worker thread owns every room it hosts and every WebRTC connection of those rooms
//! (webrtc-rs's Sans-I/O `rtc::RTCPeerConnection`s), all on **one UDP socket** (the media port),
//! plus ICE-TCP streams accepted on the same port number for sites whose firewall drops UDP.
//! It is split the way quinn-proto/quinn and str0m split theirs:
//!
//! - [`Core`] (`core/`) is the whole media logic with no I/O and no clock: commands, datagrams
//!   and timeouts go in with `now`; datagrams to send, messages for signalling and the next
//!   deadline come out. Its modules are named by job (join, resume, publish, negotiate,
//!   moderate, dynacast, allocate, speaking, forward).
//! - the shell (`shell.rs`) owns the socket, `poll(2)`, the command channel and the clock.
//! - [`SfuHandle`] is signalling's side: commands in, per-participant events out.
//!
//! The per-packet and per-tick decisions (which subscriber gets what, SSRC/PT/sequence
//! rewriting, keyframe throttling, simulcast layers, bandwidth allotment, loudest speakers)
//! live in plain structs that take packets and time as input ([`router`], [`keyframe`],
//! [`bwe`], [`speakers`]).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bwe;
pub mod codec;
mod config;
mod conn;
mod core;
pub mod demux;
mod error;
mod handle;
pub mod ice_tcp;
pub mod keyframe;
pub mod liveness;
pub mod metrics;
mod mmsg;
mod nack;
pub mod priority;
pub mod record;
pub mod router;
pub mod sdp;
mod shell;
mod shell_tcp;
pub mod slab;
pub mod sockopt;
pub mod speakers;
#[cfg(test)]
pub(crate) mod testkit;
mod wake;
pub mod workers;

pub use crate::core::record::{RecordingError, RecordingStatus};
pub use crate::core::{Core, Transmit};
pub use config::{ChatLimits, SfuConfig};
pub use error::SfuError;
pub use handle::{
    ConnRef, EventSender, JoinRequest, Moderation, RoomEvent, RoomSnapshot, Sfu, SfuHandle,
    SfuStats, Subject, TimelineKind,
};
pub use record::RecordingSettings;

/// The SDP check the media core does itself before handing an offer to the `rtc` core:
/// how many audio/video sections send media (`None` = not an SDP). Public for the fuzzers.
pub fn count_sending_media(sdp: &str) -> Option<usize> {
    sdp::count_sending_media(sdp)
}

/// The simulcast RIDs per media section that the media core reads from an offer (low to
/// high). Public for the fuzzers.
pub fn simulcast_rids(sdp: &str) -> Vec<(String, Vec<String>)> {
    sdp::simulcast_rids(sdp)
}
