//! The conformance suite every metadata backend runs: the behaviour callers rely on, stated once.
//!
//! Each backend's tests call [`run`] on a fresh, empty store.

use imaged_domain::catalog;
use imaged_domain::instance::{Instance, InstanceOp, InstanceState};
use imaged_domain::time::Timestamp;
use imaged_domain::{AccountId, Image, ImageId, ImageKind, ImageSource, ImageState, InstanceId, Tag};

use crate::{
    ExportedFile, JobFence, JobRecord, JobState, KeyRecord, KeyStatus, ManifestRecord, MetaStore, Refused, Role,
};

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
    images_are_renamed_uniquely_and_deleted_only_when_not_shared(store).await;
    instances_are_listed_per_owner_and_region_and_take_one_operation_at_a_time(store.clone()).await;
    the_share_limit_holds_under_concurrency_and_shares_can_be_cancelled(store.clone()).await;
    a_sync_begins_only_from_normal_and_inserts_every_copy_or_none(store).await;
    jobs_are_claimed_by_kind_and_no_account_runs_more_than_its_share(store.clone()).await;
    exported_files_are_recorded_with_the_account_that_made_them(store).await;
    a_signature_is_recorded_once_even_by_concurrent_servers(store.clone()).await;
    crate::testsuite_tke::run(store).await;
    crate::testsuite_market::run(store).await;
    crate::testsuite_scale::run(store).await;
    storage_quotas_are_overridden_and_image_bytes_counted_per_owner(store).await;
}

async fn storage_quotas_are_overridden_and_image_bytes_counted_per_owner<S: MetaStore>(store: &S) {
    let owner = new_account(store, "storage-owner").await;
    assert_eq!(store.get_account(owner).await.expect("db").and_then(|a| a.storage_quota_gib), None);
    assert!(store.set_storage_quota(owner, Some(7)).await.expect("db"));
    assert_eq!(store.get_account(owner).await.expect("db").and_then(|a| a.storage_quota_gib), Some(7));
    assert!(store.set_storage_quota(owner, None).await.expect("db"));
    assert!(!store.set_storage_quota(AccountId(9), Some(1)).await.expect("db"), "no such account");
    assert_eq!(store.image_bytes(owner).await.expect("db"), 0);
    for (n, region) in ["ap-beijing", "ap-shanghai"].into_iter().enumerate() {
        let img = custom_image(owner, region, "counted", 230 + n as u8);
        store.insert_custom_image(&img, 10).await.expect("db").expect("inserted");
        let record = ManifestRecord {
            image: img.id.clone(),
            region: region.into(),
            manifest: vec![1],
            blocks: vec![],
            source_format: "raw".into(),
            virtual_size: 3 << 20,
        };
        store.attach_manifest(&img, &record).await.expect("attach");
    }
    let pending = custom_image(owner, "ap-beijing", "no-bytes-yet", 232);
    store.insert_custom_image(&pending, 10).await.expect("db").expect("inserted");
    assert_eq!(store.image_bytes(owner).await.expect("db"), 6 << 20, "images with bytes, in every region");
}

async fn a_signature_is_recorded_once_even_by_concurrent_servers<S: MetaStore + Clone + 'static>(store: S) {
    let sig = "ab".repeat(32);
    let mut tasks = Vec::new();
    for n in 0..10 {
        let (store, sig) = (store.clone(), sig.clone());
        tasks.push(tokio::spawn(async move {
            store.remember_signature(&sig, &format!("use-{n}"), Timestamp(5300), Timestamp(5000)).await.expect("db")
        }));
    }
    let mut firsts = 0;
    let mut seen = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            None => firsts += 1,
            Some(fp) => seen.push(fp),
        }
    }
    assert_eq!(firsts, 1, "exactly one use is the first");
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "every later use sees the first one's fingerprint: {seen:?}");
    // Once expired, the record is forgotten: the signature could no longer pass the clock check.
    assert_eq!(store.forget_signatures(Timestamp(5301)).await.expect("forget"), 1);
    assert_eq!(store.remember_signature(&sig, "later", Timestamp(5700), Timestamp(5400)).await.expect("db"), None);
    assert_eq!(
        store.remember_signature(&sig, "again", Timestamp(5700), Timestamp(5401)).await.expect("db").as_deref(),
        Some("later")
    );
    let other = "cd".repeat(32);
    store.remember_signature(&other, "x", Timestamp(5500), Timestamp(5400)).await.expect("db");
    assert_eq!(
        store.remember_signature(&other, "y", Timestamp(5900), Timestamp(5600)).await.expect("db"),
        None,
        "an expired record is replaced"
    );
    store.forget_signatures(Timestamp(i64::MAX)).await.expect("forget all");
}

