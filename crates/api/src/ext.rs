//! imaged's extension service (`imaged`, version `2026-12-01`): what imaged offers beyond
//! Tencent's actions, signed and enveloped like them (the SDKs' common client reaches it):
//! `DescribeStorageQuota`; for TKE's beta images `ApplyForBetaImage` and
//! `DescribeBetaImageApplications`; the message centre's `DescribeMessages` and
//! `MarkMessagesRead`.

use imaged_domain::time::Timestamp;
use imaged_domain::tke::BetaApplication;
use imaged_domain::MessageId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cvm::{parse, to_json, Ctx};
use crate::error::{code, ApiError};
use crate::params::{opt, req, Field, Ty};

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

/// `ApplyForBetaImage` parameters.
pub(crate) const APPLY_FOR_BETA_IMAGE: &[Field] = &[req("OsName", Ty::Str), opt("Reason", Ty::Str)];
/// `DescribeBetaImageApplications` parameters.
pub(crate) const DESCRIBE_BETA_IMAGE_APPLICATIONS: &[Field] = &[];
/// `DescribeMessages` parameters.
pub(crate) const DESCRIBE_MESSAGES: &[Field] =
    &[opt("Offset", Ty::UInt), opt("Limit", Ty::UInt), opt("UnreadOnly", Ty::Bool)];
/// `MarkMessagesRead` parameters.
pub(crate) const MARK_MESSAGES_READ: &[Field] = &[req("MessageIds", Ty::List(&Ty::Str))];

/// Longest `Reason` of a beta application, in characters.
const MAX_REASON_CHARS: usize = 1000;

/// `BetaImageApplication`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ApplicationOut<'a> {
    application_id: &'a str,
    os_name: &'a str,
    reason: &'a str,
    status: &'static str,
    decision_reason: Option<&'a str>,
    created_time: String,
    decided_time: Option<String>,
}

fn application_out(a: &BetaApplication) -> ApplicationOut<'_> {
    ApplicationOut {
        application_id: a.id.as_str(),
        os_name: &a.os_name,
        reason: &a.reason,
        status: a.status.as_str(),
        decision_reason: a.decision_reason.as_deref(),
        created_time: a.created_at.iso8601(),
        decided_time: a.decided_at.map(Timestamp::iso8601),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApplyIn {
    os_name: String,
    reason: Option<String>,
}

/// `ApplyForBetaImage`: files the caller's application to use a beta OS (`Status` `PENDING`;
/// an open application is returned again).
pub(crate) async fn apply_for_beta_image(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: ApplyIn = parse(params)?;
    let reason = r.reason.unwrap_or_default();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE_TOO_LARGE,
            format!("Reason is longer than {MAX_REASON_CHARS} characters."),
        ));
    }
    let a = ctx
        .service
        .apply_for_beta(ctx.caller, &r.os_name, &reason)
        .await
        .map_err(|e| crate::tke::tke_error(e, crate::tke::CODES))?;
    to_json(&application_out(&a))
}

/// `DescribeBetaImageApplications`: the caller's applications, oldest first.
pub(crate) async fn describe_beta_image_applications(ctx: &Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let all = ctx.service.beta_applications(Some(ctx.caller)).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: usize,
        application_set: Vec<ApplicationOut<'a>>,
    }
    to_json(&Out { total_count: all.len(), application_set: all.iter().map(application_out).collect() })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MessagesIn {
    offset: Option<u64>,
    limit: Option<u64>,
    unread_only: Option<bool>,
}

/// `Message`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MessageOut<'a> {
    message_id: &'a str,
    category: &'a str,
    title: &'a str,
    content: &'a str,
    created_time: String,
    effective_time: Option<String>,
    read: bool,
}

/// `DescribeMessages`: the caller's message centre, newest first.
pub(crate) async fn describe_messages(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: MessagesIn = parse(params)?;
    let limit = r.limit.unwrap_or(20);
    if limit > imaged_app::messages::MAX_MESSAGES_PAGE {
        return Err(ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE_LIMIT,
            format!("Limit must be at most {}.", imaged_app::messages::MAX_MESSAGES_PAGE),
        ));
    }
    let (total, page) =
        ctx.service.describe_messages(ctx.caller, r.unread_only.unwrap_or(false), r.offset.unwrap_or(0), limit).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: u64,
        message_set: Vec<MessageOut<'a>>,
    }
    let set = page
        .iter()
        .map(|m| MessageOut {
            message_id: m.id.as_str(),
            category: &m.category,
            title: &m.title,
            content: &m.content,
            created_time: m.created_at.iso8601(),
            effective_time: m.effective_at.map(Timestamp::iso8601),
            read: m.read,
        })
        .collect();
    to_json(&Out { total_count: total, message_set: set })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MarkIn {
    message_ids: Vec<String>,
}

/// `MarkMessagesRead`: marks the caller's messages read (`MarkedCount`: those that were unread).
pub(crate) async fn mark_messages_read(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: MarkIn = parse(params)?;
    let ids = r
        .message_ids
        .iter()
        .map(|s| {
            MessageId::parse(s).map_err(|_| {
                ApiError::invalid_value(code::INVALID_PARAMETER_VALUE, format!("malformed message id `{s}`."))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = ctx.service.mark_messages_read(ctx.caller, &ids).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        marked_count: u64,
    }
    to_json(&Out { marked_count: n })
}
