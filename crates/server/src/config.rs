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

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            database: PathBuf::from("rakor.sqlite3"),
            login_ttl: Duration::from_secs(12 * 3600),
            login_max_failures: 5,
            login_lockout: Duration::from_secs(15 * 60),
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
        }
    }
}

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
    /// Audio of at most this many sites (besides the hosts) is forwarded at once: the loudest.
    pub loudest_speakers: usize,
    /// Estimate each subscriber's downlink and fit its video into it (layers, then pauses).
    pub bandwidth_estimation: bool,
    /// ICE over TCP on the media port number (a TCP listener, passive TCP candidates), for
    /// sites whose firewall drops UDP.
    pub ice_tcp: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7882,
            advertise_ips: Vec::new(),
            keyframe_request_interval: Duration::from_millis(500),
            socket_buffer_bytes: 4 * 1024 * 1024,
            loudest_speakers: 3,
            bandwidth_estimation: true,
            ice_tcp: true,
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
    /// `join` attempts one client IP may make per minute (0 = no limit).
    pub join_attempts_per_ip_per_minute: u32,
    /// A participant whose signalling and media both went silent is removed after this.
    #[serde(with = "duration_serde")]
    pub dead_peer_timeout: Duration,
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
            join_attempts_per_ip_per_minute: 120,
            dead_peer_timeout: Duration::from_secs(10),
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

/// Values given on the command line; `None`/empty = not given.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub listen: Option<SocketAddr>,
    pub media_port: Option<u16>,
    pub media_bind_ip: Option<IpAddr>,
    pub data_dir: Option<PathBuf>,
    pub advertise_ips: Vec<IpAddr>,
}

/// Why the configuration was refused. `Display` is the whole message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown key \"{key}\" in {origin}{hint}")]
    UnknownKey {
        key: String,
        origin: String,
        hint: String,
    },
    #[error(
        "unknown environment variable {var}: it starts like a config key but names none{hint}"
    )]
    UnknownEnv { var: String, hint: String },
    #[error("{key}: {message} ({origin})")]
    Invalid {
        key: String,
        message: String,
        origin: String,
    },
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File(p) => write!(f, "set in {}", p.display()),
            Origin::Env(v) => write!(f, "set by {v}"),
            Origin::Flag(flag) => write!(f, "set by {flag}"),
        }
    }
}

/// The `RAKOR_*` variables of this process (name, value). A non-UTF-8 value of a config
/// variable is an error; other variables are skipped.
pub fn env_vars() -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        match value.into_string() {
            Ok(v) => out.push((name, v)),
            Err(_) => {
                return Err(ConfigError::Invalid {
                    key: name.clone(),
                    message: "value is not valid UTF-8".to_owned(),
                    origin: format!("set by {name}"),
                })
            }
        }
    }
    Ok(out)
}

/// Load the configuration: defaults, then `file`, then `env` (`RAKOR_*` pairs), then `cli`;
/// validate the result.
pub fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<Config, ConfigError> {
    let defaults = default_table()?;
    let mut merged: toml::Table = toml::Table::new();
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();

    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        merge_file(&defaults, &text, path, &mut merged, &mut origins)?;
    }
    merge_env(&defaults, env, &mut merged, &mut origins)?;

    let mut config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            let key = e.path().to_string();
            let origin = origin_of(&origins, &key);
            ConfigError::Invalid {
                key,
                message: e.into_inner().message().trim().to_owned(),
                origin,
            }
        })?;

    if let Some(listen) = cli.listen {
        config.server.listen = listen;
        origins.insert("server.listen".into(), Origin::Flag("--listen"));
    }
    if let Some(port) = cli.media_port {
        config.media.port = port;
        origins.insert("media.port".into(), Origin::Flag("--media-port"));
    }
    if let Some(ip) = cli.media_bind_ip {
        config.media.bind_ip = ip;
        origins.insert("media.bind_ip".into(), Origin::Flag("--media-bind-ip"));
    }
    if let Some(dir) = &cli.data_dir {
        config.server.data_dir = dir.clone();
        origins.insert("server.data_dir".into(), Origin::Flag("--data-dir"));
    }
    if !cli.advertise_ips.is_empty() {
        config.media.advertise_ips = cli.advertise_ips.clone();
        origins.insert("media.advertise_ips".into(), Origin::Flag("--advertise-ip"));
    }

    validate(&config).map_err(|(key, message)| ConfigError::Invalid {
        origin: origin_of(&origins, key),
        key: key.to_owned(),
        message,
    })?;
    Ok(config)
}

