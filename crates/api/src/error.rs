//! Every error code the API can return, in one place, and [`ApiError`], which answers in
//! Tencent's envelope with a message in English or Chinese.

use imaged_app::AppError;
use imaged_domain::query::QueryError;

/// The error codes this service returns (Tencent's own spellings; clients match on them).
pub mod code {
    /// The key is unknown or disabled.
    pub const SECRET_ID_NOT_FOUND: &str = "AuthFailure.SecretIdNotFound";
    /// The `Authorization` header is missing, malformed or not TC3.
    pub const INVALID_AUTHORIZATION: &str = "AuthFailure.InvalidAuthorization";
    /// Timestamp more than 300 s from the server's clock.
    pub const SIGNATURE_EXPIRE: &str = "AuthFailure.SignatureExpire";
    /// The signature, scope date or scope service does not match.
    pub const SIGNATURE_FAILURE: &str = "AuthFailure.SignatureFailure";
    /// A temporary-credential token that this service cannot honour.
    pub const TOKEN_FAILURE: &str = "AuthFailure.TokenFailure";
    /// The caller's account may not do this.
    pub const UNAUTHORIZED_OPERATION: &str = "AuthFailure.UnauthorizedOperation";
    /// Something failed inside the service.
    pub const INTERNAL_ERROR: &str = "InternalError";
    /// Unknown action.
    pub const INVALID_ACTION: &str = "InvalidAction";
    /// Too many requests or connections at once.
    pub const REQUEST_LIMIT_EXCEEDED: &str = "RequestLimitExceeded";
    /// Bad parameter format or type.
    pub const INVALID_PARAMETER: &str = "InvalidParameter";
    /// Bad parameter value.
    pub const INVALID_PARAMETER_VALUE: &str = "InvalidParameterValue";
    /// A required parameter is missing.
    pub const MISSING_PARAMETER: &str = "MissingParameter";
    /// Unknown product (service).
    pub const NO_SUCH_PRODUCT: &str = "NoSuchProduct";
    /// Unknown API version.
    pub const NO_SUCH_VERSION: &str = "NoSuchVersion";
    /// Request body or query string over the size limit.
    pub const REQUEST_SIZE_LIMIT_EXCEEDED: &str = "RequestSizeLimitExceeded";
    /// A parameter this action does not define.
    pub const UNKNOWN_PARAMETER: &str = "UnknownParameter";
    /// Only GET and POST.
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    /// `ImageIds` together with `Filters`.
    pub const COEXIST_IMAGE_IDS_FILTERS: &str = "InvalidParameter.InvalidParameterCoexistImageIdsFilters";
    /// Unknown filter name.
    pub const INVALID_FILTER: &str = "InvalidFilter";
    /// Too many values in a filter.
    pub const INVALID_FILTER_VALUE_LIMIT_EXCEEDED: &str = "InvalidFilterValue.LimitExceeded";
    /// Too many values in a list parameter.
    pub const INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED: &str = "InvalidParameterValue.LimitExceeded";
    /// An account's storage quota is used up.
    pub const STORAGE_QUOTA_EXCEEDED: &str = "LimitExceeded.StorageQuota";
    /// `UserData` is not base64 of at most 16 KB.
    pub const INVALID_USER_DATA_FORMAT: &str = "InvalidParameterValue.InvalidUserDataFormat";
    /// `LoginSettings.Password` breaks the length or character-class rules.
    pub const INVALID_PASSWORD: &str = "InvalidParameterValue.InvalidPassword";
    /// `LoginSettings.KeyIds` names a key pair that does not exist.
    pub const KEY_PAIR_NOT_FOUND: &str = "InvalidParameterValue.KeyPairNotFound";
    /// `StopType` is not SOFT, HARD or SOFT_FIRST.
    pub const INVALID_STOP_TYPE: &str = "InvalidParameterValue";
    /// `Limit` out of range.
    pub const INVALID_PARAMETER_VALUE_LIMIT: &str = "InvalidParameterValue.InvalidParameterValueLimit";
    /// Malformed image id.
    pub const INVALID_IMAGE_ID_MALFORMED: &str = "InvalidImageId.Malformed";
    /// Malformed instance type.
    pub const INVALID_INSTANCE_TYPE_MALFORMED: &str = "InvalidInstanceType.Malformed";
    /// Unknown region.
    pub const INVALID_REGION_NOT_FOUND: &str = "InvalidRegion.NotFound";
    /// Region exists but is not available.
    pub const INVALID_REGION_UNAVAILABLE: &str = "InvalidRegion.Unavailable";

