//! Login, logout, the current operator, API tokens.

use super::{ApiError, ApiResult, Body, ClientAddr, ErrorBody, Op, SESSION_COOKIE};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rakor_session::store::{ApiTokenInfo, Operator};
use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// `POST /api/v1/auth/login` body. `Debug` hides the password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub operator: Operator,
}

fn cookie(secure: bool, value: &str, max_age: u64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    )
}

/// Log in; sets the `rakor_session` cookie.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest, security(),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ext: axum::http::Extensions,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    if req.username.len() > 256 || req.password.len() > 1024 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "username or password too long",
        ));
    }
    let (secret, op) = state
        .session
        .login(&req.username, &req.password, &addr)
        .await?;
    let c = cookie(
        super::cookie_secure(&state, &ext),
        &secret,
        state.session.login_ttl().as_secs(),
    );
    Ok(([(header::SET_COOKIE, c)], Json(Me { operator: op })).into_response())
}

/// Log out: the login ends and the cookie is cleared.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    _op: Op,
    ext: axum::http::Extensions,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let secret = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_owned());
    if let Some(s) = secret {
        state.session.logout(&s).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            cookie(super::cookie_secure(&state, &ext), "", 0),
        )],
    )
        .into_response())
}

/// The logged-in operator.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(Op(op): Op) -> Json<Me> {
    Json(Me { operator: op })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for, e.g. "backup script".
    pub label: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret: shown once, send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub info: ApiTokenInfo,
}

/// The operator's API tokens (without secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "auth", responses((status = 200, body = [ApiTokenInfo]), (status = 401, body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Op(op): Op,
) -> ApiResult<Json<Vec<ApiTokenInfo>>> {
    Ok(Json(state.session.store().list_api_tokens(op.id).await?))
}

/// Create an API token for scripts.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "auth", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    actor: super::Actor,
    Body(req): Body<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let (token, info) = state
        .session
        .create_api_token(&actor.op, &req.label)
        .await?;
    state
        .session
        .audit_by(
            &actor.who,
            "token_create",
            format!("token {}", info.id),
            info.label.clone(),
        )
        .await;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// Revoke an API token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "auth", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    actor: super::Actor,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = super::parse_id("token", &id)?;
    if state
        .session
        .store()
        .revoke_api_token(actor.op.id, id)
        .await?
    {
        state
            .session
            .audit_by(
                &actor.who,
                "token_revoke",
                format!("token {id}"),
                String::new(),
            )
            .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("token {id} does not exist")))
    }
}
