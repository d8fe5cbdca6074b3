//! The `imaged` binary's library half: configuration and wiring of concrete backends, shared by
//! the `imaged` command and the benchmark. This is the only crate that picks backends.

pub mod benchkit;
pub mod client;
pub mod config;
pub mod storage;

use std::sync::Arc;

use anyhow::Context;
use imaged_app::clock::OffsetFileClock;
use imaged_app::data::DataConfig;
use imaged_app::egress::EgressPolicy;
use imaged_app::{MasterKey, Service};
use imaged_metastore::postgres::PostgresStore;
use imaged_metastore::sqlite::SqliteStore;
use imaged_metastore::MetaStore;

use config::Config;

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE: &str = "meta.db";

/// Creates the data directory readable by its owner only (0700) when it does not exist.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The environment variable naming a file whose number (seconds) is added to the service's
/// clock: the clock the time rules read (a week's notice, effective times), not the one
/// signatures are checked with.
pub const CLOCK_OFFSET_ENV: &str = "IMAGED_CLOCK_OFFSET_FILE";

/// Opens the configured metadata store and builds the service over it.
pub async fn open_service(cfg: &Config) -> anyhow::Result<Service> {
    create_private_dir(&cfg.data_dir)
        .with_context(|| format!("creating the data directory {}", cfg.data_dir.display()))?;
    let store: Arc<dyn MetaStore> = match &cfg.database_url {
        Some(url) => Arc::new(
            PostgresStore::connect(url, cfg.database_schema.as_deref()).await.context("connecting to PostgreSQL")?,
        ),
        None => {
            let path = cfg.data_dir.join(SQLITE_FILE);
            Arc::new(SqliteStore::open(&path).await.with_context(|| format!("opening {}", path.display()))?)
        }
    };
    let master_key = MasterKey::load_or_create_at(&cfg.master_key_file)?;
    let mut data = DataConfig::local(&cfg.data_dir).context("preparing the block store")?;
    if let Some(url) = &cfg.storage.url {
        data.objects = storage::object_store(url, &cfg.storage.options, &cfg.data_dir)?;
    }
    for (region, url) in &cfg.storage.regions {
        data.region_objects.insert(region.clone(), storage::object_store(url, &cfg.storage.options, &cfg.data_dir)?);
    }
    data.import_dir = cfg.import_dir.clone();
    data.https_ca_file = cfg.https_ca_file.clone();
    data.job_lease_secs = cfg.job_lease_secs.max(1);
    data.max_virtual_size = cfg.max_virtual_size;
    for (name, url) in &cfg.buckets {
        let bucket = match storage::locate(url, &cfg.storage.options, &cfg.data_dir)? {
            storage::Location::Local(dir) => imaged_app::data::Bucket::Local(dir),
            storage::Location::Objects(store) => imaged_app::data::Bucket::Objects(store),
        };
        data.buckets.insert(name.clone(), bucket);
    }
    let imports = &cfg.imports;
    let mut egress = EgressPolicy::with_allowed(&imports.allow).map_err(|e| anyhow::anyhow!("[imports] allow: {e}"))?;
    egress.connect_timeout = config::secs_or(imports.connect_timeout_secs, egress.connect_timeout);
    egress.idle_timeout = config::secs_or(imports.idle_timeout_secs, egress.idle_timeout);
    egress.max_transfer_time = config::secs_or(imports.max_transfer_secs, egress.max_transfer_time);
    data.egress = egress;
    data.replay_check = cfg.http.replay_check.unwrap_or(true);
    if let Some(gib) = imports.scratch_per_job_gib {
        data.scratch_per_job = gib.saturating_mul(1 << 30);
    }
    if let Some(share) = imports.scratch_share_percent {
        data.scratch_share_percent = share.min(100);
    }
    if let Some(ratio) = imports.max_inflation_ratio {
        data.max_inflation_ratio = ratio.max(1);
    }
    if let Some(secs) = imports.upload_expiry_secs {
        data.upload_expiry_secs = secs.max(1);
    }
    let mut service =
        Service::new(store, cfg.regions.clone(), cfg.limits, master_key, data).with_prices(cfg.prices.clone());
    if let Some(host) = &cfg.host_id {
        service = service.with_host(host);
    }
    // For drills and tests of the time rules: every process reading the same file agrees.
    Ok(match std::env::var_os(CLOCK_OFFSET_ENV).filter(|v| !v.is_empty()) {
        Some(path) => service.with_clock(Arc::new(OffsetFileClock::new(path.into()))),
        None => service,
    })
}

/// The hypervisor `cfg` asks for: QEMU when it runs here (or is required), else disk only,
/// with the reason.
pub fn hypervisor(cfg: &config::VmConfig) -> anyhow::Result<std::sync::Arc<dyn imaged_app::vm::Hypervisor>> {
    use imaged_app::vm::qemu::{Accel, Qemu, QemuConfig};
    use imaged_app::vm::DiskOnly;
    let mode = cfg.hypervisor.as_deref().unwrap_or("auto");
    if mode == "none" {
        return Ok(std::sync::Arc::new(DiskOnly { reason: "disabled by configuration".into() }));
    }
    if mode != "auto" && mode != "qemu" {
        anyhow::bail!("[vm] hypervisor must be auto, qemu or none, not `{mode}`");
    }
    let accel = match cfg.accel.as_deref().unwrap_or("auto") {
        "auto" => Accel::Auto,
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        other => anyhow::bail!("[vm] accel must be auto, kvm or tcg, not `{other}`"),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1));
    let qemu = QemuConfig {
        binary: cfg.qemu.clone().unwrap_or_else(|| "qemu-system-x86_64".into()),
        accel,
        max_vcpus: cfg.max_vcpus.unwrap_or(cores).max(1),
        max_memory_mib: cfg.max_memory_mib.unwrap_or(4096).max(64),
    };
    match Qemu::detect(qemu) {
        Ok(q) => Ok(std::sync::Arc::new(q)),
        Err(e) if mode == "auto" => Ok(std::sync::Arc::new(DiskOnly { reason: e })),
        Err(e) => anyhow::bail!("[vm] hypervisor = qemu, but {e}"),
    }
}
