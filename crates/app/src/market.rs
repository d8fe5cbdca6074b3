//! The marketplace: providers (marked by the operator), their listings through review, the
//! frozen snapshots buyers launch, the built-in listings, and what a marked image's launch
//! pays.
//!
//! Submitting a listing freezes its image: a new marketplace image is made with the source's
//! manifest (its blocks referenced anew, so later changes to, or the deletion of, the
//! provider's image cannot change what was reviewed), off sale until approved. Approval puts
//! that version on sale and the previous one off sale, in one transaction with the listing.

use imaged_domain::market::{
    check_listable, check_terms, may, Listing, ListingAction, ListingError, ListingId, ListingState, ListingTerms,
    ListingVersion,
};
use imaged_domain::pricing::{image_fee, ImageFee, PriceModel};
use imaged_domain::{catalog, AccountId, Image, ImageId, ImageKind, ImageSource};
use imaged_metastore::{ManifestRecord, Role};

use crate::secrets::random_bytes;
use crate::service::{now, AppError, Service};

/// The provider name of the administrator account, which holds the built-in listings.
pub const BUILTIN_PROVIDER: &str = "marketplace";

/// Why a marketplace request is refused.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The domain's rules (terms, listability, state).
    #[error(transparent)]
    Listing(#[from] ListingError),
    /// The caller is not a provider.
    #[error("the account is not a marketplace provider (the operator adds providers)")]
    NotProvider,
    /// No listing of the caller's has that id.
    #[error("the listing `{0}` does not exist")]
    ListingNotFound(String),
    /// No image of that id.
    #[error("the image `{0}` does not exist")]
    ImageNotFound(String),
    /// Another request changed the listing meanwhile.
    #[error("the listing changed meanwhile; read it again and retry")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<imaged_metastore::MetaStoreError> for MarketError {
    fn from(e: imaged_metastore::MetaStoreError) -> Self {
        Self::App(e.into())
    }
}

impl From<crate::secrets::SecretsError> for MarketError {
    fn from(e: crate::secrets::SecretsError) -> Self {
        Self::App(e.into())
    }
}

/// What `ModifyMarketListing` changes (absent: unchanged).
#[derive(Debug, Clone, Default)]
pub struct TermChanges {
    /// `ListingName`.
    pub name: Option<String>,
    /// `SoftwareStack`.
    pub software: Option<Vec<String>>,
    /// `Description`.
    pub description: Option<String>,
    /// `Category`.
    pub category: Option<String>,
    /// `PriceModel` and `Price`.
    pub fee: Option<ImageFee>,
    /// `ImageId`: the provider's image the next version is made from.
    pub image: Option<String>,
}

/// What the operator sees of a version under review.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// The listing.
    pub listing: String,
    /// The version inspected.
    pub version: u32,
    /// The snapshot image.
    pub image: String,
    /// The format the source was detected as at import or capture.
    pub source_format: String,
    /// Virtual size, bytes.
    pub virtual_size: u64,
    /// Stored blocks, all present and matching their digests.
    pub blocks: usize,
    /// The OS the image says it carries.
    pub os_name: String,
    /// Its platform.
    pub platform: String,
    /// `/etc/os-release` of each Linux filesystem found, by partition.
    pub os_release: Vec<(String, String)>,
}

