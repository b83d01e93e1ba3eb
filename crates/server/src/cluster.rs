//! Nodes of a province in Redis (`cluster.redis_url`; docs/architecture.md, "A province on
//! several nodes"). Each node publishes `rakor:node:<id>` (a hash: signalling URL, region, load)
//! with a [`NODE_TTL`] expiry renewed every [`HEARTBEAT`], and lists itself in `rakor:nodes`.
//! A room is owned by one node: the lease `rakor:room:<room>` = node id, taken with
//! `SET NX PX` when the first join of an unowned room arrives (for the least-loaded live node)
//! and renewed by the owner while the room has participants there (or may still resume).
//!
//! A `join` at a node that does not own the room is answered with a `redirect` to the owner's
//! URL ([`Placement::Redirect`]); signalling is never relayed. Nothing on the media path talks
//! to Redis: when Redis is down, rooms living on this node go on and accept joins; joins for
//! other rooms are refused (`cluster_unavailable`).
//!
//! A room may be pinned to a node id or region ([`Cluster::place_pinned`], from `rakor.node`):
//! placement then prefers the matching live nodes and falls back to all (logged). While Redis
//! is unreachable the heartbeat retries every [`RETRY`]; a Redis that came back empty is noticed
//! through the missing `rakor:cluster` key, and `rakor:settling` ([`SETTLE`]) holds off placing
//! free rooms while the nodes re-take their live rooms. [`Cluster::gauges`] feeds `/metrics`.

use crate::config::Config;
use redis::aio::ConnectionManager;
use redis::AsyncCommands as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a node renews its heartbeat and its room leases.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a node's heartbeat and its room leases live without renewal: a dead node's rooms
/// can be placed elsewhere at most this long after it died.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How long one placement may wait for Redis before the join is refused.
const PLACE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a node whose last heartbeat failed tries again (Redis back: leases re-taken soon).
const RETRY: Duration = Duration::from_millis(250);
/// After Redis lost its data (a restart without persistence) while a node had live rooms,
/// free rooms are not placed for this long: every node re-takes the leases of its live rooms
/// first (each retries every [`RETRY`] while Redis is down, and beats every [`HEARTBEAT`]).
const SETTLE: Duration = Duration::from_millis(3000);

const NODES_KEY: &str = "rakor:nodes";
/// Set (no expiry) by the first heartbeat on a Redis: its absence means Redis lost its data.
const MARKER_KEY: &str = "rakor:cluster";
/// Present (with an expiry of [`SETTLE`]) while the nodes re-take their leases.
const SETTLING_KEY: &str = "rakor:settling";

fn node_key(id: &str) -> String {
    format!("rakor:node:{id}")
}

fn room_key(room: &str) -> String {
    format!("rakor:room:{room}")
}

/// Take the lease when free, renew it when ours; 0 when another node holds it.
const RENEW_LEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Delete the lease if it still names `ARGV[1]`.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Where a join for a room goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This node owns the room (it holds the lease now).
    Local,
    /// Another live node owns it: the client sends its `join` to this signalling URL.
    Redirect(String),
    /// `cluster.cascade`: another live node (`node`, signalling at `url`) owns it; the join is
    /// served here and cascaded to the owner (`crate::cascade`).
    Cascade { node: String, url: String },
}

/// Why a room could not be placed.
#[derive(Debug, thiserror::Error)]
#[error("the cluster cannot place this room now ({0}); try again shortly")]
pub struct Unavailable(String);

/// This node's use of a room: signalling connections now, and since when it has none (the
/// room may still hold participants waiting to resume).
#[derive(Debug, Default)]
struct RoomUse {
    connections: usize,
    idle_since: Option<Instant>,
}

/// This node as a member of the cluster.
pub struct Cluster {
    redis: ConnectionManager,
    node_id: String,
    url: String,
    region: String,
    /// How long a room with no connection is still renewed (`server.resume_grace`).
    grace: Duration,
    rooms: Mutex<HashMap<String, RoomUse>>,
    /// `cluster.cascade`: joins for other nodes' rooms are served here ([`Placement::Cascade`]).
    cascade: bool,
    /// Gauges for `/metrics` ([`Cluster::gauges`]), written by the heartbeat.
    redis_up: AtomicBool,
    nodes_alive: AtomicU64,
    rooms_owned: AtomicU64,
}

