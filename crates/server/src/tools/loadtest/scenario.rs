//! The rakor scenario of `rakor loadtest` (issue 6, benchmark 2): the command room (role host)
//! and P sites, all publishing audio and 3-layer simulcast video. The host puts the first
//! video site in the spotlight and shows every site on its wall at 320x180 (the low layer);
//! each site shows the host at 1280x720 (the high layer) and the spotlight at 640x360 (the
//! middle layer) and hides every other site's video. A few sites talk at distinct loud audio
//! levels that rotate every [`TALK_PHASE`]; the others send near-silence, so the server
//! forwards the 3 loudest sites' audio plus the host's.
//!
//! Each bot of the scenario has a [`Director`] task that owns its `Client` after the join:
//! it reads the server's events, sends `track_settings` for every video track a subscriber
//! offer brings (and again when the spotlight or the room changes), the host's `spotlight`,
//! the talkers' changing levels, and samples once a second how many audio streams arrive.
//! This file also turns those samples and the per-layer counters into [`RakorFigures`].

use super::summary::{markdown_table, BotRole, BotSummary};
use super::BotSpec;
use rakor_client::Client;
use rakor_proto::{
    ClientMessage, ParticipantId, ParticipantInfo, Role, ServerMessage, TrackId, TrackKind,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Which load `rakor loadtest` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Scenario {
    /// P publishers and S receive-only subscribers; everyone receives everything.
    #[default]
    Mesh,
    /// The host and P sites as in a rakor (docs/benchmarks.md, "Rakor scenario").
    Rakor,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Mesh => "mesh",
            Scenario::Rakor => "rakor",
        }
    }
}

/// The host's wall tile for each site (→ layer q).
pub const WALL_TILE: (u32, u32) = (320, 180);
/// A site's tile for the spotlight (→ layer h).
pub const SPOTLIGHT_TILE: (u32, u32) = (640, 360);
/// A site's tile for the host (→ layer f).
pub const HOST_TILE: (u32, u32) = (1280, 720);
/// Everyone's tile for the presentation (`--presenter`): a camera there would get layer h; the
/// presentation must still come at its top layer.
pub const PRESENTATION_TILE: (u32, u32) = SPOTLIGHT_TILE;
/// The simulcast layers those tiles select (docs/protocol.md, `track_settings`).
pub const WALL_LAYER: u8 = 0;
pub const SPOTLIGHT_LAYER: u8 = 1;
pub const HOST_LAYER: u8 = 2;

/// Audio levels (-dBov) of the talkers, loudest first: all above the server's speech threshold
/// (-50 dBov) and 8 dB apart, more than its 6 dB switch margin.
pub const TALKER_LEVELS: [u8; 5] = [12, 20, 28, 36, 44];
/// The host's audio level (the host is always forwarded).
pub const HOST_LEVEL: u8 = 30;
/// Quiet sites send -100 … -119 dBov (room noise, well below the speech threshold).
pub const QUIET_BASE_LEVEL: u8 = 100;
/// Every this long the talkers' levels rotate by one place.
pub const TALK_PHASE: Duration = Duration::from_secs(6);
/// How often a director samples the audio streams arriving.
pub const AUDIO_SAMPLE: Duration = Duration::from_secs(1);
/// Packets per second of the looped Opus asset (20 ms frames).
const AUDIO_PACKETS_PER_S: f64 = 50.0;
/// The server's default `media.loudest_speakers`.
pub const LOUDEST: u32 = 3;

/// How a bot shows the remote video it is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The command room's wall: every site small.
    Wall,
    /// A site's screen: the host large, the spotlight medium, nobody else.
    Site,
}

/// The `track_settings` for a remote video track: `None` = hidden, else the tile (w, h).
pub fn tile(view: View, from_host: bool, from_spotlight: bool) -> Option<(u32, u32)> {
    match view {
        View::Wall => Some(WALL_TILE),
        View::Site if from_host => Some(HOST_TILE),
        View::Site if from_spotlight => Some(SPOTLIGHT_TILE),
        View::Site => None,
    }
}

/// What a bot sends as its audio level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    /// No audio published (a viewer).
    None,
    Host,
    /// Talker `index` of `of`: level `TALKER_LEVELS[(index + phase) % of]`.
    Talker {
        index: usize,
        of: usize,
    },
    Quiet(u8),
}

impl Voice {
    /// The level during talk phase `phase` (0, 1, … every [`TALK_PHASE`]).
    pub fn level(self, phase: u64) -> Option<u8> {
        match self {
            Voice::None => None,
            Voice::Host => Some(HOST_LEVEL),
            Voice::Talker { index, of } => {
                let of = of.clamp(1, TALKER_LEVELS.len());
                let slot = (index as u64 + phase) % of as u64;
                TALKER_LEVELS.get(slot as usize).copied()
            }
            Voice::Quiet(l) => Some(l),
        }
    }
}

/// What a bot's director does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorPlan {
    pub view: View,
    /// Host only: put this identity in the spotlight once it has joined.
    pub spotlight: Option<String>,
    pub voice: Voice,
    /// Also share a screen (the room's presentation, `--presenter`).
    pub present: bool,
}

