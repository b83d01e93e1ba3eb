//! Recordings on disk, seen from the server: the list of a room's recordings (from their
//! `manifest.json`, written by the media core's recorder thread), the composite made by ffmpeg
//! when a recording ends, and retention.
//!
//! Layout: `<recording.dir>/<room>/<start time>/` holds one WebM file per track and segment,
//! `manifest.json`, and after the recording `composite.mp4` with `composite.json` (its state
//! and progress, rewritten about once a second while ffmpeg runs).

use crate::config::RecordingConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, BufReader};

pub const MANIFEST: &str = "manifest.json";
pub const COMPOSITE: &str = "composite.mp4";
pub const COMPOSITE_STATE: &str = "composite.json";

/// The manifest as the server reads it (a subset of what the recorder writes).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    pub room: String,
    pub started_at: String,
    pub started_at_ms: i64,
    pub ended_at: Option<String>,
    /// `recording`, `stopped` or `failed` (a `recording` whose server died stays so).
    pub state: String,
    pub error: Option<String>,
    pub participants: Vec<ManifestParticipant>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestParticipant {
    pub participant_id: String,
    pub identity: String,
    pub name: String,
    pub tracks: Vec<ManifestTrack>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestTrack {
    pub track_id: String,
    /// `audio` or `video`.
    pub kind: String,
    pub codec: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestFile {
    pub file: String,
    /// Milliseconds from the recording's start to the file's first and last frame.
    pub start_ms: i64,
    pub end_ms: i64,
    pub frames: u64,
    pub bytes: u64,
    #[serde(default)]
    pub width: Option<u16>,
    #[serde(default)]
    pub height: Option<u16>,
}

/// The composite's state (`composite.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CompositeState {
    /// `running`, `done`, `failed` or `skipped` (nothing to compose).
    pub state: String,
    /// 0.0 – 1.0.
    pub progress: f64,
    #[serde(default)]
    pub error: Option<String>,
}

pub fn read_manifest(dir: &Path) -> Option<Manifest> {
    let bytes = std::fs::read(dir.join(MANIFEST)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn read_composite(dir: &Path) -> Option<CompositeState> {
    let bytes = std::fs::read(dir.join(COMPOSITE_STATE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_composite(dir: &Path, s: &CompositeState) {
    let Ok(json) = serde_json::to_vec(s) else {
        return;
    };
    let tmp = dir.join("composite.json.tmp");
    if std::fs::write(&tmp, json).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(COMPOSITE_STATE));
    }
}

/// The directory of a room's recordings.
pub fn room_dir(cfg: &crate::config::Config, room: &str) -> PathBuf {
    cfg.recording_dir().join(rakor_sfu::record::safe_name(room))
}

/// A recording id (its directory name) or a file name from a URL: one plain path component.
pub fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The recordings of a room, newest first: (id, directory, manifest).
pub fn list(room_dir: &Path) -> Vec<(String, PathBuf, Manifest)> {
    let Ok(rd) = std::fs::read_dir(room_dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf, Manifest)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_owned();
            let dir = e.path();
            let m = read_manifest(&dir)?;
            Some((id, dir, m))
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.2.started_at_ms));
    out
}

/// Consume the media core's room events: recordings that finished get their composite; the
/// rest goes on to the attendance register (returned receiver).
pub fn split_events(
    cfg: RecordingConfig,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<rakor_sfu::RoomEvent>,
) -> tokio::sync::mpsc::UnboundedReceiver<rakor_sfu::RoomEvent> {
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                rakor_sfu::RoomEvent::RecordingFinished { dir, .. } => {
                    if cfg.composite {
                        let ffmpeg = cfg.ffmpeg.clone();
                        tokio::spawn(async move {
                            composite(&ffmpeg, &dir).await;
                        });
                    }
                }
                other => {
                    let _ = tx.send(other);
                }
            }
        }
    });
    out
}

