//! CVM (`2017-03-12`) actions: their parameter schemas, handlers and wire shapes.

use imaged_app::Service;
use imaged_domain::query::{Filter, ImageQuery, Page};
use imaged_domain::rules::{self, architectures_for_instance_type};
use imaged_domain::{AccountId, Image, ImageKind, ImageType, Region};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{code, ApiError};
use crate::params::{opt, req, Field, Ty, FILTER, TAG};

/// `DescribeImages` parameters.
pub(crate) const DESCRIBE_IMAGES: &[Field] = &[
    opt("ImageIds", Ty::List(&Ty::Str)),
    opt("Filters", Ty::List(&Ty::Obj(FILTER))),
    opt("Offset", Ty::UInt),
    opt("Limit", Ty::UInt),
    opt("InstanceType", Ty::Str),
];

/// Actions that take no parameters.
pub(crate) const NONE: &[Field] = &[];

/// Who calls, and where.
pub(crate) struct Ctx<'a> {
    pub(crate) service: &'a Service,
    pub(crate) caller: AccountId,
    pub(crate) region: Option<&'a Region>,
    /// This request's `RequestId` (instances record the request behind their latest operation).
    pub(crate) request_id: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn region(&self) -> Result<&Region, ApiError> {
        self.region.ok_or_else(|| ApiError::missing("Region"))
    }
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(params: Value) -> Result<T, ApiError> {
    // The schema has already checked names and types, so this only fails on a schema bug.
    serde_json::from_value(params).map_err(|e| ApiError::invalid_parameter("body", &e.to_string()))
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(&e))
}

/// A `Filter` as the wire spells it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct FilterIn {
    pub(crate) name: String,
    pub(crate) values: Vec<String>,
}

/// The domain's filters from the wire's.
pub(crate) fn domain_filters(filters: Option<Vec<FilterIn>>) -> Option<Vec<Filter>> {
    filters.map(|fs| fs.into_iter().map(|f| Filter { name: f.name, values: f.values }).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeImagesRequest {
    image_ids: Option<Vec<String>>,
    filters: Option<Vec<FilterIn>>,
    offset: Option<u64>,
    limit: Option<u64>,
    instance_type: Option<String>,
}

/// `Tag`, as answers carry it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagOut<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MarketOut<'a> {
    provider: &'a str,
    software: &'a [String],
    price_cny_per_hour: &'a str,
    price_model: &'static str,
    /// Minor units per unit of the model.
    price: u64,
    listing_id: Option<&'a str>,
}

/// `Image`, as the reference defines it, plus the fields the seeds ask clients to be able to
/// show (OS type, release status, kernel, remarks, licence fee, share origin, review status).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageOut<'a> {
    image_id: &'a str,
    os_name: &'a str,
    image_type: &'static str,
    created_time: String,
    image_name: &'a str,
    image_description: &'a str,
    image_size: u64,
    architecture: &'static str,
    image_state: &'static str,
    platform: &'a str,
    image_creator: String,
    image_source: &'static str,
    sync_percent: Option<u8>,
    is_support_cloudinit: bool,
    snapshot_set: [(); 0],
    tags: Vec<TagOut<'a>>,
    license_type: &'static str,
    image_family: &'a str,
    image_deprecated: bool,
    cdc_cache_status: Option<&'static str>,
    boot_mode: &'static str,
    os_type: &'a str,
    release_status: &'static str,
    application_required: bool,
    kernel_version: Option<&'a str>,
    remarks: &'a [String],
    license_fee_applies: bool,
    /// For a shared image: the account that shared it.
    shared_by_account_id: Option<String>,
    /// Whether the service reviewed the image (shared images are not reviewed: the seeds' warning).
    reviewed: Option<bool>,
    market_listing: Option<MarketOut<'a>>,
    /// The marketplace listing whose bytes the image carries (a market image's own, or the
    /// one a custom image was captured from): launching pays its fee; no export.
    market_mark: Option<&'a str>,
    failure_reason: Option<&'a str>,
    source_format: Option<&'a str>,
    progress: Option<u8>,
}

