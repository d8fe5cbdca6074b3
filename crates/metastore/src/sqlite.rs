//! SQLite backend: the embedded default. WAL mode, one writer connection and a small pool of
//! readers; every call runs on tokio's blocking pool so the async runtime never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::{
    account_from_column, decode_image, decode_instance, encode_image, encode_instance, owner_column, AccountRecord,
    AccountStore, BlockRefStore, ImageStore, InstanceStore, JobRecord, JobState, JobStore, KeyRecord, KeyStatus,
    KeyStore, ManifestRecord, MetaStoreError, Refused, Result, Role, VisibleImage, FIRST_ACCOUNT_ID,
};
use imaged_domain::instance::Instance;
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId, ImageState, InstanceId};

/// Versioned migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        image_quota INTEGER
    );
    CREATE TABLE api_keys (
        secret_id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        sealed_secret BLOB NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX api_keys_by_account ON api_keys(account_id);
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        region TEXT,
        owner_id INTEGER REFERENCES accounts(id),
        state TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX images_by_owner_region ON images(owner_id, region);
    CREATE UNIQUE INDEX images_unique_name ON images(owner_id, region, name) WHERE owner_id IS NOT NULL;
    CREATE TABLE image_shares (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        created_at INTEGER NOT NULL,
        PRIMARY KEY (image_id, account_id)
    );
    CREATE INDEX image_shares_by_account ON image_shares(account_id);",
    ),
    (
        2,
        "CREATE TABLE image_manifests (
        image_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        manifest BLOB NOT NULL,
        blocks TEXT NOT NULL,
        source_format TEXT NOT NULL,
        virtual_size INTEGER NOT NULL
    );
    CREATE INDEX image_manifests_by_region ON image_manifests(region);
    CREATE TABLE blocks (
        region TEXT NOT NULL,
        digest TEXT NOT NULL,
        refs INTEGER NOT NULL DEFAULT 0,
        stored_size INTEGER NOT NULL,
        touched_at INTEGER NOT NULL,
        PRIMARY KEY (region, digest)
    );
    CREATE INDEX blocks_unreferenced ON blocks(region, touched_at) WHERE refs <= 0;
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        region TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        image_id TEXT,
        state TEXT NOT NULL,
        progress INTEGER NOT NULL,
        params TEXT NOT NULL,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        lease_until INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs(state, id);",
    ),
    (
        3,
        "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        owner_id INTEGER NOT NULL REFERENCES accounts(id),
        region TEXT NOT NULL,
        busy INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX instances_by_owner_region ON instances(owner_id, region, created_at);",
    ),
    (
        4,
        "CREATE TABLE client_tokens (
        owner_id INTEGER NOT NULL REFERENCES accounts(id),
        token TEXT NOT NULL,
        instance_ids TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (owner_id, token)
    );",
    ),
];

/// Image states whose work would be lost if the image were deleted underneath it.
const BUSY_STATES: &[&str] = &["CREATING", "IMPORTING", "SYNCING"];

/// Readers in the pool. Two cores serve the API; a few more than that hide disk waits.
const READERS: usize = 4;

fn db_err(e: rusqlite::Error) -> MetaStoreError {
    MetaStoreError::Backend(e.to_string())
}

struct Pool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Pool {
    fn new(conns: Vec<Connection>) -> Self {
        let n = conns.len();
        Self { conns: Mutex::new(conns), permits: Semaphore::new(n) }
    }

    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|e| MetaStoreError::Backend(e.to_string()))?;
        let mut conn = self
            .conns
            .lock()
            .map_err(|_| MetaStoreError::Backend("connection pool poisoned".into()))?
            .pop()
            .ok_or_else(|| MetaStoreError::Backend("connection pool empty".into()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let out = f(&mut conn);
            if let Ok(mut conns) = pool.conns.lock() {
                conns.push(conn);
            }
            out
        })
        .await
        .map_err(|e| MetaStoreError::Backend(format!("blocking task failed: {e}")))?
    }
}

/// The SQLite metadata store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Pool>,
    readers: Arc<Pool>,
}

