//! The numbers `rakor loadtest` reports, computed by plain functions from the bots'
//! [`Report`] snapshots: counters over the measurement window (end snapshot minus start
//! snapshot), sequence-number based loss, nearest-rank percentiles of join times, and the
//! summary as a Markdown table (stdout) or JSON (`--report-json`).

use super::scenario::RakorFigures;
use super::server_log::FwdLatency;
use rakor_client::Report;
use rakor_proto::TrackKind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a bot does in the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BotRole {
    /// Mesh: publishes audio (+ video) and, like every participant, receives everyone else.
    Publisher,
    /// Mesh: publishes nothing, receives everyone.
    Subscriber,
    /// Rakor: the command room (role host): publishes, sets the spotlight, shows the wall.
    Host,
    /// Rakor: a site: publishes, shows the host large and the spotlight medium.
    Site,
    /// Rakor: receive only (token role viewer), shows what a site shows.
    Viewer,
}

impl BotRole {
    pub fn plural(self) -> &'static str {
        match self {
            BotRole::Publisher => "publishers",
            BotRole::Subscriber => "subscribers",
            BotRole::Host => "host",
            BotRole::Site => "sites",
            BotRole::Viewer => "viewers",
        }
    }

    /// Whether bots of this role publish media.
    pub fn publishes(self) -> bool {
        matches!(self, BotRole::Publisher | BotRole::Host | BotRole::Site)
    }
}

/// Received-packet counters, from one remote track or summed over several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecvCounters {
    pub packets: u64,
    /// RTP payload bytes (headers and padding excluded), as the cascade's
    /// `rakor_cascade_bytes_total` counts them.
    #[serde(default)]
    pub bytes: u64,
    /// Packets missing by forward jumps of the RTP sequence number.
    pub seq_gaps: u64,
    /// Packets whose sequence number went backwards (late, retransmitted, or duplicated).
    pub out_of_order: u64,
    /// Of those, packets that filled a gap counted in `seq_gaps` (repaired loss).
    pub gaps_filled: u64,
    /// PLIs the bot sent for the track (rakor-client asks while waiting for a first keyframe).
    pub plis_sent: u64,
    /// Packets of audio tracks.
    pub audio_packets: u64,
    /// Video packets per simulcast layer (0 = q … 2 = f) by payload; a plain video track is 0.
    /// Cameras only: a screen share counts in `screen_layers`.
    pub video_layers: [u64; 3],
    /// Packets of screen-share (presentation) tracks per simulcast layer.
    #[serde(default)]
    pub screen_layers: [u64; 3],
}

impl RecvCounters {
    pub fn add(&mut self, o: &RecvCounters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.seq_gaps += o.seq_gaps;
        self.out_of_order += o.out_of_order;
        self.gaps_filled += o.gaps_filled;
        self.plis_sent += o.plis_sent;
        self.audio_packets += o.audio_packets;
        for (a, b) in self.video_layers.iter_mut().zip(o.video_layers) {
            *a += b;
        }
        for (a, b) in self.screen_layers.iter_mut().zip(o.screen_layers) {
            *a += b;
        }
    }

    pub fn loss_pct(&self) -> Option<f64> {
        loss_pct(self.packets, self.seq_gaps, self.out_of_order)
    }

    /// Gaps that stayed gaps: `seq_gaps - gaps_filled`.
    pub fn unrecovered(&self) -> u64 {
        self.seq_gaps.saturating_sub(self.gaps_filled)
    }
}

/// Loss in percent by sequence numbers: `seq_gaps / (packets - out_of_order + seq_gaps)`, i.e.
/// missing packets over the span of sequence numbers seen in order. A packet recovered later by
/// a NACK retransmission counts as a gap (then as out of order), so this is the loss *before*
/// retransmission: an upper bound of what a decoder misses. `None` when nothing was expected.
pub fn loss_pct(packets: u64, seq_gaps: u64, out_of_order: u64) -> Option<f64> {
    let expected = packets.saturating_sub(out_of_order) + seq_gaps;
    (expected > 0).then(|| seq_gaps as f64 * 100.0 / expected as f64)
}

