//! Configuration: defaults, overridden by a TOML file, then by environment variables, then by
//! command-line flags.
//!
//! | setting | flag | environment | file key | default |
//! |---|---|---|---|---|
//! | data directory | `--data-dir` | `IMAGED_DATA_DIR` | `data_dir` | `./imaged-data` |
//! | listen address | `--listen` | `IMAGED_LISTEN` | `listen` | `127.0.0.1:9180` |
//! | metadata database | | `IMAGED_DATABASE_URL` | `database_url` | SQLite at `DATA_DIR/meta.db` |
//! | PostgreSQL schema | | `IMAGED_DATABASE_SCHEMA` | `database_schema` | the connection's default |
//! | `file://` import directory | | `IMAGED_IMPORT_DIR` | `import_dir` | none (`file://` refused) |
//! | CA bundle for `https://` imports | | `IMAGED_HTTPS_CA_FILE` | `https_ca_file` | the system's |
//! | job lease, seconds | | `IMAGED_JOB_LEASE_SECS` | `job_lease_secs` | 30 |
//! | largest virtual size, GiB | | | `max_virtual_size_gib` | 2048 |
//! | export buckets (a directory, or `s3://BUCKET/PREFIX` that every server reaches) | | `IMAGED_EXPORT_BUCKET` (the `exports` bucket's location) | `[buckets]` name = "dir or url" | `exports` = `DATA_DIR/buckets/exports` |
//! | networks and hosts imports may reach | | `IMAGED_IMPORT_ALLOW` (comma-separated) | `[imports]` `allow` | none: public addresses only |
//! | import fetch timeouts | | | `[imports]` `connect_timeout_secs`, `idle_timeout_secs`, `max_transfer_secs` | 10, 30, 21600 |
//! | scratch limits | | | `[imports]` `scratch_per_job_gib`, `scratch_share_percent`, `max_inflation_ratio` | 2048, 50, 100 |
//! | upload expiry after the last append, seconds | | | `[imports]` `upload_expiry_secs` | 604800 (a week) |
//! | job workers | | | `[workers]` `transfer`, `instance`, `per_account` | 4, 2, 2 |
//! | connections | | | `[http]` `max_connections`, `header_read_timeout_secs`, `idle_timeout_secs`, `stall_timeout_secs` | open-file limit − 256 (at most 4096), 10, 60, 120 |
//! | replay check | | | `[http]` `replay_check` | on |
//! | guests: hypervisor (`auto`, `qemu`, `none`) | | `IMAGED_HYPERVISOR` | `[vm]` `hypervisor` | `auto`: QEMU when `qemu-system-x86_64` runs, else disk only |
//! | guests: emulator, accelerator (`auto`, `kvm`, `tcg`) | | `IMAGED_QEMU`, `IMAGED_ACCEL` | `[vm]` `qemu`, `accel` | `qemu-system-x86_64` on `PATH`, `auto` (KVM if a probe guest finishes under it within 3 s) |
//! | guests: the most CPUs and memory one gets | | | `[vm]` `max_vcpus`, `max_memory_mib` | the host's cores, 4096 |
//! | guests: how long a soft stop waits | | | `[vm]` `soft_stop_secs` | 60 |
//! | where block stores live: a directory or `s3://BUCKET/PREFIX` | | `IMAGED_STORAGE_URL` | `[storage]` `url` | `DATA_DIR/blocks` |
//! | S3 settings (object_store's keys: `endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`, …) | | `AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, … (over the file's) | `[storage.options]` | none |
//! | a region's own bucket or prefix | | | `[storage.regions]` region = "url" | `regions/<region>/` under `url` |
//! | master key (servers sharing a database share it) | | `IMAGED_MASTER_KEY_FILE` | `master_key_file` | `DATA_DIR/master.key` |
//! | this host's name (instances' disks and jobs stay on it; unique per data directory) | | `IMAGED_HOST_ID` | `host_id` | the machine's host name |
//! | `/metrics` (OpenMetrics) on an operator address | | `IMAGED_METRICS_LISTEN` | `metrics_listen` | off |
//! | config file | `--config` | `IMAGED_CONFIG` | | `DATA_DIR/imaged.toml` if present |
//! | TLS certificate chain and key (PEM) | `--tls-cert`, `--tls-key` | `IMAGED_TLS_CERT`, `IMAGED_TLS_KEY` | `tls_cert`, `tls_key` | none: plain HTTP |
//!
//! The file may also set `[limits]` and replace the region set with `[[regions]]`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use imaged_domain::rules::Limits;
use imaged_domain::{Region, RegionCatalog};
use serde::Deserialize;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./imaged-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9180";
/// Config file looked for inside the data directory.
pub const CONFIG_FILE: &str = "imaged.toml";

