//! Per-subscriber bandwidth: how much a subscriber's downlink carries, and which video (and
//! which simulcast layer of it) fits.
//!
//! **Estimate.** Send-side, from transport-wide congestion control (TWCC) feedback: every
//! subscriber connection numbers what it sends (`rtc`'s `TwccSenderInterceptor`); the receiver
//! (browsers, `rakor-client`) reports arrivals every ~100 ms; `rtc`'s congestion-control
//! interceptor joins the two and feeds [`rtc::interceptor::Gcc`] (Google Congestion Control:
//! delay trend + loss, combined by `min`). Why TWCC and not REMB: the receiver only reports, the
//! server decides, so the same code serves Chrome and `rakor-client`, reacts within a few
//! feedback intervals (REMB/receiver reports come about once a second) and sees loss and queueing
//! per packet. No pacer is used: the server forwards, it does not encode, so it cannot send
//! slower than the publisher; it chooses *what* to send instead. The estimate leaves the
//! interceptor chain through an [`EstimateCell`] shared with the worker.
//!
//! **Allocation** ([`allocate`], [`Allocator`]), every 100 ms per subscriber: audio first (never
//! cut), then video legs in priority order — the spotlight and the room's hosts, then the rest of
//! the wall by tile size — each first at its lowest layer, then raised towards the layer its
//! tile wants while the budget lasts. The most important video always keeps its lowest layer (a
//! lossy link must not lose its last picture). Downgrades apply at once; upgrades need headroom
//! ([`BweConfig::up_margin`]), wait [`BweConfig::up_hold`] after a downgrade (doubling when an
//! upgrade had to be taken back soon, so a link at the edge of a layer does not flap), and go
//! one layer step per second while recovering; without recent congestion (a tile grows, a leg
//! appears) whatever fits with headroom applies at once.

use rtc::interceptor::{BandwidthEstimator, Gcc, PacketReport};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The estimate of one subscriber connection, written by its congestion-control interceptor
/// and read by the worker (both on the media thread; atomics only because the estimator must
/// be `Send + Sync` inside the interceptor chain).
#[derive(Debug, Default)]
pub struct EstimateCell {
    bits_per_second: AtomicU64,
    feedback: AtomicU64,
    /// Probes the allocator started (a generation counter; see [`Prober`]).
    probes: AtomicU64,
    /// The loss bound is holding the estimate down (the link lost packets lately): no probing.
    lossy: AtomicBool,
    /// Tests: a ceiling on the estimate (f64 bits; 0 = none), a link of known capacity.
    #[cfg(test)]
    cap: AtomicU64,
}

impl EstimateCell {
    /// The current estimate, once the receiver has sent congestion feedback at least once
    /// (`None`: it never did, so nothing is known and nothing is limited).
    pub fn estimate(&self) -> Option<f64> {
        if self.feedback.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let e = f64::from_bits(self.bits_per_second.load(Ordering::Relaxed));
        #[cfg(test)]
        let e = match self.cap.load(Ordering::Relaxed) {
            0 => e,
            cap => e.min(f64::from_bits(cap)),
        };
        Some(e)
    }

    /// Tests: hold the estimate at or below `bps` (`None`: lift the ceiling).
    #[cfg(test)]
    pub(crate) fn set_cap(&self, bps: Option<f64>) {
        self.cap
            .store(bps.map_or(0, f64::to_bits), Ordering::Relaxed);
    }

    fn store(&self, bps: f64) {
        self.bits_per_second.store(bps.to_bits(), Ordering::Relaxed);
        self.feedback.fetch_add(1, Ordering::Relaxed);
    }

    /// The allocator sends more than the estimate from now on to find out whether the link
    /// carries it: the estimator measures what arrives and lifts the estimate if it all did.
    pub fn start_probe(&self) {
        self.probes.fetch_add(1, Ordering::Relaxed);
    }

    fn probe_generation(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    /// Whether probing may start: no recent loss holding the estimate down.
    pub fn may_probe(&self) -> bool {
        !self.lossy.load(Ordering::Relaxed)
    }
}

/// Start high: a subscriber gets what its tiles want until feedback says otherwise (starting
/// low would hold every new site at the lowest layer for tens of seconds while GCC climbs).
pub const INITIAL_ESTIMATE: f64 = 10_000_000.0;
const MIN_ESTIMATE: f64 = 50_000.0;
const MAX_ESTIMATE: f64 = 50_000_000.0;

/// GCC behind the `rtc` congestion-control interceptor, plus a loss bound anchored on what
/// actually arrives, publishing the lower of the two into an [`EstimateCell`].
///
/// Why the second bound: GCC starts high and, while the server sends less than the link could
/// carry, keeps climbing; when the link then suddenly shrinks, its loss half walks down from
/// that inflated figure by at most half the loss rate per 200 ms, which took over 2 s here for
/// a 300 kbit/s cap. [`LossBound`] cuts straight to what the receiver acknowledged.
pub struct SubscriberEstimator {
    gcc: Gcc,
    bound: LossBound,
    prober: Prober,
    cell: Arc<EstimateCell>,
}

impl SubscriberEstimator {
    pub fn new(cell: Arc<EstimateCell>) -> Self {
        Self {
            gcc: Gcc::new(INITIAL_ESTIMATE, MIN_ESTIMATE, MAX_ESTIMATE),
            bound: LossBound::default(),
            prober: Prober::default(),
            cell,
        }
    }
}

impl BandwidthEstimator for SubscriberEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.gcc.on_reports(now, reports);
        let mut arrived = 0usize;
        let mut lost = 0usize;
        for r in reports {
            if r.arrived {
                arrived += r.size;
            } else {
                lost += 1;
            }
        }
        self.bound.update(now, arrived, lost, reports.len());
        let estimate = self.gcc.target_bitrate().min(self.bound.bits_per_second());
        let generation = self.cell.probe_generation();
        if let Some(found) =
            self.prober
                .update(now, generation, estimate, arrived, lost, reports.len())
        {
            // The link carried the probe without loss or a falling estimate: start GCC again
            // from there (its additive increase near an old ceiling would take minutes).
            if found > self.gcc.target_bitrate() {
                self.gcc = Gcc::new(found, MIN_ESTIMATE, MAX_ESTIMATE);
            }
            self.bound.raise_to(found);
        }
        self.cell
            .lossy
            .store(self.bound.bits_per_second().is_finite(), Ordering::Relaxed);
        self.cell
            .store(self.gcc.target_bitrate().min(self.bound.bits_per_second()));
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }
}

