//! PostgreSQL operations' reads: `OpsStore`.

use async_trait::async_trait;

use super::{db_err, PostgresStore};
use crate::ops::{JobCount, MaintenanceReport, OpsStore};
use crate::{JobState, Result};
use imaged_domain::time::Timestamp;

#[async_trait]
impl OpsStore for PostgresStore {
    async fn ping(&self) -> Result<()> {
        let conn = self.conn().await?;
        conn.query_one("SELECT 1", &[]).await.map(|_| ()).map_err(db_err)
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>> {
        let conn = self.conn().await?;
        let rows = conn
            .query("SELECT kind, state, COUNT(*), MIN(created_at) FROM jobs GROUP BY kind, state ORDER BY 1, 2", &[])
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(JobCount {
                    kind: r.get(0),
                    state: JobState::parse(r.get(1))?,
                    count: r.get::<_, i64>(2).unsigned_abs(),
                    oldest: Timestamp(r.get(3)),
                })
            })
            .collect()
    }

    async fn record_maintenance(&self, r: &MaintenanceReport) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO maintenance_reports (kind, region, at, blocks, problems) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kind, region) DO UPDATE SET at = $3, blocks = $4, problems = $5",
            &[&r.kind, &r.region, &r.at.0, &(r.blocks as i64), &(r.problems as i64)],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn maintenance_reports(&self) -> Result<Vec<MaintenanceReport>> {
        let conn = self.conn().await?;
        let rows = conn
            .query("SELECT kind, region, at, blocks, problems FROM maintenance_reports ORDER BY kind, region", &[])
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| MaintenanceReport {
                kind: r.get(0),
                region: r.get(1),
                at: Timestamp(r.get(2)),
                blocks: r.get::<_, i64>(3).unsigned_abs(),
                problems: r.get::<_, i64>(4).unsigned_abs(),
            })
            .collect())
    }
}
