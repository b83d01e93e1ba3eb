//! The HS256 token signing key: from `auth.signing_key`, or generated once and kept in
//! `<data_dir>/signing.key` (mode 0600) and reused afterwards. There is no built-in key.
//!
//! `rakor serve` and `rakor token` both go through [`load_or_create`], so `rakor token` run
//! before the first `serve` creates the same file `serve` will use.

use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore as _;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// File name of the generated key inside the data directory.
pub const KEY_FILE_NAME: &str = "signing.key";
/// Shortest accepted key, in bytes (decoded).
pub const MIN_KEY_BYTES: usize = 32;
/// Length of a generated key, in bytes.
const GENERATED_KEY_BYTES: usize = 32;

/// The key, ready for signing and verifying. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    /// A key from raw bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key is {} bytes; at least {MIN_KEY_BYTES} are needed",
                bytes.len()
            ));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
        })
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Where the key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `auth.signing_key` (file or `RAKOR_AUTH_SIGNING_KEY`).
    Config,
    /// The key file; `created` when this call generated it.
    File { path: PathBuf, created: bool },
}

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.signing_key: {0}")]
    Config(String),
    #[error("signing key file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Decode a base64 key (standard or URL-safe alphabet, padded or not) of at least
/// [`MIN_KEY_BYTES`]. The error never contains the key.
pub fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    let bytes = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| {
            "is not valid base64 (generate one with: head -c 32 /dev/urandom | base64)".to_owned()
        })?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(format!(
            "decodes to {} bytes; at least {MIN_KEY_BYTES} are needed (generate one with: head -c 32 /dev/urandom | base64)",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Create the data directory (mode 0700 for the parts created) if it does not exist.
pub fn ensure_data_dir(dir: &Path) -> Result<(), KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeyError::DataDir {
            path: dir.to_owned(),
            source,
        })
}

/// The configured key, or the key file in the data directory (created when missing).
pub fn load_or_create(config: &Config) -> Result<(SigningKey, KeySource), KeyError> {
    if !config.auth.signing_key.is_empty() {
        let bytes = decode_key(config.auth.signing_key.expose()).map_err(KeyError::Config)?;
        let key = SigningKey::from_bytes(&bytes).map_err(KeyError::Config)?;
        return Ok((key, KeySource::Config));
    }
    ensure_data_dir(&config.server.data_dir)?;
    let path = config.signing_key_path();
    let created = match read_key_file(&path)? {
        Some(_) => false,
        None => create_key_file(&path)?,
    };
    let bytes = read_key_file(&path)?.ok_or_else(|| KeyError::File {
        path: path.clone(),
        message: "vanished after creation".into(),
    })?;
    let key = SigningKey::from_bytes(&bytes).map_err(|message| KeyError::File {
        path: path.clone(),
        message,
    })?;
    Ok((key, KeySource::File { path, created }))
}

/// Whether a key file is readable by group or others (worth a warning).
pub fn has_loose_permissions(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}

fn read_key_file(path: &Path) -> Result<Option<Vec<u8>>, KeyError> {
    match fs::read_to_string(path) {
        Ok(text) => decode_key(&text)
            .map(Some)
            .map_err(|message| KeyError::File {
                path: path.to_owned(),
                message,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError::File {
            path: path.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// Write a fresh random key to a private temporary file, then hard-link it into place, so a
/// concurrent reader never sees a half-written key and an existing key is never replaced.
/// Returns whether this call created the file (false: another process won the race).
fn create_key_file(path: &Path) -> Result<bool, KeyError> {
    let file_err = |message: String| KeyError::File {
        path: path.to_owned(),
        message,
    };
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);

    let tmp = path.with_file_name(format!(
        ".{KEY_FILE_NAME}.{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(file_err(format!("cannot write: {e}")));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(file_err(format!("cannot create: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rakor-key-test-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn generates_once_with_mode_0600_then_reuses() {
        let dir = temp_dir("gen");
        let mut config = Config::default();
        config.server.data_dir = dir.join("nested");
        let (k1, s1) = load_or_create(&config).unwrap();
        let path = config.signing_key_path();
        assert_eq!(
            s1,
            KeySource::File {
                path: path.clone(),
                created: true
            }
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!has_loose_permissions(&path));
        let (k2, s2) = load_or_create(&config).unwrap();
        assert_eq!(
            s2,
            KeySource::File {
                path: path.clone(),
                created: false
            }
        );
        // Same key: a token minted with one verifies with the other.
        let claims = crate::token::Claims::new(
            "room",
            "id",
            "Name",
            rakor_proto::Role::Host,
            std::time::Duration::from_secs(60),
        );
        let t = crate::token::mint(&k1, &claims).unwrap();
        crate::token::verify(&k2, &t, None).unwrap();
        assert_eq!(
            decode_key(&fs::read_to_string(&path).unwrap())
                .unwrap()
                .len(),
            32
        );
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&config.server.data_dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn configured_key_wins_and_is_checked() {
        let mut config = Config::default();
        config.server.data_dir = temp_dir("unused");
        config.auth.signing_key = crate::config::SecretString::new(
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        );
        let (_, source) = load_or_create(&config).unwrap();
        assert_eq!(source, KeySource::Config);
        assert!(
            !config.server.data_dir.exists(),
            "no data dir needed for a configured key"
        );

        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(decode_key(&short).unwrap_err().contains("16 bytes"));
        let err = decode_key("not base64 !!! secret").unwrap_err();
        assert!(!err.contains("secret"), "the key must not be echoed: {err}");
    }

    #[test]
    fn corrupt_key_file_is_an_error_naming_the_file() {
        let dir = temp_dir("corrupt");
        let mut config = Config::default();
        config.server.data_dir = dir.clone();
        ensure_data_dir(&dir).unwrap();
        fs::write(config.signing_key_path(), "short").unwrap();
        let err = load_or_create(&config).unwrap_err().to_string();
        assert!(err.contains("signing.key"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