/// One bot's counters over the measurement window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowCounters {
    /// RTP packets written by all local tracks.
    pub packets_sent: u64,
    pub nacks_received: u64,
    pub plis_received: u64,
    pub firs_received: u64,
    /// Received counters summed per sending participant (participant id; `?` if unknown).
    pub received: BTreeMap<String, RecvCounters>,
}

/// `end - start` per counter (a track missing from `start` counts from zero).
pub fn window_counters(start: Option<&Report>, end: &Report) -> WindowCounters {
    let mut w = WindowCounters::default();
    for (key, s) in &end.sent {
        let before = start.and_then(|r| r.sent.get(key));
        let d = |now: u64, f: fn(&rakor_client::SentTrackStats) -> u64| {
            now.saturating_sub(before.map_or(0, f))
        };
        w.packets_sent += d(s.packets, |t| t.packets);
        w.nacks_received += d(s.nacks_received, |t| t.nacks_received);
        w.plis_received += d(s.plis_received, |t| t.plis_received);
        w.firs_received += d(s.firs_received, |t| t.firs_received);
    }
    for (id, t) in &end.received {
        let before = start.and_then(|r| r.received.get(id));
        let d = |now: u64, f: fn(&rakor_client::ReceivedTrackStats) -> u64| {
            now.saturating_sub(before.map_or(0, f))
        };
        let from = t
            .participant_id
            .as_ref()
            .map_or_else(|| "?".to_owned(), |p| p.0.clone());
        let packets = d(t.packets, |t| t.packets);
        let mut video_layers = [0u64; 3];
        if t.kind == TrackKind::Video {
            for (i, n) in video_layers.iter_mut().enumerate() {
                let now = t.layer_packets.get(i).copied().unwrap_or(0);
                let was = before
                    .and_then(|b| b.layer_packets.get(i).copied())
                    .unwrap_or(0);
                *n = now.saturating_sub(was);
            }
        }
        let screen = t.source == Some(rakor_proto::TrackSource::Screen);
        let (video_layers, screen_layers) = if screen {
            ([0; 3], video_layers)
        } else {
            (video_layers, [0; 3])
        };
        w.received.entry(from).or_default().add(&RecvCounters {
            packets,
            bytes: d(t.bytes, |t| t.bytes),
            seq_gaps: d(t.seq_gaps, |t| t.seq_gaps),
            out_of_order: d(t.out_of_order, |t| t.out_of_order),
            gaps_filled: d(t.gaps_filled, |t| t.gaps_filled),
            plis_sent: d(t.plis_sent, |t| t.plis_sent),
            audio_packets: if t.kind == TrackKind::Audio {
                packets
            } else {
                0
            },
            video_layers,
            screen_layers,
        });
    }
    w
}

/// Nearest-rank percentile (`p` in 0..=100) of ascending `sorted` values: the smallest value
/// with at least p % of the values at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// p50, p95 and max of some durations (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    Some(Spread {
        count: v.len(),
        p50: percentile(&v, 50.0)?,
        p95: percentile(&v, 95.0)?,
        max: *v.last()?,
    })
}

/// One bot, as reported in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BotSummary {
    pub identity: String,
    pub role: BotRole,
    /// The role in its token: host, participant.
    pub token_role: String,
    pub participant_id: Option<String>,
    /// WebSocket connect started → `joined` received.
    pub joined_ms: Option<f64>,
    /// WebSocket connect started → media flowing (see docs/benchmarks.md).
    pub media_ms: Option<f64>,
    pub error: Option<String>,
    /// The session ended before the bot left (the server's leave reason, or closed).
    pub ended: Option<String>,
    /// Peer connection states at the end of the window.
    pub publisher_state: Option<String>,
    pub subscriber_state: Option<String>,
    pub packets_sent: u64,
    pub nacks_received: u64,
    pub plis_received: u64,
    pub firs_received: u64,
    /// Per sending participant, by identity (participant id for one that is not a bot).
    pub received: BTreeMap<String, PeerReceived>,
    /// The rakor scenario's figures for this bot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rakor: Option<RakorFigures>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PeerReceived {
    pub packets: u64,
    /// RTP payload bytes.
    #[serde(default)]
    pub bytes: u64,
    pub seq_gaps: u64,
    pub out_of_order: u64,
    pub gaps_filled: u64,
    /// `seq_gaps - gaps_filled`: gaps no late or retransmitted packet filled.
    pub unrecovered: u64,
    pub plis_sent: u64,
    pub loss_pct: Option<f64>,
    pub audio_packets: u64,
    /// Video packets per simulcast layer (q, h, f), cameras.
    pub video_layers: [u64; 3],
    /// Presentation (screen share) packets per simulcast layer (q, h, f).
    pub screen_layers: [u64; 3],
}

