//! The session manager's REST API under `/api/v1` (see docs/api.md) and its OpenAPI document at
//! `/api/openapi.json`. Every `/api/v1` route except `POST /api/v1/auth/login` needs an
//! operator: the `rakor_session` cookie from the login (HttpOnly, SameSite=Strict) or an API
//! token (`Authorization: Bearer rk_…`). Errors are JSON: `{"error":{"code":..,"message":..}}`.
//!
//! | file | routes |
//! | --- | --- |
//! | [`guard`] | CSRF (Origin / Sec-Fetch-Site), content types, `Cache-Control: no-store` |
//! | [`auth`] | login, logout, me, API tokens |
//! | [`sites`] | the directory: sites, CSV import |
//! | [`rakor`] | scheduled rakor, invitations, attendance |
//! | [`live`] | the live panel: participants, lobby, moderation, end |
//! | [`recording`] | start/stop a recording, the list of recordings, downloads |
//! | [`admin`] | operator accounts, bans, the audit log |

pub mod admin;
pub mod auth;
pub mod guard;
pub mod live;
pub mod rakor;
pub mod record;
pub mod recording;
pub mod sites;

use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rakor_session::store::Operator;
use rakor_session::SessionError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// The cookie that carries an operator's login.
pub const SESSION_COOKIE: &str = "rakor_session";

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `unauthorized`, `invalid_input`, `malformed_json`, `not_found`,
    /// `conflict`, `rate_limited`, `busy`, `forbidden`, `unsupported_media_type`,
    /// `payload_too_large`, `internal`.
    pub code: String,
    pub message: String,
    /// The offending field, for `invalid_input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An API failure: status, code, message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in first (session cookie) or send an API token (Authorization: Bearer …)",
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let status = match &e {
            SessionError::Invalid { .. } => StatusCode::BAD_REQUEST,
            SessionError::NotFound { .. } => StatusCode::NOT_FOUND,
            SessionError::Conflict(_) => StatusCode::CONFLICT,
            SessionError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            SessionError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            SessionError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SessionError::Forbidden(_) => StatusCode::FORBIDDEN,
            SessionError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let SessionError::Storage(m) = &e {
            tracing::error!("session storage: {m}");
        }
        let mut err = ApiError::new(status, e.code(), e.to_string());
        match e {
            SessionError::Invalid { field, .. } => err.field = Some(field),
            SessionError::RateLimited { retry_after_secs }
            | SessionError::Busy { retry_after_secs } => err.retry_after = Some(retry_after_secs),
            SessionError::Storage(_) => err.message = "storage error; see the server log".into(),
            _ => {}
        }
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut res = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body whose rejections are API errors (`malformed_json`, `invalid_input`,
/// `unsupported_media_type`, `payload_too_large`).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::JsonRejection as J;
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(J::JsonDataError(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                e.body_text(),
            )),
            Err(J::JsonSyntaxError(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                e.body_text(),
            )),
            Err(J::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large",
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                e.body_text(),
            )),
        }
    }
}

/// The logged-in operator (cookie or API token); 401 otherwise.
pub struct Op(pub Operator);

fn cookie_value<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The operator the API guard already authenticated (a request extension), so that the
/// handler does not look it up again.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Operator);

impl FromRequestParts<AppState> for Op {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Authenticated(op)) = parts.extensions.get::<Authenticated>() {
            return Ok(Op(op.clone()));
        }
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let op = if let Some(token) = bearer {
            state.session.token_operator(token).await?
        } else if let Some(secret) = cookie_value(parts, SESSION_COOKIE) {
            state.session.session_operator(secret).await?
        } else {
            None
        };
        op.map(Op).ok_or_else(ApiError::unauthorized)
    }
}

/// The client's address (login throttling, the audit log): the TCP peer, or the address a
/// trusted proxy forwarded (`crate::client_addr`); "unknown" without connect info.
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// The logged-in operator and where the request came from: for handlers that write the
/// audit log.
pub struct Actor {
    pub op: Operator,
    pub who: rakor_session::Actor,
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Op(op) = Op::from_request_parts(parts, state).await?;
        let Ok(ClientAddr(address)) = ClientAddr::from_request_parts(parts, state).await;
        Ok(Actor {
            who: rakor_session::Actor {
                operator: op.username.clone(),
                address,
            },
            op,
        })
    }
}

/// Parse a numeric id from the path; anything else is 404.
pub fn parse_id(what: &str, raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::not_found(format!("{what} {raw} does not exist")))
}

/// The base URL for invitation links: `server.public_url`, else `http://` and the local
/// address the console's connection reached (never the request's `Host` header, which the
/// client chooses). Behind a reverse proxy set `server.public_url`.
pub fn base_url(state: &AppState, parts: &axum::http::Extensions) -> String {
    let configured = state.config.server.public_url.trim().trim_end_matches('/');
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let local = parts
        .get::<crate::client_addr::LocalAddr>()
        .map(|l| l.0)
        .unwrap_or(state.config.server.listen);
    state.config.public_base_url(local)
}

