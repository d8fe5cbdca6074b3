//! End to end for sharing and cross-region copy, through the official Python SDK: an isolation
//! matrix (each image action as owner, recipient, stranger and owner in another region), the
//! share limit under 60 concurrent SHAREs, cancelling, copy then launch in the destination, a
//! copy of a derived image moving only the difference, and a crash in the middle of a copy.

mod support;

use serde_json::Value;
use support::guest::{disk_of, read_file, sdk, write_file, PUBLIC_IMAGE};
use support::{Backend, Creds, Server};

/// An owner's custom image in ap-guangzhou holding `/etc/motd` = "golden\n", captured from a
/// running instance; returns (image, instance).
fn golden_image(server: &Server, owner: &Creds, work: &std::path::Path) -> (String, String) {
    let r = sdk(server, owner, &format!(r#"result = run(client(), "{PUBLIC_IMAGE}")"#));
    let instance = r["ids"][0].as_str().expect("instance").to_owned();
    write_file(&disk_of(server, &instance), "/etc/motd", "golden\n", work);
    let r = sdk(
        server,
        owner,
        &format!(
            r#"c = client()
img = call(c, "CreateImage", {{"InstanceId": "{instance}", "ImageName": "golden"}})["ok"]["ImageId"]
settle_instances(c, ["{instance}"])
result = settle_image(c, img)"#
        ),
    );
    assert_eq!(r["ImageState"], "NORMAL", "{r}");
    (r["ImageId"].as_str().expect("image").to_owned(), instance)
}

/// Runs the same checks as each caller and returns their answers by caller.
fn as_each(server: &Server, callers: &[(&str, &Creds, &str)], body: &str) -> Value {
    let mut out = serde_json::Map::new();
    for (label, creds, region) in callers {
        let r = sdk(server, creds, &format!("c = client(\"{region}\")\nzone = \"{region}-3\" if \"{region}\" == \"ap-guangzhou\" else \"{region}-2\"\n{body}"));
        out.insert((*label).to_owned(), r);
    }
    Value::Object(out)
}

fn code(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("ok")
}

#[test]
fn each_image_action_is_allowed_or_refused_by_who_asks_and_where() {
    let server = Server::start(Backend::Sqlite, "isolation").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let owner = server.create_account("owner");
    let recipient = server.create_account("recipient");
    let stranger = server.create_account("stranger");
    let extra = server.create_account("extra");
    let (image, _) = golden_image(&server, &owner, work.path());
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"result = call(client(), "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": ["{}"], "Permission": "SHARE"}})"#,
            recipient.account_id
        ),
    );
    assert!(r["ok"].is_object(), "{r}");

    let callers = [
        ("owner", &owner, "ap-guangzhou"),
        ("recipient", &recipient, "ap-guangzhou"),
        ("stranger", &stranger, "ap-guangzhou"),
        ("elsewhere", &owner, "ap-shanghai"),
    ];
    let m = as_each(
        &server,
        &callers,
        &format!(
            r#"out = {{}}
d = call(c, "DescribeImages", {{"ImageIds": ["{image}"]}})
out["describe"] = d["ok"]["ImageSet"]
r = call(c, "RunInstances", {{"Placement": {{"Zone": zone}}, "ImageId": "{image}"}})
out["launch"] = r
if "ok" in r:
    out["launched"] = settle_instances(c, r["ok"]["InstanceIdSet"])
out["modify"] = call(c, "ModifyImageAttribute", {{"ImageId": "{image}", "ImageDescription": "mine now"}})
out["sync"] = call(c, "SyncImages", {{"ImageIds": ["{image}"], "DestinationRegions": ["ap-beijing"], "DryRun": True}})
out["reshare"] = call(c, "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": ["{extra}"], "Permission": "SHARE"}})
out["permissions"] = call(c, "DescribeImageSharePermission", {{"ImageId": "{image}"}})
out["delete"] = call(c, "DeleteImages", {{"ImageIds": ["{image}"]}})
out["export"] = call(c, "ExportImages", {{"BucketName": "exports", "ImageIds": ["{image}"]}})
result = out"#,
            extra = extra.account_id
        ),
    );
    let row = |action: &str| -> Vec<String> {
        ["owner", "recipient", "stranger", "elsewhere"].iter().map(|who| code(&m[*who][action]).to_owned()).collect()
    };
    assert_eq!(row("launch"), ["ok", "ok", "InvalidImageId.NotFound", "InvalidImageId.NotFound"], "{m}");
    assert_eq!(
        row("modify"),
        [
            "ok",
            "UnsupportedOperation.SharedImageModifyUnsupported",
            "InvalidImageId.NotFound",
            "InvalidImageId.NotFound"
        ]
    );
    assert_eq!(
        row("sync"),
        ["ok", "InvalidParameterValue.InvalidImageId", "InvalidImageId.NotFound", "InvalidImageId.NotFound"]
    );
    assert_eq!(
        row("reshare"),
        ["ok", "UnauthorizedOperation.ImageNotBelongToAccount", "InvalidImageId.NotFound", "InvalidImageId.NotFound"]
    );
    assert_eq!(
        row("permissions"),
        ["ok", "UnauthorizedOperation.ImageNotBelongToAccount", "InvalidImageId.NotFound", "InvalidImageId.NotFound"]
    );
    assert_eq!(
        row("delete"),
        [
            "InvalidImageId.InShared",
            "InvalidParameterValue.InvalidImageIdIsShared",
            "InvalidImageId.NotFound",
            "InvalidImageId.NotFound"
        ]
    );
    assert_eq!(
        row("export"),
        [
            "ok",
            "UnsupportedOperation.SharedImageExportUnsupported",
            "InvalidImageId.NotFound",
            "InvalidImageId.NotFound"
        ]
    );
    // What each sees of the image: its own, a shared image with its origin and the seeds'
    // warning (not reviewed), or nothing.
    assert_eq!(m["owner"]["describe"][0]["ImageType"], "PRIVATE_IMAGE");
    let shared = &m["recipient"]["describe"][0];
    assert_eq!(shared["ImageType"], "SHARED_IMAGE");
    assert_eq!(shared["SharedByAccountId"], owner.account_id.as_str());
    assert_eq!(shared["Reviewed"], false);
    assert!(m["stranger"]["describe"].as_array().is_some_and(Vec::is_empty));
    assert!(m["elsewhere"]["describe"].as_array().is_some_and(Vec::is_empty));
    let accounts: Vec<&str> = m["owner"]["permissions"]["ok"]["SharePermissionSet"]
        .as_array()
        .expect("set")
        .iter()
        .map(|p| p["AccountId"].as_str().expect("account"))
        .collect();
    assert_eq!(accounts, [recipient.account_id.as_str(), extra.account_id.as_str()]);

    // The recipient's instance has the owner's file, and the recipient can back it up.
    let theirs = m["recipient"]["launch"]["ok"]["InstanceIdSet"][0].as_str().expect("instance").to_owned();
    let disk = disk_of(&server, &theirs);
    assert_eq!(read_file(&disk, "/etc/motd", work.path()).as_deref(), Some("golden\n"));
    let r = sdk(
        &server,
        &recipient,
        &format!(
            r#"c = client()
img = call(c, "CreateImage", {{"InstanceId": "{theirs}", "ImageName": "my-copy"}})["ok"]["ImageId"]
result = settle_image(c, img)"#
        ),
    );
    assert_eq!((r["ImageState"].as_str(), r["ImageType"].as_str()), (Some("NORMAL"), Some("PRIVATE_IMAGE")), "{r}");
    let r = sdk(
        &server,
        &recipient,
        &format!(
            r#"c = client()
r = call(c, "ResetInstance", {{"InstanceId": "{theirs}", "ImageId": "{image}"}})
result = {{"reset": r, "instance": settle_instances(c, ["{theirs}"])["{theirs}"]}}"#
        ),
    );
    assert!(r["reset"]["ok"].is_object(), "a recipient may reinstall from the shared image: {r}");
    assert_eq!(r["instance"]["LatestOperationState"], "SUCCESS");

    // Cancelling stops new launches at once; the instance already launched keeps its disk.
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"c = client()
out = {{}}
out["cancel"] = call(c, "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": ["{}", "{}"], "Permission": "CANCEL"}})
out["permissions"] = call(c, "DescribeImageSharePermission", {{"ImageId": "{image}"}})
result = out"#,
            recipient.account_id, extra.account_id
        ),
    );
    assert!(r["cancel"]["ok"].is_object(), "{r}");
    assert!(r["permissions"]["ok"]["SharePermissionSet"].as_array().is_some_and(Vec::is_empty));
    let r = sdk(
        &server,
        &recipient,
        &format!(
            r#"c = client()
result = {{"launch": call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{image}"}}),
          "reset": call(c, "ResetInstance", {{"InstanceId": "{theirs}", "ImageId": "{image}"}}),
          "seen": call(c, "DescribeImages", {{"ImageIds": ["{image}"]}})["ok"]["TotalCount"]}}"#
        ),
    );
    assert_eq!(code(&r["launch"]), "InvalidImageId.NotFound", "{r}");
    assert_eq!(code(&r["reset"]), "InvalidImageId.NotFound");
    assert_eq!(r["seen"], 0);
    assert_eq!(read_file(&disk, "/etc/motd", work.path()).as_deref(), Some("golden\n"));
    let r = sdk(&server, &owner, &format!(r#"result = call(client(), "DeleteImages", {{"ImageIds": ["{image}"]}})"#));
    assert!(r["ok"].is_object(), "deleting works once nothing is shared: {r}");
}

fn share_limit(backend: Backend, test: &str) {
    let Some(server) = Server::start(backend, test) else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let owner = server.create_account("popular");
    let (image, _) = golden_image(&server, &owner, work.path());
    let accounts: Vec<String> = (0..60).map(|n| server.create_account(&format!("fan-{n}")).account_id).collect();
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"from concurrent.futures import ThreadPoolExecutor
accounts = {accounts:?}
def share(a):
    return call(client(), "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": [a], "Permission": "SHARE"}})
