//! PostgreSQL marketplace records: `MarketStore`.

use async_trait::async_trait;

use super::{db_err, put_image, PostgresStore};
use crate::tke::{decode, encode};
use crate::{MarketStore, Result};
use imaged_domain::market::{Listing, ListingId};
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image};

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
