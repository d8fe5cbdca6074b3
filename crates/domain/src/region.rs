//! Regions and zones. Each region is flagged mainland China or not, which decides the
//! Windows licence fee and marketplace availability. The set is configurable.

use serde::{Deserialize, Serialize};

/// An availability zone inside a region, e.g. `ap-guangzhou-3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Zone name as the API uses it, e.g. `ap-guangzhou-3`; always prefixed by its region.
    pub zone: String,
    /// Display name, e.g. `Guangzhou Zone 3`.
    pub name: String,
    /// Numeric zone id, e.g. `100003`.
    pub zone_id: u64,
    /// Whether instances can be placed here.
    #[serde(default = "yes")]
    pub available: bool,
}

fn yes() -> bool {
    true
}

/// A region, e.g. `ap-guangzhou`, with its zones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Region name as the API uses it, e.g. `ap-guangzhou`.
    pub region: String,
    /// Display name, e.g. `South China (Guangzhou)`.
    pub name: String,
    /// Whether the region is in mainland China (no Windows licence fee; marketplace offered).
    pub mainland: bool,
    /// Whether the region accepts requests.
    #[serde(default = "yes")]
    pub available: bool,
    /// Zones of the region.
    pub zones: Vec<Zone>,
}

/// Why a region set is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// No regions at all.
    #[error("the region set is empty")]
    Empty,
    /// Two regions share a name.
    #[error("region `{0}` is listed twice")]
    DuplicateRegion(String),
    /// A zone is not named after its region, or appears twice.
    #[error("zone `{zone}` does not belong to region `{region}` or is listed twice")]
    BadZone {
        /// The region.
        region: String,
        /// The zone.
        zone: String,
    },
}

/// The configured regions, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionCatalog {
    regions: Vec<Region>,
}

impl RegionCatalog {
    /// Validates a region set: non-empty, unique names, zones named `<region>-<n>` and unique.
    pub fn new(regions: Vec<Region>) -> Result<Self, RegionError> {
        if regions.is_empty() {
            return Err(RegionError::Empty);
        }
        let mut seen_regions = std::collections::HashSet::new();
        let mut seen_zones = std::collections::HashSet::new();
        for r in &regions {
            if !seen_regions.insert(r.region.as_str()) {
                return Err(RegionError::DuplicateRegion(r.region.clone()));
            }
            for z in &r.zones {
                let prefixed =
                    z.zone.strip_prefix(r.region.as_str()).is_some_and(|rest| rest.starts_with('-') && rest.len() > 1);
                if !prefixed || !seen_zones.insert(z.zone.as_str()) {
                    return Err(RegionError::BadZone { region: r.region.clone(), zone: z.zone.clone() });
                }
            }
        }
        Ok(Self { regions })
    }

    /// All regions, in configured order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region of that name.
    pub fn get(&self, region: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.region == region)
    }

    /// The built-in default set: mainland and overseas regions as a user of the service expects.
    pub fn default_regions() -> Vec<Region> {
        fn region(id: &str, name: &str, mainland: bool, num: u64, zones: &[u64]) -> Region {
            let city = name.rsplit('(').next().unwrap_or(name).trim_end_matches(')');
            Region {
                region: id.to_owned(),
                name: name.to_owned(),
                mainland,
                available: true,
                zones: zones
                    .iter()
                    .map(|n| Zone {
                        zone: format!("{id}-{n}"),
                        name: format!("{city} Zone {n}"),
                        zone_id: num * 100_000 + n,
                        available: true,
                    })
                    .collect(),
            }
        }
        vec![
            region("ap-guangzhou", "South China (Guangzhou)", true, 1, &[3, 4, 6, 7]),
            region("ap-shanghai", "East China (Shanghai)", true, 2, &[2, 3, 4, 5]),
            region("ap-nanjing", "East China (Nanjing)", true, 33, &[1, 2, 3]),
            region("ap-beijing", "North China (Beijing)", true, 8, &[3, 5, 6, 7]),
            region("ap-chengdu", "Southwest China (Chengdu)", true, 16, &[1, 2]),
            region("ap-chongqing", "Southwest China (Chongqing)", true, 19, &[1]),
            region("ap-hongkong", "Hong Kong, Macau and Taiwan (China) (Hong Kong)", false, 5, &[2, 3]),
            region("ap-singapore", "Southeast Asia (Singapore)", false, 9, &[1, 2, 3, 4]),
            region("ap-bangkok", "Southeast Asia (Bangkok)", false, 23, &[1, 2]),
            region("ap-jakarta", "Southeast Asia (Jakarta)", false, 72, &[1, 2]),
            region("ap-seoul", "Northeast Asia (Seoul)", false, 18, &[1, 2]),
            region("ap-tokyo", "Northeast Asia (Tokyo)", false, 25, &[1, 2]),
            region("na-siliconvalley", "West US (Silicon Valley)", false, 15, &[1, 2]),
            region("na-ashburn", "East US (Virginia)", false, 22, &[1, 2]),
            region("eu-frankfurt", "Europe (Frankfurt)", false, 17, &[1, 2]),
            region("sa-saopaulo", "South America (São Paulo)", false, 74, &[1]),
        ]
    }
}

impl Default for RegionCatalog {
    fn default() -> Self {
        Self { regions: Self::default_regions() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_regions_are_valid_and_mix_mainland_and_overseas() {
        let cat = RegionCatalog::new(RegionCatalog::default_regions()).expect("valid defaults");
        let gz = cat.get("ap-guangzhou").expect("guangzhou");
        assert!(gz.mainland);
        assert_eq!(gz.zones[0].zone, "ap-guangzhou-3");
        assert_eq!(gz.zones[0].zone_id, 100_003);
        assert_eq!(gz.zones[0].name, "Guangzhou Zone 3");
        assert!(!cat.get("ap-singapore").expect("singapore").mainland);
        assert!(cat.regions().iter().filter(|r| r.mainland).count() >= 3);
        assert!(cat.get("ap-mars").is_none());
    }

    #[test]
    fn zones_must_be_named_after_their_region() {
        let mut regions = RegionCatalog::default_regions();
        regions[0].zones[0].zone = "ap-shanghai-9".into();
        assert!(matches!(RegionCatalog::new(regions), Err(RegionError::BadZone { .. })));
        let mut dup = RegionCatalog::default_regions();
        dup.push(dup[0].clone());
        assert_eq!(RegionCatalog::new(dup), Err(RegionError::DuplicateRegion("ap-guangzhou".into())));
        assert_eq!(RegionCatalog::new(vec![]), Err(RegionError::Empty));
    }
}
