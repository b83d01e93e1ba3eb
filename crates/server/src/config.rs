//! The server's configuration: one typed tree, loaded once at start.
//!
//! Precedence (later wins): built-in defaults → the TOML file given with `--config` →
//! `RAKOR_<SECTION>_<KEY>` environment variables → command-line flags. The merged tree is then
//! validated once; every error names the key (and where its value came from), e.g.
//! `media.port: invalid type: string "abc", expected u16 (set by RAKOR_MEDIA_PORT)`.
//!
//! Unknown keys are errors, in the file and in the environment: any `RAKOR_*` variable whose
//! name starts with a section (`RAKOR_SERVER_`, `RAKOR_MEDIA_`, `RAKOR_AUTH_`, `RAKOR_LIMITS_`)
//! must name a known key. Other `RAKOR_*` variables (e.g. `RAKOR_CONFIG`) are not config keys.
//! `config/rakor.toml` documents every key; a test keeps it equal to [`Config::default`].
//!
//! | file | owns |
//! | --- | --- |
//! | `config.rs` | the tree: sections, keys, defaults, values derived from it |
//! | `config/load.rs` | [`load`]: merging defaults, file, environment and flags; error messages |
//! | `config/validate.rs` | the checks beyond the types (ranges, URLs, combinations) |

mod load;
mod security;
mod validate;

pub use load::{env_name, env_vars, load, CliOverrides, ConfigError};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "RAKOR_";

/// The whole configuration tree.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub media: MediaConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub session: SessionConfig,
    pub turn: TurnConfig,
    pub recording: RecordingConfig,
    pub chat: ChatConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
}

/// `[cluster]`: several nodes of a province sharing rooms through Redis (docs/operations.md,
/// "A province on several nodes"). Empty `redis_url` = a single node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]` (or `rediss://`); empty = no cluster. Never logged
    /// with its password.
    pub redis_url: SecretString,
    /// This node's name in the cluster, unique among the nodes; empty = the host name.
    pub node_id: String,
    /// The signalling WebSocket URL other nodes send clients to (`wss://node-a.example/rtc`);
    /// empty = `server.public_url` with `/rtc` (ws/wss from http/https).
    pub public_url: String,
    /// A free label (the regency or region) published with the node.
    pub region: String,
    /// A room may span nodes (issue 17): a join for a room another node owns is served here
    /// and the two nodes' participants are joined by one relay leg (`crate::cascade`),
    /// instead of redirecting the client to the owner; a new room is owned by the node its
    /// first join reaches. Default false (redirect).
    pub cascade: bool,
}

/// `[chat]`: the limits of in-call chat (docs/protocol.md, `chat`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Longest message, in Unicode characters; longer ones get `too_large`.
    pub max_chars: usize,
    /// Messages one participant may send at once…
    pub burst: u32,
    /// …then this many per second; faster ones get `rate_limited`.
    pub per_second: u32,
    /// Recent messages a room keeps for late joiners and resumes (`chat_history`); 0 = none.
    pub history: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        let d = rakor_sfu::ChatLimits::default();
        Self {
            max_chars: d.max_chars,
            burst: d.burst,
            per_second: 1,
            history: d.history,
        }
    }
}

impl ChatConfig {
    /// The media core's chat limits.
    pub fn limits(&self) -> rakor_sfu::ChatLimits {
        rakor_sfu::ChatLimits {
            max_chars: self.max_chars,
            burst: self.burst,
            interval: Duration::from_secs(1) / self.per_second.max(1),
            history: self.history,
        }
    }
}

/// `[storage]`: where the session manager keeps its records. Empty `database_url` = the
/// embedded SQLite file (`session.database`); `postgres://…` = a PostgreSQL database that
/// several nodes of a province can share.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `postgres://user:password@host:port/database` (also `postgresql://`); empty = SQLite.
    /// Never logged with its password.
    pub database_url: SecretString,
}

