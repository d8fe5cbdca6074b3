//! PostgreSQL backend: for several service instances over one database. A few pipelined
//! connections, reconnected when they drop; conflicts resolved with row locks and unique indexes.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Mutex;
use tokio_postgres::{Client, Config, NoTls, Row};

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

/// Connections kept open. Each pipelines concurrent queries; transactions hold one alone.
const CONNECTIONS: usize = 4;
/// Lock key serialising migrations across service instances.
const MIGRATION_LOCK: i64 = 0x696d_6167_6564; // "imaged"

/// A database error with what the server said (`db error` alone names nothing).
fn db_err(e: tokio_postgres::Error) -> MetaStoreError {
    match e.as_db_error() {
        Some(db) => MetaStoreError::Backend(format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        )),
        None => MetaStoreError::Backend(e.to_string()),
    }
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
            // Servers starting together race here: PostgreSQL may answer one of two concurrent
            // `IF NOT EXISTS` creations with a unique violation; the schema exists either way.
            if let Err(e) = admin.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await {
                let raced = e.code().is_some_and(|c| {
                    *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                        || *c == tokio_postgres::error::SqlState::DUPLICATE_SCHEMA
                });
                if !raced {
                    return Err(db_err(e));
                }
            }
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

const MANIFEST_COLUMNS: &str = "image_id, region, manifest, blocks, source_format, virtual_size";

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

/// The database's clock in milliseconds: what leases are compared with.
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Whether a job's write may land: `fence` (if any) still holds the job's lease. The job's
/// row is locked for share until the write commits, so a takeover waits for it (and is then
/// seen by every later write of the old worker).
async fn check_fence(tx: &tokio_postgres::Transaction<'_>, fence: Option<&JobFence>) -> Result<()> {
    let Some(f) = fence else { return Ok(()) };
    let held = tx
        .query_opt(
            "SELECT 1 FROM jobs WHERE id = $1 AND worker = $2 AND attempts = $3 AND state = 'RUNNING' FOR SHARE",
            &[&(f.job as i64), &f.worker, &i32::try_from(f.attempt).unwrap_or(i32::MAX)],
        )
        .await
        .map_err(db_err)?;
    held.map(|_| ()).ok_or(MetaStoreError::LeaseLost(f.job))
}

async fn insert_job_row<C: tokio_postgres::GenericClient>(client: &C, job: &JobRecord) -> Result<u64> {
    let row = client
        .query_one(
            "INSERT INTO jobs (kind, region, account_id, image_id, state, progress, params, created_at, updated_at, host)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING id",
            &[
                &job.kind,
                &job.region,
                &(job.account.0 as i64),
                &job.image.as_ref().map(ImageId::as_str),
                &job.state.as_str(),
                &i32::from(job.progress),
                &job.params,
                &job.created_at.0,
                &job.host,
            ],
        )
        .await
        .map_err(db_err)?;
    // Delivered when the transaction commits, to every server listening on this schema.
    client.execute("SELECT pg_notify('imaged_jobs_' || current_schema(), '')", &[]).await.map_err(db_err)?;
    Ok(row.get::<_, i64>(0).unsigned_abs())
}

/// Listens for queued jobs on one connection and wakes `wake` for each; returns when the
/// connection drops.
async fn listen_for_jobs(config: &Config, wake: &tokio::sync::Notify) -> Result<()> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(db_err)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("the job listener's connection failed: {e}");
                    break;
                }
            }
        }
    });
    let schema: String = client.query_one("SELECT current_schema()", &[]).await.map_err(db_err)?.get(0);
    client.batch_execute(&format!("LISTEN \"imaged_jobs_{}\"", schema.replace('"', ""))).await.map_err(db_err)?;
    while rx.recv().await.is_some() {
        wake.notify_waiters();
    }
    driver.abort();
    Ok(())
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
    async fn a_job_queued_through_one_server_wakes_the_workers_of_another_at_once() {
        use crate::JobStore as _;
        let Some(queuer) = test_store("wakeups").await else { return };
        let url = std::env::var("IMAGED_TEST_PG_URL").expect("url");
        let schema =
            queuer.inner.config.get_options().and_then(|o| o.strip_prefix("-c search_path=")).map(str::to_owned);
        let watcher = PostgresStore::connect(&url, schema.as_deref()).await.expect("second server");
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        watcher.watch_jobs(std::sync::Arc::clone(&wake));
        let account = crate::testsuite::new_account(&queuer, "waker").await;
        // Until the watcher listens, a queued job may pass unheard: queue until one is heard.
        let heard = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let job = crate::testsuite::job("k-wake", "ap-guangzhou", account, None, 1);
                queuer.insert_job(&job).await.expect("insert");
                if tokio::time::timeout(std::time::Duration::from_millis(300), woken).await.is_ok() {
                    return;
                }
            }
        })
        .await;
        assert!(heard.is_ok(), "the other server heard of the queued job");
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
