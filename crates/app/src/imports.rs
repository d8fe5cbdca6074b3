//! `ImportImage`: checks the request, creates the IMPORTING image and its durable job in one
//! transaction, and (in the job) fetches, inspects, reads and stores the bytes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imaged_chunkstore::Digest;
use imaged_diskfmt::{detect_compression, inspect, Compression, Format, Policy};
use imaged_domain::import::{check_family, check_import_target, ImportRuleError};
use imaged_domain::rules::{validate_image_description, validate_image_name, NameError};
use imaged_domain::{AccountId, Image, ImageId, ImageKind, ImageSource, ImageState, Region, ReleaseStatus, Tag};
use imaged_metastore::{JobFence, JobRecord, ManifestRecord, MetaStoreError, Refused};
use serde::{Deserialize, Serialize};

use crate::disk::convert_to_raw;
use crate::ingest::{IngestSource, Progress};
use crate::jobs::JobFailure;
use crate::scratch::{ScratchBudget, ScratchError, SparseFile};
use crate::service::{now, AppError, Service};
use crate::uploads::ManifestReader;

/// What a user asks `ImportImage` for.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    /// Image name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// OS type (DescribeImportImageOs).
    pub os_type: String,
    /// OS version.
    pub os_version: String,
    /// `x86_64`, `i386` or `arm_64`.
    pub architecture: String,
    /// `upload://ID`, `file:///path` (operator-allowed directory) or `http://…`.
    pub url: String,
    /// Declared format (`ImageFormat`, an imaged extension); else taken from the URL's extension.
    pub format: Option<String>,
    /// Skip the image checks that can be skipped; required for ISO.
    pub force: bool,
    /// Licence type.
    pub license_type: Option<String>,
    /// Boot mode.
    pub boot_mode: Option<String>,
    /// Family.
    pub family: Option<String>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Check only.
    pub dry_run: bool,
}

