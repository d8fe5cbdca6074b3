//! The data plane through `Service`: demo disks hold a real os-release, GC collects only what no
//! manifest references and no running job may need, the materialised file equals the image.

use std::sync::Arc;
use std::time::Duration;

use imaged_app::data::DataConfig;
use imaged_app::demo::{PublicImageSpec, CATALOGUE_REGION};
use imaged_app::{MasterKey, Service};
use imaged_domain::rules::Limits;
use imaged_domain::{Architecture, ImageId, RegionCatalog};
use imaged_metastore::sqlite::SqliteStore;

async fn service(dir: &std::path::Path) -> Service {
    let store = SqliteStore::open(&dir.join("meta.db")).await.expect("open");
    let data = DataConfig::local(dir).expect("data");
    Service::new(Arc::new(store), RegionCatalog::default(), Limits::default(), MasterKey::from_bytes([5; 32]), data)
}

async fn user(svc: &Service, name: &str) -> imaged_domain::AccountId {
    let creds = svc.create_account(name, imaged_metastore::Role::User).await.expect("account");
    imaged_domain::AccountId::parse(&creds.account_id).expect("id")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn demo_disks_are_real_partitioned_disks_naming_their_os() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(dir.path()).await;
    svc.bootstrap(dir.path()).await.expect("bootstrap");
    let id = ImageId::parse("img-eb30mz89").expect("id");
    let path = svc.materialised(&id).await.expect("materialise");
    let disk = std::fs::read(&path).expect("read");
    assert_eq!(&disk[510..512], &[0x55, 0xaa], "an MBR");
    assert_eq!(disk[446 + 4], 0x83, "a Linux partition");
    assert_eq!(&disk[(1 << 20) + 1024 + 56..(1 << 20) + 1024 + 58], &[0x53, 0xef], "an ext4 superblock at 1 MiB");
    assert!(contains(&disk, b"IMAGED_IMAGE_ID=img-eb30mz89"), "os-release names the image");
    assert!(contains(&disk, b"PRETTY_NAME=\"TencentOS Server 3.1 (TK4)\""));
    let again = svc.materialised(&id).await.expect("cached");
    assert_eq!(again, path, "the materialised file is cached");
    let fsck = svc.fsck(CATALOGUE_REGION).await.expect("fsck");
    assert!(fsck.checked_blocks > 0 && fsck.bad_blocks.is_empty());
}

#[tokio::test]
async fn gc_collects_only_unreferenced_blocks_past_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(dir.path()).await;
    let disk = dir.path().join("disk.raw");
    let mut bytes = vec![0u8; 3 << 20];
    for (i, b) in bytes.iter_mut().enumerate().take(2 << 20) {
        *b = (i * 31 % 251) as u8;
    }
    std::fs::write(&disk, &bytes).expect("write");
    let spec = |name: &str| PublicImageSpec {
        name: name.into(),
        os_name: "Test OS".into(),
        platform: "Test".into(),
        architecture: Architecture::X86_64,
        description: String::new(),
        declared: Some(imaged_diskfmt::Format::Raw),
    };
    let keep = svc.add_public_image(&disk, spec("keep")).await.expect("add");
    let drop_me = svc.add_public_image(&disk, spec("drop")).await.expect("add");
    let stored = |svc: &Service| {
        let svc = svc.clone();
        async move { svc.fsck(CATALOGUE_REGION).await.expect("fsck").checked_blocks }
    };
    let before = stored(&svc).await;
    assert!(before >= 2);
    // Both images share their blocks: releasing one frees nothing.
    svc.store().detach_manifest(&drop_me, None).await.expect("detach");
    assert_eq!(svc.collect_garbage(CATALOGUE_REGION, Duration::ZERO).await.expect("gc").deleted_blocks, 0);
    // Releasing the last reference: kept during the grace period, collected after it.
    svc.store().detach_manifest(&keep, None).await.expect("detach");
    assert_eq!(svc.collect_garbage(CATALOGUE_REGION, Duration::from_secs(3600)).await.expect("gc").deleted_blocks, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = svc.collect_garbage(CATALOGUE_REGION, Duration::ZERO).await.expect("gc");
    assert_eq!(report.deleted_blocks, before);
    assert_eq!(stored(&svc).await, 0, "the block files are gone");
}

