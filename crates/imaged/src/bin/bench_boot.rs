//! `imaged-bench-boot`: real guests.
//!
//! Builds the tiny image (`imaged public-image build-tiny`) and measures, under the accelerator
//! `IMAGED_ACCEL` chooses (TCG by default, since `/dev/kvm` hangs on these machines):
//! - one boot through `RunInstances`, of the tiny image and (when debootstrap is installed) of
//!   the full Debian one: seconds to the guest's first console line and, with `UserData` that
//!   powers off, to `STOPPED`, against the baseline of the same guest (same overlay, same seed,
//!   same QEMU) started by hand in the same run;
//! - 20 instances launched at once: seconds until every guest shows its login prompt, as a
//!   multiple of one boot, and the peak memory of the server and its QEMUs together;
//! - `CreateImage` of a running guest (flushed, paused, read, resumed) against a capture of a
//!   stopped one, each having written 24 MiB of new data.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use imaged::benchkit::{guest_pids, run, status_mib, BenchServer};
use imaged::client::Client;
use serde_json::{json, Value};

const POWER_OFF: &str = "#!/bin/sh\npoweroff\n";
const WRITE_24_MIB: &str = "#!/bin/sh\ndd if=/dev/urandom of=/root/data bs=1M count=24 2>/dev/null\nsync\necho WROTE\n";

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
        .args(["-accel", accel, "-machine", "pc", "-smp", "1", "-m", "512", "-nodefaults", "-display", "none"])
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

/// Resident memory (MiB) of the server `pid` and of every QEMU holding a disk under `data`.
fn rss_mib(server: u32, data: &Path) -> f64 {
    let qemus: f64 =
        guest_pids(data).into_iter().filter(|&pid| pid != server).map(|pid| status_mib(pid, "VmRSS")).sum();
    status_mib(server, "VmRSS") + qemus
}

/// Builds an image with `imaged public-image ARGS --output FILE`; seconds.
fn build(exe: &Path, what: &str, file: &Path, extra: &[&str]) -> anyhow::Result<f64> {
    let out = Command::new(exe).args(["public-image", what, "--output"]).arg(file).args(extra).output()?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice::<Value>(&out.stdout)?["Seconds"].as_f64().unwrap_or(f64::NAN))
}

/// Adds `file` as a public image of the server's data directory; its id.
fn add_image(exe: &Path, data: &Path, file: &Path, name: &str) -> anyhow::Result<String> {
    let out = Command::new(exe)
        .args(["public-image", "add"])
        .arg(file)
        .args(["--name", name, "--os-name", name, "--platform", "Linux", "--format", "raw", "--data-dir"])
        .arg(data)
        .output()?;
    if !out.status.success() {
        bail!("public-image add: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice::<Value>(&out.stdout)?["ImageId"].as_str().context("ImageId")?.to_owned())
}

/// One boot of `image` (its disk `file`) that powers off from `UserData`, `runs` times each
/// way (through `RunInstances`, and by hand); prints the medians.
fn boot_figures(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    what: &str,
    image: &str,
    file: &Path,
    runs: usize,
    work: &Path,
) -> anyhow::Result<()> {
    let accel = std::env::var("IMAGED_ACCEL").unwrap_or_default();
    let (mut first, mut off, mut hand_first, mut hand_off) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (f, o) = by_hand(work, file, &accel, POWER_OFF)?;
        hand_first.push(f);
        hand_off.push(o);
        rt.block_on(async {
            let t0 = Instant::now();
            let ids = launch(c, image, 1, Some(POWER_OFF)).await?;
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
        "one {what} boot ({accel}): first console line {first:.2} s, power-off (STOPPED) {off:.2} s = {:.2}x QEMU started by hand on the same disk and seed ({hand_first:.2} s / {hand_off:.2} s)",
        off / hand_off
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let work = tempfile::tempdir_in(std::env::var("IMAGED_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))?;
    let accel = std::env::var("IMAGED_ACCEL").unwrap_or_else(|_| "tcg".into());
    std::env::set_var("IMAGED_ACCEL", &accel);
    std::env::set_var("IMAGED_HYPERVISOR", "qemu");
    let exe = std::env::current_exe()?.with_file_name("imaged");
    let image = work.path().join("tiny.raw");
    println!("tiny image built in {:.2} s", build(&exe, "build-tiny", &image, &[])?);
    // The full Debian image when debootstrap is there (IMAGED_BENCH_DEBIAN=0 skips it).
    let debian_file = work.path().join("debian.raw");
    let with_debian = std::env::var("IMAGED_BENCH_DEBIAN").map_or(true, |v| v != "0")
        && std::path::Path::new("/usr/sbin/debootstrap").exists();
    if with_debian {
        let secs = build(&exe, "build-debian", &debian_file, &["--cache", "/var/tmp/imaged-debian-cache"])?;
        println!("Debian image (cloud-init) built in {secs:.0} s");
    }

    let data = work.path().join("data");
    let server =
        BenchServer::start(&data, "[vm]\nmax_memory_mib = 512\nsoft_stop_secs = 30\n[workers]\ninstance = 4\n")?;
    let tiny = add_image(&exe, &data, &image, "tiny")?;
    let c = &server.client;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    boot_figures(&rt, c, "tiny", &tiny, &image, 3, work.path())?;
    if with_debian {
        let debian = add_image(&exe, &data, &debian_file, "debian")?;
        boot_figures(&rt, c, "Debian (systemd, cloud-init)", &debian, &debian_file, 1, work.path())?;
    }

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

    // Two guests write 24 MiB of new data each; one is captured running, the other stopped.
    let (live, stopped) = rt.block_on(async {
        let t0 = Instant::now();
        let ids = launch(c, &tiny, 2, Some(WRITE_24_MIB)).await?;
        wait_console(c, &ids, "WROTE", t0).await?;
        c.call("StopInstances", &json!({"InstanceIds": [ids[1]], "StopType": "HARD"})).await?;
        wait_state(c, &ids[1], "STOPPED").await?;
        let live = capture(c, &ids[0], "live").await?;
        wait_state(c, &ids[0], "RUNNING").await?;
        let stopped = capture(c, &ids[1], "stopped").await?;
        c.call("TerminateInstances", &json!({"InstanceIds": ids})).await?;
        anyhow::Ok((live, stopped))
    })?;
    println!(
        "CreateImage of a running guest (flushed, paused, read, resumed) after it wrote 24 MiB: {live:.2} s = {:.2}x the same capture of a stopped one ({stopped:.2} s)",
        live / stopped
    );
    Ok(())
}
