//! A minimal WebM / Matroska writer for one live track: EBML header, a Segment of unknown size,
//! Info, Tracks, then Clusters of unknown size holding SimpleBlocks, written as frames arrive.
//!
//! Why our own: the file must stay readable when the process is killed (`kill -9`) at any
//! point, so nothing may depend on a size or index written at the end. Live WebM (the layout
//! Chrome's MediaRecorder writes) does exactly that: the Segment and every Cluster have the
//! "unknown" size, a reader ends a Cluster at the next Cluster id. The writer is ~200 lines;
//! the crates looked at either bind libwebm (C++), only read, or want sizes up front.
//!
//! On a clean [`MkvWriter::finish`] the Duration is written into a Void reserved in Info (so
//! `ffprobe` reports it); after a crash it stays absent and readers scan the clusters.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const DURATION: u32 = 0x4489;
const VOID: u32 = 0xEC;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9C;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CODEC_DELAY: u32 = 0x56AA;
const SEEK_PRE_ROLL: u32 = 0x56BB;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const CLUSTER: u32 = 0x1F43_B675;
const TIMECODE: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;

/// The unknown size (8-byte form).
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// A cluster is started at a keyframe after this long, and always after `CLUSTER_MAX_MS`
/// (the block's relative time is an i16).
const CLUSTER_MIN_MS: u64 = 1000;
const CLUSTER_MAX_MS: u64 = 5000;

/// What the single track of a file carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackSpec {
    Opus {
        channels: u8,
    },
    Vp8 {
        width: u16,
        height: u16,
    },
    /// H.264 (`V_MPEG4/ISO/AVC`): the CodecPrivate is the `avcC` record, blocks hold
    /// length-prefixed (4-byte) NAL units. The file's DocType is `matroska` (WebM has no H.264).
    H264 {
        width: u16,
        height: u16,
        avcc: Vec<u8>,
    },
}

fn put_id(out: &mut Vec<u8>, id: u32) {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count();
    out.extend_from_slice(&b[skip..]);
}

fn put_size(out: &mut Vec<u8>, len: usize) {
    // Always the 8-byte form: simple, and valid for anything we write.
    let v = (len as u64) | (1u64 << 56);
    out.extend_from_slice(&v.to_be_bytes());
}

fn element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_id(out, id);
    put_size(out, body.len());
    out.extend_from_slice(body);
}

fn uint(out: &mut Vec<u8>, id: u32, v: u64) {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(7);
    element(out, id, &b[skip..]);
}

fn float(out: &mut Vec<u8>, id: u32, v: f64) {
    element(out, id, &v.to_be_bytes());
}

/// The OpusHead identification header (RFC 7845 §5.1), the CodecPrivate of an Opus track.
fn opus_head(channels: u8) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1); // version
    h.push(channels);
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // channel mapping family 0
    h
}