/// The bots of the rakor scenario: the host (`command-room`), then `sites` sites (the first
/// `audio_only` without video, the first `talkers` talking), then `viewers` receive-only
/// viewers. The spotlight is the first site with video.
pub fn rakor_bots(sites: usize, audio_only: usize, talkers: usize, viewers: usize) -> Vec<BotSpec> {
    let spotlight = spotlight_identity(sites, audio_only);
    let mut v = vec![BotSpec {
        identity: super::HOST_IDENTITY.to_owned(),
        role: BotRole::Host,
        token_role: Role::Host,
        audio: true,
        video: true,
        director: Some(DirectorPlan {
            view: View::Wall,
            spotlight,
            voice: Voice::Host,
            present: false,
        }),
    }];
    let talkers = talkers.min(TALKER_LEVELS.len());
    v.extend((0..sites).map(|i| BotSpec {
        identity: site_identity(i),
        role: BotRole::Site,
        token_role: Role::Participant,
        audio: true,
        video: i >= audio_only,
        director: Some(DirectorPlan {
            view: View::Site,
            spotlight: None,
            voice: if i < talkers {
                Voice::Talker {
                    index: i,
                    of: talkers,
                }
            } else {
                Voice::Quiet(QUIET_BASE_LEVEL + (i % 20) as u8)
            },
            present: false,
        }),
    }));
    v.extend((0..viewers).map(|i| BotSpec {
        identity: format!("viewer-{:03}", i + 1),
        role: BotRole::Viewer,
        token_role: Role::Viewer,
        audio: false,
        video: false,
        director: Some(DirectorPlan {
            view: View::Site,
            spotlight: None,
            voice: Voice::None,
            present: false,
        }),
    }));
    v
}

pub fn site_identity(i: usize) -> String {
    format!("site-{:03}", i + 1)
}

/// The site the host puts in the spotlight: the first one with video.
pub fn spotlight_identity(sites: usize, audio_only: usize) -> Option<String> {
    (audio_only < sites).then(|| site_identity(audio_only))
}

/// One sample of the audio arriving at a bot over the last [`AUDIO_SAMPLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSample {
    pub at: Instant,
    /// Sites whose audio delivered more than half of the sample's 20 ms frames.
    pub sites: u32,
    /// The host's audio did.
    pub host: bool,
}

/// What a director did, read after the run.
#[derive(Debug, Clone, Default)]
pub struct DirectorLog {
    pub settings_sent: u64,
    /// `error` messages from the server (e.g. `unknown_track` for a setting).
    pub errors: u64,
    pub last_error: Option<String>,
    pub spotlight_sent: bool,
    pub samples: Vec<AudioSample>,
    /// When the server's `speakers.forwarded` set changed.
    pub forwarded_changes: Vec<Instant>,
}

/// A bot's director task (owns its `Client` until [`Director::finish`]).
pub struct Director {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Client>,
    log: Arc<Mutex<DirectorLog>>,
}

impl Director {
    /// Start directing `client` by `plan`; talk phases count from `started`. `on_demand`: the
    /// client joined with video on demand (videos are learnt from the room, not the offers).
    pub fn spawn(client: Client, plan: DirectorPlan, started: Instant, on_demand: bool) -> Self {
        let stop = CancellationToken::new();
        let log = Arc::new(Mutex::new(DirectorLog::default()));
        let handle = tokio::spawn(direct(
            client,
            plan,
            started,
            on_demand,
            stop.clone(),
            Arc::clone(&log),
        ));
        Self { stop, handle, log }
    }

    /// Stop and hand back the client (`None` if the task did not stop within 5 s) and the log.
    pub async fn finish(self) -> (Option<Client>, DirectorLog) {
        self.stop.cancel();
        let abort = self.handle.abort_handle();
        let client = match tokio::time::timeout(Duration::from_secs(5), self.handle).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(_)) => None,
            Err(_) => {
                abort.abort();
                None
            }
        };
        let log = match self.log.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        (client, log)
    }
}

