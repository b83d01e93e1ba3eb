//! The directory of sites.

use super::{ApiError, ApiResult, Body, ErrorBody, Op};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use rakor_session::model::{Site, SiteInput, SitePatch};
use serde::Serialize;
use utoipa::ToSchema;

/// All sites, by name (deactivated ones included, `active: false`).
#[utoipa::path(get, path = "/api/v1/sites", tag = "sites", responses((status = 200, body = [Site]), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _op: Op) -> ApiResult<Json<Vec<Site>>> {
    Ok(Json(state.session.list_sites().await?))
}

/// Add a site.
#[utoipa::path(post, path = "/api/v1/sites", tag = "sites", request_body = SiteInput,
    responses((status = 201, body = Site), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _op: Op,
    Body(input): Body<SiteInput>,
) -> ApiResult<(StatusCode, Json<Site>)> {
    let site = state.session.create_site(&input).await?;
    tracing::info!(site = site.id, "site added");
    Ok((StatusCode::CREATED, Json(site)))
}

/// One site.
#[utoipa::path(get, path = "/api/v1/sites/{id}", tag = "sites", params(("id" = i64, Path)),
    responses((status = 200, body = Site), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
) -> ApiResult<Json<Site>> {
    let id = super::parse_id("site", &id)?;
    Ok(Json(state.session.site(id).await?))
}

/// Edit a site (only the given fields); `{"active": false}` deactivates it.
#[utoipa::path(patch, path = "/api/v1/sites/{id}", tag = "sites", params(("id" = i64, Path)), request_body = SitePatch,
    responses((status = 200, body = Site), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
    Body(p): Body<SitePatch>,
) -> ApiResult<Json<Site>> {
    let id = super::parse_id("site", &id)?;
    Ok(Json(state.session.patch_site(id, &p).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Imported {
    pub imported: usize,
    pub sites: Vec<Site>,
}

/// Import sites from CSV (`Content-Type: text/csv`): header `name,kind,contact_person,phone`
/// (or `nama;jenis;kontak;telepon`). All rows or none.
#[utoipa::path(post, path = "/api/v1/sites/import", tag = "sites", request_body(content = String, content_type = "text/csv"),
    responses((status = 201, body = Imported), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    _op: Op,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Imported>)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with("text/csv") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the CSV file with Content-Type: text/csv",
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "the CSV file must be UTF-8 (save it as \"CSV UTF-8\")",
        )
    })?;
    let sites = state.session.import_sites(text).await?;
    tracing::info!(count = sites.len(), "sites imported");
    Ok((
        StatusCode::CREATED,
        Json(Imported {
            imported: sites.len(),
            sites,
        }),
    ))
}