#[tokio::test]
async fn gc_keeps_blocks_a_running_job_may_still_need() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(dir.path()).await;
    let region = "ap-guangzhou";
    let blocks = svc.data().region_blocks(region);
    let now = imaged_app::service::now().0;
    let (digest, _, size) = blocks.put(b"half-made import block").await.expect("put");
    // A job queued 10 s ago wrote this block 5 s ago and has not referenced it yet.
    let touched = imaged_domain::time::Timestamp(now - 5);
    svc.store().touch_blocks(region, &[(digest.to_hex(), size as u64)], touched).await.expect("touch");
    let acct =
        svc.store().create_account("jobs", imaged_metastore::Role::User, touched).await.expect("db").expect("acct");
    let job = imaged_metastore::testsuite::job("import", region, acct.id, None, now - 10);
    let job_id = svc.store().insert_job(&job).await.expect("job");
    let report = svc.collect_garbage(region, Duration::ZERO).await.expect("gc");
    assert_eq!(report.deleted_blocks, 0, "a job older than the block may still need it");
    assert!(blocks.contains(&digest).await.expect("head"));
    // Once the job is over, the unreferenced block goes.
    let at = imaged_domain::time::Timestamp(now);
    let claimed = svc.store().claim_job("w", "h", &["import"], 1, 30_000, at).await.expect("claim").expect("the job");
    assert_eq!(claimed.id, job_id);
    svc.store()
        .finish_job(&claimed.fence(), imaged_metastore::JobState::Failed, None, Some("test"), 0, at)
        .await
        .expect("finish");
    assert_eq!(svc.collect_garbage(region, Duration::ZERO).await.expect("gc").deleted_blocks, 1);
    assert!(!blocks.contains(&digest).await.expect("head"));
}

#[tokio::test]
async fn a_stored_block_is_referenced_only_with_a_proof_of_its_bytes() {
    use imaged_chunkstore::{possession_proof, Digest};
    use imaged_domain::AccountId;
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(dir.path()).await;
    let account = |name: &str| {
        let svc = svc.clone();
        let name = name.to_owned();
        async move {
            let creds = svc.create_account(&name, imaged_metastore::Role::User).await.expect("account");
            AccountId::parse(&creds.account_id).expect("id")
        }
    };
    let (alice, mallory) = (account("alice").await, account("mallory").await);
    let secret: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let digest = Digest::of(&secret);

    // Alice uploads her block as data: it is now in the region's store.
    let first = svc.create_upload(alice, "ap-guangzhou").await.expect("upload");
    let mut w = svc.upload_writer(alice, &first, 0).await.expect("writer");
    w.write(bytes::Bytes::from(secret.clone())).await.expect("write");
    assert_eq!(w.finish().await.expect("finish"), 1 << 20);

    // Mallory knows the digest but not the bytes: a guessed proof, or one made under another
    // upload's nonce, references nothing.
    let theft = svc.create_upload(mallory, "ap-guangzhou").await.expect("upload");
    let nonce = svc.upload_state(mallory, &theft).await.expect("state").nonce;
    let alices_nonce = svc.upload_state(alice, &first).await.expect("state").nonce;
    for proof in [[0u8; 32], digest.0, possession_proof(&alices_nonce, &secret)] {
        let mut w = svc.upload_writer(mallory, &theft, 0).await.expect("writer");
        assert_eq!(w.reference(&[(digest.0, proof)]).await.expect("refs"), 0);
        assert_eq!(w.finish().await.expect("finish"), 0, "nothing was added");
    }
    // A digest the store does not hold is not accepted either, even with a valid proof.
    let absent = vec![9u8; 1 << 20];
    let mut w = svc.upload_writer(mallory, &theft, 0).await.expect("writer");
    assert_eq!(w.reference(&[(Digest::of(&absent).0, possession_proof(&nonce, &absent))]).await.expect("refs"), 0);
    w.finish().await.expect("finish");

    // With the bytes, the proof holds: the block is added without being sent, and only the
    // prefix of valid references counts.
    let again = svc.create_upload(alice, "ap-guangzhou").await.expect("upload");
    let nonce = svc.upload_state(alice, &again).await.expect("state").nonce;
    let good = (digest.0, possession_proof(&nonce, &secret));
    let mut w = svc.upload_writer(alice, &again, 0).await.expect("writer");
    assert_eq!(w.reference(&[good, (digest.0, [1; 32]), good]).await.expect("refs"), 1);
    assert_eq!(w.finish().await.expect("finish"), 1 << 20);
    let state = svc.upload_state(alice, &again).await.expect("state");
    assert_eq!(state.manifest.blocks, vec![Some(digest)]);
}

