//! Metering: the usage segments an instance's running time opens and closes, written with its
//! state (`MeterStore`), and what they come to: `DescribeUsage` for a buyer,
//! `DescribeProviderEarnings` for a provider, over any range of the service's clock.

use imaged_domain::instance::{Instance, InstanceState};
use imaged_domain::metering::{earnings, usage, MeterKind, Segment, UsageLine};
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image};
use imaged_metastore::MetaStoreError;

use crate::service::{AppError, Service};

/// A provider's earnings from one listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earning {
    /// The listing.
    pub listing: String,
    /// Image-fee seconds of every buyer.
    pub seconds: u64,
    /// What they paid, minor units.
    pub amount: u64,
}

impl Service {
    /// The segments a running `instance` opens now: its type's price, its listing's fee (with
    /// the provider it goes to), the Windows licence outside mainland China.
    pub(crate) async fn segments_for(&self, instance: &Instance) -> Result<Vec<Segment>, MetaStoreError> {
        let at = self.clock_now();
        let prices = self.price_table().for_region(&instance.region);
        let segment = |kind, rate, listing, provider| Segment {
            account: instance.owner,
            region: instance.region.clone(),
            resource: instance.id.to_string(),
            kind,
            rate,
            quantity: 1,
            listing,
            provider,
            started_at: at,
            ended_at: None,
        };
        let rate = prices.instance_types.get(&instance.instance_type).map_or(0, |t| t.hourly);
        let mut open = vec![segment(MeterKind::Instance, rate, None, None)];
        if let Some(mark) = &instance.market_mark {
            if let Some(listing) = self.store().get_listing(mark).await? {
                let fee = listing.published.as_ref().map_or(listing.terms.fee, |v| v.terms.fee).hourly();
                if fee > 0 {
                    open.push(segment(MeterKind::ImageFee, fee, Some(mark.clone()), Some(listing.provider)));
                }
            }
        }
        let mainland = self.regions().get(&instance.region).is_some_and(|r| r.mainland);
        if instance.windows && !mainland && prices.windows_licence_hourly > 0 {
            open.push(segment(MeterKind::Licence, prices.windows_licence_hourly, None, None));
        }
        Ok(open)
    }

    /// The storage segment of a custom image becoming NORMAL now: its virtual disk's GB at the
    /// region's price per GB-month.
    pub(crate) fn storage_segment(&self, image: &Image) -> Segment {
        let region = image.region.clone().unwrap_or_default();
        Segment {
            account: image.owner.unwrap_or(AccountId(0)),
            rate: self.price_table().for_region(&region).storage_gb_month,
            region,
            resource: image.id.to_string(),
            kind: MeterKind::Storage,
            quantity: image.size_gib,
            listing: None,
            provider: None,
            started_at: self.clock_now(),
            ended_at: None,
        }
    }

    /// Stores `instance` as a job leaves it, closing its open segments and, if it runs, opening
    /// its new ones, in one transaction.
    /// A job writes under its `fence`.
    pub(crate) async fn put_instance_metered(
        &self,
        instance: &Instance,
        fence: Option<&imaged_metastore::JobFence>,
    ) -> Result<(), MetaStoreError> {
        let open =
            if instance.state == InstanceState::Running { self.segments_for(instance).await? } else { Vec::new() };
        self.store().put_instances_metered(std::slice::from_ref(instance), &open, self.clock_now(), fence).await
    }

    /// `DescribeUsage`: the caller's usage lines over `[from, to)` (of one kind, if given).
    pub async fn describe_usage(
        &self,
        caller: AccountId,
        from: Timestamp,
        to: Timestamp,
        kind: Option<MeterKind>,
    ) -> Result<Vec<UsageLine>, AppError> {
        let segments = self.store().account_segments(caller, from, to).await?;
        let lines = usage(&segments, from, to);
        Ok(lines.into_iter().filter(|l| kind.is_none_or(|k| l.kind == k)).collect())
    }

    /// `DescribeProviderEarnings`: per listing, what buyers paid the caller over `[from, to)`.
    pub async fn provider_earnings(
        &self,
        caller: AccountId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Earning>, AppError> {
        let segments = self.store().provider_segments(caller, from, to).await?;
        Ok(earnings(&segments, from, to)
            .into_iter()
            .map(|(listing, seconds, amount)| Earning { listing: listing.to_string(), seconds, amount })
            .collect())
    }
}
