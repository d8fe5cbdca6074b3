//! PostgreSQL backend: for several service instances over one database. A few pipelined
//! connections, reconnected when they drop; conflicts resolved with row locks and unique indexes.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::{Client, Config, NoTls, Row};

use crate::{
    account_from_column, decode_image, decode_instance, encode_image, encode_instance, owner_column, AccountRecord,
    AccountStore, BlockRefStore, ImageStore, InstanceStore, JobRecord, JobState, JobStore, KeyRecord, KeyStatus,
    KeyStore, ManifestRecord, MetaStoreError, Refused, Result, Role, VisibleImage,
};
use imaged_domain::instance::Instance;
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId, ImageState, InstanceId};

/// Versioned migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE SEQUENCE account_ids START WITH 100000000001;
    CREATE TABLE accounts (
        id BIGINT PRIMARY KEY DEFAULT nextval('account_ids'),
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        image_quota BIGINT
    );
    CREATE TABLE api_keys (
        secret_id TEXT PRIMARY KEY,
        account_id BIGINT NOT NULL REFERENCES accounts(id),
        sealed_secret BYTEA NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX api_keys_by_account ON api_keys(account_id);
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        region TEXT,
        owner_id BIGINT REFERENCES accounts(id),
        state TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX images_by_owner_region ON images(owner_id, region);
    CREATE UNIQUE INDEX images_unique_name ON images(owner_id, region, name) WHERE owner_id IS NOT NULL;
    CREATE TABLE image_shares (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        account_id BIGINT NOT NULL REFERENCES accounts(id),
        created_at BIGINT NOT NULL,
        PRIMARY KEY (image_id, account_id)
    );
    CREATE INDEX image_shares_by_account ON image_shares(account_id);",
    ),
    (
        2,
        "CREATE TABLE image_manifests (
        image_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        manifest BYTEA NOT NULL,
        blocks TEXT NOT NULL,
        source_format TEXT NOT NULL,
        virtual_size BIGINT NOT NULL
    );
    CREATE INDEX image_manifests_by_region ON image_manifests(region);
    CREATE TABLE blocks (
        region TEXT NOT NULL,
        digest TEXT NOT NULL,
        refs BIGINT NOT NULL DEFAULT 0,
        stored_size BIGINT NOT NULL,
        touched_at BIGINT NOT NULL,
        PRIMARY KEY (region, digest)
    );
    CREATE INDEX blocks_unreferenced ON blocks(region, touched_at) WHERE refs <= 0;
    CREATE TABLE jobs (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        region TEXT NOT NULL,
        account_id BIGINT NOT NULL,
        image_id TEXT,
        state TEXT NOT NULL,
        progress INTEGER NOT NULL,
        params TEXT NOT NULL,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        lease_until BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs(state, id);",
    ),
    (
        3,
        "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        owner_id BIGINT NOT NULL REFERENCES accounts(id),
        region TEXT NOT NULL,
        busy BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX instances_by_owner_region ON instances(owner_id, region, created_at);",
    ),
    (
        4,
        "CREATE TABLE client_tokens (
        owner_id BIGINT NOT NULL REFERENCES accounts(id),
        token TEXT NOT NULL,
        instance_ids TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (owner_id, token)
    );",
    ),
];

/// Connections kept open. Each pipelines concurrent queries; transactions hold one alone.
const CONNECTIONS: usize = 4;
/// Lock key serialising migrations across service instances.
const MIGRATION_LOCK: i64 = 0x696d_6167_6564; // "imaged"

fn db_err(e: tokio_postgres::Error) -> MetaStoreError {
    MetaStoreError::Backend(e.to_string())
}

/// The PostgreSQL metadata store.
#[derive(Clone)]
pub struct PostgresStore {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    config: Config,
    conns: Vec<Mutex<Client>>,
    next: AtomicUsize,
}

async fn connect(config: &Config) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(db_err)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres connection closed: {e}");
        }
    });
    Ok(client)
}

