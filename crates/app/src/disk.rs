//! Reading an inspected image's virtual disk block by block, skipping what is known to be zero
//! without reading it: holes of a sparse raw file (SEEK_DATA/SEEK_HOLE), unallocated and zero
//! clusters of a qcow2 (read natively). Other formats are converted to a sparse raw file by
//! `qemu-img convert` with an explicit `-f`, under resource limits, after inspection.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use imaged_diskfmt::{ExtentKind, Format, Qcow2Reader, Rejection};

/// CPU seconds and address space allowed to one qemu-img run.
const QEMU_IMG_CPU_SECS: u64 = 3600;
const QEMU_IMG_ADDRESS_SPACE: u64 = 2 << 30;
const QEMU_IMG_INFO_CPU_SECS: u64 = 30;
const QEMU_IMG_INFO_ADDRESS_SPACE: u64 = 1 << 30;

/// Why a disk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O error.
    #[error("reading the image: {0}")]
    Io(#[from] io::Error),
    /// The image's structure is damaged (found while reading).
    #[error("{0}")]
    Format(#[from] Rejection),
    /// qemu-img refused or disagreed with the inspector.
    #[error("qemu-img: {0}")]
    QemuImg(String),
}

/// The byte ranges of a file that hold data (the rest are holes), found with SEEK_DATA/SEEK_HOLE.
/// On file systems without hole support the whole file is one data range.
pub fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, size)],
        };
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(_) => size,
        };
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    out
}

/// A virtual disk open for block reads.
pub enum DiskReader<'a> {
    /// A raw file (also a raw file made by qemu-img from another format).
    Raw {
        /// The file.
        file: &'a File,
        /// Virtual size.
        size: u64,
        /// Data ranges (everything else reads as zeros).
        data: Vec<(u64, u64)>,
    },
    /// A qcow2 read natively.
    Qcow2(Qcow2Reader<'a>),
}

impl<'a> DiskReader<'a> {
    /// Opens `file`, already inspected as `format` (raw, iso or qcow2).
    pub fn open(file: &'a File, format: Format) -> Result<Self, DiskError> {
        match format {
            Format::Qcow2 => Ok(Self::Qcow2(Qcow2Reader::open(file)?)),
            _ => {
                let size = file.metadata()?.len();
                Ok(Self::Raw { file, size, data: data_ranges(file, size) })
            }
        }
    }

    /// Virtual size in bytes.
    pub fn virtual_size(&self) -> u64 {
        match self {
            Self::Raw { size, .. } => *size,
            Self::Qcow2(r) => r.virtual_size(),
        }
    }

    /// Fills `buf` with the bytes at `offset`; returns false, without reading, when the range is
    /// known to be all zeros (`buf` is then left as it was).
    pub fn read_block(&self, offset: u64, buf: &mut [u8]) -> Result<bool, DiskError> {
        let end = offset + buf.len() as u64;
        match self {
            Self::Raw { file, data, .. } => {
                if !data.iter().any(|(s, e)| *s < end && *e > offset) {
                    return Ok(false);
                }
                file.read_exact_at(buf, offset)?;
                Ok(true)
            }
            Self::Qcow2(r) => {
                let extents = r.map(offset, buf.len() as u64)?;
                if extents.iter().all(|e| e.kind == ExtentKind::Zero) {
                    return Ok(false);
                }
                r.read_at(offset, buf)?;
                Ok(true)
            }
        }
    }
}

/// Runs qemu-img under `prlimit` with CPU and address-space caps; returns stdout.
fn qemu_img(args: &[&str], cpu_secs: u64, address_space: u64) -> Result<Vec<u8>, DiskError> {
    let mut cmd = if Path::new("/usr/bin/prlimit").exists() {
        let mut c = Command::new("/usr/bin/prlimit");
        c.arg(format!("--cpu={cpu_secs}")).arg(format!("--as={address_space}")).arg("qemu-img");
        c
    } else {
        Command::new("qemu-img")
    };
    let out = cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin").current_dir("/").output()?;
    if !out.status.success() {
        return Err(DiskError::QemuImg(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(out.stdout)
}

/// Cross-checks an inspected image with `qemu-img info -f FORMAT -U` (format, virtual size, no
/// backing or data file, not encrypted), then converts it to a sparse raw file at `dest`.
pub fn convert_to_raw(src: &Path, format: Format, virtual_size: u64, dest: &Path) -> Result<PathBuf, DiskError> {
    let src_s = src.to_string_lossy();
    let info = qemu_img(
        &["info", "-f", format.qemu_name(), "--output=json", "-U", &src_s],
        QEMU_IMG_INFO_CPU_SECS,
        QEMU_IMG_INFO_ADDRESS_SPACE,
    )?;
    let info: serde_json::Value =
        serde_json::from_slice(&info).map_err(|e| DiskError::QemuImg(format!("unreadable info: {e}")))?;
    let agrees = info["format"] == format.qemu_name()
        && info["virtual-size"].as_u64() == Some(virtual_size)
        && info.get("backing-filename").is_none()
        && info["format-specific"]["data"].get("data-file").is_none()
        && info["encrypted"] != true;
    if !agrees {
        return Err(DiskError::QemuImg(format!("qemu-img info disagrees with the inspector: {info}")));
    }
    let dest_s = dest.to_string_lossy();
    qemu_img(
        &["convert", "-f", format.qemu_name(), "-O", "raw", "-S", "4k", &src_s, &dest_s],
        QEMU_IMG_CPU_SECS,
        QEMU_IMG_ADDRESS_SPACE,
    )?;
    Ok(dest.to_owned())
}

/// Converts a raw file to `format` at `dest` (export), with explicit formats on both sides.
pub fn convert_from_raw(src: &Path, format: Format, dest: &Path) -> Result<(), DiskError> {
    let src_s = src.to_string_lossy();
    let dest_s = dest.to_string_lossy();
    let mut args = vec!["convert", "-f", "raw", "-O", format.qemu_name()];
    if format == Format::Vhd {
        // Keep the exact virtual size instead of rounding to a CHS geometry.
        args.extend(["-o", "force_size=on"]);
    }
    args.extend([src_s.as_ref(), dest_s.as_ref()]);
    qemu_img(&args, QEMU_IMG_CPU_SECS, QEMU_IMG_ADDRESS_SPACE).map(|_| ())
}
