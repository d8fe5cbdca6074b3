//! End-to-end test support: the real `imaged` binary on port 0, a venv with the official
//! Tencent Cloud clients (cached in `target/e2e-venv`), and a raw signed HTTP client for the
//! inputs no official client would send.

#![allow(dead_code, unreachable_pub)]

pub mod guest;
pub mod hostile;
pub mod node;
pub mod tke;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The official clients, pinned.
const PIP_PACKAGES: &[&str] = &["tencentcloud-sdk-python==3.1.195", "tccli==3.1.189.1"];

/// Where the venv lives: `IMAGED_E2E_VENV`, else `target/e2e-venv` of this workspace.
fn venv_dir() -> PathBuf {
    std::env::var_os("IMAGED_E2E_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/e2e-venv"))
}

/// The venv with the official clients, created on first use.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = venv_dir();
        let marker = dir.join(format!(".ready-{}", PIP_PACKAGES.join("+")));
        if marker.exists() {
            return dir;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let python = std::env::var("IMAGED_PYTHON").unwrap_or_else(|_| "python3".into());
        let status = Command::new(&python).args(["-m", "venv"]).arg(&dir).status().expect("run python3 -m venv");
        assert!(status.success(), "creating the venv failed");
        let status = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PIP_PACKAGES)
            .status()
            .expect("run pip");
        assert!(status.success(), "installing the official clients failed");
        std::fs::write(&marker, b"").expect("write venv marker");
        dir
    })
}

/// A self-signed certificate for `127.0.0.1` (IP SAN) and its key, written into `dir` with
/// openssl; returns (certificate, key).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let openssl = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(openssl.status.success(), "{}", String::from_utf8_lossy(&openssl.stderr));
    (cert, key)
}

/// Credentials as `credentials.json` and `imaged account create` print them.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Creds {
    pub account_id: String,
    pub secret_id: String,
    pub secret_key: String,
}

/// Which metadata backend a server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub admin: Creds,
    /// What the server printed before it listened (this start).
    pub banner: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
}

/// The PostgreSQL URL for tests, or `None` (said on stderr) when unset.
pub fn pg_url(test: &str) -> Option<String> {
    let url = std::env::var("IMAGED_TEST_PG_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("IMAGED_TEST_PG_URL is not set: skipping the PostgreSQL run of `{test}`");
    }
    url
}

fn unique(label: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("e2e_{label}_{}_{nanos}", std::process::id())
}

impl Server {
    /// Starts `imaged serve` on 127.0.0.1:0 with a fresh data directory (and, for PostgreSQL,
    /// a fresh schema); `None` when the backend is PostgreSQL and no URL is configured.
    pub fn start(backend: Backend, test: &str) -> Option<Server> {
        Self::start_with(backend, test, "")
    }

    /// As [`Server::start`], with extra config-file text.
    pub fn start_with(backend: Backend, test: &str, config: &str) -> Option<Server> {
        Self::start_under(backend, test, config, &[])
    }

    /// As [`Server::start_with`], the server run under `wrapper` (e.g. `prlimit --nofile=…`).
    pub fn start_under(backend: Backend, test: &str, config: &str, wrapper: &[&str]) -> Option<Server> {
        Self::start_full(backend, test, config, wrapper, &[])
    }

    /// As [`Server::start`], with config-file text and extra environment.
    pub fn start_config_env(backend: Backend, test: &str, config: &str, extra: &[(&str, &str)]) -> Option<Server> {
        Self::start_full(backend, test, config, &[], extra)
    }

    /// As [`Server::start`], with extra environment for the server and the operator commands.
    pub fn start_env(backend: Backend, test: &str, extra: &[(&str, &str)]) -> Option<Server> {
        Self::start_full(backend, test, "", &[], extra)
    }

    fn start_full(
        backend: Backend,
        test: &str,
        config: &str,
        wrapper: &[&str],
        extra: &[(&str, &str)],
    ) -> Option<Server> {
        let dir = tempfile::tempdir().expect("tempdir");
        // Guests run only in the tests that ask for them (`IMAGED_HYPERVISOR=qemu`).
        let mut env = vec![("IMAGED_LOG".to_owned(), "warn".to_owned()), ("IMAGED_HYPERVISOR".into(), "none".into())];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        if backend == Backend::Postgres {
            env.push(("IMAGED_DATABASE_URL".into(), pg_url(test)?));
            env.push(("IMAGED_DATABASE_SCHEMA".into(), unique(test)));
        }
        std::fs::write(dir.path().join("imaged.toml"), config).expect("config");
        let wrapper: Vec<String> = wrapper.iter().map(|w| (*w).to_owned()).collect();
        let (child, addr, banner) = spawn(dir.path(), &env, &wrapper);
        assert!(banner.iter().any(|l| l.contains("administrator")), "first start announces the admin: {banner:?}");
        let admin: Creds =
            serde_json::from_slice(&std::fs::read(dir.path().join("credentials.json")).expect("credentials.json"))
                .expect("credentials json");
        let server = Server { child, addr, dir, admin, banner, env, wrapper };
        server.wait_healthy();
        Some(server)
    }

