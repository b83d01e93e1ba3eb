#![no_main]
//! cargo-fuzz target: see `fuzz/targets.rs` (sdp).

#[path = "../targets.rs"]
#[allow(dead_code)]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::sdp(data));
