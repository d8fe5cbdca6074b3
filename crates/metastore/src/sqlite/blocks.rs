//! SQLite block references and image manifests: `BlockRefStore`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{
    check_fence, db_err, detach_manifest_tx, manifest_row, put_image, to_manifest, SqliteStore, MANIFEST_COLUMNS,
};
use crate::{BlockRefStore, JobFence, ManifestRecord, MetaStoreError, Result};
use imaged_domain::time::Timestamp;
use imaged_domain::{Image, ImageId};

#[async_trait]
impl BlockRefStore for SqliteStore {
    async fn touch_blocks(&self, region: &str, blocks: &[(String, u64)], now: Timestamp) -> Result<()> {
        let region = region.to_owned();
        let blocks = blocks.to_vec();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                {
                    let mut st = tx
                        .prepare_cached(
                            "INSERT INTO blocks (region, digest, refs, stored_size, touched_at) VALUES (?1, ?2, 0, ?3, ?4)
                             ON CONFLICT (region, digest) DO UPDATE SET touched_at = excluded.touched_at,
                               stored_size = MAX(stored_size, excluded.stored_size)",
                        )
                        .map_err(db_err)?;
                    for (digest, size) in &blocks {
                        st.execute(params![region, digest, *size as i64, now.0]).map_err(db_err)?;
                    }
                }
                tx.commit().map_err(db_err)
            })
            .await
    }

    async fn attach_manifest(&self, image: &Image, manifest: &ManifestRecord) -> Result<Vec<String>> {
        let image = image.clone();
        let m = manifest.clone();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                if image.owner.is_some() {
                    let exists = tx
                        .query_row("SELECT 1 FROM images WHERE id = ?1", params![image.id.as_str()], |_| Ok(()))
                        .optional()
                        .map_err(db_err)?;
                    if exists.is_none() {
                        return Err(MetaStoreError::Deleted(format!("image {}", image.id)));
                    }
                }
                let blocks = serde_json::to_string(&m.blocks).map_err(|e| MetaStoreError::Corrupt(e.to_string()))?;
                tx.execute(
                    &format!("INSERT INTO image_manifests ({MANIFEST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![m.image.as_str(), m.region, m.manifest, blocks, m.source_format, m.virtual_size as i64],
                )
                .map_err(db_err)?;
                let mut fresh = Vec::new();
                {
                    let mut st = tx
                        .prepare_cached(
                            "INSERT INTO blocks (region, digest, refs, stored_size, touched_at)
                             VALUES (?1, ?2, 1, 0, strftime('%s','now'))
                             ON CONFLICT (region, digest) DO UPDATE SET refs = refs + 1
                             RETURNING refs",
                        )
                        .map_err(db_err)?;
                    for digest in &m.blocks {
                        let refs: i64 = st.query_row(params![m.region, digest], |r| r.get(0)).map_err(db_err)?;
                        if refs <= 1 {
                            fresh.push(digest.clone());
                        }
                    }
                }
                put_image(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(fresh)
            })
            .await
    }

    async fn get_manifest(&self, image: &ImageId) -> Result<Option<ManifestRecord>> {
        let image = image.clone();
        self.readers
            .run(move |conn| {
                conn.prepare_cached(&format!("SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE image_id = ?1"))
                    .and_then(|mut st| st.query_row(params![image.as_str()], manifest_row).optional())
                    .map_err(db_err)?
                    .map(to_manifest)
                    .transpose()
            })
            .await
    }

    async fn region_manifests(&self, region: &str) -> Result<Vec<ManifestRecord>> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare(&format!(
                        "SELECT {MANIFEST_COLUMNS} FROM image_manifests WHERE region = ?1 ORDER BY image_id"
                    ))
                    .map_err(db_err)?;
                let rows = st.query_map(params![region], manifest_row).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(to_manifest)).collect()
            })
            .await
    }

    async fn detach_manifest(&self, image: &ImageId, fence: Option<&JobFence>) -> Result<bool> {
        let (image, fence) = (image.clone(), fence.cloned());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                check_fence(&tx, fence.as_ref())?;
                let detached = detach_manifest_tx(&tx, &image)?;
                tx.commit().map_err(db_err)?;
                Ok(detached)
            })
            .await
    }

    async fn collect_unreferenced(&self, region: &str, cutoff: Timestamp) -> Result<Vec<String>> {
        let region = region.to_owned();
        self.writer
            .run(move |conn| {
                let mut st = conn
                    .prepare("DELETE FROM blocks WHERE region = ?1 AND refs <= 0 AND touched_at < ?2 RETURNING digest")
                    .map_err(db_err)?;
                let rows = st.query_map(params![region, cutoff.0], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err)).collect()
            })
            .await
    }

    async fn block_refs(&self, region: &str, digest: &str) -> Result<u64> {
        let (region, digest) = (region.to_owned(), digest.to_owned());
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT COALESCE((SELECT refs FROM blocks WHERE region = ?1 AND digest = ?2), 0)",
                    params![region, digest],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n.max(0).unsigned_abs())
                .map_err(db_err)
            })
            .await
    }

    async fn block_totals(&self, region: &str) -> Result<(u64, u64)> {
        let region = region.to_owned();
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(stored_size), 0) FROM blocks WHERE region = ?1",
                    params![region],
                    |r| Ok((r.get::<_, i64>(0)?.unsigned_abs(), r.get::<_, i64>(1)?.unsigned_abs())),
                )
                .map_err(db_err)
            })
            .await
    }
}
