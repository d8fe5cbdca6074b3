//! `imaged-bench-import`: the image-bytes benchmark.
//!
//! Builds a SIZE_GIB image that is half random data and half zeros (64 MiB runs of each), as raw
//! and as qcow2, and measures in one run: `cat FILE > /dev/null` and `qemu-img convert -O raw`
//! (the baselines), the server-side ingest (`ImportImage` of a `file://` URL, until NORMAL), the
//! end-to-end `imaged import FILE` (upload included), bytes stored after five imports of the
//! same image, the server's peak memory, and `imaged export` throughput.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use imaged::client::Client;
use serde_json::{json, Value};

fn timed(label: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f().with_context(|| label.to_owned())?;
    Ok(t.elapsed().as_secs_f64())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn make_image(path: &Path, gib: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let run_len = 64usize << 20;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut random = vec![0u8; run_len];
    let zeros = vec![0u8; run_len];
    for i in 0..(gib << 30) / run_len as u64 {
        if i % 2 == 0 {
            for chunk in random.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            f.write_all(&random)?;
        } else {
            f.write_all(&zeros)?;
        }
    }
    f.flush()?;
    Ok(())
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |d| {
        d.flatten()
            .map(|e| if e.path().is_dir() { dir_bytes(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
            .sum()
    })
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn wait_normal(c: &Client, id: &str) -> anyhow::Result<()> {
    loop {
        let r = c.call("DescribeImages", &json!({"ImageIds": [id]})).await?;
        match r["ImageSet"][0]["ImageState"].as_str() {
            Some("NORMAL") => return Ok(()),
            Some("IMPORTFAILED") => bail!("import failed: {}", r["ImageSet"][0]["FailureReason"]),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

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
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        data.join("imaged.toml"),
        format!("import_dir = \"{}\"\n[limits]\ncustom_images_per_region = 100\n", work.path().display()),
    )?;
    let exe = std::env::current_exe()?.with_file_name("imaged");
    let mut child = Command::new(&exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("IMAGED_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut addr = String::new();
    for line in std::io::BufReader::new(child.stdout.take().context("stdout")?).lines() {
        if let Some(rest) = line?.strip_prefix("imaged listening on http://") {
            addr = rest.split_whitespace().next().unwrap_or("").to_owned();
            break;
        }
    }
    let creds: Value = serde_json::from_slice(&std::fs::read(data.join("credentials.json"))?)?;
    std::env::set_var("TENCENTCLOUD_SECRET_ID", creds["secretId"].as_str().unwrap_or(""));
    std::env::set_var("TENCENTCLOUD_SECRET_KEY", creds["secretKey"].as_str().unwrap_or(""));
    std::env::set_var("IMAGED_ENDPOINT", format!("http://{addr}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = Client::from_env(None, None)?;
    let pid = child.id();

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
                wait_normal(&client, r["ImageId"].as_str().context("id")?).await
            })
        })?;
        // End to end into another region, whose block store is empty: nothing is deduplicated.
        let e2e_region = if label == "raw" { "ap-shanghai" } else { "ap-beijing" };
        let e2e = timed("imaged import", || {
            run(Command::new(&exe)
                .args(["import"])
                .arg(file)
                .args(["--name", &format!("e2e-{label}"), "--os-type", "CentOS", "--os-version", "7"])
                .args(["--arch", "x86_64", "--format", fmt, "--region", e2e_region])
                .stderr(Stdio::null()))
        })?;
        println!("{label:>6}: cat {:.2} GiB/s | qemu-img convert {:.2} GiB/s | ingest {:.2} GiB/s ({:.2}x qemu-img time, {:.2}x cat time) | imaged import end to end {:.2} GiB/s",
            gibps(cat), gibps(convert), gibps(ingest), ingest / convert, ingest / cat, gibps(e2e));
        rows.push((label.to_owned(), ingest, e2e));
    }
    let once = dir_bytes(&blocks_dir);
    for n in 0..3 {
        run(Command::new(&exe)
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
            .stderr(Stdio::null()))?;
    }
    // Let GC take the unreferenced blocks of the qcow2 uploads before counting.
    std::thread::sleep(Duration::from_millis(1100));
    run(Command::new(&exe).args(["gc", "--grace-secs", "0", "--data-dir"]).arg(&data))?;
    let five = dir_bytes(&blocks_dir);
    println!(
        "stored after 7 imports of one image (4 raw, 3 qcow2), after GC: {:.2} GiB = {:.2}x the image's {:.2} GiB of data (after the first two: {:.2} GiB, uploads' qcow2 file blocks included)",
        five as f64 / f64::from(1u32 << 30),
        five as f64 / (vbytes / 2.0),
        vbytes / 2.0 / f64::from(1u32 << 30),
        once as f64 / f64::from(1u32 << 30)
    );
    let ids = rt.block_on(
        client.call("DescribeImages", &json!({"Filters": [{"Name": "image-name", "Values": ["e2e-raw"]}]})),
    )?;
    let id = ids["ImageSet"][0]["ImageId"].as_str().context("e2e image")?.to_owned();
    let exported = work.path().join("export.raw");
    let export = timed("export", || {
        run(Command::new(&exe)
            .args(["export", &id, "--format", "raw", "--output"])
            .arg(&exported)
            .stderr(Stdio::null()))
    })?;
    println!("export (raw, download included) {:.2} GiB/s", gibps(export));
    println!("server peak RSS {:.1} MiB", peak_rss_mib(pid));
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