    /// A value longer than allowed.
    pub const INVALID_PARAMETER_VALUE_TOO_LARGE: &str = "InvalidParameterValue.TooLarge";
    /// Import OS type not supported.
    pub const INVALID_IMAGE_OS_TYPE: &str = "InvalidImageOsType.Unsupported";
    /// Import OS version not supported.
    pub const INVALID_IMAGE_OS_VERSION: &str = "InvalidImageOsVersion.Unsupported";
    /// Bad licence type.
    pub const INVALID_LICENSE_TYPE: &str = "InvalidParameterValue.InvalidLicenseType";
    /// Bad boot mode.
    pub const INVALID_BOOT_MODE: &str = "InvalidParameterValue.InvalidBootMode";
    /// Bad family name.
    pub const INVALID_IMAGE_FAMILY: &str = "InvalidParameterValue.InvalidImageFamily";
    /// Bad `ImageUrl`.
    pub const INVALID_PARAMETER_URL: &str = "InvalidParameter.InvalidParameterUrlError";
    /// ISO without `Force`.
    pub const ISO_MUST_IMPORT_BY_FORCE: &str = "InvalidParameterValue.ISOMustImportByForce";
    /// Custom-image quota used up.
    pub const IMAGE_QUOTA_LIMIT_EXCEEDED: &str = "ImageQuotaLimitExceeded";
    /// Image name taken.
    pub const INVALID_IMAGE_NAME_DUPLICATE: &str = "InvalidImageName.Duplicate";
    /// Not supported.
    pub const UNSUPPORTED_OPERATION: &str = "UnsupportedOperation";
    /// No such snapshot.
    pub const SNAPSHOT_NOT_FOUND: &str = "InvalidParameter.SnapshotNotFound";
    /// No such bucket.
    pub const BUCKET_NOT_FOUND: &str = "InvalidParameterValue.BucketNotFound";
    /// No such image.
    pub const INVALID_IMAGE_ID_NOT_FOUND: &str = "InvalidImageId.NotFound";
    /// Public images cannot be exported.
    pub const PUBLIC_IMAGE_EXPORT_UNSUPPORTED: &str = "UnsupportedOperation.PublicImageExportUnsupported";
    /// Shared images cannot be exported.
    pub const SHARED_IMAGE_EXPORT_UNSUPPORTED: &str = "UnsupportedOperation.SharedImageExportUnsupported";
    /// Marketplace images cannot be exported.
    pub const MARKET_IMAGE_EXPORT_UNSUPPORTED: &str = "UnsupportedOperation.MarketImageExportUnsupported";
    /// Windows images cannot be exported.
    pub const WINDOWS_IMAGE_EXPORT_UNSUPPORTED: &str = "UnsupportedOperation.WindowsImageExportUnsupported";
    /// Image state forbids the operation.
    pub const INVALID_IMAGE_STATE: &str = "InvalidParameterValue.InvalidImageState";
    /// Bad prefix list.
    pub const INVALID_FILE_NAME_PREFIX_LIST: &str = "InvalidParameterValue.InvalidFileNamePrefixList";
    /// No such upload.
    pub const RESOURCE_NOT_FOUND: &str = "ResourceNotFound";
    /// Malformed instance id.
    pub const INVALID_INSTANCE_ID_MALFORMED: &str = "InvalidInstanceId.Malformed";
    /// No such instance.
    pub const INVALID_INSTANCE_ID_NOT_FOUND: &str = "InvalidInstanceId.NotFound";
    /// The zone is not in the region.
    pub const INVALID_ZONE_MISMATCH_REGION: &str = "InvalidZone.MismatchRegion";
    /// Another operation is in progress on the instance.
    pub const INSTANCE_OPERATION_IN_PROGRESS: &str = "OperationDenied.InstanceOperationInProgress";
    /// `ClientToken` too long or not ASCII.
    pub const INVALID_CLIENT_TOKEN_TOO_LONG: &str = "InvalidClientToken.TooLong";
    /// Instance name too long.
    pub const INVALID_INSTANCE_NAME_TOO_LONG: &str = "InvalidInstanceName.TooLong";
    /// The image's state forbids the operation (delete, modify).
    pub const INVALID_IMAGE_ID_INCORRECT_STATE: &str = "InvalidImageId.IncorrectState";
    /// The image is shared with other accounts.
    pub const INVALID_IMAGE_ID_IN_SHARED: &str = "InvalidImageId.InShared";
    /// The image may not be used for this operation (public, marketplace).
    pub const INVALID_PARAMETER_VALUE_INVALID_IMAGE_ID: &str = "InvalidParameterValue.InvalidImageId";
    /// The id is of an image shared with the caller.
    pub const INVALID_IMAGE_ID_IS_SHARED: &str = "InvalidParameterValue.InvalidImageIdIsShared";
    /// A received shared image cannot be modified.
    pub const SHARED_IMAGE_MODIFY_UNSUPPORTED: &str = "UnsupportedOperation.SharedImageModifyUnsupported";
    /// One of an either/or pair is missing.
    pub const INVALID_PARAMETER_SPECIFY_ONE: &str = "InvalidParameter.SpecifyOneParameter";
    /// A value out of range.
    pub const INVALID_PARAMETER_VALUE_RANGE: &str = "InvalidParameterValue.Range";
    /// Already shared with that account.
    pub const ACCOUNT_ALREADY_EXISTS: &str = "FailedOperation.AccountAlreadyExists";
    /// Sharing with oneself.
    pub const ACCOUNT_IS_YOURSELF: &str = "FailedOperation.AccountIsYourSelf";
    /// BYOL images cannot be shared.
    pub const BYOL_IMAGE_SHARE_FAILED: &str = "FailedOperation.BYOLImageShareFailed";
    /// No such account.
    pub const INVALID_ACCOUNT_ID_NOT_FOUND: &str = "InvalidAccountId.NotFound";
    /// The share limit is reached.
    pub const OVER_QUOTA: &str = "OverQuota";
    /// The caller does not own the image.
    pub const IMAGE_NOT_BELONG_TO_ACCOUNT: &str = "UnauthorizedOperation.ImageNotBelongToAccount";
    /// A destination region that may not be used (the source's own).
    pub const INVALID_PARAMETER_VALUE_INVALID_REGION: &str = "InvalidParameterValue.InvalidRegion";
    /// Encrypted images are not supported.
    pub const ENCRYPTED_IMAGES_NOT_SUPPORTED: &str = "UnsupportedOperation.EncryptedImagesNotSupported";
    /// The instance's state forbids the operation, one code per state.
    pub const INSTANCE_STATE_PENDING: &str = "UnsupportedOperation.InstanceStatePending";
    /// See [`INSTANCE_STATE_PENDING`].
    pub const INSTANCE_STATE_LAUNCH_FAILED: &str = "UnsupportedOperation.InstanceStateLaunchFailed";
    /// See [`INSTANCE_STATE_PENDING`].
    pub const INSTANCE_STATE_RUNNING: &str = "UnsupportedOperation.InstanceStateRunning";
    /// See [`INSTANCE_STATE_PENDING`].
    pub const INSTANCE_STATE_STOPPED: &str = "UnsupportedOperation.InstanceStateStopped";
    /// See [`INSTANCE_STATE_PENDING`].
    pub const INSTANCE_STATE_STARTING: &str = "UnsupportedOperation.InstanceStateStarting";
    /// See [`INSTANCE_STATE_PENDING`].
    pub const INSTANCE_STATE_STOPPING: &str = "UnsupportedOperation.InstanceStateStopping";
    /// See [`INSTANCE_STATE_PENDING`].
    pub const INSTANCE_STATE_REBOOTING: &str = "UnsupportedOperation.InstanceStateRebooting";
    /// See [`INSTANCE_STATE_PENDING`].
    pub const INSTANCE_STATE_SHUTDOWN: &str = "UnsupportedOperation.InstanceStateShutdown";
    /// See [`INSTANCE_STATE_PENDING`].
    pub const INSTANCE_STATE_TERMINATING: &str = "UnsupportedOperation.InstanceStateTerminating";

