//! The CLI's API client: TC3-signed calls to an imaged endpoint, resumable sparse uploads,
//! downloads, and a progress bar on stderr.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use imaged_api::tc3::{authorization_header_signing, ClientRequest, NONCE_HEADER};
use serde_json::Value;

/// imaged's extension service and its version.
pub const EXTENSION: (&str, &str) = ("imaged", "2026-12-01");
/// Default endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9180";

/// A signed client of one endpoint, with the credentials tccli reads from the environment.
#[derive(Clone)]
pub struct Client {
    host: String,
    secret_id: String,
    secret_key: String,
    region: String,
    /// Whether uploads try block references first (default: unless the endpoint is loopback).
    upload_refs: bool,
    /// A kept-alive connection, reused by sequential requests, and when it was last used.
    conn: std::sync::Arc<tokio::sync::Mutex<Option<(Sender, Instant)>>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A kept-alive connection idle longer than this is not reused: the server closes idle ones
/// (its header-read timeout, 10 s by default), and a request sent as it does so is lost.
const REUSE_IDLE: std::time::Duration = std::time::Duration::from_secs(4);

fn now() -> i64 {
    imaged_app::service::now().0
}

impl Client {
    /// From `--endpoint` (else `IMAGED_ENDPOINT`, else the default) and `TENCENTCLOUD_SECRET_ID`,
    /// `TENCENTCLOUD_SECRET_KEY`, `TENCENTCLOUD_REGION` (else `--region`, else `ap-guangzhou`).
    pub fn from_env(endpoint: Option<&str>, region: Option<&str>) -> anyhow::Result<Self> {
        let endpoint = endpoint
            .map(str::to_owned)
            .or_else(|| std::env::var("IMAGED_ENDPOINT").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let host = endpoint.strip_prefix("http://").unwrap_or(&endpoint).trim_end_matches('/').to_owned();
        if host.contains("://") {
            bail!("only http:// endpoints are supported, not {endpoint}");
        }
        let var = |n: &str| std::env::var(n).ok().filter(|s| !s.is_empty());
        Ok(Self {
            secret_id: var("TENCENTCLOUD_SECRET_ID").context("TENCENTCLOUD_SECRET_ID is not set")?,
            secret_key: var("TENCENTCLOUD_SECRET_KEY").context("TENCENTCLOUD_SECRET_KEY is not set")?,
            region: region
                .map(str::to_owned)
                .or_else(|| var("TENCENTCLOUD_REGION"))
                .unwrap_or_else(|| "ap-guangzhou".into()),
            upload_refs: !is_loopback(&host),
            conn: std::sync::Arc::default(),
            host,
        })
    }

    /// Sets whether uploads try block references first (`None`: the default for the endpoint).
    pub fn with_upload_refs(mut self, refs: Option<bool>) -> Self {
        if let Some(r) = refs {
            self.upload_refs = r;
        }
        self
    }

    /// The same client, calling in `region` (on a connection of its own).
    pub fn in_region(&self, region: &str) -> Self {
        Self { region: region.to_owned(), conn: std::sync::Arc::default(), ..self.clone() }
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let mut cached = self.conn.lock().await;
        if let Some((sender, used)) = cached.as_mut() {
            if used.elapsed() < REUSE_IDLE && sender.ready().await.is_ok() {
                let resp = sender.send_request(req).await?;
                *used = Instant::now();
                return Ok(resp);
            }
        }
        let stream =
            tokio::net::TcpStream::connect(&self.host).await.with_context(|| format!("connecting to {}", self.host))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = sender.send_request(req).await?;
        *cached = Some((sender, Instant::now()));
        Ok(resp)
    }

    fn signed(
        &self,
        method: &str,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
        unsigned: bool,
    ) -> hyper::http::request::Builder {
        self.signed_for(("cvm", "2017-03-12"), method, path, query, content_type, body, unsigned)
    }

    /// A signed request for `(service, version)`.
    #[allow(clippy::too_many_arguments)]
    fn signed_for(
        &self,
        (service, version): (&str, &str),
        method: &str,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
        unsigned: bool,
    ) -> hyper::http::request::Builder {
        let ts = now();
        let mut nonce = [0u8; 16];
        let _ = getrandom::fill(&mut nonce);
        let nonce = hex::encode(nonce);
        let body = if unsigned { &b""[..] } else { body };
        let req = ClientRequest { method, path, query, content_type, host: &self.host, body };
        let auth = authorization_header_signing(
            &self.secret_id,
            &self.secret_key,
            service,
            ts,
            &req,
            unsigned,
            &[(NONCE_HEADER, &nonce)],
        );
        let uri = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("Host", &self.host)
            .header("Content-Type", content_type)
            .header("Authorization", auth)
            .header(NONCE_HEADER, &nonce)
            .header("X-TC-Timestamp", ts.to_string())
            .header("X-TC-Version", version)
            .header("X-TC-Region", &self.region)
            .header("X-TC-Language", "en-US");
        if unsigned {
            b = b.header("X-TC-Content-SHA256", imaged_api::tc3::UNSIGNED_PAYLOAD);
        }
        b
    }

    async fn envelope(resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<Value> {
        let body = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&body)
            .with_context(|| format!("not an API answer: {}", String::from_utf8_lossy(&body)))?;
        let r = v.get("Response").cloned().context("no Response in the answer")?;
        if let Some(e) = r.get("Error") {
            bail!("{}: {}", e["Code"].as_str().unwrap_or("?"), e["Message"].as_str().unwrap_or(""));
        }
        Ok(r)
    }

    /// Calls an API action with JSON parameters; returns `Response` or the error as `Code: Message`.
    pub async fn call(&self, action: &str, params: &Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(params)?;
        let req = self
            .signed("POST", "/", "", "application/json", &body, false)
            .header("X-TC-Action", action)
            .body(Full::new(Bytes::from(body)))?;
        Self::envelope(self.send(req).await?).await
    }

    /// Calls an action of imaged's extension service (`imaged`, `2026-12-01`).
    pub async fn call_extension(&self, action: &str, params: &Value) -> anyhow::Result<Value> {
        self.call_service(EXTENSION, action, params).await
    }

    /// Calls a TKE (`tke`, `2018-05-25`) action.
    pub async fn call_tke(&self, action: &str, params: &Value) -> anyhow::Result<Value> {
        self.call_service(("tke", "2018-05-25"), action, params).await
    }

    async fn call_service(&self, service: (&str, &str), action: &str, params: &Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(params)?;
        let req = self
            .signed_for(service, "POST", "/", "", "application/json", &body, false)
            .header("X-TC-Action", action)
            .body(Full::new(Bytes::from(body)))?;
        Self::envelope(self.send(req).await?).await
    }

    async fn upload_op(&self, query: &str, body: Bytes) -> anyhow::Result<Value> {
        let req = self.signed("POST", "/upload", query, "application/octet-stream", b"", true).body(Full::new(body))?;
        Self::envelope(self.send(req).await?).await
    }

    /// Uploads `file` (resuming `resume` if given), skipping holes and all-zero ranges;
    /// returns (upload id, `upload://` URL). The next chunk is read while the current one is
    /// being sent, so reading the file and the server's work overlap.
    pub async fn upload(&self, file: &Path, resume: Option<&str>) -> anyhow::Result<(String, String)> {
        const CHUNK: u64 = 64 << 20;
        /// Chunks sent as data, without trying references, after a chunk none was accepted of.
        const COLD_CHUNKS: u32 = 3;
        let f = std::sync::Arc::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?);
        let size = f.metadata()?.len();
        let s = match resume {
            Some(id) => self.upload_op(&format!("Op=status&UploadId={id}"), Bytes::new()).await?,
            None => self.upload_op("Op=create", Bytes::new()).await?,
        };
        let id = s["UploadId"].as_str().context("no UploadId")?.to_owned();
        let mut offset = s["Size"].as_u64().context("no Size")?;
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(s["ProofNonce"].as_str().unwrap_or_default(), &mut nonce).context("no ProofNonce")?;
        let data = std::sync::Arc::new(imaged_app::disk::data_ranges(&f, size));
        let mut bar = ProgressBar::new("upload", size);
        bar.set(offset);
        let read = |at: u64, proofs: bool| {
            let (f, data) = (std::sync::Arc::clone(&f), std::sync::Arc::clone(&data));
            let nonce = proofs.then_some(nonce);
            tokio::task::spawn_blocking(move || read_runs(&f, &data, at, (size - at).min(CHUNK), nonce))
        };
        let mut cold = 0u32;
        let mut next = (offset < size).then(|| read(offset, self.upload_refs));
        while let Some(pending) = next.take() {
            let (end, runs) = pending.await??;
            next = (end < size).then(|| read(end, self.upload_refs && cold == 0));
            cold = cold.saturating_sub(1);
            for (at, run) in runs {
                match run {
                    Run::Zero(len) => {
                        self.upload_op(&format!("Op=zero&UploadId={id}&Offset={at}&Length={len}"), Bytes::new())
                            .await?;
                    }
                    Run::Data { bytes, refs } => {
                        let mut sent = 0usize;
                        for batch in refs.chunks(REFS_PER_REQUEST * 64) {
                            let query = format!("Op=refs&UploadId={id}&Offset={}", at + sent as u64);
                            let r = self.upload_op(&query, Bytes::copy_from_slice(batch)).await?;
                            let accepted = usize::try_from(r["Accepted"].as_u64().unwrap_or(0))?;
                            sent += accepted * BLOCK;
                            if accepted < batch.len() / 64 {
                                if accepted == 0 {
                                    cold = COLD_CHUNKS;
                                }
                                break;
                            }
                        }
                        if sent < bytes.len() {
                            let query = format!("Op=append&UploadId={id}&Offset={}", at + sent as u64);
                            self.upload_op(&query, bytes.slice(sent..)).await?;
                        }
                    }
                }
            }
            offset = end;
            bar.set(offset);
        }
        bar.finish();
        Ok((id.clone(), format!("upload://{id}")))
    }