impl PostgresStore {
    /// Connects to `url` and applies pending migrations. With `schema`, every table lives in
    /// that schema (created if missing), which lets tests and tenants of one database stay apart.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self> {
        let mut config: Config = url.parse().map_err(db_err)?;
        if let Some(schema) = schema {
            if !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(MetaStoreError::Backend(format!("bad schema name `{schema}`")));
            }
            let admin = connect(&config).await?;
            admin.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.map_err(db_err)?;
            config.options(format!("-c search_path={schema}"));
        }
        let mut first = connect(&config).await?;
        migrate(&mut first).await?;
        let mut conns = vec![Mutex::new(first)];
        for _ in 1..CONNECTIONS {
            conns.push(Mutex::new(connect(&config).await?));
        }
        Ok(Self { inner: std::sync::Arc::new(Inner { config, conns, next: AtomicUsize::new(0) }) })
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
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        if let Err(refused) = check_custom_insert(&tx, image, quota).await? {
            return Ok(Err(refused));
        }
        if let Err(refused) = begin_tx(&tx, instances).await? {
            return Ok(Err(refused));
        }
        put_image(&tx, image).await?;
        let id = insert_job_row(&tx, job).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(id))
    }

    /// A connection, reconnected first if it has dropped.
    async fn conn(&self) -> Result<tokio::sync::MutexGuard<'_, Client>> {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.conns.len();
        let mut guard = self.inner.conns[i].lock().await;
        if guard.is_closed() {
            *guard = connect(&self.inner.config).await?;
        }
        Ok(guard)
    }
}

async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await
    .map_err(db_err)?;
    let current: i64 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await.map_err(db_err)?.get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(MetaStoreError::SchemaTooNew { found: current, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await.map_err(db_err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, EXTRACT(EPOCH FROM now())::BIGINT)",
            &[version],
        )
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}

fn to_account(r: &Row) -> Result<AccountRecord> {
    Ok(AccountRecord {
        id: account_from_column(r.get(0)),
        name: r.get(1),
        role: Role::parse(r.get(2))?,
        created_at: Timestamp(r.get(3)),
        image_quota: r.get::<_, Option<i64>>(4).map(|q| u32::try_from(q).unwrap_or(u32::MAX)),
    })
}

fn to_key(r: &Row) -> Result<KeyRecord> {
    Ok(KeyRecord {
        secret_id: r.get(0),
        account: account_from_column(r.get(1)),
        sealed_secret: r.get(2),
        status: KeyStatus::parse(r.get(3))?,
        created_at: Timestamp(r.get(4)),
    })
}

const ACCOUNT_COLUMNS: &str = "id, name, role, created_at, image_quota";
const KEY_COLUMNS: &str = "secret_id, account_id, sealed_secret, status, created_at";
const PUT_IMAGE: &str = "INSERT INTO images (id, kind, region, owner_id, state, name, created_at, doc)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, region = excluded.region,
       owner_id = excluded.owner_id, state = excluded.state, name = excluded.name,
       created_at = excluded.created_at, doc = excluded.doc";