impl From<RecvCounters> for PeerReceived {
    fn from(c: RecvCounters) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
            seq_gaps: c.seq_gaps,
            out_of_order: c.out_of_order,
            gaps_filled: c.gaps_filled,
            unrecovered: c.unrecovered(),
            plis_sent: c.plis_sent,
            loss_pct: c.loss_pct(),
            audio_packets: c.audio_packets,
            video_layers: c.video_layers,
            screen_layers: c.screen_layers,
        }
    }
}

impl PeerReceived {
    pub fn video_packets(&self) -> u64 {
        self.video_layers.iter().sum()
    }
}

/// The totals of one role.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleSummary {
    pub role: String,
    pub bots: usize,
    /// Bots whose media was flowing by the end of the join phase.
    pub joined: usize,
    /// Bots whose session ended before they left (e.g. the server's `leave {media_failed}`).
    pub dropped: usize,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// `packets_received` ÷ the window.
    pub received_per_second: f64,
    pub seq_gaps: u64,
    pub out_of_order: u64,
    /// Sequence gaps that no late or retransmitted packet filled (`seq_gaps - gaps_filled`).
    pub unrecovered: u64,
    pub loss_pct: Option<f64>,
    /// Mesh: (receiving bot, publishing bot) pairs, the bot itself excluded, both joined.
    /// Rakor: (receiving bot, publishing bot) pairs whose video the receiver shows.
    pub pairs_expected: usize,
    /// Of those, pairs with at least one packet (rakor: video packet) received in the window.
    pub pairs_with_media: usize,
    pub nacks_received: u64,
    pub plis_received: u64,
    pub firs_received: u64,
    pub plis_sent: u64,
    pub join_joined_ms: Option<Spread>,
    pub join_media_ms: Option<Spread>,
}

