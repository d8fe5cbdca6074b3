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

    /// The conformance checks every backing object store passes.
    async fn conformance(store: BlockStore) {
        let data = b"hello block".repeat(1000);
        let (digest, outcome, stored) = store.put(&data).await.expect("put");
        assert_eq!(outcome, PutOutcome::Stored);
        assert!(stored < data.len(), "compressible data is stored compressed");
        let (again, outcome, _) = store.put(&data).await.expect("put again");
        assert_eq!((again, outcome), (digest, PutOutcome::AlreadyPresent));
        assert_eq!(store.get(&digest).await.expect("get"), data);
        assert!(store.contains(&digest).await.expect("head"));
        assert_eq!(store.list().await.expect("list").iter().map(|(d, _)| *d).collect::<Vec<_>>(), vec![digest]);
        let absent = Digest::of(b"absent");
        assert!(matches!(store.get(&absent).await, Err(ChunkError::Missing(_))));
        assert!(!store.contains(&absent).await.expect("head"));
        store.delete(&digest).await.expect("delete");
        store.delete(&digest).await.expect("deleting twice is fine");
        assert!(!store.contains(&digest).await.expect("head"));
    }

    #[tokio::test]
    async fn in_memory_store_passes_the_conformance_checks() {
        conformance(BlockStore::new(Arc::new(InMemory::new()))).await;
    }

    #[tokio::test]
    async fn local_filesystem_store_passes_the_conformance_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = LocalFileSystem::new_with_prefix(dir.path()).expect("fs");
        conformance(BlockStore::new(Arc::new(fs))).await;
    }

    #[tokio::test]
    async fn a_damaged_block_on_disk_is_refused_on_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = LocalFileSystem::new_with_prefix(dir.path()).expect("fs");
        let store = BlockStore::new(Arc::new(fs));
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let (digest, _, _) = store.put(&data).await.expect("put");
        let hex = digest.to_hex();
        let file = dir.path().join("blocks").join(&hex[..2]).join(&hex);
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&file, bytes).expect("write");
        assert!(
            matches!(store.get(&digest).await, Err(ChunkError::Damaged(_))),
            "damage is detected whatever the encoding"
        );
    }
}