fn with_log(log: &Mutex<DirectorLog>, f: impl FnOnce(&mut DirectorLog)) {
    match log.lock() {
        Ok(mut l) => f(&mut l),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// The talk phase (0, 1, …) at `now` of a run that started at `started`.
pub fn phase_at(started: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(started).as_millis() / TALK_PHASE.as_millis().max(1)) as u64
}

/// The director loop: events in, `track_settings` / `spotlight` / audio levels out, audio
/// samples into `log`. Returns the client when stopped or when the session ended.
async fn direct(
    mut client: Client,
    plan: DirectorPlan,
    started: Instant,
    on_demand: bool,
    stop: CancellationToken,
    log: Arc<Mutex<DirectorLog>>,
) -> Client {
    let mut shown = ShownTracks::new(on_demand);
    let mut spotlight_pending = plan.spotlight.clone();
    let mut sample_tick = tokio::time::interval(AUDIO_SAMPLE);
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut talk_tick = tokio::time::interval(Duration::from_millis(250));
    talk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = phase_at(started, Instant::now());
    let mut last_audio: HashMap<TrackId, u64> = HashMap::new();
    let mut last_sample = Instant::now();
    let talker = matches!(plan.voice, Voice::Talker { .. });
    let mut last_forwarded: Vec<ParticipantId> = Vec::new();
    // Video on demand: the videos are the room's (as `joined` and `track_published` tell),
    // asked for by the `track_settings` that show them.
    let mut changed = on_demand;
    loop {
        if on_demand && changed {
            shown.learn_room(&client.participants());
        }
        if changed {
            if let Err(e) = reconcile(&client, &plan, &mut shown, &log).await {
                with_log(&log, |l| l.last_error = Some(e));
                break;
            }
            if let Some(identity) = spotlight_pending.clone() {
                let target = client
                    .participants()
                    .into_iter()
                    .find(|p| p.identity == identity);
                if let Some(p) = target {
                    let msg = ClientMessage::Spotlight {
                        participant_id: Some(p.id),
                    };
                    if let Err(e) = client.send(&msg).await {
                        with_log(&log, |l| l.last_error = Some(e.to_string()));
                        break;
                    }
                    spotlight_pending = None;
                    with_log(&log, |l| l.spotlight_sent = true);
                }
            }
        }
        changed = false;
        tokio::select! {
            () = stop.cancelled() => break,
            ev = client.next_event() => {
                let Some(ev) = ev else { break };
                changed = shown.on_event(&ev);
                match ev {
                    ServerMessage::Spotlight { .. } | ServerMessage::ParticipantJoined { .. } => {
                        changed = true;
                    }
                    ServerMessage::TrackPublished { .. } => changed |= on_demand,
                    ServerMessage::Speakers { mut forwarded, .. } => {
                        forwarded.sort();
                        if forwarded != last_forwarded {
                            last_forwarded = forwarded;
                            with_log(&log, |l| l.forwarded_changes.push(Instant::now()));
                        }
                    }
                    ServerMessage::Error { code, message, .. } => with_log(&log, |l| {
                        l.errors += 1;
                        l.last_error = Some(format!("{code:?}: {message}"));
                    }),
                    _ => {}
                }
            }
            _ = sample_tick.tick() => {
                let now = Instant::now();
                let sample = sample_audio(&client, &mut last_audio, now - last_sample, now);
                last_sample = now;
                with_log(&log, |l| l.samples.push(sample));
            }
            _ = talk_tick.tick(), if talker => {
                let now_phase = phase_at(started, Instant::now());
                if now_phase != phase {
                    phase = now_phase;
                    client.set_audio_level(plan.voice.level(phase));
                }
            }
        }
    }
    client
}

/// The remote video tracks a director's bot is offered and the `track_settings` it last sent
/// for each: what must be sent when the room changes.
#[derive(Debug, Default)]
pub struct ShownTracks {
    /// Video tracks offered to us (track → publisher).
    videos: BTreeMap<TrackId, ParticipantId>,
    /// Of those, screen shares (the presentation).
    screens: HashSet<TrackId>,
    /// The setting last sent for each (`None` = hidden).
    applied: HashMap<TrackId, Option<(u32, u32)>>,
    /// Video on demand (`join.video_on_demand`): the videos are the room's (as `joined` and
    /// `track_published` tell, [`ShownTracks::learn_room`]), and a video never asked for
    /// needs no `visible: false` (no leg exists).
    on_demand: bool,
}

impl ShownTracks {
    /// Empty; `on_demand` as the bot joined.
    pub fn new(on_demand: bool) -> Self {
        Self {
            on_demand,
            ..Self::default()
        }
    }

    /// Video on demand: take the room's video tracks from the participant list.
    pub fn learn_room(&mut self, participants: &[ParticipantInfo]) {
        for p in participants {
            for t in p.tracks.iter().filter(|t| t.kind == TrackKind::Video) {
                self.videos.insert(t.id.clone(), p.id.clone());
                if t.source == Some(rakor_proto::TrackSource::Screen) {
                    self.screens.insert(t.id.clone());
                }
            }
        }
    }

    /// Follow a server event. True when a subscriber offer brought tracks, so settings may be
    /// due ([`ShownTracks::due`]).
    pub fn on_event(&mut self, ev: &ServerMessage) -> bool {
        match ev {
            ServerMessage::Offer { tracks, .. } => {
                for t in tracks.iter().filter(|t| t.kind == TrackKind::Video) {
                    self.videos
                        .insert(t.track_id.clone(), t.participant_id.clone());
                    if t.source == Some(rakor_proto::TrackSource::Screen) {
                        self.screens.insert(t.track_id.clone());
                    }
                }
                true
            }
            ServerMessage::TrackUnpublished { track_id, .. } => {
                self.forget(track_id);
                false
            }
            ServerMessage::ParticipantLeft { participant_id, .. } => {
                let gone: Vec<TrackId> = self
                    .videos
                    .iter()
                    .filter(|(_, p)| *p == participant_id)
                    .map(|(t, _)| t.clone())
                    .collect();
                gone.iter().for_each(|t| self.forget(t));
                false
            }
            // A media reset (our connection failed and rakor-client resumed with
            // `media_reset`, or it rejoined as a new participant): the server dropped our
            // subscriptions and subscribes us afresh, every leg visible at its highest layer
            // whatever we sent before (docs/protocol.md, "Resume"). The others' track ids stay
            // the same, so without this the fresh offer's tracks would look already set and
            // this bot would get every site's camera at the top layer for good.
            ServerMessage::Joined {
                media_reset: true, ..
            } => {
                self.videos.clear();
                self.screens.clear();
                self.applied.clear();
                false
            }
            _ => false,
        }
    }

    fn forget(&mut self, track: &TrackId) {
        self.videos.remove(track);
        self.screens.remove(track);
        self.applied.remove(track);
    }

    /// The `track_settings` due: one for every offered video track whose wanted setting
    /// (by `view`, who the hosts are and the spotlight) differs from the last one sent. They
    /// count as sent from here on.
    pub fn due(
        &mut self,
        view: View,
        hosts: &HashSet<ParticipantId>,
        spotlight: Option<&ParticipantId>,
    ) -> Vec<ClientMessage> {
        let mut out = Vec::new();
        for (track_id, from) in &self.videos {
            let want = if self.screens.contains(track_id) {
                Some(PRESENTATION_TILE)
            } else {
                tile(view, hosts.contains(from), spotlight == Some(from))
            };
            if self.applied.get(track_id) == Some(&want) {
                continue;
            }
            if self.on_demand && want.is_none() && !self.applied.contains_key(track_id) {
                // Never asked for: nothing to hide (no leg exists).
                self.applied.insert(track_id.clone(), None);
                continue;
            }
            let (width, height) = want.unwrap_or((0, 0));
            out.push(ClientMessage::TrackSettings {
                track_id: track_id.clone(),
                visible: want.is_some(),
                width,
                height,
            });
            self.applied.insert(track_id.clone(), want);
        }
        out
    }
}

/// Send the `track_settings` that are due (see [`ShownTracks::due`]).
async fn reconcile(
    client: &Client,
    plan: &DirectorPlan,
    shown: &mut ShownTracks,
    log: &Mutex<DirectorLog>,
) -> Result<(), String> {
    let hosts: HashSet<ParticipantId> = client
        .participants()
        .into_iter()
        .filter(|p| p.role == Role::Host)
        .map(|p| p.id)
        .collect();
    let spotlight = client.spotlight();
    for msg in shown.due(plan.view, &hosts, spotlight.as_ref()) {
        client.send(&msg).await.map_err(|e| e.to_string())?;
        with_log(log, |l| l.settings_sent += 1);
    }
    Ok(())
}

/// Count the audio streams that delivered more than half of their frames since the last
/// sample (`elapsed` ago): sites, and whether the host's did.
fn sample_audio(
    client: &Client,
    last: &mut HashMap<TrackId, u64>,
    elapsed: Duration,
    now: Instant,
) -> AudioSample {
    let hosts: HashSet<ParticipantId> = client
        .participants()
        .into_iter()
        .filter(|p| p.role == Role::Host)
        .map(|p| p.id)
        .collect();
    let report = client.stats();
    let threshold = AUDIO_PACKETS_PER_S * elapsed.as_secs_f64() / 2.0;
    let mut sample = AudioSample {
        at: now,
        sites: 0,
        host: false,
    };
    for t in report.received_kind(TrackKind::Audio) {
        let before = last.insert(t.track_id.clone(), t.packets).unwrap_or(0);
        let delta = t.packets.saturating_sub(before) as f64;
        if delta <= threshold {
            continue;
        }
        if t.participant_id.as_ref().is_some_and(|p| hosts.contains(p)) {
            sample.host = true;
        } else {
            sample.sites += 1;
        }
    }
    sample
}

/// Whether a bot already receives the layers it should: the host every video site at the low
/// layer; a site or viewer the host at the high layer and the spotlight (unless itself) at the
/// middle one; with `--presenter`, everyone but the presenter the presentation at its top
/// layer. Used to let layer switches finish before the measured window.
pub fn layers_settled(
    role: BotRole,
    report: &rakor_client::Report,
    me: &ParticipantId,
    host: Option<&ParticipantId>,
    spotlight: Option<&ParticipantId>,
    video_sites: &[ParticipantId],
    presenter: Option<&ParticipantId>,
) -> bool {
    use rakor_proto::TrackSource;
    // A participant's camera (not its screen share, which is also video).
    let at = |p: &ParticipantId, layer: u8| {
        report
            .received_from(p)
            .find(|t| t.kind == TrackKind::Video && t.source != Some(TrackSource::Screen))
            .is_some_and(|t| t.last_layer == Some(layer))
    };
    let presentation_top = presenter.filter(|p| *p != me).is_none_or(|p| {
        report
            .received_from(p)
            .any(|t| t.source == Some(TrackSource::Screen) && t.last_layer == Some(HOST_LAYER))
    });
    match role {
        BotRole::Host => presentation_top && video_sites.iter().all(|p| at(p, WALL_LAYER)),
        BotRole::Site | BotRole::Viewer => {
            presentation_top
                && host.is_none_or(|h| at(h, HOST_LAYER))
                && spotlight
                    .filter(|s| *s != me)
                    .is_none_or(|s| at(s, SPOTLIGHT_LAYER))
        }
        BotRole::Publisher | BotRole::Subscriber => true,
    }
}

/// The identities a bot of the scenario shows video of (its `pairs_expected`).
pub fn shown_senders(
    b: &BotSummary,
    spotlight: Option<&str>,
    video_sites: &[String],
) -> Vec<String> {
    match b.role {
        BotRole::Host => video_sites.to_vec(),
        BotRole::Site | BotRole::Viewer => std::iter::once(super::HOST_IDENTITY.to_owned())
            .chain(spotlight.map(str::to_owned))
            .filter(|i| *i != b.identity)
            .collect(),
        BotRole::Publisher | BotRole::Subscriber => Vec::new(),
    }
}

/// The scenario's figures for one bot or a whole role.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RakorFigures {
    pub bots: usize,
    /// Video packets received per layer (q, h, f) from the host.
    pub video_from_host: [u64; 3],
    /// … from the spotlight site.
    pub video_from_spotlight: [u64; 3],
    /// … from every other site (the wall's tiles for the host; hidden for a site: expect 0).
    pub video_from_other_sites: [u64; 3],
    /// One-second audio samples in the window (see [`AudioSample`]).
    pub audio_samples: usize,
    /// Sites' audio streams arriving at once: median and maximum over the samples.
    pub audio_sites_p50: Option<f64>,
    pub audio_sites_max: Option<u32>,
    /// Samples with more than [`LOUDEST`] sites' audio arriving.
    pub audio_samples_over_loudest: usize,
    /// Samples with the host's audio arriving / samples of bots other than the host.
    pub host_audio_samples: usize,
    pub host_audio_expected: usize,
    /// Distinct sites whose audio arrived at all in the window (the most for one bot).
    pub audio_sites_distinct_max: usize,
    /// Changes of the forwarded speakers (`speakers.forwarded`) in the window, as one bot saw
    /// them (the most for one bot).
    pub forwarded_changes: usize,
    pub settings_sent: u64,
    pub server_errors: u64,
}

