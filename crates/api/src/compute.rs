//! CVM instance actions and the custom-image lifecycle built on them: `RunInstances`,
//! `DescribeInstances`, `DescribeInstancesStatus`, start/stop/reboot/reset/terminate,
//! `CreateImage`, `ModifyImageAttribute`, `DeleteImages`, `DescribeImageFromFamily`.

use imaged_app::capture::{CaptureError, CaptureRequest};
use imaged_app::guests::GuestView;
use imaged_app::images::{ImageChanges, ImageError};
use imaged_app::instances::{GuestInput, InstanceError, RunRequest};
use imaged_domain::instance::{Instance, InstanceOp, InstanceQuery, InstanceRuleError};
use imaged_domain::query::Page;
use imaged_domain::rules::NameError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cvm::{domain_filters, image_out, parse, tags_of, to_json, Ctx, FilterIn, TagOut, TagSpecIn, TAG_SPEC};
use crate::error::{code, ApiError};
use crate::params::{opt, req, Field, Ty, FILTER};

const PLACEMENT: &[Field] = &[
    req("Zone", Ty::Str),
    opt("ProjectId", Ty::Int),
    opt("HostIds", Ty::List(&Ty::Str)),
    opt("DedicatedClusterId", Ty::Str),
];
const SYSTEM_DISK: &[Field] = &[opt("DiskType", Ty::Str), opt("DiskSize", Ty::Int), opt("DiskId", Ty::Str)];
const LOGIN_SETTINGS: &[Field] =
    &[opt("Password", Ty::Str), opt("KeyIds", Ty::List(&Ty::Str)), opt("KeepImageLogin", Ty::Str)];
const INSTANCE_IDS: Field = req("InstanceIds", Ty::List(&Ty::Str));

/// `RunInstances` parameters (the image-relevant core of the reference).
pub(crate) const RUN_INSTANCES: &[Field] = &[
    req("Placement", Ty::Obj(PLACEMENT)),
    req("ImageId", Ty::Str),
    opt("InstanceType", Ty::Str),
    opt("InstanceChargeType", Ty::Str),
    opt("InstanceCount", Ty::Int),
    opt("MinCount", Ty::Int),
    opt("InstanceName", Ty::Str),
    opt("HostName", Ty::Str),
    opt("LoginSettings", Ty::Obj(LOGIN_SETTINGS)),
    opt("UserData", Ty::Str),
    opt("ClientToken", Ty::Str),
    opt("DryRun", Ty::Bool),
    opt("SystemDisk", Ty::Obj(SYSTEM_DISK)),
    opt("TagSpecification", Ty::List(&Ty::Obj(TAG_SPEC))),
    opt("SecurityGroupIds", Ty::List(&Ty::Str)),
    opt("DisableApiTermination", Ty::Bool),
];
/// `DescribeInstances` parameters.
pub(crate) const DESCRIBE_INSTANCES: &[Field] = &[
    opt("InstanceIds", Ty::List(&Ty::Str)),
    opt("Filters", Ty::List(&Ty::Obj(FILTER))),
    opt("Offset", Ty::Int),
    opt("Limit", Ty::Int),
];
/// `DescribeInstancesStatus` parameters.
pub(crate) const DESCRIBE_INSTANCES_STATUS: &[Field] =
    &[opt("InstanceIds", Ty::List(&Ty::Str)), opt("Offset", Ty::Int), opt("Limit", Ty::Int)];
/// `StartInstances` parameters.
pub(crate) const START_INSTANCES: &[Field] = &[INSTANCE_IDS];
/// `StopInstances` parameters.
pub(crate) const STOP_INSTANCES: &[Field] =
    &[INSTANCE_IDS, opt("StopType", Ty::Str), opt("StoppedMode", Ty::Str), opt("ForceStop", Ty::Bool)];
