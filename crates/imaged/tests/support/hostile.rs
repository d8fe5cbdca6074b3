//! Remote servers an import may meet, on loopback: one that serves a file, one that redirects,
//! one that accepts and never answers, one that trickles a byte at a time. Each counts the
//! connections it accepted and the ones the client closed; all stop when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the server does with each connection.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers 200 with this body.
    Body(Vec<u8>),
    /// Answers 302 to this location.
    Redirect(String),
    /// Reads the request and never answers.
    Stall,
    /// Answers 200 with a large length, then one byte every half second.
    Trickle,
}

/// A running remote server.
pub struct Remote {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Remote {
    /// Listens on `ip`:0.
    pub fn start(ip: &str, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (accepted, closed, stop) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (a, c, s) = (Arc::clone(&accepted), Arc::clone(&closed), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        let (b, c, s) = (behaviour.clone(), Arc::clone(&c), Arc::clone(&s));
                        std::thread::spawn(move || serve(stream, &b, &c, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { addr, accepted, closed, stop }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections the client closed so far (stalling and trickling servers notice).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

fn serve(mut stream: TcpStream, behaviour: &Behaviour, closed: &AtomicUsize, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    if !read_head(&mut stream) {
        closed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match behaviour {
        Behaviour::Body(body) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
        Behaviour::Redirect(location) => {
            let head =
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
        }
        Behaviour::Stall => {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
        Behaviour::Trickle => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
            while !stop.load(Ordering::Relaxed) {
                if stream.write_all(b"x").is_err() {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
