//! The listener: accepts connections and serves them with hyper's HTTP/1, within limits that
//! keep unauthenticated clients from locking everyone out.
//!
//! - A request head must arrive within `header_read_timeout` of the connection opening (or of
//!   the first byte of a later request), and a kept-alive connection with no request in
//!   progress is closed after `idle_timeout` without traffic, and one whose request is in
//!   progress but moves no byte either way for `stall_timeout` (a body sent a byte a minute, a
//!   response nobody reads) is closed too.
//! - At most `max_connections` are served at once. When a new one arrives at the cap, the
//!   connection idle the longest (no request in progress) is closed to make room, so that a
//!   flood of half-sent requests cannot keep a real client out; when every connection is busy,
//!   the newcomer is answered `RequestLimitExceeded` and closed.
//! - hyper answers some malformed requests itself (400, 431 for an oversized head, 414 for an
//!   oversized URI) before any handler runs; those answers are rewritten on the way out into
//!   Tencent's envelope (HTTP 200, `application/json`), so every answer is the envelope. Only
//!   a write made while no request is in progress and after new bytes were read (hyper's own
//!   answer to what it read) is rewritten, never part of a response.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;

use crate::error::{code, ApiError, Language};
use crate::server::{envelope, request_id};

/// TLS for the listener: signed requests and secrets need not cross a network in clear.
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// Loads a certificate chain and its private key (PEM files) into a TLS configuration.
pub fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("reading the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("reading the key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to receive a request head.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may sit without traffic between requests.
    pub idle_timeout: Duration,
    /// Time a connection with a request in progress may move no byte.
    pub stall_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(120),
        }
    }
}

/// The address of the client a request came from (a request extension): the replay check
/// binds a signature to the client that first used it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// One connection's state, shared by its IO, its service and the registry.
struct ConnState {
    /// Requests whose response is not completely written.
    active: AtomicUsize,
    /// Last traffic, in milliseconds since the listener started.
    last: AtomicU64,
    /// Bytes were read since the last request began (a write now is hyper's own answer).
    fresh_read: AtomicBool,
    /// Closes the connection (eviction).
    kill: tokio::sync::Notify,
    epoch: Instant,
}

impl ConnState {
    fn touch(&self) {
        self.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.last.load(Ordering::Relaxed);
        Duration::from_millis((self.epoch.elapsed().as_millis() as u64).saturating_sub(last))
    }

    fn busy(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }
}

/// The connections being served.
struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
    epoch: Instant,
}

impl Registry {
    fn admit(&self, max: usize) -> Option<(u64, Arc<ConnState>)> {
        let mut conns = self.conns.lock().ok()?;
        if conns.len() >= max {
            let victim = conns.values().filter(|c| !c.busy()).max_by_key(|c| c.idle_for())?;
            victim.kill.notify_one();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            active: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            fresh_read: AtomicBool::new(false),
            kill: tokio::sync::Notify::new(),
            epoch: self.epoch,
        });
        state.touch();
        conns.insert(id, Arc::clone(&state));
        Some((id, state))
    }

    fn remove(&self, id: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&id);
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (for up to [`DRAIN_TIME`]). With `tls`, every connection is TLS (the handshake
/// must end within the header-read timeout).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ListenerLimits,
    tls: Option<TlsConfig>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let registry =
        Arc::new(Registry { conns: Mutex::new(HashMap::new()), next: AtomicU64::new(0), epoch: Instant::now() });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or the peer left before we accepted: wait a little.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some((id, state)) = registry.admit(limits.max_connections) else {
            tasks.spawn(refuse(stream));
            continue;
        };
        let (router, registry, stop) = (router.clone(), Arc::clone(&registry), stop_rx.clone());
        let connection = ClientAddr(peer.ip().to_canonical());
        let acceptor = acceptor.clone();
        tasks.spawn(async move {
            match acceptor {
                None => serve_connection(stream, router, Arc::clone(&state), limits, stop, connection).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(tls)) => serve_connection(tls, router, Arc::clone(&state), limits, stop, connection).await,
                            Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        },
                        () = state.kill.notified() => {}
                    }
                }
            }
            registry.remove(id);
        });
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIME, async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

