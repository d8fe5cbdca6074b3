//! Instances that really run, end to end through the official Python SDK: QEMU guests booted
//! from the tiny public image (Debian's cloud kernel and busybox, built by
//! `imaged public-image build-tiny`), `UserData` run from the NoCloud seed, the serial console
//! through the extension action, a guest that powers itself off becoming STOPPED, a capture
//! booted twice, reinstalls to the public image and back, soft and hard stops, a capture of a
//! running guest, guests adopted after a kill -9 of the server, and crashes reported.
//!
//! Guests run under TCG (`IMAGED_ACCEL=tcg`): on these machines `/dev/kvm` exists but hangs.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use support::guest::sdk;
use support::{guest_pids, Backend, Creds, Server};

/// Helpers for the snippets: the extension client, waiting for states and console lines.
const PY: &str = r##"
import base64
from tencentcloud.common.common_client import CommonClient

def ext():
    hp = HttpProfile(protocol="http", endpoint=os.environ["IMAGED_ENDPOINT"], reqMethod="POST")
    return CommonClient("imaged", "2026-12-01", credential.Credential(os.environ["SECRET_ID"], os.environ["SECRET_KEY"]),
                        "ap-guangzhou", profile=ClientProfile(httpProfile=hp, language="en-US"))

def console(iid):
    return call(ext(), "DescribeInstanceConsoleOutput", {"InstanceId": iid})["ok"]["Output"]

def wait_console(iid, text, timeout=120):
    deadline = time.time() + timeout
    while True:
        out = console(iid)
        if text in out:
            return out
        if time.time() > deadline:
            raise Exception("%s never printed %r:\n%s" % (iid, text, out))
        time.sleep(0.2)

def wait_state(c, ids, state, timeout=120):
    deadline = time.time() + timeout
    while True:
        s = call(c, "DescribeInstances", {"InstanceIds": ids, "Limit": 100})["ok"]["InstanceSet"]
        if len(s) == len(ids) and all(i["InstanceState"] == state and i["LatestOperationState"] != "OPERATING" for i in s):
            return {i["InstanceId"]: i for i in s}
        if time.time() > deadline:
            raise Exception("instances did not reach %s: %s" % (state, s))
        time.sleep(0.2)

def meta(instance):
    return {m["Key"]: m["Value"] for m in instance["Metadata"]["Items"]}

def b64(text):
    return base64.b64encode(text.encode()).decode()
"##;

/// A script the tiny guest runs at boot: it reports whether `/marker` exists (and writes it if
/// not), then powers off.
const MARKER_SCRIPT: &str = r##"#!/bin/sh
if [ -f /marker ]; then echo "MARKER-FOUND $(cat /marker)"; else echo MARKER-ABSENT; echo "written-by-$(hostname)" > /marker; fi
poweroff
"##;

/// A check the guest runs: root's password hash in `/etc/shadow` is that of `Passw0rd-1`.
const PASSWORD_CHECK: &str = r##"h=$(sed -n 's/^root:\([^:]*\):.*/\1/p' /etc/shadow)
salt=$(echo "$h" | cut -d'$' -f3)
if [ "$(mkpasswd -m sha512 -S "$salt" Passw0rd-1)" = "$h" ]; then echo ROOT-PASSWORD-OK; else echo "ROOT-PASSWORD-WRONG $h"; fi
"##;

fn tiny_image() -> &'static PathBuf {
    static TINY: OnceLock<PathBuf> = OnceLock::new();
    TINY.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tiny-image");
        std::fs::create_dir_all(&dir).expect("tiny image dir");
        let out = dir.join("tiny.raw");
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
            .args(["public-image", "build-tiny", "--output"])
            .arg(&out)
            .status()
            .expect("run imaged public-image build-tiny");
        assert!(status.success(), "building the tiny image failed");
        out
    })
}

/// A guest image a test server offers as a public image.
struct GuestImage<'a> {
    file: &'a std::path::Path,
    name: &'a str,
    platform: &'a str,
}

