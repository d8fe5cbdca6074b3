//! The conformance suite every metadata backend runs: the behaviour callers rely on, stated once.
//!
//! Each backend's tests call [`run`] on a fresh, empty store.

use imaged_domain::catalog;
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId, ImageKind, ImageSource, ImageState, Tag};

use crate::{JobRecord, JobState, KeyRecord, KeyStatus, ManifestRecord, MetaStore, Refused, Role};

/// A custom image owned by `owner` in `region`, with a fresh id.
pub fn custom_image(owner: AccountId, region: &str, name: &str, seed: u8) -> Image {
    let mut img = catalog::public_images().remove(0);
    img.id = ImageId::from_random([seed, seed.wrapping_mul(7), 3, 1, 4, 1, 5, 9]);
    img.kind = ImageKind::Private;
    img.source = ImageSource::ExternalImport;
    img.owner = Some(owner);
    img.region = Some(region.to_owned());
    img.name = name.to_owned();
    img.tags = vec![Tag { key: "team".into(), value: format!("t{seed}") }];
    img
}

/// Runs every check on `store`, which must be empty.
pub async fn run<S: MetaStore + Clone + 'static>(store: &S) {
    accounts_get_sequential_ids_and_unique_names(store).await;
    keys_are_stored_listed_disabled_and_deleted(store).await;
    catalogue_images_are_upserted_and_visible_to_everyone(store).await;
    custom_images_are_visible_to_owner_and_share_recipients_in_their_region(store).await;
    quota_and_name_uniqueness_hold_under_concurrency(store.clone()).await;
    manifests_count_block_references_and_gc_takes_only_old_unreferenced_blocks(store).await;
    jobs_are_claimed_once_renewed_by_their_worker_and_taken_over_after_lease_expiry(store).await;
}

/// A queued import job for `image`.
pub fn job(kind: &str, region: &str, account: AccountId, image: Option<ImageId>, now: i64) -> JobRecord {
    JobRecord::queued(kind, region, account, image, "{}".into(), Timestamp(now))
}

async fn manifests_count_block_references_and_gc_takes_only_old_unreferenced_blocks<S: MetaStore>(store: &S) {
    let owner = new_account(store, "bytes-owner").await;
    let region = "ap-nanjing";
    let (a, b, c) = ("aa".repeat(32), "bb".repeat(32), "cc".repeat(32));
    store
        .touch_blocks(region, &[(a.clone(), 100), (b.clone(), 200), (c.clone(), 300)], Timestamp(1_000))
        .await
        .expect("touch");
    assert_eq!(store.block_totals(region).await.expect("totals"), (3, 600));
    let first = custom_image(owner, region, "bytes-1", 31);
    let second = custom_image(owner, region, "bytes-2", 32);
    for img in [&first, &second] {
        store.insert_custom_image(img, 10).await.expect("db").expect("inserted");
    }
    let record = |img: &Image, blocks: Vec<String>| ManifestRecord {
        image: img.id.clone(),
        region: region.into(),
        manifest: vec![1, 2, 3],
        blocks,
        source_format: "qcow2".into(),
        virtual_size: 3 << 20,
    };
    let mut normal = first.clone();
    normal.state = ImageState::Normal;
    store.attach_manifest(&normal, &record(&first, vec![a.clone(), b.clone()])).await.expect("attach");
    store.attach_manifest(&second, &record(&second, vec![a.clone()])).await.expect("attach");
    assert_eq!(store.get_manifest(&first.id).await.expect("db"), Some(record(&first, vec![a.clone(), b.clone()])));
    assert_eq!(store.get_image(&first.id).await.expect("db").map(|i| i.state), Some(ImageState::Normal));
    assert_eq!(store.region_manifests(region).await.expect("db").len(), 2);
    assert_eq!(store.block_refs(region, &a).await.expect("refs"), 2);
    assert_eq!(store.block_refs(region, &b).await.expect("refs"), 1);
    assert_eq!(store.block_refs(region, &c).await.expect("refs"), 0);

    // Only c is unreferenced, and only a cutoff after its touch collects it.
    assert!(store.collect_unreferenced(region, Timestamp(999)).await.expect("gc").is_empty());
    assert_eq!(store.collect_unreferenced(region, Timestamp(1_001)).await.expect("gc"), vec![c.clone()]);
    assert!(store.detach_manifest(&first.id).await.expect("detach"));
    assert!(!store.detach_manifest(&first.id).await.expect("detach twice"));
    assert_eq!(store.block_refs(region, &a).await.expect("refs"), 1);
    assert_eq!(store.block_refs(region, &b).await.expect("refs"), 0);
    // Detaching touches the released blocks now: an old cutoff keeps them (the grace period).
    assert!(store.collect_unreferenced(region, Timestamp(1_001)).await.expect("gc").is_empty());
    assert_eq!(store.collect_unreferenced(region, Timestamp(i64::MAX)).await.expect("gc"), vec![b]);
    assert_eq!(store.block_totals(region).await.expect("totals").0, 1, "a is still referenced by the second image");
}

