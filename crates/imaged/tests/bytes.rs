//! End to end for image bytes: import (CLI, SDK, tccli), export, round trips through every
//! format, refusals of malicious images with their reason, dedup, crash recovery, fsck.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Backend, Creds, Server};

/// A raw disk with data, zero runs and text: 24 MiB, deterministic for a seed.
fn raw_fixture(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let mut state = seed | 1;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let mib = 1 << 20;
    let mut disk = vec![0u8; 24 * mib];
    disk[..4 * mib].copy_from_slice(&random(4 * mib));
    let text = b"NAME=\"imaged test\"\n".repeat(2 * mib / 19 + 1);
    disk[12 * mib..14 * mib].copy_from_slice(&text[..2 * mib]);
    disk[23 * mib..].copy_from_slice(&random(mib));
    // The first sector must not look like another format: write an MBR signature.
    disk[510] = 0x55;
    disk[511] = 0xaa;
    let path = dir.join(name);
    std::fs::write(&path, &disk).expect("write fixture");
    path
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Converts a raw fixture to `format` with qemu-img (the tests' independent reference tool).
fn convert(raw: &Path, format: &str) -> PathBuf {
    let out = raw.with_extension(format);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    match format {
        "raw" => return raw.to_owned(),
        "vhd" => {
            qemu_img(&["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", &s(raw), &s(&out)])
        }
        "vmdk" => {
            qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", &s(raw), &s(&out)])
        }
        other => qemu_img(&["convert", "-f", "raw", "-O", other, &s(raw), &s(&out)]),
    }
    out
}

/// Runs an `imaged` client command against the server as `creds`.
fn imaged(server: &Server, creds: &Creds, args: &[&str]) -> Output {
    support::imaged_client(server, creds, args)
}

fn cli_import(server: &Server, creds: &Creds, file: &Path, name: &str, format: &str) -> String {
    let out = imaged(
        server,
        creds,
        &[
            "import",
            &file.to_string_lossy(),
            "--name",
            name,
            "--os-type",
            "CentOS",
            "--os-version",
            "7",
            "--arch",
            "x86_64",
            "--format",
            format,
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "import {name}: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("import json");
    v["ImageId"].as_str().expect("ImageId").to_owned()
}

fn cli_export(server: &Server, creds: &Creds, id: &str, format: &str, dest: &Path) {
    let out = imaged(server, creds, &["export", id, "--format", format, "--output", &dest.to_string_lossy()]);
    assert!(out.status.success(), "export {id} as {format}: {}", String::from_utf8_lossy(&out.stderr));
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("read a") == std::fs::read(b).expect("read b")
}

/// Polls DescribeImages until the image leaves IMPORTING; returns the image object.
fn wait_settled(server: &Server, creds: &Creds, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r =
            server.python(creds, &format!(r#"result = call(client(), "DescribeImages", {{"ImageIds": ["{id}"]}})"#));
        let img = r["ok"]["ImageSet"][0].clone();
        if img["ImageState"] != "IMPORTING" {
            return img;
        }
        assert!(Instant::now() < deadline, "image {id} still importing");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn upload(server: &Server, creds: &Creds, file: &Path) -> String {
    let out = imaged(server, creds, &["upload", &file.to_string_lossy()]);
    assert!(out.status.success(), "upload: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("upload json");
    v["ImageUrl"].as_str().expect("ImageUrl").to_owned()
}

#[test]
fn every_format_round_trips_through_import_and_export() {
    let server = Server::start(Backend::Sqlite, "roundtrip").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "source.raw", 7);
    for format in ["raw", "qcow2", "vmdk", "vhd", "vhdx"] {
        let file = convert(&raw, format);
        let id = cli_import(&server, &server.admin, &file, &format!("rt-{format}"), format);
        let img = wait_settled(&server, &server.admin, &id);
        assert_eq!(img["ImageState"], "NORMAL");
        assert_eq!(img["SourceFormat"], format, "the detected format is recorded");
        let back = work.path().join(format!("back-{format}.raw"));
        cli_export(&server, &server.admin, &id, "raw", &back);
        assert!(same_bytes(&raw, &back), "{format}: the exported disk equals the source");
    }
    // Export in each format and re-import: the same content comes back.
    let first = cli_import(&server, &server.admin, &raw, "rt-source", "raw");
    for format in ["qcow2", "vhd", "vmdk"] {
        let exported = work.path().join(format!("exported.{format}"));
        cli_export(&server, &server.admin, &first, format, &exported);
        let again = cli_import(&server, &server.admin, &exported, &format!("rt-again-{format}"), format);
        let back = work.path().join(format!("again-{format}.raw"));
        cli_export(&server, &server.admin, &again, "raw", &back);
        assert!(same_bytes(&raw, &back), "{format}: export then re-import keeps the content");
    }
}

#[test]
fn malicious_and_mismatched_images_fail_with_their_reason() {
    let server = Server::start(Backend::Sqlite, "malicious").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "base.raw", 3);
    let base = convert(&raw, "qcow2");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let top = work.path().join("top.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-b", &s(&base), "-F", "qcow2", &s(&top)]);
    let cases = [(&top, None, "backing-file"), (&base, Some("raw"), "format-mismatch")];
    for (file, declared, reason) in cases {
        let url = upload(&server, &server.admin, file);
        let fmt = declared.map(|d| format!(r#", "ImageFormat": "{d}""#)).unwrap_or_default();
        let r = server.python(
            &server.admin,
            &format!(
                r#"result = call(client(), "ImportImage", {{"ImageUrl": "{url}", "ImageName": "bad-{reason}",
                    "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"{fmt}}})"#
            ),
        );
        let id = r["ok"]["ImageId"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
        let img = wait_settled(&server, &server.admin, &id);
        assert_eq!(img["ImageState"], "IMPORTFAILED", "{reason}");
        assert!(img["FailureReason"].as_str().is_some_and(|m| m.starts_with(reason)), "{reason}: {img}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["inspect", &s(&top), "--output", "json"])
        .output()
        .expect("inspect");
    assert!(!out.status.success(), "a rejected file exits non-zero");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((v["verdict"].as_str(), v["reason"].as_str()), (Some("reject"), Some("backing-file")));
    let out = Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["inspect", &s(&base), "--output", "json"])
        .output()
        .expect("inspect");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["verdict"].as_str(), v["format"].as_str(), v["virtual_size"].as_u64()),
        (Some("accept"), Some("qcow2"), Some(24 << 20))
    );
}

#[test]
fn import_requests_are_validated_before_any_byte_is_read() {
    let import_dir = tempfile::tempdir().expect("tempdir");
    let iso = import_dir.path().join("installer.iso");
    std::fs::write(&iso, vec![0u8; 1 << 20]).expect("iso");
    let config = format!("import_dir = \"{}\"\n[limits]\ncustom_images_per_region = 1\n", import_dir.path().display());
    let server = Server::start_with(Backend::Sqlite, "importrules", &config).expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "ok.raw", 5);
    let url = upload(&server, &server.admin, &raw);
    let url2 = upload(&server, &server.admin, &raw);
    let iso_url = format!("file://{}", iso.display());
    let r = server.python(
        &server.admin,
        &format!(
            r#"
def imp(**kw):
    p = {{"ImageUrl": "{url}", "ImageName": "ok", "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"}}
    p.update(kw)
    return call(client(), "ImportImage", p)
result = {{
    "os_type": imp(OsType="Plan9"),
    "os_version": imp(OsVersion="5"),
    "arch": imp(Architecture="sparc"),
    "license": imp(LicenseType="GPL"),
    "boot": imp(BootMode="legacy"),
    "family": imp(ImageFamily="9 bad"),
    "long_name": imp(ImageName="n" * 61),
    "scheme": imp(ImageUrl="ftp://example/disk.raw"),
    "outside": imp(ImageUrl="file:///etc/passwd"),
    "not_mine": imp(ImageUrl="upload://" + "0" * 32),
    "iso": imp(ImageUrl="{iso_url}"),
    "dry_run": imp(DryRun=True),
    "first": imp(),
    "duplicate": imp(ImageUrl="{url2}"),
    "quota": imp(ImageName="second", ImageUrl="{url2}"),
    "os_list": call(client(), "DescribeImportImageOs"),
}}
"#
        ),
    );
    for (case, code) in [
        ("os_type", "InvalidImageOsType.Unsupported"),
        ("os_version", "InvalidImageOsVersion.Unsupported"),
        ("arch", "InvalidParameterValue"),
        ("license", "InvalidParameterValue.InvalidLicenseType"),
        ("boot", "InvalidParameterValue.InvalidBootMode"),
        ("family", "InvalidParameterValue.InvalidImageFamily"),
        ("long_name", "InvalidParameterValue.TooLarge"),
        ("scheme", "InvalidParameter.InvalidParameterUrlError"),
        ("outside", "InvalidParameter.InvalidParameterUrlError"),
        ("not_mine", "InvalidParameter.InvalidParameterUrlError"),
        ("iso", "InvalidParameterValue.ISOMustImportByForce"),
        ("duplicate", "InvalidImageName.Duplicate"),
        ("quota", "ImageQuotaLimitExceeded"),
    ] {
        assert_eq!(r[case]["error"], code, "{case}: {}", r[case]);
    }
    assert_eq!(r["dry_run"]["ok"]["ImageId"], Value::Null, "a dry run creates nothing");
    assert!(r["first"]["ok"]["ImageId"].is_string());
    let linux = r["os_list"]["ok"]["ImportImageOsListSupported"]["Linux"].as_array().expect("linux list");
    assert!(linux.iter().any(|o| o == "CentOS"));
}

#[test]
fn tccli_imports_from_an_upload_and_exports() {
    let server = Server::start(Backend::Sqlite, "tccli-import").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "t.raw", 9);
    let qcow = convert(&raw, "qcow2");
    let url = upload(&server, &server.admin, &qcow);
    let out = server.tccli(
        &server.admin,
        &[
            "cvm",
            "ImportImage",
            "--region",
            "ap-guangzhou",
            "--ImageUrl",
            &url,
            "--ImageName",
            "from-tccli",
            "--OsType",
            "Ubuntu",
            "--OsVersion",
            "22",
            "--Architecture",
            "x86_64",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).expect("json")["ImageId"].as_str().expect("id").to_owned();
    assert_eq!(wait_settled(&server, &server.admin, &id)["ImageState"], "NORMAL");
    let out = server.tccli(
        &server.admin,
        &[
            "cvm",
            "ExportImages",
            "--region",
            "ap-guangzhou",
            "--BucketName",
            "exports",
            "--ImageIds",
            &format!("[\"{id}\"]"),
            "--ExportFormat",
            "QCOW2",
            "--FileNamePrefixList",
            "[\"nightly\"]",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["CosPaths"][0], format!("nightly_{id}_system.qcow2"));
    assert!(v["TaskId"].as_u64().is_some());
    let public = server.tccli(
        &server.admin,
        &[
            "cvm",
            "ExportImages",
            "--region",
            "ap-guangzhou",
            "--BucketName",
            "exports",
            "--ImageIds",
            "[\"img-eb30mz89\"]",
        ],
    );
    assert_eq!(public.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&public.stderr).contains("UnsupportedOperation.PublicImageExportUnsupported"));
}

#[test]
fn the_same_image_imported_five_times_is_stored_once() {
    let server = Server::start(Backend::Sqlite, "dedup").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "d.raw", 11);
    let blocks_dir = server.dir.path().join("blocks").join("regions").join("ap-guangzhou");
    let stored = || -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p).map_or(0, |d| {
                d.flatten()
                    .map(|e| if e.path().is_dir() { walk(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
                    .sum()
            })
        }
        walk(&blocks_dir)
    };
    cli_import(&server, &server.admin, &raw, "dedup-0", "raw");
    let once = stored();
    assert!(once > 0 && once < 24 << 20, "zeros are not stored and text compresses: {once}");
    let qcow = convert(&raw, "qcow2");
    for n in 1..5 {
        let (file, fmt) = if n % 2 == 0 { (&raw, "raw") } else { (&qcow, "qcow2") };
        cli_import(&server, &server.admin, file, &format!("dedup-{n}"), fmt);
    }
    // Uploads of the qcow2 file left its file blocks unreferenced: GC takes them after the
    // grace period (0 here), and what remains is one copy of the disk.
    std::thread::sleep(Duration::from_millis(1100));
    let gc = server.cli(&["gc", "--grace-secs", "0"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    assert_eq!(stored(), once, "five imports of one disk store one copy");
    // Sending the blocks as references with proofs (what a remote client does) gives the same
    // image and stores nothing more.
    let out = imaged(
        &server,
        &server.admin,
        &[
            "import",
            &raw.to_string_lossy(),
            "--name",
            "by-reference",
            "--os-type",
            "CentOS",
            "--os-version",
            "7",
            "--arch",
            "x86_64",
            "--upload-refs",
            "always",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).expect("json")["ImageId"].as_str().expect("id").to_owned();
    let back = work.path().join("by-reference.raw");
    cli_export(&server, &server.admin, &id, "raw", &back);
    assert!(same_bytes(&raw, &back), "the referenced blocks are the disk's");
    assert_eq!(stored(), once, "references store nothing new");
    let fsck = server.cli(&["fsck"]);
    assert!(fsck.status.success(), "GC kept every referenced block: {}", String::from_utf8_lossy(&fsck.stdout));
}

#[test]
fn a_server_killed_during_an_import_finishes_it_after_restart() {
    let config = "job_lease_secs = 1\n";
    let mut server = Server::start_with(Backend::Sqlite, "crash", config).expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "c.raw", 13);
    let url = upload(&server, &server.admin, &raw);
    let r = server.python(
        &server.admin,
        &format!(
            r#"result = call(client(), "ImportImage", {{"ImageUrl": "{url}", "ImageName": "crash",
                "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"}})"#
        ),
    );
    let id = r["ok"]["ImageId"].as_str().expect("id").to_owned();
    server.restart(); // SIGKILL, wherever the job was
    let img = wait_settled(&server, &server.admin, &id);
    assert_eq!(img["ImageState"], "NORMAL", "{img}");
    let back = work.path().join("back.raw");
    cli_export(&server, &server.admin, &id, "raw", &back);
    assert!(same_bytes(&raw, &back), "the image restored after the crash is complete");
    let fsck = server.cli(&["fsck"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
}

#[test]
fn fsck_names_the_image_a_damaged_block_belongs_to() {
    let server = Server::start(Backend::Sqlite, "fsck").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "f.raw", 17);
    let id = cli_import(&server, &server.admin, &raw, "fsck-me", "raw");
    let clean = server.cli(&["fsck", "--region", "ap-guangzhou"]);
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let blocks = server.dir.path().join("blocks/regions/ap-guangzhou/blocks");
    let victim = std::fs::read_dir(&blocks)
        .expect("blocks dir")
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).expect("subdir").flatten())
        .next()
        .expect("a block file")
        .path();
    let mut bytes = std::fs::read(&victim).expect("read block");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).expect("damage");
    let out = server.cli(&["fsck", "--region", "ap-guangzhou"]);
    assert!(!out.status.success(), "damage is an error");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let bad = &report[0]["bad_blocks"][0];
    assert_eq!(bad["problem"], "damaged");
    assert_eq!(bad["images"], serde_json::json!([id]));
    let public = server.cli(&["fsck", "--region", "public"]);
    assert!(public.status.success(), "the catalogue's demo disks are stored and intact");
    let report: Value = serde_json::from_slice(&public.stdout).expect("json");
    assert!(report[0]["checked_blocks"].as_u64().is_some_and(|n| n > 0));
}