/// A server that runs guests (TCG) with `config`'s `[vm]` limits and `image` added as a public
/// image; returns it, a user, and the image's id.
fn guest_server_with(test: &str, config: &str, image: GuestImage) -> Option<(Server, Creds, String)> {
    let env = [("IMAGED_HYPERVISOR", "qemu"), ("IMAGED_ACCEL", "tcg")];
    let server = Server::start_config_env(Backend::Sqlite, test, config, &env)?;
    let path = image.file.to_str().expect("utf-8 path");
    let (name, platform) = (image.name, image.platform);
    let args =
        ["public-image", "add", path, "--name", name, "--os-name", name, "--platform", platform, "--format", "raw"];
    let id = server.cli_json(&args)["ImageId"].as_str().expect("ImageId").to_owned();
    let user = server.create_account("guest-user");
    Some((server, user, id))
}

/// A server for tiny guests (256 MiB, a 4 s soft-stop deadline).
fn guest_server(test: &str) -> Option<(Server, Creds, String)> {
    let image = GuestImage { file: tiny_image(), name: "imaged tiny", platform: "Other Linux" };
    guest_server_with(test, "[vm]\nmax_memory_mib = 256\nsoft_stop_secs = 4\n", image)
}

fn py(server: &Server, creds: &Creds, snippet: &str) -> Value {
    sdk(server, creds, &format!("{PY}\n{snippet}"))
}

#[test]
fn a_guest_runs_its_user_data_and_its_capture_boots_in_two_instances_then_resets_both_ways() {
    let Some((server, user, tiny)) = guest_server("guest_capture") else { return };
    let started = Instant::now();
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
t0 = time.time()
r = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{tiny}", "InstanceName": "alpha",
    "HostName": "alpha", "UserData": b64({alpha_script:?}), "LoginSettings": {{"Password": "Passw0rd-1"}}}})
iid = r["ok"]["InstanceIdSet"][0]
first = None
while first is None:
    if console(iid).strip():
        first = time.time() - t0
    elif time.time() - t0 > 120:
        raise Exception("no console output")
    else:
        time.sleep(0.05)
inst = wait_state(c, [iid], "STOPPED")[iid]
off = time.time() - t0
result = {{"id": iid, "instance": inst, "console": console(iid), "first": first, "off": off}}"##,
            alpha_script = MARKER_SCRIPT.replace("poweroff\n", &format!("{PASSWORD_CHECK}poweroff\n"))
        ),
    );
    let alpha = r["id"].as_str().expect("instance id").to_owned();
    let console = r["console"].as_str().expect("console");
    eprintln!("tiny boot: first console line after {:.2} s, power-off after {:.2} s", r["first"], r["off"]);
    assert!(console.contains("imaged-tiny: hostname alpha"), "HostName reaches the guest:\n{console}");
    assert!(console.contains("MARKER-ABSENT"), "UserData ran:\n{console}");
    assert!(console.contains("ROOT-PASSWORD-OK"), "LoginSettings.Password is root's:\n{console}");
    assert!(console.contains("imaged-tiny: user-data exited") || console.contains("powering off"), "{console}");
    assert!(console.contains("reboot: Power down"), "the guest powered off:\n{console}");
    let inst = &r["instance"];
    assert_eq!(inst["LatestOperation"], "RunInstances", "{inst}");
    assert_eq!(inst["LatestOperationState"], "SUCCESS", "{inst}");
    let items: Vec<(&str, &str)> = inst["Metadata"]["Items"]
        .as_array()
        .expect("metadata")
        .iter()
        .map(|m| (m["Key"].as_str().unwrap_or(""), m["Value"].as_str().unwrap_or("")))
        .collect();
    assert!(items.contains(&("imaged:guest-note", "the guest powered itself off")), "{items:?}");
    assert!(items.iter().any(|(k, v)| *k == "imaged:hypervisor" && v.contains("QEMU")), "{items:?}");
    assert!(!items.iter().any(|(k, _)| *k == "imaged:qemu-pid"), "no process once stopped: {items:?}");
    assert!(inst["Placement"]["HostId"].as_str().is_some_and(|h| !h.is_empty()), "{inst}");
    // The password is sealed in the store, never kept in clear.
    let db = std::fs::read(server.dir.path().join("meta.db")).expect("meta.db");
    assert!(!db.windows(10).any(|w| w == b"Passw0rd-1"), "the password is stored sealed");

    // Back up the stopped server, deploy two from the backup: both guests find the file.
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
img = settle_image(c, call(c, "CreateImage", {{"InstanceId": "{alpha}", "ImageName": "alpha-backup"}})["ok"]["ImageId"])
r = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": img["ImageId"], "InstanceCount": 2,
    "InstanceName": "copy", "UserData": b64({MARKER_SCRIPT:?})}})