/// The bytes before the first cluster; `void_at` is the offset of the Void kept for Duration.
fn header(spec: &TrackSpec, uid: u64) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(256);
    let mut ebml = Vec::new();
    uint(&mut ebml, 0x4286, 1); // EBMLVersion
    uint(&mut ebml, 0x42F7, 1); // EBMLReadVersion
    uint(&mut ebml, 0x42F2, 4); // EBMLMaxIDLength
    uint(&mut ebml, 0x42F3, 8); // EBMLMaxSizeLength
    let doctype: &[u8] = match spec {
        TrackSpec::H264 { .. } => b"matroska",
        _ => b"webm",
    };
    element(&mut ebml, 0x4282, doctype); // DocType
    uint(&mut ebml, 0x4287, 4); // DocTypeVersion
    uint(&mut ebml, 0x4285, 2); // DocTypeReadVersion
    element(&mut out, EBML, &ebml);
    put_id(&mut out, SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);

    let mut info = Vec::new();
    uint(&mut info, TIMECODE_SCALE, 1_000_000); // milliseconds
    element(&mut info, MUXING_APP, b"rakor");
    element(&mut info, WRITING_APP, b"rakor");
    let void_in_info = info.len();
    // Room for Duration (id 2 + size 8 + float 8 = 18 bytes) as a Void (id 1 + size 8 + 9).
    put_id(&mut info, VOID);
    put_size(&mut info, 9);
    info.extend_from_slice(&[0u8; 9]);
    put_id(&mut out, INFO);
    put_size(&mut out, info.len());
    let void_at = (out.len() + void_in_info) as u64;
    out.extend_from_slice(&info);

    let mut entry = Vec::new();
    uint(&mut entry, TRACK_NUMBER, 1);
    uint(&mut entry, TRACK_UID, uid.max(1));
    uint(&mut entry, FLAG_LACING, 0);
    match spec {
        TrackSpec::Opus { channels } => {
            uint(&mut entry, TRACK_TYPE, 2);
            element(&mut entry, CODEC_ID, b"A_OPUS");
            element(&mut entry, CODEC_PRIVATE, &opus_head(*channels));
            uint(&mut entry, CODEC_DELAY, 0);
            uint(&mut entry, SEEK_PRE_ROLL, 80_000_000);
            let mut a = Vec::new();
            float(&mut a, SAMPLING_FREQUENCY, 48_000.0);
            uint(&mut a, CHANNELS, u64::from(*channels));
            element(&mut entry, AUDIO, &a);
        }
        TrackSpec::Vp8 { width, height } => {
            uint(&mut entry, TRACK_TYPE, 1);
            element(&mut entry, CODEC_ID, b"V_VP8");
            let mut v = Vec::new();
            uint(&mut v, PIXEL_WIDTH, u64::from(*width));
            uint(&mut v, PIXEL_HEIGHT, u64::from(*height));
            element(&mut entry, VIDEO, &v);
        }
        TrackSpec::H264 {
            width,
            height,
            avcc,
        } => {
            uint(&mut entry, TRACK_TYPE, 1);
            element(&mut entry, CODEC_ID, b"V_MPEG4/ISO/AVC");
            element(&mut entry, CODEC_PRIVATE, avcc);
            let mut v = Vec::new();
            uint(&mut v, PIXEL_WIDTH, u64::from(*width));
            uint(&mut v, PIXEL_HEIGHT, u64::from(*height));
            element(&mut entry, VIDEO, &v);
        }
    }
    let mut tracks = Vec::new();
    element(&mut tracks, TRACK_ENTRY, &entry);
    element(&mut out, TRACKS, &tracks);
    (out, void_at)
}

/// One WebM file with one track, written progressively.
pub struct MkvWriter {
    out: BufWriter<File>,
    void_at: u64,
    video: bool,
    /// Timecode (ms) of the open cluster.
    cluster: Option<u64>,
    /// Last block's timecode (ms from the file's start), kept non-decreasing.
    last: Option<u64>,
    scratch: Vec<u8>,
    /// Bytes written so far (the file's size).
    pub bytes: u64,
    pub frames: u64,
}

impl MkvWriter {
    /// Create `path` and write everything up to the first cluster.
    pub fn create(path: &Path, spec: TrackSpec, uid: u64) -> io::Result<Self> {
        let file = File::create(path)?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let (head, void_at) = header(&spec, uid);
        out.write_all(&head)?;
        out.flush()?;
        Ok(Self {
            out,
            void_at,
            video: !matches!(spec, TrackSpec::Opus { .. }),
            cluster: None,
            last: None,
            scratch: Vec::with_capacity(64),
            bytes: head.len() as u64,
            frames: 0,
        })
    }

