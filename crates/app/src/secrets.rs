//! Secret keys at rest. The HMAC secret of every API key is needed to verify signatures, so it
//! is stored encrypted (ChaCha20-Poly1305) under a master key kept in the data directory, outside
//! the database: a copy of the database alone reveals no secret.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// File name of the master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Why the master key or a sealed secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Reading or writing the key file failed.
    #[error("master key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not 64 hex characters.
    #[error("master key file {0} is malformed (expected 64 hex characters)")]
    Malformed(String),
    /// A sealed secret failed authentication: wrong master key or tampered data.
    #[error("a sealed secret could not be opened (wrong master key or corrupted data)")]
    Unseal,
    /// No randomness available.
    #[error("no system randomness: {0}")]
    Random(String),
}

/// The master key that seals secret keys.
#[derive(Clone)]
pub struct MasterKey {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Fills a buffer from the system's randomness.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretsError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| SecretsError::Random(e.to_string()))?;
    Ok(buf)
}

impl MasterKey {
    /// Loads `dir/master.key`, creating it (mode 0600) with a fresh random key when absent.
    pub fn load_or_create(dir: &Path) -> Result<Self, SecretsError> {
        Self::load_or_create_at(&dir.join(MASTER_KEY_FILE))
    }

    /// The master key in the file `path`, created (0600, random) if missing.
    pub fn load_or_create_at(path: &Path) -> Result<Self, SecretsError> {
        let io = |source| SecretsError::Io { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes =
                    hex::decode(text.trim()).map_err(|_| SecretsError::Malformed(path.display().to_string()))?;
                let key: [u8; KEY_LEN] =
                    bytes.try_into().map_err(|_| SecretsError::Malformed(path.display().to_string()))?;
                Ok(Self::from_bytes(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random_bytes::<KEY_LEN>()?;
                write_private_file(path, hex::encode(key).as_bytes()).map_err(io)?;
                // Another process may have created it first: whatever is on disk wins.
                Self::load_or_create_at(path)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A master key from raw bytes (tests).
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)) }
    }

    /// Encrypts `secret`, bound to `secret_id` so a sealed value cannot be moved to another key.
    pub fn seal(&self, secret_id: &str, secret: &str) -> Result<Vec<u8>, SecretsError> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret.as_bytes(), aad: secret_id.as_bytes() })
            .map_err(|_| SecretsError::Unseal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a value made by [`MasterKey::seal`] for the same `secret_id`.
    pub fn open(&self, secret_id: &str, sealed: &[u8]) -> Result<String, SecretsError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretsError::Unseal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: secret_id.as_bytes() })
            .map_err(|_| SecretsError::Unseal)?;
        String::from_utf8(plain).map_err(|_| SecretsError::Unseal)
    }
}

/// Writes a new file readable by its owner only (0600), failing if it exists.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    // Written whole under a private name, then linked into place: a process starting at the
    // same moment sees no file or the whole file, never a partial one.
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(random_bytes::<8>().map_err(std::io::Error::other)?)));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&tmp);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_id() {
        let key = MasterKey::from_bytes([1; 32]);
        let sealed = key.seal("AKIDa", "s3cret").expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"), "the secret must not appear in clear");
        assert_eq!(key.open("AKIDa", &sealed).expect("open"), "s3cret");
        assert!(key.open("AKIDb", &sealed).is_err(), "bound to its SecretId");
        assert!(MasterKey::from_bytes([2; 32]).open("AKIDa", &sealed).is_err());
        assert!(key.open("AKIDa", &sealed[..5]).is_err());
    }

    #[test]
    fn master_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = MasterKey::load_or_create(dir.path()).expect("create");
        let sealed = first.seal("id", "x").expect("seal");
        let again = MasterKey::load_or_create(dir.path()).expect("load");
        assert_eq!(again.open("id", &sealed).expect("open"), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE)).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(MASTER_KEY_FILE), "zz").expect("write");
        assert!(matches!(MasterKey::load_or_create(dir.path()), Err(SecretsError::Malformed(_))));
    }
}
