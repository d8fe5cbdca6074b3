//! imaged's extension service (`imaged`, version `2026-12-01`): what imaged offers beyond
//! Tencent's actions, signed and enveloped like them (the SDKs' common client reaches it).

use serde::Serialize;

use crate::cvm::{to_json, Ctx};
use crate::error::ApiError;

/// The extension service's name (credential scope).
pub(crate) const SERVICE: &str = "imaged";
/// Its one version.
pub(crate) const VERSION: &str = "2026-12-01";

/// `DescribeStorageQuota`: the caller's storage quota and what uses it, in bytes.
pub(crate) async fn describe_storage_quota(ctx: &Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        quota_bytes: u64,
        used_bytes: u64,
        image_bytes: u64,
        upload_bytes: u64,
    }
    let u = ctx.service.storage_usage(ctx.caller).await?;
    to_json(&Out {
        quota_bytes: u.quota_bytes,
        used_bytes: u.image_bytes.saturating_add(u.upload_bytes),
        image_bytes: u.image_bytes,
        upload_bytes: u.upload_bytes,
    })
}
