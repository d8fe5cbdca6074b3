//! `imaged`: the server and its operator commands.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use imaged::config::{Config, Overrides};
use imaged::open_service;
use imaged_domain::AccountId;
use imaged_metastore::Role;

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
        #[command(flatten)]
        common: Common,
    },
    /// Manage accounts (operator; works while the server runs).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage API keys (operator; works while the server runs).
    #[command(subcommand)]
    Key(KeyCommand),
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
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false).init();
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

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let service = open_service(&cfg).await?;
    if let Some(creds) = service.bootstrap(&cfg.data_dir).await? {
        println!("Created the administrator account. Its API key is shown only this once");
        println!("(also written to {}):", cfg.data_dir.join(imaged_app::service::CREDENTIALS_FILE).display());
        println!("{}", serde_json::to_string_pretty(&creds)?);
    }
    let listener =
        tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let backend = if cfg.database_url.is_some() { "postgresql" } else { "sqlite" };
    println!("imaged listening on http://{addr} (metadata: {backend}, data: {})", cfg.data_dir.display());
    tracing::info!(%addr, backend, "serving");
    imaged_api::serve(listener, imaged_api::router(service), shutdown_signal()).await?;
    Ok(())
}

async fn set_key_enabled(secret_id: &str, common: &Common, enabled: bool) -> anyhow::Result<()> {
    let svc = open_service(&load(common, None)?).await?;
    if !svc.set_key_enabled(secret_id, enabled).await? {
        bail!("no key {secret_id}");
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, common } => serve(load(&common, listen)?).await,
        Command::Account(cmd) => match cmd {
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
