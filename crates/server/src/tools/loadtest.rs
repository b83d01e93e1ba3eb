//! `rakor loadtest`: a bounded load test of a `rakor serve` on this machine. In the `mesh`
//! scenario P publisher bots (audio + video, or audio only) and S receive-only subscriber bots
//! (one of them the host with `--host`) join one room and everyone receives everything; in the
//! `rakor` scenario the host and P sites behave as in a rakor (see `scenario`). The bots join
//! with bounded concurrency; everyone stays for `--duration`; then every bot leaves and a
//! summary is printed: packets, sequence-number loss, keyframe requests, join times, the
//! server process's CPU and memory from `/proc` (`--server-pid`, or the one local `rakor
//! serve`), and its forwarding latency from its log (`--server-log`). Definitions of every
//! figure: docs/benchmarks.md, "Load tool".
//!
//! Tokens are minted locally with the server's signing key (same `--config`/`--data-dir` as
//! `rakor serve`). Only loopback targets are accepted without `--allow-remote`: the tool creates
//! the load of a whole rakor and reads the server's CPU from this machine's `/proc`.
//!
//! Layout: this file owns the flags and the run (join, hold, leave); `join` joins the bots and
//! prints progress; `scenario` is the rakor scenario's bots, their director tasks and figures;
//! `measure` reads `/proc` and checks the URL; `server_log` reads the server's latency line;
//! `summary` turns the bots' reports into the table and the JSON.

mod join;
mod measure;
mod scenario;
mod server_log;
mod summary;

pub use measure::{check_loopback_url, find_rakor_serve_pids, ServerProbe};
pub use scenario::Scenario;
pub use summary::{BotRole, Summary};

use crate::cli::ConfigArgs;
use crate::config::{CliOverrides, Config};
use crate::signing_key::{self, KeySource, SigningKey};
use crate::token::{self, Claims};
use join::{join_group, progress_loop, Bot, Expected, JoinContext, Progress};
use rakor_client::Report;
use rakor_proto::{ParticipantId, Role};
use scenario::DirectorPlan;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Every bot's `leave` together may take this long; stragglers are then dropped.
const LEAVE_BUDGET: Duration = Duration::from_secs(30);
/// Pause after the leaves before the last memory reading.
const SETTLE_AFTER_LEAVE: Duration = Duration::from_secs(2);
/// More bots than this in one process is not a meaningful test on one machine.
const MAX_BOTS: usize = 1000;
/// Identity of the host bot (`--host`), as the command room is usually called.
pub const HOST_IDENTITY: &str = "command-room";

/// `rakor loadtest` flags.
#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    /// Signalling WebSocket URL of the server under test (loopback only, see --allow-remote).
    #[arg(long, default_value = "ws://127.0.0.1:7880/rtc")]
    pub url: String,
    /// Room to use.
    #[arg(long, default_value = "loadtest")]
    pub room: String,
    /// What the bots do: `mesh` (everyone receives everything) or `rakor` (the host and
    /// --publishers sites as in a rakor: wall, spotlight, loudest speakers).
    #[arg(long, value_enum, default_value_t = Scenario::Mesh)]
    pub scenario: Scenario,
    /// Bots that publish (mesh: and, like every participant, receive everyone else; rakor: the
    /// sites).
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,
    /// Mesh: receive-only bots [default: 10]. Rakor: everyone who receives, i.e. the sites and
    /// the host (--publishers + 1, the default) plus any receive-only viewers.
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Rakor: how many sites talk (distinct loud levels rotating every 6 s; the others send
    /// near-silence), 0..=5.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=5))]
    pub talkers: u8,
    /// How long everyone stays once all have joined, e.g. 60s, 5m (the measured window).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Simulcast layers per video publisher: 1, or 3 (q/h/f; 2 sends 3, with a warning)
    /// [default: 1 in the mesh scenario, 3 in the rakor scenario].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub video_layers: Option<u8>,
    /// The first N publishers publish audio only.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub audio_only: usize,
    /// The first subscriber is the host (identity `command-room`, role host).
    #[arg(long)]
    pub host: bool,
    /// PID of the `rakor serve` process, for its CPU and memory [default: the one local
    /// `rakor serve`, if exactly one runs].
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Joins in progress at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub join_concurrency: u16,
    /// All joins (until media flows for every bot) must finish within this, or the run fails.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub join_budget: Duration,
    /// Also write the summary (with per-bot detail) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// The server's log (its stderr, redirected to a file): after the run, the last
    /// `media stats` line written during the measured window gives the forwarding latency.
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// Allow a --url that is not on this machine (127.0.0.0/8, ::1, localhost).
    #[arg(long)]
    pub allow_remote: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// What `rakor loadtest` was asked to do, validated.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub url: String,
    pub room: String,
    pub scenario: Scenario,
    /// Rakor: sites that talk.
    pub talkers: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub audio_only: usize,
    pub host: bool,
    pub duration: Duration,
    pub video_layers: u8,
    pub join_concurrency: usize,
    pub join_budget: Duration,
    /// The server's log, for the forwarding latency (`--server-log`).
    pub server_log: Option<PathBuf>,
}