/// `[turn]`: the built-in TURN server (RFC 8656 over TCP; TLS through the one-port listener),
/// relaying only to this server's media addresses, with credentials minted per join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Serve TURN and put it in every `joined.ice_servers`.
    pub enabled: bool,
    /// TCP address of the TURN listener (port 0 = any free port).
    pub listen: SocketAddr,
    /// Host (name or IP) clients use in the `turn:` URLs; empty = the host of
    /// `server.public_url`, else the first advertised media IP.
    pub public_host: String,
    /// Port clients use in the `turn:` URLs; 0 = the listener's port (set it when a firewall or
    /// NAT forwards another port).
    pub public_port: u16,
    /// A `turns:` URL to offer too (TURN over TLS, e.g. `turns:rakor.example.org:443?transport=tcp`
    /// when the HTTPS listener also accepts TURN); empty = none.
    pub tls_url: String,
    /// Secret the credentials are minted with (any string, ≥ 16 characters); empty =
    /// `<data_dir>/turn.secret`, generated once. Share it only with other TURN servers you run.
    pub secret: SecretString,
    /// How long minted credentials can open a new allocation. An allocation opened in time
    /// lives on while the client refreshes it; the server sends new credentials before expiry.
    #[serde(with = "duration_serde")]
    pub credential_ttl: Duration,
    /// REALM of the long-term credentials.
    pub realm: String,
    /// Most allocations at once, in total.
    pub max_allocations: usize,
    /// Most allocations at once for one identity (a participant uses two: publisher and
    /// subscriber; a resume may briefly add two more).
    pub max_allocations_per_identity: usize,
    /// Most TURN streams (TCP or TLS connections) open at once from one source IP address;
    /// more are closed at once. An office behind one NAT address uses two per participant.
    pub max_streams_per_ip: usize,
    /// Longest lifetime one Allocate or Refresh grants.
    #[serde(with = "duration_serde")]
    pub max_lifetime: Duration,
    /// Packets per second one allocation may relay towards the media core.
    pub max_packets_per_second: u32,
    /// Kilobits per second one allocation may relay towards the media core.
    pub max_kbps: u32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 3478)),
            public_host: String::new(),
            public_port: 0,
            tls_url: String::new(),
            secret: SecretString::default(),
            credential_ttl: Duration::from_secs(10 * 60),
            realm: "rakor".to_owned(),
            max_allocations: 1000,
            max_allocations_per_identity: 4,
            max_streams_per_ip: 200,
            max_lifetime: Duration::from_secs(3600),
            max_packets_per_second: 2000,
            max_kbps: 20_000,
        }
    }
}

/// `[recording]`: recording rooms to WebM files, the composite, disk limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Recording can be started (API, console, host). Off: no recorder thread, starts refused.
    pub enabled: bool,
    /// Record every room from its first participant until it ends.
    pub auto: bool,
    /// Where recordings go (`<dir>/<room>/<start time>/`); relative paths are inside
    /// `server.data_dir`.
    pub dir: PathBuf,
    /// Bytes of free disk space below which a recording does not start; a running one stops
    /// cleanly when free space falls under half of it.
    pub min_free: u64,
    /// Recordings older than this are deleted (at start and daily); "0s" keeps them forever.
    #[serde(with = "duration_serde")]
    pub retention: Duration,
    /// Make the composite (one file: large speaker/spotlight, the others small, mixed audio)
    /// with ffmpeg when a recording ends.
    pub composite: bool,
    /// The ffmpeg program (a name looked up in PATH, or a path).
    pub ffmpeg: String,
    /// Packets the hand-off from the media thread to the recorder thread holds; beyond, they
    /// are dropped and counted.
    pub queue: usize,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auto: false,
            dir: PathBuf::from("recordings"),
            min_free: 1 << 30,
            retention: Duration::ZERO,
            composite: true,
            ffmpeg: "ffmpeg".to_owned(),
            queue: 4096,
        }
    }
}

/// `[session]`: the session manager (operators, schedules, lobby, attendance; `rakor-session`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// SQLite database file; relative paths are inside `server.data_dir`.
    pub database: PathBuf,
    /// Lifetime of an operator's console login (the session cookie).
    #[serde(with = "duration_serde")]
    pub login_ttl: Duration,
    /// Failed logins for one username before further attempts are refused.
    pub login_max_failures: u32,
    /// How long logins stay refused after the last failure.
    #[serde(with = "duration_serde")]
    pub login_lockout: Duration,
    /// Failed logins from one client address (any usernames) before that address is refused.
    pub login_max_failures_per_address: u32,
    /// Password hashes computed at once (argon2id, 19 MiB each); 0 = one per CPU core.
    pub password_hash_concurrency: usize,
    /// Logins that may wait for a hashing slot; more get 503 at once.
    pub password_hash_queue: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            database: PathBuf::from("rakor.sqlite3"),
            login_ttl: Duration::from_secs(12 * 3600),
            login_max_failures: 5,
            login_lockout: Duration::from_secs(15 * 60),
            login_max_failures_per_address: 20,
            password_hash_concurrency: 0,
            password_hash_queue: 8,
        }
    }
}

