//! `--procs N`: the bots spread over N processes, so that the measuring client is not what
//! limits a large run (one process's tokio and media threads carry a few dozen bots' media).
//!
//! The process the user started (the parent) runs no bot. It starts this executable N times
//! with the same flags plus `--proc-slice K/N` (bots K, K+N, K+2N, … of [`bot_specs`]) and
//! `--proc-epoch-ms` (the run's start, so the rakor scenario's talk phases agree), and steps them
//! through the run's phases with one JSON line each way per phase (the child's stdout, the
//! parent's writes to its stdin):
//!
//! 1. each joins its first group (the host, or the mesh publishers) → `first` with their
//!    participant ids; the parent answers `expect` with everyone's (or `stop`);
//! 2. each joins the rest, waiting for media from all of `expect` → `joined` with identity →
//!    participant id; the parent answers `go` with everyone's (or `stop`);
//! 3. (rakor) each waits until its bots receive the layers they asked for → `holding`; the
//!    parent reads the server's CPU and memory and answers `hold`: the measured window starts
//!    for everyone at once;
//! 4. after `--duration` each reads its bots' reports → `held`; the parent reads the server
//!    again (end of the window);
//! 5. each leaves → `part`: its bots (join times, errors, reports at the window's start and
//!    end, the directors' logs) and its own CPU. A stopped child skips to 5.
//!
//! The parent then builds the summary from all the parts exactly as a single process does
//! from its bots ([`summarize`]), so the report has the same shape and the same counts.

use super::join::Bot;
use super::measure::{self, ServerProbe};
use super::plan::{bot_specs, BotSpec, LoadPlan};
use super::run::{self, summarize, Readings};
use super::scenario::{AudioSample, DirectorLog, Scenario};
use super::summary::{BotRole, Summary};
use rakor_client::Report;
use rakor_proto::ParticipantId;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Prefix of the protocol's lines on a child's stdout (anything else there is ignored).
const LINE_PREFIX: &str = "@rakor-loadtest ";
/// Slack on top of the children's own bounds before the parent gives up on one.
const SLACK: Duration = Duration::from_secs(30);

/// A child's message to the parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToParent {
    First {
        ok: bool,
        ids: Vec<(ParticipantId, bool)>,
    },
    Joined {
        ok: bool,
        ids: Vec<(String, ParticipantId)>,
    },
    Holding,
    Held,
    Part(Box<Part>),
}

/// The parent's message to a child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToChild {
    Expect(Vec<(ParticipantId, bool)>),
    Go(Vec<(String, ParticipantId)>),
    Hold,
    Stop,
}

/// What one child hands back at the end.
#[derive(Debug, Serialize, Deserialize)]
struct Part {
    bots: Vec<PartBot>,
    interrupted: bool,
    join_failed: bool,
    join_elapsed_ms: f64,
    participants: usize,
    loadtest_cores: Option<f64>,
    notes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartBot {
    identity: String,
    participant_id: Option<ParticipantId>,
    joined_ms: Option<f64>,
    media_ms: Option<f64>,
    error: Option<String>,
    ended: Option<String>,
    start: Option<Report>,
    end: Option<Report>,
    log: Option<PartLog>,
}

/// A [`DirectorLog`] with its instants as milliseconds from the window's start.
#[derive(Debug, Serialize, Deserialize)]
struct PartLog {
    settings_sent: u64,
    errors: u64,
    last_error: Option<String>,
    spotlight_sent: bool,
    /// (ms, sites, host)
    samples: Vec<(f64, u32, bool)>,
    forwarded_changes: Vec<f64>,
}

fn ms_from(origin: Instant, t: Instant) -> f64 {
    if t >= origin {
        t.duration_since(origin).as_secs_f64() * 1000.0
    } else {
        -(origin.duration_since(t).as_secs_f64() * 1000.0)
    }
}

fn at_ms(origin: Instant, ms: f64) -> Instant {
    let d = Duration::from_secs_f64(ms.abs().min(1e9) / 1000.0);
    if ms >= 0.0 {
        origin.checked_add(d).unwrap_or(origin)
    } else {
        origin.checked_sub(d).unwrap_or(origin)
    }
}

impl PartLog {
    fn from_log(l: &DirectorLog, origin: Instant) -> Self {
        Self {
            settings_sent: l.settings_sent,
            errors: l.errors,
            last_error: l.last_error.clone(),
            spotlight_sent: l.spotlight_sent,
            samples: l
                .samples
                .iter()
                .map(|s| (ms_from(origin, s.at), s.sites, s.host))
                .collect(),
            forwarded_changes: l
                .forwarded_changes
                .iter()
                .map(|t| ms_from(origin, *t))
                .collect(),
        }
    }

