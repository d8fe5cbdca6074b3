//! Prices: `InquiryPriceRunInstances`, `InquiryPriceResetInstance` and the breakdown behind
//! them (`DescribePriceBreakdown`), from the operator's price table and the image's fee.

use imaged_domain::instance::{check_instance_count, DEFAULT_INSTANCE_TYPE};
use imaged_domain::pricing::{quote, Breakdown, Charge, ImageFee, PriceError, PriceTable};
use imaged_domain::rules::architectures_for_instance_type;
use imaged_domain::{AccountId, Region};

use crate::instances::InstanceError;
use crate::service::Service;

/// What a quote is for.
#[derive(Debug, Clone)]
pub struct PriceRequest {
    /// `Placement.Zone` (none: any zone of the region).
    pub zone: Option<String>,
    /// `ImageId`.
    pub image_id: String,
    /// `InstanceType` (default: the launch default).
    pub instance_type: Option<String>,
    /// `InstanceCount`.
    pub count: Option<u64>,
    /// Pay-as-you-go or prepaid.
    pub charge: Charge,
}

/// A quote: the parts and what they are for.
#[derive(Debug, Clone)]
pub struct Quote {
    /// The parts, in minor units.
    pub breakdown: Breakdown,
    /// The image's fee as its listing states it.
    pub fee: ImageFee,
    /// How it is charged.
    pub charge: Charge,
    /// Instances quoted.
    pub count: u64,
    /// The instance type.
    pub instance_type: String,
    /// The table's currency.
    pub currency: String,
}

/// Why a quote is refused.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// The image, the count or the instance.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// The table has no price for it.
    #[error(transparent)]
    Price(#[from] PriceError),
    /// A malformed instance type.
    #[error("malformed instance type `{0}`")]
    TypeMalformed(String),
    /// The image's architecture does not run on the type.
    #[error("the image cannot run on the instance type `{0}`")]
    TypeMismatch(String),
}

impl Service {
    /// The price table.
    pub fn prices(&self) -> &PriceTable {
        self.price_table()
    }

    /// What launching `req` would cost `caller` in `region`.
    pub async fn quote_run(&self, caller: AccountId, region: &Region, req: &PriceRequest) -> Result<Quote, QuoteError> {
        if let Some(zone) = req.zone.as_deref().filter(|z| !region.zones.iter().any(|r| r.zone == *z)) {
            return Err(InstanceError::Zone(zone.to_owned()).into());
        }
        let count = u64::from(check_instance_count(req.count).map_err(InstanceError::from)?);
        let image = self.launchable_image(caller, region, &req.image_id).await?;
        let instance_type = req.instance_type.clone().unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into());
        let archs = architectures_for_instance_type(&instance_type)
            .ok_or_else(|| QuoteError::TypeMalformed(instance_type.clone()))?;
        if !archs.contains(&image.architecture) {
            return Err(QuoteError::TypeMismatch(instance_type));
        }
        let fee = self.fee_of(&image).await.map_err(InstanceError::from)?;
        let breakdown = quote(self.prices(), region, &instance_type, &image, fee, req.charge, count)?;
        Ok(Quote { breakdown, fee, charge: req.charge, count, instance_type, currency: self.prices().currency.clone() })
    }

    /// What reinstalling the caller's instance `id` from `image_id` (default: its image) would
    /// cost per hour afterwards.
    pub async fn quote_reset(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
        image_id: Option<&str>,
    ) -> Result<Quote, QuoteError> {
        let instance = self.own_instance(caller, region, id).await?;
        let req = PriceRequest {
            zone: None,
            image_id: image_id.map_or_else(|| instance.image_id.to_string(), str::to_owned),
            instance_type: Some(instance.instance_type),
            count: Some(1),
            charge: Charge::Hourly,
        };
        self.quote_run(caller, region, &req).await
    }
}