async fn put_image<C: tokio_postgres::GenericClient>(client: &C, image: &Image) -> Result<()> {
    let doc = encode_image(image)?;
    client
        .execute(
            PUT_IMAGE,
            &[
                &image.id.as_str(),
                &image.kind.as_str(),
                &image.region,
                &owner_column(image),
                &image.state.as_str(),
                &image.name,
                &image.created_at.0,
                &doc,
            ],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
}

/// The quota, name and id checks of a custom-image insert, inside the caller's transaction.
/// Inserts are serialised per owner by a row lock on the account, so the count cannot race.
async fn check_custom_insert(
    tx: &tokio_postgres::Transaction<'_>,
    image: &Image,
    quota: u32,
) -> Result<Result<(), Refused>> {
    let Some(owner) = owner_column(image) else {
        return Err(MetaStoreError::Backend("a custom image needs an owner".into()));
    };
    tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&owner]).await.map_err(db_err)?;
    let row = tx
        .query_one(
            "SELECT (SELECT COUNT(*) FROM images WHERE owner_id = $1 AND region = $2),
                    EXISTS (SELECT 1 FROM images WHERE owner_id = $1 AND region = $2 AND name = $3),
                    EXISTS (SELECT 1 FROM images WHERE id = $4)",
            &[&owner, &image.region, &image.name, &image.id.as_str()],
        )
        .await
        .map_err(db_err)?;
    let (count, name_taken, id_taken): (i64, bool, bool) = (row.get(0), row.get(1), row.get(2));
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
const MANIFEST_COLUMNS: &str = "image_id, region, manifest, blocks, source_format, virtual_size";

fn to_job(r: &Row) -> Result<JobRecord> {
    Ok(JobRecord {
        id: r.get::<_, i64>(0).unsigned_abs(),
        kind: r.get(1),
        region: r.get(2),
        account: account_from_column(r.get(3)),
        image: r
            .get::<_, Option<String>>(4)
            .map(|i| ImageId::parse(&i).map_err(|e| MetaStoreError::Corrupt(e.to_string())))
            .transpose()?,
        state: JobState::parse(r.get(5))?,
        progress: u8::try_from(r.get::<_, i32>(6).clamp(0, 100)).unwrap_or(0),
        params: r.get(7),
        result: r.get(8),
        error: r.get(9),
        attempts: u32::try_from(r.get::<_, i32>(10)).unwrap_or(0),
        created_at: Timestamp(r.get(11)),
        updated_at: Timestamp(r.get(12)),
    })
}

fn to_manifest(r: &Row) -> Result<ManifestRecord> {
    Ok(ManifestRecord {
        image: ImageId::parse(r.get(0)).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?,
        region: r.get(1),
        manifest: r.get(2),
        blocks: serde_json::from_str(r.get(3)).map_err(|e| MetaStoreError::Corrupt(format!("manifest blocks: {e}")))?,
        source_format: r.get(4),
        virtual_size: r.get::<_, i64>(5).unsigned_abs(),
    })
}

async fn insert_job_row<C: tokio_postgres::GenericClient>(client: &C, job: &JobRecord) -> Result<u64> {
    let row = client
        .query_one(
            "INSERT INTO jobs (kind, region, account_id, image_id, state, progress, params, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
            &[
                &job.kind,
                &job.region,
                &(job.account.0 as i64),
                &job.image.as_ref().map(ImageId::as_str),
                &job.state.as_str(),
                &i32::from(job.progress),
                &job.params,
                &job.created_at.0,
            ],
        )
        .await
        .map_err(db_err)?;
    Ok(row.get::<_, i64>(0).unsigned_abs())
}

/// Removes an image's manifest and its block references inside the caller's transaction.
async fn detach_manifest_tx(tx: &tokio_postgres::Transaction<'_>, image: &ImageId) -> Result<bool> {
    let row = tx
        .query_opt(
            &format!("DELETE FROM image_manifests WHERE image_id = $1 RETURNING {MANIFEST_COLUMNS}"),
            &[&image.as_str()],
        )
        .await
        .map_err(db_err)?;
    let Some(m) = row.map(|r| to_manifest(&r)).transpose()? else { return Ok(false) };
    tx.execute(
        "UPDATE blocks SET refs = refs - 1, touched_at = EXTRACT(EPOCH FROM now())::BIGINT
         WHERE region = $1 AND digest = ANY($2::TEXT[])",
        &[&m.region, &m.blocks],
    )
    .await
    .map_err(db_err)?;
    Ok(true)
}

const PUT_INSTANCE: &str = "INSERT INTO instances (id, owner_id, region, busy, created_at, doc)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (id) DO UPDATE SET busy = excluded.busy, doc = excluded.doc";

