//! `imaged`: the server and its operator commands.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use imaged::client::{Client, ProgressBar};
use imaged::config::{Config, Overrides};
use imaged::open_service;
use imaged_domain::AccountId;
use imaged_metastore::Role;

mod bootdisk;
mod debian_image;
mod instance_cli;
mod market_cli;
mod tiny_image;
mod tke_cli;

/// imaged: a self-hosted cloud image service with a Tencent Cloud compatible API.
#[derive(Parser)]
#[command(name = "imaged", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct Common {
    /// Data directory (default ./imaged-data; env IMAGED_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Config file (default DATA_DIR/imaged.toml when present; env IMAGED_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server.
    Serve {
        /// Address to listen on (default 127.0.0.1:9180; env IMAGED_LISTEN). Port 0 picks one.
        #[arg(long)]
        listen: Option<String>,
        /// Serve HTTPS with this certificate chain (PEM; env IMAGED_TLS_CERT). Needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The certificate's private key (PEM; env IMAGED_TLS_KEY).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// TKE node operating systems: beta applications and image-logic changes (operator), the
    /// OS catalogue and beta applications (client).
    #[command(subcommand)]
    Tke(tke_cli::TkeCommand),
    /// The price table (operator).
    #[command(subcommand)]
    Price(market_cli::PriceCommand),
    /// The marketplace: providers, reviews, listings (operator).
    #[command(subcommand)]
    Market(market_cli::MarketCommand),
    /// The message centre (newest first).
    Messages {
        /// Only unread messages.
        #[arg(long)]
        unread: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage accounts (operator; works while the server runs).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage API keys (operator; works while the server runs).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Re-hash every stored block and name the images a missing or damaged block belongs to
    /// (operator). Exits non-zero when something is wrong.
    Fsck {
        /// Only this region (`public` is the catalogue's store).
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Instances' disks (operator).
    #[command(subcommand)]
    Instance(instance_cli::InstanceCommand),
    /// Delete stored blocks no image references any more, and instance bases no instance uses
    /// (operator); prints {"regions": [{"region", "deleted_blocks"}], "bases": {…}}.
    Gc {
        /// Keep unreferenced blocks younger than this many seconds.
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Manage the public image catalogue (operator).
    #[command(subcommand)]
    PublicImage(instance_cli::PublicImageCommand),
    /// Inspect a local disk image safely (like `qemu-img info`, without running qemu).
    Inspect {
        /// The file.
        file: PathBuf,
        /// The format you expect it to be (a mismatch is a rejection).
        #[arg(long)]
        declared: Option<String>,
        /// `json` or `text`.
        #[arg(long, default_value = "text")]
        output: String,
    },
    /// Upload a file to the service (resumable); prints {"UploadId", "ImageUrl"} for ImportImage.
    Upload {
        /// The file.
        file: PathBuf,
        /// Resume this upload instead of starting a new one.
        #[arg(long)]
        resume: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Upload a disk image and import it as a custom image; waits and prints {"ImageId"}.
    Import {
        /// The file.
        file: PathBuf,
        /// Image name.
        #[arg(long)]
        name: String,
        /// OS type (see DescribeImportImageOs), e.g. CentOS.
        #[arg(long)]
        os_type: String,
        /// OS version, e.g. 7 (or -).
        #[arg(long)]
        os_version: String,
        /// x86_64, i386 or arm_64.
        #[arg(long)]
        arch: String,
        /// The file's format (raw, qcow2, vmdk, vhd, vhdx, iso); checked against its bytes.
        #[arg(long)]
        format: Option<String>,
        /// Needed for ISO images.
        #[arg(long)]
        force: bool,
        /// `json` or `text`.
        #[arg(long, default_value = "text")]
        output: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the caller's storage quota and its use (DescribeStorageQuota, an imaged extension).
    StorageQuota {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Copy a custom image to other regions (SyncImages); waits with a progress bar and prints
    /// {"ImageSet": [{"ImageId", "Region"}]}.
    Sync {
        /// The image.
        image_id: String,
        /// Destination regions.
        #[arg(long = "to", required = true, num_args = 1..)]
        to: Vec<String>,
        /// Name of the copies (default: the source's).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Export a custom image to a file (RAW, QCOW2, VHD or VMDK); waits and downloads it.
    Export {
        /// The image.
        image_id: String,
        /// raw, qcow2, vhd or vmdk.
        #[arg(long, default_value = "raw")]
        format: String,
        /// Where to write the file.
        #[arg(long)]
        output: PathBuf,
        /// The bucket the service writes to first.
        #[arg(long, default_value = imaged_app::data::DEFAULT_BUCKET)]
        bucket: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Where and as whom the client commands call.
#[derive(Args, Clone)]
struct ClientArgs {
    /// API endpoint (env IMAGED_ENDPOINT; default http://127.0.0.1:9180).
    #[arg(long)]
    endpoint: Option<String>,
    /// Region (env TENCENTCLOUD_REGION; default ap-guangzhou).
    #[arg(long)]
    region: Option<String>,
    /// Uploads: send whole blocks the region already stores as references with a proof of
    /// possession instead of their bytes: `auto` (unless the endpoint is on this host, where
    /// sending bytes costs less than hashing them twice), `always` or `never`.
    #[arg(long, env = "IMAGED_UPLOAD_REFS", default_value = "auto")]
    upload_refs: String,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let refs = match self.upload_refs.as_str() {
            "auto" => None,
            "always" => Some(true),
            "never" => Some(false),
            other => bail!("--upload-refs must be auto, always or never, not `{other}`"),
        };
        Ok(Client::from_env(self.endpoint.as_deref(), self.region.as_deref())?.with_upload_refs(refs))
    }
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account and its first API key; prints {"accountId", "secretId", "secretKey"}.
    Create {
        /// Account name (unique).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// List accounts as JSON.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Set or clear an account's storage quota: the GiB its custom images' virtual disks and
    /// its uploads may take.
    SetStorageQuota {
        /// The account id.
        #[arg(long)]
        account: String,
        /// The quota in GiB; omit to return to the configured default.
        #[arg(long)]
        gib: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Set or clear (no --url) the webhook an account's messages are also delivered to.
    SetWebhook {
        /// The account id.
        #[arg(long)]
        account: String,
        /// An http:// or https:// URL receiving each message as a JSON POST.
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Set or clear an account's custom-image quota per region.
    SetQuota {
        /// The account id.
        #[arg(long)]
        account: String,
        /// The quota; omit to return to the configured default.
        #[arg(long)]
        quota: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create another API key for an account; prints the credentials once.
    Create {
        /// The account id.
        #[arg(long)]
        account: String,
        #[command(flatten)]
        common: Common,
    },
    /// List keys (never their secrets) as JSON.
    List {
        /// Only this account's keys.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Disable a key: requests signed with it are refused.
    Disable {
        /// The SecretId.
        secret_id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Enable a disabled key.
    Enable {
        /// The SecretId.
        secret_id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a key.
    Delete {
        /// The SecretId.
        secret_id: String,
        #[command(flatten)]
        common: Common,
    },
}

fn load(common: &Common, listen: Option<String>) -> anyhow::Result<Config> {
    Config::load(&Overrides { config: common.config.clone(), data_dir: common.data_dir.clone(), listen })
}

fn account_id(s: &str) -> anyhow::Result<AccountId> {
    AccountId::parse(s).with_context(|| format!("`{s}` is not an account id"))
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn init_tracing() {
    let level = match std::env::var("IMAGED_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    // Colour only on a terminal; `IMAGED_LOG_FORMAT=json` gives one JSON object a line.
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("IMAGED_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

/// Raises the soft open-file limit to the hard one (every connection is a file); returns the
/// limit in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let (current, maximum) = (limit.current.unwrap_or(u64::MAX), limit.maximum);
    if maximum.is_none_or(|m| m > current) {
        let raised = Rlimit { current: maximum, maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return maximum.unwrap_or(u64::MAX),
            Err(e) => tracing::warn!("raising the open-file limit failed: {e}"),
        }
    }
    current
}

/// The listener's limits: the configured ones, the connection cap below the open-file limit.
fn listener_limits(cfg: &Config, open_files: u64) -> imaged_api::ListenerLimits {
    let defaults = imaged_api::ListenerLimits::default();
    let room = usize::try_from(open_files.saturating_sub(256).max(64)).unwrap_or(usize::MAX);
    imaged_api::ListenerLimits {
        max_connections: cfg.http.max_connections.unwrap_or(defaults.max_connections).min(room).max(1),
        header_read_timeout: imaged::config::secs_or(cfg.http.header_read_timeout_secs, defaults.header_read_timeout),
        idle_timeout: imaged::config::secs_or(cfg.http.idle_timeout_secs, defaults.idle_timeout),
        stall_timeout: imaged::config::secs_or(cfg.http.stall_timeout_secs, defaults.stall_timeout),
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let open_files = raise_open_file_limit();
    let soft_stop = std::time::Duration::from_secs(cfg.vm.soft_stop_secs.unwrap_or(60).max(1));
    let service = open_service(&cfg).await?.with_hypervisor(imaged::hypervisor(&cfg.vm)?, soft_stop);
    println!("guests: {}", service.hypervisor().describe());
    if let Some(creds) = service.bootstrap(&cfg.data_dir).await? {
        println!("Created the administrator account. Its API key is shown only this once");
        println!("(also written to {}):", cfg.data_dir.join(imaged_app::service::CREDENTIALS_FILE).display());
        println!("{}", serde_json::to_string_pretty(&creds)?);
    }
    service.spawn_guest_watch().await;
    service.spawn_job_workers(cfg.workers);
    let replay = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = replay.forget_expired_signatures().await {
                tracing::warn!("forgetting expired signatures failed: {e}");
            }
        }
    });
    let gc = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tick.tick().await;
            for region in gc.byte_regions() {
                if let Err(e) = gc.collect_garbage(&region, imaged_app::maintenance::GC_GRACE_PERIOD).await {
                    tracing::warn!(region, "garbage collection failed: {e}");
                }
            }
        }
    });
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(imaged_api::listener::load_tls(cert, key).map_err(anyhow::Error::msg)?),
        (None, None) => None,
        _ => bail!("TLS needs both a certificate (tls_cert) and its key (tls_key)"),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(at) = &cfg.metrics_listen {
        let metrics =
            tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding metrics_listen {at}"))?;
        println!("imaged metrics on http://{}/metrics", metrics.local_addr()?);
        tokio::spawn(imaged_api::serve_metrics(metrics, service.clone()));
    }
    let listener =
        tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let backend = if cfg.database_url.is_some() { "postgresql" } else { "sqlite" };
    println!("imaged listening on {scheme}://{addr} (metadata: {backend}, data: {})", cfg.data_dir.display());
    tracing::info!(%addr, backend, "serving");
    let limits = listener_limits(&cfg, open_files);
    imaged_api::serve(listener, imaged_api::router(service), shutdown_signal(), limits, tls).await?;
    Ok(())
}

async fn set_key_enabled(secret_id: &str, common: &Common, enabled: bool) -> anyhow::Result<()> {
    let svc = open_service(&load(common, None)?).await?;
    if !svc.set_key_enabled(secret_id, enabled).await? {
        bail!("no key {secret_id}");
    }
    Ok(())
}

fn inspect_file(file: &std::path::Path, declared: Option<&str>, output: &str) -> anyhow::Result<bool> {
    use imaged_diskfmt::{inspect, Format, Policy};
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let verdict = match declared.map(|d| Format::parse(d).ok_or(d)).transpose() {
        // A declared format imaged does not accept (qed, vdi, …) is a verdict, not a usage error.
        Err(d) => Err(imaged_diskfmt::Rejection {
            reason: imaged_diskfmt::Reason::UnknownFormat,
            format: None,
            detail: format!("`{d}` is not a format imaged accepts (raw, qcow2, vmdk, vhd, vhdx, iso)"),
        }),
        Ok(declared) => inspect(&f, declared, &Policy::default()),
    };
    let (json, ok) = match verdict {
        Ok(i) => (
            serde_json::json!({"verdict": "accept", "format": i.format.as_str(), "virtual_size": i.virtual_size,
                "reason": null, "detail": i.subformat}),
            true,
        ),
        Err(r) => (
            serde_json::json!({"verdict": "reject", "format": r.format.map(|f| f.as_str()), "virtual_size": null,
                "reason": r.reason.as_str(), "detail": r.detail}),
            false,
        ),
    };
    if output == "json" {
        println!("{json}");
    } else if ok {
        println!(
            "accept: {} image, virtual size {} bytes",
            json["format"].as_str().unwrap_or("?"),
            json["virtual_size"]
        );
    } else {
        println!("reject ({}): {}", json["reason"].as_str().unwrap_or("?"), json["detail"].as_str().unwrap_or(""));
    }
    Ok(ok)
}

/// Polls until `done` says the work ended; shows `percent` on a bar.
async fn wait_for<F, Fut>(label: &'static str, mut poll: F) -> anyhow::Result<serde_json::Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Option<u8>, Option<anyhow::Result<serde_json::Value>>)>>,
{
    let mut bar = ProgressBar::new(label, 100);
    loop {
        let (pct, done) = poll().await?;
        bar.set(u64::from(pct.unwrap_or(0)));
        if let Some(result) = done {
            if result.is_ok() {
                bar.finish();
            }
            return result;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Fsck { region, common } => {
            let svc = open_service(&load(&common, None)?).await?;
            let regions = match region {
                Some(r) => vec![r],
                None => svc.byte_regions(),
            };
            let mut bad = false;
            let mut reports = Vec::new();
            for r in regions {
                let report = svc.fsck(&r).await?;
                bad |= !report.bad_blocks.is_empty();
                if report.checked_blocks > 0 || !report.bad_blocks.is_empty() {
                    reports.push(report);
                }
            }
            print_json(&reports)?;
            if bad {
                bail!("damaged or missing blocks found");
            }
            Ok(())
        }
        Command::Instance(cmd) => instance_cli::instance(cmd).await,
        Command::Gc { grace_secs, common } => {
            let svc = open_service(&load(&common, None)?).await?;
            let grace = std::time::Duration::from_secs(grace_secs);
            let mut regions = Vec::new();
            for r in svc.byte_regions() {
                regions.push(svc.collect_garbage(&r, grace).await?);
            }
            let bases = svc.collect_bases(grace).await?;
            print_json(&serde_json::json!({ "regions": regions, "bases": bases }))
        }
        Command::PublicImage(cmd) => instance_cli::public_image(cmd).await,
        Command::Inspect { file, declared, output } => {
            if !inspect_file(&file, declared.as_deref(), &output)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Upload { file, resume, client } => {
            let (id, url) = client.client()?.upload(&file, resume.as_deref()).await?;
            print_json(&serde_json::json!({"UploadId": id, "ImageUrl": url}))
        }
        Command::Import { file, name, os_type, os_version, arch, format, force, output, client } => {
            let c = client.client()?;
            let (_, url) = c.upload(&file, None).await?;
            let mut params = serde_json::json!({"ImageUrl": url, "ImageName": name, "OsType": os_type,
                "OsVersion": os_version, "Architecture": arch, "Force": force});
            if let Some(f) = format {
                params["ImageFormat"] = f.into();
            }
            let image_id = c.call("ImportImage", &params).await?["ImageId"].as_str().context("no ImageId")?.to_owned();
            let ids = serde_json::json!({"ImageIds": [image_id]});
            wait_for("import", || async {
                let r = c.call("DescribeImages", &ids).await?;
                let img = &r["ImageSet"][0];
                let state = img["ImageState"].as_str().unwrap_or("");
                let pct = img["Progress"].as_u64().and_then(|p| u8::try_from(p).ok());
                Ok(match state {
                    "NORMAL" => (Some(100), Some(Ok(serde_json::Value::Null))),
                    "IMPORTFAILED" => (
                        pct,
                        Some(Err(anyhow::anyhow!("import failed: {}", img["FailureReason"].as_str().unwrap_or("?")))),
                    ),
                    _ => (pct, None),
                })
            })
            .await?;
            if output == "json" {
                print_json(&serde_json::json!({"ImageId": image_id}))
            } else {
                println!("{image_id}");
                Ok(())
            }
        }
        Command::StorageQuota { client } => {
            print_json(&client.client()?.call_extension("DescribeStorageQuota", &serde_json::json!({})).await?)
        }
        Command::Sync { image_id, to, name, client } => {
            let c = client.client()?;
            let mut params =
                serde_json::json!({"ImageIds": [image_id], "DestinationRegions": to, "ImageSetRequired": true});
            if let Some(name) = name {
                params["ImageName"] = serde_json::Value::String(name);
            }
            let set = c.call("SyncImages", &params).await?["ImageSet"].clone();
            let ids = serde_json::json!({"ImageIds": [image_id]});
            wait_for("sync", || async {
                let r = c.call("DescribeImages", &ids).await?;
                let img = &r["ImageSet"][0];
                let pct = img["SyncPercent"].as_u64().and_then(|p| u8::try_from(p).ok());
                Ok(match img["ImageState"].as_str() {
                    Some("SYNCING") => (pct, None),
                    _ => (Some(100), Some(Ok(serde_json::Value::Null))),
                })
            })
            .await?;
            for copy in set.as_array().context("no ImageSet")? {
                let (id, region) = (copy["ImageId"].as_str().unwrap_or(""), copy["Region"].as_str().unwrap_or(""));
                let there = c.in_region(region).call("DescribeImages", &serde_json::json!({"ImageIds": [id]})).await?;
                let img = &there["ImageSet"][0];
                if img["ImageState"] != "NORMAL" {
                    bail!("the copy {id} in {region} is {}: {}", img["ImageState"], img["FailureReason"]);
                }
            }
            print_json(&serde_json::json!({ "ImageSet": set }))
        }
        Command::Export { image_id, format, output, bucket, client } => {
            let c = client.client()?;
            let params = serde_json::json!({"BucketName": bucket, "ImageIds": [image_id], "ExportFormat": format.to_ascii_uppercase()});
            let r = c.call("ExportImages", &params).await?;
            let task = r["TaskId"].as_u64().context("no TaskId")?;
            let name = r["CosPaths"][0].as_str().context("no CosPaths")?.to_owned();
            let q = serde_json::json!({"TaskIds": [task]});
            wait_for("export", || async {
                let r = c.call("DescribeImageTasks", &q).await?;
                let t = &r["TaskSet"][0];
                let pct = t["Progress"].as_u64().and_then(|p| u8::try_from(p).ok());
                Ok(match t["TaskState"].as_str().unwrap_or("") {
                    "SUCCEEDED" => (Some(100), Some(Ok(serde_json::Value::Null))),
                    "FAILED" => {
                        (pct, Some(Err(anyhow::anyhow!("export failed: {}", t["ErrorMsg"].as_str().unwrap_or("?")))))
                    }
                    _ => (pct, None),
                })
            })
            .await?;
            let bytes = c.download(&bucket, &name, &output).await?;
            eprintln!("wrote {} ({bytes} bytes)", output.display());
            Ok(())
        }
        Command::Serve { listen, tls_cert, tls_key, common } => {
            let mut cfg = load(&common, listen)?;
            cfg.tls_cert = tls_cert.or(cfg.tls_cert);
            cfg.tls_key = tls_key.or(cfg.tls_key);
            serve(cfg).await
        }
        Command::Tke(cmd) => tke_cli::run(cmd).await,
        Command::Price(cmd) => market_cli::run(cmd),
        Command::Market(cmd) => market_cli::market(cmd).await,
        Command::Messages { unread, client } => tke_cli::messages(unread, &client).await,
        Command::Account(cmd) => match cmd {
            AccountCommand::SetWebhook { account, url, common } => {
                tke_cli::set_webhook(&account, url.as_deref(), &common).await
            }
            AccountCommand::Create { name, common } => {
                let svc = open_service(&load(&common, None)?).await?;
                print_json(&svc.create_account(&name, Role::User).await?)
            }
            AccountCommand::List { common } => {
                let svc = open_service(&load(&common, None)?).await?;
                let accounts: Vec<_> = svc
                    .list_accounts()
                    .await?
                    .into_iter()
                    .map(|a| {
                        serde_json::json!({
                            "accountId": a.id.to_string(),
                            "name": a.name,
                            "role": a.role.as_str(),
                            "createdTime": a.created_at.iso8601(),
                            "imageQuota": a.image_quota,
                            "storageQuotaGiB": a.storage_quota_gib,
                        })
                    })
                    .collect();
                print_json(&accounts)
            }
            AccountCommand::SetQuota { account, quota, common } => {
                let svc = open_service(&load(&common, None)?).await?;
                svc.set_image_quota(account_id(&account)?, quota).await?;
                Ok(())
            }
            AccountCommand::SetStorageQuota { account, gib, common } => {
                let svc = open_service(&load(&common, None)?).await?;
                let id = account_id(&account)?;
                svc.set_storage_quota(id, gib).await?;
                print_json(&svc.storage_usage(id).await?)
            }
        },
        Command::Key(cmd) => match cmd {
            KeyCommand::Create { account, common } => {
                let svc = open_service(&load(&common, None)?).await?;
                print_json(&svc.create_key(account_id(&account)?).await?)
            }
            KeyCommand::List { account, common } => {
                let svc = open_service(&load(&common, None)?).await?;
                let account = account.as_deref().map(account_id).transpose()?;
                print_json(&svc.list_keys(account).await?)
            }
            KeyCommand::Disable { secret_id, common } => set_key_enabled(&secret_id, &common, false).await,
            KeyCommand::Enable { secret_id, common } => set_key_enabled(&secret_id, &common, true).await,
            KeyCommand::Delete { secret_id, common } => {
                let svc = open_service(&load(&common, None)?).await?;
                if !svc.delete_key(&secret_id).await? {
                    bail!("no key {secret_id}");
                }
                Ok(())
            }
        },
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_tracing();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imaged: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
