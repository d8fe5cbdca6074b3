//! The marketplace's extension actions (`imaged` `2026-12-01`): `CreateMarketListing`,
//! `ModifyMarketListing`, `SubmitMarketListing`, `WithdrawMarketListing`,
//! `DescribeMarketListings`; metering's `DescribeUsage` and `DescribeProviderEarnings`.
//! `Price` and amounts are in minor units (fen) of the price table's currency.

use imaged_app::market::{MarketError, TermChanges};
use imaged_domain::market::{Listing, ListingError, ListingTerms, ListingVersion};
use imaged_domain::metering::MeterKind;
use imaged_domain::pricing::{ImageFee, PriceModel};
use imaged_domain::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cvm::{parse, to_json, Ctx};
use crate::error::{code, ApiError};
use crate::params::{opt, req, Field, Ty};

/// `CreateMarketListing` parameters.
pub(crate) const CREATE_MARKET_LISTING: &[Field] = &[
    req("ImageId", Ty::Str),
    req("ListingName", Ty::Str),
    opt("SoftwareStack", Ty::List(&Ty::Str)),
    opt("Description", Ty::Str),
    req("Category", Ty::Str),
    req("PriceModel", Ty::Str),
    opt("Price", Ty::Int),
];
/// `ModifyMarketListing` parameters.
pub(crate) const MODIFY_MARKET_LISTING: &[Field] = &[
    req("ListingId", Ty::Str),
    opt("ImageId", Ty::Str),
    opt("ListingName", Ty::Str),
    opt("SoftwareStack", Ty::List(&Ty::Str)),
    opt("Description", Ty::Str),
    opt("Category", Ty::Str),
    opt("PriceModel", Ty::Str),
    opt("Price", Ty::Int),
];
/// `SubmitMarketListing` and `WithdrawMarketListing` parameters.
pub(crate) const LISTING_ID: &[Field] = &[req("ListingId", Ty::Str)];

fn market_error(e: MarketError) -> ApiError {
    let c = match &e {
        MarketError::Listing(ListingError::Terms(_)) => code::INVALID_PARAMETER_VALUE,
        MarketError::Listing(ListingError::NotListable(_) | ListingError::State(_)) => code::UNSUPPORTED_OPERATION,
        MarketError::NotProvider => code::UNAUTHORIZED_OPERATION,
        MarketError::ListingNotFound(_) => code::RESOURCE_NOT_FOUND,
        MarketError::ImageNotFound(_) => code::INVALID_IMAGE_ID_NOT_FOUND,
        MarketError::Conflict => code::OPERATION_DENIED,
        MarketError::App(inner) => return ApiError::internal(inner),
    };
    ApiError::invalid_value(c, format!("{e}."))
}

/// A fee from the wire's model and price (minor units).
fn fee(model: &str, price: Option<i64>) -> Result<ImageFee, ApiError> {
    let model = PriceModel::parse(model).ok_or_else(|| {
        ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE,
            format!("PriceModel must be FREE, HOURLY or MONTHLY, not `{model}`."),
        )
    })?;
    let price = u64::try_from(price.unwrap_or(0))
        .map_err(|_| ApiError::invalid_value(code::INVALID_PARAMETER_VALUE, "Price must not be negative.".into()))?;
    Ok(ImageFee { model, price })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VersionOut<'a> {
    version: u32,
    image_id: &'a str,
    listing_name: &'a str,
    price_model: &'static str,
    price: u64,
    submitted_time: String,
}

fn version_out(v: &ListingVersion) -> VersionOut<'_> {
    VersionOut {
        version: v.version,
        image_id: v.image.as_str(),
        listing_name: &v.terms.name,
        price_model: v.terms.fee.model.as_str(),
        price: v.terms.fee.price,
        submitted_time: v.submitted_at.iso8601(),
    }
}

/// `MarketListing`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListingOut<'a> {
    listing_id: &'a str,
    listing_name: &'a str,
    provider_name: &'a str,
    image_id: &'a str,
    software_stack: &'a [String],
    description: &'a str,
    category: &'a str,
    price_model: &'static str,
    price: u64,
    state: &'static str,
    reject_reason: Option<&'a str>,
    pending_version: Option<VersionOut<'a>>,
    published_version: Option<VersionOut<'a>>,
    created_time: String,
    updated_time: String,
}