/// Answers a connection that cannot be served now, and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let e = ApiError::new(
        code::REQUEST_LIMIT_EXCEEDED,
        "The server is serving as many connections as it can; try again later.",
        "服务器连接数已达上限，请稍后重试。",
    );
    let bytes = envelope_response(e);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A complete HTTP response carrying an error envelope, closing the connection.
fn envelope_response(e: ApiError) -> Vec<u8> {
    let body = envelope(&request_id(), Err(e), Language::Chinese);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

async fn serve_connection<IO>(
    io: IO,
    router: Router,
    state: Arc<ConnState>,
    limits: ListenerLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    connection: ClientAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_state = Arc::clone(&state);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(connection);
        let mut router = router.clone();
        let guard = ActiveGuard::new(Arc::clone(&service_state));
        async move {
            let resp = tower_service::Service::call(&mut router, req.map(Body::new)).await;
            resp.map(|r| r.map(|inner| Body::new(TrackedBody { inner, _guard: guard })))
        }
    });
    let io = TokioIo::new(Watched { inner: io, state: Arc::clone(&state), replacement: None });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(limits.idle_timeout).min(limits.stall_timeout));
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = state.kill.notified() => return,
            _ = tick.tick() => {
                let quiet = state.idle_for();
                if quiet >= limits.idle_timeout && (!state.busy() || quiet >= limits.stall_timeout) {
                    return;
                }
            }
            changed = stop.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Counts a request as in progress until its response body is dropped.
struct ActiveGuard(Arc<ConnState>);

impl ActiveGuard {
    fn new(state: Arc<ConnState>) -> Self {
        state.active.fetch_add(1, Ordering::Relaxed);
        state.fresh_read.store(false, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A response body that keeps its request counted as in progress while it is written.
struct TrackedBody {
    inner: Body,
    _guard: ActiveGuard,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's IO: records traffic, and rewrites hyper's own error answers.
struct Watched<T> {
    inner: T,
    state: Arc<ConnState>,
    /// An envelope being written in place of hyper's answer: bytes, bytes written, and the
    /// length of hyper's answer (reported as written once the envelope is).
    replacement: Option<(Vec<u8>, usize, usize)>,
}

/// The envelope that replaces hyper's answer `head`, if `head` is one.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let e = match status {
        b"431" => ApiError::new(
            code::REQUEST_SIZE_LIMIT_EXCEEDED,
            "The request head exceeds the server's limit.",
            "请求头超过服务器的限制。",
        ),
        b"414" => ApiError::new(
            code::REQUEST_SIZE_LIMIT_EXCEEDED,
            "The request URI exceeds the server's limit.",
            "请求 URI 超过服务器的限制。",
        ),
        b"400" => ApiError::new(code::INVALID_PARAMETER, "The request is not valid HTTP.", "请求不是有效的 HTTP。"),
        _ => return None,
    };
    Some(envelope_response(e))
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
            if !self.state.busy() {
                self.state.fresh_read.store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none() && !this.state.busy() && this.state.fresh_read.load(Ordering::Relaxed) {
            if let Some(bytes) = rewrite(buf) {
                this.replacement = Some((bytes, 0, buf.len()));
            }
        }
        if let Some((bytes, done, claimed)) = &mut this.replacement {
            while *done < bytes.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &bytes[*done..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => *done += n,
                    other => return other,
                }
            }
            let claimed = *claimed;
            this.state.fresh_read.store(false, Ordering::Relaxed);
            this.replacement = None;
            return Poll::Ready(Ok(claimed));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.state.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        // One buffer per write, so that hyper's own answer arrives whole.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_answers_become_envelopes_and_nothing_else_does() {
        for head in [
            &b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        ] {
            let out = rewrite(head).expect("rewritten");
            let text = String::from_utf8(out).expect("utf8");
            assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"), "{text}");
            let body = text.split("\r\n\r\n").nth(1).expect("body");
            let v: serde_json::Value = serde_json::from_str(body).expect("json");
            assert!(v["Response"]["Error"]["Code"].is_string() && v["Response"]["RequestId"].is_string());
        }
        assert!(rewrite(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(rewrite(b"some body bytes").is_none());
    }
}
