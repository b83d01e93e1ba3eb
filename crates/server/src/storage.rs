//! Opening the session manager's SQLite database at start-up (`session.database` in the data
//! directory, with the login settings of the `session` config section).

use crate::config::Config;
use rakor_session::{SessionManager, SessionSettings};
use std::sync::Arc;

/// Open the session database (`session.database` in the data directory).
pub async fn open_session_manager(config: &Config) -> anyhow::Result<Arc<SessionManager>> {
    let path = config.session_database_path();
    let settings = SessionSettings {
        login_ttl: config.session.login_ttl,
        login_max_failures: config.session.login_max_failures,
        login_max_failures_per_address: config.session.login_max_failures_per_address,
        login_lockout: config.session.login_lockout,
        hash_concurrency: config.session.password_hash_concurrency,
        hash_queue: config.session.password_hash_queue,
    };
    let manager = SessionManager::open_sqlite(&path, settings)
        .await
        .map_err(|e| anyhow::anyhow!("session database {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "session database open");
    Ok(Arc::new(manager))
}
