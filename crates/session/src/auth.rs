//! Operator credentials: argon2id password hashes, random secrets (login sessions, API tokens)
//! stored only as SHA-256 hashes, and [`LoginLimiter`] for failed logins.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::{Result, SessionError};

/// Shortest and longest operator password, in characters.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 10..=256;

/// Check a new password's length.
pub fn check_new_password(pw: &str) -> Result<()> {
    let n = pw.chars().count();
    if !PASSWORD_CHARS.contains(&n) {
        return Err(SessionError::invalid(
            "password",
            format!(
                "must be {} to {} characters long",
                PASSWORD_CHARS.start(),
                PASSWORD_CHARS.end()
            ),
        ));
    }
    Ok(())
}

/// Check a username: 3-64 of a-z, 0-9, `.`, `_`, `-`.
pub fn check_username(u: &str) -> Result<String> {
    let u = u.trim().to_lowercase();
    if !(3..=64).contains(&u.len())
        || !u
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    {
        return Err(SessionError::invalid(
            "username",
            "must be 3-64 characters of a-z, 0-9, '.', '_' and '-'",
        ));
    }
    Ok(u)
}

/// argon2id hash in PHC string form.
pub fn hash_password(pw: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SessionError::Storage(format!("password hashing failed: {e}")))
}

/// Whether `pw` matches the stored hash (false for an unreadable hash).
pub fn verify_password(hash: &str, pw: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// A fresh random secret: `prefix` + 32 random bytes, base64url.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a secret, hex: what the database keeps.
pub fn hash_secret(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts failed logins per key (a username, an IP) in a sliding window; when a key reaches
/// `max_failures`, further attempts are refused until `lockout` has passed since the last
/// failure. Time is an argument.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    lockout: Duration,
    entries: HashMap<String, (u32, Instant)>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, lockout: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            lockout,
            entries: HashMap::new(),
        }
    }

    /// `Err(RateLimited)` if any key is locked now.
    pub fn check(&mut self, keys: &[&str], now: Instant) -> Result<()> {
        self.entries
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < self.lockout);
        for k in keys {
            if let Some((n, last)) = self.entries.get(*k) {
                if *n >= self.max_failures {
                    let left = self
                        .lockout
                        .saturating_sub(now.saturating_duration_since(*last));
                    return Err(SessionError::RateLimited {
                        retry_after_secs: left.as_secs().max(1),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn failed(&mut self, keys: &[&str], now: Instant) {
        for k in keys {
            let e = self.entries.entry((*k).to_owned()).or_insert((0, now));
            e.0 = e.0.saturating_add(1);
            e.1 = now;
        }
    }

    pub fn succeeded(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("garbage", "x"));
        assert!(check_new_password("short").is_err());
        assert_eq!(check_username(" Operator.1 ").unwrap(), "operator.1");
        assert!(check_username("a b").is_err());
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret("rk_");
        assert!(a.starts_with("rk_") && a.len() > 40);
        assert_ne!(a, new_secret("rk_"));
        assert_eq!(hash_secret("x").len(), 64);
    }

    #[test]
    fn limiter_locks_after_max_failures_then_releases() {
        let mut l = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check(&["u:op"], t0).unwrap();
            l.failed(&["u:op"], t0);
        }
        assert!(matches!(
            l.check(&["u:op"], t0),
            Err(SessionError::RateLimited {
                retry_after_secs: 60
            })
        ));
        assert!(l.check(&["u:other"], t0).is_ok());
        assert!(l.check(&["u:op"], t0 + Duration::from_secs(61)).is_ok());
    }
}
