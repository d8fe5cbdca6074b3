//! SQLite operations' reads: `OpsStore`.

use async_trait::async_trait;
use rusqlite::params;

use super::{db_err, SqliteStore};
use crate::ops::{JobCount, MaintenanceReport, OpsStore};
use crate::{JobState, Result};
use imaged_domain::time::Timestamp;

#[async_trait]
impl OpsStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.readers.run(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err)).await
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>> {
        self.readers
            .run(|conn| {
                let mut st = conn
                    .prepare(
                        "SELECT kind, state, COUNT(*), MIN(created_at) FROM jobs GROUP BY kind, state ORDER BY 1, 2",
                    )
                    .map_err(db_err)?;
                let rows: Vec<(String, String, i64, i64)> = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .map_err(db_err)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(db_err)?;
                rows.into_iter()
                    .map(|(kind, state, count, oldest)| {
                        Ok(JobCount {
                            kind,
                            state: JobState::parse(&state)?,
                            count: count.unsigned_abs(),
                            oldest: Timestamp(oldest),
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn record_maintenance(&self, report: &MaintenanceReport) -> Result<()> {
        let r = report.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO maintenance_reports (kind, region, at, blocks, problems) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (kind, region) DO UPDATE SET at = ?3, blocks = ?4, problems = ?5",
                    params![r.kind, r.region, r.at.0, r.blocks as i64, r.problems as i64],
                )
                .map(|_| ())
                .map_err(db_err)
            })
            .await
    }

    async fn maintenance_reports(&self) -> Result<Vec<MaintenanceReport>> {
        self.readers
            .run(|conn| {
                let mut st = conn
                    .prepare("SELECT kind, region, at, blocks, problems FROM maintenance_reports ORDER BY kind, region")
                    .map_err(db_err)?;
                let rows = st
                    .query_map([], |r| {
                        Ok(MaintenanceReport {
                            kind: r.get(0)?,
                            region: r.get(1)?,
                            at: Timestamp(r.get(2)?),
                            blocks: r.get::<_, i64>(3)?.unsigned_abs(),
                            problems: r.get::<_, i64>(4)?.unsigned_abs(),
                        })
                    })
                    .map_err(db_err)?;
                rows.map(|r| r.map_err(db_err)).collect()
            })
            .await
    }
}
