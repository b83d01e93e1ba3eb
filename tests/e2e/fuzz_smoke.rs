//! Stable smoke run of the fuzz targets (`fuzz/targets.rs`): each target gets its seed corpus,
//! every file in `fuzz/regressions/<target>/` (inputs that once crashed it), and
//! `RAKOR_FUZZ_ITERS` (default 3000) seeded random mutations of them. Deterministic per seed
//! (`RAKOR_FUZZ_SEED`, default 1); a failure prints the seed and the input as hex.
//! Longer runs: `RAKOR_FUZZ_ITERS=2000000 cargo nextest run --release -p rakor-e2e --test fuzz_smoke`
//! on stable, or with a time budget per target instead of a count, `RAKOR_FUZZ_SECONDS=600`
//! (each test prints the iterations it ran; run one target at a time with a test-name filter),
//! or `cargo +nightly fuzz run <target>` (docs/operations.md, "Fuzzing").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/targets.rs"]
mod targets;

use std::path::Path;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"\r\n",
    b"m=",
    b"a=inactive",
    b"v=0",
    b"\xff\xfe",
    b"\x00",
    b"\x80",
    b"\x21\x12\xa4\x42",
    b"\"type\"",
    b"\"join\"",
    b"\"offer\"",
    b"\"candidate\"",
    b"\"pc\"",
    b"\"publisher\"",
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    let base = &corpus[rng.below(corpus.len())];
    input.clear();
    input.extend_from_slice(base);
    for _ in 0..=rng.below(4) {
        match rng.below(8) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(input.len() + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if !input.is_empty() => {
                let i = rng.below(input.len());
                let n = rng.below(input.len() - i + 1);
                input.drain(i..i + n);
            }
            4 => {
                let n = rng.below(input.len() + 1);
                input.truncate(n);
            }
            5 => {
                let tok = INTERESTING[rng.below(INTERESTING.len())];
                let i = rng.below(input.len() + 1);
                input.splice(i..i, tok.iter().copied());
            }
            6 => {
                // Splice a piece of another corpus entry.
                let other = &corpus[rng.below(corpus.len())];
                let a = rng.below(other.len() + 1);
                let b = a + rng.below(other.len() - a + 1);
                let i = rng.below(input.len() + 1);
                input.splice(i..i, other[a..b].iter().copied());
            }
            _ => {
                // Duplicate a chunk (long inputs, repeated sections).
                if !input.is_empty() {
                    let a = rng.below(input.len());
                    let b = a + rng.below((input.len() - a).min(64) + 1);
                    let chunk = input[a..b].to_vec();
                    input.extend_from_slice(&chunk);
                }
            }
        }
    }
}

fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect()
}

fn smoke(target: &str, f: fn(&[u8]), seeds: Vec<Vec<u8>>) {
    let iters: usize = std::env::var("RAKOR_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("RAKOR_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut corpus = seeds;
    corpus.extend(regressions(target));
    corpus.push(Vec::new());
    for c in &corpus {
        f(c);
    }
    // A time budget, if given, replaces the iteration count.
    let budget = std::env::var("RAKOR_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let started = std::time::Instant::now();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut input = Vec::new();
    let mut executed = 0usize;
    for i in 0.. {
        match budget {
            Some(b) if i % 1024 == 0 && started.elapsed() >= b => break,
            None if i >= iters => break,
            _ => {}
        }
        executed = i + 1;
        mutate(&mut rng, &corpus, &mut input);
        let r = std::panic::catch_unwind(|| f(&input));
        if r.is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{target}: iteration {i} (RAKOR_FUZZ_SEED={seed}) crashed on input {hex}; save it under fuzz/regressions/{target}/");
        }
        // Keep some mutants as new bases, as a fuzzer keeps new coverage.
        if corpus.len() < 256 && rng.below(50) == 0 {
            corpus.push(input.clone());
        }
    }
    eprintln!(
        "fuzz {target}: {executed} mutations in {:.1} s (RAKOR_FUZZ_SEED={seed}), no crash",
        started.elapsed().as_secs_f64()
    );
}

fn text(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn signalling_parser() {
    smoke(
        "signalling",
        targets::signalling,
        text(&[
            r#"{"type":"join","version":1,"token":"eyJhbGciOiJIUzI1NiJ9.e30.x","room":"r"}"#,
            r#"{"type":"offer","pc":"publisher","sdp":"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}"#,
            r#"{"type":"answer","pc":"subscriber","sdp":"v=0\r\n"}"#,
            r#"{"type":"candidate","pc":"publisher","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#,
            r#"{"type":"unpublish","track_id":"TR_3kq9XfL0aB2c"}"#,
            r#"{"type":"mute_track","track_id":"TR_3kq9XfL0aB2c","muted":true}"#,
            r#"{"type":"spotlight","participant_id":null}"#,
            r#"{"type":"spotlight","participant_id":"PA_Zx81mQa0s7Lp"}"#,
            r#"{"type":"ping","ts":1732350000123}"#,
            r#"{"type":"leave"}"#,
        ]),
    );
}

fn stun(user: &str) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
    attr.extend_from_slice(user.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut body = vec![0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
    body.extend_from_slice(&attr);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&body);
    m
}

#[test]
fn stun_demux() {
    smoke(
        "demux",
        targets::demux,
        vec![
            stun("srvufrag:client"),
            stun("other:x"),
            stun(":"),
            vec![22, 0xfe, 0xfd, 0, 0],
            vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
        ],
    );
}

#[test]
fn ice_tcp_framing() {
    smoke(
        "tcp_frames",
        targets::tcp_frames,
        vec![
            vec![3, 0, 4, b's', b't', b'u', b'n', 0, 1, 0x80],
            vec![0, 0, 0],
            vec![1, 0x08, 0x01, 0],
            vec![5, 0, 2, 1, 2, 0, 2, 3, 4],
        ],
    );
}

#[test]
fn sdp_precheck() {
    smoke(
        "sdp",
        targets::sdp,
        text(&[
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
            "v=0\nm=video 9 RTP/AVP 96\na=recvonly\nm=audio 9 RTP/AVP 0\n",
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:q send\r\na=simulcast:send q;~h,x;f;a;b\r\n",
        ]),
    );
}

#[test]
fn rtp_header_rewrite() {
    // selector byte, then an RTP packet: plain, with a one-byte header extension, with CSRCs,
    // with padding.
    let plain = [
        0u8, 0x80, 96, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
    ];
    let ext = [
        5u8, 0x90, 0xe0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0, 9, 9,
    ];
    let csrc = [
        200u8, 0x82, 111, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 7,
    ];
    let pad = [9u8, 0xa0, 96, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 1, 2, 0, 0, 3];
    smoke(
        "rtp_rewrite",
        targets::rtp_rewrite,
        vec![plain.to_vec(), ext.to_vec(), csrc.to_vec(), pad.to_vec()],
    );
}
