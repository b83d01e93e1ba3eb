//! Helpers shared by the multi-node tests (tests/e2e/cluster.rs, tests/e2e/cascade*.rs).

use rakor_client::Report;
use rakor_proto::{ParticipantId, TrackKind};

/// 12 random hex digits, to keep each test's Redis keys and PostgreSQL database apart.
pub fn random_suffix() -> String {
    use std::io::Read as _;
    let mut b = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // No /dev/urandom: the clock's nanoseconds still separate concurrent runs.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b.copy_from_slice(&n.to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `r` received at least 30 exact-payload audio and video packets from `from`, and a keyframe.
pub fn has_media_from(r: &Report, from: &ParticipantId) -> bool {
    let v = r.received_track(from, TrackKind::Video);
    let a = r.received_track(from, TrackKind::Audio);
    v.is_some_and(|v| v.packets >= 30 && v.keyframes >= 1 && v.payload_matches >= 30)
        && a.is_some_and(|a| a.packets >= 30 && a.payload_matches >= 30)
}

/// The cascade tests' setup (tests/e2e/cascade*.rs): one fresh PostgreSQL database and the
/// shared Redis, and nodes started on them with `cluster.cascade = true`.
pub struct CascadeSetup {
    /// The nodes' shared configuration (its `key` signs the tokens).
    pub p: crate::session::Persistent,
    redis: String,
    /// This run's random suffix (node ids, room names).
    pub suffix: String,
}

impl CascadeSetup {
    /// `None`, and a line saying so, without `RAKOR_TEST_REDIS_URL` and
    /// `RAKOR_TEST_POSTGRES_URL` (tests/run.sh starts both). Panics when they are set but the
    /// database cannot be made (a broken service fails the test, it does not skip it).
    #[allow(clippy::panic)]
    pub fn from_env(test: &str) -> Option<Self> {
        let (Ok(redis), Some(pg)) = (
            std::env::var("RAKOR_TEST_REDIS_URL"),
            crate::session::test_postgres_url(),
        ) else {
            eprintln!("RAKOR_TEST_REDIS_URL or RAKOR_TEST_POSTGRES_URL not set: {test} skipped");
            return None;
        };
        let p = crate::session::fresh_postgres_database(&pg)
            .and_then(|db| crate::session::Persistent::on_postgres(&db))
            .unwrap_or_else(|e| panic!("{test}: no fresh PostgreSQL database: {e}"));
        Some(Self {
            p,
            redis,
            suffix: random_suffix(),
        })
    }

    /// The id of node `name` (`node-<name>-<suffix>`).
    pub fn node_id(&self, name: &str) -> String {
        format!("node-{name}-{}", self.suffix)
    }

    /// Start the node `id` as a cascade member.
    pub fn start(&self, id: &str) -> anyhow::Result<crate::Server> {
        self.p.start_with_env(&[
            ("RAKOR_CLUSTER_REDIS_URL", self.redis.as_str()),
            ("RAKOR_CLUSTER_NODE_ID", id),
            ("RAKOR_CLUSTER_CASCADE", "true"),
        ])
    }

    /// Start the node `id` as a cascade member with more environment (`RAKOR_*` settings).
    pub fn start_with(&self, id: &str, extra: &[(&str, &str)]) -> anyhow::Result<crate::Server> {
        let mut env = vec![
            ("RAKOR_CLUSTER_REDIS_URL", self.redis.as_str()),
            ("RAKOR_CLUSTER_NODE_ID", id),
            ("RAKOR_CLUSTER_CASCADE", "true"),
        ];
        env.extend_from_slice(extra);
        self.p.start_with_env(&env)
    }

    /// `sub` joins `room` at `url` with `role`, publishing the looped audio and video.
    #[allow(clippy::panic)]
    pub async fn join_publishing(
        &self,
        url: String,
        room: &str,
        sub: &str,
        role: &str,
    ) -> rakor_client::Client {
        let token = self
            .token(room, sub, role)
            .unwrap_or_else(|e| panic!("token for {sub}: {e}"));
        rakor_client::Client::connect(
            rakor_client::ClientOptions::new(url, token).publish(true, true),
        )
        .await
        .unwrap_or_else(|e| panic!("{sub} could not join: {e}"))
    }

    /// `sub` joins `room` at `url` with `role`, publishing audio only (enough for its node
    /// to relay it; a republisher carries its commands). Waits up to 30 s for `joined`.
    pub async fn join_audio(
        &self,
        url: String,
        room: &str,
        sub: &str,
        role: &str,
    ) -> rakor_client::Client {
        self.join_with(url, room, sub, role, true).await
    }

    /// `sub` joins `room` at `url` with `role`, publishing nothing (a site that only watches).
    pub async fn join_watching(
        &self,
        url: String,
        room: &str,
        sub: &str,
        role: &str,
    ) -> rakor_client::Client {
        self.join_with(url, room, sub, role, false).await
    }

    #[allow(clippy::panic)]
    async fn join_with(
        &self,
        url: String,
        room: &str,
        sub: &str,
        role: &str,
        audio: bool,
    ) -> rakor_client::Client {
        let token = self
            .token(room, sub, role)
            .unwrap_or_else(|e| panic!("token for {sub}: {e}"));
        let mut o = rakor_client::ClientOptions::new(url, token).publish(audio, false);
        o.join_timeout = std::time::Duration::from_secs(30);
        rakor_client::Client::connect(o)
            .await
            .unwrap_or_else(|e| panic!("{sub} could not join: {e}"))
    }

    /// A test's cast: each `(node, identity, role, joins)` joins `room` on `nodes[node]`, in
    /// order (the first join's node owns the room).
    pub async fn cast<const N: usize>(
        &self,
        nodes: &[crate::Server],
        room: &str,
        who: [(usize, &str, &str, Joins); N],
    ) -> [rakor_client::Client; N] {
        let mut joined = Vec::with_capacity(N);
        for (node, sub, role, joins) in who {
            let url = nodes[node].ws_url();
            joined.push(
                self.join_with(url, room, sub, role, matches!(joins, Joins::Audio))
                    .await,
            );
        }
        match joined.try_into() {
            Ok(cast) => cast,
            Err(_) => unreachable!("one client per cast member"),
        }
    }

    /// A token for `sub` in `room` with `role`, signed with the cluster's key, valid for 1 h.
    pub fn token(&self, room: &str, sub: &str, role: &str) -> anyhow::Result<String> {
        let now = crate::unix_now();
        crate::sign_claims(
            &self.p.key,
            &serde_json::json!({"sub": sub, "room": room, "name": sub, "role": role,
                    "iat": now, "exp": now + 3600, "iss": "rakor"}),
        )
    }
}

/// How a member of a [`CascadeSetup::cast`] joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joins {
    /// Publishing its microphone (the looped asset).
    Audio,
    /// Publishing nothing (a site that only watches).
    Watching,
}