/// Loss above [`LossBound::HIGH`] caps the estimate at the acknowledged rate less half the
/// loss; while loss stays below [`LossBound::LOW`] the cap grows 15 % per second and is lifted
/// once far above what arrives.
#[derive(Debug, Clone)]
pub struct LossBound {
    last: Option<Instant>,
    acked_bps: f64,
    loss: f64,
    cap: f64,
}

impl Default for LossBound {
    fn default() -> Self {
        Self {
            last: None,
            acked_bps: 0.0,
            loss: 0.0,
            cap: f64::INFINITY,
        }
    }
}

impl LossBound {
    const HIGH: f64 = 0.10;
    const LOW: f64 = 0.02;

    /// One feedback batch: `arrived_bytes` in packets that arrived, `lost` of `total` missing.
    pub fn update(&mut self, now: Instant, arrived_bytes: usize, lost: usize, total: usize) {
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let dt = now.saturating_duration_since(last).as_secs_f64();
        if dt <= 0.0 || total == 0 {
            return;
        }
        let rate = arrived_bytes as f64 * 8.0 / dt;
        self.acked_bps = if self.acked_bps == 0.0 {
            rate
        } else {
            0.7 * self.acked_bps + 0.3 * rate
        };
        let sample = lost as f64 / total as f64;
        self.loss = 0.6 * self.loss + 0.4 * sample;
        if self.loss > Self::HIGH && sample > Self::HIGH {
            let to = self.acked_bps * (1.0 - 0.5 * self.loss);
            self.cap = self.cap.min(to).max(MIN_ESTIMATE);
        } else if self.loss < Self::LOW && self.cap.is_finite() {
            self.cap *= 1.15f64.powf(dt.min(1.0));
            if self.cap > 4.0 * self.acked_bps + 2_000_000.0 {
                self.cap = f64::INFINITY;
            }
        }
    }

    pub fn bits_per_second(&self) -> f64 {
        self.cap
    }

    /// A probe showed the link carries `bps` without loss: the cap is at least that.
    pub fn raise_to(&mut self, bps: f64) {
        if self.cap < bps {
            self.cap = bps;
        }
    }
}

/// Measures a probe from the feedback: the allocator sends more than the estimate for about
/// [`PROBE_LEN`] (real media: paused legs resumed, higher simulcast layers — see [`Allocator`]);
/// this waits [`Prober::SKIP`] for the packets sent before the probe to be reported, then sums
/// what arrives over at least [`Prober::WINDOW`]. No loss and no falling estimate meanwhile:
/// the link carries the acknowledged rate, and the estimate becomes that rate times
/// [`Prober::GAIN`] (what keeps the probe's allotment, with the allocator's margin). Loss above
/// 2 % or an estimate falling below 85 % of its value at the start: the probe failed, nothing
/// changes (GCC and the loss bound have already reacted).
#[derive(Debug, Default, Clone)]
pub struct Prober {
    generation: u64,
    window: Option<ProbeWindow>,
    last_batch: Option<Instant>,
}

#[derive(Debug, Clone)]
struct ProbeWindow {
    started: Instant,
    estimate_at_start: f64,
    from: Option<Instant>,
    bytes: usize,
    lost: usize,
    total: usize,
}

impl Prober {
    const SKIP: Duration = Duration::from_millis(250);
    const WINDOW: Duration = Duration::from_millis(600);
    const GIVE_UP: Duration = Duration::from_millis(2500);
    const GAIN: f64 = 1.25;

    /// One feedback batch. `generation` is the cell's probe counter, `estimate` the current
    /// estimate. Returns the rate found by a probe that just succeeded.
    pub fn update(
        &mut self,
        now: Instant,
        generation: u64,
        estimate: f64,
        arrived_bytes: usize,
        lost: usize,
        total: usize,
    ) -> Option<f64> {
        let previous = self.last_batch.replace(now);
        if generation != self.generation {
            self.generation = generation;
            self.window = Some(ProbeWindow {
                started: now,
                estimate_at_start: estimate,
                from: None,
                bytes: 0,
                lost: 0,
                total: 0,
            });
            return None;
        }
        let w = self.window.as_mut()?;
        let since = now.saturating_duration_since(w.started);
        if since > Self::GIVE_UP || estimate < 0.85 * w.estimate_at_start {
            self.window = None;
            return None;
        }
        if since < Self::SKIP {
            return None;
        }
        if w.from.is_none() {
            // This batch covers the time since the previous one.
            w.from = Some(previous.unwrap_or(now));
        }
        w.bytes += arrived_bytes;
        w.lost += lost;
        w.total += total;
        let span = now.saturating_duration_since(w.from.unwrap_or(now));
        if span < Self::WINDOW {
            return None;
        }
        let done = self.window.take()?;
        if done.total == 0 || done.lost as f64 > 0.02 * done.total as f64 {
            return None;
        }
        let rate = done.bytes as f64 * 8.0 / span.as_secs_f64();
        Some((rate * Self::GAIN).min(MAX_ESTIMATE))
    }
}

/// Incoming bitrate of one stream (a track or one simulcast layer), over 1 s windows.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    bytes: u64,
    window_start: Option<Instant>,
    /// First packet of this window (a stream that resumed mid-window is measured from there).
    first: Option<Instant>,
    /// Smoothed bits per second; keeps its last value while the stream is silent (a paused
    /// layer still costs what it cost when it ran).
    bps: f64,
}

const RATE_WINDOW: Duration = Duration::from_secs(1);

impl RateMeter {
    /// Count one packet's payload (the hot path: an add and a test).
    #[inline]
    pub fn add(&mut self, bytes: usize, now: Instant) {
        self.bytes += bytes as u64;
        if self.first.is_none() {
            self.first = Some(now);
        }
    }

    /// Close the window if it is over.
    pub fn tick(&mut self, now: Instant) {
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            self.bytes = 0;
            return;
        };
        let dt = now.saturating_duration_since(start);
        if dt < RATE_WINDOW {
            return;
        }
        let active = self
            .first
            .map_or(dt, |f| now.saturating_duration_since(f))
            .max(Duration::from_millis(250));
        if self.bytes > 0 {
            // RTP/UDP/SRTP overhead per packet is about 12%: count it.
            let sample = self.bytes as f64 * 8.0 * 1.12 / active.as_secs_f64();
            self.bps = if self.bps == 0.0 {
                sample
            } else {
                0.5 * self.bps + 0.5 * sample
            };
        }
        self.bytes = 0;
        self.first = None;
        self.window_start = Some(now);
    }

    pub fn bps(&self) -> f64 {
        self.bps
    }
}

