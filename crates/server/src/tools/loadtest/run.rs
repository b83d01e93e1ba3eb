//! Running a plan: join the bots (publishers or the host first), hold for the measured window,
//! leave, then hand the bots and the readings to `assemble` for the summary.

use super::assemble::build_summary;
use super::join::{join_group, progress_loop, Bot, Expected, JoinContext, Progress};
use super::measure::{self, ServerProbe};
use super::plan::{bot_specs, BotSpec, LoadPlan, HOST_IDENTITY};
use super::procs::{epoch_instant, ChildLink};
use super::scenario::{self, Scenario};
use super::server_log;
use super::summary::{self, BotRole, Summary};
use rakor_client::Report;
use rakor_proto::ParticipantId;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Every bot's `leave` together may take this long; stragglers are then dropped.
pub(super) const LEAVE_BUDGET: Duration = Duration::from_secs(30);
/// Pause after the leaves before the last memory reading.
pub(super) const SETTLE_AFTER_LEAVE: Duration = Duration::from_secs(2);
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
    let core = run_core(plan, tokens, probe, None).await;
    summarize(
        plan,
        &core.bots,
        &core.start_reports,
        &core.end_reports,
        core.readings,
    )
}

/// What a run (or, with `--procs`, the processes together) measured besides the bots.
pub(super) struct Readings {
    pub(super) interrupted: bool,
    pub(super) server_gone: bool,
    pub(super) join_failed: bool,
    pub(super) join_elapsed: Duration,
    pub(super) window_start: Instant,
    pub(super) window_end: Instant,
    pub(super) wall_start: std::time::SystemTime,
    pub(super) wall_end: std::time::SystemTime,
    pub(super) probe: Option<ServerProbe>,
    pub(super) rss_start: Option<u64>,
    pub(super) rss_end: Option<u64>,
    pub(super) rss_peak: Option<u64>,
    pub(super) rss_after_leave: Option<u64>,
    pub(super) cpu_start: Option<u64>,
    pub(super) cpu_end: Option<u64>,
    pub(super) loadavg_start: Option<[f64; 3]>,
    pub(super) loadavg_end: Option<[f64; 3]>,
    pub(super) loadtest_cores: Option<f64>,
    /// Bots connected at the end (before they left).
    pub(super) participants: usize,
    pub(super) notes: Vec<String>,
}

/// The bots after the run, their reports at the window's start and end, and the readings.
pub(super) struct Core {
    pub(super) bots: Vec<Bot>,
    pub(super) start_reports: Vec<Option<Report>>,
    pub(super) end_reports: Vec<Option<Report>>,
    pub(super) readings: Readings,
}

/// Join, hold, leave. With `link` (one process of `--procs`), the parent process is asked
/// between the phases, so that every process's bots join in the same order and hold for the
/// same window (see `procs`).
pub(super) async fn run_core(
    plan: &LoadPlan,
    tokens: Vec<(BotSpec, String)>,
    probe: Option<ServerProbe>,
    mut link: Option<&mut ChildLink>,
) -> Core {
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
        started: plan.epoch.map_or_else(Instant::now, epoch_instant),
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
        tls_roots: plan.tls_roots.clone(),
        relay_only: plan.relay_only,
        ice_check_window: plan.ice_check_window,
        deadline: Instant::now() + plan.join_budget,
        stop: stop.clone(),
        permits: Arc::new(Semaphore::new(plan.join_concurrency)),
        progress: Arc::clone(&progress),
        simulcast: plan.video_layers > 1,
        eager_video: plan.eager_video,
        await_other_media: plan.no_host,
    });
    let first_role = match plan.scenario {
        Scenario::Mesh => BotRole::Publisher,
        Scenario::Rakor => BotRole::Host,
    };
    let (pub_tokens, sub_tokens): (Vec<_>, Vec<_>) =
        tokens.into_iter().partition(|(s, _)| s.role == first_role);
    let mut bots = join_group(&ctx, pub_tokens, None).await;
    let mut first: Vec<(ParticipantId, bool)> = bots
        .iter()
        .filter_map(|b| Some((b.participant_id.clone()?, b.spec.video)))
        .collect();
    if let Some(l) = link.as_deref_mut() {
        // Every process's first group (the host, or the mesh publishers) before any second.
        match l.first(!stop.is_cancelled(), first).await {
            Some(all) => first = all,
            None => {
                stop.cancel();
                first = Vec::new();
            }
        }
    }
    if !stop.is_cancelled() {
        let expect: Expected = Arc::new(first);
        bots.extend(join_group(&ctx, sub_tokens, Some(expect)).await);
    } else {
        bots.extend(sub_tokens.into_iter().map(|(spec, _)| {
            let mut b = Bot::new(spec);
            b.error = Some("not started: the join phase was over".into());
            b
        }));
    }
    let mut ids: Vec<(String, ParticipantId)> = bots
        .iter()
        .filter_map(|b| Some((b.spec.identity.clone(), b.participant_id.clone()?)))
        .collect();
    if let Some(l) = link.as_deref_mut() {
        match l.joined(!stop.is_cancelled(), ids).await {
            Some(all) => ids = all,
            None => {
                stop.cancel();
                ids = Vec::new();
            }
        }
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
            let specs = bot_specs(plan);
            settle_note = settle_layers(&bots, &specs, &ids, ctx.deadline, &stop).await;
            if let Some(n) = &settle_note {
                eprintln!("warning: {n}");
            }
        }
        if let Some(l) = link.as_deref_mut() {
            // All processes start the window together.
            if !l.holding().await {
                stop.cancel();
            }
        }
        if !stop.is_cancelled() {
            eprintln!("holding for {} s", plan.duration.as_secs());
        }
    }
    let join_failed = stop.is_cancelled() && !interrupted.load(Ordering::Relaxed) || join_failed;

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
    if let Some(l) = link {
        l.held().await;
    }
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

    let loadtest_cores = match (me, my_cpu_start, my_cpu_end) {
        (Some(p), Some(a), Some(b)) => measure::cores_used(b.saturating_sub(a), p.clk_tck, window),
        _ => None,
    };
    Core {
        bots,
        start_reports,
        end_reports,
        readings: Readings {
            interrupted: interrupted.load(Ordering::Relaxed),
            server_gone: server_gone.load(Ordering::Relaxed),
            join_failed,
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
            loadtest_cores,
            participants,
            notes: settle_note.into_iter().collect(),
        },
    }
}

