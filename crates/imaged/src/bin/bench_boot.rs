//! `imaged-bench-boot`: real guests.
//!
//! Builds the tiny image (`imaged public-image build-tiny`) and measures, under the accelerator
//! `IMAGED_ACCEL` chooses (TCG by default, since `/dev/kvm` hangs on these machines):
//! - one boot through `RunInstances`: seconds to the guest's first console line, to its login
//!   prompt, and (with `UserData` that powers off) to `STOPPED`, against the baseline of the
//!   same guest (same overlay, same seed, same QEMU) started by hand in the same run;
//! - 20 instances launched at once: seconds until every guest shows its login prompt, as a
//!   multiple of one boot, and the peak memory of the server and its QEMUs together;
//! - `CreateImage` of a running guest (flushed, paused, read, resumed) against a capture of the
//!   same instance stopped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use imaged::benchkit::{run, BenchServer};
use imaged::client::Client;
use serde_json::{json, Value};

const POWER_OFF: &str = "#!/bin/sh\npoweroff\n";

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn console(c: &Client, id: &str) -> anyhow::Result<String> {
    let r = c.call_extension("DescribeInstanceConsoleOutput", &json!({"InstanceId": id})).await?;
    Ok(r["Output"].as_str().unwrap_or_default().to_owned())
}

/// Polls until every instance's console holds `text`; seconds since `t0`.
async fn wait_console(c: &Client, ids: &[String], text: &str, t0: Instant) -> anyhow::Result<f64> {
    let deadline = t0 + Duration::from_secs(600);
    for id in ids {
        while !console(c, id).await?.contains(text) {
            if Instant::now() > deadline {
                bail!("{id} never printed {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

async fn instance(c: &Client, id: &str) -> anyhow::Result<Value> {
    let r = c.call("DescribeInstances", &json!({"InstanceIds": [id]})).await?;
    Ok(r["InstanceSet"][0].clone())
}

async fn wait_state(c: &Client, id: &str, state: &str) -> anyhow::Result<()> {
    loop {
        let i = instance(c, id).await?;
        if i["InstanceState"] == state && i["LatestOperationState"] != "OPERATING" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn launch(c: &Client, image: &str, count: u32, user_data: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut params = json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": image, "InstanceCount": count,
        "InstanceType": "S5.SMALL1", "InstanceName": "bench"});
    if let Some(ud) = user_data {
        params["UserData"] = json!(b64(ud));
    }
    let r = c.call("RunInstances", &params).await?;
    Ok(serde_json::from_value(r["InstanceIdSet"].clone())?)
}

async fn capture(c: &Client, id: &str, name: &str) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let r = c.call("CreateImage", &json!({"InstanceId": id, "ImageName": name})).await?;
    imaged::benchkit::wait_normal(c, r["ImageId"].as_str().context("ImageId")?).await?;
    Ok(t0.elapsed().as_secs_f64())
}

/// The same guest started by hand: an overlay on the image, the seed imaged would write, the
/// QEMU command line imaged uses (minus QMP and networking); seconds to the first console
/// line and to its exit.
fn by_hand(work: &Path, image: &Path, accel: &str, user_data: &str) -> anyhow::Result<(f64, f64)> {
    let dir = work.join("by-hand");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(image)
        .arg(dir.join("system.qcow2")))?;
    let seed = imaged_app::vm::seed::build(&imaged_app::vm::seed::Seed {
        instance_id: "ins-byhand00".into(),
        host_name: "by-hand".into(),
        user_data: user_data.as_bytes().to_vec(),
        password: None,
    })?;
    std::fs::write(dir.join("seed.img"), seed)?;
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .current_dir(&dir)
        .args(["-accel", accel, "-machine", "pc", "-smp", "1", "-m", "256", "-nodefaults", "-display", "none"])
        .args(["-serial", "file:console.log", "-device", "pvpanic"])
        .args(["-drive", "file=system.qcow2,format=qcow2,if=virtio,cache=writeback"])
        .args(["-drive", "file=seed.img,format=raw,if=virtio,readonly=on"])
        .spawn()
        .context("qemu-system-x86_64")?;
    let mut first = None;
    loop {
        if first.is_none() && std::fs::metadata(dir.join("console.log")).is_ok_and(|m| m.len() > 0) {
            first = Some(t0.elapsed().as_secs_f64());
        }
        if child.try_wait()?.is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            bail!("the hand-started guest did not power off");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((first.unwrap_or(f64::NAN), t0.elapsed().as_secs_f64()))
}

/// Resident memory (MiB) of `pid` and of every QEMU holding a disk under `data`.
fn rss_mib(server: u32, data: &Path) -> f64 {
    let rss = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0.0)
    };
    let root = data.join("instances");
    let qemus: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&root)))
            }) && *pid != server
        })
        .map(rss)
        .sum();
    (rss(server) + qemus) / 1024.0
}