    /// TKE: the OS (name or image) is not one TKE supports, or it was retired.
    pub const OS_NOT_SUPPORT: &str = "InvalidParameter.OsNotSupport";
    /// TKE: the image of an OS reference does not exist or cannot be used.
    pub const IMAGE_ID_NOT_FOUND: &str = "InternalError.ImageIdNotFound";
    /// TKE `ModifyClusterNodePool`: the image of `OsName` does not exist.
    pub const IMAGE_NOT_FOUND_VALUE: &str = "InvalidParameterValue.ImageNotFound";
    /// TKE: a parameter is malformed or out of range.
    pub const TKE_PARAM: &str = "InvalidParameter.Param";
    /// TKE: no such cluster (node pool actions, `DescribeClusters`…).
    pub const RESOURCE_CLUSTER_NOT_FOUND: &str = "ResourceNotFound.ClusterNotFound";
    /// TKE `DescribeClusterInstances`: no such cluster.
    pub const PARAM_CLUSTER_NOT_FOUND: &str = "InvalidParameter.ClusterNotFound";
    /// TKE `AddExistedInstances`: no such cluster.
    pub const FAILED_CLUSTER_NOT_FOUND: &str = "FailedOperation.ClusterNotFound";
    /// TKE: the operation is not allowed (a beta OS without approval, deletion protection).
    pub const OPERATION_DENIED: &str = "OperationDenied";

