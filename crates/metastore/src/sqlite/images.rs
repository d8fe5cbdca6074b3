//! SQLite images and their shares: `ImageStore`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{check_custom_insert, check_fence, db_err, detach_manifest_tx, insert_job_row, put_image, SqliteStore};
use crate::{
    account_from_column, decode_image, encode_image, owner_column, ImageStore, JobFence, JobRecord, Refused, Result,
    VisibleImage,
};
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId, ImageState};

/// Image states whose work would be lost if the image were deleted underneath it (an import
/// is cancelled by deleting its image instead).
const BUSY_STATES: &[&str] = &["CREATING", "SYNCING"];

#[async_trait]
impl ImageStore for SqliteStore {
    async fn put_images(&self, images: &[Image]) -> Result<()> {
        self.put_all(images, put_image).await
    }

    async fn insert_custom_image(&self, image: &Image, quota: u32) -> Result<Result<(), Refused>> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                if let Err(refused) = check_custom_insert(&tx, &image, quota)? {
                    return Ok(Err(refused));
                }
                put_image(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn get_image(&self, id: &ImageId) -> Result<Option<Image>> {
        self.doc_by_id("SELECT doc FROM images WHERE id = ?1", id.as_str()).await?.map(|d| decode_image(&d)).transpose()
    }

    async fn visible_images(&self, caller: AccountId, region: &str) -> Result<Vec<VisibleImage>> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT doc, 0 FROM images WHERE owner_id IS NULL
                         UNION ALL
                         SELECT doc, 0 FROM images WHERE owner_id = ?1 AND region = ?2
                         UNION ALL
                         SELECT i.doc, 1 FROM image_shares s JOIN images i ON i.id = s.image_id
                           WHERE s.account_id = ?1 AND i.region = ?2",
                    )
                    .map_err(db_err)?;
                let rows = st
                    .query_map(params![caller.0 as i64, region], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
                    .map_err(db_err)?;
                rows.map(|r| {
                    let (doc, shared) = r.map_err(db_err)?;
                    Ok(VisibleImage { image: decode_image(&doc)?, shared_with_caller: shared })
                })
                .collect()
            })
            .await
    }

    async fn count_custom_images(&self, owner: AccountId, region: &str) -> Result<u64> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM images WHERE owner_id = ?1 AND region = ?2",
                    params![owner.0 as i64, region],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n.unsigned_abs())
                .map_err(db_err)
            })
            .await
    }

    async fn add_share(&self, image: &ImageId, account: AccountId, now: Timestamp) -> Result<bool> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO image_shares (image_id, account_id, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    params![image.as_str(), account.0 as i64, now.0],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn update_image_if_state(
        &self,
        image: &Image,
        expected: ImageState,
        fence: Option<&JobFence>,
    ) -> Result<bool> {
        let (image, fence) = (image.clone(), fence.cloned());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                check_fence(&tx, fence.as_ref())?;
                let n = tx
                    .execute(
                        "UPDATE images SET state = ?2, doc = ?3 WHERE id = ?1 AND state = ?4",
                        params![image.id.as_str(), image.state.as_str(), encode_image(&image)?, expected.as_str()],
                    )
                    .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(n == 1)
            })
            .await
    }

    async fn share_image(
        &self,
        image: &ImageId,
        account: AccountId,
        limit: u32,
        now: Timestamp,
    ) -> Result<Result<(), Refused>> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let (count, already): (i64, bool) = tx
                    .query_row(
                        "SELECT COUNT(*), COALESCE(SUM(account_id = ?2), 0) > 0 FROM image_shares WHERE image_id = ?1",
                        params![image.as_str(), account.0 as i64],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(db_err)?;
                if already {
                    return Ok(Err(Refused::AlreadyShared));
                }
                if count >= i64::from(limit) {
                    return Ok(Err(Refused::ShareLimit));
                }
                tx.execute(
                    "INSERT INTO image_shares (image_id, account_id, created_at) VALUES (?1, ?2, ?3)",
                    params![image.as_str(), account.0 as i64, now.0],
                )
                .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn unshare_image(&self, image: &ImageId, account: AccountId) -> Result<bool> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "DELETE FROM image_shares WHERE image_id = ?1 AND account_id = ?2",
                    params![image.as_str(), account.0 as i64],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn begin_sync(
        &self,
        source: &Image,
        copies: &[Image],
        quota: u32,
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>> {
        let (source, copies, job) = (source.clone(), copies.to_vec(), job.clone());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let moved = tx
                    .execute(
                        "UPDATE images SET state = ?2, doc = ?3 WHERE id = ?1 AND state = 'NORMAL'",
                        params![source.id.as_str(), source.state.as_str(), encode_image(&source)?],
                    )
                    .map_err(db_err)?;
                if moved != 1 {
                    return Ok(Err(Refused::WrongState));
                }
                for copy in &copies {
                    if let Err(refused) = check_custom_insert(&tx, copy, quota)? {
                        return Ok(Err(refused));
                    }
                    put_image(&tx, copy)?;
                }
                let id = insert_job_row(&tx, &job)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(id))
            })
            .await
    }

    async fn image_shares(&self, image: &ImageId) -> Result<Vec<(AccountId, Timestamp)>> {
        let image = image.clone();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT account_id, created_at FROM image_shares WHERE image_id = ?1
                         ORDER BY created_at, account_id",
                    )
                    .map_err(db_err)?;
                let rows = st
                    .query_map(params![image.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                    .map_err(db_err)?;
                rows.map(|r| r.map(|(a, t)| (account_from_column(a), Timestamp(t))).map_err(db_err)).collect()
            })
            .await
    }

    async fn update_custom_image(&self, image: &Image) -> Result<Result<(), Refused>> {
        let image = image.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let taken: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM images WHERE owner_id = ?1 AND region = ?2 AND name = ?3
                           AND id <> ?4)",
                        params![owner_column(&image), image.region, image.name, image.id.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                if taken {
                    return Ok(Err(Refused::DuplicateName));
                }
                put_image(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(()))
            })
            .await
    }

    async fn delete_image(&self, id: &ImageId, now: Timestamp) -> Result<Result<bool, Refused>> {
        let id = id.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let shared: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM image_shares WHERE image_id = ?1)",
                        params![id.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                if shared {
                    return Ok(Err(Refused::InShared));
                }
                let state: Option<String> = tx
                    .query_row("SELECT state FROM images WHERE id = ?1", params![id.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                if state.as_deref().is_some_and(|s| BUSY_STATES.contains(&s)) {
                    return Ok(Err(Refused::WrongState));
                }
                detach_manifest_tx(&tx, &id)?;
                super::market::close_segments(&tx, id.as_str(), now)?;
                let deleted = tx.execute("DELETE FROM images WHERE id = ?1", params![id.as_str()]).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(Ok(deleted == 1))
            })
            .await
    }

    async fn image_bytes(&self, owner: AccountId) -> Result<u64> {
        self.readers
            .run(move |conn| {
                conn.prepare_cached(
                    "SELECT COALESCE(SUM(m.virtual_size), 0) FROM images i JOIN image_manifests m ON m.image_id = i.id
                     WHERE i.owner_id = ?1",
                )
                .and_then(|mut st| st.query_row(params![owner.0 as i64], |r| r.get::<_, i64>(0)))
                .map(i64::unsigned_abs)
                .map_err(db_err)
            })
            .await
    }
}
