//! The hypervisor behind instances: a small trait the instance jobs drive, with two backends,
//! [`DiskOnly`] (no hypervisor on this host: instances are their disks, as before) and
//! [`qemu::Qemu`] (one QEMU process per running instance). The binary picks one.
//!
//! A guest's files live in its instance directory beside its system disk: `seed.img` (the
//! NoCloud seed), `console.log` (the serial console of the current boot; the previous boot's is
//! `console.0.log`), `qmp.sock`, `qemu.pid` and `vm.json` (what a restarted server needs to
//! adopt the guest).

pub mod qemu;
mod qmp;
pub mod seed;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use imaged_domain::InstanceId;

/// What a guest is started with.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The instance.
    pub id: InstanceId,
    /// Its directory (the system disk, the seed, the console…).
    pub dir: PathBuf,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// A line written at the top of the console before the guest's own (why the disk will
    /// not boot, when the service can tell).
    pub console_note: Option<String>,
}

/// Why a disk whose first sector is `sector` cannot boot from BIOS, when that can be told
/// from the sector alone: no boot signature (the firmware says "not a bootable disk"), or a
/// signature over boot code that is all zeros (a partition table without a boot loader: the
/// firmware jumps into it and nothing more is printed).
pub fn boot_sector_problem(sector: &[u8]) -> Option<&'static str> {
    if sector.len() < 512 || sector[510..512] != [0x55, 0xaa] {
        return Some("the disk has no boot sector (no 0x55AA signature in its first sector); it cannot boot");
    }
    if sector[..440].iter().all(|&b| b == 0) {
        return Some("the disk's boot sector holds no boot loader (its boot code is all zeros); it cannot boot");
    }
    None
}

/// How a guest's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    /// The guest powered off (by itself, or answering the ACPI power button).
    PoweredOff,
    /// The host stopped it (a hard stop).
    HostStopped,
    /// It ended without powering off: a guest panic, or QEMU died.
    Crashed(String),
}

/// A guest's process ended.
#[derive(Debug, Clone)]
pub struct GuestExit {
    /// The instance.
    pub id: InstanceId,
    /// How.
    pub kind: ExitKind,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// No guest was running.
    NotRunning,
    /// The guest powered off when asked (ACPI).
    Soft,
    /// The guest was switched off.
    Hard,
}

/// A running guest, as `DescribeInstances` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// The accelerator (`kvm`, `tcg`).
    pub accel: String,
    /// Where the guest's SSH port (22) is forwarded on the host.
    pub login: Option<std::net::SocketAddr>,
    /// QEMU's process id.
    pub pid: u32,
}

/// Runs guests on this host.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// Whether guests really run here.
    fn runs_guests(&self) -> bool;
    /// One line for the operator and `DescribeInstances`.
    fn describe(&self) -> String;
    /// Starts the guest of `spec` (its disk and seed exist); returns once it runs.
    async fn start(&self, spec: &VmSpec) -> Result<(), String>;
    /// Stops the guest: with `soft`, the ACPI power button first, then off after the deadline.
    async fn stop(&self, id: &InstanceId, soft: Option<Duration>) -> Result<Stopped, String>;
    /// Asks the guest to write its caches to disk (magic SysRq `s`, emergency sync).
    async fn flush(&self, id: &InstanceId) -> Result<(), String>;
    /// Pauses the guest's CPUs; QEMU completes and flushes its disk writes first. False if no
    /// guest runs.
    async fn pause(&self, id: &InstanceId) -> Result<bool, String>;
    /// Resumes a paused guest.
    async fn resume(&self, id: &InstanceId) -> Result<(), String>;
    /// After a restart: takes the guest of `dir` back if its process still runs.
    async fn adopt(&self, id: &InstanceId, dir: &Path) -> bool;
    /// The running guest of `id`, if any.
    fn live(&self, id: &InstanceId) -> Option<Live>;
    /// The exits of guests, once (the service watches them).
    fn take_exits(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<GuestExit>>;
}

/// No hypervisor: an instance is its disk; "running" is a state of the record only.
#[derive(Debug, Clone)]
pub struct DiskOnly {
    /// Why (for the operator).
    pub reason: String,
}

#[async_trait]
impl Hypervisor for DiskOnly {
    fn runs_guests(&self) -> bool {
        false
    }
    fn describe(&self) -> String {
        format!("none (disk only: {})", self.reason)
    }
    async fn start(&self, _: &VmSpec) -> Result<(), String> {
        Ok(())
    }
    async fn stop(&self, _: &InstanceId, _: Option<Duration>) -> Result<Stopped, String> {
        Ok(Stopped::NotRunning)
    }
    async fn flush(&self, _: &InstanceId) -> Result<(), String> {
        Ok(())
    }
    async fn pause(&self, _: &InstanceId) -> Result<bool, String> {
        Ok(false)
    }
    async fn resume(&self, _: &InstanceId) -> Result<(), String> {
        Ok(())
    }
    async fn adopt(&self, _: &InstanceId, _: &Path) -> bool {
        false
    }
    fn live(&self, _: &InstanceId) -> Option<Live> {
        None
    }
    fn take_exits(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<GuestExit>> {
        None
    }
}

/// The last `max` bytes of an instance's serial console (this boot's), and whether older
/// output was left out.
pub fn console_tail(dir: &Path, max: u64) -> std::io::Result<(Vec<u8>, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(dir.join("console.log")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut out = Vec::with_capacity((len - start) as usize);
    f.take(max).read_to_end(&mut out)?;
    Ok((out, start > 0))
}

#[cfg(test)]
mod tests {
    use super::boot_sector_problem;

    #[test]
    fn a_boot_sector_without_signature_or_code_is_named() {
        let mut sector = vec![0u8; 512];
        assert!(boot_sector_problem(&sector).is_some_and(|p| p.contains("no boot sector")));
        sector[510] = 0x55;
        sector[511] = 0xaa;
        assert!(boot_sector_problem(&sector).is_some_and(|p| p.contains("no boot loader")));
        sector[0] = 0xeb; // a jump, as GRUB's boot.img starts
        assert_eq!(boot_sector_problem(&sector), None);
        assert!(boot_sector_problem(&sector[..100]).is_some(), "a disk shorter than a sector");
    }
}