/// `[server]`: HTTP/WebSocket listener, data directory, logging, shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// TCP address of the HTTP + WebSocket listener.
    pub listen: SocketAddr,
    /// Directory for the server's own files (the generated signing key, later recordings).
    pub data_dir: PathBuf,
    /// Base URL put in join links; empty = `http://<listen>`.
    pub public_url: String,
    /// Default tracing filter (`RUST_LOG` wins when set).
    pub log: String,
    /// How long signalling connections get to flush on shutdown.
    #[serde(with = "duration_serde")]
    pub shutdown_grace: Duration,
    /// On shutdown, how long rooms in progress may go on (new joins refused) before everyone
    /// still connected gets `leave {reason: "server_shutdown"}`. 0 = tell them at once.
    #[serde(with = "duration_serde")]
    pub drain_timeout: Duration,
    /// How long a participant whose signalling connection dropped is kept so that it can
    /// resume (same participant id, tracks kept). 0 = remove at once.
    #[serde(with = "duration_serde")]
    pub resume_grace: Duration,
    /// Reverse proxies (IPs or CIDR blocks) whose `X-Forwarded-For` / `X-Forwarded-Proto`
    /// are believed: for their requests the client address is the forwarded one.
    pub trusted_proxies: Vec<String>,
    /// PEM certificate chain (end-entity first) for HTTPS/WSS on `listen`; empty = plain HTTP.
    /// Set together with `tls_key_file`. Re-read on SIGHUP.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: PathBuf,
}

impl ServerConfig {
    /// HTTPS on `listen` (`tls_cert_file` is set).
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert_file.as_os_str().is_empty()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7880)),
            data_dir: PathBuf::from("./rakor-data"),
            public_url: String::new(),
            log: "info,rtc=error,rtc_ice=warn,rtc_dtls=error".to_owned(),
            shutdown_grace: Duration::from_secs(5),
            drain_timeout: Duration::ZERO,
            resume_grace: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
        }
    }
}

/// Default `media.thread_slice_us` (docs/benchmarks.md, "A short slice for the media threads").
pub const DEFAULT_THREAD_SLICE_US: u32 = 100;

/// `[media]`: the one UDP media port and what goes into ICE candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// IP the media UDP socket binds to.
    pub bind_ip: IpAddr,
    /// UDP port of the media socket; 0 = any free port.
    pub port: u16,
    /// IPs advertised in ICE host candidates; empty = the bind IP (127.0.0.1 if unspecified).
    pub advertise_ips: Vec<IpAddr>,
    /// Minimum gap between two keyframe requests for one published video track.
    #[serde(with = "duration_serde")]
    pub keyframe_request_interval: Duration,
    /// Send/receive buffer asked of the kernel for the media socket.
    pub socket_buffer_bytes: usize,
    /// Nice value each media worker thread asks for (-20..=19; 0 = the process's own). A
    /// lower value gives the media threads a larger CPU share than the signalling runtime and
    /// anything else on the host (builds, backups) when the cores are busy.
    pub thread_nice: i32,
    /// Real-time round-robin (`SCHED_RR`) priority of each media worker thread (1..=99; 0 =
    /// off, the fair scheduler and `thread_nice`): nothing of the fair scheduler (the
    /// signalling runtime, builds, other processes) preempts a forwarding turn.
    pub thread_realtime: u32,
    /// Time slice (µs, 100..=100000; 0 = the kernel's default) each media worker thread asks
    /// the fair scheduler for (Linux 6.12+, `sched_setattr`, no privilege needed): a woken
    /// media thread preempts a busy thread with a longer slice instead of waiting for it.
    /// Not used when `thread_realtime` applies.
    pub thread_slice_us: u32,
    /// Audio of at most this many sites (besides the hosts) is forwarded at once: the loudest.
    pub loudest_speakers: usize,
    /// Video on demand (`join.video_on_demand`): how many videos one client may have asked
    /// for at a time (`limit_exceeded` beyond).
    pub max_videos_on_demand: usize,
    /// Estimate each subscriber's downlink and fit its video into it (layers, then pauses).
    pub bandwidth_estimation: bool,
    /// ICE over TCP on the media port number (a TCP listener, passive TCP candidates), for
    /// sites whose firewall drops UDP.
    pub ice_tcp: bool,
    /// With `ice_tcp`: the `server.listen` port (HTTPS) takes ICE-TCP too, told apart from
    /// TLS and HTTP by its first bytes, and a passive TCP candidate on the public port is
    /// advertised, for sites that may open TCP to that one port only (e.g. 443).
    pub ice_tcp_on_http_port: bool,
    /// Media worker threads, each owning whole rooms on its own port (`port + index`, so
    /// `port`..`port + workers - 1` UDP, and TCP with `ice_tcp`); 0 = one per available core.
    pub workers: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7882,
            advertise_ips: Vec::new(),
            keyframe_request_interval: Duration::from_millis(500),
            socket_buffer_bytes: 4 * 1024 * 1024,
            thread_nice: -10,
            thread_realtime: 0,
            thread_slice_us: DEFAULT_THREAD_SLICE_US,
            loudest_speakers: 3,
            max_videos_on_demand: rakor_proto::VIDEO_ON_DEMAND_MAX,
            bandwidth_estimation: true,
            ice_tcp: true,
            ice_tcp_on_http_port: true,
            workers: 0,
        }
    }
}

