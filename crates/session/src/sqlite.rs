//! [`SqliteStore`]: the default [`Store`], one SQLite file in the data directory in WAL mode
//! with `synchronous = FULL` (a committed change survives `kill -9` and power loss), foreign
//! keys on, and the embedded migrations (`migrations/*.sql`) applied at open.

use crate::error::{Result, SessionError};
use crate::model::{
    name_key, AttendanceEvent, AttendanceKind, Personal, Rakor, RakorDraft, RakorState, Site,
    SiteInput, SiteKind,
};
use crate::store::{ApiTokenInfo, Operator, Store};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// The embedded migrations, in order: (version, SQL).
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_access.sql")),
    (3, include_str!("../migrations/0003_record.sql")),
    (4, include_str!("../migrations/0004_attendance_node.sql")),
    (5, include_str!("../migrations/0005_rakor_node.sql")),
];

/// SQLite storage.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if missing) the database file and migrate it.
    pub async fn open(path: &Path) -> Result<Self> {
        create_private(path)?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|e| SessionError::Storage(format!("cannot open {}: {e}", path.display())))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(crate::wib::now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "database migration applied");
        }
        Ok(())
    }

    /// Close the pool (checkpoints the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Create the database file readable by its owner only (0600) before SQLite opens it (the
/// WAL and shared-memory files take the database file's mode); tighten an existing one.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let fail =
        |e: std::io::Error| SessionError::Storage(format!("cannot create {}: {e}", path.display()));
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(fail)?;
                tracing::warn!(path = %path.display(), "the database file was readable by others; now 0600");
            }
        }
        Err(_) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map(drop)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(fail)?;
        }
    }
    Ok(())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn site_row(r: &SqliteRow) -> Result<Site> {
    let kind: String = r.try_get("kind")?;
    Ok(Site {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: SiteKind::parse(&kind).unwrap_or(SiteKind::Other),
        contact_person: Personal(r.try_get("contact_person")?),
        phone: Personal(r.try_get("phone")?),
        active: r.try_get::<i64, _>("active")? != 0,
    })
}

const SITE_COLS: &str = "id, name, kind, contact_person, phone, active";
const RAKOR_COLS: &str = "id, title, agenda, room, start_at, end_at, host_site_id, state, node";

