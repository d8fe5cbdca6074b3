//! End to end for TKE node operating systems (the seed `000`), through the official Python SDK,
//! tccli, the Node.js SDK and the `imaged` CLI: the catalogue; which OS each node operation
//! uses, proved on the nodes' disks; OS changes that touch no existing node; beta images behind
//! an application; image-logic changes announced a week ahead (message centre and webhook) and
//! in effect only from their time; isolation between accounts; bad input in TKE's codes.

mod support;

use std::process::Command;

use serde_json::Value;
use support::tke::{fingerprint, os_of, py, Receiver};
use support::{Backend, Creds, Server};

const TK4: &str = "img-eb30mz89";
const TL24: &str = "img-hdt9xxkt";
const U18: &str = "img-pi0ii46r";
const C76: &str = "img-9qabwvbn";
const C80: &str = "img-25szkc8t";
const DEBIAN: &str = "img-2wgyxc0a";

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|i| i.as_str().expect("id").to_owned())
        .collect()
}

/// The ids of the nodes in `after` that are not in `before`.
fn new_nodes(before: &Value, after: &Value) -> Vec<String> {
    let old = before.as_object().expect("nodes");
    after.as_object().expect("nodes").keys().filter(|k| !old.contains_key(*k)).cloned().collect()
}

/// Runs `snippet` and asserts that the disk of every node in `nodes` is byte-identical after it.
fn changing_no_node(server: &Server, user: &Creds, nodes: &Value, what: &str, snippet: &str) -> Value {
    let all: Vec<String> = nodes.as_object().expect("nodes").keys().cloned().collect();
    let prints: Vec<_> = all.iter().map(|n| fingerprint(server, n)).collect();
    let r = py(server, user, snippet);
    for (node, print) in all.iter().zip(&prints) {
        assert!(fingerprint(server, node) == *print, "{what} changed the disk of {node}");
    }
    r
}

/// The nodes one round of the matrix made.
struct Round {
    /// By `CreateClusterInstances`.
    created: String,
    /// By scaling the pool out by one.
    scaled: String,
    /// Every node afterwards.
    nodes: Value,
}

/// One round of the matrix: creates a node, adds `to_cluster` to the cluster and `to_pool` to
/// the pool, scales the pool out by one and upgrades `upgrade`; asserts that the cluster-level
/// operations gave `cluster_os` and the pool-level ones `pool_os`, on the disks.
fn round(
    server: &Server,
    user: &Creds,
    (cluster, pool): (&str, &str),
    (to_cluster, to_pool, upgrade): (&str, &str, &str),
    (cluster_os, pool_os): (&str, &str),
    phase: &str,
) -> Round {
    let r = py(
        server,
        user,
        &format!(
            r#"t = tke()
before = settle_nodes(t, "{cluster}")
c = call(t, "CreateClusterInstances", {{"ClusterId": "{cluster}", "RunInstancePara": run_para()}})
a = call(t, "AddExistedInstances", {{"ClusterId": "{cluster}", "InstanceIds": ["{to_cluster}"]}})
b = call(t, "AddExistedInstances", {{"ClusterId": "{cluster}", "InstanceIds": ["{to_pool}"],
    "NodePool": {{"AddToNodePool": True, "NodePoolId": "{pool}"}}}})
desired = call(t, "DescribeClusterNodePoolDetail", {{"ClusterId": "{cluster}", "NodePoolId": "{pool}"}})["ok"]["NodePool"]["DesiredNodesNum"]
s = call(t, "ModifyNodePoolDesiredCapacityAboutAsg", {{"ClusterId": "{cluster}", "NodePoolId": "{pool}", "DesiredCapacity": desired + 1}})
u = call(t, "UpgradeClusterInstances", {{"ClusterId": "{cluster}", "Operation": "create", "UpgradeType": "reset",
    "InstanceIds": ["{upgrade}"]}})
result = {{"c": c, "a": a, "b": b, "s": s, "u": u, "before": before, "after": settle_nodes(t, "{cluster}")}}"#
        ),
    );
    for step in ["c", "a", "b", "s", "u"] {
        assert!(r[step]["ok"].is_object(), "{phase}: {step}: {}", r[step]);
    }
    assert_eq!(ids(&r["a"]["ok"]["SuccInstanceIds"]), [to_cluster], "{phase}: {}", r["a"]);
    assert_eq!(ids(&r["b"]["ok"]["SuccInstanceIds"]), [to_pool], "{phase}: {}", r["b"]);
    let created = ids(&r["c"]["ok"]["InstanceIdSet"]).remove(0);
    let fresh = new_nodes(&r["before"], &r["after"]);
    let scaled: Vec<&String> =
        fresh.iter().filter(|n| ![&created, to_cluster, to_pool].contains(&n.as_str())).collect();
    assert_eq!(scaled.len(), 1, "{phase}: one node from the scale-out: {fresh:?}");
    let scaled = scaled[0].clone();
    let cases = [
        ("CreateClusterInstances", created.as_str(), cluster_os),
        ("AddExistedInstances to the cluster", to_cluster, cluster_os),
        ("UpgradeClusterInstances", upgrade, cluster_os),
        ("AddExistedInstances to the pool", to_pool, pool_os),
        ("scaling the pool out", scaled.as_str(), pool_os),
    ];
    for (operation, node, expected) in cases {
        assert_eq!(os_of(server, node), expected, "{phase}: {operation} must give {expected}");
    }
    Round { created, scaled, nodes: r["after"].clone() }
}