impl SqliteStore {
    /// Upserts `items` with `put`, all in one transaction on the writer.
    async fn put_all<T: Clone + Send + 'static>(
        &self,
        items: &[T],
        put: fn(&Connection, &T) -> Result<()>,
    ) -> Result<()> {
        let items = items.to_vec();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                for item in &items {
                    put(&tx, item)?;
                }
                tx.commit().map_err(db_err)
            })
            .await
    }

    /// In one transaction: inserts a custom image (quota and name checked), begins the
    /// operations of `instances` (each must be idle) and queues `job`.
    async fn insert_image_beginning(
        &self,
        image: &Image,
        quota: u32,
        instances: &[Instance],
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>> {
        let (image, instances, job) = (image.clone(), instances.to_vec(), job.clone());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                if let Err(refused) = check_custom_insert(&tx, &image, quota)? {
                    return Ok(Err(refused));
                }
                if let Err(refused) = begin_tx(&tx, &instances)? {
                    return Ok(Err(refused));
                }
                put_image(&tx, &image)?;
                let id = insert_job_row(&tx, &job)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(id))
            })
            .await
    }

    /// The document of the row `sql` selects by id, on a reader.
    async fn doc_by_id(&self, sql: &'static str, id: &str) -> Result<Option<String>> {
        let id = id.to_owned();
        self.readers
            .run(move |conn| {
                conn.prepare_cached(sql)
                    .and_then(|mut st| st.query_row(params![id], |r| r.get::<_, String>(0)).optional())
                    .map_err(db_err)
            })
            .await
    }
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db_err)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
        .map_err(db_err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(db_err)?;
    let current: i64 =
        tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(db_err)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(MetaStoreError::SchemaTooNew { found: current, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql).map_err(db_err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
            params![version],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut writer = open(&path)?;
            migrate(&mut writer)?;
            let readers = (0..READERS).map(|_| open(&path)).collect::<Result<Vec<_>>>()?;
            Ok(Self { writer: Arc::new(Pool::new(vec![writer])), readers: Arc::new(Pool::new(readers)) })
        })
        .await
        .map_err(|e| MetaStoreError::Backend(e.to_string()))?
    }
}

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, i64, Option<i64>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_account(row: (i64, String, String, i64, Option<i64>)) -> Result<AccountRecord> {
    Ok(AccountRecord {
        id: account_from_column(row.0),
        name: row.1,
        role: Role::parse(&row.2)?,
        created_at: Timestamp(row.3),
        image_quota: row.4.map(|q| u32::try_from(q).unwrap_or(u32::MAX)),
    })
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, Vec<u8>, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_key(row: (String, i64, Vec<u8>, String, i64)) -> Result<KeyRecord> {
    Ok(KeyRecord {
        secret_id: row.0,
        account: account_from_column(row.1),
        sealed_secret: row.2,
        status: KeyStatus::parse(&row.3)?,
        created_at: Timestamp(row.4),
    })
}

const ACCOUNT_COLUMNS: &str = "id, name, role, created_at, image_quota";
const KEY_COLUMNS: &str = "secret_id, account_id, sealed_secret, status, created_at";

fn put_image(conn: &Connection, image: &Image) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO images (id, kind, region, owner_id, state, name, created_at, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, region = excluded.region,
           owner_id = excluded.owner_id, state = excluded.state, name = excluded.name,
           created_at = excluded.created_at, doc = excluded.doc",
    )
    .and_then(|mut st| {
        st.execute(params![
            image.id.as_str(),
            image.kind.as_str(),
            image.region,
            owner_column(image),
            image.state.as_str(),
            image.name,
            image.created_at.0,
            encode_image(image).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
        ])
    })
    .map(|_| ())
    .map_err(db_err)
}

