//! Guests' view of instance disks for the end-to-end tests: files written into and read from
//! the ext4 filesystem of an instance's qcow2 disk (debugfs on a raw copy, changed clusters
//! written back with qemu-io), and SDK snippets with polling helpers.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Creds, Server};

/// The partition of the demo disks starts at 1 MiB; their filesystem lies in the first 32 MiB.
const FS_OFFSET: u64 = 1 << 20;
const FS_END: u64 = 32 << 20;
/// qcow2 clusters of the overlays.
const CLUSTER: u64 = 64 << 10;
pub const PUBLIC_IMAGE: &str = "img-9qabwvbn";

/// Python helpers for the snippets: polling until instances or images settle.
const PY: &str = r#"
def settle_instances(c, ids, timeout=90):
    deadline = time.time() + timeout
    while True:
        r = call(c, "DescribeInstances", {"InstanceIds": ids, "Limit": 100})
        s = r["ok"]["InstanceSet"]
        if len(s) == len(ids) and all(i["LatestOperationState"] != "OPERATING" for i in s):
            return {i["InstanceId"]: i for i in s}
        if time.time() > deadline:
            raise Exception("instances did not settle: %s" % s)
        time.sleep(0.1)

def settle_image(c, image_id, timeout=90):
    deadline = time.time() + timeout
    while True:
        r = call(c, "DescribeImages", {"ImageIds": [image_id]})
        img = r["ok"]["ImageSet"][0]
        if img["ImageState"] not in ("CREATING", "IMPORTING"):
            return img
        if time.time() > deadline:
            raise Exception("image did not settle: %s" % img)
        time.sleep(0.1)

def settle_sync(c, image_id, timeout=90):
    deadline = time.time() + timeout
    seen = set()
    while True:
        img = call(c, "DescribeImages", {"ImageIds": [image_id]})["ok"]["ImageSet"][0]
        seen.add((img["ImageState"], img["SyncPercent"]))
        if img["ImageState"] != "SYNCING":
            return {"image": img, "seen": sorted(seen, key=str)}
        if time.time() > deadline:
            raise Exception("copy did not end: %s" % img)
        time.sleep(0.05)

def settle_gone(c, ids, timeout=90):
    deadline = time.time() + timeout
    while True:
        s = call(c, "DescribeInstances", {"InstanceIds": ids, "Limit": 100})["ok"]["InstanceSet"]
        if not s:
            return True
        if time.time() > deadline:
            raise Exception("instances were not terminated: %s" % s)
        time.sleep(0.1)

def run(c, image, count=1, name="vm", zone="ap-guangzhou-3"):
    r = call(c, "RunInstances", {"Placement": {"Zone": zone}, "ImageId": image, "InstanceCount": count,
                                 "InstanceName": name})
    if "error" in r:
        return r
    ids = r["ok"]["InstanceIdSet"]
    return {"ids": ids, "instances": settle_instances(c, ids)}
"#;

/// Runs an SDK snippet with the polling helpers in scope.
pub fn sdk(server: &Server, creds: &Creds, snippet: &str) -> Value {
    server.python(creds, &format!("{PY}\n{snippet}"))
}

/// Runs a tool, failing the test with its stderr.
pub fn tool(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `imaged instance disk ID`: the overlay's path (and that it is a qcow2).
pub fn disk_of(server: &Server, id: &str) -> PathBuf {
    let out = server.cli(&["instance", "disk", id]);
    assert!(out.status.success(), "instance disk: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("disk json");
    assert_eq!(v["format"], "qcow2");
    PathBuf::from(v["path"].as_str().expect("path"))
}

/// The first 32 MiB of a disk as a raw file (qemu-img reads through the overlay's backing).
fn filesystem_region(disk: &Path, dest: &Path) {
    let (d, o) = (disk.to_string_lossy(), dest.to_string_lossy());
    tool("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", &d, &o]);
    std::fs::OpenOptions::new().write(true).open(dest).expect("open").set_len(FS_END).expect("truncate");
}

/// Writes `content` as the file `name` into the ext4 filesystem of an instance's disk, as a
/// guest would: debugfs edits a raw copy, and only the clusters that changed are written into
/// the overlay with qemu-io.
pub fn write_file(disk: &Path, name: &str, content: &str, work: &Path) {
    let before = work.join("before.raw");
    filesystem_region(disk, &before);
    let after = work.join("after.raw");
    std::fs::copy(&before, &after).expect("copy");
    let src = work.join("content.txt");
    std::fs::write(&src, content).expect("content");
    let target = format!("{}?offset={FS_OFFSET}", after.display());
    tool("debugfs", &["-w", &target, "-R", &format!("write {} {name}", src.display())]);
    let (old, new) = (std::fs::read(&before).expect("before"), std::fs::read(&after).expect("after"));
    let mut commands = Vec::new();
    for (n, (a, b)) in old.chunks(CLUSTER as usize).zip(new.chunks(CLUSTER as usize)).enumerate() {
        if a != b {
            let chunk = work.join(format!("cluster-{n}"));
            std::fs::write(&chunk, b).expect("chunk");
            commands.push(format!("write -q -s {} {} {}", chunk.display(), n as u64 * CLUSTER, b.len()));
        }
    }
    assert!(!commands.is_empty(), "debugfs changed nothing");
    let mut args = vec!["-f".to_owned(), "qcow2".to_owned()];
    for c in commands {
        args.extend(["-c".to_owned(), c]);
    }
    args.push(disk.to_string_lossy().into_owned());
    tool("qemu-io", &args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The file `name` in the filesystem of an instance's disk, if it is there.
pub fn read_file(disk: &Path, name: &str, work: &Path) -> Option<String> {
    let raw = work.join("read.raw");
    filesystem_region(disk, &raw);
    let target = format!("{}?offset={FS_OFFSET}", raw.display());
    let out = Command::new("debugfs").args([&target, "-R", &format!("cat {name}")]).output().expect("debugfs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let missing = String::from_utf8_lossy(&out.stderr).contains("not found");
    (!missing && out.status.success()).then_some(text)
}
