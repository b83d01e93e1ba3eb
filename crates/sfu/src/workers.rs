//! Several media workers (`media.workers`, one per core by default): which worker owns a room,
//! how a packet or a stream finds it, and the sum of their counters.
//!
//! Each worker is a shell thread with its own [`crate::Core`], its own UDP socket and ICE-TCP
//! listener on its **own port** (`media.port + index`; all OS-picked with port 0). A room lives
//! on exactly one worker; every connection of the room's participants is on that worker, and
//! the server's ICE candidates in their SDPs carry that worker's port, so datagrams reach the
//! owner without any steering in the kernel or in user space. Two things arrive somewhere
//! shared and are steered here:
//!
//! - an ICE-TCP stream accepted on the one public HTTPS port ([`crate::SfuHandle::adopt_tcp_stream_framed`]):
//!   the server's ufrag, the first part of its first STUN message's USERNAME, starts with the
//!   owning worker's tag ([`tag_ufrag`], [`worker_of_ufrag`]);
//! - commands from signalling and the API: by room ([`Placement`]); a participant's messages
//!   go through a handle pinned to its room's worker ([`crate::SfuHandle::for_room`]).

use crate::SfuStats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The characters of a worker tag (ICE ufrag characters, RFC 8445: ALPHA / DIGIT / + /).
const TAG_CHARS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Most workers (two tag characters).
pub const MAX_WORKERS: usize = 62 * 62;
/// A placement younger than this is kept even if its worker has not seen the room yet (the
/// join is on its way through the command channel).
const PLACEMENT_GRACE: Duration = Duration::from_secs(10);

/// Write worker `index`'s tag over the first two characters of `ufrag` (16 random
/// alphanumerics: 14 stay random, still unique enough on one worker).
pub fn tag_ufrag(ufrag: &mut String, index: usize) {
    let hi = TAG_CHARS.get(index / 62 % 62).copied().unwrap_or(b'0');
    let lo = TAG_CHARS.get(index % 62).copied().unwrap_or(b'0');
    let rest: String = ufrag.chars().skip(2).collect();
    ufrag.clear();
    ufrag.push(char::from(hi));
    ufrag.push(char::from(lo));
    ufrag.push_str(&rest);
}

/// The worker whose tag starts `ufrag` (None: too short or not a tag).
pub fn worker_of_ufrag(ufrag: &str) -> Option<usize> {
    let b = ufrag.as_bytes();
    let pos = |c: u8| TAG_CHARS.iter().position(|&t| t == c);
    Some(pos(*b.first()?)? * 62 + pos(*b.get(1)?)?)
}

/// Which worker owns which room. Signalling places a room when it is first joined (or a
/// recording is started for it): on the worker with the fewest rooms. Each worker forgets its
/// rooms that are gone (no participant, no chat history, no parked participant, no
/// recording) about once a second ([`Placement::retain_for`]), so an emptied room may later
/// be placed elsewhere. A resumed participant's room is still there (it was kept for the
/// resume), so it returns to the same worker. Not on the media path: the lock is taken per
/// command or join, and by each worker once a second.
#[derive(Debug)]
pub struct Placement {
    workers: usize,
    /// `limits.max_rooms` over all workers (each worker also checks it for its own rooms).
    max_rooms: usize,
    inner: Mutex<HashMap<String, (usize, Instant)>>,
    /// Rooms each worker has now (stored by the worker every loop, relaxed).
    live: Vec<AtomicUsize>,
}

