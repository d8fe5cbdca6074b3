//! `imaged-bench-instances`: the instances benchmark.
//!
//! On a SIZE_GIB image (half random data, half zeros) imported in the same run (the baseline:
//! a full server-side import of the disk), measures: launching 100 instances (seconds until
//! all are RUNNING, and the new bytes on disk: one base plus 100 overlays), then a capture
//! (`CreateImage`) after changing 1% of one instance's disk in 1 MiB writes of random data
//! (seconds until NORMAL, and the new bytes in the region's block store against the changed
//! bytes and against the full import's time).

use std::process::Command;

use anyhow::Context;
use imaged::benchkit::{
    change_one_percent, disk_bytes, import_raw, peak_rss_mib, run, timed, wait_normal, wait_running, Bench, MIB,
};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let bench = Bench::start("")?;
    let (gib, raw, data, server, work) = (bench.gib, &bench.raw, &bench.data, &bench.server, &bench.work);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let c = &server.client;
    let mib = |b: u64| b as f64 / MIB as f64;

    let convert_out = work.path().join("convert.out");
    let convert = timed("qemu-img convert", || {
        run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw"]).arg(raw).arg(&convert_out))
    })?;
    let _ = std::fs::remove_file(&convert_out);
    let mut image = String::new();
    let import = timed("import", || {
        image = rt.block_on(import_raw(c, raw, "golden"))?;
        Ok(())
    })?;
    println!("full import of the {gib} GiB disk: {import:.2} s (qemu-img convert of the same file: {convert:.2} s)");

    let (bases, instances) = (data.join("bases"), data.join("instances"));
    let before = disk_bytes(&bases) + disk_bytes(&instances);
    let mut ids: Vec<String> = Vec::new();
    let launch = timed("launch", || {
        rt.block_on(async {
            let r = c
                .call(
                    "RunInstances",
                    &json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": image,
                    "InstanceCount": 100, "InstanceName": "bench", "SystemDisk": {"DiskSize": gib}}),
                )
                .await?;
            ids = serde_json::from_value(r["InstanceIdSet"].clone())?;
            wait_running(c, &ids).await
        })
    })?;
    let (base_bytes, overlay_bytes) = (disk_bytes(&bases), disk_bytes(&instances));
    println!(
        "launch 100 instances: {launch:.2} s; new storage {:.1} MiB = one base {:.1} MiB + 100 overlays {:.2} MiB ({:.0} KiB each)",
        mib(base_bytes + overlay_bytes - before),
        mib(base_bytes),
        mib(overlay_bytes),
        overlay_bytes as f64 / 100.0 / 1024.0
    );

    let changed = change_one_percent(&instances.join(&ids[0]).join("system.qcow2"), gib, work.path())?;

    let store = data.join("blocks/regions/ap-guangzhou");
    let stored_before = disk_bytes(&store);
    let capture = timed("capture", || {
        rt.block_on(async {
            let r = c.call("CreateImage", &json!({"InstanceId": ids[0], "ImageName": "captured"})).await?;
            wait_normal(c, r["ImageId"].as_str().context("ImageId")?).await
        })
    })?;
    let new_bytes = disk_bytes(&store) - stored_before;
    println!(
        "capture after changing {:.0} MiB (1%): {capture:.2} s = {:.3}x the full import's time (target <= 0.1); new bytes stored {:.1} MiB = {:.3}x the changed bytes (target <= 1.1)",
        mib(changed),
        capture / import,
        mib(new_bytes),
        new_bytes as f64 / changed as f64
    );
    println!("server peak RSS {:.1} MiB", peak_rss_mib(server.child.id()));
    Ok(())
}