pub(crate) fn image_out<'a>(image: &'a Image, seen: ImageType, region: &Region) -> ImageOut<'a> {
    let creator = match (image.kind, image.owner, &image.market) {
        (ImageKind::Market, _, Some(m)) => m.provider.clone(),
        (_, Some(owner), _) => owner.to_string(),
        _ => "official".to_owned(),
    };
    ImageOut {
        image_id: image.id.as_str(),
        os_name: &image.os_name,
        image_type: seen.as_str(),
        created_time: image.created_at.iso8601(),
        image_name: &image.name,
        image_description: &image.description,
        image_size: image.size_gib,
        architecture: image.architecture.as_str(),
        image_state: image.state.as_str(),
        platform: &image.platform,
        image_creator: creator,
        image_source: image.source.as_str(),
        sync_percent: image.sync_percent,
        is_support_cloudinit: image.supports_cloudinit,
        snapshot_set: [],
        tags: image.tags.iter().map(|t| TagOut { key: &t.key, value: &t.value }).collect(),
        license_type: image.license_type.as_str(),
        image_family: &image.family,
        image_deprecated: image.deprecated,
        cdc_cache_status: None,
        boot_mode: image.boot_mode.as_str(),
        os_type: &image.os_type,
        release_status: image.release_status.as_str(),
        application_required: rules::requires_application(image),
        kernel_version: image.kernel.as_deref(),
        remarks: &image.remarks,
        license_fee_applies: rules::licence_fee_applies(image, region),
        shared_by_account_id: (seen == ImageType::SharedImage).then(|| image.owner.map(|o| o.to_string())).flatten(),
        reviewed: match seen {
            ImageType::PublicImage | ImageType::MarketImage => Some(true),
            ImageType::SharedImage => Some(false),
            ImageType::PrivateImage => None,
        },
        market_mark: image.market_mark.as_ref().map(|l| l.as_str()),
        market_listing: image.market.as_ref().map(|m| {
            let fee = imaged_domain::pricing::image_fee(image);
            MarketOut {
                provider: &m.provider,
                software: &m.software,
                price_cny_per_hour: &m.price_cny_per_hour,
                price_model: fee.model.as_str(),
                price: fee.price,
                listing_id: image.market_mark.as_ref().map(|l| l.as_str()),
            }
        }),
        failure_reason: image.failure_reason.as_deref(),
        source_format: image.source_format.as_deref(),
        progress: image.progress,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeImagesResponse<'a> {
    image_set: Vec<ImageOut<'a>>,
    total_count: u64,
}

pub(crate) async fn describe_images(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: DescribeImagesRequest = parse(params)?;
    let region = ctx.region()?;
    let filters = domain_filters(req.filters);
    let mut query = ImageQuery::new(req.image_ids.as_deref(), filters.as_deref())?;
    if let Some(t) = &req.instance_type {
        let archs = architectures_for_instance_type(t).ok_or_else(|| {
            ApiError::invalid_value(code::INVALID_INSTANCE_TYPE_MALFORMED, format!("`{t}` is not an instance type."))
        })?;
        query = query.restrict_architectures(archs);
    }
    let page = Page::new(req.offset, req.limit)?;
    let listing = ctx.service.describe_images(ctx.caller, region, &query, page).await?;
    to_json(&DescribeImagesResponse {
        image_set: listing.items.iter().map(|(image, seen)| image_out(image, *seen, region)).collect(),
        total_count: listing.total,
    })
}

pub(crate) async fn describe_image_quota(ctx: &Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    ctx.region()?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        image_num_quota: u32,
    }
    to_json(&Out { image_num_quota: ctx.service.image_quota(ctx.caller).await? })
}

