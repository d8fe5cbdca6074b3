//! [`Service`]: the use cases behind the API and the operator commands.

use std::path::Path;
use std::sync::Arc;

use imaged_domain::ids::secret_key_from_random;
use imaged_domain::pricing::PriceTable;
use imaged_domain::query::{sort_for_listing, ImageQuery, Page};
use imaged_domain::rules::{self, Limits};
use imaged_domain::time::Timestamp;
use imaged_domain::{catalog, AccountId, Image, ImageType, Region, RegionCatalog, SecretId};
use imaged_metastore::{AccountRecord, KeyRecord, KeyStatus, MetaStore, MetaStoreError, Role};

use crate::clock::{Clock, SystemClock};
use crate::data::DataConfig;
use crate::replay::ReplayCache;
use crate::scratch::ScratchSpace;
use crate::secrets::{random_bytes, write_private_file, MasterKey, SecretsError};

/// File name of the administrator's credentials in the data directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// Seconds a signed request's timestamp may be from the server's clock (either way).
pub const SIGNATURE_WINDOW_SECS: i64 = 300;
/// Name of the administrator account created on first start.
pub const ADMIN_ACCOUNT_NAME: &str = "admin";

/// What a use case can fail with, beyond the domain's own validation errors.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] MetaStoreError),
    /// Sealing or unsealing a secret failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Writing a file in the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An account of that name exists.
    #[error("an account named `{0}` already exists")]
    DuplicateAccount(String),
    /// No such account.
    #[error("no account {0}")]
    NoSuchAccount(AccountId),
    /// An unexpected conflict in the store.
    #[error("conflict: {0}")]
    Conflict(String),
}

/// An account's identity and one API key, in the shape of `credentials.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The account id, as a decimal string (as the API carries account ids).
    pub account_id: String,
    /// The key id.
    pub secret_id: String,
    /// The secret key; shown once.
    pub secret_key: String,
}

/// An API key as listed to the operator: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// The key id.
    pub secret_id: String,
    /// The owning account.
    pub account_id: String,
    /// `enabled` or `disabled`.
    pub status: &'static str,
    /// Creation time, ISO 8601.
    pub created_time: String,
}

/// Who is calling, once the key is known: the account and the secret to verify the signature.
#[derive(Clone)]
pub struct Principal {
    /// The calling account.
    pub account: AccountId,
    /// The key's secret, to recompute the signature with. Never logged.
    pub secret_key: String,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal").field("account", &self.account).finish_non_exhaustive()
    }
}

/// An account's storage quota and its use, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StorageUsage {
    /// The quota.
    pub quota_bytes: u64,
    /// The virtual disks of its custom images (every region).
    pub image_bytes: u64,
    /// Its uploads in progress on this host.
    pub upload_bytes: u64,
}

/// One page of `DescribeImages`.
#[derive(Debug, Clone)]
pub struct ImageListing {
    /// Matches in all, not just this page.
    pub total: u64,
    /// The page: each image with its type as the caller sees it.
    pub items: Vec<(Image, ImageType)>,
}

/// The service's use cases over one metadata store.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn MetaStore>,
    regions: Arc<RegionCatalog>,
    limits: Limits,
    master_key: MasterKey,
    data: Arc<DataConfig>,
    wake: Arc<tokio::sync::Notify>,
    worker_id: Arc<str>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    scratch: Arc<ScratchSpace>,
    replay: Arc<ReplayCache>,
    clock: Arc<dyn Clock>,
    prices: Arc<PriceTable>,
    pub(crate) guests: crate::guests::Guests,
}

/// The host's current time.
pub fn now() -> Timestamp {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
}

impl Service {
    /// A service over `store`.
    pub fn new(
        store: Arc<dyn MetaStore>,
        regions: RegionCatalog,
        limits: Limits,
        master_key: MasterKey,
        data: DataConfig,
    ) -> Self {
        let worker_id =
            format!("{}-{}", std::process::id(), random_bytes::<4>().map(hex::encode).unwrap_or_else(|_| "w".into()));
        let scratch = ScratchSpace::new(data.scratch_dir(), data.scratch_per_job, data.scratch_share_percent);
        Self {
            store,
            regions: Arc::new(regions),
            limits,
            master_key,
            scratch,
            replay: Arc::new(ReplayCache::default()),
            data: Arc::new(data),
            wake: Arc::new(tokio::sync::Notify::new()),
            worker_id: worker_id.into(),
            metrics: Arc::default(),
            clock: Arc::new(SystemClock),
            prices: Arc::new(PriceTable::default()),
            guests: crate::guests::Guests::default(),
        }
    }

    /// The same service pricing from `table`.
    pub fn with_prices(mut self, table: PriceTable) -> Self {
        self.prices = Arc::new(table);
        self
    }