/// The quota, name and id checks of a custom-image insert, inside the caller's transaction.
fn check_custom_insert(tx: &Connection, image: &Image, quota: u32) -> Result<Result<(), Refused>> {
    let (count, name_taken, id_taken): (i64, bool, bool) = tx
        .query_row(
            "SELECT (SELECT COUNT(*) FROM images WHERE owner_id = ?1 AND region = ?2),
                    EXISTS (SELECT 1 FROM images WHERE owner_id = ?1 AND region = ?2 AND name = ?3),
                    EXISTS (SELECT 1 FROM images WHERE id = ?4)",
            params![owner_column(image), image.region, image.name, image.id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(db_err)?;
    Ok(if id_taken {
        Err(Refused::DuplicateId)
    } else if name_taken {
        Err(Refused::DuplicateName)
    } else if count >= i64::from(quota) {
        Err(Refused::QuotaExceeded)
    } else {
        Ok(())
    })
}

const JOB_COLUMNS: &str =
    "id, kind, region, account_id, image_id, state, progress, params, result, error, attempts, created_at, updated_at";

type JobRow =
    (i64, String, String, i64, Option<String>, String, i64, String, Option<String>, Option<String>, i64, i64, i64);

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

fn to_job(row: JobRow) -> Result<JobRecord> {
    Ok(JobRecord {
        id: row.0.unsigned_abs(),
        kind: row.1,
        region: row.2,
        account: account_from_column(row.3),
        image: row.4.map(|i| ImageId::parse(&i).map_err(|e| MetaStoreError::Corrupt(e.to_string()))).transpose()?,
        state: JobState::parse(&row.5)?,
        progress: u8::try_from(row.6.clamp(0, 100)).unwrap_or(0),
        params: row.7,
        result: row.8,
        error: row.9,
        attempts: u32::try_from(row.10).unwrap_or(0),
        created_at: Timestamp(row.11),
        updated_at: Timestamp(row.12),
    })
}

fn insert_job_row(tx: &Connection, job: &JobRecord) -> Result<u64> {
    tx.execute(
        "INSERT INTO jobs (kind, region, account_id, image_id, state, progress, params, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            job.kind,
            job.region,
            job.account.0 as i64,
            job.image.as_ref().map(ImageId::as_str),
            job.state.as_str(),
            job.progress,
            job.params,
            job.created_at.0
        ],
    )
    .map_err(db_err)?;
    Ok(tx.last_insert_rowid().unsigned_abs())
}

type ManifestRow = (String, String, Vec<u8>, String, String, i64);

fn manifest_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_manifest(row: ManifestRow) -> Result<ManifestRecord> {
    Ok(ManifestRecord {
        image: ImageId::parse(&row.0).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?,
        region: row.1,
        manifest: row.2,
        blocks: serde_json::from_str(&row.3).map_err(|e| MetaStoreError::Corrupt(format!("manifest blocks: {e}")))?,
        source_format: row.4,
        virtual_size: row.5.unsigned_abs(),
    })
}

const MANIFEST_COLUMNS: &str = "image_id, region, manifest, blocks, source_format, virtual_size";

/// Removes an image's manifest and its block references inside the caller's transaction.
fn detach_manifest_tx(tx: &Connection, image: &ImageId) -> Result<bool> {
    let row = tx
        .query_row(
            &format!("SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE image_id = ?1"),
            params![image.as_str()],
            manifest_row,
        )
        .optional()
        .map_err(db_err)?;
    let Some(m) = row.map(to_manifest).transpose()? else { return Ok(false) };
    tx.execute("DELETE FROM image_manifests WHERE image_id = ?1", params![image.as_str()]).map_err(db_err)?;
    let mut st = tx
        .prepare_cached(
            "UPDATE blocks SET refs = refs - 1, touched_at = strftime('%s','now') WHERE region = ?1 AND digest = ?2",
        )
        .map_err(db_err)?;
    for digest in &m.blocks {
        st.execute(params![m.region, digest]).map_err(db_err)?;
    }
    Ok(true)
}

fn put_instance(conn: &Connection, instance: &Instance) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO instances (id, owner_id, region, busy, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET busy = excluded.busy, doc = excluded.doc",
    )
    .and_then(|mut st| {
        st.execute(params![
            instance.id.as_str(),
            instance.owner.0 as i64,
            instance.region,
            instance.busy(),
            instance.created_at.0,
            encode_instance(instance).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
        ])
    })
    .map(|_| ())
    .map_err(db_err)
}

