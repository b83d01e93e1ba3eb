//! Loudest-speaker selection for audio forwarding, driven by the RFC 6464 audio level that
//! publishers put in every audio packet (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`): a level
//! 0..=127 meaning -dBov (0 = loudest, 127 = silence) and a voice-activity flag V. Only the
//! [`SpeakerConfig::max_active`] loudest tracks of a room are forwarded; [`SpeakerSelector`]
//! decides which, and who is "speaking" for the UI. Plain data, time is an input.
//!
//! # Algorithm
//!
//! * **Smoothing** ([`SpeakerSelector::observe`], per packet, O(1), no allocation). The
//!   `window` is cut into 10 time buckets; a packet adds its level to its bucket. A track's
//!   smoothed level is the mean, in the dB domain, of the last 10 *completed* buckets, each
//!   bucket counting as the mean level of its packets. A bucket without packets counts as
//!   silence (127), except inside a gap no longer than `loss_tolerance` after a packet: there
//!   the last level heard carries on. So a loss burst, jitter or a long packetisation time
//!   (40/60 ms `ptime` leaves buckets empty) does not read as silence, while a track that stops
//!   sending decays to 127 within `loss_tolerance + window`. Averaging dB values (as mediasoup's
//!   `AudioLevelObserver` does) rather than power keeps a short transient from winning a slot:
//!   a 30 ms cough at 0 dB among silence moves a 300 ms mean only to about 114.
//! * **Selection** ([`SpeakerSelector::update`], every 100–200 ms). First free slots are filled
//!   with the loudest inactive tracks, so with at most `max_active` tracks everyone is forwarded,
//!   even a silent or brand-new one. Then, while the loudest inactive track is louder by at
//!   least `switch_margin_db` than the quietest active track whose `hold` (counted from when it
//!   entered the active set) has expired, the two swap. The margin stops two near-equal talkers
//!   from flapping; the hold bounds switches to one per slot per `hold`.
//! * **Speaking** is separate from forwarding: a track speaks from a packet at or below
//!   `speech_threshold` until `speaking_linger` after the last such packet. A track may speak
//!   without being forwarded (a fourth talker), and a forwarded one may be silent.
//!
//! Changes made by [`SpeakerSelector::add`] and [`SpeakerSelector::remove`] take effect at once
//! for [`SpeakerSelector::is_active`] and are reported by the next `update` as well. The
//! [`SpeakerChange`] flags say whether the *sets* changed, not their loudness order.
//!
//! # Defaults ([`SpeakerConfig::default`])
//!
//! | field | default | why |
//! | --- | --- | --- |
//! | `max_active` | 3 | more than three people talking at once is no longer intelligible; the usual choice of audio "last N" forwarding |
//! | `speech_threshold` | 50 | speech into a headset or laptop mic arrives around -15..-40 dBov; room noise after the browsers' noise suppression sits below -60 dBov. -50 lies between with margin on both sides |
//! | `window` | 300 ms | about one syllable and its gap, so one word's dips average out and a click or cough weighs little, yet a new talker is admitted within roughly her first word (window + one update interval) |
//! | `hold` | 1.5 s | a few words: at most one switch per slot per 1.5 s, and a cough that does win a slot frees it soon |
//! | `switch_margin_db` | 6 | twice the sound pressure, "clearly louder"; above the few dB a steady talker's 300 ms mean wanders |
//! | `speaking_linger` | 500 ms | bridges the pauses between words (100–300 ms) so the indicator does not blink, yet goes off half a second after the talker stops |
//! | `loss_tolerance` | 300 ms | covers a 200 ms loss burst plus jitter; shorter than the hold so a track that really stopped is replaced soon after its hold |
//! | `require_voice_flag` | false | senders that negotiate `vad=off` (and some browser versions) always send V = 0; the level alone is the reliable signal |

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Into how many buckets the smoothing window is cut.
const BUCKETS: usize = 10;
/// Ring slots per track: the window's buckets plus the current, incomplete one.
const SLOTS: usize = BUCKETS + 1;
/// RFC 6464's level of digital silence (-127 dBov).
const SILENCE: u8 = 127;

/// The RFC 6464 audio level in a header extension's payload: `(level in -dBov, voice flag)`,
/// with V = bit 7 and the level the low 7 bits of the first byte. `None` if empty.
pub fn parse_audio_level(ext: &[u8]) -> Option<(u8, bool)> {
    let b = *ext.first()?;
    Some((b & 0x7f, b & 0x80 != 0))
}

