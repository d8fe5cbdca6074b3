//! The conformance suite of what several servers on one database rely on: uploads any server
//! continues ([`crate::UploadStore`]), job writes fenced by their lease, retries that wait,
//! jobs pinned to a host. Run by [`crate::testsuite::run`].

use imaged_domain::time::Timestamp;
use imaged_domain::ImageState;

use crate::testsuite::{custom_image, job, new_account, LEASE_MS};
use crate::uploads::UploadRecord;
use crate::{JobState, MetaStore, MetaStoreError, Refused};

pub(crate) async fn run<S: MetaStore + Clone + 'static>(store: &S) {
    uploads_are_continued_only_from_their_size_and_counted_while_live(store).await;
    concurrent_upload_creations_never_exceed_the_live_limit(store.clone()).await;
    a_worker_that_lost_its_lease_writes_nothing(store).await;
    retries_wait_and_host_jobs_run_only_on_their_host(store).await;
    operations_read_job_counts_and_the_last_maintenance_results(store).await;
}

async fn operations_read_job_counts_and_the_last_maintenance_results<S: MetaStore>(store: &S) {
    store.ping().await.expect("the database answers");
    let owner = new_account(store, "counted-jobs").await;
    for at in [40, 30, 50] {
        store.insert_job(&job("k-counted", "ap-xian", owner, None, at)).await.expect("insert");
    }
    let counts = store.job_counts().await.expect("db");
    let queued = counts.iter().find(|c| c.kind == "k-counted" && c.state == JobState::Queued).expect("counted");
    assert_eq!((queued.count, queued.oldest), (3, Timestamp(30)));

    let report = |at, blocks, problems| crate::MaintenanceReport {
        kind: "fsck".into(),
        region: "ap-xian".into(),
        at: Timestamp(at),
        blocks,
        problems,
    };
    store.record_maintenance(&report(100, 7, 1)).await.expect("record");
    store.record_maintenance(&report(200, 9, 0)).await.expect("replace");
    let gc = crate::MaintenanceReport { kind: "gc".into(), ..report(150, 3, 0) };
    store.record_maintenance(&gc).await.expect("record gc");
    let reports = store.maintenance_reports().await.expect("db");
    let mine: Vec<_> = reports.into_iter().filter(|r| r.region == "ap-xian").collect();
    assert_eq!(mine, vec![report(200, 9, 0), gc], "the last run of each pass, per region");
}

async fn a_worker_that_lost_its_lease_writes_nothing<S: MetaStore>(store: &S) {
    let owner = new_account(store, "fenced").await;
    let region = "ap-nanjing";
    let mut img = custom_image(owner, region, "importing", 90);
    img.state = ImageState::Importing;
    store
        .insert_image_with_job(&img, 10, &job("import", region, owner, Some(img.id.clone()), 1))
        .await
        .expect("db")
        .expect("in");
    let kinds = &["import"];
    let old = store.claim_job("old", "h", kinds, 10, LEASE_MS, Timestamp(2)).await.expect("db").expect("claimed");
    // The old worker stalls past its lease; a new one takes the job over.
    assert!(store.renew_job(&old.fence(), 5, 0, Timestamp(3)).await.expect("db"));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let new = store.claim_job("new", "h", kinds, 10, LEASE_MS, Timestamp(4)).await.expect("db").expect("taken over");
    let (stale, fresh) = (old.fence(), new.fence());
    assert_ne!(stale, fresh);

    // Every write of the old worker is refused and changes nothing.
    let mut progress = img.clone();
    progress.progress = Some(99);
    let lost = |r: crate::Result<bool>| matches!(r, Err(MetaStoreError::LeaseLost(id)) if id == old.id);
    assert!(lost(store.update_image_if_state(&progress, ImageState::Importing, Some(&stale)).await));
    let mut normal = img.clone();
    normal.state = ImageState::Normal;
    assert!(lost(store.finish_image_metered(&normal, ImageState::Importing, &[], Some(&stale)).await));
    assert!(lost(store.detach_manifest(&img.id, Some(&stale)).await));
    assert!(!store.renew_job(&stale, 99, LEASE_MS, Timestamp(5)).await.expect("db"));
    let finished = store.finish_job(&stale, JobState::Failed, None, Some("stale"), 0, Timestamp(5)).await;
    assert!(matches!(finished, Err(MetaStoreError::LeaseLost(_))), "{finished:?}");
    let seen = store.get_image(&img.id).await.expect("db").expect("image");
    assert_eq!((seen.state, seen.progress), (ImageState::Importing, img.progress));
    assert_eq!(
        store.get_job(old.id).await.expect("db").map(|j| (j.state, j.worker)),
        Some((JobState::Running, Some("new".into())))
    );

    // The new owner's writes land.
    assert!(store.update_image_if_state(&progress, ImageState::Importing, Some(&fresh)).await.expect("db"));
    assert!(store.finish_image_metered(&normal, ImageState::Importing, &[], Some(&fresh)).await.expect("db"));
    store.finish_job(&fresh, JobState::Succeeded, Some("{}"), None, 0, Timestamp(6)).await.expect("finish");
    assert_eq!(store.get_image(&img.id).await.expect("db").map(|i| i.state), Some(ImageState::Normal));
    // A finished job fences its own worker too.
    assert!(!store.renew_job(&fresh, 100, LEASE_MS, Timestamp(7)).await.expect("db"));
}

