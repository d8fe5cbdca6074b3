//! Shared pieces of the benchmark binaries: test images, a server on port 0, timing, and
//! sizes on disk. Benchmarks are never run in CI.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::client::Client;

/// A mebibyte.
pub const MIB: u64 = 1 << 20;

/// Runs `f` and returns how long it took, in seconds.
pub fn timed(label: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f().with_context(|| label.to_owned())?;
    Ok(t.elapsed().as_secs_f64())
}

/// Runs a command, failing with its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Writes a `gib` GiB raw image that is half random data and half zeros (64 MiB runs of each).
pub fn make_image(path: &Path, gib: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let run_len = 64usize << 20;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut random = vec![0u8; run_len];
    let zeros = vec![0u8; run_len];
    for i in 0..(gib << 30) / run_len as u64 {
        if i % 2 == 0 {
            fill_random(&mut random, &mut state);
            f.write_all(&random)?;
        } else {
            f.write_all(&zeros)?;
        }
    }
    f.flush()?;
    Ok(())
}

/// Fills `buf` with xorshift noise (incompressible) from `state`.
pub fn fill_random(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_exact_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes());
    }
}

/// Apparent bytes of the files under `p`.
pub fn dir_bytes(p: &Path) -> u64 {
    walk(p, &|m| m.len())
}

/// Bytes the files under `p` occupy on disk (sparse holes are not counted).
pub fn disk_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walk(p, &|m| m.blocks() * 512)
}

fn walk(p: &Path, size: &dyn Fn(&std::fs::Metadata) -> u64) -> u64 {
    std::fs::read_dir(p).map_or(0, |d| {
        d.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path(), size),
                Ok(m) => size(&m),
                Err(_) => 0,
            })
            .sum()
    })
}

/// A memory figure of a process from `/proc/PID/status` (`VmHWM`, `VmRSS`…), MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Peak resident memory of a process, MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM")
}

/// The processes holding a file open under the data directory `data`'s `instances/`: the QEMU
/// guests of its instances (and, for a moment, a server reading a disk).
pub fn guest_pids(data: &Path) -> Vec<u32> {
    let Ok(root) = std::fs::canonicalize(data.join("instances")) else { return Vec::new() };
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let holds_a_disk = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .is_ok_and(|fds| fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&root))))
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| holds_a_disk(*pid))
        .collect()
}

/// A server for a benchmark, killed on drop.
pub struct BenchServer {
    /// The `imaged serve` process.
    pub child: Child,
    /// The `imaged` executable beside the benchmark.
    pub exe: std::path::PathBuf,
    /// A client signed as the administrator (the credentials are also set in the environment
    /// for `imaged` client commands).
    pub client: Client,
}

impl BenchServer {
    /// Starts `imaged serve` on port 0 over `data` with `config` as its config file.
    pub fn start(data: &Path, config: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data)?;
        std::fs::write(data.join("imaged.toml"), config)?;
        let exe = std::env::current_exe()?.with_file_name("imaged");
        let mut child = Command::new(&exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("IMAGED_LOG", std::env::var("IMAGED_LOG").unwrap_or_else(|_| "warn".into()))
            // Benchmarks of the data plane run no guests unless they ask (imaged-bench-boot).
            .env("IMAGED_HYPERVISOR", std::env::var("IMAGED_HYPERVISOR").unwrap_or_else(|_| "none".into()))
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
        Ok(Self { child, exe, client: Client::from_env(None, None)? })
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `DescribeImages` until the image is NORMAL.
pub async fn wait_normal(c: &Client, id: &str) -> anyhow::Result<()> {
    loop {
        let r = c.call("DescribeImages", &json!({"ImageIds": [id]})).await?;
        match r["ImageSet"][0]["ImageState"].as_str() {
            Some("NORMAL") => return Ok(()),
            Some("IMPORTFAILED" | "CREATEFAILED") => bail!("image failed: {}", r["ImageSet"][0]["FailureReason"]),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Polls `DescribeInstances` until every instance's launch succeeded.
pub async fn wait_running(c: &Client, ids: &[String]) -> anyhow::Result<()> {
    loop {
        let r = c.call("DescribeInstances", &json!({"InstanceIds": ids, "Limit": 100})).await?;
        let set = r["InstanceSet"].as_array().context("InstanceSet")?;
        if let Some(failed) = set.iter().find(|i| i["InstanceState"] == "LAUNCH_FAILED") {
            bail!("launch failed: {failed}");
        }
        if set.len() == ids.len() && set.iter().all(|i| i["LatestOperationState"] == "SUCCESS") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Changes 1% of a `gib` GiB instance disk (a qcow2 overlay) as a guest would: whole MiB of
/// random data spread evenly over the disk, written with qemu-io. Returns the bytes changed.
pub fn change_one_percent(disk: &Path, gib: u64, work: &Path) -> anyhow::Result<u64> {
    let blocks = (gib << 10) / 100 + 1;
    let stride = (gib << 10) / blocks;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut args = vec!["-f".to_owned(), "qcow2".to_owned()];
    for k in 0..blocks {
        let chunk = work.join(format!("chunk-{k}"));
        let mut buf = vec![0u8; MIB as usize];
        fill_random(&mut buf, &mut state);
        std::fs::write(&chunk, &buf)?;
        args.extend(["-c".to_owned(), format!("write -q -s {} {} {MIB}", chunk.display(), k * stride * MIB)]);
    }
    args.push(disk.to_string_lossy().into_owned());
    run(Command::new("qemu-io").args(&args))?;
    Ok(blocks * MIB)
}

/// Imports `file` (a raw disk in the server's import directory) as `name` through a `file://`
/// URL and waits until it is NORMAL; returns its id.
pub async fn import_raw(c: &Client, file: &Path, name: &str) -> anyhow::Result<String> {
    let r = c
        .call(
            "ImportImage",
            &json!({"ImageUrl": format!("file://{}", file.display()), "ImageName": name,
                "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64", "ImageFormat": "raw"}),
        )
        .await?;
    let id = r["ImageId"].as_str().context("ImageId")?.to_owned();
    wait_normal(c, &id).await.map(|()| id)
}

/// The start every image benchmark shares: a work directory (`IMAGED_BENCH_DIR`, else /tmp),
/// a SIZE_GIB (first argument, default 4) image in it, half random data and half zeros, and a
/// server whose import directory it is.
pub struct Bench {
    /// The image's size, GiB.
    pub gib: u64,
    /// The raw image.
    pub raw: std::path::PathBuf,
    /// The server's data directory.
    pub data: std::path::PathBuf,
    /// The server.
    pub server: BenchServer,
    /// Removed on drop, after the server (fields drop in order).
    pub work: tempfile::TempDir,
}

impl Bench {
    /// Builds the image and starts the server with `config` appended to its config file.
    pub fn start(config: &str) -> anyhow::Result<Self> {
        let gib: u64 = std::env::args().nth(1).map_or(Ok(4), |s| s.parse())?;
        let work = tempfile::tempdir_in(std::env::var("IMAGED_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))?;
        let raw = work.path().join("disk.raw");
        eprintln!("building a {gib} GiB image (half random, half zeros)…");
        make_image(&raw, gib)?;
        let data = work.path().join("data");
        let server = BenchServer::start(&data, &format!("import_dir = \"{}\"\n{config}", work.path().display()))?;
        Ok(Self { gib, raw, data, server, work })
    }
}
