//! [`BlockStore`]: blocks of one region in an `object_store` location, under
//! `blocks/<first two hex digits>/<digest>`. Writes are put-if-absent (an existing block with the
//! same address is the same bytes); every read is verified against the address.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::block::{self, BlockError};
use crate::digest::Digest;
use crate::BLOCK_SIZE;

/// What can go wrong in the block store.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A block is missing.
    #[error("block {0} is missing")]
    Missing(String),
    /// A block is damaged.
    #[error(transparent)]
    Damaged(#[from] BlockError),
}

/// Whether a put stored new bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The block was new and is now stored.
    Stored,
    /// A block with that address was already there.
    AlreadyPresent,
}

/// The blocks of one region.
#[derive(Clone, Debug)]
pub struct BlockStore {
    objects: Arc<dyn ObjectStore>,
}

fn path_of(d: &Digest) -> Path {
    let hex = d.to_hex();
    Path::from(format!("blocks/{}/{hex}", &hex[..2]))
}

impl BlockStore {
    /// A block store over `objects` (already scoped to the region, e.g. by a prefix).
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Self { objects }
    }

    /// Stores `data` under its digest unless present; returns the digest, the outcome and the
    /// stored size in bytes.
    pub async fn put(&self, data: &[u8]) -> Result<(Digest, PutOutcome, usize), ChunkError> {
        let digest = Digest::of(data);
        let encoded = block::encode(data);
        let outcome = self.put_encoded(&digest, Bytes::from(encoded.clone())).await?;
        Ok((digest, outcome, encoded.len()))
    }

    /// Stores an already-encoded block (from [`block::encode`]) under `digest`, put-if-absent.
    pub async fn put_encoded(&self, digest: &Digest, encoded: Bytes) -> Result<PutOutcome, ChunkError> {
        self.put_parts(digest, vec![encoded]).await
    }

    /// Stores a block encoded as parts (from [`block::encode_parts`]) under `digest`,
    /// put-if-absent, without joining them.
    pub async fn put_parts(&self, digest: &Digest, parts: Vec<Bytes>) -> Result<PutOutcome, ChunkError> {
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.objects.put_opts(&path_of(digest), PutPayload::from_iter(parts), opts).await {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyPresent),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored (encoded) bytes of a block, unverified (for copying between stores).
    pub async fn get_encoded(&self, digest: &Digest) -> Result<Bytes, ChunkError> {
        match self.objects.get(&path_of(digest)).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(ChunkError::Missing(digest.to_hex())),
            Err(e) => Err(e.into()),
        }
    }

    /// A block's bytes, verified against its digest, without copying a raw block.
    pub async fn get_bytes(&self, digest: &Digest) -> Result<Bytes, ChunkError> {
        let stored = self.get_encoded(digest).await?;
        Ok(block::decode_bytes(stored, digest, BLOCK_SIZE)?)
    }

    /// A block's bytes, verified against its digest.
    pub async fn get(&self, digest: &Digest) -> Result<Vec<u8>, ChunkError> {
        let stored = self.get_encoded(digest).await?;
        Ok(block::decode(&stored, digest, BLOCK_SIZE)?)
    }

    /// Whether a block is present.
    pub async fn contains(&self, digest: &Digest) -> Result<bool, ChunkError> {
        match self.objects.head(&path_of(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a block (absent is fine).
    pub async fn delete(&self, digest: &Digest) -> Result<(), ChunkError> {
        match self.objects.delete(&path_of(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every block present, with its stored size (for fsck and accounting).
    pub async fn list(&self) -> Result<Vec<(Digest, u64)>, ChunkError> {
        use futures::StreamExt as _;
        let mut out = Vec::new();
        let mut stream = self.objects.list(Some(&Path::from("blocks")));
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            if let Some(d) = meta.location.filename().and_then(Digest::from_hex) {
                out.push((d, meta.size));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    /// The conformance suite every backing object store passes: put-if-absent, verified reads,
    /// damaged and missing objects, delete, listing (what GC and fsck read). `raw` is the same
    /// location as `store`, reached directly, to damage and remove objects behind its back.
    async fn conformance(store: BlockStore, raw: Arc<dyn ObjectStore>) {
        assert!(store.list().await.expect("list").is_empty(), "a fresh location holds no block");
        let data = b"hello block".repeat(1000);
        let (digest, outcome, stored) = store.put(&data).await.expect("put");
        assert_eq!(outcome, PutOutcome::Stored);
        assert!(stored < data.len(), "compressible data is stored compressed");
        // A store that honours `If-None-Match: *` says the block was there; one that ignores it
        // overwrites the same bytes. Either way the block reads back unchanged.
        let (again, _, _) = store.put(&data).await.expect("put again");
        assert_eq!(again, digest);
        assert_eq!(store.get(&digest).await.expect("get"), data);
        assert!(store.contains(&digest).await.expect("head"));

        let random: Vec<u8> = (0..BLOCK_SIZE as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let (other, _, other_len) = store.put(&random).await.expect("put incompressible");
        assert_eq!(store.get_bytes(&other).await.expect("get").as_ref(), random.as_slice());
        let mut listed = store.list().await.expect("list");
        listed.sort();
        let mut expected = vec![(digest, stored as u64), (other, other_len as u64)];
        expected.sort();
        assert_eq!(listed, expected, "listing names every block with its stored size");

        // Damage behind the store's back: the read is refused, whatever the encoding.
        let mut damaged = store.get_encoded(&other).await.expect("encoded").to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        raw.put(&path_of(&other), PutPayload::from(damaged)).await.expect("overwrite");
        assert!(matches!(store.get(&other).await, Err(ChunkError::Damaged(_))), "damage is detected");
        assert!(matches!(store.get_bytes(&other).await, Err(ChunkError::Damaged(_))), "damage is detected");
        // Put-if-absent never repairs a damaged block by itself; deleting it and putting again does.
        store.delete(&other).await.expect("delete damaged");
        store.put(&random).await.expect("put again");
        assert_eq!(store.get(&other).await.expect("repaired"), random);

        // Missing: removed behind the store's back.
        raw.delete(&path_of(&digest)).await.expect("remove");
        assert!(matches!(store.get(&digest).await, Err(ChunkError::Missing(_))));
        assert!(!store.contains(&digest).await.expect("head"));
        let absent = Digest::of(b"absent");
        assert!(matches!(store.get_encoded(&absent).await, Err(ChunkError::Missing(_))));
        store.delete(&absent).await.expect("deleting what is absent is fine");
        store.delete(&other).await.expect("delete");
        store.delete(&other).await.expect("deleting twice is fine");
        assert!(!store.contains(&other).await.expect("head"));
        assert!(store.list().await.expect("list").is_empty(), "nothing is left");
    }

    #[tokio::test]
    async fn in_memory_store_passes_the_conformance_suite() {
        let raw: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        conformance(BlockStore::new(Arc::clone(&raw)), raw).await;
    }

    #[tokio::test]
    async fn local_filesystem_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        conformance(BlockStore::new(Arc::clone(&raw)), raw).await;
    }

    /// On the S3 server named by `IMAGED_TEST_S3_URL` (`s3://BUCKET`, credentials and endpoint
    /// from the `AWS_*` environment, as `.ci/run` sets them), under a fresh prefix.
    #[tokio::test]
    async fn s3_store_passes_the_conformance_suite() {
        let Ok(url) = std::env::var("IMAGED_TEST_S3_URL") else {
            eprintln!("IMAGED_TEST_S3_URL is not set: skipping the S3 block-store conformance suite");
            return;
        };
        let bucket = url.trim_start_matches("s3://").trim_end_matches('/');
        let s3 = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).build().expect("S3 settings");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let prefix = format!("chunkstore-test-{}-{nanos}", std::process::id());
        let raw: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(s3, prefix));
        conformance(BlockStore::new(Arc::clone(&raw)), raw).await;
    }
}