/// Which senders a bot is expected to receive from (`pairs_expected`), and what counts.
pub enum Pairs<'a> {
    /// Mesh: every publishing bot that joined (the identities), any packet counts.
    AnyMediaFrom(&'a [String]),
    /// Rakor: the senders whose video the bot shows, by bot; a video packet counts.
    VideoFrom(&'a dyn Fn(&BotSummary) -> Vec<String>),
}

/// Sum the bots of `role`.
pub fn role_summary(
    role: BotRole,
    bots: &[BotSummary],
    pairs: &Pairs<'_>,
    window_s: f64,
) -> RoleSummary {
    let mine: Vec<&BotSummary> = bots.iter().filter(|b| b.role == role).collect();
    let mut recv = RecvCounters::default();
    let (mut pairs_expected, mut pairs_with_media) = (0, 0);
    for b in &mine {
        for r in b.received.values() {
            recv.add(&RecvCounters {
                packets: r.packets,
                bytes: r.bytes,
                seq_gaps: r.seq_gaps,
                out_of_order: r.out_of_order,
                gaps_filled: r.gaps_filled,
                plis_sent: r.plis_sent,
                audio_packets: r.audio_packets,
                video_layers: r.video_layers,
                screen_layers: r.screen_layers,
            });
        }
        if b.participant_id.is_none() {
            continue;
        }
        match pairs {
            Pairs::AnyMediaFrom(publishers) => {
                for p in publishers.iter().filter(|p| **p != b.identity) {
                    pairs_expected += 1;
                    if b.received.get(p).is_some_and(|r| r.packets > 0) {
                        pairs_with_media += 1;
                    }
                }
            }
            Pairs::VideoFrom(expected) => {
                for p in expected(b).iter().filter(|p| **p != b.identity) {
                    pairs_expected += 1;
                    if b.received.get(p).is_some_and(|r| r.video_packets() > 0) {
                        pairs_with_media += 1;
                    }
                }
            }
        }
    }
    let joined: Vec<f64> = mine.iter().filter_map(|b| b.joined_ms).collect();
    let media: Vec<f64> = mine.iter().filter_map(|b| b.media_ms).collect();
    RoleSummary {
        role: role.plural().to_owned(),
        bots: mine.len(),
        joined: media.len(),
        dropped: mine.iter().filter(|b| b.ended.is_some()).count(),
        packets_sent: mine.iter().map(|b| b.packets_sent).sum(),
        packets_received: recv.packets,
        received_per_second: if window_s > 0.0 {
            recv.packets as f64 / window_s
        } else {
            0.0
        },
        seq_gaps: recv.seq_gaps,
        out_of_order: recv.out_of_order,
        unrecovered: recv.unrecovered(),
        loss_pct: recv.loss_pct(),
        pairs_expected,
        pairs_with_media,
        nacks_received: mine.iter().map(|b| b.nacks_received).sum(),
        plis_received: mine.iter().map(|b| b.plis_received).sum(),
        firs_received: mine.iter().map(|b| b.firs_received).sum(),
        plis_sent: recv.plis_sent,
        join_joined_ms: spread(&joined),
        join_media_ms: spread(&media),
    }
}

/// The server process's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSummary {
    pub pid: u32,
    pub clk_tck: u64,
    /// Average cores used over the window (1.0 = one core busy all the time).
    pub cpu_cores_avg: Option<f64>,
    pub cpu_window_s: f64,
    /// VmRSS before the first bot joined.
    pub rss_start_kib: Option<u64>,
    /// VmRSS at the end of the window, every bot still in the room.
    pub rss_end_kib: Option<u64>,
    /// VmHWM (the process's peak resident memory so far) at the end of the window.
    pub rss_peak_kib: Option<u64>,
    /// VmRSS after every bot left (and a 2 s pause).
    pub rss_after_leave_kib: Option<u64>,
    /// Bots in the room at the end of the window.
    pub participants: usize,
    /// (end − start) ÷ participants.
    pub rss_per_participant_kib: Option<f64>,
    /// (peak − start) ÷ participants.
    pub rss_peak_per_participant_kib: Option<f64>,
}

/// The machine the run shared: load averages and the tool's own CPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineSummary {
    /// Online CPUs.
    pub cpus: Option<usize>,
    /// `/proc/loadavg` (1, 5, 15 min) before the first bot connected and at the end of the
    /// window.
    pub loadavg_start: Option<[f64; 3]>,
    pub loadavg_end: Option<[f64; 3]>,
    /// This `rakor loadtest` process (all bots) over the window, in cores.
    pub loadtest_cpu_cores_avg: Option<f64>,
}

/// `(end - start) / participants`, in KiB.
pub fn per_participant_kib(start: u64, end: u64, participants: usize) -> Option<f64> {
    (participants > 0).then(|| (end as f64 - start as f64) / participants as f64)
}

/// Everything `rakor loadtest` prints and writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub url: String,
    pub room: String,
    /// `mesh` or `rakor`.
    pub scenario: String,
    pub publishers: usize,
    pub audio_only: usize,
    pub subscribers: usize,
    /// One of the subscribers is the host (`command-room`).
    pub host: bool,
    pub video_layers_requested: u8,
    /// What publishers really send (3 with simulcast, else 1).
    pub video_layers_sent: u8,
    pub duration_s: f64,
    /// Length of the measured window: everyone joined → duration over (or Ctrl-C); when the
    /// joins did not complete, the join phase.
    pub window_s: f64,
    /// Which of the two `window_s` is.
    pub window: String,
    /// `completed`, `interrupted` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
    pub roles: Vec<RoleSummary>,
    /// The rakor scenario's figures per role (same order as `roles`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rakor_roles: Vec<(String, RakorFigures)>,
    pub server: Option<ServerSummary>,
    pub machine: Option<MachineSummary>,
    /// Forwarding latency added by the server, from its log (`--server-log`).
    pub fwd_latency: Option<FwdLatency>,
    /// Why `fwd_latency` is missing.
    pub fwd_latency_note: Option<String>,
    pub notes: Vec<String>,
    /// What rakor-client does not count, so the summary cannot show it.
    pub not_measured: Vec<String>,
    pub bots: Vec<BotSummary>,
}