/// What a layer costs when it was never measured (about 180p / 360p / 720p VP8).
pub fn default_layer_cost(layer: usize) -> f64 {
    match layer {
        0 => 150_000.0,
        1 => 500_000.0,
        _ => 1_500_000.0,
    }
}

/// One video leg of a subscriber, as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoDemand {
    /// The room's presentation (a screen share): served right after audio, before every
    /// camera, and at the highest layer that fits rather than layer by layer.
    pub presentation: bool,
    /// Spotlight or a host: served before the rest of the wall.
    pub high_priority: bool,
    /// Tile area in CSS pixels (larger tiles first within a priority).
    pub area: u64,
    /// Cost of each layer, low to high, in bits per second (one entry: not simulcast).
    pub layer_costs: Vec<f64>,
    /// The highest layer the tile wants (index into `layer_costs`).
    pub desired: usize,
}

/// A leg's allotment: 0 = no video, k = up to layer k − 1.
pub type Level = usize;

/// Indices of `legs` in the order they are served.
fn priority_order(legs: &[VideoDemand]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..legs.len()).collect();
    order.sort_by(|&a, &b| {
        let (la, lb) = (&legs[a], &legs[b]);
        lb.presentation
            .cmp(&la.presentation)
            .then(lb.high_priority.cmp(&la.high_priority))
            .then(lb.area.cmp(&la.area))
            .then(a.cmp(&b))
    });
    order
}

fn cost(leg: &VideoDemand, level: Level) -> f64 {
    match level {
        0 => 0.0,
        l => leg.layer_costs.get(l - 1).copied().unwrap_or(f64::INFINITY),
    }
}

/// The level a leg's tile asks for (its `desired` layer, within the layers it has).
fn wanted(leg: &VideoDemand) -> Level {
    leg.desired.min(leg.layer_costs.len().saturating_sub(1)) + 1
}

/// Share `budget` (bits per second, audio already taken off) among `legs`: the presentation
/// first, at the highest layer up to `desired` that fits (slides stay sharp: a presenter's
/// top layer before anyone's camera); then in priority order everyone's lowest layer, then
/// upgrades towards `desired`, highest priority first. The first leg in priority order always
/// gets its lowest layer.
pub fn allocate(budget: f64, legs: &[VideoDemand]) -> Vec<Level> {
    let mut levels = vec![0; legs.len()];
    let mut left = budget;
    let order = priority_order(legs);
    for (rank, &i) in order.iter().enumerate() {
        if !legs[i].presentation {
            continue;
        }
        let mut l = wanted(&legs[i]);
        while l > 1 && cost(&legs[i], l) > left {
            l -= 1;
        }
        let c = cost(&legs[i], l);
        if c <= left || rank == 0 {
            levels[i] = l;
            left -= c;
        }
    }
    for (rank, &i) in order.iter().enumerate() {
        if legs[i].presentation {
            continue;
        }
        let c = cost(&legs[i], 1);
        if c <= left || rank == 0 {
            levels[i] = 1;
            left -= c;
        }
    }
    for &i in &order {
        if levels[i] == 0 || legs[i].presentation {
            continue;
        }
        let top = wanted(&legs[i]);
        while levels[i] < top {
            let extra = cost(&legs[i], levels[i] + 1) - cost(&legs[i], levels[i]);
            if extra > left {
                break;
            }
            left -= extra;
            levels[i] += 1;
        }
    }
    levels
}

/// Tuning of the [`Allocator`].
#[derive(Debug, Clone)]
pub struct BweConfig {
    /// Share of the estimate that may be allotted (the rest absorbs keyframes and jitter).
    pub usable: f64,
    /// An upgrade needs the estimate to cover the new allotment this many times.
    pub up_margin: f64,
    /// No upgrade sooner than this after a downgrade…
    pub up_hold: Duration,
    /// …doubled (up to this) when a downgrade follows an upgrade within `up_hold`.
    pub max_up_hold: Duration,
    /// While recovering from a downgrade, one layer step up per this interval…
    pub up_step: Duration,
    /// …for this long after the downgrade; later, and before any, upgrades are immediate.
    pub recovery: Duration,
}

impl Default for BweConfig {
    fn default() -> Self {
        Self {
            usable: 0.9,
            up_margin: 1.25,
            up_hold: Duration::from_secs(3),
            max_up_hold: Duration::from_secs(24),
            up_step: Duration::from_secs(1),
            recovery: Duration::from_secs(60),
        }
    }
}

/// How long a probe holds its raised allotment before the estimate must have followed.
pub const PROBE_LEN: Duration = Duration::from_millis(1500);
/// A probe asks for this many times the current budget (at most what the tiles want).
const PROBE_GAIN: f64 = 2.0;
/// Wait between probes after a successful one; doubled after each failure…
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// …up to this.
const PROBE_EVERY_MAX: Duration = Duration::from_secs(30);
/// While nothing has said the link is full, a probe starts as soon as the tiles want more than
/// the budget and asks for all of it, up to this many times the budget.
const EAGER_PROBE_GAIN: f64 = 4.0;
/// An estimate that falls below what flows without loss (GCC's delay half: a queue, or only a
/// busy host) must stay low this long before legs are paused or lowered; loss acts at once.
const DIP_CONFIRM: Duration = Duration::from_secs(1);
/// …unless it falls below this share of what flows.
const DEEP_DIP: f64 = 0.5;

/// A probe in progress: allotments against `budget` instead of the estimate until `until`.
#[derive(Debug, Clone)]
struct Probe {
    until: Instant,
    budget: f64,
    estimate_at_start: f64,
}

