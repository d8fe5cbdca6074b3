//! SQLite marketplace records: `MarketStore`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{db_err, put_image, SqliteStore};
use crate::tke::{decode, encode};
use crate::{MarketStore, Result};
use imaged_domain::market::{Listing, ListingId};
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image};

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
