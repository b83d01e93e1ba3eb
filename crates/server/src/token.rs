//! Access tokens: HS256 JWTs that let one identity join one room with one role.
//!
//! Claims: `sub` (identity), `room`, `name` (display name), `role` (`host` | `participant` |
//! `viewer` | `relay`, the last only with an identity `cascade/…`), `iat`, `exp` (Unix
//! seconds) and `iss` = `"rakor"`; all required. Only HS256 is accepted (no `none`, no other
//! algorithm), expiry has **zero leeway**, and `sub`, `room` and `name` must be 1..=128 bytes
//! without control characters. Extra claims are ignored, except `aud`, which makes the token
//! invalid (Rakor issues none). Every failure maps to a wire
//! [`ErrorCode`] through [`TokenError::code`].

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use rakor_proto::{ErrorCode, Role};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::signing_key::SigningKey;

/// The `iss` claim of every Rakor token.
pub const ISSUER: &str = "rakor";
/// Longest `sub`, `room` and `name`, in bytes.
pub const MAX_CLAIM_BYTES: usize = 128;

/// What a token grants. `Debug` redacts the display name (personal data).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Identity: unique per participant in a room; a second join with it replaces the first.
    pub sub: String,
    pub room: String,
    /// Display name shown to the others.
    pub name: String,
    pub role: Role,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    pub iss: String,
    /// Not before, Unix seconds (invitations: 30 minutes before the start). Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The rakor (scheduled session) an invitation belongs to. Optional; with it the session
    /// manager checks the invitation at join (see `crate::lobby`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The site waits in the lobby until an operator admits it. Optional, default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lobby: bool,
    /// The invitation link this token belongs to (with `sid`): revoking the link refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lid: Option<String>,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("sub", &self.sub)
            .field("room", &self.room)
            .field("name", &"<redacted>")
            .field("role", &self.role)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .field("nbf", &self.nbf)
            .field("sid", &self.sid)
            .field("lobby", &self.lobby)
            .field("lid", &self.lid)
            .finish()
    }
}

impl Claims {
    /// Claims issued now, valid for `ttl`.
    pub fn new(room: &str, identity: &str, name: &str, role: Role, ttl: Duration) -> Self {
        let iat = unix_now();
        Self {
            sub: identity.to_owned(),
            room: room.to_owned(),
            name: name.to_owned(),
            role,
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            iss: ISSUER.to_owned(),
            nbf: None,
            sid: None,
            lobby: false,
            lid: None,
        }
    }

    fn check(&self) -> Result<(), TokenError> {
        for (claim, value) in [
            ("sub", &self.sub),
            ("room", &self.room),
            ("name", &self.name),
        ] {
            if value.is_empty() {
                return Err(TokenError::InvalidClaim {
                    claim,
                    reason: "is empty",
                });
            }
            if value.len() > MAX_CLAIM_BYTES {
                return Err(TokenError::InvalidClaim {
                    claim,
                    reason: "is longer than 128 bytes",
                });
            }
            if value.chars().any(char::is_control) {
                return Err(TokenError::InvalidClaim {
                    claim,
                    reason: "contains control characters",
                });
            }
        }
        if self.iss != ISSUER {
            return Err(TokenError::InvalidClaim {
                claim: "iss",
                reason: "is not \"rakor\"",
            });
        }
        if self.exp <= self.iat {
            return Err(TokenError::InvalidClaim {
                claim: "exp",
                reason: "is not after iat",
            });
        }
        // The hidden relay role is a node's own cascade relay subscriber only.
        if self.role == Role::Relay && !self.sub.starts_with("cascade/") {
            return Err(TokenError::InvalidClaim {
                claim: "role",
                reason: "is relay but the identity is not a cascade relay's (cascade/<node>)",
            });
        }
        Ok(())
    }
}

/// Why a token was refused. Messages never contain the token or the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token signature does not verify")]
    BadSignature,
    #[error("the token is not signed with HS256")]
    WrongAlgorithm,
    #[error("the token has no \"{0}\" claim")]
    MissingClaim(String),
    #[error("the token's \"{claim}\" claim {reason}")]
    InvalidClaim {
        claim: &'static str,
        reason: &'static str,
    },
    #[error("the token has expired")]
    Expired,
    #[error("the token is for another room")]
    WrongRoom,
    #[error("the invitation is not valid yet (links open 30 minutes before the start)")]
    NotYetValid,
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

