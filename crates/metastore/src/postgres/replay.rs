//! PostgreSQL records of used signatures: `ReplayStore`, shared by every server on the database.

use async_trait::async_trait;

use super::{db_err, PostgresStore};
use crate::{ReplayStore, Result};
use imaged_domain::time::Timestamp;

#[async_trait]
impl ReplayStore for PostgresStore {
    async fn remember_signature(
        &self,
        signature: &str,
        fingerprint: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<Option<String>> {
        let conn = self.conn().await?;
        let recorded = conn
            .execute(
                "INSERT INTO seen_signatures (signature, fingerprint, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (signature) DO UPDATE SET fingerprint = excluded.fingerprint,
                   expires_at = excluded.expires_at
                 WHERE seen_signatures.expires_at < $4",
                &[&signature, &fingerprint, &expires_at.0, &now.0],
            )
            .await
            .map_err(db_err)?;
        if recorded == 1 {
            return Ok(None);
        }
        let row = conn
            .query_opt("SELECT fingerprint FROM seen_signatures WHERE signature = $1", &[&signature])
            .await
            .map_err(db_err)?;
        Ok(Some(row.map(|r| r.get(0)).unwrap_or_default()))
    }

    async fn forget_signatures(&self, now: Timestamp) -> Result<u64> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM seen_signatures WHERE expires_at < $1", &[&now.0]).await.map_err(db_err)
    }
}
