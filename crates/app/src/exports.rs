//! `ExportImages`: a custom image's blocks written out as RAW, QCOW2, VHD or VMDK into a bucket
//! (a local directory, or an object-store location every server reaches), by a durable job.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use imaged_chunkstore::{BlockStore, Manifest};
use imaged_diskfmt::Format;
use imaged_domain::{AccountId, ImageId, ImageKind, ImageState, Region};
use imaged_metastore::{ExportedFile, JobRecord};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::data::Bucket;
use crate::disk::convert_from_raw;
use crate::ingest::Progress;
use crate::jobs::JobFailure;
use crate::service::{now, AppError, Service};

/// What a user asks `ExportImages` for.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// Bucket name.
    pub bucket: String,
    /// Images to export.
    pub image_ids: Vec<String>,
    /// RAW (default), QCOW2, VHD or VMDK.
    pub format: Option<String>,
    /// One file-name prefix per image.
    pub prefixes: Option<Vec<String>>,
    /// Check only.
    pub dry_run: bool,
}

/// Why `ExportImages` is refused.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No such bucket.
    #[error("bucket `{0}` does not exist")]
    BucketNotFound(String),
    /// Malformed image id.
    #[error("malformed image id `{0}`")]
    Malformed(String),
    /// Not found (or not visible).
    #[error("image `{0}` does not exist")]
    NotFound(String),
    /// Public images cannot be exported.
    #[error("public image `{0}` cannot be exported")]
    Public(String),
    /// Shared images cannot be exported.
    #[error("shared image `{0}` cannot be exported")]
    Shared(String),
    /// Marketplace images cannot be exported.
    #[error("marketplace image `{0}` cannot be exported")]
    Market(String),
    /// Windows images cannot be exported.
    #[error("Windows image `{0}` cannot be exported")]
    Windows(String),
    /// Not NORMAL.
    #[error("image `{0}` is not NORMAL")]
    State(String),
    /// Bad format.
    #[error("ExportFormat `{0}` is not RAW, QCOW2, VHD or VMDK")]
    Format(String),
    /// Prefix list length or a prefix's form.
    #[error(
        "FileNamePrefixList must have one prefix per image, each at most 64 letters, digits, `-`, `_` or `.`, \
         not starting with `.`"
    )]
    Prefixes,
    /// Too many images.
    #[error("at most 10 images per export")]
    TooMany,
    /// Anything else.
    #[error(transparent)]
    App(#[from] AppError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExportParams {
    pub(crate) bucket: String,
    pub(crate) format: String,
    pub(crate) items: Vec<(ImageId, String)>,
}

/// A started export: its task id and the files it will write, relative to the bucket.
#[derive(Debug, Clone)]
pub struct ExportStarted {
    /// The job id.
    pub task_id: u64,
    /// Bucket-relative file names.
    pub paths: Vec<String>,
}

