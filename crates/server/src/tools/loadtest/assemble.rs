//! The run's [`Summary`] from the bots and their reports at the start and end of the measured
//! window: per bot, per role, and (rakor scenario) per layer and sender, with the notes that
//! say how to read it.

use super::join::Bot;
use super::plan::LoadPlan;
use super::scenario::{self, Scenario};
use super::summary::{self, BotRole, Summary};
use rakor_client::Report;
use std::collections::HashMap;
use std::time::Instant;

#[allow(clippy::too_many_arguments)]
pub(super) fn build_summary(
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
    let spotlight = plan.spotlight();
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