async fn put_instance<C: tokio_postgres::GenericClient>(client: &C, instance: &Instance) -> Result<()> {
    let doc = encode_instance(instance)?;
    client
        .execute(
            PUT_INSTANCE,
            &[
                &instance.id.as_str(),
                &(instance.owner.0 as i64),
                &instance.region,
                &instance.busy(),
                &instance.created_at.0,
                &doc,
            ],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
}

/// Stores instances that begin an operation, each only if it had none in progress (the row
/// lock of the update makes a concurrent begin wait, then find it busy).
async fn begin_tx(tx: &tokio_postgres::Transaction<'_>, instances: &[Instance]) -> Result<Result<(), Refused>> {
    for instance in instances {
        let doc = encode_instance(instance)?;
        let n = tx
            .execute(
                "UPDATE instances SET busy = true, doc = $2 WHERE id = $1 AND NOT busy",
                &[&instance.id.as_str(), &doc],
            )
            .await
            .map_err(db_err)?;
        if n != 1 {
            return Ok(Err(Refused::Busy));
        }
    }
    Ok(Ok(()))
}

#[async_trait]
impl BlockRefStore for PostgresStore {
    async fn touch_blocks(&self, region: &str, blocks: &[(String, u64)], now: Timestamp) -> Result<()> {
        // One row per digest: an upsert may not touch a row twice in one statement, and a disk
        // often repeats a block.
        let mut distinct: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for (d, size) in blocks {
            let e = distinct.entry(d.as_str()).or_insert(0);
            *e = (*e).max(*size as i64);
        }
        let digests: Vec<&str> = distinct.keys().copied().collect();
        let sizes: Vec<i64> = distinct.values().copied().collect();
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO blocks (region, digest, refs, stored_size, touched_at)
             SELECT $1, d, 0, s, $4 FROM UNNEST($2::TEXT[], $3::BIGINT[]) AS t(d, s)
             ON CONFLICT (region, digest) DO UPDATE SET touched_at = excluded.touched_at,
               stored_size = GREATEST(blocks.stored_size, excluded.stored_size)",
            &[&region, &digests, &sizes, &now.0],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn attach_manifest(&self, image: &Image, m: &ManifestRecord) -> Result<Vec<String>> {
        let blocks = serde_json::to_string(&m.blocks).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        tx.execute(
            &format!("INSERT INTO image_manifests ({MANIFEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[&m.image.as_str(), &m.region, &m.manifest, &blocks, &m.source_format, &(m.virtual_size as i64)],
        )
        .await
        .map_err(db_err)?;
        let rows = tx
            .query(
                "INSERT INTO blocks (region, digest, refs, stored_size, touched_at)
                 SELECT $1, d, 1, 0, EXTRACT(EPOCH FROM now())::BIGINT FROM UNNEST($2::TEXT[]) AS t(d)
                 ON CONFLICT (region, digest) DO UPDATE SET refs = blocks.refs + 1
                 RETURNING digest, refs",
                &[&m.region, &m.blocks],
            )
            .await
            .map_err(db_err)?;
        put_image(&tx, image).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(rows.iter().filter(|r| r.get::<_, i64>(1) <= 1).map(|r| r.get(0)).collect())
    }

    async fn get_manifest(&self, image: &ImageId) -> Result<Option<ManifestRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(
            &format!("SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE image_id = $1"),
            &[&image.as_str()],
        )
        .await
        .map_err(db_err)?
        .map(|r| to_manifest(&r))
        .transpose()
    }

    async fn region_manifests(&self, region: &str) -> Result<Vec<ManifestRecord>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                &format!("SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE region = $1 ORDER BY image_id"),
                &[&region],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(to_manifest).collect()
    }

    async fn detach_manifest(&self, image: &ImageId) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let detached = detach_manifest_tx(&tx, image).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(detached)
    }

    async fn collect_unreferenced(&self, region: &str, cutoff: Timestamp) -> Result<Vec<String>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "DELETE FROM blocks WHERE region = $1 AND refs <= 0 AND touched_at < $2 RETURNING digest",
                &[&region, &cutoff.0],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn block_refs(&self, region: &str, digest: &str) -> Result<u64> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT refs FROM blocks WHERE region = $1 AND digest = $2", &[&region, &digest])
            .await
            .map_err(db_err)?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0).unsigned_abs()))
    }

    async fn block_totals(&self, region: &str) -> Result<(u64, u64)> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(stored_size), 0)::BIGINT FROM blocks WHERE region = $1",
                &[&region],
            )
            .await
            .map_err(db_err)?;
        Ok((row.get::<_, i64>(0).unsigned_abs(), row.get::<_, i64>(1).unsigned_abs()))
    }
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn insert_job(&self, job: &JobRecord) -> Result<u64> {
        let conn = self.conn().await?;
        insert_job_row(&*conn, job).await
    }

    async fn insert_image_with_job(&self, image: &Image, quota: u32, job: &JobRecord) -> Result<Result<u64, Refused>> {
        self.insert_image_beginning(image, quota, &[], job).await
    }

    async fn claim_job(&self, worker: &str, now: Timestamp, lease_until: Timestamp) -> Result<Option<JobRecord>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "UPDATE jobs SET state = 'RUNNING', worker = $2, lease_until = $3, attempts = attempts + 1,
                       updated_at = $1
                     WHERE id = (SELECT id FROM jobs
                                 WHERE state = 'QUEUED' OR (state = 'RUNNING' AND lease_until < $1)
                                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {JOB_COLUMNS}"
                ),
                &[&now.0, &worker, &lease_until.0],
            )
            .await
            .map_err(db_err)?;
        row.map(|r| to_job(&r)).transpose()
    }

    async fn renew_job(
        &self,
        id: u64,
        worker: &str,
        progress: u8,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute(
            "UPDATE jobs SET progress = $3, lease_until = $4, updated_at = $5
             WHERE id = $1 AND worker = $2 AND state = 'RUNNING'",
            &[&(id as i64), &worker, &i32::from(progress), &lease_until.0, &now.0],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
    }

    async fn finish_job(
        &self,
        id: u64,
        state: JobState,
        result: Option<&str>,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            "UPDATE jobs SET state = $2, result = $3, error = $4, updated_at = $5, lease_until = NULL,
             progress = CASE WHEN $2 = 'SUCCEEDED' THEN 100 ELSE progress END WHERE id = $1",
            &[&(id as i64), &state.as_str(), &result, &error, &now.0],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn get_job(&self, id: u64) -> Result<Option<JobRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), &[&(id as i64)])
            .await
            .map_err(db_err)?
            .map(|r| to_job(&r))
            .transpose()
    }

    async fn oldest_active_job(&self, region: &str) -> Result<Option<Timestamp>> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT MIN(created_at) FROM jobs WHERE region = $1 AND state IN ('QUEUED', 'RUNNING')",
                &[&region],
            )
            .await
            .map_err(db_err)?;
        Ok(row.get::<_, Option<i64>>(0).map(Timestamp))
    }
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_account(&self, name: &str, role: Role, now: Timestamp) -> Result<Result<AccountRecord, Refused>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "INSERT INTO accounts (name, role, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING RETURNING {ACCOUNT_COLUMNS}"
                ),
                &[&name, &role.as_str(), &now.0],
            )
            .await
            .map_err(db_err)?;
        match row {
            Some(r) => to_account(&r).map(Ok),
            None => Ok(Err(Refused::DuplicateAccountName)),
        }
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<AccountRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"), &[&(id.0 as i64)])
            .await
            .map_err(db_err)?
            .map(|r| to_account(&r))
            .transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>> {
        let conn = self.conn().await?;
        let rows =
            conn.query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"), &[]).await.map_err(db_err)?;
        rows.iter().map(to_account).collect()
    }

    async fn set_image_quota(&self, id: AccountId, quota: Option<u32>) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("UPDATE accounts SET image_quota = $1 WHERE id = $2", &[&quota.map(i64::from), &(id.0 as i64)])
            .await
            .map(|n| n == 1)
            .map_err(db_err)
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
            &[&key.secret_id, &(key.account.0 as i64), &key.sealed_secret, &key.status.as_str(), &key.created_at.0],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn get_key(&self, secret_id: &str) -> Result<Option<KeyRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_id = $1"), &[&secret_id])
            .await
            .map_err(db_err)?
            .map(|r| to_key(&r))
            .transpose()
    }

    async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<KeyRecord>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE $1::BIGINT IS NULL OR account_id = $1
                     ORDER BY created_at, secret_id"
                ),
                &[&account.map(|a| a.0 as i64)],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(to_key).collect()
    }

    async fn set_key_status(&self, secret_id: &str, status: KeyStatus) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("UPDATE api_keys SET status = $1 WHERE secret_id = $2", &[&status.as_str(), &secret_id])
            .await
            .map(|n| n == 1)
            .map_err(db_err)
    }

    async fn delete_key(&self, secret_id: &str) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM api_keys WHERE secret_id = $1", &[&secret_id]).await.map(|n| n == 1).map_err(db_err)
    }
}

