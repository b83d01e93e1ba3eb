//! The client half of the media core's unit-test harness (in the style of quinn-proto's
//! `tests/util.rs`): a simulated clock ([`SimClock`]) and in-memory WebRTC client peers
//! ([`ClientPeer`]) on the `rtc` crate's Sans-I/O connection, exchanging datagrams with the
//! server side without sockets, threads or sleeps.
//!
//! Test-only (`#[cfg(test)]` in `lib.rs`). Parts of the API are there for the media core's own
//! tests and are not used by the harness self-test, hence the `dead_code` allowance.

#![allow(dead_code)]

mod clock;
mod peer;
#[cfg(test)]
mod tests;

pub(crate) use clock::SimClock;
#[allow(unused_imports)]
pub(crate) use peer::{
    layer_of, ClientPeer, ClientRole, PublishSpec, ReceivedPacket, ReceivedStream, MID_URI,
    RID_URI, SIMULCAST_RIDS,
};
