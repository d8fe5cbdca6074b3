//! The conformance suite of what several servers on one database rely on: uploads any server
//! continues ([`crate::UploadStore`]). Run by [`crate::testsuite::run`].

use imaged_domain::time::Timestamp;

use crate::testsuite::new_account;
use crate::uploads::UploadRecord;
use crate::{MetaStore, Refused};

pub(crate) async fn run<S: MetaStore + Clone + 'static>(store: &S) {
    uploads_are_continued_only_from_their_size_and_counted_while_live(store).await;
    concurrent_upload_creations_never_exceed_the_live_limit(store.clone()).await;
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
