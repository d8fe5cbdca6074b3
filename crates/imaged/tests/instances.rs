//! End to end for instances and custom images, through the official Python SDK: launch from a
//! public image, write a file into the instance's disk, capture it, launch from the capture and
//! find the file, reset to the public image and to the capture (the seeds' backup and restore),
//! state changes, refusals, the quota under 50 concurrent captures, and a crash mid-capture.

mod support;

use support::guest::{disk_of, read_file, sdk, tool, write_file, PUBLIC_IMAGE};
use support::{Backend, Server};

fn backup_and_restore(backend: Backend, test: &str) {
    let Some(server) = Server::start(backend, test) else { return };
    let user = server.create_account("restorer");
    let work = tempfile::tempdir().expect("tempdir");
    let r = sdk(&server, &user, &format!(r#"result = run(client(), "{PUBLIC_IMAGE}", name="web")"#));
    let web = r["ids"][0].as_str().expect("instance id").to_owned();
    let inst = &r["instances"][web.as_str()];
    assert_eq!(inst["InstanceState"], "RUNNING", "{inst}");
    assert_eq!(
        (inst["LatestOperation"].as_str(), inst["LatestOperationState"].as_str()),
        (Some("RunInstances"), Some("SUCCESS"))
    );
    assert_eq!(inst["ImageId"], PUBLIC_IMAGE);
    assert_eq!(inst["OsName"], "CentOS 7.6 64bit");
    let disk = disk_of(&server, &web);
    let os_release = read_file(&disk, "/etc/os-release", work.path()).expect("the public image's filesystem");
    assert!(os_release.contains("IMAGED_IMAGE_ID=img-9qabwvbn"), "{os_release}");

    // The use case: a server gets its software, then is backed up as a custom image.
    write_file(&disk, "/etc/app.conf", "listen = 8080\n", work.path());
    let r = sdk(
        &server,
        &user,
        &format!(
            r#"c = client()
r = call(c, "CreateImage", {{"InstanceId": "{web}", "ImageName": "web-backup", "ImageDescription": "app v1"}})
img = settle_image(c, r["ok"]["ImageId"])
result = {{"image": img, "instance": settle_instances(c, ["{web}"])["{web}"]}}"#
        ),
    );
    let backup = r["image"]["ImageId"].as_str().expect("image id").to_owned();
    assert_eq!(r["image"]["ImageState"], "NORMAL", "{}", r["image"]);
    assert_eq!(r["image"]["ImageType"], "PRIVATE_IMAGE");
    assert_eq!(r["image"]["ImageSource"], "CREATE_IMAGE");
    assert_eq!(r["image"]["Platform"], "CentOS", "a capture keeps its source's OS");
    assert_eq!(r["instance"]["InstanceState"], "RUNNING", "capturing without ForcePoweroff keeps it running");
    assert_eq!(r["instance"]["LatestOperation"], "CreateImage");
    assert_eq!(r["instance"]["LatestOperationState"], "SUCCESS");

    // Deploy in batches from the backup: each new instance has the file.
    let r = sdk(&server, &user, &format!(r#"result = run(client(), "{backup}", count=2, name="copy")"#));
    let copies: Vec<String> =
        r["ids"].as_array().expect("ids").iter().map(|v| v.as_str().expect("id").to_owned()).collect();
    assert_eq!(copies.len(), 2);
    for id in &copies {
        assert_eq!(r["instances"][id]["ImageId"], backup.as_str());
        assert_eq!(read_file(&disk_of(&server, id), "/etc/app.conf", work.path()).as_deref(), Some("listen = 8080\n"));
    }
    let names: Vec<&str> = copies.iter().map(|id| r["instances"][id]["InstanceName"].as_str().expect("name")).collect();
    assert!(names.contains(&"copy1") && names.contains(&"copy2"), "{names:?}");

    // Restore: reinstall from the public image wipes the file; from the backup brings it back.
    let reset = |image: &str| {
        sdk(
            &server,
            &user,
            &format!(
                r#"c = client()
r = call(c, "ResetInstance", {{"InstanceId": "{}", "ImageId": "{image}"}})
result = {{"reset": r, "instance": settle_instances(c, ["{}"])["{}"]}}"#,
                copies[0], copies[0], copies[0]
            ),
        )
    };
    let r = reset(PUBLIC_IMAGE);
    assert!(r["reset"]["ok"].is_object(), "{r}");
    assert_eq!(
        (r["instance"]["ImageId"].as_str(), r["instance"]["LatestOperation"].as_str()),
        (Some(PUBLIC_IMAGE), Some("ResetInstance"))
    );
    let copy_disk = disk_of(&server, &copies[0]);
    assert_eq!(read_file(&copy_disk, "/etc/app.conf", work.path()), None, "a reset wipes the system disk");
    assert!(read_file(&copy_disk, "/etc/os-release", work.path()).is_some());
    let r = reset(&backup);
    assert_eq!(r["instance"]["LatestOperationState"], "SUCCESS", "{r}");
    assert_eq!(read_file(&copy_disk, "/etc/app.conf", work.path()).as_deref(), Some("listen = 8080\n"));
    // The other copy and the original were never touched.
    assert_eq!(
        read_file(&disk_of(&server, &copies[1]), "/etc/app.conf", work.path()).as_deref(),
        Some("listen = 8080\n")
    );

    // Deleting the backup frees quota; instances launched from it keep working.
    let r = sdk(
        &server,
        &user,
        &format!(
            r#"c = client()
before = call(c, "DescribeImages", {{"Filters": [{{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}}]}})
d = call(c, "DeleteImages", {{"ImageIds": ["{backup}"]}})
after = call(c, "DescribeImages", {{"Filters": [{{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}}]}})
again = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{backup}"}})
result = {{"before": before["ok"]["TotalCount"], "delete": d, "after": after["ok"]["TotalCount"], "again": again}}"#
        ),
    );
    assert_eq!((r["before"].as_u64(), r["after"].as_u64()), (Some(1), Some(0)), "{r}");
    assert!(r["delete"]["ok"].is_object(), "{r}");
    assert_eq!(r["again"]["error"], "InvalidImageId.NotFound");
    assert_eq!(
        read_file(&disk_of(&server, &copies[1]), "/etc/app.conf", work.path()).as_deref(),
        Some("listen = 8080\n")
    );
}

#[test]
fn an_instance_is_backed_up_as_a_custom_image_and_restored_from_it() {
    backup_and_restore(Backend::Sqlite, "restore_sqlite");
}

#[test]
fn an_instance_is_backed_up_and_restored_on_postgres() {
    backup_and_restore(Backend::Postgres, "restore_pg");
}

#[test]
fn instances_move_through_their_states_and_refuse_what_their_state_forbids() {
    let server = Server::start(Backend::Sqlite, "states").expect("sqlite");
    let user = server.create_account("operator");
    let r = sdk(
        &server,
        &user,
        &format!(
            r#"c = client()
ids = run(c, "{PUBLIC_IMAGE}")["ids"]
i = ids[0]
out = {{}}
out["start_running"] = call(c, "StartInstances", {{"InstanceIds": [i]}})
out["stop"] = call(c, "StopInstances", {{"InstanceIds": [i]}})
out["stop_again"] = call(c, "StopInstances", {{"InstanceIds": [i]}})
out["stopped"] = settle_instances(c, ids)[i]
out["reboot_stopped"] = call(c, "RebootInstances", {{"InstanceIds": [i]}})
out["forced"] = call(c, "CreateImage", {{"InstanceId": i, "ImageName": "cold", "ForcePoweroff": "true"}})
if "ok" in out["forced"]:
    settle_image(c, out["forced"]["ok"]["ImageId"])
out["after_capture"] = settle_instances(c, ids)[i]
call(c, "StartInstances", {{"InstanceIds": [i]}})
out["started"] = settle_instances(c, ids)[i]
call(c, "RebootInstances", {{"InstanceIds": [i]}})
out["rebooted"] = settle_instances(c, ids)[i]
out["status"] = call(c, "DescribeInstancesStatus", {{"InstanceIds": [i]}})
out["by_state"] = call(c, "DescribeInstances", {{"Filters": [{{"Name": "instance-state", "Values": ["RUNNING"]}}]}})
out["terminate"] = call(c, "TerminateInstances", {{"InstanceIds": [i]}})
deadline = time.time() + 30
while call(c, "DescribeInstances", {{"InstanceIds": [i]}})["ok"]["TotalCount"] > 0 and time.time() < deadline:
    time.sleep(0.1)
out["gone"] = call(c, "DescribeInstances", {{"InstanceIds": [i]}})
out["terminate_gone"] = call(c, "TerminateInstances", {{"InstanceIds": [i]}})
out["id"] = i
result = out"#
        ),
    );
    assert_eq!(r["start_running"]["error"], "UnsupportedOperation.InstanceStateRunning", "{r}");
    assert!(r["stop"]["ok"].is_object());
    let again = r["stop_again"]["error"].as_str().unwrap_or_default();
    assert!(
        [
            "UnsupportedOperation.InstanceStateStopping",
            "OperationDenied.InstanceOperationInProgress",
            "UnsupportedOperation.InstanceStateStopped"
        ]
        .contains(&again),
        "a second stop is refused: {again}"
    );
    assert_eq!(r["stopped"]["InstanceState"], "STOPPED");
    assert_eq!(r["stopped"]["LatestOperation"], "StopInstances");
    assert_eq!(r["reboot_stopped"]["error"], "UnsupportedOperation.InstanceStateStopped");
    assert!(r["forced"]["ok"].is_object(), "{}", r["forced"]);
    assert_eq!(r["after_capture"]["InstanceState"], "STOPPED", "ForcePoweroff leaves it stopped");
    assert_eq!(r["started"]["InstanceState"], "RUNNING");
    assert_eq!(
        (r["rebooted"]["InstanceState"].as_str(), r["rebooted"]["LatestOperation"].as_str()),
        (Some("RUNNING"), Some("RebootInstances"))
    );
    assert_eq!(r["status"]["ok"]["InstanceStatusSet"][0]["InstanceState"], "RUNNING");
    assert_eq!(r["by_state"]["ok"]["TotalCount"], 1);
    assert!(r["terminate"]["ok"].is_object());
    assert_eq!(r["gone"]["ok"]["TotalCount"], 0);
    assert_eq!(r["terminate_gone"]["error"], "InvalidInstanceId.NotFound");
    let disk = server.dir.path().join("instances").join(r["id"].as_str().expect("id"));
    assert!(!disk.exists(), "terminating removes the instance's disk");
}

#[test]
fn launching_and_capturing_are_refused_with_the_proper_errors() {
    let server = Server::start(Backend::Sqlite, "refusals").expect("sqlite");
    let owner = server.create_account("owner");
    let stranger = server.create_account("stranger");
    let r = sdk(
        &server,
        &owner,
        &format!(
            r#"c = client()
i = run(c, "{PUBLIC_IMAGE}")["ids"][0]
img = call(c, "CreateImage", {{"InstanceId": i, "ImageName": "private"}})["ok"]["ImageId"]
settle_image(c, img)
settle_instances(c, [i])
out = {{"image": img, "instance": i}}
out["other_region"] = call(client("ap-shanghai"), "RunInstances", {{"Placement": {{"Zone": "ap-shanghai-2"}}, "ImageId": img}})
out["bad_zone"] = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-shanghai-2"}}, "ImageId": img}})
out["malformed"] = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "img-1"}})
out["too_many"] = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": img, "InstanceCount": 101}})
out["dry_run"] = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": img, "InstanceCount": 3, "DryRun": True}})
out["count"] = call(c, "DescribeInstances", {{}})["ok"]["TotalCount"]
once = {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": img, "InstanceCount": 2, "ClientToken": "deploy-42"}}
out["token_first"] = call(c, "RunInstances", once)
out["token_again"] = call(c, "RunInstances", once)
out["token_count"] = call(c, "DescribeInstances", {{}})["ok"]["TotalCount"]
out["token_long"] = call(c, "RunInstances", dict(once, ClientToken="t" * 65))
out["duplicate"] = call(c, "CreateImage", {{"InstanceId": i, "ImageName": "private"}})
out["snapshots"] = call(c, "CreateImage", {{"SnapshotIds": ["snap-12345678"], "ImageName": "s"}})
out["no_source"] = call(c, "CreateImage", {{"ImageName": "s"}})
out["rename_public"] = call(c, "ModifyImageAttribute", {{"ImageId": "{PUBLIC_IMAGE}", "ImageName": "mine"}})
out["delete_public"] = call(c, "DeleteImages", {{"ImageIds": ["{PUBLIC_IMAGE}"]}})
out["rename"] = call(c, "ModifyImageAttribute", {{"ImageId": img, "ImageName": "renamed", "ImageFamily": "web", "ImageDeprecated": True}})
out["renamed"] = call(c, "DescribeImages", {{"ImageIds": [img]}})["ok"]["ImageSet"][0]
out["family_deprecated"] = call(c, "DescribeImageFromFamily", {{"ImageFamily": "web"}})
call(c, "ModifyImageAttribute", {{"ImageId": img, "ImageDeprecated": False}})
out["family"] = call(c, "DescribeImageFromFamily", {{"ImageFamily": "web"}})
result = out"#
        ),
    );
    let img = r["image"].as_str().expect("image").to_owned();
    let inst = r["instance"].as_str().expect("instance").to_owned();
    assert_eq!(r["other_region"]["error"], "InvalidImageId.NotFound", "a custom image stays in its region: {r}");
    assert_eq!(r["bad_zone"]["error"], "InvalidZone.MismatchRegion");
    assert_eq!(r["malformed"]["error"], "InvalidImageId.Malformed");
    assert_eq!(r["too_many"]["error"], "InvalidParameterValue.Range");
    assert!(r["dry_run"]["ok"]["InstanceIdSet"].as_array().is_some_and(Vec::is_empty), "{}", r["dry_run"]);
    assert_eq!(r["count"], 1, "a dry run launches nothing");
    let first = &r["token_first"]["ok"]["InstanceIdSet"];
    assert_eq!(first.as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(&r["token_again"]["ok"]["InstanceIdSet"], first, "a retried ClientToken returns the same instances");
    assert_eq!(r["token_count"], 3, "and launches nothing more");
    assert_eq!(r["token_long"]["error"], "InvalidClientToken.TooLong");
    assert_eq!(r["duplicate"]["error"], "InvalidImageName.Duplicate");
    assert_eq!(r["snapshots"]["error"], "UnsupportedOperation");
    assert_eq!(r["no_source"]["error"], "InvalidParameter.SpecifyOneParameter");
    assert_eq!(r["rename_public"]["error"], "InvalidParameterValue.InvalidImageId");
    assert_eq!(r["delete_public"]["error"], "InvalidParameterValue.InvalidImageId");
    assert!(r["rename"]["ok"].is_object(), "{}", r["rename"]);
    assert_eq!(
        (r["renamed"]["ImageName"].as_str(), r["renamed"]["ImageFamily"].as_str()),
        (Some("renamed"), Some("web"))
    );
    assert_eq!(r["renamed"]["ImageDeprecated"], true);
    assert!(
        r["family_deprecated"]["ok"]["Image"].is_null(),
        "a deprecated image is not its family's: {}",
        r["family_deprecated"]
    );
    assert_eq!(r["family"]["ok"]["Image"]["ImageId"], img.as_str());

    // A stranger can neither see nor use the owner's image or instance.
    let r = sdk(
        &server,
        &stranger,
        &format!(
            r#"c = client()
result = {{
  "launch": call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{img}"}}),
  "capture": call(c, "CreateImage", {{"InstanceId": "{inst}", "ImageName": "theft"}}),
  "stop": call(c, "StopInstances", {{"InstanceIds": ["{inst}"]}}),
  "delete": call(c, "DeleteImages", {{"ImageIds": ["{img}"]}}),
  "modify": call(c, "ModifyImageAttribute", {{"ImageId": "{img}", "ImageName": "x"}}),
  "list": call(c, "DescribeInstances", {{}})["ok"]["TotalCount"],
  "family": call(c, "DescribeImageFromFamily", {{"ImageFamily": "web"}}),
}}"#
        ),
    );
    assert_eq!(r["launch"]["error"], "InvalidImageId.NotFound", "{r}");
    assert_eq!(r["capture"]["error"], "InvalidInstanceId.NotFound");
    assert_eq!(r["stop"]["error"], "InvalidInstanceId.NotFound");
    assert_eq!(r["delete"]["error"], "InvalidImageId.NotFound");
    assert_eq!(r["modify"]["error"], "InvalidImageId.NotFound");
    assert_eq!(r["list"], 0);
    assert!(r["family"]["ok"]["Image"].is_null());
}

fn concurrent_captures(backend: Backend, test: &str) {
    let Some(server) = Server::start(backend, test) else { return };
    let user = server.create_account("busy-capturer");
    let out = server.cli(&["account", "set-quota", "--account", &user.account_id, "--quota", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = sdk(
        &server,
        &user,
        &format!(
            r#"from concurrent.futures import ThreadPoolExecutor
c = client()
ids = run(c, "{PUBLIC_IMAGE}", count=50)["ids"]
def capture(n):
    return call(client(), "CreateImage", {{"InstanceId": ids[n], "ImageName": "snap-%d" % n}})
with ThreadPoolExecutor(max_workers=50) as pool:
    answers = list(pool.map(capture, range(50)))
made = [a["ok"]["ImageId"] for a in answers if "ok" in a]
for m in made:
    settle_image(c, m)
settle_instances(c, ids)
listed = call(c, "DescribeImages", {{"Filters": [{{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}}]}})
result = {{"errors": [a.get("error") for a in answers if "error" in a], "made": len(made),
          "listed": listed["ok"]["TotalCount"], "states": sorted(set(i["ImageState"] for i in listed["ok"]["ImageSet"]))}}"#
        ),
    );
    assert_eq!(r["made"], 3, "{r}");
    let errors = r["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 47);
    assert!(errors.iter().all(|e| e == "ImageQuotaLimitExceeded"), "{errors:?}");
    assert_eq!(r["listed"], 3);
    assert_eq!(r["states"], serde_json::json!(["NORMAL"]));
}

#[test]
fn fifty_simultaneous_captures_with_room_for_three_make_exactly_three() {
    concurrent_captures(Backend::Sqlite, "captures_sqlite");
}

#[test]
fn fifty_simultaneous_captures_on_postgres_make_exactly_three() {
    concurrent_captures(Backend::Postgres, "captures_pg");
}

#[test]
fn a_server_killed_during_a_capture_finishes_it_after_restart_and_the_disk_is_intact() {
    let mut server = Server::start_with(Backend::Sqlite, "capture_crash", "job_lease_secs = 1\n").expect("sqlite");
    let user = server.create_account("crasher");
    let work = tempfile::tempdir().expect("tempdir");
    let r = sdk(&server, &user, &format!(r#"result = run(client(), "{PUBLIC_IMAGE}")"#));
    let id = r["ids"][0].as_str().expect("id").to_owned();
    let disk = disk_of(&server, &id);
    write_file(&disk, "/etc/crash.txt", "before the crash\n", work.path());
    let before = std::fs::read(&disk).expect("disk");
    let r = sdk(
        &server,
        &user,
        &format!(r#"result = call(client(), "CreateImage", {{"InstanceId": "{id}", "ImageName": "mid-crash"}})"#),
    );
    let image = r["ok"]["ImageId"].as_str().expect("image").to_owned();
    server.restart(); // SIGKILL, wherever the capture was
    let r = sdk(
        &server,
        &user,
        &format!(
            r#"c = client()
result = {{"image": settle_image(c, "{image}"), "instance": settle_instances(c, ["{id}"])["{id}"]}}"#
        ),
    );
    assert_eq!(r["image"]["ImageState"], "NORMAL", "{r}");
    assert_eq!(r["instance"]["InstanceState"], "RUNNING");
    assert_eq!(r["instance"]["LatestOperationState"], "SUCCESS");
    assert_eq!(std::fs::read(&disk).expect("disk"), before, "a capture never writes the instance's disk");
    tool("qemu-img", &["check", "-f", "qcow2", &disk.to_string_lossy()]);
    let r = sdk(&server, &user, &format!(r#"result = run(client(), "{image}")"#));
    let copy = r["ids"][0].as_str().expect("id").to_owned();
    assert_eq!(
        read_file(&disk_of(&server, &copy), "/etc/crash.txt", work.path()).as_deref(),
        Some("before the crash\n")
    );
    let fsck = server.cli(&["fsck"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
}

#[test]
fn gc_removes_only_the_bases_no_instance_uses() {
    let server = Server::start(Backend::Sqlite, "base_gc").expect("sqlite");
    let user = server.create_account("tidy");
    let work = tempfile::tempdir().expect("tempdir");
    let other = "img-eb30mz89";
    let r = sdk(
        &server,
        &user,
        &format!(
            r#"c = client()
kept = run(c, "{PUBLIC_IMAGE}")["ids"][0]
gone = run(c, "{other}")["ids"][0]
call(c, "TerminateInstances", {{"InstanceIds": [gone]}})
deadline = time.time() + 30
while call(c, "DescribeInstances", {{"InstanceIds": [gone]}})["ok"]["TotalCount"] > 0 and time.time() < deadline:
    time.sleep(0.1)
result = kept"#
        ),
    );
    let kept = r.as_str().expect("instance").to_owned();
    let gc = server.cli(&["gc", "--grace-secs", "0"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let report: serde_json::Value = serde_json::from_slice(&gc.stdout).expect("gc json");
    assert_eq!(report["bases"]["deleted_bases"], 1, "{report}");
    assert_eq!(report["bases"]["kept_bases"], 1);
    let bases = std::fs::read_dir(server.dir.path().join("bases")).expect("bases").count();
    assert_eq!(bases, 2, "the used base and its manifest remain");
    let disk = disk_of(&server, &kept);
    tool("qemu-img", &["check", "-f", "qcow2", &disk.to_string_lossy()]);
    assert!(read_file(&disk, "/etc/os-release", work.path()).is_some_and(|t| t.contains(PUBLIC_IMAGE)));
    // The image whose base went away launches again: its base is made anew.
    let r = sdk(&server, &user, &format!(r#"result = run(client(), "{other}")"#));
    let again = r["ids"][0].as_str().expect("instance").to_owned();
    assert!(read_file(&disk_of(&server, &again), "/etc/os-release", work.path()).is_some_and(|t| t.contains(other)));
}