    /// The price table has no such instance type in the region.
    pub const INSTANCE_TYPE_NOT_FOUND: &str = "InvalidParameterValue.InstanceTypeNotFound";
    /// The image's architecture does not run on the instance type.
    pub const IMAGE_FOR_GIVEN_INSTANCE_TYPE: &str = "InvalidParameterValue.InvalidImageForGivenInstanceType";

    /// The code for an operation refused in `state`.
    pub fn instance_state(state: imaged_domain::instance::InstanceState) -> &'static str {
        use imaged_domain::instance::InstanceState as S;
        match state {
            S::Pending => INSTANCE_STATE_PENDING,
            S::LaunchFailed => INSTANCE_STATE_LAUNCH_FAILED,
            S::Running => INSTANCE_STATE_RUNNING,
            S::Stopped => INSTANCE_STATE_STOPPED,
            S::Starting => INSTANCE_STATE_STARTING,
            S::Stopping => INSTANCE_STATE_STOPPING,
            S::Rebooting => INSTANCE_STATE_REBOOTING,
            S::Shutdown => INSTANCE_STATE_SHUTDOWN,
            S::Terminating => INSTANCE_STATE_TERMINATING,
        }
    }

    /// Every code above, for documentation and tests.
    pub const ALL: &[&str] = &[
        INSTANCE_TYPE_NOT_FOUND,
        IMAGE_FOR_GIVEN_INSTANCE_TYPE,
        OS_NOT_SUPPORT,
        IMAGE_ID_NOT_FOUND,
        IMAGE_NOT_FOUND_VALUE,
        TKE_PARAM,
        RESOURCE_CLUSTER_NOT_FOUND,
        PARAM_CLUSTER_NOT_FOUND,
        FAILED_CLUSTER_NOT_FOUND,
        OPERATION_DENIED,
        INVALID_PARAMETER_VALUE_TOO_LARGE,
        INVALID_IMAGE_OS_TYPE,
        INVALID_IMAGE_OS_VERSION,
        INVALID_LICENSE_TYPE,
        INVALID_BOOT_MODE,
        INVALID_IMAGE_FAMILY,
        INVALID_PARAMETER_URL,
        ISO_MUST_IMPORT_BY_FORCE,
        IMAGE_QUOTA_LIMIT_EXCEEDED,
        INVALID_IMAGE_NAME_DUPLICATE,
        UNSUPPORTED_OPERATION,
        SNAPSHOT_NOT_FOUND,
        BUCKET_NOT_FOUND,
        INVALID_IMAGE_ID_NOT_FOUND,
        PUBLIC_IMAGE_EXPORT_UNSUPPORTED,
        SHARED_IMAGE_EXPORT_UNSUPPORTED,
        MARKET_IMAGE_EXPORT_UNSUPPORTED,
        WINDOWS_IMAGE_EXPORT_UNSUPPORTED,
        INVALID_IMAGE_STATE,
        INVALID_FILE_NAME_PREFIX_LIST,
        RESOURCE_NOT_FOUND,
        SECRET_ID_NOT_FOUND,
        INVALID_AUTHORIZATION,
        SIGNATURE_EXPIRE,
        SIGNATURE_FAILURE,
        TOKEN_FAILURE,
        UNAUTHORIZED_OPERATION,
        INTERNAL_ERROR,
        INVALID_ACTION,
        REQUEST_LIMIT_EXCEEDED,
        INVALID_PARAMETER,
        INVALID_PARAMETER_VALUE,
        MISSING_PARAMETER,
        NO_SUCH_PRODUCT,
        NO_SUCH_VERSION,
        REQUEST_SIZE_LIMIT_EXCEEDED,
        UNKNOWN_PARAMETER,
        UNSUPPORTED_PROTOCOL,
        COEXIST_IMAGE_IDS_FILTERS,
        INVALID_FILTER,
        INVALID_FILTER_VALUE_LIMIT_EXCEEDED,
        INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED,
        INVALID_USER_DATA_FORMAT,
        INVALID_PASSWORD,
        KEY_PAIR_NOT_FOUND,
        STORAGE_QUOTA_EXCEEDED,
        INVALID_PARAMETER_VALUE_LIMIT,
        INVALID_IMAGE_ID_MALFORMED,
        INVALID_INSTANCE_TYPE_MALFORMED,
        INVALID_REGION_NOT_FOUND,
        INVALID_REGION_UNAVAILABLE,
        INVALID_INSTANCE_ID_MALFORMED,
        INVALID_INSTANCE_ID_NOT_FOUND,
        INVALID_ZONE_MISMATCH_REGION,
        INSTANCE_OPERATION_IN_PROGRESS,
        INVALID_INSTANCE_NAME_TOO_LONG,
        INVALID_CLIENT_TOKEN_TOO_LONG,
        INVALID_IMAGE_ID_INCORRECT_STATE,
        INVALID_IMAGE_ID_IN_SHARED,
        INVALID_PARAMETER_VALUE_INVALID_IMAGE_ID,
        INVALID_IMAGE_ID_IS_SHARED,
        SHARED_IMAGE_MODIFY_UNSUPPORTED,
        INVALID_PARAMETER_SPECIFY_ONE,
        INVALID_PARAMETER_VALUE_RANGE,
        ACCOUNT_ALREADY_EXISTS,
        ACCOUNT_IS_YOURSELF,
        BYOL_IMAGE_SHARE_FAILED,
        INVALID_ACCOUNT_ID_NOT_FOUND,
        OVER_QUOTA,
        IMAGE_NOT_BELONG_TO_ACCOUNT,
        INVALID_PARAMETER_VALUE_INVALID_REGION,
        ENCRYPTED_IMAGES_NOT_SUPPORTED,
        INSTANCE_STATE_PENDING,
        INSTANCE_STATE_LAUNCH_FAILED,
        INSTANCE_STATE_RUNNING,
        INSTANCE_STATE_STOPPED,
        INSTANCE_STATE_STARTING,
        INSTANCE_STATE_STOPPING,
        INSTANCE_STATE_REBOOTING,
        INSTANCE_STATE_SHUTDOWN,
        INSTANCE_STATE_TERMINATING,
    ];
}

