//! Opening the session manager's storage at start-up: the SQLite file `session.database` in the
//! data directory (the embedded default), or PostgreSQL when `storage.database_url` is set.

use crate::config::Config;
use rakor_session::postgres::{redact_url, PgStore};
use rakor_session::sqlite::SqliteStore;
use rakor_session::store::Store;
use rakor_session::{SessionManager, SessionSettings};
use std::sync::Arc;

/// The store the configuration names, and how to name it in messages (no password).
pub async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, String)> {
    if let Some(url) = config.postgres_url() {
        let shown = redact_url(url);
        let store = PgStore::open(url)
            .await
            .map_err(|e| anyhow::anyhow!("session database {shown}: {e}"))?;
        return Ok((Arc::new(store), shown));
    }
    let path = config.session_database_path();
    let store = SqliteStore::open(&path)
        .await
        .map_err(|e| anyhow::anyhow!("session database {}: {e}", path.display()))?;
    Ok((Arc::new(store), path.display().to_string()))
}

/// Open the session storage and start the session manager on it (attendance a crashed run
/// left open is closed).
pub async fn open_session_manager(config: &Config) -> anyhow::Result<Arc<SessionManager>> {
    let settings = SessionSettings {
        login_ttl: config.session.login_ttl,
        login_max_failures: config.session.login_max_failures,
        login_max_failures_per_address: config.session.login_max_failures_per_address,
        login_lockout: config.session.login_lockout,
        hash_concurrency: config.session.password_hash_concurrency,
        hash_queue: config.session.password_hash_queue,
        node: config.cluster_node_id(),
    };
    let (store, shown) = open_store(config).await?;
    let manager = SessionManager::open_store(store, settings)
        .await
        .map_err(|e| anyhow::anyhow!("session database {shown}: {e}"))?;
    tracing::info!(database = %shown, "session database open");
    Ok(Arc::new(manager))
}
