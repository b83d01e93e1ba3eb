//! `rakor-session`: the session manager of Rakor — operators, the directory of sites, scheduled
//! rakor (coordination meetings) with their invitations, the lobby, admissions and the
//! attendance register. No WebRTC, no HTTP: the server (`crates/server`) puts the routes and
//! the signalling gate in front of [`SessionManager`].
//!
//! | module | owns |
//! | --- | --- |
//! | [`model`] | records and their validation; [`model::Personal`] redacts personal data in `Debug` |
//! | [`wib`] | Asia/Jakarta (WIB) ⇄ UTC |
//! | [`store`] | the [`store::Store`] trait (storage, PostgreSQL later) |
//! | [`sqlite`] | the SQLite store: WAL, embedded migrations, files 0600 |
//! | [`access`] | invitation links, bans, operator accounts, the audit log (records) |
//! | [`auth`] | argon2 passwords, secrets |
//! | [`hash_pool`] | the bounded pool of threads that hash passwords |
//! | [`throttle`] | failed logins per address and per (username, address) |
//! | [`import`] | CSV import of sites |
//! | [`lobby`] | sites waiting for an operator's admit/refuse |
//! | [`attendance`] | the register (*daftar hadir*) and its CSV |
//! | [`record`] | the rakor's record (minutes): attendance, chat, hands, floor, timeline; CSV, HTML |

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod access;
pub mod attendance;
pub mod auth;
pub mod error;
pub mod hash_pool;
pub mod import;
pub mod lobby;
pub mod model;
pub mod postgres;
mod postgres_access;
mod postgres_record;
pub mod record;
pub mod sqlite;
mod sqlite_access;
mod sqlite_record;
pub mod store;
pub mod throttle;
pub mod wib;

mod manager;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod test_db;

pub use error::{Result, SessionError};
pub use manager::{
    Actor, Admission, Arrival, Membership, Refusal, SessionManager, SessionSettings,
};
