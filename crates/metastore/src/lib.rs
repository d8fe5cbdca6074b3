//! The metadata store: small traits over accounts, API keys, images, instances, block
//! references and jobs, with a SQLite backend
//! (the embedded default, WAL) and a PostgreSQL backend, versioned migrations for each, and one
//! conformance suite ([`testsuite`]) that every backend runs.
//!
//! Layout:
//! - the traits and records in this file;
//! - [`sqlite`] and [`postgres`], behind features of the same names;
//! - [`market`]: the marketplace's trait ([`MarketStore`]);
//! - [`tke`]: the TKE and message-centre traits ([`TkeStore`], [`MessageStore`]);
//! - [`ops`]: readiness, job counts and maintenance results ([`OpsStore`]);
//! - [`uploads`]: uploads in progress ([`UploadStore`]), so any server continues any upload;
//! - [`testsuite`]: the conformance suite, public so each backend's tests call it.
//!
//! The store knows nothing of HTTP or of the wire format; it keeps what the domain defines.
//! Expected conflicts (quota, duplicate names) are values, not errors: `Result<Result<_, Refused>, _>`.

use async_trait::async_trait;
use imaged_domain::instance::Instance;
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId, ImageState, InstanceId};

pub mod market;
pub mod ops;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod testsuite;
pub mod testsuite_market;
pub mod testsuite_scale;
pub mod testsuite_tke;
pub mod tke;
pub mod uploads;

pub use market::{MarketStore, MeterStore};
pub use ops::{JobCount, MaintenanceReport, OpsStore};
pub use tke::{MessageStore, TkeStore, TkeWrite};
pub use uploads::{UploadRecord, UploadStore};

/// What went wrong inside a backend. Callers map these to `InternalError`.
#[derive(Debug, thiserror::Error)]
pub enum MetaStoreError {
    /// The database refused or failed the operation.
    #[error("metadata backend error: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// The record an operation would update was deleted meanwhile.
    #[error("{0} was deleted")]
    Deleted(String),
    /// A job's write was refused: the worker no longer holds the job's lease (another worker
    /// took it over), so nothing was written.
    #[error("job {0}: the lease is lost; another worker has the job")]
    LeaseLost(u64),
    /// The database schema is newer than this binary knows.
    #[error("database schema version {found} is newer than this binary's {known}")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this binary has.
        known: i64,
    },
}

/// Result alias for store calls.
pub type Result<T, E = MetaStoreError> = std::result::Result<T, E>;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The operator's account, created on first start.
    Admin,
    /// A tenant.
    User,
}

impl Role {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn parse(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            other => Err(MetaStoreError::Corrupt(format!("unknown role `{other}`"))),
        }
    }
}

/// A tenant account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Numeric account id, allocated by the store from 100000000001 upwards.
    pub id: AccountId,
    /// Display name (unique).
    pub name: String,
    /// Admin or user.
    pub role: Role,
    /// Creation time.
    pub created_at: Timestamp,
    /// Per-account custom-image quota, overriding the configured default.
    pub image_quota: Option<u32>,
    /// Per-account storage quota in GiB, overriding the configured default.
    pub storage_quota_gib: Option<u64>,
}

/// Whether an API key may authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Usable.
    Enabled,
    /// Refused as if unknown.
    Disabled,
}

impl KeyStatus {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Enabled => "enabled",
            KeyStatus::Disabled => "disabled",
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn parse(s: &str) -> Result<Self> {
        match s {
            "enabled" => Ok(KeyStatus::Enabled),
            "disabled" => Ok(KeyStatus::Disabled),
            other => Err(MetaStoreError::Corrupt(format!("unknown key status `{other}`"))),
        }
    }
}

/// An API key. The secret is stored sealed (encrypted by the app layer); the store never sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The SecretId.
    pub secret_id: String,
    /// Owning account.
    pub account: AccountId,
    /// The secret key, encrypted at rest (nonce followed by ciphertext).
    pub sealed_secret: Vec<u8>,
    /// Enabled or disabled.
    pub status: KeyStatus,
    /// Creation time.
    pub created_at: Timestamp,
}

/// An image a caller may see, with whether it reached the caller through a share.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibleImage {
    /// The image.
    pub image: Image,
    /// True when the caller is a share recipient rather than the owner.
    pub shared_with_caller: bool,
}

