//! Where the bytes live: object-store locations from URLs. A path (or `file://`) is a local
//! directory; `s3://BUCKET/PREFIX` is any S3-compatible store, configured by `[storage]
//! options` (object_store's S3 keys: `endpoint`, `region`, `access_key_id`,
//! `secret_access_key`, `allow_http`, …) with the `AWS_*` environment variables over them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

/// A location named by a URL, resolved.
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An object store (scoped to the URL's prefix).
    Objects(Arc<dyn ObjectStore>),
}

/// Whether `url` names an object store rather than a local directory.
pub fn is_object_url(url: &str) -> bool {
    url.starts_with("s3://")
}

/// Resolves `url`: a local directory (relative paths under `data_dir`), or `s3://BUCKET/PREFIX`
/// configured by `options` and the `AWS_*` environment (which wins).
pub fn locate(url: &str, options: &BTreeMap<String, String>, data_dir: &Path) -> anyhow::Result<Location> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "`{url}` names no bucket");
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        for (key, value) in options {
            let key: AmazonS3ConfigKey =
                key.parse().map_err(|_| anyhow::anyhow!("[storage] options: unknown S3 setting `{key}`"))?;
            builder = builder.with_config(key, value);
        }
        for (key, value) in std::env::vars() {
            if key.starts_with("AWS_") {
                if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
        }
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build().with_context(|| format!("configuring {url}"))?);
        let prefix = prefix.trim_matches('/');
        return Ok(Location::Objects(if prefix.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, prefix.to_owned()))
        }));
    }
    let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
    Ok(Location::Local(if path.is_absolute() { path } else { data_dir.join(path) }))
}

/// `url` as an object store: an S3 location, or a local directory (created) through
/// object_store's file-system backend.
pub fn object_store(
    url: &str,
    options: &BTreeMap<String, String>,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    match locate(url, options, data_dir)? {
        Location::Objects(store) => Ok(store),
        Location::Local(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(&dir).with_context(|| format!("opening {}", dir.display()))?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_local_directories_and_s3_urls_are_object_stores() {
        let data = Path::new("/srv/imaged");
        let none = BTreeMap::new();
        assert!(
            matches!(locate("blocks", &none, data), Ok(Location::Local(p)) if p == Path::new("/srv/imaged/blocks"))
        );
        assert!(matches!(locate("file:///mnt/x", &none, data), Ok(Location::Local(p)) if p == Path::new("/mnt/x")));
        let opts: BTreeMap<String, String> = [
            ("endpoint".to_owned(), "http://127.0.0.1:1".to_owned()),
            ("allow_http".to_owned(), "true".to_owned()),
            ("region".to_owned(), "us-east-1".to_owned()),
            ("access_key_id".to_owned(), "a".to_owned()),
            ("secret_access_key".to_owned(), "b".to_owned()),
        ]
        .into();
        assert!(matches!(locate("s3://bucket/some/prefix", &opts, data), Ok(Location::Objects(_))));
        assert!(locate("s3:///nothing", &opts, data).is_err(), "a bucket is required");
        let bad: BTreeMap<String, String> = [("no_such_key".to_owned(), "1".to_owned())].into();
        let err = locate("s3://bucket", &bad, data).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no_such_key"), "{err}");
    }
}