/// The defaults as a TOML table: the set of known sections and keys, and each key's kind.
fn default_table() -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
        key: "(defaults)".into(),
        message: e.to_string(),
        origin: Origin::Default.to_string(),
    })
}

fn origin_of(origins: &BTreeMap<String, Origin>, key: &str) -> String {
    // serde_path_to_error may report a deeper path (e.g. `media.advertise_ips[1]`).
    let found = origins
        .iter()
        .filter(|(k, _)| {
            key == k.as_str()
                || key.starts_with(&format!("{k}["))
                || key.starts_with(&format!("{k}."))
        })
        .map(|(_, o)| o.clone())
        .next();
    found.unwrap_or(Origin::Default).to_string()
}

fn section_of<'a>(defaults: &'a toml::Table, section: &str) -> Option<&'a toml::Table> {
    defaults.get(section).and_then(toml::Value::as_table)
}

fn merge_file(
    defaults: &toml::Table,
    text: &str,
    path: &Path,
    merged: &mut toml::Table,
    origins: &mut BTreeMap<String, Origin>,
) -> Result<(), ConfigError> {
    let file: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let origin_text = path.display().to_string();
    for (section, value) in file {
        let Some(known) = section_of(defaults, &section) else {
            return Err(ConfigError::UnknownKey {
                hint: hint(&section, defaults.keys().map(String::as_str), "sections"),
                key: section,
                origin: origin_text,
            });
        };
        let toml::Value::Table(entries) = value else {
            return Err(ConfigError::Invalid {
                message: format!("must be a table, written [{section}]"),
                key: section,
                origin: format!("set in {origin_text}"),
            });
        };
        for (key, value) in entries {
            if !known.contains_key(&key) {
                return Err(ConfigError::UnknownKey {
                    hint: hint(
                        &key,
                        known.keys().map(String::as_str),
                        &format!("keys in [{section}]"),
                    ),
                    key: format!("{section}.{key}"),
                    origin: origin_text,
                });
            }
            origins.insert(format!("{section}.{key}"), Origin::File(path.to_owned()));
            insert(merged, &section, key, value);
        }
    }
    Ok(())
}

fn merge_env(
    defaults: &toml::Table,
    env: &[(String, String)],
    merged: &mut toml::Table,
    origins: &mut BTreeMap<String, Origin>,
) -> Result<(), ConfigError> {
    let mut env: Vec<&(String, String)> = env.iter().collect();
    env.sort();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        for (section, known) in defaults
            .iter()
            .filter_map(|(s, v)| v.as_table().map(|t| (s, t)))
        {
            let Some(key_part) = rest.strip_prefix(&format!("{}_", section.to_uppercase())) else {
                continue;
            };
            let Some((key, default)) = known.iter().find(|(k, _)| k.to_uppercase() == key_part)
            else {
                let names: Vec<String> = known.keys().map(|k| env_name(section, k)).collect();
                return Err(ConfigError::UnknownEnv {
                    var: var.clone(),
                    hint: hint(var, names.iter().map(String::as_str), "variables"),
                });
            };
            let dotted = format!("{section}.{key}");
            let value = env_value(default, raw).map_err(|message| ConfigError::Invalid {
                key: dotted.clone(),
                message,
                origin: format!("set by {var}"),
            })?;
            origins.insert(dotted, Origin::Env(var.clone()));
            insert(merged, section, key.clone(), value);
        }
    }
    Ok(())
}