pub(crate) fn describe_regions(ctx: &Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct RegionOut<'a> {
        region: &'a str,
        region_name: &'a str,
        region_state: &'static str,
        is_china_mainland: bool,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: usize,
        region_set: Vec<RegionOut<'a>>,
    }
    let regions = ctx.service.regions().regions();
    to_json(&Out {
        total_count: regions.len(),
        region_set: regions
            .iter()
            .map(|r| RegionOut {
                region: &r.region,
                region_name: &r.name,
                region_state: if r.available { "AVAILABLE" } else { "UNAVAILABLE" },
                is_china_mainland: r.mainland,
            })
            .collect(),
    })
}

pub(crate) fn describe_zones(ctx: &Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct ZoneOut<'a> {
        zone: &'a str,
        zone_name: &'a str,
        zone_id: String,
        zone_state: &'static str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: usize,
        zone_set: Vec<ZoneOut<'a>>,
    }
    let region = ctx.region()?;
    to_json(&Out {
        total_count: region.zones.len(),
        zone_set: region
            .zones
            .iter()
            .map(|z| ZoneOut {
                zone: &z.zone,
                zone_name: &z.name,
                zone_id: z.zone_id.to_string(),
                zone_state: if z.available { "AVAILABLE" } else { "UNAVAILABLE" },
            })
            .collect(),
    })
}

pub(crate) const TAG_SPEC: &[Field] = &[req("ResourceType", Ty::Str), req("Tags", Ty::List(&Ty::Obj(TAG)))];
const DATA_DISK: &[Field] = &[req("ImageUrl", Ty::Str)];

/// `ImportImage` parameters (`ImageFormat` is an imaged extension: the declared format).
pub(crate) const IMPORT_IMAGE: &[Field] = &[
    req("Architecture", Ty::Str),
    req("OsType", Ty::Str),
    req("OsVersion", Ty::Str),
    req("ImageUrl", Ty::Str),
    req("ImageName", Ty::Str),
    opt("ImageDescription", Ty::Str),
    opt("DryRun", Ty::Bool),
    opt("Force", Ty::Bool),
    opt("TagSpecification", Ty::List(&Ty::Obj(TAG_SPEC))),
    opt("LicenseType", Ty::Str),
    opt("BootMode", Ty::Str),
    opt("ImageFamily", Ty::Str),
    opt("ImportImageDataDiskList", Ty::List(&Ty::Obj(DATA_DISK))),
    opt("ImageFormat", Ty::Str),
];

/// `ExportImages` parameters.
pub(crate) const EXPORT_IMAGES: &[Field] = &[
    req("BucketName", Ty::Str),
    opt("ImageIds", Ty::List(&Ty::Str)),
    opt("ExportFormat", Ty::Str),
    opt("FileNamePrefixList", Ty::List(&Ty::Str)),
    opt("OnlyExportRootDisk", Ty::Bool),
    opt("DryRun", Ty::Bool),
    opt("RoleName", Ty::Str),
    opt("SnapshotIds", Ty::List(&Ty::Str)),
];

