//! Reading an inspected image's virtual disk block by block, skipping what is known to be zero
//! without reading it: holes of a sparse raw file (SEEK_DATA/SEEK_HOLE), unallocated and zero
//! clusters of a qcow2 (read natively). Other formats are converted to a sparse raw file by
//! `qemu-img convert` with an explicit `-f`, under resource limits, after inspection.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use imaged_chunkstore::{Digest, Manifest};
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
    /// An instance's system disk: the service's own qcow2 overlay on a base whose manifest is
    /// known, so that a block the guest never wrote is recognised without being read.
    Overlay {
        /// The overlay, opened with [`Qcow2Reader::open_overlay`].
        top: Qcow2Reader<'a>,
        /// The base (a raw file) the overlay's unallocated clusters fall through to.
        base: &'a File,
        /// The base's manifest.
        base_manifest: &'a Manifest,
    },
}

/// What a block of a disk holds, as far as a reader can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockContent {
    /// Known to be all zeros; nothing was read.
    Zero,
    /// Read into the buffer.
    Data,
    /// Exactly this block of the base (an overlay block the guest never wrote); nothing was
    /// read. [`DiskReader::read_full`] reads it when the bytes are needed after all.
    Same(Digest),
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
            Self::Qcow2(r) | Self::Overlay { top: r, .. } => r.virtual_size(),
        }
    }

    /// Reads the block at `offset` (of `buf.len()` bytes) unless it is known to be zero or,
    /// in an overlay, to be the base's block unchanged (`buf` is then left as it was).
    pub fn read_block(&self, offset: u64, buf: &mut [u8]) -> Result<BlockContent, DiskError> {
        let end = offset + buf.len() as u64;
        match self {
            Self::Raw { file, data, .. } => {
                if !data.iter().any(|(s, e)| *s < end && *e > offset) {
                    return Ok(BlockContent::Zero);
                }
                file.read_exact_at(buf, offset)?;
                Ok(BlockContent::Data)
            }
            Self::Qcow2(r) => {
                let extents = r.map(offset, buf.len() as u64)?;
                if extents.iter().all(|e| e.kind == ExtentKind::Zero) {
                    return Ok(BlockContent::Zero);
                }
                r.read_at(offset, buf)?;
                Ok(BlockContent::Data)
            }
            Self::Overlay { top, base_manifest, .. } => {
                let extents = top.map(offset, buf.len() as u64)?;
                if extents.iter().all(|e| e.kind == ExtentKind::Zero) {
                    return Ok(BlockContent::Zero);
                }
                if extents.iter().all(|e| e.kind == ExtentKind::Backing) {
                    let bs = u64::from(base_manifest.block_size);
                    let index = usize::try_from(offset / bs).unwrap_or(usize::MAX);
                    let aligned = offset.is_multiple_of(bs) && buf.len() as u64 <= bs;
                    match base_manifest.blocks.get(index) {
                        _ if !aligned => {}
                        // Past the base's end, or a zero block of it.
                        None | Some(None) => return Ok(BlockContent::Zero),
                        Some(Some(d)) if base_manifest.block_len(index) == buf.len() => {
                            return Ok(BlockContent::Same(*d))
                        }
                        // The base's short last block inside a longer overlay block.
                        Some(Some(_)) => {}
                    }
                }
                self.read_full(offset, buf)?;
                Ok(BlockContent::Data)
            }
        }
    }

    /// Reads the bytes at `offset` whatever they are (zeros where nothing is stored).
    pub fn read_full(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        match self {
            Self::Raw { .. } | Self::Qcow2(_) => {
                buf.fill(0);
                self.read_block(offset, buf).map(|_| ())
            }
            Self::Overlay { top, base, base_manifest } => {
                for e in top.map(offset, buf.len() as u64)? {
                    let at = usize::try_from(e.offset - offset).unwrap_or(0);
                    let dst = &mut buf[at..at + usize::try_from(e.len).unwrap_or(0)];
                    if e.kind != ExtentKind::Backing {
                        top.read_at(e.offset, dst)?;
                        continue;
                    }
                    // The base is raw and as long as its manifest says; past its end, zeros.
                    dst.fill(0);
                    let avail = base_manifest.virtual_size.saturating_sub(e.offset).min(e.len);
                    if avail > 0 {
                        base.read_exact_at(&mut dst[..usize::try_from(avail).unwrap_or(0)], e.offset)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Creates a qcow2 overlay at `dest` of `size` bytes on the raw `backing` (a path relative to
/// `dest`'s directory, so the data directory can move), 64 KiB clusters, through a temporary
/// name so that `dest` is always complete.
pub fn create_overlay(backing: &str, size: u64, dest: &Path) -> Result<(), DiskError> {
    let tmp = dest.with_extension("qcow2.partial");
    let tmp_s = tmp.to_string_lossy();
    let size_s = size.to_string();
    qemu_img(
        &["create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, "-o", "cluster_size=65536", &tmp_s, &size_s],
        QEMU_IMG_INFO_CPU_SECS,
        QEMU_IMG_INFO_ADDRESS_SPACE,
    )?;
    std::fs::rename(&tmp, dest)?;
    Ok(())
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
