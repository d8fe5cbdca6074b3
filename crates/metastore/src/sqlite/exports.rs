//! SQLite records of exported files: `ExportStore`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::{db_err, SqliteStore};
use crate::{account_from_column, ExportStore, ExportedFile, MetaStoreError, Result};
use imaged_domain::time::Timestamp;
use imaged_domain::ImageId;

#[async_trait]
impl ExportStore for SqliteStore {
    async fn record_export(&self, file: &ExportedFile) -> Result<()> {
        let f = file.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO exported_files (bucket, name, account_id, image_id, job_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (bucket, name) DO UPDATE SET account_id = ?3, image_id = ?4, job_id = ?5,
                       created_at = ?6",
                    params![f.bucket, f.name, f.account.0 as i64, f.image.as_str(), f.job as i64, f.created_at.0],
                )
                .map(|_| ())
                .map_err(db_err)
            })
            .await
    }

    async fn exported_file(&self, bucket: &str, name: &str) -> Result<Option<ExportedFile>> {
        let (bucket, name) = (bucket.to_owned(), name.to_owned());
        self.readers
            .run(move |conn| {
                let row: Option<(i64, String, i64, i64)> = conn
                    .query_row(
                        "SELECT account_id, image_id, job_id, created_at FROM exported_files
                         WHERE bucket = ?1 AND name = ?2",
                        params![bucket, name],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()
                    .map_err(db_err)?;
                row.map(|(account, image, job, created)| {
                    Ok(ExportedFile {
                        bucket: bucket.clone(),
                        name: name.clone(),
                        account: account_from_column(account),
                        image: ImageId::parse(&image).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?,
                        job: job.unsigned_abs(),
                        created_at: Timestamp(created),
                    })
                })
                .transpose()
            })
            .await
    }
}
