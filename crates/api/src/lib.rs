//! The Tencent Cloud API 3.0 surface of imaged.
//!
//! Layout:
//! - [`tc3`]: TC3-HMAC-SHA256 parsing, canonicalisation and verification.
//! - [`params`]: per-action parameter schemas; POST JSON and flattened GET queries coerced.
//! - [`error`]: every error code in one list, and [`ApiError`] with English/Chinese messages.
//! - [`listener`]: accepting and serving connections: timeouts, the connection cap, hyper's own
//!   error answers rewritten as envelopes.
//! - `server`: the axum router, the request pipeline and Tencent's envelope.
//! - `cvm`: CVM `2017-03-12` actions.
//! - `ext`: imaged's extension service (`imaged`, `2026-12-01`): `DescribeStorageQuota`.
//! - `market`: the marketplace's extension actions (listings).
//! - `pricing`: `InquiryPriceRunInstances`, `InquiryPriceResetInstance`, and the extension's
//!   `DescribePriceBreakdown`.
//! - `tke`: TKE `2018-05-25` actions: the OS catalogue, clusters, node pools and nodes.
//! - `transfer`: resumable uploads (`/upload`) and downloads of exported files (`/download`).
//!
//! This crate parses and answers; the use cases live in `imaged-app`.

mod compute;
mod cvm;
pub mod error;
mod ext;
pub mod listener;
mod market;
pub mod params;
mod pricing;
mod server;
mod share;
pub mod tc3;
mod tke;
mod transfer;

pub use error::ApiError;
pub use listener::{serve, ListenerLimits};
pub use server::{router, serve_metrics, MAX_POST_BYTES, MAX_QUERY_BYTES};