/// Why `ImportImage` is refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Name or description.
    #[error(transparent)]
    Name(#[from] NameError),
    /// OS, architecture, licence, boot mode or family.
    #[error(transparent)]
    Rule(#[from] ImportRuleError),
    /// Unusable URL.
    #[error("ImageUrl {0}")]
    Url(String),
    /// An ISO without `Force`.
    #[error("an ISO image must be imported with Force=true")]
    IsoNeedsForce,
    /// An unknown declared format.
    #[error("`{0}` is not an importable format (raw, qcow2, vmdk, vhd, vhdx, iso)")]
    Format(String),
    /// Quota.
    #[error("the custom image quota of this region is used up")]
    Quota,
    /// Name taken.
    #[error("an image named `{0}` already exists in this region")]
    DuplicateName(String),
    /// Anything else.
    #[error(transparent)]
    App(#[from] AppError),
}

/// The job's parameters, stored with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImportParams {
    pub(crate) url: String,
    pub(crate) format: Option<String>,
    pub(crate) force: bool,
}

fn format_from_url(url: &str) -> Option<Format> {
    let name = url.rsplit('/').next()?.to_ascii_lowercase();
    let ext = name.rsplit_once('.')?.1.to_owned();
    match ext.as_str() {
        "img" => Some(Format::Raw),
        other => Format::parse(other),
    }
}

impl Service {
    /// `ImportImage`: validates, then records the IMPORTING image and its job atomically
    /// (quota and name checked in the same transaction). Returns the new image id (`None` for a
    /// dry run that passed).
    pub async fn import_image(
        &self,
        caller: AccountId,
        region: &Region,
        req: ImportRequest,
    ) -> Result<Option<ImageId>, ImportError> {
        validate_image_name(&req.name)?;
        if let Some(d) = &req.description {
            validate_image_description(d)?;
        }
        let target = check_import_target(
            &req.os_type,
            &req.os_version,
            &req.architecture,
            req.license_type.as_deref(),
            req.boot_mode.as_deref(),
        )?;
        if let Some(f) = &req.family {
            check_family(f)?;
        }
        let declared = match &req.format {
            Some(f) => Some(Format::parse(f).ok_or_else(|| ImportError::Format(f.clone()))?),
            None => format_from_url(&req.url),
        };
        self.check_import_url(caller, &req.url).await?;
        if declared == Some(Format::Iso) && !req.force {
            return Err(ImportError::IsoNeedsForce);
        }
        let quota = self.image_quota(caller).await?;
        if req.dry_run {
            let used = self.store().count_custom_images(caller, &region.region).await.map_err(AppError::from)?;
            return if used >= u64::from(quota) { Err(ImportError::Quota) } else { Ok(None) };
        }
        let id = ImageId::from_random(crate::secrets::random_bytes().map_err(AppError::from)?);
        let created = now();
        let platform = req.os_type.split_whitespace().next().unwrap_or("Other").to_owned();
        let image = Image {
            id: id.clone(),
            region: Some(region.region.clone()),
            owner: Some(caller),
            kind: ImageKind::Private,
            source: ImageSource::ExternalImport,
            state: ImageState::Importing,
            name: req.name.clone(),
            description: req.description.clone().unwrap_or_default(),
            os_name: format!("{} {}", req.os_type, req.os_version).trim_end_matches(" -").to_owned(),
            platform: if target.os.windows { "Windows".into() } else { platform },
            os_type: req.os_type.clone(),
            architecture: target.architecture,
            size_gib: 0,
            created_at: created,
            boot_mode: target.boot_mode,
            license_type: target.license_type,
            family: req.family.clone().unwrap_or_default(),
            deprecated: false,
            supports_cloudinit: !target.os.windows,
            tags: req.tags.clone(),
            release_status: ReleaseStatus::Official,
            kernel: None,
            remarks: Vec::new(),
            sync_percent: None,
            failure_reason: None,
            market: None,
            market_mark: None,
            source_format: declared.map(|f| f.as_str().to_owned()),
            progress: Some(0),
        };
        let params =
            ImportParams { url: req.url.clone(), format: declared.map(|f| f.as_str().to_owned()), force: req.force };
        let job = JobRecord::queued(
            "import",
            &region.region,
            caller,
            Some(id.clone()),
            serde_json::to_string(&params).unwrap_or_default(),
            created,
        );
        match self.store().insert_image_with_job(&image, quota, &job).await.map_err(AppError::from)? {
            Ok(_) => {
                self.wake_workers();
                Ok(Some(id))
            }
            Err(Refused::QuotaExceeded) => Err(ImportError::Quota),
            Err(Refused::DuplicateName) => Err(ImportError::DuplicateName(req.name)),
            Err(other) => Err(AppError::Conflict(format!("{other:?}")).into()),
        }
    }

    /// Checks an import URL at request time: the scheme, an upload the caller owns, a file in
    /// the operator's import directory.
    async fn check_import_url(&self, caller: AccountId, url: &str) -> Result<(), ImportError> {
        if let Some(id) = url.strip_prefix("upload://") {
            self.upload_state(caller, id)
                .await
                .map_err(|_| ImportError::Url(format!("names no upload of yours: {url}")))?;
            return Ok(());
        }
        if url.starts_with("file://") {
            self.allowed_file(url)?;
            return Ok(());
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            let parsed = crate::http::parse_fetch_url(url).map_err(|e| ImportError::Url(format!("{e}: {url}")))?;
            if crate::http::literal_refused(&parsed, &self.data().egress) {
                return Err(ImportError::Url(format!("names a host this service may not reach: {url}")));
            }
            return Ok(());
        }
        Err(ImportError::Url(format!("must be upload://, file:// or http(s)://, not `{url}`")))
    }

    /// The local path of a `file://` URL, if it lies inside the operator's import directory.
    /// Every refusal answers alike, so that nothing can be learnt about paths outside it.
    fn allowed_file(&self, url: &str) -> Result<PathBuf, ImportError> {
        let dir = self
            .data()
            .import_dir
            .as_ref()
            .ok_or_else(|| ImportError::Url("file:// imports are not enabled".into()))?;
        let refused = || ImportError::Url(format!("names no file of the import directory: {url}"));
        let path = PathBuf::from(url.trim_start_matches("file://"));
        let root = dir.canonicalize().map_err(|_| refused())?;
        let real = path.canonicalize().map_err(|_| refused())?;
        if !real.starts_with(&root) || !real.is_file() {
            return Err(refused());
        }
        Ok(real)
    }

    /// The job: fetch, inspect, read, store, and make the image NORMAL.
    pub(crate) async fn run_import(&self, job: &JobRecord, progress: Arc<Progress>) -> Result<String, JobFailure> {
        let params: ImportParams =
            serde_json::from_str(&job.params).map_err(|e| JobFailure::permanent(format!("bad job parameters: {e}")))?;
        let image_id = job.image.clone().ok_or_else(|| JobFailure::permanent("import job without an image"))?;
        let mut image = self
            .store()
            .get_image(&image_id)
            .await
            .map_err(JobFailure::retry)?
            .ok_or_else(|| JobFailure::permanent("the image was deleted"))?;
        if image.state == ImageState::Normal
            && self.store().get_manifest(&image_id).await.map_err(JobFailure::retry)?.is_some()
        {
            return Ok("{}".into()); // finished before a crash; nothing left to do
        }
        let scratch = ScratchDir::create(self.data().scratch_dir().join(format!("job-{}", job.id)))?;
        let budget = self.scratch().budget();
        let result = self.import_bytes(job, &params, &mut image, &scratch.0, &budget, progress).await;
        drop(scratch);
        if result.is_ok() || result.as_ref().is_err_and(|f| f.permanent) {
            if let Some(id) = params.url.strip_prefix("upload://") {
                if let Err(e) = self.remove_upload(id).await {
                    tracing::warn!(job = job.id, "forgetting the imported upload failed: {e}");
                }
            }
        }
        result
    }

    async fn import_bytes(
        &self,
        job: &JobRecord,
        params: &ImportParams,
        image: &mut Image,
        scratch: &Path,
        budget: &Arc<ScratchBudget>,
        progress: Arc<Progress>,
    ) -> Result<String, JobFailure> {
        let declared = params.format.as_deref().and_then(Format::parse);
        let policy = Policy { max_virtual_size: self.data().max_virtual_size };
        let region = job.region.clone();
        let store = self.data().region_blocks(&region);
        let mut source = match params.url.strip_prefix("upload://") {
            Some(id) => {
                let state = self
                    .upload_state(job.account, id)
                    .await
                    .map_err(|_| JobFailure::permanent("the upload is gone"))?;
                if state.region != region {
                    return Err(JobFailure::permanent(format!("the upload was made for region {}", state.region)));
                }
                let manifest = Arc::new(state.manifest);
                let (reader_store, reader_manifest) = (store.clone(), Arc::clone(&manifest));
                let handle = tokio::runtime::Handle::current();
                let looked = tokio::task::spawn_blocking(move || {
                    let reader = ManifestReader::new(reader_store, reader_manifest, handle);
                    let mut head = [0u8; 8];
                    let n = imaged_diskfmt::ReadAt::read_at(&reader, 0, &mut head)?;
                    if detect_compression(&head[..n]).is_some() {
                        return Ok::<_, std::io::Error>(None);
                    }
                    Ok(Some(inspect(&reader, declared, &policy)))
                })
                .await
                .map_err(JobFailure::retry)?
                .map_err(JobFailure::retry)?;
                match looked {
                    Some(inspection) => {
                        let inspection = inspection
                            .map_err(|r| JobFailure::permanent(format!("{}: {}", r.reason.as_str(), r.detail)))?;
                        check_iso(&inspection, params.force)?;
                        let (manifest, format) = match inspection.format {
                            // The uploaded blocks are the disk's blocks: nothing to read again.
                            Format::Raw | Format::Iso => ((*manifest).clone(), inspection.format),
                            Format::Qcow2 => {
                                let reader =
                                    ManifestReader::new(store.clone(), manifest, tokio::runtime::Handle::current());
                                let (m, _) =
                                    self.ingest_into(IngestSource::Qcow2Blocks(reader), &region, progress).await?;
                                (m, Format::Qcow2)
                            }
                            other => {
                                let file = scratch.join("upload.bin");
                                crate::exports::materialise(&store, &manifest, &file, &Progress::default()).await?;
                                let raw = self.convert(&file, other, inspection.virtual_size, scratch).await?;
                                let (m, _) = self
                                    .ingest_into(
                                        IngestSource::File { path: raw, format: Format::Raw },
                                        &region,
                                        progress,
                                    )
                                    .await?;
                                (m, other)
                            }
                        };
                        return self.finish_import(image, manifest, format, &store, &job.fence()).await;
                    }
                    None => {
                        // A compressed upload: decompress it from a local copy.
                        let file = scratch.join("upload.bin");
                        crate::exports::materialise(&store, &manifest, &file, &Progress::default()).await?;
                        file
                    }
                }
            }
            None => self.fetch_source(job, &params.url, scratch, budget).await?,
        };
        let ratio = self.data().max_inflation_ratio;
        source = decompress_if_needed(&source, scratch, budget, ratio, Arc::clone(&progress)).await?;
        let inspect_path = source.clone();
        let inspection = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&inspect_path)?;
            Ok::<_, std::io::Error>(inspect(&file, declared, &policy))
        })
        .await
        .map_err(JobFailure::retry)?
        .map_err(JobFailure::retry)?
        .map_err(|r| JobFailure::permanent(format!("{}: {}", r.reason.as_str(), r.detail)))?;
        check_iso(&inspection, params.force)?;
        let (path, read_as) = match inspection.format {
            Format::Raw | Format::Iso | Format::Qcow2 => (source, inspection.format),
            other => (self.convert(&source, other, inspection.virtual_size, scratch).await?, Format::Raw),
        };
        let (manifest, _) = self.ingest_into(IngestSource::File { path, format: read_as }, &region, progress).await?;
        self.finish_import(image, manifest, inspection.format, &store, &job.fence()).await
    }

    /// Cross-checks and converts a vmdk/vhd/vhdx to raw with qemu-img (after inspection).
    async fn convert(&self, src: &Path, format: Format, size: u64, scratch: &Path) -> Result<PathBuf, JobFailure> {
        let (src, dest) = (src.to_owned(), scratch.join("converted.raw"));
        tokio::task::spawn_blocking(move || convert_to_raw(&src, format, size, &dest))
            .await
            .map_err(JobFailure::retry)?
            .map_err(|e| {
                // qemu-img's words name the server's files: they stay in the log.
                tracing::warn!("converting an inspected {format} image failed: {e}");
                JobFailure::permanent(format!("corrupt: the {format} image could not be converted to a disk"))
            })
    }

    /// Records the manifest and makes the image NORMAL.
    pub(crate) async fn finish_import(
        &self,
        image: &mut Image,
        manifest: imaged_chunkstore::Manifest,
        format: Format,
        store: &imaged_chunkstore::BlockStore,
        fence: &JobFence,
    ) -> Result<String, JobFailure> {
        let blocks: Vec<String> = manifest.distinct().iter().map(Digest::to_hex).collect();
        image.state = ImageState::Normal;
        image.size_gib = manifest.virtual_size.div_ceil(1 << 30);
        image.source_format = Some(format.as_str().to_owned());
        image.progress = None;
        let record = ManifestRecord {
            image: image.id.clone(),
            region: image.region.clone().unwrap_or_default(),
            manifest: manifest.encode(),
            blocks,
            source_format: format.as_str().to_owned(),
            virtual_size: manifest.virtual_size,
        };
        let in_progress =
            if image.source == ImageSource::CreateImage { ImageState::Creating } else { ImageState::Importing };
        self.commit_manifest(image, &record, store, in_progress, true, fence).await?;
        tracing::info!(image = %image.id, format = format.as_str(), size = manifest.virtual_size, "image complete");
        Ok(serde_json::json!({
            "Format": format.as_str(),
            "VirtualSize": manifest.virtual_size,
            "DataBlocks": manifest.data_blocks(),
        })
        .to_string())
    }

    /// Attaches a manifest (taking block references, image becomes what `image` says), then
    /// checks that every block it newly references is present (a block another manifest
    /// references was never collected); if one vanished (a GC race), undoes the attach.
    /// The image keeps `in_progress` as its state until every block is checked. With
    /// `metered`, a custom image's storage is metered from then on (copies are not: copying
    /// across regions is free).
    pub(crate) async fn commit_manifest(
        &self,
        image: &Image,
        record: &ManifestRecord,
        store: &imaged_chunkstore::BlockStore,
        in_progress: ImageState,
        metered: bool,
        fence: &JobFence,
    ) -> Result<(), JobFailure> {
        if let Some(owner) = image.owner {
            let usage = self.storage_usage(owner).await.map_err(JobFailure::retry)?;
            let needed = usage.image_bytes.saturating_add(record.virtual_size);
            if needed > usage.quota_bytes {
                return Err(JobFailure::permanent(format!(
                    "storage-quota: the account's images would take {needed} bytes, over its quota of {} bytes",
                    usage.quota_bytes
                )));
            }
        }
        let mut pending = image.clone();
        pending.state = in_progress;
        let fresh = match self.store().attach_manifest(&pending, record).await {
            Ok(fresh) => fresh,
            Err(MetaStoreError::Deleted(_)) => return Err(JobFailure::permanent("the image was deleted")),
            Err(e) => return Err(JobFailure::retry(e)),
        };
        for hex in &fresh {
            let digest = Digest::from_hex(hex).ok_or_else(|| JobFailure::permanent("bad digest"))?;
            if !store.contains(&digest).await.map_err(|e| JobFailure::retry(e.to_string()))? {
                let _ = self.store().detach_manifest(&image.id, Some(fence)).await;
                return Err(JobFailure::retry(format!("block {hex} vanished before the image was complete")));
            }
        }
        // Only while the image is still the one being filled: a deletion meanwhile wins.
        let open = match (metered, image.owner) {
            (true, Some(_)) => vec![self.storage_segment(image)],
            _ => Vec::new(),
        };
        if !self
            .store()
            .finish_image_metered(image, in_progress, &open, Some(fence))
            .await
            .map_err(JobFailure::retry)?
        {
            let _ = self.store().detach_manifest(&image.id, Some(fence)).await;
            return Err(JobFailure::permanent("the image was deleted"));
        }
        Ok(())
    }

    async fn fetch_source(
        &self,
        job: &JobRecord,
        url: &str,
        scratch: &Path,
        budget: &Arc<ScratchBudget>,
    ) -> Result<PathBuf, JobFailure> {
        if url.starts_with("file://") {
            return self.allowed_file(url).map_err(|e| JobFailure::permanent(e.to_string()));
        }
        let dest = scratch.join("download");
        let mut file = SparseFile::create(&dest, Arc::clone(budget)).map_err(JobFailure::retry)?;
        let data = self.data();
        let fetched =
            crate::http::download(url, &mut file, data.max_virtual_size, data.https_ca_file.as_deref(), &data.egress)
                .await;
        if let Err(e) = fetched {
            tracing::info!(job = job.id, "import fetch failed: {}", e.detail);
            return Err(if e.retry { JobFailure::retry(e.reason) } else { JobFailure::permanent(e.reason) });
        }
        Ok(dest)
    }
}