ids = r["ok"]["InstanceIdSet"]
wait_state(c, ids, "STOPPED", timeout=180)
result = {{"image": img, "ids": ids, "consoles": [console(i) for i in ids]}}"##
        ),
    );
    assert_eq!(r["image"]["ImageState"], "NORMAL", "{}", r["image"]);
    let backup = r["image"]["ImageId"].as_str().expect("image id").to_owned();
    for out in r["consoles"].as_array().expect("consoles") {
        let out = out.as_str().expect("console");
        assert!(out.contains("MARKER-FOUND written-by-alpha"), "the capture carries the guest's file:\n{out}");
    }
    let copy = r["ids"][0].as_str().expect("id").to_owned();

    // Reinstall from the public image: the file is gone; from the backup: it is back.
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
out = {{}}
for name, image in (("public", "{tiny}"), ("backup", "{backup}")):
    r = call(c, "ResetInstance", {{"InstanceId": "{copy}", "ImageId": image}})
    assert "ok" in r, r
    # Once the reinstall has booted the new disk, the console is the new boot's.
    settle_instances(c, ["{copy}"], timeout=120)
    wait_console("{copy}", "reboot: Power down", timeout=120)
    out[name] = {{"console": console("{copy}"), "instance": wait_state(c, ["{copy}"], "STOPPED")["{copy}"]}}
result = out"##
        ),
    );
    let public = r["public"]["console"].as_str().expect("console");
    assert!(public.contains("MARKER-ABSENT"), "a reinstall from the public image wipes the file:\n{public}");
    assert_eq!(r["public"]["instance"]["ImageId"], tiny.as_str());
    let restored = r["backup"]["console"].as_str().expect("console");
    assert!(restored.contains("MARKER-FOUND written-by-alpha"), "the backup restores it:\n{restored}");
    assert_eq!(r["backup"]["instance"]["ImageId"], backup.as_str());
    eprintln!("capture scenario: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn stops_are_soft_then_hard_a_running_guest_is_captured_and_guests_outlive_a_killed_server() {
    let Some((mut server, user, tiny)) = guest_server("guest_stops") else { return };
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
ids = {{}}
for name, script in (("polite", "#!/bin/sh\necho READY\n"), ("deaf", "#!/bin/sh\nkillall acpid\necho DEAF\n"),
                     ("doomed", "#!/bin/sh\necho READY\n")):
    r = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{tiny}", "InstanceName": name,
        "UserData": b64(script)}})
    ids[name] = r["ok"]["InstanceIdSet"][0]
# A disk with a partition table and no boot loader still launches; its console says why it
# does not boot.
blank = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{blank}",
    "InstanceName": "blank"}})["ok"]["InstanceIdSet"][0]
for iid in ids.values():
    wait_console(iid, "login:", timeout=180)