#[async_trait]
impl ImageStore for PostgresStore {
    async fn put_images(&self, images: &[Image]) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        for image in images {
            put_image(&tx, image).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn insert_custom_image(&self, image: &Image, quota: u32) -> Result<Result<(), Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        if let Err(refused) = check_custom_insert(&tx, image, quota).await? {
            return Ok(Err(refused));
        }
        put_image(&tx, image).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }

    async fn get_image(&self, id: &ImageId) -> Result<Option<Image>> {
        let conn = self.conn().await?;
        conn.query_opt("SELECT doc FROM images WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(db_err)?
            .map(|r| decode_image(r.get(0)))
            .transpose()
    }

    async fn visible_images(&self, caller: AccountId, region: &str) -> Result<Vec<VisibleImage>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT doc, false FROM images WHERE owner_id IS NULL
                 UNION ALL
                 SELECT doc, false FROM images WHERE owner_id = $1 AND region = $2
                 UNION ALL
                 SELECT i.doc, true FROM image_shares s JOIN images i ON i.id = s.image_id
                   WHERE s.account_id = $1 AND i.region = $2",
                &[&(caller.0 as i64), &region],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| Ok(VisibleImage { image: decode_image(r.get(0))?, shared_with_caller: r.get(1) })).collect()
    }

    async fn count_custom_images(&self, owner: AccountId, region: &str) -> Result<u64> {
        let conn = self.conn().await?;
        let n: i64 = conn
            .query_one("SELECT COUNT(*) FROM images WHERE owner_id = $1 AND region = $2", &[&(owner.0 as i64), &region])
            .await
            .map_err(db_err)?
            .get(0);
        Ok(n.unsigned_abs())
    }

    async fn add_share(&self, image: &ImageId, account: AccountId, now: Timestamp) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO image_shares (image_id, account_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&image.as_str(), &(account.0 as i64), &now.0],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
    }

    async fn update_image_if_state(&self, image: &Image, expected: ImageState) -> Result<bool> {
        let conn = self.conn().await?;
        let doc = encode_image(image)?;
        conn.execute(
            "UPDATE images SET state = $2, doc = $3 WHERE id = $1 AND state = $4",
            &[&image.id.as_str(), &image.state.as_str(), &doc, &expected.as_str()],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
    }

    async fn share_image(
        &self,
        image: &ImageId,
        account: AccountId,
        limit: u32,
        now: Timestamp,
    ) -> Result<Result<(), Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        // The image's row lock serialises shares of one image, so the count cannot race.
        tx.execute("SELECT 1 FROM images WHERE id = $1 FOR UPDATE", &[&image.as_str()]).await.map_err(db_err)?;
        let row = tx
            .query_one(
                "SELECT COUNT(*), COALESCE(BOOL_OR(account_id = $2), false) FROM image_shares WHERE image_id = $1",
                &[&image.as_str(), &(account.0 as i64)],
            )
            .await
            .map_err(db_err)?;
        let (count, already): (i64, bool) = (row.get(0), row.get(1));
        if already {
            return Ok(Err(Refused::AlreadyShared));
        }
        if count >= i64::from(limit) {
            return Ok(Err(Refused::ShareLimit));
        }
        tx.execute(
            "INSERT INTO image_shares (image_id, account_id, created_at) VALUES ($1, $2, $3)",
            &[&image.as_str(), &(account.0 as i64), &now.0],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }

    async fn unshare_image(&self, image: &ImageId, account: AccountId) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM image_shares WHERE image_id = $1 AND account_id = $2",
            &[&image.as_str(), &(account.0 as i64)],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
    }

    async fn begin_sync(
        &self,
        source: &Image,
        copies: &[Image],
        quota: u32,
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let doc = encode_image(source)?;
        let moved = tx
            .execute(
                "UPDATE images SET state = $2, doc = $3 WHERE id = $1 AND state = 'NORMAL'",
                &[&source.id.as_str(), &source.state.as_str(), &doc],
            )
            .await
            .map_err(db_err)?;
        if moved != 1 {
            return Ok(Err(Refused::WrongState));
        }
        for copy in copies {
            if let Err(refused) = check_custom_insert(&tx, copy, quota).await? {
                return Ok(Err(refused));
            }
            put_image(&tx, copy).await?;
        }
        let id = insert_job_row(&tx, job).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(id))
    }

    async fn image_shares(&self, image: &ImageId) -> Result<Vec<(AccountId, Timestamp)>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT account_id, created_at FROM image_shares WHERE image_id = $1 ORDER BY created_at, account_id",
                &[&image.as_str()],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| (account_from_column(r.get(0)), Timestamp(r.get(1)))).collect())
    }

    async fn update_custom_image(&self, image: &Image) -> Result<Result<(), Refused>> {
        let Some(owner) = owner_column(image) else {
            return Err(MetaStoreError::Backend("a custom image needs an owner".into()));
        };
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&owner]).await.map_err(db_err)?;
        let taken: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM images WHERE owner_id = $1 AND region = $2 AND name = $3 AND id <> $4)",
                &[&owner, &image.region, &image.name, &image.id.as_str()],
            )
            .await
            .map_err(db_err)?
            .get(0);
        if taken {
            return Ok(Err(Refused::DuplicateName));
        }
        put_image(&tx, image).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }

    async fn delete_image(&self, id: &ImageId) -> Result<Result<bool, Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let exists =
            tx.query_opt("SELECT 1 FROM images WHERE id = $1 FOR UPDATE", &[&id.as_str()]).await.map_err(db_err)?;
        if exists.is_none() {
            return Ok(Ok(false));
        }
        let shared: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM image_shares WHERE image_id = $1)", &[&id.as_str()])
            .await
            .map_err(db_err)?
            .get(0);
        if shared {
            return Ok(Err(Refused::InShared));
        }
        let state: String =
            tx.query_one("SELECT state FROM images WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?.get(0);
        if ["CREATING", "IMPORTING", "SYNCING"].contains(&state.as_str()) {
            return Ok(Err(Refused::WrongState));
        }
        detach_manifest_tx(&tx, id).await?;
        tx.execute("DELETE FROM images WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(true))
    }
}

