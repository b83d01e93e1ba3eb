//! [`SessionManager`]: the facade the server uses — validation on top of the [`Store`], login
//! with rate limiting, the lobby gate for arriving sites, and attendance recording.

use crate::access::AuditEntry;
use crate::attendance::{self, Register};
use crate::auth;
use crate::error::{Result, SessionError};
use crate::hash_pool::HashPool;
use crate::lobby::Lobby;
use crate::model::{
    self, site_of_identity, AttendanceEvent, AttendanceKind, Personal, Rakor, RakorDraft,
    RakorInput, RakorState, Site, SiteInput, SitePatch,
};
use crate::sqlite::SqliteStore;
use crate::store::{ApiTokenInfo, Operator, Store};
use crate::throttle::{Attempt, LoginThrottle, Outcome};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tunables (from the server's `[session]` config).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Lifetime of a console login.
    pub login_ttl: Duration,
    /// Failed logins per (username, client address) before that pair is locked out.
    pub login_max_failures: u32,
    /// Failed logins per client address (any usernames) before the address is locked out.
    pub login_max_failures_per_address: u32,
    /// How long a lockout lasts after the last failure.
    pub login_lockout: Duration,
    /// Hashing threads (0 = one per core).
    pub hash_concurrency: usize,
    /// Hashing jobs that may wait; more are refused with `Busy`.
    pub hash_queue: usize,
    /// This node's id in a cluster (`cluster.node_id`), written with its attendance rows; ""
    /// for a single node.
    pub node: String,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            login_ttl: Duration::from_secs(12 * 3600),
            login_max_failures: 5,
            login_max_failures_per_address: 20,
            login_lockout: Duration::from_secs(15 * 60),
            hash_concurrency: 0,
            hash_queue: 8,
            node: String::new(),
        }
    }
}

/// A join or leave reported by the media core, in session-manager terms.
#[derive(Debug, Clone)]
pub struct Membership {
    pub room: String,
    pub participant: String,
    pub identity: String,
    pub name: Personal,
    pub role: String,
    pub kind: AttendanceKind,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// A participant arriving at signalling with a verified token.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    /// The token's session claim (`sid`), if any.
    pub sid: Option<&'a str>,
    /// The token's invitation-link claim (`lid`), if any.
    pub link: Option<&'a str>,
    pub room: &'a str,
    pub identity: &'a str,
    pub is_host: bool,
    /// The token asks for the lobby.
    pub lobby: bool,
}

/// Why an arriving site is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The site is not (or no longer) invited, or the rakor does not exist.
    NotInvited,
    /// The rakor has ended.
    SessionEnded,
    /// The link is not valid yet (earlier than 30 minutes before the start).
    NotYetValid,
    /// The invitation link was revoked or replaced by a newer one.
    LinkRevoked,
    /// An operator banned this identity from the room.
    Banned,
}

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Join now (no session claim, the host, or already admitted).
    Direct,
    /// Wait in the lobby of this rakor.
    Wait {
        rakor_id: i64,
        site_id: Option<i64>,
        /// The invitation link the site came with (admission is per link).
        link_id: String,
    },
    Refused(Refusal, String),
}

/// The session manager. Cheap to share behind an `Arc`.
pub struct SessionManager {
    store: Arc<dyn Store>,
    lobby: Lobby,
    throttle: Mutex<LoginThrottle>,
    hashes: HashPool,
    settings: SessionSettings,
    /// Participant id → rakor id, so a leave after the end time still lands in its rakor.
    live: Mutex<HashMap<String, i64>>,
    /// Verifies unknown usernames in the same time as known ones.
    dummy_hash: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

mod admin;
pub use admin::Actor;

/// A login attempt in flight: tells the throttle how it ended, also when the request is
/// dropped half-way (then it counts as nothing).
struct AttemptGuard<'a> {
    throttle: &'a Mutex<LoginThrottle>,
    attempt: Attempt,
    outcome: Outcome,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        lock(self.throttle).finish(&self.attempt, self.outcome, Instant::now());
    }
}

/// A username as typed, cut for logs (it is attacker-controlled text).
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

impl SessionManager {
    /// Open the SQLite database at `path` (created and migrated if needed).
    pub async fn open_sqlite(path: &Path, settings: SessionSettings) -> Result<Self> {
        let store = SqliteStore::open(path).await?;
        Self::open_store(Arc::new(store), settings).await
    }

