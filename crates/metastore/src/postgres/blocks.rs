//! PostgreSQL block references and image manifests: `BlockRefStore`.

use async_trait::async_trait;

use super::{check_fence, db_err, detach_manifest_tx, put_image, to_manifest, PostgresStore, MANIFEST_COLUMNS};
use crate::{BlockRefStore, JobFence, ManifestRecord, MetaStoreError, Result};
use imaged_domain::time::Timestamp;
use imaged_domain::{Image, ImageId};

#[async_trait]
impl BlockRefStore for PostgresStore {
    async fn touch_blocks(&self, region: &str, blocks: &[(String, u64)], now: Timestamp) -> Result<()> {
        // One row per digest: an upsert may not touch a row twice in one statement, and a disk
        // often repeats a block.
        let mut distinct: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for (d, size) in blocks {
            let e = distinct.entry(d.as_str()).or_insert(0);
            *e = (*e).max(*size as i64);
        }
        let digests: Vec<&str> = distinct.keys().copied().collect();
        let sizes: Vec<i64> = distinct.values().copied().collect();
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO blocks (region, digest, refs, stored_size, touched_at)
             SELECT $1, d, 0, s, $4 FROM UNNEST($2::TEXT[], $3::BIGINT[]) AS t(d, s)
             ON CONFLICT (region, digest) DO UPDATE SET touched_at = excluded.touched_at,
               stored_size = GREATEST(blocks.stored_size, excluded.stored_size)",
            &[&region, &digests, &sizes, &now.0],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn attach_manifest(&self, image: &Image, m: &ManifestRecord) -> Result<Vec<String>> {
        let blocks = serde_json::to_string(&m.blocks).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        if image.owner.is_some() {
            let exists = tx
                .query_opt("SELECT 1 FROM images WHERE id = $1 FOR UPDATE", &[&image.id.as_str()])
                .await
                .map_err(db_err)?;
            if exists.is_none() {
                return Err(MetaStoreError::Deleted(format!("image {}", image.id)));
            }
        }
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO image_manifests ({MANIFEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (image_id) DO NOTHING"
                ),
                &[&m.image.as_str(), &m.region, &m.manifest, &blocks, &m.source_format, &(m.virtual_size as i64)],
            )
            .await
            .map_err(db_err)?;
        if inserted == 0 {
            // Another server attached this image's manifest first (two servers bootstrapping
            // the catalogue at once): it stands, and no reference is added twice.
            return Ok(Vec::new());
        }
        let rows = tx
            .query(
                "INSERT INTO blocks (region, digest, refs, stored_size, touched_at)
                 SELECT $1, d, 1, 0, EXTRACT(EPOCH FROM now())::BIGINT FROM UNNEST($2::TEXT[]) AS t(d)
                 ON CONFLICT (region, digest) DO UPDATE SET refs = blocks.refs + 1
                 RETURNING digest, refs",
                &[&m.region, &m.blocks],
            )
            .await
            .map_err(db_err)?;
        put_image(&tx, image).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(rows.iter().filter(|r| r.get::<_, i64>(1) <= 1).map(|r| r.get(0)).collect())
    }

    async fn get_manifest(&self, image: &ImageId) -> Result<Option<ManifestRecord>> {
        let conn = self.conn().await?;
        conn.query_opt(
            &format!("SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE image_id = $1"),
            &[&image.as_str()],
        )
        .await
        .map_err(db_err)?
        .map(|r| to_manifest(&r))
        .transpose()
    }

    async fn region_manifests(&self, region: &str) -> Result<Vec<ManifestRecord>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                &format!("SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE region = $1 ORDER BY image_id"),
                &[&region],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(to_manifest).collect()
    }

    async fn detach_manifest(&self, image: &ImageId, fence: Option<&JobFence>) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        check_fence(&tx, fence).await?;
        let detached = detach_manifest_tx(&tx, image).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(detached)
    }

    async fn collect_unreferenced(&self, region: &str, cutoff: Timestamp) -> Result<Vec<String>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "DELETE FROM blocks WHERE region = $1 AND refs <= 0 AND touched_at < $2 RETURNING digest",
                &[&region, &cutoff.0],
            )
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn block_refs(&self, region: &str, digest: &str) -> Result<u64> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT refs FROM blocks WHERE region = $1 AND digest = $2", &[&region, &digest])
            .await
            .map_err(db_err)?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0).unsigned_abs()))
    }

    async fn block_totals(&self, region: &str) -> Result<(u64, u64)> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(stored_size), 0)::BIGINT FROM blocks WHERE region = $1",
                &[&region],
            )
            .await
            .map_err(db_err)?;
        Ok((row.get::<_, i64>(0).unsigned_abs(), row.get::<_, i64>(1).unsigned_abs()))
    }
}
