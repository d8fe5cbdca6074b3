//! Safe disk-image format inspection: detect and validate an untrusted image from its bytes
//! alone, before any other tool reads it, and read qcow2 natively.
//!
//! Layout:
//! - [`ReadAt`]: random-access reads of the untrusted bytes (files, byte slices).
//! - [`inspect`]: the signature scan (every magic at its place, not just offset 0), polyglot and
//!   declared-vs-detected checks, then the per-format header checks, then the size policy.
//! - one module per format: `qcow2` (with [`Qcow2Reader`]), `vmdk`, `vhd`, `vhdx`, `iso`; raw
//!   is what remains when nothing else matches.
//!
//! Following imago's rule ("do not probe"): the format is detected once, recorded, and every
//! later tool is told it. Nothing here follows a backing file, a data file or an extent name:
//! their presence is a [`Reason`] to refuse the image. Every size read from a header is checked
//! against a cap before anything is allocated for it.

mod crc32c;
mod iso;
mod qcow2;
mod vhd;
mod vhdx;
mod vmdk;

use std::fmt;

pub use qcow2::{Extent, ExtentKind, Qcow2Reader};

/// Random-access reads of an untrusted image.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns the bytes read (0 at or after the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Total length in bytes.
    fn size(&self) -> std::io::Result<u64>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match std::os::unix::fs::FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.as_slice().read_at(offset, buf)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// The formats the service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Raw disk bytes (possibly with a partition table).
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware monolithicSparse or streamOptimized.
    Vmdk,
    /// Virtual PC / Hyper-V VHD, fixed or dynamic.
    Vhd,
    /// Hyper-V VHDX.
    Vhdx,
    /// ISO 9660 / UDF optical image.
    Iso,
}

impl Format {
    /// Every format.
    pub const ALL: &'static [Format] =
        &[Format::Raw, Format::Qcow2, Format::Vmdk, Format::Vhd, Format::Vhdx, Format::Iso];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Iso => "iso",
        }
    }

    /// Parses a name, case-insensitively (`vpc` is VHD).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vmdk" => Some(Format::Vmdk),
            "vhd" | "vpc" => Some(Format::Vhd),
            "vhdx" => Some(Format::Vhdx),
            "iso" => Some(Format::Iso),
            _ => None,
        }
    }

    /// The name `qemu-img -f` takes.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw | Format::Iso => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an image is refused, as a class a user can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It refers to a backing (parent) image.
    BackingFile,
    /// It keeps its data in an external file.
    DataFile,
    /// Its extents live in other files.
    ExternalExtent,
    /// The bytes are not the declared format.
    FormatMismatch,
    /// The bytes parse as two formats.
    Polyglot,
    /// It is encrypted.
    Encrypted,
    /// An unknown or unwanted format, version or feature.
    UnknownFormat,
    /// Its structure is damaged or inconsistent.
    Corrupt,
    /// Over the size cap.
    TooLarge,
}

impl Reason {
    /// The reason's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BackingFile => "backing-file",
            Reason::DataFile => "data-file",
            Reason::ExternalExtent => "external-extent",
            Reason::FormatMismatch => "format-mismatch",
            Reason::Polyglot => "polyglot",
            Reason::Encrypted => "encrypted",
            Reason::UnknownFormat => "unknown-format",
            Reason::Corrupt => "corrupt",
            Reason::TooLarge => "too-large",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An image refused, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The class.
    pub reason: Reason,
    /// What exactly.
    pub detail: String,
    /// The format detected, when known.
    pub format: Option<Format>,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, format: Option<Format>, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into(), format }
    }
}

/// An accepted image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Detected format.
    pub format: Format,
    /// Virtual disk size in bytes, from the header (raw: the file size).
    pub virtual_size: u64,
    /// Variant: `monolithicSparse`/`streamOptimized`, `fixed`/`dynamic`, `v2`/`v3`.
    pub subformat: Option<String>,
    /// qcow2 cluster size.
    pub cluster_size: Option<u64>,
}

/// What the inspector accepts.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Largest virtual size, in bytes.
    pub max_virtual_size: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self { max_virtual_size: 2 << 40 }
    }
}

