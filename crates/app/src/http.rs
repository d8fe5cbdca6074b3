//! Downloading an `http(s)://` import source to a sparse scratch file, never held in memory.
//!
//! Every hop (the URL and each redirect) is resolved here and checked against the
//! [`EgressPolicy`] on the resolved address; the fetch then connects to that address only.
//! `http://` is fetched natively; `https://` by `curl` (TLS without a TLS stack in this binary),
//! pinned to the checked address with `--resolve`, certificates verified (against the
//! operator's CA file when configured), with an empty environment and no proxy. Redirects are
//! followed here, not by curl, and never from `https` down to `http`. Connect, first-byte and
//! idle-read timeouts and a cap on the whole transfer bound every fetch; the size cap is
//! enforced while the bytes arrive, whatever the server claims.
//!
//! Errors come in two parts: what the tenant may read (which step failed, in general terms: no
//! address, port, answer text or server path), and the detail, logged.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use url::{Host, Url};

use crate::egress::EgressPolicy;
use crate::scratch::{ScratchError, SparseFile};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// A failed fetch: the tenant-visible reason (already prefixed), the logged detail, and
/// whether trying again later can help.
#[derive(Debug)]
pub(crate) struct FetchError {
    /// For the tenant.
    pub(crate) reason: String,
    /// For the operator's log.
    pub(crate) detail: String,
    /// The host's scratch space was full or failed: not the URL's fault.
    pub(crate) retry: bool,
}

fn unfetchable(reason: impl std::fmt::Display, detail: impl std::fmt::Display) -> FetchError {
    FetchError { reason: format!("the URL could not be fetched: {reason}"), detail: detail.to_string(), retry: false }
}

fn scratch_error(url: &Url, e: ScratchError) -> FetchError {
    FetchError { reason: e.to_string(), detail: format!("{url}: {e:?}"), retry: e.is_retryable() }
}

/// Parses an import URL as a fetch would: `http` or `https`, a host, no credentials.
/// Numeric host forms (`127.1`, `0x7f000001`, `2130706433`) are normalised to the address
/// they denote, so that the policy sees what a connection would reach.
pub(crate) fn parse_fetch_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be http:// or https://".into());
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(url)
}

/// Whether the URL names, literally, an address the policy refuses (checked at request time:
/// names are resolved, and checked again, when the job fetches).
pub(crate) fn literal_refused(url: &Url, policy: &EgressPolicy) -> bool {
    let port = url.port_or_known_default().unwrap_or(80);
    match url.host() {
        Some(Host::Ipv4(a)) => policy.choose(&a.to_string(), [SocketAddr::new(a.into(), port)]).is_none(),
        Some(Host::Ipv6(a)) => policy.choose(&a.to_string(), [SocketAddr::new(a.into(), port)]).is_none(),
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            (d == "localhost" || d.ends_with(".localhost"))
                && policy.choose(&d, [SocketAddr::from(([127, 0, 0, 1], port))]).is_none()
        }
        None => true,
    }
}

/// Downloads `url` into `dest`, refusing more than `cap` bytes; `ca` replaces the system's CA
/// certificates for `https://`.
pub(crate) async fn download(
    url: &str,
    dest: &mut SparseFile,
    cap: u64,
    ca: Option<&Path>,
    policy: &EgressPolicy,
) -> Result<(), FetchError> {
    let limit = policy.max_transfer_time;
    match tokio::time::timeout(limit, follow(url, dest, cap, ca, policy)).await {
        Ok(r) => r,
        Err(_) => Err(unfetchable(
            format_args!("the transfer took longer than {} s", limit.as_secs()),
            format_args!("{url}: total time cap"),
        )),
    }
}