s = wait_state(c, list(ids.values()), "RUNNING")
blank_console = wait_console(blank, "Booting from Hard Disk", timeout=60)
call(c, "TerminateInstances", {{"InstanceIds": [blank]}})
result = {{"ids": ids, "pids": {{n: meta(s[i])["imaged:qemu-pid"] for n, i in ids.items()}},
          "meta": meta(s[ids["polite"]]), "blank": blank_console}}"##,
            blank = support::guest::PUBLIC_IMAGE
        ),
    );
    let blank = r["blank"].as_str().expect("console");
    assert!(
        blank.starts_with("imaged: the disk's boot sector holds no boot loader (its boot code is all zeros)"),
        "{blank}"
    );
    assert!(blank.contains("SeaBIOS"), "the firmware's own lines follow: {blank}");
    let id = |n: &str| r["ids"][n].as_str().expect("id").to_owned();
    let (polite, deaf, doomed) = (id("polite"), id("deaf"), id("doomed"));
    assert_eq!(r["meta"]["imaged:accelerator"], "tcg", "{}", r["meta"]);
    let ssh = r["meta"]["imaged:ssh-address"].as_str().expect("ssh address");
    assert!(ssh.starts_with("127.0.0.1:"), "{ssh}");
    let pids: Vec<u32> = ["polite", "deaf", "doomed"]
        .iter()
        .map(|n| r["pids"][n].as_str().expect("pid").parse().expect("pid number"))
        .collect();

    // kill -9 of the server while guests run; one guest dies while it is down.
    server.kill();
    std::process::Command::new("kill").args(["-9", &pids[2].to_string()]).status().expect("kill");
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.start_again();
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
s = wait_state(c, ["{polite}", "{deaf}"], "RUNNING")
d = wait_state(c, ["{doomed}"], "STOPPED")["{doomed}"]
result = {{"pids": [meta(s[i]).get("imaged:qemu-pid") for i in ("{polite}", "{deaf}")], "doomed": meta(d)}}"##
        ),
    );
    assert_eq!(r["pids"][0].as_str(), Some(pids[0].to_string().as_str()), "adopted, not restarted: {r}");
    assert_eq!(r["pids"][1].as_str(), Some(pids[1].to_string().as_str()), "adopted, not restarted: {r}");
    assert_eq!(r["doomed"]["imaged:guest-note"], "the guest was not running when the server restarted", "{r}");

    // A crash is reported, not hidden.
    std::process::Command::new("kill").args(["-9", &pids[1].to_string()]).status().expect("kill");
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
d = wait_state(c, ["{deaf}"], "STOPPED")["{deaf}"]
call(c, "StartInstances", {{"InstanceIds": ["{deaf}"]}})
wait_state(c, ["{deaf}"], "RUNNING")
wait_console("{deaf}", "DEAF", timeout=180)
wait_console("{deaf}", "login:", timeout=180)
result = {{"note": meta(d).get("imaged:guest-note")}}"##
        ),
    );
    assert!(r["note"].as_str().is_some_and(|n| n.starts_with("the guest crashed")), "{r}");

    // SOFT stops: the polite guest powers off at the button; the deaf one is switched off
    // after the 4 s deadline. Both end STOPPED with their operation SUCCESS.
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
out = {{}}
for iid in ("{polite}", "{deaf}"):
    t0 = time.time()
    call(c, "StopInstances", {{"InstanceIds": [iid], "StopType": "SOFT"}})
    inst = wait_state(c, [iid], "STOPPED")[iid]
    out[iid] = {{"secs": time.time() - t0, "op": inst["LatestOperation"], "state": inst["LatestOperationState"],
                "console": console(iid)}}
result = out"##
        ),
    );
    let polite_stop = &r[polite.as_str()];
    let deaf_stop = &r[deaf.as_str()];
    assert_eq!((polite_stop["op"].as_str(), polite_stop["state"].as_str()), (Some("StopInstances"), Some("SUCCESS")));
    assert!(polite_stop["console"].as_str().is_some_and(|c| c.contains("imaged-tiny: power button")), "{polite_stop}");
    assert!(polite_stop["secs"].as_f64().is_some_and(|s| s < 4.0), "{polite_stop}");
    assert_eq!(deaf_stop["state"], "SUCCESS", "{deaf_stop}");
    assert!(deaf_stop["secs"].as_f64().is_some_and(|s| s >= 4.0), "ended HARD after the deadline: {deaf_stop}");
    assert!(!deaf_stop["console"].as_str().unwrap_or("").contains("power button"), "{deaf_stop}");

    // A running guest captured without ForcePoweroff: flushed, paused, read, resumed.
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
call(c, "StartInstances", {{"InstanceIds": ["{polite}"]}})
wait_state(c, ["{polite}"], "RUNNING")
wait_console("{polite}", "login:", timeout=180)
t0 = time.time()
img = settle_image(c, call(c, "CreateImage", {{"InstanceId": "{polite}", "ImageName": "live"}})["ok"]["ImageId"])
secs = time.time() - t0
inst = wait_state(c, ["{polite}"], "RUNNING")["{polite}"]
result = {{"image": img, "secs": secs, "instance": inst}}"##
        ),
    );
    eprintln!("capture of a running tiny guest: {:.2} s", r["secs"]);
    assert_eq!(r["image"]["ImageState"], "NORMAL", "{r}");
    assert_eq!(r["instance"]["LatestOperation"], "CreateImage", "{r}");
    assert_eq!(r["instance"]["LatestOperationState"], "SUCCESS", "{r}");

    // Terminated guests leave no process behind.
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
call(c, "TerminateInstances", {{"InstanceIds": ["{polite}", "{deaf}", "{doomed}"]}})
result = settle_gone(c, ["{polite}", "{deaf}", "{doomed}"])"##
        ),
    );
    assert_eq!(r, Value::Bool(true));
    assert!(guest_pids(server.dir.path()).is_empty(), "no QEMU left: {:?}", guest_pids(server.dir.path()));
}

