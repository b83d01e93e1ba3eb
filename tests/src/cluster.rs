//! Helpers shared by the multi-node tests (tests/e2e/cluster.rs, tests/e2e/cascade.rs).

use rakor_client::Report;
use rakor_proto::{ParticipantId, TrackKind};

/// 12 random hex digits, to keep each test's Redis keys and PostgreSQL database apart.
pub fn random_suffix() -> String {
    use std::io::Read as _;
    let mut b = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // No /dev/urandom: the clock's nanoseconds still separate concurrent runs.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b.copy_from_slice(&n.to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `r` received at least 30 exact-payload audio and video packets from `from`, and a keyframe.
pub fn has_media_from(r: &Report, from: &ParticipantId) -> bool {
    let v = r.received_track(from, TrackKind::Video);
    let a = r.received_track(from, TrackKind::Audio);
    v.is_some_and(|v| v.packets >= 30 && v.keyframes >= 1 && v.payload_matches >= 30)
        && a.is_some_and(|a| a.packets >= 30 && a.payload_matches >= 30)
}
