//! The PostgreSQL side of [`RecordStore`]: chat and the room's timeline (schema version 3,
//! `migrations/postgres/0003_record.sql`).

use crate::error::Result;
use crate::postgres::PgStore;
use crate::record::{ChatRecord, TimelineRecord};
use crate::store::RecordStore;
use sqlx::Row;

#[async_trait::async_trait]
impl RecordStore for PgStore {
    async fn record_chat(&self, rakor_id: i64, c: &ChatRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO chat_messages (rakor_id, msg_id, from_participant, from_identity, from_name, to_participant, to_identity, to_name, text, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(rakor_id)
        .bind(&c.msg_id)
        .bind(&c.from_participant)
        .bind(&c.from_identity)
        .bind(&c.from_name)
        .bind(&c.to_participant)
        .bind(&c.to_identity)
        .bind(&c.to_name)
        .bind(&c.text)
        .bind(c.at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn chat(&self, rakor_id: i64) -> Result<Vec<ChatRecord>> {
        let rows = sqlx::query(
            "SELECT msg_id, from_participant, from_identity, from_name, to_participant, to_identity, to_name, text, at_ms FROM chat_messages WHERE rakor_id = $1 ORDER BY at_ms, id",
        )
        .bind(rakor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChatRecord {
                    msg_id: r.try_get("msg_id")?,
                    from_participant: r.try_get("from_participant")?,
                    from_identity: r.try_get("from_identity")?,
                    from_name: r.try_get("from_name")?,
                    to_participant: r.try_get("to_participant")?,
                    to_identity: r.try_get("to_identity")?,
                    to_name: r.try_get("to_name")?,
                    text: r.try_get("text")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }

    async fn record_timeline(&self, rakor_id: i64, e: &TimelineRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO room_events (rakor_id, kind, participant, identity, name, by_name, detail, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(rakor_id)
        .bind(&e.kind)
        .bind(&e.participant)
        .bind(&e.identity)
        .bind(&e.name)
        .bind(&e.by)
        .bind(&e.detail)
        .bind(e.at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn timeline(&self, rakor_id: i64) -> Result<Vec<TimelineRecord>> {
        let rows = sqlx::query(
            "SELECT kind, participant, identity, name, by_name, detail, at_ms FROM room_events WHERE rakor_id = $1 ORDER BY at_ms, id",
        )
        .bind(rakor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TimelineRecord {
                    kind: r.try_get("kind")?,
                    participant: r.try_get("participant")?,
                    identity: r.try_get("identity")?,
                    name: r.try_get("name")?,
                    by: r.try_get("by_name")?,
                    detail: r.try_get("detail")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }
}
