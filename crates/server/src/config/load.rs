//! Loading the configuration: the defaults as a TOML table (the known sections and keys), the
//! file merged over them, then the `RAKOR_*` environment, then the command-line flags, each
//! value remembering where it came from ([`Origin`]) so that an error can say so; the result is
//! validated once (`super::validate`).

use super::{Config, ENV_PREFIX};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

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

    super::validate::validate(&config).map_err(|(key, message)| ConfigError::Invalid {
        origin: origin_of(&origins, key),
        key: key.to_owned(),
        message,
    })?;
    Ok(config)
}

/// The defaults as a TOML table: the set of known sections and keys, and each key's kind.
pub(super) fn default_table() -> Result<toml::Table, ConfigError> {
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