/// Why an insert was refused (expected conflicts, not failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The account's custom-image quota in that region is used up.
    QuotaExceeded,
    /// The owner already has an image of that name in that region.
    DuplicateName,
    /// The id is taken.
    DuplicateId,
    /// An account of that name exists.
    DuplicateAccountName,
    /// An instance has an operation in progress.
    Busy,
    /// The image is shared with other accounts.
    InShared,
    /// The image is already shared with that account.
    AlreadyShared,
    /// The image is shared with as many accounts as allowed.
    ShareLimit,
    /// The image is not in a state that allows this (it changed meanwhile).
    WrongState,
}

/// Accounts.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account with the next free id.
    async fn create_account(&self, name: &str, role: Role, now: Timestamp) -> Result<Result<AccountRecord, Refused>>;
    /// The account with that id.
    async fn get_account(&self, id: AccountId) -> Result<Option<AccountRecord>>;
    /// Every account, by id.
    async fn list_accounts(&self) -> Result<Vec<AccountRecord>>;
    /// Sets or clears an account's custom-image quota override; false when no such account.
    async fn set_image_quota(&self, id: AccountId, quota: Option<u32>) -> Result<bool>;
    /// Sets or clears an account's storage quota override (GiB); false when no such account.
    async fn set_storage_quota(&self, id: AccountId, gib: Option<u64>) -> Result<bool>;
}

/// API keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key.
    async fn insert_key(&self, key: &KeyRecord) -> Result<()>;
    /// The key with that SecretId.
    async fn get_key(&self, secret_id: &str) -> Result<Option<KeyRecord>>;
    /// Keys of one account, or of all accounts, by creation.
    async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<KeyRecord>>;
    /// Enables or disables a key; false when no such key.
    async fn set_key_status(&self, secret_id: &str, status: KeyStatus) -> Result<bool>;
    /// Deletes a key; false when no such key.
    async fn delete_key(&self, secret_id: &str) -> Result<bool>;
}

