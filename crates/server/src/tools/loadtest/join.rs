//! Joining the bots of `rakor loadtest`: each bot connects, waits for `joined`, publishes, and
//! waits until its media flows; a semaphore bounds the joins in progress and one deadline bounds
//! them all. Also the progress line printed every 5 s while the test runs.

use super::measure::{self, ServerProbe};
use super::scenario::{Director, DirectorLog};
use super::BotSpec;
use rakor_client::{Client, ClientError, ClientOptions, Report, StatsHub};
use rakor_proto::{ErrorCode, ParticipantId, TrackKind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How often a joining bot's counters are checked for flowing media (the resolution of the
/// join times).
pub(super) const MEDIA_POLL: Duration = Duration::from_millis(20);
/// How often the progress line is printed.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One bot during the run.
pub(super) struct Bot {
    pub(super) spec: BotSpec,
    pub(super) client: Option<Client>,
    /// Rakor scenario: the task that owns the client between the join and the window's end.
    pub(super) director: Option<Director>,
    /// What the director did, once it has stopped.
    pub(super) director_log: Option<DirectorLog>,
    pub(super) hub: Option<Arc<StatsHub>>,
    pub(super) participant_id: Option<ParticipantId>,
    /// Connect started → `joined`.
    pub(super) joined: Option<Duration>,
    /// Connect started → media flowing.
    pub(super) media: Option<Duration>,
    pub(super) error: Option<String>,
    /// The session ended before the bot left: the server's leave reason, or how it closed.
    pub(super) ended: Option<String>,
}

impl Bot {
    pub(super) fn new(spec: BotSpec) -> Self {
        Self {
            spec,
            client: None,
            director: None,
            director_log: None,
            hub: None,
            participant_id: None,
            joined: None,
            media: None,
            error: None,
            ended: None,
        }
    }
}

/// What the progress line shows.
pub(super) struct Progress {
    pub(super) started: Instant,
    pub(super) total: usize,
    pub(super) joined: AtomicUsize,
    pub(super) media_ok: AtomicUsize,
    pub(super) hubs: Mutex<Vec<Arc<StatsHub>>>,
}

impl Progress {
    /// Packets received by all bots so far, and how many bots have a peer connection that is
    /// failed, closed or disconnected.
    pub(super) fn snapshot(&self) -> (u64, usize) {
        let hubs: Vec<Arc<StatsHub>> = match self.hubs.lock() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        hubs.iter().fold((0, 0), |(packets, down), h| {
            let r = h.report();
            (
                packets + r.total_received_packets(),
                down + usize::from(connection_down(&r)),
            )
        })
    }

    pub(super) fn add_hub(&self, hub: Arc<StatsHub>) {
        match self.hubs.lock() {
            Ok(mut h) => h.push(hub),
            Err(poisoned) => poisoned.into_inner().push(hub),
        }
    }
}

/// Shared by every join task.
pub(super) struct JoinContext {
    pub(super) url: String,
    /// CAs trusted for `wss://` (`--ca-file`).
    pub(super) tls_roots: Option<Arc<rustls::RootCertStore>>,
    /// `--ice-transport relay`.
    pub(super) relay_only: bool,
    /// `--ice-check-window`.
    pub(super) ice_check_window: Duration,
    pub(super) deadline: Instant,
    pub(super) stop: CancellationToken,
    pub(super) permits: Arc<Semaphore>,
    pub(super) progress: Arc<Progress>,
    /// Video publishers send three simulcast layers (`--video-layers 3`).
    pub(super) simulcast: bool,
    /// `--eager-video`: no bot joins with video on demand.
    pub(super) eager_video: bool,
    /// `--no-host`: the host is not this tool's, so a bot that receives waits instead until
    /// it receives audio and video from someone else (in the rakor scenario a site shows only
    /// the host and the spotlight: on a cascade node, the first media over the relay leg).
    pub(super) await_other_media: bool,
}

/// The media a subscriber waits for: each publisher's id and whether it sends video.
pub(super) type Expected = Arc<Vec<(ParticipantId, bool)>>;

/// Join one bot: connect → `joined` → (publish) → media flowing. Never fails: what went wrong
/// is in `error`, and a connected client is kept so it can leave with the others.
pub(super) async fn join_bot(
    ctx: Arc<JoinContext>,
    spec: BotSpec,
    token: String,
    expect: Option<Expected>,
) -> Bot {
    let mut bot = Bot::new(spec);
    // Stop and deadline first: a slot freed by a bot that gave up must not start another.
    let permit = tokio::select! {
        biased;
        () = ctx.stop.cancelled() => None,
        () = tokio::time::sleep_until(ctx.deadline.into()) => None,
        p = Arc::clone(&ctx.permits).acquire_owned() => p.ok(),
    };
    let permit = permit.filter(|_| !ctx.stop.is_cancelled() && Instant::now() < ctx.deadline);
    let Some(_permit) = permit else {
        bot.error = Some("not started: the join phase was over".into());
        return bot;
    };
    let t0 = Instant::now();
    let phase = super::scenario::phase_at(ctx.progress.started, t0);
    let level = bot
        .spec
        .director
        .as_ref()
        .and_then(|d| d.voice.level(phase));
    let mut opts = ClientOptions::new(ctx.url.clone(), token)
        .receive_only()
        .simulcast(ctx.simulcast)
        .audio_level(level);
    // Rakor sites and viewers show two or three videos: they ask for those only.
    let video_on_demand = !ctx.eager_video
        && bot
            .spec
            .director
            .as_ref()
            .is_some_and(|d| d.view == super::scenario::View::Site);
    opts.video_on_demand = video_on_demand;
    opts.tls_roots = ctx.tls_roots.clone();
    opts.relay_only = ctx.relay_only;
    opts.ice_check_window = ctx.ice_check_window;
    opts.join_timeout = ctx
        .deadline
        .saturating_duration_since(t0)
        .max(Duration::from_millis(1));
    let connected = tokio::select! {
        r = Client::connect(opts) => r,
        () = ctx.stop.cancelled() => {
            bot.error = Some("stopped before `joined`".into());
            return bot;
        }
    };
    let client = match connected {
        Ok(c) => c,
        Err(e) => {
            bot.error = Some(join_error_text(&e));
            return bot;
        }
    };
    bot.joined = Some(t0.elapsed());
    bot.participant_id = Some(client.participant_id().clone());
    bot.hub = Some(client.hub());
    ctx.progress.add_hub(client.hub());
    ctx.progress.joined.fetch_add(1, Ordering::Relaxed);
    let (audio, video) = (bot.spec.audio, bot.spec.video);
    let present = bot.spec.director.as_ref().is_some_and(|d| d.present);
    let hub = client.hub();
    if audio || video || present {
        let sources: Vec<rakor_proto::TrackSource> = [
            (audio, rakor_proto::TrackSource::Microphone),
            (video, rakor_proto::TrackSource::Camera),
            (present, rakor_proto::TrackSource::Screen),
        ]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
        .collect();
        let published = tokio::select! {
            r = client.publish_sources(&sources) => r.map_err(|e| join_error_text(&e)),
            () = ctx.stop.cancelled() => Err("stopped before publishing".to_owned()),
        };
        if let Err(e) = published {
            bot.error = Some(e);
            bot.client = Some(client);
            return bot;
        }
    }
    // From here a director (rakor scenario) owns the client and answers the offers with
    // track settings while this waits for media.
    match bot.spec.director.clone() {
        Some(plan) => {
            bot.director = Some(Director::spawn(
                client,
                plan,
                ctx.progress.started,
                video_on_demand,
            ));
        }
        None => bot.client = Some(client),
    }
    let flowing = async {
        let flows = |r: &Report| {
            (!(audio || video) || sends_all(r))
                && expect.as_ref().is_none_or(|e| receives_all(r, e))
                && (!ctx.await_other_media || expect.is_none() || receives_someone(r))
        };
        if poll_until(&hub, flows, ctx.deadline).await {
            Ok(())
        } else {
            Err(media_stall_text(
                &hub.report(),
                expect.as_deref().map(Vec::as_slice),
                t0.elapsed(),
            ))
        }
    };
    let result = tokio::select! {
        r = flowing => r,
        () = ctx.stop.cancelled() => Err(format!(
            "stopped (another bot failed, or the budget ran out): {}",
            media_stall_text(&hub.report(), expect.as_deref().map(Vec::as_slice), t0.elapsed())
        )),
    };
    match result {
        Ok(()) => {
            bot.media = Some(t0.elapsed());
            ctx.progress.media_ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => bot.error = Some(e),
    }
    bot
}

/// Check the bot's counters every [`MEDIA_POLL`] until `flows` holds (true) or `deadline` passes
/// (false). Polling, not `Client::wait_media`: that clones the whole report on every received
/// packet, which is a real load on a process running dozens of busy bots.
async fn poll_until(hub: &StatsHub, flows: impl Fn(&Report) -> bool, deadline: Instant) -> bool {
    let mut tick = tokio::time::interval(MEDIA_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if flows(&hub.report()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tick.tick().await;
    }
}

/// Whether every local track has its server track id and has sent packets (what
/// `Client::wait_published` waits for).
pub(super) fn sends_all(r: &Report) -> bool {
    !r.sent.is_empty()
        && r.sent
            .values()
            .all(|s| s.track_id.is_some() && s.packets > 0)
}

/// Whether a peer connection of the bot is failed, closed or disconnected.
pub(super) fn connection_down(r: &Report) -> bool {
    [&r.publisher_state, &r.subscriber_state]
        .into_iter()
        .flatten()
        .any(|s| matches!(s.as_str(), "failed" | "closed" | "disconnected"))
}

/// Whether `r` has at least one packet of every expected track (audio of each publisher, and
/// video of those that send it).
pub(super) fn receives_all(r: &Report, expect: &[(ParticipantId, bool)]) -> bool {
    let has = |p: &ParticipantId, kind| r.received_track(p, kind).is_some_and(|t| t.packets > 0);
    expect
        .iter()
        .all(|(p, video)| has(p, TrackKind::Audio) && (!*video || has(p, TrackKind::Video)))
}

/// Some audio and some video arrived (from anyone).
pub(super) fn receives_someone(r: &Report) -> bool {
    let has = |kind| r.received.values().any(|t| t.kind == kind && t.packets > 0);
    has(TrackKind::Audio) && has(TrackKind::Video)
}

/// Why media did not flow, in one line: the connection states and which tracks had packets.
pub(super) fn media_stall_text(
    r: &Report,
    expect: Option<&[(ParticipantId, bool)]>,
    waited: Duration,
) -> String {
    let state = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".to_owned());
    let sending = r.sent.values().filter(|t| t.packets > 0).count();
    let mut text = format!(
        "no media after {:.1} s (join budget): publisher connection {}, subscriber connection {}, \
         {sending} of {} local tracks sending",
        waited.as_secs_f64(),
        state(&r.publisher_state),
        state(&r.subscriber_state),
        r.sent.len(),
    );
    if let Some(expect) = expect {
        let has =
            |p: &ParticipantId, kind| r.received_track(p, kind).is_some_and(|t| t.packets > 0);
        let wanted: usize = expect.iter().map(|(_, v)| 1 + usize::from(*v)).sum();
        let got: usize = expect
            .iter()
            .map(|(p, v)| {
                usize::from(has(p, TrackKind::Audio)) + usize::from(*v && has(p, TrackKind::Video))
            })
            .sum();
        text.push_str(&format!(", {got} of {wanted} publishers' tracks received"));
    }
    text
}

pub(super) fn join_error_text(e: &ClientError) -> String {
    match e {
        ClientError::Rejected {
            code: ErrorCode::RateLimited,
            ..
        } => format!(
            "{e} (start the server with RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE=0 for a load test)"
        ),
        _ => e.to_string(),
    }
}

/// Join a group of bots with bounded concurrency; the first failure stops the others.
pub(super) async fn join_group(
    ctx: &Arc<JoinContext>,
    group: Vec<(BotSpec, String)>,
    expect: Option<Expected>,
) -> Vec<Bot> {
    let handles: Vec<(BotSpec, tokio::task::JoinHandle<Bot>)> = group
        .into_iter()
        .map(|(spec, token)| {
            let ctx = Arc::clone(ctx);
            let expect = expect.clone();
            let task_spec = spec.clone();
            let handle = tokio::spawn(async move {
                let bot = join_bot(Arc::clone(&ctx), task_spec, token, expect).await;
                if bot.error.is_some() && !ctx.stop.is_cancelled() {
                    eprintln!(
                        "{}: {}; stopping the joins",
                        bot.spec.identity,
                        bot.error.as_deref().unwrap_or_default()
                    );
                    ctx.stop.cancel();
                }
                bot
            });
            (spec, handle)
        })
        .collect();
    let mut bots = Vec::with_capacity(handles.len());
    for (spec, handle) in handles {
        bots.push(handle.await.unwrap_or_else(|e| {
            let mut b = Bot::new(spec);
            b.error = Some(format!("join task failed: {e}"));
            b
        }));
    }
    bots
}

/// Print a progress line every 5 s until `done`: elapsed, joined, packets received by all bots,
/// and the server's CPU over the last interval. Cancels `stop` if the server process vanishes.
pub(super) async fn progress_loop(
    progress: Arc<Progress>,
    probe: Option<ServerProbe>,
    done: CancellationToken,
    stop: CancellationToken,
    server_gone: Arc<AtomicBool>,
) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut last = (Instant::now(), probe.and_then(|p| p.cpu_ticks()));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = done.cancelled() => return,
        }
        let now = Instant::now();
        let cpu = match probe {
            None => "n/a".to_owned(),
            Some(p) => match (p.cpu_ticks(), last.1) {
                (Some(t), Some(t0)) => {
                    let c = measure::cores_used(t.saturating_sub(t0), p.clk_tck, now - last.0);
                    last = (now, Some(t));
                    c.map_or_else(|| "n/a".to_owned(), |c| format!("{:.0} %", c * 100.0))
                }
                (None, _) => {
                    if !server_gone.swap(true, Ordering::Relaxed) {
                        eprintln!("error: the server process {} is gone; stopping", p.pid);
                        stop.cancel();
                    }
                    "gone".to_owned()
                }
                (Some(t), None) => {
                    last = (now, Some(t));
                    "n/a".to_owned()
                }
            },
        };
        let (received, down) = progress.snapshot();
        eprintln!(
            "[{:>5.0}s] joined {}/{} (media flowing {}, connection down {down}), packets received \
             {received}, server CPU {cpu}",
            progress.started.elapsed().as_secs_f64(),
            progress.joined.load(Ordering::Relaxed),
            progress.total,
            progress.media_ok.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn waits_for_every_expected_track() {
        use rakor_client::ReceivedTrackStats;
        use rakor_proto::TrackId;
        let (a, b) = (ParticipantId("PA_a".into()), ParticipantId("PA_b".into()));
        let mut r = Report::default();
        let mut add = |id: &str, p: &ParticipantId, kind, packets| {
            let mut t = ReceivedTrackStats::new(TrackId(id.into()), Some(p.clone()), kind);
            t.packets = packets;
            r.received.insert(TrackId(id.into()), t);
        };
        add("TR_1", &a, TrackKind::Audio, 3);
        add("TR_2", &a, TrackKind::Video, 0);
        add("TR_3", &b, TrackKind::Audio, 1);
        assert!(receives_all(&r, &[(b.clone(), false)]));
        assert!(!receives_all(&r, &[(a.clone(), true), (b.clone(), false)]));
        assert!(receives_all(&r, &[(a.clone(), false), (b.clone(), false)]));
        assert!(!receives_all(&r, &[(b.clone(), true)]));
        assert!(receives_all(&r, &[]));
        assert!(!connection_down(&r));
        assert!(!sends_all(&r), "nothing published");
        let mut sent = rakor_client::SentTrackStats::new(TrackKind::Audio, 1);
        sent.packets = 5;
        r.sent.insert("audio".into(), sent.clone());
        assert!(!sends_all(&r), "no server track id yet");
        sent.track_id = Some(TrackId("TR_9".into()));
        r.sent.insert("audio".into(), sent);
        assert!(sends_all(&r));
        r.sent.clear();
        r.subscriber_state = Some("failed".into());
        assert!(connection_down(&r));
        r.subscriber_state = None;
        r.publisher_state = Some("connecting".into());
        let text = media_stall_text(
            &r,
            Some(&[(a.clone(), true), (b.clone(), false)]),
            Duration::from_millis(60_400),
        );
        assert_eq!(
            text,
            "no media after 60.4 s (join budget): publisher connection connecting, subscriber \
             connection none, 0 of 0 local tracks sending, 2 of 3 publishers' tracks received"
        );
    }
}
