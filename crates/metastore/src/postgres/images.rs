//! PostgreSQL images and their shares: `ImageStore`.

use async_trait::async_trait;

use super::{check_custom_insert, check_fence, db_err, detach_manifest_tx, insert_job_row, put_image, PostgresStore};
use crate::{
    account_from_column, decode_image, encode_image, owner_column, ImageStore, JobFence, JobRecord, MetaStoreError,
    Refused, Result, VisibleImage,
};
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId, ImageState};

#[async_trait]
impl ImageStore for PostgresStore {
    async fn put_images(&self, images: &[Image]) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        for image in images {
            put_image(&tx, image).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn insert_custom_image(&self, image: &Image, quota: u32) -> Result<Result<(), Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        if let Err(refused) = check_custom_insert(&tx, image, quota).await? {
            return Ok(Err(refused));
        }
        put_image(&tx, image).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }

    async fn get_image(&self, id: &ImageId) -> Result<Option<Image>> {
        let conn = self.conn().await?;
        conn.query_opt("SELECT doc FROM images WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(db_err)?
            .map(|r| decode_image(r.get(0)))
            .transpose()
    }

    async fn visible_images(&self, caller: AccountId, region: &str) -> Result<Vec<VisibleImage>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT doc, false FROM images WHERE owner_id IS NULL
                 UNION ALL
                 SELECT doc, false FROM images WHERE owner_id = $1 AND region = $2
                 UNION ALL
                 SELECT i.doc, true FROM image_shares s JOIN images i ON i.id = s.image_id
                   WHERE s.account_id = $1 AND i.region = $2",
                &[&(caller.0 as i64), &region],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| Ok(VisibleImage { image: decode_image(r.get(0))?, shared_with_caller: r.get(1) })).collect()
    }

    async fn count_custom_images(&self, owner: AccountId, region: &str) -> Result<u64> {
        let conn = self.conn().await?;
        let n: i64 = conn
            .query_one("SELECT COUNT(*) FROM images WHERE owner_id = $1 AND region = $2", &[&(owner.0 as i64), &region])
            .await
            .map_err(db_err)?
            .get(0);
        Ok(n.unsigned_abs())
    }

    async fn add_share(&self, image: &ImageId, account: AccountId, now: Timestamp) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO image_shares (image_id, account_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&image.as_str(), &(account.0 as i64), &now.0],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
    }

    async fn update_image_if_state(
        &self,
        image: &Image,
        expected: ImageState,
        fence: Option<&JobFence>,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let doc = encode_image(image)?;
        let tx = conn.transaction().await.map_err(db_err)?;
        check_fence(&tx, fence).await?;
        let n = tx
            .execute(
                "UPDATE images SET state = $2, doc = $3 WHERE id = $1 AND state = $4",
                &[&image.id.as_str(), &image.state.as_str(), &doc, &expected.as_str()],
            )
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }

    async fn share_image(
        &self,
        image: &ImageId,
        account: AccountId,
        limit: u32,
        now: Timestamp,
    ) -> Result<Result<(), Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        // The image's row lock serialises shares of one image, so the count cannot race.
        tx.execute("SELECT 1 FROM images WHERE id = $1 FOR UPDATE", &[&image.as_str()]).await.map_err(db_err)?;
        let row = tx
            .query_one(
                "SELECT COUNT(*), COALESCE(BOOL_OR(account_id = $2), false) FROM image_shares WHERE image_id = $1",
                &[&image.as_str(), &(account.0 as i64)],
            )
            .await
            .map_err(db_err)?;
        let (count, already): (i64, bool) = (row.get(0), row.get(1));
        if already {
            return Ok(Err(Refused::AlreadyShared));
        }
        if count >= i64::from(limit) {
            return Ok(Err(Refused::ShareLimit));
        }
        tx.execute(
            "INSERT INTO image_shares (image_id, account_id, created_at) VALUES ($1, $2, $3)",
            &[&image.as_str(), &(account.0 as i64), &now.0],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }

    async fn unshare_image(&self, image: &ImageId, account: AccountId) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM image_shares WHERE image_id = $1 AND account_id = $2",
            &[&image.as_str(), &(account.0 as i64)],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
    }

    async fn begin_sync(
        &self,
        source: &Image,
        copies: &[Image],
        quota: u32,
        job: &JobRecord,
    ) -> Result<Result<u64, Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let doc = encode_image(source)?;
        let moved = tx
            .execute(
                "UPDATE images SET state = $2, doc = $3 WHERE id = $1 AND state = 'NORMAL'",
                &[&source.id.as_str(), &source.state.as_str(), &doc],
            )
            .await
            .map_err(db_err)?;
        if moved != 1 {
            return Ok(Err(Refused::WrongState));
        }
        for copy in copies {
            if let Err(refused) = check_custom_insert(&tx, copy, quota).await? {
                return Ok(Err(refused));
            }
            put_image(&tx, copy).await?;
        }
        let id = insert_job_row(&tx, job).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(id))
    }

    async fn image_shares(&self, image: &ImageId) -> Result<Vec<(AccountId, Timestamp)>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT account_id, created_at FROM image_shares WHERE image_id = $1 ORDER BY created_at, account_id",
                &[&image.as_str()],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| (account_from_column(r.get(0)), Timestamp(r.get(1)))).collect())
    }

    async fn update_custom_image(&self, image: &Image) -> Result<Result<(), Refused>> {
        let Some(owner) = owner_column(image) else {
            return Err(MetaStoreError::Backend("a custom image needs an owner".into()));
        };
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&owner]).await.map_err(db_err)?;
        let taken: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM images WHERE owner_id = $1 AND region = $2 AND name = $3 AND id <> $4)",
                &[&owner, &image.region, &image.name, &image.id.as_str()],
            )
            .await
            .map_err(db_err)?
            .get(0);
        if taken {
            return Ok(Err(Refused::DuplicateName));
        }
        put_image(&tx, image).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(()))
    }

    async fn delete_image(&self, id: &ImageId, now: Timestamp) -> Result<Result<bool, Refused>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let exists =
            tx.query_opt("SELECT 1 FROM images WHERE id = $1 FOR UPDATE", &[&id.as_str()]).await.map_err(db_err)?;
        if exists.is_none() {
            return Ok(Ok(false));
        }
        let shared: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM image_shares WHERE image_id = $1)", &[&id.as_str()])
            .await
            .map_err(db_err)?
            .get(0);
        if shared {
            return Ok(Err(Refused::InShared));
        }
        let state: String =
            tx.query_one("SELECT state FROM images WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?.get(0);
        if ["CREATING", "SYNCING"].contains(&state.as_str()) {
            return Ok(Err(Refused::WrongState));
        }
        detach_manifest_tx(&tx, id).await?;
        super::market::close_segments(&tx, id.as_str(), now).await?;
        tx.execute("DELETE FROM images WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Ok(true))
    }

    async fn image_bytes(&self, owner: AccountId) -> Result<u64> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT COALESCE(SUM(m.virtual_size), 0)::BIGINT FROM images i
                 JOIN image_manifests m ON m.image_id = i.id WHERE i.owner_id = $1",
                &[&(owner.0 as i64)],
            )
            .await
            .map_err(db_err)?;
        Ok(row.get::<_, i64>(0).unsigned_abs())
    }
}