#[test]
fn an_operator_adds_a_real_public_image_offered_in_every_region() {
    let server = Server::start(Backend::Sqlite, "public-add").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "p.raw", 19);
    let qcow = convert(&raw, "qcow2");
    let out = server.cli(&[
        "public-image",
        "add",
        &qcow.to_string_lossy(),
        "--name",
        "Debian 12 (operator)",
        "--os-name",
        "Debian 12.5 64bit",
        "--platform",
        "Debian",
        "--format",
        "qcow2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).expect("json")["ImageId"].as_str().expect("id").to_owned();
    let bad = server.cli(&[
        "public-image",
        "add",
        &qcow.to_string_lossy(),
        "--name",
        "x",
        "--os-name",
        "x",
        "--platform",
        "x",
        "--format",
        "raw",
    ]);
    assert!(!bad.status.success(), "a declared format that the bytes contradict is refused");
    let alice = server.create_account("alice");
    let r = server.python(
        &alice,
        &format!(
            r#"result = [call(client(region), "DescribeImages", {{"ImageIds": ["{id}"]}}) for region in ["ap-guangzhou", "ap-tokyo"]]"#
        ),
    );
    for answer in r.as_array().expect("answers") {
        let img = &answer["ok"]["ImageSet"][0];
        assert_eq!(img["ImageType"], "PUBLIC_IMAGE");
        assert_eq!(img["ImageState"], "NORMAL");
        assert_eq!(img["SourceFormat"], "qcow2");
        assert_eq!(img["Platform"], "Debian");
    }
}

#[test]
fn an_interrupted_upload_resumes_where_the_server_stopped() {
    let server = Server::start(Backend::Sqlite, "resume").expect("sqlite");
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "r.raw", 23);
    // The first 5 MiB arrived before the client died.
    let part = work.path().join("part.raw");
    std::fs::write(&part, &std::fs::read(&raw).expect("read")[..5 << 20]).expect("write");
    let out = imaged(&server, &server.admin, &["upload", &part.to_string_lossy()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = v["UploadId"].as_str().expect("id").to_owned();
    let out = imaged(&server, &server.admin, &["upload", &raw.to_string_lossy(), "--resume", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = server.python(
        &server.admin,
        &format!(
            r#"result = call(client(), "ImportImage", {{"ImageUrl": "upload://{id}", "ImageName": "resumed",
                "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"}})"#
        ),
    );
    let image = r["ok"]["ImageId"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned();
    assert_eq!(wait_settled(&server, &server.admin, &image)["ImageState"], "NORMAL");
    let back = work.path().join("back.raw");
    cli_export(&server, &server.admin, &image, "raw", &back);
    assert!(same_bytes(&raw, &back), "the resumed upload holds the whole file");
    let stranger = server.create_account("stranger");
    let other = server.python(
        &stranger,
        &format!(
            r#"result = call(client(), "ImportImage", {{"ImageUrl": "upload://{id}", "ImageName": "stolen",
                "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"}})"#
        ),
    );
    assert_eq!(other["error"], "InvalidParameter.InvalidParameterUrlError", "an upload is its owner's only");
}