/// Stores instances that begin an operation, each only if it had none in progress.
fn begin_tx(tx: &Connection, instances: &[Instance]) -> Result<Result<(), Refused>> {
    let mut st =
        tx.prepare_cached("UPDATE instances SET busy = 1, doc = ?2 WHERE id = ?1 AND busy = 0").map_err(db_err)?;
    for instance in instances {
        let doc = encode_instance(instance)?;
        if st.execute(params![instance.id.as_str(), doc]).map_err(db_err)? != 1 {
            return Ok(Err(Refused::Busy));
        }
    }
    Ok(Ok(()))
}

#[async_trait]
impl BlockRefStore for SqliteStore {
    async fn touch_blocks(&self, region: &str, blocks: &[(String, u64)], now: Timestamp) -> Result<()> {
        let region = region.to_owned();
        let blocks = blocks.to_vec();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                {
                    let mut st = tx
                        .prepare_cached(
                            "INSERT INTO blocks (region, digest, refs, stored_size, touched_at) VALUES (?1, ?2, 0, ?3, ?4)
                             ON CONFLICT (region, digest) DO UPDATE SET touched_at = excluded.touched_at,
                               stored_size = MAX(stored_size, excluded.stored_size)",
                        )
                        .map_err(db_err)?;
                    for (digest, size) in &blocks {
                        st.execute(params![region, digest, *size as i64, now.0]).map_err(db_err)?;
                    }
                }
                tx.commit().map_err(db_err)
            })
            .await
    }

    async fn attach_manifest(&self, image: &Image, manifest: &ManifestRecord) -> Result<Vec<String>> {
        let image = image.clone();
        let m = manifest.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let blocks = serde_json::to_string(&m.blocks).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?;
                tx.execute(
                    &format!("INSERT INTO image_manifests ({MANIFEST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![m.image.as_str(), m.region, m.manifest, blocks, m.source_format, m.virtual_size as i64],
                )
                .map_err(db_err)?;
                let mut fresh = Vec::new();
                {
                    let mut st = tx
                        .prepare_cached(
                            "INSERT INTO blocks (region, digest, refs, stored_size, touched_at)
                             VALUES (?1, ?2, 1, 0, strftime('%s','now'))
                             ON CONFLICT (region, digest) DO UPDATE SET refs = refs + 1
                             RETURNING refs",
                        )
                        .map_err(db_err)?;
                    for digest in &m.blocks {
                        let refs: i64 = st.query_row(params![m.region, digest], |r| r.get(0)).map_err(db_err)?;
                        if refs <= 1 {
                            fresh.push(digest.clone());
                        }
                    }
                }
                put_image(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(fresh)
            })
            .await
    }

    async fn get_manifest(&self, image: &ImageId) -> Result<Option<ManifestRecord>> {
        let image = image.clone();
        self.readers
            .run(move |conn| {
                conn.prepare_cached(&format!("SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE image_id = ?1"))
                    .and_then(|mut st| st.query_row(params![image.as_str()], manifest_row).optional())
                    .map_err(db_err)?
                    .map(to_manifest)
                    .transpose()
            })
            .await
    }

    async fn region_manifests(&self, region: &str) -> Result<Vec<ManifestRecord>> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare(&format!(
                        "SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE region = ?1 ORDER BY image_id"
                    ))
                    .map_err(db_err)?;
                let rows = st.query_map(params![region], manifest_row).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(to_manifest)).collect()
            })
            .await
    }

    async fn detach_manifest(&self, image: &ImageId) -> Result<bool> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let detached = detach_manifest_tx(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(detached)
            })
            .await
    }

    async fn collect_unreferenced(&self, region: &str, cutoff: Timestamp) -> Result<Vec<String>> {
        let region = region.to_owned();
        self.writer
            .run(move |conn| {
                let mut st = conn
                    .prepare("DELETE FROM blocks WHERE region = ?1 AND refs <= 0 AND touched_at < ?2 RETURNING digest")
                    .map_err(db_err)?;
                let rows = st.query_map(params![region, cutoff.0], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err)).collect()
            })
            .await
    }

    async fn block_refs(&self, region: &str, digest: &str) -> Result<u64> {
        let (region, digest) = (region.to_owned(), digest.to_owned());
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT COALESCE((SELECT refs FROM blocks WHERE region = ?1 AND digest = ?2), 0)",
                    params![region, digest],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n.max(0).unsigned_abs())
                .map_err(db_err)
            })
            .await
    }

    async fn block_totals(&self, region: &str) -> Result<(u64, u64)> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(stored_size), 0) FROM blocks WHERE region = ?1",
                    params![region],
                    |r| Ok((r.get::<_, i64>(0)?.unsigned_abs(), r.get::<_, i64>(1)?.unsigned_abs())),
                )
                .map_err(db_err)
            })
            .await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert_job(&self, job: &JobRecord) -> Result<u64> {
        let job = job.clone();
        self.writer.run(move |conn| insert_job_row(conn, &job)).await
    }

    async fn insert_image_with_job(&self, image: &Image, quota: u32, job: &JobRecord) -> Result<Result<u64, Refused>> {
        self.insert_image_beginning(image, quota, &[], job).await
    }

    async fn claim_job(&self, worker: &str, now: Timestamp, lease_until: Timestamp) -> Result<Option<JobRecord>> {
        let worker = worker.to_owned();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let id: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM jobs WHERE state = 'QUEUED' OR (state = 'RUNNING' AND lease_until < ?1)
                         ORDER BY id LIMIT 1",
                        params![now.0],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_err)?;
                let Some(id) = id else { return Ok(None) };
                tx.execute(
                    "UPDATE jobs SET state = 'RUNNING', worker = ?2, lease_until = ?3, attempts = attempts + 1,
                     updated_at = ?4 WHERE id = ?1",
                    params![id, worker, lease_until.0, now.0],
                )
                .map_err(db_err)?;
                let row = tx
                    .query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), params![id], job_row)
                    .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                to_job(row).map(Some)
            })
            .await
    }

    async fn renew_job(
        &self,
        id: u64,
        worker: &str,
        progress: u8,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let worker = worker.to_owned();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "UPDATE jobs SET progress = ?3, lease_until = ?4, updated_at = ?5
                     WHERE id = ?1 AND worker = ?2 AND state = 'RUNNING'",
                    params![id as i64, worker, progress, lease_until.0, now.0],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn finish_job(
        &self,
        id: u64,
        state: JobState,
        result: Option<&str>,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let (result, error) = (result.map(str::to_owned), error.map(str::to_owned));
        self.writer
            .run(move |conn| {
                conn.execute(
                    "UPDATE jobs SET state = ?2, result = ?3, error = ?4, updated_at = ?5, lease_until = NULL,
                     progress = CASE WHEN ?2 = 'SUCCEEDED' THEN 100 ELSE progress END WHERE id = ?1",
                    params![id as i64, state.as_str(), result, error, now.0],
                )
                .map(|_| ())
                .map_err(db_err)
            })
            .await
    }

    async fn get_job(&self, id: u64) -> Result<Option<JobRecord>> {
        self.readers
            .run(move |conn| {
                conn.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), params![id as i64], job_row)
                    .optional()
                    .map_err(db_err)?
                    .map(to_job)
                    .transpose()
            })
            .await
    }

    async fn oldest_active_job(&self, region: &str) -> Result<Option<Timestamp>> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT MIN(created_at) FROM jobs WHERE region = ?1 AND state IN ('QUEUED', 'RUNNING')",
                    params![region],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .map(|t| t.map(Timestamp))
                .map_err(db_err)
            })
            .await
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, name: &str, role: Role, now: Timestamp) -> Result<Result<AccountRecord, Refused>> {
        let name = name.to_owned();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let taken: bool = tx
                    .query_row("SELECT EXISTS (SELECT 1 FROM accounts WHERE name = ?1)", params![name], |r| r.get(0))
                    .map_err(db_err)?;
                if taken {
                    return Ok(Err(Refused::DuplicateAccountName));
                }
                let next: i64 = tx
                    .query_row(
                        "SELECT COALESCE(MAX(id) + 1, ?1) FROM accounts",
                        params![FIRST_ACCOUNT_ID as i64],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                tx.execute(
                    "INSERT INTO accounts (id, name, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![next, name, role.as_str(), now.0],
                )
                .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(AccountRecord { id: account_from_column(next), name, role, created_at: now, image_quota: None }))
            })
            .await
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<AccountRecord>> {
        self.readers
            .run(move |conn| {
                conn.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"))
                    .and_then(|mut st| st.query_row(params![id.0 as i64], account_row).optional())
                    .map_err(db_err)?
                    .map(to_account)
                    .transpose()
            })
            .await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>> {
        self.readers
            .run(|conn| {
                let mut st =
                    conn.prepare(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id")).map_err(db_err)?;
                let rows = st.query_map([], account_row).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(to_account)).collect()
            })
            .await
    }

    async fn set_image_quota(&self, id: AccountId, quota: Option<u32>) -> Result<bool> {
        self.writer
            .run(move |conn| {
                conn.execute("UPDATE accounts SET image_quota = ?1 WHERE id = ?2", params![quota, id.0 as i64])
                    .map(|n| n == 1)
                    .map_err(db_err)
            })
            .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
        let key = key.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![
                        key.secret_id,
                        key.account.0 as i64,
                        key.sealed_secret,
                        key.status.as_str(),
                        key.created_at.0
                    ],
                )
                .map(|_| ())
                .map_err(db_err)
            })
            .await
    }

    async fn get_key(&self, secret_id: &str) -> Result<Option<KeyRecord>> {
        let secret_id = secret_id.to_owned();
        self.readers
            .run(move |conn| {
                conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_id = ?1"))
                    .and_then(|mut st| st.query_row(params![secret_id], key_row).optional())
                    .map_err(db_err)?
                    .map(to_key)
                    .transpose()
            })
            .await
    }

    async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<KeyRecord>> {
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare(&format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR account_id = ?1 ORDER BY created_at, secret_id"
                    ))
                    .map_err(db_err)?;
                let rows = st.query_map(params![account.map(|a| a.0 as i64)], key_row).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(to_key)).collect()
            })
            .await
    }

    async fn set_key_status(&self, secret_id: &str, status: KeyStatus) -> Result<bool> {
        let secret_id = secret_id.to_owned();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "UPDATE api_keys SET status = ?1 WHERE secret_id = ?2",
                    params![status.as_str(), secret_id],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn delete_key(&self, secret_id: &str) -> Result<bool> {
        let secret_id = secret_id.to_owned();
        self.writer
            .run(move |conn| {
                conn.execute("DELETE FROM api_keys WHERE secret_id = ?1", params![secret_id])
                    .map(|n| n == 1)
                    .map_err(db_err)
            })
            .await
    }
}