#[async_trait]
impl InstanceStore for PostgresStore {
    async fn insert_instances_with_job(
        &self,
        instances: &[Instance],
        job: &JobRecord,
        client_token: Option<&str>,
    ) -> Result<Result<u64, Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        if let (Some(token), Some(first)) = (client_token, instances.first()) {
            let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
            let ids = serde_json::to_string(&ids).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?;
            let added = tx
                .execute(
                    "INSERT INTO client_tokens (owner_id, token, instance_ids, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&(first.owner.0 as i64), &token, &ids, &job.created_at.0],
                )
                .await
                .map_err(db_err)?;
            if added == 0 {
                return Ok(Err(Refused::DuplicateId));
            }
        }
        for instance in instances {
            put_instance(&tx, instance).await?;
        }
        let id = insert_job_row(&tx, job).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(id))
    }

    async fn instances_for_token(&self, owner: AccountId, token: &str) -> Result<Option<Vec<InstanceId>>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT instance_ids FROM client_tokens WHERE owner_id = $1 AND token = $2",
                &[&(owner.0 as i64), &token],
            )
            .await
            .map_err(db_err)?;
        row.map(|r| crate::decode_instance_ids(r.get(0))).transpose()
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        let conn = self.conn().await?;
        conn.query_opt("SELECT doc FROM instances WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(db_err)?
            .map(|r| decode_instance(r.get(0)))
            .transpose()
    }

    async fn list_instances(&self, owner: AccountId, region: &str) -> Result<Vec<Instance>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT doc FROM instances WHERE owner_id = $1 AND region = $2 ORDER BY created_at, id",
                &[&(owner.0 as i64), &region],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| decode_instance(r.get(0))).collect()
    }

    async fn put_instances(&self, instances: &[Instance]) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        for instance in instances {
            put_instance(&tx, instance).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn begin_operation(&self, instances: &[Instance], job: &JobRecord) -> Result<Result<u64, Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        if let Err(refused) = begin_tx(&tx, instances).await? {
            return Ok(Err(refused));
        }
        let id = insert_job_row(&tx, job).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(id))
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
        let conn = self.conn().await?;
        let rows = conn.query("SELECT doc FROM instances", &[]).await.map_err(db_err)?;
        let mut bases = std::collections::BTreeSet::new();
        for r in &rows {
            bases.extend(decode_instance(r.get(0))?.disk_base);
        }
        Ok(bases)
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM instances WHERE id = $1", &[&id.as_str()]).await.map(|n| n == 1).map_err(db_err)
    }
}