#[tokio::test]
async fn racing_appends_from_one_offset_land_once_and_the_loser_is_told_where_to_continue() {
    use imaged_app::data::UploadError;
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(dir.path()).await;
    let owner = user(&svc, "racer").await;
    let id = svc.create_upload(owner, "ap-guangzhou").await.expect("upload");
    // Two servers (or two clients) both begin an append at 0.
    let mut a = svc.upload_writer(owner, &id, 0).await.expect("writer a");
    let mut b = svc.upload_writer(owner, &id, 0).await.expect("writer b");
    a.write(bytes::Bytes::from(vec![1u8; 1 << 20])).await.expect("write a");
    b.write(bytes::Bytes::from(vec![2u8; 2 << 20])).await.expect("write b");
    assert_eq!(a.finish().await.expect("a lands"), 1 << 20);
    match b.finish().await {
        Err(UploadError::WrongOffset { expected }) => assert_eq!(expected, 1 << 20),
        other => panic!("the second append must not land: {other:?}"),
    }
    let state = svc.upload_state(owner, &id).await.expect("state");
    assert_eq!(state.manifest.virtual_size, 1 << 20, "only the first append counts");
}

#[tokio::test]
async fn uploads_an_earlier_version_kept_as_files_continue_after_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(dir.path()).await;
    let owner = user(&svc, "upgrader").await;
    // The files an earlier version wrote for a 1 MiB upload of one zero block.
    let uploads = dir.path().join("uploads");
    std::fs::create_dir_all(&uploads).expect("dir");
    let id = "0123456789abcdef0123456789abcdef";
    let far = imaged_domain::time::Timestamp(i64::from(i32::MAX));
    std::fs::write(
        uploads.join(format!("{id}.owner")),
        format!("{owner}\nap-guangzhou\n{}\n{}\n", "ab".repeat(32), far.0),
    )
    .expect("owner");
    let manifest = imaged_chunkstore::Manifest::zeroed(1 << 20, 1 << 20);
    std::fs::write(uploads.join(format!("{id}.manifest")), manifest.encode()).expect("manifest");

    svc.bootstrap(dir.path()).await.expect("bootstrap");
    let state = svc.upload_state(owner, id).await.expect("the upload is in the store");
    assert_eq!((state.manifest.virtual_size, state.nonce, state.expires_at), (1 << 20, [0xab; 32], far));
    assert!(std::fs::read_dir(&uploads).expect("dir").next().is_none(), "the old files are gone");
    let mut w = svc.upload_writer(owner, id, 1 << 20).await.expect("continues at its size");
    w.write(bytes::Bytes::from(vec![7u8; 4096])).await.expect("write");
    assert_eq!(w.finish().await.expect("finish"), (1 << 20) + 4096);
}
