//! imaged's use cases, the only place that combines the stores with the domain's rules.
//!
//! Layout:
//! - [`secrets`]: the master key in the data directory and sealing of API secret keys at rest.
//! - [`service`]: [`Service`], the façade the API and the operator commands call: bootstrap
//!   (catalogue, administrator), accounts and keys, authentication lookups, image listing.
//!
//! No HTTP types here: the API crate parses requests into calls on [`Service`].

pub mod secrets;
pub mod service;

pub use secrets::{MasterKey, SecretsError};
pub use service::{AppError, Credentials, ImageListing, KeyInfo, Principal, Service};