/// One subscriber's allotments over time: immediate downgrades, careful upgrades, and probes.
///
/// **Probing.** GCC only learns what the link carries from what is sent, and an SFU sends what
/// it allots: once a subscriber's estimate is below what its tiles want (a backoff on a busy
/// host, a start below the demand), nothing would ever show that more fits — GCC's additive
/// increase near its last backoff is ~60 kbit/s per second. So while some leg gets less than
/// its tile wants, the link has not lost packets lately ([`EstimateCell::may_probe`]) and no
/// downgrade happened within the hold, the allocator raises the allotments to what twice the
/// budget allows (at most the demand) for [`PROBE_LEN`], with real media (resumed legs, higher
/// layers: no padding, so a probe costs nothing the subscriber does not use). The estimator
/// ([`Prober`]) measures what arrives; if it all did, the estimate follows and the raised
/// allotments stay; if not, they go back without counting as congestion, and the next probe
/// waits twice as long ([`PROBE_EVERY`] … [`PROBE_EVERY_MAX`]). A probe that congests the link
/// ends at once (the estimate fell) like any downgrade.
#[derive(Debug, Clone)]
pub struct Allocator {
    cfg: BweConfig,
    hold: Duration,
    last_down: Option<Instant>,
    last_up: Option<Instant>,
    probe: Option<Probe>,
    next_probe: Option<Instant>,
    probe_every: Duration,
    probe_started: bool,
    /// Something said the link is full (loss, a probe that failed or was cut, a lasting dip):
    /// from then on probes wait and ask for twice the budget, not for everything at once.
    link_full: bool,
    /// Since when the estimate, without loss, has been below what the current allotments need.
    dip_since: Option<Instant>,
    /// An estimate was known at an earlier step.
    seen_estimate: bool,
    /// Downgrades and upgrades made (for stats and tests).
    pub downgrades: u64,
    pub upgrades: u64,
    /// Probes started and those after which the estimate had risen.
    pub probes: u64,
    pub probes_won: u64,
}

impl Allocator {
    pub fn new(cfg: BweConfig) -> Self {
        Self {
            hold: cfg.up_hold,
            cfg,
            last_down: None,
            last_up: None,
            probe: None,
            next_probe: None,
            probe_every: PROBE_EVERY,
            probe_started: false,
            link_full: false,
            dip_since: None,
            seen_estimate: false,
            downgrades: 0,
            upgrades: 0,
            probes: 0,
            probes_won: 0,
        }
    }

    /// Whether the last [`Allocator::step`] started a probe (the caller tells the estimator:
    /// [`EstimateCell::start_probe`]).
    pub fn take_probe_start(&mut self) -> bool {
        std::mem::take(&mut self.probe_started)
    }

    /// Whether a probe is in progress.
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// New allotments for `legs` whose current allotments are `current` (same order; `None`
    /// for a leg new to the allocator, which gets what fits at once), given the estimate
    /// (`None`: unknown, nothing limited), the audio forwarded to this subscriber, and whether
    /// the link may be probed now ([`EstimateCell::may_probe`]).
    pub fn step(
        &mut self,
        now: Instant,
        estimate: Option<f64>,
        audio_bps: f64,
        legs: &[VideoDemand],
        current: &[Option<Level>],
        may_probe: bool,
    ) -> Vec<Level> {
        let wanted: Vec<Level> = legs.iter().map(wanted).collect();
        let Some(estimate) = estimate else {
            return wanted;
        };
        let budget = (estimate * self.cfg.usable - audio_bps).max(0.0);
        let first_estimate = !std::mem::replace(&mut self.seen_estimate, true);
        if !may_probe {
            self.link_full = true;
        }
        // A probe in progress: hold its allotments until it ends or the estimate falls.
        let mut probe_ended = false;
        if let Some(p) = &self.probe {
            if !may_probe || estimate < 0.85 * p.estimate_at_start {
                self.probe = None;
                self.link_full = true;
                self.probe_every = (self.probe_every * 2).min(PROBE_EVERY_MAX);
                self.next_probe = Some(now + self.probe_every);
            } else if now >= p.until {
                if estimate >= 1.1 * p.estimate_at_start {
                    self.probes_won += 1;
                    self.probe_every = PROBE_EVERY;
                } else {
                    self.link_full = true;
                    self.probe_every = (self.probe_every * 2).min(PROBE_EVERY_MAX);
                }
                self.next_probe = Some(now + self.probe_every);
                self.probe = None;
                probe_ended = true;
            } else {
                let fit = allocate(p.budget.max(budget), legs);
                return fit.iter().zip(&wanted).map(|(&f, &w)| f.min(w)).collect();
            }
        }
        // Something to raise: the first estimate (legs flowing unlimited until now), or a leg
        // below what its tile wants (new, or paused).
        let to_raise = first_estimate
            || current
                .iter()
                .zip(&wanted)
                .any(|(c, &w)| c.is_none_or(|c| c < w));
        if !self.link_full && may_probe && self.probe.is_none() && to_raise {
            if let Some(raised) = self.eager_probe(now, estimate, budget, legs, &wanted) {
                return raised;
            }
        }
        let fit = allocate(budget, legs);
        // Downgrades: whatever no longer fits, now.
        let mut next: Vec<Level> = current
            .iter()
            .zip(&fit)
            .zip(&wanted)
            .map(|((&c, &f), &w)| c.unwrap_or(f).min(f).min(w))
            .collect();
        let downgraded = next
            .iter()
            .zip(current)
            .any(|(n, c)| c.is_some_and(|c| *n < c));
        if downgraded && probe_ended {
            // A probe the link did not confirm: back to what fits, not a congestion signal.
            self.dip_since = None;
            return next;
        }
        if downgraded && may_probe {
            // No loss: a dip of the estimate (GCC's delay half) must last before it pauses or
            // lowers what flows — on a busy host the delay trend dips and recovers within a
            // second, and every pause costs the leg its video until the next keyframe.
            let flowing: f64 = legs
                .iter()
                .zip(current)
                .map(|(l, c)| c.map_or(0.0, |c| cost(l, c)))
                .sum();
            let since = *self.dip_since.get_or_insert(now);
            if now.saturating_duration_since(since) < DIP_CONFIRM && budget >= DEEP_DIP * flowing {
                return current
                    .iter()
                    .zip(&fit)
                    .zip(&wanted)
                    .map(|((&c, &f), &w)| c.unwrap_or(f).min(w))
                    .collect();
            }
        }
        self.dip_since = None;
        if downgraded {
            if self
                .last_up
                .is_some_and(|u| now.saturating_duration_since(u) < self.hold)
            {
                // The last upgrade did not hold: wait longer before the next one.
                self.hold = (self.hold * 2).min(self.cfg.max_up_hold);
            }
            self.last_down = Some(now);
            self.downgrades += 1;
            return next;
        }
        if let (Some(up), Some(down)) = (self.last_up, self.last_down) {
            if up > down && now.saturating_duration_since(up) >= self.cfg.max_up_hold {
                self.hold = self.cfg.up_hold; // the last upgrade held for long: short hold again
            }
        }
        let since_down = self.last_down.map(|d| now.saturating_duration_since(d));
        if since_down.is_some_and(|d| d < self.hold) {
            return next;
        }
        let roomy = allocate(budget / self.cfg.up_margin, legs);
        if since_down.is_none_or(|d| d >= self.cfg.recovery) {
            // No congestion lately (a tile grew, a leg appeared): whatever fits with headroom,
            // at once.
            for (n, (&r, &w)) in next.iter_mut().zip(roomy.iter().zip(&wanted)) {
                if r.min(w) > *n {
                    *n = r.min(w);
                    self.last_up = Some(now);
                    self.upgrades += 1;
                }
            }
        } else if self
            .last_up
            .is_none_or(|u| now.saturating_duration_since(u) >= self.cfg.up_step)
        {
            // Recovering from a downgrade: one step at a time, the most important leg first.
            for i in priority_order(legs) {
                if roomy[i] > next[i] && next[i] < wanted[i] {
                    next[i] += 1;
                    self.last_up = Some(now);
                    self.upgrades += 1;
                    break;
                }
            }
        }
        if may_probe {
            self.maybe_probe(now, estimate, budget, legs, &wanted, &mut next);
        }
        next
    }