/// `RebootInstances` parameters.
pub(crate) const REBOOT_INSTANCES: &[Field] = &[INSTANCE_IDS, opt("StopType", Ty::Str), opt("ForceReboot", Ty::Bool)];
/// `TerminateInstances` parameters.
pub(crate) const TERMINATE_INSTANCES: &[Field] =
    &[INSTANCE_IDS, opt("ReleaseAddress", Ty::Bool), opt("ReleasePrepaidDataDisks", Ty::Bool)];
/// `DescribeInstanceConsoleOutput` (extension) parameters.
pub(crate) const DESCRIBE_INSTANCE_CONSOLE_OUTPUT: &[Field] = &[req("InstanceId", Ty::Str)];
/// `ResetInstance` parameters.
pub(crate) const RESET_INSTANCE: &[Field] = &[
    req("InstanceId", Ty::Str),
    opt("ImageId", Ty::Str),
    opt("SystemDisk", Ty::Obj(SYSTEM_DISK)),
    opt("LoginSettings", Ty::Obj(LOGIN_SETTINGS)),
    opt("HostName", Ty::Str),
    opt("UserData", Ty::Str),
];
/// `CreateImage` parameters.
pub(crate) const CREATE_IMAGE: &[Field] = &[
    req("ImageName", Ty::Str),
    opt("InstanceId", Ty::Str),
    opt("ImageDescription", Ty::Str),
    opt("ForcePoweroff", Ty::BoolStr),
    opt("Sysprep", Ty::BoolStr),
    opt("DataDiskIds", Ty::List(&Ty::Str)),
    opt("SnapshotIds", Ty::List(&Ty::Str)),
    opt("DryRun", Ty::Bool),
    opt("TagSpecification", Ty::List(&Ty::Obj(TAG_SPEC))),
    opt("ImageFamily", Ty::Str),
];
/// `ModifyImageAttribute` parameters.
pub(crate) const MODIFY_IMAGE_ATTRIBUTE: &[Field] = &[
    req("ImageId", Ty::Str),
    opt("ImageName", Ty::Str),
    opt("ImageDescription", Ty::Str),
    opt("ImageFamily", Ty::Str),
    opt("ImageDeprecated", Ty::Bool),
];
/// `DeleteImages` parameters.
pub(crate) const DELETE_IMAGES: &[Field] =
    &[req("ImageIds", Ty::List(&Ty::Str)), opt("DeleteBindedSnap", Ty::Bool), opt("DryRun", Ty::Bool)];
/// `DescribeImageFromFamily` parameters.
pub(crate) const DESCRIBE_IMAGE_FROM_FAMILY: &[Field] = &[opt("ImageFamily", Ty::Str)];

pub(crate) fn instance_error(e: InstanceError) -> ApiError {
    use InstanceError as E;
    let c = match &e {
        E::Rule(InstanceRuleError::State(s)) => code::instance_state(*s),
        E::Rule(InstanceRuleError::Busy) => code::INSTANCE_OPERATION_IN_PROGRESS,
        E::Rule(InstanceRuleError::NameTooLong) => code::INVALID_INSTANCE_NAME_TOO_LONG,
        E::Rule(InstanceRuleError::ClientToken) => code::INVALID_CLIENT_TOKEN_TOO_LONG,
        E::Rule(InstanceRuleError::Count | InstanceRuleError::DiskSize { .. }) => code::INVALID_PARAMETER_VALUE_RANGE,
        E::Rule(InstanceRuleError::NamePattern(_)) => code::INVALID_PARAMETER_VALUE,
        E::Zone(_) => code::INVALID_ZONE_MISMATCH_REGION,
        E::ImageMalformed(_) => code::INVALID_IMAGE_ID_MALFORMED,
        E::ImageNotFound(_) => code::INVALID_IMAGE_ID_NOT_FOUND,
        E::ImageState(..) => code::INVALID_IMAGE_STATE,
        E::InstanceMalformed(_) => code::INVALID_INSTANCE_ID_MALFORMED,
        E::InstanceNotFound(_) => code::INVALID_INSTANCE_ID_NOT_FOUND,
        E::TooManyIds => code::INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED,
        E::App(inner) => return ApiError::internal(inner),
    };
    ApiError::invalid_value(c, format!("{e}."))
}

