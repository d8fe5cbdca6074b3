//! The conformance suite of [`crate::TkeStore`] and [`crate::MessageStore`], run by
//! [`crate::testsuite::run`] on every backend.

use imaged_domain::time::Timestamp;
use imaged_domain::tke::{
    BetaApplication, BetaStatus, ChangeAction, Cluster, ClusterType, LaunchTemplate, Message, Node, NodePool, NodeRole,
    NodeSource, OsChange, OsCustomizeType,
};
use imaged_domain::{AccountId, ApplicationId, ClusterId, ImageId, InstanceId, MessageId, NodePoolId};

use crate::testsuite::{instance, job, new_account};
use crate::{MetaStore, Refused, TkeWrite};

/// Runs every TKE and message-centre check on `store`.
pub async fn run<S: MetaStore>(store: &S) {
    clusters_pools_and_nodes_are_written_together_or_not_at_all(store).await;
    changes_beta_applications_and_messages_are_kept(store).await;
}

/// A cluster of `owner` in `region`.
pub fn cluster(owner: AccountId, region: &str, seed: u8, os: &str) -> Cluster {
    Cluster {
        id: ClusterId::from_random([seed, 1, 2, 3, 4, 5, 6, 7]),
        owner,
        region: region.to_owned(),
        name: format!("cls{seed}"),
        description: String::new(),
        cluster_type: ClusterType::Managed,
        version: "1.28.3".into(),
        os: os.to_owned(),
        os_customize: OsCustomizeType::General,
        vpc_id: "vpc-1".into(),
        cidr: "172.16.0.0/16".into(),
        created_at: Timestamp(i64::from(seed)),
    }
}

/// A pool of `cluster`.
pub fn pool(cluster: &Cluster, seed: u8, os: &str) -> NodePool {
    NodePool {
        id: NodePoolId::from_random([seed, 7, 6, 5, 4, 3, 2, 1]),
        cluster: cluster.id.clone(),
        owner: cluster.owner,
        region: cluster.region.clone(),
        name: format!("np{seed}"),
        os: os.to_owned(),
        os_customize: OsCustomizeType::General,
        min_nodes: 0,
        max_nodes: 10,
        desired_nodes: 0,
        autoscale: false,
        launch: LaunchTemplate::default(),
        labels: Vec::new(),
        deletion_protection: false,
        created_at: Timestamp(i64::from(seed)),
    }
}

fn node(instance: &InstanceId, cluster: &Cluster, pool: Option<&NodePool>, at: i64) -> Node {
    Node {
        instance: instance.clone(),
        cluster: cluster.id.clone(),
        pool: pool.map(|p| p.id.clone()),
        role: NodeRole::Worker,
        source: NodeSource::Manual,
        initial: false,
        joined_at: Timestamp(at),
    }
}

