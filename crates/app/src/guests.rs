//! Instances' guests: what boots them (their NoCloud seed, CPU and memory from the instance
//! type), what stops them, the watch that keeps `InstanceState` true to what the guest does (a
//! guest that powers itself off becomes STOPPED; one that crashes is reported), the adoption of
//! guests that outlived a restart of the server, and the serial console.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use imaged_domain::instance::{shape, Instance, InstanceState};
use imaged_domain::{AccountId, InstanceId, Region};

use crate::instances::InstanceError;
use crate::service::Service;
use crate::vm::{seed, ExitKind, Hypervisor, Live, Stopped, VmSpec};

/// How long a soft stop waits for the guest to power off before switching it off.
pub const DEFAULT_SOFT_STOP: Duration = Duration::from_secs(60);

/// The most console output one request returns.
pub const CONSOLE_TAIL_BYTES: u64 = 64 * 1024;

/// The hypervisor and how guests are stopped.
#[derive(Clone)]
pub struct Guests {
    pub(crate) hypervisor: Arc<dyn Hypervisor>,
    pub(crate) soft_stop: Duration,
    /// This host's name: instances' disks and guests live on the host that launched them.
    pub(crate) host: Arc<str>,
}

fn this_host() -> Arc<str> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() {
        "localhost".into()
    } else {
        name.into()
    }
}

impl Default for Guests {
    fn default() -> Self {
        Self {
            hypervisor: Arc::new(crate::vm::DiskOnly { reason: "no hypervisor configured".into() }),
            soft_stop: DEFAULT_SOFT_STOP,
            host: this_host(),
        }
    }
}

/// A running instance's guest as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestView {
    /// The hypervisor line (`QEMU emulator version 10.0.2 (tcg)`, or why there is none).
    pub hypervisor: String,
    /// The running guest, if any.
    pub live: Option<Live>,
    /// How it last ended unasked.
    pub note: Option<String>,
}

impl Service {
    /// The same service running guests with `hypervisor`, soft stops waiting `soft_stop`.
    pub fn with_hypervisor(mut self, hypervisor: Arc<dyn Hypervisor>, soft_stop: Duration) -> Self {
        self.guests = Guests { hypervisor, soft_stop, host: Arc::clone(&self.guests.host) };
        self
    }

    /// The same service on the host named `host` (instances it launches are held here; the
    /// instance jobs of this host run only on servers of the same name).
    pub fn with_host(mut self, host: &str) -> Self {
        self.guests.host = host.into();
        self
    }

    /// This host's name (`Placement.HostId` of the instances it runs).
    pub fn host_name(&self) -> &str {
        &self.guests.host
    }

    /// The hypervisor guests run on.
    pub fn hypervisor(&self) -> &Arc<dyn Hypervisor> {
        &self.guests.hypervisor
    }