/// Drops a schema and everything in it (tests and benchmarks clean up after themselves).
pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    if !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(MetaStoreError::Backend(format!("bad schema name `{schema}`")));
    }
    let config: Config = url.parse().map_err(db_err)?;
    let client = connect(&config).await?;
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.map_err(db_err)
}

/// Test support: a fresh schema on the database named by `IMAGED_TEST_PG_URL`, or `None`
/// (after saying so on stderr) when the variable is unset.
pub async fn test_store(label: &str) -> Option<PostgresStore> {
    let Ok(url) = std::env::var("IMAGED_TEST_PG_URL") else {
        eprintln!("IMAGED_TEST_PG_URL is not set: skipping the PostgreSQL half of `{label}`");
        return None;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let schema = format!("t_{}_{}_{}", label, std::process::id(), nanos);
    match PostgresStore::connect(&url, Some(&schema)).await {
        Ok(store) => Some(store),
        Err(e) => panic!("IMAGED_TEST_PG_URL is set but PostgreSQL is unusable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn postgres_passes_the_conformance_suite() {
        if let Some(store) = test_store("conformance").await {
            crate::testsuite::run(&store).await;
        }
    }

    #[tokio::test]
    async fn postgres_migrations_run_once_per_schema() {
        let Some(store) = test_store("migrations").await else {
            return;
        };
        let conn = store.conn().await.expect("conn");
        let n: i64 = conn.query_one("SELECT COUNT(*) FROM schema_migrations", &[]).await.expect("count").get(0);
        assert_eq!(n, MIGRATIONS.len() as i64);
    }
}
