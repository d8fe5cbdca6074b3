//! The image model: kinds, sources, states (with the state machine) and attributes.

use crate::ids::{AccountId, ImageId};
use crate::time::Timestamp;

wire_enum! {
    /// What an image is in the store, independent of who looks at it.
    ImageKind {
        /// Official, operator-provided, visible to everyone in every region.
        Public = "PUBLIC",
        /// A custom image owned by one account in one region.
        Private = "PRIVATE",
        /// A reviewed third-party image; visible to everyone in mainland-China regions only.
        Market = "MARKET",
    }
}

wire_enum! {
    /// An image's type as a given caller sees it (`Image.ImageType`, filter `image-type`).
    ImageType {
        /// Official image.
        PublicImage = "PUBLIC_IMAGE",
        /// A custom image the caller owns.
        PrivateImage = "PRIVATE_IMAGE",
        /// Someone else's custom image shared with the caller.
        SharedImage = "SHARED_IMAGE",
        /// Marketplace image.
        MarketImage = "MARKET_IMAGE",
    }
}

wire_enum! {
    /// Where an image came from (`Image.ImageSource`).
    ImageSource {
        /// Provided by the operator (public and marketplace catalogue).
        Official = "OFFICIAL",
        /// Captured from an instance.
        CreateImage = "CREATE_IMAGE",
        /// Imported from a URL or an upload.
        ExternalImport = "EXTERNAL_IMPORT",
    }
}

wire_enum! {
    /// An image's lifecycle state (`Image.ImageState`).
    ImageState {
        /// Being captured from an instance.
        Creating = "CREATING",
        /// Complete and usable.
        Normal = "NORMAL",
        /// Capture failed; the image holds no usable bytes.
        CreateFailed = "CREATEFAILED",
        /// Being copied to other regions (the source image).
        Syncing = "SYNCING",
        /// Being imported.
        Importing = "IMPORTING",
        /// Import failed; the image holds no usable bytes.
        ImportFailed = "IMPORTFAILED",
    }
}

wire_enum! {
    /// CPU architecture as `Image.Architecture` spells it.
    Architecture {
        /// 64-bit x86.
        X86_64 = "x86_64",
        /// 64-bit ARM.
        Arm = "arm",
        /// 32-bit x86.
        I386 = "i386",
    }
}

wire_enum! {
    /// Firmware the image boots with.
    BootMode {
        /// BIOS boot; the default. Note the space.
        LegacyBios = "Legacy BIOS",
        /// UEFI boot.
        Uefi = "UEFI",
    }
}

wire_enum! {
    /// Who licenses the OS.
    LicenseType {
        /// The platform's licence (the default).
        TencentCloud = "TencentCloud",
        /// Bring your own licence; such images cannot be shared.
        Byol = "BYOL",
    }
}

wire_enum! {
    /// Release status of a public image (the seeds' "Release Status" column).
    ReleaseStatus {
        /// Officially launched: anyone may use it.
        Official = "OFFICIAL",
        /// In beta test: an account must apply before using it.
        Beta = "BETA",
    }
}

impl Architecture {
    /// Maps ImportImage's vocabulary (`x86_64`, `i386`, `arm_64`) to the image's.
    pub fn from_import(s: &str) -> Option<Self> {
        match s {
            "x86_64" => Some(Self::X86_64),
            "i386" => Some(Self::I386),
            "arm_64" => Some(Self::Arm),
            _ => None,
        }
    }

    /// Bits of the architecture (the seeds select images by 32- or 64-bit).
    pub fn bits(self) -> u32 {
        match self {
            Self::I386 => 32,
            Self::X86_64 | Self::Arm => 64,
        }
    }
}

impl ImageState {
    /// Whether the state machine allows moving from `self` to `next`.
    ///
    /// Creating and importing end in NORMAL or their failure state; only a NORMAL image
    /// may start a copy (SYNCING) and a copy returns it to NORMAL. Failure states are final.
    pub fn can_transition_to(self, next: ImageState) -> bool {
        use ImageState::*;
        matches!(
            (self, next),
            (Creating, Normal)
                | (Creating, CreateFailed)
                | (Importing, Normal)
                | (Importing, ImportFailed)
                | (Normal, Syncing)
                | (Syncing, Normal)
        )
    }

    /// Whether an image in this state may be deleted (not while creating, syncing or importing).
    pub fn is_deletable(self) -> bool {
        matches!(self, Self::Normal | Self::CreateFailed | Self::ImportFailed)
    }

    /// Whether an image in this state can launch instances, be shared or be copied.
    pub fn is_usable(self) -> bool {
        self == Self::Normal
    }
}

/// A key/value tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tag {
    /// Tag key.
    pub key: String,
    /// Tag value.
    pub value: String,
}

