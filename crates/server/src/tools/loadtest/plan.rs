//! What `rakor loadtest` was asked to do, validated ([`LoadPlan`]), and the bots that carry it
//! out ([`bot_specs`]).

use super::scenario::{self, DirectorPlan, Scenario};
use super::summary::BotRole;
use super::LoadtestArgs;
use rakor_proto::Role;
use std::path::PathBuf;
use std::time::Duration;

/// More bots than this in one process is not a meaningful test on one machine.
pub(super) const MAX_BOTS: usize = 1000;
/// Identity of the host bot (`--host`), as the command room is usually called.
pub const HOST_IDENTITY: &str = "command-room";

/// What `rakor loadtest` was asked to do, validated.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub url: String,
    /// CAs trusted for a `wss://` URL (`--ca-file`: the system's plus that file); `None` =
    /// the system's.
    pub tls_roots: Option<std::sync::Arc<rustls::RootCertStore>>,
    /// `--ice-transport relay`: the bots use only TURN relayed candidates.
    pub relay_only: bool,
    /// `--ice-check-window`: the bots' `ClientOptions::ice_check_window`.
    pub ice_check_window: std::time::Duration,
    pub room: String,
    pub scenario: Scenario,
    /// Rakor: sites that talk.
    pub talkers: usize,
    /// Rakor: the spotlighted site also presents (shares a screen).
    pub presenter: bool,
    /// Rakor: sites subscribe to all video (`--eager-video`), not on demand.
    pub eager_video: bool,
    /// Rakor: the first site's number (`--first-site`, 1 = `site-001`).
    pub first_site: usize,
    /// Rakor: no host bot in this process (`--no-host`).
    pub no_host: bool,
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
    /// `--procs`: processes the bots are spread over (1: this one).
    pub procs: usize,
    /// One process of `--procs` (internal `--proc-slice K/N`): this process runs the bots whose
    /// index in [`bot_specs`] is K modulo N.
    pub slice: Option<(usize, usize)>,
    /// One process of `--procs`: the run's start, shared by all processes (the rakor
    /// scenario's talk phases count from it).
    pub epoch: Option<std::time::SystemTime>,
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
        if a.presenter
            && (a.scenario != Scenario::Rakor
                || scenario::spotlight_identity(a.publishers, a.audio_only).is_none())
        {
            return Err(
                "--presenter needs --scenario rakor and a site with video (the spotlight presents)"
                    .into(),
            );
        }
        if (a.no_host || a.first_site != 1) && a.scenario != Scenario::Rakor {
            return Err("--no-host and --first-site need --scenario rakor".into());
        }
        if a.no_host && a.presenter {
            return Err(
                "--presenter needs the host (it puts the presenter in the spotlight)".into(),
            );
        }
        if a.duration.is_zero() || a.join_budget.is_zero() {
            return Err("--duration and --join-budget must be above zero".into());
        }
        let bots = match a.scenario {
            Scenario::Mesh => total,
            Scenario::Rakor => subscribers - usize::from(a.no_host),
        };
        let procs = usize::from(a.procs);
        if procs > bots {
            return Err(format!(
                "--procs {procs} is more than the {bots} bots of the run"
            ));
        }
        let slice = match &a.proc_slice {
            None => None,
            Some(text) => Some(parse_slice(text).filter(|(_, n)| *n == procs).ok_or_else(
                || format!("--proc-slice {text:?}: expected K/N with K < N = --procs"),
            )?),
        };
        let epoch = a
            .proc_epoch_ms
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
        let default_layers = match a.scenario {
            Scenario::Mesh => 1,
            Scenario::Rakor => 3,
        };
        let tls_roots = match &a.ca_file {
            Some(path) => {
                Some(rakor_client::tls::roots_with_ca_file(path).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        Ok(Self {
            url: a.url.clone(),
            tls_roots,
            relay_only: a.ice_transport == super::IceTransport::Relay,
            ice_check_window: a.ice_check_window,
            room: a.room.clone(),
            scenario: a.scenario,
            talkers: usize::from(a.talkers),
            presenter: a.presenter,
            eager_video: a.eager_video,
            first_site: a.first_site as usize,
            no_host: a.no_host,
            publishers: a.publishers,
            subscribers,
            audio_only: a.audio_only,
            host: a.host || a.scenario == Scenario::Rakor,
            duration: a.duration,
            video_layers: a.video_layers.unwrap_or(default_layers),
            join_concurrency: usize::from(a.join_concurrency),
            join_budget: a.join_budget,
            server_log: a.server_log.clone(),
            procs,
            slice,
            epoch,
        })
    }

    /// Bots in the room (rakor: the host, the sites and the viewers; the sites count as
    /// publishers and subscribers both).
    pub fn bots(&self) -> usize {
        match self.scenario {
            Scenario::Mesh => self.publishers + self.subscribers,
            Scenario::Rakor => self.subscribers - usize::from(self.no_host),
        }
    }

    /// Rakor: the site the host puts in the spotlight (none without the host here).
    pub fn spotlight(&self) -> Option<String> {
        if self.scenario != Scenario::Rakor || self.no_host {
            return None;
        }
        scenario::spotlight_identity(self.publishers, self.audio_only).map(|s| self.renumbered(&s))
    }

    /// `site-NNN` numbered from `first_site` instead of 1; other identities unchanged.
    fn renumbered(&self, identity: &str) -> String {
        match identity
            .strip_prefix("site-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if self.first_site != 1 => scenario::site_identity(n - 1 + self.first_site - 1),
            _ => identity.to_owned(),
        }
    }

    /// Rakor: receive-only viewers besides the sites and the host.
    pub fn viewers(&self) -> usize {
        self.subscribers.saturating_sub(self.publishers + 1)
    }
}

/// `K/N` with K < N.
fn parse_slice(text: &str) -> Option<(usize, usize)> {
    let (k, n) = text.split_once('/')?;
    let (k, n) = (k.parse().ok()?, n.parse().ok()?);
    (k < n).then_some((k, n))
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
        let mut bots = scenario::rakor_bots(
            plan.publishers,
            plan.audio_only,
            plan.talkers,
            plan.viewers(),
        );
        if plan.no_host {
            bots.retain(|b| b.role != BotRole::Host);
        }
        for b in &mut bots {
            b.identity = plan.renumbered(&b.identity);
            if let Some(s) = b.director.as_mut().and_then(|d| d.spotlight.as_mut()) {
                *s = plan.renumbered(s);
            }
        }
        if plan.presenter {
            let presenter = plan.spotlight();
            for b in bots
                .iter_mut()
                .filter(|b| Some(&b.identity) == presenter.as_ref())
            {
                if let Some(d) = b.director.as_mut() {
                    d.present = true;
                }
            }
        }
        return bots;
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
