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

/// While legs run, the room's owner is checked this often (a dead owner's heartbeat expires
/// after `cluster::NODE_TTL`; then the first check moves the legs).
const FOLLOW_EVERY: Duration = Duration::from_secs(3);

/// What the legs do after an owner check.
#[derive(Debug, PartialEq, Eq)]
enum Follow {
    /// Another node owns the room now: the legs go there.
    Repoint { node: String, url: String },
    /// This node owns the room now: the legs stop.
    TakeOver,
}

/// Decide from the room's placement whether the legs to `owner` must move; `None`: they stay.
fn follow(owner: &str, placement: crate::cluster::Placement) -> Option<Follow> {
    use crate::cluster::Placement;
    match placement {
        Placement::Local => Some(Follow::TakeOver),
        Placement::Cascade { node, url } if node != owner => Some(Follow::Repoint { node, url }),
        // Same owner; or a redirect (only without `cluster.cascade`, which legs never have).
        Placement::Cascade { .. } | Placement::Redirect(_) => None,
    }
}

/// Whether an identity is a relay participant's (`cascade/…`).
pub fn is_relay_identity(identity: &str) -> bool {
    identity.starts_with(CASCADE_PREFIX)
}

/// Whether `token` is a valid token (signed with the cluster key, not expired) of a cascade
/// relay participant (identity `cascade/…`): such joins are exempt from the per-address join
/// rate. A forged, expired or malformed token, or an ordinary one, is not.
pub fn is_signed_relay_token(key: &SigningKey, token: &str) -> bool {
    token::verify(key, token, None).is_ok_and(|c| is_relay_identity(&c.sub))
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
    /// Set by [`Cascade::follow_owner`]: the legs re-resolve the room's owner through it.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
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
            cluster: std::sync::OnceLock::new(),
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
            tokio::spawn(Arc::clone(self).follow_legs(
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
        let forward: Arc<dyn RelayControl> = Arc::new(crate::cascade_room::ForwardLocalHost::new(
            owner.clone(),
            me.clone(),
            wanted_rx,
        ));
        // Chat, hands, floor and mute (crate::cascade_moderation), the same shape.
        let (follow, forward) = crate::cascade_moderation::controls(
            self.sfu.get().cloned(),
            &room,
            &owner,
            &me,
            (follow, forward),
            &stop,
        );
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
            let token = match self.mint(room, &identity, "cascade relay", Role::Relay) {
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

    /// Let the legs follow a new owner: while legs run, the room's placement is checked through
    /// `cluster` (Redis) every [`FOLLOW_EVERY`] (see [`Cascade::follow_legs`]).
    pub fn follow_owner(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The room's legs ([`Cascade::run_legs`]) to `owner`, moved when the owner changes: when
    /// the owner died and another node took the room, the legs go there; when this node took
    /// it (its lease had expired and the placement gave it here), the legs stop and this node
    /// keeps the room's lease while its participants are here (the other nodes' legs come).
    async fn follow_legs(
        self: Arc<Self>,
        room: String,
        owner: String,
        owner_url: String,
        stop: CancellationToken,
    ) {
        let (mut owner, mut owner_url) = (owner, owner_url);
        loop {
            let legs = stop.child_token();
            // A task: the old legs wind down in the background when they move (their relay
            // participants' leave towards a dead owner may take long).
            let mut run = tokio::spawn(Arc::clone(&self).run_legs(
                room.clone(),
                owner.clone(),
                owner_url.clone(),
                legs.clone(),
            ));
            let next = tokio::select! {
                _ = &mut run => return, // stopped: no participant of this node is left
                next = self.watch_owner(&room, &owner) => next,
            };
            legs.cancel();
            match next {
                Follow::Repoint { node, url } => {
                    tracing::info!(%room, old = %owner, new = %node, "cascade: the room has a new owner; the legs follow");
                    owner = node;
                    owner_url = url;
                }
                Follow::TakeOver => {
                    tracing::info!(%room, old = %owner, "cascade: this node took the room over; its legs stop");
                    let _lease = self.cluster.get().map(|c| c.enter(&room));
                    stop.cancelled().await;
                    return;
                }
            }
        }
    }

    /// Resolves when the room's placement (through Redis) names an owner other than `owner`.
    /// Never resolves without a cluster, nor while Redis cannot answer (the legs stay).
    async fn watch_owner(&self, room: &str, owner: &str) -> Follow {
        let Some(cluster) = self.cluster.get() else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: the owner was just resolved
        loop {
            tick.tick().await;
            match cluster.place(room).await {
                Ok(p) => {
                    if let Some(f) = follow(owner, p) {
                        return f;
                    }
                }
                Err(e) => {
                    tracing::debug!(%room, error = %e, "cascade: owner check failed; legs stay");
                }
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

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32]).unwrap()
    }

    #[test]
    fn only_a_valid_relay_token_is_exempt_from_the_join_rate() {
        let k = key(7);
        let ttl = Duration::from_secs(60);
        let relay = Claims::new("r", "cascade/node-b", "cascade relay", Role::Relay, ttl);
        let republisher = Claims::new("r", "cascade/node-b/kab", "Kab", Role::Participant, ttl);
        let site = Claims::new("r", "kab-kendal", "Kab", Role::Participant, ttl);
        assert!(is_signed_relay_token(&k, &token::mint(&k, &relay).unwrap()));
        assert!(is_signed_relay_token(
            &k,
            &token::mint(&k, &republisher).unwrap()
        ));
        assert!(!is_signed_relay_token(&k, &token::mint(&k, &site).unwrap()));
        // Forged: the right shape, another key.
        assert!(!is_signed_relay_token(
            &k,
            &token::mint(&key(8), &relay).unwrap()
        ));
        assert!(!is_signed_relay_token(&k, "not.a.token"));
        assert!(!is_signed_relay_token(&k, ""));
    }

    #[test]
    fn legs_follow_a_new_owner_and_stop_when_this_node_takes_the_room() {
        use crate::cluster::Placement;
        let at = |node: &str| Placement::Cascade {
            node: node.into(),
            url: format!("ws://{node}/rtc"),
        };
        assert_eq!(follow("node-a", at("node-a")), None);
        assert_eq!(
            follow("node-a", at("node-c")),
            Some(Follow::Repoint {
                node: "node-c".into(),
                url: "ws://node-c/rtc".into()
            })
        );
        assert_eq!(follow("node-a", Placement::Local), Some(Follow::TakeOver));
        assert_eq!(
            follow("node-a", Placement::Redirect("ws://x/rtc".into())),
            None
        );
    }

    #[test]
    fn relay_identities_and_their_origin() {
        assert!(is_relay_identity("cascade/node-a"));
        assert!(!is_relay_identity("bupati-kendal"));
        assert_eq!(origin_node("cascade/node-a/bupati"), Some("node-a"));
        assert_eq!(origin_node("cascade/node-a"), None);
        assert_eq!(origin_node("bupati"), None);
    }
}