async fn jobs_are_claimed_once_renewed_by_their_worker_and_taken_over_after_lease_expiry<S: MetaStore>(store: &S) {
    let owner = new_account(store, "job-owner").await;
    let region = "ap-hongkong";
    assert_eq!(store.oldest_active_job(region).await.expect("db"), None);
    let img = custom_image(owner, region, "importing", 41);
    let id = store
        .insert_image_with_job(&img, 10, &job("import", region, owner, Some(img.id.clone()), 500))
        .await
        .expect("db")
        .expect("inserted");
    assert_eq!(store.oldest_active_job(region).await.expect("db"), Some(Timestamp(500)));
    let refused = store
        .insert_image_with_job(&custom_image(owner, region, "over", 42), 1, &job("import", region, owner, None, 501))
        .await
        .expect("db");
    assert_eq!(refused, Err(Refused::QuotaExceeded));

    let claimed = store.claim_job("w1", Timestamp(600), Timestamp(630)).await.expect("db").expect("a job");
    assert_eq!((claimed.id, claimed.state, claimed.attempts), (id, JobState::Running, 1));
    assert_eq!(claimed.image, Some(img.id.clone()));
    assert_eq!(store.claim_job("w2", Timestamp(610), Timestamp(640)).await.expect("db"), None, "lease held");
    assert!(store.renew_job(id, "w1", 40, Timestamp(660), Timestamp(620)).await.expect("db"));
    assert!(!store.renew_job(id, "w2", 40, Timestamp(660), Timestamp(620)).await.expect("db"));
    assert_eq!(store.get_job(id).await.expect("db").map(|j| j.progress), Some(40));
    // w1 dies: after its lease, w2 takes the job over and w1 can no longer renew it.
    let taken = store.claim_job("w2", Timestamp(700), Timestamp(730)).await.expect("db").expect("taken over");
    assert_eq!((taken.id, taken.attempts), (id, 2));
    assert!(!store.renew_job(id, "w1", 50, Timestamp(760), Timestamp(701)).await.expect("db"));
    store.finish_job(id, JobState::Succeeded, Some(r#"{"ok":true}"#), None, Timestamp(710)).await.expect("finish");
    let done = store.get_job(id).await.expect("db").expect("job");
    assert_eq!((done.state, done.progress, done.result.as_deref()), (JobState::Succeeded, 100, Some(r#"{"ok":true}"#)));
    assert_eq!(store.claim_job("w3", Timestamp(800), Timestamp(830)).await.expect("db"), None);
    assert_eq!(store.oldest_active_job(region).await.expect("db"), None);
    let failing = store.insert_job(&job("export", region, owner, None, 900)).await.expect("insert");
    store.claim_job("w3", Timestamp(901), Timestamp(930)).await.expect("db").expect("claimed");
    store.finish_job(failing, JobState::Failed, None, Some("bucket gone"), Timestamp(902)).await.expect("finish");
    let failed = store.get_job(failing).await.expect("db").expect("job");
    assert_eq!((failed.state, failed.error.as_deref()), (JobState::Failed, Some("bucket gone")));
}

async fn new_account<S: MetaStore>(store: &S, name: &str) -> AccountId {
    store.create_account(name, Role::User, Timestamp(1_700_000_000)).await.expect("db").expect("created").id
}

async fn accounts_get_sequential_ids_and_unique_names<S: MetaStore>(store: &S) {
    let admin = store.create_account("admin", Role::Admin, Timestamp(10)).await.expect("db").expect("created");
    assert_eq!(admin.id, AccountId(crate::FIRST_ACCOUNT_ID));
    assert_eq!(admin.role, Role::Admin);
    let alice = store.create_account("alice", Role::User, Timestamp(11)).await.expect("db").expect("created");
    assert_eq!(alice.id, AccountId(crate::FIRST_ACCOUNT_ID + 1));
    assert_eq!(
        store.create_account("alice", Role::User, Timestamp(12)).await.expect("db"),
        Err(Refused::DuplicateAccountName)
    );
    assert_eq!(store.get_account(alice.id).await.expect("db"), Some(alice.clone()));
    assert_eq!(store.get_account(AccountId(42)).await.expect("db"), None);
    assert!(store.set_image_quota(alice.id, Some(3)).await.expect("db"));
    assert_eq!(store.get_account(alice.id).await.expect("db").and_then(|a| a.image_quota), Some(3));
    assert!(store.set_image_quota(alice.id, None).await.expect("db"));
    assert!(!store.set_image_quota(AccountId(42), Some(1)).await.expect("db"));
    let names: Vec<_> = store.list_accounts().await.expect("db").into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["admin", "alice"]);
}

async fn keys_are_stored_listed_disabled_and_deleted<S: MetaStore>(store: &S) {
    let owner = new_account(store, "key-owner").await;
    let key = KeyRecord {
        secret_id: "AKIDsuite0000000000000000000000000001".into(),
        account: owner,
        sealed_secret: vec![0, 1, 2, 255],
        status: KeyStatus::Enabled,
        created_at: Timestamp(5),
    };
    store.insert_key(&key).await.expect("insert");
    assert_eq!(store.get_key(&key.secret_id).await.expect("db"), Some(key.clone()));
    assert_eq!(store.list_keys(Some(owner)).await.expect("db"), vec![key.clone()]);
    assert!(store.list_keys(None).await.expect("db").contains(&key));
    assert!(store.insert_key(&key).await.is_err(), "a duplicate SecretId must be refused");
    assert!(store.set_key_status(&key.secret_id, KeyStatus::Disabled).await.expect("db"));
    assert_eq!(store.get_key(&key.secret_id).await.expect("db").map(|k| k.status), Some(KeyStatus::Disabled));
    assert!(!store.set_key_status("AKIDnope", KeyStatus::Enabled).await.expect("db"));
    assert!(store.delete_key(&key.secret_id).await.expect("db"));
    assert!(!store.delete_key(&key.secret_id).await.expect("db"));
    assert_eq!(store.get_key(&key.secret_id).await.expect("db"), None);
}

async fn catalogue_images_are_upserted_and_visible_to_everyone<S: MetaStore>(store: &S) {
    let public = catalog::public_images();
    store.put_images(&public).await.expect("seed");
    store.put_images(&public).await.expect("seeding twice is harmless");
    let someone = new_account(store, "catalogue-reader").await;
    let seen = store.visible_images(someone, "ap-guangzhou").await.expect("db");
    assert_eq!(seen.len(), public.len());
    assert!(seen.iter().all(|v| !v.shared_with_caller && v.image.kind == ImageKind::Public));
    let tk4 = ImageId::parse("img-eb30mz89").expect("id");
    assert_eq!(store.get_image(&tk4).await.expect("db").map(|i| i.name), Some("TencentOS Server 3.1 (TK4)".into()));
    let mut renamed = public[0].clone();
    renamed.description = "updated".into();
    store.put_images(std::slice::from_ref(&renamed)).await.expect("upsert");
    assert_eq!(store.get_image(&renamed.id).await.expect("db"), Some(renamed));
}

async fn custom_images_are_visible_to_owner_and_share_recipients_in_their_region<S: MetaStore>(store: &S) {
    let owner = new_account(store, "owner").await;
    let friend = new_account(store, "friend").await;
    let stranger = new_account(store, "stranger").await;
    let img = custom_image(owner, "ap-guangzhou", "web", 1);
    assert_eq!(store.insert_custom_image(&img, 10).await.expect("db"), Ok(()));
    assert_eq!(store.get_image(&img.id).await.expect("db"), Some(img.clone()));
    let customs = |v: Vec<crate::VisibleImage>| -> Vec<(ImageId, bool)> {
        v.into_iter()
            .filter(|v| v.image.kind == ImageKind::Private)
            .map(|v| (v.image.id, v.shared_with_caller))
            .collect()
    };
    assert_eq!(customs(store.visible_images(owner, "ap-guangzhou").await.expect("db")), [(img.id.clone(), false)]);
    assert!(customs(store.visible_images(owner, "ap-shanghai").await.expect("db")).is_empty());
    assert!(customs(store.visible_images(friend, "ap-guangzhou").await.expect("db")).is_empty());
    assert!(store.add_share(&img.id, friend, Timestamp(20)).await.expect("db"));
    assert!(!store.add_share(&img.id, friend, Timestamp(21)).await.expect("db"), "second share is a no-op");
    assert_eq!(customs(store.visible_images(friend, "ap-guangzhou").await.expect("db")), [(img.id.clone(), true)]);
    assert!(customs(store.visible_images(friend, "ap-shanghai").await.expect("db")).is_empty());
    assert!(customs(store.visible_images(stranger, "ap-guangzhou").await.expect("db")).is_empty());
    assert_eq!(store.count_custom_images(owner, "ap-guangzhou").await.expect("db"), 1);
    assert_eq!(store.count_custom_images(owner, "ap-shanghai").await.expect("db"), 0);
    let mut state_change = img.clone();
    state_change.state = ImageState::Syncing;
    state_change.sync_percent = Some(40);
    store.put_images(std::slice::from_ref(&state_change)).await.expect("update");
    assert_eq!(store.get_image(&img.id).await.expect("db").and_then(|i| i.sync_percent), Some(40));
}

async fn quota_and_name_uniqueness_hold_under_concurrency<S: MetaStore + Clone + 'static>(store: S) {
    let owner = new_account(&store, "busy").await;
    let mut tasks = Vec::new();
    for n in 0..50u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let img = custom_image(owner, "ap-beijing", &format!("img-{n}"), 100 + n);
            store.insert_custom_image(&img, 3).await.expect("db")
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(()) => ok += 1,
            Err(Refused::QuotaExceeded) => refused += 1,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!((ok, refused), (3, 47));
    assert_eq!(store.count_custom_images(owner, "ap-beijing").await.expect("db"), 3);

    let first = custom_image(owner, "ap-chengdu", "same-name", 201);
    let second = custom_image(owner, "ap-chengdu", "same-name", 202);
    assert_eq!(store.insert_custom_image(&first, 10).await.expect("db"), Ok(()));
    assert_eq!(store.insert_custom_image(&second, 10).await.expect("db"), Err(Refused::DuplicateName));
    let elsewhere = custom_image(owner, "ap-chongqing", "same-name", 203);
    assert_eq!(store.insert_custom_image(&elsewhere, 10).await.expect("db"), Ok(()), "names are per region");
    assert_eq!(store.insert_custom_image(&first, 10).await.expect("db"), Err(Refused::DuplicateId));
}