/// The config file's shape. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen address.
    pub listen: Option<String>,
    /// TLS certificate chain (PEM): the listener serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// `postgres://…` to keep metadata in PostgreSQL instead of the embedded SQLite.
    pub database_url: Option<String>,
    /// PostgreSQL schema to keep the tables in (created if missing).
    pub database_schema: Option<String>,
    /// Directory `file://` import URLs may read from.
    pub import_dir: Option<PathBuf>,
    /// CA certificates (PEM) trusted for `https://` import URLs, instead of the system's.
    pub https_ca_file: Option<PathBuf>,
    /// Seconds a job worker's claim lasts without renewal.
    pub job_lease_secs: Option<u64>,
    /// Largest virtual disk accepted at import, in GiB.
    pub max_virtual_size_gib: Option<u64>,
    /// Export buckets: name = a local directory or `s3://BUCKET/PREFIX`.
    #[serde(default)]
    pub buckets: std::collections::BTreeMap<String, String>,
    /// Quotas (custom images per region per account, accounts per shared image).
    #[serde(default)]
    pub limits: Limits,
    /// What `http(s)://` imports may reach, their timeouts and scratch limits.
    #[serde(default)]
    pub imports: ImportsConfig,
    /// Job worker pools.
    #[serde(default)]
    pub workers: WorkersConfig,
    /// The listener's limits.
    #[serde(default)]
    pub http: HttpConfig,
    /// Replaces the built-in region set.
    pub regions: Option<Vec<Region>>,
    /// The price table (minor units); replaces the built-in one when present.
    pub prices: Option<imaged_domain::pricing::PriceTable>,
    /// Guests: the hypervisor behind instances.
    #[serde(default)]
    pub vm: VmConfig,
    /// Where block stores live.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The master key's file (every server of one database must read the same key).
    pub master_key_file: Option<PathBuf>,
    /// This host's name.
    pub host_id: Option<String>,
    /// Where `/metrics` is served (an address only operators reach); off when unset.
    pub metrics_listen: Option<String>,
}

/// `[storage]`: where the block stores live.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// A directory (relative: under the data directory) or `s3://BUCKET/PREFIX`; regions live
    /// under `regions/<region>/` of it.
    pub url: Option<String>,
    /// S3 settings by object_store's key names; the `AWS_*` environment overrides them.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
    /// Regions kept in a location of their own: region = URL.
    #[serde(default)]
    pub regions: std::collections::BTreeMap<String, String>,
}

/// `[vm]`: the hypervisor behind instances.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// `auto` (QEMU if it runs here, else disk only), `qemu` (fail to start without it) or
    /// `none` (instances are their disks).
    pub hypervisor: Option<String>,
    /// The emulator (default `qemu-system-x86_64` on `PATH`).
    pub qemu: Option<PathBuf>,
    /// `auto`, `kvm` or `tcg`.
    pub accel: Option<String>,
    /// The most virtual CPUs one guest gets.
    pub max_vcpus: Option<u32>,
    /// The most memory one guest gets, MiB.
    pub max_memory_mib: Option<u32>,
    /// Seconds a soft stop waits for the guest to power off before switching it off.
    pub soft_stop_secs: Option<u64>,
}

/// `[imports]`: the egress policy and scratch limits of imports.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportsConfig {
    /// Networks (`10.0.0.0/8`), addresses or host names imports may reach besides public
    /// addresses.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Seconds to establish a connection.
    pub connect_timeout_secs: Option<u64>,
    /// Seconds to wait for the first byte of an answer, or between two reads.
    pub idle_timeout_secs: Option<u64>,
    /// Seconds one fetch may take in all.
    pub max_transfer_secs: Option<u64>,
    /// Scratch space one job may write, in GiB.
    pub scratch_per_job_gib: Option<u64>,
    /// Share (percent) of the free space all jobs' scratch may take.
    pub scratch_share_percent: Option<u8>,
    /// How many times its size a compressed import may inflate to.
    pub max_inflation_ratio: Option<u64>,
    /// Seconds an upload lives after its last append.
    pub upload_expiry_secs: Option<u64>,
}

