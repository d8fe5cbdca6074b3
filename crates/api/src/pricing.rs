//! Prices: CVM `InquiryPriceRunInstances` and `InquiryPriceResetInstance` in Tencent's `Price`
//! shape (yuan, the image fee and the licence folded into `InstancePrice`), and the extension
//! action `DescribePriceBreakdown` (the same request, the parts in minor units).

use imaged_app::pricing::{PriceRequest, Quote, QuoteError};
use imaged_domain::pricing::{Charge, PriceError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::compute::{instance_error, PlacementIn, RUN_INSTANCES};
use crate::cvm::{parse, to_json, Ctx};
use crate::error::{code, ApiError};
use crate::params::{opt, req, Field, Ty};

const CHARGE_PREPAID: &[Field] = &[req("Period", Ty::Int), opt("RenewFlag", Ty::Str)];
const INTERNET: &[Field] = &[
    opt("InternetChargeType", Ty::Str),
    opt("InternetMaxBandwidthOut", Ty::Int),
    opt("PublicIpAssigned", Ty::Bool),
    opt("BandwidthPackageId", Ty::Str),
];

/// `InquiryPriceRunInstances` (and `DescribePriceBreakdown`) parameters: `RunInstances`' and
/// the charge settings.
pub(crate) const INQUIRY_PRICE_RUN_INSTANCES: &[Field] = &{
    const N: usize = RUN_INSTANCES.len();
    let mut all = [opt("", Ty::Any); N + 3];
    let mut i = 0;
    while i < N {
        all[i] = RUN_INSTANCES[i];
        i += 1;
    }
    all[N] = opt("InstanceChargePrepaid", Ty::Obj(CHARGE_PREPAID));
    all[N + 1] = opt("InternetAccessible", Ty::Obj(INTERNET));
    all[N + 2] = opt("DataDisks", Ty::Any);
    all
};

/// `InquiryPriceResetInstance` parameters.
pub(crate) const INQUIRY_PRICE_RESET_INSTANCE: &[Field] = &[
    req("InstanceId", Ty::Str),
    opt("ImageId", Ty::Str),
    opt("SystemDisk", Ty::Any),
    opt("LoginSettings", Ty::Any),
    opt("EnhancedService", Ty::Any),
    opt("UserData", Ty::Str),
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrepaidIn {
    period: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InternetIn {
    internet_charge_type: Option<String>,
    internet_max_bandwidth_out: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InquiryRunIn {
    placement: PlacementIn,
    image_id: String,
    instance_type: Option<String>,
    instance_charge_type: Option<String>,
    instance_charge_prepaid: Option<PrepaidIn>,
    instance_count: Option<i64>,
    internet_accessible: Option<InternetIn>,
}

fn quote_error(e: QuoteError) -> ApiError {
    match e {
        QuoteError::Instance(inner) => instance_error(inner),
        QuoteError::Price(PriceError::UnknownType(t)) => ApiError::invalid_value(
            code::INSTANCE_TYPE_NOT_FOUND,
            format!("The instance type `{t}` is not offered in this region (see `imaged price show`)."),
        ),
        QuoteError::Price(PriceError::Period) => ApiError::invalid_value(
            code::INVALID_PARAMETER_VALUE_RANGE,
            "InstanceChargePrepaid.Period must be 1 to 36 months.".into(),
        ),
        QuoteError::TypeMalformed(t) => {
            ApiError::invalid_value(code::INVALID_INSTANCE_TYPE_MALFORMED, format!("Malformed instance type `{t}`."))
        }
        QuoteError::TypeMismatch(t) => ApiError::invalid_value(
            code::IMAGE_FOR_GIVEN_INSTANCE_TYPE,
            format!("The image's architecture does not run on the instance type `{t}`."),
        ),
    }
}

/// The request of a run quote, and whether traffic is charged.
fn run_request(params: Value) -> Result<(PriceRequest, bool), ApiError> {
    let r: InquiryRunIn = parse(params)?;
    let charge = match (r.instance_charge_type.as_deref().unwrap_or("POSTPAID_BY_HOUR"), r.instance_charge_prepaid) {
        ("POSTPAID_BY_HOUR", _) => Charge::Hourly,
        ("PREPAID", Some(p)) => Charge::Prepaid(u64::try_from(p.period).unwrap_or(0)),
        ("PREPAID", None) => return Err(ApiError::missing("InstanceChargePrepaid")),
        (other, _) => {
            return Err(ApiError::invalid_value(
                code::INVALID_PARAMETER_VALUE,
                format!("InstanceChargeType `{other}` is not offered here: POSTPAID_BY_HOUR or PREPAID."),
            ))
        }
    };
    let count = r
        .instance_count
        .map(|n| {
            u64::try_from(n).map_err(|_| {
                ApiError::invalid_value(code::INVALID_PARAMETER_VALUE_RANGE, "InstanceCount must be positive.".into())
            })
        })
        .transpose()?;
    let traffic = r.internet_accessible.is_some_and(|i| {
        i.internet_max_bandwidth_out.unwrap_or(0) > 0
            && i.internet_charge_type.as_deref().is_none_or(|t| t.starts_with("TRAFFIC_POSTPAID"))
    });
    let req = PriceRequest {
        zone: Some(r.placement.zone),
        image_id: r.image_id,
        instance_type: r.instance_type,
        count,
        charge,
    };
    Ok((req, traffic))
}

/// Minor units as the wire's yuan (the only conversion to a float, at the edge).
fn yuan(minor: u64) -> f64 {
    minor as f64 / 100.0
}

/// Tencent's `Price` of a quote.
fn price_out(q: &Quote, traffic: bool) -> Value {
    let total = yuan(q.breakdown.total());
    let instance = match q.charge {
        Charge::Hourly => {
            json!({"UnitPrice": total, "UnitPriceDiscount": total, "ChargeUnit": "HOUR", "Discount": 100.0})
        }
        Charge::Prepaid(_) => json!({"OriginalPrice": total, "DiscountPrice": total, "Discount": 100.0}),
    };
    let per_gb = yuan(q.breakdown.bandwidth_per_gb);
    let bandwidth = if traffic {
        json!({"UnitPrice": per_gb, "UnitPriceDiscount": per_gb, "ChargeUnit": "GB", "Discount": 100.0})
    } else {
        json!({})
    };
    json!({"Price": {"InstancePrice": instance, "BandwidthPrice": bandwidth}})
}

/// `InquiryPriceRunInstances`.
pub(crate) async fn inquiry_price_run_instances(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let (req, traffic) = run_request(params)?;
    let q = ctx.service.quote_run(ctx.caller, ctx.region()?, &req).await.map_err(quote_error)?;
    to_json(&price_out(&q, traffic))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InquiryResetIn {
    instance_id: String,
    image_id: Option<String>,
}

/// `InquiryPriceResetInstance`: the hourly price of the instance once reinstalled.
pub(crate) async fn inquiry_price_reset_instance(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let r: InquiryResetIn = parse(params)?;
    let q = ctx
        .service
        .quote_reset(ctx.caller, ctx.region()?, &r.instance_id, r.image_id.as_deref())
        .await
        .map_err(quote_error)?;
    to_json(&price_out(&q, false))
}

/// `DescribePriceBreakdown`: the parts of `InquiryPriceRunInstances`' `InstancePrice`, in minor
/// units of the table's currency.
pub(crate) async fn describe_price_breakdown(ctx: &Ctx<'_>, params: Value) -> Result<Vec<u8>, ApiError> {
    let (req, _) = run_request(params)?;
    let q = ctx.service.quote_run(ctx.caller, ctx.region()?, &req).await.map_err(quote_error)?;
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out<'a> {
        currency: &'a str,
        charge_unit: &'static str,
        period: u64,
        instance_count: u64,
        instance_type: &'a str,
        instance_price: u64,
        image_fee: u64,
        image_price_model: &'static str,
        image_unit_price: u64,
        licence_fee: u64,
        total: u64,
        bandwidth_price_per_gb: u64,
    }
    let (unit, period) = match q.charge {
        Charge::Hourly => ("HOUR", 1),
        Charge::Prepaid(months) => ("MONTH", months),
    };
    to_json(&Out {
        currency: &q.currency,
        charge_unit: unit,
        period,
        instance_count: q.count,
        instance_type: &q.instance_type,
        instance_price: q.breakdown.instance,
        image_fee: q.breakdown.image,
        image_price_model: q.fee.model.as_str(),
        image_unit_price: q.fee.price,
        licence_fee: q.breakdown.licence,
        total: q.breakdown.total(),
        bandwidth_price_per_gb: q.breakdown.bandwidth_per_gb,
    })
}