/// The summary of a run from its bots, their reports and the readings.
pub(super) fn summarize(
    plan: &LoadPlan,
    bots: &[Bot],
    start_reports: &[Option<Report>],
    end_reports: &[Option<Report>],
    r: Readings,
) -> Summary {
    let Readings {
        interrupted,
        server_gone,
        join_failed,
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
        loadtest_cores,
        participants,
        notes: extra_notes,
    } = r;
    let window = window_end.saturating_duration_since(window_start);
    let dropped = bots.iter().filter(|b| b.ended.is_some()).count();
    let outcome = if interrupted {
        "interrupted"
    } else if join_failed || dropped > 0 {
        "failed"
    } else {
        "completed"
    };
    let error = if interrupted {
        None
    } else if server_gone {
        Some("the server process went away during the run".to_owned())
    } else if join_failed {
        Some(join_failure_text(plan, bots, join_elapsed))
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
        loadtest_cpu_cores_avg: loadtest_cores,
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
        bots,
        start_reports,
        end_reports,
        (window_s, window_kind),
        outcome,
        error,
        server,
        (window_start, window_end),
    );
    s.machine = Some(machine);
    s.fwd_latency = fwd_latency;
    s.fwd_latency_note = fwd_latency_note;
    s.notes.extend(extra_notes);
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
    specs: &[BotSpec],
    ids: &[(String, ParticipantId)],
    deadline: Instant,
    stop: &CancellationToken,
) -> Option<String> {
    // Every bot of the run (with `--procs`, the other processes' too): `specs` and `ids`.
    let id_of = |identity: &str| {
        ids.iter()
            .find(|(i, _)| i == identity)
            .map(|(_, p)| p.clone())
    };
    let host = id_of(HOST_IDENTITY);
    let spotlight = specs
        .iter()
        .find_map(|s| s.director.as_ref()?.spotlight.clone())
        .and_then(|i| id_of(&i));
    let presenter = specs
        .iter()
        .find(|s| s.director.as_ref().is_some_and(|d| d.present))
        .and_then(|s| id_of(&s.identity));
    let video_sites: Vec<ParticipantId> = specs
        .iter()
        .filter(|s| s.role == BotRole::Site && s.video)
        .filter_map(|s| id_of(&s.identity))
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
                    presenter.as_ref(),
                )
            })
            .map(|b| b.spec.identity.as_str())
            .collect();
        let out_of_time = Instant::now() >= deadline || stop.is_cancelled();
        if waiting.is_empty() && (started.elapsed() >= SPEAKERS_SETTLE || out_of_time) {
            eprintln!(
                "layers settled in {:.1} s (host: every site at q; sites: host at f, spotlight at \
                 h; everyone: a presentation at f); waited at least {:.1} s for the speaker \
                 selection",
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
