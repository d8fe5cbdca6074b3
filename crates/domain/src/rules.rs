//! The seeds' rules as functions: quotas, visibility, licence fees, marketplace regions, names.

use crate::ids::AccountId;
use crate::image::{Architecture, Image, ImageKind, ImageType, ReleaseStatus};
use crate::region::Region;

/// Custom images per region per account (seeds: "Each region only supports a maximum of 10").
pub const DEFAULT_CUSTOM_IMAGE_QUOTA: u32 = 10;
/// Accounts one custom image can be shared with (seeds: "a maximum of 50 Tencent Cloud users").
pub const DEFAULT_SHARE_LIMIT: u32 = 50;
/// Bytes one account's custom images and uploads in progress may take, unless the account
/// has an override (not in the seeds: a default that keeps one tenant from filling the host).
pub const DEFAULT_STORAGE_GIB_PER_ACCOUNT: u64 = 1024;
/// Longest image name, in characters.
pub const MAX_IMAGE_NAME_CHARS: usize = 60;
/// Longest image description, in characters.
pub const MAX_IMAGE_DESCRIPTION_CHARS: usize = 256;

/// The configurable limits, with the seeds' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Custom images per region per account, unless the account has an override.
    pub custom_images_per_region: u32,
    /// Accounts one custom image may be shared with.
    pub shares_per_image: u32,
    /// GiB one account's custom images (their virtual disks) and uploads may take, unless the
    /// account has an override.
    pub storage_gib_per_account: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            custom_images_per_region: DEFAULT_CUSTOM_IMAGE_QUOTA,
            shares_per_image: DEFAULT_SHARE_LIMIT,
            storage_gib_per_account: DEFAULT_STORAGE_GIB_PER_ACCOUNT,
        }
    }
}

impl Limits {
    /// The custom-image quota of an account: its override when it has one, else the default.
    pub fn custom_image_quota(&self, account_override: Option<u32>) -> u32 {
        account_override.unwrap_or(self.custom_images_per_region)
    }

    /// The storage quota of an account, in bytes: its override (GiB) when it has one, else the
    /// default.
    pub fn storage_quota_bytes(&self, account_override_gib: Option<u64>) -> u64 {
        account_override_gib.unwrap_or(self.storage_gib_per_account).saturating_mul(1 << 30)
    }
}

/// Whether `image` is offered in `region` at all, whoever asks.
///
/// Public images are offered everywhere; marketplace images only in mainland-China regions;
/// a custom image only in its own region (sharing never crosses regions).
pub fn offered_in(image: &Image, region: &Region) -> bool {
    match image.kind {
        ImageKind::Public => true,
        // Only versions on sale: one under review, replaced or withdrawn is offered to nobody.
        ImageKind::Market => region.mainland && image.market.as_ref().is_none_or(|m| m.on_sale),
        ImageKind::Private => image.region.as_deref() == Some(region.region.as_str()),
    }
}

/// How `caller` sees `image` in `region`, or `None` when it may not see it.
///
/// `shared_with_caller` says whether the owner has shared the image with the caller.
pub fn seen_as(image: &Image, caller: AccountId, region: &Region, shared_with_caller: bool) -> Option<ImageType> {
    if !offered_in(image, region) {
        return None;
    }
    match image.kind {
        ImageKind::Public => Some(ImageType::PublicImage),
        ImageKind::Market => Some(ImageType::MarketImage),
        ImageKind::Private if image.owner == Some(caller) => Some(ImageType::PrivateImage),
        ImageKind::Private if shared_with_caller => Some(ImageType::SharedImage),
        ImageKind::Private => None,
    }
}

/// Whether launching from `image` in `region` carries an OS licence fee.
///
/// Seeds: public images are free "except for Windows images in certain regions outside the
/// Chinese mainland"; custom Windows images inherit the fee.
pub fn licence_fee_applies(image: &Image, region: &Region) -> bool {
    image.platform.eq_ignore_ascii_case("Windows") && !region.mainland
}

/// Whether an account must apply before using the image (beta public images, per the seeds).
pub fn requires_application(image: &Image) -> bool {
    image.release_status == ReleaseStatus::Beta
}

/// The architectures an instance type runs, or `None` when the type is malformed.
///
/// Instance types look like `S5.LARGE8` or `SA5.MEDIUM2`: a family, a dot, a size. ARM families
/// start with `SR`; every other family is x86 and runs 64- and 32-bit x86 images.
pub fn architectures_for_instance_type(instance_type: &str) -> Option<&'static [Architecture]> {
    let (family, size) = instance_type.split_once('.')?;
    let well_formed = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !well_formed(family) || !well_formed(size) || !family.as_bytes()[0].is_ascii_uppercase() {
        return None;
    }
    Some(if family.starts_with("SR") { &[Architecture::Arm] } else { &[Architecture::X86_64, Architecture::I386] })
}

