//! Short-lived TURN credentials, the "TURN REST API" convention coturn uses
//! (`use-auth-secret`): the username is `<unix expiry>:<user>`, the password is
//! `base64(HMAC-SHA1(secret, username))`. The signalling server mints them per join; the TURN
//! server recomputes the password from the username, so no credential is stored anywhere.

use crate::TurnError;
use base64::Engine as _;
use rtc::crypto::{HmacAlgorithm, RTCCrypto};

/// Credentials handed to one client (the `ice_servers` entry of `joined`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `<expires_at>:<user>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub credential: String,
    /// Unix seconds after which the credentials no longer open a new allocation.
    pub expires_at: u64,
}

/// Longest `<user>` part accepted (the whole USERNAME attribute is limited to 513 bytes).
pub const MAX_USER_LEN: usize = 256;

/// Mint credentials for `user` (an identity or participant id) valid until `expires_at`.
pub fn mint(
    crypto: &dyn RTCCrypto,
    secret: &[u8],
    user: &str,
    expires_at: u64,
) -> Result<Credentials, TurnError> {
    let user: String = user.chars().take(MAX_USER_LEN).collect();
    let username = format!("{expires_at}:{user}");
    let credential = password(crypto, secret, &username)?;
    Ok(Credentials {
        username,
        credential,
        expires_at,
    })
}

/// The password that belongs to `username`.
pub fn password(
    crypto: &dyn RTCCrypto,
    secret: &[u8],
    username: &str,
) -> Result<String, TurnError> {
    let mut mac = crypto
        .new_hmac(HmacAlgorithm::Sha1, secret)
        .map_err(|e| TurnError::Crypto(e.to_string()))?;
    let mut out = [0u8; 20];
    mac.sign(&[username.as_bytes()], &mut out)
        .map_err(|e| TurnError::Crypto(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// Split a username into its expiry and user parts; `None` if it is not ours.
pub fn parse_username(username: &str) -> Option<(u64, &str)> {
    let (expiry, user) = username.split_once(':')?;
    if expiry.is_empty() || expiry.len() > 20 || user.is_empty() || user.len() > MAX_USER_LEN {
        return None;
    }
    let expiry = expiry.parse::<u64>().ok()?;
    Some((expiry, user))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn minted_credentials_follow_the_rest_api_convention() {
        let p = rtc::crypto::default_provider().unwrap();
        let c = mint(p.crypto(), b"s3cret", "site-7", 1_700_000_000).unwrap();
        assert_eq!(c.username, "1700000000:site-7");
        assert_eq!(c.expires_at, 1_700_000_000);
        // Known answer: printf '1700000000:site-7' | openssl dgst -sha1 -hmac s3cret -binary | base64
        assert_eq!(c.credential, "UJ/IAYKRRlLRwdaU3/vOV8ST5vo=");
        assert_eq!(c.credential.len(), 28);
        assert_ne!(
            c.credential,
            password(p.crypto(), b"other", &c.username).unwrap()
        );
        assert_eq!(parse_username(&c.username), Some((1_700_000_000, "site-7")));
    }

    #[test]
    fn usernames_that_are_not_ours_do_not_parse() {
        for bad in [
            "",
            "site",
            ":site",
            "12:",
            "x12:site",
            "-5:site",
            "99999999999999999999999:a",
        ] {
            assert_eq!(parse_username(bad), None, "{bad}");
        }
        assert_eq!(parse_username("5:a:b"), Some((5, "a:b")));
    }
}