/// A compression recognised by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// xz.
    Xz,
    /// bzip2.
    Bzip2,
}

/// Recognises a compressed stream from its first bytes.
pub fn detect_compression(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if head.starts_with(b"BZh") && head.get(3).is_some_and(|d| (b'1'..=b'9').contains(d)) {
        Some(Compression::Bzip2)
    } else {
        None
    }
}

pub(crate) fn io_err(format: Option<Format>, e: &std::io::Error) -> Rejection {
    Rejection::new(Reason::Corrupt, format, format!("read error: {e}"))
}

/// Reads exactly `len` bytes at `offset`, or fails as corrupt (the structure points past the end).
pub(crate) fn read_exact(
    src: &dyn ReadAt,
    offset: u64,
    len: usize,
    format: Format,
    what: &str,
) -> Result<Vec<u8>, Rejection> {
    let mut buf = vec![0u8; len];
    let n = src.read_at(offset, &mut buf).map_err(|e| io_err(Some(format), &e))?;
    if n < len {
        return Err(Rejection::new(Reason::Corrupt, Some(format), format!("{what} lies outside the file")));
    }
    Ok(buf)
}

pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}
pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Bytes of the head read for the signature scan.
const HEAD_LEN: usize = 64 * 1024;

/// What the signature scan saw.
#[derive(Debug, Default)]
struct Signatures {
    containers: Vec<Format>,
    /// A partition table in the first sectors (`MBR`, `GPT`): the start of a raw disk.
    partition_table: Option<&'static str>,
    /// A container header at offset 0 (qcow2, vmdk, vhdx, a dynamic VHD's footer copy): the
    /// first sectors are its metadata, never guest data.
    header_at_start: bool,
    unwanted: Option<(Reason, &'static str)>,
}

/// MBR boot signature (`55 AA` at byte 510).
const MBR_SIGNATURE_OFFSET: usize = 510;
/// GPT header signature, at LBA 1 for 512-byte and for 4096-byte sectors.
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_HEADER_OFFSETS: [usize; 2] = [512, 4096];

/// The partition table the first sectors hold, if any.
fn partition_table(head: &[u8]) -> Option<&'static str> {
    if GPT_HEADER_OFFSETS.iter().any(|&o| head.get(o..o + 8) == Some(&GPT_SIGNATURE[..])) {
        Some("a GPT partition table")
    } else if head.get(MBR_SIGNATURE_OFFSET..MBR_SIGNATURE_OFFSET + 2) == Some(&[0x55, 0xaa][..]) {
        Some("an MBR partition table")
    } else {
        None
    }
}

fn scan(src: &dyn ReadAt, size: u64) -> Result<Signatures, Rejection> {
    let mut head = vec![0u8; HEAD_LEN.min(usize::try_from(size).unwrap_or(HEAD_LEN))];
    src.read_at(0, &mut head).map_err(|e| io_err(None, &e))?;
    let mut sig = Signatures::default();
    if let Some(c) = detect_compression(&head) {
        sig.unwanted = Some((
            Reason::UnknownFormat,
            match c {
                Compression::Gzip => "a gzip-compressed stream, not a disk image",
                Compression::Zstd => "a zstd-compressed stream, not a disk image",
                Compression::Xz => "an xz-compressed stream, not a disk image",
                Compression::Bzip2 => "a bzip2-compressed stream, not a disk image",
            },
        ));
    }
    if head.starts_with(b"QFI\xfb") {
        sig.containers.push(Format::Qcow2);
    }
    if head.starts_with(b"KDMV") {
        sig.containers.push(Format::Vmdk);
    }
    if head.starts_with(b"vhdxfile") {
        sig.containers.push(Format::Vhdx);
    }
    let tail_vhd = size >= 512 && {
        let mut tail = [0u8; 8];
        src.read_at(size - 512, &mut tail).map_err(|e| io_err(None, &e))? == 8 && &tail == b"conectix"
    };
    if head.starts_with(b"conectix") || tail_vhd {
        sig.containers.push(Format::Vhd);
    }
    let headers: [&[u8]; 4] = [b"QFI\xfb", b"KDMV", b"vhdxfile", b"conectix"];
    sig.header_at_start = headers.iter().any(|m| head.starts_with(m));
    sig.partition_table = partition_table(&head);
    if iso::has_descriptor(src, size)? {
        sig.containers.push(Format::Iso);
    }
    if head.starts_with(b"QED\0") {
        sig.unwanted = Some((Reason::UnknownFormat, "QED images are not accepted"));
    } else if head.starts_with(b"QFI") && head.get(3) != Some(&0xfb) {
        sig.unwanted = Some((Reason::UnknownFormat, "qcow version 1 images are not accepted"));
    } else if head.starts_with(b"LUKS\xba\xbe") {
        sig.unwanted = Some((Reason::Encrypted, "a LUKS-encrypted volume"));
    } else if head.len() >= 68 && le32(&head, 64) == 0xbeda_107f {
        sig.unwanted = Some((Reason::UnknownFormat, "VDI images are not accepted"));
    } else if head.starts_with(b"# Disk DescriptorFile") {
        sig.unwanted = Some((Reason::ExternalExtent, "a text-only VMDK descriptor: its extents are other files"));
    }
    Ok(sig)
}