    fn into_log(self, origin: Instant) -> DirectorLog {
        DirectorLog {
            settings_sent: self.settings_sent,
            errors: self.errors,
            last_error: self.last_error,
            spotlight_sent: self.spotlight_sent,
            samples: self
                .samples
                .into_iter()
                .map(|(ms, sites, host)| AudioSample {
                    at: at_ms(origin, ms),
                    sites,
                    host,
                })
                .collect(),
            forwarded_changes: self
                .forwarded_changes
                .into_iter()
                .map(|ms| at_ms(origin, ms))
                .collect(),
        }
    }
}

/// The `Instant` of a wall-clock time (the shared epoch of `--procs`).
pub(super) fn epoch_instant(epoch: SystemTime) -> Instant {
    let now = Instant::now();
    match SystemTime::now().duration_since(epoch) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(now),
        Err(e) => now.checked_add(e.duration()).unwrap_or(now),
    }
}

/// Bot K, K+N, … of the plan.
pub(super) fn in_slice(index: usize, (k, n): (usize, usize)) -> bool {
    n > 0 && index % n == k
}

/// A child's side of the protocol: its stdin (read on a thread) and its stdout.
pub(super) struct ChildLink {
    rx: mpsc::UnboundedReceiver<ToChild>,
    stopped: bool,
}

impl ChildLink {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<ToChild>(&line) {
                    Ok(m) => {
                        if tx.send(m).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("warning: from the parent loadtest process: {e}"),
                }
            }
            // EOF: the parent is gone; the receiver sees the channel close (= stop).
        });
        Self { rx, stopped: false }
    }

    fn send(msg: &ToParent) {
        use std::io::Write as _;
        if let Ok(line) = serde_json::to_string(msg) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{LINE_PREFIX}{line}");
            let _ = out.flush();
        }
    }

    async fn recv(&mut self) -> Option<ToChild> {
        let m = self.rx.recv().await;
        if matches!(m, None | Some(ToChild::Stop)) {
            self.stopped = true;
        }
        m
    }

    /// Phase 1: this process's first group joined; everyone's, or `None` = stop.
    pub(super) async fn first(
        &mut self,
        ok: bool,
        ids: Vec<(ParticipantId, bool)>,
    ) -> Option<Vec<(ParticipantId, bool)>> {
        if self.stopped {
            return None;
        }
        Self::send(&ToParent::First { ok, ids });
        match self.recv().await? {
            ToChild::Expect(all) => Some(all),
            _ => None,
        }
    }

    /// Phase 2: all this process's bots joined; everyone's identities → ids, or `None` = stop.
    pub(super) async fn joined(
        &mut self,
        ok: bool,
        ids: Vec<(String, ParticipantId)>,
    ) -> Option<Vec<(String, ParticipantId)>> {
        if self.stopped {
            return None;
        }
        Self::send(&ToParent::Joined { ok, ids });
        match self.recv().await? {
            ToChild::Go(all) => Some(all),
            _ => None,
        }
    }

    /// Phase 3: ready to measure; `true` = hold now.
    pub(super) async fn holding(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        Self::send(&ToParent::Holding);
        matches!(self.recv().await, Some(ToChild::Hold))
    }

    /// Phase 4: the window is over.
    pub(super) async fn held(&mut self) {
        if !self.stopped {
            Self::send(&ToParent::Held);
        }
    }
}

