//! Sharing and cross-region copy: `ModifyImageSharePermission`, `DescribeImageSharePermission`,
//! `SyncImages`.

use imaged_app::images::ImageError;
use imaged_app::sharing::ShareError;
use imaged_app::sync::{SyncError, SyncRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compute::{image_error, name_error};
use crate::cvm::{parse, to_json, Ctx};
use crate::error::{code, ApiError};
use crate::params::{opt, req, Field, Ty};

/// `ModifyImageSharePermission` parameters.
pub(crate) const MODIFY_IMAGE_SHARE_PERMISSION: &[Field] =
    &[req("ImageId", Ty::Str), req("AccountIds", Ty::List(&Ty::Str)), req("Permission", Ty::Str)];
/// `DescribeImageSharePermission` parameters.
pub(crate) const DESCRIBE_IMAGE_SHARE_PERMISSION: &[Field] = &[req("ImageId", Ty::Str)];
/// `SyncImages` parameters.
pub(crate) const SYNC_IMAGES: &[Field] = &[
    req("ImageIds", Ty::List(&Ty::Str)),
    req("DestinationRegions", Ty::List(&Ty::Str)),
    opt("DryRun", Ty::Bool),
    opt("ImageName", Ty::Str),
    opt("ImageSetRequired", Ty::Bool),
    opt("Encrypt", Ty::Bool),
    opt("KmsKeyId", Ty::Str),
];

fn share_error(e: ShareError) -> ApiError {
    let c = match &e {
        ShareError::Image(_) => {
            let ShareError::Image(inner) = e else { return ApiError::internal(&"unreachable") };
            return image_error(inner);
        }
        ShareError::NotOwner(_) => code::IMAGE_NOT_BELONG_TO_ACCOUNT,
        ShareError::State(..) => code::INVALID_IMAGE_STATE,
        ShareError::Byol => code::BYOL_IMAGE_SHARE_FAILED,
        ShareError::NoSuchAccount(_) => code::INVALID_ACCOUNT_ID_NOT_FOUND,
        ShareError::Yourself => code::ACCOUNT_IS_YOURSELF,
        ShareError::AlreadyShared(_) => code::ACCOUNT_ALREADY_EXISTS,
        ShareError::Limit(_) => code::OVER_QUOTA,
        ShareError::Permission(_) => code::INVALID_PARAMETER_VALUE,
        ShareError::App(inner) => return ApiError::internal(inner),
    };
    ApiError::invalid_value(c, format!("{e}."))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyRequest {
    image_id: String,
    account_ids: Vec<String>,
    permission: String,
}

pub(crate) async fn modify_image_share_permission(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: ModifyRequest = parse(params)?;
    if req.account_ids.is_empty() {
        return Err(ApiError::missing("AccountIds"));
    }
    ctx.service
        .modify_share_permission(ctx.caller, ctx.region()?, &req.image_id, &req.account_ids, &req.permission)
        .await
        .map_err(share_error)?;
    Ok(b"{}".to_vec())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeRequest {
    image_id: String,
}

pub(crate) async fn describe_image_share_permission(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: DescribeRequest = parse(params)?;
    let shares = ctx.service.share_permissions(ctx.caller, ctx.region()?, &req.image_id).await.map_err(share_error)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct PermissionOut {
        created_time: String,
        account_id: String,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        share_permission_set: Vec<PermissionOut>,
    }
    to_json(&Out {
        share_permission_set: shares
            .into_iter()
            .map(|(account, at)| PermissionOut { created_time: at.iso8601(), account_id: account.to_string() })
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SyncImagesRequest {
    image_ids: Vec<String>,
    destination_regions: Vec<String>,
    dry_run: Option<bool>,
    image_name: Option<String>,
    image_set_required: Option<bool>,
    encrypt: Option<bool>,
}

fn sync_error(e: SyncError) -> ApiError {
    let c = match &e {
        SyncError::Image(ImageError::Shared(_) | ImageError::NotCustom(_)) => {
            code::INVALID_PARAMETER_VALUE_INVALID_IMAGE_ID
        }
        SyncError::Image(_) => {
            let SyncError::Image(inner) = e else { return ApiError::internal(&"unreachable") };
            return image_error(inner);
        }
        SyncError::OneImage => code::INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED,
        SyncError::NoRegions => code::MISSING_PARAMETER,
        SyncError::NoSuchRegion(_) => code::INVALID_REGION_NOT_FOUND,
        SyncError::Unavailable(_) => code::INVALID_REGION_UNAVAILABLE,
        SyncError::SameRegion(_) => code::INVALID_PARAMETER_VALUE_INVALID_REGION,
        SyncError::State(..) => code::INVALID_IMAGE_ID_INCORRECT_STATE,
        SyncError::Encrypt => code::ENCRYPTED_IMAGES_NOT_SUPPORTED,
        SyncError::Name(n) => name_error(n),
        SyncError::DuplicateName(_) => code::INVALID_IMAGE_NAME_DUPLICATE,
        SyncError::Quota => code::IMAGE_QUOTA_LIMIT_EXCEEDED,
        SyncError::App(inner) => return ApiError::internal(inner),
    };
    ApiError::invalid_value(c, format!("{e}."))
}

pub(crate) async fn sync_images(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: SyncImagesRequest = parse(params)?;
    let request = SyncRequest {
        image_ids: req.image_ids,
        regions: req.destination_regions,
        name: req.image_name,
        encrypt: req.encrypt.unwrap_or(false),
        dry_run: req.dry_run.unwrap_or(false),
    };
    let copies = ctx.service.sync_images(ctx.caller, ctx.region()?, request).await.map_err(sync_error)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct CopyOut {
        image_id: String,
        region: String,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        #[serde(skip_serializing_if = "Option::is_none")]
        image_set: Option<Vec<CopyOut>>,
    }
    let set = copies.into_iter().map(|(id, region)| CopyOut { image_id: id.to_string(), region }).collect();
    to_json(&Out { image_set: req.image_set_required.unwrap_or(false).then_some(set) })
}