    /// A second server on the same metadata store (PostgreSQL: the same schema) with its own
    /// data directory holding the same master key, as another host of one deployment.
    pub fn sibling(&self) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(self.dir.path().join("master.key"), dir.path().join("master.key")).expect("master key");
        std::fs::write(dir.path().join("imaged.toml"), "").expect("config");
        let (child, addr, banner) = spawn(dir.path(), &self.env, &self.wrapper);
        let server = Server {
            child,
            addr,
            dir,
            banner,
            admin: self.admin.clone(),
            env: self.env.clone(),
            wrapper: self.wrapper.clone(),
        };
        server.wait_healthy();
        server
    }

    /// `hosts.len()` servers started at the same moment on one empty PostgreSQL schema, each
    /// with its own data directory and host id, all reading one master-key file, with `extra`
    /// environment (the object store): several hosts of one deployment. `None` without
    /// PostgreSQL. Every server gets the administrator's credentials from the one server that
    /// wrote them (the test checks that exactly one did).
    pub fn cluster(test: &str, hosts: &[&str], extra: &[(&str, &str)]) -> Option<(Vec<Server>, tempfile::TempDir)> {
        let shared = tempfile::tempdir().expect("tempdir");
        let key: String = (0..32).map(|i| format!("{:02x}", (unique(test).len() * 31 + i * 7) % 251)).collect();
        let key_file = shared.path().join("master.key");
        std::fs::write(&key_file, key).expect("master key");
        let mut env = vec![
            ("IMAGED_LOG".to_owned(), "warn".to_owned()),
            ("IMAGED_HYPERVISOR".into(), "none".into()),
            ("IMAGED_DATABASE_URL".into(), pg_url(test)?),
            ("IMAGED_DATABASE_SCHEMA".into(), unique(test)),
            ("IMAGED_MASTER_KEY_FILE".into(), key_file.to_string_lossy().into_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let starts: Vec<_> = hosts
            .iter()
            .map(|host| {
                let mut env = env.clone();
                env.push(("IMAGED_HOST_ID".into(), (*host).to_owned()));
                std::thread::spawn(move || {
                    let dir = tempfile::tempdir().expect("tempdir");
                    std::fs::write(dir.path().join("imaged.toml"), "").expect("config");
                    let (child, addr, banner) = spawn(dir.path(), &env, &[]);
                    (child, addr, dir, env, banner)
                })
            })
            .collect();
        let joined: Vec<_> = starts.into_iter().map(|t| t.join()).collect();
        if joined.iter().any(Result::is_err) {
            // Leave no server of a failed start running.
            for (mut child, ..) in joined.into_iter().flatten() {
                let _ = child.kill();
                let _ = child.wait();
            }
            panic!("a server of the cluster did not start (its error is above)");
        }
        let started: Vec<_> = joined.into_iter().flatten().collect();
        let admin = started
            .iter()
            .find_map(|(_, _, dir, _, _)| std::fs::read(dir.path().join("credentials.json")).ok())
            .map(|json| serde_json::from_slice::<Creds>(&json).expect("credentials json"))
            .expect("one server wrote the administrator's credentials");
        let servers: Vec<Server> = started
            .into_iter()
            .map(|(child, addr, dir, env, banner)| Server {
                child,
                addr,
                dir,
                admin: admin.clone(),
                banner,
                env,
                wrapper: Vec::new(),
            })
            .collect();
        for s in &servers {
            s.wait_healthy();
        }
        Some((servers, shared))
    }

    /// Stops the server and starts it again on the same data; returns what it printed before
    /// it listened.
    pub fn restart(&mut self) -> Vec<String> {
        self.kill();
        self.start_again()
    }

    /// Kills the server with SIGKILL (its guests keep running).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed server again on the same data; returns what it printed before it
    /// listened.
    pub fn start_again(&mut self) -> Vec<String> {
        let (child, addr, banner) = spawn(self.dir.path(), &self.env, &self.wrapper);
        self.child = child;
        self.addr = addr;
        self.banner = banner.clone();
        self.wait_healthy();
        banner
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(resp) =
                raw(&self.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".as_bytes())
            {
                if resp.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not become healthy");
    }

    /// Runs `imaged ARGS --data-dir DIR` against this server's data (operator commands).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_imaged"))
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run imaged")
    }

    /// Runs an operator command that must succeed and print JSON; the JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(out.status.success(), "imaged {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("imaged {args:?} printed no JSON ({e})"))
    }

    /// `imaged account create --name NAME`, parsed.
    pub fn create_account(&self, name: &str) -> Creds {
        let out = self.cli(&["account", "create", "--name", name]);
        assert!(out.status.success(), "account create failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("account json")
    }

    /// Runs a Python snippet with the official SDK; `prelude.py` helpers are in scope.
    /// The snippet sets `result`, which comes back as JSON.
    pub fn python(&self, creds: &Creds, snippet: &str) -> Value {
        let script = format!("{}\n{}\nprint(json.dumps(result))\n", PYTHON_PRELUDE, snippet);
        let out = Command::new(venv().join("bin/python"))
            .arg("-c")
            .arg(script)
            .env("IMAGED_ENDPOINT", &self.addr)
            .env("SECRET_ID", &creds.secret_id)
            .env("SECRET_KEY", &creds.secret_key)
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .output()
            .expect("run python");
        assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("python printed json")
    }

    /// Runs `tccli ARGS --endpoint http://ADDR` with credentials from the environment.
    pub fn tccli(&self, creds: &Creds, args: &[&str]) -> Output {
        let home = tempfile::tempdir().expect("home");
        Command::new(venv().join("bin/tccli"))
            .args(args)
            .args(["--endpoint", &format!("http://{}", self.addr)])
            .env("HOME", home.path())
            .env("TENCENTCLOUD_SECRET_ID", &creds.secret_id)
            .env("TENCENTCLOUD_SECRET_KEY", &creds.secret_key)
            .env_remove("TCCLI_PROFILE")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .output()
            .expect("run tccli")
    }

    /// A signed POST with an arbitrary body and headers, over a raw socket.
    pub fn post(&self, creds: &Creds, action: &str, body: &[u8], extra: &[(&str, &str)]) -> RawResponse {
        let ts = now();
        signed_request(&self.addr, creds, "POST", "", "application/json", action, body, ts, extra)
    }

    /// A signed GET with a raw query string.
    pub fn get(&self, creds: &Creds, action: &str, query: &str) -> RawResponse {
        signed_request(&self.addr, creds, "GET", query, "application/x-www-form-urlencoded", action, b"", now(), &[])
    }
}

/// Runs an `imaged` client command (`upload`, `import`, `export`, …) against `server` as `creds`
/// in ap-guangzhou.
pub fn imaged_client(server: &Server, creds: &Creds, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(args)
        .env("IMAGED_ENDPOINT", format!("http://{}", server.addr))
        .env("TENCENTCLOUD_SECRET_ID", &creds.secret_id)
        .env("TENCENTCLOUD_SECRET_KEY", &creds.secret_key)
        .env("TENCENTCLOUD_REGION", "ap-guangzhou")
        .output()
        .expect("run imaged")
}

/// Spawns `imaged serve` on port 0; returns the child, its address and the lines it printed first.
fn spawn(dir: &Path, env: &[(String, String)], wrapper: &[String]) -> (Child, String, Vec<String>) {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(env!("CARGO_BIN_EXE_imaged"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_imaged")),
    };
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn imaged");
    let stdout = child.stdout.take().expect("stdout");
    let mut banner = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        if let Some(rest) = line
            .strip_prefix("imaged listening on http://")
            .or_else(|| line.strip_prefix("imaged listening on https://"))
        {
            let addr = rest.split_whitespace().next().expect("address").to_owned();
            return (child, addr, banner);
        }
        banner.push(line);
    }
    let status = child.wait();
    panic!("the server exited before listening ({status:?}): {banner:?}");
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Guests outlive their server (a restarted one adopts them): end this one's.
        for pid in guest_pids(self.dir.path()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The QEMU processes running guests of the data directory `dir` (they hold their instances'
/// disks open).
pub fn guest_pids(dir: &Path) -> Vec<u32> {
    imaged::benchkit::guest_pids(dir)
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A signed request; `extra` headers are added after the standard ones and may override them
/// (a header named in `extra` replaces the standard one).
#[allow(clippy::too_many_arguments)]
pub fn signed_request(
    addr: &str,
    creds: &Creds,
    method: &str,
    query: &str,
    content_type: &str,
    action: &str,
    body: &[u8],
    ts: i64,
    extra: &[(&str, &str)],
) -> RawResponse {
    signed_path_request(addr, creds, method, "/", query, content_type, action, body, ts, extra)
}

/// As [`signed_request`], to `path` (`/download`, `/upload`).
#[allow(clippy::too_many_arguments)]
pub fn signed_path_request(
    addr: &str,
    creds: &Creds,
    method: &str,
    path: &str,
    query: &str,
    content_type: &str,
    action: &str,
    body: &[u8],
    ts: i64,
    extra: &[(&str, &str)],
) -> RawResponse {
    let bytes = signed_request_bytes(addr, creds, method, path, query, content_type, action, body, ts, extra);
    raw(addr, &bytes).expect("request")
}

/// The bytes of a signed request (as [`signed_path_request`] sends them).
#[allow(clippy::too_many_arguments)]
pub fn signed_request_bytes(
    addr: &str,
    creds: &Creds,
    method: &str,
    path: &str,
    query: &str,
    content_type: &str,
    action: &str,
    body: &[u8],
    ts: i64,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let req = imaged_api::tc3::ClientRequest { method, path, query, content_type, host: addr, body };
    let auth = imaged_api::tc3::authorization_header(&creds.secret_id, &creds.secret_key, "cvm", ts, &req);
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), addr.into()),
        ("Content-Type".into(), content_type.into()),
        ("Authorization".into(), auth),
        ("X-TC-Action".into(), action.into()),
        ("X-TC-Version".into(), "2017-03-12".into()),
        ("X-TC-Timestamp".into(), ts.to_string()),
        ("X-TC-Region".into(), "ap-guangzhou".into()),
        ("X-TC-Language".into(), "en-US".into()),
    ];
    for (k, v) in extra {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        if !v.is_empty() {
            headers.push(((*k).into(), (*v).into()));
        }
    }
    let target = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// `Response.Error.Code`, if any.
    pub fn error_code(&self) -> Option<String> {
        self.json()["Response"]["Error"]["Code"].as_str().map(str::to_owned)
    }

    /// Asserts the envelope rules every API answer follows: 200, `application/json` exactly, a RequestId.
    pub fn assert_envelope(&self) -> &Self {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        assert!(v["Response"]["RequestId"].as_str().is_some_and(|s| s.len() == 36), "RequestId missing: {v}");
        self
    }
}

/// Sends bytes and reads the whole response (the request must say `Connection: close`).
pub fn raw(addr: &str, request: &[u8]) -> std::io::Result<RawResponse> {
    read_response(TcpStream::connect(addr)?, request)
}

/// As [`raw`], from the local address `source` (another loopback address: another client).
pub fn raw_from(source: &str, addr: &str, request: &[u8]) -> std::io::Result<RawResponse> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{source}:0").parse().map_err(std::io::Error::other)?)?;
        socket.connect(addr.parse().map_err(std::io::Error::other)?).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    read_response(stream, request)
}

fn read_response(mut stream: TcpStream, request: &[u8]) -> std::io::Result<RawResponse> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The server may answer (e.g. size limits) before reading everything: ignore write errors.
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
        .collect::<Vec<_>>();
    let mut body = buf[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked") {
        body = dechunk(&body);
    }
    Ok(RawResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        data = &data[pos + 2 + size + 2..];
    }
    out
}

/// Helpers every Python snippet can use.
const PYTHON_PRELUDE: &str = r#"
import json, os, time
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.cvm.v20170312 import cvm_client, models

def client(region="ap-guangzhou", method="POST", sid=None, skey=None, language="en-US"):
    hp = HttpProfile(protocol="http", endpoint=os.environ["IMAGED_ENDPOINT"], reqMethod=method)
    cred = credential.Credential(sid or os.environ["SECRET_ID"], skey or os.environ["SECRET_KEY"])
    return cvm_client.CvmClient(cred, region, ClientProfile(httpProfile=hp, language=language))

def call(c, action, params=None):
    try:
        return {"ok": c.call_json(action, params or {})["Response"]}
    except TencentCloudSDKException as e:
        return {"error": e.get_code(), "message": e.get_message(), "request_id": e.get_request_id()}
"#;
