//! [`AppState`]: what every request handler and signalling connection shares. A leaf: it
//! names the parts (config, signing key, media core, session manager, limits, shutdown) and
//! imports none of the modules that use it (`app` builds it; `http`, `api`, `signal`, `lobby`
//! and `shutdown` read it).

use crate::config::Config;
use crate::signing_key::SigningKey;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by every request handler; cheap to clone.
///
/// Contract for signalling (`signal.rs`):
/// - run each WebSocket connection inside `tracker` (`state.tracker.track_future(..)` or
///   `state.tracker.spawn(..)`), so shutdown can wait for it to flush;
/// - once `shutdown` is cancelled, refuse new joins (`server_shutting_down`) but keep
///   forwarding the participant's events until the SFU drops the event sender: the SFU sends
///   `leave {reason: "server_shutdown"}` first, then drops it; then close the socket.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Verifies access tokens (`crate::token::verify`).
    pub signing_key: Arc<SigningKey>,
    /// Commands to the media core.
    pub sfu: rakor_sfu::SfuHandle,
    /// Cancelled on SIGINT/SIGTERM (or when the server fails).
    pub shutdown: CancellationToken,
    /// Tracks signalling connection tasks for the drain.
    pub tracker: TaskTracker,
    /// The session manager: operators, directory, rakor, lobby, attendance (`crate::api`,
    /// `crate::lobby`).
    pub session: Arc<rakor_session::SessionManager>,
    /// Unauthenticated connections and join attempts per IP (`crate::limits`).
    pub limits: Arc<crate::limits::SignalLimits>,
    /// The TURN server as the listeners see it (the one-port demux hands it decrypted TLS
    /// streams); `None` when `turn.enabled` is false.
    pub turn: Option<crate::byte_stream::SharedTurnStreams>,
    /// The same TURN server, for minting `joined.ice_servers`; `None` when disabled.
    pub turn_service: Option<Arc<crate::turn::TurnService>>,
    /// This node as a cluster member (`cluster.redis_url`): where rooms live
    /// (`crate::cluster`); `None` for a single node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The relay legs of rooms spanning nodes (`cluster.cascade`); `None` otherwise.
    pub cascade: Option<Arc<crate::cascade::Cascade>>,
}