    /// The directory of an instance on this host.
    pub(crate) fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.data().data_dir.join("instances").join(id.as_str())
    }

    /// What `DescribeInstances` shows of `instance`'s guest.
    pub fn guest_view(&self, instance: &Instance) -> GuestView {
        let hv = self.hypervisor();
        GuestView { hypervisor: hv.describe(), live: hv.live(&instance.id), note: instance.guest.note.clone() }
    }

    /// Writes `instance`'s seed and boots its guest (nothing without a hypervisor). A guest
    /// already running from this disk (a job re-run after a crash) is taken as booted.
    pub(crate) async fn boot_guest(&self, instance: &mut Instance) -> Result<(), String> {
        let hv = Arc::clone(self.hypervisor());
        if !hv.runs_guests() {
            return Ok(());
        }
        let dir = self.instance_dir(&instance.id);
        if hv.adopt(&instance.id, &dir).await {
            return Ok(());
        }
        let password = match &instance.guest.password_sealed {
            Some(sealed) => {
                let bytes = hex::decode(sealed).map_err(|e| format!("the sealed password: {e}"))?;
                Some(self.master_key().open(instance.id.as_str(), &bytes).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let user_data = match &instance.guest.user_data {
            Some(b64) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("UserData: {e}"))?
            }
            None => Vec::new(),
        };
        let image = seed::build(&seed::Seed {
            instance_id: instance.id.to_string(),
            host_name: instance.host_name.clone(),
            user_data,
            password,
        })
        .map_err(|e| format!("building the NoCloud seed: {e}"))?;
        crate::secrets::write_private_file(&dir.join("seed.img"), &image).map_err(|e| format!("seed.img: {e}"))?;
        let (cpu, memory_gib) = shape(&instance.instance_type);
        let console_note =
            self.boot_sector(instance).and_then(|s| crate::vm::boot_sector_problem(&s)).map(str::to_owned);
        let memory_mib = memory_gib.saturating_mul(1024);
        let spec = VmSpec { id: instance.id.clone(), dir, vcpus: cpu, memory_mib, console_note };
        hv.start(&spec).await?;
        instance.guest.note = None;
        Ok(())
    }

    /// The first sector of `instance`'s disk as the guest sees it: from the overlay where the
    /// guest wrote it, else from the base (None when it cannot be read).
    fn boot_sector(&self, instance: &Instance) -> Option<Vec<u8>> {
        use imaged_diskfmt::{ExtentKind, Qcow2Reader, ReadAt};
        let top = std::fs::File::open(self.instance_disk_path(&instance.id)).ok()?;
        let reader = Qcow2Reader::open_overlay(&top).ok()?;
        let mut sector = vec![0u8; 512.min(usize::try_from(reader.virtual_size()).unwrap_or(512))];
        let extents = reader.map(0, sector.len() as u64).ok()?;
        if extents.iter().all(|e| e.kind != ExtentKind::Backing) {
            reader.read_at(0, &mut sector).ok()?;
        } else {
            let base = self.bases_dir().join(format!("{}.raw", instance.disk_base.as_deref()?));
            let base = std::fs::File::open(base).ok()?;
            let n = base.size().ok()?.min(sector.len() as u64) as usize;
            base.read_at(0, &mut sector[..n]).ok()?;
        }
        Some(sector)
    }

    /// Stops `id`'s guest: softly (ACPI, then off after the deadline) or at once.
    pub(crate) async fn halt_guest(&self, id: &InstanceId, soft: bool) -> Result<Stopped, String> {
        let hv = Arc::clone(self.hypervisor());
        if !hv.runs_guests() {
            return Ok(Stopped::NotRunning);
        }
        // A guest that outlived a restart is stopped too.
        hv.adopt(id, &self.instance_dir(id)).await;
        hv.stop(id, soft.then_some(self.guests.soft_stop)).await
    }

    /// Takes back the guests that outlived a restart of this server, reports the others that
    /// were running as stopped, and keeps every instance's state true to its guest from now on.
    pub async fn spawn_guest_watch(&self) {
        let hv = Arc::clone(self.hypervisor());
        if !hv.runs_guests() {
            return;
        }
        if let Some(mut exits) = hv.take_exits() {
            let svc = self.clone();
            tokio::spawn(async move {
                while let Some(exit) = exits.recv().await {
                    let note = match &exit.kind {
                        ExitKind::PoweredOff => "the guest powered itself off".to_owned(),
                        ExitKind::HostStopped => "the guest was switched off by the host".to_owned(),
                        ExitKind::Crashed(why) => format!("the guest crashed: {why}"),
                    };
                    let svc = svc.clone();
                    tokio::spawn(async move { svc.guest_ended(&exit.id, note).await });
                }
            });
        }
        let root = self.data().data_dir.join("instances");
        let Ok(entries) = std::fs::read_dir(&root) else { return };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(|n| InstanceId::parse(n).ok()) else { continue };
            if hv.adopt(&id, &entry.path()).await {
                tracing::info!(instance = %id, "adopted a running guest");
            } else {
                let svc = self.clone();
                let note = "the guest was not running when the server restarted".to_owned();
                tokio::spawn(async move { svc.guest_ended(&id, note).await });
            }
        }
    }

    /// A guest ended without being asked: once no operation is in progress on its instance (an
    /// operation that ends by booting a new guest keeps it RUNNING), a RUNNING instance whose
    /// guest is not running becomes STOPPED with the reason. A guest that ends while its launch
    /// is still being recorded is caught the same way.
    async fn guest_ended(&self, id: &InstanceId, note: String) {
        let waiting_since = std::time::Instant::now();
        let mut instance = loop {
            let Ok(Some(instance)) = self.store().get_instance(id).await else { return };
            if !instance.busy() {
                break instance;
            }
            if waiting_since.elapsed() > Duration::from_secs(3600) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if instance.state != InstanceState::Running || self.hypervisor().live(id).is_some() {
            return;
        }
        tracing::info!(instance = %id, "{note}");
        instance.state = InstanceState::Stopped;
        instance.guest.note = Some(note);
        if let Err(e) = self.put_instance_metered(&instance, None).await {
            tracing::warn!(instance = %id, "recording the guest's end: {e}");
        }
    }

    /// The caller's instance's serial console: this boot's last 64 KiB, and whether older
    /// output was left out.
    pub async fn console_output(
        &self,
        caller: AccountId,
        region: &Region,
        id: &str,
    ) -> Result<(Vec<u8>, bool), InstanceError> {
        let instance = self.own_instance(caller, region, id).await?;
        crate::vm::console_tail(&self.instance_dir(&instance.id), CONSOLE_TAIL_BYTES).map_err(|e| {
            crate::service::AppError::Io { path: format!("{}/console.log", instance.id), source: e }.into()
        })
    }
}