#[async_trait]
impl ImageStore for SqliteStore {
    async fn put_images(&self, images: &[Image]) -> Result<()> {
        self.put_all(images, put_image).await
    }

    async fn insert_custom_image(&self, image: &Image, quota: u32) -> Result<Result<(), Refused>> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                if let Err(refused) = check_custom_insert(&tx, &image, quota)? {
                    return Ok(Err(refused));
                }
                put_image(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn get_image(&self, id: &ImageId) -> Result<Option<Image>> {
        self.doc_by_id("SELECT doc FROM images WHERE id = ?1", id.as_str()).await?.map(|d| decode_image(&d)).transpose()
    }

    async fn visible_images(&self, caller: AccountId, region: &str) -> Result<Vec<VisibleImage>> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT doc, 0 FROM images WHERE owner_id IS NULL
                         UNION ALL
                         SELECT doc, 0 FROM images WHERE owner_id = ?1 AND region = ?2
                         UNION ALL
                         SELECT i.doc, 1 FROM image_shares s JOIN images i ON i.id = s.image_id
                           WHERE s.account_id = ?1 AND i.region = ?2",
                    )
                    .map_err(db_err)?;
                let rows = st
                    .query_map(params![caller.0 as i64, region], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
                    .map_err(db_err)?;
                rows.map(|r| {
                    let (doc, shared) = r.map_err(db_err)?;
                    Ok(VisibleImage { image: decode_image(&doc)?, shared_with_caller: shared })
                })
                .collect()
            })
            .await
    }

    async fn count_custom_images(&self, owner: AccountId, region: &str) -> Result<u64> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM images WHERE owner_id = ?1 AND region = ?2",
                    params![owner.0 as i64, region],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n.unsigned_abs())
                .map_err(db_err)
            })
            .await
    }

    async fn add_share(&self, image: &ImageId, account: AccountId, now: Timestamp) -> Result<bool> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO image_shares (image_id, account_id, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    params![image.as_str(), account.0 as i64, now.0],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn update_image_if_state(&self, image: &Image, expected: ImageState) -> Result<bool> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "UPDATE images SET state = ?2, doc = ?3 WHERE id = ?1 AND state = ?4",
                    params![image.id.as_str(), image.state.as_str(), encode_image(&image)?, expected.as_str()],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn share_image(
        &self,
        image: &ImageId,
        account: AccountId,
        limit: u32,
        now: Timestamp,
    ) -> Result<Result<(), Refused>> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let (count, already): (i64, bool) = tx
                    .query_row(
                        "SELECT COUNT(*), COALESCE(SUM(account_id = ?2), 0) > 0 FROM image_shares WHERE image_id = ?1",
                        params![image.as_str(), account.0 as i64],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(db_err)?;
                if already {
                    return Ok(Err(Refused::AlreadyShared));
                }
                if count >= i64::from(limit) {
                    return Ok(Err(Refused::ShareLimit));
                }
                tx.execute(
                    "INSERT INTO image_shares (image_id, account_id, created_at) VALUES (?1, ?2, ?3)",
                    params![image.as_str(), account.0 as i64, now.0],
                )
                .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn unshare_image(&self, image: &ImageId, account: AccountId) -> Result<bool> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "DELETE FROM image_shares WHERE image_id = ?1 AND account_id = ?2",
                    params![image.as_str(), account.0 as i64],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn begin_sync(
        &self,
        source: &Image,
        copies: &[Image],
        quota: u32,
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>> {
        let (source, copies, job) = (source.clone(), copies.to_vec(), job.clone());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let moved = tx
                    .execute(
                        "UPDATE images SET state = ?2, doc = ?3 WHERE id = ?1 AND state = 'NORMAL'",
                        params![source.id.as_str(), source.state.as_str(), encode_image(&source)?],
                    )
                    .map_err(db_err)?;
                if moved != 1 {
                    return Ok(Err(Refused::WrongState));
                }
                for copy in &copies {
                    if let Err(refused) = check_custom_insert(&tx, copy, quota)? {
                        return Ok(Err(refused));
                    }
                    put_image(&tx, copy)?;
                }
                let id = insert_job_row(&tx, &job)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(id))
            })
            .await
    }

    async fn image_shares(&self, image: &ImageId) -> Result<Vec<(AccountId, Timestamp)>> {
        let image = image.clone();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT account_id, created_at FROM image_shares WHERE image_id = ?1
                         ORDER BY created_at, account_id",
                    )
                    .map_err(db_err)?;
                let rows = st
                    .query_map(params![image.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                    .map_err(db_err)?;
                rows.map(|r| r.map(|(a, t)| (account_from_column(a), Timestamp(t))).map_err(db_err)).collect()
            })
            .await
    }

    async fn update_custom_image(&self, image: &Image) -> Result<Result<(), Refused>> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let taken: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM images WHERE owner_id = ?1 AND region = ?2 AND name = ?3
                           AND id <> ?4)",
                        params![owner_column(&image), image.region, image.name, image.id.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                if taken {
                    return Ok(Err(Refused::DuplicateName));
                }
                put_image(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn delete_image(&self, id: &ImageId) -> Result<Result<bool, Refused>> {
        let id = id.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let shared: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM image_shares WHERE image_id = ?1)",
                        params![id.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                if shared {
                    return Ok(Err(Refused::InShared));
                }
                let state: Option<String> = tx
                    .query_row("SELECT state FROM images WHERE id = ?1", params![id.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                if state.as_deref().is_some_and(|s| BUSY_STATES.contains(&s)) {
                    return Ok(Err(Refused::WrongState));
                }
                detach_manifest_tx(&tx, &id)?;
                let deleted = tx.execute("DELETE FROM images WHERE id = ?1", params![id.as_str()]).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(deleted == 1))
            })
            .await
    }
}

