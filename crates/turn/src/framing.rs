//! Cutting a TURN byte stream (TCP or TLS) into messages (RFC 8656 §12.5, RFC 6062): STUN
//! messages and ChannelData back to back. The first two bits tell them apart (`00` STUN, `01`
//! ChannelData); anything else cannot be resynchronised, so the stream is closed. Over a
//! stream, ChannelData is padded to a multiple of four bytes (the padding is not counted in its
//! length field).

use thiserror::Error;

/// STUN header size.
pub const STUN_HEADER: usize = 20;
/// ChannelData header size.
pub const CHANNEL_HEADER: usize = 4;
/// Largest STUN message accepted on a stream (requests are small; this bounds the buffer).
pub const MAX_STUN: usize = 4096;
/// Channel numbers RFC 8656 allows (0x4000..=0x4FFF).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;

/// Why a stream was closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    #[error("not STUN or ChannelData (first byte {0:#04x})")]
    Garbage(u8),
    #[error("STUN message length {0} is not a multiple of 4")]
    UnalignedStun(usize),
    #[error("STUN message of {0} bytes is too large")]
    StunTooLarge(usize),
    #[error("bad STUN magic cookie")]
    BadCookie,
    #[error("channel number {0:#06x} is outside 0x4000..=0x4FFF")]
    BadChannel(u16),
}

/// One message cut from the stream: `len` bytes at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole STUN message (header included) of `len` bytes.
    Stun { len: usize },
    /// ChannelData: the payload is `buf[4..4 + data_len]`; the frame takes `len` bytes with padding.
    ChannelData {
        channel: u16,
        data_len: usize,
        len: usize,
    },
}

impl Frame {
    /// Bytes of the stream this frame takes.
    pub fn len(&self) -> usize {
        match *self {
            Frame::Stun { len } | Frame::ChannelData { len, .. } => len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The next whole frame at the start of `buf`: `Ok(None)` until enough bytes arrived, an error
/// when the bytes cannot start a frame.
pub fn next_frame(buf: &[u8]) -> Result<Option<Frame>, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first >> 6 {
        0 => {
            if buf.len() < STUN_HEADER {
                return Ok(None);
            }
            let body = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if body % 4 != 0 {
                return Err(FramingError::UnalignedStun(body));
            }
            if buf[4..8] != [0x21, 0x12, 0xA4, 0x42] {
                return Err(FramingError::BadCookie);
            }
            let len = STUN_HEADER + body;
            if len > MAX_STUN {
                return Err(FramingError::StunTooLarge(len));
            }
            Ok((buf.len() >= len).then_some(Frame::Stun { len }))
        }
        1 => {
            if buf.len() < CHANNEL_HEADER {
                return Ok(None);
            }
            let channel = u16::from_be_bytes([buf[0], buf[1]]);
            if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
                return Err(FramingError::BadChannel(channel));
            }
            let data_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            let len = CHANNEL_HEADER + data_len.next_multiple_of(4);
            Ok((buf.len() >= len).then_some(Frame::ChannelData {
                channel,
                data_len,
                len,
            }))
        }
        _ => Err(FramingError::Garbage(first)),
    }
}

/// Append a ChannelData frame for `payload` on `channel` to `out` (so a caller can gather
/// several frames into one stream write); `stream` adds the padding a stream needs.
pub fn write_channel_data(out: &mut Vec<u8>, channel: u16, payload: &[u8], stream: bool) {
    let start = out.len();
    out.extend_from_slice(&channel.to_be_bytes());
    // Callers pass datagrams (≤ 65507 bytes); a larger one would be cut by the relay socket.
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload[..usize::from(len)]);
    if stream {
        let padded = (out.len() - start).next_multiple_of(4);
        out.resize(start + padded, 0);
    }
}
