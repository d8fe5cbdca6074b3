//! SQLite marketplace records and usage segments: `MarketStore`, `MeterStore`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::instances::put_instance;
use super::{check_fence, db_err, put_image, SqliteStore};
use crate::tke::{decode, encode};
use crate::{encode_image, JobFence, MarketStore, MeterStore, Result};
use imaged_domain::instance::Instance;
use imaged_domain::market::{Listing, ListingId};
use imaged_domain::metering::Segment;
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageState, InstanceId};

#[async_trait]
impl MarketStore for SqliteStore {
    async fn add_provider(&self, account: AccountId, name: &str, now: Timestamp) -> Result<bool> {
        let name = name.to_owned();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO market_providers (account_id, name, added_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    params![account.0 as i64, name, now.0],
                )
                .map(|n| n == 1)
                .map_err(db_err)
            })
            .await
    }

    async fn provider_name(&self, account: AccountId) -> Result<Option<String>> {
        self.readers
            .run(move |conn| {
                conn.query_row(
                    "SELECT name FROM market_providers WHERE account_id = ?1",
                    params![account.0 as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)
            })
            .await
    }

    async fn insert_listing(&self, listing: &Listing) -> Result<()> {
        let l = listing.clone();
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO market_listings (id, provider_id, created_at, doc) VALUES (?1, ?2, ?3, ?4)",
                    params![l.id.as_str(), l.provider.0 as i64, l.created_at.0, encode(&l)?],
                )
                .map(|_| ())
                .map_err(db_err)
            })
            .await
    }

    async fn get_listing(&self, id: &ListingId) -> Result<Option<Listing>> {
        let doc = self.doc_by_id("SELECT doc FROM market_listings WHERE id = ?1", id.as_str()).await?;
        doc.map(|d| decode("listing", &d)).transpose()
    }

    async fn list_listings(&self, provider: Option<AccountId>) -> Result<Vec<Listing>> {
        let provider = provider.map(|a| a.0 as i64);
        self.readers
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT doc FROM market_listings WHERE ?1 IS NULL OR provider_id = ?1 ORDER BY created_at, id",
                    )
                    .map_err(db_err)?;
                let rows = st.query_map(params![provider], |r| r.get::<_, String>(0)).map_err(db_err)?;
                rows.map(|r| decode("listing", &r.map_err(db_err)?)).collect()
            })
            .await
    }

    async fn update_listing(&self, listing: &Listing, expected: &Listing, images: &[Image]) -> Result<bool> {
        let (l, expected, images) = (listing.clone(), expected.clone(), images.to_vec());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let doc: Option<String> = tx
                    .query_row("SELECT doc FROM market_listings WHERE id = ?1", params![l.id.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                let current: Option<Listing> = doc.map(|d| decode("listing", &d)).transpose()?;
                if current.as_ref() != Some(&expected) {
                    return Ok(false);
                }
                tx.execute("UPDATE market_listings SET doc = ?2 WHERE id = ?1", params![l.id.as_str(), encode(&l)?])
                    .map_err(db_err)?;
                for image in &images {
                    put_image(&tx, image)?;
                }
                tx.commit().map_err(db_err)?;
                Ok(true)
            })
            .await
    }
}

fn insert_segment(tx: &rusqlite::Connection, s: &Segment) -> Result<()> {
    tx.execute(
        "INSERT INTO meter_segments (account_id, provider_id, instance_id, started_at, ended_at, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            s.account.0 as i64,
            s.provider.map(|p| p.0 as i64),
            s.resource,
            s.started_at.0,
            s.ended_at.map(|t| t.0),
            encode(s)?
        ],
    )
    .map(|_| ())
    .map_err(db_err)
}

/// Closes the open segments of a resource (an instance, an image) at `at`.
pub(super) fn close_segments(tx: &rusqlite::Connection, resource: &str, at: Timestamp) -> Result<()> {
    let mut st = tx
        .prepare_cached("SELECT id, doc FROM meter_segments WHERE instance_id = ?1 AND ended_at IS NULL")
        .map_err(db_err)?;
    let open: Vec<(i64, String)> = st
        .query_map(params![resource], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db_err)?;
    for (id, doc) in open {
        let mut s: Segment = decode("segment", &doc)?;
        s.ended_at = Some(Timestamp(at.0.max(s.started_at.0)));
        tx.execute(
            "UPDATE meter_segments SET ended_at = ?2, doc = ?3 WHERE id = ?1",
            params![id, s.ended_at.map(|t| t.0), encode(&s)?],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

fn segments(
    conn: &rusqlite::Connection,
    column: &str,
    who: AccountId,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Segment>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT doc FROM meter_segments WHERE {column} = ?1 AND started_at < ?3
               AND (ended_at IS NULL OR ended_at > ?2) ORDER BY started_at, id"
        ))
        .map_err(db_err)?;
    let rows = st.query_map(params![who.0 as i64, from.0, to.0], |r| r.get::<_, String>(0)).map_err(db_err)?;
    rows.map(|r| decode("segment", &r.map_err(db_err)?)).collect()
}

#[async_trait]
impl MeterStore for SqliteStore {
    async fn put_instances_metered(
        &self,
        instances: &[Instance],
        open: &[Segment],
        at: Timestamp,
        fence: Option<&JobFence>,
    ) -> Result<()> {
        let (instances, open, fence) = (instances.to_vec(), open.to_vec(), fence.cloned());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                check_fence(&tx, fence.as_ref())?;
                for instance in &instances {
                    close_segments(&tx, instance.id.as_str(), at)?;
                    put_instance(&tx, instance)?;
                }
                for s in &open {
                    insert_segment(&tx, s)?;
                }
                tx.commit().map_err(db_err)
            })
            .await
    }

    async fn delete_instance_metered(&self, id: &InstanceId, at: Timestamp, fence: Option<&JobFence>) -> Result<bool> {
        let (id, fence) = (id.clone(), fence.cloned());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                check_fence(&tx, fence.as_ref())?;
                close_segments(&tx, id.as_str(), at)?;
                tx.execute("DELETE FROM tke_nodes WHERE instance_id = ?1", params![id.as_str()]).map_err(db_err)?;
                let n = tx.execute("DELETE FROM instances WHERE id = ?1", params![id.as_str()]).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(n == 1)
            })
            .await
    }

    async fn finish_image_metered(
        &self,
        image: &Image,
        expected: ImageState,
        open: &[Segment],
        fence: Option<&JobFence>,
    ) -> Result<bool> {
        let (image, open, fence) = (image.clone(), open.to_vec(), fence.cloned());
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
                if n != 1 {
                    return Ok(false);
                }
                close_segments(&tx, image.id.as_str(), Timestamp(i64::MIN))?;
                for s in &open {
                    insert_segment(&tx, s)?;
                }
                tx.commit().map_err(db_err)?;
                Ok(true)
            })
            .await
    }

    async fn account_segments(&self, account: AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<Segment>> {
        self.readers.run(move |conn| segments(conn, "account_id", account, from, to)).await
    }

    async fn provider_segments(&self, provider: AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<Segment>> {
        self.readers.run(move |conn| segments(conn, "provider_id", provider, from, to)).await
    }
}
