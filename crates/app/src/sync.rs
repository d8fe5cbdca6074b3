//! `SyncImages`: a custom image copied to other regions of the same account (free, as the
//! seeds say). The copy moves only the blocks the destination region's store lacks, each
//! verified against its digest on arrival, then commits the same manifest there. The source
//! shows SYNCING with `SyncPercent` meanwhile; the copies are CREATING until complete, so a
//! destination never holds a usable image with missing blocks.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use imaged_chunkstore::{block, Digest, BLOCK_SIZE};
use imaged_domain::rules::{validate_image_name, NameError};
use imaged_domain::{AccountId, ImageId, ImageState, Region};
use imaged_metastore::{JobRecord, ManifestRecord, Refused};
use serde::{Deserialize, Serialize};

use crate::images::ImageError;
use crate::ingest::Progress;
use crate::jobs::JobFailure;
use crate::service::{now, AppError, Service};

/// What `SyncImages` asks for.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// `ImageIds`: exactly one.
    pub image_ids: Vec<String>,
    /// `DestinationRegions`.
    pub regions: Vec<String>,
    /// `ImageName` of the copies (default: the source's).
    pub name: Option<String>,
    /// `Encrypt`.
    pub encrypt: bool,
    /// Validate only.
    pub dry_run: bool,
}

/// Why `SyncImages` is refused.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The image cannot be found or used.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Not exactly one image.
    #[error("SyncImages copies exactly one image per call")]
    OneImage,
    /// No destination.
    #[error("DestinationRegions must name at least one region")]
    NoRegions,
    /// Not a region.
    #[error("the region `{0}` does not exist")]
    NoSuchRegion(String),
    /// A region that cannot receive copies now.
    #[error("the region `{0}` is not available")]
    Unavailable(String),
    /// The source region among the destinations.
    #[error("a custom image cannot be copied to its own region `{0}`")]
    SameRegion(String),
    /// The image is not NORMAL (another copy running, or not complete).
    #[error("the image `{0}` is {1}, not NORMAL")]
    State(String, ImageState),
    /// Encrypted copies.
    #[error("encrypted images are not supported")]
    Encrypt,
    /// The copies' name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A destination has an image of that name.
    #[error("an image named `{0}` already exists in a destination region")]
    DuplicateName(String),
    /// A destination's quota is used up.
    #[error("the custom image quota of a destination region is used up")]
    Quota,
    /// The store failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<imaged_metastore::MetaStoreError> for SyncError {
    fn from(e: imaged_metastore::MetaStoreError) -> Self {
        Self::App(e.into())
    }
}

/// Blocks copied at once.
const COPIES_IN_FLIGHT: usize = 8;

/// Copies one block into `to` unless it is there; returns the stored bytes written (0 when it
/// was there). The bytes are verified on arrival: they must decode to their address.
async fn copy_block(
    from: &imaged_chunkstore::BlockStore,
    to: &imaged_chunkstore::BlockStore,
    digest: Digest,
) -> Result<u64, JobFailure> {
    if to.contains(&digest).await.map_err(|e| JobFailure::retry(e.to_string()))? {
        return Ok(0);
    }
    let encoded = from.get_encoded(&digest).await.map_err(|e| JobFailure::retry(e.to_string()))?;
    let check = encoded.clone();
    tokio::task::spawn_blocking(move || block::decode_bytes(check, &digest, BLOCK_SIZE))
        .await
        .map_err(JobFailure::retry)?
        .map_err(|e| JobFailure::permanent(format!("corrupt source block: {e}")))?;
    let stored = encoded.len() as u64;
    to.put_encoded(&digest, encoded).await.map_err(|e| JobFailure::retry(e.to_string()))?;
    Ok(stored)
}

/// A block copy's outcome: the digest and the bytes written.
type Copied = Result<(Digest, u64), JobFailure>;

