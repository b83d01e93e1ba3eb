//! `rakor soak`: a bounded soak test against a running server. One host publishes audio and
//! video for the whole run; N bots join, stay a few seconds, leave (one in four just drops its
//! connection without `leave`, like a closed laptop), pause and join again, until the duration
//! is over. The server's resident memory, threads and open file descriptors are read from
//! `/proc/<pid>` (`--server-pid`) at the start (everyone joined once), every minute, and at the
//! end (everyone gone, after a settling pause), so growth is visible.
//!
//! Tokens are minted locally with the server's signing key (same `--config`/`--data-dir` as
//! `rakor serve`). A server with the default `limits.join_attempts_per_ip_per_minute` refuses a
//! fast-cycling soak from one address: start it with
//! `RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE=0`.

use crate::cli::ConfigArgs;
use crate::config::CliOverrides;
use crate::signing_key;
use crate::token::{self, Claims};
use rakor_client::{Client, ClientOptions};
use rakor_proto::{Role, TrackKind};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `rakor soak` flags.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Signalling WebSocket URL of the server under test.
    #[arg(long, default_value = "ws://127.0.0.1:7880/rtc")]
    pub url: String,
    /// Room to use.
    #[arg(long, default_value = "soak")]
    pub room: String,
    /// Bots that join and leave in a loop (besides the host).
    #[arg(long, default_value_t = 20)]
    pub bots: usize,
    /// How long to run, e.g. 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Shortest stay of a bot per cycle.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub min_stay: Duration,
    /// Longest stay of a bot per cycle.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub max_stay: Duration,
    /// Bots publish nothing (they publish audio by default; the host publishes audio+video).
    #[arg(long)]
    pub bots_silent: bool,
    /// PID of the `rakor serve` process, to read its memory, threads and fds from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `rakor soak`: exit 0 when every join worked, 1 otherwise, 2 on a usage/config error.
pub fn main(args: SoakArgs) -> ExitCode {
    let config = match crate::cli::load_config(&args.config, CliOverrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "error,rakor_server=warn",
        ))
        .with_writer(std::io::stderr)
        .try_init();
    let key = match signing_key::load_or_create(&config) {
        Ok((k, _)) => Arc::new(k),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if args.min_stay > args.max_stay || args.bots == 0 {
        eprintln!("error: need --bots >= 1 and --min-stay <= --max-stay");
        return ExitCode::from(2);
    }
    let plan = SoakPlan {
        url: args.url,
        room: args.room,
        bots: args.bots,
        duration: args.duration,
        stay: (args.min_stay, args.max_stay),
        bots_publish_audio: !args.bots_silent,
        server_pid: args.server_pid,
    };
    crate::cli::run_to_exit(run(plan, key))
}

/// What `rakor soak` was asked to do.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub url: String,
    pub room: String,
    pub bots: usize,
    pub duration: Duration,
    /// Shortest and longest stay of a bot per cycle.
    pub stay: (Duration, Duration),
    pub bots_publish_audio: bool,
    pub server_pid: Option<u32>,
}

/// A `/proc` reading of the server process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

impl std::fmt::Display for ProcSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB, {} threads, {} open fds",
            self.rss_kib as f64 / 1024.0,
            self.threads,
            self.fds
        )
    }
}

/// `VmRSS` and `Threads` from `/proc/PID/status`, open descriptors from `/proc/PID/fd`.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        rss_kib: status_field(&status, "VmRSS:")?,
        threads: status_field(&status, "Threads:")?,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
    })
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[derive(Default)]
struct Counters {
    joins: AtomicU64,
    join_failures: AtomicU64,
    leaves: AtomicU64,
    drops: AtomicU64,
    with_host_video: AtomicU64,
}

