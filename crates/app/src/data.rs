//! Where image bytes live: the block store of each region (a prefix of one `object_store`
//! location), uploads in progress, scratch space, and export buckets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imaged_chunkstore::BlockStore;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use crate::egress::EgressPolicy;

/// Default cap on an image's virtual size (2 TiB).
pub const DEFAULT_MAX_VIRTUAL_SIZE: u64 = 2 << 40;
/// Default share of the free space the scratch space of all jobs may take together.
pub const DEFAULT_SCRATCH_SHARE_PERCENT: u8 = 50;
/// Default bound on how many times its size a compressed import may inflate to.
pub const DEFAULT_MAX_INFLATION_RATIO: u64 = 100;
/// Default time an upload lives after its last append: a week.
pub const DEFAULT_UPLOAD_EXPIRY_SECS: u64 = 7 * 24 * 3600;
/// The export bucket every installation has, in `DATA_DIR/buckets/exports`.
pub const DEFAULT_BUCKET: &str = "exports";

/// Where an export bucket keeps its files.
#[derive(Clone, Debug)]
pub enum Bucket {
    /// A directory on this host (sparse files; one host only).
    Local(PathBuf),
    /// An object-store location every server reaches (S3-compatible).
    Objects(Arc<dyn ObjectStore>),
}

impl Bucket {
    /// The directory, for a local bucket.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Bucket::Local(dir) => Some(dir),
            Bucket::Objects(_) => None,
        }
    }
}

/// The data plane's configuration, chosen by the binary.
#[derive(Clone, Debug)]
pub struct DataConfig {
    /// The data directory (uploads, scratch, default buckets).
    pub data_dir: PathBuf,
    /// Root of the block stores; each region lives under `regions/<region>/` of it, unless
    /// `region_objects` names its own location.
    pub objects: Arc<dyn ObjectStore>,
    /// Regions whose blocks live in a location of their own (a bucket or prefix each).
    pub region_objects: BTreeMap<String, Arc<dyn ObjectStore>>,
    /// Directory `file://` import URLs may read from; `None` refuses `file://`.
    pub import_dir: Option<PathBuf>,
    /// CA certificates (PEM) trusted for `https://` import URLs; `None`: the system's.
    pub https_ca_file: Option<PathBuf>,
    /// Largest virtual size accepted at import.
    pub max_virtual_size: u64,
    /// Export buckets by name: a local directory or an object-store location each.
    pub buckets: BTreeMap<String, Bucket>,
    /// Seconds a worker's claim on a job lasts without renewal (a crashed worker's jobs are
    /// taken over after this).
    pub job_lease_secs: u64,
    /// Where and for how long `http(s)://` imports may connect.
    pub egress: EgressPolicy,
    /// Scratch bytes one job may write.
    pub scratch_per_job: u64,
    /// Share (percent) of the free space all jobs' scratch may take together.
    pub scratch_share_percent: u8,
    /// A compressed import may inflate to at most this many times its size (zero runs apart).
    pub max_inflation_ratio: u64,
    /// Seconds an upload lives after its last append.
    pub upload_expiry_secs: u64,
    /// Whether signatures are checked for replays (off only behind a gateway that does it).
    pub replay_check: bool,
}

impl DataConfig {
    /// A local configuration under `data_dir`: blocks in `data_dir/blocks`, the default bucket.
    pub fn local(data_dir: &Path) -> std::io::Result<Self> {
        let blocks = data_dir.join("blocks");
        std::fs::create_dir_all(&blocks)?;
        let objects = object_store::local::LocalFileSystem::new_with_prefix(&blocks)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut buckets = BTreeMap::new();
        buckets.insert(DEFAULT_BUCKET.to_owned(), Bucket::Local(data_dir.join("buckets").join(DEFAULT_BUCKET)));
        Ok(Self {
            data_dir: data_dir.to_owned(),
            objects: Arc::new(objects),
            region_objects: BTreeMap::new(),
            import_dir: None,
            https_ca_file: None,
            max_virtual_size: DEFAULT_MAX_VIRTUAL_SIZE,
            buckets,
            job_lease_secs: 30,
            egress: EgressPolicy::default(),
            scratch_per_job: DEFAULT_MAX_VIRTUAL_SIZE,
            scratch_share_percent: DEFAULT_SCRATCH_SHARE_PERCENT,
            max_inflation_ratio: DEFAULT_MAX_INFLATION_RATIO,
            upload_expiry_secs: DEFAULT_UPLOAD_EXPIRY_SECS,
            replay_check: true,
        })
    }

    /// The block store of `region`: its own location if configured, else its prefix of the root.
    pub fn region_blocks(&self, region: &str) -> BlockStore {
        match self.region_objects.get(region) {
            Some(objects) => BlockStore::new(Arc::clone(objects)),
            None => BlockStore::new(Arc::new(PrefixStore::new(Arc::clone(&self.objects), format!("regions/{region}")))),
        }
    }

    /// Scratch directory for work files (downloads, decompression, conversions).
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }

    pub(crate) fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
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
    /// An append that does not start on a block boundary, or after the final short block.
    #[error("appends must be whole 1 MiB blocks, except the last one")]
    Misaligned,
    /// Over the size limit.
    #[error("the upload would exceed the size limit")]
    TooLarge,
    /// Over the owner's storage quota.
    #[error("the upload would exceed the account's storage quota")]
    QuotaExceeded,
    /// The account has as many uploads in progress as it may.
    #[error("an account may have at most {0} uploads in progress: import or let some expire first")]
    TooMany(usize),
    /// Not appended to within its expiry; forgotten.
    #[error("the upload expired")]
    Expired,
    /// I/O.
    #[error("upload storage: {0}")]
    Io(std::io::Error),
    /// The block store failed.
    #[error("block store: {0}")]
    Store(String),
}