    /// Downloads an exported file to `dest`.
    pub async fn download(&self, bucket: &str, name: &str, dest: &Path) -> anyhow::Result<u64> {
        let query: String = form_urlencoded_pairs(&[("Bucket", bucket), ("Name", name)]);
        let req = self
            .signed("GET", "/download", &query, "application/x-www-form-urlencoded", b"", false)
            .body(Full::new(Bytes::new()))?;
        let mut resp = self.send(req).await?;
        let is_json = resp.headers().get("content-type").is_some_and(|v| v == "application/json");
        if is_json {
            Self::envelope(resp).await?;
            bail!("the server answered without a file");
        }
        let total = resp.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let mut out = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut bar = ProgressBar::new("download", total);
        let mut got = 0u64;
        while let Some(frame) = resp.body_mut().frame().await {
            if let Some(chunk) = frame?.data_ref() {
                out.write_all(chunk)?;
                got += chunk.len() as u64;
                bar.set(got);
            }
        }
        out.sync_all()?;
        bar.finish();
        Ok(got)
    }
}

/// The service's block size: references and proofs are per block.
const BLOCK: usize = 1 << 20;
/// Block references sent in one `Op=refs` request.
const REFS_PER_REQUEST: usize = 256;

/// A run of an upload chunk: zero bytes to send as a hole, or data with, when asked for, the
/// references of its whole blocks (digest and possession proof, 64 bytes each) to try first.
enum Run {
    Zero(u64),
    Data { bytes: Bytes, refs: Vec<u8> },
}

/// Reads `len` bytes of `f` at `offset` (a block boundary; holes are not read) and splits them
/// into runs of whole zero MiB and data, in order, with the data's block references when a
/// proof `nonce` is given; returns the chunk's end and its runs.
fn read_runs(
    f: &std::fs::File,
    data: &[(u64, u64)],
    offset: u64,
    len: u64,
    nonce: Option<[u8; 32]>,
) -> std::io::Result<(u64, Vec<(u64, Run)>)> {
    use std::os::unix::fs::FileExt;
    let end = offset + len;
    let mut buf = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
    if data.iter().any(|(s, e)| *s < end && *e > offset) {
        f.read_exact_at(&mut buf, offset)?;
    }
    let buf = Bytes::from(buf);
    let mut runs = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let unit = |at: usize| imaged_chunkstore::is_zero(&buf[at..(at + BLOCK).min(buf.len())]);
        let zero = unit(pos);
        let mut run_end = (pos + BLOCK).min(buf.len());
        while run_end < buf.len() && unit(run_end) == zero {
            run_end = (run_end + BLOCK).min(buf.len());
        }
        let at = offset + pos as u64;
        let run = if zero {
            Run::Zero((run_end - pos) as u64)
        } else {
            let bytes = buf.slice(pos..run_end);
            let mut refs = Vec::new();
            if let Some(nonce) = nonce {
                for block in bytes.chunks_exact(BLOCK) {
                    refs.extend_from_slice(&imaged_chunkstore::Digest::of(block).0);
                    refs.extend_from_slice(&imaged_chunkstore::possession_proof(&nonce, block));
                }
            }
            Run::Data { bytes, refs }
        };
        runs.push((at, run));
        pos = run_end;
    }
    Ok((end, runs))
}

