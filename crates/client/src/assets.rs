//! The embedded synthetic media (three VP8 IVFs — one per simulcast layer — and an Opus Ogg, see
//! `assets/README.md`) and the two small container parsers that split them into encoded frames.
//!
//! The parsers take untrusted-shaped bytes and never panic: every length is checked, and a
//! malformed file is an [`AssetError`].

use bytes::Bytes;

/// The VP8 test pattern: 320x240, 15 fps, 60 frames, keyframes at frames 0 and 30. The video of
/// a non-simulcast sender, and simulcast layer 0 (rid `q`).
pub static VP8_IVF: &[u8] = include_bytes!("../assets/testsrc-320x240-15fps.ivf");
/// Simulcast layer 1 (rid `h`): 640x360, 15 fps, 60 frames, keyframes at frames 0 and 30.
pub static VP8_IVF_MID: &[u8] = include_bytes!("../assets/testsrc-640x360-15fps.ivf");
/// Simulcast layer 2 (rid `f`): 1280x720, 15 fps, 60 frames, keyframes at frames 0 and 30.
pub static VP8_IVF_HIGH: &[u8] = include_bytes!("../assets/testsrc-1280x720-15fps.ivf");
/// The VP8 asset of each simulcast layer, lowest first (layer index = position).
pub static VP8_LAYER_IVFS: [&[u8]; 3] = [VP8_IVF, VP8_IVF_MID, VP8_IVF_HIGH];
/// The Opus tone: 48 kHz stereo, 20 ms per packet.
pub static OPUS_OGG: &[u8] = include_bytes!("../assets/tone-440hz-48k.ogg");

/// A container could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{container}: {message}")]
pub struct AssetError {
    pub container: &'static str,
    pub message: String,
}

fn ivf_err(message: impl Into<String>) -> AssetError {
    AssetError {
        container: "ivf",
        message: message.into(),
    }
}

fn ogg_err(message: impl Into<String>) -> AssetError {
    AssetError {
        container: "ogg",
        message: message.into(),
    }
}

/// One encoded video frame from an IVF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfFrame {
    /// Timestamp in the file's time base.
    pub timestamp: u64,
    pub data: Bytes,
}

/// The IVF file header fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfHeader {
    pub fourcc: [u8; 4],
    pub width: u16,
    pub height: u16,
    pub timebase_den: u32,
    pub timebase_num: u32,
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Split an IVF file into its header and frames.
pub fn parse_ivf(file: &[u8]) -> Result<(IvfHeader, Vec<IvfFrame>), AssetError> {
    if file.get(0..4) != Some(b"DKIF") {
        return Err(ivf_err("missing DKIF signature"));
    }
    let header_len = le_u16(file, 6).ok_or_else(|| ivf_err("short header"))? as usize;
    let mut fourcc = [0u8; 4];
    fourcc.copy_from_slice(file.get(8..12).ok_or_else(|| ivf_err("short header"))?);
    let header = IvfHeader {
        fourcc,
        width: le_u16(file, 12).ok_or_else(|| ivf_err("short header"))?,
        height: le_u16(file, 14).ok_or_else(|| ivf_err("short header"))?,
        timebase_den: le_u32(file, 16).ok_or_else(|| ivf_err("short header"))?,
        timebase_num: le_u32(file, 20).ok_or_else(|| ivf_err("short header"))?,
    };
    if header_len < 32 || header_len > file.len() {
        return Err(ivf_err(format!("bad header length {header_len}")));
    }
    let mut frames = Vec::new();
    let mut at = header_len;
    while at < file.len() {
        let size = le_u32(file, at).ok_or_else(|| ivf_err("truncated frame header"))? as usize;
        let timestamp = le_u64(file, at + 4).ok_or_else(|| ivf_err("truncated frame header"))?;
        let start = at + 12;
        let data = file
            .get(start..start.saturating_add(size))
            .ok_or_else(|| ivf_err(format!("frame at byte {at} overruns the file")))?;
        frames.push(IvfFrame {
            timestamp,
            data: Bytes::copy_from_slice(data),
        });
        at = start + size;
    }
    Ok((header, frames))
}

/// Split an Ogg Opus file into its audio packets (the `OpusHead`/`OpusTags` header packets are
/// dropped). Packets are reassembled from the pages' lacing values, so several packets per page
/// and packets spanning pages are both handled.
pub fn parse_ogg_opus(file: &[u8]) -> Result<Vec<Bytes>, AssetError> {
    let mut packets = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut at = 0usize;
    while at < file.len() {
        if file.get(at..at + 4) != Some(b"OggS") {
            return Err(ogg_err(format!(
                "missing OggS capture pattern at byte {at}"
            )));
        }
        let n_segments = *file
            .get(at + 26)
            .ok_or_else(|| ogg_err("truncated page header"))? as usize;
        let table = file
            .get(at + 27..at + 27 + n_segments)
            .ok_or_else(|| ogg_err("truncated segment table"))?;
        let mut data_at = at + 27 + n_segments;
        for &lacing in table {
            let seg = file
                .get(data_at..data_at + lacing as usize)
                .ok_or_else(|| ogg_err(format!("segment at byte {data_at} overruns the file")))?;
            partial.extend_from_slice(seg);
            data_at += lacing as usize;
            if lacing < 255 {
                let packet = std::mem::take(&mut partial);
                if !(packet.starts_with(b"OpusHead") || packet.starts_with(b"OpusTags")) {
                    packets.push(Bytes::from(packet));
                }
            }
        }
        at = data_at;
    }
    Ok(packets)
}