/// The figures of `bots` (each with its director's log), counting the samples and speaker
/// changes inside `window`.
pub fn figures(
    bots: &[(&BotSummary, &DirectorLog)],
    spotlight: Option<&str>,
    (from, to): (Instant, Instant),
) -> RakorFigures {
    let inside = |t: &Instant| *t > from && *t <= to;
    let mut f = RakorFigures {
        bots: bots.len(),
        ..RakorFigures::default()
    };
    let mut per_sample: Vec<u32> = Vec::new();
    for (b, log) in bots {
        let samples: Vec<AudioSample> = log
            .samples
            .iter()
            .filter(|s| inside(&s.at))
            .copied()
            .collect();
        let changes = log.forwarded_changes.iter().filter(|t| inside(t)).count();
        f.forwarded_changes = f.forwarded_changes.max(changes);
        let mut audio_from = 0;
        for (from, r) in &b.received {
            let slot = if from == super::HOST_IDENTITY {
                &mut f.video_from_host
            } else if Some(from.as_str()) == spotlight {
                &mut f.video_from_spotlight
            } else {
                &mut f.video_from_other_sites
            };
            for (a, n) in slot.iter_mut().zip(r.video_layers) {
                *a += n;
            }
            if from != super::HOST_IDENTITY && r.audio_packets > 0 {
                audio_from += 1;
            }
        }
        f.audio_sites_distinct_max = f.audio_sites_distinct_max.max(audio_from);
        per_sample.extend(samples.iter().map(|s| s.sites));
        f.audio_samples_over_loudest += samples.iter().filter(|s| s.sites > LOUDEST).count();
        if b.role != BotRole::Host {
            f.host_audio_expected += samples.len();
            f.host_audio_samples += samples.iter().filter(|s| s.host).count();
        }
        f.settings_sent += log.settings_sent;
        f.server_errors += log.errors;
    }
    per_sample.sort_unstable();
    f.audio_samples = per_sample.len();
    let as_f64: Vec<f64> = per_sample.iter().map(|&n| f64::from(n)).collect();
    f.audio_sites_p50 = super::summary::percentile(&as_f64, 50.0);
    f.audio_sites_max = per_sample.last().copied();
    f
}