async fn follow(
    raw: &str,
    dest: &mut SparseFile,
    cap: u64,
    ca: Option<&Path>,
    policy: &EgressPolicy,
) -> Result<(), FetchError> {
    let mut url = parse_fetch_url(raw).map_err(|e| unfetchable(format_args!("the URL {e}"), raw))?;
    for _ in 0..=MAX_REDIRECTS {
        let addr = resolve(&url, policy).await?;
        dest.rewind().map_err(|e| scratch_error(&url, e))?;
        let next = if url.scheme() == "https" {
            fetch_tls(&url, addr, dest, cap, ca, policy).await?
        } else {
            fetch_plain(&url, addr, dest, cap, policy).await?
        };
        let Some(location) = next else { return Ok(()) };
        let target = url
            .join(&location)
            .map_err(|e| unfetchable("a redirect named an invalid URL", format_args!("{url} -> {location}: {e}")))?;
        let target = parse_fetch_url(target.as_str())
            .map_err(|e| unfetchable(format_args!("a redirect's URL {e}"), format_args!("{url} -> {target}")))?;
        if url.scheme() == "https" && target.scheme() != "https" {
            return Err(unfetchable("a redirect left https", format_args!("{url} -> {target}")));
        }
        url = target;
    }
    Err(unfetchable(format_args!("more than {MAX_REDIRECTS} redirects"), raw))
}

/// The address to connect to for `url`: the first resolved address the policy permits.
/// A name that does not resolve and one that resolves only to refused addresses answer alike.
async fn resolve(url: &Url, policy: &EgressPolicy) -> Result<SocketAddr, FetchError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let (name, candidates): (String, Vec<SocketAddr>) = match url.host() {
        Some(Host::Ipv4(a)) => (a.to_string(), vec![SocketAddr::new(a.into(), port)]),
        Some(Host::Ipv6(a)) => (a.to_string(), vec![SocketAddr::new(a.into(), port)]),
        Some(Host::Domain(d)) => {
            let found = tokio::time::timeout(policy.connect_timeout, tokio::net::lookup_host((d, port))).await;
            let found = match found {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => {
                    tracing::info!(host = d, "import host does not resolve: {e}");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            (d.to_owned(), found)
        }
        None => (String::new(), Vec::new()),
    };
    policy.choose(&name, candidates.iter().copied()).ok_or_else(|| {
        unfetchable("its host is not one this service may reach", format_args!("{url}: resolved to {candidates:?}"))
    })
}

/// One plain HTTP request to `addr`; returns the redirect target if there is one.
async fn fetch_plain(
    url: &Url,
    addr: SocketAddr,
    dest: &mut SparseFile,
    cap: u64,
    policy: &EgressPolicy,
) -> Result<Option<String>, FetchError> {
    let idle = policy.idle_timeout;
    let stream = match tokio::time::timeout(policy.connect_timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(unfetchable("connection refused", format_args!("{url} ({addr}): {e}")))
        }
        Ok(Err(e)) => return Err(unfetchable("the connection failed", format_args!("{url} ({addr}): {e}"))),
        Err(_) => return Err(unfetchable("the connection timed out", format_args!("{url} ({addr})"))),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| unfetchable("the server does not speak HTTP", format_args!("{url}: {e}")))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let _abort = AbortOnDrop(conn.abort_handle());
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let req = Request::get(target)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "imaged")
        .body(Empty::<Bytes>::new())
        .map_err(|e| unfetchable("the URL cannot be requested", format_args!("{url}: {e}")))?;
    let mut resp = match tokio::time::timeout(idle, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(unfetchable("the server's answer is not valid HTTP", format_args!("{url}: {e}"))),
        Err(_) => return Err(idle_error(url, idle)),
    };
    let status = resp.status();
    if status.is_redirection() {
        let location = resp.headers().get(hyper::header::LOCATION).and_then(|v| v.to_str().ok());
        return match location {
            Some(l) => Ok(Some(l.to_owned())),
            None => Err(unfetchable("a redirect without a location", url)),
        };
    }
    if !status.is_success() {
        return Err(unfetchable(format_args!("HTTP {}", status.as_u16()), url));
    }
    let mut total = 0u64;
    loop {
        let frame = match tokio::time::timeout(idle, resp.body_mut().frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(unfetchable("the transfer was interrupted", format_args!("{url}: {e}"))),
            Err(_) => return Err(idle_error(url, idle)),
        };
        if let Some(chunk) = frame.data_ref() {
            total = total.saturating_add(chunk.len() as u64);
            if total > cap {
                return Err(too_large(url, cap));
            }
            dest.write(chunk).map_err(|e| scratch_error(url, e))?;
        }
    }
    dest.finish().map_err(|e| scratch_error(url, e))?;
    Ok(None)
}

