//! The live panel of a rakor: who is in (from the media core), who waits in the lobby; admit
//! and refuse; moderation (mute, remove, spotlight, end) through `SfuHandle::moderate`.

use super::rakor::load;
use super::{Actor, ApiError, ApiResult, Body, ErrorBody, Op};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rakor_proto::ParticipantId;
use rakor_session::lobby::{Decision, LobbyEntry};
use rakor_session::model::{site_of_identity, Rakor, RakorState};
use rakor_sfu::{Moderation, SfuError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A participant in the room now.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveParticipant {
    pub participant_id: String,
    pub identity: String,
    pub site_id: Option<i64>,
    pub name: String,
    pub role: String,
    /// Audio muted by a moderator (the server does not forward it).
    pub audio_muted: bool,
    pub spotlight: bool,
    /// Published tracks (`audio`, `video`).
    pub tracks: Vec<String>,
    /// What each published track carries, in the order of `tracks` (`camera`, `microphone`,
    /// `screen`, `screen_audio`).
    pub sources: Vec<String>,
    /// This participant shares its screen: it is the room's presentation.
    pub presenting: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    pub rakor_id: i64,
    pub state: RakorState,
    pub room: String,
    pub participants: Vec<LiveParticipant>,
    pub lobby: Vec<LobbyEntry>,
    pub spotlight: Option<String>,
    /// Raised hands, in the order they went up.
    pub hands: Vec<LiveHand>,
    /// Who presents now (the room's one screen share), or null.
    pub presentation: Option<LivePresentation>,
}

/// The room's presentation.
#[derive(Debug, Serialize, ToSchema)]
pub struct LivePresentation {
    pub participant_id: String,
    pub name: String,
    /// The presenter's site, when it joined with an invitation.
    pub site_id: Option<i64>,
    /// The screen track.
    pub track_id: String,
}

/// A raised hand.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveHand {
    pub participant_id: String,
    pub name: String,
    /// When it went up, UTC RFC 3339.
    pub at_utc: String,
}

fn sfu_error(e: SfuError) -> ApiError {
    match e {
        SfuError::UnknownRoom(_) => ApiError::new(
            StatusCode::CONFLICT,
            "not_live",
            "nobody is in this rakor's room now",
        ),
        SfuError::UnknownParticipant(p) => {
            ApiError::not_found(format!("participant {p} is not in the room"))
        }
        SfuError::NoPresentation(_) => ApiError::new(
            StatusCode::CONFLICT,
            "no_presentation",
            "nobody is presenting in this rakor now",
        ),
        other => ApiError::internal(other.to_string()),
    }
}

/// Who is in the room and who waits in the lobby.
#[utoipa::path(get, path = "/api/v1/rakor/{id}/live", tag = "live", params(("id" = i64, Path)),
    responses((status = 200, body = Live), (status = 404, body = ErrorBody)))]
