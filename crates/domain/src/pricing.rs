//! What a launch or a reinstall costs: the operator's price table (per region: instance types
//! per hour and per month, the Windows licence outside mainland China, custom-image storage,
//! bandwidth) and a marketplace image's own fee, in integer minor units (fen for CNY), never
//! floating point.
//!
//! A month is 720 hours here: an hourly price charged for a prepaid month is 720 × it, and a
//! monthly image fee on a pay-as-you-go instance is its 720th part per hour, rounded up.

use std::collections::BTreeMap;

use crate::image::Image;
use crate::region::Region;
use crate::rules::licence_fee_applies;

/// Hours in a billing month.
pub const HOURS_PER_MONTH: u64 = 720;
/// The largest price a table or a listing may hold, in minor units (10 million yuan).
pub const MAX_PRICE: u64 = 1_000_000_000;

/// An instance type's prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TypePrice {
    /// Per instance-hour (pay-as-you-go).
    pub hourly: u64,
    /// Per instance-month (prepaid).
    pub monthly: u64,
}

/// One region's prices (or the default for regions without their own).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPrices {
    /// Instance types.
    #[serde(default)]
    pub instance_types: BTreeMap<String, TypePrice>,
    /// The Windows licence per instance-hour, charged outside mainland China.
    #[serde(default)]
    pub windows_licence_hourly: u64,
    /// The Windows licence per instance-month (prepaid), outside mainland China.
    #[serde(default)]
    pub windows_licence_monthly: u64,
    /// Custom-image storage per GB-month.
    #[serde(default)]
    pub storage_gb_month: u64,
    /// Outbound traffic per GB.
    #[serde(default)]
    pub bandwidth_gb: u64,
}

/// The price table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// The currency every price is in (minor units of it).
    #[serde(default = "cny")]
    pub currency: String,
    /// Prices of regions without their own entry.
    #[serde(default)]
    pub default: RegionPrices,
    /// Per-region prices (a region listed here uses only its own).
    #[serde(default)]
    pub regions: BTreeMap<String, RegionPrices>,
}

fn cny() -> String {
    "CNY".into()
}

impl Default for PriceTable {
    /// A table for a fresh installation: common types, in fen.
    fn default() -> Self {
        let types = [
            ("S5.SMALL1", 12, 5_500),
            ("S5.SMALL2", 19, 8_800),
            ("S5.MEDIUM2", 35, 16_000),
            ("S5.MEDIUM4", 49, 22_500),
            ("S5.LARGE8", 97, 44_900),
            ("S5.2XLARGE16", 194, 89_800),
            ("SA5.MEDIUM2", 31, 14_300),
            ("SA5.MEDIUM4", 44, 20_200),
            ("SR1.MEDIUM4", 40, 18_400),
        ];
        let instance_types = types
            .iter()
            .map(|(name, hourly, monthly)| ((*name).to_owned(), TypePrice { hourly: *hourly, monthly: *monthly }))
            .collect();
        Self {
            currency: cny(),
            default: RegionPrices {
                instance_types,
                windows_licence_hourly: 12,
                windows_licence_monthly: 6_000,
                storage_gb_month: 12,
                bandwidth_gb: 80,
            },
            regions: BTreeMap::new(),
        }
    }
}

impl PriceTable {
    /// The prices that apply in `region`.
    pub fn for_region(&self, region: &str) -> &RegionPrices {
        self.regions.get(region).unwrap_or(&self.default)
    }

    /// Checks every price is within [`MAX_PRICE`].
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in
            std::iter::once(("default", &self.default)).chain(self.regions.iter().map(|(k, v)| (k.as_str(), v)))
        {
            let flat = [r.windows_licence_hourly, r.windows_licence_monthly, r.storage_gb_month, r.bandwidth_gb];
            let types = r.instance_types.values().flat_map(|t| [t.hourly, t.monthly]);
            if flat.into_iter().chain(types).any(|p| p > MAX_PRICE) {
                return Err(format!("a price of [prices.{name}] is over {MAX_PRICE} minor units"));
            }
        }
        Ok(())
    }
}

wire_enum! {
    /// How a marketplace image is priced by its provider.
    PriceModel {
        /// No fee.
        Free = "FREE",
        /// Per instance-hour.
        Hourly = "HOURLY",
        /// Per instance-month.
        Monthly = "MONTHLY",
    }
}

