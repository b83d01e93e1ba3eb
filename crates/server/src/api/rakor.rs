//! Scheduled rakor: CRUD, invitation links (JSON and CSV) and the attendance register.

use super::{base_url, csv_response, ApiError, ApiResult, Body, ErrorBody, Op};
use crate::state::AppState;
use crate::token::{self, Claims};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use rakor_proto::Role;
use rakor_session::access::InvitationLink;
use rakor_session::attendance::{self, Register};
use rakor_session::model::{site_identity, Rakor, RakorInput, RakorState, Site, SiteKind};
use rakor_session::wib;
use serde::Serialize;
use utoipa::ToSchema;

/// A rakor as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RakorView {
    pub id: i64,
    pub title: String,
    pub agenda: String,
    /// The media server's room name.
    pub room: String,
    /// Start, UTC (`2030-05-01T02:00:00Z`).
    pub start_utc: String,
    pub end_utc: String,
    /// Start in WIB (`2030-05-01T09:00:00+07:00`).
    pub start_wib: String,
    pub end_wib: String,
    pub host_site_id: i64,
    pub invited_site_ids: Vec<i64>,
    pub state: RakorState,
    /// Invitation links work from here (30 minutes before the start), UTC.
    pub links_valid_from_utc: String,
    /// A cluster: the node id or region the room is placed on ("" = the least-loaded node).
    pub node: String,
}

impl RakorView {
    pub fn of(r: &Rakor) -> Self {
        RakorView {
            id: r.id,
            title: r.title.clone(),
            agenda: r.agenda.clone(),
            room: r.room.clone(),
            start_utc: wib::utc_string(r.start_at),
            end_utc: wib::utc_string(r.end_at),
            start_wib: wib::wib_string(r.start_at),
            end_wib: wib::wib_string(r.end_at),
            host_site_id: r.host_site_id,
            invited_site_ids: r.invited.clone(),
            state: r.state_at(wib::now()),
            links_valid_from_utc: wib::utc_string(r.valid_from()),
            node: r.node.clone(),
        }
    }
}

pub(super) async fn load(state: &AppState, raw: &str) -> ApiResult<Rakor> {
    let id = super::parse_id("rakor", raw)?;
    Ok(state.session.rakor(id).await?)
}

/// All rakor, newest start first.
#[utoipa::path(get, path = "/api/v1/rakor", tag = "rakor", responses((status = 200, body = [RakorView]), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _op: Op) -> ApiResult<Json<Vec<RakorView>>> {
    Ok(Json(
        state
            .session
            .list_rakor()
            .await?
            .iter()
            .map(RakorView::of)
            .collect(),
    ))
}