fn listing_out(l: &Listing) -> ListingOut<'_> {
    ListingOut {
        listing_id: l.id.as_str(),
        listing_name: &l.terms.name,
        provider_name: &l.provider_name,
        image_id: l.source_image.as_str(),
        software_stack: &l.terms.software,
        description: &l.terms.description,
        category: &l.terms.category,
        price_model: l.terms.fee.model.as_str(),
        price: l.terms.fee.price,
        state: l.state.as_str(),
        reject_reason: l.reject_reason.as_deref(),
        pending_version: l.pending.as_ref().map(version_out),
        published_version: l.published.as_ref().map(version_out),
        created_time: l.created_at.iso8601(),
        updated_time: l.updated_at.iso8601(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateIn {
    image_id: String,
    listing_name: String,
    software_stack: Option<Vec<String>>,
    description: Option<String>,
    category: String,
    price_model: String,
    price: Option<i64>,
}

pub(crate) async fn create_market_listing(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: CreateIn = parse(params)?;
    let terms = ListingTerms {
        name: r.listing_name,
        software: r.software_stack.unwrap_or_default(),
        description: r.description.unwrap_or_default(),
        category: r.category,
        fee: fee(&r.price_model, r.price)?,
    };
    let l = ctx.service.create_listing(ctx.caller, &r.image_id, terms).await.map_err(market_error)?;
    to_json(&listing_out(&l))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyIn {
    listing_id: String,
    image_id: Option<String>,
    listing_name: Option<String>,
    software_stack: Option<Vec<String>>,
    description: Option<String>,
    category: Option<String>,
    price_model: Option<String>,
    price: Option<i64>,
}

pub(crate) async fn modify_market_listing(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: ModifyIn = parse(params)?;
    let fee = match (&r.price_model, r.price) {
        (Some(model), price) => Some(fee(model, price)?),
        (None, Some(_)) => return Err(ApiError::missing("PriceModel")),
        (None, None) => None,
    };
    let changes = TermChanges {
        name: r.listing_name,
        software: r.software_stack,
        description: r.description,
        category: r.category,
        fee,
        image: r.image_id,
    };
    let l = ctx.service.modify_listing(ctx.caller, &r.listing_id, changes).await.map_err(market_error)?;
    to_json(&listing_out(&l))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdIn {
    listing_id: String,
}

pub(crate) async fn submit_market_listing(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: IdIn = parse(params)?;
    let l = ctx.service.submit_listing(ctx.caller, &r.listing_id).await.map_err(market_error)?;
    to_json(&listing_out(&l))
}

pub(crate) async fn withdraw_market_listing(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: IdIn = parse(params)?;
    let l = ctx.service.withdraw_listing(ctx.caller, &r.listing_id).await.map_err(market_error)?;
    to_json(&listing_out(&l))
}

pub(crate) async fn describe_market_listings(ctx: &Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let all = ctx.service.own_listings(ctx.caller).await.map_err(market_error)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        total_count: usize,
        listing_set: Vec<ListingOut<'a>>,
    }
    to_json(&Out { total_count: all.len(), listing_set: all.iter().map(listing_out).collect() })
}

/// `DescribeUsage` parameters.
pub(crate) const DESCRIBE_USAGE: &[Field] =
    &[req("StartTime", Ty::Str), req("EndTime", Ty::Str), opt("Category", Ty::Str)];
/// `DescribeProviderEarnings` parameters.
pub(crate) const DESCRIBE_PROVIDER_EARNINGS: &[Field] = &[req("StartTime", Ty::Str), req("EndTime", Ty::Str)];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RangeIn {
    start_time: String,
    end_time: String,
    category: Option<String>,
}

fn range(r: &RangeIn) -> Result<(Timestamp, Timestamp), ApiError> {
    let at = |name: &str, v: &str| {
        Timestamp::parse_iso8601(v).ok_or_else(|| {
            ApiError::invalid_value(code::INVALID_PARAMETER_VALUE, format!("{name} must be ISO 8601 UTC, not `{v}`."))
        })
    };
    let (from, to) = (at("StartTime", &r.start_time)?, at("EndTime", &r.end_time)?);
    if to <= from {
        return Err(ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE_RANGE,
            "EndTime must be after StartTime.".into(),
        ));
    }
    Ok((from, to))
}

/// `DescribeUsage`: the caller's usage over the range, per line, with totals per category.
pub(crate) async fn describe_usage(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: RangeIn = parse(params)?;
    let (from, to) = range(&r)?;
    let kind = r
        .category
        .as_deref()
        .map(|c| {
            MeterKind::parse(c).ok_or_else(|| {
                ApiError::invalid_value(
                    code::INVALID_PARAMETER_VALUE,
                    format!("Category must be INSTANCE, IMAGE_FEE, LICENCE or STORAGE, not `{c}`."),
                )
            })
        })
        .transpose()?;
    let lines = ctx.service.describe_usage(ctx.caller, from, to, kind).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Line<'a> {
        category: &'static str,
        resource_id: &'a str,
        region: &'a str,
        listing_id: Option<&'a str>,
        unit_price: u64,
        quantity: u64,
        seconds: u64,
        amount: u64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Total {
        category: &'static str,
        amount: u64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        currency: &'a str,
        usage_set: Vec<Line<'a>>,
        totals: Vec<Total>,
        total_amount: u64,
    }
    let totals = MeterKind::ALL
        .iter()
        .map(|k| Total { category: k.as_str(), amount: lines.iter().filter(|l| l.kind == *k).map(|l| l.amount).sum() })
        .collect();
    to_json(&Out {
        currency: &ctx.service.prices().currency,
        total_amount: lines.iter().map(|l| l.amount).sum(),
        totals,
        usage_set: lines
            .iter()
            .map(|l| Line {
                category: l.kind.as_str(),
                resource_id: &l.resource,
                region: &l.region,
                listing_id: l.listing.as_ref().map(|x| x.as_str()),
                unit_price: l.rate,
                quantity: l.quantity,
                seconds: l.seconds,
                amount: l.amount,
            })
            .collect(),
    })
}

/// `DescribeProviderEarnings`: per listing of the caller's, what buyers paid over the range.
pub(crate) async fn describe_provider_earnings(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: RangeIn = parse(params)?;
    let (from, to) = range(&r)?;
    let per = ctx.service.provider_earnings(ctx.caller, from, to).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Line<'a> {
        listing_id: &'a str,
        seconds: u64,
        amount: u64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        currency: &'a str,
        earning_set: Vec<Line<'a>>,
        total_amount: u64,
    }
    to_json(&Out {
        currency: &ctx.service.prices().currency,
        total_amount: per.iter().map(|e| e.amount).sum(),
        earning_set: per
            .iter()
            .map(|e| Line { listing_id: &e.listing, seconds: e.seconds, amount: e.amount })
            .collect(),
    })
}