/// Why a name or description is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or blank name.
    #[error("the image name must not be empty")]
    Empty,
    /// Over the limit.
    #[error("`{field}` is longer than {max} characters")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
}

/// Checks an image name: non-blank, at most 60 characters.
pub fn validate_image_name(name: &str) -> Result<(), NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_IMAGE_NAME_CHARS {
        return Err(NameError::TooLong { field: "ImageName", max: MAX_IMAGE_NAME_CHARS });
    }
    Ok(())
}

/// Checks an image description: at most 256 characters.
pub fn validate_image_description(description: &str) -> Result<(), NameError> {
    if description.chars().count() > MAX_IMAGE_DESCRIPTION_CHARS {
        return Err(NameError::TooLong { field: "ImageDescription", max: MAX_IMAGE_DESCRIPTION_CHARS });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use crate::region::RegionCatalog;
    use crate::ImageId;

    fn regions() -> RegionCatalog {
        RegionCatalog::default()
    }

    fn custom(owner: u64, region: &str) -> Image {
        let mut img = catalog::public_images().remove(0);
        img.id = ImageId::from_random([1; 8]);
        img.kind = ImageKind::Private;
        img.owner = Some(AccountId(owner));
        img.region = Some(region.to_owned());
        img
    }

    #[test]
    fn quota_defaults_to_ten_and_honours_overrides() {
        let limits = Limits::default();
        assert_eq!(limits.custom_image_quota(None), 10);
        assert_eq!(limits.custom_image_quota(Some(3)), 3);
        assert_eq!(limits.shares_per_image, 50);
    }

    #[test]
    fn custom_images_are_seen_by_owner_and_share_recipients_in_their_region_only() {
        let regions = regions();
        let gz = regions.get("ap-guangzhou").expect("gz");
        let sh = regions.get("ap-shanghai").expect("sh");
        let img = custom(1, "ap-guangzhou");
        assert_eq!(seen_as(&img, AccountId(1), gz, false), Some(ImageType::PrivateImage));
        assert_eq!(seen_as(&img, AccountId(2), gz, true), Some(ImageType::SharedImage));
        assert_eq!(seen_as(&img, AccountId(3), gz, false), None);
        assert_eq!(seen_as(&img, AccountId(1), sh, false), None);
        assert_eq!(seen_as(&img, AccountId(2), sh, true), None);
    }

    #[test]
    fn marketplace_images_are_offered_in_mainland_regions_only() {
        let regions = regions();
        let market = catalog::market_images().remove(0);
        assert_eq!(
            seen_as(&market, AccountId(9), regions.get("ap-beijing").expect("bj"), false),
            Some(ImageType::MarketImage)
        );
        assert_eq!(seen_as(&market, AccountId(9), regions.get("ap-tokyo").expect("tokyo"), false), None);
    }

    #[test]
    fn windows_pays_a_licence_fee_outside_the_mainland_only() {
        let regions = regions();
        let windows = catalog::public_images()
            .into_iter()
            .find(|i| i.platform == "Windows")
            .expect("a Windows image in the catalogue");
        let linux = catalog::public_images().remove(0);
        let hk = regions.get("ap-hongkong").expect("hk");
        let gz = regions.get("ap-guangzhou").expect("gz");
        assert!(licence_fee_applies(&windows, hk));
        assert!(!licence_fee_applies(&windows, gz));
        assert!(!licence_fee_applies(&linux, hk));
    }

    #[test]
    fn instance_types_map_to_architectures() {
        assert_eq!(architectures_for_instance_type("SR1.MEDIUM2"), Some(&[Architecture::Arm][..]));
        assert_eq!(architectures_for_instance_type("S5.LARGE8"), Some(&[Architecture::X86_64, Architecture::I386][..]));
        for bad in ["S5", "s5.large8", ".LARGE8", "S5.", "S5.LARGE.8", "5S.LARGE"] {
            assert_eq!(architectures_for_instance_type(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_descriptions_have_length_limits_in_characters() {
        assert!(validate_image_name("web-server").is_ok());
        assert!(validate_image_name(&"镜".repeat(60)).is_ok());
        assert_eq!(validate_image_name(&"a".repeat(61)), Err(NameError::TooLong { field: "ImageName", max: 60 }));
        assert_eq!(validate_image_name("  "), Err(NameError::Empty));
        assert!(validate_image_description(&"d".repeat(256)).is_ok());
        assert!(validate_image_description(&"d".repeat(257)).is_err());
    }
}