#[test]
fn a_host_without_a_hypervisor_says_so_and_keeps_instances_as_disks_and_bad_guest_settings_are_refused() {
    let Some(server) = Server::start(Backend::Sqlite, "guest_none") else { return };
    let user = server.create_account("disk-only");
    let r = py(
        &server,
        &user,
        &format!(
            r##"c = client()
r = run(c, "{img}")
iid = r["ids"][0]
base = {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{img}"}}
refused = {{
    "short password": call(c, "RunInstances", dict(base, LoginSettings={{"Password": "abc123"}})),
    "one class": call(c, "RunInstances", dict(base, LoginSettings={{"Password": "abcdefghij"}})),
    "key pair": call(c, "RunInstances", dict(base, LoginSettings={{"KeyIds": ["skey-abcdefgh"]}})),
    "user data": call(c, "RunInstances", dict(base, UserData="not base64!")),
    "stop type": call(c, "StopInstances", {{"InstanceIds": [iid], "StopType": "GENTLE"}}),
    "reset password": call(c, "ResetInstance", {{"InstanceId": iid, "LoginSettings": {{"Password": "short1"}}}}),
    "console of another": call(ext(), "DescribeInstanceConsoleOutput", {{"InstanceId": "ins-00000000"}}),
}}
result = {{"instance": r["instances"][iid], "refused": {{k: v.get("error") for k, v in refused.items()}},
          "after": call(c, "DescribeInstances", {{}})["ok"]["TotalCount"],
          "console": call(ext(), "DescribeInstanceConsoleOutput", {{"InstanceId": iid}})}}"##,
            img = support::guest::PUBLIC_IMAGE
        ),
    );
    let refused = &r["refused"];
    assert_eq!(refused["short password"], "InvalidParameterValue.InvalidPassword", "{refused}");
    assert_eq!(refused["one class"], "InvalidParameterValue.InvalidPassword", "{refused}");
    assert_eq!(refused["key pair"], "InvalidParameterValue.KeyPairNotFound", "{refused}");
    assert_eq!(refused["user data"], "InvalidParameterValue.InvalidUserDataFormat", "{refused}");
    assert_eq!(refused["stop type"], "InvalidParameterValue", "{refused}");
    assert_eq!(refused["reset password"], "InvalidParameterValue.InvalidPassword", "{refused}");
    assert_eq!(refused["console of another"], "InvalidInstanceId.NotFound", "{refused}");
    assert_eq!(r["after"], 1, "nothing refused was launched: {r}");
    assert_eq!(r["instance"]["InstanceState"], "RUNNING");
    let items = r["instance"]["Metadata"]["Items"].as_array().expect("items");
    let hv = items.iter().find(|m| m["Key"] == "imaged:hypervisor").expect("hypervisor item");
    assert_eq!(hv["Value"], "none (disk only: disabled by configuration)");
    assert_eq!(r["console"]["ok"]["Output"], "", "no guest, no console: {r}");
    assert!(r["console"]["ok"]["Hypervisor"].as_str().is_some_and(|h| h.starts_with("none")), "{r}");
}

/// A full Debian image (`imaged public-image build-debian`: debootstrap, systemd, cloud-init,
/// OpenSSH), built once into the target directory; packages are kept between builds.
fn debian_image() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("debian-image");
    std::fs::create_dir_all(&dir).expect("debian image dir");
    let out = dir.join("debian.raw");
    let cache = std::env::var("IMAGED_DEBIAN_CACHE").unwrap_or_else(|_| "/var/tmp/imaged-debian-cache".into());
    let built = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["public-image", "build-debian", "--output"])
        .arg(&out)
        .args(["--cache", &cache])
        .output()
        .expect("run imaged public-image build-debian");
    assert!(built.status.success(), "building the Debian image failed: {}", String::from_utf8_lossy(&built.stderr));
    let report: Value = serde_json::from_slice(&built.stdout).expect("build-debian prints JSON");
    eprintln!("Debian image built in {:.0} s", report["Seconds"].as_f64().unwrap_or(f64::NAN));
    out
}

