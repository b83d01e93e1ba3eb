//! The cascade (issue 17, `cluster.cascade = true`): a room spanning nodes. A join for a room
//! another node owns is served here, and while this node has participants in the room it runs
//! one relay leg to the owner, both directions ([`rakor_client::relay::relay_one_way`]):
//!
//! - *in*: a relay subscriber joined to the owner (identity `cascade/<this node>`) receives
//!   every track there except those that came from this node, and republishes each
//!   participant's tracks here (identity `cascade/<origin node>/<identity>`);
//! - *out*: a relay subscriber joined here (identity `cascade/<owner>`) receives this node's
//!   own participants' tracks and republishes them on the owner
//!   (`cascade/<this node>/<identity>`).
//!
//! Nodes form a star around the room's owner, so a track crosses each node boundary once
//! (a track from node B to node C goes B → owner → C). Every relay participant's token is
//! minted here with the cluster-shared `auth.signing_key` (and its identity marks it, so its
//! tracks are never relayed back). Counted in `/metrics` per peer node and direction.

use crate::signing_key::SigningKey;
use crate::token::{self, Claims};
use rakor_client::relay::{relay_one_way_with, MintToken, RelayCounters, CASCADE_PREFIX};
use rakor_client::relay_control::RelayControl;
use rakor_client::ClientOptions;
use rakor_proto::{ParticipantInfo, Role};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Relay tokens live this long (a relay leg that must rejoin later mints new ones).
const RELAY_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// A leg that failed is started again after this long while the room has participants here.
const RETRY: Duration = Duration::from_secs(2);

/// Whether an identity is a relay participant's (`cascade/…`).
pub fn is_relay_identity(identity: &str) -> bool {
    identity.starts_with(CASCADE_PREFIX)
}

/// The node a relay participant's tracks came from: `cascade/<node>/<identity>` → node;
/// `None` for a relay subscriber (`cascade/<node>`) or a local participant.
fn origin_node(identity: &str) -> Option<&str> {
    let rest = identity.strip_prefix(CASCADE_PREFIX)?;
    let (node, _) = rest.split_once('/')?;
    Some(node)
}

/// What the legs to one peer node counted.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Owner → here.
    pub inbound: Arc<RelayCounters>,
    /// Here → owner.
    pub outbound: Arc<RelayCounters>,
}

struct Bridge {
    users: usize,
    stop: CancellationToken,
}

/// This node's cascade legs.
pub struct Cascade {
    node_id: String,
    /// This node's own signalling URL, for the relay participants joined here.
    local_url: String,
    key: Arc<SigningKey>,
    bridges: Mutex<HashMap<String, Bridge>>,
    peers: Mutex<BTreeMap<String, Arc<PeerCounters>>>,
    shutdown: CancellationToken,
    /// This node's SFU, for applying the owner's room state here ([`crate::cascade_room`]).
    sfu: std::sync::OnceLock<rakor_sfu::SfuHandle>,
}

impl std::fmt::Debug for Cascade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cascade")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Keeps the room's legs up while a participant of this node is in it.
pub struct CascadeGuard {
    cascade: Arc<Cascade>,
    room: String,
}

impl Drop for CascadeGuard {
    fn drop(&mut self) {
        let mut bridges = self.cascade.lock_bridges();
        if let Some(b) = bridges.get_mut(&self.room) {
            b.users = b.users.saturating_sub(1);
            if b.users == 0 {
                b.stop.cancel();
                bridges.remove(&self.room);
                tracing::info!(room = %self.room, "cascade: no participant here; relay legs stop");
            }
        }
    }
}

