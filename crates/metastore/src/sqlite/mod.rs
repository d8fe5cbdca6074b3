//! SQLite backend: the embedded default. WAL mode, one writer connection and a small pool of
//! readers; every call runs on tokio's blocking pool so the async runtime never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::{
    encode_image, encode_instance, owner_column, JobFence, JobRecord, ManifestRecord, MetaStoreError, Refused, Result,
};
use imaged_domain::instance::Instance;
use imaged_domain::{Image, ImageId};

use schema::MIGRATIONS;

mod accounts;
mod blocks;
mod exports;
mod images;
mod instances;
mod jobs;
mod market;
mod ops;
mod replay;
mod schema;
mod tke;
mod uploads;

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

/// The database's clock in milliseconds: what leases are compared with.
const DB_NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/// Whether a job's write may land: `fence` (if any) still holds the job's lease. Checked on
/// the writer connection, inside the write's transaction.
fn check_fence(tx: &Connection, fence: Option<&JobFence>) -> Result<()> {
    let Some(f) = fence else { return Ok(()) };
    let held: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM jobs WHERE id = ?1 AND worker = ?2 AND attempts = ?3 AND state = 'RUNNING'",
            params![f.job as i64, f.worker, f.attempt],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    held.map(|_| ()).ok_or(MetaStoreError::LeaseLost(f.job))
}

fn insert_job_row(tx: &Connection, job: &JobRecord) -> Result<u64> {
    tx.execute(
        "INSERT INTO jobs (kind, region, account_id, image_id, state, progress, params, created_at, updated_at, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
        params![
            job.kind,
            job.region,
            job.account.0 as i64,
            job.image.as_ref().map(ImageId::as_str),
            job.state.as_str(),
            job.progress,
            job.params,
            job.created_at.0,
            job.host
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountStore, Role};
    use imaged_domain::time::Timestamp;

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