/// The participant id under which `rx` sees the site `identity` (its own node's participant,
/// or a relay's republisher `cascade/<origin>/<identity>`), once it is there (at most `wait`).
#[allow(clippy::panic)]
pub async fn seen_as(
    rx: &rakor_client::Client,
    identity: &str,
    wait: std::time::Duration,
) -> ParticipantId {
    let deadline = std::time::Instant::now() + wait;
    let suffix = format!("/{identity}");
    loop {
        if let Some(p) = rx
            .participants()
            .into_iter()
            .find(|p| p.identity == identity || p.identity.ends_with(&suffix))
        {
            return p.id;
        }
        if std::time::Instant::now() >= deadline {
            panic!("{identity} never appeared: {:?}", rx.participants());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// [`seen_as`] for each `(client, identity)`: the ids, in the same order, once all are there.
pub async fn seen_all<const N: usize>(
    pairs: [(&rakor_client::Client, &str); N],
    wait: std::time::Duration,
) -> [ParticipantId; N] {
    let mut ids: [ParticipantId; N] = std::array::from_fn(|_| ParticipantId(String::new()));
    for (id, (c, identity)) in ids.iter_mut().zip(pairs) {
        *id = seen_as(c, identity, wait).await;
    }
    ids
}

/// `(peer_node, direction) → value` of one cascade metric of `server` (0 fails the test when
/// the sample is missing: the leg's series exist from its start).
#[allow(clippy::panic)]
pub fn cascade_metric(server: &crate::Server, name: &str, peer: &str, dir: &str) -> u64 {
    let body = match crate::http_get(server.http, "/metrics") {
        Ok((200, body)) => body,
        other => panic!("GET /metrics: {other:?}"),
    };
    let key = format!("{name}{{peer_node=\"{peer}\",direction=\"{dir}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{body}"))
}