fn idle_error(url: &Url, idle: Duration) -> FetchError {
    unfetchable(format_args!("the server sent nothing for {} s", idle.as_secs()), url)
}

fn too_large(url: &Url, cap: u64) -> FetchError {
    FetchError {
        reason: format!("too-large: the URL's file is larger than {cap} bytes"),
        detail: url.to_string(),
        retry: false,
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches one `https://` URL with curl, connecting only to `addr`, without following
/// redirects (the caller checks each). curl writes the body to a pipe, read into `dest` here
/// under the size cap and the scratch budget; its status line goes to stderr.
async fn fetch_tls(
    url: &Url,
    addr: SocketAddr,
    dest: &mut SparseFile,
    cap: u64,
    ca: Option<&Path>,
    policy: &EgressPolicy,
) -> Result<Option<String>, FetchError> {
    use tokio::io::AsyncReadExt;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let pinned = match addr {
        SocketAddr::V4(a) => format!("{host}:{port}:{}", a.ip()),
        SocketAddr::V6(a) => format!("{host}:{port}:[{}]", a.ip()),
    };
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["--silent", "--show-error", "--proto", "=https", "--noproxy", "*", "--resolve", &pinned])
        .args(["--max-filesize", &cap.to_string()])
        .args(["--connect-timeout", &policy.connect_timeout.as_secs().max(1).to_string()])
        .args(["--speed-limit", "1", "--speed-time", &policy.idle_timeout.as_secs().max(1).to_string()])
        .args(["--write-out", &format!("%{{stderr}}\\n{STATUS_MARK} %{{http_code}} %{{redirect_url}}\\n")])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let mut child = cmd
        .arg("--")
        .arg(url.as_str())
        .spawn()
        .map_err(|e| unfetchable("the fetcher could not start", format_args!("curl: {e}")))?;
    let (Some(mut body), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(unfetchable("the fetcher could not start", "curl without pipes"));
    };
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = body.read(&mut buf).await.map_err(|e| unfetchable("the transfer was interrupted", e))?;
        if n == 0 {
            break;
        }
        total = total.saturating_add(n as u64);
        if total > cap {
            return Err(too_large(url, cap));
        }
        dest.write(&buf[..n]).map_err(|e| scratch_error(url, e))?;
    }
    let status = child.wait().await.map_err(|e| unfetchable("the fetcher failed", e))?;
    let err = errors.await.unwrap_or_default();
    let detail = format!("{url} ({addr}): curl {status}: {}", err.trim());
    if !status.success() {
        let reason = match status.code() {
            Some(63) => return Err(too_large(url, cap)),
            Some(7) => "connection refused or unreachable",
            Some(28) => "the transfer timed out",
            Some(35 | 53 | 54 | 59 | 66) => "the TLS handshake failed",
            Some(51 | 58 | 60 | 77 | 80 | 82 | 83 | 90 | 91) => "the server's certificate could not be verified",
            Some(52 | 55 | 56 | 92) => "the transfer was interrupted",
            _ => "the transfer failed",
        };
        return Err(unfetchable(reason, detail));
    }
    let mut status_line = err.lines().rev().filter_map(|l| l.strip_prefix(STATUS_MARK)).map(str::split_whitespace);
    let mut fields = status_line.next().ok_or_else(|| unfetchable("the fetcher failed", &detail))?;
    let code: u16 = fields.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    match code {
        200..=299 => {
            dest.finish().map_err(|e| scratch_error(url, e))?;
            Ok(None)
        }
        300..=399 => match fields.next() {
            Some(r) => Ok(Some(r.to_owned())),
            None => Err(unfetchable("a redirect without a location", detail)),
        },
        _ => Err(unfetchable(format_args!("HTTP {code}"), detail)),
    }
}

/// Marks the line of curl's stderr that carries the status and the redirect target.
const STATUS_MARK: &str = "@@imaged-status";
