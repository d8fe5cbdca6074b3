//! `imaged public-image build-tiny`: a real bootable x86_64 disk image made from two Debian
//! packages, Debian's cloud kernel and `busybox-static`, with no chroot, loop device or mount:
//! an MBR with one bootable ext4 partition (`mkfs.ext4 -d`), GRUB written by hand into the gap
//! before it, and an initramfs that loads the kernel's modular virtio drivers and switches to
//! the ext4 root. It boots in a few seconds under TCG.
//!
//! The guest's init reads a NoCloud seed as cloud-init does (a FAT disk labelled `cidata`
//! holding `meta-data`, `user-data` and `vendor-data`): it takes the host name from
//! `local-hostname`, root's password from the vendor data's `chpasswd` users, runs `user-data`
//! when it is a script (`#!…`), writes `imaged-tiny:` lines on the serial console, powers off
//! cleanly on the ACPI power button (busybox `acpid`), and offers a login prompt on the serial
//! console. Busybox `init` runs it all; `poweroff` inside the guest ends every process, syncs
//! and remounts the root read-only first.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Modules the initramfs loads, in dependency order (the cloud kernel has virtio, the ACPI
/// button, evdev and FAT as modules).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "button",
    "evdev",
    "fat",
    "vfat",
    "nls_cp437",
    "nls_ascii",
];

const INITRAMFS_INIT: &str = r##"#!/bin/busybox sh
# imaged-tiny initramfs: load the virtio drivers, mount the ext4 root, switch to it.
b=/bin/busybox
$b mkdir -p /proc /sys /dev /newroot
$b mount -t devtmpfs devtmpfs /dev
$b mount -t proc proc /proc
fail() { echo "imaged-tiny: $1; powering off"; $b poweroff -f; }
for m in @MODULES@; do
  $b insmod /lib/modules/$m.ko 2>/dev/null || echo "imaged-tiny: cannot load $m"
done
n=0
while [ ! -b /dev/vda1 ]; do
  n=$((n + 1)); [ $n -gt 100 ] && fail "no /dev/vda1"
  $b usleep 100000
done
$b mount -t ext4 -o rw /dev/vda1 /newroot || fail "cannot mount /dev/vda1"
$b umount /proc
$b mount --move /dev /newroot/dev
exec $b switch_root /newroot /sbin/init
fail "switch_root failed"
"##;

/// Busybox `init` (PID 1) runs the boot script, keeps a login prompt on the serial console,
/// and on `poweroff`, `reboot` or the ACPI button runs the shutdown script, ends every process
/// and powers off.
const INITTAB: &str = "::sysinit:/etc/init.d/rcS
ttyS0::respawn:/bin/getty -L 115200 ttyS0 vt100
::ctrlaltdel:/bin/reboot
::shutdown:/etc/init.d/rcK
";

const RC_S: &str = r##"#!/bin/sh
# imaged-tiny boot.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -o remount,rw /
echo "imaged-tiny: booted $(uname -r)"
mkdir -p /run/seed
for d in /dev/vd[b-z]; do
  [ -b "$d" ] && mount -t vfat -o ro "$d" /run/seed 2>/dev/null && break
done
if [ -f /run/seed/meta-data ]; then
  echo "imaged-tiny: NoCloud seed $(sed -n 's/^instance-id: *//p' /run/seed/meta-data)"
  h=$(sed -n 's/^local-hostname: *//p' /run/seed/meta-data)
  [ -n "$h" ] && echo "$h" > /etc/hostname
fi
hostname -F /etc/hostname
if [ -f /run/seed/vendor-data ]; then
  # root's password, a YAML plain or double-quoted scalar.
  pw=$(sed -n 's/^      password: *//p' /run/seed/vendor-data | head -n 1 |
       sed -e 's/^"\(.*\)"$/\1/' -e 's/\\"/"/g' -e 's/\\\\/\\/g')
  if [ -n "$pw" ]; then
    hash=$(mkpasswd -m sha512 "$pw")
    sed -i "s|^root:[^:]*:|root:$hash:|" /etc/shadow
  fi
fi
echo "imaged-tiny: hostname $(hostname)"
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
  udhcpc -i eth0 -q -n -t 3 -s /etc/udhcpc.script >/dev/null 2>&1 && echo "imaged-tiny: eth0 $(ip -4 -o addr show eth0 | awk '{print $4}')"
fi
acpid -c /etc/acpi -l /run/acpid.log
if [ -f /run/seed/user-data ] && [ "$(head -c 2 /run/seed/user-data)" = "#!" ]; then
  cp /run/seed/user-data /run/user-data
  chmod 700 /run/user-data
  /run/user-data
  echo "imaged-tiny: user-data exited $?"
fi
sync
"##;

const RC_K: &str = r##"#!/bin/sh
# imaged-tiny shutdown: flush and remount the root read-only before init powers off.
echo "imaged-tiny: powering off"
sync
mount -o remount,ro / 2>/dev/null
exit 0
"##;

const UDHCPC_SCRIPT: &str = r##"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
"##;

const GRUB_CFG: &str = r##"serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry "imaged-tiny" {
  linux /boot/vmlinuz console=ttyS0,115200 root=/dev/vda1 rw panic=-1
  initrd /boot/initrd.img
}
"##;