/// Tuning of a [`SpeakerSelector`]; see the module documentation for the defaults' reasons.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// How many tracks are forwarded at once (besides always-forwarded ones). Default 3.
    pub max_active: usize,
    /// Levels at or below this -dBov value count as speech (50 => louder than -50 dBov).
    /// Default 50.
    pub speech_threshold: u8,
    /// Smoothing (averaging) window for the level. Default 300 ms.
    pub window: Duration,
    /// Minimum time a track stays in the active set once it entered it (anti-flap).
    /// Default 1.5 s.
    pub hold: Duration,
    /// A newcomer must be louder than the quietest active track by this many dB to displace
    /// it. Default 6.
    pub switch_margin_db: u8,
    /// How long after its last speech packet a track still counts as "speaking" for the UI.
    /// Default 500 ms.
    pub speaking_linger: Duration,
    /// A gap in a track's packets up to this long carries the last level heard (loss burst,
    /// jitter, long packetisation); beyond it the track counts as silent. Default 300 ms.
    pub loss_tolerance: Duration,
    /// Count a packet as speech only if its V (voice activity) flag is set as well. Default
    /// false: senders that negotiated `vad=off` always send V = 0.
    pub require_voice_flag: bool,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            max_active: 3,
            speech_threshold: 50,
            window: Duration::from_millis(300),
            hold: Duration::from_millis(1500),
            switch_margin_db: 6,
            speaking_linger: Duration::from_millis(500),
            loss_tolerance: Duration::from_millis(300),
            require_voice_flag: false,
        }
    }
}

/// What an [`SpeakerSelector::update`] (or an `add`/`remove` since the last one) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpeakerChange {
    /// The set of forwarded tracks ([`SpeakerSelector::active`]) changed.
    pub active_changed: bool,
    /// The set of speaking tracks ([`SpeakerSelector::speaking`]) changed.
    pub speaking_changed: bool,
}

/// One smoothing bucket: the levels of the packets that arrived in it.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Absolute bucket number (time since the selector's epoch / bucket length).
    idx: u64,
    sum: u32,
    count: u32,
}

#[derive(Debug)]
struct Track<K> {
    key: K,
    /// Ring of the newest [`SLOTS`] buckets, by `idx % SLOTS`.
    buckets: [Bucket; SLOTS],
    /// Bucket and level of the newest packet.
    last: Option<(u64, u8)>,
    last_speech: Option<Instant>,
    /// Smoothed level (-dBov) as of the last update.
    level: f32,
    active: bool,
    /// When it last entered the active set.
    entered: Instant,
    speaking: bool,
}

impl<K> Track<K> {
    fn new(key: K, active: bool, now: Instant) -> Self {
        Self {
            key,
            buckets: [Bucket::default(); SLOTS],
            last: None,
            last_speech: None,
            level: f32::from(SILENCE),
            active,
            entered: now,
            speaking: false,
        }
    }

    fn slot(idx: u64) -> usize {
        // Lossless: the remainder is below SLOTS.
        (idx % SLOTS as u64) as usize
    }

    /// Add one packet's level in bucket `idx`; `gap` = how many empty buckets after a packet
    /// still carry its level.
    fn record(&mut self, idx: u64, level: u8, gap: u64) {
        let idx = self.last.map_or(idx, |(l, _)| idx.max(l));
        if let Some((l, l_level)) = self.last {
            // Fill the buckets skipped since the previous packet, as far as it carries (only the
            // newest BUCKETS matter).
            let from = (l + 1).max(idx.saturating_sub(BUCKETS as u64));
            for j in from..idx {
                if j - l > gap {
                    break;
                }
                self.buckets[Self::slot(j)] = Bucket {
                    idx: j,
                    sum: u32::from(l_level),
                    count: 1,
                };
            }
        }
        let b = &mut self.buckets[Self::slot(idx)];
        if b.idx != idx {
            *b = Bucket {
                idx,
                sum: 0,
                count: 0,
            };
        }
        b.sum = b.sum.saturating_add(u32::from(level));
        b.count = b.count.saturating_add(1);
        self.last = Some((idx, level));
    }

    /// The level bucket `j` counts as.
    fn bucket_level(&self, j: u64, gap: u64) -> f32 {
        let b = &self.buckets[Self::slot(j)];
        if b.idx == j && b.count > 0 {
            return b.sum as f32 / b.count as f32;
        }
        match self.last {
            Some((l, level)) if l < j && j - l <= gap => f32::from(level),
            _ => f32::from(SILENCE),
        }
    }

    /// Mean level of the [`BUCKETS`] buckets completed before bucket `current`.
    fn smoothed(&self, current: u64, gap: u64) -> f32 {
        let total: f32 = (1..=BUCKETS as u64)
            .map(|k| {
                current
                    .checked_sub(k)
                    .map_or(f32::from(SILENCE), |j| self.bucket_level(j, gap))
            })
            .sum();
        total / BUCKETS as f32
    }
}

/// Whether an inactive track at smoothed level `candidate` takes the slot of an active one at
/// `victim` (whose hold has expired): strictly louder, by at least `margin_db`.
fn displaces(candidate: f32, victim: f32, margin_db: f32) -> bool {
    candidate < victim && victim - candidate >= margin_db
}

/// The loudest-speaker selector of one room (or one group of tracks). `K` identifies a track
/// (the worker's track slot in practice).
#[derive(Debug)]
pub struct SpeakerSelector<K> {
    cfg: SpeakerConfig,
    /// Bucket length in nanoseconds (at least 1).
    bucket_ns: u128,
    /// How many empty buckets after a packet still carry its level.
    gap_buckets: u64,
    /// Time of bucket 0: the first instant the selector was given.
    epoch: Option<Instant>,
    index: HashMap<K, usize>,
    tracks: Vec<Track<K>>,
    /// Keys of active tracks, loudest first as of the last update.
    active: Vec<K>,
    /// Keys of speaking tracks, loudest first as of the last update.
    speaking: Vec<K>,
    /// Changes made by `add`/`remove`, reported by the next update.
    pending: SpeakerChange,
}

