//! Records of who may get in and who did what: invitation links with their own id
//! ([`InvitationLink`]), bans by identity ([`Ban`]), operator accounts as the console lists
//! them ([`OperatorInfo`]), and the audit log ([`AuditEntry`], [`AuditRecord`]). Stored
//! through [`crate::store::AccessStore`].

use serde::Serialize;
use utoipa::ToSchema;

/// One invitation link of one site to one rakor. The token in the link names it in its `lid`
/// claim; a revoked (or replaced) link admits nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationLink {
    pub id: String,
    pub rakor_id: i64,
    pub site_id: i64,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl InvitationLink {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A fresh link id: `l` + 16 random bytes, base64url.
pub fn new_link_id() -> String {
    crate::auth::new_secret("l").chars().take(23).collect()
}

/// An identity refused in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Ban {
    pub id: i64,
    pub room: String,
    pub identity: String,
    /// UTC RFC 3339.
    pub created_utc: String,
    /// The operator who banned it.
    pub created_by: String,
}

/// An operator account as listed in the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OperatorInfo {
    pub id: i64,
    pub username: String,
    pub disabled: bool,
    /// UTC RFC 3339.
    pub created_utc: String,
}

/// Something to write to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The operator's username, `site-N` for a site, `system` for the server itself.
    pub actor: String,
    /// The client address the action came from (empty when none).
    pub address: String,
    /// What happened, e.g. `login`, `login_failed`, `participant_remove`, `link_reissue`.
    pub action: &'static str,
    /// What it happened to, e.g. `rakor 4 site-7`.
    pub target: String,
    pub detail: String,
}

/// One line of the audit log, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    /// UTC RFC 3339 with milliseconds.
    pub at_utc: String,
    pub actor: String,
    pub address: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Longest actor, target and detail kept (attacker-chosen usernames are cut).
pub const AUDIT_TEXT_CHARS: usize = 200;

pub(crate) fn cut(s: &str) -> String {
    s.chars()
        .take(AUDIT_TEXT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