/// A marketplace image's fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageFee {
    /// The model.
    pub model: PriceModel,
    /// The price per unit of the model, minor units (0 for `FREE`).
    pub price: u64,
}

impl ImageFee {
    /// No fee.
    pub const FREE: ImageFee = ImageFee { model: PriceModel::Free, price: 0 };

    /// Per instance-hour of a pay-as-you-go instance.
    pub fn hourly(self) -> u64 {
        match self.model {
            PriceModel::Free => 0,
            PriceModel::Hourly => self.price,
            PriceModel::Monthly => self.price.div_ceil(HOURS_PER_MONTH),
        }
    }

    /// Per instance-month of a prepaid instance.
    pub fn monthly(self) -> u64 {
        match self.model {
            PriceModel::Free => 0,
            PriceModel::Hourly => self.price.saturating_mul(HOURS_PER_MONTH),
            PriceModel::Monthly => self.price,
        }
    }
}

/// The marketplace fee launching `image` costs: its listing's (the built-in rows state theirs in
/// yuan per instance-hour); none for any other image.
pub fn image_fee(image: &Image) -> ImageFee {
    match &image.market {
        None => ImageFee::FREE,
        Some(listing) if listing.fee.is_some() => listing.fee.unwrap_or(ImageFee::FREE),
        Some(listing) => match parse_amount(&listing.price_cny_per_hour) {
            Some(0) | None => ImageFee::FREE,
            Some(price) => ImageFee { model: PriceModel::Hourly, price },
        },
    }
}

/// Parses a decimal amount (`"0.20"`, `"3"`, `"12.5"`) into minor units (two decimals),
/// exactly: no floating point. `None` for anything else, more than two decimals included.
pub fn parse_amount(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || s.ends_with('.')
        || frac.len() > 2
        || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{frac:0<2}");
    whole.parse::<u64>().ok()?.checked_mul(100)?.checked_add(frac.parse::<u64>().ok()?)
}

/// How an instance is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// `POSTPAID_BY_HOUR`.
    Hourly,
    /// `PREPAID` for this many months.
    Prepaid(u64),
}

/// What one instance (or several alike) costs, per part, in minor units: per hour for
/// pay-as-you-go, for the whole period when prepaid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Breakdown {
    /// The instance type's price.
    pub instance: u64,
    /// The marketplace image's fee.
    pub image: u64,
    /// The Windows licence (outside mainland China).
    pub licence: u64,
    /// Outbound traffic, per GB (not included in the total: it depends on use).
    pub bandwidth_per_gb: u64,
}

impl Breakdown {
    /// Instance, image and licence together: what `InstancePrice` carries.
    pub fn total(&self) -> u64 {
        self.instance.saturating_add(self.image).saturating_add(self.licence)
    }
}

/// Why a price cannot be quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The type is not in the region's table.
    #[error("the instance type `{0}` is not offered in this region")]
    UnknownType(String),
    /// A period of 0 or over 36 months.
    #[error("the prepaid period must be 1 to 36 months")]
    Period,
}