/// A static file server (Python's `http.server`) on 127.0.0.1:0, HTTPS when given a certificate
/// and key; killed on drop.
struct FileServer {
    child: std::process::Child,
    port: u16,
}

impl FileServer {
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Self {
        let wrap = match tls {
            Some((cert, key)) => format!(
                "import ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nctx.load_cert_chain('{}', '{}')\nsrv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let script = format!(
            "import functools, http.server, sys\nh = functools.partial(http.server.SimpleHTTPRequestHandler, directory='{}')\nsrv = http.server.HTTPServer(('127.0.0.1', 0), h)\n{wrap}print(srv.server_address[1], flush=True)\nsrv.serve_forever()\n",
            dir.display()
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
            .expect("port");
        Self { child, port: line.trim().parse().expect("port number") }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn import_url(server: &Server, url: &str, name: &str) -> Value {
    let r = server.python(
        &server.admin,
        &format!(
            r#"result = call(client(), "ImportImage", {{"ImageUrl": "{url}", "ImageName": "{name}",
                "OsType": "CentOS", "OsVersion": "7", "Architecture": "x86_64"}})"#
        ),
    );
    let id = r["ok"]["ImageId"].as_str().unwrap_or_else(|| panic!("ImportImage {url}: {r}")).to_owned();
    wait_settled(server, &server.admin, &id)
}

#[test]
fn images_are_imported_from_http_and_verified_https_urls() {
    let work = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixture(work.path(), "served.raw", 21);
    let (cert, key) = support::self_signed_cert(work.path());
    let plain = FileServer::start(work.path(), None);
    let tls = FileServer::start(work.path(), Some((&cert, &key)));

    // The file servers are on loopback: the operator allows it (imports reach only public
    // addresses by default).
    let allow = "[imports]\nallow = [\"127.0.0.0/8\"]\n";
    let config = format!("https_ca_file = \"{}\"\n{allow}", cert.display());
    let server = Server::start_with(Backend::Sqlite, "https", &config).expect("sqlite");
    for (scheme, port) in [("http", plain.port), ("https", tls.port)] {
        let img = import_url(&server, &format!("{scheme}://127.0.0.1:{port}/served.raw"), &format!("from-{scheme}"));
        assert_eq!(img["ImageState"], "NORMAL", "{scheme}: {img}");
        let back = work.path().join(format!("back-{scheme}.raw"));
        cli_export(&server, &server.admin, img["ImageId"].as_str().expect("id"), "raw", &back);
        assert!(same_bytes(&raw, &back), "{scheme}: the imported image is the served file");
    }
    let missing = import_url(&server, &format!("https://127.0.0.1:{}/absent.raw", tls.port), "absent");
    assert_eq!(missing["ImageState"], "IMPORTFAILED");
    assert!(missing["FailureReason"].as_str().is_some_and(|r| r.contains("404")), "{missing}");

    // Without the operator's CA, the self-signed certificate is refused.
    let untrusting = Server::start_with(Backend::Sqlite, "https_untrusted", allow).expect("sqlite");
    let refused = import_url(&untrusting, &format!("https://127.0.0.1:{}/served.raw", tls.port), "untrusted");
    assert_eq!(refused["ImageState"], "IMPORTFAILED");
    assert!(refused["FailureReason"].as_str().is_some_and(|r| r.contains("certificate")), "{refused}");
}