/// One process of `--procs`: run the slice, hand the part to the parent on stdout.
pub(super) async fn run_child(plan: &LoadPlan, tokens: Vec<(BotSpec, String)>) {
    let mut link = ChildLink::new();
    let core = run::run_core(plan, tokens, None, Some(&mut link)).await;
    let r = &core.readings;
    let origin = r.window_start;
    let bots = core
        .bots
        .iter()
        .enumerate()
        .map(|(i, b)| PartBot {
            identity: b.spec.identity.clone(),
            participant_id: b.participant_id.clone(),
            joined_ms: b.joined.map(|d| d.as_secs_f64() * 1000.0),
            media_ms: b.media.map(|d| d.as_secs_f64() * 1000.0),
            error: b.error.clone(),
            ended: b.ended.clone(),
            start: core.start_reports.get(i).cloned().flatten(),
            end: core.end_reports.get(i).cloned().flatten(),
            log: b
                .director_log
                .as_ref()
                .map(|l| PartLog::from_log(l, origin)),
        })
        .collect();
    ChildLink::send(&ToParent::Part(Box::new(Part {
        bots,
        interrupted: r.interrupted,
        join_failed: r.join_failed,
        join_elapsed_ms: r.join_elapsed.as_secs_f64() * 1000.0,
        participants: r.participants,
        loadtest_cores: r.loadtest_cores,
        notes: r.notes.clone(),
    })));
}

/// A started child.
struct Proc {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    /// Its part once received; `finished` also when it exited without one.
    part: Option<Part>,
    finished: bool,
}

/// The parent's side: the children and the lines they send.
struct Parent {
    procs: Vec<Proc>,
    rx: mpsc::UnboundedReceiver<(usize, Option<ToParent>)>,
}