fn main() -> anyhow::Result<()> {
    let work = tempfile::tempdir_in(std::env::var("IMAGED_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    let accel = std::env::var("IMAGED_ACCEL").unwrap_or_else(|_| "tcg".into());
    std::env::set_var("IMAGED_ACCEL", &accel);
    std::env::set_var("IMAGED_HYPERVISOR", "qemu");
    let exe = std::env::current_exe()?.with_file_name("imaged");
    let image = work.path().join("tiny.raw");
    let out = Command::new(&exe).args(["public-image", "build-tiny", "--output"]).arg(&image).output()?;
    if !out.status.success() {
        bail!("build-tiny: {}", String::from_utf8_lossy(&out.stderr));
    }
    let built: Value = serde_json::from_slice(&out.stdout)?;
    println!("tiny image built in {:.2} s", built["Seconds"].as_f64().unwrap_or(f64::NAN));

    let data = work.path().join("data");
    let server =
        BenchServer::start(&data, "[vm]\nmax_memory_mib = 256\nsoft_stop_secs = 30\n[workers]\ninstance = 4\n")?;
    let out = Command::new(&exe)
        .args(["public-image", "add"])
        .arg(&image)
        .args(["--name", "tiny", "--os-name", "tiny", "--platform", "Other Linux", "--format", "raw", "--data-dir"])
        .arg(&data)
        .output()?;
    if !out.status.success() {
        bail!("public-image add: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tiny = serde_json::from_slice::<Value>(&out.stdout)?["ImageId"].as_str().context("ImageId")?.to_owned();
    let c = &server.client;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    // One boot, three times each way; medians.
    let (mut first, mut off, mut hand_first, mut hand_off) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let (f, o) = by_hand(work.path(), &image, &accel, POWER_OFF)?;
        hand_first.push(f);
        hand_off.push(o);
        rt.block_on(async {
            let t0 = Instant::now();
            let ids = launch(c, &tiny, 1, Some(POWER_OFF)).await?;
            while console(c, &ids[0]).await?.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            first.push(t0.elapsed().as_secs_f64());
            wait_state(c, &ids[0], "STOPPED").await?;
            off.push(t0.elapsed().as_secs_f64());
            c.call("TerminateInstances", &json!({"InstanceIds": ids})).await?;
            anyhow::Ok(())
        })?;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (first, off, hand_first, hand_off) =
        (median(&mut first), median(&mut off), median(&mut hand_first), median(&mut hand_off));
    println!(
        "one tiny boot ({accel}): first console line {first:.2} s, power-off (STOPPED) {off:.2} s = {:.2}x QEMU started by hand on the same disk and seed ({hand_first:.2} s / {hand_off:.2} s)",
        off / hand_off
    );

    // Twenty at once.
    let (all, peak, one_login) = rt.block_on(async {
        let t0 = Instant::now();
        let one = launch(c, &tiny, 1, None).await?;
        let one_login = wait_console(c, &one, "login:", t0).await?;
        c.call("TerminateInstances", &json!({"InstanceIds": one})).await?;
        let t0 = Instant::now();
        let ids = launch(c, &tiny, 20, None).await?;
        // Every 200 ms: who has reached the prompt, and the memory in use.
        let (mut waiting, mut peak) = (ids.clone(), 0.0f64);
        while !waiting.is_empty() {
            peak = peak.max(rss_mib(server.child.id(), &data));
            let mut still = Vec::new();
            for id in waiting {
                if !console(c, &id).await?.contains("login:") {
                    still.push(id);
                }
            }
            waiting = still;
            if t0.elapsed() > Duration::from_secs(600) {
                bail!("{} guests never reached their login prompt", waiting.len());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let all = t0.elapsed().as_secs_f64();
        c.call("TerminateInstances", &json!({"InstanceIds": ids})).await?;
        anyhow::Ok((all, peak, one_login))
    })?;
    println!(
        "20 instances at once on {} cores: all at their login prompt after {all:.1} s = {:.1}x one boot to its prompt ({one_login:.2} s); memory of the server and its QEMUs {peak:.0} MiB",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        all / one_login
    );

    // A capture of a running guest against one of the same instance stopped.
    let (live, stopped) = rt.block_on(async {
        let t0 = Instant::now();
        let ids = launch(c, &tiny, 1, None).await?;
        wait_console(c, &ids, "login:", t0).await?;
        let live = capture(c, &ids[0], "live").await?;
        wait_state(c, &ids[0], "RUNNING").await?;
        c.call("StopInstances", &json!({"InstanceIds": ids, "StopType": "HARD"})).await?;
        wait_state(c, &ids[0], "STOPPED").await?;
        let stopped = capture(c, &ids[0], "stopped").await?;
        c.call("TerminateInstances", &json!({"InstanceIds": ids})).await?;
        anyhow::Ok((live, stopped))
    })?;
    println!(
        "CreateImage of a running guest: {live:.2} s = {:.2}x a capture of it stopped ({stopped:.2} s)",
        live / stopped
    );
    Ok(())
}
