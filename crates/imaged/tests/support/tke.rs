//! TKE end-to-end support: Python helpers for the official SDK's TKE client and the extension
//! service, the OS a node's disk really holds, fingerprints of disks, and a webhook receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::guest::{disk_of, read_file};
use super::{Creds, Server};

/// Python helpers: `tke()`, `ext()`, `settle_nodes(t, cluster)`, and the CVM ones.
const PY: &str = r#"
from tencentcloud.tke.v20180525 import tke_client
from tencentcloud.common.common_client import CommonClient

def profile():
    return ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=os.environ["IMAGED_ENDPOINT"],
                                                 reqMethod="POST"), language="en-US")

def cred():
    return credential.Credential(os.environ["SECRET_ID"], os.environ["SECRET_KEY"])

def tke(region="ap-guangzhou"):
    return tke_client.TkeClient(cred(), region, profile())

def ext():
    return CommonClient("imaged", "2026-12-01", cred(), "ap-guangzhou", profile=profile())

def settle_nodes(t, cluster, timeout=90):
    deadline = time.time() + timeout
    while True:
        s = call(t, "DescribeClusterInstances", {"ClusterId": cluster, "Limit": 100})["ok"]["InstanceSet"]
        if all(i["InstanceState"] != "initializing" for i in s):
            return {i["InstanceId"]: i for i in s}
        if time.time() > deadline:
            raise Exception("nodes did not settle: %s" % s)
        time.sleep(0.1)

def run_para(count=1, image="img-9qabwvbn"):
    # The ImageId inside is replaced by the OS level's image.
    return json.dumps({"Placement": {"Zone": "ap-guangzhou-3"}, "InstanceCount": count, "ImageId": image,
                       "InstanceType": "S5.MEDIUM2"})
"#;

/// Runs a snippet with the CVM, TKE and extension helpers in scope.
pub fn py(server: &Server, creds: &Creds, snippet: &str) -> Value {
    super::guest::sdk(server, creds, &format!("{PY}\n{snippet}"))
}

/// The image whose filesystem an instance's disk holds (the demo disks name it in
/// `/etc/os-release`).
pub fn os_of(server: &Server, instance: &str) -> String {
    let work = tempfile::tempdir().expect("tempdir");
    let release = read_file(&disk_of(server, instance), "/etc/os-release", work.path()).expect("an os-release");
    release
        .lines()
        .find_map(|l| l.strip_prefix("IMAGED_IMAGE_ID="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no IMAGED_IMAGE_ID in {release}"))
}

/// The bytes of an instance's disk as stored: its overlay file and the base it sits on.
pub fn fingerprint(server: &Server, instance: &str) -> (Vec<u8>, String) {
    let disk = disk_of(server, instance);
    let overlay = std::fs::read(&disk).expect("overlay");
    let out = super::guest::tool("qemu-img", &["info", "--output=json", &disk.to_string_lossy()]);
    let info: Value = serde_json::from_slice(&out.stdout).expect("qemu-img json");
    (overlay, info["backing-filename"].as_str().unwrap_or("").to_owned())
}

/// A webhook receiver on loopback: answers 500 to the first `failures` requests, then 200,
/// and keeps every body it was sent.
pub struct Receiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<Value>>>,
    pub attempts: Arc<Mutex<u32>>,
}

impl Receiver {
    pub fn start(failures: u32) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hooks/imaged", listener.local_addr().expect("addr"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0u32));
        let (b, a) = (Arc::clone(&bodies), Arc::clone(&attempts));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let n = {
                    let mut a = a.lock().expect("lock");
                    *a += 1;
                    *a
                };
                let status = if n <= failures { "500 Internal Server Error" } else { "200 OK" };
                if n > failures {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        b.lock().expect("lock").push(v);
                    }
                }
                let mut stream = reader.into_inner();
                let _ = stream.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                );
            }
        });
        Receiver { url, bodies, attempts }
    }

    /// The bodies received so far, waiting up to `secs` for at least `n`.
    pub fn wait_for(&self, n: usize, secs: u64) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let got = self.bodies.lock().expect("lock").clone();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