/// This node's view of the cluster, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gauges {
    /// Whether the last heartbeat (or placement) reached Redis.
    pub redis_up: bool,
    /// Nodes with a live heartbeat at the last heartbeat, this one included.
    pub nodes_alive: u64,
    /// Rooms whose lease this node held at the last heartbeat.
    pub rooms_owned: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Join the cluster when `cluster.redis_url` is set: `None` for a single node. Redis need
    /// not be up yet (the connection is made lazily and re-made after failures); the heartbeat
    /// runs until `shutdown`, then this node leaves (its heartbeat and leases are deleted).
    pub fn start(
        config: &Config,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(url) = config.redis_url() else {
            return Ok(None);
        };
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("cluster.redis_url: {e}"))?;
        let cm_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, cm_config)
            .map_err(|e| anyhow::anyhow!("cluster.redis_url: {e}"))?;
        let node_id = config.cluster_node_id();
        let cluster = Arc::new(Self {
            redis,
            node_id,
            url: config.cluster_signal_url(listen),
            region: config.cluster.region.clone(),
            grace: config.server.resume_grace,
            rooms: Mutex::new(HashMap::new()),
            redis_up: AtomicBool::new(false),
            nodes_alive: AtomicU64::new(0),
            rooms_owned: AtomicU64::new(0),
            cascade: config.cluster.cascade,
        });
        tracing::info!(node = %cluster.node_id, url = %cluster.url, "cluster member (Redis)");
        tokio::spawn(Arc::clone(&cluster).heartbeat(shutdown));
        Ok(Some(cluster))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's region (`cluster.region`; may be empty).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The cluster gauges of `/metrics`.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            redis_up: self.redis_up.load(Ordering::Relaxed),
            nodes_alive: self.nodes_alive.load(Ordering::Relaxed),
            rooms_owned: self.rooms_owned.load(Ordering::Relaxed),
        }
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomUse>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the room has signalling connections on this node now.
    fn is_live_here(&self, room: &str) -> bool {
        self.lock_rooms()
            .get(room)
            .is_some_and(|u| u.connections > 0)
    }

    /// Count a signalling connection in `room` until the guard drops: the lease is renewed
    /// while any is open (and for `server.resume_grace` after the last one).
    pub fn enter(self: &Arc<Self>, room: &str) -> RoomGuard {
        let mut rooms = self.lock_rooms();
        let u = rooms.entry(room.to_owned()).or_default();
        u.connections += 1;
        u.idle_since = None;
        RoomGuard {
            cluster: Arc::clone(self),
            room: room.to_owned(),
        }
    }

    /// Decide where a join for `room` goes. Errors only when Redis cannot answer and the room
    /// has no connection on this node.
    pub async fn place(&self, room: &str) -> Result<Placement, Unavailable> {
        self.place_pinned(room, "").await
    }

    /// [`Self::place`] for a room pinned to a node id or region (`pin`; "" = by load): an
    /// unowned room goes to the least-loaded live node that matches, or, when none does, to
    /// the least-loaded live node (logged). A room already owned stays with its owner.
    pub async fn place_pinned(&self, room: &str, pin: &str) -> Result<Placement, Unavailable> {
        match tokio::time::timeout(PLACE_TIMEOUT, self.try_place(room, pin)).await {
            Ok(Ok(Ok(p))) => Ok(p),
            Ok(Ok(Err(settling))) => self.place_without_redis(room, settling.0),
            Ok(Err(e)) => {
                self.redis_up.store(false, Ordering::Relaxed);
                self.place_without_redis(room, e.to_string())
            }
            Err(_) => {
                self.redis_up.store(false, Ordering::Relaxed);
                self.place_without_redis(room, "Redis did not answer in time".into())
            }
        }
    }

    fn place_without_redis(&self, room: &str, why: String) -> Result<Placement, Unavailable> {
        if self.is_live_here(room) {
            tracing::warn!(%room, "Redis unavailable ({why}); the room lives here: joining locally");
            Ok(Placement::Local)
        } else {
            tracing::warn!(%room, "Redis unavailable ({why}): cannot place the room");
            Err(Unavailable(why))
        }
    }

    /// `Ok(Err(_))`: Redis answered but free rooms are not placed now ([`SETTLE`]).
    async fn try_place(
        &self,
        room: &str,
        pin: &str,
    ) -> redis::RedisResult<Result<Placement, Unavailable>> {
        let mut r = self.redis.clone();
        let key = room_key(room);
        let ttl = NODE_TTL.as_millis() as u64;
        // A few rounds: a lease held by a dead node is cleared, a race for a free lease lost.
        for _ in 0..4 {
            let owner: Option<String> = r.get(&key).await?;
            match owner {
                Some(id) if id == self.node_id => {
                    let held: i64 = redis::Script::new(RENEW_LEASE)
                        .key(&key)
                        .arg(&self.node_id)
                        .arg(ttl)
                        .invoke_async(&mut r)
                        .await?;
                    if held == 1 {
                        return Ok(Ok(Placement::Local));
                    }
                }
                Some(id) => {
                    let url: Option<String> = r.hget(node_key(&id), "url").await?;
                    match url {
                        Some(url) if self.cascade => {
                            return Ok(Ok(Placement::Cascade { node: id, url }))
                        }
                        Some(url) => return Ok(Ok(Placement::Redirect(url))),
                        None => {
                            // The owner's heartbeat expired: it is dead; free its lease.
                            tracing::info!(%room, node = %id, "room owner is gone; placing again");
                            let _: i64 = redis::Script::new(RELEASE_LEASE)
                                .key(&key)
                                .arg(&id)
                                .invoke_async(&mut r)
                                .await?;
                        }
                    }
                }
                None => {
                    let settling: bool = r.exists(SETTLING_KEY).await?;
                    if settling {
                        return Ok(Err(Unavailable(
                            "Redis restarted; the nodes are re-taking their rooms".into(),
                        )));
                    }
                    // A cascade keeps a new room where its first join arrived (the others
                    // join it through relay legs); otherwise the least-loaded node takes it.
                    let (target, url) = if self.cascade {
                        (self.node_id.clone(), self.url.clone())
                    } else {
                        self.least_loaded(&mut r, room, pin).await?
                    };
                    let taken: Option<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(&target)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .query_async(&mut r)
                        .await?;
                    if taken.is_some() {
                        tracing::info!(%room, node = %target, "room placed");
                        return Ok(Ok(if target == self.node_id {
                            Placement::Local
                        } else {
                            Placement::Redirect(url)
                        }));
                    }
                }
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "room ownership kept changing",
        )))
    }

    /// The live node with the fewest participants (ties: the smaller id) among those matching
    /// `pin` (a node id or region; "" = all; none matching = all, logged); this node counts
    /// with its own current load even before its first heartbeat.
    async fn least_loaded(
        &self,
        r: &mut ConnectionManager,
        room: &str,
        pin: &str,
    ) -> redis::RedisResult<(String, String)> {
        let (mine, _) = self.load();
        // (participants, id, url, region) of every live node.
        let mut nodes = vec![(
            mine,
            self.node_id.clone(),
            self.url.clone(),
            self.region.clone(),
        )];
        let ids: Vec<String> = r.smembers(NODES_KEY).await?;
        for id in ids {
            if id == self.node_id {
                continue;
            }
            let (url, participants, region): (Option<String>, Option<u64>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(node_key(&id))
                    .arg("url")
                    .arg("participants")
                    .arg("region")
                    .query_async(r)
                    .await?;
            let Some(url) = url else {
                let _: i64 = r.srem(NODES_KEY, &id).await?;
                continue;
            };
            nodes.push((
                participants.unwrap_or(0),
                id,
                url,
                region.unwrap_or_default(),
            ));
        }
        let pinned = !pin.is_empty();
        let matching = |n: &&(u64, String, String, String)| n.1 == pin || n.3 == pin;
        let pool: Vec<_> = if pinned && nodes.iter().any(|n| matching(&n)) {
            nodes.iter().filter(matching).collect()
        } else {
            if pinned {
                tracing::warn!(
                    %room,
                    %pin,
                    "the rakor is pinned to a node or region with no live node: placing it by load"
                );
            }
            nodes.iter().collect()
        };
        let best = pool
            .into_iter()
            .min_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
            .map_or_else(
                || (self.node_id.clone(), self.url.clone()),
                |n| (n.1.clone(), n.2.clone()),
            );
        Ok(best)
    }

    /// (participants, rooms) on this node: signalling connections and rooms that have any.
    fn load(&self) -> (u64, u64) {
        let rooms = self.lock_rooms();
        let participants: usize = rooms.values().map(|u| u.connections).sum();
        let live = rooms.values().filter(|u| u.connections > 0).count();
        (participants as u64, live as u64)
    }

    /// The rooms whose lease this node renews; forgets rooms idle for longer than the grace.
    fn rooms_to_renew(&self) -> Vec<String> {
        let now = Instant::now();
        let grace = self.grace;
        let mut rooms = self.lock_rooms();
        rooms.retain(|_, u| u.connections > 0 || u.idle_since.is_some_and(|t| now - t <= grace));
        rooms.keys().cloned().collect()
    }

    async fn beat(&self, r: &mut ConnectionManager) -> redis::RedisResult<()> {
        let (participants, rooms) = self.load();
        let ttl = NODE_TTL.as_millis() as u64;
        let key = node_key(&self.node_id);
        let to_renew = self.rooms_to_renew();
        // A Redis that lost its data (restarted without persistence): while this node has
        // rooms, hold off placing free rooms until the nodes have re-taken theirs.
        let fresh: Option<String> = redis::cmd("SET")
            .arg(MARKER_KEY)
            .arg(&self.node_id)
            .arg("NX")
            .query_async(r)
            .await?;
        if fresh.is_some() && !to_renew.is_empty() {
            tracing::warn!(
                rooms = to_renew.len(),
                "Redis lost the cluster's state (restarted?): re-taking this node's rooms"
            );
            let _: () = redis::cmd("SET")
                .arg(SETTLING_KEY)
                .arg(&self.node_id)
                .arg("PX")
                .arg(SETTLE.as_millis() as u64)
                .query_async(r)
                .await?;
        }
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("url", self.url.clone()),
                    ("region", self.region.clone()),
                    ("participants", participants.to_string()),
                    ("rooms", rooms.to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, ttl as i64)
            .ignore()
            .sadd(NODES_KEY, &self.node_id)
            .ignore()
            .query_async(r)
            .await?;
        let mut owned = 0;
        for room in to_renew {
            let held: i64 = redis::Script::new(RENEW_LEASE)
                .key(room_key(&room))
                .arg(&self.node_id)
                .arg(ttl)
                .invoke_async(r)
                .await?;
            if held == 0 {
                tracing::warn!(%room, "another node holds this room's lease; new joins go there");
            } else {
                owned += 1;
            }
        }
        let ids: Vec<String> = r.smembers(NODES_KEY).await?;
        let mut alive = 0;
        for id in ids {
            let exists: bool = r.exists(node_key(&id)).await?;
            if exists {
                alive += 1;
            } else {
                let _: i64 = r.srem(NODES_KEY, &id).await?;
            }
        }
        self.rooms_owned.store(owned, Ordering::Relaxed);
        self.nodes_alive.store(alive, Ordering::Relaxed);
        self.redis_up.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let mut r = self.redis.clone();
        let mut healthy = true;
        let mut first = true;
        loop {
            // While Redis is unreachable, retry often: once it is back, the leases of this
            // node's live rooms are re-taken within [`RETRY`].
            let pause = match (first, healthy) {
                (true, _) => Duration::ZERO,
                (false, true) => HEARTBEAT,
                (false, false) => RETRY,
            };
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => break,
            }
            match tokio::time::timeout(HEARTBEAT, self.beat(&mut r)).await {
                Ok(Ok(())) => {
                    if !healthy {
                        tracing::info!("Redis reachable again; heartbeat and leases renewed");
                    }
                    healthy = true;
                }
                Ok(Err(e)) => {
                    self.redis_up.store(false, Ordering::Relaxed);
                    if healthy {
                        tracing::warn!("cluster heartbeat failed: {e}; live rooms go on");
                    }
                    healthy = false;
                }
                Err(_) => {
                    self.redis_up.store(false, Ordering::Relaxed);
                    if healthy {
                        tracing::warn!("cluster heartbeat timed out; live rooms go on");
                    }
                    healthy = false;
                }
            }
        }
        // Leave: other nodes place new joins at once instead of after the expiry.
        let leave = async {
            let _: redis::RedisResult<()> = r.del(node_key(&self.node_id)).await;
            let _: redis::RedisResult<i64> = r.srem(NODES_KEY, &self.node_id).await;
            let rooms: Vec<String> = self.lock_rooms().keys().cloned().collect();
            for room in rooms {
                let _: redis::RedisResult<i64> = redis::Script::new(RELEASE_LEASE)
                    .key(room_key(&room))
                    .arg(&self.node_id)
                    .invoke_async(&mut r)
                    .await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), leave).await;
    }
}

