//! PostgreSQL records of exported files: `ExportStore`.

use async_trait::async_trait;

use super::{db_err, PostgresStore};
use crate::{account_from_column, ExportStore, ExportedFile, MetaStoreError, Result};
use imaged_domain::time::Timestamp;
use imaged_domain::ImageId;

#[async_trait]
impl ExportStore for PostgresStore {
    async fn record_export(&self, f: &ExportedFile) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO exported_files (bucket, name, account_id, image_id, job_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (bucket, name) DO UPDATE SET account_id = $3, image_id = $4, job_id = $5, created_at = $6",
            &[&f.bucket, &f.name, &(f.account.0 as i64), &f.image.as_str(), &(f.job as i64), &f.created_at.0],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn exported_file(&self, bucket: &str, name: &str) -> Result<Option<ExportedFile>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT account_id, image_id, job_id, created_at FROM exported_files WHERE bucket = $1 AND name = $2",
                &[&bucket, &name],
            )
            .await
            .map_err(db_err)?;
        row.map(|r| {
            let (account, image, job, created): (i64, String, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
            Ok(ExportedFile {
                bucket: bucket.to_owned(),
                name: name.to_owned(),
                account: account_from_column(account),
                image: ImageId::parse(&image).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?,
                job: job.unsigned_abs(),
                created_at: Timestamp(created),
            })
        })
        .transpose()
    }
}
