//! Keeping the block stores honest: garbage collection (blocks no manifest references, past a
//! grace period and older than any job still running) and fsck (re-hash every block and name
//! the images a damaged or missing block belongs to).

use std::collections::BTreeMap;
use std::time::Duration;

use imaged_chunkstore::{ChunkError, Digest};
use imaged_domain::time::Timestamp;
use imaged_domain::ImageId;

use crate::service::{now, AppError, Service};

/// Default time an unreferenced block is kept before it may be collected.
pub const GC_GRACE_PERIOD: Duration = Duration::from_secs(3600);

/// What a GC pass did in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Region.
    pub region: String,
    /// Blocks deleted.
    pub deleted_blocks: u64,
}

/// One damaged or missing block and the images that need it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadBlock {
    /// The block's digest.
    pub digest: String,
    /// `missing` or `damaged`.
    pub problem: &'static str,
    /// Images whose manifest names it.
    pub images: Vec<String>,
}

/// What a GC pass did to this host's instance bases.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BaseGcReport {
    /// Bases deleted (no instance's disk sits on them).
    pub deleted_bases: u64,
    /// Bases kept (in use, or younger than the grace period).
    pub kept_bases: u64,
}

/// What fsck found in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FsckReport {
    /// Region (or `public` for the catalogue).
    pub region: String,
    /// Blocks re-hashed.
    pub checked_blocks: u64,
    /// Problems.
    pub bad_blocks: Vec<BadBlock>,
}

impl Service {
    /// Collects unreferenced blocks of `region` untouched for `grace` and older than the oldest
    /// job still queued or running there.
    /// Uploads in progress keep their blocks (they are touched now) until they expire; expired
    /// uploads are forgotten first.
    pub async fn collect_garbage(&self, region: &str, grace: Duration) -> Result<GcReport, AppError> {
        let uploads = self.uploads().await.map_err(|e| AppError::Conflict(e.to_string()))?;
        for (id, upload) in uploads {
            if upload.expires_at < now() {
                tracing::info!(upload = %id, "forgetting an expired upload");
                self.remove_upload(&id).await.map_err(|e| AppError::Conflict(e.to_string()))?;
            } else if upload.region == region {
                let blocks: Vec<(String, u64)> = upload.manifest.distinct().iter().map(|d| (d.to_hex(), 0)).collect();
                for batch in blocks.chunks(256) {
                    self.store().touch_blocks(region, batch, now()).await?;
                }
            }
        }
        let mut cutoff = Timestamp(now().0 - i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
        if let Some(oldest) = self.store().oldest_active_job(region).await? {
            cutoff = cutoff.min(Timestamp(oldest.0 - 1));
        }
        let digests = self.store().collect_unreferenced(region, cutoff).await?;
        let blocks = self.data().region_blocks(region);
        for hex in &digests {
            if let Some(d) = Digest::from_hex(hex) {
                blocks.delete(&d).await.map_err(|e| AppError::Conflict(e.to_string()))?;
            }
        }
        if !digests.is_empty() {
            tracing::info!(region, blocks = digests.len(), "garbage collected");
        }
        let record = imaged_metastore::MaintenanceReport {
            kind: "gc".into(),
            region: region.to_owned(),
            at: now(),
            blocks: digests.len() as u64,
            problems: 0,
        };
        self.store().record_maintenance(&record).await?;
        Ok(GcReport { region: region.to_owned(), deleted_blocks: digests.len() as u64 })
    }

    /// Deletes the bases on this host that no instance's system disk sits on and that are older
    /// than `grace` (a launch that has just made one has not recorded it yet), and leftovers of
    /// materialisations that died. Images whose base is deleted materialise it again when needed.
    pub async fn collect_bases(&self, grace: Duration) -> Result<BaseGcReport, AppError> {
        let in_use = self.store().disk_bases_in_use().await?;
        let dir = self.data().data_dir.join("bases");
        let mut report = BaseGcReport::default();
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(report) };
        let old = |p: &std::path::Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a >= grace)
        };
        let remove = |path: &std::path::Path| {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(file = %path.display(), "removing an unused base: {e}");
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // A materialisation that died: nothing names a partial file.
                if old(&path) {
                    remove(&path);
                }
                continue;
            }
            if let Some(key) = name.strip_suffix(".manifest") {
                // The manifest of a base that never got its name.
                if !dir.join(format!("{key}.raw")).exists() && old(&path) {
                    remove(&path);
                }
                continue;
            }
            let Some(key) = name.strip_suffix(".raw") else { continue };
            if in_use.contains(key) || !old(&path) {
                report.kept_bases += 1;
                continue;
            }
            remove(&path);
            remove(&dir.join(format!("{key}.manifest")));
            report.deleted_bases += 1;
        }
        if report.deleted_bases > 0 {
            tracing::info!(bases = report.deleted_bases, "unused instance bases removed");
        }
        Ok(report)
    }

    /// Re-hashes every block the manifests of `region` name (and every other stored block) and
    /// reports the missing and damaged ones with the images they belong to.
    pub async fn fsck(&self, region: &str) -> Result<FsckReport, AppError> {
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in self.store().region_manifests(region).await? {
            for hex in &m.blocks {
                owners.entry(hex.clone()).or_default().push(m.image.to_string());
            }
        }
        let blocks = self.data().region_blocks(region);
        let stored = blocks.list().await.map_err(|e| AppError::Conflict(e.to_string()))?;
        for (d, _) in &stored {
            owners.entry(d.to_hex()).or_default();
        }
        let mut report = FsckReport { region: region.to_owned(), ..FsckReport::default() };
        for (hex, images) in owners {
            let Some(digest) = Digest::from_hex(&hex) else { continue };
            report.checked_blocks += 1;
            let problem = match blocks.get(&digest).await {
                Ok(_) => continue,
                Err(ChunkError::Missing(_)) => "missing",
                Err(ChunkError::Damaged(_)) => "damaged",
                Err(e) => return Err(AppError::Conflict(e.to_string())),
            };
            report.bad_blocks.push(BadBlock { digest: hex, problem, images });
        }
        // For every server's `/metrics`.
        let record = imaged_metastore::MaintenanceReport {
            kind: "fsck".into(),
            region: region.to_owned(),
            at: now(),
            blocks: report.checked_blocks,
            problems: report.bad_blocks.len() as u64,
        };
        self.store().record_maintenance(&record).await?;
        Ok(report)
    }

    /// Regions that hold bytes: the configured ones and the catalogue's.
    pub fn byte_regions(&self) -> Vec<String> {
        let mut r: Vec<String> = self.regions().regions().iter().map(|r| r.region.clone()).collect();
        r.push(crate::demo::CATALOGUE_REGION.to_owned());
        r
    }

    /// Images named by a fsck report.
    pub fn damaged_images(report: &FsckReport) -> Vec<ImageId> {
        let mut ids: Vec<ImageId> =
            report.bad_blocks.iter().flat_map(|b| b.images.iter()).filter_map(|i| ImageId::parse(i).ok()).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}