/// One signalling connection counted in its room ([`Cluster::enter`]).
pub struct RoomGuard {
    cluster: Arc<Cluster>,
    room: String,
}

impl Drop for RoomGuard {
    fn drop(&mut self) {
        let mut rooms = self.cluster.lock_rooms();
        if let Some(u) = rooms.get_mut(&self.room) {
            u.connections = u.connections.saturating_sub(1);
            if u.connections == 0 {
                u.idle_since = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! Against a real Redis (`RAKOR_TEST_REDIS_URL`, started by tests/run.sh); without it the
    //! tests say so and do nothing.
    use super::*;
    use crate::config::SecretString;

    /// The test Redis, database `db`: each test has its own set of live nodes (placement
    /// looks at every node in the database).
    fn redis_url(db: u8) -> Option<String> {
        let url = std::env::var("RAKOR_TEST_REDIS_URL").ok();
        if url.is_none() {
            eprintln!("RAKOR_TEST_REDIS_URL not set: cluster test skipped");
        }
        url.map(|u| format!("{}/{db}", u.trim_end_matches('/')))
    }

    fn node(redis: &str, id: &str, shutdown: &CancellationToken) -> Arc<Cluster> {
        let mut c = Config::default();
        c.cluster.redis_url = SecretString::new(redis);
        c.cluster.node_id = id.to_owned();
        c.cluster.public_url = format!("ws://{id}.test/rtc");
        Cluster::start(&c, SocketAddr::from(([127, 0, 0, 1], 1)), shutdown.clone())
            .unwrap()
            .unwrap()
    }

    fn unique(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    #[tokio::test]
    async fn first_join_owns_the_room_and_other_nodes_redirect_there() {
        let Some(redis) = redis_url(1) else { return };
        let stop = CancellationToken::new();
        let (ida, idb) = (unique("a"), unique("b"));
        let a = node(&redis, &ida, &stop);
        let b = node(&redis, &idb, &stop);
        let room = unique("room");
        // A is busier: the room goes to B even though the join arrived at A.
        let _busy: Vec<_> = (0..3).map(|_| a.enter("elsewhere")).collect();
        let mut r = a.redis.clone();
        // Only these two nodes: forget those of earlier runs (this test's own database).
        let _: () = redis::cmd("FLUSHDB").query_async(&mut r).await.unwrap();
        a.beat(&mut r).await.unwrap();
        b.beat(&mut r).await.unwrap();
        // A had rooms when it found the database empty (as after a Redis restart): not that.
        let _: i64 = r.del(SETTLING_KEY).await.unwrap();
        assert_eq!(
            a.place(&room).await.unwrap(),
            Placement::Redirect(format!("ws://{idb}.test/rtc"))
        );
        // The join arrives at B: B owns it.
        assert_eq!(b.place(&room).await.unwrap(), Placement::Local);
        let _in_b = b.enter(&room);
        // Everyone else keeps being sent to B, also after B renewed its lease.
        b.beat(&mut r).await.unwrap();
        assert_eq!(
            a.place(&room).await.unwrap(),
            Placement::Redirect(format!("ws://{idb}.test/rtc"))
        );
        let owner: Option<String> = r.get(room_key(&room)).await.unwrap();
        assert_eq!(owner.as_deref(), Some(idb.as_str()));
        stop.cancel();
    }

    #[tokio::test]
    async fn a_dead_owner_s_room_is_placed_again() {
        let Some(redis) = redis_url(2) else { return };
        let stop = CancellationToken::new();
        let ida = unique("a");
        let a = node(&redis, &ida, &stop);
        let room = unique("room");
        let mut r = a.redis.clone();
        // A lease held by a node with no heartbeat (it died): freed and taken.
        let dead = unique("dead");
        let _: () = r.set(room_key(&room), &dead).await.unwrap();
        let _: i64 = r.sadd(NODES_KEY, &dead).await.unwrap();
        assert_eq!(a.place(&room).await.unwrap(), Placement::Local);
        let owner: Option<String> = r.get(room_key(&room)).await.unwrap();
        assert_eq!(owner.as_deref(), Some(ida.as_str()));
        stop.cancel();
    }

    #[tokio::test]
    async fn without_redis_only_rooms_living_here_accept_joins() {
        // Nothing listens on port 1.
        let stop = CancellationToken::new();
        let a = node("redis://127.0.0.1:1", &unique("a"), &stop);
        let err = a.place("new-room").await.unwrap_err();
        assert!(err.to_string().contains("cannot place"), "{err}");
        let _live = a.enter("live-room");
        assert_eq!(a.place("live-room").await.unwrap(), Placement::Local);
        stop.cancel();
    }

    #[tokio::test]
    async fn after_redis_lost_its_data_live_rooms_are_re_taken_before_free_ones_are_placed() {
        let Some(redis) = redis_url(3) else { return };
        let stop = CancellationToken::new();
        let (ida, idb) = (unique("a"), unique("b"));
        let a = node(&redis, &ida, &stop);
        let b = node(&redis, &idb, &stop);
        let mut r = a.redis.clone();
        let _: () = redis::cmd("FLUSHDB").query_async(&mut r).await.unwrap();
        let live = unique("live");
        assert_eq!(a.place(&live).await.unwrap(), Placement::Local);
        let _in_a = a.enter(&live);
        a.beat(&mut r).await.unwrap();
        b.beat(&mut r).await.unwrap();
        b.beat(&mut r).await.unwrap();
        assert_eq!(
            b.gauges(),
            Gauges {
                redis_up: true,
                nodes_alive: 2,
                rooms_owned: 0
            }
        );
        a.beat(&mut r).await.unwrap();
        assert_eq!(a.gauges().rooms_owned, 1);
        // Redis restarts empty. A node without rooms beating first settles nothing...
        let _: () = redis::cmd("FLUSHDB").query_async(&mut r).await.unwrap();
        b.beat(&mut r).await.unwrap();
        let settling: bool = r.exists(SETTLING_KEY).await.unwrap();
        assert!(!settling);
        // ...A, with a live room, re-takes it and holds off the placement of free rooms.
        let _: () = redis::cmd("FLUSHDB").query_async(&mut r).await.unwrap();
        a.beat(&mut r).await.unwrap();
        let owner: Option<String> = r.get(room_key(&live)).await.unwrap();
        assert_eq!(owner.as_deref(), Some(ida.as_str()));
        let err = b.place(&unique("new")).await.unwrap_err();
        assert!(err.to_string().contains("re-taking"), "{err}");
        // A room that is owned is still answered meanwhile (a redirect to its node).
        assert_eq!(
            b.place(&live).await.unwrap(),
            Placement::Redirect(format!("ws://{ida}.test/rtc"))
        );
        let _: i64 = r.del(SETTLING_KEY).await.unwrap();
        assert!(b.place(&unique("new")).await.is_ok());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_pinned_room_goes_to_its_node_or_region_and_falls_back_when_none_is_alive() {
        let Some(redis) = redis_url(4) else { return };
        let stop = CancellationToken::new();
        let (ida, idb) = (unique("a"), unique("b"));
        let a = node(&redis, &ida, &stop);
        let mut cb = Config::default();
        cb.cluster.redis_url = SecretString::new(&redis);
        cb.cluster.node_id = idb.clone();
        cb.cluster.public_url = format!("ws://{idb}.test/rtc");
        cb.cluster.region = "kab-semarang".into();
        let b = Cluster::start(&cb, SocketAddr::from(([127, 0, 0, 1], 1)), stop.clone())
            .unwrap()
            .unwrap();
        let mut r = a.redis.clone();
        let _: () = redis::cmd("FLUSHDB").query_async(&mut r).await.unwrap();
        // B is busier: by load a room would go to A.
        let _busy: Vec<_> = (0..3).map(|_| b.enter("elsewhere")).collect();
        a.beat(&mut r).await.unwrap();
        b.beat(&mut r).await.unwrap();
        let _: i64 = r.del(SETTLING_KEY).await.unwrap();
        let b_url = Placement::Redirect(format!("ws://{idb}.test/rtc"));
        // Pinned to B's region, or to B's id: placed on B although A is idle.
        assert_eq!(
            a.place_pinned(&unique("r"), "kab-semarang").await.unwrap(),
            b_url
        );
        assert_eq!(a.place_pinned(&unique("r"), &idb).await.unwrap(), b_url);
        // Not pinned: by load.
        assert_eq!(a.place(&unique("r")).await.unwrap(), Placement::Local);
        // Pinned to a region with no live node: by load (A), not refused.
        assert_eq!(
            a.place_pinned(&unique("r"), "kab-kendal").await.unwrap(),
            Placement::Local
        );
        stop.cancel();
    }
}