async fn exported_files_are_recorded_with_the_account_that_made_them<S: MetaStore>(store: &S) {
    let (a, b) = (new_account(store, "exporter-a").await, new_account(store, "exporter-b").await);
    let img = custom_image(a, "ap-guangzhou", "exported", 91);
    let file = ExportedFile {
        bucket: "exports".into(),
        name: format!("x_{}_system.raw", img.id),
        account: a,
        image: img.id.clone(),
        job: 7,
        created_at: Timestamp(3000),
    };
    store.record_export(&file).await.expect("record");
    assert_eq!(store.exported_file("exports", &file.name).await.expect("db"), Some(file.clone()));
    assert_eq!(store.exported_file("other", &file.name).await.expect("db"), None, "per bucket");
    assert_eq!(store.exported_file("exports", "x.raw").await.expect("db"), None);
    let again = ExportedFile { account: b, job: 8, created_at: Timestamp(3001), ..file.clone() };
    store.record_export(&again).await.expect("record again");
    assert_eq!(store.exported_file("exports", &file.name).await.expect("db").map(|f| (f.account, f.job)), Some((b, 8)));
}

/// Every job kind the service queues.
const ALL_KINDS: &[&str] = &["import", "export", "capture", "sync", "launch", "instance"];

async fn jobs_are_claimed_by_kind_and_no_account_runs_more_than_its_share<S: MetaStore + Clone + 'static>(store: S) {
    let (greedy, modest) = (new_account(&store, "greedy").await, new_account(&store, "modest").await);
    let region = "ap-chengdu";
    let mut greedy_jobs = Vec::new();
    for n in 0..6 {
        greedy_jobs.push(store.insert_job(&job("k-transfer", region, greedy, None, 1000 + n)).await.expect("insert"));
    }
    let modest_job = store.insert_job(&job("k-transfer", region, modest, None, 1010)).await.expect("insert");
    let op = store.insert_job(&job("k-op", region, greedy, None, 1011)).await.expect("insert");
    // Eight workers claim at once with a share of 2: the greedy account gets two, the modest one
    // its one, whatever the interleaving.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_job(&format!("p{n}"), "h", &["k-transfer"], 2, LEASE_MS, Timestamp(2000)).await.expect("db")
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.expect("task"));
    }
    let of = |acct: AccountId| claimed.iter().filter(|j| j.account == acct).count();
    assert_eq!((of(greedy), of(modest)), (2, 1), "claimed: {claimed:?}");
    assert!(claimed.iter().all(|j| j.kind == "k-transfer"), "a pool claims only its kinds");
    assert!(claimed.iter().any(|j| j.id == modest_job));
    // Another pool's kinds are not held back by the account's transfers.
    let other = store.claim_job("q", "h", &["k-op"], 2, LEASE_MS, Timestamp(2001)).await.expect("db");
    assert_eq!(other.as_ref().map(|j| j.id), Some(op));
    // When a greedy job ends, the next one of that account can start; an expired lease frees its place.
    let first = claimed.iter().find(|j| j.account == greedy).expect("greedy job");
    store.finish_job(&first.fence(), JobState::Succeeded, None, None, 0, Timestamp(2002)).await.expect("finish");
    let next = store.claim_job("p9", "h", &["k-transfer"], 2, LEASE_MS, Timestamp(2003)).await.expect("db");
    assert_eq!(next.as_ref().map(|j| j.account), Some(greedy));
    assert_eq!(store.claim_job("p9", "h", &["k-transfer"], 2, LEASE_MS, Timestamp(2004)).await.expect("db"), None);
    let held = claimed.iter().find(|j| j.account == greedy && j.id != first.id).expect("the other greedy job");
    // Its worker dies: a renewal for no time lets the lease lapse at once.
    assert!(store.renew_job(&held.fence(), 10, 0, Timestamp(2005)).await.expect("db"));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let after_lease = store.claim_job("p9", "h", &["k-transfer"], 2, LEASE_MS, Timestamp(2006)).await.expect("db");
    assert!(after_lease.is_some_and(|j| j.account == greedy), "an expired lease counts no more");
    for id in greedy_jobs.into_iter().chain([modest_job, op]) {
        if let Some(job) = store.get_job(id).await.expect("db").filter(|j| j.state == JobState::Running) {
            store
                .finish_job(&job.fence(), JobState::Failed, None, Some("test over"), 0, Timestamp(2200))
                .await
                .expect("finish");
        }
    }
}