pub async fn live(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
) -> ApiResult<Json<Live>> {
    let r = load(&state, &id).await?;
    let snap = state.sfu.room_info(&r.room).await.map_err(sfu_error)?;
    let hands = snap
        .as_ref()
        .map(|s| {
            s.hands
                .iter()
                .map(|h| LiveHand {
                    participant_id: h.participant_id.to_string(),
                    name: h.name.clone(),
                    at_utc: h.at.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let presentation = snap.as_ref().and_then(|s| {
        let pr = s.presentation.as_ref()?;
        let p = s.participants.iter().find(|p| p.id == pr.participant_id)?;
        Some(LivePresentation {
            participant_id: pr.participant_id.to_string(),
            name: p.name.clone(),
            site_id: site_of_identity(&p.identity),
            track_id: pr.track_id.to_string(),
        })
    });
    let (participants, spotlight) = match snap {
        None => (Vec::new(), None),
        Some(s) => {
            let list = s
                .participants
                .iter()
                .map(|p| LiveParticipant {
                    participant_id: p.id.to_string(),
                    identity: p.identity.clone(),
                    site_id: site_of_identity(&p.identity),
                    name: p.name.clone(),
                    role: p.role.as_str().to_owned(),
                    audio_muted: s.moderator_muted.contains(&p.id),
                    spotlight: s.spotlight.as_ref() == Some(&p.id),
                    tracks: p
                        .tracks
                        .iter()
                        .map(|t| match t.kind {
                            rakor_proto::TrackKind::Audio => "audio".to_owned(),
                            rakor_proto::TrackKind::Video => "video".to_owned(),
                        })
                        .collect(),
                    sources: p
                        .tracks
                        .iter()
                        .map(|t| t.source().as_str().to_owned())
                        .collect(),
                    presenting: s
                        .presentation
                        .as_ref()
                        .is_some_and(|pr| pr.participant_id == p.id),
                })
                .collect();
            (list, s.spotlight.map(|p| p.to_string()))
        }
    };
    Ok(Json(Live {
        rakor_id: r.id,
        state: r.state_at(rakor_session::wib::now()),
        room: r.room.clone(),
        participants,
        lobby: state.session.lobby().list(r.id),
        spotlight,
        hands,
        presentation,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Decided {
    /// Identities the decision reached.
    pub identities: Vec<String>,
}

async fn decide_one(
    state: &AppState,
    actor: &Actor,
    id: &str,
    entry: &str,
    d: Decision,
) -> ApiResult<Json<Decided>> {
    let r = load(state, id).await?;
    let entry: u64 = entry
        .parse()
        .map_err(|_| ApiError::not_found(format!("lobby entry {entry} does not exist")))?;
    match state.session.lobby().decide(r.id, entry, d) {
        Some(identity) => {
            tracing::info!(rakor = r.id, %identity, decision = ?d, "lobby decision");
            audit_decision(state, actor, r.id, d, &identity).await;
            Ok(Json(Decided {
                identities: vec![identity],
            }))
        }
        None => Err(ApiError::not_found(format!(
            "nobody waits in the lobby as entry {entry}"
        ))),
    }
}

/// Admit one waiting site.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/lobby/{entry}/admit", tag = "live", params(("id" = i64, Path), ("entry" = u64, Path)),
    responses((status = 200, body = Decided), (status = 404, body = ErrorBody)))]
pub async fn admit(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, entry)): Path<(String, String)>,
) -> ApiResult<Json<Decided>> {
    decide_one(&state, &actor, &id, &entry, Decision::Admit).await
}

/// Refuse one waiting site (it gets `error {code:"refused"}`).
#[utoipa::path(post, path = "/api/v1/rakor/{id}/lobby/{entry}/refuse", tag = "live", params(("id" = i64, Path), ("entry" = u64, Path)),
    responses((status = 200, body = Decided), (status = 404, body = ErrorBody)))]
pub async fn refuse(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, entry)): Path<(String, String)>,
) -> ApiResult<Json<Decided>> {
    decide_one(&state, &actor, &id, &entry, Decision::Refuse).await
}

/// Admit everybody waiting.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/lobby/admit-all", tag = "live", params(("id" = i64, Path)),
    responses((status = 200, body = Decided), (status = 404, body = ErrorBody)))]
pub async fn admit_all(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<Decided>> {
    let r = load(&state, &id).await?;
    let identities = state.session.lobby().decide_all(r.id, Decision::Admit);
    for identity in &identities {
        audit_decision(&state, &actor, r.id, Decision::Admit, identity).await;
    }
    Ok(Json(Decided { identities }))
}

/// Refuse everybody waiting.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/lobby/refuse-all", tag = "live", params(("id" = i64, Path)),
    responses((status = 200, body = Decided), (status = 404, body = ErrorBody)))]
