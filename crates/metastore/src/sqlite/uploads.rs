//! SQLite uploads in progress: `UploadStore`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{db_err, SqliteStore};
use crate::uploads::{nonce_from_column, UploadRecord, UploadStore};
use crate::{account_from_column, Refused, Result};
use imaged_domain::time::Timestamp;
use imaged_domain::AccountId;

const COLUMNS: &str = "id, account_id, region, nonce, size, manifest, expires_at";

/// An `uploads` row as read: id, account, region, nonce, size, manifest, expiry.
type UploadRow = (String, i64, String, Vec<u8>, i64, Vec<u8>, i64);

fn to_upload(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

fn record(row: UploadRow) -> Result<UploadRecord> {
    let (id, account, region, nonce, size, manifest, expires) = row;
    Ok(UploadRecord {
        id,
        owner: account_from_column(account),
        region,
        nonce: nonce_from_column(&nonce)?,
        size: size.unsigned_abs(),
        manifest,
        expires_at: Timestamp(expires),
    })
}

#[async_trait]
impl UploadStore for SqliteStore {
    async fn insert_upload(&self, upload: &UploadRecord, max_live: u32, now: Timestamp) -> Result<Result<(), Refused>> {
        let u = upload.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let live: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM uploads WHERE account_id = ?1 AND expires_at >= ?2",
                        params![u.owner.0 as i64, now.0],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                if live >= i64::from(max_live) {
                    return Ok(Err(Refused::QuotaExceeded));
                }
                let inserted = tx
                    .execute(
                        &format!("INSERT OR IGNORE INTO uploads ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                        params![
                            u.id,
                            u.owner.0 as i64,
                            u.region,
                            u.nonce.to_vec(),
                            u.size as i64,
                            u.manifest,
                            u.expires_at.0
                        ],
                    )
                    .map_err(db_err)?;
                if inserted == 0 {
                    return Ok(Err(Refused::DuplicateId));
                }
                tx.commit().map_err(db_err)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        let id = id.to_owned();
        self.readers
            .run(move |conn| {
                conn.query_row(&format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1"), params![id], to_upload)
                    .optional()
                    .map_err(db_err)?
                    .map(record)
                    .transpose()
            })
            .await
    }

    async fn save_upload(
        &self,
        id: &str,
        expected_size: u64,
        manifest: &[u8],
        size: u64,
        expires_at: Timestamp,
    ) -> Result<bool> {
        let (id, manifest) = (id.to_owned(), manifest.to_vec());
        self.writer
            .run(move |conn| {
                conn.execute(
                    "UPDATE uploads SET manifest = ?3, size = ?4, expires_at = ?5 WHERE id = ?1 AND size = ?2",
                    params![id, expected_size as i64, manifest, size as i64, expires_at.0],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn live_upload_sizes(&self, owner: AccountId, now: Timestamp) -> Result<Vec<u64>> {
        self.readers
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT size FROM uploads WHERE account_id = ?1 AND expires_at >= ?2")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(params![owner.0 as i64, now.0], |r| r.get::<_, i64>(0))
                    .map_err(db_err)?
                    .map(|r| r.map(i64::unsigned_abs).map_err(db_err))
                    .collect();
                rows
            })
            .await
    }

    async fn list_uploads(&self) -> Result<Vec<UploadRecord>> {
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM uploads ORDER BY id")).map_err(db_err)?;
                let rows: Vec<_> =
                    stmt.query_map([], to_upload).map_err(db_err)?.collect::<rusqlite::Result<_>>().map_err(db_err)?;
                rows.into_iter().map(record).collect()
            })
            .await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.writer
            .run(move |conn| {
                conn.execute("DELETE FROM uploads WHERE id = ?1", params![id]).map(|n| n == 1).map_err(db_err)
            })
            .await
    }
}