impl LoadPlan {
    /// Check the flags (a usage error says which).
    pub fn from_args(a: &LoadtestArgs) -> Result<Self, String> {
        let subscribers = match (a.scenario, a.subscribers) {
            (Scenario::Mesh, s) => s.unwrap_or(10),
            (Scenario::Rakor, None) => a.publishers + 1,
            (Scenario::Rakor, Some(s)) if s > a.publishers => s,
            (Scenario::Rakor, Some(s)) => {
                return Err(format!(
                    "--scenario rakor: every site and the host receive, so --subscribers must be \
                     at least --publishers + 1 = {} (more adds receive-only viewers), got {s}",
                    a.publishers + 1
                ))
            }
        };
        if a.scenario == Scenario::Rakor && a.publishers == 0 {
            return Err("--scenario rakor needs --publishers >= 1 (the sites)".into());
        }
        let total = a.publishers.saturating_add(subscribers);
        if total == 0 || total > MAX_BOTS {
            return Err(format!(
                "--publishers + --subscribers must be 1..={MAX_BOTS}, got {total}"
            ));
        }
        if a.audio_only > a.publishers {
            return Err(format!(
                "--audio-only {} is more than --publishers {}",
                a.audio_only, a.publishers
            ));
        }
        if a.host && subscribers == 0 {
            return Err(
                "--host makes the first subscriber the host: needs --subscribers >= 1".into(),
            );
        }
        if a.duration.is_zero() || a.join_budget.is_zero() {
            return Err("--duration and --join-budget must be above zero".into());
        }
        let default_layers = match a.scenario {
            Scenario::Mesh => 1,
            Scenario::Rakor => 3,
        };
        Ok(Self {
            url: a.url.clone(),
            room: a.room.clone(),
            scenario: a.scenario,
            talkers: usize::from(a.talkers),
            publishers: a.publishers,
            subscribers,
            audio_only: a.audio_only,
            host: a.host || a.scenario == Scenario::Rakor,
            duration: a.duration,
            video_layers: a.video_layers.unwrap_or(default_layers),
            join_concurrency: usize::from(a.join_concurrency),
            join_budget: a.join_budget,
            server_log: a.server_log.clone(),
        })
    }

    /// Bots in the room (rakor: the host, the sites and the viewers; the sites count as
    /// publishers and subscribers both).
    pub fn bots(&self) -> usize {
        match self.scenario {
            Scenario::Mesh => self.publishers + self.subscribers,
            Scenario::Rakor => self.subscribers,
        }
    }

    /// Rakor: receive-only viewers besides the sites and the host.
    pub fn viewers(&self) -> usize {
        self.subscribers.saturating_sub(self.publishers + 1)
    }
}

/// One bot to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotSpec {
    pub identity: String,
    pub role: BotRole,
    pub token_role: Role,
    pub audio: bool,
    pub video: bool,
    /// Rakor scenario: what the bot's director does after the join.
    pub director: Option<DirectorPlan>,
}

/// The bots of a plan, publishers first: `site-001`… (the first `audio_only` without video),
/// then `command-room` (role host) if `host`, then `viewer-001`….
pub fn bot_specs(plan: &LoadPlan) -> Vec<BotSpec> {
    if plan.scenario == Scenario::Rakor {
        return scenario::rakor_bots(
            plan.publishers,
            plan.audio_only,
            plan.talkers,
            plan.viewers(),
        );
    }
    let mut v: Vec<BotSpec> = (0..plan.publishers)
        .map(|i| BotSpec {
            identity: format!("site-{:03}", i + 1),
            role: BotRole::Publisher,
            token_role: Role::Participant,
            audio: true,
            video: i >= plan.audio_only,
            director: None,
        })
        .collect();
    let viewers = plan.subscribers - usize::from(plan.host && plan.subscribers > 0);
    if plan.subscribers > viewers {
        v.push(BotSpec {
            identity: HOST_IDENTITY.to_owned(),
            role: BotRole::Subscriber,
            token_role: Role::Host,
            audio: false,
            video: false,
            director: None,
        });
    }
    v.extend((0..viewers).map(|i| BotSpec {
        identity: format!("viewer-{:03}", i + 1),
        role: BotRole::Subscriber,
        token_role: Role::Participant,
        audio: false,
        video: false,
        director: None,
    }));
    v
}

/// `rakor loadtest`: exit 0 when every bot joined and the run completed, 1 on a runtime failure
/// (a join failed, the join budget ran out, the server went away), 2 on a usage/config error,
/// 130 when stopped with Ctrl-C (the summary is printed in every case the run started).
pub fn main(args: LoadtestArgs) -> ExitCode {
    let plan = match LoadPlan::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.allow_remote {
        if let Err(why) = check_loopback_url(&plan.url) {
            eprintln!(
                "error: --url {}: {why}. rakor loadtest only loads a server on this machine \
                 (its load is a whole rakor, and it reads the server's CPU from /proc); pass \
                 --allow-remote to override",
                plan.url
            );
            return ExitCode::from(2);
        }
    }
    let config = match crate::cli::load_config(&args.config, CliOverrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "error,rakor_server=warn",
        ))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let key = match signing_key::load_or_create(&config) {
        Ok((
            _,
            KeySource::File {
                path,
                created: true,
            },
        )) => {
            eprintln!(
                "error: there was no signing key in {}; one was created now, so the server under \
                 test cannot know it. Pass the server's --data-dir or --config",
                path.display()
            );
            return ExitCode::from(2);
        }
        Ok((k, _)) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let probe = match resolve_server(args.server_pid) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in warnings(&plan, &config) {
        eprintln!("warning: {w}");
    }
    let tokens = match mint_tokens(&plan, &config, &key) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: minting tokens: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let summary = rt.block_on(run(&plan, tokens, probe));
    rt.shutdown_timeout(Duration::from_secs(1));

    let mut code = match summary.outcome.as_str() {
        "completed" => ExitCode::SUCCESS,
        "interrupted" => ExitCode::from(130),
        _ => ExitCode::from(1),
    };
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(summary::render(&summary).as_bytes());
        let _ = out.flush();
    }
    if let Some(path) = &args.report_json {
        let written = serde_json::to_string_pretty(&summary)
            .map_err(|e| e.to_string())
            .and_then(|j| std::fs::write(path, j + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("error: writing {}: {e}", path.display());
            code = ExitCode::from(1);
        }
    }
    code
}

