//! PostgreSQL marketplace records and usage segments: `MarketStore`, `MeterStore`.

use async_trait::async_trait;
use tokio_postgres::Transaction;

use super::instances::put_instance;
use super::{check_fence, db_err, put_image, PostgresStore};
use crate::tke::{decode, encode};
use crate::{encode_image, JobFence, MarketStore, MeterStore, Result};
use imaged_domain::instance::Instance;
use imaged_domain::market::{Listing, ListingId};
use imaged_domain::metering::Segment;
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageState, InstanceId};

#[async_trait]
impl MarketStore for PostgresStore {
    async fn add_provider(&self, account: AccountId, name: &str, now: Timestamp) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO market_providers (account_id, name, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&(account.0 as i64), &name, &now.0],
        )
        .await
        .map(|n| n == 1)
        .map_err(db_err)
    }

    async fn provider_name(&self, account: AccountId) -> Result<Option<String>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT name FROM market_providers WHERE account_id = $1", &[&(account.0 as i64)])
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn insert_listing(&self, listing: &Listing) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO market_listings (id, provider_id, created_at, doc) VALUES ($1, $2, $3, $4)",
            &[&listing.id.as_str(), &(listing.provider.0 as i64), &listing.created_at.0, &encode(listing)?],
        )
        .await
        .map(|_| ())
        .map_err(db_err)
    }

    async fn get_listing(&self, id: &ListingId) -> Result<Option<Listing>> {
        let conn = self.conn().await?;
        let row =
            conn.query_opt("SELECT doc FROM market_listings WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?;
        row.map(|r| decode("listing", r.get(0))).transpose()
    }

    async fn list_listings(&self, provider: Option<AccountId>) -> Result<Vec<Listing>> {
        let conn = self.conn().await?;
        let provider = provider.map(|a| a.0 as i64);
        let rows = conn
            .query(
                "SELECT doc FROM market_listings WHERE $1::BIGINT IS NULL OR provider_id = $1 ORDER BY created_at, id",
                &[&provider],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| decode("listing", r.get(0))).collect()
    }

    async fn update_listing(&self, listing: &Listing, expected: &Listing, images: &[Image]) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        let row = tx
            .query_opt("SELECT doc FROM market_listings WHERE id = $1 FOR UPDATE", &[&listing.id.as_str()])
            .await
            .map_err(db_err)?;
        let current: Option<Listing> = row.map(|r| decode("listing", r.get(0))).transpose()?;
        if current.as_ref() != Some(expected) {
            return Ok(false);
        }
        tx.execute("UPDATE market_listings SET doc = $2 WHERE id = $1", &[&listing.id.as_str(), &encode(listing)?])
            .await
            .map_err(db_err)?;
        for image in images {
            put_image(&tx, image).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}

async fn insert_segment(tx: &Transaction<'_>, s: &Segment) -> Result<()> {
    tx.execute(
        "INSERT INTO meter_segments (account_id, provider_id, instance_id, started_at, ended_at, doc)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &(s.account.0 as i64),
            &s.provider.map(|p| p.0 as i64),
            &s.resource,
            &s.started_at.0,
            &s.ended_at.map(|t| t.0),
            &encode(s)?,
        ],
    )
    .await
    .map(|_| ())
    .map_err(db_err)
}

/// Closes the open segments of a resource (an instance, an image) at `at`.
pub(super) async fn close_segments(tx: &Transaction<'_>, resource: &str, at: Timestamp) -> Result<()> {
    let rows = tx
        .query(
            "SELECT id, doc FROM meter_segments WHERE instance_id = $1 AND ended_at IS NULL FOR UPDATE",
            &[&resource],
        )
        .await
        .map_err(db_err)?;
    for row in rows {
        let id: i64 = row.get(0);
        let mut s: Segment = decode("segment", row.get(1))?;
        s.ended_at = Some(Timestamp(at.0.max(s.started_at.0)));
        tx.execute(
            "UPDATE meter_segments SET ended_at = $2, doc = $3 WHERE id = $1",
            &[&id, &s.ended_at.map(|t| t.0), &encode(&s)?],
        )
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

impl PostgresStore {
    async fn segments(&self, column: &str, who: AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<Segment>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT doc FROM meter_segments WHERE {column} = $1 AND started_at < $3
                       AND (ended_at IS NULL OR ended_at > $2) ORDER BY started_at, id"
                ),
                &[&(who.0 as i64), &from.0, &to.0],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| decode("segment", r.get(0))).collect()
    }
}

#[async_trait]
impl MeterStore for PostgresStore {
    async fn put_instances_metered(
        &self,
        instances: &[Instance],
        open: &[Segment],
        at: Timestamp,
        fence: Option<&JobFence>,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        check_fence(&tx, fence).await?;
        for instance in instances {
            close_segments(&tx, instance.id.as_str(), at).await?;
            put_instance(&tx, instance).await?;
        }
        for s in open {
            insert_segment(&tx, s).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn delete_instance_metered(&self, id: &InstanceId, at: Timestamp, fence: Option<&JobFence>) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        check_fence(&tx, fence).await?;
        close_segments(&tx, id.as_str(), at).await?;
        tx.execute("DELETE FROM tke_nodes WHERE instance_id = $1", &[&id.as_str()]).await.map_err(db_err)?;
        let n = tx.execute("DELETE FROM instances WHERE id = $1", &[&id.as_str()]).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }

    async fn finish_image_metered(
        &self,
        image: &Image,
        expected: ImageState,
        open: &[Segment],
        fence: Option<&JobFence>,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        check_fence(&tx, fence).await?;
        let n = tx
            .execute(
                "UPDATE images SET state = $2, doc = $3 WHERE id = $1 AND state = $4",
                &[&image.id.as_str(), &image.state.as_str(), &encode_image(image)?, &expected.as_str()],
            )
            .await
            .map_err(db_err)?;
        if n != 1 {
            return Ok(false);
        }
        close_segments(&tx, image.id.as_str(), Timestamp(i64::MIN)).await?;
        for s in open {
            insert_segment(&tx, s).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn account_segments(&self, account: AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<Segment>> {
        self.segments("account_id", account, from, to).await
    }

    async fn provider_segments(&self, provider: AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<Segment>> {
        self.segments("provider_id", provider, from, to).await
    }
}