/// The environment variable for `section.key`, e.g. `RAKOR_MEDIA_PORT`.
pub fn env_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{}",
        section.to_uppercase(),
        key.to_uppercase()
    )
}

/// Turn an environment string into a TOML value of the default's kind. Lists are
/// comma-separated; everything else is taken as written and typed later.
fn env_value(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match default {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("invalid value \"{raw}\": expected an integer"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| format!("invalid value \"{raw}\": expected true or false"))?,
        ),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_owned()),
    })
}

fn insert(merged: &mut toml::Table, section: &str, key: String, value: toml::Value) {
    let entry = merged
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key, value);
    }
}

/// `; did you mean "x"?` plus the list of known names.
fn hint<'a>(name: &str, known: impl Iterator<Item = &'a str>, what: &str) -> String {
    let lower = name.to_lowercase();
    let list: Vec<&str> = known.collect();
    let best = list
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!(
            "; did you mean \"{k}\"? (known {what}: {})",
            list.join(", ")
        ),
        None => format!(" (known {what}: {})", list.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(usize::MAX) + usize::from(ca != *cb);
            let del = prev
                .get(j + 1)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let ins = cur.get(j).copied().unwrap_or(usize::MAX).saturating_add(1);
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// Checks beyond the types. Returns the dotted key and what is wrong with it.
fn validate(c: &Config) -> Result<(), (&'static str, String)> {
    if c.server.data_dir.as_os_str().is_empty() {
        return Err(("server.data_dir", "must not be empty".into()));
    }
    let url = c.server.public_url.trim();
    if !url.is_empty() {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            None => {
                return Err((
                    "server.public_url",
                    format!("\"{url}\" must start with http:// or https://"),
                ))
            }
            Some(r) if r.is_empty() || r.contains(['?', '#', ' ']) => {
                return Err((
                    "server.public_url",
                    format!("\"{url}\" must be a base URL without query or fragment"),
                ))
            }
            Some(_) => {}
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&c.server.log) {
        return Err((
            "server.log",
            format!("invalid filter \"{}\": {e}", c.server.log),
        ));
    }
    if c.server.shutdown_grace > Duration::from_secs(600) {
        return Err(("server.shutdown_grace", "must be at most 10m".into()));
    }
    if c.server.resume_grace > Duration::from_secs(600) {
        return Err(("server.resume_grace", "must be at most 10m".into()));
    }
    if c.server.drain_timeout > Duration::from_secs(24 * 3600) {
        return Err(("server.drain_timeout", "must be at most 24h".into()));
    }
    if c.media.bind_ip.is_multicast() {
        return Err((
            "media.bind_ip",
            format!("{} is a multicast address", c.media.bind_ip),
        ));
    }
    for ip in &c.media.advertise_ips {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err((
                "media.advertise_ips",
                format!("{ip} cannot be advertised; give the address clients reach"),
            ));
        }
        if c.media.bind_ip.is_loopback() && !ip.is_loopback() {
            return Err((
                "media.advertise_ips",
                format!(
                    "{ip} is not reachable while media.bind_ip is {} (loopback); also set media.bind_ip \
                     (e.g. RAKOR_MEDIA_BIND_IP=0.0.0.0 or --media-bind-ip 0.0.0.0)",
                    c.media.bind_ip
                ),
            ));
        }
    }
    if c.media.keyframe_request_interval.is_zero()
        || c.media.keyframe_request_interval > Duration::from_secs(60)
    {
        return Err((
            "media.keyframe_request_interval",
            "must be greater than 0 and at most 60s".into(),
        ));
    }
    if !(1..=64).contains(&c.media.loudest_speakers) {
        return Err(("media.loudest_speakers", "must be between 1 and 64".into()));
    }
    if !(4096..=1 << 30).contains(&c.media.socket_buffer_bytes) {
        return Err((
            "media.socket_buffer_bytes",
            "must be between 4096 and 1073741824".into(),
        ));
    }
    if !c.auth.signing_key.is_empty() {
        // Never echo the key itself.
        crate::signing_key::decode_key(c.auth.signing_key.expose())
            .map_err(|e| ("auth.signing_key", e))?;
    }
    if c.session.database.as_os_str().is_empty() {
        return Err(("session.database", "must not be empty".into()));
    }
    if !(Duration::from_secs(60)..=Duration::from_secs(30 * 24 * 3600))
        .contains(&c.session.login_ttl)
    {
        return Err(("session.login_ttl", "must be between 1m and 30days".into()));
    }
    if !(1..=1000).contains(&c.session.login_max_failures) {
        return Err((
            "session.login_max_failures",
            "must be between 1 and 1000".into(),
        ));
    }
    if c.session.login_lockout > Duration::from_secs(24 * 3600) {
        return Err(("session.login_lockout", "must be at most 24h".into()));
    }
    if c.auth.max_ttl.is_zero() {
        return Err(("auth.max_ttl", "must be greater than 0".into()));
    }
    if c.auth.default_ttl.is_zero() || c.auth.default_ttl > c.auth.max_ttl {
        return Err((
            "auth.default_ttl",
            "must be greater than 0 and at most auth.max_ttl".into(),
        ));
    }
    let limits: [(&'static str, usize, usize); 7] = [
        (
            "limits.max_participants_per_room",
            c.limits.max_participants_per_room,
            10_000,
        ),
        (
            "limits.max_tracks_per_participant",
            c.limits.max_tracks_per_participant,
            64,
        ),
        ("limits.max_frame_bytes", c.limits.max_frame_bytes, 1 << 20),
        (
            "limits.messages_per_second",
            c.limits.messages_per_second as usize,
            10_000,
        ),
        ("limits.max_rooms", c.limits.max_rooms, 100_000),
        (
            "limits.max_unauthenticated_connections",
            c.limits.max_unauthenticated_connections,
            1_000_000,
        ),
        (
            "limits.join_attempts_per_ip_per_minute",
            c.limits.join_attempts_per_ip_per_minute as usize,
            1_000_000,
        ),
    ];
    for (key, value, max) in limits {
        let min = match key {
            "limits.max_frame_bytes" => 1024,
            "limits.join_attempts_per_ip_per_minute" => 0,
            _ => 1,
        };
        if value < min || value > max {
            return Err((key, format!("{value} is out of range {min}..={max}")));
        }
    }
    if !(Duration::from_secs(3)..=Duration::from_secs(300)).contains(&c.limits.dead_peer_timeout) {
        return Err((
            "limits.dead_peer_timeout",
            "must be between 3s and 5m".into(),
        ));
    }
    Ok(())
}

impl Config {
    /// The media core's settings.
    pub fn sfu_config(&self) -> rakor_sfu::SfuConfig {
        rakor_sfu::SfuConfig {
            bind: SocketAddr::new(self.media.bind_ip, self.media.port),
            advertise_ips: self.media.advertise_ips.clone(),
            keyframe_request_interval: self.media.keyframe_request_interval,
            socket_buffer_bytes: self.media.socket_buffer_bytes,
            max_participants_per_room: self.limits.max_participants_per_room,
            max_tracks_per_participant: self.limits.max_tracks_per_participant,
            max_rooms: self.limits.max_rooms,
            dead_peer_timeout: self.limits.dead_peer_timeout,
            resume_grace: self.server.resume_grace,
            loudest_speakers: self.media.loudest_speakers,
            bandwidth_estimation: self.media.bandwidth_estimation,
            ice_tcp: self.media.ice_tcp,
            ..rakor_sfu::SfuConfig::default()
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
    /// `http://<listen>` (127.0.0.1 when listening on an unspecified address). `listen` is the
    /// actual bound address when known (port 0).
    pub fn public_base_url(&self, listen: SocketAddr) -> String {
        let url = self.server.public_url.trim().trim_end_matches('/');
        if !url.is_empty() {
            return url.to_owned();
        }
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}")
    }

    /// Path of the session manager's SQLite database.
    pub fn session_database_path(&self) -> PathBuf {
        self.server.data_dir.join(&self.session.database)
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