/// The scenario's table: per role, video per layer by sender and the audio streams.
pub fn render_rakor_table(roles: &[(String, RakorFigures)]) -> String {
    let layers = |l: [u64; 3]| format!("{}/{}/{}", l[0], l[1], l[2]);
    let headers = [
        "role",
        "video from host q/h/f",
        "from spotlight q/h/f",
        "from other sites q/h/f",
        "site audio at once p50/max",
        "samples > 3",
        "host audio",
        "distinct audio sites",
        "speaker changes",
        "settings sent",
        "server errors",
    ];
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|(role, f)| {
            vec![
                role.clone(),
                layers(f.video_from_host),
                layers(f.video_from_spotlight),
                layers(f.video_from_other_sites),
                format!(
                    "{}/{}",
                    f.audio_sites_p50
                        .map_or_else(|| "n/a".to_owned(), |p| format!("{p:.0}")),
                    f.audio_sites_max
                        .map_or_else(|| "n/a".to_owned(), |m| m.to_string())
                ),
                format!("{}/{}", f.audio_samples_over_loudest, f.audio_samples),
                if f.host_audio_expected == 0 {
                    "n/a".to_owned()
                } else {
                    format!("{}/{}", f.host_audio_samples, f.host_audio_expected)
                },
                f.audio_sites_distinct_max.to_string(),
                f.forwarded_changes.to_string(),
                f.settings_sent.to_string(),
                f.server_errors.to_string(),
            ]
        })
        .collect();
    markdown_table(&headers, &rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::tools::loadtest::summary::{PeerReceived, RecvCounters};

    /// A server message from its JSON (docs/protocol.md).
    fn server_msg(v: serde_json::Value) -> ServerMessage {
        serde_json::from_value(v).unwrap()
    }

    /// The subscriber offer a site gets: the host's camera, the spotlight's camera and screen
    /// share, another site's camera and the host's audio.
    fn site_offer() -> ServerMessage {
        let t = |mid: &str, track: &str, from: &str, kind: &str, source: &str| {
            serde_json::json!({"mid": mid, "track_id": track, "participant_id": from,
                               "kind": kind, "source": source})
        };
        server_msg(serde_json::json!({
            "type": "offer", "pc": "subscriber", "sdp": "v=0",
            "tracks": [
                t("0", "TR_hostmic", "PA_host", "audio", "microphone"),
                t("1", "TR_hostcam", "PA_host", "video", "camera"),
                t("2", "TR_spotcam", "PA_spot", "video", "camera"),
                t("3", "TR_spotscr", "PA_spot", "video", "screen"),
                t("4", "TR_othercam", "PA_other", "video", "camera"),
            ]
        }))
    }

    fn joined(media_reset: bool) -> ServerMessage {
        server_msg(serde_json::json!({
            "type": "joined", "version": 1, "participant_id": "PA_me", "room": "rakor",
            "identity": "site-002", "name": "site-002", "role": "participant",
            "participants": [], "spotlight": "PA_spot", "resume_token": "t",
            "resumed": true, "media_reset": media_reset
        }))
    }

    /// What `track_settings` say: (track, visible, height).
    fn settings(msgs: &[ClientMessage]) -> Vec<(String, bool, u32)> {
        msgs.iter()
            .map(|m| match m {
                ClientMessage::TrackSettings {
                    track_id,
                    visible,
                    height,
                    ..
                } => (track_id.0.clone(), *visible, *height),
                other => panic!("not track_settings: {other:?}"),
            })
            .collect()
    }

    /// The straggler of the sixty-site check (docs/benchmarks.md): a site whose connection
    /// timed out resumed with a media reset; the server subscribed it afresh (every leg
    /// visible at the top layer) and the director, which thought it had already sent every
    /// setting, sent none, so the site's layers never settled. After `joined {media_reset}`
    /// the fresh offer's tracks get their settings again; a plain resume sends nothing anew.
    #[test]
    fn settings_are_sent_again_after_a_media_reset() {
        let hosts: HashSet<ParticipantId> = [ParticipantId("PA_host".into())].into();
        let spot = ParticipantId("PA_spot".into());
        let mut shown = ShownTracks::default();
        let first = vec![
            ("TR_hostcam".to_owned(), true, HOST_TILE.1),
            ("TR_othercam".to_owned(), false, 0),
            ("TR_spotcam".to_owned(), true, SPOTLIGHT_TILE.1),
            ("TR_spotscr".to_owned(), true, PRESENTATION_TILE.1),
        ];
        assert!(shown.on_event(&site_offer()));
        assert_eq!(settings(&shown.due(View::Site, &hosts, Some(&spot))), first);
        // A renegotiation offering the same tracks: nothing new to say.
        assert!(shown.on_event(&site_offer()));
        assert!(shown.due(View::Site, &hosts, Some(&spot)).is_empty());
        // A resume that kept the connections: the server kept the settings.
        assert!(!shown.on_event(&joined(false)));
        assert!(shown.on_event(&site_offer()));
        assert!(shown.due(View::Site, &hosts, Some(&spot)).is_empty());
        // A media reset: the fresh subscriber offer brings the same track ids, and every one
        // of them needs its setting again.
        assert!(!shown.on_event(&joined(true)));
        assert!(
            shown.due(View::Site, &hosts, Some(&spot)).is_empty(),
            "before the offer"
        );
        assert!(shown.on_event(&site_offer()));
        assert_eq!(settings(&shown.due(View::Site, &hosts, Some(&spot))), first);
        // A spotlight change re-sends only what changed; an unpublished track is forgotten.
        let other = ParticipantId("PA_other".into());
        assert_eq!(
            settings(&shown.due(View::Site, &hosts, Some(&other))),
            vec![
                ("TR_othercam".to_owned(), true, SPOTLIGHT_TILE.1),
                ("TR_spotcam".to_owned(), false, 0),
            ]
        );
        shown.on_event(&server_msg(serde_json::json!({
            "type": "participant_left", "participant_id": "PA_other", "reason": "client_request"
        })));
        shown.on_event(&server_msg(serde_json::json!({
            "type": "track_unpublished", "participant_id": "PA_spot", "track_id": "TR_spotscr"
        })));
        assert_eq!(
            settings(&shown.due(View::Site, &hosts, Some(&spot))),
            vec![("TR_spotcam".to_owned(), true, SPOTLIGHT_TILE.1)]
        );
    }

    #[test]
    fn tiles_follow_the_rakor_layout() {
        let cases = [
            (View::Wall, false, false, Some(WALL_TILE)),
            (View::Wall, true, false, Some(WALL_TILE)),
            (View::Wall, false, true, Some(WALL_TILE)),
            (View::Site, true, false, Some(HOST_TILE)),
            (View::Site, false, true, Some(SPOTLIGHT_TILE)),
            (View::Site, false, false, None),
        ];
        for (view, host, spot, want) in cases {
            assert_eq!(tile(view, host, spot), want, "{view:?} {host} {spot}");
        }
        // The heights select the intended layers (≤240 → q, ≤480 → h, else f).
        assert!(WALL_TILE.1 <= 240);
        assert!(SPOTLIGHT_TILE.1 > 240 && SPOTLIGHT_TILE.1 <= 480);
        assert!(HOST_TILE.1 > 480);
    }

    #[test]
    fn talkers_rotate_distinct_levels() {
        let of = 3;
        for phase in 0..6 {
            let levels: Vec<u8> = (0..of)
                .map(|index| Voice::Talker { index, of }.level(phase).unwrap())
                .collect();
            let distinct: HashSet<u8> = levels.iter().copied().collect();
            assert_eq!(distinct.len(), of, "phase {phase}: {levels:?}");
            assert!(
                levels.iter().all(|&l| l < 50),
                "all above the speech threshold"
            );
        }
        let t0 = Voice::Talker { index: 0, of: 5 };
        assert_eq!(
            (t0.level(0), t0.level(1), t0.level(5)),
            (Some(12), Some(20), Some(12))
        );
        assert_eq!(Voice::Quiet(107).level(9), Some(107));
        assert_eq!(Voice::None.level(0), None);
        assert_eq!(Voice::Host.level(3), Some(HOST_LEVEL));
        // A degenerate plan does not panic.
        assert_eq!(Voice::Talker { index: 7, of: 0 }.level(2), Some(12));
        let t = Instant::now();
        assert_eq!(
            phase_at(t, t + TALK_PHASE * 2 + Duration::from_millis(1)),
            2
        );
        assert_eq!(phase_at(t + Duration::from_secs(1), t), 0);
    }

    #[test]
    fn rakor_bots_are_host_sites_viewers() {
        let bots = rakor_bots(4, 1, 2, 1);
        let got: Vec<(&str, BotRole, Role, bool, Voice)> = bots
            .iter()
            .map(|b| {
                let d = b.director.as_ref().unwrap();
                (b.identity.as_str(), b.role, b.token_role, b.video, d.voice)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("command-room", BotRole::Host, Role::Host, true, Voice::Host),
                (
                    "site-001",
                    BotRole::Site,
                    Role::Participant,
                    false,
                    Voice::Talker { index: 0, of: 2 }
                ),
                (
                    "site-002",
                    BotRole::Site,
                    Role::Participant,
                    true,
                    Voice::Talker { index: 1, of: 2 }
                ),
                (
                    "site-003",
                    BotRole::Site,
                    Role::Participant,
                    true,
                    Voice::Quiet(102)
                ),
                (
                    "site-004",
                    BotRole::Site,
                    Role::Participant,
                    true,
                    Voice::Quiet(103)
                ),
                (
                    "viewer-001",
                    BotRole::Viewer,
                    Role::Viewer,
                    false,
                    Voice::None
                ),
            ]
        );
        let host = bots[0].director.as_ref().unwrap();
        assert_eq!(
            (host.view, host.spotlight.as_deref()),
            (View::Wall, Some("site-002"))
        );
        assert!(bots[1..]
            .iter()
            .all(|b| b.director.as_ref().unwrap().view == View::Site));
        assert_eq!(spotlight_identity(2, 2), None);
        assert_eq!(rakor_bots(2, 0, 9, 0).len(), 3);
    }

    fn bot(identity: &str, role: BotRole, received: &[(&str, [u64; 3], u64)]) -> BotSummary {
        BotSummary {
            identity: identity.into(),
            role,
            token_role: "participant".into(),
            participant_id: Some(format!("PA_{identity}")),
            joined_ms: None,
            media_ms: None,
            error: None,
            ended: None,
            publisher_state: None,
            subscriber_state: None,
            packets_sent: 0,
            nacks_received: 0,
            plis_received: 0,
            firs_received: 0,
            received: received
                .iter()
                .map(|(from, layers, audio)| {
                    let c = RecvCounters {
                        packets: layers.iter().sum::<u64>() + audio,
                        audio_packets: *audio,
                        video_layers: *layers,
                        ..RecvCounters::default()
                    };
                    ((*from).to_owned(), PeerReceived::from(c))
                })
                .collect(),
            rakor: None,
        }
    }

    fn sample(at: Instant, sites: u32, host: bool) -> AudioSample {
        AudioSample { at, sites, host }
    }

    #[test]
    fn figures_split_video_by_sender_and_count_audio_samples() {
        let host = bot(
            "command-room",
            BotRole::Host,
            &[
                ("site-001", [300, 0, 0], 500),
                ("site-002", [280, 0, 0], 0),
                ("site-003", [290, 5, 0], 400),
            ],
        );
        let site = bot(
            "site-002",
            BotRole::Site,
            &[
                ("command-room", [0, 0, 900], 500),
                ("site-001", [0, 600, 0], 500),
                ("site-003", [0, 0, 0], 450),
            ],
        );
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let window = (at(1000), at(9000));
        // The samples at 500 ms and 9500 ms and the first change are outside the window.
        let host_log = DirectorLog {
            settings_sent: 3,
            errors: 1,
            samples: vec![
                sample(at(500), 9, false),
                sample(at(2000), 2, false),
                sample(at(3000), 2, false),
            ],
            forwarded_changes: vec![at(900), at(4000)],
            ..DirectorLog::default()
        };
        let site_log = DirectorLog {
            settings_sent: 3,
            errors: 1,
            samples: vec![
                sample(at(2000), 2, true),
                sample(at(3000), 4, true),
                sample(at(4000), 3, false),
                sample(at(9500), 9, false),
            ],
            forwarded_changes: vec![at(4000), at(5000)],
            ..DirectorLog::default()
        };
        let f = figures(
            &[(&host, &host_log), (&site, &site_log)],
            Some("site-001"),
            window,
        );
        assert_eq!(f.bots, 2);
        assert_eq!(f.video_from_host, [0, 0, 900]);
        assert_eq!(f.video_from_spotlight, [300, 600, 0]);
        assert_eq!(f.video_from_other_sites, [570, 5, 0]);
        assert_eq!(
            (f.audio_samples, f.audio_sites_p50, f.audio_sites_max),
            (5, Some(2.0), Some(4))
        );
        assert_eq!(f.audio_samples_over_loudest, 1);
        assert_eq!((f.host_audio_samples, f.host_audio_expected), (2, 3));
        assert_eq!(f.audio_sites_distinct_max, 2);
        assert_eq!((f.settings_sent, f.server_errors), (6, 2));
        assert_eq!(f.forwarded_changes, 2, "the most one bot saw");
        let table = render_rakor_table(&[("sites".into(), f)]);
        assert!(table.contains("| sites |"), "{table}");
        assert!(table.contains("0/0/900"), "{table}");
        assert!(table.contains("2/4"), "{table}");
        assert!(table.contains("2/3"), "{table}");
        let empty = figures(&[], None, window);
        assert_eq!((empty.audio_sites_p50, empty.audio_sites_max), (None, None));
        assert!(render_rakor_table(&[("host".into(), empty)]).contains("n/a/n/a"));
    }

    #[test]
    fn shown_senders_and_settled_layers() {
        let sites = vec!["site-001".to_owned(), "site-002".to_owned()];
        let h = bot("command-room", BotRole::Host, &[]);
        assert_eq!(shown_senders(&h, Some("site-001"), &sites), sites);
        let s1 = bot("site-001", BotRole::Site, &[]);
        assert_eq!(
            shown_senders(&s1, Some("site-001"), &sites),
            vec!["command-room"]
        );
        let s2 = bot("site-002", BotRole::Site, &[]);
        assert_eq!(
            shown_senders(&s2, Some("site-001"), &sites),
            vec!["command-room", "site-001"]
        );

        use rakor_client::{ReceivedTrackStats, Report};
        let pid = |s: &str| ParticipantId(format!("PA_{s}"));
        let mut r = Report::default();
        let add = |r: &mut Report, from: &str, layer: Option<u8>| {
            let id = TrackId(format!("TR_{from}"));
            let mut t = ReceivedTrackStats::new(id.clone(), Some(pid(from)), TrackKind::Video);
            t.last_layer = layer;
            r.received.insert(id, t);
        };
        add(&mut r, "host", Some(2));
        add(&mut r, "spot", Some(2));
        let me = pid("me");
        let (host, spot) = (pid("host"), pid("spot"));
        let check = |r: &Report, role| {
            layers_settled(
                role,
                r,
                &me,
                Some(&host),
                Some(&spot),
                std::slice::from_ref(&spot),
                None,
            )
        };
        assert!(!check(&r, BotRole::Site), "spotlight still at f");
        add(&mut r, "spot", Some(1));
        assert!(check(&r, BotRole::Site));
        assert!(!check(&r, BotRole::Host));
        // The spotlight site itself only waits for the host.
        assert!(layers_settled(
            BotRole::Site,
            &r,
            &spot,
            Some(&host),
            Some(&spot),
            &[],
            None,
        ));
        assert!(layers_settled(
            BotRole::Publisher,
            &Report::default(),
            &me,
            None,
            None,
            &[],
            None,
        ));
        // With a presentation: settled only once it arrives at its top layer; the presenter
        // itself does not wait for it.
        let presenting = |r: &Report, me: &ParticipantId| {
            layers_settled(
                BotRole::Site,
                r,
                me,
                Some(&host),
                Some(&spot),
                &[],
                Some(&spot),
            )
        };
        assert!(!presenting(&r, &me), "no presentation received yet");
        assert!(presenting(&r, &spot));
        let id = TrackId("TR_spot_screen".into());
        let mut t = ReceivedTrackStats::new(id.clone(), Some(pid("spot")), TrackKind::Video);
        t.source = Some(rakor_proto::TrackSource::Screen);
        t.last_layer = Some(1);
        r.received.insert(id.clone(), t.clone());
        assert!(!presenting(&r, &me), "presentation below its top layer");
        t.last_layer = Some(2);
        r.received.insert(id, t);
        assert!(presenting(&r, &me));
    }
}