    /// While nothing has said the link is full: a probe at once, for everything the tiles want
    /// (at most [`EAGER_PROBE_GAIN`] × the budget), whenever that is more than the budget gives —
    /// a subscriber's first videos, or the first feedback finding the 10 Mbit/s start below the
    /// demand, keep flowing while the estimator measures instead of being paused for the seconds
    /// GCC takes to climb.
    fn eager_probe(
        &mut self,
        now: Instant,
        estimate: f64,
        budget: f64,
        legs: &[VideoDemand],
        wanted: &[Level],
    ) -> Option<Vec<Level>> {
        let demand: f64 = legs.iter().zip(wanted).map(|(l, &w)| cost(l, w)).sum();
        if demand <= budget {
            return None;
        }
        let probe_budget = demand.min(budget * EAGER_PROBE_GAIN);
        let fit = allocate(budget, legs);
        let raised: Vec<Level> = allocate(probe_budget, legs)
            .iter()
            .zip(wanted)
            .map(|(&r, &w)| r.min(w))
            .collect();
        if !raised.iter().zip(&fit).any(|(r, f)| r > f) {
            return None;
        }
        self.start_probe(now, probe_budget, estimate);
        Some(raised)
    }

    /// A probe at `budget` from `now` for [`PROBE_LEN`], judged against `estimate`.
    fn start_probe(&mut self, now: Instant, budget: f64, estimate: f64) {
        self.probe = Some(Probe {
            until: now + PROBE_LEN,
            budget,
            estimate_at_start: estimate,
        });
        self.probes += 1;
        self.probe_started = true;
    }

