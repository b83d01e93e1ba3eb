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
    /// Spotlight, presentation and loudest-speaker changes (older manifests: none).
    #[serde(default)]
    pub timeline: Vec<ManifestMark>,
}

/// One change of what the composite shows large.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestMark {
    /// Milliseconds from the recording's start.
    pub at_ms: i64,
    /// `spotlight`, `presentation` or `speaker`.
    pub kind: String,
    /// The spotlighted / presenting / loudest participant; none: cleared, stopped, silence.
    pub participant_id: Option<String>,
    /// The presentation's screen track.
    #[serde(default)]
    pub track_id: Option<String>,
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

/// A loudest-speaker change is shown large only if it lasts this long (hysteresis: short
/// interjections do not make the large tile flicker).
pub const SPEAKER_HOLD_MS: i64 = 2000;

/// What the large tile shows during a segment of the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Large {
    /// A presentation: this screen track.
    Track(String),
    /// A spotlighted or speaking participant: its camera.
    Camera(String),
}

/// The large tile over time, from the manifest's timeline: the presentation if one runs,
/// else the spotlighted participant, else the last loudest speaker who held it for
/// [`SPEAKER_HOLD_MS`] (silence keeps the last one). `(from_ms, to_ms, what)`, in order, not
/// overlapping, within `0..end_ms`.
pub fn large_segments(m: &Manifest, end_ms: i64) -> Vec<(i64, i64, Large)> {
    let mut marks: Vec<&ManifestMark> = m.timeline.iter().collect();
    marks.sort_by_key(|k| k.at_ms);
    // Speaker marks that held long enough (a `None` mark ends a holding period but keeps the
    // speaker shown).
    let speakers: Vec<&ManifestMark> = marks
        .iter()
        .copied()
        .filter(|k| k.kind == "speaker")
        .collect();
    let mut stable: Vec<(i64, String)> = Vec::new();
    for (i, k) in speakers.iter().enumerate() {
        let Some(p) = &k.participant_id else { continue };
        let next = speakers.get(i + 1).map_or(end_ms, |n| n.at_ms);
        let held = next - k.at_ms >= SPEAKER_HOLD_MS || next >= end_ms;
        if held && stable.last().is_none_or(|(_, q)| q != p) {
            stable.push((k.at_ms.max(0), p.clone()));
        }
    }
    // Change points: every mark and every stable speaker change.
    let mut points: Vec<i64> = marks.iter().map(|k| k.at_ms.clamp(0, end_ms)).collect();
    points.extend(stable.iter().map(|(t, _)| *t));
    points.push(0);
    points.sort_unstable();
    points.dedup();
    let at = |t: i64| -> Option<Large> {
        let last = |kind: &str| {
            marks
                .iter()
                .rfind(|k| k.kind == kind && k.at_ms.max(0) <= t)
        };
        if let Some(k) = last("presentation") {
            if let (Some(_), Some(tr)) = (&k.participant_id, &k.track_id) {
                return Some(Large::Track(tr.clone()));
            }
        }
        if let Some(p) = last("spotlight").and_then(|k| k.participant_id.clone()) {
            return Some(Large::Camera(p));
        }
        stable
            .iter()
            .rfind(|(s, _)| *s <= t)
            .map(|(_, p)| Large::Camera(p.clone()))
    };
    let mut out: Vec<(i64, i64, Large)> = Vec::new();
    for (i, &t) in points.iter().enumerate() {
        if t >= end_ms {
            break;
        }
        let to = points.get(i + 1).copied().unwrap_or(end_ms).min(end_ms);
        let Some(l) = at(t) else { continue };
        match out.last_mut() {
            Some(last) if last.2 == l && last.1 == t => last.1 = to,
            _ => out.push((t, to, l)),
        }
    }
    out
}