/// The ffmpeg arguments for the composite of `m` (in `dir`), and its duration in seconds.
/// Layout: a grid of every participant's video on a 1280×720 canvas (a participant's later
/// segments take its cell), each shown from its offset in the manifest; all audio delayed
/// to its offset and mixed. `None`: nothing to compose.
pub fn composite_args(m: &Manifest, dir: &Path) -> Option<(Vec<String>, f64)> {
    let end_ms = m
        .participants
        .iter()
        .flat_map(|p| &p.tracks)
        .flat_map(|t| &t.files)
        .map(|f| f.end_ms)
        .max()?;
    let dur = (end_ms.max(1) as f64) / 1000.0;
    let mut args: Vec<String> = vec!["-y".into(), "-nostdin".into(), "-v".into(), "error".into()];
    let mut inputs = 0usize;
    let mut filters: Vec<String> = Vec::new();
    // Participants with video get a cell each.
    let with_video: Vec<&ManifestParticipant> = m
        .participants
        .iter()
        .filter(|p| {
            p.tracks
                .iter()
                .any(|t| t.kind == "video" && !t.files.is_empty())
        })
        .collect();
    let n = with_video.len().max(1);
    let cols = (1..=n).find(|c| c * c >= n).unwrap_or(1);
    let rows = n.div_ceil(cols);
    let (cw, ch) = ((1280 / cols) & !1, (720 / rows) & !1);
    filters.push(format!("color=c=black:s=1280x720:r=25:d={dur:.3}[base0]"));
    let mut base = 0usize;
    for (cell, p) in with_video.iter().enumerate() {
        let (x, y) = ((cell % cols) * cw, (cell / cols) * ch);
        for f in p
            .tracks
            .iter()
            .filter(|t| t.kind == "video")
            .flat_map(|t| &t.files)
        {
            args.extend(["-i".into(), dir.join(&f.file).display().to_string()]);
            let start = (f.start_ms.max(0) as f64) / 1000.0;
            filters.push(format!(
                "[{inputs}:v]setpts=PTS-STARTPTS+{start:.3}/TB,scale={cw}:{ch}:force_original_aspect_ratio=decrease,pad={cw}:{ch}:(ow-iw)/2:(oh-ih)/2[v{inputs}]"
            ));
            filters.push(format!(
                "[base{base}][v{inputs}]overlay=x={x}:y={y}:eof_action=pass:repeatlast=0[base{}]",
                base + 1
            ));
            base += 1;
            inputs += 1;
        }
    }
    let mut audio = Vec::new();
    for f in m
        .participants
        .iter()
        .flat_map(|p| &p.tracks)
        .filter(|t| t.kind == "audio")
        .flat_map(|t| &t.files)
    {
        args.extend(["-i".into(), dir.join(&f.file).display().to_string()]);
        let delay = f.start_ms.max(0);
        filters.push(format!(
            "[{inputs}:a]aresample=48000,adelay={delay}:all=1[a{inputs}]"
        ));
        audio.push(format!("[a{inputs}]"));
        inputs += 1;
    }
    filters.push(format!("[base{base}]format=yuv420p[vout]"));
    if !audio.is_empty() {
        filters.push(format!(
            "{}amix=inputs={}:duration=longest:dropout_transition=0:normalize=0,apad[aout]",
            audio.concat(),
            audio.len()
        ));
    }
    args.extend(["-filter_complex".into(), filters.join(";")]);
    args.extend(["-map".into(), "[vout]".into()]);
    if !audio.is_empty() {
        args.extend(["-map".into(), "[aout]".into()]);
        args.extend(["-c:a".into(), "aac".into(), "-b:a".into(), "128k".into()]);
    }
    args.extend([
        "-c:v".into(),
        "libx264".into(),
        "-preset".into(),
        "veryfast".into(),
        "-crf".into(),
        "26".into(),
        "-threads".into(),
        "2".into(),
        "-t".into(),
        format!("{dur:.3}"),
        "-movflags".into(),
        "+faststart".into(),
        "-progress".into(),
        "pipe:1".into(),
        "-nostats".into(),
        dir.join(COMPOSITE).display().to_string(),
    ]);
    Some((args, dur))
}

/// Make `dir`'s composite with ffmpeg (a child process), recording progress in
/// `composite.json`.
pub async fn composite(ffmpeg: &str, dir: &Path) {
    let Some(m) = read_manifest(dir) else {
        tracing::warn!(dir = %dir.display(), "composite: no manifest");
        return;
    };
    let Some((args, dur)) = composite_args(&m, dir) else {
        write_composite(
            dir,
            &CompositeState {
                state: "skipped".into(),
                progress: 0.0,
                error: Some("nothing was recorded".into()),
            },
        );
        return;
    };
    let mut state = CompositeState {
        state: "running".into(),
        progress: 0.0,
        error: None,
    };
    write_composite(dir, &state);
    tracing::info!(dir = %dir.display(), "composite: ffmpeg started");
    let child = tokio::process::Command::new(ffmpeg)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            state.state = "failed".into();
            state.error = Some(format!("cannot run {ffmpeg}: {e}"));
            write_composite(dir, &state);
            tracing::error!("composite: cannot run {ffmpeg}: {e}");
            return;
        }
    };
    let stderr = child.stderr.take();
    let err_task = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut s).await;
        }
        s
    });
    if let Some(out) = child.stdout.take() {
        let mut lines = BufReader::new(out).lines();
        let mut last_write = std::time::Instant::now();
        while let Ok(Some(line)) = lines.next_line().await {
            // `out_time_us=` (and the misnamed `out_time_ms=`) are microseconds.
            if let Some(v) = line
                .strip_prefix("out_time_us=")
                .and_then(|v| v.parse::<f64>().ok())
            {
                state.progress = (v / 1e6 / dur).clamp(0.0, 0.99);
                if last_write.elapsed() >= Duration::from_millis(500) {
                    write_composite(dir, &state);
                    last_write = std::time::Instant::now();
                }
            }
        }
    }
    let status = child.wait().await;
    let errors = err_task.await.unwrap_or_default();
    match status {
        Ok(s) if s.success() => {
            state.state = "done".into();
            state.progress = 1.0;
            tracing::info!(dir = %dir.display(), "composite done");
        }
        Ok(s) => {
            state.state = "failed".into();
            let tail: String = errors
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            state.error = Some(format!("ffmpeg exited with {s}: {tail}"));
            tracing::error!(dir = %dir.display(), "composite failed: {s}: {tail}");
        }
        Err(e) => {
            state.state = "failed".into();
            state.error = Some(e.to_string());
        }
    }
    write_composite(dir, &state);
}