/// A lease no test step outlives by accident.
pub(crate) const LEASE_MS: u64 = 60_000;

async fn the_share_limit_holds_under_concurrency_and_shares_can_be_cancelled<S: MetaStore + Clone + 'static>(store: S) {
    let owner = new_account(&store, "sharer").await;
    let img = custom_image(owner, "ap-mumbai", "shared-widely", 81);
    store.insert_custom_image(&img, 10).await.expect("db").expect("inserted");
    let mut recipients = Vec::new();
    for n in 0..12 {
        recipients.push(new_account(&store, &format!("recipient-{n}")).await);
    }
    let mut tasks = Vec::new();
    for account in recipients.clone() {
        let (store, id) = (store.clone(), img.id.clone());
        tasks.push(tokio::spawn(async move { store.share_image(&id, account, 5, Timestamp(40)).await.expect("db") }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task"));
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 5, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Ok(()) | Err(Refused::ShareLimit))));
    let shared = store.image_shares(&img.id).await.expect("db");
    assert_eq!(shared.len(), 5);
    let first = shared[0].0;
    assert_eq!(store.share_image(&img.id, first, 50, Timestamp(41)).await.expect("db"), Err(Refused::AlreadyShared));
    assert!(store.unshare_image(&img.id, first).await.expect("db"));
    assert!(!store.unshare_image(&img.id, first).await.expect("db"));
    assert_eq!(store.image_shares(&img.id).await.expect("db").len(), 4);
    let seen = store.visible_images(first, "ap-mumbai").await.expect("db");
    assert!(seen.iter().all(|v| v.image.id != img.id), "a cancelled share is no longer visible");
    let spare = recipients.iter().find(|a| !shared.iter().any(|(s, _)| s == *a)).copied().expect("a spare account");
    assert_eq!(store.share_image(&img.id, spare, 5, Timestamp(42)).await.expect("db"), Ok(()), "cancelling frees room");
}