/// What a marketplace listing adds to an image: who provides it, what it carries, its price.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MarketListing {
    /// The third-party provider that published the image.
    pub provider: String,
    /// The software stack installed on top of the OS.
    pub software: Vec<String>,
    /// The provider's price for the image, in CNY per instance-hour, on top of the instance's.
    pub price_cny_per_hour: String,
    /// Whether the service reviewed the image before release (every image on sale is).
    pub reviewed: bool,
    /// The listing's fee, when it has one (the built-in rows state theirs in
    /// `price_cny_per_hour`).
    #[serde(default)]
    pub fee: Option<crate::pricing::ImageFee>,
    /// Whether buyers may see and launch it: a version under review, replaced by a newer one,
    /// or withdrawn is off sale (instances already launched keep it).
    #[serde(default = "on_sale")]
    pub on_sale: bool,
}

fn on_sale() -> bool {
    true
}

/// An image, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Image {
    /// The id.
    pub id: ImageId,
    /// The region a custom image lives in; `None` for the catalogue (public and marketplace),
    /// which is offered in every region where its rules allow.
    pub region: Option<String>,
    /// The owning account of a custom image; `None` for the catalogue.
    pub owner: Option<AccountId>,
    /// Public, private (custom) or marketplace.
    pub kind: ImageKind,
    /// Where it came from.
    pub source: ImageSource,
    /// Lifecycle state.
    pub state: ImageState,
    /// Display name, unique per owner and region for custom images.
    pub name: String,
    /// Free-text description.
    pub description: String,
    /// Display OS name, e.g. `CentOS 7.6 64位`.
    pub os_name: String,
    /// OS family, e.g. `CentOS`, `Windows`.
    pub platform: String,
    /// The seeds' "OS Type" column, e.g. `TencentOS Server`, `Tlinux`.
    pub os_type: String,
    /// CPU architecture.
    pub architecture: Architecture,
    /// Virtual disk size in GiB.
    pub size_gib: u64,
    /// When the image was created.
    pub created_at: Timestamp,
    /// Firmware.
    pub boot_mode: BootMode,
    /// Licence.
    pub license_type: LicenseType,
    /// Family name, empty when none.
    pub family: String,
    /// Deprecated flag.
    pub deprecated: bool,
    /// Whether cloud-init is installed.
    pub supports_cloudinit: bool,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Release status (public images; custom images are always `Official`).
    pub release_status: ReleaseStatus,
    /// Kernel version, where known.
    pub kernel: Option<String>,
    /// Remarks shown with the image (the seeds' "Remarks" column).
    pub remarks: Vec<String>,
    /// Copy progress in percent while SYNCING.
    pub sync_percent: Option<u8>,
    /// Why the image failed, for CREATEFAILED / IMPORTFAILED.
    pub failure_reason: Option<String>,
    /// Marketplace listing, for marketplace images.
    pub market: Option<MarketListing>,
    /// The format the image's source was detected as at import (`raw`, `qcow2`, …), recorded
    /// so that no later tool ever probes it.
    #[serde(default)]
    pub source_format: Option<String>,
    /// Progress of the work filling the image (import, capture), in percent.
    #[serde(default)]
    pub progress: Option<u8>,
    /// The marketplace listing these bytes came from: set on a market image, and kept by every
    /// image captured from an instance of it, its copies and its shares (as product codes):
    /// launching it pays the listing's fee, and it cannot be exported or listed by anyone else.
    #[serde(default)]
    pub market_mark: Option<crate::market::ListingId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_round_trip() {
        for t in ImageType::ALL {
            assert_eq!(ImageType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(BootMode::parse("Legacy BIOS"), Some(BootMode::LegacyBios));
        assert_eq!(BootMode::parse("legacy bios"), None);
        assert_eq!(ImageState::ImportFailed.as_str(), "IMPORTFAILED");
    }

    #[test]
    fn state_machine_allows_only_documented_moves() {
        use ImageState::*;
        assert!(Importing.can_transition_to(Normal));
        assert!(Importing.can_transition_to(ImportFailed));
        assert!(Creating.can_transition_to(CreateFailed));
        assert!(Normal.can_transition_to(Syncing));
        assert!(Syncing.can_transition_to(Normal));
        assert!(!ImportFailed.can_transition_to(Normal));
        assert!(!Creating.can_transition_to(Syncing));
        assert!(!Normal.can_transition_to(Importing));
        for s in ImageState::ALL {
            assert!(!s.can_transition_to(*s), "{s} to itself");
        }
    }

    #[test]
    fn only_settled_images_are_deletable_and_only_normal_ones_usable() {
        use ImageState::*;
        let deletable: Vec<_> = ImageState::ALL.iter().filter(|s| s.is_deletable()).collect();
        assert_eq!(deletable, [&Normal, &CreateFailed, &ImportFailed]);
        let usable: Vec<_> = ImageState::ALL.iter().filter(|s| s.is_usable()).collect();
        assert_eq!(usable, [&Normal]);
    }

    #[test]
    fn import_architecture_vocabulary_maps_to_image_vocabulary() {
        assert_eq!(Architecture::from_import("arm_64"), Some(Architecture::Arm));
        assert_eq!(Architecture::from_import("arm"), None);
        assert_eq!(Architecture::I386.bits(), 32);
    }
}