/// Whether the session cookie gets `Secure`: `server.public_url` is `https://…`, or a trusted
/// proxy said the client used HTTPS (`X-Forwarded-Proto`). Never from the `Host` header.
pub fn cookie_secure(state: &AppState, ext: &axum::http::Extensions) -> bool {
    state
        .config
        .server
        .public_url
        .trim()
        .starts_with("https://")
        || ext
            .get::<crate::client_addr::ForwardedHttps>()
            .is_some_and(|f| f.0)
}

/// A CSV download (UTF-8 with BOM already in `body`).
pub fn csv_response(filename: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Rakor session manager API", description = "Operators, directory, scheduled rakor, invitations, lobby, moderation, attendance, the rakor's record. See docs/api.md."),
    paths(
        auth::login, auth::logout, auth::me, auth::list_tokens, auth::create_token, auth::revoke_token,
        sites::list, sites::create, sites::get_one, sites::patch, sites::import,
        rakor::list, rakor::create, rakor::get_one, rakor::update, rakor::delete,
        rakor::invitations, rakor::invitations_csv, rakor::reissue_link, rakor::revoke_link,
        rakor::attendance, rakor::attendance_csv, record::record,
        live::live, live::admit, live::refuse, live::admit_all, live::refuse_all,
        live::mute, live::remove, live::spotlight, live::give_floor, live::stop_presentation,
        live::end, recording::start, recording::stop, recording::list, recording::download,
        admin::list_operators, admin::create_operator, admin::reset_password, admin::disable_operator,
        admin::enable_operator, admin::remove_operator, admin::list_bans, admin::create_ban,
        admin::remove_ban, admin::audit,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SecurityAddon),
    security(("cookie" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such API route; see /api/openapi.json")
}

/// The API routes (merge into the server's router).
pub fn routes(state: AppState) -> Router<AppState> {
    let v1 = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/tokens", get(auth::list_tokens).post(auth::create_token))
        .route("/tokens/{id}", axum::routing::delete(auth::revoke_token))
        .route("/sites", get(sites::list).post(sites::create))
        .route("/sites/import", post(sites::import))
        .route("/sites/{id}", get(sites::get_one).patch(sites::patch))
        .route("/rakor", get(rakor::list).post(rakor::create))
        .route(
            "/rakor/{id}",
            get(rakor::get_one).put(rakor::update).delete(rakor::delete),
        )
        .route("/rakor/{id}/invitations", get(rakor::invitations))
        .route("/rakor/{id}/invitations.csv", get(rakor::invitations_csv))
        .route(
            "/rakor/{id}/invitations/{site_id}/reissue",
            post(rakor::reissue_link),
        )
        .route(
            "/rakor/{id}/invitations/{site_id}/revoke",
            post(rakor::revoke_link),
        )
        .route(
            "/operators",
            get(admin::list_operators).post(admin::create_operator),
        )
        .route(
            "/operators/{id}",
            axum::routing::delete(admin::remove_operator),
        )
        .route("/operators/{id}/password", post(admin::reset_password))
        .route("/operators/{id}/disable", post(admin::disable_operator))
        .route("/operators/{id}/enable", post(admin::enable_operator))
        .route("/bans", get(admin::list_bans).post(admin::create_ban))
        .route("/bans/{id}", axum::routing::delete(admin::remove_ban))
        .route("/audit", get(admin::audit))
        .route("/rakor/{id}/attendance", get(rakor::attendance))
        .route("/rakor/{id}/attendance.csv", get(rakor::attendance_csv))
        .route("/rakor/{id}/record", get(record::record))
        .route(
            "/rakor/{id}/participants/{pid}/floor",
            post(live::give_floor),
        )
        .route("/rakor/{id}/live", get(live::live))
        .route("/rakor/{id}/lobby/admit-all", post(live::admit_all))
        .route("/rakor/{id}/lobby/refuse-all", post(live::refuse_all))
        .route("/rakor/{id}/lobby/{entry}/admit", post(live::admit))
        .route("/rakor/{id}/lobby/{entry}/refuse", post(live::refuse))
        .route("/rakor/{id}/participants/{pid}/mute", post(live::mute))
        .route("/rakor/{id}/participants/{pid}/remove", post(live::remove))
        .route("/rakor/{id}/spotlight", post(live::spotlight))
        .route(
            "/rakor/{id}/presentation/stop",
            post(live::stop_presentation),
        )
        .route("/rakor/{id}/end", post(live::end))
        .route("/rakor/{id}/recording/start", post(recording::start))
        .route("/rakor/{id}/recording/stop", post(recording::stop))
        .route("/rakor/{id}/recordings", get(recording::list))
        .route(
            "/rakor/{id}/recordings/{rec}/{file}",
            get(recording::download),
        )
        .fallback(no_route)
        .layer(axum::middleware::from_fn_with_state(
            state,
            guard::api_guard,
        ));
    Router::new()
        .nest("/api/v1", v1)
        .route("/api/openapi.json", get(openapi_json))
}
