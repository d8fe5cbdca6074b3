//! QEMU behind instances: one `qemu-system-x86_64` process per running guest, daemonised (so
//! that guests outlive a restart of the server, which adopts them again), driven over QMP.
//!
//! The guest boots its own system disk (the instance's qcow2 overlay, `virtio-blk`), sees its
//! NoCloud seed as a second read-only disk, has user-mode networking with the guest's port 22
//! forwarded to a port on the host's loopback (a production host would put guests on a bridge
//! or an Open vSwitch port with their own addresses instead), a `pvpanic` device so that a
//! guest panic is reported rather than hidden, and SeaBIOS's output on the serial console too,
//! so that an image that cannot boot says why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use imaged_domain::InstanceId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::qmp::Qmp;
use super::{ExitKind, GuestExit, Hypervisor, Live, Stopped, VmSpec};

/// Which accelerator guests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM if a short probe boots under it, else TCG.
    #[default]
    Auto,
    /// KVM.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// How QEMU is run.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The emulator.
    pub binary: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// The most virtual CPUs one guest gets.
    pub max_vcpus: u32,
    /// The most memory one guest gets, MiB.
    pub max_memory_mib: u32,
}

/// What a restarted server reads to adopt a guest (`vm.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VmFile {
    pid: u32,
    accel: String,
    login: Option<std::net::SocketAddr>,
}

struct Vm {
    generation: u64,
    qmp: Arc<Qmp>,
    done: watch::Receiver<Option<ExitKind>>,
    live: Live,
    /// The instance's directory (its console).
    dir: PathBuf,
}

/// QEMU guests on this host.
pub struct Qemu {
    cfg: QemuConfig,
    version: String,
    accel: tokio::sync::OnceCell<String>,
    vms: Arc<Mutex<HashMap<InstanceId, Vm>>>,
    generation: std::sync::atomic::AtomicU64,
    exits: mpsc::UnboundedSender<GuestExit>,
    exits_rx: Mutex<Option<mpsc::UnboundedReceiver<GuestExit>>>,
}

impl Qemu {
    /// QEMU at `cfg.binary`, if it runs (`--version`).
    pub fn detect(cfg: QemuConfig) -> Result<Self, String> {
        let out = std::process::Command::new(&cfg.binary)
            .arg("--version")
            .output()
            .map_err(|e| format!("{} not found ({e})", cfg.binary.display()))?;
        if !out.status.success() {
            return Err(format!("{} --version failed", cfg.binary.display()));
        }
        let version = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_owned();
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Self {
            cfg,
            version,
            accel: tokio::sync::OnceCell::new(),
            vms: Arc::default(),
            generation: 0.into(),
            exits: tx,
            exits_rx: Mutex::new(Some(rx)),
        })
    }

    /// The accelerator guests get: configured, or probed once. KVM is chosen only if a guest
    /// really runs fast under it (the probe guest finishes within 3 s): on some hosts
    /// `/dev/kvm` exists but a KVM guest hangs without a word.
    pub async fn accel(&self) -> &str {
        self.accel
            .get_or_init(|| async {
                let chosen = match self.cfg.accel {
                    Accel::Kvm => "kvm",
                    Accel::Tcg => "tcg",
                    Accel::Auto => {
                        if probe_kvm(&self.cfg.binary).await {
                            "kvm"
                        } else {
                            "tcg"
                        }
                    }
                };
                tracing::info!(accel = chosen, "guests run under {chosen}");
                chosen.to_owned()
            })
            .await
    }

    fn vm(&self, id: &InstanceId) -> Option<(Arc<Qmp>, watch::Receiver<Option<ExitKind>>)> {
        let vms = self.vms.lock().ok()?;
        vms.get(id).map(|v| (Arc::clone(&v.qmp), v.done.clone()))
    }

    /// The guest's QMP connection and its console file.
    fn qmp_and_console(&self, id: &InstanceId) -> Option<(Arc<Qmp>, PathBuf)> {
        let vms = self.vms.lock().ok()?;
        vms.get(id).map(|v| (Arc::clone(&v.qmp), v.dir.join("console.log")))
    }

    /// Holds the guest's QMP connection and reports its exit.
    fn attach(&self, id: &InstanceId, dir: &Path, qmp: Qmp, mut events: mpsc::UnboundedReceiver<Value>, live: Live) {
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done_tx, done) = watch::channel(None);
        if let Ok(mut vms) = self.vms.lock() {
            vms.insert(id.clone(), Vm { generation, qmp: Arc::new(qmp), done, live, dir: dir.to_owned() });
        }
        let (vms, exits, id) = (Arc::clone(&self.vms), self.exits.clone(), id.clone());
        tokio::spawn(async move {
            let mut kind = None;
            while let Some(event) = events.recv().await {
                match event.get("event").and_then(Value::as_str) {
                    Some("SHUTDOWN") => {
                        let data = event.get("data");
                        let guest = data.and_then(|d| d.get("guest")).and_then(Value::as_bool).unwrap_or(false);
                        let reason = data.and_then(|d| d.get("reason")).and_then(Value::as_str).unwrap_or("");
                        if kind.is_none() {
                            kind = Some(if guest && reason != "guest-panic" {
                                ExitKind::PoweredOff
                            } else if reason == "guest-panic" {
                                ExitKind::Crashed("the guest kernel panicked".into())
                            } else {
                                ExitKind::HostStopped
                            });
                        }
                    }
                    Some("GUEST_PANICKED") => kind = Some(ExitKind::Crashed("the guest kernel panicked".into())),
                    _ => {}
                }
            }
            let kind = kind.unwrap_or_else(|| ExitKind::Crashed("QEMU exited without the guest powering off".into()));
            if let Ok(mut vms) = vms.lock() {
                if vms.get(&id).is_some_and(|v| v.generation == generation) {
                    vms.remove(&id);
                }
            }
            tracing::info!(instance = %id, ?kind, "guest exited");
            let _ = done_tx.send(Some(kind.clone()));
            let _ = exits.send(GuestExit { id, kind });
        });
    }

    async fn wait_done(done: &mut watch::Receiver<Option<ExitKind>>, limit: Duration) -> Option<ExitKind> {
        let waited = tokio::time::timeout(limit, done.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(kind)) => kind.clone(),
            _ => None,
        }
    }
}

