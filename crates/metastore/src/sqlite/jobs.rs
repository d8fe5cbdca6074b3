//! SQLite jobs: `JobStore`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{db_err, insert_job_row, SqliteStore, DB_NOW_MS};
use crate::{account_from_column, JobFence, JobRecord, JobState, JobStore, MetaStoreError, Refused, Result};
use imaged_domain::time::Timestamp;
use imaged_domain::{Image, ImageId};

const JOB_COLUMNS: &str = "id, kind, region, account_id, image_id, state, progress, params, result, error, attempts, \
                           created_at, updated_at, worker, host";

type JobRow = (
    i64,
    String,
    String,
    i64,
    Option<String>,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    (Option<String>, Option<String>),
);

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
        (r.get(13)?, r.get(14)?),
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
        worker: row.13 .0,
        host: row.13 .1,
        created_at: Timestamp(row.11),
        updated_at: Timestamp(row.12),
    })
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

    async fn claim_job(
        &self,
        worker: &str,
        host: &str,
        kinds: &[&str],
        per_account: u32,
        lease_ms: u64,
        now: Timestamp,
    ) -> Result<Option<JobRecord>> {
        let (worker, host) = (worker.to_owned(), host.to_owned());
        let kinds = serde_json::to_string(kinds).map_err(|e| MetaStoreError::Backend(e.to_string()))?;
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let db_now: i64 = tx.query_row(&format!("SELECT {DB_NOW_MS}"), [], |r| r.get(0)).map_err(db_err)?;
                let id: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM jobs j
                         WHERE ((j.state = 'QUEUED' AND j.not_before_ms <= ?1)
                                OR (j.state = 'RUNNING' AND j.lease_expires_ms < ?1))
                           AND j.kind IN (SELECT value FROM json_each(?2))
                           AND (j.host IS NULL OR j.host = ?4)
                           AND (SELECT COUNT(*) FROM jobs r
                                WHERE r.account_id = j.account_id AND r.state = 'RUNNING' AND r.lease_expires_ms >= ?1
                                  AND r.kind IN (SELECT value FROM json_each(?2))) < ?3
                         ORDER BY j.id LIMIT 1",
                        params![db_now, kinds, per_account, host],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_err)?;
                let Some(id) = id else { return Ok(None) };
                tx.execute(
                    "UPDATE jobs SET state = 'RUNNING', worker = ?2, lease_expires_ms = ?3, attempts = attempts + 1,
                     updated_at = ?4 WHERE id = ?1",
                    params![id, worker, db_now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX)), now.0],
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

    async fn renew_job(&self, fence: &JobFence, progress: u8, lease_ms: u64, now: Timestamp) -> Result<bool> {
        let f = fence.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    &format!(
                        "UPDATE jobs SET progress = ?4, lease_expires_ms = {DB_NOW_MS} + ?5, updated_at = ?6
                         WHERE id = ?1 AND worker = ?2 AND attempts = ?3 AND state = 'RUNNING'"
                    ),
                    params![f.job as i64, f.worker, f.attempt, progress, lease_ms as i64, now.0],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn finish_job(
        &self,
        fence: &JobFence,
        state: JobState,
        result: Option<&str>,
        error: Option<&str>,
        retry_after_ms: u64,
        now: Timestamp,
    ) -> Result<()> {
        let (f, result, error) = (fence.clone(), result.map(str::to_owned), error.map(str::to_owned));
        self.writer
            .run(move |conn| {
                let n = conn
                    .execute(
                        &format!(
                            "UPDATE jobs SET state = ?4, result = ?5, error = ?6, updated_at = ?7, lease_expires_ms = NULL,
                             not_before_ms = {DB_NOW_MS} + ?8,
                             progress = CASE WHEN ?4 = 'SUCCEEDED' THEN 100 ELSE progress END
                             WHERE id = ?1 AND worker = ?2 AND attempts = ?3 AND state = 'RUNNING'"
                        ),
                        params![
                            f.job as i64,
                            f.worker,
                            f.attempt,
                            state.as_str(),
                            result,
                            error,
                            now.0,
                            retry_after_ms as i64
                        ],
                    )
                    .map_err(db_err)?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(MetaStoreError::LeaseLost(f.job))
                }
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