impl SqliteStore {
    async fn rakor_from_row(&self, r: &SqliteRow) -> Result<Rakor> {
        let id: i64 = r.try_get("id")?;
        let invited: Vec<i64> = sqlx::query_scalar(
            "SELECT site_id FROM rakor_invites WHERE rakor_id = ? ORDER BY site_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let state: String = r.try_get("state")?;
        Ok(Rakor {
            id,
            title: r.try_get("title")?,
            agenda: r.try_get("agenda")?,
            room: r.try_get("room")?,
            start_at: r.try_get("start_at")?,
            end_at: r.try_get("end_at")?,
            host_site_id: r.try_get("host_site_id")?,
            node: r.try_get("node")?,
            invited,
            stored_state: RakorState::parse(&state),
        })
    }

    async fn require_rakor(&self, id: i64) -> Result<Rakor> {
        self.get_rakor(id)
            .await?
            .ok_or_else(|| SessionError::not_found("rakor", id))
    }

    /// Write a rakor's fields and invitations inside `tx`, checking room overlap.
    async fn write_rakor(
        tx: &mut sqlx::SqliteConnection,
        id: Option<i64>,
        d: &RakorDraft,
    ) -> Result<i64> {
        let now = crate::wib::now();
        let id = match id {
            Some(id) => {
                sqlx::query(
                    "UPDATE rakor SET title = ?, agenda = ?, start_at = ?, end_at = ?, host_site_id = ?, updated_at = ? WHERE id = ?",
                )
                .bind(&d.title)
                .bind(&d.agenda)
                .bind(d.start_at)
                .bind(d.end_at)
                .bind(d.host_site_id)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => sqlx::query(
                "INSERT INTO rakor (title, agenda, room, start_at, end_at, host_site_id, state, created_at, updated_at) VALUES (?, ?, '', ?, ?, ?, 'scheduled', ?, ?)",
            )
            .bind(&d.title)
            .bind(&d.agenda)
            .bind(d.start_at)
            .bind(d.end_at)
            .bind(d.host_site_id)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .last_insert_rowid(),
        };
        let room = d.room.clone().unwrap_or_else(|| format!("rakor-{id}"));
        let clash: Option<String> = sqlx::query_scalar(
            "SELECT title FROM rakor WHERE room = ? AND id != ? AND state != 'ended' AND start_at - 1800 < ? AND end_at > ?",
        )
        .bind(&room)
        .bind(id)
        .bind(d.end_at)
        .bind(d.start_at - 1800)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(title) = clash {
            return Err(SessionError::Conflict(format!(
                "room \"{room}\" is already used at that time by \"{title}\""
            )));
        }
        sqlx::query("UPDATE rakor SET room = ?, node = ? WHERE id = ?")
            .bind(&room)
            .bind(&d.node)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rakor_invites WHERE rakor_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for site in &d.invited {
            sqlx::query("INSERT INTO rakor_invites (rakor_id, site_id) VALUES (?, ?)")
                .bind(id)
                .bind(site)
                .execute(&mut *tx)
                .await?;
        }
        Ok(id)
    }

    async fn insert_site_in(tx: &mut sqlx::SqliteConnection, s: &SiteInput) -> Result<i64> {
        let now = crate::wib::now();
        sqlx::query(
            "INSERT INTO sites (name, name_key, kind, contact_person, phone, active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.name)
        .bind(name_key(&s.name))
        .bind(s.kind.as_str())
        .bind(s.contact_person.expose())
        .bind(s.phone.expose())
        .bind(i64::from(s.active.unwrap_or(true)))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map(|r| r.last_insert_rowid())
        .map_err(|e| {
            if is_unique_violation(&e) {
                SessionError::Conflict(format!("a site named \"{}\" already exists", s.name))
            } else {
                e.into()
            }
        })
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn operator_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM operators")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn add_operator(&self, username: &str, password_hash: &str) -> Result<Operator> {
        let r = sqlx::query(
            "INSERT INTO operators (username, password_hash, created_at) VALUES (?, ?, ?)",
        )
        .bind(username)
        .bind(password_hash)
        .bind(crate::wib::now())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                SessionError::Conflict(format!("operator \"{username}\" already exists"))
            } else {
                e.into()
            }
        })?;
        Ok(Operator {
            id: r.last_insert_rowid(),
            username: username.to_owned(),
        })
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE operators SET password_hash = ? WHERE username = ?")
            .bind(password_hash)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn create_login(
        &self,
        token_hash: &str,
        operator_id: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO login_sessions (token_hash, operator_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
            .bind(token_hash)
            .bind(operator_id)
            .bind(crate::wib::now())
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn login_operator(&self, token_hash: &str, now: i64) -> Result<Option<Operator>> {
        let row = sqlx::query(
            "SELECT o.id, o.username FROM login_sessions s JOIN operators o ON o.id = s.operator_id WHERE s.token_hash = ? AND s.expires_at > ? AND o.disabled = 0",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Operator {
                id: r.try_get("id")?,
                username: r.try_get("username")?,
            })
        })
        .transpose()
    }

    async fn delete_login(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_sessions WHERE token_hash = ? OR expires_at < ?")
            .bind(token_hash)
            .bind(crate::wib::now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_api_token(
        &self,
        operator_id: i64,
        label: &str,
        token_hash: &str,
    ) -> Result<ApiTokenInfo> {
        let now = crate::wib::now();
        let r = sqlx::query("INSERT INTO api_tokens (operator_id, label, token_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(operator_id)
            .bind(label)
            .bind(token_hash)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(ApiTokenInfo {
            id: r.last_insert_rowid(),
            label: label.to_owned(),
            created_utc: crate::wib::utc_string(now),
        })
    }

    async fn api_token_operator(&self, token_hash: &str) -> Result<Option<Operator>> {
        let row = sqlx::query(
            "SELECT o.id, o.username FROM api_tokens t JOIN operators o ON o.id = t.operator_id WHERE t.token_hash = ? AND t.revoked = 0 AND o.disabled = 0",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Operator {
                id: r.try_get("id")?,
                username: r.try_get("username")?,
            })
        })
        .transpose()
    }

    async fn list_api_tokens(&self, operator_id: i64) -> Result<Vec<ApiTokenInfo>> {
        let rows = sqlx::query("SELECT id, label, created_at FROM api_tokens WHERE operator_id = ? AND revoked = 0 ORDER BY id")
            .bind(operator_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiTokenInfo {
                    id: r.try_get("id")?,
                    label: r.try_get("label")?,
                    created_utc: crate::wib::utc_string(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn revoke_api_token(&self, operator_id: i64, id: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE api_tokens SET revoked = 1 WHERE id = ? AND operator_id = ? AND revoked = 0",
        )
        .bind(id)
        .bind(operator_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn list_sites(&self) -> Result<Vec<Site>> {
        let rows = sqlx::query(&format!("SELECT {SITE_COLS} FROM sites ORDER BY name_key"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(site_row).collect()
    }

    async fn get_site(&self, id: i64) -> Result<Option<Site>> {
        let row = sqlx::query(&format!("SELECT {SITE_COLS} FROM sites WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(site_row).transpose()
    }

    async fn insert_site(&self, site: &SiteInput) -> Result<Site> {
        let mut tx = self.pool.begin().await?;
        let id = Self::insert_site_in(&mut tx, site).await?;
        tx.commit().await?;
        self.get_site(id)
            .await?
            .ok_or_else(|| SessionError::not_found("site", id))
    }

    async fn insert_sites(&self, sites: &[SiteInput]) -> Result<Vec<Site>> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(sites.len());
        for s in sites {
            ids.push(Self::insert_site_in(&mut tx, s).await?);
        }
        tx.commit().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = self.get_site(id).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn update_site(&self, id: i64, s: &SiteInput) -> Result<Site> {
        let r = sqlx::query(
            "UPDATE sites SET name = ?, name_key = ?, kind = ?, contact_person = ?, phone = ?, active = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&s.name)
        .bind(name_key(&s.name))
        .bind(s.kind.as_str())
        .bind(s.contact_person.expose())
        .bind(s.phone.expose())
        .bind(i64::from(s.active.unwrap_or(true)))
        .bind(crate::wib::now())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                SessionError::Conflict(format!("a site named \"{}\" already exists", s.name))
            } else {
                e.into()
            }
        })?;
        if r.rows_affected() == 0 {
            return Err(SessionError::not_found("site", id));
        }
        self.get_site(id)
            .await?
            .ok_or_else(|| SessionError::not_found("site", id))
    }

    async fn list_rakor(&self) -> Result<Vec<Rakor>> {
        let rows = sqlx::query(&format!(
            "SELECT {RAKOR_COLS} FROM rakor ORDER BY start_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.rakor_from_row(r).await?);
        }
        Ok(out)
    }

    async fn get_rakor(&self, id: i64) -> Result<Option<Rakor>> {
        let row = sqlx::query(&format!("SELECT {RAKOR_COLS} FROM rakor WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(self.rakor_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn insert_rakor(&self, draft: &RakorDraft) -> Result<Rakor> {
        let mut tx = self.pool.begin().await?;
        let id = Self::write_rakor(&mut tx, None, draft).await?;
        tx.commit().await?;
        self.require_rakor(id).await
    }

    async fn update_rakor(&self, id: i64, draft: &RakorDraft) -> Result<Rakor> {
        let old = self.require_rakor(id).await?;
        let mut tx = self.pool.begin().await?;
        let draft = RakorDraft {
            room: draft.room.clone().or(Some(old.room)),
            ..draft.clone()
        };
        Self::write_rakor(&mut tx, Some(id), &draft).await?;
        tx.commit().await?;
        self.require_rakor(id).await
    }

    async fn set_rakor_state(&self, id: i64, state: RakorState) -> Result<()> {
        sqlx::query("UPDATE rakor SET state = ?, updated_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(crate::wib::now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_rakor(&self, id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM rakor WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn rakor_for_room(&self, room: &str, now: i64) -> Result<Option<Rakor>> {
        let row = sqlx::query(&format!(
            "SELECT {RAKOR_COLS} FROM rakor WHERE room = ? AND state != 'ended' AND start_at - 1800 <= ? AND end_at > ? ORDER BY start_at LIMIT 1"
        ))
        .bind(room)
        .bind(now)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(self.rakor_from_row(&r).await?)),
            None => Ok(None),
        }
    }

    async fn record_attendance(
        &self,
        rakor_id: i64,
        node: &str,
        e: &AttendanceEvent,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO attendance_events (rakor_id, identity, name, role, participant, kind, reason, at_ms, node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(rakor_id)
        .bind(&e.identity)
        .bind(e.name.expose())
        .bind(&e.role)
        .bind(&e.participant)
        .bind(match e.kind {
            AttendanceKind::Join => "join",
            AttendanceKind::Leave => "leave",
        })
        .bind(&e.reason)
        .bind(e.at_ms)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close_open_attendance(&self, node: &str, at_ms: i64) -> Result<u64> {
        let r = sqlx::query(
            "INSERT INTO attendance_events (rakor_id, identity, name, role, participant, kind, reason, at_ms, node) \
             SELECT j.rakor_id, j.identity, j.name, j.role, j.participant, 'leave', 'server_restart', MAX(?, j.at_ms), j.node \
             FROM attendance_events j WHERE j.kind = 'join' AND j.node = ? AND NOT EXISTS ( \
               SELECT 1 FROM attendance_events l WHERE l.kind = 'leave' AND l.rakor_id = j.rakor_id \
               AND l.participant = j.participant AND l.at_ms >= j.at_ms)",
        )
        .bind(at_ms)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn attendance(&self, rakor_id: i64) -> Result<Vec<AttendanceEvent>> {
        let rows = sqlx::query(
            "SELECT identity, name, role, participant, kind, reason, at_ms FROM attendance_events WHERE rakor_id = ? ORDER BY at_ms, id",
        )
        .bind(rakor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(AttendanceEvent {
                    identity: r.try_get("identity")?,
                    name: Personal(r.try_get("name")?),
                    role: r.try_get("role")?,
                    participant: r.try_get("participant")?,
                    kind: if kind == "join" {
                        AttendanceKind::Join
                    } else {
                        AttendanceKind::Leave
                    },
                    reason: r.try_get("reason")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }

    async fn admit(&self, rakor_id: i64, identity: &str, link_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO admissions (rakor_id, identity, link_id, admitted_at) VALUES (?, ?, ?, ?)",
        )
        .bind(rakor_id)
        .bind(identity)
        .bind(link_id)
        .bind(crate::wib::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn is_admitted(&self, rakor_id: i64, identity: &str, link_id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM admissions WHERE rakor_id = ? AND identity = ? AND link_id = ?",
        )
        .bind(rakor_id)
        .bind(identity)
        .bind(link_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    async fn revoke_admission(&self, rakor_id: i64, identity: &str) -> Result<()> {
        sqlx::query("DELETE FROM admissions WHERE rakor_id = ? AND identity = ?")
            .bind(rakor_id)
            .bind(identity)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