/// Detects and validates an image from its bytes alone. `declared` is what the user says it is.
pub fn inspect(src: &dyn ReadAt, declared: Option<Format>, policy: &Policy) -> Result<Inspection, Rejection> {
    let size = src.size().map_err(|e| io_err(None, &e))?;
    if size == 0 {
        return Err(Rejection::new(Reason::Corrupt, None, "the file is empty"));
    }
    let sig = scan(src, size)?;
    if sig.containers.len() >= 2 {
        let names: Vec<&str> = sig.containers.iter().map(|f| f.as_str()).collect();
        return Err(Rejection::new(Reason::Polyglot, None, format!("the bytes parse as {}", names.join(" and "))));
    }
    // A container's first sectors are its own header: a partition table there means the file
    // is also a raw disk to any tool that probes. (A fixed VHD's data starts at offset 0 and a
    // hybrid ISO's system area holds an MBR: both are what they claim.)
    if let (true, Some(table), Some(format)) = (sig.header_at_start, sig.partition_table, sig.containers.first()) {
        return Err(Rejection::new(
            Reason::Polyglot,
            Some(*format),
            format!("the bytes parse as {format} and as a raw disk with {table}"),
        ));
    }
    if let Some((reason, detail)) = sig.unwanted {
        return Err(Rejection::new(reason, None, detail));
    }
    let detected = sig.containers.first().copied().unwrap_or(Format::Raw);
    if let Some(d) = declared {
        if d != detected {
            return Err(Rejection::new(
                Reason::FormatMismatch,
                Some(detected),
                format!("declared {d}, but the bytes are {detected}"),
            ));
        }
    }
    let inspection = match detected {
        Format::Raw => {
            if size % 512 != 0 {
                return Err(Rejection::new(Reason::Corrupt, Some(Format::Raw), "raw size is not a multiple of 512"));
            }
            Inspection { format: Format::Raw, virtual_size: size, subformat: None, cluster_size: None }
        }
        Format::Qcow2 => qcow2::inspect(src, size)?,
        Format::Vmdk => vmdk::inspect(src, size)?,
        Format::Vhd => vhd::inspect(src, size)?,
        Format::Vhdx => vhdx::inspect(src, size)?,
        Format::Iso => iso::inspect(src, size)?,
    };
    check_size(&inspection, policy)?;
    Ok(inspection)
}

fn check_size(i: &Inspection, policy: &Policy) -> Result<(), Rejection> {
    if i.virtual_size < 512 || (i.format != Format::Iso && !i.virtual_size.is_multiple_of(512)) {
        return Err(Rejection::new(
            Reason::Corrupt,
            Some(i.format),
            format!("virtual size {} is not a positive multiple of 512", i.virtual_size),
        ));
    }
    if i.virtual_size > policy.max_virtual_size {
        return Err(Rejection::new(
            Reason::TooLarge,
            Some(i.format),
            format!("virtual size {} exceeds the limit of {}", i.virtual_size, policy.max_virtual_size),
        ));
    }
    Ok(())
}
