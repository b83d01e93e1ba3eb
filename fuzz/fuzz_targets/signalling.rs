#![no_main]
//! cargo-fuzz target: see `fuzz/targets.rs` (signalling).

#[path = "../targets.rs"]
#[allow(dead_code)]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::signalling(data));