/// `[workers]`: the job worker pools.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// Workers for imports, exports, captures and copies.
    pub transfer: Option<usize>,
    /// Workers for launches and instance operations.
    pub instance: Option<usize>,
    /// Jobs of one account a pool runs at once.
    pub per_account: Option<u32>,
}

/// `[http]`: the listener's limits.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Seconds to receive a request head.
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may sit idle.
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a connection with a request in progress may move no byte.
    pub stall_timeout_secs: Option<u64>,
    /// Whether signatures are checked for replays (default on; off only behind a gateway that
    /// refuses replays itself).
    pub replay_check: Option<bool>,
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: String,
    /// TLS certificate chain (PEM), when serving HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// PostgreSQL URL, when metadata lives there.
    pub database_url: Option<String>,
    /// PostgreSQL schema, when not the default.
    pub database_schema: Option<String>,
    /// Directory `file://` imports may read from.
    pub import_dir: Option<PathBuf>,
    /// CA certificates trusted for `https://` imports.
    pub https_ca_file: Option<PathBuf>,
    /// Job lease in seconds.
    pub job_lease_secs: u64,
    /// Largest virtual disk accepted at import, in bytes.
    pub max_virtual_size: u64,
    /// Extra export buckets: name = a local directory or `s3://BUCKET/PREFIX`.
    pub buckets: std::collections::BTreeMap<String, String>,
    /// Limits.
    pub limits: Limits,
    /// Regions.
    pub regions: RegionCatalog,
    /// Import egress and scratch settings (the allow list from the file or the environment).
    pub imports: ImportsConfig,
    /// Job worker pools.
    pub workers: imaged_app::jobs::WorkerPools,
    /// The listener's limits, as configured (the connection cap is settled at start).
    pub http: HttpConfig,
    /// The price table.
    pub prices: imaged_domain::pricing::PriceTable,
    /// The hypervisor behind instances (the environment applied).
    pub vm: VmConfig,
    /// Where block stores live (the environment applied).
    pub storage: StorageConfig,
    /// The master key's file.
    pub master_key_file: PathBuf,
    /// This host's name, when configured.
    pub host_id: Option<String>,
    /// Where `/metrics` is served, when configured.
    pub metrics_listen: Option<String>,
}

/// What the command line gave.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
}