/// A job's scratch directory, emptied when created and removed when dropped (also when the
/// job is cancelled or its future dropped).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create(path: PathBuf) -> Result<Self, JobFailure> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(JobFailure::retry)?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_iso(inspection: &imaged_diskfmt::Inspection, force: bool) -> Result<(), JobFailure> {
    if inspection.format == Format::Iso && !force {
        return Err(JobFailure::permanent("format-mismatch: an ISO image must be imported with Force=true"));
    }
    Ok(())
}

/// Decompresses one layer of gzip or zstd into the scratch directory, sparsely (zero runs cost
/// nothing), charging its data to the job's budget and refusing a stream whose data outgrows
/// `ratio` times its compressed size (a decompression bomb). Other compressions are refused.
async fn decompress_if_needed(
    path: &Path,
    scratch: &Path,
    budget: &Arc<ScratchBudget>,
    ratio: u64,
    progress: Arc<Progress>,
) -> Result<PathBuf, JobFailure> {
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).map_err(JobFailure::retry)?;
    let Some(kind) = detect_compression(&head[..n]) else { return Ok(path.to_owned()) };
    let (src, dest, budget) = (path.to_owned(), scratch.join("decompressed"), Arc::clone(budget));
    tokio::task::spawn_blocking(move || {
        let compressed = std::fs::metadata(&src).map_err(JobFailure::retry)?.len();
        let bound = compressed.saturating_mul(ratio).max(INFLATION_SLACK);
        let input = std::io::BufReader::new(std::fs::File::open(&src).map_err(JobFailure::retry)?);
        let mut reader: Box<dyn Read> = match kind {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input).map_err(JobFailure::retry)?),
            other => {
                return Err(JobFailure::permanent(format!("unknown-format: {other:?} compression is not accepted")))
            }
        };
        let mut out = SparseFile::create(&dest, budget).map_err(JobFailure::retry)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| JobFailure::permanent(format!("corrupt: decompression failed: {e}")))?;
            if n == 0 {
                break;
            }
            if progress.is_cancelled() {
                return Err(JobFailure::permanent("cancelled"));
            }
            out.write(&buf[..n]).map_err(scratch_failure)?;
            if out.data_bytes() > bound {
                return Err(JobFailure::permanent(format!(
                    "too-large: the compressed file inflates to more than {ratio} times its size"
                )));
            }
        }
        out.finish().map_err(scratch_failure)?;
        let mut head = [0u8; 8];
        let n = std::fs::File::open(&dest).and_then(|mut f| f.read(&mut head)).map_err(JobFailure::retry)?;
        if detect_compression(&head[..n]).is_some() {
            return Err(JobFailure::permanent("unknown-format: a compressed stream inside a compressed stream"));
        }
        Ok(dest)
    })
    .await
    .map_err(JobFailure::retry)?
}

/// Data a compressed file may always inflate to, whatever its size.
const INFLATION_SLACK: u64 = 64 << 20;

/// A scratch refusal as a job failure: the job's own cap is permanent, a full host is not.
pub(crate) fn scratch_failure(e: ScratchError) -> JobFailure {
    if e.is_retryable() {
        JobFailure::retry(e)
    } else {
        JobFailure::permanent(e.to_string())
    }
}