async fn retries_wait_and_host_jobs_run_only_on_their_host<S: MetaStore>(store: &S) {
    let owner = new_account(store, "pinned").await;
    let region = "ap-jinan";
    let kinds = &["k-host"];
    let pinned = store.insert_job(&job("k-host", region, owner, None, 1).on_host("host-a")).await.expect("insert");
    assert_eq!(
        store.claim_job("b", "host-b", kinds, 10, LEASE_MS, Timestamp(2)).await.expect("db"),
        None,
        "not host b's"
    );
    let claimed =
        store.claim_job("a", "host-a", kinds, 10, LEASE_MS, Timestamp(2)).await.expect("db").expect("host a's");
    assert_eq!((claimed.id, claimed.host.as_deref()), (pinned, Some("host-a")));
    // Queued again to retry after a minute: nobody claims it before then.
    store
        .finish_job(&claimed.fence(), JobState::Queued, None, Some("try again"), 60_000, Timestamp(3))
        .await
        .expect("requeue");
    assert_eq!(
        store.claim_job("a", "host-a", kinds, 10, LEASE_MS, Timestamp(4)).await.expect("db"),
        None,
        "backing off"
    );
    let queued = store.get_job(pinned).await.expect("db").expect("job");
    assert_eq!((queued.state, queued.error.as_deref()), (JobState::Queued, Some("try again")));
    // A job any host may run goes to the first that asks.
    let free = store.insert_job(&job("k-host", region, owner, None, 5)).await.expect("insert");
    let taken = store.claim_job("b", "host-b", kinds, 10, LEASE_MS, Timestamp(6)).await.expect("db").expect("any host");
    assert_eq!(taken.id, free);
    store.finish_job(&taken.fence(), JobState::Succeeded, None, None, 0, Timestamp(7)).await.expect("finish");
}

fn upload(owner: imaged_domain::AccountId, n: u8, expires_at: i64) -> UploadRecord {
    UploadRecord {
        id: format!("{n:032x}"),
        owner,
        region: "ap-guangzhou".into(),
        nonce: [n; 32],
        size: 0,
        manifest: vec![1, 2, 3],
        expires_at: Timestamp(expires_at),
    }
}

async fn uploads_are_continued_only_from_their_size_and_counted_while_live<S: MetaStore>(store: &S) {
    let owner = new_account(store, "uploader").await;
    let now = Timestamp(1_000);
    let first = upload(owner, 1, 2_000);
    store.insert_upload(&first, 10, now).await.expect("db").expect("inserted");
    assert_eq!(store.insert_upload(&first, 10, now).await.expect("db"), Err(Refused::DuplicateId));
    assert_eq!(store.get_upload(&first.id).await.expect("db"), Some(first.clone()));
    assert_eq!(store.get_upload("ffffffffffffffffffffffffffffffff").await.expect("db"), None);

    // An append continues from the size it read; a second append from the same size loses.
    assert!(store.save_upload(&first.id, 0, &[9; 40], 1 << 20, Timestamp(3_000)).await.expect("db"));
    assert!(!store.save_upload(&first.id, 0, &[8; 40], 2 << 20, Timestamp(3_000)).await.expect("db"));
    let saved = store.get_upload(&first.id).await.expect("db").expect("there");
    assert_eq!((saved.size, saved.manifest.as_slice(), saved.expires_at), (1 << 20, &[9u8; 40][..], Timestamp(3_000)));
    assert_eq!(saved.nonce, [1; 32], "the nonce never changes");

    // Only live uploads count, and toward the limit only.
    store.insert_upload(&upload(owner, 2, 500), 10, now).await.expect("db").expect("an expired one is stored");
    assert_eq!(store.live_upload_sizes(owner, now).await.expect("db"), vec![1 << 20]);
    assert_eq!(store.insert_upload(&upload(owner, 3, 2_000), 1, now).await.expect("db"), Err(Refused::QuotaExceeded));
    let all: Vec<String> = store.list_uploads().await.expect("db").into_iter().map(|u| u.id).collect();
    assert!(all.contains(&first.id) && all.contains(&upload(owner, 2, 0).id), "{all:?}");

    assert!(store.delete_upload(&first.id).await.expect("db"));
    assert!(!store.delete_upload(&first.id).await.expect("db"));
    assert!(!store.save_upload(&first.id, 1 << 20, &[], 0, now).await.expect("db"), "a forgotten upload stays gone");
    assert!(store.live_upload_sizes(owner, now).await.expect("db").is_empty());
}

async fn concurrent_upload_creations_never_exceed_the_live_limit<S: MetaStore + Clone + 'static>(store: S) {
    let owner = new_account(&store, "busy-uploader").await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20u8 {
        let store = store.clone();
        tasks.spawn(async move { store.insert_upload(&upload(owner, 100 + n, 9_999), 5, Timestamp(1)).await });
    }
    let mut made = 0;
    while let Some(r) = tasks.join_next().await {
        if r.expect("task").expect("db").is_ok() {
            made += 1;
        }
    }
    assert_eq!(made, 5, "exactly the limit is created");
    assert_eq!(store.live_upload_sizes(owner, Timestamp(1)).await.expect("db").len(), 5);
}
