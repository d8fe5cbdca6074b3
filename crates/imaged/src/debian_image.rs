//! `imaged public-image build-debian`: a full Debian image with cloud-init, as distributions
//! publish for clouds, made with `debootstrap` from the Debian mirror the host's apt uses:
//! systemd, Debian's cloud kernel, cloud-init (reading the NoCloud seed imaged gives every
//! guest), OpenSSH and ifupdown with DHCP, on the same MBR + ext4 + GRUB disk as the tiny image.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::tiny_image::run;

/// What `debootstrap` installs beyond `minbase`. `python3-cffi-backend` is named because
/// debootstrap does not resolve the virtual package `python3-cryptography` needs.
const PACKAGES: &[&str] = &[
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    // systemd-logind (which powers off at the ACPI button) needs D-Bus.
    "dbus",
    "cloud-init",
    "python3-cffi-backend",
    "openssh-server",
    "ifupdown",
    "isc-dhcp-client",
    "netbase",
];

/// cloud-init looks only for the seed imaged gives (no network metadata services to wait for).
const CLOUD_CFG: &str = "datasource_list: [ NoCloud, None ]\n";

/// The Debian mirror the host's apt uses (deb822 `.sources` or `sources.list`).
fn host_mirror() -> anyhow::Result<String> {
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if e.path().extension().is_some_and(|x| x == "sources") {
                texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    mirror_in(&texts).context("no Debian mirror in /etc/apt/sources.list(.d); pass --mirror URL")
}

/// The first Debian archive URI in apt source files (deb822 `URIs:` or one-line `deb URI …`).
fn mirror_in(texts: &[String]) -> Option<String> {
    texts.iter().flat_map(|t| t.lines()).find_map(|l| {
        let l = l.trim();
        let uri = l.strip_prefix("URIs:").or_else(|| l.strip_prefix("deb ")).map(str::trim)?;
        let uri = uri.split_whitespace().find(|w| w.starts_with("http") || w.starts_with("file:"))?;
        (!uri.contains("security")).then(|| uri.to_owned())
    })
}

/// Builds the Debian disk at `out` (`size_gib`, sparse), working in `work`; packages are kept
/// in `cache` between builds when given.
pub(crate) fn build(
    out: &Path,
    work: &Path,
    suite: &str,
    mirror: Option<&str>,
    cache: Option<&Path>,
    size_gib: u64,
) -> anyhow::Result<()> {
    if Command::new("debootstrap").arg("--version").output().is_err() {
        bail!("debootstrap is not installed (Debian package debootstrap)");
    }
    let mirror = match mirror {
        Some(m) => m.to_owned(),
        None => host_mirror()?,
    };
    let root = work.join("root");
    let mut cmd = Command::new("debootstrap");
    cmd.args(["--variant=minbase", &format!("--include={}", PACKAGES.join(","))]);
    if let Some(cache) = cache {
        std::fs::create_dir_all(cache)?;
        cmd.arg(format!("--cache-dir={}", std::path::absolute(cache)?.display()));
    }
    cmd.arg(suite).arg(&root).arg(&mirror);
    let bootstrapped = run(&mut cmd).context("debootstrap");
    unmount_inside(&root);
    bootstrapped?;

    let kver = std::fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("vmlinuz-").map(str::to_owned))
        .next()
        .context("debootstrap installed no kernel")?;
    if !root.join(format!("boot/initrd.img-{kver}")).exists() {
        bail!("the kernel {kver} has no initramfs");
    }
    std::fs::write(root.join("etc/fstab"), "/dev/vda1 / ext4 defaults,errors=remount-ro 0 1\n")?;
    std::fs::write(root.join("etc/hostname"), "debian\n")?;
    std::fs::write(root.join("etc/cloud/cloud.cfg.d/90-imaged.cfg"), CLOUD_CFG)?;
    std::fs::create_dir_all(root.join("boot/grub"))?;
    std::fs::write(
        root.join("boot/grub/grub.cfg"),
        format!(
            "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\nset timeout=0\n\
             menuentry \"Debian\" {{\n  linux /boot/vmlinuz-{kver} console=ttyS0,115200 root=/dev/vda1 ro\n  \
             initrd /boot/initrd.img-{kver}\n}}\n"
        ),
    )?;
    // What a published image leaves out: the package cache and lists, the build's host keys
    // (cloud-init makes each guest its own) and machine id.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        for e in std::fs::read_dir(root.join(dir))?.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    for e in std::fs::read_dir(root.join("etc/ssh"))?.flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with("ssh_host_")) {
            std::fs::remove_file(e.path())?;
        }
    }
    std::fs::write(root.join("etc/machine-id"), "")?;
    crate::bootdisk::write(&root, work, size_gib << 30, out)
}

/// Unmounts what debootstrap mounted inside `root` and left behind when it failed, so that
/// removing the work directory never reaches into the host's `/proc` or `/sys`.
fn unmount_inside(root: &Path) {
    let Ok(root) = std::fs::canonicalize(root) else { return };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut inside: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(PathBuf::from))
        .filter(|m| m.starts_with(&root))
        .collect();
    // Deepest first.
    inside.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in inside {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
}

#[cfg(test)]
mod tests {
    use super::mirror_in;

    #[test]
    fn the_mirror_comes_from_the_hosts_apt_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n".to_owned();
        assert_eq!(mirror_in(&[deb822]).as_deref(), Some("http://mirror.example/debian"));
        let one_line = "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main\n".to_owned();
        assert_eq!(mirror_in(&[one_line]).as_deref(), Some("http://m.example/debian"));
        let security = "deb http://m.example/debian-security bookworm-security main\n".to_owned();
        assert_eq!(mirror_in(&[security]), None);
    }
}