impl<K: Copy + Eq + Hash + Ord> SpeakerSelector<K> {
    pub fn new(cfg: SpeakerConfig) -> Self {
        let bucket_ns = (cfg.window.as_nanos() / BUCKETS as u128).max(1);
        let gap_buckets =
            u64::try_from(cfg.loss_tolerance.as_nanos() / bucket_ns).unwrap_or(u64::MAX);
        Self {
            cfg,
            bucket_ns,
            gap_buckets,
            epoch: None,
            index: HashMap::new(),
            tracks: Vec::new(),
            active: Vec::new(),
            speaking: Vec::new(),
            pending: SpeakerChange::default(),
        }
    }

    pub fn config(&self) -> &SpeakerConfig {
        &self.cfg
    }

    /// Register a track (no level yet). Tracks start inactive unless there is a free slot in
    /// the active set (fewer than `max_active` members), in which case they are admitted
    /// immediately so a small meeting never mutes anyone. Adding a known track does nothing.
    pub fn add(&mut self, key: K, now: Instant) {
        if self.index.contains_key(&key) {
            return;
        }
        self.bucket_index(now);
        let admit = self.active.len() < self.cfg.max_active;
        self.index.insert(key, self.tracks.len());
        self.tracks.push(Track::new(key, admit, now));
        if admit {
            self.active.push(key);
            self.pending.active_changed = true;
        }
    }

    /// Forget a track (unpublished/left); frees its slot, which the next
    /// [`Self::update`] gives to the loudest inactive track.
    pub fn remove(&mut self, key: K) {
        let Some(i) = self.index.remove(&key) else {
            return;
        };
        if i >= self.tracks.len() {
            return;
        }
        let t = self.tracks.swap_remove(i);
        if let Some(moved) = self.tracks.get(i) {
            self.index.insert(moved.key, i);
        }
        if t.active {
            self.active.retain(|k| *k != key);
            self.pending.active_changed = true;
        }
        if t.speaking {
            self.speaking.retain(|k| *k != key);
            self.pending.speaking_changed = true;
        }
    }

    /// One packet's audio level (`level_dbov` 0 = loudest .. 127 = silence, larger values are
    /// taken as 127; `voice` = the V flag). Unknown tracks are ignored. Called per audio packet:
    /// a hash lookup and a few stores, no allocation.
    pub fn observe(&mut self, key: K, level_dbov: u8, voice: bool, now: Instant) {
        let Some(&i) = self.index.get(&key) else {
            return;
        };
        let idx = self.bucket_index(now);
        let level = level_dbov.min(SILENCE);
        let speech = level <= self.cfg.speech_threshold && (voice || !self.cfg.require_voice_flag);
        let gap = self.gap_buckets;
        let Some(t) = self.tracks.get_mut(i) else {
            return;
        };
        t.record(idx, level, gap);
        if speech {
            t.last_speech = Some(t.last_speech.map_or(now, |s| s.max(now)));
        }
    }

    /// Re-evaluate levels, the active set and who speaks (called every ~100-200 ms by the
    /// worker, not per packet). Returns what changed since the last update.
    pub fn update(&mut self, now: Instant) -> SpeakerChange {
        let current = self.bucket_index(now);
        let mut change = std::mem::take(&mut self.pending);
        let gap = self.gap_buckets;
        let linger = self.cfg.speaking_linger;
        for t in &mut self.tracks {
            t.level = t.smoothed(current, gap);
            let speaking = t
                .last_speech
                .is_some_and(|s| now.saturating_duration_since(s) < linger);
            if speaking != t.speaking {
                t.speaking = speaking;
                change.speaking_changed = true;
            }
        }
        change.active_changed |= self.select(now);
        self.rebuild_lists();
        change
    }

    /// Is this track currently forwarded?
    pub fn is_active(&self, key: K) -> bool {
        self.track(key).is_some_and(|t| t.active)
    }

    /// Active set, loudest first (as of the last update; tracks admitted by `add` since are
    /// at the end).
    pub fn active(&self) -> &[K] {
        &self.active
    }

    /// Tracks speaking right now (a packet at or below `speech_threshold` within
    /// `speaking_linger`), loudest first, as of the last update.
    pub fn speaking(&self) -> &[K] {
        &self.speaking
    }

    /// A track's smoothed level (-dBov, 0 loudest .. 127 silence) as of the last update.
    pub fn level(&self, key: K) -> Option<f32> {
        self.track(key).map(|t| t.level)
    }

    pub fn contains(&self, key: K) -> bool {
        self.index.contains_key(&key)
    }

    fn track(&self, key: K) -> Option<&Track<K>> {
        self.index.get(&key).and_then(|&i| self.tracks.get(i))
    }