/// Images and shares.
#[async_trait]
pub trait ImageStore: Send + Sync {
    /// Inserts or replaces images as given, without quota checks: the catalogue seeding and
    /// bulk-loading path (operator and benchmark use), never a tenant's request.
    async fn put_images(&self, images: &[Image]) -> Result<()>;
    /// Inserts a custom image if the owner is under `quota` in its region and the name is free
    /// there. The check and the insert are one atomic step, also under concurrency.
    async fn insert_custom_image(&self, image: &Image, quota: u32) -> Result<Result<(), Refused>>;
    /// The image with that id.
    async fn get_image(&self, id: &ImageId) -> Result<Option<Image>>;
    /// Everything `caller` might see in `region`: the catalogue, its own images there and the
    /// images shared with it there. The domain's rules decide the final visibility.
    async fn visible_images(&self, caller: AccountId, region: &str) -> Result<Vec<VisibleImage>>;
    /// Custom images `owner` has in `region`.
    async fn count_custom_images(&self, owner: AccountId, region: &str) -> Result<u64>;
    /// Shares `image` with `account`; false when already shared.
    async fn add_share(&self, image: &ImageId, account: AccountId, now: Timestamp) -> Result<bool>;
    /// Replaces an image's document only while its stored state is still `expected`; false when
    /// it has moved on (work recording progress must never undo the state its job set). A job
    /// writes under its `fence` ([`MetaStoreError::LeaseLost`] once it no longer holds).
    async fn update_image_if_state(
        &self,
        image: &Image,
        expected: ImageState,
        fence: Option<&JobFence>,
    ) -> Result<bool>;
    /// Shares `image` with `account` if it is shared with fewer than `limit` accounts
    /// (`ShareLimit`) and not with this one yet (`AlreadyShared`); checked and written in one
    /// step, also under concurrency.
    async fn share_image(
        &self,
        image: &ImageId,
        account: AccountId,
        limit: u32,
        now: Timestamp,
    ) -> Result<Result<(), Refused>>;
    /// Stops sharing `image` with `account`; false when it was not shared with it.
    async fn unshare_image(&self, image: &ImageId, account: AccountId) -> Result<bool>;
    /// In one transaction: moves `source` from NORMAL to what the given document says (SYNCING;
    /// `WrongState` when it is no longer NORMAL), inserts the copies in their regions (quota
    /// and name checked as in [`ImageStore::insert_custom_image`]) and queues `job`.
    async fn begin_sync(
        &self,
        source: &Image,
        copies: &[Image],
        quota: u32,
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>>;
    /// The accounts `image` is shared with, with when, oldest first.
    async fn image_shares(&self, image: &ImageId) -> Result<Vec<(AccountId, Timestamp)>>;
    /// Replaces a custom image's document if its name stays unique for its owner in its region
    /// (`DuplicateName` otherwise); checked and written in one step.
    async fn update_custom_image(&self, image: &Image) -> Result<Result<(), Refused>>;
    /// In one transaction: deletes an image that is shared with nobody (`InShared` otherwise)
    /// and is not being created or copied (`WrongState`), its manifest and its block references.
    /// An image being imported may be deleted: that cancels the import (its job finds the image
    /// gone and writes nothing more). False when there was no such image.
    /// The image's open usage segments (its storage) close at `now`, in the same transaction.
    async fn delete_image(&self, id: &ImageId, now: Timestamp) -> Result<Result<bool, Refused>>;
    /// Bytes of the virtual disks of `owner`'s custom images that have their bytes (in every
    /// region): what counts toward its storage quota.
    async fn image_bytes(&self, owner: AccountId) -> Result<u64>;
}

/// Instances.
#[async_trait]
pub trait InstanceStore: Send + Sync {
    /// In one transaction: inserts new instances and queues the job that launches them; with a
    /// client token (`RunInstances.ClientToken`), records it for their owner, refusing with
    /// `DuplicateId` when the owner used it already (the launch happened: see
    /// [`InstanceStore::instances_for_token`]).
    async fn insert_instances_with_job(
        &self,
        instances: &[Instance],
        job: &JobRecord,
        client_token: Option<&str>,
    ) -> Result<Result<u64, Refused>>;
    /// The instances a launch with this client token of `owner`'s created.
    async fn instances_for_token(&self, owner: AccountId, token: &str) -> Result<Option<Vec<InstanceId>>>;
    /// The instance with that id.
    async fn get_instance(&self, id: &InstanceId) -> Result<Option<Instance>>;
    /// The instances `owner` has in `region`, oldest first.
    async fn list_instances(&self, owner: AccountId, region: &str) -> Result<Vec<Instance>>;
    /// Replaces instances as given (work recording the end of an operation).
    async fn put_instances(&self, instances: &[Instance]) -> Result<()>;
    /// In one transaction: stores `instances` (which have begun an operation), each of which
    /// must have had none in progress (`Busy` otherwise, and nothing is written), and queues
    /// `job`, which carries the operation out.
    async fn begin_operation(&self, instances: &[Instance], job: &JobRecord) -> Result<Result<u64, Refused>>;
    /// In one transaction: inserts a custom image as [`JobStore::insert_image_with_job`] does
    /// and begins the capture on `instance` as [`InstanceStore::begin_operation`] does.
    async fn begin_capture(
        &self,
        image: &Image,
        quota: u32,
        instance: &Instance,
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>>;
    /// Removes an instance; false when there was none.
    async fn delete_instance(&self, id: &InstanceId) -> Result<bool>;
    /// The bases (`Instance::disk_base`) the system disks of all instances sit on.
    async fn disk_bases_in_use(&self) -> Result<std::collections::BTreeSet<String>>;
}

/// An image's bytes as the metadata store records them: the encoded manifest (opaque here) and
/// the distinct blocks it names, which carry one reference each while the manifest exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    /// The image.
    pub image: ImageId,
    /// The region whose block store holds the blocks.
    pub region: String,
    /// The encoded manifest.
    pub manifest: Vec<u8>,
    /// The distinct block digests (hex) the manifest names.
    pub blocks: Vec<String>,
    /// The format the source was detected as (`raw`, `qcow2`, …), recorded with the image.
    pub source_format: String,
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
}

/// Reference counts of stored blocks, and manifests.
#[async_trait]
pub trait BlockRefStore: Send + Sync {
    /// Records that work in progress wrote or reused these blocks (hex digest, stored size; 0
    /// when unknown, the largest size given is kept) at `now`: unreferenced blocks touched after
    /// a GC cutoff are not collected. A digest may appear more than once.
    async fn touch_blocks(&self, region: &str, blocks: &[(String, u64)], now: Timestamp) -> Result<()>;
    /// In one transaction: stores the manifest, adds one reference to each of its blocks, and
    /// replaces the image document with `image`. Returns the blocks that had no reference
    /// before: only those can have been collected since they were written (a referenced block
    /// is never collected), so only those need checking for presence. A custom image (one with
    /// an owner) is created by its request, never by its job: if its row is gone (it was deleted,
    /// which cancels an import), nothing is written and the answer is [`MetaStoreError::Deleted`].
    async fn attach_manifest(&self, image: &Image, manifest: &ManifestRecord) -> Result<Vec<String>>;
    /// The manifest of an image.
    async fn get_manifest(&self, image: &ImageId) -> Result<Option<ManifestRecord>>;
    /// Every manifest in a region (fsck).
    async fn region_manifests(&self, region: &str) -> Result<Vec<ManifestRecord>>;
    /// Removes an image's manifest and its block references; false when it had none. A job
    /// writes under its `fence`.
    async fn detach_manifest(&self, image: &ImageId, fence: Option<&JobFence>) -> Result<bool>;
    /// Deletes the rows of blocks with no references and untouched since `cutoff`, returning
    /// their digests: the caller then deletes the objects.
    async fn collect_unreferenced(&self, region: &str, cutoff: Timestamp) -> Result<Vec<String>>;
    /// References of one block (0 when unknown).
    async fn block_refs(&self, region: &str, digest: &str) -> Result<u64>;
    /// Number of block rows and their stored bytes in a region.
    async fn block_totals(&self, region: &str) -> Result<(u64, u64)>;
}

/// The state of a durable job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker whose lease has not expired.
    Running,
    /// Done.
    Succeeded,
    /// Given up; `error` says why.
    Failed,
}