/// `[auth]`: the token signing key and token lifetimes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Base64 HS256 key (≥ 32 bytes decoded); empty = `<data_dir>/signing.key`, generated once.
    pub signing_key: SecretString,
    /// Lifetime of tokens minted without `--ttl`.
    #[serde(with = "duration_serde")]
    pub default_ttl: Duration,
    /// Longest lifetime `rakor token` will mint.
    #[serde(with = "duration_serde")]
    pub max_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            signing_key: SecretString::default(),
            default_ttl: Duration::from_secs(2 * 3600),
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[limits]`: per-room and per-connection limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_participants_per_room: usize,
    pub max_tracks_per_participant: usize,
    /// Largest signalling WebSocket frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Signalling messages a connection may send per second.
    pub messages_per_second: u32,
    /// Most rooms with at least one participant at once.
    pub max_rooms: usize,
    /// Most signalling WebSockets open at once that have not (yet) joined.
    pub max_unauthenticated_connections: usize,
    /// Most of those from one client address (IPv6: one /64); resumes of participants that
    /// joined from the address are admitted beyond it.
    pub max_unauthenticated_connections_per_ip: usize,
    /// A new signalling WebSocket must send its first frame (`join`) within this time.
    #[serde(with = "duration_serde")]
    pub join_timeout: Duration,
    /// Longest wait in the lobby; then the site gets `lobby_timeout` and is closed.
    #[serde(with = "duration_serde")]
    pub lobby_max_wait: Duration,
    /// `join` attempts one client IP may make per minute (0 = no limit).
    pub join_attempts_per_ip_per_minute: u32,
    /// A participant whose signalling and media both went silent is removed after this.
    #[serde(with = "duration_serde")]
    pub dead_peer_timeout: Duration,
    /// Most TCP connections the HTTP listener keeps open at once (WebSockets included).
    pub max_http_connections: usize,
    /// Most TCP connections from one client address (IPv6: one /64); trusted proxies exempt.
    pub max_http_connections_per_ip: usize,
    /// A request's header must arrive within this time (also: idle keep-alive connections).
    #[serde(with = "duration_serde")]
    pub http_header_read_timeout: Duration,
    /// An HTTP connection that moves no byte for this long is closed (not WebSockets).
    #[serde(with = "duration_serde")]
    pub http_idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_participants_per_room: 100,
            max_tracks_per_participant: 4,
            max_frame_bytes: 64 * 1024,
            messages_per_second: 50,
            max_rooms: 100,
            max_unauthenticated_connections: 256,
            max_unauthenticated_connections_per_ip: 32,
            join_timeout: Duration::from_secs(10),
            lobby_max_wait: Duration::from_secs(30 * 60),
            join_attempts_per_ip_per_minute: 120,
            dead_peer_timeout: Duration::from_secs(10),
            max_http_connections: 8192,
            max_http_connections_per_ip: 512,
            http_header_read_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A string whose `Debug` never shows its value (the signing key).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

impl Config {
    /// The media core's settings.
    pub fn sfu_config(&self) -> rakor_sfu::SfuConfig {
        rakor_sfu::SfuConfig {
            bind: SocketAddr::new(self.media.bind_ip, self.media.port),
            advertise_ips: self.media.advertise_ips.clone(),
            keyframe_request_interval: self.media.keyframe_request_interval,
            socket_buffer_bytes: self.media.socket_buffer_bytes,
            thread_nice: self.media.thread_nice,
            thread_realtime: self.media.thread_realtime,
            thread_slice_us: self.media.thread_slice_us,
            max_participants_per_room: self.limits.max_participants_per_room,
            max_tracks_per_participant: self.limits.max_tracks_per_participant,
            max_rooms: self.limits.max_rooms,
            dead_peer_timeout: self.limits.dead_peer_timeout,
            resume_grace: self.server.resume_grace,
            loudest_speakers: self.media.loudest_speakers,
            max_videos_on_demand: self.media.max_videos_on_demand,
            bandwidth_estimation: self.media.bandwidth_estimation,
            ice_tcp: self.media.ice_tcp,
            workers: self.media_workers(),
            // Set by `rakor serve` once the listener is bound (its port may be 0 here).
            extra_tcp_port: None,
            recording: self
                .recording
                .enabled
                .then(|| rakor_sfu::RecordingSettings {
                    dir: self.recording_dir(),
                    auto: self.recording.auto,
                    min_free_bytes: self.recording.min_free,
                    queue: self.recording.queue,
                }),
            chat: self.chat.limits(),
            ..rakor_sfu::SfuConfig::default()
        }
    }

    /// How many media workers run: `media.workers`, or one per available core for 0.
    pub fn media_workers(&self) -> usize {
        if self.media.workers > 0 {
            self.media.workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
    }

    /// The IPs the media core will advertise (same rule as the media core).
    pub fn effective_advertise_ips(&self) -> Vec<IpAddr> {
        if !self.media.advertise_ips.is_empty() {
            self.media.advertise_ips.clone()
        } else if self.media.bind_ip.is_unspecified() {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        } else {
            vec![self.media.bind_ip]
        }
    }

    /// Base URL for join links, without a trailing slash: `server.public_url`, or
    /// `http://<listen>` (`https://` with TLS; 127.0.0.1 when listening on an unspecified
    /// address). `listen` is the actual bound address when known (port 0).
    pub fn public_base_url(&self, listen: SocketAddr) -> String {
        let url = self.server.public_url.trim().trim_end_matches('/');
        if !url.is_empty() {
            return url.to_owned();
        }
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let scheme = if self.server.tls_enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    }

    /// The signalling WebSocket URL other nodes of the cluster redirect clients to:
    /// `cluster.public_url`, else [`Self::public_base_url`] with `/rtc` (`ws`/`wss`).
    pub fn cluster_signal_url(&self, listen: SocketAddr) -> String {
        let url = self.cluster.public_url.trim();
        if !url.is_empty() {
            return url.to_owned();
        }
        let base = self.public_base_url(listen);
        let ws = match base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => format!("ws://{base}"),
        };
        format!("{ws}/rtc")
    }

    /// This node's id in the cluster: `cluster.node_id`, else the host name; "" when
    /// `cluster.redis_url` is not set (a single node).
    pub fn cluster_node_id(&self) -> String {
        if self.redis_url().is_none() {
            return String::new();
        }
        match self.cluster.node_id.trim() {
            "" => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "rakor".to_owned()),
            id => id.to_owned(),
        }
    }

    /// The Redis URL when `cluster.redis_url` is set.
    pub fn redis_url(&self) -> Option<&str> {
        let url = self.cluster.redis_url.expose().trim();
        (!url.is_empty()).then_some(url)
    }

    /// The host and port clients reach the listener at: from `server.public_url` (its port,
    /// or 443/80 by scheme), else the listener's own (`listen`, the bound address).
    pub fn public_host_port(&self, listen: SocketAddr) -> (String, u16) {
        let url = self.server.public_url.trim();
        let (rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
            (r, 443)
        } else if let Some(r) = url.strip_prefix("http://") {
            (r, 80)
        } else {
            return (listen.ip().to_string(), listen.port());
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        // [v6]:port, host:port, host
        if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
            let port = after
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_port);
            return (host.to_owned(), port);
        }
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(default_port)),
            None => (authority.to_owned(), default_port),
        }
    }

    /// The PostgreSQL URL when `storage.database_url` is set.
    pub fn postgres_url(&self) -> Option<&str> {
        let url = self.storage.database_url.expose().trim();
        (!url.is_empty()).then_some(url)
    }

    /// Path of the session manager's SQLite database.
    pub fn session_database_path(&self) -> PathBuf {
        self.server.data_dir.join(&self.session.database)
    }

    /// Path of the generated TURN secret file.
    pub fn turn_secret_path(&self) -> PathBuf {
        self.server.data_dir.join("turn.secret")
    }

    /// Where recordings are written.
    pub fn recording_dir(&self) -> PathBuf {
        self.server.data_dir.join(&self.recording.dir)
    }

    /// Path of the generated signing key file.
    pub fn signing_key_path(&self) -> PathBuf {
        self.server.data_dir.join(crate::signing_key::KEY_FILE_NAME)
    }
}

/// Durations written as strings with a unit: "500ms", "5s", "2h", "1day".
mod duration_serde {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string with a unit, like \"500ms\", \"5s\" or \"2h\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v.trim()).map_err(|e| {
                E::custom(format!(
                    "invalid duration \"{v}\": {e} (write e.g. \"500ms\", \"5s\", \"2h\")"
                ))
            })
        }
    }
}

#[cfg(test)]
mod tests;