/// The server to measure: `--server-pid` (must exist), else the only local `rakor serve`;
/// several → ask for `--server-pid`; none → not measured.
fn resolve_server(pid: Option<u32>) -> Result<Option<ServerProbe>, String> {
    let pid = match pid {
        Some(pid) => pid,
        None => match find_rakor_serve_pids().as_slice() {
            [] => {
                eprintln!(
                    "note: no local `rakor serve` process found; server CPU and memory are not \
                     measured (pass --server-pid)"
                );
                return Ok(None);
            }
            [one] => {
                eprintln!("measuring the server process {one} (the only local `rakor serve`)");
                *one
            }
            several => {
                return Err(format!(
                    "several `rakor serve` processes run ({several:?}); say which with --server-pid"
                ))
            }
        },
    };
    let probe = ServerProbe::new(pid)
        .ok_or_else(|| "cannot read the clock tick rate (sysconf)".to_owned())?;
    if probe.cpu_ticks().is_none() || probe.rss_kib().is_none() {
        return Err(format!(
            "--server-pid {pid}: no such process readable in /proc"
        ));
    }
    Ok(Some(probe))
}

/// What in the plan or the local config will not work as the user may expect.
fn warnings(plan: &LoadPlan, config: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if plan.video_layers > 1 && plan.video_layers != 3 {
        w.push(format!(
            "--video-layers {}: rakor-client sends simulcast as exactly 3 layers \
             (320x240, 640x360, 1280x720); sending 3",
            plan.video_layers
        ));
    }
    if plan.scenario == Scenario::Rakor && plan.video_layers == 1 {
        w.push(
            "--scenario rakor with --video-layers 1: without simulcast every tile gets the one \
             layer sent, so the layer figures will not show the host/spotlight/wall split"
                .to_owned(),
        );
    }
    let limits = &config.limits;
    let per_minute = limits.join_attempts_per_ip_per_minute as usize;
    if per_minute != 0 && plan.bots() > per_minute {
        w.push(format!(
            "{} joins from one address, but limits.join_attempts_per_ip_per_minute = {per_minute} \
             in this config: start the server with RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE=0",
            plan.bots()
        ));
    }
    if plan.bots() > limits.max_participants_per_room {
        w.push(format!(
            "{} bots in one room, but limits.max_participants_per_room = {} in this config",
            plan.bots(),
            limits.max_participants_per_room
        ));
    }
    w
}