/// `DescribeImageTasks` (an imaged extension): progress of import/export tasks.
pub(crate) const DESCRIBE_IMAGE_TASKS: &[Field] = &[req("TaskIds", Ty::List(&Ty::UInt))];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagIn {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagSpecIn {
    resource_type: String,
    tags: Vec<TagIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImportImageRequest {
    architecture: String,
    os_type: String,
    os_version: String,
    image_url: String,
    image_name: String,
    image_description: Option<String>,
    dry_run: Option<bool>,
    force: Option<bool>,
    tag_specification: Option<Vec<TagSpecIn>>,
    license_type: Option<String>,
    boot_mode: Option<String>,
    image_family: Option<String>,
    import_image_data_disk_list: Option<Vec<Value>>,
    image_format: Option<String>,
}

/// The tags of a `TagSpecification` whose resource type must be `resource` (`image`, `instance`).
pub(crate) fn tags_of(specs: Option<Vec<TagSpecIn>>, resource: &str) -> Result<Vec<imaged_domain::Tag>, ApiError> {
    let mut tags = Vec::new();
    for spec in specs.unwrap_or_default() {
        if spec.resource_type != resource {
            return Err(ApiError::invalid_value(
                code::INVALID_PARAMETER_VALUE,
                format!("TagSpecification.ResourceType must be `{resource}`, not `{}`.", spec.resource_type),
            ));
        }
        tags.extend(spec.tags.into_iter().map(|t| imaged_domain::Tag { key: t.key, value: t.value }));
    }
    Ok(tags)
}

fn import_error(e: imaged_app::imports::ImportError) -> ApiError {
    use imaged_app::imports::ImportError as E;
    use imaged_domain::import::ImportRuleError as R;
    use imaged_domain::rules::NameError;
    let c = match &e {
        E::Name(NameError::TooLong { .. }) => code::INVALID_PARAMETER_VALUE_TOO_LARGE,
        E::Name(NameError::Empty) => code::INVALID_PARAMETER_VALUE,
        E::Rule(R::OsType(_)) => code::INVALID_IMAGE_OS_TYPE,
        E::Rule(R::OsVersion(_)) => code::INVALID_IMAGE_OS_VERSION,
        E::Rule(R::Architecture(_)) => code::INVALID_PARAMETER_VALUE,
        E::Rule(R::LicenseType(_)) => code::INVALID_LICENSE_TYPE,
        E::Rule(R::BootMode(_)) => code::INVALID_BOOT_MODE,
        E::Rule(R::Family(_)) => code::INVALID_IMAGE_FAMILY,
        E::Url(_) | E::Format(_) => code::INVALID_PARAMETER_URL,
        E::IsoNeedsForce => code::ISO_MUST_IMPORT_BY_FORCE,
        E::Quota => code::IMAGE_QUOTA_LIMIT_EXCEEDED,
        E::DuplicateName(_) => code::INVALID_IMAGE_NAME_DUPLICATE,
        E::App(inner) => return ApiError::internal(inner),
    };
    ApiError::invalid_value(c, format!("{e}."))
}

pub(crate) async fn import_image(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: ImportImageRequest = parse(params)?;
    let region = ctx.region()?;
    if req.import_image_data_disk_list.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(ApiError::invalid_value(
            code::UNSUPPORTED_OPERATION,
            "Data-disk images (ImportImageDataDiskList) are not supported yet; import the system disk alone.".into(),
        ));
    }
    let request = imaged_app::imports::ImportRequest {
        name: req.image_name,
        description: req.image_description,
        os_type: req.os_type,
        os_version: req.os_version,
        architecture: req.architecture,
        url: req.image_url,
        format: req.image_format,
        force: req.force.unwrap_or(false),
        license_type: req.license_type,
        boot_mode: req.boot_mode,
        family: req.image_family,
        tags: tags_of(req.tag_specification, "image")?,
        dry_run: req.dry_run.unwrap_or(false),
    };
    let id = ctx.service.import_image(ctx.caller, region, request).await.map_err(import_error)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        image_id: Option<String>,
    }
    to_json(&Out { image_id: id.map(|i| i.to_string()) })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExportImagesRequest {
    bucket_name: String,
    image_ids: Option<Vec<String>>,
    export_format: Option<String>,
    file_name_prefix_list: Option<Vec<String>>,
    dry_run: Option<bool>,
    snapshot_ids: Option<Vec<String>>,
}

pub(crate) async fn export_images(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    use imaged_app::exports::ExportError as E;
    let req: ExportImagesRequest = parse(params)?;
    let region = ctx.region()?;
    if req.snapshot_ids.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_value(
            code::SNAPSHOT_NOT_FOUND,
            "Snapshots do not exist in this service.".into(),
        ));
    }
    let image_ids = req.image_ids.filter(|i| !i.is_empty()).ok_or_else(|| ApiError::missing("ImageIds"))?;
    let request = imaged_app::exports::ExportRequest {
        bucket: req.bucket_name,
        image_ids,
        format: req.export_format,
        prefixes: req.file_name_prefix_list,
        dry_run: req.dry_run.unwrap_or(false),
    };
    let started = ctx.service.export_images(ctx.caller, region, request).await.map_err(|e| {
        let c = match &e {
            E::BucketNotFound(_) => code::BUCKET_NOT_FOUND,
            E::Malformed(_) => code::INVALID_IMAGE_ID_MALFORMED,
            E::NotFound(_) => code::INVALID_IMAGE_ID_NOT_FOUND,
            E::Public(_) => code::PUBLIC_IMAGE_EXPORT_UNSUPPORTED,
            E::Shared(_) => code::SHARED_IMAGE_EXPORT_UNSUPPORTED,
            E::Market(_) => code::MARKET_IMAGE_EXPORT_UNSUPPORTED,
            E::Windows(_) => code::WINDOWS_IMAGE_EXPORT_UNSUPPORTED,
            E::State(_) => code::INVALID_IMAGE_STATE,
            E::Format(_) => code::INVALID_PARAMETER_VALUE,
            E::Prefixes => code::INVALID_FILE_NAME_PREFIX_LIST,
            E::TooMany => code::INVALID_PARAMETER_VALUE_LIMIT_EXCEEDED,
            E::App(inner) => return ApiError::internal(inner),
        };
        ApiError::invalid_value(c, format!("{e}."))
    })?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        task_id: Option<u64>,
        cos_paths: Vec<String>,
    }
    to_json(&match started {
        Some(s) => Out { task_id: Some(s.task_id), cos_paths: s.paths },
        None => Out { task_id: None, cos_paths: Vec::new() },
    })
}