/// The ffmpeg arguments for the composite of `m` (in `dir`), and its duration in seconds.
///
/// Layout (1280×720): while the timeline names something to show large (a presentation, the
/// spotlight, the loudest speaker — [`large_segments`]), it fills the left 960×720, and every
/// participant's camera is a small tile of the wall in the right 320-pixel column; with
/// nothing to show large the whole recording is a grid of every camera. Each video file is
/// shown from its offset in the manifest (a participant's later segments take its tile) and
/// decoded once (`split` feeds its tile and the large view, which is switched with
/// `overlay`'s `enable=` over the file's large segments). All audio is delayed to its
/// offset and mixed. `None`: nothing to compose.
pub fn composite_args(m: &Manifest, dir: &Path) -> Option<(Vec<String>, f64)> {
    let end_ms = m
        .participants
        .iter()
        .flat_map(|p| &p.tracks)
        .flat_map(|t| &t.files)
        .map(|f| f.end_ms)
        .max()?;
    let dur = (end_ms.max(1) as f64) / 1000.0;
    let segments = large_segments(m, end_ms.max(1));
    let presentation_tracks: Vec<&str> = m
        .timeline
        .iter()
        .filter(|k| k.kind == "presentation")
        .filter_map(|k| k.track_id.as_deref())
        .collect();
    let is_camera = |t: &ManifestTrack| {
        t.kind == "video"
            && !t.files.is_empty()
            && !presentation_tracks.contains(&t.track_id.as_str())
    };
    let mut args: Vec<String> = vec!["-y".into(), "-nostdin".into(), "-v".into(), "error".into()];
    let mut inputs = 0usize;
    let mut filters: Vec<String> = Vec::new();
    // Participants with a camera get a tile each.
    let with_video: Vec<&ManifestParticipant> = m
        .participants
        .iter()
        .filter(|p| p.tracks.iter().any(is_camera))
        .collect();
    let n = with_video.len().max(1);
    let (area_w, area_x) = if segments.is_empty() {
        (1280, 0)
    } else {
        (320, 960)
    };
    let (cols, cw, ch) = if segments.is_empty() {
        let cols = (1..=n).find(|c| c * c >= n).unwrap_or(1);
        let rows = n.div_ceil(cols);
        (cols, (1280 / cols) & !1, (720 / rows) & !1)
    } else {
        // The narrowest column count whose 4:3 tiles fit the 320×720 column.
        let cols = (1..=n)
            .find(|c| {
                let h = (area_w / c) * 3 / 4;
                h > 0 && c * (720 / h) >= n
            })
            .unwrap_or(n);
        let cw = (area_w / cols) & !1;
        (cols, cw, (cw * 3 / 4) & !1)
    };
    filters.push(format!("color=c=black:s=1280x720:r=25:d={dur:.3}[base0]"));
    let mut base = 0usize;
    let mut video_files: Vec<(Option<usize>, &ManifestTrack, &ManifestFile, &str)> = Vec::new();
    for p in &m.participants {
        let cell = with_video
            .iter()
            .position(|q| q.participant_id == p.participant_id);
        for t in p.tracks.iter().filter(|t| t.kind == "video") {
            for f in &t.files {
                let cell = if is_camera(t) { cell } else { None };
                video_files.push((cell, t, f, &p.participant_id));
            }
        }
    }
    for (cell, t, f, pid) in video_files {
        // The file's large intervals (seconds on the composite's timeline).
        let large: Vec<(f64, f64)> = segments
            .iter()
            .filter(|(_, _, l)| match l {
                Large::Track(tr) => *tr == t.track_id,
                Large::Camera(p) => p == pid && cell.is_some(),
            })
            .filter_map(|(a, b, _)| {
                let (a, b) = ((*a).max(f.start_ms), (*b).min(f.end_ms));
                (b > a).then(|| (a as f64 / 1000.0, b as f64 / 1000.0))
            })
            .collect();
        if cell.is_none() && large.is_empty() {
            continue; // a presentation never shown large (not in the wall either)
        }
        args.extend(["-i".into(), dir.join(&f.file).display().to_string()]);
        let start = (f.start_ms.max(0) as f64) / 1000.0;
        let src = format!("s{inputs}");
        filters.push(format!(
            "[{inputs}:v]setpts=PTS-STARTPTS+{start:.3}/TB[{src}]"
        ));
        let (wall_in, large_in) = match (cell.is_some(), !large.is_empty()) {
            (true, true) => {
                filters.push(format!("[{src}]split=2[w{inputs}][l{inputs}]"));
                (Some(format!("w{inputs}")), Some(format!("l{inputs}")))
            }
            (true, false) => (Some(src), None),
            (false, _) => (None, Some(src)),
        };
        if let (Some(w), Some(cell)) = (wall_in, cell) {
            let (x, y) = (area_x + (cell % cols) * cw, (cell / cols) * ch);
            filters.push(format!(
                "[{w}]scale={cw}:{ch}:force_original_aspect_ratio=decrease,pad={cw}:{ch}:(ow-iw)/2:(oh-ih)/2[v{inputs}]"
            ));
            filters.push(format!(
                "[base{base}][v{inputs}]overlay=x={x}:y={y}:eof_action=pass:repeatlast=0[base{}]",
                base + 1
            ));
            base += 1;
        }
        if let Some(l) = large_in {
            let enable: Vec<String> = large
                .iter()
                .map(|(a, b)| format!("gte(t,{a:.3})*lt(t,{b:.3})"))
                .collect();
            filters.push(format!(
                "[{l}]scale=960:720:force_original_aspect_ratio=decrease,pad=960:720:(ow-iw)/2:(oh-ih)/2[L{inputs}]"
            ));
            filters.push(format!(
                "[base{base}][L{inputs}]overlay=x=0:y=0:eof_action=pass:repeatlast=0:enable='{}'[base{}]",
                enable.join("+"),
                base + 1
            ));
            base += 1;
        }
        inputs += 1;
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
#[allow(clippy::panic)]
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
            timeline: vec![],
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

    fn mark(at_ms: i64, kind: &str, who: Option<&str>, track: Option<&str>) -> ManifestMark {
        ManifestMark {
            at_ms,
            kind: kind.into(),
            participant_id: who.map(Into::into),
            track_id: track.map(Into::into),
        }
    }

    fn manifest_with(
        timeline: Vec<ManifestMark>,
        participants: Vec<ManifestParticipant>,
    ) -> Manifest {
        Manifest {
            room: "r".into(),
            started_at: String::new(),
            started_at_ms: 0,
            ended_at: None,
            state: "stopped".into(),
            error: None,
            participants,
            timeline,
        }
    }

    /// The presentation beats the spotlight, the spotlight beats the speaker; a speaker who
    /// speaks for less than the hold time does not take the large tile; silence keeps it.
    #[test]
    fn large_tile_follows_presentation_spotlight_and_steady_speakers() {
        let m = manifest_with(
            vec![
                mark(0, "speaker", Some("a"), None),
                mark(3000, "speaker", Some("b"), None), // 500 ms only: ignored
                mark(3500, "speaker", Some("a"), None),
                mark(5000, "speaker", None, None), // silence: a stays
                mark(8000, "speaker", Some("c"), None), // holds: c from 8 s
                mark(12000, "spotlight", Some("b"), None),
                mark(14000, "presentation", Some("c"), Some("TR_screen")),
                mark(16000, "presentation", None, None),
                mark(18000, "spotlight", None, None),
            ],
            vec![],
        );
        let seg = large_segments(&m, 20000);
        let cam = |p: &str| Large::Camera(p.into());
        assert_eq!(
            seg,
            vec![
                (0, 8000, cam("a")),
                (8000, 12000, cam("c")),
                (12000, 14000, cam("b")),
                (14000, 16000, Large::Track("TR_screen".into())),
                (16000, 18000, cam("b")),
                (18000, 20000, cam("c")),
            ]
        );
        assert!(large_segments(&manifest_with(vec![], vec![]), 5000).is_empty());
    }

    fn ffmpeg_ok() -> bool {
        std::process::Command::new("ffmpeg")
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `ffmpeg` makes a test file from a lavfi source.
    fn lavfi(dir: &Path, name: &str, src: &str, codec: &[&str]) {
        let out = std::process::Command::new("ffmpeg")
            .args(["-y", "-nostdin", "-v", "error", "-f", "lavfi", "-i", src])
            .args(codec)
            .arg(dir.join(name))
            .output()
            .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The RGB colour of pixel (x, y) of `file` at `t` seconds.
    fn pixel(file: &Path, t: f64, x: u32, y: u32) -> [u8; 3] {
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-ss", &format!("{t}"), "-i"])
            .arg(file)
            .args([
                "-frames:v",
                "1",
                "-vf",
                &format!("crop=2:2:{x}:{y},scale=1:1"),
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ])
            .output()
            .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        [out.stdout[0], out.stdout[1], out.stdout[2]]
    }

    /// The real composite with ffmpeg: site A is red (VP8), site B blue (H.264 in Matroska),
    /// both with a tone; A is
    /// spotlighted for the first 3 s, B after. The large tile (left) shows red then blue, the
    /// wall (right column) shows both all along, and the file has audio and video of the
    /// recording's length. Skips without ffmpeg.
    #[tokio::test]
    async fn composite_shows_the_spotlight_large_and_the_wall_small() {
        if !ffmpeg_ok() {
            eprintln!("SKIP: no ffmpeg (Debian package ffmpeg)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("rakor-comp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let vp8 = ["-c:v", "libvpx", "-b:v", "200k", "-deadline", "realtime"];
        let opus = ["-c:a", "libopus"];
        lavfi(&dir, "a-video.webm", "color=c=red:s=320x240:r=15:d=6", &vp8);
        // Site B sends H.264: the recorder writes it as Matroska (`.mkv`, V_MPEG4/ISO/AVC).
        let h264 = [
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-bf",
            "0",
        ];
        lavfi(
            &dir,
            "b-video.mkv",
            "color=c=blue:s=320x240:r=15:d=6",
            &h264,
        );
        lavfi(&dir, "a-audio.webm", "sine=f=440:d=6", &opus);
        lavfi(&dir, "b-audio.webm", "sine=f=660:d=6", &opus);
        let site = |id: &str| ManifestParticipant {
            participant_id: format!("PA_{id}"),
            identity: id.into(),
            name: id.into(),
            tracks: vec![
                track("audio", vec![file(&format!("{id}-audio.webm"), 0, 6000)]),
                ManifestTrack {
                    track_id: format!("TR_{id}"),
                    ..track(
                        "video",
                        vec![file(
                            &format!("{id}-video.{}", if id == "b" { "mkv" } else { "webm" }),
                            0,
                            6000,
                        )],
                    )
                },
            ],
        };
        let m = manifest_with(
            vec![
                mark(0, "spotlight", Some("PA_a"), None),
                mark(3000, "spotlight", Some("PA_b"), None),
            ],
            vec![site("a"), site("b")],
        );
        std::fs::write(
            dir.join(MANIFEST),
            serde_json::to_vec(&m).unwrap_or_default(),
        )
        .unwrap_or_default();
        composite("ffmpeg", &dir).await;
        let state = read_composite(&dir);
        assert_eq!(
            state.as_ref().map(|s| s.state.as_str()),
            Some("done"),
            "{state:?}"
        );
        let out = dir.join(COMPOSITE);
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_type:format=duration",
                "-of",
                "json",
            ])
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("ffprobe: {e}"));
        let v: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap_or_default();
        let kinds: Vec<&str> = v["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["codec_type"].as_str())
            .collect();
        assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "{v}");
        let d: f64 = v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0);
        assert!((d - 6.0).abs() <= 0.5, "composite {d} s");
        let red = |c: [u8; 3]| c[0] > 150 && c[1] < 80 && c[2] < 80;
        let blue = |c: [u8; 3]| c[2] > 150 && c[0] < 80 && c[1] < 80;
        // Large tile: the middle of the left 960×720.
        let l1 = pixel(&out, 1.5, 480, 360);
        let l2 = pixel(&out, 4.5, 480, 360);
        assert!(red(l1), "large tile at 1.5 s: {l1:?}");
        assert!(blue(l2), "large tile at 4.5 s: {l2:?}");
        // The wall: A's tile then B's in the right column, at both times.
        for t in [1.5, 4.5] {
            let a = pixel(&out, t, 1120, 120);
            let b = pixel(&out, t, 1120, 360);
            assert!(red(a) && blue(b), "wall at {t} s: {a:?} {b:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap_or_default();
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
