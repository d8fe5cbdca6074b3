//! `imaged-bench-import`: the image-bytes benchmark.
//!
//! Builds a SIZE_GIB image that is half random data and half zeros (64 MiB runs of each), as raw
//! and as qcow2, and measures in one run: `cat FILE > /dev/null` and `qemu-img convert -O raw`
//! (the baselines), the server-side ingest (`ImportImage` of a `file://` URL, until NORMAL), the
//! end-to-end `imaged import FILE` (upload included), bytes stored after five imports of the
//! same image, the server's peak memory, and `imaged export` throughput.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use imaged::benchkit::{dir_bytes, make_image, peak_rss_mib, run, timed, wait_normal, BenchServer};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let gib: u64 = std::env::args().nth(1).map_or(Ok(4), |s| s.parse())?;
    let work = tempfile::tempdir_in(std::env::var("IMAGED_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    let raw = work.path().join("disk.raw");
    let qcow = work.path().join("disk.qcow2");
    eprintln!("building a {gib} GiB image (half random, half zeros)…");
    make_image(&raw, gib)?;
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&qcow))?;
    let vbytes = (gib << 30) as f64;
    let gibps = |secs: f64| vbytes / secs / f64::from(1u32 << 30);

    let data = work.path().join("data");
    let server = BenchServer::start(
        &data,
        &format!("import_dir = \"{}\"\n[limits]\ncustom_images_per_region = 100\n", work.path().display()),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (client, exe, pid) = (&server.client, &server.exe, server.child.id());

    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let blocks_dir = data.join("blocks/regions/ap-guangzhou");
    for (label, file, fmt) in [("raw", &raw, "raw"), ("qcow2", &qcow, "qcow2")] {
        let cat =
            timed("cat", || run(Command::new("sh").arg("-c").arg(format!("cat '{}' > /dev/null", file.display()))))?;
        let out = work.path().join("convert.out");
        let convert = timed("qemu-img convert", || {
            run(Command::new("qemu-img").args(["convert", "-f", fmt, "-O", "raw"]).arg(file).arg(&out))
        })?;
        let _ = std::fs::remove_file(&out);
        let ingest = timed("ingest", || {
            rt.block_on(async {
                let r = client
                    .call("ImportImage", &json!({"ImageUrl": format!("file://{}", file.display()), "ImageName": format!("ingest-{label}"),
                        "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64", "ImageFormat": fmt}))
                    .await?;
                wait_normal(client, r["ImageId"].as_str().context("id")?).await
            })
        })?;
        // End to end into another region, whose block store is empty: nothing is deduplicated.
        let e2e_region = if label == "raw" { "ap-shanghai" } else { "ap-beijing" };
        let e2e = timed("imaged import", || {
            run(Command::new(exe)
                .args(["import"])
                .arg(file)
                .args(["--name", &format!("e2e-{label}"), "--os-type", "CentOS", "--os-version", "7"])
                .args(["--arch", "x86_64", "--format", fmt, "--region", e2e_region])
                .stderr(Stdio::null()))
        })?;
        // Writing the image's data blocks to this file system at all: cp, skipping zero blocks.
        let copy = work.path().join("copy.out");
        let cp = timed("cp", || run(Command::new("cp").args(["--sparse=always"]).arg(file).arg(&copy)))?;
        let _ = std::fs::remove_file(&copy);
        println!("{label:>6}: cat {:.2} GiB/s | cp --sparse=always {:.2} GiB/s | qemu-img convert {:.2} GiB/s | ingest {:.2} GiB/s ({:.2}x qemu-img time, {:.2}x cat time) | imaged import end to end {:.2} GiB/s ({:.2}x cp's time)",
            gibps(cat), gibps(cp), gibps(convert), gibps(ingest), ingest / convert, ingest / cat, gibps(e2e), e2e / cp);
        rows.push((label.to_owned(), ingest, e2e));
    }
    let once = dir_bytes(&blocks_dir);
    let mut again = Vec::new();
    for n in 0..3 {
        again.push(timed("import again", || {
            run(Command::new(exe)
                .args(["import"])
                .arg(&raw)
                .args([
                    "--name",
                    &format!("again-{n}"),
                    "--os-type",
                    "CentOS",
                    "--os-version",
                    "7",
                    "--arch",
                    "x86_64",
                    "--format",
                    "raw",
                ])
                .stderr(Stdio::null()))
        })?);
    }
    let best = again.iter().copied().fold(f64::INFINITY, f64::min);
    println!("imaged import end to end into a region that holds the blocks (raw): {:.2} GiB/s", gibps(best));
    // Let GC take the unreferenced blocks of the qcow2 uploads before counting.
    std::thread::sleep(Duration::from_millis(1100));
    run(Command::new(exe).args(["gc", "--grace-secs", "0", "--data-dir"]).arg(&data))?;
    let five = dir_bytes(&blocks_dir);
    println!(
        "stored after 7 imports of one image (4 raw, 3 qcow2), after GC: {:.2} GiB = {:.2}x the image's {:.2} GiB of data (after the first two: {:.2} GiB, uploads' qcow2 file blocks included)",
        five as f64 / f64::from(1u32 << 30),
        five as f64 / (vbytes / 2.0),
        vbytes / 2.0 / f64::from(1u32 << 30),
        once as f64 / f64::from(1u32 << 30)
    );
    // The raw end-to-end import went to ap-shanghai.
    let shanghai = imaged::client::Client::from_env(None, Some("ap-shanghai"))?;
    let ids = rt.block_on(
        shanghai.call("DescribeImages", &json!({"Filters": [{"Name": "image-name", "Values": ["e2e-raw"]}]})),
    )?;
    let id = ids["ImageSet"][0]["ImageId"].as_str().context("e2e image")?.to_owned();
    let exported = work.path().join("export.raw");
    let export = timed("export", || {
        run(Command::new(exe)
            .args(["export", &id, "--format", "raw", "--region", "ap-shanghai", "--output"])
            .arg(&exported)
            .stderr(Stdio::null()))
    })?;
    println!("export (raw, download included) {:.2} GiB/s", gibps(export));
    println!("server peak RSS {:.1} MiB", peak_rss_mib(pid));
    Ok(())
}