/// What `count` instances of `instance_type` from `image` in `region` cost, charged by
/// `charge`; `fee` is the image's marketplace fee (a mark carried by a custom image too).
pub fn quote(
    table: &PriceTable,
    region: &Region,
    instance_type: &str,
    image: &Image,
    fee: ImageFee,
    charge: Charge,
    count: u64,
) -> Result<Breakdown, PriceError> {
    let prices = table.for_region(&region.region);
    let t =
        prices.instance_types.get(instance_type).ok_or_else(|| PriceError::UnknownType(instance_type.to_owned()))?;
    let licensed = licence_fee_applies(image, region);
    let per_instance = match charge {
        Charge::Hourly => Breakdown {
            instance: t.hourly,
            image: fee.hourly(),
            licence: if licensed { prices.windows_licence_hourly } else { 0 },
            bandwidth_per_gb: prices.bandwidth_gb,
        },
        Charge::Prepaid(months) => {
            if !(1..=36).contains(&months) {
                return Err(PriceError::Period);
            }
            Breakdown {
                instance: t.monthly.saturating_mul(months),
                image: fee.monthly().saturating_mul(months),
                licence: if licensed { prices.windows_licence_monthly.saturating_mul(months) } else { 0 },
                bandwidth_per_gb: prices.bandwidth_gb,
            }
        }
    };
    Ok(Breakdown {
        instance: per_instance.instance.saturating_mul(count),
        image: per_instance.image.saturating_mul(count),
        licence: per_instance.licence.saturating_mul(count),
        bandwidth_per_gb: per_instance.bandwidth_per_gb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::public_images;
    use crate::region::RegionCatalog;

    fn image(id: &str) -> Image {
        public_images().into_iter().find(|i| i.id.as_str() == id).expect(id)
    }

    #[test]
    fn amounts_parse_exactly_or_not_at_all() {
        assert_eq!(parse_amount("0.20"), Some(20));
        assert_eq!(parse_amount("3"), Some(300));
        assert_eq!(parse_amount("12.5"), Some(1250));
        for bad in ["", ".5", "1.234", "-1", "1e3", "0x10", "1.", "99999999999999999999"] {
            assert_eq!(parse_amount(bad), None, "{bad}");
        }
    }

    #[test]
    fn windows_pays_a_licence_outside_mainland_only_and_market_fees_add_up() {
        let table = PriceTable::default();
        let regions = RegionCatalog::default();
        let (gz, tokyo) = (regions.get("ap-guangzhou").expect("gz"), regions.get("ap-tokyo").expect("tokyo"));
        let windows = image("img-9id7emv7");
        let linux = image("img-9qabwvbn");
        let q =
            |region, img: &Image, fee, charge| quote(&table, region, "S5.MEDIUM2", img, fee, charge, 2).expect("quote");
        assert_eq!(q(gz, &windows, ImageFee::FREE, Charge::Hourly).licence, 0);
        let abroad = q(tokyo, &windows, ImageFee::FREE, Charge::Hourly);
        assert_eq!((abroad.instance, abroad.licence), (70, 24));
        assert_eq!(q(tokyo, &linux, ImageFee::FREE, Charge::Hourly).licence, 0);
        let fee = ImageFee { model: PriceModel::Hourly, price: 20 };
        let market = q(gz, &linux, fee, Charge::Hourly);
        assert_eq!((market.image, market.total()), (40, 110));
        let monthly = q(gz, &linux, ImageFee { model: PriceModel::Monthly, price: 721 }, Charge::Hourly);
        assert_eq!(monthly.image, 4, "a monthly fee per hour is its 720th part, rounded up");
        let prepaid = q(tokyo, &windows, fee, Charge::Prepaid(3));
        assert_eq!((prepaid.instance, prepaid.image, prepaid.licence), (96_000, 86_400, 36_000));
        assert_eq!(
            quote(&table, gz, "S9.HUGE", &linux, fee, Charge::Hourly, 1),
            Err(PriceError::UnknownType("S9.HUGE".into()))
        );
        assert_eq!(quote(&table, gz, "S5.MEDIUM2", &linux, fee, Charge::Prepaid(0), 1), Err(PriceError::Period));
    }

    #[test]
    fn the_built_in_market_rows_charge_their_hourly_price() {
        let wordpress = crate::catalog::market_images().into_iter().find(|i| i.id.as_str() == "img-wpress22");
        assert_eq!(image_fee(&wordpress.expect("row")), ImageFee { model: PriceModel::Hourly, price: 20 });
        assert_eq!(image_fee(&image("img-9qabwvbn")), ImageFee::FREE);
    }

    #[test]
    fn a_region_of_its_own_replaces_the_default_and_absurd_prices_are_refused() {
        let mut table = PriceTable::default();
        let mut own = RegionPrices::default();
        own.instance_types.insert("S5.MEDIUM2".into(), TypePrice { hourly: 50, monthly: 20_000 });
        table.regions.insert("ap-tokyo".into(), own);
        assert_eq!(table.for_region("ap-tokyo").instance_types["S5.MEDIUM2"].hourly, 50);
        assert_eq!(table.for_region("ap-guangzhou").instance_types["S5.MEDIUM2"].hourly, 35);
        assert!(table.validate().is_ok());
        table.default.bandwidth_gb = MAX_PRICE + 1;
        assert!(table.validate().is_err());
    }
}