fn mint_tokens(
    plan: &LoadPlan,
    config: &Config,
    key: &SigningKey,
) -> Result<Vec<(BotSpec, String)>, String> {
    let ttl = (plan.join_budget + plan.duration + LEAVE_BUDGET + Duration::from_secs(600))
        .min(config.auth.max_ttl);
    bot_specs(plan)
        .into_iter()
        .map(|spec| {
            let claims = Claims::new(
                &plan.room,
                &spec.identity,
                &spec.identity,
                spec.token_role,
                ttl,
            );
            token::mint(key, &claims)
                .map(|t| (spec, t))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// First Ctrl-C: stop (bots leave, the summary is printed). Second: exit at once.
fn watch_ctrl_c(stop: CancellationToken, interrupted: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        interrupted.store(true, Ordering::Relaxed);
        eprintln!("interrupted: the bots leave, then the summary (Ctrl-C again to quit at once)");
        stop.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

/// Run the plan: join (publishers, then subscribers), hold for the duration, leave; returns the
/// summary (also when a join failed or the run was interrupted).
pub async fn run(
    plan: &LoadPlan,
    tokens: Vec<(BotSpec, String)>,
    probe: Option<ServerProbe>,
) -> Summary {
    let stop = CancellationToken::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    let server_gone = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(stop.clone(), Arc::clone(&interrupted));
    let rss_start = probe.and_then(|p| p.rss_kib());
    let run_cpu_start = probe.and_then(|p| p.cpu_ticks());
    let me = ServerProbe::new(std::process::id());
    let my_cpu_run_start = me.and_then(|p| p.cpu_ticks());
    let loadavg_start = measure::loadavg();
    let progress = Arc::new(Progress {
        started: Instant::now(),
        total: tokens.len(),
        joined: AtomicUsize::new(0),
        media_ok: AtomicUsize::new(0),
        hubs: Mutex::new(Vec::new()),
    });
    let progress_done = CancellationToken::new();
    let progress_task = tokio::spawn(progress_loop(
        Arc::clone(&progress),
        probe,
        progress_done.clone(),
        stop.clone(),
        Arc::clone(&server_gone),
    ));
    match plan.scenario {
        Scenario::Mesh => eprintln!(
            "joining {} publishers, then {} subscribers into room {:?} ({} at a time, budget {} s)",
            plan.publishers,
            plan.subscribers,
            plan.room,
            plan.join_concurrency,
            plan.join_budget.as_secs()
        ),
        Scenario::Rakor => eprintln!(
            "rakor scenario: joining the host, then {} sites and {} viewers into room {:?} ({} at \
             a time, budget {} s)",
            plan.publishers,
            plan.viewers(),
            plan.room,
            plan.join_concurrency,
            plan.join_budget.as_secs()
        ),
    }

    // Join. Mesh: publishers first (each waits until its own tracks flow), then subscribers
    // (each waits until it receives every publisher's tracks). Rakor: the host first (waits
    // until its tracks flow), then the sites and viewers (each waits until its tracks flow and
    // it receives the host's audio and video).
    let ctx = Arc::new(JoinContext {
        url: plan.url.clone(),
        deadline: Instant::now() + plan.join_budget,
        stop: stop.clone(),
        permits: Arc::new(Semaphore::new(plan.join_concurrency)),
        progress: Arc::clone(&progress),
        simulcast: plan.video_layers > 1,
    });
    let first_role = match plan.scenario {
        Scenario::Mesh => BotRole::Publisher,
        Scenario::Rakor => BotRole::Host,
    };
    let (pub_tokens, sub_tokens): (Vec<_>, Vec<_>) =
        tokens.into_iter().partition(|(s, _)| s.role == first_role);
    let mut bots = join_group(&ctx, pub_tokens, None).await;
    if !stop.is_cancelled() {
        let expect: Expected = Arc::new(
            bots.iter()
                .filter_map(|b| Some((b.participant_id.clone()?, b.spec.video)))
                .collect(),
        );
        bots.extend(join_group(&ctx, sub_tokens, Some(expect)).await);
    } else {
        bots.extend(sub_tokens.into_iter().map(|(spec, _)| {
            let mut b = Bot::new(spec);
            b.error = Some("not started: the join phase was over".into());
            b
        }));
    }
    let join_failed = stop.is_cancelled();
    let join_elapsed = progress.started.elapsed();
    let mut settle_note = None;
    if !join_failed {
        eprintln!(
            "all {} bots joined with media flowing in {:.1} s",
            bots.len(),
            join_elapsed.as_secs_f64(),
        );
        if plan.scenario == Scenario::Rakor {
            settle_note = settle_layers(&bots, ctx.deadline, &stop).await;
            if let Some(n) = &settle_note {
                eprintln!("warning: {n}");
            }
        }
        eprintln!("holding for {} s", plan.duration.as_secs());
    }

    // Hold: the measured window. When the joins did not complete, the window is the join phase
    // instead (counters from zero, CPU from the start of the run), so a failure can be read.
    let (window_start, cpu_start, start_reports): (Instant, Option<u64>, Vec<Option<Report>>) =
        if join_failed {
            (progress.started, run_cpu_start, vec![None; bots.len()])
        } else {
            (
                Instant::now(),
                probe.and_then(|p| p.cpu_ticks()),
                bots.iter()
                    .map(|b| b.hub.as_ref().map(|h| h.report()))
                    .collect(),
            )
        };
    let now_wall = std::time::SystemTime::now();
    let wall_start = now_wall
        .checked_sub(window_start.elapsed())
        .unwrap_or(now_wall);
    let my_cpu_start = if join_failed {
        my_cpu_run_start
    } else {
        me.and_then(|p| p.cpu_ticks())
    };
    if !join_failed {
        tokio::select! {
            () = tokio::time::sleep(plan.duration) => {}
            () = stop.cancelled() => {}
        }
    }
    let window = window_start.elapsed();
    let window_end = Instant::now();
    let wall_end = std::time::SystemTime::now();
    let cpu_end = probe.and_then(|p| p.cpu_ticks());
    let my_cpu_end = me.and_then(|p| p.cpu_ticks());
    let rss_end = probe.and_then(|p| p.rss_kib());
    let rss_peak = probe.and_then(|p| p.peak_rss_kib());
    let loadavg_end = measure::loadavg();
    let end_reports: Vec<Option<Report>> = bots
        .iter()
        .map(|b| b.hub.as_ref().map(|h| h.report()))
        .collect();
    progress_done.cancel();
    let _ = progress_task.await;
    // Rakor: the directors hand the clients back (for the checks and the leave below).
    for b in &mut bots {
        if let Some(d) = b.director.take() {
            let (client, log) = d.finish().await;
            b.client = client;
            b.director_log = Some(log);
        }
    }
    for b in &mut bots {
        if let Some(c) = b.client.as_ref().filter(|c| c.is_closed()) {
            b.ended = Some(match c.close_reason() {
                Some(r) => serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| format!("server said leave: {s}")))
                    .unwrap_or_else(|| format!("server said leave: {r:?}")),
                None => "connection closed".to_owned(),
            });
        }
    }
    let dropped = bots.iter().filter(|b| b.ended.is_some()).count();

    // Leave: everyone at once, bounded.
    let participants = bots.iter().filter(|b| b.client.is_some()).count();
    eprintln!("{participants} bots leaving");
    let leaving: Vec<tokio::task::JoinHandle<()>> = bots
        .iter_mut()
        .filter_map(|b| b.client.take())
        .map(|c| {
            tokio::spawn(async move {
                let _ = c.leave().await;
            })
        })
        .collect();
    let aborts: Vec<_> = leaving.iter().map(|h| h.abort_handle()).collect();
    if tokio::time::timeout(LEAVE_BUDGET, futures_util::future::join_all(leaving))
        .await
        .is_err()
    {
        eprintln!(
            "warning: not every bot left within {} s; dropping the rest",
            LEAVE_BUDGET.as_secs()
        );
        aborts.iter().for_each(|a| a.abort());
    }
    let rss_after_leave = match probe {
        Some(p) if !server_gone.load(Ordering::Relaxed) => {
            tokio::time::sleep(SETTLE_AFTER_LEAVE).await;
            p.rss_kib()
        }
        _ => None,
    };

    let outcome = if interrupted.load(Ordering::Relaxed) {
        "interrupted"
    } else if join_failed || dropped > 0 {
        "failed"
    } else {
        "completed"
    };
    let error = if interrupted.load(Ordering::Relaxed) {
        None
    } else if server_gone.load(Ordering::Relaxed) {
        Some("the server process went away during the run".to_owned())
    } else if join_failed {
        Some(join_failure_text(plan, &bots, join_elapsed))
    } else if dropped > 0 {
        let first = bots
            .iter()
            .find_map(|b| Some(format!("{}: {}", b.spec.identity, b.ended.as_deref()?)))
            .unwrap_or_default();
        Some(format!(
            "{dropped} bots lost their session before the end (first: {first})"
        ))
    } else {
        None
    };
    let window_s = window.as_secs_f64();
    let server = probe.map(|p| summary::ServerSummary {
        pid: p.pid,
        clk_tck: p.clk_tck,
        cpu_cores_avg: match (cpu_start, cpu_end) {
            (Some(a), Some(b)) => measure::cores_used(b.saturating_sub(a), p.clk_tck, window),
            _ => None,
        },
        cpu_window_s: window_s,
        rss_start_kib: rss_start,
        rss_end_kib: rss_end,
        rss_peak_kib: rss_peak,
        rss_after_leave_kib: rss_after_leave,
        participants,
        rss_per_participant_kib: match (rss_start, rss_end) {
            (Some(a), Some(b)) => summary::per_participant_kib(a, b, participants),
            _ => None,
        },
        rss_peak_per_participant_kib: match (rss_start, rss_peak) {
            (Some(a), Some(b)) => summary::per_participant_kib(a, b, participants),
            _ => None,
        },
    });
    let machine = summary::MachineSummary {
        cpus: std::thread::available_parallelism().ok().map(usize::from),
        loadavg_start,
        loadavg_end,
        loadtest_cpu_cores_avg: match (me, my_cpu_start, my_cpu_end) {
            (Some(p), Some(a), Some(b)) => {
                measure::cores_used(b.saturating_sub(a), p.clk_tck, window)
            }
            _ => None,
        },
    };
    let (fwd_latency, fwd_latency_note) = match &plan.server_log {
        None => (None, Some("no --server-log FILE given".to_owned())),
        Some(path) => match std::fs::read(path) {
            Err(e) => (None, Some(format!("reading {}: {e}", path.display()))),
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                match server_log::last_in_window(
                    &text,
                    wall_start,
                    wall_end,
                    Duration::from_secs(1),
                ) {
                    Some(l) => (Some(l), None),
                    None => (
                        None,
                        Some(format!(
                            "no `media stats` line from rakor_sfu with fwd_p50_us/fwd_p99_us in \
                             {} during the measured window",
                            path.display()
                        )),
                    ),
                }
            }
        },
    };
    let window_kind = if join_failed {
        "join phase (the joins did not complete)"
    } else {
        "steady (everyone joined → duration over)"
    };
    let mut s = build_summary(
        plan,
        &bots,
        &start_reports,
        &end_reports,
        (window_s, window_kind),
        outcome,
        error,
        server,
        (window_start, window_end),
    );
    s.machine = Some(machine);
    s.fwd_latency = fwd_latency;
    s.fwd_latency_note = fwd_latency_note;
    if let Some(n) = settle_note {
        s.notes.push(n);
    }
    s
}

/// Rakor: after the joins, the speaker selection may still forward a quiet site that joined
/// early while a louder one waits out the 1.5 s hold (plus the 0.3 s level window); the
/// window starts no sooner than this.
const SPEAKERS_SETTLE: Duration = Duration::from_secs(2);

/// Rakor: wait (until `deadline`, polling every 100 ms) until every bot receives the layers it
/// asked for and [`SPEAKERS_SETTLE`] has passed, so the window measures the steady state.
/// `Some(note)` when the layers did not settle.
async fn settle_layers(
    bots: &[Bot],
    deadline: Instant,
    stop: &CancellationToken,
) -> Option<String> {
    let id_of = |identity: &str| {
        bots.iter()
            .find(|b| b.spec.identity == identity)
            .and_then(|b| b.participant_id.clone())
    };
    let host = id_of(HOST_IDENTITY);
    let spotlight = bots
        .iter()
        .find_map(|b| b.spec.director.as_ref()?.spotlight.clone())
        .and_then(|i| id_of(&i));
    let video_sites: Vec<ParticipantId> = bots
        .iter()
        .filter(|b| b.spec.role == BotRole::Site && b.spec.video)
        .filter_map(|b| b.participant_id.clone())
        .collect();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let waiting: Vec<&str> = bots
            .iter()
            .filter(|b| {
                let (Some(me), Some(hub)) = (&b.participant_id, &b.hub) else {
                    return false;
                };
                !scenario::layers_settled(
                    b.spec.role,
                    &hub.report(),
                    me,
                    host.as_ref(),
                    spotlight.as_ref(),
                    &video_sites,
                )
            })
            .map(|b| b.spec.identity.as_str())
            .collect();
        let out_of_time = Instant::now() >= deadline || stop.is_cancelled();
        if waiting.is_empty() && (started.elapsed() >= SPEAKERS_SETTLE || out_of_time) {
            eprintln!(
                "layers settled in {:.1} s (host: every site at q; sites: host at f, spotlight at \
                 h); waited at least {:.1} s for the speaker selection",
                started.elapsed().as_secs_f64(),
                SPEAKERS_SETTLE.as_secs_f64()
            );
            return None;
        }
        if out_of_time {
            return Some(format!(
                "layers had not settled when the join budget ran out: {} bots not yet receiving \
                 the layers they asked for (first: {})",
                waiting.len(),
                waiting.first().copied().unwrap_or_default()
            ));
        }
        tick.tick().await;
    }
}

