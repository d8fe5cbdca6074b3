//! `imaged-bench-sync`: the cross-region copy benchmark.
//!
//! A SIZE_GIB image (half random data, half zeros) imported into ap-guangzhou, then copied with
//! `SyncImages` to the empty ap-shanghai: seconds, and the ratio to `cp -r` of the source
//! region's block files (the same bytes) in the same run. Then an instance of it has 1% of its
//! disk changed and is captured; the derived image is copied to ap-shanghai, which holds the
//! base's blocks: bytes moved against bytes changed.

use std::process::Command;

use anyhow::Context;
use imaged::benchkit::{change_one_percent, disk_bytes, import_raw, run, timed, wait_normal, wait_running, Bench, MIB};
use imaged::client::Client;
use serde_json::json;

/// Copies `image` to ap-shanghai and waits for the copy.
async fn sync(c: &Client, image: &str) -> anyhow::Result<()> {
    let r = c
        .call(
            "SyncImages",
            &json!({"ImageIds": [image], "DestinationRegions": ["ap-shanghai"], "ImageSetRequired": true}),
        )
        .await?;
    let copy = r["ImageSet"][0]["ImageId"].as_str().context("copy id")?.to_owned();
    wait_normal(&c.in_region("ap-shanghai"), &copy).await
}

fn main() -> anyhow::Result<()> {
    let bench = Bench::start("")?;
    let (gib, raw, data, server, work) = (bench.gib, &bench.raw, &bench.data, &bench.server, &bench.work);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let c = &server.client;
    let mib = |b: u64| b as f64 / MIB as f64;
    let image = rt.block_on(import_raw(c, raw, "golden"))?;

    let (source, dest) = (data.join("blocks/regions/ap-guangzhou"), data.join("blocks/regions/ap-shanghai"));
    let bytes = disk_bytes(&source);
    let copy_dir = work.path().join("cp-baseline");
    let cp = timed("cp", || run(Command::new("cp").arg("-r").arg(&source).arg(&copy_dir)))?;
    let _ = std::fs::remove_dir_all(&copy_dir);
    let first = timed("first copy", || rt.block_on(sync(c, &image)))?;
    println!(
        "first copy of the {gib} GiB image ({:.0} MiB of blocks) to an empty region: {first:.2} s = {:.2} GiB/s of virtual disk, {:.2}x the time of cp -r of the same blocks ({cp:.2} s)",
        mib(bytes),
        gib as f64 / first,
        first / cp
    );

    let instances = data.join("instances");
    let instance = rt.block_on(async {
        let r = c
            .call(
                "RunInstances",
                &json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": image,
                "SystemDisk": {"DiskSize": gib}}),
            )
            .await?;
        let ids: Vec<String> = serde_json::from_value(r["InstanceIdSet"].clone())?;
        wait_running(c, &ids).await.map(|()| ids[0].clone())
    })?;
    let changed = change_one_percent(&instances.join(&instance).join("system.qcow2"), gib, work.path())?;
    let derived = rt.block_on(async {
        let r = c.call("CreateImage", &json!({"InstanceId": instance, "ImageName": "derived"})).await?;
        let id = r["ImageId"].as_str().context("ImageId")?.to_owned();
        wait_normal(c, &id).await.map(|()| id)
    })?;
    let before = disk_bytes(&dest);
    let second = timed("derived copy", || rt.block_on(sync(c, &derived)))?;
    let moved = disk_bytes(&dest) - before;
    println!(
        "copy of the derived image ({:.0} MiB changed) to the region holding its base: {second:.2} s, {:.1} MiB moved = {:.3}x the changed bytes (target <= 1.1)",
        mib(changed),
        mib(moved),
        moved as f64 / changed as f64
    );
    Ok(())
}
