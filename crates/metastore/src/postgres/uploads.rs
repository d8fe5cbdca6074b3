//! PostgreSQL uploads in progress: `UploadStore`.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{db_err, PostgresStore};
use crate::uploads::{nonce_from_column, UploadRecord, UploadStore};
use crate::{account_from_column, Refused, Result};
use imaged_domain::time::Timestamp;
use imaged_domain::AccountId;

const COLUMNS: &str = "id, account_id, region, nonce, size, manifest, expires_at";

fn record(r: &Row) -> Result<UploadRecord> {
    Ok(UploadRecord {
        id: r.get(0),
        owner: account_from_column(r.get(1)),
        region: r.get(2),
        nonce: nonce_from_column(r.get::<_, &[u8]>(3))?,
        size: r.get::<_, i64>(4).unsigned_abs(),
        manifest: r.get(5),
        expires_at: Timestamp(r.get(6)),
    })
}

#[async_trait]
impl UploadStore for PostgresStore {
    async fn insert_upload(&self, u: &UploadRecord, max_live: u32, now: Timestamp) -> Result<Result<(), Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let owner = u.owner.0 as i64;
        // Creations by one owner take turns, so the count sees every committed upload.
        tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&owner]).await.map_err(db_err)?;
        let live: i64 = tx
            .query_one("SELECT COUNT(*) FROM uploads WHERE account_id = $1 AND expires_at >= $2", &[&owner, &now.0])
            .await
            .map_err(db_err)?
            .get(0);
        if live >= i64::from(max_live) {
            return Ok(Err(Refused::QuotaExceeded));
        }
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO uploads ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING"
                ),
                &[&u.id, &owner, &u.region, &u.nonce.as_slice(), &(u.size as i64), &u.manifest, &u.expires_at.0],
            )
            .await
            .map_err(db_err)?;
        if inserted == 0 {
            return Ok(Err(Refused::DuplicateId));
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(&format!("SELECT {COLUMNS} FROM uploads WHERE id = $1"), &[&id])
            .await
            .map_err(db_err)?
            .map(|r| record(&r))
            .transpose()
    }

    async fn save_upload(
        &self,
        id: &str,
        expected_size: u64,
        manifest: &[u8],
        size: u64,
        expires_at: Timestamp,
    ) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute(
            "UPDATE uploads SET manifest = $3, size = $4, expires_at = $5 WHERE id = $1 AND size = $2",
            &[&id, &(expected_size as i64), &manifest, &(size as i64), &expires_at.0],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
    }

    async fn live_upload_sizes(&self, owner: AccountId, now: Timestamp) -> Result<Vec<u64>> {
        let conn = self.conn().await?;
        let rows = conn
            .query("SELECT size FROM uploads WHERE account_id = $1 AND expires_at >= $2", &[&(owner.0 as i64), &now.0])
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0).unsigned_abs()).collect())
    }

    async fn list_uploads(&self) -> Result<Vec<UploadRecord>> {
        let conn = self.conn().await?;
        let rows = conn.query(&format!("SELECT {COLUMNS} FROM uploads ORDER BY id"), &[]).await.map_err(db_err)?;
        rows.iter().map(record).collect()
    }

    async fn delete_upload(&self, id: &str) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM uploads WHERE id = $1", &[&id]).await.map(|n| n == 1).map_err(db_err)
    }
}