with ThreadPoolExecutor(max_workers=60) as pool:
    answers = list(pool.map(share, accounts))
c = client()
out = {{"errors": [a.get("error") for a in answers if "error" in a], "ok": sum(1 for a in answers if "ok" in a)}}
out["listed"] = len(call(c, "DescribeImageSharePermission", {{"ImageId": "{image}"}})["ok"]["SharePermissionSet"])
shared = [a for a, r in zip(accounts, answers) if "ok" in r]
out["again"] = call(c, "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": [shared[0]], "Permission": "SHARE"}})
out["self"] = call(c, "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": ["{me}"], "Permission": "SHARE"}})
out["nobody"] = call(c, "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": ["999999999999"], "Permission": "SHARE"}})
out["permission"] = call(c, "ModifyImageSharePermission", {{"ImageId": "{image}", "AccountIds": [shared[0]], "Permission": "MAYBE"}})
result = out"#,
            me = owner.account_id
        ),
    );
    assert_eq!(r["ok"], 50, "{r}");
    let errors = r["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 10);
    assert!(errors.iter().all(|e| e == "OverQuota"), "{errors:?}");
    assert_eq!(r["listed"], 50);
    assert_eq!(code(&r["again"]), "FailedOperation.AccountAlreadyExists");
    assert_eq!(code(&r["self"]), "FailedOperation.AccountIsYourSelf");
    assert_eq!(code(&r["nobody"]), "InvalidAccountId.NotFound");
    assert_eq!(code(&r["permission"]), "InvalidParameterValue");

    // A bring-your-own-licence image cannot be shared.
    let raw = work.path().join("byol.raw");
    std::fs::write(&raw, vec![0x5a_u8; 2 << 20]).expect("raw");
    let upload = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["upload", &raw.to_string_lossy()])
        .env("IMAGED_ENDPOINT", format!("http://{}", server.addr))
        .env("TENCENTCLOUD_SECRET_ID", &owner.secret_id)
        .env("TENCENTCLOUD_SECRET_KEY", &owner.secret_key)
        .env("TENCENTCLOUD_REGION", "ap-guangzhou")
        .output()
        .expect("imaged upload");
    assert!(upload.status.success(), "{}", String::from_utf8_lossy(&upload.stderr));
    let url: Value = serde_json::from_slice(&upload.stdout).expect("upload json");
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"c = client()
r = call(c, "ImportImage", {{"ImageUrl": "{}", "ImageName": "byol", "OsType": "CentOS", "OsVersion": "7",
    "Architecture": "x86_64", "LicenseType": "BYOL"}})
