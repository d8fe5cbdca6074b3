//! The marketplace's records: providers and listings.

use async_trait::async_trait;
use imaged_domain::market::{Listing, ListingId};
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image};

use crate::Result;

/// Providers and their listings.
#[async_trait]
pub trait MarketStore: Send + Sync {
    /// Marks an account a provider, under the name buyers see; false when it was one already.
    async fn add_provider(&self, account: AccountId, name: &str, now: Timestamp) -> Result<bool>;
    /// A provider's name, if the account is one.
    async fn provider_name(&self, account: AccountId) -> Result<Option<String>>;
    /// Stores a new listing.
    async fn insert_listing(&self, listing: &Listing) -> Result<()>;
    /// A listing by id.
    async fn get_listing(&self, id: &ListingId) -> Result<Option<Listing>>;
    /// The listings of one provider, or of all, oldest first.
    async fn list_listings(&self, provider: Option<AccountId>) -> Result<Vec<Listing>>;
    /// In one transaction: replaces `listing` if it is still stored exactly as `expected` (false
    /// otherwise, and nothing is written) and puts `images` (the versions going on or off sale).
    async fn update_listing(&self, listing: &Listing, expected: &Listing, images: &[Image]) -> Result<bool>;
}
