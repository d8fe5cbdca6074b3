//! Where image bytes live: the block store of each region (a prefix of one `object_store`
//! location), uploads in progress, scratch space, and export buckets.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imaged_chunkstore::BlockStore;
use imaged_domain::AccountId;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

/// Default cap on an image's virtual size (2 TiB).
pub const DEFAULT_MAX_VIRTUAL_SIZE: u64 = 2 << 40;
/// The export bucket every installation has, in `DATA_DIR/buckets/exports`.
pub const DEFAULT_BUCKET: &str = "exports";

/// The data plane's configuration, chosen by the binary.
#[derive(Clone, Debug)]
pub struct DataConfig {
    /// The data directory (uploads, scratch, default buckets).
    pub data_dir: PathBuf,
    /// Root of the block stores; each region lives under `regions/<region>/`.
    pub objects: Arc<dyn ObjectStore>,
    /// Directory `file://` import URLs may read from; `None` refuses `file://`.
    pub import_dir: Option<PathBuf>,
    /// Largest virtual size accepted at import.
    pub max_virtual_size: u64,
    /// Export buckets by name: a local directory each.
    pub buckets: BTreeMap<String, PathBuf>,
    /// Seconds a worker's claim on a job lasts without renewal (a crashed worker's jobs are
    /// taken over after this).
    pub job_lease_secs: u64,
}

impl DataConfig {
    /// A local configuration under `data_dir`: blocks in `data_dir/blocks`, the default bucket.
    pub fn local(data_dir: &Path) -> std::io::Result<Self> {
        let blocks = data_dir.join("blocks");
        std::fs::create_dir_all(&blocks)?;
        let objects = object_store::local::LocalFileSystem::new_with_prefix(&blocks)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut buckets = BTreeMap::new();
        buckets.insert(DEFAULT_BUCKET.to_owned(), data_dir.join("buckets").join(DEFAULT_BUCKET));
        Ok(Self {
            data_dir: data_dir.to_owned(),
            objects: Arc::new(objects),
            import_dir: None,
            max_virtual_size: DEFAULT_MAX_VIRTUAL_SIZE,
            buckets,
            job_lease_secs: 30,
        })
    }

    /// The block store of `region`.
    pub fn region_blocks(&self, region: &str) -> BlockStore {
        BlockStore::new(Arc::new(PrefixStore::new(Arc::clone(&self.objects), format!("regions/{region}"))))
    }

    /// Scratch directory for work files (downloads, decompression, conversions).
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }

    fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// Path of an upload's data file, if `owner` owns an upload of that id.
    pub fn upload_path(&self, owner: AccountId, id: &str) -> Option<PathBuf> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let meta = std::fs::read_to_string(self.uploads_dir().join(format!("{id}.owner"))).ok()?;
        (meta.trim() == owner.to_string()).then(|| self.uploads_dir().join(format!("{id}.data")))
    }

    /// Starts an upload for `owner`; returns its id.
    pub fn create_upload(&self, owner: AccountId) -> std::io::Result<String> {
        let dir = self.uploads_dir();
        std::fs::create_dir_all(&dir)?;
        let id = hex::encode(crate::secrets::random_bytes::<16>().map_err(|e| std::io::Error::other(e.to_string()))?);
        File::create(dir.join(format!("{id}.data")))?;
        std::fs::write(dir.join(format!("{id}.owner")), owner.to_string())?;
        Ok(id)
    }

    /// Opens an upload for appending at `offset`, which must be its current size (uploads are
    /// contiguous; a client resumes from the size it is told). Returns the file, positioned.
    pub fn open_upload_at(&self, owner: AccountId, id: &str, offset: u64) -> Result<File, UploadError> {
        let path = self.upload_path(owner, id).ok_or(UploadError::NotFound)?;
        let file = OpenOptions::new().write(true).open(&path).map_err(|_| UploadError::NotFound)?;
        let size = file.metadata().map_err(UploadError::Io)?.len();
        if size != offset {
            return Err(UploadError::WrongOffset { expected: size });
        }
        use std::io::Seek;
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(offset)).map_err(UploadError::Io)?;
        Ok(file)
    }

    /// Current size of an upload.
    pub fn upload_size(&self, owner: AccountId, id: &str) -> Result<u64, UploadError> {
        let path = self.upload_path(owner, id).ok_or(UploadError::NotFound)?;
        Ok(std::fs::metadata(path).map_err(|_| UploadError::NotFound)?.len())
    }

    /// Removes an upload (after its import finished).
    pub fn remove_upload(&self, id: &str) {
        let dir = self.uploads_dir();
        let _ = std::fs::remove_file(dir.join(format!("{id}.data")));
        let _ = std::fs::remove_file(dir.join(format!("{id}.owner")));
    }
}

/// Why an upload request is refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No such upload for this account.
    #[error("no such upload")]
    NotFound,
    /// The offset is not the upload's current size.
    #[error("the upload has {expected} bytes: continue from there")]
    WrongOffset {
        /// Current size.
        expected: u64,
    },
    /// I/O.
    #[error("upload storage: {0}")]
    Io(std::io::Error),
}
