//! Bootable BIOS disks from a root directory, without a loop device, a mount or a chroot: an
//! MBR with one bootable ext4 partition from 1 MiB (`mkfs.ext4 -d` fills it), GRUB's boot code
//! in the MBR and its core image in the gap before the partition; `/boot/grub/grub.cfg` in the
//! root says what to boot.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use crate::tiny_image::run;

/// Writes the disk of `root` (`size` bytes, sparse) to `out` through a temporary name,
/// working in `work`.
pub(crate) fn write(root: &Path, work: &Path, size: u64, out: &Path) -> anyhow::Result<()> {
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    std::fs::File::create(&tmp)?.set_len(size)?;
    let mut sfdisk = Command::new("sfdisk");
    sfdisk.arg("-q").arg(&tmp).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
    let mut child = sfdisk.spawn().context("running sfdisk (package fdisk)")?;
    {
        use std::io::Write;
        child.stdin.take().context("sfdisk stdin")?.write_all(b"label: dos\n2048,,L,*\n")?;
    }
    if !child.wait()?.success() {
        bail!("sfdisk failed");
    }
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "imaged-root", "-d"])
        .arg(root)
        .args(["-E", "offset=1048576"])
        .arg(&tmp)
        .arg(format!("{}k", (size - (1 << 20)) / 1024)))?;
    let core = work.join("core.img");
    run(Command::new("grub-mkimage").args(["-O", "i386-pc", "-p", "(hd0,msdos1)/boot/grub", "-o"]).arg(&core).args([
        "biosdisk",
        "part_msdos",
        "ext2",
        "normal",
        "linux",
        "serial",
        "terminal",
        "configfile",
        "echo",
    ]))
    .context("grub-mkimage (package grub-pc-bin)")?;
    let core = std::fs::read(&core)?;
    if core.len() > 2047 * 512 {
        bail!("GRUB's core image does not fit before the partition");
    }
    let boot = std::fs::read("/usr/lib/grub/i386-pc/boot.img").context("GRUB's boot.img (package grub-pc-bin)")?;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&boot[..440])?;
        f.seek(SeekFrom::Start(512))?;
        f.write_all(&core)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, out)?;
    Ok(())
}