impl Service {
    /// `ExportImages`: checks the images (the caller's own, NORMAL, not Windows) and queues one job.
    pub async fn export_images(
        &self,
        caller: AccountId,
        region: &Region,
        req: ExportRequest,
    ) -> Result<Option<ExportStarted>, ExportError> {
        if !self.data().buckets.contains_key(&req.bucket) {
            return Err(ExportError::BucketNotFound(req.bucket));
        }
        let format_name = req.format.clone().unwrap_or_else(|| "RAW".into());
        let format = match format_name.to_ascii_uppercase().as_str() {
            "RAW" => Format::Raw,
            "QCOW2" => Format::Qcow2,
            "VHD" => Format::Vhd,
            "VMDK" => Format::Vmdk,
            _ => return Err(ExportError::Format(format_name)),
        };
        if req.image_ids.len() > 10 {
            return Err(ExportError::TooMany);
        }
        if let Some(p) = &req.prefixes {
            if p.len() != req.image_ids.len() || !p.iter().all(|p| valid_prefix(p)) {
                return Err(ExportError::Prefixes);
            }
        }
        let mut items = Vec::new();
        for (i, raw_id) in req.image_ids.iter().enumerate() {
            let id = ImageId::parse(raw_id).map_err(|_| ExportError::Malformed(raw_id.clone()))?;
            let image = self.store().get_image(&id).await.map_err(AppError::from)?;
            let image = image.ok_or_else(|| ExportError::NotFound(raw_id.clone()))?;
            match image.kind {
                ImageKind::Public => return Err(ExportError::Public(raw_id.clone())),
                ImageKind::Market => return Err(ExportError::Market(raw_id.clone())),
                // A custom image carrying a listing's mark holds a licensed disk.
                ImageKind::Private if image.owner == Some(caller) && image.market_mark.is_some() => {
                    return Err(ExportError::Market(raw_id.clone()))
                }
                ImageKind::Private if image.owner != Some(caller) => {
                    let shared = self.store().visible_images(caller, &region.region).await.map_err(AppError::from)?;
                    return Err(if shared.iter().any(|v| v.image.id == id) {
                        ExportError::Shared(raw_id.clone())
                    } else {
                        ExportError::NotFound(raw_id.clone())
                    });
                }
                ImageKind::Private => {}
            }
            if image.region.as_deref() != Some(region.region.as_str()) {
                return Err(ExportError::NotFound(raw_id.clone()));
            }
            if image.platform.eq_ignore_ascii_case("Windows") {
                return Err(ExportError::Windows(raw_id.clone()));
            }
            if image.state != ImageState::Normal {
                return Err(ExportError::State(raw_id.clone()));
            }
            let ext = format.as_str();
            let name = match req.prefixes.as_ref().and_then(|p| p.get(i)) {
                Some(prefix) if !prefix.is_empty() => format!("{prefix}_{id}_system.{ext}"),
                _ => format!("{id}_system.{ext}"),
            };
            items.push((id, name));
        }
        if req.dry_run {
            return Ok(None);
        }
        let paths = items.iter().map(|(_, n)| n.clone()).collect();
        let params = ExportParams { bucket: req.bucket, format: format.as_str().to_owned(), items };
        let created = now();
        let job = JobRecord::queued(
            "export",
            &region.region,
            caller,
            None,
            serde_json::to_string(&params).unwrap_or_default(),
            created,
        );
        let task_id = self.store().insert_job(&job).await.map_err(AppError::from)?;
        self.wake_workers();
        Ok(Some(ExportStarted { task_id, paths }))
    }

    /// Where an exported file is, if `caller` exported it: downloads are authorised on the
    /// record the export job made, never on the file's name.
    pub async fn exported_file(
        &self,
        caller: AccountId,
        bucket: &str,
        name: &str,
    ) -> Result<Option<ExportedObject>, AppError> {
        let Some(bucket_at) = self.data().buckets.get(bucket).cloned() else { return Ok(None) };
        if name.contains('/') || name.starts_with('.') || name.is_empty() {
            return Ok(None);
        }
        let Some(record) = self.store().exported_file(bucket, name).await? else { return Ok(None) };
        if record.account != caller {
            return Ok(None);
        }
        Ok(match bucket_at {
            Bucket::Local(dir) => Some(dir.join(name)).filter(|p| p.is_file()).map(ExportedObject::File),
            Bucket::Objects(store) => {
                let path = ObjectPath::from(name);
                match store.head(&path).await {
                    Ok(meta) => Some(ExportedObject::Object { store, path, size: meta.size }),
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => return Err(AppError::Conflict(format!("the bucket `{bucket}` failed: {e}"))),
                }
            }
        })
    }