/// A configured number of seconds (at least 1) as a duration, or `default`.
pub fn secs_or(configured: Option<u64>, default: std::time::Duration) -> std::time::Duration {
    configured.map_or(default, |s| std::time::Duration::from_secs(s.max(1)))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

impl Config {
    /// Resolves flags over environment over file over defaults.
    pub fn load(flags: &Overrides) -> anyhow::Result<Self> {
        let explicit_file = flags.config.clone().or_else(|| env("IMAGED_CONFIG").map(PathBuf::from));
        let pre_data_dir = flags.data_dir.clone().or_else(|| env("IMAGED_DATA_DIR").map(PathBuf::from));
        let file = match &explicit_file {
            Some(path) => read_file(path)?,
            None => {
                let dir = pre_data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                let path = dir.join(CONFIG_FILE);
                if path.exists() {
                    read_file(&path)?
                } else {
                    FileConfig::default()
                }
            }
        };
        let data_dir = pre_data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        // Absolute, so that helpers run elsewhere (qemu-img, QEMU) find the same files.
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        let listen = flags
            .listen
            .clone()
            .or_else(|| env("IMAGED_LISTEN"))
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let database_url = env("IMAGED_DATABASE_URL").or(file.database_url);
        let tls_cert = env("IMAGED_TLS_CERT").map(PathBuf::from).or(file.tls_cert);
        let tls_key = env("IMAGED_TLS_KEY").map(PathBuf::from).or(file.tls_key);
        let database_schema = env("IMAGED_DATABASE_SCHEMA").or(file.database_schema);
        let import_dir = env("IMAGED_IMPORT_DIR").map(PathBuf::from).or(file.import_dir);
        let https_ca_file = env("IMAGED_HTTPS_CA_FILE").map(PathBuf::from).or(file.https_ca_file);
        let job_lease_secs = match env("IMAGED_JOB_LEASE_SECS") {
            Some(v) => v.parse().context("IMAGED_JOB_LEASE_SECS must be a number of seconds")?,
            None => file.job_lease_secs.unwrap_or(30),
        };
        let max_virtual_size =
            file.max_virtual_size_gib.map_or(imaged_app::data::DEFAULT_MAX_VIRTUAL_SIZE, |g| g << 30);
        let regions = match file.regions {
            Some(r) => RegionCatalog::new(r).context("invalid [[regions]] in the config file")?,
            None => RegionCatalog::default(),
        };
        let mut imports = file.imports;
        if let Some(allow) = env("IMAGED_IMPORT_ALLOW") {
            imports.allow = allow.split(',').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect();
        }
        let defaults = imaged_app::jobs::WorkerPools::default();
        let workers = imaged_app::jobs::WorkerPools {
            transfer: file.workers.transfer.unwrap_or(defaults.transfer).max(1),
            instance: file.workers.instance.unwrap_or(defaults.instance).max(1),
            per_account: file.workers.per_account.unwrap_or(defaults.per_account).max(1),
        };
        let prices = file.prices.unwrap_or_default();
        prices.validate().map_err(anyhow::Error::msg)?;
        let mut vm = file.vm;
        if let Some(h) = env("IMAGED_HYPERVISOR") {
            vm.hypervisor = Some(h);
        }
        if let Some(q) = env("IMAGED_QEMU") {
            vm.qemu = Some(q.into());
        }
        if let Some(a) = env("IMAGED_ACCEL") {
            vm.accel = Some(a);
        }
        let mut storage = file.storage;
        if let Some(url) = env("IMAGED_STORAGE_URL") {
            storage.url = Some(url);
        }
        for region in storage.regions.keys() {
            anyhow::ensure!(
                region == imaged_app::demo::CATALOGUE_REGION || regions.get(region).is_some(),
                "[storage.regions] names `{region}`, which is not a region"
            );
        }
        let master_key_file = env("IMAGED_MASTER_KEY_FILE")
            .map(PathBuf::from)
            .or(file.master_key_file)
            .unwrap_or_else(|| data_dir.join(imaged_app::secrets::MASTER_KEY_FILE));
        let host_id = env("IMAGED_HOST_ID").or(file.host_id);
        let mut buckets = file.buckets;
        if let Some(url) = env("IMAGED_EXPORT_BUCKET") {
            buckets.insert(imaged_app::data::DEFAULT_BUCKET.to_owned(), url);
        }
        let metrics_listen = env("IMAGED_METRICS_LISTEN").or(file.metrics_listen);
        Ok(Self {
            metrics_listen,
            host_id,
            storage,
            master_key_file,
            vm,
            prices,
            imports,
            workers,
            http: file.http,
            tls_cert,
            tls_key,
            data_dir,
            listen,
            database_url,
            database_schema,
            import_dir,
            https_ca_file,
            job_lease_secs,
            max_virtual_size,
            buckets,
            limits: file.limits,
            regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_sets_limits_and_regions_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:1"
[limits]
custom_images_per_region = 3
[[regions]]
region = "lab-one"
name = "Lab One"
mainland = false
zones = [{ zone = "lab-one-1", name = "Lab One Zone 1", zone_id = 1 }]
"#,
        )
        .expect("write");
        let flags = Overrides { config: Some(path), listen: Some("127.0.0.1:2".into()), ..Overrides::default() };
        let cfg = Config::load(&flags).expect("load");
        assert_eq!(cfg.listen, "127.0.0.1:2");
        assert_eq!(cfg.limits.custom_images_per_region, 3);
        assert_eq!(cfg.limits.shares_per_image, 50);
        assert_eq!(cfg.regions.regions().len(), 1);
        assert!(cfg.regions.get("lab-one").is_some_and(|r| r.zones[0].available));
    }

    #[test]
    fn unknown_keys_in_the_config_file_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let flags = Overrides { config: Some(path), ..Overrides::default() };
        assert!(Config::load(&flags).is_err());
    }
}
