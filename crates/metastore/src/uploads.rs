//! Uploads in progress, kept with the rest of the metadata so that any server continues an
//! upload another began: [`UploadStore`].

use async_trait::async_trait;
use imaged_domain::time::Timestamp;
use imaged_domain::AccountId;

use crate::{Refused, Result};

/// An upload in progress: who made it, for which region, its proof nonce, the blocks received
/// so far (an encoded manifest) and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// 32 hexadecimal digits.
    pub id: String,
    /// Who made it.
    pub owner: AccountId,
    /// The region whose block store holds its blocks.
    pub region: String,
    /// The nonce of its possession proofs.
    pub nonce: [u8; 32],
    /// Bytes received (the manifest's virtual size).
    pub size: u64,
    /// Its blocks so far, encoded.
    pub manifest: Vec<u8>,
    /// When it expires unless appended to.
    pub expires_at: Timestamp,
}

/// Uploads in progress.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Inserts a new upload unless its owner already has `max_live` that expire after `now`
    /// (the count and the insert are one step: concurrent creations never exceed it).
    async fn insert_upload(&self, upload: &UploadRecord, max_live: u32, now: Timestamp) -> Result<Result<(), Refused>>;
    /// An upload by id.
    async fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>>;
    /// Replaces an upload's blocks, size and expiry if its size is still `expected_size`;
    /// false when another append got there first or the upload is gone.
    async fn save_upload(
        &self,
        id: &str,
        expected_size: u64,
        manifest: &[u8],
        size: u64,
        expires_at: Timestamp,
    ) -> Result<bool>;
    /// The sizes of `owner`'s uploads that expire after `now`.
    async fn live_upload_sizes(&self, owner: AccountId, now: Timestamp) -> Result<Vec<u64>>;
    /// Every upload, expired or not (for GC).
    async fn list_uploads(&self) -> Result<Vec<UploadRecord>>;
    /// Forgets an upload; false if it was not there.
    async fn delete_upload(&self, id: &str) -> Result<bool>;
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn nonce_from_column(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| crate::MetaStoreError::Corrupt("an upload's nonce is not 32 bytes".into()))
}