    /// The job: each image's blocks to a sparse raw file, converted when asked, then renamed
    /// into place (a reader never sees a half-written file under the final name); into an
    /// object-store bucket a RAW export is streamed block by block as one multipart upload,
    /// which appears under its name only when complete.
    pub(crate) async fn run_export(&self, job: &JobRecord, progress: Arc<Progress>) -> Result<String, JobFailure> {
        let params: ExportParams =
            serde_json::from_str(&job.params).map_err(|e| JobFailure::permanent(format!("bad job parameters: {e}")))?;
        let bucket = self
            .data()
            .buckets
            .get(&params.bucket)
            .cloned()
            .ok_or_else(|| JobFailure::permanent(format!("bucket `{}` is gone", params.bucket)))?;
        // Work files of an object-store bucket are this job's scratch.
        let dir = match &bucket {
            Bucket::Local(dir) => dir.clone(),
            Bucket::Objects(_) => self.data().scratch_dir().join(format!("export-{}", job.id)),
        };
        std::fs::create_dir_all(&dir).map_err(JobFailure::retry)?;
        let _scratch = matches!(bucket, Bucket::Objects(_)).then(|| TempDir(dir.clone()));
        let format = Format::parse(&params.format).ok_or_else(|| JobFailure::permanent("bad format"))?;
        let store = self.data().region_blocks(&job.region);
        let mut manifests = Vec::new();
        for (id, name) in &params.items {
            let record = self
                .store()
                .get_manifest(id)
                .await
                .map_err(JobFailure::retry)?
                .ok_or_else(|| JobFailure::permanent(format!("image {id} has no bytes")))?;
            let manifest = Manifest::decode(&record.manifest).map_err(|e| JobFailure::permanent(e.to_string()))?;
            manifests.push((manifest, name.clone()));
        }
        let total: u64 = manifests.iter().map(|(m, _)| m.blocks.len() as u64).sum();
        progress.total.store(total.max(1), Ordering::Relaxed);
        let mut written = Vec::new();
        for ((manifest, name), (image, _)) in manifests.iter().zip(&params.items) {
            let record = ExportedFile {
                bucket: params.bucket.clone(),
                name: name.clone(),
                account: job.account,
                image: image.clone(),
                job: job.id,
                created_at: now(),
            };
            // Recorded before the file has its name, so no file is ever downloadable unrecorded.
            self.store().record_export(&record).await.map_err(JobFailure::retry)?;
            if let (Bucket::Objects(objects), Format::Raw) = (&bucket, format) {
                stream_raw(&store, manifest, objects.as_ref(), &ObjectPath::from(name.as_str()), &progress).await?;
                written.push(name.clone());
                continue;
            }
            // Work files are removed whatever happens; only the renamed result stays.
            let tmp_raw = TempFile(dir.join(format!(".{name}.{}.raw", job.id)));
            materialise(&store, manifest, &tmp_raw.0, &progress).await?;
            let final_path = dir.join(name);
            if format == Format::Raw {
                std::fs::rename(&tmp_raw.0, &final_path).map_err(JobFailure::retry)?;
            } else {
                let tmp_out = TempFile(dir.join(format!(".{name}.{}.out", job.id)));
                let (src, dst) = (tmp_raw.0.clone(), tmp_out.0.clone());
                let converted = tokio::task::spawn_blocking(move || convert_from_raw(&src, format, &dst))
                    .await
                    .map_err(JobFailure::retry)?;
                drop(tmp_raw);
                converted.map_err(|e| {
                    tracing::warn!(job = job.id, "export conversion failed: {e}");
                    JobFailure::retry("the conversion to the export format failed")
                })?;
                match &bucket {
                    Bucket::Local(_) => std::fs::rename(&tmp_out.0, &final_path).map_err(JobFailure::retry)?,
                    Bucket::Objects(objects) => {
                        upload_file(&tmp_out.0, objects.as_ref(), &ObjectPath::from(name.as_str())).await?;
                    }
                }
            }
            written.push(name.clone());
        }
        Ok(serde_json::json!({ "Bucket": params.bucket, "Files": written }).to_string())
    }
}

/// Whether an export file-name prefix is acceptable: short, plain characters, not hidden.
fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_PREFIX_LEN
        && !prefix.starts_with('.')
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Longest export file-name prefix.
const MAX_PREFIX_LEN: usize = 64;

/// A work file removed when dropped (a rename away first makes that a no-op).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A work directory removed, with what is in it, when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An exported file, where a download reads it.
#[derive(Debug)]
pub enum ExportedObject {
    /// A file of a local bucket.
    File(PathBuf),
    /// An object of an object-store bucket.
    Object {
        /// The bucket's store.
        store: Arc<dyn ObjectStore>,
        /// The object.
        path: ObjectPath,
        /// Its size in bytes.
        size: u64,
    },
}

/// The bytes of an exported file as a download reads them.
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

impl ExportedObject {
    /// Its size and its bytes, streamed (1 MiB reads of a local file; the object store's own
    /// chunks of an object).
    pub async fn open(self) -> std::io::Result<(u64, ByteStream)> {
        use futures::{StreamExt as _, TryStreamExt as _};
        match self {
            ExportedObject::File(path) => {
                let file = tokio::fs::File::open(&path).await?;
                let len = file.metadata().await?.len();
                let stream = futures::stream::unfold(file, |mut file| async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut buf = vec![0u8; 1 << 20];
                    match file.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(bytes::Bytes::from(buf)), file))
                        }
                        Err(e) => Some((Err(e), file)),
                    }
                });
                Ok((len, stream.boxed()))
            }
            ExportedObject::Object { store, path, size } => {
                let got = store.get(&path).await.map_err(std::io::Error::other)?;
                Ok((size, got.into_stream().map_err(std::io::Error::other).boxed()))
            }
        }
    }
}

/// Parts of a multipart upload (S3 wants at least 5 MiB but the last).
const PART_BYTES: usize = 16 << 20;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Blocks read (and verified) ahead of the upload.
const BLOCKS_AHEAD: usize = 8;