/// One finished block copy, counted in the progress.
fn settle(r: Option<Result<Copied, tokio::task::JoinError>>, progress: &Progress) -> Copied {
    let done = r.ok_or_else(|| JobFailure::retry("no copy to wait for"))?.map_err(JobFailure::retry)??;
    progress.done.fetch_add(1, Ordering::Relaxed);
    Ok(done)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SyncParams {
    /// Each copy and its region.
    copies: Vec<(ImageId, String)>,
}

impl Service {
    /// `SyncImages`: validates, then in one transaction moves the source to SYNCING (only from
    /// NORMAL), inserts a CREATING copy per destination (quota and name checked there) and
    /// queues the copy job. Returns the copies and their regions (none for a dry run).
    pub async fn sync_images(
        &self,
        caller: AccountId,
        region: &Region,
        req: SyncRequest,
    ) -> Result<Vec<(ImageId, String)>, SyncError> {
        let [raw] = req.image_ids.as_slice() else { return Err(SyncError::OneImage) };
        if req.encrypt {
            return Err(SyncError::Encrypt);
        }
        let source = self.own_custom_image(caller, region, raw).await?;
        if source.state != ImageState::Normal {
            return Err(SyncError::State(raw.clone(), source.state));
        }
        if req.regions.is_empty() {
            return Err(SyncError::NoRegions);
        }
        let mut regions: Vec<&str> = Vec::new();
        for r in &req.regions {
            let dest = self.regions().get(r).ok_or_else(|| SyncError::NoSuchRegion(r.clone()))?;
            if dest.region == region.region {
                return Err(SyncError::SameRegion(r.clone()));
            }
            if !dest.available {
                return Err(SyncError::Unavailable(r.clone()));
            }
            if !regions.contains(&r.as_str()) {
                regions.push(r);
            }
        }
        let name = req.name.clone().unwrap_or_else(|| source.name.clone());
        validate_image_name(&name)?;
        let quota = self.image_quota(caller).await?;
        if req.dry_run {
            for r in &regions {
                if self.store().count_custom_images(caller, r).await? >= u64::from(quota) {
                    return Err(SyncError::Quota);
                }
            }
            return Ok(Vec::new());
        }
        let created = now();
        let mut copies = Vec::with_capacity(regions.len());
        for r in &regions {
            let mut copy = source.clone();
            copy.id = ImageId::from_random(crate::secrets::random_bytes().map_err(AppError::from)?);
            copy.region = Some((*r).to_owned());
            copy.name = name.clone();
            copy.state = ImageState::Creating;
            copy.created_at = created;
            copy.progress = Some(0);
            copy.sync_percent = None;
            copies.push(copy);
        }
        let mut syncing = source.clone();
        syncing.state = ImageState::Syncing;
        syncing.sync_percent = Some(0);
        let params = SyncParams {
            copies: copies.iter().map(|c| (c.id.clone(), c.region.clone().unwrap_or_default())).collect(),
        };
        let job = JobRecord::queued(
            "sync",
            &region.region,
            caller,
            Some(source.id.clone()),
            serde_json::to_string(&params).map_err(|e| AppError::Conflict(e.to_string()))?,
            created,
        );
        match self.store().begin_sync(&syncing, &copies, quota, &job).await? {
            Ok(_) => {
                self.wake_workers();
                Ok(params.copies)
            }
            Err(Refused::WrongState) => Err(SyncError::State(raw.clone(), ImageState::Syncing)),
            Err(Refused::QuotaExceeded) => Err(SyncError::Quota),
            Err(Refused::DuplicateName) => Err(SyncError::DuplicateName(name)),
            Err(other) => Err(AppError::Conflict(format!("{other:?}")).into()),
        }
    }

    /// The copy job: for each destination, the blocks its store lacks are read from the
    /// source's store, verified, and written; then the manifest is committed there.
    pub(crate) async fn run_sync(&self, job: &JobRecord, progress: Arc<Progress>) -> Result<String, JobFailure> {
        let params: SyncParams =
            serde_json::from_str(&job.params).map_err(|e| JobFailure::permanent(format!("bad job parameters: {e}")))?;
        let source_id = job.image.clone().ok_or_else(|| JobFailure::permanent("sync job without an image"))?;
        let record = self
            .store()
            .get_manifest(&source_id)
            .await
            .map_err(JobFailure::retry)?
            .ok_or_else(|| JobFailure::permanent("the source image has no bytes"))?;
        let digests: BTreeSet<Digest> = record.blocks.iter().filter_map(|h| Digest::from_hex(h)).collect();
        progress.total.store((digests.len() * params.copies.len()) as u64, Ordering::Relaxed);
        let from = self.data().region_blocks(&record.region);
        let mut moved = 0u64;
        for (copy_id, dest_region) in &params.copies {
            let Some(mut copy) = self.store().get_image(copy_id).await.map_err(JobFailure::retry)? else { continue };
            if copy.state == ImageState::Normal {
                progress.done.fetch_add(digests.len() as u64, Ordering::Relaxed);
                continue; // copied before a crash
            }
            // A previous attempt may have attached its manifest before it died.
            self.store().detach_manifest(copy_id, Some(&job.fence())).await.map_err(JobFailure::retry)?;
            let to = self.data().region_blocks(dest_region);
            let mut touches = Vec::new();
            let mut copies = tokio::task::JoinSet::new();
            for digest in digests.iter().copied() {
                if copies.len() >= COPIES_IN_FLIGHT {
                    touches.push(settle(copies.join_next().await, &progress)?);
                }
                let (from, to) = (from.clone(), to.clone());
                copies.spawn(async move { copy_block(&from, &to, digest).await.map(|stored| (digest, stored)) });
            }
            while !copies.is_empty() {
                touches.push(settle(copies.join_next().await, &progress)?);
            }
            moved += touches.iter().map(|(_, stored)| stored).sum::<u64>();
            let touches: Vec<(String, u64)> = touches.into_iter().map(|(d, s)| (d.to_hex(), s)).collect();
            for batch in touches.chunks(256) {
                self.store().touch_blocks(dest_region, batch, now()).await.map_err(JobFailure::retry)?;
            }
            copy.state = ImageState::Normal;
            copy.progress = None;
            let dest = ManifestRecord { image: copy_id.clone(), region: dest_region.clone(), ..record.clone() };
            self.commit_manifest(&copy, &dest, &to, ImageState::Creating, false, &job.fence()).await?;
            tracing::info!(image = %copy_id, region = %dest_region, "copy complete");
        }
        self.end_sync(&source_id).await;
        Ok(serde_json::json!({ "Copies": params.copies.len(), "BytesMoved": moved }).to_string())
    }

    /// Returns the source of a copy to NORMAL (re-read, so no concurrent change is lost).
    async fn end_sync(&self, source: &ImageId) {
        if let Ok(Some(mut image)) = self.store().get_image(source).await {
            if image.state == ImageState::Syncing {
                image.state = ImageState::Normal;
                image.sync_percent = None;
                if let Err(e) = self.store().put_images(std::slice::from_ref(&image)).await {
                    tracing::warn!(image = %source, "ending the copy: {e}");
                }
            }
        }
    }

    /// A copy given up: the copies not complete are CREATEFAILED, the source NORMAL again.
    pub(crate) async fn fail_sync(&self, job: &JobRecord, message: &str) {
        if let Ok(params) = serde_json::from_str::<SyncParams>(&job.params) {
            for (copy, _) in &params.copies {
                self.fail_image(copy, message, Some(&job.fence())).await;
            }
        }
        if let Some(source) = &job.image {
            self.end_sync(source).await;
        }
    }
}
