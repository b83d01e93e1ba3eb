//! The load, soak and bot tooling behind the `tools` cargo feature (on by default; the server
//! proper builds without it: `cargo build -p rakor-server --no-default-features`). All of it
//! drives a server from the outside as `rakor-client` participants; none of it runs inside
//! `rakor serve`.
//!
//! | module | subcommand |
//! | --- | --- |
//! | [`bot`] | `rakor bot`: one headless participant and its report |
//! | [`soak`] | `rakor soak`: bounded soak test of a running server |
//! | [`loadtest`] | `rakor loadtest`: bounded load test of a server on this machine |

pub mod bot;
pub mod loadtest;
pub mod soak;