impl Parent {
    fn spawn(plan: &LoadPlan, args: &[OsString], epoch_ms: u64) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut procs = Vec::new();
        for k in 0..plan.procs {
            let mut child = tokio::process::Command::new(&exe)
                .args(args)
                .arg("--proc-slice")
                .arg(format!("{k}/{}", plan.procs))
                .arg("--proc-epoch-ms")
                .arg(epoch_ms.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting loadtest process {k}: {e}"))?;
            let stdin = child.stdin.take();
            if let Some(out) = child.stdout.take() {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(out).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let Some(json) = line.strip_prefix(LINE_PREFIX) else {
                            continue;
                        };
                        match serde_json::from_str::<ToParent>(json) {
                            Ok(m) => {
                                if tx.send((k, Some(m))).is_err() {
                                    return;
                                }
                            }
                            Err(e) => eprintln!("warning: from loadtest process {k}: {e}"),
                        }
                    }
                    let _ = tx.send((k, None));
                });
            }
            procs.push(Proc {
                child,
                stdin,
                part: None,
                finished: false,
            });
        }
        Ok(Self { procs, rx })
    }

    async fn tell_all(&mut self, msg: &ToChild) {
        let Ok(mut line) = serde_json::to_string(msg) else {
            return;
        };
        line.push('\n');
        for p in self.procs.iter_mut().filter(|p| !p.finished) {
            if let Some(stdin) = p.stdin.as_mut() {
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    p.stdin = None;
                }
            }
        }
    }

    /// The next message of every child still running (a part or an exit marks it finished and
    /// counts as not the phase's message). `None` for a child that said nothing in time.
    async fn next_from_each(&mut self, until: Instant) -> Vec<Option<ToParent>> {
        let mut got: Vec<Option<ToParent>> = self.procs.iter().map(|_| None).collect();
        let mut waiting: Vec<bool> = self.procs.iter().map(|p| !p.finished).collect();
        while waiting.iter().any(|w| *w) {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(Some((k, msg))) = tokio::time::timeout(left, self.rx.recv()).await else {
                break;
            };
            let Some(p) = self.procs.get_mut(k) else {
                continue;
            };
            match msg {
                None => p.finished = true,
                Some(ToParent::Part(part)) => {
                    p.part = Some(*part);
                    p.finished = true;
                }
                Some(m) => {
                    if let Some(slot) = got.get_mut(k) {
                        *slot = Some(m);
                    }
                }
            }
            if let Some(w) = waiting.get_mut(k) {
                *w = false;
            }
        }
        got
    }

    /// Every child's part (until `until`); children still running then are killed.
    async fn collect_parts(&mut self, until: Instant) {
        while self.procs.iter().any(|p| !p.finished) {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((k, msg))) => {
                    if let Some(p) = self.procs.get_mut(k) {
                        match msg {
                            None => p.finished = true,
                            Some(ToParent::Part(part)) => {
                                p.part = Some(*part);
                                p.finished = true;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => break,
            }
        }
        for (k, p) in self.procs.iter_mut().enumerate() {
            if !p.finished {
                eprintln!("warning: loadtest process {k} did not finish in time; stopping it");
                let _ = p.child.start_kill();
                p.finished = true;
            }
            p.stdin = None;
            let _ = tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await;
        }
    }
}

/// `--procs N` (N > 1): start the children, step them through the run, add up their parts.
pub(super) async fn run_parent(
    plan: &LoadPlan,
    args: &[OsString],
    probe: Option<ServerProbe>,
) -> Summary {
    let started = Instant::now();
    let epoch = SystemTime::now();
    let epoch_ms = epoch
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        // A terminal's Ctrl-C reaches the children too (same process group): they stop and
        // leave, and this process waits for their parts.
        let interrupted = Arc::clone(&interrupted);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::Relaxed);
            }
        });
    }
    let rss_start = probe.and_then(|p| p.rss_kib());
    let run_cpu_start = probe.and_then(|p| p.cpu_ticks());
    let loadavg_start = measure::loadavg();
    eprintln!(
        "spreading {} bots over {} loadtest processes",
        plan.bots(),
        plan.procs
    );
    let specs = bot_specs(plan);
    let mut parent = match Parent::spawn(plan, args, epoch_ms) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            Parent {
                procs: Vec::new(),
                rx: mpsc::unbounded_channel().1,
            }
        }
    };
    let spawned = parent.procs.len() == plan.procs;
    let join_until = started + plan.join_budget + SLACK;
    let mut ok = spawned;

    // 1. First groups.
    if ok {
        let got = parent.next_from_each(join_until).await;
        let mut all = Vec::new();
        for m in got {
            match m {
                Some(ToParent::First { ok: true, ids }) => all.extend(ids),
                _ => ok = false,
            }
        }
        parent
            .tell_all(&if ok {
                ToChild::Expect(all)
            } else {
                ToChild::Stop
            })
            .await;
    }
    // 2. Everyone else.
    if ok {
        let got = parent.next_from_each(join_until).await;
        let mut all = Vec::new();
        for m in got {
            match m {
                Some(ToParent::Joined { ok: true, ids }) => all.extend(ids),
                _ => ok = false,
            }
        }
        parent
            .tell_all(&if ok { ToChild::Go(all) } else { ToChild::Stop })
            .await;
    }
    let join_failed = !ok;
    let join_elapsed = started.elapsed();
    // 3. The window starts for everyone at once.
    let mut window_start = started;
    let mut cpu_start = run_cpu_start;
    if ok {
        let got = parent.next_from_each(join_until).await;
        ok = got.iter().all(|m| matches!(m, Some(ToParent::Holding)));
        if ok {
            cpu_start = probe.and_then(|p| p.cpu_ticks());
            window_start = Instant::now();
            parent.tell_all(&ToChild::Hold).await;
        } else {
            parent.tell_all(&ToChild::Stop).await;
        }
    }
    let held = ok;
    // 4. The window's end.
    if held {
        let _ = parent
            .next_from_each(Instant::now() + plan.duration + SLACK)
            .await;
    }
    let window_end = Instant::now();
    let now_wall = SystemTime::now();
    let wall_start = now_wall
        .checked_sub(window_end.saturating_duration_since(window_start))
        .unwrap_or(now_wall);
    let wall_end = now_wall;
    let cpu_end = probe.and_then(|p| p.cpu_ticks());
    let rss_end = probe.and_then(|p| p.rss_kib());
    let rss_peak = probe.and_then(|p| p.peak_rss_kib());
    let server_gone = probe.is_some() && rss_end.is_none();
    let loadavg_end = measure::loadavg();
    // 5. Leaves and parts.
    parent
        .collect_parts(Instant::now() + run::LEAVE_BUDGET + SLACK)
        .await;
    let rss_after_leave = match probe {
        Some(p) if !server_gone => {
            tokio::time::sleep(run::SETTLE_AFTER_LEAVE).await;
            p.rss_kib()
        }
        _ => None,
    };

    // The bots in the order one process has them: the first group, then the rest, each in
    // plan order.
    let first_role = match plan.scenario {
        Scenario::Mesh => BotRole::Publisher,
        Scenario::Rakor => BotRole::Host,
    };
    let mut order: Vec<(usize, &BotSpec)> = specs.iter().enumerate().collect();
    order.sort_by_key(|(i, s)| (s.role != first_role, *i));
    let mut bots = Vec::with_capacity(order.len());
    let mut start_reports = Vec::with_capacity(order.len());
    let mut end_reports = Vec::with_capacity(order.len());
    let mut notes: Vec<String> = Vec::new();
    let mut cores: Option<f64> = None;
    let mut participants = 0;
    let mut child_interrupted = false;
    let mut child_join_failed = false;
    for p in &parent.procs {
        if let Some(part) = &p.part {
            participants += part.participants;
            child_interrupted |= part.interrupted;
            child_join_failed |= part.join_failed;
            if let Some(c) = part.loadtest_cores {
                cores = Some(cores.unwrap_or(0.0) + c);
            }
            for n in &part.notes {
                if !notes.contains(n) {
                    notes.push(n.clone());
                }
            }
        }
    }
    let mut parts: Vec<Option<Part>> = parent.procs.iter_mut().map(|p| p.part.take()).collect();
    for (i, spec) in order {
        let k = i % plan.procs;
        let mut bot = Bot::new(spec.clone());
        let found = parts.get_mut(k).and_then(Option::as_mut).and_then(|part| {
            let at = part.bots.iter().position(|b| b.identity == spec.identity)?;
            Some(part.bots.swap_remove(at))
        });
        match found {
            Some(b) => {
                bot.participant_id = b.participant_id;
                bot.joined = b
                    .joined_ms
                    .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
                bot.media = b
                    .media_ms
                    .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
                bot.error = b.error;
                bot.ended = b.ended;
                bot.director_log = b.log.map(|l| l.into_log(window_start));
                start_reports.push(b.start);
                end_reports.push(b.end);
            }
            None => {
                bot.error = Some(format!(
                    "its loadtest process ({} of {}) ended without a report",
                    k + 1,
                    plan.procs
                ));
                start_reports.push(None);
                end_reports.push(None);
            }
        }
        bots.push(bot);
    }
    let lost = bots.iter().any(|b| {
        b.error
            .as_deref()
            .is_some_and(|e| e.starts_with("its loadtest process"))
    });
    notes.push(format!(
        "bots spread over {} loadtest processes (--procs); tool CPU is their sum",
        plan.procs
    ));
    let readings = Readings {
        interrupted: interrupted.load(Ordering::Relaxed) || child_interrupted,
        server_gone,
        join_failed: join_failed || child_join_failed || lost || !held,
        join_elapsed,
        window_start,
        window_end,
        wall_start,
        wall_end,
        probe,
        rss_start,
        rss_end,
        rss_peak,
        rss_after_leave,
        cpu_start,
        cpu_end,
        loadavg_start,
        loadavg_end,
        loadtest_cores: cores,
        participants,
        notes,
    };
    summarize(plan, &bots, &start_reports, &end_reports, readings)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn slices_cover_every_bot_once() {
        for n in 1..5 {
            for i in 0..20 {
                assert_eq!((0..n).filter(|k| in_slice(i, (*k, n))).count(), 1);
            }
        }
    }

    #[test]
    fn director_log_times_survive_the_trip() {
        let origin = Instant::now() + Duration::from_secs(10);
        let log = DirectorLog {
            settings_sent: 3,
            errors: 1,
            last_error: Some("x".into()),
            spotlight_sent: true,
            samples: vec![AudioSample {
                at: origin + Duration::from_millis(1500),
                sites: 3,
                host: true,
            }],
            forwarded_changes: vec![origin - Duration::from_millis(250)],
        };
        let text = serde_json::to_string(&PartLog::from_log(&log, origin)).unwrap();
        let back = serde_json::from_str::<PartLog>(&text)
            .unwrap()
            .into_log(origin);
        assert_eq!((back.settings_sent, back.errors), (3, 1));
        assert_eq!(back.samples[0].sites, 3);
        let off = back.samples[0].at.duration_since(origin);
        assert!(off.abs_diff(Duration::from_millis(1500)) < Duration::from_millis(1));
        let before = origin.duration_since(back.forwarded_changes[0]);
        assert!(before.abs_diff(Duration::from_millis(250)) < Duration::from_millis(1));
    }

    #[test]
    fn messages_are_one_line_of_json() {
        let m = ToParent::First {
            ok: true,
            ids: vec![(ParticipantId("p1".into()), true)],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains('\n'));
        assert!(matches!(
            serde_json::from_str::<ToParent>(&text).unwrap(),
            ToParent::First { ok: true, .. }
        ));
        let stop = serde_json::to_string(&ToChild::Stop).unwrap();
        assert!(matches!(
            serde_json::from_str::<ToChild>(&stop).unwrap(),
            ToChild::Stop
        ));
    }
}