img = settle_image(c, r["ok"]["ImageId"])
result = {{"image": img, "share": call(c, "ModifyImageSharePermission", {{"ImageId": img["ImageId"], "AccountIds": ["{first}"], "Permission": "SHARE"}})}}
"#,
            url["ImageUrl"].as_str().expect("url"),
            first = accounts[0]
        ),
    );
    assert_eq!(r["image"]["LicenseType"], "BYOL", "{r}");
    assert_eq!(code(&r["share"]), "FailedOperation.BYOLImageShareFailed");
}

#[test]
fn sixty_simultaneous_shares_leave_exactly_fifty() {
    share_limit(Backend::Sqlite, "share_limit_sqlite");
}

#[test]
fn sixty_simultaneous_shares_on_postgres_leave_exactly_fifty() {
    share_limit(Backend::Postgres, "share_limit_pg");
}

/// The blocks a region's store holds.
fn blocks_in(server: &Server, region: &str) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map_or(0, |d| d.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
    }
    walk(&server.dir.path().join("blocks/regions").join(region))
}

#[test]
fn a_copy_launches_in_its_region_and_a_derived_copy_moves_only_the_difference() {
    let server = Server::start(Backend::Sqlite, "copy").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let owner = server.create_account("multi-region");
    let (image, instance) = golden_image(&server, &owner, work.path());
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"c = client()
out = {{}}
out["same"] = call(c, "SyncImages", {{"ImageIds": ["{image}"], "DestinationRegions": ["ap-guangzhou"]}})
out["nowhere"] = call(c, "SyncImages", {{"ImageIds": ["{image}"], "DestinationRegions": ["mars-1"]}})
out["two"] = call(c, "SyncImages", {{"ImageIds": ["{image}", "{PUBLIC_IMAGE}"], "DestinationRegions": ["ap-beijing"]}})
out["public"] = call(c, "SyncImages", {{"ImageIds": ["{PUBLIC_IMAGE}"], "DestinationRegions": ["ap-beijing"]}})
out["sync"] = call(c, "SyncImages", {{"ImageIds": ["{image}"], "DestinationRegions": ["ap-shanghai"], "ImageSetRequired": True}})
out["busy"] = call(c, "SyncImages", {{"ImageIds": ["{image}"], "DestinationRegions": ["ap-beijing"]}})
out["progress"] = settle_sync(c, "{image}")
copy = out["sync"]["ok"]["ImageSet"][0]
sh = client("ap-shanghai")
out["copy"] = settle_image(sh, copy["ImageId"])
r = call(sh, "RunInstances", {{"Placement": {{"Zone": "ap-shanghai-2"}}, "ImageId": copy["ImageId"]}})
out["launched"] = settle_instances(sh, r["ok"]["InstanceIdSet"])
result = out"#
        ),
    );
    assert_eq!(code(&r["same"]), "InvalidParameterValue.InvalidRegion", "{r}");
    assert_eq!(code(&r["nowhere"]), "InvalidRegion.NotFound");
    assert_eq!(code(&r["two"]), "InvalidParameterValue.LimitExceeded");
    assert_eq!(code(&r["public"]), "InvalidParameterValue.InvalidImageId");
    let busy = code(&r["busy"]);
    assert!(busy == "InvalidImageId.IncorrectState" || busy == "ok", "a second copy waits for the first: {busy}");
    assert_eq!(r["progress"]["image"]["ImageState"], "NORMAL", "the source is NORMAL again");
    let copy = &r["sync"]["ok"]["ImageSet"][0];
    assert_eq!(copy["Region"], "ap-shanghai");
    assert_eq!((r["copy"]["ImageState"].as_str(), r["copy"]["ImageName"].as_str()), (Some("NORMAL"), Some("golden")));
    let launched = r["launched"].as_object().expect("launched").values().next().expect("one").clone();
    assert_eq!(launched["InstanceState"], "RUNNING");
    let there = disk_of(&server, launched["InstanceId"].as_str().expect("id"));
    assert_eq!(read_file(&there, "/etc/motd", work.path()).as_deref(), Some("golden\n"));

    // A derived image (one more file) copied to the region holding its base moves only the
    // blocks that changed.
    let first_copy = blocks_in(&server, "ap-shanghai");
    write_file(&disk_of(&server, &instance), "/etc/derived.txt", "derived\n", work.path());
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"c = client()
img = call(c, "CreateImage", {{"InstanceId": "{instance}", "ImageName": "derived"}})["ok"]["ImageId"]
settle_image(c, img)
settle_instances(c, ["{instance}"])
result = img"#
        ),
    );
    let derived = r.as_str().expect("image").to_owned();
    let sync = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["sync", &derived, "--to", "ap-shanghai"])
        .env("IMAGED_ENDPOINT", format!("http://{}", server.addr))
        .env("TENCENTCLOUD_SECRET_ID", &owner.secret_id)
        .env("TENCENTCLOUD_SECRET_KEY", &owner.secret_key)
        .env("TENCENTCLOUD_REGION", "ap-guangzhou")
        .output()
        .expect("imaged sync");
    assert!(sync.status.success(), "{}", String::from_utf8_lossy(&sync.stderr));
    let printed: Value = serde_json::from_slice(&sync.stdout).expect("sync json");
    assert_eq!(printed["ImageSet"][0]["Region"], "ap-shanghai");
    let moved = blocks_in(&server, "ap-shanghai") - first_copy;
    assert!(moved > 0, "the changed blocks were copied");
    assert!(moved < first_copy, "only the difference moved: {moved} blocks after a first copy of {first_copy}");
}

