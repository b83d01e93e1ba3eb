//! Operator credentials: argon2id password hashes, random secrets (login sessions, API tokens)
//! stored only as SHA-256 hashes. Hashing runs on [`crate::hash_pool`]; failed logins are
//! counted by [`crate::throttle`].

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

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
}