/// Schedule a rakor. `start`/`end` are WIB (`"2030-05-01T09:00"`) unless they carry an offset.
#[utoipa::path(post, path = "/api/v1/rakor", tag = "rakor", request_body = RakorInput,
    responses((status = 201, body = RakorView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _op: Op,
    Body(input): Body<RakorInput>,
) -> ApiResult<(StatusCode, Json<RakorView>)> {
    let r = state.session.create_rakor(&input).await?;
    Ok((StatusCode::CREATED, Json(RakorView::of(&r))))
}

/// One rakor.
#[utoipa::path(get, path = "/api/v1/rakor/{id}", tag = "rakor", params(("id" = i64, Path)),
    responses((status = 200, body = RakorView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
) -> ApiResult<Json<RakorView>> {
    Ok(Json(RakorView::of(&load(&state, &id).await?)))
}

/// Replace a rakor's schedule (not once it has ended).
#[utoipa::path(put, path = "/api/v1/rakor/{id}", tag = "rakor", params(("id" = i64, Path)), request_body = RakorInput,
    responses((status = 200, body = RakorView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
    Body(input): Body<RakorInput>,
) -> ApiResult<Json<RakorView>> {
    let id = super::parse_id("rakor", &id)?;
    Ok(Json(RakorView::of(
        &state.session.update_rakor(id, &input).await?,
    )))
}

/// Delete a rakor (with its attendance). A live rakor must be ended first.
#[utoipa::path(delete, path = "/api/v1/rakor/{id}", tag = "rakor", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = super::parse_id("rakor", &id)?;
    state.session.delete_rakor(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One invitation link.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    pub site_id: i64,
    pub site: String,
    pub kind: SiteKind,
    /// `host` (the command room: no lobby) or `participant` (waits in the lobby).
    pub role: String,
    /// The link's own id (the token's `lid` claim).
    pub link_id: String,
    /// Revoked by an operator: `link` is null until it is reissued.
    pub revoked: bool,
    /// The join link; a secret. Null when revoked.
    pub link: Option<String>,
    pub valid_from_utc: String,
    pub valid_until_utc: String,
    pub valid_from_wib: String,
    pub valid_until_wib: String,
}

/// A display name that fits the token's 128-byte claim.
fn claim_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if out.len() + c.len_utf8() > token::MAX_CLAIM_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

async fn mint_links(
    state: &AppState,
    ext: &axum::http::Extensions,
    r: &Rakor,
    sites: &[Site],
) -> ApiResult<Vec<Invitation>> {
    let now = wib::now();
    if r.state_at(now) == RakorState::Ended {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this rakor has ended; its links no longer work",
        ));
    }
    let base = base_url(state, ext);
    let links = state.session.current_links(r.id).await?;
    let mut out = Vec::with_capacity(links.len());
    for l in links {
        let Some(site) = sites.iter().find(|s| s.id == l.site_id) else {
            continue;
        };
        out.push(invitation(state, &base, r, site, &l, now)?);
    }
    Ok(out)
}

/// The invitation of one site with one link (a signed token unless the link is revoked).
fn invitation(
    state: &AppState,
    base: &str,
    r: &Rakor,
    site: &Site,
    l: &InvitationLink,
    now: i64,
) -> ApiResult<Invitation> {
    let host = site.id == r.host_site_id;
    let role = if host { Role::Host } else { Role::Participant };
    let link = if l.is_revoked() {
        None
    } else {
        let claims = Claims {
            sub: site_identity(site.id),
            room: r.room.clone(),
            name: claim_name(&site.name),
            role,
            iat: u64::try_from(now).unwrap_or(0),
            exp: u64::try_from(r.end_at).unwrap_or(0),
            iss: token::ISSUER.to_owned(),
            nbf: u64::try_from(r.valid_from()).ok(),
            sid: Some(r.id.to_string()),
            lobby: !host,
            lid: Some(l.id.clone()),
        };
        let t = token::mint(&state.signing_key, &claims)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Some(format!("{base}/join?token={t}"))
    };
    Ok(Invitation {
        site_id: site.id,
        site: site.name.clone(),
        kind: site.kind,
        role: role.as_str().to_owned(),
        link_id: l.id.clone(),
        revoked: l.is_revoked(),
        link,
        valid_from_utc: wib::utc_string(r.valid_from()),
        valid_until_utc: wib::utc_string(r.end_at),
        valid_from_wib: wib::wib_string(r.valid_from()),
        valid_until_wib: wib::wib_string(r.end_at),
    })
}

/// Reissue a site's invitation link: the old link is refused from now on (`link_revoked`),
/// a participant who joined with it is removed, and the new link waits in the lobby again.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/invitations/{site_id}/reissue", tag = "rakor",
    params(("id" = i64, Path), ("site_id" = i64, Path)),
    responses((status = 200, body = Invitation), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reissue_link(
    State(state): State<AppState>,
    actor: super::Actor,
    ext: axum::http::Extensions,
    Path((id, site_id)): Path<(String, String)>,
) -> ApiResult<Json<Invitation>> {
    let r = load(&state, &id).await?;
    let site = state
        .session
        .site(super::parse_id("site", &site_id)?)
        .await?;
    let l = state
        .session
        .reissue_link(&actor.who, r.id, site.id)
        .await?;
    super::live::remove_identity(&state, &r, &site_identity(site.id)).await;
    let base = base_url(&state, &ext);
    Ok(Json(invitation(&state, &base, &r, &site, &l, wib::now())?))
}

/// Revoke a site's invitation link without a new one (a participant who joined with it is
/// removed). Reissue to give the site a working link again.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/invitations/{site_id}/revoke", tag = "rakor",
    params(("id" = i64, Path), ("site_id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_link(
    State(state): State<AppState>,
    actor: super::Actor,
    Path((id, site_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let r = load(&state, &id).await?;
    let site = state
        .session
        .site(super::parse_id("site", &site_id)?)
        .await?;
    state.session.revoke_link(&actor.who, r.id, site.id).await?;
    super::live::remove_identity(&state, &r, &site_identity(site.id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// One signed link per invited site, plus the host link (first). Links work from 30 minutes
/// before the start until the end.
#[utoipa::path(get, path = "/api/v1/rakor/{id}/invitations", tag = "rakor", params(("id" = i64, Path)),
    responses((status = 200, body = [Invitation]), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn invitations(
    State(state): State<AppState>,
    _op: Op,
    ext: axum::http::Extensions,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Invitation>>> {
    let r = load(&state, &id).await?;
    let sites = state.session.list_sites().await?;
    Ok(Json(mint_links(&state, &ext, &r, &sites).await?))
}

/// The invitation links as CSV (UTF-8 with BOM): site, kind, role, link, valid from/until (WIB).
#[utoipa::path(get, path = "/api/v1/rakor/{id}/invitations.csv", tag = "rakor", params(("id" = i64, Path)),
    responses((status = 200, content_type = "text/csv", body = String), (status = 404, body = ErrorBody)))]
pub async fn invitations_csv(
    State(state): State<AppState>,
    _op: Op,
    ext: axum::http::Extensions,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = load(&state, &id).await?;
    let sites = state.session.list_sites().await?;
    let links = mint_links(&state, &ext, &r, &sites).await?;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let mut rows = vec![vec![
        "Lokasi".to_owned(),
        "Jenis".into(),
        "Peran".into(),
        "Tautan".into(),
        "Berlaku dari (WIB)".into(),
        "Berlaku sampai (WIB)".into(),
    ]];
    for l in &links {
        rows.push(vec![
            attendance::csv_safe(&l.site),
            l.kind.as_str().into(),
            l.role.clone(),
            l.link
                .clone()
                .unwrap_or_else(|| "(dicabut / revoked)".into()),
            wib::wib_short(r.valid_from()),
            wib::wib_short(r.end_at),
        ]);
    }
    for row in rows {
        w.write_record(&row)
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let body = format!("{}{}", attendance::BOM, String::from_utf8_lossy(&bytes));
    Ok(csv_response(&format!("undangan-rakor-{}.csv", r.id), body))
}

/// The attendance register (JSON).
#[utoipa::path(get, path = "/api/v1/rakor/{id}/attendance", tag = "rakor", params(("id" = i64, Path)),
    responses((status = 200, body = Register), (status = 404, body = ErrorBody)))]
pub async fn attendance(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
) -> ApiResult<Json<Register>> {
    let id = super::parse_id("rakor", &id)?;
    Ok(Json(state.session.register(id).await?))
}

/// The attendance register as CSV for Excel (UTF-8 with BOM, CRLF).
#[utoipa::path(get, path = "/api/v1/rakor/{id}/attendance.csv", tag = "rakor", params(("id" = i64, Path)),
    responses((status = 200, content_type = "text/csv", body = String), (status = 404, body = ErrorBody)))]
pub async fn attendance_csv(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = super::parse_id("rakor", &id)?;
    let reg = state.session.register(id).await?;
    let body = attendance::to_csv(&reg).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(csv_response(&format!("daftar-hadir-rakor-{id}.csv"), body))
}
