//! The conformance suite of [`crate::MarketStore`], run by [`crate::testsuite::run`].

use imaged_domain::market::{Listing, ListingId, ListingState, ListingTerms};
use imaged_domain::pricing::{ImageFee, PriceModel};
use imaged_domain::time::Timestamp;
use imaged_domain::{catalog, AccountId, ImageId};

use crate::testsuite::{custom_image, instance, new_account};
use crate::MetaStore;

fn listing(provider: AccountId, seed: u8, image: ImageId) -> Listing {
    Listing {
        id: ListingId::from_random([seed; 8]),
        provider,
        provider_name: "Acme".into(),
        source_image: image,
        terms: ListingTerms {
            name: format!("stack {seed}"),
            software: vec!["Nginx".into()],
            description: String::new(),
            category: "web".into(),
            fee: ImageFee { model: PriceModel::Hourly, price: 25 },
        },
        state: ListingState::Draft,
        reject_reason: None,
        pending: None,
        published: None,
        created_at: Timestamp(i64::from(seed)),
        updated_at: Timestamp(i64::from(seed)),
    }
}

/// Runs every marketplace check on `store`.
pub async fn run<S: MetaStore>(store: &S) {
    let acme = new_account(store, "market-acme").await;
    let other = new_account(store, "market-other").await;
    assert!(store.add_provider(acme, "Acme", Timestamp(1)).await.expect("db"));
    assert!(!store.add_provider(acme, "Acme again", Timestamp(2)).await.expect("db"), "once");
    assert_eq!(store.provider_name(acme).await.expect("db").as_deref(), Some("Acme"));
    assert_eq!(store.provider_name(other).await.expect("db"), None);

    let image = custom_image(acme, "ap-guangzhou", "listed", 61);
    let (a, b) = (listing(acme, 71, image.id.clone()), listing(acme, 72, image.id.clone()));
    let theirs = listing(other, 73, image.id.clone());
    for l in [&a, &b, &theirs] {
        store.insert_listing(l).await.expect("db");
    }
    let mine: Vec<ListingId> = store.list_listings(Some(acme)).await.expect("db").into_iter().map(|l| l.id).collect();
    assert_eq!(mine, [a.id.clone(), b.id.clone()]);
    assert_eq!(store.list_listings(None).await.expect("db").len(), 3);
    assert_eq!(store.get_listing(&a.id).await.expect("db"), Some(a.clone()));

    // A change holds only against the listing as it was read; its images go with it.
    let mut market = catalog::market_images().remove(0);
    market.id = ImageId::from_random([74; 8]);
    let submitted = Listing { state: ListingState::PendingReview, ..a.clone() };
    assert!(store.update_listing(&submitted, &a, std::slice::from_ref(&market)).await.expect("db"));
    assert_eq!(store.get_image(&market.id).await.expect("db"), Some(market.clone()));
    let stale = Listing { state: ListingState::Withdrawn, ..a.clone() };
    let mut other_image = market.clone();
    other_image.id = ImageId::from_random([75; 8]);
    assert!(!store.update_listing(&stale, &a, std::slice::from_ref(&other_image)).await.expect("db"));
    assert_eq!(store.get_listing(&a.id).await.expect("db").map(|l| l.state), Some(ListingState::PendingReview));
    assert!(store.get_image(&other_image.id).await.expect("db").is_none(), "a refused change writes no image");
    segments_open_and_close_with_their_instances(store, acme, other, a.id.clone()).await;
}