/// The language of `Error.Message`, from `X-TC-Language` (Tencent's default is Chinese).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `zh-CN`, the default.
    Chinese,
    /// `en-US`.
    English,
}

impl Language {
    /// From the header value; anything but `en-US` means Chinese, as on Tencent Cloud.
    pub fn from_header(value: Option<&str>) -> Self {
        match value {
            Some(v) if v.eq_ignore_ascii_case("en-US") => Language::English,
            _ => Language::Chinese,
        }
    }
}

/// An API error: a code from [`code`] and a message in both languages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code.
    pub code: &'static str,
    /// English message.
    pub en: String,
    /// Chinese message.
    pub zh: String,
}

impl ApiError {
    /// An error with messages in both languages.
    pub fn new(code: &'static str, en: impl Into<String>, zh: impl Into<String>) -> Self {
        Self { code, en: en.into(), zh: zh.into() }
    }

    /// The message in `lang`.
    pub fn message(&self, lang: Language) -> &str {
        match lang {
            Language::English => &self.en,
            Language::Chinese => &self.zh,
        }
    }

    /// An internal failure: logged in full here, answered without detail.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!("internal error: {cause}");
        Self::new(code::INTERNAL_ERROR, "An internal error occurred. Please retry later.", "内部错误，请稍后重试。")
    }

    /// A required parameter is missing.
    pub fn missing(name: &str) -> Self {
        Self::new(
            code::MISSING_PARAMETER,
            format!("The request is missing a required parameter `{name}`."),
            format!("缺少必需参数 `{name}`。"),
        )
    }

    /// A parameter has the wrong type or format.
    pub fn invalid_parameter(name: &str, what: &str) -> Self {
        Self::new(
            code::INVALID_PARAMETER,
            format!("The parameter `{name}` is invalid: {what}."),
            format!("参数 `{name}` 格式错误：{what}。"),
        )
    }

    /// A parameter's value is not acceptable.
    pub fn invalid_value(code: &'static str, en: String) -> Self {
        let zh = format!("参数取值错误：{en}");
        Self::new(code, en, zh)
    }

    /// The signature does not verify.
    pub fn signature_failure(why: &str) -> Self {
        Self::new(
            code::SIGNATURE_FAILURE,
            format!("The provided credentials could not be validated ({why}). Please check your signature is correct."),
            format!("请求签名验证失败（{why}），请检查您的签名计算是否正确。"),
        )
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let c = match &e {
            QueryError::IdsAndFilters => code::COEXIST_IMAGE_IDS_FILTERS,
            QueryError::UnknownFilter(_) => code::INVALID_FILTER,
            QueryError::TooManyValues(_) => code::INVALID_FILTER_VALUE_LIMIT_EXCEEDED,
            QueryError::TooManyFilters | QueryError::TooManyIds => code::INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED,
            QueryError::NoValues(_) | QueryError::BadImageType(_) => code::INVALID_PARAMETER_VALUE,
            QueryError::MalformedImageId(_) => code::INVALID_IMAGE_ID_MALFORMED,
            QueryError::MalformedInstanceId(_) => code::INVALID_INSTANCE_ID_MALFORMED,
            QueryError::LimitTooLarge => code::INVALID_PARAMETER_VALUE_LIMIT,
        };
        Self::invalid_value(c, e.to_string())
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self::internal(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_dotted_tencent_style() {
        let mut seen = std::collections::HashSet::new();
        for c in code::ALL {
            assert!(seen.insert(c), "{c} listed twice");
            assert!(c.split('.').all(|part| part.chars().next().is_some_and(|ch| ch.is_ascii_uppercase())), "{c}");
        }
    }

    #[test]
    fn language_defaults_to_chinese_like_tencent() {
        assert_eq!(Language::from_header(None), Language::Chinese);
        assert_eq!(Language::from_header(Some("zh-CN")), Language::Chinese);
        assert_eq!(Language::from_header(Some("en-US")), Language::English);
        let e = ApiError::missing("ImageId");
        assert!(e.message(Language::English).contains("ImageId"));
        assert!(e.message(Language::Chinese).contains("缺少"));
    }
}