/// The probe guest's boot sector (source: `kvm-probe.S`).
const KVM_PROBE_BOOT: &[u8; 512] = include_bytes!("kvm-probe.bin");

/// How long the probe guest may take under KVM: it needs well under a second where KVM works
/// (and about a second under TCG on a slow machine).
const KVM_PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// Whether KVM really runs guests here, and fast: the probe guest (BIOS disk reads, protected
/// mode, a compute loop; `kvm-probe.S`) must report its end on the debug console before the
/// deadline. On some hosts `/dev/kvm` opens but a guest under it crawls or hangs.
async fn probe_kvm(binary: &Path) -> bool {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return false;
    }
    let took = run_probe(binary, "kvm", KVM_PROBE_DEADLINE).await;
    tracing::info!(kvm = took.is_some(), secs = took.map(|d| d.as_secs_f64()), "KVM probe");
    took.is_some()
}

/// Runs the probe guest under `accel`; how long it took to finish, if it did within `deadline`.
async fn run_probe(binary: &Path, accel: &str, deadline: Duration) -> Option<Duration> {
    let dir = tempfile_dir(accel).ok()?;
    let log = dir.join("debugcon.log");
    let mut disk = KVM_PROBE_BOOT.to_vec();
    // 64 sectors it reads back, on a 1 MiB disk (SeaBIOS does not boot a smaller one).
    disk.extend(std::iter::repeat_n(b'K', 64 * 512));
    disk.resize(1 << 20, 0);
    std::fs::write(dir.join("probe.img"), &disk).ok()?;
    let child = tokio::process::Command::new(binary)
        .args(["-accel", accel, "-machine", "pc", "-m", "32", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-chardev")
        .arg(format!("file,id=dbg,path={}", log.display()))
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio,readonly=on", dir.join("probe.img").display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        let _ = std::fs::remove_dir_all(&dir);
        return None;
    };
    let started = std::time::Instant::now();
    let mut took = None;
    while started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if std::fs::read(&log).is_ok_and(|b| b.ends_with(b"RDPKE")) {
            took = Some(started.elapsed());
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
    }
    // A hung KVM guest dies at SIGKILL; never wait on it for long.
    let _ = tokio::time::timeout(Duration::from_secs(2), child.kill()).await;
    let _ = std::fs::remove_dir_all(&dir);
    took
}

fn tempfile_dir(accel: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("imaged-{accel}-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Whether `pid` is a live process running the guest of `dir`: it holds that directory's
/// `system.qcow2` open (QEMU daemonized has `/` as its working directory, and a pid may have
/// been reused by then).
fn runs_in(pid: u32, dir: &Path) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) has exited.
    let zombie = stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
    let Ok(disk) = std::fs::canonicalize(dir.join("system.qcow2")) else { return false };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    !zombie && fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == disk))
}

