//! The marketplace (seeds `001`–`004`): providers list their custom images with a software
//! stack and a price; the service reviews a frozen snapshot before it goes on sale; buyers in
//! mainland China launch it and pay its fee on top of the instance's. A listing's mark follows
//! the bytes: a custom image captured from a market instance carries the listing for ever.

use crate::ids::{AccountId, ImageId};
use crate::image::{Image, ImageKind, ImageState, LicenseType};
use crate::pricing::{ImageFee, PriceModel, MAX_PRICE};
use crate::time::Timestamp;

/// Longest listing name, in characters.
pub const MAX_LISTING_NAME_CHARS: usize = 60;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Items of a software stack at most, and the longest item.
pub const MAX_STACK_ITEMS: usize = 20;
/// Longest software stack item, in characters.
pub const MAX_STACK_ITEM_CHARS: usize = 64;
/// The categories a listing may take.
pub const CATEGORIES: &[&str] =
    &["web", "database", "runtime", "devops", "storage", "ai", "security", "operating-system", "other"];

/// A listing id such as `lst-8q2xk0pd`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ListingId(String);

impl ListingId {
    /// The prefix.
    pub const PREFIX: &'static str = "lst-";

    /// Parses `lst-` and 8 lower-case letters or digits.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 12
            && s.starts_with(Self::PREFIX)
            && s[4..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then(|| Self(s.to_owned()))
    }

    /// A new id from 8 random bytes.
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self(format!("lst-{}", ImageId::from_random(bytes).as_str().trim_start_matches("img-")))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ListingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

wire_enum! {
    /// A listing's state.
    ListingState {
        /// Being written; not yet submitted.
        Draft = "DRAFT",
        /// Its latest version waits for review.
        PendingReview = "PENDING_REVIEW",
        /// On sale.
        Published = "PUBLISHED",
        /// Its latest version was refused, with the reviewer's reason.
        Rejected = "REJECTED",
        /// Off sale: no new launches; running instances keep working and being charged.
        Withdrawn = "WITHDRAWN",
    }
}

/// What a listing says about itself (the part a provider writes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListingTerms {
    /// `ListingName`.
    pub name: String,
    /// `SoftwareStack`.
    pub software: Vec<String>,
    /// `Description`.
    pub description: String,
    /// `Category`.
    pub category: String,
    /// `PriceModel` and `Price`.
    pub fee: ImageFee,
}

/// A version of a listing: its terms and the frozen snapshot of its image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListingVersion {
    /// 1, 2, …
    pub version: u32,
    /// The snapshot (a marketplace image holding the bytes as submitted).
    pub image: ImageId,
    /// The terms as submitted.
    pub terms: ListingTerms,
    /// When it was submitted.
    pub submitted_at: Timestamp,
}

/// A marketplace listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    /// Id.
    pub id: ListingId,
    /// The provider's account.
    pub provider: AccountId,
    /// The provider's name as buyers see it.
    pub provider_name: String,
    /// The provider's custom image the listing is made from.
    pub source_image: ImageId,
    /// The terms being written (the next version's).
    pub terms: ListingTerms,
    /// State.
    pub state: ListingState,
    /// The reviewer's reason for the last rejection.
    pub reject_reason: Option<String>,
    /// The version under review.
    pub pending: Option<ListingVersion>,
    /// The version on sale (or last on sale, when withdrawn).
    pub published: Option<ListingVersion>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// Why a listing request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    /// A term out of bounds.
    #[error("{0}")]
    Terms(String),
    /// The image cannot be listed by this provider.
    #[error("{0}")]
    NotListable(String),
    /// The listing's state does not allow that.
    #[error("the listing is {0} and cannot do that")]
    State(ListingState),
}

/// Checks a provider's terms: a name, a short stack, a known category, and a price that
/// matches its model (0 for `FREE`, 1 to 10,000,000.00 otherwise).
pub fn check_terms(t: &ListingTerms) -> Result<(), ListingError> {
    let bad = |m: String| Err(ListingError::Terms(m));
    if t.name.trim().is_empty() || t.name.chars().count() > MAX_LISTING_NAME_CHARS {
        return bad(format!("ListingName must be 1 to {MAX_LISTING_NAME_CHARS} characters"));
    }
    if t.software.len() > MAX_STACK_ITEMS
        || t.software.iter().any(|s| s.trim().is_empty() || s.chars().count() > MAX_STACK_ITEM_CHARS)
    {
        return bad(format!(
            "SoftwareStack holds at most {MAX_STACK_ITEMS} items of 1 to {MAX_STACK_ITEM_CHARS} characters"
        ));
    }
    if t.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return bad(format!("Description is longer than {MAX_DESCRIPTION_CHARS} characters"));
    }
    if !CATEGORIES.contains(&t.category.as_str()) {
        return bad(format!("Category must be one of {}", CATEGORIES.join(", ")));
    }
    match (t.fee.model, t.fee.price) {
        (PriceModel::Free, 0) => Ok(()),
        (PriceModel::Free, _) => bad("a FREE listing has Price 0".into()),
        (_, 0) => bad("a priced listing needs a Price above 0 (or PriceModel FREE)".into()),
        (_, p) if p > MAX_PRICE => bad(format!("Price is over {MAX_PRICE} minor units")),
        _ => Ok(()),
    }
}