impl TokenError {
    /// The wire error code a client gets for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::WrongRoom => ErrorCode::WrongRoom,
            TokenError::NotYetValid => ErrorCode::NotYetValid,
            TokenError::Sign(_) => ErrorCode::Internal,
            _ => ErrorCode::InvalidToken,
        }
    }
}

/// Sign `claims` (checked first, so an invalid token is never minted).
pub fn mint(key: &SigningKey, claims: &Claims) -> Result<String, TokenError> {
    claims.check()?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key.encoding())
        .map_err(|e| TokenError::Sign(e.to_string()))
}

/// The claims as they may arrive: every field optional so a missing one gets a precise error.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    room: Option<String>,
    name: Option<String>,
    role: Option<Role>,
    iat: Option<u64>,
    exp: Option<u64>,
    iss: Option<String>,
    nbf: Option<u64>,
    sid: Option<String>,
    lobby: Option<bool>,
    lid: Option<String>,
}

/// Verify signature, algorithm, expiry (zero leeway) and claims. With `expected_room`, a token
/// for another room is [`TokenError::WrongRoom`].
pub fn verify(
    key: &SigningKey,
    token: &str,
    expected_room: Option<&str>,
) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    validation.set_issuer(&[ISSUER]);

    let data = jsonwebtoken::decode::<RawClaims>(token.trim(), key.decoding(), &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            ErrorKind::InvalidIssuer => TokenError::InvalidClaim {
                claim: "iss",
                reason: "is not \"rakor\"",
            },
            ErrorKind::InvalidAudience => TokenError::InvalidClaim {
                claim: "aud",
                reason: "is not accepted",
            },
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            _ => TokenError::Malformed,
        })?;
    let raw = data.claims;
    let missing = |c: &str| TokenError::MissingClaim(c.to_owned());
    let claims = Claims {
        sub: raw.sub.ok_or_else(|| missing("sub"))?,
        room: raw.room.ok_or_else(|| missing("room"))?,
        name: raw.name.ok_or_else(|| missing("name"))?,
        role: raw.role.ok_or_else(|| missing("role"))?,
        iat: raw.iat.ok_or_else(|| missing("iat"))?,
        exp: raw.exp.ok_or_else(|| missing("exp"))?,
        iss: raw.iss.ok_or_else(|| missing("iss"))?,
        nbf: raw.nbf,
        sid: raw.sid,
        lobby: raw.lobby.unwrap_or(false),
        lid: raw.lid,
    };
    claims.check()?;
    if let Some(room) = expected_room {
        if claims.room != room {
            return Err(TokenError::WrongRoom);
        }
    }
    Ok(claims)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32]).unwrap()
    }

    fn claims() -> Claims {
        Claims::new(
            "rakor-demo",
            "dishub",
            "Dinas Perhubungan",
            Role::Participant,
            Duration::from_secs(3600),
        )
    }

    /// A token signed with `key` over an arbitrary JSON payload (bypassing `mint`'s checks).
    fn sign_json(key: &SigningKey, alg: Algorithm, payload: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), &payload, key.encoding()).unwrap()
    }

    fn b64(v: serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn verify_table() {
        let k = key(1);
        let now = unix_now();
        let good = mint(&k, &claims()).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut tampered_payload = serde_json::to_value(claims()).unwrap();
        tampered_payload["role"] = json!("host");
        parts[1] = b64(tampered_payload);
        let tampered = parts.join(".");
        let alg_none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(serde_json::to_value(claims()).unwrap())
        );
        let base = serde_json::to_value(claims()).unwrap();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = base.clone();
            f(&mut v);
            sign_json(&k, Algorithm::HS256, v)
        };

        // (case, token, expected room, expected outcome)
        type Case<'a> = (&'a str, String, Option<&'a str>, Result<(), ErrorCode>);
        let cases: Vec<Case> = vec![
            ("valid", good.clone(), None, Ok(())),
            (
                "valid, right room",
                good.clone(),
                Some("rakor-demo"),
                Ok(()),
            ),
            (
                "wrong room",
                good.clone(),
                Some("other-room"),
                Err(ErrorCode::WrongRoom),
            ),
            (
                "expired one second ago (zero leeway)",
                with(&|v| {
                    v["iat"] = json!(now - 100);
                    v["exp"] = json!(now - 1);
                }),
                None,
                Err(ErrorCode::TokenExpired),
            ),
            (
                "forged: signed with another key",
                mint(&key(2), &claims()).unwrap(),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "tampered payload",
                tampered,
                None,
                Err(ErrorCode::InvalidToken),
            ),
            ("alg none", alg_none, None, Err(ErrorCode::InvalidToken)),
            (
                "alg HS512 with the right key",
                sign_json(&k, Algorithm::HS512, base.clone()),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "garbage",
                "not.a.token".into(),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            ("empty", String::new(), None, Err(ErrorCode::InvalidToken)),
            (
                "missing room",
                with(&|v| drop(v.as_object_mut().unwrap().remove("room"))),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "missing exp",
                with(&|v| drop(v.as_object_mut().unwrap().remove("exp"))),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "missing role",
                with(&|v| drop(v.as_object_mut().unwrap().remove("role"))),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "unknown role",
                with(&|v| v["role"] = json!("admin")),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "empty identity",
                with(&|v| v["sub"] = json!("")),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "empty room",
                with(&|v| v["room"] = json!("")),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "room of 129 bytes",
                with(&|v| v["room"] = json!("r".repeat(129))),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "name of 128 bytes",
                with(&|v| v["name"] = json!("n".repeat(128))),
                None,
                Ok(()),
            ),
            (
                "identity with a newline",
                with(&|v| v["sub"] = json!("a\nb")),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "other issuer",
                with(&|v| v["iss"] = json!("someone")),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "audience present",
                with(&|v| v["aud"] = json!("x")),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "extra claim ignored",
                with(&|v| v["jti"] = json!("abc")),
                None,
                Ok(()),
            ),
            (
                "relay role for a cascade relay identity",
                with(&|v| {
                    v["role"] = json!("relay");
                    v["sub"] = json!("cascade/node-b");
                }),
                None,
                Ok(()),
            ),
            (
                "relay role for an ordinary identity",
                with(&|v| v["role"] = json!("relay")),
                None,
                Err(ErrorCode::InvalidToken),
            ),
            (
                "forged relay token: signed with another key",
                mint(
                    &key(2),
                    &Claims::new(
                        "rakor-demo",
                        "cascade/node-b",
                        "cascade relay",
                        Role::Relay,
                        Duration::from_secs(60),
                    ),
                )
                .unwrap(),
                None,
                Err(ErrorCode::InvalidToken),
            ),
        ];
        for (name, token, room, want) in cases {
            let got = verify(&k, &token, room).map(|_| ()).map_err(|e| e.code());
            assert_eq!(got, want, "case: {name}");
        }
    }

    #[test]
    fn roundtrip_keeps_claims() {
        let k = key(3);
        let c = claims();
        let t = mint(&k, &c).unwrap();
        assert_eq!(t.split('.').count(), 3);
        assert!(
            t.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)),
            "URL-safe"
        );
        assert_eq!(verify(&k, &t, None).unwrap(), c);
        assert!(
            !format!("{c:?}").contains("Perhubungan"),
            "Debug redacts the display name"
        );
    }

    #[test]
    fn mint_refuses_invalid_claims() {
        let k = key(4);
        let mut c = claims();
        c.room = "x".repeat(129);
        assert!(matches!(
            mint(&k, &c),
            Err(TokenError::InvalidClaim { claim: "room", .. })
        ));
        let mut c = claims();
        c.sub.clear();
        assert!(mint(&k, &c).is_err());
    }

    #[test]
    fn errors_do_not_echo_the_token() {
        let k = key(5);
        let token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2ln";
        let e = verify(&k, token, None).unwrap_err();
        assert!(!e.to_string().contains("eyJ"));
        assert_eq!(e.code(), ErrorCode::InvalidToken);
    }
}