impl Cascade {
    pub fn new(
        node_id: String,
        local_url: String,
        key: Arc<SigningKey>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            local_url,
            key,
            bridges: Mutex::new(HashMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            shutdown,
            sfu: std::sync::OnceLock::new(),
        })
    }

    /// Give the cascade this node's SFU: the owner's spotlight is then applied here
    /// ([`crate::cascade_room`]). Only the first call counts.
    pub fn attach_sfu(&self, sfu: rakor_sfu::SfuHandle) {
        let _ = self.sfu.set(sfu);
    }

    fn lock_bridges(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bridge>> {
        self.bridges.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peer(&self, node: &str) -> Arc<PeerCounters> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(peers.entry(node.to_owned()).or_default())
    }

    /// A participant of this node joined `room`, owned by `owner` (signalling at `owner_url`):
    /// start the room's legs if they are not up.
    pub fn enter(self: &Arc<Self>, room: &str, owner: &str, owner_url: &str) -> CascadeGuard {
        let mut bridges = self.lock_bridges();
        let b = bridges.entry(room.to_owned()).or_insert_with(|| {
            let stop = self.shutdown.child_token();
            tracing::info!(%room, %owner, "cascade: relay legs to the room's owner start");
            tokio::spawn(Arc::clone(self).run_legs(
                room.to_owned(),
                owner.to_owned(),
                owner_url.to_owned(),
                stop.clone(),
            ));
            Bridge { users: 0, stop }
        });
        b.users += 1;
        CascadeGuard {
            cascade: Arc::clone(self),
            room: room.to_owned(),
        }
    }

    fn mint(&self, room: &str, identity: &str, name: &str, role: Role) -> Result<String, String> {
        token::mint(
            &self.key,
            &Claims::new(room, identity, name, role, RELAY_TOKEN_TTL),
        )
        .map_err(|e| e.to_string())
    }

    /// The token of a republisher for `p` (relayed from a node where it is `p.identity`).
    fn republisher_minter(self: &Arc<Self>, room: &str, from_node: String) -> MintToken {
        let me = Arc::clone(self);
        let room = room.to_owned();
        Arc::new(move |p: &ParticipantInfo| {
            let identity = if is_relay_identity(&p.identity) {
                p.identity.clone() // already `cascade/<origin>/<identity>`
            } else {
                format!("{CASCADE_PREFIX}{from_node}/{}", p.identity)
            };
            let role = match p.role {
                Role::Host => Role::Host,
                _ => Role::Participant,
            };
            me.mint(&room, &identity, &p.name, role)
        })
    }

    async fn run_legs(
        self: Arc<Self>,
        room: String,
        owner: String,
        owner_url: String,
        stop: CancellationToken,
    ) {
        let counters = self.peer(&owner);
        let me = self.node_id.clone();
        // Room-wide spotlight (crate::cascade_room): the inbound leg learns the owner's, an
        // applier sets it here, the outbound leg forwards a local host's to the owner.
        let (wanted_tx, wanted_rx) = tokio::sync::watch::channel(None);
        if let Some(sfu) = self.sfu.get() {
            tokio::spawn(crate::cascade_room::apply_owner_spotlight(
                sfu.clone(),
                room.clone(),
                wanted_rx.clone(),
                stop.clone(),
            ));
        }
        let follow: Arc<dyn RelayControl> = Arc::new(crate::cascade_room::FollowOwner {
            owner: owner.clone(),
            me: me.clone(),
            wanted: wanted_tx,
        });
        let forward: Arc<dyn RelayControl> = Arc::new(crate::cascade_room::ForwardLocalHost {
            owner: owner.clone(),
            me: me.clone(),
            wanted: wanted_rx,
        });
        let inbound = {
            let this = Arc::clone(&self);
            let (room, owner, owner_url, stop, me) = (
                room.clone(),
                owner.clone(),
                owner_url.clone(),
                stop.clone(),
                me.clone(),
            );
            let c = Arc::clone(&counters.inbound);
            // Everything at the owner except what came from here.
            let relay_if = Arc::new(move |p: &ParticipantInfo| {
                !is_relay_identity(&p.identity) || origin_node(&p.identity).is_some_and(|n| n != me)
            });
            async move {
                let mint = this.republisher_minter(&room, owner.clone());
                this.leg(
                    &room,
                    &owner_url,
                    &this.local_url,
                    &this.node_id,
                    mint,
                    relay_if,
                    c,
                    Some(follow),
                    stop,
                )
                .await
            }
        };
        let outbound = {
            let this = Arc::clone(&self);
            let (room, owner, owner_url, stop) =
                (room.clone(), owner.clone(), owner_url.clone(), stop.clone());
            let c = Arc::clone(&counters.outbound);
            // Only this node's own participants.
            let relay_if = Arc::new(|p: &ParticipantInfo| !is_relay_identity(&p.identity));
            async move {
                let mint = this.republisher_minter(&room, this.node_id.clone());
                this.leg(
                    &room,
                    &this.local_url,
                    &owner_url,
                    &owner,
                    mint,
                    relay_if,
                    c,
                    Some(forward),
                    stop,
                )
                .await
            }
        };
        tokio::join!(inbound, outbound);
    }

    /// One direction, started again (after [`RETRY`]) when it fails, until `stop`.
    #[allow(clippy::too_many_arguments)]
    async fn leg(
        &self,
        room: &str,
        from_url: &str,
        to_url: &str,
        subscriber_suffix: &str,
        mint: MintToken,
        relay_if: Arc<dyn Fn(&ParticipantInfo) -> bool + Send + Sync>,
        counters: Arc<RelayCounters>,
        control: Option<Arc<dyn RelayControl>>,
        stop: CancellationToken,
    ) {
        while !stop.is_cancelled() {
            let identity = format!("{CASCADE_PREFIX}{subscriber_suffix}");
            let token = match self.mint(room, &identity, "cascade relay", Role::Viewer) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cascade: cannot mint the relay token");
                    return;
                }
            };
            let opts = ClientOptions::new(from_url.to_owned(), token);
            let result = relay_one_way_with(
                opts,
                to_url.to_owned(),
                Arc::clone(&mint),
                Arc::clone(&relay_if),
                Arc::clone(&counters),
                control.clone(),
                stop.clone().cancelled_owned(),
            )
            .await;
            counters.tracks.store(0, Ordering::Relaxed);
            if let Err(e) = result {
                tracing::warn!(%room, from = %from_url, to = %to_url, error = %e, "cascade: relay leg failed");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// `/metrics` lines: per peer node and direction, the tracks relayed now, since the start,
    /// and their payload bytes.
    pub fn metrics(&self, body: &mut String) {
        let peers: Vec<(String, Arc<PeerCounters>)> = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let rows: [(&str, &str, &str); 3] = [
            (
                "rakor_cascade_tracks",
                "gauge",
                "Tracks relayed now between this node and a peer node (cascade)",
            ),
            (
                "rakor_cascade_tracks_total",
                "counter",
                "Tracks relayed since the start between this node and a peer node (cascade)",
            ),
            (
                "rakor_cascade_bytes_total",
                "counter",
                "RTP payload bytes relayed between this node and a peer node (cascade)",
            ),
        ];
        for (i, (name, kind, help)) in rows.into_iter().enumerate() {
            body.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (peer, c) in &peers {
                for (dir, rc) in [("in", &c.inbound), ("out", &c.outbound)] {
                    let v = match i {
                        0 => rc.tracks.load(Ordering::Relaxed).max(0) as u64,
                        1 => rc.tracks_total.load(Ordering::Relaxed),
                        _ => rc.bytes.load(Ordering::Relaxed),
                    };
                    body.push_str(&format!(
                        "{name}{{peer_node=\"{peer}\",direction=\"{dir}\"}} {v}\n"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn relay_identities_and_their_origin() {
        assert!(is_relay_identity("cascade/node-a"));
        assert!(!is_relay_identity("bupati-kendal"));
        assert_eq!(origin_node("cascade/node-a/bupati"), Some("node-a"));
        assert_eq!(origin_node("cascade/node-a"), None);
        assert_eq!(origin_node("bupati"), None);
    }
}