    /// Connect to the PostgreSQL database at `url` (migrated if needed).
    pub async fn open_postgres(url: &str, settings: SessionSettings) -> Result<Self> {
        let store = crate::postgres::PgStore::open(url).await?;
        Self::open_store(Arc::new(store), settings).await
    }

    /// Start on an open store: attendance a crashed run left open is closed first.
    pub async fn open_store(store: Arc<dyn Store>, settings: SessionSettings) -> Result<Self> {
        // Participants of a previous run that ended without their leave (crash, kill -9) are
        // closed now, so the register does not show them present for ever.
        let closed = store
            .close_open_attendance(&settings.node, crate::wib::now_ms())
            .await?;
        if closed > 0 {
            tracing::warn!(
                closed,
                "closed attendance left open by the previous run (server restart)"
            );
        }
        Self::new(store, settings)
    }

    pub fn new(store: Arc<dyn Store>, settings: SessionSettings) -> Result<Self> {
        Ok(Self {
            store,
            lobby: Lobby::default(),
            throttle: Mutex::new(LoginThrottle::new(
                settings.login_max_failures_per_address,
                settings.login_max_failures,
                settings.login_lockout,
            )),
            hashes: HashPool::new(settings.hash_concurrency, settings.hash_queue)?,
            settings,
            live: Mutex::new(HashMap::new()),
            dummy_hash: auth::hash_password("rakor-dummy-password")?,
        })
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn lobby(&self) -> &Lobby {
        &self.lobby
    }

    // ---- operators and auth ------------------------------------------------------------

    pub async fn operator_count(&self) -> Result<i64> {
        self.store.operator_count().await
    }

    /// Create an operator (or, with `replace`, set an existing one's password).
    pub async fn add_operator(
        &self,
        username: &str,
        password: &str,
        replace: bool,
    ) -> Result<Operator> {
        let username = auth::check_username(username)?;
        auth::check_new_password(password)?;
        let pw = password.to_owned();
        let hash = self.hashes.run(move || auth::hash_password(&pw)).await??;
        if replace {
            if let Some((op, _, _)) = self.store.operator_record(&username).await? {
                self.store.set_password(&username, &hash).await?;
                // A reset ends every login and API token of the account.
                self.store.end_operator_sessions(op.id).await?;
                tracing::info!(operator = %op.username, "operator password reset; logins and API tokens ended");
                return Ok(op);
            }
        }
        self.store.add_operator(&username, &hash).await
    }

    /// Check credentials; on success a new login secret (for the cookie) and the operator.
    /// `client` is the client's address: the throttle ([`LoginThrottle`]) is asked before
    /// any hashing, and the hash runs on the bounded [`HashPool`].
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: &str,
    ) -> Result<(String, Operator)> {
        let user = username.trim().to_lowercase();
        let attempt = match lock(&self.throttle).begin(&user, client, Instant::now()) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(username = ?shorten(&user), address = %client, "login refused: throttled");
                return Err(e);
            }
        };
        let mut guard = AttemptGuard {
            throttle: &self.throttle,
            attempt,
            outcome: Outcome::Abandoned,
        };
        let found = self.store.operator_record(&user).await?;
        // Unknown users cost the same hash (no username probing by timing).
        let hash = found
            .as_ref()
            .map(|(_, h, _)| h.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let pw = password.to_owned();
        let ok = self
            .hashes
            .run(move || auth::verify_password(&hash, &pw))
            .await?;
        match found {
            Some((_, _, true)) if ok => {
                guard.outcome = Outcome::Succeeded;
                drop(guard);
                self.audit_login(&user, client, "login_refused", "the account is disabled")
                    .await;
                Err(SessionError::Forbidden(
                    "this operator account is disabled".into(),
                ))
            }
            Some((op, _, false)) if ok => {
                guard.outcome = Outcome::Succeeded;
                drop(guard);
                self.audit_login(&op.username, client, "login", "").await;
                let secret = auth::new_secret("");
                let expires = crate::wib::now() + self.settings.login_ttl.as_secs() as i64;
                self.store
                    .create_login(&auth::hash_secret(&secret), op.id, expires)
                    .await?;
                tracing::info!(operator = %op.username, address = %client, "operator logged in");
                Ok((secret, op))
            }
            _ => {
                guard.outcome = Outcome::Failed;
                drop(guard);
                tracing::warn!(username = ?shorten(&user), address = %client, "failed operator login");
                let why = if found.is_some() {
                    "wrong password"
                } else {
                    "unknown username"
                };
                self.audit_login(&user, client, "login_failed", why).await;
                Err(SessionError::Unauthorized(
                    "wrong username or password".into(),
                ))
            }
        }
    }

    pub fn login_ttl(&self) -> Duration {
        self.settings.login_ttl
    }

    /// The operator of a login cookie's secret.
    pub async fn session_operator(&self, secret: &str) -> Result<Option<Operator>> {
        self.store
            .login_operator(&auth::hash_secret(secret), crate::wib::now())
            .await
    }

    /// The operator of an API token.
    pub async fn token_operator(&self, secret: &str) -> Result<Option<Operator>> {
        self.store
            .api_token_operator(&auth::hash_secret(secret))
            .await
    }

    pub async fn logout(&self, secret: &str) -> Result<()> {
        self.store.delete_login(&auth::hash_secret(secret)).await
    }

    /// A new API token: the secret (shown once) and its metadata.
    pub async fn create_api_token(
        &self,
        op: &Operator,
        label: &str,
    ) -> Result<(String, ApiTokenInfo)> {
        let label = label.trim();
        if label.is_empty() || label.chars().count() > 80 {
            return Err(SessionError::invalid("label", "must be 1-80 characters"));
        }
        let secret = auth::new_secret("rk_");
        let info = self
            .store
            .create_api_token(op.id, label, &auth::hash_secret(&secret))
            .await?;
        Ok((secret, info))
    }

    // ---- directory -----------------------------------------------------------------------

    pub async fn list_sites(&self) -> Result<Vec<Site>> {
        self.store.list_sites().await
    }

    pub async fn site(&self, id: i64) -> Result<Site> {
        self.store
            .get_site(id)
            .await?
            .ok_or_else(|| SessionError::not_found("site", id))
    }

    pub async fn create_site(&self, input: &SiteInput) -> Result<Site> {
        let site = model::validate_site(input)?;
        self.store.insert_site(&site).await
    }

    pub async fn patch_site(&self, id: i64, patch: &SitePatch) -> Result<Site> {
        let old = self.site(id).await?;
        let merged = SiteInput {
            name: patch.name.clone().unwrap_or(old.name),
            kind: patch.kind.unwrap_or(old.kind),
            contact_person: patch.contact_person.clone().unwrap_or(old.contact_person),
            phone: patch.phone.clone().unwrap_or(old.phone),
            active: Some(patch.active.unwrap_or(old.active)),
        };
        let site = model::validate_site(&merged)?;
        self.store.update_site(id, &site).await
    }

    pub async fn import_sites(&self, csv_text: &str) -> Result<Vec<Site>> {
        let sites = crate::import::parse_sites_csv(csv_text)?;
        self.store.insert_sites(&sites).await
    }

    // ---- rakor ---------------------------------------------------------------------------

    pub async fn list_rakor(&self) -> Result<Vec<Rakor>> {
        self.store.list_rakor().await
    }

    pub async fn rakor(&self, id: i64) -> Result<Rakor> {
        self.store
            .get_rakor(id)
            .await?
            .ok_or_else(|| SessionError::not_found("rakor", id))
    }

    async fn check_sites(&self, d: &RakorDraft) -> Result<()> {
        match self.store.get_site(d.host_site_id).await? {
            None => {
                return Err(SessionError::invalid(
                    "host_site_id",
                    format!("site {} does not exist", d.host_site_id),
                ))
            }
            Some(s) if !s.active => {
                return Err(SessionError::invalid(
                    "host_site_id",
                    format!("site \"{}\" is deactivated", s.name),
                ))
            }
            Some(_) => {}
        }
        for id in &d.invited {
            match self.store.get_site(*id).await? {
                None => {
                    return Err(SessionError::invalid(
                        "invited_site_ids",
                        format!("site {id} does not exist"),
                    ))
                }
                Some(s) if !s.active => {
                    return Err(SessionError::invalid(
                        "invited_site_ids",
                        format!("site \"{}\" is deactivated", s.name),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub async fn create_rakor(&self, input: &RakorInput) -> Result<Rakor> {
        let draft = model::validate_rakor(input, crate::wib::now(), false)?;
        self.check_sites(&draft).await?;
        let r = self.store.insert_rakor(&draft).await?;
        tracing::info!(rakor = r.id, room = %r.room, "rakor scheduled");
        Ok(r)
    }

    pub async fn update_rakor(&self, id: i64, input: &RakorInput) -> Result<Rakor> {
        let old = self.rakor(id).await?;
        let now = crate::wib::now();
        if old.state_at(now) == RakorState::Ended {
            return Err(SessionError::Conflict(
                "an ended rakor cannot be changed".into(),
            ));
        }
        // A rakor under way keeps its (past) start.
        let draft = model::validate_rakor(input, now, old.start_at <= now)?;
        if draft.room.is_some()
            && draft.room.as_deref() != Some(old.room.as_str())
            && old.stored_state == RakorState::Live
        {
            return Err(SessionError::invalid(
                "room",
                "cannot change while the rakor is live",
            ));
        }
        self.check_sites(&draft).await?;
        self.store.update_rakor(id, &draft).await
    }

    pub async fn delete_rakor(&self, id: i64) -> Result<()> {
        let r = self.rakor(id).await?;
        if r.stored_state == RakorState::Live && r.state_at(crate::wib::now()) == RakorState::Live {
            return Err(SessionError::Conflict(
                "end the rakor before deleting it".into(),
            ));
        }
        self.store.delete_rakor(id).await?;
        Ok(())
    }

    /// Mark a rakor ended (the server also ends the room in the media core).
    pub async fn end_rakor(&self, id: i64) -> Result<Rakor> {
        let _ = self.rakor(id).await?;
        self.store.set_rakor_state(id, RakorState::Ended).await?;
        self.lobby.decide_all(id, crate::lobby::Decision::Refuse);
        self.rakor(id).await
    }

    // ---- lobby gate -----------------------------------------------------------------------

    /// Decide what happens to a participant arriving with a verified token: bans (every
    /// token), then for invitations the rakor, its window, the invitation, the link (not
    /// revoked or replaced) and whether this link was admitted before.
    pub async fn gate(&self, a: &Arrival<'_>) -> Result<Admission> {
        let refuse = |r, m: &str| Ok(Admission::Refused(r, m.to_owned()));
        if self.store.is_banned(a.room, a.identity).await? {
            return refuse(
                Refusal::Banned,
                "an operator has removed this participant from the rakor",
            );
        }
        let Some(sid) = a.sid else {
            return Ok(Admission::Direct);
        };
        let Ok(id) = sid.parse::<i64>() else {
            return refuse(Refusal::NotInvited, "this link names no known rakor");
        };
        let Some(rakor) = self.store.get_rakor(id).await? else {
            return refuse(Refusal::NotInvited, "this rakor no longer exists");
        };
        if rakor.room != a.room {
            return refuse(Refusal::NotInvited, "this link is for another rakor");
        }
        let now = crate::wib::now();
        if rakor.state_at(now) == RakorState::Ended {
            return refuse(Refusal::SessionEnded, "this rakor has ended");
        }
        if now < rakor.valid_from() {
            return Ok(Admission::Refused(
                Refusal::NotYetValid,
                format!(
                    "this link is valid from {} WIB (30 minutes before the start)",
                    crate::wib::wib_short(rakor.valid_from())
                ),
            ));
        }
        let site = site_of_identity(a.identity);
        let invited = match site {
            Some(s) if a.is_host => s == rakor.host_site_id,
            Some(s) => rakor.invited.contains(&s) || s == rakor.host_site_id,
            None => false,
        };
        if !invited {
            return refuse(
                Refusal::NotInvited,
                "this site is not invited to this rakor",
            );
        }
        let link = match a.link {
            Some(l) => self.store.link(l).await?,
            None => None,
        };
        let link = match link {
            Some(l) if !l.is_revoked() && l.rakor_id == id && Some(l.site_id) == site => l,
            _ => {
                return refuse(
                    Refusal::LinkRevoked,
                    "this invitation link was revoked or replaced by a newer one; ask the operator for the current link",
                )
            }
        };
        if a.is_host || !a.lobby || self.store.is_admitted(id, a.identity, &link.id).await? {
            return Ok(Admission::Direct);
        }
        Ok(Admission::Wait {
            rakor_id: id,
            site_id: site,
            link_id: link.id,
        })
    }

    /// Remember that the operator admitted `identity` with `link_id` (its reconnects with
    /// the same link skip the lobby).
    pub async fn admitted(&self, rakor_id: i64, identity: &str, link_id: &str) -> Result<()> {
        self.store.admit(rakor_id, identity, link_id).await
    }

    /// A removed site has to wait in the lobby again (whatever link it comes back with).
    pub async fn revoke_admission(&self, rakor_id: i64, identity: &str) -> Result<()> {
        self.store.revoke_admission(rakor_id, identity).await
    }

    // ---- attendance ----------------------------------------------------------------------

    /// Record a join or leave; ignored for rooms that belong to no rakor. The first join
    /// makes the rakor live.
    pub async fn record(&self, m: Membership) -> Result<()> {
        let rakor_id = match m.kind {
            AttendanceKind::Join => {
                let now = m.at_ms / 1000;
                let Some(r) = self.store.rakor_for_room(&m.room, now).await? else {
                    return Ok(());
                };
                lock(&self.live).insert(m.participant.clone(), r.id);
                if r.stored_state == RakorState::Scheduled {
                    self.store.set_rakor_state(r.id, RakorState::Live).await?;
                    tracing::info!(rakor = r.id, "rakor is live");
                }
                r.id
            }
            AttendanceKind::Leave => match lock(&self.live).remove(&m.participant) {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        if m.kind == AttendanceKind::Leave && m.reason.as_deref() == Some("removed") {
            // Removed by the host (signalling) or an operator (API): the lobby again.
            self.store.revoke_admission(rakor_id, &m.identity).await?;
            self.audit(AuditEntry {
                actor: "system".into(),
                address: String::new(),
                action: "participant_removed",
                target: format!("rakor {rakor_id} {}", m.identity),
                detail: "removed from the room; must pass the lobby again".into(),
            })
            .await;
        }
        self.store
            .record_attendance(
                rakor_id,
                &self.settings.node,
                &AttendanceEvent {
                    identity: m.identity,
                    name: m.name,
                    role: m.role,
                    participant: m.participant,
                    kind: m.kind,
                    reason: m.reason,
                    at_ms: m.at_ms,
                },
            )
            .await
    }

    // ---- the record ------------------------------------------------------------------------

    /// The rakor running in `room` at `at_ms` (if any).
    async fn rakor_of_room(&self, room: &str, at_ms: i64) -> Result<Option<i64>> {
        Ok(self
            .store
            .rakor_for_room(room, at_ms.div_euclid(1000))
            .await?
            .map(|r| r.id))
    }

    /// Store a delivered chat message with the rakor running in `room`; ignored for rooms
    /// that belong to no rakor.
    pub async fn record_chat(&self, room: &str, chat: crate::record::ChatRecord) -> Result<()> {
        match self.rakor_of_room(room, chat.at_ms).await? {
            Some(id) => self.store.record_chat(id, &chat).await,
            None => Ok(()),
        }
    }

    /// Store a timeline event with the rakor running in `room`; ignored for rooms that belong
    /// to no rakor.
    pub async fn record_timeline(
        &self,
        room: &str,
        event: crate::record::TimelineRecord,
    ) -> Result<()> {
        match self.rakor_of_room(room, event.at_ms).await? {
            Some(id) => self.store.record_timeline(id, &event).await,
            None => Ok(()),
        }
    }

    /// The rakor's record: attendance, chat, hands, floor, timeline.
    pub async fn meeting_record(&self, id: i64) -> Result<crate::record::Record> {
        let rakor = self.rakor(id).await?;
        let sites = self.store.list_sites().await?;
        let events = self.store.attendance(id).await?;
        let now = crate::wib::now_ms();
        let reg = attendance::register(&rakor, &sites, &events, now);
        let chat = self.store.chat(id).await?;
        let timeline = self.store.timeline(id).await?;
        Ok(crate::record::build(
            &rakor, &sites, reg, &chat, &timeline, now,
        ))
    }

    /// The attendance register of a rakor.
    pub async fn register(&self, id: i64) -> Result<Register> {
        let rakor = self.rakor(id).await?;
        let sites = self.store.list_sites().await?;
        let events = self.store.attendance(id).await?;
        Ok(attendance::register(
            &rakor,
            &sites,
            &events,
            crate::wib::now_ms(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::SiteKind;
    use crate::test_db::TestDb;

    /// A site's current link id for a rakor (created if needed).
    async fn link_of(m: &SessionManager, rakor: i64, site: i64) -> String {
        m.current_links(rakor)
            .await
            .unwrap()
            .into_iter()
            .find(|l| l.site_id == site)
            .unwrap()
            .id
    }

    fn site(name: &str) -> SiteInput {
        SiteInput {
            name: name.into(),
            kind: SiteKind::Opd,
            contact_person: Personal::default(),
            phone: Personal::default(),
            active: None,
        }
    }

    fn wib_in(secs: i64) -> String {
        crate::wib::wib_string(crate::wib::now() + secs)
    }

    #[tokio::test]
    async fn sites_rakor_gate_and_attendance_survive_reopen() {
        for db in TestDb::all() {
            sites_rakor_gate_and_attendance_survive_reopen_on(&db).await;
        }
    }

    async fn sites_rakor_gate_and_attendance_survive_reopen_on(db: &TestDb) {
        let m = db.manager(SessionSettings::default()).await;
        if let Some(dir) = db.sqlite_dir() {
            use std::os::unix::fs::PermissionsExt as _;
            for f in ["rakor.sqlite3", "rakor.sqlite3-wal"] {
                let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "{f} is {mode:o}");
            }
        }
        let host = m.create_site(&site("Command Room")).await.unwrap();
        let a = m.create_site(&site("Dishub")).await.unwrap();
        let b = m.create_site(&site("Dinkes")).await.unwrap();
        assert!(matches!(
            m.create_site(&site(" dishub ")).await,
            Err(SessionError::Conflict(_))
        ));
        let r = m
            .create_rakor(&RakorInput {
                title: "Rakor".into(),
                agenda: String::new(),
                start: wib_in(600),
                end: wib_in(4200),
                host_site_id: host.id,
                invited_site_ids: vec![a.id],
                room: None,
                node: None,
            })
            .await
            .unwrap();
        assert_eq!(r.room, format!("rakor-{}", r.id));
        let sid = r.id.to_string();
        let la: &'static str = Box::leak(link_of(&m, r.id, a.id).await.into_boxed_str());
        let lh: &'static str = Box::leak(link_of(&m, r.id, host.id).await.into_boxed_str());
        let arrive = |identity: &'static str, link: &'static str, is_host| Arrival {
            sid: Some(Box::leak(sid.clone().into_boxed_str())),
            link: Some(link),
            room: Box::leak(r.room.clone().into_boxed_str()),
            identity,
            is_host,
            lobby: true,
        };
        let ida = Box::leak(format!("site-{}", a.id).into_boxed_str());
        let idb = Box::leak(format!("site-{}", b.id).into_boxed_str());
        let idh = Box::leak(format!("site-{}", host.id).into_boxed_str());
        assert!(matches!(
            m.gate(&arrive(ida, la, false)).await.unwrap(),
            Admission::Wait { .. }
        ));
        assert!(matches!(
            m.gate(&arrive(idb, la, false)).await.unwrap(),
            Admission::Refused(Refusal::NotInvited, _)
        ));
        assert_eq!(
            m.gate(&arrive(idh, lh, true)).await.unwrap(),
            Admission::Direct
        );
        // Another site's link, or none, is no link for this site.
        assert!(matches!(
            m.gate(&arrive(ida, lh, false)).await.unwrap(),
            Admission::Refused(Refusal::LinkRevoked, _)
        ));
        m.admitted(r.id, ida, la).await.unwrap();
        assert_eq!(
            m.gate(&arrive(ida, la, false)).await.unwrap(),
            Admission::Direct
        );

        // Reissue: the old link is refused, the new one waits in the lobby again.
        let op = Actor {
            operator: "admin".into(),
            address: "10.0.0.1".into(),
        };
        let new = m.reissue_link(&op, r.id, a.id).await.unwrap();
        let ln: &'static str = Box::leak(new.id.into_boxed_str());
        assert!(matches!(
            m.gate(&arrive(ida, la, false)).await.unwrap(),
            Admission::Refused(Refusal::LinkRevoked, _)
        ));
        assert!(matches!(
            m.gate(&arrive(ida, ln, false)).await.unwrap(),
            Admission::Wait { .. }
        ));
        m.admitted(r.id, ida, ln).await.unwrap();
        assert_eq!(
            m.gate(&arrive(ida, ln, false)).await.unwrap(),
            Admission::Direct
        );
        // A ban refuses whatever the token.
        let ban = m.ban(&op, &r.room, ida).await.unwrap();
        assert!(matches!(
            m.gate(&arrive(ida, ln, false)).await.unwrap(),
            Admission::Refused(Refusal::Banned, _)
        ));
        m.unban(&op, ban.id).await.unwrap();
        assert_eq!(
            m.gate(&arrive(ida, ln, false)).await.unwrap(),
            Admission::Direct
        );
        let log = m.audit_log(10, None).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["ban_remove", "ban_add", "link_reissue"]);
        assert_eq!(log[2].address, "10.0.0.1");

        let now = crate::wib::now_ms();
        for (kind, p, at) in [
            (AttendanceKind::Join, "p1", now),
            (AttendanceKind::Leave, "p1", now + 120_000),
            // Still connected when the server dies: closed at the next start.
            (AttendanceKind::Join, "p9", now + 130_000),
        ] {
            m.record(Membership {
                room: r.room.clone(),
                participant: p.into(),
                identity: ida.to_owned(),
                name: Personal("Dishub".into()),
                role: "participant".into(),
                kind,
                reason: None,
                at_ms: at,
            })
            .await
            .unwrap();
        }
        // Removed by the host: a join with the admitted link waits in the lobby again.
        m.record(Membership {
            room: r.room.clone(),
            participant: "p9".into(),
            identity: ida.to_owned(),
            name: Personal::default(),
            role: String::new(),
            kind: AttendanceKind::Leave,
            reason: Some("removed".into()),
            at_ms: now + 140_000,
        })
        .await
        .unwrap();
        assert!(matches!(
            m.gate(&arrive(ida, ln, false)).await.unwrap(),
            Admission::Wait { .. }
        ));
        m.record(Membership {
            room: r.room.clone(),
            participant: "p10".into(),
            identity: ida.to_owned(),
            name: Personal("Dishub".into()),
            role: "participant".into(),
            kind: AttendanceKind::Join,
            reason: None,
            at_ms: now + 150_000,
        })
        .await
        .unwrap();
        drop(m);
        let m = db.manager(SessionSettings::default()).await;
        let events = m.store.attendance(r.id).await.unwrap();
        let closed: Vec<_> = events
            .iter()
            .filter(|e| e.participant == "p10" && e.kind == AttendanceKind::Leave)
            .collect();
        assert_eq!(
            closed.len(),
            1,
            "the open join is closed on restart: {events:?}"
        );
        assert_eq!(closed[0].reason.as_deref(), Some("server_restart"));
        assert!(closed[0].at_ms >= now + 150_000);
        // Opening again closes nothing more.
        assert_eq!(
            m.store
                .close_open_attendance("", now + 200_000)
                .await
                .unwrap(),
            0
        );
        let reg = m.register(r.id).await.unwrap();
        let row = reg.rows.iter().find(|x| x.identity == *ida).unwrap();
        assert!(row.total_minutes >= 2, "{row:?}");
        assert!(
            row.last_leave_utc.is_some(),
            "no one left open after the restart"
        );
        assert_eq!(m.rakor(r.id).await.unwrap().stored_state, RakorState::Live);
        assert_eq!(m.list_sites().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn login_rate_limit_and_tokens() {
        for db in TestDb::all() {
            login_rate_limit_and_tokens_on(&db).await;
        }
    }

    async fn login_rate_limit_and_tokens_on(db: &TestDb) {
        let m = db
            .manager(SessionSettings {
                login_max_failures: 2,
                ..Default::default()
            })
            .await;
        m.add_operator("admin", "a long password", false)
            .await
            .unwrap();
        assert!(m
            .add_operator("admin", "a long password", false)
            .await
            .is_err());
        let (secret, op) = m
            .login("Admin", "a long password", "1.2.3.4")
            .await
            .unwrap();
        assert_eq!(m.session_operator(&secret).await.unwrap(), Some(op.clone()));
        for _ in 0..2 {
            assert!(matches!(
                m.login("admin", "nope", "1.2.3.4").await,
                Err(SessionError::Unauthorized(_))
            ));
        }
        assert!(matches!(
            m.login("admin", "a long password", "1.2.3.4").await,
            Err(SessionError::RateLimited { .. })
        ));
        // The lockout is per (username, address): the operator elsewhere still logs in.
        m.login("admin", "a long password", "10.9.8.7")
            .await
            .unwrap();
        let (tok, _) = m.create_api_token(&op, "script").await.unwrap();
        assert_eq!(m.token_operator(&tok).await.unwrap(), Some(op.clone()));
        m.logout(&secret).await.unwrap();
        assert_eq!(m.session_operator(&secret).await.unwrap(), None);

        // A password reset ends every login and API token of the account.
        let (secret, _) = m
            .login("admin", "a long password", "10.9.8.7")
            .await
            .unwrap();
        let actor = Actor {
            operator: "root".into(),
            address: "10.0.0.1".into(),
        };
        m.reset_password(&actor, op.id, "another long password")
            .await
            .unwrap();
        assert_eq!(m.session_operator(&secret).await.unwrap(), None);
        assert_eq!(m.token_operator(&tok).await.unwrap(), None);
        // A disabled operator cannot log in, and its login ends.
        let other = m
            .add_operator("other", "a long password", false)
            .await
            .unwrap();
        let (s2, _) = m
            .login("other", "a long password", "10.9.8.7")
            .await
            .unwrap();
        m.set_operator_disabled(&op, &actor, other.id, true)
            .await
            .unwrap();
        assert_eq!(m.session_operator(&s2).await.unwrap(), None);
        assert!(matches!(
            m.login("other", "a long password", "10.9.8.7").await,
            Err(SessionError::Forbidden(_))
        ));
        assert!(m
            .set_operator_disabled(&op, &actor, op.id, true)
            .await
            .is_err());
        let log = m.audit_log(100, None).await.unwrap();
        for action in [
            "login",
            "login_failed",
            "operator_password",
            "operator_disable",
            "login_refused",
        ] {
            assert!(
                log.iter().any(|e| e.action == action),
                "{action} in {log:?}"
            );
        }
        let failed = log.iter().find(|e| e.action == "login_failed").unwrap();
        assert_eq!(
            (failed.actor.as_str(), failed.address.as_str()),
            ("admin", "1.2.3.4")
        );
    }

    #[tokio::test]
    async fn chat_and_timeline_are_stored_with_the_rakor_of_their_room() {
        for db in TestDb::all() {
            chat_and_timeline_are_stored_with_the_rakor_of_their_room_on(&db).await;
        }
    }

    async fn chat_and_timeline_are_stored_with_the_rakor_of_their_room_on(db: &TestDb) {
        let m = db.manager(SessionSettings::default()).await;
        let host = m.create_site(&site("Command Room")).await.unwrap();
        let a = m.create_site(&site("Dinkes")).await.unwrap();
        let r = m
            .create_rakor(&RakorInput {
                title: "Rakor".into(),
                agenda: String::new(),
                start: wib_in(600),
                end: wib_in(4200),
                host_site_id: host.id,
                invited_site_ids: vec![a.id],
                room: None,
                node: None,
            })
            .await
            .unwrap();
        let now = crate::wib::now_ms();
        let chat = |text: &str| crate::record::ChatRecord {
            msg_id: "CH_1".into(),
            from_participant: "PA_1".into(),
            from_identity: crate::model::site_identity(a.id),
            from_name: "dinkes".into(),
            to_participant: None,
            to_identity: None,
            to_name: None,
            text: text.into(),
            at_ms: now,
        };
        m.record_chat(&r.room, chat("halo")).await.unwrap();
        // A room that belongs to no rakor stores nothing.
        m.record_chat("other-room", chat("lain")).await.unwrap();
        m.record_timeline(
            &r.room,
            crate::record::TimelineRecord {
                kind: "floor_given".into(),
                participant: Some("PA_1".into()),
                identity: Some(crate::model::site_identity(a.id)),
                name: Some("dinkes".into()),
                by: Some("operator".into()),
                detail: None,
                at_ms: now + 1,
            },
        )
        .await
        .unwrap();
        let rec = m.meeting_record(r.id).await.unwrap();
        assert_eq!(rec.chat.len(), 1);
        assert_eq!(rec.chat[0].text, "halo");
        assert_eq!(rec.chat[0].from_site, "Dinkes");
        assert_eq!(rec.floor.len(), 1);
        assert_eq!(rec.floor[0].site, "Dinkes");
        assert_eq!(rec.timeline.len(), 1);
        // Deleting the rakor deletes its record.
        m.delete_rakor(r.id).await.unwrap();
        assert!(m.store().chat(r.id).await.unwrap().is_empty());
        assert!(m.store().timeline(r.id).await.unwrap().is_empty());
    }
}
