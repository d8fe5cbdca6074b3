//! Metering: what an account used and owes, from *segments*: an instance's running time, each
//! segment with the rates that applied (the instance type's, the image's fee, the licence), and
//! a custom image's stored GB. An instance's segments open when it starts running and close
//! when it stops, is terminated, or is reinstalled (then new ones open with the new image's
//! rates); an image's opens when it becomes NORMAL and closes when it is deleted; each is
//! written in the same transaction as the state change, so a crash neither loses nor doubles a
//! second.
//!
//! Usage over a range is each segment's overlap with it, in seconds (which add up exactly
//! however a range is cut); amounts are rate × quantity × seconds / period (an hour, or a
//! 720-hour month for storage) per line, in minor units, rounded down once per line.

use crate::ids::AccountId;
use crate::market::ListingId;
use crate::pricing::HOURS_PER_MONTH;
use crate::time::Timestamp;

wire_enum! {
    /// What a usage line is for.
    MeterKind {
        /// Instance-hours at the instance type's price.
        Instance = "INSTANCE",
        /// Image-fee hours of a marketplace listing, paid to its provider.
        ImageFee = "IMAGE_FEE",
        /// Windows licence hours (outside mainland China).
        Licence = "LICENCE",
        /// GB-months of custom-image storage.
        Storage = "STORAGE",
    }
}

impl MeterKind {
    /// The seconds a rate is per: an hour, or a month for storage.
    pub fn period_secs(self) -> u64 {
        match self {
            MeterKind::Storage => HOURS_PER_MONTH * 3600,
            _ => 3600,
        }
    }
}

fn one() -> u64 {
    1
}

/// A span of metered time at one rate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Who pays.
    pub account: AccountId,
    /// Where.
    pub region: String,
    /// The instance (or, for storage, the image).
    pub resource: String,
    /// What for.
    pub kind: MeterKind,
    /// Minor units per unit per period (hour; GB-month for storage).
    pub rate: u64,
    /// Units: 1, or GB for storage.
    #[serde(default = "one")]
    pub quantity: u64,
    /// The listing an image fee goes to.
    pub listing: Option<ListingId>,
    /// The listing's provider.
    pub provider: Option<AccountId>,
    /// Opened.
    pub started_at: Timestamp,
    /// Closed; `None` while running.
    pub ended_at: Option<Timestamp>,
}

/// The seconds of `segment` within `[from, to)` (an open segment runs until `to`).
pub fn overlap(segment: &Segment, from: Timestamp, to: Timestamp) -> u64 {
    let end = segment.ended_at.map_or(to.0, |e| e.0.min(to.0));
    let start = segment.started_at.0.max(from.0);
    u64::try_from(end.saturating_sub(start)).unwrap_or(0)
}

/// One line of usage: a resource's seconds at one rate over the range, and what they cost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageLine {
    /// What for.
    pub kind: MeterKind,
    /// The instance (or image).
    pub resource: String,
    /// The region.
    pub region: String,
    /// The listing (image fees).
    pub listing: Option<ListingId>,
    /// Minor units per unit per period.
    pub rate: u64,
    /// Units (GB for storage).
    pub quantity: u64,
    /// Seconds in the range.
    pub seconds: u64,
    /// `rate × quantity × seconds / period`, rounded down.
    pub amount: u64,
}

/// The usage lines of `segments` over `[from, to)`: one per (kind, instance, listing, rate),
/// seconds summed before the one rounding, lines with no seconds left out.
pub fn usage(segments: &[Segment], from: Timestamp, to: Timestamp) -> Vec<UsageLine> {
    let mut lines: Vec<UsageLine> = Vec::new();
    for s in segments {
        let seconds = overlap(s, from, to);
        if seconds == 0 {
            continue;
        }
        let same = |l: &&mut UsageLine| {
            l.kind == s.kind
                && l.resource == s.resource
                && l.listing == s.listing
                && l.rate == s.rate
                && l.quantity == s.quantity
        };
        match lines.iter_mut().find(same) {
            Some(line) => line.seconds += seconds,
            None => lines.push(UsageLine {
                kind: s.kind,
                resource: s.resource.clone(),
                region: s.region.clone(),
                listing: s.listing.clone(),
                rate: s.rate,
                quantity: s.quantity,
                seconds,
                amount: 0,
            }),
        }
    }
    for line in &mut lines {
        line.amount = amount(line.kind, line.rate.saturating_mul(line.quantity), line.seconds);
    }
    lines.sort_by(|a, b| (a.kind.as_str(), &a.resource, a.rate).cmp(&(b.kind.as_str(), &b.resource, b.rate)));
    lines
}