#[async_trait]
impl InstanceStore for SqliteStore {
    async fn insert_instances_with_job(
        &self,
        instances: &[Instance],
        job: &JobRecord,
        client_token: Option<&str>,
    ) -> Result<Result<u64, Refused>> {
        let (instances, job, token) = (instances.to_vec(), job.clone(), client_token.map(str::to_owned));
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                if let (Some(token), Some(first)) = (&token, instances.first()) {
                    let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
                    let ids = serde_json::to_string(&ids).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?;
                    let added = tx
                        .execute(
                            "INSERT INTO client_tokens (owner_id, token, instance_ids, created_at)
                             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                            params![first.owner.0 as i64, token, ids, job.created_at.0],
                        )
                        .map_err(db_err)?;
                    if added == 0 {
                        return Ok(Err(Refused::DuplicateId));
                    }
                }
                for instance in &instances {
                    put_instance(&tx, instance)?;
                }
                let id = insert_job_row(&tx, &job)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(id))
            })
            .await
    }

    async fn instances_for_token(&self, owner: AccountId, token: &str) -> Result<Option<Vec<InstanceId>>> {
        let token = token.to_owned();
        let ids: Option<String> = self
            .readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT instance_ids FROM client_tokens WHERE owner_id = ?1 AND token = ?2",
                    params![owner.0 as i64, token],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)
            })
            .await?;
        ids.map(|j| crate::decode_instance_ids(&j)).transpose()
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        self.doc_by_id("SELECT doc FROM instances WHERE id = ?1", id.as_str())
            .await?
            .map(|d| decode_instance(&d))
            .transpose()
    }

    async fn list_instances(&self, owner: AccountId, region: &str) -> Result<Vec<Instance>> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT doc FROM instances WHERE owner_id = ?1 AND region = ?2 ORDER BY created_at, id",
                    )
                    .map_err(db_err)?;
                let rows = st.query_map(params![owner.0 as i64, region], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| decode_instance(&r.map_err(db_err)?)).collect()
            })
            .await
    }

    async fn put_instances(&self, instances: &[Instance]) -> Result<()> {
        self.put_all(instances, put_instance).await
    }

    async fn begin_operation(&self, instances: &[Instance], job: &JobRecord) -> Result<Result<u64, Refused>> {
        let (instances, job) = (instances.to_vec(), job.clone());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                if let Err(refused) = begin_tx(&tx, &instances)? {
                    return Ok(Err(refused));
                }
                let id = insert_job_row(&tx, &job)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(id))
            })
            .await
    }

    async fn begin_capture(
        &self,
        image: &Image,
        quota: u32,
        instance: &Instance,
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>> {
        self.insert_image_beginning(image, quota, std::slice::from_ref(instance), job).await
    }

    async fn disk_bases_in_use(&self) -> Result<std::collections::BTreeSet<String>> {
        self.readers
            .run(move |conn| {
                let mut st = conn.prepare_cached("SELECT doc FROM instances").map_err(db_err)?;
                let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(db_err)?;
                let mut bases = std::collections::BTreeSet::new();
                for doc in rows {
                    bases.extend(decode_instance(&doc.map_err(db_err)?)?.disk_base);
                }
                Ok(bases)
            })
            .await
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<bool> {
        let id = id.clone();
        self.writer
            .run(move |conn| {
                conn.execute("DELETE FROM instances WHERE id = ?1", params![id.as_str()])
                    .map(|n| n == 1)
                    .map_err(db_err)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("meta.db")).await.expect("open");
        crate::testsuite::run(&store).await;
    }

    #[tokio::test]
    async fn reopening_applies_no_migration_twice_and_keeps_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let acct = store.create_account("keep", Role::User, Timestamp(1)).await.expect("db").expect("created");
        drop(store);
        let again = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(again.get_account(acct.id).await.expect("db"), Some(acct));
    }

    #[tokio::test]
    async fn a_database_from_a_newer_binary_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        drop(SqliteStore::open(&path).await.expect("open"));
        let conn = Connection::open(&path).expect("raw open");
        conn.execute("INSERT INTO schema_migrations VALUES (999, 0)", []).expect("insert");
        drop(conn);
        assert!(matches!(SqliteStore::open(&path).await, Err(MetaStoreError::SchemaTooNew { found: 999, .. })));
    }
}