    /// The smoothing bucket `now` falls in (fixes the epoch on first use).
    fn bucket_index(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        let n = now.saturating_duration_since(epoch).as_nanos() / self.bucket_ns;
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Fill free slots, then swap in louder newcomers. Returns whether the active set changed.
    fn select(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let mut n_active = self.tracks.iter().filter(|t| t.active).count();
        while n_active < self.cfg.max_active {
            let Some(c) = self.loudest_inactive() else {
                break;
            };
            self.set_active(c, true, now);
            n_active += 1;
            changed = true;
        }
        let margin = f32::from(self.cfg.switch_margin_db);
        // Each swap lowers the sum of the active levels, so this ends (within max_active
        // swaps: a track let in now is held).
        while let (Some(c), Some(v)) = (self.loudest_inactive(), self.quietest_releasable(now)) {
            let (Some(cl), Some(vl)) = (self.tracks.get(c), self.tracks.get(v)) else {
                break;
            };
            if !displaces(cl.level, vl.level, margin) {
                break;
            }
            self.set_active(v, false, now);
            self.set_active(c, true, now);
            changed = true;
        }
        changed
    }

    fn set_active(&mut self, i: usize, active: bool, now: Instant) {
        if let Some(t) = self.tracks.get_mut(i) {
            t.active = active;
            if active {
                t.entered = now;
            }
        }
    }

    /// Index of the loudest inactive track (ties: smallest key).
    fn loudest_inactive(&self) -> Option<usize> {
        self.tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.active)
            .min_by(|(_, a), (_, b)| a.level.total_cmp(&b.level).then(a.key.cmp(&b.key)))
            .map(|(i, _)| i)
    }

