//! Recording: per-participant WebM (Opus, VP8) and Matroska (H.264) files written off the
//! media thread.
//!
//! The media core hands each inbound RTP packet of a recorded track to the recorder thread
//! over a bounded channel ([`RecorderTap::packet`]: `try_send` of a small struct whose payload
//! is the packet's shared `Bytes`, a refcount; a full channel drops the packet and counts it,
//! the media thread never waits). Track and room changes go on a second, unbounded channel
//! (rare). The recorder thread (`recorder.rs`) reorders (`depack::JitterBuffer`), assembles
//! frames (`depack`, `h264`), writes one WebM/Matroska file per track (`mkv.rs`) and the room's `manifest.json`.

pub mod depack;
pub mod h264;
pub mod mkv;
pub(crate) mod recorder;

use crate::router::Codec;
use bytes::Bytes;
use rakor_proto::{ParticipantId, TrackId, TrackKind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub(crate) use recorder::spawn;

/// Recording settings of the media worker.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// Where recordings go: `<dir>/<room>/<start time>/`.
    pub dir: PathBuf,
    /// Record every room from its first participant until it ends.
    pub auto: bool,
    /// A recording is refused when the disk has less free space than this, and a running one
    /// stops cleanly when free space falls below half of it.
    pub min_free_bytes: u64,
    /// Packets the hand-off channel to the recorder thread holds; more are dropped and counted.
    pub queue: usize,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("recordings"),
            auto: false,
            min_free_bytes: 1 << 30,
            queue: 4096,
        }
    }
}

/// One packet handed to the recorder (no allocation: the payload is shared).
#[derive(Debug)]
pub(crate) struct RecPacket {
    pub rec: u64,
    pub arrival: Instant,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// Rare changes, in order, on the unbounded control channel.
#[derive(Debug)]
pub(crate) enum RecControl {
    Start {
        room: String,
        started_at: SystemTime,
    },
    Track {
        room: String,
        rec: u64,
        participant: ParticipantId,
        identity: String,
        name: String,
        track: TrackId,
        kind: TrackKind,
        codec: Codec,
    },
    TrackEnd {
        rec: u64,
    },
    Stop {
        room: String,
    },
    /// What the composite shows large changed (see [`MarkKind`]); kept in the manifest's
    /// `timeline`.
    Mark {
        room: String,
        at: SystemTime,
        kind: MarkKind,
        /// The spotlighted / presenting / loudest participant; none: cleared.
        participant: Option<ParticipantId>,
        /// The presentation's screen track.
        track: Option<TrackId>,
    },
}

/// A timeline entry of a recording: what the composite's large tile follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    Spotlight,
    Presentation,
    /// The loudest speaking site (the first of the room's `speakers.speaking`).
    Speaker,
}

/// What the recorder thread tells the media core.
#[derive(Debug)]
pub(crate) enum RecFeedback {
    /// A recorded video track lost packets (or the recording just started): ask for a keyframe.
    Keyframe { rec: u64 },
    /// The recording of `room` stopped on its own (disk full, write error).
    Failed { room: String, reason: String },
}

/// Counters shared between the recorder thread, the core and metrics.
#[derive(Debug, Default)]
pub struct RecorderShared {
    /// Free bytes on the recordings' file system, refreshed by the recorder thread each second.
    pub free_bytes: AtomicU64,
    /// Packets handed off / dropped because the channel was full.
    pub handed: AtomicU64,
    pub dropped: AtomicU64,
    /// Frames written, and recorder-thread CPU time (µs, from `getrusage(RUSAGE_THREAD)`).
    pub frames_written: AtomicU64,
    pub thread_cpu_us: AtomicU64,
}

/// The media core's side of the recorder: the two channels and the shared counters.
pub(crate) struct RecorderTap {
    packets: SyncSender<RecPacket>,
    control: Sender<(u64, RecControl)>,
    pub shared: Arc<RecorderShared>,
    pub settings: RecordingSettings,
    handed: u64,
    dropped: u64,
}

impl RecorderTap {
    pub fn new(
        packets: SyncSender<RecPacket>,
        control: Sender<(u64, RecControl)>,
        shared: Arc<RecorderShared>,
        settings: RecordingSettings,
    ) -> Self {
        Self {
            packets,
            control,
            shared,
            settings,
            handed: 0,
            dropped: 0,
        }
    }

    /// The per-packet hand-off: never blocks; a full (or closed) channel drops and counts.
    #[inline]
    pub fn packet(&mut self, p: RecPacket) {
        match self.packets.try_send(p) {
            Ok(()) => self.handed += 1,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped += 1,
        }
        if (self.handed + self.dropped).is_multiple_of(256) {
            self.publish_counters();
        }
    }

    pub fn publish_counters(&self) {
        self.shared.handed.store(self.handed, Ordering::Relaxed);
        self.shared.dropped.store(self.dropped, Ordering::Relaxed);
    }

    /// A control message, applied by the recorder after the packets handed off before it
    /// (the two channels are ordered by the count of packets handed off).
    pub fn control(&self, c: RecControl) {
        let _ = self.control.send((self.handed, c));
    }

    /// Enough free disk space to start a recording (the recorder thread's last measurement).
    pub fn disk_ok(&self) -> bool {
        self.shared.free_bytes.load(Ordering::Relaxed) >= self.settings.min_free_bytes
    }

    pub fn free_bytes(&self) -> u64 {
        self.shared.free_bytes.load(Ordering::Relaxed)
    }
}

/// Free bytes (for unprivileged users) on the file system holding `path`.
pub fn free_space(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path; `st` is a plain C struct that statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // u32 on some targets
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// Whether the recorder should check the disk again (once a second).
pub(crate) const DISK_CHECK: Duration = Duration::from_secs(1);

/// A file-system-safe form of a room name or identity: ASCII letters, digits, `-`, `_`, `.`
/// (not leading), at most 64 characters; anything else becomes `_`.
pub fn safe_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("rakor-12"), "rakor-12");
        assert_eq!(safe_name("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name("Kab. Sleman/1"), "Kab._Sleman_1");
    }

    #[test]
    fn tap_drops_and_counts_when_full() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(2);
        let (ctl, _crx) = std::sync::mpsc::channel();
        let mut tap = RecorderTap::new(
            tx,
            ctl,
            Arc::new(RecorderShared::default()),
            RecordingSettings::default(),
        );
        for seq in 0..5 {
            tap.packet(RecPacket {
                rec: 1,
                arrival: Instant::now(),
                seq,
                ts: 0,
                marker: false,
                payload: Bytes::new(),
            });
        }
        assert_eq!((tap.handed, tap.dropped), (2, 3));
    }

    #[test]
    fn free_space_of_tmp() -> std::io::Result<()> {
        assert!(free_space(&std::env::temp_dir())? > 0);
        assert!(free_space(std::path::Path::new("/nonexistent/x")).is_err());
        Ok(())
    }
}
