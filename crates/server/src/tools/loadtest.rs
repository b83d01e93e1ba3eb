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
//! Layout: this file owns the flags and the checks before the run (the plan, the server to
//! measure, warnings, tokens); `plan` is the validated plan and its bots; `run` runs it (join,
//! hold, leave) and `assemble` builds the summary from the bots; `join` joins the bots and
//! prints progress; `scenario` is the rakor scenario's bots, their director tasks and figures;
//! `measure` reads `/proc` and checks the URL; `server_log` reads the server's latency line;
//! `summary` is the summary's types and turns the bots' reports into the table and the JSON.

mod assemble;
mod join;
mod measure;
mod plan;
mod procs;
mod run;
mod scenario;
mod server_log;
mod summary;

pub use measure::{check_loopback_url, find_rakor_serve_pids, ServerProbe};
pub use plan::{bot_specs, BotSpec, LoadPlan, HOST_IDENTITY};
pub use run::run;
pub use scenario::Scenario;
pub use summary::{BotRole, Summary};

use crate::cli::ConfigArgs;
use crate::config::{CliOverrides, Config};
use crate::signing_key::{self, KeySource, SigningKey};
use crate::token::{self, Claims};
use run::LEAVE_BUDGET;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Rakor: the spotlighted site also shares its screen (synthetic slides, simulcast): the
    /// room's presentation, which everyone shows at 640x360 and should still receive at its
    /// top layer (`screen_layers` in the report).
    #[arg(long)]
    pub presenter: bool,
    /// Rakor: sites (and viewers) subscribe to every video as it is published, as clients
    /// without video on demand do. By default they join with `video_on_demand` and ask only
    /// for the videos they show (the host, the spotlight, the presentation).
    #[arg(long)]
    pub eager_video: bool,
    /// Rakor: number the sites from N (`site-N`, …), so that several load tools can bring
    /// distinct sites into one room, e.g. one per node of a cascade (tests/bench/cascade.sh).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9999))]
    pub first_site: u32,
    /// Rakor: bring no host; the host is another load tool's (one per node of a cascade: only
    /// the owner's brings it). A site's media then flows when its own tracks flow and it
    /// receives someone's audio and video (the host's or the spotlight's, the only video it
    /// shows).
    #[arg(long)]
    pub no_host: bool,
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
    /// Trust this PEM CA certificate (besides the system's) for a `wss://` --url, e.g. a
    /// private CA or a self-signed server certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Which ICE candidates the bots may use: `all` (UDP first, then TCP, then TURN, as a
    /// browser does) or `relay` (only TURN relayed candidates from `joined.ice_servers`, e.g.
    /// to measure 20 sites over TURN/TLS; the server needs `turn.enabled`).
    #[arg(long, value_enum, default_value = "all")]
    pub ice_transport: IceTransport,
    /// How long each bot's ICE agent keeps checking a candidate pair that has not answered
    /// (rakor-client's `ice_check_window`, one check every 200 ms). `0s`: the `webrtc`
    /// crate's default (8 checks, ~1.6 s, then the pair is given up for good), to compare.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub ice_check_window: Duration,
    /// Spread the bots over N processes (this tool started N times with a slice of the bots
    /// each; this process orders their joins, holds one window for all and adds up their
    /// reports), so that one process's media threads are not what limits the run.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub procs: u16,
    /// Internal (set by --procs on the processes it starts): run the bots K, K+N, K+2N, ….
    #[arg(long, value_name = "K/N", hide = true)]
    pub proc_slice: Option<String>,
    /// Internal (set by --procs): the run's start, Unix milliseconds.
    #[arg(long, value_name = "MS", hide = true)]
    pub proc_epoch_ms: Option<u64>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `--ice-transport`: the bots' ICE transport policy (as `RTCIceTransportPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IceTransport {
    /// Every candidate: UDP, TCP and relayed.
    All,
    /// Only relayed (TURN) candidates.
    Relay,
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
    // `RAKOR_LOADTEST_LOG` (a `RUST_LOG`-style filter, when set and valid) shows the bots' own
    // clients, e.g. `error,rakor_client=info` for their resumes and media resets. Not
    // `RUST_LOG`: a server started from the same shell would pass its filter on.
    let filter = std::env::var("RAKOR_LOADTEST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("error,rakor_server=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // One process of --procs: its slice of the bots; the parent prints the summary.
    if let Some(slice) = plan.slice {
        let tokens = match mint_tokens(&plan, &config, &key) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: minting tokens: {e}");
                return ExitCode::from(2);
            }
        };
        let mine = tokens
            .into_iter()
            .enumerate()
            .filter(|(i, _)| procs::in_slice(*i, slice))
            .map(|(_, t)| t)
            .collect();
        rt.block_on(procs::run_child(&plan, mine));
        rt.shutdown_timeout(Duration::from_secs(1));
        return ExitCode::SUCCESS;
    }
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
    let summary = if plan.procs > 1 {
        // The children get this command line (same flags) plus their slice.
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        rt.block_on(procs::run_parent(&plan, &args, probe))
    } else {
        let tokens = match mint_tokens(&plan, &config, &key) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: minting tokens: {e}");
                return ExitCode::from(2);
            }
        };
        rt.block_on(run(&plan, tokens, probe))
    };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::Parser as _;
    use rakor_proto::Role;

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
    fn ice_transport_relay_makes_the_bots_relay_only() {
        assert!(
            !LoadPlan::from_args(&parse(&[]).unwrap())
                .unwrap()
                .relay_only
        );
        let all = parse(&["--ice-transport", "all"]).unwrap();
        assert!(!LoadPlan::from_args(&all).unwrap().relay_only);
        let relay = parse(&["--ice-transport", "relay"]).unwrap();
        assert_eq!(relay.ice_transport, IceTransport::Relay);
        assert!(LoadPlan::from_args(&relay).unwrap().relay_only);
        assert!(parse(&["--ice-transport", "tcp"]).is_err());
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
        // One node's share of a cascaded rakor: sites numbered from 21, no host, no spotlight.
        let a = parse(&[
            "--scenario",
            "rakor",
            "--publishers",
            "20",
            "--first-site",
            "21",
            "--no-host",
        ])
        .unwrap();
        let plan = LoadPlan::from_args(&a).unwrap();
        let specs = bot_specs(&plan);
        assert_eq!((plan.bots(), specs.len()), (20, 20));
        assert_eq!(
            (specs[0].identity.as_str(), specs[19].identity.as_str()),
            ("site-021", "site-040")
        );
        assert!(specs.iter().all(|s| s.role == BotRole::Site));
        assert_eq!(plan.spotlight(), None);
        // The owner's share keeps the host, whose spotlight follows the numbering.
        let a = parse(&[
            "--scenario",
            "rakor",
            "--publishers",
            "3",
            "--first-site",
            "7",
        ])
        .unwrap();
        let plan = LoadPlan::from_args(&a).unwrap();
        let specs = bot_specs(&plan);
        assert_eq!(specs[0].identity, HOST_IDENTITY);
        let spot = specs[0].director.as_ref().and_then(|d| d.spotlight.clone());
        assert_eq!(spot.as_deref(), Some("site-007"));
        assert_eq!(plan.spotlight().as_deref(), Some("site-007"));
        assert_eq!(specs[1].identity, "site-007");
        assert!(LoadPlan::from_args(&parse(&["--no-host"]).unwrap()).is_err());
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
