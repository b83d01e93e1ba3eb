//! Rakor's media core: rooms, participants and the forwarding of their media.
//!
//! One media worker thread owns every room it hosts and every WebRTC connection of those rooms
//! (webrtc-rs's Sans-I/O `rtc::RTCPeerConnection`s), all on **one UDP socket** (the media port).
//! Datagrams are routed to connections by ICE ufrag, then by 5-tuple ([`demux`]). Signalling talks
//! to the worker only through commands ([`SfuHandle`]); the worker answers on each participant's
//! event channel with ready-to-send [`rakor_proto::ServerMessage`]s. Nothing is shared by lock.
//!
//! The forwarding decisions (which subscriber gets what, SSRC/PT rewriting, keyframe throttling)
//! live in plain structs that take packets and time as input ([`router`], [`keyframe`]).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod codec;
mod config;
mod conn;
pub mod demux;
mod error;
mod handle;
pub mod keyframe;
pub mod liveness;
pub mod metrics;

/// The SDP check the media core does itself before handing an offer to the `rtc` core:
/// how many audio/video sections send media (`None` = not an SDP). Public for the fuzzers.
pub fn count_sending_media(sdp: &str) -> Option<usize> {
    rooms::count_sending_media(sdp).ok()
}

/// The simulcast RIDs per media section that the media core reads from an offer (low to
/// high). Public for the fuzzers.
pub fn simulcast_rids(sdp: &str) -> Vec<(String, Vec<String>)> {
    rooms::simulcast_rids(sdp)
}
pub mod bwe;
mod resume;
mod rooms;
pub mod router;
pub mod speakers;
#[cfg(test)]
pub(crate) mod testkit;
mod worker;

pub use config::SfuConfig;
pub use error::SfuError;
pub use handle::{
    ConnRef, EventSender, JoinRequest, Moderation, RoomEvent, RoomSnapshot, Sfu, SfuHandle,
    SfuStats,
};
