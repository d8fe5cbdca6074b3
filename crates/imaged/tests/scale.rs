//! Several servers, one deployment: three `imaged serve` processes on one PostgreSQL schema and
//! one S3 server (`IMAGED_TEST_S3_URL`, started by `.ci/run`), each with its own data directory
//! and host id. Exactly one administrator is made when they start together on an empty
//! database; an upload begun through one is continued through another and imported through the
//! third; an export is written into the shared bucket and downloaded; 60 simultaneous SHAREs
//! spread over the three leave exactly 50; an instance's disk and operations stay on the host
//! that launched it; a server killed mid-import or mid-copy leaves its
//! jobs to the others, and fsck finds every block, with nothing NORMAL that lacks one.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::guest::{sdk, PUBLIC_IMAGE};
use support::{Creds, Server};

/// The S3 location tests may use, or `None` (said on stderr).
fn s3_url() -> Option<String> {
    let url = std::env::var("IMAGED_TEST_S3_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("IMAGED_TEST_S3_URL is not set: skipping the scale-out tests");
    }
    url
}

fn client(server: &Server, creds: &Creds, args: &[&str]) -> Output {
    support::imaged_client(server, creds, args)
}

fn ok_json(out: &Output, what: &str) -> Value {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} printed no JSON: {e}"))
}