/// A Markdown table whose columns are padded to line up in a terminal.
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    // At least 3 wide: a separator cell needs `---` (or `--:`).
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count().max(3)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            let cell = cells.next().unwrap_or("");
            let pad = w.saturating_sub(cell.chars().count());
            // Numbers read better right-aligned; the first column is a label.
            if i == 0 {
                let _ = write!(s, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{cell} |", " ".repeat(pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&mut headers.iter().copied());
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        if i == 0 {
            let _ = write!(out, " {} |", "-".repeat(*w));
        } else {
            let _ = write!(out, " {}: |", "-".repeat(w.saturating_sub(1)));
        }
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or_else(|| "n/a".to_owned(), |ms| format!("{:.2} s", ms / 1000.0))
}

fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.3}"))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// The summary as printed on stdout: a heading line, the per-role table, the server table and
/// the notes.
pub fn render(s: &Summary) -> String {
    let who = if s.scenario == "rakor" {
        format!(
            "rakor scenario: the host + {p} sites ({a} audio-only) + {v} viewers",
            p = s.publishers,
            a = s.audio_only,
            v = s.subscribers.saturating_sub(s.publishers + 1),
        )
    } else {
        format!(
            "{p} publishers ({a} audio-only) + {sub} subscribers{host}",
            p = s.publishers,
            a = s.audio_only,
            sub = s.subscribers,
            host = if s.host { " (one is the host)" } else { "" },
        )
    };
    let mut out = format!(
        "loadtest {outcome}: room {room}, {who}; measured window {w:.1} s: {kind} (duration \
         {d:.0} s)\n\n",
        outcome = s.outcome,
        room = s.room,
        w = s.window_s,
        kind = s.window,
        d = s.duration_s,
    );
    let headers = [
        "role",
        "bots",
        "media ok",
        "dropped",
        "pkts sent",
        "pkts recv",
        "recv pkt/s",
        "pairs w/ media",
        "loss %",
        "unrecovered",
        "NACK rx",
        "PLI+FIR rx",
        "PLI tx",
        "joined p50",
        "media p50",
        "media p95",
        "media max",
    ];
    let rows: Vec<Vec<String>> = s
        .roles
        .iter()
        .map(|r| {
            vec![
                r.role.clone(),
                r.bots.to_string(),
                r.joined.to_string(),
                r.dropped.to_string(),
                r.packets_sent.to_string(),
                r.packets_received.to_string(),
                format!("{:.0}", r.received_per_second),
                format!("{}/{}", r.pairs_with_media, r.pairs_expected),
                pct(r.loss_pct),
                r.unrecovered.to_string(),
                r.nacks_received.to_string(),
                (r.plis_received + r.firs_received).to_string(),
                r.plis_sent.to_string(),
                secs(r.join_joined_ms.map(|j| j.p50)),
                secs(r.join_media_ms.map(|j| j.p50)),
                secs(r.join_media_ms.map(|j| j.p95)),
                secs(r.join_media_ms.map(|j| j.max)),
            ]
        })
        .collect();
    out.push_str(&markdown_table(&headers, &rows));
    out.push('\n');
    if !s.rakor_roles.is_empty() {
        out.push_str(&super::scenario::render_rakor_table(&s.rakor_roles));
        out.push('\n');
    }
    match &s.server {
        Some(sv) => {
            let headers = [
                "server pid",
                "CPU avg (cores)",
                "CPU window",
                "RSS idle",
                "RSS peak",
                "RSS end",
                "RSS after leave",
                "per participant (peak)",
                "per participant (end)",
            ];
            let row = vec![
                sv.pid.to_string(),
                sv.cpu_cores_avg
                    .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
                format!("{:.1} s", sv.cpu_window_s),
                mib(sv.rss_start_kib),
                mib(sv.rss_peak_kib),
                mib(sv.rss_end_kib),
                mib(sv.rss_after_leave_kib),
                sv.rss_peak_per_participant_kib.map_or_else(
                    || "n/a".to_owned(),
                    |k| format!("{k:.0} KiB ({} bots)", sv.participants),
                ),
                sv.rss_per_participant_kib
                    .map_or_else(|| "n/a".to_owned(), |k| format!("{k:.0} KiB")),
            ];
            out.push_str(&markdown_table(&headers, &[row]));
        }
        None => out.push_str("server: not measured (no --server-pid, none found)\n"),
    }
    match (&s.fwd_latency, &s.fwd_latency_note) {
        (Some(l), _) => {
            let _ = writeln!(
                out,
                "forwarding latency added by the server (its log, line of {}): p50 {} µs, p99 {} \
                 µs ({} samples)",
                l.logged_at, l.p50_us, l.p99_us, l.samples
            );
            if let (Some(p50), Some(p99)) = (l.kernel_p50_us, l.kernel_p99_us) {
                let _ = writeln!(
                    out,
                    "from the kernel's receive stamp (with the wait in the socket): p50 {p50} µs, \
                     p99 {p99} µs; the wait alone p99 {} µs",
                    l.rx_wait_p99_us.unwrap_or(0)
                );
            }
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "forwarding latency: not measured ({why})");
        }
        (None, None) => {}
    }
    if let Some(m) = &s.machine {
        let load = |l: Option<[f64; 3]>| {
            l.map_or_else(
                || "n/a".to_owned(),
                |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]),
            )
        };
        let _ = writeln!(
            out,
            "machine: {} CPUs shared by the server and these bots; load average {} at the start, \
             {} at the end; this loadtest process used {} cores",
            m.cpus.map_or_else(|| "?".to_owned(), |c| c.to_string()),
            load(m.loadavg_start),
            load(m.loadavg_end),
            m.loadtest_cpu_cores_avg
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
        );
    }
    for n in &s.notes {
        let _ = writeln!(out, "note: {n}");
    }
    if !s.not_measured.is_empty() {
        let _ = writeln!(
            out,
            "not measured (rakor-client does not count it): {}",
            s.not_measured.join("; ")
        );
    }
    if let Some(e) = &s.error {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rakor_client::{ReceivedTrackStats, SentTrackStats};
    use rakor_proto::{ParticipantId, TrackId, TrackKind};

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let cases = [
            (50.0, 10.0),
            (95.0, 19.0),
            (100.0, 20.0),
            (0.0, 1.0),
            (5.0, 1.0),
        ];
        for (p, want) in cases {
            assert_eq!(percentile(&v, p), Some(want), "p{p}");
        }
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        let s = spread(&[300.0, 100.0, 200.0, f64::NAN]).unwrap();
        assert_eq!((s.count, s.p50, s.p95, s.max), (3, 200.0, 300.0, 300.0));
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn loss_is_gaps_over_the_expected_span() {
        assert_eq!(loss_pct(0, 0, 0), None);
        assert_eq!(loss_pct(100, 0, 0), Some(0.0));
        assert_eq!(loss_pct(99, 1, 0), Some(1.0));
        // 2 retransmissions filled 2 of the 4 gaps: still counted (loss before repair).
        assert_eq!(loss_pct(98, 4, 2), Some(4.0));
        assert_eq!(loss_pct(3, 0, 5), None);
    }

    fn sent(packets: u64, nacks: u64, plis: u64) -> SentTrackStats {
        let mut s = SentTrackStats::new(TrackKind::Video, 1);
        s.packets = packets;
        s.nacks_received = nacks;
        s.plis_received = plis;
        s
    }

    fn recv(track: &str, from: &str, packets: u64, gaps: u64) -> ReceivedTrackStats {
        let mut r = ReceivedTrackStats::new(
            TrackId(track.into()),
            Some(ParticipantId(from.into())),
            TrackKind::Audio,
        );
        r.packets = packets;
        r.seq_gaps = gaps;
        r
    }

    #[test]
    fn window_counters_subtract_the_start_snapshot() {
        let mut start = Report::default();
        start.sent.insert("video".into(), sent(100, 1, 2));
        start
            .received
            .insert(TrackId("TR_a".into()), recv("TR_a", "PA_1", 50, 1));
        let mut end = Report::default();
        end.sent.insert("video".into(), sent(400, 3, 2));
        end.sent.insert("audio".into(), sent(150, 0, 0));
        end.received
            .insert(TrackId("TR_a".into()), recv("TR_a", "PA_1", 250, 2));
        end.received
            .insert(TrackId("TR_b".into()), recv("TR_b", "PA_1", 100, 0));
        end.received
            .insert(TrackId("TR_c".into()), recv("TR_c", "PA_2", 10, 0));
        let w = window_counters(Some(&start), &end);
        assert_eq!(w.packets_sent, 300 + 150);
        assert_eq!((w.nacks_received, w.plis_received), (2, 0));
        assert_eq!(w.received["PA_1"].packets, 200 + 100);
        assert_eq!(w.received["PA_1"].seq_gaps, 1);
        assert_eq!(w.received["PA_2"].packets, 10);
        let all = window_counters(None, &end);
        assert_eq!(all.packets_sent, 550);
        assert_eq!(all.received["PA_1"].packets, 350);
    }

    fn bot(identity: &str, role: BotRole, received: &[(&str, u64, u64)]) -> BotSummary {
        BotSummary {
            identity: identity.into(),
            role,
            token_role: "participant".into(),
            participant_id: Some(format!("PA_{identity}")),
            joined_ms: Some(100.0),
            media_ms: Some(if role == BotRole::Publisher {
                400.0
            } else {
                900.0
            }),
            error: None,
            ended: None,
            publisher_state: None,
            subscriber_state: None,
            packets_sent: if role == BotRole::Publisher { 1000 } else { 0 },
            nacks_received: 1,
            plis_received: 2,
            firs_received: 0,
            received: received
                .iter()
                .map(|(from, packets, gaps)| {
                    (
                        (*from).to_owned(),
                        PeerReceived::from(RecvCounters {
                            packets: *packets,
                            bytes: packets * 100,
                            seq_gaps: *gaps,
                            out_of_order: gaps / 2,
                            gaps_filled: gaps / 2,
                            plis_sent: 1,
                            audio_packets: packets / 2,
                            video_layers: [packets - packets / 2, 0, 0],
                            screen_layers: [0; 3],
                        }),
                    )
                })
                .collect(),
            rakor: None,
        }
    }

    #[test]
    fn role_summary_counts_pairs_and_sums() {
        let mut bots = vec![
            bot("site-1", BotRole::Publisher, &[("site-2", 500, 0)]),
            bot("site-2", BotRole::Publisher, &[("site-1", 490, 10)]),
            bot("viewer-1", BotRole::Subscriber, &[("site-1", 500, 0)]),
        ];
        let pubs = vec!["site-1".to_owned(), "site-2".to_owned()];
        let mesh = Pairs::AnyMediaFrom(&pubs);
        let p = role_summary(BotRole::Publisher, &bots, &mesh, 10.0);
        assert_eq!((p.bots, p.joined, p.packets_sent), (2, 2, 2000));
        assert_eq!((p.pairs_expected, p.pairs_with_media), (2, 2));
        assert_eq!(p.packets_received, 990);
        // 10 gaps, 5 filled by late packets (out of order): loss before repair 10/995.
        assert_eq!((p.seq_gaps, p.unrecovered), (10, 5));
        assert!((p.loss_pct.unwrap() - 1000.0 / 995.0).abs() < 1e-9);
        assert!((p.received_per_second - 99.0).abs() < 1e-9);
        assert_eq!(p.join_media_ms.unwrap().p50, 400.0);
        assert_eq!(p.dropped, 0);
        bots[2].ended = Some("server said leave: media_failed".into());
        let s = role_summary(BotRole::Subscriber, &bots, &mesh, 10.0);
        assert_eq!((s.pairs_expected, s.pairs_with_media), (2, 1));
        assert_eq!(s.dropped, 1);
        // Rakor pairs: only the senders whose video the bot shows, and only video counts.
        let shows = |b: &BotSummary| match b.identity.as_str() {
            "viewer-1" => vec!["site-1".to_owned(), "site-2".to_owned()],
            _ => vec!["site-3".to_owned()],
        };
        let v = role_summary(BotRole::Subscriber, &bots, &Pairs::VideoFrom(&shows), 10.0);
        assert_eq!((v.pairs_expected, v.pairs_with_media), (2, 1));
        bots[2].received.get_mut("site-1").unwrap().video_layers = [0; 3];
        let v = role_summary(BotRole::Subscriber, &bots, &Pairs::VideoFrom(&shows), 10.0);
        assert_eq!((v.pairs_expected, v.pairs_with_media), (2, 0));
        assert_eq!((s.plis_sent, s.packets_sent), (1, 0));
        assert_eq!(per_participant_kib(1000, 4000, 3), Some(1000.0));
        assert_eq!(per_participant_kib(1000, 4000, 0), None);
    }

    #[test]
    fn tables_line_up() {
        let t = markdown_table(
            &["role", "n"],
            &[
                vec!["publishers".into(), "3".into()],
                vec!["subs".into(), "12345".into()],
            ],
        );
        assert_eq!(
            t,
            "| role       |     n |\n\
             | ---------- | ----: |\n\
             | publishers |     3 |\n\
             | subs       | 12345 |\n"
        );
        // A short row is padded, a long one cut to the headers.
        let t = markdown_table(
            &["a", "b"],
            &[vec!["x".into()], vec!["1".into(), "2".into(), "3".into()]],
        );
        assert_eq!(t.lines().nth(1), Some("| --- | --: |"));
        assert_eq!(t.lines().nth(2), Some("| x   |     |"));
        assert_eq!(t.lines().nth(3), Some("| 1   |   2 |"));
    }

    #[test]
    fn renders_every_section() {
        let bots = vec![
            bot("site-1", BotRole::Publisher, &[]),
            bot("viewer-1", BotRole::Subscriber, &[("site-1", 500, 0)]),
        ];
        let pubs = vec!["site-1".to_owned()];
        let mesh = Pairs::AnyMediaFrom(&pubs);
        let summary = Summary {
            url: "ws://127.0.0.1:7880/rtc".into(),
            room: "R".into(),
            scenario: "mesh".into(),
            publishers: 1,
            audio_only: 0,
            subscribers: 1,
            host: true,
            video_layers_requested: 3,
            video_layers_sent: 1,
            duration_s: 10.0,
            window_s: 10.0,
            window: "steady".into(),
            outcome: "completed".into(),
            error: None,
            roles: vec![
                role_summary(BotRole::Publisher, &bots, &mesh, 10.0),
                role_summary(BotRole::Subscriber, &bots, &mesh, 10.0),
            ],
            rakor_roles: Vec::new(),
            server: Some(ServerSummary {
                pid: 42,
                clk_tck: 100,
                cpu_cores_avg: Some(0.25),
                cpu_window_s: 10.0,
                rss_start_kib: Some(20480),
                rss_end_kib: Some(30720),
                rss_peak_kib: Some(40960),
                rss_after_leave_kib: None,
                participants: 2,
                rss_per_participant_kib: Some(5120.0),
                rss_peak_per_participant_kib: Some(10240.0),
            }),
            machine: Some(MachineSummary {
                cpus: Some(2),
                loadavg_start: Some([0.5, 1.25, 2.0]),
                loadavg_end: None,
                loadtest_cpu_cores_avg: Some(0.3),
            }),
            fwd_latency: None,
            fwd_latency_note: Some("no --server-log".into()),
            notes: vec!["simulcast".into()],
            not_measured: vec!["NACKs sent".into()],
            bots,
        };
        let text = render(&summary);
        for want in [
            "loadtest completed: room R, 1 publishers (0 audio-only) + 1 subscribers (one is the host); measured window 10.0 s: steady (duration 10 s)",
            "| publishers  |",
            "1/1",
            "0.90 s",
            "| 42         |",
            "20.0 MiB",
            "40.0 MiB",
            "10240 KiB (2 bots)",
            "  5120 KiB |",
            "forwarding latency: not measured (no --server-log)",
            "machine: 2 CPUs shared by the server and these bots; load average 0.50 1.25 2.00 at \
             the start, n/a at the end; this loadtest process used 0.30 cores",
            "note: simulcast",
            "not measured (rakor-client does not count it): NACKs sent",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["roles"][1]["join_media_ms"]["p50"], 900.0);
        assert_eq!(json["bots"][1]["received"]["site-1"]["packets"], 500);
        assert_eq!(json["server"]["cpu_cores_avg"], 0.25);
    }
}
