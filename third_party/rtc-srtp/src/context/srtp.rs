use super::*;
use shared::{
    error::{Error, Result},
    marshal::{MarshalSize, Unmarshal},
};

use bytes::BytesMut;

impl Context {
    /// Decrypts an SRTP packet whose header has already been parsed.
    ///
    /// Saves re-parsing when the caller needed the header to route the packet. The header must
    /// be the one belonging to `encrypted`.
    ///
    /// # Errors
    ///
    /// Fails if authentication fails, if the packet is a replay, or if it is too short to hold
    /// the profile's auth tag.
    pub fn decrypt_rtp_with_header(
        &mut self,
        encrypted: &[u8],
        header: &rtp::Header,
    ) -> Result<BytesMut> {
        let auth_tag_len = self.cipher.rtp_auth_tag_len();
        if encrypted.len() < header.marshal_size() + auth_tag_len {
            return Err(Error::ErrTooShortRtp);
        }

        let state = self.get_srtp_ssrc_state(header.ssrc);
        let (roc, diff, _) = state.next_rollover_count(header.sequence_number);
        if let Some(replay_detector) = &mut state.replay_detector
            && !replay_detector.check(header.sequence_number as u64)
        {
            return Err(Error::SrtpSsrcDuplicated(
                header.ssrc,
                header.sequence_number,
            ));
        }

        let dst = self.cipher.decrypt_rtp(encrypted, header, roc)?;
        {
            let state = self.get_srtp_ssrc_state(header.ssrc);
            if let Some(replay_detector) = &mut state.replay_detector {
                replay_detector.accept();
            }
            state.update_rollover_count(header.sequence_number, diff);
        }

        Ok(dst)
    }

    /// DecryptRTP decrypts a RTP packet with an encrypted payload
    pub fn decrypt_rtp(&mut self, encrypted: &[u8]) -> Result<BytesMut> {
        let mut buf = encrypted;
        let header = rtp::Header::unmarshal(&mut buf)?;
        self.decrypt_rtp_with_header(encrypted, &header)
    }

    /// Encrypts an RTP payload, using an already-parsed header.
    ///
    /// Saves re-parsing when the caller has just built the header. Returns the full protected
    /// packet, header included.
    ///
    /// # Errors
    ///
    /// Fails if the SRTP context has no key for this SSRC or the cipher rejects the input.
    pub fn encrypt_rtp_with_header(
        &mut self,
        plaintext: &[u8],
        header: &rtp::Header,
    ) -> Result<BytesMut> {
        let (roc, diff, ovf) = self
            .get_srtp_ssrc_state(header.ssrc)
            .next_rollover_count(header.sequence_number);
        if ovf {
            // ... when 2^48 SRTP packets or 2^31 SRTCP packets have been secured with the same key
            // (whichever occurs before), the key management MUST be called to provide new master key(s)
            // (previously stored and used keys MUST NOT be used again), or the session MUST be terminated.
            // https://www.rfc-editor.org/rfc/rfc3711#section-9.2
            return Err(Error::ErrExceededMaxPackets);
        }

        let dst = self
            .cipher
            .encrypt_rtp(plaintext, header, header.marshal_size(), roc)?;

        self.get_srtp_ssrc_state(header.ssrc)
            .update_rollover_count(header.sequence_number, diff);

        Ok(dst)
    }

    /// EncryptRTP marshals and encrypts an RTP packet, writing to the dst buffer provided.
    /// If the dst buffer does not have the capacity to hold `len(plaintext) + 10` bytes, a new one will be allocated and returned.
    ///
    /// Rakor patch: the header is not unmarshalled (that allocated its extension list and
    /// copied each extension, per packet); its length, SSRC and sequence number are read in
    /// place, which is all the ciphers and the rollover state use.
    pub fn encrypt_rtp(&mut self, plaintext: &[u8]) -> Result<BytesMut> {
        let (header, header_len) = rtp_header_fields(plaintext)?;
        let (roc, diff, ovf) = self
            .get_srtp_ssrc_state(header.ssrc)
            .next_rollover_count(header.sequence_number);
        if ovf {
            return Err(Error::ErrExceededMaxPackets);
        }
        let dst = self
            .cipher
            .encrypt_rtp(plaintext, &header, header_len, roc)?;
        self.get_srtp_ssrc_state(header.ssrc)
            .update_rollover_count(header.sequence_number, diff);
        Ok(dst)
    }
}

impl Context {
    /// Rakor patch: protect the RTP packet in `packet` in place: its payload is encrypted where
    /// it lies and the auth tag appended (reserve [`Self::rtp_protection_overhead`] bytes to
    /// avoid a reallocation). Same bytes as [`Self::encrypt_rtp`] on the same packet, without
    /// its output buffer and copy. On an error `packet` is left unusable.
    pub fn encrypt_rtp_in_place(&mut self, packet: &mut BytesMut) -> Result<()> {
        let (header, header_len) = rtp_header_fields(packet)?;
        let (roc, diff, ovf) = self
            .get_srtp_ssrc_state(header.ssrc)
            .next_rollover_count(header.sequence_number);
        if ovf {
            return Err(Error::ErrExceededMaxPackets);
        }
        self.cipher
            .encrypt_rtp_in_place(packet, &header, header_len, roc)?;
        self.get_srtp_ssrc_state(header.ssrc)
            .update_rollover_count(header.sequence_number, diff);
        Ok(())
    }

    /// Rakor patch: how many bytes protecting an RTP packet appends (its auth tag).
    pub fn rtp_protection_overhead(&self) -> usize {
        self.cipher
            .rtp_auth_tag_len()
            .max(self.cipher.aead_auth_tag_len())
    }
}

/// Rakor patch: an RTP header's fixed fields (in a `Header` without CSRCs or extensions) and
/// its full length (fixed part, CSRCs, extension block), checked as `Header::unmarshal`
/// checks them.
fn rtp_header_fields(raw: &[u8]) -> Result<(rtp::Header, usize)> {
    const FIXED: usize = 12;
    let b = |i: usize| raw.get(i).copied().ok_or(Error::ErrHeaderSizeInsufficient);
    let first = b(0)?;
    let cc = usize::from(first & 0x0f);
    let mut len = FIXED + cc * 4;
    if raw.len() < len {
        return Err(Error::ErrHeaderSizeInsufficient);
    }
    if first & 0x10 != 0 {
        let words = u16::from_be_bytes([
            raw.get(len + 2).copied().ok_or(Error::ErrHeaderSizeInsufficientForExtension)?,
            raw.get(len + 3).copied().ok_or(Error::ErrHeaderSizeInsufficientForExtension)?,
        ]);
        len += 4 + usize::from(words) * 4;
        if raw.len() < len {
            return Err(Error::ErrHeaderSizeInsufficientForExtension);
        }
    }
    let second = b(1)?;
    let header = rtp::Header {
        version: first >> 6,
        padding: first & 0x20 != 0,
        marker: second & 0x80 != 0,
        payload_type: second & 0x7f,
        sequence_number: u16::from_be_bytes([b(2)?, b(3)?]),
        timestamp: u32::from_be_bytes([b(4)?, b(5)?, b(6)?, b(7)?]),
        ssrc: u32::from_be_bytes([b(8)?, b(9)?, b(10)?, b(11)?]),
        ..Default::default()
    };
    Ok((header, len))
}