pub async fn refuse_all(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<Decided>> {
    let r = load(&state, &id).await?;
    let identities = state.session.lobby().decide_all(r.id, Decision::Refuse);
    for identity in &identities {
        audit_decision(&state, &actor, r.id, Decision::Refuse, identity).await;
    }
    Ok(Json(Decided { identities }))
}

async fn audit_decision(state: &AppState, actor: &Actor, rakor: i64, d: Decision, identity: &str) {
    let action = match d {
        Decision::Admit => "lobby_admit",
        Decision::Refuse => "lobby_refuse",
    };
    state
        .session
        .audit_by(
            &actor.who,
            action,
            format!("rakor {rakor} {identity}"),
            String::new(),
        )
        .await;
}

/// Remove every participant with `identity` from the rakor's room (a revoked link's holder).
/// Nobody in the room, or the room not live: nothing to do.
pub(super) async fn remove_identity(state: &AppState, r: &Rakor, identity: &str) {
    let Ok(Some(snap)) = state.sfu.room_info(&r.room).await else {
        return;
    };
    for p in snap
        .participants
        .into_iter()
        .filter(|p| p.identity == identity)
    {
        let action = Moderation::Remove { participant: p.id };
        if let Err(e) = state.sfu.moderate(&r.room, action).await {
            tracing::warn!(rakor = r.id, %identity, "cannot remove the holder of a revoked link: {e}");
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    pub muted: bool,
}

/// Mute (or unmute) a participant's audio: the server stops forwarding it and tells the site.
/// In a cascade, on any node: a remote site's mute is repeated at the room's owner and enforced
/// by the site's own node (room-wide).
#[utoipa::path(post, path = "/api/v1/rakor/{id}/participants/{pid}/mute", tag = "live", params(("id" = i64, Path), ("pid" = String, Path)), request_body = MuteRequest,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn mute(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, pid)): Path<(String, String)>,
    Body(req): Body<MuteRequest>,
) -> ApiResult<StatusCode> {
    let r = load(&state, &id).await?;
    let action = Moderation::MuteAudio {
        participant: ParticipantId(pid.clone()),
        muted: req.muted,
    };
    state
        .sfu
        .moderate(&r.room, action)
        .await
        .map_err(sfu_error)?;
    let what = if req.muted {
        "participant_mute"
    } else {
        "participant_unmute"
    };
    state
        .session
        .audit_by(
            &actor.who,
            what,
            format!("rakor {} participant {pid}", r.id),
            String::new(),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a participant (it gets `leave {reason:"removed"}`; coming back means the lobby again).
#[utoipa::path(post, path = "/api/v1/rakor/{id}/participants/{pid}/remove", tag = "live", params(("id" = i64, Path), ("pid" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let r = load(&state, &id).await?;
    let identity = state
        .sfu
        .room_info(&r.room)
        .await
        .map_err(sfu_error)?
        .and_then(|s| s.participants.into_iter().find(|p| p.id.0 == pid))
        .map(|p| p.identity);
    state
        .sfu
        .moderate(
            &r.room,
            Moderation::Remove {
                participant: ParticipantId(pid.clone()),
            },
        )
        .await
        .map_err(sfu_error)?;
    let who = identity
        .clone()
        .unwrap_or_else(|| format!("participant {pid}"));
    if let Some(identity) = identity {
        state.session.revoke_admission(r.id, &identity).await?;
    }
    state
        .session
        .audit_by(
            &actor.who,
            "participant_remove",
            format!("rakor {} {who}", r.id),
            String::new(),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Give the floor to a participant: its moderator mute is lifted, it is spotlighted and its
/// raised hand goes down (the same as the host's `give_floor`).
#[utoipa::path(post, path = "/api/v1/rakor/{id}/participants/{pid}/floor", tag = "live", params(("id" = i64, Path), ("pid" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn give_floor(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let r = load(&state, &id).await?;
    state
        .sfu
        .moderate(
            &r.room,
            Moderation::GiveFloor {
                participant: ParticipantId(pid.clone()),
                by_name: None,
            },
        )
        .await
        .map_err(sfu_error)?;
    state
        .session
        .audit_by(
            &actor.who,
            "give_floor",
            format!("rakor {} participant {pid}", r.id),
            String::new(),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpotlightRequest {
    /// The participant to show on everyone's main view; null clears it.
    pub participant_id: Option<String>,
}

/// Set or clear the spotlight.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/spotlight", tag = "live", params(("id" = i64, Path)), request_body = SpotlightRequest,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn spotlight(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Body(req): Body<SpotlightRequest>,
) -> ApiResult<StatusCode> {
    let r = load(&state, &id).await?;
    let detail = req
        .participant_id
        .clone()
        .unwrap_or_else(|| "cleared".into());
    state
        .session
        .audit_by(&actor.who, "spotlight", format!("rakor {}", r.id), detail)
        .await;
    let action = Moderation::Spotlight {
        participant: req.participant_id.map(ParticipantId),
    };
    state
        .sfu
        .moderate(&r.room, action)
        .await
        .map_err(sfu_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stop the rakor's presentation (the screen share everyone sees): the presenter gets
/// `presentation_stopped`, everyone `presentation: null`.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/presentation/stop", tag = "live", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_presentation(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let r = load(&state, &id).await?;
    state
        .sfu
        .moderate(&r.room, Moderation::StopPresentation)
        .await
        .map_err(sfu_error)?;
    state
        .session
        .audit_by(
            &actor.who,
            "presentation_stop",
            format!("rakor {}", r.id),
            String::new(),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// End the rakor for everyone (`leave {reason:"room_ended"}`); its links stop working.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/end", tag = "live", params(("id" = i64, Path)),
    responses((status = 200, body = super::rakor::RakorView), (status = 404, body = ErrorBody)))]
pub async fn end(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<super::rakor::RakorView>> {
    let r = load(&state, &id).await?;
    let r = state.session.end_rakor(r.id).await?;
    match state.sfu.moderate(&r.room, Moderation::EndRoom).await {
        Ok(()) | Err(SfuError::UnknownRoom(_)) => {}
        Err(e) => return Err(sfu_error(e)),
    }
    tracing::info!(rakor = r.id, "rakor ended by an operator");
    state
        .session
        .audit_by(
            &actor.who,
            "rakor_end",
            format!("rakor {}", r.id),
            String::new(),
        )
        .await;
    Ok(Json(super::rakor::RakorView::of(&r)))
}