/// Run the soak; prints progress and a summary on stdout. Errors if the host cannot join or
/// the server process disappears.
pub async fn run(plan: SoakPlan, key: Arc<signing_key::SigningKey>) -> anyhow::Result<()> {
    let mint = |identity: &str, role: Role| -> anyhow::Result<String> {
        let ttl = plan.duration + Duration::from_secs(3600);
        token::mint(
            &key,
            &Claims::new(&plan.room, identity, identity, role, ttl),
        )
        .map_err(|e| anyhow::anyhow!("minting a token: {e}"))
    };
    let read = |what: &str| -> Option<ProcSample> {
        let pid = plan.server_pid?;
        let s = sample(pid);
        match s {
            Some(s) => println!("[{what}] server {s}"),
            None => println!("[{what}] server process {pid} not found"),
        }
        s
    };
    let before_host = read("idle");
    let host = Client::connect(ClientOptions::new(
        plan.url.clone(),
        mint("soak-host", Role::Host)?,
    ))
    .await
    .map_err(|e| anyhow::anyhow!("the host could not join: {e}"))?;
    let host_id = host.participant_id().clone();

    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let end = started + plan.duration;
    let (first_round_tx, mut first_round_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for i in 0..plan.bots {
        let token = mint(&format!("soak-bot-{i:02}"), Role::Participant)?;
        let plan = plan.clone();
        let counters = Arc::clone(&counters);
        let host_id = host_id.clone();
        let first_round = first_round_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut cycle: u64 = 0;
            let mut first = Some(first_round);
            while Instant::now() < end {
                cycle += 1;
                let opts = ClientOptions::new(plan.url.clone(), token.clone())
                    .publish(plan.bots_publish_audio, false);
                match Client::connect(opts).await {
                    Ok(bot) => {
                        counters.joins.fetch_add(1, Ordering::Relaxed);
                        if let Some(tx) = first.take() {
                            let _ = tx.send(());
                        }
                        let (lo, hi) = plan.stay;
                        let spread = hi.saturating_sub(lo).as_millis() as u64;
                        let jitter = (i as u64 * 7919 + cycle * 104_729) % spread.max(1);
                        let stay = lo + Duration::from_millis(jitter);
                        let until = (Instant::now() + stay).min(end);
                        let saw_video = bot
                            .wait_media(
                                |r| {
                                    r.received_track(&host_id, TrackKind::Video)
                                        .is_some_and(|t| t.keyframes >= 1)
                                },
                                until.saturating_duration_since(Instant::now()),
                            )
                            .await
                            .is_ok();
                        if saw_video {
                            counters.with_host_video.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep_until(until.into()).await;
                        if cycle & 3 == 0 {
                            bot.disconnect().await;
                            counters.drops.fetch_add(1, Ordering::Relaxed);
                        } else {
                            bot.leave().await;
                            counters.leaves.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        counters.join_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(bot = i, "join failed: {e}");
                        if let Some(tx) = first.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(
                    500 + (cycle * 331 + i as u64 * 97) % 1500,
                ))
                .await;
            }
        }));
    }
    drop(first_round_tx);
    for _ in 0..plan.bots {
        if first_round_rx.recv().await.is_none() {
            break;
        }
    }
    let start_sample = read("start: host + all bots joined");

    let mut minute = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(60),
    );
    loop {
        tokio::select! {
            _ = minute.tick() => {
                let c = &counters;
                let s = plan.server_pid.and_then(sample);
                println!(
                    "[{:>4}s] joins {} (failed {}), leaves {}, drops {}{}",
                    started.elapsed().as_secs(),
                    c.joins.load(Ordering::Relaxed),
                    c.join_failures.load(Ordering::Relaxed),
                    c.leaves.load(Ordering::Relaxed),
                    c.drops.load(Ordering::Relaxed),
                    s.map(|s| format!("; server {s}")).unwrap_or_default(),
                );
                if plan.server_pid.is_some() && s.is_none() {
                    anyhow::bail!("the server process is gone");
                }
            }
            () = tokio::time::sleep_until(end.into()) => break,
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let host_report = host.leave().await;
    // Let the server notice the last drops (dead-peer timeout) and free everything.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let end_sample = read("end: everyone gone, 15 s later");

    let c = &counters;
    println!(
        "soak: {} s, {} bots; joins {} (failed {}), clean leaves {}, dropped connections {}, \
         joins that received the host's video {}; host sent {} video packets",
        plan.duration.as_secs(),
        plan.bots,
        c.joins.load(Ordering::Relaxed),
        c.join_failures.load(Ordering::Relaxed),
        c.leaves.load(Ordering::Relaxed),
        c.drops.load(Ordering::Relaxed),
        c.with_host_video.load(Ordering::Relaxed),
        host_report
            .sent_track(TrackKind::Video)
            .map_or(0, |t| t.packets),
    );
    if let (Some(a), Some(b), Some(idle)) = (start_sample, end_sample, before_host) {
        println!("server before the soak: {idle}");
        println!("server at start:        {a}");
        println!("server at end:          {b}");
        println!(
            "growth start→end: RSS {:+.1} MiB, threads {:+}, fds {:+}",
            (b.rss_kib as f64 - a.rss_kib as f64) / 1024.0,
            b.threads as i64 - a.threads as i64,
            b.fds as i64 - a.fds as i64
        );
    }
    if c.join_failures.load(Ordering::Relaxed) > 0 {
        anyhow::bail!("some joins failed (see the log)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn reads_status_fields() {
        let status = "Name:\trakor\nVmRSS:\t   41234 kB\nThreads:\t7\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(41234));
        assert_eq!(status_field(status, "Threads:"), Some(7));
        assert_eq!(status_field(status, "VmSwap:"), None);
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.threads >= 1 && me.fds >= 1);
    }
}