pub(crate) fn name_error(e: &NameError) -> &'static str {
    match e {
        NameError::TooLong { .. } => code::INVALID_PARAMETER_VALUE_TOO_LARGE,
        NameError::Empty => code::INVALID_PARAMETER_VALUE,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PlacementIn {
    pub(crate) zone: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SystemDiskIn {
    pub(crate) disk_size: Option<i64>,
}

pub(crate) fn disk_gib(disk: Option<SystemDiskIn>) -> Result<Option<u64>, ApiError> {
    match disk.and_then(|d| d.disk_size) {
        Some(n) => u64::try_from(n).map(Some).map_err(|_| {
            ApiError::invalid_value(code::INVALID_PARAMETER_VALUE_RANGE, "DiskSize must be positive.".into())
        }),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunInstancesRequest {
    placement: PlacementIn,
    image_id: String,
    instance_type: Option<String>,
    instance_count: Option<i64>,
    min_count: Option<i64>,
    instance_name: Option<String>,
    host_name: Option<String>,
    dry_run: Option<bool>,
    system_disk: Option<SystemDiskIn>,
    tag_specification: Option<Vec<TagSpecIn>>,
    client_token: Option<String>,
    user_data: Option<String>,
    login_settings: Option<LoginSettingsIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LoginSettingsIn {
    password: Option<String>,
    key_ids: Option<Vec<String>>,
}

/// What the guest gets at boot: `UserData` (base64 of at most 16 KB) and the login password
/// (Tencent's length and class rules). Key pairs do not exist in this release, so any
/// `KeyIds` names a missing one.
fn guest_input(user_data: Option<String>, login: Option<LoginSettingsIn>) -> Result<GuestInput, ApiError> {
    check_user_data(user_data.as_deref())?;
    let login = login.unwrap_or(LoginSettingsIn { password: None, key_ids: None });
    if let Some(key) = login.key_ids.as_ref().and_then(|k| k.first()) {
        return Err(ApiError::invalid_value(code::KEY_PAIR_NOT_FOUND, format!("The key pair `{key}` does not exist.")));
    }
    if let Some(pw) = &login.password {
        if !imaged_domain::instance::password_is_valid(pw, false) {
            return Err(ApiError::invalid_value(
                code::INVALID_PASSWORD,
                "A Linux password is 8 to 30 characters of at least two classes (lower case, upper case, digits, symbols).".into(),
            ));
        }
    }
    Ok(GuestInput { user_data, password: login.password })
}

/// `UserData` must be base64 of at most 16 KB.
fn check_user_data(data: Option<&str>) -> Result<(), ApiError> {
    match data {
        Some(d) if !imaged_domain::instance::user_data_is_valid(d) => Err(ApiError::invalid_value(
            code::INVALID_USER_DATA_FORMAT,
            format!("UserData must be base64 text of at most {} bytes.", imaged_domain::instance::MAX_USER_DATA_BYTES),
        )),
        _ => Ok(()),
    }
}

pub(crate) async fn run_instances(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: RunInstancesRequest = parse(params)?;
    let guest = guest_input(req.user_data, req.login_settings)?;
    let region = ctx.region()?;
    let count = req.instance_count.unwrap_or(1);
    if req.min_count.is_some_and(|m| m < 1 || m > count) {
        return Err(ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE_RANGE,
            "MinCount must be between 1 and InstanceCount.".into(),
        ));
    }
    let request = RunRequest {
        zone: req.placement.zone,
        image_id: req.image_id,
        instance_type: req.instance_type,
        count: Some(u64::try_from(count).unwrap_or(0)),
        name: req.instance_name,
        host_name: req.host_name,
        system_disk_gib: disk_gib(req.system_disk)?,
        tags: tags_of(req.tag_specification, "instance")?,
        dry_run: req.dry_run.unwrap_or(false),
        client_token: req.client_token,
        guest,
    };
    let ids = ctx.service.run_instances(ctx.caller, region, request, ctx.request_id).await.map_err(instance_error)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        instance_id_set: Vec<String>,
    }
    to_json(&Out { instance_id_set: ids.into_iter().map(|i| i.to_string()).collect() })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInstancesRequest {
    instance_ids: Option<Vec<String>>,
    filters: Option<Vec<FilterIn>>,
    offset: Option<i64>,
    limit: Option<i64>,
}

fn page(offset: Option<i64>, limit: Option<i64>) -> Result<Page, ApiError> {
    let non_negative = |v: Option<i64>, name: &str| {
        v.map(|n| u64::try_from(n).map_err(|_| ApiError::invalid_parameter(name, "expected a non-negative integer")))
            .transpose()
    };
    Ok(Page::new(non_negative(offset, "Offset")?, non_negative(limit, "Limit")?)?)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PlacementOut<'a> {
    zone: &'a str,
    project_id: i64,
    host_id: &'a str,
}

/// `Metadata`: what imaged adds about the guest, as Tencent's custom metadata items.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataOut {
    items: Vec<MetadataItem>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataItem {
    key: &'static str,
    value: String,
}

/// The guest's items: the hypervisor (or why there is none), the accelerator and process of a
/// running guest, where its SSH port is forwarded, how it last ended unasked.
fn metadata_of(view: GuestView) -> MetadataOut {
    let mut items = vec![MetadataItem { key: "imaged:hypervisor", value: view.hypervisor }];
    if let Some(live) = view.live {
        items.push(MetadataItem { key: "imaged:accelerator", value: live.accel });
        items.push(MetadataItem { key: "imaged:qemu-pid", value: live.pid.to_string() });
        if let Some(addr) = live.login {
            items.push(MetadataItem { key: "imaged:ssh-address", value: addr.to_string() });
        }
    }
    if let Some(note) = view.note {
        items.push(MetadataItem { key: "imaged:guest-note", value: note });
    }
    MetadataOut { items }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DiskOut {
    disk_type: &'static str,
    disk_id: String,
    disk_size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LoginOut {
    key_ids: [(); 0],
}

/// `Instance`, with the fields of the reference that concern images, OS and state.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InstanceOut<'a> {
    instance_id: &'a str,
    instance_name: &'a str,
    instance_type: &'a str,
    instance_charge_type: &'static str,
    placement: PlacementOut<'a>,
    image_id: &'a str,
    os_name: &'a str,
    instance_state: &'static str,
    latest_operation: Option<&'static str>,
    latest_operation_state: Option<&'static str>,
    latest_operation_request_id: Option<&'a str>,
    latest_operation_error_msg: Option<&'a str>,
    created_time: String,
    expired_time: Option<String>,
    login_settings: LoginOut,
    license_type: &'static str,
    default_login_user: &'static str,
    default_login_port: u16,
    host_name: &'a str,
    system_disk: DiskOut,
    data_disks: [(); 0],
    restrict_state: &'static str,
    isolated_source: &'static str,
    disable_api_termination: bool,
    uuid: String,
    #[serde(rename = "CPU")]
    cpu: u32,
    memory: u32,
    private_ip_addresses: [(); 0],
    public_ip_addresses: [(); 0],
    tags: Vec<TagOut<'a>>,
    metadata: MetadataOut,
}

fn uuid_of(id: &str) -> String {
    use sha2::Digest as _;
    let h = hex::encode(&sha2::Sha256::digest(id.as_bytes())[..16]);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn instance_out<'a>(i: &'a Instance, host: &'a str, view: GuestView) -> InstanceOut<'a> {
    let (cpu, memory) = imaged_domain::instance::shape(&i.instance_type);
    let windows = i.os_name.to_ascii_lowercase().contains("windows");
    InstanceOut {
        instance_id: i.id.as_str(),
        instance_name: &i.name,
        instance_type: &i.instance_type,
        instance_charge_type: "POSTPAID_BY_HOUR",
        placement: PlacementOut { zone: &i.zone, project_id: 0, host_id: host },
        image_id: i.image_id.as_str(),
        os_name: &i.os_name,
        instance_state: i.state.as_str(),
        latest_operation: i.latest_operation.map(InstanceOp::as_str),
        latest_operation_state: i.latest_operation_state.map(|s| s.as_str()),
        latest_operation_request_id: i.latest_operation_request_id.as_deref(),
        latest_operation_error_msg: i.latest_operation_error.as_deref(),
        created_time: i.created_at.iso8601(),
        expired_time: None,
        login_settings: LoginOut { key_ids: [] },
        license_type: "TencentCloud",
        default_login_user: if windows { "Administrator" } else { "root" },
        default_login_port: if windows { 3389 } else { 22 },
        host_name: &i.host_name,
        system_disk: DiskOut {
            disk_type: "CLOUD_PREMIUM",
            disk_id: format!("disk-{}", &i.id.as_str()[4..]),
            disk_size: i.system_disk_gib,
        },
        data_disks: [],
        restrict_state: "NORMAL",
        isolated_source: "NOTISOLATED",
        disable_api_termination: false,
        uuid: uuid_of(i.id.as_str()),
        cpu,
        memory,
        private_ip_addresses: [],
        public_ip_addresses: [],
        tags: i.tags.iter().map(|t| TagOut { key: &t.key, value: &t.value }).collect(),
        metadata: metadata_of(view),
    }
}

async fn query_instances(
    ctx: &Ctx<'_>,
    ids: Option<Vec<String>>,
    filters: Option<Vec<FilterIn>>,
    page: Page,
) -> Result<(u64, Vec<Instance>), ApiError> {
    let filters = domain_filters(filters);
    let query = InstanceQuery::new(ids.as_deref(), filters.as_deref())?;
    Ok(ctx.service.describe_instances(ctx.caller, ctx.region()?, &query, page).await?)
}

pub(crate) async fn describe_instances(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: DescribeInstancesRequest = parse(params)?;
    let (total, set) = query_instances(ctx, req.instance_ids, req.filters, page(req.offset, req.limit)?).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: u64,
        instance_set: Vec<InstanceOut<'a>>,
    }
    let host = ctx.service.host_name();
    // Each instance on the host that holds its disk (older records: this one).
    let instance_set =
        set.iter().map(|i| instance_out(i, i.host.as_deref().unwrap_or(host), ctx.service.guest_view(i))).collect();
    to_json(&Out { total_count: total, instance_set })
}

pub(crate) async fn describe_instances_status(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: DescribeInstancesRequest = parse(params)?;
    let (total, set) = query_instances(ctx, req.instance_ids, None, page(req.offset, req.limit)?).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct StatusOut<'a> {
        instance_id: &'a str,
        instance_state: &'static str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: u64,
        instance_status_set: Vec<StatusOut<'a>>,
    }
    to_json(&Out {
        total_count: total,
        instance_status_set: set
            .iter()
            .map(|i| StatusOut { instance_id: i.id.as_str(), instance_state: i.state.as_str() })
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InstanceIdsRequest {
    instance_ids: Vec<String>,
    stop_type: Option<String>,
}

/// Start, stop, reboot or terminate: the answer carries only the RequestId.
pub(crate) async fn operate(ctx: &Ctx<'_>, params: Value, op: InstanceOp) -> Result<Vec<u8>, ApiError> {
    let req: InstanceIdsRequest = parse(params)?;
    if req.instance_ids.is_empty() {
        return Err(ApiError::missing("InstanceIds"));
    }
    if let Some(t) = &req.stop_type {
        if !["SOFT", "HARD", "SOFT_FIRST"].contains(&t.as_str()) {
            return Err(ApiError::invalid_value(
                code::INVALID_STOP_TYPE,
                format!("StopType must be SOFT, HARD or SOFT_FIRST, not `{t}`."),
            ));
        }
    }
    ctx.service
        .operate_instances(ctx.caller, ctx.region()?, &req.instance_ids, op, req.stop_type.as_deref(), ctx.request_id)
        .await
        .map_err(instance_error)?;
    Ok(b"{}".to_vec())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResetInstanceRequest {
    instance_id: String,
    image_id: Option<String>,
    user_data: Option<String>,
    login_settings: Option<LoginSettingsIn>,
}

pub(crate) async fn reset_instance(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: ResetInstanceRequest = parse(params)?;
    // A reinstall given neither keeps what the guest had.
    let guest = if req.user_data.is_some() || req.login_settings.is_some() {
        Some(guest_input(req.user_data, req.login_settings)?)
    } else {
        None
    };
    ctx.service
        .reset_instance(ctx.caller, ctx.region()?, &req.instance_id, req.image_id.as_deref(), guest, ctx.request_id)
        .await
        .map_err(instance_error)?;
    Ok(b"{}".to_vec())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateImageRequest {
    image_name: String,
    instance_id: Option<String>,
    image_description: Option<String>,
    /// `"true"`/`"false"`, normalised by the schema (`BoolStr`).
    force_poweroff: Option<String>,
    data_disk_ids: Option<Vec<String>>,
    snapshot_ids: Option<Vec<String>>,
    dry_run: Option<bool>,
    tag_specification: Option<Vec<TagSpecIn>>,
    image_family: Option<String>,
}

pub(crate) async fn create_image(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: CreateImageRequest = parse(params)?;
    let region = ctx.region()?;
    if req.snapshot_ids.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_value(
            code::UNSUPPORTED_OPERATION,
            "Images from snapshots are not supported: this service has no snapshots yet; use InstanceId.".into(),
        ));
    }
    if req.data_disk_ids.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::invalid_value(
            code::UNSUPPORTED_OPERATION,
            "Instances here have no data disks: a custom image holds the system disk only.".into(),
        ));
    }
    let instance_id = req.instance_id.ok_or_else(|| {
        ApiError::invalid_value(code::INVALID_PARAMETER_SPECIFY_ONE, "Give InstanceId (or SnapshotIds).".into())
    })?;
    let request = CaptureRequest {
        name: req.image_name,
        instance_id,
        description: req.image_description,
        force_poweroff: req.force_poweroff.as_deref() == Some("true"),
        family: req.image_family,
        tags: tags_of(req.tag_specification, "image")?,
        dry_run: req.dry_run.unwrap_or(false),
    };
    let id = ctx.service.create_image(ctx.caller, region, request, ctx.request_id).await.map_err(capture_error)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        image_id: Option<String>,
    }
    to_json(&Out { image_id: id.map(|i| i.to_string()) })
}

fn capture_error(e: CaptureError) -> ApiError {
    let c = match &e {
        CaptureError::Name(n) => name_error(n),
        CaptureError::Family(_) => code::INVALID_IMAGE_FAMILY,
        CaptureError::Quota => code::IMAGE_QUOTA_LIMIT_EXCEEDED,
        CaptureError::DuplicateName(_) => code::INVALID_IMAGE_NAME_DUPLICATE,
        CaptureError::Instance(_) => {
            let CaptureError::Instance(inner) = e else { return ApiError::internal(&"unreachable") };
            return instance_error(inner);
        }
    };
    ApiError::invalid_value(c, format!("{e}."))
}

pub(crate) fn image_error(e: ImageError) -> ApiError {
    use ImageError as E;
    let c = match &e {
        E::Malformed(_) => code::INVALID_IMAGE_ID_MALFORMED,
        E::NotFound(_) => code::INVALID_IMAGE_ID_NOT_FOUND,
        E::NotCustom(_) => code::INVALID_PARAMETER_VALUE_INVALID_IMAGE_ID,
        E::Shared(_) => code::INVALID_IMAGE_ID_IS_SHARED,
        E::State(..) => code::INVALID_IMAGE_ID_INCORRECT_STATE,
        E::InShared(_) => code::INVALID_IMAGE_ID_IN_SHARED,
        E::Name(n) => name_error(n),
        E::DuplicateName(_) => code::INVALID_IMAGE_NAME_DUPLICATE,
        E::Family(_) => code::INVALID_IMAGE_FAMILY,
        E::TooMany(_) => code::INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED,
        E::App(inner) => return ApiError::internal(inner),
    };
    ApiError::invalid_value(c, format!("{e}."))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyImageAttributeRequest {
    image_id: String,
    image_name: Option<String>,
    image_description: Option<String>,
    image_family: Option<String>,
    image_deprecated: Option<bool>,
}

pub(crate) async fn modify_image_attribute(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: ModifyImageAttributeRequest = parse(params)?;
    let changes = ImageChanges {
        name: req.image_name,
        description: req.image_description,
        family: req.image_family,
        deprecated: req.image_deprecated,
    };
    ctx.service.modify_image(ctx.caller, ctx.region()?, &req.image_id, changes).await.map_err(|e| match e {
        // The reference's own code for a received shared image.
        ImageError::Shared(id) => ApiError::invalid_value(
            code::SHARED_IMAGE_MODIFY_UNSUPPORTED,
            format!("`{id}` is shared with you and cannot be modified."),
        ),
        other => image_error(other),
    })?;
    Ok(b"{}".to_vec())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteImagesRequest {
    image_ids: Vec<String>,
    dry_run: Option<bool>,
}

pub(crate) async fn delete_images(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: DeleteImagesRequest = parse(params)?;
    if req.image_ids.is_empty() {
        return Err(ApiError::missing("ImageIds"));
    }
    ctx.service
        .delete_images(ctx.caller, ctx.region()?, &req.image_ids, req.dry_run.unwrap_or(false))
        .await
        .map_err(image_error)?;
    Ok(b"{}".to_vec())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeImageFromFamilyRequest {
    image_family: Option<String>,
}

pub(crate) async fn describe_image_from_family(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: DescribeImageFromFamilyRequest = parse(params)?;
    let region = ctx.region()?;
    let family = req.image_family.filter(|f| !f.is_empty()).ok_or_else(|| ApiError::missing("ImageFamily"))?;
    let found = ctx.service.image_from_family(ctx.caller, region, &family).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        image: Option<crate::cvm::ImageOut<'a>>,
    }
    to_json(&Out { image: found.as_ref().map(|(image, seen)| image_out(image, *seen, region)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_per_instance() {
        assert_eq!(uuid_of("ins-abcdefgh"), uuid_of("ins-abcdefgh"));
        assert_ne!(uuid_of("ins-abcdefgh"), uuid_of("ins-abcdefgi"));
        assert_eq!(uuid_of("ins-abcdefgh").len(), 36);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsoleRequest {
    instance_id: String,
}

/// `DescribeInstanceConsoleOutput` (extension `imaged`): the serial console of the instance's
/// current boot, its last 64 KiB as text, so that a user sees a boot fail.
pub(crate) async fn describe_instance_console_output(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: ConsoleRequest = parse(params)?;
    let (bytes, truncated) =
        ctx.service.console_output(ctx.caller, ctx.region()?, &req.instance_id).await.map_err(instance_error)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        instance_id: &'a str,
        output: String,
        truncated: bool,
        hypervisor: String,
    }
    to_json(&Out {
        instance_id: &req.instance_id,
        output: String::from_utf8_lossy(&bytes).into_owned(),
        truncated,
        hypervisor: ctx.service.hypervisor().describe(),
    })
}