/// `rate` minor units per period of `kind` for `seconds`, rounded down (in 128 bits: no
/// overflow).
pub fn amount(kind: MeterKind, rate: u64, seconds: u64) -> u64 {
    u64::try_from(u128::from(rate) * u128::from(seconds) / u128::from(kind.period_secs())).unwrap_or(u64::MAX)
}

/// A provider's earnings per listing over `[from, to)`: the image-fee seconds of every buyer
/// and their amount.
pub fn earnings(segments: &[Segment], from: Timestamp, to: Timestamp) -> Vec<(ListingId, u64, u64)> {
    let mut per: Vec<(ListingId, u64, u64)> = Vec::new();
    for line in usage(segments, from, to).into_iter().filter(|l| l.kind == MeterKind::ImageFee) {
        let Some(listing) = line.listing else { continue };
        match per.iter_mut().find(|(l, _, _)| *l == listing) {
            Some(entry) => {
                entry.1 += line.seconds;
                entry.2 += line.amount;
            }
            None => per.push((listing, line.seconds, line.amount)),
        }
    }
    per.sort();
    per
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(kind: MeterKind, rate: u64, start: i64, end: Option<i64>) -> Segment {
        Segment {
            account: AccountId(1),
            region: "ap-guangzhou".into(),
            resource: "ins-00000001".into(),
            kind,
            rate,
            quantity: 1,
            listing: (kind == MeterKind::ImageFee).then(|| ListingId::from_random([2; 8])),
            provider: None,
            started_at: Timestamp(start),
            ended_at: end.map(Timestamp),
        }
    }

    #[test]
    fn a_stop_and_start_counts_each_second_once() {
        // Runs 0-2 h, stopped 2-3 h, runs 3-4 h.
        let segments = [seg(MeterKind::Instance, 35, 0, Some(7200)), seg(MeterKind::Instance, 35, 10_800, None)];
        let all = usage(&segments, Timestamp(0), Timestamp(14_400));
        assert_eq!((all.len(), all[0].seconds, all[0].amount), (1, 10_800, 105), "three hours at 0.35");
        let first = usage(&segments, Timestamp(0), Timestamp(5000));
        let rest = usage(&segments, Timestamp(5000), Timestamp(14_400));
        assert_eq!(first[0].seconds + rest[0].seconds, 10_800, "seconds add up across any cut");
        assert!(usage(&segments, Timestamp(7200), Timestamp(10_800)).is_empty(), "nothing while stopped");
    }

    #[test]
    fn fees_go_to_their_listing_and_amounts_round_once_per_line() {
        let segments = [
            seg(MeterKind::Instance, 35, 0, Some(3600)),
            seg(MeterKind::ImageFee, 25, 0, Some(1800)),
            seg(MeterKind::ImageFee, 25, 1800, Some(3600)),
        ];
        let lines = usage(&segments, Timestamp(0), Timestamp(3600));
        let fee = lines.iter().find(|l| l.kind == MeterKind::ImageFee).expect("fee");
        assert_eq!((fee.seconds, fee.amount), (3600, 25), "two halves are one hour, rounded once");
        let e = earnings(&segments, Timestamp(0), Timestamp(3600));
        assert_eq!(e, vec![(ListingId::from_random([2; 8]), 3600, 25)]);
        assert_eq!(amount(MeterKind::Instance, u64::MAX, 3600), u64::MAX, "no overflow");
        // 20 GB at 0.12 per GB-month for half a month.
        let storage =
            Segment { kind: MeterKind::Storage, rate: 12, quantity: 20, ..seg(MeterKind::Instance, 0, 0, None) };
        let line = usage(&[storage], Timestamp(0), Timestamp(360 * 3600)).remove(0);
        assert_eq!((line.quantity, line.amount), (20, 120));
    }
}