    /// Start a probe when some leg gets less than its tile wants and twice the budget would
    /// give it more.
    fn maybe_probe(
        &mut self,
        now: Instant,
        estimate: f64,
        budget: f64,
        legs: &[VideoDemand],
        wanted: &[Level],
        next: &mut [Level],
    ) {
        let due = *self.next_probe.get_or_insert(now + self.probe_every);
        if now < due || next.iter().zip(wanted).all(|(n, w)| n >= w) {
            return;
        }
        let demand: f64 = legs.iter().zip(wanted).map(|(l, &w)| cost(l, w)).sum();
        let probe_budget = (budget * PROBE_GAIN).min(demand).max(budget);
        let raised = allocate(probe_budget, legs);
        if !raised.iter().zip(next.iter()).any(|(r, n)| r > n) {
            return;
        }
        for ((n, &r), &w) in next.iter_mut().zip(&raised).zip(wanted) {
            *n = (*n).max(r.min(w));
        }
        self.start_probe(now, probe_budget, estimate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULCAST: [f64; 3] = [150_000.0, 500_000.0, 1_500_000.0];

    fn leg(high: bool, area: u64, desired: usize) -> VideoDemand {
        VideoDemand {
            presentation: false,
            high_priority: high,
            area,
            layer_costs: SIMULCAST.to_vec(),
            desired,
        }
    }

    #[test]
    fn allocation_table() {
        let host = leg(true, 1280 * 720, 2);
        let wall = |n: usize| -> Vec<VideoDemand> {
            std::iter::once(host.clone())
                .chain((0..n).map(|_| leg(false, 320 * 180, 0)))
                .collect()
        };
        // (budget, legs, expected levels)
        let cases: Vec<(f64, Vec<VideoDemand>, Vec<Level>)> = vec![
            // Plenty: everyone gets what the tile wants.
            (10e6, wall(3), vec![3, 1, 1, 1]),
            // The host first: its high layer, then the wall's low layers.
            (2e6, wall(3), vec![3, 1, 1, 1]),
            // Not enough for the host's high layer and the wall: host middle, wall low.
            (1.0e6, wall(3), vec![2, 1, 1, 1]),
            // 300 kbit/s: everyone low would not fit, the host and one wall tile do.
            (300e3, wall(3), vec![1, 1, 0, 0]),
            // Nothing: the most important video still keeps its lowest layer.
            (0.0, wall(3), vec![1, 0, 0, 0]),
            // Priority beats order: the high-priority leg is served first wherever it is.
            (
                700e3,
                vec![leg(false, 640 * 360, 1), leg(true, 640 * 360, 1)],
                vec![1, 2],
            ),
            // Larger tiles first within a priority.
            (
                200e3,
                vec![leg(false, 100, 0), leg(false, 10_000, 0)],
                vec![0, 1],
            ),
            // A single-layer track: all or nothing.
            (
                100e3,
                vec![
                    VideoDemand {
                        presentation: false,
                        high_priority: true,
                        area: 1,
                        layer_costs: vec![80e3],
                        desired: 0,
                    },
                    VideoDemand {
                        presentation: false,
                        high_priority: false,
                        area: 1,
                        layer_costs: vec![80e3],
                        desired: 0,
                    },
                ],
                vec![1, 0],
            ),
        ];
        for (budget, legs, want) in cases {
            assert_eq!(allocate(budget, &legs), want, "budget {budget}");
        }
    }

    /// The presentation is served right after audio and at its top layer when that fits, while
    /// the cameras (even the host's) wait at their lowest layer or go without; a single-layer
    /// presentation is forwarded before any camera.
    #[test]
    fn presentation_first_at_its_top_layer() {
        let slides = VideoDemand {
            presentation: true,
            area: 320 * 180, // even in a small tile
            ..leg(false, 0, 2)
        };
        let cams = |n: usize| -> Vec<VideoDemand> {
            std::iter::once(slides.clone())
                .chain(std::iter::once(leg(true, 1280 * 720, 2)))
                .chain((0..n).map(|_| leg(false, 320 * 180, 0)))
                .collect()
        };
        // 2.1 Mbit/s: the slides' top layer (1.5M), then every camera's lowest (4 × 150k).
        assert_eq!(allocate(2.1e6, &cams(3)), vec![3, 1, 1, 1, 1]);
        // 1.6 Mbit/s: the slides' top layer; no room for a camera upgrade, nor for all cameras.
        assert_eq!(allocate(1.6e6, &cams(3)), vec![3, 0, 0, 0, 0]);
        // Too little for the top: the highest layer that fits, not the lowest.
        assert_eq!(allocate(800e3, &cams(3)), vec![2, 1, 1, 0, 0]);
        // Nothing: the presentation keeps its lowest layer, the cameras go.
        assert_eq!(allocate(0.0, &cams(3)), vec![1, 0, 0, 0, 0]);
        // Without the presentation the host would have had its top layer at 2.1 Mbit/s.
        assert_eq!(allocate(2.1e6, &cams(3)[1..]), vec![3, 1, 1, 1]);
        // A single-layer presentation comes before the cameras.
        let single = VideoDemand {
            presentation: true,
            high_priority: false,
            area: 1,
            layer_costs: vec![400e3],
            desired: 0,
        };
        assert_eq!(
            allocate(500e3, &[leg(true, 1280 * 720, 2), single]),
            vec![0, 1]
        );
    }

    /// A simulated subscriber: host high + 3 wall tiles; the link drops to 300 kbit/s at 10 s
    /// and recovers at 30 s. Downgrade at once, no flapping while the link is low, a gradual
    /// climb after it recovers.
    #[test]
    fn bandwidth_drop_and_recovery() {
        let legs: Vec<VideoDemand> = std::iter::once(leg(true, 1280 * 720, 2))
            .chain((0..3).map(|_| leg(false, 320 * 180, 0)))
            .collect();
        let mut a = Allocator::new(BweConfig::default());
        let t0 = crate::testkit::SimClock::start().now();
        let mut cur: Vec<Option<Level>> = vec![None; legs.len()];
        let mut history = Vec::new();
        for tick in 0..800u64 {
            let now = t0 + Duration::from_millis(100 * tick);
            let secs = tick / 10;
            // A GCC-like estimate: high, then the capped link, then climbing 8%/s.
            let estimate = match secs {
                0..=9 => 5e6,
                10..=29 => 300e3,
                _ => (300e3 * 1.08f64.powf((tick as f64 - 300.0) / 10.0)).min(5e6),
            };
            let next = a.step(now, Some(estimate), 40e3, &legs, &cur, false);
            cur = next.iter().map(|&l| Some(l)).collect();
            history.push((tick, next));
        }
        let at = |tick: u64| history[tick as usize].1.clone();
        assert_eq!(at(5), vec![3, 1, 1, 1], "starts with what the tiles want");
        // 300 kbit/s × 0.9 − 40 kbit/s of audio: the host's low layer only.
        assert_eq!(
            at(100),
            vec![1, 0, 0, 0],
            "the drop applies on the first tick"
        );
        // While the link stays low nothing changes (no upgrade attempts that would fail).
        assert!((100..300).all(|t| at(t) == vec![1, 0, 0, 0]));
        // After recovery everything comes back, one step at a time.
        assert_eq!(at(799), vec![3, 1, 1, 1]);
        let changes: Vec<_> = history
            .windows(2)
            .filter(|w| w[0].1 != w[1].1)
            .map(|w| w[1].0)
            .collect();
        for pair in changes.windows(2).filter(|p| p[0] >= 300) {
            assert!(
                pair[1] - pair[0] >= 10,
                "upgrades at least 1 s apart: {changes:?}"
            );
        }
        assert_eq!(a.downgrades, 1);
    }

    /// An estimate that hovers around the cost of the next layer must not make the leg flap:
    /// an upgrade taken back doubles the hold.
    #[test]
    fn no_flapping_at_the_edge_of_a_layer() {
        let legs = vec![leg(true, 1280 * 720, 2)];
        let mut a = Allocator::new(BweConfig::default());
        let t0 = crate::testkit::SimClock::start().now();
        let mut cur: Level = 3;
        let mut switches = 0;
        for tick in 0..1200u64 {
            let now = t0 + Duration::from_millis(100 * tick);
            // The link carries ~700 kbit/s: layer 1 fits, layer 2 does not. Whenever layer 2
            // is forwarded the estimate collapses (overuse), otherwise it creeps above the
            // layer-2 threshold (GCC's increase without probing).
            let estimate = if cur == 3 { 600e3 } else { 2.5e6 };
            let next = a.step(now, Some(estimate), 0.0, &legs, &[Some(cur)], false)[0];
            if next != cur {
                switches += 1;
            }
            cur = next;
        }
        // 2 minutes: a fixed 3 s hold would give ~77 switches; the doubling hold (3, 6, 12,
        // 24, 24… s) gives 15.
        assert!(switches <= 16, "{switches} switches");
    }

    #[test]
    fn a_growing_tile_switches_up_at_once_without_congestion() {
        let mut a = Allocator::new(BweConfig::default());
        let now = crate::testkit::SimClock::start().now();
        let small = vec![leg(false, 320 * 180, 0)];
        assert_eq!(a.step(now, Some(5e6), 0.0, &small, &[None], false), vec![1]);
        let big = vec![leg(true, 1280 * 720, 2)];
        let later = now + Duration::from_millis(100);
        assert_eq!(
            a.step(later, Some(5e6), 0.0, &big, &[Some(1)], false),
            vec![3]
        );
        // The same growth with too little bandwidth stops where the headroom ends.
        let mut b = Allocator::new(BweConfig::default());
        assert_eq!(b.step(now, Some(1e6), 0.0, &small, &[None], false), vec![1]);
        assert_eq!(
            b.step(later, Some(1e6), 0.0, &big, &[Some(1)], false),
            vec![2]
        );
    }

    #[test]
    fn unknown_estimate_limits_nothing() {
        let legs = vec![leg(false, 1, 2), leg(false, 1, 0)];
        let mut a = Allocator::new(BweConfig::default());
        assert_eq!(
            a.step(
                crate::testkit::SimClock::start().now(),
                None,
                0.0,
                &legs,
                &[None, Some(0)],
                true
            ),
            vec![3, 1]
        );
    }

    #[test]
    fn rate_meter_windows_and_keeps_the_last_rate() {
        let mut m = RateMeter::default();
        let t0 = crate::testkit::SimClock::start().now();
        m.tick(t0);
        m.add(12_500, t0); // 100 kbit in one second
        m.tick(t0 + Duration::from_millis(500));
        assert_eq!(m.bps(), 0.0, "window not over");
        m.tick(t0 + Duration::from_secs(1));
        assert!((m.bps() - 112_000.0).abs() < 1.0, "{}", m.bps());
        m.tick(t0 + Duration::from_secs(2)); // silent second
        assert!((m.bps() - 112_000.0).abs() < 1.0);
        // A stream that resumes for the last half of a window is measured over that half.
        m.add(6_250, t0 + Duration::from_millis(2500));
        m.tick(t0 + Duration::from_secs(3));
        assert!((m.bps() - 112_000.0).abs() < 1.0, "{}", m.bps());
    }

    /// 600 kbit/s arriving, then a link that carries 300 kbit/s and drops the rest: the bound
    /// falls below 300 kbit/s within three feedback intervals, then climbs once loss is gone.
    #[test]
    fn loss_bound_cuts_to_the_acknowledged_rate_and_climbs_back() {
        let mut b = LossBound::default();
        let t0 = crate::testkit::SimClock::start().now();
        let tick = |i: u64| t0 + Duration::from_millis(100 * i);
        for i in 0..20 {
            b.update(tick(i), 7_500, 0, 60); // 600 kbit/s, no loss
        }
        assert!(b.bits_per_second().is_infinite());
        let mut cut_at = None;
        for i in 20..40 {
            b.update(tick(i), 3_750, 30, 60); // half arrives
            if cut_at.is_none() && b.bits_per_second() < 300_000.0 {
                cut_at = Some(i - 20);
            }
        }
        assert!(cut_at.is_some_and(|n| n <= 3), "{cut_at:?}");
        let low = b.bits_per_second();
        for i in 40..140 {
            b.update(tick(i), 2_500, 0, 20); // 200 kbit/s, no loss
        }
        assert!(
            b.bits_per_second() > low * 3.0,
            "{} vs {low}",
            b.bits_per_second()
        );
    }

    #[test]
    fn estimate_cell_is_unknown_until_feedback() {
        let cell = Arc::new(EstimateCell::default());
        assert_eq!(cell.estimate(), None);
        let mut e = SubscriberEstimator::new(cell.clone());
        e.on_reports(crate::testkit::SimClock::start().now(), &[]);
        assert_eq!(cell.estimate(), None, "an empty batch is no feedback");
        cell.store(1e6);
        assert_eq!(cell.estimate(), Some(1e6));
    }

    /// A simulated subscriber link: `capacity` bits/s; each 100 ms the allotted legs' cost is
    /// sent, what exceeds the capacity is lost, and the [`Prober`] sees the feedback. The
    /// modelled GCC is stuck (it never climbs on its own, as after a backoff on a busy host);
    /// on loss it backs off to 85 % of what arrived.
    fn simulate(
        capacity: f64,
        start_estimate: f64,
        legs: &[VideoDemand],
        secs: u64,
    ) -> (Allocator, Vec<(u64, f64, Vec<Level>)>) {
        simulate_with(capacity, start_estimate, legs, secs, 0, false)
    }

    /// [`simulate`], with the link reporting loss for the first `lossy_first` ticks (no
    /// probing then), and with `dips`: every 1.5 s the estimate the allocator sees dips to 80 %
    /// for 300 ms without loss (GCC's delay half on a busy host).
    fn simulate_with(
        capacity: f64,
        start_estimate: f64,
        legs: &[VideoDemand],
        secs: u64,
        lossy_first: u64,
        dips: bool,
    ) -> (Allocator, Vec<(u64, f64, Vec<Level>)>) {
        let mut a = Allocator::new(BweConfig::default());
        let mut prober = Prober::default();
        let mut generation = 0;
        let mut estimate = start_estimate;
        let mut lossy_until = lossy_first;
        let t0 = crate::testkit::SimClock::start().now();
        let mut cur: Vec<Option<Level>> = vec![None; legs.len()];
        let mut history = Vec::new();
        for tick in 0..secs * 10 {
            let now = t0 + Duration::from_millis(100 * tick);
            let seen = if dips && tick % 15 >= 12 {
                0.8 * estimate
            } else {
                estimate
            };
            let next = a.step(now, Some(seen), 0.0, legs, &cur, tick >= lossy_until);
            if a.take_probe_start() {
                generation += 1;
            }
            let sent: f64 = legs.iter().zip(&next).map(|(l, &n)| cost(l, n)).sum();
            let arrived = sent.min(capacity);
            // 1,000-byte packets, one report per packet, 100 ms of them.
            let total = (sent / 8.0 / 1000.0 / 10.0).round() as usize;
            let got = (arrived / 8.0 / 1000.0 / 10.0).round() as usize;
            if got < total {
                estimate = (arrived * 0.85).min(estimate);
                lossy_until = tick + 30;
            }
            if let Some(found) =
                prober.update(now, generation, estimate, got * 1000, total - got, total)
            {
                estimate = estimate.max(found);
            }
            cur = next.iter().map(|&l| Some(l)).collect();
            history.push((tick, estimate, next));
        }
        (a, history)
    }

    fn wall(n: usize, bps: f64) -> Vec<VideoDemand> {
        (0..n)
            .map(|_| VideoDemand {
                presentation: false,
                high_priority: false,
                area: 320 * 180,
                layer_costs: vec![bps],
                desired: 0,
            })
            .collect()
    }

    /// The 20 → 20 case: 19 videos of 1.2 Mbit/s (23 Mbit/s) on a link that carries far more,
    /// with an estimate stuck at 10 Mbit/s. Nothing has said the link is full, so the first
    /// step probes for everything: every video flows from the start, the probe lifts the
    /// estimate, and no more probes are needed.
    #[test]
    fn probing_finds_a_fast_link() {
        let legs = wall(19, 1.2e6);
        let (a, history) = simulate(100e6, 10e6, &legs, 30);
        let all = |t: usize| history[t].2.iter().all(|&l| l == 1);
        assert!((0..history.len()).all(all), "every video from the start");
        assert!(history[29].1 > 23e6, "estimate {}", history[29].1);
        assert_eq!((a.probes, a.probes_won), (1, 1));
        assert_eq!(a.downgrades, 0);
    }

    /// The same link after loss at the start (the link said it was full): no eager probe; the
    /// ordinary probes (twice the budget, 2 s apart) still find it within 10 s of the loss.
    #[test]
    fn probing_finds_a_fast_link_after_loss() {
        let legs = wall(19, 1.2e6);
        let (a, history) = simulate_with(100e6, 10e6, &legs, 30, 10, false);
        let all = |t: usize| history[t].2.iter().all(|&l| l == 1);
        assert!(!all(5), "starts below the demand: {:?}", history[5].2);
        let first_all = (0..history.len()).find(|&t| all(t));
        assert!(
            first_all.is_some_and(|t| t <= 100),
            "all videos after {first_all:?} ticks"
        );
        let t = first_all.unwrap_or(0);
        assert!((t..history.len()).all(all), "and they stay");
        assert!(a.probes_won >= 1 && a.probes <= 6, "{} probes", a.probes);
        assert_eq!(a.downgrades, 0, "a probe that holds is no downgrade");
    }

    /// A link that carries 3 Mbit/s under the same demand: probes fail (loss), the allotment
    /// comes back below the capacity within a probe's length, and the probes back off.
    #[test]
    fn probing_a_full_link_backs_off() {
        let legs = wall(19, 1.2e6);
        let (a, history) = simulate(3e6, 2.5e6, &legs, 120);
        let over: Vec<u64> = history
            .iter()
            .filter(|(_, _, lv)| legs.iter().zip(lv).map(|(l, &n)| cost(l, n)).sum::<f64>() > 3e6)
            .map(|(t, _, _)| *t)
            .collect();
        // Over the capacity only while probing: runs of at most PROBE_LEN (15 ticks).
        for run in over.split(|_| false) {
            let mut len = 1;
            for w in run.windows(2) {
                len = if w[1] == w[0] + 1 { len + 1 } else { 1 };
                assert!(len <= 15, "over capacity for {len} ticks: {over:?}");
            }
        }
        assert!(a.probes <= 8, "{} probes in 2 minutes", a.probes);
        assert_eq!(a.probes_won, 0);
        let last = &history[history.len() - 1];
        let sent: f64 = legs.iter().zip(&last.2).map(|(l, &n)| cost(l, n)).sum();
        assert!(sent <= 3e6 && sent > 1e6, "ends at {sent} bit/s");
    }

    /// No probing while the estimator reports recent loss (the capped-link case).
    #[test]
    fn no_probe_while_lossy() {
        let legs = wall(4, 1.2e6);
        let mut a = Allocator::new(BweConfig::default());
        let t0 = crate::testkit::SimClock::start().now();
        let mut cur = vec![None; legs.len()];
        for tick in 0..300u64 {
            let now = t0 + Duration::from_millis(100 * tick);
            let next = a.step(now, Some(2e6), 0.0, &legs, &cur, false);
            cur = next.iter().map(|&l| Some(l)).collect();
        }
        assert_eq!(a.probes, 0);
    }

    /// Count, per leg, how often it was paused or resumed after `from`.
    fn pause_flips(history: &[(u64, f64, Vec<Level>)], from: usize) -> usize {
        history[from..]
            .windows(2)
            .map(|w| {
                w[0].2
                    .iter()
                    .zip(&w[1].2)
                    .filter(|(a, b)| (**a == 0) != (**b == 0))
                    .count()
            })
            .sum()
    }

    /// The 20 → 20 trace: an estimate that starts under the demand on a fast link and dips by
    /// 20 % for 300 ms every 1.5 s without loss. No leg is ever paused (the old allocator
    /// paused half of them at the first feedback and flipped legs at every dip).
    #[test]
    fn no_pause_resume_churn_while_the_estimate_climbs() {
        let legs = wall(19, 1.06e6);
        let (a, history) = simulate_with(1e9, 10e6, &legs, 30, 0, true);
        assert!(
            history.iter().all(|(_, _, lv)| lv.iter().all(|&l| l == 1)),
            "a leg was paused"
        );
        assert_eq!(pause_flips(&history, 0), 0);
        assert_eq!(a.downgrades, 0);
        assert!(a.probes <= 2, "{} probes", a.probes);
    }

    /// Legs already flowing (allotted before the first feedback) when the first estimate, the
    /// 10 Mbit/s start, arrives under their 20 Mbit/s: nothing is paused while the probe runs.
    #[test]
    fn the_first_estimate_below_the_demand_pauses_nothing() {
        let legs = wall(19, 1.06e6);
        let mut a = Allocator::new(BweConfig::default());
        let t0 = crate::testkit::SimClock::start().now();
        let flowing = vec![Some(1); legs.len()];
        let first = a.step(t0, Some(10e6), 50e3, &legs, &flowing, true);
        assert_eq!(first, vec![1; legs.len()]);
        assert!(a.take_probe_start() && a.probing());
        // The estimator measured the probe and restarted GCC above the demand.
        let mut cur = first;
        for tick in 1..40u64 {
            let now = t0 + Duration::from_millis(100 * tick);
            let e = if tick < 10 { 10e6 } else { 25e6 };
            let flowing: Vec<Option<Level>> = cur.iter().map(|&l| Some(l)).collect();
            cur = a.step(now, Some(e), 50e3, &legs, &flowing, true);
            assert_eq!(cur, vec![1; legs.len()], "tick {tick}");
        }
        assert_eq!((a.probes, a.probes_won, a.downgrades), (1, 1, 0));
    }

    /// What flows at 25 Mbit/s when the estimate falls to 12 Mbit/s: without loss only once
    /// the dip has lasted [`DIP_CONFIRM`]; with loss, or a fall below half of what flows, at
    /// once.
    #[test]
    fn a_dip_without_loss_must_last_loss_acts_at_once() {
        let legs = wall(19, 1.06e6);
        let t0 = crate::testkit::SimClock::start().now();
        let run = |low: f64, may_probe: bool| -> Option<u64> {
            let mut a = Allocator::new(BweConfig::default());
            let mut cur = vec![None; legs.len()];
            for tick in 0..60u64 {
                let now = t0 + Duration::from_millis(100 * tick);
                // Loss at the start: the link said it was full (no eager probe on the dip).
                let (e, ok) = if tick < 30 {
                    (25e6, tick >= 5)
                } else {
                    (low, may_probe)
                };
                let next = a.step(now, Some(e), 0.0, &legs, &cur, ok);
                if tick < 30 {
                    assert!(next.iter().all(|&l| l == 1));
                } else if next.contains(&0) {
                    return Some(tick - 30);
                }
                cur = next.iter().map(|&l| Some(l)).collect();
            }
            None
        };
        assert_eq!(run(12e6, true), Some(10), "a delay dip acts after 1 s");
        assert_eq!(run(12e6, false), Some(0), "loss acts at once");
        assert_eq!(run(5e6, true), Some(0), "a deep dip acts at once");
    }
}
