#![no_main]
//! cargo-fuzz target: see `fuzz/targets.rs` (tcp_frames: RFC 4571 framing of ICE-TCP streams).

#[path = "../targets.rs"]
#[allow(dead_code)]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::tcp_frames(data));