pub(crate) fn describe_import_image_os() -> Result<Vec<u8>, ApiError> {
    use imaged_domain::import::IMPORT_OS;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct OsList {
        windows: Vec<&'static str>,
        linux: Vec<&'static str>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct OsVersion {
        os_name: &'static str,
        os_versions: &'static [&'static str],
        architecture: &'static [&'static str],
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        import_image_os_list_supported: OsList,
        import_image_os_version_set: Vec<OsVersion>,
    }
    to_json(&Out {
        import_image_os_list_supported: OsList {
            windows: IMPORT_OS.iter().filter(|o| o.windows).map(|o| o.os_type).collect(),
            linux: IMPORT_OS.iter().filter(|o| !o.windows).map(|o| o.os_type).collect(),
        },
        import_image_os_version_set: IMPORT_OS
            .iter()
            .map(|o| OsVersion { os_name: o.os_type, os_versions: o.versions, architecture: o.architectures })
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeImageTasksRequest {
    task_ids: Vec<u64>,
}

pub(crate) async fn describe_image_tasks(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let req: DescribeImageTasksRequest = parse(params)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct TaskOut {
        task_id: u64,
        task_type: String,
        task_state: &'static str,
        progress: u8,
        image_id: Option<String>,
        error_msg: Option<String>,
        result: Option<Value>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        task_set: Vec<TaskOut>,
        total_count: usize,
    }
    let mut set = Vec::new();
    for id in req.task_ids {
        if let Some(job) = ctx.service.task(ctx.caller, id).await? {
            set.push(TaskOut {
                task_id: job.id,
                task_type: job.kind.to_ascii_uppercase(),
                task_state: job.state.as_str(),
                progress: job.progress,
                image_id: job.image.map(|i| i.to_string()),
                error_msg: job.error,
                result: job.result.and_then(|r| serde_json::from_str(&r).ok()),
            });
        }
    }
    to_json(&Out { total_count: set.len(), task_set: set })
}