async fn segments_open_and_close_with_their_instances<S: MetaStore>(
    store: &S,
    provider: AccountId,
    buyer: AccountId,
    listing: ListingId,
) {
    use imaged_domain::metering::{MeterKind, Segment};
    let vm = instance(buyer, "ap-guangzhou", &ImageId::from_random([76; 8]), 77, 1);
    let seg = |kind, rate, at| Segment {
        account: buyer,
        region: "ap-guangzhou".into(),
        resource: vm.id.to_string(),
        kind,
        rate,
        quantity: 1,
        listing: (kind == MeterKind::ImageFee).then(|| listing.clone()),
        provider: (kind == MeterKind::ImageFee).then_some(provider),
        started_at: Timestamp(at),
        ended_at: None,
    };
    let running = [seg(MeterKind::Instance, 35, 1000), seg(MeterKind::ImageFee, 25, 1000)];
    store.put_instances_metered(std::slice::from_ref(&vm), &running, Timestamp(1000), None).await.expect("db");
    // Stopped at 4600: the open segments close; started again at 8200.
    store.put_instances_metered(std::slice::from_ref(&vm), &[], Timestamp(4600), None).await.expect("db");
    store
        .put_instances_metered(std::slice::from_ref(&vm), &[seg(MeterKind::Instance, 35, 8200)], Timestamp(8200), None)
        .await
        .expect("db");
    let all = store.account_segments(buyer, Timestamp(0), Timestamp(100_000)).await.expect("db");
    let ends: Vec<Option<Timestamp>> = all.iter().map(|s| s.ended_at).collect();
    assert_eq!(ends, [Some(Timestamp(4600)), Some(Timestamp(4600)), None]);
    assert_eq!(store.account_segments(buyer, Timestamp(5000), Timestamp(8000)).await.expect("db").len(), 0, "stopped");
    assert_eq!(store.account_segments(buyer, Timestamp(4000), Timestamp(9000)).await.expect("db").len(), 3);
    let paid = store.provider_segments(provider, Timestamp(0), Timestamp(100_000)).await.expect("db");
    assert_eq!(paid.len(), 1, "only image fees are a provider's");
    assert!(store.account_segments(provider, Timestamp(0), Timestamp(100_000)).await.expect("db").is_empty());
    assert!(store.delete_instance_metered(&vm.id, Timestamp(9000), None).await.expect("db"));
    assert!(store.get_instance(&vm.id).await.expect("db").is_none());
    let last = store.account_segments(buyer, Timestamp(0), Timestamp(100_000)).await.expect("db");
    assert_eq!(last.last().and_then(|s| s.ended_at), Some(Timestamp(9000)), "termination closes the segment");
    assert!(!store.delete_instance_metered(&vm.id, Timestamp(9100), None).await.expect("db"));

    // An image's storage opens only with its NORMAL state, and closes with its deletion.
    let mut img = custom_image(buyer, "ap-guangzhou", "stored", 78);
    img.state = imaged_domain::ImageState::Importing;
    store.insert_custom_image(&img, 10).await.expect("db").expect("inserted");
    let storage = Segment {
        resource: img.id.to_string(),
        kind: MeterKind::Storage,
        rate: 12,
        quantity: 20,
        listing: None,
        provider: None,
        ..seg(MeterKind::Instance, 0, 10_000)
    };
    let mut normal = img.clone();
    normal.state = imaged_domain::ImageState::Normal;
    let stale = imaged_domain::ImageState::Creating;
    assert!(!store.finish_image_metered(&normal, stale, std::slice::from_ref(&storage), None).await.expect("db"));
    let expected = imaged_domain::ImageState::Importing;
    assert!(store.finish_image_metered(&normal, expected, std::slice::from_ref(&storage), None).await.expect("db"));
    let stored = |at| async move {
        let all = store.account_segments(buyer, Timestamp(0), Timestamp(100_000)).await.expect("db");
        all.into_iter().filter(|s| s.kind == MeterKind::Storage).map(|s| s.ended_at).collect::<Vec<_>>() == at
    };
    assert!(stored(vec![None]).await, "one open storage segment");
    assert_eq!(store.delete_image(&img.id, Timestamp(12_000)).await.expect("db"), Ok(true));
    assert!(stored(vec![Some(Timestamp(12_000))]).await, "deleting the image closes it");
}
