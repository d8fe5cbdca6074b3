//! The pure domain of imaged: what the service models and the rules the seeds set.
//!
//! Layout:
//! - [`ids`]: identifiers (`img-xxxxxxxx`, account ids, API key ids) and their parsing.
//! - [`time`]: Unix timestamps and the ISO 8601 / date forms the wire uses.
//! - [`image`]: the image model, its kinds, sources, states and the state machine.
//! - [`region`]: regions and zones, each region flagged mainland China or not.
//! - [`catalog`]: the built-in public and marketplace image catalogue (from the seeds).
//! - [`query`]: `DescribeImages` filters as a pure matcher over images a caller can see.
//! - [`rules`]: the seeds' rules as functions (quotas, licence fees, visibility, names).
//!
//! This crate does no I/O and knows no runtime: randomness and clocks are passed in.

pub mod catalog;
pub mod ids;
pub mod image;
pub mod import;
pub mod query;
pub mod region;
pub mod rules;
pub mod time;

pub use ids::{AccountId, IdError, ImageId, SecretId};
pub use image::{
    Architecture, BootMode, Image, ImageKind, ImageSource, ImageState, ImageType, LicenseType, ReleaseStatus, Tag,
};
pub use region::{Region, RegionCatalog, Zone};