async fn clusters_pools_and_nodes_are_written_together_or_not_at_all<S: MetaStore>(store: &S) {
    let owner = new_account(store, "tke-owner").await;
    let other = new_account(store, "tke-other").await;
    let image = ImageId::parse("img-9qabwvbn").expect("id");
    let region = "ap-chengdu";
    let a = cluster(owner, region, 41, "tlinux3.1x86_64");
    let b = cluster(owner, region, 42, "centos7.6.0_x64");
    let theirs = cluster(other, region, 43, "tlinux3.1x86_64");
    let p = pool(&a, 44, "centos7.6.0_x64");
    let vm = instance(owner, region, &image, 141, 10);
    let launched = instance(owner, region, &image, 142, 11);
    let write = TkeWrite {
        clusters: vec![a.clone(), b.clone(), theirs.clone()],
        pools: vec![p.clone()],
        nodes: vec![node(&vm.id, &a, None, 1), node(&launched.id, &a, Some(&p), 2)],
        new_instances: vec![vm.clone(), launched.clone()],
        jobs: vec![job("launch", region, owner, None, 5)],
        ..TkeWrite::default()
    };
    assert_eq!(store.tke_write(&write).await.expect("db"), Ok(()));
    let mine: Vec<ClusterId> =
        store.list_clusters(owner, region).await.expect("db").into_iter().map(|c| c.id).collect();
    assert_eq!(mine, [a.id.clone(), b.id.clone()], "oldest first, only the owner's");
    assert!(store.list_clusters(owner, "ap-tokyo").await.expect("db").is_empty(), "per region");
    assert_eq!(store.get_cluster(&theirs.id).await.expect("db").map(|c| c.owner), Some(other));
    assert_eq!(store.list_pools(&a.id).await.expect("db"), std::slice::from_ref(&p));
    assert!(store.list_pools(&b.id).await.expect("db").is_empty());
    let nodes = store.cluster_nodes(&a.id).await.expect("db");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].1.as_ref().map(|i| i.id.clone()), Some(vm.id.clone()), "joined with its instance");
    assert_eq!(nodes[1].0.pool.as_ref(), Some(&p.id));
    assert_eq!(store.os_users("tlinux3.1x86_64").await.expect("db"), [owner, other]);
    assert_eq!(store.os_users("centos7.6.0_x64").await.expect("db"), [owner], "a pool's OS counts too");

    // An instance is a node of one cluster: adding it to another writes nothing at all.
    let c = cluster(owner, region, 45, "tlinux2.4x86_64");
    let steal = TkeWrite { clusters: vec![c.clone()], nodes: vec![node(&vm.id, &c, None, 3)], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&steal).await.expect("db"), Err(Refused::DuplicateId));
    assert!(store.get_cluster(&c.id).await.expect("db").is_none(), "the refused write left nothing");
    // Within its cluster a node may move out of its pool.
    let moved = TkeWrite { nodes: vec![node(&launched.id, &a, None, 2)], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&moved).await.expect("db"), Ok(()));
    assert_eq!(store.node_of(&launched.id).await.expect("db").and_then(|n| n.pool), None);

    // Operations begin only on idle instances.
    let mut busy = store.get_instance(&vm.id).await.expect("db").expect("instance");
    busy.begin(imaged_domain::instance::InstanceOp::Reset, "r1");
    let first = TkeWrite { operating: vec![busy.clone()], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&first).await.expect("db"), Ok(()));
    let second = TkeWrite { operating: vec![busy], pools: vec![pool(&a, 46, "x")], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&second).await.expect("db"), Err(Refused::Busy));
    assert_eq!(store.list_pools(&a.id).await.expect("db").len(), 1, "nothing of a refused write");

    // A read-modify-write of a pool holds only if the pool is still as it was read.
    let stored = store.get_pool(&p.id).await.expect("db").expect("pool");
    let mut scaled = stored.clone();
    scaled.desired_nodes = 3;
    let guarded = |pools: Vec<NodePool>| TkeWrite { expect_pools: vec![stored.clone()], pools, ..TkeWrite::default() };
    assert_eq!(store.tke_write(&guarded(vec![scaled.clone()])).await.expect("db"), Ok(()));
    let mut again = stored.clone();
    again.desired_nodes = 5;
    assert_eq!(store.tke_write(&guarded(vec![again])).await.expect("db"), Err(Refused::WrongState));
    assert_eq!(store.get_pool(&p.id).await.expect("db"), Some(scaled), "the second scale wrote nothing");

    // Leaving: a removed node keeps its instance; a terminated instance leaves its cluster.
    let leave = TkeWrite { removed_nodes: vec![vm.id.clone()], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&leave).await.expect("db"), Ok(()));
    assert!(store.node_of(&vm.id).await.expect("db").is_none());
    assert!(store.get_instance(&vm.id).await.expect("db").is_some());
    assert!(store.delete_instance(&launched.id).await.expect("db"));
    assert!(store.cluster_nodes(&a.id).await.expect("db").is_empty());

    // Deleting a cluster takes its pools and node records.
    let rejoin = TkeWrite { nodes: vec![node(&vm.id, &a, Some(&p), 4)], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&rejoin).await.expect("db"), Ok(()));
    let gone = TkeWrite { deleted_clusters: vec![a.id.clone()], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&gone).await.expect("db"), Ok(()));
    assert!(store.get_cluster(&a.id).await.expect("db").is_none());
    assert!(store.get_pool(&p.id).await.expect("db").is_none());
    assert!(store.node_of(&vm.id).await.expect("db").is_none());
    let drop_pool = TkeWrite { pools: vec![pool(&b, 47, "x")], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&drop_pool).await.expect("db"), Ok(()));
    let id = pool(&b, 47, "x").id;
    let deleted = TkeWrite { deleted_pools: vec![id.clone()], ..TkeWrite::default() };
    assert_eq!(store.tke_write(&deleted).await.expect("db"), Ok(()));
    assert!(store.get_pool(&id).await.expect("db").is_none());
}

fn message(account: AccountId, seed: u8, at: i64) -> Message {
    Message {
        id: MessageId::from_random([seed, 3, 3, 3, 3, 3, 3, seed]),
        account,
        category: "TKE_IMAGE_CHANGE".into(),
        title: format!("t{seed}"),
        content: "c".into(),
        created_at: Timestamp(at),
        effective_at: Some(Timestamp(at + 700_000)),
        read: false,
    }
}