    /// Index of the quietest active track whose hold has expired (ties: largest key).
    fn quietest_releasable(&self, now: Instant) -> Option<usize> {
        let hold = self.cfg.hold;
        self.tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.active && now.saturating_duration_since(t.entered) >= hold)
            .max_by(|(_, a), (_, b)| a.level.total_cmp(&b.level).then(a.key.cmp(&b.key)))
            .map(|(i, _)| i)
    }

    /// Rebuild `active` and `speaking`, loudest first (ties: smallest key). Reuses their
    /// buffers.
    fn rebuild_lists(&mut self) {
        self.active.clear();
        self.speaking.clear();
        for t in &self.tracks {
            if t.active {
                self.active.push(t.key);
            }
            if t.speaking {
                self.speaking.push(t.key);
            }
        }
        let (index, tracks) = (&self.index, &self.tracks);
        let level = |k: &K| {
            index
                .get(k)
                .and_then(|&i| tracks.get(i))
                .map_or(f32::from(SILENCE), |t| t.level)
        };
        let order = |a: &K, b: &K| level(a).total_cmp(&level(b)).then(a.cmp(b));
        self.active.sort_unstable_by(order);
        self.speaking.sort_unstable_by(order);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PACKET_MS: u64 = 20;
    const UPDATE_MS: u64 = 100;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One worker update of a simulated run.
    #[derive(Debug)]
    struct Step {
        at: u64,
        change: SpeakerChange,
        active: Vec<usize>,
        speaking: Vec<usize>,
        /// Smoothed level of each key in `keys`.
        levels: Vec<f32>,
    }

    /// Simulate `from..to` ms: each of `keys` sends a packet every 20 ms at `level(ms, key)`
    /// (`None`: no packet), and the worker updates every 100 ms, after that instant's packets.
    fn drive(
        sel: &mut SpeakerSelector<usize>,
        t0: Instant,
        (from, to): (u64, u64),
        keys: &[usize],
        level: impl Fn(u64, usize) -> Option<u8>,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        for at in (from..to).step_by(10) {
            let now = t0 + ms(at);
            if at % PACKET_MS == 0 {
                for &k in keys {
                    if let Some(l) = level(at, k) {
                        sel.observe(k, l, true, now);
                    }
                }
            }
            if at % UPDATE_MS == 0 {
                let change = sel.update(now);
                steps.push(Step {
                    at,
                    change,
                    active: sel.active().to_vec(),
                    speaking: sel.speaking().to_vec(),
                    levels: keys.iter().map(|&k| sel.level(k).unwrap()).collect(),
                });
            }
        }
        steps
    }

    fn selector(cfg: SpeakerConfig, keys: &[usize], t0: Instant) -> SpeakerSelector<usize> {
        let mut s = SpeakerSelector::new(cfg);
        for &k in keys {
            s.add(k, t0);
        }
        s
    }

    fn steady(levels: &'static [u8]) -> impl Fn(u64, usize) -> Option<u8> {
        move |_, k| levels.get(k).copied()
    }

    /// Updates (after the first, which reports the initial admissions) that changed the set.
    fn switches(steps: &[Step]) -> usize {
        steps
            .iter()
            .filter(|s| s.at > 0 && s.change.active_changed)
            .count()
    }

    fn step(steps: &[Step], at: u64) -> &Step {
        steps.iter().find(|s| s.at == at).unwrap()
    }

    fn sorted(v: &[usize]) -> Vec<usize> {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    }

    #[test]
    fn parses_audio_level() {
        type Case<'a> = (&'a [u8], Option<(u8, bool)>);
        let cases: &[Case] = &[
            (&[], None),
            (&[0x00], Some((0, false))),
            (&[0x80], Some((0, true))),
            (&[0x7f], Some((127, false))),
            (&[0xff], Some((127, true))),
            (&[0x9e], Some((30, true))),
            (&[0x1e, 0xff, 0x00], Some((30, false))), // padding after the byte is ignored
        ];
        for &(ext, want) in cases {
            assert_eq!(parse_audio_level(ext), want, "{ext:02x?}");
        }
    }

    #[test]
    fn smooths_levels_over_the_window() {
        // (case, packet runs (from ms, to ms, every ms, level), update at ms, want, tolerance)
        type Run = (u64, u64, u64, u8);
        let cases: &[(&str, &[Run], u64, f32, f32)] = &[
            ("steady", &[(0, 1000, 20, 30)], 1000, 30.0, 0.0),
            ("no packets is silence", &[], 1000, 127.0, 0.0),
            (
                "above 127 is silence",
                &[(0, 1000, 20, 200)],
                1000,
                127.0,
                0.0,
            ),
            (
                "per-packet 20/40 averages",
                &[(0, 1000, 40, 20), (20, 1000, 40, 40)],
                1000,
                30.0,
                1.5,
            ),
            (
                "60 ms ptime leaves no hole",
                &[(0, 1000, 60, 25)],
                1000,
                25.0,
                0.0,
            ),
            (
                "200 ms loss burst is bridged",
                &[(0, 600, 20, 30), (800, 1000, 20, 30)],
                820,
                30.0,
                0.0,
            ),
            (
                "stopped: carried for loss_tolerance",
                &[(0, 1000, 20, 30)],
                1300,
                30.0,
                0.0,
            ),
            // last packet 980 ms = bucket 32; at 1450 the window is buckets 38..=47 and 38..=42
            // are within 10 buckets (300 ms) of it: 5 × 30 + 5 × 127.
            ("stopped: decaying", &[(0, 1000, 20, 30)], 1450, 78.5, 0.0),
            (
                "stopped: silent after tolerance + window",
                &[(0, 1000, 20, 30)],
                1630,
                127.0,
                0.0,
            ),
            // window 840..1140: five buckets of silence, five of speech.
            (
                "speech starts mid-window",
                &[(0, 1000, 20, 127), (1000, 2000, 20, 10)],
                1150,
                68.5,
                0.0,
            ),
            (
                "speech fully in window",
                &[(0, 1000, 20, 127), (1000, 2000, 20, 10)],
                1330,
                10.0,
                0.0,
            ),
        ];
        let t0 = crate::testkit::SimClock::start().now();
        for &(name, runs, at, want, tol) in cases {
            let mut sel = selector(SpeakerConfig::default(), &[7], t0);
            let mut packets: Vec<(u64, u8)> = runs
                .iter()
                .flat_map(|&(from, to, every, l)| {
                    (from..to).step_by(every as usize).map(move |t| (t, l))
                })
                .filter(|&(t, _)| t <= at)
                .collect();
            packets.sort_by_key(|p| p.0);
            for (t, l) in packets {
                sel.observe(7, l, true, t0 + ms(t));
            }
            sel.update(t0 + ms(at));
            let got = sel.level(7).unwrap();
            assert!(
                (got - want).abs() <= tol + 1e-3,
                "{name}: level {got}, want {want}"
            );
        }
    }

    #[test]
    fn displacement_needs_margin_and_expired_hold() {
        // Track 0 holds the only slot from t0 (hold 1 s); track 1 competes. Both send steadily
        // (None: nothing) until `at`, where one update decides.
        // (case, level 0, level 1, margin dB, at ms, track 1 takes the slot)
        type Case<'a> = (&'a str, Option<u8>, Option<u8>, u8, u64, bool);
        let cases: &[Case] = &[
            ("10 dB louder", Some(40), Some(30), 6, 2000, true),
            (
                "5 dB is within the margin",
                Some(40),
                Some(35),
                6,
                2000,
                false,
            ),
            ("exactly the margin", Some(40), Some(34), 6, 2000, true),
            ("hold not expired", Some(40), Some(10), 6, 900, false),
            ("hold just expired", Some(40), Some(10), 6, 1000, true),
            ("quieter never", Some(30), Some(40), 6, 2000, false),
            (
                "equal never, even without margin",
                Some(30),
                Some(30),
                0,
                2000,
                false,
            ),
            (
                "any louder without margin",
                Some(30),
                Some(29),
                0,
                2000,
                true,
            ),
            (
                "silent holder, faint newcomer at the margin",
                None,
                Some(121),
                6,
                2000,
                true,
            ),
            (
                "silent holder, fainter newcomer",
                None,
                Some(122),
                6,
                2000,
                false,
            ),
            ("both silent", None, None, 0, 2000, false),
        ];
        let t0 = crate::testkit::SimClock::start().now();
        for &(name, l0, l1, margin, at, want) in cases {
            let cfg = SpeakerConfig {
                max_active: 1,
                hold: ms(1000),
                switch_margin_db: margin,
                ..SpeakerConfig::default()
            };
            let mut sel = selector(cfg, &[0, 1], t0);
            assert_eq!(sel.active(), &[0], "{name}: first come takes the free slot");
            for t in (0..at).step_by(PACKET_MS as usize) {
                for (k, l) in [(0, l0), (1, l1)] {
                    if let Some(l) = l {
                        sel.observe(k, l, true, t0 + ms(t));
                    }
                }
            }
            let change = sel.update(t0 + ms(at));
            assert_eq!(sel.is_active(1), want, "{name}");
            assert_eq!(sel.is_active(0), !want, "{name}");
            assert_eq!(sel.active().len(), 1, "{name}");
            assert!(
                change.active_changed,
                "{name}: the first update reports the admission"
            );
        }
    }

    #[test]
    fn speaking_threshold_linger_and_voice_flag() {
        // (case, packets (ms, level, V), require V, update at ms, speaking)
        type Packet = (u64, u8, bool);
        let cases: &[(&str, &[Packet], bool, u64, bool)] = &[
            ("no packets", &[], false, 100, false),
            ("speech", &[(0, 30, true)], false, 100, true),
            ("lingers", &[(0, 30, true)], false, 499, true),
            ("linger over", &[(0, 30, true)], false, 500, false),
            ("at threshold", &[(0, 50, true)], false, 100, true),
            ("just below threshold", &[(0, 51, true)], false, 100, false),
            ("silence", &[(0, 127, true)], false, 100, false),
            ("V ignored by default", &[(0, 30, false)], false, 100, true),
            ("V required, unset", &[(0, 30, false)], true, 100, false),
            ("V required, set", &[(0, 30, true)], true, 100, true),
            (
                "quiet packets do not end it",
                &[(0, 30, true), (300, 30, true), (400, 90, true)],
                false,
                700,
                true,
            ),
            (
                "counted from the last speech",
                &[(0, 30, true), (300, 30, true), (400, 90, true)],
                false,
                800,
                false,
            ),
        ];
        let t0 = crate::testkit::SimClock::start().now();
        for &(name, packets, require_voice_flag, at, want) in cases {
            let cfg = SpeakerConfig {
                require_voice_flag,
                ..SpeakerConfig::default()
            };
            let mut sel = selector(cfg, &[3], t0);
            for &(t, l, v) in packets {
                sel.observe(3, l, v, t0 + ms(t));
            }
            let change = sel.update(t0 + ms(at));
            assert_eq!(sel.speaking() == [3], want, "{name}");
            assert_eq!(change.speaking_changed, want, "{name}");
        }
    }

    #[test]
    fn small_meeting_never_mutes_anyone() {
        let t0 = crate::testkit::SimClock::start().now();
        // Track 0 never sends, track 1 sends silence, track 2 speaks.
        let level = |_, k| [None, Some(127), Some(20)][k];
        for n in 1..=3 {
            let keys: Vec<usize> = (0..n).collect();
            let mut sel = selector(SpeakerConfig::default(), &keys, t0);
            assert_eq!(sorted(sel.active()), keys, "{n} tracks: admitted on add");
            let steps = drive(&mut sel, t0, (0, 10_000), &keys, level);
            assert!(
                steps.iter().all(|s| sorted(&s.active) == keys),
                "{n} tracks"
            );
            assert_eq!(switches(&steps), 0);
        }
        // Unlimited (a room's hosts).
        let cfg = SpeakerConfig {
            max_active: usize::MAX,
            ..SpeakerConfig::default()
        };
        let keys: Vec<usize> = (0..20).collect();
        let mut sel = selector(cfg, &keys, t0);
        sel.update(t0);
        assert_eq!(sorted(sel.active()), keys);
    }

    #[test]
    fn six_speakers_the_three_loudest_are_active() {
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1, 2, 3, 4, 5];
        let mut sel = selector(SpeakerConfig::default(), &keys, t0);
        // The first three took the free slots on add.
        assert_eq!(sel.active(), &[0, 1, 2]);
        let steps = drive(
            &mut sel,
            t0,
            (0, 3000),
            &keys,
            steady(&[45, 10, 60, 25, 35, 15]),
        );
        // They are held for 1.5 s, then the loudest three take over in one update.
        assert_eq!(sorted(&step(&steps, 1400).active), [0, 1, 2]);
        assert_eq!(step(&steps, 1500).active, [1, 5, 3]);
        assert_eq!(switches(&steps), 1);
        let last = steps.last().unwrap();
        assert_eq!(last.active, [1, 5, 3], "loudest first");
        assert_eq!(last.speaking, [1, 5, 3, 4, 0], "60 is below the threshold");
        assert_eq!(last.levels, [45.0, 10.0, 60.0, 25.0, 35.0, 15.0]);
    }

    #[test]
    fn louder_newcomer_enters_within_window_and_update() {
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1, 2, 3];
        let mut sel = selector(SpeakerConfig::default(), &keys, t0);
        // Track 3 is silent (no packets) until 5 s, then clearly louder than the quietest.
        let level = |t, k| match k {
            3 => (t >= 5000).then_some(10),
            _ => Some([20, 30, 40][k]),
        };
        let steps = drive(&mut sel, t0, (0, 7000), &keys, level);
        let entered = steps.iter().find(|s| s.active.contains(&3)).unwrap().at;
        let cfg = SpeakerConfig::default();
        let bound = 5000 + cfg.window.as_millis() as u64 + UPDATE_MS;
        assert!(
            (5000..=bound).contains(&entered),
            "entered at {entered} ms, bound {bound}"
        );
        assert_eq!(
            step(&steps, entered).active,
            [3, 0, 1],
            "it displaced the quietest"
        );
        assert_eq!(switches(&steps), 1);
    }

    #[test]
    fn loudest_goes_silent_and_the_next_enters() {
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1, 2, 3];
        let mut sel = selector(SpeakerConfig::default(), &keys, t0);
        // Track 0 (the loudest) mutes at 5 s (sends silence); track 3 talks all along.
        let level = |t, k| match k {
            0 => Some(if t < 5000 { 10 } else { 127 }),
            _ => Some([0, 20, 30, 40][k]),
        };
        let steps = drive(&mut sel, t0, (0, 7000), &keys, level);
        assert_eq!(step(&steps, 4900).active, [0, 1, 2]);
        let entered = steps.iter().find(|s| s.active.contains(&3)).unwrap().at;
        assert!((5100..=5400).contains(&entered), "entered at {entered} ms");
        assert_eq!(step(&steps, entered).active, [1, 2, 3]);
        assert_eq!(switches(&steps), 1);
        // Track 0 stops speaking linger (500 ms) after its last speech packet (4980 ms).
        assert!(step(&steps, 5400).speaking.contains(&0));
        assert_eq!(step(&steps, 5500).speaking, [1, 2, 3]);
        let speaking_changes: Vec<u64> = steps
            .iter()
            .filter(|s| s.change.speaking_changed)
            .map(|s| s.at)
            .collect();
        assert_eq!(speaking_changes, [0, 5500]);
        assert_eq!(steps.last().unwrap().levels[0], 127.0);
    }

    #[test]
    fn newcomer_that_falls_silent_is_held_then_replaced() {
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1, 2, 3];
        let cfg = SpeakerConfig::default();
        let hold = cfg.hold.as_millis() as u64;
        let mut sel = selector(cfg, &keys, t0);
        // Track 3 shouts from 3 s to 3.5 s, then is silent; track 2 talks all along at 40.
        let level = |t, k| match k {
            3 => (t >= 3000).then_some(if t < 3500 { 5 } else { 127 }),
            _ => Some([10, 20, 40][k]),
        };
        let steps = drive(&mut sel, t0, (0, 8000), &keys, level);
        let entered = steps.iter().find(|s| s.active.contains(&3)).unwrap().at;
        assert!((3000..=3400).contains(&entered), "entered at {entered} ms");
        assert!(!step(&steps, entered).active.contains(&2));
        for s in steps
            .iter()
            .filter(|s| (entered..entered + hold).contains(&s.at))
        {
            assert!(s.active.contains(&3), "held at {} ms", s.at);
            assert!(s.levels[3] > 46.0 || s.at < 4000, "silent by then");
        }
        assert_eq!(
            step(&steps, entered + hold).active,
            [0, 1, 2],
            "replaced when the hold ends"
        );
        assert_eq!(switches(&steps), 2);
    }

    #[test]
    fn alternating_near_equal_levels_do_not_flap() {
        // Tracks 2 and 3 trade places every 0.5 s, 4 dB apart, with ±2 dB per-packet noise.
        let level = |t: u64, k: usize| {
            let phase = (t / 500) % 2 == k as u64 % 2;
            let noise = ((t / PACKET_MS) * 7 + k as u64 * 3) % 5; // 0..=4
            match k {
                0 | 1 => Some([15, 20][k]),
                _ => Some(if phase { 30 } else { 34 } + noise as u8 - 2),
            }
        };
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1, 2, 3];
        let mut sel = selector(SpeakerConfig::default(), &keys, t0);
        let steps = drive(&mut sel, t0, (0, 30_000), &keys, level);
        assert_eq!(steps.len(), 300);
        assert_eq!(switches(&steps), 0, "no switch in 30 s");
        assert_eq!(sorted(sel.active()), [0, 1, 2]);
        // The same input without hysteresis flaps at every trade.
        let bare = SpeakerConfig {
            hold: Duration::ZERO,
            switch_margin_db: 0,
            ..SpeakerConfig::default()
        };
        let mut sel = selector(bare, &keys, t0);
        let steps = drive(&mut sel, t0, (0, 30_000), &keys, level);
        assert!(switches(&steps) >= 30, "{} switches", switches(&steps));
    }

    #[test]
    fn remove_frees_the_slot() {
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1, 2, 3];
        let mut sel = selector(SpeakerConfig::default(), &keys, t0);
        drive(&mut sel, t0, (0, 3000), &keys, steady(&[10, 20, 30, 40]));
        assert_eq!(sel.active(), &[0, 1, 2]);
        sel.remove(1);
        assert!(!sel.is_active(1) && !sel.contains(1));
        assert_eq!(sel.active(), &[0, 2]);
        let now = t0 + ms(3000);
        let change = sel.update(now);
        assert!(change.active_changed && change.speaking_changed);
        assert_eq!(sel.active(), &[0, 2, 3], "the next loudest took the slot");
        assert_eq!(sel.update(now), SpeakerChange::default());
        // Unknown, or inactive and silent: nothing to report.
        sel.remove(1);
        sel.add(4, now);
        assert!(!sel.is_active(4));
        sel.remove(4);
        assert_eq!(sel.update(now), SpeakerChange::default());
        // Re-enrolling an active track (remove + add) keeps it forwarded.
        sel.remove(2);
        sel.add(2, now);
        assert!(sel.is_active(2));
        assert_eq!(sorted(sel.active()), [0, 2, 3]);
    }

    #[test]
    fn loss_burst_does_not_drop_an_active_speaker() {
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1, 2, 3];
        let mut sel = selector(SpeakerConfig::default(), &keys, t0);
        // Track 0 loses 200 ms of packets at 5 s; track 3 would beat a silent track 0.
        let level = |t, k| match k {
            0 if (5000..5200).contains(&t) => None,
            _ => Some([20, 30, 40, 45][k]),
        };
        let steps = drive(&mut sel, t0, (0, 8000), &keys, level);
        assert_eq!(switches(&steps), 0);
        for s in steps.iter().filter(|s| s.at >= 1000) {
            assert_eq!(s.active, [0, 1, 2], "at {} ms", s.at);
            assert_eq!(s.levels[0], 20.0, "at {} ms", s.at);
            assert_eq!(s.speaking, [0, 1, 2, 3], "at {} ms", s.at);
        }
    }

    #[test]
    fn stopped_sender_decays_to_silence_and_is_replaced() {
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1, 2, 3];
        let cfg = SpeakerConfig::default();
        let carried = cfg.loss_tolerance.as_millis() as u64;
        let decayed = carried + cfg.window.as_millis() as u64;
        let mut sel = selector(cfg, &keys, t0);
        // Track 0 stops sending at 5 s (its last packet at 4980 ms).
        let level = |t, k| match k {
            0 if t >= 5000 => None,
            _ => Some([20, 30, 40, 45][k]),
        };
        let steps = drive(&mut sel, t0, (0, 8000), &keys, level);
        let entered = steps.iter().find(|s| s.active.contains(&3)).unwrap().at;
        assert!(
            (5000 + carried..=5000 + decayed + UPDATE_MS).contains(&entered),
            "entered at {entered} ms"
        );
        assert_eq!(step(&steps, 5000 + carried).levels[0], 20.0, "carried");
        assert_eq!(
            step(&steps, 5000 + decayed + UPDATE_MS).levels[0],
            127.0,
            "silent"
        );
        assert_eq!(steps.last().unwrap().active, [1, 2, 3]);
    }

    #[test]
    fn speaking_changes_are_reported_only_when_the_set_changes() {
        let t0 = crate::testkit::SimClock::start().now();
        let keys = [0, 1];
        let mut sel = selector(SpeakerConfig::default(), &keys, t0);
        // Track 0 speaks 1-3 s (at 30, then 45 from 2.5 s), track 1 speaks 2-4 s at 40;
        // silence packets otherwise.
        let level = |t, k| match k {
            0 if (1000..2500).contains(&t) => Some(30),
            0 if (2500..3000).contains(&t) => Some(45),
            1 if (2000..4000).contains(&t) => Some(40),
            _ => Some(127),
        };
        let steps = drive(&mut sel, t0, (0, 6000), &keys, level);
        let changes: Vec<u64> = steps
            .iter()
            .filter(|s| s.change.speaking_changed)
            .map(|s| s.at)
            .collect();
        assert_eq!(changes, [1000, 2000, 3500, 4500]);
        assert_eq!(step(&steps, 2400).speaking, [0, 1], "loudest first");
        assert_eq!(
            step(&steps, 2900).speaking,
            [1, 0],
            "reordered, not reported"
        );
        assert_eq!(steps.last().unwrap().speaking, [] as [usize; 0]);
        assert_eq!(switches(&steps), 0, "two tracks, three slots");
    }

    #[test]
    fn edge_cases_are_harmless() {
        let t0 = crate::testkit::SimClock::start().now();
        // Unknown keys, repeated adds, repeated updates.
        let mut sel = selector(SpeakerConfig::default(), &[1], t0);
        sel.observe(9, 10, true, t0);
        assert!(!sel.contains(9) && !sel.is_active(9) && sel.level(9).is_none());
        sel.observe(1, 10, true, t0);
        sel.add(1, t0 + ms(500));
        assert_eq!(sel.active(), &[1]);
        let now = t0 + ms(1000);
        assert!(sel.update(now).active_changed);
        assert_eq!(sel.update(now), SpeakerChange::default());
        // Time going backwards is taken as "now".
        sel.observe(1, 10, true, t0);
        sel.update(t0);
        // No slots: nobody is forwarded, speaking still works.
        let cfg = SpeakerConfig {
            max_active: 0,
            ..SpeakerConfig::default()
        };
        let mut sel = selector(cfg, &[1, 2], t0);
        sel.observe(1, 10, true, t0);
        let change = sel.update(t0 + ms(100));
        assert!(!change.active_changed && change.speaking_changed);
        assert!(sel.active().is_empty() && sel.speaking() == [1]);
        // A zero window or tolerance does not divide by zero.
        let cfg = SpeakerConfig {
            window: Duration::ZERO,
            loss_tolerance: Duration::ZERO,
            ..SpeakerConfig::default()
        };
        let mut sel = selector(cfg, &[1], t0);
        sel.observe(1, 10, true, t0);
        sel.update(t0 + ms(5));
        assert_eq!(sel.level(1), Some(127.0));
    }
}
