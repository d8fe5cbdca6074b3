//! The official Node.js SDK (npm `tencentcloud-sdk-nodejs-cvm` and `-tke` with `-common`), installed once
//! into `target/e2e-node` and reused, and a runner for snippets against a server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use super::{Creds, Server};

/// The SDK packages, pinned.
const NPM_PACKAGES: &[&str] = &[
    "tencentcloud-sdk-nodejs-common@4.1.220",
    "tencentcloud-sdk-nodejs-cvm@4.1.316",
    "tencentcloud-sdk-nodejs-tke@4.1.314",
];

/// `target/e2e-node`, with the SDK installed (on first use).
pub fn node_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/e2e-node");
        let marker = dir.join(format!(".ready-{}", NPM_PACKAGES.join("+")));
        if marker.exists() {
            return dir;
        }
        std::fs::create_dir_all(&dir).expect("node dir");
        let status = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--no-save", "--prefix"])
            .arg(&dir)
            .args(NPM_PACKAGES)
            .status()
            .expect("run npm");
        assert!(status.success(), "installing the Node.js SDK failed");
        std::fs::write(&marker, b"").expect("marker");
        dir
    })
}

/// Helpers every snippet can use: `client(endpoint, region)`, `tkeClient(endpoint, region)` and
/// `call(c, action, params)`.
const PRELUDE: &str = r#"
const { cvm } = require("tencentcloud-sdk-nodejs-cvm");
const { tke } = require("tencentcloud-sdk-nodejs-tke");
function tkeClient(endpoint = process.env.IMAGED_ENDPOINT, region = "ap-guangzhou") {
  return new tke.v20180525.Client({
    credential: { secretId: process.env.SECRET_ID, secretKey: process.env.SECRET_KEY },
    region,
    profile: { httpProfile: { endpoint, protocol: "http://", reqMethod: "POST" }, language: "en-US" },
  });
}
function client(endpoint = process.env.IMAGED_ENDPOINT, region = "ap-guangzhou", method = "POST") {
  return new cvm.v20170312.Client({
    credential: { secretId: process.env.SECRET_ID, secretKey: process.env.SECRET_KEY },
    region,
    profile: { httpProfile: { endpoint, protocol: "http://", reqMethod: method }, language: "en-US" },
  });
}
async function call(c, action, params) {
  try {
    return { ok: await c.request(action, params || {}) };
  } catch (e) {
    return { error: e.code || null, message: e.message, request_id: e.requestId || null, http: e.httpCode || null };
  }
}
"#;

/// Runs an async snippet with the SDK; the snippet sets `result`, which comes back as JSON.
pub fn node(server: &Server, creds: &Creds, snippet: &str) -> Value {
    let script = format!(
        "{PRELUDE}\n(async () => {{\nlet result;\n{snippet}\nconsole.log(JSON.stringify(result));\n}})()\
         .catch((e) => {{ console.error(e); process.exit(1); }});\n"
    );
    let out = Command::new("node")
        .arg("-e")
        .arg(script)
        .env("NODE_PATH", node_dir().join("node_modules"))
        .env("IMAGED_ENDPOINT", &server.addr)
        .env("SECRET_ID", &creds.secret_id)
        .env("SECRET_KEY", &creds.secret_key)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .output()
        .expect("run node");
    assert!(out.status.success(), "node failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("node printed json")
}