/// Whether `host` (`name:port`) is this machine.
fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn form_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A progress bar on stderr (a line per 10% when stderr is not a terminal).
pub struct ProgressBar {
    label: &'static str,
    total: u64,
    started: Instant,
    last_decile: u64,
    tty: bool,
}

impl ProgressBar {
    /// A bar for `total` units (bytes or percent).
    pub fn new(label: &'static str, total: u64) -> Self {
        Self { label, total, started: Instant::now(), last_decile: u64::MAX, tty: std::io::stderr().is_terminal() }
    }

    /// Sets the position.
    pub fn set(&mut self, pos: u64) {
        let pct = (pos.min(self.total) * 100).checked_div(self.total).unwrap_or(100);
        if self.tty {
            let filled = usize::try_from(pct / 4).unwrap_or(25);
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\r{:>8} [{}{}] {:>3}% {:.1} MiB/s ",
                self.label,
                "#".repeat(filled),
                " ".repeat(25 - filled.min(25)),
                pct,
                pos as f64 / secs / 1048576.0
            );
        } else if pct / 10 != self.last_decile {
            self.last_decile = pct / 10;
            eprintln!("{}: {}%", self.label, pct);
        }
    }

    /// Ends the bar.
    pub fn finish(&mut self) {
        self.set(self.total);
        if self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_are_recognised() {
        for host in ["127.0.0.1:9180", "localhost:80", "[::1]:9180", "127.0.0.2:1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.5:9180", "images.example:443", "[2001:db8::1]:9180"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