impl JobState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn parse(s: &str) -> Result<Self> {
        match s {
            "QUEUED" => Ok(JobState::Queued),
            "RUNNING" => Ok(JobState::Running),
            "SUCCEEDED" => Ok(JobState::Succeeded),
            "FAILED" => Ok(JobState::Failed),
            other => Err(MetaStoreError::Corrupt(format!("unknown job state `{other}`"))),
        }
    }
}

/// Long work recorded durably: import, export, capture, copy, GC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Numeric id (the API's TaskId), assigned by the store.
    pub id: u64,
    /// What the job does, e.g. `import`.
    pub kind: String,
    /// Region it works in.
    pub region: String,
    /// Account it works for.
    pub account: AccountId,
    /// Image it works on, if any.
    pub image: Option<ImageId>,
    /// State.
    pub state: JobState,
    /// Progress in percent.
    pub progress: u8,
    /// Parameters, JSON.
    pub params: String,
    /// Result, JSON (e.g. exported paths), once succeeded.
    pub result: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// How many times a worker has claimed it.
    pub attempts: u32,
    /// The worker that claimed it last.
    pub worker: Option<String>,
    /// The only host whose workers may run it (an instance's jobs run where its disk is);
    /// `None`: any.
    pub host: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last update.
    pub updated_at: Timestamp,
}

impl JobRecord {
    /// A new queued job (the store assigns its id).
    pub fn queued(
        kind: &str,
        region: &str,
        account: AccountId,
        image: Option<ImageId>,
        params: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id: 0,
            kind: kind.to_owned(),
            region: region.to_owned(),
            account,
            image,
            state: JobState::Queued,
            progress: 0,
            params,
            result: None,
            error: None,
            attempts: 0,
            worker: None,
            host: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The same job, to be run only by workers of `host`.
    pub fn on_host(self, host: &str) -> Self {
        Self { host: Some(host.to_owned()), ..self }
    }

    /// The lease this claimed job is held under (worker and attempt).
    pub fn fence(&self) -> JobFence {
        JobFence { job: self.id, worker: self.worker.clone().unwrap_or_default(), attempt: self.attempts }
    }
}

/// A job's lease as one worker holds it: its writes land only while the job is still running
/// under this worker and attempt, so a worker that lost its lease cannot overwrite the work
/// of the one that took the job over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFence {
    /// The job.
    pub job: u64,
    /// The worker that claimed it.
    pub worker: String,
    /// The claim (the job's attempt count when claimed).
    pub attempt: u32,
}