#[test]
fn each_node_operation_uses_its_levels_os_and_os_changes_touch_no_existing_node() {
    let Some(server) = Server::start(Backend::Sqlite, "tke_levels") else { return };
    let user = server.create_account("kube");

    // The catalogue: the seed's table in order, each backed by its CVM public image; CVM's
    // DescribeImages answers beside TKE's.
    let r = py(
        &server,
        &user,
        r#"t = tke()
os_images = call(t, "DescribeOSImages")["ok"]
old = call(t, "DescribeImages")["ok"]
cvm = call(client(), "DescribeImages", {"ImageIds": ["img-eb30mz89"]})["ok"]
result = {"os": os_images, "old": old, "cvm": cvm}"#,
    );
    let set = r["os"]["OSImageSeriesSet"].as_array().expect("set");
    let seed: Vec<(&str, &str)> =
        set.iter().take(6).map(|o| (o["OsName"].as_str().unwrap_or(""), o["ImageId"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        seed,
        [
            ("tlinux3.1x86_64", TK4),
            ("tlinux2.4x86_64", TL24),
            ("ubuntu20.04x86_64", "img-22trbn9x"),
            ("ubuntu18.04.1x86_64", U18),
            ("centos8.0x86_64", C80),
            ("centos7.6.0_x64", C76),
        ]
    );
    assert_eq!(set[0]["Recommended"], true);
    assert_eq!(set[0]["KernelVersion"], "5.4.119");
    assert!(set[0]["Remarks"].to_string().contains("GPU driver"), "{}", set[0]);
    assert_eq!(set[2]["ReleaseStatus"], "BETA");
    assert_eq!(set[4]["ApplicationRequired"], true);
    assert!(set.iter().all(|o| o["Status"] == "online" && o["OsCustomizeType"] == "GENERAL" && o["Arch"] == "amd64"));
    assert!(set.iter().any(|o| o["OsName"] == "tlinux3.1x86_64_qgpu" && o["MarketImage"] == true), "qGPU market image");
    assert_eq!(r["os"]["TotalCount"].as_u64(), Some(set.len() as u64));
    assert_eq!(r["old"]["ImageInstanceSet"][0]["OsName"], "tlinux3.1x86_64");
    assert_eq!(r["cvm"]["ImageSet"][0]["ImageId"], TK4, "CVM DescribeImages still answers: {}", r["cvm"]);
    let out = server.tccli(&user, &["tke", "DescribeOSImages", "--region", "ap-guangzhou"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("tccli json");
    assert_eq!(v["OSImageSeriesSet"][5]["OsName"], "centos7.6.0_x64");

    // Instances of the user's own, from an OS TKE does not offer, to add later.
    let r = py(&server, &user, &format!(r#"result = run(client(), "{DEBIAN}", count=7, name="own")"#));
    let own = ids(&r["ids"]);
    let work = tempfile::tempdir().expect("tempdir");
    support::guest::write_file(&support::guest::disk_of(&server, &own[0]), "/etc/old-data", "mine\n", work.path());

    // Rule 1: CreateCluster's nodes and its existing instances use the cluster OS (the
    // ImageId inside RunInstancesPara is replaced); rule 3: the added instance is reinstalled.
    let r = py(
        &server,
        &user,
        &format!(
            r#"t = tke()
r = call(t, "CreateCluster", {{"ClusterType": "MANAGED_CLUSTER", "ClusterCIDRSettings": {{"ClusterCIDR": "172.16.0.0/16"}},
    "ClusterBasicSettings": {{"ClusterOs": "tlinux3.1x86_64", "ClusterName": "web", "VpcId": "vpc-1"}},
    "RunInstancesForNode": [{{"NodeRole": "WORKER", "RunInstancesPara": [run_para()]}}],
    "ExistedInstancesForNode": [{{"NodeRole": "WORKER", "ExistedInstancesPara": {{"InstanceIds": ["{}"]}}}}]}})
cid = r["ok"]["ClusterId"]
seen = []
while True:
    status = call(t, "DescribeClusters", {{"ClusterIds": [cid]}})["ok"]["Clusters"][0]["ClusterStatus"]
    states = [i["InstanceState"] for i in call(t, "DescribeClusterInstances", {{"ClusterId": cid}})["ok"]["InstanceSet"]]
    seen.append([status, "initializing" in states])
    if status == "Running" and "initializing" not in states:
        break
    time.sleep(0.05)
n = settle_nodes(t, cid)
after = call(t, "DescribeClusters", {{"ClusterIds": [cid]}})["ok"]["Clusters"][0]
result = {{"cluster": cid, "seen": seen, "after": after, "nodes": n}}"#,
            own[0]
        ),
    );
    let cluster = r["cluster"].as_str().expect("cluster id").to_owned();
    assert!(cluster.starts_with("cls-") && cluster.len() == 12, "{cluster}");
    // While the nodes the creation made are initializing, the cluster is Creating.
    for seen in r["seen"].as_array().expect("observations") {
        assert!(seen[0] == "Creating" || seen[1] == false, "Running with nodes initializing: {}", r["seen"]);
    }
    assert_eq!(r["after"]["ClusterStatus"], "Running");
    assert_eq!(
        (r["after"]["ClusterOs"].as_str(), r["after"]["ImageId"].as_str()),
        (Some("tlinux3.1x86_64"), Some(TK4))
    );
    assert_eq!(r["after"]["ClusterNodeNum"], 2);
    let created: Vec<String> =
        r["nodes"].as_object().expect("nodes").keys().filter(|k| **k != own[0]).cloned().collect();
    assert_eq!(created.len(), 1);
    assert_eq!(os_of(&server, &created[0]), TK4, "a created node gets the cluster OS");
    assert_eq!(os_of(&server, &own[0]), TK4, "an added instance is reinstalled from the cluster OS");
    assert_eq!(
        support::guest::read_file(&support::guest::disk_of(&server, &own[0]), "/etc/old-data", work.path()),
        None,
        "adding an existing instance wipes its system disk"
    );

    // A pool: its first node, made with the pool, gets the pool OS.
    let r = py(
        &server,
        &user,
        &format!(
            r#"t = tke()
r = call(t, "CreateClusterNodePool", {{"ClusterId": "{cluster}", "Name": "ubuntu-pool", "EnableAutoscale": False,
    "NodePoolOs": "ubuntu18.04.1x86_64", "InstanceAdvancedSettings": {{}},
    "AutoScalingGroupPara": json.dumps({{"MinSize": 0, "MaxSize": 10, "DesiredCapacity": 1, "VpcId": "vpc-1"}}),
    "LaunchConfigurePara": json.dumps({{"InstanceType": "S5.MEDIUM2", "SystemDisk": {{"DiskSize": 20}}}})}})
pid = r["ok"]["NodePoolId"]
creating = call(t, "DescribeClusterNodePoolDetail", {{"ClusterId": "{cluster}", "NodePoolId": pid}})["ok"]["NodePool"]
creating_nodes = call(t, "DescribeClusterInstances", {{"ClusterId": "{cluster}", "Filters": [
    {{"Name": "nodepool-id", "Values": [pid]}}]}})["ok"]["InstanceSet"]
settle_nodes(t, "{cluster}")
first = call(t, "DescribeClusterInstances", {{"ClusterId": "{cluster}", "Filters": [
    {{"Name": "nodepool-id", "Values": [pid]}}]}})["ok"]["InstanceSet"]
result = {{"pool": pid, "creating": creating, "creating_nodes": creating_nodes, "first": first}}"#
        ),
    );
    let pool = r["pool"].as_str().expect("pool id").to_owned();
    assert!(pool.starts_with("np-") && pool.len() == 11, "{pool}");
    // A pool whose first nodes are initializing is `creating`, then `normal`.
    let initializing =
        r["creating_nodes"].as_array().expect("set").iter().any(|n| n["InstanceState"] == "initializing");
    let expected = if initializing { "creating" } else { "normal" };
    assert_eq!(r["creating"]["LifeState"], expected, "{} {}", r["creating"], r["creating_nodes"]);
    let first_pool_node = r["first"][0]["InstanceId"].as_str().expect("the pool's node").to_owned();
    assert_eq!(os_of(&server, &first_pool_node), U18, "a pool's first node gets the pool OS");

    // The matrix: every node operation, before any change, after the cluster's OS changed and
    // after the pool's, each checked on the disk it made. Changing an OS changes no disk.
    let r1 = round(&server, &user, (&cluster, &pool), (&own[1], &own[2], &first_pool_node), (TK4, U18), "before");
    let r = changing_no_node(
        &server,
        &user,
        &r1.nodes,
        "ModifyClusterImage",
        &format!(
            r#"t = tke()
m = call(t, "ModifyClusterImage", {{"ClusterId": "{cluster}", "ImageId": "{TL24}"}})
c = call(t, "DescribeClusters", {{"ClusterIds": ["{cluster}"]}})["ok"]["Clusters"][0]
result = {{"m": m, "c": c}}"#
        ),
    );
    assert!(r["m"]["ok"].is_object(), "{}", r["m"]);
    let os = (r["c"]["ClusterOs"].as_str(), r["c"]["ImageId"].as_str());
    assert_eq!(os, (Some("tlinux2.4x86_64"), Some(TL24)), "an image id that backs an OS means that OS");
    let r2 = round(
        &server,
        &user,
        (&cluster, &pool),
        (&own[3], &own[4], &r1.scaled),
        (TL24, U18),
        "after ModifyClusterImage",
    );
    let r = changing_no_node(
        &server,
        &user,
        &r2.nodes,
        "ModifyClusterNodePool",
        &format!(
            r#"t = tke()
m = call(t, "ModifyClusterNodePool", {{"ClusterId": "{cluster}", "NodePoolId": "{pool}", "OsName": "centos7.6.0_x64"}})
result = {{"m": m, "p": call(t, "DescribeClusterNodePools", {{"ClusterId": "{cluster}"}})["ok"]}}"#
        ),
    );
    assert!(r["m"]["ok"].is_object(), "{}", r["m"]);
    assert_eq!(r["p"]["NodePoolSet"][0]["NodePoolOs"], "centos7.6.0_x64");
    assert_eq!(r["p"]["NodePoolSet"][0]["ImageId"], C76);
    let r3 = round(
        &server,
        &user,
        (&cluster, &pool),
        (&own[5], &own[6], &r2.scaled),
        (TL24, C76),
        "after ModifyClusterNodePool",
    );
    assert_eq!(os_of(&server, &created[0]), TK4, "nodes nobody reinstalled keep what they had");
    assert_eq!(os_of(&server, &r1.created), TK4);
    assert_eq!(os_of(&server, &r2.created), TL24);
    assert_eq!(os_of(&server, &own[2]), U18);
    assert_eq!(os_of(&server, &r3.scaled), C76);

    let r = py(
        &server,
        &user,
        &format!(
            r#"t = tke()
pool = call(t, "DescribeClusterNodePoolDetail", {{"ClusterId": "{cluster}", "NodePoolId": "{pool}"}})["ok"]["NodePool"]
auto = call(t, "DescribeClusterInstances", {{"ClusterId": "{cluster}", "Filters": [
    {{"Name": "nodepool-id", "Values": ["{pool}"]}}, {{"Name": "nodepool-instance-type", "Values": ["AUTOSCALING_ADDED"]}}]}})["ok"]
result = {{"detail": pool, "auto": auto}}"#
        ),
    );
    let detail = &r["detail"];
    assert_eq!((detail["LifeState"].as_str(), detail["DesiredNodesNum"].as_u64()), (Some("normal"), Some(4)));
    assert_eq!(detail["NodeCountSummary"]["AutoscalingAdded"]["Total"], 4, "{detail}");
    assert_eq!(detail["NodeCountSummary"]["ManuallyAdded"]["Normal"], 3, "{detail}");
    assert_eq!(r["auto"]["TotalCount"], 4);
    assert_eq!(r3.nodes[&own[6]]["NodePoolId"], pool.as_str());
    assert_eq!(r3.nodes[&own[5]]["NodePoolId"], "");

    // Scaling in removes the newest autoscaled nodes; deleting the pool keeps its nodes in the
    // cluster; deleting the cluster with `retain` keeps the instances.
    let r = py(
        &server,
        &user,
        &format!(
            r#"t = tke()
s = call(t, "ModifyNodePoolDesiredCapacityAboutAsg", {{"ClusterId": "{cluster}", "NodePoolId": "{pool}", "DesiredCapacity": 3}})
gone = settle_gone(client(), ["{p4}"])
low = call(t, "ModifyNodePoolDesiredCapacityAboutAsg", {{"ClusterId": "{cluster}", "NodePoolId": "{pool}", "DesiredCapacity": 11}})
d = call(t, "DeleteClusterNodePool", {{"ClusterId": "{cluster}", "NodePoolIds": ["{pool}"], "KeepInstance": True}})
left = settle_nodes(t, "{cluster}")
dc = call(t, "DeleteCluster", {{"ClusterId": "{cluster}", "InstanceDeleteMode": "retain"}})
after = call(t, "DescribeClusters", {{}})["ok"]
inst = call(client(), "DescribeInstances", {{"InstanceIds": ["{own1}"]}})["ok"]
result = {{"s": s, "gone": gone, "low": low, "d": d, "left": left, "dc": dc, "after": after, "inst": inst}}"#,
            p4 = r3.scaled,
            own1 = own[2],
        ),
    );
    assert_eq!(r["gone"], true);
    assert_eq!(r["low"]["error"], "InvalidParameter.Param", "beyond MaxNodesNum: {}", r["low"]);
    assert!(r["d"]["ok"].is_object(), "{}", r["d"]);
    let left = r["left"].as_object().expect("nodes");
    assert!(left.contains_key(&own[2]) && !left.contains_key(&r3.scaled), "{left:?}");
    assert!(left.values().all(|n| n["NodePoolId"] == ""), "the pool's nodes stay in the cluster without it");
    assert!(r["dc"]["ok"].is_object(), "{}", r["dc"]);
    assert_eq!(r["after"]["TotalCount"], 0);
    assert_eq!(r["inst"]["InstanceSet"][0]["InstanceState"], "RUNNING", "retain keeps the instances");
    let out = server.tccli(&user, &["tke", "DescribeClusters", "--region", "ap-guangzhou"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A cluster of `user`'s on `os` with one created node; returns (cluster, node).
fn cluster_with_a_node(server: &Server, user: &Creds, os: &str) -> (String, String) {
    let r = py(
        server,
        user,
        &format!(
            r#"t = tke()
r = call(t, "CreateCluster", {{"ClusterType": "MANAGED_CLUSTER", "ClusterCIDRSettings": {{"ClusterCIDR": "10.0.0.0/16"}},
    "ClusterBasicSettings": {{"ClusterOs": "{os}"}},
    "RunInstancesForNode": [{{"NodeRole": "WORKER", "RunInstancesPara": [run_para()]}}]}})
result = {{"r": r, "nodes": settle_nodes(t, r["ok"]["ClusterId"]) if "ok" in r else None}}"#
        ),
    );
    let cluster = r["r"]["ok"]["ClusterId"].as_str().unwrap_or_else(|| panic!("CreateCluster on {os}: {r}")).to_owned();
    let node = r["nodes"].as_object().expect("nodes").keys().next().expect("a node").clone();
    (cluster, node)
}

#[test]
fn beta_images_need_an_approved_application_and_accounts_see_only_their_own() {
    let Some(server) = Server::start(Backend::Postgres, "tke_beta") else { return };
    let (bob, alice) = (server.create_account("bob"), server.create_account("alice"));
    let create = |os: &str| {
        format!(
            r#"call(tke(), "CreateCluster", {{"ClusterType": "MANAGED_CLUSTER", "ClusterCIDRSettings": {{}},
    "ClusterBasicSettings": {{"ClusterOs": "{os}"}}}})"#
        )
    };
    let r = py(&server, &bob, &format!("result = [{}, {}]", create("centos8.0x86_64"), create(C80)));
    for refused in r.as_array().expect("answers") {
        assert_eq!(refused["error"], "OperationDenied", "{refused}");
        assert!(refused["message"].as_str().unwrap_or("").contains("ApplyForBetaImage"), "names the step: {refused}");
    }
    let r = py(
        &server,
        &bob,
        &format!(
            r#"a = call(ext(), "ApplyForBetaImage", {{"OsName": "centos8.0x86_64", "Reason": "testing cgroup v2"}})
again = call(ext(), "ApplyForBetaImage", {{"OsName": "centos8.0x86_64"}})
not_beta = call(ext(), "ApplyForBetaImage", {{"OsName": "centos7.6.0_x64"}})
listed = call(ext(), "DescribeBetaImageApplications")
result = {{"a": a, "again": again, "not_beta": not_beta, "listed": listed, "pending": {}}}"#,
            create("centos8.0x86_64")
        ),
    );
    let app = r["a"]["ok"]["ApplicationId"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
    assert_eq!(r["a"]["ok"]["Status"], "PENDING");
    assert_eq!(r["again"]["ok"]["ApplicationId"], app.as_str(), "an open application is returned again");
    assert_eq!(r["not_beta"]["error"], "InvalidParameter.Param");
    assert_eq!(r["listed"]["ok"]["TotalCount"], 1);
    assert!(r["pending"]["message"].as_str().unwrap_or("").contains("pending"), "{}", r["pending"]);

    // The operator rejects with a reason, the applicant reads it; a new application approved.
    let listed = server.cli_json(&["tke", "beta", "list"]);
    assert_eq!(listed[0]["ApplicationId"], app.as_str());
    let rejected = server.cli_json(&["tke", "beta", "reject", &app, "--reason", "capacity is full this week"]);
    assert_eq!(rejected["Status"], "REJECTED");
    let twice = server.cli(&["tke", "beta", "approve", &app]);
    assert!(!twice.status.success(), "a decided application stays decided");
    let r = py(
        &server,
        &bob,
        &format!(
            r#"refused = {}
b = call(ext(), "ApplyForBetaImage", {{"OsName": "centos8.0x86_64", "Reason": "again"}})
result = {{"refused": refused, "b": b}}"#,
            create("centos8.0x86_64")
        ),
    );
    assert_eq!(r["refused"]["error"], "OperationDenied");
    assert!(r["refused"]["message"].as_str().unwrap_or("").contains("capacity is full this week"), "{}", r["refused"]);
    let second = r["b"]["ok"]["ApplicationId"].as_str().expect("second application").to_owned();
    assert_ne!(second, app);
    assert_eq!(server.cli_json(&["tke", "beta", "approve", &second])["Status"], "APPROVED");
    let (cluster, node) = cluster_with_a_node(&server, &bob, "centos8.0x86_64");
    assert_eq!(os_of(&server, &node), C80, "approved: the beta image is usable");
    let r = py(&server, &alice, &format!("result = {}", create("centos8.0x86_64")));
    assert_eq!(r["error"], "OperationDenied", "approval is per account: {r}");

    // Another account sees none of bob's clusters and can touch none of them.
    let bob_instance = node.clone();
    let r = py(
        &server,
        &alice,
        &format!(
            r#"t = tke()
mine = call(t, "CreateCluster", {{"ClusterType": "MANAGED_CLUSTER", "ClusterCIDRSettings": {{}}}})["ok"]["ClusterId"]
result = {{
  "list": call(t, "DescribeClusters", {{}})["ok"],
  "by_id": call(t, "DescribeClusters", {{"ClusterIds": ["{cluster}"]}})["ok"],
  "nodes": call(t, "DescribeClusterInstances", {{"ClusterId": "{cluster}"}}),
  "image": call(t, "ModifyClusterImage", {{"ClusterId": "{cluster}", "ImageId": "{TK4}"}}),
  "pool": call(t, "DescribeClusterNodePools", {{"ClusterId": "{cluster}"}}),
  "add": call(t, "AddExistedInstances", {{"ClusterId": "{cluster}", "InstanceIds": ["{bob_instance}"]}}),
  "steal": call(t, "AddExistedInstances", {{"ClusterId": mine, "InstanceIds": ["{bob_instance}"]}}),
  "delete": call(t, "DeleteCluster", {{"ClusterId": "{cluster}", "InstanceDeleteMode": "terminate"}}),
}}"#
        ),
    );
    assert_eq!(r["list"]["TotalCount"], 1, "only her own: {}", r["list"]);
    assert_eq!(r["by_id"]["TotalCount"], 0);
    assert_eq!(r["nodes"]["error"], "InvalidParameter.ClusterNotFound");
    assert_eq!(r["image"]["error"], "ResourceNotFound.ClusterNotFound");
    assert_eq!(r["pool"]["error"], "ResourceNotFound.ClusterNotFound");
    assert_eq!(r["add"]["error"], "FailedOperation.ClusterNotFound");
    assert_eq!(ids(&r["steal"]["ok"]["FailedInstanceIds"]), std::slice::from_ref(&bob_instance), "{}", r["steal"]);
    assert!(r["steal"]["ok"]["FailedReasons"][0].as_str().unwrap_or("").contains("does not exist"), "{}", r["steal"]);
    assert_eq!(r["delete"]["error"], "ResourceNotFound.ClusterNotFound");
    assert_eq!(os_of(&server, &bob_instance), C80, "bob's node untouched");

    // Bad input gets TKE's codes in the envelope, never a 500.
    let r = py(
        &server,
        &bob,
        &format!(
            r#"t = tke()
base = {{"ClusterType": "MANAGED_CLUSTER", "ClusterCIDRSettings": {{}}}}
def with_(**kw):
    d = dict(base); d.update(kw); return d
result = {{
  "unknown_os": call(t, "CreateCluster", with_(ClusterBasicSettings={{"ClusterOs": "windows2019"}})),
  "bad_type": call(t, "CreateCluster", {{"ClusterType": "SERVERLESS", "ClusterCIDRSettings": {{}}}}),
  "not_json": call(t, "CreateCluster", with_(RunInstancesForNode=[{{"NodeRole": "WORKER", "RunInstancesPara": ["{{not json"]}}])),
  "bad_role": call(t, "CreateCluster", with_(RunInstancesForNode=[{{"NodeRole": "KING", "RunInstancesPara": [run_para()]}}])),
  "malformed": call(t, "DescribeClusterInstances", {{"ClusterId": "cls-NOPE"}}),
  "unknown": call(t, "DescribeClusterInstances", {{"ClusterId": "cls-00000000"}}),
  "no_image": call(t, "ModifyClusterImage", {{"ClusterId": "{cluster}", "ImageId": "img-00000000"}}),
  "bad_image": call(t, "ModifyClusterImage", {{"ClusterId": "{cluster}", "ImageId": "img-XYZ"}}),
  "limit": call(t, "DescribeClusters", {{"Limit": 1000}}),
  "negative": call(t, "DescribeClusters", {{"Offset": -1}}),
  "para": call(t, "CreateClusterInstances", {{"ClusterId": "{cluster}", "RunInstancePara": "[1, 2]"}}),
  "extra": call(t, "DescribeClusters", {{"Colour": "blue"}}),
  "missing": call(t, "ModifyClusterImage", {{"ClusterId": "{cluster}"}}),
  "filter": call(t, "DescribeClusters", {{"Filters": [{{"Name": "colour", "Values": ["x"]}}]}}),
  "mode": call(t, "DeleteCluster", {{"ClusterId": "{cluster}", "InstanceDeleteMode": "shred"}}),
  "upgrade": call(t, "UpgradeClusterInstances", {{"ClusterId": "{cluster}", "Operation": "pause"}}),
}}
p = call(t, "CreateClusterNodePool", {{"ClusterId": "{cluster}", "EnableAutoscale": False, "NodePoolOs": "centos7.6.0_x64",
    "AutoScalingGroupPara": json.dumps({{"MinSize": 0, "MaxSize": 2, "DesiredCapacity": 0}}), "LaunchConfigurePara": "{{}}"}})
pid = p["ok"]["NodePoolId"]
result["pool_image"] = call(t, "ModifyClusterNodePool", {{"ClusterId": "{cluster}", "NodePoolId": pid, "OsName": "img-00000000"}})
result["pool_os"] = call(t, "ModifyClusterNodePool", {{"ClusterId": "{cluster}", "NodePoolId": pid, "OsName": "plan9"}})
result["pool_size"] = call(t, "CreateClusterNodePool", {{"ClusterId": "{cluster}", "EnableAutoscale": False,
    "AutoScalingGroupPara": json.dumps({{"MinSize": 3, "MaxSize": 2}}), "LaunchConfigurePara": "{{}}"}})
result["pool_json"] = call(t, "CreateClusterNodePool", {{"ClusterId": "{cluster}", "EnableAutoscale": False,
    "AutoScalingGroupPara": "nope", "LaunchConfigurePara": "{{}}"}})
result["no_pool"] = call(t, "DescribeClusterNodePoolDetail", {{"ClusterId": "{cluster}", "NodePoolId": "np-00000000"}})
result["bad_pool"] = call(t, "ModifyNodePoolDesiredCapacityAboutAsg", {{"ClusterId": "{cluster}", "NodePoolId": "np-X", "DesiredCapacity": 1}})
result["over"] = call(t, "ModifyNodePoolDesiredCapacityAboutAsg", {{"ClusterId": "{cluster}", "NodePoolId": pid, "DesiredCapacity": 3}})
result["under"] = call(t, "ModifyNodePoolDesiredCapacityAboutAsg", {{"ClusterId": "{cluster}", "NodePoolId": pid, "DesiredCapacity": -1}})
import threading
outs = []
def scale():
    outs.append(call(tke(), "ModifyNodePoolDesiredCapacityAboutAsg", {{"ClusterId": "{cluster}", "NodePoolId": pid, "DesiredCapacity": 2}}))
threads = [threading.Thread(target=scale) for _ in range(6)]
[th.start() for th in threads]
[th.join() for th in threads]
result["race"] = {{"outs": outs, "pool_nodes": len([n for n in settle_nodes(t, "{cluster}").values() if n["NodePoolId"] == pid])}}
result["messages"] = call(ext(), "MarkMessagesRead", {{"MessageIds": ["msg-NOPE"]}})
result["apply"] = call(ext(), "ApplyForBetaImage", {{"OsName": "beos"}})"#
        ),
    );
    let expect = [
        ("unknown_os", "InvalidParameter.OsNotSupport"),
        ("bad_type", "InvalidParameter.Param"),
        ("not_json", "InvalidParameter.Param"),
        ("bad_role", "InvalidParameter.Param"),
        ("malformed", "InvalidParameter.Param"),
        ("unknown", "InvalidParameter.ClusterNotFound"),
        ("no_image", "InternalError.ImageIdNotFound"),
        ("bad_image", "InternalError.ImageIdNotFound"),
        ("limit", "InvalidParameter.Param"),
        ("negative", "InvalidParameter.Param"),
        ("para", "InvalidParameter.Param"),
        ("extra", "UnknownParameter"),
        ("missing", "MissingParameter"),
        ("filter", "InvalidParameter.Param"),
        ("mode", "InvalidParameter.Param"),
        ("upgrade", "InvalidParameter.Param"),
        ("pool_image", "InvalidParameterValue.ImageNotFound"),
        ("pool_os", "InvalidParameter.OsNotSupport"),
        ("pool_size", "InvalidParameter.Param"),
        ("pool_json", "InvalidParameter.Param"),
        ("no_pool", "ResourceNotFound"),
        ("bad_pool", "InvalidParameter.Param"),
        ("over", "InvalidParameter.Param"),
        ("under", "InvalidParameter.Param"),
        ("messages", "InvalidParameterValue"),
        ("apply", "InvalidParameter.OsNotSupport"),
    ];
    // Six concurrent scale-outs to 2 leave the pool with 2 nodes: the others were refused or
    // found it scaled already.
    assert_eq!(r["race"]["pool_nodes"], 2, "{}", r["race"]);
    for out in r["race"]["outs"].as_array().expect("answers") {
        assert!(out["ok"].is_object() || out["error"] == "OperationDenied", "{out}");
    }
    for (case, code) in expect {
        assert_eq!(r[case]["error"], code, "{case}: {}", r[case]);
        assert!(r[case]["request_id"].as_str().is_some_and(|id| id.len() == 36), "{case}: an envelope");
    }

    // The Node.js SDK reaches the same actions.
    let r = support::node::node(
        &server,
        &bob,
        r#"const t = tkeClient();
result = { os: await call(t, "DescribeOSImages", {}), clusters: await call(t, "DescribeClusters", {}) };"#,
    );
    assert_eq!(r["os"]["ok"]["OSImageSeriesSet"][0]["OsName"], "tlinux3.1x86_64", "{r}");
    assert_eq!(r["clusters"]["ok"]["Clusters"][0]["ClusterOs"], "centos8.0x86_64", "{r}");
}

#[test]
fn image_logic_changes_are_announced_a_week_ahead_and_take_effect_only_then() {
    let clock = tempfile::tempdir().expect("clock dir");
    let offset = clock.path().join("offset");
    let offset_text = offset.to_string_lossy().into_owned();
    let Some(server) =
        Server::start_env(Backend::Postgres, "tke_notice", &[("IMAGED_CLOCK_OFFSET_FILE", offset_text.as_str())])
    else {
        return;
    };
    let (carol, dave, erin) =
        (server.create_account("carol"), server.create_account("dave"), server.create_account("erin"));
    let receiver = Receiver::start(1);
    let hook = server.cli_json(&["account", "set-webhook", "--account", &carol.account_id, "--url", &receiver.url]);
    assert_eq!(hook["Webhook"], receiver.url.as_str());

    // carol: a cluster on CentOS 7.6; dave: a pool on it in a TencentOS cluster; erin: neither.
    let (carol_cluster, carol_node) = cluster_with_a_node(&server, &carol, "centos7.6.0_x64");
    let (dave_cluster, _) = cluster_with_a_node(&server, &dave, "tlinux3.1x86_64");
    let r = py(
        &server,
        &dave,
        &format!(
            r#"result = call(tke(), "CreateClusterNodePool", {{"ClusterId": "{dave_cluster}", "EnableAutoscale": False,
    "NodePoolOs": "centos7.6.0_x64", "AutoScalingGroupPara": json.dumps({{"MinSize": 0, "MaxSize": 5, "DesiredCapacity": 0}}),
    "LaunchConfigurePara": "{{}}"}})"#
        ),
    );
    let dave_pool = r["ok"]["NodePoolId"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
    let (erin_cluster, _) = cluster_with_a_node(&server, &erin, "tlinux2.4x86_64");
    let print = fingerprint(&server, &carol_node);

    // Under a week's notice is refused; a week and a day is scheduled and announced at once.
    let at = |secs: i64| imaged_domain::time::Timestamp(support::now() + secs).iso8601();
    let schedule = |effective: &str| {
        server.cli(&[
            "tke",
            "schedule-change",
            "--os-name",
            "centos7.6.0_x64",
            "--image",
            DEBIAN,
            "--effective",
            effective,
            "--note",
            "CentOS 7.6 moves to a newer base.",
        ])
    };
    let short = schedule(&at(6 * 86_400));
    assert!(!short.status.success(), "six days' notice must be refused");
    assert!(String::from_utf8_lossy(&short.stderr).contains("7 days"), "{}", String::from_utf8_lossy(&short.stderr));
    let effective = at(8 * 86_400);
    let out = schedule(&effective);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let change: Value = serde_json::from_slice(&out.stdout).expect("change json");
    assert_eq!((change["OsName"].as_str(), change["ImageId"].as_str()), (Some("centos7.6.0_x64"), Some(DEBIAN)));
    assert_eq!(change["EffectiveTime"], effective.as_str());
    assert_eq!(change["AccountsNotified"], 2, "carol (cluster) and dave (pool): {change}");
    let listed = server.cli_json(&["tke", "changes"]);
    assert_eq!(listed[0]["ChangeId"], change["ChangeId"]);

    let inbox =
        |who: &Creds| py(&server, who, r#"result = call(ext(), "DescribeMessages", {"UnreadOnly": True})["ok"]"#);
    let carol_inbox = inbox(&carol);
    assert_eq!(carol_inbox["TotalCount"], 1, "{carol_inbox}");
    let message = &carol_inbox["MessageSet"][0];
    assert_eq!(message["Category"], "TKE_IMAGE_CHANGE");
    assert_eq!(message["EffectiveTime"], effective.as_str());
    assert_eq!(message["Read"], false);
    assert!(message["Title"].as_str().unwrap_or("").contains("centos7.6.0_x64"), "{message}");
    assert!(message["Content"].as_str().unwrap_or("").contains("Existing nodes"), "{message}");
    assert_eq!(inbox(&dave)["TotalCount"], 1);
    assert_eq!(inbox(&erin)["TotalCount"], 0, "erin uses no CentOS 7.6");
    let delivered = receiver.wait_for(1, 30);
    assert_eq!(delivered.len(), 1, "the webhook got the message after a failed try");
    assert_eq!(delivered[0]["MessageId"], message["MessageId"]);
    assert_eq!(delivered[0]["AccountId"], carol.account_id.as_str());
    assert!(*receiver.attempts.lock().expect("lock") >= 2, "the first try failed and was retried");
    let id = message["MessageId"].as_str().expect("id").to_owned();
    let cli_inbox = Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["messages", "--unread", "--endpoint", &format!("http://{}", server.addr)])
        .env("TENCENTCLOUD_SECRET_ID", &carol.secret_id)
        .env("TENCENTCLOUD_SECRET_KEY", &carol.secret_key)
        .output()
        .expect("imaged messages");
    assert!(cli_inbox.status.success(), "{}", String::from_utf8_lossy(&cli_inbox.stderr));
    assert!(String::from_utf8_lossy(&cli_inbox.stdout).contains(&id));
    let catalogue = Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["tke", "os-images", "--endpoint", &format!("http://{}", server.addr)])
        .env("TENCENTCLOUD_SECRET_ID", &carol.secret_id)
        .env("TENCENTCLOUD_SECRET_KEY", &carol.secret_key)
        .output()
        .expect("imaged tke os-images");
    assert!(catalogue.status.success(), "{}", String::from_utf8_lossy(&catalogue.stderr));
    let catalogue: Value = serde_json::from_slice(&catalogue.stdout).expect("catalogue json");
    assert_eq!(catalogue["OSImageSeriesSet"][5]["ImageId"], C76, "the change is not in effect yet");
    let r = py(
        &server,
        &carol,
        &format!(
            r#"m = call(ext(), "MarkMessagesRead", {{"MessageIds": ["{id}"]}})["ok"]
result = {{"m": m, "unread": call(ext(), "DescribeMessages", {{"UnreadOnly": True}})["ok"]["TotalCount"],
          "all": call(ext(), "DescribeMessages", {{}})["ok"]["MessageSet"]}}"#
        ),
    );
    assert_eq!((r["m"]["MarkedCount"].as_u64(), r["unread"].as_u64()), (Some(1), Some(0)));
    assert_eq!(r["all"][0]["Read"], true);

    // Before its time the name still means the old image; from its time new nodes get the new
    // one, and nodes made earlier are untouched.
    let grow = |who: &Creds, cluster: &str| {
        py(
            &server,
            who,
            &format!(
                r#"t = tke()
os = [o for o in call(t, "DescribeOSImages")["ok"]["OSImageSeriesSet"] if o["OsName"] == "centos7.6.0_x64"][0]
c = call(t, "CreateClusterInstances", {{"ClusterId": "{cluster}", "RunInstancePara": run_para()}})
settle_nodes(t, "{cluster}")
result = {{"os": os, "c": c}}"#
            ),
        )
    };
    let r = grow(&carol, &carol_cluster);
    assert_eq!(r["os"]["ImageId"], C76);
    assert_eq!(os_of(&server, &ids(&r["c"]["ok"]["InstanceIdSet"])[0]), C76, "not yet in effect");
    std::fs::write(&offset, (8 * 86_400 + 60).to_string()).expect("move the clock");
    let r = grow(&carol, &carol_cluster);
    assert_eq!(r["os"]["ImageId"], DEBIAN, "in effect: {}", r["os"]);
    assert_eq!(os_of(&server, &ids(&r["c"]["ok"]["InstanceIdSet"])[0]), DEBIAN, "new nodes get the new image");
    assert!(fingerprint(&server, &carol_node) == print, "the change touched an existing node");
    assert_eq!(os_of(&server, &carol_node), C76);
    let r = py(
        &server,
        &dave,
        &format!(
            r#"t = tke()
call(t, "ModifyNodePoolDesiredCapacityAboutAsg", {{"ClusterId": "{dave_cluster}", "NodePoolId": "{dave_pool}", "DesiredCapacity": 1}})
result = settle_nodes(t, "{dave_cluster}")"#
        ),
    );
    let pool_node = r
        .as_object()
        .expect("nodes")
        .iter()
        .find(|(_, n)| n["NodePoolId"] == dave_pool.as_str())
        .expect("pool node")
        .0
        .clone();
    assert_eq!(os_of(&server, &pool_node), DEBIAN, "a pool on the name follows it too");

    // Retiring: announced to erin; from its time the OS is offline and no new node may use it.
    let retire_at = imaged_domain::time::Timestamp(support::now() + 8 * 86_400 + 60 + 7 * 86_400 + 10).iso8601();
    let out =
        server.cli(&["tke", "schedule-change", "--os-name", "tlinux2.4x86_64", "--retire", "--effective", &retire_at]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(inbox(&erin)["TotalCount"], 1);
    std::fs::write(&offset, (8 * 86_400 + 60 + 7 * 86_400 + 20).to_string()).expect("move the clock");
    let r = py(
        &server,
        &erin,
        &format!(
            r#"t = tke()
os = [o for o in call(t, "DescribeOSImages")["ok"]["OSImageSeriesSet"] if o["OsName"] == "tlinux2.4x86_64"][0]
old = [o["OsName"] for o in call(t, "DescribeImages")["ok"]["ImageInstanceSet"]]
c = call(t, "CreateClusterInstances", {{"ClusterId": "{erin_cluster}", "RunInstancePara": run_para()}})
result = {{"os": os, "old": old, "c": c}}"#
        ),
    );
    assert_eq!(r["os"]["Status"], "offline");
    assert!(!r["old"].as_array().expect("names").iter().any(|n| n == "tlinux2.4x86_64"));
    assert_eq!(r["c"]["error"], "InvalidParameter.OsNotSupport", "{}", r["c"]);
}