/// A price as the built-in rows state it ("0.20" yuan).
fn yuan_text(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

impl Service {
    /// Marks an account a marketplace provider (operator); its name is what buyers see.
    pub async fn add_provider(&self, account: AccountId) -> Result<bool, AppError> {
        let record = self.store().get_account(account).await?.ok_or(AppError::NoSuchAccount(account))?;
        Ok(self.store().add_provider(account, &record.name, now()).await?)
    }

    async fn provider(&self, caller: AccountId) -> Result<String, MarketError> {
        self.store().provider_name(caller).await?.ok_or(MarketError::NotProvider)
    }

    async fn own_listing(&self, caller: AccountId, id: &str) -> Result<Listing, MarketError> {
        let listing = self.listing(id).await?;
        if listing.provider != caller {
            return Err(MarketError::ListingNotFound(id.to_owned()));
        }
        Ok(listing)
    }

    /// A listing by id (operator).
    pub async fn listing(&self, id: &str) -> Result<Listing, MarketError> {
        let parsed = ListingId::parse(id).ok_or_else(|| MarketError::ListingNotFound(id.to_owned()))?;
        self.store().get_listing(&parsed).await?.ok_or_else(|| MarketError::ListingNotFound(id.to_owned()))
    }

    async fn listable_image(
        &self,
        caller: AccountId,
        id: &str,
        listing: Option<&ListingId>,
    ) -> Result<Image, MarketError> {
        let parsed = ImageId::parse(id).map_err(|_| MarketError::ImageNotFound(id.to_owned()))?;
        let image = self.store().get_image(&parsed).await?.ok_or_else(|| MarketError::ImageNotFound(id.to_owned()))?;
        // Someone else's image is "not found" unless it was shared with the caller, which makes
        // it visible, and still not listable.
        check_listable(&image, caller, listing)?;
        Ok(image)
    }

    /// `CreateMarketListing`: a DRAFT listing of one of the caller's own NORMAL custom images.
    pub async fn create_listing(
        &self,
        caller: AccountId,
        image: &str,
        terms: ListingTerms,
    ) -> Result<Listing, MarketError> {
        let provider_name = self.provider(caller).await?;
        check_terms(&terms)?;
        let source = self.listable_image(caller, image, None).await?;
        let at = now();
        let listing = Listing {
            id: ListingId::from_random(random_bytes()?),
            provider: caller,
            provider_name,
            source_image: source.id,
            terms,
            state: ListingState::Draft,
            reject_reason: None,
            pending: None,
            published: None,
            created_at: at,
            updated_at: at,
        };
        self.store().insert_listing(&listing).await?;
        Ok(listing)
    }

    /// `DescribeMarketListings`: the caller's listings, every state.
    pub async fn own_listings(&self, caller: AccountId) -> Result<Vec<Listing>, MarketError> {
        self.provider(caller).await?;
        Ok(self.store().list_listings(Some(caller)).await?)
    }

    /// Every listing (operator).
    pub async fn all_listings(&self) -> Result<Vec<Listing>, AppError> {
        Ok(self.store().list_listings(None).await?)
    }

    async fn replace(&self, listing: &Listing, read: &Listing, images: &[Image]) -> Result<(), MarketError> {
        if self.store().update_listing(listing, read, images).await? {
            Ok(())
        } else {
            Err(MarketError::Conflict)
        }
    }

    /// `ModifyMarketListing`: the next version's terms (and image). A version on sale stays on
    /// sale, as it was reviewed, until a new one is approved.
    pub async fn modify_listing(&self, caller: AccountId, id: &str, c: TermChanges) -> Result<Listing, MarketError> {
        let read = self.own_listing(caller, id).await?;
        may(read.state, ListingAction::Modify)?;
        let mut listing = read.clone();
        let t = &mut listing.terms;
        t.name = c.name.unwrap_or_else(|| t.name.clone());
        t.software = c.software.unwrap_or_else(|| t.software.clone());
        t.description = c.description.unwrap_or_else(|| t.description.clone());
        t.category = c.category.unwrap_or_else(|| t.category.clone());
        t.fee = c.fee.unwrap_or(t.fee);
        check_terms(&listing.terms)?;
        if let Some(image) = c.image {
            listing.source_image = self.listable_image(caller, &image, Some(&listing.id)).await?.id;
        }
        listing.updated_at = now();
        self.replace(&listing, &read, &[]).await?;
        Ok(listing)
    }

    /// `SubmitMarketListing`: freezes the listing's image as a new version and sends it to
    /// review (`PENDING_REVIEW`).
    pub async fn submit_listing(&self, caller: AccountId, id: &str) -> Result<Listing, MarketError> {
        let read = self.own_listing(caller, id).await?;
        may(read.state, ListingAction::Submit)?;
        check_terms(&read.terms)?;
        let source = self.listable_image(caller, read.source_image.as_str(), Some(&read.id)).await?;
        let record = self
            .store()
            .get_manifest(&source.id)
            .await?
            .ok_or_else(|| MarketError::ImageNotFound(source.id.to_string()))?;
        let version = read.published.iter().chain(read.pending.iter()).map(|v| v.version).max().unwrap_or(0) + 1;
        let snapshot_id = ImageId::from_random(random_bytes()?);
        let snapshot = Image {
            id: snapshot_id.clone(),
            region: None,
            owner: None,
            kind: ImageKind::Market,
            source: ImageSource::Official,
            name: read.terms.name.clone(),
            description: read.terms.description.clone(),
            family: String::new(),
            tags: Vec::new(),
            market: Some(imaged_domain::image::MarketListing {
                provider: read.provider_name.clone(),
                software: read.terms.software.clone(),
                price_cny_per_hour: yuan_text(read.terms.fee.hourly()),
                reviewed: false,
                fee: Some(read.terms.fee),
                on_sale: false,
            }),
            market_mark: Some(read.id.clone()),
            created_at: now(),
            ..source
        };
        // The frozen bytes first: the same blocks, referenced by the snapshot's own manifest.
        let frozen = ManifestRecord { image: snapshot_id.clone(), ..record };
        self.store().attach_manifest(&snapshot, &frozen).await?;
        let mut listing = read.clone();
        listing.pending =
            Some(ListingVersion { version, image: snapshot_id, terms: read.terms.clone(), submitted_at: now() });
        listing.state = ListingState::PendingReview;
        listing.reject_reason = None;
        listing.updated_at = now();
        self.replace(&listing, &read, &[]).await?;
        Ok(listing)
    }

    /// `WithdrawMarketListing`: off sale; instances already launched keep running (and being
    /// charged), and images captured from them keep the mark.
    pub async fn withdraw_listing(&self, caller: AccountId, id: &str) -> Result<Listing, MarketError> {
        let read = self.own_listing(caller, id).await?;
        may(read.state, ListingAction::Withdraw)?;
        let mut images = Vec::new();
        if let Some(v) = &read.published {
            if let Some(mut image) = self.store().get_image(&v.image).await? {
                if let Some(m) = image.market.as_mut() {
                    m.on_sale = false;
                }
                images.push(image);
            }
        }
        let mut listing = read.clone();
        listing.state = ListingState::Withdrawn;
        listing.updated_at = now();
        self.replace(&listing, &read, &images).await?;
        Ok(listing)
    }

    /// The operator's review of the version pending: approved, it goes on sale (replacing the
    /// version on sale); rejected, it stays off sale and the provider reads `reason`.
    pub async fn review_listing(&self, id: &str, approve: bool, reason: Option<&str>) -> Result<Listing, MarketError> {
        let read = self.listing(id).await?;
        may(read.state, ListingAction::Review)?;
        let pending = read.pending.clone().ok_or(ListingError::State(read.state))?;
        let mut listing = read.clone();
        let mut images = Vec::new();
        if approve {
            let mut fresh = self
                .store()
                .get_image(&pending.image)
                .await?
                .ok_or_else(|| MarketError::ImageNotFound(pending.image.to_string()))?;
            if let Some(m) = fresh.market.as_mut() {
                m.reviewed = true;
                m.on_sale = true;
            }
            images.push(fresh);
            if let Some(old) = &read.published {
                if let Some(mut image) = self.store().get_image(&old.image).await? {
                    if let Some(m) = image.market.as_mut() {
                        m.on_sale = false;
                    }
                    images.push(image);
                }
            }
            listing.published = Some(pending);
            listing.pending = None;
            listing.state = ListingState::Published;
            listing.reject_reason = None;
        } else {
            let why = reason.map(str::trim).filter(|r| !r.is_empty());
            let why = why.ok_or_else(|| ListingError::Terms("a rejection needs a reason".into()))?;
            listing.state = ListingState::Rejected;
            listing.reject_reason = Some(why.to_owned());
        }
        listing.updated_at = now();
        self.replace(&listing, &read, &images).await?;
        Ok(listing)
    }

    /// The fee launching `image` costs: a market image's own; for a custom image carrying a
    /// listing's mark, that listing's fee on sale (or last on sale).
    pub async fn fee_of(&self, image: &Image) -> Result<ImageFee, AppError> {
        if image.kind == ImageKind::Market {
            return Ok(image_fee(image));
        }
        let Some(mark) = &image.market_mark else { return Ok(ImageFee::FREE) };
        let listing = self.store().get_listing(mark).await?;
        Ok(listing.and_then(|l| l.published.map(|v| v.terms.fee)).unwrap_or(ImageFee::FREE))
    }

    /// At first start: the built-in marketplace rows become published listings of the
    /// administrator account (the operator publishes them; buyers see each row's own provider
    /// name), and their images carry their listings' marks. Idempotent.
    pub(crate) async fn bootstrap_market(&self) -> Result<(), AppError> {
        let accounts = self.store().list_accounts().await?;
        let Some(provider) = accounts.iter().find(|a| a.role == Role::Admin).map(|a| a.id) else { return Ok(()) };
        self.store().add_provider(provider, BUILTIN_PROVIDER, now()).await?;
        let listed = self.store().list_listings(Some(provider)).await?;
        for row in catalog::market_images() {
            if listed.iter().any(|l| l.published.as_ref().is_some_and(|v| v.image == row.id)) {
                continue;
            }
            let Some(mut image) = self.store().get_image(&row.id).await? else { continue };
            let Some(m) = image.market.clone().or(row.market) else { continue };
            let fee = image_fee(&image);
            let terms = ListingTerms {
                name: image.name.clone(),
                software: m.software.clone(),
                description: image.description.clone(),
                category: "web".into(),
                fee: if fee.price == 0 { ImageFee { model: PriceModel::Free, price: 0 } } else { fee },
            };
            let id = ListingId::from_random(random_bytes().map_err(AppError::from)?);
            let at = now();
            let version =
                ListingVersion { version: 1, image: image.id.clone(), terms: terms.clone(), submitted_at: at };
            let listing = Listing {
                id: id.clone(),
                provider,
                provider_name: m.provider.clone(),
                source_image: image.id.clone(),
                terms,
                state: ListingState::Published,
                reject_reason: None,
                pending: None,
                published: Some(version),
                created_at: at,
                updated_at: at,
            };
            self.store().insert_listing(&listing).await?;
            image.market_mark = Some(id);
            self.store().put_images(std::slice::from_ref(&image)).await?;
        }
        Ok(())
    }
}

impl Service {
    /// What the operator reviews (`imaged market inspect`): the version pending (else the one
    /// on sale), its bytes re-read and verified block by block, its partitions' os-release.
    pub async fn inspect_listing(&self, id: &str) -> Result<Inspection, MarketError> {
        let listing = self.listing(id).await?;
        let v = listing.pending.clone().or(listing.published.clone()).ok_or(ListingError::State(listing.state))?;
        let missing = || MarketError::ImageNotFound(v.image.to_string());
        let record = self.store().get_manifest(&v.image).await?.ok_or_else(missing)?;
        let image = self.store().get_image(&v.image).await?.ok_or_else(missing)?;
        // Materialising reads every block and checks it against its digest.
        let raw = self.materialised(&v.image).await?;
        let os_release = tokio::task::spawn_blocking(move || os_releases(&raw))
            .await
            .map_err(|e| AppError::Conflict(e.to_string()))?;
        Ok(Inspection {
            listing: listing.id.to_string(),
            version: v.version,
            image: v.image.to_string(),
            source_format: record.source_format,
            virtual_size: record.virtual_size,
            blocks: record.blocks.len(),
            os_name: image.os_name,
            platform: image.platform,
            os_release,
        })
    }
}

/// `/etc/os-release` of each Linux filesystem of a raw disk: per MBR partition (or the whole
/// disk without a partition table), read with debugfs, which never mounts anything.
fn os_releases(raw: &std::path::Path) -> Vec<(String, String)> {
    let mut head = [0u8; 512];
    let read = std::fs::File::open(raw).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    let mut places = Vec::new();
    if read.is_ok() && head[510..512] == [0x55, 0xAA] {
        for i in 0..4 {
            let entry = &head[446 + 16 * i..462 + 16 * i];
            let lba = u64::from(u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]));
            if entry[4] != 0 && lba > 0 {
                places.push((format!("partition {}", i + 1), lba * 512));
            }
        }
    }
    if places.is_empty() {
        places.push(("whole disk".to_owned(), 0));
    }
    places
        .into_iter()
        .filter_map(|(name, offset)| {
            let target = format!("{}?offset={offset}", raw.display());
            let out =
                std::process::Command::new("debugfs").args(["-R", "cat /etc/os-release", &target]).output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && !text.trim().is_empty()).then_some((name, text))
        })
        .collect()
}
