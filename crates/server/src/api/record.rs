//! The rakor's record (*notulen*): `GET /api/v1/rakor/{id}/record` as JSON (default), CSV
//! (`?format=csv` or `Accept: text/csv`) or a printable HTML page (`?format=html` or
//! `Accept: text/html`), from [`rakor_session::record`].

use super::{csv_response, ApiError, ApiResult, ErrorBody, Op};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rakor_session::record::{self, Record};
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
pub struct RecordQuery {
    /// `json` (default), `csv` or `html`; overrides `Accept`.
    pub format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Html,
}

fn format_of(q: &RecordQuery, headers: &HeaderMap) -> ApiResult<Format> {
    match q.format.as_deref().map(str::trim) {
        Some("json") => return Ok(Format::Json),
        Some("csv") => return Ok(Format::Csv),
        Some("html") => return Ok(Format::Html),
        Some(other) => {
            let mut e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("unknown format \"{other}\" (expected json, csv or html)"),
            );
            e.field = Some("format".into());
            return Err(e);
        }
        None => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The first of the three types the client names wins; anything else is JSON.
    let first = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .find_map(|t| match t {
            "text/csv" => Some(Format::Csv),
            "text/html" => Some(Format::Html),
            "application/json" => Some(Format::Json),
            _ => None,
        });
    Ok(first.unwrap_or(Format::Json))
}

/// The rakor's record: attendance, chat, raised hands, who was given the floor, and the
/// timeline (spotlight, presentations, recordings), times in WIB.
#[utoipa::path(get, path = "/api/v1/rakor/{id}/record", tag = "rakor", params(("id" = i64, Path), RecordQuery),
    responses(
        (status = 200, body = Record, description = "JSON by default"),
        (status = 200, content_type = "text/csv", body = String, description = "`?format=csv` or `Accept: text/csv`: UTF-8 with BOM, CRLF; columns Bagian, Waktu (WIB), Jenis, Lokasi, Nama, Kepada, Isi"),
        (status = 200, content_type = "text/html", body = String, description = "`?format=html` or `Accept: text/html`: a printable page"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn record(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
    Query(q): Query<RecordQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = super::parse_id("rakor", &id)?;
    let format = format_of(&q, &headers)?;
    let rec = state.session.meeting_record(id).await?;
    Ok(match format {
        Format::Json => Json(rec).into_response(),
        Format::Csv => {
            let body = record::to_csv(&rec).map_err(|e| ApiError::internal(e.to_string()))?;
            csv_response(&format!("notulen-rakor-{id}.csv"), body)
        }
        Format::Html => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                ),
            ],
            record::to_html(&rec),
        )
            .into_response(),
    })
}