/// The error of a failed join phase: the first bot's error, with the budget when it ran out.
fn join_failure_text(plan: &LoadPlan, bots: &[Bot], elapsed: Duration) -> String {
    let flowing = bots.iter().filter(|b| b.media.is_some()).count();
    // A bot's own failure first, then one stopped while waiting for media (its text says what
    // was missing), then whatever there is.
    let with_error =
        |pred: &dyn Fn(&str) -> bool| bots.iter().find(|b| b.error.as_deref().is_some_and(pred));
    let first = with_error(&|e| !e.starts_with("not started") && !e.starts_with("stopped"))
        .or_else(|| with_error(&|e| e.starts_with("stopped (")))
        .or_else(|| with_error(&|_| true));
    let what = first
        .map(|b| {
            format!(
                "{}: {}",
                b.spec.identity,
                b.error.as_deref().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    if elapsed >= plan.join_budget {
        format!(
            "the joins took longer than the join budget ({} s): media flowing for {flowing} of {} \
             bots; first error: {what}",
            plan.join_budget.as_secs(),
            bots.len()
        )
    } else {
        format!(
            "a join failed after {:.1} s (media flowing for {flowing} of {} bots): {what}",
            elapsed.as_secs_f64(),
            bots.len()
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn build_summary(
    plan: &LoadPlan,
    bots: &[Bot],
    start_reports: &[Option<Report>],
    end_reports: &[Option<Report>],
    (window_s, window_kind): (f64, &str),
    outcome: &str,
    error: Option<String>,
    server: Option<summary::ServerSummary>,
    (window_start, window_end): (Instant, Instant),
) -> Summary {
    let identity_of: HashMap<String, String> = bots
        .iter()
        .filter_map(|b| {
            Some((
                b.participant_id.as_ref()?.0.clone(),
                b.spec.identity.clone(),
            ))
        })
        .collect();
    let bot_summaries: Vec<summary::BotSummary> = bots
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let w = end_reports
                .get(i)
                .and_then(Option::as_ref)
                .map(|end| {
                    summary::window_counters(start_reports.get(i).and_then(Option::as_ref), end)
                })
                .unwrap_or_default();
            summary::BotSummary {
                identity: b.spec.identity.clone(),
                role: b.spec.role,
                token_role: b.spec.token_role.as_str().to_owned(),
                participant_id: b.participant_id.as_ref().map(|p| p.0.clone()),
                joined_ms: b.joined.map(|d| d.as_secs_f64() * 1000.0),
                media_ms: b.media.map(|d| d.as_secs_f64() * 1000.0),
                error: b.error.clone(),
                ended: b.ended.clone(),
                publisher_state: end_reports
                    .get(i)
                    .and_then(Option::as_ref)
                    .and_then(|r| r.publisher_state.clone()),
                subscriber_state: end_reports
                    .get(i)
                    .and_then(Option::as_ref)
                    .and_then(|r| r.subscriber_state.clone()),
                packets_sent: w.packets_sent,
                nacks_received: w.nacks_received,
                plis_received: w.plis_received,
                firs_received: w.firs_received,
                received: w
                    .received
                    .into_iter()
                    .map(|(pid, c)| (identity_of.get(&pid).cloned().unwrap_or(pid), c.into()))
                    .collect(),
                rakor: None,
            }
        })
        .collect();
    let publishers: Vec<String> = bots
        .iter()
        .filter(|b| b.spec.role.publishes() && b.participant_id.is_some())
        .map(|b| b.spec.identity.clone())
        .collect();
    let spotlight = scenario::spotlight_identity(plan.publishers, plan.audio_only)
        .filter(|_| plan.scenario == Scenario::Rakor);
    let video_sites: Vec<String> = bots
        .iter()
        .filter(|b| b.spec.role == BotRole::Site && b.spec.video && b.participant_id.is_some())
        .map(|b| b.spec.identity.clone())
        .collect();
    let shown =
        |b: &summary::BotSummary| scenario::shown_senders(b, spotlight.as_deref(), &video_sites);
    let pairs = match plan.scenario {
        Scenario::Mesh => summary::Pairs::AnyMediaFrom(&publishers),
        Scenario::Rakor => summary::Pairs::VideoFrom(&shown),
    };
    let all_roles = [
        BotRole::Publisher,
        BotRole::Subscriber,
        BotRole::Host,
        BotRole::Site,
        BotRole::Viewer,
    ];
    let present: Vec<BotRole> = all_roles
        .into_iter()
        .filter(|r| bot_summaries.iter().any(|b| b.role == *r))
        .collect();
    let roles = present
        .iter()
        .map(|r| summary::role_summary(*r, &bot_summaries, &pairs, window_s))
        .collect();
    // Rakor: per bot and per role, video by layer and sender, audio streams at once.
    let empty_log = scenario::DirectorLog::default();
    let window = (window_start, window_end);
    let mut rakor_roles = Vec::new();
    let mut bot_summaries = bot_summaries;
    if plan.scenario == Scenario::Rakor {
        let with_log: Vec<(&summary::BotSummary, &scenario::DirectorLog)> = bot_summaries
            .iter()
            .zip(bots)
            .map(|(s, b)| (s, b.director_log.as_ref().unwrap_or(&empty_log)))
            .collect();
        let per_bot: Vec<scenario::RakorFigures> = with_log
            .iter()
            .map(|m| scenario::figures(std::slice::from_ref(m), spotlight.as_deref(), window))
            .collect();
        for r in &present {
            let members: Vec<_> = with_log
                .iter()
                .filter(|(s, _)| s.role == *r)
                .copied()
                .collect();
            rakor_roles.push((
                r.plural().to_owned(),
                scenario::figures(&members, spotlight.as_deref(), window),
            ));
        }
        for (s, f) in bot_summaries.iter_mut().zip(per_bot) {
            s.rakor = Some(f);
        }
    }
    let mut notes = Vec::new();
    match plan.scenario {
        Scenario::Mesh => notes.push(
            "every bot receives every other participant's tracks (the server subscribes everyone \
             to everything; rakor-client has no opt-out), so publishers are also subscribers"
                .to_owned(),
        ),
        Scenario::Rakor => {
            notes.push(format!(
                "rakor scenario: the host shows every site at 320x180 (layer q) and puts {} in \
                 the spotlight; each site shows the host at 1280x720 (f), the spotlight at \
                 640x360 (h) and hides every other site; {} sites talk at distinct levels \
                 (-12 … -44 dBov) rotating every {} s, the others send -100 … -119 dBov",
                spotlight.as_deref().unwrap_or("nobody"),
                plan.talkers.min(plan.publishers),
                scenario::TALK_PHASE.as_secs()
            ));
            notes.push(
                "pairs w/ media: (bot, sender) pairs whose video the bot shows, with video \
                 packets in the window; site audio at once: 1 s samples, a stream counts when \
                 more than half its 20 ms frames arrived in the second"
                    .to_owned(),
            );
        }
    }
    if plan.video_layers > 1 && plan.scenario == Scenario::Mesh {
        notes.push(
            "simulcast: each video publisher sends q/h/f (320x240, 640x360, 1280x720); \
             subscribers report no tile size, so each gets the top layer and the server's \
             dynacast stops the lower ones"
                .to_owned(),
        );
    }
    Summary {
        url: plan.url.clone(),
        room: plan.room.clone(),
        scenario: plan.scenario.as_str().to_owned(),
        publishers: plan.publishers,
        audio_only: plan.audio_only,
        subscribers: plan.subscribers,
        host: plan.host,
        video_layers_requested: plan.video_layers,
        video_layers_sent: if plan.video_layers > 1 { 3 } else { 1 },
        duration_s: plan.duration.as_secs_f64(),
        window_s,
        window: window_kind.to_owned(),
        outcome: outcome.to_owned(),
        error,
        roles,
        rakor_roles,
        server,
        machine: None,
        fwd_latency: None,
        fwd_latency_note: None,
        notes,
        not_measured: vec![
            "NACKs sent by receivers (webrtc's NACK generator interceptor sends them uncounted)"
                .to_owned(),
            "which late packets were retransmissions (a gap filled later by a reordered or \
             retransmitted packet counts in loss % but not in `unrecovered`)"
                .to_owned(),
            "jitter, round-trip time, bitrate estimates (RTCP reports, REMB, TWCC are not exposed)"
                .to_owned(),
        ],
        bots: bot_summaries,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::Parser as _;

    fn parse(extra: &[&str]) -> Result<LoadtestArgs, clap::Error> {
        let cli = crate::cli::Cli::try_parse_from(
            ["rakor", "loadtest"].iter().chain(extra.iter()).copied(),
        )?;
        match cli.command {
            crate::cli::Command::Loadtest(a) => Ok(a),
            _ => panic!("not loadtest"),
        }
    }

    #[test]
    fn parses_the_documented_command_line() {
        let a = parse(&[
            "--url",
            "ws://127.0.0.1:7880/rtc",
            "--room",
            "R",
            "--publishers",
            "60",
            "--subscribers",
            "61",
            "--duration",
            "60s",
            "--video-layers",
            "3",
            "--audio-only",
            "5",
            "--host",
            "--data-dir",
            "/tmp/lt",
            "--server-pid",
            "42",
            "--join-concurrency",
            "8",
            "--report-json",
            "/tmp/r.json",
        ])
        .unwrap();
        let plan = LoadPlan::from_args(&a).unwrap();
        assert_eq!(
            (plan.publishers, plan.subscribers, plan.audio_only),
            (60, 61, 5)
        );
        assert_eq!(plan.duration, Duration::from_secs(60));
        assert_eq!((plan.video_layers, plan.join_concurrency), (3, 8));
        assert_eq!(a.server_pid, Some(42));
        let d = parse(&[]).unwrap();
        assert_eq!(
            (d.join_concurrency, d.join_budget),
            (8, Duration::from_secs(60))
        );
        assert!(!d.allow_remote && !d.host);
        assert!(parse(&["--video-layers", "4"]).is_err());
        assert!(parse(&["--join-concurrency", "0"]).is_err());
    }

    #[test]
    fn rakor_scenario_plans() {
        let a = parse(&[
            "--scenario",
            "rakor",
            "--publishers",
            "60",
            "--subscribers",
            "61",
            "--duration",
            "60s",
            "--server-log",
            "/tmp/s.log",
        ])
        .unwrap();
        let plan = LoadPlan::from_args(&a).unwrap();
        assert_eq!(plan.scenario, Scenario::Rakor);
        assert_eq!((plan.bots(), plan.viewers(), plan.talkers), (61, 0, 5));
        assert_eq!((plan.video_layers, plan.host), (3, true));
        assert_eq!(plan.server_log, Some(PathBuf::from("/tmp/s.log")));
        let specs = bot_specs(&plan);
        assert_eq!(specs.len(), 61);
        assert_eq!(specs[0].identity, HOST_IDENTITY);
        assert!(specs.iter().all(|s| s.director.is_some()));
        // --subscribers defaults to the sites + the host; more are viewers.
        let a = parse(&["--scenario", "rakor", "--publishers", "3", "--talkers", "2"]).unwrap();
        let plan = LoadPlan::from_args(&a).unwrap();
        assert_eq!((plan.subscribers, plan.bots(), plan.talkers), (4, 4, 2));
        let a = parse(&[
            "--scenario",
            "rakor",
            "--publishers",
            "3",
            "--subscribers",
            "6",
        ])
        .unwrap();
        let plan = LoadPlan::from_args(&a).unwrap();
        assert_eq!((plan.viewers(), bot_specs(&plan).len()), (2, 6));
        // The mesh default is unchanged.
        let plan = LoadPlan::from_args(&parse(&[]).unwrap()).unwrap();
        assert_eq!(
            (plan.scenario, plan.subscribers, plan.video_layers),
            (Scenario::Mesh, 10, 1)
        );
        assert!(parse(&["--scenario", "rakor", "--talkers", "6"]).is_err());
        assert!(parse(&["--scenario", "star"]).is_err());
        let w = warnings(
            &LoadPlan::from_args(
                &parse(&[
                    "--scenario",
                    "rakor",
                    "--publishers",
                    "2",
                    "--video-layers",
                    "1",
                ])
                .unwrap(),
            )
            .unwrap(),
            &Config::default(),
        );
        assert!(w.join("\n").contains("without simulcast"), "{w:?}");
    }

    #[test]
    fn rejects_impossible_plans() {
        let bad: [&[&str]; 7] = [
            &["--publishers", "0", "--subscribers", "0"],
            &["--publishers", "2", "--audio-only", "3"],
            &["--subscribers", "0", "--host"],
            &["--duration", "0s"],
            &[
                "--scenario",
                "rakor",
                "--publishers",
                "60",
                "--subscribers",
                "60",
            ],
            &["--scenario", "rakor", "--publishers", "0"],
            &["--scenario", "rakor", "--publishers", "2000"],
        ];
        for args in bad {
            let a = parse(args).unwrap();
            assert!(LoadPlan::from_args(&a).is_err(), "{args:?}");
        }
    }

    #[test]
    fn bots_are_publishers_then_host_then_viewers() {
        let a = parse(&[
            "--publishers",
            "3",
            "--subscribers",
            "2",
            "--audio-only",
            "1",
            "--host",
        ])
        .unwrap();
        let specs = bot_specs(&LoadPlan::from_args(&a).unwrap());
        let got: Vec<(&str, BotRole, Role, bool, bool)> = specs
            .iter()
            .map(|s| (s.identity.as_str(), s.role, s.token_role, s.audio, s.video))
            .collect();
        use BotRole::{Publisher as P, Subscriber as S};
        assert_eq!(
            got,
            vec![
                ("site-001", P, Role::Participant, true, false),
                ("site-002", P, Role::Participant, true, true),
                ("site-003", P, Role::Participant, true, true),
                ("command-room", S, Role::Host, false, false),
                ("viewer-001", S, Role::Participant, false, false),
            ]
        );
        let a = parse(&["--publishers", "1", "--subscribers", "1"]).unwrap();
        let specs = bot_specs(&LoadPlan::from_args(&a).unwrap());
        assert_eq!(specs[1].identity, "viewer-001");
    }

    #[test]
    fn warns_about_simulcast_and_server_limits() {
        let a = parse(&[
            "--publishers",
            "60",
            "--subscribers",
            "61",
            "--video-layers",
            "3",
        ])
        .unwrap();
        let plan = LoadPlan::from_args(&a).unwrap();
        let w = warnings(&plan, &Config::default()).join("\n");
        assert!(!w.contains("simulcast"), "3 layers is what is sent: {w}");
        assert!(
            w.contains("RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE=0"),
            "{w}"
        );
        assert!(w.contains("max_participants_per_room"), "{w}");
        let a = parse(&["--publishers", "2", "--subscribers", "2"]).unwrap();
        assert!(warnings(&LoadPlan::from_args(&a).unwrap(), &Config::default()).is_empty());
        let a = parse(&[
            "--publishers",
            "2",
            "--subscribers",
            "2",
            "--video-layers",
            "2",
        ])
        .unwrap();
        let w = warnings(&LoadPlan::from_args(&a).unwrap(), &Config::default()).join("\n");
        assert!(w.contains("exactly 3 layers"), "{w}");
    }
}
