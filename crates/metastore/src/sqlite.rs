//! SQLite backend: the embedded default. WAL mode, one writer connection and a small pool of
//! readers; every call runs on tokio's blocking pool so the async runtime never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::{
    account_from_column, decode_image, encode_image, owner_column, AccountRecord, AccountStore, ImageStore, KeyRecord,
    KeyStatus, KeyStore, MetaStoreError, Refused, Result, Role, VisibleImage, FIRST_ACCOUNT_ID,
};
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId};

/// Versioned migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[(
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
)];

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
        let images = images.to_vec();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                for image in &images {
                    put_image(&tx, image)?;
                }
                tx.commit().map_err(db_err)
            })
            .await
    }

    async fn insert_custom_image(&self, image: &Image, quota: u32) -> Result<Result<(), Refused>> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let (count, name_taken, id_taken): (i64, bool, bool) = tx
                    .query_row(
                        "SELECT (SELECT COUNT(*) FROM images WHERE owner_id = ?1 AND region = ?2),
                                EXISTS (SELECT 1 FROM images WHERE owner_id = ?1 AND region = ?2 AND name = ?3),
                                EXISTS (SELECT 1 FROM images WHERE id = ?4)",
                        params![owner_column(&image), image.region, image.name, image.id.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .map_err(db_err)?;
                if id_taken {
                    return Ok(Err(Refused::DuplicateId));
                }
                if name_taken {
                    return Ok(Err(Refused::DuplicateName));
                }
                if count >= i64::from(quota) {
                    return Ok(Err(Refused::QuotaExceeded));
                }
                put_image(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn get_image(&self, id: &ImageId) -> Result<Option<Image>> {
        let id = id.clone();
        self.readers
            .run(move |conn| {
                conn.prepare_cached("SELECT doc FROM images WHERE id = ?1")
                    .and_then(|mut st| st.query_row(params![id.as_str()], |r| r.get::<_, String>(0)).optional())
                    .map_err(db_err)?
                    .map(|doc| decode_image(&doc))
                    .transpose()
            })
            .await
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
