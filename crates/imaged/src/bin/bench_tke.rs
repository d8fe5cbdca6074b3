//! `imaged-bench-tke`: the TKE benchmark.
//!
//! Measures scaling a node pool from 0 to 50 nodes (seconds until all are running, and the
//! storage it adds: one base of the pool's image plus 50 overlays) against the baseline of a
//! plain `RunInstances` of 50 instances of another image in the same run; then
//! `DescribeClusterInstances` (100 nodes a page) on a 1,000-node cluster, p50 and p99 over
//! 200 calls, against CVM `DescribeInstances` (100 a page) over the same instances.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use imaged::benchkit::{disk_bytes, timed, wait_running, BenchServer, MIB};
use imaged::client::Client;
use serde_json::{json, Value};

/// Polls until `cluster` has `n` worker nodes, all running.
async fn wait_nodes(c: &Client, cluster: &str, n: usize) -> anyhow::Result<()> {
    loop {
        let mut running = 0;
        let mut offset = 0;
        let total = loop {
            let r = c
                .call_tke("DescribeClusterInstances", &json!({"ClusterId": cluster, "Offset": offset, "Limit": 100}))
                .await?;
            let set = r["InstanceSet"].as_array().context("InstanceSet")?;
            if let Some(failed) = set.iter().find(|i| i["InstanceState"] == "failed") {
                bail!("a node failed: {failed}");
            }
            running += set.iter().filter(|i| i["InstanceState"] == "running").count();
            let total = r["TotalCount"].as_u64().unwrap_or(0) as usize;
            offset += 100;
            if offset >= total {
                break total;
            }
        };
        if total == n && running == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// p50 and p99 of `n` calls, milliseconds.
async fn latencies<F, Fut>(n: usize, mut call: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[n / 2], ms[(n * 99 / 100).min(n - 1)]))
}

fn main() -> anyhow::Result<()> {
    let work = tempfile::tempdir_in(std::env::var("IMAGED_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    let data = work.path().join("data");
    let server = BenchServer::start(&data, "[workers]\ninstance = 2\nper_account = 2\n")?;
    let c = &server.client;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (bases, instances) = (data.join("bases"), data.join("instances"));
    let stored = || disk_bytes(&bases) + disk_bytes(&instances);
    let mib = |b: u64| b as f64 / MIB as f64;

    let cluster = rt.block_on(async {
        let r = c
            .call_tke(
                "CreateCluster",
                &json!({"ClusterType": "MANAGED_CLUSTER", "ClusterCIDRSettings": {"ClusterCIDR": "10.0.0.0/16"},
                    "ClusterBasicSettings": {"ClusterOs": "tlinux3.1x86_64", "ClusterName": "bench"}}),
            )
            .await?;
        anyhow::Ok(r["ClusterId"].as_str().context("ClusterId")?.to_owned())
    })?;
    let pool = rt.block_on(async {
        let r = c
            .call_tke(
                "CreateClusterNodePool",
                &json!({"ClusterId": cluster, "Name": "bench", "EnableAutoscale": false,
                    "NodePoolOs": "ubuntu18.04.1x86_64",
                    "AutoScalingGroupPara": json!({"MinSize": 0, "MaxSize": 50, "DesiredCapacity": 0}).to_string(),
                    "LaunchConfigurePara": json!({"InstanceType": "S5.MEDIUM2"}).to_string()}),
            )
            .await?;
        anyhow::Ok(r["NodePoolId"].as_str().context("NodePoolId")?.to_owned())
    })?;

    let before = stored();
    let scale = timed("scale out", || {
        rt.block_on(async {
            c.call_tke(
                "ModifyNodePoolDesiredCapacityAboutAsg",
                &json!({"ClusterId": cluster, "NodePoolId": pool, "DesiredCapacity": 50}),
            )
            .await?;
            wait_nodes(c, &cluster, 50).await
        })
    })?;
    let (pool_bases, added) = (disk_bytes(&bases), stored() - before);
    let before = stored();
    let launch = timed("baseline launch", || {
        rt.block_on(async {
            let r = c
                .call(
                    "RunInstances",
                    &json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-9qabwvbn",
                        "InstanceCount": 50, "InstanceName": "plain"}),
                )
                .await?;
            let ids: Vec<String> = serde_json::from_value(r["InstanceIdSet"].clone())?;
            wait_running(c, &ids).await
        })
    })?;
    let baseline_added = stored() - before;
    println!(
        "scale a node pool 0 -> 50: {scale:.2} s = {:.2}x a plain RunInstances of 50 ({launch:.2} s); storage added {:.1} MiB = one base {:.1} MiB + 50 overlays {:.2} MiB (plain launch added {:.1} MiB)",
        scale / launch,
        mib(added),
        mib(pool_bases),
        mib(added - pool_bases),
        mib(baseline_added)
    );

    // A 1,000-node cluster: 950 more nodes, 100 at a time.
    let grow = timed("grow to 1000", || {
        rt.block_on(async {
            for _ in 0..10 {
                let n = 95;
                let para = json!({"Placement": {"Zone": "ap-guangzhou-3"}, "InstanceCount": n}).to_string();
                c.call_tke("CreateClusterInstances", &json!({"ClusterId": cluster, "RunInstancePara": para})).await?;
            }
            wait_nodes(c, &cluster, 1000).await
        })
    })?;
    eprintln!("950 more nodes in {grow:.1} s");
    let page = json!({"ClusterId": cluster, "Limit": 100, "InstanceRole": "WORKER"});
    let (p50, p99) = rt.block_on(latencies(200, || c.call_tke("DescribeClusterInstances", &page)))?;
    let filtered = rt.block_on(async {
        c.call_tke(
            "DescribeClusterInstances",
            &json!({"ClusterId": cluster, "Limit": 1, "Filters": [{"Name": "nodepool-id", "Values": [pool]}]}),
        )
        .await
    })?;
    let cvm_page = json!({"Limit": 100});
    let (b50, b99) = rt.block_on(latencies(200, || c.call("DescribeInstances", &cvm_page)))?;
    println!(
        "DescribeClusterInstances on a 1,000-node cluster ({} workers, {} in the pool): p50 {p50:.2} ms, p99 {p99:.2} ms = {:.2}x / {:.2}x CVM DescribeInstances over the same 1,050 instances (p50 {b50:.2} ms, p99 {b99:.2} ms)",
        1000,
        filtered["TotalCount"],
        p50 / b50,
        p99 / b99
    );
    println!("server peak RSS {:.1} MiB", imaged::benchkit::peak_rss_mib(server.child.id()));
    Ok(())
}
