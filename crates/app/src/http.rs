//! Downloading an `http(s)://` import source, streamed to a file, never held in memory.
//!
//! `http://` is fetched natively. `https://` is fetched by `curl` (TLS without a TLS stack in
//! this binary), HTTPS-only including redirects, certificates verified (against the operator's
//! CA file when configured), with an empty environment, and killed as soon as the file passes
//! the size cap, whatever the server claims.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use tokio::io::AsyncWriteExt;

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// Downloads `url` to `dest`, refusing more than `cap` bytes; `ca` replaces the system's CA
/// certificates for `https://`. Errors are user-readable.
pub(crate) async fn download(url: &str, dest: &Path, cap: u64, ca: Option<&Path>) -> Result<(), String> {
    let mut url = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        if url.starts_with("https://") {
            return fetch_tls(&url, dest, cap, ca).await;
        }
        match fetch(&url, dest, cap).await? {
            Some(next) => url = next,
            None => return Ok(()),
        }
    }
    Err(format!("too many redirects fetching {url}"))
}

/// Fetches an `https://` URL with curl, watching the file so it never grows past `cap`.
async fn fetch_tls(url: &str, dest: &Path, cap: u64, ca: Option<&Path>) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["--fail", "--silent", "--show-error", "--location", "--proto", "=https", "--proto-redir", "=https"])
        .args(["--max-redirs", &MAX_REDIRECTS.to_string(), "--max-filesize", &cap.to_string(), "--output"])
        .arg(dest)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let mut child = cmd.arg("--").arg(url).spawn().map_err(|e| format!("cannot fetch {url}: curl: {e}"))?;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| format!("GET {url}: {e}"))?;
                if status.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = e.read_to_string(&mut err).await;
                }
                if status.code() == Some(63) {
                    return Err(format!("too-large: {url} is larger than {cap} bytes"));
                }
                return Err(format!("GET {url}: {}", err.trim().trim_start_matches("curl: ")));
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if tokio::fs::metadata(dest).await.is_ok_and(|m| m.len() > cap) {
                    let _ = child.kill().await;
                    return Err(format!("too-large: {url} is larger than {cap} bytes"));
                }
            }
        }
    }
}

/// One request; returns the redirect target if there is one.
async fn fetch(url: &str, dest: &Path, cap: u64) -> Result<Option<String>, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("cannot fetch {url}: not an http(s):// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port in {url}"))?),
        None => (authority, 80),
    };
    let stream =
        tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("connecting to {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {authority}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "imaged")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let mut resp = sender.send_request(req).await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    if status.is_redirection() {
        let location = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("GET {url}: redirect without a location"))?;
        let next =
            if location.starts_with("http") { location.to_owned() } else { format!("http://{authority}{location}") };
        return Ok(Some(next));
    }
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let mut file = tokio::fs::File::create(dest).await.map_err(|e| format!("scratch file: {e}"))?;
    let mut total = 0u64;
    while let Some(frame) = resp.body_mut().frame().await {
        let frame = frame.map_err(|e| format!("GET {url}: {e}"))?;
        if let Some(chunk) = frame.data_ref() {
            total += chunk.len() as u64;
            if total > cap {
                return Err(format!("too-large: {url} is larger than {cap} bytes"));
            }
            file.write_all(chunk).await.map_err(|e| format!("scratch file: {e}"))?;
        }
    }
    file.flush().await.map_err(|e| format!("scratch file: {e}"))?;
    Ok(None)
}
