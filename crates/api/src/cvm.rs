//! CVM (`2017-03-12`) actions: their parameter schemas, handlers and wire shapes.

use imaged_app::Service;
use imaged_domain::query::{Filter, ImageQuery, Page};
use imaged_domain::rules::{self, architectures_for_instance_type};
use imaged_domain::{AccountId, Image, ImageKind, ImageType, Region};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{code, ApiError};
use crate::params::{opt, Field, Ty, FILTER};

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
}

impl Ctx<'_> {
    fn region(&self) -> Result<&Region, ApiError> {
        self.region.ok_or_else(|| ApiError::missing("Region"))
    }
}

fn parse<T: for<'de> Deserialize<'de>>(params: Value) -> Result<T, ApiError> {
    // The schema has already checked names and types, so this only fails on a schema bug.
    serde_json::from_value(params).map_err(|e| ApiError::invalid_parameter("body", &e.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(&e))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FilterIn {
    name: String,
    values: Vec<String>,
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

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagOut<'a> {
    key: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MarketOut<'a> {
    provider: &'a str,
    software: &'a [String],
    price_cny_per_hour: &'a str,
}

/// `Image`, as the reference defines it, plus the fields the seeds ask clients to be able to
/// show (OS type, release status, kernel, remarks, licence fee, share origin, review status).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageOut<'a> {
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
    failure_reason: Option<&'a str>,
}

fn image_out<'a>(image: &'a Image, seen: ImageType, region: &Region) -> ImageOut<'a> {
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
        market_listing: image.market.as_ref().map(|m| MarketOut {
            provider: &m.provider,
            software: &m.software,
            price_cny_per_hour: &m.price_cny_per_hour,
        }),
        failure_reason: image.failure_reason.as_deref(),
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
    let filters: Option<Vec<Filter>> =
        req.filters.map(|fs| fs.into_iter().map(|f| Filter { name: f.name, values: f.values }).collect());
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
