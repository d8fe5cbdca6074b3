//! The marketplace's records: providers, listings, and the usage segments fees are paid from.

use async_trait::async_trait;
use imaged_domain::instance::Instance;
use imaged_domain::market::{Listing, ListingId};
use imaged_domain::metering::Segment;
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageState, InstanceId};

use crate::{JobFence, Result};

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

/// Usage segments, written with the instance changes that open and close them.
#[async_trait]
pub trait MeterStore: Send + Sync {
    /// In one transaction: closes the open segments of each of `instances` at `at`, stores the
    /// instances, and opens `open` (the segments of those now running).
    /// A job writes under its `fence` ([`crate::MetaStoreError::LeaseLost`] once it no longer holds).
    async fn put_instances_metered(
        &self,
        instances: &[Instance],
        open: &[Segment],
        at: Timestamp,
        fence: Option<&JobFence>,
    ) -> Result<()>;
    /// In one transaction: closes the instance's open segments at `at` and removes it (and its
    /// node record); false when there was no such instance.
    async fn delete_instance_metered(&self, id: &InstanceId, at: Timestamp, fence: Option<&JobFence>) -> Result<bool>;
    /// In one transaction: replaces an image's document only while its stored state is still
    /// `expected` (as [`crate::ImageStore::update_image_if_state`]) and opens `open` (its
    /// storage, once it is NORMAL); false, with nothing written, when the state moved on.
    async fn finish_image_metered(
        &self,
        image: &Image,
        expected: ImageState,
        open: &[Segment],
        fence: Option<&JobFence>,
    ) -> Result<bool>;
    /// The segments of `account` that overlap `[from, to)`.
    async fn account_segments(&self, account: AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<Segment>>;
    /// The image-fee segments paid to `provider` that overlap `[from, to)`.
    async fn provider_segments(&self, provider: AccountId, from: Timestamp, to: Timestamp) -> Result<Vec<Segment>>;
}