#[test]
fn a_server_killed_during_a_copy_finishes_it_after_restart() {
    let mut server = Server::start_with(Backend::Sqlite, "copy_crash", "job_lease_secs = 1\n").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let owner = server.create_account("crashing-copier");
    let (image, _) = golden_image(&server, &owner, work.path());
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"result = call(client(), "SyncImages", {{"ImageIds": ["{image}"], "DestinationRegions": ["ap-beijing", "ap-chengdu"], "ImageSetRequired": True}})"#
        ),
    );
    let copies = r["ok"]["ImageSet"].clone();
    server.restart(); // SIGKILL, wherever the copy was
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"c = client()
out = {{"source": settle_sync(c, "{image}")["image"]}}
out["copies"] = [settle_image(client(x["Region"]), x["ImageId"]) for x in {copies}]
result = out"#
        ),
    );
    assert_eq!(r["source"]["ImageState"], "NORMAL", "{r}");
    for copy in r["copies"].as_array().expect("copies") {
        assert_eq!(copy["ImageState"], "NORMAL", "{copy}");
    }
    let fsck = server.cli(&["fsck"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"result = run(client("ap-chengdu"), "{}", zone="ap-chengdu-1")"#,
            copies[1]["ImageId"].as_str().expect("id")
        ),
    );
    let id = r["ids"][0].as_str().expect("instance").to_owned();
    assert_eq!(read_file(&disk_of(&server, &id), "/etc/motd", work.path()).as_deref(), Some("golden\n"));
}
