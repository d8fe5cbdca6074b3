//! PostgreSQL jobs: `JobStore`.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{db_err, insert_job_row, PostgresStore, DB_NOW_MS};
use crate::{account_from_column, JobFence, JobRecord, JobState, JobStore, MetaStoreError, Refused, Result};
use imaged_domain::time::Timestamp;
use imaged_domain::{Image, ImageId};

const JOB_COLUMNS: &str = "id, kind, region, account_id, image_id, state, progress, params, result, error, attempts, \
                           created_at, updated_at, worker, host";

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
        worker: r.get(13),
        host: r.get(14),
        created_at: Timestamp(r.get(11)),
        updated_at: Timestamp(r.get(12)),
    })
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

    async fn claim_job(
        &self,
        worker: &str,
        host: &str,
        kinds: &[&str],
        per_account: u32,
        lease_ms: u64,
        now: Timestamp,
    ) -> Result<Option<JobRecord>> {
        let kinds: Vec<&str> = kinds.to_vec();
        let per_account = i64::from(per_account);
        let lease_ms = i64::try_from(lease_ms).unwrap_or(i64::MAX);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let db_now: i64 = tx.query_one(&format!("SELECT {DB_NOW_MS}"), &[]).await.map_err(db_err)?.get(0);
        let running = "SELECT COUNT(*) FROM jobs r WHERE r.account_id = j.account_id AND r.state = 'RUNNING'
                       AND r.lease_expires_ms >= $1 AND r.kind = ANY($2)";
        let candidate = tx
            .query_opt(
                &format!(
                    "SELECT id, account_id FROM jobs j
                     WHERE ((state = 'QUEUED' AND not_before_ms <= $1) OR (state = 'RUNNING' AND lease_expires_ms < $1))
                       AND kind = ANY($2) AND (host IS NULL OR host = $4)
                       AND ({running}) < $3
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
                ),
                &[&db_now, &kinds, &per_account, &host],
            )
            .await
            .map_err(db_err)?;
        let Some(candidate) = candidate else { return Ok(None) };
        let (id, account): (i64, i64) = (candidate.get(0), candidate.get(1));
        // Claims for one account take turns, so the count below sees every committed claim.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&account]).await.map_err(db_err)?;
        let held: i64 = tx
            .query_one(
                &format!("SELECT ({running}) FROM (SELECT $3::BIGINT AS account_id) j"),
                &[&db_now, &kinds, &account],
            )
            .await
            .map_err(db_err)?
            .get(0);
        if held >= per_account {
            return Ok(None);
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE jobs SET state = 'RUNNING', worker = $2, lease_expires_ms = $3, attempts = attempts + 1,
                       updated_at = $1 WHERE id = $4 RETURNING {JOB_COLUMNS}"
                ),
                &[&now.0, &worker, &db_now.saturating_add(lease_ms), &id],
            )
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        to_job(&row).map(Some)
    }

    async fn renew_job(&self, fence: &JobFence, progress: u8, lease_ms: u64, now: Timestamp) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute(
            &format!(
                "UPDATE jobs SET progress = $4, lease_expires_ms = {DB_NOW_MS} + $5, updated_at = $6
                 WHERE id = $1 AND worker = $2 AND attempts = $3 AND state = 'RUNNING'"
            ),
            &[
                &(fence.job as i64),
                &fence.worker,
                &i32::try_from(fence.attempt).unwrap_or(i32::MAX),
                &i32::from(progress),
                &i64::try_from(lease_ms).unwrap_or(i64::MAX),
                &now.0,
            ],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
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
        let conn = self.conn().await?;
        let n = conn
            .execute(
                &format!(
                    "UPDATE jobs SET state = $4, result = $5, error = $6, updated_at = $7, lease_expires_ms = NULL,
                     not_before_ms = {DB_NOW_MS} + $8,
                     progress = CASE WHEN $4 = 'SUCCEEDED' THEN 100 ELSE progress END
                     WHERE id = $1 AND worker = $2 AND attempts = $3 AND state = 'RUNNING'"
                ),
                &[
                    &(fence.job as i64),
                    &fence.worker,
                    &i32::try_from(fence.attempt).unwrap_or(i32::MAX),
                    &state.as_str(),
                    &result,
                    &error,
                    &now.0,
                    &i64::try_from(retry_after_ms).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(db_err)?;
        if n == 1 {
            Ok(())
        } else {
            Err(MetaStoreError::LeaseLost(fence.job))
        }
    }

    async fn get_job(&self, id: u64) -> Result<Option<JobRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), &[&(id as i64)])
            .await
            .map_err(db_err)?
            .map(|r| to_job(&r))
            .transpose()
    }

    fn watch_jobs(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        let config = self.inner.config.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = super::listen_for_jobs(&config, &wake).await {
                    tracing::warn!("listening for queued jobs failed (workers poll meanwhile): {e}");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
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
