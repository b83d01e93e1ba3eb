//! The storage back ends the store tests run on: SQLite always, and PostgreSQL too when
//! `RAKOR_TEST_POSTGRES_URL` is set (tests/run.sh starts a throw-away server and sets it). Each
//! PostgreSQL case gets a fresh schema of its own, so tests run in parallel on one database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::store::Store;
use crate::{SessionManager, SessionSettings};
use std::path::Path;
use std::sync::Arc;

/// The variable naming the PostgreSQL server of the tests.
pub const POSTGRES_URL_VAR: &str = "RAKOR_TEST_POSTGRES_URL";

pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl TestDb {
    /// SQLite, and PostgreSQL when configured. A set but unreachable server fails the test.
    pub fn all() -> Vec<TestDb> {
        let mut out = vec![TestDb::Sqlite(tempfile::tempdir().unwrap())];
        if let Ok(url) = std::env::var(POSTGRES_URL_VAR) {
            if !url.trim().is_empty() {
                let schema = format!("t_{:016x}", rand::random::<u64>());
                out.push(TestDb::Postgres { url, schema });
            }
        }
        out
    }

    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    /// The SQLite data directory (None on PostgreSQL).
    pub fn sqlite_dir(&self) -> Option<&Path> {
        match self {
            TestDb::Sqlite(dir) => Some(dir.path()),
            TestDb::Postgres { .. } => None,
        }
    }

    /// Open (again) the store of this case.
    pub async fn store(&self) -> Arc<dyn Store> {
        match self {
            TestDb::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("rakor.sqlite3"))
                    .await
                    .unwrap(),
            ),
            TestDb::Postgres { url, schema } => Arc::new(
                PgStore::open_in_schema(url, Some(schema))
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR}: {e}")),
            ),
        }
    }

    /// Open (again) a session manager on this case's store, as the server does at start.
    pub async fn manager(&self, settings: SessionSettings) -> SessionManager {
        SessionManager::open_store(self.store().await, settings)
            .await
            .unwrap()
    }
}