/// Streams a manifest's disk, in order (zero blocks as zeros), into one multipart upload at
/// `path`: every block verified as it is read, nothing written to a local file; aborted on any
/// failure, so no partial object ever has the name.
async fn stream_raw(
    blocks: &BlockStore,
    manifest: &Manifest,
    objects: &dyn ObjectStore,
    path: &ObjectPath,
    progress: &Progress,
) -> Result<(), JobFailure> {
    use futures::StreamExt as _;
    let upload = objects.put_multipart(path).await.map_err(JobFailure::retry)?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let bs = u64::from(manifest.block_size);
    let zeros = bytes::Bytes::from(vec![0u8; manifest.block_size as usize]);
    let store = blocks.clone();
    let mut reads = futures::stream::iter(manifest.blocks.clone().into_iter().enumerate())
        .map(move |(i, block)| {
            let (store, zeros) = (store.clone(), zeros.clone());
            async move {
                match block {
                    Some(digest) => store.get_bytes(&digest).await.map_err(|e| JobFailure::permanent(e.to_string())),
                    None => Ok(zeros),
                }
                .map(|data| (i, data))
            }
        })
        .buffered(BLOCKS_AHEAD)
        .boxed();
    let outcome: Result<(), JobFailure> = async {
        while let Some(next) = reads.next().await {
            let (i, data) = next?;
            // The last block is as long as what is left of the disk.
            let left = manifest.virtual_size.saturating_sub(i as u64 * bs);
            let take = usize::try_from(left.min(data.len() as u64)).unwrap_or(data.len());
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(JobFailure::retry)?;
            writer.put(data.slice(..take));
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    .await;
    complete(writer, outcome).await
}

/// Completes a multipart upload whose parts all went, else aborts it (no object appears).
async fn complete(writer: object_store::WriteMultipart, outcome: Result<(), JobFailure>) -> Result<(), JobFailure> {
    match outcome {
        Ok(()) => writer.finish().await.map(|_| ()).map_err(JobFailure::retry),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// Uploads a local work file to `path` as one multipart upload (aborted on failure).
async fn upload_file(file: &Path, objects: &dyn ObjectStore, path: &ObjectPath) -> Result<(), JobFailure> {
    use tokio::io::AsyncReadExt as _;
    let mut reader = tokio::fs::File::open(file).await.map_err(JobFailure::retry)?;
    let upload = objects.put_multipart(path).await.map_err(JobFailure::retry)?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let outcome: Result<(), JobFailure> = async {
        loop {
            let mut buf = vec![0u8; PART_BYTES];
            let mut filled = 0;
            while filled < buf.len() {
                match reader.read(&mut buf[filled..]).await.map_err(JobFailure::retry)? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                return Ok(());
            }
            buf.truncate(filled);
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(JobFailure::retry)?;
            writer.put(bytes::Bytes::from(buf));
        }
    }
    .await;
    complete(writer, outcome).await
}

impl Service {
    /// The image's raw virtual disk as a local sparse file, materialised once and cached on this
    /// host as the image's base (see [`crate::instances`]), for what needs a file.
    pub async fn materialised(&self, image: &ImageId) -> Result<PathBuf, AppError> {
        self.base_of(image).await.map(|b| b.path).map_err(|f| AppError::Conflict(f.message))
    }
}

/// Writes a manifest's blocks into a sparse raw file at `path` (zero blocks stay holes); every
/// block is verified against its digest as it is read.
pub async fn materialise(
    store: &BlockStore,
    manifest: &Manifest,
    path: &Path,
    progress: &Progress,
) -> Result<(), JobFailure> {
    let file = std::fs::File::create(path).map_err(JobFailure::retry)?;
    file.set_len(manifest.virtual_size).map_err(JobFailure::retry)?;
    let file = Arc::new(file);
    let bs = u64::from(manifest.block_size);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, block) in manifest.blocks.iter().enumerate() {
        let Some(digest) = *block else {
            progress.done.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        while tasks.len() >= 8 {
            if let Some(r) = tasks.join_next().await {
                r.map_err(JobFailure::retry)??;
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (store, file) = (store.clone(), Arc::clone(&file));
        tasks.spawn(async move {
            let data = store.get(&digest).await.map_err(|e| JobFailure::permanent(format!("{e}")))?;
            tokio::task::spawn_blocking(move || file.write_all_at(&data, i as u64 * bs))
                .await
                .map_err(JobFailure::retry)?
                .map_err(JobFailure::retry)
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(JobFailure::retry)??;
        progress.done.fetch_add(1, Ordering::Relaxed);
    }
    file.sync_all().map_err(JobFailure::retry)
}