impl Placement {
    pub fn new(workers: usize, max_rooms: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            max_rooms,
            inner: Mutex::new(HashMap::new()),
            live: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Worker `index` has `rooms` rooms now.
    pub fn set_live(&self, index: usize, rooms: usize) {
        if let Some(a) = self.live.get(index) {
            a.store(rooms, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (usize, Instant)>> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The worker of `room`, placing it (fewest rooms first, then the lowest index) if new.
    /// A new room when all workers together have `max_rooms` →
    /// [`crate::SfuError::TooManyRooms`].
    pub fn place(&self, room: &str, now: Instant) -> Result<usize, crate::SfuError> {
        if self.workers == 1 {
            return Ok(0);
        }
        let mut map = self.lock();
        if let Some((w, _)) = map.get(room) {
            return Ok(*w);
        }
        let live: usize = self.live.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        if live >= self.max_rooms {
            return Err(crate::SfuError::TooManyRooms(self.max_rooms));
        }
        let mut counts = vec![0usize; self.workers];
        for (w, _) in map.values() {
            if let Some(c) = counts.get_mut(*w) {
                *c += 1;
            }
        }
        let w = counts
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (**c, *i))
            .map_or(0, |(i, _)| i);
        map.insert(room.to_owned(), (w, now));
        Ok(w)
    }

    /// The worker of `room` if it is placed.
    pub fn get(&self, room: &str) -> Option<usize> {
        if self.workers == 1 {
            return Some(0);
        }
        self.lock().get(room).map(|(w, _)| *w)
    }

    /// Worker `index` keeps the rooms it still has (`has`) and those placed within
    /// [`PLACEMENT_GRACE`]; the others are forgotten.
    pub fn retain_for(&self, index: usize, now: Instant, has: impl Fn(&str) -> bool) {
        if self.workers == 1 {
            return;
        }
        self.lock().retain(|room, (w, at)| {
            *w != index || has(room) || now.saturating_duration_since(*at) < PLACEMENT_GRACE
        });
    }

    /// Rooms placed per worker (for tests and metrics).
    pub fn rooms_per_worker(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.workers];
        for (w, _) in self.lock().values() {
            if let Some(c) = counts.get_mut(*w) {
                *c += 1;
            }
        }
        counts
    }
}

/// The counters of all workers as one: counts and totals add up; the forwarding latency is
/// the slowest worker's p99 and the sample-weighted mean of the p50s.
pub fn sum_stats(per_worker: &[SfuStats]) -> SfuStats {
    let mut t = SfuStats::default();
    let mut p50_weighted = 0u128;
    for s in per_worker {
        t.rooms += s.rooms;
        t.participants += s.participants;
        t.connections += s.connections;
        t.rtp_in += s.rtp_in;
        t.rtp_out += s.rtp_out;
        t.datagrams_in += s.datagrams_in;
        t.datagrams_out += s.datagrams_out;
        t.datagrams_unknown_source += s.datagrams_unknown_source;
        t.send_errors += s.send_errors;
        t.socket_drops += s.socket_drops;
        t.tcp_streams += s.tcp_streams;
        t.tcp_frames_in += s.tcp_frames_in;
        t.tcp_frames_unknown_source += s.tcp_frames_unknown_source;
        t.tcp_frames_dropped += s.tcp_frames_dropped;
        t.tcp_streams_refused += s.tcp_streams_refused;
        t.fwd_latency_p99_us = t.fwd_latency_p99_us.max(s.fwd_latency_p99_us);
        t.fwd_latency_samples += s.fwd_latency_samples;
        p50_weighted += u128::from(s.fwd_latency_p50_us) * u128::from(s.fwd_latency_samples);
        t.recording_rooms += s.recording_rooms;
        t.rec_packets_handed += s.rec_packets_handed;
        t.rec_packets_dropped += s.rec_packets_dropped;
        t.rec_frames_written += s.rec_frames_written;
        t.rec_thread_cpu_us += s.rec_thread_cpu_us;
        t.media_thread_cpu_us += s.media_thread_cpu_us;
    }
    if t.fwd_latency_samples > 0 {
        t.fwd_latency_p50_us =
            u64::try_from(p50_weighted / u128::from(t.fwd_latency_samples)).unwrap_or(u64::MAX);
    }
    t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ufrag_tags_round_trip() {
        for index in [0, 1, 2, 61, 62, 63, 1000, MAX_WORKERS - 1] {
            let mut u = "abcdefghijklmnop".to_owned();
            tag_ufrag(&mut u, index);
            assert_eq!(u.len(), 16);
            assert!(u.ends_with("cdefghijklmnop"));
            assert_eq!(worker_of_ufrag(&u), Some(index), "{u}");
        }
        assert_eq!(worker_of_ufrag(""), None);
        assert_eq!(worker_of_ufrag("a"), None);
        assert_eq!(worker_of_ufrag("+a"), None);
    }

    #[test]
    fn rooms_go_to_the_least_loaded_worker_and_stay() {
        let p = Placement::new(2, 100);
        let t0 = Instant::now();
        assert_eq!(p.place("a", t0).unwrap(), 0);
        assert_eq!(p.place("b", t0).unwrap(), 1);
        assert_eq!(p.place("a", t0).unwrap(), 0, "a placed room stays");
        assert_eq!(p.place("c", t0).unwrap(), 0);
        assert_eq!(p.rooms_per_worker(), vec![2, 1]);
        assert_eq!(p.get("b"), Some(1));
        assert_eq!(p.get("zz"), None);
        // Worker 0 still has "a" but not "c"; within the grace nothing is forgotten.
        p.retain_for(0, t0 + Duration::from_secs(1), |r| r == "a");
        assert_eq!(p.get("c"), Some(0));
        let later = t0 + PLACEMENT_GRACE + Duration::from_secs(1);
        p.retain_for(0, later, |r| r == "a");
        assert_eq!(p.get("c"), None);
        assert_eq!(p.get("a"), Some(0));
        assert_eq!(
            p.get("b"),
            Some(1),
            "another worker's rooms are not touched"
        );
        // The next new room goes to the emptier worker (1 room each: the lowest index).
        assert_eq!(p.place("d", later).unwrap(), 0);
    }

    #[test]
    fn max_rooms_counts_the_rooms_of_all_workers() {
        let p = Placement::new(2, 2);
        let t0 = Instant::now();
        assert_eq!(p.place("a", t0).unwrap(), 0);
        assert_eq!(p.place("b", t0).unwrap(), 1);
        p.set_live(0, 1);
        p.set_live(1, 1);
        assert!(matches!(
            p.place("c", t0),
            Err(crate::SfuError::TooManyRooms(2))
        ));
        assert_eq!(p.place("a", t0).unwrap(), 0, "an existing room still joins");
        // Room b empties on worker 1: a new room fits again.
        p.set_live(1, 0);
        assert_eq!(p.place("c", t0).unwrap(), 0);
    }

    #[test]
    fn one_worker_needs_no_table() {
        let p = Placement::new(1, 1);
        assert_eq!(p.place("a", Instant::now()).unwrap(), 0);
        assert_eq!(p.get("anything"), Some(0));
        assert!(p.rooms_per_worker().iter().all(|c| *c == 0));
    }

    #[test]
    fn stats_add_up() {
        let a = SfuStats {
            rooms: 1,
            rtp_out: 10,
            fwd_latency_p50_us: 100,
            fwd_latency_p99_us: 900,
            fwd_latency_samples: 10,
            media_thread_cpu_us: 5,
            ..SfuStats::default()
        };
        let b = SfuStats {
            rooms: 2,
            rtp_out: 30,
            fwd_latency_p50_us: 200,
            fwd_latency_p99_us: 400,
            fwd_latency_samples: 30,
            media_thread_cpu_us: 7,
            ..SfuStats::default()
        };
        let t = sum_stats(&[a, b]);
        assert_eq!(t.rooms, 3);
        assert_eq!(t.rtp_out, 40);
        assert_eq!(t.fwd_latency_p99_us, 900);
        assert_eq!(t.fwd_latency_p50_us, 175);
        assert_eq!(t.media_thread_cpu_us, 12);
    }
}