async fn changes_beta_applications_and_messages_are_kept<S: MetaStore>(store: &S) {
    let alice = new_account(store, "msg-alice").await;
    let bob = new_account(store, "msg-bob").await;
    let change = |effective: i64| OsChange {
        id: 0,
        os_name: "centos7.6.0_x64".into(),
        action: ChangeAction::Remap(ImageId::parse("img-2wgyxc0a").expect("id")),
        effective_at: Timestamp(effective),
        scheduled_at: Timestamp(1),
        note: "n".into(),
    };
    let msgs = [message(alice, 1, 100), message(alice, 2, 200), message(bob, 3, 150)];
    let first = store.schedule_os_change(&change(900), &msgs, &[job("notify", "-", alice, None, 1)]).await.expect("db");
    let second = store.schedule_os_change(&change(800), &[], &[]).await.expect("db");
    assert!(second > first);
    let changes = store.os_changes().await.expect("db");
    assert_eq!(changes.iter().map(|c| c.id).collect::<Vec<_>>(), [second, first], "by effective time");
    assert_eq!(changes[1], OsChange { id: first, ..change(900) });

    let (total, page) = store.list_messages(alice, false, 0, 10).await.expect("db");
    assert_eq!((total, page.iter().map(|m| m.title.as_str()).collect::<Vec<_>>()), (2, vec!["t2", "t1"]));
    let (_, second_page) = store.list_messages(alice, false, 1, 1).await.expect("db");
    assert_eq!(second_page[0].title, "t1");
    assert_eq!(store.mark_messages_read(bob, &[msgs[0].id.clone()]).await.expect("db"), 0, "not bob's");
    assert_eq!(store.mark_messages_read(alice, &[msgs[0].id.clone(), msgs[2].id.clone()]).await.expect("db"), 1);
    assert_eq!(store.mark_messages_read(alice, &[msgs[0].id.clone()]).await.expect("db"), 0, "already read");
    let (unread, page) = store.list_messages(alice, true, 0, 10).await.expect("db");
    assert_eq!((unread, page[0].id.clone()), (1, msgs[1].id.clone()));
    assert_eq!(store.get_message(&msgs[0].id).await.expect("db").map(|m| m.read), Some(true));
    assert_eq!(store.list_messages(bob, true, 0, 10).await.expect("db").0, 1);

    assert_eq!(store.webhook(alice).await.expect("db"), None);
    store.set_webhook(alice, Some("http://127.0.0.1:1/a")).await.expect("db");
    store.set_webhook(alice, Some("http://127.0.0.1:1/b")).await.expect("db");
    assert_eq!(store.webhook(alice).await.expect("db").as_deref(), Some("http://127.0.0.1:1/b"));
    store.set_webhook(alice, None).await.expect("db");
    assert_eq!(store.webhook(alice).await.expect("db"), None);

    let app = |account, seed: u8, at| BetaApplication {
        id: ApplicationId::from_random([seed; 8]),
        account,
        os_name: "centos8.0x86_64".into(),
        reason: "r".into(),
        status: BetaStatus::Pending,
        decision_reason: None,
        created_at: Timestamp(at),
        decided_at: None,
    };
    let (a1, b1) = (app(alice, 11, 5), app(bob, 12, 6));
    store.insert_beta_application(&a1).await.expect("db");
    store.insert_beta_application(&b1).await.expect("db");
    assert_eq!(store.beta_applications(Some(alice)).await.expect("db"), std::slice::from_ref(&a1));
    assert_eq!(store.beta_applications(None).await.expect("db").len(), 2);
    let decided = store.decide_beta_application(&a1.id, BetaStatus::Rejected, Some("why"), Timestamp(9));
    assert!(decided.await.expect("db"));
    let again = store.decide_beta_application(&a1.id, BetaStatus::Approved, None, Timestamp(10)).await.expect("db");
    assert!(!again, "only a pending application is decided");
    let stored = store.beta_applications(Some(alice)).await.expect("db").remove(0);
    assert_eq!(
        (stored.status, stored.decision_reason.as_deref(), stored.decided_at),
        (BetaStatus::Rejected, Some("why"), Some(Timestamp(9)))
    );
    let unknown = ApplicationId::from_random([99; 8]);
    assert!(!store.decide_beta_application(&unknown, BetaStatus::Approved, None, Timestamp(1)).await.expect("db"));
}