/// How long a flush waits for the guest to report its sync.
const FLUSH_WAIT: Duration = Duration::from_millis(1500);

/// The console's text after its first `from` bytes.
fn console_since(console: &Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(console) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.take(64 * 1024).read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn free_loopback_port() -> Option<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).ok()
}

#[async_trait]
impl Hypervisor for Qemu {
    fn runs_guests(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        match self.accel.get() {
            Some(a) => format!("{} ({a})", self.version),
            None => self.version.clone(),
        }
    }

    async fn start(&self, spec: &VmSpec) -> Result<(), String> {
        if self.vm(&spec.id).is_some() {
            return Ok(());
        }
        let dir = &spec.dir;
        let qmp_path = dir.join("qmp.sock");
        if qmp_path.as_os_str().len() > 100 {
            return Err(format!("{}: too long for a Unix socket; use a shorter data directory", qmp_path.display()));
        }
        let accel = self.accel().await.to_owned();
        let console = dir.join("console.log");
        if console.exists() {
            let _ = std::fs::rename(&console, dir.join("console.0.log"));
        }
        if let Some(note) = &spec.console_note {
            std::fs::write(&console, format!("imaged: {note}\n")).map_err(|e| e.to_string())?;
        }
        let _ = std::fs::remove_file(&qmp_path);
        // SeaBIOS prints on the serial port given in fw_cfg `etc/sercon-port` (little endian).
        std::fs::write(dir.join("sercon-port"), 0x3f8u16.to_le_bytes()).map_err(|e| e.to_string())?;
        let login = free_loopback_port();
        let mut netdev = "user,id=net0".to_owned();
        if let Some(addr) = login {
            netdev.push_str(&format!(",hostfwd=tcp:{addr}-:22"));
        }
        let vcpus = spec.vcpus.clamp(1, self.cfg.max_vcpus.max(1));
        let memory = spec.memory_mib.clamp(64, self.cfg.max_memory_mib.max(64));
        let mut cmd = tokio::process::Command::new(&self.cfg.binary);
        cmd.current_dir(dir)
            .env_clear()
            .arg("-name")
            .arg(format!("guest={},process=imaged-{}", spec.id, spec.id))
            .args(["-accel", &accel]);
        if accel == "kvm" {
            cmd.args(["-cpu", "host"]);
        }
        cmd.args(["-machine", "pc", "-smp", &vcpus.to_string(), "-m", &memory.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-chardev", "file,id=console,path=console.log,append=on", "-serial", "chardev:console"])
            .args(["-fw_cfg", "name=etc/sercon-port,file=sercon-port"])
            .args(["-qmp", "unix:qmp.sock,server=on,wait=off"])
            .args(["-drive", "file=system.qcow2,format=qcow2,if=virtio,cache=writeback"]);
        if dir.join("seed.img").is_file() {
            cmd.args(["-drive", "file=seed.img,format=raw,if=virtio,readonly=on"]);
        }
        cmd.args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0,romfile="])
            .args(["-device", "pvpanic", "-action", "panic=exit-failure"])
            .args(["-pidfile", "qemu.pid", "-daemonize"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let out = cmd.output().await.map_err(|e| format!("starting QEMU: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("QEMU did not start: {}", err.trim()));
        }
        let pid: u32 = std::fs::read_to_string(dir.join("qemu.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("QEMU wrote no pid file")?;
        let (qmp, events) = match Qmp::connect(&qmp_path).await {
            Ok(c) => c,
            Err(e) => {
                kill(pid);
                return Err(format!("QEMU's monitor: {e}"));
            }
        };
        let file = VmFile { pid, accel: accel.clone(), login };
        let _ = std::fs::write(dir.join("vm.json"), serde_json::to_vec(&file).unwrap_or_default());
        self.attach(&spec.id, &spec.dir, qmp, events, Live { accel, login, pid });
        Ok(())
    }

    async fn stop(&self, id: &InstanceId, soft: Option<Duration>) -> Result<Stopped, String> {
        let Some((qmp, mut done)) = self.vm(id) else { return Ok(Stopped::NotRunning) };
        if let Some(deadline) = soft {
            // A guest that is paused cannot answer the button.
            let _ = qmp.execute("cont", None).await;
            if qmp.execute("system_powerdown", None).await.is_ok() {
                if let Some(kind) = Self::wait_done(&mut done, deadline).await {
                    return Ok(if kind == ExitKind::PoweredOff { Stopped::Soft } else { Stopped::Hard });
                }
            } else if done.borrow().is_some() {
                return Ok(Stopped::Soft);
            }
        }
        let pid = self.live(id).map(|l| l.pid);
        let _ = qmp.execute("quit", None).await;
        if Self::wait_done(&mut done, Duration::from_secs(5)).await.is_none() {
            if let Some(pid) = pid {
                kill(pid);
            }
            if Self::wait_done(&mut done, Duration::from_secs(5)).await.is_none() {
                return Err(format!("the guest of {id} did not stop"));
            }
        }
        Ok(Stopped::Hard)
    }

    async fn flush(&self, id: &InstanceId) -> Result<(), String> {
        let Some((qmp, console)) = self.qmp_and_console(id) else { return Ok(()) };
        let seen = std::fs::metadata(&console).map_or(0, |m| m.len());
        let keys: Vec<Value> = ["alt", "sysrq", "s"].iter().map(|k| json!({"type": "qcode", "data": k})).collect();
        qmp.execute("send-key", Some(json!({ "keys": keys, "hold-time": 100 }))).await?;
        // The kernel syncs in the background and says so on the console when its log level
        // lets it ("Emergency Sync complete"); else the guest is given the deadline.
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if console_since(&console, seen).contains("Emergency Sync complete") {
                break;
            }
        }
        Ok(())
    }

    async fn pause(&self, id: &InstanceId) -> Result<bool, String> {
        let Some((qmp, _)) = self.vm(id) else { return Ok(false) };
        qmp.execute("stop", None).await?;
        Ok(true)
    }

    async fn resume(&self, id: &InstanceId) -> Result<(), String> {
        let Some((qmp, _)) = self.vm(id) else { return Ok(()) };
        qmp.execute("cont", None).await.map(|_| ())
    }

    async fn adopt(&self, id: &InstanceId, dir: &Path) -> bool {
        if self.vm(id).is_some() {
            return true;
        }
        let Some(file) =
            std::fs::read(dir.join("vm.json")).ok().and_then(|b| serde_json::from_slice::<VmFile>(&b).ok())
        else {
            return false;
        };
        if !runs_in(file.pid, dir) {
            return false;
        }
        let Ok((qmp, events)) = Qmp::connect(&dir.join("qmp.sock")).await else { return false };
        // A capture interrupted by the restart may have left it paused.
        if let Ok(status) = qmp.execute("query-status", None).await {
            if status.get("status").and_then(Value::as_str) == Some("paused") {
                let _ = qmp.execute("cont", None).await;
            }
        }
        let _ = self.accel.set(file.accel.clone());
        self.attach(id, dir, qmp, events, Live { accel: file.accel, login: file.login, pid: file.pid });
        true
    }

    fn live(&self, id: &InstanceId) -> Option<Live> {
        self.vms.lock().ok()?.get(id).map(|v| v.live.clone())
    }

    fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<GuestExit>> {
        self.exits_rx.lock().ok()?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_guest_is_a_boot_sector() {
        assert_eq!(&KVM_PROBE_BOOT[510..], &[0x55, 0xaa]);
    }

    /// The probe guest really finishes where it can run (under TCG), so a fast KVM passes it.
    #[tokio::test]
    async fn the_probe_guest_finishes_under_tcg() {
        let qemu = Path::new("/usr/bin/qemu-system-x86_64");
        if !qemu.exists() {
            eprintln!("no qemu-system-x86_64 here (.ci/install-qemu installs it): skipped");
            return;
        }
        let took = run_probe(qemu, "tcg", Duration::from_secs(30)).await;
        assert!(took.is_some(), "the probe guest did not report its end under TCG");
    }
}
