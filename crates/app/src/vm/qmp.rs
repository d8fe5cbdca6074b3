//! A QEMU Machine Protocol client over the guest's Unix socket: one connection per guest, held
//! for the guest's life (QEMU serves one client at a time). Commands are answered in order;
//! events go to a channel that closes when QEMU exits.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Mutex};

type Reply = oneshot::Sender<Result<Value, String>>;

/// A QMP connection.
pub(crate) struct Qmp {
    inner: Mutex<(OwnedWriteHalf, std::sync::Arc<std::sync::Mutex<VecDeque<Reply>>>)>,
}

/// How long a command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl Qmp {
    /// Connects, reads the greeting and leaves negotiation mode; returns the client and the
    /// channel of its events (`{"event": …, "data": …}`), which closes when QEMU exits.
    pub(crate) async fn connect(path: &Path) -> Result<(Self, mpsc::UnboundedReceiver<Value>), String> {
        let stream = UnixStream::connect(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| "QMP greeting timed out".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("QMP closed before its greeting")?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        let pending: std::sync::Arc<std::sync::Mutex<VecDeque<Reply>>> = Default::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let replies = std::sync::Arc::clone(&pending);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
                if msg.get("event").is_some() {
                    let _ = events_tx.send(msg);
                    continue;
                }
                let reply = match (msg.get("return"), msg.get("error")) {
                    (Some(r), _) => Ok(r.clone()),
                    (_, Some(e)) => Err(e.get("desc").and_then(Value::as_str).unwrap_or("QMP error").to_owned()),
                    _ => continue,
                };
                let waiter = replies.lock().ok().and_then(|mut q| q.pop_front());
                if let Some(w) = waiter {
                    let _ = w.send(reply);
                }
            }
            // QEMU exited: waiters see their sender dropped; the events channel closes.
            if let Ok(mut q) = replies.lock() {
                q.clear();
            }
        });
        let qmp = Self { inner: Mutex::new((write, pending)) };
        qmp.execute("qmp_capabilities", None).await?;
        Ok((qmp, events))
    }

    /// Runs `command` with `arguments`; its `return` value.
    pub(crate) async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        let rx = {
            let mut inner = self.inner.lock().await;
            let (tx, rx) = oneshot::channel();
            inner.1.lock().map_err(|_| "QMP state poisoned")?.push_back(tx);
            inner.0.write_all(line.as_bytes()).await.map_err(|e| format!("QMP {command}: {e}"))?;
            rx
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply.map_err(|e| format!("QMP {command}: {e}")),
            Ok(Err(_)) => Err(format!("QMP {command}: QEMU exited")),
            Err(_) => Err(format!("QMP {command}: no answer in {COMMAND_TIMEOUT:?}")),
        }
    }
}