/// Whether a raw VP8 frame (not an RTP payload) is a keyframe: the frame tag's P bit is 0.
pub fn vp8_frame_is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn ivf_asset_has_60_vp8_frames_with_keyframes_every_2s() {
        let (header, frames) = parse_ivf(VP8_IVF).unwrap();
        assert_eq!(&header.fourcc, b"VP80");
        assert_eq!((header.width, header.height), (320, 240));
        assert_eq!(frames.len(), 60);
        let keyframes: Vec<usize> = frames
            .iter()
            .enumerate()
            .filter(|(_, f)| vp8_frame_is_keyframe(&f.data))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keyframes, vec![0, 30]);
        // Keyframes are larger than one RTP packet, so fragmentation is exercised.
        assert!(frames[0].data.len() > 1200);
    }

    #[test]
    fn simulcast_layer_assets_have_60_frames_keyframes_at_0_and_30_and_rising_resolution() {
        // (asset, width, height, bytes of one loop within ±35 % of this bitrate at 15 fps / 4 s)
        let cases: [(&[u8], u16, u16, u64); 3] = [
            (VP8_IVF, 320, 240, 120_000),
            (VP8_IVF_MID, 640, 360, 300_000),
            (VP8_IVF_HIGH, 1280, 720, 600_000),
        ];
        assert_eq!(VP8_LAYER_IVFS[0].as_ptr(), VP8_IVF.as_ptr());
        for (layer, (file, width, height, bitrate)) in cases.into_iter().enumerate() {
            assert_eq!(VP8_LAYER_IVFS[layer].len(), file.len());
            let (header, frames) = parse_ivf(file).unwrap();
            assert_eq!(&header.fourcc, b"VP80", "layer {layer}");
            assert_eq!(
                (header.width, header.height),
                (width, height),
                "layer {layer}"
            );
            assert_eq!(frames.len(), 60, "layer {layer}");
            let keyframes: Vec<usize> = frames
                .iter()
                .enumerate()
                .filter(|(_, f)| vp8_frame_is_keyframe(&f.data))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(keyframes, vec![0, 30], "layer {layer}");
            let bits: u64 = frames.iter().map(|f| f.data.len() as u64 * 8).sum::<u64>() / 4;
            assert!(
                bits * 100 >= bitrate * 65 && bits * 100 <= bitrate * 135,
                "layer {layer}: {bits} bit/s, expected about {bitrate}"
            );
        }
        // Larger layers really are larger (first keyframe), so the layers are distinguishable.
        let first = |f: &[u8]| parse_ivf(f).unwrap().1[0].data.len();
        assert!(first(VP8_IVF) < first(VP8_IVF_MID));
        assert!(first(VP8_IVF_MID) < first(VP8_IVF_HIGH));
    }

    #[test]
    fn ogg_asset_has_20ms_opus_packets() {
        let packets = parse_ogg_opus(OPUS_OGG).unwrap();
        assert!(
            (195..=205).contains(&packets.len()),
            "{} packets",
            packets.len()
        );
        for p in &packets {
            // TOC byte (RFC 6716 §3.1): config in the top five bits; the 20 ms ones are
            // SILK 1/5/9, hybrid 13/15, CELT 19/23/27/31.
            let config = p[0] >> 3;
            let frame_ms_20 = matches!(config, 1 | 5 | 9 | 13 | 15 | 19 | 23 | 27 | 31);
            assert!(frame_ms_20, "config {config} is not a 20 ms frame");
            assert_eq!(p[0] & 0x03, 0, "one frame per packet");
        }
    }

    #[test]
    fn parsers_reject_garbage_without_panicking() {
        assert!(parse_ivf(b"").is_err());
        assert!(parse_ivf(b"DKIF").is_err());
        let mut truncated = VP8_IVF[..100].to_vec();
        assert!(parse_ivf(&truncated).is_err());
        truncated[0] = b'X';
        assert!(parse_ivf(&truncated).is_err());
        assert!(parse_ogg_opus(b"OggS").is_err());
        assert!(parse_ogg_opus(&OPUS_OGG[..200]).is_err());
        assert!(parse_ogg_opus(b"nope").is_err());
        assert_eq!(parse_ogg_opus(b"").unwrap(), Vec::<Bytes>::new());
    }

    #[test]
    fn ogg_packets_spanning_pages_are_reassembled() {
        // Build two pages: a 300-byte packet split 255 | 45 across them, then a 10-byte packet.
        fn page(flags: u8, lacing: &[u8], data: &[u8]) -> Vec<u8> {
            let mut p = b"OggS".to_vec();
            p.push(0);
            p.push(flags);
            p.extend_from_slice(&[0u8; 20]);
            p.push(lacing.len() as u8);
            p.extend_from_slice(lacing);
            p.extend_from_slice(data);
            p
        }
        let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut file = page(0, &[255], &big[..255]);
        file.extend(page(1, &[45, 10], &[&big[255..], &[7u8; 10][..]].concat()));
        let packets = parse_ogg_opus(&file).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(&packets[0][..], &big[..]);
        assert_eq!(&packets[1][..], &[7u8; 10]);
    }
}