async fn a_sync_begins_only_from_normal_and_inserts_every_copy_or_none<S: MetaStore>(store: &S) {
    let owner = new_account(store, "syncer").await;
    let mut source = custom_image(owner, "ap-bangkok", "golden", 91);
    source.state = ImageState::Normal;
    store.insert_custom_image(&source, 10).await.expect("db").expect("inserted");
    let mut syncing = source.clone();
    syncing.state = ImageState::Syncing;
    syncing.sync_percent = Some(0);
    let copy = |region: &str, seed: u8| {
        let mut c = custom_image(owner, region, "golden", seed);
        c.state = ImageState::Creating;
        c
    };
    let job = job("sync", "ap-bangkok", owner, Some(source.id.clone()), 50);
    // Room in one destination but not in the other: nothing is written.
    store.insert_custom_image(&custom_image(owner, "ap-jakarta", "other", 92), 10).await.expect("db").expect("ok");
    let refused = store.begin_sync(&syncing, &[copy("ap-seoul", 93), copy("ap-jakarta", 94)], 1, &job).await;
    assert_eq!(refused.expect("db"), Err(Refused::QuotaExceeded));
    assert_eq!(store.get_image(&source.id).await.expect("db").map(|i| i.state), Some(ImageState::Normal));
    assert_eq!(store.count_custom_images(owner, "ap-seoul").await.expect("db"), 0, "no partial copies");

    let copies = [copy("ap-seoul", 95), copy("ap-jakarta", 96)];
    let job_id = store.begin_sync(&syncing, &copies, 10, &job).await.expect("db").expect("begun");
    assert_eq!(store.get_job(job_id).await.expect("db").map(|j| j.kind), Some("sync".into()));
    assert_eq!(store.get_image(&source.id).await.expect("db").map(|i| i.state), Some(ImageState::Syncing));
    assert!(store.get_image(&copies[1].id).await.expect("db").is_some());
    let again = store.begin_sync(&syncing, &[copy("ap-tokyo", 97)], 10, &job).await.expect("db");
    assert_eq!(again, Err(Refused::WrongState), "one copy at a time");
    assert_eq!(
        store.delete_image(&source.id, Timestamp(5)).await.expect("db"),
        Err(Refused::WrongState),
        "not while syncing"
    );
}

/// An instance of `owner` in `region`, launched from `image`.
pub fn instance(owner: AccountId, region: &str, image: &ImageId, seed: u8, created: i64) -> Instance {
    Instance {
        id: InstanceId::from_random([seed, 9, 8, 7, 6, 5, 4, seed.wrapping_mul(3)]),
        owner,
        region: region.to_owned(),
        zone: format!("{region}-1"),
        name: format!("vm-{seed}"),
        instance_type: "S5.MEDIUM2".into(),
        image_id: image.clone(),
        os_name: "TencentOS Server 3.1".into(),
        state: InstanceState::Pending,
        latest_operation: None,
        latest_operation_state: None,
        latest_operation_request_id: None,
        latest_operation_error: None,
        created_at: Timestamp(created),
        system_disk_gib: 50,
        host_name: format!("vm-{seed}"),
        tags: Vec::new(),
        disk_base: None,
        host: None,
        market_mark: None,
        windows: false,
        guest: Default::default(),
    }
}

async fn images_are_renamed_uniquely_and_deleted_only_when_not_shared<S: MetaStore>(store: &S) {
    let owner = new_account(store, "lifecycle-owner").await;
    let friend = new_account(store, "lifecycle-friend").await;
    let region = "ap-singapore";
    let a = custom_image(owner, region, "alpha", 51);
    let b = custom_image(owner, region, "beta", 52);
    for img in [&a, &b] {
        store.insert_custom_image(img, 10).await.expect("db").expect("inserted");
    }
    let mut renamed = a.clone();
    renamed.name = "beta".into();
    assert_eq!(store.update_custom_image(&renamed).await.expect("db"), Err(Refused::DuplicateName));
    renamed.name = "gamma".into();
    renamed.deprecated = true;
    assert_eq!(store.update_custom_image(&renamed).await.expect("db"), Ok(()));
    assert_eq!(store.get_image(&a.id).await.expect("db"), Some(renamed.clone()));
    assert_eq!(store.update_custom_image(&renamed).await.expect("db"), Ok(()), "keeping one's own name is fine");

    let digest = "dd".repeat(32);
    store.touch_blocks(region, &[(digest.clone(), 10)], Timestamp(1)).await.expect("touch");
    let record = ManifestRecord {
        image: b.id.clone(),
        region: region.into(),
        manifest: vec![9],
        blocks: vec![digest.clone()],
        source_format: "raw".into(),
        virtual_size: 1 << 20,
    };
    store.attach_manifest(&b, &record).await.expect("attach");
    assert!(store.add_share(&b.id, friend, Timestamp(30)).await.expect("share"));
    assert_eq!(store.image_shares(&b.id).await.expect("db"), [(friend, Timestamp(30))]);
    assert_eq!(store.delete_image(&b.id, Timestamp(5)).await.expect("db"), Err(Refused::InShared));
    assert_eq!(store.block_refs(region, &digest).await.expect("refs"), 1, "a refused delete keeps the references");
    assert!(store.get_image(&b.id).await.expect("db").is_some());

    assert_eq!(store.delete_image(&a.id, Timestamp(5)).await.expect("db"), Ok(true));
    assert_eq!(store.delete_image(&a.id, Timestamp(5)).await.expect("db"), Ok(false));
    assert_eq!(store.get_image(&a.id).await.expect("db"), None);
    assert_eq!(store.count_custom_images(owner, region).await.expect("db"), 1, "deleting frees quota");
    assert!(store.image_shares(&a.id).await.expect("db").is_empty());
}