/// Whether `provider` may list `image` (as listing `listing`, when it exists already): its own
/// NORMAL custom image, not BYOL, and not carrying another listing's mark (an image derived
/// from a market image belongs to that listing's provider).
pub fn check_listable(image: &Image, provider: AccountId, listing: Option<&ListingId>) -> Result<(), ListingError> {
    let no = |m: &str| Err(ListingError::NotListable(format!("the image {} {m}", image.id)));
    if image.kind != ImageKind::Private || image.owner != Some(provider) {
        return no("is not a custom image of yours (shared and public images cannot be listed)");
    }
    if image.state != ImageState::Normal {
        return no("is not NORMAL");
    }
    if image.license_type == LicenseType::Byol {
        return no("brings its own licence (BYOL) and cannot be sold");
    }
    match (&image.market_mark, listing) {
        (Some(mark), Some(own)) if mark == own => Ok(()),
        (Some(mark), _) => no(&format!("is derived from the market listing {mark} and cannot be listed again")),
        (None, _) => Ok(()),
    }
}

/// Whether a listing in `state` may have its terms changed, be submitted, be withdrawn.
pub fn may(state: ListingState, action: ListingAction) -> Result<(), ListingError> {
    use ListingState as S;
    let ok = match action {
        ListingAction::Modify | ListingAction::Submit => state != S::PendingReview,
        ListingAction::Withdraw => matches!(state, S::Published | S::PendingReview | S::Rejected),
        ListingAction::Review => state == S::PendingReview,
    };
    if ok {
        Ok(())
    } else {
        Err(ListingError::State(state))
    }
}

/// What is asked of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingAction {
    /// `ModifyMarketListing`.
    Modify,
    /// `SubmitMarketListing`.
    Submit,
    /// `WithdrawMarketListing`.
    Withdraw,
    /// The operator's review.
    Review,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(owner: AccountId) -> Image {
        let mut img = crate::catalog::public_images().remove(0);
        img.kind = ImageKind::Private;
        img.owner = Some(owner);
        img.region = Some("ap-guangzhou".into());
        img
    }

    fn terms(model: PriceModel, price: u64) -> ListingTerms {
        ListingTerms {
            name: "LAMP".into(),
            software: vec!["PHP 8.2".into(), "MariaDB".into()],
            description: "".into(),
            category: "web".into(),
            fee: ImageFee { model, price },
        }
    }

    #[test]
    fn terms_need_a_name_a_category_and_a_price_that_fits_the_model() {
        assert!(check_terms(&terms(PriceModel::Free, 0)).is_ok());
        assert!(check_terms(&terms(PriceModel::Hourly, 20)).is_ok());
        for bad in [
            terms(PriceModel::Free, 5),
            terms(PriceModel::Hourly, 0),
            terms(PriceModel::Monthly, MAX_PRICE + 1),
            ListingTerms { category: "games".into(), ..terms(PriceModel::Free, 0) },
            ListingTerms { name: " ".into(), ..terms(PriceModel::Free, 0) },
            ListingTerms { software: vec!["x".repeat(65)], ..terms(PriceModel::Free, 0) },
        ] {
            assert!(check_terms(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_ones_own_normal_unmarked_non_byol_images_are_listable() {
        let me = AccountId(7);
        let mut img = custom(me);
        assert!(check_listable(&img, me, None).is_ok());
        assert!(check_listable(&img, AccountId(8), None).is_err(), "someone else's (shared) image");
        img.license_type = LicenseType::Byol;
        assert!(check_listable(&img, me, None).is_err());
        img.license_type = LicenseType::TencentCloud;
        let mark = ListingId::from_random([1; 8]);
        img.market_mark = Some(mark.clone());
        assert!(check_listable(&img, me, None).is_err(), "derived from a market image");
        assert!(check_listable(&img, me, Some(&mark)).is_ok(), "a new version of its own listing");
        img.market_mark = None;
        img.state = ImageState::Creating;
        assert!(check_listable(&img, me, None).is_err());
    }

    #[test]
    fn states_allow_what_the_lifecycle_says() {
        use ListingState as S;
        assert!(may(S::Draft, ListingAction::Submit).is_ok());
        assert!(may(S::PendingReview, ListingAction::Submit).is_err());
        assert!(may(S::PendingReview, ListingAction::Review).is_ok());
        assert!(may(S::Published, ListingAction::Review).is_err());
        assert!(may(S::Published, ListingAction::Withdraw).is_ok());
        assert!(may(S::Draft, ListingAction::Withdraw).is_err());
        assert!(may(S::Withdrawn, ListingAction::Submit).is_ok(), "a withdrawn listing may come back through review");
        assert_eq!(ListingId::parse("lst-8q2xk0pd").map(|l| l.to_string()), Some("lst-8q2xk0pd".into()));
        assert!(ListingId::parse("lst-8Q2XK0PD").is_none());
    }
}