/// A disk of `mib` MiB: pseudo-random blocks with zero runs between them.
fn disk(dir: &Path, name: &str, mib: usize, seed: u64) -> std::path::PathBuf {
    let mut state = seed | 1;
    let mut bytes = vec![0u8; mib << 20];
    for (i, chunk) in bytes.chunks_mut(1 << 20).enumerate() {
        if i % 3 == 2 {
            continue;
        }
        for b in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("disk");
    path
}

fn state_of(server: &Server, creds: &Creds, id: &str) -> Value {
    let r = server.python(creds, &format!(r#"result = call(client(), "DescribeImages", {{"ImageIds": ["{id}"]}})"#));
    r["ok"]["ImageSet"][0].clone()
}

fn wait_normal(server: &Server, creds: &Creds, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let img = state_of(server, creds, id);
        if img["ImageState"] == "NORMAL" {
            return img;
        }
        assert!(
            matches!(img["ImageState"].as_str(), Some("IMPORTING" | "CREATING" | "SYNCING")),
            "image {id} failed: {img}"
        );
        assert!(Instant::now() < deadline, "image {id} never became NORMAL: {img}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn import(server: &Server, creds: &Creds, url: &str, name: &str) -> String {
    let r = server.python(
        creds,
        &format!(
            r#"result = call(client(), "ImportImage", {{"ImageUrl": "{url}", "ImageName": "{name}",
                "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64", "ImageFormat": "RAW"}})"#
        ),
    );
    r["ok"]["ImageId"].as_str().unwrap_or_else(|| panic!("ImportImage: {r}")).to_owned()
}

#[test]
fn three_servers_on_one_database_and_one_object_store_act_as_one_service() {
    let Some(s3) = s3_url() else { return };
    let t0 = Instant::now();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let prefix = format!("scale-{}-{nanos}", std::process::id());
    let storage = format!("{s3}/{prefix}/blocks");
    let bucket = format!("{s3}/{prefix}/exports");
    let env = [
        ("IMAGED_STORAGE_URL", storage.as_str()),
        ("IMAGED_EXPORT_BUCKET", bucket.as_str()),
        ("IMAGED_JOB_LEASE_SECS", "2"),
    ];
    let Some((mut servers, _shared)) = Server::cluster("scale", &["host-a", "host-b", "host-c"], &env) else { return };

    // Started together on an empty database: exactly one administrator, announced once.
    let written = servers.iter().filter(|s| s.dir.path().join("credentials.json").exists()).count();
    assert_eq!(written, 1, "one server wrote the administrator's credentials");
    let accounts = servers[1].cli_json(&["account", "list"]);
    let admins = accounts.as_array().expect("accounts").iter().filter(|a| a["role"] == "admin").count();
    assert_eq!(admins, 1, "{accounts}");

    eprintln!("scale: started after {:?}", t0.elapsed());
    let owner = servers[0].create_account("owner");
    let work = tempfile::tempdir().expect("tempdir");
    let file = disk(work.path(), "disk.raw", 12, 7);

    // Begun through A (5 MiB arrive), continued through B, imported through C.
    let part = work.path().join("part.raw");
    std::fs::write(&part, &std::fs::read(&file).expect("read")[..5 << 20]).expect("part");
    let begun = ok_json(&client(&servers[0], &owner, &["upload", &part.to_string_lossy()]), "upload via A");
    let id = begun["UploadId"].as_str().expect("upload id").to_owned();
    let resumed = client(&servers[1], &owner, &["upload", &file.to_string_lossy(), "--resume", &id]);
    ok_json(&resumed, "upload resumed via B");
    eprintln!("scale: uploaded after {:?}", t0.elapsed());
    let image = import(&servers[2], &owner, &format!("upload://{id}"), "spread");
    let img = wait_normal(&servers[0], &owner, &image);
    assert_eq!(img["ImageSize"], 1, "{img}");

    // Exported into the shared bucket and downloaded, whole, from another server than the one
    // asked: every server reads the bucket.
    eprintln!("scale: imported after {:?}", t0.elapsed());
    let back = work.path().join("back.raw");
    let export =
        client(&servers[2], &owner, &["export", &image, "--format", "raw", "--output", &back.to_string_lossy()]);
    assert!(export.status.success(), "export via C: {}", String::from_utf8_lossy(&export.stderr));
    assert!(std::fs::read(&back).expect("back") == std::fs::read(&file).expect("file"), "the export is the disk");

    // 60 SHAREs at once, 20 through each server: exactly 50 land.
    eprintln!("scale: exported after {:?}", t0.elapsed());
    let fans: Vec<String> = (0..60).map(|n| servers[n % 3].create_account(&format!("fan-{n}")).account_id).collect();
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let runs: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(n, server)| {
                let mine: Vec<&String> = fans.iter().skip(n).step_by(3).collect();
                let (owner, image) = (&owner, &image);
                scope.spawn(move || {
                    server.python(
                        owner,
                        &format!(
                            r#"from concurrent.futures import ThreadPoolExecutor
def share(a):
    return call(client(), "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": [a], "Permission": "SHARE"}})
with ThreadPoolExecutor(max_workers=20) as pool:
    result = list(pool.map(share, {mine:?}))"#
                        ),
                    )
                })
            })
            .collect();
        runs.into_iter().flat_map(|r| r.join().expect("python").as_array().cloned().unwrap_or_default()).collect()
    });
    let landed = answers.iter().filter(|a| a.get("ok").is_some()).count();
    let refused: Vec<&Value> = answers.iter().filter_map(|a| a.get("error")).collect();
    assert_eq!((landed, refused.len()), (50, 10), "{answers:?}");
    assert!(refused.iter().all(|e| *e == "OverQuota"), "{refused:?}");

    // A dies (SIGKILL) with imports in flight: the others take its jobs over after the lease.
    eprintln!("scale: shared after {:?}", t0.elapsed());

    // An instance lives on the host that launched it: launched through C, stopped through A,
    // its disk is in C's data directory only, and DescribeInstances names C wherever asked.
    let r = sdk(&servers[2], &owner, &format!(r#"result = run(client(), "{PUBLIC_IMAGE}", name="pinned")"#));
    let vm = r["ids"][0].as_str().unwrap_or_else(|| panic!("RunInstances: {r}")).to_owned();
    let r = sdk(
        &servers[0],
        &owner,
        &format!(
            r#"c = client()
stop = call(c, "StopInstances", {{"InstanceIds": ["{vm}"]}})
result = {{"stop": stop, "after": settle_instances(c, ["{vm}"])["{vm}"]}}"#
        ),
    );
    assert!(r["stop"]["ok"].is_object(), "{r}");
    assert_eq!(
        (r["after"]["InstanceState"].as_str(), r["after"]["LatestOperationState"].as_str()),
        (Some("STOPPED"), Some("SUCCESS")),
        "{r}"
    );
    assert_eq!(r["after"]["Placement"]["HostId"], "host-c", "{r}");
    assert!(servers[2].dir.path().join("instances").join(&vm).join("system.qcow2").exists(), "the disk is on C");
    assert!(!servers[0].dir.path().join("instances").join(&vm).exists(), "and nowhere else");
    eprintln!("scale: pinned after {:?}", t0.elapsed());
    let big = disk(work.path(), "big.raw", 64, 11);
    let imports: Vec<String> = (0..3)
        .map(|n| {
            let url = ok_json(&client(&servers[1], &owner, &["upload", &big.to_string_lossy()]), "upload via B");
            import(&servers[0], &owner, url["ImageUrl"].as_str().expect("url"), &format!("orphan-{n}"))
        })
        .collect();
    eprintln!("scale: imports queued after {:?}", t0.elapsed());
    servers[0].kill();
    for id in &imports {
        let img = wait_normal(&servers[2], &owner, id);
        assert_eq!(img["ImageSize"], 1, "{img}");
    }
    eprintln!("scale: taken over after {:?}", t0.elapsed());

    // B dies with a copy to another region in flight: C finishes it.
    let r = servers[1].python(
        &owner,
        &format!(
            r#"result = call(client(), "SyncImages", {{"ImageIds": ["{}"], "DestinationRegions": ["ap-shanghai"], "ImageSetRequired": True}})"#,
            imports[0]
        ),
    );
    let copy = r["ok"]["ImageSet"][0]["ImageId"].as_str().unwrap_or_else(|| panic!("SyncImages: {r}")).to_owned();
    servers[1].kill();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = servers[2].python(
            &owner,
            &format!(r#"result = call(client("ap-shanghai"), "DescribeImages", {{"ImageIds": ["{copy}"]}})"#),
        );
        let state = r["ok"]["ImageSet"][0]["ImageState"].clone();
        if state == "NORMAL" {
            break;
        }
        assert!(state == "CREATING" && Instant::now() < deadline, "the copy never completed: {r}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(state_of(&servers[2], &owner, &imports[0])["ImageState"], "NORMAL", "the source is NORMAL again");
    eprintln!("scale: copied after {:?}", t0.elapsed());
    let fsck = servers[2].cli_json(&["fsck"]);
    for report in fsck.as_array().expect("reports") {
        assert!(report["bad_blocks"].as_array().is_some_and(Vec::is_empty), "{fsck}");
    }
    let checked: u64 = fsck.as_array().expect("reports").iter().filter_map(|r| r["checked_blocks"].as_u64()).sum();
    assert!(checked >= 8 + 43, "fsck read the S3 store: {fsck}");
    let regions: Vec<&str> = fsck.as_array().expect("reports").iter().filter_map(|r| r["region"].as_str()).collect();
    assert!(regions.contains(&"ap-shanghai"), "the copy's region holds its blocks: {regions:?}");
}
