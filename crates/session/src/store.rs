//! [`Store`]: what the session manager keeps, behind a small trait so that PostgreSQL (several
//! nodes sharing schedules) can follow the SQLite implementation ([`crate::sqlite`]). Every
//! method commits before it returns: a crash loses nothing that was acknowledged.

use crate::access::{AuditEntry, AuditRecord, Ban, InvitationLink, OperatorInfo};
use crate::error::Result;
use crate::model::{AttendanceEvent, Rakor, RakorDraft, RakorState, Site, SiteInput};
use crate::record::{ChatRecord, TimelineRecord};
use serde::Serialize;
use utoipa::ToSchema;

/// An operator account (never with its hash).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Operator {
    pub id: i64,
    pub username: String,
}

/// An API token's metadata (the secret is shown once at creation and never stored).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApiTokenInfo {
    pub id: i64,
    pub label: String,
    /// Created, UTC RFC 3339.
    pub created_utc: String,
}

/// Who may get in, and the record of who did what (see [`crate::access`]).
#[async_trait::async_trait]
pub trait AccessStore: Send + Sync {
    // Operator administration.
    async fn list_operators(&self) -> Result<Vec<OperatorInfo>>;
    /// (operator, password hash, disabled).
    async fn operator_record(&self, username: &str) -> Result<Option<(Operator, String, bool)>>;
    async fn set_operator_disabled(&self, id: i64, disabled: bool) -> Result<bool>;
    async fn delete_operator(&self, id: i64) -> Result<bool>;
    /// End every login and revoke every API token of an operator.
    async fn end_operator_sessions(&self, id: i64) -> Result<()>;

    // Invitation links.
    /// Every link of a rakor, oldest first.
    async fn links(&self, rakor_id: i64) -> Result<Vec<InvitationLink>>;
    async fn link(&self, id: &str) -> Result<Option<InvitationLink>>;
    async fn insert_link(&self, link: &InvitationLink) -> Result<()>;
    /// Revoke every live link of a site for a rakor; how many.
    async fn revoke_links(&self, rakor_id: i64, site_id: i64, at: i64) -> Result<u64>;

    // Bans.
    async fn add_ban(&self, room: &str, identity: &str, by: &str) -> Result<Ban>;
    async fn remove_ban(&self, id: i64) -> Result<Option<Ban>>;
    async fn list_bans(&self) -> Result<Vec<Ban>>;
    async fn is_banned(&self, room: &str, identity: &str) -> Result<bool>;

    // Audit log.
    async fn append_audit(&self, at_ms: i64, entry: &AuditEntry) -> Result<()>;
    /// Newest first: at most `limit` records with an id below `before` (all with `None`).
    async fn audit(&self, limit: i64, before: Option<i64>) -> Result<Vec<AuditRecord>>;
}

/// The rakor's record besides attendance: chat and the room's timeline (schema version 3).
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync {
    async fn record_chat(&self, rakor_id: i64, chat: &ChatRecord) -> Result<()>;
    /// Oldest first.
    async fn chat(&self, rakor_id: i64) -> Result<Vec<ChatRecord>>;
    async fn record_timeline(&self, rakor_id: i64, event: &TimelineRecord) -> Result<()>;
    /// Oldest first.
    async fn timeline(&self, rakor_id: i64) -> Result<Vec<TimelineRecord>>;
}

#[async_trait::async_trait]
pub trait Store: AccessStore + RecordStore + Send + Sync {
    // Operators and credentials.
    async fn operator_count(&self) -> Result<i64>;
    /// Conflict if the username exists.
    async fn add_operator(&self, username: &str, password_hash: &str) -> Result<Operator>;
    async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool>;
    async fn create_login(&self, token_hash: &str, operator_id: i64, expires_at: i64)
        -> Result<()>;
    async fn login_operator(&self, token_hash: &str, now: i64) -> Result<Option<Operator>>;
    async fn delete_login(&self, token_hash: &str) -> Result<()>;
    async fn create_api_token(
        &self,
        operator_id: i64,
        label: &str,
        token_hash: &str,
    ) -> Result<ApiTokenInfo>;
    async fn api_token_operator(&self, token_hash: &str) -> Result<Option<Operator>>;
    async fn list_api_tokens(&self, operator_id: i64) -> Result<Vec<ApiTokenInfo>>;
    async fn revoke_api_token(&self, operator_id: i64, id: i64) -> Result<bool>;

    // Directory.
    async fn list_sites(&self) -> Result<Vec<Site>>;
    async fn get_site(&self, id: i64) -> Result<Option<Site>>;
    /// Conflict on a duplicate name (case- and space-insensitive).
    async fn insert_site(&self, site: &SiteInput) -> Result<Site>;
    /// All or nothing: a duplicate anywhere stores none.
    async fn insert_sites(&self, sites: &[SiteInput]) -> Result<Vec<Site>>;
    async fn update_site(&self, id: i64, site: &SiteInput) -> Result<Site>;

    // Scheduled rakor.
    async fn list_rakor(&self) -> Result<Vec<Rakor>>;
    async fn get_rakor(&self, id: i64) -> Result<Option<Rakor>>;
    /// Conflict if another unfinished rakor uses the same room at an overlapping time.
    async fn insert_rakor(&self, draft: &RakorDraft) -> Result<Rakor>;
    async fn update_rakor(&self, id: i64, draft: &RakorDraft) -> Result<Rakor>;
    async fn set_rakor_state(&self, id: i64, state: RakorState) -> Result<()>;
    async fn delete_rakor(&self, id: i64) -> Result<bool>;
    /// The unfinished rakor using `room` whose link window contains `now`.
    async fn rakor_for_room(&self, room: &str, now: i64) -> Result<Option<Rakor>>;

    // Attendance and admissions.
    /// `node` is the cluster node writing it (`cluster.node_id`; "" for a single node).
    async fn record_attendance(
        &self,
        rakor_id: i64,
        node: &str,
        event: &AttendanceEvent,
    ) -> Result<()>;
    async fn attendance(&self, rakor_id: i64) -> Result<Vec<AttendanceEvent>>;
    /// Write a `leave` at `at_ms` (reason `server_restart`) for every join that has none: the
    /// participants of a server that crashed. Only the joins `node` wrote: on a database
    /// shared by a cluster, other nodes' participants are still there. Returns how many were
    /// closed.
    async fn close_open_attendance(&self, node: &str, at_ms: i64) -> Result<u64>;
    /// Admissions are per invitation link.
    async fn admit(&self, rakor_id: i64, identity: &str, link_id: &str) -> Result<()>;
    async fn is_admitted(&self, rakor_id: i64, identity: &str, link_id: &str) -> Result<bool>;
    /// Forget every admission of `identity` (all its links): it waits in the lobby again.
    async fn revoke_admission(&self, rakor_id: i64, identity: &str) -> Result<()>;
}
