//! The PostgreSQL side of [`AccessStore`]: operator administration, invitation links, bans and
//! the audit log (schema version 2, `migrations/postgres/0002_access.sql`).

use crate::access::{cut, AuditEntry, AuditRecord, Ban, InvitationLink, OperatorInfo};
use crate::error::{Result, SessionError};
use crate::postgres::{is_unique_violation, PgStore};
use crate::sqlite_access::utc_ms;
use crate::store::{AccessStore, Operator};
use sqlx::postgres::PgRow;
use sqlx::Row;

fn link_row(r: &PgRow) -> Result<InvitationLink> {
    Ok(InvitationLink {
        id: r.try_get("id")?,
        rakor_id: r.try_get("rakor_id")?,
        site_id: r.try_get("site_id")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn ban_row(r: &PgRow) -> Result<Ban> {
    Ok(Ban {
        id: r.try_get("id")?,
        room: r.try_get("room")?,
        identity: r.try_get("identity")?,
        created_utc: crate::wib::utc_string(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
    })
}

const LINK_COLS: &str = "id, rakor_id, site_id, created_at, revoked_at";
const BAN_COLS: &str = "id, room, identity, created_at, created_by";

#[async_trait::async_trait]
impl AccessStore for PgStore {
    async fn list_operators(&self) -> Result<Vec<OperatorInfo>> {
        let rows = sqlx::query(
            "SELECT id, username, disabled, created_at FROM operators ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OperatorInfo {
                    id: r.try_get("id")?,
                    username: r.try_get("username")?,
                    disabled: r.try_get::<i64, _>("disabled")? != 0,
                    created_utc: crate::wib::utc_string(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn operator_record(&self, username: &str) -> Result<Option<(Operator, String, bool)>> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, disabled FROM operators WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                Operator {
                    id: r.try_get("id")?,
                    username: r.try_get("username")?,
                },
                r.try_get("password_hash")?,
                r.try_get::<i64, _>("disabled")? != 0,
            ))
        })
        .transpose()
    }

    async fn set_operator_disabled(&self, id: i64, disabled: bool) -> Result<bool> {
        let r = sqlx::query("UPDATE operators SET disabled = $1 WHERE id = $2")
            .bind(i64::from(disabled))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_operator(&self, id: i64) -> Result<bool> {
        // Logins and API tokens go with it (ON DELETE CASCADE).
        let r = sqlx::query("DELETE FROM operators WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn end_operator_sessions(&self, id: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM login_sessions WHERE operator_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE operator_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn links(&self, rakor_id: i64) -> Result<Vec<InvitationLink>> {
        let rows = sqlx::query(&format!(
            "SELECT {LINK_COLS} FROM invitation_links WHERE rakor_id = $1 ORDER BY created_at, seq"
        ))
        .bind(rakor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_row).collect()
    }

    async fn link(&self, id: &str) -> Result<Option<InvitationLink>> {
        let row = sqlx::query(&format!(
            "SELECT {LINK_COLS} FROM invitation_links WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(link_row).transpose()
    }

    async fn insert_link(&self, l: &InvitationLink) -> Result<()> {
        sqlx::query(
            "INSERT INTO invitation_links (id, rakor_id, site_id, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&l.id)
        .bind(l.rakor_id)
        .bind(l.site_id)
        .bind(l.created_at)
        .bind(l.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revoke_links(&self, rakor_id: i64, site_id: i64, at: i64) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE invitation_links SET revoked_at = $1 WHERE rakor_id = $2 AND site_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(rakor_id)
        .bind(site_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn add_ban(&self, room: &str, identity: &str, by: &str) -> Result<Ban> {
        sqlx::query(
            "INSERT INTO bans (room, identity, created_at, created_by) VALUES ($1, $2, $3, $4)",
        )
        .bind(room)
        .bind(identity)
        .bind(crate::wib::now())
        .bind(by)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                SessionError::Conflict(format!("\"{identity}\" is already banned in \"{room}\""))
            } else {
                e.into()
            }
        })?;
        let row = sqlx::query(&format!(
            "SELECT {BAN_COLS} FROM bans WHERE room = $1 AND identity = $2"
        ))
        .bind(room)
        .bind(identity)
        .fetch_one(&self.pool)
        .await?;
        ban_row(&row)
    }

    async fn remove_ban(&self, id: i64) -> Result<Option<Ban>> {
        let row = sqlx::query(&format!("SELECT {BAN_COLS} FROM bans WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        sqlx::query("DELETE FROM bans WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        ban_row(&row).map(Some)
    }

    async fn list_bans(&self) -> Result<Vec<Ban>> {
        let rows = sqlx::query(&format!(
            "SELECT {BAN_COLS} FROM bans ORDER BY room, identity"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ban_row).collect()
    }

    async fn is_banned(&self, room: &str, identity: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM bans WHERE room = $1 AND identity = $2")
                .bind(room)
                .bind(identity)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    async fn append_audit(&self, at_ms: i64, e: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, address, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(at_ms)
        .bind(cut(&e.actor))
        .bind(cut(&e.address))
        .bind(e.action)
        .bind(cut(&e.target))
        .bind(cut(&e.detail))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit(&self, limit: i64, before: Option<i64>) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, address, action, target, detail FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at_utc: utc_ms(r.try_get("at_ms")?),
                    actor: r.try_get("actor")?,
                    address: r.try_get("address")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}