#[test]
fn a_full_debian_image_boots_and_cloud_init_takes_host_name_password_and_user_data_from_the_seed() {
    let image = debian_image();
    let image = GuestImage { file: &image, name: "Debian 12 64bit (cloud-init)", platform: "Debian" };
    let config = "[vm]\nmax_memory_mib = 512\nsoft_stop_secs = 120\n";
    let Some((server, user, debian)) = guest_server_with("guest_debian", config, image) else { return };
    // Debian has no mkpasswd in its minimal set; Python's crypt checks the hash.
    let script = r##"#!/bin/sh
echo "USERDATA-RAN as $(id -un) on $(hostname)"
h=$(sed -n 's/^root:\([^:]*\):.*/\1/p' /etc/shadow)
python3 -W ignore -c "import crypt, sys; print('ROOT-PASSWORD-OK' if crypt.crypt('Passw0rd-1', sys.argv[1]) == sys.argv[1] else 'ROOT-PASSWORD-WRONG')" "$h"
"##;
    let r = py(
        &server,
        &user,
        &format!(
            r##"import socket
c = client()
t0 = time.time()
r = call(c, "RunInstances", {{"Placement": {{"Zone": "ap-guangzhou-3"}}, "ImageId": "{debian}", "InstanceType": "S5.SMALL1",
    "HostName": "deb-1", "UserData": b64({script:?}), "LoginSettings": {{"Password": "Passw0rd-1"}}}})
iid = r["ok"]["InstanceIdSet"][0]
while not console(iid).strip():
    time.sleep(0.05)
first = time.time() - t0
out = wait_console(iid, "Datasource DataSourceNoCloud", timeout=600)
ready = time.time() - t0
inst = wait_state(c, [iid], "RUNNING")[iid]
host, port = meta(inst)["imaged:ssh-address"].split(":")
banner = b""
deadline = time.time() + 120
while not banner.startswith(b"SSH-") and time.time() < deadline:
    try:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            banner = s.recv(64)
    except OSError:
        time.sleep(1)
t1 = time.time()
call(c, "StopInstances", {{"InstanceIds": [iid], "StopType": "SOFT"}})
stopped = wait_state(c, [iid], "STOPPED", timeout=180)[iid]
result = {{"first": first, "ready": ready, "stop": time.time() - t1, "console": out, "after": console(iid),
          "banner": banner.decode(errors="replace"), "op": stopped["LatestOperationState"]}}"##
        ),
    );
    eprintln!(
        "Debian boot: first console line after {:.2} s, cloud-init finished after {:.1} s, ACPI power-off in {:.1} s",
        r["first"], r["ready"], r["stop"]
    );
    let out = r["console"].as_str().expect("console");
    assert!(out.contains("Datasource DataSourceNoCloud [seed=/dev/vdb]"), "cloud-init read the seed:\n{out}");
    assert!(out.contains("USERDATA-RAN as root on deb-1"), "UserData ran, HostName set:\n{out}");
    assert!(out.contains("ROOT-PASSWORD-OK"), "LoginSettings.Password is root's:\n{out}");
    assert!(r["banner"].as_str().is_some_and(|b| b.starts_with("SSH-2.0-OpenSSH")), "the login port answers: {r}");
    assert_eq!(r["op"], "SUCCESS", "{r}");
    let after = r["after"].as_str().expect("console");
    assert!(after.contains("reboot: Power down"), "systemd powered off at the button:\n{after}");
}
