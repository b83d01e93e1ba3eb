//! Recording: start and stop a rakor's recording, list its recordings with download links,
//! download a file (Range requests work). See docs/api.md.

use super::rakor::load;
use super::{Actor, ApiError, ApiResult, ErrorBody, Op};
use crate::recording::{self, CompositeState, ManifestMark, ManifestParticipant};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rakor_sfu::RecordingError;
use serde::Serialize;
use utoipa::ToSchema;

/// Whether the room is being recorded now.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingNow {
    pub active: bool,
    /// RFC 3339 UTC, while active.
    pub started_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingFile {
    pub name: String,
    pub bytes: u64,
    /// Download link (needs an operator login; Range requests work).
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Composite {
    /// `running`, `done`, `failed` or `skipped`.
    pub state: String,
    /// 0.0 – 1.0.
    pub progress: f64,
    pub error: Option<String>,
    /// The composite's download link, once `done`.
    pub url: Option<String>,
}

/// One recording of the room.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingView {
    /// The recording's id (its directory name: the start time).
    pub id: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// `recording`, `stopped`, `failed` (`recording` after a crash: the files play up to it).
    pub state: String,
    pub error: Option<String>,
    /// Who was recorded, which track, which file, from when to when (ms from the start).
    pub participants: Vec<ManifestParticipant>,
    /// Spotlight, presentation and loudest-speaker changes (ms from the start): what the
    /// composite shows large.
    pub timeline: Vec<ManifestMark>,
    /// Every file of the recording, `manifest.json` included.
    pub files: Vec<RecordingFile>,
    /// Not made yet: null.
    pub composite: Option<Composite>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recordings {
    pub now: RecordingNow,
    pub recordings: Vec<RecordingView>,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn recording_error(e: RecordingError) -> ApiError {
    match e {
        RecordingError::Disabled => ApiError::new(
            StatusCode::CONFLICT,
            "recording_disabled",
            "recording is disabled on this server (recording.enabled)",
        ),
        RecordingError::NotLive(_) => ApiError::new(
            StatusCode::CONFLICT,
            "not_live",
            "nobody is in this rakor's room now",
        ),
        RecordingError::AlreadyRecording(_) => ApiError::new(
            StatusCode::CONFLICT,
            "already_recording",
            "this rakor is already being recorded",
        ),
        RecordingError::NotRecording(_) => ApiError::new(
            StatusCode::CONFLICT,
            "not_recording",
            "this rakor is not being recorded",
        ),
        e @ RecordingError::LowDisk { .. } => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", e.to_string())
        }
    }
}

async fn start_stop(
    state: &AppState,
    actor: &Actor,
    id: &str,
    start: bool,
) -> ApiResult<Json<RecordingNow>> {
    let r = load(state, id).await?;
    let res = state
        .sfu
        .recording(&r.room, start)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(recording_error)?;
    let what = if start {
        "recording_start"
    } else {
        "recording_stop"
    };
    tracing::info!(rakor = r.id, "{what} by an operator");
    state
        .session
        .audit_by(&actor.who, what, format!("rakor {}", r.id), String::new())
        .await;
    Ok(Json(RecordingNow {
        active: start,
        started_at: res.map(rfc3339),
    }))
}

/// Start recording the rakor's room (everyone in it sees `recording {active: true}`).
#[utoipa::path(post, path = "/api/v1/rakor/{id}/recording/start", tag = "recording", params(("id" = i64, Path)),
    responses((status = 200, body = RecordingNow), (status = 404, body = ErrorBody),
        (status = 409, description = "not_live, already_recording, recording_disabled", body = ErrorBody),
        (status = 507, description = "disk_full: less free space than recording.min_free", body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingNow>> {
    start_stop(&state, &actor, &id, true).await
}

/// Stop recording; the files are closed and the composite is made.
#[utoipa::path(post, path = "/api/v1/rakor/{id}/recording/stop", tag = "recording", params(("id" = i64, Path)),
    responses((status = 200, body = RecordingNow), (status = 404, body = ErrorBody),
        (status = 409, description = "not_recording", body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingNow>> {
    start_stop(&state, &actor, &id, false).await
}

/// The rakor's recordings, newest first, with download links and the composite's progress.
#[utoipa::path(get, path = "/api/v1/rakor/{id}/recordings", tag = "recording", params(("id" = i64, Path)),
    responses((status = 200, body = Recordings), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _op: Op,
    Path(id): Path<String>,
) -> ApiResult<Json<Recordings>> {
    let r = load(&state, &id).await?;
    let status = state
        .sfu
        .recording_status(&r.room)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let room_dir = recording::room_dir(&state.config, &r.room);
    let rid = r.id;
    let recordings = tokio::task::spawn_blocking(move || {
        recording::list(&room_dir)
            .into_iter()
            .map(|(rec, dir, m)| {
                let url = |name: &str| format!("/api/v1/rakor/{rid}/recordings/{rec}/{name}");
                let mut files: Vec<RecordingFile> = std::fs::read_dir(&dir)
                    .map(|rd| {
                        rd.filter_map(Result::ok)
                            .filter_map(|e| {
                                let name = e.file_name().to_str()?.to_owned();
                                let meta = e.metadata().ok()?;
                                (meta.is_file()
                                    && recording::plain_name(&name)
                                    && !name.ends_with(".tmp"))
                                .then(|| RecordingFile {
                                    url: url(&name),
                                    bytes: meta.len(),
                                    name,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                files.sort_by(|a, b| a.name.cmp(&b.name));
                let composite =
                    recording::read_composite(&dir).map(|c: CompositeState| Composite {
                        url: (c.state == "done").then(|| url(recording::COMPOSITE)),
                        state: c.state,
                        progress: c.progress,
                        error: c.error,
                    });
                RecordingView {
                    id: rec.clone(),
                    started_at: m.started_at,
                    ended_at: m.ended_at,
                    state: m.state,
                    error: m.error,
                    participants: m.participants,
                    timeline: m.timeline,
                    files,
                    composite,
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(Recordings {
        now: RecordingNow {
            active: status.is_some(),
            started_at: status.map(|s| rfc3339(s.started_at)),
        },
        recordings,
    }))
}

/// A `Range` header that no byte of the file satisfies (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A byte range of a file of `len` bytes from a `Range` header: `bytes=a-b`, `bytes=a-`,
/// `bytes=-n` (one range). `Err(Unsatisfiable)`: unsatisfiable; `Ok(None)`: no usable header (whole file).
pub fn parse_range(h: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(v) = h.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: the whole file
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 || len == 0 {
            return Err(Unsatisfiable);
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let end: u64 = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| Unsatisfiable)?
                .min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Err(Unsatisfiable);
        }
        (start, end)
    };
    Ok(Some(range))
}

/// Download one file of a recording (operators only). Range requests work.
#[utoipa::path(get, path = "/api/v1/rakor/{id}/recordings/{rec}/{file}", tag = "recording",
    params(("id" = i64, Path), ("rec" = String, Path), ("file" = String, Path)),
    responses((status = 200, description = "the file"), (status = 206, description = "a byte range"),
        (status = 404, body = ErrorBody), (status = 416, description = "range not satisfiable")))]
pub async fn download(
    State(state): State<AppState>,
    _op: Op,
    Path((id, rec, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let r = load(&state, &id).await?;
    if !recording::plain_name(&rec) || !recording::plain_name(&file) {
        return Err(ApiError::not_found("no such recording file"));
    }
    let path = recording::room_dir(&state.config, &r.room)
        .join(&rec)
        .join(&file);
    let mut f = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found("no such recording file"))?;
    let meta = f
        .metadata()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if !meta.is_file() {
        return Err(ApiError::not_found("no such recording file"));
    }
    let len = meta.len();
    let ctype = match file.rsplit('.').next() {
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("mp4") => "video/mp4",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let range = match parse_range(headers.get(header::RANGE), len) {
        Ok(r) => r,
        Err(Unsatisfiable) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response())
        }
    };
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let (status, start, count) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, len),
    };
    f.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(f.take(count)));
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_LENGTH, count)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        );
    if range.is_some() {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    resp.body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
        let v = HeaderValue::from_str(s).ok();
        parse_range(v.as_ref(), len)
    }

    #[test]
    fn ranges() {
        assert_eq!(r("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(r("bytes=900-", 1000), Ok(Some((900, 999))));
        assert_eq!(r("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(r("bytes=990-2000", 1000), Ok(Some((990, 999))));
        assert_eq!(r("bytes=1000-", 1000), Err(Unsatisfiable));
        assert_eq!(r("bytes=5-2", 1000), Err(Unsatisfiable));
        assert_eq!(r("bytes=x-2", 1000), Err(Unsatisfiable));
        assert_eq!(r("items=0-1", 1000), Ok(None));
        assert_eq!(r("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(parse_range(None, 10), Ok(None));
    }
}