    pub(crate) fn price_table(&self) -> &PriceTable {
        &self.prices
    }

    /// The same service reading time from `clock` for its time rules.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Now, by the service's clock (the rules about time read this).
    pub fn clock_now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn master_key(&self) -> &MasterKey {
        &self.master_key
    }

    /// The data plane's configuration (block stores, uploads, buckets).
    pub fn data(&self) -> &DataConfig {
        &self.data
    }

    pub(crate) fn replay_cache(&self) -> &ReplayCache {
        &self.replay
    }

    /// The host's scratch space, shared by every job.
    pub fn scratch(&self) -> &Arc<ScratchSpace> {
        &self.scratch
    }

    /// Wakes idle job workers (a job was queued).
    pub fn wake_workers(&self) {
        self.wake.notify_waiters();
    }

    pub(crate) fn wakeup(&self) -> &tokio::sync::Notify {
        &self.wake
    }

    pub(crate) fn wake_handle(&self) -> &Arc<tokio::sync::Notify> {
        &self.wake
    }

    pub(crate) fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The configured regions.
    pub fn regions(&self) -> &RegionCatalog {
        &self.regions
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The metadata store (operator tools and tests).
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// First-start work, idempotent: adds missing catalogue images, and creates the administrator
    /// account with one key when there is none, writing `data_dir/credentials.json` (0600).
    /// Returns the new administrator credentials, if they were created now.
    pub async fn bootstrap(&self, data_dir: &Path) -> Result<Option<Credentials>, AppError> {
        let mut missing = Vec::new();
        for image in catalog::public_images().into_iter().chain(catalog::market_images()) {
            if self.store.get_image(&image.id).await?.is_none() {
                missing.push(image);
            }
        }
        if !missing.is_empty() {
            tracing::info!(count = missing.len(), "adding catalogue images with demo disks");
            // Bytes first: a catalogue image appears only once its demo disk is stored.
            self.ensure_demo_disks(&missing).await.map_err(AppError::Conflict)?;
        }
        let creds = self.bootstrap_admin(data_dir).await?;
        match self.adopt_local_uploads().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "moved uploads in progress into the metadata store"),
            Err(e) => tracing::warn!("moving uploads into the metadata store failed: {e}"),
        }
        // After the administrator, so that it keeps the first account id.
        self.bootstrap_market().await?;
        Ok(creds)
    }

    async fn bootstrap_admin(&self, data_dir: &Path) -> Result<Option<Credentials>, AppError> {
        if self.store.list_accounts().await?.iter().any(|a| a.role == Role::Admin) {
            return Ok(None);
        }
        let creds = match self.create_account(ADMIN_ACCOUNT_NAME, Role::Admin).await {
            Ok(creds) => creds,
            // Another instance bootstrapped at the same moment.
            Err(AppError::DuplicateAccount(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = data_dir.join(CREDENTIALS_FILE);
        let json = serde_json::to_vec_pretty(&creds).unwrap_or_default();
        write_private_file(&path, &json).map_err(|source| AppError::Io { path: path.display().to_string(), source })?;
        tracing::info!(account = %creds.account_id, "created the administrator account");
        Ok(Some(creds))
    }

    /// Creates an account and its first API key.
    pub async fn create_account(&self, name: &str, role: Role) -> Result<Credentials, AppError> {
        let account = match self.store.create_account(name, role, now()).await? {
            Ok(account) => account,
            Err(_) => return Err(AppError::DuplicateAccount(name.to_owned())),
        };
        self.create_key(account.id).await
    }

    /// Every account.
    pub async fn list_accounts(&self) -> Result<Vec<AccountRecord>, AppError> {
        Ok(self.store.list_accounts().await?)
    }

    /// Sets or clears an account's custom-image quota override.
    pub async fn set_image_quota(&self, account: AccountId, quota: Option<u32>) -> Result<(), AppError> {
        if self.store.set_image_quota(account, quota).await? {
            Ok(())
        } else {
            Err(AppError::NoSuchAccount(account))
        }
    }

    /// Creates a new API key for `account`.
    pub async fn create_key(&self, account: AccountId) -> Result<Credentials, AppError> {
        if self.store.get_account(account).await?.is_none() {
            return Err(AppError::NoSuchAccount(account));
        }
        let secret_id = SecretId::from_random(random_bytes()?).0;
        let secret_key = secret_key_from_random(random_bytes()?);
        let record = KeyRecord {
            sealed_secret: self.master_key.seal(&secret_id, &secret_key)?,
            secret_id: secret_id.clone(),
            account,
            status: KeyStatus::Enabled,
            created_at: now(),
        };
        self.store.insert_key(&record).await?;
        Ok(Credentials { account_id: account.to_string(), secret_id, secret_key })
    }

    /// Keys of one account or of all, without secrets.
    pub async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<KeyInfo>, AppError> {
        Ok(self
            .store
            .list_keys(account)
            .await?
            .into_iter()
            .map(|k| KeyInfo {
                secret_id: k.secret_id,
                account_id: k.account.to_string(),
                status: k.status.as_str(),
                created_time: k.created_at.iso8601(),
            })
            .collect())
    }

    /// Enables or disables a key; false when there is no such key.
    pub async fn set_key_enabled(&self, secret_id: &str, enabled: bool) -> Result<bool, AppError> {
        let status = if enabled { KeyStatus::Enabled } else { KeyStatus::Disabled };
        Ok(self.store.set_key_status(secret_id, status).await?)
    }

    /// Deletes a key; false when there is no such key.
    pub async fn delete_key(&self, secret_id: &str) -> Result<bool, AppError> {
        Ok(self.store.delete_key(secret_id).await?)
    }

    /// The principal behind an enabled key, or `None` when the key is unknown or disabled.
    pub async fn principal(&self, secret_id: &str) -> Result<Option<Principal>, AppError> {
        match self.store.get_key(secret_id).await? {
            Some(key) if key.status == KeyStatus::Enabled => Ok(Some(Principal {
                account: key.account,
                secret_key: self.master_key.open(&key.secret_id, &key.sealed_secret)?,
            })),
            _ => Ok(None),
        }
    }

    /// `DescribeImages`: what `caller` can see in `region` that matches `query`, one page of it.
    pub async fn describe_images(
        &self,
        caller: AccountId,
        region: &Region,
        query: &ImageQuery,
        page: Page,
    ) -> Result<ImageListing, AppError> {
        let candidates = self.store.visible_images(caller, &region.region).await?;
        let mut matched: Vec<(Image, ImageType)> = candidates
            .into_iter()
            .filter_map(|v| {
                let seen = rules::seen_as(&v.image, caller, region, v.shared_with_caller)?;
                query.matches(&v.image, seen).then_some((v.image, seen))
            })
            .collect();
        sort_for_listing(&mut matched, |(image, _)| image);
        let total = matched.len() as u64;
        let items = page.slice(&matched).to_vec();
        Ok(ImageListing { total, items })
    }

    /// A job of the caller's, by id.
    pub async fn task(&self, caller: AccountId, id: u64) -> Result<Option<imaged_metastore::JobRecord>, AppError> {
        Ok(self.store.get_job(id).await?.filter(|j| j.account == caller))
    }

    /// Sets or clears an account's storage quota override (GiB).
    pub async fn set_storage_quota(&self, account: AccountId, gib: Option<u64>) -> Result<(), AppError> {
        if self.store.set_storage_quota(account, gib).await? {
            Ok(())
        } else {
            Err(AppError::NoSuchAccount(account))
        }
    }

    /// An account's storage quota and what uses it: its images' virtual disks and its uploads.
    pub async fn storage_usage(&self, account: AccountId) -> Result<StorageUsage, AppError> {
        let record = self.store.get_account(account).await?.ok_or(AppError::NoSuchAccount(account))?;
        Ok(StorageUsage {
            quota_bytes: self.limits.storage_quota_bytes(record.storage_quota_gib),
            image_bytes: self.store.image_bytes(account).await?,
            upload_bytes: self.upload_bytes(account).await.map_err(|e| AppError::Conflict(e.to_string()))?,
        })
    }

    /// Bytes `account` may still add.
    pub(crate) async fn storage_room(&self, account: AccountId) -> Result<u64, AppError> {
        let u = self.storage_usage(account).await?;
        Ok(u.quota_bytes.saturating_sub(u.image_bytes.saturating_add(u.upload_bytes)))
    }

    /// `DescribeImageQuota`: the caller's custom-image quota per region.
    pub async fn image_quota(&self, caller: AccountId) -> Result<u32, AppError> {
        let account = self.store.get_account(caller).await?.ok_or(AppError::NoSuchAccount(caller))?;
        Ok(self.limits.custom_image_quota(account.image_quota))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imaged_domain::query::Filter;
    use imaged_metastore::sqlite::SqliteStore;
    use imaged_metastore::testsuite::custom_image;

    async fn service(dir: &Path) -> Service {
        let store = SqliteStore::open(&dir.join("meta.db")).await.expect("open");
        let data = DataConfig::local(dir).expect("data config");
        Service::new(Arc::new(store), RegionCatalog::default(), Limits::default(), MasterKey::from_bytes([3; 32]), data)
    }

    #[tokio::test]
    async fn bootstrap_creates_the_admin_once_and_writes_private_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path()).await;
        let creds = svc.bootstrap(dir.path()).await.expect("bootstrap").expect("first start creates the admin");
        let on_disk: Credentials =
            serde_json::from_slice(&std::fs::read(dir.path().join(CREDENTIALS_FILE)).expect("read")).expect("json");
        assert_eq!(on_disk, creds);
        assert!(svc.bootstrap(dir.path()).await.expect("again").is_none(), "second start creates nothing");
        let principal = svc.principal(&creds.secret_id).await.expect("db").expect("admin key works");
        assert_eq!(principal.secret_key, creds.secret_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(CREDENTIALS_FILE)).expect("meta");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn disabled_and_deleted_keys_have_no_principal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path()).await;
        let creds = svc.create_account("bob", Role::User).await.expect("create");
        assert!(matches!(svc.create_account("bob", Role::User).await, Err(AppError::DuplicateAccount(_))));
        assert!(svc.set_key_enabled(&creds.secret_id, false).await.expect("db"));
        assert!(svc.principal(&creds.secret_id).await.expect("db").is_none());
        assert!(svc.set_key_enabled(&creds.secret_id, true).await.expect("db"));
        assert!(svc.principal(&creds.secret_id).await.expect("db").is_some());
        assert!(svc.delete_key(&creds.secret_id).await.expect("db"));
        assert!(svc.principal(&creds.secret_id).await.expect("db").is_none());
        let listed = svc.list_keys(None).await.expect("db");
        assert!(listed.iter().all(|k| k.secret_id != creds.secret_id));
    }

    #[tokio::test]
    async fn describe_images_applies_visibility_filters_and_paging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path()).await;
        svc.bootstrap(dir.path()).await.expect("bootstrap");
        let alice =
            AccountId::parse(&svc.create_account("alice", Role::User).await.expect("a").account_id).expect("id");
        let bob = AccountId::parse(&svc.create_account("bob", Role::User).await.expect("b").account_id).expect("id");
        let mine = custom_image(alice, "ap-guangzhou", "alice-web", 1);
        svc.store().insert_custom_image(&mine, 10).await.expect("db").expect("inserted");
        let gz = svc.regions().get("ap-guangzhou").expect("gz").clone();
        let tokyo = svc.regions().get("ap-tokyo").expect("tokyo").clone();
        let all = ImageQuery::default();
        let page = Page::new(None, Some(100)).expect("page");

        let alice_gz = svc.describe_images(alice, &gz, &all, page).await.expect("list");
        let bob_gz = svc.describe_images(bob, &gz, &all, page).await.expect("list");
        assert_eq!(alice_gz.total, bob_gz.total + 1, "only alice sees her image");
        assert!(alice_gz.items.iter().any(|(i, t)| i.id == mine.id && *t == ImageType::PrivateImage));
        assert!(bob_gz.items.iter().any(|(_, t)| *t == ImageType::MarketImage));
        let bob_tokyo = svc.describe_images(bob, &tokyo, &all, page).await.expect("list");
        assert!(bob_tokyo.items.iter().all(|(_, t)| *t == ImageType::PublicImage), "no marketplace overseas");

        svc.store().add_share(&mine.id, bob, now()).await.expect("share");
        let shared =
            ImageQuery::new(None, Some(&[Filter { name: "image-type".into(), values: vec!["SHARED_IMAGE".into()] }]))
                .expect("query");
        let bob_shared = svc.describe_images(bob, &gz, &shared, page).await.expect("list");
        assert_eq!(bob_shared.total, 1);
        assert_eq!(bob_shared.items[0].0.id, mine.id);

        let first = svc.describe_images(bob, &gz, &all, Page::new(Some(0), Some(5)).expect("p")).await.expect("p1");
        let second = svc.describe_images(bob, &gz, &all, Page::new(Some(5), Some(5)).expect("p")).await.expect("p2");
        assert_eq!(first.items.len(), 5);
        assert_eq!(first.total, second.total);
        assert!(first.items.iter().all(|(a, _)| second.items.iter().all(|(b, _)| a.id != b.id)));
    }

    #[tokio::test]
    async fn quota_is_ten_by_default_with_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path()).await;
        let acct = AccountId::parse(&svc.create_account("q", Role::User).await.expect("c").account_id).expect("id");
        assert_eq!(svc.image_quota(acct).await.expect("quota"), 10);
        svc.set_image_quota(acct, Some(25)).await.expect("override");
        assert_eq!(svc.image_quota(acct).await.expect("quota"), 25);
        assert!(matches!(svc.set_image_quota(AccountId(7), Some(1)).await, Err(AppError::NoSuchAccount(_))));
    }
}