    /// Append one frame at `ms` milliseconds from the file's start. A timecode earlier than
    /// the previous frame's is moved up to it (a track's blocks must not go back in time).
    pub fn write_frame(&mut self, ms: u64, keyframe: bool, data: &[u8]) -> io::Result<()> {
        let ms = self.last.map_or(ms, |l| ms.max(l));
        self.last = Some(ms);
        let new_cluster = match self.cluster {
            None => true,
            Some(c) => {
                let age = ms - c.min(ms);
                age >= CLUSTER_MAX_MS || (age >= CLUSTER_MIN_MS && (keyframe || !self.video))
            }
        };
        if new_cluster {
            // What is written so far reaches the kernel: a crash loses at most this cluster.
            self.out.flush()?;
            self.scratch.clear();
            put_id(&mut self.scratch, CLUSTER);
            self.scratch.extend_from_slice(&UNKNOWN_SIZE);
            uint(&mut self.scratch, TIMECODE, ms);
            self.out.write_all(&self.scratch)?;
            self.bytes += self.scratch.len() as u64;
            self.cluster = Some(ms);
        }
        let rel = ms - self.cluster.unwrap_or(ms);
        let rel = i16::try_from(rel).unwrap_or(i16::MAX);
        self.scratch.clear();
        put_id(&mut self.scratch, SIMPLE_BLOCK);
        put_size(&mut self.scratch, data.len() + 4);
        self.scratch.push(0x81); // track number 1
        self.scratch.extend_from_slice(&rel.to_be_bytes());
        self.scratch.push(if keyframe { 0x80 } else { 0 });
        self.out.write_all(&self.scratch)?;
        self.out.write_all(data)?;
        self.bytes += (self.scratch.len() + data.len()) as u64;
        self.frames += 1;
        Ok(())
    }

    /// Push buffered frames to the kernel.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Timecode of the last frame written (ms from the start of the file).
    pub fn last_ms(&self) -> Option<u64> {
        self.last
    }

    /// Flush, and write the Duration (`duration_ms`) over the reserved Void.
    pub fn finish(mut self, duration_ms: u64) -> io::Result<()> {
        self.out.flush()?;
        let mut d = Vec::with_capacity(18);
        put_id(&mut d, DURATION);
        put_size(&mut d, 8);
        d.extend_from_slice(&(duration_ms as f64).to_be_bytes());
        let mut f = self.out.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(self.void_at))?;
        f.write_all(&d)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let (h, void_at) = header(&TrackSpec::Opus { channels: 2 }, 7);
        assert_eq!(&h[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
        // The Void sits where Info reserves it, with 9 bytes of body.
        let v = void_at as usize;
        assert_eq!(h[v], 0xEC);
        assert_eq!(&h[v + 1..v + 9], &[1, 0, 0, 0, 0, 0, 0, 9]);
        assert!(h.windows(6).any(|w| w == b"A_OPUS"));
        assert!(h.windows(8).any(|w| w == b"OpusHead"));
    }

    #[test]
    fn h264_header_is_matroska_with_avcc() {
        let avcc = vec![1, 0x42, 0xC0, 0x0C, 0xFF, 0xE1, 0, 1, 0x67, 1, 0, 1, 0x68];
        let spec = TrackSpec::H264 {
            width: 320,
            height: 240,
            avcc: avcc.clone(),
        };
        let (h, _) = header(&spec, 3);
        assert!(h.windows(8).any(|w| w == b"matroska"));
        assert!(!h.windows(4).any(|w| w == b"webm"));
        assert!(h.windows(15).any(|w| w == b"V_MPEG4/ISO/AVC"));
        // CodecPrivate (0x63A2, 8-byte size) holds the avcC record as given.
        let mut cp = vec![0x63, 0xA2];
        cp.extend_from_slice(&(avcc.len() as u64 | 1 << 56).to_be_bytes());
        cp.extend_from_slice(&avcc);
        assert!(h.windows(cp.len()).any(|w| w == cp.as_slice()));
    }

    #[test]
    fn clusters_and_blocks() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("rakor-mkv-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("v.webm");
        let mut w = MkvWriter::create(
            &path,
            TrackSpec::Vp8 {
                width: 320,
                height: 240,
            },
            1,
        )?;
        w.write_frame(0, true, &[1, 2, 3])?;
        w.write_frame(33, false, &[4])?;
        w.write_frame(20, false, &[5])?; // goes back: clamped to 33
        w.write_frame(1200, false, &[6])?; // not a keyframe: same cluster (video)
        w.write_frame(1300, true, &[7])?; // keyframe after 1 s: new cluster
        w.write_frame(9000, false, &[8])?; // 5 s cap: new cluster
        assert_eq!(w.frames, 6);
        w.finish(9000)?;
        let bytes = std::fs::read(&path)?;
        let clusters = bytes
            .windows(4)
            .filter(|w| *w == [0x1F, 0x43, 0xB6, 0x75])
            .count();
        assert_eq!(clusters, 3);
        // Duration replaced the Void.
        assert!(bytes.windows(2).any(|w| w == [0x44, 0x89]));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
