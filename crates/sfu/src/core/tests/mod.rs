//! Core tests on the simulated rig: join, resume, negotiation, moderation, dynacast,
//! simulcast and bandwidth, in simulated time (milliseconds of wall time each).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod present;
mod relay;
mod relay_levels;
mod rig;
mod scenarios;