/// Durable jobs, claimed with leases so that a crashed worker's job is taken over.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Queues a job; returns its id.
    async fn insert_job(&self, job: &JobRecord) -> Result<u64>;
    /// In one transaction: inserts a custom image (quota and name checked as in
    /// [`ImageStore::insert_custom_image`]) and queues the job that will fill it.
    async fn insert_image_with_job(&self, image: &Image, quota: u32, job: &JobRecord) -> Result<Result<u64, Refused>>;
    /// Claims for `worker` of `host`, for `lease_ms` by the database's clock, the oldest job of
    /// one of `kinds` that is queued (and due) or running with an expired lease, and that any
    /// host or `host` may run, skipping the jobs of accounts that already run `per_account`
    /// jobs of those kinds (leases not expired). The check and the claim are one step:
    /// concurrent claims never let an account run more. Leases are compared with the
    /// database's clock only, so servers whose clocks differ agree on them; `now` is the
    /// service's time, recorded as the job's update.
    async fn claim_job(
        &self,
        worker: &str,
        host: &str,
        kinds: &[&str],
        per_account: u32,
        lease_ms: u64,
        now: Timestamp,
    ) -> Result<Option<JobRecord>>;
    /// Extends the lease by `lease_ms` from the database's now and records progress; false
    /// when the fence no longer holds (the job was taken over or ended).
    async fn renew_job(&self, fence: &JobFence, progress: u8, lease_ms: u64, now: Timestamp) -> Result<bool>;
    /// Ends a job under its fence: succeeded (with a result), failed (with an error), or
    /// queued again (with the error) to be retried no sooner than `retry_after_ms` from the
    /// database's now. [`MetaStoreError::LeaseLost`] when the fence no longer holds.
    async fn finish_job(
        &self,
        fence: &JobFence,
        state: JobState,
        result: Option<&str>,
        error: Option<&str>,
        retry_after_ms: u64,
        now: Timestamp,
    ) -> Result<()>;
    /// A job by id.
    async fn get_job(&self, id: u64) -> Result<Option<JobRecord>>;
    /// Creation time of the oldest queued or running job in a region (GC keeps what it may need).
    async fn oldest_active_job(&self, region: &str) -> Result<Option<Timestamp>>;
    /// Wakes `wake` whenever any server of the deployment queues a job (PostgreSQL: LISTEN /
    /// NOTIFY, reconnected when it drops). The default does nothing: one process shares its
    /// own wake-ups, and workers poll besides.
    fn watch_jobs(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        let _ = wake;
    }
}

/// A file an export job wrote into a bucket, and who may download it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    /// The bucket.
    pub bucket: String,
    /// The file's name in the bucket.
    pub name: String,
    /// The account that exported it: the only one that may download it.
    pub account: AccountId,
    /// The image it holds.
    pub image: ImageId,
    /// The export job.
    pub job: u64,
    /// When it was recorded.
    pub created_at: Timestamp,
}

/// The record of exported files: downloads are authorised on it, never on a file's name.
#[async_trait]
pub trait ExportStore: Send + Sync {
    /// Records (or, for a file exported again, replaces) who exported a file.
    async fn record_export(&self, file: &ExportedFile) -> Result<()>;
    /// The record of a file, if any.
    async fn exported_file(&self, bucket: &str, name: &str) -> Result<Option<ExportedFile>>;
}

/// Signatures seen within their validity window: the replay check, shared by every server
/// on the same database.
#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Records that `signature` was used for a request with `fingerprint`, valid until
    /// `expires_at`; returns `None` when it is recorded now (never seen, or seen only before
    /// its record expired), else the fingerprint of its first use. One atomic step, also
    /// when several servers see the same signature at once.
    async fn remember_signature(
        &self,
        signature: &str,
        fingerprint: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<Option<String>>;
    /// Deletes the records expired by `now`; returns how many.
    async fn forget_signatures(&self, now: Timestamp) -> Result<u64>;
}

/// Everything the service needs from its metadata store.
pub trait MetaStore:
    AccountStore
    + KeyStore
    + ImageStore
    + BlockRefStore
    + JobStore
    + InstanceStore
    + ExportStore
    + ReplayStore
    + TkeStore
    + MessageStore
    + MarketStore
    + MeterStore
    + UploadStore
    + OpsStore
{
}
impl<T> MetaStore for T where
    T: AccountStore
        + KeyStore
        + ImageStore
        + BlockRefStore
        + JobStore
        + InstanceStore
        + ExportStore
        + ReplayStore
        + TkeStore
        + MessageStore
        + MarketStore
        + MeterStore
        + UploadStore
        + OpsStore
{
}

/// The first account id the stores hand out (Tencent-style 12-digit UINs).
pub const FIRST_ACCOUNT_ID: u64 = 100_000_000_001;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn encode_image(image: &Image) -> Result<String> {
    serde_json::to_string(image).map_err(|e| MetaStoreError::Corrupt(e.to_string()))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode_image(doc: &str) -> Result<Image> {
    serde_json::from_str(doc).map_err(|e| MetaStoreError::Corrupt(format!("image document: {e}")))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn encode_instance(instance: &Instance) -> Result<String> {
    serde_json::to_string(instance).map_err(|e| MetaStoreError::Corrupt(e.to_string()))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode_instance(doc: &str) -> Result<Instance> {
    serde_json::from_str(doc).map_err(|e| MetaStoreError::Corrupt(format!("instance document: {e}")))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode_instance_ids(json: &str) -> Result<Vec<InstanceId>> {
    serde_json::from_str(json).map_err(|e| MetaStoreError::Corrupt(format!("client token instances: {e}")))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn owner_column(image: &Image) -> Option<i64> {
    image.owner.map(|a| a.0 as i64)
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn account_from_column(v: i64) -> AccountId {
    AccountId(v as u64)
}