/// Delete recordings whose manifest was last written more than `retention` ago; then again
/// every day. `retention` zero: keep everything.
pub fn spawn_retention(root: PathBuf, retention: Duration) {
    if retention.is_zero() {
        return;
    }
    tokio::spawn(async move {
        loop {
            let root2 = root.clone();
            let removed = tokio::task::spawn_blocking(move || sweep(&root2, retention))
                .await
                .unwrap_or(0);
            if removed > 0 {
                tracing::info!(removed, "recording retention: old recordings deleted");
            }
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        }
    });
}

/// One retention pass over `<root>/<room>/<recording>/`; returns how many were deleted.
pub fn sweep(root: &Path, retention: Duration) -> usize {
    let now = SystemTime::now();
    let mut removed = 0;
    let Ok(rooms) = std::fs::read_dir(root) else {
        return 0;
    };
    for room in rooms.filter_map(Result::ok) {
        let Ok(recs) = std::fs::read_dir(room.path()) else {
            continue;
        };
        for rec in recs.filter_map(Result::ok) {
            let dir = rec.path();
            let Ok(meta) = std::fs::metadata(dir.join(MANIFEST)) else {
                continue; // not a recording
            };
            let old = meta
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > retention);
            if old {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(dir = %dir.display(), "retention: {e}"),
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, start: i64, end: i64) -> ManifestFile {
        ManifestFile {
            file: name.into(),
            start_ms: start,
            end_ms: end,
            frames: 1,
            bytes: 1,
            width: None,
            height: None,
        }
    }

    fn track(kind: &str, files: Vec<ManifestFile>) -> ManifestTrack {
        ManifestTrack {
            track_id: "TR_x".into(),
            kind: kind.into(),
            codec: "x".into(),
            files,
        }
    }

    #[test]
    fn composite_uses_offsets_and_every_file() {
        let m = Manifest {
            room: "r".into(),
            started_at: String::new(),
            started_at_ms: 0,
            ended_at: None,
            state: "stopped".into(),
            error: None,
            participants: vec![
                ManifestParticipant {
                    participant_id: "a".into(),
                    identity: "a".into(),
                    name: "A".into(),
                    tracks: vec![
                        track("audio", vec![file("1.webm", 250, 15000)]),
                        track(
                            "video",
                            vec![file("2.webm", 300, 8000), file("3.webm", 8000, 15200)],
                        ),
                    ],
                },
                ManifestParticipant {
                    participant_id: "b".into(),
                    identity: "b".into(),
                    name: "B".into(),
                    tracks: vec![track("audio", vec![file("4.webm", 1000, 14000)])],
                },
            ],
        };
        let (args, dur) = composite_args(&m, Path::new("/r")).unwrap_or_default();
        assert!((dur - 15.2).abs() < 1e-9);
        assert_eq!(args.iter().filter(|a| *a == "-i").count(), 4);
        let fc = args
            .iter()
            .skip_while(|a| *a != "-filter_complex")
            .nth(1)
            .cloned()
            .unwrap_or_default();
        assert!(fc.contains("adelay=250:all=1"), "{fc}");
        assert!(fc.contains("adelay=1000:all=1"), "{fc}");
        assert!(fc.contains("PTS-STARTPTS+8.000/TB"), "{fc}");
        assert!(fc.contains("amix=inputs=2"), "{fc}");
        let empty = Manifest {
            participants: vec![],
            ..m
        };
        assert!(composite_args(&empty, Path::new("/r")).is_none());
    }

    #[test]
    fn plain_names_only() {
        assert!(plain_name("2026-12-03T14-32-49.123Z"));
        assert!(plain_name("001-site-1-audio.webm"));
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "x y"] {
            assert!(!plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn retention_deletes_old_recordings_only() -> std::io::Result<()> {
        let root = std::env::temp_dir().join(format!("rakor-ret-{}", std::process::id()));
        let old = root.join("room").join("old");
        let new = root.join("room").join("new");
        std::fs::create_dir_all(&old)?;
        std::fs::create_dir_all(&new)?;
        std::fs::write(old.join(MANIFEST), "{}")?;
        std::fs::write(new.join(MANIFEST), "{}")?;
        let f = std::fs::File::options()
            .write(true)
            .open(old.join(MANIFEST))?;
        f.set_modified(SystemTime::now() - Duration::from_secs(3 * 86400))?;
        assert_eq!(sweep(&root, Duration::from_secs(2 * 86400)), 1);
        assert!(!old.exists());
        assert!(new.exists());
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }
}
