//! imaged's use cases, the only place that combines the stores with the domain's rules.
//!
//! Layout:
//! - [`secrets`]: the master key in the data directory and sealing of API secret keys at rest.
//! - [`service`]: [`Service`], the façade the API and the operator commands call: bootstrap
//!   (catalogue, administrator), accounts and keys, authentication lookups, image listing.
//! - [`data`]: where bytes live: per-region block stores, uploads, scratch, export buckets.
//! - [`egress`]: which addresses import fetches may reach, and their timeouts.
//! - [`scratch`]: jobs' work files, sparse and bounded per job and per host.
//! - [`disk`]: reading an inspected image block by block (sparse raw, native qcow2, qemu-img).
//! - [`ingest`]: a disk into a manifest of stored blocks, bounded memory, hashing in parallel.
//! - [`uploads`]: resumable uploads stored straight into the block store, and a reader over them.
//! - [`imports`], [`exports`]: `ImportImage` and `ExportImages`, as requests and as jobs.
//! - [`instances`]: instances and their system disks (content-keyed bases, qcow2 overlays),
//!   launch, start/stop/reboot, reset and terminate as jobs.
//! - [`capture`]: `CreateImage` from an instance, incremental over the instance's base.
//! - [`images`]: the custom-image lifecycle: modify, delete, the usable image of a family.
//! - [`sharing`]: sharing custom images with other accounts of the region.
//! - [`sync`]: `SyncImages`, copying an image to other regions, moving only missing blocks.
//! - [`clock`]: the service's clock, which the rules about time read.
//! - [`tke`]: TKE node operating systems: the OS catalogue, clusters, node pools and nodes,
//!   beta applications, image-logic changes and their announcements.
//! - [`messages`]: the message centre and its webhook deliveries.
//! - [`market`]: marketplace providers and listings through review, the built-in listings.
//! - [`metering`]: usage segments written with instance states; usage and earnings.
//! - [`pricing`]: price quotes for launches and reinstalls, and their breakdown.
//! - [`jobs`]: the durable job runner (leases, retries, failure marking).
//! - `replay`: the replay check of signatures (the store's record, a memory cache in front).
//! - [`maintenance`]: garbage collection and fsck of the block stores.
//! - [`demo`]: real demo disks for the built-in catalogue.
//!
//! No HTTP types here: the API crate parses requests into calls on [`Service`].

pub mod capture;
pub mod clock;
pub mod data;
pub mod demo;
pub mod disk;
pub mod egress;
pub mod exports;
pub mod guests;
mod http;
pub mod images;
pub mod imports;
pub mod ingest;
pub mod instances;
pub mod jobs;
pub mod maintenance;
pub mod market;
pub mod messages;
pub mod metering;
pub mod metrics;
pub mod pricing;
mod replay;
pub mod scratch;
pub mod secrets;
pub mod service;
pub mod sharing;
pub mod sync;
pub mod tke;
pub mod uploads;
pub mod vm;

pub use secrets::{MasterKey, SecretsError};
pub use service::{AppError, Credentials, ImageListing, KeyInfo, Principal, Service};
