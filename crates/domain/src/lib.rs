//! The pure domain of imaged: what the service models and the rules the seeds set.
//!
//! Layout:
//! - [`ids`]: identifiers (`img-xxxxxxxx`, account ids, API key ids) and their parsing.
//! - [`time`]: Unix timestamps and the ISO 8601 / date forms the wire uses.
//! - [`image`]: the image model, its kinds, sources, states and the state machine.
//! - [`instance`]: instances (ids, states, operations) and the launch and capture rules.
//! - [`region`]: regions and zones, each region flagged mainland China or not.
//! - [`catalog`]: the built-in public and marketplace image catalogue (from the seeds).
//! - [`market`]: marketplace listings: terms, who may list what, the lifecycle, the mark.
//! - [`metering`]: usage segments, what a range of them costs, providers' earnings.
//! - [`pricing`]: the price table, marketplace fees and what a launch costs, in minor units.
//! - [`query`]: `DescribeImages` filters as a pure matcher over images a caller can see.
//! - [`rules`]: the seeds' rules as functions (quotas, licence fees, visibility, names).
//! - [`tke`]: TKE node operating systems: the OS catalogue, which level's OS each node
//!   operation uses, beta gating, the week's notice of image-logic changes, clusters and pools.
//!
//! This crate does no I/O and knows no runtime: randomness and clocks are passed in.

/// An enum with its wire spelling per variant: `ALL`, `as_str`, `parse` and `Display`.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as the API spells it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses the API spelling (exact, case-sensitive).
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod catalog;
pub mod ids;
pub mod image;
pub mod import;
pub mod instance;
pub mod market;
pub mod metering;
pub mod pricing;
pub mod query;
pub mod region;
pub mod rules;
pub mod time;
pub mod tke;

pub use ids::{AccountId, ApplicationId, ClusterId, IdError, ImageId, InstanceId, MessageId, NodePoolId, SecretId};
pub use image::{
    Architecture, BootMode, Image, ImageKind, ImageSource, ImageState, ImageType, LicenseType, ReleaseStatus, Tag,
};
pub use region::{Region, RegionCatalog, Zone};
