//! Administration: operator accounts (list, add, disable/enable, password reset, remove),
//! bans by identity, and the audit log.

use super::{parse_id, Actor, ApiResult, Body, ErrorBody, Op};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use rakor_session::access::{AuditRecord, Ban, OperatorInfo};
use rakor_session::store::Operator;
use serde::Deserialize;
use std::fmt;
use utoipa::{IntoParams, ToSchema};

/// All operator accounts.
#[utoipa::path(get, path = "/api/v1/operators", tag = "admin", responses((status = 200, body = [OperatorInfo]), (status = 401, body = ErrorBody)))]
pub async fn list_operators(
    State(state): State<AppState>,
    _op: Op,
) -> ApiResult<Json<Vec<OperatorInfo>>> {
    Ok(Json(state.session.list_operators().await?))
}

/// `POST /api/v1/operators` body. `Debug` hides the password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOperator {
    pub username: String,
    /// 10 to 256 characters.
    pub password: String,
}

impl fmt::Debug for NewOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewOperator")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Add an operator account.
#[utoipa::path(post, path = "/api/v1/operators", tag = "admin", request_body = NewOperator,
    responses((status = 201, body = Operator), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_operator(
    State(state): State<AppState>,
    actor: Actor,
    Body(req): Body<NewOperator>,
) -> ApiResult<(StatusCode, Json<Operator>)> {
    let op = state
        .session
        .create_operator(&actor.who, &req.username, &req.password)
        .await?;
    Ok((StatusCode::CREATED, Json(op)))
}

/// `POST /api/v1/operators/{id}/password` body. `Debug` hides the password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword { .. }")
    }
}

/// Set an operator's password. Every login and API token of that operator ends.
#[utoipa::path(post, path = "/api/v1/operators/{id}/password", tag = "admin", params(("id" = i64, Path)), request_body = NewPassword,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reset_password(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Body(req): Body<NewPassword>,
) -> ApiResult<StatusCode> {
    let id = parse_id("operator", &id)?;
    state
        .session
        .reset_password(&actor.who, id, &req.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disable an operator: it cannot log in; its logins and API tokens end at once.
#[utoipa::path(post, path = "/api/v1/operators/{id}/disable", tag = "admin", params(("id" = i64, Path)),
    responses((status = 200, body = OperatorInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn disable_operator(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<OperatorInfo>> {
    set_disabled(&state, &actor, &id, true).await
}

/// Enable a disabled operator again.
#[utoipa::path(post, path = "/api/v1/operators/{id}/enable", tag = "admin", params(("id" = i64, Path)),
    responses((status = 200, body = OperatorInfo), (status = 404, body = ErrorBody)))]
pub async fn enable_operator(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<OperatorInfo>> {
    set_disabled(&state, &actor, &id, false).await
}

async fn set_disabled(
    state: &AppState,
    actor: &Actor,
    id: &str,
    disabled: bool,
) -> ApiResult<Json<OperatorInfo>> {
    let id = parse_id("operator", id)?;
    Ok(Json(
        state
            .session
            .set_operator_disabled(&actor.op, &actor.who, id, disabled)
            .await?,
    ))
}

/// Remove an operator account (not your own).
#[utoipa::path(delete, path = "/api/v1/operators/{id}", tag = "admin", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_operator(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id("operator", &id)?;
    state
        .session
        .remove_operator(&actor.op, &actor.who, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// All bans.
#[utoipa::path(get, path = "/api/v1/bans", tag = "admin", responses((status = 200, body = [Ban]), (status = 401, body = ErrorBody)))]
pub async fn list_bans(State(state): State<AppState>, _op: Op) -> ApiResult<Json<Vec<Ban>>> {
    Ok(Json(state.session.bans().await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBan {
    /// The media room (a rakor's `room`, or the room of a plain token).
    pub room: String,
    /// The token's `sub`: `site-7` for an invited site, or a plain token's identity.
    pub identity: String,
}

/// Ban an identity from a room: every later join with it is refused (`banned`), whatever the
/// token; a participant in the room with it now is removed.
#[utoipa::path(post, path = "/api/v1/bans", tag = "admin", request_body = NewBan,
    responses((status = 201, body = Ban), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_ban(
    State(state): State<AppState>,
    actor: Actor,
    Body(req): Body<NewBan>,
) -> ApiResult<(StatusCode, Json<Ban>)> {
    let ban = state
        .session
        .ban(&actor.who, &req.room, &req.identity)
        .await?;
    if let Ok(Some(snap)) = state.sfu.room_info(&ban.room).await {
        for p in snap
            .participants
            .into_iter()
            .filter(|p| p.identity == ban.identity)
        {
            let _ = state
                .sfu
                .moderate(
                    &ban.room,
                    rakor_sfu::Moderation::Remove { participant: p.id },
                )
                .await;
        }
    }
    Ok((StatusCode::CREATED, Json(ban)))
}

/// Lift a ban.
#[utoipa::path(delete, path = "/api/v1/bans/{id}", tag = "admin", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_ban(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id("ban", &id)?;
    state.session.unban(&actor.who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Most records (1..=1000, default 100).
    pub limit: Option<i64>,
    /// Only records with an id below this (the next page: the last id you got).
    pub before: Option<i64>,
}

/// The audit log, newest first: logins (with username and client address), operator
/// changes, moderation, lobby decisions, link reissue/revoke, bans, API tokens.
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = [AuditRecord]), (status = 401, body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    _op: Op,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    Ok(Json(
        state
            .session
            .audit_log(q.limit.unwrap_or(100), q.before)
            .await?,
    ))
}