async fn instances_are_listed_per_owner_and_region_and_take_one_operation_at_a_time<S: MetaStore + Clone + 'static>(
    store: S,
) {
    let owner = new_account(&store, "instance-owner").await;
    let other = new_account(&store, "instance-other").await;
    let region = "ap-tokyo";
    let image = ImageId::parse("img-eb30mz89").expect("id");
    let batch: Vec<Instance> = (0..3).map(|n| instance(owner, region, &image, 60 + n, 100 + i64::from(n))).collect();
    let launch = job("launch", region, owner, None, 100);
    let job_id = store.insert_instances_with_job(&batch, &launch, Some("token-1")).await.expect("db").expect("new");
    let again: Vec<Instance> = (0..3).map(|n| instance(owner, region, &image, 80 + n, 300)).collect();
    let retried = store.insert_instances_with_job(&again, &launch, Some("token-1")).await.expect("db");
    assert_eq!(retried, Err(Refused::DuplicateId), "a client token launches once");
    assert_eq!(
        store.instances_for_token(owner, "token-1").await.expect("db"),
        Some(batch.iter().map(|i| i.id.clone()).collect())
    );
    assert_eq!(store.instances_for_token(other, "token-1").await.expect("db"), None, "tokens are per account");
    assert!(store.get_instance(&again[0].id).await.expect("db").is_none(), "nothing of the retry was written");
    assert_eq!(store.get_job(job_id).await.expect("db").map(|j| j.kind), Some("launch".into()));
    store
        .insert_instances_with_job(
            &[instance(other, region, &image, 70, 50)],
            &job("launch", region, other, None, 50),
            Some("token-1"),
        )
        .await
        .expect("db")
        .expect("another account's token");
    store
        .insert_instances_with_job(
            &[instance(owner, "ap-seoul", &image, 71, 50)],
            &job("launch", region, owner, None, 50),
            None,
        )
        .await
        .expect("db")
        .expect("new");
    let listed: Vec<InstanceId> =
        store.list_instances(owner, region).await.expect("db").into_iter().map(|i| i.id).collect();
    assert_eq!(listed, batch.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), "own instances there, oldest first");

    let mut running = batch[0].clone();
    running.state = InstanceState::Running;
    store.put_instances(std::slice::from_ref(&running)).await.expect("put");
    assert_eq!(store.get_instance(&running.id).await.expect("db"), Some(running.clone()));

    // Ten concurrent stops of one instance: exactly one begins.
    let mut tasks = Vec::new();
    for n in 0..10 {
        let (store, mut stopping) = (store.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            stopping.begin(InstanceOp::Stop, &format!("req-{n}"));
            store.begin_operation(&[stopping], &job("instance", "ap-tokyo", owner, None, 200)).await.expect("db")
        }));
    }
    let mut begun = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => begun += 1,
            Err(refused) => assert_eq!(refused, Refused::Busy),
        }
    }
    assert_eq!(begun, 1);
    let stored = store.get_instance(&running.id).await.expect("db").expect("instance");
    assert!(stored.busy());
    assert_eq!(stored.state, InstanceState::Stopping);

    // A capture on a busy instance inserts no image; on an idle one, the image and the job.
    let img = custom_image(owner, region, "captured", 72);
    let mut capturing = stored.clone();
    capturing.begin(InstanceOp::CreateImage, "req-c");
    let capture = job("capture", region, owner, Some(img.id.clone()), 300);
    assert_eq!(store.begin_capture(&img, 10, &capturing, &capture).await.expect("db"), Err(Refused::Busy));
    assert_eq!(store.get_image(&img.id).await.expect("db"), None, "nothing is written when refused");
    let mut stopped = stored.clone();
    stopped.end(InstanceState::Stopped, None);
    store.put_instances(std::slice::from_ref(&stopped)).await.expect("put");
    let mut capturing = stopped.clone();
    capturing.begin(InstanceOp::CreateImage, "req-c2");
    assert!(store.begin_capture(&img, 10, &capturing, &capture).await.expect("db").is_ok());
    assert!(store.get_image(&img.id).await.expect("db").is_some());
    assert!(store.get_instance(&stopped.id).await.expect("db").is_some_and(|i| i.busy()));
    let full = custom_image(owner, region, "over-quota", 73);
    let mut idle = batch[1].clone();
    idle.begin(InstanceOp::CreateImage, "req-q");
    assert_eq!(store.begin_capture(&full, 0, &idle, &capture).await.expect("db"), Err(Refused::QuotaExceeded));
    assert!(
        !store.get_instance(&idle.id).await.expect("db").is_some_and(|i| i.busy()),
        "a refused capture begins nothing"
    );

    let mut with_disk = batch[2].clone();
    with_disk.disk_base = Some("base-key".into());
    store.put_instances(std::slice::from_ref(&with_disk)).await.expect("put");
    assert!(store.disk_bases_in_use().await.expect("db").contains("base-key"));
    assert!(store.delete_instance(&batch[2].id).await.expect("db"));
    assert!(!store.disk_bases_in_use().await.expect("db").contains("base-key"), "a terminated instance frees its base");
    assert!(!store.delete_instance(&batch[2].id).await.expect("db"));
    assert_eq!(store.list_instances(owner, region).await.expect("db").len(), 2);
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
    // A disk repeats blocks: one call may name a digest twice.
    let d = "dd".repeat(32);
    store.touch_blocks("ap-repeat", &[(d.clone(), 0), (d.clone(), 50), (d, 0)], Timestamp(1_000)).await.expect("touch");
    assert_eq!(store.block_totals("ap-repeat").await.expect("totals"), (1, 50));
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
    let fresh = store.attach_manifest(&normal, &record(&first, vec![a.clone(), b.clone()])).await.expect("attach");
    assert_eq!(sorted(fresh), [a.clone(), b.clone()], "both blocks were unreferenced");
    let fresh = store.attach_manifest(&second, &record(&second, vec![a.clone()])).await.expect("attach");
    assert!(fresh.is_empty(), "a was referenced by the first manifest already");
    assert_eq!(store.get_manifest(&first.id).await.expect("db"), Some(record(&first, vec![a.clone(), b.clone()])));
    assert_eq!(store.get_image(&first.id).await.expect("db").map(|i| i.state), Some(ImageState::Normal));
    assert_eq!(store.region_manifests(region).await.expect("db").len(), 2);
    assert_eq!(store.block_refs(region, &a).await.expect("refs"), 2);
    assert_eq!(store.block_refs(region, &b).await.expect("refs"), 1);
    assert_eq!(store.block_refs(region, &c).await.expect("refs"), 0);

    // Only c is unreferenced, and only a cutoff after its touch collects it.
    assert!(store.collect_unreferenced(region, Timestamp(999)).await.expect("gc").is_empty());
    assert_eq!(store.collect_unreferenced(region, Timestamp(1_001)).await.expect("gc"), vec![c.clone()]);
    assert!(store.detach_manifest(&first.id, None).await.expect("detach"));
    assert!(!store.detach_manifest(&first.id, None).await.expect("detach twice"));
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

    let claimed =
        store.claim_job("w1", "h", ALL_KINDS, 10, LEASE_MS, Timestamp(600)).await.expect("db").expect("a job");
    assert_eq!((claimed.id, claimed.state, claimed.attempts), (id, JobState::Running, 1));
    assert_eq!((claimed.image.as_ref(), claimed.worker.as_deref()), (Some(&img.id), Some("w1")));
    assert_eq!(
        store.claim_job("w2", "h", ALL_KINDS, 10, LEASE_MS, Timestamp(610)).await.expect("db"),
        None,
        "lease held"
    );
    let w1 = claimed.fence();
    assert!(store.renew_job(&w1, 40, LEASE_MS, Timestamp(620)).await.expect("db"));
    let forged = JobFence { worker: "w2".into(), ..w1.clone() };
    assert!(!store.renew_job(&forged, 40, LEASE_MS, Timestamp(620)).await.expect("db"));
    assert_eq!(store.get_job(id).await.expect("db").map(|j| j.progress), Some(40));
    // w1 dies (its lease lapses), w2 takes the job over and w1 can no longer renew it.
    assert!(store.renew_job(&w1, 40, 0, Timestamp(630)).await.expect("db"));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let taken =
        store.claim_job("w2", "h", ALL_KINDS, 10, LEASE_MS, Timestamp(700)).await.expect("db").expect("taken over");
    assert_eq!((taken.id, taken.attempts), (id, 2));
    assert!(!store.renew_job(&w1, 50, LEASE_MS, Timestamp(701)).await.expect("db"));
    store
        .finish_job(&taken.fence(), JobState::Succeeded, Some(r#"{"ok":true}"#), None, 0, Timestamp(710))
        .await
        .expect("finish");
    let done = store.get_job(id).await.expect("db").expect("job");
    assert_eq!((done.state, done.progress, done.result.as_deref()), (JobState::Succeeded, 100, Some(r#"{"ok":true}"#)));
    assert_eq!(store.claim_job("w3", "h", ALL_KINDS, 10, LEASE_MS, Timestamp(800)).await.expect("db"), None);
    assert_eq!(store.oldest_active_job(region).await.expect("db"), None);
    let failing = store.insert_job(&job("export", region, owner, None, 900)).await.expect("insert");
    let claimed =
        store.claim_job("w3", "h", ALL_KINDS, 10, LEASE_MS, Timestamp(901)).await.expect("db").expect("claimed");
    store
        .finish_job(&claimed.fence(), JobState::Failed, None, Some("bucket gone"), 0, Timestamp(902))
        .await
        .expect("finish");
    let failed = store.get_job(failing).await.expect("db").expect("job");
    assert_eq!((failed.state, failed.error.as_deref()), (JobState::Failed, Some("bucket gone")));
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub(crate) async fn new_account<S: MetaStore>(store: &S, name: &str) -> AccountId {
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
    let mut stale = img.clone();
    stale.sync_percent = Some(90);
    assert!(!store.update_image_if_state(&stale, ImageState::Normal, None).await.expect("db"), "the state moved on");
    assert_eq!(store.get_image(&img.id).await.expect("db").and_then(|i| i.sync_percent), Some(40));
    state_change.sync_percent = Some(60);
    assert!(store.update_image_if_state(&state_change, ImageState::Syncing, None).await.expect("db"));
    assert_eq!(store.get_image(&img.id).await.expect("db").and_then(|i| i.sync_percent), Some(60));
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
