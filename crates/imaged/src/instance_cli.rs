//! `imaged instance …` and `imaged public-image …`: instances' disks and serial consoles, and
//! the public images they boot from (operator).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use imaged::open_service;

use super::{debian_image, load, print_json, tiny_image, ClientArgs, Common};

#[derive(Subcommand)]
pub(crate) enum InstanceCommand {
    /// Print an instance's system disk as {"path", "format"}, for attaching it to QEMU or
    /// libvirt (a qcow2 overlay on a read-only base; never write the base).
    Disk {
        /// The instance id (ins-…).
        instance_id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print an instance's serial console (this boot's last 64 KiB), through the API.
    Console {
        /// The instance id (ins-…).
        instance_id: String,
        /// Keep printing what the guest writes until interrupted.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum PublicImageCommand {
    /// Build a tiny bootable image (Debian's cloud kernel and busybox, from Debian's packages)
    /// and add it as a public image; prints {"ImageId"}. With --output, only write the raw disk.
    BuildTiny {
        /// Write the raw disk here instead of adding it.
        #[arg(long)]
        output: Option<PathBuf>,
        /// A directory holding the two packages already (else `apt-get download` fetches them).
        #[arg(long)]
        debs: Option<PathBuf>,
        /// Image name.
        #[arg(long, default_value = "imaged tiny")]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Build a full Debian image with cloud-init (debootstrap from the host's Debian mirror:
    /// systemd, the cloud kernel, cloud-init, OpenSSH) and add it as a public image; prints
    /// {"ImageId"}. With --output, only write the raw disk. Takes a few minutes.
    BuildDebian {
        /// Write the raw disk here instead of adding it.
        #[arg(long)]
        output: Option<PathBuf>,
        /// The Debian suite.
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// The Debian mirror (default: the one the host's apt uses).
        #[arg(long)]
        mirror: Option<String>,
        /// Keep downloaded packages here between builds.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// The disk's size, GiB.
        #[arg(long, default_value_t = 2)]
        size_gib: u64,
        /// Image name.
        #[arg(long, default_value = "Debian 12 (cloud-init)")]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Add a real disk image as a public image, offered in every region; prints {"ImageId"}.
    Add {
        /// The disk image (raw, qcow2, vmdk, vhd, vhdx or iso).
        file: PathBuf,
        /// Image name.
        #[arg(long)]
        name: String,
        /// Display OS name, e.g. "Debian 12.5 64bit".
        #[arg(long)]
        os_name: String,
        /// OS family, e.g. Debian, CentOS, Windows.
        #[arg(long)]
        platform: String,
        /// x86_64, arm or i386.
        #[arg(long, default_value = "x86_64")]
        arch: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// The file's format, checked against its bytes.
        #[arg(long)]
        format: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// Runs `imaged instance …`.
pub(crate) async fn instance(cmd: InstanceCommand) -> anyhow::Result<()> {
    match cmd {
        InstanceCommand::Disk { instance_id, common } => {
            let svc = open_service(&load(&common, None)?).await?;
            let (path, format) = svc.instance_disk(&instance_id).await?;
            print_json(&serde_json::json!({ "path": path, "format": format }))
        }
        InstanceCommand::Console { instance_id, follow, client } => {
            let c = client.client()?;
            let params = serde_json::json!({ "InstanceId": instance_id });
            let mut shown = String::new();
            loop {
                let r = c.call_extension("DescribeInstanceConsoleOutput", &params).await?;
                let text = r["Output"].as_str().unwrap_or_default().to_owned();
                print!("{}", unseen(&shown, &text));
                std::io::Write::flush(&mut std::io::stdout())?;
                if !follow {
                    return Ok(());
                }
                shown = text;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Adds `file` as the public image `spec` to the data of `common`; prints {"ImageId"}.
async fn register(common: &Common, file: &Path, spec: imaged_app::demo::PublicImageSpec) -> anyhow::Result<()> {
    let svc = open_service(&load(common, None)?).await?;
    let id = svc.add_public_image(file, spec).await.map_err(|e| anyhow::anyhow!(e))?;
    print_json(&serde_json::json!({"ImageId": id.to_string()}))
}

/// Runs `imaged public-image …`.
pub(crate) async fn public_image(cmd: PublicImageCommand) -> anyhow::Result<()> {
    match cmd {
        PublicImageCommand::BuildTiny { output, debs, name, common } => {
            let work = tempfile::tempdir()?;
            let started = std::time::Instant::now();
            if let Some(out) = output {
                tiny_image::build(&out, work.path(), debs.as_deref())?;
                return print_json(&serde_json::json!({"File": out, "Seconds": started.elapsed().as_secs_f64()}));
            }
            let file = work.path().join("tiny.raw");
            tiny_image::build(&file, work.path(), debs.as_deref())?;
            let spec = imaged_app::demo::PublicImageSpec {
                name,
                os_name: "imaged tiny (Debian cloud kernel + busybox)".into(),
                platform: "Other Linux".into(),
                architecture: imaged_domain::Architecture::X86_64,
                description: "Boots to a login prompt; runs UserData scripts from a NoCloud seed".into(),
                declared: Some(imaged_diskfmt::Format::Raw),
            };
            register(&common, &file, spec).await
        }
        PublicImageCommand::BuildDebian { output, suite, mirror, cache, size_gib, name, common } => {
            let started = std::time::Instant::now();
            // The root file system takes about half a GiB: work beside the output (or in the
            // data directory), not in a small /tmp.
            let (file, work) = match &output {
                Some(out) => {
                    let parent = std::path::absolute(out)?.parent().map(Path::to_owned).unwrap_or_default();
                    (out.clone(), tempfile::tempdir_in(parent)?)
                }
                None => {
                    let cfg = load(&common, None)?;
                    std::fs::create_dir_all(&cfg.data_dir)?;
                    let work = tempfile::tempdir_in(&cfg.data_dir)?;
                    (work.path().join("debian.raw"), work)
                }
            };
            debian_image::build(&file, work.path(), &suite, mirror.as_deref(), cache.as_deref(), size_gib)?;
            if output.is_some() {
                return print_json(&serde_json::json!({"File": file, "Seconds": started.elapsed().as_secs_f64()}));
            }
            let spec = imaged_app::demo::PublicImageSpec {
                name,
                os_name: "Debian 12 64bit (cloud-init)".into(),
                platform: "Debian".into(),
                architecture: imaged_domain::Architecture::X86_64,
                description: "Debian with systemd, the cloud kernel, cloud-init and OpenSSH".into(),
                declared: Some(imaged_diskfmt::Format::Raw),
            };
            register(&common, &file, spec).await
        }
        PublicImageCommand::Add { file, name, os_name, platform, arch, description, format, common } => {
            let architecture =
                imaged_domain::Architecture::parse(&arch).with_context(|| format!("unknown architecture `{arch}`"))?;
            let declared = format
                .map(|f| imaged_diskfmt::Format::parse(&f).with_context(|| format!("unknown format `{f}`")))
                .transpose()?;
            let spec =
                imaged_app::demo::PublicImageSpec { name, os_name, platform, architecture, description, declared };
            register(&common, &file, spec).await
        }
    }
}

/// What `now` (the console's last 64 KiB) holds beyond `before` (the last poll's): the rest
/// after the end of `before` when the window only grew or slid, else (a new boot) all of it.
fn unseen<'a>(before: &str, now: &'a str) -> &'a str {
    if let Some(rest) = now.strip_prefix(before) {
        return rest;
    }
    // The window slid: find where the last poll's final kilobyte ends in this one.
    let from = before.char_indices().map(|(i, _)| i).find(|&i| before.len() - i <= 1024).unwrap_or(0);
    let tail = &before[from..];
    match now.rfind(tail) {
        Some(at) if !tail.is_empty() => &now[at + tail.len()..],
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::unseen;

    #[test]
    fn a_followed_console_prints_each_line_once() {
        assert_eq!(unseen("", "boot\n"), "boot\n");
        assert_eq!(unseen("boot\n", "boot\nlogin: "), "login: ");
        assert_eq!(unseen("boot\n", "boot\n"), "");
        // The 64 KiB window slid: the old start is gone, the new lines follow the old end.
        let lines = |r: std::ops::Range<u32>| r.map(|i| format!("line {i}\n")).collect::<String>();
        assert_eq!(unseen(&lines(0..300), &lines(100..320)), lines(300..320));
        // A new boot: nothing of the old output is left, so all of it is new.
        assert_eq!(unseen("old boot\n", "new boot\n"), "new boot\n");
    }
}