/// Runs `cmd`, failing with its stderr when it fails.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cloud kernel's package (its ABI version changes; old ones leave the mirror).
fn kernel_package() -> anyhow::Result<String> {
    let out = run(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
        .context("apt-cache names no kernel for linux-image-cloud-amd64")
}

/// Fetches the kernel and busybox packages into `dir` (unless `debs` holds them already) and
/// unpacks them into `dir/x`.
fn fetch(dir: &Path, debs: Option<&Path>) -> anyhow::Result<PathBuf> {
    let debs = match debs {
        Some(d) => d.to_owned(),
        None => {
            let d = dir.join("debs");
            std::fs::create_dir_all(&d)?;
            run(Command::new("apt-get").arg("download").arg(kernel_package()?).arg("busybox-static").current_dir(&d))?;
            d
        }
    };
    let x = dir.join("x");
    std::fs::create_dir_all(&x)?;
    let mut found = 0;
    for entry in std::fs::read_dir(&debs)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".deb") && (name.starts_with("linux-image-") || name.starts_with("busybox-static")) {
            run(Command::new("dpkg-deb").arg("-x").arg(&path).arg(&x))?;
            found += 1;
        }
    }
    if found < 2 {
        bail!("{} must hold a linux-image-*-cloud-amd64 and a busybox-static package", debs.display());
    }
    Ok(x)
}

/// A `newc` cpio archive of `files` (path inside, mode, contents), directories first.
pub(crate) fn cpio_newc(dirs: &[&str], files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let mut ino = 1;
    for d in dirs {
        entry(&mut out, ino, d, 0o040755, &[]);
        ino += 1;
    }
    for (name, mode, data) in files {
        entry(&mut out, ino, name, 0o100000 | mode, data);
        ino += 1;
    }
    entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

fn write_exec(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Builds the tiny bootable raw disk at `out` (64 MiB, sparse), working in `work`.
pub(crate) fn build(out: &Path, work: &Path, debs: Option<&Path>) -> anyhow::Result<()> {
    let x = fetch(work, debs)?;
    let modules_root = x.join("lib/modules");
    let kver = std::fs::read_dir(&modules_root)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("the kernel package holds no modules")?;
    let busybox = std::fs::read(x.join("bin/busybox")).context("busybox-static holds no bin/busybox")?;

    // The initramfs: busybox, the modules, /init.
    let mut files = vec![
        ("bin/busybox".to_owned(), 0o755, busybox.clone()),
        ("init".to_owned(), 0o755, INITRAMFS_INIT.replace("@MODULES@", &MODULES.join(" ")).into_bytes()),
    ];
    for m in MODULES {
        let found = walk(&modules_root.join(&kver))?
            .into_iter()
            .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(&format!("{m}.ko")))
            .with_context(|| format!("the kernel has no module {m}"))?;
        files.push((format!("lib/modules/{m}.ko"), 0o644, std::fs::read(found)?));
    }
    let initrd = cpio_newc(&["bin", "lib", "lib/modules", "dev", "proc", "sys", "newroot"], &files);

    // The root file system.
    let root = work.join("root");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    for d in [
        "bin",
        "sbin",
        "etc/acpi/PWRF",
        "etc/init.d",
        "boot/grub",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "var/log",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(root.join("bin/busybox"), &busybox)?;
    std::fs::set_permissions(root.join("bin/busybox"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let applets = run(Command::new(x.join("bin/busybox")).arg("--list"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init"))?;
    std::fs::write(root.join("etc/inittab"), INITTAB)?;
    write_exec(&root.join("etc/init.d/rcS"), RC_S)?;
    write_exec(&root.join("etc/init.d/rcK"), RC_K)?;
    write_exec(
        &root.join("etc/acpi/PWRF/00000080"),
        "#!/bin/sh\necho \"imaged-tiny: power button\" > /dev/console\nexec /bin/poweroff\n",
    )?;
    write_exec(&root.join("etc/udhcpc.script"), UDHCPC_SCRIPT)?;
    std::fs::write(root.join("etc/hostname"), "imaged-tiny\n")?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n")?;
    std::fs::set_permissions(root.join("etc/shadow"), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=\"imaged tiny\"\nID=imaged-tiny\nPRETTY_NAME=\"imaged tiny (Debian cloud kernel + busybox)\"\n",
    )?;
    std::fs::copy(x.join(format!("boot/vmlinuz-{kver}")), root.join("boot/vmlinuz"))?;
    std::fs::write(root.join("boot/initrd.img"), initrd)?;
    std::fs::write(root.join("boot/grub/grub.cfg"), GRUB_CFG)?;

    crate::bootdisk::write(&root, work, 64 << 20, out)
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::cpio_newc;

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let archive = cpio_newc(&["bin"], &[("init".into(), 0o755, b"#!/bin/sh\n".to_vec())]);
        assert_eq!(archive.len() % 4, 0);
        assert!(archive.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("init\0"));
        assert!(text.contains("#!/bin/sh\n"));
        assert!(text.contains("TRAILER!!!\0"));
        // The file's header carries its size (10 bytes) in the seventh field.
        let second = text[110..].find("070701").map(|i| i + 110).expect("a second entry");
        assert_eq!(&text[second + 6 + 6 * 8..second + 6 + 7 * 8], "0000000A");
    }
}
